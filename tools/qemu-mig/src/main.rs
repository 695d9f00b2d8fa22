// SPDX-License-Identifier: GPL-2.0
//! `vfio-mig-qemu`: stock QEMU (8.1 or later, the upstream v2 VFIO
//! migration client) live-migrates a VM that owns a vfio-mig-sample mdev,
//! inside the test guest. No guest OS runs: the firmware only halts, the
//! test plays the guest through QEMU's qtest socket and drives the
//! migration through QMP. Prints `ok`/`FAIL` lines and QEMU's figures.
//!
//! `suite` runs every scenario (the guest suite's part), `demo` one
//! migration of the sample device for `make demo`, `run` one scenario.

mod pci;
mod qemu;
mod qmp;
mod qtest;
mod report;
mod sample;
mod scenario;

use std::path::PathBuf;
use std::process::{Command, ExitCode};
use std::thread::sleep;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use clap::{Parser, Subcommand};

use qemu::Tracking;
use report::Report;
use scenario::{Dut, Env, Failure, Scenario};

#[derive(Parser)]
#[command(about = "Stock QEMU live-migrates a VM that owns a vfio-mig-sample mdev")]
struct Cli {
    /// The QEMU binary.
    #[arg(long, default_value = "qemu-system-x86_64")]
    qemu: PathBuf,
    /// Print QEMU's command lines.
    #[arg(long, short)]
    verbose: bool,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Every scenario: the mtty control (both backends), the sample device through the
    /// three dirty-tracking paths, and the failures.
    Suite,
    /// One migration of the sample device (legacy container, device DMA
    /// logging) with QEMU's command lines.
    Demo,
    /// One scenario.
    Run {
        #[arg(long, value_enum, default_value = "sample")]
        dut: Dut,
        #[arg(long, value_enum, default_value = "device-log")]
        tracking: Tracking,
        #[arg(long, value_enum)]
        failure: Option<Failure>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let mut env = Env {
        qemu: cli.qemu,
        verbose: cli.verbose,
    };
    let scenarios = match cli.cmd {
        Cmd::Suite => scenario::suite(),
        Cmd::Demo => {
            env.verbose = true;
            vec![Scenario {
                dut: Dut::Sample,
                tracking: Tracking::DeviceLog,
                failure: None,
            }]
        }
        Cmd::Run {
            dut,
            tracking,
            failure,
        } => vec![Scenario {
            dut,
            tracking,
            failure,
        }],
    };
    let mut report = Report::default();
    let started = Instant::now();
    // Also the first run of QEMU, which in the test guest reads the binary
    // and its libraries through 9p: slow, and not under a start timeout.
    match qemu_version(&env) {
        Ok(v) => report.note(&v),
        Err(e) => report.fail("qemu runs", &e),
    }
    for sc in &scenarios {
        scenario::run(&env, sc, &mut report);
    }
    report.note(&format!(
        "qemu: {} passed, {} failed in {:.0} s",
        report.passed,
        report.failed,
        started.elapsed().as_secs_f64()
    ));
    if report.failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// The first line of `qemu --version`.
fn qemu_version(env: &Env) -> Result<String> {
    let out = Command::new(&env.qemu).arg("--version").output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    match text.lines().next() {
        Some(l) if out.status.success() => Ok(l.to_string()),
        _ => bail!("{} --version: {}", env.qemu.display(), out.status),
    }
}

/// Polls `f` every 20 ms until it returns `Some`, for at most `timeout`.
pub fn poll<T>(
    what: &str,
    timeout: Duration,
    mut f: impl FnMut() -> Result<Option<T>>,
) -> Result<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f()? {
            return Ok(v);
        }
        if Instant::now() > deadline {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        sleep(Duration::from_millis(20));
    }
}
