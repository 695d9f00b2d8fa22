// SPDX-License-Identifier: GPL-2.0
//! The upstream v2 interface beside the region
//! (Documentation/migration-v2.rst): discovery, save and restore through
//! data files in any segmentation, faults in the reader's buffer, streams
//! crossing interfaces, PRE_COPY and its info, one interface at a time,
//! data files outliving their session (reset, close, mdev removal, module
//! unload), what a QEMU destination does in RESUMING and STOP, damaged
//! streams, and DMA logging.

use vfio_mig::v2::{DataFile, V2State};
use vfio_mig::{Device, DeviceState, EventFd, OpenPath};

use crate::device::{bar0, cfg, dma, mig, region, TypeSpec, LARGE, SMALL};
use crate::dmautil::{pin_ring_ok, run_ok, wr, Cmd, Ram};
use crate::t_migration::{
    check_quiesced, check_writable, fill, go, layout, open, restore, same, save, snap, Snap,
};
use crate::util::{expect_errno, Ctx, Env, Fixture, Io, TResult};
use crate::{ensure, ensure_eq};

const B2: u32 = region::BAR2;
const CF: u32 = region::CONFIG;

/// `VFIO_MIGRATION_STOP_COPY | P2P | PRE_COPY`.
const FLAGS: u64 = 1 | 2 | 4;

// ---------------------------------------------------------------------------
// Helpers

fn set(dev: &Device, s: V2State) -> Result<Option<DataFile>, String> {
    dev.v2_set_state(s).map_err(|e| e.to_string())
}

/// Moves to `s`, which must hand out a data file.
fn set_with_file(dev: &Device, s: V2State) -> Result<DataFile, String> {
    set(dev, s)?.ok_or_else(|| format!("moving to {s} gave no data file"))
}

fn expect_v2(dev: &Device, want: V2State, what: &str) -> TResult {
    let got = dev.v2_state().ctx(&format!("{what}: v2 state"))?;
    ensure!(got == want, "{what}: v2 state is {got}, want {want}");
    Ok(())
}

/// Reads a data file to its end, `chunk` bytes per read (`ENOMSG`, which
/// only PRE_COPY may answer, is an error here).
fn read_to_end(f: &DataFile, chunk: usize) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    let mut buf = vec![0u8; chunk];
    loop {
        match f.read_chunk(&mut buf).map_err(|e| e.to_string())? {
            Some(0) => return Ok(out),
            Some(n) => out.extend_from_slice(&buf[..n]),
            None => return Err("read answered ENOMSG outside PRE_COPY".into()),
        }
    }
}

/// Reads a PRE_COPY data file until it answers `ENOMSG`.
fn read_precopy(f: &DataFile) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        match f.read_chunk(&mut buf).map_err(|e| e.to_string())? {
            Some(0) => return Err("PRE_COPY read answered 0 (end of stream)".into()),
            Some(n) => out.extend_from_slice(&buf[..n]),
            None => return Ok(out),
        }
    }
}

/// The v2 save of a running device: STOP_COPY, the stream, then STOP and
/// RUNNING again.
fn save_v2(dev: &Device, chunk: usize) -> Result<Vec<u8>, String> {
    let f = set_with_file(dev, V2State::StopCopy)?;
    let s = read_to_end(&f, chunk)?;
    expect_v2(dev, V2State::StopCopy, "after reading the stream")?;
    ensure!(set(dev, V2State::Running)?.is_none(), "RUNNING gave a file");
    Ok(s)
}

/// The v2 restore: RESUMING, the stream in pieces of `pieces` (cycled),
/// then STOP and RUNNING.
fn restore_v2(dev: &Device, stream: &[u8], pieces: &[usize]) -> TResult {
    let f = set_with_file(dev, V2State::Resuming)?;
    let mut pos = 0;
    for n in pieces.iter().cycle() {
        if pos == stream.len() {
            break;
        }
        let end = (pos + n).min(stream.len());
        f.write_all(&stream[pos..end])
            .ctx(&format!("write stream bytes {pos}..{end}"))?;
        pos = end;
    }
    set(dev, V2State::Stop)?;
    set(dev, V2State::Running)?;
    Ok(())
}

/// The length of a stream that carries every page of `spec` once.
fn full_len(spec: &TypeSpec) -> u64 {
    32 + spec.mem_size / 4096 * 4112 + mig::REGS_RECORD_LEN as u64 + 32
}

/// A filled device of `spec` and its snapshot.
fn filled(
    env: &Env,
    spec: &'static TypeSpec,
    path: OpenPath,
    seed: u8,
) -> Result<(Fixture, Snap), String> {
    let fx = open(env, spec, path)?;
    fill(fx.dev(), spec, seed)?;
    let want = snap(fx.dev(), spec)?;
    Ok((fx, want))
}

// ---------------------------------------------------------------------------
// Tests

pub fn v2_discovery(env: &Env) -> TResult {
    for spec in [&SMALL, &LARGE] {
        let fx = open(env, spec, OpenPath::Legacy)?;
        let dev = fx.dev();
        ensure_eq!(
            dev.v2_flags().ctx("migration flags")?,
            FLAGS,
            "{}: flags",
            spec.suffix
        );
        expect_v2(dev, V2State::Running, "after open")?;
        ensure_eq!(
            dev.v2_data_size().ctx("stop-copy size")?,
            full_len(spec),
            "{}: stop-copy size before any save",
            spec.suffix
        );
        // The region's view is unchanged by v2's presence.
        ensure_eq!(
            dev.device_state_raw().ctx("device_state")?,
            0,
            "region state"
        );
        // ERROR is never a target; 8 is not a state.
        expect_errno(dev.v2_set_state(V2State::Error), libc::EINVAL, "set ERROR")?;
        expect_v2(dev, V2State::Running, "after the refused changes")?;
    }
    Ok(())
}

pub fn v2_roundtrip(env: &Env) -> TResult {
    for (spec, from, to, chunk, pieces) in [
        (
            &SMALL,
            OpenPath::Legacy,
            OpenPath::Iommufd,
            4093,
            &[1usize, 7, 4093][..],
        ),
        (
            &LARGE,
            OpenPath::Iommufd,
            OpenPath::Legacy,
            1 << 20,
            &[1 << 20][..],
        ),
        (
            &SMALL,
            OpenPath::Legacy,
            OpenPath::Legacy,
            64,
            &[4112, 1, 31][..],
        ),
    ] {
        let what = format!("{} {from}->{to}", spec.suffix);
        let (a, want) = filled(env, spec, from, 0x3c)?;
        let s = save_v2(a.dev(), chunk).map_err(|e| format!("{what}: save: {e}"))?;
        ensure_eq!(s.len() as u64, full_len(spec), "{what}: stream length");
        layout(&s, spec)?;
        let b = open(env, spec, to)?;
        restore_v2(b.dev(), &s, pieces).map_err(|e| format!("{what}: restore: {e}"))?;
        same(&snap(b.dev(), spec)?, &want, true, &what)?;
        // The source runs again and was not changed by the save.
        check_writable(a.dev(), &format!("{what}: source after the save"))?;
        same(
            &snap(a.dev(), spec)?,
            &want,
            true,
            &format!("{what}: source"),
        )?;
    }
    Ok(())
}

/// `read(2)` of data file `f` into `len` bytes at `at`, which may be
/// unmapped: the count, or the errno.
fn raw_read(f: &DataFile, at: *mut u8, len: usize) -> Result<usize, i32> {
    use std::os::fd::{AsFd, AsRawFd};
    // SAFETY: read(2) only writes through `at`, and a fault there is the
    // kernel's to report (EFAULT): no memory of this process is touched
    // but the `len` bytes at `at`, which belong to the caller's mapping or
    // to no mapping at all.
    let n = unsafe { libc::read(f.as_fd().as_raw_fd(), at.cast(), len) };
    usize::try_from(n).map_err(|_| std::io::Error::last_os_error().raw_os_error().unwrap_or(0))
}

pub fn v2_read_faults(env: &Env) -> TResult {
    // Reads go straight from device memory to the user's buffer; a fault
    // there ends the read with the bytes that arrived, or EFAULT with none,
    // and loses nothing of the stream.
    let spec = &SMALL;
    let (a, want) = filled(env, spec, OpenPath::Iommufd, 0x51)?;
    let f = set_with_file(a.dev(), V2State::StopCopy)?;
    let page = 4096;
    // SAFETY: a new private anonymous mapping of three pages, owned here
    // and unmapped below; nothing else refers to it.
    let map = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            3 * page,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    ensure!(map != libc::MAP_FAILED, "mmap of three pages failed");
    let base = map.cast::<u8>();
    // SAFETY: the third page of the mapping above, unmapped so that
    // reads into it fault.
    let hole = unsafe { base.add(2 * page) };
    // SAFETY: `hole` and one page from it are part of the mapping.
    let unmapped = unsafe { libc::munmap(hole.cast(), page) };
    ensure!(unmapped == 0, "munmap of the third page failed");
    // 4196 mapped bytes, then the hole.
    let start = page - 100;
    // SAFETY: `start` is inside the mapping's first page.
    let at = unsafe { base.add(start) };
    let res = (|| {
        let n =
            raw_read(&f, at, 2 * page).map_err(|e| format!("read across the hole: errno {e}"))?;
        ensure!(
            n > 0 && n <= 2 * page - start,
            "read across the hole gave {n} bytes, want 1..={}",
            2 * page - start
        );
        // SAFETY: the read above wrote `n` bytes at `at`, all mapped.
        let mut s = unsafe { std::slice::from_raw_parts(at, n) }.to_vec();
        match raw_read(&f, hole, 100) {
            Err(libc::EFAULT) => {}
            r => return Err(format!("read into the hole: {r:?}, want errno EFAULT")),
        }
        s.extend(read_to_end(&f, 1 << 16)?);
        Ok(s)
    })();
    // SAFETY: the two pages of the mapping still mapped; `res` holds a
    // copy of what was read into them.
    unsafe { libc::munmap(map, 2 * page) };
    let s = res?;
    ensure_eq!(
        s.len() as u64,
        full_len(spec),
        "stream length after the faults"
    );
    layout(&s, spec)?;
    set(a.dev(), V2State::Running)?;
    let b = open(env, spec, OpenPath::Legacy)?;
    restore_v2(b.dev(), &s, &[1 << 20])?;
    same(
        &snap(b.dev(), spec)?,
        &want,
        true,
        "restored after the faults",
    )
}

pub fn v2_region_interop(env: &Env) -> TResult {
    // Region save, v2 restore.
    let (a, want) = filled(env, &SMALL, OpenPath::Legacy, 0x51)?;
    let s = save(a.dev(), 0)?;
    let b = open(env, &SMALL, OpenPath::Legacy)?;
    restore_v2(b.dev(), &s, &[4093]).map_err(|e| format!("v2 restore of a region stream: {e}"))?;
    same(
        &snap(b.dev(), &SMALL)?,
        &want,
        true,
        "region stream into v2",
    )?;
    // v2 save, region restore.
    let (c, want) = filled(env, &SMALL, OpenPath::Iommufd, 0x52)?;
    let s = save_v2(c.dev(), 1 << 16)?;
    let d = open(env, &SMALL, OpenPath::Legacy)?;
    restore(d.dev(), &s, 4096).map_err(|e| format!("region restore of a v2 stream: {e}"))?;
    same(
        &snap(d.dev(), &SMALL)?,
        &want,
        true,
        "v2 stream into the region",
    )
}

pub fn v2_precopy(env: &Env) -> TResult {
    let spec = &SMALL;
    let (a, _) = filled(env, spec, OpenPath::Legacy, 0x61)?;
    let dev = a.dev();
    let f = set_with_file(dev, V2State::PreCopy)?;
    let initial = 32 + spec.mem_size / 4096 * 4112;
    let info = f.precopy_info().ctx("PRECOPY_INFO at start")?;
    ensure_eq!(
        (info.initial_bytes, info.dirty_bytes),
        (initial, 0),
        "info at start"
    );
    let mut stream = read_precopy(&f)?;
    ensure_eq!(stream.len() as u64, initial, "initial image length");
    let info = f.precopy_info().ctx("PRECOPY_INFO after the image")?;
    ensure_eq!(
        (info.initial_bytes, info.dirty_bytes),
        (0, 0),
        "info after the image"
    );
    // The device runs in PRE_COPY: a write dirties one page.
    check_quiesced(dev, false, "PRE_COPY")?;
    dev.w8(B2, 3 * 4096 + 5, 0xa5)?;
    let info = f.precopy_info().ctx("PRECOPY_INFO after a write")?;
    ensure_eq!(
        (info.initial_bytes, info.dirty_bytes),
        (0, 4112),
        "info after a write"
    );
    stream.extend(read_precopy(&f)?);
    ensure_eq!(
        stream.len() as u64,
        initial + 4112,
        "stream after the resend"
    );
    // The stream goes on in STOP_COPY through the same file.
    ensure!(
        set(dev, V2State::PreCopyP2p)?.is_none(),
        "PRE_COPY_P2P gave a file"
    );
    ensure!(
        set(dev, V2State::StopCopy)?.is_none(),
        "STOP_COPY after PRE_COPY gave a file"
    );
    check_quiesced(dev, true, "STOP_COPY")?;
    expect_errno(f.precopy_info(), libc::EINVAL, "PRECOPY_INFO in STOP_COPY")?;
    stream.extend(read_to_end(&f, 4096)?);
    layout(&stream, spec)?;
    let want = snap(dev, spec)?;
    set(dev, V2State::Stop)?;
    let b = open(env, spec, OpenPath::Iommufd)?;
    restore_v2(b.dev(), &stream, &[100_000])?;
    same(&snap(b.dev(), spec)?, &want, false, "after pre-copy")?;
    // Cancel: PRE_COPY back to RUNNING ends the stream and its file.
    set(dev, V2State::Running)?;
    let f = set_with_file(dev, V2State::PreCopy)?;
    set(dev, V2State::Running)?;
    check_quiesced(dev, false, "RUNNING after a cancelled PRE_COPY")?;
    expect_errno(
        f.read_chunk(&mut [0u8; 64]),
        libc::ENODEV,
        "read after the cancel",
    )
}

pub fn v2_one_interface(env: &Env) -> TResult {
    let fx = open(env, &SMALL, OpenPath::Legacy)?;
    let dev = fx.dev();
    // A region session refuses v2.
    go(dev, &[DeviceState::Running, DeviceState::Setup])?;
    expect_errno(
        dev.v2_set_state(V2State::Stop),
        libc::EBUSY,
        "v2 STOP in SETUP",
    )?;
    expect_errno(
        dev.dma_logging_start(4096, &[(0, 1 << 20)]),
        libc::EBUSY,
        "DMA logging in SETUP",
    )?;
    go(dev, &[DeviceState::Cancelled, DeviceState::Running])?;
    // A v2 session refuses the region.
    set(dev, V2State::Stop)?;
    expect_errno(
        dev.set_state(DeviceState::Setup),
        libc::EBUSY,
        "region SETUP in v2 STOP",
    )?;
    set(dev, V2State::Running)?;
    dev.dma_logging_start(4096, &[(0, 1 << 20)])
        .ctx("DMA logging start")?;
    expect_errno(
        dev.set_state(DeviceState::Setup),
        libc::EBUSY,
        "region SETUP while logging",
    )?;
    dev.dma_logging_stop().ctx("DMA logging stop")?;
    go(
        dev,
        &[
            DeviceState::Setup,
            DeviceState::Cancelled,
            DeviceState::Running,
        ],
    )
}

pub fn v2_stale_files(env: &Env) -> TResult {
    // Reset: back to RUNNING, the file refused.
    let mut a = open(env, &SMALL, OpenPath::Legacy)?;
    let f = set_with_file(a.dev(), V2State::PreCopy)?;
    a.dev().reset().ctx("reset")?;
    expect_v2(a.dev(), V2State::Running, "after reset")?;
    expect_errno(
        f.read_chunk(&mut [0u8; 64]),
        libc::ENODEV,
        "read after reset",
    )?;
    expect_errno(f.precopy_info(), libc::ENODEV, "PRECOPY_INFO after reset")?;
    // Close: the file outlives the open device.
    let f = set_with_file(a.dev(), V2State::StopCopy)?;
    a.reopen(OpenPath::Iommufd)?;
    expect_v2(a.dev(), V2State::Running, "after close and open")?;
    expect_errno(
        f.read_chunk(&mut [0u8; 64]),
        libc::ENODEV,
        "read after close",
    )?;
    // Removal: the file outlives the mdev; with only data files left open,
    // the module stays loaded.
    let b = open(env, &SMALL, OpenPath::Iommufd)?;
    let w = set_with_file(b.dev(), V2State::Resuming)?;
    drop(b);
    drop(a);
    expect_errno(w.write_all(&[0u8; 32]), libc::ENODEV, "write after removal")?;
    expect_errno(
        f.read_chunk(&mut [0u8; 64]),
        libc::ENODEV,
        "read after removal",
    )?;
    let rc = delete_module_nonblock(&env.module);
    ensure!(
        rc == Some(libc::EWOULDBLOCK) || rc == Some(libc::EBUSY),
        "delete_module with a data file open: {rc:?}, want EWOULDBLOCK or EBUSY"
    );
    drop(w);
    drop(f);
    Ok(())
}

/// `delete_module(name, O_NONBLOCK)`; returns its errno (`None` if the
/// module was unloaded).
fn delete_module_nonblock(name: &str) -> Option<i32> {
    let c = std::ffi::CString::new(name).ok()?;
    // SAFETY: `c` is a NUL-terminated string valid for the call.
    let rc = unsafe { libc::syscall(libc::SYS_delete_module, c.as_ptr(), libc::O_NONBLOCK) };
    (rc != 0).then(|| std::io::Error::last_os_error().raw_os_error().unwrap_or(0))
}

pub fn v2_destination_setup(env: &Env) -> TResult {
    // What QEMU's destination does: config writes (the source's values)
    // and SET_IRQS while RESUMING and while STOP.
    let (a, want) = filled(env, &SMALL, OpenPath::Legacy, 0x71)?;
    let s = save_v2(a.dev(), 1 << 20)?;
    let at = cfg::COMMAND as usize;
    let command = u16::from_le_bytes([want.config[at], want.config[at + 1]]);
    let b = open(env, &SMALL, OpenPath::Legacy)?;
    let dev = b.dev();
    let f = set_with_file(dev, V2State::Resuming)?;
    let efd = EventFd::new().ctx("eventfd")?;
    dev.w16(CF, cfg::COMMAND, command)
        .map_err(|e| format!("config write in RESUMING: {e}"))?;
    dev.set_irq_eventfd(1, Some(efd.fd()))
        .ctx("SET_IRQS MSI in RESUMING")?;
    f.write_all(&s).ctx("write the stream")?;
    set(dev, V2State::Stop)?;
    dev.w16(CF, cfg::COMMAND, command)
        .map_err(|e| format!("config write in STOP: {e}"))?;
    dev.set_irq_eventfd(1, Some(efd.fd()))
        .ctx("SET_IRQS MSI in STOP")?;
    expect_errno(
        dev.write32(region::BAR0, bar0::SCRATCH, 1),
        libc::EBUSY,
        "BAR0 write in STOP",
    )?;
    set(dev, V2State::Running)?;
    same(&snap(dev, &SMALL)?, &want, true, "destination")
}

pub fn v2_corrupt_stream(env: &Env) -> TResult {
    let (a, _) = filled(env, &SMALL, OpenPath::Legacy, 0x81)?;
    let mut s = save_v2(a.dev(), 1 << 20)?;
    let last = s.len() - 1;
    s[last] ^= 1;
    let b = open(env, &SMALL, OpenPath::Legacy)?;
    let dev = b.dev();
    let f = set_with_file(dev, V2State::Resuming)?;
    let r = f.write_all(&s);
    if r.is_ok() {
        expect_errno(
            dev.v2_set_state(V2State::Stop),
            libc::EINVAL,
            "STOP after a bad stream",
        )?;
    } else {
        expect_errno(r, libc::EINVAL, "write of a bad stream")?;
    }
    expect_v2(dev, V2State::Resuming, "after the refused stream")?;
    expect_errno(
        f.write_all(&[0u8; 8]),
        libc::EINVAL,
        "write after the refusal",
    )?;
    dev.reset().ctx("reset")?;
    expect_v2(dev, V2State::Running, "after reset")
}

pub fn v2_dma_logging(env: &Env) -> TResult {
    for path in [OpenPath::Legacy, OpenPath::Iommufd] {
        dma_logging_on(env, path).map_err(|e| format!("{path}: {e}"))?;
    }
    Ok(())
}

fn dma_logging_on(env: &Env, path: OpenPath) -> TResult {
    let mut fx = open(env, &SMALL, path)?;
    let dev = fx.dev();
    let iova = 0x4000_0000u64;
    let ram = Ram::map(dev, iova, 64, 0)?;
    let len = ram.len();
    let bits = |v: &[u64]| -> Vec<u64> {
        (0..len / 4096)
            .filter(|&k| v[(k / 64) as usize] >> (k % 64) & 1 == 1)
            .collect()
    };
    let report = |ps: u64| {
        dev.dma_logging_report(iova, len, ps)
            .ctx("DMA logging report")
    };
    expect_errno(
        dev.dma_logging_report(iova, len, 4096),
        libc::EINVAL,
        "report before start",
    )?;
    dev.dma_logging_start(4096, &[(iova, len)])
        .ctx("DMA logging start")?;
    ensure_eq!(
        bits(&report(4096)?),
        Vec::<u64>::new(),
        "nothing written yet"
    );
    run_ok(
        dev,
        &Cmd::fill(iova + 5 * 4096 + 100, 2 * 4096, 0xdead_beef),
    )?;
    ensure_eq!(
        bits(&report(4096)?),
        vec![5, 6, 7],
        "a FILL over three pages"
    );
    ensure_eq!(
        bits(&report(4096)?),
        Vec::<u64>::new(),
        "reported pages are forgotten"
    );
    // A ring pinned for writing is dirty on every report; a read-only one
    // never.
    pin_ring_ok(dev, iova + 20 * 4096, 4, true)?;
    for i in 0..2 {
        ensure_eq!(
            bits(&report(4096)?),
            vec![20, 21, 22, 23],
            "writable ring, report {i}"
        );
    }
    wr(dev, dma::RING_CTRL, 0)?;
    pin_ring_ok(dev, iova + 20 * 4096, 4, false)?;
    ensure_eq!(bits(&report(4096)?), Vec::<u64>::new(), "read-only ring");
    // Coarser pages: a write in page 9 sets the bit of 8 KiB page 4.
    run_ok(dev, &Cmd::fill(iova + 9 * 4096, 4, 1))?;
    let v = dev
        .dma_logging_report(iova, len, 8192)
        .ctx("8 KiB report")?;
    ensure_eq!(v[0], 1 << 4, "8 KiB report of page 9");
    // A report of part of the range leaves the rest.
    run_ok(dev, &Cmd::fill(iova + 30 * 4096, 4, 1))?;
    run_ok(dev, &Cmd::fill(iova + 40 * 4096, 4, 1))?;
    let v = dev
        .dma_logging_report(iova + 32 * 4096, 16 * 4096, 4096)
        .ctx("partial report")?;
    ensure_eq!(v[0], 1 << 8, "partial report: page 40");
    ensure_eq!(
        bits(&report(4096)?),
        vec![30],
        "the rest after a partial report"
    );
    // A reset keeps logging on and the log: those pages are still dirty
    // in guest memory.
    run_ok(dev, &Cmd::fill(iova + 50 * 4096, 4, 1))?;
    dev.reset().ctx("reset")?;
    ensure_eq!(bits(&report(4096)?), vec![50], "report after a reset");
    dev.dma_logging_stop().ctx("DMA logging stop")?;
    expect_errno(
        dev.dma_logging_report(iova, len, 4096),
        libc::EINVAL,
        "report after stop",
    )?;
    // Writes while logging is off are not remembered for the next start.
    run_ok(dev, &Cmd::fill(iova + 2 * 4096, 4, 1))?;
    dev.dma_logging_start(4096, &[(iova, len)])
        .ctx("second start")?;
    ensure_eq!(
        bits(&report(4096)?),
        Vec::<u64>::new(),
        "fresh log after a restart"
    );
    // A close turns logging off.
    drop(ram);
    fx.reopen(path)?;
    let dev = fx.dev();
    expect_errno(
        dev.dma_logging_report(iova, len, 4096),
        libc::EINVAL,
        "report after a close",
    )?;
    dev.dma_logging_start(4096, &[(iova, len)])
        .ctx("start after the close")?;
    dev.dma_logging_stop().ctx("stop")
}
