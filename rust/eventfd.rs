// SPDX-License-Identifier: GPL-2.0

//! A counted reference to an eventfd context.

use crate::sys;
use core::ptr::NonNull;
use kernel::error::from_err_ptr;
use kernel::prelude::*;

/// A reference to the eventfd behind a file descriptor of the caller.
///
/// # Invariants
///
/// `self.0` points to an eventfd context on which this value holds one
/// reference, taken by `eventfd_ctx_fdget` and dropped in `Drop`.
pub(crate) struct EventFd(NonNull<kernel::bindings::eventfd_ctx>);

// SAFETY: An eventfd context is reference counted and signalling it is
// thread safe, so the reference may move to and be used from any thread.
unsafe impl Send for EventFd {}
// SAFETY: `signal` only needs a shared reference and is thread safe.
unsafe impl Sync for EventFd {}

impl EventFd {
    /// Takes a reference to the eventfd that `fd` names in the calling
    /// process (`EBADF` or `EINVAL` if it is not one).
    pub(crate) fn from_fd(fd: i32) -> Result<Self> {
        // SAFETY: `eventfd_ctx_fdget` accepts any integer and returns a
        // counted context or an error pointer.
        let ctx = from_err_ptr(unsafe { sys::eventfd_ctx_fdget(fd) })?;
        // INVARIANT: not an error pointer, so a valid counted context.
        NonNull::new(ctx).map(EventFd).ok_or(EINVAL)
    }

    /// Adds one to the eventfd's counter and wakes its waiters.
    pub(crate) fn signal(&self) {
        // SAFETY: By the type invariant the context is alive.
        unsafe { sys::eventfd_signal_mask(self.0.as_ptr(), 0) };
    }
}

impl Drop for EventFd {
    fn drop(&mut self) {
        // SAFETY: By the type invariant this value owns one reference.
        unsafe { sys::eventfd_ctx_put(self.0.as_ptr()) };
    }
}
