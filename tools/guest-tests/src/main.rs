// SPDX-License-Identifier: GPL-2.0
//! `vfio-mig-tests`: the in-guest test suite of vfio_mig_sample.ko.
//!
//! Runs as root in a guest where `modprobe mdev; insmod vfio_mig_sample.ko`
//! has been done. Each test is a named `fn(&Env) -> Result<(), String>`; it
//! creates the mdevs it needs with fresh UUIDs and removes them on the way
//! out (guards). Output: one line per test (`ok NAME`, `FAIL NAME: why`,
//! `skip NAME: why`) and a last line `N passed, N failed, N skipped`; the
//! exit code is 1 if anything failed.
//!
//! Tests named `mtty_*` check the library's VFIO plumbing against the C
//! sample mtty and skip when it is not loaded.
//!
//! The suite is a deliberately independent oracle: `src/device.rs` writes
//! down by hand what `Documentation/` promises (regions, registers, config
//! space, the migration region's layout, stream sizes, the state table)
//! instead of taking the numbers from `rust/logic/abi.rs`, which the module
//! and the `vfio-mig` library share. A number wrong there would be wrong on
//! both sides of a check that used it, and the check would pass; against
//! the hand-written copy it fails. Keep it that way: do not import
//! `vfio_mig::abi` here.

mod device;
mod dmautil;
mod t_bars;
mod t_config;
mod t_dirty;
mod t_dma;
mod t_hardening;
mod t_irq;
mod t_migration;
mod t_misc;
mod t_mmap;
mod t_mtty;
mod t_sysfs;
mod t_v2;
mod t_vfio;
mod util;

use std::io::Write;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use util::{Env, TResult, SKIP_MARK};

/// A test: its name and body.
pub struct Test {
    name: &'static str,
    run: fn(&Env) -> TResult,
}

macro_rules! tests {
    ($($module:ident :: $name:ident),* $(,)?) => {
        &[$(Test { name: stringify!($name), run: $module::$name }),*]
    };
}

/// Every test, in the order they run. The module-unload test is last: a
/// driver that wrongly lets itself be unloaded takes the rest down with it.
const TESTS: &[Test] = tests![
    t_sysfs::sysfs_types_listed,
    t_sysfs::sysfs_attrs_small,
    t_sysfs::sysfs_attrs_large,
    t_sysfs::sysfs_available_after_create,
    t_sysfs::sysfs_fill_small,
    t_sysfs::sysfs_fill_large,
    t_sysfs::sysfs_fill_mixed,
    t_sysfs::sysfs_create_existing_uuid,
    t_sysfs::sysfs_create_bad_uuid,
    t_sysfs::sysfs_remove_nonexistent,
    t_vfio::open_legacy,
    t_vfio::open_iommufd,
    t_vfio::get_info_bad_argsz,
    t_vfio::region_info_small,
    t_vfio::region_info_large,
    t_vfio::region_info_iommufd,
    t_vfio::region_info_caps_argsz,
    t_vfio::region_info_bad,
    t_vfio::irq_info,
    t_vfio::irq_info_bad,
    t_vfio::unknown_ioctl,
    t_irq::set_irqs_eventfd,
    t_irq::set_irqs_bad,
    t_irq::set_irqs_msi_mask,
    t_config::config_ids_small,
    t_config::config_ids_large,
    t_config::config_read_only,
    t_config::config_bar_sizing_small,
    t_config::config_bar_sizing_large,
    t_config::config_bar_address,
    t_config::config_writable,
    t_config::config_unlisted_zero,
    t_config::config_bounds,
    t_bars::bar0_registers,
    t_bars::bar0_scratch,
    t_bars::bar0_read_only,
    t_bars::bar0_bad_access,
    t_bars::bar0_unimplemented,
    t_bars::bar2_pattern_small,
    t_bars::bar2_pattern_large,
    t_bars::bar2_bounds,
    t_bars::empty_regions,
    t_irq::irq_doorbell_intx,
    t_irq::irq_intx_automask,
    t_irq::irq_intx_mask,
    t_irq::irq_disabled,
    t_irq::irq_intx_disable_bit,
    t_irq::irq_msi_preferred,
    t_irq::irq_eventfd_removed,
    t_irq::irq_loopback,
    t_misc::reset_power_on,
    t_misc::reset_keeps_eventfds,
    t_misc::reopen_power_on,
    t_misc::concurrent_access,
    t_migration::migration_region_discovery,
    t_migration::migration_field_access,
    t_migration::migration_transitions,
    t_migration::migration_actions_by_state,
    t_migration::migration_roundtrip_chunks,
    t_migration::migration_roundtrip_threshold,
    t_migration::migration_roundtrip_large,
    t_migration::migration_precopy_dirty,
    t_migration::migration_corrupt_stream,
    t_migration::migration_failed_cancelled,
    t_migration::migration_quiesced,
    t_migration::migration_reset_close,
    t_migration::migration_concurrent,
    t_migration::migration_dirty_query,
    t_migration::migration_cli,
    t_mmap::mmap_get_buffer,
    t_mmap::mmap_restore,
    t_mmap::mmap_refused,
    t_mmap::mmap_zeroed,
    t_mmap::mmap_dirty_bitmap,
    t_mmap::mmap_cli,
    t_v2::v2_discovery,
    t_v2::v2_roundtrip,
    t_v2::v2_read_faults,
    t_v2::v2_region_interop,
    t_v2::v2_precopy,
    t_v2::v2_one_interface,
    t_v2::v2_stale_files,
    t_v2::v2_destination_setup,
    t_v2::v2_corrupt_stream,
    t_v2::v2_dma_logging,
    t_dma::dma_copy_legacy,
    t_dma::dma_copy_iommufd,
    t_dma::dma_irq,
    t_dma::dma_bad_commands,
    t_dma::dma_unmapped_legacy,
    t_dma::dma_unmapped_iommufd,
    t_dma::dma_busy,
    t_dma::dma_quiesce,
    t_dma::dma_cross_4g,
    t_dma::dma_max_len,
    t_dma::ring_pin,
    t_dma::ring_pin_errors,
    t_dma::writer_stamps,
    t_dma::writer_bad_settings,
    t_dma::writer_unmapped,
    t_dma::writer_quiesce,
    t_dirty::dirty_bits_legacy,
    t_dirty::dirty_bits_iommufd,
    t_dirty::dirty_large,
    t_dirty::dirty_not_reported,
    t_dirty::dirty_bad_queries,
    t_dirty::dirty_staged_chunk,
    t_dirty::dirty_writer,
    t_dirty::dirty_stale_bitmap,
    t_dirty::dirty_concurrent,
    t_dma::unmap_ring,
    t_dma::unmap_queued,
    t_dma::unmap_writer,
    t_dma::unmap_precopy,
    t_dma::unmap_concurrent,
    t_dma::lifecycle_close,
    t_dma::lifecycle_reset,
    t_dma::lifecycle_remove,
    t_dma::dma_migrate,
    t_hardening::hardening_stale_areas,
    t_hardening::hardening_ring_frozen,
    t_hardening::hardening_dirty_log_bound,
    t_hardening::hardening_failed_copies,
    t_hardening::hardening_unmap_races,
    t_hardening::hardening_unmap_during_release,
    t_hardening::hardening_intx_level,
    t_hardening::hardening_register_record,
    t_mtty::mtty_sysfs,
    t_mtty::mtty_legacy,
    t_mtty::mtty_iommufd,
    t_mtty::mtty_dma_map,
    t_dma::lifecycle_rmmod,
    t_dma::dma_pinned_none_left,
    t_misc::rmmod_busy,
];

/// A test that runs longer than this is reported as failed and the run ends
/// (a hung driver would otherwise stall the guest until its own timeout).
const TEST_TIMEOUT: Duration = Duration::from_secs(180);

/// What the watchdog needs to print a final report.
#[derive(Default)]
struct Progress {
    current: Option<(&'static str, Instant)>,
    passed: u32,
    failed: u32,
    skipped: u32,
}

fn start_watchdog(progress: Arc<Mutex<Progress>>) {
    std::thread::spawn(move || loop {
        std::thread::sleep(Duration::from_secs(1));
        let p = progress.lock().unwrap();
        if let Some((name, start)) = p.current {
            if start.elapsed() > TEST_TIMEOUT {
                println!("FAIL {name}: timed out after {TEST_TIMEOUT:?}");
                println!(
                    "{} passed, {} failed, {} skipped",
                    p.passed,
                    p.failed + 1,
                    p.skipped
                );
                let _ = std::io::stdout().flush();
                std::process::exit(1);
            }
        }
    });
}

fn usage() -> &'static str {
    "usage: vfio-mig-tests [--filter SUBSTR[,SUBSTR...]] [--list] [--time] [--module-name NAME]"
}

fn main() -> ExitCode {
    let mut filter: Option<String> = None;
    let mut list = false;
    let mut time = false;
    let mut module = device::PARENT.to_string();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--list" => list = true,
            "--time" => time = true,
            "--filter" | "--module-name" => {
                let Some(v) = args.next() else {
                    eprintln!("{a} needs a value\n{}", usage());
                    return ExitCode::from(2);
                };
                if a == "--filter" {
                    filter = Some(v);
                } else {
                    module = v;
                }
            }
            "-h" | "--help" => {
                println!("{}", usage());
                return ExitCode::SUCCESS;
            }
            _ => {
                eprintln!("unknown argument {a}\n{}", usage());
                return ExitCode::from(2);
            }
        }
    }

    let selected: Vec<&Test> = TESTS
        .iter()
        .filter(|t| {
            filter
                .as_deref()
                .is_none_or(|f| f.split(',').any(|f| t.name.contains(f)))
        })
        .collect();
    if list {
        for t in &selected {
            println!("{}", t.name);
        }
        return ExitCode::SUCCESS;
    }

    let env = Env {
        parent: vfio_mig::Parent::new(&module),
        module,
    };
    if !env.parent.dir().exists() {
        eprintln!(
            "warning: {} does not exist: is the module loaded?",
            env.parent.dir().display()
        );
    }
    // Keep panics to one line in our output.
    std::panic::set_hook(Box::new(|_| {}));

    let progress = Arc::new(Mutex::new(Progress::default()));
    start_watchdog(Arc::clone(&progress));
    for t in selected {
        progress.lock().unwrap().current = Some((t.name, Instant::now()));
        let started = Instant::now();
        let r = catch_unwind(AssertUnwindSafe(|| (t.run)(&env)));
        let elapsed = started.elapsed();
        // Print under the lock, so the watchdog never interleaves.
        let mut p = progress.lock().unwrap();
        p.current = None;
        if time {
            println!("time {} {} ms", t.name, elapsed.as_millis());
        }
        match r {
            Ok(Ok(())) => {
                p.passed += 1;
                println!("ok {}", t.name);
            }
            Ok(Err(e)) if e.starts_with(SKIP_MARK) => {
                p.skipped += 1;
                println!("skip {}: {}", t.name, &e[SKIP_MARK.len()..]);
            }
            Ok(Err(e)) => {
                p.failed += 1;
                println!("FAIL {}: {}", t.name, e.replace('\n', " "));
            }
            Err(panic) => {
                p.failed += 1;
                let msg = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_else(|| "unknown panic".into());
                println!("FAIL {}: panicked: {msg}", t.name);
            }
        }
        let _ = std::io::stdout().flush();
    }
    let p = progress.lock().unwrap();
    let (passed, failed, skipped) = (p.passed, p.failed, p.skipped);
    println!("{passed} passed, {failed} failed, {skipped} skipped");
    if failed > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}
