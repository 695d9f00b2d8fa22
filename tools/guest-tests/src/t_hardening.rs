// SPDX-License-Identifier: GPL-2.0
//! Regression tests of the seven defects of issue 9, what a hostile or
//! buggy VMM (or the guest behind it) could do to the device:
//!
//! 1. data and bitmap areas carried from one session into the next;
//! 2. ring registers rewritten under a pinned ring;
//! 3. a dirty log that grows until the kernel warns;
//! 4. failed copies that change device memory without marking it dirty;
//! 5. `dma_unmap` racing pins and releases of the ring;
//! 6. INTx causes lost while masked or disabled;
//! 7. a register record torn by changes between two of its chunks.

use std::fs::File;
use std::io::{ErrorKind, Read};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use vfio_mig::{Device, DeviceState as State, EventFd, GuestMemory, OpenPath};

use crate::device::{bar0, cfg, dma, irq, mig, region, region_offset, SMALL};
use crate::dmautil::{
    expect_errno_reg, expect_pinned_total, expect_reg, pin_ring, pin_ring_ok, pinned_total,
    program, rd, run, run_ok, wr, wr_iova, Cmd, Ram, PAGE,
};
use crate::t_config::{same_bytes, snapshot};
use crate::t_migration::{drain, feed, go, set_state};
use crate::util::{expect_fire, expect_quiet, pattern, Ctx, Env, Io, TResult};
use crate::{ensure, ensure_eq, ensure_hex};

const B0: u32 = region::BAR0;
const B2: u32 = region::BAR2;
const CF: u32 = region::CONFIG;
const M: u32 = region::MIGRATION;
/// Where the tests map guest RAM.
const BASE: u64 = 0x10_0000;

// ---------------------------------------------------------------------------
// Helpers

/// The kernel log from the moment of [`KernelLog::open`] on.
struct KernelLog(File);

impl KernelLog {
    fn open() -> Result<Self, String> {
        let f = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open("/dev/kmsg")
            .map_err(|e| format!("open /dev/kmsg: {e}"))?;
        // SAFETY: lseek on our own fd; SEEK_END on /dev/kmsg skips to the
        // next record to be written.
        if unsafe { libc::lseek(f.as_raw_fd(), 0, libc::SEEK_END) } < 0 {
            return Err(format!(
                "seek /dev/kmsg: {}",
                std::io::Error::last_os_error()
            ));
        }
        Ok(KernelLog(f))
    }

    /// The records written since, that report a kernel problem.
    fn reports(&mut self) -> Result<Vec<String>, String> {
        let mut found = Vec::new();
        let mut rec = vec![0u8; 8192];
        loop {
            match self.0.read(&mut rec) {
                Ok(0) => break,
                Ok(n) => {
                    let line = String::from_utf8_lossy(&rec[..n]);
                    let text = line.split_once(';').map_or(&*line, |(_, t)| t);
                    if ["WARNING:", "BUG:", "Oops", "KASAN:", "Call Trace:"]
                        .iter()
                        .any(|m| text.contains(m))
                    {
                        found.push(text.trim_end().to_string());
                    }
                }
                // EPIPE: records were overwritten; keep reading.
                Err(e) if e.raw_os_error() == Some(libc::EPIPE) => {}
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) => return Err(format!("read /dev/kmsg: {e}")),
            }
        }
        Ok(found)
    }

    fn expect_clean(&mut self, what: &str) -> TResult {
        let r = self.reports()?;
        ensure!(r.is_empty(), "{what}: the kernel reported {r:?}");
        Ok(())
    }
}

/// Reads `len` bytes of the migration region at `off`.
fn mig_bytes(dev: &Device, off: u64, len: u64) -> Result<Vec<u8>, String> {
    let mut b = vec![0u8; len as usize];
    dev.read_region(M, off, &mut b)
        .ctx(&format!("read migration region at {off:#x}"))?;
    Ok(b)
}

/// Fails unless the data and bitmap areas read as zeros.
fn expect_areas_zero(dev: &Device, what: &str) -> TResult {
    for (name, off, len) in [
        ("data area", mig::DATA_OFF, mig::DATA_LEN),
        ("bitmap area", mig::BITMAP_OFF, mig::BITMAP_LEN),
    ] {
        let b = mig_bytes(dev, off, len)?;
        if let Some(i) = b.iter().position(|&x| x != 0) {
            let n = b.iter().filter(|&&x| x != 0).count();
            return Err(format!(
                "{what}: {name} byte {i:#x} is {:#04x} ({n} bytes not zero)",
                b[i]
            ));
        }
    }
    Ok(())
}

/// Device memory, all of it.
fn bar2(dev: &Device) -> Result<Vec<u8>, String> {
    let mut b = vec![0u8; SMALL.mem_size as usize];
    dev.read_region(B2, 0, &mut b).ctx("read device memory")?;
    Ok(b)
}

/// A pattern over all of device memory.
fn fill_bar2(dev: &Device, seed: u8) -> TResult {
    let mem: Vec<u8> = (0..SMALL.mem_size).map(|i| pattern(i, seed)).collect();
    dev.write_region(B2, 0, &mem).ctx("fill device memory")
}

/// Restores `stream` into `dev` (RESUME, set buffers, RESUME_COMPLETED).
fn restore(dev: &Device, stream: &[u8]) -> TResult {
    set_state(dev, State::Resume)?;
    feed(dev, stream, &mut |_| 64 << 10).map_err(|(p, e)| format!("set buffer at {p}: {e}"))?;
    set_state(dev, State::ResumeCompleted).map_err(|e| format!("RESUME_COMPLETED: {e}"))
}

// ---------------------------------------------------------------------------
// 1. Nothing staged survives a session

/// Stages a chunk of a non-zero device and a dirty bitmap, and checks that
/// both areas now hold something (else the test would prove nothing).
fn stage(dev: &Device) -> TResult {
    fill_bar2(dev, 0x61)?;
    go(dev, &[State::Running, State::Setup, State::PreCopy])?;
    run_ok(dev, &Cmd::fill(BASE + 3 * PAGE, 8, 0x0102_0304))?;
    let mut chunk = Vec::new();
    ensure!(
        dev.get_buffer(&mut chunk).ctx("get buffer")? > 0,
        "get buffer staged nothing"
    );
    let bits = dev.dirty_bitmap(BASE, 64).ctx("dirty query")?;
    ensure!(bits.words[0] & 1 << 3 != 0, "page 3 not reported dirty");
    ensure!(
        mig_bytes(dev, mig::DATA_OFF, 4096)?.iter().any(|&b| b != 0),
        "the data area holds no staged bytes"
    );
    ensure!(
        mig_bytes(dev, mig::BITMAP_OFF, 8)?.iter().any(|&b| b != 0),
        "the bitmap area holds no bits"
    );
    Ok(())
}

pub fn hardening_stale_areas(env: &Env) -> TResult {
    let mut fx = env.open(&SMALL, OpenPath::Legacy)?;
    let ram = Ram::map(fx.dev(), BASE, 16, 0)?;
    stage(fx.dev())?;
    fx.dev().reset().ctx("VFIO_DEVICE_RESET")?;
    expect_areas_zero(fx.dev(), "after reset")?;
    stage(fx.dev())?;
    // Userspace may write the areas too; that does not survive either.
    fx.dev()
        .write_region(M, mig::DATA_OFF + mig::DATA_LEN - 4, &[0xee; 4])
        .ctx("write the end of the data area")?;
    drop(ram);
    fx.reopen(OpenPath::Iommufd)?;
    expect_areas_zero(fx.dev(), "after close and open (iommufd)")
}

// ---------------------------------------------------------------------------
// 2. The ring's settings while it is pinned

pub fn hardening_ring_frozen(env: &Env) -> TResult {
    let a = env.open(&SMALL, OpenPath::Legacy)?;
    let c = env.open(&SMALL, OpenPath::Legacy)?;
    let (src, dst) = (a.dev(), c.dev());
    let _ram_a = Ram::map(src, BASE, 16, 0)?;
    let _ram_c = Ram::map(dst, BASE, 16, 0)?;
    pin_ring_ok(src, BASE + 4 * PAGE, 4, true)?;
    // A guest rewrites the settings of the pinned ring.
    wr(src, dma::RING_PAGES, 0)?;
    wr_iova(src, dma::RING_IOVA_LO, BASE + 0x10_0000_0000)?;
    expect_reg(src, dma::RING_PAGES, 4, "RING_PAGES written while pinned")?;
    expect_reg(
        src,
        dma::RING_IOVA_LO,
        (BASE + 4 * PAGE) as u32,
        "RING_IOVA_LO written while pinned",
    )?;
    expect_reg(
        src,
        dma::RING_IOVA_HI,
        0,
        "RING_IOVA_HI written while pinned",
    )?;
    // The VM still migrates: the destination takes the stream.
    let mut stream = Vec::new();
    src.save_to(&mut stream, Default::default())
        .ctx("save the source")?;
    restore(dst, &stream)?;
    expect_reg(
        dst,
        dma::RING_CTRL,
        dma::RING_PINNED | dma::RING_WRITABLE,
        "destination",
    )?;
    expect_reg(dst, dma::PINNED_PAGES, 4, "destination")?;
    drop(c);
    drop(a);

    // An unmap is matched against the pinned range, not the registers.
    let fx = env.open(&SMALL, OpenPath::Iommufd)?;
    let dev = fx.dev();
    let ram = Ram::map(dev, BASE, 16, 0)?;
    let elsewhere = Ram::map(dev, 0x4000_0000, 4, 0)?;
    pin_ring_ok(dev, BASE, 4, false)?;
    wr_iova(dev, dma::RING_IOVA_LO, elsewhere.iova)?;
    ram.unmap(dev)?;
    expect_reg(
        dev,
        dma::PINNED_PAGES,
        0,
        "after the ring's range was unmapped",
    )?;
    expect_reg(
        dev,
        dma::RING_CTRL,
        0,
        "after the ring's range was unmapped",
    )?;
    expect_errno_reg(dev, dma::RING_ERROR, libc::ECANCELED, "after the unmap")
}

// ---------------------------------------------------------------------------
// 3. The dirty log's memory is bounded

/// Distinct 2 MiB IOVA regions the test makes the device write: past the
/// documented bound of the log (4096 regions between two reports).
const REGIONS: u64 = 4200;
const REGION: u64 = 2 << 20;

/// Queues a 4-byte FILL at `iova` with one register write and waits for
/// it to leave QUEUED (the test checks the outcome of all of them at the
/// end, through `DMA_COMPLETED` and `IRQ_STATUS`).
fn quick_fill(dev: &Device, iova: u64) -> TResult {
    let words = [
        iova as u32,
        (iova >> 32) as u32,
        4,
        0x0909_0909,
        dma::CMD_FILL,
    ];
    let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
    dev.write_region(B0, dma::IOVA_LO, &bytes)
        .ctx(&format!("queue FILL at {iova:#x}"))?;
    while rd(dev, dma::STATUS)? == dma::QUEUED {
        std::thread::yield_now();
    }
    Ok(())
}

pub fn hardening_dirty_log_bound(env: &Env) -> TResult {
    let mut log = KernelLog::open()?;
    let fx = env.open(&SMALL, OpenPath::Legacy)?;
    let dev = fx.dev();
    let page = Arc::new(GuestMemory::new("one-page", PAGE as usize).ctx("guest page")?);
    for i in 0..REGIONS {
        dev.map_dma(BASE + i * REGION, &page)
            .ctx(&format!("map region {i}"))?;
    }
    go(dev, &[State::Running, State::Setup])?;
    wr(dev, bar0::IRQ_STATUS, !0)?;
    let done = rd(dev, dma::COMPLETED)?;
    for i in 0..REGIONS {
        quick_fill(dev, BASE + i * REGION)?;
    }
    ensure_eq!(
        rd(dev, dma::COMPLETED)? - done,
        REGIONS as u32,
        "commands completed"
    );
    ensure_hex!(
        rd(dev, bar0::IRQ_STATUS)? & dma::IRQ_DMA_ERROR,
        0,
        "IRQ_STATUS.DMA_ERROR after the fills"
    );
    log.expect_clean(&format!("after marking pages in {REGIONS} regions"))?;
    // Past its bound the log reports every page of a query dirty, the
    // safe direction, even a range nothing wrote.
    let far = BASE + REGIONS * REGION + (1 << 30);
    let bits = dev.dirty_bitmap(far, 128).ctx("query an unwritten range")?;
    ensure!(
        bits.words[..2] == [u64::MAX, u64::MAX],
        "an unwritten range past the bound reads {:x?}, want every page dirty",
        &bits.words[..2]
    );
    // Logging again from scratch is precise again.
    go(dev, &[State::Cancelled, State::Setup])?;
    run_ok(dev, &Cmd::fill(BASE + 7 * REGION, 4, 1))?;
    let bits = dev.dirty_bitmap(BASE + 7 * REGION, 64).ctx("query")?;
    ensure_eq!(bits.words[0], 1u64, "a new log after CANCELLED, SETUP");
    let bits = dev.dirty_bitmap(far, 128).ctx("query")?;
    ensure_eq!(&bits.words[..2], &[0u64, 0][..], "an unwritten range");
    set_state(dev, State::Cancelled)?;
    log.expect_clean("at the end")
}

// ---------------------------------------------------------------------------
// 4. Failed copies and the dirty log

/// An anonymous two-page buffer whose second page cannot be read.
struct HalfReadable(*mut libc::c_void);

impl HalfReadable {
    fn new(fill: u8) -> Result<Self, String> {
        let len = 2 * PAGE as usize;
        // SAFETY: a new private anonymous mapping; nothing else is affected.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        ensure!(
            p != libc::MAP_FAILED,
            "mmap: {}",
            std::io::Error::last_os_error()
        );
        // SAFETY: the mapping is ours and writable; then its second page
        // loses all access.
        unsafe {
            std::ptr::write_bytes(p.cast::<u8>(), fill, PAGE as usize);
            libc::mprotect(
                p.cast::<u8>().add(PAGE as usize).cast(),
                PAGE as usize,
                libc::PROT_NONE,
            );
        }
        Ok(HalfReadable(p))
    }
}

impl Drop for HalfReadable {
    fn drop(&mut self) {
        // SAFETY: our mapping, of this length.
        unsafe { libc::munmap(self.0, 2 * PAGE as usize) };
    }
}

/// Makes guest RAM unreadable (`false`) or readable again.
fn protect(ram: &Ram, readable: bool) -> TResult {
    let prot = if readable {
        libc::PROT_READ | libc::PROT_WRITE
    } else {
        libc::PROT_NONE
    };
    // SAFETY: the memfd mapping of `ram`, of its length; only its access
    // changes, and the test touches it only by copies.
    let r = unsafe { libc::mprotect(ram.mem.as_ptr().cast(), ram.mem.len(), prot) };
    ensure!(r == 0, "mprotect: {}", std::io::Error::last_os_error());
    Ok(())
}

pub fn hardening_failed_copies(env: &Env) -> TResult {
    let a = env.open(&SMALL, OpenPath::Legacy)?;
    let c = env.open(&SMALL, OpenPath::Legacy)?;
    let (src, dst) = (a.dev(), c.dev());
    let ram = Ram::map(src, BASE, 2, 0x77)?;
    fill_bar2(src, 0x3c)?;
    go(src, &[State::Running, State::Setup, State::PreCopy])?;
    let mut stream = Vec::new();
    drain(src, &mut stream)?;
    // Every page is sent; now two copies fail halfway.
    let before = bar2(src)?;
    let buf = HalfReadable::new(0xab)?;
    let pos = region_offset(B2) + PAGE;
    // SAFETY: the buffer is a live mapping of two pages (the second is
    // PROT_NONE, which the kernel must report as EFAULT).
    let n = unsafe { libc::pwrite(src.fd(), buf.0, 2 * PAGE as usize, pos as libc::off_t) };
    let err = std::io::Error::last_os_error().raw_os_error();
    ensure!(
        n < 0 && err == Some(libc::EFAULT),
        "BAR2 write from a half-readable buffer: returned {n} ({err:?}), want EFAULT"
    );
    protect(&ram, false)?;
    let r = run(src, &Cmd::from_guest(BASE, 4 * PAGE as u32, PAGE as u32));
    protect(&ram, true)?;
    let (st, _) = r?;
    ensure_eq!(
        st,
        dma::FAILED,
        "FROM_GUEST from unreadable RAM: DMA_STATUS"
    );
    let after = bar2(src)?;
    let changed: Vec<usize> = (0..SMALL.mem_size as usize / PAGE as usize)
        .filter(|p| {
            let r = p * PAGE as usize..(p + 1) * PAGE as usize;
            before[r.clone()] != after[r]
        })
        .collect();
    // Whatever the failed copies did to device memory, the destination
    // gets the same.
    drain(src, &mut stream)?;
    set_state(src, State::StopNCopy)?;
    drain(src, &mut stream)?;
    set_state(src, State::SaveCompleted)?;
    restore(dst, &stream)?;
    same_bytes(
        &bar2(dst)?,
        &after,
        &format!("destination memory (source pages changed by the failed copies: {changed:?})"),
    )
}

// ---------------------------------------------------------------------------
// 5. dma_unmap against pins and releases in flight

pub fn hardening_unmap_races(env: &Env) -> TResult {
    const ROUNDS: u32 = 200;
    let b0 = pinned_total()?;
    let mut log = KernelLog::open()?;
    let fx = env.open(&SMALL, OpenPath::Iommufd)?;
    let dev = fx.dev();
    let mut ram = Ram::map(dev, BASE, 16, 0)?;
    let stop = AtomicBool::new(false);
    let (pins, cmds) = std::thread::scope(|sc| {
        // Pins and releases the ring over and over, with resets between.
        let pins = sc.spawn(|| -> Result<u32, String> {
            let mut n = 0u32;
            while !stop.load(Ordering::Acquire) {
                let ctrl = pin_ring(dev, BASE + (n as u64 % 4) * PAGE, 8, n.is_multiple_of(2))?;
                if ctrl != 0 {
                    n += 1;
                }
                if n % 16 == 15 {
                    dev.reset().ctx("reset")?;
                } else {
                    wr(dev, dma::RING_CTRL, 0)?;
                }
            }
            Ok(n)
        });
        // Commands over the RAM; resets may drop them (DMA_STATUS IDLE).
        let cmds = sc.spawn(|| -> Result<u32, String> {
            let mut n = 0;
            while !stop.load(Ordering::Acquire) {
                program(dev, &Cmd::fill(BASE + 12 * PAGE, 64, 0x0e0e_0e0e))?;
                match dev.write32(B0, dma::CMD, dma::CMD_FILL) {
                    Ok(()) => n += 1,
                    Err(e) if e.errno() == Some(libc::EBUSY) => {}
                    Err(e) => return Err(format!("queue a FILL: {e}")),
                }
                while rd(dev, dma::STATUS)? == dma::QUEUED && !stop.load(Ordering::Acquire) {
                    std::thread::yield_now();
                }
            }
            Ok(n)
        });
        let r = (|| {
            for _ in 0..ROUNDS {
                ram.unmap(dev)?;
                std::thread::sleep(Duration::from_millis(1));
                ram.map_at(dev, BASE)?;
                std::thread::sleep(Duration::from_millis(4));
            }
            Ok::<(), String>(())
        })();
        stop.store(true, Ordering::Release);
        let pins = pins
            .join()
            .unwrap_or_else(|_| Err("pin thread panicked".into()));
        let cmds = cmds
            .join()
            .unwrap_or_else(|_| Err("command thread panicked".into()));
        r.map(|()| (pins, cmds))
    })?;
    let pinned = pins?;
    cmds?;
    ensure!(pinned > 0, "no pin took during {ROUNDS} unmaps");
    wr(dev, dma::RING_CTRL, 0)?;
    expect_reg(dev, dma::PINNED_PAGES, 0, "at the end")?;
    expect_pinned_total(b0, "at the end")?;
    log.expect_clean("after the races")
}

/// The unpin-delay knob in debugfs (`rust/pinned.rs`), set back to 0 on drop.
struct UnpinDelay;

impl UnpinDelay {
    const DELAY: &'static str = "/sys/kernel/debug/vfio_mig_sample/unpin_delay_ms";
    const COUNT: &'static str = "/sys/kernel/debug/vfio_mig_sample/unpins_delayed";

    fn set(ms: u32) -> Result<Self, String> {
        std::fs::write(Self::DELAY, ms.to_string())
            .map_err(|e| format!("write {}: {e}", Self::DELAY))?;
        Ok(UnpinDelay)
    }

    fn delayed() -> Result<u64, String> {
        let t = std::fs::read_to_string(Self::COUNT)
            .map_err(|e| format!("read {}: {e}", Self::COUNT))?;
        t.trim()
            .parse()
            .map_err(|_| format!("{} is not a number: {t:?}", Self::COUNT))
    }
}

impl Drop for UnpinDelay {
    fn drop(&mut self) {
        let _ = std::fs::write(Self::DELAY, "0");
    }
}

/// An unmap of the ring's range while the ring is being released (out of
/// the pins, not unpinned yet) must not return before the pages are
/// unpinned: iommufd calls `dma_unmap` again while they are, and gives up
/// with a WARN and `EDEADLK` after 100 calls. The knob holds the release
/// in that window for 300 ms, so the unmap surely lands in it.
pub fn hardening_unmap_during_release(env: &Env) -> TResult {
    let b0 = pinned_total()?;
    let mut log = KernelLog::open()?;
    let fx = env.open(&SMALL, OpenPath::Iommufd)?;
    let dev = fx.dev();
    let ram = Ram::map(dev, BASE, 16, 0)?;
    pin_ring_ok(dev, BASE, 8, true)?;
    let knob = UnpinDelay::set(300)?;
    let before = UnpinDelay::delayed()?;
    let unmapped = std::thread::scope(|sc| {
        let release = sc.spawn(|| wr(dev, dma::RING_CTRL, 0));
        // The release is in the window once its unpin has started sleeping.
        while UnpinDelay::delayed()? == before && !release.is_finished() {
            std::thread::sleep(Duration::from_millis(1));
        }
        ensure!(
            UnpinDelay::delayed()? > before,
            "the release ended without its unpin sleeping: the knob did nothing"
        );
        let unmapped = ram.unmap(dev);
        release
            .join()
            .unwrap_or_else(|_| Err("release thread panicked".into()))?;
        Ok::<_, String>(unmapped)
    })?;
    drop(knob);
    unmapped.map_err(|e| format!("unmap during the ring's release: {e}"))?;
    expect_reg(dev, dma::PINNED_PAGES, 0, "after the release")?;
    expect_pinned_total(b0, "after the release")?;
    log.expect_clean("after the unmap during the release")
}

// ---------------------------------------------------------------------------
// 6. INTx is level-triggered

pub fn hardening_intx_level(env: &Env) -> TResult {
    let fx = env.open(&SMALL, OpenPath::Legacy)?;
    let dev = fx.dev();
    let efd = EventFd::new().ctx("eventfd")?;
    dev.set_irq_eventfd(irq::INTX, Some(efd.fd()))
        .ctx("install INTx")?;
    let ring = || dev.w32(B0, bar0::DOORBELL, 1);
    let count = || dev.r32(B0, bar0::IRQ_COUNT);
    dev.w32(B0, bar0::IRQ_ENABLE, bar0::IRQ_DOORBELL)?;
    ring()?;
    expect_fire(&efd, "doorbell")?;
    // Automasked, the cause still pending: unmask asserts the line again.
    dev.unmask_irq(irq::INTX).ctx("unmask")?;
    expect_fire(&efd, "unmask with IRQ_STATUS.DOORBELL pending")?;
    ensure_eq!(count()?, 2, "IRQ_COUNT");
    // A cause raised while masked is delivered at unmask.
    dev.w32(B0, bar0::IRQ_STATUS, bar0::IRQ_DOORBELL)?;
    dev.unmask_irq(irq::INTX).ctx("unmask")?;
    expect_quiet(&efd, "unmask with nothing pending")?;
    dev.mask_irq(irq::INTX).ctx("mask")?;
    ring()?;
    expect_quiet(&efd, "doorbell while masked")?;
    dev.unmask_irq(irq::INTX).ctx("unmask")?;
    expect_fire(&efd, "unmask after a doorbell while masked")?;
    // Clearing COMMAND.INTX_DISABLE with a cause pending.
    dev.w32(B0, bar0::IRQ_STATUS, bar0::IRQ_DOORBELL)?;
    dev.w16(CF, cfg::COMMAND, cfg::COMMAND_INTX_DISABLE)?;
    dev.unmask_irq(irq::INTX).ctx("unmask")?;
    ring()?;
    expect_quiet(&efd, "doorbell with INTX_DISABLE")?;
    dev.w16(CF, cfg::COMMAND, 0)?;
    expect_fire(&efd, "INTX_DISABLE cleared with the doorbell pending")?;
    // Enabling a cause that is already pending.
    dev.w32(B0, bar0::IRQ_STATUS, bar0::IRQ_DOORBELL)?;
    dev.w32(B0, bar0::IRQ_ENABLE, 0)?;
    dev.unmask_irq(irq::INTX).ctx("unmask")?;
    ring()?;
    expect_quiet(&efd, "doorbell not enabled")?;
    dev.w32(B0, bar0::IRQ_ENABLE, bar0::IRQ_DOORBELL)?;
    expect_fire(&efd, "IRQ_ENABLE set with the doorbell pending")?;
    ensure_eq!(count()?, 5, "IRQ_COUNT at the end");
    Ok(())
}

// ---------------------------------------------------------------------------
// 7. The register record is one snapshot

/// Offset of the configuration space in the register record: the record
/// head, then 128 bytes of register words (migration-stream.rst and the
/// module's blob layout).
const RECORD_CONFIG: u64 = 8 + 128;

pub fn hardening_register_record(env: &Env) -> TResult {
    for path in [OpenPath::Legacy, OpenPath::Iommufd] {
        let a = env.open(&SMALL, path)?;
        let c = env.open(&SMALL, path)?;
        let (src, dst) = (a.dev(), c.dev());
        dev_config(src, 0x0002, 0x11)?;
        go(src, &[State::Running, State::Setup, State::PreCopy])?;
        let mut stream = Vec::new();
        drain(src, &mut stream)?;
        set_state(src, State::StopNCopy)?;
        // The first chunk of the register record ends between the command
        // register and the interrupt line.
        let split = RECORD_CONFIG + cfg::INT_LINE - 4;
        ensure!(
            split > RECORD_CONFIG + cfg::COMMAND + 2,
            "split point before the command register"
        );
        src.set_threshold(split).ctx("threshold")?;
        let mut chunk = Vec::new();
        let n = src.get_buffer(&mut chunk).ctx("get buffer")?;
        ensure_eq!(n as u64, split, "first chunk of the register record");
        stream.extend_from_slice(&chunk);
        let before = snapshot(src)?;
        // One config write changes both, between the chunks.
        dev_config(src, 0x0006, 0x22)?;
        let after = snapshot(src)?;
        src.set_threshold(0).ctx("threshold")?;
        drain(src, &mut stream)?;
        set_state(src, State::SaveCompleted)?;
        restore(dst, &stream)?;
        let got = snapshot(dst)?;
        ensure!(
            got == before || got == after,
            "{path}: destination config space is neither the source's before nor after the \
             write: command {:#06x}, interrupt line {:#04x} (before {:#06x}/{:#04x}, after \
             {:#06x}/{:#04x})",
            u16::from_le_bytes([got[4], got[5]]),
            got[0x3c],
            u16::from_le_bytes([before[4], before[5]]),
            before[0x3c],
            u16::from_le_bytes([after[4], after[5]]),
            after[0x3c]
        );
    }
    Ok(())
}

/// Sets the command register and the interrupt line with one config write
/// of `0x04..0x40`.
fn dev_config(dev: &Device, command: u16, line: u8) -> TResult {
    let mut b = snapshot(dev)?[4..0x40].to_vec();
    b[0..2].copy_from_slice(&command.to_le_bytes());
    b[(cfg::INT_LINE - 4) as usize] = line;
    dev.write_region(CF, 4, &b).ctx("config write")
}
