// SPDX-License-Identifier: GPL-2.0

//! The upstream v2 migration interface of the sample device, beside the
//! region: `VFIO_DEVICE_FEATURE_MIG_DEVICE_STATE` with its data files,
//! `VFIO_MIG_GET_PRECOPY_INFO`, and DMA logging.
//!
//! v2 works on the same migration state as the region (`migration.rs`):
//! the same effects of a state change, the same stream through the same
//! encoder and decoder, the same dirty log. At most one interface has a
//! migration under way. Documented for VMM authors in
//! `Documentation/migration-v2.rst`.
//!
//! A data file holds a counted reference to the device, not to the open
//! device: it can outlive a close, a reset and the mdev itself. Every
//! access first checks, under the device lock, that the file still belongs
//! to the current session (`Migration::check_file`), so a file of a session
//! that ended is refused and never touches the stream.

use super::errors::refused;
use super::SampleDevice;
use crate::anon_file::{FileOps, NewFile};
use crate::dyndbg::dyn_debug;
use crate::logic::abi::migration::DATA_LEN;
use crate::logic::abi::GUEST_PAGE_SIZE;
use crate::logic::dirty_log::word_runs;
use crate::logic::state::Direction;
use crate::logic::stream::{Faulted, SinkFault, StreamSink};
use crate::logic::v2::{self, V2State};
use crate::vfio::{self, uapi, DeviceRef, IovaBitmap};
use kernel::bindings;
use kernel::c_str;
use kernel::prelude::*;
use kernel::uaccess::{UserSlice, UserSliceReader, UserSliceWriter};

/// Size of `struct vfio_precopy_info` up to `dirty_bytes` (its `minsz`).
const PRECOPY_INFO_SIZE: usize = 24;

/// A v2 data file: the device's stream, out of a saving device or into a
/// resuming one.
struct DataFile {
    dev: DeviceRef<SampleDevice>,
    /// The session the file belongs to (`Migration::file_id`).
    id: u64,
}

impl FileOps for DataFile {
    fn read(&self, mut buf: UserSliceWriter) -> Result<usize> {
        self.dev.lock().data_file_read(self.id, &mut buf)
    }

    fn write(&self, mut buf: UserSliceReader) -> Result<usize> {
        self.dev.lock().data_file_write(self.id, &mut buf)
    }

    fn ioctl(&self, cmd: u32, arg: usize) -> Result<isize> {
        if cmd != uapi::MIG_GET_PRECOPY_INFO {
            dyn_debug!("data file ioctl {:#x} refused: unknown", cmd);
            return Err(ENOTTY);
        }
        self.dev.lock().precopy_info(self.id, arg)
    }
}

/// The user's buffer of a data-file read, as the encoder's sink.
struct UserSink<'a>(&'a mut UserSliceWriter);

impl StreamSink for UserSink<'_> {
    fn room(&self) -> usize {
        self.0.len()
    }

    fn put(&mut self, bytes: &[u8]) -> Result<(), SinkFault> {
        // On a fault the writer has not moved: the same bytes go to the
        // same place when the encoder emits them again.
        self.0.write_slice(bytes).map_err(|_| SinkFault)
    }
}

impl super::State {
    /// A read of data file `id`: the next bytes of the save stream, as
    /// many as fit, copied once, from device memory to the user's buffer.
    /// At the end of a `STOP_COPY` stream, 0; in `PRE_COPY`, when nothing
    /// new is there yet, `ENOMSG`. A fault in the user's buffer ends the
    /// read: the bytes before it count, or `EFAULT` if there are none; the
    /// rest of the stream comes with the next read.
    fn data_file_read(&mut self, id: u64, buf: &mut UserSliceWriter) -> Result<usize> {
        self.mig.check_file(id)?;
        if self.mig.v2.properties().direction != Direction::Save {
            return Err(refused("data file read", "not a saving device"));
        }
        let done = match self.encode_into(&mut UserSink(buf))? {
            Ok(n) => n,
            Err(Faulted { emitted: 0 }) => return Err(EFAULT),
            Err(Faulted { emitted }) => emitted,
        };
        if done == 0 && self.mig.v2.precopy() {
            // Caught up: the initial image is through.
            self.mig.initial_done = true;
            return Err(Error::from_errno(-(bindings::ENOMSG as i32)));
        }
        Ok(done)
    }

    /// A write of data file `id`: more of the stream for a resuming
    /// device, in any segmentation. A stream the decoder refuses fails
    /// (`EINVAL`), and so does every later write of it.
    fn data_file_write(&mut self, id: u64, buf: &mut UserSliceReader) -> Result<usize> {
        self.mig.check_file(id)?;
        if self.mig.v2 != V2State::Resuming {
            return Err(refused("data file write", "not a resuming device"));
        }
        let mut done = 0;
        while !buf.is_empty() {
            let n = buf.len().min(DATA_LEN as usize);
            if let Err(e) = buf.read_slice(self.mig.staging(n)?) {
                // Nothing of this piece reached the decoder.
                return if done > 0 { Ok(done) } else { Err(e) };
            }
            self.decode(0..n)?;
            done += n;
        }
        Ok(done)
    }

    /// `VFIO_MIG_GET_PRECOPY_INFO` on data file `id`.
    fn precopy_info(&mut self, id: u64, arg: usize) -> Result<isize> {
        let (mut reader, mut writer) = UserSlice::new(arg, PRECOPY_INFO_SIZE).reader_writer();
        let [argsz, _flags] = reader.read::<[u32; 2]>()?;
        if (argsz as usize) < PRECOPY_INFO_SIZE {
            return Err(refused("PRECOPY_INFO", "argsz below the structure"));
        }
        self.mig.check_file(id)?;
        if !self.mig.v2.precopy() {
            return Err(refused("PRECOPY_INFO", "not in PRE_COPY"));
        }
        let (initial, dirty) = v2::precopy_info(&self.mig.pending(), self.mig.initial_done);
        writer.write(&[argsz, 0u32])?;
        writer.write(&[initial, dirty])?;
        Ok(0)
    }
}

impl SampleDevice {
    /// `VFIO_DEVICE_FEATURE_MIG_DEVICE_STATE`: walks the arcs to `new`
    /// under the device lock, and makes the data file of a stream that
    /// starts on the way.
    pub(super) fn set_v2_state(
        this: DeviceRef<Self>,
        dev: &vfio::Device,
        new: u32,
    ) -> Result<Option<NewFile>> {
        let target = V2State::from_raw(new)?;
        let mut state = this.lock();
        if state.mig.region_busy() {
            dyn_debug!("v2 state change refused: a region migration is under way");
            return Err(EBUSY);
        }
        // The file to make: its session number, and whether it is written.
        let mut file = None;
        let res = (|| -> Result {
            while state.mig.v2 != target {
                let cur = state.mig.v2;
                let next = V2State::from_raw(dev.next_migration_state(cur.raw(), new)?)?;
                let effects = v2::plan(cur, next);
                state.apply_transition(dev, &this.pins, effects, |mig| {
                    mig.v2 = next;
                    if effects.start_save || effects.start_resume {
                        mig.initial_done = false;
                        file = Some((mig.new_file_id(), effects.start_resume));
                    } else if !next.properties().stream.exists() {
                        // The stream ended; so does its file.
                        mig.file_id = 0;
                    }
                })?;
            }
            Ok(())
        })();
        // A state change may let the device run again.
        this.kick_engine(dev, &state);
        drop(state);
        res?;
        let Some((id, resuming)) = file else {
            return Ok(None);
        };
        let flags = if resuming {
            bindings::O_WRONLY
        } else {
            bindings::O_RDONLY
        };
        let ops = KBox::new(DataFile { dev: this, id }, GFP_KERNEL)?;
        NewFile::new(c_str!("vfio_mig_sample_data"), ops, flags).map(Some)
    }

    /// `VFIO_DEVICE_FEATURE_DMA_LOGGING_START`: refused while a region
    /// migration is under way; a second start changes nothing.
    pub(super) fn log_start(&self) -> Result {
        let mut state = self.lock();
        if state.mig.region_busy() {
            dyn_debug!("DMA logging refused: a region migration is under way");
            return Err(EBUSY);
        }
        if !state.mig.dma_logging {
            state.mig.guest_dirty.clear();
            state.mig.dma_logging = true;
        }
        Ok(())
    }

    /// `VFIO_DEVICE_FEATURE_DMA_LOGGING_STOP`: the log is dropped.
    pub(super) fn log_stop(&self) {
        let mut state = self.lock();
        state.mig.dma_logging = false;
        if !state.mig.guest_logging() {
            state.mig.guest_dirty.clear();
        }
    }

    /// One piece of a DMA-logging report: the dirty guest pages of
    /// `iova..iova + length` into `dirty`, as runs, forgotten once
    /// reported.
    pub(super) fn log_read_and_clear(&self, iova: u64, length: u64, dirty: &IovaBitmap) -> Result {
        let mut state = self.lock();
        if !state.mig.dma_logging {
            return Err(refused("DMA logging report", "logging is off"));
        }
        if length == 0 {
            return Ok(());
        }
        let page = GUEST_PAGE_SIZE;
        let last = iova
            .checked_add(length - 1)
            .ok_or_else(|| refused("DMA logging report", "range wraps"))?;
        let start = iova / page;
        let pages = last / page - start + 1;
        let ring = self.pins.writable_ring();
        // Consecutive pages go to the bitmap as one run.
        let mut run: Option<(u64, u64)> = None;
        let flush = |run: (u64, u64)| dirty.set(run.0 * page, run.1 * page);
        super::migration::report_dirty(
            &mut state.mig.guest_dirty,
            start,
            pages,
            ring,
            |w, bits| {
                word_runs(w, bits, |k, n| {
                    let pfn = start + k;
                    run = match run {
                        Some((first, len)) if first + len == pfn => Some((first, len + n)),
                        Some(done) => {
                            flush(done);
                            Some((pfn, n))
                        }
                        None => Some((pfn, n)),
                    };
                })
            },
        );
        if let Some(done) = run {
            flush(done);
        }
        Ok(())
    }
}
