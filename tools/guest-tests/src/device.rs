// SPDX-License-Identifier: GPL-2.0
//! What Documentation/device.rst promises, in one place. Tests compare
//! against these constants, never against literals of their own.
//!
//! Written by hand on purpose, not taken from `rust/logic/abi.rs` (which
//! the module and the library share): this copy is the suite's independent
//! oracle, see the crate documentation.

use vfio_mig::uapi::vfio;

/// The mdev parent (and module) name.
pub const PARENT: &str = "vfio_mig_sample";

/// Device-memory pool per parent, in 256 KiB units (8 MiB).
pub const POOL_UNITS: u32 = 32;

/// One mdev type.
#[derive(Debug)]
pub struct TypeSpec {
    /// Suffix after `vfio_mig_sample-`.
    pub suffix: &'static str,
    /// The `name` attribute.
    pub name: &'static str,
    /// Device memory (BAR2, `MEM_SIZE`) in bytes.
    pub mem_size: u64,
    /// Pool units one mdev of this type takes.
    pub units: u32,
    /// Config-space subsystem id.
    pub subsys_id: u16,
    /// Ways the description may spell the memory size; one must appear.
    pub size_words: &'static [&'static str],
    /// BAR2 (low dword) after writing all ones: size mask | 64-bit prefetchable.
    pub bar2_sizing: u32,
    /// The mdev type id in the migration stream's header.
    pub stream_type_id: u32,
}

impl TypeSpec {
    /// The type's directory name, e.g. `vfio_mig_sample-small`.
    pub fn full_name(&self) -> String {
        format!("{PARENT}-{}", self.suffix)
    }

    /// How many fit into an empty pool.
    pub fn max_instances(&self) -> u32 {
        POOL_UNITS / self.units
    }
}

/// `vfio_mig_sample-small`: 256 KiB.
pub const SMALL: TypeSpec = TypeSpec {
    suffix: "small",
    name: "vfio-mig-sample small",
    mem_size: 256 << 10,
    units: 1,
    subsys_id: 1,
    size_words: &["256 KiB", "256KiB", "256 KB", "256KB", "256K", "262144"],
    bar2_sizing: 0xfffc_000c,
    stream_type_id: 1,
};

/// `vfio_mig_sample-large`: 2 MiB.
pub const LARGE: TypeSpec = TypeSpec {
    suffix: "large",
    name: "vfio-mig-sample large",
    mem_size: 2 << 20,
    units: 8,
    subsys_id: 2,
    size_words: &["2 MiB", "2MiB", "2 MB", "2MB", "2M", "2048 KiB", "2097152"],
    bar2_sizing: 0xffe0_000c,
    stream_type_id: 2,
};

/// Both types, in sorted order of their names.
pub const TYPES: [&TypeSpec; 2] = [&LARGE, &SMALL];

/// `device_api` of both types.
pub const DEVICE_API: &str = "vfio-pci";

/// `VFIO_DEVICE_GET_INFO`.
pub const DEVICE_FLAGS: u32 = vfio::VFIO_DEVICE_FLAGS_PCI | vfio::VFIO_DEVICE_FLAGS_RESET;
/// `num_regions`.
pub const NUM_REGIONS: u32 = 10;
/// `num_irqs`.
pub const NUM_IRQS: u32 = 5;
/// `offsetofend(struct vfio_device_info, num_irqs)`.
pub const DEVICE_INFO_MINSZ: u32 = 16;
/// `sizeof(struct vfio_region_info)`.
pub const REGION_INFO_MINSZ: u32 = 32;
/// `sizeof(struct vfio_irq_info)`.
pub const IRQ_INFO_MINSZ: u32 = 16;
/// `offsetofend(struct vfio_irq_set, count)`.
pub const IRQ_SET_MINSZ: u32 = 20;

/// File offset of region `index` in the device fd: `index << 40`.
pub const fn region_offset(index: u32) -> u64 {
    (index as u64) << 40
}

/// Region indexes.
pub mod region {
    pub const BAR0: u32 = 0;
    pub const BAR1: u32 = 1;
    pub const BAR2: u32 = 2;
    pub const CONFIG: u32 = 7;
    pub const VGA: u32 = 8;
    pub const MIGRATION: u32 = 9;
}

/// Region flags READ | WRITE.
pub const RW: u32 = vfio::VFIO_REGION_INFO_FLAG_READ | vfio::VFIO_REGION_INFO_FLAG_WRITE;
/// Size of BAR0.
pub const BAR0_SIZE: u64 = 4096;
/// Size of config space.
pub const CONFIG_SIZE: u64 = 256;

/// `(size, flags)` of regions 0..=8 for a type; region 9 is checked apart.
pub fn region_expect(index: u32, ty: &TypeSpec) -> (u64, u32) {
    match index {
        region::BAR0 => (BAR0_SIZE, RW),
        region::BAR2 => (ty.mem_size, RW),
        region::CONFIG => (CONFIG_SIZE, RW),
        _ => (0, 0),
    }
}

/// Flags of the migration region when it is present (its data and bitmap
/// areas are mmap-able).
pub const MIGRATION_FLAGS: u32 =
    RW | vfio::VFIO_REGION_INFO_FLAG_CAPS | vfio::VFIO_REGION_INFO_FLAG_MMAP;
/// Its `VFIO_REGION_INFO_CAP_TYPE` type and subtype (the 2018 proposal's).
pub const MIGRATION_TYPE: (u32, u32) = (1 << 30, 1);

/// IRQ indexes.
pub mod irq {
    pub const INTX: u32 = 0;
    pub const MSI: u32 = 1;
    pub const MSIX: u32 = 2;
}

/// `(count, flags)` of IRQ indexes 0..5.
pub const IRQS: [(u32, u32); 5] = [
    (
        1,
        vfio::VFIO_IRQ_INFO_EVENTFD | vfio::VFIO_IRQ_INFO_MASKABLE | vfio::VFIO_IRQ_INFO_AUTOMASKED,
    ),
    (
        1,
        vfio::VFIO_IRQ_INFO_EVENTFD | vfio::VFIO_IRQ_INFO_NORESIZE,
    ),
    (0, 0),
    (0, 0),
    (0, 0),
];

/// PCI configuration space.
pub mod cfg {
    pub const VENDOR_ID: u64 = 0x00;
    pub const DEVICE_ID: u64 = 0x02;
    pub const COMMAND: u64 = 0x04;
    pub const STATUS: u64 = 0x06;
    pub const REVISION: u64 = 0x08;
    pub const HEADER_TYPE: u64 = 0x0e;
    pub const BAR0: u64 = 0x10;
    pub const BAR1: u64 = 0x14;
    pub const BAR2: u64 = 0x18;
    pub const BAR3: u64 = 0x1c;
    pub const BAR4: u64 = 0x20;
    pub const BAR5: u64 = 0x24;
    pub const SUBSYS_VENDOR: u64 = 0x2c;
    pub const SUBSYS_ID: u64 = 0x2e;
    pub const ROM: u64 = 0x30;
    pub const CAP_PTR: u64 = 0x34;
    pub const INT_LINE: u64 = 0x3c;
    pub const INT_PIN: u64 = 0x3d;
    /// MSI capability (64-bit, one vector, no per-vector masking).
    pub const MSI: u64 = 0x40;
    pub const MSI_FLAGS: u64 = MSI + 2;
    pub const MSI_ADDR_LO: u64 = MSI + 4;
    pub const MSI_ADDR_HI: u64 = MSI + 8;
    pub const MSI_DATA: u64 = MSI + 12;
    /// End of the MSI capability; everything from here on reads 0.
    pub const MSI_END: u64 = MSI + 14;

    pub const VENDOR: u16 = 0x1234;
    pub const DEVICE: u16 = 0x4d53;
    pub const REVISION_VALUE: u8 = 1;
    /// Dword at 0x08: class ff/00/00, revision 1.
    pub const CLASS_REV: u32 = 0xff00_0001;
    pub const HEADER_TYPE_VALUE: u8 = 0;
    pub const STATUS_CAP_LIST: u16 = 0x0010;
    /// IO | MEM | MASTER | INTX_DISABLE.
    pub const COMMAND_WRITABLE: u16 = 0x0407;
    pub const COMMAND_INTX_DISABLE: u16 = 0x0400;
    pub const CAP_PTR_VALUE: u8 = 0x40;
    pub const PIN_INTA: u8 = 1;
    pub const CAP_ID_MSI: u8 = 5;
    pub const MSI_FLAGS_ENABLE: u16 = 0x0001;
    pub const MSI_FLAGS_QMASK: u16 = 0x000e;
    pub const MSI_FLAGS_64BIT: u16 = 0x0080;
    /// BAR0 after writing all ones: 4 KiB, 32-bit memory.
    pub const BAR0_SIZING: u32 = 0xffff_f000;
    /// BAR3 (upper half of 64-bit BAR2) after writing all ones.
    pub const BAR3_SIZING: u32 = 0xffff_ffff;
    /// BAR2's read-only type bits: 64-bit, prefetchable memory.
    pub const BAR2_TYPE: u32 = 0xc;
}

/// BAR0 registers.
pub mod bar0 {
    pub const ID: u64 = 0x00;
    pub const VERSION: u64 = 0x04;
    pub const SCRATCH: u64 = 0x08;
    pub const STATUS: u64 = 0x0c;
    pub const IRQ_STATUS: u64 = 0x10;
    pub const IRQ_ENABLE: u64 = 0x14;
    pub const DOORBELL: u64 = 0x18;
    pub const MEM_SIZE: u64 = 0x1c;
    pub const IRQ_COUNT: u64 = 0x20;
    /// First offset past the listed registers.
    pub const END: u64 = 0x24;

    pub const ID_VALUE: u32 = 0x564d_5331;
    pub const VERSION_VALUE: u32 = 0x0001_0000;
    pub const STATUS_QUIESCED: u32 = 1;
    pub const IRQ_DOORBELL: u32 = 1;
}

/// The migration region (Documentation/migration-abi.rst) and the stream
/// (Documentation/migration-stream.rst), with default module parameters.
pub mod mig {
    use vfio_mig::DeviceState;

    /// Region size: 4 KiB of registers, the data area, the bitmap area.
    pub const SIZE: u64 = 0x14_1000;
    /// Size of the packed `struct vfio_device_migration_info`.
    pub const INFO_SIZE: u64 = 76;
    /// The data area.
    pub const DATA_OFF: u64 = 0x1000;
    pub const DATA_LEN: u64 = 0x10_0000;
    /// The dirty bitmap area.
    pub const BITMAP_OFF: u64 = 0x10_1000;
    pub const BITMAP_LEN: u64 = 0x4_0000;
    /// Most pages one dirty query covers (`BITMAP_LEN * 8`).
    pub const BITMAP_PAGES: u64 = 0x20_0000;
    /// GET_REGION_INFO: argsz the chain needs (struct, CAP_TYPE, then
    /// SPARSE_MMAP with two areas) and where the first capability sits.
    pub const CAP_ARGSZ: u32 = 32 + 16 + 48;
    pub const CAP_OFFSET: u32 = 32;
    /// `VFIO_REGION_INFO_CAP_TYPE` id and version.
    pub const CAP_TYPE_ID: u16 = 2;
    pub const CAP_TYPE_VERSION: u16 = 1;
    /// `VFIO_REGION_INFO_CAP_SPARSE_MMAP` id and version, and where it
    /// sits (after CAP_TYPE).
    pub const SPARSE_CAP_ID: u16 = 1;
    pub const SPARSE_CAP_VERSION: u16 = 1;
    pub const SPARSE_CAP_OFFSET: u32 = CAP_OFFSET + 16;
    /// The mmap-able areas, as the sparse-mmap capability lists them:
    /// exactly the data area and the bitmap area.
    pub const MMAP_AREAS: [(u64, u64); 2] = [(DATA_OFF, DATA_LEN), (BITMAP_OFF, BITMAP_LEN)];

    /// Stream layout: header, page record, register record (`8 + R`), end
    /// record.
    pub const HEADER_LEN: usize = 32;
    pub const PAGE_RECORD_LEN: usize = 4112;
    /// `R`: the register-state blob (BAR0 registers and config space).
    pub const REGS_BLOB_LEN: usize = 384;
    pub const REGS_RECORD_LEN: usize = 8 + REGS_BLOB_LEN;
    pub const END_RECORD_LEN: usize = 32;
    pub const PAGE_SIZE: u64 = 4096;

    /// Pending counts right after MIGRATION_SETUP for `mem_size` bytes of
    /// device memory: the header, every page, registers and end record.
    pub const fn pending_at_setup(mem_size: u64) -> (u64, u64, u64) {
        (
            HEADER_LEN as u64,
            mem_size / PAGE_SIZE * PAGE_RECORD_LEN as u64,
            (REGS_RECORD_LEN + END_RECORD_LEN) as u64,
        )
    }

    /// The shortest stream: every page once.
    pub const fn full_stream_len(mem_size: u64) -> u64 {
        let (a, b, c) = pending_at_setup(mem_size);
        a + b + c
    }

    /// The transition table of the SPEC: may `from` go to `to`? (Writing
    /// the current state again is also accepted; that is not listed here.)
    pub fn allowed(from: DeviceState, to: DeviceState) -> bool {
        use DeviceState::*;
        let next: &[DeviceState] = match from {
            None => &[Running, Resume],
            Running => &[Setup, Resume],
            Setup => &[PreCopy, StopNCopy, Failed, Cancelled],
            PreCopy => &[StopNCopy, Failed, Cancelled],
            StopNCopy => &[SaveCompleted, Failed, Cancelled],
            SaveCompleted => &[Running, Failed, Cancelled],
            Resume => &[ResumeCompleted, Failed, Cancelled],
            ResumeCompleted => &[Running, Failed],
            Failed | Cancelled => &[Running, None, Setup, Resume],
        };
        next.contains(&to)
    }

    /// States in which the device is quiesced: BAR writes fail with EBUSY
    /// and STATUS.QUIESCED is set.
    pub const QUIESCED: [DeviceState; 4] = [
        DeviceState::StopNCopy,
        DeviceState::SaveCompleted,
        DeviceState::Resume,
        DeviceState::ResumeCompleted,
    ];

    /// States in which get pending reports something (elsewhere 0) and
    /// the dirty query works.
    pub const SAVING: [DeviceState; 3] = [
        DeviceState::Setup,
        DeviceState::PreCopy,
        DeviceState::StopNCopy,
    ];

    /// States in which get buffer works.
    pub const GET_BUFFER: [DeviceState; 2] = [DeviceState::PreCopy, DeviceState::StopNCopy];
}

/// The DMA engine, the ring and the background writer (Documentation/
/// device.rst, "DMA engine"): BAR0 registers, commands and limits.
pub mod dma {
    use vfio_mig::OpenPath;

    pub const DEV_OFF: u64 = 0x40;
    pub const IOVA_LO: u64 = 0x44;
    pub const IOVA_HI: u64 = 0x48;
    pub const LEN: u64 = 0x4c;
    pub const PATTERN: u64 = 0x50;
    pub const CMD: u64 = 0x54;
    pub const STATUS: u64 = 0x58;
    pub const ERROR: u64 = 0x5c;
    pub const CTRL: u64 = 0x60;
    pub const COMPLETED: u64 = 0x64;
    pub const RING_IOVA_LO: u64 = 0x70;
    pub const RING_IOVA_HI: u64 = 0x74;
    pub const RING_PAGES: u64 = 0x78;
    pub const RING_CTRL: u64 = 0x7c;
    pub const RING_ERROR: u64 = 0x80;
    pub const PINNED_PAGES: u64 = 0x84;
    pub const BG_IOVA_LO: u64 = 0x90;
    pub const BG_IOVA_HI: u64 = 0x94;
    pub const BG_PAGES: u64 = 0x98;
    pub const BG_RATE: u64 = 0x9c;
    pub const BG_CTRL: u64 = 0xa0;
    pub const BG_WRITES: u64 = 0xa4;
    pub const BG_ERROR: u64 = 0xa8;
    pub const BG_CURSOR: u64 = 0xac;

    /// Every DMA register, with its name, in address order.
    pub const REGS: [(u64, &str); 24] = [
        (DEV_OFF, "DMA_DEV_OFF"),
        (IOVA_LO, "DMA_IOVA_LO"),
        (IOVA_HI, "DMA_IOVA_HI"),
        (LEN, "DMA_LEN"),
        (PATTERN, "DMA_PATTERN"),
        (CMD, "DMA_CMD"),
        (STATUS, "DMA_STATUS"),
        (ERROR, "DMA_ERROR"),
        (CTRL, "DMA_CTRL"),
        (COMPLETED, "DMA_COMPLETED"),
        (RING_IOVA_LO, "RING_IOVA_LO"),
        (RING_IOVA_HI, "RING_IOVA_HI"),
        (RING_PAGES, "RING_PAGES"),
        (RING_CTRL, "RING_CTRL"),
        (RING_ERROR, "RING_ERROR"),
        (PINNED_PAGES, "PINNED_PAGES"),
        (BG_IOVA_LO, "BG_IOVA_LO"),
        (BG_IOVA_HI, "BG_IOVA_HI"),
        (BG_PAGES, "BG_PAGES"),
        (BG_RATE, "BG_RATE"),
        (BG_CTRL, "BG_CTRL"),
        (BG_WRITES, "BG_WRITES"),
        (BG_ERROR, "BG_ERROR"),
        (BG_CURSOR, "BG_CURSOR"),
    ];

    /// `DMA_CMD` values.
    pub const CMD_TO_GUEST: u32 = 1;
    pub const CMD_FROM_GUEST: u32 = 2;
    pub const CMD_FILL: u32 = 3;
    /// `DMA_STATUS` values.
    pub const IDLE: u32 = 0;
    pub const QUEUED: u32 = 1;
    pub const DONE: u32 = 2;
    pub const FAILED: u32 = 3;
    /// `DMA_CTRL.PAUSE`.
    pub const CTRL_PAUSE: u32 = 1;
    /// Longest command.
    pub const MAX_LEN: u32 = 64 << 20;
    /// `IRQ_STATUS` / `IRQ_ENABLE` causes of the engine.
    pub const IRQ_DMA_DONE: u32 = 1 << 1;
    pub const IRQ_DMA_ERROR: u32 = 1 << 2;
    /// `RING_CTRL` bits and the ring's size limit.
    pub const RING_PINNED: u32 = 1;
    pub const RING_WRITABLE: u32 = 2;
    pub const RING_MAX_PAGES: u32 = 512;
    /// `BG_CTRL.ENABLE` and the writer's limits.
    pub const BG_ENABLE: u32 = 1;
    pub const BG_MAX_PAGES: u32 = 1 << 20;
    pub const BG_MAX_RATE: u32 = 1_000_000;
    /// The writer's stamp: u64 count, u32 page index, u32 "BGWR".
    pub const BG_STAMP_LEN: usize = 16;
    pub const BG_MAGIC: u32 = 0x5257_4742;

    /// The module-wide count of pinned guest pages.
    pub const PINNED_DEBUGFS: &str = "/sys/kernel/debug/vfio_mig_sample/pinned_pages";

    /// errno of a DMA to an IOVA that is not mapped: the IOMMU backend's.
    pub fn unmapped_errno(path: OpenPath) -> i32 {
        match path {
            OpenPath::Iommufd => libc::ENOENT,
            _ => libc::EINVAL,
        }
    }
}
