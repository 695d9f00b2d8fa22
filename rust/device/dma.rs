// SPDX-License-Identifier: GPL-2.0

//! The DMA engine of the sample device.
//!
//! [`crate::logic::dma`] decides (registers, command checks, the writer's
//! schedule); this file moves the bytes through the VFIO device's DMA calls
//! and holds the pins. Transfers run under the device lock, so a transfer
//! is never half done when a register or migration-region access looks at
//! the device. Documented in `Documentation/device.rst`.
//!
//! Lock order. The VFIO core calls `dma_unmap` with its own locks held
//! (type1: `device_list_lock`, which it takes under `iommu->lock`), and the
//! driver's DMA calls take `iommu->lock`. So `dma_unmap` must not take a lock
//! that is held across a DMA call: it takes only the lock of [`GuestPins`],
//! which is never held across one, and leaves the register side of an unmap
//! to the next holder of the device lock ([`State::apply_unmaps`]). Nor may
//! it wait for good for a pin still inside VFIO, which may need those
//! locks: it waits a few milliseconds at most (the pinning thread may just
//! have been preempted on its way out), then cancels the pin, which unpins
//! itself when it returns. It does wait for pages of its range being
//! unpinned, and for a pin that has returned and only waits for the pins
//! lock, so that it does not return while pages of its range are pinned
//! (the backends call it again while some are, a bounded number of times).

use super::State;
use crate::logic::abi::bar0::{IRQ_DMA_DONE, IRQ_DMA_ERROR, RING_PINNED};
use crate::logic::abi::GUEST_PAGE_SIZE;
use crate::logic::dma::{self, errno, Transfer};
use crate::logic::regs::WriteEffect;
use crate::pinned::PinnedPages;
use crate::vfio::Device;
use core::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use kernel::prelude::*;
use kernel::sync::lock::{mutex::MutexBackend, Guard};
use kernel::sync::{CondVar, CondVarTimeoutResult, Mutex};
use kernel::time::{msecs_to_jiffies, Ktime};
use kernel::{new_condvar, new_mutex};

/// Most pages the writer stamps in one round, so that it holds the device
/// lock only briefly.
const WRITER_BATCH: u64 = 64;
/// Longest sleep between writer rounds, in milliseconds.
const WRITER_MAX_SLEEP_MS: u64 = 100;

/// Unmapped ranges remembered for the registers; more are merged.
const UNMAP_SLOTS: usize = 8;
/// Longest wait of one `dma_unmap` call for a pin of its range that is
/// still inside VFIO, in milliseconds (the backends call again while pages
/// of the range stay pinned: type1 ten times, iommufd a hundred).
const PIN_PATIENCE_MS: u32 = 20;

/// The guest pages the device holds pinned and the unmaps the registers
/// have not seen yet, under their own lock (see the lock order above).
#[pin_data]
pub(super) struct GuestPins {
    #[pin]
    pins: Mutex<GuestPinsInner>,
    /// Signalled when a pin in progress or a release ends.
    #[pin]
    settled: CondVar,
    /// The pin in progress has returned from VFIO: what is left of it
    /// needs only the pins lock.
    pin_returned: AtomicBool,
    /// Pages in `pins.ring`, readable without the lock (every BAR0 read
    /// reports it).
    pinned: AtomicU32,
    /// `pins.unmapped` is not empty: lets the device lock's holders skip
    /// the pins lock when there is nothing to catch up with.
    unmap_pending: AtomicBool,
}

struct GuestPinsInner {
    /// The pinned ring, and whether it is pinned for writing.
    ring: Option<(PinnedPages, bool)>,
    /// A ring pin in progress (outside this lock).
    pinning: Option<PinInFlight>,
    /// The IOVA range of a ring being unpinned outside this lock; at most
    /// one is (see [`GuestPins::release`]).
    releasing: Option<(u64, u64)>,
    /// Ranges unmapped since the registers last saw them.
    unmapped: [(u64, u64); UNMAP_SLOTS],
    unmapped_len: usize,
}

/// A ring pin in progress: its IOVA range, and whether an unmap of it came
/// meanwhile (then the pin is undone when it returns).
struct PinInFlight {
    iova: u64,
    len: u64,
    cancelled: bool,
}

impl GuestPins {
    pub(super) fn new() -> impl PinInit<Self> {
        pin_init!(Self {
            pins <- new_mutex!(GuestPinsInner {
                ring: None,
                pinning: None,
                releasing: None,
                unmapped: [(0, 0); UNMAP_SLOTS],
                unmapped_len: 0,
            }, "vfio_mig_sample:pins"),
            settled <- new_condvar!("vfio_mig_sample:pins_settled"),
            pin_returned: AtomicBool::new(false),
            pinned: AtomicU32::new(0),
            unmap_pending: AtomicBool::new(false),
        })
    }

    /// Guest pages the device holds pinned.
    pub(super) fn pinned_pages(&self) -> u32 {
        self.pinned.load(Ordering::Relaxed)
    }

    /// Replaces the ring (under the pins lock); returns the old one, to be
    /// unpinned by [`Self::settle`].
    fn set_ring(
        &self,
        pins: &mut GuestPinsInner,
        ring: Option<(PinnedPages, bool)>,
    ) -> Option<(PinnedPages, bool)> {
        self.pinned.store(
            ring.as_ref().map_or(0, |(r, _)| r.npages()),
            Ordering::Relaxed,
        );
        core::mem::replace(&mut pins.ring, ring)
    }

    /// Lets go of the pins lock, unpinning `ring` if there is one, as a
    /// release in flight that an unmap of its range waits for; then wakes
    /// the waiters.
    fn settle(
        &self,
        mut pins: Guard<'_, GuestPinsInner, MutexBackend>,
        ring: Option<(PinnedPages, bool)>,
    ) {
        if let Some((r, _)) = &ring {
            pins.releasing = Some((r.iova(), u64::from(r.npages()) * GUEST_PAGE_SIZE));
        }
        drop(pins);
        if ring.is_some() {
            drop(ring);
            self.pins.lock().releasing = None;
        }
        self.settled.notify_all();
    }

    /// The ring's first page frame and size, when pinned for writing: such
    /// pages count as dirty on every query.
    pub(super) fn writable_ring(&self) -> Option<(u64, u64)> {
        match &self.pins.lock().ring {
            Some((r, true)) => Some((r.iova() / GUEST_PAGE_SIZE, u64::from(r.npages()))),
            _ => None,
        }
    }

    /// Unpins the ring, if pinned (the device lock's holder). An unmap's
    /// release in flight ends first (it needs only the VFIO locks, which
    /// the device lock's holder does not hold), so that no more than one
    /// release is ever in flight.
    pub(super) fn release(&self) {
        let mut pins = self.pins.lock();
        while pins.releasing.is_some() {
            self.settled.wait(&mut pins);
        }
        let ring = self.set_ring(&mut pins, None);
        self.settle(pins, ring);
    }

    /// Begins a pin of the ring at `iova..iova + len` (the device lock's
    /// holder, once [`Self::release`] emptied the slot).
    fn pin_begin(&self, iova: u64, len: u64) {
        self.pin_returned.store(false, Ordering::Relaxed);
        self.pins.lock().pinning = Some(PinInFlight {
            iova,
            len,
            cancelled: false,
        });
    }

    /// Ends the pin in progress: installs what it pinned, unless an unmap
    /// of its range came meanwhile; then it unpins it and fails with
    /// `ECANCELED`.
    fn pin_end(&self, pinned: Result<(PinnedPages, bool), u32>) -> Result<(), u32> {
        self.pin_returned.store(true, Ordering::Release);
        let mut pins = self.pins.lock();
        let cancelled = pins.pinning.take().is_some_and(|p| p.cancelled);
        let (result, unpin) = match pinned {
            Ok(ring) if cancelled => (Err(errno::ECANCELED), Some(ring)),
            // `release` emptied the slot, and only the device lock's
            // holder, this one, fills it.
            Ok(ring) => (Ok(()), self.set_ring(&mut pins, Some(ring))),
            Err(e) => (Err(e), None),
        };
        self.settle(pins, unpin);
        result
    }

    /// The `dma_unmap` callback: unpins the ring if it is in the range,
    /// cancels a pin of the range still inside VFIO, and remembers the
    /// range for the registers. Returns once no page of the range is
    /// pinned or about to be installed, or once a pin of it has spent
    /// [`PIN_PATIENCE_MS`] inside VFIO.
    pub(super) fn unmap(&self, iova: u64, len: u64) {
        let touches = |r: (u64, u64)| dma::overlaps(r.0, r.1, iova, len);
        let mut pins = self.pins.lock();
        let mut patience = msecs_to_jiffies(PIN_PATIENCE_MS);
        loop {
            let releasing = pins.releasing.is_some_and(touches);
            let pinning = pins
                .pinning
                .as_ref()
                .is_some_and(|p| touches((p.iova, p.len)));
            if releasing || (pinning && self.pin_returned.load(Ordering::Acquire)) {
                // Unpinning or installing: either needs only this lock.
                self.settled.wait(&mut pins);
            } else if pinning && patience > 0 {
                // Still inside VFIO, which may need the locks our caller
                // holds: a short wait (the thread may just have been
                // preempted), never one for good.
                patience = match self.settled.wait_interruptible_timeout(&mut pins, patience) {
                    CondVarTimeoutResult::Woken { jiffies } => jiffies,
                    CondVarTimeoutResult::Timeout | CondVarTimeoutResult::Signal { .. } => 0,
                };
            } else {
                break;
            }
        }
        if let Some(p) = pins.pinning.as_mut() {
            p.cancelled |= touches((p.iova, p.len));
        }
        let hit = pins
            .ring
            .as_ref()
            .is_some_and(|(r, _)| touches((r.iova(), u64::from(r.npages()) * GUEST_PAGE_SIZE)));
        let end = iova.saturating_add(len);
        let n = pins.unmapped_len;
        if let Some(slot) = pins.unmapped.get_mut(n) {
            *slot = (iova, end);
            pins.unmapped_len += 1;
        } else if let Some(last) = pins.unmapped.last_mut() {
            // Out of slots: merge into the last one (cancels more, never
            // less).
            *last = (last.0.min(iova), last.1.max(end));
        }
        self.unmap_pending.store(true, Ordering::Release);
        let ring = if hit {
            self.set_ring(&mut pins, None)
        } else {
            None
        };
        self.settle(pins, ring);
    }

    /// Whether `dma_unmap` recorded ranges since the last
    /// [`Self::take_unmapped`].
    fn unmaps_pending(&self) -> bool {
        self.unmap_pending.load(Ordering::Acquire)
    }

    /// Takes the ranges unmapped since the last call.
    fn take_unmapped(&self) -> ([(u64, u64); UNMAP_SLOTS], usize) {
        let mut pins = self.pins.lock();
        self.unmap_pending.store(false, Ordering::Relaxed);
        let taken = (pins.unmapped, pins.unmapped_len);
        pins.unmapped_len = 0;
        taken
    }
}

/// The engine's state that is not register state.
pub(super) struct Engine {
    /// When the writer last (re)started, in ns, and its writes since.
    writer_clock: Option<(i64, u64)>,
    /// One page of fill pattern.
    scratch: KVec<u8>,
}

/// The positive errno of `e`, as the engine's registers report it.
fn errno_of(e: Error) -> u32 {
    e.to_errno().unsigned_abs()
}

impl Engine {
    pub(super) fn new() -> Result<Self> {
        Ok(Engine {
            writer_clock: None,
            scratch: KVec::from_elem(0u8, GUEST_PAGE_SIZE as usize, GFP_KERNEL)?,
        })
    }

    /// Stops the writer's clock (reset, close).
    pub(super) fn stop(&mut self) {
        self.writer_clock = None;
    }
}

impl State {
    /// Latches an interrupt cause and delivers the interrupt if enabled.
    fn raise(&mut self, cause: u32) {
        if self.regs.raise(cause) == WriteEffect::Interrupt {
            self.interrupt();
        }
    }

    /// Whether the engine has work now (a command to run, the writer on).
    pub(super) fn engine_has_work(&self) -> bool {
        self.mig.running() && (self.regs.dma.command_ready() || self.regs.dma.writer_on())
    }

    /// One round of the engine: runs a ready command, then the writer's
    /// due pages. Returns how long to sleep before the next round, or
    /// `None` when there is nothing left to do.
    pub(super) fn engine_round(&mut self, dev: &Device, pins: &GuestPins) -> Option<u64> {
        if !self.mig.running() {
            self.engine.writer_clock = None;
            return None;
        }
        if self.regs.dma.command_ready() {
            self.run_command(dev);
        }
        if !self.regs.dma.writer_on() {
            self.engine.writer_clock = None;
            return None;
        }
        self.writer_round(dev, pins)
    }

    fn run_command(&mut self, dev: &Device) {
        let result = self
            .regs
            .dma
            .plan(self.mem.len())
            .and_then(|t| self.transfer(dev, &t));
        let cause = if result.is_ok() {
            IRQ_DMA_DONE
        } else {
            IRQ_DMA_ERROR
        };
        self.regs.dma.finish(result);
        self.raise(cause);
    }

    /// Runs `t` a page of guest memory at a time, so that every page it
    /// wrote is in the dirty log even if a later one fails.
    fn transfer(&mut self, dev: &Device, t: &Transfer) -> Result<(), u32> {
        let (iova, len) = t.guest_range();
        let len = len as usize;
        let mut done = 0usize;
        while done < len {
            // `plan` checked that `iova + len` does not wrap.
            let at = iova + done as u64;
            let in_page = (GUEST_PAGE_SIZE - (at & (GUEST_PAGE_SIZE - 1))) as usize;
            let n = in_page.min(len - done);
            let writes_guest = match *t {
                Transfer::ToGuest { dev_off, .. } => {
                    let src = self.mem.get(dev_off + done..dev_off + done + n);
                    dev.dma_write(at, src.ok_or(errno::EINVAL)?)
                        .map_err(errno_of)?;
                    true
                }
                Transfer::FromGuest { dev_off, .. } => {
                    let range = dev_off + done..dev_off + done + n;
                    let dst = self.mem.get_mut(range.clone()).ok_or(errno::EINVAL)?;
                    // A read that fails part way may have changed `dst`
                    // (type1 zero-fills what it could not copy).
                    let res = dev.dma_read(at, dst);
                    self.mig.mem_written(&range);
                    res.map_err(errno_of)?;
                    false
                }
                Transfer::Fill { pattern, .. } => {
                    let buf = self.engine.scratch.get_mut(..n).ok_or(errno::EINVAL)?;
                    dma::fill_chunk(pattern, done, buf);
                    dev.dma_write(at, buf).map_err(errno_of)?;
                    true
                }
            };
            if writes_guest {
                self.mig.guest_written(at / GUEST_PAGE_SIZE, 1);
            }
            done += n;
        }
        Ok(())
    }

    /// Stamps the pages the writer owes by now; returns the sleep until
    /// its next page, or `None` if it stopped on an error.
    ///
    /// A write that fails because its range was unmapped during the round
    /// (the backend removes the range once `dma_unmap` has returned) ends
    /// the writer with `ECANCELED`, as an unmap seen between rounds does,
    /// not with the backend's errno: the unmap is applied first.
    fn writer_round(&mut self, dev: &Device, pins: &GuestPins) -> Option<u64> {
        let now = Ktime::ktime_get().to_ns();
        let (start, mut done) = *self.engine.writer_clock.get_or_insert((now, 0));
        let elapsed = u64::try_from(now - start).unwrap_or(0);
        let rate = u64::from(self.regs.dma.bg_rate.max(1));
        let due = dma::writer_due(self.regs.dma.bg_rate, elapsed, done).min(WRITER_BATCH);
        for _ in 0..due {
            let (iova, stamp) = self.regs.dma.writer_next();
            if let Err(e) = dev.dma_write(iova, &stamp) {
                self.apply_unmaps(pins);
                if self.regs.dma.writer_on() {
                    self.regs.dma.stop_writer(errno_of(e));
                    self.raise(IRQ_DMA_ERROR);
                }
                self.engine.writer_clock = None;
                return None;
            }
            self.regs.dma.writer_advance();
            self.mig.guest_written(iova / GUEST_PAGE_SIZE, 1);
            done += 1;
        }
        self.engine.writer_clock = Some((start, done));
        // When the next page is due (at least a millisecond away, so a
        // writer that fell behind still lets others take the lock).
        let next_ns = (done + 1)
            .saturating_mul(1_000_000_000)
            .checked_div(rate)
            .unwrap_or(0);
        let wait_ms = next_ns.saturating_sub(elapsed).div_ceil(1_000_000);
        Some(wait_ms.clamp(1, WRITER_MAX_SLEEP_MS))
    }

    /// Makes the pins match the registers: releases the ring, then pins it
    /// again if `RING_CTRL` says `PINNED` (a write of `RING_CTRL`, or a
    /// committed stream). A failed pin clears `RING_CTRL` and reports in
    /// `RING_ERROR`.
    pub(super) fn ring_sync(&mut self, dev: &Device, pins: &GuestPins) {
        pins.release();
        if self.regs.dma.ring_ctrl & RING_PINNED == 0 {
            return;
        }
        let result = self
            .regs
            .dma
            .ring_plan()
            .and_then(|(iova, pages, writable)| {
                pins.pin_begin(iova, u64::from(pages) * GUEST_PAGE_SIZE);
                // No lock but the device lock is held across the pin.
                let pinned = dev
                    .pin_pages(iova, pages, writable)
                    .map(|p| (p, writable))
                    .map_err(errno_of);
                pins.pin_end(pinned)
            });
        match result {
            Ok(()) => self.regs.dma.ring_error = 0,
            Err(e) => {
                self.regs.dma.ring_ctrl = 0;
                self.regs.dma.ring_error = e;
                self.raise(IRQ_DMA_ERROR);
            }
        }
    }

    /// Applies the unmaps the `dma_unmap` callback recorded to the
    /// registers: a ring it took, a queued command or the writer in an
    /// unmapped range end with `ECANCELED`. Called by every holder of the
    /// device lock before it looks at the device.
    #[inline]
    pub(super) fn apply_unmaps(&mut self, pins: &GuestPins) {
        // Every register access comes here: the usual answer, nothing
        // unmapped, costs one load and no call.
        if pins.unmaps_pending() {
            self.apply_recorded_unmaps(pins);
        }
    }

    #[inline(never)]
    fn apply_recorded_unmaps(&mut self, pins: &GuestPins) {
        let (ranges, n) = pins.take_unmapped();
        for &(start, end) in ranges.iter().take(n) {
            let len = end - start;
            let d = &self.regs.dma;
            let ring_len = u64::from(d.ring_pages).saturating_mul(GUEST_PAGE_SIZE);
            let ring_taken = d.ring_ctrl & RING_PINNED != 0
                && dma::overlaps(d.ring_iova, ring_len, start, len)
                && pins.pinned_pages() == 0;
            if ring_taken {
                self.regs.dma.ring_ctrl = 0;
                self.regs.dma.ring_error = errno::ECANCELED;
                self.raise(IRQ_DMA_ERROR);
            }
            if self.regs.dma.command_touches(start, len) {
                self.regs.dma.finish(Err(errno::ECANCELED));
                self.raise(IRQ_DMA_ERROR);
            }
            if self.regs.dma.writer_touches(start, len) {
                self.regs.dma.stop_writer(errno::ECANCELED);
                self.raise(IRQ_DMA_ERROR);
            }
        }
    }
}
