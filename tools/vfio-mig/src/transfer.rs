// SPDX-License-Identifier: GPL-2.0
//! Moving a device's state out of one device and into another, whatever
//! the kernel interface: the steps ([`StateTransfer`]), the save and
//! restore flows on top of them ([`save`], [`restore`]), and the steps of
//! the 2018 migration region ([`MigrationRegionTransfer`]).
//!
//! The flows, `vfio-mig save`/`restore` and the live migration in
//! [`crate::live`] only speak [`StateTransfer`]; another interface (the
//! upstream v2 one, with its data fd and DMA logging) is another
//! implementation of it.

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::device::Device;
use crate::error::{Error, Result};
use crate::mig_mmap::{AreaAccess, MigrationMapping};
use crate::migration::{state_name, DeviceState, DirtyBitmap, Pending};
use crate::units::as_ms;

/// The steps of moving device state. The source goes `prepare_save`,
/// `begin_save`, `begin_precopy` (optional), `stop_and_copy`, `end_save`,
/// reading chunks in between; the destination goes `prepare_restore`,
/// `begin_restore`, `write_chunk`s, `end_restore`, `resume`. After an error
/// either side calls `abort`.
pub trait StateTransfer {
    /// The device whose state moves.
    fn device(&self) -> &Device;

    /// Source: checks that a save may start and, if need be, starts the
    /// device.
    fn prepare_save(&self) -> Result<()>;
    /// Source: checks that the device runs, as a live migration needs.
    fn ensure_running(&self) -> Result<()>;
    /// Source: starts saving (dirty tracking on); `threshold` caps each
    /// chunk (0: no cap).
    fn begin_save(&self, threshold: u64) -> Result<()>;
    /// Source: lets chunks flow while the device runs.
    fn begin_precopy(&self) -> Result<()>;
    /// Source: stops the device; the rest of its state follows.
    fn stop_and_copy(&self) -> Result<()>;
    /// Source: what is still to be read.
    fn pending(&self) -> Result<Pending>;
    /// Source: the next chunk, into `buf`; 0 means nothing more for now
    /// (after `stop_and_copy`: the end of the stream).
    fn read_chunk(&self, buf: &mut Vec<u8>) -> Result<usize>;
    /// Source: which of `total` guest pages from IOVA `start` the device
    /// wrote since the last query.
    fn dirty_bitmap(&self, start: u64, total: u64) -> Result<DirtyBitmap>;
    /// Source: the whole stream was read.
    fn end_save(&self) -> Result<()>;

    /// Destination: checks that a restore may start.
    fn prepare_restore(&self) -> Result<()>;
    /// Destination: starts taking a stream.
    fn begin_restore(&self) -> Result<()>;
    /// Destination: the largest chunk `write_chunk` takes.
    fn max_chunk(&self) -> Result<u64>;
    /// Destination: hands the next chunk to the device.
    fn write_chunk(&self, chunk: &[u8]) -> Result<()>;
    /// Destination: the stream is complete; its state becomes the device's.
    fn end_restore(&self) -> Result<()>;
    /// Destination: runs the device with the restored state.
    fn resume(&self) -> Result<()>;

    /// After an error on either side: gives up the migration the device is
    /// in, if any, so that it runs as before (source) or from power-on
    /// (destination). Best effort.
    fn abort(&self);
    /// The device's migration state in words, for messages (best effort).
    fn state_words(&self) -> String;
}

/// The `between` callback of [`SaveOptions`]: pass number and pending counts.
pub type BetweenFn<'a> = &'a mut dyn FnMut(u32, &Pending) -> Result<()>;
/// The `on_chunk` callback of [`SaveOptions`]: phase (`PreCopy` or
/// `StopNCopy`) and chunk length.
pub type ChunkFn<'a> = &'a mut dyn FnMut(DeviceState, usize) -> Result<()>;

/// What [`save`] does.
pub struct SaveOptions<'a> {
    /// `pending.threshold_size`: cap of each chunk, 0 for the data area.
    pub threshold: u64,
    /// Pre-copy passes at most (0: straight from SETUP to STOPNCOPY).
    pub precopy_iterations: u32,
    /// After a pass (and `between`), pre-copy ends once
    /// `pending.compatible` (what was dirtied since) is at most this.
    pub precopy_target: u64,
    /// Called after each pre-copy pass but the last, with the pass number
    /// (from 1) and the pending counts after the pass; the device runs
    /// meanwhile (this is where a VMM runs its guest, which dirties device
    /// memory). An error aborts the save.
    pub between: Option<BetweenFn<'a>>,
    /// Called with each chunk's length as it is read (for tests and
    /// progress); an error aborts the save.
    pub on_chunk: Option<ChunkFn<'a>>,
}

impl Default for SaveOptions<'_> {
    fn default() -> Self {
        SaveOptions {
            threshold: 0,
            precopy_iterations: 1,
            precopy_target: 0,
            between: None,
            on_chunk: None,
        }
    }
}

/// What [`save`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SaveReport {
    /// Stream bytes written.
    pub bytes: u64,
    /// Get-buffer actions that returned data.
    pub chunks: u64,
    /// The largest chunk.
    pub max_chunk: u64,
    /// Pre-copy passes made.
    pub precopy_iterations: u32,
    /// Bytes read while the device ran (PRECOPY).
    pub precopy_bytes: u64,
    /// Bytes read while it was stopped (STOPNCOPY).
    pub stop_bytes: u64,
    /// From the write of STOPNCOPY to SAVE_COMPLETED.
    #[serde(rename = "downtime_ms", serialize_with = "as_ms")]
    pub downtime: Duration,
}

/// What [`restore`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RestoreReport {
    /// Stream bytes handed to the device.
    pub bytes: u64,
    /// Set-buffer actions.
    pub chunks: u64,
}

/// Saves the device state to `out` (the raw stream, as the device
/// produces it): `prepare_save`, `begin_save`, up to `precopy_iterations`
/// pre-copy passes (each reads chunks until there is none; after each pass
/// but the last, `between` runs and pre-copy ends once
/// `pending.compatible <= precopy_target`), `stop_and_copy`, read to the
/// end, check that nothing is pending, `end_save`.
///
/// On an error after the save began, the transfer is aborted (the device
/// then runs as before) and the first error is returned.
pub fn save(
    t: &dyn StateTransfer,
    out: &mut dyn Write,
    opts: SaveOptions<'_>,
) -> Result<SaveReport> {
    t.prepare_save()?;
    let r = save_steps(t, out, opts);
    if r.is_err() {
        t.abort();
    }
    r
}

/// Reads chunks until there is none, into `out`; returns the bytes read.
fn drain(
    t: &dyn StateTransfer,
    phase: DeviceState,
    out: &mut dyn Write,
    buf: &mut Vec<u8>,
    rep: &mut SaveReport,
    on_chunk: &mut Option<ChunkFn<'_>>,
) -> Result<u64> {
    let mut n = 0u64;
    loop {
        let len = t.read_chunk(buf)?;
        if len == 0 {
            return Ok(n);
        }
        if let Some(cb) = on_chunk.as_mut() {
            cb(phase, len)?;
        }
        out.write_all(buf).map_err(|e| Error::Io {
            what: format!("write of a {len}-byte chunk of the stream"),
            source: e,
        })?;
        n += len as u64;
        rep.chunks += 1;
        rep.max_chunk = rep.max_chunk.max(len as u64);
    }
}

fn save_steps(
    t: &dyn StateTransfer,
    out: &mut dyn Write,
    mut opts: SaveOptions<'_>,
) -> Result<SaveReport> {
    let mut rep = SaveReport::default();
    let mut buf = Vec::new();
    t.begin_save(opts.threshold)?;
    if opts.precopy_iterations > 0 {
        t.begin_precopy()?;
        for pass in 1..=opts.precopy_iterations {
            let phase = DeviceState::PreCopy;
            rep.precopy_bytes += drain(t, phase, out, &mut buf, &mut rep, &mut opts.on_chunk)?;
            rep.precopy_iterations = pass;
            if pass == opts.precopy_iterations {
                break;
            }
            if let Some(cb) = opts.between.as_mut() {
                cb(pass, &t.pending()?)?;
            }
            // What the device dirtied since the pass: worth another one?
            if t.pending()?.compatible <= opts.precopy_target {
                break;
            }
        }
    }
    let t0 = Instant::now();
    t.stop_and_copy()?;
    let phase = DeviceState::StopNCopy;
    rep.stop_bytes = drain(t, phase, out, &mut buf, &mut rep, &mut opts.on_chunk)?;
    check_nothing_pending(t)?;
    t.end_save()?;
    rep.downtime = t0.elapsed();
    rep.bytes = rep.precopy_bytes + rep.stop_bytes;
    out.flush().map_err(|e| Error::Io {
        what: "flush of the stream".into(),
        source: e,
    })?;
    Ok(rep)
}

/// After the last chunk of a stop-and-copy: nothing may be pending.
pub(crate) fn check_nothing_pending(t: &dyn StateTransfer) -> Result<()> {
    let p = t.pending()?;
    if p.total() != 0 {
        return Err(Error::Invalid(format!(
            "MIGRATION_STOPNCOPY: get buffer returned 0 but {} bytes are pending ({p})",
            p.total()
        )));
    }
    Ok(())
}

/// Restores the device from a stream read from `input`, in chunks of
/// `next_chunk(pos)` bytes (1 to [`StateTransfer::max_chunk`]; `pos` is
/// the stream position of the chunk; the last may be shorter):
/// `prepare_restore`, `begin_restore`, a `write_chunk` per chunk,
/// `end_restore`, `resume`.
///
/// On an error after the restore began, the transfer is aborted (the
/// device is at power-on state) and the first error is returned.
pub fn restore(
    t: &dyn StateTransfer,
    input: &mut dyn Read,
    next_chunk: &mut dyn FnMut(u64) -> usize,
) -> Result<RestoreReport> {
    let max = t.max_chunk()?;
    t.prepare_restore()?;
    t.begin_restore()?;
    let res = restore_steps(t, input, next_chunk, max);
    if res.is_err() {
        t.abort();
    }
    res
}

fn restore_steps(
    t: &dyn StateTransfer,
    input: &mut dyn Read,
    next_chunk: &mut dyn FnMut(u64) -> usize,
    max: u64,
) -> Result<RestoreReport> {
    let mut rep = RestoreReport::default();
    let mut buf = Vec::new();
    loop {
        let want = next_chunk(rep.bytes);
        if want == 0 || want as u64 > max {
            return Err(Error::Invalid(format!(
                "chunk size {want} is not in 1..={max} (the data area)"
            )));
        }
        buf.resize(want, 0);
        let n = read_full(input, &mut buf)?;
        if n == 0 {
            break;
        }
        t.write_chunk(&buf[..n])?;
        rep.bytes += n as u64;
        rep.chunks += 1;
        if n < want {
            break;
        }
    }
    t.end_restore()?;
    t.resume()?;
    Ok(rep)
}

/// Reads until `buf` is full or EOF; returns the byte count.
fn read_full(input: &mut dyn Read, buf: &mut [u8]) -> Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match input.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => {
                return Err(Error::Io {
                    what: "read of the stream".into(),
                    source: e,
                })
            }
        }
    }
    Ok(n)
}

/// The steps on the migration region of the 2018 proposal: states written
/// to `device_state`, chunks through the data area, dirty pages from the
/// region's bitmap (Documentation/migration-abi.rst). Chunks and bitmaps
/// are copied from and to the mapped areas when the region offers them and
/// the access allows, else read and written with `pread`/`pwrite`.
pub struct MigrationRegionTransfer<'a> {
    dev: &'a Device,
    map: Option<&'a MigrationMapping>,
}

impl<'a> MigrationRegionTransfer<'a> {
    /// The transfer of `dev`'s state, moving chunks as `access` says (the
    /// areas are mapped here, once per device, if they are to be used).
    pub fn new(dev: &'a Device, access: AreaAccess) -> Result<Self> {
        Ok(MigrationRegionTransfer {
            dev,
            map: dev.mapping_for(access)?,
        })
    }

    /// Chunks and bitmaps go through the mapped areas.
    pub fn uses_mmap(&self) -> bool {
        self.map.is_some()
    }
}

/// States a save or a restore may start from.
const AT_REST: [DeviceState; 4] = [
    DeviceState::None,
    DeviceState::Running,
    DeviceState::Failed,
    DeviceState::Cancelled,
];

impl StateTransfer for MigrationRegionTransfer<'_> {
    fn device(&self) -> &Device {
        self.dev
    }

    fn prepare_save(&self) -> Result<()> {
        match self.dev.device_state()? {
            DeviceState::None => self.dev.set_state(DeviceState::Running),
            s if AT_REST.contains(&s) => Ok(()),
            s => Err(Error::Invalid(format!(
                "save needs {} in NONE, RUNNING, MIGRATION_FAILED or MIGRATION_CANCELLED; it is \
                 in {s}",
                self.dev.uuid()
            ))),
        }
    }

    fn ensure_running(&self) -> Result<()> {
        let s = self.dev.device_state()?;
        if s != DeviceState::Running {
            return Err(Error::Invalid(format!(
                "the source {} is in {s}, not RUNNING",
                self.dev.uuid()
            )));
        }
        Ok(())
    }

    fn begin_save(&self, threshold: u64) -> Result<()> {
        self.dev.set_threshold(threshold)?;
        self.dev.set_state(DeviceState::Setup)
    }

    fn begin_precopy(&self) -> Result<()> {
        self.dev.set_state(DeviceState::PreCopy)
    }

    fn stop_and_copy(&self) -> Result<()> {
        self.dev.set_state(DeviceState::StopNCopy)
    }

    fn pending(&self) -> Result<Pending> {
        self.dev.pending()
    }

    fn read_chunk(&self, buf: &mut Vec<u8>) -> Result<usize> {
        self.dev.get_buffer_via(buf, self.map)
    }

    fn dirty_bitmap(&self, start: u64, total: u64) -> Result<DirtyBitmap> {
        self.dev.dirty_bitmap_via(start, total, self.map)
    }

    fn end_save(&self) -> Result<()> {
        self.dev.set_state(DeviceState::SaveCompleted)
    }

    fn prepare_restore(&self) -> Result<()> {
        let s = self.dev.device_state()?;
        if !AT_REST.contains(&s) {
            return Err(Error::Invalid(format!(
                "restore needs {} in NONE, RUNNING, MIGRATION_FAILED or MIGRATION_CANCELLED; it \
                 is in {s}",
                self.dev.uuid()
            )));
        }
        Ok(())
    }

    fn begin_restore(&self) -> Result<()> {
        self.dev.set_state(DeviceState::Resume)
    }

    fn max_chunk(&self) -> Result<u64> {
        Ok(self.dev.migration_region()?.data_len)
    }

    fn write_chunk(&self, chunk: &[u8]) -> Result<()> {
        let at = self.dev.migration_region()?.data_offset;
        self.dev.set_buffer_via(chunk, at, self.map)
    }

    fn end_restore(&self) -> Result<()> {
        self.dev.set_state(DeviceState::ResumeCompleted)
    }

    fn resume(&self) -> Result<()> {
        self.dev.set_state(DeviceState::Running)
    }

    fn abort(&self) {
        use DeviceState as S;
        let migrating = [
            S::Setup,
            S::PreCopy,
            S::StopNCopy,
            S::SaveCompleted,
            S::Resume,
            S::ResumeCompleted,
        ];
        if self
            .dev
            .device_state()
            .is_ok_and(|s| migrating.contains(&s))
        {
            let _ = self.dev.set_state(S::Failed);
        }
    }

    fn state_words(&self) -> String {
        match self.dev.device_state_raw() {
            Ok(v) => state_name(v),
            Err(e) => e.to_string(),
        }
    }
}

impl Device {
    /// [`save`] through the migration region (its mapped areas when it
    /// offers them).
    pub fn save_to(&self, out: &mut dyn Write, opts: SaveOptions<'_>) -> Result<SaveReport> {
        let t = MigrationRegionTransfer::new(self, AreaAccess::MmapIfOffered)?;
        save(&t, out, opts)
    }

    /// [`restore`] through the migration region, in chunks of `chunk_size`
    /// bytes (at most the data area; the last may be shorter), each written
    /// at the start of the data area.
    pub fn restore_from(&self, input: &mut dyn Read, chunk_size: usize) -> Result<RestoreReport> {
        self.restore_with(input, &mut |_| chunk_size)
    }

    /// [`Device::restore_from`] with a chunk size chosen per chunk (through
    /// the mapped data area when the region offers it):
    /// `next_chunk(pos)` gets the stream position of the chunk.
    pub fn restore_with(
        &self,
        input: &mut dyn Read,
        next_chunk: &mut dyn FnMut(u64) -> usize,
    ) -> Result<RestoreReport> {
        let t = MigrationRegionTransfer::new(self, AreaAccess::MmapIfOffered)?;
        restore(&t, input, next_chunk)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_in_json() {
        let rep = SaveReport {
            bytes: 10,
            chunks: 2,
            max_chunk: 8,
            precopy_iterations: 1,
            precopy_bytes: 4,
            stop_bytes: 6,
            downtime: Duration::from_micros(1500),
        };
        let v = serde_json::to_value(&rep).unwrap();
        assert_eq!(v["downtime_ms"], 1.5);
        assert_eq!(v["stop_bytes"], 6);
        assert!(v.get("downtime").is_none());
    }
}
