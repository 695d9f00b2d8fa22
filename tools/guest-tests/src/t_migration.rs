// SPDX-License-Identifier: GPL-2.0
//! The migration region (region 9, Documentation/migration-abi.rst):
//! discovery, field access, the transition matrix, save and restore with
//! every chunking, pre-copy with a running device, damaged streams, FAILED
//! and CANCELLED, quiescing, reset and close mid-migration, two threads at
//! once, dirty queries, and `vfio-mig save`/`restore`.
//!
//! Every test starts from fresh mdevs and compares against `device::mig`.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use vfio_mig::migration::{state_name, Field};
use vfio_mig::stream::{self, Layout};
use vfio_mig::SaveOptions;
use vfio_mig::{errno_name, Device, DeviceState, OpenPath, Pending};

use crate::device::{
    bar0, cfg, mig, region, region_offset, TypeSpec, LARGE, MIGRATION_FLAGS, MIGRATION_TYPE, SMALL,
};
use crate::t_bars::{check_bar0_power_on, check_bar2_zero};
use crate::t_config::{check_power_on, same_bytes, snapshot};
use crate::util::{expect_errno, pattern, skip, Ctx, Env, Fixture, Io, TResult};
use crate::{ensure, ensure_eq, ensure_hex};

const B0: u32 = region::BAR0;
const B2: u32 = region::BAR2;
const CF: u32 = region::CONFIG;
const M: u32 = region::MIGRATION;
const EINVAL: i32 = libc::EINVAL;
const EBUSY: i32 = libc::EBUSY;

// ---------------------------------------------------------------------------
// Helpers

/// Opens a fresh mdev; skips the test while the module has no migration
/// region (size 0).
pub(crate) fn open(env: &Env, spec: &'static TypeSpec, path: OpenPath) -> Result<Fixture, String> {
    let fx = env.open(spec, path)?;
    let r = fx.dev().region_info(M).ctx("GET_REGION_INFO 9")?;
    if r.size == 0 {
        skip("region 9 has size 0 (migration region not implemented yet)")?;
    }
    Ok(fx)
}

pub(crate) fn expect_state(dev: &Device, want: DeviceState, what: &str) -> TResult {
    let got = dev
        .device_state_raw()
        .ctx(&format!("{what}: read device_state"))?;
    ensure!(
        got == want.raw(),
        "{what}: device_state is {}, want {want}",
        state_name(got)
    );
    Ok(())
}

pub(crate) fn set_state(dev: &Device, s: DeviceState) -> TResult {
    dev.set_state(s).map_err(|e| e.to_string())
}

/// Takes the device through the states of `path`, in order.
pub(crate) fn go(dev: &Device, path: &[DeviceState]) -> TResult {
    path.iter().try_for_each(|s| set_state(dev, *s))
}

/// Reaches `s` from NONE by a valid path. RESUME and RESUME_COMPLETED get
/// all of `stream` (a complete stream for this device's type).
pub(crate) fn reach(dev: &Device, s: DeviceState, stream: &[u8]) -> TResult {
    use DeviceState::*;
    match s {
        None => {}
        Running => go(dev, &[Running])?,
        Setup => go(dev, &[Running, Setup])?,
        PreCopy => go(dev, &[Running, Setup, PreCopy])?,
        StopNCopy => go(dev, &[Running, Setup, PreCopy, StopNCopy])?,
        SaveCompleted => go(dev, &[Running, Setup, PreCopy, StopNCopy, SaveCompleted])?,
        Resume => {
            go(dev, &[Resume])?;
            feed(dev, stream, &mut |_| 64 << 10).map_err(|(p, e)| format!("at {p}: {e}"))?;
        }
        ResumeCompleted => {
            go(dev, &[Resume])?;
            feed(dev, stream, &mut |_| 64 << 10).map_err(|(p, e)| format!("at {p}: {e}"))?;
            go(dev, &[ResumeCompleted])?;
        }
        Failed => go(dev, &[Running, Setup, Failed])?,
        Cancelled => go(dev, &[Running, Setup, Cancelled])?,
    }
    expect_state(dev, s, &format!("after the path to {s}"))
}

/// Hands `stream` to the device with set-buffer actions, `chunk(pos)` bytes
/// at a time, at the start of the data area. On failure: where, and why.
pub(crate) fn feed(
    dev: &Device,
    stream: &[u8],
    chunk: &mut dyn FnMut(usize) -> usize,
) -> Result<(), (usize, vfio_mig::Error)> {
    feed_at(dev, stream, chunk, &mut |_, _| mig::DATA_OFF)
}

/// [`feed`] with the place of each chunk chosen by `at(index, len)`.
fn feed_at(
    dev: &Device,
    stream: &[u8],
    chunk: &mut dyn FnMut(usize) -> usize,
    at: &mut dyn FnMut(usize, usize) -> u64,
) -> Result<(), (usize, vfio_mig::Error)> {
    let mut pos = 0;
    let mut i = 0;
    while pos < stream.len() {
        let n = chunk(pos).clamp(1, stream.len() - pos);
        dev.set_buffer(&stream[pos..pos + n], at(i, n))
            .map_err(|e| (pos, e))?;
        pos += n;
        i += 1;
    }
    Ok(())
}

/// RESUME, the whole stream in `chunk`-byte pieces, RESUME_COMPLETED,
/// RUNNING.
pub(crate) fn restore(dev: &Device, stream: &[u8], chunk: usize) -> TResult {
    dev.set_state(DeviceState::Resume)
        .map_err(|e| e.to_string())?;
    feed(dev, stream, &mut |_| chunk)
        .map_err(|(p, e)| format!("set buffer at stream byte {p}: {e}"))?;
    go(dev, &[DeviceState::ResumeCompleted, DeviceState::Running])
}

/// Reads chunks until get buffer returns 0; appends them to `out`.
pub(crate) fn drain(dev: &Device, out: &mut Vec<u8>) -> Result<usize, String> {
    let mut buf = Vec::new();
    let mut n = 0;
    loop {
        let len = dev.get_buffer(&mut buf).map_err(|e| e.to_string())?;
        if len == 0 {
            return Ok(n);
        }
        out.extend_from_slice(&buf);
        n += len;
    }
}

/// Saves with the library's flow (one pre-copy pass).
pub(crate) fn save(dev: &Device, threshold: u64) -> Result<Vec<u8>, String> {
    let mut v = Vec::new();
    let opts = SaveOptions {
        threshold,
        ..Default::default()
    };
    let rep = dev.save_to(&mut v, opts).map_err(|e| e.to_string())?;
    ensure_eq!(
        rep.bytes,
        v.len() as u64,
        "save report: bytes vs stream length"
    );
    Ok(v)
}

fn pending(dev: &Device) -> Result<Pending, String> {
    dev.pending().map_err(|e| e.to_string())
}

/// Walks a stream and checks its header against `spec`.
pub(crate) fn layout(s: &[u8], spec: &TypeSpec) -> Result<Layout, String> {
    let l = stream::walk(s).map_err(|e| format!("saved stream: {e}"))?;
    ensure_eq!(
        l.header.type_id,
        spec.stream_type_id,
        "stream header: mdev type id of {}",
        spec.suffix
    );
    ensure_hex!(
        l.header.mem_size,
        spec.mem_size,
        "stream header: memory size"
    );
    ensure_eq!(
        l.header.reg_len as usize,
        mig::REGS_BLOB_LEN,
        "stream header: register-state length R"
    );
    ensure_eq!(
        l.regs().map(|r| r.len),
        Some(mig::REGS_RECORD_LEN),
        "register record length"
    );
    Ok(l)
}

/// Everything a migration must carry: config space, BAR0 registers, BAR2.
#[derive(Clone)]
pub(crate) struct Snap {
    pub(crate) config: Vec<u8>,
    regs: Vec<u32>,
    mem: Vec<u8>,
}

const REG_NAMES: [&str; 9] = [
    "ID",
    "VERSION",
    "SCRATCH",
    "STATUS",
    "IRQ_STATUS",
    "IRQ_ENABLE",
    "DOORBELL",
    "MEM_SIZE",
    "IRQ_COUNT",
];

pub(crate) fn snap(dev: &Device, spec: &TypeSpec) -> Result<Snap, String> {
    let regs = (0..bar0::END)
        .step_by(4)
        .map(|off| dev.r32(B0, off))
        .collect::<Result<Vec<u32>, String>>()?;
    let mut mem = vec![0u8; spec.mem_size as usize];
    for (i, piece) in mem.chunks_mut(64 << 10).enumerate() {
        dev.read_region(B2, (i << 16) as u64, piece)
            .ctx("read device memory")?;
    }
    Ok(Snap {
        config: snapshot(dev)?,
        regs,
        mem,
    })
}

/// Compares two snapshots; STATUS only when `status` (it shows QUIESCED).
pub(crate) fn same(got: &Snap, want: &Snap, status: bool, what: &str) -> TResult {
    same_bytes(&got.config, &want.config, &format!("{what}: config space"))?;
    for (i, name) in REG_NAMES.iter().enumerate() {
        if !status && i as u64 * 4 == bar0::STATUS {
            continue;
        }
        ensure_hex!(got.regs[i], want.regs[i], "{what}: BAR0 {name}");
    }
    same_bytes(&got.mem, &want.mem, &format!("{what}: device memory"))
}

/// Gives every kind of migrated state a value that depends on `seed`:
/// registers (SCRATCH, IRQ_ENABLE, doorbell count and IRQ_STATUS), config
/// space (BAR0/BAR2 bases, command, interrupt line, MSI), all of BAR2.
pub(crate) fn fill(dev: &Device, spec: &TypeSpec, seed: u8) -> TResult {
    let s = seed as u32;
    dev.w32(B0, bar0::SCRATCH, 0x5ca7_0000 | s << 8 | s)?;
    dev.w32(B0, bar0::IRQ_ENABLE, bar0::IRQ_DOORBELL)?;
    for _ in 0..(s % 5 + 2) {
        dev.w32(B0, bar0::DOORBELL, 1)?;
    }
    dev.w32(CF, cfg::BAR0, 0xfe80_0000 | (s & 0xff) << 12)?;
    dev.w32(CF, cfg::BAR2, 0xc000_0000)?;
    dev.w32(CF, cfg::BAR3, 0x10 + s)?;
    dev.w16(CF, cfg::COMMAND, 0x0006 | cfg::COMMAND_INTX_DISABLE)?;
    dev.w8(CF, cfg::INT_LINE, seed)?;
    dev.w16(CF, cfg::MSI_FLAGS, cfg::MSI_FLAGS_ENABLE)?;
    dev.w32(CF, cfg::MSI_ADDR_LO, 0xfee0_1000 | s << 4)?;
    dev.w32(CF, cfg::MSI_ADDR_HI, s)?;
    dev.w16(CF, cfg::MSI_DATA, 0x4000 | s as u16)?;
    let mut piece = vec![0u8; 64 << 10];
    let mut off = 0;
    while off < spec.mem_size {
        for (i, b) in piece.iter_mut().enumerate() {
            *b = pattern(off + i as u64, seed);
        }
        dev.write_region(B2, off, &piece)
            .ctx("fill device memory")?;
        off += piece.len() as u64;
    }
    ensure_hex!(
        dev.r32(B0, bar0::DOORBELL)?,
        s % 5 + 2,
        "doorbell count after filling"
    );
    Ok(())
}

/// The whole device is at power-on and not quiesced.
pub(crate) fn check_power_on_all(dev: &Device, spec: &TypeSpec, what: &str) -> TResult {
    let r = (|| {
        check_power_on(dev, spec)?;
        check_bar0_power_on(dev, spec)?;
        check_bar2_zero(dev, spec)
    })();
    r.map_err(|e| format!("{what}: {e}"))
}

/// BAR0 and BAR2 writes work (and are undone, so snapshots still hold).
pub(crate) fn check_writable(dev: &Device, what: &str) -> TResult {
    let old = dev.r32(B0, bar0::SCRATCH)?;
    dev.write32(B0, bar0::SCRATCH, !old)
        .ctx(&format!("{what}: BAR0 SCRATCH write"))?;
    ensure_hex!(
        dev.r32(B0, bar0::SCRATCH)?,
        !old,
        "{what}: SCRATCH read back"
    );
    dev.w32(B0, bar0::SCRATCH, old)?;
    let b = dev.r8(B2, 4097)?;
    dev.write8(B2, 4097, !b)
        .ctx(&format!("{what}: BAR2 write"))?;
    ensure_hex!(dev.r8(B2, 4097)?, !b, "{what}: BAR2 read back");
    dev.w8(B2, 4097, b)
}

/// STATUS.QUIESCED as the state says.
pub(crate) fn check_quiesced(dev: &Device, quiesced: bool, what: &str) -> TResult {
    let st = dev.r32(B0, bar0::STATUS)?;
    ensure!(
        (st & bar0::STATUS_QUIESCED != 0) == quiesced,
        "{what}: STATUS {st:#x}, want QUIESCED {}",
        if quiesced { "set" } else { "clear" }
    );
    Ok(())
}

/// A saved stream of a filled device of `spec` and that device's snapshot.
pub(crate) fn saved(
    env: &Env,
    spec: &'static TypeSpec,
    seed: u8,
) -> Result<(Vec<u8>, Snap), String> {
    let a = open(env, spec, OpenPath::Legacy)?;
    fill(a.dev(), spec, seed)?;
    let want = snap(a.dev(), spec)?;
    let s = save(a.dev(), 0)?;
    layout(&s, spec)?;
    Ok((s, want))
}

// ---------------------------------------------------------------------------
// Discovery and access

pub fn migration_region_discovery(env: &Env) -> TResult {
    for (spec, path) in [(&SMALL, OpenPath::Legacy), (&LARGE, OpenPath::Iommufd)] {
        let fx = open(env, spec, path)?;
        let dev = fx.dev();
        let what = format!("{} ({path})", spec.suffix);
        for argsz in [32, mig::CAP_ARGSZ - 1] {
            let r = dev
                .region_info_raw(M, argsz)
                .ctx(&format!("{what}: GET_REGION_INFO 9 argsz {argsz}"))?;
            ensure_hex!(r.flags, MIGRATION_FLAGS, "{what}: argsz {argsz}: flags");
            ensure_eq!(
                r.argsz,
                mig::CAP_ARGSZ,
                "{what}: argsz {argsz}: argsz asked for"
            );
            ensure_eq!(r.cap_offset, 0, "{what}: argsz {argsz}: cap_offset");
            ensure_hex!(r.size, mig::SIZE, "{what}: argsz {argsz}: size");
            ensure_hex!(r.offset, region_offset(M), "{what}: argsz {argsz}: offset");
        }
        for argsz in [mig::CAP_ARGSZ, mig::CAP_ARGSZ + 1, 4096] {
            let r = dev
                .region_info_raw(M, argsz)
                .ctx(&format!("{what}: GET_REGION_INFO 9 argsz {argsz}"))?;
            ensure_hex!(r.flags, MIGRATION_FLAGS, "{what}: argsz {argsz}: flags");
            ensure_eq!(
                r.cap_offset,
                mig::CAP_OFFSET,
                "{what}: argsz {argsz}: cap_offset"
            );
            ensure_hex!(r.size, mig::SIZE, "{what}: argsz {argsz}: size");
            ensure_eq!(r.caps.len(), 2, "{what}: argsz {argsz}: capabilities");
            let c = &r.caps[0];
            ensure_eq!(
                (c.id, c.version, c.offset, c.next),
                (
                    mig::CAP_TYPE_ID,
                    mig::CAP_TYPE_VERSION,
                    mig::CAP_OFFSET,
                    mig::SPARSE_CAP_OFFSET
                ),
                "{what}: argsz {argsz}: CAP_TYPE (id, version, offset, next)"
            );
            ensure_eq!(
                c.region_type(),
                Some(MIGRATION_TYPE),
                "{what}: argsz {argsz}: (type, subtype)"
            );
            let c = &r.caps[1];
            ensure_eq!(
                (c.id, c.version, c.offset, c.next),
                (
                    mig::SPARSE_CAP_ID,
                    mig::SPARSE_CAP_VERSION,
                    mig::SPARSE_CAP_OFFSET,
                    0
                ),
                "{what}: argsz {argsz}: SPARSE_MMAP (id, version, offset, next)"
            );
            ensure_eq!(
                c.sparse_areas(),
                Some(mig::MMAP_AREAS.to_vec()),
                "{what}: argsz {argsz}: sparse-mmap areas"
            );
        }
        for index in [region::MIGRATION + 1, region::MIGRATION + 2, u32::MAX] {
            expect_errno(
                dev.region_info_raw(index, mig::CAP_ARGSZ),
                EINVAL,
                &format!("{what}: GET_REGION_INFO index {index:#x}"),
            )?;
        }
        for argsz in [0, 16, 31] {
            expect_errno(
                dev.region_info_raw(M, argsz),
                EINVAL,
                &format!("{what}: GET_REGION_INFO 9 argsz {argsz}"),
            )?;
        }
        // The library finds it by its type, with the documented layout.
        let r = dev.migration_region().ctx("migration_region()")?;
        ensure_eq!(
            (
                r.index(),
                r.data_offset,
                r.data_len,
                r.bitmap_offset,
                r.bitmap_len
            ),
            (
                M,
                mig::DATA_OFF,
                mig::DATA_LEN,
                mig::BITMAP_OFF,
                mig::BITMAP_LEN
            ),
            "{what}: migration_region() (index, data, data_len, bitmap, bitmap_len)"
        );
        // A fresh device is in NONE, reports nothing pending, and is not
        // quiesced.
        expect_state(dev, DeviceState::None, &format!("{what}: fresh device"))?;
        ensure_eq!(pending(dev)?, Pending::default(), "{what}: pending in NONE");
        check_quiesced(dev, false, &format!("{what}: fresh device"))?;
    }
    Ok(())
}

/// The plain (side-effect free) fields, read.
fn plain_fields(dev: &Device) -> Result<Vec<(Field, u64)>, String> {
    Field::ALL
        .iter()
        .filter(|f| !f.read_is_action())
        .map(|&f| Ok((f, dev.read_field(f).map_err(|e| e.to_string())?)))
        .collect()
}

pub fn migration_field_access(env: &Env) -> TResult {
    let mut fx = open(env, &SMALL, OpenPath::Legacy)?;
    for phase in [DeviceState::Running, DeviceState::PreCopy] {
        fx.reopen(OpenPath::Legacy)?;
        let dev = fx.dev();
        reach(dev, phase, &[])?;
        // Whole-field writes of the RW inputs take and read back.
        let inputs: &[(Field, u64)] = if phase == DeviceState::PreCopy {
            &[
                (Field::ThresholdSize, 0x3000),
                (Field::DataOffset, 0x2000),
                (Field::DirtyStartAddr, 0x7000),
                (Field::DirtyTotal, 99),
            ]
        } else {
            &[(Field::ThresholdSize, 0x3000), (Field::DataOffset, 0x2000)]
        };
        for &(f, v) in inputs {
            dev.write_field(f, v).map_err(|e| format!("{phase}: {e}"))?;
            ensure_hex!(
                dev.read_field(f).map_err(|e| e.to_string())?,
                v,
                "{phase}: {f} read back"
            );
        }
        let before = plain_fields(dev)?;
        let exact = |off: u64, len: usize| {
            Field::ALL
                .iter()
                .any(|f| f.offset() == off && f.width() == len)
        };
        // Every width 1..=8 at every offset in and just past the struct.
        let mut bad: Vec<(u64, usize)> = (0..mig::INFO_SIZE + 8)
            .flat_map(|off| (1..=8).map(move |len| (off, len)))
            .filter(|&(off, len)| !exact(off, len))
            .collect();
        // The reserved range to its last byte, and accesses that span it.
        for off in [0x80, 0x100, 0x800, 0xff8, 0xffc, 0xffe, 0xfff] {
            for len in [1, 2, 4, 8] {
                bad.push((off, len));
            }
        }
        bad.extend([
            (0, 76),
            (0, 80),
            (0, 4096),
            (68, 16),
            (72, 8),
            (4092, 8),
            (4095, 2),
        ]);
        for &(off, len) in &bad {
            let mut b = vec![0u8; len];
            expect_errno(
                dev.mig_pread(off, &mut b),
                EINVAL,
                &format!("{phase}: read of {len} at {off:#x}"),
            )?;
            for fill in [0x02u8, 0xff] {
                expect_errno(
                    dev.mig_pwrite(off, &vec![fill; len]),
                    EINVAL,
                    &format!("{phase}: write of {len} bytes {fill:#04x} at {off:#x}"),
                )?;
            }
            unchanged(
                dev,
                &before,
                &format!("{phase}: after accesses of {len} at {off:#x}"),
            )?;
        }
        // The output fields refuse whole writes.
        for f in Field::ALL.iter().filter(|f| !f.writable()) {
            for v in [0, 1, u64::MAX] {
                expect_errno(
                    dev.write_field(*f, v),
                    EINVAL,
                    &format!("{phase}: write of output field {f} = {v:#x}"),
                )?;
                unchanged(
                    dev,
                    &before,
                    &format!("{phase}: after writing {f} = {v:#x}"),
                )?;
            }
        }
        expect_state(dev, phase, &format!("{phase}: after the rejected accesses"))?;
    }
    Ok(())
}

/// Nothing moved: state, pending (no get buffer ran), the inputs.
fn unchanged(dev: &Device, before: &[(Field, u64)], what: &str) -> TResult {
    let after = plain_fields(dev)?;
    for ((f, b), (_, a)) in before.iter().zip(&after) {
        ensure_hex!(*a, *b, "{what}: {f}");
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// The state machine

pub fn migration_transitions(env: &Env) -> TResult {
    let (stream, _) = saved(env, &SMALL, 0x21)?;
    let mut fx = open(env, &SMALL, OpenPath::Legacy)?;
    for from in DeviceState::ALL {
        for to in DeviceState::ALL {
            fx.reopen(OpenPath::Legacy)?;
            let dev = fx.dev();
            reach(dev, from, &stream)?;
            let p0 = pending(dev)?;
            let ok = from == to || mig::allowed(from, to);
            let r = dev.set_state(to);
            let what = format!("{from} -> {to}");
            match (&r, ok) {
                (Ok(()), true) => expect_state(dev, to, &what)?,
                (Err(e), false) if e.errno() == Some(EINVAL) => {
                    expect_state(dev, from, &format!("{what} (refused)"))?
                }
                (Ok(()), false) => return Err(format!("{what}: succeeded, want EINVAL")),
                (Err(e), _) => {
                    return Err(format!(
                        "{what}: {e}; want {}",
                        if ok { "success" } else { "EINVAL" }
                    ))
                }
            }
            if from == to {
                // Writing the current state again changes nothing.
                ensure_eq!(pending(dev)?, p0, "{what}: pending after the no-op write");
                if from == DeviceState::Resume {
                    dev.set_state(DeviceState::ResumeCompleted).map_err(|e| {
                        format!("{what}: the stream was lost by the no-op write: {e}")
                    })?;
                }
            }
        }
        // Values that are no state.
        fx.reopen(OpenPath::Legacy)?;
        let dev = fx.dev();
        reach(dev, from, &stream)?;
        for v in [10u32, 11, 0x100, u32::MAX] {
            expect_errno(
                dev.set_state_raw(v),
                EINVAL,
                &format!("{from}: device_state = {v:#x}"),
            )?;
            expect_state(dev, from, &format!("{from} after device_state = {v:#x}"))?;
        }
    }
    // RESUME -> RESUME_COMPLETED needs a complete stream.
    for (len, what) in [(0, "no stream"), (stream.len() / 2, "half a stream")] {
        fx.reopen(OpenPath::Legacy)?;
        let dev = fx.dev();
        go(dev, &[DeviceState::Resume])?;
        feed(dev, &stream[..len], &mut |_| 4096).map_err(|(p, e)| format!("{p}: {e}"))?;
        expect_errno(
            dev.set_state(DeviceState::ResumeCompleted),
            EINVAL,
            &format!("RESUME_COMPLETED with {what}"),
        )?;
        expect_state(
            dev,
            DeviceState::Resume,
            &format!("after RESUME_COMPLETED with {what}"),
        )?;
    }
    Ok(())
}

/// Which actions each state allows: get pending (non-zero only while
/// saving), get buffer, set buffer (of 0 bytes: no stream effect), dirty
/// query. A refused action changes no state.
pub fn migration_actions_by_state(env: &Env) -> TResult {
    let (stream, _) = saved(env, &SMALL, 0x22)?;
    let mut fx = open(env, &SMALL, OpenPath::Legacy)?;
    for st in DeviceState::ALL {
        fx.reopen(OpenPath::Legacy)?;
        let dev = fx.dev();
        reach(dev, st, &stream)?;
        let p = pending(dev)?;
        if mig::SAVING.contains(&st) {
            ensure!(p.total() > 0, "{st}: nothing pending before any get buffer");
        } else {
            ensure_eq!(p, Pending::default(), "{st}: pending");
        }
        let mut buf = Vec::new();
        let r = dev.get_buffer(&mut buf);
        if mig::GET_BUFFER.contains(&st) {
            let n = r.map_err(|e| format!("{st}: {e}"))?;
            ensure!(n > 0, "{st}: the first get buffer returned nothing");
        } else {
            expect_errno(r, EINVAL, &format!("{st}: get buffer"))?;
        }
        let r = dev.set_buffer(&[], mig::DATA_OFF);
        if st == DeviceState::Resume {
            r.map_err(|e| format!("{st}: set buffer of 0 bytes: {e}"))?;
        } else {
            expect_errno(r, EINVAL, &format!("{st}: set buffer"))?;
        }
        let r = dev.dirty_bitmap(0, 64);
        if mig::SAVING.contains(&st) {
            r.map_err(|e| format!("{st}: dirty query: {e}"))?;
        } else {
            expect_errno(r, EINVAL, &format!("{st}: dirty query"))?;
        }
        expect_state(dev, st, &format!("{st}: after the actions"))?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Save and restore

pub fn migration_roundtrip_chunks(env: &Env) -> TResult {
    let a = open(env, &SMALL, OpenPath::Legacy)?;
    let dev_a = a.dev();
    fill(dev_a, &SMALL, 0x33)?;
    let want = snap(dev_a, &SMALL)?;
    let mut chunks = Vec::new();
    let mut on_chunk = |st: DeviceState, n: usize| {
        chunks.push((st, n));
        Ok(())
    };
    let mut s = Vec::new();
    let rep = dev_a
        .save_to(
            &mut s,
            SaveOptions {
                on_chunk: Some(&mut on_chunk),
                ..Default::default()
            },
        )
        .ctx("save")?;
    ensure_eq!(rep.bytes, s.len() as u64, "report bytes");
    ensure!(
        chunks.iter().all(|&(_, n)| n as u64 <= mig::DATA_LEN),
        "a chunk is larger than the data area: {chunks:?}"
    );
    let l = layout(&s, &SMALL)?;
    ensure_eq!(
        s.len() as u64,
        mig::full_stream_len(SMALL.mem_size),
        "length of the stream of an idle device (every page once)"
    );
    ensure_eq!(
        l.pages().count() as u64,
        SMALL.mem_size / mig::PAGE_SIZE,
        "page records"
    );
    // The source is stopped but unchanged.
    expect_state(dev_a, DeviceState::SaveCompleted, "source after save")?;
    check_quiesced(dev_a, true, "source in SAVE_COMPLETED")?;
    same(&snap(dev_a, &SMALL)?, &want, false, "source after save")?;

    let b = open(env, &SMALL, OpenPath::Iommufd)?;
    let dev_b = b.dev();
    // Set buffer refuses spans outside the data area and changes nothing:
    // the good stream still restores after them.
    go(dev_b, &[DeviceState::Resume])?;
    for (off, size) in [
        (0u64, 4u64),
        (mig::INFO_SIZE, 8),
        (mig::DATA_OFF - 1, 2),
        (mig::DATA_OFF + mig::DATA_LEN - 10, 11),
        (mig::DATA_OFF, mig::DATA_LEN + 1),
        (mig::BITMAP_OFF, 8),
        (mig::SIZE - 1, 1),
        (mig::DATA_OFF + 8, u64::MAX),
        (u64::MAX, 2),
    ] {
        bad_span(dev_b, off, size)?;
    }
    dev_b
        .set_buffer(&[], mig::DATA_OFF)
        .ctx("set buffer of 0 bytes")?;
    feed(dev_b, &s, &mut |_| 64 << 10)
        .map_err(|(p, e)| format!("good stream after refused spans: at {p}: {e}"))?;
    go(dev_b, &[DeviceState::ResumeCompleted, DeviceState::Running])
        .map_err(|e| format!("good stream after refused spans: {e}"))?;
    same(
        &snap(dev_b, &SMALL)?,
        &want,
        true,
        "B after refused spans and a good stream",
    )?;
    let len = s.len();
    // 1-byte chunks over the first and last 16 KiB: the header, the first
    // and last page records, the register and end records, every record
    // boundary byte by byte. (The whole stream byte by byte takes ~45 s
    // in the TCG+KASAN guest; these 32 KiB take ~5 s.)
    const EDGE: usize = 16 << 10;
    type Chunker = Box<dyn FnMut(usize) -> usize>;
    type Placer = Box<dyn FnMut(usize, usize) -> u64>;
    let variants: Vec<(&str, Chunker, Placer)> = vec![
        (
            "1-byte chunks for the first and last 16 KiB, 4093 between",
            Box::new(move |pos| {
                if pos < EDGE || pos + EDGE >= len {
                    1
                } else {
                    4093.min(len - EDGE - pos)
                }
            }),
            Box::new(|_, _| mig::DATA_OFF),
        ),
        (
            "4093-byte chunks at odd places in the data area",
            Box::new(|_| 4093),
            Box::new(|i, n| mig::DATA_OFF + 1 + (i as u64 * 40_009) % (mig::DATA_LEN - n as u64)),
        ),
        (
            "4096-byte chunks at the end of the data area",
            Box::new(|_| 4096),
            Box::new(|_, n| mig::DATA_OFF + mig::DATA_LEN - n as u64),
        ),
        (
            "the save's own chunks",
            {
                let sizes: Vec<usize> = chunks.iter().map(|c| c.1).collect();
                let mut i = 0;
                Box::new(move |_| {
                    i += 1;
                    sizes[i - 1]
                })
            },
            Box::new(|_, _| mig::DATA_OFF),
        ),
        (
            "one chunk of the whole data area",
            Box::new(|_| mig::DATA_LEN as usize),
            Box::new(|_, _| mig::DATA_OFF),
        ),
    ];
    for (what, mut chunk, mut at) in variants {
        dev_b.reset().ctx("reset B")?;
        expect_state(dev_b, DeviceState::None, &format!("{what}: B after reset"))?;
        go(dev_b, &[DeviceState::Resume])?;
        check_quiesced(dev_b, true, &format!("{what}: B in RESUME"))?;
        feed_at(dev_b, &s, &mut *chunk, &mut *at)
            .map_err(|(p, e)| format!("{what}: set buffer at stream byte {p}: {e}"))?;
        go(dev_b, &[DeviceState::ResumeCompleted]).map_err(|e| format!("{what}: {e}"))?;
        check_quiesced(dev_b, true, &format!("{what}: B in RESUME_COMPLETED"))?;
        same(
            &snap(dev_b, &SMALL)?,
            &want,
            false,
            &format!("{what}: B in RESUME_COMPLETED"),
        )?;
        go(dev_b, &[DeviceState::Running]).map_err(|e| format!("{what}: {e}"))?;
        same(
            &snap(dev_b, &SMALL)?,
            &want,
            true,
            &format!("{what}: B running"),
        )?;
        check_writable(dev_b, &format!("{what}: B running"))?;
    }
    Ok(())
}

/// `data.offset = off` then `data.size = size` fails with EINVAL at one of
/// the two writes (nothing is written to the data area first: `off` may be
/// a register).
fn bad_span(dev: &Device, off: u64, size: u64) -> TResult {
    let what = format!("set buffer of {size:#x} bytes at {off:#x}");
    match dev.write_field(Field::DataOffset, off) {
        Err(e) if e.errno() == Some(EINVAL) => return Ok(()),
        Err(e) => {
            return Err(format!(
                "{what}: data.offset write: {e}; want EINVAL or success"
            ))
        }
        Ok(()) => {}
    }
    expect_errno(
        dev.write_field(Field::DataSize, size),
        EINVAL,
        &format!("{what}: data.size write"),
    )?;
    expect_state(dev, DeviceState::Resume, &what)
}

/// Get buffer under a changing threshold: every chunk is exactly
/// `min(cap, what can be produced)` and the pending sum drops by it.
pub fn migration_roundtrip_threshold(env: &Env) -> TResult {
    let a = open(env, &SMALL, OpenPath::Legacy)?;
    let dev = a.dev();
    fill(dev, &SMALL, 0x44)?;
    let want = snap(dev, &SMALL)?;
    go(dev, &[DeviceState::Running, DeviceState::Setup])?;
    let (pre, compat, post) = mig::pending_at_setup(SMALL.mem_size);
    ensure_eq!(
        pending(dev)?,
        Pending {
            precopy_only: pre,
            compatible: compat,
            postcopy_only: post
        },
        "pending right after SETUP"
    );
    expect_errno(
        dev.get_buffer(&mut Vec::new()),
        EINVAL,
        "get buffer in SETUP",
    )?;
    go(dev, &[DeviceState::PreCopy])?;
    let mut s = Vec::new();
    let mut buf = Vec::new();
    // (threshold, chunks to read with it; 0 = until get buffer returns 0)
    let plan: [(u64, usize); 4] = [(1, 100), (4093, 20), (100_000, 1), (0, 0)];
    for (cap, count) in plan {
        dev.set_threshold(cap).ctx("set threshold")?;
        let eff = if cap == 0 { mig::DATA_LEN } else { cap };
        let mut i = 0;
        loop {
            let p0 = pending(dev)?;
            let n = dev.get_buffer(&mut buf).map_err(|e| e.to_string())? as u64;
            let p1 = pending(dev)?;
            let producible = p0.precopy_only + p0.compatible;
            ensure_eq!(
                n,
                eff.min(producible),
                "PRECOPY chunk {i} under threshold {cap} (pending before: {p0})"
            );
            ensure_eq!(
                p1.total(),
                p0.total() - n,
                "PRECOPY pending sum after a {n}-byte chunk"
            );
            s.extend_from_slice(&buf);
            i += 1;
            if n == 0 || (count > 0 && i == count) {
                break;
            }
        }
    }
    ensure_eq!(
        pending(dev)?,
        Pending {
            precopy_only: 0,
            compatible: 0,
            postcopy_only: post
        },
        "pending once pre-copy has sent everything"
    );
    go(dev, &[DeviceState::StopNCopy])?;
    dev.set_threshold(10_000).ctx("set threshold")?;
    loop {
        let p0 = pending(dev)?;
        let n = dev.get_buffer(&mut buf).map_err(|e| e.to_string())? as u64;
        ensure_eq!(
            n,
            p0.total().min(10_000),
            "STOPNCOPY chunk (pending before: {p0})"
        );
        ensure_eq!(
            pending(dev)?.total(),
            p0.total() - n,
            "STOPNCOPY pending sum"
        );
        if n == 0 {
            break;
        }
        s.extend_from_slice(&buf);
    }
    // Complete: get buffer keeps returning 0.
    ensure_eq!(
        dev.get_buffer(&mut buf).map_err(|e| e.to_string())?,
        0,
        "get buffer after the end"
    );
    go(dev, &[DeviceState::SaveCompleted])?;
    ensure_eq!(
        pending(dev)?,
        Pending::default(),
        "pending in SAVE_COMPLETED"
    );
    expect_errno(
        dev.get_buffer(&mut buf),
        EINVAL,
        "get buffer in SAVE_COMPLETED",
    )?;
    layout(&s, &SMALL)?;
    ensure_eq!(
        s.len() as u64,
        mig::full_stream_len(SMALL.mem_size),
        "stream length"
    );

    let b = open(env, &SMALL, OpenPath::Legacy)?;
    restore(b.dev(), &s, 64 << 10)?;
    same(&snap(b.dev(), &SMALL)?, &want, true, "B")
}

pub fn migration_roundtrip_large(env: &Env) -> TResult {
    let a = open(env, &LARGE, OpenPath::Iommufd)?;
    fill(a.dev(), &LARGE, 0x55)?;
    let want = snap(a.dev(), &LARGE)?;
    let mut sizes = Vec::new();
    let mut on_chunk = |_: DeviceState, n: usize| {
        sizes.push(n as u64);
        Ok(())
    };
    let mut s = Vec::new();
    a.dev()
        .save_to(
            &mut s,
            SaveOptions {
                on_chunk: Some(&mut on_chunk),
                ..Default::default()
            },
        )
        .ctx("save")?;
    ensure!(
        sizes.first() == Some(&mig::DATA_LEN) && sizes.iter().all(|&n| n <= mig::DATA_LEN),
        "chunks of an unlimited save of a 2 MiB device: {sizes:?}, want the first to fill the \
         data area ({:#x}) and none larger",
        mig::DATA_LEN
    );
    layout(&s, &LARGE)?;
    ensure_eq!(
        s.len() as u64,
        mig::full_stream_len(LARGE.mem_size),
        "stream length"
    );
    let b = open(env, &LARGE, OpenPath::Legacy)?;
    let rep = b
        .dev()
        .restore_from(&mut &s[..], mig::DATA_LEN as usize)
        .ctx("restore_from")?;
    ensure_eq!(rep.bytes, s.len() as u64, "restored bytes");
    expect_state(b.dev(), DeviceState::Running, "B after restore_from")?;
    same(&snap(b.dev(), &LARGE)?, &want, true, "B")
}

/// Writes `pages` of BAR2 (one byte near the end of each) with `v`.
fn touch(dev: &Device, pages: &[u64], v: u8) -> TResult {
    for p in pages {
        dev.w8(B2, p * mig::PAGE_SIZE + 4000, v)?;
    }
    Ok(())
}

pub fn migration_precopy_dirty(env: &Env) -> TResult {
    let a = open(env, &SMALL, OpenPath::Legacy)?;
    let dev = a.dev();
    let b = open(env, &SMALL, OpenPath::Legacy)?;
    fill(dev, &SMALL, 0x66)?;
    let (_, _, post) = mig::pending_at_setup(SMALL.mem_size);
    let rec = mig::PAGE_RECORD_LEN as u64;
    go(
        dev,
        &[
            DeviceState::Running,
            DeviceState::Setup,
            DeviceState::PreCopy,
        ],
    )?;
    dev.set_threshold(8192).ctx("threshold")?;
    let mut s = Vec::new();
    drain(dev, &mut s)?;
    ensure_eq!(
        pending(dev)?,
        Pending {
            precopy_only: 0,
            compatible: 0,
            postcopy_only: post
        },
        "pending after the first pass"
    );
    // Passes with the device running: each dirties pages, some twice, one
    // by a write straddling two pages.
    let passes: [&[u64]; 3] = [&[0, 5, 63], &[5, 6, 7, 5], &[31]];
    for (i, pages) in passes.iter().enumerate() {
        touch(dev, pages, 0xa0 + i as u8)?;
        let mut distinct = pages.to_vec();
        distinct.sort();
        distinct.dedup();
        let mut expect = distinct.len() as u64;
        if i == 2 {
            // 8 bytes across the boundary of pages 40 and 41.
            dev.write_region(B2, 41 * mig::PAGE_SIZE - 4, &[0xee; 8])
                .ctx("straddling write")?;
            expect += 2;
        }
        dev.w32(B0, bar0::SCRATCH, 0x1000 + i as u32)?;
        let p = pending(dev)?;
        ensure_eq!(
            p.compatible,
            expect * rec,
            "pass {i}: pending.compatible after dirtying {expect} pages"
        );
        ensure_eq!(p.postcopy_only, post, "pass {i}: postcopy_only");
        let n = drain(dev, &mut s)?;
        ensure_eq!(n as u64, expect * rec, "pass {i}: bytes sent");
        ensure_eq!(
            pending(dev)?.compatible,
            0,
            "pass {i}: compatible after the pass"
        );
    }
    // One more page between the last pass and the stop.
    touch(dev, &[12], 0xcc)?;
    go(dev, &[DeviceState::StopNCopy])?;
    ensure_eq!(
        pending(dev)?,
        Pending {
            precopy_only: 0,
            compatible: rec,
            postcopy_only: post
        },
        "pending at the stop"
    );
    expect_errno(dev.write8(B2, 0, 1), EBUSY, "BAR2 write in STOPNCOPY")?;
    drain(dev, &mut s)?;
    ensure_eq!(pending(dev)?.total(), 0, "pending at the end");
    go(dev, &[DeviceState::SaveCompleted])?;
    let at_stop = snap(dev, &SMALL)?;
    let l = layout(&s, &SMALL)?;
    ensure_eq!(
        l.pages().count(),
        64 + 3 + 3 + 3 + 1,
        "page records (64 + re-sent)"
    );
    restore(b.dev(), &s, 4096)?;
    same(
        &snap(b.dev(), &SMALL)?,
        &at_stop,
        false,
        "B vs A at the stop",
    )?;
    check_quiesced(b.dev(), false, "B running")?;

    // The library's flow, with the writes in its `between` callback.
    let c = open(env, &SMALL, OpenPath::Legacy)?;
    let dev_c = c.dev();
    fill(dev_c, &SMALL, 0x67)?;
    let mut calls = Vec::new();
    let mut between = |pass: u32, p: &Pending| {
        calls.push((pass, *p));
        // Pages 1..=3 in pass 1, 2..=4 in pass 2, ...
        let pages: Vec<u64> = (pass as u64..pass as u64 + 3).collect();
        for pg in &pages {
            dev_c.write8(B2, pg * mig::PAGE_SIZE, 0x90 + pass as u8)?;
        }
        Ok(())
    };
    let mut s2 = Vec::new();
    let rep = dev_c
        .save_to(
            &mut s2,
            SaveOptions {
                threshold: 16 << 10,
                precopy_iterations: 4,
                between: Some(&mut between),
                ..Default::default()
            },
        )
        .ctx("save_to with 4 passes")?;
    ensure_eq!(rep.precopy_iterations, 4, "passes made");
    ensure_eq!(calls.len(), 3, "between calls");
    ensure!(
        calls.iter().all(|(_, p)| p.compatible == 0),
        "pending.compatible after a pass is not 0: {calls:?}"
    );
    ensure_eq!(
        rep.bytes,
        mig::full_stream_len(SMALL.mem_size) + 9 * rec,
        "stream length (64 pages + 9 re-sent)"
    );
    let at_stop = snap(dev_c, &SMALL)?;
    restore(b.dev(), &s2, 4093)?;
    same(
        &snap(b.dev(), &SMALL)?,
        &at_stop,
        false,
        "B vs C at the stop",
    )
}

/// A damaged stream fails with EINVAL at a set buffer (which poisons the
/// rest) or at RESUME_COMPLETED, and leaves the device in RESUME; then
/// FAILED gives the power-on state and the good stream restores.
fn expect_rejected(
    dev: &Device,
    spec: &TypeSpec,
    bad: &[u8],
    good: &[u8],
    want: Option<&Snap>,
    what: &str,
) -> TResult {
    dev.reset().ctx("reset")?;
    fill(dev, spec, 0x77)?;
    go(dev, &[DeviceState::Running, DeviceState::Resume])?;
    match feed(dev, bad, &mut |_| 4096) {
        Ok(()) => {}
        Err((pos, e)) => {
            ensure!(
                e.errno() == Some(EINVAL),
                "{what}: set buffer at stream byte {pos}: {e}; want EINVAL"
            );
            // Poisoned: more data and RESUME_COMPLETED fail too.
            let next = &good[pos.min(good.len() - 1)..];
            expect_errno(
                dev.set_buffer(&next[..next.len().min(4096)], mig::DATA_OFF),
                EINVAL,
                &format!("{what}: set buffer after the error at byte {pos}"),
            )?;
        }
    }
    expect_errno(
        dev.set_state(DeviceState::ResumeCompleted),
        EINVAL,
        &format!("{what}: RESUME_COMPLETED"),
    )?;
    expect_state(
        dev,
        DeviceState::Resume,
        &format!("{what}: after the refused RESUME_COMPLETED"),
    )?;
    go(dev, &[DeviceState::Failed])?;
    check_power_on_all(dev, spec, &format!("{what}: in FAILED"))?;
    check_writable(dev, &format!("{what}: in FAILED"))?;
    if let Some(want) = want {
        restore(dev, good, 64 << 10)
            .map_err(|e| format!("{what}: good stream after FAILED: {e}"))?;
        same(
            &snap(dev, spec)?,
            want,
            true,
            &format!("{what}: restored after FAILED"),
        )?;
    }
    Ok(())
}

pub fn migration_corrupt_stream(env: &Env) -> TResult {
    let (s, want) = saved(env, &SMALL, 0x12)?;
    let l = layout(&s, &SMALL)?;
    let page10 = l.pages().nth(10).expect("64 page records").offset;
    let regs = l.regs().expect("register record").offset;
    let end = l.end().expect("end record").offset;
    let b = open(env, &SMALL, OpenPath::Legacy)?;
    let dev = b.dev();

    let mut cases: Vec<(String, Vec<u8>)> = Vec::new();
    let flips: &[(usize, &str)] = &[
        (0, "magic"),
        (8, "version"),
        (12, "mdev type id"),
        (16, "memory size"),
        (24, "page size"),
        (28, "register length"),
        (32, "first page record tag"),
        (36, "first page body length"),
        (40, "first page index"),
        (page10 + 16 + 100, "page 10 payload"),
        (page10 + 16 + 4095, "page 10 last payload byte"),
        (regs, "register record tag"),
        (regs + 4, "register record length"),
        (regs + 8 + 4, "register blob"),
        (end - 1, "last register byte"),
        (end, "end record tag"),
        (end + 8, "end record L"),
        (end + 16, "checksum a"),
        (end + 24, "checksum b"),
        (s.len() - 1, "last byte"),
    ];
    for &(pos, name) in flips {
        let mut c = s.clone();
        c[pos] ^= 0xff;
        cases.push((format!("byte {pos} ({name}) flipped"), c));
    }
    let mut c = s.clone();
    c[40..48].copy_from_slice(&(SMALL.mem_size / mig::PAGE_SIZE).to_le_bytes());
    cases.push(("first page index = N".into(), c));
    for (len, name) in [
        (0, "empty"),
        (16, "half a header"),
        (32, "header only"),
        (page10 + 7, "inside a page record head"),
        (regs, "before the register record"),
        (regs + 100, "inside the register record"),
        (end, "without the end record"),
        (s.len() - 1, "one byte short"),
    ] {
        cases.push((format!("truncated at {len} ({name})"), s[..len].to_vec()));
    }
    let mut c = s.clone();
    c.push(0);
    cases.push(("one byte too many".into(), c));
    let mut c = s.clone();
    c.extend_from_slice(&s[..100]);
    cases.push(("100 bytes after the end record".into(), c));
    let mut c = s.clone();
    c.copy_within(page10..page10 + mig::PAGE_RECORD_LEN, 32);
    cases.push(("page 10 copied over page 0 (checksum)".into(), c));

    for (i, (what, bad)) in cases.iter().enumerate() {
        // The full good restore after FAILED for every fourth case, to keep
        // the time bounded; power-on is checked for all.
        let w = (i % 4 == 0 || i + 1 == cases.len()).then_some(&want);
        expect_rejected(dev, &SMALL, bad, &s, w, what)?;
    }

    // A small's stream into a large device.
    let c = open(env, &LARGE, OpenPath::Legacy)?;
    expect_rejected(
        c.dev(),
        &LARGE,
        &s,
        &[0],
        None,
        "a small's stream into a large",
    )?;
    Ok(())
}

// ---------------------------------------------------------------------------
// FAILED, CANCELLED, quiescing, reset, close

pub fn migration_failed_cancelled(env: &Env) -> TResult {
    let mut a = open(env, &SMALL, OpenPath::Legacy)?;
    let b = open(env, &SMALL, OpenPath::Legacy)?;
    let mut buf = Vec::new();
    // Saving side: the device runs again as it was.
    for from in [
        DeviceState::Setup,
        DeviceState::PreCopy,
        DeviceState::StopNCopy,
        DeviceState::SaveCompleted,
    ] {
        for to in [DeviceState::Failed, DeviceState::Cancelled] {
            let what = format!("{from} -> {to}");
            a.reopen(OpenPath::Legacy)?;
            let dev = a.dev();
            fill(dev, &SMALL, 0x80 + from.raw() as u8)?;
            let before = snap(dev, &SMALL)?;
            dev.set_threshold(4096).ctx("threshold")?;
            reach(dev, from, &[])?;
            if matches!(from, DeviceState::PreCopy | DeviceState::StopNCopy) {
                dev.get_buffer(&mut buf)
                    .map_err(|e| format!("{what}: {e}"))?;
            }
            dev.set_state(to).map_err(|e| format!("{what}: {e}"))?;
            check_quiesced(dev, false, &what)?;
            same(
                &snap(dev, &SMALL)?,
                &before,
                true,
                &format!("{what}: device state"),
            )?;
            check_writable(dev, &what)?;
            ensure_eq!(pending(dev)?, Pending::default(), "{what}: pending");
            expect_errno(
                dev.get_buffer(&mut buf),
                EINVAL,
                &format!("{what}: get buffer"),
            )?;
            expect_errno(
                dev.dirty_bitmap(0, 64),
                EINVAL,
                &format!("{what}: dirty query"),
            )?;
            // A new save from here works.
            dev.w32(B0, bar0::SCRATCH, 0xfa11_0000 | from.raw())?;
            let now = snap(dev, &SMALL)?;
            let s = save(dev, 0).map_err(|e| format!("{what}: save again: {e}"))?;
            b.dev().reset().ctx("reset B")?;
            restore(b.dev(), &s, 64 << 10).map_err(|e| format!("{what}: {e}"))?;
            same(
                &snap(b.dev(), &SMALL)?,
                &now,
                true,
                &format!("{what}: B restored"),
            )?;
        }
    }
    // Resuming side: the partial or restored state is thrown away.
    let (s, want) = saved(env, &SMALL, 0x13)?;
    /// A restore that got `fed` bytes of the stream (and reached
    /// RESUME_COMPLETED if `completed`), then taken to `to`.
    struct Case {
        fed: usize,
        completed: bool,
        to: DeviceState,
    }
    let cases = [
        Case {
            fed: 0,
            completed: false,
            to: DeviceState::Failed,
        },
        Case {
            fed: 0,
            completed: false,
            to: DeviceState::Cancelled,
        },
        Case {
            fed: s.len() / 2,
            completed: false,
            to: DeviceState::Failed,
        },
        Case {
            fed: s.len() / 2,
            completed: false,
            to: DeviceState::Cancelled,
        },
        Case {
            fed: s.len(),
            completed: true,
            to: DeviceState::Failed,
        },
    ];
    for Case { fed, completed, to } in cases {
        let from = if completed {
            DeviceState::ResumeCompleted
        } else {
            DeviceState::Resume
        };
        let what = format!("{from} ({fed} bytes fed) -> {to}");
        let dev = b.dev();
        dev.reset().ctx("reset B")?;
        fill(dev, &SMALL, 0x99)?;
        go(dev, &[DeviceState::Running, DeviceState::Resume])?;
        feed(dev, &s[..fed], &mut |_| 4096).map_err(|(p, e)| format!("{what}: {p}: {e}"))?;
        if completed {
            go(dev, &[DeviceState::ResumeCompleted])?;
            same(
                &snap(dev, &SMALL)?,
                &want,
                false,
                &format!("{what}: restored"),
            )?;
        }
        dev.set_state(to).map_err(|e| format!("{what}: {e}"))?;
        check_power_on_all(dev, &SMALL, &what)?;
        check_writable(dev, &what)?;
        // And RESUME again takes a good stream.
        restore(dev, &s, 64 << 10).map_err(|e| format!("{what}: then a good stream: {e}"))?;
        same(
            &snap(dev, &SMALL)?,
            &want,
            true,
            &format!("{what}: then a good stream"),
        )?;
    }
    Ok(())
}

pub fn migration_quiesced(env: &Env) -> TResult {
    let (s, _) = saved(env, &SMALL, 0x14)?;
    let mut fx = open(env, &SMALL, OpenPath::Legacy)?;
    for st in DeviceState::ALL {
        fx.reopen(OpenPath::Legacy)?;
        let dev = fx.dev();
        fill(dev, &SMALL, 0x15)?;
        reach(dev, st, &s)?;
        let what = format!("in {st}");
        let quiesced = mig::QUIESCED.contains(&st);
        check_quiesced(dev, quiesced, &what)?;
        if !quiesced {
            check_writable(dev, &what)?;
            continue;
        }
        let before = snap(dev, &SMALL)?;
        for (off, name) in [
            (bar0::SCRATCH, "SCRATCH"),
            (bar0::IRQ_STATUS, "IRQ_STATUS"),
            (bar0::IRQ_ENABLE, "IRQ_ENABLE"),
            (bar0::DOORBELL, "DOORBELL"),
            (bar0::ID, "ID"),
        ] {
            expect_errno(
                dev.write32(B0, off, 0xffff_ffff),
                EBUSY,
                &format!("{what}: BAR0 {name} write"),
            )?;
        }
        expect_errno(
            dev.write_region(B0, bar0::SCRATCH, &[0; 8]),
            EBUSY,
            &format!("{what}: 8-byte BAR0 write"),
        )?;
        for (off, len) in [
            (0u64, 1usize),
            (4096, 4096),
            (SMALL.mem_size - 1, 1),
            (100, 3),
        ] {
            expect_errno(
                dev.write_region(B2, off, &vec![0x5a; len]),
                EBUSY,
                &format!("{what}: BAR2 write of {len} at {off:#x}"),
            )?;
        }
        same(
            &snap(dev, &SMALL)?,
            &before,
            true,
            &format!("{what}: after refused writes"),
        )?;
    }
    Ok(())
}

pub fn migration_reset_close(env: &Env) -> TResult {
    let (s, want) = saved(env, &SMALL, 0x16)?;
    let mut a = open(env, &SMALL, OpenPath::Legacy)?;
    let b = open(env, &SMALL, OpenPath::Legacy)?;
    let mut buf = Vec::new();
    // In the middle of a save.
    for (mid, by_close) in [
        (DeviceState::PreCopy, false),
        (DeviceState::StopNCopy, false),
        (DeviceState::PreCopy, true),
        (DeviceState::StopNCopy, true),
    ] {
        let how = if by_close {
            "close"
        } else {
            "VFIO_DEVICE_RESET"
        };
        let what = format!("{how} in {mid}");
        fill(a.dev(), &SMALL, 0x17)?;
        a.dev().set_threshold(4096).ctx("threshold")?;
        reach(a.dev(), mid, &[])?;
        a.dev()
            .get_buffer(&mut buf)
            .map_err(|e| format!("{what}: {e}"))?;
        if by_close {
            a.reopen(OpenPath::Legacy)?;
        } else {
            a.dev().reset().ctx(&what)?;
        }
        let dev = a.dev();
        expect_state(dev, DeviceState::None, &what)?;
        check_power_on_all(dev, &SMALL, &what)?;
        ensure_eq!(pending(dev)?, Pending::default(), "{what}: pending");
        expect_errno(
            dev.get_buffer(&mut buf),
            EINVAL,
            &format!("{what}: get buffer"),
        )?;
        check_writable(dev, &what)?;
        // A new save works, with the default threshold again.
        fill(dev, &SMALL, 0x18)?;
        let now = snap(dev, &SMALL)?;
        let s2 = save(dev, 0).map_err(|e| format!("{what}: save again: {e}"))?;
        b.dev().reset().ctx("reset B")?;
        restore(b.dev(), &s2, 64 << 10).map_err(|e| format!("{what}: {e}"))?;
        same(&snap(b.dev(), &SMALL)?, &now, true, &format!("{what}: B"))?;
        a.dev().reset().ctx("reset A")?;
    }
    // In the middle of a restore (and after a complete one).
    /// A restore that got `fed` bytes of the stream (and reached
    /// RESUME_COMPLETED if `completed`), then ended by a close if
    /// `by_close`, else by VFIO_DEVICE_RESET.
    struct Case {
        fed: usize,
        completed: bool,
        by_close: bool,
    }
    let cases = [
        Case {
            fed: s.len() / 2,
            completed: false,
            by_close: false,
        },
        Case {
            fed: s.len() / 2,
            completed: false,
            by_close: true,
        },
        Case {
            fed: s.len(),
            completed: true,
            by_close: false,
        },
    ];
    for Case {
        fed,
        completed,
        by_close,
    } in cases
    {
        let how = if by_close {
            "close"
        } else {
            "VFIO_DEVICE_RESET"
        };
        let what = format!("{how} after {fed} stream bytes (completed: {completed})");
        go(a.dev(), &[DeviceState::Resume])?;
        feed(a.dev(), &s[..fed], &mut |_| 4096).map_err(|(p, e)| format!("{what}: {p}: {e}"))?;
        if completed {
            go(a.dev(), &[DeviceState::ResumeCompleted])?;
        }
        if by_close {
            a.reopen(OpenPath::Legacy)?;
        } else {
            a.dev().reset().ctx(&what)?;
        }
        let dev = a.dev();
        expect_state(dev, DeviceState::None, &what)?;
        check_power_on_all(dev, &SMALL, &what)?;
        expect_errno(
            dev.set_buffer(&s[..16], mig::DATA_OFF),
            EINVAL,
            &format!("{what}: set buffer in NONE"),
        )?;
        restore(dev, &s, 64 << 10).map_err(|e| format!("{what}: restore again: {e}"))?;
        same(
            &snap(dev, &SMALL)?,
            &want,
            true,
            &format!("{what}: restored again"),
        )?;
        dev.reset().ctx("reset")?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Concurrency

pub fn migration_concurrent(env: &Env) -> TResult {
    const WRITES: u32 = 400;
    let a = open(env, &SMALL, OpenPath::Legacy)?;
    let b = open(env, &SMALL, OpenPath::Legacy)?;
    let dev = a.dev();
    fill(dev, &SMALL, 0x19)?;
    dev.set_threshold(4096).ctx("threshold")?;
    go(
        dev,
        &[
            DeviceState::Running,
            DeviceState::Setup,
            DeviceState::PreCopy,
        ],
    )?;
    let done = AtomicBool::new(false);
    let (saver, writer) = std::thread::scope(|sc| {
        let saver = sc.spawn(|| -> Result<(Vec<u8>, u32), String> {
            let mut s = Vec::new();
            let mut buf = Vec::new();
            let mut empty = 0;
            loop {
                let finished = done.load(Ordering::Acquire);
                let n = dev
                    .get_buffer(&mut buf)
                    .map_err(|e| format!("saver after {} bytes: {e}", s.len()))?;
                s.extend_from_slice(&buf);
                if n == 0 {
                    if finished {
                        return Ok((s, empty));
                    }
                    empty += 1;
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
        });
        let writer = sc.spawn(|| -> TResult {
            let r = (|| {
                let block = [0u8; 256];
                for i in 0..WRITES {
                    let v = [i as u8; 256];
                    let page = (i as u64 * 13) % (SMALL.mem_size / mig::PAGE_SIZE);
                    dev.write_region(B2, page * mig::PAGE_SIZE + (i as u64 % 15) * 256, &v)
                        .map_err(|e| format!("writer {i}: BAR2: {e}"))?;
                    dev.write32(B0, bar0::SCRATCH, i)
                        .map_err(|e| format!("writer {i}: SCRATCH: {e}"))?;
                    let st = dev.device_state_raw().map_err(|e| e.to_string())?;
                    ensure!(
                        st == DeviceState::PreCopy.raw(),
                        "writer {i}: device_state {}",
                        state_name(st)
                    );
                    dev.pending()
                        .map_err(|e| format!("writer {i}: pending: {e}"))?;
                    let t = dev
                        .read_field(Field::ThresholdSize)
                        .map_err(|e| e.to_string())?;
                    ensure_eq!(t, 4096, "writer {i}: threshold");
                    ensure_hex!(dev.r32(B0, bar0::ID)?, bar0::ID_VALUE, "writer {i}: ID");
                    if i % 50 == 0 {
                        dev.write_region(B2, 0, &block)
                            .map_err(|e| format!("writer {i}: {e}"))?;
                    }
                }
                Ok(())
            })();
            done.store(true, Ordering::Release);
            r
        });
        (
            saver
                .join()
                .unwrap_or_else(|_| Err("saver panicked".into())),
            writer
                .join()
                .unwrap_or_else(|_| Err("writer panicked".into())),
        )
    });
    writer?;
    let (mut s, _) = saver?;
    go(dev, &[DeviceState::StopNCopy])?;
    drain(dev, &mut s)?;
    ensure_eq!(pending(dev)?.total(), 0, "pending at the end");
    go(dev, &[DeviceState::SaveCompleted])?;
    let at_stop = snap(dev, &SMALL)?;
    layout(&s, &SMALL)?;
    restore(b.dev(), &s, 4096)?;
    same(
        &snap(b.dev(), &SMALL)?,
        &at_stop,
        false,
        "B vs A at the stop",
    )
}

// ---------------------------------------------------------------------------
// Dirty queries

pub fn migration_dirty_query(env: &Env) -> TResult {
    let (s, _) = saved(env, &SMALL, 0x1a)?;
    let mut fx = open(env, &SMALL, OpenPath::Legacy)?;
    // Outside SETUP, PRECOPY, STOPNCOPY the query fails.
    for st in DeviceState::ALL.iter().filter(|s| !mig::SAVING.contains(s)) {
        fx.reopen(OpenPath::Legacy)?;
        reach(fx.dev(), *st, &s)?;
        let mut b = [0u8; 8];
        expect_errno(
            fx.dev().mig_pread(Field::DirtyCopied.offset(), &mut b),
            EINVAL,
            &format!("read of dirty_pfns.copied in {st}"),
        )?;
        expect_state(fx.dev(), *st, &format!("after the refused query in {st}"))?;
    }
    for st in mig::SAVING {
        fx.reopen(OpenPath::Legacy)?;
        let dev = fx.dev();
        reach(dev, st, &[])?;
        for (start, total) in [
            (0xffff_ffff_ffff_f000u64, 2u64),
            (0, 1 << 52),
            (0x1000, u64::MAX >> 12),
            (0x10_0000, u64::MAX),
        ] {
            expect_errno(
                dev.dirty_bitmap(start, total),
                EINVAL,
                &format!("{st}: query start {start:#x} total {total:#x} (overflows)"),
            )?;
        }
        for (start, total) in [
            (0x10_0000u64, 0u64),
            (0, 1),
            (0, 63),
            (0x1000, 64),
            (0x7fff_ffff_f000, 65),
            (0, 4096),
            (0, mig::BITMAP_PAGES - 1),
            (0, mig::BITMAP_PAGES),
            (0, mig::BITMAP_PAGES + 1),
            (0x4000_0000, 1 << 40),
            (0, (1 << 52) - 1),
        ] {
            let what = format!("{st}: query start {start:#x} total {total:#x}");
            let d = dev
                .dirty_bitmap(start, total)
                .map_err(|e| format!("{what}: {e}"))?;
            ensure_eq!(d.copied, total.min(mig::BITMAP_PAGES), "{what}: copied");
            ensure_hex!(
                d.offset,
                mig::BITMAP_OFF,
                "{what}: data.offset after the query"
            );
            ensure!(
                d.words.iter().all(|&w| w == 0),
                "{what}: dirty bits without DMA: {:x?}",
                d.words.iter().enumerate().find(|(_, w)| **w != 0)
            );
        }
        // The whole bitmap area reads (and is zero).
        let mut area = vec![0xffu8; mig::BITMAP_LEN as usize];
        dev.read_region(M, mig::BITMAP_OFF, &mut area)
            .ctx("read the bitmap area")?;
        ensure!(
            area.iter().all(|&b| b == 0),
            "{st}: bitmap area is not all zero"
        );
    }
    // A query between get-buffer actions clobbers no staged chunk: a save
    // with a query after every chunk restores.
    fx.reopen(OpenPath::Legacy)?;
    let dev = fx.dev();
    fill(dev, &SMALL, 0x1b)?;
    dev.set_threshold(8192).ctx("threshold")?;
    go(
        dev,
        &[
            DeviceState::Running,
            DeviceState::Setup,
            DeviceState::PreCopy,
        ],
    )?;
    let mut out = Vec::new();
    let mut buf = Vec::new();
    let mut again = Vec::new();
    for phase in [DeviceState::PreCopy, DeviceState::StopNCopy] {
        if phase == DeviceState::StopNCopy {
            go(dev, &[DeviceState::StopNCopy])?;
        }
        loop {
            let n = dev.get_buffer(&mut buf).map_err(|e| e.to_string())?;
            if n == 0 {
                break;
            }
            dev.dirty_bitmap(0, mig::BITMAP_PAGES)
                .map_err(|e| format!("{phase}: query after a chunk: {e}"))?;
            again.resize(n, 0);
            dev.read_region(M, mig::DATA_OFF, &mut again)
                .ctx("read the data area again")?;
            same_bytes(
                &again,
                &buf,
                &format!("{phase}: staged chunk after a dirty query"),
            )?;
            out.extend_from_slice(&buf);
        }
    }
    go(dev, &[DeviceState::SaveCompleted])?;
    let want = snap(dev, &SMALL)?;
    let b = open(env, &SMALL, OpenPath::Legacy)?;
    restore(b.dev(), &out, 4096)?;
    same(&snap(b.dev(), &SMALL)?, &want, false, "B")?;
    // The write of an unaligned start_addr fails and keeps the old value.
    for st in mig::SAVING {
        fx.reopen(OpenPath::Legacy)?;
        let dev = fx.dev();
        reach(dev, st, &[])?;
        dev.write_field(Field::DirtyStartAddr, 0x10_0000)
            .map_err(|e| format!("{st}: {e}"))?;
        for start in [1u64, 0x800, 0xfff, 0x1001, u64::MAX] {
            expect_errno(
                dev.write_field(Field::DirtyStartAddr, start),
                EINVAL,
                &format!("{st}: write of dirty_pfns.start_addr = {start:#x}"),
            )?;
            ensure_hex!(
                dev.read_field(Field::DirtyStartAddr)
                    .map_err(|e| e.to_string())?,
                0x10_0000u64,
                "{st}: start_addr after the refused write of {start:#x}"
            );
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// The command line

/// The `vfio-mig` binary next to this one (both in target/release).
fn cli() -> Result<std::path::PathBuf, String> {
    let me = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
    let p = me.with_file_name("vfio-mig");
    ensure!(p.exists(), "{} is missing: build the tools", p.display());
    Ok(p)
}

/// Runs `vfio-mig ARGS`, with `dev`'s fd passed as `--fd N` if given.
pub(crate) fn run_cli(args: &[&str], dev: Option<&Device>) -> Result<std::process::Output, String> {
    let mut cmd = std::process::Command::new(cli()?);
    cmd.args(args);
    // A dup has no FD_CLOEXEC: the child inherits it.
    let dup = match dev {
        Some(d) => {
            // SAFETY: dup of an fd we hold open.
            let fd = unsafe { libc::dup(d.fd()) };
            ensure!(fd >= 0, "dup: {}", std::io::Error::last_os_error());
            // SAFETY: dup returned a new fd that nothing else owns.
            let owned = unsafe { OwnedFd::from_raw_fd(fd) };
            cmd.args(["--fd", &owned.as_raw_fd().to_string()]);
            Some(owned)
        }
        None => None,
    };
    let out = cmd.output().map_err(|e| format!("run vfio-mig: {e}"))?;
    drop(dup);
    Ok(out)
}

pub(crate) fn cli_ok(out: &std::process::Output, what: &str) -> Result<String, String> {
    let so = String::from_utf8_lossy(&out.stdout).to_string();
    ensure!(
        out.status.success(),
        "{what}: exit {:?}: {} {}",
        out.status.code(),
        so.trim(),
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(so)
}

fn cli_fails(out: &std::process::Output, errno: i32, what: &str) -> TResult {
    let se = String::from_utf8_lossy(&out.stderr);
    ensure_eq!(
        out.status.code(),
        Some(1),
        "{what}: exit code (stderr: {})",
        se.trim()
    );
    ensure!(
        se.contains(errno_name(errno)),
        "{what}: stderr does not name {}: {}",
        errno_name(errno),
        se.trim()
    );
    Ok(())
}

pub fn migration_cli(env: &Env) -> TResult {
    let file = format!("/tmp/vfio-mig-cli-{}.stream", std::process::id());
    let bad = format!("{file}.bad");
    let r = cli_inner(env, &file, &bad);
    let _ = std::fs::remove_file(&file);
    let _ = std::fs::remove_file(&bad);
    r
}

fn cli_inner(env: &Env, file: &str, bad: &str) -> TResult {
    // The test holds A and B open and passes their fds, so their state
    // outlives each command.
    let a = open(env, &SMALL, OpenPath::Legacy)?;
    let b = open(env, &SMALL, OpenPath::Legacy)?;
    fill(a.dev(), &SMALL, 0x1c)?;
    let want = snap(a.dev(), &SMALL)?;
    let ua = a.mdev.uuid().to_string();
    let ub = b.mdev.uuid().to_string();
    let out = run_cli(
        &[
            "save",
            &ua,
            "--out",
            file,
            "--threshold",
            "64K",
            "--precopy",
            "2",
        ],
        Some(a.dev()),
    )?;
    let so = cli_ok(&out, "vfio-mig save --fd")?;
    ensure!(so.contains("saved "), "save output: {so}");
    expect_state(a.dev(), DeviceState::SaveCompleted, "A after vfio-mig save")?;
    let s = std::fs::read(file).map_err(|e| format!("read {file}: {e}"))?;
    layout(&s, &SMALL)?;

    let out = run_cli(
        &["restore", &ub, "--in", file, "--chunk", "4093"],
        Some(b.dev()),
    )?;
    let so = cli_ok(&out, "vfio-mig restore --fd")?;
    ensure!(
        so.contains(&format!("restored {} bytes", s.len())),
        "restore output: {so}"
    );
    expect_state(b.dev(), DeviceState::Running, "B after vfio-mig restore")?;
    same(
        &snap(b.dev(), &SMALL)?,
        &want,
        true,
        "B after vfio-mig restore",
    )?;

    let out = run_cli(&["info", &ub], Some(b.dev()))?;
    let so = cli_ok(&out, "vfio-mig info --fd")?;
    for needle in [
        "migration region 9",
        "device_state 1 (RUNNING)",
        "VFIO_REGION_INFO_CAP_TYPE type 0x40000000 subtype 1",
        "data area, 0x100000 bytes",
        "pending.threshold_size",
    ] {
        ensure!(so.contains(needle), "info output lacks {needle:?}:\n{so}");
    }

    // Devices the command opens itself (closed, so power-on, afterwards).
    let c = env.create(&SMALL)?;
    let d = env.create(&SMALL)?;
    let out = run_cli(&["save", c.uuid(), "--out", file], None)?;
    cli_ok(&out, "vfio-mig save (legacy open)")?;
    let out = run_cli(&["restore", d.uuid(), "--in", file, "--iommufd"], None)?;
    cli_ok(&out, "vfio-mig restore --iommufd")?;
    // A damaged stream and a wrong type fail with EINVAL and exit 1.
    let mut s2 = s.clone();
    s2[100] ^= 0xff;
    std::fs::write(bad, &s2).map_err(|e| format!("write {bad}: {e}"))?;
    let out = run_cli(&["restore", d.uuid(), "--in", bad, "--iommufd"], None)?;
    cli_fails(&out, EINVAL, "vfio-mig restore of a damaged stream")?;
    let large = env.create(&LARGE)?;
    let out = run_cli(&["restore", large.uuid(), "--in", file], None)?;
    cli_fails(
        &out,
        EINVAL,
        "vfio-mig restore of a small's stream into a large",
    )?;
    let out = run_cli(&["restore", d.uuid(), "--in", "/nonexistent/stream"], None)?;
    ensure_eq!(
        out.status.code(),
        Some(1),
        "restore of a missing file: exit code"
    );
    Ok(())
}
