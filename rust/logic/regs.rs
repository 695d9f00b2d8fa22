// SPDX-License-Identifier: GPL-2.0

//! BAR0 register file of the sample function.
//!
//! Pure state and decoding: the kernel side only routes the interrupt this
//! file asks for, and runs the DMA engine (whose registers are in
//! [`super::dma`]).

use super::dma::{DmaRegs, DmaWrite};

/// Size of BAR0 in bytes.
pub(crate) const BAR0_SIZE: u64 = 4096;

/// `ID` register value ("VMS1").
pub(crate) const ID_VALUE: u32 = 0x564d_5331;
/// `VERSION` register value (1.0).
pub(crate) const VERSION_VALUE: u32 = 0x0001_0000;

/// Register offsets.
pub(crate) mod offset {
    /// Identification, read-only.
    pub(crate) const ID: u32 = 0x00;
    /// Interface version, read-only.
    pub(crate) const VERSION: u32 = 0x04;
    /// Free for the driver.
    pub(crate) const SCRATCH: u32 = 0x08;
    /// Device status, read-only.
    pub(crate) const STATUS: u32 = 0x0c;
    /// Pending interrupt causes, write 1 to clear.
    pub(crate) const IRQ_STATUS: u32 = 0x10;
    /// Causes that raise an interrupt.
    pub(crate) const IRQ_ENABLE: u32 = 0x14;
    /// Write: ring. Read: times rung since reset.
    pub(crate) const DOORBELL: u32 = 0x18;
    /// Device memory size in bytes, read-only.
    pub(crate) const MEM_SIZE: u32 = 0x1c;
    /// Interrupts delivered since reset, read-only.
    pub(crate) const IRQ_COUNT: u32 = 0x20;
}

/// The DMA engine's registers.
const DMA_BLOCK: core::ops::Range<u32> = 0x40..0xb0;

/// `STATUS` bit: the device is stopped for migration.
pub(crate) const STATUS_QUIESCED: u32 = 1 << 0;
/// Interrupt cause: the doorbell was rung.
pub(crate) const IRQ_DOORBELL: u32 = 1 << 0;
/// Interrupt cause: a DMA command finished successfully.
pub(crate) const IRQ_DMA_DONE: u32 = 1 << 1;
/// Interrupt cause: a DMA command, the ring or the writer failed.
pub(crate) const IRQ_DMA_ERROR: u32 = 1 << 2;
/// Every interrupt cause this version knows.
pub(crate) const IRQ_ALL: u32 = IRQ_DOORBELL | IRQ_DMA_DONE | IRQ_DMA_ERROR;

/// What a register write asks of the device.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum WriteEffect {
    /// Nothing beyond the register change.
    None,
    /// An enabled interrupt cause fired: deliver an interrupt.
    Interrupt,
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
    pub(crate) fn read(&self, off: u32, live: &Live) -> u32 {
        match off {
            offset::ID => ID_VALUE,
            offset::VERSION => VERSION_VALUE,
            offset::SCRATCH => self.scratch,
            offset::STATUS => live.status,
            offset::IRQ_STATUS => self.irq_status,
            offset::IRQ_ENABLE => self.irq_enable,
            offset::DOORBELL => self.doorbells,
            offset::MEM_SIZE => live.mem_size as u32,
            offset::IRQ_COUNT => self.irq_count,
            _ => self.dma.read(off, live.pinned),
        }
    }

    /// Writes the dword register at `off`.
    pub(crate) fn write(&mut self, off: u32, val: u32) -> WriteEffect {
        match off {
            offset::SCRATCH => self.scratch = val,
            offset::IRQ_STATUS => self.irq_status &= !val,
            offset::IRQ_ENABLE => self.irq_enable = val & IRQ_ALL,
            offset::DOORBELL => {
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
    fn read_only_and_unimplemented() {
        let mut r = Registers::default();
        let live = Live {
            mem_size: 4096,
            status: STATUS_QUIESCED,
            pinned: 3,
        };
        assert_eq!(r.write(offset::ID, 5), WriteEffect::None);
        assert_eq!(r.read(offset::ID, &live), ID_VALUE);
        assert_eq!(r.read(offset::VERSION, &live), VERSION_VALUE);
        assert_eq!(r.read(offset::MEM_SIZE, &live), 4096);
        assert_eq!(r.read(offset::STATUS, &live), 1);
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
        assert_eq!(r.write(offset::DOORBELL, 0), WriteEffect::None);
        assert_eq!(r.read(offset::IRQ_STATUS, &live), IRQ_DOORBELL);
        r.write(offset::IRQ_ENABLE, !0);
        assert_eq!(r.irq_enable, IRQ_ALL);
        assert_eq!(r.write(offset::DOORBELL, 0), WriteEffect::Interrupt);
        assert_eq!(r.read(offset::DOORBELL, &live), 2);
        r.write(offset::IRQ_STATUS, IRQ_DOORBELL);
        assert_eq!(r.irq_status, 0);
        r.note_delivered();
        assert_eq!(r.read(offset::IRQ_COUNT, &live), 1);
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
