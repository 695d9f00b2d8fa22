// SPDX-License-Identifier: GPL-2.0
//! The migration region: the 2018 proposal's `struct
//! vfio_device_migration_info` and its actions (Documentation/migration-abi.rst).
//!
//! The numbers and the layout mirror `include/vfio_migration.h`, the C
//! header for VMM authors: the compile-time checks below pin the layout and
//! the host tests parse the header and compare (and compile it with `cc`),
//! so the two cannot drift.
//!
//! On a [`Device`]:
//!
//! * [`Device::migration_region`] finds the region by its
//!   `VFIO_REGION_INFO_CAP_TYPE`;
//! * field access ([`Device::read_field`], [`Device::write_field`], and the
//!   raw [`Device::mig_pread`] / [`Device::mig_pwrite`] for tests);
//! * the actions: [`Device::set_state`], [`Device::pending`],
//!   [`Device::set_threshold`], [`Device::get_buffer`],
//!   [`Device::set_buffer`], [`Device::dirty_bitmap`];
//! * the flows: [`Device::save_to`] and [`Device::restore_from`].
//!
//! The stream itself is opaque here (see [`crate::stream`] to look inside).

use std::fmt;
use std::io::{Read, Write};
use std::mem::{offset_of, size_of};
use std::time::{Duration, Instant};

use crate::device::{Device, RegionInfo};
use crate::error::{Error, Result};
use crate::uapi::vfio;

/// `VFIO_REGION_TYPE_MIGRATION`: the region type in `VFIO_REGION_INFO_CAP_TYPE`.
pub const VFIO_REGION_TYPE_MIGRATION: u32 = 1 << 30;
/// `VFIO_REGION_SUBTYPE_MIGRATION`.
pub const VFIO_REGION_SUBTYPE_MIGRATION: u32 = 1;
/// `VFIO_MIG_REGION_DATA_OFFSET`: where the data area starts.
pub const DATA_OFFSET: u64 = 0x1000;
/// `VFIO_MIG_DEFAULT_DATA_LEN`: the data area's size with default module
/// parameters (1 MiB).
pub const DEFAULT_DATA_LEN: u64 = 0x10_0000;
/// `VFIO_MIG_DEFAULT_BITMAP_LEN`: the bitmap area's size with default module
/// parameters (64 KiB).
pub const DEFAULT_BITMAP_LEN: u64 = 0x1_0000;
/// `VFIO_MIG_DEFAULT_BITMAP_OFFSET`.
pub const DEFAULT_BITMAP_OFFSET: u64 = DATA_OFFSET + DEFAULT_DATA_LEN;
/// `VFIO_MIG_DEFAULT_REGION_SIZE`.
pub const DEFAULT_REGION_SIZE: u64 = DATA_OFFSET + DEFAULT_DATA_LEN + DEFAULT_BITMAP_LEN;
/// `VFIO_MIG_DIRTY_PAGE_SIZE`: one bitmap bit per page of this size.
pub const DIRTY_PAGE_SIZE: u64 = 4096;
/// `VFIO_MIG_NUM_STATES`.
pub const NUM_STATES: u32 = 10;
/// `VFIO_MIG_INFO_SIZE`: size of the packed struct at offset 0.
pub const INFO_SIZE: u64 = size_of::<VfioDeviceMigrationInfo>() as u64;

/// `pending` of `struct vfio_device_migration_info`.
#[repr(C, packed)]
#[derive(Debug, Default, Clone, Copy)]
pub struct InfoPending {
    pub precopy_only: u64,
    pub compatible: u64,
    pub postcopy_only: u64,
    pub threshold_size: u64,
}

/// `data` of `struct vfio_device_migration_info`.
#[repr(C, packed)]
#[derive(Debug, Default, Clone, Copy)]
pub struct InfoData {
    pub offset: u64,
    pub size: u64,
}

/// `dirty_pfns` of `struct vfio_device_migration_info`.
#[repr(C, packed)]
#[derive(Debug, Default, Clone, Copy)]
pub struct InfoDirtyPfns {
    pub start_addr: u64,
    pub total: u64,
    pub copied: u64,
}

/// `struct vfio_device_migration_info` of the proposal (packed), at offset 0
/// of the region. Only its layout is used: fields are accessed one by one
/// ([`Field`]), never as a whole.
#[repr(C, packed)]
#[derive(Debug, Default, Clone, Copy)]
pub struct VfioDeviceMigrationInfo {
    pub device_state: u32,
    pub pending: InfoPending,
    pub data: InfoData,
    pub dirty_pfns: InfoDirtyPfns,
}

// The layout of include/vfio_migration.h, checked at compile time.
const _: () = assert!(size_of::<VfioDeviceMigrationInfo>() == 76);
const _: () = assert!(offset_of!(VfioDeviceMigrationInfo, device_state) == 0);
const _: () = assert!(offset_of!(VfioDeviceMigrationInfo, pending.precopy_only) == 4);
const _: () = assert!(offset_of!(VfioDeviceMigrationInfo, pending.compatible) == 12);
const _: () = assert!(offset_of!(VfioDeviceMigrationInfo, pending.postcopy_only) == 20);
const _: () = assert!(offset_of!(VfioDeviceMigrationInfo, pending.threshold_size) == 28);
const _: () = assert!(offset_of!(VfioDeviceMigrationInfo, data.offset) == 36);
const _: () = assert!(offset_of!(VfioDeviceMigrationInfo, data.size) == 44);
const _: () = assert!(offset_of!(VfioDeviceMigrationInfo, dirty_pfns.start_addr) == 52);
const _: () = assert!(offset_of!(VfioDeviceMigrationInfo, dirty_pfns.total) == 60);
const _: () = assert!(offset_of!(VfioDeviceMigrationInfo, dirty_pfns.copied) == 68);
const _: () = assert!(INFO_SIZE <= DATA_OFFSET);
const _: () = assert!(DEFAULT_REGION_SIZE == 0x11_1000);
const _: () = assert!(VFIO_REGION_TYPE_MIGRATION == crate::uapi::VFIO_REGION_TYPE_MIGRATION_RFC);
const _: () =
    assert!(VFIO_REGION_SUBTYPE_MIGRATION == crate::uapi::VFIO_REGION_SUBTYPE_MIGRATION_RFC);

/// A field of `struct vfio_device_migration_info`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Field {
    DeviceState,
    PrecopyOnly,
    Compatible,
    PostcopyOnly,
    ThresholdSize,
    DataOffset,
    DataSize,
    DirtyStartAddr,
    DirtyTotal,
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
        (match self {
            Field::DeviceState => offset_of!(VfioDeviceMigrationInfo, device_state),
            Field::PrecopyOnly => offset_of!(VfioDeviceMigrationInfo, pending.precopy_only),
            Field::Compatible => offset_of!(VfioDeviceMigrationInfo, pending.compatible),
            Field::PostcopyOnly => offset_of!(VfioDeviceMigrationInfo, pending.postcopy_only),
            Field::ThresholdSize => offset_of!(VfioDeviceMigrationInfo, pending.threshold_size),
            Field::DataOffset => offset_of!(VfioDeviceMigrationInfo, data.offset),
            Field::DataSize => offset_of!(VfioDeviceMigrationInfo, data.size),
            Field::DirtyStartAddr => offset_of!(VfioDeviceMigrationInfo, dirty_pfns.start_addr),
            Field::DirtyTotal => offset_of!(VfioDeviceMigrationInfo, dirty_pfns.total),
            Field::DirtyCopied => offset_of!(VfioDeviceMigrationInfo, dirty_pfns.copied),
        }) as u64
    }

    /// Width in bytes: the only access size the field takes.
    pub const fn width(self) -> usize {
        match self {
            Field::DeviceState => 4,
            _ => 8,
        }
    }

    /// Whether userspace may write it (the output fields fail with EINVAL).
    pub const fn writable(self) -> bool {
        !matches!(
            self,
            Field::PrecopyOnly | Field::Compatible | Field::PostcopyOnly | Field::DirtyCopied
        )
    }

    /// Whether reading it triggers an action (get buffer, dirty query).
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

    /// The `VFIO_MIG_OFF_*` macro of the header that gives its offset.
    pub const fn header_macro(self) -> &'static str {
        match self {
            Field::DeviceState => "VFIO_MIG_OFF_DEVICE_STATE",
            Field::PrecopyOnly => "VFIO_MIG_OFF_PRECOPY_ONLY",
            Field::Compatible => "VFIO_MIG_OFF_COMPATIBLE",
            Field::PostcopyOnly => "VFIO_MIG_OFF_POSTCOPY_ONLY",
            Field::ThresholdSize => "VFIO_MIG_OFF_THRESHOLD_SIZE",
            Field::DataOffset => "VFIO_MIG_OFF_DATA_OFFSET",
            Field::DataSize => "VFIO_MIG_OFF_DATA_SIZE",
            Field::DirtyStartAddr => "VFIO_MIG_OFF_DIRTY_START_ADDR",
            Field::DirtyTotal => "VFIO_MIG_OFF_DIRTY_TOTAL",
            Field::DirtyCopied => "VFIO_MIG_OFF_DIRTY_COPIED",
        }
    }
}

impl fmt::Display for Field {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A device state, numbered as the proposal's `VFIO_DEVICE_STATE_*`.
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum State {
    None = 0,
    Running = 1,
    Setup = 2,
    PreCopy = 3,
    StopNCopy = 4,
    SaveCompleted = 5,
    Resume = 6,
    ResumeCompleted = 7,
    Failed = 8,
    Cancelled = 9,
}

impl State {
    /// Every state, by value.
    pub const ALL: [State; 10] = [
        State::None,
        State::Running,
        State::Setup,
        State::PreCopy,
        State::StopNCopy,
        State::SaveCompleted,
        State::Resume,
        State::ResumeCompleted,
        State::Failed,
        State::Cancelled,
    ];

    /// The state of a `device_state` value, if it is one.
    pub const fn from_raw(v: u32) -> Option<State> {
        if v < NUM_STATES {
            Some(State::ALL[v as usize])
        } else {
            None
        }
    }

    /// The value written to `device_state`.
    pub const fn raw(self) -> u32 {
        self as u32
    }

    /// The name without the `VFIO_DEVICE_STATE_` prefix, e.g.
    /// `MIGRATION_PRECOPY`.
    pub const fn name(self) -> &'static str {
        match self {
            State::None => "NONE",
            State::Running => "RUNNING",
            State::Setup => "MIGRATION_SETUP",
            State::PreCopy => "MIGRATION_PRECOPY",
            State::StopNCopy => "MIGRATION_STOPNCOPY",
            State::SaveCompleted => "MIGRATION_SAVE_COMPLETED",
            State::Resume => "MIGRATION_RESUME",
            State::ResumeCompleted => "MIGRATION_RESUME_COMPLETED",
            State::Failed => "MIGRATION_FAILED",
            State::Cancelled => "MIGRATION_CANCELLED",
        }
    }

    /// The C name, e.g. `VFIO_DEVICE_STATE_MIGRATION_PRECOPY`.
    pub fn c_name(self) -> String {
        format!("VFIO_DEVICE_STATE_{}", self.name())
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A `device_state` value in words: the state's name, or the number.
pub fn state_name(v: u32) -> String {
    match State::from_raw(v) {
        Some(s) => s.name().to_string(),
        None => format!("{v} (not a state)"),
    }
}

/// The migration region as `VFIO_DEVICE_GET_REGION_INFO` reports it, and its
/// layout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MigrationRegion {
    /// What GET_REGION_INFO returned (index, size, flags, file offset, caps).
    pub info: RegionInfo,
    /// Where the data area starts in the region ([`DATA_OFFSET`]).
    pub data_offset: u64,
    /// Size of the data area: the largest chunk.
    pub data_len: u64,
    /// Where the bitmap area starts.
    pub bitmap_offset: u64,
    /// Size of the bitmap area.
    pub bitmap_len: u64,
}

impl MigrationRegion {
    /// Builds the layout from the region's info. The ABI does not report
    /// how DATA_LEN and BITMAP_LEN split `size - 4096`; the split of the
    /// default module parameters is assumed (64 KiB of bitmap), which
    /// matches every region of the default size.
    pub fn from_info(info: RegionInfo) -> Result<Self> {
        let rw = vfio::VFIO_REGION_INFO_FLAG_READ | vfio::VFIO_REGION_INFO_FLAG_WRITE;
        if info.flags & rw != rw {
            return Err(Error::Invalid(format!(
                "migration region {} has flags {:#x}, not READ|WRITE",
                info.index, info.flags
            )));
        }
        let min = DATA_OFFSET + DIRTY_PAGE_SIZE + DEFAULT_BITMAP_LEN;
        if info.size < min {
            return Err(Error::Invalid(format!(
                "migration region {} is {:#x} bytes, less than {min:#x} (registers, a data \
                 page and the bitmap area)",
                info.index, info.size
            )));
        }
        let bitmap_len = DEFAULT_BITMAP_LEN;
        let data_len = info.size - DATA_OFFSET - bitmap_len;
        Ok(MigrationRegion {
            info,
            data_offset: DATA_OFFSET,
            data_len,
            bitmap_offset: DATA_OFFSET + data_len,
            bitmap_len,
        })
    }

    /// The region index.
    pub fn index(&self) -> u32 {
        self.info.index
    }

    /// End of the data area.
    pub fn data_end(&self) -> u64 {
        self.data_offset + self.data_len
    }
}

/// The three `pending` counts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pending {
    pub precopy_only: u64,
    pub compatible: u64,
    pub postcopy_only: u64,
}

impl Pending {
    /// Their sum: everything still to be sent.
    pub fn total(&self) -> u64 {
        self.precopy_only + self.compatible + self.postcopy_only
    }
}

impl fmt::Display for Pending {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "precopy_only {}, compatible {}, postcopy_only {}",
            self.precopy_only, self.compatible, self.postcopy_only
        )
    }
}

/// A dirty-bitmap query's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirtyBitmap {
    /// `dirty_pfns.copied`: pages the bitmap covers.
    pub copied: u64,
    /// Where the bitmap was (`data.offset` after the query).
    pub offset: u64,
    /// `copied.div_ceil(64)` little-endian words; bit k of the bitmap is
    /// page `start_addr / 4096 + k`.
    pub words: Vec<u64>,
}

/// The `between` callback of [`SaveOptions`]: pass number and pending counts.
pub type BetweenFn<'a> = &'a mut dyn FnMut(u32, &Pending) -> Result<()>;
/// The `on_chunk` callback of [`SaveOptions`]: state and chunk length.
pub type ChunkFn<'a> = &'a mut dyn FnMut(State, usize) -> Result<()>;

/// What [`Device::save_to`] does.
pub struct SaveOptions<'a> {
    /// `pending.threshold_size`: cap of each chunk, 0 for the data area.
    pub threshold: u64,
    /// Pre-copy passes at most (0: straight from SETUP to STOPNCOPY).
    pub precopy_iterations: u32,
    /// After a pass (and `between`), pre-copy ends once
    /// `pending.compatible` (what was dirtied since) is at most this.
    pub precopy_target: u64,
    /// Called after each pre-copy pass but the last, with the pass number
    /// (from 1) and the pending counts after the pass; the device runs
    /// meanwhile (this is where a VMM runs its guest, which dirties device
    /// memory). An error aborts the save.
    pub between: Option<BetweenFn<'a>>,
    /// Called with each chunk's length as it is read (for tests and
    /// progress); an error aborts the save.
    pub on_chunk: Option<ChunkFn<'a>>,
}

impl Default for SaveOptions<'_> {
    fn default() -> Self {
        SaveOptions {
            threshold: 0,
            precopy_iterations: 1,
            precopy_target: 0,
            between: None,
            on_chunk: None,
        }
    }
}

/// What [`Device::save_to`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SaveReport {
    /// Stream bytes written.
    pub bytes: u64,
    /// Get-buffer actions that returned data.
    pub chunks: u64,
    /// The largest chunk.
    pub max_chunk: u64,
    /// Pre-copy passes made.
    pub precopy_iterations: u32,
    /// Bytes read while the device ran (PRECOPY).
    pub precopy_bytes: u64,
    /// Bytes read while it was stopped (STOPNCOPY).
    pub stop_bytes: u64,
    /// From the write of STOPNCOPY to SAVE_COMPLETED.
    pub downtime: Duration,
}

/// What [`Device::restore_from`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RestoreReport {
    /// Stream bytes handed to the device.
    pub bytes: u64,
    /// Set-buffer actions.
    pub chunks: u64,
}

fn is_saving(s: State) -> bool {
    matches!(s, State::Setup | State::PreCopy | State::StopNCopy)
}

impl Device {
    /// Finds the migration region: the region whose capability chain has a
    /// `VFIO_REGION_INFO_CAP_TYPE` of ([`VFIO_REGION_TYPE_MIGRATION`],
    /// [`VFIO_REGION_SUBTYPE_MIGRATION`]). Looked up once, then cached.
    pub fn migration_region(&self) -> Result<&MigrationRegion> {
        if let Some(r) = self.migration.get() {
            return Ok(r);
        }
        let info = self.info()?;
        let want = (VFIO_REGION_TYPE_MIGRATION, VFIO_REGION_SUBTYPE_MIGRATION);
        for index in 0..info.num_regions {
            let r = self.region_info(index)?;
            if r.size > 0 && r.region_type() == Some(want) {
                let m = MigrationRegion::from_info(r)?;
                return Ok(self.migration.get_or_init(|| m));
            }
        }
        Err(Error::Invalid(format!(
            "{} has no migration region (no region of its {} has a VFIO_REGION_INFO_CAP_TYPE \
             of type {:#x} subtype {})",
            self.uuid(),
            info.num_regions,
            want.0,
            want.1
        )))
    }

    fn mig_index(&self) -> Result<u32> {
        Ok(self.migration_region()?.index())
    }

    /// One `pread` at `offset` of the migration region, as it comes: for
    /// tests that get the access wrong on purpose. Returns the byte count.
    pub fn mig_pread(&self, offset: u64, buf: &mut [u8]) -> Result<usize> {
        let base = self.migration_region()?.info.offset;
        self.pread(base + offset, buf)
    }

    /// One `pwrite` at `offset` of the migration region, as it comes.
    pub fn mig_pwrite(&self, offset: u64, buf: &[u8]) -> Result<usize> {
        let base = self.migration_region()?.info.offset;
        self.pwrite(base + offset, buf)
    }

    fn field_err(&self, e: Error, what: String) -> Error {
        match e.errno() {
            Some(errno) => Error::Migration { what, errno },
            None => e,
        }
    }

    fn field_what(&self, op: &str, f: Field) -> String {
        let index = self.migration.get().map_or(9, |r| r.index());
        format!(
            "{op} of {} ({} bytes at migration region {index} offset {:#x})",
            f.name(),
            f.width(),
            f.offset()
        )
    }

    /// The current state in words, for error messages (best effort).
    fn state_words(&self) -> String {
        let mut b = [0u8; 4];
        match self.read_region_quiet(&mut b) {
            Some(()) => state_name(u32::from_le_bytes(b)),
            None => "(unreadable)".into(),
        }
    }

    fn read_region_quiet(&self, b: &mut [u8; 4]) -> Option<()> {
        let idx = self.mig_index().ok()?;
        self.read_region(idx, Field::DeviceState.offset(), b).ok()
    }

    /// Reads a field with one access of its width. Reading `data.size`
    /// is the get-buffer action and reading `dirty_pfns.copied` the dirty
    /// query; the other reads have no side effect.
    pub fn read_field(&self, f: Field) -> Result<u64> {
        let idx = self.mig_index()?;
        let mut b = [0u8; 8];
        let w = f.width();
        self.read_region(idx, f.offset(), &mut b[..w])
            .map_err(|e| self.field_err(e, self.field_what("read", f)))?;
        Ok(u64::from_le_bytes(b))
    }

    /// Writes a field with one access of its width (`v` is truncated to
    /// the width). Writing `device_state` is the set-state action and
    /// writing `data.size` the set-buffer action.
    pub fn write_field(&self, f: Field, v: u64) -> Result<()> {
        let idx = self.mig_index()?;
        let w = f.width();
        self.write_region(idx, f.offset(), &v.to_le_bytes()[..w])
            .map_err(|e| self.field_err(e, format!("{} = {v:#x}", self.field_what("write", f))))
    }

    /// `device_state` as read, also when it is not a known state.
    pub fn device_state_raw(&self) -> Result<u32> {
        Ok(self.read_field(Field::DeviceState)? as u32)
    }

    /// The current device state.
    pub fn device_state(&self) -> Result<State> {
        let v = self.device_state_raw()?;
        State::from_raw(v).ok_or_else(|| {
            Error::Invalid(format!(
                "device_state of {} reads {v}, not a state",
                self.uuid()
            ))
        })
    }

    /// Writes any value to `device_state`. The error names the value and
    /// the state the device is in after the failed write.
    pub fn set_state_raw(&self, v: u32) -> Result<()> {
        let idx = self.mig_index()?;
        self.write_region(idx, Field::DeviceState.offset(), &v.to_le_bytes())
            .map_err(|e| {
                let what = format!(
                    "set state {} (write of device_state at migration region {idx} offset 0x0) \
                     in state {}",
                    state_name(v),
                    self.state_words()
                );
                self.field_err(e, what)
            })
    }

    /// Set state: moves the device to `to`.
    pub fn set_state(&self, to: State) -> Result<()> {
        self.set_state_raw(to.raw())
    }

    /// Get pending: the three counts (0 outside SETUP, PRECOPY, STOPNCOPY).
    pub fn pending(&self) -> Result<Pending> {
        Ok(Pending {
            precopy_only: self.read_field(Field::PrecopyOnly)?,
            compatible: self.read_field(Field::Compatible)?,
            postcopy_only: self.read_field(Field::PostcopyOnly)?,
        })
    }

    /// Writes `pending.threshold_size`: later chunks are at most this long
    /// (0: the data area).
    pub fn set_threshold(&self, threshold: u64) -> Result<()> {
        self.write_field(Field::ThresholdSize, threshold)
    }

    /// Get buffer: reads `data.size` (the device stages its next chunk),
    /// then `data.offset`, then the chunk, into `buf` (replacing its
    /// contents). Returns the chunk's length; 0 means nothing more now (in
    /// STOPNCOPY: the stream is complete).
    pub fn get_buffer(&self, buf: &mut Vec<u8>) -> Result<usize> {
        let r = self.migration_region()?;
        let idx = r.index();
        buf.clear();
        let size = self.read_field(Field::DataSize).map_err(|e| {
            let what = format!(
                "get buffer (read of data.size at migration region {idx} offset {:#x}) in state {}",
                Field::DataSize.offset(),
                self.state_words()
            );
            self.field_err(e, what)
        })?;
        if size == 0 {
            return Ok(0);
        }
        let off = self.read_field(Field::DataOffset)?;
        if size > r.data_len || off < r.data_offset || off + size > r.data_end() {
            return Err(Error::Invalid(format!(
                "get buffer: the device staged {size:#x} bytes at {off:#x}, outside the data area \
                 [{:#x}, {:#x})",
                r.data_offset,
                r.data_end()
            )));
        }
        buf.resize(size as usize, 0);
        self.read_region(idx, off, buf)
            .map_err(|e| self.field_err(e, format!("read of the {size}-byte chunk at {off:#x}")))?;
        Ok(size as usize)
    }

    /// Set buffer: writes `chunk` at region offset `at` (inside the data
    /// area), then `data.offset = at`, then `data.size = chunk.len()`, which
    /// hands the chunk to the device.
    pub fn set_buffer(&self, chunk: &[u8], at: u64) -> Result<()> {
        let idx = self.mig_index()?;
        if !chunk.is_empty() {
            self.write_region(idx, at, chunk).map_err(|e| {
                self.field_err(
                    e,
                    format!(
                        "write of a {}-byte chunk to migration region {idx} offset {at:#x}",
                        chunk.len()
                    ),
                )
            })?;
        }
        self.write_field(Field::DataOffset, at)?;
        self.write_field(Field::DataSize, chunk.len() as u64)
            .map_err(|e| {
                let what = format!(
                    "set buffer (write of data.size = {} at migration region {idx} offset {:#x}, \
                     data.offset {at:#x}) in state {}",
                    chunk.len(),
                    Field::DataSize.offset(),
                    self.state_words()
                );
                self.field_err(e, what)
            })
    }

    /// Dirty query: writes `dirty_pfns.start_addr` and `.total`, reads
    /// `.copied`, then `data.offset` (where the bitmap is) and the bitmap.
    pub fn dirty_bitmap(&self, start: u64, total: u64) -> Result<DirtyBitmap> {
        let idx = self.mig_index()?;
        self.write_field(Field::DirtyStartAddr, start)?;
        self.write_field(Field::DirtyTotal, total)?;
        let copied = self.read_field(Field::DirtyCopied).map_err(|e| {
            let what = format!(
                "dirty query (read of dirty_pfns.copied at migration region {idx} offset {:#x}, \
                 start_addr {start:#x}, total {total}) in state {}",
                Field::DirtyCopied.offset(),
                self.state_words()
            );
            self.field_err(e, what)
        })?;
        let offset = self.read_field(Field::DataOffset)?;
        let nwords = copied.div_ceil(64) as usize;
        let mut b = vec![0u8; nwords * 8];
        if !b.is_empty() {
            self.read_region(idx, offset, &mut b).map_err(|e| {
                self.field_err(
                    e,
                    format!("read of the {}-byte bitmap at {offset:#x}", b.len()),
                )
            })?;
        }
        let words = b
            .chunks_exact(8)
            .map(|c| u64::from_le_bytes(c.try_into().unwrap()))
            .collect();
        Ok(DirtyBitmap {
            copied,
            offset,
            words,
        })
    }

    /// Saves the device state to `out` (the raw stream, as the device
    /// produces it): RUNNING (from NONE) → MIGRATION_SETUP →
    /// MIGRATION_PRECOPY for up to `precopy_iterations` passes (each reads
    /// chunks until get buffer returns 0; after each pass but the last,
    /// `between` runs and pre-copy ends once `pending.compatible <=
    /// precopy_target`) → MIGRATION_STOPNCOPY, read until get buffer
    /// returns 0, check that nothing is pending → MIGRATION_SAVE_COMPLETED.
    ///
    /// The device must be in NONE, RUNNING, MIGRATION_FAILED or
    /// MIGRATION_CANCELLED. On an error after the save began, the device is
    /// moved to MIGRATION_FAILED (it then runs as before) and the first
    /// error is returned.
    pub fn save_to(&self, out: &mut dyn Write, opts: SaveOptions<'_>) -> Result<SaveReport> {
        let start = self.device_state()?;
        match start {
            State::None => self.set_state(State::Running)?,
            State::Running | State::Failed | State::Cancelled => {}
            s => {
                return Err(Error::Invalid(format!(
                    "save needs {} in NONE, RUNNING, MIGRATION_FAILED or MIGRATION_CANCELLED; \
                     it is in {s}",
                    self.uuid()
                )))
            }
        }
        let r = self.save_inner(out, opts);
        if r.is_err() && self.device_state().is_ok_and(is_saving_or_done) {
            let _ = self.set_state(State::Failed);
        }
        r
    }

    fn save_inner(&self, out: &mut dyn Write, mut opts: SaveOptions<'_>) -> Result<SaveReport> {
        let mut rep = SaveReport::default();
        let mut buf = Vec::new();
        self.set_threshold(opts.threshold)?;
        self.set_state(State::Setup)?;
        let mut drain =
            |state: State, rep: &mut SaveReport, opts: &mut SaveOptions| -> Result<u64> {
                let mut n = 0u64;
                loop {
                    let len = self.get_buffer(&mut buf)?;
                    if len == 0 {
                        return Ok(n);
                    }
                    if let Some(cb) = opts.on_chunk.as_mut() {
                        cb(state, len)?;
                    }
                    out.write_all(&buf).map_err(|e| Error::Io {
                        what: format!("write of a {len}-byte chunk of the stream"),
                        source: e,
                    })?;
                    n += len as u64;
                    rep.chunks += 1;
                    rep.max_chunk = rep.max_chunk.max(len as u64);
                }
            };
        if opts.precopy_iterations > 0 {
            self.set_state(State::PreCopy)?;
            for pass in 1..=opts.precopy_iterations {
                rep.precopy_bytes += drain(State::PreCopy, &mut rep, &mut opts)?;
                rep.precopy_iterations = pass;
                if pass == opts.precopy_iterations {
                    break;
                }
                if let Some(cb) = opts.between.as_mut() {
                    let p = self.pending()?;
                    cb(pass, &p)?;
                }
                // What the device dirtied since the pass: worth another one?
                if self.pending()?.compatible <= opts.precopy_target {
                    break;
                }
            }
        }
        let t0 = Instant::now();
        self.set_state(State::StopNCopy)?;
        rep.stop_bytes = drain(State::StopNCopy, &mut rep, &mut opts)?;
        let p = self.pending()?;
        if p.total() != 0 {
            return Err(Error::Invalid(format!(
                "MIGRATION_STOPNCOPY: get buffer returned 0 but {} bytes are pending ({p})",
                p.total()
            )));
        }
        self.set_state(State::SaveCompleted)?;
        rep.downtime = t0.elapsed();
        rep.bytes = rep.precopy_bytes + rep.stop_bytes;
        out.flush().map_err(|e| Error::Io {
            what: "flush of the stream".into(),
            source: e,
        })?;
        Ok(rep)
    }

    /// Restores the device from a stream read from `input`, in chunks of
    /// `chunk_size` bytes (at most the data area; the last may be shorter),
    /// each written at the start of the data area: MIGRATION_RESUME →
    /// set buffer per chunk → MIGRATION_RESUME_COMPLETED → RUNNING.
    ///
    /// The device must be in NONE, RUNNING, MIGRATION_FAILED or
    /// MIGRATION_CANCELLED. On an error after RESUME, the device is moved
    /// to MIGRATION_FAILED (power-on state) and the first error is returned.
    pub fn restore_from(&self, input: &mut dyn Read, chunk_size: usize) -> Result<RestoreReport> {
        self.restore_with(input, &mut |_| chunk_size)
    }

    /// [`Device::restore_from`] with a chunk size chosen per chunk:
    /// `next_chunk(pos)` gets the stream position of the chunk.
    pub fn restore_with(
        &self,
        input: &mut dyn Read,
        next_chunk: &mut dyn FnMut(u64) -> usize,
    ) -> Result<RestoreReport> {
        let r = self.migration_region()?.clone();
        let start = self.device_state()?;
        if !matches!(
            start,
            State::None | State::Running | State::Failed | State::Cancelled
        ) {
            return Err(Error::Invalid(format!(
                "restore needs {} in NONE, RUNNING, MIGRATION_FAILED or MIGRATION_CANCELLED; it \
                 is in {start}",
                self.uuid()
            )));
        }
        self.set_state(State::Resume)?;
        let res = (|| {
            let mut rep = RestoreReport::default();
            let mut buf = Vec::new();
            loop {
                let want = next_chunk(rep.bytes);
                if want == 0 || want as u64 > r.data_len {
                    return Err(Error::Invalid(format!(
                        "chunk size {want} is not in 1..={} (the data area)",
                        r.data_len
                    )));
                }
                buf.resize(want, 0);
                let n = read_full(input, &mut buf)?;
                if n == 0 {
                    break;
                }
                self.set_buffer(&buf[..n], r.data_offset)?;
                rep.bytes += n as u64;
                rep.chunks += 1;
                if n < want {
                    break;
                }
            }
            self.set_state(State::ResumeCompleted)?;
            self.set_state(State::Running)?;
            Ok(rep)
        })();
        if res.is_err()
            && self
                .device_state()
                .is_ok_and(|s| matches!(s, State::Resume | State::ResumeCompleted))
        {
            let _ = self.set_state(State::Failed);
        }
        res
    }
}

fn is_saving_or_done(s: State) -> bool {
    is_saving(s) || s == State::SaveCompleted
}

/// Reads until `buf` is full or EOF; returns the byte count.
fn read_full(input: &mut dyn Read, buf: &mut [u8]) -> Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match input.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => {
                return Err(Error::Io {
                    what: "read of the stream".into(),
                    source: e,
                })
            }
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    const HEADER: &str = include_str!("../../../include/vfio_migration.h");
    const HEADER_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../include");

    /// Evaluates a macro body: integers, names of earlier macros, `<<`,
    /// `+` and parentheses (all the header uses).
    fn eval(expr: &str, defs: &HashMap<String, u64>) -> u64 {
        fn toks(s: &str) -> Vec<String> {
            let mut v = Vec::new();
            let mut cur = String::new();
            let mut chars = s.chars().peekable();
            while let Some(c) = chars.next() {
                if c.is_alphanumeric() || c == '_' {
                    cur.push(c);
                    continue;
                }
                if !cur.is_empty() {
                    v.push(std::mem::take(&mut cur));
                }
                match c {
                    '<' => {
                        assert_eq!(chars.next(), Some('<'), "only << is supported in {s:?}");
                        v.push("<<".into());
                    }
                    '(' | ')' | '+' => v.push(c.to_string()),
                    c if c.is_whitespace() => {}
                    _ => panic!("unsupported character {c:?} in {s:?}"),
                }
            }
            if !cur.is_empty() {
                v.push(cur);
            }
            v
        }
        // expr := sum ('<<' sum)? ; sum := atom ('+' atom)* ; atom := num | name | '(' expr ')'
        fn atom(t: &[String], i: &mut usize, d: &HashMap<String, u64>) -> u64 {
            let tok = &t[*i];
            *i += 1;
            if tok == "(" {
                let v = shift(t, i, d);
                assert_eq!(t[*i], ")");
                *i += 1;
                v
            } else if let Some(h) = tok.strip_prefix("0x") {
                u64::from_str_radix(h, 16).unwrap()
            } else if tok.chars().all(|c| c.is_ascii_digit()) {
                tok.parse().unwrap()
            } else {
                *d.get(tok).unwrap_or_else(|| panic!("unknown name {tok}"))
            }
        }
        fn sum(t: &[String], i: &mut usize, d: &HashMap<String, u64>) -> u64 {
            let mut v = atom(t, i, d);
            while *i < t.len() && t[*i] == "+" {
                *i += 1;
                v += atom(t, i, d);
            }
            v
        }
        fn shift(t: &[String], i: &mut usize, d: &HashMap<String, u64>) -> u64 {
            let mut v = sum(t, i, d);
            while *i < t.len() && t[*i] == "<<" {
                *i += 1;
                v <<= sum(t, i, d);
            }
            v
        }
        let t = toks(expr);
        let mut i = 0;
        let v = shift(&t, &mut i, defs);
        assert_eq!(i, t.len(), "trailing tokens in {expr:?}");
        v
    }

    /// The header without comments, with continuation lines joined.
    fn header_lines() -> Vec<String> {
        let mut s = String::new();
        let mut rest = HEADER;
        while let Some(i) = rest.find("/*") {
            s.push_str(&rest[..i]);
            let j = rest[i..].find("*/").expect("closed comment");
            rest = &rest[i + j + 2..];
        }
        s.push_str(rest);
        s.replace("\\\n", " ").lines().map(str::to_string).collect()
    }

    /// `#define NAME VALUE` with a numeric value, evaluated.
    fn defines() -> HashMap<String, u64> {
        let mut d = HashMap::new();
        for l in header_lines() {
            let Some(rest) = l.trim().strip_prefix("#define") else {
                continue;
            };
            let mut it = rest.trim().splitn(2, char::is_whitespace);
            let name = it.next().unwrap().to_string();
            let Some(body) = it.next().map(str::trim).filter(|b| !b.is_empty()) else {
                continue; // include guards
            };
            let v = eval(body, &d);
            d.insert(name, v);
        }
        d
    }

    /// The members of the struct, dotted (`pending.compatible`), with their
    /// packed offsets and sizes.
    fn struct_fields() -> Vec<(String, u64, u64)> {
        let lines = header_lines();
        let start = lines
            .iter()
            .position(|l| l.trim() == "struct vfio_device_migration_info {")
            .expect("struct in the header");
        let mut out = Vec::new();
        let mut off = 0;
        let mut inner: Vec<(String, u64, u64)> = Vec::new();
        let mut in_sub = false;
        for l in &lines[start + 1..] {
            let l = l.trim();
            if l.is_empty() {
                continue;
            }
            if l == "struct {" {
                in_sub = true;
                inner.clear();
            } else if let Some(name) = l.strip_prefix("} ").and_then(|r| r.strip_suffix(';')) {
                if in_sub {
                    in_sub = false;
                    for (n, o, w) in inner.drain(..) {
                        out.push((format!("{name}.{n}"), o, w));
                    }
                } else {
                    assert_eq!(name, "__attribute__((packed))", "the struct is packed");
                    return out;
                }
            } else {
                let (ty, name) = l.split_once(' ').expect("type and name");
                let w = match ty {
                    "__u32" => 4,
                    "__u64" => 8,
                    _ => panic!("unexpected type {ty}"),
                };
                let name = name.trim().trim_end_matches(';').to_string();
                if in_sub {
                    inner.push((name, off, w));
                } else {
                    out.push((name, off, w));
                }
                off += w;
            }
        }
        panic!("struct not closed");
    }

    #[test]
    fn header_defines_match() {
        let d = defines();
        let want: &[(&str, u64)] = &[
            ("VFIO_MIG_REGION_TYPE", VFIO_REGION_TYPE_MIGRATION as u64),
            (
                "VFIO_MIG_REGION_SUBTYPE",
                VFIO_REGION_SUBTYPE_MIGRATION as u64,
            ),
            (
                "VFIO_REGION_TYPE_MIGRATION",
                VFIO_REGION_TYPE_MIGRATION as u64,
            ),
            (
                "VFIO_REGION_SUBTYPE_MIGRATION",
                VFIO_REGION_SUBTYPE_MIGRATION as u64,
            ),
            ("VFIO_MIG_INFO_SIZE", INFO_SIZE),
            ("VFIO_MIG_REGION_DATA_OFFSET", DATA_OFFSET),
            ("VFIO_MIG_DEFAULT_DATA_LEN", DEFAULT_DATA_LEN),
            ("VFIO_MIG_DEFAULT_BITMAP_LEN", DEFAULT_BITMAP_LEN),
            ("VFIO_MIG_DEFAULT_BITMAP_OFFSET", DEFAULT_BITMAP_OFFSET),
            ("VFIO_MIG_DEFAULT_REGION_SIZE", DEFAULT_REGION_SIZE),
            ("VFIO_MIG_DIRTY_PAGE_SIZE", DIRTY_PAGE_SIZE),
            ("VFIO_MIG_NUM_STATES", NUM_STATES as u64),
        ];
        for (name, v) in want {
            assert_eq!(d.get(*name), Some(v), "#define {name}");
        }
        for f in Field::ALL {
            assert_eq!(
                d.get(f.header_macro()),
                Some(&f.offset()),
                "#define {} (offset of {})",
                f.header_macro(),
                f.name()
            );
        }
        // Nothing in the header that the Rust side does not know.
        let known: Vec<&str> = want
            .iter()
            .map(|(n, _)| *n)
            .chain(Field::ALL.iter().map(|f| f.header_macro()))
            .collect();
        for name in d.keys() {
            assert!(
                known.contains(&name.as_str()),
                "#define {name} is not mirrored in Rust"
            );
        }
    }

    #[test]
    fn header_struct_matches() {
        let fields = struct_fields();
        let names: Vec<&str> = fields.iter().map(|(n, _, _)| n.as_str()).collect();
        let want: Vec<&str> = Field::ALL.iter().map(|f| f.name()).collect();
        assert_eq!(names, want, "struct members in order");
        for ((name, off, w), f) in fields.iter().zip(Field::ALL) {
            assert_eq!(*off, f.offset(), "offset of {name}");
            assert_eq!(*w, f.width() as u64, "size of {name}");
        }
        let (_, last_off, last_w) = fields.last().unwrap();
        assert_eq!(last_off + last_w, INFO_SIZE, "sizeof the struct");
    }

    #[test]
    fn header_states_match() {
        let lines = header_lines();
        let start = lines
            .iter()
            .position(|l| l.trim() == "enum {")
            .expect("enum");
        let names: Vec<String> = lines[start + 1..]
            .iter()
            .map(|l| l.trim())
            .take_while(|l| *l != "};")
            .filter(|l| !l.is_empty())
            .map(|l| l.trim_end_matches(',').to_string())
            .collect();
        let want: Vec<String> = State::ALL.iter().map(|s| s.c_name()).collect();
        assert_eq!(names, want, "enum members (values 0..10 in order)");
        for (i, s) in State::ALL.iter().enumerate() {
            assert_eq!(s.raw(), i as u32);
            assert_eq!(State::from_raw(i as u32), Some(*s));
        }
        assert_eq!(State::from_raw(NUM_STATES), None);
        assert_eq!(State::from_raw(u32::MAX), None);
    }

    fn cc(src: &str, defines: &[&str]) -> std::process::Output {
        let dir = std::env::temp_dir().join(format!("vfio-mig-hdr-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let file = dir.join(format!("t{n}.c"));
        std::fs::write(&file, src).unwrap();
        let mut cmd = std::process::Command::new(std::env::var("CC").unwrap_or("cc".into()));
        cmd.args([
            "-std=c11",
            "-Wall",
            "-Wextra",
            "-Werror",
            "-pedantic",
            "-fsyntax-only",
        ])
        .arg("-I")
        .arg(HEADER_DIR);
        for d in defines {
            cmd.arg(format!("-D{d}"));
        }
        let out = cmd
            .arg(&file)
            .output()
            .expect("run cc (the C compiler Rust links with)");
        let _ = std::fs::remove_file(&file);
        let _ = std::fs::remove_dir(&dir); // fails while other tests use it
        out
    }

    #[test]
    fn header_compiles_with_layout() {
        let mut src = String::from("#include <stddef.h>\n#include \"vfio_migration.h\"\n");
        src += "#define S struct vfio_device_migration_info\n";
        src += &format!("_Static_assert(sizeof(S) == {INFO_SIZE}, \"size\");\n");
        for f in Field::ALL {
            src += &format!(
                "_Static_assert(offsetof(S, {n}) == {o} && {m} == {o} && sizeof(((S *)0)->{n}) \
                 == {w}, \"{n}\");\n",
                n = f.name(),
                o = f.offset(),
                m = f.header_macro(),
                w = f.width()
            );
        }
        for s in State::ALL {
            src += &format!(
                "_Static_assert({} == {}, \"state\");\n",
                s.c_name(),
                s.raw()
            );
        }
        src += &format!(
            "_Static_assert(VFIO_REGION_TYPE_MIGRATION == {}u && VFIO_REGION_SUBTYPE_MIGRATION \
             == {}, \"type\");\n",
            VFIO_REGION_TYPE_MIGRATION, VFIO_REGION_SUBTYPE_MIGRATION
        );
        let out = cc(&src, &[]);
        assert!(
            out.status.success(),
            "the header with layout checks does not compile:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    #[test]
    fn header_refuses_linux_vfio_h() {
        // With <linux/vfio.h> first, the full header stops with its #error;
        // with VFIO_MIGRATION_CONSTANTS_ONLY it gives the VFIO_MIG_* names.
        let both = "#include <linux/vfio.h>\n#include \"vfio_migration.h\"\n";
        let out = cc(both, &[]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success(),
            "linux/vfio.h + vfio_migration.h compiled"
        );
        assert!(
            err.contains("VFIO_MIGRATION_CONSTANTS_ONLY"),
            "the failure is not our #error:\n{err}"
        );
        let only = format!(
            "#include <linux/vfio.h>\n#include \"vfio_migration.h\"\n\
             _Static_assert(VFIO_MIG_REGION_TYPE == {}u, \"t\");\n\
             _Static_assert(VFIO_MIG_OFF_DIRTY_COPIED == 68, \"c\");\n\
             _Static_assert(sizeof(struct vfio_region_info_cap_type) == 16, \"linux/vfio.h\");\n",
            VFIO_REGION_TYPE_MIGRATION
        );
        let out = cc(&only, &["VFIO_MIGRATION_CONSTANTS_ONLY"]);
        assert!(
            out.status.success(),
            "constants-only mode does not compile with linux/vfio.h:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    #[test]
    fn abi_doc_examples_compile() {
        // The C blocks of Documentation/migration-abi.rst, against the header.
        let doc = include_str!("../../../Documentation/migration-abi.rst");
        let mut blocks = Vec::new();
        let mut lines = doc.lines().peekable();
        while let Some(l) = lines.next() {
            if l.trim() != ".. code-block:: c" {
                continue;
            }
            let mut code = String::new();
            while let Some(l) = lines.peek() {
                if !l.is_empty() && !l.starts_with("   ") {
                    break;
                }
                code += l.strip_prefix("   ").unwrap_or(l);
                code.push('\n');
                lines.next();
            }
            blocks.push(code);
        }
        assert_eq!(blocks.len(), 2, "C blocks in migration-abi.rst");
        for b in &blocks {
            let out = cc(b, &[]);
            assert!(
                out.status.success(),
                "a C block of migration-abi.rst does not compile:\n{}\n{b}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }

    #[test]
    fn fields_cover_the_struct() {
        let mut end = 0;
        for f in Field::ALL {
            assert_eq!(f.offset(), end, "{f} follows the previous field");
            end += f.width() as u64;
        }
        assert_eq!(end, INFO_SIZE);
        let outputs: Vec<Field> = Field::ALL.into_iter().filter(|f| !f.writable()).collect();
        assert_eq!(
            outputs,
            [
                Field::PrecopyOnly,
                Field::Compatible,
                Field::PostcopyOnly,
                Field::DirtyCopied
            ]
        );
    }

    #[test]
    fn names() {
        assert_eq!(State::StopNCopy.to_string(), "MIGRATION_STOPNCOPY");
        assert_eq!(
            State::ResumeCompleted.c_name(),
            "VFIO_DEVICE_STATE_MIGRATION_RESUME_COMPLETED"
        );
        assert_eq!(state_name(3), "MIGRATION_PRECOPY");
        assert_eq!(state_name(10), "10 (not a state)");
        let e = Error::Migration {
            what: "get buffer (read of data.size at migration region 9 offset 0x2c) in state \
                   RUNNING"
                .into(),
            errno: libc::EINVAL,
        };
        assert_eq!(e.errno(), Some(libc::EINVAL));
        assert!(e
            .to_string()
            .ends_with("in state RUNNING failed: EINVAL (Invalid argument)"));
    }

    #[test]
    fn region_layout() {
        let info = RegionInfo {
            index: 9,
            argsz: 48,
            flags: vfio::VFIO_REGION_INFO_FLAG_READ
                | vfio::VFIO_REGION_INFO_FLAG_WRITE
                | vfio::VFIO_REGION_INFO_FLAG_CAPS,
            cap_offset: 32,
            size: DEFAULT_REGION_SIZE,
            offset: 9 << 40,
            caps: Vec::new(),
        };
        let r = MigrationRegion::from_info(info.clone()).unwrap();
        assert_eq!(
            (r.data_offset, r.data_len, r.bitmap_offset, r.bitmap_len),
            (0x1000, 0x10_0000, 0x10_1000, 0x1_0000)
        );
        let small = RegionInfo {
            size: 0x1000,
            ..info.clone()
        };
        assert!(MigrationRegion::from_info(small).is_err());
        let ro = RegionInfo {
            flags: vfio::VFIO_REGION_INFO_FLAG_READ,
            ..info
        };
        assert!(MigrationRegion::from_info(ro).is_err());
    }

    #[test]
    fn pending_total() {
        let p = Pending {
            precopy_only: 32,
            compatible: 64 * 4112,
            postcopy_only: 328,
        };
        assert_eq!(p.total(), 32 + 64 * 4112 + 328);
        assert_eq!(
            p.to_string(),
            "precopy_only 32, compatible 263168, postcopy_only 328"
        );
    }
}
