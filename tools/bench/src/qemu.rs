// SPDX-License-Identifier: GPL-2.0
//! Benchmark 5: the downtime stock QEMU reports (`query-migrate` on the
//! source) when it live-migrates a VM that owns a `large` sample mdev, and
//! one that owns an mtty mdev, the control, in the same boot.
//!
//! Each is one `vfio-mig-qemu run` (tools/qemu-mig), the binary beside this
//! one, as the guest suite runs them: the sample device with device DMA
//! logging (QEMU's preference), mtty through the legacy container. Its
//! `# migration ...` line carries QEMU's figures; its `ok`/`FAIL` lines
//! are its checks (a failed one is an error here).

use std::path::PathBuf;
use std::process::Command;

use crate::stats::Table;
use crate::{BResult, Figure, Opts, Report};

/// QEMU's figures of one migration, from `vfio-mig-qemu`'s line.
#[derive(Debug, Default, PartialEq)]
struct Figures {
    status: String,
    downtime_ms: Option<u64>,
    total_ms: Option<u64>,
    setup_ms: Option<u64>,
}

/// Parses `# LABEL: migration STATUS: downtime N ms, total N ms, setup N
/// ms, ...` (tools/qemu-mig/src/scenario.rs).
fn parse(out: &str) -> Option<Figures> {
    let line = out
        .lines()
        .filter(|l| l.starts_with("# "))
        .find_map(|l| l.split_once(": migration ").map(|(_, r)| r))?;
    let (status, rest) = line.split_once(':')?;
    let ms = |key: &str| {
        rest.split(',').find_map(|part| {
            part.trim()
                .strip_prefix(key)?
                .trim()
                .strip_suffix(" ms")?
                .parse()
                .ok()
        })
    };
    Some(Figures {
        status: status.trim().into(),
        downtime_ms: ms("downtime "),
        total_ms: ms("total "),
        setup_ms: ms("setup "),
    })
}

fn qemu_mig() -> BResult<PathBuf> {
    let me = std::env::current_exe().map_err(|e| format!("where am I: {e}"))?;
    Ok(me.with_file_name("vfio-mig-qemu"))
}

pub fn run(_opts: &Opts) -> BResult<Report> {
    let bin = qemu_mig()?;
    let mut t = Table::new(
        "5. stock QEMU live migration: query-migrate on the source",
        &[
            "VM's device",
            "dirty tracking",
            "status",
            "downtime ms",
            "total ms",
            "setup ms",
            "checks",
        ],
    );
    let mut figures = Vec::new();
    let mut errors = Vec::new();
    for (name, dut, tracking, figure) in [
        (
            "vfio_mig_sample-large",
            "sample",
            "device-log",
            "qemu_downtime_ms_sample",
        ),
        ("mtty-2", "mtty", "container", "qemu_downtime_ms_mtty"),
    ] {
        let out = Command::new(&bin)
            .args(["run", "--dut", dut, "--tracking", tracking])
            .output()
            .map_err(|e| format!("run {}: {e}", bin.display()))?;
        let text = String::from_utf8_lossy(&out.stdout);
        let fails: Vec<&str> = text.lines().filter(|l| l.starts_with("FAIL ")).collect();
        let f = parse(&text).unwrap_or_default();
        let cell = |v: Option<u64>| v.map_or("-".into(), |v| v.to_string());
        t.row(vec![
            name.into(),
            tracking.into(),
            if f.status.is_empty() {
                "no figures".into()
            } else {
                f.status.clone()
            },
            cell(f.downtime_ms),
            cell(f.total_ms),
            cell(f.setup_ms),
            format!(
                "{} ok, {} failed",
                text.lines().filter(|l| l.starts_with("ok ")).count(),
                fails.len()
            ),
        ]);
        if !out.status.success() || !fails.is_empty() {
            let why = fails.first().map_or_else(
                || {
                    format!(
                        "exited {} ({})",
                        out.status,
                        String::from_utf8_lossy(&out.stderr).trim()
                    )
                },
                |l| l.to_string(),
            );
            errors.push(format!("vfio-mig-qemu run --dut {dut}: {why}"));
        }
        figures.push((
            figure,
            match (f.status.as_str(), f.downtime_ms) {
                ("completed", Some(d)) => Figure::Value(d as f64),
                _ => Figure::Na(format!(
                    "vfio-mig-qemu run --dut {dut} reported no completed migration's downtime"
                )),
            },
        ));
    }
    t.note(
        "one `vfio-mig-qemu run` each (tools/qemu-mig: no guest OS, pre-copy held open \
         for a few dirty syncs at a capped bandwidth, then switched over); downtime and \
         total are QEMU's own, in ms; total includes the held pre-copy",
    );
    for e in &errors {
        t.note(format!("ERROR: {e}"));
    }
    Ok(Report {
        tables: vec![t],
        figures,
        errors,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_figures_line() {
        let out = "ok migrated\n# sample, device-log: migration completed: downtime 12 ms, \
                   total 3456 ms, setup 7 ms, RAM 1.00 MiB in 4 dirty syncs, device state \
                   2.00 MiB; 5 vCPU rounds in pre-copy, 9 s in the harness\nok done\n";
        assert_eq!(
            parse(out),
            Some(Figures {
                status: "completed".into(),
                downtime_ms: Some(12),
                total_ms: Some(3456),
                setup_ms: Some(7),
            })
        );
        let f = parse("# x: migration failed (boom): downtime -, total 5 ms, setup -").unwrap();
        assert_eq!(f.status, "failed (boom)");
        assert_eq!(
            (f.downtime_ms, f.total_ms, f.setup_ms),
            (None, Some(5), None)
        );
        assert_eq!(parse("# qemu: 1 passed\n"), None);
    }
}
