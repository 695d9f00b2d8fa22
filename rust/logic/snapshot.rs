// SPDX-License-Identifier: GPL-2.0

//! The register-state blob of the migration stream: the BAR0 registers and
//! the configuration space, in a fixed little-endian layout.
//!
//! | bytes     | contents                                                   |
//! |-----------|------------------------------------------------------------|
//! | 0..4      | SCRATCH                                                    |
//! | 4..8      | IRQ_STATUS                                                 |
//! | 8..12     | IRQ_ENABLE                                                 |
//! | 12..16    | DOORBELL count                                             |
//! | 16..20    | IRQ_COUNT                                                  |
//! | 20..32    | reserved, zero                                             |
//! | 32..288   | configuration space (only its writable bits are loaded)    |

use super::config_space::{ConfigSpace, CONFIG_SIZE};
use super::regs::{Registers, IRQ_ALL};

/// Length of the blob.
pub(crate) const BLOB_LEN: usize = 32 + CONFIG_SIZE;

/// The blob of a device's registers and configuration space.
pub(crate) fn save(regs: &Registers, config: &ConfigSpace) -> [u8; BLOB_LEN] {
    let mut blob = [0u8; BLOB_LEN];
    let words = [
        regs.scratch,
        regs.irq_status,
        regs.irq_enable,
        regs.doorbells,
        regs.irq_count,
    ];
    for (dst, w) in blob.chunks_exact_mut(4).zip(words) {
        dst.copy_from_slice(&w.to_le_bytes());
    }
    if let Some(dst) = blob.get_mut(32..) {
        dst.copy_from_slice(config.bytes());
    }
    blob
}

/// A blob no device of this version could have produced.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct BadBlob;

/// Checks a blob and turns it into register values and configuration
/// bytes; nothing is applied to a device here.
pub(crate) fn parse(blob: &[u8; BLOB_LEN]) -> Result<(Registers, [u8; CONFIG_SIZE]), BadBlob> {
    let mut words = [0u32; 8];
    for (w, src) in words.iter_mut().zip(blob.chunks_exact(4)) {
        let mut b = [0u8; 4];
        b.copy_from_slice(src);
        *w = u32::from_le_bytes(b);
    }
    let [scratch, irq_status, irq_enable, doorbells, irq_count, r0, r1, r2] = words;
    if r0 | r1 | r2 != 0 || (irq_status | irq_enable) & !IRQ_ALL != 0 {
        return Err(BadBlob);
    }
    let mut config = [0u8; CONFIG_SIZE];
    config.copy_from_slice(blob.get(32..).ok_or(BadBlob)?);
    Ok((
        Registers {
            scratch,
            irq_status,
            irq_enable,
            doorbells,
            irq_count,
        },
        config,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let regs = Registers {
            scratch: 0xdead_beef,
            irq_status: 1,
            irq_enable: 1,
            doorbells: 7,
            irq_count: 3,
        };
        let mut config = ConfigSpace::new(4096, 1);
        config.write(0x10, &0xfebf_0000u32.to_le_bytes()).unwrap();
        let blob = save(&regs, &config);
        let (r, c) = parse(&blob).unwrap();
        assert_eq!(r, regs);
        assert_eq!(&c, config.bytes());
    }

    #[test]
    fn rejects_what_no_device_writes() {
        let blob = save(&Registers::default(), &ConfigSpace::new(4096, 1));
        for (at, byte) in [(20, 1), (31, 0x80), (4, 2), (8, 0x10)] {
            let mut bad = blob;
            bad[at] = byte;
            assert_eq!(parse(&bad), Err(BadBlob), "byte {at}");
        }
    }
}
