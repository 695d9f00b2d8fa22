// SPDX-License-Identifier: GPL-2.0
//! PCI configuration space (region 7).

use vfio_mig::{Device, OpenPath};

use crate::device::{cfg, region, region_offset, TypeSpec, CONFIG_SIZE, LARGE, SMALL};
use crate::util::{expect_errno, Ctx, Env, Io, TResult};
use crate::{ensure, ensure_eq, ensure_hex};

const C: u32 = region::CONFIG;

/// The whole config space in one read.
pub fn snapshot(dev: &Device) -> Result<Vec<u8>, String> {
    let mut b = vec![0u8; CONFIG_SIZE as usize];
    dev.read_region(C, 0, &mut b)
        .ctx("read all of config space")?;
    Ok(b)
}

/// Fails naming the first differing byte.
pub fn same_bytes(got: &[u8], want: &[u8], what: &str) -> TResult {
    if let Some(i) = (0..want.len()).find(|&i| got.get(i) != want.get(i)) {
        return Err(format!(
            "{what}: first difference at {i:#x}: got {:#04x}, want {:#04x}",
            got[i], want[i]
        ));
    }
    ensure_eq!(got.len(), want.len(), "{what}: length");
    Ok(())
}

/// Power-on config space, field by field.
pub fn check_power_on(dev: &Device, spec: &TypeSpec) -> TResult {
    ensure_hex!(dev.r16(C, cfg::VENDOR_ID)?, cfg::VENDOR, "vendor id");
    ensure_hex!(dev.r16(C, cfg::DEVICE_ID)?, cfg::DEVICE, "device id");
    ensure_hex!(dev.r16(C, cfg::COMMAND)?, 0u16, "command at power-on");
    ensure_hex!(dev.r16(C, cfg::STATUS)?, cfg::STATUS_CAP_LIST, "status");
    ensure_hex!(dev.r8(C, cfg::REVISION)?, cfg::REVISION_VALUE, "revision");
    ensure_hex!(
        dev.r32(C, cfg::REVISION)?,
        cfg::CLASS_REV,
        "class code and revision"
    );
    ensure_hex!(
        dev.r8(C, cfg::HEADER_TYPE)?,
        cfg::HEADER_TYPE_VALUE,
        "header type"
    );
    ensure_hex!(dev.r32(C, cfg::BAR0)?, 0u32, "BAR0 at power-on");
    ensure_hex!(dev.r32(C, cfg::BAR1)?, 0u32, "BAR1");
    ensure_hex!(
        dev.r32(C, cfg::BAR2)?,
        cfg::BAR2_TYPE,
        "BAR2 at power-on (type bits only)"
    );
    ensure_hex!(dev.r32(C, cfg::BAR3)?, 0u32, "BAR3 at power-on");
    ensure_hex!(dev.r32(C, cfg::BAR4)?, 0u32, "BAR4");
    ensure_hex!(dev.r32(C, cfg::BAR5)?, 0u32, "BAR5");
    ensure_hex!(
        dev.r16(C, cfg::SUBSYS_VENDOR)?,
        cfg::VENDOR,
        "subsystem vendor"
    );
    ensure_hex!(dev.r16(C, cfg::SUBSYS_ID)?, spec.subsys_id, "subsystem id");
    ensure_hex!(dev.r32(C, cfg::ROM)?, 0u32, "expansion ROM");
    ensure_hex!(
        dev.r8(C, cfg::CAP_PTR)?,
        cfg::CAP_PTR_VALUE,
        "capability pointer"
    );
    ensure_hex!(dev.r8(C, cfg::INT_PIN)?, cfg::PIN_INTA, "interrupt pin");
    ensure_hex!(
        dev.r8(C, cfg::MSI)?,
        cfg::CAP_ID_MSI,
        "capability id at 0x40"
    );
    ensure_hex!(dev.r8(C, cfg::MSI + 1)?, 0u8, "next capability after MSI");
    ensure_hex!(
        dev.r16(C, cfg::MSI_FLAGS)?,
        cfg::MSI_FLAGS_64BIT,
        "MSI flags at power-on (64-bit, one vector, disabled)"
    );
    ensure_hex!(dev.r32(C, cfg::MSI_ADDR_LO)?, 0u32, "MSI address low");
    ensure_hex!(dev.r32(C, cfg::MSI_ADDR_HI)?, 0u32, "MSI address high");
    ensure_hex!(dev.r16(C, cfg::MSI_DATA)?, 0u16, "MSI data");
    Ok(())
}

fn ids(env: &Env, spec: &'static TypeSpec) -> TResult {
    let fx = env.open(spec, OpenPath::Legacy)?;
    let dev = fx.dev();
    check_power_on(dev, spec)?;
    // The same bytes through one 256-byte read.
    let all = snapshot(dev)?;
    for off in (0..CONFIG_SIZE).step_by(4) {
        let d = dev.r32(C, off)?;
        let b = u32::from_le_bytes(all[off as usize..off as usize + 4].try_into().unwrap());
        ensure_hex!(
            b,
            d,
            "config dword {off:#x}: one 256-byte read vs a 4-byte read"
        );
    }
    Ok(())
}

pub fn config_ids_small(env: &Env) -> TResult {
    ids(env, &SMALL)
}

pub fn config_ids_large(env: &Env) -> TResult {
    ids(env, &LARGE)
}

pub fn config_read_only(env: &Env) -> TResult {
    let fx = env.open(&SMALL, OpenPath::Legacy)?;
    let dev = fx.dev();
    let before = snapshot(dev)?;
    let writes: &[(u64, &[u8], &str)] = &[
        (cfg::VENDOR_ID, &[0xff; 4], "vendor/device id"),
        (cfg::STATUS, &[0xff; 2], "status"),
        (cfg::REVISION, &[0xff; 4], "revision/class"),
        (cfg::HEADER_TYPE, &[0xff; 2], "header type/BIST"),
        (cfg::SUBSYS_VENDOR, &[0xff; 4], "subsystem ids"),
        (cfg::CAP_PTR, &[0xff], "capability pointer"),
        (cfg::INT_PIN, &[0xff], "interrupt pin"),
        (cfg::MSI, &[0xff; 2], "MSI id/next"),
    ];
    for (off, bytes, what) in writes {
        dev.write_region(C, *off, bytes)
            .ctx(&format!("write to read-only {what} at {off:#x}"))?;
    }
    same_bytes(
        &snapshot(dev)?,
        &before,
        "config space after writes to read-only bytes",
    )
}

fn bar_sizing(env: &Env, spec: &'static TypeSpec) -> TResult {
    let fx = env.open(spec, OpenPath::Legacy)?;
    let dev = fx.dev();
    let expect = [
        (cfg::BAR0, cfg::BAR0_SIZING, "BAR0"),
        (cfg::BAR1, 0, "BAR1 (not implemented)"),
        (cfg::BAR2, spec.bar2_sizing, "BAR2"),
        (cfg::BAR3, cfg::BAR3_SIZING, "BAR3 (BAR2 high)"),
        (cfg::BAR4, 0, "BAR4 (not implemented)"),
        (cfg::BAR5, 0, "BAR5 (not implemented)"),
        (cfg::ROM, 0, "expansion ROM (not implemented)"),
    ];
    for (off, want, what) in expect {
        dev.w32(C, off, 0xffff_ffff)?;
        ensure_hex!(dev.r32(C, off)?, want, "{what} after writing all ones");
    }
    // Writing 0 unassigns again; the type bits stay.
    for (off, _, _) in expect {
        dev.w32(C, off, 0)?;
    }
    ensure_hex!(dev.r32(C, cfg::BAR0)?, 0u32, "BAR0 after writing 0");
    ensure_hex!(
        dev.r32(C, cfg::BAR2)?,
        cfg::BAR2_TYPE,
        "BAR2 after writing 0"
    );
    ensure_hex!(dev.r32(C, cfg::BAR3)?, 0u32, "BAR3 after writing 0");
    Ok(())
}

pub fn config_bar_sizing_small(env: &Env) -> TResult {
    bar_sizing(env, &SMALL)
}

pub fn config_bar_sizing_large(env: &Env) -> TResult {
    bar_sizing(env, &LARGE)
}

pub fn config_bar_address(env: &Env) -> TResult {
    let fx = env.open(&LARGE, OpenPath::Legacy)?;
    let dev = fx.dev();
    dev.w32(C, cfg::BAR0, 0xfebf_1000)?;
    ensure_hex!(dev.r32(C, cfg::BAR0)?, 0xfebf_1000u32, "BAR0 address");
    dev.w32(C, cfg::BAR0, 0xfebf_2abc)?;
    ensure_hex!(
        dev.r32(C, cfg::BAR0)?,
        0xfebf_2000u32,
        "BAR0 drops bits below 4 KiB"
    );
    dev.w8(C, cfg::BAR0 + 3, 0xab)?;
    ensure_hex!(
        dev.r32(C, cfg::BAR0)?,
        0xabbf_2000u32,
        "BAR0 after a one-byte write"
    );
    dev.w32(C, cfg::BAR2, 0xc010_0000)?;
    ensure_hex!(
        dev.r32(C, cfg::BAR2)?,
        0xc000_0000u32 | cfg::BAR2_TYPE,
        "BAR2 address (large: 2 MiB aligned)"
    );
    dev.w32(C, cfg::BAR3, 0x0000_0001)?;
    ensure_hex!(dev.r32(C, cfg::BAR3)?, 1u32, "BAR3 (high dword of BAR2)");
    Ok(())
}

pub fn config_writable(env: &Env) -> TResult {
    let fx = env.open(&SMALL, OpenPath::Legacy)?;
    let dev = fx.dev();
    dev.w16(C, cfg::COMMAND, 0xffff)?;
    ensure_hex!(
        dev.r16(C, cfg::COMMAND)?,
        cfg::COMMAND_WRITABLE,
        "command after writing 0xffff (IO|MEM|MASTER|INTX_DISABLE)"
    );
    ensure_hex!(
        dev.r16(C, cfg::STATUS)?,
        cfg::STATUS_CAP_LIST,
        "status beside it"
    );
    dev.w16(C, cfg::COMMAND, 0)?;
    ensure_hex!(dev.r16(C, cfg::COMMAND)?, 0u16, "command after writing 0");
    dev.w8(C, cfg::INT_LINE, 0x0b)?;
    ensure_hex!(dev.r8(C, cfg::INT_LINE)?, 0x0bu8, "interrupt line");
    ensure_hex!(
        dev.r8(C, cfg::INT_PIN)?,
        cfg::PIN_INTA,
        "interrupt pin beside it"
    );
    dev.w16(C, cfg::MSI_FLAGS, 0xffff)?;
    ensure_hex!(
        dev.r16(C, cfg::MSI_FLAGS)?,
        cfg::MSI_FLAGS_64BIT | cfg::MSI_FLAGS_ENABLE | 0x0070,
        "MSI flags after writing 0xffff (enable and multiple-message enable writable)"
    );
    ensure_eq!(
        dev.r16(C, cfg::MSI_FLAGS)? & cfg::MSI_FLAGS_QMASK,
        0,
        "MSI multiple-message capable (one vector)"
    );
    dev.w32(C, cfg::MSI_ADDR_LO, 0xfee0_1000)?;
    dev.w32(C, cfg::MSI_ADDR_HI, 0x1234_5678)?;
    dev.w16(C, cfg::MSI_DATA, 0x4041)?;
    ensure_hex!(
        dev.r32(C, cfg::MSI_ADDR_LO)?,
        0xfee0_1000u32,
        "MSI address low"
    );
    ensure_hex!(
        dev.r32(C, cfg::MSI_ADDR_HI)?,
        0x1234_5678u32,
        "MSI address high"
    );
    ensure_hex!(dev.r16(C, cfg::MSI_DATA)?, 0x4041u16, "MSI data");
    Ok(())
}

pub fn config_unlisted_zero(env: &Env) -> TResult {
    let fx = env.open(&SMALL, OpenPath::Legacy)?;
    let dev = fx.dev();
    let ranges: &[(u64, u64)] = &[
        (0x0c, 0x0e),
        (0x0f, 0x10),
        (0x28, 0x2c),
        (0x35, 0x3c),
        (0x3e, 0x40),
        (cfg::MSI_END, CONFIG_SIZE),
    ];
    for &(start, end) in ranges {
        let ones = vec![0xffu8; (end - start) as usize];
        dev.write_region(C, start, &ones)
            .ctx(&format!("write ones to {start:#x}..{end:#x}"))?;
        let mut got = vec![0u8; ones.len()];
        dev.read_region(C, start, &mut got)
            .ctx(&format!("read {start:#x}..{end:#x}"))?;
        if let Some(i) = got.iter().position(|&b| b != 0) {
            return Err(format!(
                "unlisted config byte {:#x} reads {:#04x} after writing 0xff, want 0",
                start + i as u64,
                got[i]
            ));
        }
    }
    Ok(())
}

pub fn config_bounds(env: &Env) -> TResult {
    let fx = env.open(&SMALL, OpenPath::Legacy)?;
    let dev = fx.dev();
    let bad: &[(u64, usize)] = &[
        (CONFIG_SIZE - 1, 2),
        (CONFIG_SIZE - 3, 4),
        (CONFIG_SIZE, 1),
        (CONFIG_SIZE, 4),
        (0, CONFIG_SIZE as usize + 1),
        (0x1000, 4),
        ((1 << 40) - 2, 4),
    ];
    for &(off, len) in bad {
        let mut b = vec![0u8; len];
        expect_errno(
            dev.pread(region_offset(C) + off, &mut b),
            libc::EINVAL,
            &format!("config read of {len} at {off:#x}"),
        )?;
        let ones = vec![0xffu8; len];
        expect_errno(
            dev.pwrite(region_offset(C) + off, &ones),
            libc::EINVAL,
            &format!("config write of {len} at {off:#x}"),
        )?;
    }
    // The rejected 257-byte write of ones changed nothing.
    ensure_hex!(
        dev.r16(C, cfg::COMMAND)?,
        0u16,
        "command after rejected writes"
    );
    ensure_hex!(dev.r32(C, cfg::BAR0)?, 0u32, "BAR0 after rejected writes");
    // The last byte itself is fine.
    ensure_eq!(dev.r8(C, CONFIG_SIZE - 1)?, 0, "config byte 0xff");
    let mut b = [0u8; 2];
    ensure!(
        dev.pread(region_offset(C) + CONFIG_SIZE - 2, &mut b)
            .ctx("read last 2 bytes")?
            == 2,
        "short read of the last 2 bytes"
    );
    Ok(())
}
