// SPDX-License-Identifier: GPL-2.0
//! The background writer: its stamps, settings, unmapped pages and
//! quiesce.

use std::time::{Duration, Instant};

use vfio_mig::{DeviceState, OpenPath};

use crate::device::{bar0, dma, SMALL};
use crate::dmautil::{
    expect_errno_reg, expect_reg, path_name, rd, same, stamp, start_writer, wait_writes, wr,
    wr_iova, Ram, DMA_TIMEOUT, PAGE,
};
use crate::ensure;
use crate::util::{Env, TResult};

use super::{
    check_stamps, expect_writer_runs, expect_writer_still, set_state, writer_model, BASE, EINVAL,
    SENTINEL,
};

pub fn writer_stamps(env: &Env) -> TResult {
    const PAGES: u32 = 4;
    const RATE: u32 = 100;
    let fx = env.open(&SMALL, OpenPath::Legacy)?;
    let dev = fx.dev();
    let ram = Ram::map(dev, BASE, 8, SENTINEL)?;
    let t0 = Instant::now();
    start_writer(dev, BASE + PAGE, PAGES, RATE)?;
    expect_reg(dev, dma::BG_CTRL, dma::BG_ENABLE, "BG_CTRL after enabling")?;
    expect_reg(dev, dma::BG_ERROR, 0, "after enabling")?;
    // The settings are taken at enable; writes while it runs are ignored.
    wr_iova(dev, dma::BG_IOVA_LO, BASE + 5 * PAGE)?;
    wr(dev, dma::BG_PAGES, 1)?;
    wr(dev, dma::BG_RATE, 1)?;
    let what = "settings written while the writer runs";
    expect_reg(dev, dma::BG_IOVA_LO, (BASE + PAGE) as u32, what)?;
    expect_reg(dev, dma::BG_IOVA_HI, 0, what)?;
    expect_reg(dev, dma::BG_PAGES, PAGES, what)?;
    expect_reg(dev, dma::BG_RATE, RATE, what)?;
    wait_writes(dev, PAGES + 2, "the writer")?;
    wr(dev, dma::BG_CTRL, 0)?;
    let elapsed = t0.elapsed();
    let n = rd(dev, dma::BG_WRITES)? as u64;
    expect_reg(dev, dma::BG_CTRL, 0, "after disabling")?;
    let most = (RATE as f64 * elapsed.as_secs_f64() * 2.0) as u64 + 5;
    ensure!(
        n <= most,
        "{n} page writes in {elapsed:?} at BG_RATE {RATE}: more than {most}"
    );
    expect_reg(
        dev,
        dma::BG_CURSOR,
        (n % PAGES as u64) as u32,
        &format!("after {n} writes from page 0"),
    )?;
    let model = writer_model(PAGES, &[(0, n)]);
    check_stamps(&ram, 1, &model, &format!("after {n} writes"))?;
    expect_writer_still(dev, &ram, "a disabled writer")?;
    // Enabled again, it starts over at page 0; the count goes on.
    wr(dev, dma::BG_CTRL, dma::BG_ENABLE)?;
    wait_writes(dev, n as u32 + 2, "the writer enabled again")?;
    wr(dev, dma::BG_CTRL, 0)?;
    let m = rd(dev, dma::BG_WRITES)? as u64;
    expect_reg(
        dev,
        dma::BG_CURSOR,
        ((m - n) % PAGES as u64) as u32,
        &format!("after {} writes of the second run", m - n),
    )?;
    let model = writer_model(PAGES, &[(0, n), (n, m - n)]);
    check_stamps(&ram, 1, &model, &format!("after {n} + {} writes", m - n))?;
    expect_writer_still(dev, &ram, "disabled again")?;
    expect_reg(dev, dma::BG_ERROR, 0, "at the end")
}

pub fn writer_bad_settings(env: &Env) -> TResult {
    let fx = env.open(&SMALL, OpenPath::Legacy)?;
    let dev = fx.dev();
    let ram = Ram::map(dev, BASE, 4, SENTINEL)?;
    let want = ram.snapshot()?;
    for (iova, pages, rate) in [
        (BASE + 8, 2, 100),
        (BASE + 0x800, 2, 100),
        (BASE, 0, 100),
        (BASE, dma::BG_MAX_PAGES + 1, 100),
        (BASE, u32::MAX, 100),
        (BASE, 2, 0),
        (BASE, 2, dma::BG_MAX_RATE + 1),
        (BASE, 2, u32::MAX),
        (0xffff_ffff_ffff_f000, 2, 100),
        (0xffff_ffff_f000_0000, dma::BG_MAX_PAGES, 100),
    ] {
        let what = format!("enable with BG_IOVA {iova:#x}, BG_PAGES {pages}, BG_RATE {rate}");
        start_writer(dev, iova, pages, rate)?;
        expect_reg(dev, dma::BG_CTRL, 0, &what)?;
        expect_errno_reg(dev, dma::BG_ERROR, EINVAL, &what)?;
        expect_reg(dev, dma::BG_WRITES, 0, &what)?;
    }
    same(
        &ram.snapshot()?,
        &want,
        0,
        "guest RAM after refused settings",
    )?;
    // The limits themselves are accepted: 2^20 pages over a sparse 4 GiB.
    let big = Ram::map(dev, 1 << 32, dma::BG_MAX_PAGES as u64, 0)?;
    start_writer(dev, 1 << 32, dma::BG_MAX_PAGES, 1)?;
    expect_reg(dev, dma::BG_CTRL, dma::BG_ENABLE, "BG_PAGES 2^20")?;
    wait_writes(dev, 1, "BG_PAGES 2^20")?;
    wr(dev, dma::BG_CTRL, 0)?;
    let first = big.read(0, dma::BG_STAMP_LEN as u64)?;
    same(&first, &stamp(1, 0), 1 << 32, "first stamp over 2^20 pages")?;
    start_writer(dev, BASE, 1, dma::BG_MAX_RATE)?;
    expect_reg(dev, dma::BG_CTRL, dma::BG_ENABLE, "BG_RATE 1000000")?;
    wr(dev, dma::BG_CTRL, 0)?;
    expect_reg(dev, dma::BG_CTRL, 0, "disabled")
}

pub fn writer_unmapped(env: &Env) -> TResult {
    for path in [OpenPath::Legacy, OpenPath::Iommufd] {
        let p = path_name(path);
        let fx = env.open(&SMALL, path)?;
        let dev = fx.dev();
        let _ram = Ram::map(dev, BASE, 2, SENTINEL)?;
        // The range runs past the mapping: page 0 and 1 work, page 2 fails.
        start_writer(dev, BASE, 3, 200)?;
        let start = Instant::now();
        while rd(dev, dma::BG_CTRL)? != 0 {
            ensure!(
                start.elapsed() < DMA_TIMEOUT,
                "{p}: the writer over an unmapped page still runs after {DMA_TIMEOUT:?} \
                 (BG_WRITES {})",
                rd(dev, dma::BG_WRITES)?
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        let what = format!("{p}: the writer after a write to an unmapped page");
        expect_errno_reg(dev, dma::BG_ERROR, dma::unmapped_errno(path), &what)?;
        expect_reg(dev, dma::BG_WRITES, 2, &what)?;
        let st = rd(dev, bar0::IRQ_STATUS)?;
        ensure!(
            st & dma::IRQ_DMA_ERROR != 0,
            "{what}: IRQ_STATUS {st:#x}, want DMA_ERROR"
        );
    }
    Ok(())
}

pub fn writer_quiesce(env: &Env) -> TResult {
    let fx = env.open(&SMALL, OpenPath::Legacy)?;
    let dev = fx.dev();
    let ram = Ram::map(dev, BASE, 4, SENTINEL)?;
    start_writer(dev, BASE, 4, 200)?;
    expect_writer_runs(dev, 2, "RUNNING")?;
    let mut buf = Vec::new();
    // Each way into and out of the quiesced states.
    for (stop, restart) in [
        (
            &[
                DeviceState::Running,
                DeviceState::Setup,
                DeviceState::PreCopy,
                DeviceState::StopNCopy,
            ][..],
            &[DeviceState::Failed, DeviceState::Running][..],
        ),
        (
            &[DeviceState::Setup, DeviceState::StopNCopy][..],
            &[DeviceState::Cancelled, DeviceState::Running][..],
        ),
        (
            &[
                DeviceState::Setup,
                DeviceState::PreCopy,
                DeviceState::StopNCopy,
                DeviceState::SaveCompleted,
            ][..],
            &[DeviceState::Running][..],
        ),
    ] {
        for s in stop {
            set_state(dev, *s)?;
            if *s == DeviceState::StopNCopy {
                if *s != stop[stop.len() - 1] {
                    expect_writer_still(dev, &ram, "MIGRATION_STOPNCOPY")?;
                }
                while dev.get_buffer(&mut buf).map_err(|e| e.to_string())? > 0 {}
            } else if *s != DeviceState::SaveCompleted {
                expect_writer_runs(dev, 2, &format!("{s}"))?;
            }
        }
        let last = stop[stop.len() - 1];
        expect_writer_still(dev, &ram, &format!("{last}"))?;
        expect_reg(
            dev,
            dma::BG_CTRL,
            dma::BG_ENABLE,
            &format!("{last}: the writer stays enabled"),
        )?;
        for s in restart {
            set_state(dev, *s)?;
            expect_writer_runs(dev, 2, &format!("{s} after {last}"))?;
        }
    }
    expect_reg(dev, dma::BG_ERROR, 0, "at the end")
}
