// SPDX-License-Identifier: GPL-2.0
//! Sparse mmap of the migration region (migration-abi.rst, "Sparse
//! mmap"): the mapped data area against `pread` after get buffer, restore
//! written through the mapping, save and restore through `vfio-mig`'s
//! mapping on both open paths, the mappings the device refuses, zeroed
//! areas after reset and reopen, the bitmap area against a dirty query,
//! and `vfio-mig --no-mmap`.

use vfio_mig::migration::Field;
use vfio_mig::transfer::{self, MigrationRegionTransfer, StateTransfer};
use vfio_mig::{AreaAccess, Device, DeviceState, OpenPath, SaveOptions};

use crate::device::{mig, region, region_offset, SMALL};
use crate::dmautil::{path_name, run_ok, Cmd, Ram, PAGE};
use crate::t_migration::{
    cli_ok, expect_state, fill, go, layout, open, reach, run_cli, same, snap,
};
use crate::util::{Ctx, Env, TResult};
use crate::{ensure, ensure_eq, ensure_hex};

const M: u32 = region::MIGRATION;
const EINVAL: i32 = libc::EINVAL;

/// A shared mapping of the device file made by the test itself; unmapped
/// on drop.
struct Map {
    ptr: *mut u8,
    len: usize,
}

impl Map {
    /// `mmap(len, prot, flags)` of region `index` at `offset`; the errno on
    /// failure.
    fn region(
        dev: &Device,
        index: u32,
        offset: u64,
        len: u64,
        prot: i32,
        flags: i32,
    ) -> Result<Map, i32> {
        let pos = region_offset(index) + offset;
        // SAFETY: a new mapping at an address the kernel picks; nothing in
        // this process is there yet.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len as usize,
                prot,
                flags,
                dev.fd(),
                pos as libc::off_t,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error().raw_os_error().unwrap_or(0));
        }
        Ok(Map {
            ptr: p.cast(),
            len: len as usize,
        })
    }

    /// A shared mapping of the migration region at `offset`.
    fn mig(dev: &Device, offset: u64, len: u64, write: bool) -> Result<Map, String> {
        let prot = libc::PROT_READ | if write { libc::PROT_WRITE } else { 0 };
        Map::region(dev, M, offset, len, prot, libc::MAP_SHARED).map_err(|e| {
            format!(
                "mmap of {len:#x} bytes at region 9 offset {offset:#x}: {}",
                vfio_mig::errno_name(e)
            )
        })
    }

    /// The data area, read and write.
    fn data(dev: &Device) -> Result<Map, String> {
        Map::mig(dev, mig::DATA_OFF, mig::DATA_LEN, true)
    }

    /// The bitmap area, read only.
    fn bitmap(dev: &Device) -> Result<Map, String> {
        Map::mig(dev, mig::BITMAP_OFF, mig::BITMAP_LEN, false)
    }

    fn bytes(&self) -> &[u8] {
        // SAFETY: the mapping is readable and `len` bytes long while `self`
        // lives; the device only changes it during our own accesses of the
        // region, none of which runs while the slice is used.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }

    fn write(&self, at: usize, src: &[u8]) {
        assert!(at + src.len() <= self.len, "write past the mapping");
        // SAFETY: inside the mapping (asserted), which is writable: only
        // called on mappings made with PROT_WRITE.
        unsafe { std::ptr::copy_nonoverlapping(src.as_ptr(), self.ptr.add(at), src.len()) };
    }
}

impl Drop for Map {
    fn drop(&mut self) {
        // SAFETY: our own mapping, unused once dropped.
        unsafe { libc::munmap(self.ptr.cast(), self.len) };
    }
}

fn all_zero(b: &[u8]) -> bool {
    b.iter().all(|&x| x == 0)
}

/// The mapped data area holds what `pread` of the data area returns after
/// each get-buffer action.
pub fn mmap_get_buffer(env: &Env) -> TResult {
    for path in [OpenPath::Legacy, OpenPath::Iommufd] {
        let p = path_name(path);
        let fx = open(env, &SMALL, path)?;
        let dev = fx.dev();
        fill(dev, &SMALL, 0x41)?;
        let map = Map::data(dev)?;
        ensure!(
            all_zero(map.bytes()),
            "{p}: the fresh data area is not zero"
        );
        dev.set_threshold(40 << 10).ctx("threshold")?;
        reach(dev, DeviceState::PreCopy, &[])?;
        let mut chunks = 0;
        loop {
            let n = dev.read_field(Field::DataSize).ctx("get buffer")? as usize;
            if n == 0 {
                break;
            }
            let off = dev.read_field(Field::DataOffset).ctx("data.offset")?;
            ensure_hex!(off, mig::DATA_OFF, "{p}: data.offset after get buffer");
            let mut want = vec![0u8; n];
            dev.mig_pread(mig::DATA_OFF, &mut want)
                .ctx("pread of the chunk")?;
            ensure!(
                map.bytes()[..n] == want[..],
                "{p}: chunk {chunks} ({n} bytes): the mapping differs from pread"
            );
            ensure!(!all_zero(&want), "{p}: chunk {chunks} is all zero");
            chunks += 1;
        }
        ensure!(
            chunks > 1,
            "{p}: only {chunks} chunks at a 40 KiB threshold"
        );
    }
    Ok(())
}

/// Restore through the mapping: each chunk written into the mapped data
/// area, then handed over with data.offset and data.size alone (no pwrite
/// of the area); and `vfio-mig`'s save and restore through its mapping on
/// both open paths give the stream `pread` gives and the same device.
pub fn mmap_restore(env: &Env) -> TResult {
    for path in [OpenPath::Legacy, OpenPath::Iommufd] {
        let p = path_name(path);
        let a = open(env, &SMALL, path)?;
        fill(a.dev(), &SMALL, 0x42)?;
        let want = snap(a.dev(), &SMALL)?;
        // The library maps the areas when offered, and save_to uses them.
        let t = MigrationRegionTransfer::new(a.dev(), AreaAccess::MmapIfOffered).ctx("transfer")?;
        ensure!(
            t.uses_mmap(),
            "{p}: vfio-mig does not use the offered mapping"
        );
        let mut s = Vec::new();
        transfer::save(&t, &mut s, SaveOptions::default()).ctx("save through mmap")?;
        layout(&s, &SMALL)?;
        // The same device saved again with pread gives the same stream.
        go(a.dev(), &[DeviceState::Running])?;
        let t = MigrationRegionTransfer::new(a.dev(), AreaAccess::ReadWrite).ctx("transfer")?;
        ensure!(!t.uses_mmap(), "{p}: AreaAccess::ReadWrite maps");
        let mut s2 = Vec::new();
        transfer::save(&t, &mut s2, SaveOptions::default()).ctx("save through pread")?;
        ensure!(s == s2, "{p}: the streams of mmap and pread saves differ");

        // By hand: chunks written into a mapping of the test's own.
        let b = open(env, &SMALL, path)?;
        let map = Map::data(b.dev())?;
        go(b.dev(), &[DeviceState::Resume])?;
        for (i, chunk) in s.chunks(48 << 10).enumerate() {
            map.write(0, chunk);
            b.dev()
                .write_field(Field::DataOffset, mig::DATA_OFF)
                .ctx("data.offset")?;
            b.dev()
                .write_field(Field::DataSize, chunk.len() as u64)
                .map_err(|e| format!("{p}: set buffer of chunk {i}: {e}"))?;
        }
        go(
            b.dev(),
            &[DeviceState::ResumeCompleted, DeviceState::Running],
        )?;
        same(&snap(b.dev(), &SMALL)?, &want, true, &format!("{p}: B"))?;

        // Through the library's mapping.
        let c = open(env, &SMALL, path)?;
        let t = MigrationRegionTransfer::new(c.dev(), AreaAccess::MmapIfOffered).ctx("transfer")?;
        ensure!(t.uses_mmap(), "{p}: C: no mapping");
        let rep =
            transfer::restore(&t, &mut &s[..], &mut |_| 100_000).ctx("restore through mmap")?;
        ensure_eq!(rep.bytes, s.len() as u64, "{p}: restored bytes");
        expect_state(c.dev(), DeviceState::Running, "C after the restore")?;
        same(&snap(c.dev(), &SMALL)?, &want, true, &format!("{p}: C"))?;
    }
    Ok(())
}

/// Every mapping but a shared one inside one area is refused with EINVAL
/// (the bitmap area read only); a read-only bitmap mapping cannot be made
/// writable later (EACCES, the kernel's answer without VM_MAYWRITE).
pub fn mmap_refused(env: &Env) -> TResult {
    let fx = open(env, &SMALL, OpenPath::Legacy)?;
    let dev = fx.dev();
    let rw = libc::PROT_READ | libc::PROT_WRITE;
    let ro = libc::PROT_READ;
    let shared = libc::MAP_SHARED;
    let end = mig::BITMAP_OFF + mig::BITMAP_LEN;
    let cases: [(&str, u32, u64, u64, i32, i32); 11] = [
        ("the fields page", M, 0, PAGE, ro, shared),
        ("fields and data", M, 0, 2 * PAGE, ro, shared),
        ("past the bitmap area", M, end, PAGE, ro, shared),
        (
            "straddling data and bitmap",
            M,
            mig::BITMAP_OFF - PAGE,
            2 * PAGE,
            ro,
            shared,
        ),
        (
            "the data area and one page more",
            M,
            mig::DATA_OFF,
            mig::DATA_LEN + PAGE,
            ro,
            shared,
        ),
        ("BAR0", region::BAR0, 0, PAGE, ro, shared),
        ("BAR2", region::BAR2, 0, PAGE, rw, shared),
        ("config space", region::CONFIG, 0, PAGE, ro, shared),
        (
            "a private data mapping",
            M,
            mig::DATA_OFF,
            PAGE,
            ro,
            libc::MAP_PRIVATE,
        ),
        (
            "a writable bitmap mapping",
            M,
            mig::BITMAP_OFF,
            PAGE,
            rw,
            shared,
        ),
        (
            "a write-only bitmap mapping",
            M,
            mig::BITMAP_OFF,
            mig::BITMAP_LEN,
            libc::PROT_WRITE,
            shared,
        ),
    ];
    for (what, index, off, len, prot, flags) in cases {
        match Map::region(dev, index, off, len, prot, flags) {
            Ok(_) => return Err(format!("mmap of {what}: succeeded, want EINVAL")),
            Err(e) => ensure!(
                e == EINVAL,
                "mmap of {what}: {}, want EINVAL",
                vfio_mig::errno_name(e)
            ),
        }
    }
    // What does map: any page-aligned part of one area.
    for (off, len, write) in [
        (mig::DATA_OFF, mig::DATA_LEN, true),
        (mig::DATA_OFF + 3 * PAGE, PAGE, true),
        (mig::BITMAP_OFF - PAGE, PAGE, false),
        (mig::BITMAP_OFF, mig::BITMAP_LEN, false),
        (end - PAGE, PAGE, false),
    ] {
        Map::mig(dev, off, len, write)?;
    }
    let bm = Map::bitmap(dev)?;
    // SAFETY: our own mapping; mprotect only changes its protection.
    let r = unsafe { libc::mprotect(bm.ptr.cast(), bm.len, rw) };
    let e = std::io::Error::last_os_error().raw_os_error().unwrap_or(0);
    ensure!(
        r == -1 && e == libc::EACCES,
        "mprotect(PROT_WRITE) of the bitmap mapping: returned {r} ({}), want EACCES",
        vfio_mig::errno_name(e)
    );
    Ok(())
}

/// The areas are zeroed in place: a mapping of them reads zero after
/// VFIO_DEVICE_RESET, and a new mapping reads zero after close and reopen.
pub fn mmap_zeroed(env: &Env) -> TResult {
    let mut fx = open(env, &SMALL, OpenPath::Legacy)?;
    /// Stages a chunk in the data area and scribbles on the bitmap area
    /// (pwrite), and checks that the mappings see both.
    fn dirty_areas(dev: &Device, data: &Map, bitmap: &Map, what: &str) -> TResult {
        fill(dev, &SMALL, 0x43)?;
        reach(dev, DeviceState::PreCopy, &[])?;
        let n = dev.read_field(Field::DataSize).ctx("get buffer")? as usize;
        ensure!(n > 0, "{what}: get buffer staged nothing");
        ensure!(
            !all_zero(&data.bytes()[..n]),
            "{what}: the mapped chunk is zero"
        );
        let scribble = vec![0xa5u8; 256];
        dev.mig_pwrite(mig::BITMAP_OFF + 0x100, &scribble)
            .ctx("pwrite of the bitmap area")?;
        ensure!(
            bitmap.bytes()[0x100..0x200] == scribble[..],
            "{what}: the bitmap mapping does not show the pwrite"
        );
        Ok(())
    }
    {
        let dev = fx.dev();
        let (data, bitmap) = (Map::data(dev)?, Map::bitmap(dev)?);
        dirty_areas(dev, &data, &bitmap, "before reset")?;
        dev.reset().ctx("VFIO_DEVICE_RESET")?;
        ensure!(
            all_zero(data.bytes()),
            "data area mapping after reset: not zero"
        );
        ensure!(
            all_zero(bitmap.bytes()),
            "bitmap area mapping after reset: not zero"
        );
        // The mapping still works for the next session.
        dirty_areas(dev, &data, &bitmap, "after reset")?;
    }
    // The mappings are gone (they held the file open): close and reopen.
    fx.reopen(OpenPath::Legacy)?;
    let dev = fx.dev();
    let (data, bitmap) = (Map::data(dev)?, Map::bitmap(dev)?);
    ensure!(
        all_zero(data.bytes()),
        "data area after close and reopen: not zero"
    );
    ensure!(
        all_zero(bitmap.bytes()),
        "bitmap area after close and reopen: not zero"
    );
    Ok(())
}

/// The mapped bitmap area holds the bits a dirty query reported (pread),
/// and `vfio-mig`'s mapped query reports the same pages.
pub fn mmap_dirty_bitmap(env: &Env) -> TResult {
    const BASE: u64 = 0x4000_0000;
    for path in [OpenPath::Legacy, OpenPath::Iommufd] {
        let p = path_name(path);
        let fx = open(env, &SMALL, path)?;
        let dev = fx.dev();
        let _ram = Ram::map(dev, BASE, 256, 0x5a)?;
        let bitmap = Map::bitmap(dev)?;
        go(dev, &[DeviceState::Running, DeviceState::Setup])?;
        let pages = [0u64, 1, 63, 64, 130, 255];
        for pg in pages {
            run_ok(dev, &Cmd::fill(BASE + pg * PAGE, 1, 0x1234_5678))?;
        }
        let d = dev.dirty_bitmap(BASE, 256).ctx("dirty query (pread)")?;
        ensure!(
            d.words.iter().any(|&w| w != 0),
            "{p}: the query reports nothing: {:x?}",
            d.words
        );
        let mapped: Vec<u64> = bitmap.bytes()[..d.words.len() * 8]
            .chunks_exact(8)
            .map(|c| u64::from_le_bytes(c.try_into().unwrap()))
            .collect();
        ensure_eq!(
            mapped,
            d.words,
            "{p}: mapped bitmap area vs the query's bitmap"
        );
        let expected: Vec<u64> = (0..4)
            .map(|w| {
                pages
                    .iter()
                    .filter(|&&pg| pg / 64 == w)
                    .fold(0u64, |a, &pg| a | 1 << (pg % 64))
            })
            .collect();
        ensure_eq!(d.words, expected, "{p}: the query's bits");
        // The library's mapped query: the same pages again.
        for pg in pages {
            run_ok(dev, &Cmd::fill(BASE + pg * PAGE, 1, 0x1234_5678))?;
        }
        let t = MigrationRegionTransfer::new(dev, AreaAccess::MmapIfOffered).ctx("transfer")?;
        ensure!(t.uses_mmap(), "{p}: no mapping");
        let m = t.dirty_bitmap(BASE, 256).ctx("dirty query (mmap)")?;
        ensure_eq!(m.words, expected, "{p}: the mapped query's bits");
    }
    Ok(())
}

/// `vfio-mig info` says the areas are mmap-able; save and restore with
/// `--no-mmap` work.
pub fn mmap_cli(env: &Env) -> TResult {
    let file = format!("/tmp/vfio-mig-mmap-{}.stream", std::process::id());
    let r = cli_inner(env, &file);
    let _ = std::fs::remove_file(&file);
    r
}

fn cli_inner(env: &Env, file: &str) -> TResult {
    let a = open(env, &SMALL, OpenPath::Legacy)?;
    let b = open(env, &SMALL, OpenPath::Legacy)?;
    fill(a.dev(), &SMALL, 0x44)?;
    let want = snap(a.dev(), &SMALL)?;
    let (ua, ub) = (a.mdev.uuid().to_string(), b.mdev.uuid().to_string());
    let out = run_cli(&["info", &ua], Some(a.dev()))?;
    let so = cli_ok(&out, "vfio-mig info")?;
    ensure!(
        so.contains("data and bitmap areas mmap-able: yes"),
        "info output does not say the areas are mmap-able:\n{so}"
    );
    let out = run_cli(&["info", &ua, "--json"], Some(a.dev()))?;
    let so = cli_ok(&out, "vfio-mig info --json")?;
    ensure!(
        so.contains("\"mmap\": true"),
        "info --json lacks \"mmap\": true:\n{so}"
    );
    let out = run_cli(&["save", &ua, "--out", file, "--no-mmap"], Some(a.dev()))?;
    cli_ok(&out, "vfio-mig save --no-mmap")?;
    let s = std::fs::read(file).map_err(|e| format!("read {file}: {e}"))?;
    layout(&s, &SMALL)?;
    let out = run_cli(&["restore", &ub, "--in", file, "--no-mmap"], Some(b.dev()))?;
    cli_ok(&out, "vfio-mig restore --no-mmap")?;
    expect_state(b.dev(), DeviceState::Running, "B after the restore")?;
    same(
        &snap(b.dev(), &SMALL)?,
        &want,
        true,
        "B after vfio-mig restore --no-mmap",
    )?;
    let out = run_cli(&["save", &ua, "--out", file, "--v2", "--no-mmap"], None)?;
    ensure_eq!(
        out.status.code(),
        Some(2),
        "--v2 with --no-mmap: usage error"
    );
    Ok(())
}
