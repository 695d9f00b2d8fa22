// SPDX-License-Identifier: GPL-2.0

//! Tests of the page bitmap, including a randomized comparison with a
//! `Vec<bool>` model.

use super::rng::Rng;
use crate::bitmap::{words_for, Bitmap, BitmapError};

fn new_map(npages: usize) -> Bitmap<Vec<u64>> {
    Bitmap::new(vec![0xdead_beef_u64; words_for(npages)], npages).expect("bitmap")
}

fn collect(map: &Bitmap<Vec<u64>>) -> Vec<usize> {
    let mut out = Vec::new();
    let mut from = 0;
    while let Some(p) = map.next_set(from) {
        out.push(p);
        from = p + 1;
    }
    out
}

#[test]
fn new_checks_storage_and_zeroes_it() {
    assert_eq!(
        Bitmap::new(vec![0u64; 1], 65).err(),
        Some(BitmapError::TooSmall)
    );
    let map = new_map(130);
    assert_eq!(map.count(), 0);
    assert!(map.words().iter().all(|w| *w == 0));
    assert_eq!(map.words().len(), 3);
    // Larger storage is fine; the extra words are not part of words().
    let map = Bitmap::new(vec![u64::MAX; 5], 64).expect("bitmap");
    assert_eq!(map.words(), &[0]);
    let empty = Bitmap::new(Vec::<u64>::new(), 0).expect("bitmap");
    assert_eq!(empty.next_set(0), None);
    assert!(!empty.test(0));
}

#[test]
fn word_boundaries() {
    let mut map = new_map(129);
    for p in [0, 62, 63, 64, 65, 127, 128] {
        assert_eq!(map.set(p), Ok(true));
        assert_eq!(map.set(p), Ok(false));
        assert!(map.test(p));
    }
    assert_eq!(map.count(), 7);
    assert_eq!(map.words()[0], 1 | (1 << 62) | (1 << 63));
    assert_eq!(map.words()[1], 1 | 2 | (1 << 63));
    assert_eq!(map.words()[2], 1);
    assert_eq!(collect(&map), vec![0, 62, 63, 64, 65, 127, 128]);
    assert_eq!(map.next_set(63), Some(63));
    assert_eq!(map.next_set(66), Some(127));
    assert_eq!(map.next_set(129), None);
    assert_eq!(map.clear(63), Ok(true));
    assert_eq!(map.clear(63), Ok(false));
    assert_eq!(map.next_set(63), Some(64));
    assert_eq!(map.count(), 6);
}

#[test]
fn out_of_range_never_panics() {
    let mut map = new_map(100);
    assert_eq!(map.set(100), Err(BitmapError::OutOfRange));
    assert_eq!(map.set(usize::MAX), Err(BitmapError::OutOfRange));
    assert_eq!(map.clear(100), Err(BitmapError::OutOfRange));
    assert!(!map.test(100));
    assert!(!map.test(usize::MAX));
    assert_eq!(map.next_set(usize::MAX), None);
    assert_eq!(map.set_range(99, 2), Err(BitmapError::OutOfRange));
    assert_eq!(map.set_range(usize::MAX, 2), Err(BitmapError::OutOfRange));
    assert_eq!(map.set_range(1, usize::MAX), Err(BitmapError::OutOfRange));
    assert_eq!(map.clear_range(0, 101), Err(BitmapError::OutOfRange));
    assert_eq!(map.count(), 0, "failed ranges change nothing");
    assert_eq!(map.set_range(99, 1), Ok(()));
    assert_eq!(map.set_range(100, 0), Ok(()));
    assert!(map.test(99));
}

#[test]
fn last_bit_and_full() {
    for npages in [1, 63, 64, 65, 127, 128, 129, 1000] {
        let mut map = new_map(npages);
        map.set_all();
        assert_eq!(map.count(), npages);
        assert_eq!(collect(&map), (0..npages).collect::<Vec<_>>());
        let last = map.words().last().copied().expect("words");
        let tail = npages % 64;
        if tail != 0 {
            assert_eq!(last, (1u64 << tail) - 1, "no bits beyond npages");
        } else {
            assert_eq!(last, u64::MAX);
        }
        assert!(map.test(npages - 1));
        assert_eq!(map.next_set(npages - 1), Some(npages - 1));
        assert_eq!(map.clear(npages - 1), Ok(true));
        assert_eq!(map.next_set(npages - 1), None);
        map.clear_all();
        assert_eq!(map.count(), 0);
        assert!(map.is_empty());
        assert_eq!(map.next_set(0), None);
        assert!(map.words().iter().all(|w| *w == 0));
    }
}

#[test]
fn ranges_across_words() {
    let mut map = new_map(300);
    map.set_range(60, 10).expect("range");
    assert_eq!(collect(&map), (60..70).collect::<Vec<_>>());
    map.set_range(0, 300).expect("range");
    assert_eq!(map.count(), 300);
    map.clear_range(63, 130).expect("range");
    assert_eq!(map.count(), 170);
    assert!(map.test(62) && !map.test(63) && !map.test(192) && map.test(193));
    map.set_range(64, 64).expect("range");
    assert_eq!(map.words()[1], u64::MAX);
    assert_eq!(map.count(), 234);
}

#[test]
fn take_next_clears() {
    let mut map = new_map(200);
    map.set(5).unwrap();
    map.set(150).unwrap();
    assert_eq!(map.take_next(6), Some(150));
    assert_eq!(map.take_next(6), None);
    assert_eq!(map.take_next(0), Some(5));
    assert!(map.is_empty());
}

#[test]
fn random_against_model() {
    for seed in 0..200u64 {
        let mut rng = Rng::new(seed);
        let npages = rng.range(1, 700);
        let mut map = new_map(npages);
        let mut model = vec![false; npages];
        for _ in 0..300 {
            match rng.below(7) {
                0 | 1 => {
                    let p = rng.below(npages + 3);
                    let r = map.set(p);
                    if p < npages {
                        assert_eq!(r, Ok(!model[p]));
                        model[p] = true;
                    } else {
                        assert_eq!(r, Err(BitmapError::OutOfRange));
                    }
                }
                2 => {
                    let p = rng.below(npages + 3);
                    let r = map.clear(p);
                    if p < npages {
                        assert_eq!(r, Ok(model[p]));
                        model[p] = false;
                    } else {
                        assert_eq!(r, Err(BitmapError::OutOfRange));
                    }
                }
                3 | 4 => {
                    let start = rng.below(npages + 1);
                    let len = rng.below(npages + 2 - start);
                    let set = rng.below(2) == 0;
                    let r = if set {
                        map.set_range(start, len)
                    } else {
                        map.clear_range(start, len)
                    };
                    if start + len <= npages {
                        assert_eq!(r, Ok(()));
                        model[start..start + len].iter_mut().for_each(|b| *b = set);
                    } else {
                        assert_eq!(r, Err(BitmapError::OutOfRange));
                    }
                }
                5 => {
                    let from = rng.below(npages + 2);
                    let want = (from..npages).find(|&p| model[p]);
                    assert_eq!(map.next_set(from), want);
                }
                _ => match rng.below(10) {
                    0 => {
                        map.clear_all();
                        model.iter_mut().for_each(|b| *b = false);
                    }
                    1 => {
                        map.set_all();
                        model.iter_mut().for_each(|b| *b = true);
                    }
                    _ => {}
                },
            }
            assert_eq!(map.count(), model.iter().filter(|b| **b).count());
        }
        for (p, b) in model.iter().enumerate() {
            assert_eq!(map.test(p), *b);
        }
        assert_eq!(
            collect(&map),
            (0..npages).filter(|&p| model[p]).collect::<Vec<_>>()
        );
    }
}
