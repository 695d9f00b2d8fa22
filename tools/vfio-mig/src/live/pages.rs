// SPDX-License-Identifier: GPL-2.0
//! Sets of guest pages: [`PageSet`] (one bit a page), the vCPUs' dirty log
//! ([`DirtyLog`], as KVM's) and the walk over guest RAM with the device's
//! dirty queries ([`collect_dirty`]).

use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::{Error, Result};

fn words_for(pages: u64) -> Result<usize> {
    usize::try_from(pages.div_ceil(64))
        .map_err(|_| Error::Invalid(format!("{pages} pages do not fit a bitmap here")))
}

/// A set of guest pages, one bit each.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageSet {
    words: Vec<u64>,
    pages: u64,
}

impl PageSet {
    /// An empty set over pages `0..pages`.
    pub fn new(pages: u64) -> Result<Self> {
        Ok(PageSet {
            words: vec![0; words_for(pages)?],
            pages,
        })
    }

    /// How many pages the set ranges over.
    pub fn pages(&self) -> u64 {
        self.pages
    }

    /// Adds `page` (false when it is out of range).
    pub fn insert(&mut self, page: u64) -> bool {
        if page >= self.pages {
            return false;
        }
        self.words[(page / 64) as usize] |= 1 << (page % 64);
        true
    }

    /// Whether `page` is in the set.
    pub fn contains(&self, page: u64) -> bool {
        page < self.pages && self.words[(page / 64) as usize] & (1 << (page % 64)) != 0
    }

    /// Pages in the set.
    pub fn count(&self) -> u64 {
        self.words.iter().map(|w| u64::from(w.count_ones())).sum()
    }

    /// Empties the set.
    pub fn clear(&mut self) {
        self.words.fill(0);
    }

    /// Adds every page of `other` (same range).
    pub fn union_with(&mut self, other: &PageSet) -> Result<()> {
        if other.pages != self.pages {
            return Err(Error::Invalid(format!(
                "page sets over {} and {} pages",
                self.pages, other.pages
            )));
        }
        for (a, b) in self.words.iter_mut().zip(&other.words) {
            *a |= b;
        }
        Ok(())
    }

    /// ORs in a bitmap of `nbits` pages starting at `first_page` (bit k of
    /// the little-endian words is page `first_page + k`), as a dirty query
    /// returns it. Bits past `nbits` are ignored.
    pub fn or_bits_at(&mut self, first_page: u64, bits: &[u64], nbits: u64) -> Result<()> {
        let end = first_page.checked_add(nbits);
        if end.is_none_or(|e| e > self.pages) || (bits.len() as u64) < nbits.div_ceil(64) {
            return Err(Error::Invalid(format!(
                "a bitmap of {nbits} pages ({} words) at page {first_page} does not fit a set \
                 of {} pages",
                bits.len(),
                self.pages
            )));
        }
        let shift = (first_page % 64) as u32;
        let base = (first_page / 64) as usize;
        for (i, &w) in bits.iter().enumerate() {
            let done = i as u64 * 64;
            if done >= nbits {
                break;
            }
            let left = nbits - done;
            let w = if left < 64 { w & ((1 << left) - 1) } else { w };
            if w == 0 {
                continue;
            }
            self.words[base + i] |= w << shift;
            if shift != 0 {
                let high = w >> (64 - shift);
                if high != 0 {
                    // In range: the bits it carries are below first_page + nbits.
                    self.words[base + i + 1] |= high;
                }
            }
        }
        Ok(())
    }

    /// The first page in the set at or after `from`.
    fn next_set(&self, from: u64) -> Option<u64> {
        if from >= self.pages {
            return None;
        }
        let mut i = (from / 64) as usize;
        let mut w = self.words[i] & (u64::MAX << (from % 64));
        loop {
            if w != 0 {
                let page = i as u64 * 64 + u64::from(w.trailing_zeros());
                return (page < self.pages).then_some(page);
            }
            i += 1;
            w = *self.words.get(i)?;
        }
    }

    /// The first page not in the set at or after `from` (`pages` if none).
    fn next_clear(&self, from: u64) -> u64 {
        let mut i = (from / 64) as usize;
        if from >= self.pages {
            return self.pages;
        }
        let mut w = !self.words[i] & (u64::MAX << (from % 64));
        loop {
            if w != 0 {
                return (i as u64 * 64 + u64::from(w.trailing_zeros())).min(self.pages);
            }
            i += 1;
            match self.words.get(i) {
                Some(x) => w = !x,
                None => return self.pages,
            }
        }
    }

    /// The set as runs of consecutive pages, `(first, count)`, in order.
    pub fn runs(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        let mut from = 0;
        std::iter::from_fn(move || {
            let first = self.next_set(from)?;
            let end = self.next_clear(first);
            from = end;
            Some((first, end - first))
        })
    }
}

/// The VMM's log of guest pages written by the vCPUs (here: the CPU
/// workload thread), like KVM's dirty log. Writers mark a page after
/// writing it; the migration thread takes the log, clearing it, before it
/// copies: a write that races with the copy is then always in the next
/// take.
#[derive(Debug)]
pub struct DirtyLog {
    words: Vec<AtomicU64>,
    pages: u64,
}

impl DirtyLog {
    /// A clean log over pages `0..pages`.
    pub fn new(pages: u64) -> Result<Self> {
        Ok(DirtyLog {
            words: (0..words_for(pages)?).map(|_| AtomicU64::new(0)).collect(),
            pages,
        })
    }

    /// How many pages the log covers.
    pub fn pages(&self) -> u64 {
        self.pages
    }

    /// Marks `page` written (false when out of range). Call it after the
    /// write.
    pub fn mark(&self, page: u64) -> bool {
        if page >= self.pages {
            return false;
        }
        // Release: whoever takes this bit also sees the write before it.
        self.words[(page / 64) as usize].fetch_or(1 << (page % 64), Ordering::Release);
        true
    }

    /// Swaps the log with an empty one, word by word, and ORs what it held
    /// into `set`. Returns how many pages it held.
    pub fn take_into(&self, set: &mut PageSet) -> Result<u64> {
        if set.pages != self.pages {
            return Err(Error::Invalid(format!(
                "dirty log of {} pages taken into a set of {}",
                self.pages, set.pages
            )));
        }
        let mut n = 0;
        for (w, out) in self.words.iter().zip(set.words.iter_mut()) {
            // Acquire: the page writes that set these bits are visible to
            // the copy that follows.
            let bits = w.swap(0, Ordering::AcqRel);
            n += u64::from(bits.count_ones());
            *out |= bits;
        }
        Ok(n)
    }
}

/// What one walk over guest RAM with dirty queries did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DirtyScan {
    /// Dirty queries (device round trips).
    pub queries: u32,
    /// Pages the device reported dirty.
    pub dirty: u64,
}

/// Walks pages `0..pages` with dirty queries and ORs the answers into
/// `set`. `query(first_page, total)` asks the device about `total` pages
/// from `first_page` and returns `(copied, words)`: the device covers
/// `copied = min(total, its bitmap capacity)` pages, so the walk goes on
/// from `first_page + copied`. `window` caps `total` (0: ask for all that
/// is left and let the device cap it).
///
/// An answer that covers no page or more than asked, is shorter than
/// `copied` bits, or sets bits past `copied`, is an error: the device does
/// not keep the ABI.
pub fn collect_dirty(
    pages: u64,
    window: u64,
    set: &mut PageSet,
    query: &mut dyn FnMut(u64, u64) -> Result<(u64, Vec<u64>)>,
) -> Result<DirtyScan> {
    let mut scan = DirtyScan::default();
    let mut first = 0;
    while first < pages {
        let left = pages - first;
        let total = if window == 0 { left } else { left.min(window) };
        let (copied, words) = query(first, total)?;
        scan.queries += 1;
        if copied == 0 || copied > total {
            return Err(Error::Invalid(format!(
                "dirty query of {total} pages from page {first} answered copied = {copied}"
            )));
        }
        let need = copied.div_ceil(64);
        if (words.len() as u64) < need {
            return Err(Error::Invalid(format!(
                "dirty query from page {first}: {} bitmap words for {copied} pages",
                words.len()
            )));
        }
        let tail = copied % 64;
        if tail != 0 && words[need as usize - 1] >> tail != 0 {
            return Err(Error::Invalid(format!(
                "dirty query from page {first}, copied {copied}: bits set past copied \
                 (last word {:#018x})",
                words[need as usize - 1]
            )));
        }
        let before = set.count();
        scan.dirty += words[..need as usize]
            .iter()
            .map(|w| u64::from(w.count_ones()))
            .sum::<u64>();
        set.or_bits_at(first, &words, copied)?;
        debug_assert!(set.count() >= before);
        first += copied;
    }
    Ok(scan)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    fn set_of(pages: u64, members: &[u64]) -> PageSet {
        let mut s = PageSet::new(pages).unwrap();
        for &p in members {
            assert!(s.insert(p));
        }
        s
    }

    fn members(s: &PageSet) -> Vec<u64> {
        (0..s.pages()).filter(|&p| s.contains(p)).collect()
    }

    #[test]
    fn page_set_basics_and_runs() {
        let mut s = set_of(130, &[0, 1, 2, 63, 64, 65, 100, 129]);
        assert!(!s.insert(130));
        assert!(!s.contains(130));
        assert_eq!(s.count(), 8);
        let runs: Vec<_> = s.runs().collect();
        assert_eq!(runs, [(0, 3), (63, 3), (100, 1), (129, 1)]);
        s.clear();
        assert_eq!(s.count(), 0);
        assert_eq!(s.runs().count(), 0);
        // A full set is one run that stops at the last page, not the word.
        let mut full = PageSet::new(70).unwrap();
        (0..70).for_each(|p| {
            full.insert(p);
        });
        assert_eq!(full.runs().collect::<Vec<_>>(), [(0, 70)]);
        let word = set_of(128, &(0..128).collect::<Vec<_>>());
        assert_eq!(word.runs().collect::<Vec<_>>(), [(0, 128)]);
    }

    #[test]
    fn union_counts_overlap_once() {
        let mut a = set_of(200, &[1, 5, 150]);
        let b = set_of(200, &[5, 6, 199]);
        a.union_with(&b).unwrap();
        assert_eq!(members(&a), [1, 5, 6, 150, 199]);
        assert_eq!(a.count(), 5);
        assert!(a.union_with(&PageSet::new(100).unwrap()).is_err());
    }

    #[test]
    fn or_bits_at_any_offset() {
        // Bits 0, 1, 63 of word 0 and bit 0 of word 1 (page 64 of the window).
        let bits = [1 | 2 | (1 << 63), 1];
        for first in [0u64, 1, 5, 63, 64, 100] {
            let mut s = PageSet::new(300).unwrap();
            s.or_bits_at(first, &bits, 65).unwrap();
            assert_eq!(
                members(&s),
                [first, first + 1, first + 63, first + 64],
                "at {first}"
            );
        }
        // Only nbits count: bit 64 lies past a window of 64 pages.
        let mut s = PageSet::new(300).unwrap();
        s.or_bits_at(10, &bits, 64).unwrap();
        assert_eq!(members(&s), [10, 11, 73]);
        // Out of the set, or fewer words than bits.
        assert!(s.or_bits_at(250, &bits, 65).is_err());
        assert!(s.or_bits_at(0, &bits[..1], 65).is_err());
        assert!(s.or_bits_at(u64::MAX, &bits, 2).is_err());
    }

    /// A fake device: dirty pages `dirty`, bitmap capacity `cap` pages.
    fn fake_query(
        dirty: Vec<u64>,
        cap: u64,
        asked: &mut Vec<(u64, u64)>,
    ) -> impl FnMut(u64, u64) -> Result<(u64, Vec<u64>)> + '_ {
        move |first, total| {
            asked.push((first, total));
            let copied = total.min(cap);
            let mut words = vec![0u64; copied.div_ceil(64) as usize];
            for &p in &dirty {
                if p >= first && p < first + copied {
                    let k = p - first;
                    words[(k / 64) as usize] |= 1 << (k % 64);
                }
            }
            Ok((copied, words))
        }
    }

    #[test]
    fn dirty_walk_loops_over_the_capacity() {
        let dirty = vec![0, 99, 100, 101, 640, 999];
        let mut asked = Vec::new();
        let mut set = PageSet::new(1000).unwrap();
        let scan = collect_dirty(
            1000,
            0,
            &mut set,
            &mut fake_query(dirty.clone(), 100, &mut asked),
        )
        .unwrap();
        assert_eq!(members(&set), dirty);
        assert_eq!(
            scan,
            DirtyScan {
                queries: 10,
                dirty: 6
            }
        );
        assert_eq!(asked[0], (0, 1000));
        assert_eq!(asked[1], (100, 900));
        assert_eq!(asked[9], (900, 100));

        // A window below the capacity, not a multiple of 64.
        let mut asked = Vec::new();
        let mut set = PageSet::new(1000).unwrap();
        let scan = collect_dirty(
            1000,
            333,
            &mut set,
            &mut fake_query(dirty.clone(), 512, &mut asked),
        )
        .unwrap();
        assert_eq!(members(&set), dirty);
        assert_eq!(asked, [(0, 333), (333, 333), (666, 333), (999, 1)]);
        assert_eq!(scan.queries, 4);
    }

    #[test]
    fn dirty_walk_refuses_bad_answers() {
        let mut set = PageSet::new(100).unwrap();
        // No progress would loop forever.
        let e = collect_dirty(100, 0, &mut set, &mut |_, _| Ok((0, vec![]))).unwrap_err();
        assert!(e.to_string().contains("copied = 0"), "{e}");
        let e = collect_dirty(100, 0, &mut set, &mut |_, t| Ok((t + 1, vec![0; 2]))).unwrap_err();
        assert!(e.to_string().contains("copied = 101"), "{e}");
        let e = collect_dirty(100, 0, &mut set, &mut |_, t| Ok((t, vec![0]))).unwrap_err();
        assert!(e.to_string().contains("1 bitmap words"), "{e}");
        // Bit 36 of the second word is page 100: past copied.
        let e = collect_dirty(100, 0, &mut set, &mut |_, t| Ok((t, vec![0, 1 << 36]))).unwrap_err();
        assert!(e.to_string().contains("past copied"), "{e}");
        let e = collect_dirty(100, 0, &mut set, &mut |_, _| {
            Err(Error::Invalid("x".into()))
        })
        .unwrap_err();
        assert_eq!(e.to_string(), "x");
    }

    #[test]
    fn cpu_log_swap_and_clear() {
        let log = DirtyLog::new(200).unwrap();
        assert!(log.mark(3));
        assert!(log.mark(3));
        assert!(log.mark(199));
        assert!(!log.mark(200));
        let mut set = set_of(200, &[5]);
        assert_eq!(log.take_into(&mut set).unwrap(), 2);
        assert_eq!(members(&set), [3, 5, 199]);
        // Taken means cleared.
        let mut again = PageSet::new(200).unwrap();
        assert_eq!(log.take_into(&mut again).unwrap(), 0);
        assert!(log.take_into(&mut PageSet::new(10).unwrap()).is_err());
    }

    #[test]
    fn cpu_log_concurrent_marks_are_never_lost() {
        let log = Arc::new(DirtyLog::new(4096).unwrap());
        let writer = {
            let log = Arc::clone(&log);
            std::thread::spawn(move || {
                for p in 0..4096 {
                    log.mark(p);
                }
            })
        };
        let mut set = PageSet::new(4096).unwrap();
        let mut taken = 0;
        while !writer.is_finished() {
            taken += log.take_into(&mut set).unwrap();
        }
        writer.join().unwrap();
        taken += log.take_into(&mut set).unwrap();
        assert_eq!(set.count(), 4096);
        assert_eq!(taken, 4096, "each mark taken exactly once");
    }
}
