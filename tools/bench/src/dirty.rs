// SPDX-License-Identifier: GPL-2.0
//! Benchmark 1: the cost of a dirty query against the number of dirty pages
//! and against the size of the range asked for.
//!
//! A sparse 4 GiB memfd is mapped for DMA (pages are only allocated when
//! touched; the emulated IOMMU pins nothing at map time). The device is in
//! MIGRATION_PRECOPY (dirty logging runs from SETUP). For each case the
//! device dirties its pages with `FILL` commands, then the whole range is
//! queried in windows of the bitmap area's capacity (BITMAP_LEN * 8 pages).
//! Only the query calls are timed (write `start_addr`, write `total`, read
//! `copied`); reading the bitmap out is timed apart. A query clears what it
//! reports, so every measurement dirties its pages again first. Cases run
//! round robin, one repetition of each at a time, so that drift hits them
//! alike.
//!
//! Three tables:
//!
//! * 1a, against N: 4 GiB, N = 0, 10, 100, 1000 pages scattered over the
//!   range, one one-page `FILL` each (nearly every page in a 2 MiB block of
//!   its own: the worst case for the module's chunked log);
//! * 1b, against the range: 64 MiB, 1 GiB, 4 GiB, each with N = 0 and with
//!   the same 1000 pages (125 runs of 8, scattered over the first 64 MiB),
//!   so that only the range changes;
//! * 1c, against the spread of 1000 pages over 4 GiB: clustered (the 1b
//!   set), scattered (the 1a set, one per stride of about 4 MiB) and random
//!   (1000 distinct pages drawn with a fixed seed), with the bitmap readout
//!   against the query.

use std::sync::Arc;
use std::time::{Duration, Instant};

use vfio_mig::{DeviceState, GuestMemory};

use crate::dma;
use crate::stats::{self, bytes_label, num, ratio, Table};
use crate::{BResult, Figure, Opts, Report};
use vfio_mig::abi::GUEST_PAGE_SIZE;

/// IOVA of the 4 GiB mapping (above 4 GiB, so the high halves of the
/// address registers matter).
const IOVA: u64 = 1 << 32;
/// Size of the mapping.
const MAP_LEN: u64 = 4 << 30;

/// Pages per FILL of the clustered set of the range-size table.
const CLUSTER_RUN: u64 = 8;

/// Which table a case belongs to.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Group {
    /// 4 GiB, N one-page FILLs scattered over it.
    Scattered,
    /// Range size varies; N = 0 or the same clustered 1000 pages.
    Range,
    /// 4 GiB, 1000 one-page FILLs at random pages.
    Random,
}

/// Seed of the random spread (fixed: every run dirties the same pages).
const RANDOM_SEED: u64 = 0x5eed;

/// `n` distinct pages of `0..range_pages` drawn at random, sorted.
fn random_pages(range_pages: u64, n: u64, seed: u64) -> Vec<u64> {
    let mut rng = dma::Lcg::new(seed);
    let mut set = std::collections::BTreeSet::new();
    while (set.len() as u64) < n.min(range_pages) {
        set.insert(rng.next_u64() % range_pages);
    }
    set.into_iter().collect()
}

struct Case {
    group: Group,
    range: u64,
    /// Runs of pages `(first, count)` to dirty, one FILL each.
    runs: Vec<(u64, u64)>,
    /// The pages the runs cover, sorted.
    pages: Vec<u64>,
    query: Vec<Duration>,
    /// The same query again at once, nothing dirtied in between.
    after: Vec<Duration>,
    readout: Vec<Duration>,
    windows: u32,
    wrong: Vec<String>,
}

impl Case {
    fn new(group: Group, range: u64, runs: Vec<(u64, u64)>) -> Self {
        let pages = runs.iter().flat_map(|&(p, n)| p..p + n).collect();
        Case {
            group,
            range,
            runs,
            pages,
            query: Vec::new(),
            after: Vec::new(),
            readout: Vec::new(),
            windows: 0,
            wrong: Vec::new(),
        }
    }

    fn n(&self) -> u64 {
        self.pages.len() as u64
    }

    fn median_us(&self) -> f64 {
        stats::median_us(&self.query)
    }
}

pub fn run(opts: &Opts) -> BResult<Report> {
    let dev = crate::open_sample("small", opts)?;
    let mem = Arc::new(
        GuestMemory::new("bench-dirty", MAP_LEN as usize)
            .map_err(|e| format!("guest memory: {e}"))?,
    );
    dev.map_dma(IOVA, &mem)
        .map_err(|e| format!("map 4 GiB for DMA: {e}"))?;
    let region = dev.migration_region().map_err(|e| e.to_string())?.clone();
    let window = region.bitmap_len * 8;
    for s in [
        DeviceState::Running,
        DeviceState::Setup,
        DeviceState::PreCopy,
    ] {
        dev.set_state(s).map_err(|e| e.to_string())?;
    }

    let one_page = |pages: Vec<u64>| pages.into_iter().map(|p| (p, 1)).collect::<Vec<_>>();
    // The clustered set: 1000 pages, runs of 8 scattered over the first
    // 64 MiB, the same for every range.
    let cluster: Vec<(u64, u64)> = dma::scatter(
        (64 << 20) / GUEST_PAGE_SIZE,
        1000 / CLUSTER_RUN,
        CLUSTER_RUN,
        0xc1u64,
    )
    .into_iter()
    .map(|p| (p, CLUSTER_RUN))
    .collect();
    let mut cases = Vec::new();
    for n in [0u64, 10, 100, 1000] {
        let pages = dma::scatter(MAP_LEN / GUEST_PAGE_SIZE, n, 1, n);
        cases.push(Case::new(Group::Scattered, MAP_LEN, one_page(pages)));
    }
    for range in [64u64 << 20, 1 << 30] {
        cases.push(Case::new(Group::Range, range, Vec::new()));
    }
    for range in [64u64 << 20, 1 << 30, 4 << 30] {
        cases.push(Case::new(Group::Range, range, cluster.clone()));
    }
    cases.push(Case::new(
        Group::Random,
        MAP_LEN,
        one_page(random_pages(MAP_LEN / GUEST_PAGE_SIZE, 1000, RANDOM_SEED)),
    ));

    let mut buf = Vec::new();
    // Whatever is in the log now (nothing, logging just started) goes.
    let q = dma::query(&dev, IOVA, MAP_LEN / GUEST_PAGE_SIZE, window, &mut buf)?;
    let mut leftovers = q.dirty.len();

    let reps = opts.reps(21);
    let budget = opts.budget(Duration::from_secs(60));
    let t_start = Instant::now();
    let mut fill_time = Duration::ZERO;
    let mut fills = 0u64;
    let mut done_reps = 0;
    for rep in 0..reps {
        for c in cases.iter_mut() {
            let pages = c.range / GUEST_PAGE_SIZE;
            // Guard: the range starts clean (a leftover would be counted).
            let q = dma::query(&dev, IOVA, pages, window, &mut buf)?;
            leftovers += q.dirty.len();
            let cmds: Vec<(u64, u32)> = c
                .runs
                .iter()
                .map(|&(p, n)| (IOVA + p * GUEST_PAGE_SIZE, (n * GUEST_PAGE_SIZE) as u32))
                .collect();
            let t = Instant::now();
            dma::fill(&dev, &cmds, 0x5a5a_0000 | rep as u32)?;
            fill_time += t.elapsed();
            fills += cmds.len() as u64;
            let q = dma::query(&dev, IOVA, pages, window, &mut buf)?;
            if q.dirty != c.pages && c.wrong.len() < 3 {
                c.wrong.push(describe_mismatch(&c.pages, &q.dirty));
            }
            c.query.push(q.query);
            c.readout.push(q.readout);
            c.windows = q.windows;
            let again = dma::query(&dev, IOVA, pages, window, &mut buf)?;
            leftovers += again.dirty.len();
            c.after.push(again.query);
        }
        done_reps = rep + 1;
        let per_rep = t_start.elapsed() / done_reps as u32;
        if done_reps >= 3 && t_start.elapsed() + per_rep > budget {
            break;
        }
    }
    let _ = dev.set_state(DeviceState::Cancelled);

    let find = |g: Group, range: u64, n: u64| {
        cases
            .iter()
            .find(|c| (c.group == g || n == 0) && c.range == range && c.n() == n)
            .map_or(f64::NAN, Case::median_us)
    };
    let headers = [
        "range",
        "dirty N",
        "2 MiB blocks",
        "queries",
        "query us (median)",
        "min..max",
        "vs N=0 same range",
        "vs 64 MiB same N",
        "bitmap readout us",
        "query after us",
        "log ok",
    ];
    let row = |c: &Case, vs_small: String| {
        let us: Vec<f64> = c.query.iter().map(|d| d.as_secs_f64() * 1e6).collect();
        let (lo, hi) = stats::min_max(&us);
        vec![
            bytes_label(c.range),
            c.n().to_string(),
            blocks(&c.pages).to_string(),
            c.windows.to_string(),
            num(c.median_us()),
            format!("{}..{}", num(lo), num(hi)),
            ratio(c.median_us(), find(c.group, c.range, 0)),
            vs_small,
            num(stats::median_us(&c.readout)),
            num(stats::median_us(&c.after)),
            if c.wrong.is_empty() { "yes" } else { "NO" }.into(),
        ]
    };
    let mut ta = Table::new(
        "1a. dirty query against dirty pages: 4 GiB range, N one-page FILLs scattered over it",
        &headers,
    );
    for c in cases.iter().filter(|c| c.group == Group::Scattered) {
        ta.row(row(c, "-".into()));
    }
    let r4 = ratio(
        find(Group::Scattered, MAP_LEN, 1000),
        find(Group::Scattered, MAP_LEN, 0),
    );
    ta.note(format!(
        "issue target: 4 GiB query with 1000 dirty pages at most 2x the same query with none; \
         measured {r4}"
    ));
    let mut tb = Table::new(
        "1b. dirty query against range size: N=0, and the same 1000 pages (125 runs of 8 in \
         the first 64 MiB)",
        &headers,
    );
    let mut range_rows: Vec<&Case> = cases
        .iter()
        .filter(|c| c.group == Group::Range || c.n() == 0)
        .collect();
    range_rows.sort_by_key(|c| (c.n(), c.range));
    for c in range_rows {
        tb.row(row(c, ratio(c.median_us(), find(c.group, 64 << 20, c.n()))));
    }
    tb.note(format!(
        "{done_reps} measurements per case (median), all cases of 1a and 1b round robin; a \
         query over R bytes is ceil(R / {}) queries of at most {window} pages each (write \
         dirty_pfns.start_addr, write .total, read .copied), summed",
        bytes_label(window * GUEST_PAGE_SIZE)
    ));
    tb.note(
        "\"query us\" times only those calls; \"bitmap readout\", timed apart, is the read \
         of data.offset and, without a mapped bitmap area, the pread of the bitmap; with \
         one, the decoder reads the mapped words in place (the decoding, untimed either \
         way, is the VMM's scan for dirty pages)",
    );
    tb.note(
        "\"query after\": the same query again at once, with nothing dirtied since; it frees \
         the log's chunks the query emptied (kept for the device's next writes), which a \
         dirty set that moves every round pays and one that stays does not",
    );
    tb.note(
        "\"2 MiB blocks\": how many 2 MiB blocks of IOVA hold the dirty pages (the \
         module's log keeps the bits of 512 pages together)",
    );
    tb.note(format!(
        "dirtying: {fills} FILL commands took {:.1} s ({} us each, write of DMA_CMD to DONE; \
         not part of any timing); device in MIGRATION_PRECOPY",
        fill_time.as_secs_f64(),
        num(fill_time.as_secs_f64() * 1e6 / fills.max(1) as f64)
    ));
    let mut tc = Table::new(
        "1c. dirty query against the spread: 4 GiB range, 1000 dirty pages",
        &headers,
    );
    let spread = |g: Group| {
        cases
            .iter()
            .find(|c| c.group == g && c.range == MAP_LEN && c.n() == 1000)
    };
    let empty = cases
        .iter()
        .find(|c| c.range == MAP_LEN && c.n() == 0)
        .ok_or("no empty 4 GiB case")?;
    tc.row(row(empty, "-".into()));
    for g in [Group::Range, Group::Scattered, Group::Random] {
        if let Some(c) = spread(g) {
            tc.row(row(c, "-".into()));
        }
    }
    tc.note(
        "rows: empty; clustered (125 runs of 8 in the first 64 MiB); scattered (one page in \
         each 4 MiB stride); random (1000 distinct pages, fixed seed); target: each at most \
         2x the empty query",
    );
    if let Some(c) = spread(Group::Scattered) {
        let floor = floor_us(&c.pages, window, 201);
        tc.note(format!(
            "floor: setting the scattered set's 1000 bits in a zeroed {} bitmap and clearing \
             them again, in userspace in this guest (the least a report that costs O(dirty \
             pages) does): {} us, {} the empty query",
            bytes_label(window / 8),
            num(floor),
            ratio(floor, empty.median_us())
        ));
    }
    let readout_vs_query =
        (empty.median_us() + stats::median_us(&empty.readout)) / empty.median_us();
    tc.note(format!(
        "the empty 4 GiB query with its bitmap readout costs {} the query alone (target: \
         1.5x at most)",
        if readout_vs_query.is_finite() {
            format!("{readout_vs_query:.2}x")
        } else {
            "-".into()
        }
    ));
    let vs_empty = |g: Group| {
        Figure::or_na(
            spread(g).map_or(f64::NAN, Case::median_us) / empty.median_us(),
            "no timing",
        )
    };
    let figures = vec![
        ("dirty_1000_clustered_vs_empty", vs_empty(Group::Range)),
        ("dirty_1000_scattered_vs_empty", vs_empty(Group::Scattered)),
        ("dirty_1000_random_vs_empty", vs_empty(Group::Random)),
        (
            "dirty_empty_4g_vs_64m",
            Figure::or_na(
                empty.median_us() / find(Group::Range, 64 << 20, 0),
                "no timing",
            ),
        ),
        (
            "dirty_readout_4g_vs_query",
            Figure::or_na(readout_vs_query, "no timing"),
        ),
    ];

    let mut errors = Vec::new();
    if leftovers != 0 {
        errors.push(format!(
            "the guard queries before the measurements found {leftovers} dirty pages nobody \
             dirtied"
        ));
    }
    for c in &cases {
        for w in &c.wrong {
            errors.push(format!(
                "{} with N={}{}: the query did not report exactly the dirtied pages: {w}",
                bytes_label(c.range),
                c.n(),
                if c.group == Group::Random {
                    " (random)"
                } else {
                    ""
                }
            ));
        }
    }
    for e in &errors {
        tc.note(format!("ERROR: {e}"));
    }
    Ok(Report {
        tables: vec![ta, tb, tc],
        figures,
        errors,
    })
}

/// Median microseconds, over `reps` runs, of setting the bits of `pages`
/// in a zeroed bitmap of `window` pages (the query's windows share it, as
/// they share the bitmap area) and zeroing their words again.
fn floor_us(pages: &[u64], window: u64, reps: usize) -> f64 {
    let mut bitmap = vec![0u64; window.div_ceil(64) as usize];
    let word = |p: u64| ((p % window) / 64) as usize;
    let times: Vec<Duration> = (0..reps)
        .map(|_| {
            let t = Instant::now();
            for &p in pages {
                bitmap[word(p)] |= 1 << (p % 64);
            }
            std::hint::black_box(&mut bitmap);
            for &p in pages {
                bitmap[word(p)] = 0;
            }
            std::hint::black_box(&mut bitmap);
            t.elapsed()
        })
        .collect();
    stats::median_us(&times)
}

/// How many 2 MiB blocks of IOVA the pages fall in (the dirty log keeps
/// one chunk of bits per such block).
fn blocks(pages: &[u64]) -> usize {
    let mut b: Vec<u64> = pages.iter().map(|p| p / 512).collect();
    b.dedup();
    b.len()
}

fn describe_mismatch(want: &[u64], got: &[u64]) -> String {
    let missing: Vec<u64> = want
        .iter()
        .filter(|p| got.binary_search(p).is_err())
        .copied()
        .collect();
    let extra: Vec<u64> = got
        .iter()
        .filter(|p| want.binary_search(p).is_err())
        .copied()
        .collect();
    format!(
        "{} dirtied, {} reported, {} missing (first {:?}), {} extra (first {:?})",
        want.len(),
        got.len(),
        missing.len(),
        &missing[..missing.len().min(5)],
        extra.len(),
        &extra[..extra.len().min(5)]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_pages_distinct_sorted_fixed() {
        let p = random_pages(1 << 20, 1000, 3);
        assert_eq!(p.len(), 1000);
        assert!(p.windows(2).all(|w| w[0] < w[1]));
        assert!(p.iter().all(|&x| x < 1 << 20));
        assert_eq!(p, random_pages(1 << 20, 1000, 3));
        assert_eq!(random_pages(10, 20, 1), (0..10).collect::<Vec<_>>());
    }

    #[test]
    fn blocks_count_2mib_blocks() {
        assert_eq!(blocks(&[0, 1, 511, 512, 2000]), 3);
        assert_eq!(blocks(&[]), 0);
    }
}
