// SPDX-License-Identifier: GPL-2.0
//! The migration region's data and bitmap areas mapped into this process
//! (`VFIO_REGION_INFO_CAP_SPARSE_MMAP`, Documentation/migration-abi.rst,
//! "Sparse mmap"): chunks and dirty bitmaps are then copied from and to
//! memory instead of going through `pread`/`pwrite`.
//!
//! A device maps its areas once, on first use ([`Device::mig_mapping`]),
//! and unmaps them when it is dropped.

use std::ptr::NonNull;

use crate::device::Device;
use crate::error::{Error, Result};
use crate::migration::MigrationRegion;

/// How the migration-region transfer moves chunks and dirty bitmaps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AreaAccess {
    /// Through the mapped data and bitmap areas when the region offers
    /// them, else `pread`/`pwrite`.
    #[default]
    MmapIfOffered,
    /// Always `pread`/`pwrite`.
    ReadWrite,
}

/// One shared mapping of part of the device file; unmapped on drop.
#[derive(Debug)]
struct Area {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: The mapping is plain shared memory; `Area` only copies bytes in
// and out of it, which any thread may do.
unsafe impl Send for Area {}
// SAFETY: As above: no method relies on the calling thread.
unsafe impl Sync for Area {}

impl Area {
    /// Maps `len` bytes of the device file at file position `pos`, shared,
    /// readable, and writable if `write`.
    fn map(dev: &Device, pos: u64, len: u64, write: bool) -> Result<Self> {
        let what = || format!("mmap of {len:#x} bytes of {} at {pos:#x}", dev.uuid());
        let len_usize = usize::try_from(len).map_err(|_| Error::Invalid(what()))?;
        let off = libc::off_t::try_from(pos).map_err(|_| Error::Invalid(what()))?;
        let prot = libc::PROT_READ | if write { libc::PROT_WRITE } else { 0 };
        // SAFETY: A new mapping at an address the kernel picks; nothing in
        // this process is at that address yet, and the fd is open.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len_usize,
                prot,
                libc::MAP_SHARED,
                dev.fd(),
                off,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(Error::last_sys(what()));
        }
        let ptr = NonNull::new(ptr.cast::<u8>()).ok_or_else(|| Error::Invalid(what()))?;
        Ok(Area {
            ptr,
            len: len_usize,
        })
    }

    /// `at..at + n` if it lies inside the area.
    fn check(&self, at: usize, n: usize, what: &str) -> Result<()> {
        match at.checked_add(n) {
            Some(end) if end <= self.len => Ok(()),
            _ => Err(Error::Invalid(format!(
                "{what}: {n} bytes at {at:#x} do not fit the mapped {:#x}-byte area",
                self.len
            ))),
        }
    }

    /// Copies the bytes at `at` into `out`.
    fn read(&self, at: usize, out: &mut [u8], what: &str) -> Result<()> {
        self.check(at, out.len(), what)?;
        // SAFETY: `at..at + out.len()` lies inside the mapping (checked), which
        // lives as long as `self`; `out` is a distinct buffer of that length.
        // The device writes the area only during our own accesses of the
        // region, so nothing changes the bytes while they are copied.
        unsafe {
            std::ptr::copy_nonoverlapping(self.ptr.as_ptr().add(at), out.as_mut_ptr(), out.len())
        };
        Ok(())
    }

    /// The `n` little-endian `u64` words at `at` (8-aligned), read in place
    /// one at a time, with no copy of the area.
    fn words(&self, at: usize, n: usize, what: &str) -> Result<impl Iterator<Item = u64> + '_> {
        let len = n.checked_mul(8).ok_or_else(|| {
            Error::Invalid(format!("{what}: {n} words do not fit the address space"))
        })?;
        self.check(at, len, what)?;
        if !at.is_multiple_of(8) {
            return Err(Error::Invalid(format!(
                "{what}: offset {at:#x} in the area is not 8-aligned"
            )));
        }
        // CAST: `at` is 8-aligned and the mapping page-aligned, so `base`
        // is aligned for u64.
        let base = self.ptr.as_ptr().wrapping_add(at).cast::<u64>();
        // Volatile: the device rewrites the area at the next query, which
        // another thread could make while the iterator lives; each word is
        // read once, whole.
        Ok((0..n).map(move |i| {
            // SAFETY: word `i < n` is inside the mapping (`check` above) and
            // aligned; the mapping lives as long as the borrow of `self`.
            let word = unsafe { base.add(i).read_volatile() };
            u64::from_le(word)
        }))
    }

    /// Copies `src` to the bytes at `at` (a writable area).
    fn write(&self, at: usize, src: &[u8], what: &str) -> Result<()> {
        self.check(at, src.len(), what)?;
        // SAFETY: `at..at + src.len()` lies inside the mapping (checked),
        // which is writable (only the data area is written) and lives as
        // long as `self`; `src` is a distinct buffer of that length.
        unsafe {
            std::ptr::copy_nonoverlapping(src.as_ptr(), self.ptr.as_ptr().add(at), src.len())
        };
        Ok(())
    }
}

impl Drop for Area {
    fn drop(&mut self) {
        // SAFETY: The mapping was made by `Area::map` with this address and
        // length, and nothing borrows it once `self` goes.
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.len) };
    }
}

/// The data area (read and write) and the bitmap area (read only) of a
/// device's migration region, mapped.
#[derive(Debug)]
pub struct MigrationMapping {
    data: Area,
    bitmap: Area,
    data_offset: u64,
    bitmap_offset: u64,
}

impl MigrationMapping {
    /// Maps both areas of `r`, the migration region of `dev`.
    fn map(dev: &Device, r: &MigrationRegion) -> Result<Self> {
        let base = r.info.offset;
        Ok(MigrationMapping {
            data: Area::map(dev, base + r.data_offset, r.data_len, true)?,
            bitmap: Area::map(dev, base + r.bitmap_offset, r.bitmap_len, false)?,
            data_offset: r.data_offset,
            bitmap_offset: r.bitmap_offset,
        })
    }

    /// Where region offset `off` falls in an area starting at `start`.
    fn area_offset(off: u64, start: u64, what: &str) -> Result<usize> {
        off.checked_sub(start)
            .and_then(|at| usize::try_from(at).ok())
            .ok_or_else(|| {
                Error::Invalid(format!("{what}: region offset {off:#x} is before the area"))
            })
    }

    /// Copies the data area's bytes at region offset `off` into `out`.
    pub fn read_data(&self, off: u64, out: &mut [u8]) -> Result<()> {
        let what = "read of the mapped data area";
        self.data
            .read(Self::area_offset(off, self.data_offset, what)?, out, what)
    }

    /// Copies `src` into the data area at region offset `off`.
    pub fn write_data(&self, off: u64, src: &[u8]) -> Result<()> {
        let what = "write of the mapped data area";
        self.data
            .write(Self::area_offset(off, self.data_offset, what)?, src, what)
    }

    /// The `n` words of the bitmap area at region offset `off` (where a
    /// dirty query put its bitmap: `data.offset`), read in place: what a
    /// VMM decodes without copying the bitmap out.
    pub fn bitmap_words(&self, off: u64, n: usize) -> Result<impl Iterator<Item = u64> + '_> {
        let what = "in-place read of the mapped bitmap area";
        self.bitmap
            .words(Self::area_offset(off, self.bitmap_offset, what)?, n, what)
    }

    /// Copies the bitmap area's bytes at region offset `off` into `out`.
    pub fn read_bitmap(&self, off: u64, out: &mut [u8]) -> Result<()> {
        let what = "read of the mapped bitmap area";
        self.bitmap
            .read(Self::area_offset(off, self.bitmap_offset, what)?, out, what)
    }
}

impl Device {
    /// The mapped data and bitmap areas of the migration region, mapped on
    /// first use; `None` if the region does not offer them
    /// ([`MigrationRegion::mmap`]).
    pub fn mig_mapping(&self) -> Result<Option<&MigrationMapping>> {
        if let Some(m) = self.mig_mapping.get() {
            return Ok(m.as_ref());
        }
        let r = self.migration_region()?;
        let m = if r.mmap {
            Some(MigrationMapping::map(self, r)?)
        } else {
            None
        };
        // Two threads may both map; one keeps its mapping, the other's goes.
        Ok(self.mig_mapping.get_or_init(|| m).as_ref())
    }

    /// The mapping `access` asks for: [`Device::mig_mapping`], or none.
    pub fn mapping_for(&self, access: AreaAccess) -> Result<Option<&MigrationMapping>> {
        match access {
            AreaAccess::MmapIfOffered => self.mig_mapping(),
            AreaAccess::ReadWrite => Ok(None),
        }
    }
}
