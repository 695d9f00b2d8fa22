// SPDX-License-Identifier: GPL-2.0
//! Dirty tracking (SPEC section 2, "Dirty tracking"; migration-abi.rst,
//! "Dirty query"): the bitmap bit for bit against the pages the test made
//! the device write, queries split and capped, what is never reported
//! (reads, read-only rings, writes while logging is off), writable rings
//! reported while pinned, the background writer, bad queries and the
//! staged chunk.

use std::collections::BTreeSet;

use vfio_mig::migration::Field;
use vfio_mig::{Device, DeviceState, OpenPath};

use crate::device::dma;
use crate::device::{mig, region, SMALL};
use crate::dmautil::{
    expect_reg, path_name, pin_ring_ok, rd, run_ok, start_writer, wait_writes, wr, Cmd, Ram, PAGE,
};
use crate::t_migration::{go, set_state};
use crate::util::{expect_errno, Ctx, Env, Fixture, TResult};
use crate::{ensure, ensure_eq, ensure_hex};

const EINVAL: i32 = libc::EINVAL;
/// Where the tests map guest RAM.
const BASE: u64 = 0x4000_0000;

type Pages = BTreeSet<u64>;

/// One dirty query: checks `copied` and `data.offset`; returns the pages
/// (relative to `start`) whose bits are set among the first `copied`.
fn query(dev: &Device, start: u64, total: u64) -> Result<Pages, String> {
    let what = format!("dirty query start {start:#x} total {total}");
    let d = dev
        .dirty_bitmap(start, total)
        .map_err(|e| format!("{what}: {e}"))?;
    ensure_eq!(d.copied, total.min(mig::BITMAP_PAGES), "{what}: copied");
    ensure_hex!(d.offset, mig::BITMAP_OFF, "{what}: data.offset");
    let mut set = Pages::new();
    for (i, w) in d.words.iter().enumerate() {
        for b in 0..64 {
            let k = i as u64 * 64 + b;
            if w & (1 << b) != 0 && k < d.copied {
                set.insert(k);
            }
        }
    }
    Ok(set)
}

/// Asserts that a query over `[start page, + total)` of the RAM at [`BASE`]
/// reports exactly `want` (page numbers from `BASE`).
fn expect_dirty(dev: &Device, first: u64, total: u64, want: &[u64], what: &str) -> TResult {
    let got: Pages = query(dev, BASE + first * PAGE, total)?
        .into_iter()
        .map(|k| k + first)
        .collect();
    let want: Pages = want.iter().copied().collect();
    ensure!(
        got == want,
        "{what}: query of pages {first}..{} reports {got:?}, want {want:?}",
        first + total
    );
    Ok(())
}

/// Makes the device write `len` bytes at `off` of the RAM at [`BASE`].
fn dev_write(dev: &Device, off: u64, len: u32) -> TResult {
    run_ok(dev, &Cmd::fill(BASE + off, len, 0xd1d2_d3d4))
}

/// Makes the device write one byte of each page.
fn touch(dev: &Device, pages: &[u64]) -> TResult {
    for (i, p) in pages.iter().enumerate() {
        // Vary where in the page: first byte, last byte, the middle.
        let off = [0, PAGE - 1, 0x7ff][i % 3];
        dev_write(dev, p * PAGE + off, 1)?;
    }
    Ok(())
}

/// A device with `pages` of RAM mapped at [`BASE`], in MIGRATION_SETUP.
fn logging(env: &Env, path: OpenPath, pages: u64) -> Result<(Fixture, Ram), String> {
    let fx = env.open(&SMALL, path)?;
    let ram = Ram::map(fx.dev(), BASE, pages, 0x5a)?;
    go(fx.dev(), &[DeviceState::Running, DeviceState::Setup])?;
    Ok((fx, ram))
}

fn bits(env: &Env, path: OpenPath) -> TResult {
    let p = path_name(path);
    let (fx, _ram) = logging(env, path, 256)?;
    let dev = fx.dev();
    expect_dirty(dev, 0, 256, &[], &format!("{p}: nothing written yet"))?;
    // Single pages: the first bit, bits 63/64, word ends, the last bit.
    let pages = [0, 63, 64, 127, 128, 200, 255];
    touch(dev, &pages)?;
    expect_dirty(dev, 0, 256, &pages, &format!("{p}: single pages"))?;
    expect_dirty(dev, 0, 256, &[], &format!("{p}: second query"))?;
    // One write across pages 62..=65 (two words).
    dev_write(dev, 62 * PAGE + 100, 3 * PAGE as u32)?;
    expect_dirty(dev, 0, 256, &[62, 63, 64, 65], &format!("{p}: straddling"))?;
    // A query that starts in the middle of a word; its last bit; a dirty
    // page just outside it stays for a later query.
    touch(dev, &[5, 104, 105])?;
    expect_dirty(dev, 5, 100, &[5, 104], &format!("{p}: pages 5..105"))?;
    expect_dirty(dev, 0, 256, &[105], &format!("{p}: the page after"))?;
    // A partial last word: bit 64 of 65; page 66 is not covered and stays.
    touch(dev, &[64, 66])?;
    expect_dirty(dev, 0, 65, &[64], &format!("{p}: 65 pages"))?;
    expect_dirty(dev, 0, 256, &[66], &format!("{p}: page 66 after"))?;
    // A range split into several queries.
    let pages = [10, 70, 130, 190, 250];
    touch(dev, &pages)?;
    for q in 0..4 {
        let want: Vec<u64> = pages.iter().copied().filter(|p| p / 64 == q).collect();
        expect_dirty(dev, q * 64, 64, &want, &format!("{p}: quarter {q}"))?;
    }
    expect_dirty(dev, 0, 256, &[], &format!("{p}: after the quarters"))?;
    // Writes in TO_GUEST count, reads in FROM_GUEST do not.
    run_ok(dev, &Cmd::from_guest(BASE + 30 * PAGE, 0, 3 * PAGE as u32))?;
    run_ok(dev, &Cmd::to_guest(BASE + 40 * PAGE + 8, 0, 16))?;
    expect_dirty(
        dev,
        0,
        256,
        &[40],
        &format!("{p}: FROM_GUEST 30..33, TO_GUEST 40"),
    )?;
    // The log runs on through PRECOPY and STOPNCOPY.
    touch(dev, &[7])?;
    set_state(dev, DeviceState::PreCopy)?;
    touch(dev, &[8])?;
    expect_dirty(dev, 0, 256, &[7, 8], &format!("{p}: SETUP then PRECOPY"))?;
    touch(dev, &[9])?;
    set_state(dev, DeviceState::StopNCopy)?;
    expect_dirty(dev, 0, 256, &[9], &format!("{p}: in STOPNCOPY"))?;
    // Beyond the mapping: nothing, and no error.
    expect_dirty(dev, 256, 1000, &[], &format!("{p}: past the RAM"))
}

pub fn dirty_bits_legacy(env: &Env) -> TResult {
    bits(env, OpenPath::Legacy)
}

pub fn dirty_bits_iommufd(env: &Env) -> TResult {
    bits(env, OpenPath::Iommufd)
}

pub fn dirty_large(env: &Env) -> TResult {
    // One and a half bitmap areas' worth of pages (12 GiB, sparse).
    const PAGES: u64 = mig::BITMAP_PAGES + mig::BITMAP_PAGES / 2;
    const BIG: u64 = 1 << 32;
    let fx = env.open(&SMALL, OpenPath::Legacy)?;
    let dev = fx.dev();
    let mut ram = Ram::new(PAGES, 0)?;
    ram.map_at(dev, BIG)?;
    go(dev, &[DeviceState::Running, DeviceState::Setup])?;
    let cap = mig::BITMAP_PAGES;
    let pages = [0, 1, cap - 1, cap, cap + 63, cap + 64, PAGES - 2, PAGES - 1];
    for p in pages {
        run_ok(dev, &Cmd::fill(BIG + p * PAGE + 8, 8, 0x0f0f_0f0f))?;
    }
    // Loop over start until the whole range is covered.
    let collect = |total: u64| -> Result<(Pages, u32), String> {
        let (mut start, mut left, mut n) = (BIG, total, 0);
        let mut all = Pages::new();
        while left > 0 {
            let got = query(dev, start, left)?;
            let copied = left.min(cap);
            all.extend(got.into_iter().map(|k| k + (start - BIG) / PAGE));
            start += copied * PAGE;
            left -= copied;
            n += 1;
        }
        Ok((all, n))
    };
    let (got, n) = collect(PAGES)?;
    ensure_eq!(n, 2, "queries to cover {PAGES} pages");
    let want: Pages = pages.iter().copied().collect();
    ensure!(
        got == want,
        "{PAGES} pages in two queries report {got:?}, want {want:?}"
    );
    let (got, _) = collect(PAGES + 1000)?;
    ensure!(got.is_empty(), "second pass reports {got:?}");
    // A query that straddles the first cap.
    touch_big(dev, BIG, &[cap - 1, cap + 5])?;
    let got = query(dev, BIG + (cap - 100) * PAGE, 200)?;
    let want: Pages = [99, 105].into_iter().collect();
    ensure!(got == want, "pages around {cap}: {got:?}, want {want:?}");
    Ok(())
}

fn touch_big(dev: &Device, base: u64, pages: &[u64]) -> TResult {
    for p in pages {
        run_ok(dev, &Cmd::fill(base + p * PAGE, 4, 0x0e0e_0e0e))?;
    }
    Ok(())
}

pub fn dirty_not_reported(env: &Env) -> TResult {
    let fx = env.open(&SMALL, OpenPath::Legacy)?;
    let dev = fx.dev();
    let _ram = Ram::map(dev, BASE, 64, 0x5a)?;
    // Written while logging is off.
    set_state(dev, DeviceState::Running)?;
    touch(dev, &[3])?;
    set_state(dev, DeviceState::Setup)?;
    expect_dirty(dev, 0, 64, &[], "written in RUNNING, queried in SETUP")?;
    // Read only.
    run_ok(dev, &Cmd::from_guest(BASE + 10 * PAGE, 0, 4 * PAGE as u32))?;
    touch(dev, &[15])?;
    expect_dirty(dev, 0, 64, &[15], "FROM_GUEST 10..14, FILL 15")?;
    // A ring pinned read-only: never.
    pin_ring_ok(dev, BASE + 20 * PAGE, 4, false)?;
    for i in 0..3 {
        expect_dirty(dev, 0, 64, &[], &format!("read-only ring, query {i}"))?;
    }
    // A ring pinned writable: on every query while pinned.
    pin_ring_ok(dev, BASE + 30 * PAGE, 4, true)?;
    for i in 0..3 {
        expect_dirty(
            dev,
            0,
            64,
            &[30, 31, 32, 33],
            &format!("writable ring, query {i}"),
        )?;
    }
    expect_dirty(dev, 31, 2, &[31, 32], "writable ring, part of it")?;
    expect_dirty(dev, 0, 64, &[30, 31, 32, 33], "writable ring, again")?;
    wr(dev, dma::RING_CTRL, 0)?;
    expect_dirty(dev, 0, 64, &[], "writable ring after unpin")?;
    // FAILED drops the log, and writes while FAILED are not logged.
    touch(dev, &[40])?;
    set_state(dev, DeviceState::Failed)?;
    touch(dev, &[41])?;
    set_state(dev, DeviceState::Setup)?;
    expect_dirty(dev, 0, 64, &[], "after FAILED and SETUP again")?;
    touch(dev, &[42])?;
    set_state(dev, DeviceState::Cancelled)?;
    set_state(dev, DeviceState::Running)?;
    touch(dev, &[43])?;
    set_state(dev, DeviceState::Setup)?;
    expect_dirty(dev, 0, 64, &[], "after CANCELLED, RUNNING and SETUP again")?;
    // After a completed save and RUNNING.
    touch(dev, &[44])?;
    go(
        dev,
        &[
            DeviceState::StopNCopy,
            DeviceState::SaveCompleted,
            DeviceState::Running,
        ],
    )?;
    touch(dev, &[45])?;
    set_state(dev, DeviceState::Setup)?;
    expect_dirty(dev, 0, 64, &[], "after SAVE_COMPLETED, RUNNING and SETUP")?;
    touch(dev, &[46])?;
    expect_dirty(dev, 0, 64, &[46], "still logging")?;
    // A writable ring pinned before logging starts is reported from the
    // first query on, also when logging starts over; reset unpins it.
    go(dev, &[DeviceState::Failed, DeviceState::Running])?;
    pin_ring_ok(dev, BASE + 50 * PAGE, 2, true)?;
    set_state(dev, DeviceState::Setup)?;
    expect_dirty(dev, 0, 64, &[50, 51], "writable ring pinned in RUNNING")?;
    go(dev, &[DeviceState::Failed, DeviceState::Setup])?;
    expect_dirty(dev, 0, 64, &[50, 51], "writable ring after FAILED, SETUP")?;
    dev.reset().ctx("VFIO_DEVICE_RESET")?;
    go(dev, &[DeviceState::Running, DeviceState::Setup])?;
    expect_dirty(dev, 0, 64, &[], "after reset (ring unpinned)")
}

pub fn dirty_bad_queries(env: &Env) -> TResult {
    let (fx, _ram) = logging(env, OpenPath::Legacy, 16)?;
    let dev = fx.dev();
    touch(dev, &[2])?;
    // Unaligned start_addr: refused at the write.
    for start in [BASE + 1, BASE + 0x800, BASE - 8] {
        expect_errno(
            dev.write_field(Field::DirtyStartAddr, start),
            EINVAL,
            &format!("write of start_addr {start:#x}"),
        )?;
    }
    // Overflow: refused at the query.
    for (start, total) in [
        (0xffff_ffff_ffff_f000u64, 2u64),
        (BASE, u64::MAX >> 12),
        (BASE, u64::MAX),
        (0, 1 << 52),
    ] {
        expect_errno(
            dev.dirty_bitmap(start, total),
            EINVAL,
            &format!("query start {start:#x} total {total:#x}"),
        )?;
    }
    // total 0: copied = min(0, BITMAP_LEN * 8) = 0.
    let d = dev.dirty_bitmap(BASE, 0).ctx("query of total 0")?;
    ensure_eq!(d.copied, 0, "copied of a query of total 0");
    // None of them reported (and so cleared) page 2.
    expect_dirty(dev, 0, 16, &[2], "after the refused queries")?;
    // Wrong states.
    touch(dev, &[3])?;
    for (path, s) in [
        (&[DeviceState::Failed][..], DeviceState::Failed),
        (&[DeviceState::Running][..], DeviceState::Running),
        (&[DeviceState::Resume][..], DeviceState::Resume),
        (
            &[DeviceState::Cancelled, DeviceState::None][..],
            DeviceState::None,
        ),
    ] {
        go(dev, path)?;
        let mut b = [0u8; 8];
        expect_errno(
            dev.mig_pread(Field::DirtyCopied.offset(), &mut b),
            EINVAL,
            &format!("dirty query in {s}"),
        )?;
    }
    Ok(())
}

pub fn dirty_staged_chunk(env: &Env) -> TResult {
    let (fx, _ram) = logging(env, OpenPath::Legacy, 16)?;
    let dev = fx.dev();
    dev.write_region(crate::device::region::BAR2, 0, &[0x77; 8192])
        .ctx("BAR2")?;
    dev.set_threshold(4096).ctx("threshold")?;
    set_state(dev, DeviceState::PreCopy)?;
    let mut chunk = Vec::new();
    let n = dev.get_buffer(&mut chunk).ctx("get buffer")?;
    ensure!(n > 0, "get buffer in PRECOPY returned nothing");
    touch(dev, &[1, 5, 9])?;
    expect_dirty(dev, 0, 16, &[1, 5, 9], "with a chunk staged")?;
    // A full-size bitmap too.
    touch(dev, &[0])?;
    let got = query(dev, BASE, mig::BITMAP_PAGES)?;
    ensure!(
        got == [0u64].into_iter().collect::<Pages>(),
        "full-size query reports {got:?}"
    );
    let mut again = vec![0u8; n];
    dev.read_region(crate::device::region::MIGRATION, mig::DATA_OFF, &mut again)
        .ctx("read the data area")?;
    ensure!(
        again == chunk,
        "the staged chunk changed under dirty queries"
    );
    let off = dev.read_field(Field::DataOffset).ctx("data.offset")?;
    ensure_hex!(off, mig::BITMAP_OFF, "data.offset after the query");
    // The stream goes on.
    let m = dev.get_buffer(&mut chunk).ctx("next get buffer")?;
    ensure!(m > 0, "the next get buffer returned nothing");
    Ok(())
}

pub fn dirty_writer(env: &Env) -> TResult {
    let (fx, ram) = logging(env, OpenPath::Legacy, 16)?;
    let dev = fx.dev();
    let range: Pages = (2..6).collect();
    start_writer(dev, BASE + 2 * PAGE, 4, 100)?;
    let w = wait_writes(dev, 4, "the writer")?;
    let q0: Pages = query(dev, BASE, 16)?;
    ensure!(
        !q0.is_empty() && q0.is_subset(&range),
        "after {w} writer writes: query reports {q0:?}, want a non-empty part of {range:?}"
    );
    let s0 = ram.snapshot()?;
    wait_writes(dev, rd(dev, dma::BG_WRITES)? + 5, "the writer")?;
    wr(dev, dma::BG_CTRL, 0)?;
    let s1 = ram.snapshot()?;
    let q1 = query(dev, BASE, 16)?;
    let changed: Pages = crate::dmautil::changed_pages(&s0, &s1)
        .into_iter()
        .collect();
    ensure!(
        !changed.is_empty() && changed.is_subset(&q1) && q1.is_subset(&range),
        "writer pages changed {changed:?}, query reports {q1:?}, writer range {range:?}"
    );
    expect_reg(dev, dma::BG_CTRL, 0, "stopped")?;
    expect_dirty(dev, 0, 16, &[], "after the writer stopped")
}

/// Asserts that the bitmap area past the words of a query of `copied`
/// pages reads zero: the area holds the last query's bitmap only.
fn expect_area_clear_after(dev: &Device, copied: u64, what: &str) -> TResult {
    let from = copied.div_ceil(64) * 8;
    let mut area = vec![0u8; (mig::BITMAP_LEN - from) as usize];
    dev.read_region(region::MIGRATION, mig::BITMAP_OFF + from, &mut area)
        .ctx("read the bitmap area")?;
    if let Some(i) = area.iter().position(|&b| b != 0) {
        return Err(format!(
            "{what}: bitmap area byte {:#x} (past the {copied} pages of the query) is {:#04x}: \
             a stale bit of an earlier query",
            from + i as u64,
            area[i]
        ));
    }
    Ok(())
}

pub fn dirty_stale_bitmap(env: &Env) -> TResult {
    const PAGES: u64 = 8192;
    let mut fx = env.open(&SMALL, OpenPath::Legacy)?;
    let mut ram = Ram::new(PAGES, 0)?;
    ram.map_at(fx.dev(), BASE)?;
    let dev = fx.dev();
    go(dev, &[DeviceState::Running, DeviceState::Setup])?;
    touch(dev, &[5, 5000])?;
    expect_dirty(dev, 0, PAGES, &[5, 5000], "first query")?;
    // A query of nothing, then a clean range: no stale bits.
    let d = dev.dirty_bitmap(BASE, 0).ctx("query of total 0")?;
    ensure_eq!(d.copied, 0, "copied of total 0");
    expect_dirty(dev, 0, PAGES, &[], "after a query of total 0")?;
    expect_area_clear_after(dev, PAGES, "after a query of total 0")?;
    // A refused query in between.
    touch(dev, &[6000])?;
    expect_dirty(dev, 0, PAGES, &[6000], "page 6000")?;
    expect_errno(
        dev.dirty_bitmap(BASE, u64::MAX),
        EINVAL,
        "overflowing query",
    )?;
    expect_dirty(dev, 0, PAGES, &[], "after a refused query")?;
    // A smaller query after a larger one.
    touch(dev, &[7000])?;
    expect_dirty(dev, 0, PAGES, &[7000], "page 7000")?;
    expect_dirty(dev, 0, 64, &[], "64 pages after the larger query")?;
    expect_area_clear_after(dev, 64, "64 pages after the larger query")?;
    // The log dropped by FAILED, by reset: no bits of before.
    touch(dev, &[100])?;
    expect_dirty(dev, 0, PAGES, &[100], "page 100")?;
    touch(dev, &[101])?;
    go(dev, &[DeviceState::Failed, DeviceState::Setup])?;
    expect_dirty(dev, 0, PAGES, &[], "after FAILED and SETUP")?;
    expect_area_clear_after(dev, PAGES, "after FAILED and SETUP")?;
    touch(dev, &[200])?;
    expect_dirty(dev, 0, PAGES, &[200], "page 200")?;
    touch(dev, &[201])?;
    dev.reset().ctx("VFIO_DEVICE_RESET")?;
    go(dev, &[DeviceState::Running, DeviceState::Setup])?;
    expect_dirty(dev, 0, PAGES, &[], "after reset and SETUP")?;
    expect_area_clear_after(dev, PAGES, "after reset and SETUP")?;
    // And after close: a new open, a new mapping.
    touch(dev, &[300])?;
    expect_dirty(dev, 0, PAGES, &[300], "page 300")?;
    touch(dev, &[301])?;
    fx.reopen(OpenPath::Legacy)?;
    let dev = fx.dev();
    ram.map_at(dev, BASE)?;
    go(dev, &[DeviceState::Running, DeviceState::Setup])?;
    expect_dirty(dev, 0, PAGES, &[], "after close and SETUP")?;
    expect_area_clear_after(dev, PAGES, "after close and SETUP")
}

/// Dirty queries (with get buffer in between, as a VMM's migration thread
/// does) while commands, the writer and ring pins run from other threads:
/// no page a command wrote is ever lost, and nothing else is reported.
pub fn dirty_concurrent(env: &Env) -> TResult {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Mutex;
    const PAGES: u64 = 1024;
    const FILLS: u64 = 80;
    const WRITER: u64 = 1000; // 8 pages from here
    const RING: u64 = 960; // 8 pages from here
    let b0 = crate::dmautil::pinned_total()?;
    let (fx, _ram) = logging(env, OpenPath::Legacy, PAGES)?;
    let dev = fx.dev();
    dev.set_threshold(4096).ctx("threshold")?;
    set_state(dev, DeviceState::PreCopy)?;
    start_writer(dev, BASE + WRITER * PAGE, 8, 500)?;
    let done = AtomicBool::new(false);
    let written = Mutex::new(Pages::new());
    let (filler, querier, pinner) = std::thread::scope(|sc| {
        let filler = sc.spawn(|| -> TResult {
            let r = (|| {
                for i in 0..FILLS {
                    let page = (i * 37) % RING;
                    dev_write(dev, page * PAGE + (i % 4000), 8)?;
                    written.lock().unwrap().insert(page);
                }
                Ok(())
            })();
            done.store(true, Ordering::Release);
            r
        });
        let querier = sc.spawn(|| -> Result<(Pages, u32), String> {
            let mut seen = Pages::new();
            let mut buf = Vec::new();
            let mut n = 0;
            while !done.load(Ordering::Acquire) {
                seen.extend(query(dev, BASE, PAGES)?);
                dev.get_buffer(&mut buf)
                    .map_err(|e| format!("get buffer between queries: {e}"))?;
                n += 1;
            }
            Ok((seen, n))
        });
        let pinner = sc.spawn(|| -> Result<u32, String> {
            let mut n = 0;
            while !done.load(Ordering::Acquire) {
                pin_ring_ok(dev, BASE + RING * PAGE, 8, n % 2 == 0)?;
                wr(dev, dma::RING_CTRL, 0)?;
                n += 1;
            }
            Ok(n)
        });
        (
            filler
                .join()
                .unwrap_or_else(|_| Err("filler panicked".into())),
            querier
                .join()
                .unwrap_or_else(|_| Err("querier panicked".into())),
            pinner
                .join()
                .unwrap_or_else(|_| Err("pinner panicked".into())),
        )
    });
    filler?;
    let (mut seen, queries) = querier?;
    let pins = pinner?;
    wr(dev, dma::BG_CTRL, 0)?;
    seen.extend(query(dev, BASE, PAGES)?);
    let written = written.into_inner().unwrap();
    let lost: Vec<u64> = written.difference(&seen).copied().collect();
    ensure!(
        lost.is_empty(),
        "{} FILLs, {queries} queries, {pins} ring pins: pages written but never reported: {lost:?}",
        FILLS
    );
    let allowed: Pages = written
        .iter()
        .copied()
        .chain(WRITER..WRITER + 8)
        .chain(RING..RING + 8)
        .collect();
    let extra: Vec<u64> = seen.difference(&allowed).copied().collect();
    ensure!(
        extra.is_empty(),
        "pages reported that nothing wrote: {extra:?}"
    );
    ensure!(queries > 1, "only {queries} queries ran during the FILLs");
    expect_reg(dev, dma::PINNED_PAGES, 0, "at the end")?;
    crate::dmautil::expect_pinned_total(b0, "at the end")
}
