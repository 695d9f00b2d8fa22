// SPDX-License-Identifier: GPL-2.0
//! Guest RAM for DMA tests: a memfd mapped shared into this process.
//!
//! The device may read and write these pages at any time once they are
//! mapped for DMA, so the memory is never handed out as a Rust reference;
//! it is accessed by copies ([`GuestMemory::read_at`], [`GuestMemory::write_at`]).

use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use crate::error::{Error, Result};

/// A memfd of `len` bytes, mapped read-write and shared.
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
        // SAFETY: a new shared mapping of our fd; the kernel picks the address,
        // so no existing memory is affected.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(Error::last_sys(format!(
                "mmap of memfd {name} ({len} bytes)"
            )));
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

impl Drop for GuestMemory {
    fn drop(&mut self) {
        // SAFETY: ptr/len are exactly the mapping created in new(), and no
        // reference into it exists outside this object.
        unsafe { libc::munmap(self.ptr.cast(), self.len) };
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
}
