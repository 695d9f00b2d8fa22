// SPDX-License-Identifier: GPL-2.0
//! `vfio-mig-bench`: benchmarks of vfio_mig_sample.ko, run in the test guest
//! (`make bench`, or `qemu-tests/guest-bench.sh` in a guest where `mdev`,
//! `mtty` and the module are loaded).
//!
//! Four benchmarks, each printing a table of absolute numbers and ratios
//! measured in the same boot (Documentation/testing.rst, "Benchmarks"):
//!
//! 1. `dirty`: dirty-query cost against the number of dirty pages and the
//!    size of the range (up to 4 GiB of IOVA);
//! 2. `save`: save and restore throughput through the migration region
//!    against a memcpy of the same bytes;
//! 3. `bar`: a BAR0 register read against the same read on the C sample
//!    mtty;
//! 4. `downtime`: stop-and-copy downtime against the final dirty set.
//!
//! The timings are reported, never judged: the exit code is non-zero only
//! when something fails (an error, or the device reporting something wrong,
//! such as a dirty log that differs from what the DMA wrote).

mod bar;
mod dirty;
mod dma;
mod downtime;
mod save;
mod stats;

use std::process::ExitCode;
use std::time::{Duration, Instant};

use vfio_mig::{Device, Mdev, OpenPath, Parent};

use stats::Table;

/// A benchmark's own failure, in words.
pub type BResult<T> = Result<T, String>;

/// What a benchmark produced: its tables, and what went wrong while the
/// numbers could still be printed (a wrong dirty log, a differing restore).
pub struct Report {
    pub tables: Vec<Table>,
    pub errors: Vec<String>,
}

/// The command line.
pub struct Opts {
    /// Benchmarks to run, in order.
    pub only: Vec<String>,
    /// Repetitions per case, instead of each benchmark's default.
    pub reps: Option<usize>,
    /// Fewer repetitions and iterations (a smoke run).
    pub quick: bool,
    /// How devices are opened.
    pub path: OpenPath,
}

impl Opts {
    /// Repetitions for a benchmark whose default is `default`.
    pub fn reps(&self, default: usize) -> usize {
        self.reps
            .unwrap_or(if self.quick { 3.min(default) } else { default })
            .max(1)
    }

    /// A time budget for a benchmark that stops repeating once it is used
    /// up (after at least three repetitions).
    pub fn budget(&self, d: Duration) -> Duration {
        if self.reps.is_some() {
            Duration::MAX
        } else if self.quick {
            d / 4
        } else {
            d
        }
    }
}

/// A benchmark's entry point.
type Bench = fn(&Opts) -> BResult<Report>;

const BENCHES: [(&str, Bench); 4] = [
    ("dirty", dirty::run),
    ("save", save::run),
    ("bar", bar::run),
    ("downtime", downtime::run),
];

/// An open mdev that is removed when dropped. The fields drop in
/// declaration order: the device fd is closed before the removal, which
/// waits for it.
pub struct Opened {
    pub dev: Device,
    _mdev: Mdev,
}

impl std::ops::Deref for Opened {
    type Target = Device;

    fn deref(&self) -> &Device {
        &self.dev
    }
}

/// Creates an mdev of the module's type `ty` (`small` or `large`) and
/// opens it.
pub fn open_sample(ty: &str, opts: &Opts) -> BResult<Opened> {
    let parent = Parent::open(vfio_mig::sysfs::DEFAULT_PARENT)
        .map_err(|e| format!("vfio_mig_sample is not loaded: {e}"))?;
    let m = parent
        .mdev_type(ty)
        .create_guarded()
        .map_err(|e| format!("create a {ty} mdev: {e}"))?;
    let d = Device::open(m.uuid(), opts.path).map_err(|e| format!("open the {ty} mdev: {e}"))?;
    Ok(Opened { dev: d, _mdev: m })
}

const USAGE: &str = "usage: vfio-mig-bench [--only dirty,save,bar,downtime] [--reps N] [--quick] \
                     [--iommufd]";

fn parse_args(args: &[String]) -> Result<Opts, String> {
    let mut o = Opts {
        only: BENCHES.iter().map(|(n, _)| n.to_string()).collect(),
        reps: None,
        quick: false,
        path: OpenPath::Legacy,
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let (name, inline) = match a.split_once('=') {
            Some((n, v)) => (n, Some(v.to_string())),
            None => (a.as_str(), None),
        };
        let mut value = || {
            inline
                .clone()
                .or_else(|| it.next().cloned())
                .ok_or(format!("{name} needs a value"))
        };
        match name {
            "--only" => {
                let v = value()?;
                o.only = v.split(',').map(str::to_string).collect();
                for b in &o.only {
                    if !BENCHES.iter().any(|(n, _)| n == b) {
                        return Err(format!("unknown benchmark {b:?}"));
                    }
                }
            }
            "--reps" => {
                let v = value()?;
                o.reps = Some(
                    v.parse()
                        .ok()
                        .filter(|&n| n > 0)
                        .ok_or(format!("--reps {v}: not a positive number"))?,
                );
            }
            "--quick" => o.quick = true,
            "--iommufd" => o.path = OpenPath::Iommufd,
            "-h" | "--help" => return Err(USAGE.into()),
            _ => return Err(format!("unknown argument {a:?}\n{USAGE}")),
        }
    }
    Ok(o)
}

fn read_trim(path: &str) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_string())
}

/// Whether the kernel log says KASAN is on (`/dev/kmsg`, read without
/// blocking up to its end).
fn kasan_in_kmsg() -> Option<bool> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open("/dev/kmsg")
        .ok()?;
    let mut rec = vec![0u8; 8192];
    loop {
        match f.read(&mut rec) {
            Ok(0) => return Some(false),
            Ok(n) => {
                if String::from_utf8_lossy(&rec[..n]).contains("KernelAddressSanitizer initialized")
                {
                    return Some(true);
                }
            }
            // EPIPE: a record was overwritten meanwhile; go on.
            Err(e) if e.raw_os_error() == Some(libc::EPIPE) => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Some(false),
            Err(_) => return None,
        }
    }
}

fn environment(opts: &Opts) -> Table {
    let mut t = Table::new("environment", &["what", "value"]);
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|l| l.trim_start_matches([' ', '\t', ':']).to_string())
        .unwrap_or_else(|| "?".into());
    let hypervisor = cpuinfo
        .lines()
        .find(|l| l.starts_with("flags"))
        .is_some_and(|l| l.split_whitespace().any(|f| f == "hypervisor"));
    let yes_no = |b: bool| if b { "yes" } else { "no" }.to_string();
    for (what, v) in [
        (
            "kernel",
            read_trim("/proc/sys/kernel/osrelease").unwrap_or_else(|| "?".into()),
        ),
        (
            "cpu",
            format!(
                "{model}{}",
                if hypervisor {
                    " (hypervisor flag set)"
                } else {
                    ""
                }
            ),
        ),
        (
            "cpus",
            std::thread::available_parallelism().map_or("?".into(), |n| n.to_string()),
        ),
        (
            "KASAN",
            kasan_in_kmsg().map_or("unknown (no /dev/kmsg)".into(), |k| {
                if k {
                    "yes (kernel log)".into()
                } else {
                    "not in the kernel log".into()
                }
            }),
        ),
        (
            "lockdep",
            yes_no(std::path::Path::new("/proc/lockdep").exists()),
        ),
        (
            "kmemleak",
            yes_no(std::path::Path::new("/sys/kernel/debug/kmemleak").exists()),
        ),
        (
            "device path",
            match opts.path {
                OpenPath::Iommufd => "iommufd cdev".into(),
                _ => "legacy group/container".into(),
            },
        ),
        (
            "accelerator",
            std::env::var("VFIO_MIG_BENCH_ACCEL").unwrap_or_else(|_| "not given".into()),
        ),
    ] {
        t.row(vec![what.into(), v]);
    }
    t.note("timings are wall clock in this guest; no pass/fail is applied to them");
    t
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let opts = match parse_args(&args) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    println!("{}", environment(&opts).render());
    let mut failed = Vec::new();
    for name in &opts.only {
        let (_, run) = BENCHES.iter().find(|(n, _)| n == name).unwrap();
        let t0 = Instant::now();
        match run(&opts) {
            Ok(r) => {
                for t in &r.tables {
                    println!("{}", t.render());
                }
                for e in r.errors {
                    failed.push(format!("{name}: {e}"));
                }
            }
            Err(e) => {
                println!("== {name}: ERROR: {e}\n");
                failed.push(format!("{name}: {e}"));
            }
        }
        println!("# {name}: {:.1} s\n", t0.elapsed().as_secs_f64());
    }
    match vfio_mig::sample::pinned_pages_total() {
        Ok(0) => println!("# pinned guest pages after the benchmarks: 0"),
        Ok(n) => failed.push(format!(
            "{n} guest pages are still pinned after the benchmarks"
        )),
        Err(e) => println!("# pinned guest pages: unknown ({e})"),
    }
    if failed.is_empty() {
        println!("benchmarks done");
        ExitCode::SUCCESS
    } else {
        for f in &failed {
            println!("ERROR {f}");
        }
        println!("benchmarks done with {} errors", failed.len());
        ExitCode::FAILURE
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(str::to_string).collect()
    }

    #[test]
    fn parse() {
        let o = parse_args(&[]).unwrap();
        assert_eq!(o.only, ["dirty", "save", "bar", "downtime"]);
        assert_eq!(o.reps(7), 7);
        let o = parse_args(&args("--only bar,dirty --reps=2 --iommufd")).unwrap();
        assert_eq!(o.only, ["bar", "dirty"]);
        assert_eq!(o.reps(7), 2);
        assert_eq!(o.path, OpenPath::Iommufd);
        assert_eq!(o.budget(Duration::from_secs(1)), Duration::MAX);
        let o = parse_args(&args("--quick")).unwrap();
        assert_eq!(o.reps(7), 3);
        assert_eq!(o.budget(Duration::from_secs(4)), Duration::from_secs(1));
        assert!(parse_args(&args("--only nope")).is_err());
        assert!(parse_args(&args("--reps 0")).is_err());
        assert!(parse_args(&args("--reps")).is_err());
        assert!(parse_args(&args("--bogus")).is_err());
    }
}
