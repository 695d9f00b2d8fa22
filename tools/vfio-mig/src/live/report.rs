// SPDX-License-Identifier: GPL-2.0
//! What a live migration did ([`LiveReport`], one [`Iteration`] a
//! pre-copy pass and one for the stop-and-copy) and its table.

use std::fmt;
use std::time::Duration;

use serde::Serialize;

use super::vcpu::CpuStats;
use crate::abi::GUEST_PAGE_SIZE;
use crate::units::{as_ms, human_bytes, human_ms};

/// Pre-copy or the final stop-and-copy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Phase {
    PreCopy,
    StopAndCopy,
}

/// One iteration of [`super::migrate`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
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
    #[serde(rename = "duration_ms", serialize_with = "as_ms")]
    pub duration: Duration,
}

/// Why pre-copy ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(tag = "ended", rename_all = "snake_case")]
pub enum Convergence {
    /// An iteration's dirty set was at most `converge_pages`.
    Threshold {
        dirty_pages: u64,
        converge_pages: u64,
    },
    /// `max_iterations` were made.
    Limit { max_iterations: u32 },
}

/// What was compared, all equal (a difference fails [`super::migrate`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Verification {
    pub guest_ram_bytes: u64,
    pub bar2_bytes: u64,
    pub registers: u64,
    pub config_bytes: u64,
}

/// The destination's background writer after it started running.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct WriterCheck {
    /// `BG_WRITES` right after RUNNING, and `settle` later.
    pub before: u32,
    pub after: u32,
    #[serde(rename = "settle_ms", serialize_with = "as_ms")]
    pub settle: Duration,
}

/// What [`super::migrate`] did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
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
    #[serde(rename = "downtime_ms", serialize_with = "as_ms")]
    pub downtime: Duration,
    /// The part of the downtime spent verifying (a production VMM does not
    /// verify).
    #[serde(rename = "verify_time_ms", serialize_with = "as_ms")]
    pub verify_time: Duration,
    /// From the stop request to the vCPUs (CPU workload) to the
    /// destination's RUNNING.
    #[serde(rename = "vcpu_pause_ms", serialize_with = "as_ms")]
    pub vcpu_pause: Duration,
    /// From the destination's RESUME to its RUNNING.
    #[serde(rename = "total_time_ms", serialize_with = "as_ms")]
    pub total_time: Duration,
    /// What the CPU workload did, if there was one.
    pub cpu: Option<CpuStats>,
    pub verification: Verification,
    /// `None` when the writer was not enabled or `settle` was 0.
    pub writer: Option<WriterCheck>,
}

impl Iteration {
    /// Iteration `index` of `phase`, nothing counted yet.
    pub(super) fn new(index: u32, phase: Phase) -> Self {
        Iteration {
            index,
            phase,
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
        }
    }
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
        let why = self.convergence;
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

impl fmt::Display for Convergence {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Convergence::Threshold {
                dirty_pages,
                converge_pages,
            } => write!(
                f,
                "converged: dirty set {dirty_pages} <= {converge_pages} pages"
            ),
            Convergence::Limit { max_iterations } => write!(
                f,
                "did not converge: stopped at the limit of {max_iterations} iterations"
            ),
        }
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
