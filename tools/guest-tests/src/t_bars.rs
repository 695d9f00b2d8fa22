// SPDX-License-Identifier: GPL-2.0
//! BAR0 registers (region 0), BAR2 device memory (region 2), empty regions.

use vfio_mig::{Device, OpenPath};

use crate::device::{bar0, region, region_offset, TypeSpec, BAR0_SIZE, LARGE, NUM_REGIONS, SMALL};
use crate::util::{expect_errno, pattern, Ctx, Env, Io, TResult};
use crate::{ensure, ensure_eq, ensure_hex};

const B0: u32 = region::BAR0;
const B2: u32 = region::BAR2;

/// Power-on BAR0 register values.
pub fn check_bar0_power_on(dev: &Device, spec: &TypeSpec) -> TResult {
    let want = [
        (bar0::ID, bar0::ID_VALUE, "ID"),
        (bar0::VERSION, bar0::VERSION_VALUE, "VERSION"),
        (bar0::SCRATCH, 0, "SCRATCH"),
        (bar0::STATUS, 0, "STATUS"),
        (bar0::IRQ_STATUS, 0, "IRQ_STATUS"),
        (bar0::IRQ_ENABLE, 0, "IRQ_ENABLE"),
        (bar0::DOORBELL, 0, "DOORBELL"),
        (bar0::MEM_SIZE, spec.mem_size as u32, "MEM_SIZE"),
        (bar0::IRQ_COUNT, 0, "IRQ_COUNT"),
    ];
    for (off, v, name) in want {
        ensure_hex!(dev.r32(B0, off)?, v, "BAR0 {name} at power-on");
    }
    ensure_hex!(
        dev.r32(B0, bar0::STATUS)? & bar0::STATUS_QUIESCED,
        0u32,
        "STATUS.QUIESCED of a device that is not migrating"
    );
    Ok(())
}

/// Whether all of device memory reads as zero.
pub fn check_bar2_zero(dev: &Device, spec: &TypeSpec) -> TResult {
    let mut buf = vec![0u8; 64 << 10];
    let mut off = 0;
    while off < spec.mem_size {
        let n = buf.len().min((spec.mem_size - off) as usize);
        dev.read_region(B2, off, &mut buf[..n])
            .ctx("read device memory")?;
        if let Some(i) = buf[..n].iter().position(|&b| b != 0) {
            return Err(format!(
                "device memory byte {:#x} is {:#04x}, want 0",
                off + i as u64,
                buf[i]
            ));
        }
        off += n as u64;
    }
    Ok(())
}

pub fn bar0_registers(env: &Env) -> TResult {
    for spec in [&SMALL, &LARGE] {
        let fx = env.open(spec, OpenPath::Legacy)?;
        let dev = fx.dev();
        check_bar0_power_on(dev, spec)?;
        // All registers in one 36-byte access: one register per dword.
        let mut all = vec![0u8; bar0::END as usize];
        dev.read_region(B0, 0, &mut all)
            .ctx("read all registers at once")?;
        for off in (0..bar0::END).step_by(4) {
            let b = u32::from_le_bytes(all[off as usize..off as usize + 4].try_into().unwrap());
            ensure_hex!(
                b,
                dev.r32(B0, off)?,
                "register {off:#x}: bulk read vs single read"
            );
        }
    }
    Ok(())
}

pub fn bar0_scratch(env: &Env) -> TResult {
    let fx = env.open(&SMALL, OpenPath::Legacy)?;
    let dev = fx.dev();
    for v in [0xdead_beefu32, 0, 0xffff_ffff, 0x1234_5678, 0x8000_0001] {
        dev.w32(B0, bar0::SCRATCH, v)?;
        ensure_hex!(
            dev.r32(B0, bar0::SCRATCH)?,
            v,
            "SCRATCH after writing {v:#x}"
        );
    }
    // Two dwords at once: SCRATCH takes its half, read-only STATUS ignores its.
    let mut two = Vec::new();
    two.extend_from_slice(&0xa5a5_5a5au32.to_le_bytes());
    two.extend_from_slice(&0xffff_ffffu32.to_le_bytes());
    dev.write_region(B0, bar0::SCRATCH, &two)
        .ctx("8-byte write at SCRATCH")?;
    ensure_hex!(
        dev.r32(B0, bar0::SCRATCH)?,
        0xa5a5_5a5au32,
        "SCRATCH after 8-byte write"
    );
    ensure_hex!(
        dev.r32(B0, bar0::STATUS)?,
        0u32,
        "STATUS after 8-byte write"
    );
    Ok(())
}

pub fn bar0_read_only(env: &Env) -> TResult {
    let fx = env.open(&LARGE, OpenPath::Legacy)?;
    let dev = fx.dev();
    let ro = [
        (bar0::ID, "ID"),
        (bar0::VERSION, "VERSION"),
        (bar0::STATUS, "STATUS"),
        (bar0::MEM_SIZE, "MEM_SIZE"),
        (bar0::IRQ_COUNT, "IRQ_COUNT"),
    ];
    for (off, name) in ro {
        let before = dev.r32(B0, off)?;
        for v in [0xffff_ffffu32, 0, 0x5555_aaaa] {
            dev.w32(B0, off, v)
                .map_err(|e| format!("write to read-only {name}: {e}"))?;
            ensure_hex!(dev.r32(B0, off)?, before, "{name} after writing {v:#x}");
        }
    }
    check_bar0_power_on(dev, &LARGE)
}

pub fn bar0_bad_access(env: &Env) -> TResult {
    let fx = env.open(&SMALL, OpenPath::Legacy)?;
    let dev = fx.dev();
    dev.w32(B0, bar0::SCRATCH, 0x1122_3344)?;
    let base = region_offset(B0);
    // (offset, len): unaligned, or not a multiple of 4, or past the end.
    let bad: &[(u64, usize)] = &[
        (bar0::SCRATCH, 1),
        (bar0::SCRATCH, 2),
        (bar0::SCRATCH, 3),
        (bar0::SCRATCH, 5),
        (bar0::SCRATCH, 6),
        (bar0::SCRATCH, 7),
        (bar0::SCRATCH + 1, 4),
        (bar0::SCRATCH + 2, 4),
        (bar0::SCRATCH + 3, 4),
        (bar0::SCRATCH + 2, 2),
        (bar0::SCRATCH + 3, 1),
        (bar0::DOORBELL, 2),
        (BAR0_SIZE, 4),
        (BAR0_SIZE - 4, 8),
        (0, BAR0_SIZE as usize + 4),
        ((1 << 40) - 4, 8),
    ];
    for &(off, len) in bad {
        let mut b = vec![0u8; len];
        expect_errno(
            dev.pread(base + off, &mut b),
            libc::EINVAL,
            &format!("BAR0 read of {len} at {off:#x}"),
        )?;
        let ones = vec![0xffu8; len];
        expect_errno(
            dev.pwrite(base + off, &ones),
            libc::EINVAL,
            &format!("BAR0 write of {len} at {off:#x}"),
        )?;
    }
    // No rejected access had a side effect.
    ensure_hex!(
        dev.r32(B0, bar0::SCRATCH)?,
        0x1122_3344u32,
        "SCRATCH after rejected writes"
    );
    ensure_hex!(
        dev.r32(B0, bar0::DOORBELL)?,
        0u32,
        "DOORBELL after rejected writes"
    );
    ensure_hex!(
        dev.r32(B0, bar0::IRQ_STATUS)?,
        0u32,
        "IRQ_STATUS after rejected writes"
    );
    // The last dword and the whole BAR in one read are fine.
    ensure_hex!(dev.r32(B0, BAR0_SIZE - 4)?, 0u32, "last BAR0 dword");
    let mut all = vec![0u8; BAR0_SIZE as usize];
    dev.read_region(B0, 0, &mut all)
        .ctx("read all 4096 bytes of BAR0")?;
    ensure_hex!(
        u32::from_le_bytes(all[0..4].try_into().unwrap()),
        bar0::ID_VALUE,
        "ID in a whole-BAR read"
    );
    Ok(())
}

pub fn bar0_unimplemented(env: &Env) -> TResult {
    let fx = env.open(&SMALL, OpenPath::Legacy)?;
    let dev = fx.dev();
    // 0x40..0xb0 is the DMA engine (t_dma.rs).
    for off in [
        bar0::END,
        bar0::END + 4,
        0x3c,
        0xb0,
        0x100,
        0x800,
        BAR0_SIZE - 4,
    ] {
        dev.w32(B0, off, 0xffff_ffff)
            .map_err(|e| format!("write to unimplemented {off:#x}: {e}"))?;
        ensure_hex!(dev.r32(B0, off)?, 0u32, "unimplemented register {off:#x}");
    }
    let mut rest = vec![0u8; (BAR0_SIZE - bar0::END) as usize];
    dev.read_region(B0, bar0::END, &mut rest)
        .ctx("read BAR0 past the registers")?;
    ensure!(
        rest.iter().all(|&b| b == 0),
        "BAR0 past the registers is not all zero"
    );
    check_bar0_power_on(dev, &SMALL)
}

/// Writes `seed`'s pattern over all of device memory in chunks cycling
/// through `sizes`, then reads it back in chunks cycling through `rsizes`.
fn pattern_pass(dev: &Device, size: u64, seed: u8, sizes: &[usize], rsizes: &[usize]) -> TResult {
    let mut off = 0u64;
    for i in 0.. {
        if off >= size {
            break;
        }
        let n = sizes[i % sizes.len()].min((size - off) as usize);
        let chunk: Vec<u8> = (off..off + n as u64).map(|o| pattern(o, seed)).collect();
        dev.write_region(B2, off, &chunk)
            .ctx(&format!("write {n} bytes at {off:#x}"))?;
        off += n as u64;
    }
    let mut off = 0u64;
    for i in 0.. {
        if off >= size {
            break;
        }
        let n = rsizes[i % rsizes.len()].min((size - off) as usize);
        let mut got = vec![0u8; n];
        dev.read_region(B2, off, &mut got)
            .ctx(&format!("read {n} bytes at {off:#x}"))?;
        for (j, &b) in got.iter().enumerate() {
            let o = off + j as u64;
            if b != pattern(o, seed) {
                return Err(format!(
                    "device memory {o:#x}: read {b:#04x}, wrote {:#04x} (seed {seed})",
                    pattern(o, seed)
                ));
            }
        }
        off += n as u64;
    }
    Ok(())
}

fn bar2_pattern(env: &Env, spec: &'static TypeSpec) -> TResult {
    let fx = env.open(spec, OpenPath::Legacy)?;
    let dev = fx.dev();
    check_bar2_zero(dev, spec)?;
    pattern_pass(
        dev,
        spec.mem_size,
        0x00,
        &[4093, 1, 7, 13, 4099, 65537, 3],
        &[8191, 5, 1, 4097, 11, 30001],
    )?;
    pattern_pass(
        dev,
        spec.mem_size,
        0xa5,
        &[65521, 2, 9, 4095],
        &[4093, 1, 7, 13, 4099, 65537, 3],
    )?;
    let last = spec.mem_size - 1;
    dev.write_region(B2, last, &[0x5a]).ctx("write last byte")?;
    let mut b = [0u8; 1];
    dev.read_region(B2, last, &mut b).ctx("read last byte")?;
    ensure_hex!(b[0], 0x5au8, "last byte of device memory");
    // BAR0 agrees on the size.
    ensure_hex!(
        dev.r32(B0, bar0::MEM_SIZE)? as u64,
        spec.mem_size,
        "MEM_SIZE"
    );
    Ok(())
}

pub fn bar2_pattern_small(env: &Env) -> TResult {
    bar2_pattern(env, &SMALL)
}

pub fn bar2_pattern_large(env: &Env) -> TResult {
    bar2_pattern(env, &LARGE)
}

pub fn bar2_bounds(env: &Env) -> TResult {
    let fx = env.open(&SMALL, OpenPath::Legacy)?;
    let dev = fx.dev();
    let size = SMALL.mem_size;
    let base = region_offset(B2);
    dev.write_region(B2, size - 2, &[0x11, 0x22])
        .ctx("write last 2 bytes")?;
    let bad: &[(u64, usize)] = &[
        (size, 1),
        (size - 1, 2),
        (size - 4, 8),
        (0, size as usize + 1),
        (size + 4096, 4),
        ((1 << 40) - 1, 2),
        ((1 << 40) - 8, 16),
        (0, 16 << 20),
    ];
    for &(off, len) in bad {
        let mut b = vec![0u8; len];
        expect_errno(
            dev.pread(base + off, &mut b),
            libc::EINVAL,
            &format!("BAR2 read of {len} at {off:#x}"),
        )?;
        let ones = vec![0xffu8; len];
        expect_errno(
            dev.pwrite(base + off, &ones),
            libc::EINVAL,
            &format!("BAR2 write of {len} at {off:#x}"),
        )?;
    }
    let mut b = [0u8; 2];
    dev.read_region(B2, size - 2, &mut b)
        .ctx("read last 2 bytes")?;
    ensure_eq!(b, [0x11, 0x22], "last 2 bytes after rejected writes");
    // Positions past every region: index 10, 255 and the largest positive
    // file offset's index.
    for index in [NUM_REGIONS, 255, 0x7f_ffff] {
        let mut b = [0u8; 4];
        expect_errno(
            dev.pread(region_offset(index), &mut b),
            libc::EINVAL,
            &format!("read at region {index:#x}"),
        )?;
    }
    Ok(())
}

pub fn empty_regions(env: &Env) -> TResult {
    let fx = env.open(&SMALL, OpenPath::Legacy)?;
    let dev = fx.dev();
    let mut empty = vec![region::BAR1, 3, 4, 5, 6, region::VGA];
    let r9 = dev
        .region_info(region::MIGRATION)
        .ctx("GET_REGION_INFO 9")?;
    if r9.size == 0 {
        empty.push(region::MIGRATION);
    }
    for index in empty {
        let mut b = [0u8; 4];
        expect_errno(
            dev.pread(region_offset(index), &mut b),
            libc::EINVAL,
            &format!("read from empty region {index}"),
        )?;
        expect_errno(
            dev.pwrite(region_offset(index), &[0xff; 4]),
            libc::EINVAL,
            &format!("write to empty region {index}"),
        )?;
    }
    Ok(())
}
