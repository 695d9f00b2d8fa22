// SPDX-License-Identifier: GPL-2.0
//! The DMA state in the migration stream.

use vfio_mig::SaveOptions;
use vfio_mig::{DeviceState, OpenPath};

use crate::device::{dma, mig, SMALL};
use crate::dmautil::{
    expect_outcome, expect_pinned_total, expect_reg, pin_ring_ok, pinned_total, queue, rd, same,
    start_writer, wait, wait_writes, wr, Cmd, Ram, PAGE,
};
use crate::ensure;
use crate::util::{Ctx, Env, TResult};

use super::{expect_ram_still, expect_writer_runs, fill_bar2, set_state, BASE, SENTINEL};

pub fn dma_migrate(env: &Env) -> TResult {
    let b0 = pinned_total()?;
    let a = env.open(&SMALL, OpenPath::Legacy)?;
    let c = env.open(&SMALL, OpenPath::Legacy)?;
    let (src, dst) = (a.dev(), c.dev());
    let ram_a = Ram::map(src, BASE, 32, SENTINEL)?;
    let ram_c = Ram::map(dst, BASE, 32, SENTINEL)?;
    let mem = fill_bar2(src, 0x35)?;
    // A command queued behind PAUSE, the writer, a writable ring.
    let cmd = Cmd::to_guest(BASE + 20 * PAGE + 0x10, 0x3000, 0x1ff0);
    wr(src, dma::CTRL, dma::CTRL_PAUSE)?;
    queue(src, &cmd)?;
    start_writer(src, BASE, 4, 100)?;
    pin_ring_ok(src, BASE + 8 * PAGE, 2, true)?;
    wait_writes(src, 2, "source writer")?;
    let mut stream = Vec::new();
    src.save_to(&mut stream, SaveOptions::default())
        .ctx("save the source")?;
    let saved: Vec<u32> = dma::REGS
        .iter()
        .map(|(off, _)| rd(src, *off))
        .collect::<Result<_, _>>()?;
    let ram_a_saved = ram_a.snapshot()?;
    // Restore; nothing touches the destination's RAM before it runs.
    set_state(dst, DeviceState::Resume)?;
    for ch in stream.chunks(64 << 10) {
        dst.set_buffer(ch, mig::DATA_OFF).ctx("set buffer")?;
    }
    let src_pinned = rd(src, dma::PINNED_PAGES)? as u64;
    expect_pinned_total(
        b0 + src_pinned,
        "destination in RESUME: nothing pinned for it",
    )?;
    set_state(dst, DeviceState::ResumeCompleted)?;
    expect_reg(
        dst,
        dma::PINNED_PAGES,
        2,
        "destination after RESUME_COMPLETED",
    )?;
    expect_reg(
        dst,
        dma::RING_CTRL,
        dma::RING_PINNED | dma::RING_WRITABLE,
        "destination after RESUME_COMPLETED",
    )?;
    expect_pinned_total(b0 + src_pinned + 2, "destination ring pinned")?;
    expect_ram_still(&ram_c, "destination in RESUME_COMPLETED")?;
    ensure!(
        ram_c.snapshot()?.iter().all(|&x| x == SENTINEL),
        "destination RAM written before the destination ran"
    );
    set_state(dst, DeviceState::Running)?;
    // The settings arrived.
    for (i, (off, name)) in dma::REGS.iter().enumerate() {
        if matches!(
            *off,
            dma::BG_WRITES
                | dma::BG_CURSOR
                | dma::COMPLETED
                | dma::STATUS
                | dma::ERROR
                | dma::PINNED_PAGES
        ) {
            continue;
        }
        expect_reg(
            dst,
            *off,
            saved[i],
            &format!("destination {name} vs the source's"),
        )?;
    }
    expect_reg(
        dst,
        dma::STATUS,
        dma::QUEUED,
        "destination: the paused command",
    )?;
    // The writer runs on the destination's RAM.
    expect_writer_runs(dst, 5, "destination writer")?;
    for k in 0..4u32 {
        let s = ram_c.read(k as u64 * PAGE + 8, 8)?;
        let mut want = k.to_le_bytes().to_vec();
        want.extend(dma::BG_MAGIC.to_le_bytes());
        same(
            &s,
            &want,
            k as u64 * PAGE + 8,
            &format!("destination writer stamp in page {k}"),
        )?;
    }
    // The paused command runs on the destination's RAM.
    wr(dst, dma::CTRL, 0)?;
    let r = wait(dst, "the migrated command")?;
    expect_outcome(r, None, "the migrated command")?;
    let g = (20 * PAGE + 0x10) as usize;
    same(
        &ram_c.read(g as u64, cmd.len as u64)?,
        &mem[0x3000..0x3000 + cmd.len as usize],
        g as u64,
        "destination RAM written by the migrated command",
    )?;
    same(
        &ram_a.snapshot()?,
        &ram_a_saved,
        0,
        "source RAM after the save",
    )?;
    wr(dst, dma::BG_CTRL, 0)?;
    drop(c);
    drop(a);
    expect_pinned_total(b0, "after closing both")
}
