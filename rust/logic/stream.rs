// SPDX-License-Identifier: GPL-2.0

//! The device-state stream: layout, checksum, encoder, decoder and pending
//! accounting (SPEC section 2, "The stream" and "Pending bytes";
//! `Documentation/migration-stream.rst` describes the format byte by byte).
//!
//! All integers are little-endian. A stream is:
//!
//! ```text
//! header (32 bytes)
//! page record (4112 bytes)       zero or more, any order, repeats allowed
//! register record (8 + reglen)   exactly one
//! end record (32 bytes)          length and checksum of everything before
//! ```
//!
//! Both sides work with arbitrary chunk boundaries (from 1 byte up) and
//! never allocate or panic: the encoder puts into a [`StreamSink`] (a
//! buffer, or in the kernel a user buffer), the decoder takes buffers. The framing's
//! numbers are in [`super::abi::stream`].

use core::ops::{Deref, DerefMut};

use super::abi::stream::{
    END_BODY_LEN, END_RECORD_LEN, HEADER_LEN, MAGIC, PAGE_BODY_LEN, PAGE_RECORD_LEN, PAGE_SIZE,
    RECORD_HEAD_LEN, TAG_END, TAG_PAGE, TAG_REGS, VERSION,
};
use super::bitmap::Bitmap;

/// Size of a page record (see [`PAGE_RECORD_LEN`]).
#[cfg(test)]
pub(crate) const fn page_record_len() -> usize {
    PAGE_RECORD_LEN
}

/// Why a stream (or stream parameters) is refused. The kernel maps every
/// variant to `EINVAL`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum StreamError {
    /// Parameters given to [`StreamParams::new`] are unusable (memory size
    /// not a page multiple or too large).
    BadLayout,
    /// The header does not start with [`MAGIC`].
    BadMagic,
    /// The header's version is not [`VERSION`].
    BadVersion,
    /// The header's mdev type id is not the destination's.
    WrongType,
    /// The header's device-memory size is not the destination's.
    WrongSize,
    /// The header's page size is not [`PAGE_SIZE`].
    BadPageSize,
    /// The header's register-state length is not the destination's.
    BadRegisterLength,
    /// Unknown record tag, wrong record body length, or a record out of
    /// order (page after registers, second register record, end without
    /// registers).
    BadRecord,
    /// A page record names a page at or beyond the device memory.
    OutOfRange,
    /// The end record's length or checksum does not match the stream.
    BadChecksum,
    /// The sink refused the register state.
    BadState,
    /// The stream stopped before its end record.
    Truncated,
    /// Bytes follow the end record.
    Overlong,
}

/// What a stream is for: the parameters both sides must agree on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct StreamParams {
    /// mdev type id.
    type_id: u32,
    /// Device-memory size in bytes (a multiple of [`PAGE_SIZE`]).
    memory_size: u64,
    /// Number of device-memory pages.
    npages: usize,
    /// Length of the register-state blob.
    register_len: u32,
    /// Size of the register record.
    register_record_len: usize,
}

impl StreamParams {
    /// Parameters for a device of mdev type `type_id` with `memory_size`
    /// bytes of device memory and a register-state blob of `register_len`
    /// bytes.
    pub(crate) fn new(
        type_id: u32,
        memory_size: u64,
        register_len: u32,
    ) -> Result<Self, StreamError> {
        let page = PAGE_SIZE as u64;
        // PAGE_SIZE is a power of two.
        if memory_size & (page - 1) != 0 {
            return Err(StreamError::BadLayout);
        }
        let npages = usize::try_from(memory_size / page).map_err(|_| StreamError::BadLayout)?;
        // Byte offsets into device memory must fit a usize.
        usize::try_from(memory_size).map_err(|_| StreamError::BadLayout)?;
        let register_record_len = usize::try_from(register_len)
            .ok()
            .and_then(|r| r.checked_add(RECORD_HEAD_LEN))
            .ok_or(StreamError::BadLayout)?;
        let params = StreamParams {
            type_id,
            memory_size,
            npages,
            register_len,
            register_record_len,
        };
        // The size of a stream carrying every page once must fit a u64.
        params.full_stream_len().ok_or(StreamError::BadLayout)?;
        Ok(params)
    }

    /// mdev type id.
    #[cfg(test)]
    pub(crate) fn type_id(&self) -> u32 {
        self.type_id
    }

    /// Device-memory size in bytes.
    #[cfg(test)]
    pub(crate) fn memory_size(&self) -> u64 {
        self.memory_size
    }

    /// Number of device-memory pages.
    pub(crate) fn npages(&self) -> usize {
        self.npages
    }

    /// Length of the register-state blob.
    #[cfg(test)]
    pub(crate) fn register_len(&self) -> u32 {
        self.register_len
    }

    /// Size of the register record (head and blob).
    #[cfg(test)]
    pub(crate) fn register_record_len(&self) -> usize {
        self.register_record_len
    }

    /// Size of a stream that carries every page exactly once (the shortest
    /// stream the encoder produces; pre-copy resends add to it).
    pub(crate) fn full_stream_len(&self) -> Option<u64> {
        (self.npages as u64)
            .checked_mul(PAGE_RECORD_LEN as u64)?
            .checked_add(HEADER_LEN as u64)?
            .checked_add(self.register_record_len as u64)?
            .checked_add(END_RECORD_LEN as u64)
    }

    /// The stream header for these parameters.
    fn header(&self) -> [u8; HEADER_LEN] {
        let mut h = [0u8; HEADER_LEN];
        let mut w = Writer::new(&mut h);
        w.bytes(&MAGIC);
        w.u32(VERSION);
        w.u32(self.type_id);
        w.u64(self.memory_size);
        w.u32(PAGE_SIZE as u32);
        w.u32(self.register_len);
        h
    }
}

/// Little-endian writer into a fixed buffer; writes past the end are
/// dropped (the callers size their buffers exactly).
struct Writer<'a> {
    /// Destination.
    buf: &'a mut [u8],
    /// Next byte to write.
    pos: usize,
}

impl<'a> Writer<'a> {
    /// A writer at the start of `buf`.
    fn new(buf: &'a mut [u8]) -> Self {
        Writer { buf, pos: 0 }
    }

    /// Appends raw bytes.
    fn bytes(&mut self, b: &[u8]) {
        let end = self.pos.saturating_add(b.len());
        if let Some(dst) = self.buf.get_mut(self.pos..end) {
            dst.copy_from_slice(b);
        }
        self.pos = end;
    }

    /// Appends a little-endian `u32`.
    fn u32(&mut self, v: u32) {
        self.bytes(&v.to_le_bytes());
    }

    /// Appends a little-endian `u64`.
    fn u64(&mut self, v: u64) {
        self.bytes(&v.to_le_bytes());
    }
}

/// Little-endian reader over a fixed buffer; reads past the end give
/// `None`.
struct Reader<'a> {
    /// What is left to read.
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    /// A reader at the start of `buf`.
    fn new(buf: &'a [u8]) -> Self {
        Reader { rest: buf }
    }

    /// Takes `N` bytes.
    fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        let (first, rest) = self.rest.split_first_chunk::<N>()?;
        self.rest = rest;
        Some(*first)
    }

    /// Takes a little-endian `u32`.
    fn u32(&mut self) -> Option<u32> {
        self.array::<4>().map(u32::from_le_bytes)
    }

    /// Takes a little-endian `u64`.
    fn u64(&mut self) -> Option<u64> {
        self.array::<8>().map(u64::from_le_bytes)
    }
}

/// The stream checksum: a Fletcher-style pair of sums over the stream as
/// little-endian `u64` words, modulo 2^64.
///
/// For every word `w` in stream order: `a += w; b += a`. A final partial
/// word is zero-padded; the end record carries the byte length too, so
/// padding is not ambiguous. Any single-bit flip changes `a`; a swap of two
/// different words changes `b`; truncation or extension changes the length.
/// Partial words are carried across [`Checksum::update`] calls, so chunk
/// boundaries do not matter.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Checksum {
    /// Sum of the words.
    a: u64,
    /// Sum of the running values of `a`.
    b: u64,
    /// Bytes seen.
    len: u64,
    /// Bytes of a word not yet complete, little-endian, low bytes first.
    tail: u64,
    /// Number of bytes in `tail` (0..8).
    tail_len: u32,
}

impl Checksum {
    /// A checksum over no bytes.
    pub(crate) const fn new() -> Self {
        Checksum {
            a: 0,
            b: 0,
            len: 0,
            tail: 0,
            tail_len: 0,
        }
    }

    /// Folds one word in.
    #[inline(always)]
    fn word(&mut self, w: u64) {
        self.a = self.a.wrapping_add(w);
        self.b = self.b.wrapping_add(self.a);
    }

    /// Adds `data` to the checksummed bytes.
    pub(crate) fn update(&mut self, data: &[u8]) {
        self.len = self.len.wrapping_add(data.len() as u64);
        let mut data = data;
        if self.tail_len != 0 {
            while self.tail_len < 8 {
                let Some((&byte, rest)) = data.split_first() else {
                    return;
                };
                self.tail |= u64::from(byte) << (8 * self.tail_len);
                self.tail_len += 1;
                data = rest;
            }
            let w = self.tail;
            self.tail = 0;
            self.tail_len = 0;
            self.word(w);
        }
        let mut words = data.chunks_exact(8);
        let (mut a, mut b) = (self.a, self.b);
        for w in &mut words {
            if let Some((w, _)) = w.split_first_chunk::<8>() {
                a = a.wrapping_add(u64::from_le_bytes(*w));
                b = b.wrapping_add(a);
            }
        }
        self.a = a;
        self.b = b;
        for (i, &byte) in words.remainder().iter().enumerate() {
            self.tail |= u64::from(byte) << (8 * i);
        }
        self.tail_len = words.remainder().len() as u32;
    }

    /// Number of bytes checksummed so far.
    pub(crate) fn len(&self) -> u64 {
        self.len
    }

    /// The `(a, b)` pair over every byte so far (a partial word zero-padded).
    pub(crate) fn finish(&self) -> (u64, u64) {
        let mut c = *self;
        if c.tail_len != 0 {
            c.word(c.tail);
        }
        (c.a, c.b)
    }
}

/// At most `max` bytes of `src` from `off` (fewer, or none, past its end).
pub(crate) fn part(src: &[u8], off: usize, max: usize) -> &[u8] {
    let rest = src.get(off..).unwrap_or(&[]);
    rest.get(..max).unwrap_or(rest)
}

/// Puts `piece` into `sink` and, once it is there, into `sum`.
fn put<K: StreamSink + ?Sized>(
    sink: &mut K,
    sum: &mut Checksum,
    piece: &[u8],
) -> Result<(), SinkFault> {
    sink.put(piece)?;
    sum.update(piece);
    Ok(())
}

/// The head of a record.
fn record_head(tag: u32, body_len: usize) -> [u8; RECORD_HEAD_LEN] {
    let mut h = [0u8; RECORD_HEAD_LEN];
    let mut w = Writer::new(&mut h);
    w.u32(tag);
    w.u32(u32::try_from(body_len).unwrap_or(u32::MAX));
    h
}

/// The head and page number of a page record.
const PAGE_PAYLOAD: usize = RECORD_HEAD_LEN + 8;

/// The first [`PAGE_PAYLOAD`] bytes of the record of `page`.
fn page_head(page: usize) -> [u8; PAGE_PAYLOAD] {
    let mut head = [0u8; PAGE_PAYLOAD];
    let mut w = Writer::new(&mut head);
    w.bytes(&record_head(TAG_PAGE, PAGE_BODY_LEN));
    w.u64(page as u64);
    head
}

/// Where the source device's state comes from (the encoder reads it at
/// emission time, and hands the caller's slices straight to the sink).
pub(crate) trait SaveSource {
    /// `len` bytes of device memory from byte `offset`. The encoder only
    /// asks for ranges inside one page of the device memory; a shorter
    /// slice ends what the encoder emits this time.
    fn memory(&self, offset: usize, len: usize) -> &[u8];
    /// `len` bytes of the register-state blob from byte `offset`. The
    /// encoder only asks for ranges inside the blob, and only once the
    /// device is stopped.
    fn registers(&self, offset: usize, len: usize) -> &[u8];
}

/// Where the encoder puts the stream: the kernel's data area, or a user
/// buffer (a v2 data-file read: one copy from device memory to the user).
pub(crate) trait StreamSink {
    /// How many more bytes fit.
    fn room(&self) -> usize;
    /// Appends `bytes` (never more than [`room`](Self::room)). On a fault
    /// none of them count as emitted, and the encoder emits them again the
    /// next time.
    fn put(&mut self, bytes: &[u8]) -> Result<(), SinkFault>;
}

/// A [`StreamSink`] could not take the bytes (in the kernel: the user
/// buffer faulted).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct SinkFault;

/// A [`StreamSink`] over a buffer, filled from its start.
pub(crate) struct SliceSink<'a> {
    buf: &'a mut [u8],
    len: usize,
}

impl<'a> SliceSink<'a> {
    /// An empty sink with room for `buf.len()` bytes.
    pub(crate) fn new(buf: &'a mut [u8]) -> Self {
        SliceSink { buf, len: 0 }
    }
}

impl StreamSink for SliceSink<'_> {
    fn room(&self) -> usize {
        self.buf.len() - self.len
    }

    fn put(&mut self, bytes: &[u8]) -> Result<(), SinkFault> {
        let end = self.len.checked_add(bytes.len()).ok_or(SinkFault)?;
        self.buf
            .get_mut(self.len..end)
            .ok_or(SinkFault)?
            .copy_from_slice(bytes);
        self.len = end;
        Ok(())
    }
}

/// A [`StreamSink`] fault after `emitted` bytes had gone to the sink.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Faulted {
    /// Bytes emitted before the fault, which count as sent.
    pub(crate) emitted: usize,
}

/// Where the destination's decoder puts what it receives (the kernel's
/// sink writes to shadow state, committed only at `RESUME_COMPLETED`).
pub(crate) trait RestoreSink {
    /// Stores `data` at byte `offset` of device memory. The range is inside
    /// one page of the device memory.
    fn write_memory(&mut self, offset: usize, data: &[u8]);
    /// Stores `data` at byte `offset` of the register-state blob. The range
    /// is inside the blob.
    fn write_registers(&mut self, offset: usize, data: &[u8]);
    /// The whole blob has arrived; an error (e.g. [`StreamError::BadState`])
    /// poisons the decoder.
    fn registers_done(&mut self) -> Result<(), StreamError>;
}

/// The pending bytes of a save stream, as the migration region reports them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Pending {
    /// Unsent header bytes.
    pub(crate) precopy_only: u64,
    /// Unsent page-record bytes: dirty pages times [`PAGE_RECORD_LEN`]
    /// plus the rest of a page record in progress.
    pub(crate) compatible: u64,
    /// Unsent register-record and end-record bytes.
    pub(crate) postcopy_only: u64,
}

impl Pending {
    /// Sum of the three parts, saturating.
    pub(crate) fn total(&self) -> u64 {
        self.precopy_only
            .saturating_add(self.compatible)
            .saturating_add(self.postcopy_only)
    }
}

/// Where the encoder is in the stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum EncPhase {
    /// In the header, `off` bytes sent.
    Header {
        /// Bytes of the header already emitted.
        off: usize,
    },
    /// Between records, before the register record.
    Between,
    /// In the record of `page`, `off` bytes sent.
    Page {
        /// Page index.
        page: usize,
        /// Bytes of the record already emitted.
        off: usize,
    },
    /// In the register record, `off` bytes sent.
    Regs {
        /// Bytes of the record already emitted.
        off: usize,
    },
    /// In the end record, `off` bytes sent.
    End {
        /// Bytes of the record already emitted.
        off: usize,
        /// The end record.
        record: [u8; END_RECORD_LEN],
    },
    /// Stream complete.
    Done,
}

/// The source side: produces the stream lazily, chunk by chunk.
///
/// Page records are produced for the pages set in the caller's dirty
/// bitmap, in ascending order from where the last one was taken, wrapping
/// around. A page's bit is cleared when its record starts, and its bytes
/// are read from the [`SaveSource`] when they are emitted: a record emitted
/// across two chunks may mix old and new bytes of a page written in
/// between; that page is dirty again then and is sent again later, and the
/// last record of a page wins on the destination.
#[derive(Clone, Debug)]
pub(crate) struct Encoder {
    /// Stream parameters.
    params: StreamParams,
    /// Position in the stream.
    phase: EncPhase,
    /// Where the search for the next dirty page starts.
    cursor: usize,
    /// Checksum of the bytes emitted before the end record.
    sum: Checksum,
    /// Bytes emitted.
    emitted: u64,
}

impl Encoder {
    /// An encoder at the start of a stream. The caller marks every page
    /// dirty (`Bitmap::set_all`) when it starts it.
    pub(crate) fn new(params: StreamParams) -> Self {
        Encoder {
            params,
            phase: EncPhase::Header { off: 0 },
            cursor: 0,
            sum: Checksum::new(),
            emitted: 0,
        }
    }

    /// The stream parameters.
    #[cfg(test)]
    pub(crate) fn params(&self) -> &StreamParams {
        &self.params
    }

    /// Whether the register record has begun: from then on its source
    /// must not change, or the record mixes two states (the caller keeps
    /// the blob it began with).
    pub(crate) fn registers_started(&self) -> bool {
        matches!(
            self.phase,
            EncPhase::Regs { .. } | EncPhase::End { .. } | EncPhase::Done
        )
    }

    /// Whether the whole stream (end record included) has been emitted.
    #[cfg(test)]
    pub(crate) fn is_complete(&self) -> bool {
        self.phase == EncPhase::Done
    }

    /// Bytes emitted so far.
    #[cfg(test)]
    pub(crate) fn emitted(&self) -> u64 {
        self.emitted
    }

    /// Takes the next dirty page in range, clearing its bit.
    fn next_dirty<B: DerefMut<Target = [u64]>>(&mut self, dirty: &mut Bitmap<B>) -> Option<usize> {
        while !dirty.is_empty() {
            let page = dirty
                .take_next(self.cursor)
                .or_else(|| dirty.take_next(0))?;
            self.cursor = page.saturating_add(1);
            if page < self.params.npages {
                return Some(page);
            }
        }
        None
    }

    /// Writes the next bytes of the stream into `out` and returns how many
    /// ([`Encoder::emit`] into a [`SliceSink`]).
    pub(crate) fn fill<S, B>(
        &mut self,
        src: &S,
        dirty: &mut Bitmap<B>,
        stopped: bool,
        out: &mut [u8],
    ) -> usize
    where
        S: SaveSource + ?Sized,
        B: DerefMut<Target = [u64]>,
    {
        let mut sink = SliceSink::new(out);
        match self.emit(src, dirty, stopped, &mut sink) {
            Ok(n) => n,
            Err(Faulted { emitted }) => emitted,
        }
    }

    /// Puts the next bytes of the stream into `sink`, as many as fit, and
    /// returns how many.
    ///
    /// The header comes first; then a page record for each page set in
    /// `dirty`; only when `stopped` and no dirty page is left, the register
    /// record and the end record. Returns 0 when nothing can be produced
    /// now (running and no dirty page) or the stream is complete. `dirty`
    /// covers the device memory (`params().npages()` pages); bits beyond
    /// are cleared and ignored. Page bodies go from the source's slices to
    /// the sink, and into the checksum, with no copy between.
    ///
    /// A sink fault stops the emission: what went before it counts as sent
    /// ([`Faulted::emitted`]), the rest is emitted again next time.
    pub(crate) fn emit<S, B, K>(
        &mut self,
        src: &S,
        dirty: &mut Bitmap<B>,
        stopped: bool,
        sink: &mut K,
    ) -> Result<usize, Faulted>
    where
        S: SaveSource + ?Sized,
        B: DerefMut<Target = [u64]>,
        K: StreamSink + ?Sized,
    {
        let mut done = 0usize;
        let res = loop {
            let room = sink.room();
            if room == 0 {
                break Ok(());
            }
            let n = match self.phase {
                EncPhase::Header { off } => {
                    let header = self.params.header();
                    let piece = part(&header, off, room);
                    if let Err(e) = put(sink, &mut self.sum, piece) {
                        break Err(e);
                    }
                    let off = off + piece.len();
                    self.phase = if off >= HEADER_LEN {
                        EncPhase::Between
                    } else {
                        EncPhase::Header { off }
                    };
                    piece.len()
                }
                EncPhase::Between => {
                    if let Some(page) = self.next_dirty(dirty) {
                        self.phase = EncPhase::Page { page, off: 0 };
                    } else if stopped {
                        self.phase = EncPhase::Regs { off: 0 };
                    } else {
                        break Ok(());
                    }
                    continue;
                }
                EncPhase::Page { page, off } => {
                    let head;
                    let piece = if off < PAGE_PAYLOAD {
                        head = page_head(page);
                        part(&head, off, room)
                    } else {
                        let in_page = off - PAGE_PAYLOAD;
                        let base = page.saturating_mul(PAGE_SIZE);
                        src.memory(
                            base.saturating_add(in_page),
                            (PAGE_SIZE - in_page).min(room),
                        )
                    };
                    if let Err(e) = put(sink, &mut self.sum, piece) {
                        break Err(e);
                    }
                    let off = off + piece.len();
                    self.phase = if off >= PAGE_RECORD_LEN {
                        EncPhase::Between
                    } else {
                        EncPhase::Page { page, off }
                    };
                    piece.len()
                }
                EncPhase::Regs { off } => {
                    let head;
                    let piece = if off < RECORD_HEAD_LEN {
                        let body = self.params.register_record_len - RECORD_HEAD_LEN;
                        head = record_head(TAG_REGS, body);
                        part(&head, off, room)
                    } else {
                        let len = (self.params.register_record_len - off).min(room);
                        src.registers(off - RECORD_HEAD_LEN, len)
                    };
                    if let Err(e) = put(sink, &mut self.sum, piece) {
                        break Err(e);
                    }
                    let off = off + piece.len();
                    self.phase = if off >= self.params.register_record_len {
                        EncPhase::End {
                            off: 0,
                            record: self.end_record(),
                        }
                    } else {
                        EncPhase::Regs { off }
                    };
                    piece.len()
                }
                EncPhase::End { off, record } => {
                    // The end record is not part of its own checksum.
                    let piece = part(&record, off, room);
                    if let Err(e) = sink.put(piece) {
                        break Err(e);
                    }
                    let off = off + piece.len();
                    self.phase = if off >= END_RECORD_LEN {
                        EncPhase::Done
                    } else {
                        EncPhase::End { off, record }
                    };
                    piece.len()
                }
                EncPhase::Done => break Ok(()),
            };
            if n == 0 {
                break Ok(());
            }
            done += n;
        };
        self.emitted = self.emitted.wrapping_add(done as u64);
        res.map(|()| done)
            .map_err(|SinkFault| Faulted { emitted: done })
    }

    /// Builds the end record from the checksum of everything before it.
    fn end_record(&self) -> [u8; END_RECORD_LEN] {
        let (a, b) = self.sum.finish();
        let mut record = [0u8; END_RECORD_LEN];
        let mut w = Writer::new(&mut record);
        w.bytes(&record_head(TAG_END, END_BODY_LEN));
        w.u64(self.sum.len());
        w.u64(a);
        w.u64(b);
        record
    }

    /// The bytes still to send, given the current dirty bitmap.
    ///
    /// The sum is 0 exactly when the stream is complete. Pages dirtied
    /// after the register record started are not counted: no page record
    /// may follow it (the device is stopped by then).
    pub(crate) fn pending<B: Deref<Target = [u64]>>(&self, dirty: &Bitmap<B>) -> Pending {
        let page_rec = PAGE_RECORD_LEN as u64;
        let dirty_bytes = (dirty.count().min(self.params.npages) as u64).saturating_mul(page_rec);
        let reg_rec = self.params.register_record_len as u64;
        let end_rec = END_RECORD_LEN as u64;
        let tail = reg_rec.saturating_add(end_rec);
        match self.phase {
            EncPhase::Header { off } => Pending {
                precopy_only: (HEADER_LEN - off) as u64,
                compatible: dirty_bytes,
                postcopy_only: tail,
            },
            EncPhase::Between => Pending {
                precopy_only: 0,
                compatible: dirty_bytes,
                postcopy_only: tail,
            },
            EncPhase::Page { off, .. } => Pending {
                precopy_only: 0,
                compatible: dirty_bytes.saturating_add((PAGE_RECORD_LEN - off) as u64),
                postcopy_only: tail,
            },
            EncPhase::Regs { off } => Pending {
                precopy_only: 0,
                compatible: 0,
                postcopy_only: tail.saturating_sub(off as u64),
            },
            EncPhase::End { off, .. } => Pending {
                precopy_only: 0,
                compatible: 0,
                postcopy_only: end_rec.saturating_sub(off as u64),
            },
            EncPhase::Done => Pending::default(),
        }
    }
}

/// Where the decoder is in the stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum DecPhase {
    /// Collecting the header.
    Header,
    /// Collecting a record head.
    RecordHead,
    /// Collecting the page index of a page record.
    PageIndex,
    /// In the payload of the record of `page`, `off` bytes received.
    PagePayload {
        /// Page index.
        page: usize,
        /// Payload bytes received.
        off: usize,
    },
    /// In the register blob, `off` bytes received.
    Regs {
        /// Blob bytes received.
        off: usize,
    },
    /// Collecting the end record body.
    EndBody,
    /// A complete valid stream was received.
    Done,
    /// The stream was refused; every later call fails with this error.
    Failed(StreamError),
}

/// The destination side: takes the stream chunk by chunk, validates it and
/// hands its contents to a [`RestoreSink`].
#[derive(Clone, Debug)]
pub(crate) struct Decoder {
    /// What the stream must be for.
    params: StreamParams,
    /// Position in the stream.
    phase: DecPhase,
    /// Staging for fixed-size pieces (header, record head, page index, end
    /// body).
    buf: [u8; HEADER_LEN],
    /// Bytes staged in `buf`.
    have: usize,
    /// Checksum of the bytes before the end record.
    sum: Checksum,
    /// Whether the register record was received.
    regs_seen: bool,
}

impl Decoder {
    /// A decoder expecting a stream for `params`.
    pub(crate) fn new(params: StreamParams) -> Self {
        Decoder {
            params,
            phase: DecPhase::Header,
            buf: [0u8; HEADER_LEN],
            have: 0,
            sum: Checksum::new(),
            regs_seen: false,
        }
    }

    /// The expected stream parameters.
    #[cfg(test)]
    pub(crate) fn params(&self) -> &StreamParams {
        &self.params
    }

    /// Bytes accepted so far, not counting a partial end record.
    #[cfg(test)]
    pub(crate) fn received(&self) -> u64 {
        self.sum.len()
    }

    /// Whether a complete, valid stream was received: `Ok` after the end
    /// record, the first error if the stream was refused, else
    /// [`StreamError::Truncated`].
    pub(crate) fn finish(&self) -> Result<(), StreamError> {
        match self.phase {
            DecPhase::Done => Ok(()),
            DecPhase::Failed(e) => Err(e),
            _ => Err(StreamError::Truncated),
        }
    }

    /// Takes the next chunk of the stream (any length). After the first
    /// error the decoder is poisoned and every later call fails with it.
    pub(crate) fn feed<K: RestoreSink + ?Sized>(
        &mut self,
        chunk: &[u8],
        sink: &mut K,
    ) -> Result<(), StreamError> {
        if let DecPhase::Failed(e) = self.phase {
            return Err(e);
        }
        match self.run(chunk, sink) {
            Ok(()) => Ok(()),
            Err(e) => {
                self.phase = DecPhase::Failed(e);
                Err(e)
            }
        }
    }

    /// Moves up to `need - have` bytes from `input` into `buf`; returns
    /// whether `need` bytes are staged.
    fn collect(&mut self, need: usize, input: &mut &[u8]) -> bool {
        let want = need.saturating_sub(self.have);
        let k = want.min(input.len());
        let end = self.have.saturating_add(k);
        if let (Some(dst), Some(src)) = (self.buf.get_mut(self.have..end), input.get(..k)) {
            dst.copy_from_slice(src);
        }
        self.have = end;
        *input = input.get(k..).unwrap_or(&[]);
        self.have >= need
    }

    /// The first `N` staged bytes, consumed.
    fn take<const N: usize>(&mut self) -> [u8; N] {
        self.have = 0;
        self.buf.first_chunk::<N>().copied().unwrap_or([0u8; N])
    }

    /// Processes `input` until it is used up or an error occurs.
    fn run<K: RestoreSink + ?Sized>(
        &mut self,
        chunk: &[u8],
        sink: &mut K,
    ) -> Result<(), StreamError> {
        let mut input = chunk;
        while !input.is_empty() {
            match self.phase {
                DecPhase::Header => {
                    if self.collect(HEADER_LEN, &mut input) {
                        let header = self.take::<HEADER_LEN>();
                        self.check_header(&header)?;
                        self.sum.update(&header);
                        self.phase = DecPhase::RecordHead;
                    }
                }
                DecPhase::RecordHead => {
                    if self.collect(RECORD_HEAD_LEN, &mut input) {
                        let head = self.take::<RECORD_HEAD_LEN>();
                        self.dispatch_record(head, sink)?;
                    }
                }
                DecPhase::PageIndex => {
                    if self.collect(8, &mut input) {
                        let index = u64::from_le_bytes(self.take::<8>());
                        let page = usize::try_from(index)
                            .ok()
                            .filter(|&p| p < self.params.npages)
                            .ok_or(StreamError::OutOfRange)?;
                        self.sum.update(&index.to_le_bytes());
                        self.phase = DecPhase::PagePayload { page, off: 0 };
                    }
                }
                DecPhase::PagePayload { page, off } => {
                    let k = (PAGE_SIZE - off).min(input.len());
                    let (piece, rest) = input.split_at(k);
                    input = rest;
                    let base = page.checked_mul(PAGE_SIZE).ok_or(StreamError::OutOfRange)?;
                    sink.write_memory(base.saturating_add(off), piece);
                    self.sum.update(piece);
                    let off = off + k;
                    self.phase = if off >= PAGE_SIZE {
                        DecPhase::RecordHead
                    } else {
                        DecPhase::PagePayload { page, off }
                    };
                }
                DecPhase::Regs { off } => {
                    let blob = self.params.register_record_len - RECORD_HEAD_LEN;
                    let k = (blob - off).min(input.len());
                    let (piece, rest) = input.split_at(k);
                    input = rest;
                    sink.write_registers(off, piece);
                    self.sum.update(piece);
                    let off = off + k;
                    if off >= blob {
                        sink.registers_done()?;
                        self.phase = DecPhase::RecordHead;
                    } else {
                        self.phase = DecPhase::Regs { off };
                    }
                }
                DecPhase::EndBody => {
                    if self.collect(END_BODY_LEN, &mut input) {
                        let (a, b) = self.sum.finish();
                        let len = self.sum.len();
                        let body = self.take::<END_BODY_LEN>();
                        let mut r = Reader::new(&body);
                        let ok = r.u64() == Some(len) && r.u64() == Some(a) && r.u64() == Some(b);
                        if !ok {
                            return Err(StreamError::BadChecksum);
                        }
                        self.phase = DecPhase::Done;
                    }
                }
                DecPhase::Done => return Err(StreamError::Overlong),
                DecPhase::Failed(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Validates the staged header against the expected parameters.
    fn check_header(&self, header: &[u8; HEADER_LEN]) -> Result<(), StreamError> {
        let mut r = Reader::new(header);
        let short = StreamError::Truncated;
        if r.array::<8>().ok_or(short)? != MAGIC {
            return Err(StreamError::BadMagic);
        }
        if r.u32().ok_or(short)? != VERSION {
            return Err(StreamError::BadVersion);
        }
        if r.u32().ok_or(short)? != self.params.type_id {
            return Err(StreamError::WrongType);
        }
        if r.u64().ok_or(short)? != self.params.memory_size {
            return Err(StreamError::WrongSize);
        }
        if r.u32().ok_or(short)? != PAGE_SIZE as u32 {
            return Err(StreamError::BadPageSize);
        }
        if r.u32().ok_or(short)? != self.params.register_len {
            return Err(StreamError::BadRegisterLength);
        }
        Ok(())
    }

    /// Validates a record head and moves to the record's body.
    fn dispatch_record<K: RestoreSink + ?Sized>(
        &mut self,
        raw: [u8; RECORD_HEAD_LEN],
        sink: &mut K,
    ) -> Result<(), StreamError> {
        let mut r = Reader::new(&raw);
        let tag = r.u32().ok_or(StreamError::Truncated)?;
        let body = r.u32().ok_or(StreamError::Truncated)?;
        let body = usize::try_from(body).map_err(|_| StreamError::BadRecord)?;
        let regs_body = self.params.register_record_len - RECORD_HEAD_LEN;
        match tag {
            TAG_PAGE if !self.regs_seen && body == PAGE_BODY_LEN => {
                self.sum.update(&raw);
                self.phase = DecPhase::PageIndex;
            }
            TAG_REGS if !self.regs_seen && body == regs_body => {
                self.sum.update(&raw);
                self.regs_seen = true;
                if regs_body == 0 {
                    sink.registers_done()?;
                    self.phase = DecPhase::RecordHead;
                } else {
                    self.phase = DecPhase::Regs { off: 0 };
                }
            }
            TAG_END if self.regs_seen && body == END_BODY_LEN => {
                self.phase = DecPhase::EndBody;
            }
            _ => return Err(StreamError::BadRecord),
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(PAGE_RECORD_LEN, 4112);
        assert_eq!(page_record_len(), 4112);
        assert_eq!(END_RECORD_LEN, 32);
        assert_eq!(&TAG_PAGE.to_le_bytes(), b"PAGE");
    }

    #[test]
    fn checksum_chunking_is_irrelevant() {
        let data: [u8; 100] = core::array::from_fn(|i| (i * 7 + 3) as u8);
        let mut whole = Checksum::new();
        whole.update(&data);
        for split in 0..data.len() {
            let (x, y) = data.split_at(split);
            let mut c = Checksum::new();
            c.update(x);
            c.update(y);
            assert_eq!(c.finish(), whole.finish());
            assert_eq!(c.len(), 100);
        }
    }
}
