// SPDX-License-Identifier: GPL-2.0
//! Benchmark 2: save and restore throughput through the migration region
//! against a memcpy of the same bytes in the same guest.
//!
//! The source is a `large` mdev (2 MiB of device memory, filled with
//! pseudo-random bytes). Save: MIGRATION_SETUP, MIGRATION_STOPNCOPY, then
//! get buffer until it returns 0, with `threshold_size` 0 so that every
//! chunk is as large as the data area; each chunk is read straight into
//! the stream buffer (no userspace copy besides the pread itself), and
//! again copied from the mmap'ed data area instead of `pread`. Restore:
//! the stream into another `large` mdev in MIGRATION_RESUME, chunks of the
//! data area's size (set buffer), then MIGRATION_RESUME_COMPLETED. v2 read:
//! the same device memory as a v2 `STOP_COPY` stream, read from the v2 data
//! file in 1 MiB reads straight into the stream buffer (restored once into
//! the other mdev through its v2 data file, and checked). The baselines
//! copy the same number of bytes between two `Vec<u8>`.

use std::hint::black_box;
use std::time::{Duration, Instant};

use vfio_mig::abi::bar0;
use vfio_mig::abi::migration::DATA_OFFSET;
use vfio_mig::abi::region::BAR2;
use vfio_mig::sample::Regs;
use vfio_mig::v2::V2State;
use vfio_mig::{Device, DeviceState, Field, MigrationMapping};

use crate::dma::Lcg;
use crate::stats::{self, num, ratio, Table};
use crate::{BResult, Figure, Opts, Report};

/// The size of a v2 data file read (what QEMU reads at a time).
const V2_READ: usize = 1 << 20;

/// One save: the stream into `stream` (which must be large enough), each
/// chunk copied out of the data area with `pread`, or from `map`, the
/// mapped data area; returns `(bytes, chunks, time of the get-buffer loop)`.
fn save(
    src: &Device,
    stream: &mut [u8],
    map: Option<&MigrationMapping>,
) -> BResult<(usize, u32, Duration)> {
    let r = src.migration_region().map_err(|e| e.to_string())?;
    let idx = r.index();
    src.set_threshold(0).map_err(|e| e.to_string())?;
    src.set_state(DeviceState::Setup)
        .map_err(|e| e.to_string())?;
    src.set_state(DeviceState::StopNCopy)
        .map_err(|e| e.to_string())?;
    let mut pos = 0usize;
    let mut chunks = 0;
    let t0 = Instant::now();
    loop {
        let size = src.read_field(Field::DataSize).map_err(|e| e.to_string())? as usize;
        if size == 0 {
            break;
        }
        let off = src
            .read_field(Field::DataOffset)
            .map_err(|e| e.to_string())?;
        let cap = stream.len();
        let dst = stream
            .get_mut(pos..pos + size)
            .ok_or_else(|| format!("the stream is longer than the {cap} bytes expected"))?;
        match map {
            Some(m) => m.read_data(off, dst),
            None => src.read_region(idx, off, dst),
        }
        .map_err(|e| format!("read of a {size}-byte chunk: {e}"))?;
        pos += size;
        chunks += 1;
    }
    let t = t0.elapsed();
    let p = src.pending().map_err(|e| e.to_string())?;
    if p.total() != 0 {
        return Err(format!(
            "get buffer returned 0 with {} bytes pending ({p})",
            p.total()
        ));
    }
    src.set_state(DeviceState::SaveCompleted)
        .map_err(|e| e.to_string())?;
    src.set_state(DeviceState::Running)
        .map_err(|e| e.to_string())?;
    Ok((pos, chunks, t))
}

/// One restore of `stream` into `dst` in chunks of `chunk` bytes; returns
/// `(time of the set-buffer loop, time including RESUME_COMPLETED)`.
fn restore(dst: &Device, stream: &[u8], chunk: usize) -> BResult<(Duration, Duration)> {
    dst.set_state(DeviceState::Resume)
        .map_err(|e| e.to_string())?;
    let t0 = Instant::now();
    for c in stream.chunks(chunk) {
        dst.set_buffer(c, DATA_OFFSET).map_err(|e| e.to_string())?;
    }
    let t_loop = t0.elapsed();
    dst.set_state(DeviceState::ResumeCompleted)
        .map_err(|e| e.to_string())?;
    let t_all = t0.elapsed();
    dst.set_state(DeviceState::Running)
        .map_err(|e| e.to_string())?;
    Ok((t_loop, t_all))
}

/// One v2 save: RUNNING, STOP, STOP_COPY, then the data file read in
/// 1 MiB reads into `stream` until it ends; back to STOP and RUNNING.
/// Returns `(bytes, time of STOP_COPY's transition, time of the reads)`.
fn v2_save(src: &Device, stream: &mut [u8]) -> BResult<(usize, Duration, Duration)> {
    src.v2_set_state(V2State::Stop).map_err(|e| e.to_string())?;
    let t0 = Instant::now();
    let file = src
        .v2_set_state(V2State::StopCopy)
        .map_err(|e| e.to_string())?
        .ok_or("STOP_COPY handed out no data file")?;
    let t_stop = t0.elapsed();
    let mut pos = 0;
    let t1 = Instant::now();
    loop {
        let end = (pos + V2_READ).min(stream.len());
        if pos == end {
            return Err(format!(
                "the v2 stream is longer than the {} bytes expected",
                stream.len()
            ));
        }
        match file.read_chunk(&mut stream[pos..end]) {
            Ok(Some(0)) => break,
            Ok(Some(n)) => pos += n,
            Ok(None) => return Err("the STOP_COPY data file read ENOMSG".into()),
            Err(e) => return Err(e.to_string()),
        }
    }
    let t_read = t1.elapsed();
    drop(file);
    src.v2_set_state(V2State::Stop).map_err(|e| e.to_string())?;
    src.v2_set_state(V2State::Running)
        .map_err(|e| e.to_string())?;
    Ok((pos, t_stop, t_read))
}

/// Restores a v2 stream into `dst` (RESUMING, the data file written, STOP,
/// RUNNING): the check that the stream the reads got is the device's.
fn v2_restore(dst: &Device, stream: &[u8]) -> BResult<()> {
    dst.v2_set_state(V2State::Stop).map_err(|e| e.to_string())?;
    let file = dst
        .v2_set_state(V2State::Resuming)
        .map_err(|e| e.to_string())?
        .ok_or("RESUMING handed out no data file")?;
    for c in stream.chunks(V2_READ) {
        file.write_all(c).map_err(|e| e.to_string())?;
    }
    drop(file);
    dst.v2_set_state(V2State::Stop).map_err(|e| e.to_string())?;
    dst.v2_set_state(V2State::Running)
        .map_err(|e| e.to_string())?;
    Ok(())
}

/// `n` timings of a memcpy of `bytes` bytes between two buffers already
/// touched.
fn memcpy_times(bytes: usize, n: usize) -> Vec<Duration> {
    let a = vec![0x5au8; bytes];
    let mut b = vec![0u8; bytes];
    (0..n)
        .map(|_| {
            let t0 = Instant::now();
            b.copy_from_slice(black_box(&a));
            black_box(&mut b);
            t0.elapsed()
        })
        .collect()
}

fn mbps(bytes: usize, d: &[Duration]) -> f64 {
    let us = stats::median_us(d);
    bytes as f64 / us
}

pub fn run(opts: &Opts) -> BResult<Report> {
    let src = crate::open_sample("large", opts)?;
    let dst = crate::open_sample("large", opts)?;
    let mem_size = Regs(&src).read(bar0::MEM_SIZE).map_err(|e| e.to_string())? as usize;
    let mut content = vec![0u8; mem_size];
    Lcg::new(2).fill(&mut content);
    src.write_region(BAR2, 0, &content)
        .map_err(|e| format!("fill device memory: {e}"))?;
    src.set_state(DeviceState::Running)
        .map_err(|e| e.to_string())?;
    let region = dst.migration_region().map_err(|e| e.to_string())?.clone();
    let data_len = region.data_len as usize;

    // Room for every page record and more; touched once before timing.
    let mut stream = vec![0xa5u8; 2 * mem_size + data_len];
    let reps = opts.reps(15);
    let mut errors = Vec::new();
    let (mut t_save, mut t_set, mut t_restore) = (Vec::new(), Vec::new(), Vec::new());
    let mut t_mmap_save = Vec::new();
    // The mapped data area, when the region offers it.
    let map = src.mig_mapping().map_err(|e| e.to_string())?;
    let (mut t_v2_stop, mut t_v2_read) = (Vec::new(), Vec::new());
    let mut v2_bytes = 0;
    let mut bytes = 0;
    let mut nchunks = 0;
    for rep in 0..reps {
        let (n, chunks, t) = save(&src, &mut stream, None)?;
        if rep > 0 && n != bytes {
            errors.push(format!(
                "the stream was {bytes} bytes, then {n} bytes on repetition {rep}"
            ));
        }
        bytes = n;
        nchunks = chunks;
        t_save.push(t);
        if let Some(m) = map {
            let (n_map, _, t) = save(&src, &mut stream, Some(m))?;
            if n_map != n {
                errors.push(format!(
                    "the save through the mapping was {n_map} bytes, through pread {n}"
                ));
            }
            t_mmap_save.push(t);
        }
        let (tl, ta) = restore(&dst, &stream[..n], data_len)?;
        t_set.push(tl);
        t_restore.push(ta);
        if rep == 0 {
            let mut back = vec![0u8; mem_size];
            dst.read_region(BAR2, 0, &mut back)
                .map_err(|e| format!("read restored device memory: {e}"))?;
            if back != content {
                errors.push("the restored device memory differs from the source's".into());
            }
        }
        let (n, ts, tr) = v2_save(&src, &mut stream)?;
        v2_bytes = n;
        t_v2_stop.push(ts);
        t_v2_read.push(tr);
        if rep == 0 {
            // Another pattern first, so that the check sees the restore.
            dst.write_region(BAR2, 0, &vec![0u8; mem_size])
                .map_err(|e| format!("clear destination device memory: {e}"))?;
            v2_restore(&dst, &stream[..n])?;
            let mut back = vec![0u8; mem_size];
            dst.read_region(BAR2, 0, &mut back)
                .map_err(|e| format!("read v2-restored device memory: {e}"))?;
            if back != content {
                errors.push(
                    "the device memory restored from the v2 stream differs from the source's"
                        .into(),
                );
            }
        }
    }

    // The baselines: the same bytes between two buffers already touched.
    let t_copy = memcpy_times(bytes, (reps * 7).max(21));
    let t_copy_v2 = memcpy_times(v2_bytes, (reps * 7).max(21));

    let copy = mbps(bytes, &t_copy);
    let copy_v2 = mbps(v2_bytes, &t_copy_v2);
    let mut t = Table::new(
        "2. save and restore throughput through the migration region vs memcpy",
        &[
            "operation",
            "bytes",
            "chunks",
            "ms (median)",
            "min..max ms",
            "MB/s",
            "vs memcpy",
        ],
    );
    let chunks_restore = bytes.div_ceil(data_len);
    let row = |t: &mut Table, name: &str, bytes: usize, chunks: usize, d: &[Duration], base| {
        let ms: Vec<f64> = d.iter().map(|x| x.as_secs_f64() * 1e3).collect();
        let (lo, hi) = stats::min_max(&ms);
        let rate = mbps(bytes, d);
        t.row(vec![
            name.into(),
            bytes.to_string(),
            chunks.to_string(),
            num(stats::median(&ms).unwrap_or(f64::NAN)),
            format!("{}..{}", num(lo), num(hi)),
            num(rate),
            ratio(rate, base),
        ]);
    };
    for (name, d, chunks) in [
        (
            "save: get-buffer loop (STOPNCOPY)",
            &t_save,
            nchunks as usize,
        ),
        (
            "save through the mapped data area",
            &t_mmap_save,
            nchunks as usize,
        ),
        ("restore: set-buffer loop", &t_set, chunks_restore),
        (
            "restore: set-buffer loop + RESUME_COMPLETED",
            &t_restore,
            chunks_restore,
        ),
        ("memcpy of the same bytes (Vec to Vec)", &t_copy, 1),
    ] {
        if !d.is_empty() {
            row(&mut t, name, bytes, chunks, d, copy);
        }
    }
    let v2_reads = v2_bytes.div_ceil(V2_READ);
    let v2_all: Vec<Duration> = t_v2_stop
        .iter()
        .zip(&t_v2_read)
        .map(|(a, b)| *a + *b)
        .collect();
    for (name, d, chunks) in [
        (
            "v2: data file reads of 1 MiB (STOP_COPY)",
            &t_v2_read,
            v2_reads,
        ),
        ("v2: STOP->STOP_COPY + the reads", &v2_all, v2_reads),
        ("memcpy of the v2 stream's bytes", &t_copy_v2, 1),
    ] {
        row(&mut t, name, v2_bytes, chunks, d, copy_v2);
    }
    t.note(format!(
        "{reps} saves and restores (median); a large mdev ({} KiB of device memory, \
         pseudo-random), threshold_size 0: chunks of up to the data area ({} KiB)",
        mem_size >> 10,
        data_len >> 10
    ));
    t.note(
        "MB/s is 10^6 bytes per second; \"vs memcpy\" is throughput / memcpy throughput of \
         the same number of bytes (targets: region 0.80x, v2 data file 0.90x or better)",
    );
    t.note(
        "v2: the same device memory through the v2 interface, each save STOP then STOP_COPY, \
         the data file read until it ends, STOP, RUNNING; restored once into the other mdev \
         and compared",
    );
    for e in &errors {
        t.note(format!("ERROR: {e}"));
    }
    let vs = |d: &[Duration], b: usize, base: f64| {
        Figure::or_na(mbps(b, d) / base, "no timing (no bytes moved)")
    };
    Ok(Report {
        tables: vec![t],
        figures: vec![
            ("save_vs_memcpy", vs(&t_save, bytes, copy)),
            ("restore_vs_memcpy", vs(&t_restore, bytes, copy)),
            (
                "mmap_save_vs_memcpy",
                if map.is_some() {
                    vs(&t_mmap_save, bytes, copy)
                } else {
                    Figure::Na("the migration region offers no mapping of its data area".into())
                },
            ),
            ("v2_read_vs_memcpy", vs(&t_v2_read, v2_bytes, copy_v2)),
        ],
        errors,
    })
}
