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

use crate::pinned::PinnedPages;
use crate::sys;
use core::marker::PhantomData;
use core::mem::{offset_of, size_of, MaybeUninit};
use core::ptr::{addr_of_mut, NonNull};
use kernel::c_str;
use kernel::error::{from_err_ptr, from_result, to_result};
use kernel::ffi::{c_char, c_long, c_uint, c_ulong, c_void};
use kernel::prelude::*;
use kernel::types::Opaque;
use kernel::uaccess::{UserSlice, UserSliceReader, UserSliceWriter};

/// What a VFIO device driver implements.
///
/// Every callback runs in process context and may sleep. VFIO serialises
/// `open` and `close` against each other, but `read`, `write`, `ioctl`,
/// `dma_unmap` and `work` may run concurrently from any number of threads.
pub(crate) trait DeviceOps: Sized + Send + Sync + 'static {
    /// The name of the ops table (`vfio_device_ops.name`).
    const NAME: &'static CStr;

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

    /// `iova..iova + length` is being unmapped: the driver must unpin every
    /// page it holds pinned in that range before returning.
    fn dma_unmap(&self, dev: &Device, iova: u64, length: u64);

    /// The deferred work queued by [`Device::schedule_work`].
    fn work(&self, dev: &Device);
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
    /// `ptr` must be a registered device, valid for `'a`.
    unsafe fn from_raw<'a>(ptr: *mut sys::vfio_device) -> &'a Device {
        // SAFETY: `Device` is a transparent wrapper of the C struct.
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

/// Returns the driver data of a registered device, and its handle.
///
/// # Safety
///
/// `vdev` must be the `vdev` of a live, registered `Wrapper<T>` with
/// initialised data, and the references must not outlive it.
unsafe fn parts<'a, T>(vdev: *mut sys::vfio_device) -> (&'a T, &'a Device) {
    let wrapper = vdev.cast::<Wrapper<T>>();
    // SAFETY: By the function's safety requirements.
    unsafe { ((*wrapper).data.assume_init_ref(), Device::from_raw(vdev)) }
}

/// # Safety
///
/// Called by the VFIO core when the last reference to `vdev` goes.
unsafe extern "C" fn release_callback<T: DeviceOps>(vdev: *mut sys::vfio_device) {
    let wrapper = vdev.cast::<Wrapper<T>>();
    // No other user is left, and only callbacks of an open device queue the
    // work item: cancelling it only makes sure no work runs on the data.
    // SAFETY: The work item was initialised before registration.
    unsafe { kernel::bindings::cancel_work_sync(dev_work(vdev)) };
    // SAFETY: `initialized` says whether `data` holds a value, which is
    // dropped in place (the core frees the memory).
    unsafe {
        if (*wrapper).initialized {
            (*wrapper).data.assume_init_drop();
        }
    }
}

/// # Safety
///
/// Called by the VFIO core on a registered device.
unsafe extern "C" fn open_callback<T: DeviceOps>(vdev: *mut sys::vfio_device) -> i32 {
    // SAFETY: Registered devices have initialised data.
    let (data, dev) = unsafe { parts::<T>(vdev) };
    from_result(|| data.open(dev).map(|()| 0))
}

/// # Safety
///
/// Called by the VFIO core on a registered device.
unsafe extern "C" fn close_callback<T: DeviceOps>(vdev: *mut sys::vfio_device) {
    // SAFETY: Registered devices have initialised data.
    let (data, dev) = unsafe { parts::<T>(vdev) };
    data.close(dev);
    // SAFETY: The work item was initialised before registration. Once this
    // returns it is neither queued nor running, so it never runs on a
    // closed device.
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
/// Called by the VFIO core on an open device.
unsafe extern "C" fn dma_unmap_callback<T: DeviceOps>(
    vdev: *mut sys::vfio_device,
    iova: u64,
    length: u64,
) {
    // SAFETY: Registered devices have initialised data.
    let (data, dev) = unsafe { parts::<T>(vdev) };
    data.dma_unmap(dev, iova, length);
}

/// # Safety
///
/// Called by the workqueue with the work item of a `Wrapper<T>` (the only
/// work items initialised with this function), whose device is open:
/// `close_callback` cancels the work before the device is closed.
unsafe extern "C" fn work_callback<T: DeviceOps>(work: *mut kernel::bindings::work_struct) {
    let vdev = work
        .cast::<u8>()
        .wrapping_sub(offset_of!(Header, work))
        .cast::<sys::vfio_device>();
    // SAFETY: By the function's safety requirements `vdev` is the device
    // of a live `Wrapper<T>` with initialised data.
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
    u64::try_from(unsafe { *ppos }).map_err(|_| EINVAL)
}

/// # Safety
///
/// Called by the VFIO core on a registered device with a user buffer of
/// `count` bytes and a valid `ppos`.
unsafe extern "C" fn read_callback<T: DeviceOps>(
    vdev: *mut sys::vfio_device,
    buf: *mut c_char,
    count: usize,
    ppos: *mut kernel::bindings::loff_t,
) -> isize {
    from_result(|| {
        // SAFETY: `ppos` is valid for the duration of the call.
        let pos = unsafe { position(ppos) }?;
        let user = UserSlice::new(buf as usize, count).writer();
        // SAFETY: Registered devices have initialised data.
        let (data, dev) = unsafe { parts::<T>(vdev) };
        let done = data.read(dev, user, pos)?;
        // SAFETY: `ppos` is valid for the duration of the call.
        unsafe { advance(ppos, pos, done) }
    })
}

/// # Safety
///
/// Called by the VFIO core on a registered device with a user buffer of
/// `count` bytes and a valid `ppos`.
unsafe extern "C" fn write_callback<T: DeviceOps>(
    vdev: *mut sys::vfio_device,
    buf: *const c_char,
    count: usize,
    ppos: *mut kernel::bindings::loff_t,
) -> isize {
    from_result(|| {
        // SAFETY: `ppos` is valid for the duration of the call.
        let pos = unsafe { position(ppos) }?;
        let user = UserSlice::new(buf as usize, count).reader();
        // SAFETY: Registered devices have initialised data.
        let (data, dev) = unsafe { parts::<T>(vdev) };
        let done = data.write(dev, user, pos)?;
        // SAFETY: `ppos` is valid for the duration of the call.
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
/// Called by the VFIO core on a registered device.
unsafe extern "C" fn ioctl_callback<T: DeviceOps>(
    vdev: *mut sys::vfio_device,
    cmd: c_uint,
    arg: c_ulong,
) -> c_long {
    from_result(|| {
        // SAFETY: Registered devices have initialised data.
        let (data, dev) = unsafe { parts::<T>(vdev) };
        let ret = data.ioctl(dev, cmd, arg)?;
        Ok(ret as c_long)
    })
}

/// The VFIO uapi the device model needs: ioctl numbers, structures and flags.
pub(crate) mod uapi {
    use crate::sys;
    use kernel::ioctl::_IO;
    use kernel::types::{AsBytes, FromBytes};

    pub(crate) use sys::{
        vfio_irq_info, vfio_irq_set, vfio_region_info, VFIO_DEVICE_FLAGS_PCI,
        VFIO_DEVICE_FLAGS_RESET, VFIO_IRQ_INFO_AUTOMASKED, VFIO_IRQ_INFO_EVENTFD,
        VFIO_IRQ_INFO_MASKABLE, VFIO_IRQ_INFO_NORESIZE, VFIO_IRQ_SET_ACTION_MASK,
        VFIO_IRQ_SET_ACTION_TRIGGER, VFIO_IRQ_SET_ACTION_TYPE_MASK, VFIO_IRQ_SET_ACTION_UNMASK,
        VFIO_IRQ_SET_DATA_BOOL, VFIO_IRQ_SET_DATA_EVENTFD, VFIO_IRQ_SET_DATA_NONE,
        VFIO_IRQ_SET_DATA_TYPE_MASK, VFIO_REGION_INFO_CAP_TYPE, VFIO_REGION_INFO_FLAG_CAPS,
        VFIO_REGION_INFO_FLAG_READ, VFIO_REGION_INFO_FLAG_WRITE,
    };

    const fn vfio_io(nr: u32) -> u32 {
        _IO(sys::VFIO_TYPE as u32, sys::VFIO_BASE + nr)
    }

    /// `VFIO_DEVICE_GET_INFO`.
    pub(crate) const DEVICE_GET_INFO: u32 = vfio_io(7);
    /// `VFIO_DEVICE_GET_REGION_INFO`.
    pub(crate) const DEVICE_GET_REGION_INFO: u32 = vfio_io(8);
    /// `VFIO_DEVICE_GET_IRQ_INFO`.
    pub(crate) const DEVICE_GET_IRQ_INFO: u32 = vfio_io(9);
    /// `VFIO_DEVICE_SET_IRQS`.
    pub(crate) const DEVICE_SET_IRQS: u32 = vfio_io(10);
    /// `VFIO_DEVICE_RESET`.
    pub(crate) const DEVICE_RESET: u32 = vfio_io(11);

    /// `VFIO_PCI_INTX_IRQ_INDEX`.
    pub(crate) const INTX_IRQ_INDEX: u32 = sys::VFIO_PCI_INTX_IRQ_INDEX;
    /// `VFIO_PCI_MSI_IRQ_INDEX`.
    pub(crate) const MSI_IRQ_INDEX: u32 = sys::VFIO_PCI_MSI_IRQ_INDEX;
    /// `VFIO_PCI_NUM_IRQS`.
    pub(crate) const NUM_IRQS: u32 = sys::VFIO_PCI_NUM_IRQS;

    // SAFETY: Integers only, no padding (32 bytes), no interior mutability.
    unsafe impl FromBytes for vfio_region_info {}
    // SAFETY: As above.
    unsafe impl AsBytes for vfio_region_info {}
    // SAFETY: Four `u32`s, no padding, no interior mutability.
    unsafe impl FromBytes for vfio_irq_info {}
    // SAFETY: As above.
    unsafe impl AsBytes for vfio_irq_info {}
    // SAFETY: Five `u32`s and an empty flexible array, no padding.
    unsafe impl FromBytes for vfio_irq_set {}

    /// Checks a `VFIO_DEVICE_SET_IRQS` header the way vfio-pci does, for an
    /// index with `num_irqs` interrupts; returns the size of the data that
    /// follows it.
    pub(crate) fn validate_irq_set(
        hdr: &mut vfio_irq_set,
        num_irqs: u32,
    ) -> kernel::error::Result<usize> {
        let mut data_size = 0usize;
        // SAFETY: `hdr` and `data_size` are valid for the call.
        kernel::error::to_result(unsafe {
            sys::vfio_set_irqs_validate_and_prepare(
                hdr,
                num_irqs as i32,
                NUM_IRQS as i32,
                &mut data_size,
            )
        })?;
        Ok(data_size)
    }
}
