// SPDX-License-Identifier: GPL-2.0

//! Property tests of the stream decoder: it never panics, never writes
//! outside what it was given, and accepts exactly the streams of the
//! documented grammar (the language the encoder writes: a header, page
//! records in any order and number, one register record, the end record),
//! restoring what an independent whole-buffer parser reads from them.
//! Everything the encoder produces, however chunked and however the device
//! changes during pre-copy, is accepted and restores the source.

use proptest::prelude::*;

use super::rng::Rng;
use super::stream::{
    all_dirty, decode_with, good_header, naive_checksum, page_record, params, record, seal, Dev,
    Shadow,
};
use crate::abi::stream::PAGE_SIZE;
use crate::stream::{Decoder, Encoder, StreamParams};

/// What an accepted stream restores: device memory and the register blob.
type Restored = (Vec<u8>, Vec<u8>);

fn le32(s: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(s.get(at..at + 4)?.try_into().ok()?))
}

fn le64(s: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(s.get(at..at + 8)?.try_into().ok()?))
}

/// The grammar of Documentation/migration-stream.rst, checked over the
/// whole byte string at once: what the stream restores, or `None` if it is
/// not a valid stream for `p`.
fn reference(p: &StreamParams, s: &[u8]) -> Option<Restored> {
    let reg_len = p.register_len() as usize;
    if s.get(..32)? != good_header(p).as_slice() {
        return None;
    }
    let mut mem = vec![0u8; p.memory_size() as usize];
    let mut regs = None;
    let mut pos = 32;
    loop {
        let tag = s.get(pos..pos + 4)?;
        let body = le32(s, pos + 4)? as usize;
        match (tag, regs.is_some()) {
            (b"PAGE", false) if body == 8 + PAGE_SIZE => {
                let index = usize::try_from(le64(s, pos + 8)?).ok()?;
                let data = s.get(pos + 16..pos + 16 + PAGE_SIZE)?;
                let at = index.checked_mul(PAGE_SIZE)?;
                mem.get_mut(at..at + PAGE_SIZE)?.copy_from_slice(data);
            }
            (b"REGS", false) if body == reg_len => {
                regs = Some(s.get(pos + 8..pos + 8 + reg_len)?.to_vec());
            }
            (b"END.", true) if body == 24 && pos + 32 == s.len() => {
                let (a, b) = naive_checksum(&s[..pos]);
                let ok = le64(s, pos + 8)? == pos as u64
                    && le64(s, pos + 16)? == a
                    && le64(s, pos + 24)? == b;
                return ok.then(|| (mem, regs.unwrap_or_default()));
            }
            _ => return None,
        }
        pos += 8 + body;
    }
}

/// Feeds `s` to a decoder in chunks of the given sizes (cycled); what it
/// restored if it accepted the stream. The sink panics on any write outside
/// one page of memory or outside the blob.
fn decoded(p: &StreamParams, s: &[u8], chunks: &[usize]) -> Option<Restored> {
    let mut dec = Decoder::new(*p);
    let mut sink = Shadow::new(p);
    let mut sizes = chunks.iter().copied().cycle();
    let fed = decode_with(&mut dec, &mut sink, s, || sizes.next().unwrap_or(1));
    let finished = dec.finish();
    if fed.is_err() {
        assert_eq!(finished, fed, "a refused stream stays refused");
    }
    finished.ok().map(|()| (sink.mem, sink.regs))
}

/// A record of a generated stream.
#[derive(Clone, Debug)]
enum Rec {
    /// A page record of this index (may be out of range).
    Page(u64),
    /// The register record.
    Regs,
    /// Any record head, then `len` random bytes.
    Junk { tag: [u8; 4], body: u32, len: usize },
}

fn rec() -> impl Strategy<Value = Rec> {
    prop_oneof![
        4 => (0u64..6).prop_map(Rec::Page),
        2 => Just(Rec::Regs),
        1 => (
            prop_oneof![Just(*b"PAGE"), Just(*b"REGS"), Just(*b"END."), any::<[u8; 4]>()],
            prop_oneof![Just(4104u32), Just(24), 0u32..64, any::<u32>()],
            0usize..64,
        )
            .prop_map(|(tag, body, len)| Rec::Junk { tag, body, len }),
    ]
}

/// A byte-level damage.
#[derive(Clone, Debug)]
enum Damage {
    Flip { at: usize, bit: u8 },
    Truncate { at: usize },
    Insert { at: usize, bytes: Vec<u8> },
    Delete { at: usize, len: usize },
}

fn damage() -> impl Strategy<Value = Damage> {
    prop_oneof![
        (any::<usize>(), 0u8..8).prop_map(|(at, bit)| Damage::Flip { at, bit }),
        any::<usize>().prop_map(|at| Damage::Truncate { at }),
        (any::<usize>(), prop::collection::vec(any::<u8>(), 1..16))
            .prop_map(|(at, bytes)| Damage::Insert { at, bytes }),
        (any::<usize>(), 1usize..5000).prop_map(|(at, len)| Damage::Delete { at, len }),
    ]
}

fn apply(s: &mut Vec<u8>, d: &Damage) {
    let pos = |at: usize, len: usize| if len == 0 { 0 } else { at % (len + 1) };
    match d {
        Damage::Flip { at, bit } if !s.is_empty() => {
            let i = at % s.len();
            s[i] ^= 1 << bit;
        }
        Damage::Flip { .. } => {}
        Damage::Truncate { at } => s.truncate(pos(*at, s.len())),
        Damage::Insert { at, bytes } => {
            let i = pos(*at, s.len());
            s.splice(i..i, bytes.iter().copied());
        }
        Damage::Delete { at, len } => {
            let i = pos(*at, s.len());
            let end = (i + len).min(s.len());
            s.drain(i..end);
        }
    }
}

/// Builds a stream for `p` from records, sealed with a correct end record
/// or ended with a wrong one.
fn build(p: &StreamParams, dev: &Dev, recs: &[Rec], sealed: bool, rng: &mut Rng) -> Vec<u8> {
    let mut parts = vec![good_header(p)];
    for r in recs {
        parts.push(match r {
            Rec::Page(i) => {
                let at = (*i as usize % p.npages()) * PAGE_SIZE;
                let mut data = dev.mem[at..at + PAGE_SIZE].to_vec();
                data[0] ^= *i as u8;
                page_record(*i, &data)
            }
            Rec::Regs => record(b"REGS", &dev.regs),
            Rec::Junk { tag, body, len } => {
                let mut r = tag.to_vec();
                r.extend_from_slice(&body.to_le_bytes());
                let mut junk = vec![0u8; *len];
                rng.fill(&mut junk);
                r.extend_from_slice(&junk);
                r
            }
        });
    }
    if sealed {
        seal(&parts)
    } else {
        let mut s = parts.concat();
        s.extend_from_slice(&record(b"END.", &[0u8; 24]));
        s
    }
}

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 512,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config())]

    /// Generated streams, valid or not, then damaged: the decoder's verdict
    /// and what it restores are the reference parser's, for any chunking.
    #[test]
    fn decoder_accepts_exactly_the_grammar(
        npages in 1usize..5,
        reg_len in 0u32..48,
        seed in any::<u64>(),
        pages in prop::collection::vec(prop_oneof![8 => 0u64..4, 1 => 0u64..6], 0..8),
        stray in prop::option::weighted(0.3, (any::<usize>(), rec())),
        random in prop::option::weighted(0.1, prop::collection::vec(rec(), 0..10)),
        sealed in prop::bool::weighted(0.9),
        damages in prop_oneof![2 => Just(vec![]), 1 => prop::collection::vec(damage(), 1..3)],
        chunks in prop::collection::vec(1usize..5000, 1..8),
    ) {
        let p = params(npages, reg_len);
        let mut rng = Rng::new(seed);
        let dev = Dev::random(&p, &mut rng);
        // Mostly the encoder's shape (pages, then the registers), sometimes
        // with a record out of place, sometimes anything.
        let recs = random.unwrap_or_else(|| {
            let mut recs: Vec<Rec> = pages.into_iter().map(Rec::Page).collect();
            recs.push(Rec::Regs);
            if let Some((at, r)) = stray {
                recs.insert(at % (recs.len() + 1), r);
            }
            recs
        });
        let mut s = build(&p, &dev, &recs, sealed, &mut rng);
        for d in &damages {
            apply(&mut s, d);
        }
        let want = reference(&p, &s);
        let got = decoded(&p, &s, &chunks);
        prop_assert_eq!(got.is_some(), want.is_some());
        prop_assert!(got == want, "restored state differs from the reference");
    }

    /// Arbitrary bytes, with or without a valid header in front: no panic,
    /// no write out of bounds, and no acceptance.
    #[test]
    fn garbage_is_refused(
        npages in 0usize..4,
        reg_len in 0u32..48,
        header in any::<bool>(),
        mut bytes in prop::collection::vec(any::<u8>(), 0..6000),
        chunks in prop::collection::vec(1usize..700, 1..8),
    ) {
        let p = params(npages, reg_len);
        if header {
            bytes.splice(0..0, good_header(&p));
        }
        prop_assert_eq!(reference(&p, &bytes), None);
        prop_assert_eq!(decoded(&p, &bytes, &chunks), None);
    }

    /// Whatever the encoder writes, pre-copy rounds with device writes in
    /// between included, is accepted in any chunking and restores the
    /// device as it was when it stopped.
    #[test]
    fn encoder_output_is_accepted(
        npages in 0usize..6,
        reg_len in 0u32..400,
        seed in any::<u64>(),
        rounds in prop::collection::vec((1usize..9000, 0usize..3), 0..12),
        enc_chunks in prop::collection::vec(1usize..9000, 1..6),
        dec_chunks in prop::collection::vec(1usize..9000, 1..6),
    ) {
        let p = params(npages, reg_len);
        let mut rng = Rng::new(seed);
        let mut dev = Dev::random(&p, &mut rng);
        let mut enc = Encoder::new(p);
        let mut dirty = all_dirty(&p);
        let mut s = Vec::new();
        for (chunk, writes) in rounds {
            let mut buf = vec![0u8; chunk];
            let n = enc.fill(&dev, &mut dirty, false, &mut buf);
            s.extend_from_slice(&buf[..n]);
            for _ in 0..writes {
                dev.scribble(&mut dirty, &mut rng);
            }
        }
        for chunk in enc_chunks.iter().cycle() {
            let mut buf = vec![0u8; *chunk];
            let n = enc.fill(&dev, &mut dirty, true, &mut buf);
            if n == 0 {
                break;
            }
            s.extend_from_slice(&buf[..n]);
        }
        let want = Some((dev.mem.clone(), dev.regs.clone()));
        prop_assert_eq!(reference(&p, &s), want.clone());
        prop_assert_eq!(decoded(&p, &s, &dec_chunks), want);
    }
}
