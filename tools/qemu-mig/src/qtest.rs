// SPDX-License-Identifier: GPL-2.0
//! A client of QEMU's qtest socket (`-qtest unix:PATH`): the test plays the
//! guest's CPU with port I/O, MMIO and memory accesses. One command per
//! line; QEMU answers `OK [value]` or `FAIL reason`. The accesses go through
//! the guest's address space, so they reach guest RAM and the trapped BARs
//! of a vfio-pci device alike, and RAM writes are dirty-logged as a vCPU's.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;

use anyhow::{bail, Context, Result};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;

pub struct Qtest {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

impl Qtest {
    pub fn new(stream: UnixStream) -> Result<Self> {
        Ok(Qtest {
            writer: stream.try_clone().context("qtest socket")?,
            reader: BufReader::new(stream),
        })
    }

    /// Sends one command and returns what follows `OK`.
    fn cmd(&mut self, line: &str) -> Result<String> {
        let shown = || line.chars().take(40).collect::<String>();
        self.writer
            .write_all(format!("{line}\n").as_bytes())
            .with_context(|| format!("qtest: sending `{}`", shown()))?;
        loop {
            let mut answer = String::new();
            if self.reader.read_line(&mut answer)? == 0 {
                bail!("qtest: QEMU closed the socket after `{}`", shown());
            }
            let answer = answer.trim_end();
            // Interrupt notifications come unasked (only after
            // irq_intercept, which this client never sends).
            if answer.starts_with("IRQ ") {
                continue;
            }
            return match answer.strip_prefix("OK") {
                Some(rest) => Ok(rest.trim_start().to_string()),
                None => bail!("qtest: `{}` answered {answer:?}", shown()),
            };
        }
    }

    pub fn outl(&mut self, port: u16, val: u32) -> Result<()> {
        self.cmd(&format!("outl {port:#x} {val:#x}")).map(drop)
    }

    pub fn inl(&mut self, port: u16) -> Result<u32> {
        let v = hex(&self.cmd(&format!("inl {port:#x}"))?)?;
        u32::try_from(v).context("qtest: inl answered more than 32 bits")
    }

    pub fn readl(&mut self, addr: u64) -> Result<u32> {
        let v = hex(&self.cmd(&format!("readl {addr:#x}"))?)?;
        u32::try_from(v).context("qtest: readl answered more than 32 bits")
    }

    pub fn writel(&mut self, addr: u64, val: u32) -> Result<()> {
        self.cmd(&format!("writel {addr:#x} {val:#x}")).map(drop)
    }

    /// Reads `len` bytes of guest physical memory (RAM or MMIO).
    pub fn read(&mut self, addr: u64, len: usize) -> Result<Vec<u8>> {
        let data = B64
            .decode(self.cmd(&format!("b64read {addr:#x} {len:#x}"))?)
            .context("qtest: b64read answer is not base64")?;
        if data.len() != len {
            bail!("qtest: b64read of {len} bytes returned {}", data.len());
        }
        Ok(data)
    }

    /// Sets `len` bytes of guest physical memory to `value`.
    pub fn memset(&mut self, addr: u64, len: usize, value: u8) -> Result<()> {
        self.cmd(&format!("memset {addr:#x} {len:#x} {value:#x}"))
            .map(drop)
    }

    /// Writes guest physical memory (RAM or MMIO).
    pub fn write(&mut self, addr: u64, data: &[u8]) -> Result<()> {
        let line = format!("b64write {addr:#x} {:#x} {}", data.len(), B64.encode(data));
        self.cmd(&line).map(drop)
    }
}

/// Parses qtest's `0x...` values.
fn hex(s: &str) -> Result<u64> {
    let digits = s.strip_prefix("0x").unwrap_or(s);
    u64::from_str_radix(digits, 16).with_context(|| format!("qtest: {s:?} is not a hex value"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_values() {
        assert_eq!(hex("0x29c08086").unwrap(), 0x29c0_8086);
        assert_eq!(hex("0x0000000004030201").unwrap(), 0x0403_0201);
        assert!(hex("OK").is_err());
    }

    /// A fake QEMU on a socket pair: one answer (lines) per command read.
    fn pair(answers: &'static [&'static str]) -> (Qtest, std::thread::JoinHandle<String>) {
        let (a, b) = UnixStream::pair().unwrap();
        let peer = std::thread::spawn(move || {
            let mut r = BufReader::new(b.try_clone().unwrap());
            let mut w = b;
            let mut got = String::new();
            for answer in answers {
                let mut line = String::new();
                r.read_line(&mut line).unwrap();
                got.push_str(&line);
                writeln!(w, "{answer}").unwrap();
            }
            got
        });
        (Qtest::new(a).unwrap(), peer)
    }

    #[test]
    fn commands_and_answers() {
        let (mut qt, peer) = pair(&[
            "OK",
            "OK 0x6000000",
            "IRQ raise 3\nOK AQIDBA==",
            "FAIL Unknown command",
        ]);
        qt.outl(0xcf8, 0x8000_0008).unwrap();
        assert_eq!(qt.inl(0xcfc).unwrap(), 0x600_0000);
        assert_eq!(qt.read(0x100_0000, 4).unwrap(), [1, 2, 3, 4]);
        let e = qt.writel(0x10, 1).unwrap_err().to_string();
        assert!(e.contains("FAIL Unknown command"), "{e}");
        assert_eq!(
            peer.join().unwrap(),
            "outl 0xcf8 0x80000008\ninl 0xcfc\nb64read 0x1000000 0x4\nwritel 0x10 0x1\n"
        );
    }
}
