// SPDX-License-Identifier: GPL-2.0

//! Decoding of device fd offsets into (region, offset) pairs.
//!
//! As in vfio-pci and mtty, region `N` starts at file offset `N << 40`
//! ([`region::SHIFT`]).

use super::abi::region;

/// The regions the device implements.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Region {
    /// BAR0: registers.
    Bar0,
    /// BAR2: device memory.
    Bar2,
    /// PCI configuration space.
    Config,
    /// The migration region of the 2018 proposal.
    Migration,
}

impl Region {
    /// The region at VFIO index `index`, if the device implements one there.
    pub(crate) fn from_index(index: u32) -> Option<Self> {
        match index {
            region::BAR0 => Some(Region::Bar0),
            region::BAR2 => Some(Region::Bar2),
            region::CONFIG => Some(Region::Config),
            region::MIGRATION => Some(Region::Migration),
            _ => None,
        }
    }
}

/// A file access that addresses nothing (the ioctl answers `EINVAL`).
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct BadAccess;

/// Finds the region and the offset inside it of an access of `count` bytes
/// at file position `pos`, given the size of each region. The whole access
/// must fit inside one region of non-zero size.
pub(crate) fn locate(
    pos: u64,
    count: usize,
    size_of: impl Fn(Region) -> u64,
) -> Result<(Region, u64), BadAccess> {
    let index = u32::try_from(pos >> region::SHIFT).map_err(|_| BadAccess)?;
    let offset = pos & ((1u64 << region::SHIFT) - 1);
    let region = Region::from_index(index).ok_or(BadAccess)?;
    let end = offset
        .checked_add(u64::try_from(count).map_err(|_| BadAccess)?)
        .ok_or(BadAccess)?;
    if count == 0 || end > size_of(region) {
        return Err(BadAccess);
    }
    Ok((region, offset))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sizes(r: Region) -> u64 {
        match r {
            Region::Bar0 => 4096,
            Region::Bar2 => 8192,
            Region::Config => 256,
            Region::Migration => 0,
        }
    }

    #[test]
    fn decode() {
        assert_eq!(locate(0, 4, sizes), Ok((Region::Bar0, 0)));
        assert_eq!(locate(4092, 4, sizes), Ok((Region::Bar0, 4092)));
        assert_eq!(locate(4093, 4, sizes), Err(BadAccess));
        assert_eq!(locate((2 << 40) + 8191, 1, sizes), Ok((Region::Bar2, 8191)));
        assert_eq!(locate((2 << 40) + 8192, 1, sizes), Err(BadAccess));
        assert_eq!(locate((7 << 40) + 255, 1, sizes), Ok((Region::Config, 255)));
        assert_eq!(locate((7 << 40) + 255, 2, sizes), Err(BadAccess));
    }

    #[test]
    fn nothing_there() {
        assert_eq!(locate(1 << 40, 1, sizes), Err(BadAccess));
        assert_eq!(locate(9 << 40, 1, sizes), Err(BadAccess));
        assert_eq!(locate(10 << 40, 1, sizes), Err(BadAccess));
        assert_eq!(locate(u64::MAX, 1, sizes), Err(BadAccess));
        assert_eq!(locate(0, 0, sizes), Err(BadAccess));
        assert_eq!(locate(2 << 40, usize::MAX, sizes), Err(BadAccess));
        assert_eq!(
            locate((2 << 40) + u64::from(u32::MAX), usize::MAX, sizes),
            Err(BadAccess)
        );
    }
}
