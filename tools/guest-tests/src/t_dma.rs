// SPDX-License-Identifier: GPL-2.0
//! The DMA engine (Documentation/device.rst, "DMA engine"): commands byte
//! for byte against guest RAM and device memory, completion and
//! interrupts, bad commands, unmapped IOVAs, the queue; the ring and the
//! pinned-page counts; the background writer; unmaps under a pinned ring,
//! a queued command and the writer; close, reset, mdev removal and rmmod
//! during a migration; the DMA state in the migration stream.
//!
//! Guest RAM is a memfd the test reads directly, so every check compares
//! the bytes the device should have moved with the bytes it moved.

use std::time::{Duration, Instant};

use vfio_mig::migration::SaveOptions;
use vfio_mig::{Device, DeviceState, EventFd, OpenPath};

use crate::device::{bar0, dma, irq, mig, region, SMALL};
use crate::dmautil::{
    changed_pages, expect_errno_reg, expect_outcome, expect_pinned_total, expect_reg, path_name,
    pin_ring, pin_ring_ok, pinned_total, queue, rd, run, run_ok, same, stamp, start_writer, wait,
    wait_writes, wr, wr_iova, Cmd, Ram, DMA_TIMEOUT, PAGE, STILL,
};
use crate::util::{expect_errno, expect_fire, expect_quiet, pattern, Ctx, Env, TResult};
use crate::{ensure, ensure_eq};

const B0: u32 = region::BAR0;
const B2: u32 = region::BAR2;
const EINVAL: i32 = libc::EINVAL;
const EBUSY: i32 = libc::EBUSY;
const ECANCELED: i32 = libc::ECANCELED;

/// Where most tests map their guest RAM.
const BASE: u64 = 0x10_0000;
/// An IOVA above 4 GiB: the `_HI` halves matter.
const BASE_HI: u64 = 0x1_2340_0000;
/// An IOVA no test maps.
const UNMAPPED: u64 = 0x4000_0000;
/// Fill of guest RAM the device has not written.
const SENTINEL: u8 = 0x5a;

// ---------------------------------------------------------------------------
// Helpers

/// Every DMA register reads 0 (power-on, reset, reopen).
pub fn check_dma_power_on(dev: &Device, what: &str) -> TResult {
    for (off, _) in dma::REGS {
        expect_reg(dev, off, 0, &format!("{what}: power-on"))?;
    }
    Ok(())
}

/// Writes a distinct pattern over all of device memory; returns it.
fn fill_bar2(dev: &Device, seed: u8) -> Result<Vec<u8>, String> {
    let mem: Vec<u8> = (0..SMALL.mem_size).map(|i| pattern(i, seed)).collect();
    dev.write_region(B2, 0, &mem).ctx("fill device memory")?;
    Ok(mem)
}

fn read_bar2(dev: &Device) -> Result<Vec<u8>, String> {
    let mut b = vec![0u8; SMALL.mem_size as usize];
    dev.read_region(B2, 0, &mut b).ctx("read device memory")?;
    Ok(b)
}

/// `len` bytes of a FILL with `pat`.
fn filled(pat: u32, len: usize) -> Vec<u8> {
    let p = pat.to_le_bytes();
    (0..len).map(|i| p[i % 4]).collect()
}

/// Clears the engine's interrupt causes (RW1C).
fn clear_irq_status(dev: &Device) -> TResult {
    wr(
        dev,
        bar0::IRQ_STATUS,
        dma::IRQ_DMA_DONE | dma::IRQ_DMA_ERROR | bar0::IRQ_DOORBELL,
    )
}

/// Asserts that guest RAM does not change over [`STILL`].
fn expect_ram_still(ram: &Ram, what: &str) -> TResult {
    let a = ram.snapshot()?;
    std::thread::sleep(STILL);
    let b = ram.snapshot()?;
    let ch = changed_pages(&a, &b);
    ensure!(
        ch.is_empty(),
        "{what}: guest RAM pages {ch:?} changed over {STILL:?}"
    );
    Ok(())
}

/// Asserts that the writer does not write (RAM and `BG_WRITES` still).
fn expect_writer_still(dev: &Device, ram: &Ram, what: &str) -> TResult {
    let w = rd(dev, dma::BG_WRITES)?;
    expect_ram_still(ram, what)?;
    expect_reg(dev, dma::BG_WRITES, w, &format!("{what}: after {STILL:?}"))
}

/// Waits until the writer advances by `n` page writes.
fn expect_writer_runs(dev: &Device, n: u32, what: &str) -> Result<u32, String> {
    let w = rd(dev, dma::BG_WRITES)?;
    wait_writes(dev, w + n, what)
}

fn set_state(dev: &Device, s: DeviceState) -> TResult {
    dev.set_state(s).map_err(|e| e.to_string())
}

fn go(dev: &Device, path: &[DeviceState]) -> TResult {
    path.iter().try_for_each(|s| set_state(dev, *s))
}

/// Which page of a writer's range holds which count after the given
/// sessions: each session `(first, n)` starts at page 0 with count
/// `first + 1` and makes `n` writes.
fn writer_model(pages: u32, sessions: &[(u64, u64)]) -> Vec<Option<u64>> {
    let mut m = vec![None; pages as usize];
    for &(first, n) in sessions {
        for j in 0..n {
            m[(j % pages as u64) as usize] = Some(first + j + 1);
        }
    }
    m
}

/// Checks guest RAM byte for byte: the writer's range starts at page
/// `first` and `model` says which count each of its pages holds; every
/// other byte is [`SENTINEL`].
fn check_stamps(ram: &Ram, first: u64, model: &[Option<u64>], what: &str) -> TResult {
    for page in 0..ram.pages() {
        let got = ram.read(page * PAGE, PAGE)?;
        let mut want = vec![SENTINEL; PAGE as usize];
        let mut c = None;
        if page >= first && page < first + model.len() as u64 {
            let k = page - first;
            c = model[k as usize];
            if let Some(c) = c {
                want[..dma::BG_STAMP_LEN].copy_from_slice(&stamp(c, k as u32));
            }
        }
        same(
            &got,
            &want,
            page * PAGE,
            &format!("{what}: guest page {page} (writer range from page {first}, stamp {c:?})"),
        )?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Commands

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

// ---------------------------------------------------------------------------
// The ring

pub fn ring_pin(env: &Env) -> TResult {
    let b0 = pinned_total()?;
    for path in [OpenPath::Legacy, OpenPath::Iommufd] {
        let p = path_name(path);
        let a = env.open(&SMALL, path)?;
        let dev = a.dev();
        let ram = Ram::map(dev, BASE, 16, SENTINEL)?;
        for off in [dma::RING_CTRL, dma::RING_ERROR, dma::PINNED_PAGES] {
            expect_reg(dev, off, 0, &format!("{p}: power-on"))?;
        }
        pin_ring_ok(dev, BASE, 4, true)?;
        expect_reg(dev, dma::RING_ERROR, 0, &format!("{p}: after a good pin"))?;
        expect_pinned_total(b0 + 4, &format!("{p}: 4 pages pinned writable"))?;
        // Writing RING_CTRL again releases, then pins the new ring.
        pin_ring_ok(dev, BASE + 2 * PAGE, 8, false)?;
        expect_pinned_total(b0 + 8, &format!("{p}: re-pinned 8 pages read-only"))?;
        pin_ring_ok(dev, BASE + 15 * PAGE, 1, true)?;
        expect_pinned_total(b0 + 1, &format!("{p}: re-pinned 1 page"))?;
        wr(dev, dma::RING_CTRL, 0)?;
        expect_reg(dev, dma::RING_CTRL, 0, &format!("{p}: unpinned"))?;
        expect_reg(dev, dma::PINNED_PAGES, 0, &format!("{p}: unpinned"))?;
        expect_pinned_total(b0, &format!("{p}: unpinned"))?;
        // The largest ring.
        let big = Ram::map(dev, BASE_HI, dma::RING_MAX_PAGES as u64, 0)?;
        pin_ring_ok(dev, BASE_HI, dma::RING_MAX_PAGES, true)?;
        expect_pinned_total(b0 + 512, &format!("{p}: 512 pages"))?;
        // Two devices: the debugfs count is the module's.
        let b = env.open(&SMALL, path)?;
        let _ram_b = Ram::map(b.dev(), BASE, 8, 0)?;
        pin_ring_ok(b.dev(), BASE + PAGE, 5, false)?;
        expect_pinned_total(b0 + 517, &format!("{p}: two devices, 512 + 5 pages"))?;
        expect_reg(dev, dma::PINNED_PAGES, 512, &format!("{p}: first device"))?;
        drop(b);
        expect_pinned_total(b0 + 512, &format!("{p}: after closing the second device"))?;
        wr(dev, dma::RING_CTRL, 0)?;
        expect_pinned_total(b0, &format!("{p}: all unpinned"))?;
        // Pinning changes no guest memory.
        ensure!(
            ram.snapshot()?.iter().all(|&b| b == SENTINEL),
            "{p}: pinning changed guest RAM"
        );
        drop(big);
    }
    expect_pinned_total(b0, "at the end")
}

pub fn ring_pin_errors(env: &Env) -> TResult {
    let b0 = pinned_total()?;
    for path in [OpenPath::Legacy, OpenPath::Iommufd] {
        let p = path_name(path);
        let fx = env.open(&SMALL, path)?;
        let dev = fx.dev();
        let _ram = Ram::map(dev, BASE, 4, SENTINEL)?;
        let check_released = |what: &str, errno: Option<i32>| -> TResult {
            expect_reg(dev, dma::RING_CTRL, 0, what)?;
            expect_reg(dev, dma::PINNED_PAGES, 0, what)?;
            expect_pinned_total(b0, what)?;
            match errno {
                Some(e) => expect_errno_reg(dev, dma::RING_ERROR, e, what)?,
                None => ensure!(
                    rd(dev, dma::RING_ERROR)? != 0,
                    "{what}: RING_ERROR is 0 after a failed pin"
                ),
            }
            let st = rd(dev, bar0::IRQ_STATUS)?;
            ensure!(
                st & dma::IRQ_DMA_ERROR != 0,
                "{what}: IRQ_STATUS {st:#x}, want DMA_ERROR"
            );
            clear_irq_status(dev)
        };
        // Not mapped, wholly or in part: nothing stays pinned.
        for (iova, pages) in [
            (UNMAPPED, 4),
            (BASE + 2 * PAGE, 4),
            (BASE - PAGE, 2),
            (BASE + 3 * PAGE, dma::RING_MAX_PAGES),
        ] {
            let what = format!("{p}: pin {pages} pages at {iova:#x} (not all mapped)");
            let ctrl = pin_ring(dev, iova, pages, true)?;
            ensure!(ctrl == 0, "{what}: RING_CTRL reads {ctrl:#x}, want 0");
            check_released(&what, None)?;
        }
        // Bad settings.
        for (iova, pages) in [
            (BASE, 0),
            (BASE, dma::RING_MAX_PAGES + 1),
            (BASE, u32::MAX),
            (BASE + 0x800, 1),
            (BASE + 1, 1),
            (BASE + PAGE - 8, 1),
        ] {
            for writable in [true, false] {
                let what = format!("{p}: pin {pages} pages at {iova:#x} (writable: {writable})");
                let ctrl = pin_ring(dev, iova, pages, writable)?;
                ensure!(ctrl == 0, "{what}: RING_CTRL reads {ctrl:#x}, want 0");
                check_released(&what, Some(EINVAL))?;
            }
        }
        // A failed pin releases the ring that was pinned.
        pin_ring_ok(dev, BASE, 2, true)?;
        let what = format!("{p}: re-pin with 0 pages over a pinned ring");
        let ctrl = pin_ring(dev, BASE, 0, true)?;
        ensure!(ctrl == 0, "{what}: RING_CTRL reads {ctrl:#x}, want 0");
        check_released(&what, Some(EINVAL))?;
        pin_ring_ok(dev, BASE, 2, false)?;
        let what = format!("{p}: re-pin of an unmapped ring over a pinned ring");
        let ctrl = pin_ring(dev, UNMAPPED, 2, false)?;
        ensure!(ctrl == 0, "{what}: RING_CTRL reads {ctrl:#x}, want 0");
        check_released(&what, None)?;
        // And a good pin still works.
        pin_ring_ok(dev, BASE, 4, true)?;
        expect_pinned_total(b0 + 4, &format!("{p}: good pin after the errors"))?;
    }
    expect_pinned_total(b0, "after closing")
}

// ---------------------------------------------------------------------------
// The background writer

pub fn writer_stamps(env: &Env) -> TResult {
    const PAGES: u32 = 4;
    const RATE: u32 = 100;
    let fx = env.open(&SMALL, OpenPath::Legacy)?;
    let dev = fx.dev();
    let ram = Ram::map(dev, BASE, 8, SENTINEL)?;
    let t0 = Instant::now();
    start_writer(dev, BASE + PAGE, PAGES, RATE)?;
    expect_reg(dev, dma::BG_CTRL, dma::BG_ENABLE, "BG_CTRL after enabling")?;
    expect_reg(dev, dma::BG_ERROR, 0, "after enabling")?;
    // The settings are taken at enable; writes while it runs are ignored.
    wr_iova(dev, dma::BG_IOVA_LO, BASE + 5 * PAGE)?;
    wr(dev, dma::BG_PAGES, 1)?;
    wr(dev, dma::BG_RATE, 1)?;
    let what = "settings written while the writer runs";
    expect_reg(dev, dma::BG_IOVA_LO, (BASE + PAGE) as u32, what)?;
    expect_reg(dev, dma::BG_IOVA_HI, 0, what)?;
    expect_reg(dev, dma::BG_PAGES, PAGES, what)?;
    expect_reg(dev, dma::BG_RATE, RATE, what)?;
    wait_writes(dev, PAGES + 2, "the writer")?;
    wr(dev, dma::BG_CTRL, 0)?;
    let elapsed = t0.elapsed();
    let n = rd(dev, dma::BG_WRITES)? as u64;
    expect_reg(dev, dma::BG_CTRL, 0, "after disabling")?;
    let most = (RATE as f64 * elapsed.as_secs_f64() * 2.0) as u64 + 5;
    ensure!(
        n <= most,
        "{n} page writes in {elapsed:?} at BG_RATE {RATE}: more than {most}"
    );
    expect_reg(
        dev,
        dma::BG_CURSOR,
        (n % PAGES as u64) as u32,
        &format!("after {n} writes from page 0"),
    )?;
    let model = writer_model(PAGES, &[(0, n)]);
    check_stamps(&ram, 1, &model, &format!("after {n} writes"))?;
    expect_writer_still(dev, &ram, "a disabled writer")?;
    // Enabled again, it starts over at page 0; the count goes on.
    wr(dev, dma::BG_CTRL, dma::BG_ENABLE)?;
    wait_writes(dev, n as u32 + 2, "the writer enabled again")?;
    wr(dev, dma::BG_CTRL, 0)?;
    let m = rd(dev, dma::BG_WRITES)? as u64;
    expect_reg(
        dev,
        dma::BG_CURSOR,
        ((m - n) % PAGES as u64) as u32,
        &format!("after {} writes of the second run", m - n),
    )?;
    let model = writer_model(PAGES, &[(0, n), (n, m - n)]);
    check_stamps(&ram, 1, &model, &format!("after {n} + {} writes", m - n))?;
    expect_writer_still(dev, &ram, "disabled again")?;
    expect_reg(dev, dma::BG_ERROR, 0, "at the end")
}

pub fn writer_bad_settings(env: &Env) -> TResult {
    let fx = env.open(&SMALL, OpenPath::Legacy)?;
    let dev = fx.dev();
    let ram = Ram::map(dev, BASE, 4, SENTINEL)?;
    let want = ram.snapshot()?;
    for (iova, pages, rate) in [
        (BASE + 8, 2, 100),
        (BASE + 0x800, 2, 100),
        (BASE, 0, 100),
        (BASE, dma::BG_MAX_PAGES + 1, 100),
        (BASE, u32::MAX, 100),
        (BASE, 2, 0),
        (BASE, 2, dma::BG_MAX_RATE + 1),
        (BASE, 2, u32::MAX),
        (0xffff_ffff_ffff_f000, 2, 100),
        (0xffff_ffff_f000_0000, dma::BG_MAX_PAGES, 100),
    ] {
        let what = format!("enable with BG_IOVA {iova:#x}, BG_PAGES {pages}, BG_RATE {rate}");
        start_writer(dev, iova, pages, rate)?;
        expect_reg(dev, dma::BG_CTRL, 0, &what)?;
        expect_errno_reg(dev, dma::BG_ERROR, EINVAL, &what)?;
        expect_reg(dev, dma::BG_WRITES, 0, &what)?;
    }
    same(
        &ram.snapshot()?,
        &want,
        0,
        "guest RAM after refused settings",
    )?;
    // The limits themselves are accepted: 2^20 pages over a sparse 4 GiB.
    let big = Ram::map(dev, 1 << 32, dma::BG_MAX_PAGES as u64, 0)?;
    start_writer(dev, 1 << 32, dma::BG_MAX_PAGES, 1)?;
    expect_reg(dev, dma::BG_CTRL, dma::BG_ENABLE, "BG_PAGES 2^20")?;
    wait_writes(dev, 1, "BG_PAGES 2^20")?;
    wr(dev, dma::BG_CTRL, 0)?;
    let first = big.read(0, dma::BG_STAMP_LEN as u64)?;
    same(&first, &stamp(1, 0), 1 << 32, "first stamp over 2^20 pages")?;
    start_writer(dev, BASE, 1, dma::BG_MAX_RATE)?;
    expect_reg(dev, dma::BG_CTRL, dma::BG_ENABLE, "BG_RATE 1000000")?;
    wr(dev, dma::BG_CTRL, 0)?;
    expect_reg(dev, dma::BG_CTRL, 0, "disabled")
}

pub fn writer_unmapped(env: &Env) -> TResult {
    for path in [OpenPath::Legacy, OpenPath::Iommufd] {
        let p = path_name(path);
        let fx = env.open(&SMALL, path)?;
        let dev = fx.dev();
        let _ram = Ram::map(dev, BASE, 2, SENTINEL)?;
        // The range runs past the mapping: page 0 and 1 work, page 2 fails.
        start_writer(dev, BASE, 3, 200)?;
        let start = Instant::now();
        while rd(dev, dma::BG_CTRL)? != 0 {
            ensure!(
                start.elapsed() < DMA_TIMEOUT,
                "{p}: the writer over an unmapped page still runs after {DMA_TIMEOUT:?} \
                 (BG_WRITES {})",
                rd(dev, dma::BG_WRITES)?
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        let what = format!("{p}: the writer after a write to an unmapped page");
        expect_errno_reg(dev, dma::BG_ERROR, dma::unmapped_errno(path), &what)?;
        expect_reg(dev, dma::BG_WRITES, 2, &what)?;
        let st = rd(dev, bar0::IRQ_STATUS)?;
        ensure!(
            st & dma::IRQ_DMA_ERROR != 0,
            "{what}: IRQ_STATUS {st:#x}, want DMA_ERROR"
        );
    }
    Ok(())
}

pub fn writer_quiesce(env: &Env) -> TResult {
    let fx = env.open(&SMALL, OpenPath::Legacy)?;
    let dev = fx.dev();
    let ram = Ram::map(dev, BASE, 4, SENTINEL)?;
    start_writer(dev, BASE, 4, 200)?;
    expect_writer_runs(dev, 2, "RUNNING")?;
    let mut buf = Vec::new();
    // Each way into and out of the quiesced states.
    for (stop, restart) in [
        (
            &[
                DeviceState::Running,
                DeviceState::Setup,
                DeviceState::PreCopy,
                DeviceState::StopNCopy,
            ][..],
            &[DeviceState::Failed, DeviceState::Running][..],
        ),
        (
            &[DeviceState::Setup, DeviceState::StopNCopy][..],
            &[DeviceState::Cancelled, DeviceState::Running][..],
        ),
        (
            &[
                DeviceState::Setup,
                DeviceState::PreCopy,
                DeviceState::StopNCopy,
                DeviceState::SaveCompleted,
            ][..],
            &[DeviceState::Running][..],
        ),
    ] {
        for s in stop {
            set_state(dev, *s)?;
            if *s == DeviceState::StopNCopy {
                if *s != stop[stop.len() - 1] {
                    expect_writer_still(dev, &ram, "MIGRATION_STOPNCOPY")?;
                }
                while dev.get_buffer(&mut buf).map_err(|e| e.to_string())? > 0 {}
            } else if *s != DeviceState::SaveCompleted {
                expect_writer_runs(dev, 2, &format!("{s}"))?;
            }
        }
        let last = stop[stop.len() - 1];
        expect_writer_still(dev, &ram, &format!("{last}"))?;
        expect_reg(
            dev,
            dma::BG_CTRL,
            dma::BG_ENABLE,
            &format!("{last}: the writer stays enabled"),
        )?;
        for s in restart {
            set_state(dev, *s)?;
            expect_writer_runs(dev, 2, &format!("{s} after {last}"))?;
        }
    }
    expect_reg(dev, dma::BG_ERROR, 0, "at the end")
}

// ---------------------------------------------------------------------------
// Unmap

/// Unmaps while the ring is pinned run on iommufd only: on the legacy
/// type1 path, upstream vfio_iommu_type1 itself makes lockdep report a
/// circular dependency (device_list_lock vs iommu->lock) for any mdev
/// driver that unpins from its dma_unmap callback.
const RING_UNMAP_PATH: OpenPath = OpenPath::Iommufd;

pub fn unmap_ring(env: &Env) -> TResult {
    let b0 = pinned_total()?;
    for path in [RING_UNMAP_PATH] {
        for writable in [true, false] {
            let p = format!("{} (writable: {writable})", path_name(path));
            let fx = env.open(&SMALL, path)?;
            let dev = fx.dev();
            let a = Ram::map(dev, BASE, 8, SENTINEL)?;
            let other = Ram::map(dev, BASE + 0x10_0000, 8, SENTINEL)?;
            pin_ring_ok(dev, BASE + 2 * PAGE, 4, writable)?;
            expect_pinned_total(b0 + 4, &p)?;
            // An unmap elsewhere leaves the ring alone.
            other.unmap(dev)?;
            let what = format!("{p}: after an unmap that misses the ring");
            let want = dma::RING_PINNED | if writable { dma::RING_WRITABLE } else { 0 };
            expect_reg(dev, dma::RING_CTRL, want, &what)?;
            expect_reg(dev, dma::PINNED_PAGES, 4, &what)?;
            expect_reg(dev, dma::RING_ERROR, 0, &what)?;
            // The unmap of its memory takes it.
            a.unmap(dev)?;
            let what = format!("{p}: after the unmap of the ring's memory");
            expect_reg(dev, dma::RING_CTRL, 0, &what)?;
            expect_reg(dev, dma::PINNED_PAGES, 0, &what)?;
            expect_errno_reg(dev, dma::RING_ERROR, ECANCELED, &what)?;
            expect_pinned_total(b0, &what)?;
        }
    }
    Ok(())
}

pub fn unmap_queued(env: &Env) -> TResult {
    for path in [OpenPath::Legacy, OpenPath::Iommufd] {
        let p = path_name(path);
        let errno = dma::unmapped_errno(path);
        let fx = env.open(&SMALL, path)?;
        let dev = fx.dev();
        let a = Ram::map(dev, BASE, 4, SENTINEL)?;
        let b = Ram::map(dev, BASE + 0x10_0000, 4, SENTINEL)?;
        // An unmap that misses the queued command does not touch it.
        wr(dev, dma::CTRL, dma::CTRL_PAUSE)?;
        queue(dev, &Cmd::fill(BASE, 16, 0x1212_3434))?;
        b.unmap(dev)?;
        wr(dev, dma::CTRL, 0)?;
        let what = format!("{p}: FILL after an unmap elsewhere");
        let r = wait(dev, &what)?;
        expect_outcome(r, None, &what)?;
        same(
            &a.read(0, 16)?,
            &filled(0x1212_3434, 16),
            0,
            &format!("{what}: guest RAM"),
        )?;
        // Addresses are translated when the command runs: unmapped by
        // then, it fails with the backend's errno and writes nothing...
        let before = a.snapshot()?;
        wr(dev, dma::CTRL, dma::CTRL_PAUSE)?;
        queue(
            dev,
            &Cmd::fill(BASE + 2 * PAGE, 2 * PAGE as u32, 0x5656_7878),
        )?;
        a.unmap(dev)?;
        wr(dev, dma::CTRL, 0)?;
        let what = format!("{p}: FILL whose memory was unmapped while it was queued");
        let r = wait(dev, &what)?;
        expect_outcome(r, Some(errno), &what)?;
        same(
            &a.snapshot()?,
            &before,
            0,
            &format!("{what}: the old memory"),
        )?;
        // ... and mapped again, it reaches the new memory.
        let a2 = Ram::map(dev, BASE, 4, SENTINEL)?;
        wr(dev, dma::CTRL, dma::CTRL_PAUSE)?;
        queue(
            dev,
            &Cmd::fill(BASE + 2 * PAGE, 2 * PAGE as u32, 0x6767_8989),
        )?;
        a2.unmap(dev)?;
        let a3 = Ram::map(dev, BASE, 4, SENTINEL)?;
        wr(dev, dma::CTRL, 0)?;
        let what = format!("{p}: FILL whose memory was unmapped and mapped again while queued");
        let r = wait(dev, &what)?;
        expect_outcome(r, None, &what)?;
        let mut want = vec![SENTINEL; 4 * PAGE as usize];
        same(
            &a2.snapshot()?,
            &want,
            0,
            &format!("{what}: the old memory"),
        )?;
        want[2 * PAGE as usize..].copy_from_slice(&filled(0x6767_8989, 2 * PAGE as usize));
        same(
            &a3.snapshot()?,
            &want,
            0,
            &format!("{what}: the new memory"),
        )?;
        a3.unmap(dev)?;
        if path != RING_UNMAP_PATH {
            continue;
        }
        // With the ring pinned in the unmapped range, the driver's
        // dma_unmap runs and cancels the queued command too.
        let r4 = Ram::map(dev, BASE, 8, SENTINEL)?;
        pin_ring_ok(dev, BASE, 2, true)?;
        wr(dev, dma::CTRL, dma::CTRL_PAUSE)?;
        queue(
            dev,
            &Cmd::fill(BASE + 4 * PAGE, 2 * PAGE as u32, 0x4545_4545),
        )?;
        r4.unmap(dev)?;
        let what = format!("{p}: FILL queued in the ring's mapping when it was unmapped");
        expect_reg(dev, dma::PINNED_PAGES, 0, &what)?;
        expect_errno_reg(dev, dma::RING_ERROR, ECANCELED, &what)?;
        let r5 = Ram::map(dev, BASE, 8, SENTINEL)?;
        wr(dev, dma::CTRL, 0)?;
        let r = wait(dev, &what)?;
        expect_outcome(r, Some(ECANCELED), &what)?;
        std::thread::sleep(STILL);
        ensure!(
            r4.snapshot()?.iter().all(|&x| x == SENTINEL)
                && r5.snapshot()?.iter().all(|&x| x == SENTINEL),
            "{what}: the cancelled command wrote guest memory"
        );
        // A command outside the ring's mapping is not cancelled.
        let ring = Ram::map(dev, BASE + 0x20_0000, 2, SENTINEL)?;
        pin_ring_ok(dev, ring.iova, 2, true)?;
        wr(dev, dma::CTRL, dma::CTRL_PAUSE)?;
        queue(dev, &Cmd::fill(BASE, 8, 0x0909_0909))?;
        ring.unmap(dev)?;
        wr(dev, dma::CTRL, 0)?;
        let what = format!("{p}: FILL queued elsewhere when the ring was unmapped");
        let r = wait(dev, &what)?;
        expect_outcome(r, None, &what)?;
        same(
            &r5.read(0, 8)?,
            &filled(0x0909_0909, 8),
            0,
            &format!("{what}: guest RAM"),
        )?;
    }
    Ok(())
}

pub fn unmap_writer(env: &Env) -> TResult {
    for path in [OpenPath::Legacy, OpenPath::Iommufd] {
        let p = path_name(path);
        let fx = env.open(&SMALL, path)?;
        let dev = fx.dev();
        let a = Ram::map(dev, BASE, 4, SENTINEL)?;
        let b = Ram::map(dev, BASE + 0x10_0000, 4, SENTINEL)?;
        start_writer(dev, BASE, 4, 200)?;
        expect_writer_runs(dev, 2, &format!("{p}: started"))?;
        b.unmap(dev)?;
        expect_writer_runs(dev, 2, &format!("{p}: after an unmap elsewhere"))?;
        // Nothing pinned there: the next write finds no mapping.
        a.unmap(dev)?;
        let what = format!("{p}: after the unmap of its range");
        let start = Instant::now();
        while rd(dev, dma::BG_CTRL)? != 0 {
            ensure!(
                start.elapsed() < DMA_TIMEOUT,
                "{what}: still enabled after {DMA_TIMEOUT:?} (BG_WRITES {})",
                rd(dev, dma::BG_WRITES)?
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        expect_errno_reg(dev, dma::BG_ERROR, dma::unmapped_errno(path), &what)?;
        let st = rd(dev, bar0::IRQ_STATUS)?;
        ensure!(
            st & dma::IRQ_DMA_ERROR != 0,
            "{what}: IRQ_STATUS {st:#x}, want DMA_ERROR"
        );
        if path != RING_UNMAP_PATH {
            continue;
        }
        // With the ring pinned in its range, dma_unmap stops it at once.
        let c = Ram::map(dev, BASE, 8, SENTINEL)?;
        start_writer(dev, BASE, 4, 200)?;
        pin_ring_ok(dev, BASE + 4 * PAGE, 2, true)?;
        expect_writer_runs(dev, 2, &format!("{p}: with a ring"))?;
        c.unmap(dev)?;
        let what = format!("{p}: after the unmap of its range and the ring's");
        expect_reg(dev, dma::BG_CTRL, 0, &what)?;
        expect_errno_reg(dev, dma::BG_ERROR, ECANCELED, &what)?;
        let c2 = Ram::map(dev, BASE, 8, SENTINEL)?;
        expect_writer_still(dev, &c2, &what)?;
        ensure!(
            c2.snapshot()?.iter().all(|&x| x == SENTINEL),
            "{what}: the memory mapped in its place was written"
        );
    }
    Ok(())
}

/// Starts the writer on pages 0..4, pins a writable ring on pages 8..16,
/// queues a paused FILL on page 20, and takes the device to PRECOPY.
fn busy(dev: &Device, base: u64, b0: u64) -> TResult {
    start_writer(dev, base, 4, 200)?;
    pin_ring_ok(dev, base + 8 * PAGE, 8, true)?;
    wr(dev, dma::CTRL, dma::CTRL_PAUSE)?;
    queue(dev, &Cmd::fill(base + 20 * PAGE, PAGE as u32, 0x2020_2020))?;
    go(
        dev,
        &[
            DeviceState::Running,
            DeviceState::Setup,
            DeviceState::PreCopy,
        ],
    )?;
    expect_writer_runs(dev, 2, "PRECOPY")?;
    expect_pinned_total(b0 + 8, "busy in PRECOPY")
}

pub fn unmap_precopy(env: &Env) -> TResult {
    let b0 = pinned_total()?;
    let fx = env.open(&SMALL, RING_UNMAP_PATH)?;
    let dev = fx.dev();
    let ram = Ram::map(dev, BASE, 32, SENTINEL)?;
    busy(dev, BASE, b0)?;
    let mut buf = Vec::new();
    dev.set_threshold(4096).ctx("threshold")?;
    dev.get_buffer(&mut buf).ctx("get buffer in PRECOPY")?;
    let d = dev
        .dirty_bitmap(BASE, 32)
        .ctx("dirty query before the unmap")?;
    ensure!(
        d.words.first().is_some_and(|w| w & 0xff00 == 0xff00),
        "dirty query before the unmap: {:x?}, want the writable ring's pages 8..16",
        d.words
    );
    ram.unmap(dev)?;
    let what = "after the unmap in PRECOPY";
    expect_pinned_total(b0, what)?;
    expect_reg(dev, dma::PINNED_PAGES, 0, what)?;
    expect_reg(dev, dma::RING_CTRL, 0, what)?;
    expect_errno_reg(dev, dma::RING_ERROR, ECANCELED, what)?;
    expect_reg(dev, dma::BG_CTRL, 0, what)?;
    expect_errno_reg(dev, dma::BG_ERROR, ECANCELED, what)?;
    wr(dev, dma::CTRL, 0)?;
    let r = wait(dev, what)?;
    expect_outcome(r, Some(ECANCELED), &format!("{what}: the queued FILL"))?;
    // The migration goes on without errors.
    for start in [BASE, 0, BASE + 8 * PAGE] {
        dev.dirty_bitmap(start, mig::BITMAP_PAGES)
            .ctx(&format!("{what}: dirty query at {start:#x}"))?;
    }
    let d = dev.dirty_bitmap(BASE, 32).ctx(what)?;
    ensure!(
        d.words.iter().all(|&w| w == 0),
        "{what}: the second query after the unmap still reports pages {:x?}",
        d.words
    );
    while dev.get_buffer(&mut buf).ctx("get buffer")? > 0 {}
    set_state(dev, DeviceState::StopNCopy)?;
    dev.dirty_bitmap(BASE, 32).ctx("dirty query in STOPNCOPY")?;
    while dev.get_buffer(&mut buf).ctx("get buffer")? > 0 {}
    let left = dev.pending().ctx("pending")?.total();
    ensure_eq!(left, 0, "pending at the end of the stream");
    set_state(dev, DeviceState::SaveCompleted)?;
    expect_pinned_total(b0, "at the end")
}

// ---------------------------------------------------------------------------
// Close, reset, removal, unload during a migration

pub fn lifecycle_close(env: &Env) -> TResult {
    let b0 = pinned_total()?;
    for path in [OpenPath::Legacy, OpenPath::Iommufd] {
        let p = path_name(path);
        let mut fx = env.open(&SMALL, path)?;
        let ram = Ram::map(fx.dev(), BASE, 32, SENTINEL)?;
        busy(fx.dev(), BASE, b0)?;
        fx.reopen(path)?;
        expect_pinned_total(b0, &format!("{p}: after close"))?;
        expect_ram_still(&ram, &format!("{p}: after close"))?;
        let dev = fx.dev();
        check_dma_power_on(dev, &format!("{p}: reopened"))?;
        let st = dev.device_state().ctx("state")?;
        ensure!(
            st == DeviceState::None,
            "{p}: reopened: device_state {st}, want NONE"
        );
    }
    Ok(())
}

pub fn lifecycle_reset(env: &Env) -> TResult {
    let b0 = pinned_total()?;
    for path in [OpenPath::Legacy, OpenPath::Iommufd] {
        let p = path_name(path);
        let fx = env.open(&SMALL, path)?;
        let dev = fx.dev();
        let ram = Ram::map(dev, BASE, 32, SENTINEL)?;
        busy(dev, BASE, b0)?;
        dev.reset().ctx("VFIO_DEVICE_RESET")?;
        let what = format!("{p}: after reset");
        expect_pinned_total(b0, &what)?;
        check_dma_power_on(dev, &what)?;
        let st = dev.device_state().ctx("state")?;
        ensure!(
            st == DeviceState::None,
            "{what}: device_state {st}, want NONE"
        );
        expect_ram_still(&ram, &format!("{what} (writer stopped, command dropped)"))?;
        expect_reg(dev, dma::BG_WRITES, 0, &format!("{what}, a while later"))?;
        // The device works on.
        let before = ram.snapshot()?;
        run_ok(dev, &Cmd::fill(BASE + 30 * PAGE, 4, 0x3030_3030))?;
        let mut want = before;
        want[30 * PAGE as usize..30 * PAGE as usize + 4].copy_from_slice(&[0x30; 4]);
        same(
            &ram.snapshot()?,
            &want,
            0,
            &format!("{what}: guest RAM after a FILL"),
        )?;
        pin_ring_ok(dev, BASE, 2, true)?;
        expect_pinned_total(b0 + 2, &format!("{what}: a ring"))?;
    }
    expect_pinned_total(b0, "after close")
}

pub fn lifecycle_remove(env: &Env) -> TResult {
    let b0 = pinned_total()?;
    let m = env.create(&SMALL)?;
    let uuid = m.uuid().to_string();
    let dev = Device::open(&uuid, OpenPath::Legacy).ctx("open")?;
    let ram = Ram::map(&dev, BASE, 32, SENTINEL)?;
    busy(&dev, BASE, b0)?;
    let remover = std::thread::spawn(move || m.remove());
    std::thread::sleep(Duration::from_millis(500));
    let blocked = !remover.is_finished();
    // The device still works while the removal waits.
    let w = rd(&dev, dma::BG_WRITES)?;
    drop(dev);
    let start = Instant::now();
    while !remover.is_finished() {
        ensure!(
            start.elapsed() < Duration::from_secs(30),
            "mdev removal still blocked 30 s after the device was closed"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let r = remover.join().map_err(|_| "remover panicked".to_string())?;
    r.ctx("remove the mdev")?;
    ensure!(
        blocked,
        "mdev removal returned while the device fd was open (BG_WRITES then {w})"
    );
    ensure!(
        !vfio_mig::sysfs::mdev_exists(&uuid),
        "{uuid} still exists after removal"
    );
    expect_pinned_total(b0, "after removal")?;
    expect_ram_still(&ram, "after removal")
}

pub fn lifecycle_rmmod(env: &Env) -> TResult {
    let b0 = pinned_total()?;
    let fx = env.open(&SMALL, OpenPath::Legacy)?;
    let dev = fx.dev();
    let ram = Ram::map(dev, BASE, 32, SENTINEL)?;
    busy(dev, BASE, b0)?;
    expect_errno(
        crate::t_misc::delete_module(&env.module),
        libc::EWOULDBLOCK,
        "delete_module with a device busy in PRECOPY",
    )?;
    expect_reg(dev, dma::PINNED_PAGES, 8, "after the refused unload")?;
    expect_pinned_total(b0 + 8, "after the refused unload")?;
    expect_writer_runs(dev, 2, "after the refused unload")?;
    expect_reg(dev, dma::STATUS, dma::QUEUED, "after the refused unload")?;
    drop(fx);
    expect_pinned_total(b0, "after close")?;
    expect_ram_still(&ram, "after close")
}

/// No test left pages pinned (run after the others, nothing open).
pub fn dma_pinned_none_left(_env: &Env) -> TResult {
    expect_pinned_total(0, "with no device open")
}

// ---------------------------------------------------------------------------
// DMA state in the migration stream

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

/// Unmaps and maps again, many times, while commands run, the ring is
/// pinned and unpinned and the writer writes, all from other threads: every
/// command ends DONE or with a documented errno, and nothing stays pinned.
pub fn unmap_concurrent(env: &Env) -> TResult {
    use std::sync::atomic::{AtomicBool, Ordering};
    const ROUNDS: u32 = 30;
    let b0 = pinned_total()?;
    let path = RING_UNMAP_PATH;
    let errno = dma::unmapped_errno(path);
    let fx = env.open(&SMALL, path)?;
    let dev = fx.dev();
    let mut ram = Ram::map(dev, BASE, 16, SENTINEL)?;
    start_writer(dev, BASE + 8 * PAGE, 4, 500)?;
    let done = AtomicBool::new(false);
    let (cmds, pins) = std::thread::scope(|sc| {
        let cmds = sc.spawn(|| -> Result<[u32; 3], String> {
            let mut n = [0u32; 3];
            let mut i = 0u64;
            while !done.load(Ordering::Acquire) {
                let c = Cmd::fill(BASE + (i % 4) * PAGE, 64, 0x0c0c_0c0c);
                let (st, err) = run(dev, &c)?;
                match (st, err as i32) {
                    (dma::DONE, 0) => n[0] += 1,
                    (dma::FAILED, e) if e == errno => n[1] += 1,
                    // iommufd refuses access to an area whose unmap is
                    // under way (prevent_access) with EINVAL.
                    (dma::FAILED, EINVAL) if path == OpenPath::Iommufd => n[1] += 1,
                    (dma::FAILED, ECANCELED) => n[2] += 1,
                    _ => {
                        return Err(format!(
                            "{c} during unmaps: DMA_STATUS {st} DMA_ERROR {err}, want DONE, \
                             {errno}, EINVAL (iommufd, unmap under way) or ECANCELED"
                        ))
                    }
                }
                i += 1;
            }
            Ok(n)
        });
        let pins = sc.spawn(|| -> Result<u32, String> {
            let mut n = 0;
            while !done.load(Ordering::Acquire) {
                if pin_ring(dev, BASE + 4 * PAGE, 4, n % 2 == 0)? != 0 {
                    wr(dev, dma::RING_CTRL, 0)?;
                }
                if rd(dev, dma::BG_CTRL)? == 0 {
                    wr(dev, dma::BG_CTRL, dma::BG_ENABLE)?;
                }
                n += 1;
            }
            Ok(n)
        });
        let r = (|| {
            for _ in 0..ROUNDS {
                ram.unmap(dev)?;
                std::thread::sleep(Duration::from_millis(2));
                ram.map_at(dev, BASE)?;
                std::thread::sleep(Duration::from_millis(5));
            }
            Ok::<(), String>(())
        })();
        done.store(true, Ordering::Release);
        let cmds = cmds
            .join()
            .unwrap_or_else(|_| Err("command thread panicked".into()));
        let pins = pins
            .join()
            .unwrap_or_else(|_| Err("pin thread panicked".into()));
        r.map(|_| (cmds, pins))
    })?;
    let n = cmds?;
    pins?;
    ensure!(
        n[0] > 0,
        "no command succeeded during {ROUNDS} unmaps: {n:?}"
    );
    wr(dev, dma::BG_CTRL, 0)?;
    wr(dev, dma::RING_CTRL, 0)?;
    expect_reg(dev, dma::PINNED_PAGES, 0, "at the end")?;
    expect_pinned_total(b0, "at the end")?;
    run_ok(dev, &Cmd::fill(BASE, 4, 0x0d0d_0d0d))?;
    ram.unmap(dev)?;
    drop(fx);
    expect_pinned_total(b0, "after close")
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
