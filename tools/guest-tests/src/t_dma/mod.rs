// SPDX-License-Identifier: GPL-2.0
//! The DMA engine (Documentation/device.rst, "DMA engine"): commands byte
//! for byte against guest RAM and device memory, completion and
//! interrupts, bad commands, unmapped IOVAs, the queue; the ring and the
//! pinned-page counts; the background writer; unmaps under a pinned ring,
//! a queued command and the writer; close, reset, mdev removal and rmmod
//! during a migration; the DMA state in the migration stream.
//!
//! Guest RAM is a memfd the test reads directly, so every check compares
//! the bytes the device should have moved with the bytes it moved.
//!
//! One file per subject: `commands`, `ring`, `writer`, `unmap`,
//! `lifecycle` and `migrate`; this one holds the addresses and the helpers
//! they share.

use vfio_mig::{Device, DeviceState};

use crate::device::{bar0, dma, region, SMALL};
use crate::dmautil::{
    changed_pages, expect_pinned_total, expect_reg, pin_ring_ok, queue, rd, same, stamp,
    start_writer, wait_writes, wr, Cmd, Ram, PAGE, STILL,
};
use crate::ensure;
use crate::t_migration::{go, set_state};
use crate::util::{pattern, Ctx, TResult};

mod commands;
mod lifecycle;
mod migrate;
mod ring;
mod unmap;
mod writer;

pub use commands::{
    dma_bad_commands, dma_busy, dma_copy_iommufd, dma_copy_legacy, dma_cross_4g, dma_irq,
    dma_max_len, dma_quiesce, dma_unmapped_iommufd, dma_unmapped_legacy,
};
pub use lifecycle::{
    dma_pinned_none_left, lifecycle_close, lifecycle_remove, lifecycle_reset, lifecycle_rmmod,
};
pub use migrate::dma_migrate;
pub use ring::{ring_pin, ring_pin_errors};
pub use unmap::{unmap_concurrent, unmap_precopy, unmap_queued, unmap_ring, unmap_writer};
pub use writer::{writer_bad_settings, writer_quiesce, writer_stamps, writer_unmapped};

const B0: u32 = region::BAR0;
const B2: u32 = region::BAR2;
const EINVAL: i32 = libc::EINVAL;
const EBUSY: i32 = libc::EBUSY;
const ECANCELED: i32 = libc::ECANCELED;

/// Where most tests map their guest RAM.
const BASE: u64 = 0x10_0000;
/// An IOVA above 4 GiB: the `_HI` halves matter.
const BASE_HI: u64 = 0x1_2340_0000;
/// An IOVA no test maps.
const UNMAPPED: u64 = 0x4000_0000;
/// Fill of guest RAM the device has not written.
const SENTINEL: u8 = 0x5a;

/// Every DMA register reads 0 (power-on, reset, reopen).
pub fn check_dma_power_on(dev: &Device, what: &str) -> TResult {
    for (off, _) in dma::REGS {
        expect_reg(dev, off, 0, &format!("{what}: power-on"))?;
    }
    Ok(())
}

/// Writes a distinct pattern over all of device memory; returns it.
fn fill_bar2(dev: &Device, seed: u8) -> Result<Vec<u8>, String> {
    let mem: Vec<u8> = (0..SMALL.mem_size).map(|i| pattern(i, seed)).collect();
    dev.write_region(B2, 0, &mem).ctx("fill device memory")?;
    Ok(mem)
}

fn read_bar2(dev: &Device) -> Result<Vec<u8>, String> {
    let mut b = vec![0u8; SMALL.mem_size as usize];
    dev.read_region(B2, 0, &mut b).ctx("read device memory")?;
    Ok(b)
}

/// `len` bytes of a FILL with `pat`.
fn filled(pat: u32, len: usize) -> Vec<u8> {
    let p = pat.to_le_bytes();
    (0..len).map(|i| p[i % 4]).collect()
}

/// Clears the engine's interrupt causes (RW1C).
fn clear_irq_status(dev: &Device) -> TResult {
    wr(
        dev,
        bar0::IRQ_STATUS,
        dma::IRQ_DMA_DONE | dma::IRQ_DMA_ERROR | bar0::IRQ_DOORBELL,
    )
}

/// Asserts that guest RAM does not change over [`STILL`].
fn expect_ram_still(ram: &Ram, what: &str) -> TResult {
    let a = ram.snapshot()?;
    std::thread::sleep(STILL);
    let b = ram.snapshot()?;
    let ch = changed_pages(&a, &b);
    ensure!(
        ch.is_empty(),
        "{what}: guest RAM pages {ch:?} changed over {STILL:?}"
    );
    Ok(())
}

/// Asserts that the writer does not write (RAM and `BG_WRITES` still).
fn expect_writer_still(dev: &Device, ram: &Ram, what: &str) -> TResult {
    let w = rd(dev, dma::BG_WRITES)?;
    expect_ram_still(ram, what)?;
    expect_reg(dev, dma::BG_WRITES, w, &format!("{what}: after {STILL:?}"))
}

/// Waits until the writer advances by `n` page writes.
fn expect_writer_runs(dev: &Device, n: u32, what: &str) -> Result<u32, String> {
    let w = rd(dev, dma::BG_WRITES)?;
    wait_writes(dev, w + n, what)
}

/// Which page of a writer's range holds which count after the given
/// sessions: each session `(first, n)` starts at page 0 with count
/// `first + 1` and makes `n` writes.
fn writer_model(pages: u32, sessions: &[(u64, u64)]) -> Vec<Option<u64>> {
    let mut m = vec![None; pages as usize];
    for &(first, n) in sessions {
        for j in 0..n {
            m[(j % pages as u64) as usize] = Some(first + j + 1);
        }
    }
    m
}

/// Checks guest RAM byte for byte: the writer's range starts at page
/// `first` and `model` says which count each of its pages holds; every
/// other byte is [`SENTINEL`].
fn check_stamps(ram: &Ram, first: u64, model: &[Option<u64>], what: &str) -> TResult {
    for page in 0..ram.pages() {
        let got = ram.read(page * PAGE, PAGE)?;
        let mut want = vec![SENTINEL; PAGE as usize];
        let mut c = None;
        if page >= first && page < first + model.len() as u64 {
            let k = page - first;
            c = model[k as usize];
            if let Some(c) = c {
                want[..dma::BG_STAMP_LEN].copy_from_slice(&stamp(c, k as u32));
            }
        }
        same(
            &got,
            &want,
            page * PAGE,
            &format!("{what}: guest page {page} (writer range from page {first}, stamp {c:?})"),
        )?;
    }
    Ok(())
}

/// Starts the writer on pages 0..4, pins a writable ring on pages 8..16,
/// queues a paused FILL on page 20, and takes the device to PRECOPY.
fn busy(dev: &Device, base: u64, b0: u64) -> TResult {
    start_writer(dev, base, 4, 200)?;
    pin_ring_ok(dev, base + 8 * PAGE, 8, true)?;
    wr(dev, dma::CTRL, dma::CTRL_PAUSE)?;
    queue(dev, &Cmd::fill(base + 20 * PAGE, PAGE as u32, 0x2020_2020))?;
    go(
        dev,
        &[
            DeviceState::Running,
            DeviceState::Setup,
            DeviceState::PreCopy,
        ],
    )?;
    expect_writer_runs(dev, 2, "PRECOPY")?;
    expect_pinned_total(b0 + 8, "busy in PRECOPY")
}
