// SPDX-License-Identifier: GPL-2.0
//! The checks after a migration: the destination bit for bit against the
//! source (guest RAM, BAR0, config space, BAR2), with what a differing page
//! held, and the destination's background writer carrying on.

use std::fmt;
use std::time::Duration;

use super::report::WriterCheck;
use super::vcpu::CPU_MAGIC;
use super::{Vm, PAGE};
use crate::abi::bar0::{self, BG_MAGIC};
use crate::error::{Error, Result};
use crate::mem::{GuestMemory, MemoryDiff};
use crate::sample::DeviceSnapshot;
use crate::units::human_ms;

/// Every difference between the two sides, the guest RAM's first: empty
/// when the destination is the source, bit for bit.
pub(super) fn differences(
    src: &Vm,
    dst: &Vm,
    src_snap: &DeviceSnapshot,
    dst_snap: &DeviceSnapshot,
) -> Result<Vec<String>> {
    let mut problems = src_snap.differences(dst_snap);
    if let Some(d) = src.ram.compare(&dst.ram)? {
        problems.insert(0, describe_ram_diff(src, dst, &d));
    }
    Ok(problems)
}

/// If the destination's writer is enabled (in `dst_snap`) and `settle` is
/// not zero: `BG_WRITES` must advance within `settle`.
pub(super) fn check_writer(
    dst: &Vm,
    dst_snap: &DeviceSnapshot,
    settle: Duration,
) -> Result<Option<WriterCheck>> {
    let writer_on = dst_snap
        .regs
        .get((bar0::BG_CTRL / 4) as usize)
        .is_some_and(|c| c & bar0::BG_ENABLE != 0);
    if !writer_on || settle.is_zero() {
        return Ok(None);
    }
    let regs = dst.regs();
    let before = regs.read(bar0::BG_WRITES)?;
    std::thread::sleep(settle);
    let after = regs.read(bar0::BG_WRITES)?;
    if after == before {
        return Err(Error::Invalid(format!(
            "the destination's background writer does not carry on: BG_WRITES stays at \
             {before} for {} (BG_CTRL {:#x}, BG_ERROR {})",
            human_ms(settle),
            regs.read(bar0::BG_CTRL)?,
            regs.read(bar0::BG_ERROR)?
        )));
    }
    Ok(Some(WriterCheck {
        before,
        after,
        settle,
    }))
}

/// What a page holds, from its first 16 bytes, for mismatch reports.
pub(super) fn page_kind(ram: &GuestMemory, page: usize) -> String {
    let mut head = [0u8; 16];
    if ram.read_at(page * PAGE, &mut head).is_err() {
        return "unreadable".into();
    }
    let seq = u64::from_le_bytes(head[0..8].try_into().unwrap_or_default());
    let magic = u32::from_le_bytes(head[12..16].try_into().unwrap_or_default());
    match magic {
        BG_MAGIC => format!("background-writer stamp, BG_WRITES {seq}"),
        CPU_MAGIC => format!("CPU workload write #{seq}"),
        _ => format!("{}", Hex(&head)),
    }
}

struct Hex<'a>(&'a [u8]);

impl fmt::Display for Hex<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

fn describe_ram_diff(src: &Vm, dst: &Vm, d: &MemoryDiff) -> String {
    let page = d.first_offset / PAGE;
    let listed: Vec<String> = d.first_pages.iter().map(|p| p.to_string()).collect();
    format!(
        "guest RAM differs first at offset {:#x} (page {page}, IOVA {:#x}) in {} page(s) \
         (pages {}{}); that page on the source: {}; on the destination: {}",
        d.first_offset,
        src.iova + d.first_offset as u64,
        d.pages,
        listed.join(" "),
        if d.pages > d.first_pages.len() {
            " ..."
        } else {
            ""
        },
        page_kind(&src.ram, page),
        page_kind(&dst.ram, page)
    )
}
