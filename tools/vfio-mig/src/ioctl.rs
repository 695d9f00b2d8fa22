// SPDX-License-Identifier: GPL-2.0
//! Every ioctl the library issues: its number and one typed function that
//! builds a valid argument for it. This is the only file with `unsafe` for
//! ioctls; the functions are safe because each passes the kernel memory
//! that covers what the call may read or write.
//!
//! Two functions stay `unsafe`: mapping memory for DMA ([`iommu_map_dma`],
//! [`ioas_map`]) lets the device write that memory until it is unmapped,
//! which no argument check can make safe, and [`raw`], for tests that send
//! requests of their choice.

use std::ffi::CStr;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use vfio_bindings::bindings::vfio::{
    vfio_group_status, vfio_iommu_type1_dma_map, vfio_iommu_type1_dma_unmap, VFIO_BASE,
    VFIO_DEVICE_FEATURE_DMA_LOGGING_REPORT, VFIO_DEVICE_FEATURE_DMA_LOGGING_START,
    VFIO_DEVICE_FEATURE_DMA_LOGGING_STOP, VFIO_DEVICE_FEATURE_GET, VFIO_DEVICE_FEATURE_MIGRATION,
    VFIO_DEVICE_FEATURE_MIG_DATA_SIZE, VFIO_DEVICE_FEATURE_MIG_DEVICE_STATE,
    VFIO_DEVICE_FEATURE_PROBE, VFIO_DEVICE_FEATURE_SET, VFIO_TYPE,
};

use crate::error::{last_errno, Error};
use crate::uapi::{
    IommuIoasAlloc, IommuIoasMap, IommuIoasUnmap, VfioDeviceAttachIommufdPt, VfioDeviceBindIommufd,
};

/// `_IO(VFIO_TYPE, nr)`: VFIO and iommufd ioctls carry neither direction
/// nor size in their numbers.
const fn io(nr: u32) -> u64 {
    ((VFIO_TYPE as u64) << 8) | nr as u64
}

/// Container: `VFIO_GET_API_VERSION`.
pub const VFIO_GET_API_VERSION: u64 = io(VFIO_BASE);
/// Container: `VFIO_CHECK_EXTENSION`.
pub const VFIO_CHECK_EXTENSION: u64 = io(VFIO_BASE + 1);
/// Container: `VFIO_SET_IOMMU`.
pub const VFIO_SET_IOMMU: u64 = io(VFIO_BASE + 2);
/// Group: `VFIO_GROUP_GET_STATUS`.
pub const VFIO_GROUP_GET_STATUS: u64 = io(VFIO_BASE + 3);
/// Group: `VFIO_GROUP_SET_CONTAINER`.
pub const VFIO_GROUP_SET_CONTAINER: u64 = io(VFIO_BASE + 4);
/// Group: `VFIO_GROUP_GET_DEVICE_FD`.
pub const VFIO_GROUP_GET_DEVICE_FD: u64 = io(VFIO_BASE + 6);
/// Device: `VFIO_DEVICE_GET_INFO`.
pub const VFIO_DEVICE_GET_INFO: u64 = io(VFIO_BASE + 7);
/// Device: `VFIO_DEVICE_GET_REGION_INFO`.
pub const VFIO_DEVICE_GET_REGION_INFO: u64 = io(VFIO_BASE + 8);
/// Device: `VFIO_DEVICE_GET_IRQ_INFO`.
pub const VFIO_DEVICE_GET_IRQ_INFO: u64 = io(VFIO_BASE + 9);
/// Device: `VFIO_DEVICE_SET_IRQS`.
pub const VFIO_DEVICE_SET_IRQS: u64 = io(VFIO_BASE + 10);
/// Device: `VFIO_DEVICE_RESET`.
pub const VFIO_DEVICE_RESET: u64 = io(VFIO_BASE + 11);
/// Container: `VFIO_IOMMU_MAP_DMA`.
pub const VFIO_IOMMU_MAP_DMA: u64 = io(VFIO_BASE + 13);
/// Container: `VFIO_IOMMU_UNMAP_DMA`.
pub const VFIO_IOMMU_UNMAP_DMA: u64 = io(VFIO_BASE + 14);
/// cdev: `VFIO_DEVICE_BIND_IOMMUFD`.
pub const VFIO_DEVICE_BIND_IOMMUFD: u64 = io(VFIO_BASE + 18);
/// cdev: `VFIO_DEVICE_ATTACH_IOMMUFD_PT`.
pub const VFIO_DEVICE_ATTACH_IOMMUFD_PT: u64 = io(VFIO_BASE + 19);
/// iommufd: `IOMMU_IOAS_ALLOC`.
pub const IOMMU_IOAS_ALLOC: u64 = io(0x81);
/// iommufd: `IOMMU_IOAS_MAP`.
pub const IOMMU_IOAS_MAP: u64 = io(0x85);
/// iommufd: `IOMMU_IOAS_UNMAP`.
pub const IOMMU_IOAS_UNMAP: u64 = io(0x86);

// Spot checks of the numbers against linux/vfio.h and linux/iommufd.h.
const _: () = assert!(VFIO_DEVICE_GET_INFO == 0x3b6b);
const _: () = assert!(VFIO_DEVICE_BIND_IOMMUFD == 0x3b76);
const _: () = assert!(IOMMU_IOAS_ALLOC == 0x3b81);

/// An ioctl that returned -1: its name and errno. The caller adds what it
/// was about ([`Failed::context`]) or nothing (`?` through `From`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Failed {
    /// The ioctl's uapi name.
    pub name: &'static str,
    /// errno.
    pub errno: i32,
}

impl Failed {
    /// The library error, with `what` (index, group, ...) in the message.
    pub fn context(self, what: impl Into<String>) -> Error {
        Error::Ioctl {
            name: self.name,
            what: what.into(),
            errno: self.errno,
        }
    }
}

impl From<Failed> for Error {
    fn from(f: Failed) -> Self {
        f.context(String::new())
    }
}

/// What an ioctl returns: its non-negative result, or [`Failed`].
pub type IoctlResult<T> = Result<T, Failed>;

/// Issues `request` on `fd` with `arg`.
///
/// # Safety
///
/// `arg` must be what `request` expects on `fd`: an integer, or the address
/// of memory valid for every byte the kernel may read or write for it.
unsafe fn call(
    fd: BorrowedFd<'_>,
    name: &'static str,
    request: u64,
    arg: libc::c_ulong,
) -> IoctlResult<i32> {
    // SAFETY: what `arg` points to is the caller's promise (# Safety); `fd`
    // is open for the whole call because it is borrowed.
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), request as _, arg) };
    if r < 0 {
        return Err(Failed {
            name,
            errno: last_errno(),
        });
    }
    Ok(r)
}

/// Issues any request on `fd` and returns its non-negative result, for
/// tests that send requests of their choice (unknown numbers, other
/// drivers' ioctls).
///
/// # Safety
///
/// As for any ioctl: `arg` must be what `request` expects on `fd`, an
/// integer or the address of memory valid for every byte the kernel may
/// read or write for it.
pub unsafe fn raw(fd: BorrowedFd<'_>, request: u64, arg: libc::c_ulong) -> crate::Result<i32> {
    // SAFETY: forwarded from our caller, who promises what `call` needs.
    unsafe { call(fd, "ioctl", request, arg) }
        .map_err(|f| f.context(format!("request {request:#x}")))
}

/// The argument of an ioctl whose struct starts with `argsz` and may be
/// followed by more than the struct (a capability chain, IRQ data).
///
/// # Invariants
///
/// `bytes` is at least as long as the `argsz` it starts with and as the
/// struct it stands for; `argsz` is fixed at construction.
#[derive(Debug)]
pub struct ArgBuf {
    bytes: Vec<u8>,
}

impl ArgBuf {
    /// A zeroed argument of `argsz`, then `fields` (the `u32`s that follow
    /// `argsz`), then `data`, in native byte order, padded with zeros to at
    /// least `struct_size` and `argsz` bytes.
    pub fn new(argsz: u32, fields: &[u32], data: &[u8], struct_size: usize) -> Self {
        let mut bytes: Vec<u8> = argsz.to_ne_bytes().into_iter().collect();
        bytes.extend(fields.iter().flat_map(|f| f.to_ne_bytes()));
        bytes.extend_from_slice(data);
        let len = bytes.len().max(struct_size).max(argsz as usize);
        bytes.resize(len, 0);
        ArgBuf { bytes }
    }

    /// The bytes, as the kernel left them.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    fn as_arg(&mut self) -> libc::c_ulong {
        self.bytes.as_mut_ptr() as libc::c_ulong
    }
}

/// `VFIO_GET_API_VERSION` of a container.
pub fn get_api_version(container: BorrowedFd<'_>) -> IoctlResult<i32> {
    // SAFETY: VFIO_GET_API_VERSION takes no argument.
    unsafe { call(container, "VFIO_GET_API_VERSION", VFIO_GET_API_VERSION, 0) }
}

/// `VFIO_CHECK_EXTENSION`: 1 if the container supports `extension`.
pub fn check_extension(container: BorrowedFd<'_>, extension: u32) -> IoctlResult<i32> {
    let arg = libc::c_ulong::from(extension);
    // SAFETY: VFIO_CHECK_EXTENSION takes an integer.
    unsafe { call(container, "VFIO_CHECK_EXTENSION", VFIO_CHECK_EXTENSION, arg) }
}

/// `VFIO_SET_IOMMU`: gives the container an IOMMU model.
pub fn set_iommu(container: BorrowedFd<'_>, iommu: u32) -> IoctlResult<()> {
    // SAFETY: VFIO_SET_IOMMU takes an integer.
    unsafe { call(container, "VFIO_SET_IOMMU", VFIO_SET_IOMMU, iommu.into()) }?;
    Ok(())
}

/// `VFIO_GROUP_GET_STATUS`.
pub fn group_get_status(group: BorrowedFd<'_>) -> IoctlResult<vfio_group_status> {
    let mut status = vfio_group_status {
        argsz: size_of::<vfio_group_status>() as u32,
        flags: 0,
    };
    let arg = &mut status as *mut vfio_group_status as libc::c_ulong;
    // SAFETY: `arg` is a whole vfio_group_status, which the kernel fills.
    unsafe { call(group, "VFIO_GROUP_GET_STATUS", VFIO_GROUP_GET_STATUS, arg) }?;
    Ok(status)
}

/// `VFIO_GROUP_SET_CONTAINER`: adds the group to `container`.
pub fn group_set_container(group: BorrowedFd<'_>, container: BorrowedFd<'_>) -> IoctlResult<()> {
    let cfd: RawFd = container.as_raw_fd();
    let arg = &cfd as *const RawFd as libc::c_ulong;
    // SAFETY: `arg` points to an int holding the container fd, which the
    // kernel only reads.
    unsafe {
        call(
            group,
            "VFIO_GROUP_SET_CONTAINER",
            VFIO_GROUP_SET_CONTAINER,
            arg,
        )
    }?;
    Ok(())
}

/// `VFIO_GROUP_GET_DEVICE_FD`: a new fd for the device `name` of the group.
pub fn group_get_device_fd(group: BorrowedFd<'_>, name: &CStr) -> IoctlResult<OwnedFd> {
    let request = VFIO_GROUP_GET_DEVICE_FD;
    // SAFETY: the argument is a NUL-terminated string the kernel only reads.
    let fd = unsafe {
        call(
            group,
            "VFIO_GROUP_GET_DEVICE_FD",
            request,
            name.as_ptr() as _,
        )
    }?;
    // SAFETY: a non-negative result of GET_DEVICE_FD is a new fd that
    // nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `VFIO_DEVICE_GET_INFO` into `arg` (a `vfio_device_info` and room for
/// its capabilities).
pub fn device_get_info(device: BorrowedFd<'_>, arg: &mut ArgBuf) -> IoctlResult<()> {
    let p = arg.as_arg();
    // SAFETY: the kernel reads and writes at most the struct and `argsz`
    // bytes, and `arg` holds both (its invariant).
    unsafe { call(device, "VFIO_DEVICE_GET_INFO", VFIO_DEVICE_GET_INFO, p) }?;
    Ok(())
}

/// `VFIO_DEVICE_GET_REGION_INFO` into `arg` (a `vfio_region_info` with its
/// index set, and room for the capability chain).
pub fn device_get_region_info(device: BorrowedFd<'_>, arg: &mut ArgBuf) -> IoctlResult<()> {
    let (p, request) = (arg.as_arg(), VFIO_DEVICE_GET_REGION_INFO);
    // SAFETY: as for device_get_info: `arg` covers the struct and `argsz`.
    unsafe { call(device, "VFIO_DEVICE_GET_REGION_INFO", request, p) }?;
    Ok(())
}

/// `VFIO_DEVICE_GET_IRQ_INFO` into `arg` (a `vfio_irq_info` with its index
/// set).
pub fn device_get_irq_info(device: BorrowedFd<'_>, arg: &mut ArgBuf) -> IoctlResult<()> {
    let (p, request) = (arg.as_arg(), VFIO_DEVICE_GET_IRQ_INFO);
    // SAFETY: as for device_get_info: `arg` covers the struct and `argsz`.
    unsafe { call(device, "VFIO_DEVICE_GET_IRQ_INFO", request, p) }?;
    Ok(())
}

/// `VFIO_DEVICE_SET_IRQS` with `arg` (a `vfio_irq_set` and its data).
pub fn device_set_irqs(device: BorrowedFd<'_>, arg: &mut ArgBuf) -> IoctlResult<()> {
    let p = arg.as_arg();
    // SAFETY: the kernel reads the struct, then at most `argsz` bytes of
    // header and data, and `arg` holds both (its invariant); it writes
    // nothing.
    unsafe { call(device, "VFIO_DEVICE_SET_IRQS", VFIO_DEVICE_SET_IRQS, p) }?;
    Ok(())
}

/// `VFIO_DEVICE_RESET`.
pub fn device_reset(device: BorrowedFd<'_>) -> IoctlResult<()> {
    // SAFETY: VFIO_DEVICE_RESET takes no argument.
    unsafe { call(device, "VFIO_DEVICE_RESET", VFIO_DEVICE_RESET, 0) }?;
    Ok(())
}

/// `VFIO_IOMMU_MAP_DMA`: maps `map.vaddr..+map.size` at `map.iova` for the
/// container's devices.
///
/// # Safety
///
/// Until it is unmapped, devices may read and write that memory at any
/// time: it must stay mapped in this process, and hold nothing that Rust
/// code reads or writes through references.
pub unsafe fn iommu_map_dma(
    container: BorrowedFd<'_>,
    map: &vfio_iommu_type1_dma_map,
) -> IoctlResult<()> {
    let arg = map as *const vfio_iommu_type1_dma_map as libc::c_ulong;
    // SAFETY: `arg` is a whole vfio_iommu_type1_dma_map that the kernel only
    // reads; what it maps is the caller's promise (# Safety).
    unsafe { call(container, "VFIO_IOMMU_MAP_DMA", VFIO_IOMMU_MAP_DMA, arg) }?;
    Ok(())
}

/// `VFIO_IOMMU_UNMAP_DMA` (without a dirty bitmap).
pub fn iommu_unmap_dma(container: BorrowedFd<'_>, iova: u64, size: u64) -> IoctlResult<()> {
    let mut unmap = vfio_iommu_type1_dma_unmap {
        argsz: size_of::<vfio_iommu_type1_dma_unmap>() as u32,
        flags: 0,
        iova,
        size,
        data: Default::default(),
    };
    let arg = &mut unmap as *mut vfio_iommu_type1_dma_unmap as libc::c_ulong;
    // SAFETY: `arg` is a whole vfio_iommu_type1_dma_unmap (the kernel writes
    // back `size`); no flag asks for a bitmap.
    unsafe { call(container, "VFIO_IOMMU_UNMAP_DMA", VFIO_IOMMU_UNMAP_DMA, arg) }?;
    Ok(())
}

/// `VFIO_DEVICE_BIND_IOMMUFD`: binds a device cdev to `iommufd`; returns
/// the device id.
pub fn device_bind_iommufd(device: BorrowedFd<'_>, iommufd: BorrowedFd<'_>) -> IoctlResult<u32> {
    let mut bind = VfioDeviceBindIommufd {
        argsz: size_of::<VfioDeviceBindIommufd>() as u32,
        flags: 0,
        iommufd: iommufd.as_raw_fd(),
        out_devid: 0,
    };
    let (arg, request) = (
        &mut bind as *mut _ as libc::c_ulong,
        VFIO_DEVICE_BIND_IOMMUFD,
    );
    // SAFETY: `arg` is a whole 6.12 vfio_device_bind_iommufd, whose argsz
    // tells the kernel not to look for the newer token field.
    unsafe { call(device, "VFIO_DEVICE_BIND_IOMMUFD", request, arg) }?;
    Ok(bind.out_devid)
}

/// `VFIO_DEVICE_ATTACH_IOMMUFD_PT`: attaches a bound device to the IOAS or
/// hardware page table `pt_id`.
pub fn device_attach_iommufd_pt(device: BorrowedFd<'_>, pt_id: u32) -> IoctlResult<()> {
    let mut attach = VfioDeviceAttachIommufdPt {
        argsz: size_of::<VfioDeviceAttachIommufdPt>() as u32,
        flags: 0,
        pt_id,
    };
    let (arg, request) = (
        &mut attach as *mut _ as libc::c_ulong,
        VFIO_DEVICE_ATTACH_IOMMUFD_PT,
    );
    // SAFETY: `arg` is a whole vfio_device_attach_iommufd_pt.
    unsafe { call(device, "VFIO_DEVICE_ATTACH_IOMMUFD_PT", request, arg) }?;
    Ok(())
}

/// `IOMMU_IOAS_ALLOC`: a new IOAS; returns its id.
pub fn ioas_alloc(iommufd: BorrowedFd<'_>) -> IoctlResult<u32> {
    let mut alloc = IommuIoasAlloc {
        size: size_of::<IommuIoasAlloc>() as u32,
        ..Default::default()
    };
    let arg = &mut alloc as *mut IommuIoasAlloc as libc::c_ulong;
    // SAFETY: `arg` is a whole iommu_ioas_alloc, which the kernel fills.
    unsafe { call(iommufd, "IOMMU_IOAS_ALLOC", IOMMU_IOAS_ALLOC, arg) }?;
    Ok(alloc.out_ioas_id)
}

/// `IOMMU_IOAS_MAP`: maps `map.user_va..+map.length` into an IOAS.
///
/// # Safety
///
/// As for [`iommu_map_dma`]: until it is unmapped, devices may read and
/// write that memory at any time.
pub unsafe fn ioas_map(iommufd: BorrowedFd<'_>, map: &IommuIoasMap) -> IoctlResult<()> {
    let mut map = *map;
    let arg = &mut map as *mut IommuIoasMap as libc::c_ulong;
    // SAFETY: `arg` is a whole iommu_ioas_map (the kernel writes back the
    // IOVA); what it maps is the caller's promise (# Safety).
    unsafe { call(iommufd, "IOMMU_IOAS_MAP", IOMMU_IOAS_MAP, arg) }?;
    Ok(())
}

/// `IOMMU_IOAS_UNMAP` of `iova..+length` in IOAS `ioas_id`.
pub fn ioas_unmap(
    iommufd: BorrowedFd<'_>,
    ioas_id: u32,
    iova: u64,
    length: u64,
) -> IoctlResult<()> {
    let mut unmap = IommuIoasUnmap {
        size: size_of::<IommuIoasUnmap>() as u32,
        ioas_id,
        iova,
        length,
    };
    let arg = &mut unmap as *mut IommuIoasUnmap as libc::c_ulong;
    // SAFETY: `arg` is a whole iommu_ioas_unmap (the kernel writes back the
    // length it unmapped).
    unsafe { call(iommufd, "IOMMU_IOAS_UNMAP", IOMMU_IOAS_UNMAP, arg) }?;
    Ok(())
}

/// Device: `VFIO_DEVICE_FEATURE`.
pub const VFIO_DEVICE_FEATURE: u64 = io(VFIO_BASE + 17);
/// Data file: `VFIO_MIG_GET_PRECOPY_INFO`.
pub const VFIO_MIG_GET_PRECOPY_INFO: u64 = io(VFIO_BASE + 21);
const _: () = assert!(VFIO_DEVICE_FEATURE == 0x3b75);
const _: () = assert!(VFIO_MIG_GET_PRECOPY_INFO == 0x3b79);

/// `VFIO_DEVICE_FEATURE` with `flags` (the feature and GET, SET or PROBE)
/// and the feature's `payload`, which the kernel may rewrite (GET).
///
/// Only the functions below call it, each with the payload of its feature:
/// where that payload carries addresses (DMA logging), they point to memory
/// the caller keeps alive across the call, sized for what the kernel may
/// access there.
fn device_feature(device: BorrowedFd<'_>, flags: u32, payload: &mut [u8]) -> IoctlResult<()> {
    let header = 8;
    let argsz = (header + payload.len()) as u32;
    let mut arg = ArgBuf::new(argsz, &[flags], payload, header);
    let p = arg.as_arg();
    // SAFETY: the kernel reads `argsz` and `flags`, then reads or writes at
    // most `argsz` bytes in all, which `arg` holds (its invariant); the
    // addresses inside a payload are valid for the call (see above).
    unsafe { call(device, "VFIO_DEVICE_FEATURE", VFIO_DEVICE_FEATURE, p) }?;
    payload.copy_from_slice(&arg.bytes()[header..header + payload.len()]);
    Ok(())
}

/// `VFIO_DEVICE_FEATURE_PROBE` of `feature`: whether the device has it
/// (`ENOTTY` if not).
pub fn device_feature_probe(device: BorrowedFd<'_>, feature: u32, get: bool) -> IoctlResult<()> {
    let dir = if get {
        VFIO_DEVICE_FEATURE_GET
    } else {
        VFIO_DEVICE_FEATURE_SET
    };
    device_feature(device, VFIO_DEVICE_FEATURE_PROBE | dir | feature, &mut [])
}

/// `VFIO_DEVICE_FEATURE_MIGRATION`: the device's `VFIO_MIGRATION_*` flags.
pub fn migration_flags(device: BorrowedFd<'_>) -> IoctlResult<u64> {
    let mut flags = [0u8; 8];
    device_feature(
        device,
        VFIO_DEVICE_FEATURE_GET | VFIO_DEVICE_FEATURE_MIGRATION,
        &mut flags,
    )?;
    Ok(u64::from_ne_bytes(flags))
}

/// `VFIO_DEVICE_FEATURE_MIG_DEVICE_STATE` read: the v2 state.
pub fn mig_get_state(device: BorrowedFd<'_>) -> IoctlResult<u32> {
    let mut state = [0u8; 8];
    device_feature(
        device,
        VFIO_DEVICE_FEATURE_GET | VFIO_DEVICE_FEATURE_MIG_DEVICE_STATE,
        &mut state,
    )?;
    Ok(u32::from_ne_bytes([state[0], state[1], state[2], state[3]]))
}

/// `VFIO_DEVICE_FEATURE_MIG_DEVICE_STATE` write: moves the device to v2
/// state `state`; returns the data file the new state has, if any.
pub fn mig_set_state(device: BorrowedFd<'_>, state: u32) -> IoctlResult<Option<OwnedFd>> {
    let mut arg = [0u8; 8];
    arg[..4].copy_from_slice(&state.to_ne_bytes());
    arg[4..].copy_from_slice(&(-1i32).to_ne_bytes());
    device_feature(
        device,
        VFIO_DEVICE_FEATURE_SET | VFIO_DEVICE_FEATURE_MIG_DEVICE_STATE,
        &mut arg,
    )?;
    let fd = i32::from_ne_bytes([arg[4], arg[5], arg[6], arg[7]]);
    // SAFETY: a non-negative `data_fd` is a new file descriptor the kernel
    // installed for us, owned by nobody else.
    Ok((fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(fd) }))
}

/// `VFIO_DEVICE_FEATURE_MIG_DATA_SIZE`: the bytes a `STOP_COPY` would
/// produce now.
pub fn mig_data_size(device: BorrowedFd<'_>) -> IoctlResult<u64> {
    let mut size = [0u8; 8];
    device_feature(
        device,
        VFIO_DEVICE_FEATURE_GET | VFIO_DEVICE_FEATURE_MIG_DATA_SIZE,
        &mut size,
    )?;
    Ok(u64::from_ne_bytes(size))
}

/// `VFIO_DEVICE_FEATURE_DMA_LOGGING_START` for `ranges` (IOVA, length)
/// at `page_size` granularity.
pub fn dma_logging_start(
    device: BorrowedFd<'_>,
    page_size: u64,
    ranges: &[(u64, u64)],
) -> IoctlResult<()> {
    let ranges: Vec<u64> = ranges.iter().flat_map(|&(iova, len)| [iova, len]).collect();
    let mut control = Vec::with_capacity(24);
    control.extend_from_slice(&page_size.to_ne_bytes());
    control.extend_from_slice(&(ranges.len() as u32 / 2).to_ne_bytes());
    control.extend_from_slice(&0u32.to_ne_bytes());
    control.extend_from_slice(&(ranges.as_ptr() as u64).to_ne_bytes());
    // The kernel reads `ranges` through the pointer while the call runs;
    // the vector lives until the end of this function.
    device_feature(
        device,
        VFIO_DEVICE_FEATURE_SET | VFIO_DEVICE_FEATURE_DMA_LOGGING_START,
        &mut control,
    )
}

/// `VFIO_DEVICE_FEATURE_DMA_LOGGING_STOP`.
pub fn dma_logging_stop(device: BorrowedFd<'_>) -> IoctlResult<()> {
    device_feature(
        device,
        VFIO_DEVICE_FEATURE_SET | VFIO_DEVICE_FEATURE_DMA_LOGGING_STOP,
        &mut [],
    )
}

/// `VFIO_DEVICE_FEATURE_DMA_LOGGING_REPORT` of `iova..iova + length` at
/// `page_size` into `bitmap` (bit `k` for the page at `iova + k *
/// page_size`); `EINVAL` without calling the kernel if `bitmap` is too
/// small for the range.
pub fn dma_logging_report(
    device: BorrowedFd<'_>,
    iova: u64,
    length: u64,
    page_size: u64,
    bitmap: &mut [u64],
) -> IoctlResult<()> {
    let too_small = Failed {
        name: "VFIO_DEVICE_FEATURE",
        errno: libc::EINVAL,
    };
    let pages = length.checked_div(page_size).ok_or(too_small)?.div_ceil(64);
    if pages > bitmap.len() as u64 {
        return Err(too_small);
    }
    let mut report = Vec::with_capacity(32);
    for v in [iova, length, page_size, bitmap.as_mut_ptr() as u64] {
        report.extend_from_slice(&v.to_ne_bytes());
    }
    // The kernel writes at most one bit per page of the range into
    // `bitmap`, which was checked to hold them, while the call runs.
    // A report is a GET: the kernel writes the bitmap.
    device_feature(
        device,
        VFIO_DEVICE_FEATURE_GET | VFIO_DEVICE_FEATURE_DMA_LOGGING_REPORT,
        &mut report,
    )
}

/// `VFIO_MIG_GET_PRECOPY_INFO` on a data file: `initial_bytes` and
/// `dirty_bytes`.
pub fn mig_precopy_info(data: BorrowedFd<'_>) -> IoctlResult<(u64, u64)> {
    let mut info = ArgBuf::new(24, &[0], &[], 24);
    let p = info.as_arg();
    // SAFETY: the kernel reads `argsz` and writes the 24-byte struct, which
    // `info` holds.
    unsafe {
        call(
            data,
            "VFIO_MIG_GET_PRECOPY_INFO",
            VFIO_MIG_GET_PRECOPY_INFO,
            p,
        )
    }?;
    let b = info.bytes();
    let word = |at: usize| u64::from_ne_bytes(b[at..at + 8].try_into().unwrap_or([0; 8]));
    Ok((word(8), word(16)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arg_buf_covers_struct_and_argsz() {
        let b = ArgBuf::new(4, &[7, 9], &[1, 2, 3], 32);
        assert_eq!(b.bytes().len(), 32);
        assert_eq!(&b.bytes()[..4], &4u32.to_ne_bytes());
        assert_eq!(&b.bytes()[8..12], &9u32.to_ne_bytes());
        assert_eq!(&b.bytes()[12..16], &[1, 2, 3, 0]);
        assert_eq!(ArgBuf::new(100, &[], &[], 16).bytes().len(), 100);
        assert_eq!(ArgBuf::new(0, &[1; 4], &[0; 10], 8).bytes().len(), 30);
    }

    #[test]
    fn failed_names_the_call() {
        let f = Failed {
            name: "VFIO_DEVICE_RESET",
            errno: libc::ENOTTY,
        };
        assert_eq!(Error::from(f).errno(), Some(libc::ENOTTY));
        assert!(f
            .context("group 3")
            .to_string()
            .starts_with("VFIO_DEVICE_RESET (group 3) failed: ENOTTY ("));
    }
}
