// SPDX-License-Identifier: GPL-2.0
//! `vfio-mig migrate`: a live migration between two mdevs with a running
//! workload (Documentation/tools.rst, "Live migration"), its report as text
//! or JSON.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Args;
use serde::Serialize;
use vfio_mig::live::{
    self, CpuOptions, CpuWorkload, DeviceWorkload, Iteration, LiveOptions, LiveReport, PagePattern,
    Vm,
};
use vfio_mig::sysfs::{self, Mdev, Parent, DEFAULT_PARENT};
use vfio_mig::units::human_bytes;
use vfio_mig::{Device, OpenPath};

use crate::{number, transfer_of, Interface, Output};

/// `vfio-mig migrate`.
#[derive(Debug, Args)]
pub struct MigrateArgs {
    /// The running source mdev
    #[arg(long, value_name = "UUID", requires = "dst", conflicts_with = "create")]
    pub src: Option<String>,
    /// The destination mdev (another one)
    #[arg(long, value_name = "UUID", requires = "src")]
    pub dst: Option<String>,
    /// Create the two mdevs of this type (full name or suffix) and remove
    /// them afterwards
    #[arg(long, value_name = "TYPE", required_unless_present = "src")]
    pub create: Option<String>,
    /// Open through the iommufd cdevs instead of legacy containers
    #[arg(long)]
    pub iommufd: bool,
    /// Guest RAM per side, MiB
    #[arg(long, value_name = "MIB", default_value = "64", value_parser = positive::<u64>)]
    pub ram: u64,
    /// IOVA of the guest RAM on both sides
    #[arg(long, value_name = "ADDR", default_value = "0x100000000", value_parser = number::<u64>)]
    pub iova: u64,
    /// Background writer range, guest pages (0: off)
    #[arg(long, value_name = "N", default_value = "256", value_parser = number::<u32>)]
    pub writer_pages: u32,
    /// Background writer rate, pages per second
    #[arg(long, value_name = "N", default_value = "2000", value_parser = number::<u32>)]
    pub writer_rate: u32,
    /// Ring pinned writable, pages (0: none)
    #[arg(long, value_name = "N", default_value = "16", value_parser = number::<u32>)]
    pub ring_pages: u32,
    /// FILL command queued behind PAUSE, pages (0: none)
    #[arg(long, value_name = "N", default_value = "4", value_parser = number::<u32>)]
    pub fill_pages: u32,
    /// Guest RAM pages the vCPU thread writes per second
    #[arg(long, value_name = "N", default_value = "500", value_parser = number::<u32>)]
    pub cpu_rate: u32,
    /// Which pages the vCPU thread writes: random or strided:N
    #[arg(long, value_name = "PATTERN", default_value = "random")]
    pub cpu_pattern: PagePattern,
    /// BAR2 writes per second of the vCPU thread
    #[arg(long, value_name = "N", default_value = "100", value_parser = number::<u32>)]
    pub bar2_rate: u32,
    /// Pre-copy iterations at most, the full copy included
    #[arg(long, value_name = "N", default_value = "10", value_parser = positive::<u32>)]
    pub max_iterations: u32,
    /// Pre-copy ends after an iteration with at most this many dirty pages
    #[arg(long, value_name = "N", default_value = "512", value_parser = number::<u64>)]
    pub converge_pages: u64,
    /// Pages per dirty query (0: all that is left)
    #[arg(long, value_name = "N", default_value = "0", value_parser = number::<u64>)]
    pub dirty_window: u64,
    /// Cap of each stream chunk in bytes (0: the data area)
    #[arg(long, value_name = "N", default_value = "0", value_parser = number::<u64>)]
    pub threshold: u64,
    /// How long the workload runs before the migration, ms
    #[arg(long, value_name = "MS", default_value = "500", value_parser = number::<u64>)]
    pub warmup: u64,
    /// How long the destination runs before its writer is checked, ms
    #[arg(long, value_name = "MS", default_value = "200", value_parser = number::<u64>)]
    pub settle: u64,
    /// No progress lines (they are shown only if the migration fails)
    #[arg(long)]
    pub quiet: bool,
    #[command(flatten)]
    pub interface: Interface,
    #[command(flatten)]
    pub format: Output,
}

/// A number of at least 1.
fn positive<T: TryFrom<u64>>(v: &str) -> Result<T, String> {
    if crate::parse_num(v)? == 0 {
        return Err("must be at least 1".into());
    }
    number(v)
}

impl MigrateArgs {
    fn path(&self) -> OpenPath {
        crate::open_path(self.iommufd)
    }

    fn workload(&self) -> DeviceWorkload {
        DeviceWorkload {
            writer_pages: self.writer_pages,
            writer_rate: self.writer_rate,
            ring_pages: self.ring_pages,
            fill_pages: self.fill_pages,
        }
    }

    fn cpu_options(&self) -> CpuOptions {
        CpuOptions {
            rate: self.cpu_rate,
            pattern: self.cpu_pattern,
            bar2_rate: self.bar2_rate,
            ..CpuOptions::default()
        }
    }

    fn ram_bytes(&self) -> Result<usize> {
        self.ram
            .checked_mul(1 << 20)
            .and_then(|b| usize::try_from(b).ok())
            .with_context(|| format!("--ram {}: give 1 MiB or more that fits in memory", self.ram))
    }
}

/// The two mdevs: given, or created here (the guards remove them).
fn endpoints(a: &MigrateArgs, guards: &mut Vec<Mdev>) -> Result<(String, String)> {
    if let (Some(s), Some(d)) = (&a.src, &a.dst) {
        return Ok((s.clone(), d.clone()));
    }
    let name = a.create.as_deref().unwrap_or_default();
    let ty = Parent::new(DEFAULT_PARENT).mdev_type(name);
    for _ in 0..2 {
        guards.push(
            ty.create_guarded()
                .with_context(|| format!("create an mdev of type {name}"))?,
        );
    }
    Ok((guards[0].uuid().to_string(), guards[1].uuid().to_string()))
}

/// `vfio-mig migrate --json`.
#[derive(Serialize)]
struct MigrateSummary<'a> {
    source: &'a str,
    destination: &'a str,
    #[serde(rename = "type")]
    type_name: &'a str,
    open_path: String,
    device_workload: DeviceWorkload,
    cpu_workload: CpuOptions,
    report: &'a LiveReport,
    destination_check: String,
    removed_mdevs: usize,
}

pub fn run(a: &MigrateArgs) -> Result<()> {
    let ram_bytes = a.ram_bytes()?;
    // Guards first: they are dropped last, after the devices are closed
    // (removing an mdev waits for its fd to close).
    let mut guards: Vec<Mdev> = Vec::new();
    let (src_uuid, dst_uuid) = endpoints(a, &mut guards)?;
    let type_name = sysfs::mdev_type_name(&src_uuid).unwrap_or_else(|_| "?".into());
    let open = |uuid: &str| -> Result<Arc<Device>> {
        let path = a.path();
        let dev = Device::open(uuid, path).with_context(|| format!("open {uuid} ({path})"))?;
        Ok(Arc::new(dev))
    };
    let (src_dev, dst_dev) = (open(&src_uuid)?, open(&dst_uuid)?);
    let vm = |dev: &Arc<Device>, name: &str| {
        Vm::new(Arc::clone(dev), name, ram_bytes, a.iova)
            .with_context(|| format!("set up {name} for {}", dev.uuid()))
    };
    let (src, dst) = (vm(&src_dev, "src-ram")?, vm(&dst_dev, "dst-ram")?);
    if !a.format.json {
        print_plan(a, &src_uuid, &dst_uuid, &type_name, ram_bytes);
    }
    let report = migrate(a, &src, &dst)?;
    if !a.format.json {
        println!("{report}");
    }
    let checked = a
        .workload()
        .check_destination(&dst)
        .with_context(|| format!("the destination {dst_uuid} does not carry on"))?;
    if !a.format.json && !checked.is_empty() {
        println!("destination: {checked}");
    }
    drop((src, dst, src_dev, dst_dev));
    let removed = guards.len();
    for g in guards {
        let uuid = g.uuid().to_string();
        g.remove()
            .with_context(|| format!("remove {uuid}, created for the migration"))?;
    }
    if a.format.json {
        return crate::print_json(&MigrateSummary {
            source: &src_uuid,
            destination: &dst_uuid,
            type_name: &type_name,
            open_path: a.path().to_string(),
            device_workload: a.workload(),
            cpu_workload: a.cpu_options(),
            report: &report,
            destination_check: checked,
            removed_mdevs: removed,
        });
    }
    if removed > 0 {
        println!("removed the {removed} mdevs created for the migration");
    }
    Ok(())
}

fn print_plan(a: &MigrateArgs, src: &str, dst: &str, type_name: &str, ram_bytes: usize) {
    let path = a.path();
    println!("live migration {src} -> {dst} ({type_name}, {path}, separate IOMMU contexts)");
    println!(
        "  guest RAM: {} per side at IOVA {:#x}; device workload: {}",
        human_bytes(ram_bytes as u64),
        a.iova,
        a.workload()
    );
    println!(
        "  vCPU workload: {}; pre-copy: at most {} iteration{}, converged at <= {} dirty pages",
        a.cpu_options(),
        a.max_iterations,
        if a.max_iterations == 1 { "" } else { "s" },
        a.converge_pages
    );
}

/// Starts the workload, lets it run, migrates; progress rows go to stderr
/// as iterations end (with `--quiet` only if the migration fails).
fn migrate(a: &MigrateArgs, src: &Vm, dst: &Vm) -> Result<LiveReport> {
    // Before the workload starts: mapping the areas may fail.
    let src_t = transfer_of(&src.dev, &a.interface).context("set up the source's transfer")?;
    let dst_t = transfer_of(&dst.dev, &a.interface).context("set up the destination's transfer")?;
    a.workload()
        .prepare_source(src)
        .context("setting up the source")?;
    let cpu_opts = a.cpu_options();
    let mut cpu = if cpu_opts.rate > 0 || cpu_opts.bar2_rate > 0 {
        Some(CpuWorkload::start(src, cpu_opts).context("start the vCPU workload")?)
    } else {
        None
    };
    // Let the workload run before migrating, as a guest would have been.
    std::thread::sleep(Duration::from_millis(a.warmup));
    let mut rows: Vec<Iteration> = Vec::new();
    let mut progress = |it: &Iteration| {
        if !a.quiet {
            if rows.is_empty() {
                eprintln!("  {}", live::IterationHeader);
            }
            eprintln!("  {}", live::IterationRow(it));
        }
        rows.push(*it);
    };
    let opts = LiveOptions {
        max_iterations: a.max_iterations,
        converge_pages: a.converge_pages,
        dirty_window: a.dirty_window,
        threshold: a.threshold,
        settle: Duration::from_millis(a.settle),
        progress: Some(&mut progress),
    };
    let result = live::migrate_with(src, src_t.as_ref(), cpu.as_mut(), dst, dst_t.as_ref(), opts);
    // Whatever happened, the vCPU thread is stopped before the devices go.
    drop(cpu);
    if result.is_err() && a.quiet && !rows.is_empty() {
        eprintln!("  {}", live::IterationHeader);
        for it in &rows {
            eprintln!("  {}", live::IterationRow(it));
        }
    }
    result.with_context(|| {
        format!(
            "live migration {} -> {} failed (source left in {}, destination in {})",
            src.dev.uuid(),
            dst.dev.uuid(),
            src_t.state_words(),
            dst_t.state_words()
        )
    })
}
