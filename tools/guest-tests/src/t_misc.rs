// SPDX-License-Identifier: GPL-2.0
//! Reset, close/reopen, concurrency, module unload.

use std::ffi::CString;
use std::path::PathBuf;

use vfio_mig::{Device, EventFd, OpenPath};

use crate::device::{bar0, cfg, irq, region, TypeSpec, LARGE, SMALL};
use crate::t_bars::{check_bar0_power_on, check_bar2_zero};
use crate::t_config::{check_power_on, same_bytes, snapshot};
use crate::util::{expect_errno, expect_fire, expect_quiet, skip, Ctx, Env, Io, TResult};
use crate::{ensure, ensure_eq, ensure_hex};

/// Changes every kind of device state a reset must undo.
fn dirty(dev: &Device, spec: &TypeSpec) -> TResult {
    let c = region::CONFIG;
    let rung = dev.r32(region::BAR0, bar0::DOORBELL)?;
    dev.w32(region::BAR0, bar0::SCRATCH, 0xfeed_face)?;
    dev.w32(region::BAR0, bar0::IRQ_ENABLE, bar0::IRQ_DOORBELL)?;
    dev.w32(region::BAR0, bar0::DOORBELL, 1)?;
    for off in [0, spec.mem_size / 2 - 3, spec.mem_size - 4096] {
        dev.write_region(region::BAR2, off, &[0xa5; 4096])
            .ctx("dirty device memory")?;
    }
    dev.w32(c, cfg::BAR0, 0xfebf_0000)?;
    dev.w32(c, cfg::BAR2, 0xffff_ffff)?;
    dev.w32(c, cfg::BAR3, 0x10)?;
    dev.w16(c, cfg::COMMAND, cfg::COMMAND_WRITABLE)?;
    dev.w8(c, cfg::INT_LINE, 0x0a)?;
    dev.w16(c, cfg::MSI_FLAGS, cfg::MSI_FLAGS_ENABLE)?;
    dev.w32(c, cfg::MSI_ADDR_LO, 0xfee0_0000)?;
    dev.w16(c, cfg::MSI_DATA, 0x4021)?;
    // It all took.
    ensure_hex!(
        dev.r32(region::BAR0, bar0::SCRATCH)?,
        0xfeed_faceu32,
        "SCRATCH dirtied"
    );
    ensure_hex!(
        dev.r32(region::BAR0, bar0::DOORBELL)?,
        rung.wrapping_add(1),
        "DOORBELL rung"
    );
    ensure_hex!(
        dev.r32(c, cfg::BAR0)?,
        0xfebf_0000u32,
        "config BAR0 dirtied"
    );
    ensure_hex!(
        dev.r16(c, cfg::COMMAND)?,
        cfg::COMMAND_WRITABLE,
        "command dirtied"
    );
    Ok(())
}

/// Everything back to what a fresh device shows.
fn check_power_on_all(dev: &Device, spec: &TypeSpec, fresh_cfg: &[u8], what: &str) -> TResult {
    let r = (|| {
        same_bytes(&snapshot(dev)?, fresh_cfg, "config space vs a fresh device")?;
        check_power_on(dev, spec)?;
        check_bar0_power_on(dev, spec)?;
        check_bar2_zero(dev, spec)
    })();
    r.map_err(|e| format!("{what}: {e}"))
}

pub fn reset_power_on(env: &Env) -> TResult {
    let fx = env.open(&LARGE, OpenPath::Iommufd)?;
    let dev = fx.dev();
    let fresh = snapshot(dev)?;
    check_power_on_all(dev, &LARGE, &fresh, "fresh device")?;
    dirty(dev, &LARGE)?;
    dev.reset().ctx("VFIO_DEVICE_RESET")?;
    check_power_on_all(dev, &LARGE, &fresh, "after VFIO_DEVICE_RESET")?;
    // And a second time, from the power-on state.
    dev.reset().ctx("second VFIO_DEVICE_RESET")?;
    check_power_on_all(dev, &LARGE, &fresh, "after a second reset")
}

pub fn reset_keeps_eventfds(env: &Env) -> TResult {
    let fx = env.open(&SMALL, OpenPath::Legacy)?;
    let dev = fx.dev();
    let efd = EventFd::new().ctx("eventfd")?;
    dev.set_irq_eventfd(irq::INTX, Some(efd.fd()))
        .ctx("install INTx eventfd")?;
    dev.w32(region::BAR0, bar0::IRQ_ENABLE, bar0::IRQ_DOORBELL)?;
    dev.w32(region::BAR0, bar0::DOORBELL, 1)?;
    expect_fire(&efd, "INTx before reset")?;
    // INTx is automasked now; mask it explicitly too. Reset unmasks.
    dev.mask_irq(irq::INTX).ctx("mask INTx")?;
    dev.reset().ctx("VFIO_DEVICE_RESET")?;
    expect_quiet(&efd, "INTx during reset")?;
    ensure_hex!(
        dev.r32(region::BAR0, bar0::IRQ_ENABLE)?,
        0u32,
        "IRQ_ENABLE after reset"
    );
    dev.w32(region::BAR0, bar0::IRQ_ENABLE, bar0::IRQ_DOORBELL)?;
    dev.w32(region::BAR0, bar0::DOORBELL, 1)?;
    expect_fire(&efd, "INTx after reset (eventfd kept, INTx unmasked)")?;
    ensure_eq!(
        dev.r32(region::BAR0, bar0::IRQ_COUNT)?,
        1,
        "IRQ_COUNT after reset and one ring"
    );

    let msi = EventFd::new().ctx("eventfd")?;
    dev.set_irq_eventfd(irq::MSI, Some(msi.fd()))
        .ctx("install MSI eventfd")?;
    dev.reset().ctx("VFIO_DEVICE_RESET")?;
    dev.w32(region::BAR0, bar0::IRQ_ENABLE, bar0::IRQ_DOORBELL)?;
    dev.w32(region::BAR0, bar0::DOORBELL, 1)?;
    expect_fire(&msi, "MSI after reset (eventfd kept)")?;
    expect_quiet(&efd, "INTx while MSI is installed")?;
    Ok(())
}

pub fn reopen_power_on(env: &Env) -> TResult {
    let mut fx = env.open(&SMALL, OpenPath::Legacy)?;
    let fresh = snapshot(fx.dev())?;
    let efd = EventFd::new().ctx("eventfd")?;
    fx.dev()
        .set_irq_eventfd(irq::INTX, Some(efd.fd()))
        .ctx("install INTx eventfd")?;
    dirty(fx.dev(), &SMALL)?;
    expect_fire(&efd, "INTx from the dirtying doorbell")?;
    for path in [OpenPath::Iommufd, OpenPath::Legacy] {
        fx.reopen(path)?;
        let dev = fx.dev();
        check_power_on_all(dev, &SMALL, &fresh, &format!("reopened ({path})"))?;
        // Close released the eventfd: a doorbell reaches nobody.
        dev.w32(region::BAR0, bar0::IRQ_ENABLE, bar0::IRQ_DOORBELL)?;
        dev.w32(region::BAR0, bar0::DOORBELL, 1)?;
        expect_quiet(&efd, "eventfd installed before close")?;
        ensure_eq!(
            dev.r32(region::BAR0, bar0::IRQ_COUNT)?,
            0,
            "IRQ_COUNT without eventfds"
        );
        dirty(dev, &SMALL)?;
    }
    Ok(())
}

pub fn concurrent_access(env: &Env) -> TResult {
    const ITERS: usize = 2000;
    const BLOCK: u64 = 0x1000;
    const BLOCK_LEN: usize = 256;
    let fx = env.open(&SMALL, OpenPath::Legacy)?;
    let dev = fx.dev();
    let scratch_vals: [[u32; 3]; 2] = [
        [0x0101_0101, 0x0202_0202, 0x0303_0303],
        [0xa0a0_a0a0, 0xb0b0_b0b0, 0xc0c0_c0c0],
    ];
    let mem_pats: [u32; 2] = [0x5a5a_5a5a, 0xc3c3_c3c3];
    let valid_scratch = |v: u32| v == 0 || scratch_vals.iter().flatten().any(|&s| s == v);
    let valid_mem = |v: u32| v == 0 || mem_pats.contains(&v);

    let worker = |t: usize| -> TResult {
        let block: Vec<u8> = (0..BLOCK_LEN / 4)
            .flat_map(|_| mem_pats[t].to_le_bytes())
            .collect();
        let mut got = vec![0u8; BLOCK_LEN];
        for i in 0..ITERS {
            let v = scratch_vals[t][i % 3];
            dev.write32(region::BAR0, bar0::SCRATCH, v)
                .map_err(|e| format!("thread {t} iteration {i}: {e}"))?;
            let r = dev
                .read32(region::BAR0, bar0::SCRATCH)
                .map_err(|e| format!("thread {t} iteration {i}: {e}"))?;
            ensure!(
                valid_scratch(r),
                "thread {t} iteration {i}: SCRATCH read {r:#x}, never written"
            );
            dev.write_region(region::BAR2, BLOCK, &block)
                .map_err(|e| format!("thread {t} iteration {i}: {e}"))?;
            dev.read_region(region::BAR2, BLOCK, &mut got)
                .map_err(|e| format!("thread {t} iteration {i}: {e}"))?;
            let dwords: Vec<u32> = got
                .chunks(4)
                .map(|c| u32::from_le_bytes(c.try_into().unwrap()))
                .collect();
            ensure!(
                dwords.iter().all(|&d| valid_mem(d)),
                "thread {t} iteration {i}: a device-memory dword is none of the patterns: {:x?}",
                dwords.iter().find(|&&d| !valid_mem(d))
            );
            ensure!(
                dwords.iter().all(|&d| d == dwords[0]),
                "thread {t} iteration {i}: torn {BLOCK_LEN}-byte block (mixes {:#x} and {:#x})",
                dwords[0],
                dwords.iter().find(|&&d| d != dwords[0]).unwrap()
            );
            // An unaligned dword straddling two writers' data.
            let mut odd = [0u8; 4];
            dev.read_region(region::BAR2, BLOCK + 6, &mut odd)
                .map_err(|e| format!("thread {t} iteration {i}: {e}"))?;
            let o = u32::from_le_bytes(odd);
            ensure!(
                valid_mem(o),
                "thread {t} iteration {i}: unaligned dword {o:#x}"
            );
        }
        Ok(())
    };
    let results: Vec<TResult> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..2).map(|t| s.spawn(move || worker(t))).collect();
        hs.into_iter()
            .map(|h| h.join().unwrap_or_else(|_| Err("thread panicked".into())))
            .collect()
    });
    for r in results {
        r?;
    }
    // Both threads ran to the end and the device still works.
    let last = dev.r32(region::BAR0, bar0::SCRATCH)?;
    ensure!(
        [
            scratch_vals[0][(ITERS - 1) % 3],
            scratch_vals[1][(ITERS - 1) % 3]
        ]
        .contains(&last),
        "final SCRATCH {last:#x} is neither thread's last write"
    );
    ensure_hex!(
        dev.r32(region::BAR0, bar0::ID)?,
        bar0::ID_VALUE,
        "ID after the threads"
    );
    Ok(())
}

fn refcnt(path: &PathBuf) -> Result<i64, String> {
    let s = std::fs::read_to_string(path).map_err(|e| format!("read {}: {e}", path.display()))?;
    s.trim()
        .parse()
        .map_err(|_| format!("{} is not a number: {s:?}", path.display()))
}

/// `delete_module(name, O_NONBLOCK)`: what `rmmod` does.
pub(crate) fn delete_module(name: &str) -> vfio_mig::Result<()> {
    let c = CString::new(name).expect("module name has no NUL");
    // SAFETY: a NUL-terminated string and a flags integer, as the syscall
    // expects.
    let r = unsafe { libc::syscall(libc::SYS_delete_module, c.as_ptr(), libc::O_NONBLOCK) };
    if r != 0 {
        return Err(vfio_mig::Error::Sys {
            what: format!("delete_module({name})"),
            errno: std::io::Error::last_os_error().raw_os_error().unwrap_or(0),
        });
    }
    Ok(())
}

pub fn rmmod_busy(env: &Env) -> TResult {
    let refpath = PathBuf::from(format!("/sys/module/{}/refcnt", env.module));
    if !refpath.exists() {
        return skip(format!(
            "{} missing: module not loaded or built in",
            refpath.display()
        ));
    }
    let m = env.create(&SMALL)?;
    let r0 = refcnt(&refpath)?;
    let dev = Device::open(m.uuid(), OpenPath::Legacy).ctx("open")?;
    ensure_eq!(
        refcnt(&refpath)?,
        r0 + 1,
        "module refcnt with one device open"
    );
    // The kernel answers an in-use module with EWOULDBLOCK (== EAGAIN), which
    // rmmod reports as "in use".
    expect_errno(
        delete_module(&env.module),
        libc::EWOULDBLOCK,
        "delete_module with a device open",
    )?;
    ensure!(
        env.parent.dir().exists(),
        "{} is gone after the refused unload",
        env.parent.dir().display()
    );
    ensure_hex!(
        dev.r32(region::BAR0, bar0::ID)?,
        bar0::ID_VALUE,
        "ID after the refused unload"
    );
    dev.w32(region::BAR0, bar0::SCRATCH, 0x600d_600d)?;
    ensure_hex!(
        dev.r32(region::BAR0, bar0::SCRATCH)?,
        0x600d_600du32,
        "SCRATCH after the refused unload"
    );
    let info = dev.info().ctx("GET_INFO after the refused unload")?;
    ensure_eq!(info.num_regions, crate::device::NUM_REGIONS, "num_regions");
    // A second device through the other path takes a second reference.
    let m2 = env.create(&SMALL)?;
    let dev2 = Device::open(m2.uuid(), OpenPath::Iommufd).ctx("open second (iommufd)")?;
    ensure_eq!(
        refcnt(&refpath)?,
        r0 + 2,
        "module refcnt with two devices open"
    );
    drop(dev2);
    drop(dev);
    ensure_eq!(refcnt(&refpath)?, r0, "module refcnt after closing both");
    Ok(())
}
