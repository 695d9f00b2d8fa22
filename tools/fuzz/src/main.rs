// SPDX-License-Identifier: GPL-2.0
//! `vfio-mig-fuzz`: drives several mdevs of vfio_mig_sample.ko through
//! random sequences of everything a VMM (or the guest behind it) can do,
//! through both VFIO open paths, and checks every answer against the
//! documentation (see `ops.rs`). Runs as root in the test guest with the
//! module loaded; `qemu-tests/guest-fuzz.sh` sets that up and checks the
//! kernel log afterwards.
//!
//! One seed gives one sequence of operations: a run that found a
//! violation is repeated with `--seed`. The last line is `fuzz: no
//! violation` or `fuzz: VIOLATION`.

mod ops;
mod pick;
mod slot;

use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clap::Parser;
use rand::SeedableRng;

use ops::Fuzz;
use pick::Rng;

#[derive(Parser)]
#[command(about = "Random operations on vfio-mig-sample mdevs, checked against the documentation")]
struct Args {
    /// How long to run, in seconds.
    #[arg(long, default_value_t = 120)]
    seconds: u64,
    /// The seed of the operation sequence (default: from the clock).
    #[arg(long)]
    seed: Option<u64>,
    /// Stop after this many operations.
    #[arg(long)]
    ops: Option<u64>,
    /// How many mdevs to create (their types are random).
    #[arg(long, default_value_t = 4)]
    mdevs: usize,
    /// The module (and mdev parent) name.
    #[arg(long, default_value = "vfio_mig_sample")]
    module: String,
    /// Print every operation.
    #[arg(long)]
    verbose: bool,
}

fn clock_seed() -> u64 {
    let t = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    t ^ u64::from(std::process::id()).rotate_left(32)
}

fn main() -> ExitCode {
    let args = Args::parse();
    let seed = args.seed.unwrap_or_else(clock_seed);
    println!(
        "fuzz: seed {seed}, {} s, {} mdevs (reproduce with --seed {seed})",
        args.seconds, args.mdevs
    );
    let parent = vfio_mig::Parent::new(&args.module);
    let mut fuzz = match Fuzz::new(Rng::seed_from_u64(seed), parent, args.mdevs) {
        Ok(f) => f,
        Err(e) => {
            println!("fuzz: setup failed: {e}\nfuzz: VIOLATION");
            return ExitCode::FAILURE;
        }
    };
    let start = Instant::now();
    let limit = Duration::from_secs(args.seconds);
    let mut report = start;
    let mut done = 0u64;
    let mut result = Ok(());
    while start.elapsed() < limit && args.ops.is_none_or(|n| done < n) {
        result = fuzz.step();
        if result.is_ok() && done % 64 == 63 {
            result = fuzz.check_areas();
        }
        if args.verbose {
            if let Some(last) = fuzz.history.back() {
                println!("  {done}: {last}");
            }
        }
        done += 1;
        if result.is_err() {
            break;
        }
        if report.elapsed() >= Duration::from_secs(30) {
            println!("fuzz: {} s, {done} operations", start.elapsed().as_secs());
            report = Instant::now();
        }
    }
    if let Err(e) = &result {
        println!("fuzz: VIOLATION at operation {done} (seed {seed}): {e}");
        println!("fuzz: the last operations, oldest first:");
        for h in &fuzz.history {
            println!("  | {h}");
        }
    }
    let cleanup = fuzz.finish();
    if let Err(e) = &cleanup {
        println!("fuzz: VIOLATION at the end: {e}");
    }
    println!(
        "fuzz: {done} operations in {} s, seed {seed}; per operation: calls that succeeded, \
         calls refused as documented, seconds spent:",
        start.elapsed().as_secs()
    );
    for (op, st) in &fuzz.stats {
        println!(
            "  {op:>22}: {}/{} {:.1} s",
            st.succeeded,
            st.refused,
            st.time.as_secs_f64()
        );
    }
    if result.is_ok() && cleanup.is_ok() {
        println!("fuzz: no violation");
        ExitCode::SUCCESS
    } else {
        println!("fuzz: VIOLATION");
        ExitCode::FAILURE
    }
}
