// SPDX-License-Identifier: GPL-2.0
//! uapi: ioctl numbers, and the structs that `vfio-bindings` lacks or has in
//! another layout than Linux 6.12.
//!
//! Structs of `linux/vfio.h` come from `vfio_bindings::bindings::vfio` and are
//! re-exported here as `vfio`. The iommufd structs (`linux/iommufd.h`) are not
//! in that crate, and its `vfio_device_bind_iommufd` has the newer 24-byte
//! layout with `token_uuid_ptr`; we define the 6.12 layouts ourselves, with
//! compile-time size checks.

use std::mem::size_of;

pub use vfio_bindings::bindings::vfio;

/// `_IO(type, nr)`: no direction, no size, as all VFIO/iommufd ioctls use.
const fn io(ty: u8, nr: u8) -> u64 {
    ((ty as u64) << 8) | nr as u64
}

/// `VFIO_TYPE` (`';'`), shared by VFIO and iommufd.
pub const VFIO_TYPE: u8 = b';';
/// `VFIO_BASE`.
pub const VFIO_BASE: u8 = 100;

/// Container: `VFIO_GET_API_VERSION`.
pub const VFIO_GET_API_VERSION: u64 = io(VFIO_TYPE, VFIO_BASE);
/// Container: `VFIO_CHECK_EXTENSION`.
pub const VFIO_CHECK_EXTENSION: u64 = io(VFIO_TYPE, VFIO_BASE + 1);
/// Container: `VFIO_SET_IOMMU`.
pub const VFIO_SET_IOMMU: u64 = io(VFIO_TYPE, VFIO_BASE + 2);
/// Group: `VFIO_GROUP_GET_STATUS`.
pub const VFIO_GROUP_GET_STATUS: u64 = io(VFIO_TYPE, VFIO_BASE + 3);
/// Group: `VFIO_GROUP_SET_CONTAINER`.
pub const VFIO_GROUP_SET_CONTAINER: u64 = io(VFIO_TYPE, VFIO_BASE + 4);
/// Group: `VFIO_GROUP_UNSET_CONTAINER`.
pub const VFIO_GROUP_UNSET_CONTAINER: u64 = io(VFIO_TYPE, VFIO_BASE + 5);
/// Group: `VFIO_GROUP_GET_DEVICE_FD`.
pub const VFIO_GROUP_GET_DEVICE_FD: u64 = io(VFIO_TYPE, VFIO_BASE + 6);
/// Device: `VFIO_DEVICE_GET_INFO`.
pub const VFIO_DEVICE_GET_INFO: u64 = io(VFIO_TYPE, VFIO_BASE + 7);
/// Device: `VFIO_DEVICE_GET_REGION_INFO`.
pub const VFIO_DEVICE_GET_REGION_INFO: u64 = io(VFIO_TYPE, VFIO_BASE + 8);
/// Device: `VFIO_DEVICE_GET_IRQ_INFO`.
pub const VFIO_DEVICE_GET_IRQ_INFO: u64 = io(VFIO_TYPE, VFIO_BASE + 9);
/// Device: `VFIO_DEVICE_SET_IRQS`.
pub const VFIO_DEVICE_SET_IRQS: u64 = io(VFIO_TYPE, VFIO_BASE + 10);
/// Device: `VFIO_DEVICE_RESET`.
pub const VFIO_DEVICE_RESET: u64 = io(VFIO_TYPE, VFIO_BASE + 11);
/// Container: `VFIO_IOMMU_MAP_DMA`.
pub const VFIO_IOMMU_MAP_DMA: u64 = io(VFIO_TYPE, VFIO_BASE + 13);
/// Container: `VFIO_IOMMU_UNMAP_DMA`.
pub const VFIO_IOMMU_UNMAP_DMA: u64 = io(VFIO_TYPE, VFIO_BASE + 14);
/// cdev: `VFIO_DEVICE_BIND_IOMMUFD`.
pub const VFIO_DEVICE_BIND_IOMMUFD: u64 = io(VFIO_TYPE, VFIO_BASE + 18);
/// cdev: `VFIO_DEVICE_ATTACH_IOMMUFD_PT`.
pub const VFIO_DEVICE_ATTACH_IOMMUFD_PT: u64 = io(VFIO_TYPE, VFIO_BASE + 19);
/// cdev: `VFIO_DEVICE_DETACH_IOMMUFD_PT`.
pub const VFIO_DEVICE_DETACH_IOMMUFD_PT: u64 = io(VFIO_TYPE, VFIO_BASE + 20);

/// iommufd: `IOMMU_DESTROY`.
pub const IOMMU_DESTROY: u64 = io(VFIO_TYPE, 0x80);
/// iommufd: `IOMMU_IOAS_ALLOC`.
pub const IOMMU_IOAS_ALLOC: u64 = io(VFIO_TYPE, 0x81);
/// iommufd: `IOMMU_IOAS_MAP`.
pub const IOMMU_IOAS_MAP: u64 = io(VFIO_TYPE, 0x85);
/// iommufd: `IOMMU_IOAS_UNMAP`.
pub const IOMMU_IOAS_UNMAP: u64 = io(VFIO_TYPE, 0x86);

/// `VFIO_API_VERSION`.
pub const VFIO_API_VERSION: i32 = 0;
/// `VFIO_TYPE1v2_IOMMU`.
pub const VFIO_TYPE1V2_IOMMU: u32 = vfio::VFIO_TYPE1v2_IOMMU;

/// `IOMMU_IOAS_MAP_FIXED_IOVA`.
pub const IOMMU_IOAS_MAP_FIXED_IOVA: u32 = 1 << 0;
/// `IOMMU_IOAS_MAP_WRITEABLE`.
pub const IOMMU_IOAS_MAP_WRITEABLE: u32 = 1 << 1;
/// `IOMMU_IOAS_MAP_READABLE`.
pub const IOMMU_IOAS_MAP_READABLE: u32 = 1 << 2;

/// `struct vfio_device_bind_iommufd` of Linux 6.12 (16 bytes).
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct VfioDeviceBindIommufd {
    pub argsz: u32,
    pub flags: u32,
    pub iommufd: i32,
    pub out_devid: u32,
}
const _: () = assert!(size_of::<VfioDeviceBindIommufd>() == 16);

/// `struct vfio_device_attach_iommufd_pt` (also used for detach's argsz/flags).
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct VfioDeviceAttachIommufdPt {
    pub argsz: u32,
    pub flags: u32,
    pub pt_id: u32,
}
const _: () = assert!(size_of::<VfioDeviceAttachIommufdPt>() == 12);

/// `struct iommu_destroy`.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct IommuDestroy {
    pub size: u32,
    pub id: u32,
}
const _: () = assert!(size_of::<IommuDestroy>() == 8);

/// `struct iommu_ioas_alloc`.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct IommuIoasAlloc {
    pub size: u32,
    pub flags: u32,
    pub out_ioas_id: u32,
}
const _: () = assert!(size_of::<IommuIoasAlloc>() == 12);

/// `struct iommu_ioas_map`.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct IommuIoasMap {
    pub size: u32,
    pub flags: u32,
    pub ioas_id: u32,
    pub reserved: u32,
    pub user_va: u64,
    pub length: u64,
    pub iova: u64,
}
const _: () = assert!(size_of::<IommuIoasMap>() == 40);

/// `struct iommu_ioas_unmap`.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct IommuIoasUnmap {
    pub size: u32,
    pub ioas_id: u32,
    pub iova: u64,
    pub length: u64,
}
const _: () = assert!(size_of::<IommuIoasUnmap>() == 24);

// The vfio-bindings structs we use, checked against the 6.12 layouts.
const _: () = assert!(size_of::<vfio::vfio_device_info>() == 24);
const _: () = assert!(size_of::<vfio::vfio_region_info>() == 32);
const _: () = assert!(size_of::<vfio::vfio_irq_info>() == 16);
const _: () = assert!(size_of::<vfio::vfio_irq_set>() == 20);
const _: () = assert!(size_of::<vfio::vfio_group_status>() == 8);
const _: () = assert!(size_of::<vfio::vfio_info_cap_header>() == 8);
const _: () = assert!(size_of::<vfio::vfio_iommu_type1_dma_map>() == 32);
const _: () = assert!(size_of::<vfio::vfio_iommu_type1_dma_unmap>() == 24);

// Spot checks of the numbers against linux/vfio.h and linux/iommufd.h.
const _: () = assert!(VFIO_DEVICE_GET_INFO == 0x3b6b);
const _: () = assert!(VFIO_DEVICE_BIND_IOMMUFD == 0x3b76);
const _: () = assert!(IOMMU_IOAS_ALLOC == 0x3b81);
