// SPDX-License-Identifier: GPL-2.0
//! Live migration of a running sample device between two mdevs, the way a
//! VMM does it (Documentation/tools.rst, "Live migration").
//!
//! Each side is a [`Vm`]: a [`Device`] opened in its own IOMMU context
//! (every [`Device::open`] makes a new container or iommufd) and its own
//! guest RAM, a [`GuestMemory`] mapped for DMA at the same IOVA on both
//! sides. On the source the guest "runs": the device's background writer
//! writes guest RAM by DMA, and a [`CpuWorkload`] thread stands in for the
//! vCPUs, writing guest RAM directly (logged in a [`DirtyLog`], as KVM's
//! dirty log would) and BAR2 through `pwrite` (which the device tracks
//! itself and sends in its stream).
//!
//! [`migrate`] then runs pre-copy iterations (guest RAM that the device
//! bitmap or the CPU log reports dirty, plus the device's stream), stops the
//! vCPUs and the device, copies the rest, completes both sides, verifies
//! the destination bit for bit against the source, and lets the destination
//! run.
//!
//! The parts: `pages` (page sets, the vCPUs' dirty log, the dirty-query
//! walk), `vcpu` (the vCPU workload), `fixture` (the device workload the
//! source gets and the destination is checked for), `precopy` (the
//! migration loop, on [`crate::transfer::StateTransfer`]), `verify` (the
//! checks after it) and `report` (what it did).

use std::sync::Arc;

use crate::abi::GUEST_PAGE_SIZE;
use crate::device::Device;
use crate::error::{Error, Result};
use crate::mem::GuestMemory;
use crate::sample::Regs;

mod fixture;
mod pages;
mod precopy;
mod report;
mod vcpu;
mod verify;

pub use fixture::{DeviceWorkload, FILL_PATTERN};
pub use pages::{collect_dirty, DirtyLog, DirtyScan, PageSet};
pub use precopy::{copy_pages, migrate, migrate_with, LiveOptions};
pub use report::{
    Convergence, Iteration, IterationHeader, IterationRow, LiveReport, Phase, Verification,
    WriterCheck,
};
pub use vcpu::{CpuOptions, CpuStats, CpuWorkload, PagePattern, CPU_MAGIC};

/// A guest page, as a length in memory.
const PAGE: usize = GUEST_PAGE_SIZE as usize;

/// One side of the migration: a device and its guest RAM, mapped for the
/// device's DMA at `iova`.
#[derive(Debug, Clone)]
pub struct Vm {
    pub dev: Arc<Device>,
    pub ram: Arc<GuestMemory>,
    /// IOVA of the first byte of `ram` in the device's IOMMU context.
    pub iova: u64,
}

impl Vm {
    /// Creates `ram_bytes` (a page multiple) of guest RAM and maps it for
    /// `dev`'s DMA at `iova`.
    pub fn new(dev: Arc<Device>, name: &str, ram_bytes: usize, iova: u64) -> Result<Vm> {
        if ram_bytes == 0
            || !ram_bytes.is_multiple_of(PAGE)
            || !iova.is_multiple_of(GUEST_PAGE_SIZE)
        {
            return Err(Error::Invalid(format!(
                "guest RAM of {ram_bytes} bytes at IOVA {iova:#x}: size and IOVA must be \
                 non-zero page multiples"
            )));
        }
        let ram = Arc::new(GuestMemory::new(name, ram_bytes)?);
        // A running guest's RAM is there; allocating it is no part of a
        // migration's cost.
        ram.populate()?;
        dev.map_dma(iova, &ram)?;
        Ok(Vm { dev, ram, iova })
    }

    /// Guest RAM in pages.
    pub fn pages(&self) -> u64 {
        self.ram.len() as u64 / GUEST_PAGE_SIZE
    }

    /// The IOVA of guest page `page`.
    pub fn page_iova(&self, page: u64) -> Result<u64> {
        page.checked_mul(GUEST_PAGE_SIZE)
            .and_then(|off| self.iova.checked_add(off))
            .filter(|_| page < self.pages())
            .ok_or_else(|| {
                Error::Invalid(format!(
                    "page {page} is outside the {} pages of guest RAM",
                    self.pages()
                ))
            })
    }

    /// The sample registers of the device.
    pub fn regs(&self) -> Regs<'_> {
        Regs(&self.dev)
    }
}
