// SPDX-License-Identifier: GPL-2.0
//! One mdev under test and what the fuzzer knows about it (the model the
//! oracle compares against), and the oracle's checks of a device: the
//! invariants after every step and the power-on state after a reset or an
//! open (Documentation/device.rst, "Reset"; migration-abi.rst).

use vfio_mig::abi::migration::{BITMAP_LEN, BITMAP_OFFSET, DATA_LEN, DATA_OFFSET};
use vfio_mig::abi::{bar0, config, region};
use vfio_mig::sample::register_name;
use vfio_mig::{Device, DeviceState as State, EventFd, Field, Mdev, OpenPath};

/// What a check found wrong.
pub type Violation = String;

/// The two mdev types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Small,
    Large,
}

impl Kind {
    /// The sysfs type suffix.
    pub fn suffix(self) -> &'static str {
        match self {
            Kind::Small => "small",
            Kind::Large => "large",
        }
    }

    /// Device memory (BAR2) size.
    pub fn mem_size(self) -> u64 {
        match self {
            Kind::Small => 256 << 10,
            Kind::Large => 2 << 20,
        }
    }
}

/// Guest RAM mapped for the device's DMA (the device keeps the memory).
pub struct Map {
    pub iova: u64,
    pub pages: u64,
}

/// An open device and what the fuzzer knows about it.
pub struct Open {
    pub dev: Device,
    /// The migration state the device must be in.
    pub state: State,
    /// The data or bitmap area may hold bytes of this session (a staged
    /// chunk, a dirty bitmap, a user write); until then they read zero.
    pub areas_used: bool,
    pub maps: Vec<Map>,
    /// Installed eventfds, kept open while the device may signal them.
    pub eventfds: Vec<EventFd>,
}

/// One mdev: created, maybe open.
pub struct Slot {
    pub kind: Kind,
    pub open: Option<Open>,
    /// Removed on drop (after the device, by field order).
    pub mdev: Mdev,
}

impl Slot {
    /// Opens the mdev through `path`; the device must be at power-on.
    pub fn open(&mut self, path: OpenPath) -> Result<&mut Open, Violation> {
        self.open = None;
        let dev = Device::open(self.mdev.uuid(), path)
            .map_err(|e| format!("open {} ({path}): {e}", self.mdev.uuid()))?;
        Ok(self.open.insert(Open {
            dev,
            state: State::None,
            areas_used: false,
            maps: Vec::new(),
            eventfds: Vec::new(),
        }))
    }
}

fn err(what: &str, e: vfio_mig::Error) -> Violation {
    format!("{what}: {e}")
}

impl Open {
    /// The page count the device reports pinned.
    pub fn pinned(&self) -> Result<u64, Violation> {
        let v = self
            .dev
            .read32(region::BAR0, bar0::PINNED_PAGES.into())
            .map_err(|e| err("read PINNED_PAGES", e))?;
        Ok(u64::from(v))
    }

    /// After every step: the state is readable, one of the ten, and the
    /// one the model expects.
    pub fn check_state(&self) -> Result<(), Violation> {
        let raw = self
            .dev
            .device_state_raw()
            .map_err(|e| err("read device_state", e))?;
        let Some(s) = State::from_raw(raw) else {
            return Err(format!(
                "device_state reads {raw}, not one of the ten states"
            ));
        };
        if s != self.state {
            return Err(format!("device_state is {s}, want {}", self.state));
        }
        Ok(())
    }

    /// The data and bitmap areas read zero unless this session used them.
    pub fn check_areas(&self) -> Result<(), Violation> {
        if self.areas_used {
            return Ok(());
        }
        for (name, off, len) in [
            ("data area", DATA_OFFSET, DATA_LEN),
            ("bitmap area", BITMAP_OFFSET, BITMAP_LEN),
        ] {
            let mut b = vec![0u8; len as usize];
            self.dev
                .read_region(region::MIGRATION, off, &mut b)
                .map_err(|e| err(&format!("read the {name}"), e))?;
            if let Some(i) = b.iter().position(|&x| x != 0) {
                return Err(format!(
                    "{name} byte {i:#x} reads {:#04x} in {} before this session used it",
                    b[i], self.state
                ));
            }
        }
        Ok(())
    }

    /// The power-on state: NONE, registers at reset values, config space
    /// as fresh, device memory zero, plain fields 0, areas zero.
    pub fn check_power_on(&self, kind: Kind, fresh_config: &[u8]) -> Result<(), Violation> {
        self.check_state()?;
        let mut regs = vec![0u8; 0x100];
        self.dev
            .read_region(region::BAR0, 0, &mut regs)
            .map_err(|e| err("read BAR0", e))?;
        for (i, w) in regs.chunks_exact(4).enumerate() {
            let off = i as u32 * 4;
            let got = u32::from_le_bytes(w.try_into().unwrap_or_default());
            let want = match off {
                bar0::ID => bar0::ID_VALUE,
                bar0::VERSION => bar0::VERSION_VALUE,
                bar0::MEM_SIZE => kind.mem_size() as u32,
                _ => 0,
            };
            if got != want {
                return Err(format!(
                    "{} reads {got:#x} at power-on, want {want:#x}",
                    register_name(off)
                ));
            }
        }
        let mut cfg = vec![0u8; config::SIZE];
        self.dev
            .read_region(region::CONFIG, 0, &mut cfg)
            .map_err(|e| err("read config space", e))?;
        if let Some(i) = (0..cfg.len()).find(|&i| cfg[i] != fresh_config[i]) {
            return Err(format!(
                "config byte {i:#x} reads {:#04x} at power-on, want {:#04x}",
                cfg[i], fresh_config[i]
            ));
        }
        let mut mem = vec![0u8; kind.mem_size() as usize];
        self.dev
            .read_region(region::BAR2, 0, &mut mem)
            .map_err(|e| err("read device memory", e))?;
        if let Some(i) = mem.iter().position(|&b| b != 0) {
            return Err(format!(
                "device memory byte {i:#x} is {:#04x} at power-on",
                mem[i]
            ));
        }
        for f in [
            Field::ThresholdSize,
            Field::DataOffset,
            Field::DirtyStartAddr,
            Field::DirtyTotal,
            Field::PrecopyOnly,
            Field::Compatible,
            Field::PostcopyOnly,
        ] {
            let v = self.dev.read_field(f).map_err(|e| err("read a field", e))?;
            if v != 0 {
                return Err(format!("{f} reads {v:#x} at power-on, want 0"));
            }
        }
        self.check_areas()
    }
}
