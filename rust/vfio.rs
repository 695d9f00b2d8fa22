// SPDX-License-Identifier: GPL-2.0

//! VFIO devices backed by an emulated IOMMU (`vfio_register_emulated_iommu_dev`).
//!
//! C reference: `srctree/include/linux/vfio.h`. A driver implements
//! [`DeviceOps`]; [`Registration`] allocates the `struct vfio_device` with the
//! driver's data in the same allocation, registers it, and unregisters it on
//! drop. The C callbacks are adapted here so that the driver's code never
//! touches a raw pointer.

use crate::sys;
use core::marker::PhantomData;
use core::mem::{offset_of, size_of, MaybeUninit};
use core::ptr::{addr_of_mut, NonNull};
use kernel::error::{from_err_ptr, from_result, to_result};
use kernel::ffi::{c_char, c_long, c_uint, c_ulong};
use kernel::prelude::*;
use kernel::types::Opaque;
use kernel::uaccess::{UserSlice, UserSliceReader, UserSliceWriter};

/// What a VFIO device driver implements.
///
/// Every callback runs in process context and may sleep. VFIO serialises
/// `open` and `close` against each other, but `read`, `write` and `ioctl`
/// may run concurrently from any number of threads.
pub(crate) trait DeviceOps: Sized + Send + Sync + 'static {
    /// The name of the ops table (`vfio_device_ops.name`).
    const NAME: &'static CStr;

    /// The first open of the device (`open_device`).
    fn open(&self) -> Result;

    /// The last close of the device (`close_device`).
    fn close(&self);

    /// A `read` of `buf.len()` bytes at file position `pos`; returns the
    /// number of bytes read.
    fn read(&self, buf: UserSliceWriter, pos: u64) -> Result<usize>;

    /// A `write` of `buf.len()` bytes at file position `pos`; returns the
    /// number of bytes written.
    fn write(&self, buf: UserSliceReader, pos: u64) -> Result<usize>;

    /// A device ioctl other than the ones the VFIO core handles.
    fn ioctl(&self, cmd: u32, arg: usize) -> Result<isize>;
}

/// The allocation `_vfio_alloc_device` makes for a device of type `T`.
///
/// # Invariants
///
/// `data` is initialised exactly when `initialized` is true; both are
/// written only before the device is registered, so the VFIO callbacks can
/// read them without synchronisation.
#[repr(C)]
struct Wrapper<T> {
    /// Must come first: the VFIO core frees the allocation through it.
    vdev: Opaque<sys::vfio_device>,
    initialized: bool,
    data: MaybeUninit<T>,
}

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
        const { assert!(offset_of!(Wrapper<T>, vdev) == 0) };
        let ops: &'static sys::vfio_device_ops = &OpsTable::<T>::OPS;
        // SAFETY: `parent` is valid by the caller's guarantee, the size
        // covers a `vfio_device` at offset 0, and `ops` is static.
        let vdev =
            from_err_ptr(unsafe { sys::_vfio_alloc_device(size_of::<Wrapper<T>>(), parent, ops) })?;
        let wrapper = vdev.cast::<Wrapper<T>>();

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

/// Returns the driver data of a registered device.
///
/// # Safety
///
/// `vdev` must be the `vdev` of a live `Wrapper<T>` with initialised data,
/// and the returned reference must not outlive it.
unsafe fn data<'a, T>(vdev: *mut sys::vfio_device) -> &'a T {
    let wrapper = vdev.cast::<Wrapper<T>>();
    // SAFETY: By the function's safety requirements.
    unsafe { (*wrapper).data.assume_init_ref() }
}

/// # Safety
///
/// Called by the VFIO core when the last reference to `vdev` goes.
unsafe extern "C" fn release_callback<T: DeviceOps>(vdev: *mut sys::vfio_device) {
    let wrapper = vdev.cast::<Wrapper<T>>();
    // SAFETY: No other user is left; `initialized` says whether `data` holds
    // a value, which is dropped in place (the core frees the memory).
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
    from_result(|| unsafe { data::<T>(vdev) }.open().map(|()| 0))
}

/// # Safety
///
/// Called by the VFIO core on a registered device.
unsafe extern "C" fn close_callback<T: DeviceOps>(vdev: *mut sys::vfio_device) {
    // SAFETY: Registered devices have initialised data.
    unsafe { data::<T>(vdev) }.close();
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
        let done = unsafe { data::<T>(vdev) }.read(user, pos)?;
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
        let done = unsafe { data::<T>(vdev) }.write(user, pos)?;
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
        let ret = unsafe { data::<T>(vdev) }.ioctl(cmd, arg)?;
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
