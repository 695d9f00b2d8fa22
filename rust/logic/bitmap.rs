// SPDX-License-Identifier: GPL-2.0

//! A page bitmap with a maintained population count.
//!
//! Bit `k` of word `w` stands for page `64 * w + k` (the little-endian bit
//! order of the dirty-bitmap ABI). The storage is anything that derefs to
//! `[u64]`, so the kernel can use `KVec<u64>` and the host `Vec<u64>`; the
//! bitmap never allocates. Bits at or beyond `npages` are always zero.
//! Every operation is bounds-checked: out-of-range pages give an error (or
//! `false` / `None`), never a panic.

use core::ops::{Deref, DerefMut};

/// Pages per storage word.
pub(crate) const BITS_PER_WORD: usize = 64;

/// Errors of bitmap operations.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum BitmapError {
    /// The storage has fewer than `words_for(npages)` words.
    TooSmall,
    /// A page (or the end of a range) is at or beyond `npages`.
    OutOfRange,
}

/// The number of `u64` words needed for `npages` pages.
pub(crate) const fn words_for(npages: usize) -> usize {
    npages.div_ceil(BITS_PER_WORD)
}

/// The bits of word `w` at or above bit `from` and below bit `to`
/// (`from <= to <= 64`).
const fn span_mask(from: usize, to: usize) -> u64 {
    let high = if to >= BITS_PER_WORD {
        u64::MAX
    } else {
        (1u64 << to).wrapping_sub(1)
    };
    let low = if from >= BITS_PER_WORD {
        0
    } else {
        u64::MAX << from
    };
    high & low
}

/// A bitmap of `npages` pages over caller-provided `u64` words.
#[derive(Clone, Debug)]
pub(crate) struct Bitmap<S> {
    /// The storage; only the first `words_for(npages)` words are used.
    words: S,
    /// Number of pages the bitmap covers.
    npages: usize,
    /// Number of set bits.
    count: usize,
}

impl<S: Deref<Target = [u64]>> Bitmap<S> {
    /// Number of pages the bitmap covers.
    #[cfg(test)]
    pub(crate) fn npages(&self) -> usize {
        self.npages
    }

    /// Number of set pages (maintained, O(1)).
    pub(crate) fn count(&self) -> usize {
        self.count
    }

    /// Whether no page is set.
    pub(crate) fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The words in use, bit `k` of word `w` being page `64 * w + k`.
    pub(crate) fn words(&self) -> &[u64] {
        let used = words_for(self.npages);
        self.words.get(..used).unwrap_or(&[])
    }

    /// Whether `page` is set (`false` when out of range).
    #[cfg(test)]
    pub(crate) fn test(&self, page: usize) -> bool {
        if page >= self.npages {
            return false;
        }
        match self.words.get(page / BITS_PER_WORD) {
            Some(w) => w & (1u64 << (page % BITS_PER_WORD)) != 0,
            None => false,
        }
    }

    /// The first set page at or after `from`, skipping zero words.
    pub(crate) fn next_set(&self, from: usize) -> Option<usize> {
        if self.count == 0 || from >= self.npages {
            return None;
        }
        let words = self.words();
        let first = from / BITS_PER_WORD;
        let mut mask = span_mask(from % BITS_PER_WORD, BITS_PER_WORD);
        for (i, word) in words.iter().enumerate().skip(first) {
            let bits = word & mask;
            mask = u64::MAX;
            if bits != 0 {
                let page = i
                    .checked_mul(BITS_PER_WORD)?
                    .checked_add(bits.trailing_zeros() as usize)?;
                return if page < self.npages { Some(page) } else { None };
            }
        }
        None
    }
}

impl<S: DerefMut<Target = [u64]>> Bitmap<S> {
    /// A bitmap of `npages` pages over `words`, all clear.
    ///
    /// Fails with [`BitmapError::TooSmall`] when `words` is shorter than
    /// [`words_for`]`(npages)`. Extra words are zeroed and left unused.
    pub(crate) fn new(mut words: S, npages: usize) -> Result<Self, BitmapError> {
        if words.len() < words_for(npages) {
            return Err(BitmapError::TooSmall);
        }
        words.fill(0);
        Ok(Bitmap {
            words,
            npages,
            count: 0,
        })
    }

    /// Sets `page`; returns whether it was clear before.
    #[cfg(test)]
    pub(crate) fn set(&mut self, page: usize) -> Result<bool, BitmapError> {
        self.update(page, true)
    }

    /// Clears `page`; returns whether it was set before.
    pub(crate) fn clear(&mut self, page: usize) -> Result<bool, BitmapError> {
        self.update(page, false)
    }

    /// Sets or clears `page`; returns whether its bit changed.
    fn update(&mut self, page: usize, set: bool) -> Result<bool, BitmapError> {
        if page >= self.npages {
            return Err(BitmapError::OutOfRange);
        }
        let word = self
            .words
            .get_mut(page / BITS_PER_WORD)
            .ok_or(BitmapError::OutOfRange)?;
        let bit = 1u64 << (page % BITS_PER_WORD);
        let changed = (*word & bit != 0) != set;
        if changed {
            *word ^= bit;
            self.count = if set {
                self.count.saturating_add(1)
            } else {
                self.count.saturating_sub(1)
            };
        }
        Ok(changed)
    }

    /// Sets or clears `len` pages from `start`, a word at a time.
    fn update_range(&mut self, start: usize, len: usize, set: bool) -> Result<(), BitmapError> {
        let end = start.checked_add(len).ok_or(BitmapError::OutOfRange)?;
        if end > self.npages {
            return Err(BitmapError::OutOfRange);
        }
        let mut page = start;
        while page < end {
            let w = page / BITS_PER_WORD;
            let from = page % BITS_PER_WORD;
            // Pages left in this word, never more than `end - page`.
            let span = (BITS_PER_WORD - from).min(end - page);
            let mask = span_mask(from, from + span);
            let word = self.words.get_mut(w).ok_or(BitmapError::OutOfRange)?;
            if set {
                let fresh = (mask & !*word).count_ones() as usize;
                *word |= mask;
                self.count = self.count.saturating_add(fresh);
            } else {
                let gone = (mask & *word).count_ones() as usize;
                *word &= !mask;
                self.count = self.count.saturating_sub(gone);
            }
            page += span;
        }
        Ok(())
    }

    /// Sets the `len` pages from `start`; nothing changes on error.
    pub(crate) fn set_range(&mut self, start: usize, len: usize) -> Result<(), BitmapError> {
        self.update_range(start, len, true)
    }

    /// Clears the `len` pages from `start`; nothing changes on error.
    #[cfg(test)]
    pub(crate) fn clear_range(&mut self, start: usize, len: usize) -> Result<(), BitmapError> {
        self.update_range(start, len, false)
    }

    /// Clears every page.
    pub(crate) fn clear_all(&mut self) {
        let used = words_for(self.npages);
        for word in self.words.iter_mut().take(used) {
            *word = 0;
        }
        self.count = 0;
    }

    /// Sets every page of the bitmap (`0..npages`).
    pub(crate) fn set_all(&mut self) {
        let npages = self.npages;
        let used = words_for(npages);
        for (i, word) in self.words.iter_mut().take(used).enumerate() {
            let first = i.saturating_mul(BITS_PER_WORD);
            let span = npages.saturating_sub(first).min(BITS_PER_WORD);
            *word = span_mask(0, span);
        }
        self.count = npages;
    }

    /// Finds the first set page at or after `from`, clears it and returns
    /// it.
    pub(crate) fn take_next(&mut self, from: usize) -> Option<usize> {
        let page = self.next_set(from)?;
        match self.clear(page) {
            Ok(_) => Some(page),
            Err(_) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks() {
        assert_eq!(span_mask(0, 64), u64::MAX);
        assert_eq!(span_mask(0, 0), 0);
        assert_eq!(span_mask(63, 64), 1u64 << 63);
        assert_eq!(span_mask(1, 3), 0b110);
        assert_eq!(words_for(0), 0);
        assert_eq!(words_for(64), 1);
        assert_eq!(words_for(65), 2);
    }
}
