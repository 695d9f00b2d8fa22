// SPDX-License-Identifier: GPL-2.0

//! Zeroed kernel memory that userspace may map: `vmalloc_user()`.
//!
//! C reference: `srctree/include/linux/vmalloc.h`. The allocation is
//! page granular and flagged `VM_USERMAP`, which `remap_vmalloc_range()`
//! requires. A mapping points at the pages themselves, so the pages stay
//! until the last of the buffer and its [`Mapper`]s goes (the mappings
//! themselves are the owner's business: a device keeps its buffers for its
//! whole life and zeroes them in place).
//!
//! Two handles, because an mmap callback runs with the mm locked while the
//! device model touches the buffer under its own lock, and a read of the
//! buffer into userspace may fault (taking the mm lock) under that lock:
//! the [`Mapper`] maps without the device lock, the [`UserMappable`] is the
//! one handle that reads and writes.

use crate::sys;
use crate::vma::Vma;
use core::ptr::NonNull;
use kernel::error::to_result;
use kernel::page::PAGE_SIZE;
use kernel::prelude::*;
use kernel::sync::Arc;

/// The allocation itself; freed when the last handle goes.
///
/// # Invariants
///
/// `ptr` is the start of a live `vmalloc_user()` allocation of at least
/// `len` bytes, owned by this value and freed only by its `Drop`.
struct Allocation {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: The allocation is plain memory owned by the value; nothing in it
// is tied to a thread.
unsafe impl Send for Allocation {}
// SAFETY: `&Allocation` gives no access to the bytes; the handles below
// decide who reads and writes them.
unsafe impl Sync for Allocation {}

impl Drop for Allocation {
    fn drop(&mut self) {
        // SAFETY: By the type invariant, `ptr` is a live `vmalloc_user()`
        // allocation owned by `self`, freed nowhere else.
        unsafe { sys::vfree(self.ptr.as_ptr().cast()) };
    }
}

/// A zeroed `vmalloc_user()` buffer of `len` bytes, as the kernel reads and
/// writes it.
///
/// Once mapped (by a [`Mapper`]), userspace may read and write the pages at
/// any time, so the slice views see bytes another agent may change: every
/// bit pattern is a valid `u8`, and the device model treats the contents as
/// untrusted input it copies or parses, never as its own state.
///
/// # Invariants
///
/// The only `UserMappable` of its allocation (it is not `Clone`): `&mut
/// self` is exclusive kernel access to the bytes.
pub(crate) struct UserMappable(Arc<Allocation>);

impl UserMappable {
    /// `len` zeroed bytes, in whole pages.
    pub(crate) fn new(len: usize) -> Result<Self> {
        // SAFETY: `vmalloc_user_noprof` takes any size and returns null on
        // failure (`vmalloc_user` is that call under the allocation-
        // profiling hooks).
        let ptr = unsafe { sys::vmalloc_user_noprof(len as _) };
        let ptr = NonNull::new(ptr.cast::<u8>()).ok_or(ENOMEM)?;
        // INVARIANT: a fresh allocation of `len` bytes, owned by nobody
        // else. If `Arc::new` fails, dropping the `Allocation` frees it.
        let alloc = Allocation { ptr, len };
        // INVARIANT: the first and only `UserMappable` of the allocation.
        Ok(Self(Arc::new(alloc, GFP_KERNEL)?))
    }

    /// A handle that maps the buffer into userspace.
    pub(crate) fn mapper(&self) -> Mapper {
        Mapper(self.0.clone())
    }

    /// The buffer, as the device model reads it.
    pub(crate) fn as_slice(&self) -> &[u8] {
        // SAFETY: By the `Allocation` invariant `ptr` is valid for `len`
        // bytes while the `Arc` lives, and zeroed by the allocator, so every
        // byte is initialised. Kernel writes need `&mut self` (type
        // invariant); a mapping may change the bytes, which the type's
        // documentation accepts (any value is a valid `u8`).
        unsafe { core::slice::from_raw_parts(self.0.ptr.as_ptr(), self.0.len) }
    }

    /// The buffer, as the device model writes it.
    pub(crate) fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: Valid and initialised as in `as_slice`; `&mut self` on the
        // only `UserMappable` (type invariant) excludes every other kernel
        // view of the bytes for the slice's life ([`Mapper`]s do not read
        // or write them).
        unsafe { core::slice::from_raw_parts_mut(self.0.ptr.as_ptr(), self.0.len) }
    }
}

/// Maps a [`UserMappable`]'s pages into userspace; never reads or writes
/// them. Keeps the allocation alive.
pub(crate) struct Mapper(Arc<Allocation>);

impl Mapper {
    /// Maps the buffer from byte `offset` (page aligned) into the whole of
    /// `vma`, which must fit inside the buffer (`EINVAL` otherwise).
    pub(crate) fn map(&self, vma: &Vma, offset: usize) -> Result {
        let end = offset.checked_add(vma.len()).ok_or(EINVAL)?;
        if offset % PAGE_SIZE != 0 || end > self.0.len {
            return Err(EINVAL);
        }
        // SAFETY: `vma` is a VMA being set up by an mmap callback (the `Vma`
        // invariant); `ptr` is a `VM_USERMAP` vmalloc allocation (the
        // `Allocation` invariant), and its pages from `offset / PAGE_SIZE`
        // for the VMA's length lie inside it, as just checked. The pages
        // take a reference of their own for the mapping's life.
        to_result(unsafe {
            sys::remap_vmalloc_range(
                vma.as_raw(),
                self.0.ptr.as_ptr().cast(),
                (offset / PAGE_SIZE) as _,
            )
        })
    }
}
