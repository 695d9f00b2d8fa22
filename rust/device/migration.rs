// SPDX-License-Identifier: GPL-2.0

//! The migration region (VFIO region 9) of the sample device.
//!
//! The layout, the access rules, the state table and the stream are pure
//! logic in [`crate::logic`]; this file keeps the per-device migration state
//! and applies what that logic decides to the device, under the device lock.
//! Documented for VMM authors in `Documentation/migration-abi.rst`.

use super::{dma::GuestPins, zeroed_bytes, State};
use crate::dyndbg::dyn_debug;
use crate::logic::abi::migration::{
    DeviceState, Field, BITMAP_LEN, BITMAP_OFFSET, DATA_LEN, DATA_OFFSET,
};
use crate::logic::abi::{config, stream::PAGE_SIZE, GUEST_PAGE_SIZE};
use crate::logic::bitmap::{words_for, Bitmap};
use crate::logic::dirty_log::{
    emit_pages, BitmapArea, ChunkBits, ChunkStore, DirtyLog, OutOfMemory, MAX_CHUNKS,
};
use crate::logic::migration_region::{self as layout, MmapArea, Target};
use crate::logic::regs::Registers;
use crate::logic::snapshot::{self, BLOB_LEN};
use crate::logic::state::{plan_raw, Action, Transition};
use crate::logic::stream::{
    part, Decoder, Encoder, Faulted, Pending, RestoreSink, SaveSource, StreamError, StreamParams,
    StreamSink,
};
use crate::logic::v2::V2State;
use crate::vfio;
use crate::vma::Vma;
use crate::vmalloc_user::{Mapper, UserMappable};
use core::ops::Range;
use kernel::alloc::flags::__GFP_NOWARN;
use kernel::prelude::*;
use kernel::rbtree::{Entry, RBTree, RBTreeNodeReservation};
use kernel::uaccess::{UserSliceReader, UserSliceWriter};

/// Migration state of one device, shared by its two interfaces: the
/// region (this file) and v2 (`device/v2.rs`). At most one of them has a
/// migration under way; the other's state changes fail with `EBUSY`.
pub(super) struct Migration {
    /// The region's state.
    state: DeviceState,
    /// The v2 state.
    pub(super) v2: V2State,
    /// v2 DMA logging is on (`VFIO_DEVICE_FEATURE_DMA_LOGGING_START`).
    pub(super) dma_logging: bool,
    /// The v2 data file that may use the stream now (0: none). A file with
    /// another number belongs to a session that ended, and is refused.
    pub(super) file_id: u64,
    /// The number the next data file gets.
    next_file_id: u64,
    /// The pre-copy reader has seen the initial image through
    /// (`VFIO_MIG_GET_PRECOPY_INFO`).
    pub(super) initial_done: bool,
    threshold: u64,
    data_offset: u64,
    data_size: u64,
    dirty_start: u64,
    dirty_total: u64,
    dirty_copied: u64,
    params: StreamParams,
    /// Device-memory pages written since the stream last carried them.
    mem_dirty: Bitmap<KVec<u64>>,
    /// Guest pages the device wrote since a dirty query last reported them.
    pub(super) guest_dirty: DirtyLog<ChunkTree>,
    /// The data area: chunks staged in either direction. Userspace may map
    /// it, so it is allocated once, for the device's life, and zeroed in
    /// place.
    data: UserMappable,
    /// The dirty-bitmap area, likewise (mapped read only).
    bitmap: UserMappable,
    /// The words of `bitmap` the last query set (`[..touched_len]`), one
    /// slot per word of the area.
    touched: KVVec<u32>,
    touched_len: usize,
    /// Userspace wrote into the bitmap area: the next query clears it all.
    bitmap_scribbled: bool,
    pub(super) save: Option<Encoder>,
    /// The register blob of the save stream, kept from the moment its
    /// register record begins: one snapshot, whatever changes the
    /// registers (a config write, an unmap) between two chunks of it.
    save_blob: Option<[u8; BLOB_LEN]>,
    pub(super) resume: Option<Resume>,
}

/// Maps the migration region's mmap-able areas (the data and bitmap areas
/// of a [`Migration`], which keeps them for the device's life).
pub(super) struct AreaMappers {
    data: Mapper,
    bitmap: Mapper,
}

impl AreaMappers {
    /// Maps `area` from byte `offset` inside it into the whole of `vma`
    /// (checked against the area by `layout::decode_mmap`).
    pub(super) fn map(&self, area: MmapArea, offset: u64, vma: &Vma) -> Result {
        let offset = usize::try_from(offset).map_err(|_| EINVAL)?;
        match area {
            MmapArea::Data => self.data.map(vma, offset),
            MmapArea::Bitmap => self.bitmap.map(vma, offset),
        }
    }
}

/// The dirty log's chunks: a red-black tree of small nodes, so that a mark
/// costs O(log n), no allocation is larger than a node (none can warn), and
/// clearing the log frees it all. The log keeps the nodes a report empties
/// for the next marks, so a device that writes the same buffers every round
/// neither allocates nor frees; the nodes it removes go to `spare`, for the
/// next chunks it adds.
pub(super) struct ChunkTree {
    tree: RBTree<u64, ChunkBits>,
    len: usize,
    spare: Spare,
}

impl ChunkTree {
    fn new() -> Self {
        ChunkTree {
            tree: RBTree::new(),
            len: 0,
            spare: Spare {
                nodes: KVec::new(),
                len: 0,
            },
        }
    }
}

type ChunkNode = RBTreeNodeReservation<u64, ChunkBits>;

/// Nodes removed from a [`ChunkTree`], kept for its next inserts, so that
/// neither a remove nor the next insert goes to the allocator. There are
/// never more than the most chunks the tree held at once (a node is
/// allocated only when none is spare), so the log's bound covers them.
struct Spare {
    /// `nodes[..len]` hold a node each; the slots after them are empty
    /// (there is no `KVec::pop` in this kernel).
    nodes: KVec<Option<ChunkNode>>,
    len: usize,
}

impl Spare {
    /// Keeps `node`, or frees it if there is no room for one more.
    fn keep(&mut self, node: ChunkNode) {
        match self.nodes.get_mut(self.len) {
            Some(slot) => *slot = Some(node),
            None => {
                if self
                    .nodes
                    .push(Some(node), GFP_KERNEL | __GFP_NOWARN)
                    .is_err()
                {
                    return;
                }
            }
        }
        self.len += 1;
    }

    /// A kept node, if there is one.
    fn take(&mut self) -> Option<ChunkNode> {
        let last = self.len.checked_sub(1)?;
        let node = self.nodes.get_mut(last)?.take()?;
        self.len = last;
        Some(node)
    }
}

impl ChunkStore for ChunkTree {
    fn len(&self) -> usize {
        self.len
    }

    fn get_mut(&mut self, index: u64) -> Option<&mut ChunkBits> {
        self.tree.get_mut(&index)
    }

    fn insert(&mut self, index: u64) -> Result<&mut ChunkBits, OutOfMemory> {
        let node = match self.spare.take() {
            Some(node) => node,
            // Past the log's bound it overflows instead: no failure to
            // report.
            None => ChunkNode::new(GFP_KERNEL | __GFP_NOWARN).map_err(|_| OutOfMemory)?,
        };
        match self.tree.entry(index) {
            Entry::Vacant(slot) => {
                self.len += 1;
                Ok(slot.insert(ChunkBits::default(), node))
            }
            Entry::Occupied(chunk) => Ok(chunk.into_mut()),
        }
    }

    fn retain_range(
        &mut self,
        first: u64,
        last: u64,
        mut visit: impl FnMut(u64, &mut ChunkBits) -> bool,
    ) {
        let mut cursor = self.tree.cursor_lower_bound(&first);
        while let Some(mut c) = cursor {
            let (&index, bits) = c.current_mut();
            if index > last {
                break;
            }
            if visit(index, bits) {
                cursor = c.move_next();
            } else {
                // The cursor moves to the next chunk, or to the previous
                // one when this was the last: then the walk is over.
                let (next, node) = c.remove_current();
                self.spare.keep(node.into_reservation());
                self.len = self.len.saturating_sub(1);
                cursor = next.filter(|n| *n.current().0 > index);
            }
        }
    }

    fn clear(&mut self) {
        *self = ChunkTree::new();
    }
}

/// A stream being received, and the state it builds.
pub(super) struct Resume {
    pub(super) decoder: Decoder,
    pub(super) shadow: Shadow,
}

/// What a stream restores, kept apart from the live device until the
/// stream is complete and valid.
pub(super) struct Shadow {
    mem: KVVec<u8>,
    blob: [u8; BLOB_LEN],
    parsed: Option<(Registers, [u8; config::SIZE])>,
}

impl RestoreSink for Shadow {
    fn write_memory(&mut self, offset: usize, data: &[u8]) {
        let Some(end) = offset.checked_add(data.len()) else {
            return;
        };
        if let Some(dst) = self.mem.get_mut(offset..end) {
            dst.copy_from_slice(data);
        }
    }

    fn write_registers(&mut self, offset: usize, data: &[u8]) {
        let Some(end) = offset.checked_add(data.len()) else {
            return;
        };
        if let Some(dst) = self.blob.get_mut(offset..end) {
            dst.copy_from_slice(data);
        }
    }

    fn registers_done(&mut self) -> Result<(), StreamError> {
        self.parsed = Some(snapshot::parse(&self.blob).map_err(|_| StreamError::BadState)?);
        Ok(())
    }
}

/// The live device as the encoder reads it.
struct Source<'a> {
    mem: &'a [u8],
    blob: [u8; BLOB_LEN],
}

impl SaveSource for Source<'_> {
    fn memory(&self, offset: usize, len: usize) -> &[u8] {
        part(self.mem, offset, len)
    }

    fn registers(&self, offset: usize, len: usize) -> &[u8] {
        part(&self.blob, offset, len)
    }
}

impl Migration {
    /// The migration state of a device of stream type `type_id` with
    /// `mem_size` bytes of device memory, in `NONE`.
    pub(super) fn new(type_id: u32, mem_size: usize) -> Result<Self> {
        let params = StreamParams::new(type_id, mem_size as u64, BLOB_LEN as u32)?;
        let npages = params.npages();
        let words = KVec::from_elem(0u64, words_for(npages), GFP_KERNEL)?;
        Ok(Migration {
            state: DeviceState::None,
            v2: V2State::Running,
            dma_logging: false,
            file_id: 0,
            next_file_id: 1,
            initial_done: false,
            threshold: 0,
            data_offset: 0,
            data_size: 0,
            dirty_start: 0,
            dirty_total: 0,
            dirty_copied: 0,
            params,
            mem_dirty: Bitmap::new(words, npages)?,
            guest_dirty: DirtyLog::new(ChunkTree::new(), MAX_CHUNKS),
            data: UserMappable::new(DATA_LEN as usize)?,
            bitmap: UserMappable::new(BITMAP_LEN as usize)?,
            touched: KVVec::from_elem(0u32, BITMAP_LEN as usize / 8, GFP_KERNEL)?,
            touched_len: 0,
            bitmap_scribbled: false,
            save: None,
            save_blob: None,
            resume: None,
        })
    }

    /// Back to `NONE` (region) and `RUNNING` (v2) with no stream, no data
    /// file, cleared registers and zeroed data and bitmap areas: nothing a
    /// session staged is readable in the next one. v2 DMA logging stays on
    /// if it was: the guest pages the device wrote before are still to be
    /// reported.
    /// The areas are zeroed in place, never replaced: a mapping of them made
    /// in this session reads zeros too.
    pub(super) fn reset(&mut self) {
        self.data.as_mut_slice().fill(0);
        self.bitmap.as_mut_slice().fill(0);
        self.touched_len = 0;
        self.bitmap_scribbled = false;
        self.state = DeviceState::None;
        self.v2 = V2State::Running;
        self.file_id = 0;
        self.initial_done = false;
        self.threshold = 0;
        self.data_offset = 0;
        self.data_size = 0;
        self.dirty_start = 0;
        self.dirty_total = 0;
        self.dirty_copied = 0;
        self.mem_dirty.clear_all();
        if !self.dma_logging {
            self.guest_dirty.clear();
        }
        self.save = None;
        self.save_blob = None;
        self.resume = None;
    }

    /// Whether the device may work (BAR writes, DMA).
    pub(super) fn running(&self) -> bool {
        self.state.is_running() && self.v2.properties().running
    }

    /// A migration is under way through the region (its state is neither
    /// `NONE` nor `RUNNING`).
    pub(super) fn region_busy(&self) -> bool {
        !matches!(self.state, DeviceState::None | DeviceState::Running)
    }

    /// A migration is under way through v2 (a state other than `RUNNING`,
    /// or DMA logging on).
    pub(super) fn v2_busy(&self) -> bool {
        self.v2 != V2State::Running || self.dma_logging
    }

    /// Device-memory pages are tracked for a save stream, of either
    /// interface.
    fn mem_logging(&self) -> bool {
        self.state.properties().logging || self.v2.properties().logging
    }

    /// Guest pages the device writes are logged: the region's logging
    /// states, or v2 DMA logging.
    pub(super) fn guest_logging(&self) -> bool {
        self.state.properties().logging || self.dma_logging
    }

    /// Numbers a new data file and makes it the one that may use the
    /// stream.
    pub(super) fn new_file_id(&mut self) -> u64 {
        self.file_id = self.next_file_id;
        self.next_file_id += 1;
        self.file_id
    }

    /// The first `len` bytes of the data area, where a chunk is staged.
    pub(super) fn staging(&mut self, len: usize) -> Result<&mut [u8]> {
        self.data.as_mut_slice().get_mut(..len).ok_or(EINVAL)
    }

    /// The mappers of the mmap-able areas, which map them without the
    /// device lock.
    pub(super) fn mappers(&self) -> AreaMappers {
        AreaMappers {
            data: self.data.mapper(),
            bitmap: self.bitmap.mapper(),
        }
    }

    /// What the save stream has still to send (nothing without one).
    pub(super) fn pending(&self) -> Pending {
        self.save
            .as_ref()
            .map(|enc| enc.pending(&self.mem_dirty))
            .unwrap_or_default()
    }

    /// How many bytes a save would send once the device is stopped: the
    /// rest of the stream under way, or a whole stream.
    pub(super) fn stop_copy_bytes(&self) -> u64 {
        match &self.save {
            Some(enc) => enc.pending(&self.mem_dirty).total(),
            None => self.params.full_stream_len().unwrap_or(u64::MAX),
        }
    }

    /// Refuses a data file whose session ended (`ENODEV`, as mtty does).
    pub(super) fn check_file(&self, id: u64) -> Result {
        if id != 0 && id == self.file_id {
            Ok(())
        } else {
            dyn_debug!("data file refused: its migration session ended");
            Err(ENODEV)
        }
    }

    /// Notes a DMA write of `count` guest pages from frame `first`.
    pub(super) fn guest_written(&mut self, first: u64, count: u64) {
        if self.guest_logging() {
            self.guest_dirty.mark(first, count);
        }
    }

    /// Notes a device-memory write of `range` for the dirty log.
    pub(super) fn mem_written(&mut self, range: &Range<usize>) {
        if !self.mem_logging() || range.is_empty() {
            return;
        }
        let first = range.start / PAGE_SIZE;
        let last = (range.end - 1) / PAGE_SIZE;
        // The range was checked against the memory size, so it fits.
        let _ = self.mem_dirty.set_range(first, last - first + 1);
    }
}

/// Whether `action` is valid now, as an errno.
fn allowed(state: DeviceState, action: Action) -> Result {
    if state.allows(action) {
        Ok(())
    } else {
        Err(EINVAL)
    }
}

impl State {
    /// A read of the migration region at `offset`.
    pub(super) fn migration_read(
        &mut self,
        pins: &GuestPins,
        offset: u64,
        buf: &mut UserSliceWriter,
    ) -> Result {
        let len = buf.len();
        match layout::decode(offset, len, false)? {
            Target::Field(Field::DeviceState) => buf.write(&self.mig.state.raw()),
            Target::Field(field) => {
                let value = self.read_field(pins, field)?;
                buf.write(&value)
            }
            Target::Data(at) => buf.write_slice(span(self.mig.data.as_slice(), at, len)?),
            Target::Bitmap(at) => buf.write_slice(span(self.mig.bitmap.as_slice(), at, len)?),
        }
    }

    /// A write of the migration region at `offset`.
    pub(super) fn migration_write(
        &mut self,
        dev: &vfio::Device,
        pins: &GuestPins,
        offset: u64,
        buf: &mut UserSliceReader,
    ) -> Result {
        let len = buf.len();
        match layout::decode(offset, len, true)? {
            Target::Field(Field::DeviceState) => {
                let raw = buf.read::<u32>()?;
                self.set_state(dev, pins, raw)
            }
            Target::Field(field) => {
                let value = buf.read::<u64>()?;
                self.write_field(field, value)
            }
            Target::Data(at) => buf.read_slice(span_mut(self.mig.data.as_mut_slice(), at, len)?),
            Target::Bitmap(at) => {
                self.mig.bitmap_scribbled = true;
                buf.read_slice(span_mut(self.mig.bitmap.as_mut_slice(), at, len)?)
            }
        }
    }

    fn read_field(&mut self, pins: &GuestPins, field: Field) -> Result<u64> {
        match field {
            Field::DataSize => return self.get_buffer(),
            Field::DirtyCopied => return self.dirty_query(pins),
            _ => {}
        }
        let mig = &self.mig;
        let pending = if mig.state.allows(Action::GetPending) {
            mig.pending()
        } else {
            Pending::default()
        };
        Ok(match field {
            Field::PrecopyOnly => pending.precopy_only,
            Field::Compatible => pending.compatible,
            Field::PostcopyOnly => pending.postcopy_only,
            Field::ThresholdSize => mig.threshold,
            Field::DataOffset => mig.data_offset,
            Field::DirtyStartAddr => mig.dirty_start,
            Field::DirtyTotal => mig.dirty_total,
            Field::DeviceState => u64::from(mig.state.raw()),
            // Actions, answered above.
            Field::DataSize | Field::DirtyCopied => return Err(EINVAL),
        })
    }

    fn write_field(&mut self, field: Field, value: u64) -> Result {
        let mig = &mut self.mig;
        match field {
            Field::ThresholdSize => mig.threshold = value,
            Field::DataOffset => mig.data_offset = value,
            Field::DataSize => self.set_buffer(value)?,
            // IOVAs are page granular: refuse a misaligned start at once.
            Field::DirtyStartAddr if value % GUEST_PAGE_SIZE != 0 => return Err(EINVAL),
            Field::DirtyStartAddr => mig.dirty_start = value,
            Field::DirtyTotal => mig.dirty_total = value,
            // `decode` refuses writes of the output fields.
            _ => return Err(EINVAL),
        }
        Ok(())
    }

    /// Get buffer: stages the next chunk of the stream in the data area.
    fn get_buffer(&mut self) -> Result<u64> {
        allowed(self.mig.state, Action::GetBuffer)?;
        let cap = match self.mig.threshold {
            0 => DATA_LEN,
            t => t.min(DATA_LEN),
        } as usize;
        let n = self.encode_next(cap)? as u64;
        self.mig.data_offset = DATA_OFFSET;
        self.mig.data_size = n;
        Ok(n)
    }

    /// Set buffer: hands `[data.offset, data.offset + size)` to the decoder.
    fn set_buffer(&mut self, size: u64) -> Result {
        allowed(self.mig.state, Action::SetBuffer)?;
        let range = layout::set_buffer_span(self.mig.data_offset, size)?;
        self.decode(range)?;
        self.mig.data_size = size;
        Ok(())
    }

    /// Encodes the next bytes of the save stream (at most `cap`) into the
    /// data area, from its start; returns how many (0: nothing now, or the
    /// end).
    fn encode_next(&mut self, cap: usize) -> Result<usize> {
        self.encode_with(|enc, src, dirty, stopped, data| {
            let out = data.get_mut(..cap).ok_or(EINVAL)?;
            Ok(enc.fill(src, dirty, stopped, out))
        })?
    }

    /// Encodes the next bytes of the save stream into `sink` (a v2 data
    /// file's reader), straight from device memory: see [`Encoder::emit`].
    pub(super) fn encode_into<K: StreamSink>(
        &mut self,
        sink: &mut K,
    ) -> Result<Result<usize, Faulted>> {
        self.encode_with(|enc, src, dirty, stopped, _| enc.emit(src, dirty, stopped, sink))
    }

    /// Runs `encode` on the save stream's encoder, the device's state (its
    /// source), the dirty pages of device memory, whether the device is
    /// stopped, and the data area; keeps the register blob once its record
    /// has begun. Both interfaces save through this; without a save
    /// stream, `EINVAL`.
    fn encode_with<R>(
        &mut self,
        encode: impl FnOnce(&mut Encoder, &Source<'_>, &mut Bitmap<KVec<u64>>, bool, &mut [u8]) -> R,
    ) -> Result<R> {
        let stopped = !self.mig.running();
        let blob = self
            .mig
            .save_blob
            .unwrap_or_else(|| snapshot::save(&self.regs, &self.config));
        let src = Source {
            mem: &self.mem,
            blob,
        };
        let mig = &mut self.mig;
        let encoder = mig.save.as_mut().ok_or(EINVAL)?;
        let r = encode(
            encoder,
            &src,
            &mut mig.mem_dirty,
            stopped,
            mig.data.as_mut_slice(),
        );
        if encoder.registers_started() {
            mig.save_blob.get_or_insert(blob);
        }
        Ok(r)
    }

    /// Hands the bytes `range` of the data area to the resume stream's
    /// decoder. Both interfaces restore through this.
    pub(super) fn decode(&mut self, range: Range<usize>) -> Result {
        let mig = &mut self.mig;
        let chunk = mig.data.as_slice().get(range).ok_or(EINVAL)?;
        let resume = mig.resume.as_mut().ok_or(EINVAL)?;
        resume.decoder.feed(chunk, &mut resume.shadow)?;
        Ok(())
    }

    /// Dirty-bitmap query: reports the guest pages of
    /// `[start_addr, start_addr + copied * 4096)` the device wrote since
    /// their last report (and clears them), plus a ring pinned for writing,
    /// into the bitmap area. Costs what the dirty pages cost: the log is
    /// sparse, and the area is cleared word by word where the last query
    /// set bits.
    fn dirty_query(&mut self, pins: &GuestPins) -> Result<u64> {
        allowed(self.mig.state, Action::DirtyQuery)?;
        let ring = pins.writable_ring();
        let mig = &mut self.mig;
        let pages = layout::dirty_query_pages(mig.dirty_start, mig.dirty_total)?;
        let start = mig.dirty_start / GUEST_PAGE_SIZE;
        let mut area = BitmapArea::new(
            mig.bitmap.as_mut_slice(),
            &mut mig.touched,
            &mut mig.touched_len,
        );
        if core::mem::take(&mut mig.bitmap_scribbled) {
            area.clear_all();
        } else {
            area.clear();
        }
        report_dirty(&mut mig.guest_dirty, start, pages, ring, |w, bits| {
            area.or_word(w, bits)
        });
        mig.data_offset = BITMAP_OFFSET;
        mig.dirty_copied = pages;
        Ok(pages)
    }

    /// A write of `device_state`: plans the change with the pure state
    /// table and applies its effects.
    fn set_state(&mut self, dev: &vfio::Device, pins: &GuestPins, raw: u32) -> Result {
        if self.mig.v2_busy() {
            dyn_debug!("region state change refused: a v2 migration is under way");
            return Err(EBUSY);
        }
        let (to, effects) = plan_raw(self.mig.state, raw)?;
        self.apply_transition(dev, pins, effects, |mig| mig.state = to)
    }

    /// Applies the effects of a state change of either interface, then
    /// `enter`, which records the new state. Anything that can fail
    /// happens before anything changes.
    pub(super) fn apply_transition(
        &mut self,
        dev: &vfio::Device,
        pins: &GuestPins,
        effects: Transition,
        enter: impl FnOnce(&mut Migration),
    ) -> Result {
        if effects.commit_resume {
            let resume = self.mig.resume.as_ref().ok_or(EINVAL)?;
            resume.decoder.finish()?;
            if resume.shadow.parsed.is_none() {
                return Err(EINVAL);
            }
        }
        let new_resume = if effects.start_resume {
            Some(Resume {
                decoder: Decoder::new(self.mig.params),
                shadow: Shadow {
                    mem: zeroed_bytes(self.mem.len())?,
                    blob: [0; BLOB_LEN],
                    parsed: None,
                },
            })
        } else {
            None
        };
        let guest_logging = self.mig.guest_logging();

        // Quiescing has nothing to wait for: DMA runs under the device
        // lock, which this holds, so no transfer is in flight, and the
        // engine checks `running` before starting the next one.
        if effects.stop_logging {
            self.mig.mem_dirty.clear_all();
        }
        if effects.end_save {
            self.mig.save = None;
            self.mig.save_blob = None;
        }
        if effects.discard_resume_and_reset {
            self.mig.resume = None;
            self.power_on_device(pins);
        }
        if effects.commit_resume {
            if let Some(Resume { shadow, .. }) = self.mig.resume.take() {
                if let Some((regs, config)) = shadow.parsed {
                    self.engine.stop();
                    self.mem = shadow.mem;
                    self.regs = regs;
                    self.config.restore(&config);
                    // The ring is device state: pin it in this guest's
                    // memory, which the VMM has mapped by now.
                    self.ring_sync(dev, pins);
                }
            }
        }
        if new_resume.is_some() {
            self.mig.resume = new_resume;
        }
        if effects.start_save {
            self.mig.save = Some(Encoder::new(self.mig.params));
            self.mig.save_blob = None;
        }
        if effects.start_logging {
            self.mig.mem_dirty.set_all();
        }
        enter(&mut self.mig);
        // Guest-page logging starts and ends with an empty log.
        if self.mig.guest_logging() != guest_logging {
            self.mig.guest_dirty.clear();
        }
        Ok(())
    }
}

/// Reports and forgets the guest pages of `pages` pages from frame `start`
/// that `log` holds, plus the pages of a ring pinned for writing (`ring`:
/// first frame and count), which count as dirty on every report, as words
/// of the output bitmap: `emit(w, bits)` for pages `start + 64 * w + i`,
/// to be ORed in (see [`DirtyLog::report`]). What the region's dirty query
/// and a v2 DMA-logging report share.
pub(super) fn report_dirty(
    log: &mut DirtyLog<ChunkTree>,
    start: u64,
    pages: u64,
    ring: Option<(u64, u64)>,
    mut emit: impl FnMut(u64, u64),
) {
    log.report(start, pages, &mut emit);
    if let Some((first, count)) = ring {
        let from = first.max(start);
        let to = first.saturating_add(count).min(start.saturating_add(pages));
        emit_pages(from.saturating_sub(start), to.saturating_sub(start), emit);
    }
}

fn span(area: &[u8], at: usize, len: usize) -> Result<&[u8]> {
    area.get(at..at.checked_add(len).ok_or(EINVAL)?)
        .ok_or(EINVAL)
}

fn span_mut(area: &mut [u8], at: usize, len: usize) -> Result<&mut [u8]> {
    area.get_mut(at..at.checked_add(len).ok_or(EINVAL)?)
        .ok_or(EINVAL)
}
