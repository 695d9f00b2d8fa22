// SPDX-License-Identifier: GPL-2.0
//! Live migration of a running sample device between two mdevs, the way a
//! VMM does it (Documentation/tools.rst, "Live migration").
//!
//! Each side is a [`Vm`]: a [`Device`] opened in its own IOMMU context
//! (every [`Device::open`] makes a new container or iommufd) and its own
//! guest RAM, a [`GuestMemory`] mapped for DMA at the same IOVA on both
//! sides. On the source the guest "runs": the device's background writer
//! writes guest RAM by DMA, and a [`CpuWorkload`] thread stands in for the
//! vCPUs, writing guest RAM directly (logged in a [`DirtyLog`], as KVM's
//! dirty log would) and BAR2 through `pwrite` (which the device tracks
//! itself and sends in its stream).
//!
//! [`migrate`] then runs pre-copy iterations (guest RAM that the device
//! bitmap or the CPU log reports dirty, plus the device's stream), stops the
//! vCPUs and the device, copies the rest, completes both sides, verifies
//! the destination bit for bit against the source, and lets the destination
//! run.

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::abi::bar0::{self, BG_MAGIC, RING_MAX_PAGES};
use crate::abi::{region, GUEST_PAGE_SIZE};
use crate::device::Device;
use crate::error::{Error, Result};
use crate::mem::{GuestMemory, MemoryDiff};
use crate::migration::DeviceState;
use crate::sample::{self, DeviceSnapshot, Regs};

const PAGE: usize = GUEST_PAGE_SIZE as usize;

/// Marker at bytes 12..16 of every page the CPU workload writes ("CPUW"),
/// where the background writer puts [`bar0::BG_MAGIC`].
pub const CPU_MAGIC: u32 = 0x5755_5043;

fn words_for(pages: u64) -> Result<usize> {
    usize::try_from(pages.div_ceil(64))
        .map_err(|_| Error::Invalid(format!("{pages} pages do not fit a bitmap here")))
}

/// A set of guest pages, one bit each.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageSet {
    words: Vec<u64>,
    pages: u64,
}

impl PageSet {
    /// An empty set over pages `0..pages`.
    pub fn new(pages: u64) -> Result<Self> {
        Ok(PageSet {
            words: vec![0; words_for(pages)?],
            pages,
        })
    }

    /// How many pages the set ranges over.
    pub fn pages(&self) -> u64 {
        self.pages
    }

    /// Adds `page` (false when it is out of range).
    pub fn insert(&mut self, page: u64) -> bool {
        if page >= self.pages {
            return false;
        }
        self.words[(page / 64) as usize] |= 1 << (page % 64);
        true
    }

    /// Whether `page` is in the set.
    pub fn contains(&self, page: u64) -> bool {
        page < self.pages && self.words[(page / 64) as usize] & (1 << (page % 64)) != 0
    }

    /// Pages in the set.
    pub fn count(&self) -> u64 {
        self.words.iter().map(|w| u64::from(w.count_ones())).sum()
    }

    /// Empties the set.
    pub fn clear(&mut self) {
        self.words.fill(0);
    }

    /// Adds every page of `other` (same range).
    pub fn union_with(&mut self, other: &PageSet) -> Result<()> {
        if other.pages != self.pages {
            return Err(Error::Invalid(format!(
                "page sets over {} and {} pages",
                self.pages, other.pages
            )));
        }
        for (a, b) in self.words.iter_mut().zip(&other.words) {
            *a |= b;
        }
        Ok(())
    }

    /// ORs in a bitmap of `nbits` pages starting at `first_page` (bit k of
    /// the little-endian words is page `first_page + k`), as a dirty query
    /// returns it. Bits past `nbits` are ignored.
    pub fn or_bits_at(&mut self, first_page: u64, bits: &[u64], nbits: u64) -> Result<()> {
        let end = first_page.checked_add(nbits);
        if end.is_none_or(|e| e > self.pages) || (bits.len() as u64) < nbits.div_ceil(64) {
            return Err(Error::Invalid(format!(
                "a bitmap of {nbits} pages ({} words) at page {first_page} does not fit a set \
                 of {} pages",
                bits.len(),
                self.pages
            )));
        }
        let shift = (first_page % 64) as u32;
        let base = (first_page / 64) as usize;
        for (i, &w) in bits.iter().enumerate() {
            let done = i as u64 * 64;
            if done >= nbits {
                break;
            }
            let left = nbits - done;
            let w = if left < 64 { w & ((1 << left) - 1) } else { w };
            if w == 0 {
                continue;
            }
            self.words[base + i] |= w << shift;
            if shift != 0 {
                let high = w >> (64 - shift);
                if high != 0 {
                    // In range: the bits it carries are below first_page + nbits.
                    self.words[base + i + 1] |= high;
                }
            }
        }
        Ok(())
    }

    /// The first page in the set at or after `from`.
    fn next_set(&self, from: u64) -> Option<u64> {
        if from >= self.pages {
            return None;
        }
        let mut i = (from / 64) as usize;
        let mut w = self.words[i] & (u64::MAX << (from % 64));
        loop {
            if w != 0 {
                let page = i as u64 * 64 + u64::from(w.trailing_zeros());
                return (page < self.pages).then_some(page);
            }
            i += 1;
            w = *self.words.get(i)?;
        }
    }

    /// The first page not in the set at or after `from` (`pages` if none).
    fn next_clear(&self, from: u64) -> u64 {
        let mut i = (from / 64) as usize;
        if from >= self.pages {
            return self.pages;
        }
        let mut w = !self.words[i] & (u64::MAX << (from % 64));
        loop {
            if w != 0 {
                return (i as u64 * 64 + u64::from(w.trailing_zeros())).min(self.pages);
            }
            i += 1;
            match self.words.get(i) {
                Some(x) => w = !x,
                None => return self.pages,
            }
        }
    }

    /// The set as runs of consecutive pages, `(first, count)`, in order.
    pub fn runs(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        let mut from = 0;
        std::iter::from_fn(move || {
            let first = self.next_set(from)?;
            let end = self.next_clear(first);
            from = end;
            Some((first, end - first))
        })
    }
}

/// The VMM's log of guest pages written by the vCPUs (here: the CPU
/// workload thread), like KVM's dirty log. Writers mark a page after
/// writing it; the migration thread takes the log, clearing it, before it
/// copies: a write that races with the copy is then always in the next
/// take.
#[derive(Debug)]
pub struct DirtyLog {
    words: Vec<AtomicU64>,
    pages: u64,
}

impl DirtyLog {
    /// A clean log over pages `0..pages`.
    pub fn new(pages: u64) -> Result<Self> {
        Ok(DirtyLog {
            words: (0..words_for(pages)?).map(|_| AtomicU64::new(0)).collect(),
            pages,
        })
    }

    /// How many pages the log covers.
    pub fn pages(&self) -> u64 {
        self.pages
    }

    /// Marks `page` written (false when out of range). Call it after the
    /// write.
    pub fn mark(&self, page: u64) -> bool {
        if page >= self.pages {
            return false;
        }
        // Release: whoever takes this bit also sees the write before it.
        self.words[(page / 64) as usize].fetch_or(1 << (page % 64), Ordering::Release);
        true
    }

    /// Swaps the log with an empty one, word by word, and ORs what it held
    /// into `set`. Returns how many pages it held.
    pub fn take_into(&self, set: &mut PageSet) -> Result<u64> {
        if set.pages != self.pages {
            return Err(Error::Invalid(format!(
                "dirty log of {} pages taken into a set of {}",
                self.pages, set.pages
            )));
        }
        let mut n = 0;
        for (w, out) in self.words.iter().zip(set.words.iter_mut()) {
            // Acquire: the page writes that set these bits are visible to
            // the copy that follows.
            let bits = w.swap(0, Ordering::AcqRel);
            n += u64::from(bits.count_ones());
            *out |= bits;
        }
        Ok(n)
    }
}

/// What one walk over guest RAM with dirty queries did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DirtyScan {
    /// Dirty queries (device round trips).
    pub queries: u32,
    /// Pages the device reported dirty.
    pub dirty: u64,
}

/// Walks pages `0..pages` with dirty queries and ORs the answers into
/// `set`. `query(first_page, total)` asks the device about `total` pages
/// from `first_page` and returns `(copied, words)`: the device covers
/// `copied = min(total, its bitmap capacity)` pages, so the walk goes on
/// from `first_page + copied`. `window` caps `total` (0: ask for all that
/// is left and let the device cap it).
///
/// An answer that covers no page or more than asked, is shorter than
/// `copied` bits, or sets bits past `copied`, is an error: the device does
/// not keep the ABI.
pub fn collect_dirty(
    pages: u64,
    window: u64,
    set: &mut PageSet,
    query: &mut dyn FnMut(u64, u64) -> Result<(u64, Vec<u64>)>,
) -> Result<DirtyScan> {
    let mut scan = DirtyScan::default();
    let mut first = 0;
    while first < pages {
        let left = pages - first;
        let total = if window == 0 { left } else { left.min(window) };
        let (copied, words) = query(first, total)?;
        scan.queries += 1;
        if copied == 0 || copied > total {
            return Err(Error::Invalid(format!(
                "dirty query of {total} pages from page {first} answered copied = {copied}"
            )));
        }
        let need = copied.div_ceil(64);
        if (words.len() as u64) < need {
            return Err(Error::Invalid(format!(
                "dirty query from page {first}: {} bitmap words for {copied} pages",
                words.len()
            )));
        }
        let tail = copied % 64;
        if tail != 0 && words[need as usize - 1] >> tail != 0 {
            return Err(Error::Invalid(format!(
                "dirty query from page {first}, copied {copied}: bits set past copied \
                 (last word {:#018x})",
                words[need as usize - 1]
            )));
        }
        let before = set.count();
        scan.dirty += words[..need as usize]
            .iter()
            .map(|w| u64::from(w.count_ones()))
            .sum::<u64>();
        set.or_bits_at(first, &words, copied)?;
        debug_assert!(set.count() >= before);
        first += copied;
    }
    Ok(scan)
}

/// One side of the migration: a device and its guest RAM, mapped for the
/// device's DMA at `iova`.
#[derive(Debug, Clone)]
pub struct Vm {
    pub dev: Arc<Device>,
    pub ram: Arc<GuestMemory>,
    /// IOVA of the first byte of `ram` in the device's IOMMU context.
    pub iova: u64,
}

impl Vm {
    /// Creates `ram_bytes` (a page multiple) of guest RAM and maps it for
    /// `dev`'s DMA at `iova`.
    pub fn new(dev: Arc<Device>, name: &str, ram_bytes: usize, iova: u64) -> Result<Vm> {
        if ram_bytes == 0
            || !ram_bytes.is_multiple_of(PAGE)
            || !iova.is_multiple_of(GUEST_PAGE_SIZE)
        {
            return Err(Error::Invalid(format!(
                "guest RAM of {ram_bytes} bytes at IOVA {iova:#x}: size and IOVA must be \
                 non-zero page multiples"
            )));
        }
        let ram = Arc::new(GuestMemory::new(name, ram_bytes)?);
        // A running guest's RAM is there; allocating it is no part of a
        // migration's cost.
        ram.populate()?;
        dev.map_dma(iova, &ram)?;
        Ok(Vm { dev, ram, iova })
    }

    /// Guest RAM in pages.
    pub fn pages(&self) -> u64 {
        self.ram.len() as u64 / GUEST_PAGE_SIZE
    }

    /// The IOVA of guest page `page`.
    pub fn page_iova(&self, page: u64) -> Result<u64> {
        page.checked_mul(GUEST_PAGE_SIZE)
            .and_then(|off| self.iova.checked_add(off))
            .filter(|_| page < self.pages())
            .ok_or_else(|| {
                Error::Invalid(format!(
                    "page {page} is outside the {} pages of guest RAM",
                    self.pages()
                ))
            })
    }

    /// The sample registers of the device.
    pub fn regs(&self) -> Regs<'_> {
        Regs(&self.dev)
    }
}

/// How the CPU workload picks guest pages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PagePattern {
    /// Uniformly at random over guest RAM.
    Random,
    /// Page 0, then every `n`-th page, wrapping around.
    Strided(u64),
}

impl fmt::Display for PagePattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PagePattern::Random => f.write_str("random"),
            PagePattern::Strided(n) => write!(f, "strided:{n}"),
        }
    }
}

impl std::str::FromStr for PagePattern {
    type Err = Error;

    /// `random` or `strided:N`.
    fn from_str(s: &str) -> Result<Self> {
        if s == "random" {
            return Ok(PagePattern::Random);
        }
        match s.strip_prefix("strided:").map(str::parse::<u64>) {
            Some(Ok(n)) if n > 0 => Ok(PagePattern::Strided(n)),
            _ => Err(Error::Invalid(format!(
                "page pattern {s:?}: use random or strided:N (N >= 1)"
            ))),
        }
    }
}

/// Picks the pages the CPU workload writes.
#[derive(Debug, Clone)]
struct PagePicker {
    pattern: PagePattern,
    pages: u64,
    next: u64,
    rng: u64,
}

impl PagePicker {
    fn new(pattern: PagePattern, pages: u64, seed: u64) -> Result<Self> {
        if pages == 0 || pattern == PagePattern::Strided(0) {
            return Err(Error::Invalid(format!(
                "cannot pick pages {pattern} from {pages} pages"
            )));
        }
        Ok(PagePicker {
            pattern,
            pages,
            next: 0,
            // xorshift must not start at 0.
            rng: seed | 1,
        })
    }

    fn random(&mut self) -> u64 {
        // xorshift64*: fast, and good enough to spread writes.
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        self.rng.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn next_page(&mut self) -> u64 {
        match self.pattern {
            PagePattern::Random => self.random() % self.pages,
            PagePattern::Strided(n) => {
                let page = self.next;
                // Both terms are below `pages`: no overflow.
                self.next = (self.next + n % self.pages) % self.pages;
                page
            }
        }
    }
}

/// What the CPU workload does.
#[derive(Debug, Clone, Copy)]
pub struct CpuOptions {
    /// Guest RAM pages written per second (whole pages), 0 for none.
    pub rate: u32,
    /// Which pages.
    pub pattern: PagePattern,
    /// BAR2 writes per second, 0 for none.
    pub bar2_rate: u32,
    /// Bytes per BAR2 write (a power of two up to 4096), at an offset
    /// aligned to it.
    pub bar2_len: usize,
    /// Seed of the page and offset choice.
    pub seed: u64,
}

impl Default for CpuOptions {
    fn default() -> Self {
        CpuOptions {
            rate: 500,
            pattern: PagePattern::Random,
            bar2_rate: 100,
            bar2_len: 256,
            seed: 0x5eed,
        }
    }
}

/// What the CPU workload did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CpuStats {
    /// Guest RAM pages written.
    pub ram_pages: u64,
    /// BAR2 writes.
    pub bar2_writes: u64,
    /// How long it ran.
    pub ran: Duration,
}

/// How many events a rate of `per_s` has due after `t`.
fn due(per_s: u32, t: Duration) -> u64 {
    (u128::from(per_s) * t.as_micros() / 1_000_000) as u64
}

/// The bytes the CPU workload writes to a guest page: 16 bytes of header
/// (write number, page index, [`CPU_MAGIC`]) and a pattern of the write
/// number, so that every write changes the whole page.
fn fill_cpu_page(buf: &mut [u8], seq: u64, page: u64) {
    let mix = seq.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    for (i, w) in buf.chunks_exact_mut(8).enumerate() {
        w.copy_from_slice(&(mix ^ i as u64).to_le_bytes());
    }
    buf[0..8].copy_from_slice(&seq.to_le_bytes());
    buf[8..12].copy_from_slice(&(page as u32).to_le_bytes());
    buf[12..16].copy_from_slice(&CPU_MAGIC.to_le_bytes());
}

/// A thread standing in for the guest's vCPUs: it writes guest RAM pages
/// (and marks them in its [`DirtyLog`]) and BAR2 at the rates of
/// [`CpuOptions`]. Dropping it stops and joins the thread.
pub struct CpuWorkload {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<Result<CpuStats>>>,
    log: Arc<DirtyLog>,
    result: Option<std::result::Result<CpuStats, String>>,
}

impl fmt::Debug for CpuWorkload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CpuWorkload")
            .field("running", &self.handle.is_some())
            .finish()
    }
}

impl CpuWorkload {
    /// Starts the thread on `vm`.
    pub fn start(vm: &Vm, opts: CpuOptions) -> Result<Self> {
        let pages = vm.pages();
        let mut picker = PagePicker::new(opts.pattern, pages, opts.seed)?;
        let mem_size = vm.dev.region_info(region::BAR2)?.size;
        let bar2_len = opts.bar2_len;
        if opts.bar2_rate > 0
            && (!bar2_len.is_power_of_two() || bar2_len > PAGE || bar2_len as u64 > mem_size)
        {
            return Err(Error::Invalid(format!(
                "BAR2 writes of {bar2_len} bytes: use a power of two up to 4096 and up to the \
                 {mem_size} bytes of BAR2"
            )));
        }
        // Offsets of BAR2 writes: aligned slots of bar2_len (unused at rate 0).
        let slots = mem_size.checked_div(bar2_len as u64).unwrap_or(0).max(1);
        let log = Arc::new(DirtyLog::new(pages)?);
        let stop = Arc::new(AtomicBool::new(false));
        let (dev, ram, thread_log, thread_stop) = (
            Arc::clone(&vm.dev),
            Arc::clone(&vm.ram),
            Arc::clone(&log),
            Arc::clone(&stop),
        );
        let handle = std::thread::Builder::new()
            .name("vcpu-workload".into())
            .spawn(move || -> Result<CpuStats> {
                let mut stats = CpuStats::default();
                let mut page_buf = vec![0u8; PAGE];
                let mut seq = 0u64;
                let start = Instant::now();
                while !thread_stop.load(Ordering::Acquire) {
                    let t = start.elapsed();
                    let ram_due = due(opts.rate, t);
                    while stats.ram_pages < ram_due && !thread_stop.load(Ordering::Relaxed) {
                        let page = picker.next_page();
                        seq += 1;
                        fill_cpu_page(&mut page_buf, seq, page);
                        // page < pages, so the offset is inside the RAM.
                        ram.write_at(page as usize * PAGE, &page_buf)?;
                        thread_log.mark(page);
                        stats.ram_pages += 1;
                    }
                    let bar2_due = due(opts.bar2_rate, t);
                    while stats.bar2_writes < bar2_due && !thread_stop.load(Ordering::Relaxed) {
                        let off = (picker.random() % slots) * bar2_len as u64;
                        seq += 1;
                        fill_cpu_page(&mut page_buf, seq, off / GUEST_PAGE_SIZE);
                        dev.write_region(region::BAR2, off, &page_buf[..bar2_len])?;
                        stats.bar2_writes += 1;
                    }
                    std::thread::sleep(Duration::from_millis(1));
                }
                stats.ran = start.elapsed();
                Ok(stats)
            })
            .map_err(|e| Error::Io {
                what: "spawn of the CPU workload thread".into(),
                source: e,
            })?;
        Ok(CpuWorkload {
            stop,
            handle: Some(handle),
            log,
            result: None,
        })
    }

    /// The log of the pages it wrote.
    pub fn dirty_log(&self) -> &Arc<DirtyLog> {
        &self.log
    }

    /// Whether the thread ended by itself (an error stopped it).
    pub fn has_died(&self) -> bool {
        self.handle.as_ref().is_some_and(|h| h.is_finished())
    }

    /// Stops the thread and waits for it ("pauses the vCPUs"): once this
    /// returns, nothing writes guest RAM or BAR2 from it and every page it
    /// wrote is in the log. Returns what it did, or the error that stopped
    /// it. Later calls return the same answer.
    pub fn stop(&mut self) -> Result<CpuStats> {
        if let Some(h) = self.handle.take() {
            self.stop.store(true, Ordering::Release);
            self.result = Some(match h.join() {
                Ok(Ok(s)) => Ok(s),
                Ok(Err(e)) => Err(format!("the CPU workload failed: {e}")),
                Err(_) => Err("the CPU workload thread panicked".into()),
            });
        }
        match &self.result {
            Some(Ok(s)) => Ok(*s),
            Some(Err(e)) => Err(Error::Invalid(e.clone())),
            None => Err(Error::Invalid("the CPU workload never ran".into())),
        }
    }
}

impl Drop for CpuWorkload {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}

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

/// Pre-copy or the final stop-and-copy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    PreCopy,
    StopAndCopy,
}

/// One iteration of [`migrate`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Iteration {
    /// 0, 1, ... for pre-copy; the stop-and-copy follows the last.
    pub index: u32,
    pub phase: Phase,
    /// Iteration 0: all guest RAM was copied, no dirty query ran.
    pub full_copy: bool,
    /// Pages the device's dirty bitmap reported.
    pub device_dirty: u64,
    /// Pages the CPU dirty log held.
    pub cpu_dirty: u64,
    /// Pages copied: the union of the two (all pages on iteration 0).
    pub dirty_pages: u64,
    /// Dirty queries made.
    pub queries: u32,
    /// Guest RAM bytes copied.
    pub guest_bytes: u64,
    /// Device stream bytes moved to the destination.
    pub device_bytes: u64,
    /// Device stream chunks moved.
    pub device_chunks: u64,
    /// `pending` (sum) on the source after the iteration.
    pub device_pending: u64,
    pub duration: Duration,
}

/// Why pre-copy ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Convergence {
    /// An iteration's dirty set was at most `converge_pages`.
    Threshold {
        dirty_pages: u64,
        converge_pages: u64,
    },
    /// `max_iterations` were made.
    Limit { max_iterations: u32 },
}

/// What was compared, all equal (a difference fails [`migrate`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Verification {
    pub guest_ram_bytes: u64,
    pub bar2_bytes: u64,
    pub registers: u64,
    pub config_bytes: u64,
}

/// The destination's background writer after it started running.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriterCheck {
    /// `BG_WRITES` right after RUNNING, and `settle` later.
    pub before: u32,
    pub after: u32,
    pub settle: Duration,
}

/// What [`migrate`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveReport {
    pub ram_bytes: u64,
    pub iova: u64,
    /// The pre-copy iterations, 0 first.
    pub iterations: Vec<Iteration>,
    /// The stop-and-copy.
    pub stop: Iteration,
    pub convergence: Convergence,
    /// From just before the source's STOPNCOPY write to just after the
    /// destination's RUNNING write returned.
    pub downtime: Duration,
    /// The part of the downtime spent verifying (a production VMM does not
    /// verify).
    pub verify_time: Duration,
    /// From the stop request to the vCPUs (CPU workload) to the
    /// destination's RUNNING.
    pub vcpu_pause: Duration,
    /// From the destination's RESUME to its RUNNING.
    pub total_time: Duration,
    /// What the CPU workload did, if there was one.
    pub cpu: Option<CpuStats>,
    pub verification: Verification,
    /// `None` when the writer was not enabled or `settle` was 0.
    pub writer: Option<WriterCheck>,
}

impl LiveReport {
    /// Pre-copy iterations made (iteration 0 included).
    pub fn precopy_iterations(&self) -> u32 {
        self.iterations.len() as u32
    }

    /// Pages copied while the device was stopped.
    pub fn final_dirty_pages(&self) -> u64 {
        self.stop.dirty_pages
    }

    fn all(&self) -> impl Iterator<Item = &Iteration> {
        self.iterations.iter().chain(std::iter::once(&self.stop))
    }

    /// Guest RAM bytes copied in all.
    pub fn total_guest_bytes(&self) -> u64 {
        self.all().map(|i| i.guest_bytes).sum()
    }

    /// Device stream bytes in all.
    pub fn total_device_bytes(&self) -> u64 {
        self.all().map(|i| i.device_bytes).sum()
    }

    /// The downtime a VMM that does not verify would have had.
    pub fn downtime_without_verification(&self) -> Duration {
        self.downtime.saturating_sub(self.verify_time)
    }

    /// Dirty pages copied after the full copy (re-sent pages).
    pub fn resent_pages(&self) -> u64 {
        self.all()
            .filter(|i| !i.full_copy)
            .map(|i| i.dirty_pages)
            .sum()
    }
}

/// `1536` -> `1.5 KiB`.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut v = n as f64 / 1024.0;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    format!("{v:.1} {}", UNITS[unit])
}

/// A duration in milliseconds with one decimal.
pub fn human_ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

impl fmt::Display for LiveReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "guest RAM {} ({} pages at IOVA {:#x})",
            human_bytes(self.ram_bytes),
            self.ram_bytes / GUEST_PAGE_SIZE,
            self.iova
        )?;
        writeln!(f, "{IterationHeader}")?;
        for i in self.all() {
            writeln!(f, "{}", IterationRow(i))?;
        }
        let why = match self.convergence {
            Convergence::Threshold {
                dirty_pages,
                converge_pages,
            } => format!("converged: dirty set {dirty_pages} <= {converge_pages} pages"),
            Convergence::Limit { max_iterations } => {
                format!("did not converge: stopped at the limit of {max_iterations} iterations")
            }
        };
        writeln!(
            f,
            "pre-copy: {} iteration{}, {why}",
            self.precopy_iterations(),
            if self.precopy_iterations() == 1 {
                ""
            } else {
                "s"
            }
        )?;
        writeln!(
            f,
            "totals: guest RAM {} copied ({} pages re-sent), device stream {}, {} from RESUME \
             to RUNNING",
            human_bytes(self.total_guest_bytes()),
            self.resent_pages(),
            human_bytes(self.total_device_bytes()),
            human_ms(self.total_time)
        )?;
        writeln!(
            f,
            "final dirty set: {} pages; downtime {} = {} stop-and-copy and resume + {} \
             verification; vCPUs paused {}",
            self.final_dirty_pages(),
            human_ms(self.downtime),
            human_ms(self.downtime_without_verification()),
            human_ms(self.verify_time),
            human_ms(self.vcpu_pause)
        )?;
        if let Some(c) = &self.cpu {
            writeln!(
                f,
                "CPU workload: {} guest pages and {} BAR2 writes in {}",
                c.ram_pages,
                c.bar2_writes,
                human_ms(c.ran)
            )?;
        }
        let v = &self.verification;
        writeln!(
            f,
            "verification: passed, bit-exact: guest RAM {}, BAR2 {}, {} BAR0 registers, {} \
             bytes of config space",
            human_bytes(v.guest_ram_bytes),
            human_bytes(v.bar2_bytes),
            v.registers,
            v.config_bytes
        )?;
        if let Some(w) = &self.writer {
            writeln!(
                f,
                "destination runs: BG_WRITES {} -> {} after {}",
                w.before,
                w.after,
                human_ms(w.settle)
            )?;
        }
        Ok(())
    }
}

/// The header of the report's table (and of progress lines).
pub struct IterationHeader;

impl fmt::Display for IterationHeader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:>4}  {:<9} {:>9} {:>9} {:>9} {:>7} {:>11} {:>11} {:>11} {:>10}",
            "iter",
            "phase",
            "dev-dirty",
            "cpu-dirty",
            "dirty-set",
            "queries",
            "guest-copy",
            "device",
            "dev-pending",
            "time"
        )
    }
}

/// One row of the report's table (also the progress line).
pub struct IterationRow<'a>(pub &'a Iteration);

impl fmt::Display for IterationRow<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let i = self.0;
        let (index, phase) = match i.phase {
            Phase::PreCopy => (i.index.to_string(), "pre-copy"),
            Phase::StopAndCopy => ("stop".to_string(), "stop-copy"),
        };
        let (dev, cpu) = if i.full_copy {
            ("all".to_string(), "all".to_string())
        } else {
            (i.device_dirty.to_string(), i.cpu_dirty.to_string())
        };
        write!(
            f,
            "{index:>4}  {phase:<9} {dev:>9} {cpu:>9} {:>9} {:>7} {:>11} {:>11} {:>11} {:>10}",
            i.dirty_pages,
            i.queries,
            human_bytes(i.guest_bytes),
            human_bytes(i.device_bytes),
            human_bytes(i.device_pending),
            human_ms(i.duration)
        )
    }
}

/// Copies the pages of `set` from the source's RAM to the destination's,
/// run by run; returns the bytes copied.
fn copy_pages(src: &GuestMemory, dst: &GuestMemory, set: &PageSet) -> Result<u64> {
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

/// Moves stream chunks from the source to the destination until get
/// buffer returns 0 or, with `limit`, once that many bytes moved (so that
/// a device written faster than we read cannot keep us here). Returns
/// `(bytes, chunks)`.
fn forward_stream(
    src: &Device,
    dst: &Device,
    limit: Option<u64>,
    buf: &mut Vec<u8>,
) -> Result<(u64, u64)> {
    let at = dst.migration_region()?.data_offset;
    let (mut bytes, mut chunks) = (0u64, 0u64);
    while limit.is_none_or(|l| bytes < l) {
        let len = src.get_buffer(buf)?;
        if len == 0 {
            break;
        }
        dst.set_buffer(buf, at)?;
        bytes += len as u64;
        chunks += 1;
    }
    Ok((bytes, chunks))
}

/// The source's dirty pages: device bitmap over all guest RAM, and the CPU
/// log, into `set` (cleared first). Fills the counts of `it`.
fn collect_iteration(
    src: &Vm,
    log: Option<&DirtyLog>,
    window: u64,
    set: &mut PageSet,
    cpu_set: &mut PageSet,
    it: &mut Iteration,
) -> Result<()> {
    set.clear();
    let scan = collect_dirty(src.pages(), window, set, &mut |first, total| {
        let bm = src.dev.dirty_bitmap(src.page_iova(first)?, total)?;
        Ok((bm.copied, bm.words))
    })?;
    it.device_dirty = scan.dirty;
    it.queries = scan.queries;
    cpu_set.clear();
    if let Some(log) = log {
        it.cpu_dirty = log.take_into(cpu_set)?;
        set.union_with(cpu_set)?;
    }
    it.dirty_pages = set.count();
    Ok(())
}

/// What a page holds, from its first 16 bytes, for mismatch reports.
fn page_kind(ram: &GuestMemory, page: usize) -> String {
    let mut head = [0u8; 16];
    if ram.read_at(page * PAGE, &mut head).is_err() {
        return "unreadable".into();
    }
    let seq = u64::from_le_bytes(head[0..8].try_into().unwrap_or_default());
    let magic = u32::from_le_bytes(head[12..16].try_into().unwrap_or_default());
    match magic {
        BG_MAGIC => format!("background-writer stamp, BG_WRITES {seq}"),
        CPU_MAGIC => format!("CPU workload write #{seq}"),
        _ => format!("{}", Hex(&head)),
    }
}

struct Hex<'a>(&'a [u8]);

impl fmt::Display for Hex<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

fn describe_ram_diff(src: &Vm, dst: &Vm, d: &MemoryDiff) -> String {
    let page = d.first_offset / PAGE;
    let listed: Vec<String> = d.first_pages.iter().map(|p| p.to_string()).collect();
    format!(
        "guest RAM differs first at offset {:#x} (page {page}, IOVA {:#x}) in {} page(s) \
         (pages {}{}); that page on the source: {}; on the destination: {}",
        d.first_offset,
        src.iova + d.first_offset as u64,
        d.pages,
        listed.join(" "),
        if d.pages > d.first_pages.len() {
            " ..."
        } else {
            ""
        },
        page_kind(&src.ram, page),
        page_kind(&dst.ram, page)
    )
}

/// Live-migrates `src` (RUNNING, with its workload) to `dst`, see the
/// module documentation. `cpu` is the vCPU stand-in writing `src`'s RAM:
/// its dirty log joins the device bitmap and it is stopped before the
/// device.
///
/// On success the destination runs and the source is in
/// MIGRATION_SAVE_COMPLETED. On an error, the CPU workload is stopped, the
/// source is moved to MIGRATION_FAILED (it runs again as it was) and the
/// destination too (if it had not started running), and the first error
/// is returned as it came (its errno intact); a difference found by the
/// verification is such an error.
pub fn migrate(
    src: &Vm,
    mut cpu: Option<&mut CpuWorkload>,
    dst: &Vm,
    mut opts: LiveOptions<'_>,
) -> Result<LiveReport> {
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
    if let Some(c) = &cpu {
        if c.dirty_log().pages() != src.pages() {
            return Err(Error::Invalid(
                "the CPU workload runs on another guest RAM".into(),
            ));
        }
    }
    if opts.max_iterations == 0 {
        return Err(Error::Invalid(
            "max_iterations is 0: at least the full copy".into(),
        ));
    }
    let s = src.dev.device_state()?;
    if s != DeviceState::Running {
        return Err(Error::Invalid(format!(
            "the source {} is in {s}, not RUNNING",
            src.dev.uuid()
        )));
    }
    let d = dst.dev.device_state()?;
    if !matches!(
        d,
        DeviceState::None | DeviceState::Running | DeviceState::Failed | DeviceState::Cancelled
    ) {
        return Err(Error::Invalid(format!(
            "the destination {} is in {d}; it must be in NONE, RUNNING, MIGRATION_FAILED or \
             MIGRATION_CANCELLED",
            dst.dev.uuid()
        )));
    }
    let res = run(src, cpu.as_deref_mut(), dst, &mut opts);
    if res.is_err() {
        if let Some(c) = cpu {
            let _ = c.stop();
        }
        let src_state = src.dev.device_state();
        if src_state.is_ok_and(|s| {
            matches!(
                s,
                DeviceState::Setup
                    | DeviceState::PreCopy
                    | DeviceState::StopNCopy
                    | DeviceState::SaveCompleted
            )
        }) {
            let _ = src.dev.set_state(DeviceState::Failed);
        }
        if dst
            .dev
            .device_state()
            .is_ok_and(|s| matches!(s, DeviceState::Resume | DeviceState::ResumeCompleted))
        {
            let _ = dst.dev.set_state(DeviceState::Failed);
        }
    }
    res
}

fn run(
    src: &Vm,
    mut cpu: Option<&mut CpuWorkload>,
    dst: &Vm,
    opts: &mut LiveOptions<'_>,
) -> Result<LiveReport> {
    let pages = src.pages();
    let mut set = PageSet::new(pages)?;
    let mut cpu_set = PageSet::new(pages)?;
    let mut buf = Vec::new();
    let log = cpu.as_ref().map(|c| Arc::clone(c.dirty_log()));
    let mut iterations: Vec<Iteration> = Vec::new();
    let report_progress = |it: &Iteration, opts: &mut LiveOptions<'_>| {
        if let Some(p) = opts.progress.as_mut() {
            p(it);
        }
    };

    let t_start = Instant::now();
    dst.dev.set_state(DeviceState::Resume)?;
    src.dev.set_threshold(opts.threshold)?;
    // Dirty logging starts here: every write from now on is in a bitmap.
    src.dev.set_state(DeviceState::Setup)?;
    src.dev.set_state(DeviceState::PreCopy)?;

    let convergence = loop {
        let index = iterations.len() as u32;
        let t = Instant::now();
        let mut it = Iteration {
            index,
            phase: Phase::PreCopy,
            full_copy: index == 0,
            device_dirty: 0,
            cpu_dirty: 0,
            dirty_pages: 0,
            queries: 0,
            guest_bytes: 0,
            device_bytes: 0,
            device_chunks: 0,
            device_pending: 0,
            duration: Duration::ZERO,
        };
        if index == 0 {
            // The full copy covers what the log holds now; later writes
            // land in the log again.
            if let Some(log) = &log {
                log.take_into(&mut cpu_set)?;
            }
            it.dirty_pages = pages;
            set.clear();
            for p in 0..pages {
                set.insert(p);
            }
        } else {
            collect_iteration(
                src,
                log.as_deref(),
                opts.dirty_window,
                &mut set,
                &mut cpu_set,
                &mut it,
            )?;
        }
        it.guest_bytes = copy_pages(&src.ram, &dst.ram, &set)?;
        // What can be sent while running; what gets dirtied meanwhile
        // waits for the next iteration.
        let p = src.dev.pending()?;
        let (bytes, chunks) = forward_stream(
            &src.dev,
            &dst.dev,
            Some(p.precopy_only.saturating_add(p.compatible)),
            &mut buf,
        )?;
        it.device_bytes = bytes;
        it.device_chunks = chunks;
        it.device_pending = src.dev.pending()?.total();
        it.duration = t.elapsed();
        report_progress(&it, opts);
        iterations.push(it);
        if cpu.as_ref().is_some_and(|c| c.has_died()) {
            if let Some(c) = cpu.as_mut() {
                c.stop()?;
            }
            return Err(Error::Invalid("the CPU workload stopped by itself".into()));
        }
        if index > 0 && it.dirty_pages <= opts.converge_pages {
            break Convergence::Threshold {
                dirty_pages: it.dirty_pages,
                converge_pages: opts.converge_pages,
            };
        }
        if index + 1 >= opts.max_iterations {
            break Convergence::Limit {
                max_iterations: opts.max_iterations,
            };
        }
    };

    // Stop-and-copy: the vCPUs first, so that nothing writes guest RAM or
    // BAR2 behind the device's back, then the device.
    let t_pause = Instant::now();
    let cpu_stats = match cpu.as_mut() {
        Some(c) => Some(c.stop()?),
        None => None,
    };
    let t_down = Instant::now();
    src.dev.set_state(DeviceState::StopNCopy)?;
    let mut stop = Iteration {
        index: iterations.len() as u32,
        phase: Phase::StopAndCopy,
        full_copy: false,
        device_dirty: 0,
        cpu_dirty: 0,
        dirty_pages: 0,
        queries: 0,
        guest_bytes: 0,
        device_bytes: 0,
        device_chunks: 0,
        device_pending: 0,
        duration: Duration::ZERO,
    };
    collect_iteration(
        src,
        log.as_deref(),
        opts.dirty_window,
        &mut set,
        &mut cpu_set,
        &mut stop,
    )?;
    stop.guest_bytes = copy_pages(&src.ram, &dst.ram, &set)?;
    let (bytes, chunks) = forward_stream(&src.dev, &dst.dev, None, &mut buf)?;
    stop.device_bytes = bytes;
    stop.device_chunks = chunks;
    let p = src.dev.pending()?;
    if p.total() != 0 {
        return Err(Error::Invalid(format!(
            "MIGRATION_STOPNCOPY: get buffer returned 0 but {} bytes are pending ({p})",
            p.total()
        )));
    }
    stop.duration = t_down.elapsed();

    // The source is quiesced and the vCPUs stopped: its state is final.
    let t_verify = Instant::now();
    let src_snap = DeviceSnapshot::take(&src.dev)?;
    let verify_src = t_verify.elapsed();
    src.dev.set_state(DeviceState::SaveCompleted)?;
    // Validates the stream and makes it the destination's state.
    dst.dev.set_state(DeviceState::ResumeCompleted)?;

    let t_verify = Instant::now();
    let dst_snap = DeviceSnapshot::take(&dst.dev)?;
    let mut problems = src_snap.differences(&dst_snap);
    if let Some(d) = src.ram.compare(&dst.ram)? {
        problems.insert(0, describe_ram_diff(src, dst, &d));
    }
    if !problems.is_empty() {
        report_progress(&stop, opts);
        return Err(Error::Invalid(format!(
            "verification failed after {} pre-copy iteration(s) and a stop-and-copy of {} \
             pages: {}",
            iterations.len(),
            stop.dirty_pages,
            problems.join("; ")
        )));
    }
    let verify_time = verify_src + t_verify.elapsed();
    dst.dev.set_state(DeviceState::Running)?;
    let downtime = t_down.elapsed();
    let vcpu_pause = t_pause.elapsed();
    let total_time = t_start.elapsed();
    report_progress(&stop, opts);

    let writer_on = dst_snap
        .regs
        .get((bar0::BG_CTRL / 4) as usize)
        .is_some_and(|c| c & bar0::BG_ENABLE != 0);
    let writer = if writer_on && !opts.settle.is_zero() {
        let before = dst.regs().read(bar0::BG_WRITES)?;
        std::thread::sleep(opts.settle);
        let after = dst.regs().read(bar0::BG_WRITES)?;
        if after == before {
            return Err(Error::Invalid(format!(
                "the destination's background writer does not carry on: BG_WRITES stays at \
                 {before} for {} (BG_CTRL {:#x}, BG_ERROR {})",
                human_ms(opts.settle),
                dst.regs().read(bar0::BG_CTRL)?,
                dst.regs().read(bar0::BG_ERROR)?
            )));
        }
        Some(WriterCheck {
            before,
            after,
            settle: opts.settle,
        })
    } else {
        None
    };

    Ok(LiveReport {
        ram_bytes: src.ram.len() as u64,
        iova: src.iova,
        iterations,
        stop,
        convergence,
        downtime,
        verify_time,
        vcpu_pause,
        total_time,
        cpu: cpu_stats,
        verification: Verification {
            guest_ram_bytes: src.ram.len() as u64,
            bar2_bytes: src_snap.memory.len() as u64,
            registers: src_snap.regs.len() as u64,
            config_bytes: src_snap.config.len() as u64,
        },
        writer,
    })
}

/// Device-side workload and state the source gets before a migration, so
/// that there is something to carry over: the background writer (device
/// writes to guest RAM), a ring pinned for writing (always reported
/// dirty), a DMA command queued behind `DMA_CTRL.PAUSE` (it travels in the
/// stream and runs on the destination), and programmed registers, config
/// space and device memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceWorkload {
    /// Background writer range: guest pages `0..writer_pages` (0: off).
    pub writer_pages: u32,
    /// Background writer rate, pages per second.
    pub writer_rate: u32,
    /// Ring size in pages, pinned writable at the end of guest RAM (0:
    /// none).
    pub ring_pages: u32,
    /// Pages of the queued FILL command, in the middle of guest RAM (0:
    /// none).
    pub fill_pages: u32,
}

impl Default for DeviceWorkload {
    fn default() -> Self {
        DeviceWorkload {
            writer_pages: 256,
            writer_rate: 2000,
            ring_pages: 16,
            fill_pages: 4,
        }
    }
}

impl fmt::Display for DeviceWorkload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        if self.writer_pages > 0 {
            parts.push(format!(
                "background writer over {} pages at {}/s",
                self.writer_pages, self.writer_rate
            ));
        }
        if self.ring_pages > 0 {
            parts.push(format!("ring of {} pages pinned writable", self.ring_pages));
        }
        if self.fill_pages > 0 {
            parts.push(format!(
                "FILL of {} pages queued behind PAUSE",
                self.fill_pages
            ));
        }
        if parts.is_empty() {
            f.write_str("none")
        } else {
            f.write_str(&parts.join(", "))
        }
    }
}

impl fmt::Display for CpuOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.rate, self.bar2_rate) {
            (0, 0) => f.write_str("none"),
            (r, 0) => write!(f, "{r} guest pages/s ({})", self.pattern),
            (0, b) => write!(f, "{b} BAR2 writes/s of {} bytes", self.bar2_len),
            (r, b) => write!(
                f,
                "{r} guest pages/s ({}), {b} BAR2 writes/s of {} bytes",
                self.pattern, self.bar2_len
            ),
        }
    }
}

/// `DMA_PATTERN` of the queued FILL command.
pub const FILL_PATTERN: u32 = 0xf111_ed00;

impl DeviceWorkload {
    /// Where the ring starts (page of guest RAM).
    pub fn ring_first_page(&self, pages: u64) -> u64 {
        pages.saturating_sub(u64::from(self.ring_pages))
    }

    /// Where the queued FILL writes (page of guest RAM).
    pub fn fill_first_page(&self, pages: u64) -> u64 {
        pages / 2
    }

    fn check_fits(&self, pages: u64) -> Result<()> {
        let writer_end = u64::from(self.writer_pages);
        let fill = self.fill_first_page(pages);
        let fill_end = fill + u64::from(self.fill_pages);
        let ring = self.ring_first_page(pages);
        let fits = writer_end <= pages
            && (self.fill_pages == 0 || (writer_end <= fill && fill_end <= ring))
            && u64::from(self.ring_pages) <= pages
            && self.ring_pages <= RING_MAX_PAGES;
        if !fits {
            return Err(Error::Invalid(format!(
                "guest RAM of {pages} pages is too small for a writer over {} pages, a queued \
                 fill of {} pages in the middle and a ring of {} pages (at most {}) at the end",
                self.writer_pages, self.fill_pages, self.ring_pages, RING_MAX_PAGES
            )));
        }
        Ok(())
    }

    /// Brings the source from NONE (or RUNNING) to RUNNING with all of the
    /// above set up and the writer started.
    pub fn prepare_source(&self, vm: &Vm) -> Result<()> {
        let pages = vm.pages();
        self.check_fits(pages)?;
        let dev = &vm.dev;
        if dev.device_state()? == DeviceState::None {
            dev.set_state(DeviceState::Running)?;
        }
        // Config space as a guest driver leaves it: memory decoding and bus
        // mastering on, BARs assigned (BAR2 above 4 GiB), an IRQ line.
        dev.write16(region::CONFIG, 0x04, 0x0006)?;
        dev.write32(region::CONFIG, 0x10, 0xfebf_0000)?;
        dev.write32(region::CONFIG, 0x18, 0x0000_0000)?;
        dev.write32(region::CONFIG, 0x1c, 0x0000_0002)?;
        dev.write8(region::CONFIG, 0x3c, 11)?;
        // Device memory with a pattern that differs in every page.
        let size = usize::try_from(dev.region_info(region::BAR2)?.size)
            .map_err(|_| Error::Invalid("BAR2 is too large".into()))?;
        let mut chunk = vec![0u8; 1 << 16];
        for (n, at) in (0..size).step_by(chunk.len()).enumerate() {
            let len = chunk.len().min(size - at);
            for (i, b) in chunk[..len].iter_mut().enumerate() {
                *b = ((at + i) / PAGE) as u8 ^ (i as u8).wrapping_mul(7) ^ n as u8;
            }
            dev.write_region(region::BAR2, at as u64, &chunk[..len])?;
        }
        let regs = vm.regs();
        regs.write(bar0::SCRATCH, 0x600d_cafe)?;
        regs.write(bar0::IRQ_ENABLE, bar0::IRQ_DOORBELL | bar0::IRQ_DMA_DONE)?;
        for _ in 0..3 {
            regs.write(bar0::DOORBELL, 1)?;
        }
        if self.ring_pages > 0 {
            let iova = vm.page_iova(self.ring_first_page(pages))?;
            let err = regs.pin_ring(iova, self.ring_pages, true)?;
            if err != 0 {
                return Err(Error::Invalid(format!(
                    "pinning a ring of {} pages at IOVA {iova:#x} failed: RING_ERROR {}",
                    self.ring_pages,
                    crate::errno_string(err as i32)
                )));
            }
        }
        if self.fill_pages > 0 {
            regs.write(bar0::DMA_CTRL, bar0::DMA_CTRL_PAUSE)?;
            let iova = vm.page_iova(self.fill_first_page(pages))?;
            let len = self.fill_pages * PAGE as u32;
            regs.queue_dma(sample::DmaCmd::Fill, iova, 0, len, FILL_PATTERN)?;
            let status = regs.read(bar0::DMA_STATUS)?;
            if status != bar0::DMA_STATUS_QUEUED {
                return Err(Error::Invalid(format!(
                    "a FILL queued behind PAUSE has DMA_STATUS {status}, not QUEUED (DMA_ERROR \
                     {})",
                    regs.read(bar0::DMA_ERROR)?
                )));
            }
        }
        if self.writer_pages > 0 {
            let err = regs.start_writer(vm.iova, self.writer_pages, self.writer_rate)?;
            if err != 0 {
                return Err(Error::Invalid(format!(
                    "starting the background writer over {} pages at {}/s failed: BG_ERROR {}",
                    self.writer_pages,
                    self.writer_rate,
                    crate::errno_string(err as i32)
                )));
            }
        }
        Ok(())
    }

    /// On the running destination: the ring is pinned there, and the queued
    /// FILL, once `PAUSE` is cleared, runs and fills the destination's
    /// guest RAM. Returns what was checked, in words.
    pub fn check_destination(&self, vm: &Vm) -> Result<String> {
        let regs = vm.regs();
        let mut checked = Vec::new();
        let pinned = regs.read(bar0::PINNED_PAGES)?;
        if pinned != self.ring_pages {
            return Err(Error::Invalid(format!(
                "the destination holds {pinned} pages pinned, not the ring's {} (RING_CTRL {:#x}, \
                 RING_ERROR {})",
                self.ring_pages,
                regs.read(bar0::RING_CTRL)?,
                regs.read(bar0::RING_ERROR)?
            )));
        }
        if self.ring_pages > 0 {
            checked.push(format!("ring of {} pages pinned", self.ring_pages));
        }
        if self.fill_pages > 0 {
            regs.write(bar0::DMA_CTRL, 0)?;
            match regs.wait_dma(Duration::from_secs(30))? {
                sample::DmaOutcome::Done => {}
                sample::DmaOutcome::Failed(e) => {
                    return Err(Error::Invalid(format!(
                        "the queued FILL failed on the destination: DMA_ERROR {}",
                        crate::errno_string(e as i32)
                    )))
                }
            }
            let first = self.fill_first_page(vm.pages());
            let mut got = vec![0u8; self.fill_pages as usize * PAGE];
            vm.ram.read_at(first as usize * PAGE, &mut got)?;
            let want = FILL_PATTERN.to_le_bytes();
            if let Some(i) = got.iter().enumerate().position(|(i, b)| *b != want[i % 4]) {
                return Err(Error::Invalid(format!(
                    "the queued FILL ran on the destination but guest RAM at page {first} + \
                     {i:#x} holds {:#04x}, not {:#04x}",
                    got[i],
                    want[i % 4]
                )));
            }
            checked.push(format!(
                "queued FILL of {} pages ran there after PAUSE was cleared",
                self.fill_pages
            ));
        }
        Ok(checked.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set_of(pages: u64, members: &[u64]) -> PageSet {
        let mut s = PageSet::new(pages).unwrap();
        for &p in members {
            assert!(s.insert(p));
        }
        s
    }

    fn members(s: &PageSet) -> Vec<u64> {
        (0..s.pages()).filter(|&p| s.contains(p)).collect()
    }

    #[test]
    fn page_set_basics_and_runs() {
        let mut s = set_of(130, &[0, 1, 2, 63, 64, 65, 100, 129]);
        assert!(!s.insert(130));
        assert!(!s.contains(130));
        assert_eq!(s.count(), 8);
        let runs: Vec<_> = s.runs().collect();
        assert_eq!(runs, [(0, 3), (63, 3), (100, 1), (129, 1)]);
        s.clear();
        assert_eq!(s.count(), 0);
        assert_eq!(s.runs().count(), 0);
        // A full set is one run that stops at the last page, not the word.
        let mut full = PageSet::new(70).unwrap();
        (0..70).for_each(|p| {
            full.insert(p);
        });
        assert_eq!(full.runs().collect::<Vec<_>>(), [(0, 70)]);
        let word = set_of(128, &(0..128).collect::<Vec<_>>());
        assert_eq!(word.runs().collect::<Vec<_>>(), [(0, 128)]);
    }

    #[test]
    fn union_counts_overlap_once() {
        let mut a = set_of(200, &[1, 5, 150]);
        let b = set_of(200, &[5, 6, 199]);
        a.union_with(&b).unwrap();
        assert_eq!(members(&a), [1, 5, 6, 150, 199]);
        assert_eq!(a.count(), 5);
        assert!(a.union_with(&PageSet::new(100).unwrap()).is_err());
    }

    #[test]
    fn or_bits_at_any_offset() {
        // Bits 0, 1, 63 of word 0 and bit 0 of word 1 (page 64 of the window).
        let bits = [1 | 2 | (1 << 63), 1];
        for first in [0u64, 1, 5, 63, 64, 100] {
            let mut s = PageSet::new(300).unwrap();
            s.or_bits_at(first, &bits, 65).unwrap();
            assert_eq!(
                members(&s),
                [first, first + 1, first + 63, first + 64],
                "at {first}"
            );
        }
        // Only nbits count: bit 64 lies past a window of 64 pages.
        let mut s = PageSet::new(300).unwrap();
        s.or_bits_at(10, &bits, 64).unwrap();
        assert_eq!(members(&s), [10, 11, 73]);
        // Out of the set, or fewer words than bits.
        assert!(s.or_bits_at(250, &bits, 65).is_err());
        assert!(s.or_bits_at(0, &bits[..1], 65).is_err());
        assert!(s.or_bits_at(u64::MAX, &bits, 2).is_err());
    }

    /// A fake device: dirty pages `dirty`, bitmap capacity `cap` pages.
    fn fake_query(
        dirty: Vec<u64>,
        cap: u64,
        asked: &mut Vec<(u64, u64)>,
    ) -> impl FnMut(u64, u64) -> Result<(u64, Vec<u64>)> + '_ {
        move |first, total| {
            asked.push((first, total));
            let copied = total.min(cap);
            let mut words = vec![0u64; copied.div_ceil(64) as usize];
            for &p in &dirty {
                if p >= first && p < first + copied {
                    let k = p - first;
                    words[(k / 64) as usize] |= 1 << (k % 64);
                }
            }
            Ok((copied, words))
        }
    }

    #[test]
    fn dirty_walk_loops_over_the_capacity() {
        let dirty = vec![0, 99, 100, 101, 640, 999];
        let mut asked = Vec::new();
        let mut set = PageSet::new(1000).unwrap();
        let scan = collect_dirty(
            1000,
            0,
            &mut set,
            &mut fake_query(dirty.clone(), 100, &mut asked),
        )
        .unwrap();
        assert_eq!(members(&set), dirty);
        assert_eq!(
            scan,
            DirtyScan {
                queries: 10,
                dirty: 6
            }
        );
        assert_eq!(asked[0], (0, 1000));
        assert_eq!(asked[1], (100, 900));
        assert_eq!(asked[9], (900, 100));

        // A window below the capacity, not a multiple of 64.
        let mut asked = Vec::new();
        let mut set = PageSet::new(1000).unwrap();
        let scan = collect_dirty(
            1000,
            333,
            &mut set,
            &mut fake_query(dirty.clone(), 512, &mut asked),
        )
        .unwrap();
        assert_eq!(members(&set), dirty);
        assert_eq!(asked, [(0, 333), (333, 333), (666, 333), (999, 1)]);
        assert_eq!(scan.queries, 4);
    }

    #[test]
    fn dirty_walk_refuses_bad_answers() {
        let mut set = PageSet::new(100).unwrap();
        // No progress would loop forever.
        let e = collect_dirty(100, 0, &mut set, &mut |_, _| Ok((0, vec![]))).unwrap_err();
        assert!(e.to_string().contains("copied = 0"), "{e}");
        let e = collect_dirty(100, 0, &mut set, &mut |_, t| Ok((t + 1, vec![0; 2]))).unwrap_err();
        assert!(e.to_string().contains("copied = 101"), "{e}");
        let e = collect_dirty(100, 0, &mut set, &mut |_, t| Ok((t, vec![0]))).unwrap_err();
        assert!(e.to_string().contains("1 bitmap words"), "{e}");
        // Bit 36 of the second word is page 100: past copied.
        let e = collect_dirty(100, 0, &mut set, &mut |_, t| Ok((t, vec![0, 1 << 36]))).unwrap_err();
        assert!(e.to_string().contains("past copied"), "{e}");
        let e = collect_dirty(100, 0, &mut set, &mut |_, _| {
            Err(Error::Invalid("x".into()))
        })
        .unwrap_err();
        assert_eq!(e.to_string(), "x");
    }

    #[test]
    fn cpu_log_swap_and_clear() {
        let log = DirtyLog::new(200).unwrap();
        assert!(log.mark(3));
        assert!(log.mark(3));
        assert!(log.mark(199));
        assert!(!log.mark(200));
        let mut set = set_of(200, &[5]);
        assert_eq!(log.take_into(&mut set).unwrap(), 2);
        assert_eq!(members(&set), [3, 5, 199]);
        // Taken means cleared.
        let mut again = PageSet::new(200).unwrap();
        assert_eq!(log.take_into(&mut again).unwrap(), 0);
        assert!(log.take_into(&mut PageSet::new(10).unwrap()).is_err());
    }

    #[test]
    fn cpu_log_concurrent_marks_are_never_lost() {
        let log = Arc::new(DirtyLog::new(4096).unwrap());
        let writer = {
            let log = Arc::clone(&log);
            std::thread::spawn(move || {
                for p in 0..4096 {
                    log.mark(p);
                }
            })
        };
        let mut set = PageSet::new(4096).unwrap();
        let mut taken = 0;
        while !writer.is_finished() {
            taken += log.take_into(&mut set).unwrap();
        }
        writer.join().unwrap();
        taken += log.take_into(&mut set).unwrap();
        assert_eq!(set.count(), 4096);
        assert_eq!(taken, 4096, "each mark taken exactly once");
    }

    #[test]
    fn page_patterns() {
        let mut s = PagePicker::new(PagePattern::Strided(3), 10, 1).unwrap();
        let v: Vec<u64> = (0..11).map(|_| s.next_page()).collect();
        assert_eq!(v, [0, 3, 6, 9, 2, 5, 8, 1, 4, 7, 0]);
        let mut big = PagePicker::new(PagePattern::Strided(u64::MAX), 7, 1).unwrap();
        assert!((0..20).all(|_| big.next_page() < 7));
        let mut r = PagePicker::new(PagePattern::Random, 50, 0).unwrap();
        let v: Vec<u64> = (0..1000).map(|_| r.next_page()).collect();
        assert!(v.iter().all(|&p| p < 50));
        let distinct: std::collections::HashSet<_> = v.iter().collect();
        assert!(distinct.len() > 40, "random spreads: {}", distinct.len());
        assert!(PagePicker::new(PagePattern::Random, 0, 1).is_err());
        assert!(PagePicker::new(PagePattern::Strided(0), 5, 1).is_err());
        assert_eq!(
            "strided:16".parse::<PagePattern>().unwrap(),
            PagePattern::Strided(16)
        );
        assert_eq!(
            "random".parse::<PagePattern>().unwrap(),
            PagePattern::Random
        );
        assert!("strided:0".parse::<PagePattern>().is_err());
        assert!("linear".parse::<PagePattern>().is_err());
    }

    #[test]
    fn rates_and_page_contents() {
        assert_eq!(due(500, Duration::from_millis(10)), 5);
        assert_eq!(due(2000, Duration::from_secs(3)), 6000);
        assert_eq!(due(0, Duration::from_secs(3)), 0);
        assert_eq!(
            due(u32::MAX, Duration::from_secs(1 << 20)),
            u64::from(u32::MAX) << 20
        );
        let mut a = vec![0u8; PAGE];
        let mut b = vec![0u8; PAGE];
        fill_cpu_page(&mut a, 1, 7);
        fill_cpu_page(&mut b, 2, 7);
        assert_eq!(&a[8..16], &[7, 0, 0, 0, 0x43, 0x50, 0x55, 0x57]);
        let same = a.iter().zip(&b).filter(|(x, y)| x == y).count();
        assert!(
            same < 64,
            "two writes of a page differ almost everywhere: {same}"
        );
    }

    #[test]
    fn copies_only_the_set() {
        let src = GuestMemory::new("s", 8 * PAGE).unwrap();
        let dst = GuestMemory::new("d", 8 * PAGE).unwrap();
        for p in 0..8 {
            src.write_at(p * PAGE + 100, &[p as u8 + 1]).unwrap();
        }
        let set = set_of(8, &[1, 2, 6]);
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

    fn iteration(index: u32, phase: Phase, dirty: u64, guest: u64, device: u64) -> Iteration {
        Iteration {
            index,
            phase,
            full_copy: index == 0 && phase == Phase::PreCopy,
            device_dirty: dirty / 2,
            cpu_dirty: dirty - dirty / 2,
            dirty_pages: dirty,
            queries: 1,
            guest_bytes: guest,
            device_bytes: device,
            device_chunks: 1,
            device_pending: 0,
            duration: Duration::from_micros(1500),
        }
    }

    #[test]
    fn report_totals_and_table() {
        let r = LiveReport {
            ram_bytes: 64 << 20,
            iova: 1 << 32,
            iterations: vec![
                iteration(0, Phase::PreCopy, 16384, 64 << 20, 2 << 20),
                iteration(1, Phase::PreCopy, 300, 300 * 4096, 5000),
            ],
            stop: iteration(2, Phase::StopAndCopy, 40, 40 * 4096, 900),
            convergence: Convergence::Threshold {
                dirty_pages: 300,
                converge_pages: 512,
            },
            downtime: Duration::from_millis(12),
            verify_time: Duration::from_millis(8),
            vcpu_pause: Duration::from_millis(13),
            total_time: Duration::from_secs(1),
            cpu: None,
            verification: Verification {
                guest_ram_bytes: 64 << 20,
                bar2_bytes: 2 << 20,
                registers: 44,
                config_bytes: 256,
            },
            writer: Some(WriterCheck {
                before: 10,
                after: 400,
                settle: Duration::from_millis(200),
            }),
        };
        assert_eq!(r.precopy_iterations(), 2);
        assert_eq!(r.final_dirty_pages(), 40);
        assert_eq!(r.total_guest_bytes(), (64 << 20) + 340 * 4096);
        assert_eq!(r.total_device_bytes(), (2 << 20) + 5900);
        assert_eq!(r.resent_pages(), 340);
        let text = r.to_string();
        assert!(text.contains("pre-copy: 2 iterations, converged: dirty set 300 <= 512 pages"));
        assert_eq!(r.downtime_without_verification(), Duration::from_millis(4));
        assert!(text.contains(
            "final dirty set: 40 pages; downtime 12.0 ms = 4.0 ms stop-and-copy and resume + \
             8.0 ms verification; vCPUs paused 13.0 ms"
        ));
        assert!(text.contains("BG_WRITES 10 -> 400 after 200.0 ms"));
        let rows: Vec<&str> = text
            .lines()
            .filter(|l| {
                l.get(6..)
                    .is_some_and(|r| r.starts_with("pre-copy ") || r.starts_with("stop-copy "))
            })
            .collect();
        assert_eq!(rows.len(), 3, "{text}");
        assert!(rows[0].starts_with("   0  pre-copy        all       all     16384"));
        assert!(rows[2].starts_with("stop  stop-copy        20        20        40"));
        let limit = LiveReport {
            convergence: Convergence::Limit { max_iterations: 2 },
            ..r
        };
        assert!(limit
            .to_string()
            .contains("did not converge: stopped at the limit of 2 iterations"));
    }

    #[test]
    fn human_units() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(1023), "1023 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(64 << 20), "64.0 MiB");
        assert_eq!(human_bytes(u64::MAX), "16777216.0 TiB");
        assert_eq!(human_ms(Duration::from_micros(12_345)), "12.3 ms");
    }

    #[test]
    fn workload_descriptions() {
        assert_eq!(
            DeviceWorkload::default().to_string(),
            "background writer over 256 pages at 2000/s, ring of 16 pages pinned writable, \
             FILL of 4 pages queued behind PAUSE"
        );
        let ring_only = DeviceWorkload {
            writer_pages: 0,
            fill_pages: 0,
            ..DeviceWorkload::default()
        };
        assert_eq!(ring_only.to_string(), "ring of 16 pages pinned writable");
        let none = DeviceWorkload {
            ring_pages: 0,
            ..ring_only
        };
        assert_eq!(none.to_string(), "none");
        let cpu = CpuOptions::default();
        assert_eq!(
            cpu.to_string(),
            "500 guest pages/s (random), 100 BAR2 writes/s of 256 bytes"
        );
        let ram_only = CpuOptions {
            bar2_rate: 0,
            pattern: PagePattern::Strided(3),
            ..cpu
        };
        assert_eq!(ram_only.to_string(), "500 guest pages/s (strided:3)");
        assert_eq!(
            CpuOptions {
                rate: 0,
                ..ram_only
            }
            .to_string(),
            "none"
        );
    }

    #[test]
    fn workload_layout_must_fit() {
        let w = DeviceWorkload::default();
        assert!(w.check_fits(16384).is_ok());
        assert_eq!(w.ring_first_page(16384), 16384 - 16);
        assert_eq!(w.fill_first_page(16384), 8192);
        assert!(w.check_fits(300).is_err(), "the writer runs into the fill");
        let big_ring = DeviceWorkload {
            ring_pages: RING_MAX_PAGES + 1,
            ..w
        };
        assert!(big_ring.check_fits(1 << 20).is_err());
        let none = DeviceWorkload {
            writer_pages: 0,
            writer_rate: 0,
            ring_pages: 0,
            fill_pages: 0,
        };
        assert!(none.check_fits(1).is_ok());
    }
}
