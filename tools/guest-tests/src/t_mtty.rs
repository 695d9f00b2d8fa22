// SPDX-License-Identifier: GPL-2.0
//! The library's VFIO plumbing checked against the C sample mtty (Linux
//! 6.12 samples/vfio-mdev/mtty.c). Skipped when mtty is not loaded.

use std::os::fd::AsFd;
use std::sync::Arc;

use vfio_mig::uapi::vfio;
use vfio_mig::{Device, EventFd, GuestMemory, Mdev, OpenPath, Parent};

use crate::device::region_offset;
use crate::util::{expect_errno, expect_fire, expect_quiet, skip, Ctx, Env, Io, TResult};
use crate::{ensure, ensure_eq, ensure_hex};

const MTTY: &str = "mtty";
/// mtty's port pool (MAX_MTTYS).
const MTTY_PORTS: u32 = 24;

fn mtty() -> Result<Parent, TResult> {
    Parent::open(MTTY).map_err(|_| skip("mtty is not loaded (modprobe mtty)"))
}

macro_rules! mtty_or_skip {
    () => {
        match mtty() {
            Ok(p) => p,
            Err(s) => return s,
        }
    };
}

pub fn mtty_sysfs(_env: &Env) -> TResult {
    let p = mtty_or_skip!();
    ensure_eq!(
        p.types().ctx("types")?,
        vec!["mtty-1".to_string(), "mtty-2".to_string()],
        "mtty types"
    );
    let t1 = p.mdev_type("1");
    let t2 = p.mdev_type("mtty-2");
    let a1 = t1.attrs().ctx("mtty-1 attrs")?;
    let a2 = t2.attrs().ctx("mtty-2 attrs")?;
    ensure_eq!(a1.name, "Single port serial", "mtty-1 name");
    ensure_eq!(a2.name, "Dual port serial", "mtty-2 name");
    ensure_eq!(a1.device_api, "vfio-pci", "mtty-1 device_api");
    ensure_eq!(a1.description, None, "mtty-1 description (mtty has none)");
    if !t1.devices().ctx("devices")?.is_empty() || !t2.devices().ctx("devices")?.is_empty() {
        return skip("mtty has mdevs already; cannot count its pool");
    }
    ensure_eq!(
        (a1.available_instances, a2.available_instances),
        (MTTY_PORTS, MTTY_PORTS / 2),
        "mtty (1, 2) available_instances"
    );
    let m = t2.create_guarded().ctx("create mtty-2")?;
    ensure_eq!(
        (
            t1.available_instances().ctx("avail")?,
            t2.available_instances().ctx("avail")?
        ),
        (MTTY_PORTS - 2, MTTY_PORTS / 2 - 1),
        "mtty (1, 2) available_instances with one mtty-2"
    );
    expect_errno(
        t1.create(m.uuid()),
        libc::EEXIST,
        "create mtty-1 with a used UUID",
    )?;
    m.remove().ctx("remove")?;
    ensure_eq!(
        t1.available_instances().ctx("avail")?,
        MTTY_PORTS,
        "mtty-1 available_instances after remove"
    );
    Ok(())
}

fn mtty_device(p: &Parent, path: OpenPath) -> TResult {
    let m = p.mdev_type("2").create_guarded().ctx("create mtty-2")?;
    let r = mtty_checks(&m, path);
    drop(m);
    r
}

fn mtty_checks(m: &Mdev, path: OpenPath) -> TResult {
    let dev = Device::open(m.uuid(), path).ctx(&format!("open mtty ({path})"))?;
    // mtty needs GET_INFO before SET_IRQS/GET_IRQ_INFO (it caches num_irqs).
    let i = dev.info().ctx("GET_INFO")?;
    ensure_eq!(
        (i.flags, i.num_regions, i.num_irqs),
        (vfio::VFIO_DEVICE_FLAGS_PCI, 9, 5),
        "mtty GET_INFO (flags, regions, irqs)"
    );
    expect_errno(dev.info_raw(15), libc::EINVAL, "GET_INFO argsz 15")?;
    let rw = vfio::VFIO_REGION_INFO_FLAG_READ | vfio::VFIO_REGION_INFO_FLAG_WRITE;
    for (index, size) in [(0u32, 8u64), (1, 8), (2, 0), (7, 0xff)] {
        let r = dev
            .region_info(index)
            .ctx(&format!("GET_REGION_INFO {index}"))?;
        ensure_eq!(
            (r.size, r.flags, r.offset, r.caps.len()),
            (size, rw, region_offset(index), 0),
            "mtty region {index} (size, flags, offset, caps)"
        );
    }
    expect_errno(
        dev.region_info_raw(9, 32),
        libc::EINVAL,
        "GET_REGION_INFO 9",
    )?;
    expect_errno(
        dev.region_info_raw(0, 31),
        libc::EINVAL,
        "GET_REGION_INFO argsz 31",
    )?;
    let intx = dev.irq_info(0).ctx("GET_IRQ_INFO 0")?;
    ensure_eq!(
        (intx.count, intx.flags),
        (
            1,
            vfio::VFIO_IRQ_INFO_EVENTFD
                | vfio::VFIO_IRQ_INFO_MASKABLE
                | vfio::VFIO_IRQ_INFO_AUTOMASKED
        ),
        "mtty INTx info"
    );
    let msi = dev.irq_info(1).ctx("GET_IRQ_INFO 1")?;
    ensure_eq!(
        (msi.count, msi.flags),
        (
            1,
            vfio::VFIO_IRQ_INFO_EVENTFD | vfio::VFIO_IRQ_INFO_NORESIZE
        ),
        "mtty MSI info"
    );
    expect_errno(
        dev.irq_info(2),
        libc::EINVAL,
        "GET_IRQ_INFO 2 (mtty has no MSI-X)",
    )?;
    expect_errno(dev.irq_info(5), libc::EINVAL, "GET_IRQ_INFO 5")?;

    // Config space.
    ensure_hex!(dev.r32(7, 0)?, 0x3253_4348u32, "mtty vendor/device");
    ensure_hex!(dev.r8(7, 0x3d)?, 1u8, "mtty interrupt pin");
    dev.w32(7, 0x10, 0xffff_ffff)?;
    ensure_hex!(
        dev.r32(7, 0x10)?,
        0xffff_fff9u32,
        "mtty BAR0 sizing (8 bytes of I/O)"
    );
    let mut cfgspace = vec![0u8; 0xff];
    dev.read_region(7, 0, &mut cfgspace)
        .ctx("read all of mtty config")?;
    ensure_hex!(cfgspace[0x0b], 0x07u8, "mtty base class in a bulk read");

    // BAR0: the 16550 scratch register (offset 7), byte access.
    for v in [0x5au8, 0xa5, 0] {
        dev.w8(0, 7, v)?;
        ensure_hex!(dev.r8(0, 7)?, v, "mtty UART_SCR");
    }

    // SET_IRQS: INTx eventfd, loopback (mtty automasks), unmask, DATA_BOOL.
    let efd = EventFd::new().ctx("eventfd")?;
    dev.set_irq_eventfd(0, Some(efd.fd()))
        .ctx("install INTx eventfd")?;
    dev.trigger_irq(0, 0, 1).ctx("loopback DATA_NONE")?;
    expect_fire(&efd, "mtty INTx loopback")?;
    dev.trigger_irq(0, 0, 1).ctx("loopback DATA_NONE again")?;
    expect_quiet(&efd, "mtty INTx loopback while automasked")?;
    dev.unmask_irq(0).ctx("unmask INTx")?;
    dev.trigger_irq_bool(0, 0, &[true])
        .ctx("loopback DATA_BOOL")?;
    expect_fire(&efd, "mtty INTx loopback after unmask")?;
    expect_errno(
        dev.set_irqs_raw(
            None,
            vfio::VFIO_IRQ_SET_DATA_NONE | vfio::VFIO_IRQ_SET_ACTION_MASK,
            1,
            0,
            1,
            &[],
        ),
        libc::ENOTTY,
        "mtty MSI MASK",
    )?;
    expect_errno(
        dev.set_irqs_raw(
            Some(19),
            vfio::VFIO_IRQ_SET_DATA_NONE | vfio::VFIO_IRQ_SET_ACTION_TRIGGER,
            0,
            0,
            1,
            &[],
        ),
        libc::EINVAL,
        "mtty SET_IRQS argsz 19",
    )?;
    dev.disable_irq(0).ctx("disable INTx")?;
    // Now MSI (mtty takes one kind at a time).
    let m_efd = EventFd::new().ctx("eventfd")?;
    dev.set_irq_eventfd(1, Some(m_efd.fd()))
        .ctx("install MSI eventfd")?;
    dev.trigger_irq(1, 0, 1).ctx("MSI loopback")?;
    expect_fire(&m_efd, "mtty MSI loopback")?;
    dev.disable_irq(1).ctx("disable MSI")?;

    let mut buf = [0u64; 8];
    let arg = buf.as_mut_ptr() as libc::c_ulong;
    // SAFETY: buf is 64 writable bytes; an unknown ioctl does not touch them.
    let r = unsafe { vfio_mig::ioctl::raw(dev.as_fd(), 0x3ba0, arg) };
    expect_errno(r, libc::ENOTTY, "unknown ioctl")?;
    dev.reset().ctx("VFIO_DEVICE_RESET")?;
    ensure_hex!(
        dev.r32(7, 0)?,
        0x3253_4348u32,
        "mtty vendor/device after reset"
    );
    Ok(())
}

pub fn mtty_legacy(_env: &Env) -> TResult {
    let p = mtty_or_skip!();
    mtty_device(&p, OpenPath::Legacy)
}

pub fn mtty_iommufd(_env: &Env) -> TResult {
    let p = mtty_or_skip!();
    mtty_device(&p, OpenPath::Iommufd)
}

pub fn mtty_dma_map(_env: &Env) -> TResult {
    let p = mtty_or_skip!();
    let mem = Arc::new(GuestMemory::new("guest-ram", 2 << 20).ctx("guest memory")?);
    mem.write_at(0x1000, b"hello").ctx("write guest memory")?;
    let mut b = [0u8; 5];
    mem.read_at(0x1000, &mut b).ctx("read guest memory")?;
    ensure_eq!(&b, b"hello", "guest memory round trip");
    for path in [OpenPath::Legacy, OpenPath::Iommufd] {
        let m = p.mdev_type("1").create_guarded().ctx("create mtty-1")?;
        let dev = Device::open(m.uuid(), path).ctx(&format!("open ({path})"))?;
        dev.map_dma(0x10_0000, &mem)
            .ctx(&format!("map_dma ({path})"))?;
        ensure_eq!(
            Arc::strong_count(&mem),
            2,
            "guest memory held by the mapping"
        );
        let twice = dev.map_dma(0x10_0000, &mem);
        ensure!(
            twice.is_err(),
            "({path}) mapping the same IOVA twice succeeded"
        );
        dev.unmap_dma(0x10_0000)
            .ctx(&format!("unmap_dma ({path})"))?;
        ensure_eq!(Arc::strong_count(&mem), 1, "guest memory released by unmap");
        ensure!(
            dev.unmap_dma(0x10_0000).is_err(),
            "unmapping twice succeeded"
        );
        // Closing with a mapping in place is fine too.
        dev.map_dma(0x20_0000, &mem).ctx("map again")?;
        drop(dev);
        ensure_eq!(Arc::strong_count(&mem), 1, "guest memory released by close");
    }
    Ok(())
}
