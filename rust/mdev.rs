// SPDX-License-Identifier: GPL-2.0

//! Mediated device parents (`srctree/include/linux/mdev.h`).
//!
//! [`Registration`] does what mtty's module init does: registers the mdev
//! driver, creates a class and a parent device of the driver's name, and
//! registers that device as an mdev parent with the driver's types. Each mdev
//! created through sysfs becomes a [`vfio::Registration`] of the driver's
//! device type; removing the mdev drops it.

use crate::{sys, vfio};
use core::marker::PhantomData;
use core::ptr::{addr_of_mut, null_mut};
use kernel::bindings;
use kernel::c_str;
use kernel::error::{from_err_ptr, from_result, to_result};
use kernel::ffi::c_char;
use kernel::prelude::*;
use kernel::types::Opaque;

/// Most types a driver may offer.
const MAX_TYPES: usize = 4;

/// One mdev type: a directory under `mdev_supported_types`.
pub(crate) struct TypeInfo {
    /// Directory suffix: the directory is `<driver name>-<sysfs_name>`.
    pub(crate) sysfs_name: &'static CStr,
    /// Contents of the `name` attribute.
    pub(crate) pretty_name: &'static CStr,
    /// Contents of the `description` attribute.
    pub(crate) description: &'static CStr,
}

/// An mdev parent driver whose devices are VFIO devices.
pub(crate) trait Driver: 'static {
    /// Name of the driver, its class and its parent device.
    const NAME: &'static CStr;
    /// The types, at most [`MAX_TYPES`].
    const TYPES: &'static [TypeInfo];
    /// The VFIO device each mdev is.
    type Device: vfio::DeviceOps;

    /// Initialiser for the device of a new mdev of type `type_index`.
    fn new_device(type_index: usize) -> impl PinInit<Self::Device, Error>;

    /// How many more mdevs of type `type_index` can be created.
    fn available(type_index: usize) -> u32;
}

/// A type as registered with the mdev core.
#[repr(C)]
#[pin_data]
struct TypeSlot {
    #[pin]
    mtype: Opaque<sys::mdev_type>,
    index: usize,
}

/// A registered mdev parent driver.
///
/// # Invariants
///
/// The flags and pointers record which registration steps succeeded; drop
/// undoes exactly those. The C structures live in this pinned allocation,
/// which outlives their registration.
#[pin_data(PinnedDrop)]
pub(crate) struct Registration<T: Driver> {
    #[pin]
    driver: Opaque<sys::mdev_driver>,
    #[pin]
    parent: Opaque<sys::mdev_parent>,
    #[pin]
    types: [TypeSlot; MAX_TYPES],
    type_ptrs: [*mut sys::mdev_type; MAX_TYPES],
    class: *mut bindings::class,
    parent_dev: *mut bindings::device,
    driver_registered: bool,
    parent_registered: bool,
    _driver: PhantomData<T>,
}

// SAFETY: After registration the C structures are only used by the mdev core,
// under its own locking; the Rust side only touches them again in drop.
unsafe impl<T: Driver> Send for Registration<T> {}
// SAFETY: `&Registration` gives access to nothing.
unsafe impl<T: Driver> Sync for Registration<T> {}

impl<T: Driver> Registration<T> {
    /// Registers the driver, its class, parent device and types.
    pub(crate) fn new(module: &'static ThisModule) -> Result<Pin<KBox<Self>>> {
        const { assert!(T::TYPES.len() <= MAX_TYPES) };
        let mut reg = KBox::pin_init(
            pin_init!(Self {
                driver <- Opaque::ffi_init(|p: *mut sys::mdev_driver| {
                    // SAFETY: `p` is valid for writes; zero is a valid
                    // `mdev_driver` (all pointers null).
                    unsafe { p.write_bytes(0, 1) }
                }),
                parent <- Opaque::ffi_init(|p: *mut sys::mdev_parent| {
                    // SAFETY: `p` is valid for writes; zero is what
                    // `mdev_register_parent` expects to set up.
                    unsafe { p.write_bytes(0, 1) }
                }),
                types <- kernel::init::pin_init_array_from_fn(|index| {
                    pin_init!(TypeSlot {
                        mtype <- Opaque::ffi_init(|p: *mut sys::mdev_type| {
                            // SAFETY: `p` is valid for writes; zero is a
                            // valid `mdev_type` (null names, no kobject yet),
                            // filled in by `register`.
                            unsafe { p.write_bytes(0, 1) }
                        }),
                        index,
                    })
                }),
                type_ptrs: [null_mut(); MAX_TYPES],
                class: null_mut(),
                parent_dev: null_mut(),
                driver_registered: false,
                parent_registered: false,
                _driver: PhantomData,
            }),
            GFP_KERNEL,
        )?;
        // On error, dropping `reg` undoes the steps that succeeded.
        // SAFETY: `register` moves nothing out of the pinned allocation.
        unsafe { reg.as_mut().get_unchecked_mut() }.register(module)?;
        Ok(reg)
    }

    /// The registration steps; `self` is pinned.
    fn register(&mut self, module: &'static ThisModule) -> Result {
        let drv = self.driver.get();
        // SAFETY: `drv` is valid and not yet shared with C.
        unsafe {
            (*drv).device_api = sys::VFIO_DEVICE_API_PCI_STRING.as_ptr().cast();
            (*drv).probe = Some(probe_callback::<T>);
            (*drv).remove = Some(remove_callback::<T>);
            (*drv).get_available = Some(get_available_callback::<T>);
            (*drv).show_description = Some(show_description_callback::<T>);
            (*drv).driver.name = T::NAME.as_char_ptr();
            (*drv).driver.mod_name = T::NAME.as_char_ptr();
            (*drv).driver.owner = module.as_ptr();
        }
        // SAFETY: `drv` is a filled-in driver in pinned memory.
        to_result(unsafe { sys::mdev_register_driver(drv) })?;
        self.driver_registered = true;

        // SAFETY: The name is a static C string.
        self.class = from_err_ptr(unsafe { bindings::class_create(T::NAME.as_char_ptr()) })?;

        self.parent_dev = new_parent_device(self.class, T::NAME)?;

        for (slot, (info, ptr)) in self
            .types
            .iter()
            .zip(T::TYPES.iter().zip(self.type_ptrs.iter_mut()))
        {
            let mtype = slot.mtype.get();
            // SAFETY: `mtype` is valid and not yet shared with C; the names
            // are static.
            unsafe {
                (*mtype).sysfs_name = info.sysfs_name.as_char_ptr();
                (*mtype).pretty_name = info.pretty_name.as_char_ptr();
            }
            *ptr = mtype;
        }
        // SAFETY: Everything passed is pinned and outlives the registration.
        to_result(unsafe {
            sys::mdev_register_parent(
                self.parent.get(),
                self.parent_dev,
                drv,
                self.type_ptrs.as_mut_ptr(),
                T::TYPES.len() as u32,
            )
        })?;
        self.parent_registered = true;
        Ok(())
    }
}

#[pinned_drop]
impl<T: Driver> PinnedDrop for Registration<T> {
    fn drop(self: Pin<&mut Self>) {
        // SAFETY: Nothing is moved out.
        let this = unsafe { self.get_unchecked_mut() };
        if this.parent_registered {
            // SAFETY: Registered by `register`; this removes every mdev.
            unsafe { sys::mdev_unregister_parent(this.parent.get()) };
        }
        if !this.parent_dev.is_null() {
            // SAFETY: Added by `new_parent_device`; the last put frees it.
            unsafe {
                bindings::device_del(this.parent_dev);
                bindings::put_device(this.parent_dev);
            }
        }
        if this.driver_registered {
            // SAFETY: Registered by `register`.
            unsafe { sys::mdev_unregister_driver(this.driver.get()) };
        }
        if !this.class.is_null() {
            // SAFETY: Created by `register`; no device uses it any more.
            unsafe { bindings::class_destroy(this.class) };
        }
    }
}

/// Allocates and adds the parent device, `/sys/devices/virtual/<name>/<name>`.
fn new_parent_device(
    class: *mut bindings::class,
    name: &'static CStr,
) -> Result<*mut bindings::device> {
    let mut boxed = KBox::<bindings::device>::new_uninit(GFP_KERNEL)?;
    // SAFETY: Zero is the state `device_initialize` expects.
    unsafe { boxed.as_mut_ptr().write_bytes(0, 1) };
    // SAFETY: Just zeroed.
    let dev = KBox::into_raw(unsafe { boxed.assume_init() });
    // SAFETY: `dev` is a zeroed device we own; from here on its memory
    // belongs to the device core and `release_parent_device` frees it.
    unsafe {
        bindings::device_initialize(dev);
        (*dev).class = class;
        (*dev).release = Some(release_parent_device);
    }
    // SAFETY: `dev` is initialised; the format takes one C string.
    let ret = to_result(unsafe {
        bindings::dev_set_name(dev, c_str!("%s").as_char_ptr(), name.as_char_ptr())
    })
    // SAFETY: `dev` is initialised and named.
    .and_then(|()| to_result(unsafe { bindings::device_add(dev) }));
    if let Err(e) = ret {
        // SAFETY: Drops the initial reference, freeing the device.
        unsafe { bindings::put_device(dev) };
        return Err(e);
    }
    Ok(dev)
}

/// # Safety
///
/// Called by the device core once the last reference to a parent device
/// allocated by [`new_parent_device`] is gone.
unsafe extern "C" fn release_parent_device(dev: *mut bindings::device) {
    // SAFETY: `dev` came from `KBox::into_raw` and nobody uses it any more.
    drop(unsafe { KBox::from_raw(dev) });
}

/// The index of a type registered by [`Registration::register`].
///
/// # Safety
///
/// `mtype` must be the `mtype` of a [`TypeSlot`] of a live registration.
///
/// The mdev core calls back with a type only for a parent it knows, and
/// the only parent this driver registers is a [`Registration`], with the
/// `mtype`s of its own `types` (`register` puts exactly those in
/// `type_ptrs`); the registration outlives the parent's registration, so
/// every type the core passes to a callback of `T` meets this. The
/// callbacks below cite this argument.
unsafe fn type_index<T: Driver>(mtype: *mut sys::mdev_type) -> Result<usize> {
    // SAFETY: By the function's safety requirements `mtype` is embedded in a
    // `TypeSlot` (`Opaque` is transparent).
    let slot = unsafe { &*kernel::container_of!(mtype, TypeSlot, mtype) };
    if slot.index < T::TYPES.len() {
        Ok(slot.index)
    } else {
        Err(EINVAL)
    }
}

/// # Safety
///
/// Called by the mdev core for a new mdev of one of the types of `T`.
unsafe extern "C" fn probe_callback<T: Driver>(mdev: *mut sys::mdev_device) -> i32 {
    from_result(|| {
        // SAFETY: An mdev of this driver's parent has one of its types:
        // see `type_index`.
        let index = unsafe { type_index::<T>((*mdev).type_) }?;
        // SAFETY: The mdev outlives its VFIO device, which `remove_callback`
        // unregisters.
        let reg = unsafe {
            vfio::Registration::<T::Device>::new(addr_of_mut!((*mdev).dev), T::new_device(index))
        }?;
        // SAFETY: The driver owns `driver_data` while bound.
        unsafe { (*mdev).dev.driver_data = reg.into_raw() };
        Ok(0)
    })
}

/// # Safety
///
/// Called by the mdev core for an mdev that `probe_callback` bound.
unsafe extern "C" fn remove_callback<T: Driver>(mdev: *mut sys::mdev_device) {
    // SAFETY: `probe_callback` stored a registration there.
    let raw = unsafe { core::mem::replace(&mut (*mdev).dev.driver_data, null_mut()) };
    // SAFETY: `raw` came from `into_raw` on a registration of this type.
    drop(unsafe { vfio::Registration::<T::Device>::from_raw(raw) });
}

/// # Safety
///
/// Called by the mdev core with one of the types of `T`.
unsafe extern "C" fn get_available_callback<T: Driver>(mtype: *mut sys::mdev_type) -> u32 {
    // SAFETY: A type of this driver's parent: see `type_index`.
    unsafe { type_index::<T>(mtype) }.map_or(0, T::available)
}

/// # Safety
///
/// Called by the mdev core with one of the types of `T` and a sysfs page.
unsafe extern "C" fn show_description_callback<T: Driver>(
    mtype: *mut sys::mdev_type,
    buf: *mut c_char,
) -> isize {
    from_result(|| {
        // SAFETY: A type of this driver's parent: see `type_index`.
        let index = unsafe { type_index::<T>(mtype) }?;
        let text = T::TYPES.get(index).ok_or(EINVAL)?.description;
        // SAFETY: `buf` is the sysfs page; the format takes one C string.
        let n =
            unsafe { bindings::sysfs_emit(buf, c_str!("%s\n").as_char_ptr(), text.as_char_ptr()) };
        Ok(n as isize)
    })
}
