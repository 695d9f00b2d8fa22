// SPDX-License-Identifier: GPL-2.0
//! `vfio-mig save` and `vfio-mig restore`: the device state to a file and
//! back, through a [`StateTransfer`].

use std::fs::File;
use std::io::{BufReader, BufWriter};
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::Args;
use serde::Serialize;
use vfio_mig::transfer::{self, RestoreReport, SaveReport};
use vfio_mig::{stream, Error, SaveOptions};

use crate::{number, parse_num, print_json, transfer_of, Interface, OpenArgs, Output};

/// `vfio-mig save`.
#[derive(Debug, Args)]
pub struct SaveArgs {
    /// The mdev
    pub uuid: String,
    /// Where the stream goes
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
    /// Cap of each chunk in bytes (0: the data area)
    #[arg(long, value_name = "N", default_value = "0", value_parser = parse_num)]
    pub threshold: u64,
    /// Pre-copy passes (0: straight to stop-and-copy)
    #[arg(long, value_name = "N", default_value = "1", value_parser = number::<u32>)]
    pub precopy: u32,
    #[command(flatten)]
    pub interface: Interface,
    #[command(flatten)]
    pub open: OpenArgs,
    #[command(flatten)]
    pub format: Output,
}

/// `vfio-mig restore`.
#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// The mdev
    pub uuid: String,
    /// Where the stream comes from
    #[arg(long = "in", value_name = "FILE")]
    pub input: PathBuf,
    /// Bytes per set-buffer action (default: the data area)
    #[arg(long, value_name = "N", value_parser = parse_num)]
    pub chunk: Option<u64>,
    #[command(flatten)]
    pub interface: Interface,
    #[command(flatten)]
    pub open: OpenArgs,
    #[command(flatten)]
    pub format: Output,
}

/// What a saved stream holds, as `walk` finds it.
#[derive(Serialize)]
#[serde(untagged)]
enum StreamSummary {
    Layout {
        version: u32,
        type_id: u32,
        memory_size: u64,
        page_size: u32,
        page_records: usize,
        register_record_len: usize,
    },
    Unwalkable {
        error: String,
    },
}

impl StreamSummary {
    fn of(bytes: &[u8]) -> (Self, String) {
        match stream::walk(bytes) {
            Ok(l) => {
                let h = l.header;
                let summary = StreamSummary::Layout {
                    version: h.version,
                    type_id: h.type_id,
                    memory_size: h.mem_size,
                    page_size: h.page_size,
                    page_records: l.pages().count(),
                    register_record_len: l.regs().map_or(0, |r| r.len),
                };
                (summary, l.to_string())
            }
            Err(e) => {
                let text = format!("cannot walk it: {e}");
                (StreamSummary::Unwalkable { error: e }, text)
            }
        }
    }
}

/// `vfio-mig save --json`.
#[derive(Serialize)]
struct SaveSummary<'a> {
    uuid: &'a str,
    file: &'a PathBuf,
    #[serde(flatten)]
    report: &'a SaveReport,
    stream: StreamSummary,
    device_state: String,
}

pub fn save(a: &SaveArgs) -> Result<()> {
    let dev = a.open.open(&a.uuid)?;
    let t = transfer_of(&dev, &a.interface)?;
    let out = &a.out;
    let file = File::create(out).map_err(|e| Error::path("create", out, e))?;
    let mut w = BufWriter::with_capacity(1 << 20, file);
    let opts = SaveOptions {
        threshold: a.threshold,
        precopy_iterations: a.precopy,
        ..Default::default()
    };
    let saved = transfer::save(t.as_ref(), &mut w, opts);
    drop(w);
    let rep = saved.or_else(|e| {
        let _ = std::fs::remove_file(out);
        Err(e).with_context(|| {
            format!(
                "save {} to {} (the device was left in {}; {} removed)",
                a.uuid,
                out.display(),
                t.state_words(),
                out.display()
            )
        })
    })?;
    let bytes = std::fs::read(out).map_err(|e| Error::path("read back", out, e))?;
    let (stream, stream_text) = StreamSummary::of(&bytes);
    if a.format.json {
        return print_json(&SaveSummary {
            uuid: &a.uuid,
            file: out,
            report: &rep,
            stream,
            device_state: t.state_words(),
        });
    }
    print_save(&rep, out, &stream_text, &t.state_words());
    Ok(())
}

fn print_save(rep: &SaveReport, out: &std::path::Path, stream_text: &str, state: &str) {
    println!(
        "saved {} bytes in {} chunks (largest {}) to {}",
        rep.bytes,
        rep.chunks,
        rep.max_chunk,
        out.display()
    );
    println!(
        "  pre-copy: {} pass{}, {} bytes; stop-and-copy: {} bytes; downtime {:?}",
        rep.precopy_iterations,
        if rep.precopy_iterations == 1 {
            ""
        } else {
            "es"
        },
        rep.precopy_bytes,
        rep.stop_bytes,
        rep.downtime
    );
    println!("  stream: {stream_text}");
    println!("device state: {state}");
}

/// `vfio-mig restore --json`.
#[derive(Serialize)]
struct RestoreSummary<'a> {
    uuid: &'a str,
    file: &'a PathBuf,
    #[serde(flatten)]
    report: &'a RestoreReport,
    device_state: String,
}

pub fn restore(a: &RestoreArgs) -> Result<()> {
    let input = &a.input;
    let file = File::open(input).map_err(|e| Error::path("open", input, e))?;
    let dev = a.open.open(&a.uuid)?;
    let t = transfer_of(&dev, &a.interface)?;
    let data_len = t
        .max_chunk()
        .with_context(|| format!("find the migration region of {}", a.uuid))?;
    let chunk = a.chunk.unwrap_or(data_len);
    if chunk == 0 || chunk > data_len {
        bail!("--chunk {chunk} is not in 1..={data_len} (the data area)");
    }
    let mut r = BufReader::with_capacity(1 << 20, file);
    let rep =
        transfer::restore(t.as_ref(), &mut r, &mut |_| chunk as usize).with_context(|| {
            format!(
                "restore {} from {} (the device was left in {})",
                a.uuid,
                input.display(),
                t.state_words()
            )
        })?;
    if a.format.json {
        return print_json(&RestoreSummary {
            uuid: &a.uuid,
            file: input,
            report: &rep,
            device_state: t.state_words(),
        });
    }
    println!(
        "restored {} bytes in {} chunks from {}",
        rep.bytes,
        rep.chunks,
        input.display()
    );
    println!("device state: {}", t.state_words());
    Ok(())
}
