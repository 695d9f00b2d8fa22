// SPDX-License-Identifier: GPL-2.0
//! The operations the fuzzer draws, each with the errnos the documentation
//! lists for it, and the oracle that runs after every step.
//!
//! An operation fails the run (a [`Violation`]) when a call succeeds that
//! must fail, fails with an errno the documentation does not list for it,
//! or leaves the device in a state the model does not expect.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::RngExt;
use vfio_mig::abi::migration::{
    BITMAP_OFFSET as BITMAP_OFF, DATA_LEN, DATA_OFFSET, INFO_SIZE, REGION_SIZE as MIG_SIZE,
};
use vfio_mig::abi::{bar0, config, region};
use vfio_mig::sample::{self, register_name};
use vfio_mig::uapi::vfio;
use vfio_mig::{Device, DeviceState as State, EventFd, Field, GuestMemory, Mdev, OpenPath, Parent};

use crate::pick::{self, chance, one, Rng};
use crate::slot::{Kind, Map, Open, Slot, Violation};

const MIG: u32 = region::MIGRATION;

const EINVAL: i32 = libc::EINVAL;
const EBUSY: i32 = libc::EBUSY;
const ENOTTY: i32 = libc::ENOTTY;
const ENOSPC: i32 = libc::ENOSPC;
const PAGE: u64 = 4096;
/// Longest DMA command.
const DMA_MAX_LEN: u32 = 64 << 20;
/// Where a device's guest RAM windows start, and how far apart they are.
const WINDOWS: u64 = 8;
const WINDOW_BASE: u64 = 0x1000_0000;
const WINDOW_STRIDE: u64 = 0x1000_0000;

/// The transition table of migration-abi.rst (besides writing the current
/// state again).
fn successors(s: State) -> &'static [State] {
    use State::*;
    match s {
        None => &[Running, Resume],
        Running => &[Setup, Resume],
        Setup => &[PreCopy, StopNCopy, Failed, Cancelled],
        PreCopy => &[StopNCopy, Failed, Cancelled],
        StopNCopy => &[SaveCompleted, Failed, Cancelled],
        SaveCompleted => &[Running, Failed, Cancelled],
        Resume => &[ResumeCompleted, Failed, Cancelled],
        ResumeCompleted => &[Running, Failed],
        Failed | Cancelled => &[Running, None, Setup, Resume],
    }
}

fn allowed_transition(from: State, to: State) -> bool {
    from == to || successors(from).contains(&to)
}

/// What a call may answer: success, or one of these errnos.
fn allow<T>(r: vfio_mig::Result<T>, errnos: &[i32], what: &str) -> Result<Option<T>, Violation> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(e) => match e.errno() {
            Some(n) if n != 0 && errnos.contains(&n) => Ok(None),
            _ => Err(format!("{what}: {e} (allowed: success or {errnos:?})")),
        },
    }
}

/// The fuzzer: its random source, its mdevs and what it knows.
pub struct Fuzz {
    pub rng: Rng,
    pub slots: Vec<Slot>,
    parent: Parent,
    /// Config space of a fresh device, per kind (taken at first open).
    fresh: [Option<Vec<u8>>; 2],
    /// Streams saved by `migrate`, for restores into other devices.
    streams: VecDeque<(Kind, Vec<u8>)>,
    /// Pinned pages of other users of the module, at start.
    pinned_base: u64,
    /// Per operation: calls that succeeded, calls refused as documented,
    /// time spent (checks included).
    pub stats: BTreeMap<&'static str, OpStats>,
    /// The last operations, for the report.
    pub history: VecDeque<String>,
}

/// What the report says of one operation.
#[derive(Default)]
pub struct OpStats {
    pub succeeded: u64,
    pub refused: u64,
    pub time: Duration,
}

/// An operation on the mdev of a slot.
type Op = fn(&mut Fuzz, usize) -> Result<(), Violation>;

/// The operations and their weights.
pub const OPS: &[(&str, u32, Op)] = &[
    ("region read", 10, Fuzz::region_read),
    ("region write", 10, Fuzz::region_write),
    ("bar0 register", 10, Fuzz::bar0_register),
    ("dma command", 8, Fuzz::dma_command),
    ("ring", 4, Fuzz::ring),
    ("writer", 3, Fuzz::writer),
    ("migration field", 8, Fuzz::migration_field),
    ("dirty query", 3, Fuzz::dirty_query),
    ("state", 8, Fuzz::set_state),
    ("migrate", 2, Fuzz::migrate),
    ("restore saved stream", 1, Fuzz::restore_saved),
    ("config", 4, Fuzz::config),
    ("set irqs", 4, Fuzz::set_irqs),
    ("map", 3, Fuzz::map),
    ("unmap", 3, Fuzz::unmap),
    ("reset", 2, Fuzz::reset),
    ("reopen", 2, Fuzz::reopen),
    ("recreate mdev", 1, Fuzz::recreate),
];

impl Fuzz {
    /// Creates `n` mdevs of random kinds.
    pub fn new(rng: Rng, parent: Parent, n: usize) -> Result<Self, Violation> {
        let pinned_base =
            sample::pinned_pages_total().map_err(|e| format!("read the pinned-page count: {e}"))?;
        let mut f = Fuzz {
            rng,
            slots: Vec::new(),
            parent,
            fresh: [None, None],
            streams: VecDeque::new(),
            pinned_base,
            stats: BTreeMap::new(),
            history: VecDeque::new(),
        };
        for _ in 0..n {
            let kind = f.random_kind();
            let mdev = f
                .create(kind)?
                .ok_or_else(|| format!("no room in the pool for {n} mdevs"))?;
            f.slots.push(Slot {
                kind,
                open: None,
                mdev,
            });
        }
        Ok(f)
    }

    fn random_kind(&mut self) -> Kind {
        if chance(&mut self.rng, 1, 3) {
            Kind::Large
        } else {
            Kind::Small
        }
    }

    fn create(&mut self, kind: Kind) -> Result<Option<Mdev>, Violation> {
        let ty = self
            .parent
            .mdev_type(&format!("{}-{}", self.parent.name(), kind.suffix()));
        let uuid = vfio_mig::sysfs::random_uuid().map_err(|e| e.to_string())?;
        allow(
            Mdev::create(&ty, &uuid),
            &[ENOSPC],
            &format!("create a {} mdev", kind.suffix()),
        )
    }

    fn note(&mut self, what: String) {
        if self.history.len() == 24 {
            self.history.pop_front();
        }
        self.history.push_back(what);
    }

    fn count(&mut self, op: &'static str, ok: bool) {
        let e = self.stats.entry(op).or_default();
        if ok {
            e.succeeded += 1;
        } else {
            e.refused += 1;
        }
    }

    /// Runs one random operation on a random mdev, then the oracle.
    pub fn step(&mut self) -> Result<(), Violation> {
        let weights: Vec<u32> = OPS.iter().map(|o| o.1).collect();
        let (name, _, op) = OPS[pick::weighted(&mut self.rng, &weights)];
        let i = self.rng.random_range(0..self.slots.len());
        self.note(format!("{name} on mdev {i}"));
        let start = Instant::now();
        let r = op(self, i)
            .map_err(|e| format!("{name} on mdev {i}: {e}"))
            .and_then(|()| self.check_invariants());
        self.stats.entry(name).or_default().time += start.elapsed();
        r
    }

    /// After every step: every open device is in the state the model
    /// says, and the devices' pinned pages add up to the module's count.
    pub fn check_invariants(&mut self) -> Result<(), Violation> {
        let mut pinned = 0;
        for (i, s) in self.slots.iter().enumerate() {
            if let Some(o) = &s.open {
                o.check_state().map_err(|e| format!("mdev {i}: {e}"))?;
                pinned += o.pinned()?;
            }
        }
        let total = sample::pinned_pages_total().map_err(|e| e.to_string())?;
        if total != self.pinned_base + pinned {
            return Err(format!(
                "debugfs counts {total} pinned pages, the devices' PINNED_PAGES add up to {pinned} \
                 (and {} before the run)",
                self.pinned_base
            ));
        }
        Ok(())
    }

    /// Every 64 steps: the areas of devices that did not use them read
    /// zero.
    pub fn check_areas(&self) -> Result<(), Violation> {
        for (i, s) in self.slots.iter().enumerate() {
            if let Some(o) = &s.open {
                o.check_areas().map_err(|e| format!("mdev {i}: {e}"))?;
            }
        }
        Ok(())
    }

    /// Closes every device and removes every mdev; nothing stays pinned.
    pub fn finish(&mut self) -> Result<(), Violation> {
        for s in self.slots.drain(..) {
            drop(s.open);
            s.mdev
                .remove()
                .map_err(|e| format!("remove an mdev: {e}"))?;
        }
        let total = sample::pinned_pages_total().map_err(|e| e.to_string())?;
        if total != self.pinned_base {
            return Err(format!(
                "{total} pages pinned after closing everything, {} before",
                self.pinned_base
            ));
        }
        Ok(())
    }

    // -----------------------------------------------------------------------
    // Opening and the power-on check

    /// The open device of slot `i`, opened through a random path if it is
    /// closed (and checked to be at power-on).
    fn opened(&mut self, i: usize) -> Result<&mut Open, Violation> {
        if self.slots[i].open.is_none() {
            let path = self.random_path();
            self.open_checked(i, path)?;
        }
        self.slots[i]
            .open
            .as_mut()
            .ok_or_else(|| format!("mdev {i} did not open"))
    }

    fn random_path(&mut self) -> OpenPath {
        if chance(&mut self.rng, 1, 2) {
            OpenPath::Legacy
        } else {
            OpenPath::Iommufd
        }
    }

    fn open_checked(&mut self, i: usize, path: OpenPath) -> Result<(), Violation> {
        self.note(format!("open mdev {i} ({path})"));
        let kind = self.slots[i].kind;
        let open = self.slots[i].open(path)?;
        let fresh = &mut self.fresh[kind as usize];
        if fresh.is_none() {
            let mut c = vec![0u8; config::SIZE];
            open.dev
                .read_region(region::CONFIG, 0, &mut c)
                .map_err(|e| format!("read config space: {e}"))?;
            *fresh = Some(c);
        }
        let config = fresh.as_deref().unwrap_or_default();
        open.check_power_on(kind, config)
            .map_err(|e| format!("after open ({path}): {e}"))
    }

    fn check_power_on(&self, i: usize, what: &str) -> Result<(), Violation> {
        let s = &self.slots[i];
        let config = self.fresh[s.kind as usize].as_deref().unwrap_or_default();
        match &s.open {
            Some(o) => o
                .check_power_on(s.kind, config)
                .map_err(|e| format!("after {what}: {e}")),
            None => Ok(()),
        }
    }

    // -----------------------------------------------------------------------
    // Region accesses

    /// A region index: mostly the implemented ones.
    fn region_index(&mut self) -> u32 {
        if chance(&mut self.rng, 5, 6) {
            one(&mut self.rng, &[0, 2, 7, 9])
        } else {
            one(
                &mut self.rng,
                &[1, 3, 4, 5, 6, 8, 10, 11, 0xff, u32::MAX >> 8],
            )
        }
    }

    /// An offset inside region `index`, biased to its edges and fields.
    fn region_offset_in(&mut self, index: u32, kind: Kind) -> u64 {
        let mem = kind.mem_size();
        let fields: Vec<u64> = Field::ALL.iter().map(|f| f.offset()).collect();
        let marks: &[u64] = match index {
            0 => &[0, 0x10, 0x40, 0x54, 0x70, 0x84, 0x90, 0xb0, 0x1000],
            2 => &[0, PAGE, mem - PAGE, mem],
            7 => &[0, 4, 0x10, 0x3c, 0x40, 0x4e, 0x100],
            _ if chance(&mut self.rng, 1, 2) => &fields,
            _ => &[INFO_SIZE, DATA_OFFSET, BITMAP_OFF, MIG_SIZE],
        };
        pick::near(&mut self.rng, marks, MIG_SIZE) & ((1 << 40) - 1)
    }

    fn region_read(&mut self, i: usize) -> Result<(), Violation> {
        let kind = self.slots[i].kind;
        let index = self.region_index();
        let off = self.region_offset_in(index, kind);
        let len = pick::width(&mut self.rng);
        let o = self.opened(i)?;
        let mut buf = vec![0u8; len];
        let what = format!("read {len} bytes at region {index} offset {off:#x}");
        let r = o.dev.pread(region::offset(index) + off, &mut buf);
        let done = allow(r, &[EINVAL], &what)?;
        if let Some(n) = done {
            if n != len {
                return Err(format!("{what}: short read of {n} bytes"));
            }
            // Reading data.size or dirty_pfns.copied stages a chunk or a
            // bitmap.
            if index == MIG && ((off, len) == (44, 8) || (off, len) == (68, 8)) {
                o.areas_used = true;
            }
        }
        self.count("region read", done.is_some());
        Ok(())
    }

    fn region_write(&mut self, i: usize) -> Result<(), Violation> {
        let kind = self.slots[i].kind;
        let index = self.region_index();
        let off = self.region_offset_in(index, kind);
        let len = pick::width(&mut self.rng);
        let mut data = pick::bytes(&mut self.rng, len);
        if index == MIG && off == 0 && len == 4 && chance(&mut self.rng, 3, 4) {
            data.copy_from_slice(&self.rng.random_range(0u32..12).to_le_bytes());
        }
        let o = self.opened(i)?;
        let what = format!("write {len} bytes at region {index} offset {off:#x}");
        let r = o.dev.pwrite(region::offset(index) + off, &data);
        let done = allow(r, &[EINVAL, EBUSY], &what)?;
        if let Some(n) = done {
            if n != len {
                return Err(format!("{what}: short write of {n} bytes"));
            }
            if index == MIG {
                if off >= DATA_OFFSET {
                    o.areas_used = true;
                }
                if (off, len) == (0, 4) {
                    let v = u32::from_le_bytes(data[..4].try_into().unwrap_or_default());
                    o.state = State::from_raw(v)
                        .ok_or_else(|| format!("{what}: device_state {v} accepted"))?;
                }
            }
        }
        self.count("region write", done.is_some());
        Ok(())
    }

    // -----------------------------------------------------------------------
    // BAR0: registers, DMA, ring, writer

    /// An IOVA: mostly inside or at the edge of a mapping.
    fn iova(&mut self, i: usize, aligned: bool) -> u64 {
        let maps: Vec<(u64, u64)> = self.slots[i]
            .open
            .as_ref()
            .map(|o| o.maps.iter().map(|m| (m.iova, m.pages)).collect())
            .unwrap_or_default();
        let rng = &mut self.rng;
        let iova = if !maps.is_empty() && chance(rng, 4, 5) {
            let (base, pages) = one(rng, &maps);
            let len = pages * PAGE;
            base + pick::near(rng, &[0, PAGE, len - PAGE, len - 8, len], len).min(len + PAGE)
        } else {
            match pick::weighted(rng, &[3, 1, 1]) {
                0 => WINDOW_BASE + rng.random_range(0..WINDOWS) * WINDOW_STRIDE,
                1 => one(rng, &[0, 0xffff_f000, 1 << 32, u64::MAX - 4095, u64::MAX]),
                _ => rng.random(),
            }
        };
        if aligned && chance(&mut self.rng, 7, 8) {
            iova & !(PAGE - 1)
        } else {
            iova
        }
    }

    /// Writes consecutive BAR0 registers from `first` with one access.
    fn bar0_write(
        &mut self,
        i: usize,
        op: &'static str,
        first: u32,
        words: &[u32],
    ) -> Result<(), Violation> {
        let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
        self.note(format!("  {} <- {words:x?}", register_name(first)));
        let o = self.opened(i)?;
        let what = format!("write {words:x?} from {}", register_name(first));
        let done = allow(
            o.dev.write_region(region::BAR0, first.into(), &bytes),
            &[EBUSY],
            &what,
        )?;
        self.count(op, done.is_some());
        Ok(())
    }

    fn bar0_register(&mut self, i: usize) -> Result<(), Violation> {
        const REGS: &[u32] = &[
            bar0::SCRATCH,
            bar0::IRQ_STATUS,
            bar0::IRQ_ENABLE,
            bar0::DOORBELL,
            bar0::DMA_DEV_OFF,
            bar0::DMA_LEN,
            bar0::DMA_CMD,
            bar0::DMA_CTRL,
            bar0::RING_IOVA_LO,
            bar0::RING_PAGES,
            bar0::RING_CTRL,
            bar0::BG_PAGES,
            bar0::BG_RATE,
            bar0::BG_CTRL,
            bar0::PINNED_PAGES,
        ];
        let off = one(&mut self.rng, REGS);
        let v = match off {
            bar0::RING_IOVA_LO => self.iova(i, true) as u32,
            bar0::BG_RATE => self.rng.random_range(1..3000),
            _ => pick::value32(&mut self.rng),
        };
        self.bar0_write(i, "bar0 register", off, &[v])
    }

    fn dma_command(&mut self, i: usize) -> Result<(), Violation> {
        let mem = self.slots[i].kind.mem_size();
        let iova = self.iova(i, false);
        let rng = &mut self.rng;
        let len = match pick::weighted(rng, &[6, 3, 1, 1]) {
            0 => rng.random_range(1..=256),
            1 => rng.random_range(1..=3 * PAGE as u32),
            2 => one(rng, &[0, DMA_MAX_LEN, DMA_MAX_LEN + 1]),
            _ => rng.random(),
        };
        let dev_off = pick::near(rng, &[0, mem - u64::from(len.min(mem as u32)), mem], mem) as u32;
        let cmd = if chance(rng, 9, 10) {
            rng.random_range(1..=3)
        } else {
            pick::value32(rng)
        };
        let pattern = rng.random();
        let words = [dev_off, iova as u32, (iova >> 32) as u32, len, pattern, cmd];
        self.bar0_write(i, "dma command", bar0::DMA_DEV_OFF, &words)
    }

    fn ring(&mut self, i: usize) -> Result<(), Violation> {
        if chance(&mut self.rng, 2, 5) {
            return self.bar0_write(i, "ring", bar0::RING_CTRL, &[0]);
        }
        let iova = self.iova(i, true);
        let rng = &mut self.rng;
        let pages = match pick::weighted(rng, &[6, 1]) {
            0 => rng.random_range(1..=8),
            _ => one(rng, &[0, 512, 513, u32::MAX]),
        };
        let ctrl = one(rng, &[1, 3, 3, 2, 0]);
        let words = [iova as u32, (iova >> 32) as u32, pages, ctrl];
        self.bar0_write(i, "ring", bar0::RING_IOVA_LO, &words)
    }

    fn writer(&mut self, i: usize) -> Result<(), Violation> {
        if chance(&mut self.rng, 1, 3) {
            return self.bar0_write(i, "writer", bar0::BG_CTRL, &[0]);
        }
        let iova = self.iova(i, true);
        let rng = &mut self.rng;
        let pages = if chance(rng, 5, 6) {
            rng.random_range(1..=16)
        } else {
            pick::value32(rng)
        };
        let rate = if chance(rng, 7, 8) {
            rng.random_range(1..=2000)
        } else {
            pick::value32(rng)
        };
        let words = [iova as u32, (iova >> 32) as u32, pages, rate, 1];
        self.bar0_write(i, "writer", bar0::BG_IOVA_LO, &words)
    }

    // -----------------------------------------------------------------------
    // The migration region

    fn migration_field(&mut self, i: usize) -> Result<(), Violation> {
        let f = one(&mut self.rng, &Field::ALL);
        let write = f.writable() && chance(&mut self.rng, 1, 2);
        let v = match f {
            Field::DeviceState => self.rng.random_range(0..11),
            Field::DataOffset => pick::near(&mut self.rng, &[DATA_OFFSET, BITMAP_OFF], MIG_SIZE),
            Field::DataSize => self.rng.random_range(0..=2 * PAGE),
            Field::DirtyStartAddr => self.iova(i, true),
            _ => pick::value64(&mut self.rng),
        };
        let o = self.opened(i)?;
        let ok = if write {
            let what = format!("write {f} = {v:#x} in {}", o.state);
            let done = allow(o.dev.write_field(f, v), &[EINVAL], &what)?.is_some();
            if done && f == Field::DeviceState {
                let to = State::from_raw(v as u32)
                    .ok_or_else(|| format!("{what}: accepted a value that is no state"))?;
                o.state = to;
            }
            done
        } else {
            let what = format!("read {f} in {}", o.state);
            let done = allow(o.dev.read_field(f), &[EINVAL], &what)?.is_some();
            if done && matches!(f, Field::DataSize | Field::DirtyCopied) {
                o.areas_used = true;
            }
            done
        };
        self.count("migration field", ok);
        Ok(())
    }

    fn dirty_query(&mut self, i: usize) -> Result<(), Violation> {
        if chance(&mut self.rng, 1, 2) {
            self.bring(i, &[State::Setup, State::PreCopy, State::StopNCopy])?;
        }
        let start = self.iova(i, true);
        let total = match pick::weighted(&mut self.rng, &[4, 1, 1]) {
            0 => self.rng.random_range(0..=2048),
            1 => one(&mut self.rng, &[0x20_0000, 0x20_0001, 1 << 40]),
            _ => self.rng.random(),
        };
        let o = self.opened(i)?;
        let what = format!("dirty query {start:#x} + {total} pages in {}", o.state);
        let logging = matches!(o.state, State::Setup | State::PreCopy | State::StopNCopy);
        let r = allow(o.dev.dirty_bitmap(start, total), &[EINVAL], &what)?;
        if logging
            && start.is_multiple_of(PAGE)
            && total
                .checked_mul(PAGE)
                .and_then(|b| start.checked_add(b))
                .is_some()
            && r.is_none()
        {
            return Err(format!(
                "{what}: refused, but the state and range are valid"
            ));
        }
        if r.is_some() {
            o.areas_used = true;
        }
        self.count("dirty query", r.is_some());
        Ok(())
    }

    /// A transition: allowed pairs of the table succeed (but RESUME ->
    /// RESUME_COMPLETED, which needs a complete stream), others fail with
    /// EINVAL and change nothing.
    fn set_state(&mut self, i: usize) -> Result<(), Violation> {
        let from = self.opened(i)?.state;
        let to = if chance(&mut self.rng, 3, 4) {
            one(&mut self.rng, successors(from))
        } else {
            one(&mut self.rng, &State::ALL)
        };
        let o = self.opened(i)?;
        let what = format!("{from} -> {to}");
        let listed = allowed_transition(from, to);
        let ok = match o.dev.set_state(to) {
            Ok(()) if listed => true,
            Ok(()) => return Err(format!("{what}: accepted, but not in the table")),
            Err(e) if listed && (from, to) != (State::Resume, State::ResumeCompleted) => {
                return Err(format!("{what}: {e}, but the table allows it"))
            }
            Err(e) => {
                allow::<()>(Err(e), &[EINVAL], &what)?;
                false
            }
        };
        if ok {
            o.state = to;
        }
        self.count("state", ok);
        Ok(())
    }

    /// Moves slot `i` along valid transitions until it is in one of
    /// `targets` (each step must succeed).
    fn bring(&mut self, i: usize, targets: &[State]) -> Result<(), Violation> {
        let o = self.opened(i)?;
        for _ in 0..4 {
            if targets.contains(&o.state) {
                return Ok(());
            }
            let next = match o.state {
                State::Running if targets.contains(&State::Setup) => State::Setup,
                State::Setup | State::PreCopy | State::StopNCopy | State::Resume => {
                    State::Cancelled
                }
                State::ResumeCompleted => State::Failed,
                _ => State::Running,
            };
            o.dev
                .set_state(next)
                .map_err(|e| format!("{} -> {next}: {e}", o.state))?;
            o.state = next;
        }
        Err(format!("no path to {targets:?}"))
    }

    /// Reads chunks until get buffer returns 0 (at most `max` of them).
    fn drain(dev: &Device, stream: &mut Vec<u8>, max: usize) -> Result<(), Violation> {
        let mut buf = Vec::new();
        for _ in 0..max {
            let n = dev
                .get_buffer(&mut buf)
                .map_err(|e| format!("get buffer: {e}"))?;
            if n == 0 {
                break;
            }
            stream.extend_from_slice(&buf);
        }
        Ok(())
    }

    /// A whole save of one device and its restore into another of the
    /// same kind, with random chunking and sometimes a damaged stream: a
    /// sound stream restores the source's memory bit for bit, a damaged
    /// one is refused.
    fn migrate(&mut self, src: usize) -> Result<(), Violation> {
        let kind = self.slots[src].kind;
        let Some(dst) = (0..self.slots.len()).find(|&d| d != src && self.slots[d].kind == kind)
        else {
            return Ok(());
        };
        self.bring(src, &[State::Running])?;
        // Chunks of any size, but not more than about 256 of them: the
        // host tests cover every chunking, the guest pays per syscall.
        let floor = kind.mem_size() / 256;
        let threshold = one(&mut self.rng, &[0, 100, 4112, 5000, 1 << 16, DATA_LEN + 1]);
        let threshold = if threshold == 0 {
            0
        } else {
            threshold.max(floor)
        };
        let rounds = self.rng.random_range(0..4);
        let mem = kind.mem_size();
        let writes: Vec<(u64, Vec<u8>)> = (0..rounds)
            .map(|_| {
                let at = self.rng.random_range(0..mem - 64);
                (at, pick::bytes(&mut self.rng, 64))
            })
            .collect();
        let o = self.opened(src)?;
        let dev = &o.dev;
        let mut stream = Vec::new();
        dev.set_threshold(threshold).map_err(|e| e.to_string())?;
        for s in [State::Setup, State::PreCopy] {
            dev.set_state(s).map_err(|e| e.to_string())?;
            o.state = s;
        }
        o.areas_used = true;
        for (at, b) in &writes {
            Self::drain(dev, &mut stream, 3)?;
            dev.write_region(region::BAR2, *at, b)
                .map_err(|e| format!("BAR2 write during pre-copy: {e}"))?;
        }
        Self::drain(dev, &mut stream, usize::MAX)?;
        dev.set_state(State::StopNCopy).map_err(|e| e.to_string())?;
        o.state = State::StopNCopy;
        Self::drain(dev, &mut stream, usize::MAX)?;
        let pending = dev.pending().map_err(|e| e.to_string())?;
        if pending.total() != 0 {
            return Err(format!("stop-and-copy drained, {pending} still pending"));
        }
        dev.set_state(State::SaveCompleted)
            .map_err(|e| e.to_string())?;
        o.state = State::SaveCompleted;
        let mut memory = vec![0u8; mem as usize];
        dev.read_region(region::BAR2, 0, &mut memory)
            .map_err(|e| e.to_string())?;
        if chance(&mut self.rng, 1, 2) {
            self.bring(src, &[State::Running])?;
        }
        self.note(format!(
            "  saved {} bytes (threshold {threshold})",
            stream.len()
        ));
        if self.streams.len() == 4 {
            self.streams.pop_front();
        }
        self.streams.push_back((kind, stream.clone()));
        self.restore("migrate", dst, kind, stream, Some(&memory))
    }

    fn restore_saved(&mut self, i: usize) -> Result<(), Violation> {
        if self.streams.is_empty() {
            return Ok(());
        }
        let k = self.rng.random_range(0..self.streams.len());
        let (kind, stream) = self.streams[k].clone();
        self.restore("restore saved stream", i, kind, stream, None)
    }

    /// Restores `stream` (of a `kind` device) into slot `i`, maybe damaged,
    /// counted as operation `op`. It must succeed exactly when the stream is
    /// whole and for this kind; then device memory is `memory`, if given.
    fn restore(
        &mut self,
        op: &'static str,
        i: usize,
        kind: Kind,
        mut stream: Vec<u8>,
        memory: Option<&[u8]>,
    ) -> Result<(), Violation> {
        let rng = &mut self.rng;
        let damaged = chance(rng, 1, 3) && !stream.is_empty();
        if damaged {
            match rng.random_range(0..3) {
                0 => {
                    let at = rng.random_range(0..stream.len());
                    stream[at] ^= 1 << rng.random_range(0..8);
                }
                1 => stream.truncate(rng.random_range(0..stream.len())),
                _ => {
                    let n = rng.random_range(1..64);
                    stream.extend(pick::bytes(rng, n));
                }
            }
        }
        let sound = !damaged && kind == self.slots[i].kind;
        self.note(format!(
            "  restore {} bytes into mdev {i} (damaged: {damaged}, sound: {sound})",
            stream.len()
        ));
        self.bring(
            i,
            &[State::None, State::Running, State::Failed, State::Cancelled],
        )?;
        let chunk_max =
            one(&mut self.rng, &[4112, 1 << 16, DATA_LEN as usize]).max(stream.len() / 128);
        let mut chunks = Vec::new();
        let mut pos = 0;
        while pos < stream.len() {
            let n = self.rng.random_range(1..=chunk_max).min(stream.len() - pos);
            let at = DATA_OFFSET + self.rng.random_range(0..=DATA_LEN - n as u64);
            chunks.push((pos..pos + n, at));
            pos += n;
        }
        let o = self.opened(i)?;
        o.dev
            .set_state(State::Resume)
            .map_err(|e| format!("-> RESUME: {e}"))?;
        o.state = State::Resume;
        o.areas_used = true;
        let mut refused = false;
        for (range, at) in chunks {
            let what = format!("set buffer of stream bytes {range:?} at {at:#x}");
            if allow(o.dev.set_buffer(&stream[range], at), &[EINVAL], &what)?.is_none() {
                refused = true;
                break;
            }
        }
        let r = o.dev.set_state(State::ResumeCompleted);
        let committed = allow(r, &[EINVAL], "-> RESUME_COMPLETED")?.is_some();
        if committed {
            o.state = State::ResumeCompleted;
        }
        if committed && (refused || !sound) {
            return Err(format!(
                "a {} stream was committed (a set buffer refused it: {refused})",
                if damaged { "damaged" } else { "foreign" }
            ));
        }
        if sound && !committed {
            return Err("a sound stream was refused".into());
        }
        if let (true, Some(want)) = (committed, memory) {
            let mut got = vec![0u8; want.len()];
            o.dev
                .read_region(region::BAR2, 0, &mut got)
                .map_err(|e| e.to_string())?;
            if let Some(b) = (0..got.len()).find(|&b| got[b] != want[b]) {
                return Err(format!(
                    "restored device memory byte {b:#x} is {:#04x}, the source's {:#04x}",
                    got[b], want[b]
                ));
            }
        }
        if !committed {
            o.dev
                .set_state(State::Failed)
                .map_err(|e| format!("RESUME -> FAILED: {e}"))?;
            o.state = State::Failed;
        }
        self.count(op, committed);
        Ok(())
    }

    // -----------------------------------------------------------------------
    // Config space and interrupts

    fn config(&mut self, i: usize) -> Result<(), Violation> {
        let off = pick::near(
            &mut self.rng,
            &[0, 4, 0x10, 0x18, 0x3c, 0x40, 0x4c, 0x100],
            0x100,
        ) & 0xffff_ffff;
        let len = pick::width(&mut self.rng);
        let data = pick::bytes(&mut self.rng, len);
        let o = self.opened(i)?;
        let what = format!("config write of {len} bytes at {off:#x}");
        let fits = len > 0 && off + len as u64 <= 0x100;
        let errnos: &[i32] = if fits { &[] } else { &[EINVAL] };
        let done = allow(
            o.dev.write_region(region::CONFIG, off, &data),
            errnos,
            &what,
        )?;
        self.count("config", done.is_some());
        Ok(())
    }

    fn set_irqs(&mut self, i: usize) -> Result<(), Violation> {
        const NONE: u32 = vfio::VFIO_IRQ_SET_DATA_NONE;
        const BOOL: u32 = vfio::VFIO_IRQ_SET_DATA_BOOL;
        const MASK: u32 = vfio::VFIO_IRQ_SET_ACTION_MASK;
        const UNMASK: u32 = vfio::VFIO_IRQ_SET_ACTION_UNMASK;
        let index = self.rng.random_range(0..2u32);
        let choice = self.rng.random_range(0..8);
        let flag = self.rng.random_range(0..2u8);
        let low_flags = chance(&mut self.rng, 2, 3);
        let raw = (
            pick::value32(&mut self.rng),
            self.rng.random_range(0..6u32),
            self.rng.random_range(0..3u32),
            self.rng.random_range(0..3u32),
            {
                let n = self.rng.random_range(0..8);
                pick::bytes(&mut self.rng, n)
            },
            if chance(&mut self.rng, 1, 3) {
                Some(pick::value32(&mut self.rng))
            } else {
                None
            },
        );
        let o = self.opened(i)?;
        let dev = &o.dev;
        let (what, r, errnos): (String, vfio_mig::Result<()>, &[i32]) = match choice {
            0 => {
                let efd = EventFd::new().map_err(|e| e.to_string())?;
                let r = dev.set_irq_eventfd(index, Some(efd.fd()));
                if o.eventfds.len() == 4 {
                    o.eventfds.remove(0);
                }
                o.eventfds.push(efd);
                (format!("install an eventfd on index {index}"), r, &[])
            }
            1 => (
                format!("remove the eventfd of {index}"),
                dev.set_irq_eventfd(index, None),
                &[],
            ),
            2 => (format!("disable {index}"), dev.disable_irq(index), &[]),
            3 => (
                format!("loopback {index}"),
                dev.trigger_irq(index, 0, 1),
                &[],
            ),
            4 => (
                format!("loopback bool {flag}"),
                dev.trigger_irq_bool(index, 0, &[flag != 0]),
                &[],
            ),
            5 | 6 => {
                let action = if choice == 5 { MASK } else { UNMASK };
                let data = if flag != 0 { BOOL } else { NONE };
                let r = dev.set_irqs_raw(
                    None,
                    data | action,
                    index,
                    0,
                    1,
                    if flag != 0 { &[1] } else { &[] },
                );
                let errnos: &[i32] = if index == 1 { &[ENOTTY] } else { &[] };
                (format!("mask/unmask {action:#x} on {index}"), r, errnos)
            }
            _ => {
                let (flags, idx, start, count, data, argsz) = raw;
                // No DATA_EVENTFD: random bytes would name random fds.
                let flags = flags & !vfio::VFIO_IRQ_SET_DATA_EVENTFD;
                let flags = if low_flags { flags & 0x3f } else { flags };
                let r = dev.set_irqs_raw(argsz.map(|a| a % 64), flags, idx, start, count, &data);
                (format!("raw SET_IRQS flags {flags:#x} index {idx} start {start} count {count} data {data:?} argsz {argsz:?}"), r, &[EINVAL, ENOTTY])
            }
        };
        let done = allow(r, errnos, &what)?;
        self.count("set irqs", done.is_some());
        Ok(())
    }

    // -----------------------------------------------------------------------
    // DMA mappings

    fn map(&mut self, i: usize) -> Result<(), Violation> {
        let w = self.rng.random_range(0..WINDOWS);
        let pages = self.rng.random_range(1..=32);
        let iova = WINDOW_BASE + w * WINDOW_STRIDE;
        let o = self.opened(i)?;
        if o.maps.iter().any(|m| m.iova == iova) {
            return Ok(());
        }
        let mem = Arc::new(
            GuestMemory::new("fuzz-ram", (pages * PAGE) as usize).map_err(|e| e.to_string())?,
        );
        o.dev
            .map_dma(iova, &mem)
            .map_err(|e| format!("map {pages} pages at {iova:#x}: {e}"))?;
        o.maps.push(Map { iova, pages });
        self.count("map", true);
        Ok(())
    }

    /// Unmaps a mapping: always on iommufd, on the legacy container only
    /// when nothing is pinned (type1 trips a known upstream lockdep report
    /// when pinned pages are unmapped). When the pinned ring was in the
    /// range, it is released with `ECANCELED`.
    fn unmap(&mut self, i: usize) -> Result<(), Violation> {
        let pick = self.rng.random::<u64>();
        let o = self.opened(i)?;
        if o.maps.is_empty() {
            return Ok(());
        }
        let legacy = o.dev.open_path() == OpenPath::Legacy;
        let pinned = o.pinned()?;
        if legacy && pinned > 0 {
            return Ok(());
        }
        let k = (pick % o.maps.len() as u64) as usize;
        let m = o.maps.remove(k);
        let rd = |off: u32| {
            o.dev
                .read32(region::BAR0, off.into())
                .map_err(|e| e.to_string())
        };
        let ring = (u64::from(rd(bar0::RING_IOVA_HI)?) << 32) | u64::from(rd(bar0::RING_IOVA_LO)?);
        let ring_len = u64::from(rd(bar0::RING_PAGES)?) * PAGE;
        let hit =
            pinned > 0 && ring < m.iova + m.pages * PAGE && m.iova < ring.saturating_add(ring_len);
        o.dev.unmap_dma(m.iova).map_err(|e| {
            format!(
                "unmap {:#x} ({} pages, {pinned} pinned): {e}",
                m.iova, m.pages
            )
        })?;
        if hit {
            let (ctrl, err, now) = (rd(bar0::RING_CTRL)?, rd(bar0::RING_ERROR)?, o.pinned()?);
            if (ctrl, err, now) != (0, libc::ECANCELED as u32, 0) {
                return Err(format!(
                    "unmapped the pinned ring's range: RING_CTRL {ctrl:#x}, RING_ERROR {err}, \
                     PINNED_PAGES {now}; want 0, ECANCELED, 0"
                ));
            }
        }
        self.count("unmap", true);
        Ok(())
    }

    // -----------------------------------------------------------------------
    // Reset, close, mdev lifecycle

    fn reset(&mut self, i: usize) -> Result<(), Violation> {
        let o = self.opened(i)?;
        o.dev
            .reset()
            .map_err(|e| format!("VFIO_DEVICE_RESET: {e}"))?;
        o.state = State::None;
        o.areas_used = false;
        self.count("reset", true);
        self.check_power_on(i, "reset")
    }

    fn reopen(&mut self, i: usize) -> Result<(), Violation> {
        self.slots[i].open = None;
        let path = self.random_path();
        self.open_checked(i, path)?;
        self.count("reopen", true);
        Ok(())
    }

    /// Removes the mdev and creates one of a random kind in its place: it
    /// fits (the pool had room for the removed one), or the pool says it
    /// has no room for that kind and the removed kind is created again.
    fn recreate(&mut self, i: usize) -> Result<(), Violation> {
        let kind = self.random_kind();
        self.slots[i].open = None;
        let old = self.slots[i].kind;
        let uuid = self.slots[i].mdev.uuid().to_string();
        vfio_mig::sysfs::remove_mdev(&uuid).map_err(|e| format!("remove the mdev: {e}"))?;
        self.note(format!("  new {} mdev", kind.suffix()));
        let (kind, mdev) = match self.create(kind)? {
            Some(m) => (kind, m),
            None => {
                let ty = format!("{}-{}", self.parent.name(), kind.suffix());
                let left = self
                    .parent
                    .mdev_type(&ty)
                    .available_instances()
                    .map_err(|e| e.to_string())?;
                if left != 0 {
                    return Err(format!("ENOSPC with {left} available instances of {ty}"));
                }
                let m = self
                    .create(old)?
                    .ok_or_else(|| "no room for the kind just removed".to_string())?;
                (old, m)
            }
        };
        // The old guard's mdev is gone; the new one takes its place.
        let _ = std::mem::replace(&mut self.slots[i].mdev, mdev).into_uuid();
        self.slots[i].kind = kind;
        self.count("recreate mdev", true);
        Ok(())
    }
}
