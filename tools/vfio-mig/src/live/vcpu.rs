// SPDX-License-Identifier: GPL-2.0
//! The guest's vCPUs, stood in for by a thread ([`CpuWorkload`]) that
//! writes guest RAM (marking its [`DirtyLog`]) and BAR2 at given rates.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::pages::DirtyLog;
use super::{Vm, PAGE};
use crate::abi::{region, GUEST_PAGE_SIZE};
use crate::error::{Error, Result};
use crate::units::as_ms;

/// Marker at bytes 12..16 of every page the CPU workload writes ("CPUW"),
/// where the background writer puts [`crate::abi::bar0::BG_MAGIC`].
pub const CPU_MAGIC: u32 = 0x5755_5043;

/// How the CPU workload picks guest pages (`random` or `strided:N`, also
/// in JSON).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PagePattern {
    /// Uniformly at random over guest RAM.
    Random,
    /// Page 0, then every `n`-th page, wrapping around.
    Strided(u64),
}

impl Serialize for PagePattern {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
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
#[derive(Debug, Clone, Copy, Serialize)]
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
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct CpuStats {
    /// Guest RAM pages written.
    pub ram_pages: u64,
    /// BAR2 writes.
    pub bar2_writes: u64,
    /// How long it ran.
    #[serde(rename = "ran_ms", serialize_with = "as_ms")]
    pub ran: Duration,
}

/// How many events a rate of `per_s` has due after `t`.
fn due(per_s: u32, t: Duration) -> u64 {
    (u128::from(per_s) * t.as_micros() / 1_000_000) as u64
}

/// The bytes the CPU workload writes to a guest page: 16 bytes of header
/// (write number, page index, [`CPU_MAGIC`]) and a pattern of the write
/// number, so that every write changes the whole page.
pub(super) fn fill_cpu_page(buf: &mut [u8], seq: u64, page: u64) {
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

#[cfg(test)]
mod tests {
    use super::*;

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
    fn cpu_workload_descriptions() {
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
}
