// SPDX-License-Identifier: GPL-2.0
//! The vfio-mig-sample device as the VM's "driver" sees it through qtest:
//! BAR0 registers, BAR2 memory and the DMA engine working on guest RAM
//! (Documentation/device.rst), and what must hold after a migration.

use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use vfio_mig::abi::bar0::{
    self as reg, BG_ENABLE, BG_MAGIC, BG_STAMP_LEN, DMA_CTRL_PAUSE, DMA_STATUS_DONE,
    DMA_STATUS_ERROR, DMA_STATUS_QUEUED, ID_VALUE, RING_PINNED, RING_WRITABLE, STATUS_QUIESCED,
};
use vfio_mig::sample::{DeviceSnapshot, DmaCmd};

use crate::pci::{self, Bar};
use crate::poll;
use crate::qtest::Qtest;

const PAGE: usize = 4096;
/// Guest-physical layout of what the device works on, above the low 16 MiB
/// of the 64 MiB of RAM (the vCPUs' own area is in `scenario`).
const PATTERN_GPA: u64 = 0x0100_0000;
/// The pattern copied into BAR2 by `FROM_GUEST`.
const PATTERN_LEN: usize = 256 << 10;
const RING_GPA: u64 = 0x0140_0000;
const RING_LEN_PAGES: u32 = 16;
const BG_GPA: u64 = 0x0180_0000;
/// The background writer's range: 2 MiB.
const BG_PAGES: u32 = 512;
/// Page writes per second: a full pass over the range every second or so,
/// so pages sent in one pre-copy pass are written again before the next.
const WRITER_PAGES_PER_S: u32 = 500;
const FILL_GPA: u64 = 0x0200_0000;
const FILL_LEN: usize = 64 << 10;
const FILL_PATTERN: u32 = 0xa5c3_f00d;
/// BAR2 pages the vCPUs write during pre-copy: 64 pages from 1 MiB on.
const BAR2_VCPU_OFF: usize = 1 << 20;
const BAR2_VCPU_PAGES: usize = 64;
/// Registers that count or report the migration state rather than hold
/// device state: left out of the source/destination comparison.
const NOT_COMPARED: [u32; 3] = [reg::STATUS, reg::BG_WRITES, reg::BG_CURSOR];
const DMA_TIMEOUT: Duration = Duration::from_secs(60);
/// How long the writer may take to stamp its whole range, or to show
/// progress (it runs in a TCG guest, shared with two QEMUs).
const WRITER_TIMEOUT: Duration = Duration::from_secs(120);

/// The device in one VM: where its BARs are, and what BAR2 must hold.
pub struct Sample {
    bar0: u64,
    bar2: u64,
    /// BAR2 as the guest wrote it (device memory starts zeroed).
    pub bar2_expected: Vec<u8>,
}

impl Sample {
    /// Finds BAR0 and BAR2 among the placed BARs and checks the device's ID.
    pub fn locate(qt: &mut Qtest, bars: &[Option<Bar>; 6]) -> Result<Sample> {
        let (Some(b0), Some(b2)) = (bars[0], bars[2]) else {
            bail!("expected BAR0 and BAR2, found {bars:?}");
        };
        let s = Sample {
            bar0: b0.base,
            bar2: b2.base,
            bar2_expected: vec![0; usize::try_from(b2.size)?],
        };
        let id = s.reg(qt, reg::ID)?;
        ensure!(id == ID_VALUE, "BAR0 ID reads {id:#x}, not {ID_VALUE:#x}");
        Ok(s)
    }

    pub fn reg(&self, qt: &mut Qtest, off: u32) -> Result<u32> {
        qt.readl(self.bar0 + u64::from(off))
    }

    pub fn set(&self, qt: &mut Qtest, off: u32, val: u32) -> Result<()> {
        qt.writel(self.bar0 + u64::from(off), val)
    }

    fn set_iova(&self, qt: &mut Qtest, lo: u32, iova: u64) -> Result<()> {
        self.set(qt, lo, iova as u32)?;
        self.set(qt, lo + 4, (iova >> 32) as u32)
    }

    fn queue_dma(
        &self,
        qt: &mut Qtest,
        cmd: DmaCmd,
        iova: u64,
        len: usize,
        pattern: u32,
    ) -> Result<()> {
        self.set_iova(qt, reg::DMA_IOVA_LO, iova)?;
        self.set(qt, reg::DMA_DEV_OFF, 0)?;
        self.set(qt, reg::DMA_LEN, u32::try_from(len)?)?;
        self.set(qt, reg::DMA_PATTERN, pattern)?;
        self.set(qt, reg::DMA_CMD, cmd as u32)
    }

    fn wait_dma(&self, qt: &mut Qtest) -> Result<()> {
        poll("the DMA command to finish", DMA_TIMEOUT, || {
            match self.reg(qt, reg::DMA_STATUS)? {
                DMA_STATUS_DONE => Ok(Some(())),
                DMA_STATUS_ERROR => bail!(
                    "DMA command failed, DMA_ERROR {}",
                    self.reg(qt, reg::DMA_ERROR)?
                ),
                _ => Ok(None),
            }
        })
    }

    /// What a driver would do before the migration: a pattern into BAR2 by
    /// `FROM_GUEST`, a writable ring pinned, the background writer over
    /// 512 pages (waits until it stamped each once), a `FILL` queued
    /// behind `PAUSE`; and some plain register state.
    pub fn program(&mut self, qt: &mut Qtest) -> Result<()> {
        self.set(qt, reg::SCRATCH, 0x5ca7_c4ed)?;
        for _ in 0..3 {
            self.set(qt, reg::DOORBELL, 1)?;
        }

        let pattern: Vec<u8> = (0..PATTERN_LEN).map(|i| pattern_byte(i as u32)).collect();
        qt.write(PATTERN_GPA, &pattern)?;
        self.queue_dma(qt, DmaCmd::FromGuest, PATTERN_GPA, PATTERN_LEN, 0)?;
        self.wait_dma(qt).context("FROM_GUEST of the pattern")?;
        self.bar2_expected[..PATTERN_LEN].copy_from_slice(&pattern);
        for off in [0, PATTERN_LEN - PAGE] {
            let got = qt.read(self.bar2 + off as u64, PAGE)?;
            ensure!(
                got == pattern[off..off + PAGE],
                "BAR2 at {off:#x} does not hold the pattern after FROM_GUEST"
            );
        }

        self.set_iova(qt, reg::RING_IOVA_LO, RING_GPA)?;
        self.set(qt, reg::RING_PAGES, RING_LEN_PAGES)?;
        self.set(qt, reg::RING_CTRL, RING_PINNED | RING_WRITABLE)?;
        let pinned = self.reg(qt, reg::PINNED_PAGES)?;
        ensure!(
            pinned == RING_LEN_PAGES,
            "ring: PINNED_PAGES {pinned}, RING_ERROR {}",
            self.reg(qt, reg::RING_ERROR)?
        );

        self.set_iova(qt, reg::BG_IOVA_LO, BG_GPA)?;
        self.set(qt, reg::BG_PAGES, BG_PAGES)?;
        self.set(qt, reg::BG_RATE, WRITER_PAGES_PER_S)?;
        self.set(qt, reg::BG_CTRL, BG_ENABLE)?;
        poll(
            "the writer to stamp its whole range",
            WRITER_TIMEOUT,
            || {
                let err = self.reg(qt, reg::BG_ERROR)?;
                ensure!(err == 0, "writer: BG_ERROR {err}");
                Ok((self.reg(qt, reg::BG_WRITES)? >= BG_PAGES).then_some(()))
            },
        )?;

        self.set(qt, reg::DMA_CTRL, DMA_CTRL_PAUSE)?;
        self.queue_dma(qt, DmaCmd::Fill, FILL_GPA, FILL_LEN, FILL_PATTERN)?;
        let st = self.reg(qt, reg::DMA_STATUS)?;
        ensure!(
            st == DMA_STATUS_QUEUED,
            "FILL behind PAUSE: DMA_STATUS {st}, not QUEUED"
        );
        Ok(())
    }

    /// A vCPU's write to device memory during pre-copy: one page per round.
    pub fn vcpu_write_bar2(&mut self, qt: &mut Qtest, round: u64) -> Result<()> {
        let off = BAR2_VCPU_OFF + (round as usize % BAR2_VCPU_PAGES) * PAGE;
        let page = stamped(round, off, PAGE);
        qt.write(self.bar2 + off as u64, &page)?;
        self.bar2_expected[off..off + PAGE].copy_from_slice(&page);
        Ok(())
    }

    /// BAR0 registers, configuration space and all of BAR2, as the VM sees them.
    pub fn snapshot(&self, qt: &mut Qtest) -> Result<DeviceSnapshot> {
        let regs = (0..reg::END / 4)
            .map(|i| self.reg(qt, i * 4))
            .collect::<Result<_>>()?;
        Ok(DeviceSnapshot {
            regs,
            config: pci::config_space(qt)?,
            memory: qt.read(self.bar2, self.bar2_expected.len())?,
        })
    }

    /// The writer's range of guest RAM.
    pub fn writer_pages(qt: &mut Qtest) -> Result<Vec<u8>> {
        qt.read(BG_GPA, BG_PAGES as usize * PAGE)
    }

    /// The `FILL` target: untouched (`false`) or filled (`true`); an error
    /// if it is neither.
    pub fn filled(qt: &mut Qtest) -> Result<bool> {
        let got = qt.read(FILL_GPA, FILL_LEN)?;
        if got.iter().all(|&b| b == 0) {
            Ok(false)
        } else if got.chunks(4).all(|w| w == FILL_PATTERN.to_le_bytes()) {
            Ok(true)
        } else {
            bail!("the FILL target holds neither zeros nor the pattern")
        }
    }

    /// Clears `PAUSE` and checks that the queued `FILL` runs, once.
    pub fn run_paused_fill(&self, qt: &mut Qtest) -> Result<()> {
        let st = self.reg(qt, reg::DMA_STATUS)?;
        ensure!(
            st == DMA_STATUS_QUEUED,
            "DMA_STATUS {st} before PAUSE is cleared, not QUEUED"
        );
        ensure!(
            !Sample::filled(qt)?,
            "the FILL target is filled before PAUSE is cleared"
        );
        let completed = self.reg(qt, reg::DMA_COMPLETED)?;
        self.set(qt, reg::DMA_CTRL, 0)?;
        self.wait_dma(qt).context("the paused FILL")?;
        let now = self.reg(qt, reg::DMA_COMPLETED)?;
        ensure!(
            now == completed + 1,
            "DMA_COMPLETED went from {completed} to {now}, not by one"
        );
        ensure!(
            Sample::filled(qt)?,
            "FILL reported done but its target is not filled"
        );
        Ok(())
    }

    /// The writer goes on past `writes` (a count from before), and its newer
    /// stamps land in guest RAM.
    pub fn writer_goes_on(&self, qt: &mut Qtest, writes: u32) -> Result<()> {
        poll("the writer to go on", WRITER_TIMEOUT, || {
            let err = self.reg(qt, reg::BG_ERROR)?;
            ensure!(err == 0, "writer: BG_ERROR {err}");
            Ok((self.reg(qt, reg::BG_WRITES)? > writes).then_some(()))
        })?;
        let newest = stamps(&Sample::writer_pages(qt)?)
            .flatten()
            .map(|(n, _)| n)
            .max();
        ensure!(
            newest > Some(u64::from(writes)),
            "BG_WRITES advanced past {writes} but no page holds a newer stamp (newest {newest:?})"
        );
        Ok(())
    }

    /// The ring is pinned, writable, with all its pages.
    pub fn ring_pinned(&self, qt: &mut Qtest) -> Result<()> {
        let ctrl = self.reg(qt, reg::RING_CTRL)?;
        let pinned = self.reg(qt, reg::PINNED_PAGES)?;
        ensure!(
            ctrl == RING_PINNED | RING_WRITABLE && pinned == RING_LEN_PAGES,
            "RING_CTRL {ctrl:#x}, PINNED_PAGES {pinned}, RING_ERROR {}",
            self.reg(qt, reg::RING_ERROR)?
        );
        Ok(())
    }

    /// The device runs and takes register writes (not quiesced), its writer,
    /// ring and DMA engine work: the source after a failed migration.
    pub fn works(&self, qt: &mut Qtest) -> Result<()> {
        let status = self.reg(qt, reg::STATUS)?;
        ensure!(
            status & STATUS_QUIESCED == 0,
            "STATUS {status:#x}: still quiesced"
        );
        self.set(qt, reg::SCRATCH, 0x600d_cafe)?;
        let scratch = self.reg(qt, reg::SCRATCH)?;
        ensure!(
            scratch == 0x600d_cafe,
            "a SCRATCH write did not take ({scratch:#x})"
        );
        let writes = self.reg(qt, reg::BG_WRITES)?;
        self.writer_goes_on(qt, writes)?;
        self.ring_pinned(qt)?;
        self.run_paused_fill(qt)
    }
}

/// Differences between the source's and the destination's device, counters
/// and the migration status bit aside; empty when they are the same device.
pub fn differences(src: &DeviceSnapshot, dst: &DeviceSnapshot) -> Vec<String> {
    let (mut a, mut b) = (src.clone(), dst.clone());
    for off in NOT_COMPARED {
        a.regs[off as usize / 4] = 0;
        b.regs[off as usize / 4] = 0;
    }
    a.differences(&b)
}

/// Every writer stamp on the source is on the destination, as new or newer:
/// a page the device wrote after it was sent, and that dirty tracking
/// missed, shows here with an older stamp. Returns how many pages held one.
pub fn check_stamps(src: &[u8], dst: &[u8]) -> Result<usize> {
    let mut checked = 0;
    for (page, (s, d)) in stamps(src).zip(stamps(dst)).enumerate() {
        let Some((s_count, _)) = s else {
            bail!("source page {page} of the writer's range holds no stamp");
        };
        match d {
            Some((d_count, _)) if d_count >= s_count => checked += 1,
            Some((d_count, _)) => bail!(
                "writer page {page}: destination stamp {d_count} is older than the source's {s_count} \
                 (a page the device dirtied was not sent again)"
            ),
            None => bail!("writer page {page}: the destination holds no stamp, the source {s_count}"),
        }
    }
    Ok(checked)
}

/// The writer's stamps (count, page index) of a range, page by page; `None`
/// where a page holds none or the index of another page.
fn stamps(range: &[u8]) -> impl Iterator<Item = Option<(u64, u32)>> + '_ {
    range.chunks(PAGE).enumerate().map(|(i, p)| {
        let count = u64::from_le_bytes(p[0..8].try_into().ok()?);
        let index = u32::from_le_bytes(p[8..12].try_into().ok()?);
        let magic = u32::from_le_bytes(p[12..BG_STAMP_LEN].try_into().ok()?);
        (magic == BG_MAGIC && index as usize == i).then_some((count, index))
    })
}

/// Byte `i` of the pattern copied into BAR2.
fn pattern_byte(i: u32) -> u8 {
    (i.wrapping_mul(2_654_435_761) >> 24) as u8
}

/// `len` bytes written in `round` at `off`: little-endian u64 words of
/// the round and the word's offset, different in every round and place.
fn stamped(round: u64, off: usize, len: usize) -> Vec<u8> {
    (off / 8..(off + len) / 8)
        .flat_map(|w| (round << 32 | w as u64).to_le_bytes())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range(counts: &[Option<u64>]) -> Vec<u8> {
        let mut r = vec![0u8; counts.len() * PAGE];
        for (i, c) in counts.iter().enumerate() {
            if let Some(c) = c {
                let p = &mut r[i * PAGE..];
                p[0..8].copy_from_slice(&c.to_le_bytes());
                p[8..12].copy_from_slice(&(i as u32).to_le_bytes());
                p[12..16].copy_from_slice(&BG_MAGIC.to_le_bytes());
            }
        }
        r
    }

    #[test]
    fn stamps_as_new_or_newer_pass() {
        let src = range(&[Some(5), Some(6), Some(3)]);
        assert_eq!(check_stamps(&src, &src).unwrap(), 3);
        assert_eq!(
            check_stamps(&src, &range(&[Some(9), Some(6), Some(7)])).unwrap(),
            3
        );
    }

    #[test]
    fn a_lost_dirty_page_fails() {
        let src = range(&[Some(5), Some(6)]);
        let e = check_stamps(&src, &range(&[Some(5), Some(2)]))
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("writer page 1: destination stamp 2 is older than the source's 6"),
            "{e}"
        );
        let e = check_stamps(&src, &range(&[Some(5), None]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("page 1: the destination holds no stamp"), "{e}");
        let e = check_stamps(&range(&[None]), &range(&[None]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("source page 0"), "{e}");
    }

    #[test]
    fn a_stamp_of_another_page_is_no_stamp() {
        let mut r = range(&[Some(1), Some(1)]);
        r[PAGE + 8] = 0; // page 1 claims to be page 0
        assert_eq!(stamps(&r).collect::<Vec<_>>(), [Some((1, 0)), None]);
    }

    #[test]
    fn stamped_bytes_differ_by_round_and_place() {
        let a = stamped(1, 4096, 16);
        assert_eq!(a.len(), 16);
        assert_eq!(&a[0..8], &(1u64 << 32 | 512).to_le_bytes());
        assert_ne!(stamped(2, 4096, 16), a);
    }

    #[test]
    fn counters_are_not_compared() {
        let n = (reg::END / 4) as usize;
        let a = DeviceSnapshot {
            regs: vec![0; n],
            config: vec![0; 256],
            memory: vec![0; 8],
        };
        let mut b = a.clone();
        b.regs[reg::BG_WRITES as usize / 4] = 9;
        b.regs[reg::STATUS as usize / 4] = 1;
        assert!(differences(&a, &b).is_empty());
        b.regs[reg::DMA_COMPLETED as usize / 4] = 1;
        assert_eq!(differences(&a, &b).len(), 1);
    }
}
