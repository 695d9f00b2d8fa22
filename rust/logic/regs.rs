// SPDX-License-Identifier: GPL-2.0

//! BAR0 register file of the sample function.
//!
//! Pure state and decoding: the kernel side only routes the interrupt this
//! file asks for, and runs the DMA engine (whose registers are in
//! [`super::dma`]). The register map is in [`super::abi::bar0`].

use super::abi::bar0::{self, DMA_BLOCK, IRQ_ALL, IRQ_DOORBELL};
use super::dma::{DmaRegs, DmaWrite};
use core::iter::StepBy;
use core::ops::Range;

/// A BAR0 access that is not whole, aligned dwords (`EINVAL`).
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct NotDwords;

/// The register offsets of a BAR0 access of `len` bytes at `offset`, in
/// address order: one register per dword, whole dwords only. A bounded
/// range, so walking it cannot overflow.
pub(crate) fn dword_offsets(offset: u64, len: usize) -> Result<StepBy<Range<u32>>, NotDwords> {
    if offset & 3 != 0 || len & 3 != 0 {
        return Err(NotDwords);
    }
    let start = u32::try_from(offset).map_err(|_| NotDwords)?;
    let end = u32::try_from(len)
        .ok()
        .and_then(|len| start.checked_add(len))
        .ok_or(NotDwords)?;
    Ok((start..end).step_by(4))
}

/// What a register write asks of the device.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum WriteEffect {
    /// Nothing beyond the register change.
    None,
    /// An enabled interrupt cause fired: deliver an interrupt.
    Interrupt,
    /// `IRQ_ENABLE` changed while a cause is pending: a level-triggered
    /// line (INTx) asserts if it can.
    Level,
    /// The DMA engine has to act ([`DmaWrite`]).
    Dma(DmaWrite),
}

/// What a register read reports that is not register state.
pub(crate) struct Live {
    /// Device memory size in bytes.
    pub(crate) mem_size: u64,
    /// `STATUS`.
    pub(crate) status: u32,
    /// Guest pages the device holds pinned.
    pub(crate) pinned: u32,
}

/// The volatile register state (what a reset clears and migration carries).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Registers {
    /// `SCRATCH`.
    pub(crate) scratch: u32,
    /// `IRQ_STATUS`.
    pub(crate) irq_status: u32,
    /// `IRQ_ENABLE`.
    pub(crate) irq_enable: u32,
    /// `DOORBELL` read value.
    pub(crate) doorbells: u32,
    /// `IRQ_COUNT`.
    pub(crate) irq_count: u32,
    /// The DMA engine.
    pub(crate) dma: DmaRegs,
}

impl Registers {
    /// Reads the dword register at `off`.
    // Out of line: inlined into the BAR0 read loop, the compiler loads
    // every register before the loop, for what is almost always a read of
    // one dword (testing.rst, "BAR0 read").
    #[inline(never)]
    pub(crate) fn read(&self, off: u32, live: &Live) -> u32 {
        match off {
            bar0::ID => bar0::ID_VALUE,
            bar0::VERSION => bar0::VERSION_VALUE,
            bar0::SCRATCH => self.scratch,
            bar0::STATUS => live.status,
            bar0::IRQ_STATUS => self.irq_status,
            bar0::IRQ_ENABLE => self.irq_enable,
            bar0::DOORBELL => self.doorbells,
            bar0::MEM_SIZE => live.mem_size as u32,
            bar0::IRQ_COUNT => self.irq_count,
            _ => self.dma.read(off, live.pinned),
        }
    }

    /// Writes the dword register at `off`.
    pub(crate) fn write(&mut self, off: u32, val: u32) -> WriteEffect {
        match off {
            bar0::SCRATCH => self.scratch = val,
            bar0::IRQ_STATUS => self.irq_status &= !val,
            bar0::IRQ_ENABLE => {
                self.irq_enable = val & IRQ_ALL;
                if self.asserted() {
                    return WriteEffect::Level;
                }
            }
            bar0::DOORBELL => {
                self.doorbells = self.doorbells.wrapping_add(1);
                return self.raise(IRQ_DOORBELL);
            }
            off if DMA_BLOCK.contains(&off) => return WriteEffect::Dma(self.dma.write(off, val)),
            _ => {}
        }
        WriteEffect::None
    }

    /// Latches `cause` in `IRQ_STATUS`; asks for an interrupt if enabled.
    pub(crate) fn raise(&mut self, cause: u32) -> WriteEffect {
        self.irq_status |= cause;
        if self.irq_enable & cause != 0 {
            WriteEffect::Interrupt
        } else {
            WriteEffect::None
        }
    }

    /// An enabled cause is pending: the level of the INTx line.
    pub(crate) fn asserted(&self) -> bool {
        self.irq_status & self.irq_enable != 0
    }

    /// Counts an interrupt that reached an eventfd.
    pub(crate) fn note_delivered(&mut self) {
        self.irq_count = self.irq_count.wrapping_add(1);
    }
}

/// Where an interrupt goes, given the VMM's wiring.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Route {
    /// To the MSI eventfd.
    Msi,
    /// To the INTx eventfd (which then masks INTx).
    Intx,
    /// Nowhere: not wired, masked or disabled.
    Dropped,
}

/// Routes an interrupt: MSI when wired, else INTx when wired, unmasked and
/// not disabled in the command register.
pub(crate) fn route(
    msi_wired: bool,
    intx_wired: bool,
    intx_masked: bool,
    intx_disabled: bool,
) -> Route {
    if msi_wired {
        Route::Msi
    } else if intx_wired && !intx_masked && !intx_disabled {
        Route::Intx
    } else {
        Route::Dropped
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dwords() {
        let offs = |o, l| dword_offsets(o, l).map(|r| r.collect::<Vec<u32>>());
        assert_eq!(offs(8, 4), Ok(vec![8]));
        assert_eq!(offs(0, 12), Ok(vec![0, 4, 8]));
        assert_eq!(offs(4092, 0), Ok(vec![]));
        for (o, l) in [(1, 4), (2, 4), (8, 1), (8, 6), (3, 1)] {
            assert_eq!(offs(o, l), Err(NotDwords), "{l} bytes at {o}");
        }
        // Past u32: refused, not wrapped.
        assert_eq!(offs(1 << 32, 4), Err(NotDwords));
        assert_eq!(offs(u64::from(u32::MAX - 3), 8), Err(NotDwords));
        assert_eq!(offs(u64::from(u32::MAX - 3), 4), Err(NotDwords));
        assert_eq!(offs(u64::from(u32::MAX - 7), 4), Ok(vec![u32::MAX - 7]));
    }

    #[test]
    fn read_only_and_unimplemented() {
        let mut r = Registers::default();
        let live = Live {
            mem_size: 4096,
            status: bar0::STATUS_QUIESCED,
            pinned: 3,
        };
        assert_eq!(r.write(bar0::ID, 5), WriteEffect::None);
        assert_eq!(r.read(bar0::ID, &live), bar0::ID_VALUE);
        assert_eq!(r.read(bar0::VERSION, &live), bar0::VERSION_VALUE);
        assert_eq!(r.read(bar0::MEM_SIZE, &live), 4096);
        assert_eq!(r.read(bar0::STATUS, &live), 1);
        assert_eq!(r.read(0x84, &live), 3);
        assert_eq!(r.write(0x800, 7), WriteEffect::None);
        assert_eq!(r.read(0x800, &live), 0);
        assert_eq!(r, Registers::default());
    }

    #[test]
    fn doorbell_and_irq_status() {
        let mut r = Registers::default();
        let live = Live {
            mem_size: 0,
            status: 0,
            pinned: 0,
        };
        assert_eq!(r.write(bar0::DOORBELL, 0), WriteEffect::None);
        assert_eq!(r.read(bar0::IRQ_STATUS, &live), IRQ_DOORBELL);
        assert!(!r.asserted());
        assert_eq!(r.write(bar0::IRQ_ENABLE, !0), WriteEffect::Level);
        assert!(r.asserted());
        assert_eq!(r.irq_enable, IRQ_ALL);
        assert_eq!(r.write(bar0::DOORBELL, 0), WriteEffect::Interrupt);
        assert_eq!(r.read(bar0::DOORBELL, &live), 2);
        r.write(bar0::IRQ_STATUS, IRQ_DOORBELL);
        assert_eq!(r.irq_status, 0);
        r.note_delivered();
        assert_eq!(r.read(bar0::IRQ_COUNT, &live), 1);
    }

    #[test]
    fn routing() {
        assert_eq!(route(true, true, true, true), Route::Msi);
        assert_eq!(route(false, true, false, false), Route::Intx);
        assert_eq!(route(false, true, true, false), Route::Dropped);
        assert_eq!(route(false, true, false, true), Route::Dropped);
        assert_eq!(route(false, false, false, false), Route::Dropped);
    }
}
