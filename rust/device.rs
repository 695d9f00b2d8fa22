// SPDX-License-Identifier: GPL-2.0

//! The sample device: what each mdev of this driver is.
//!
//! An emulated PCI function with a configuration space, a register BAR
//! (BAR0), a device-memory BAR (BAR2), a DMA engine and INTx/MSI through
//! eventfds. The register and configuration logic lives in
//! [`crate::logic`]; this file holds the state, its lock, and the VFIO
//! callbacks. Documented for users in `Documentation/device.rst`.

use crate::eventfd::EventFd;
use crate::logic::abi::{self, bar0, config};
use crate::logic::config_space::ConfigSpace;
use crate::logic::dma::DmaWrite;
use crate::logic::regions::{self, Region};
use crate::logic::regs::{self, Live, Registers, Route, WriteEffect};
use crate::vfio::uapi;
use crate::{mdev, vfio};
use core::sync::atomic::{AtomicU32, Ordering};
use kernel::alloc::flags::__GFP_ZERO;
use kernel::c_str;
use kernel::prelude::*;
use kernel::sync::lock::{mutex::MutexBackend, Guard};
use kernel::sync::{CondVar, Mutex};
use kernel::time::msecs_to_jiffies;
use kernel::uaccess::{UserSlice, UserSliceReader, UserSliceWriter};
use kernel::{new_condvar, new_mutex};

mod dma;
mod migration;

/// Device memory is handed out in units of this size.
const POOL_UNIT: usize = 256 * 1024;
/// Units in the pool shared by all mdevs of the parent (8 MiB).
const POOL_UNITS: u32 = 32;

/// The driver: the parent device and its types.
pub(crate) struct SampleDriver;

/// Device memory size of each type, indexed like [`SampleDriver::TYPES`].
const MEM_SIZES: [usize; 2] = [POOL_UNIT, 8 * POOL_UNIT];

impl mdev::Driver for SampleDriver {
    const NAME: &'static CStr = c_str!("vfio_mig_sample");
    const TYPES: &'static [mdev::TypeInfo] = &[
        mdev::TypeInfo {
            sysfs_name: c_str!("small"),
            pretty_name: c_str!("vfio-mig-sample small"),
            description: c_str!("migratable sample device, 256 KiB device memory"),
        },
        mdev::TypeInfo {
            sysfs_name: c_str!("large"),
            pretty_name: c_str!("vfio-mig-sample large"),
            description: c_str!("migratable sample device, 2 MiB device memory"),
        },
    ];
    type Device = SampleDevice;

    fn new_device(type_index: usize) -> impl PinInit<SampleDevice, Error> {
        SampleDevice::new(type_index)
    }

    fn available(type_index: usize) -> u32 {
        const { assert!(MEM_SIZES.len() == SampleDriver::TYPES.len()) };
        MEM_SIZES
            .get(type_index)
            .and_then(|&size| {
                POOL_FREE
                    .load(Ordering::Relaxed)
                    .checked_div(units_of(size))
            })
            .unwrap_or(0)
    }
}

/// Free units of the device-memory pool.
static POOL_FREE: AtomicU32 = AtomicU32::new(POOL_UNITS);

fn units_of(mem_size: usize) -> u32 {
    (mem_size / POOL_UNIT) as u32
}

/// Units taken from the pool for one device, returned on drop.
struct PoolShare(u32);

impl PoolShare {
    /// Takes `units` from the pool, or fails with `ENOSPC`.
    fn take(units: u32) -> Result<Self> {
        POOL_FREE
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |free| {
                free.checked_sub(units)
            })
            .map(|_| PoolShare(units))
            .map_err(|_| ENOSPC)
    }
}

impl Drop for PoolShare {
    fn drop(&mut self) {
        POOL_FREE.fetch_add(self.0, Ordering::AcqRel);
    }
}

/// One mdev's device.
#[pin_data]
pub(crate) struct SampleDevice {
    mem_size: usize,
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
    pins: dma::PinLock,
}

/// The device's state, under [`SampleDevice::state`].
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
    fn power_on_reset(&mut self, pins: &dma::PinLock) {
        self.power_on_device(pins);
        self.mig.reset();
    }

    /// Power-on state of the function itself: configuration space,
    /// registers (which stops the DMA engine), device memory, the INTx mask,
    /// and no pinned pages.
    fn power_on_device(&mut self, pins: &dma::PinLock) {
        self.config.reset();
        self.regs = Registers::default();
        self.mem.fill(0);
        self.intx_masked = false;
        self.engine.stop();
        pins.release();
    }

    /// Delivers an interrupt where the wiring says.
    fn interrupt(&mut self) {
        let route = regs::route(
            self.msi.is_some(),
            self.intx.is_some(),
            self.intx_masked,
            self.config.intx_disabled(),
        );
        let target = match route {
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

    fn status(&self) -> u32 {
        if self.mig.running() {
            0
        } else {
            bar0::STATUS_QUIESCED
        }
    }
}

impl SampleDevice {
    fn new(type_index: usize) -> impl PinInit<Self, Error> {
        let size = MEM_SIZES.get(type_index).copied().ok_or(EINVAL);
        // Type IDs (PCI subsystem ID, stream type) number the types from 1.
        let type_id = type_index as u16 + 1;
        try_pin_init!(Self {
            mem_size: size?,
            _share: PoolShare::take(units_of(size?))?,
            state <- new_mutex!(State::new(size?, type_id)?, "vfio_mig_sample:state"),
            engine_wake <- new_condvar!("vfio_mig_sample:engine_wake"),
            pins <- dma::PinLock::new(),
        }? Error)
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

    fn get_info(&self, arg: usize) -> Result<isize> {
        // argsz, flags, num_regions, num_irqs: the `minsz` of vfio-pci.
        let (mut reader, mut writer) = UserSlice::new(arg, 16).reader_writer();
        let [argsz, ..] = reader.read::<[u32; 4]>()?;
        if argsz < 16 {
            return Err(EINVAL);
        }
        let flags = uapi::VFIO_DEVICE_FLAGS_PCI | uapi::VFIO_DEVICE_FLAGS_RESET;
        writer.write(&[argsz, flags, abi::region::COUNT, uapi::NUM_IRQS])?;
        Ok(0)
    }

    fn get_region_info(&self, arg: usize) -> Result<isize> {
        let size_of_info = core::mem::size_of::<uapi::vfio_region_info>();
        let (mut reader, mut writer) = UserSlice::new(arg, size_of_info).reader_writer();
        let mut info = reader.read::<uapi::vfio_region_info>()?;
        if (info.argsz as usize) < size_of_info || info.index >= abi::region::COUNT {
            return Err(EINVAL);
        }
        let region = Region::from_index(info.index);
        let size = region.map_or(0, |r| self.region_size(r));
        info.flags = if size > 0 {
            uapi::VFIO_REGION_INFO_FLAG_READ | uapi::VFIO_REGION_INFO_FLAG_WRITE
        } else {
            0
        };
        info.cap_offset = 0;
        info.size = size;
        info.offset = abi::region::offset(info.index);
        if region != Some(Region::Migration) {
            writer.write(&info)?;
            return Ok(0);
        }

        // The migration region carries its type in a capability chain,
        // built the vfio-pci way: too small an argsz gets the size needed.
        let cap = migration_type_cap();
        let needed = (size_of_info + cap.len()) as u32;
        info.flags |= uapi::VFIO_REGION_INFO_FLAG_CAPS;
        if info.argsz < needed {
            info.argsz = needed;
            writer.write(&info)?;
        } else {
            info.cap_offset = size_of_info as u32;
            let mut writer = UserSlice::new(arg, needed as usize).writer();
            writer.write(&info)?;
            writer.write_slice(&cap)?;
        }
        Ok(0)
    }

    fn get_irq_info(&self, arg: usize) -> Result<isize> {
        let size = core::mem::size_of::<uapi::vfio_irq_info>();
        let (mut reader, mut writer) = UserSlice::new(arg, size).reader_writer();
        let mut info = reader.read::<uapi::vfio_irq_info>()?;
        if (info.argsz as usize) < size || info.index >= uapi::NUM_IRQS {
            return Err(EINVAL);
        }
        (info.flags, info.count) = match info.index {
            uapi::INTX_IRQ_INDEX => (
                uapi::VFIO_IRQ_INFO_EVENTFD
                    | uapi::VFIO_IRQ_INFO_MASKABLE
                    | uapi::VFIO_IRQ_INFO_AUTOMASKED,
                1,
            ),
            uapi::MSI_IRQ_INDEX => (
                uapi::VFIO_IRQ_INFO_EVENTFD | uapi::VFIO_IRQ_INFO_NORESIZE,
                1,
            ),
            _ => (0, 0),
        };
        writer.write(&info)?;
        Ok(0)
    }

    fn set_irqs(&self, arg: usize) -> Result<isize> {
        // The header and at most one 4-byte datum (every index has <= 1 IRQ).
        let mut data = [0u8; 4];
        let hdr_size = core::mem::size_of::<uapi::vfio_irq_set>();
        let mut reader = UserSlice::new(arg, hdr_size + data.len()).reader();
        let mut hdr = reader.read::<uapi::vfio_irq_set>()?;
        let num_irqs = match hdr.index {
            uapi::INTX_IRQ_INDEX | uapi::MSI_IRQ_INDEX => 1,
            _ => 0,
        };
        let data_size = uapi::validate_irq_set(&mut hdr, num_irqs)?;
        let data = data.get_mut(..data_size).ok_or(EINVAL)?;
        reader.read_slice(data)?;

        let action = hdr.flags & uapi::VFIO_IRQ_SET_ACTION_TYPE_MASK;
        let data_type = hdr.flags & uapi::VFIO_IRQ_SET_DATA_TYPE_MASK;
        // With DATA_BOOL the single flag decides; DATA_NONE means "do it".
        let asserted = data_type != uapi::VFIO_IRQ_SET_DATA_BOOL || data.first() == Some(&1);

        match (hdr.index, action) {
            (uapi::INTX_IRQ_INDEX, uapi::VFIO_IRQ_SET_ACTION_MASK)
            | (uapi::INTX_IRQ_INDEX, uapi::VFIO_IRQ_SET_ACTION_UNMASK) => {
                if hdr.count != 1 || data_type == uapi::VFIO_IRQ_SET_DATA_EVENTFD {
                    return Err(EINVAL);
                }
                if asserted {
                    let mut state = self.lock();
                    state.intx_masked = action == uapi::VFIO_IRQ_SET_ACTION_MASK;
                }
            }
            (uapi::MSI_IRQ_INDEX, uapi::VFIO_IRQ_SET_ACTION_MASK)
            | (uapi::MSI_IRQ_INDEX, uapi::VFIO_IRQ_SET_ACTION_UNMASK) => return Err(ENOTTY),
            (index, uapi::VFIO_IRQ_SET_ACTION_TRIGGER) => {
                self.set_trigger(index, hdr.count, data_type, data, asserted)?
            }
            _ => return Err(EINVAL),
        }
        Ok(0)
    }

    fn set_trigger(
        &self,
        index: u32,
        count: u32,
        data_type: u32,
        data: &[u8],
        asserted: bool,
    ) -> Result {
        let mut new_efd = None;
        if data_type == uapi::VFIO_IRQ_SET_DATA_EVENTFD {
            let fd = i32::from_ne_bytes(data.try_into().map_err(|_| EINVAL)?);
            if fd != -1 {
                new_efd = Some(EventFd::from_fd(fd)?);
            }
        }
        let mut state = self.lock();
        let slot = if index == uapi::INTX_IRQ_INDEX {
            &mut state.intx
        } else {
            &mut state.msi
        };
        if data_type == uapi::VFIO_IRQ_SET_DATA_EVENTFD
            || (count == 0 && data_type == uapi::VFIO_IRQ_SET_DATA_NONE)
        {
            // Install, replace or remove; the old reference goes with `old`.
            let old = core::mem::replace(slot, new_efd);
            drop(state);
            drop(old);
        } else if asserted {
            // Loopback: signal what is installed.
            if let Some(efd) = slot.as_ref() {
                efd.signal();
            }
        }
        Ok(())
    }

    fn read_bar0(&self, state: &State, offset: u64, buf: &mut UserSliceWriter) -> Result {
        check_dwords(offset, buf.len())?;
        let live = Live {
            mem_size: self.mem_size as u64,
            status: state.status(),
            pinned: self.pins.pinned_pages(),
        };
        let mut off = offset as u32;
        while !buf.is_empty() {
            let val = state.regs.read(off, &live);
            buf.write(&val)?;
            off += 4;
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
        check_dwords(offset, buf.len())?;
        let mut off = offset as u32;
        while !buf.is_empty() {
            let val = buf.read::<u32>()?;
            match state.regs.write(off, val) {
                WriteEffect::Interrupt => state.interrupt(),
                WriteEffect::Dma(DmaWrite::Busy) => return Err(EBUSY),
                WriteEffect::Dma(DmaWrite::Ring) => state.ring_sync(dev, &self.pins),
                WriteEffect::None | WriteEffect::Dma(DmaWrite::None | DmaWrite::Kick) => {}
            }
            off += 4;
        }
        Ok(())
    }
}

/// `VFIO_REGION_INFO_CAP_TYPE` of the migration region: type `1 << 30`,
/// subtype 1, as the 2018 proposal defines them.
fn migration_type_cap() -> [u8; 16] {
    let mut cap = [0u8; 16];
    let fields: [&[u8]; 5] = [
        &(uapi::VFIO_REGION_INFO_CAP_TYPE as u16).to_ne_bytes(),
        &1u16.to_ne_bytes(), // version
        &0u32.to_ne_bytes(), // next: the chain ends here
        &abi::migration::REGION_TYPE.to_ne_bytes(),
        &abi::migration::REGION_SUBTYPE.to_ne_bytes(),
    ];
    let mut at = 0;
    for f in fields {
        if let Some(dst) = cap.get_mut(at..at + f.len()) {
            dst.copy_from_slice(f);
        }
        at += f.len();
    }
    cap
}

/// BAR0 takes whole dwords only.
fn check_dwords(offset: u64, len: usize) -> Result {
    if offset % 4 != 0 || len % 4 != 0 {
        return Err(EINVAL);
    }
    Ok(())
}

/// `offset..offset + len` as a slice range (already bounds-checked by
/// [`regions::locate`]).
fn span(offset: u64, len: usize) -> Result<core::ops::Range<usize>> {
    let start = usize::try_from(offset).map_err(|_| EINVAL)?;
    Ok(start..start.checked_add(len).ok_or(EINVAL)?)
}

impl vfio::DeviceOps for SampleDevice {
    const NAME: &'static CStr = c_str!("vfio-mig-sample");

    fn open(&self, _dev: &vfio::Device) -> Result {
        Ok(())
    }

    fn close(&self, _dev: &vfio::Device) {
        let mut state = self.lock();
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
        let (region, offset) =
            regions::locate(pos, len, |r| self.region_size(r)).map_err(|_| EINVAL)?;
        let mut state = self.lock();
        match region {
            Region::Config => {
                let mut bytes = [0u8; config::SIZE];
                let out = bytes.get_mut(..len).ok_or(EINVAL)?;
                state
                    .config
                    .read(offset as usize, out)
                    .map_err(|_| EINVAL)?;
                drop(state);
                buf.write_slice(out)?;
            }
            Region::Migration => state.migration_read(&self.pins, offset, &mut buf)?,
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
        let (region, offset) =
            regions::locate(pos, len, |r| self.region_size(r)).map_err(|_| EINVAL)?;
        match region {
            Region::Config => {
                let mut bytes = [0u8; config::SIZE];
                let data = bytes.get_mut(..len).ok_or(EINVAL)?;
                buf.read_slice(data)?;
                let mut state = self.lock();
                state
                    .config
                    .write(offset as usize, data)
                    .map_err(|_| EINVAL)?;
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
                buf.read_slice(dst)?;
                state.mig.mem_written(&range);
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
        match cmd {
            uapi::DEVICE_GET_INFO => self.get_info(arg),
            uapi::DEVICE_GET_REGION_INFO => self.get_region_info(arg),
            uapi::DEVICE_GET_IRQ_INFO => self.get_irq_info(arg),
            uapi::DEVICE_SET_IRQS => self.set_irqs(arg),
            uapi::DEVICE_RESET => {
                self.lock().power_on_reset(&self.pins);
                self.engine_wake.notify_all();
                Ok(0)
            }
            _ => Err(ENOTTY),
        }
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
        while let Some(ms) = state.engine_round(dev) {
            let _ = self
                .engine_wake
                .wait_interruptible_timeout(&mut state, msecs_to_jiffies(ms as u32));
            state.apply_unmaps(&self.pins);
        }
    }
}
