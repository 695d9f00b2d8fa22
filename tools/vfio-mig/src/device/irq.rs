// SPDX-License-Identifier: GPL-2.0
//! Interrupts: `VFIO_DEVICE_SET_IRQS` in its raw form and the forms a VMM
//! uses (eventfd triggers, loopback, mask and unmask).

use std::mem::size_of;
use std::os::fd::{AsFd, RawFd};

use super::info::{check_raw_argsz, RAW_ARGSZ_MAX};
use super::Device;
use crate::error::{Error, Result};
use crate::ioctl::{self, ArgBuf};
use crate::uapi::vfio;

/// Size of the fixed part of `struct vfio_irq_set`.
pub const IRQ_SET_SIZE: u32 = size_of::<vfio::vfio_irq_set>() as u32;

impl Device {
    /// `VFIO_DEVICE_SET_IRQS` with every field under the caller's control.
    /// `argsz` defaults to the header plus `data`; the buffer always holds
    /// at least `max(argsz, header + data.len())` bytes (argsz at most 1 MiB).
    pub fn set_irqs_raw(
        &self,
        argsz: Option<u32>,
        flags: u32,
        index: u32,
        start: u32,
        count: u32,
        data: &[u8],
    ) -> Result<()> {
        let natural = IRQ_SET_SIZE as usize + data.len();
        let argsz = argsz.unwrap_or(natural as u32);
        if natural > RAW_ARGSZ_MAX as usize {
            return Err(Error::Invalid(format!(
                "argsz {argsz} is too large to test"
            )));
        }
        check_raw_argsz(argsz)?;
        let fields = [flags, index, start, count];
        let mut arg = ArgBuf::new(argsz, &fields, data, IRQ_SET_SIZE as usize);
        ioctl::device_set_irqs(self.as_fd(), &mut arg).map_err(|f| {
            f.context(format!(
                "argsz {argsz}, flags {flags:#x}, index {index}, start {start}, count {count}"
            ))
        })
    }

    /// Installs eventfds (`-1` removes one) as triggers of vectors
    /// `start..start + fds.len()` of IRQ `index`.
    pub fn set_irq_eventfds(&self, index: u32, start: u32, fds: &[RawFd]) -> Result<()> {
        let data: Vec<u8> = fds.iter().flat_map(|fd| fd.to_ne_bytes()).collect();
        self.set_irqs_raw(
            None,
            vfio::VFIO_IRQ_SET_DATA_EVENTFD | vfio::VFIO_IRQ_SET_ACTION_TRIGGER,
            index,
            start,
            fds.len() as u32,
            &data,
        )
    }

    /// Installs (`Some`) or removes (`None`) the eventfd of vector 0 of `index`.
    pub fn set_irq_eventfd(&self, index: u32, fd: Option<RawFd>) -> Result<()> {
        self.set_irq_eventfds(index, 0, &[fd.unwrap_or(-1)])
    }

    /// Removes every trigger of `index` (`DATA_NONE`, `count = 0`).
    pub fn disable_irq(&self, index: u32) -> Result<()> {
        self.set_irqs_raw(
            None,
            vfio::VFIO_IRQ_SET_DATA_NONE | vfio::VFIO_IRQ_SET_ACTION_TRIGGER,
            index,
            0,
            0,
            &[],
        )
    }

    /// Loopback: signals the installed eventfds of `start..start + count`.
    pub fn trigger_irq(&self, index: u32, start: u32, count: u32) -> Result<()> {
        self.set_irqs_raw(
            None,
            vfio::VFIO_IRQ_SET_DATA_NONE | vfio::VFIO_IRQ_SET_ACTION_TRIGGER,
            index,
            start,
            count,
            &[],
        )
    }

    /// Loopback with `DATA_BOOL`: signals the vectors whose value is true.
    pub fn trigger_irq_bool(&self, index: u32, start: u32, values: &[bool]) -> Result<()> {
        let data: Vec<u8> = values.iter().map(|&v| v as u8).collect();
        self.set_irqs_raw(
            None,
            vfio::VFIO_IRQ_SET_DATA_BOOL | vfio::VFIO_IRQ_SET_ACTION_TRIGGER,
            index,
            start,
            values.len() as u32,
            &data,
        )
    }

    /// Masks vector 0 of `index` (`ACTION_MASK`, `DATA_NONE`).
    pub fn mask_irq(&self, index: u32) -> Result<()> {
        self.set_irqs_raw(
            None,
            vfio::VFIO_IRQ_SET_DATA_NONE | vfio::VFIO_IRQ_SET_ACTION_MASK,
            index,
            0,
            1,
            &[],
        )
    }

    /// Unmasks vector 0 of `index` (`ACTION_UNMASK`, `DATA_NONE`).
    pub fn unmask_irq(&self, index: u32) -> Result<()> {
        self.set_irqs_raw(
            None,
            vfio::VFIO_IRQ_SET_DATA_NONE | vfio::VFIO_IRQ_SET_ACTION_UNMASK,
            index,
            0,
            1,
            &[],
        )
    }
}
