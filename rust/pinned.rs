// SPDX-License-Identifier: GPL-2.0

//! Guest pages pinned through `vfio_pin_pages()`, and the module-wide count
//! of them in debugfs (`vfio_mig_sample/pinned_pages`), so that tests can
//! prove every pin is released.
//!
//! Debugfs also holds one fault-injection knob for the race tests:
//! `unpin_delay_ms` makes every unpin sleep that long first, and
//! `unpins_delayed` counts the unpins that did. A test sets the delay, starts
//! a release, waits for the count to move (the release is then between
//! leaving the pins lock and unpinning: the window an unmap must not slip
//! through) and unmaps. 0, the default, is no delay.

use crate::sys;
use core::ptr::{null_mut, NonNull};
use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use kernel::c_str;
use kernel::error::from_err_ptr;

/// Pages pinned by every device of the module.
static PINNED: AtomicU64 = AtomicU64::new(0);
/// Milliseconds every unpin sleeps before unpinning (debugfs, tests only).
static UNPIN_DELAY_MS: AtomicU32 = AtomicU32::new(0);
/// Unpins that slept for [`UNPIN_DELAY_MS`].
static UNPINS_DELAYED: AtomicU32 = AtomicU32::new(0);

/// Guest pages a VFIO device holds pinned; unpinned on drop.
///
/// # Invariants
///
/// `npages` pages from `iova` are pinned through `vdev`, which stays open
/// for as long as this value lives: the device model drops it, at the
/// latest, in its `close_device` callback (and in `dma_unmap` when the
/// range goes away).
pub(crate) struct PinnedPages {
    vdev: NonNull<sys::vfio_device>,
    iova: u64,
    npages: u32,
}

// SAFETY: Unpinning may happen from any thread that has the device open;
// the VFIO core serialises it internally.
unsafe impl Send for PinnedPages {}

impl PinnedPages {
    /// Records `npages` pages from `iova` pinned through `vdev`.
    ///
    /// # Safety
    ///
    /// The pages must have just been pinned by `vfio_pin_pages(vdev, ...)`,
    /// and `vdev` must satisfy the type invariant.
    pub(crate) unsafe fn new(vdev: NonNull<sys::vfio_device>, iova: u64, npages: u32) -> Self {
        PINNED.fetch_add(u64::from(npages), Ordering::Relaxed);
        // INVARIANT: by the caller's guarantee.
        PinnedPages { vdev, iova, npages }
    }

    /// First IOVA of the pages.
    pub(crate) fn iova(&self) -> u64 {
        self.iova
    }

    /// Number of pages.
    pub(crate) fn npages(&self) -> u32 {
        self.npages
    }
}

impl Drop for PinnedPages {
    fn drop(&mut self) {
        let delay = UNPIN_DELAY_MS.load(Ordering::Relaxed);
        if delay > 0 {
            UNPINS_DELAYED.fetch_add(1, Ordering::Relaxed);
            // SAFETY: `msleep` may be called from any context that may
            // sleep, and this one may: `vfio_unpin_pages` below takes
            // mutexes.
            unsafe { kernel::bindings::msleep(delay) };
        }
        // SAFETY: By the type invariant the pages are pinned through an
        // open `vdev`; `npages` came from a successful pin, so it fits.
        unsafe { sys::vfio_unpin_pages(self.vdev.as_ptr(), self.iova, self.npages as i32) };
        PINNED.fetch_sub(u64::from(self.npages), Ordering::Relaxed);
    }
}

/// The module's debugfs directory; removed on drop.
///
/// # Invariants
///
/// `dir` is null or a directory this value created.
pub(crate) struct Debugfs {
    dir: *mut kernel::bindings::dentry,
}

// SAFETY: The dentry pointer is only passed back to debugfs, which may be
// called from any thread.
unsafe impl Send for Debugfs {}
// SAFETY: `&Debugfs` gives access to nothing.
unsafe impl Sync for Debugfs {}

impl Debugfs {
    /// Creates `vfio_mig_sample/` with `pinned_pages` and the knob's two
    /// files. Without debugfs the module works the same, only the count is
    /// not visible: failure is not an error, as for every debugfs user.
    pub(crate) fn new() -> Self {
        let name = c_str!("vfio_mig_sample");
        // SAFETY: A static name, no parent (the debugfs root).
        let dir = from_err_ptr(unsafe { sys::debugfs_create_dir(name.as_char_ptr(), null_mut()) })
            .unwrap_or(null_mut());
        if !dir.is_null() {
            // SAFETY: `dir` is our directory; `PINNED` is a static that
            // outlives it (the directory is removed on module unload,
            // before the module's memory goes), and debugfs only reads it.
            unsafe {
                sys::debugfs_create_u64(
                    c_str!("pinned_pages").as_char_ptr(),
                    0o444,
                    dir,
                    PINNED.as_ptr(),
                )
            };
            // SAFETY: `dir` is our directory; the statics outlive it (it
            // is removed on module unload, before the module's memory
            // goes), and debugfs reads and writes them as plain `u32`s,
            // which is what an `AtomicU32` is in memory (the knob's value
            // needs no ordering with anything).
            unsafe {
                sys::debugfs_create_u32(
                    c_str!("unpin_delay_ms").as_char_ptr(),
                    0o600,
                    dir,
                    UNPIN_DELAY_MS.as_ptr(),
                );
                sys::debugfs_create_u32(
                    c_str!("unpins_delayed").as_char_ptr(),
                    0o444,
                    dir,
                    UNPINS_DELAYED.as_ptr(),
                );
            }
        }
        // INVARIANT: `dir` is null or ours.
        Debugfs { dir }
    }
}

impl Drop for Debugfs {
    fn drop(&mut self) {
        if !self.dir.is_null() {
            // SAFETY: By the type invariant, our directory; this removes
            // it and the file in it.
            unsafe { sys::debugfs_remove(self.dir) };
        }
    }
}
