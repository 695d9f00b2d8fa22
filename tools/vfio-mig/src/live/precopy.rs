// SPDX-License-Identifier: GPL-2.0
//! The migration itself: pre-copy iterations (dirty guest RAM and the
//! device stream while the guest runs), the stop-and-copy, the
//! verification and the switch-over, on [`StateTransfer`]s.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::pages::{collect_dirty, DirtyLog, PageSet};
use super::report::{Convergence, Iteration, LiveReport, Phase, Verification};
use super::vcpu::{CpuStats, CpuWorkload};
use super::verify;
use super::Vm;
use crate::abi::GUEST_PAGE_SIZE;
use crate::error::{Error, Result};
use crate::mem::GuestMemory;
use crate::mig_mmap::AreaAccess;
use crate::sample::DeviceSnapshot;
use crate::transfer::{check_nothing_pending, MigrationRegionTransfer, StateTransfer};

/// What [`migrate`] does.
pub struct LiveOptions<'a> {
    /// Pre-copy iterations at most, the full copy (iteration 0) included;
    /// at least 1.
    pub max_iterations: u32,
    /// Pre-copy ends after an iteration (from 1) whose dirty set was at
    /// most this many pages.
    pub converge_pages: u64,
    /// Pages asked for per dirty query (0: all that is left, the device
    /// covers what its bitmap area holds).
    pub dirty_window: u64,
    /// `pending.threshold_size` on the source: cap of each stream chunk
    /// (0: the data area).
    pub threshold: u64,
    /// After the destination runs: how long to wait before checking that
    /// its background writer carries on (0: no check).
    pub settle: Duration,
    /// Called with each iteration as it ends (pre-copy, then the
    /// stop-and-copy).
    pub progress: Option<&'a mut dyn FnMut(&Iteration)>,
}

impl Default for LiveOptions<'_> {
    fn default() -> Self {
        LiveOptions {
            max_iterations: 10,
            converge_pages: 512,
            dirty_window: 0,
            threshold: 0,
            settle: Duration::from_millis(200),
            progress: None,
        }
    }
}

/// Live-migrates `src` (RUNNING, with its workload) to `dst` through their
/// migration regions; see [`migrate_with`].
pub fn migrate(
    src: &Vm,
    cpu: Option<&mut CpuWorkload>,
    dst: &Vm,
    opts: LiveOptions<'_>,
) -> Result<LiveReport> {
    let (src_t, dst_t) = (
        MigrationRegionTransfer::new(&src.dev, AreaAccess::MmapIfOffered)?,
        MigrationRegionTransfer::new(&dst.dev, AreaAccess::MmapIfOffered)?,
    );
    migrate_with(src, &src_t, cpu, dst, &dst_t, opts)
}

/// Live-migrates `src` (RUNNING, with its workload) to `dst`, moving the
/// device state through `src_t` and `dst_t` (see the module
/// documentation). `cpu` is the vCPU stand-in writing `src`'s RAM: its
/// dirty log joins the device bitmap and it is stopped before the device.
///
/// On success the destination runs and the source has ended its save. On
/// an error, the CPU workload is stopped, both transfers are aborted (the
/// source runs again as it was, the destination, if it had not started
/// running, is at power-on state), and the first error is returned as it
/// came (its errno intact); a difference found by the verification is such
/// an error.
pub fn migrate_with(
    src: &Vm,
    src_t: &dyn StateTransfer,
    mut cpu: Option<&mut CpuWorkload>,
    dst: &Vm,
    dst_t: &dyn StateTransfer,
    mut opts: LiveOptions<'_>,
) -> Result<LiveReport> {
    check_sides(src, cpu.as_deref(), dst, &opts)?;
    src_t.ensure_running()?;
    dst_t.prepare_restore()?;
    let log = cpu.as_ref().map(|c| Arc::clone(c.dirty_log()));
    let mut m = Migration {
        set: PageSet::new(src.pages())?,
        cpu_set: PageSet::new(src.pages())?,
        src,
        src_t,
        cpu: cpu.as_deref_mut(),
        dst,
        dst_t,
        opts: &mut opts,
        log,
        buf: Vec::new(),
    };
    let res = m.run();
    if res.is_err() {
        if let Some(c) = cpu {
            let _ = c.stop();
        }
        src_t.abort();
        dst_t.abort();
    }
    res
}

/// The two sides must have the same guest RAM, and the CPU workload run on
/// the source's.
fn check_sides(
    src: &Vm,
    cpu: Option<&CpuWorkload>,
    dst: &Vm,
    opts: &LiveOptions<'_>,
) -> Result<()> {
    if src.ram.len() != dst.ram.len() || src.iova != dst.iova {
        return Err(Error::Invalid(format!(
            "source RAM ({} bytes at IOVA {:#x}) and destination RAM ({} bytes at {:#x}) \
             differ",
            src.ram.len(),
            src.iova,
            dst.ram.len(),
            dst.iova
        )));
    }
    if cpu.is_some_and(|c| c.dirty_log().pages() != src.pages()) {
        return Err(Error::Invalid(
            "the CPU workload runs on another guest RAM".into(),
        ));
    }
    if opts.max_iterations == 0 {
        return Err(Error::Invalid(
            "max_iterations is 0: at least the full copy".into(),
        ));
    }
    Ok(())
}

/// One migration in progress: both sides, the vCPU stand-in and the page
/// sets reused by every iteration.
struct Migration<'a, 'o> {
    src: &'a Vm,
    src_t: &'a dyn StateTransfer,
    cpu: Option<&'a mut CpuWorkload>,
    dst: &'a Vm,
    dst_t: &'a dyn StateTransfer,
    opts: &'a mut LiveOptions<'o>,
    /// The pages the current iteration copies.
    set: PageSet,
    /// The pages the CPU log held.
    cpu_set: PageSet,
    log: Option<Arc<DirtyLog>>,
    /// Stream chunks on their way.
    buf: Vec<u8>,
}

/// When the stop-and-copy began, for the report's times.
struct Stopped {
    iteration: Iteration,
    cpu: Option<CpuStats>,
    /// The vCPU pause began.
    paused: Instant,
    /// The device stopped (the downtime began).
    down: Instant,
}

impl Migration<'_, '_> {
    fn progress(&mut self, it: &Iteration) {
        if let Some(p) = self.opts.progress.as_mut() {
            p(it);
        }
    }

    fn run(&mut self) -> Result<LiveReport> {
        let t_start = Instant::now();
        self.dst_t.begin_restore()?;
        // Dirty logging starts here: every write from now on is in a bitmap.
        self.src_t.begin_save(self.opts.threshold)?;
        self.src_t.begin_precopy()?;
        let mut iterations = Vec::new();
        let convergence = self.precopy(&mut iterations)?;
        let stopped = self.stop_and_copy(iterations.len() as u32)?;
        self.switch_over(iterations, convergence, stopped, t_start)
    }

    /// Pre-copy iterations until the dirty set converges or the limit.
    fn precopy(&mut self, iterations: &mut Vec<Iteration>) -> Result<Convergence> {
        loop {
            let index = iterations.len() as u32;
            let it = self.precopy_iteration(index)?;
            self.progress(&it);
            iterations.push(it);
            if let Some(c) = self.cpu.as_mut().filter(|c| c.has_died()) {
                c.stop()?;
                return Err(Error::Invalid("the CPU workload stopped by itself".into()));
            }
            if index > 0 && it.dirty_pages <= self.opts.converge_pages {
                return Ok(Convergence::Threshold {
                    dirty_pages: it.dirty_pages,
                    converge_pages: self.opts.converge_pages,
                });
            }
            if index + 1 >= self.opts.max_iterations {
                return Ok(Convergence::Limit {
                    max_iterations: self.opts.max_iterations,
                });
            }
        }
    }

    /// Iteration `index`: all guest RAM (0) or the dirty pages, and what the
    /// device stream holds now.
    fn precopy_iteration(&mut self, index: u32) -> Result<Iteration> {
        let t = Instant::now();
        let mut it = Iteration::new(index, Phase::PreCopy);
        it.full_copy = index == 0;
        if index == 0 {
            // The full copy covers what the log holds now; later writes
            // land in the log again.
            if let Some(log) = &self.log {
                log.take_into(&mut self.cpu_set)?;
            }
            it.dirty_pages = self.src.pages();
            self.set.clear();
            for p in 0..self.src.pages() {
                self.set.insert(p);
            }
        } else {
            self.collect_dirty_pages(&mut it)?;
        }
        it.guest_bytes = copy_pages(&self.src.ram, &self.dst.ram, &self.set)?;
        // What can be sent while running; what gets dirtied meanwhile
        // waits for the next iteration.
        let p = self.src_t.pending()?;
        let limit = p.precopy_only.saturating_add(p.compatible);
        (it.device_bytes, it.device_chunks) = self.forward_stream(Some(limit))?;
        it.device_pending = self.src_t.pending()?.total();
        it.duration = t.elapsed();
        Ok(it)
    }

    /// Stops the vCPUs first, so that nothing writes guest RAM or BAR2
    /// behind the device's back, then the device, and copies the rest.
    fn stop_and_copy(&mut self, index: u32) -> Result<Stopped> {
        let paused = Instant::now();
        let cpu = match self.cpu.as_mut() {
            Some(c) => Some(c.stop()?),
            None => None,
        };
        let down = Instant::now();
        self.src_t.stop_and_copy()?;
        let mut it = Iteration::new(index, Phase::StopAndCopy);
        self.collect_dirty_pages(&mut it)?;
        it.guest_bytes = copy_pages(&self.src.ram, &self.dst.ram, &self.set)?;
        (it.device_bytes, it.device_chunks) = self.forward_stream(None)?;
        check_nothing_pending(self.src_t)?;
        it.duration = down.elapsed();
        Ok(Stopped {
            iteration: it,
            cpu,
            paused,
            down,
        })
    }

    /// Ends both sides' transfer, verifies the destination against the
    /// source and runs it.
    fn switch_over(
        &mut self,
        iterations: Vec<Iteration>,
        convergence: Convergence,
        stopped: Stopped,
        t_start: Instant,
    ) -> Result<LiveReport> {
        // The source is quiesced and the vCPUs stopped: its state is final.
        let t_verify = Instant::now();
        let src_snap = DeviceSnapshot::take(&self.src.dev)?;
        let verify_src = t_verify.elapsed();
        self.src_t.end_save()?;
        // Validates the stream and makes it the destination's state.
        self.dst_t.end_restore()?;
        let t_verify = Instant::now();
        let dst_snap = DeviceSnapshot::take(&self.dst.dev)?;
        let problems = verify::differences(self.src, self.dst, &src_snap, &dst_snap)?;
        let stop = stopped.iteration;
        if !problems.is_empty() {
            self.progress(&stop);
            return Err(Error::Invalid(format!(
                "verification failed after {} pre-copy iteration(s) and a stop-and-copy of {} \
                 pages: {}",
                iterations.len(),
                stop.dirty_pages,
                problems.join("; ")
            )));
        }
        let verify_time = verify_src + t_verify.elapsed();
        self.dst_t.resume()?;
        let (downtime, vcpu_pause) = (stopped.down.elapsed(), stopped.paused.elapsed());
        let total_time = t_start.elapsed();
        self.progress(&stop);
        let writer = verify::check_writer(self.dst, &dst_snap, self.opts.settle)?;
        Ok(LiveReport {
            ram_bytes: self.src.ram.len() as u64,
            iova: self.src.iova,
            iterations,
            stop,
            convergence,
            downtime,
            verify_time,
            vcpu_pause,
            total_time,
            cpu: stopped.cpu,
            verification: Verification {
                guest_ram_bytes: self.src.ram.len() as u64,
                bar2_bytes: src_snap.memory.len() as u64,
                registers: src_snap.regs.len() as u64,
                config_bytes: src_snap.config.len() as u64,
            },
            writer,
        })
    }

    /// The source's dirty pages: the device bitmap over all guest RAM, and
    /// the CPU log, into `set` (cleared first). Fills the counts of `it`.
    fn collect_dirty_pages(&mut self, it: &mut Iteration) -> Result<()> {
        let (src, src_t) = (self.src, self.src_t);
        self.set.clear();
        let window = self.opts.dirty_window;
        let scan = collect_dirty(src.pages(), window, &mut self.set, &mut |first, total| {
            let bm = src_t.dirty_bitmap(src.page_iova(first)?, total)?;
            Ok((bm.copied, bm.words))
        })?;
        it.device_dirty = scan.dirty;
        it.queries = scan.queries;
        self.cpu_set.clear();
        if let Some(log) = &self.log {
            it.cpu_dirty = log.take_into(&mut self.cpu_set)?;
            self.set.union_with(&self.cpu_set)?;
        }
        it.dirty_pages = self.set.count();
        Ok(())
    }

    /// Moves stream chunks from the source to the destination until there
    /// is none or, with `limit`, once that many bytes moved (so that a
    /// device written faster than we read cannot keep us here). Returns
    /// `(bytes, chunks)`.
    fn forward_stream(&mut self, limit: Option<u64>) -> Result<(u64, u64)> {
        let (mut bytes, mut chunks) = (0u64, 0u64);
        while limit.is_none_or(|l| bytes < l) {
            let len = self.src_t.read_chunk(&mut self.buf)?;
            if len == 0 {
                break;
            }
            self.dst_t.write_chunk(&self.buf)?;
            bytes += len as u64;
            chunks += 1;
        }
        Ok((bytes, chunks))
    }
}

/// Copies the pages of `set` from the source's RAM to the destination's,
/// run by run (one copy per run of consecutive pages, no system call);
/// returns the bytes copied.
pub fn copy_pages(src: &GuestMemory, dst: &GuestMemory, set: &PageSet) -> Result<u64> {
    let mut bytes = 0u64;
    for (first, n) in set.runs() {
        let off = usize::try_from(first * GUEST_PAGE_SIZE)
            .map_err(|_| Error::Invalid(format!("page {first} is out of reach")))?;
        let len = usize::try_from(n * GUEST_PAGE_SIZE)
            .map_err(|_| Error::Invalid(format!("{n} pages are out of reach")))?;
        src.copy_range_to(dst, off, len)?;
        bytes += len as u64;
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::super::vcpu::fill_cpu_page;
    use super::super::verify::page_kind;
    use super::super::PAGE;
    use super::*;

    #[test]
    fn copies_only_the_set() {
        let src = GuestMemory::new("s", 8 * PAGE).unwrap();
        let dst = GuestMemory::new("d", 8 * PAGE).unwrap();
        for p in 0..8 {
            src.write_at(p * PAGE + 100, &[p as u8 + 1]).unwrap();
        }
        let mut set = PageSet::new(8).unwrap();
        for p in [1, 2, 6] {
            set.insert(p);
        }
        assert_eq!(copy_pages(&src, &dst, &set).unwrap(), 3 * GUEST_PAGE_SIZE);
        let mut b = [0u8];
        for p in 0..8 {
            dst.read_at(p * PAGE + 100, &mut b).unwrap();
            let want = if [1, 2, 6].contains(&p) {
                p as u8 + 1
            } else {
                0
            };
            assert_eq!(b[0], want, "page {p}");
        }
        let d = src.compare(&dst).unwrap().unwrap();
        assert_eq!((d.first_offset, d.pages), (100, 5));
        assert_eq!(page_kind(&src, 0), "00000000000000000000000000000000");
        let mut head = [0u8; PAGE];
        fill_cpu_page(&mut head, 9, 3);
        src.write_at(3 * PAGE, &head).unwrap();
        assert_eq!(page_kind(&src, 3), "CPU workload write #9");
    }
}
