// SPDX-License-Identifier: GPL-2.0
//! The sample device's own registers (Documentation/device.rst): BAR0, the
//! DMA engine, the ring and the background writer, and the module's
//! debugfs counter of pinned pages.

use std::time::{Duration, Instant};

use crate::abi::bar0::{
    self, BG_ENABLE, DMA_CMD_FILL, DMA_CMD_FROM_GUEST, DMA_CMD_TO_GUEST, DMA_STATUS_DONE,
    DMA_STATUS_ERROR, DMA_STATUS_IDLE, RING_PINNED, RING_WRITABLE,
};
use crate::abi::{config, region};
use crate::device::Device;
use crate::error::{Error, Result};

/// `DMA_CMD` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum DmaCmd {
    /// Device memory to guest memory.
    ToGuest = DMA_CMD_TO_GUEST,
    /// Guest memory to device memory.
    FromGuest = DMA_CMD_FROM_GUEST,
    /// Guest memory filled with `DMA_PATTERN`.
    Fill = DMA_CMD_FILL,
}

/// The name of a BAR0 register, or `0x..` for an unimplemented offset.
pub fn register_name(offset: u32) -> String {
    bar0::name(offset).map_or_else(|| format!("{offset:#04x}"), str::to_string)
}

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
    /// Reads the register at `off` (a `bar0` offset).
    pub fn read(&self, off: u32) -> Result<u32> {
        self.0.read32(region::BAR0, u64::from(off))
    }

    /// Writes the register at `off`.
    pub fn write(&self, off: u32, v: u32) -> Result<()> {
        self.0.write32(region::BAR0, u64::from(off), v)
    }

    fn write_iova(&self, lo: u32, iova: u64) -> Result<()> {
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
        self.write_iova(bar0::DMA_IOVA_LO, iova)?;
        self.write(bar0::DMA_DEV_OFF, dev_off)?;
        self.write(bar0::DMA_LEN, len)?;
        self.write(bar0::DMA_PATTERN, pattern)?;
        self.write(bar0::DMA_CMD, cmd as u32)
    }

    /// Polls `DMA_STATUS` until the queued command finished.
    pub fn wait_dma(&self, timeout: Duration) -> Result<DmaOutcome> {
        let start = Instant::now();
        loop {
            match self.read(bar0::DMA_STATUS)? {
                DMA_STATUS_DONE => return Ok(DmaOutcome::Done),
                DMA_STATUS_ERROR => return Ok(DmaOutcome::Failed(self.read(bar0::DMA_ERROR)?)),
                DMA_STATUS_IDLE => {
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
        self.write_iova(bar0::RING_IOVA_LO, iova)?;
        self.write(bar0::RING_PAGES, pages)?;
        let ctrl = RING_PINNED | if writable { RING_WRITABLE } else { 0 };
        self.write(bar0::RING_CTRL, ctrl)?;
        if self.read(bar0::RING_CTRL)? & RING_PINNED != 0 {
            Ok(0)
        } else {
            self.read(bar0::RING_ERROR)
        }
    }

    /// Releases the ring.
    pub fn unpin_ring(&self) -> Result<()> {
        self.write(bar0::RING_CTRL, 0)
    }

    /// Starts the background writer; returns `BG_ERROR` (0 on success).
    pub fn start_writer(&self, iova: u64, pages: u32, rate: u32) -> Result<u32> {
        self.write_iova(bar0::BG_IOVA_LO, iova)?;
        self.write(bar0::BG_PAGES, pages)?;
        self.write(bar0::BG_RATE, rate)?;
        self.write(bar0::BG_CTRL, BG_ENABLE)?;
        if self.read(bar0::BG_CTRL)? & BG_ENABLE != 0 {
            Ok(0)
        } else {
            self.read(bar0::BG_ERROR)
        }
    }

    /// Stops the background writer.
    pub fn stop_writer(&self) -> Result<()> {
        self.write(bar0::BG_CTRL, 0)
    }

    /// Every implemented BAR0 register, `0..bar0::END` in dwords.
    pub fn snapshot(&self) -> Result<Vec<u32>> {
        (0..bar0::END / 4).map(|i| self.read(i * 4)).collect()
    }
}

/// The device state a VMM can read back: every BAR0 register, the
/// configuration space and the device memory. Two devices with equal
/// snapshots are the same device as far as the guest can tell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceSnapshot {
    /// BAR0 dwords `0..bar0::END`.
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
        let mut config = vec![0u8; config::SIZE];
        dev.read_region(region::CONFIG, 0, &mut config)?;
        let size = dev.region_info(region::BAR2)?.size;
        let size = usize::try_from(size)
            .map_err(|_| Error::Invalid(format!("BAR2 of {} bytes is too large", size)))?;
        let mut memory = vec![0u8; size];
        // Bounded reads: one pread per 64 KiB keeps each kernel access short.
        for (i, chunk) in memory.chunks_mut(1 << 16).enumerate() {
            dev.read_region(region::BAR2, (i as u64) << 16, chunk)?;
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
            .map(|(i, (a, b))| format!("{} {a:#x} vs {b:#x}", register_name(i as u32 * 4)))
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
        assert_eq!(register_name(bar0::BG_CURSOR), "BG_CURSOR");
        assert_eq!(register_name(0x24), "0x24");
        let mut offs: Vec<u32> = bar0::REGISTERS.iter().map(|(o, _)| *o).collect();
        offs.sort_unstable();
        offs.dedup();
        assert_eq!(offs.len(), bar0::REGISTERS.len(), "no offset twice");
        assert!(offs.iter().all(|o| o % 4 == 0 && *o < bar0::END));
        assert_eq!(
            bar0::BG_CURSOR + 4,
            bar0::END,
            "END follows the last register"
        );
    }

    #[test]
    fn snapshot_differences_name_the_first() {
        let a = DeviceSnapshot {
            regs: vec![0; (bar0::END / 4) as usize],
            config: vec![0; config::SIZE],
            memory: vec![0; 3 * 4096],
        };
        assert!(a.differences(&a.clone()).is_empty());
        let mut b = a.clone();
        b.regs[(bar0::BG_WRITES / 4) as usize] = 7;
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
