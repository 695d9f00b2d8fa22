// SPDX-License-Identifier: GPL-2.0

//! The register-state blob of the migration stream: the BAR0 registers and
//! the configuration space, in a fixed little-endian layout.
//!
//! | bytes     | contents                                                   |
//! |-----------|------------------------------------------------------------|
//! | 0..20     | SCRATCH, IRQ_STATUS, IRQ_ENABLE, DOORBELL count, IRQ_COUNT |
//! | 20..60    | DMA_DEV_OFF, DMA_IOVA (lo, hi), DMA_LEN, DMA_PATTERN,      |
//! |           | DMA_CMD, DMA_STATUS, DMA_ERROR, DMA_CTRL, DMA_COMPLETED    |
//! | 60..80    | RING_IOVA (lo, hi), RING_PAGES, RING_CTRL, RING_ERROR      |
//! | 80..112   | BG_IOVA (lo, hi), BG_PAGES, BG_RATE, BG_CTRL, BG_WRITES,   |
//! |           | BG_ERROR, BG_CURSOR                                        |
//! | 112..128  | reserved, zero                                             |
//! | 128..384  | configuration space (only its writable bits are loaded)    |
//!
//! Every field is a little-endian u32, in register order.

use super::abi::bar0::{
    self, BG_ENABLE, DMA_CTRL_PAUSE, DMA_STATUS_ERROR, IRQ_ALL, RING_PINNED, RING_WRITABLE,
};
use super::abi::config;
use super::config_space::ConfigSpace;
use super::dma::{DmaRegs, DmaWrite};
use super::regs::Registers;

/// Bytes of register words before the configuration space.
const WORDS_LEN: usize = 128;
/// Register words in use; the rest of `WORDS_LEN` is reserved.
const USED_WORDS: usize = 28;

/// Length of the blob.
pub(crate) const BLOB_LEN: usize = WORDS_LEN + config::SIZE;

fn words_of(r: &Registers) -> [u32; USED_WORDS] {
    let d = &r.dma;
    [
        r.scratch,
        r.irq_status,
        r.irq_enable,
        r.doorbells,
        r.irq_count,
        d.dev_off,
        d.iova as u32,
        (d.iova >> 32) as u32,
        d.len,
        d.pattern,
        d.cmd,
        d.status,
        d.error,
        d.ctrl,
        d.completed,
        d.ring_iova as u32,
        (d.ring_iova >> 32) as u32,
        d.ring_pages,
        d.ring_ctrl,
        d.ring_error,
        d.bg_iova as u32,
        (d.bg_iova >> 32) as u32,
        d.bg_pages,
        d.bg_rate,
        d.bg_ctrl,
        d.bg_writes,
        d.bg_error,
        d.bg_cursor,
    ]
}

fn join(lo: u32, hi: u32) -> u64 {
    u64::from(lo) | (u64::from(hi) << 32)
}

/// The blob of a device's registers and configuration space.
pub(crate) fn save(regs: &Registers, config: &ConfigSpace) -> [u8; BLOB_LEN] {
    let mut blob = [0u8; BLOB_LEN];
    for (dst, w) in blob.chunks_exact_mut(4).zip(words_of(regs)) {
        dst.copy_from_slice(&w.to_le_bytes());
    }
    if let Some(dst) = blob.get_mut(WORDS_LEN..) {
        dst.copy_from_slice(config.bytes());
    }
    blob
}

/// A blob no device of this version could have produced.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct BadBlob;

/// Checks a blob and turns it into register values and configuration
/// bytes; nothing is applied to a device here.
pub(crate) fn parse(blob: &[u8; BLOB_LEN]) -> Result<(Registers, [u8; config::SIZE]), BadBlob> {
    let mut words = [0u32; WORDS_LEN / 4];
    for (w, src) in words.iter_mut().zip(blob.chunks_exact(4)) {
        let mut b = [0u8; 4];
        b.copy_from_slice(src);
        *w = u32::from_le_bytes(b);
    }
    let [scratch, irq_status, irq_enable, doorbells, irq_count, dev_off, iova_lo, iova_hi, len, pattern, cmd, status, error, ctrl, completed, ring_lo, ring_hi, ring_pages, ring_ctrl, ring_error, bg_lo, bg_hi, bg_pages, bg_rate, bg_ctrl, bg_writes, bg_error, bg_cursor, reserved @ ..] =
        words;
    let regs = Registers {
        scratch,
        irq_status,
        irq_enable,
        doorbells,
        irq_count,
        dma: DmaRegs {
            dev_off,
            iova: join(iova_lo, iova_hi),
            len,
            pattern,
            cmd,
            status,
            error,
            ctrl,
            completed,
            ring_iova: join(ring_lo, ring_hi),
            ring_pages,
            ring_ctrl,
            ring_error,
            bg_iova: join(bg_lo, bg_hi),
            bg_pages,
            bg_rate,
            bg_ctrl,
            bg_writes,
            bg_error,
            bg_cursor,
        },
    };
    if reserved.iter().any(|&w| w != 0) || !plausible(&regs) {
        return Err(BadBlob);
    }
    let mut config = [0u8; config::SIZE];
    config.copy_from_slice(blob.get(WORDS_LEN..).ok_or(BadBlob)?);
    Ok((regs, config))
}

/// Whether a device could be in this register state.
fn plausible(r: &Registers) -> bool {
    let d = &r.dma;
    let writer_ok = !d.writer_on() || {
        let mut probe = d.clone();
        probe.bg_ctrl = 0;
        probe.write(bar0::BG_CTRL, BG_ENABLE) == DmaWrite::Kick && d.bg_cursor < d.bg_pages
    };
    let ring_ok = d.ring_ctrl & RING_PINNED == 0 || d.ring_plan().is_ok();
    (r.irq_status | r.irq_enable) & !IRQ_ALL == 0
        && d.status <= DMA_STATUS_ERROR
        && d.ctrl & !DMA_CTRL_PAUSE == 0
        && d.ring_ctrl & !(RING_PINNED | RING_WRITABLE) == 0
        && d.bg_ctrl & !BG_ENABLE == 0
        && writer_ok
        && ring_ok
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let regs = Registers {
            scratch: 0xdead_beef,
            irq_status: 1,
            irq_enable: 1,
            doorbells: 7,
            irq_count: 3,
            dma: DmaRegs {
                iova: 0x1_2345_6000,
                status: bar0::DMA_STATUS_QUEUED,
                ctrl: DMA_CTRL_PAUSE,
                ring_iova: 0x7000,
                ring_pages: 2,
                ring_ctrl: RING_PINNED,
                bg_iova: 0x9_0000_0000,
                bg_pages: 9,
                bg_rate: 5,
                bg_ctrl: BG_ENABLE,
                bg_cursor: 8,
                bg_writes: 77,
                ..Default::default()
            },
        };
        let mut config = ConfigSpace::new(4096, 1);
        config.write(0x10, &0xfebf_0000u32.to_le_bytes()).unwrap();
        let blob = save(&regs, &config);
        let (r, c) = parse(&blob).unwrap();
        assert_eq!(r, regs);
        assert_eq!(&c, config.bytes());
    }

    #[test]
    fn rejects_what_no_device_writes() {
        let blob = save(&Registers::default(), &ConfigSpace::new(4096, 1));
        // Reserved words, unknown IRQ bits, a bad DMA status, PAUSE's
        // neighbour, a writer on with no pages.
        for (at, byte) in [
            (112, 1),
            (127, 0x80),
            (4, 8),
            (8, 0x10),
            (44, 4),
            (52, 2),
            (96, 1),
        ] {
            let mut bad = blob;
            bad[at] = byte;
            assert_eq!(parse(&bad), Err(BadBlob), "byte {at}");
        }
    }
}
