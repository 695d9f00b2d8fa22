// SPDX-License-Identifier: GPL-2.0
//! What the source device gets before a migration so that there is
//! something to carry over, and what is checked on the destination
//! afterwards ([`DeviceWorkload`]): the demo's fixtures.

use std::fmt;
use std::time::Duration;

use serde::Serialize;

use super::{Vm, PAGE};
use crate::abi::bar0::{self, RING_MAX_PAGES};
use crate::abi::region;
use crate::error::{Error, Result};
use crate::migration::DeviceState;
use crate::sample;

/// Device-side workload and state the source gets before a migration, so
/// that there is something to carry over: the background writer (device
/// writes to guest RAM), a ring pinned for writing (always reported
/// dirty), a DMA command queued behind `DMA_CTRL.PAUSE` (it travels in the
/// stream and runs on the destination), and programmed registers, config
/// space and device memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct DeviceWorkload {
    /// Background writer range: guest pages `0..writer_pages` (0: off).
    pub writer_pages: u32,
    /// Background writer rate, pages per second.
    pub writer_rate: u32,
    /// Ring size in pages, pinned writable at the end of guest RAM (0:
    /// none).
    pub ring_pages: u32,
    /// Pages of the queued FILL command, in the middle of guest RAM (0:
    /// none).
    pub fill_pages: u32,
}

impl Default for DeviceWorkload {
    fn default() -> Self {
        DeviceWorkload {
            writer_pages: 256,
            writer_rate: 2000,
            ring_pages: 16,
            fill_pages: 4,
        }
    }
}

impl fmt::Display for DeviceWorkload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        if self.writer_pages > 0 {
            parts.push(format!(
                "background writer over {} pages at {}/s",
                self.writer_pages, self.writer_rate
            ));
        }
        if self.ring_pages > 0 {
            parts.push(format!("ring of {} pages pinned writable", self.ring_pages));
        }
        if self.fill_pages > 0 {
            parts.push(format!(
                "FILL of {} pages queued behind PAUSE",
                self.fill_pages
            ));
        }
        if parts.is_empty() {
            f.write_str("none")
        } else {
            f.write_str(&parts.join(", "))
        }
    }
}

/// `DMA_PATTERN` of the queued FILL command.
pub const FILL_PATTERN: u32 = 0xf111_ed00;

impl DeviceWorkload {
    /// Where the ring starts (page of guest RAM).
    pub fn ring_first_page(&self, pages: u64) -> u64 {
        pages.saturating_sub(u64::from(self.ring_pages))
    }

    /// Where the queued FILL writes (page of guest RAM).
    pub fn fill_first_page(&self, pages: u64) -> u64 {
        pages / 2
    }

    fn check_fits(&self, pages: u64) -> Result<()> {
        let writer_end = u64::from(self.writer_pages);
        let fill = self.fill_first_page(pages);
        let fill_end = fill + u64::from(self.fill_pages);
        let ring = self.ring_first_page(pages);
        let fits = writer_end <= pages
            && (self.fill_pages == 0 || (writer_end <= fill && fill_end <= ring))
            && u64::from(self.ring_pages) <= pages
            && self.ring_pages <= RING_MAX_PAGES;
        if !fits {
            return Err(Error::Invalid(format!(
                "guest RAM of {pages} pages is too small for a writer over {} pages, a queued \
                 fill of {} pages in the middle and a ring of {} pages (at most {}) at the end",
                self.writer_pages, self.fill_pages, self.ring_pages, RING_MAX_PAGES
            )));
        }
        Ok(())
    }

    /// Brings the source from NONE (or RUNNING) to RUNNING with all of the
    /// above set up and the writer started.
    pub fn prepare_source(&self, vm: &Vm) -> Result<()> {
        let pages = vm.pages();
        self.check_fits(pages)?;
        let dev = &vm.dev;
        if dev.device_state()? == DeviceState::None {
            dev.set_state(DeviceState::Running)?;
        }
        // Config space as a guest driver leaves it: memory decoding and bus
        // mastering on, BARs assigned (BAR2 above 4 GiB), an IRQ line.
        dev.write16(region::CONFIG, 0x04, 0x0006)?;
        dev.write32(region::CONFIG, 0x10, 0xfebf_0000)?;
        dev.write32(region::CONFIG, 0x18, 0x0000_0000)?;
        dev.write32(region::CONFIG, 0x1c, 0x0000_0002)?;
        dev.write8(region::CONFIG, 0x3c, 11)?;
        // Device memory with a pattern that differs in every page.
        let size = usize::try_from(dev.region_info(region::BAR2)?.size)
            .map_err(|_| Error::Invalid("BAR2 is too large".into()))?;
        let mut chunk = vec![0u8; 1 << 16];
        for (n, at) in (0..size).step_by(chunk.len()).enumerate() {
            let len = chunk.len().min(size - at);
            for (i, b) in chunk[..len].iter_mut().enumerate() {
                *b = ((at + i) / PAGE) as u8 ^ (i as u8).wrapping_mul(7) ^ n as u8;
            }
            dev.write_region(region::BAR2, at as u64, &chunk[..len])?;
        }
        let regs = vm.regs();
        regs.write(bar0::SCRATCH, 0x600d_cafe)?;
        regs.write(bar0::IRQ_ENABLE, bar0::IRQ_DOORBELL | bar0::IRQ_DMA_DONE)?;
        for _ in 0..3 {
            regs.write(bar0::DOORBELL, 1)?;
        }
        if self.ring_pages > 0 {
            let iova = vm.page_iova(self.ring_first_page(pages))?;
            let err = regs.pin_ring(iova, self.ring_pages, true)?;
            if err != 0 {
                return Err(Error::Invalid(format!(
                    "pinning a ring of {} pages at IOVA {iova:#x} failed: RING_ERROR {}",
                    self.ring_pages,
                    crate::errno_string(err as i32)
                )));
            }
        }
        if self.fill_pages > 0 {
            regs.write(bar0::DMA_CTRL, bar0::DMA_CTRL_PAUSE)?;
            let iova = vm.page_iova(self.fill_first_page(pages))?;
            let len = self.fill_pages * PAGE as u32;
            regs.queue_dma(sample::DmaCmd::Fill, iova, 0, len, FILL_PATTERN)?;
            let status = regs.read(bar0::DMA_STATUS)?;
            if status != bar0::DMA_STATUS_QUEUED {
                return Err(Error::Invalid(format!(
                    "a FILL queued behind PAUSE has DMA_STATUS {status}, not QUEUED (DMA_ERROR \
                     {})",
                    regs.read(bar0::DMA_ERROR)?
                )));
            }
        }
        if self.writer_pages > 0 {
            let err = regs.start_writer(vm.iova, self.writer_pages, self.writer_rate)?;
            if err != 0 {
                return Err(Error::Invalid(format!(
                    "starting the background writer over {} pages at {}/s failed: BG_ERROR {}",
                    self.writer_pages,
                    self.writer_rate,
                    crate::errno_string(err as i32)
                )));
            }
        }
        Ok(())
    }

    /// On the running destination: the ring is pinned there, and the queued
    /// FILL, once `PAUSE` is cleared, runs and fills the destination's
    /// guest RAM. Returns what was checked, in words.
    pub fn check_destination(&self, vm: &Vm) -> Result<String> {
        let regs = vm.regs();
        let mut checked = Vec::new();
        let pinned = regs.read(bar0::PINNED_PAGES)?;
        if pinned != self.ring_pages {
            return Err(Error::Invalid(format!(
                "the destination holds {pinned} pages pinned, not the ring's {} (RING_CTRL {:#x}, \
                 RING_ERROR {})",
                self.ring_pages,
                regs.read(bar0::RING_CTRL)?,
                regs.read(bar0::RING_ERROR)?
            )));
        }
        if self.ring_pages > 0 {
            checked.push(format!("ring of {} pages pinned", self.ring_pages));
        }
        if self.fill_pages > 0 {
            regs.write(bar0::DMA_CTRL, 0)?;
            match regs.wait_dma(Duration::from_secs(30))? {
                sample::DmaOutcome::Done => {}
                sample::DmaOutcome::Failed(e) => {
                    return Err(Error::Invalid(format!(
                        "the queued FILL failed on the destination: DMA_ERROR {}",
                        crate::errno_string(e as i32)
                    )))
                }
            }
            let first = self.fill_first_page(vm.pages());
            let mut got = vec![0u8; self.fill_pages as usize * PAGE];
            vm.ram.read_at(first as usize * PAGE, &mut got)?;
            let want = FILL_PATTERN.to_le_bytes();
            if let Some(i) = got.iter().enumerate().position(|(i, b)| *b != want[i % 4]) {
                return Err(Error::Invalid(format!(
                    "the queued FILL ran on the destination but guest RAM at page {first} + \
                     {i:#x} holds {:#04x}, not {:#04x}",
                    got[i],
                    want[i % 4]
                )));
            }
            checked.push(format!(
                "queued FILL of {} pages ran there after PAUSE was cleared",
                self.fill_pages
            ));
        }
        Ok(checked.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workload_descriptions() {
        assert_eq!(
            DeviceWorkload::default().to_string(),
            "background writer over 256 pages at 2000/s, ring of 16 pages pinned writable, \
             FILL of 4 pages queued behind PAUSE"
        );
        let ring_only = DeviceWorkload {
            writer_pages: 0,
            fill_pages: 0,
            ..DeviceWorkload::default()
        };
        assert_eq!(ring_only.to_string(), "ring of 16 pages pinned writable");
        let none = DeviceWorkload {
            ring_pages: 0,
            ..ring_only
        };
        assert_eq!(none.to_string(), "none");
    }

    #[test]
    fn workload_layout_must_fit() {
        let w = DeviceWorkload::default();
        assert!(w.check_fits(16384).is_ok());
        assert_eq!(w.ring_first_page(16384), 16384 - 16);
        assert_eq!(w.fill_first_page(16384), 8192);
        assert!(w.check_fits(300).is_err(), "the writer runs into the fill");
        let big_ring = DeviceWorkload {
            ring_pages: RING_MAX_PAGES + 1,
            ..w
        };
        assert!(big_ring.check_fits(1 << 20).is_err());
        let none = DeviceWorkload {
            writer_pages: 0,
            writer_rate: 0,
            ring_pages: 0,
            fill_pages: 0,
        };
        assert!(none.check_fits(1).is_ok());
    }
}
