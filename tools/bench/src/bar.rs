// SPDX-License-Identifier: GPL-2.0
//! Benchmark 3: a BAR register read on this device against the same kind of
//! read on the C sample mtty, loaded in the same guest.
//!
//! Our BAR0 takes only 4-byte aligned accesses of 4-byte multiples, so the
//! comparison is a 4-byte `pread`. mtty's `mtty_read()` turns a 4-byte
//! aligned 4-byte read into one `mdev_access()` of 4 bytes (its
//! `handle_bar_read()` fills the first byte from the 16550 register at that
//! offset), so the same access size works on both. On mtty, offset 4
//! (`UART_MCR`) is a plain register read like our `SCRATCH`; offset 0
//! (`UART_RX`, FIFO empty) also takes mtty's FIFO lock, and is measured
//! with 4 and 1 bytes too. A 4-byte `pread` of `/dev/zero` shows the cost
//! of the system call alone.
//!
//! Each read is timed in batches; the batches of all reads alternate (one
//! batch of each in turn), and the median of the per-read time of the
//! batches is reported.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::time::Instant;

use vfio_mig::abi::{bar0, region};
use vfio_mig::sample::Regs;
use vfio_mig::{Device, OpenPath, Parent};

use crate::stats::{self, num, ratio, Table};
use crate::{BResult, Figure, Opts, Report};

enum Target<'a> {
    Dev(&'a Device, u64),
    File(&'a File),
}

struct Read<'a> {
    name: &'static str,
    target: Target<'a>,
    len: usize,
    ns: Vec<f64>,
}

impl Read<'_> {
    fn batch(&mut self, iters: u32) -> BResult<()> {
        let mut b = [0u8; 4];
        let buf = &mut b[..self.len];
        let t0 = Instant::now();
        for _ in 0..iters {
            let n = match &self.target {
                Target::Dev(d, pos) => d.pread(*pos, buf).map_err(|e| e.to_string())?,
                Target::File(f) => f
                    .read_at(buf, 0)
                    .map_err(|e| format!("pread /dev/zero: {e}"))?,
            };
            if n != self.len {
                return Err(format!("{}: short read ({n} of {})", self.name, self.len));
            }
        }
        self.ns
            .push(t0.elapsed().as_secs_f64() * 1e9 / f64::from(iters));
        Ok(())
    }
}

pub fn run(opts: &Opts) -> BResult<Report> {
    let ours = crate::open_sample("small", opts)?;
    let mtty = Parent::open("mtty").map_err(|e| format!("mtty is not loaded: {e}"))?;
    let mm = mtty
        .mdev_type("1")
        .create_guarded()
        .map_err(|e| format!("create an mtty-1 mdev: {e}"))?;
    let theirs =
        Device::open(mm.uuid(), opts.path).map_err(|e| format!("open the mtty mdev: {e}"))?;
    // mtty caches the region layout at GET_INFO.
    theirs.info().map_err(|e| e.to_string())?;
    // Place BAR0 as a guest would (mtty recomputes the BAR base on every
    // access while it is 0): an I/O address for mtty, memory for ours.
    theirs
        .write32(7, 0x10, 0xc000)
        .map_err(|e| format!("mtty config BAR0: {e}"))?;
    ours.write32(7, 0x10, 0xfe00_0000)
        .map_err(|e| format!("config BAR0: {e}"))?;
    let regs = Regs(&ours);
    regs.write(bar0::SCRATCH, 0x1234_5678)
        .map_err(|e| e.to_string())?;
    if regs.read(bar0::SCRATCH).map_err(|e| e.to_string())? != 0x1234_5678 {
        return Err("SCRATCH does not read back what was written".into());
    }
    let zero = File::open("/dev/zero").map_err(|e| format!("open /dev/zero: {e}"))?;
    let bar0_at = region::offset(region::BAR0);
    let mut reads = [
        Read {
            name: "vfio-mig-sample BAR0 SCRATCH (0x08)",
            target: Target::Dev(&ours, bar0_at + u64::from(bar0::SCRATCH)),
            len: 4,
            ns: Vec::new(),
        },
        Read {
            name: "mtty BAR0 UART_MCR (0x04)",
            target: Target::Dev(&theirs, bar0_at + 4),
            len: 4,
            ns: Vec::new(),
        },
        Read {
            name: "mtty BAR0 UART_RX (0x00), FIFO empty",
            target: Target::Dev(&theirs, bar0_at),
            len: 4,
            ns: Vec::new(),
        },
        Read {
            name: "mtty BAR0 UART_RX (0x00), FIFO empty",
            target: Target::Dev(&theirs, bar0_at),
            len: 1,
            ns: Vec::new(),
        },
        Read {
            name: "/dev/zero (system call floor)",
            target: Target::File(&zero),
            len: 4,
            ns: Vec::new(),
        },
    ];
    // Warm up (and check every read works), then the batches.
    for r in reads.iter_mut() {
        r.batch(100)?;
        r.ns.clear();
    }
    let batches = opts.reps(31);
    let iters = if opts.quick { 500 } else { 2000 };
    for _ in 0..batches {
        for r in reads.iter_mut() {
            r.batch(iters)?;
        }
    }

    let med: Vec<f64> = reads
        .iter()
        .map(|r| stats::median(&r.ns).unwrap_or(f64::NAN))
        .collect();
    let mut t = Table::new(
        "3. BAR register read: vfio-mig-sample vs the C sample mtty",
        &[
            "read (pread on the device fd)",
            "bytes",
            "ns per read (median)",
            "min..max",
            "ours / this",
        ],
    );
    for (r, m) in reads.iter().zip(&med) {
        let (lo, hi) = stats::min_max(&r.ns);
        t.row(vec![
            r.name.into(),
            r.len.to_string(),
            num(*m),
            format!("{}..{}", num(lo), num(hi)),
            ratio(med[0], *m),
        ]);
    }
    t.note(format!(
        "{batches} batches of {iters} reads each, batches of all rows alternating; both \
         devices opened through the {} path",
        match opts.path {
            OpenPath::Iommufd => "iommufd cdev",
            _ => "legacy group/container",
        }
    ));
    t.note(format!(
        "target: at most 1.10x mtty's cost; ours / mtty UART_MCR (a plain register, same \
         4-byte size) = {}, ours / mtty UART_RX 4 bytes = {}",
        ratio(med[0], med[1]),
        ratio(med[0], med[2])
    ));
    t.note(
        "our BAR0 rejects 1-byte reads (EINVAL: 4-byte aligned dwords only), so the 1-byte \
         mtty row has no counterpart of ours",
    );
    t.note(format!(
        "above the /dev/zero floor: ours {} ns, mtty UART_MCR {} ns ({})",
        num(med[0] - med[4]),
        num(med[1] - med[4]),
        ratio(med[0] - med[4], med[1] - med[4])
    ));
    drop(theirs);
    drop(mm);
    Ok(Report {
        tables: vec![t],
        figures: vec![(
            "bar0_read_vs_mtty",
            Figure::or_na(med[0] / med[1], "no timing"),
        )],
        errors: Vec::new(),
    })
}
