// SPDX-License-Identifier: GPL-2.0

//! PCI configuration space of the sample function (VFIO region 7).
//!
//! 256 bytes of a type 0 header plus one MSI capability. Writes go through a
//! per-byte mask of writable bits; BAR sizing falls out of that mask, because
//! a BAR's size bits are exactly its read-only low address bits.

use super::abi::config::{CLASS_CODE, DEVICE_ID, MSI_CAP, REVISION, VENDOR_ID};
use super::abi::{bar0, config};

const COMMAND: usize = 0x04;
const STATUS: usize = 0x06;
const BAR0: usize = 0x10;
const BAR2: usize = 0x18;
const BAR3: usize = 0x1c;
const SUBSYSTEM_VENDOR: usize = 0x2c;
const SUBSYSTEM_ID: usize = 0x2e;
const CAP_PTR: usize = 0x34;
const INTERRUPT_LINE: usize = 0x3c;
const INTERRUPT_PIN: usize = 0x3d;

const COMMAND_IO: u16 = 1 << 0;
const COMMAND_MEMORY: u16 = 1 << 1;
const COMMAND_MASTER: u16 = 1 << 2;
/// Command register bit that disables INTx assertion.
pub(crate) const COMMAND_INTX_DISABLE: u16 = 1 << 10;
const STATUS_CAP_LIST: u16 = 1 << 4;

const BAR_MEM_64: u32 = 0b100;
const BAR_MEM_PREFETCH: u32 = 0b1000;
const CAP_ID_MSI: u8 = 0x05;
/// MSI message control: 64-bit address capable, one vector.
const MSI_CTRL_64BIT: u16 = 1 << 7;
const MSI_CTRL_ENABLE: u16 = 1 << 0;
const MSI_CTRL_MME: u16 = 0b111 << 4;

/// An access that does not fit inside the configuration space.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct OutOfRange;

/// The configuration space of one function.
///
/// # Invariants
///
/// `wmask` never has a bit set where the header is read-only, so no write
/// can change IDs, class, header type, capability structure or BAR type bits.
pub(crate) struct ConfigSpace {
    bytes: [u8; config::SIZE],
    wmask: [u8; config::SIZE],
    bar2_size: u64,
    subsystem_id: u16,
}

fn put16(buf: &mut [u8; config::SIZE], off: usize, v: u16) {
    if let Some(dst) = buf.get_mut(off..off + 2) {
        dst.copy_from_slice(&v.to_le_bytes());
    }
}

fn put32(buf: &mut [u8; config::SIZE], off: usize, v: u32) {
    if let Some(dst) = buf.get_mut(off..off + 4) {
        dst.copy_from_slice(&v.to_le_bytes());
    }
}

impl ConfigSpace {
    /// The power-on configuration space of a function whose BAR2 has
    /// `bar2_size` bytes (a power of two, at least 4096).
    pub(crate) fn new(bar2_size: u64, subsystem_id: u16) -> Self {
        let mut cs = ConfigSpace {
            bytes: [0; config::SIZE],
            wmask: [0; config::SIZE],
            bar2_size,
            subsystem_id,
        };
        cs.reset();
        cs
    }

    /// Returns to the power-on contents.
    pub(crate) fn reset(&mut self) {
        let b = &mut self.bytes;
        let w = &mut self.wmask;
        *b = [0; config::SIZE];
        *w = [0; config::SIZE];

        put16(b, 0x00, VENDOR_ID);
        put16(b, 0x02, DEVICE_ID);
        put16(b, STATUS, STATUS_CAP_LIST);
        b[0x08] = REVISION;
        b[0x09..0x0c].copy_from_slice(&CLASS_CODE);
        put16(b, SUBSYSTEM_VENDOR, VENDOR_ID);
        put16(b, SUBSYSTEM_ID, self.subsystem_id);
        b[CAP_PTR] = MSI_CAP as u8;
        b[INTERRUPT_PIN] = 1;

        put16(
            w,
            COMMAND,
            COMMAND_IO | COMMAND_MEMORY | COMMAND_MASTER | COMMAND_INTX_DISABLE,
        );
        w[INTERRUPT_LINE] = 0xff;

        // BAR0: 32-bit memory, not prefetchable; address bits above the size.
        put32(w, BAR0, !((bar0::SIZE as u32).wrapping_sub(1)));
        // BAR2+BAR3: 64-bit prefetchable memory of the type's size.
        let bar2_mask = !self.bar2_size.wrapping_sub(1);
        put32(b, BAR2, BAR_MEM_64 | BAR_MEM_PREFETCH);
        put32(w, BAR2, (bar2_mask as u32) & !0xf);
        put32(w, BAR3, (bar2_mask >> 32) as u32);

        // MSI capability: 64-bit address, one vector, no per-vector masking.
        b[MSI_CAP] = CAP_ID_MSI;
        b[MSI_CAP + 1] = 0;
        put16(b, MSI_CAP + 2, MSI_CTRL_64BIT);
        put16(w, MSI_CAP + 2, MSI_CTRL_ENABLE | MSI_CTRL_MME);
        put32(w, MSI_CAP + 4, !0b11);
        put32(w, MSI_CAP + 8, !0);
        put16(w, MSI_CAP + 12, !0);
    }

    /// Copies `out.len()` bytes starting at `offset` into `out`.
    pub(crate) fn read(&self, offset: usize, out: &mut [u8]) -> Result<(), OutOfRange> {
        let end = offset.checked_add(out.len()).ok_or(OutOfRange)?;
        let src = self.bytes.get(offset..end).ok_or(OutOfRange)?;
        out.copy_from_slice(src);
        Ok(())
    }

    /// Writes `data` at `offset`, bit by bit through the writable mask.
    pub(crate) fn write(&mut self, offset: usize, data: &[u8]) -> Result<(), OutOfRange> {
        let end = offset.checked_add(data.len()).ok_or(OutOfRange)?;
        let dst = self.bytes.get_mut(offset..end).ok_or(OutOfRange)?;
        let mask = self.wmask.get(offset..end).ok_or(OutOfRange)?;
        for ((d, m), v) in dst.iter_mut().zip(mask).zip(data) {
            *d = (*d & !m) | (v & m);
        }
        Ok(())
    }

    /// The raw bytes, for the migration stream.
    pub(crate) fn bytes(&self) -> &[u8; config::SIZE] {
        &self.bytes
    }

    /// Loads bytes saved by [`Self::bytes`] on a function of the same type.
    ///
    /// Only writable bits are taken, so a stream can never change the
    /// function's identity or BAR types.
    pub(crate) fn restore(&mut self, saved: &[u8; config::SIZE]) {
        self.reset();
        for ((d, m), v) in self.bytes.iter_mut().zip(&self.wmask).zip(saved) {
            *d = (*d & !m) | (v & m);
        }
    }

    /// Whether the command register's INTx-disable bit is set.
    pub(crate) fn intx_disabled(&self) -> bool {
        u16::from_le_bytes([self.bytes[COMMAND], self.bytes[COMMAND + 1]]) & COMMAND_INTX_DISABLE
            != 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rd32(cs: &ConfigSpace, off: usize) -> u32 {
        let mut b = [0u8; 4];
        cs.read(off, &mut b).unwrap();
        u32::from_le_bytes(b)
    }

    fn wr32(cs: &mut ConfigSpace, off: usize, v: u32) {
        cs.write(off, &v.to_le_bytes()).unwrap();
    }

    #[test]
    fn identity() {
        let cs = ConfigSpace::new(256 * 1024, 1);
        assert_eq!(rd32(&cs, 0), 0x4d53_1234);
        assert_eq!(rd32(&cs, 8), 0xff00_0001);
        assert_eq!(rd32(&cs, 0x2c), 0x0001_1234);
        assert_eq!(rd32(&cs, 0x34), 0x40);
        assert_eq!(rd32(&cs, 0x3c) >> 8 & 0xff, 1);
        assert_eq!(rd32(&cs, 0x40) & 0xffff, 0x0005);
    }

    #[test]
    fn bar_sizing() {
        let mut cs = ConfigSpace::new(256 * 1024, 1);
        for off in (0x10..0x28).step_by(4) {
            wr32(&mut cs, off, !0);
        }
        wr32(&mut cs, 0x30, !0);
        assert_eq!(rd32(&cs, 0x10), 0xffff_f000);
        assert_eq!(rd32(&cs, 0x14), 0);
        assert_eq!(rd32(&cs, 0x18), 0xfffc_000c);
        assert_eq!(rd32(&cs, 0x1c), 0xffff_ffff);
        assert_eq!(rd32(&cs, 0x20), 0);
        assert_eq!(rd32(&cs, 0x24), 0);
        assert_eq!(rd32(&cs, 0x30), 0);

        let mut large = ConfigSpace::new(2 << 20, 2);
        wr32(&mut large, 0x18, !0);
        assert_eq!(rd32(&large, 0x18), 0xffe0_000c);
        wr32(&mut large, 0x18, 0x1234_5678);
        assert_eq!(rd32(&large, 0x18), 0x1220_000c);
    }

    #[test]
    fn read_only_and_partial_writes() {
        let mut cs = ConfigSpace::new(4096, 1);
        wr32(&mut cs, 0, 0);
        wr32(&mut cs, 8, 0);
        assert_eq!(rd32(&cs, 0), 0x4d53_1234);
        assert_eq!(rd32(&cs, 8), 0xff00_0001);
        cs.write(4, &[0xff, 0xff]).unwrap();
        assert_eq!(rd32(&cs, 4), 0x0010_0407);
        assert!(cs.intx_disabled());
        // Byte writes inside a BAR only touch their own byte.
        cs.write(0x11, &[0xab]).unwrap();
        assert_eq!(rd32(&cs, 0x10), 0x0000_a000);
    }

    #[test]
    fn bounds() {
        let mut cs = ConfigSpace::new(4096, 1);
        let mut two = [0u8; 2];
        assert_eq!(cs.read(255, &mut two), Err(OutOfRange));
        assert_eq!(cs.read(256, &mut [0u8; 1]), Err(OutOfRange));
        assert_eq!(cs.write(usize::MAX, &two), Err(OutOfRange));
        assert!(cs.read(255, &mut [0u8; 1]).is_ok());
        let mut all = [0u8; 256];
        assert!(cs.read(0, &mut all).is_ok());
    }

    #[test]
    fn reset() {
        let mut cs = ConfigSpace::new(4096, 1);
        wr32(&mut cs, 0x10, 0xfebf_0000);
        wr32(&mut cs, 4, 0x6);
        let saved = *cs.bytes();
        cs.reset();
        assert_eq!(rd32(&cs, 0x10), 0);
        assert_eq!(rd32(&cs, 4), 0x0010_0000);
        // Restore takes writable bits only: identity cannot be forged.
        let mut forged = saved;
        forged[0] = 0x99;
        cs.restore(&forged);
        assert_eq!(rd32(&cs, 0x10), 0xfebf_0000);
        assert_eq!(rd32(&cs, 4), 0x0010_0006);
        assert_eq!(rd32(&cs, 0), 0x4d53_1234);
    }
}
