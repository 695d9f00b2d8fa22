// SPDX-License-Identifier: GPL-2.0

//! Files without a path, driven by Rust (`anon_inode_getfile`,
//! `srctree/include/linux/anon_inodes.h`): a VFIO migration data file is
//! one.
//!
//! A driver implements [`FileOps`] and gets a [`NewFile`], which it hands
//! to the VFIO core to install as a file descriptor. Every such file pins
//! this module (`file_operations.owner`) until its last reference goes, so
//! the module cannot be unloaded while one is open, and its code is there
//! when the file's release runs.

use core::mem::MaybeUninit;
use core::ptr::NonNull;
use kernel::bindings;
use kernel::error::{from_err_ptr, from_result};
use kernel::ffi::{c_char, c_int, c_long, c_uint, c_ulong, c_void};
use kernel::prelude::*;
use kernel::types::Opaque;
use kernel::uaccess::{UserSlice, UserSliceReader, UserSliceWriter};

/// What a file does. The file is a stream: no position, no seeking.
pub(crate) trait FileOps: Send + Sync {
    /// A `read` into `buf`; returns the number of bytes read (0 at the end).
    fn read(&self, buf: UserSliceWriter) -> Result<usize>;

    /// A `write` from `buf`; returns the number of bytes taken.
    fn write(&self, buf: UserSliceReader) -> Result<usize>;

    /// An `ioctl`.
    fn ioctl(&self, cmd: u32, arg: usize) -> Result<isize>;
}

/// A new file, not yet installed in any file table; dropping it releases
/// it (`fput`).
///
/// # Invariants
///
/// `self.0` is a file made by [`NewFile::new`], on which this value owns
/// the only reference.
pub(crate) struct NewFile(NonNull<bindings::file>);

// SAFETY: A file reference may be dropped (`fput`) from any thread.
unsafe impl Send for NewFile {}

/// The driver's operations of a file, as `private_data` holds them (a thin
/// pointer to a fat one).
type Private = KBox<dyn FileOps>;

impl NewFile {
    /// Makes a file named `[name]` in `/proc/PID/fd` whose operations are
    /// `ops`, opened with `flags` (`O_RDONLY`, `O_WRONLY`).
    pub(crate) fn new<T: FileOps + 'static>(
        name: &'static CStr,
        ops: KBox<T>,
        flags: u32,
    ) -> Result<Self> {
        // The kernel's `Box` has no unsizing coercion: unsize the raw
        // pointer instead.
        let ops = KBox::into_raw(ops);
        let ops: *mut dyn FileOps = ops;
        // SAFETY: `ops` comes from `KBox::into_raw` just above.
        let ops: Private = unsafe { KBox::from_raw(ops) };
        let private = KBox::into_raw(KBox::new(ops, GFP_KERNEL)?);
        // SAFETY: `FOPS` is static; `private` is ours until the file's
        // release, which frees it. On failure the core does not keep it.
        let file = from_err_ptr(unsafe {
            crate::sys::anon_inode_getfile(
                name.as_char_ptr(),
                &FOPS.0,
                private.cast::<c_void>(),
                flags as c_int,
            )
        });
        let file = match file {
            Ok(file) => file,
            Err(e) => {
                // SAFETY: The core did not take `private`: it is still ours,
                // from `KBox::into_raw` above.
                drop(unsafe { KBox::from_raw(private) });
                return Err(e);
            }
        };
        // SAFETY: `file` was just made, with its inode, and is not shared;
        // this makes it a stream (no `llseek`, `pread`, `pwrite`).
        unsafe { bindings::stream_open((*file).f_inode, file) };
        // INVARIANT: a file of ours with its one reference.
        // SAFETY: `from_err_ptr` succeeded, so `file` is not null.
        Ok(NewFile(unsafe { NonNull::new_unchecked(file) }))
    }

    /// Gives up the reference, for a C caller that takes it over.
    pub(crate) fn into_raw(self) -> *mut bindings::file {
        let file = self.0.as_ptr();
        core::mem::forget(self);
        file
    }
}

impl Drop for NewFile {
    fn drop(&mut self) {
        // SAFETY: By the type invariant this value owns the reference; the
        // last `fput` releases the file (`release_callback`).
        unsafe { bindings::fput(self.0.as_ptr()) };
    }
}

// Only the address is taken: the type's FFI-safety does not matter.
#[allow(improper_ctypes)]
extern "C" {
    /// This module (what `THIS_MODULE` points to in C).
    static __this_module: Opaque<bindings::module>;
}

/// The file operations of every file of this wrapper.
struct FileOperations(bindings::file_operations);

// SAFETY: The table is never written after its static initialisation; the
// pointers in it are to functions and to this module.
unsafe impl Sync for FileOperations {}

static FOPS: FileOperations = FileOperations(bindings::file_operations {
    // SAFETY: `__this_module` is this module's `struct module`, which the
    // loader sets up before any code runs and which lives until unload;
    // only its address is taken here.
    owner: unsafe { __this_module.get() },
    read: Some(read_callback),
    write: Some(write_callback),
    unlocked_ioctl: Some(ioctl_callback),
    #[cfg(CONFIG_COMPAT)]
    compat_ioctl: Some(bindings::compat_ptr_ioctl),
    release: Some(release_callback),
    // SAFETY: The remaining members are nullable pointers and integers, for
    // which all-zero means "none".
    ..unsafe { MaybeUninit::zeroed().assume_init() }
});

/// The driver's operations of `file`.
///
/// # Safety
///
/// `file` must be a file of [`NewFile::new`] that is not yet released, and
/// the reference must not outlive the callback the core called with it.
unsafe fn ops<'a>(file: *mut bindings::file) -> &'a dyn FileOps {
    // SAFETY: `NewFile::new` set `private_data` to a `Private` from
    // `KBox::into_raw`, freed only by `release_callback`, which the core
    // calls after every other callback of the file has returned.
    unsafe { &**(*file).private_data.cast::<Private>() }
}

/// # Safety
///
/// Called by the VFS (`read`) on a file of [`NewFile::new`] with a user
/// buffer of `count` bytes.
unsafe extern "C" fn read_callback(
    file: *mut bindings::file,
    buf: *mut c_char,
    count: usize,
    _ppos: *mut bindings::loff_t,
) -> isize {
    from_result(|| {
        let user = UserSlice::new(buf as usize, count).writer();
        // SAFETY: A file of `NewFile::new`, during one of its callbacks.
        let done = unsafe { ops(file) }.read(user)?;
        isize::try_from(done).map_err(|_| EINVAL)
    })
}

/// # Safety
///
/// Called by the VFS (`write`) on a file of [`NewFile::new`] with a user
/// buffer of `count` bytes.
unsafe extern "C" fn write_callback(
    file: *mut bindings::file,
    buf: *const c_char,
    count: usize,
    _ppos: *mut bindings::loff_t,
) -> isize {
    from_result(|| {
        let user = UserSlice::new(buf as usize, count).reader();
        // SAFETY: A file of `NewFile::new`, during one of its callbacks.
        let done = unsafe { ops(file) }.write(user)?;
        isize::try_from(done).map_err(|_| EINVAL)
    })
}

/// # Safety
///
/// Called by the VFS (`unlocked_ioctl`) on a file of [`NewFile::new`].
unsafe extern "C" fn ioctl_callback(
    file: *mut bindings::file,
    cmd: c_uint,
    arg: c_ulong,
) -> c_long {
    from_result(|| {
        // SAFETY: A file of `NewFile::new`, during one of its callbacks.
        let ret = unsafe { ops(file) }.ioctl(cmd, arg)?;
        Ok(ret as c_long)
    })
}

/// # Safety
///
/// Called by the VFS (`release`) once, when the last reference to a file
/// of [`NewFile::new`] goes.
unsafe extern "C" fn release_callback(
    _inode: *mut bindings::inode,
    file: *mut bindings::file,
) -> c_int {
    // SAFETY: `private_data` came from `KBox::into_raw` in `NewFile::new`;
    // no other callback of the file runs any more, so this is the last use.
    drop(unsafe { KBox::from_raw((*file).private_data.cast::<Private>()) });
    0
}
