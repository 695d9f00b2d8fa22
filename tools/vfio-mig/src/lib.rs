// SPDX-License-Identifier: GPL-2.0
//! `vfio_mig`: userspace side of the vfio-mig-sample mdev driver.
//!
//! * [`abi`]: the device's ABI in numbers (regions, registers, migration
//!   region, states, stream), the module's own `rust/logic/abi.rs`;
//! * [`sysfs`] for mdev parents and types, create and remove by UUID;
//! * [`Device`], a VFIO device opened by UUID through the legacy
//!   group/container path or the iommufd cdev path, with the device ioctls
//!   (also in raw forms that let a test pass bad arguments), region I/O and
//!   DMA mapping;
//! * [`EventFd`] for interrupts;
//! * [`GuestMemory`], memfd-backed memory to map for device DMA;
//! * [`migration`]: the migration region of the 2018 proposal (layout,
//!   states, actions) on [`Device`]; [`mig_mmap`]: its data and bitmap
//!   areas mapped, when the region offers them;
//! * [`transfer`]: the steps of moving device state ([`StateTransfer`]),
//!   the save and restore flows on them, and their migration-region
//!   implementation;
//! * [`sample`]: the sample device's registers (DMA engine, ring,
//!   background writer) and the module's pinned-page count;
//! * [`live`]: live migration between two devices with their own guest RAM,
//!   a running workload, verification and a report;
//! * [`stream`]: a look inside a saved device-state stream;
//! * [`ioctl`]: every ioctl, one typed function each (the only `unsafe`
//!   for ioctls); [`uapi`]: the structs `vfio-bindings` lacks;
//! * [`units`]: bytes and durations in text and JSON.
//!
//! Every error is an [`Error`] that says what failed in words and carries
//! the errno ([`Error::errno`]).

#[path = "../../../rust/logic/abi.rs"]
pub mod abi;
pub mod device;
pub mod error;
pub mod eventfd;
pub mod ioctl;
pub mod live;
pub mod mem;
pub mod mig_mmap;
pub mod migration;
pub mod sample;
pub mod stream;
pub mod sysfs;
pub mod transfer;
pub mod uapi;
pub mod units;
pub mod v2;

pub use device::{parse_cap_chain, Capability, Device, DeviceInfo, IrqInfo, OpenPath, RegionInfo};
pub use error::{errno_name, errno_string, Error, Result};
pub use eventfd::EventFd;
pub use mem::GuestMemory;
pub use mig_mmap::{AreaAccess, MigrationMapping};
pub use migration::{DeviceState, DirtyBitmap, Field, MigrationRegion, Pending};
pub use sysfs::{Mdev, MdevType, Parent, TypeAttrs};
pub use transfer::{
    MigrationRegionTransfer, RestoreReport, SaveOptions, SaveReport, StateTransfer,
};
