// SPDX-License-Identifier: GPL-2.0

//! The device's userspace ABI in numbers: regions, BAR0 registers (with the
//! DMA engine's), configuration-space identity, the migration region's
//! layout, fields and states, and the device-state stream's framing.
//!
//! This file is the one Rust source of these numbers. The module builds it
//! as `logic::abi`; `tools/` include it by path (`tools/vfio-mig` exports it
//! as `vfio_mig::abi`, `tools/model` tests the logic built on it), and
//! `tools/model/src/tests/header.rs` checks every `#define`, state and
//! struct offset of `include/vfio_migration.h` against it. Only
//! `tools/guest-tests` keeps its own copy, on purpose: it is the
//! independent oracle that checks the module's behaviour against
//! `Documentation/`.
//!
//! Items are `pub` (the tools re-export them) and depend on `core` only.
//! Behaviour built on them stays in the other files of `logic/`.

/// VFIO regions: indices and where they sit in the device fd.
pub mod region {
    /// Shift of the region index in a device-fd offset: region `N` starts
    /// at file offset `N << 40`, as in vfio-pci and mtty.
    pub const SHIFT: u32 = 40;
    /// Number of regions: the nine of vfio-pci and the migration region.
    pub const COUNT: u32 = 10;
    /// BAR0: the registers ([`super::bar0`]).
    pub const BAR0: u32 = 0;
    /// BAR2: device memory (its size is the mdev type's).
    pub const BAR2: u32 = 2;
    /// PCI configuration space ([`super::config`]).
    pub const CONFIG: u32 = 7;
    /// The migration region of the 2018 proposal ([`super::migration`]).
    pub const MIGRATION: u32 = 9;

    /// File offset of region `index` in the device fd.
    pub const fn offset(index: u32) -> u64 {
        (index as u64) << SHIFT
    }
}

/// BAR0: the register file, 32-bit little-endian registers.
///
/// `0x00..0x24` are the function's own registers, `0x40..0xb0` the DMA
/// engine's: one command at a time, a pinned ring and a background writer
/// (`Documentation/device.rst`, "DMA engine").
pub mod bar0 {
    /// Size of BAR0 in bytes.
    pub const SIZE: u64 = 4096;

    /// Identification, read-only: [`ID_VALUE`].
    pub const ID: u32 = 0x00;
    /// Interface version, read-only: [`VERSION_VALUE`].
    pub const VERSION: u32 = 0x04;
    /// Free for the driver.
    pub const SCRATCH: u32 = 0x08;
    /// Device status, read-only ([`STATUS_QUIESCED`]).
    pub const STATUS: u32 = 0x0c;
    /// Pending interrupt causes (`IRQ_*`), write 1 to clear.
    pub const IRQ_STATUS: u32 = 0x10;
    /// Interrupt causes that raise an interrupt.
    pub const IRQ_ENABLE: u32 = 0x14;
    /// Write: ring. Read: times rung since reset.
    pub const DOORBELL: u32 = 0x18;
    /// Device memory size in bytes, read-only.
    pub const MEM_SIZE: u32 = 0x1c;
    /// Interrupts delivered since reset, read-only.
    pub const IRQ_COUNT: u32 = 0x20;

    /// DMA command: offset in device memory.
    pub const DMA_DEV_OFF: u32 = 0x40;
    /// DMA command: guest IOVA, low half.
    pub const DMA_IOVA_LO: u32 = 0x44;
    /// DMA command: guest IOVA, high half.
    pub const DMA_IOVA_HI: u32 = 0x48;
    /// DMA command: length in bytes (at most [`DMA_MAX_LEN`]).
    pub const DMA_LEN: u32 = 0x4c;
    /// DMA command: the 32-bit pattern of [`DMA_CMD_FILL`].
    pub const DMA_PATTERN: u32 = 0x50;
    /// Write: queues a command (`DMA_CMD_*`).
    pub const DMA_CMD: u32 = 0x54;
    /// `DMA_STATUS_*` of the last command, read-only.
    pub const DMA_STATUS: u32 = 0x58;
    /// errno of the last failed command (positive), read-only.
    pub const DMA_ERROR: u32 = 0x5c;
    /// Engine control ([`DMA_CTRL_PAUSE`]).
    pub const DMA_CTRL: u32 = 0x60;
    /// Commands finished since reset, read-only.
    pub const DMA_COMPLETED: u32 = 0x64;
    /// Ring: guest IOVA, low half (page aligned).
    pub const RING_IOVA_LO: u32 = 0x70;
    /// Ring: guest IOVA, high half.
    pub const RING_IOVA_HI: u32 = 0x74;
    /// Ring: pages (1..=[`RING_MAX_PAGES`]).
    pub const RING_PAGES: u32 = 0x78;
    /// Ring control ([`RING_PINNED`], [`RING_WRITABLE`]).
    pub const RING_CTRL: u32 = 0x7c;
    /// errno of the last failed pin, read-only.
    pub const RING_ERROR: u32 = 0x80;
    /// Guest pages the device holds pinned, read-only.
    pub const PINNED_PAGES: u32 = 0x84;
    /// Background writer: guest IOVA, low half (page aligned).
    pub const BG_IOVA_LO: u32 = 0x90;
    /// Background writer: guest IOVA, high half.
    pub const BG_IOVA_HI: u32 = 0x94;
    /// Background writer: pages (1..=[`BG_MAX_PAGES`]).
    pub const BG_PAGES: u32 = 0x98;
    /// Background writer: page writes per second (1..=[`BG_MAX_RATE`]).
    pub const BG_RATE: u32 = 0x9c;
    /// Background writer control ([`BG_ENABLE`]).
    pub const BG_CTRL: u32 = 0xa0;
    /// Background writer: pages written since it started, read-only.
    pub const BG_WRITES: u32 = 0xa4;
    /// errno that stopped the background writer, read-only.
    pub const BG_ERROR: u32 = 0xa8;
    /// Background writer: index of the next page, read-only.
    pub const BG_CURSOR: u32 = 0xac;
    /// First offset past the implemented registers.
    pub const END: u32 = 0xb0;
    /// The DMA engine's registers.
    pub const DMA_BLOCK: core::ops::Range<u32> = DMA_DEV_OFF..END;

    /// Every implemented register with its name, by offset.
    pub const REGISTERS: [(u32, &str); 33] = [
        (ID, "ID"),
        (VERSION, "VERSION"),
        (SCRATCH, "SCRATCH"),
        (STATUS, "STATUS"),
        (IRQ_STATUS, "IRQ_STATUS"),
        (IRQ_ENABLE, "IRQ_ENABLE"),
        (DOORBELL, "DOORBELL"),
        (MEM_SIZE, "MEM_SIZE"),
        (IRQ_COUNT, "IRQ_COUNT"),
        (DMA_DEV_OFF, "DMA_DEV_OFF"),
        (DMA_IOVA_LO, "DMA_IOVA_LO"),
        (DMA_IOVA_HI, "DMA_IOVA_HI"),
        (DMA_LEN, "DMA_LEN"),
        (DMA_PATTERN, "DMA_PATTERN"),
        (DMA_CMD, "DMA_CMD"),
        (DMA_STATUS, "DMA_STATUS"),
        (DMA_ERROR, "DMA_ERROR"),
        (DMA_CTRL, "DMA_CTRL"),
        (DMA_COMPLETED, "DMA_COMPLETED"),
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

    /// The name of the register at `offset`, if one is there.
    pub fn name(offset: u32) -> Option<&'static str> {
        REGISTERS
            .iter()
            .find(|&&(o, _)| o == offset)
            .map(|&(_, n)| n)
    }

    /// `ID` of every sample device ("VMS1").
    pub const ID_VALUE: u32 = 0x564d_5331;
    /// `VERSION` (1.0).
    pub const VERSION_VALUE: u32 = 0x0001_0000;
    /// `STATUS` bit: the device is stopped for migration.
    pub const STATUS_QUIESCED: u32 = 1 << 0;

    /// Interrupt cause: the doorbell was rung.
    pub const IRQ_DOORBELL: u32 = 1 << 0;
    /// Interrupt cause: a DMA command finished successfully.
    pub const IRQ_DMA_DONE: u32 = 1 << 1;
    /// Interrupt cause: a DMA command, the ring or the writer failed.
    pub const IRQ_DMA_ERROR: u32 = 1 << 2;
    /// Every interrupt cause this version knows.
    pub const IRQ_ALL: u32 = IRQ_DOORBELL | IRQ_DMA_DONE | IRQ_DMA_ERROR;

    /// `DMA_CMD`: device memory to guest memory.
    pub const DMA_CMD_TO_GUEST: u32 = 1;
    /// `DMA_CMD`: guest memory to device memory.
    pub const DMA_CMD_FROM_GUEST: u32 = 2;
    /// `DMA_CMD`: guest memory filled with `DMA_PATTERN`.
    pub const DMA_CMD_FILL: u32 = 3;
    /// `DMA_STATUS`: nothing queued since reset.
    pub const DMA_STATUS_IDLE: u32 = 0;
    /// `DMA_STATUS`: a command waits or runs.
    pub const DMA_STATUS_QUEUED: u32 = 1;
    /// `DMA_STATUS`: the last command succeeded.
    pub const DMA_STATUS_DONE: u32 = 2;
    /// `DMA_STATUS`: the last command failed (`DMA_ERROR` says why).
    pub const DMA_STATUS_ERROR: u32 = 3;
    /// `DMA_CTRL` bit: queued commands wait.
    pub const DMA_CTRL_PAUSE: u32 = 1 << 0;
    /// Longest command in bytes.
    pub const DMA_MAX_LEN: u32 = 64 << 20;
    /// `RING_CTRL` bit: the ring is pinned.
    pub const RING_PINNED: u32 = 1 << 0;
    /// `RING_CTRL` bit: the ring is pinned for device writes too.
    pub const RING_WRITABLE: u32 = 1 << 1;
    /// Most pages of a ring: one `vfio_pin_pages()` call.
    pub const RING_MAX_PAGES: u32 = 512;
    /// `BG_CTRL` bit: the background writer runs.
    pub const BG_ENABLE: u32 = 1 << 0;
    /// Most pages of the writer's range.
    pub const BG_MAX_PAGES: u32 = 1 << 20;
    /// Fastest writer, in page writes per second.
    pub const BG_MAX_RATE: u32 = 1_000_000;
    /// Bytes the writer stamps at the start of a page: the write count
    /// (u64), the page index (u32) and [`BG_MAGIC`].
    pub const BG_STAMP_LEN: usize = 16;
    /// The writer's stamp marker ("BGWR").
    pub const BG_MAGIC: u32 = 0x5257_4742;
}

/// Size of a guest page: the unit in which the DMA engine pins and writes
/// guest memory and in which the dirty bitmap reports it, one bit a page
/// (`VFIO_MIG_DIRTY_PAGE_SIZE`).
pub const GUEST_PAGE_SIZE: u64 = 4096;

/// PCI configuration space (region [`region::CONFIG`]): the function's
/// identity. The rest is a standard type 0 header.
pub mod config {
    /// Size: a conventional PCI header.
    pub const SIZE: usize = 256;
    /// PCI vendor ID (also the subsystem vendor ID).
    pub const VENDOR_ID: u16 = 0x1234;
    /// PCI device ID.
    pub const DEVICE_ID: u16 = 0x4d53;
    /// Revision ID.
    pub const REVISION: u8 = 1;
    /// Class code, low byte first (base class 0xff: vendor specific).
    pub const CLASS_CODE: [u8; 3] = [0x00, 0x00, 0xff];
    /// Offset of the MSI capability (64-bit address, one vector), the only
    /// capability.
    pub const MSI_CAP: usize = 0x40;
}

/// The migration region (region [`region::MIGRATION`]) of the November
/// 2018 proposal: `struct vfio_device_migration_info` at offset 0, a
/// reserved gap, the data area and the dirty-bitmap area
/// (`Documentation/migration-abi.rst`, `include/vfio_migration.h`).
pub mod migration {
    use core::mem::{offset_of, size_of};

    /// Type of the region in its `VFIO_REGION_INFO_CAP_TYPE`
    /// (`VFIO_REGION_TYPE_MIGRATION`; in no kernel's `linux/vfio.h`).
    pub const REGION_TYPE: u32 = 1 << 30;
    /// Its subtype (`VFIO_REGION_SUBTYPE_MIGRATION`).
    pub const REGION_SUBTYPE: u32 = 1;

    /// `pending` of [`VfioDeviceMigrationInfo`].
    #[repr(C, packed)]
    #[derive(Debug, Default, Clone, Copy)]
    pub struct InfoPending {
        /// Bytes only pre-copy can send.
        pub precopy_only: u64,
        /// Bytes pre-copy or stop-and-copy can send.
        pub compatible: u64,
        /// Bytes only stop-and-copy can send.
        pub postcopy_only: u64,
        /// Cap of a get-buffer chunk (0: the data area).
        pub threshold_size: u64,
    }

    /// `data` of [`VfioDeviceMigrationInfo`].
    #[repr(C, packed)]
    #[derive(Debug, Default, Clone, Copy)]
    pub struct InfoData {
        /// Region offset of the chunk (or of the dirty bitmap).
        pub offset: u64,
        /// Chunk size: reading it gets a buffer, writing it sets one.
        pub size: u64,
    }

    /// `dirty_pfns` of [`VfioDeviceMigrationInfo`].
    #[repr(C, packed)]
    #[derive(Debug, Default, Clone, Copy)]
    pub struct InfoDirtyPfns {
        /// First IOVA of a dirty query (page aligned).
        pub start_addr: u64,
        /// Pages the query asks about.
        pub total: u64,
        /// Pages the answer covers: reading it runs the query.
        pub copied: u64,
    }

    /// `struct vfio_device_migration_info`, packed, at offset 0 of the
    /// region. Only its layout is used: fields are accessed one by one
    /// ([`Field`]), never as a whole.
    #[repr(C, packed)]
    #[derive(Debug, Default, Clone, Copy)]
    pub struct VfioDeviceMigrationInfo {
        /// A [`DeviceState`] number.
        pub device_state: u32,
        /// Get pending and the chunk cap.
        pub pending: InfoPending,
        /// Get buffer and set buffer.
        pub data: InfoData,
        /// The dirty query.
        pub dirty_pfns: InfoDirtyPfns,
    }

    /// Size of [`VfioDeviceMigrationInfo`], the end of the fields.
    pub const INFO_SIZE: u64 = size_of::<VfioDeviceMigrationInfo>() as u64;
    /// Start of the data area (device-state chunks); `INFO_SIZE..` up to
    /// here is reserved.
    pub const DATA_OFFSET: u64 = 0x1000;
    /// Size of the data area: the largest chunk (fixed in this version).
    pub const DATA_LEN: u64 = 1 << 20;
    /// Start of the dirty-bitmap area.
    pub const BITMAP_OFFSET: u64 = DATA_OFFSET + DATA_LEN;
    /// Size of the dirty-bitmap area (fixed in this version): 8 GiB of
    /// guest pages per query, so that a VM's RAM is one query, whose cost
    /// does not depend on the size of its range.
    pub const BITMAP_LEN: u64 = 256 << 10;
    /// Size of the whole region.
    pub const REGION_SIZE: u64 = BITMAP_OFFSET + BITMAP_LEN;
    /// Most pages one dirty query covers: a bit each in the bitmap area.
    pub const BITMAP_PAGES: u64 = BITMAP_LEN * 8;

    const _: () = assert!(INFO_SIZE == 76 && INFO_SIZE <= DATA_OFFSET);

    /// A field of [`VfioDeviceMigrationInfo`].
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
    pub enum Field {
        /// `device_state` (u32): set state (write), current state (read).
        DeviceState,
        /// `pending.precopy_only`, read-only.
        PrecopyOnly,
        /// `pending.compatible`, read-only.
        Compatible,
        /// `pending.postcopy_only`, read-only.
        PostcopyOnly,
        /// `pending.threshold_size`.
        ThresholdSize,
        /// `data.offset`.
        DataOffset,
        /// `data.size`: get buffer (read), set buffer (write).
        DataSize,
        /// `dirty_pfns.start_addr`.
        DirtyStartAddr,
        /// `dirty_pfns.total`.
        DirtyTotal,
        /// `dirty_pfns.copied`, read-only: the dirty query.
        DirtyCopied,
    }

    impl Field {
        /// Every field, in layout order.
        pub const ALL: [Field; 10] = [
            Field::DeviceState,
            Field::PrecopyOnly,
            Field::Compatible,
            Field::PostcopyOnly,
            Field::ThresholdSize,
            Field::DataOffset,
            Field::DataSize,
            Field::DirtyStartAddr,
            Field::DirtyTotal,
            Field::DirtyCopied,
        ];

        /// Offset in the region (`offsetof` in the C struct).
        pub const fn offset(self) -> u64 {
            type I = VfioDeviceMigrationInfo;
            (match self {
                Field::DeviceState => offset_of!(I, device_state),
                Field::PrecopyOnly => offset_of!(I, pending.precopy_only),
                Field::Compatible => offset_of!(I, pending.compatible),
                Field::PostcopyOnly => offset_of!(I, pending.postcopy_only),
                Field::ThresholdSize => offset_of!(I, pending.threshold_size),
                Field::DataOffset => offset_of!(I, data.offset),
                Field::DataSize => offset_of!(I, data.size),
                Field::DirtyStartAddr => offset_of!(I, dirty_pfns.start_addr),
                Field::DirtyTotal => offset_of!(I, dirty_pfns.total),
                Field::DirtyCopied => offset_of!(I, dirty_pfns.copied),
            }) as u64
        }

        /// Width in bytes: the only access size the field takes.
        pub const fn width(self) -> usize {
            match self {
                Field::DeviceState => size_of::<u32>(),
                _ => size_of::<u64>(),
            }
        }

        /// Whether userspace may write it (writes to the others fail).
        pub const fn writable(self) -> bool {
            !matches!(
                self,
                Field::PrecopyOnly | Field::Compatible | Field::PostcopyOnly | Field::DirtyCopied
            )
        }

        /// Whether reading it is an action (get buffer, dirty query).
        pub const fn read_is_action(self) -> bool {
            matches!(self, Field::DataSize | Field::DirtyCopied)
        }

        /// The C name, e.g. `pending.compatible`.
        pub const fn name(self) -> &'static str {
            match self {
                Field::DeviceState => "device_state",
                Field::PrecopyOnly => "pending.precopy_only",
                Field::Compatible => "pending.compatible",
                Field::PostcopyOnly => "pending.postcopy_only",
                Field::ThresholdSize => "pending.threshold_size",
                Field::DataOffset => "data.offset",
                Field::DataSize => "data.size",
                Field::DirtyStartAddr => "dirty_pfns.start_addr",
                Field::DirtyTotal => "dirty_pfns.total",
                Field::DirtyCopied => "dirty_pfns.copied",
            }
        }
    }

    /// Number of device states; `device_state` values from here on are
    /// refused.
    pub const NUM_STATES: u32 = 10;

    /// A device state, numbered as the proposal's `VFIO_DEVICE_STATE_*`:
    /// the value written to and read from `device_state`.
    #[repr(u32)]
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
    pub enum DeviceState {
        /// `VFIO_DEVICE_STATE_NONE`: opened, not yet started by the VMM.
        None = 0,
        /// `VFIO_DEVICE_STATE_RUNNING`: normal operation.
        Running = 1,
        /// `VFIO_DEVICE_STATE_MIGRATION_SETUP`: the source prepares to save.
        Setup = 2,
        /// `VFIO_DEVICE_STATE_MIGRATION_PRECOPY`: the source saves while
        /// running.
        PreCopy = 3,
        /// `VFIO_DEVICE_STATE_MIGRATION_STOPNCOPY`: the source saves,
        /// stopped.
        StopNCopy = 4,
        /// `VFIO_DEVICE_STATE_MIGRATION_SAVE_COMPLETED`: the source saved
        /// everything.
        SaveCompleted = 5,
        /// `VFIO_DEVICE_STATE_MIGRATION_RESUME`: the destination loads a
        /// stream.
        Resume = 6,
        /// `VFIO_DEVICE_STATE_MIGRATION_RESUME_COMPLETED`: the loaded state
        /// is the device state.
        ResumeCompleted = 7,
        /// `VFIO_DEVICE_STATE_MIGRATION_FAILED`: the migration failed.
        Failed = 8,
        /// `VFIO_DEVICE_STATE_MIGRATION_CANCELLED`: the migration was
        /// cancelled.
        Cancelled = 9,
    }

    impl DeviceState {
        /// Every state, by number.
        pub const ALL: [DeviceState; NUM_STATES as usize] = [
            DeviceState::None,
            DeviceState::Running,
            DeviceState::Setup,
            DeviceState::PreCopy,
            DeviceState::StopNCopy,
            DeviceState::SaveCompleted,
            DeviceState::Resume,
            DeviceState::ResumeCompleted,
            DeviceState::Failed,
            DeviceState::Cancelled,
        ];

        /// The state numbered `raw`, if there is one.
        pub const fn from_raw(raw: u32) -> Option<DeviceState> {
            if raw < NUM_STATES {
                Some(Self::ALL[raw as usize])
            } else {
                None
            }
        }

        /// The number of `device_state`.
        pub const fn raw(self) -> u32 {
            self as u32
        }

        /// The name without the `VFIO_DEVICE_STATE_` prefix, e.g.
        /// `MIGRATION_PRECOPY`.
        pub const fn name(self) -> &'static str {
            match self {
                DeviceState::None => "NONE",
                DeviceState::Running => "RUNNING",
                DeviceState::Setup => "MIGRATION_SETUP",
                DeviceState::PreCopy => "MIGRATION_PRECOPY",
                DeviceState::StopNCopy => "MIGRATION_STOPNCOPY",
                DeviceState::SaveCompleted => "MIGRATION_SAVE_COMPLETED",
                DeviceState::Resume => "MIGRATION_RESUME",
                DeviceState::ResumeCompleted => "MIGRATION_RESUME_COMPLETED",
                DeviceState::Failed => "MIGRATION_FAILED",
                DeviceState::Cancelled => "MIGRATION_CANCELLED",
            }
        }
    }
}

/// The device-state stream (`Documentation/migration-stream.rst`): a
/// header, page records, one register record, an end record; integers
/// little-endian.
pub mod stream {
    /// Size of a device-memory page in the stream.
    pub const PAGE_SIZE: usize = 4096;
    /// The first eight bytes of every stream.
    pub const MAGIC: [u8; 8] = *b"VMSSTATE";
    /// The stream format version this code writes and reads.
    pub const VERSION: u32 = 2;

    /// Size of the header.
    pub const HEADER_LEN: usize = 32;
    /// Header offset of the format version (u32).
    pub const HEADER_VERSION: usize = 8;
    /// Header offset of the mdev type id (u32).
    pub const HEADER_TYPE_ID: usize = 12;
    /// Header offset of the device-memory size in bytes (u64).
    pub const HEADER_MEMORY_SIZE: usize = 16;
    /// Header offset of the page size (u32).
    pub const HEADER_PAGE_SIZE: usize = 24;
    /// Header offset of the register-state length `R` (u32).
    pub const HEADER_REGISTER_LEN: usize = 28;

    /// Size of the head of every record: tag (u32) and body length (u32).
    pub const RECORD_HEAD_LEN: usize = 8;
    /// Tag of a page record (`"PAGE"`).
    pub const TAG_PAGE: u32 = u32::from_le_bytes(*b"PAGE");
    /// Tag of the register record (`"REGS"`), body of `R` bytes.
    pub const TAG_REGS: u32 = u32::from_le_bytes(*b"REGS");
    /// Tag of the end record (`"END."`).
    pub const TAG_END: u32 = u32::from_le_bytes(*b"END.");
    /// Body length of a page record: page index (u64) and the page.
    pub const PAGE_BODY_LEN: usize = 8 + PAGE_SIZE;
    /// Size of a page record.
    pub const PAGE_RECORD_LEN: usize = RECORD_HEAD_LEN + PAGE_BODY_LEN;
    /// Body length of the end record: stream length before it (u64),
    /// checksums `a` and `b` (u64 each).
    pub const END_BODY_LEN: usize = 24;
    /// Size of the end record.
    pub const END_RECORD_LEN: usize = RECORD_HEAD_LEN + END_BODY_LEN;
}
