// SPDX-License-Identifier: GPL-2.0
//! The migration region: the 2018 proposal's `struct
//! vfio_device_migration_info` and its actions (Documentation/migration-abi.rst).
//!
//! The numbers and the layout are the module's own
//! ([`crate::abi::migration`], `rust/logic/abi.rs`), which
//! `tools/model` checks against `include/vfio_migration.h`, the C header
//! for VMM authors.
//!
//! On a [`Device`]:
//!
//! * [`Device::migration_region`] finds the region by its
//!   `VFIO_REGION_INFO_CAP_TYPE`;
//! * field access ([`Device::read_field`], [`Device::write_field`], and the
//!   raw [`Device::mig_pread`] / [`Device::mig_pwrite`] for tests);
//! * the actions: [`Device::set_state`], [`Device::pending`],
//!   [`Device::set_threshold`], [`Device::get_buffer`],
//!   [`Device::set_buffer`], [`Device::dirty_bitmap`].
//!
//! The save and restore flows on top of these actions are in
//! [`crate::transfer`]. The stream itself is opaque here (see
//! [`crate::stream`] to look inside).

use std::fmt;

pub use crate::abi::migration::{DeviceState, Field};
use crate::abi::migration::{BITMAP_LEN, DATA_OFFSET, REGION_SUBTYPE, REGION_TYPE};
use crate::abi::GUEST_PAGE_SIZE;
use crate::device::{Device, RegionInfo};
use crate::error::{Error, Result};
use crate::mig_mmap::MigrationMapping;
use crate::uapi::vfio;

impl fmt::Display for Field {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl fmt::Display for DeviceState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A `device_state` value in words: the state's name, or the number.
pub fn state_name(v: u32) -> String {
    match DeviceState::from_raw(v) {
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
    /// The region offers both areas for mmap: `VFIO_REGION_INFO_FLAG_MMAP`
    /// and a `VFIO_REGION_INFO_CAP_SPARSE_MMAP` that lists each of them.
    pub mmap: bool,
}

impl MigrationRegion {
    /// Builds the layout from the region's info. The ABI does not report
    /// how DATA_LEN and BITMAP_LEN split `size - 4096`; the split of the
    /// default module parameters is assumed (256 KiB of bitmap), which
    /// matches every region of the default size.
    pub fn from_info(info: RegionInfo) -> Result<Self> {
        let rw = vfio::VFIO_REGION_INFO_FLAG_READ | vfio::VFIO_REGION_INFO_FLAG_WRITE;
        if info.flags & rw != rw {
            return Err(Error::Invalid(format!(
                "migration region {} has flags {:#x}, not READ|WRITE",
                info.index, info.flags
            )));
        }
        let min = DATA_OFFSET + GUEST_PAGE_SIZE + BITMAP_LEN;
        if info.size < min {
            return Err(Error::Invalid(format!(
                "migration region {} is {:#x} bytes, less than {min:#x} (registers, a data \
                 page and the bitmap area)",
                info.index, info.size
            )));
        }
        let bitmap_len = BITMAP_LEN;
        let data_len = info.size - DATA_OFFSET - bitmap_len;
        let bitmap_offset = DATA_OFFSET + data_len;
        let areas: Vec<(u64, u64)> = info
            .caps
            .iter()
            .filter_map(|c| c.sparse_areas())
            .flatten()
            .collect();
        let mmap = info.flags & vfio::VFIO_REGION_INFO_FLAG_MMAP != 0
            && areas.contains(&(DATA_OFFSET, data_len))
            && areas.contains(&(bitmap_offset, bitmap_len));
        Ok(MigrationRegion {
            info,
            data_offset: DATA_OFFSET,
            data_len,
            bitmap_offset,
            bitmap_len,
            mmap,
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

impl Device {
    /// Finds the migration region: the region whose capability chain has a
    /// `VFIO_REGION_INFO_CAP_TYPE` of ([`VFIO_REGION_TYPE_MIGRATION`],
    /// [`VFIO_REGION_SUBTYPE_MIGRATION`]). Looked up once, then cached.
    pub fn migration_region(&self) -> Result<&MigrationRegion> {
        if let Some(r) = self.migration.get() {
            return Ok(r);
        }
        let info = self.info()?;
        let want = (REGION_TYPE, REGION_SUBTYPE);
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
    pub fn device_state(&self) -> Result<DeviceState> {
        let v = self.device_state_raw()?;
        DeviceState::from_raw(v).ok_or_else(|| {
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
    pub fn set_state(&self, to: DeviceState) -> Result<()> {
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
        self.get_buffer_via(buf, None)
    }

    /// [`Device::get_buffer`], the chunk copied from `map` (the mapped data
    /// area) if given, else read with `pread`.
    pub fn get_buffer_via(
        &self,
        buf: &mut Vec<u8>,
        map: Option<&MigrationMapping>,
    ) -> Result<usize> {
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
        match map {
            Some(m) => m.read_data(off, buf)?,
            None => self.read_region(idx, off, buf).map_err(|e| {
                self.field_err(e, format!("read of the {size}-byte chunk at {off:#x}"))
            })?,
        }
        Ok(size as usize)
    }

    /// Set buffer: writes `chunk` at region offset `at` (inside the data
    /// area), then `data.offset = at`, then `data.size = chunk.len()`, which
    /// hands the chunk to the device.
    pub fn set_buffer(&self, chunk: &[u8], at: u64) -> Result<()> {
        self.set_buffer_via(chunk, at, None)
    }

    /// [`Device::set_buffer`], the chunk copied into `map` (the mapped data
    /// area) if given, else written with `pwrite`.
    pub fn set_buffer_via(
        &self,
        chunk: &[u8],
        at: u64,
        map: Option<&MigrationMapping>,
    ) -> Result<()> {
        let idx = self.mig_index()?;
        if let (Some(m), false) = (map, chunk.is_empty()) {
            m.write_data(at, chunk)?;
        } else if !chunk.is_empty() {
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
        self.dirty_bitmap_via(start, total, None)
    }

    /// [`Device::dirty_bitmap`], the bitmap copied from `map` (the mapped
    /// bitmap area) if given, else read with `pread`.
    pub fn dirty_bitmap_via(
        &self,
        start: u64,
        total: u64,
        map: Option<&MigrationMapping>,
    ) -> Result<DirtyBitmap> {
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
        match map {
            _ if b.is_empty() => {}
            Some(m) => m.read_bitmap(offset, &mut b)?,
            None => self.read_region(idx, offset, &mut b).map_err(|e| {
                self.field_err(
                    e,
                    format!("read of the {}-byte bitmap at {offset:#x}", b.len()),
                )
            })?,
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(DeviceState::StopNCopy.to_string(), "MIGRATION_STOPNCOPY");
        assert_eq!(Field::DirtyStartAddr.to_string(), "dirty_pfns.start_addr");
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
            size: crate::abi::migration::REGION_SIZE,
            offset: 9 << 40,
            caps: Vec::new(),
        };
        let r = MigrationRegion::from_info(info.clone()).unwrap();
        assert_eq!(
            (r.data_offset, r.data_len, r.bitmap_offset, r.bitmap_len),
            (0x1000, 0x10_0000, 0x10_1000, 0x4_0000)
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

    fn sparse_cap(areas: &[(u64, u64)]) -> crate::Capability {
        let mut data = (areas.len() as u32).to_ne_bytes().to_vec();
        data.extend_from_slice(&[0; 4]);
        for (offset, size) in areas {
            data.extend_from_slice(&offset.to_ne_bytes());
            data.extend_from_slice(&size.to_ne_bytes());
        }
        crate::Capability {
            id: vfio::VFIO_REGION_INFO_CAP_SPARSE_MMAP as u16,
            version: 1,
            offset: 48,
            next: 0,
            data,
        }
    }

    #[test]
    fn mmap_offered_only_with_flag_and_both_areas() {
        let rw = vfio::VFIO_REGION_INFO_FLAG_READ | vfio::VFIO_REGION_INFO_FLAG_WRITE;
        let both = [(0x1000, 0x10_0000), (0x10_1000, 0x4_0000)];
        let info = |flags, areas: &[(u64, u64)]| RegionInfo {
            index: 9,
            argsz: 96,
            flags: rw | flags,
            cap_offset: 32,
            size: crate::abi::migration::REGION_SIZE,
            offset: 9 << 40,
            caps: vec![sparse_cap(areas)],
        };
        let mmap = |flags, areas: &[(u64, u64)]| {
            MigrationRegion::from_info(info(flags, areas)).unwrap().mmap
        };
        let flag = vfio::VFIO_REGION_INFO_FLAG_MMAP;
        assert!(mmap(flag, &both));
        assert!(!mmap(0, &both));
        assert!(!mmap(flag, &both[..1]));
        assert!(!mmap(flag, &[(0x1000, 0x1000), (0x10_1000, 0x4_0000)]));
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
