// SPDX-License-Identifier: GPL-2.0
//! PCI configuration space through configuration mechanism #1 (ports
//! 0xcf8/0xcfc), and what firmware would do for the device: size and
//! place its BARs and enable decoding and bus mastering. No firmware runs
//! in these VMs, so nothing else touches the device.

use anyhow::{ensure, Result};

use crate::qtest::Qtest;

const CONFIG_ADDRESS: u16 = 0xcf8;
const CONFIG_DATA: u16 = 0xcfc;
/// The device's slot on bus 0 (`addr=` on QEMU's command line).
pub const SLOT: u32 = 4;
/// Size of the configuration space a conventional function has.
const CONFIG_SIZE: usize = 256;
const COMMAND: u32 = 0x04;
const BAR0: u32 = 0x10;
/// Command register: I/O and memory decoding, bus mastering.
const COMMAND_IO_MEM_MASTER: u32 = 0x7;
/// Where BARs go: the I/O window and the 32-bit MMIO hole of q35 with a
/// small RAM (above the MMCONFIG window at 0xb0000000).
const IO_START: u64 = 0xc000;
const MMIO_START: u64 = 0xc000_0000;

fn address(reg: u32) -> u32 {
    0x8000_0000 | SLOT << 11 | (reg & 0xfc)
}

pub fn read(qt: &mut Qtest, reg: u32) -> Result<u32> {
    qt.outl(CONFIG_ADDRESS, address(reg))?;
    qt.inl(CONFIG_DATA)
}

pub fn write(qt: &mut Qtest, reg: u32, val: u32) -> Result<()> {
    qt.outl(CONFIG_ADDRESS, address(reg))?;
    qt.outl(CONFIG_DATA, val)
}

/// The whole configuration space as the guest sees it.
pub fn config_space(qt: &mut Qtest) -> Result<Vec<u8>> {
    let mut bytes = Vec::with_capacity(CONFIG_SIZE);
    for reg in (0..CONFIG_SIZE as u32).step_by(4) {
        bytes.extend_from_slice(&read(qt, reg)?.to_le_bytes());
    }
    Ok(bytes)
}

/// A placed BAR.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bar {
    pub base: u64,
    pub size: u64,
    pub io: bool,
}

/// What sizing a BAR read back: (size, I/O, 64-bit), or `None` when the BAR
/// is not implemented. `hi` is the upper half of a 64-bit BAR's mask.
fn decode(lo: u32, hi: Option<u32>) -> Option<(u64, bool, bool)> {
    if lo == 0 {
        return None;
    }
    if lo & 1 != 0 {
        // I/O: only the low 16 bits decode on x86.
        let mask = (lo & 0xfffc) as u16;
        return (mask != 0).then(|| ((!mask).wrapping_add(1) as u64, true, false));
    }
    let is64 = (lo >> 1) & 3 == 2;
    let mask = u64::from(lo & 0xffff_fff0) | u64::from(hi.unwrap_or(u32::MAX)) << 32;
    (mask != 0).then(|| ((!mask).wrapping_add(1), false, is64))
}

/// Sizes every BAR, places it, and enables I/O, memory and bus mastering.
pub fn assign_bars(qt: &mut Qtest) -> Result<[Option<Bar>; 6]> {
    let mut bars = [None; 6];
    let (mut io_next, mut mmio_next) = (IO_START, MMIO_START);
    let mut i = 0;
    while i < 6 {
        let reg = BAR0 + 4 * i as u32;
        write(qt, reg, u32::MAX)?;
        let lo = read(qt, reg)?;
        let is64 = lo & 1 == 0 && (lo >> 1) & 3 == 2;
        let hi = if is64 {
            ensure!(i < 5, "BAR{i} is 64-bit but the last one");
            write(qt, reg + 4, u32::MAX)?;
            Some(read(qt, reg + 4)?)
        } else {
            None
        };
        if let Some((size, io, is64)) = decode(lo, hi) {
            let next = if io { &mut io_next } else { &mut mmio_next };
            let base = next.next_multiple_of(size);
            *next = base + size;
            write(qt, reg, base as u32)?;
            if is64 {
                write(qt, reg + 4, (base >> 32) as u32)?;
            }
            bars[i] = Some(Bar { base, size, io });
        } else {
            write(qt, reg, 0)?;
        }
        i += if is64 { 2 } else { 1 };
    }
    let cmd = read(qt, COMMAND)? & 0xffff;
    write(qt, COMMAND, cmd | COMMAND_IO_MEM_MASTER)?;
    Ok(bars)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bar_sizing() {
        // The sample device: BAR0 4 KiB 32-bit, BAR2 2 MiB 64-bit prefetchable.
        assert_eq!(decode(0xffff_f000, None), Some((4096, false, false)));
        assert_eq!(
            decode(0xffe0_000c, Some(u32::MAX)),
            Some((2 << 20, false, true))
        );
        // mtty: 8-byte I/O BARs (QEMU reads back the upper bits set).
        assert_eq!(decode(0xffff_fff9, None), Some((8, true, false)));
        assert_eq!(decode(0x0000_fff9, None), Some((8, true, false)));
        assert_eq!(decode(0, None), None);
    }

    #[test]
    fn config_addresses() {
        assert_eq!(address(0), 0x8000_2000);
        assert_eq!(address(0x3e), 0x8000_203c);
    }
}
