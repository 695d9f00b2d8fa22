// SPDX-License-Identifier: GPL-2.0
//! A VFIO device opened by mdev UUID, through the legacy group/container path
//! or the iommufd cdev path: its fds, region I/O and DMA mapping. What it
//! says about itself is in `info`, its interrupts in `irq`, and the ioctls
//! themselves in [`crate::ioctl`].

use std::ffi::CString;
use std::fs::{File, OpenOptions};
use std::mem::size_of;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock};

use crate::abi::region;
use crate::error::{Error, Result};
use crate::ioctl;
use crate::mem::GuestMemory;
use crate::mig_mmap::MigrationMapping;
use crate::migration::MigrationRegion;
use crate::sysfs;
use crate::uapi::{self, vfio};

mod info;
mod irq;

pub use info::{
    parse_cap_chain, Capability, DeviceInfo, IrqInfo, RegionInfo, DEVICE_INFO_SIZE, IRQ_INFO_SIZE,
    REGION_INFO_SIZE,
};
pub use irq::IRQ_SET_SIZE;

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
    /// The device fd, as a file for `pread`/`pwrite`.
    file: File,
    backend: Backend,
    dma: Mutex<Vec<DmaMapping>>,
    uuid: String,
    path: OpenPath,
    /// The migration region, found on first use (`migration.rs`).
    pub(crate) migration: OnceLock<MigrationRegion>,
    /// Its mapped data and bitmap areas, mapped on first use, if offered
    /// (`mig_mmap.rs`). After `file`: unmapped once the fd is closed.
    pub(crate) mig_mapping: OnceLock<Option<MigrationMapping>>,
}

impl std::fmt::Debug for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Device")
            .field("uuid", &self.uuid)
            .field("path", &self.path)
            .field("fd", &self.file.as_raw_fd())
            .finish()
    }
}

fn no_iommu_context(uuid: &str) -> Error {
    Error::Invalid(format!(
        "{uuid} was opened from an inherited fd: its IOMMU context (container or iommufd) \
         belongs to another process, so DMA cannot be mapped here"
    ))
}

fn open_rw(path: &Path) -> Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| Error::path("open", path, e))
}

/// A new VFIO container with the type1v2 IOMMU model available.
fn open_container() -> Result<OwnedFd> {
    let container = OwnedFd::from(open_rw(Path::new("/dev/vfio/vfio"))?);
    let v = ioctl::get_api_version(container.as_fd())?;
    if v != vfio::VFIO_API_VERSION as i32 {
        return Err(Error::Invalid(format!(
            "VFIO_GET_API_VERSION returned {v}, expected {}",
            vfio::VFIO_API_VERSION
        )));
    }
    let ok = ioctl::check_extension(container.as_fd(), vfio::VFIO_TYPE1v2_IOMMU)
        .map_err(|f| f.context("VFIO_TYPE1v2_IOMMU"))?;
    if ok != 1 {
        return Err(Error::Invalid(
            "the VFIO container does not support VFIO_TYPE1v2_IOMMU".into(),
        ));
    }
    Ok(container)
}

/// Opens the IOMMU group of `uuid`, checks that it is viable and adds it to
/// `container`, which then gets its IOMMU model.
fn join_group(uuid: &str, container: BorrowedFd<'_>) -> Result<(u32, OwnedFd)> {
    let group_nr = sysfs::iommu_group(uuid)?;
    let group = OwnedFd::from(open_rw(&Path::new("/dev/vfio").join(group_nr.to_string()))?);
    let ctx = |f: ioctl::Failed| f.context(format!("group {group_nr}"));
    let status = ioctl::group_get_status(group.as_fd()).map_err(ctx)?;
    if status.flags & vfio::VFIO_GROUP_FLAGS_VIABLE == 0 {
        return Err(Error::Invalid(format!(
            "IOMMU group {group_nr} of {uuid} is not viable (flags {:#x})",
            status.flags
        )));
    }
    ioctl::group_set_container(group.as_fd(), container).map_err(ctx)?;
    ioctl::set_iommu(container, vfio::VFIO_TYPE1v2_IOMMU)
        .map_err(|f| f.context("VFIO_TYPE1v2_IOMMU"))?;
    Ok((group_nr, group))
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

    fn with_backend(file: File, backend: Backend, uuid: &str, path: OpenPath) -> Self {
        Device {
            file,
            backend,
            dma: Mutex::new(Vec::new()),
            uuid: uuid.to_string(),
            path,
            migration: OnceLock::new(),
            mig_mapping: OnceLock::new(),
        }
    }

    /// Opens the mdev through the legacy VFIO container and its IOMMU group.
    pub fn open_legacy(uuid: &str) -> Result<Self> {
        let container = open_container()?;
        let (group_nr, group) = join_group(uuid, container.as_fd())?;
        let name = CString::new(uuid).map_err(|_| Error::Invalid("UUID has a NUL".into()))?;
        let fd = ioctl::group_get_device_fd(group.as_fd(), &name)
            .map_err(|f| f.context(format!("group {group_nr}, device {uuid}")))?;
        let backend = Backend::Legacy {
            _group: group,
            container,
        };
        Ok(Self::with_backend(
            fd.into(),
            backend,
            uuid,
            OpenPath::Legacy,
        ))
    }

    /// Opens the mdev through its VFIO cdev, bound to a new iommufd and
    /// attached to a new IOAS.
    pub fn open_iommufd(uuid: &str) -> Result<Self> {
        let cdev = sysfs::vfio_cdev_name(uuid)?;
        let file = open_rw(&Path::new("/dev/vfio/devices").join(&cdev))?;
        let iommufd = OwnedFd::from(open_rw(Path::new("/dev/iommu"))?);
        let devid = ioctl::device_bind_iommufd(file.as_fd(), iommufd.as_fd())
            .map_err(|f| f.context(format!("{cdev} of {uuid}")))?;
        let ioas_id = ioctl::ioas_alloc(iommufd.as_fd())?;
        ioctl::device_attach_iommufd_pt(file.as_fd(), ioas_id)
            .map_err(|f| f.context(format!("{cdev} of {uuid} to IOAS {ioas_id}")))?;
        let backend = Backend::Iommufd {
            iommufd,
            ioas_id,
            devid,
        };
        Ok(Self::with_backend(file, backend, uuid, OpenPath::Iommufd))
    }

    /// Wraps a VFIO device fd that another process opened and passed on
    /// (as QEMU's `vfio-pci,fd=N` takes one). `label` names the device in
    /// messages (its UUID). Everything but DMA mapping works on it; the
    /// process that opened it keeps the IOMMU context.
    pub fn from_fd(fd: OwnedFd, label: &str) -> Self {
        Self::with_backend(fd.into(), Backend::Inherited, label, OpenPath::Inherited)
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
        self.file.as_raw_fd()
    }

    /// The iommufd device id (`out_devid` of BIND), on the iommufd path.
    pub fn iommufd_devid(&self) -> Option<u32> {
        match self.backend {
            Backend::Iommufd { devid, .. } => Some(devid),
            Backend::Legacy { .. } | Backend::Inherited => None,
        }
    }

    /// `VFIO_DEVICE_RESET`.
    pub fn reset(&self) -> Result<()> {
        Ok(ioctl::device_reset(self.as_fd())?)
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
        self.file
            .read_at(buf, pos)
            .map_err(|e| Self::pos_err("read", pos, buf.len(), errno_of(&e), 0))
    }

    /// `pwrite` at absolute file position `pos`; returns the byte count.
    pub fn pwrite(&self, pos: u64, buf: &[u8]) -> Result<usize> {
        self.file
            .write_at(buf, pos)
            .map_err(|e| Self::pos_err("write", pos, buf.len(), errno_of(&e), 0))
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
        let ctx = |f: ioctl::Failed| f.context(format!("iova {iova:#x}, {len:#x} bytes"));
        match &self.backend {
            Backend::Inherited => return Err(no_iommu_context(&self.uuid)),
            Backend::Legacy { container, .. } => {
                let map = vfio::vfio_iommu_type1_dma_map {
                    argsz: size_of::<vfio::vfio_iommu_type1_dma_map>() as u32,
                    flags: vfio::VFIO_DMA_MAP_FLAG_READ | vfio::VFIO_DMA_MAP_FLAG_WRITE,
                    vaddr,
                    iova,
                    size: len,
                };
                // SAFETY: `mem` is guest memory, shared with the device by
                // design and only copied in and out by the library; it stays
                // mapped until the unmap because `self.dma` keeps an Arc of it
                // until then (and the container, the mapping's owner, is
                // closed after the device on drop).
                unsafe { ioctl::iommu_map_dma(container.as_fd(), &map) }.map_err(ctx)?;
            }
            Backend::Iommufd {
                iommufd, ioas_id, ..
            } => {
                let map = uapi::IommuIoasMap {
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
                // SAFETY: as for the legacy path: `mem` is guest memory that
                // `self.dma` keeps alive until the unmap or the iommufd
                // closes.
                unsafe { ioctl::ioas_map(iommufd.as_fd(), &map) }.map_err(ctx)?;
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
        let ctx = |f: ioctl::Failed| f.context(format!("iova {iova:#x}, {len:#x} bytes"));
        match &self.backend {
            Backend::Inherited => return Err(no_iommu_context(&self.uuid)),
            Backend::Legacy { container, .. } => {
                ioctl::iommu_unmap_dma(container.as_fd(), iova, len).map_err(ctx)?
            }
            Backend::Iommufd {
                iommufd, ioas_id, ..
            } => ioctl::ioas_unmap(iommufd.as_fd(), *ioas_id, iova, len).map_err(ctx)?,
        }
        maps.remove(i);
        Ok(())
    }
}

impl AsFd for Device {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
    }
}

/// The errno of a failed system call (0 if it has none).
fn errno_of(e: &std::io::Error) -> i32 {
    e.raw_os_error().unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn region_offsets() {
        assert_eq!(region::offset(0), 0);
        assert_eq!(region::offset(9), 9 << 40);
        assert_eq!(region::offset(u32::MAX), (u32::MAX as u64) << 40);
    }
}
