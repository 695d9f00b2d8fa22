// SPDX-License-Identifier: GPL-2.0

//! The guest dirty log: which IOVA pages the device wrote by DMA since they
//! were last reported, and how a dirty-bitmap query turns it into the
//! bitmap area.
//!
//! The log is sparse so that it fits guests of any size: an ordered map of
//! chunks, each the bits of 512 consecutive pages (2 MiB of IOVA). A mark
//! finds or adds its chunk in O(log n); a query walks only the chunks that
//! hold dirty pages in its range, so its cost grows with the number of
//! dirty pages, not with the size of the range. The bitmap area is cleared
//! the same way: the query remembers which of its words it set, and the
//! next query zeroes only those.
//!
//! The log's memory is bounded: it holds at most [`MAX_CHUNKS`] chunks (a
//! device that wrote more 2 MiB regions between two reports than that has
//! written across 8 GiB). A mark that would need one more, or that the
//! store cannot allocate, turns the log into "every page is dirty" until it
//! is cleared, the safe direction for a migration; the chunks are freed
//! then, and whenever the log is cleared.
//!
//! The storage is the caller's ([`ChunkStore`]): a red-black tree of small
//! nodes in the module, a `BTreeMap` in the host tests.

/// Pages per chunk.
pub(crate) const CHUNK_PAGES: u64 = 512;
const CHUNK_WORDS: usize = (CHUNK_PAGES / 64) as usize;
/// Most chunks the log holds (each covers 2 MiB of IOVA).
pub(crate) const MAX_CHUNKS: usize = 4096;

/// The dirty bits of the 512 pages of one chunk.
pub(crate) type ChunkBits = [u64; CHUNK_WORDS];

/// The store could not grow.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct OutOfMemory;

/// Chunks by index (chunk `i` holds pages `i * 512 .. i * 512 + 512`), in
/// index order.
pub(crate) trait ChunkStore {
    /// Number of chunks.
    fn len(&self) -> usize;
    /// The bits of chunk `index`, if it is there.
    fn get_mut(&mut self, index: u64) -> Option<&mut ChunkBits>;
    /// Adds chunk `index` (not there yet) with no bits set.
    fn insert(&mut self, index: u64) -> Result<&mut ChunkBits, OutOfMemory>;
    /// Calls `visit` on the chunks with an index in `first..=last`, in
    /// increasing order, and removes those for which it returns `false`.
    fn retain_range(
        &mut self,
        first: u64,
        last: u64,
        visit: impl FnMut(u64, &mut ChunkBits) -> bool,
    );
    /// Removes every chunk and frees their memory.
    fn clear(&mut self);
}

/// The log of guest pages the device dirtied.
///
/// # Invariants
///
/// Every chunk in the store has a bit set, and there are at most `limit`.
/// When `overflowed`, a mark could not be stored: the store is empty and
/// every page counts as dirty until the log is cleared.
pub(crate) struct DirtyLog<S> {
    store: S,
    limit: usize,
    overflowed: bool,
}

impl<S: ChunkStore> DirtyLog<S> {
    /// An empty log in `store` (which must be empty) of at most `limit`
    /// chunks ([`MAX_CHUNKS`] in the module).
    pub(crate) fn new(store: S, limit: usize) -> Self {
        DirtyLog {
            store,
            limit,
            overflowed: false,
        }
    }

    /// Forgets every mark.
    pub(crate) fn clear(&mut self) {
        self.store.clear();
        self.overflowed = false;
    }

    /// Gives up precision: every page is dirty from now on, and the
    /// chunks' memory goes.
    fn overflow(&mut self) {
        self.store.clear();
        self.overflowed = true;
    }

    /// Whether the log gave up precision (then every page is reported
    /// dirty until [`Self::clear`]).
    #[cfg(test)]
    pub(crate) fn overflowed(&self) -> bool {
        self.overflowed
    }

    /// Number of chunks held.
    #[cfg(test)]
    pub(crate) fn chunks(&self) -> usize {
        self.store.len()
    }

    /// Number of dirty pages in the log.
    #[cfg(test)]
    pub(crate) fn count(&mut self) -> u64 {
        let mut n = 0;
        self.store.retain_range(0, u64::MAX, |_, bits| {
            n += bits.iter().map(|w| u64::from(w.count_ones())).sum::<u64>();
            true
        });
        n
    }

    /// The bits of chunk `index`, added if it is not there and the bound
    /// allows.
    fn chunk(&mut self, index: u64) -> Option<&mut ChunkBits> {
        if self.store.get_mut(index).is_some() {
            return self.store.get_mut(index);
        }
        if self.store.len() >= self.limit {
            return None;
        }
        self.store.insert(index).ok()
    }

    /// Marks `count` pages from page frame `first` dirty.
    pub(crate) fn mark(&mut self, first: u64, count: u64) {
        if self.overflowed {
            return;
        }
        let Some(end) = first.checked_add(count) else {
            self.overflow();
            return;
        };
        let mut page = first;
        while page < end {
            let index = page / CHUNK_PAGES;
            let chunk_end = (index + 1).saturating_mul(CHUNK_PAGES).min(end);
            let Some(bits) = self.chunk(index) else {
                self.overflow();
                return;
            };
            for p in page..chunk_end {
                let bit = p % CHUNK_PAGES;
                if let Some(w) = bits.get_mut((bit / 64) as usize) {
                    *w |= 1 << (bit % 64);
                }
            }
            page = chunk_end;
        }
    }

    /// Reports and clears the dirty pages of `pages` pages from frame
    /// `start`: `emit(k)` for each dirty page `start + k`, in increasing
    /// order. After an overflow every page is reported and nothing is
    /// cleared.
    pub(crate) fn report(&mut self, start: u64, pages: u64, mut emit: impl FnMut(u64)) {
        if pages == 0 {
            return;
        }
        let end = start.saturating_add(pages);
        if self.overflowed {
            (0..end - start).for_each(emit);
            return;
        }
        let first = start / CHUNK_PAGES;
        let last = (end - 1) / CHUNK_PAGES;
        // Report and clear; the chunks the query emptied go.
        self.store.retain_range(first, last, |index, bits| {
            let base = index * CHUNK_PAGES;
            let mut left = 0;
            for (w, word) in bits.iter_mut().enumerate() {
                if *word == 0 {
                    continue;
                }
                let word_base = base + w as u64 * 64;
                let hit = *word & word_mask(word_base, start, end);
                *word &= !hit;
                left |= *word;
                let mut rest = hit;
                while rest != 0 {
                    let bit = u64::from(rest.trailing_zeros());
                    rest &= rest - 1;
                    emit(word_base + bit - start);
                }
            }
            left != 0
        });
    }
}

/// The bits of the word of pages `word_base..word_base + 64` that fall in
/// `start..end`.
fn word_mask(word_base: u64, start: u64, end: u64) -> u64 {
    let lo = start.saturating_sub(word_base).min(64);
    let hi = end.saturating_sub(word_base).min(64);
    if lo >= hi {
        return 0;
    }
    let upto_hi = if hi == 64 { u64::MAX } else { (1 << hi) - 1 };
    let below_lo = if lo == 64 { u64::MAX } else { (1 << lo) - 1 };
    upto_hi & !below_lo
}

/// The bitmap area of the migration region as a query fills it: bit `k` of
/// its little-endian u64 words, i.e. bit `k % 8` of byte `k / 8`.
///
/// `touched` lists the words set since the area was last cleared, so that
/// clearing costs what setting did. It has room for every word of the
/// area, and a word is listed only when it goes from zero to non-zero, so
/// it never fills up.
pub(crate) struct BitmapArea<'a> {
    bytes: &'a mut [u8],
    touched: &'a mut [u32],
    len: &'a mut usize,
}

impl<'a> BitmapArea<'a> {
    /// The area `bytes` (a whole number of words) and its record of set
    /// words (`touched[..*len]`, at least one entry per word of room).
    pub(crate) fn new(bytes: &'a mut [u8], touched: &'a mut [u32], len: &'a mut usize) -> Self {
        BitmapArea {
            bytes,
            touched,
            len,
        }
    }

    /// Zeroes the words set since the last clear.
    pub(crate) fn clear(&mut self) {
        for &word in self.touched.iter().take(*self.len) {
            let at = word as usize * 8;
            if let Some(w) = self.bytes.get_mut(at..at + 8) {
                w.fill(0);
            }
        }
        *self.len = 0;
    }

    /// Zeroes the whole area (after userspace wrote into it).
    pub(crate) fn clear_all(&mut self) {
        self.bytes.fill(0);
        *self.len = 0;
    }

    /// Sets bit `k`; bits beyond the area are ignored.
    pub(crate) fn set(&mut self, k: u64) {
        let Ok(word) = usize::try_from(k / 64) else {
            return;
        };
        let Some(bytes) = word
            .checked_mul(8)
            .and_then(|at| self.bytes.get_mut(at..at + 8))
        else {
            return;
        };
        let mut le = [0u8; 8];
        le.copy_from_slice(bytes);
        let old = u64::from_le_bytes(le);
        if old == 0 {
            match self.touched.get_mut(*self.len) {
                Some(slot) => {
                    *slot = word as u32;
                    *self.len += 1;
                }
                // Cannot happen (one slot per word); stay correct anyway.
                None => return,
            }
        }
        bytes.copy_from_slice(&(old | 1 << (k % 64)).to_le_bytes());
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    use std::collections::BTreeMap;

    /// The host store; it fails to grow past `.1` chunks.
    #[derive(Default)]
    pub(crate) struct MapStore(pub(crate) BTreeMap<u64, ChunkBits>, pub(crate) usize);

    impl ChunkStore for MapStore {
        fn len(&self) -> usize {
            self.0.len()
        }
        fn get_mut(&mut self, index: u64) -> Option<&mut ChunkBits> {
            self.0.get_mut(&index)
        }
        fn insert(&mut self, index: u64) -> Result<&mut ChunkBits, OutOfMemory> {
            if self.0.len() >= self.1 {
                return Err(OutOfMemory);
            }
            Ok(self.0.entry(index).or_default())
        }
        fn retain_range(
            &mut self,
            first: u64,
            last: u64,
            mut visit: impl FnMut(u64, &mut ChunkBits) -> bool,
        ) {
            let mut gone = Vec::new();
            for (&index, bits) in self.0.range_mut(first..=last) {
                if !visit(index, bits) {
                    gone.push(index);
                }
            }
            gone.iter().for_each(|i| {
                self.0.remove(i);
            });
        }
        fn clear(&mut self) {
            self.0.clear();
        }
    }

    /// A log whose store fails past `cap` chunks, bounded at `limit`.
    fn log_of(cap: usize, limit: usize) -> DirtyLog<MapStore> {
        DirtyLog::new(MapStore(BTreeMap::new(), cap), limit)
    }

    fn log(cap: usize) -> DirtyLog<MapStore> {
        log_of(cap, MAX_CHUNKS)
    }

    fn report(l: &mut DirtyLog<MapStore>, start: u64, pages: u64) -> Vec<u64> {
        let mut out = Vec::new();
        l.report(start, pages, |k| out.push(k));
        out
    }

    #[test]
    fn masks() {
        assert_eq!(word_mask(0, 0, 64), u64::MAX);
        assert_eq!(word_mask(64, 0, 64), 0);
        assert_eq!(word_mask(0, 1, 3), 0b110);
        assert_eq!(word_mask(128, 0, 1 << 40), u64::MAX);
        assert_eq!(word_mask(128, 191, 1000), 1 << 63);
        assert_eq!(word_mask(128, 130, 129), 0);
    }

    #[test]
    fn report_clears_and_orders() {
        let mut l = log(100);
        l.mark(5000, 3);
        l.mark(3, 1);
        l.mark(511, 2);
        assert_eq!(l.count(), 6);
        assert_eq!(report(&mut l, 0, 10_000), [3, 511, 512, 5000, 5001, 5002]);
        assert_eq!(l.count(), 0);
        assert_eq!(l.chunks(), 0, "emptied chunks go");
        assert!(report(&mut l, 0, 10_000).is_empty());
    }

    #[test]
    fn partial_ranges_keep_the_rest() {
        let mut l = log(100);
        l.mark(0, 2048);
        assert_eq!(report(&mut l, 100, 1), [0]);
        assert_eq!(report(&mut l, 63, 3), [0, 1, 2]);
        let mid: Vec<u64> = report(&mut l, 1000, 100);
        assert_eq!(mid, (0..100).collect::<Vec<_>>());
        assert_eq!(l.count(), 2048 - 104);
        // The window before and after the query stays as it was.
        assert_eq!(report(&mut l, 2047, 5), [0]);
        assert_eq!(report(&mut l, 0, 1), [0]);
    }

    #[test]
    fn matches_a_dense_model() {
        // A small LCG: the same pseudo-random walk on every run.
        let mut seed = 0x1234_5678_9abc_def0u64;
        let mut next = |m: u64| {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (seed >> 33) % m
        };
        const PAGES: u64 = 8192;
        let mut model = vec![false; PAGES as usize];
        let mut l = log(1000);
        for _ in 0..3000 {
            if next(3) == 0 {
                let start = next(PAGES);
                let n = next(PAGES - start) % 700;
                let want: Vec<u64> = (start..start + n)
                    .filter(|&p| std::mem::take(&mut model[p as usize]))
                    .map(|p| p - start)
                    .collect();
                assert_eq!(report(&mut l, start, n), want, "query {start}+{n}");
            } else {
                let first = next(PAGES);
                let n = next(PAGES - first).min(next(40) + 1);
                (first..first + n).for_each(|p| model[p as usize] = true);
                l.mark(first, n);
            }
            assert!(l.store.0.values().all(|b| b.iter().any(|&w| w != 0)));
        }
    }

    #[test]
    fn overflow_reports_everything_until_cleared() {
        let mut l = log(1);
        l.mark(0, 1);
        l.mark(1 << 20, 1);
        assert!(l.overflowed());
        assert_eq!(l.chunks(), 0, "an overflowed log holds no memory");
        assert_eq!(report(&mut l, 10, 4), [0, 1, 2, 3]);
        assert_eq!(report(&mut l, 10, 4), [0, 1, 2, 3]);
        l.clear();
        assert!(report(&mut l, 0, 1 << 21).is_empty());
        l.mark(u64::MAX, 2);
        assert!(l.overflowed());
    }

    #[test]
    fn bounded_at_the_limit() {
        let mut l = log_of(usize::MAX, 3);
        for i in 0..3 {
            l.mark(i * CHUNK_PAGES + 7, 2);
        }
        assert!(!l.overflowed());
        assert_eq!(l.chunks(), 3);
        // More pages of the chunks it has are fine; a fourth chunk is not.
        l.mark(8, 100);
        assert!(!l.overflowed());
        l.mark(3 * CHUNK_PAGES, 1);
        assert!(l.overflowed());
        assert_eq!(l.chunks(), 0);
        assert_eq!(report(&mut l, 1 << 40, 3), [0, 1, 2]);
        l.mark(0, 1);
        assert_eq!(l.chunks(), 0, "marks after the overflow store nothing");
        l.clear();
        l.mark(5 * CHUNK_PAGES, 1);
        assert_eq!(report(&mut l, 0, 1 << 20), [5 * CHUNK_PAGES]);
    }

    #[test]
    fn bitmap_area_clears_what_it_set() {
        let mut bytes = vec![0u8; 64];
        let mut touched = vec![0u32; 8];
        let mut len = 0;
        {
            let mut area = BitmapArea::new(&mut bytes, &mut touched, &mut len);
            for k in [0, 63, 64, 65, 511, 512, 9999] {
                area.set(k);
            }
        }
        assert_eq!(len, 3);
        assert_eq!(bytes[0], 1);
        assert_eq!(bytes[7], 0x80);
        assert_eq!(bytes[8], 0b11);
        assert_eq!(bytes[63], 0x80);
        BitmapArea::new(&mut bytes, &mut touched, &mut len).clear();
        assert!(bytes.iter().all(|&b| b == 0));
        assert_eq!(len, 0);
    }
}
