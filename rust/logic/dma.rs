// SPDX-License-Identifier: GPL-2.0

//! The DMA engine's registers: commands, the ring and the background
//! writer (BAR0 0x40..0xb0, `Documentation/device.rst`).
//!
//! Pure state and decisions: what a register write asks for, whether a
//! command is valid and what it moves, when the writer is due. The module
//! does the transfers and the pinning.

use super::abi::bar0::{
    self, BG_ENABLE, BG_MAGIC, BG_MAX_PAGES, BG_MAX_RATE, BG_STAMP_LEN, DMA_CMD_FILL,
    DMA_CMD_FROM_GUEST, DMA_CMD_TO_GUEST, DMA_CTRL_PAUSE, DMA_MAX_LEN, DMA_STATUS_DONE,
    DMA_STATUS_ERROR, DMA_STATUS_QUEUED, RING_MAX_PAGES, RING_PINNED, RING_WRITABLE,
};
use super::abi::GUEST_PAGE_SIZE;

/// errno values the engine reports in its registers (positive, as Linux).
pub(crate) mod errno {
    /// Invalid command or settings.
    pub(crate) const EINVAL: u32 = 22;
    /// Cancelled by an unmap of its range.
    pub(crate) const ECANCELED: u32 = 125;
}

/// The engine's registers: all device state, carried by migration.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct DmaRegs {
    pub(crate) dev_off: u32,
    pub(crate) iova: u64,
    pub(crate) len: u32,
    pub(crate) pattern: u32,
    pub(crate) cmd: u32,
    pub(crate) status: u32,
    pub(crate) error: u32,
    pub(crate) ctrl: u32,
    pub(crate) completed: u32,
    pub(crate) ring_iova: u64,
    pub(crate) ring_pages: u32,
    pub(crate) ring_ctrl: u32,
    pub(crate) ring_error: u32,
    pub(crate) bg_iova: u64,
    pub(crate) bg_pages: u32,
    pub(crate) bg_rate: u32,
    pub(crate) bg_ctrl: u32,
    pub(crate) bg_writes: u32,
    pub(crate) bg_error: u32,
    pub(crate) bg_cursor: u32,
}

/// What a register write asks of the module, beyond the register change.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum DmaWrite {
    /// Nothing.
    None,
    /// The engine may have work: a command to run or the writer started.
    Kick,
    /// A command is already queued: the write is refused (`EBUSY`).
    Busy,
    /// Release the ring, then pin it again if `RING_CTRL` has `PINNED`.
    Ring,
}

/// A command the engine can run, with its ranges checked.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Transfer {
    /// Device memory `dev_off..dev_off + len` to guest `iova`.
    ToGuest {
        iova: u64,
        dev_off: usize,
        len: usize,
    },
    /// Guest `iova..iova + len` to device memory at `dev_off`.
    FromGuest {
        iova: u64,
        dev_off: usize,
        len: usize,
    },
    /// `pattern` repeated over guest `iova..iova + len`.
    Fill { iova: u64, len: usize, pattern: u32 },
}

impl Transfer {
    /// The guest range the transfer touches.
    pub(crate) fn guest_range(&self) -> (u64, u64) {
        match *self {
            Transfer::ToGuest { iova, len, .. }
            | Transfer::FromGuest { iova, len, .. }
            | Transfer::Fill { iova, len, .. } => (iova, len as u64),
        }
    }
}

/// Whether `a..a + a_len` and `b..b + b_len` overlap (saturating at the
/// top of the address space).
pub(crate) fn overlaps(a: u64, a_len: u64, b: u64, b_len: u64) -> bool {
    a_len != 0 && b_len != 0 && a < b.saturating_add(b_len) && b < a.saturating_add(a_len)
}

fn set_lo(v: &mut u64, lo: u32) {
    *v = (*v & !0xffff_ffff) | u64::from(lo);
}

fn set_hi(v: &mut u64, hi: u32) {
    *v = (*v & 0xffff_ffff) | (u64::from(hi) << 32);
}

impl DmaRegs {
    /// Reads the register at `off`; `pinned` is what the module holds.
    pub(crate) fn read(&self, off: u32, pinned: u32) -> u32 {
        match off {
            bar0::DMA_DEV_OFF => self.dev_off,
            bar0::DMA_IOVA_LO => self.iova as u32,
            bar0::DMA_IOVA_HI => (self.iova >> 32) as u32,
            bar0::DMA_LEN => self.len,
            bar0::DMA_PATTERN => self.pattern,
            bar0::DMA_CMD => self.cmd,
            bar0::DMA_STATUS => self.status,
            bar0::DMA_ERROR => self.error,
            bar0::DMA_CTRL => self.ctrl,
            bar0::DMA_COMPLETED => self.completed,
            bar0::RING_IOVA_LO => self.ring_iova as u32,
            bar0::RING_IOVA_HI => (self.ring_iova >> 32) as u32,
            bar0::RING_PAGES => self.ring_pages,
            bar0::RING_CTRL => self.ring_ctrl,
            bar0::RING_ERROR => self.ring_error,
            bar0::PINNED_PAGES => pinned,
            bar0::BG_IOVA_LO => self.bg_iova as u32,
            bar0::BG_IOVA_HI => (self.bg_iova >> 32) as u32,
            bar0::BG_PAGES => self.bg_pages,
            bar0::BG_RATE => self.bg_rate,
            bar0::BG_CTRL => self.bg_ctrl,
            bar0::BG_WRITES => self.bg_writes,
            bar0::BG_ERROR => self.bg_error,
            bar0::BG_CURSOR => self.bg_cursor,
            _ => 0,
        }
    }

    /// Writes the register at `off`.
    pub(crate) fn write(&mut self, off: u32, val: u32) -> DmaWrite {
        let writer_on = self.bg_ctrl & BG_ENABLE != 0;
        match off {
            bar0::DMA_DEV_OFF => self.dev_off = val,
            bar0::DMA_IOVA_LO => set_lo(&mut self.iova, val),
            bar0::DMA_IOVA_HI => set_hi(&mut self.iova, val),
            bar0::DMA_LEN => self.len = val,
            bar0::DMA_PATTERN => self.pattern = val,
            bar0::DMA_CMD if self.status == DMA_STATUS_QUEUED => return DmaWrite::Busy,
            bar0::DMA_CMD => {
                self.cmd = val;
                self.status = DMA_STATUS_QUEUED;
                return DmaWrite::Kick;
            }
            bar0::DMA_CTRL => {
                self.ctrl = val & DMA_CTRL_PAUSE;
                return DmaWrite::Kick;
            }
            bar0::RING_IOVA_LO => set_lo(&mut self.ring_iova, val),
            bar0::RING_IOVA_HI => set_hi(&mut self.ring_iova, val),
            bar0::RING_PAGES => self.ring_pages = val,
            bar0::RING_CTRL => {
                self.ring_ctrl = val & (RING_PINNED | RING_WRITABLE);
                return DmaWrite::Ring;
            }
            bar0::BG_IOVA_LO if !writer_on => set_lo(&mut self.bg_iova, val),
            bar0::BG_IOVA_HI if !writer_on => set_hi(&mut self.bg_iova, val),
            bar0::BG_PAGES if !writer_on => self.bg_pages = val,
            bar0::BG_RATE if !writer_on => self.bg_rate = val,
            bar0::BG_CTRL => return self.write_bg_ctrl(val),
            _ => {}
        }
        DmaWrite::None
    }

    fn write_bg_ctrl(&mut self, val: u32) -> DmaWrite {
        if val & BG_ENABLE == 0 {
            self.bg_ctrl = 0;
            return DmaWrite::None;
        }
        if self.bg_ctrl & BG_ENABLE != 0 {
            return DmaWrite::None;
        }
        let range_ok = u64::from(self.bg_pages)
            .checked_mul(GUEST_PAGE_SIZE)
            .and_then(|len| self.bg_iova.checked_add(len))
            .is_some();
        if !range_ok
            || self.bg_iova & (GUEST_PAGE_SIZE - 1) != 0
            || !(1..=BG_MAX_PAGES).contains(&self.bg_pages)
            || !(1..=BG_MAX_RATE).contains(&self.bg_rate)
        {
            self.bg_error = errno::EINVAL;
            return DmaWrite::None;
        }
        self.bg_ctrl = BG_ENABLE;
        self.bg_cursor = 0;
        self.bg_error = 0;
        DmaWrite::Kick
    }

    /// Whether a queued command may start now.
    pub(crate) fn command_ready(&self) -> bool {
        self.status == DMA_STATUS_QUEUED && self.ctrl & DMA_CTRL_PAUSE == 0
    }

    /// Whether the background writer is on.
    pub(crate) fn writer_on(&self) -> bool {
        self.bg_ctrl & BG_ENABLE != 0
    }

    /// Checks the queued command against a device memory of `mem_size`
    /// bytes; the error is the errno to report.
    pub(crate) fn plan(&self, mem_size: usize) -> Result<Transfer, u32> {
        let len = self.len as usize;
        if len == 0 || self.len > DMA_MAX_LEN || self.iova.checked_add(len as u64).is_none() {
            return Err(errno::EINVAL);
        }
        let dev_off = self.dev_off as usize;
        let dev_ok = dev_off.checked_add(len).is_some_and(|end| end <= mem_size);
        let iova = self.iova;
        match self.cmd {
            DMA_CMD_TO_GUEST if dev_ok => Ok(Transfer::ToGuest { iova, dev_off, len }),
            DMA_CMD_FROM_GUEST if dev_ok => Ok(Transfer::FromGuest { iova, dev_off, len }),
            DMA_CMD_FILL => Ok(Transfer::Fill {
                iova,
                len,
                pattern: self.pattern,
            }),
            _ => Err(errno::EINVAL),
        }
    }

    /// Records the end of the queued command; `Err` is the errno.
    pub(crate) fn finish(&mut self, result: Result<(), u32>) {
        match result {
            Ok(()) => {
                self.status = DMA_STATUS_DONE;
                self.error = 0;
            }
            Err(e) => {
                self.status = DMA_STATUS_ERROR;
                self.error = e;
            }
        }
        self.completed = self.completed.wrapping_add(1);
    }

    /// The ring's range and whether it is pinned for writing, if its
    /// settings are valid; `Err` is the errno.
    pub(crate) fn ring_plan(&self) -> Result<(u64, u32, bool), u32> {
        let fits = u64::from(self.ring_pages)
            .checked_mul(GUEST_PAGE_SIZE)
            .and_then(|len| self.ring_iova.checked_add(len))
            .is_some();
        if !fits
            || self.ring_iova & (GUEST_PAGE_SIZE - 1) != 0
            || !(1..=RING_MAX_PAGES).contains(&self.ring_pages)
        {
            return Err(errno::EINVAL);
        }
        Ok((
            self.ring_iova,
            self.ring_pages,
            self.ring_ctrl & RING_WRITABLE != 0,
        ))
    }

    /// Stops the writer with `err`.
    pub(crate) fn stop_writer(&mut self, err: u32) {
        self.bg_ctrl = 0;
        self.bg_error = err;
    }

    /// The writer's next write: the page's IOVA and the 16 bytes stamped
    /// there. [`Self::writer_advance`] records it once done.
    pub(crate) fn writer_next(&self) -> (u64, [u8; BG_STAMP_LEN]) {
        let page = self.bg_cursor % self.bg_pages.max(1);
        let iova = self
            .bg_iova
            .saturating_add(u64::from(page).saturating_mul(GUEST_PAGE_SIZE));
        let mut stamp = [0u8; BG_STAMP_LEN];
        let fields = u64::from(self.bg_writes.wrapping_add(1))
            .to_le_bytes()
            .into_iter()
            .chain(page.to_le_bytes())
            .chain(BG_MAGIC.to_le_bytes());
        for (dst, b) in stamp.iter_mut().zip(fields) {
            *dst = b;
        }
        (iova, stamp)
    }

    /// Counts the write [`Self::writer_next`] described and moves on.
    pub(crate) fn writer_advance(&mut self) {
        let pages = self.bg_pages.max(1);
        self.bg_writes = self.bg_writes.wrapping_add(1);
        self.bg_cursor = (self.bg_cursor % pages + 1) % pages;
    }

    /// Whether the writer is on and its range touches `iova..iova + len`.
    pub(crate) fn writer_touches(&self, iova: u64, len: u64) -> bool {
        let range = u64::from(self.bg_pages).saturating_mul(GUEST_PAGE_SIZE);
        self.writer_on() && overlaps(self.bg_iova, range, iova, len)
    }

    /// Whether the queued command's guest range touches `iova..iova + len`.
    pub(crate) fn command_touches(&self, iova: u64, len: u64) -> bool {
        self.status == DMA_STATUS_QUEUED && overlaps(self.iova, u64::from(self.len), iova, len)
    }
}

/// Page writes the writer owes after `elapsed_ns` at `rate` per second,
/// having done `done` since it (re)started.
pub(crate) fn writer_due(rate: u32, elapsed_ns: u64, done: u64) -> u64 {
    // Split at whole seconds: no 128-bit division in the kernel.
    const NS: u64 = 1_000_000_000;
    let rate = u64::from(rate);
    let whole = rate.saturating_mul(elapsed_ns / NS);
    let part = rate.saturating_mul(elapsed_ns % NS) / NS;
    whole.saturating_add(part).saturating_sub(done)
}

/// Byte `i` of a fill with `pattern` is byte `i % 4` of the pattern.
pub(crate) fn fill_chunk(pattern: u32, offset: usize, out: &mut [u8]) {
    let bytes = pattern.to_le_bytes();
    for (i, b) in out.iter_mut().enumerate() {
        *b = bytes[offset.wrapping_add(i) & 3];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iova_halves() {
        let mut r = DmaRegs::default();
        r.write(bar0::DMA_IOVA_HI, 0x1);
        r.write(bar0::DMA_IOVA_LO, 0x2000);
        assert_eq!(r.iova, 0x1_0000_2000);
        assert_eq!(r.read(bar0::DMA_IOVA_HI, 0), 1);
        assert_eq!(r.read(bar0::PINNED_PAGES, 7), 7);
    }

    #[test]
    fn one_command_at_a_time() {
        let mut r = DmaRegs::default();
        assert_eq!(r.write(bar0::DMA_CMD, DMA_CMD_FILL), DmaWrite::Kick);
        assert_eq!(r.read(bar0::DMA_STATUS, 0), DMA_STATUS_QUEUED);
        assert_eq!(r.write(bar0::DMA_CMD, DMA_CMD_TO_GUEST), DmaWrite::Busy);
        assert_eq!(r.cmd, DMA_CMD_FILL);
        r.finish(Err(errno::EINVAL));
        assert_eq!((r.status, r.error, r.completed), (DMA_STATUS_ERROR, 22, 1));
        assert_eq!(r.write(bar0::DMA_CMD, DMA_CMD_TO_GUEST), DmaWrite::Kick);
        r.write(bar0::DMA_CTRL, 0xff);
        assert!(!r.command_ready());
        r.write(bar0::DMA_CTRL, 0);
        assert!(r.command_ready());
        r.finish(Ok(()));
        assert_eq!((r.status, r.error, r.completed), (DMA_STATUS_DONE, 0, 2));
    }

    #[test]
    fn plans() {
        let mut r = DmaRegs {
            cmd: DMA_CMD_TO_GUEST,
            len: 4096,
            dev_off: 4096,
            iova: 0x10000,
            ..Default::default()
        };
        assert_eq!(
            r.plan(8192),
            Ok(Transfer::ToGuest {
                iova: 0x10000,
                dev_off: 4096,
                len: 4096
            })
        );
        assert_eq!(r.plan(8191), Err(errno::EINVAL));
        r.cmd = DMA_CMD_FILL;
        assert!(r.plan(0).is_ok(), "a fill does not use device memory");
        r.iova = u64::MAX - 100;
        assert_eq!(r.plan(8192), Err(errno::EINVAL));
        r.iova = 0;
        for (cmd, len) in [
            (0, 1),
            (4, 1),
            (DMA_CMD_FILL, 0),
            (DMA_CMD_FILL, DMA_MAX_LEN + 1),
        ] {
            r.cmd = cmd;
            r.len = len;
            assert_eq!(r.plan(1 << 30), Err(errno::EINVAL), "cmd {cmd} len {len}");
        }
        r.dev_off = u32::MAX;
        r.cmd = DMA_CMD_FROM_GUEST;
        r.len = 2;
        assert_eq!(
            r.plan(usize::MAX),
            Ok(Transfer::FromGuest {
                iova: 0,
                dev_off: u32::MAX as usize,
                len: 2
            })
        );
    }

    #[test]
    fn ring_settings() {
        let mut r = DmaRegs::default();
        assert_eq!(r.ring_plan(), Err(errno::EINVAL));
        r.ring_pages = 512;
        r.ring_iova = 0x3000;
        r.ring_ctrl = RING_PINNED | RING_WRITABLE;
        assert_eq!(r.ring_plan(), Ok((0x3000, 512, true)));
        r.ring_pages = 513;
        assert_eq!(r.ring_plan(), Err(errno::EINVAL));
        r.ring_pages = 1;
        r.ring_iova = 0x3001;
        assert_eq!(r.ring_plan(), Err(errno::EINVAL));
        r.ring_iova = u64::MAX - 4095;
        assert_eq!(r.ring_plan(), Err(errno::EINVAL));
        assert_eq!(r.write(bar0::RING_CTRL, 0xff), DmaWrite::Ring);
        assert_eq!(r.ring_ctrl, RING_PINNED | RING_WRITABLE);
    }

    #[test]
    fn writer() {
        let mut r = DmaRegs::default();
        assert_eq!(r.write(bar0::BG_CTRL, 1), DmaWrite::None);
        assert_eq!((r.bg_ctrl, r.bg_error), (0, errno::EINVAL));
        r.write(bar0::BG_IOVA_LO, 0x8000);
        r.write(bar0::BG_PAGES, 3);
        r.write(bar0::BG_RATE, 100);
        assert_eq!(r.write(bar0::BG_CTRL, 1), DmaWrite::Kick);
        assert_eq!(r.bg_error, 0);
        // Settings are frozen while it runs.
        r.write(bar0::BG_PAGES, 7);
        assert_eq!(r.bg_pages, 3);
        let pages: [u64; 4] = core::array::from_fn(|_| {
            let (iova, _) = r.writer_next();
            r.writer_advance();
            iova
        });
        assert_eq!(pages, [0x8000, 0x9000, 0xa000, 0x8000]);
        assert_eq!(r.writer_next(), r.writer_next(), "next does not move");
        let (_, stamp) = r.writer_next();
        assert_eq!(&stamp[..8], &5u64.to_le_bytes());
        assert_eq!(&stamp[8..12], &1u32.to_le_bytes());
        assert_eq!(&stamp[12..], b"BGWR");
        assert!(r.writer_touches(0xa000, 1));
        assert!(!r.writer_touches(0xb000, 0x1000));
        r.write(bar0::BG_CTRL, 0);
        assert!(!r.writer_on());
        assert!(!r.writer_touches(0xa000, 1));
    }

    #[test]
    fn due_and_fill() {
        assert_eq!(writer_due(1000, 1_000_000, 0), 1);
        assert_eq!(writer_due(1000, 10_000_000, 4), 6);
        assert_eq!(writer_due(1000, 10_000_000, 40), 0);
        assert_eq!(writer_due(u32::MAX, u64::MAX, 0), u64::MAX);
        assert_eq!(writer_due(3, 2_500_000_000, 1), 6);
        let mut out = [0u8; 6];
        fill_chunk(0x4433_2211, 2, &mut out);
        assert_eq!(out, [0x33, 0x44, 0x11, 0x22, 0x33, 0x44]);
        assert!(overlaps(0, 10, 9, 1));
        assert!(!overlaps(0, 10, 10, 1));
        assert!(!overlaps(0, 0, 0, 10));
        // Saturating at the top: u64::MAX itself is not reachable.
        assert!(overlaps(u64::MAX - 1, 10, u64::MAX - 1, 1));
    }
}
