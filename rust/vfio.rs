// SPDX-License-Identifier: GPL-2.0

//! VFIO devices backed by an emulated IOMMU (`vfio_register_emulated_iommu_dev`).
//!
//! C reference: `srctree/include/linux/vfio.h`. A driver implements
//! [`DeviceOps`]; [`Registration`] allocates the `struct vfio_device` with the
//! driver's data in the same allocation, registers it, and unregisters it on
//! drop. The C callbacks are adapted here so that the driver's code never
//! touches a raw pointer: each gets the driver data and a [`Device`], the
//! device's handle for DMA (`vfio_dma_rw`, `vfio_pin_pages`) and for its
//! deferred work.

use crate::anon_file::NewFile;
use crate::pinned::PinnedPages;
use crate::sys;
use crate::vma::Vma;
use core::marker::PhantomData;
use core::mem::{offset_of, size_of, MaybeUninit};
use core::ptr::{addr_of_mut, NonNull};
use kernel::build_error;
use kernel::c_str;
use kernel::error::{from_err_ptr, from_result, to_result};
use kernel::ffi::{c_char, c_long, c_uint, c_ulong, c_void};
use kernel::prelude::*;
use kernel::types::Opaque;
use kernel::uaccess::{UserSlice, UserSliceReader, UserSliceWriter};

pub(crate) mod uapi;

/// What a VFIO device driver implements.
///
/// Every callback runs in process context and may sleep. VFIO serialises
/// `open` and `close` against each other, but `read`, `write`, `ioctl`,
/// `dma_unmap`, `work` and the migration callbacks may run concurrently
/// from any number of threads.
///
/// The v2 migration callbacks (`migration_*`) and the DMA-logging callbacks
/// (`log_*`) are optional: the VFIO core offers `VFIO_DEVICE_FEATURE_MIGRATION`
/// only if the driver implements `migration_set_state`, and the DMA-logging
/// features only if it implements `log_start`.
#[vtable]
pub(crate) trait DeviceOps: Sized + Send + Sync + 'static {
    /// The name of the ops table (`vfio_device_ops.name`).
    const NAME: &'static CStr;

    /// The `VFIO_MIGRATION_*` flags of the device (`migration_flags`), used
    /// when the driver implements `migration_set_state`.
    const MIGRATION_FLAGS: u32 = 0;

    /// The first open of the device (`open_device`).
    fn open(&self, dev: &Device) -> Result;

    /// The last close of the device (`close_device`). Afterwards the work
    /// item is cancelled and waited for, so the driver should leave it
    /// nothing to do.
    fn close(&self, dev: &Device);

    /// A `read` of `buf.len()` bytes at file position `pos`; returns the
    /// number of bytes read.
    fn read(&self, dev: &Device, buf: UserSliceWriter, pos: u64) -> Result<usize>;

    /// A `write` of `buf.len()` bytes at file position `pos`; returns the
    /// number of bytes written.
    fn write(&self, dev: &Device, buf: UserSliceReader, pos: u64) -> Result<usize>;

    /// A device ioctl other than the ones the VFIO core handles.
    fn ioctl(&self, dev: &Device, cmd: u32, arg: usize) -> Result<isize>;

    /// An `mmap` of the device file into `vma` (optional: without it the
    /// core refuses every mmap with `EINVAL`). The driver checks the range
    /// and the flags, then maps its memory into the whole VMA.
    fn mmap(&self, _dev: &Device, _vma: &Vma) -> Result {
        build_error!(kernel::error::VTABLE_DEFAULT_ERROR)
    }

    /// `iova..iova + length` is being unmapped: the driver must unpin every
    /// page it holds pinned in that range before returning.
    fn dma_unmap(&self, dev: &Device, iova: u64, length: u64);

    /// The deferred work queued by [`Device::schedule_work`].
    fn work(&self, dev: &Device);

    /// `VFIO_DEVICE_FEATURE_MIG_DEVICE_STATE`: moves the device to the v2
    /// state `new_state` (a `VFIO_DEVICE_STATE_*` number, which the core has
    /// checked against the device's flags), walking the arcs
    /// [`Device::next_migration_state`] gives. Returns the data file of a
    /// state that has one (ownership passes to the core, which installs it
    /// as a new fd). `this` is a counted reference for that file to keep.
    fn migration_set_state(
        _this: DeviceRef<Self>,
        _dev: &Device,
        _new_state: u32,
    ) -> Result<Option<NewFile>> {
        build_error!(kernel::error::VTABLE_DEFAULT_ERROR)
    }

    /// `VFIO_DEVICE_FEATURE_MIG_DEVICE_STATE` read: the current v2 state.
    fn migration_get_state(&self, _dev: &Device) -> Result<u32> {
        build_error!(kernel::error::VTABLE_DEFAULT_ERROR)
    }

    /// `VFIO_DEVICE_FEATURE_MIG_DATA_SIZE`: an estimate of the bytes a
    /// `STOP_COPY` would produce now.
    fn migration_get_data_size(&self, _dev: &Device) -> Result<u64> {
        build_error!(kernel::error::VTABLE_DEFAULT_ERROR)
    }

    /// `VFIO_DEVICE_FEATURE_DMA_LOGGING_START`: from now on, remember the
    /// guest pages the device writes. The device logs every IOVA, whatever
    /// ranges userspace named; a report only covers the range it asks.
    fn log_start(&self, _dev: &Device) -> Result {
        build_error!(kernel::error::VTABLE_DEFAULT_ERROR)
    }

    /// `VFIO_DEVICE_FEATURE_DMA_LOGGING_STOP`.
    fn log_stop(&self, _dev: &Device) -> Result {
        build_error!(kernel::error::VTABLE_DEFAULT_ERROR)
    }

    /// `VFIO_DEVICE_FEATURE_DMA_LOGGING_REPORT`, one piece of it: sets in
    /// `dirty` the pages of `iova..iova + length` written since their last
    /// report, and forgets them.
    fn log_read_and_clear(
        &self,
        _dev: &Device,
        _iova: u64,
        _length: u64,
        _dirty: &IovaBitmap,
    ) -> Result {
        build_error!(kernel::error::VTABLE_DEFAULT_ERROR)
    }
}

/// A registered, open VFIO device, as its callbacks see it.
///
/// # Invariants
///
/// Only handed out (by reference) to the callbacks of a registered device,
/// for the duration of the call; the device is open in every callback but
/// `open`'s error path.
#[repr(transparent)]
pub(crate) struct Device(Opaque<sys::vfio_device>);

/// `vfio_pin_pages()` takes at most this many pages per call.
pub(crate) const PIN_PAGES_MAX: u32 = 512;

impl Device {
    /// # Safety
    ///
    /// `ptr` must be a registered device, valid for `'a`, that stays open
    /// for `'a` (see the type invariant).
    unsafe fn from_raw<'a>(ptr: *mut sys::vfio_device) -> &'a Device {
        // CAST: `Device` is a transparent wrapper of `Opaque<vfio_device>`,
        // itself transparent over the C struct.
        // SAFETY: `ptr` is valid for `'a` by the function's safety
        // requirements, and `Opaque` allows any sharing of the C struct.
        unsafe { &*ptr.cast::<Device>() }
    }

    fn as_raw(&self) -> *mut sys::vfio_device {
        self.0.get()
    }

    fn dma_rw(&self, iova: u64, data: *mut c_void, len: usize, write: bool) -> Result {
        // SAFETY: The device is registered and open (type invariant); `data`
        // is valid for `len` bytes of reads (write) or writes (read).
        to_result(unsafe { sys::vfio_dma_rw(self.as_raw(), iova, data, len, write) })
    }

    /// Writes `data` to guest memory at `iova` (`vfio_dma_rw`).
    pub(crate) fn dma_write(&self, iova: u64, data: &[u8]) -> Result {
        // The C prototype is not const-correct: a write only reads `data`.
        self.dma_rw(iova, data.as_ptr() as *mut c_void, data.len(), true)
    }

    /// Reads guest memory at `iova` into `data` (`vfio_dma_rw`).
    pub(crate) fn dma_read(&self, iova: u64, data: &mut [u8]) -> Result {
        self.dma_rw(iova, data.as_mut_ptr().cast(), data.len(), false)
    }

    /// Pins `npages` (1..=[`PIN_PAGES_MAX`]) guest pages from the page
    /// aligned `iova`, for device reads and, if `writable`, writes.
    ///
    /// The pages must be released (the value dropped) while the device is
    /// open: in `dma_unmap` for their range, at the latest in `close`.
    pub(crate) fn pin_pages(&self, iova: u64, npages: u32, writable: bool) -> Result<PinnedPages> {
        if !(1..=PIN_PAGES_MAX).contains(&npages) {
            return Err(EINVAL);
        }
        // The core wants somewhere to put the `struct page` pointers, which
        // this driver does not use: it only holds the pages.
        let mut pages = KVec::from_elem(
            core::ptr::null_mut::<kernel::bindings::page>(),
            npages as usize,
            GFP_KERNEL,
        )?;
        let prot = sys::IOMMU_READ | if writable { sys::IOMMU_WRITE } else { 0 };
        // SAFETY: The device is registered and open (type invariant);
        // `pages` has room for `npages` pointers.
        let ret = unsafe {
            sys::vfio_pin_pages(
                self.as_raw(),
                iova,
                npages as i32,
                prot as i32,
                pages.as_mut_ptr(),
            )
        };
        to_result(ret)?;
        if ret != npages as i32 {
            // Neither backend pins part of a request, but if one did, give
            // back what it pinned.
            if ret > 0 {
                // SAFETY: `ret` pages from `iova` were just pinned.
                unsafe { sys::vfio_unpin_pages(self.as_raw(), iova, ret) };
            }
            return Err(EFAULT);
        }
        // SAFETY: `npages` pages were just pinned through this open device;
        // the caller keeps the result only while the device is open.
        Ok(unsafe { PinnedPages::new(NonNull::new_unchecked(self.as_raw()), iova, npages) })
    }

    /// The next v2 state on the way from `cur` to `new`, as the VFIO core
    /// computes it for the device's migration flags
    /// (`vfio_mig_get_next_state`); `EINVAL` if there is no way.
    pub(crate) fn next_migration_state(&self, cur: u32, new: u32) -> Result<u32> {
        let mut next: sys::vfio_device_mig_state = 0;
        // SAFETY: The device is registered and open (type invariant);
        // `next` is valid for writes.
        to_result(unsafe { sys::vfio_mig_get_next_state(self.as_raw(), cur, new, &mut next) })?;
        Ok(next)
    }

    /// Queues the driver's [`DeviceOps::work`] on the system unbound
    /// workqueue, unless it is queued already.
    pub(crate) fn schedule_work(&self) {
        let vdev = self.as_raw();
        // SAFETY: Every registered device starts a `Wrapper` (see
        // `Registration::new`) whose work item was initialised before
        // registration; `system_unbound_wq` exists from boot.
        unsafe {
            let work = dev_work(vdev);
            kernel::bindings::queue_work_on(
                kernel::bindings::wq_misc_consts_WORK_CPU_UNBOUND as _,
                kernel::bindings::system_unbound_wq,
                work,
            );
        }
    }
}

/// A counted reference to a device whose driver data is a `T`: keeps the
/// data alive after the device is unregistered, for objects that may
/// outlive it (a migration data file). It gives the data, not the
/// [`Device`]: the VFIO calls of a handle need the device open.
///
/// # Invariants
///
/// `wrapper` is a `Wrapper<T>` with initialised data, on whose
/// `vdev.device` this value holds a reference (so `release_callback`, which
/// drops the data, has not run).
pub(crate) struct DeviceRef<T: DeviceOps> {
    wrapper: NonNull<Wrapper<T>>,
}

// SAFETY: The reference only gives `&T`, and `T: Send + Sync`; the device
// core's reference count is atomic.
unsafe impl<T: DeviceOps> Send for DeviceRef<T> {}
// SAFETY: `&DeviceRef<T>` only gives `&T`, and `T: Sync`.
unsafe impl<T: DeviceOps> Sync for DeviceRef<T> {}

impl<T: DeviceOps> DeviceRef<T> {
    /// Takes a reference to `vdev`.
    ///
    /// # Safety
    ///
    /// `vdev` must satisfy the requirements of [`parts`] for the call.
    unsafe fn new(vdev: *mut sys::vfio_device) -> Self {
        // SAFETY: `vdev` is live by the function's safety requirements; its
        // `device` is initialised by `_vfio_alloc_device`.
        unsafe { kernel::bindings::get_device(addr_of_mut!((*vdev).device)) };
        // INVARIANT: `vdev` starts a `Wrapper<T>` with initialised data (the
        // requirements of `parts`), and the reference was just taken.
        DeviceRef {
            // SAFETY: `vdev` is not null: it is live.
            wrapper: unsafe { NonNull::new_unchecked(vdev.cast()) },
        }
    }
}

impl<T: DeviceOps> core::ops::Deref for DeviceRef<T> {
    type Target = T;

    fn deref(&self) -> &T {
        // SAFETY: By the type invariant the data is initialised and stays so
        // while this reference lives.
        unsafe { (*self.wrapper.as_ptr()).data.assume_init_ref() }
    }
}

impl<T: DeviceOps> Drop for DeviceRef<T> {
    fn drop(&mut self) {
        let vdev = self.wrapper.as_ptr().cast::<sys::vfio_device>();
        // SAFETY: Drops the reference this value holds (type invariant);
        // the last one runs `release_callback`.
        unsafe { kernel::bindings::put_device(addr_of_mut!((*vdev).device)) };
    }
}

/// The dirty bitmap of a DMA-logging report (`struct iova_bitmap`),
/// mapped by the VFIO core for one [`DeviceOps::log_read_and_clear`].
#[repr(transparent)]
pub(crate) struct IovaBitmap(Opaque<sys::iova_bitmap>);

impl IovaBitmap {
    /// Marks `iova..iova + length` dirty (the bitmap ignores what lies
    /// outside the piece it maps now).
    pub(crate) fn set(&self, iova: u64, length: u64) {
        // SAFETY: `self` is the bitmap the core passed to
        // `log_read_and_clear_callback`, valid for the call, and
        // `iova_bitmap_set` takes any range.
        unsafe { sys::iova_bitmap_set(self.0.get(), iova as _, length as _) };
    }
}

/// The part of every [`Wrapper`] that does not depend on the driver.
#[repr(C)]
struct Header {
    /// Must come first: the VFIO core frees the allocation through it.
    vdev: Opaque<sys::vfio_device>,
    /// The driver's deferred work ([`DeviceOps::work`]).
    work: Opaque<kernel::bindings::work_struct>,
}

/// The allocation `_vfio_alloc_device` makes for a device of type `T`.
///
/// # Invariants
///
/// `data` is initialised exactly when `initialized` is true; both, and the
/// work item, are written only before the device is registered, so the
/// VFIO callbacks can read them without synchronisation.
#[repr(C)]
struct Wrapper<T> {
    header: Header,
    initialized: bool,
    data: MaybeUninit<T>,
}

/// A lockdep class for the work items of all devices.
struct WorkClass(Opaque<kernel::bindings::lock_class_key>);
// SAFETY: Only lockdep touches the key, with its own locking.
unsafe impl Sync for WorkClass {}
static WORK_CLASS: WorkClass = WorkClass(Opaque::uninit());

/// A registered VFIO device whose driver data is a `T`.
///
/// # Invariants
///
/// `wrapper` points to a live `Wrapper<T>` with initialised data, registered
/// with the VFIO core, on which this value holds the initial reference.
pub(crate) struct Registration<T: DeviceOps> {
    wrapper: NonNull<Wrapper<T>>,
}

// SAFETY: The registration only carries a pointer to a device whose data is
// `Send + Sync`; unregistering may happen from any thread.
unsafe impl<T: DeviceOps> Send for Registration<T> {}
// SAFETY: `&Registration` gives no access to anything.
unsafe impl<T: DeviceOps> Sync for Registration<T> {}

struct OpsTable<T>(PhantomData<T>);

impl<T: DeviceOps> OpsTable<T> {
    const OPS: sys::vfio_device_ops = sys::vfio_device_ops {
        name: T::NAME.as_char_ptr() as *mut c_char,
        release: Some(release_callback::<T>),
        open_device: Some(open_callback::<T>),
        close_device: Some(close_callback::<T>),
        read: Some(read_callback::<T>),
        write: Some(write_callback::<T>),
        ioctl: Some(ioctl_callback::<T>),
        mmap: if T::HAS_MMAP {
            Some(mmap_callback::<T>)
        } else {
            None
        },
        dma_unmap: Some(dma_unmap_callback::<T>),
        #[cfg(CONFIG_IOMMUFD)]
        bind_iommufd: Some(sys::vfio_iommufd_emulated_bind),
        #[cfg(CONFIG_IOMMUFD)]
        unbind_iommufd: Some(sys::vfio_iommufd_emulated_unbind),
        #[cfg(CONFIG_IOMMUFD)]
        attach_ioas: Some(sys::vfio_iommufd_emulated_attach_ioas),
        #[cfg(CONFIG_IOMMUFD)]
        detach_ioas: Some(sys::vfio_iommufd_emulated_detach_ioas),
        // SAFETY: The remaining members are nullable pointers, for which
        // all-zero is `None`.
        ..unsafe { MaybeUninit::zeroed().assume_init() }
    };

    const MIGRATION_OPS: sys::vfio_migration_ops = sys::vfio_migration_ops {
        migration_set_state: Some(migration_set_state_callback::<T>),
        migration_get_state: Some(migration_get_state_callback::<T>),
        migration_get_data_size: Some(migration_get_data_size_callback::<T>),
    };

    const LOG_OPS: sys::vfio_log_ops = sys::vfio_log_ops {
        log_start: Some(log_start_callback::<T>),
        log_stop: Some(log_stop_callback::<T>),
        log_read_and_clear: Some(log_read_and_clear_callback::<T>),
    };
}

impl<T: DeviceOps> Registration<T> {
    /// Creates the VFIO device of `parent`, initialises its data with `init`
    /// and registers it with an emulated IOMMU.
    ///
    /// # Safety
    ///
    /// `parent` must point to a device that outlives the registration.
    pub(crate) unsafe fn new(
        parent: *mut kernel::bindings::device,
        init: impl PinInit<T, Error>,
    ) -> Result<Self> {
        const {
            assert!(offset_of!(Wrapper<T>, header) == 0);
            assert!(offset_of!(Header, vdev) == 0);
        };
        let ops: &'static sys::vfio_device_ops = &OpsTable::<T>::OPS;
        // SAFETY: `parent` is valid by the caller's guarantee, the size
        // covers a `vfio_device` at offset 0, and `ops` is static.
        let vdev =
            from_err_ptr(unsafe { sys::_vfio_alloc_device(size_of::<Wrapper<T>>(), parent, ops) })?;
        let wrapper = vdev.cast::<Wrapper<T>>();

        // Migration and DMA logging are static properties of the device,
        // set before it is registered.
        if T::HAS_MIGRATION_SET_STATE {
            let mig_ops: &'static sys::vfio_migration_ops = &OpsTable::<T>::MIGRATION_OPS;
            // SAFETY: `vdev` is a fresh allocation, not yet shared; the
            // table is static.
            unsafe {
                (*vdev).migration_flags = T::MIGRATION_FLAGS;
                (*vdev).mig_ops = mig_ops;
            }
        }
        if T::HAS_LOG_START {
            let log_ops: &'static sys::vfio_log_ops = &OpsTable::<T>::LOG_OPS;
            // SAFETY: `vdev` is a fresh allocation, not yet shared; the
            // table is static.
            unsafe { (*vdev).log_ops = log_ops };
        }

        // SAFETY: `wrapper` is a fresh allocation, not yet shared; the work
        // item lives as long as the allocation, and `work_callback::<T>`
        // only ever sees it inside a `Wrapper<T>`. The name and the lock
        // class are static.
        unsafe {
            kernel::bindings::init_work_with_key(
                Opaque::raw_get(addr_of_mut!((*wrapper).header.work)),
                Some(work_callback::<T>),
                false,
                c_str!("vfio_mig_sample:work").as_char_ptr(),
                WORK_CLASS.0.get(),
            )
        };
        // SAFETY: `wrapper` is a fresh, zeroed allocation of the right size;
        // `data` never moves because the allocation is freed in place.
        let res = unsafe { init.__pinned_init(addr_of_mut!((*wrapper).data).cast::<T>()) };
        if let Err(e) = res {
            // SAFETY: Drops the initial reference; `release_callback` sees
            // `initialized == false` and leaves `data` alone.
            unsafe { kernel::bindings::put_device(addr_of_mut!((*vdev).device)) };
            return Err(e);
        }
        // SAFETY: Not yet visible to anyone else.
        unsafe { (*wrapper).initialized = true };

        // SAFETY: `vdev` is an initialised, unregistered VFIO device.
        let ret = to_result(unsafe { sys::vfio_register_emulated_iommu_dev(vdev) });
        if let Err(e) = ret {
            // SAFETY: Drops the initial reference; `release_callback` drops
            // the data.
            unsafe { kernel::bindings::put_device(addr_of_mut!((*vdev).device)) };
            return Err(e);
        }
        // INVARIANT: registered, initialised, and we own the first reference.
        Ok(Self {
            // SAFETY: `from_err_ptr` succeeded on an allocation.
            wrapper: unsafe { NonNull::new_unchecked(wrapper) },
        })
    }

    /// Gives up ownership, for storage in a C `void *`.
    pub(crate) fn into_raw(self) -> *mut core::ffi::c_void {
        let ptr = self.wrapper.as_ptr().cast();
        core::mem::forget(self);
        ptr
    }

    /// Takes back a registration given up by [`Self::into_raw`].
    ///
    /// # Safety
    ///
    /// `ptr` must come from `into_raw` on a `Registration<T>` and not have
    /// been taken back before.
    pub(crate) unsafe fn from_raw(ptr: *mut core::ffi::c_void) -> Self {
        // INVARIANT: by the caller's guarantee, `ptr` satisfies the
        // invariants the original registration had.
        Self {
            // SAFETY: `into_raw` returns non-null pointers.
            wrapper: unsafe { NonNull::new_unchecked(ptr.cast()) },
        }
    }
}

impl<T: DeviceOps> Drop for Registration<T> {
    fn drop(&mut self) {
        let vdev = self.wrapper.as_ptr().cast::<sys::vfio_device>();
        // SAFETY: By the type invariant the device is registered. This waits
        // until every user has closed it.
        unsafe { sys::vfio_unregister_group_dev(vdev) };
        // SAFETY: Drops the reference this registration owned; the last one
        // runs `release_callback` and frees the allocation.
        unsafe { kernel::bindings::put_device(addr_of_mut!((*vdev).device)) };
    }
}

/// Returns the driver data of a device, and its handle.
///
/// # Safety
///
/// `vdev` must be the `vdev` of a `Wrapper<T>` whose data is initialised,
/// and stays so for `'a`; for the handle's methods, the device must be
/// registered and open for `'a` (the invariant of [`Device`]).
///
/// Every callback of the tables in [`OpsTable`] meets this for the duration
/// of the call, and cites this argument:
///
/// - the tables are installed only by [`Registration::new`], on the
///   `Wrapper<T>` it allocates, so `vdev` starts a `Wrapper<T>` of the
///   callback's `T`;
/// - `data` is initialised before the device is registered and dropped only
///   by `release_callback`, which the core calls once the last reference
///   is gone, after every other callback has returned;
/// - the core calls `read`, `write`, `ioctl`, `dma_unmap` and the migration
///   and logging callbacks through an open device file, so on a registered,
///   open device; `open` and `close` on a registered device, which is open
///   once `open` succeeded and until `close` returns; the work item runs
///   only between the two (`close_callback` cancels it).
unsafe fn parts<'a, T>(vdev: *mut sys::vfio_device) -> (&'a T, &'a Device) {
    let wrapper = vdev.cast::<Wrapper<T>>();
    // SAFETY: By the function's safety requirements `wrapper` is live with
    // initialised data for `'a`, and the device is registered and open.
    unsafe { ((*wrapper).data.assume_init_ref(), Device::from_raw(vdev)) }
}

/// # Safety
///
/// Called by the VFIO core when the last reference to a device of
/// [`Registration::new`] goes.
unsafe extern "C" fn release_callback<T: DeviceOps>(vdev: *mut sys::vfio_device) {
    let wrapper = vdev.cast::<Wrapper<T>>();
    // No other user is left, and only callbacks of an open device queue the
    // work item: cancelling it only makes sure no work runs on the data.
    // SAFETY: `vdev` starts a `Wrapper<T>` (see `parts`), whose work item
    // was initialised before registration.
    unsafe { kernel::bindings::cancel_work_sync(dev_work(vdev)) };
    // SAFETY: `initialized` says whether `data` holds a value, which is
    // dropped in place (the core frees the memory); nobody else holds a
    // reference to the device any more, so nothing uses the data.
    unsafe {
        if (*wrapper).initialized {
            (*wrapper).data.assume_init_drop();
        }
    }
}

/// # Safety
///
/// Called by the VFIO core (`open_device`); see [`parts`].
unsafe extern "C" fn open_callback<T: DeviceOps>(vdev: *mut sys::vfio_device) -> i32 {
    // SAFETY: A callback of `OpsTable::<T>::OPS`: see `parts`.
    let (data, dev) = unsafe { parts::<T>(vdev) };
    from_result(|| data.open(dev).map(|()| 0))
}

/// # Safety
///
/// Called by the VFIO core (`close_device`); see [`parts`].
unsafe extern "C" fn close_callback<T: DeviceOps>(vdev: *mut sys::vfio_device) {
    // SAFETY: A callback of `OpsTable::<T>::OPS`: see `parts`.
    let (data, dev) = unsafe { parts::<T>(vdev) };
    data.close(dev);
    // SAFETY: `vdev` starts a `Wrapper<T>` (see `parts`) whose work item was
    // initialised before registration. Once this returns the work is
    // neither queued nor running, so it never runs on a closed device.
    unsafe { kernel::bindings::cancel_work_sync(dev_work(vdev)) };
}

/// The work item of a registered device.
///
/// # Safety
///
/// `vdev` must start a `Wrapper`.
unsafe fn dev_work(vdev: *mut sys::vfio_device) -> *mut kernel::bindings::work_struct {
    // SAFETY: By the function's safety requirements, `vdev` starts a
    // `Header`.
    unsafe { Opaque::raw_get(addr_of_mut!((*vdev.cast::<Header>()).work)) }
}

/// # Safety
///
/// Called by the VFIO core (`dma_unmap`); see [`parts`].
unsafe extern "C" fn dma_unmap_callback<T: DeviceOps>(
    vdev: *mut sys::vfio_device,
    iova: u64,
    length: u64,
) {
    // SAFETY: A callback of `OpsTable::<T>::OPS`: see `parts`.
    let (data, dev) = unsafe { parts::<T>(vdev) };
    data.dma_unmap(dev, iova, length);
}

/// # Safety
///
/// Called by the workqueue with the work item of a `Wrapper<T>` (the only
/// work items initialised with this function), whose device is open:
/// `close_callback` cancels the work before the device is closed.
unsafe extern "C" fn work_callback<T: DeviceOps>(work: *mut kernel::bindings::work_struct) {
    // SAFETY: By the function's safety requirements `work` is the `work` of
    // a `Header`, so the subtraction stays inside that allocation.
    let header = unsafe {
        kernel::container_of!(
            work.cast::<Opaque<kernel::bindings::work_struct>>(),
            Header,
            work
        )
    };
    // CAST: A `Header` starts with its `vdev` (`repr(C)`).
    let vdev = header.cast_mut().cast::<sys::vfio_device>();
    // SAFETY: The work item of a `Wrapper<T>` of an open device: see
    // `parts`.
    let (data, dev) = unsafe { parts::<T>(vdev) };
    data.work(dev);
}

/// Reads the file position VFIO passes as `*ppos`.
///
/// # Safety
///
/// `ppos` must be valid for reads.
unsafe fn position(ppos: *mut kernel::bindings::loff_t) -> Result<u64> {
    // SAFETY: By the function's safety requirements.
    let pos = unsafe { *ppos };
    u64::try_from(pos).map_err(|_| EINVAL)
}

/// # Safety
///
/// Called by the VFIO core (`read`) with a user buffer of `count` bytes and
/// a valid `ppos`; see [`parts`].
unsafe extern "C" fn read_callback<T: DeviceOps>(
    vdev: *mut sys::vfio_device,
    buf: *mut c_char,
    count: usize,
    ppos: *mut kernel::bindings::loff_t,
) -> isize {
    from_result(|| {
        // SAFETY: The core passes a `ppos` valid for the call.
        let pos = unsafe { position(ppos) }?;
        let user = UserSlice::new(buf as usize, count).writer();
        // SAFETY: A callback of `OpsTable::<T>::OPS`: see `parts`.
        let (data, dev) = unsafe { parts::<T>(vdev) };
        let done = data.read(dev, user, pos)?;
        // SAFETY: The core passes a `ppos` valid for the call.
        unsafe { advance(ppos, pos, done) }
    })
}

/// # Safety
///
/// Called by the VFIO core (`write`) with a user buffer of `count` bytes
/// and a valid `ppos`; see [`parts`].
unsafe extern "C" fn write_callback<T: DeviceOps>(
    vdev: *mut sys::vfio_device,
    buf: *const c_char,
    count: usize,
    ppos: *mut kernel::bindings::loff_t,
) -> isize {
    from_result(|| {
        // SAFETY: The core passes a `ppos` valid for the call.
        let pos = unsafe { position(ppos) }?;
        let user = UserSlice::new(buf as usize, count).reader();
        // SAFETY: A callback of `OpsTable::<T>::OPS`: see `parts`.
        let (data, dev) = unsafe { parts::<T>(vdev) };
        let done = data.write(dev, user, pos)?;
        // SAFETY: The core passes a `ppos` valid for the call.
        unsafe { advance(ppos, pos, done) }
    })
}

/// Moves the file position past `done` bytes and returns `done`.
///
/// # Safety
///
/// `ppos` must be valid for writes.
unsafe fn advance(ppos: *mut kernel::bindings::loff_t, pos: u64, done: usize) -> Result<isize> {
    let new_pos = pos
        .checked_add(done as u64)
        .and_then(|p| i64::try_from(p).ok())
        .ok_or(EINVAL)?;
    // SAFETY: By the function's safety requirements.
    unsafe { *ppos = new_pos };
    isize::try_from(done).map_err(|_| EINVAL)
}

/// # Safety
///
/// Called by the VFIO core (`ioctl`); see [`parts`].
unsafe extern "C" fn ioctl_callback<T: DeviceOps>(
    vdev: *mut sys::vfio_device,
    cmd: c_uint,
    arg: c_ulong,
) -> c_long {
    from_result(|| {
        // SAFETY: A callback of `OpsTable::<T>::OPS`: see `parts`.
        let (data, dev) = unsafe { parts::<T>(vdev) };
        let ret = data.ioctl(dev, cmd, arg)?;
        Ok(ret as c_long)
    })
}

/// # Safety
///
/// Called by the VFIO core (`mmap`, from the device file's `mmap`, with the
/// mm locked for writing and `vma` not yet in its tree); see [`parts`].
unsafe extern "C" fn mmap_callback<T: DeviceOps>(
    vdev: *mut sys::vfio_device,
    vma: *mut kernel::bindings::vm_area_struct,
) -> i32 {
    from_result(|| {
        // SAFETY: A callback of `OpsTable::<T>::OPS`: see `parts`.
        let (data, dev) = unsafe { parts::<T>(vdev) };
        // SAFETY: The VMA of the mmap this callback is, used only during it.
        let vma = unsafe { Vma::from_raw(vma) };
        data.mmap(dev, vma).map(|()| 0)
    })
}

/// # Safety
///
/// Called by the VFIO core (`migration_set_state`); see [`parts`].
unsafe extern "C" fn migration_set_state_callback<T: DeviceOps>(
    vdev: *mut sys::vfio_device,
    new_state: sys::vfio_device_mig_state,
) -> *mut kernel::bindings::file {
    // SAFETY: A callback of `OpsTable::<T>::MIGRATION_OPS`: see `parts`.
    let (_, dev) = unsafe { parts::<T>(vdev) };
    // SAFETY: A callback of `OpsTable::<T>::MIGRATION_OPS`, as just above:
    // see `parts`.
    let this = unsafe { DeviceRef::<T>::new(vdev) };
    match T::migration_set_state(this, dev, new_state) {
        Ok(Some(file)) => file.into_raw(),
        Ok(None) => core::ptr::null_mut(),
        // SAFETY: `ERR_PTR` only encodes the errno in a pointer.
        Err(e) => unsafe { kernel::bindings::ERR_PTR(e.to_errno() as c_long) }.cast(),
    }
}

/// # Safety
///
/// Called by the VFIO core (`migration_get_state`) with a `state` valid for
/// writes; see [`parts`].
unsafe extern "C" fn migration_get_state_callback<T: DeviceOps>(
    vdev: *mut sys::vfio_device,
    state: *mut sys::vfio_device_mig_state,
) -> i32 {
    from_result(|| {
        // SAFETY: A callback of `OpsTable::<T>::MIGRATION_OPS`: see `parts`.
        let (data, dev) = unsafe { parts::<T>(vdev) };
        let current = data.migration_get_state(dev)?;
        // SAFETY: The core passes a `state` valid for writes.
        unsafe { *state = current };
        Ok(0)
    })
}

/// # Safety
///
/// Called by the VFIO core (`migration_get_data_size`) with a `size` valid
/// for writes; see [`parts`].
unsafe extern "C" fn migration_get_data_size_callback<T: DeviceOps>(
    vdev: *mut sys::vfio_device,
    size: *mut c_ulong,
) -> i32 {
    from_result(|| {
        // SAFETY: A callback of `OpsTable::<T>::MIGRATION_OPS`: see `parts`.
        let (data, dev) = unsafe { parts::<T>(vdev) };
        let bytes = data.migration_get_data_size(dev)?;
        // SAFETY: The core passes a `size` valid for writes.
        unsafe { *size = bytes as c_ulong };
        Ok(0)
    })
}

/// # Safety
///
/// Called by the VFIO core (`log_start`); see [`parts`]. The ranges are
/// not looked at: the device logs every IOVA.
unsafe extern "C" fn log_start_callback<T: DeviceOps>(
    vdev: *mut sys::vfio_device,
    _ranges: *mut kernel::bindings::rb_root_cached,
    _nnodes: u32,
    _page_size: *mut u64,
) -> i32 {
    from_result(|| {
        // SAFETY: A callback of `OpsTable::<T>::LOG_OPS`: see `parts`.
        let (data, dev) = unsafe { parts::<T>(vdev) };
        data.log_start(dev).map(|()| 0)
    })
}

/// # Safety
///
/// Called by the VFIO core (`log_stop`); see [`parts`].
unsafe extern "C" fn log_stop_callback<T: DeviceOps>(vdev: *mut sys::vfio_device) -> i32 {
    from_result(|| {
        // SAFETY: A callback of `OpsTable::<T>::LOG_OPS`: see `parts`.
        let (data, dev) = unsafe { parts::<T>(vdev) };
        data.log_stop(dev).map(|()| 0)
    })
}

/// # Safety
///
/// Called by the VFIO core (`log_read_and_clear`) with a bitmap valid for
/// the call; see [`parts`].
unsafe extern "C" fn log_read_and_clear_callback<T: DeviceOps>(
    vdev: *mut sys::vfio_device,
    iova: c_ulong,
    length: c_ulong,
    dirty: *mut sys::iova_bitmap,
) -> i32 {
    from_result(|| {
        // SAFETY: A callback of `OpsTable::<T>::LOG_OPS`: see `parts`.
        let (data, dev) = unsafe { parts::<T>(vdev) };
        // CAST: `IovaBitmap` is a transparent wrapper of the C struct.
        // SAFETY: The core passes a bitmap valid for the call.
        let dirty = unsafe { &*dirty.cast::<IovaBitmap>() };
        data.log_read_and_clear(dev, iova as u64, length as u64, dirty)
            .map(|()| 0)
    })
}
