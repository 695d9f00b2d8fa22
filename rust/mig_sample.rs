// SPDX-License-Identifier: GPL-2.0

//! vfio_mig_sample: a migratable sample VFIO mdev device.
//!
//! The mdev parent `vfio_mig_sample` offers two types of an emulated PCI
//! function (see `Documentation/device.rst`); the migration region of the
//! 2018 VFIO migration proposal comes on top of it.
//!
//! Module layout (`Documentation/architecture.rst` has the whole map):
//! `sys` holds the raw bindings; `eventfd`, `mdev`, `vfio`, `vma`,
//! `vmalloc_user`, `pinned` and `dyndbg` are the safe wrappers around
//! them; `driver` is the mdev driver
//! (types, memory pool) and `device` the device model, built on the pure
//! logic in `logic`, which has no `unsafe` and is unit-tested on the host.

use kernel::prelude::*;

mod anon_file;
mod device;
mod driver;
mod dyndbg;
mod eventfd;
mod logic;
mod mdev;
mod pinned;
mod sys;
mod vfio;
mod vma;
mod vmalloc_user;

module! {
    type: VfioMigSample,
    name: "vfio_mig_sample",
    author: "vfio-mig-sample developers",
    description: "Migratable sample VFIO mdev device (2018 migration region)",
    license: "GPL",
}

// What `MODULE_IMPORT_NS(IOMMUFD)` emits, which the 6.12 `module!` macro
// cannot: DMA-logging reports write through `iova_bitmap_set`, exported in
// that symbol namespace.
#[link_section = ".modinfo"]
#[used]
static IMPORT_NS_IOMMUFD: [u8; 18] = *b"import_ns=IOMMUFD\0";

struct VfioMigSample {
    // Dropped in this order: the devices go before the pin count's file.
    _parent: Pin<KBox<mdev::Registration<driver::SampleDriver>>>,
    _debugfs: pinned::Debugfs,
}

impl kernel::Module for VfioMigSample {
    fn init(module: &'static ThisModule) -> Result<Self> {
        let debugfs = pinned::Debugfs::new();
        let parent = mdev::Registration::new(module)?;
        pr_info!("loaded\n");
        Ok(Self {
            _parent: parent,
            _debugfs: debugfs,
        })
    }
}
