// SPDX-License-Identifier: GPL-2.0
//! Opening through both paths; GET_INFO, GET_REGION_INFO, GET_IRQ_INFO.

use std::os::fd::AsFd;

use vfio_mig::uapi::vfio;
use vfio_mig::{Device, OpenPath};

use crate::device::{
    region, region_expect, region_offset, TypeSpec, DEVICE_FLAGS, DEVICE_INFO_MINSZ, IRQS,
    IRQ_INFO_MINSZ, LARGE, MIGRATION_FLAGS, MIGRATION_TYPE, NUM_IRQS, NUM_REGIONS,
    REGION_INFO_MINSZ, SMALL,
};
use crate::util::{expect_errno, skip, Ctx, Env, TResult};
use crate::{ensure, ensure_eq, ensure_hex};

fn check_info(dev: &Device) -> TResult {
    let i = dev.info().ctx("VFIO_DEVICE_GET_INFO")?;
    ensure_hex!(i.flags, DEVICE_FLAGS, "GET_INFO flags (want PCI|RESET)");
    ensure_eq!(i.num_regions, NUM_REGIONS, "GET_INFO num_regions");
    ensure_eq!(i.num_irqs, NUM_IRQS, "GET_INFO num_irqs");
    Ok(())
}

fn open_via(env: &Env, path: OpenPath) -> TResult {
    let fx = env.open(&SMALL, path)?;
    check_info(fx.dev())?;
    ensure_eq!(fx.dev().open_path(), path, "open path");
    if path == OpenPath::Iommufd {
        ensure!(
            fx.dev().iommufd_devid().is_some(),
            "no iommufd devid after bind"
        );
    }
    // The device answers register reads right after opening.
    let id = fx
        .dev()
        .read32(region::BAR0, crate::device::bar0::ID)
        .ctx("read BAR0 ID")?;
    ensure_hex!(id, crate::device::bar0::ID_VALUE, "BAR0 ID");
    Ok(())
}

pub fn open_legacy(env: &Env) -> TResult {
    open_via(env, OpenPath::Legacy)
}

pub fn open_iommufd(env: &Env) -> TResult {
    open_via(env, OpenPath::Iommufd)
}

pub fn get_info_bad_argsz(env: &Env) -> TResult {
    let fx = env.open(&SMALL, OpenPath::Legacy)?;
    for argsz in [0, 1, DEVICE_INFO_MINSZ - 1] {
        expect_errno(
            fx.dev().info_raw(argsz),
            libc::EINVAL,
            &format!("GET_INFO with argsz {argsz}"),
        )?;
    }
    let i = fx
        .dev()
        .info_raw(DEVICE_INFO_MINSZ)
        .ctx("GET_INFO with argsz = minsz")?;
    ensure_eq!(
        (i.flags, i.num_regions, i.num_irqs),
        (DEVICE_FLAGS, NUM_REGIONS, NUM_IRQS),
        "GET_INFO (flags, regions, irqs) with argsz = minsz"
    );
    Ok(())
}

fn check_regions(dev: &Device, spec: &TypeSpec) -> TResult {
    for index in 0..region::MIGRATION {
        let r = dev
            .region_info(index)
            .ctx(&format!("GET_REGION_INFO {index}"))?;
        let (size, flags) = region_expect(index, spec);
        ensure_hex!(r.size, size, "region {index} size");
        ensure_hex!(r.flags, flags, "region {index} flags");
        ensure_hex!(r.offset, region_offset(index), "region {index} offset");
        ensure!(
            r.caps.is_empty(),
            "region {index} has capabilities {:?}",
            r.caps
        );
    }
    let r = dev
        .region_info(region::MIGRATION)
        .ctx("GET_REGION_INFO 9")?;
    ensure_hex!(
        r.offset,
        region_offset(region::MIGRATION),
        "region 9 offset"
    );
    if r.size > 0 {
        ensure_hex!(
            r.flags,
            MIGRATION_FLAGS,
            "region 9 flags (READ|WRITE|MMAP|CAPS)"
        );
        ensure_eq!(
            r.region_type(),
            Some(MIGRATION_TYPE),
            "region 9 VFIO_REGION_INFO_CAP_TYPE (type, subtype)"
        );
        let cap = r
            .caps
            .iter()
            .find(|c| c.region_type().is_some())
            .expect("checked above");
        ensure_eq!(cap.version, 1, "region 9 CAP_TYPE version");
        ensure!(
            r.size > 4096 && r.size % 4096 == 0,
            "region 9 size {:#x} is not 4 KiB of registers plus page-sized areas",
            r.size
        );
    }
    Ok(())
}

pub fn region_info_small(env: &Env) -> TResult {
    let fx = env.open(&SMALL, OpenPath::Legacy)?;
    check_regions(fx.dev(), &SMALL)
}

pub fn region_info_large(env: &Env) -> TResult {
    let fx = env.open(&LARGE, OpenPath::Legacy)?;
    check_regions(fx.dev(), &LARGE)
}

pub fn region_info_iommufd(env: &Env) -> TResult {
    let fx = env.open(&LARGE, OpenPath::Iommufd)?;
    check_regions(fx.dev(), &LARGE)
}

pub fn region_info_caps_argsz(env: &Env) -> TResult {
    let fx = env.open(&SMALL, OpenPath::Legacy)?;
    let dev = fx.dev();
    let full = dev
        .region_info(region::MIGRATION)
        .ctx("GET_REGION_INFO 9")?;
    if full.size == 0 {
        return skip("region 9 has size 0 (migration region not implemented yet)");
    }
    // Too small for the chain: CAPS set, the needed argsz, no chain.
    let short = dev
        .region_info_raw(region::MIGRATION, REGION_INFO_MINSZ)
        .ctx("GET_REGION_INFO 9 with argsz 32")?;
    ensure!(
        short.flags & vfio::VFIO_REGION_INFO_FLAG_CAPS != 0,
        "argsz 32: flags {:#x} lack CAPS",
        short.flags
    );
    ensure!(
        short.argsz >= REGION_INFO_MINSZ + 16,
        "argsz 32: kernel asks for argsz {}, want >= 48 (header + cap_type)",
        short.argsz
    );
    ensure_eq!(short.cap_offset, 0, "argsz 32: cap_offset");
    ensure_eq!(short.size, full.size, "argsz 32: size");
    // One byte short of what it asked for: same answer.
    let almost = dev
        .region_info_raw(region::MIGRATION, short.argsz - 1)
        .ctx("GET_REGION_INFO 9 with argsz one short")?;
    ensure_eq!(
        (almost.argsz, almost.cap_offset),
        (short.argsz, 0),
        "argsz one short: (argsz, cap_offset)"
    );
    // Exactly what it asked for: the chain, right after the struct.
    let exact = dev
        .region_info_raw(region::MIGRATION, short.argsz)
        .ctx("GET_REGION_INFO 9 with the asked argsz")?;
    ensure!(
        exact.cap_offset >= REGION_INFO_MINSZ,
        "cap_offset {} points into the struct",
        exact.cap_offset
    );
    ensure_eq!(
        exact.region_type(),
        Some(MIGRATION_TYPE),
        "cap chain (type, subtype)"
    );
    Ok(())
}

pub fn region_info_bad(env: &Env) -> TResult {
    let fx = env.open(&SMALL, OpenPath::Legacy)?;
    let dev = fx.dev();
    for index in [NUM_REGIONS, NUM_REGIONS + 1, 0x8000_0000, u32::MAX] {
        expect_errno(
            dev.region_info_raw(index, REGION_INFO_MINSZ),
            libc::EINVAL,
            &format!("GET_REGION_INFO index {index:#x}"),
        )?;
    }
    for argsz in [0, 16, REGION_INFO_MINSZ - 1] {
        expect_errno(
            dev.region_info_raw(region::BAR0, argsz),
            libc::EINVAL,
            &format!("GET_REGION_INFO index 0 argsz {argsz}"),
        )?;
    }
    Ok(())
}

pub fn irq_info(env: &Env) -> TResult {
    let fx = env.open(&SMALL, OpenPath::Legacy)?;
    for (index, (count, flags)) in IRQS.iter().enumerate() {
        let index = index as u32;
        let i = fx
            .dev()
            .irq_info(index)
            .ctx(&format!("GET_IRQ_INFO {index}"))?;
        ensure_eq!(i.index, index, "GET_IRQ_INFO {index} index");
        ensure_eq!(i.count, *count, "GET_IRQ_INFO {index} count");
        ensure_hex!(i.flags, *flags, "GET_IRQ_INFO {index} flags");
    }
    Ok(())
}

pub fn irq_info_bad(env: &Env) -> TResult {
    let fx = env.open(&SMALL, OpenPath::Legacy)?;
    let dev = fx.dev();
    for index in [NUM_IRQS, NUM_IRQS + 1, u32::MAX] {
        expect_errno(
            dev.irq_info_raw(index, IRQ_INFO_MINSZ),
            libc::EINVAL,
            &format!("GET_IRQ_INFO index {index:#x}"),
        )?;
    }
    for argsz in [0, IRQ_INFO_MINSZ - 1] {
        expect_errno(
            dev.irq_info_raw(0, argsz),
            libc::EINVAL,
            &format!("GET_IRQ_INFO argsz {argsz}"),
        )?;
    }
    Ok(())
}

pub fn unknown_ioctl(env: &Env) -> TResult {
    let fx = env.open(&SMALL, OpenPath::Legacy)?;
    // VFIO_TYPE but a number VFIO does not define, and another type.
    for request in [0x3ba0u64, 0x3bff, 0x7801] {
        let mut buf = [0u64; 64];
        let arg = buf.as_mut_ptr() as libc::c_ulong;
        // SAFETY: buf is 512 writable bytes; an unknown ioctl touches nothing,
        // and a driver that wrongly handles it would find a zeroed struct
        // large enough for any VFIO header.
        let r = unsafe { vfio_mig::ioctl::raw(fx.dev().as_fd(), request, arg) };
        expect_errno(r, libc::ENOTTY, &format!("ioctl {request:#x}"))?;
    }
    // The device still answers.
    check_info(fx.dev())
}
