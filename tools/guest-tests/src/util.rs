// SPDX-License-Identifier: GPL-2.0
//! Helpers shared by the tests: assertions that say what they compared,
//! errno checks, and a fixture that owns an mdev and its open device.

use std::fmt::Debug;
use std::time::Duration;

use vfio_mig::{errno_name, Device, EventFd, Mdev, MdevType, OpenPath, Parent};

use crate::device::TypeSpec;

/// What a test returns: `Err` is a failure with its reason, unless made by
/// [`skip`].
pub type TResult = Result<(), String>;

/// Marks an `Err` as a skip.
pub const SKIP_MARK: &str = "\u{1}skip\u{1}";

/// Ends a test as skipped.
pub fn skip(reason: impl std::fmt::Display) -> TResult {
    Err(format!("{SKIP_MARK}{reason}"))
}

/// Returns an `Err` when `cond` is false.
#[macro_export]
macro_rules! ensure {
    ($cond:expr, $($fmt:tt)+) => {
        if !$cond {
            return Err(format!($($fmt)+));
        }
    };
}

/// Compares with `==`, failing with both values (Debug).
#[macro_export]
macro_rules! ensure_eq {
    ($got:expr, $want:expr, $($fmt:tt)+) => {{
        let (g, w) = (&$got, &$want);
        if g != w {
            return Err(format!("{}: got {:?}, want {:?}", format!($($fmt)+), g, w));
        }
    }};
}

/// Compares integers with `==`, failing with both values in hex.
#[macro_export]
macro_rules! ensure_hex {
    ($got:expr, $want:expr, $($fmt:tt)+) => {{
        let (g, w) = ($got, $want);
        if g != w {
            return Err(format!("{}: got {:#x}, want {:#x}", format!($($fmt)+), g, w));
        }
    }};
}

/// Adds context to library errors.
pub trait Ctx<T> {
    /// Turns the error into "`what`: error".
    fn ctx(self, what: &str) -> Result<T, String>;
}

impl<T> Ctx<T> for vfio_mig::Result<T> {
    fn ctx(self, what: &str) -> Result<T, String> {
        self.map_err(|e| format!("{what}: {e}"))
    }
}

/// Asserts that `r` failed with `errno`.
pub fn expect_errno<T: Debug>(r: vfio_mig::Result<T>, errno: i32, what: &str) -> TResult {
    match r {
        Ok(v) => Err(format!(
            "{what}: succeeded ({v:?}), want {}",
            errno_name(errno)
        )),
        Err(e) if e.errno() == Some(errno) => Ok(()),
        Err(e) => Err(format!("{what}: {e}; want {}", errno_name(errno))),
    }
}

/// Asserts that `r` failed with one of `errnos`; returns the errno.
pub fn expect_errno_in<T: Debug>(
    r: vfio_mig::Result<T>,
    errnos: &[i32],
    what: &str,
) -> Result<i32, String> {
    let want: Vec<&str> = errnos.iter().map(|e| errno_name(*e)).collect();
    match r {
        Ok(v) => Err(format!(
            "{what}: succeeded ({v:?}), want {}",
            want.join(" or ")
        )),
        Err(e) => match e.errno() {
            Some(n) if errnos.contains(&n) => Ok(n),
            _ => Err(format!("{what}: {e}; want {}", want.join(" or "))),
        },
    }
}

/// How long an interrupt may take to arrive (TCG is slow).
pub const IRQ_TIMEOUT: Duration = Duration::from_secs(3);
/// How long we wait to be sure that no interrupt comes.
pub const QUIET_TIME: Duration = Duration::from_millis(300);

/// Asserts that `efd` fires within [`IRQ_TIMEOUT`].
pub fn expect_fire(efd: &EventFd, what: &str) -> TResult {
    match efd.wait(IRQ_TIMEOUT).ctx(what)? {
        Some(_) => Ok(()),
        None => Err(format!(
            "{what}: eventfd did not fire within {IRQ_TIMEOUT:?}"
        )),
    }
}

/// Asserts that `efd` stays silent for [`QUIET_TIME`].
pub fn expect_quiet(efd: &EventFd, what: &str) -> TResult {
    match efd.wait(QUIET_TIME).ctx(what)? {
        None => Ok(()),
        Some(n) => Err(format!(
            "{what}: eventfd fired (count {n}), want no interrupt"
        )),
    }
}

/// What every test gets.
pub struct Env {
    /// The driver's mdev parent.
    pub parent: Parent,
    /// The module name, for `delete_module` and `/sys/module`.
    pub module: String,
}

impl Env {
    /// The sysfs type of a [`TypeSpec`].
    pub fn ty(&self, spec: &TypeSpec) -> MdevType {
        self.parent.mdev_type(spec.suffix)
    }

    /// Creates an mdev of `spec` with a fresh UUID, removed on drop.
    pub fn create(&self, spec: &TypeSpec) -> Result<Mdev, String> {
        let ty = self.ty(spec);
        ty.create_guarded().ctx(&format!("create {}", ty.name()))
    }

    /// Creates an mdev and opens it through `path`.
    pub fn open(&self, spec: &'static TypeSpec, path: OpenPath) -> Result<Fixture, String> {
        let mdev = self.create(spec)?;
        let dev = Device::open(mdev.uuid(), path).ctx(&format!("open {} ({path})", mdev.uuid()))?;
        Ok(Fixture {
            dev: Some(dev),
            mdev,
        })
    }

    /// Fails unless no mdev of this parent exists (tests that count
    /// `available_instances` need an empty pool).
    pub fn require_empty_pool(&self) -> TResult {
        for t in self.parent.types().ctx("list types")? {
            let devs = self.parent.mdev_type(&t).devices().ctx("list devices")?;
            ensure!(
                devs.is_empty(),
                "pool is not empty: {t} has mdevs {devs:?} left from elsewhere"
            );
        }
        Ok(())
    }
}

/// An mdev and its open device. The device is closed before the mdev is
/// removed (field order), since removal waits for the close.
pub struct Fixture {
    dev: Option<Device>,
    /// The mdev.
    pub mdev: Mdev,
}

impl Fixture {
    /// The open device.
    pub fn dev(&self) -> &Device {
        self.dev.as_ref().expect("device is open")
    }

    /// Closes the device and opens it again through `path`.
    pub fn reopen(&mut self, path: OpenPath) -> TResult {
        self.dev = None;
        let dev = Device::open(self.mdev.uuid(), path)
            .ctx(&format!("reopen {} ({path})", self.mdev.uuid()))?;
        self.dev = Some(dev);
        Ok(())
    }
}

/// Region I/O shorthands that add context to errors.
pub trait Io {
    /// read32 with context.
    fn r32(&self, index: u32, off: u64) -> Result<u32, String>;
    /// write32 with context.
    fn w32(&self, index: u32, off: u64, v: u32) -> TResult;
    /// read16 with context.
    fn r16(&self, index: u32, off: u64) -> Result<u16, String>;
    /// write16 with context.
    fn w16(&self, index: u32, off: u64, v: u16) -> TResult;
    /// read8 with context.
    fn r8(&self, index: u32, off: u64) -> Result<u8, String>;
    /// write8 with context.
    fn w8(&self, index: u32, off: u64, v: u8) -> TResult;
}

impl Io for Device {
    fn r32(&self, index: u32, off: u64) -> Result<u32, String> {
        self.read32(index, off).map_err(|e| e.to_string())
    }
    fn w32(&self, index: u32, off: u64, v: u32) -> TResult {
        self.write32(index, off, v).map_err(|e| e.to_string())
    }
    fn r16(&self, index: u32, off: u64) -> Result<u16, String> {
        self.read16(index, off).map_err(|e| e.to_string())
    }
    fn w16(&self, index: u32, off: u64, v: u16) -> TResult {
        self.write16(index, off, v).map_err(|e| e.to_string())
    }
    fn r8(&self, index: u32, off: u64) -> Result<u8, String> {
        self.read8(index, off).map_err(|e| e.to_string())
    }
    fn w8(&self, index: u32, off: u64, v: u8) -> TResult {
        self.write8(index, off, v).map_err(|e| e.to_string())
    }
}

/// A byte pattern for device memory that differs between neighbouring
/// bytes, pages and passes (`seed`).
pub fn pattern(offset: u64, seed: u8) -> u8 {
    let x = offset.wrapping_mul(0x9e37_79b9) ^ (offset >> 11);
    (x as u8) ^ ((x >> 8) as u8) ^ seed
}
