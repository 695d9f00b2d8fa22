// SPDX-License-Identifier: GPL-2.0
//! The sample device's own registers (Documentation/device.rst): BAR0, the
//! DMA engine, the ring and the background writer, and the module's
//! debugfs counter of pinned pages.

use std::time::{Duration, Instant};

use crate::device::Device;
use crate::error::{Error, Result};

/// VFIO region index of BAR0 (registers).
pub const BAR0: u32 = 0;
/// VFIO region index of BAR2 (device memory).
pub const BAR2: u32 = 2;

/// BAR0 register offsets.
pub mod reg {
    pub const ID: u64 = 0x00;
    pub const VERSION: u64 = 0x04;
    pub const SCRATCH: u64 = 0x08;
    pub const STATUS: u64 = 0x0c;
    pub const IRQ_STATUS: u64 = 0x10;
    pub const IRQ_ENABLE: u64 = 0x14;
    pub const DOORBELL: u64 = 0x18;
    pub const MEM_SIZE: u64 = 0x1c;
    pub const IRQ_COUNT: u64 = 0x20;
    pub const DMA_DEV_OFF: u64 = 0x40;
    pub const DMA_IOVA_LO: u64 = 0x44;
    pub const DMA_IOVA_HI: u64 = 0x48;
    pub const DMA_LEN: u64 = 0x4c;
    pub const DMA_PATTERN: u64 = 0x50;
    pub const DMA_CMD: u64 = 0x54;
    pub const DMA_STATUS: u64 = 0x58;
    pub const DMA_ERROR: u64 = 0x5c;
    pub const DMA_CTRL: u64 = 0x60;
    pub const DMA_COMPLETED: u64 = 0x64;
    pub const RING_IOVA_LO: u64 = 0x70;
    pub const RING_IOVA_HI: u64 = 0x74;
    pub const RING_PAGES: u64 = 0x78;
    pub const RING_CTRL: u64 = 0x7c;
    pub const RING_ERROR: u64 = 0x80;
    pub const PINNED_PAGES: u64 = 0x84;
    pub const BG_IOVA_LO: u64 = 0x90;
    pub const BG_IOVA_HI: u64 = 0x94;
    pub const BG_PAGES: u64 = 0x98;
    pub const BG_RATE: u64 = 0x9c;
    pub const BG_CTRL: u64 = 0xa0;
    pub const BG_WRITES: u64 = 0xa4;
    pub const BG_ERROR: u64 = 0xa8;
    pub const BG_CURSOR: u64 = 0xac;
    /// First offset past the implemented registers.
    pub const END: u64 = 0xb0;

    /// Every implemented register with its name, by offset.
    pub const NAMED: &[(u64, &str)] = &[
        (ID, "ID"),
        (VERSION, "VERSION"),
        (SCRATCH, "SCRATCH"),
        (STATUS, "STATUS"),
        (IRQ_STATUS, "IRQ_STATUS"),
        (IRQ_ENABLE, "IRQ_ENABLE"),
        (DOORBELL, "DOORBELL"),
        (MEM_SIZE, "MEM_SIZE"),
        (IRQ_COUNT, "IRQ_COUNT"),
        (DMA_DEV_OFF, "DMA_DEV_OFF"),
        (DMA_IOVA_LO, "DMA_IOVA_LO"),
        (DMA_IOVA_HI, "DMA_IOVA_HI"),
        (DMA_LEN, "DMA_LEN"),
        (DMA_PATTERN, "DMA_PATTERN"),
        (DMA_CMD, "DMA_CMD"),
        (DMA_STATUS, "DMA_STATUS"),
        (DMA_ERROR, "DMA_ERROR"),
        (DMA_CTRL, "DMA_CTRL"),
        (DMA_COMPLETED, "DMA_COMPLETED"),
        (RING_IOVA_LO, "RING_IOVA_LO"),
        (RING_IOVA_HI, "RING_IOVA_HI"),
        (RING_PAGES, "RING_PAGES"),
        (RING_CTRL, "RING_CTRL"),
        (RING_ERROR, "RING_ERROR"),
        (PINNED_PAGES, "PINNED_PAGES"),
        (BG_IOVA_LO, "BG_IOVA_LO"),
        (BG_IOVA_HI, "BG_IOVA_HI"),
        (BG_PAGES, "BG_PAGES"),
        (BG_RATE, "BG_RATE"),
        (BG_CTRL, "BG_CTRL"),
        (BG_WRITES, "BG_WRITES"),
        (BG_ERROR, "BG_ERROR"),
        (BG_CURSOR, "BG_CURSOR"),
    ];

    /// The register's name, or `0x..` for an unimplemented offset.
    pub fn name(off: u64) -> String {
        NAMED
            .iter()
            .find(|(o, _)| *o == off)
            .map_or_else(|| format!("{off:#04x}"), |(_, n)| n.to_string())
    }
}

/// VFIO region index of PCI configuration space.
pub const CONFIG: u32 = 7;
/// Size of the configuration space.
pub const CONFIG_SIZE: usize = 256;

/// `ID` of every sample device ("VMS1").
pub const ID_VALUE: u32 = 0x564d_5331;
/// `STATUS` bit: stopped for migration.
pub const STATUS_QUIESCED: u32 = 1 << 0;
/// `IRQ_STATUS` / `IRQ_ENABLE` causes.
pub const IRQ_DOORBELL: u32 = 1 << 0;
pub const IRQ_DMA_DONE: u32 = 1 << 1;
pub const IRQ_DMA_ERROR: u32 = 1 << 2;

/// `DMA_CMD` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum DmaCmd {
    /// Device memory to guest memory.
    ToGuest = 1,
    /// Guest memory to device memory.
    FromGuest = 2,
    /// Guest memory filled with `DMA_PATTERN`.
    Fill = 3,
}

/// `DMA_STATUS` values.
pub const DMA_IDLE: u32 = 0;
pub const DMA_QUEUED: u32 = 1;
pub const DMA_DONE: u32 = 2;
pub const DMA_FAILED: u32 = 3;
/// `DMA_CTRL` bit: queued commands wait.
pub const DMA_CTRL_PAUSE: u32 = 1 << 0;
/// `RING_CTRL` bits.
pub const RING_PINNED: u32 = 1 << 0;
pub const RING_WRITABLE: u32 = 1 << 1;
/// Most pages a ring may have.
pub const RING_MAX_PAGES: u32 = 512;
/// `BG_CTRL` bit.
pub const BG_ENABLE: u32 = 1 << 0;
/// Marker in every page the background writer stamps ("BGWR").
pub const BG_MAGIC: u32 = 0x5257_4742;
/// Bytes the background writer stamps at the start of a page.
pub const BG_STAMP_LEN: usize = 16;

/// The module's count of pinned guest pages (debugfs, needs debugfs mounted).
pub const PINNED_PAGES_DEBUGFS: &str = "/sys/kernel/debug/vfio_mig_sample/pinned_pages";

/// Reads the module-wide pinned-page count from debugfs.
pub fn pinned_pages_total() -> Result<u64> {
    let text = std::fs::read_to_string(PINNED_PAGES_DEBUGFS)
        .map_err(|e| Error::path("read", PINNED_PAGES_DEBUGFS, e))?;
    text.trim()
        .parse()
        .map_err(|_| Error::Invalid(format!("{PINNED_PAGES_DEBUGFS}: {text:?}")))
}

/// How a DMA command ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DmaOutcome {
    Done,
    /// `DMA_ERROR`: the positive errno.
    Failed(u32),
}

/// The BAR0 registers of one sample device.
pub struct Regs<'a>(pub &'a Device);

impl Regs<'_> {
    pub fn read(&self, off: u64) -> Result<u32> {
        self.0.read32(BAR0, off)
    }

    pub fn write(&self, off: u64, v: u32) -> Result<()> {
        self.0.write32(BAR0, off, v)
    }

    fn write_iova(&self, lo: u64, iova: u64) -> Result<()> {
        self.write(lo, iova as u32)?;
        self.write(lo + 4, (iova >> 32) as u32)
    }

    /// Programs and queues a command; does not wait.
    pub fn queue_dma(
        &self,
        cmd: DmaCmd,
        iova: u64,
        dev_off: u32,
        len: u32,
        pattern: u32,
    ) -> Result<()> {
        self.write_iova(reg::DMA_IOVA_LO, iova)?;
        self.write(reg::DMA_DEV_OFF, dev_off)?;
        self.write(reg::DMA_LEN, len)?;
        self.write(reg::DMA_PATTERN, pattern)?;
        self.write(reg::DMA_CMD, cmd as u32)
    }

    /// Polls `DMA_STATUS` until the queued command finished.
    pub fn wait_dma(&self, timeout: Duration) -> Result<DmaOutcome> {
        let start = Instant::now();
        loop {
            match self.read(reg::DMA_STATUS)? {
                DMA_DONE => return Ok(DmaOutcome::Done),
                DMA_FAILED => return Ok(DmaOutcome::Failed(self.read(reg::DMA_ERROR)?)),
                DMA_IDLE => {
                    return Err(Error::Invalid(
                        "DMA_STATUS is IDLE: nothing was queued".into(),
                    ))
                }
                _ if start.elapsed() > timeout => {
                    return Err(Error::Invalid(format!(
                        "DMA command still queued after {timeout:?}"
                    )))
                }
                _ => std::thread::sleep(Duration::from_micros(200)),
            }
        }
    }

    /// Queues a command and waits for it.
    pub fn dma(
        &self,
        cmd: DmaCmd,
        iova: u64,
        dev_off: u32,
        len: u32,
        pattern: u32,
    ) -> Result<DmaOutcome> {
        self.queue_dma(cmd, iova, dev_off, len, pattern)?;
        self.wait_dma(Duration::from_secs(30))
    }

    /// Pins the ring (`writable`: for device writes too); returns
    /// `RING_ERROR` (0 on success).
    pub fn pin_ring(&self, iova: u64, pages: u32, writable: bool) -> Result<u32> {
        self.write_iova(reg::RING_IOVA_LO, iova)?;
        self.write(reg::RING_PAGES, pages)?;
        let ctrl = RING_PINNED | if writable { RING_WRITABLE } else { 0 };
        self.write(reg::RING_CTRL, ctrl)?;
        if self.read(reg::RING_CTRL)? & RING_PINNED != 0 {
            Ok(0)
        } else {
            self.read(reg::RING_ERROR)
        }
    }

    /// Releases the ring.
    pub fn unpin_ring(&self) -> Result<()> {
        self.write(reg::RING_CTRL, 0)
    }

    /// Starts the background writer; returns `BG_ERROR` (0 on success).
    pub fn start_writer(&self, iova: u64, pages: u32, rate: u32) -> Result<u32> {
        self.write_iova(reg::BG_IOVA_LO, iova)?;
        self.write(reg::BG_PAGES, pages)?;
        self.write(reg::BG_RATE, rate)?;
        self.write(reg::BG_CTRL, BG_ENABLE)?;
        if self.read(reg::BG_CTRL)? & BG_ENABLE != 0 {
            Ok(0)
        } else {
            self.read(reg::BG_ERROR)
        }
    }

    /// Stops the background writer.
    pub fn stop_writer(&self) -> Result<()> {
        self.write(reg::BG_CTRL, 0)
    }

    /// Every implemented BAR0 register, `0..reg::END` in dwords.
    pub fn snapshot(&self) -> Result<Vec<u32>> {
        (0..reg::END / 4).map(|i| self.read(i * 4)).collect()
    }
}

/// The device state a VMM can read back: every BAR0 register, the
/// configuration space and the device memory. Two devices with equal
/// snapshots are the same device as far as the guest can tell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceSnapshot {
    /// BAR0 dwords `0..reg::END`.
    pub regs: Vec<u32>,
    /// The 256 bytes of configuration space.
    pub config: Vec<u8>,
    /// All of BAR2.
    pub memory: Vec<u8>,
}

impl DeviceSnapshot {
    /// Reads the three parts. Reads have no side effect on this device, so
    /// this works in every state (also quiesced).
    pub fn take(dev: &Device) -> Result<Self> {
        let regs = Regs(dev).snapshot()?;
        let mut config = vec![0u8; CONFIG_SIZE];
        dev.read_region(CONFIG, 0, &mut config)?;
        let size = dev.region_info(BAR2)?.size;
        let size = usize::try_from(size)
            .map_err(|_| Error::Invalid(format!("BAR2 of {} bytes is too large", size)))?;
        let mut memory = vec![0u8; size];
        // Bounded reads: one pread per 64 KiB keeps each kernel access short.
        for (i, chunk) in memory.chunks_mut(1 << 16).enumerate() {
            dev.read_region(BAR2, (i as u64) << 16, chunk)?;
        }
        Ok(DeviceSnapshot {
            regs,
            config,
            memory,
        })
    }

    /// Every difference from `other` in words, the first per part:
    /// register name and both values, first differing config and BAR2
    /// offsets. Empty when the snapshots are equal.
    pub fn differences(&self, other: &DeviceSnapshot) -> Vec<String> {
        let mut out = Vec::new();
        let regs: Vec<String> = self
            .regs
            .iter()
            .zip(&other.regs)
            .enumerate()
            .filter(|(_, (a, b))| a != b)
            .map(|(i, (a, b))| format!("{} {a:#x} vs {b:#x}", reg::name(i as u64 * 4)))
            .collect();
        if self.regs.len() != other.regs.len() {
            out.push(format!(
                "BAR0: {} vs {} registers",
                self.regs.len(),
                other.regs.len()
            ));
        }
        if !regs.is_empty() {
            out.push(format!("BAR0 registers differ: {}", regs.join(", ")));
        }
        if let Some(i) = crate::mem::first_mismatch(&self.config, &other.config) {
            out.push(format!(
                "config space differs first at {i:#04x}: {:#04x} vs {:#04x}",
                self.config.get(i).copied().unwrap_or(0),
                other.config.get(i).copied().unwrap_or(0)
            ));
        }
        if self.memory.len() != other.memory.len() {
            out.push(format!(
                "BAR2: {} vs {} bytes",
                self.memory.len(),
                other.memory.len()
            ));
        } else if let Some(i) = crate::mem::first_mismatch(&self.memory, &other.memory) {
            let pages = self
                .memory
                .chunks(4096)
                .zip(other.memory.chunks(4096))
                .filter(|(a, b)| a != b)
                .count();
            out.push(format!(
                "BAR2 differs first at {i:#x} ({:#04x} vs {:#04x}), in {pages} page(s)",
                self.memory[i], other.memory[i]
            ));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn register_names_cover_the_map() {
        assert_eq!(reg::name(reg::BG_CURSOR), "BG_CURSOR");
        assert_eq!(reg::name(0x24), "0x24");
        let mut offs: Vec<u64> = reg::NAMED.iter().map(|(o, _)| *o).collect();
        offs.sort_unstable();
        offs.dedup();
        assert_eq!(offs.len(), reg::NAMED.len(), "no offset twice");
        assert!(offs.iter().all(|o| o % 4 == 0 && *o < reg::END));
        assert_eq!(
            reg::BG_CURSOR + 4,
            reg::END,
            "END follows the last register"
        );
    }

    #[test]
    fn snapshot_differences_name_the_first() {
        let a = DeviceSnapshot {
            regs: vec![0; (reg::END / 4) as usize],
            config: vec![0; CONFIG_SIZE],
            memory: vec![0; 3 * 4096],
        };
        assert!(a.differences(&a.clone()).is_empty());
        let mut b = a.clone();
        b.regs[(reg::BG_WRITES / 4) as usize] = 7;
        b.config[0x04] = 6;
        b.memory[4097] = 1;
        b.memory[2 * 4096] = 1;
        let d = a.differences(&b);
        assert_eq!(
            d,
            [
                "BAR0 registers differ: BG_WRITES 0x0 vs 0x7",
                "config space differs first at 0x04: 0x00 vs 0x06",
                "BAR2 differs first at 0x1001 (0x00 vs 0x01), in 2 page(s)",
            ]
        );
    }
}
