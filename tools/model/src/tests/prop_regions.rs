// SPDX-License-Identifier: GPL-2.0

//! Property tests of access decoding against models written from the
//! documentation: file offsets to regions (`Documentation/device.rst`), the
//! migration region's fields and areas, the dirty query and set-buffer
//! ranges (`Documentation/migration-abi.rst`). Offsets and lengths are
//! biased to the boundaries, where the mistakes are.

use proptest::prelude::*;

use crate::abi::migration::Field;
use crate::migration_region::{decode, dirty_query_pages, set_buffer_span, Refused, Target};
use crate::regions::{locate, BadAccess, Region};

/// The fields of `struct vfio_device_migration_info`: offset, width,
/// writable (migration-abi.rst, "The struct").
const FIELDS: [(u64, usize, bool, Field); 10] = [
    (0, 4, true, Field::DeviceState),
    (4, 8, false, Field::PrecopyOnly),
    (12, 8, false, Field::Compatible),
    (20, 8, false, Field::PostcopyOnly),
    (28, 8, true, Field::ThresholdSize),
    (36, 8, true, Field::DataOffset),
    (44, 8, true, Field::DataSize),
    (52, 8, true, Field::DirtyStartAddr),
    (60, 8, true, Field::DirtyTotal),
    (68, 8, false, Field::DirtyCopied),
];
const DATA: u64 = 0x1000;
const BITMAP: u64 = 0x10_1000;
const END: u64 = 0x14_1000;

fn model_decode(offset: u64, len: usize, write: bool) -> Result<Target, Refused> {
    let end = offset.checked_add(len as u64).ok_or(Refused)?;
    if len == 0 || end > END {
        return Err(Refused);
    }
    if offset >= BITMAP {
        return Ok(Target::Bitmap((offset - BITMAP) as usize));
    }
    if offset >= DATA {
        return if end <= BITMAP {
            Ok(Target::Data((offset - DATA) as usize))
        } else {
            Err(Refused)
        };
    }
    FIELDS
        .iter()
        .find(|f| f.0 == offset && f.1 == len && (f.2 || !write))
        .map(|f| Target::Field(f.3))
        .ok_or(Refused)
}

/// A value near one of `marks`, or anything.
fn near(marks: &'static [u64]) -> impl Strategy<Value = u64> {
    prop_oneof![
        4 => (prop::sample::select(marks), -20i64..20)
            .prop_map(|(m, d)| m.wrapping_add_signed(d)),
        1 => any::<u64>(),
    ]
}

fn length() -> impl Strategy<Value = usize> {
    prop_oneof![
        4 => 0usize..17,
        1 => prop::sample::select(&[4096usize, 0x10_0000, 0x10_0001, 0x4_0000, 0x14_1000][..]),
        1 => any::<usize>(),
    ]
}

const REGION_MARKS: &[u64] = &[
    0,
    4,
    12,
    20,
    28,
    36,
    44,
    52,
    60,
    68,
    76,
    DATA,
    BITMAP,
    END,
    u64::MAX,
];

/// Regions by VFIO index, as device.rst lists them.
fn region_of(index: u64) -> Option<Region> {
    match index {
        0 => Some(Region::Bar0),
        2 => Some(Region::Bar2),
        7 => Some(Region::Config),
        9 => Some(Region::Migration),
        _ => None,
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 4096, ..ProptestConfig::default() })]

    #[test]
    fn migration_region_decoding(offset in near(REGION_MARKS), len in length(), write in any::<bool>()) {
        prop_assert_eq!(decode(offset, len, write), model_decode(offset, len, write));
    }

    #[test]
    fn file_offsets(
        index in prop_oneof![4 => 0u64..12, 1 => any::<u64>().prop_map(|i| i >> 40)],
        sizes in prop::array::uniform4(prop_oneof![Just(0u64), 1u64..0x30_0000, Just(1 << 40)]),
        offset in near(&[0, 0x100, 0x1000, 0x4_0000, 0x20_0000, 0x14_1000, (1 << 40) - 1]),
        count in length(),
    ) {
        let size_of = |r: Region| match r {
            Region::Bar0 => sizes[0],
            Region::Bar2 => sizes[1],
            Region::Config => sizes[2],
            Region::Migration => sizes[3],
        };
        let offset = offset & ((1 << 40) - 1);
        let pos = (index << 40) | offset;
        let want = region_of(index)
            .filter(|&r| {
                count > 0
                    && offset
                        .checked_add(count as u64)
                        .is_some_and(|end| end <= size_of(r))
            })
            .map(|r| (r, offset))
            .ok_or(BadAccess);
        prop_assert_eq!(locate(pos, count, size_of), want);
    }

    #[test]
    fn dirty_query_ranges(
        start in near(&[0, 4096, 1 << 32, 1 << 52, u64::MAX - 4095]),
        total in near(&[0, 1, 0x20_0000, 1 << 40, 1 << 52, u64::MAX / 4096]),
    ) {
        let want = if start % 4096 != 0 {
            Err(Refused)
        } else {
            total
                .checked_mul(4096)
                .and_then(|bytes| start.checked_add(bytes))
                .map(|_| total.min(0x20_0000))
                .ok_or(Refused)
        };
        prop_assert_eq!(dirty_query_pages(start, total), want);
    }

    #[test]
    fn set_buffer_ranges(offset in near(REGION_MARKS), size in near(&[0, 1, 0x10_0000, u64::MAX])) {
        let want = match offset.checked_add(size) {
            Some(end) if offset >= DATA && end <= BITMAP => {
                Ok((offset - DATA) as usize..(end - DATA) as usize)
            }
            _ => Err(Refused),
        };
        prop_assert_eq!(set_buffer_span(offset, size), want);
    }
}
