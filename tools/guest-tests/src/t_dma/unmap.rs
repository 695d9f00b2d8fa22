// SPDX-License-Identifier: GPL-2.0
//! Unmaps under a pinned ring, a queued command and the writer, in
//! pre-copy, and concurrent with all of them.

use std::time::{Duration, Instant};

use vfio_mig::{DeviceState, OpenPath};

use crate::device::{bar0, dma, mig, SMALL};
use crate::dmautil::{
    expect_errno_reg, expect_outcome, expect_pinned_total, expect_reg, path_name, pin_ring,
    pin_ring_ok, pinned_total, queue, rd, run, run_ok, same, start_writer, wait, wr, Cmd, Ram,
    DMA_TIMEOUT, PAGE, STILL,
};
use crate::util::{Ctx, Env, TResult};
use crate::{ensure, ensure_eq};

use super::{
    busy, expect_writer_runs, expect_writer_still, filled, set_state, BASE, ECANCELED, EINVAL,
    SENTINEL,
};

/// Unmaps while the ring is pinned run on iommufd only: on the legacy
/// type1 path, upstream vfio_iommu_type1 itself makes lockdep report a
/// circular dependency (device_list_lock vs iommu->lock) for any mdev
/// driver that unpins from its dma_unmap callback.
const RING_UNMAP_PATH: OpenPath = OpenPath::Iommufd;

pub fn unmap_ring(env: &Env) -> TResult {
    let b0 = pinned_total()?;
    for path in [RING_UNMAP_PATH] {
        for writable in [true, false] {
            let p = format!("{} (writable: {writable})", path_name(path));
            let fx = env.open(&SMALL, path)?;
            let dev = fx.dev();
            let a = Ram::map(dev, BASE, 8, SENTINEL)?;
            let other = Ram::map(dev, BASE + 0x10_0000, 8, SENTINEL)?;
            pin_ring_ok(dev, BASE + 2 * PAGE, 4, writable)?;
            expect_pinned_total(b0 + 4, &p)?;
            // An unmap elsewhere leaves the ring alone.
            other.unmap(dev)?;
            let what = format!("{p}: after an unmap that misses the ring");
            let want = dma::RING_PINNED | if writable { dma::RING_WRITABLE } else { 0 };
            expect_reg(dev, dma::RING_CTRL, want, &what)?;
            expect_reg(dev, dma::PINNED_PAGES, 4, &what)?;
            expect_reg(dev, dma::RING_ERROR, 0, &what)?;
            // The unmap of its memory takes it.
            a.unmap(dev)?;
            let what = format!("{p}: after the unmap of the ring's memory");
            expect_reg(dev, dma::RING_CTRL, 0, &what)?;
            expect_reg(dev, dma::PINNED_PAGES, 0, &what)?;
            expect_errno_reg(dev, dma::RING_ERROR, ECANCELED, &what)?;
            expect_pinned_total(b0, &what)?;
        }
    }
    Ok(())
}

pub fn unmap_queued(env: &Env) -> TResult {
    for path in [OpenPath::Legacy, OpenPath::Iommufd] {
        let p = path_name(path);
        let errno = dma::unmapped_errno(path);
        let fx = env.open(&SMALL, path)?;
        let dev = fx.dev();
        let a = Ram::map(dev, BASE, 4, SENTINEL)?;
        let b = Ram::map(dev, BASE + 0x10_0000, 4, SENTINEL)?;
        // An unmap that misses the queued command does not touch it.
        wr(dev, dma::CTRL, dma::CTRL_PAUSE)?;
        queue(dev, &Cmd::fill(BASE, 16, 0x1212_3434))?;
        b.unmap(dev)?;
        wr(dev, dma::CTRL, 0)?;
        let what = format!("{p}: FILL after an unmap elsewhere");
        let r = wait(dev, &what)?;
        expect_outcome(r, None, &what)?;
        same(
            &a.read(0, 16)?,
            &filled(0x1212_3434, 16),
            0,
            &format!("{what}: guest RAM"),
        )?;
        // Addresses are translated when the command runs: unmapped by
        // then, it fails with the backend's errno and writes nothing...
        let before = a.snapshot()?;
        wr(dev, dma::CTRL, dma::CTRL_PAUSE)?;
        queue(
            dev,
            &Cmd::fill(BASE + 2 * PAGE, 2 * PAGE as u32, 0x5656_7878),
        )?;
        a.unmap(dev)?;
        wr(dev, dma::CTRL, 0)?;
        let what = format!("{p}: FILL whose memory was unmapped while it was queued");
        let r = wait(dev, &what)?;
        expect_outcome(r, Some(errno), &what)?;
        same(
            &a.snapshot()?,
            &before,
            0,
            &format!("{what}: the old memory"),
        )?;
        // ... and mapped again, it reaches the new memory.
        let a2 = Ram::map(dev, BASE, 4, SENTINEL)?;
        wr(dev, dma::CTRL, dma::CTRL_PAUSE)?;
        queue(
            dev,
            &Cmd::fill(BASE + 2 * PAGE, 2 * PAGE as u32, 0x6767_8989),
        )?;
        a2.unmap(dev)?;
        let a3 = Ram::map(dev, BASE, 4, SENTINEL)?;
        wr(dev, dma::CTRL, 0)?;
        let what = format!("{p}: FILL whose memory was unmapped and mapped again while queued");
        let r = wait(dev, &what)?;
        expect_outcome(r, None, &what)?;
        let mut want = vec![SENTINEL; 4 * PAGE as usize];
        same(
            &a2.snapshot()?,
            &want,
            0,
            &format!("{what}: the old memory"),
        )?;
        want[2 * PAGE as usize..].copy_from_slice(&filled(0x6767_8989, 2 * PAGE as usize));
        same(
            &a3.snapshot()?,
            &want,
            0,
            &format!("{what}: the new memory"),
        )?;
        a3.unmap(dev)?;
        if path != RING_UNMAP_PATH {
            continue;
        }
        // With the ring pinned in the unmapped range, the driver's
        // dma_unmap runs and cancels the queued command too.
        let r4 = Ram::map(dev, BASE, 8, SENTINEL)?;
        pin_ring_ok(dev, BASE, 2, true)?;
        wr(dev, dma::CTRL, dma::CTRL_PAUSE)?;
        queue(
            dev,
            &Cmd::fill(BASE + 4 * PAGE, 2 * PAGE as u32, 0x4545_4545),
        )?;
        r4.unmap(dev)?;
        let what = format!("{p}: FILL queued in the ring's mapping when it was unmapped");
        expect_reg(dev, dma::PINNED_PAGES, 0, &what)?;
        expect_errno_reg(dev, dma::RING_ERROR, ECANCELED, &what)?;
        let r5 = Ram::map(dev, BASE, 8, SENTINEL)?;
        wr(dev, dma::CTRL, 0)?;
        let r = wait(dev, &what)?;
        expect_outcome(r, Some(ECANCELED), &what)?;
        std::thread::sleep(STILL);
        ensure!(
            r4.snapshot()?.iter().all(|&x| x == SENTINEL)
                && r5.snapshot()?.iter().all(|&x| x == SENTINEL),
            "{what}: the cancelled command wrote guest memory"
        );
        // A command outside the ring's mapping is not cancelled.
        let ring = Ram::map(dev, BASE + 0x20_0000, 2, SENTINEL)?;
        pin_ring_ok(dev, ring.iova, 2, true)?;
        wr(dev, dma::CTRL, dma::CTRL_PAUSE)?;
        queue(dev, &Cmd::fill(BASE, 8, 0x0909_0909))?;
        ring.unmap(dev)?;
        wr(dev, dma::CTRL, 0)?;
        let what = format!("{p}: FILL queued elsewhere when the ring was unmapped");
        let r = wait(dev, &what)?;
        expect_outcome(r, None, &what)?;
        same(
            &r5.read(0, 8)?,
            &filled(0x0909_0909, 8),
            0,
            &format!("{what}: guest RAM"),
        )?;
    }
    Ok(())
}

pub fn unmap_writer(env: &Env) -> TResult {
    for path in [OpenPath::Legacy, OpenPath::Iommufd] {
        let p = path_name(path);
        let fx = env.open(&SMALL, path)?;
        let dev = fx.dev();
        let a = Ram::map(dev, BASE, 4, SENTINEL)?;
        let b = Ram::map(dev, BASE + 0x10_0000, 4, SENTINEL)?;
        start_writer(dev, BASE, 4, 200)?;
        expect_writer_runs(dev, 2, &format!("{p}: started"))?;
        b.unmap(dev)?;
        expect_writer_runs(dev, 2, &format!("{p}: after an unmap elsewhere"))?;
        // Nothing pinned there: the next write finds no mapping.
        a.unmap(dev)?;
        let what = format!("{p}: after the unmap of its range");
        let start = Instant::now();
        while rd(dev, dma::BG_CTRL)? != 0 {
            ensure!(
                start.elapsed() < DMA_TIMEOUT,
                "{what}: still enabled after {DMA_TIMEOUT:?} (BG_WRITES {})",
                rd(dev, dma::BG_WRITES)?
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        expect_errno_reg(dev, dma::BG_ERROR, dma::unmapped_errno(path), &what)?;
        let st = rd(dev, bar0::IRQ_STATUS)?;
        ensure!(
            st & dma::IRQ_DMA_ERROR != 0,
            "{what}: IRQ_STATUS {st:#x}, want DMA_ERROR"
        );
        if path != RING_UNMAP_PATH {
            continue;
        }
        // With the ring pinned in its range, dma_unmap stops it at once.
        let c = Ram::map(dev, BASE, 8, SENTINEL)?;
        start_writer(dev, BASE, 4, 200)?;
        pin_ring_ok(dev, BASE + 4 * PAGE, 2, true)?;
        expect_writer_runs(dev, 2, &format!("{p}: with a ring"))?;
        c.unmap(dev)?;
        let what = format!("{p}: after the unmap of its range and the ring's");
        expect_reg(dev, dma::BG_CTRL, 0, &what)?;
        expect_errno_reg(dev, dma::BG_ERROR, ECANCELED, &what)?;
        let c2 = Ram::map(dev, BASE, 8, SENTINEL)?;
        expect_writer_still(dev, &c2, &what)?;
        ensure!(
            c2.snapshot()?.iter().all(|&x| x == SENTINEL),
            "{what}: the memory mapped in its place was written"
        );
    }
    Ok(())
}

pub fn unmap_precopy(env: &Env) -> TResult {
    let b0 = pinned_total()?;
    let fx = env.open(&SMALL, RING_UNMAP_PATH)?;
    let dev = fx.dev();
    let ram = Ram::map(dev, BASE, 32, SENTINEL)?;
    busy(dev, BASE, b0)?;
    let mut buf = Vec::new();
    dev.set_threshold(4096).ctx("threshold")?;
    dev.get_buffer(&mut buf).ctx("get buffer in PRECOPY")?;
    let d = dev
        .dirty_bitmap(BASE, 32)
        .ctx("dirty query before the unmap")?;
    ensure!(
        d.words.first().is_some_and(|w| w & 0xff00 == 0xff00),
        "dirty query before the unmap: {:x?}, want the writable ring's pages 8..16",
        d.words
    );
    ram.unmap(dev)?;
    let what = "after the unmap in PRECOPY";
    expect_pinned_total(b0, what)?;
    expect_reg(dev, dma::PINNED_PAGES, 0, what)?;
    expect_reg(dev, dma::RING_CTRL, 0, what)?;
    expect_errno_reg(dev, dma::RING_ERROR, ECANCELED, what)?;
    expect_reg(dev, dma::BG_CTRL, 0, what)?;
    expect_errno_reg(dev, dma::BG_ERROR, ECANCELED, what)?;
    wr(dev, dma::CTRL, 0)?;
    let r = wait(dev, what)?;
    expect_outcome(r, Some(ECANCELED), &format!("{what}: the queued FILL"))?;
    // The migration goes on without errors.
    for start in [BASE, 0, BASE + 8 * PAGE] {
        dev.dirty_bitmap(start, mig::BITMAP_PAGES)
            .ctx(&format!("{what}: dirty query at {start:#x}"))?;
    }
    let d = dev.dirty_bitmap(BASE, 32).ctx(what)?;
    ensure!(
        d.words.iter().all(|&w| w == 0),
        "{what}: the second query after the unmap still reports pages {:x?}",
        d.words
    );
    while dev.get_buffer(&mut buf).ctx("get buffer")? > 0 {}
    set_state(dev, DeviceState::StopNCopy)?;
    dev.dirty_bitmap(BASE, 32).ctx("dirty query in STOPNCOPY")?;
    while dev.get_buffer(&mut buf).ctx("get buffer")? > 0 {}
    let left = dev.pending().ctx("pending")?.total();
    ensure_eq!(left, 0, "pending at the end of the stream");
    set_state(dev, DeviceState::SaveCompleted)?;
    expect_pinned_total(b0, "at the end")
}

/// Unmaps and maps again, many times, while commands run, the ring is
/// pinned and unpinned and the writer writes, all from other threads: every
/// command ends DONE or with a documented errno, and nothing stays pinned.
pub fn unmap_concurrent(env: &Env) -> TResult {
    use std::sync::atomic::{AtomicBool, Ordering};
    const ROUNDS: u32 = 30;
    let b0 = pinned_total()?;
    let path = RING_UNMAP_PATH;
    let errno = dma::unmapped_errno(path);
    let fx = env.open(&SMALL, path)?;
    let dev = fx.dev();
    let mut ram = Ram::map(dev, BASE, 16, SENTINEL)?;
    start_writer(dev, BASE + 8 * PAGE, 4, 500)?;
    let done = AtomicBool::new(false);
    let (cmds, pins) = std::thread::scope(|sc| {
        let cmds = sc.spawn(|| -> Result<[u32; 3], String> {
            let mut n = [0u32; 3];
            let mut i = 0u64;
            while !done.load(Ordering::Acquire) {
                let c = Cmd::fill(BASE + (i % 4) * PAGE, 64, 0x0c0c_0c0c);
                let (st, err) = run(dev, &c)?;
                match (st, err as i32) {
                    (dma::DONE, 0) => n[0] += 1,
                    (dma::FAILED, e) if e == errno => n[1] += 1,
                    // iommufd refuses access to an area whose unmap is
                    // under way (prevent_access) with EINVAL.
                    (dma::FAILED, EINVAL) if path == OpenPath::Iommufd => n[1] += 1,
                    (dma::FAILED, ECANCELED) => n[2] += 1,
                    _ => {
                        return Err(format!(
                            "{c} during unmaps: DMA_STATUS {st} DMA_ERROR {err}, want DONE, \
                             {errno}, EINVAL (iommufd, unmap under way) or ECANCELED"
                        ))
                    }
                }
                i += 1;
            }
            Ok(n)
        });
        let pins = sc.spawn(|| -> Result<u32, String> {
            let mut n = 0;
            while !done.load(Ordering::Acquire) {
                if pin_ring(dev, BASE + 4 * PAGE, 4, n % 2 == 0)? != 0 {
                    wr(dev, dma::RING_CTRL, 0)?;
                }
                if rd(dev, dma::BG_CTRL)? == 0 {
                    wr(dev, dma::BG_CTRL, dma::BG_ENABLE)?;
                }
                n += 1;
            }
            Ok(n)
        });
        let r = (|| {
            for _ in 0..ROUNDS {
                ram.unmap(dev)?;
                std::thread::sleep(Duration::from_millis(2));
                ram.map_at(dev, BASE)?;
                std::thread::sleep(Duration::from_millis(5));
            }
            Ok::<(), String>(())
        })();
        done.store(true, Ordering::Release);
        let cmds = cmds
            .join()
            .unwrap_or_else(|_| Err("command thread panicked".into()));
        let pins = pins
            .join()
            .unwrap_or_else(|_| Err("pin thread panicked".into()));
        r.map(|_| (cmds, pins))
    })?;
    let n = cmds?;
    pins?;
    ensure!(
        n[0] > 0,
        "no command succeeded during {ROUNDS} unmaps: {n:?}"
    );
    wr(dev, dma::BG_CTRL, 0)?;
    wr(dev, dma::RING_CTRL, 0)?;
    expect_reg(dev, dma::PINNED_PAGES, 0, "at the end")?;
    expect_pinned_total(b0, "at the end")?;
    run_ok(dev, &Cmd::fill(BASE, 4, 0x0d0d_0d0d))?;
    ram.unmap(dev)?;
    drop(fx);
    expect_pinned_total(b0, "after close")
}
