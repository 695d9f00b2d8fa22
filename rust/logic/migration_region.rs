// SPDX-License-Identifier: GPL-2.0

//! Layout of the migration region (VFIO region 9) and decoding of accesses
//! to it: the packed `struct vfio_device_migration_info` of the 2018
//! proposal, a reserved gap, the data area and the dirty-bitmap area.

use super::stream::PAGE_SIZE;

/// End of the packed register structure.
#[cfg(test)]
pub(crate) const INFO_SIZE: u64 = 76;
/// Start of the data area (device state chunks).
pub(crate) const DATA_OFF: u64 = 4096;
/// Size of the data area.
pub(crate) const DATA_LEN: u64 = 1 << 20;
/// Start of the dirty-bitmap area.
pub(crate) const BITMAP_OFF: u64 = DATA_OFF + DATA_LEN;
/// Size of the dirty-bitmap area.
pub(crate) const BITMAP_LEN: u64 = 64 << 10;
/// Size of the whole region.
pub(crate) const REGION_SIZE: u64 = BITMAP_OFF + BITMAP_LEN;
/// Most pages one dirty-bitmap query covers.
pub(crate) const BITMAP_PAGES: u64 = BITMAP_LEN * 8;

/// A field of `struct vfio_device_migration_info`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Field {
    /// `device_state` (u32, read/write).
    DeviceState,
    /// `pending.precopy_only` (read-only).
    PrecopyOnly,
    /// `pending.compatible` (read-only).
    Compatible,
    /// `pending.postcopy_only` (read-only).
    PostcopyOnly,
    /// `pending.threshold_size`.
    ThresholdSize,
    /// `data.offset`.
    DataOffset,
    /// `data.size`.
    DataSize,
    /// `dirty_pfns.start_addr`.
    DirtyStart,
    /// `dirty_pfns.total`.
    DirtyTotal,
    /// `dirty_pfns.copied` (read-only).
    DirtyCopied,
}

/// Offset, width and writability of each field.
const FIELDS: [(Field, u64, usize, bool); 10] = [
    (Field::DeviceState, 0, 4, true),
    (Field::PrecopyOnly, 4, 8, false),
    (Field::Compatible, 12, 8, false),
    (Field::PostcopyOnly, 20, 8, false),
    (Field::ThresholdSize, 28, 8, true),
    (Field::DataOffset, 36, 8, true),
    (Field::DataSize, 44, 8, true),
    (Field::DirtyStart, 52, 8, true),
    (Field::DirtyTotal, 60, 8, true),
    (Field::DirtyCopied, 68, 8, false),
];

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
    if offset >= BITMAP_OFF {
        return Ok(Target::Bitmap((offset - BITMAP_OFF) as usize));
    }
    if offset >= DATA_OFF {
        if end > BITMAP_OFF {
            return Err(Refused);
        }
        return Ok(Target::Data((offset - DATA_OFF) as usize));
    }
    FIELDS
        .iter()
        .find(|&&(_, off, width, _)| off == offset && width == len)
        .filter(|&&(_, _, _, writable)| writable || !write)
        .map(|&(field, ..)| Target::Field(field))
        .ok_or(Refused)
}

/// A checked dirty-bitmap query: how many pages the answer covers.
///
/// `start` must be page aligned and `start + total` pages must not
/// overflow the 64-bit IOVA space.
pub(crate) fn dirty_query_pages(start: u64, total: u64) -> Result<u64, Refused> {
    if start & (PAGE_SIZE as u64 - 1) != 0 {
        return Err(Refused);
    }
    total
        .checked_mul(PAGE_SIZE as u64)
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
    if data_offset < DATA_OFF || end > BITMAP_OFF {
        return Err(Refused);
    }
    Ok((data_offset - DATA_OFF) as usize..(end - DATA_OFF) as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_tile_the_packed_struct() {
        let mut next = 0;
        for (_, off, width, _) in FIELDS {
            assert_eq!(off, next);
            next = off + width as u64;
        }
        assert_eq!(next, INFO_SIZE);
    }

    #[test]
    fn whole_fields_only() {
        for (field, off, width, writable) in FIELDS {
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
        assert_eq!(decode(DATA_OFF, 1, true), Ok(Target::Data(0)));
        assert_eq!(
            decode(DATA_OFF, DATA_LEN as usize, true),
            Ok(Target::Data(0))
        );
        assert_eq!(decode(BITMAP_OFF - 1, 2, false), Err(Refused));
        assert_eq!(decode(BITMAP_OFF + 8, 8, false), Ok(Target::Bitmap(8)));
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
        assert_eq!(set_buffer_span(DATA_OFF, 10), Ok(0..10));
        assert_eq!(
            set_buffer_span(DATA_OFF + 5, DATA_LEN - 5),
            Ok(5..DATA_LEN as usize)
        );
        assert_eq!(set_buffer_span(DATA_OFF - 1, 1), Err(Refused));
        assert_eq!(set_buffer_span(DATA_OFF, DATA_LEN + 1), Err(Refused));
        assert_eq!(set_buffer_span(u64::MAX, 1), Err(Refused));
    }
}
