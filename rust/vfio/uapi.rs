// SPDX-License-Identifier: GPL-2.0

//! The VFIO uapi the device model needs: ioctl numbers, structures and
//! flags (`srctree/include/uapi/linux/vfio.h`), and the checks the VFIO core
//! offers drivers for them.

use crate::sys;
use kernel::ioctl::_IO;
use kernel::types::{AsBytes, FromBytes};

pub(crate) use sys::{
    vfio_irq_info, vfio_irq_set, vfio_region_info, VFIO_DEVICE_FLAGS_PCI, VFIO_DEVICE_FLAGS_RESET,
    VFIO_IRQ_INFO_AUTOMASKED, VFIO_IRQ_INFO_EVENTFD, VFIO_IRQ_INFO_MASKABLE,
    VFIO_IRQ_INFO_NORESIZE, VFIO_IRQ_SET_ACTION_MASK, VFIO_IRQ_SET_ACTION_TRIGGER,
    VFIO_IRQ_SET_ACTION_TYPE_MASK, VFIO_IRQ_SET_ACTION_UNMASK, VFIO_IRQ_SET_DATA_BOOL,
    VFIO_IRQ_SET_DATA_EVENTFD, VFIO_IRQ_SET_DATA_NONE, VFIO_IRQ_SET_DATA_TYPE_MASK,
    VFIO_REGION_INFO_CAP_SPARSE_MMAP, VFIO_REGION_INFO_CAP_TYPE, VFIO_REGION_INFO_FLAG_CAPS,
    VFIO_REGION_INFO_FLAG_MMAP, VFIO_REGION_INFO_FLAG_READ, VFIO_REGION_INFO_FLAG_WRITE,
};

const fn vfio_io(nr: u32) -> u32 {
    _IO(sys::VFIO_TYPE as u32, sys::VFIO_BASE + nr)
}

/// `VFIO_DEVICE_GET_INFO`.
pub(crate) const DEVICE_GET_INFO: u32 = vfio_io(7);
/// `VFIO_DEVICE_GET_REGION_INFO`.
pub(crate) const DEVICE_GET_REGION_INFO: u32 = vfio_io(8);
/// `VFIO_DEVICE_GET_IRQ_INFO`.
pub(crate) const DEVICE_GET_IRQ_INFO: u32 = vfio_io(9);
/// `VFIO_DEVICE_SET_IRQS`.
pub(crate) const DEVICE_SET_IRQS: u32 = vfio_io(10);
/// `VFIO_DEVICE_RESET`.
pub(crate) const DEVICE_RESET: u32 = vfio_io(11);

/// `VFIO_MIG_GET_PRECOPY_INFO`, an ioctl of the data file (bindgen does
/// not expand it).
pub(crate) const MIG_GET_PRECOPY_INFO: u32 = vfio_io(21);

/// The v2 migration flags this driver may advertise.
pub(crate) use sys::{VFIO_MIGRATION_P2P, VFIO_MIGRATION_PRE_COPY, VFIO_MIGRATION_STOP_COPY};

/// `VFIO_PCI_INTX_IRQ_INDEX`.
pub(crate) const INTX_IRQ_INDEX: u32 = sys::VFIO_PCI_INTX_IRQ_INDEX;
/// `VFIO_PCI_MSI_IRQ_INDEX`.
pub(crate) const MSI_IRQ_INDEX: u32 = sys::VFIO_PCI_MSI_IRQ_INDEX;
/// `VFIO_PCI_NUM_IRQS`.
pub(crate) const NUM_IRQS: u32 = sys::VFIO_PCI_NUM_IRQS;

// SAFETY: Four `u32`s and two `u64`s at their natural alignment (32 bytes,
// no padding) and no interior mutability: every bit pattern is a valid value.
unsafe impl FromBytes for vfio_region_info {}
// SAFETY: The same layout has no padding, so every byte of a value is
// initialised.
unsafe impl AsBytes for vfio_region_info {}
// SAFETY: Four `u32`s (16 bytes, no padding), no interior mutability: every
// bit pattern is a valid value.
unsafe impl FromBytes for vfio_irq_info {}
// SAFETY: The same layout has no padding, so every byte of a value is
// initialised.
unsafe impl AsBytes for vfio_irq_info {}
// SAFETY: Five `u32`s and an empty flexible array, no padding.
unsafe impl FromBytes for vfio_irq_set {}

/// Checks a `VFIO_DEVICE_SET_IRQS` header the way vfio-pci does, for an
/// index with `num_irqs` interrupts; returns the size of the data that
/// follows it.
pub(crate) fn validate_irq_set(
    hdr: &mut vfio_irq_set,
    num_irqs: u32,
) -> kernel::error::Result<usize> {
    let mut data_size = 0usize;
    // SAFETY: `hdr` and `data_size` are valid for the call.
    kernel::error::to_result(unsafe {
        sys::vfio_set_irqs_validate_and_prepare(
            hdr,
            num_irqs as i32,
            NUM_IRQS as i32,
            &mut data_size,
        )
    })?;
    Ok(data_size)
}
