// SPDX-License-Identifier: GPL-2.0
//! The upstream v2 migration interface on a [`Device`]: the v2 states
//! (`VFIO_DEVICE_FEATURE_MIG_DEVICE_STATE`), their data files
//! (`VFIO_MIG_GET_PRECOPY_INFO`), the stop-copy size and DMA logging.
//! `Documentation/migration-v2.rst` describes the interface as the sample
//! device implements it.

use std::cell::RefCell;
use std::fmt;
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::AsFd;

use crate::abi::GUEST_PAGE_SIZE;
use crate::error::{Error, Result};
use crate::ioctl;
use crate::migration::{DirtyBitmap, Pending};
use crate::transfer::StateTransfer;
use crate::Device;

/// The largest read or write of a data file this library makes (what QEMU
/// reads per pre-copy iteration).
const CHUNK: usize = 1 << 20;

/// A v2 device state (`enum vfio_device_mig_state`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum V2State {
    /// `VFIO_DEVICE_STATE_ERROR`.
    Error = 0,
    /// `VFIO_DEVICE_STATE_STOP`.
    Stop = 1,
    /// `VFIO_DEVICE_STATE_RUNNING`.
    Running = 2,
    /// `VFIO_DEVICE_STATE_STOP_COPY`.
    StopCopy = 3,
    /// `VFIO_DEVICE_STATE_RESUMING`.
    Resuming = 4,
    /// `VFIO_DEVICE_STATE_RUNNING_P2P`.
    RunningP2p = 5,
    /// `VFIO_DEVICE_STATE_PRE_COPY`.
    PreCopy = 6,
    /// `VFIO_DEVICE_STATE_PRE_COPY_P2P`.
    PreCopyP2p = 7,
}

impl V2State {
    /// Every state, in numeric order.
    pub const ALL: [V2State; 8] = [
        V2State::Error,
        V2State::Stop,
        V2State::Running,
        V2State::StopCopy,
        V2State::Resuming,
        V2State::RunningP2p,
        V2State::PreCopy,
        V2State::PreCopyP2p,
    ];

    /// The state numbered `raw`.
    pub fn from_raw(raw: u32) -> Option<V2State> {
        Self::ALL.get(raw as usize).copied()
    }

    /// Its uapi number.
    pub fn raw(self) -> u32 {
        self as u32
    }

    /// Its uapi name without the prefix, e.g. `STOP_COPY`.
    pub fn name(self) -> &'static str {
        match self {
            V2State::Error => "ERROR",
            V2State::Stop => "STOP",
            V2State::Running => "RUNNING",
            V2State::StopCopy => "STOP_COPY",
            V2State::Resuming => "RESUMING",
            V2State::RunningP2p => "RUNNING_P2P",
            V2State::PreCopy => "PRE_COPY",
            V2State::PreCopyP2p => "PRE_COPY_P2P",
        }
    }
}

impl fmt::Display for V2State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// `struct vfio_precopy_info`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PrecopyInfo {
    /// What is left of the initial image.
    pub initial_bytes: u64,
    /// What changed since it was read.
    pub dirty_bytes: u64,
}

/// A v2 data file: the device state stream, out of a saving device or
/// into a resuming one.
#[derive(Debug)]
pub struct DataFile {
    file: File,
    label: String,
}

impl DataFile {
    /// Reads the next bytes of the stream into `buf`: `Some(0)` at its end,
    /// `None` when a `PRE_COPY` device has nothing new (`ENOMSG`).
    pub fn read_chunk(&self, buf: &mut [u8]) -> Result<Option<usize>> {
        match (&self.file).read(buf) {
            Ok(n) => Ok(Some(n)),
            Err(e) if e.raw_os_error() == Some(libc::ENOMSG) => Ok(None),
            Err(e) => Err(self.failed("read", e)),
        }
    }

    /// Writes all of `data` into the stream, in pieces of the kernel's
    /// choosing.
    pub fn write_all(&self, data: &[u8]) -> Result<()> {
        (&self.file)
            .write_all(data)
            .map_err(|e| self.failed("write", e))
    }

    /// `VFIO_MIG_GET_PRECOPY_INFO`.
    pub fn precopy_info(&self) -> Result<PrecopyInfo> {
        let (initial_bytes, dirty_bytes) = ioctl::mig_precopy_info(self.file.as_fd())
            .map_err(|f| f.context(format!("data file of {}", self.label)))?;
        Ok(PrecopyInfo {
            initial_bytes,
            dirty_bytes,
        })
    }

    fn failed(&self, op: &str, e: std::io::Error) -> Error {
        Error::Sys {
            what: format!("{op} of the v2 data file of {}", self.label),
            errno: e.raw_os_error().unwrap_or(libc::EIO),
        }
    }
}

impl AsFd for DataFile {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.file.as_fd()
    }
}

impl Device {
    /// The device's `VFIO_MIGRATION_*` flags (`ENOTTY` without v2).
    pub fn v2_flags(&self) -> Result<u64> {
        ioctl::migration_flags(self.as_fd())
            .map_err(|f| f.context(format!("migration flags of {}", self.uuid())))
    }

    /// Whether the device has `feature` (`VFIO_DEVICE_FEATURE_PROBE` with
    /// SET): `ENOTTY` if not.
    pub fn feature_probe(&self, feature: u32) -> Result<()> {
        ioctl::device_feature_probe(self.as_fd(), feature, false)
            .map_err(|f| f.context(format!("probe of feature {feature} on {}", self.uuid())))
    }

    /// The current v2 state.
    pub fn v2_state(&self) -> Result<V2State> {
        let raw = ioctl::mig_get_state(self.as_fd())
            .map_err(|f| f.context(format!("v2 state of {}", self.uuid())))?;
        V2State::from_raw(raw).ok_or_else(|| Error::Invalid(format!("v2 state {raw}")))
    }

    /// Moves the device to `state`; returns the data file the state has
    /// (when a stream starts on the way).
    pub fn v2_set_state(&self, state: V2State) -> Result<Option<DataFile>> {
        let fd = ioctl::mig_set_state(self.as_fd(), state.raw())
            .map_err(|f| f.context(format!("v2 state {state} of {}", self.uuid())))?;
        Ok(fd.map(|fd| DataFile {
            file: File::from(fd),
            label: self.uuid().to_string(),
        }))
    }

    /// The bytes a `STOP_COPY` would produce now.
    pub fn v2_data_size(&self) -> Result<u64> {
        ioctl::mig_data_size(self.as_fd())
            .map_err(|f| f.context(format!("stop-copy size of {}", self.uuid())))
    }

    /// Starts DMA logging of `ranges` (IOVA, length) at `page_size`.
    pub fn dma_logging_start(&self, page_size: u64, ranges: &[(u64, u64)]) -> Result<()> {
        ioctl::dma_logging_start(self.as_fd(), page_size, ranges)
            .map_err(|f| f.context(format!("DMA logging start on {}", self.uuid())))
    }

    /// Stops DMA logging.
    pub fn dma_logging_stop(&self) -> Result<()> {
        ioctl::dma_logging_stop(self.as_fd())
            .map_err(|f| f.context(format!("DMA logging stop on {}", self.uuid())))
    }

    /// The pages of `iova..iova + length` the device wrote since their
    /// last report, one bit per `page_size` page (and forgets them).
    pub fn dma_logging_report(&self, iova: u64, length: u64, page_size: u64) -> Result<Vec<u64>> {
        let pages = length / page_size.max(1);
        let mut bitmap = vec![0u64; pages.div_ceil(64) as usize];
        ioctl::dma_logging_report(self.as_fd(), iova, length, page_size, &mut bitmap).map_err(
            |f| {
                f.context(format!(
                    "DMA logging report of {iova:#x}+{length:#x} on {}",
                    self.uuid()
                ))
            },
        )?;
        Ok(bitmap)
    }
}

/// The IOVA range this library names when it starts DMA logging: all of
/// it (the sample device logs every IOVA anyway; reports say which part
/// they want).
const LOG_ALL: (u64, u64) = (0, 1 << 52);

/// The steps of the v2 interface: states through
/// `VFIO_DEVICE_FEATURE_MIG_DEVICE_STATE`, chunks through the data file,
/// dirty pages from DMA logging (Documentation/migration-v2.rst).
pub struct V2Transfer<'a> {
    dev: &'a Device,
    /// The data file of the stream under way.
    file: RefCell<Option<DataFile>>,
}

impl<'a> V2Transfer<'a> {
    /// The v2 steps on `dev`.
    pub fn new(dev: &'a Device) -> Self {
        V2Transfer {
            dev,
            file: RefCell::new(None),
        }
    }

    fn expect_state(&self, want: V2State, what: &str) -> Result<()> {
        let s = self.dev.v2_state()?;
        if s != want {
            return Err(Error::Invalid(format!(
                "{what} needs {} in v2 state {want}; it is in {s}",
                self.dev.uuid()
            )));
        }
        Ok(())
    }

    /// Moves to `s`, keeping the data file it hands out.
    fn go(&self, s: V2State) -> Result<()> {
        if let Some(f) = self.dev.v2_set_state(s)? {
            *self.file.borrow_mut() = Some(f);
        }
        Ok(())
    }

    fn no_file(&self) -> Error {
        Error::Invalid(format!("{}: no v2 data file", self.dev.uuid()))
    }
}

impl StateTransfer for V2Transfer<'_> {
    fn device(&self) -> &Device {
        self.dev
    }

    fn prepare_save(&self) -> Result<()> {
        self.expect_state(V2State::Running, "a save")
    }

    fn ensure_running(&self) -> Result<()> {
        self.expect_state(V2State::Running, "a live migration")
    }

    fn begin_save(&self, _threshold: u64) -> Result<()> {
        self.dev.dma_logging_start(GUEST_PAGE_SIZE, &[LOG_ALL])
    }

    fn begin_precopy(&self) -> Result<()> {
        self.go(V2State::PreCopy)
    }

    fn stop_and_copy(&self) -> Result<()> {
        self.go(V2State::StopCopy)
    }

    fn pending(&self) -> Result<Pending> {
        if self.dev.v2_state()? == V2State::PreCopy {
            let file = self.file.borrow();
            let info = file
                .as_ref()
                .ok_or_else(|| self.no_file())?
                .precopy_info()?;
            return Ok(Pending {
                precopy_only: info.initial_bytes,
                compatible: info.dirty_bytes,
                postcopy_only: 0,
            });
        }
        Ok(Pending {
            precopy_only: 0,
            compatible: 0,
            postcopy_only: self.dev.v2_data_size()?,
        })
    }

    fn read_chunk(&self, buf: &mut Vec<u8>) -> Result<usize> {
        let file = self.file.borrow();
        let file = file.as_ref().ok_or_else(|| self.no_file())?;
        buf.resize(CHUNK, 0);
        let n = file.read_chunk(buf)?.unwrap_or(0);
        buf.truncate(n);
        Ok(n)
    }

    fn dirty_bitmap(&self, start: u64, total: u64) -> Result<DirtyBitmap> {
        let words = self
            .dev
            .dma_logging_report(start, total * GUEST_PAGE_SIZE, GUEST_PAGE_SIZE)?;
        Ok(DirtyBitmap {
            copied: total,
            offset: 0,
            words,
        })
    }

    fn end_save(&self) -> Result<()> {
        self.go(V2State::Stop)?;
        *self.file.borrow_mut() = None;
        self.dev.dma_logging_stop()
    }

    fn prepare_restore(&self) -> Result<()> {
        self.expect_state(V2State::Running, "a restore")
    }

    fn begin_restore(&self) -> Result<()> {
        self.go(V2State::Resuming)
    }

    fn max_chunk(&self) -> Result<u64> {
        Ok(CHUNK as u64)
    }

    fn write_chunk(&self, chunk: &[u8]) -> Result<()> {
        let file = self.file.borrow();
        file.as_ref()
            .ok_or_else(|| self.no_file())?
            .write_all(chunk)
    }

    fn end_restore(&self) -> Result<()> {
        self.go(V2State::Stop)?;
        *self.file.borrow_mut() = None;
        Ok(())
    }

    fn resume(&self) -> Result<()> {
        self.go(V2State::Running)
    }

    fn abort(&self) {
        *self.file.borrow_mut() = None;
        let _ = self.dev.dma_logging_stop();
        // A destination goes back to power-on (leaving RESUMING any other
        // way would commit the stream); a source runs as it was.
        if self.dev.v2_state().is_ok_and(|s| s == V2State::Resuming) {
            let _ = self.dev.reset();
        } else {
            let _ = self.dev.v2_set_state(V2State::Running);
        }
    }

    fn state_words(&self) -> String {
        match self.dev.v2_state() {
            Ok(s) => format!("v2 {s}"),
            Err(e) => e.to_string(),
        }
    }
}
