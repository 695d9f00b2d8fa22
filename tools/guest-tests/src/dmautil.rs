// SPDX-License-Identifier: GPL-2.0
//! Helpers of the DMA-engine and dirty-tracking tests: guest RAM mapped for
//! DMA, the engine's registers by name, commands and their completion, the
//! ring, the background writer and the module's pinned-page count.
//!
//! Everything is written against `device::dma` (the documented ABI), not
//! against the library's own register module.

use std::sync::Arc;
use std::time::{Duration, Instant};

use vfio_mig::{errno_name, Device, GuestMemory, OpenPath};

use crate::device::{bar0, dma, region};
use crate::util::{Ctx, TResult};
use crate::{ensure, ensure_eq};

const B0: u32 = region::BAR0;

/// A page of guest RAM (and of the dirty bitmap).
pub const PAGE: u64 = 4096;
/// How long a command may take (TCG and KASAN are slow).
pub const DMA_TIMEOUT: Duration = Duration::from_secs(10);
/// How long we watch guest RAM to be sure nothing writes it.
pub const STILL: Duration = Duration::from_millis(300);

/// The name of a BAR0 register, for messages.
pub fn reg_name(off: u64) -> String {
    if let Some((_, n)) = dma::REGS.iter().find(|(o, _)| *o == off) {
        return (*n).to_string();
    }
    match off {
        bar0::IRQ_STATUS => "IRQ_STATUS".into(),
        bar0::IRQ_ENABLE => "IRQ_ENABLE".into(),
        bar0::IRQ_COUNT => "IRQ_COUNT".into(),
        bar0::STATUS => "STATUS".into(),
        _ => format!("BAR0 {off:#x}"),
    }
}

/// Reads a BAR0 register.
pub fn rd(dev: &Device, off: u64) -> Result<u32, String> {
    dev.read32(B0, off)
        .map_err(|e| format!("read of {}: {e}", reg_name(off)))
}

/// Writes a BAR0 register.
pub fn wr(dev: &Device, off: u64, v: u32) -> TResult {
    dev.write32(B0, off, v)
        .map_err(|e| format!("write of {} = {v:#x}: {e}", reg_name(off)))
}

/// Writes a 64-bit address into a `_LO`/`_HI` pair.
pub fn wr_iova(dev: &Device, lo: u64, iova: u64) -> TResult {
    wr(dev, lo, iova as u32)?;
    wr(dev, lo + 4, (iova >> 32) as u32)
}

/// Asserts a register's value.
pub fn expect_reg(dev: &Device, off: u64, want: u32, what: &str) -> TResult {
    let got = rd(dev, off)?;
    ensure!(
        got == want,
        "{what}: {} is {got:#x} ({got}), want {want:#x} ({want})",
        reg_name(off)
    );
    Ok(())
}

/// Asserts an errno register (`DMA_ERROR`, `RING_ERROR`, `BG_ERROR`).
pub fn expect_errno_reg(dev: &Device, off: u64, want: i32, what: &str) -> TResult {
    let got = rd(dev, off)?;
    ensure!(
        got == want as u32,
        "{what}: {} is {got} ({}), want {want} ({})",
        reg_name(off),
        errno_name(got as i32),
        errno_name(want)
    );
    Ok(())
}

/// A DMA command's registers.
#[derive(Debug, Clone, Copy)]
pub struct Cmd {
    pub cmd: u32,
    pub iova: u64,
    pub dev_off: u32,
    pub len: u32,
    pub pattern: u32,
}

impl Cmd {
    pub fn to_guest(iova: u64, dev_off: u32, len: u32) -> Self {
        Cmd {
            cmd: dma::CMD_TO_GUEST,
            iova,
            dev_off,
            len,
            pattern: 0,
        }
    }

    pub fn from_guest(iova: u64, dev_off: u32, len: u32) -> Self {
        Cmd {
            cmd: dma::CMD_FROM_GUEST,
            iova,
            dev_off,
            len,
            pattern: 0,
        }
    }

    pub fn fill(iova: u64, len: u32, pattern: u32) -> Self {
        Cmd {
            cmd: dma::CMD_FILL,
            iova,
            dev_off: 0,
            len,
            pattern,
        }
    }
}

impl std::fmt::Display for Cmd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let name = match self.cmd {
            dma::CMD_TO_GUEST => "TO_GUEST".to_string(),
            dma::CMD_FROM_GUEST => "FROM_GUEST".to_string(),
            dma::CMD_FILL => "FILL".to_string(),
            c => format!("command {c:#x}"),
        };
        write!(
            f,
            "{name} iova {:#x} dev_off {:#x} len {:#x}",
            self.iova, self.dev_off, self.len
        )?;
        if self.cmd == dma::CMD_FILL {
            write!(f, " pattern {:#010x}", self.pattern)?;
        }
        Ok(())
    }
}

/// Writes a command's registers, all but `DMA_CMD`.
pub fn program(dev: &Device, c: &Cmd) -> TResult {
    wr(dev, dma::DEV_OFF, c.dev_off)?;
    wr_iova(dev, dma::IOVA_LO, c.iova)?;
    wr(dev, dma::LEN, c.len)?;
    wr(dev, dma::PATTERN, c.pattern)
}

/// Programs and queues a command (does not wait).
pub fn queue(dev: &Device, c: &Cmd) -> TResult {
    program(dev, c)?;
    wr(dev, dma::CMD, c.cmd).map_err(|e| format!("{c}: {e}"))
}

/// Waits until `DMA_STATUS` leaves QUEUED; returns `(DMA_STATUS,
/// DMA_ERROR)`.
pub fn wait(dev: &Device, what: &str) -> Result<(u32, u32), String> {
    let start = Instant::now();
    loop {
        let st = rd(dev, dma::STATUS)?;
        if st != dma::QUEUED {
            ensure!(
                st != dma::IDLE,
                "{what}: DMA_STATUS is IDLE: the command was not queued"
            );
            return Ok((st, rd(dev, dma::ERROR)?));
        }
        ensure!(
            start.elapsed() < DMA_TIMEOUT,
            "{what}: DMA_STATUS still QUEUED after {DMA_TIMEOUT:?}"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Runs a command to its end; returns `(DMA_STATUS, DMA_ERROR)`.
pub fn run(dev: &Device, c: &Cmd) -> Result<(u32, u32), String> {
    queue(dev, c)?;
    wait(dev, &c.to_string())
}

fn status_name(st: u32) -> String {
    match st {
        dma::IDLE => "IDLE".into(),
        dma::QUEUED => "QUEUED".into(),
        dma::DONE => "DONE".into(),
        dma::FAILED => "ERROR".into(),
        _ => format!("{st:#x} (not a status)"),
    }
}

/// Asserts an outcome: `None` for DONE (and `DMA_ERROR` 0), `Some(errno)`
/// for ERROR with that errno.
pub fn expect_outcome(got: (u32, u32), want: Option<i32>, what: &str) -> TResult {
    let (st, err) = got;
    let want_st = if want.is_some() {
        dma::FAILED
    } else {
        dma::DONE
    };
    let want_err = want.unwrap_or(0) as u32;
    ensure!(
        st == want_st && err == want_err,
        "{what}: DMA_STATUS {} DMA_ERROR {err} ({}), want {} DMA_ERROR {want_err} ({})",
        status_name(st),
        errno_name(err as i32),
        status_name(want_st),
        errno_name(want_err as i32)
    );
    Ok(())
}

/// Runs a command and asserts that it finished DONE.
pub fn run_ok(dev: &Device, c: &Cmd) -> TResult {
    let r = run(dev, c)?;
    expect_outcome(r, None, &c.to_string())
}

/// Pages of guest RAM: a memfd mapped for DMA at `iova`. The test keeps
/// its own reference, so the memory outlives an unmap.
pub struct Ram {
    pub mem: Arc<GuestMemory>,
    pub iova: u64,
}

impl Ram {
    /// `pages` pages of memory, every byte `fill`, not mapped.
    pub fn new(pages: u64, fill: u8) -> Result<Self, String> {
        let mem = GuestMemory::new("guest-ram", (pages * PAGE) as usize).ctx("guest memory")?;
        if fill != 0 {
            mem.write_at(0, &vec![fill; mem.len()])
                .ctx("fill guest memory")?;
        }
        Ok(Ram {
            mem: Arc::new(mem),
            iova: 0,
        })
    }

    /// `pages` pages of memory (every byte `fill`) mapped at `iova`.
    pub fn map(dev: &Device, iova: u64, pages: u64, fill: u8) -> Result<Self, String> {
        let mut r = Ram::new(pages, fill)?;
        r.map_at(dev, iova)?;
        Ok(r)
    }

    /// Maps this memory at `iova`.
    pub fn map_at(&mut self, dev: &Device, iova: u64) -> TResult {
        dev.map_dma(iova, &self.mem).ctx(&format!(
            "map {:#x} bytes at iova {iova:#x}",
            self.mem.len()
        ))?;
        self.iova = iova;
        Ok(())
    }

    /// Unmaps it.
    pub fn unmap(&self, dev: &Device) -> TResult {
        dev.unmap_dma(self.iova)
            .ctx(&format!("unmap iova {:#x}", self.iova))
    }

    pub fn len(&self) -> u64 {
        self.mem.len() as u64
    }

    pub fn pages(&self) -> u64 {
        self.len() / PAGE
    }

    /// Copies `len` bytes out at offset `off`.
    pub fn read(&self, off: u64, len: u64) -> Result<Vec<u8>, String> {
        let mut b = vec![0u8; len as usize];
        self.mem
            .read_at(off as usize, &mut b)
            .ctx("read guest memory")?;
        Ok(b)
    }

    /// Copies bytes in at offset `off`.
    pub fn write(&self, off: u64, b: &[u8]) -> TResult {
        self.mem.write_at(off as usize, b).ctx("write guest memory")
    }

    /// All of it.
    pub fn snapshot(&self) -> Result<Vec<u8>, String> {
        self.read(0, self.len())
    }
}

/// Compares two byte strings; the error names the first difference (at
/// `base +` its index) and how many bytes differ.
pub fn same(got: &[u8], want: &[u8], base: u64, what: &str) -> TResult {
    ensure_eq!(got.len(), want.len(), "{what}: length");
    if let Some(i) = got.iter().zip(want).position(|(a, b)| a != b) {
        let n = got.iter().zip(want).filter(|(a, b)| a != b).count();
        return Err(format!(
            "{what}: byte {:#x} is {:#04x}, want {:#04x} ({n} bytes differ)",
            base + i as u64,
            got[i],
            want[i]
        ));
    }
    Ok(())
}

/// The pages of `a` and `b` (same length) that differ.
pub fn changed_pages(a: &[u8], b: &[u8]) -> Vec<u64> {
    a.chunks(PAGE as usize)
        .zip(b.chunks(PAGE as usize))
        .enumerate()
        .filter(|(_, (x, y))| x != y)
        .map(|(i, _)| i as u64)
        .collect()
}

/// Mounts debugfs if it is not mounted.
fn mount_debugfs() -> TResult {
    let dir = std::path::Path::new("/sys/kernel/debug");
    if dir.join("vfio_mig_sample").exists() {
        return Ok(());
    }
    let mounts = std::fs::read_to_string("/proc/mounts").map_err(|e| e.to_string())?;
    if mounts
        .lines()
        .any(|l| l.split_whitespace().nth(1) == Some("/sys/kernel/debug"))
    {
        return Ok(());
    }
    let c = |s: &str| std::ffi::CString::new(s).unwrap();
    let (src, target, fs) = (c("none"), c("/sys/kernel/debug"), c("debugfs"));
    // SAFETY: NUL-terminated strings and no data pointer, as mount(2) takes.
    let r = unsafe {
        libc::mount(
            src.as_ptr(),
            target.as_ptr(),
            fs.as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    ensure!(r == 0, "mount debugfs: {}", std::io::Error::last_os_error());
    Ok(())
}

/// The module-wide pinned-page count (debugfs).
pub fn pinned_total() -> Result<u64, String> {
    mount_debugfs()?;
    let t = std::fs::read_to_string(dma::PINNED_DEBUGFS)
        .map_err(|e| format!("read {}: {e}", dma::PINNED_DEBUGFS))?;
    t.trim()
        .parse()
        .map_err(|_| format!("{} is not a number: {t:?}", dma::PINNED_DEBUGFS))
}

/// Asserts the debugfs count.
pub fn expect_pinned_total(want: u64, what: &str) -> TResult {
    let got = pinned_total()?;
    ensure!(
        got == want,
        "{what}: {} is {got}, want {want}",
        dma::PINNED_DEBUGFS
    );
    Ok(())
}

/// Releases the ring (its settings are frozen while it is pinned), writes
/// them and `RING_CTRL`; returns what `RING_CTRL` reads afterwards.
pub fn pin_ring(dev: &Device, iova: u64, pages: u32, writable: bool) -> Result<u32, String> {
    wr(dev, dma::RING_CTRL, 0)?;
    wr_iova(dev, dma::RING_IOVA_LO, iova)?;
    wr(dev, dma::RING_PAGES, pages)?;
    let ctrl = dma::RING_PINNED | if writable { dma::RING_WRITABLE } else { 0 };
    wr(dev, dma::RING_CTRL, ctrl)?;
    rd(dev, dma::RING_CTRL)
}

/// Pins a ring and asserts it took: `RING_CTRL`, `PINNED_PAGES`.
pub fn pin_ring_ok(dev: &Device, iova: u64, pages: u32, writable: bool) -> TResult {
    let what = format!("pin ring of {pages} pages at {iova:#x} (writable: {writable})");
    let ctrl = pin_ring(dev, iova, pages, writable)?;
    let want = dma::RING_PINNED | if writable { dma::RING_WRITABLE } else { 0 };
    ensure!(
        ctrl == want,
        "{what}: RING_CTRL reads {ctrl:#x}, want {want:#x} (RING_ERROR {})",
        rd(dev, dma::RING_ERROR)?
    );
    expect_reg(dev, dma::PINNED_PAGES, pages, &what)
}

/// Writes the writer's settings and `BG_CTRL.ENABLE`.
pub fn start_writer(dev: &Device, iova: u64, pages: u32, rate: u32) -> TResult {
    wr_iova(dev, dma::BG_IOVA_LO, iova)?;
    wr(dev, dma::BG_PAGES, pages)?;
    wr(dev, dma::BG_RATE, rate)?;
    wr(dev, dma::BG_CTRL, dma::BG_ENABLE)
}

/// Waits until `BG_WRITES` reaches `n`; returns its value.
pub fn wait_writes(dev: &Device, n: u32, what: &str) -> Result<u32, String> {
    let start = Instant::now();
    loop {
        let w = rd(dev, dma::BG_WRITES)?;
        if w >= n {
            return Ok(w);
        }
        ensure!(
            start.elapsed() < DMA_TIMEOUT,
            "{what}: BG_WRITES is {w} after {DMA_TIMEOUT:?}, want at least {n} (BG_CTRL {:#x}, \
             BG_ERROR {})",
            rd(dev, dma::BG_CTRL)?,
            rd(dev, dma::BG_ERROR)?
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The stamp the writer leaves in a page: count, page index, magic.
pub fn stamp(count: u64, index: u32) -> [u8; dma::BG_STAMP_LEN] {
    let mut s = [0u8; dma::BG_STAMP_LEN];
    s[..8].copy_from_slice(&count.to_le_bytes());
    s[8..12].copy_from_slice(&index.to_le_bytes());
    s[12..].copy_from_slice(&dma::BG_MAGIC.to_le_bytes());
    s
}

/// How a device is opened in a test's messages.
pub fn path_name(p: OpenPath) -> &'static str {
    match p {
        OpenPath::Iommufd => "iommufd",
        _ => "legacy",
    }
}
