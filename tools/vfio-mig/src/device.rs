// SPDX-License-Identifier: GPL-2.0
//! A VFIO device opened by mdev UUID, through the legacy group/container path
//! or the iommufd cdev path, and the device ioctls and region I/O on it.

use std::ffi::CString;
use std::fs::OpenOptions;
use std::mem::size_of;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock};

use libc::c_void;

use crate::abi::region;
use crate::error::{last_errno, Error, Result};
use crate::mem::GuestMemory;
use crate::migration::MigrationRegion;
use crate::sysfs;
use crate::uapi::{self, vfio};

/// Size of `struct vfio_device_info` (with `cap_offset` and `pad`).
pub const DEVICE_INFO_SIZE: u32 = size_of::<vfio::vfio_device_info>() as u32;
/// Size of `struct vfio_region_info`.
pub const REGION_INFO_SIZE: u32 = size_of::<vfio::vfio_region_info>() as u32;
/// Size of `struct vfio_irq_info`.
pub const IRQ_INFO_SIZE: u32 = size_of::<vfio::vfio_irq_info>() as u32;
/// Size of the fixed part of `struct vfio_irq_set`.
pub const IRQ_SET_SIZE: u32 = size_of::<vfio::vfio_irq_set>() as u32;

/// The largest argsz the raw wrappers allocate a buffer for.
const RAW_ARGSZ_MAX: u32 = 1 << 20;

/// How to open the device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenPath {
    /// `/dev/vfio/vfio` container + `/dev/vfio/$GROUP`.
    Legacy,
    /// `/dev/vfio/devices/vfioN` bound to `/dev/iommu`.
    Iommufd,
    /// A device fd opened by another process ([`Device::from_fd`]); not a
    /// way to open, only how an existing [`Device`] was made.
    Inherited,
}

impl std::fmt::Display for OpenPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            OpenPath::Legacy => "legacy group/container",
            OpenPath::Iommufd => "iommufd cdev",
            OpenPath::Inherited => "inherited fd",
        })
    }
}

/// `VFIO_DEVICE_GET_INFO`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceInfo {
    /// The argsz the kernel left in the struct.
    pub argsz: u32,
    /// `VFIO_DEVICE_FLAGS_*`.
    pub flags: u32,
    /// Number of regions.
    pub num_regions: u32,
    /// Number of IRQ indexes.
    pub num_irqs: u32,
    /// Offset of the first device-info capability, 0 if none.
    pub cap_offset: u32,
}

/// One entry of a capability chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Capability {
    /// `vfio_info_cap_header.id`.
    pub id: u16,
    /// `vfio_info_cap_header.version`.
    pub version: u16,
    /// Where the header is, from the start of the info struct.
    pub offset: u32,
    /// `vfio_info_cap_header.next`.
    pub next: u32,
    /// The bytes after the header, up to the next capability or the end of
    /// the buffer.
    pub data: Vec<u8>,
}

impl Capability {
    fn u32_at(&self, off: usize) -> Option<u32> {
        let b = self.data.get(off..off + 4)?;
        Some(u32::from_ne_bytes(b.try_into().ok()?))
    }

    fn u64_at(&self, off: usize) -> Option<u64> {
        let b = self.data.get(off..off + 8)?;
        Some(u64::from_ne_bytes(b.try_into().ok()?))
    }

    /// For `VFIO_REGION_INFO_CAP_TYPE`: `(type, subtype)`.
    pub fn region_type(&self) -> Option<(u32, u32)> {
        if u32::from(self.id) != vfio::VFIO_REGION_INFO_CAP_TYPE {
            return None;
        }
        Some((self.u32_at(0)?, self.u32_at(4)?))
    }

    /// For `VFIO_REGION_INFO_CAP_SPARSE_MMAP`: the `(offset, size)` areas.
    pub fn sparse_areas(&self) -> Option<Vec<(u64, u64)>> {
        if u32::from(self.id) != vfio::VFIO_REGION_INFO_CAP_SPARSE_MMAP {
            return None;
        }
        let n = self.u32_at(0)? as usize;
        (0..n)
            .map(|i| Some((self.u64_at(8 + 16 * i)?, self.u64_at(16 + 16 * i)?)))
            .collect()
    }
}

/// `VFIO_DEVICE_GET_REGION_INFO`, with its capability chain walked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegionInfo {
    /// Region index asked for.
    pub index: u32,
    /// The argsz the kernel left in the struct (the size it needs when it is
    /// larger than what was passed).
    pub argsz: u32,
    /// `VFIO_REGION_INFO_FLAG_*`.
    pub flags: u32,
    /// `cap_offset` as returned.
    pub cap_offset: u32,
    /// Region size.
    pub size: u64,
    /// File offset of the region.
    pub offset: u64,
    /// The capability chain (empty if none was returned).
    pub caps: Vec<Capability>,
}

impl RegionInfo {
    /// The `(type, subtype)` of a `VFIO_REGION_INFO_CAP_TYPE` in the chain.
    pub fn region_type(&self) -> Option<(u32, u32)> {
        self.caps.iter().find_map(Capability::region_type)
    }
}

/// `VFIO_DEVICE_GET_IRQ_INFO`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IrqInfo {
    /// IRQ index.
    pub index: u32,
    /// `VFIO_IRQ_INFO_*`.
    pub flags: u32,
    /// Number of vectors.
    pub count: u32,
}

// Field order matters: on drop, Rust drops fields in declaration order, and
// the device fd must go before the group/container or the iommufd.
enum Backend {
    Legacy {
        _group: OwnedFd,
        container: OwnedFd,
    },
    Iommufd {
        iommufd: OwnedFd,
        ioas_id: u32,
        devid: u32,
    },
    /// A device fd handed over by another process (`vfio-mig --fd`); its
    /// group/container or iommufd stay with that process.
    Inherited,
}

struct DmaMapping {
    iova: u64,
    len: u64,
    _mem: Arc<GuestMemory>,
}

/// An open VFIO device. Closes its fds on drop (device first); keeps the
/// guest memory of its DMA mappings alive until then.
pub struct Device {
    fd: OwnedFd,
    backend: Backend,
    dma: Mutex<Vec<DmaMapping>>,
    uuid: String,
    path: OpenPath,
    /// The migration region, found on first use (`migration.rs`).
    pub(crate) migration: OnceLock<MigrationRegion>,
}

impl std::fmt::Debug for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Device")
            .field("uuid", &self.uuid)
            .field("path", &self.path)
            .field("fd", &self.fd.as_raw_fd())
            .finish()
    }
}

/// Issues an ioctl and turns -1 into `Error::Ioctl`.
///
/// # Safety
///
/// `arg` must be what `request` expects on `fd`: an integer, or a pointer to
/// memory valid for every byte the kernel may read or write for it.
unsafe fn ioctl(
    fd: RawFd,
    name: &'static str,
    what: &dyn Fn() -> String,
    request: u64,
    arg: libc::c_ulong,
) -> Result<i32> {
    // SAFETY: forwarded to the caller (see # Safety).
    let r = unsafe { libc::ioctl(fd, request as _, arg) };
    if r < 0 {
        return Err(Error::Ioctl {
            name,
            what: what(),
            errno: last_errno(),
        });
    }
    Ok(r)
}

fn no_ctx() -> String {
    String::new()
}

fn no_iommu_context(uuid: &str) -> Error {
    Error::Invalid(format!(
        "{uuid} was opened from an inherited fd: its IOMMU context (container or iommufd) \
         belongs to another process, so DMA cannot be mapped here"
    ))
}

fn open_rw(path: &Path) -> Result<OwnedFd> {
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| Error::path("open", path, e))?;
    Ok(f.into())
}

/// A zeroed, 8-byte aligned buffer of at least `len` bytes for an ioctl
/// struct with a variable tail.
fn ioctl_buf(len: usize) -> Vec<u64> {
    vec![0u64; len.div_ceil(8)]
}

fn buf_bytes(buf: &[u64]) -> &[u8] {
    // SAFETY: u64 has no padding, u8 has alignment 1, and the length covers
    // exactly the same bytes.
    unsafe { std::slice::from_raw_parts(buf.as_ptr().cast(), buf.len() * 8) }
}

fn buf_bytes_mut(buf: &mut [u64]) -> &mut [u8] {
    // SAFETY: as in buf_bytes; the mutable borrow is unique.
    unsafe { std::slice::from_raw_parts_mut(buf.as_mut_ptr().cast(), buf.len() * 8) }
}

fn ne_u16(b: &[u8], off: usize) -> u16 {
    u16::from_ne_bytes([b[off], b[off + 1]])
}

fn ne_u32(b: &[u8], off: usize) -> u32 {
    u32::from_ne_bytes(b[off..off + 4].try_into().unwrap())
}

fn ne_u64(b: &[u8], off: usize) -> u64 {
    u64::from_ne_bytes(b[off..off + 8].try_into().unwrap())
}

/// Walks a capability chain that starts at `first` in `buf` (offsets are
/// from the start of `buf`, as the kernel writes them).
pub fn parse_cap_chain(buf: &[u8], first: u32, min_offset: u32) -> Result<Vec<Capability>> {
    let mut caps = Vec::new();
    let mut off = first;
    while off != 0 {
        let o = off as usize;
        if off < min_offset || o + 8 > buf.len() || caps.len() >= 64 {
            return Err(Error::Invalid(format!(
                "capability chain is broken: entry {} at offset {off:#x} in {} bytes \
                 (chain must start at or after {min_offset:#x})",
                caps.len(),
                buf.len()
            )));
        }
        let id = ne_u16(buf, o);
        let version = ne_u16(buf, o + 2);
        let next = ne_u32(buf, o + 4);
        if next != 0 && next <= off {
            return Err(Error::Invalid(format!(
                "capability chain loops: entry at {off:#x} points back to {next:#x}"
            )));
        }
        let end = if next == 0 {
            buf.len()
        } else {
            (next as usize).min(buf.len())
        };
        caps.push(Capability {
            id,
            version,
            offset: off,
            next,
            data: buf[o + 8..end].to_vec(),
        });
        off = next;
    }
    Ok(caps)
}

impl Device {
    /// Opens the mdev `uuid` through `path`.
    pub fn open(uuid: &str, path: OpenPath) -> Result<Self> {
        match path {
            OpenPath::Legacy => Self::open_legacy(uuid),
            OpenPath::Iommufd => Self::open_iommufd(uuid),
            OpenPath::Inherited => Err(Error::Invalid(format!(
                "cannot open {uuid} as an inherited fd: use Device::from_fd"
            ))),
        }
    }

    /// Opens the mdev through the legacy VFIO container and its IOMMU group.
    pub fn open_legacy(uuid: &str) -> Result<Self> {
        let container = open_rw(Path::new("/dev/vfio/vfio"))?;
        let cfd = container.as_raw_fd();
        // SAFETY: VFIO_GET_API_VERSION takes no argument.
        let v = unsafe {
            ioctl(
                cfd,
                "VFIO_GET_API_VERSION",
                &no_ctx,
                uapi::VFIO_GET_API_VERSION,
                0,
            )?
        };
        if v != uapi::VFIO_API_VERSION {
            return Err(Error::Invalid(format!(
                "VFIO_GET_API_VERSION returned {v}, expected {}",
                uapi::VFIO_API_VERSION
            )));
        }
        // SAFETY: VFIO_CHECK_EXTENSION takes an integer.
        let ok = unsafe {
            ioctl(
                cfd,
                "VFIO_CHECK_EXTENSION",
                &|| "VFIO_TYPE1v2_IOMMU".into(),
                uapi::VFIO_CHECK_EXTENSION,
                uapi::VFIO_TYPE1V2_IOMMU as libc::c_ulong,
            )?
        };
        if ok != 1 {
            return Err(Error::Invalid(
                "the VFIO container does not support VFIO_TYPE1v2_IOMMU".into(),
            ));
        }

        let group_nr = sysfs::iommu_group(uuid)?;
        let group = open_rw(&Path::new("/dev/vfio").join(group_nr.to_string()))?;
        let gfd = group.as_raw_fd();
        let ctx = || format!("group {group_nr}");
        let mut status = vfio::vfio_group_status {
            argsz: size_of::<vfio::vfio_group_status>() as u32,
            flags: 0,
        };
        // SAFETY: status is a valid vfio_group_status the kernel may fill.
        unsafe {
            ioctl(
                gfd,
                "VFIO_GROUP_GET_STATUS",
                &ctx,
                uapi::VFIO_GROUP_GET_STATUS,
                &mut status as *mut _ as libc::c_ulong,
            )?
        };
        if status.flags & vfio::VFIO_GROUP_FLAGS_VIABLE == 0 {
            return Err(Error::Invalid(format!(
                "IOMMU group {group_nr} of {uuid} is not viable (flags {:#x})",
                status.flags
            )));
        }
        // SAFETY: the argument points to an int holding the container fd.
        unsafe {
            ioctl(
                gfd,
                "VFIO_GROUP_SET_CONTAINER",
                &ctx,
                uapi::VFIO_GROUP_SET_CONTAINER,
                &cfd as *const RawFd as libc::c_ulong,
            )?
        };
        // SAFETY: VFIO_SET_IOMMU takes an integer.
        unsafe {
            ioctl(
                cfd,
                "VFIO_SET_IOMMU",
                &|| "VFIO_TYPE1v2_IOMMU".into(),
                uapi::VFIO_SET_IOMMU,
                uapi::VFIO_TYPE1V2_IOMMU as libc::c_ulong,
            )?
        };
        let name = CString::new(uuid).map_err(|_| Error::Invalid("UUID has a NUL".into()))?;
        // SAFETY: the argument is a NUL-terminated string the kernel only reads.
        let dfd = unsafe {
            ioctl(
                gfd,
                "VFIO_GROUP_GET_DEVICE_FD",
                &|| format!("group {group_nr}, device {uuid}"),
                uapi::VFIO_GROUP_GET_DEVICE_FD,
                name.as_ptr() as libc::c_ulong,
            )?
        };
        // SAFETY: a non-negative return of GET_DEVICE_FD is a new fd we own.
        let fd = unsafe { OwnedFd::from_raw_fd(dfd) };
        Ok(Device {
            fd,
            backend: Backend::Legacy {
                _group: group,
                container,
            },
            dma: Mutex::new(Vec::new()),
            uuid: uuid.to_string(),
            path: OpenPath::Legacy,
            migration: OnceLock::new(),
        })
    }

    /// Opens the mdev through its VFIO cdev, bound to a new iommufd and
    /// attached to a new IOAS.
    pub fn open_iommufd(uuid: &str) -> Result<Self> {
        let cdev = sysfs::vfio_cdev_name(uuid)?;
        let fd = open_rw(&Path::new("/dev/vfio/devices").join(&cdev))?;
        let iommufd = open_rw(Path::new("/dev/iommu"))?;
        let ctx = || format!("{cdev} of {uuid}");

        let mut bind = uapi::VfioDeviceBindIommufd {
            argsz: size_of::<uapi::VfioDeviceBindIommufd>() as u32,
            flags: 0,
            iommufd: iommufd.as_raw_fd(),
            out_devid: 0,
        };
        // SAFETY: bind is a valid 6.12 vfio_device_bind_iommufd.
        unsafe {
            ioctl(
                fd.as_raw_fd(),
                "VFIO_DEVICE_BIND_IOMMUFD",
                &ctx,
                uapi::VFIO_DEVICE_BIND_IOMMUFD,
                &mut bind as *mut _ as libc::c_ulong,
            )?
        };
        let mut alloc = uapi::IommuIoasAlloc {
            size: size_of::<uapi::IommuIoasAlloc>() as u32,
            ..Default::default()
        };
        // SAFETY: alloc is a valid iommu_ioas_alloc.
        unsafe {
            ioctl(
                iommufd.as_raw_fd(),
                "IOMMU_IOAS_ALLOC",
                &no_ctx,
                uapi::IOMMU_IOAS_ALLOC,
                &mut alloc as *mut _ as libc::c_ulong,
            )?
        };
        let mut attach = uapi::VfioDeviceAttachIommufdPt {
            argsz: size_of::<uapi::VfioDeviceAttachIommufdPt>() as u32,
            flags: 0,
            pt_id: alloc.out_ioas_id,
        };
        // SAFETY: attach is a valid vfio_device_attach_iommufd_pt.
        unsafe {
            ioctl(
                fd.as_raw_fd(),
                "VFIO_DEVICE_ATTACH_IOMMUFD_PT",
                &|| format!("{cdev} of {uuid} to IOAS {}", alloc.out_ioas_id),
                uapi::VFIO_DEVICE_ATTACH_IOMMUFD_PT,
                &mut attach as *mut _ as libc::c_ulong,
            )?
        };
        Ok(Device {
            fd,
            backend: Backend::Iommufd {
                iommufd,
                ioas_id: alloc.out_ioas_id,
                devid: bind.out_devid,
            },
            dma: Mutex::new(Vec::new()),
            uuid: uuid.to_string(),
            path: OpenPath::Iommufd,
            migration: OnceLock::new(),
        })
    }

    /// Wraps a VFIO device fd that another process opened and passed on
    /// (as QEMU's `vfio-pci,fd=N` takes one). `label` names the device in
    /// messages (its UUID). Everything but DMA mapping works on it; the
    /// process that opened it keeps the IOMMU context.
    pub fn from_fd(fd: OwnedFd, label: &str) -> Self {
        Device {
            fd,
            backend: Backend::Inherited,
            dma: Mutex::new(Vec::new()),
            uuid: label.to_string(),
            path: OpenPath::Inherited,
            migration: OnceLock::new(),
        }
    }

    /// The mdev's UUID.
    pub fn uuid(&self) -> &str {
        &self.uuid
    }

    /// How the device was opened.
    pub fn open_path(&self) -> OpenPath {
        self.path
    }

    /// The device fd.
    pub fn fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// The iommufd device id (`out_devid` of BIND), on the iommufd path.
    pub fn iommufd_devid(&self) -> Option<u32> {
        match self.backend {
            Backend::Iommufd { devid, .. } => Some(devid),
            Backend::Legacy { .. } | Backend::Inherited => None,
        }
    }

    /// Issues any ioctl on the device fd and returns its non-negative result.
    ///
    /// # Safety
    ///
    /// `arg` must be what `request` expects: an integer, or a pointer to
    /// memory valid for every byte the kernel may read or write for it.
    pub unsafe fn raw_ioctl(&self, request: u64, arg: libc::c_ulong) -> Result<i32> {
        // SAFETY: forwarded to the caller.
        unsafe {
            ioctl(
                self.fd(),
                "device ioctl",
                &|| format!("request {request:#x}"),
                request,
                arg,
            )
        }
    }

    /// `VFIO_DEVICE_GET_INFO` with the struct's own argsz.
    pub fn info(&self) -> Result<DeviceInfo> {
        self.info_raw(DEVICE_INFO_SIZE)
    }

    /// `VFIO_DEVICE_GET_INFO` with any `argsz` (at most 1 MiB; the buffer is
    /// at least the struct's size).
    pub fn info_raw(&self, argsz: u32) -> Result<DeviceInfo> {
        if argsz > RAW_ARGSZ_MAX {
            return Err(Error::Invalid(format!(
                "argsz {argsz} is too large to test"
            )));
        }
        let mut buf = ioctl_buf(argsz.max(DEVICE_INFO_SIZE) as usize);
        buf_bytes_mut(&mut buf)[..4].copy_from_slice(&argsz.to_ne_bytes());
        // SAFETY: buf is at least as large as argsz and the struct, so nothing
        // the kernel reads or writes for this call is outside it.
        unsafe {
            ioctl(
                self.fd(),
                "VFIO_DEVICE_GET_INFO",
                &|| format!("argsz {argsz}"),
                uapi::VFIO_DEVICE_GET_INFO,
                buf.as_mut_ptr() as libc::c_ulong,
            )?
        };
        let b = buf_bytes(&buf);
        Ok(DeviceInfo {
            argsz: ne_u32(b, 0),
            flags: ne_u32(b, 4),
            num_regions: ne_u32(b, 8),
            num_irqs: ne_u32(b, 12),
            cap_offset: ne_u32(b, 16),
        })
    }

    /// `VFIO_DEVICE_GET_REGION_INFO` for `index`, retrying with the argsz the
    /// kernel asks for when the region has capabilities, and walking the
    /// chain.
    pub fn region_info(&self, index: u32) -> Result<RegionInfo> {
        let mut argsz = REGION_INFO_SIZE;
        for _ in 0..4 {
            let info = self.region_info_raw(index, argsz)?;
            if info.flags & vfio::VFIO_REGION_INFO_FLAG_CAPS != 0 && info.argsz > argsz {
                argsz = info.argsz;
                continue;
            }
            return Ok(info);
        }
        Err(Error::Invalid(format!(
            "VFIO_DEVICE_GET_REGION_INFO (index {index}) keeps asking for a larger argsz \
             (last {argsz})"
        )))
    }

    /// One `VFIO_DEVICE_GET_REGION_INFO` call with any `argsz` (at most 1 MiB;
    /// the buffer is at least the struct's size). Walks the capability chain
    /// if the kernel filled one in.
    pub fn region_info_raw(&self, index: u32, argsz: u32) -> Result<RegionInfo> {
        if argsz > RAW_ARGSZ_MAX {
            return Err(Error::Invalid(format!(
                "argsz {argsz} is too large to test"
            )));
        }
        let len = argsz.max(REGION_INFO_SIZE) as usize;
        let mut buf = ioctl_buf(len);
        {
            let b = buf_bytes_mut(&mut buf);
            b[0..4].copy_from_slice(&argsz.to_ne_bytes());
            b[8..12].copy_from_slice(&index.to_ne_bytes());
        }
        // SAFETY: buf covers max(argsz, sizeof(vfio_region_info)) bytes, all
        // the kernel may touch.
        unsafe {
            ioctl(
                self.fd(),
                "VFIO_DEVICE_GET_REGION_INFO",
                &|| format!("index {index}, argsz {argsz}"),
                uapi::VFIO_DEVICE_GET_REGION_INFO,
                buf.as_mut_ptr() as libc::c_ulong,
            )?
        };
        let b = &buf_bytes(&buf)[..len];
        let cap_offset = ne_u32(b, 12);
        let caps = if cap_offset != 0 {
            parse_cap_chain(b, cap_offset, REGION_INFO_SIZE)
                .map_err(|e| Error::Invalid(format!("region {index}: {e}")))?
        } else {
            Vec::new()
        };
        Ok(RegionInfo {
            index,
            argsz: ne_u32(b, 0),
            flags: ne_u32(b, 4),
            cap_offset,
            size: ne_u64(b, 16),
            offset: ne_u64(b, 24),
            caps,
        })
    }

    /// `VFIO_DEVICE_GET_IRQ_INFO` for `index`.
    pub fn irq_info(&self, index: u32) -> Result<IrqInfo> {
        self.irq_info_raw(index, IRQ_INFO_SIZE)
    }

    /// `VFIO_DEVICE_GET_IRQ_INFO` with any `argsz` (at most 1 MiB).
    pub fn irq_info_raw(&self, index: u32, argsz: u32) -> Result<IrqInfo> {
        if argsz > RAW_ARGSZ_MAX {
            return Err(Error::Invalid(format!(
                "argsz {argsz} is too large to test"
            )));
        }
        let mut buf = ioctl_buf(argsz.max(IRQ_INFO_SIZE) as usize);
        {
            let b = buf_bytes_mut(&mut buf);
            b[0..4].copy_from_slice(&argsz.to_ne_bytes());
            b[8..12].copy_from_slice(&index.to_ne_bytes());
        }
        // SAFETY: buf covers max(argsz, sizeof(vfio_irq_info)) bytes.
        unsafe {
            ioctl(
                self.fd(),
                "VFIO_DEVICE_GET_IRQ_INFO",
                &|| format!("index {index}, argsz {argsz}"),
                uapi::VFIO_DEVICE_GET_IRQ_INFO,
                buf.as_mut_ptr() as libc::c_ulong,
            )?
        };
        let b = buf_bytes(&buf);
        Ok(IrqInfo {
            index: ne_u32(b, 8),
            flags: ne_u32(b, 4),
            count: ne_u32(b, 12),
        })
    }

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
        if argsz > RAW_ARGSZ_MAX || natural > RAW_ARGSZ_MAX as usize {
            return Err(Error::Invalid(format!(
                "argsz {argsz} is too large to test"
            )));
        }
        let len = natural.max(argsz as usize);
        let mut buf = ioctl_buf(len);
        {
            let b = buf_bytes_mut(&mut buf);
            for (i, v) in [argsz, flags, index, start, count].iter().enumerate() {
                b[i * 4..i * 4 + 4].copy_from_slice(&v.to_ne_bytes());
            }
            b[IRQ_SET_SIZE as usize..natural].copy_from_slice(data);
        }
        // SAFETY: the kernel reads at most max(argsz, header + data) bytes,
        // which buf holds; it writes nothing for SET_IRQS.
        unsafe {
            ioctl(
                self.fd(),
                "VFIO_DEVICE_SET_IRQS",
                &|| {
                    format!(
                        "argsz {argsz}, flags {flags:#x}, index {index}, start {start}, \
                         count {count}"
                    )
                },
                uapi::VFIO_DEVICE_SET_IRQS,
                buf.as_mut_ptr() as libc::c_ulong,
            )?
        };
        Ok(())
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

    /// `VFIO_DEVICE_RESET`.
    pub fn reset(&self) -> Result<()> {
        // SAFETY: VFIO_DEVICE_RESET takes no argument.
        unsafe {
            ioctl(
                self.fd(),
                "VFIO_DEVICE_RESET",
                &no_ctx,
                uapi::VFIO_DEVICE_RESET,
                0,
            )?
        };
        Ok(())
    }

    fn pos_err(op: &'static str, pos: u64, len: usize, errno: i32, done: usize) -> Error {
        Error::Region {
            op,
            index: (pos >> region::SHIFT) as u32,
            offset: pos & ((1 << region::SHIFT) - 1),
            len,
            errno,
            done,
        }
    }

    /// `pread` at absolute file position `pos`; returns the byte count.
    pub fn pread(&self, pos: u64, buf: &mut [u8]) -> Result<usize> {
        // SAFETY: buf is valid for buf.len() writable bytes.
        let n = unsafe {
            libc::pread(
                self.fd(),
                buf.as_mut_ptr().cast::<c_void>(),
                buf.len(),
                pos as libc::off_t,
            )
        };
        if n < 0 {
            return Err(Self::pos_err("read", pos, buf.len(), last_errno(), 0));
        }
        Ok(n as usize)
    }

    /// `pwrite` at absolute file position `pos`; returns the byte count.
    pub fn pwrite(&self, pos: u64, buf: &[u8]) -> Result<usize> {
        // SAFETY: buf is valid for buf.len() readable bytes.
        let n = unsafe {
            libc::pwrite(
                self.fd(),
                buf.as_ptr().cast::<c_void>(),
                buf.len(),
                pos as libc::off_t,
            )
        };
        if n < 0 {
            return Err(Self::pos_err("write", pos, buf.len(), last_errno(), 0));
        }
        Ok(n as usize)
    }

    fn region_pos(index: u32, offset: u64) -> Result<u64> {
        region::offset(index)
            .checked_add(offset)
            .ok_or_else(|| Error::Invalid(format!("region {index} offset {offset:#x} overflows")))
    }

    /// Reads `buf.len()` bytes at `offset` of region `index`; a short read is
    /// an error.
    pub fn read_region(&self, index: u32, offset: u64, buf: &mut [u8]) -> Result<()> {
        let pos = Self::region_pos(index, offset)?;
        let n = self.pread(pos, buf)?;
        if n != buf.len() {
            return Err(Self::pos_err("read", pos, buf.len(), 0, n));
        }
        Ok(())
    }

    /// Writes `buf` at `offset` of region `index`; a short write is an error.
    pub fn write_region(&self, index: u32, offset: u64, buf: &[u8]) -> Result<()> {
        let pos = Self::region_pos(index, offset)?;
        let n = self.pwrite(pos, buf)?;
        if n != buf.len() {
            return Err(Self::pos_err("write", pos, buf.len(), 0, n));
        }
        Ok(())
    }

    /// Reads a little-endian byte.
    pub fn read8(&self, index: u32, offset: u64) -> Result<u8> {
        let mut b = [0u8; 1];
        self.read_region(index, offset, &mut b)?;
        Ok(b[0])
    }

    /// Reads a little-endian u16.
    pub fn read16(&self, index: u32, offset: u64) -> Result<u16> {
        let mut b = [0u8; 2];
        self.read_region(index, offset, &mut b)?;
        Ok(u16::from_le_bytes(b))
    }

    /// Reads a little-endian u32 (one 4-byte access).
    pub fn read32(&self, index: u32, offset: u64) -> Result<u32> {
        let mut b = [0u8; 4];
        self.read_region(index, offset, &mut b)?;
        Ok(u32::from_le_bytes(b))
    }

    /// Reads a little-endian u64 (one 8-byte access).
    pub fn read64(&self, index: u32, offset: u64) -> Result<u64> {
        let mut b = [0u8; 8];
        self.read_region(index, offset, &mut b)?;
        Ok(u64::from_le_bytes(b))
    }

    /// Writes a byte.
    pub fn write8(&self, index: u32, offset: u64, v: u8) -> Result<()> {
        self.write_region(index, offset, &[v])
    }

    /// Writes a little-endian u16.
    pub fn write16(&self, index: u32, offset: u64, v: u16) -> Result<()> {
        self.write_region(index, offset, &v.to_le_bytes())
    }

    /// Writes a little-endian u32 (one 4-byte access).
    pub fn write32(&self, index: u32, offset: u64, v: u32) -> Result<()> {
        self.write_region(index, offset, &v.to_le_bytes())
    }

    /// Writes a little-endian u64 (one 8-byte access).
    pub fn write64(&self, index: u32, offset: u64, v: u64) -> Result<()> {
        self.write_region(index, offset, &v.to_le_bytes())
    }

    /// Maps all of `mem` for device DMA at `iova` (read and write), with
    /// `VFIO_IOMMU_MAP_DMA` or `IOMMU_IOAS_MAP`. The device keeps `mem`
    /// alive until [`Device::unmap_dma`] or drop.
    pub fn map_dma(&self, iova: u64, mem: &Arc<GuestMemory>) -> Result<()> {
        let len = mem.len() as u64;
        let vaddr = mem.as_ptr() as u64;
        let ctx = || format!("iova {iova:#x}, {len:#x} bytes");
        match &self.backend {
            Backend::Inherited => return Err(no_iommu_context(&self.uuid)),
            Backend::Legacy { container, .. } => {
                let mut map = vfio::vfio_iommu_type1_dma_map {
                    argsz: size_of::<vfio::vfio_iommu_type1_dma_map>() as u32,
                    flags: vfio::VFIO_DMA_MAP_FLAG_READ | vfio::VFIO_DMA_MAP_FLAG_WRITE,
                    vaddr,
                    iova,
                    size: len,
                };
                // SAFETY: map is a valid vfio_iommu_type1_dma_map; the memory
                // it names stays mapped while `mem` lives, which we ensure
                // below by keeping an Arc until unmap or drop.
                unsafe {
                    ioctl(
                        container.as_raw_fd(),
                        "VFIO_IOMMU_MAP_DMA",
                        &ctx,
                        uapi::VFIO_IOMMU_MAP_DMA,
                        &mut map as *mut _ as libc::c_ulong,
                    )?
                };
            }
            Backend::Iommufd {
                iommufd, ioas_id, ..
            } => {
                let mut map = uapi::IommuIoasMap {
                    size: size_of::<uapi::IommuIoasMap>() as u32,
                    flags: uapi::IOMMU_IOAS_MAP_FIXED_IOVA
                        | uapi::IOMMU_IOAS_MAP_READABLE
                        | uapi::IOMMU_IOAS_MAP_WRITEABLE,
                    ioas_id: *ioas_id,
                    reserved: 0,
                    user_va: vaddr,
                    length: len,
                    iova,
                };
                // SAFETY: as for the legacy path, with an iommu_ioas_map.
                unsafe {
                    ioctl(
                        iommufd.as_raw_fd(),
                        "IOMMU_IOAS_MAP",
                        &ctx,
                        uapi::IOMMU_IOAS_MAP,
                        &mut map as *mut _ as libc::c_ulong,
                    )?
                };
            }
        }
        self.dma.lock().unwrap().push(DmaMapping {
            iova,
            len,
            _mem: Arc::clone(mem),
        });
        Ok(())
    }

    /// Unmaps the mapping made at `iova` by [`Device::map_dma`].
    pub fn unmap_dma(&self, iova: u64) -> Result<()> {
        let mut maps = self.dma.lock().unwrap();
        let i = maps
            .iter()
            .position(|m| m.iova == iova)
            .ok_or_else(|| Error::Invalid(format!("no DMA mapping at iova {iova:#x}")))?;
        let len = maps[i].len;
        let ctx = || format!("iova {iova:#x}, {len:#x} bytes");
        match &self.backend {
            Backend::Inherited => return Err(no_iommu_context(&self.uuid)),
            Backend::Legacy { container, .. } => {
                let mut unmap = vfio::vfio_iommu_type1_dma_unmap {
                    argsz: size_of::<vfio::vfio_iommu_type1_dma_unmap>() as u32,
                    flags: 0,
                    iova,
                    size: len,
                    data: Default::default(),
                };
                // SAFETY: unmap is a valid vfio_iommu_type1_dma_unmap without
                // a dirty bitmap.
                unsafe {
                    ioctl(
                        container.as_raw_fd(),
                        "VFIO_IOMMU_UNMAP_DMA",
                        &ctx,
                        uapi::VFIO_IOMMU_UNMAP_DMA,
                        &mut unmap as *mut _ as libc::c_ulong,
                    )?
                };
            }
            Backend::Iommufd {
                iommufd, ioas_id, ..
            } => {
                let mut unmap = uapi::IommuIoasUnmap {
                    size: size_of::<uapi::IommuIoasUnmap>() as u32,
                    ioas_id: *ioas_id,
                    iova,
                    length: len,
                };
                // SAFETY: unmap is a valid iommu_ioas_unmap.
                unsafe {
                    ioctl(
                        iommufd.as_raw_fd(),
                        "IOMMU_IOAS_UNMAP",
                        &ctx,
                        uapi::IOMMU_IOAS_UNMAP,
                        &mut unmap as *mut _ as libc::c_ulong,
                    )?
                };
            }
        }
        maps.remove(i);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put_u32(b: &mut [u8], off: usize, v: u32) {
        b[off..off + 4].copy_from_slice(&v.to_ne_bytes());
    }

    fn put_cap(b: &mut [u8], off: usize, id: u16, version: u16, next: u32) {
        b[off..off + 2].copy_from_slice(&id.to_ne_bytes());
        b[off + 2..off + 4].copy_from_slice(&version.to_ne_bytes());
        put_u32(b, off + 4, next);
    }

    #[test]
    fn region_offsets() {
        assert_eq!(region::offset(0), 0);
        assert_eq!(region::offset(9), 9 << 40);
        assert_eq!(region::offset(u32::MAX), (u32::MAX as u64) << 40);
    }

    #[test]
    fn cap_chain_type_and_sparse() {
        // struct (32) + sparse mmap with 2 areas (16 + 32) + cap_type (16).
        let mut b = vec![0u8; 96];
        put_cap(&mut b, 32, 1, 1, 80);
        put_u32(&mut b, 40, 2);
        b[48..56].copy_from_slice(&0x1000u64.to_ne_bytes());
        b[56..64].copy_from_slice(&0x2000u64.to_ne_bytes());
        b[64..72].copy_from_slice(&0x8000u64.to_ne_bytes());
        b[72..80].copy_from_slice(&0x100u64.to_ne_bytes());
        put_cap(&mut b, 80, 2, 1, 0);
        put_u32(&mut b, 88, 1 << 30);
        put_u32(&mut b, 92, 1);
        let caps = parse_cap_chain(&b, 32, 32).unwrap();
        assert_eq!(caps.len(), 2);
        assert_eq!(
            caps[0].sparse_areas(),
            Some(vec![(0x1000, 0x2000), (0x8000, 0x100)])
        );
        assert_eq!(caps[0].region_type(), None);
        assert_eq!(caps[1].region_type(), Some((1 << 30, 1)));
        assert_eq!(caps[1].offset, 80);
        let info = RegionInfo {
            index: 9,
            argsz: 96,
            flags: 0,
            cap_offset: 32,
            size: 0,
            offset: 0,
            caps,
        };
        assert_eq!(info.region_type(), Some((1 << 30, 1)));
    }

    #[test]
    fn cap_chain_broken() {
        let mut b = vec![0u8; 64];
        // Points back to itself.
        put_cap(&mut b, 32, 2, 1, 32);
        assert!(parse_cap_chain(&b, 32, 32).is_err());
        // Runs off the end.
        put_cap(&mut b, 32, 2, 1, 60);
        assert!(parse_cap_chain(&b, 32, 32).is_err());
        // Starts inside the struct.
        assert!(parse_cap_chain(&b, 8, 32).is_err());
        // No chain at all.
        assert!(parse_cap_chain(&b, 0, 32).unwrap().is_empty());
    }
}
