// SPDX-License-Identifier: GPL-2.0
//! Benchmark 2: save and restore throughput through the migration region
//! against a memcpy of the same bytes in the same guest.
//!
//! The source is a `large` mdev (2 MiB of device memory, filled with
//! pseudo-random bytes). Save: MIGRATION_SETUP, MIGRATION_STOPNCOPY, then
//! get buffer until it returns 0, with `threshold_size` 0 so that every
//! chunk is as large as the data area; each chunk is read straight into
//! the stream buffer (no userspace copy besides the pread itself). Restore:
//! the stream into another `large` mdev in MIGRATION_RESUME, chunks of the
//! data area's size (set buffer), then MIGRATION_RESUME_COMPLETED. The
//! baseline copies the same number of bytes between two `Vec<u8>`.

use std::hint::black_box;
use std::time::{Duration, Instant};

use vfio_mig::abi::bar0;
use vfio_mig::abi::migration::DATA_OFFSET;
use vfio_mig::abi::region::BAR2;
use vfio_mig::sample::Regs;
use vfio_mig::{Device, DeviceState, Field};

use crate::dma::Lcg;
use crate::stats::{self, num, ratio, Table};
use crate::{BResult, Opts, Report};

/// One save: the stream into `stream` (which must be large enough);
/// returns `(bytes, chunks, time of the get-buffer loop)`.
fn save(src: &Device, stream: &mut [u8]) -> BResult<(usize, u32, Duration)> {
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
        src.read_region(idx, off, dst)
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
    let data_len = dst.migration_region().map_err(|e| e.to_string())?.data_len as usize;

    // Room for every page record and more; touched once before timing.
    let mut stream = vec![0xa5u8; 2 * mem_size + data_len];
    let reps = opts.reps(15);
    let mut errors = Vec::new();
    let (mut t_save, mut t_set, mut t_restore) = (Vec::new(), Vec::new(), Vec::new());
    let mut bytes = 0;
    let mut nchunks = 0;
    for rep in 0..reps {
        let (n, chunks, t) = save(&src, &mut stream)?;
        if rep > 0 && n != bytes {
            errors.push(format!(
                "the stream was {bytes} bytes, then {n} bytes on repetition {rep}"
            ));
        }
        bytes = n;
        nchunks = chunks;
        t_save.push(t);
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
    }

    // The baseline: the same bytes between two buffers already touched.
    let a = stream[..bytes].to_vec();
    let mut b = vec![0u8; bytes];
    let mut t_copy = Vec::new();
    for _ in 0..(reps * 7).max(21) {
        let t0 = Instant::now();
        b.copy_from_slice(black_box(&a));
        black_box(&mut b);
        t_copy.push(t0.elapsed());
    }

    let copy = mbps(bytes, &t_copy);
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
    for (name, d, chunks) in [
        (
            "save: get-buffer loop (STOPNCOPY)",
            &t_save,
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
            ratio(rate, copy),
        ]);
    }
    t.note(format!(
        "{reps} saves and restores (median); a large mdev ({} KiB of device memory, \
         pseudo-random), threshold_size 0: chunks of up to the data area ({} KiB)",
        mem_size >> 10,
        data_len >> 10
    ));
    t.note(
        "MB/s is 10^6 bytes per second; \"vs memcpy\" is throughput / memcpy throughput \
         (target 0.80x or better)",
    );
    for e in &errors {
        t.note(format!("ERROR: {e}"));
    }
    Ok(Report {
        tables: vec![t],
        errors,
    })
}
