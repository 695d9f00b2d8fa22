// SPDX-License-Identifier: GPL-2.0
//! DMA commands byte for byte against guest RAM and device memory,
//! completion and interrupts, bad commands, unmapped IOVAs, the queue, the
//! 4 GiB boundary and the longest command.

use vfio_mig::{DeviceState, EventFd, OpenPath};

use crate::device::{bar0, dma, irq, SMALL};
use crate::dmautil::{
    expect_outcome, expect_reg, path_name, pin_ring_ok, queue, rd, run, run_ok, same, stamp,
    start_writer, wait, wait_writes, wr, Cmd, Ram, PAGE,
};
use crate::util::{expect_errno, expect_fire, expect_quiet, pattern, Ctx, Env, TResult};
use crate::{ensure, ensure_eq};

use super::{
    check_dma_power_on, clear_irq_status, expect_ram_still, fill_bar2, filled, go, read_bar2,
    set_state, writer_model, B0, B2, BASE, BASE_HI, EBUSY, EINVAL, SENTINEL, UNMAPPED,
};

fn copy(env: &Env, path: OpenPath) -> TResult {
    let p = path_name(path);
    let fx = env.open(&SMALL, path)?;
    let dev = fx.dev();
    check_dma_power_on(dev, p)?;
    let pages = SMALL.mem_size / PAGE + 16;
    let ram = Ram::map(dev, BASE_HI, pages, SENTINEL)?;
    let mut want = ram.snapshot()?;
    let mut mem = fill_bar2(dev, 0x31)?;
    let mut done = 0;

    // Device memory to guest RAM: unaligned both sides, across pages.
    let (g, d, n) = (0x567u64, 0x1234u64, 0x2345u64);
    let c = Cmd::to_guest(BASE_HI + g, d as u32, n as u32);
    run_ok(dev, &c)?;
    done += 1;
    want[g as usize..(g + n) as usize].copy_from_slice(&mem[d as usize..(d + n) as usize]);
    same(
        &ram.snapshot()?,
        &want,
        0,
        &format!("{p}: guest RAM after {c}"),
    )?;
    same(&read_bar2(dev)?, &mem, 0, &format!("{p}: BAR2 after {c}"))?;
    expect_reg(dev, dma::CMD, dma::CMD_TO_GUEST, &format!("{p}: after {c}"))?;
    expect_reg(dev, dma::COMPLETED, done, &format!("{p}: after {c}"))?;
    let st = rd(dev, bar0::IRQ_STATUS)?;
    ensure!(
        st & (dma::IRQ_DMA_DONE | dma::IRQ_DMA_ERROR) == dma::IRQ_DMA_DONE,
        "{p}: IRQ_STATUS {st:#x} after {c}, want DMA_DONE and not DMA_ERROR"
    );
    wr(dev, bar0::IRQ_STATUS, dma::IRQ_DMA_DONE)?;
    expect_reg(
        dev,
        bar0::IRQ_STATUS,
        0,
        &format!("{p}: after writing 1 to DMA_DONE"),
    )?;

    // All of device memory, to the end of BAR2, page aligned.
    let g = 8 * PAGE;
    let c = Cmd::to_guest(BASE_HI + g, 0, SMALL.mem_size as u32);
    run_ok(dev, &c)?;
    done += 1;
    want[g as usize..(g + SMALL.mem_size) as usize].copy_from_slice(&mem);
    same(
        &ram.snapshot()?,
        &want,
        0,
        &format!("{p}: guest RAM after {c}"),
    )?;

    // Guest RAM to device memory.
    let src: Vec<u8> = (0..0x3000u64).map(|i| pattern(i, 0x32)).collect();
    ram.write(0x30_000, &src)?;
    want[0x30_000..0x33_000].copy_from_slice(&src);
    let (g, d, n) = (0x30_007u64, 0x2_0001u64, 0x1801u64);
    let c = Cmd::from_guest(BASE_HI + g, d as u32, n as u32);
    run_ok(dev, &c)?;
    done += 1;
    mem[d as usize..(d + n) as usize].copy_from_slice(&src[7..7 + n as usize]);
    same(&read_bar2(dev)?, &mem, 0, &format!("{p}: BAR2 after {c}"))?;
    same(
        &ram.snapshot()?,
        &want,
        0,
        &format!("{p}: guest RAM after {c}"),
    )?;
    expect_reg(
        dev,
        dma::CMD,
        dma::CMD_FROM_GUEST,
        &format!("{p}: after {c}"),
    )?;

    // The last bytes of device memory.
    let (g, d, n) = (0x30_100u64, SMALL.mem_size - 0x100, 0x100u64);
    let c = Cmd::from_guest(BASE_HI + g, d as u32, n as u32);
    run_ok(dev, &c)?;
    done += 1;
    mem[d as usize..].copy_from_slice(&want[g as usize..(g + n) as usize]);
    same(&read_bar2(dev)?, &mem, 0, &format!("{p}: BAR2 after {c}"))?;

    // Fill: byte i of the range is byte i % 4 of the pattern.
    for (g, n, pat) in [
        (0x9003u64, 0x2001u64, 0x1122_3344u32),
        (0x4000, 1, 0xa1b2_c3d4),
        (0x4ffd, 6, 0xdead_beef),
        ((pages - 1) * PAGE, PAGE, 0x0102_0304),
    ] {
        let c = Cmd::fill(BASE_HI + g, n as u32, pat);
        run_ok(dev, &c)?;
        done += 1;
        want[g as usize..(g + n) as usize].copy_from_slice(&filled(pat, n as usize));
        same(
            &ram.snapshot()?,
            &want,
            0,
            &format!("{p}: guest RAM after {c}"),
        )?;
        expect_reg(dev, dma::CMD, dma::CMD_FILL, &format!("{p}: after {c}"))?;
    }
    same(
        &read_bar2(dev)?,
        &mem,
        0,
        &format!("{p}: BAR2 after the fills"),
    )?;
    expect_reg(dev, dma::COMPLETED, done, &format!("{p}: at the end"))?;
    expect_reg(dev, dma::ERROR, 0, &format!("{p}: at the end"))?;
    expect_reg(dev, dma::STATUS, dma::DONE, &format!("{p}: at the end"))?;
    let st = rd(dev, bar0::IRQ_STATUS)?;
    ensure!(
        st & (dma::IRQ_DMA_DONE | dma::IRQ_DMA_ERROR) == dma::IRQ_DMA_DONE,
        "{p}: IRQ_STATUS {st:#x} at the end, want DMA_DONE and not DMA_ERROR"
    );
    Ok(())
}

pub fn dma_copy_legacy(env: &Env) -> TResult {
    copy(env, OpenPath::Legacy)
}

pub fn dma_copy_iommufd(env: &Env) -> TResult {
    copy(env, OpenPath::Iommufd)
}

pub fn dma_irq(env: &Env) -> TResult {
    let fx = env.open(&SMALL, OpenPath::Legacy)?;
    let dev = fx.dev();
    let ram = Ram::map(dev, BASE, 2, SENTINEL)?;
    let msi = EventFd::new().ctx("eventfd")?;
    dev.set_irq_eventfd(irq::MSI, Some(msi.fd()))
        .ctx("install MSI eventfd")?;
    let good = Cmd::fill(BASE, 64, 0x0bad_cafe);
    let bad = Cmd::fill(BASE, 0, 0x0bad_cafe);
    let causes = dma::IRQ_DMA_DONE | dma::IRQ_DMA_ERROR;
    let mut irqs = 0;
    for (enable, c, cause) in [
        (causes, good, dma::IRQ_DMA_DONE),
        (causes, bad, dma::IRQ_DMA_ERROR),
        (dma::IRQ_DMA_DONE, good, dma::IRQ_DMA_DONE),
        (dma::IRQ_DMA_ERROR, bad, dma::IRQ_DMA_ERROR),
        (dma::IRQ_DMA_ERROR, good, dma::IRQ_DMA_DONE),
        (dma::IRQ_DMA_DONE, bad, dma::IRQ_DMA_ERROR),
        (0, good, dma::IRQ_DMA_DONE),
        (bar0::IRQ_DOORBELL, bad, dma::IRQ_DMA_ERROR),
    ] {
        let what = format!("{c} with IRQ_ENABLE {enable:#x}");
        clear_irq_status(dev)?;
        wr(dev, bar0::IRQ_ENABLE, enable)?;
        let r = run(dev, &c)?;
        expect_outcome(r, (cause == dma::IRQ_DMA_ERROR).then_some(EINVAL), &what)?;
        if enable & cause != 0 {
            expect_fire(&msi, &what)?;
            irqs += 1;
        } else {
            expect_quiet(&msi, &what)?;
        }
        expect_reg(dev, bar0::IRQ_STATUS, cause, &what)?;
        expect_reg(dev, bar0::IRQ_COUNT, irqs, &what)?;
    }
    expect_reg(dev, dma::COMPLETED, 8, "after 8 commands")?;
    let mut want = vec![SENTINEL; 2 * PAGE as usize];
    want[..64].copy_from_slice(&filled(0x0bad_cafe, 64));
    same(&ram.snapshot()?, &want, 0, "guest RAM")
}

pub fn dma_bad_commands(env: &Env) -> TResult {
    let fx = env.open(&SMALL, OpenPath::Legacy)?;
    let dev = fx.dev();
    let ram = Ram::map(dev, BASE, 4, SENTINEL)?;
    let mem = fill_bar2(dev, 0x33)?;
    let want = ram.snapshot()?;
    let size = SMALL.mem_size as u32;
    let unknown = |cmd| Cmd {
        cmd,
        iova: BASE,
        dev_off: 0,
        len: 64,
        pattern: 0x1234_5678,
    };
    let wrap = 0xffff_ffff_ffff_f000u64;
    let cases = [
        unknown(0),
        unknown(4),
        unknown(0x100 | dma::CMD_FILL),
        unknown(u32::MAX),
        Cmd::to_guest(BASE, 0, 0),
        Cmd::from_guest(BASE, 0, 0),
        Cmd::fill(BASE, 0, 0x1234_5678),
        Cmd::fill(BASE, dma::MAX_LEN + 1, 0x1234_5678),
        Cmd::fill(BASE, u32::MAX, 0x1234_5678),
        Cmd::to_guest(BASE, 0, dma::MAX_LEN + 1),
        Cmd::to_guest(BASE, size, 1),
        Cmd::to_guest(BASE, size - 4, 8),
        Cmd::to_guest(BASE, size - PAGE as u32 + 1, PAGE as u32),
        Cmd::to_guest(BASE, u32::MAX, 2),
        Cmd::from_guest(BASE, size, 1),
        Cmd::from_guest(BASE, size - 1, 2),
        Cmd::from_guest(BASE, u32::MAX - 1, 4),
        Cmd::fill(wrap, 0x2000, 0x1234_5678),
        Cmd::fill(u64::MAX, 2, 0x1234_5678),
        Cmd::to_guest(u64::MAX - 0xff, 0, 0x200),
        Cmd::from_guest(wrap + 0x800, 0, 0x1000),
    ];
    for (i, c) in cases.iter().enumerate() {
        let what = format!("bad command {i}: {c}");
        clear_irq_status(dev)?;
        let r = run(dev, c)?;
        expect_outcome(r, Some(EINVAL), &what)?;
        expect_reg(dev, dma::COMPLETED, i as u32 + 1, &what)?;
        let st = rd(dev, bar0::IRQ_STATUS)?;
        ensure!(
            st & (dma::IRQ_DMA_DONE | dma::IRQ_DMA_ERROR) == dma::IRQ_DMA_ERROR,
            "{what}: IRQ_STATUS {st:#x}, want DMA_ERROR and not DMA_DONE"
        );
        same(
            &ram.snapshot()?,
            &want,
            0,
            &format!("{what}: guest RAM (nothing written)"),
        )?;
        same(
            &read_bar2(dev)?,
            &mem,
            0,
            &format!("{what}: BAR2 (nothing written)"),
        )?;
    }
    // A good command clears DMA_ERROR.
    run_ok(dev, &Cmd::to_guest(BASE, size - 16, 16))?;
    expect_reg(dev, dma::ERROR, 0, "after a good command")
}

fn unmapped(env: &Env, path: OpenPath) -> TResult {
    let p = path_name(path);
    let errno = dma::unmapped_errno(path);
    let fx = env.open(&SMALL, path)?;
    let dev = fx.dev();
    let ram = Ram::map(dev, BASE, 4, SENTINEL)?;
    let mem = fill_bar2(dev, 0x34)?;
    let mut want = ram.snapshot()?;
    // Entirely unmapped, in all three directions: nothing written.
    for c in [
        Cmd::fill(UNMAPPED, 64, 0x1111_1111),
        Cmd::to_guest(UNMAPPED + 0x10, 0, PAGE as u32),
        Cmd::from_guest(UNMAPPED, 0, 2 * PAGE as u32),
        Cmd::fill(BASE - PAGE, 2 * PAGE as u32, 0x2222_2222),
        Cmd::to_guest(BASE - 8, 0, 16),
    ] {
        let what = format!("{p}: {c}");
        let r = run(dev, &c)?;
        expect_outcome(r, Some(errno), &what)?;
        same(&ram.snapshot()?, &want, 0, &format!("{what}: guest RAM"))?;
        same(&read_bar2(dev)?, &mem, 0, &format!("{what}: BAR2"))?;
    }
    // Running off the end of the mapping: the mapped part is written.
    let c = Cmd::fill(BASE + 3 * PAGE, 2 * PAGE as u32, 0x3344_5566);
    let what = format!("{p}: {c}");
    let r = run(dev, &c)?;
    expect_outcome(r, Some(errno), &what)?;
    want[3 * PAGE as usize..].copy_from_slice(&filled(0x3344_5566, PAGE as usize));
    same(
        &ram.snapshot()?,
        &want,
        0,
        &format!("{what}: guest RAM (the mapped page before the hole is written)"),
    )?;
    let c = Cmd::to_guest(BASE + 4 * PAGE - 0x100, 0, 0x200);
    let what = format!("{p}: {c}");
    let r = run(dev, &c)?;
    expect_outcome(r, Some(errno), &what)?;
    want[4 * PAGE as usize - 0x100..].copy_from_slice(&mem[..0x100]);
    same(&ram.snapshot()?, &want, 0, &format!("{what}: guest RAM"))?;
    same(&read_bar2(dev)?, &mem, 0, &format!("{what}: BAR2"))?;
    // The engine still works.
    run_ok(dev, &Cmd::fill(BASE, 4, 0x7777_7777))?;
    expect_reg(dev, dma::ERROR, 0, &format!("{p}: after a good command"))
}

pub fn dma_unmapped_legacy(env: &Env) -> TResult {
    unmapped(env, OpenPath::Legacy)
}

pub fn dma_unmapped_iommufd(env: &Env) -> TResult {
    unmapped(env, OpenPath::Iommufd)
}

pub fn dma_busy(env: &Env) -> TResult {
    let fx = env.open(&SMALL, OpenPath::Legacy)?;
    let dev = fx.dev();
    let ram = Ram::map(dev, BASE, 4, SENTINEL)?;
    let mut want = ram.snapshot()?;
    wr(dev, dma::CTRL, dma::CTRL_PAUSE)?;
    expect_reg(dev, dma::CTRL, dma::CTRL_PAUSE, "DMA_CTRL read back")?;
    let c = Cmd::fill(BASE + PAGE, PAGE as u32, 0xaaaa_5555);
    queue(dev, &c)?;
    expect_reg(
        dev,
        dma::STATUS,
        dma::QUEUED,
        "a command queued with PAUSE set",
    )?;
    expect_ram_still(&ram, "a paused command")?;
    same(
        &ram.snapshot()?,
        &want,
        0,
        "guest RAM under a paused command",
    )?;
    expect_reg(dev, dma::STATUS, dma::QUEUED, "still paused")?;
    expect_reg(dev, dma::COMPLETED, 0, "still paused")?;
    // A second command is refused and changes nothing.
    for cmd in [dma::CMD_TO_GUEST, dma::CMD_FILL, 0, 9] {
        expect_errno(
            dev.write32(B0, dma::CMD, cmd),
            EBUSY,
            &format!("write of DMA_CMD = {cmd} while a command is queued"),
        )?;
        expect_reg(
            dev,
            dma::CMD,
            dma::CMD_FILL,
            "DMA_CMD after the refused write",
        )?;
        expect_reg(dev, dma::STATUS, dma::QUEUED, "after the refused write")?;
        expect_reg(dev, dma::COMPLETED, 0, "after the refused write")?;
        expect_reg(dev, dma::ERROR, 0, "after the refused write")?;
    }
    // Clearing PAUSE runs the first command.
    wr(dev, dma::CTRL, 0)?;
    let r = wait(dev, "the command after clearing PAUSE")?;
    expect_outcome(r, None, "the command after clearing PAUSE")?;
    expect_reg(dev, dma::COMPLETED, 1, "after clearing PAUSE")?;
    want[PAGE as usize..2 * PAGE as usize].copy_from_slice(&filled(0xaaaa_5555, PAGE as usize));
    same(&ram.snapshot()?, &want, 0, "guest RAM after clearing PAUSE")?;
    // Without PAUSE, commands follow each other.
    for i in 0..3u64 {
        let c = Cmd::fill(BASE + 2 * PAGE + i * 8, 8, 0x0101_0101 * (i as u32 + 1));
        run_ok(dev, &c)?;
        want[(2 * PAGE + i * 8) as usize..(2 * PAGE + i * 8 + 8) as usize]
            .copy_from_slice(&filled(c.pattern, 8));
    }
    expect_reg(dev, dma::COMPLETED, 4, "at the end")?;
    same(&ram.snapshot()?, &want, 0, "guest RAM at the end")
}

pub fn dma_quiesce(env: &Env) -> TResult {
    let fx = env.open(&SMALL, OpenPath::Legacy)?;
    let dev = fx.dev();
    let ram = Ram::map(dev, BASE, 256, SENTINEL)?;
    go(
        dev,
        &[
            DeviceState::Running,
            DeviceState::Setup,
            DeviceState::PreCopy,
        ],
    )?;
    let c = Cmd::fill(BASE, 256 * PAGE as u32, 0x5151_a2a2);
    queue(dev, &c)?;
    set_state(dev, DeviceState::StopNCopy)?;
    let st = rd(dev, dma::STATUS)?;
    ensure!(
        st == dma::QUEUED || st == dma::DONE,
        "DMA_STATUS {st} right after STOPNCOPY, want QUEUED or DONE"
    );
    let done = rd(dev, dma::COMPLETED)?;
    expect_ram_still(&ram, "STOPNCOPY with a command in flight")?;
    expect_reg(dev, dma::STATUS, st, "STOPNCOPY, after a while")?;
    expect_reg(dev, dma::COMPLETED, done, "STOPNCOPY, after a while")?;
    expect_errno(
        dev.write32(B0, dma::CMD, dma::CMD_FILL),
        EBUSY,
        "write of DMA_CMD while quiesced",
    )?;
    set_state(dev, DeviceState::Failed)?;
    let r = wait(dev, "the command after MIGRATION_FAILED")?;
    expect_outcome(r, None, "the command after MIGRATION_FAILED")?;
    same(
        &ram.snapshot()?,
        &filled(c.pattern, 256 * PAGE as usize),
        0,
        "guest RAM after the command",
    )
}

/// Commands, the ring, the writer and a dirty query across the 4 GiB
/// boundary of the IOVA space (the `_LO`/`_HI` halves carry).
pub fn dma_cross_4g(env: &Env) -> TResult {
    const START: u64 = 0xfff0_0000; // 512 pages, up to 4 GiB + 1 MiB
    let fx = env.open(&SMALL, OpenPath::Legacy)?;
    let dev = fx.dev();
    let ram = Ram::map(dev, START, 512, SENTINEL)?;
    let mem = fill_bar2(dev, 0x36)?;
    go(dev, &[DeviceState::Running, DeviceState::Setup])?;
    let mut want = ram.snapshot()?;
    let at = |iova: u64| (iova - START) as usize;
    let c = Cmd::fill(0xffff_f800, 0x1000, 0x4444_3333);
    run_ok(dev, &c)?;
    want[at(c.iova)..at(c.iova) + 0x1000].copy_from_slice(&filled(c.pattern, 0x1000));
    let c = Cmd::to_guest(0xffff_fff0, 0x10, 0x20);
    run_ok(dev, &c)?;
    want[at(c.iova)..at(c.iova) + 0x20].copy_from_slice(&mem[0x10..0x30]);
    same(&ram.snapshot()?, &want, 0, "guest RAM across 4 GiB")?;
    // FROM_GUEST across the boundary.
    let c = Cmd::from_guest(0xffff_fffc, 0x100, 8);
    run_ok(dev, &c)?;
    let mut got = [0u8; 8];
    dev.read_region(B2, 0x100, &mut got).ctx("BAR2")?;
    same(
        &got,
        &want[at(c.iova)..at(c.iova) + 8],
        0x100,
        "BAR2 from across 4 GiB",
    )?;
    // The ring and the writer across it.
    pin_ring_ok(dev, 0xffff_e000, 4, true)?;
    start_writer(dev, 0xffff_d000, 4, 500)?;
    wait_writes(dev, 4, "the writer across 4 GiB")?;
    wr(dev, dma::BG_CTRL, 0)?;
    let n = rd(dev, dma::BG_WRITES)? as u64;
    let model = writer_model(4, &[(0, n)]);
    for (k, c) in model.iter().enumerate() {
        let off = at(0xffff_d000) as u64 + k as u64 * PAGE;
        let s = ram.read(off, dma::BG_STAMP_LEN as u64)?;
        same(
            &s,
            &stamp(c.unwrap_or(0), k as u32),
            START + off,
            &format!("writer stamp in page {k} from 0xffffd000"),
        )?;
    }
    // Pages 253..=257 of the RAM: writer 253..257, the fills 255..257,
    // the ring 254..258.
    let d = dev.dirty_bitmap(START, 512).ctx("dirty query")?;
    let bits: Vec<u64> = (0..512u64)
        .filter(|k| d.words[(k / 64) as usize] & (1 << (k % 64)) != 0)
        .collect();
    ensure_eq!(
        bits,
        vec![253, 254, 255, 256, 257],
        "dirty pages across 4 GiB"
    );
    let d = dev.dirty_bitmap(START, 512).ctx("dirty query")?;
    let bits: Vec<u64> = (0..512u64)
        .filter(|k| d.words[(k / 64) as usize] & (1 << (k % 64)) != 0)
        .collect();
    ensure_eq!(bits, vec![254, 255, 256, 257], "second query: the ring");
    Ok(())
}

/// `LEN` of exactly 64 MiB is accepted, one byte more is not. On iommufd
/// an unmapped page fails with ENOENT, not EINVAL, which tells "the length
/// was accepted and the copy ran into the hole" from "refused".
pub fn dma_max_len(env: &Env) -> TResult {
    let fx = env.open(&SMALL, OpenPath::Iommufd)?;
    let dev = fx.dev();
    let ram = Ram::map(dev, BASE_HI, 1, SENTINEL)?;
    let c = Cmd::fill(BASE_HI, dma::MAX_LEN + 1, 0x7172_7374);
    let r = run(dev, &c)?;
    expect_outcome(r, Some(EINVAL), &c.to_string())?;
    same(
        &ram.snapshot()?,
        &[SENTINEL; PAGE as usize],
        0,
        &format!("{c}: guest RAM"),
    )?;
    let c = Cmd::fill(BASE_HI, dma::MAX_LEN, 0x7172_7374);
    let r = run(dev, &c)?;
    let errno = dma::unmapped_errno(OpenPath::Iommufd);
    expect_outcome(r, Some(errno), &format!("{c} over one mapped page"))?;
    same(
        &ram.snapshot()?,
        &filled(c.pattern, PAGE as usize),
        0,
        &format!("{c}: the mapped page"),
    )
}
