// SPDX-License-Identifier: GPL-2.0
//! Making the device dirty guest pages (DMA `FILL` commands) and asking it
//! which ones it dirtied (the dirty query of the migration region), with the
//! query calls timed apart from everything else.

use std::time::{Duration, Instant};

use vfio_mig::abi::bar0::{
    self, DMA_STATUS_DONE, DMA_STATUS_ERROR, DMA_STATUS_IDLE, DMA_STATUS_QUEUED,
};
use vfio_mig::abi::GUEST_PAGE_SIZE;
use vfio_mig::sample::{DmaCmd, Regs};
use vfio_mig::{Device, Field};

use crate::BResult;

/// How long one DMA command may stay queued before we give up.
const DMA_TIMEOUT: Duration = Duration::from_secs(30);
/// Pause before each look at `DMA_STATUS`.
const POLL: Duration = Duration::from_micros(20);

/// A small deterministic generator (64-bit LCG, upper bits), so that every
/// run dirties the same pages.
#[derive(Debug, Clone)]
pub struct Lcg(u64);

impl Lcg {
    pub fn new(seed: u64) -> Self {
        Lcg(seed ^ 0x9e37_79b9_7f4a_7c15)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        self.0 >> 11
    }

    /// Fills `buf` with pseudo-random bytes.
    pub fn fill(&mut self, buf: &mut [u8]) {
        for c in buf.chunks_mut(8) {
            let v = self.next_u64().to_le_bytes();
            c.copy_from_slice(&v[..c.len()]);
        }
    }
}

/// `n` distinct page indices in `0..range_pages`, sorted, spread over the
/// whole range: one in each of `n` equal strides, at a pseudo-random place
/// in its stride (and, with `run > 1`, room left for `run` consecutive
/// pages from each).
pub fn scatter(range_pages: u64, n: u64, run: u64, seed: u64) -> Vec<u64> {
    if n == 0 {
        return Vec::new();
    }
    let run = run.max(1);
    let stride = range_pages / n;
    assert!(
        stride >= run,
        "{n} runs of {run} pages do not fit in {range_pages} pages"
    );
    let mut rng = Lcg::new(seed);
    (0..n)
        .map(|i| i * stride + rng.next_u64() % (stride - run + 1))
        .collect()
}

/// Issues `FILL` commands on `dev`, one after another: each `(iova, len)`
/// is filled with `pattern`. Waits for each (commands run one at a time)
/// and fails on the first that does not finish `DONE`.
pub fn fill(dev: &Device, cmds: &[(u64, u32)], pattern: u32) -> BResult<()> {
    let regs = Regs(dev);
    let ctx = |what: &str, e: vfio_mig::Error| format!("DMA fill: {what}: {e}");
    regs.write(bar0::DMA_CTRL, 0)
        .map_err(|e| ctx("clear DMA_CTRL", e))?;
    regs.write(bar0::DMA_PATTERN, pattern)
        .map_err(|e| ctx("write DMA_PATTERN", e))?;
    regs.write(bar0::DMA_DEV_OFF, 0)
        .map_err(|e| ctx("write DMA_DEV_OFF", e))?;
    let mut len_now = None;
    let mut hi_now = None;
    for &(iova, len) in cmds {
        if len_now != Some(len) {
            regs.write(bar0::DMA_LEN, len)
                .map_err(|e| ctx("write DMA_LEN", e))?;
            len_now = Some(len);
        }
        let hi = (iova >> 32) as u32;
        if hi_now != Some(hi) {
            regs.write(bar0::DMA_IOVA_HI, hi)
                .map_err(|e| ctx("write DMA_IOVA_HI", e))?;
            hi_now = Some(hi);
        }
        regs.write(bar0::DMA_IOVA_LO, iova as u32)
            .map_err(|e| ctx("write DMA_IOVA_LO", e))?;
        regs.write(bar0::DMA_CMD, DmaCmd::Fill as u32)
            .map_err(|e| ctx(&format!("queue FILL at iova {iova:#x}"), e))?;
        let t0 = Instant::now();
        loop {
            // Sleep rather than spin: the engine's work item may be queued
            // on this CPU, and each status read takes the device lock.
            std::thread::sleep(POLL);
            let st = regs
                .read(bar0::DMA_STATUS)
                .map_err(|e| ctx("read DMA_STATUS", e))?;
            match st {
                DMA_STATUS_DONE => break,
                DMA_STATUS_QUEUED if t0.elapsed() < DMA_TIMEOUT => {}
                DMA_STATUS_QUEUED => {
                    return Err(format!(
                        "DMA fill at iova {iova:#x}: still queued after {DMA_TIMEOUT:?}"
                    ))
                }
                DMA_STATUS_ERROR => {
                    let errno = regs.read(bar0::DMA_ERROR).unwrap_or(0);
                    return Err(format!(
                        "DMA fill of {len} bytes at iova {iova:#x} failed: DMA_ERROR {}",
                        vfio_mig::errno_string(errno as i32)
                    ));
                }
                DMA_STATUS_IDLE => {
                    return Err(format!(
                        "DMA fill at iova {iova:#x}: DMA_STATUS reads IDLE after the command \
                         was queued"
                    ))
                }
                other => return Err(format!("DMA fill: DMA_STATUS reads {other}")),
            }
        }
    }
    Ok(())
}

/// What one dirty query over a whole range did.
#[derive(Debug, Clone, Default)]
pub struct Query {
    /// The query calls only: write `start_addr`, write `total`, read
    /// `copied`, summed over the windows.
    pub query: Duration,
    /// Reading the bitmaps out of the bitmap area (with `data.offset`;
    /// from the mapped area when the region offers it, else `pread`),
    /// summed over the windows.
    pub readout: Duration,
    /// Windows (queries) the range took.
    pub windows: u32,
    /// Dirty pages reported, as page indices from the start of the range.
    pub dirty: Vec<u64>,
}

/// Dirty query of `pages` pages from `iova`, in windows of `window` pages
/// (the bitmap area's capacity). Each window is timed from the write of
/// `dirty_pfns.start_addr` to the return of the read of `.copied`; its
/// bitmap is then read (timed apart) and decoded.
pub fn query(
    dev: &Device,
    iova: u64,
    pages: u64,
    window: u64,
    buf: &mut Vec<u8>,
) -> BResult<Query> {
    let mut q = Query::default();
    let mut done = 0u64;
    while done < pages {
        let want = (pages - done).min(window);
        let start = iova + done * GUEST_PAGE_SIZE;
        let t0 = Instant::now();
        dev.write_field(Field::DirtyStartAddr, start)
            .map_err(|e| e.to_string())?;
        dev.write_field(Field::DirtyTotal, want)
            .map_err(|e| e.to_string())?;
        let copied = dev
            .read_field(Field::DirtyCopied)
            .map_err(|e| e.to_string())?;
        q.query += t0.elapsed();
        q.windows += 1;
        if copied != want {
            return Err(format!(
                "dirty query at {start:#x} for {want} pages: copied reads {copied}"
            ));
        }
        let t1 = Instant::now();
        let off = dev
            .read_field(Field::DataOffset)
            .map_err(|e| e.to_string())?;
        let nwords = copied.div_ceil(64) as usize;
        let what =
            |e: vfio_mig::Error| format!("read of the {nwords}-word bitmap at {off:#x}: {e}");
        match dev.mig_mapping().map_err(|e| e.to_string())? {
            // Decoded in place: the readout is the read of data.offset.
            Some(m) => {
                let words = m.bitmap_words(off, nwords).map_err(what)?;
                q.readout += t1.elapsed();
                decode_words(words, copied, done, &mut q.dirty);
            }
            None => {
                buf.resize(nwords * 8, 0);
                let idx = dev.migration_region().map_err(|e| e.to_string())?.index();
                dev.read_region(idx, off, buf).map_err(what)?;
                q.readout += t1.elapsed();
                decode(buf, copied, done, &mut q.dirty);
            }
        }
        done += copied;
    }
    Ok(q)
}

/// Appends `first + k` for every set bit `k < bits` of the little-endian
/// u64 words in `bitmap`.
pub fn decode(bitmap: &[u8], bits: u64, first: u64, out: &mut Vec<u64>) {
    let words = bitmap
        .chunks_exact(8)
        .map(|c| u64::from_le_bytes(c.try_into().unwrap()));
    decode_words(words, bits, first, out);
}

/// [`decode`] of the bitmap's words.
pub fn decode_words(words: impl Iterator<Item = u64>, bits: u64, first: u64, out: &mut Vec<u64>) {
    for (w, mut word) in words.enumerate() {
        while word != 0 {
            let b = word.trailing_zeros() as u64;
            let k = w as u64 * 64 + b;
            if k < bits {
                out.push(first + k);
            }
            word &= word - 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scatter_spreads_distinct_pages() {
        for (range, n, run) in [
            (1u64 << 20, 1000u64, 1u64),
            (16384, 1000, 1),
            (262144, 512, 8),
        ] {
            let p = scatter(range, n, run, 7);
            assert_eq!(p.len() as u64, n);
            assert!(p.windows(2).all(|w| w[0] + run <= w[1]), "sorted, apart");
            assert!(p.iter().all(|&x| x + run <= range));
            // Both halves of the range get pages.
            assert!(p.iter().any(|&x| x < range / 2) && p.iter().any(|&x| x >= range / 2));
        }
        assert!(scatter(100, 0, 1, 1).is_empty());
        assert_eq!(scatter(1 << 20, 10, 1, 3), scatter(1 << 20, 10, 1, 3));
    }

    #[test]
    fn decode_bits() {
        let mut b = vec![0u8; 16];
        b[0] = 0b101;
        b[8] = 0x80;
        b[15] = 0x80;
        let mut out = Vec::new();
        decode(&b, 128, 10, &mut out);
        assert_eq!(out, vec![10, 12, 10 + 71, 10 + 127]);
        out.clear();
        decode(&b, 100, 0, &mut out);
        assert_eq!(out, vec![0, 2, 71]);
    }

    #[test]
    fn lcg_fill() {
        let mut a = Lcg::new(1);
        let mut b = Lcg::new(1);
        let mut x = [0u8; 13];
        let mut y = [0u8; 13];
        a.fill(&mut x);
        b.fill(&mut y);
        assert_eq!(x, y);
        assert_ne!(x, [0u8; 13]);
    }
}
