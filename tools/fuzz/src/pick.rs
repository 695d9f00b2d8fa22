// SPDX-License-Identifier: GPL-2.0
//! Random choices, biased to where mistakes live: the edges of regions,
//! fields and mappings, widths of 1, 2, 4 and 8 bytes, values that are
//! 0, all ones or one past a limit.

use rand::rngs::Xoshiro256PlusPlus;
use rand::RngExt;

/// The fuzzer's random source: one seed gives one sequence of operations.
pub type Rng = Xoshiro256PlusPlus;

/// True with probability `num / den`.
pub fn chance(rng: &mut Rng, num: u32, den: u32) -> bool {
    rng.random_range(0..den) < num
}

/// One of `items`.
pub fn one<T: Copy>(rng: &mut Rng, items: &[T]) -> T {
    items[rng.random_range(0..items.len())]
}

/// An index chosen with the given weights.
pub fn weighted(rng: &mut Rng, weights: &[u32]) -> usize {
    let total: u32 = weights.iter().sum();
    let mut x = rng.random_range(0..total);
    for (i, &w) in weights.iter().enumerate() {
        if x < w {
            return i;
        }
        x -= w;
    }
    weights.len() - 1
}

/// An offset near one of `marks` (a few bytes either side), sometimes
/// anywhere below `limit`.
pub fn near(rng: &mut Rng, marks: &[u64], limit: u64) -> u64 {
    if chance(rng, 1, 8) {
        return rng.random_range(0..limit.max(1));
    }
    let m = one(rng, marks);
    m.wrapping_add_signed(rng.random_range(-9i64..=9))
}

/// An access width: mostly 1, 2, 4 or 8 bytes.
pub fn width(rng: &mut Rng) -> usize {
    match weighted(rng, &[12, 2, 1, 1]) {
        0 => one(rng, &[1, 2, 4, 8]),
        1 => rng.random_range(0..=16),
        2 => rng.random_range(17..=8192),
        _ => one(rng, &[4096, 4112, 0x10_0000, 0x10_0001, 0x4_0000]),
    }
}

/// A 32-bit register value: small numbers, edges, or anything.
pub fn value32(rng: &mut Rng) -> u32 {
    match weighted(rng, &[4, 2, 2]) {
        0 => rng.random_range(0..=8),
        1 => one(
            rng,
            &[0, 1, 2, 3, 0xff, 0x1000, 0xffff_ffff, 0x8000_0000, 513, 512],
        ),
        _ => rng.random(),
    }
}

/// A 64-bit field value.
pub fn value64(rng: &mut Rng) -> u64 {
    match weighted(rng, &[3, 2, 2]) {
        0 => rng.random_range(0..=16),
        1 => one(
            rng,
            &[
                0,
                1,
                0x1000,
                0x1001,
                0x10_1000,
                0x14_1000,
                1 << 20,
                u64::MAX,
                u64::MAX - 4095,
            ],
        ),
        _ => rng.random(),
    }
}

/// `len` random bytes.
pub fn bytes(rng: &mut Rng, len: usize) -> Vec<u8> {
    let mut b = vec![0u8; len];
    rng.fill(&mut b[..]);
    b
}
