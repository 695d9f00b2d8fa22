// SPDX-License-Identifier: GPL-2.0

//! Tests of the stream: byte layout against an independent builder, round
//! trips with many chunkings, pre-copy, pending accounting, corruption,
//! truncation, trailing bytes, specific errors and garbage.

use super::rng::Rng;
use crate::abi::stream::{
    END_BODY_LEN, END_RECORD_LEN, HEADER_LEN, HEADER_MEMORY_SIZE, HEADER_PAGE_SIZE,
    HEADER_REGISTER_LEN, HEADER_TYPE_ID, HEADER_VERSION, MAGIC, PAGE_BODY_LEN, PAGE_RECORD_LEN,
    PAGE_SIZE, RECORD_HEAD_LEN, TAG_END, TAG_PAGE, TAG_REGS, VERSION,
};
use crate::bitmap::{words_for, Bitmap};
use crate::stream::{
    page_record_len, Checksum, Decoder, Encoder, Faulted, Pending, RestoreSink, SaveSource,
    SinkFault, SliceSink, StreamError, StreamParams, StreamSink,
};

pub(super) type Dirty = Bitmap<Vec<u64>>;

/// A source device: memory and register blob.
#[derive(Clone)]
pub(super) struct Dev {
    pub(super) mem: Vec<u8>,
    pub(super) regs: Vec<u8>,
}

impl Dev {
    pub(super) fn random(params: &StreamParams, rng: &mut Rng) -> Self {
        let mut mem = vec![0u8; params.memory_size() as usize];
        let mut regs = vec![0u8; params.register_len() as usize];
        rng.fill(&mut mem);
        rng.fill(&mut regs);
        Dev { mem, regs }
    }

    /// Overwrites a random span of a random page and marks it dirty.
    pub(super) fn scribble(&mut self, dirty: &mut Dirty, rng: &mut Rng) {
        let npages = self.mem.len() / PAGE_SIZE;
        if npages == 0 {
            return;
        }
        let page = rng.below(npages);
        let start = rng.below(PAGE_SIZE);
        let len = rng.range(1, PAGE_SIZE - start);
        let off = page * PAGE_SIZE + start;
        rng.fill(&mut self.mem[off..off + len]);
        dirty.set(page).expect("page in range");
    }
}

impl SaveSource for Dev {
    fn memory(&self, offset: usize, len: usize) -> &[u8] {
        assert!(len != 0);
        assert_eq!(
            offset / PAGE_SIZE,
            (offset + len - 1) / PAGE_SIZE,
            "one page"
        );
        &self.mem[offset..offset + len]
    }
    fn registers(&self, offset: usize, len: usize) -> &[u8] {
        &self.regs[offset..offset + len]
    }
}

/// A destination shadow.
pub(super) struct Shadow {
    pub(super) mem: Vec<u8>,
    pub(super) regs: Vec<u8>,
    regs_done: usize,
    reject_regs: bool,
}

impl Shadow {
    pub(super) fn new(params: &StreamParams) -> Self {
        Shadow {
            mem: vec![0u8; params.memory_size() as usize],
            regs: vec![0u8; params.register_len() as usize],
            regs_done: 0,
            reject_regs: false,
        }
    }
}

impl RestoreSink for Shadow {
    fn write_memory(&mut self, offset: usize, data: &[u8]) {
        assert!(!data.is_empty());
        assert_eq!(
            offset / PAGE_SIZE,
            (offset + data.len() - 1) / PAGE_SIZE,
            "one page"
        );
        self.mem[offset..offset + data.len()].copy_from_slice(data);
    }
    fn write_registers(&mut self, offset: usize, data: &[u8]) {
        self.regs[offset..offset + data.len()].copy_from_slice(data);
    }
    fn registers_done(&mut self) -> Result<(), StreamError> {
        self.regs_done += 1;
        if self.reject_regs {
            Err(StreamError::BadState)
        } else {
            Ok(())
        }
    }
}

pub(super) fn params(npages: usize, reg_len: u32) -> StreamParams {
    StreamParams::new(7, (npages * PAGE_SIZE) as u64, reg_len).expect("params")
}

pub(super) fn all_dirty(p: &StreamParams) -> Dirty {
    let mut d = Bitmap::new(vec![0u64; words_for(p.npages())], p.npages()).expect("bitmap");
    d.set_all();
    d
}

/// Encodes a whole stream of a stopped device, with chunk sizes from
/// `chunk`.
fn encode_with(p: &StreamParams, dev: &Dev, mut chunk: impl FnMut() -> usize) -> Vec<u8> {
    let mut enc = Encoder::new(*p);
    let mut dirty = all_dirty(p);
    let mut out = Vec::new();
    loop {
        let want = chunk();
        let mut buf = vec![0u8; want];
        let n = enc.fill(dev, &mut dirty, true, &mut buf);
        assert!(n <= want);
        if n == 0 {
            break;
        }
        out.extend_from_slice(&buf[..n]);
    }
    assert!(enc.is_complete());
    assert_eq!(enc.emitted(), out.len() as u64);
    out
}

/// Runs a stopped encoder to the end of its stream.
fn encode_rest(enc: &mut Encoder, dev: &Dev, dirty: &mut Dirty) {
    while enc.fill(dev, dirty, true, &mut [0u8; 4096]) > 0 {}
    assert!(enc.is_complete());
}

fn encode(p: &StreamParams, dev: &Dev) -> Vec<u8> {
    encode_with(p, dev, || 1 << 20)
}

/// Feeds `stream` in chunks from `chunk`; returns the first error.
pub(super) fn decode_with(
    dec: &mut Decoder,
    sink: &mut Shadow,
    stream: &[u8],
    mut chunk: impl FnMut() -> usize,
) -> Result<(), StreamError> {
    let mut rest = stream;
    while !rest.is_empty() {
        let n = chunk().clamp(1, rest.len());
        let (now, later) = rest.split_at(n);
        dec.feed(now, sink)?;
        rest = later;
    }
    Ok(())
}

fn decode(p: &StreamParams, stream: &[u8]) -> (Result<(), StreamError>, Shadow) {
    let mut dec = Decoder::new(*p);
    let mut sink = Shadow::new(p);
    let r = dec.feed(stream, &mut sink).and_then(|()| dec.finish());
    (r, sink)
}

// ---------------------------------------------------------------------------
// An independent description of the format, written from
// Documentation/migration-stream.rst.

/// The checksum, one byte-padded word at a time.
pub(super) fn naive_checksum(data: &[u8]) -> (u64, u64) {
    let (mut a, mut b) = (0u64, 0u64);
    for chunk in data.chunks(8) {
        let mut w = [0u8; 8];
        w[..chunk.len()].copy_from_slice(chunk);
        a = a.wrapping_add(u64::from_le_bytes(w));
        b = b.wrapping_add(a);
    }
    (a, b)
}

pub(super) fn header_bytes(
    magic: &[u8; 8],
    version: u32,
    ty: u32,
    size: u64,
    page: u32,
    reg: u32,
) -> Vec<u8> {
    let mut h = Vec::new();
    h.extend_from_slice(magic);
    h.extend_from_slice(&version.to_le_bytes());
    h.extend_from_slice(&ty.to_le_bytes());
    h.extend_from_slice(&size.to_le_bytes());
    h.extend_from_slice(&page.to_le_bytes());
    h.extend_from_slice(&reg.to_le_bytes());
    assert_eq!(h.len(), 32);
    h
}

pub(super) fn record(tag: &[u8; 4], body: &[u8]) -> Vec<u8> {
    let mut r = tag.to_vec();
    r.extend_from_slice(&(body.len() as u32).to_le_bytes());
    r.extend_from_slice(body);
    r
}

pub(super) fn page_record(index: u64, data: &[u8]) -> Vec<u8> {
    let mut body = index.to_le_bytes().to_vec();
    body.extend_from_slice(data);
    record(b"PAGE", &body)
}

fn end_record(before: &[u8]) -> Vec<u8> {
    let (a, b) = naive_checksum(before);
    let mut body = (before.len() as u64).to_le_bytes().to_vec();
    body.extend_from_slice(&a.to_le_bytes());
    body.extend_from_slice(&b.to_le_bytes());
    record(b"END.", &body)
}

/// A complete stream of `parts` followed by a correct end record.
pub(super) fn seal(parts: &[Vec<u8>]) -> Vec<u8> {
    let mut s: Vec<u8> = parts.concat();
    let end = end_record(&s);
    s.extend_from_slice(&end);
    s
}

fn expected_stream(p: &StreamParams, dev: &Dev) -> Vec<u8> {
    let mut parts = vec![header_bytes(
        b"VMSSTATE",
        VERSION,
        p.type_id(),
        p.memory_size(),
        4096,
        p.register_len(),
    )];
    for page in 0..p.npages() {
        parts.push(page_record(
            page as u64,
            &dev.mem[page * PAGE_SIZE..(page + 1) * PAGE_SIZE],
        ));
    }
    parts.push(record(b"REGS", &dev.regs));
    seal(&parts)
}

// ---------------------------------------------------------------------------

#[test]
fn constants() {
    assert_eq!(MAGIC, *b"VMSSTATE");
    assert_eq!(VERSION, 2);
    assert_eq!(HEADER_LEN, 32);
    assert_eq!(RECORD_HEAD_LEN, 8);
    assert_eq!(PAGE_RECORD_LEN, 4112);
    assert_eq!(page_record_len(), 4112);
    assert_eq!(END_RECORD_LEN, 32);
    assert_eq!(TAG_PAGE.to_le_bytes(), *b"PAGE");
    assert_eq!(TAG_REGS.to_le_bytes(), *b"REGS");
    assert_eq!(TAG_END.to_le_bytes(), *b"END.");
    let p = params(64, 100);
    assert_eq!(p.register_record_len(), 108);
    assert_eq!(p.full_stream_len(), Some(32 + 64 * 4112 + 108 + 32));
}

#[test]
fn header_field_offsets() {
    // The offsets the ABI names, against the independent builder.
    let h = header_bytes(
        &MAGIC,
        0x0a0b_0c0d,
        0x1112_1314,
        0x2122_2324_2526_2728,
        4096,
        0x3132,
    );
    let u32_at = |at: usize| u32::from_le_bytes(h[at..at + 4].try_into().unwrap());
    assert_eq!(u32_at(HEADER_VERSION), 0x0a0b_0c0d);
    assert_eq!(u32_at(HEADER_TYPE_ID), 0x1112_1314);
    assert_eq!(
        u64::from_le_bytes(
            h[HEADER_MEMORY_SIZE..HEADER_MEMORY_SIZE + 8]
                .try_into()
                .unwrap()
        ),
        0x2122_2324_2526_2728
    );
    assert_eq!(u32_at(HEADER_PAGE_SIZE), 4096);
    assert_eq!(u32_at(HEADER_REGISTER_LEN), 0x3132);
    assert_eq!(HEADER_REGISTER_LEN + 4, HEADER_LEN);
    assert_eq!(
        record(b"PAGE", &[0; 8 + 4096]).len(),
        RECORD_HEAD_LEN + PAGE_BODY_LEN
    );
    assert_eq!(end_record(&h).len(), RECORD_HEAD_LEN + END_BODY_LEN);
}

#[test]
fn params_validation() {
    assert_eq!(StreamParams::new(1, 4095, 0), Err(StreamError::BadLayout));
    assert_eq!(StreamParams::new(1, 4097, 0), Err(StreamError::BadLayout));
    assert_eq!(
        StreamParams::new(1, u64::MAX - 4095, 0),
        Err(StreamError::BadLayout)
    );
    assert!(StreamParams::new(1, 0, 0).is_ok());
    assert!(StreamParams::new(1, 2 << 20, u32::MAX).is_ok());
}

#[test]
fn layout_matches_documentation() {
    let mut rng = Rng::new(1);
    for (npages, reg) in [(0, 0), (1, 0), (1, 1), (3, 13), (5, 64), (2, 4099)] {
        let p = params(npages, reg);
        let dev = Dev::random(&p, &mut rng);
        let got = encode(&p, &dev);
        let want = expected_stream(&p, &dev);
        assert_eq!(got.len() as u64, p.full_stream_len().unwrap());
        assert!(got == want, "layout for {npages} pages, {reg} reg bytes");
        let (r, sink) = decode(&p, &want);
        assert_eq!(r, Ok(()));
        assert_eq!(sink.mem, dev.mem);
        assert_eq!(sink.regs, dev.regs);
        assert_eq!(sink.regs_done, 1);
    }
}

#[test]
fn checksum_matches_naive_and_ignores_chunking() {
    let mut rng = Rng::new(2);
    for len in (0..80).chain([255, 256, 257, 4096, 4111, 10_000]) {
        let mut data = vec![0u8; len];
        rng.fill(&mut data);
        let want = naive_checksum(&data);
        let mut whole = Checksum::new();
        whole.update(&data);
        assert_eq!(whole.finish(), want, "len {len}");
        assert_eq!(whole.len(), len as u64);
        for _ in 0..20 {
            let mut c = Checksum::new();
            let mut rest = &data[..];
            while !rest.is_empty() {
                let n = rng.range(1, 40).min(rest.len());
                c.update(&rest[..n]);
                c.update(&[]);
                rest = &rest[n..];
            }
            assert_eq!(c.finish(), want);
        }
    }
}

#[test]
fn checksum_detects_single_bit_flips_and_word_swaps() {
    let mut rng = Rng::new(3);
    let mut data = vec![0u8; 512];
    rng.fill(&mut data);
    let base = naive_checksum(&data);
    let mut c = Checksum::new();
    c.update(&data);
    assert_eq!(c.finish(), base);
    for i in 0..data.len() {
        for bit in 0..8 {
            data[i] ^= 1 << bit;
            let mut c = Checksum::new();
            c.update(&data);
            assert_ne!(c.finish(), base, "flip {i}:{bit}");
            data[i] ^= 1 << bit;
        }
    }
    for _ in 0..200 {
        let i = rng.below(64);
        let j = rng.below(64);
        if data[i * 8..i * 8 + 8] == data[j * 8..j * 8 + 8] {
            continue;
        }
        let mut swapped = data.clone();
        for k in 0..8 {
            swapped.swap(i * 8 + k, j * 8 + k);
        }
        let mut c = Checksum::new();
        c.update(&swapped);
        assert_ne!(c.finish(), base, "swap {i} {j}");
    }
}

#[test]
fn round_trip_fixed_chunk_sizes() {
    let mut rng = Rng::new(4);
    let p = params(6, 77);
    let dev = Dev::random(&p, &mut rng);
    let want = expected_stream(&p, &dev);
    let whole = want.len();
    for size in [
        1, 2, 3, 7, 8, 13, 31, 97, 509, 4093, 4096, 4112, 4113, 65536, whole,
    ] {
        let stream = encode_with(&p, &dev, || size);
        assert!(stream == want, "encode chunk {size}");
        for dsize in [1, 7, size, 4096, whole] {
            let mut dec = Decoder::new(p);
            let mut sink = Shadow::new(&p);
            assert_eq!(decode_with(&mut dec, &mut sink, &stream, || dsize), Ok(()));
            assert_eq!(dec.finish(), Ok(()));
            assert_eq!(sink.mem, dev.mem);
            assert_eq!(sink.regs, dev.regs);
        }
    }
}

#[test]
fn round_trip_threshold_capped() {
    // A VMM caps get-buffer chunks by threshold_size and the data area.
    let mut rng = Rng::new(5);
    let p = params(9, 200);
    let dev = Dev::random(&p, &mut rng);
    let want = expected_stream(&p, &dev);
    for threshold in [1usize, 100, 4000, 8192, 1 << 20] {
        let data_len = 16 * 1024;
        let stream = encode_with(&p, &dev, || threshold.min(data_len));
        assert!(stream == want);
        let (r, sink) = decode(&p, &stream);
        assert_eq!(r, Ok(()));
        assert_eq!(sink.mem, dev.mem);
    }
}

#[test]
fn round_trip_random_chunkings() {
    for seed in 0..300u64 {
        let mut rng = Rng::new(seed);
        let npages = rng.below(5);
        let reg = [0u32, 1, 7, 8, 9, 64, 333][rng.below(7)];
        let p = params(npages, reg);
        let dev = Dev::random(&p, &mut rng);
        let max = [1usize, 8, 64, 5000, 20_000][rng.below(5)];
        let stream = {
            let mut r2 = Rng::new(seed ^ 0xabc);
            encode_with(&p, &dev, move || r2.range(1, max))
        };
        assert!(stream == expected_stream(&p, &dev), "seed {seed}");
        let mut dec = Decoder::new(p);
        let mut sink = Shadow::new(&p);
        let dmax = [1usize, 3, 100, 4112, 50_000][rng.below(5)];
        assert_eq!(
            decode_with(&mut dec, &mut sink, &stream, || rng.range(1, dmax)),
            Ok(()),
            "seed {seed}"
        );
        assert_eq!(dec.finish(), Ok(()));
        assert_eq!(dec.received(), stream.len() as u64 - END_RECORD_LEN as u64);
        assert_eq!(sink.mem, dev.mem);
        assert_eq!(sink.regs, dev.regs);
    }
}

/// Runs a pre-copy migration: fills while running with pages written
/// between (and inside) chunks, then stops, and returns the stream and the
/// source at stop time. Checks the pending invariants on the way.
fn precopy(seed: u64, p: &StreamParams) -> (Vec<u8>, Dev, usize) {
    let mut rng = Rng::new(seed);
    let mut dev = Dev::random(p, &mut rng);
    let mut enc = Encoder::new(*p);
    let mut dirty = all_dirty(p);
    let mut stream = Vec::new();
    let mut rounds = 0;
    let max_chunk = [1usize, 50, 3000, 4112, 9000, 1 << 16][rng.below(6)];
    let check_pending = |enc: &Encoder, dirty: &Dirty, stopped: bool| {
        let pend = enc.pending(dirty);
        // The stream length, if nothing is written any more, is what was
        // emitted plus what is pending.
        let mut e = enc.clone();
        let mut d = dirty.clone();
        let mut buf = vec![0u8; 1 << 16];
        let mut total = e.emitted();
        loop {
            let n = e.fill(&zero_source(), &mut d, true, &mut buf);
            if n == 0 {
                break;
            }
            total += n as u64;
        }
        assert_eq!(total, enc.emitted() + pend.total(), "stopped={stopped}");
        pend
    };
    // Precopy: fill while running.
    let mut last_total = u64::MAX;
    for _ in 0..rng.range(1, 60) {
        let n = {
            let mut buf = vec![0u8; rng.range(1, max_chunk)];
            let n = enc.fill(&dev, &mut dirty, false, &mut buf);
            stream.extend_from_slice(&buf[..n]);
            n
        };
        rounds += 1;
        let pend = check_pending(&enc, &dirty, false);
        assert_eq!(
            pend.precopy_only,
            if stream.len() >= HEADER_LEN {
                0
            } else {
                (HEADER_LEN - stream.len()) as u64
            }
        );
        assert_eq!(
            pend.postcopy_only,
            p.register_record_len() as u64 + END_RECORD_LEN as u64
        );
        if n == 0 {
            assert_eq!(pend.compatible, 0, "running and nothing dirty");
            assert!(stream.len() >= HEADER_LEN);
        } else if last_total != u64::MAX {
            assert_eq!(pend.total(), last_total - n as u64);
        }
        last_total = pend.total();
        // The guest writes some pages (possibly the one in flight).
        for _ in 0..rng.below(3) {
            dev.scribble(&mut dirty, &mut rng);
            last_total = u64::MAX;
        }
    }
    // Stop: one last write before the device is quiesced, then stop-and-copy.
    dev.scribble(&mut dirty, &mut rng);
    let at_stop = dev.clone();
    let mut last = enc.pending(&dirty).total();
    loop {
        let mut buf = vec![0u8; rng.range(1, max_chunk)];
        let n = enc.fill(&dev, &mut dirty, true, &mut buf);
        stream.extend_from_slice(&buf[..n]);
        let pend = enc.pending(&dirty);
        assert_eq!(
            pend.total(),
            last - n as u64,
            "pending falls by what was sent"
        );
        last = pend.total();
        if n == 0 {
            break;
        }
    }
    assert!(enc.is_complete());
    assert_eq!(enc.pending(&dirty), Pending::default());
    assert_eq!(enc.fill(&dev, &mut dirty, true, &mut [0u8; 64]), 0);
    (stream, at_stop, rounds)
}

/// A source of zeroes (the pending check only needs sizes).
fn zero_source() -> impl SaveSource {
    struct Zero;
    impl SaveSource for Zero {
        fn memory(&self, _: usize, len: usize) -> &[u8] {
            &[0; PAGE_SIZE][..len]
        }
        fn registers(&self, _: usize, len: usize) -> &[u8] {
            &[0; PAGE_SIZE][..len]
        }
    }
    Zero
}

#[test]
fn precopy_final_memory_equals_source_at_stop() {
    for seed in 0..120u64 {
        let p = params(1 + (seed as usize % 7), 24 + seed as u32 % 5);
        let (stream, at_stop, _) = precopy(seed, &p);
        assert!(stream.len() as u64 >= p.full_stream_len().unwrap());
        let mut rng = Rng::new(seed + 1000);
        let mut dec = Decoder::new(p);
        let mut sink = Shadow::new(&p);
        assert_eq!(
            decode_with(&mut dec, &mut sink, &stream, || rng.range(1, 9000)),
            Ok(()),
            "seed {seed}"
        );
        assert_eq!(dec.finish(), Ok(()));
        assert!(sink.mem == at_stop.mem, "seed {seed}: memory differs");
        assert_eq!(sink.regs, at_stop.regs);
    }
}

#[test]
fn running_with_nothing_dirty_produces_nothing() {
    let p = params(2, 4);
    let dev = Dev::random(&p, &mut Rng::new(9));
    let mut enc = Encoder::new(p);
    let mut dirty = all_dirty(&p);
    dirty.clear_all();
    let mut buf = vec![0u8; 100_000];
    // Only the header.
    assert_eq!(enc.fill(&dev, &mut dirty, false, &mut buf), HEADER_LEN);
    assert_eq!(enc.fill(&dev, &mut dirty, false, &mut buf), 0);
    assert_eq!(
        enc.pending(&dirty),
        Pending {
            precopy_only: 0,
            compatible: 0,
            postcopy_only: 12 + 32
        }
    );
    dirty.set(1).unwrap();
    assert_eq!(enc.pending(&dirty).compatible, 4112);
    assert_eq!(enc.fill(&dev, &mut dirty, false, &mut buf), 4112);
    assert!(!enc.is_complete());
    assert_eq!(enc.fill(&dev, &mut dirty, true, &mut buf), 12 + 32);
    assert!(enc.is_complete());
    assert_eq!(enc.fill(&dev, &mut dirty, true, &mut buf), 0);
}

#[test]
fn pending_at_setup_and_exact_countdown() {
    let p = params(3, 10);
    let dev = Dev::random(&p, &mut Rng::new(10));
    let mut enc = Encoder::new(p);
    let mut dirty = all_dirty(&p);
    assert_eq!(
        enc.pending(&dirty),
        Pending {
            precopy_only: 32,
            compatible: 3 * 4112,
            postcopy_only: 18 + 32
        }
    );
    let full = p.full_stream_len().unwrap();
    let mut sent = 0u64;
    let mut buf = [0u8; 5];
    loop {
        let pend = enc.pending(&dirty);
        assert_eq!(pend.total(), full - sent);
        let n = enc.fill(&dev, &mut dirty, true, &mut buf) as u64;
        if n == 0 {
            assert_eq!(pend.total(), 0);
            break;
        }
        assert_ne!(pend.total(), 0);
        sent += n;
    }
    assert_eq!(sent, full);
}

#[test]
fn dirty_bits_beyond_memory_are_ignored() {
    let p = params(2, 3);
    let dev = Dev::random(&p, &mut Rng::new(11));
    let mut enc = Encoder::new(p);
    let mut dirty = Bitmap::new(vec![0u64; 1], 64).unwrap();
    dirty.set_all();
    let mut out = vec![0u8; 1 << 16];
    let n = enc.fill(&dev, &mut dirty, true, &mut out);
    assert!(enc.is_complete());
    assert!(out[..n] == expected_stream(&p, &dev)[..]);
}

#[test]
fn registers_started_when_the_record_begins() {
    let p = params(2, 16);
    let dev = Dev::random(&p, &mut Rng::new(1));
    let mut enc = Encoder::new(p);
    let mut dirty = all_dirty(&p);
    let mut before = vec![0u8; HEADER_LEN + 2 * PAGE_RECORD_LEN];
    // Running, everything sent: no register record yet.
    assert_eq!(enc.fill(&dev, &mut dirty, false, &mut before), before.len());
    assert_eq!(enc.fill(&dev, &mut dirty, false, &mut [0u8; 64]), 0);
    assert!(!enc.registers_started());
    assert_eq!(enc.fill(&dev, &mut dirty, true, &mut [0u8; 1]), 1);
    assert!(enc.registers_started());
    encode_rest(&mut enc, &dev, &mut dirty);
    assert!(enc.registers_started());
}

#[test]
fn every_byte_corruption_is_detected() {
    let mut rng = Rng::new(12);
    let p = params(2, 13);
    let dev = Dev::random(&p, &mut rng);
    let good = encode(&p, &dev);
    for i in 0..good.len() {
        for mask in [1u8 << (i % 8), 0xff, 0x80] {
            let mut bad = good.clone();
            bad[i] ^= mask;
            let mut dec = Decoder::new(p);
            let mut sink = Shadow::new(&p);
            let chunk = rng.range(1, 5000);
            let r = decode_with(&mut dec, &mut sink, &bad, || chunk);
            assert!(r.is_err(), "byte {i} ^ {mask:#x} accepted");
            assert_eq!(dec.finish(), r, "finish reports the first error");
            // Poisoned: even more bytes do not help.
            assert_eq!(dec.feed(&[0], &mut sink), r);
        }
    }
}

#[test]
fn every_bit_flip_of_a_tiny_stream_is_detected() {
    let mut rng = Rng::new(13);
    let p = params(1, 3);
    let dev = Dev::random(&p, &mut rng);
    let good = encode(&p, &dev);
    for i in 0..good.len() {
        for bit in 0..8 {
            let mut bad = good.clone();
            bad[i] ^= 1 << bit;
            let (r, _) = decode(&p, &bad);
            assert!(r.is_err(), "bit {bit} of byte {i}");
        }
    }
}

#[test]
fn truncation_at_every_position() {
    let mut rng = Rng::new(14);
    let p = params(2, 21);
    let dev = Dev::random(&p, &mut rng);
    let good = encode(&p, &dev);
    for cut in 0..good.len() {
        let mut dec = Decoder::new(p);
        let mut sink = Shadow::new(&p);
        let r = decode_with(&mut dec, &mut sink, &good[..cut], || rng.range(1, 3000));
        assert_eq!(r, Ok(()), "a prefix is fine so far ({cut})");
        assert_eq!(dec.finish(), Err(StreamError::Truncated), "cut at {cut}");
        // Another decode from the point of the cut completes it.
        assert_eq!(dec.feed(&good[cut..], &mut sink), Ok(()));
        assert_eq!(dec.finish(), Ok(()));
    }
}

#[test]
fn trailing_bytes_are_overlong() {
    let mut rng = Rng::new(15);
    let p = params(1, 5);
    let dev = Dev::random(&p, &mut rng);
    let good = encode(&p, &dev);
    // Extra bytes in the same chunk.
    let mut long = good.clone();
    long.push(0);
    let (r, _) = decode(&p, &long);
    assert_eq!(r, Err(StreamError::Overlong));
    // Extra bytes in a later chunk, after finish succeeded.
    let mut dec = Decoder::new(p);
    let mut sink = Shadow::new(&p);
    dec.feed(&good, &mut sink).unwrap();
    assert_eq!(dec.finish(), Ok(()));
    assert_eq!(
        dec.feed(&[], &mut sink),
        Ok(()),
        "empty chunks are harmless"
    );
    assert_eq!(dec.feed(&good[..1], &mut sink), Err(StreamError::Overlong));
    assert_eq!(dec.finish(), Err(StreamError::Overlong));
    // A whole second stream.
    let (r, _) = decode(&p, &[good.clone(), good].concat());
    assert_eq!(r, Err(StreamError::Overlong));
}

/// A hand-made stream with one field changed, resealed with a correct
/// checksum so the specific check (not the checksum) must catch it.
fn custom(p: &StreamParams, header: Vec<u8>, pages: &[(u64, u8)], regs: Option<usize>) -> Vec<u8> {
    let mut parts = vec![header];
    for &(index, fill) in pages {
        parts.push(page_record(index, &[fill; PAGE_SIZE]));
    }
    if let Some(len) = regs {
        parts.push(record(b"REGS", &vec![0x5a; len]));
    }
    let _ = p;
    seal(&parts)
}

pub(super) fn good_header(p: &StreamParams) -> Vec<u8> {
    header_bytes(
        b"VMSSTATE",
        VERSION,
        p.type_id(),
        p.memory_size(),
        4096,
        p.register_len(),
    )
}

#[test]
fn specific_header_errors() {
    let p = params(2, 6);
    let cases: Vec<(Vec<u8>, StreamError)> = vec![
        (
            header_bytes(b"VMSSTATF", 1, 7, 8192, 4096, 6),
            StreamError::BadMagic,
        ),
        (
            header_bytes(b"\0\0\0\0\0\0\0\0", 1, 7, 8192, 4096, 6),
            StreamError::BadMagic,
        ),
        (
            header_bytes(b"VMSSTATE", VERSION - 1, 7, 8192, 4096, 6),
            StreamError::BadVersion,
        ),
        (
            header_bytes(b"VMSSTATE", VERSION + 1, 7, 8192, 4096, 6),
            StreamError::BadVersion,
        ),
        (
            header_bytes(b"VMSSTATE", VERSION, 8, 8192, 4096, 6),
            StreamError::WrongType,
        ),
        (
            header_bytes(b"VMSSTATE", VERSION, 7, 4096, 4096, 6),
            StreamError::WrongSize,
        ),
        (
            header_bytes(b"VMSSTATE", VERSION, 7, 12288, 4096, 6),
            StreamError::WrongSize,
        ),
        (
            header_bytes(b"VMSSTATE", VERSION, 7, 8192, 8192, 6),
            StreamError::BadPageSize,
        ),
        (
            header_bytes(b"VMSSTATE", VERSION, 7, 8192, 4096, 7),
            StreamError::BadRegisterLength,
        ),
    ];
    for (header, err) in cases {
        let stream = custom(&p, header, &[(0, 1), (1, 2)], Some(6));
        // Whole, and byte by byte: the error comes with the header's last byte.
        let (r, sink) = decode(&p, &stream);
        assert_eq!(r, Err(err));
        assert_eq!(sink.mem, vec![0u8; 8192], "nothing written");
        let mut dec = Decoder::new(p);
        let mut sink = Shadow::new(&p);
        for (i, b) in stream.iter().enumerate() {
            let r = dec.feed(&[*b], &mut sink);
            if i < HEADER_LEN - 1 {
                assert_eq!(r, Ok(()));
            } else {
                assert_eq!(r, Err(err));
            }
        }
        assert_eq!(dec.finish(), Err(err));
    }
    // And the good header passes.
    let (r, sink) = decode(
        &p,
        &custom(&p, good_header(&p), &[(1, 2), (0, 1), (1, 3)], Some(6)),
    );
    assert_eq!(r, Ok(()));
    assert_eq!(sink.mem[..4096], [1u8; 4096]);
    assert_eq!(
        sink.mem[4096..],
        [3u8; 4096],
        "the last record of a page wins"
    );
    assert_eq!(sink.regs, vec![0x5a; 6]);
}

#[test]
fn specific_record_errors() {
    let p = params(2, 6);
    let h = good_header(&p);
    let (r, _) = decode(&p, &custom(&p, h.clone(), &[(2, 0)], Some(6)));
    assert_eq!(r, Err(StreamError::OutOfRange));
    let (r, _) = decode(&p, &custom(&p, h.clone(), &[(u64::MAX, 0)], Some(6)));
    assert_eq!(r, Err(StreamError::OutOfRange));
    let (r, _) = decode(&p, &custom(&p, h.clone(), &[(1 << 32, 0)], Some(6)));
    assert_eq!(r, Err(StreamError::OutOfRange));
    // Register record of the wrong length.
    let (r, _) = decode(&p, &custom(&p, h.clone(), &[(0, 0)], Some(5)));
    assert_eq!(r, Err(StreamError::BadRecord));
    // End record without a register record.
    let (r, _) = decode(&p, &custom(&p, h.clone(), &[(0, 0)], None));
    assert_eq!(r, Err(StreamError::BadRecord));
    // Page after registers, registers twice.
    let regs = record(b"REGS", &[0; 6]);
    let late_page = seal(&[h.clone(), regs.clone(), page_record(0, &[0; PAGE_SIZE])]);
    assert_eq!(decode(&p, &late_page).0, Err(StreamError::BadRecord));
    let twice = seal(&[h.clone(), regs.clone(), regs.clone()]);
    assert_eq!(decode(&p, &twice).0, Err(StreamError::BadRecord));
    // Unknown tag, wrong page body length, wrong end body length.
    let unknown = seal(&[h.clone(), record(b"JUNK", &[]), regs.clone()]);
    assert_eq!(decode(&p, &unknown).0, Err(StreamError::BadRecord));
    let short_page = seal(&[h.clone(), record(b"PAGE", &[0; 8 + 4095]), regs.clone()]);
    assert_eq!(decode(&p, &short_page).0, Err(StreamError::BadRecord));
    let mut long_end = [h.clone(), regs.clone()].concat();
    let end = end_record(&long_end);
    long_end.extend_from_slice(&record(b"END.", &[&end[8..], &[0u8; 8][..]].concat()));
    assert_eq!(decode(&p, &long_end).0, Err(StreamError::BadRecord));
    // A stream that is just a header and an end record.
    let bare = seal(std::slice::from_ref(&h));
    assert_eq!(decode(&p, &bare).0, Err(StreamError::BadRecord));
    // A minimal valid stream: no page records at all.
    let minimal = seal(&[h.clone(), regs.clone()]);
    assert_eq!(decode(&p, &minimal).0, Ok(()));
}

#[test]
fn checksum_and_length_errors() {
    let p = params(1, 2);
    let h = good_header(&p);
    let regs = record(b"REGS", &[1, 2]);
    let before = [h.clone(), page_record(0, &[9; PAGE_SIZE]), regs].concat();
    let (a, b) = naive_checksum(&before);
    let end = |len: u64, a: u64, b: u64| {
        let body = [len.to_le_bytes(), a.to_le_bytes(), b.to_le_bytes()].concat();
        [before.clone(), record(b"END.", &body)].concat()
    };
    let n = before.len() as u64;
    assert_eq!(decode(&p, &end(n, a, b)).0, Ok(()));
    assert_eq!(
        decode(&p, &end(n + 1, a, b)).0,
        Err(StreamError::BadChecksum)
    );
    assert_eq!(
        decode(&p, &end(n - 8, a, b)).0,
        Err(StreamError::BadChecksum)
    );
    assert_eq!(
        decode(&p, &end(n, a ^ 1, b)).0,
        Err(StreamError::BadChecksum)
    );
    assert_eq!(
        decode(&p, &end(n, a, b.wrapping_add(1))).0,
        Err(StreamError::BadChecksum)
    );
    // Swapping two page records changes b, not a.
    let p2 = params(2, 2);
    let h2 = good_header(&p2);
    let r0 = page_record(0, &[1; PAGE_SIZE]);
    let r1 = page_record(1, &[2; PAGE_SIZE]);
    let regs = record(b"REGS", &[1, 2]);
    let good = seal(&[h2.clone(), r0.clone(), r1.clone(), regs.clone()]);
    let body_end = good.len() - END_RECORD_LEN;
    let swapped = [&[h2, r1, r0, regs].concat()[..], &good[body_end..]].concat();
    assert_eq!(decode(&p2, &swapped).0, Err(StreamError::BadChecksum));
}

#[test]
fn sink_rejection_poisons() {
    let mut rng = Rng::new(16);
    for reg in [0u32, 9] {
        let p = params(1, reg);
        let dev = Dev::random(&p, &mut rng);
        let good = encode(&p, &dev);
        let mut dec = Decoder::new(p);
        let mut sink = Shadow::new(&p);
        sink.reject_regs = true;
        assert_eq!(dec.feed(&good, &mut sink), Err(StreamError::BadState));
        assert_eq!(sink.regs_done, 1);
        sink.reject_regs = false;
        assert_eq!(dec.feed(&good, &mut sink), Err(StreamError::BadState));
        assert_eq!(dec.finish(), Err(StreamError::BadState));
    }
}

#[test]
fn random_garbage_never_panics_or_succeeds() {
    for seed in 0..500u64 {
        let mut rng = Rng::new(seed);
        let p = params(rng.below(3), rng.below(40) as u32);
        let mut garbage = vec![0u8; rng.below(20_000)];
        rng.fill(&mut garbage);
        if seed % 2 == 0 && garbage.len() >= HEADER_LEN {
            // Past the header, to reach the record parser.
            garbage[..HEADER_LEN].copy_from_slice(&good_header(&p));
            if seed % 4 == 0 && garbage.len() >= HEADER_LEN + 8 {
                garbage[HEADER_LEN..HEADER_LEN + 4].copy_from_slice(b"PAGE");
                garbage[HEADER_LEN + 4..HEADER_LEN + 8].copy_from_slice(&4104u32.to_le_bytes());
            }
        }
        let mut dec = Decoder::new(p);
        let mut sink = Shadow::new(&p);
        let _ = decode_with(&mut dec, &mut sink, &garbage, || rng.range(1, 700));
        assert!(dec.finish().is_err(), "seed {seed}");
    }
}

#[test]
fn error_variants_are_distinct() {
    use StreamError::*;
    let all = [
        BadLayout,
        BadMagic,
        BadVersion,
        WrongType,
        WrongSize,
        BadPageSize,
        BadRegisterLength,
        BadRecord,
        OutOfRange,
        BadChecksum,
        BadState,
        Truncated,
        Overlong,
    ];
    for (i, a) in all.iter().enumerate() {
        for b in &all[i + 1..] {
            assert_ne!(a, b);
        }
    }
}

/// Speed of encode and decode against memcpy, for a 2 MiB device:
/// `cargo test --release -p vfio-mig-model -- --ignored --nocapture speed`.
#[test]
#[ignore]
fn speed() {
    use std::time::Instant;
    let p = params(512, 256);
    let dev = Dev::random(&p, &mut Rng::new(17));
    let len = p.full_stream_len().unwrap() as usize;
    let mut stream = vec![0u8; len];
    let rounds = 200;
    let t = Instant::now();
    let mut copy = vec![0u8; dev.mem.len()];
    for _ in 0..rounds {
        copy.copy_from_slice(std::hint::black_box(&dev.mem));
        std::hint::black_box(&mut copy);
    }
    let memcpy = t.elapsed();
    let t = Instant::now();
    for _ in 0..rounds {
        let mut enc = Encoder::new(p);
        let mut dirty = all_dirty(&p);
        let mut off = 0;
        while off < len {
            let end = (off + (1 << 20)).min(len);
            off += enc.fill(&dev, &mut dirty, true, &mut stream[off..end]);
        }
        assert!(enc.is_complete());
    }
    let encode = t.elapsed();
    let t = Instant::now();
    let mut sink = Shadow::new(&p);
    for _ in 0..rounds {
        let mut dec = Decoder::new(p);
        for c in stream.chunks(1 << 20) {
            dec.feed(c, &mut sink).unwrap();
        }
        dec.finish().unwrap();
    }
    let decode = t.elapsed();
    let t = Instant::now();
    let mut x = 0u64;
    for _ in 0..rounds {
        let mut c = Checksum::new();
        c.update(std::hint::black_box(&dev.mem));
        x ^= c.finish().1;
    }
    std::hint::black_box(x);
    let checksum = t.elapsed();
    let gbs = |d: std::time::Duration| (dev.mem.len() * rounds) as f64 / d.as_secs_f64() / 1e9;
    println!(
        "memcpy {:.2} GB/s, checksum {:.2} GB/s, encode {:.2} GB/s, decode {:.2} GB/s",
        gbs(memcpy),
        gbs(checksum),
        gbs(encode),
        gbs(decode)
    );
}

/// A user buffer of `room` bytes whose piece number `fault_at` faults
/// (after it has received part of the piece, as a copy to user can).
struct FaultySink {
    buf: Vec<u8>,
    room: usize,
    pieces: usize,
    fault_at: usize,
}

impl StreamSink for FaultySink {
    fn room(&self) -> usize {
        self.room - self.buf.len()
    }
    fn put(&mut self, bytes: &[u8]) -> Result<(), SinkFault> {
        assert!(
            bytes.len() <= self.room(),
            "the encoder overfilled its sink"
        );
        self.pieces += 1;
        if self.pieces == self.fault_at {
            return Err(SinkFault);
        }
        self.buf.extend_from_slice(bytes);
        Ok(())
    }
}

#[test]
fn sink_faults_lose_nothing() {
    // Reads into sinks that fault at random pieces (a v2 data-file read
    // whose user buffer faults) yield the same stream as one uninterrupted
    // encoding: the bytes before a fault count, the rest come next time.
    let p = params(24, 300);
    for seed in 0..60u64 {
        let mut rng = Rng::new(seed);
        let dev = Dev::random(&p, &mut rng);
        let want = encode(&p, &dev);
        let mut enc = Encoder::new(p);
        let mut dirty = all_dirty(&p);
        let mut got = Vec::new();
        let mut faults = 0;
        loop {
            let mut sink = FaultySink {
                buf: Vec::new(),
                room: rng.range(1, 20_000),
                pieces: 0,
                fault_at: rng.range(1, 6),
            };
            let n = match enc.emit(&dev, &mut dirty, true, &mut sink) {
                Ok(n) => n,
                Err(Faulted { emitted }) => {
                    faults += 1;
                    emitted
                }
            };
            assert_eq!(n, sink.buf.len(), "seed {seed}: the count is what arrived");
            got.extend_from_slice(&sink.buf);
            if n == 0 && sink.fault_at > sink.pieces {
                break;
            }
        }
        assert!(faults > 0, "seed {seed}: no fault happened");
        assert!(enc.is_complete());
        assert_eq!(got, want, "seed {seed}");
    }
}

#[test]
fn slice_sink_is_fill() {
    // `fill` is `emit` into a buffer: same bytes for the same chunking.
    let p = params(5, 40);
    let dev = Dev::random(&p, &mut Rng::new(3));
    let mut enc = Encoder::new(p);
    let mut dirty = all_dirty(&p);
    let mut out = Vec::new();
    loop {
        let mut buf = [0u8; 1000];
        let mut sink = SliceSink::new(&mut buf);
        let n = enc
            .emit(&dev, &mut dirty, true, &mut sink)
            .expect("no fault");
        if n == 0 {
            break;
        }
        out.extend_from_slice(&buf[..n]);
    }
    assert_eq!(out, encode_with(&p, &dev, || 1000));
}
