// SPDX-License-Identifier: GPL-2.0

//! The VMA an `mmap` callback sets up (`struct vm_area_struct`).
//!
//! C reference: `srctree/include/linux/mm.h`. Linux 6.12's kernel crate has
//! no VMA abstraction; this is the little an mmap callback needs: the
//! range, the file offset, and the flags it may read and change.

use kernel::bindings;
use kernel::types::Opaque;

/// `vm_flags` bits (`srctree/include/linux/mm.h`).
pub(crate) type VmFlags = bindings::vm_flags_t;
/// A shared mapping (`MAP_SHARED`).
pub(crate) const VM_SHARED: VmFlags = bindings::VM_SHARED as VmFlags;
/// The mapping is writable now.
pub(crate) const VM_WRITE: VmFlags = bindings::VM_WRITE as VmFlags;
/// The mapping may be made writable (`mprotect`).
pub(crate) const VM_MAYWRITE: VmFlags = bindings::VM_MAYWRITE as VmFlags;
/// `mremap` may not grow the mapping.
pub(crate) const VM_DONTEXPAND: VmFlags = bindings::VM_DONTEXPAND as VmFlags;
/// Core dumps leave the mapping out.
pub(crate) const VM_DONTDUMP: VmFlags = bindings::VM_DONTDUMP as VmFlags;

/// A VMA an mmap callback is setting up.
///
/// # Invariants
///
/// Only handed out (by reference) to an `mmap` file callback, for the
/// duration of the call, with the VMA's `mm` locked for writing and the
/// VMA not yet in the mm's tree: nothing else reads or writes it
/// meanwhile (what `vm_flags_init()` relies on).
#[repr(transparent)]
pub(crate) struct Vma(Opaque<bindings::vm_area_struct>);

impl Vma {
    /// # Safety
    ///
    /// `ptr` must be the VMA of an `mmap` file callback that is running,
    /// and the reference must not outlive the call.
    pub(crate) unsafe fn from_raw<'a>(ptr: *mut bindings::vm_area_struct) -> &'a Vma {
        // SAFETY: `Vma` is a transparent `Opaque` of the C type; the
        // pointer is valid for the call by the caller's guarantee.
        // INVARIANT: the caller passes the VMA of a running mmap callback.
        unsafe { &*ptr.cast::<Vma>() }
    }

    /// The raw VMA, for the C calls that map pages into it.
    pub(crate) fn as_raw(&self) -> *mut bindings::vm_area_struct {
        self.0.get()
    }

    /// First user address of the mapping.
    pub(crate) fn start(&self) -> usize {
        // SAFETY: The VMA is valid and not written concurrently (type
        // invariant); `vm_start` is plain data in either arm of the union.
        unsafe { (*self.as_raw()).__bindgen_anon_1.__bindgen_anon_1.vm_start }
    }

    /// One past the last user address of the mapping.
    pub(crate) fn end(&self) -> usize {
        // SAFETY: The VMA is valid and not written concurrently (type
        // invariant); `vm_end` is plain data in either arm of the union.
        unsafe { (*self.as_raw()).__bindgen_anon_1.__bindgen_anon_1.vm_end }
    }

    /// Length of the mapping in bytes.
    pub(crate) fn len(&self) -> usize {
        self.end().saturating_sub(self.start())
    }

    /// The file offset of the mapping, in pages (`mmap`'s `offset >>
    /// PAGE_SHIFT`).
    pub(crate) fn pgoff(&self) -> u64 {
        // SAFETY: The VMA is valid and not written concurrently (type
        // invariant).
        unsafe { (*self.as_raw()).vm_pgoff as u64 }
    }

    /// The mapping's `vm_flags`.
    pub(crate) fn flags(&self) -> VmFlags {
        // SAFETY: The VMA is valid and not written concurrently (type
        // invariant); both arms of the union are the same `vm_flags_t`.
        unsafe { (*self.as_raw()).__bindgen_anon_2.vm_flags }
    }

    /// Sets `flags` in `vm_flags` (`vm_flags_set()`, without the VMA write
    /// lock, which a VMA nobody else sees does not need).
    pub(crate) fn set_flags(&self, flags: VmFlags) {
        // SAFETY: The VMA is valid and nothing else reads or writes it
        // during the mmap callback (type invariant), so the plain write
        // `vm_flags_init()` does is enough.
        unsafe { (*self.as_raw()).__bindgen_anon_2.__vm_flags |= flags };
    }

    /// Clears `flags` in `vm_flags` (`vm_flags_clear()`, likewise).
    pub(crate) fn clear_flags(&self, flags: VmFlags) {
        // SAFETY: The VMA is valid and nothing else reads or writes it
        // during the mmap callback (type invariant), so a plain write is
        // enough, as in `vm_flags_init()`.
        unsafe { (*self.as_raw()).__bindgen_anon_2.__vm_flags &= !flags };
    }
}
