// SPDX-License-Identifier: GPL-2.0

//! The mdev driver: the types it offers and the pool of device memory they
//! draw from. `available_instances` of a type is what the pool still holds
//! for it; creating an mdev takes its share and removing it gives it back.
//! Documented for users in `Documentation/device.rst` ("sysfs").

use crate::device::SampleDevice;
use crate::mdev;
use core::sync::atomic::{AtomicU32, Ordering};
use kernel::c_str;
use kernel::prelude::*;

/// Device memory is handed out in units of this size.
const POOL_UNIT: usize = 256 * 1024;
/// Units in the pool shared by all mdevs of the parent (8 MiB).
const POOL_UNITS: u32 = 32;

/// The driver: the parent device and its types.
pub(crate) struct SampleDriver;

/// Device memory size of each type, indexed like [`SampleDriver::TYPES`].
const MEM_SIZES: [usize; 2] = [POOL_UNIT, 8 * POOL_UNIT];

impl mdev::Driver for SampleDriver {
    const NAME: &'static CStr = c_str!("vfio_mig_sample");
    const TYPES: &'static [mdev::TypeInfo] = &[
        mdev::TypeInfo {
            sysfs_name: c_str!("small"),
            pretty_name: c_str!("vfio-mig-sample small"),
            description: c_str!("migratable sample device, 256 KiB device memory"),
        },
        mdev::TypeInfo {
            sysfs_name: c_str!("large"),
            pretty_name: c_str!("vfio-mig-sample large"),
            description: c_str!("migratable sample device, 2 MiB device memory"),
        },
    ];
    type Device = SampleDevice;

    fn new_device(type_index: usize) -> impl PinInit<SampleDevice, Error> {
        let share = MEM_SIZES
            .get(type_index)
            .ok_or(EINVAL)
            .and_then(|&size| PoolShare::take(size));
        // Type IDs (PCI subsystem ID, stream type) number the types from 1.
        SampleDevice::new(share, type_index as u16 + 1)
    }

    fn available(type_index: usize) -> u32 {
        const { assert!(MEM_SIZES.len() == SampleDriver::TYPES.len()) };
        MEM_SIZES
            .get(type_index)
            .and_then(|&size| {
                POOL_FREE
                    .load(Ordering::Relaxed)
                    .checked_div(units_of(size))
            })
            .unwrap_or(0)
    }
}

/// Free units of the device-memory pool.
static POOL_FREE: AtomicU32 = AtomicU32::new(POOL_UNITS);

fn units_of(mem_size: usize) -> u32 {
    (mem_size / POOL_UNIT) as u32
}

/// Units taken from the pool for one device, returned on drop.
pub(crate) struct PoolShare(u32);

impl PoolShare {
    /// Takes the units of `mem_size` bytes from the pool, or fails with
    /// `ENOSPC`.
    fn take(mem_size: usize) -> Result<Self> {
        let units = units_of(mem_size);
        POOL_FREE
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |free| {
                free.checked_sub(units)
            })
            .map(|_| PoolShare(units))
            .map_err(|_| ENOSPC)
    }

    /// The device memory this share holds, in bytes.
    pub(crate) fn mem_size(&self) -> usize {
        self.0 as usize * POOL_UNIT
    }
}

impl Drop for PoolShare {
    fn drop(&mut self) {
        POOL_FREE.fetch_add(self.0, Ordering::AcqRel);
    }
}
