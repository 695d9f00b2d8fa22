// SPDX-License-Identifier: GPL-2.0

//! The guest dirty log: which IOVA pages the device wrote by DMA since they
//! were last reported, and how a dirty-bitmap query turns it into the
//! bitmap area.
//!
//! The log is sparse so that it fits guests of any size: an ordered map of
//! chunks, each the bits of 512 consecutive pages (2 MiB of IOVA). A mark
//! finds or adds its chunk in O(log n); a query walks only the chunks in
//! its range that hold dirty pages or that the previous report emptied, so
//! its cost grows with the number of dirty pages, not with the size of the
//! range. It hands the bitmap out a 64-bit word at a time. The bitmap area
//! is cleared the same way: the query remembers which of its words it set,
//! and the next query zeroes only those.
//!
//! A chunk a report empties stays, so that a mark of the next round (DMA
//! tends to hit the same buffers again) finds it without allocating; the
//! next report that finds it still empty removes it.
//!
//! The log's memory is bounded: it holds at most [`MAX_CHUNKS`] chunks (a
//! device that wrote more 2 MiB regions between two reports than that has
//! written across 8 GiB). A mark that would need one more, or that the
//! store cannot allocate, first drops the empty chunks (a sweep); if there
//! is still no room, the log turns into "every page is dirty" until it is
//! cleared, the safe direction for a migration. The chunks are freed then,
//! and whenever the log is cleared.
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
/// Every chunk in the store has a bit set or was emptied by a report, and
/// there are at most `limit`.
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

    /// Number of chunks held, empty ones included.
    #[cfg(test)]
    pub(crate) fn chunks(&self) -> usize {
        self.store.len()
    }

    /// Number of chunks with a dirty page.
    #[cfg(test)]
    pub(crate) fn dirty_chunks(&mut self) -> usize {
        let mut n = 0;
        self.store.retain_range(0, u64::MAX, |_, bits| {
            n += usize::from(!is_empty(bits));
            true
        });
        n
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
    /// and the store allow, after a sweep if need be.
    fn chunk(&mut self, index: u64) -> Option<&mut ChunkBits> {
        if self.store.get_mut(index).is_some() {
            return self.store.get_mut(index);
        }
        if !self.try_insert(index) {
            self.sweep();
            if !self.try_insert(index) {
                return None;
            }
        }
        self.store.get_mut(index)
    }

    /// Adds chunk `index` if the bound and the store allow.
    fn try_insert(&mut self, index: u64) -> bool {
        self.store.len() < self.limit && self.store.insert(index).is_ok()
    }

    /// Drops the empty chunks.
    fn sweep(&mut self) {
        self.store
            .retain_range(0, u64::MAX, |_, bits| !is_empty(bits));
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
    /// `start`, a word of the output bitmap at a time: `emit(w, bits)` says
    /// that page `start + 64 * w + i` is dirty for each bit `i` of `bits`
    /// (never 0). `w` never decreases; when `start` is not a multiple of 64
    /// a word may come twice, with other bits, so the caller ORs. After an
    /// overflow every page is reported and nothing is cleared.
    pub(crate) fn report(&mut self, start: u64, pages: u64, mut emit: impl FnMut(u64, u64)) {
        if pages == 0 {
            return;
        }
        let end = start.saturating_add(pages);
        if self.overflowed {
            emit_pages(0, end - start, emit);
            return;
        }
        let first = start / CHUNK_PAGES;
        let last = (end - 1) / CHUNK_PAGES;
        // A log word (64 pages from a multiple of 64) is one output word
        // when `start` is a multiple of 64, else it straddles two: its pages
        // from `start`'s offset in a word (`shift`) on go to word `w`, those
        // below to `w - 1`.
        let shift = start % 64;
        let aligned_start = start - shift;
        self.store.retain_range(first, last, |index, bits| {
            // Still empty since a report emptied it: no mark wanted it.
            if is_empty(bits) {
                return false;
            }
            let base = index * CHUNK_PAGES;
            for (i, word) in bits.iter_mut().enumerate() {
                if *word == 0 {
                    continue;
                }
                let word_base = base + i as u64 * 64;
                let hit = *word & word_mask(word_base, start, end);
                *word &= !hit;
                if hit == 0 {
                    continue;
                }
                // A hit is at or after `start`, so `word_base` is at or
                // after `aligned_start`; when `w` is 0 the low part (pages
                // before `start`) is empty.
                let w = (word_base - aligned_start) / 64;
                if shift != 0 && hit << (64 - shift) != 0 {
                    emit(w - 1, hit << (64 - shift));
                }
                if hit >> shift != 0 {
                    emit(w, hit >> shift);
                }
            }
            true
        });
    }
}

/// Whether no page of the chunk is dirty.
fn is_empty(bits: &ChunkBits) -> bool {
    bits.iter().all(|&w| w == 0)
}

/// Emits pages `from..to` of the output bitmap as words, as
/// [`DirtyLog::report`] does: `emit(w, bits)` for the words they cover.
pub(crate) fn emit_pages(from: u64, to: u64, mut emit: impl FnMut(u64, u64)) {
    if from >= to {
        return;
    }
    for w in from / 64..=(to - 1) / 64 {
        emit(w, word_mask(w * 64, from, to));
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

/// Calls `run(k, n)` for each run of consecutive set bits of the output
/// word `w` (pages `k..k + n` from the report's start), lowest first.
pub(crate) fn word_runs(w: u64, bits: u64, mut run: impl FnMut(u64, u64)) {
    let mut rest = bits;
    while rest != 0 {
        let lo = rest.trailing_zeros();
        let n = (rest >> lo).trailing_ones();
        run(w * 64 + u64::from(lo), u64::from(n));
        // `lo + n` is at most 64; at 64 nothing is left.
        rest = rest.checked_shr(lo + n).map_or(0, |r| r << (lo + n));
    }
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
        for &w in self.touched.iter().take(*self.len) {
            if let Some(bytes) = word_mut(self.bytes, w as usize) {
                *bytes = [0; 8];
            }
        }
        *self.len = 0;
    }

    /// Zeroes the whole area (after userspace wrote into it).
    pub(crate) fn clear_all(&mut self) {
        self.bytes.fill(0);
        *self.len = 0;
    }

    /// ORs `bits` into word `w`; words beyond the area are ignored.
    pub(crate) fn or_word(&mut self, w: u64, bits: u64) {
        let Some(bytes) = usize::try_from(w)
            .ok()
            .and_then(|w| word_mut(self.bytes, w))
        else {
            return;
        };
        let old = u64::from_le_bytes(*bytes);
        if old == 0 {
            match self.touched.get_mut(*self.len) {
                // CAST: `w` is a word of the area (it has `bytes`), and
                // the area's words are numbered in u32 (`touched`).
                Some(slot) => {
                    *slot = w as u32;
                    *self.len += 1;
                }
                // Cannot happen (one slot per word); stay correct anyway.
                None => return,
            }
        }
        *bytes = (old | bits).to_le_bytes();
    }
}

/// The bytes of word `w` of `area`, if it has it.
fn word_mut(area: &mut [u8], w: usize) -> Option<&mut [u8; 8]> {
    area.get_mut(w.checked_mul(8)?..)?.first_chunk_mut::<8>()
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

    /// The words a report emits, checked: never empty, in order.
    pub(crate) fn report_words(
        l: &mut DirtyLog<MapStore>,
        start: u64,
        pages: u64,
    ) -> Vec<(u64, u64)> {
        let mut words: Vec<(u64, u64)> = Vec::new();
        l.report(start, pages, |w, bits| words.push((w, bits)));
        assert!(words.iter().all(|&(_, bits)| bits != 0), "{words:x?}");
        assert!(words.windows(2).all(|p| p[0].0 <= p[1].0), "{words:x?}");
        words
    }

    /// The pages of `words`, from the report's start.
    pub(crate) fn pages_of(words: &[(u64, u64)]) -> Vec<u64> {
        let mut out = Vec::new();
        for &(w, bits) in words {
            (0..64)
                .filter(|i| bits >> i & 1 == 1)
                .for_each(|i| out.push(w * 64 + i));
        }
        out
    }

    fn report(l: &mut DirtyLog<MapStore>, start: u64, pages: u64) -> Vec<u64> {
        let out = pages_of(&report_words(l, start, pages));
        assert!(out.windows(2).all(|p| p[0] < p[1]), "{out:?}");
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
    fn aligned_starts_emit_one_word_per_log_word() {
        let mut l = log(100);
        l.mark(1024 + 3, 70);
        l.mark(1024 + 500, 1);
        // Words 0 and 1 of the output, then the last word of the chunk.
        assert_eq!(
            report_words(&mut l, 1024, 512),
            [(0, !0b111), (1, 0x1ff), (7, 1 << 52)]
        );
        // The top word of the page space (its last page cannot be marked:
        // `first + count` would not fit).
        l.mark(u64::MAX - 63, 63);
        assert_eq!(
            report_words(&mut l, u64::MAX - 127, 128),
            [(1, (1 << 63) - 1)]
        );
    }

    #[test]
    fn unaligned_starts_shift_across_two_words() {
        let mut l = log(100);
        l.mark(0, 128);
        l.mark(600, 1);
        // From page 10: log word 0 is pages 0..54 of the output's word 0,
        // log word 1 the rest of it (54..64) and 0..54 of word 1, and
        // pages before 10 stay.
        assert_eq!(
            report_words(&mut l, 10, 1000),
            [
                (0, (1 << 54) - 1),
                (0, !((1 << 54) - 1)),
                (1, (1 << 54) - 1),
                (9, 1 << 14)
            ]
        );
        assert_eq!(report(&mut l, 0, 64), (0..10).collect::<Vec<_>>());
        // Near the top of the page space, and a range ending mid-word.
        l.mark(u64::MAX - 70, 70);
        assert_eq!(report(&mut l, u64::MAX - 69, 5), [0, 1, 2, 3, 4]);
        assert_eq!(
            report(&mut l, u64::MAX - 100, 200),
            (30..31).chain(36..100).collect::<Vec<_>>()
        );
    }

    #[test]
    fn pages_and_runs_as_words() {
        let mut words = Vec::new();
        emit_pages(60, 200, |w, bits| words.push((w, bits)));
        assert_eq!(words, [(0, 0xf << 60), (1, !0), (2, !0), (3, (1 << 8) - 1)]);
        emit_pages(5, 5, |_, _| panic!("no pages"));
        let mut runs = Vec::new();
        word_runs(2, 0b1110_0110 | 1 << 63, |k, n| runs.push((k, n)));
        assert_eq!(runs, [(129, 2), (133, 3), (191, 1)]);
        runs.clear();
        word_runs(0, !0, |k, n| runs.push((k, n)));
        assert_eq!(runs, [(0, 64)]);
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
        assert_eq!(l.chunks(), 3, "emptied chunks stay for the next marks");
        l.mark(5001, 1);
        assert!(report(&mut l, 0, 1000).is_empty());
        assert_eq!(l.chunks(), 1, "a report drops the chunks still empty");
        assert_eq!(report(&mut l, 0, 10_000), [5001]);
        assert!(report(&mut l, 0, 10_000).is_empty());
        assert_eq!(l.chunks(), 0);
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
            let model_chunks = model
                .chunks(CHUNK_PAGES as usize)
                .filter(|c| c.contains(&true))
                .count();
            assert_eq!(l.dirty_chunks(), model_chunks);
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
    fn sweeps_the_empty_chunks_before_overflowing() {
        // The bound, then the store's refusal: both leave room once the
        // empty chunks go.
        for (cap, limit) in [(usize::MAX, 3), (3, MAX_CHUNKS)] {
            let mut l = log_of(cap, limit);
            for i in 0..3 {
                l.mark(i * CHUNK_PAGES, 1);
            }
            assert_eq!(report(&mut l, 0, CHUNK_PAGES), [0]);
            assert_eq!(l.chunks(), 3, "the emptied chunk stays");
            // A kept chunk is reused; a new one takes the emptied one's
            // place.
            l.mark(0, 1);
            assert_eq!(report(&mut l, 0, CHUNK_PAGES), [0]);
            l.mark(7 * CHUNK_PAGES, 1);
            assert!(!l.overflowed(), "cap {cap}, limit {limit}");
            assert_eq!((l.chunks(), l.dirty_chunks()), (3, 3));
            // With no empty chunk left, the next one overflows.
            l.mark(9 * CHUNK_PAGES, 1);
            assert!(l.overflowed(), "cap {cap}, limit {limit}");
            assert_eq!(l.chunks(), 0);
        }
    }

    #[test]
    fn bitmap_area_clears_what_it_set() {
        let mut bytes = vec![0u8; 64];
        let mut touched = vec![0u32; 8];
        let mut len = 0;
        {
            let mut area = BitmapArea::new(&mut bytes, &mut touched, &mut len);
            for (w, bits) in [
                (0, 1),
                (0, 1 << 63),
                (1, 0b11),
                (7, 1 << 63),
                (8, 1),
                (156, 1),
            ] {
                area.or_word(w, bits);
            }
        }
        assert_eq!(len, 3, "one entry per word that became non-zero");
        assert_eq!(touched[..3], [0, 1, 7]);
        assert_eq!(bytes[0], 1);
        assert_eq!(bytes[7], 0x80);
        assert_eq!(bytes[8], 0b11);
        assert_eq!(bytes[63], 0x80);
        BitmapArea::new(&mut bytes, &mut touched, &mut len).clear();
        assert!(bytes.iter().all(|&b| b == 0));
        assert_eq!(len, 0);
    }
}
