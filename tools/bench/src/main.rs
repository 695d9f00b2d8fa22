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
//! 4. `downtime`: stop-and-copy downtime against the final dirty set, the
//!    device's share apart from the RAM copy;
//! 5. `qemu`: the downtime stock QEMU reports for a VM owning this device
//!    and for one owning mtty (`vfio-mig-qemu`).
//!
//! After the tables comes one `bench: NAME VALUE` line per figure of
//! [`FIGURES`] (`n/a`, with the reason on a `# ` line before, for a figure
//! that could not be measured). The timings are reported, never judged:
//! the exit code is non-zero only when something fails (an error, or the
//! device reporting something wrong, such as a dirty log that differs from
//! what the DMA wrote).

mod bar;
mod dirty;
mod dma;
mod downtime;
mod qemu;
mod save;
mod stats;

use std::process::ExitCode;
use std::time::{Duration, Instant};

use vfio_mig::{Device, Mdev, OpenPath, Parent};

use stats::Table;

/// A benchmark's own failure, in words.
pub type BResult<T> = Result<T, String>;

/// One machine-readable figure: a value, or why it could not be measured.
#[derive(Debug, Clone, PartialEq)]
pub enum Figure {
    Value(f64),
    Na(String),
}

impl Figure {
    /// A value, or `n/a` with `why` when it is not a finite number (a
    /// median of nothing, a ratio against 0).
    pub fn or_na(v: f64, why: &str) -> Figure {
        if v.is_finite() {
            Figure::Value(v)
        } else {
            Figure::Na(why.into())
        }
    }
}

/// The figures `make bench` ends with, in order, and the benchmark that
/// measures each (`None`: given by the guest script, see [`boot_figure`]).
/// Ratios of times are "this / baseline" (lower is better), ratios named
/// after a copy are throughput against memcpy's (higher is better).
pub const FIGURES: [(&str, Option<&str>); 15] = [
    ("save_vs_memcpy", Some("save")),
    ("restore_vs_memcpy", Some("save")),
    ("mmap_save_vs_memcpy", Some("save")),
    ("v2_read_vs_memcpy", Some("save")),
    ("dirty_1000_clustered_vs_empty", Some("dirty")),
    ("dirty_1000_scattered_vs_empty", Some("dirty")),
    ("dirty_1000_random_vs_empty", Some("dirty")),
    ("dirty_empty_4g_vs_64m", Some("dirty")),
    ("bar0_read_vs_mtty", Some("bar")),
    ("device_downtime_ms_512", Some("downtime")),
    ("ram_copy_vs_memcpy", Some("downtime")),
    ("dirty_readout_4g_vs_query", Some("dirty")),
    ("boot_to_suite_s", None),
    ("qemu_downtime_ms_sample", Some("qemu")),
    ("qemu_downtime_ms_mtty", Some("qemu")),
];

/// What a benchmark produced: its tables, its figures of [`FIGURES`], and
/// what went wrong while the numbers could still be printed (a wrong dirty
/// log, a differing restore).
pub struct Report {
    pub tables: Vec<Table>,
    pub figures: Vec<(&'static str, Figure)>,
    pub errors: Vec<String>,
}

/// `boot_to_suite_s`: the guest script's seconds from the host's start of
/// the boot to the first test (qemu-tests/guest-lib.sh), passed in
/// `VFIO_MIG_BENCH_BOOT_S`.
fn boot_figure() -> Figure {
    match std::env::var("VFIO_MIG_BENCH_BOOT_S") {
        Ok(v) => match v.parse::<f64>() {
            Ok(s) => Figure::Value(s),
            Err(_) => Figure::Na(format!("VFIO_MIG_BENCH_BOOT_S is {v:?}, not a number")),
        },
        Err(_) => Figure::Na(
            "the boot's start is unknown (VFIO_MIG_BENCH_BOOT_S not set: not run by \
             qemu-tests/guest-bench.sh under vng-run.sh)"
                .into(),
        ),
    }
}

/// A value with at most three decimals, without trailing zeros.
fn value_text(v: f64) -> String {
    let s = format!("{v:.3}");
    s.trim_end_matches('0').trim_end_matches('.').into()
}

/// The `bench:` lines: every name of [`FIGURES`] once, in order, from
/// `got`; a figure missing from `got` is `n/a` with the reason `missing`
/// gives for its benchmark.
fn figure_lines(got: &[(&str, Figure)], missing: impl Fn(&str) -> String) -> Vec<String> {
    let mut out = Vec::new();
    for (name, bench) in FIGURES {
        let f = match got.iter().find(|(n, _)| *n == name) {
            Some((_, f)) => f.clone(),
            None => Figure::Na(bench.map_or_else(|| "not measured".into(), &missing)),
        };
        match f {
            Figure::Value(v) => out.push(format!("bench: {name} {}", value_text(v))),
            Figure::Na(why) => {
                out.push(format!("# {name}: {why}"));
                out.push(format!("bench: {name} n/a"));
            }
        }
    }
    out
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

const BENCHES: [(&str, Bench); 5] = [
    ("dirty", dirty::run),
    ("save", save::run),
    ("bar", bar::run),
    ("downtime", downtime::run),
    ("qemu", qemu::run),
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

const USAGE: &str =
    "usage: vfio-mig-bench [--only dirty,save,bar,downtime,qemu] [--reps N] [--quick] \
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
    let mut figures = vec![("boot_to_suite_s", boot_figure())];
    for name in &opts.only {
        let (_, run) = BENCHES.iter().find(|(n, _)| n == name).unwrap();
        let t0 = Instant::now();
        match run(&opts) {
            Ok(r) => {
                for t in &r.tables {
                    println!("{}", t.render());
                }
                figures.extend(r.figures);
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
    let lines = figure_lines(&figures, |bench| {
        if !opts.only.iter().any(|b| b == bench) {
            format!("the {bench} benchmark was not run (--only)")
        } else if failed.iter().any(|f| f.starts_with(&format!("{bench}: "))) {
            format!("the {bench} benchmark failed (ERROR below)")
        } else {
            format!("the {bench} benchmark did not report it")
        }
    });
    for l in lines {
        println!("{l}");
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
        assert_eq!(o.only, ["dirty", "save", "bar", "downtime", "qemu"]);
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

    #[test]
    fn figures_every_name_once_in_order() {
        let got = [
            ("bar0_read_vs_mtty", Figure::Value(1.0456)),
            ("save_vs_memcpy", Figure::Na("why".into())),
            ("boot_to_suite_s", Figure::Value(30.0)),
        ];
        let lines = figure_lines(&got, |b| format!("{b} missing"));
        let bench: Vec<&String> = lines.iter().filter(|l| l.starts_with("bench: ")).collect();
        assert_eq!(bench.len(), FIGURES.len());
        for (l, (name, _)) in bench.iter().zip(FIGURES) {
            assert!(l.starts_with(&format!("bench: {name} ")), "{l}");
        }
        assert_eq!(lines[0], "# save_vs_memcpy: why");
        assert_eq!(lines[1], "bench: save_vs_memcpy n/a");
        assert!(lines.contains(&"bench: bar0_read_vs_mtty 1.046".to_string()));
        assert!(lines.contains(&"bench: boot_to_suite_s 30".to_string()));
        assert!(lines.contains(&"# qemu_downtime_ms_mtty: qemu missing".to_string()));
        // Every n/a has its reason on the line before.
        for (i, l) in lines.iter().enumerate() {
            if l.ends_with(" n/a") {
                assert!(lines[i - 1].starts_with("# "), "{l}");
            }
        }
    }

    #[test]
    fn figure_values() {
        assert_eq!(value_text(0.5), "0.5");
        assert_eq!(value_text(12.0), "12");
        assert_eq!(value_text(100.0), "100");
        assert_eq!(value_text(0.0), "0");
        assert_eq!(value_text(0.0004), "0");
        assert_eq!(Figure::or_na(f64::NAN, "x"), Figure::Na("x".into()));
        assert_eq!(Figure::or_na(2.0, "x"), Figure::Value(2.0));
    }
}
