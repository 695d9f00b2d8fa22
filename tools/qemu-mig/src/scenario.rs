// SPDX-License-Identifier: GPL-2.0
//! The migrations: a VM that owns an mdev, with the device and the "vCPUs"
//! (qtest) busy, live-migrated by stock QEMU over a unix socket; what must
//! hold afterwards; and the failures the source must survive.
//!
//! Pre-copy is held open while the vCPUs write: the source's bandwidth is
//! capped far below the rate at which the test dirties memory, so QEMU
//! cannot converge until the cap is lifted. The writes stop after QEMU's
//! third dirty-bitmap sync: by then pages sent in the first pass and
//! written again (by the device or the vCPUs) were caught by dirty
//! tracking and sent again.

use std::path::PathBuf;
use std::thread::sleep;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use serde_json::{json, Value};
use vfio_mig::{Mdev, Parent};

use crate::pci;
use crate::poll;
use crate::qemu::{
    last_line, Passthrough, Process, Role, RunDir, Tracking, Vm, DEVICE_LOGGING_TRACE,
};
use crate::qmp::migration_status;
use crate::qtest::Qtest;
use crate::report::Report;
use crate::sample::{self, Sample};

/// The vCPUs' area of guest RAM (above the device's, see `sample`).
const VCPU_GPA: u64 = 0x0240_0000;
const VCPU_LEN: usize = 2 << 20;
/// The area's parts, each written with a value of its own.
const VCPU_CHUNK: usize = 512 << 10;
const VCPU_CHUNKS: u64 = (VCPU_LEN / VCPU_CHUNK) as u64;
/// Between rounds, to leave the guest's CPUs to QEMU.
const ROUND_PAUSE: Duration = Duration::from_millis(20);
/// The source's bandwidth while pre-copy is held open, and after. At the
/// cap, a pass over the 2 MiB the vCPUs rewrite each round takes QEMU two
/// seconds, so every dirty sync finds a round's writes: a round took about
/// one second in a TCG guest on a two-core host at a load of 15. QEMU
/// switches over only when what is dirty fits in its 300 ms downtime at
/// the measured bandwidth (about 300 KiB here).
const HOLD_BANDWIDTH: u64 = 1 << 20;
const FULL_BANDWIDTH: u64 = 64 << 30;
/// Dirty-bitmap syncs to wait for while writing (the first is at setup).
const HOLD_SYNCS: u64 = 3;
const MIGRATION_TIMEOUT: Duration = Duration::from_secs(600);
const EVENT_TIMEOUT: Duration = Duration::from_secs(60);

/// The device states QEMU reports (`VFIO_MIGRATION` events) for a device
/// with `PRE_COPY` and `P2P`: the source, from `migrate` to the end...
const SOURCE_STATES: [&str; 4] = ["pre-copy", "pre-copy-p2p", "stop-copy", "stop"];
/// ... the destination, from `migrate-incoming` to `cont`...
const DESTINATION_STATES: [&str; 3] = ["resuming", "running-p2p", "running"];
/// ... and a source whose migration failed or was cancelled in pre-copy.
const RECOVERED_STATES: [&str; 2] = ["pre-copy", "running"];

/// The VM's device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Dut {
    /// A `vfio_mig_sample-large` mdev.
    Sample,
    /// The C sample `mtty` (`mtty-2`), the control.
    Mtty,
    /// No device: QEMU and the environment alone.
    Bare,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Failure {
    /// The destination's mdev is `vfio_mig_sample-small`.
    WrongType,
    /// The destination QEMU is killed in pre-copy.
    DestinationKilled,
    /// `migrate_cancel` in pre-copy.
    Cancelled,
}

pub struct Scenario {
    pub dut: Dut,
    pub tracking: Tracking,
    pub failure: Option<Failure>,
}

impl Scenario {
    pub fn label(&self) -> String {
        let dut = match self.dut {
            Dut::Sample => "sample",
            Dut::Mtty => "mtty",
            Dut::Bare => "no device",
        };
        let what = match self.failure {
            None if self.dut == Dut::Bare => "",
            // mtty has no DMA logging: on iommufd QEMU has no dirty
            // tracking for it at all.
            None if self.dut == Dut::Mtty && self.tracking == Tracking::Iommufd => "iommufd",
            None => self.tracking.label(),
            Some(Failure::WrongType) => "destination of the other type",
            Some(Failure::DestinationKilled) => "destination killed in pre-copy",
            Some(Failure::Cancelled) => "cancelled in pre-copy",
        };
        format!("qemu {dut} {what}").trim_end().to_string()
    }

    /// QEMU tracks the device's DMA through the device's own DMA logging
    /// (only the sample device has it).
    fn device_logging(&self) -> bool {
        self.dut == Dut::Sample && self.tracking.device_logging()
    }

    /// QEMU's trace tells the tracking paths apart. Not for mtty on
    /// iommufd: QEMU 10 traces the start of device DMA logging there
    /// although mtty has none and nothing asks it (seen in this suite).
    fn tracking_checkable(&self) -> bool {
        match self.dut {
            Dut::Bare => false,
            Dut::Mtty => self.tracking != Tracking::Iommufd,
            Dut::Sample => true,
        }
    }
}

/// Everything the guest suite runs: the mtty control first, through both
/// backends (a failure there is QEMU's or the environment's), the sample
/// device through the three dirty-tracking paths, then the failures.
pub fn suite() -> Vec<Scenario> {
    let migrate = |dut, tracking| Scenario {
        dut,
        tracking,
        failure: None,
    };
    let fail = |failure| Scenario {
        dut: Dut::Sample,
        tracking: Tracking::DeviceLog,
        failure: Some(failure),
    };
    vec![
        migrate(Dut::Mtty, Tracking::Container),
        migrate(Dut::Mtty, Tracking::Iommufd),
        migrate(Dut::Sample, Tracking::DeviceLog),
        migrate(Dut::Sample, Tracking::Container),
        migrate(Dut::Sample, Tracking::Iommufd),
        fail(Failure::WrongType),
        fail(Failure::DestinationKilled),
        fail(Failure::Cancelled),
    ]
}

pub struct Env {
    pub qemu: PathBuf,
    /// Print QEMU's command lines.
    pub verbose: bool,
}

/// Named checks of one scenario, and how long pre-copy was held open.
struct Checks<'a> {
    report: &'a mut Report,
    label: &'a str,
    /// vCPU rounds written while pre-copy ran.
    rounds: u64,
}

impl Checks<'_> {
    /// Runs one check: its errors (`?`, `ensure!`) fail it, not the run.
    fn check(&mut self, name: &str, check: impl FnOnce() -> Result<()>) -> bool {
        self.report
            .check(&format!("{}: {name}", self.label), check())
    }
}

/// Runs one scenario: `ok`/`FAIL` lines, then QEMU's figures.
pub fn run(env: &Env, sc: &Scenario, report: &mut Report) {
    let label = sc.label();
    let started = Instant::now();
    let dir = match RunDir::new() {
        Ok(d) => d,
        Err(e) => return report.fail(&label, &e),
    };
    let mut checks = Checks {
        report,
        label: &label,
        rounds: 0,
    };
    let outcome = match sc.failure {
        None => migrate(env, sc, &dir, &mut checks),
        Some(f) => survive(env, sc, f, &dir, &mut checks),
    };
    let rounds = checks.rounds;
    match outcome {
        Ok(info) => report.note(&format!(
            "{label}: {}; {rounds} vCPU rounds in pre-copy, {:.0} s in the harness",
            figures(&info),
            started.elapsed().as_secs_f64()
        )),
        Err(e) => {
            report.fail(&label, &e);
            for role in [Role::Source, Role::Destination] {
                report.quote(&format!("{} QEMU", role.name()), &dir.logs(role.name()), 8);
            }
        }
    }
}

/// A migration that must succeed, and everything that must hold after it.
fn migrate(env: &Env, sc: &Scenario, dir: &RunDir, c: &mut Checks) -> Result<Value> {
    // Declared first, dropped last: an mdev goes once its QEMU is gone.
    let mdevs = create_mdevs(sc.dut, false)?;
    let (mut src, mut dst) = start_vms(env, dir, sc.tracking, &mdevs)?;
    let mut dev = program(&mut src, sc.dut)?;
    let mut vcpus = Vcpus::new(&mut src.qtest)?;
    start_migration(&mut src, &mut dst, dir, HOLD_BANDWIDTH)?;
    c.rounds = hold(&mut src, &mut vcpus, dev.as_mut())?;
    src.qmp.execute(
        "migrate-set-parameters",
        json!({ "max-bandwidth": FULL_BANDWIDTH }),
    )?;
    let info = wait_end(&mut src)?;

    // Without these two the rest has nothing to look at.
    if !c.check("source completed", || expect_status(&info, "completed"))
        || !c.check("destination completed", || destination_completed(&mut dst))
    {
        return Ok(info);
    }
    // Both VMs are stopped: RAM as the migration left it.
    c.check("vCPU writes to RAM arrived", || {
        vcpus.arrived(&mut src.qtest, &mut dst.qtest)
    });
    if dev.is_some() {
        c.check("device-written pages arrived (writer stamps)", || {
            let s = Sample::writer_pages(&mut src.qtest)?;
            let d = Sample::writer_pages(&mut dst.qtest)?;
            sample::check_stamps(&s, &d).map(drop)
        });
        c.check("paused FILL did not run before the switchover", || {
            let ran = Sample::filled(&mut src.qtest)? || Sample::filled(&mut dst.qtest)?;
            ensure!(!ran, "the FILL target is filled");
            Ok(())
        });
    }

    dst.qmp.execute("cont", Value::Null)?;
    if !c.check("destination runs", || runs_again(&mut dst, sc.dut)) {
        return Ok(info);
    }
    if let Some(s) = &dev {
        let a = s.snapshot(&mut src.qtest)?;
        let b = s.snapshot(&mut dst.qtest)?;
        c.check(
            "BAR0 registers, BAR2 and config space equal the source's",
            || {
                let d = sample::differences(&a, &b);
                ensure!(d.is_empty(), "{}", d.join("; "));
                Ok(())
            },
        );
        c.check("BAR2 holds what the guest wrote", || {
            ensure!(
                a.memory == s.bar2_expected,
                "the source's BAR2 differs from what was written"
            );
            Ok(())
        });
        let writes = s.reg(&mut src.qtest, vfio_mig::abi::bar0::BG_WRITES)?;
        c.check("writer goes on", || {
            s.writer_goes_on(&mut dst.qtest, writes)
        });
        c.check("ring pinned", || s.ring_pinned(&mut dst.qtest));
        c.check("paused FILL runs once PAUSE is cleared", || {
            s.run_paused_fill(&mut dst.qtest)
        });
    } else if sc.dut != Dut::Bare {
        c.check("config space equals the source's", || {
            let a = pci::config_space(&mut src.qtest)?;
            let b = pci::config_space(&mut dst.qtest)?;
            ensure!(a == b, "source {a:02x?}\ndestination {b:02x?}");
            Ok(())
        });
    }
    if sc.dut != Dut::Bare {
        c.check("VFIO_MIGRATION events", || {
            states_are(&mut src, &SOURCE_STATES).and(states_are(&mut dst, &DESTINATION_STATES))
        });
    }
    src.quit()?;
    dst.quit()?;
    if sc.tracking_checkable() {
        c.check(tracking_check_name(sc), || tracking_used(dir, sc));
    }
    c.check("no page pinned after both QEMUs quit", nothing_pinned);
    Ok(info)
}

/// A migration that fails or is cancelled: the source must carry on.
fn survive(env: &Env, sc: &Scenario, f: Failure, dir: &RunDir, c: &mut Checks) -> Result<Value> {
    let mdevs = create_mdevs(sc.dut, f == Failure::WrongType)?;
    let (mut src, mut dst) = start_vms(env, dir, sc.tracking, &mdevs)?;
    let mut dev = program(&mut src, sc.dut)?;
    let mut vcpus = Vcpus::new(&mut src.qtest)?;
    let expected = match f {
        Failure::WrongType => {
            start_migration(&mut src, &mut dst, dir, FULL_BANDWIDTH)?;
            "failed"
        }
        Failure::DestinationKilled => {
            start_migration(&mut src, &mut dst, dir, HOLD_BANDWIDTH)?;
            c.rounds = hold(&mut src, &mut vcpus, dev.as_mut())?;
            dst.kill()?;
            "failed"
        }
        Failure::Cancelled => {
            start_migration(&mut src, &mut dst, dir, HOLD_BANDWIDTH)?;
            c.rounds = hold(&mut src, &mut vcpus, dev.as_mut())?;
            src.qmp.execute("migrate_cancel", Value::Null)?;
            "cancelled"
        }
    };
    let info = wait_end(&mut src)?;
    c.check(&format!("source reports {expected}"), || {
        expect_status(&info, expected)
    });
    if f == Failure::WrongType {
        let exited = poll("the destination to exit", MIGRATION_TIMEOUT, || {
            dst.exited()
        });
        let said = last_line(&dir.logs(Role::Destination.name())).to_string();
        c.check("destination refuses the stream and exits", || {
            exited.and_then(|status| {
                ensure!(!status.success(), "the destination exited with {status}");
                Ok(())
            })
        });
        c.report
            .note(&format!("{}: the destination said: {said}", c.label));
    }
    if !c.check("source runs again", || runs_again(&mut src, sc.dut)) {
        return Ok(info);
    }
    if sc.dut != Dut::Bare {
        c.check("VFIO_MIGRATION events", || {
            let got = src.qmp.vfio_states();
            if f == Failure::WrongType {
                // Where the load fails decides the states in between.
                ensure!(
                    got.first().map(String::as_str) == Some("pre-copy") && got.last().map(String::as_str) == Some("running"),
                    "source VFIO_MIGRATION device states {got:?}: expected pre-copy first and running last"
                );
                Ok(())
            } else {
                states_are(&mut src, &RECOVERED_STATES)
            }
        });
    }
    if let Some(s) = &dev {
        c.check("source device works (writer, ring, DMA, registers)", || {
            s.works(&mut src.qtest)
        });
    }
    c.check("vCPU writes still in RAM", || {
        let got = src.qtest.read(VCPU_GPA, VCPU_LEN)?;
        ensure!(got == vcpus.expected, "the source's RAM lost vCPU writes");
        Ok(())
    });
    src.quit()?;
    drop(dst);
    c.check("no page pinned after both QEMUs quit", nothing_pinned);
    Ok(info)
}

/// The two mdevs (source, destination), removed when dropped.
fn create_mdevs(dut: Dut, wrong_type: bool) -> Result<(Option<Mdev>, Option<Mdev>)> {
    let (parent, src_type, dst_type) = match dut {
        Dut::Sample => (
            "vfio_mig_sample",
            "large",
            if wrong_type { "small" } else { "large" },
        ),
        Dut::Mtty => ("mtty", "mtty-2", "mtty-2"),
        Dut::Bare => return Ok((None, None)),
    };
    let p = Parent::open(parent)
        .with_context(|| format!("mdev parent {parent} (module not loaded?)"))?;
    let src = p.mdev_type(src_type).create_guarded()?;
    let dst = p.mdev_type(dst_type).create_guarded()?;
    Ok((Some(src), Some(dst)))
}

fn start_vms(
    env: &Env,
    dir: &RunDir,
    tracking: Tracking,
    mdevs: &(Option<Mdev>, Option<Mdev>),
) -> Result<(Vm, Vm)> {
    let device = |m: &Option<Mdev>| {
        m.as_ref().map(|m| Passthrough {
            uuid: m.uuid().to_string(),
            tracking,
        })
    };
    let mut spawned = Vec::new();
    for (role, m) in [(Role::Source, &mdevs.0), (Role::Destination, &mdevs.1)] {
        let d = device(m);
        if env.verbose {
            let args = crate::qemu::args(dir, role, d.as_ref()).join(" ");
            println!("# {} QEMU: {} {args}", role.name(), env.qemu.display());
        }
        spawned.push(Process::spawn(&env.qemu, dir, role, d.as_ref())?);
    }
    let mut vms = spawned.into_iter().map(|p| p.connect(dir));
    let src = vms
        .next()
        .expect("two VMs")
        .context("starting the source QEMU")?;
    let dst = vms
        .next()
        .expect("two VMs")
        .context("starting the destination QEMU")?;
    Ok((src, dst))
}

/// Places the BARs, and programs the sample device if that is the device.
fn program(src: &mut Vm, dut: Dut) -> Result<Option<Sample>> {
    let bars = pci::assign_bars(&mut src.qtest)?;
    if dut != Dut::Sample {
        return Ok(None);
    }
    let mut s = Sample::locate(&mut src.qtest, &bars)?;
    s.program(&mut src.qtest)
        .context("programming the source's device")?;
    Ok(Some(s))
}

fn start_migration(src: &mut Vm, dst: &mut Vm, dir: &RunDir, bandwidth: u64) -> Result<()> {
    // return-path: the destination tells the source when its load failed.
    let caps = json!({ "capabilities": [
        { "capability": "events", "state": true },
        { "capability": "return-path", "state": true },
    ]});
    src.qmp.execute("migrate-set-capabilities", caps.clone())?;
    dst.qmp.execute("migrate-set-capabilities", caps)?;
    dst.qmp
        .execute("migrate-incoming", json!({ "uri": dir.migration_uri() }))?;
    src.qmp.execute(
        "migrate-set-parameters",
        json!({ "max-bandwidth": bandwidth }),
    )?;
    src.qmp
        .execute("migrate", json!({ "uri": dir.migration_uri() }))?;
    Ok(())
}

/// Keeps writing RAM (and BAR2) while pre-copy runs, until QEMU's third
/// dirty sync and at least two rounds. Returns the rounds.
fn hold(src: &mut Vm, vcpus: &mut Vcpus, mut dev: Option<&mut Sample>) -> Result<u64> {
    poll("pre-copy to start", EVENT_TIMEOUT, || {
        let info = src.qmp.query_migrate()?;
        match migration_status(&info) {
            "active" => Ok(Some(())),
            "setup" | "none" => Ok(None),
            s => bail!(
                "the migration is {s} before pre-copy: {}",
                info["error-desc"]
            ),
        }
    })?;
    let deadline = Instant::now() + MIGRATION_TIMEOUT;
    let mut round = 0;
    loop {
        vcpus.write(&mut src.qtest, round + 1)?;
        if let Some(d) = dev.as_deref_mut() {
            d.vcpu_write_bar2(&mut src.qtest, round)?;
        }
        round += 1;
        // Running after the writes: they came before the VM stopped.
        let state = src.qmp.run_state()?;
        let info = src.qmp.query_migrate()?;
        ensure!(
            state == "running" && migration_status(&info) == "active",
            "the source left pre-copy (VM {state}, migration {}) while the vCPUs were writing",
            migration_status(&info)
        );
        let syncs = info["ram"]["dirty-sync-count"].as_u64().unwrap_or(0);
        if syncs >= HOLD_SYNCS && round >= 2 {
            return Ok(round);
        }
        ensure!(
            Instant::now() < deadline,
            "pre-copy reached only {syncs} dirty syncs in {MIGRATION_TIMEOUT:?}"
        );
        sleep(ROUND_PAUSE);
    }
}

/// Waits for the source's migration to complete, fail or be cancelled.
fn wait_end(src: &mut Vm) -> Result<Value> {
    poll("the migration to end", MIGRATION_TIMEOUT, || {
        let info = src.qmp.query_migrate()?;
        Ok(matches!(
            migration_status(&info),
            "completed" | "failed" | "cancelled"
        )
        .then_some(info))
    })
}

fn expect_status(info: &Value, expected: &str) -> Result<()> {
    let status = migration_status(info);
    ensure!(
        status == expected,
        "migration {status}: {}",
        info["error-desc"]
    );
    Ok(())
}

/// The destination's incoming migration completed; the VM waits (`-S`).
fn destination_completed(dst: &mut Vm) -> Result<()> {
    poll("the destination to complete", MIGRATION_TIMEOUT, || {
        let info = dst.qmp.query_migrate()?;
        match migration_status(&info) {
            "completed" => {}
            "failed" => bail!("incoming migration failed: {}", info["error-desc"]),
            _ => return Ok(None),
        }
        let state = dst.qmp.run_state()?;
        ensure!(
            state == "paused",
            "after the migration the VM is {state}, not paused"
        );
        Ok(Some(()))
    })
}

/// The VM runs, and so does its device (last `VFIO_MIGRATION` state).
fn runs_again(vm: &mut Vm, dut: Dut) -> Result<()> {
    poll("the VM and its device to run", EVENT_TIMEOUT, || {
        let state = vm.qmp.run_state()?;
        let device = vm.qmp.vfio_states().last().cloned();
        Ok(
            (state == "running" && (dut == Dut::Bare || device.as_deref() == Some("running")))
                .then_some(()),
        )
    })
}

/// The device states of the VM's `VFIO_MIGRATION` events are `expected`.
fn states_are(vm: &mut Vm, expected: &[&str]) -> Result<()> {
    let deadline = Instant::now() + EVENT_TIMEOUT;
    loop {
        // Any command brings the events queued before its answer.
        vm.qmp.run_state()?;
        let got = vm.qmp.vfio_states();
        if got.len() >= expected.len() || Instant::now() > deadline {
            ensure!(
                got == expected,
                "{} VFIO_MIGRATION device states {got:?}, expected {expected:?}",
                vm.role.name()
            );
            return Ok(());
        }
        sleep(Duration::from_millis(20));
    }
}

fn tracking_check_name(sc: &Scenario) -> &'static str {
    if sc.device_logging() {
        "QEMU tracked DMA through the device's DMA logging"
    } else {
        "QEMU did not use device DMA logging"
    }
}

/// The source QEMU traced the start of device DMA logging exactly when
/// the path under test uses it.
fn tracking_used(dir: &RunDir, sc: &Scenario) -> Result<()> {
    let traced = dir.logs(Role::Source.name()).contains(DEVICE_LOGGING_TRACE);
    ensure!(
        traced == sc.device_logging(),
        "the source QEMU {} {DEVICE_LOGGING_TRACE}",
        if traced { "traced" } else { "never traced" }
    );
    Ok(())
}

/// The module's count of pinned guest pages is 0 (when it is loaded).
fn nothing_pinned() -> Result<()> {
    if !std::path::Path::new(vfio_mig::sample::PINNED_PAGES_DEBUGFS).exists() {
        return Ok(());
    }
    let n = vfio_mig::sample::pinned_pages_total()?;
    ensure!(n == 0, "{n} pages still pinned");
    Ok(())
}

/// QEMU's own figures of a migration, from the source's `query-migrate`.
fn figures(info: &Value) -> String {
    let ms = |k: &str| info[k].as_u64().map_or("-".into(), |v| format!("{v} ms"));
    let mib = |v: &Value| {
        v.as_u64().map_or("-".into(), |b| {
            format!("{:.2} MiB", b as f64 / f64::from(1 << 20))
        })
    };
    let error = info["error-desc"]
        .as_str()
        .map_or(String::new(), |e| format!(" ({e})"));
    format!(
        "migration {}{error}: downtime {}, total {}, setup {}, RAM {} in {} dirty syncs, device state {}",
        migration_status(info),
        ms("downtime"),
        ms("total-time"),
        ms("setup-time"),
        mib(&info["ram"]["transferred"]),
        info["ram"]["dirty-sync-count"]
            .as_u64()
            .map_or("-".into(), |n| n.to_string()),
        mib(&info["vfio"]["transferred"])
    )
}

/// The vCPUs' RAM: written whole before the migration, then again every
/// round during pre-copy, each chunk with a value of its own. `memset`
/// is a short qtest command, so the vCPUs dirty far more per second than
/// the capped migration sends: pre-copy cannot converge while they write.
struct Vcpus {
    expected: Vec<u8>,
}

impl Vcpus {
    fn new(qt: &mut Qtest) -> Result<Self> {
        let mut v = Vcpus {
            expected: vec![0; VCPU_LEN],
        };
        v.write(qt, 0)?;
        Ok(v)
    }

    fn write(&mut self, qt: &mut Qtest, round: u64) -> Result<()> {
        for (chunk, bytes) in self.expected.chunks_mut(VCPU_CHUNK).enumerate() {
            let value = ((round * VCPU_CHUNKS + chunk as u64) % 251 + 1) as u8;
            qt.memset(VCPU_GPA + (chunk * VCPU_CHUNK) as u64, VCPU_CHUNK, value)?;
            bytes.fill(value);
        }
        Ok(())
    }

    fn arrived(&self, src: &mut Qtest, dst: &mut Qtest) -> Result<()> {
        for (side, qt) in [("source", src), ("destination", dst)] {
            let got = qt.read(VCPU_GPA, VCPU_LEN)?;
            if let Some(page) = got
                .chunks(4096)
                .zip(self.expected.chunks(4096))
                .position(|(a, b)| a != b)
            {
                bail!("the {side}'s RAM differs from what the vCPUs wrote, first in page {page} of their area");
            }
        }
        Ok(())
    }
}
