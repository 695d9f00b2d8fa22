// SPDX-License-Identifier: GPL-2.0
//! Guest RAM for DMA tests: a memfd mapped shared into this process.
//!
//! The device may read and write these pages at any time once they are
//! mapped for DMA, so the memory is never handed out as a Rust reference;
//! it is accessed by copies ([`GuestMemory::read_at`], [`GuestMemory::write_at`]).

use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use crate::error::{Error, Result};

/// An inaccessible page after each mapping, as QEMU keeps after a RAM
/// block (`qemu_ram_mmap`): an overrun faults instead of reaching the next
/// mapping, and two guest memories of the same size are never an exact
/// multiple of it apart. Under TCG that matters: at congruent addresses a
/// copy between them thrashes QEMU's direct-mapped software TLB
/// (Documentation/testing.rst: the RAM copy took twice as long).
const GUARD: usize = 4096;

/// A memfd of `len` bytes, mapped read-write and shared, followed by a
/// guard page.
#[derive(Debug)]
pub struct GuestMemory {
    ptr: *mut u8,
    len: usize,
    fd: OwnedFd,
}

// SAFETY: the mapping is plain shared memory owned by this object; all
// accesses go through raw copies, so it may be used from any thread.
unsafe impl Send for GuestMemory {}
// SAFETY: as above; concurrent copies race only on the bytes, as device DMA
// does, never on Rust references.
unsafe impl Sync for GuestMemory {}

impl GuestMemory {
    /// Creates and maps `len` bytes (rounded up to the page size) of zeroed memory.
    pub fn new(name: &str, len: usize) -> Result<Self> {
        let len = len.div_ceil(4096).max(1) * 4096;
        let cname =
            CString::new(name).map_err(|_| Error::Invalid("memfd name has a NUL".into()))?;
        // SAFETY: cname is a valid NUL-terminated string.
        let raw = unsafe { libc::memfd_create(cname.as_ptr(), libc::MFD_CLOEXEC) };
        if raw < 0 {
            return Err(Error::last_sys(format!("memfd_create({name})")));
        }
        // SAFETY: raw is a new fd that only we own.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        // SAFETY: plain syscall on our fd.
        if unsafe { libc::ftruncate(fd.as_raw_fd(), len as libc::off_t) } < 0 {
            return Err(Error::last_sys(format!(
                "ftruncate of memfd {name} to {len}"
            )));
        }
        // SAFETY: a new private reservation of `len + GUARD` bytes, no
        // access; the kernel picks the address, so no existing memory is
        // affected.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len + GUARD,
                libc::PROT_NONE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(Error::last_sys(format!(
                "reservation of {len} bytes and a guard page for memfd {name}"
            )));
        }
        // SAFETY: replaces the first `len` bytes of the reservation above,
        // which only this function knows of, with a shared mapping of our
        // fd; the guard page after it stays.
        let ptr = unsafe {
            libc::mmap(
                base,
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_FIXED,
                fd.as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            let err = Error::last_sys(format!("mmap of memfd {name} ({len} bytes)"));
            // SAFETY: the reservation made above, which nothing uses.
            unsafe { libc::munmap(base, len + GUARD) };
            return Err(err);
        }
        Ok(GuestMemory {
            ptr: ptr.cast(),
            len,
            fd,
        })
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Always false: a mapping has at least one page.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// Start address of the mapping (the `vaddr` of a DMA map).
    pub fn as_ptr(&self) -> *mut u8 {
        self.ptr
    }

    /// The memfd.
    pub fn fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    fn check(&self, offset: usize, len: usize) -> Result<()> {
        match offset.checked_add(len) {
            Some(end) if end <= self.len => Ok(()),
            _ => Err(Error::Invalid(format!(
                "guest memory access of {len} bytes at {offset:#x} is outside its {} bytes",
                self.len
            ))),
        }
    }

    /// Copies bytes out of guest memory.
    pub fn read_at(&self, offset: usize, buf: &mut [u8]) -> Result<()> {
        self.check(offset, buf.len())?;
        // SAFETY: the range is inside our live mapping (checked above) and
        // cannot overlap `buf`, which is Rust-owned memory.
        unsafe { std::ptr::copy_nonoverlapping(self.ptr.add(offset), buf.as_mut_ptr(), buf.len()) };
        Ok(())
    }

    /// Copies bytes into guest memory.
    pub fn write_at(&self, offset: usize, buf: &[u8]) -> Result<()> {
        self.check(offset, buf.len())?;
        // SAFETY: as in read_at, in the other direction.
        unsafe { std::ptr::copy_nonoverlapping(buf.as_ptr(), self.ptr.add(offset), buf.len()) };
        Ok(())
    }
}

impl GuestMemory {
    /// Faults in every page now, as a guest that has touched all its RAM:
    /// the first copy or DMA to a page then does not pay for allocating it
    /// (under TCG that cost dominates a full copy). The contents do not
    /// change. Call it before a device or another thread writes the memory:
    /// where `madvise(MADV_POPULATE_WRITE)` is missing (a kernel without
    /// `CONFIG_ADVISE_SYSCALLS`, such as the test kernel), each page is
    /// touched by writing back one byte it holds.
    pub fn populate(&self) -> Result<()> {
        // SAFETY: the range is exactly our mapping; MADV_POPULATE_WRITE
        // faults its pages in for writing and changes no byte.
        if unsafe { libc::madvise(self.ptr.cast(), self.len, libc::MADV_POPULATE_WRITE) } == 0 {
            return Ok(());
        }
        let errno = crate::error::last_errno();
        if errno != libc::ENOSYS && errno != libc::EINVAL {
            return Err(Error::Sys {
                what: format!(
                    "madvise(MADV_POPULATE_WRITE) of {} bytes of guest memory",
                    self.len
                ),
                errno,
            });
        }
        self.touch_every_page();
        Ok(())
    }

    /// The fallback of [`GuestMemory::populate`].
    fn touch_every_page(&self) {
        for off in (0..self.len).step_by(4096) {
            // SAFETY: off < len, inside our live mapping; volatile so that
            // the write (which faults the page in) is not optimised away.
            // Nothing else writes the memory yet (see above), so writing
            // back the byte read changes nothing.
            unsafe {
                let p = self.ptr.add(off);
                std::ptr::write_volatile(p, std::ptr::read_volatile(p));
            }
        }
    }

    /// Copies `[offset, offset + len)` of this memory to the same range of
    /// `dst` (live migration: source RAM to destination RAM). The source may
    /// be written meanwhile (device DMA, other threads): the copy then sees
    /// each byte old or new, as a DMA read would.
    pub fn copy_range_to(&self, dst: &GuestMemory, offset: usize, len: usize) -> Result<()> {
        self.check(offset, len)?;
        dst.check(offset, len)?;
        // SAFETY: both ranges are inside live mappings (checked above). They
        // are two mappings of distinct memfds, or the same range of one
        // mapping when dst is self; `copy` (memmove) is correct in both cases.
        unsafe { std::ptr::copy(self.ptr.add(offset), dst.ptr.add(offset), len) };
        Ok(())
    }

    /// Compares this memory with `other` (same length), chunk by chunk, and
    /// returns the first differing byte offset and how many 4 KiB pages
    /// differ, or `None` when they are equal.
    pub fn compare(&self, other: &GuestMemory) -> Result<Option<MemoryDiff>> {
        if self.len != other.len {
            return Err(Error::Invalid(format!(
                "cannot compare guest memories of {} and {} bytes",
                self.len, other.len
            )));
        }
        const CHUNK: usize = 1 << 20;
        let mut a = vec![0u8; CHUNK.min(self.len)];
        let mut b = vec![0u8; CHUNK.min(self.len)];
        let mut diff: Option<MemoryDiff> = None;
        let mut offset = 0;
        while offset < self.len {
            let n = CHUNK.min(self.len - offset);
            self.read_at(offset, &mut a[..n])?;
            other.read_at(offset, &mut b[..n])?;
            for (page, (pa, pb)) in a[..n].chunks(4096).zip(b[..n].chunks(4096)).enumerate() {
                if let Some(i) = first_mismatch(pa, pb) {
                    let page_index = offset / 4096 + page;
                    let d = diff.get_or_insert(MemoryDiff {
                        first_offset: page_index * 4096 + i,
                        pages: 0,
                        first_pages: Vec::new(),
                    });
                    d.pages += 1;
                    if d.first_pages.len() < MemoryDiff::LISTED {
                        d.first_pages.push(page_index);
                    }
                }
            }
            offset += n;
        }
        Ok(diff)
    }
}

/// Where two guest memories differ ([`GuestMemory::compare`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemoryDiff {
    /// The first differing byte.
    pub first_offset: usize,
    /// How many 4 KiB pages hold a difference.
    pub pages: usize,
    /// The first [`MemoryDiff::LISTED`] of those pages, by index.
    pub first_pages: Vec<usize>,
}

impl MemoryDiff {
    /// How many differing pages [`MemoryDiff::first_pages`] lists at most.
    pub const LISTED: usize = 8;
}

/// The index of the first byte where `a` and `b` differ (also when one is
/// longer), or `None` when they are equal.
pub fn first_mismatch(a: &[u8], b: &[u8]) -> Option<usize> {
    if a == b {
        // memcmp: the common case, fast.
        return None;
    }
    a.iter()
        .zip(b)
        .position(|(x, y)| x != y)
        .or_else(|| (a.len() != b.len()).then(|| a.len().min(b.len())))
}

impl Drop for GuestMemory {
    fn drop(&mut self) {
        // SAFETY: ptr and len + GUARD are exactly the mapping and guard
        // page made in new(), and no reference into them exists outside
        // this object.
        unsafe { libc::munmap(self.ptr.cast(), self.len + GUARD) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_bounds() {
        let m = GuestMemory::new("t", 5000).unwrap();
        assert_eq!(m.len(), 8192);
        let mut b = [1u8; 4];
        m.read_at(8188, &mut b).unwrap();
        assert_eq!(b, [0; 4]);
        m.write_at(4094, b"abcd").unwrap();
        m.read_at(4094, &mut b).unwrap();
        assert_eq!(&b, b"abcd");
        assert!(m.write_at(8190, b"abcd").is_err());
        assert!(m.read_at(usize::MAX, &mut b).is_err());
    }

    #[test]
    fn guard_page_follows_the_mapping() {
        // /proc/self/maps: the page after the memory is mapped without
        // access, and two memories of one size are not a multiple of it
        // apart.
        let a = GuestMemory::new("a", 4 * 4096).unwrap();
        let b = GuestMemory::new("b", 4 * 4096).unwrap();
        let guard = a.as_ptr() as usize + a.len();
        let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
        let line = maps
            .lines()
            .find(|l| {
                let (range, _) = l.split_once(' ').unwrap();
                let (lo, hi) = range.split_once('-').unwrap();
                let lo = usize::from_str_radix(lo, 16).unwrap();
                let hi = usize::from_str_radix(hi, 16).unwrap();
                (lo..hi).contains(&guard)
            })
            .expect("the guard page is mapped");
        assert!(line.split_whitespace().nth(1) == Some("---p"), "{line}");
        let apart = (a.as_ptr() as usize).abs_diff(b.as_ptr() as usize);
        assert_ne!(apart % a.len(), 0, "{apart:#x} apart");
    }

    #[test]
    fn copy_and_compare() {
        let a = GuestMemory::new("a", 3 * 4096).unwrap();
        let b = GuestMemory::new("b", 3 * 4096).unwrap();
        b.populate().unwrap();
        assert_eq!(a.compare(&b).unwrap(), None);
        a.write_at(4100, b"xy").unwrap();
        a.write_at(2 * 4096 + 7, b"z").unwrap();
        let d = a.compare(&b).unwrap().unwrap();
        assert_eq!((d.first_offset, d.pages), (4100, 2));
        assert_eq!(d.first_pages, [1, 2]);
        a.copy_range_to(&b, 4096, 4096).unwrap();
        let d = a.compare(&b).unwrap().unwrap();
        assert_eq!((d.first_offset, d.pages), (2 * 4096 + 7, 1));
        a.copy_range_to(&b, 0, 3 * 4096).unwrap();
        assert_eq!(a.compare(&b).unwrap(), None);
        assert!(a.copy_range_to(&b, 4096, 2 * 4096 + 1).is_err());
        let small = GuestMemory::new("s", 4096).unwrap();
        assert!(a.copy_range_to(&small, 0, 8192).is_err());
        assert!(a.compare(&small).is_err());
    }

    #[test]
    fn populating_keeps_the_contents() {
        let m = GuestMemory::new("p", 3 * 4096).unwrap();
        m.write_at(4096, b"kept").unwrap();
        m.write_at(2 * 4096 + 9, b"too").unwrap();
        let twin = GuestMemory::new("q", 3 * 4096).unwrap();
        m.copy_range_to(&twin, 0, 3 * 4096).unwrap();
        m.touch_every_page();
        m.populate().unwrap();
        assert_eq!(m.compare(&twin).unwrap(), None);
    }

    #[test]
    fn mismatch_positions() {
        assert_eq!(first_mismatch(b"abc", b"abc"), None);
        assert_eq!(first_mismatch(b"abc", b"abd"), Some(2));
        assert_eq!(first_mismatch(b"abc", b"ab"), Some(2));
        assert_eq!(first_mismatch(b"", b""), None);
    }
}
