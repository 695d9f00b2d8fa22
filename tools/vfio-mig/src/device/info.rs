// SPDX-License-Identifier: GPL-2.0
//! What a device says about itself: `VFIO_DEVICE_GET_INFO`,
//! `VFIO_DEVICE_GET_REGION_INFO` with its capability chain, and
//! `VFIO_DEVICE_GET_IRQ_INFO`, in normal and raw forms (any `argsz`).

use std::mem::size_of;
use std::os::fd::AsFd;

use super::Device;
use crate::error::{Error, Result};
use crate::ioctl::{self, ArgBuf};
use crate::uapi::vfio;

/// Size of `struct vfio_device_info` (with `cap_offset` and `pad`).
pub const DEVICE_INFO_SIZE: u32 = size_of::<vfio::vfio_device_info>() as u32;
/// Size of `struct vfio_region_info`.
pub const REGION_INFO_SIZE: u32 = size_of::<vfio::vfio_region_info>() as u32;
/// Size of `struct vfio_irq_info`.
pub const IRQ_INFO_SIZE: u32 = size_of::<vfio::vfio_irq_info>() as u32;

/// The largest argsz the raw forms allocate a buffer for.
pub(super) const RAW_ARGSZ_MAX: u32 = 1 << 20;

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

/// Refuses an `argsz` too large to allocate for a test.
pub(super) fn check_raw_argsz(argsz: u32) -> Result<()> {
    if argsz > RAW_ARGSZ_MAX {
        return Err(Error::Invalid(format!(
            "argsz {argsz} is too large to test"
        )));
    }
    Ok(())
}

impl Device {
    /// `VFIO_DEVICE_GET_INFO` with the struct's own argsz.
    pub fn info(&self) -> Result<DeviceInfo> {
        self.info_raw(DEVICE_INFO_SIZE)
    }

    /// `VFIO_DEVICE_GET_INFO` with any `argsz` (at most 1 MiB; the buffer is
    /// at least the struct's size).
    pub fn info_raw(&self, argsz: u32) -> Result<DeviceInfo> {
        check_raw_argsz(argsz)?;
        let mut arg = ArgBuf::new(argsz, &[], &[], DEVICE_INFO_SIZE as usize);
        ioctl::device_get_info(self.as_fd(), &mut arg)
            .map_err(|f| f.context(format!("argsz {argsz}")))?;
        let b = arg.bytes();
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
        check_raw_argsz(argsz)?;
        let mut arg = ArgBuf::new(argsz, &[0, index], &[], REGION_INFO_SIZE as usize);
        ioctl::device_get_region_info(self.as_fd(), &mut arg)
            .map_err(|f| f.context(format!("index {index}, argsz {argsz}")))?;
        let b = arg.bytes();
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
        check_raw_argsz(argsz)?;
        let mut arg = ArgBuf::new(argsz, &[0, index], &[], IRQ_INFO_SIZE as usize);
        ioctl::device_get_irq_info(self.as_fd(), &mut arg)
            .map_err(|f| f.context(format!("index {index}, argsz {argsz}")))?;
        let b = arg.bytes();
        Ok(IrqInfo {
            index: ne_u32(b, 8),
            flags: ne_u32(b, 4),
            count: ne_u32(b, 12),
        })
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
