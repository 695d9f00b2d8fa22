// SPDX-License-Identifier: GPL-2.0
//! uapi: the structs that `vfio-bindings` lacks or has in another layout
//! than Linux 6.12 (the ioctl numbers are in [`crate::ioctl`]).
//!
//! Structs of `linux/vfio.h` come from `vfio_bindings::bindings::vfio` and are
//! re-exported here as `vfio`. The iommufd structs (`linux/iommufd.h`) are not
//! in that crate, and its `vfio_device_bind_iommufd` has the newer 24-byte
//! layout with `token_uuid_ptr`; we define the 6.12 layouts ourselves, with
//! compile-time size checks.

use std::mem::size_of;

pub use vfio_bindings::bindings::vfio;

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
