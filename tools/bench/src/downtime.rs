// SPDX-License-Identifier: GPL-2.0
//! Benchmark 4: downtime of a stop-and-copy against the size of the final
//! dirty set.
//!
//! Two `large` mdevs stand for the source and the destination, each with
//! its own 1 GiB of sparse "guest RAM" (memfds, A and B) mapped at the same
//! IOVA. Each migration: the destination enters MIGRATION_RESUME; the
//! source goes MIGRATION_SETUP, MIGRATION_PRECOPY and its whole pre-copy
//! stream goes to the destination (set buffer); a guard query empties the
//! dirty log; the source device then dirties exactly F guest pages (FILL
//! commands of 16 pages each, scattered over the 1 GiB) just before the
//! stop. The downtime is timed from the write of MIGRATION_STOPNCOPY
//! through: the dirty query over the 1 GiB (with its bitmap readout), the
//! copy of the reported pages from A to B (vfio-mig's live-migration copy,
//! [`vfio_mig::live::copy_pages`]), the drain of the source's remaining
//! stream into the destination, the source's MIGRATION_SAVE_COMPLETED, the
//! destination's MIGRATION_RESUME_COMPLETED and RUNNING. Then the source
//! runs again for the next migration.
//!
//! The table splits the downtime into the device's share (the
//! MIGRATION_STOPNCOPY write, the rest of the device stream, the
//! completions on both sides), the dirty query and the RAM copy; the RAM
//! copy is set against a memcpy of as many bytes between two buffers.

use std::sync::Arc;
use std::time::{Duration, Instant};

use vfio_mig::abi::bar0;
use vfio_mig::abi::migration::DATA_OFFSET;
use vfio_mig::abi::region::BAR2;
use vfio_mig::live::{copy_pages, PageSet};
use vfio_mig::sample::Regs;
use vfio_mig::{Device, DeviceState, GuestMemory};

use crate::dma::{self, Lcg};
use crate::stats::{self, num, ratio, Table};
use crate::{BResult, Figure, Opts, Report};
use vfio_mig::abi::GUEST_PAGE_SIZE;

const IOVA: u64 = 0x4000_0000;
const RAM: u64 = 1 << 30;
/// Pages per FILL command when dirtying (a command costs milliseconds
/// under TCG whatever its size; the copy and the query cost the same).
const RUN: u64 = 16;

#[derive(Default)]
struct Sample {
    total: Duration,
    stop: Duration,
    query: Duration,
    copy: Duration,
    /// The same copy again at once, outside the downtime: what it costs
    /// with nothing left to fault in or translate for the first time.
    copy_again: Duration,
    stream: Duration,
    commit: Duration,
    stream_bytes: usize,
}

impl Sample {
    /// The device's share: stop-and-copy and the resume of device state.
    fn device(&self) -> Duration {
        self.stop + self.stream + self.commit
    }
}

struct Case {
    pages: u64,
    runs: Vec<u64>,
    samples: Vec<Sample>,
    /// memcpy of as many bytes as the case's RAM copy, in one call.
    memcpy: Vec<Duration>,
    /// The same memcpy in calls of one run (RUN pages) each, the size of
    /// the RAM copy's calls.
    memcpy_runs: Vec<Duration>,
    wrong: Vec<String>,
}

/// Moves the source's stream to the destination until get buffer returns
/// 0; returns the bytes moved.
fn pump(src: &Device, dst: &Device, buf: &mut Vec<u8>) -> BResult<usize> {
    let mut n = 0;
    loop {
        let len = src.get_buffer(buf).map_err(|e| e.to_string())?;
        if len == 0 {
            return Ok(n);
        }
        dst.set_buffer(buf, DATA_OFFSET)
            .map_err(|e| e.to_string())?;
        n += len;
    }
}

fn st(d: &Device, s: DeviceState) -> BResult<()> {
    d.set_state(s).map_err(|e| e.to_string())
}

pub fn run(opts: &Opts) -> BResult<Report> {
    let src = crate::open_sample("large", opts)?;
    let dst = crate::open_sample("large", opts)?;
    let a = Arc::new(GuestMemory::new("bench-ram-a", RAM as usize).map_err(|e| e.to_string())?);
    let b = Arc::new(GuestMemory::new("bench-ram-b", RAM as usize).map_err(|e| e.to_string())?);
    src.map_dma(IOVA, &a)
        .map_err(|e| format!("map source RAM: {e}"))?;
    dst.map_dma(IOVA, &b)
        .map_err(|e| format!("map destination RAM: {e}"))?;
    let mem_size = Regs(&src).read(bar0::MEM_SIZE).map_err(|e| e.to_string())? as usize;
    let mut content = vec![0u8; mem_size];
    Lcg::new(4).fill(&mut content);
    src.write_region(BAR2, 0, &content)
        .map_err(|e| format!("fill device memory: {e}"))?;
    st(&src, DeviceState::Running)?;
    let window = src
        .migration_region()
        .map_err(|e| e.to_string())?
        .bitmap_len
        * 8;
    let range_pages = RAM / GUEST_PAGE_SIZE;

    let mut cases: Vec<Case> = [0u64, 64, 512, 4096]
        .into_iter()
        .map(|pages| Case {
            pages,
            runs: dma::scatter(range_pages, pages / RUN, RUN, pages),
            samples: Vec::new(),
            memcpy: Vec::new(),
            memcpy_runs: Vec::new(),
            wrong: Vec::new(),
        })
        .collect();

    // Both sides' RAM is resident, as a running VM's is: fault in the
    // pages the cases will dirty and copy.
    let mut page = vec![0u8; GUEST_PAGE_SIZE as usize];
    for c in &cases {
        for p in c.runs.iter().flat_map(|&p| p..p + RUN) {
            let off = (p * GUEST_PAGE_SIZE) as usize;
            a.read_at(off, &mut page).map_err(|e| e.to_string())?;
            b.write_at(off, &page).map_err(|e| e.to_string())?;
        }
    }

    // The memcpy baseline's buffers, touched.
    let most = cases.iter().map(|c| c.pages).max().unwrap_or(0) * GUEST_PAGE_SIZE;
    let copy_from = vec![0x3cu8; most as usize];
    let mut copy_to = vec![0u8; most as usize];
    let mut set = PageSet::new(range_pages).map_err(|e| e.to_string())?;

    let reps = opts.reps(9);
    let mut buf = Vec::new();
    let mut bitmap = Vec::new();
    let mut errors = Vec::new();
    let mut precopy_bytes = 0;
    let mut seq = 0u32;
    // Round 0 warms up (first restore, first query) and is not recorded.
    for round in 0..=reps {
        for c in cases.iter_mut() {
            seq += 1;
            let pattern = 0xd0d0_0000 | seq;
            st(&dst, DeviceState::Resume)?;
            st(&src, DeviceState::Setup)?;
            st(&src, DeviceState::PreCopy)?;
            precopy_bytes = pump(&src, &dst, &mut buf)?;
            // RAM pre-copy pass: copy what the log holds (nothing: logging
            // just started), leaving it empty.
            let q = dma::query(&src, IOVA, range_pages, window, &mut bitmap)?;
            if !q.dirty.is_empty() {
                errors.push(format!(
                    "the dirty log held {} pages right after MIGRATION_SETUP",
                    q.dirty.len()
                ));
            }
            let cmds: Vec<(u64, u32)> = c
                .runs
                .iter()
                .map(|p| (IOVA + p * GUEST_PAGE_SIZE, (RUN * GUEST_PAGE_SIZE) as u32))
                .collect();
            dma::fill(&src, &cmds, pattern)?;

            // The downtime.
            let mut s = Sample::default();
            let t0 = Instant::now();
            st(&src, DeviceState::StopNCopy)?;
            s.stop = t0.elapsed();
            let t = Instant::now();
            let q = dma::query(&src, IOVA, range_pages, window, &mut bitmap)?;
            s.query = t.elapsed();
            set.clear();
            for &p in &q.dirty {
                set.insert(p);
            }
            let t = Instant::now();
            copy_pages(&a, &b, &set).map_err(|e| e.to_string())?;
            s.copy = t.elapsed();
            let t = Instant::now();
            s.stream_bytes = pump(&src, &dst, &mut buf)?;
            s.stream = t.elapsed();
            let t = Instant::now();
            st(&src, DeviceState::SaveCompleted)?;
            st(&dst, DeviceState::ResumeCompleted)?;
            st(&dst, DeviceState::Running)?;
            s.commit = t.elapsed();
            s.total = t0.elapsed();
            let t = Instant::now();
            copy_pages(&a, &b, &set).map_err(|e| e.to_string())?;
            s.copy_again = t.elapsed();
            if round > 0 {
                c.samples.push(s);
                let n = (c.pages * GUEST_PAGE_SIZE) as usize;
                let t = Instant::now();
                copy_to[..n].copy_from_slice(std::hint::black_box(&copy_from[..n]));
                std::hint::black_box(&mut copy_to);
                c.memcpy.push(t.elapsed());
                let t = Instant::now();
                for (to, from) in copy_to[..n]
                    .chunks_mut((RUN * GUEST_PAGE_SIZE) as usize)
                    .zip(copy_from[..n].chunks((RUN * GUEST_PAGE_SIZE) as usize))
                {
                    to.copy_from_slice(std::hint::black_box(from));
                }
                std::hint::black_box(&mut copy_to);
                c.memcpy_runs.push(t.elapsed());
            }

            // Checks, outside the timing.
            let want: Vec<u64> = c.runs.iter().flat_map(|&p| p..p + RUN).collect();
            if q.dirty != want && c.wrong.len() < 3 {
                c.wrong.push(format!(
                    "{} pages dirtied, {} reported",
                    want.len(),
                    q.dirty.len()
                ));
            }
            for &p in &c.runs {
                let mut w = [0u8; 4];
                b.read_at((p * GUEST_PAGE_SIZE) as usize, &mut w)
                    .map_err(|e| e.to_string())?;
                if u32::from_le_bytes(w) != pattern && c.wrong.len() < 3 {
                    c.wrong.push(format!(
                        "destination RAM page {p} reads {:#x}, not the pattern {pattern:#x}",
                        u32::from_le_bytes(w)
                    ));
                    break;
                }
            }
            st(&src, DeviceState::Running)?;
        }
    }
    let mut back = vec![0u8; mem_size];
    dst.read_region(BAR2, 0, &mut back)
        .map_err(|e| format!("read destination device memory: {e}"))?;
    if back != content {
        errors.push("the destination's device memory differs from the source's".into());
    }

    let ms = |d: &Duration| d.as_secs_f64() * 1e3;
    let med = |c: &Case, f: &dyn Fn(&Sample) -> Duration| {
        let v: Vec<f64> = c.samples.iter().map(|s| ms(&f(s))).collect();
        stats::median(&v).unwrap_or(f64::NAN)
    };
    let base = med(&cases[0], &|s| s.total);
    let mut t = Table::new(
        "4. downtime against the final dirty set (stop-and-copy)",
        &[
            "final dirty pages",
            "downtime ms (median)",
            "min..max",
            "vs 0 pages",
            "device share",
            "stop",
            "device stream",
            "stream bytes",
            "commit",
            "query+bitmap",
            "RAM copy",
            "again",
            "memcpy",
            "RAM copy vs memcpy",
            "memcpy in runs",
            "ok",
        ],
    );
    let memcpy_ms = |c: &Case| stats::median_us(&c.memcpy) / 1e3;
    let runs_ms = |c: &Case| stats::median_us(&c.memcpy_runs) / 1e3;
    for c in &cases {
        let tot: Vec<f64> = c.samples.iter().map(|s| ms(&s.total)).collect();
        let (lo, hi) = stats::min_max(&tot);
        let m = med(c, &|s| s.total);
        let copy = med(c, &|s| s.copy);
        t.row(vec![
            c.pages.to_string(),
            num(m),
            format!("{}..{}", num(lo), num(hi)),
            ratio(m, base),
            num(med(c, &Sample::device)),
            num(med(c, &|s| s.stop)),
            num(med(c, &|s| s.stream)),
            c.samples.last().map_or(0, |s| s.stream_bytes).to_string(),
            num(med(c, &|s| s.commit)),
            num(med(c, &|s| s.query)),
            num(copy),
            num(med(c, &|s| s.copy_again)),
            num(memcpy_ms(c)),
            if c.pages == 0 {
                "-".into()
            } else {
                ratio(memcpy_ms(c), copy)
            },
            num(runs_ms(c)),
            if c.wrong.is_empty() { "yes" } else { "NO" }.into(),
        ]);
    }
    t.note(format!(
        "{reps} migrations per case (median) after one warm-up round, cases round robin; \
         both sides' RAM pages resident beforehand; the columns after \"vs 0 pages\" are \
         medians, in ms: the device's share (per migration: stop + device stream + commit), \
         the MIGRATION_STOPNCOPY write, the source's remaining stream into the destination \
         (get buffer + set buffer), SAVE_COMPLETED + RESUME_COMPLETED + RUNNING; then the \
         dirty query over 1 GiB of RAM with its bitmap readout, vfio-mig's copy of the \
         reported pages (vfio_mig::live::copy_pages: one copy per run of consecutive pages, \
         memfd mapping to memfd mapping), the same copy again at once after the downtime \
         (\"again\": nothing left to fault in or to translate for the first time), and a memcpy of as many bytes between \
         two touched buffers; \"RAM copy vs memcpy\" is throughput against memcpy's (target 0.80x or \
         better); \"memcpy in runs\": the same memcpy in calls of {} KiB, the size of \
         the RAM copy's calls (libc picks its copy loop by size)",
        RUN * GUEST_PAGE_SIZE / 1024
    ));
    t.note(
        "targets at 512 pages: the device's share at most 1 ms on the benchmark kernel; the \
         rest of the downtime is the dirty query and the RAM copy",
    );
    t.note(format!(
        "a large mdev ({} KiB device memory, all sent in pre-copy: {precopy_bytes} bytes); \
         the final dirty set is guest RAM written by the device's DMA (FILL, {RUN} pages per \
         command) after the pre-copy, just before the stop",
        mem_size >> 10
    ));
    for c in &cases {
        for w in &c.wrong {
            errors.push(format!("{} final dirty pages: {w}", c.pages));
        }
    }
    for e in &errors {
        t.note(format!("ERROR: {e}"));
    }
    let at_512 = cases.iter().find(|c| c.pages == 512);
    let figures = vec![
        (
            "device_downtime_ms_512",
            Figure::or_na(
                at_512.map_or(f64::NAN, |c| med(c, &Sample::device)),
                "no 512-page migration was timed",
            ),
        ),
        (
            "ram_copy_vs_memcpy",
            Figure::or_na(
                at_512.map_or(f64::NAN, |c| memcpy_ms(c) / med(c, &|s| s.copy)),
                "no 512-page migration was timed",
            ),
        ),
    ];
    Ok(Report {
        tables: vec![t],
        figures,
        errors,
    })
}
