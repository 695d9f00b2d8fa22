// SPDX-License-Identifier: GPL-2.0

//! Decoding of accesses to the migration region (VFIO region 9), whose
//! layout is [`super::abi::migration`]: the packed `struct
//! vfio_device_migration_info` of the 2018 proposal, a reserved gap, the
//! data area and the dirty-bitmap area.

use super::abi::migration::{
    Field, BITMAP_LEN, BITMAP_OFFSET, BITMAP_PAGES, DATA_LEN, DATA_OFFSET, REGION_SIZE,
};
use super::abi::GUEST_PAGE_SIZE;

/// What an access of the region addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Target {
    /// One whole field.
    Field(Field),
    /// Bytes of the data area, from this offset inside it.
    Data(usize),
    /// Bytes of the bitmap area, from this offset inside it.
    Bitmap(usize),
}

/// An access the region refuses (`EINVAL`, no side effect).
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Refused;

/// Decodes an access of `len` bytes at region offset `offset`.
///
/// A field is accessed whole: at its own offset, with its own width, and
/// only written if it is an input. The data and bitmap areas take any byte
/// range inside them. Everything else is refused.
pub(crate) fn decode(offset: u64, len: usize, write: bool) -> Result<Target, Refused> {
    let end = offset.checked_add(len as u64).ok_or(Refused)?;
    if len == 0 || end > REGION_SIZE {
        return Err(Refused);
    }
    if offset >= BITMAP_OFFSET {
        return Ok(Target::Bitmap((offset - BITMAP_OFFSET) as usize));
    }
    if offset >= DATA_OFFSET {
        if end > BITMAP_OFFSET {
            return Err(Refused);
        }
        return Ok(Target::Data((offset - DATA_OFFSET) as usize));
    }
    Field::ALL
        .into_iter()
        .find(|f| f.offset() == offset && f.width() == len)
        .filter(|f| f.writable() || !write)
        .map(Target::Field)
        .ok_or(Refused)
}

/// The areas of the region userspace may mmap, as (region offset, size):
/// the data area and the bitmap area, in the order of their sparse-mmap
/// capability.
pub(crate) const MMAP_AREAS: [(u64, u64); 2] =
    [(DATA_OFFSET, DATA_LEN), (BITMAP_OFFSET, BITMAP_LEN)];

/// An mmap-able area of the region.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum MmapArea {
    /// The data area, read and write.
    Data,
    /// The bitmap area, read only: the device owns its contents.
    Bitmap,
}

/// Decodes a shared mapping of `len` bytes at region offset `offset`
/// (`writable`: it may ever be written): the area and the offset inside it.
/// The mapping must lie inside one area; the bitmap area is mapped read
/// only. Everything else is refused (`EINVAL`).
pub(crate) fn decode_mmap(
    offset: u64,
    len: u64,
    writable: bool,
) -> Result<(MmapArea, u64), Refused> {
    let end = offset.checked_add(len).ok_or(Refused)?;
    let areas = [MmapArea::Data, MmapArea::Bitmap]
        .into_iter()
        .zip(MMAP_AREAS);
    for (area, (start, size)) in areas {
        if len > 0 && offset >= start && end <= start + size {
            if writable && area == MmapArea::Bitmap {
                return Err(Refused);
            }
            return Ok((area, offset - start));
        }
    }
    Err(Refused)
}

/// A checked dirty-bitmap query: how many pages the answer covers.
///
/// `start` must be page aligned and `start + total` pages must not
/// overflow the 64-bit IOVA space.
pub(crate) fn dirty_query_pages(start: u64, total: u64) -> Result<u64, Refused> {
    if start & (GUEST_PAGE_SIZE - 1) != 0 {
        return Err(Refused);
    }
    total
        .checked_mul(GUEST_PAGE_SIZE)
        .and_then(|bytes| start.checked_add(bytes))
        .ok_or(Refused)?;
    Ok(total.min(BITMAP_PAGES))
}

/// The data-area range of a set-buffer action: `data.offset` (a region
/// offset) and `data.size` must lie inside the data area.
pub(crate) fn set_buffer_span(
    data_offset: u64,
    size: u64,
) -> Result<core::ops::Range<usize>, Refused> {
    let end = data_offset.checked_add(size).ok_or(Refused)?;
    if data_offset < DATA_OFFSET || end > BITMAP_OFFSET {
        return Err(Refused);
    }
    Ok((data_offset - DATA_OFFSET) as usize..(end - DATA_OFFSET) as usize)
}

#[cfg(test)]
mod tests {
    use super::super::abi::migration::{BITMAP_LEN, DATA_LEN, INFO_SIZE};
    use super::*;

    #[test]
    fn fields_tile_the_packed_struct() {
        let mut next = 0;
        for f in Field::ALL {
            assert_eq!(f.offset(), next);
            next = f.offset() + f.width() as u64;
        }
        assert_eq!(next, INFO_SIZE);
    }

    #[test]
    fn whole_fields_only() {
        for field in Field::ALL {
            let (off, width, writable) = (field.offset(), field.width(), field.writable());
            assert_eq!(decode(off, width, false), Ok(Target::Field(field)));
            let w = decode(off, width, true);
            assert_eq!(w.is_ok(), writable, "{field:?}");
            for len in 1..=8 {
                for o in off.saturating_sub(8)..off + 8 {
                    if (o, len) == (off, width) {
                        continue;
                    }
                    match decode(o, len, false) {
                        Ok(Target::Field(f)) => assert_ne!(f, field, "{o} {len}"),
                        Ok(t) => panic!("{o} {len} {t:?}"),
                        Err(Refused) => {}
                    }
                }
            }
        }
    }

    #[test]
    fn reserved_and_areas() {
        assert_eq!(decode(76, 1, false), Err(Refused));
        assert_eq!(decode(4095, 1, false), Err(Refused));
        assert_eq!(decode(4095, 2, false), Err(Refused));
        assert_eq!(decode(DATA_OFFSET, 1, true), Ok(Target::Data(0)));
        assert_eq!(
            decode(DATA_OFFSET, DATA_LEN as usize, true),
            Ok(Target::Data(0))
        );
        assert_eq!(decode(BITMAP_OFFSET - 1, 2, false), Err(Refused));
        assert_eq!(decode(BITMAP_OFFSET + 8, 8, false), Ok(Target::Bitmap(8)));
        assert_eq!(
            decode(REGION_SIZE - 1, 1, false),
            Ok(Target::Bitmap(BITMAP_LEN as usize - 1))
        );
        assert_eq!(decode(REGION_SIZE, 1, false), Err(Refused));
        assert_eq!(decode(u64::MAX, 2, false), Err(Refused));
        assert_eq!(decode(0, 0, false), Err(Refused));
    }

    #[test]
    fn dirty_queries() {
        assert_eq!(dirty_query_pages(0, 0), Ok(0));
        assert_eq!(dirty_query_pages(4096, 10), Ok(10));
        assert_eq!(dirty_query_pages(0, u64::MAX / 8192), Ok(BITMAP_PAGES));
        assert_eq!(dirty_query_pages(1, 1), Err(Refused));
        assert_eq!(dirty_query_pages(u64::MAX - 4095, 1), Err(Refused));
        assert_eq!(dirty_query_pages(0, u64::MAX), Err(Refused));
    }

    #[test]
    fn set_buffer_spans() {
        assert_eq!(set_buffer_span(DATA_OFFSET, 10), Ok(0..10));
        assert_eq!(
            set_buffer_span(DATA_OFFSET + 5, DATA_LEN - 5),
            Ok(5..DATA_LEN as usize)
        );
        assert_eq!(set_buffer_span(DATA_OFFSET - 1, 1), Err(Refused));
        assert_eq!(set_buffer_span(DATA_OFFSET, DATA_LEN + 1), Err(Refused));
        assert_eq!(set_buffer_span(u64::MAX, 1), Err(Refused));
    }

    #[test]
    fn mmap_areas() {
        assert_eq!(
            decode_mmap(DATA_OFFSET, DATA_LEN, true),
            Ok((MmapArea::Data, 0))
        );
        assert_eq!(
            decode_mmap(DATA_OFFSET + 0x3000, 0x1000, true),
            Ok((MmapArea::Data, 0x3000))
        );
        assert_eq!(
            decode_mmap(BITMAP_OFFSET, BITMAP_LEN, false),
            Ok((MmapArea::Bitmap, 0))
        );
        // Read only, inside one area, never the fields, never empty.
        assert_eq!(decode_mmap(BITMAP_OFFSET, 0x1000, true), Err(Refused));
        assert_eq!(
            decode_mmap(BITMAP_OFFSET - 0x1000, 0x2000, false),
            Err(Refused)
        );
        assert_eq!(
            decode_mmap(DATA_OFFSET, DATA_LEN + 0x1000, false),
            Err(Refused)
        );
        assert_eq!(decode_mmap(0, 0x1000, false), Err(Refused));
        assert_eq!(
            decode_mmap(BITMAP_OFFSET + BITMAP_LEN, 0x1000, false),
            Err(Refused)
        );
        assert_eq!(decode_mmap(DATA_OFFSET, 0, false), Err(Refused));
        assert_eq!(decode_mmap(u64::MAX - 0xfff, 0x1000, false), Err(Refused));
    }
}
