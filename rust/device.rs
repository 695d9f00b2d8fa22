// SPDX-License-Identifier: GPL-2.0

//! The sample device: what each mdev of this driver is.
//!
//! An emulated PCI function with a configuration space, a register BAR
//! (BAR0), a device-memory BAR (BAR2), a DMA engine and INTx/MSI through
//! eventfds. The register and configuration logic lives in
//! [`crate::logic`]; this file holds the state, its lock, and the VFIO
//! callbacks. Documented for users in `Documentation/device.rst`.

use crate::anon_file::NewFile;
use crate::driver::PoolShare;
use crate::eventfd::EventFd;
use crate::logic::abi::{self, bar0, config};
use crate::logic::config_space::ConfigSpace;
use crate::logic::dma::DmaWrite;
use crate::logic::migration_region::{self as layout, MmapArea};
use crate::logic::regions::{self, Region};
use crate::logic::regs::{self, dword_offsets, Live, Registers, Route, WriteEffect};
use crate::vfio::{self, uapi, DeviceRef, IovaBitmap};
use crate::vma::{Vma, VM_DONTDUMP, VM_DONTEXPAND, VM_MAYWRITE, VM_SHARED, VM_WRITE};
use errors::refused;
use kernel::alloc::flags::__GFP_ZERO;
use kernel::c_str;
use kernel::page::PAGE_SIZE;
use kernel::prelude::*;
use kernel::sync::lock::{mutex::MutexBackend, Guard};
use kernel::sync::{CondVar, Mutex};
use kernel::time::msecs_to_jiffies;
use kernel::uaccess::{UserSliceReader, UserSliceWriter};
use kernel::{new_condvar, new_mutex};

mod dma;
mod errors;
mod ioctl;
mod migration;
mod v2;

/// One mdev's device.
#[pin_data]
pub(crate) struct SampleDevice {
    mem_size: usize,
    /// The device memory's share of the driver's pool.
    _share: PoolShare,
    /// Everything an access may change. One lock serialises all accesses,
    /// so no access ever sees another half done.
    #[pin]
    state: Mutex<State>,
    /// Wakes the DMA engine's work when it sleeps between writer rounds.
    #[pin]
    engine_wake: CondVar,
    /// The guest pages the device holds pinned (the `dma_unmap` callback's
    /// lock, see `device/dma.rs`).
    #[pin]
    pins: dma::GuestPins,
    /// Maps the migration region's data and bitmap areas. Outside the
    /// state lock: an mmap holds the mm lock, which an access copying to
    /// userspace under the state lock may take.
    areas: migration::AreaMappers,
}

/// The device's state, under [`SampleDevice::state`].
///
/// Its methods live with what they implement: power-on, interrupts and
/// status here; the DMA engine, the ring and unmaps in `device/dma.rs`
/// (`engine_*`, `ring_sync`, `apply_unmaps`); the migration region and the
/// effects of state changes in `device/migration.rs` (`migration_read`,
/// `migration_write`, `apply_transition`, `encode_into`, `decode`); the v2
/// data files in `device/v2.rs` (`data_file_*`, `precopy_info`).
struct State {
    config: ConfigSpace,
    regs: Registers,
    /// BAR2 contents.
    mem: KVVec<u8>,
    intx: Option<EventFd>,
    msi: Option<EventFd>,
    intx_masked: bool,
    engine: dma::Engine,
    mig: migration::Migration,
}

/// `len` zeroed bytes (kmalloc or vmalloc, whichever fits).
fn zeroed_bytes(len: usize) -> Result<KVVec<u8>> {
    let mut bytes = KVVec::with_capacity(len, GFP_KERNEL | __GFP_ZERO)?;
    // SAFETY: The capacity is `len` bytes, zeroed by the allocator, and zero
    // is a valid `u8`.
    unsafe { bytes.set_len(len) };
    Ok(bytes)
}

impl State {
    /// `type_id` numbers the types from 1; it is the PCI subsystem ID and
    /// the stream's type.
    fn new(mem_size: usize, type_id: u16) -> Result<Self> {
        Ok(State {
            config: ConfigSpace::new(mem_size as u64, type_id),
            regs: Registers::default(),
            mem: zeroed_bytes(mem_size)?,
            intx: None,
            msi: None,
            intx_masked: false,
            engine: dma::Engine::new()?,
            mig: migration::Migration::new(u32::from(type_id), mem_size)?,
        })
    }

    /// Returns the function to its power-on state and the migration state
    /// to `NONE`, dropping any stream and dirty log (reset and close). The
    /// eventfds are the VMM's wiring, not device state, and stay.
    fn power_on_reset(&mut self, pins: &dma::GuestPins) {
        self.power_on_device(pins);
        self.mig.reset();
    }

    /// Power-on state of the function itself: configuration space,
    /// registers (which stops the DMA engine), device memory, the INTx mask,
    /// and no pinned pages.
    fn power_on_device(&mut self, pins: &dma::GuestPins) {
        self.config.reset();
        self.regs = Registers::default();
        self.mem.fill(0);
        self.intx_masked = false;
        self.engine.stop();
        pins.release();
    }

    /// Where an interrupt goes now.
    fn route(&self) -> Route {
        regs::route(
            self.msi.is_some(),
            self.intx.is_some(),
            self.intx_masked,
            self.config.intx_disabled(),
        )
    }

    /// Delivers an interrupt where the wiring says.
    fn interrupt(&mut self) {
        let target = match self.route() {
            Route::Msi => self.msi.as_ref(),
            Route::Intx => {
                self.intx_masked = true;
                self.intx.as_ref()
            }
            Route::Dropped => None,
        };
        if let Some(efd) = target {
            efd.signal();
            self.regs.note_delivered();
        }
    }

    /// INTx is level-triggered, as in vfio-pci: while an enabled cause is
    /// pending, the line asserts again as soon as it can (unmasked,
    /// `INTX_DISABLE` cleared, the cause enabled), so no cause raised while
    /// it could not is lost.
    fn intx_level(&mut self) {
        if self.regs.asserted() && self.route() == Route::Intx {
            self.interrupt();
        }
    }

    fn status(&self) -> u32 {
        if self.mig.running() {
            0
        } else {
            bar0::STATUS_QUIESCED
        }
    }
}

impl SampleDevice {
    /// A device of type `type_id` (the PCI subsystem ID and the stream's
    /// type) whose device memory is `share`.
    pub(crate) fn new(share: Result<PoolShare>, type_id: u16) -> impl PinInit<Self, Error> {
        let size = share.as_ref().map(PoolShare::mem_size).map_err(|e| *e);
        let state = size.and_then(|size| State::new(size, type_id));
        let areas = state.as_ref().map(|s| s.mig.mappers()).map_err(|e| *e);
        try_pin_init!(Self {
            mem_size: size?,
            _share: share?,
            state <- new_mutex!(state?, "vfio_mig_sample:state"),
            engine_wake <- new_condvar!("vfio_mig_sample:engine_wake"),
            pins <- dma::GuestPins::new(),
            areas: areas?,
        }? Error)
    }

    /// `VFIO_DEVICE_RESET`: back to power-on, with no migration under way.
    fn reset(&self) {
        self.lock().power_on_reset(&self.pins);
        self.engine_wake.notify_all();
    }

    /// Lets the DMA engine's work run if the device has work for it: after
    /// any access that may have given it some.
    fn kick_engine(&self, dev: &vfio::Device, state: &State) {
        if state.engine_has_work() {
            dev.schedule_work();
            self.engine_wake.notify_all();
        }
    }

    /// Locks the device state, bringing it up to date with unmaps the
    /// `dma_unmap` callback recorded.
    fn lock(&self) -> Guard<'_, State, MutexBackend> {
        let mut state = self.state.lock();
        state.apply_unmaps(&self.pins);
        state
    }

    /// Locks the state for a BAR write, which a quiesced device refuses.
    fn lock_running(&self) -> Result<Guard<'_, State, MutexBackend>> {
        let state = self.lock();
        if state.mig.running() {
            Ok(state)
        } else {
            Err(EBUSY)
        }
    }

    fn region_size(&self, region: Region) -> u64 {
        match region {
            Region::Bar0 => bar0::SIZE,
            Region::Bar2 => self.mem_size as u64,
            Region::Config => config::SIZE as u64,
            Region::Migration => abi::migration::REGION_SIZE,
        }
    }

    /// Each dword is one register read, in address order.
    fn read_bar0(&self, state: &State, offset: u64, buf: &mut UserSliceWriter) -> Result {
        let offsets = dword_offsets(offset, buf.len())?;
        let live = Live {
            mem_size: self.mem_size as u64,
            status: state.status(),
            pinned: self.pins.pinned_pages(),
        };
        for off in offsets {
            buf.write(&state.regs.read(off, &live))?;
        }
        Ok(())
    }

    /// Each dword is one register write, in address order; a refused one
    /// (`DMA_CMD` while a command is queued) ends the access with `EBUSY`.
    fn write_bar0(
        &self,
        state: &mut State,
        dev: &vfio::Device,
        offset: u64,
        buf: &mut UserSliceReader,
    ) -> Result {
        for off in dword_offsets(offset, buf.len())? {
            let val = buf.read::<u32>()?;
            match state.regs.write(off, val) {
                WriteEffect::Interrupt => state.interrupt(),
                WriteEffect::Level => state.intx_level(),
                WriteEffect::Dma(DmaWrite::Busy) => return Err(EBUSY),
                WriteEffect::Dma(DmaWrite::Ring) => state.ring_sync(dev, &self.pins),
                WriteEffect::None | WriteEffect::Dma(DmaWrite::None | DmaWrite::Kick) => {}
            }
        }
        Ok(())
    }
}

/// A config space read: copied out after the lock is dropped.
///
/// Out of line, as is [`read_migration`]: inlined, they made `read` a
/// large function that every register read entered (testing.rst, "BAR0
/// read").
#[inline(never)]
fn read_config(
    state: Guard<'_, State, MutexBackend>,
    offset: u64,
    buf: &mut UserSliceWriter,
) -> Result {
    let mut bytes = [0u8; config::SIZE];
    let out = bytes.get_mut(..buf.len()).ok_or(EINVAL)?;
    state.config.read(offset as usize, out)?;
    drop(state);
    buf.write_slice(out)
}

/// A migration region read (see [`read_config`] for why apart).
#[inline(never)]
fn read_migration(
    mut state: Guard<'_, State, MutexBackend>,
    pins: &dma::GuestPins,
    offset: u64,
    buf: &mut UserSliceWriter,
) -> Result {
    state.migration_read(pins, offset, buf)
}

/// `offset..offset + len` as a slice range (already bounds-checked by
/// [`regions::locate`]).
fn span(offset: u64, len: usize) -> Result<core::ops::Range<usize>> {
    let start = usize::try_from(offset).map_err(|_| EINVAL)?;
    Ok(start..start.checked_add(len).ok_or(EINVAL)?)
}

#[vtable]
impl vfio::DeviceOps for SampleDevice {
    const NAME: &'static CStr = c_str!("vfio-mig-sample");
    const MIGRATION_FLAGS: u32 =
        uapi::VFIO_MIGRATION_STOP_COPY | uapi::VFIO_MIGRATION_P2P | uapi::VFIO_MIGRATION_PRE_COPY;

    fn open(&self, _dev: &vfio::Device) -> Result {
        Ok(())
    }

    fn close(&self, _dev: &vfio::Device) {
        let mut state = self.lock();
        // DMA logging belongs to the VMM that started it, unlike a reset.
        state.mig.dma_logging = false;
        // Stops the engine and unpins: the work finds nothing left to do.
        state.power_on_reset(&self.pins);
        let intx = state.intx.take();
        let msi = state.msi.take();
        drop(state);
        self.engine_wake.notify_all();
        drop((intx, msi));
    }

    fn read(&self, _dev: &vfio::Device, mut buf: UserSliceWriter, pos: u64) -> Result<usize> {
        let len = buf.len();
        let (region, offset) = regions::locate(pos, len, |r| self.region_size(r))?;
        let state = self.lock();
        match region {
            Region::Config => read_config(state, offset, &mut buf)?,
            Region::Migration => read_migration(state, &self.pins, offset, &mut buf)?,
            Region::Bar0 => self.read_bar0(&state, offset, &mut buf)?,
            Region::Bar2 => {
                let src = state.mem.get(span(offset, len)?).ok_or(EINVAL)?;
                buf.write_slice(src)?;
            }
        }
        Ok(len)
    }

    fn write(&self, dev: &vfio::Device, mut buf: UserSliceReader, pos: u64) -> Result<usize> {
        let len = buf.len();
        let (region, offset) = regions::locate(pos, len, |r| self.region_size(r))?;
        match region {
            Region::Config => {
                let mut bytes = [0u8; config::SIZE];
                let data = bytes.get_mut(..len).ok_or(EINVAL)?;
                buf.read_slice(data)?;
                let mut state = self.lock();
                let disabled = state.config.intx_disabled();
                state.config.write(offset as usize, data)?;
                if disabled {
                    state.intx_level();
                }
            }
            Region::Bar0 => {
                let mut state = self.lock_running()?;
                let res = self.write_bar0(&mut state, dev, offset, &mut buf);
                self.kick_engine(dev, &state);
                res?;
            }
            Region::Bar2 => {
                let mut state = self.lock_running()?;
                let range = span(offset, len)?;
                let dst = state.mem.get_mut(range.clone()).ok_or(EINVAL)?;
                // A copy that faults part way has already changed (zeroed)
                // the rest of the range: dirty whatever the outcome.
                let res = buf.read_slice(dst);
                state.mig.mem_written(&range);
                res?;
            }
            Region::Migration => {
                let mut state = self.lock();
                let res = state.migration_write(dev, &self.pins, offset, &mut buf);
                // A state change may let the device run again.
                self.kick_engine(dev, &state);
                res?;
            }
        }
        Ok(len)
    }

    fn ioctl(&self, _dev: &vfio::Device, cmd: u32, arg: usize) -> Result<isize> {
        self.device_ioctl(cmd, arg)
    }

    /// Only the data and bitmap areas of the migration region map: a
    /// shared mapping inside one of them, the bitmap area read only
    /// (`Documentation/migration-abi.rst`); anything else is `EINVAL`.
    /// Takes no device lock (see `areas`).
    fn mmap(&self, _dev: &vfio::Device, vma: &Vma) -> Result {
        let pos = vma.pgoff().checked_mul(PAGE_SIZE as u64).ok_or(EINVAL)?;
        let (region, offset) = regions::locate(pos, vma.len(), |r| self.region_size(r))
            .map_err(|_| refused("mmap", "not inside a region"))?;
        if region != Region::Migration {
            return Err(refused("mmap", "only the migration region maps"));
        }
        if vma.flags() & VM_SHARED == 0 {
            return Err(refused("mmap", "not a shared mapping"));
        }
        let writable = vma.flags() & VM_WRITE != 0;
        let (area, at) = layout::decode_mmap(offset, vma.len() as u64, writable)
            .map_err(|_| refused("mmap", "not inside one area, or a writable bitmap"))?;
        if area == MmapArea::Bitmap {
            // No mprotect(PROT_WRITE) later either: the device owns it.
            vma.clear_flags(VM_MAYWRITE);
        }
        vma.set_flags(VM_DONTEXPAND | VM_DONTDUMP);
        self.areas.map(area, at, vma)
    }

    /// Takes only the pins lock (see `device/dma.rs`): the registers catch
    /// up when the device lock is next taken.
    fn dma_unmap(&self, _dev: &vfio::Device, iova: u64, length: u64) {
        self.pins.unmap(iova, length);
        // A sleeping engine must not run a command the unmap cancelled.
        self.engine_wake.notify_all();
    }

    /// The DMA engine: runs rounds until it has nothing left to do,
    /// sleeping between writer rounds with the lock released.
    fn work(&self, dev: &vfio::Device) {
        let mut state = self.lock();
        while let Some(ms) = state.engine_round(dev, &self.pins) {
            let _ = self
                .engine_wake
                .wait_interruptible_timeout(&mut state, msecs_to_jiffies(ms as u32));
            state.apply_unmaps(&self.pins);
        }
    }

    fn migration_set_state(
        this: DeviceRef<Self>,
        dev: &vfio::Device,
        new_state: u32,
    ) -> Result<Option<NewFile>> {
        SampleDevice::set_v2_state(this, dev, new_state)
    }

    fn migration_get_state(&self, _dev: &vfio::Device) -> Result<u32> {
        Ok(self.lock().mig.v2.raw())
    }

    fn migration_get_data_size(&self, _dev: &vfio::Device) -> Result<u64> {
        Ok(self.lock().mig.stop_copy_bytes())
    }

    fn log_start(&self, _dev: &vfio::Device) -> Result {
        SampleDevice::log_start(self)
    }

    fn log_stop(&self, _dev: &vfio::Device) -> Result {
        SampleDevice::log_stop(self);
        Ok(())
    }

    fn log_read_and_clear(
        &self,
        _dev: &vfio::Device,
        iova: u64,
        length: u64,
        dirty: &IovaBitmap,
    ) -> Result {
        SampleDevice::log_read_and_clear(self, iova, length, dirty)
    }
}
