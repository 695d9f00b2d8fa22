// SPDX-License-Identifier: GPL-2.0
//! The ring: pinning and unpinning, and the pinned-page counts.

use vfio_mig::OpenPath;

use crate::device::{bar0, dma, SMALL};
use crate::dmautil::{
    expect_errno_reg, expect_pinned_total, expect_reg, path_name, pin_ring, pin_ring_ok,
    pinned_total, rd, wr, Ram, PAGE,
};
use crate::ensure;
use crate::util::{Env, TResult};

use super::{clear_irq_status, BASE, BASE_HI, EINVAL, SENTINEL, UNMAPPED};

pub fn ring_pin(env: &Env) -> TResult {
    let b0 = pinned_total()?;
    for path in [OpenPath::Legacy, OpenPath::Iommufd] {
        let p = path_name(path);
        let a = env.open(&SMALL, path)?;
        let dev = a.dev();
        let ram = Ram::map(dev, BASE, 16, SENTINEL)?;
        for off in [dma::RING_CTRL, dma::RING_ERROR, dma::PINNED_PAGES] {
            expect_reg(dev, off, 0, &format!("{p}: power-on"))?;
        }
        pin_ring_ok(dev, BASE, 4, true)?;
        expect_reg(dev, dma::RING_ERROR, 0, &format!("{p}: after a good pin"))?;
        expect_pinned_total(b0 + 4, &format!("{p}: 4 pages pinned writable"))?;
        // Writing RING_CTRL again releases, then pins the new ring.
        pin_ring_ok(dev, BASE + 2 * PAGE, 8, false)?;
        expect_pinned_total(b0 + 8, &format!("{p}: re-pinned 8 pages read-only"))?;
        pin_ring_ok(dev, BASE + 15 * PAGE, 1, true)?;
        expect_pinned_total(b0 + 1, &format!("{p}: re-pinned 1 page"))?;
        wr(dev, dma::RING_CTRL, 0)?;
        expect_reg(dev, dma::RING_CTRL, 0, &format!("{p}: unpinned"))?;
        expect_reg(dev, dma::PINNED_PAGES, 0, &format!("{p}: unpinned"))?;
        expect_pinned_total(b0, &format!("{p}: unpinned"))?;
        // The largest ring.
        let big = Ram::map(dev, BASE_HI, dma::RING_MAX_PAGES as u64, 0)?;
        pin_ring_ok(dev, BASE_HI, dma::RING_MAX_PAGES, true)?;
        expect_pinned_total(b0 + 512, &format!("{p}: 512 pages"))?;
        // Two devices: the debugfs count is the module's.
        let b = env.open(&SMALL, path)?;
        let _ram_b = Ram::map(b.dev(), BASE, 8, 0)?;
        pin_ring_ok(b.dev(), BASE + PAGE, 5, false)?;
        expect_pinned_total(b0 + 517, &format!("{p}: two devices, 512 + 5 pages"))?;
        expect_reg(dev, dma::PINNED_PAGES, 512, &format!("{p}: first device"))?;
        drop(b);
        expect_pinned_total(b0 + 512, &format!("{p}: after closing the second device"))?;
        wr(dev, dma::RING_CTRL, 0)?;
        expect_pinned_total(b0, &format!("{p}: all unpinned"))?;
        // Pinning changes no guest memory.
        ensure!(
            ram.snapshot()?.iter().all(|&b| b == SENTINEL),
            "{p}: pinning changed guest RAM"
        );
        drop(big);
    }
    expect_pinned_total(b0, "at the end")
}

pub fn ring_pin_errors(env: &Env) -> TResult {
    let b0 = pinned_total()?;
    for path in [OpenPath::Legacy, OpenPath::Iommufd] {
        let p = path_name(path);
        let fx = env.open(&SMALL, path)?;
        let dev = fx.dev();
        let _ram = Ram::map(dev, BASE, 4, SENTINEL)?;
        let check_released = |what: &str, errno: Option<i32>| -> TResult {
            expect_reg(dev, dma::RING_CTRL, 0, what)?;
            expect_reg(dev, dma::PINNED_PAGES, 0, what)?;
            expect_pinned_total(b0, what)?;
            match errno {
                Some(e) => expect_errno_reg(dev, dma::RING_ERROR, e, what)?,
                None => ensure!(
                    rd(dev, dma::RING_ERROR)? != 0,
                    "{what}: RING_ERROR is 0 after a failed pin"
                ),
            }
            let st = rd(dev, bar0::IRQ_STATUS)?;
            ensure!(
                st & dma::IRQ_DMA_ERROR != 0,
                "{what}: IRQ_STATUS {st:#x}, want DMA_ERROR"
            );
            clear_irq_status(dev)
        };
        // Not mapped, wholly or in part: nothing stays pinned.
        for (iova, pages) in [
            (UNMAPPED, 4),
            (BASE + 2 * PAGE, 4),
            (BASE - PAGE, 2),
            (BASE + 3 * PAGE, dma::RING_MAX_PAGES),
        ] {
            let what = format!("{p}: pin {pages} pages at {iova:#x} (not all mapped)");
            let ctrl = pin_ring(dev, iova, pages, true)?;
            ensure!(ctrl == 0, "{what}: RING_CTRL reads {ctrl:#x}, want 0");
            check_released(&what, None)?;
        }
        // Bad settings.
        for (iova, pages) in [
            (BASE, 0),
            (BASE, dma::RING_MAX_PAGES + 1),
            (BASE, u32::MAX),
            (BASE + 0x800, 1),
            (BASE + 1, 1),
            (BASE + PAGE - 8, 1),
        ] {
            for writable in [true, false] {
                let what = format!("{p}: pin {pages} pages at {iova:#x} (writable: {writable})");
                let ctrl = pin_ring(dev, iova, pages, writable)?;
                ensure!(ctrl == 0, "{what}: RING_CTRL reads {ctrl:#x}, want 0");
                check_released(&what, Some(EINVAL))?;
            }
        }
        // A failed pin releases the ring that was pinned.
        pin_ring_ok(dev, BASE, 2, true)?;
        let what = format!("{p}: re-pin with 0 pages over a pinned ring");
        let ctrl = pin_ring(dev, BASE, 0, true)?;
        ensure!(ctrl == 0, "{what}: RING_CTRL reads {ctrl:#x}, want 0");
        check_released(&what, Some(EINVAL))?;
        pin_ring_ok(dev, BASE, 2, false)?;
        let what = format!("{p}: re-pin of an unmapped ring over a pinned ring");
        let ctrl = pin_ring(dev, UNMAPPED, 2, false)?;
        ensure!(ctrl == 0, "{what}: RING_CTRL reads {ctrl:#x}, want 0");
        check_released(&what, None)?;
        // And a good pin still works.
        pin_ring_ok(dev, BASE, 4, true)?;
        expect_pinned_total(b0 + 4, &format!("{p}: good pin after the errors"))?;
    }
    expect_pinned_total(b0, "after closing")
}
