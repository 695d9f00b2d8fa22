// SPDX-License-Identifier: GPL-2.0
//! Close, reset, mdev removal and rmmod during a migration; nothing left
//! pinned at the end.

use std::time::{Duration, Instant};

use vfio_mig::{Device, DeviceState, OpenPath};

use crate::device::{dma, SMALL};
use crate::dmautil::{
    expect_pinned_total, expect_reg, path_name, pin_ring_ok, pinned_total, rd, run_ok, same, Cmd,
    Ram, PAGE,
};
use crate::ensure;
use crate::util::{expect_errno, Ctx, Env, TResult};

use super::{busy, check_dma_power_on, expect_ram_still, expect_writer_runs, BASE, SENTINEL};

pub fn lifecycle_close(env: &Env) -> TResult {
    let b0 = pinned_total()?;
    for path in [OpenPath::Legacy, OpenPath::Iommufd] {
        let p = path_name(path);
        let mut fx = env.open(&SMALL, path)?;
        let ram = Ram::map(fx.dev(), BASE, 32, SENTINEL)?;
        busy(fx.dev(), BASE, b0)?;
        fx.reopen(path)?;
        expect_pinned_total(b0, &format!("{p}: after close"))?;
        expect_ram_still(&ram, &format!("{p}: after close"))?;
        let dev = fx.dev();
        check_dma_power_on(dev, &format!("{p}: reopened"))?;
        let st = dev.device_state().ctx("state")?;
        ensure!(
            st == DeviceState::None,
            "{p}: reopened: device_state {st}, want NONE"
        );
    }
    Ok(())
}

pub fn lifecycle_reset(env: &Env) -> TResult {
    let b0 = pinned_total()?;
    for path in [OpenPath::Legacy, OpenPath::Iommufd] {
        let p = path_name(path);
        let fx = env.open(&SMALL, path)?;
        let dev = fx.dev();
        let ram = Ram::map(dev, BASE, 32, SENTINEL)?;
        busy(dev, BASE, b0)?;
        dev.reset().ctx("VFIO_DEVICE_RESET")?;
        let what = format!("{p}: after reset");
        expect_pinned_total(b0, &what)?;
        check_dma_power_on(dev, &what)?;
        let st = dev.device_state().ctx("state")?;
        ensure!(
            st == DeviceState::None,
            "{what}: device_state {st}, want NONE"
        );
        expect_ram_still(&ram, &format!("{what} (writer stopped, command dropped)"))?;
        expect_reg(dev, dma::BG_WRITES, 0, &format!("{what}, a while later"))?;
        // The device works on.
        let before = ram.snapshot()?;
        run_ok(dev, &Cmd::fill(BASE + 30 * PAGE, 4, 0x3030_3030))?;
        let mut want = before;
        want[30 * PAGE as usize..30 * PAGE as usize + 4].copy_from_slice(&[0x30; 4]);
        same(
            &ram.snapshot()?,
            &want,
            0,
            &format!("{what}: guest RAM after a FILL"),
        )?;
        pin_ring_ok(dev, BASE, 2, true)?;
        expect_pinned_total(b0 + 2, &format!("{what}: a ring"))?;
    }
    expect_pinned_total(b0, "after close")
}

pub fn lifecycle_remove(env: &Env) -> TResult {
    let b0 = pinned_total()?;
    let m = env.create(&SMALL)?;
    let uuid = m.uuid().to_string();
    let dev = Device::open(&uuid, OpenPath::Legacy).ctx("open")?;
    let ram = Ram::map(&dev, BASE, 32, SENTINEL)?;
    busy(&dev, BASE, b0)?;
    let remover = std::thread::spawn(move || m.remove());
    std::thread::sleep(Duration::from_millis(500));
    let blocked = !remover.is_finished();
    // The device still works while the removal waits.
    let w = rd(&dev, dma::BG_WRITES)?;
    drop(dev);
    let start = Instant::now();
    while !remover.is_finished() {
        ensure!(
            start.elapsed() < Duration::from_secs(30),
            "mdev removal still blocked 30 s after the device was closed"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let r = remover.join().map_err(|_| "remover panicked".to_string())?;
    r.ctx("remove the mdev")?;
    ensure!(
        blocked,
        "mdev removal returned while the device fd was open (BG_WRITES then {w})"
    );
    ensure!(
        !vfio_mig::sysfs::mdev_exists(&uuid),
        "{uuid} still exists after removal"
    );
    expect_pinned_total(b0, "after removal")?;
    expect_ram_still(&ram, "after removal")
}

pub fn lifecycle_rmmod(env: &Env) -> TResult {
    let b0 = pinned_total()?;
    let fx = env.open(&SMALL, OpenPath::Legacy)?;
    let dev = fx.dev();
    let ram = Ram::map(dev, BASE, 32, SENTINEL)?;
    busy(dev, BASE, b0)?;
    expect_errno(
        crate::t_misc::delete_module(&env.module),
        libc::EWOULDBLOCK,
        "delete_module with a device busy in PRECOPY",
    )?;
    expect_reg(dev, dma::PINNED_PAGES, 8, "after the refused unload")?;
    expect_pinned_total(b0 + 8, "after the refused unload")?;
    expect_writer_runs(dev, 2, "after the refused unload")?;
    expect_reg(dev, dma::STATUS, dma::QUEUED, "after the refused unload")?;
    drop(fx);
    expect_pinned_total(b0, "after close")?;
    expect_ram_still(&ram, "after close")
}

/// No test left pages pinned (run after the others, nothing open).
pub fn dma_pinned_none_left(_env: &Env) -> TResult {
    expect_pinned_total(0, "with no device open")
}
