// SPDX-License-Identifier: GPL-2.0
//! `vfio-mig`: inspect and manage vfio-mig-sample mdevs.
//!
//! Subcommands live in the `COMMANDS` table; adding one is a new entry and a
//! `fn(&Opts) -> Result<(), String>`.

use std::fs::File;
use std::io::{BufReader, BufWriter};
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::process::ExitCode;

use std::sync::Arc;
use std::time::Duration;

use vfio_mig::abi::bar0;
use vfio_mig::abi::migration::{INFO_SIZE, REGION_SUBTYPE, REGION_TYPE};
use vfio_mig::live::{self, CpuOptions, CpuWorkload, DeviceWorkload, LiveOptions, PagePattern, Vm};
use vfio_mig::migration::{self, Field, SaveOptions};
use vfio_mig::sample::{self, Regs};
use vfio_mig::sysfs::{self, Mdev, Parent, DEFAULT_PARENT};
use vfio_mig::uapi::vfio;
use vfio_mig::{stream, Device, OpenPath};

/// Parsed command line of one subcommand.
struct Opts {
    pos: Vec<String>,
    switches: Vec<&'static str>,
    values: Vec<(&'static str, String)>,
}

impl Opts {
    /// Splits `args` into positionals, known switches and known `--opt VALUE`
    /// (or `--opt=VALUE`) options; anything else starting with `-` is an error.
    fn parse(
        args: &[String],
        switches: &[&'static str],
        valued: &[&'static str],
    ) -> Result<Opts, String> {
        let mut o = Opts {
            pos: Vec::new(),
            switches: Vec::new(),
            values: Vec::new(),
        };
        let mut it = args.iter();
        while let Some(a) = it.next() {
            if a == "--" {
                o.pos.extend(it.by_ref().cloned());
                break;
            }
            if !a.starts_with('-') || a == "-" {
                o.pos.push(a.clone());
                continue;
            }
            let (name, inline) = match a.split_once('=') {
                Some((n, v)) => (n, Some(v.to_string())),
                None => (a.as_str(), None),
            };
            if let Some(s) = switches.iter().find(|s| **s == name) {
                if inline.is_some() {
                    return Err(format!("{name} takes no value"));
                }
                o.switches.push(s);
            } else if let Some(v) = valued.iter().find(|v| **v == name) {
                let val = match inline {
                    Some(x) => x,
                    None => it.next().ok_or(format!("{name} needs a value"))?.clone(),
                };
                o.values.push((v, val));
            } else {
                return Err(format!("unknown option {a}"));
            }
        }
        Ok(o)
    }

    fn has(&self, s: &str) -> bool {
        self.switches.contains(&s)
    }

    fn value(&self, name: &str) -> Option<&str> {
        self.values
            .iter()
            .rev()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }

    fn positionals(&self, n: usize, what: &str) -> Result<&[String], String> {
        if self.pos.len() != n {
            return Err(format!("expected {what}"));
        }
        Ok(&self.pos)
    }
}

struct Command {
    name: &'static str,
    usage: &'static str,
    about: &'static str,
    switches: &'static [&'static str],
    valued: &'static [&'static str],
    run: fn(&Opts) -> Result<(), String>,
}

const COMMANDS: &[Command] = &[
    Command {
        name: "types",
        usage: "types [--parent NAME]",
        about: "list the mdev types of a parent and their attributes",
        switches: &[],
        valued: &["--parent"],
        run: cmd_types,
    },
    Command {
        name: "create",
        usage: "create <TYPE> [--uuid UUID] [--parent NAME]",
        about: "create an mdev (TYPE: full name or suffix, e.g. small); prints its UUID",
        switches: &[],
        valued: &["--uuid", "--parent"],
        run: cmd_create,
    },
    Command {
        name: "remove",
        usage: "remove <UUID>",
        about: "remove an mdev",
        switches: &[],
        valued: &[],
        run: cmd_remove,
    },
    Command {
        name: "info",
        usage: "info <UUID> [--iommufd | --fd N]",
        about: "open the device; print its device, region, migration and IRQ info",
        switches: &["--iommufd"],
        valued: &["--fd"],
        run: cmd_info,
    },
    Command {
        name: "save",
        usage: "save <UUID> --out FILE [--threshold N] [--precopy N] [--iommufd | --fd N]",
        about: "save the device state (the raw stream) to FILE",
        switches: &["--iommufd"],
        valued: &["--out", "--threshold", "--precopy", "--fd"],
        run: cmd_save,
    },
    Command {
        name: "restore",
        usage: "restore <UUID> --in FILE [--chunk N] [--iommufd | --fd N]",
        about: "restore the device state from FILE and leave the device RUNNING",
        switches: &["--iommufd"],
        valued: &["--in", "--chunk", "--fd"],
        run: cmd_restore,
    },
    Command {
        name: "migrate",
        usage: "migrate (--src UUID --dst UUID | --create TYPE) [--iommufd] [--ram MIB]\n        \
                [--writer-pages N] [--writer-rate N] [--ring-pages N] [--fill-pages N]\n        \
                [--cpu-rate N] [--cpu-pattern random|strided:N] [--bar2-rate N]\n        \
                [--max-iterations N] [--converge-pages N] [--dirty-window N] [--threshold N]\n        \
                [--warmup MS] [--settle MS] [--iova ADDR] [--quiet]",
        about: "live-migrate a running device (DMA and vCPU workload) between two mdevs; \
                verify bit-exact",
        switches: &["--iommufd", "--quiet"],
        valued: &[
            "--src",
            "--dst",
            "--create",
            "--ram",
            "--iova",
            "--writer-pages",
            "--writer-rate",
            "--ring-pages",
            "--fill-pages",
            "--cpu-rate",
            "--cpu-pattern",
            "--bar2-rate",
            "--max-iterations",
            "--converge-pages",
            "--dirty-window",
            "--threshold",
            "--warmup",
            "--settle",
        ],
        run: cmd_migrate,
    },
];

fn usage() -> String {
    let mut s = String::from("usage: vfio-mig <command> [args]\n\ncommands:\n");
    for c in COMMANDS {
        s += &format!("  {}\n      {}\n", c.usage, c.about);
    }
    s += "\n--fd N uses the VFIO device fd N inherited from the parent process (which keeps\n\
          the device open, so its state outlives this command) instead of opening it.\n\
          N takes 0x, K, M and G: 4096, 0x1000, 4K.\n";
    s
}

/// A size or count: decimal, `0x` hex, or with a `K`, `M` or `G` suffix.
fn parse_num(name: &str, v: &str) -> Result<u64, String> {
    let bad = || format!("{name}: {v:?} is not a number (e.g. 4096, 0x1000, 4K, 1M)");
    let (digits, mult) = match v.chars().last() {
        Some('K' | 'k') => (&v[..v.len() - 1], 1u64 << 10),
        Some('M' | 'm') => (&v[..v.len() - 1], 1 << 20),
        Some('G' | 'g') => (&v[..v.len() - 1], 1 << 30),
        _ => (v, 1),
    };
    let n = match digits
        .strip_prefix("0x")
        .or_else(|| digits.strip_prefix("0X"))
    {
        Some(h) => u64::from_str_radix(h, 16).map_err(|_| bad())?,
        None => digits.parse::<u64>().map_err(|_| bad())?,
    };
    n.checked_mul(mult).ok_or_else(bad)
}

/// Opens the device of `uuid` the way the options say.
fn open_device(o: &Opts, uuid: &str) -> Result<Device, String> {
    if let Some(v) = o.value("--fd") {
        if o.has("--iommufd") {
            return Err("--fd and --iommufd exclude each other".into());
        }
        let fd = parse_num("--fd", v)?;
        let fd = RawFd::try_from(fd).map_err(|_| format!("--fd {v} is not an fd number"))?;
        // SAFETY: F_GETFD only inspects the descriptor table.
        if fd < 3 || unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
            return Err(format!("--fd {fd} is not an open file descriptor above 2"));
        }
        // SAFETY: the fd is open (checked above) and was handed to this
        // process for its use; nothing else in it owns the number.
        let owned = unsafe { OwnedFd::from_raw_fd(fd) };
        return Ok(Device::from_fd(owned, uuid));
    }
    let path = if o.has("--iommufd") {
        OpenPath::Iommufd
    } else {
        OpenPath::Legacy
    };
    Device::open(uuid, path).map_err(|e| e.to_string())
}

fn parent_of(o: &Opts) -> Parent {
    Parent::new(o.value("--parent").unwrap_or(DEFAULT_PARENT))
}

fn cmd_types(o: &Opts) -> Result<(), String> {
    o.positionals(0, "no arguments")?;
    let parent = parent_of(o);
    for name in parent.types().map_err(|e| e.to_string())? {
        let ty = parent.mdev_type(&name);
        let a = ty.attrs().map_err(|e| e.to_string())?;
        println!("{name}");
        println!("  name:                {}", a.name);
        println!(
            "  description:         {}",
            a.description.as_deref().unwrap_or("(none)")
        );
        println!("  device_api:          {}", a.device_api);
        println!("  available_instances: {}", a.available_instances);
        let devs = ty.devices().map_err(|e| e.to_string())?;
        println!("  devices:             {}", devs.join(" "));
    }
    Ok(())
}

fn cmd_create(o: &Opts) -> Result<(), String> {
    let pos = o.positionals(1, "one TYPE")?;
    let ty = parent_of(o).mdev_type(&pos[0]);
    let uuid = match o.value("--uuid") {
        Some(u) => u.to_string(),
        None => sysfs::random_uuid().map_err(|e| e.to_string())?,
    };
    ty.create(&uuid).map_err(|e| e.to_string())?;
    println!("{uuid}");
    Ok(())
}

fn cmd_remove(o: &Opts) -> Result<(), String> {
    let pos = o.positionals(1, "one UUID")?;
    sysfs::remove_mdev(&pos[0]).map_err(|e| e.to_string())
}

fn flag_names(flags: u32, names: &[(u32, &str)]) -> String {
    let mut v: Vec<String> = names
        .iter()
        .filter(|(bit, _)| flags & bit != 0)
        .map(|(_, n)| n.to_string())
        .collect();
    let rest = names.iter().fold(flags, |f, (bit, _)| f & !bit);
    if rest != 0 {
        v.push(format!("{rest:#x}"));
    }
    if v.is_empty() {
        "none".into()
    } else {
        v.join("|")
    }
}

fn region_name(index: u32) -> String {
    match index {
        0..=5 => format!("BAR{index}"),
        6 => "ROM".into(),
        7 => "CONFIG".into(),
        8 => "VGA".into(),
        _ => "device-specific".into(),
    }
}

fn irq_name(index: u32) -> &'static str {
    ["INTX", "MSI", "MSIX", "ERR", "REQ"]
        .get(index as usize)
        .copied()
        .unwrap_or("device-specific")
}

fn cmd_info(o: &Opts) -> Result<(), String> {
    let pos = o.positionals(1, "one UUID")?;
    let dev = open_device(o, &pos[0])?;
    let path = dev.open_path();
    let info = dev.info().map_err(|e| e.to_string())?;
    println!("device {} ({path})", dev.uuid());
    if let Ok(t) = sysfs::mdev_type_name(dev.uuid()) {
        println!("  type {t}");
    }
    println!(
        "  flags {:#x} ({}), {} regions, {} irqs",
        info.flags,
        flag_names(
            info.flags,
            &[
                (vfio::VFIO_DEVICE_FLAGS_RESET, "RESET"),
                (vfio::VFIO_DEVICE_FLAGS_PCI, "PCI"),
                (vfio::VFIO_DEVICE_FLAGS_PLATFORM, "PLATFORM"),
                (vfio::VFIO_DEVICE_FLAGS_AMBA, "AMBA"),
                (vfio::VFIO_DEVICE_FLAGS_CCW, "CCW"),
                (vfio::VFIO_DEVICE_FLAGS_AP, "AP"),
                (vfio::VFIO_DEVICE_FLAGS_FSL_MC, "FSL_MC"),
                (vfio::VFIO_DEVICE_FLAGS_CAPS, "CAPS"),
            ]
        ),
        info.num_regions,
        info.num_irqs
    );
    let region_flags = [
        (vfio::VFIO_REGION_INFO_FLAG_READ, "READ"),
        (vfio::VFIO_REGION_INFO_FLAG_WRITE, "WRITE"),
        (vfio::VFIO_REGION_INFO_FLAG_MMAP, "MMAP"),
        (vfio::VFIO_REGION_INFO_FLAG_CAPS, "CAPS"),
    ];
    for index in 0..info.num_regions {
        let r = match dev.region_info(index) {
            Ok(r) => r,
            Err(e) => {
                println!("region {index} {}: {e}", region_name(index));
                continue;
            }
        };
        println!(
            "region {index} {}: size {:#x} offset {:#x} flags {:#x} ({})",
            region_name(index),
            r.size,
            r.offset,
            r.flags,
            flag_names(r.flags, &region_flags)
        );
        for c in &r.caps {
            let what = if let Some((t, s)) = c.region_type() {
                let known = if (t, s) == (REGION_TYPE, REGION_SUBTYPE) {
                    " (migration, 2018 RFC)"
                } else {
                    ""
                };
                format!("TYPE type {t:#x} subtype {s}{known}")
            } else if let Some(areas) = c.sparse_areas() {
                let a: Vec<String> = areas
                    .iter()
                    .map(|(off, sz)| format!("{off:#x}+{sz:#x}"))
                    .collect();
                format!("SPARSE_MMAP {}", a.join(" "))
            } else {
                format!("{} bytes", c.data.len())
            };
            println!(
                "  cap id {} version {} at {:#x}: {what}",
                c.id, c.version, c.offset
            );
        }
        if index == 9 && r.size > 0 {
            match r.region_type() {
                Some((t, s)) => println!("  migration region: type {t:#x} subtype {s}"),
                None => println!("  migration region: no VFIO_REGION_INFO_CAP_TYPE"),
            }
        }
    }
    print_migration(&dev);
    print_sample_regs(&dev);
    let irq_flags = [
        (vfio::VFIO_IRQ_INFO_EVENTFD, "EVENTFD"),
        (vfio::VFIO_IRQ_INFO_MASKABLE, "MASKABLE"),
        (vfio::VFIO_IRQ_INFO_AUTOMASKED, "AUTOMASKED"),
        (vfio::VFIO_IRQ_INFO_NORESIZE, "NORESIZE"),
    ];
    for index in 0..info.num_irqs {
        match dev.irq_info(index) {
            Ok(i) => println!(
                "irq {index} {}: count {} flags {:#x} ({})",
                irq_name(index),
                i.count,
                i.flags,
                flag_names(i.flags, &irq_flags)
            ),
            Err(e) => println!("irq {index} {}: {e}", irq_name(index)),
        }
    }
    Ok(())
}

/// The migration region's layout, capability chain, state and fields.
fn print_migration(dev: &Device) {
    let r = match dev.migration_region() {
        Ok(r) => r,
        Err(e) => {
            println!("migration: {e}");
            return;
        }
    };
    let i = &r.info;
    println!(
        "migration region {} at file offset {:#x}, size {:#x}:",
        i.index, i.offset, i.size
    );
    println!(
        "  {:#08x}..{:#08x}  struct vfio_device_migration_info (packed)",
        0, INFO_SIZE
    );
    println!(
        "  {:#08x}..{:#08x}  reserved (EINVAL)",
        INFO_SIZE, r.data_offset
    );
    println!(
        "  {:#08x}..{:#08x}  data area, {:#x} bytes",
        r.data_offset,
        r.data_end(),
        r.data_len
    );
    println!(
        "  {:#08x}..{:#08x}  dirty bitmap area, {:#x} bytes (BITMAP_LEN assumed: the ABI does \
         not report the split)",
        r.bitmap_offset,
        r.bitmap_offset + r.bitmap_len,
        r.bitmap_len
    );
    println!(
        "  cap chain: cap_offset {:#x}, argsz {}",
        i.cap_offset, i.argsz
    );
    for c in &i.caps {
        let what = match c.region_type() {
            Some((t, s)) => format!("VFIO_REGION_INFO_CAP_TYPE type {t:#x} subtype {s}"),
            None => format!("{} bytes", c.data.len()),
        };
        println!(
            "    id {} version {} at {:#x}, next {:#x}: {what}",
            c.id, c.version, c.offset, c.next
        );
    }
    match dev.device_state_raw() {
        Ok(v) => println!("  device_state {v} ({})", migration::state_name(v)),
        Err(e) => println!("  device_state: {e}"),
    }
    // Plain fields only: reading data.size or dirty_pfns.copied is an action.
    for f in Field::ALL {
        let access = if f.writable() { "RW" } else { "R " };
        let value = if f.read_is_action() {
            "(reading it is an action)".to_string()
        } else {
            match dev.read_field(f) {
                Ok(v) => format!("{v:#x}"),
                Err(e) => e.to_string(),
            }
        };
        println!(
            "  {:#04x} {} {access} {:<24} {value}",
            f.offset(),
            f.width(),
            f.name()
        );
    }
}

/// The sample device's DMA engine, ring and background writer (BAR0), and
/// the module's pinned-page count; nothing for another device (mtty).
fn print_sample_regs(dev: &Device) {
    let regs = Regs(dev);
    match regs.read(bar0::ID) {
        Ok(bar0::ID_VALUE) => {}
        Ok(id) => {
            println!("BAR0 ID {id:#x}: not a vfio-mig-sample device, no DMA engine");
            return;
        }
        Err(e) => {
            println!("BAR0: {e}");
            return;
        }
    }
    let r = match regs.snapshot() {
        Ok(r) => r,
        Err(e) => {
            println!("BAR0 registers: {e}");
            return;
        }
    };
    let v = |off: u32| r[(off / 4) as usize];
    let iova = |lo: u32| u64::from(v(lo)) | u64::from(v(lo + 4)) << 32;
    let on = |b: bool| if b { "on" } else { "off" };
    println!("BAR0 registers:");
    for row in bar0::REGISTERS.chunks(4) {
        let cells: Vec<String> = row
            .iter()
            .map(|(off, name)| format!("{name:<13} {:#010x}", v(*off)))
            .collect();
        println!("  {}", cells.join("  "));
    }
    let status = match v(bar0::DMA_STATUS) {
        bar0::DMA_STATUS_IDLE => "IDLE".to_string(),
        bar0::DMA_STATUS_QUEUED => "QUEUED".to_string(),
        bar0::DMA_STATUS_DONE => "DONE".to_string(),
        bar0::DMA_STATUS_ERROR => "ERROR".to_string(),
        x => format!("{x} (unknown)"),
    };
    let cmd = match v(bar0::DMA_CMD) {
        0 => "none".to_string(),
        bar0::DMA_CMD_TO_GUEST => "TO_GUEST".to_string(),
        bar0::DMA_CMD_FROM_GUEST => "FROM_GUEST".to_string(),
        bar0::DMA_CMD_FILL => "FILL".to_string(),
        x => format!("{x} (unknown)"),
    };
    println!(
        "DMA engine: {status}, last command {cmd} (IOVA {:#x}, device offset {:#x}, {} bytes, \
         pattern {:#010x}), DMA_ERROR {}, PAUSE {}, {} completed",
        iova(bar0::DMA_IOVA_LO),
        v(bar0::DMA_DEV_OFF),
        v(bar0::DMA_LEN),
        v(bar0::DMA_PATTERN),
        v(bar0::DMA_ERROR),
        on(v(bar0::DMA_CTRL) & bar0::DMA_CTRL_PAUSE != 0),
        v(bar0::DMA_COMPLETED)
    );
    let ring = v(bar0::RING_CTRL);
    println!(
        "ring: {} ({}), IOVA {:#x}, {} pages, RING_ERROR {}; the device holds {} pages pinned",
        if ring & bar0::RING_PINNED != 0 {
            "pinned"
        } else {
            "not pinned"
        },
        if ring & bar0::RING_WRITABLE != 0 {
            "writable"
        } else {
            "read-only"
        },
        iova(bar0::RING_IOVA_LO),
        v(bar0::RING_PAGES),
        v(bar0::RING_ERROR),
        v(bar0::PINNED_PAGES)
    );
    println!(
        "background writer: {}, IOVA {:#x}, {} pages at {}/s, BG_WRITES {}, cursor {}, \
         BG_ERROR {}",
        on(v(bar0::BG_CTRL) & bar0::BG_ENABLE != 0),
        iova(bar0::BG_IOVA_LO),
        v(bar0::BG_PAGES),
        v(bar0::BG_RATE),
        v(bar0::BG_WRITES),
        v(bar0::BG_CURSOR),
        v(bar0::BG_ERROR)
    );
    match sample::pinned_pages_total() {
        Ok(n) => println!(
            "module: {n} guest pages pinned ({})",
            sample::PINNED_PAGES_DEBUGFS
        ),
        Err(e) => println!("module: pinned pages unknown: {e}"),
    }
}

fn cmd_save(o: &Opts) -> Result<(), String> {
    let pos = o.positionals(1, "one UUID")?;
    let out = o.value("--out").ok_or("--out FILE is required")?;
    let threshold = match o.value("--threshold") {
        Some(v) => parse_num("--threshold", v)?,
        None => 0,
    };
    let precopy = match o.value("--precopy") {
        Some(v) => u32::try_from(parse_num("--precopy", v)?)
            .map_err(|_| format!("--precopy {v} is too large"))?,
        None => 1,
    };
    let dev = open_device(o, &pos[0])?;
    let file = File::create(out).map_err(|e| format!("create {out}: {e}"))?;
    let mut w = BufWriter::with_capacity(1 << 20, file);
    let opts = SaveOptions {
        threshold,
        precopy_iterations: precopy,
        ..Default::default()
    };
    let rep = match dev.save_to(&mut w, opts) {
        Ok(r) => r,
        Err(e) => {
            drop(w);
            let _ = std::fs::remove_file(out);
            return Err(format!(
                "{e} (the device was left in {}; {out} removed)",
                state_words(&dev)
            ));
        }
    };
    drop(w);
    println!(
        "saved {} bytes in {} chunks (largest {}) to {out}",
        rep.bytes, rep.chunks, rep.max_chunk
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
    let bytes = std::fs::read(out).map_err(|e| format!("read back {out}: {e}"))?;
    match stream::walk(&bytes) {
        Ok(l) => println!("  stream: {l}"),
        Err(e) => println!("  stream: cannot walk it: {e}"),
    }
    println!("device state: {}", state_words(&dev));
    Ok(())
}

fn cmd_restore(o: &Opts) -> Result<(), String> {
    let pos = o.positionals(1, "one UUID")?;
    let input = o.value("--in").ok_or("--in FILE is required")?;
    let file = File::open(input).map_err(|e| format!("open {input}: {e}"))?;
    let dev = open_device(o, &pos[0])?;
    let data_len = dev.migration_region().map_err(|e| e.to_string())?.data_len;
    let chunk = match o.value("--chunk") {
        Some(v) => parse_num("--chunk", v)?,
        None => data_len,
    };
    if chunk == 0 || chunk > data_len {
        return Err(format!(
            "--chunk {chunk} is not in 1..={data_len} (the data area)"
        ));
    }
    let mut r = BufReader::with_capacity(1 << 20, file);
    let rep = dev
        .restore_from(&mut r, chunk as usize)
        .map_err(|e| format!("{e} (the device was left in {})", state_words(&dev)))?;
    println!(
        "restored {} bytes in {} chunks from {input}",
        rep.bytes, rep.chunks
    );
    println!("device state: {}", state_words(&dev));
    Ok(())
}

/// A numeric option that must fit `T`, or its default.
fn num_opt<T: TryFrom<u64>>(o: &Opts, name: &str, default: T) -> Result<T, String> {
    match o.value(name) {
        Some(v) => T::try_from(parse_num(name, v)?).map_err(|_| format!("{name} {v} is too large")),
        None => Ok(default),
    }
}

fn cmd_migrate(o: &Opts) -> Result<(), String> {
    o.positionals(0, "no positional arguments")?;
    let path = if o.has("--iommufd") {
        OpenPath::Iommufd
    } else {
        OpenPath::Legacy
    };
    let quiet = o.has("--quiet");
    let ram_mib: u64 = num_opt(o, "--ram", 64)?;
    let ram_bytes = ram_mib
        .checked_mul(1 << 20)
        .and_then(|b| usize::try_from(b).ok())
        .filter(|b| *b > 0)
        .ok_or(format!(
            "--ram {ram_mib}: give 1 MiB or more that fits in memory"
        ))?;
    let iova: u64 = num_opt(o, "--iova", 1 << 32)?;
    let workload = DeviceWorkload {
        writer_pages: num_opt(o, "--writer-pages", 256)?,
        writer_rate: num_opt(o, "--writer-rate", 2000)?,
        ring_pages: num_opt(o, "--ring-pages", 16)?,
        fill_pages: num_opt(o, "--fill-pages", 4)?,
    };
    let pattern: PagePattern = o
        .value("--cpu-pattern")
        .unwrap_or("random")
        .parse()
        .map_err(|e: vfio_mig::Error| e.to_string())?;
    let cpu_opts = CpuOptions {
        rate: num_opt(o, "--cpu-rate", 500)?,
        pattern,
        bar2_rate: num_opt(o, "--bar2-rate", 100)?,
        ..CpuOptions::default()
    };
    let warmup = Duration::from_millis(num_opt(o, "--warmup", 500)?);
    let settle = Duration::from_millis(num_opt(o, "--settle", 200)?);
    let max_iterations: u32 = num_opt(o, "--max-iterations", 10)?;
    let converge_pages: u64 = num_opt(o, "--converge-pages", 512)?;
    let dirty_window: u64 = num_opt(o, "--dirty-window", 0)?;
    let threshold: u64 = num_opt(o, "--threshold", 0)?;
    if max_iterations == 0 {
        return Err("--max-iterations must be at least 1 (the full copy)".into());
    }

    // Guards first: they are dropped last, after the devices are closed
    // (removing an mdev waits for its fd to close).
    let mut guards: Vec<Mdev> = Vec::new();
    let (src_uuid, dst_uuid) = match (o.value("--create"), o.value("--src"), o.value("--dst")) {
        (Some(ty), None, None) => {
            let ty = Parent::new(DEFAULT_PARENT).mdev_type(ty);
            for _ in 0..2 {
                guards.push(ty.create_guarded().map_err(|e| e.to_string())?);
            }
            (guards[0].uuid().to_string(), guards[1].uuid().to_string())
        }
        (None, Some(s), Some(d)) if s != d => (s.to_string(), d.to_string()),
        _ => return Err("give either --src UUID --dst UUID (two mdevs) or --create TYPE".into()),
    };
    let type_name = sysfs::mdev_type_name(&src_uuid).unwrap_or_else(|_| "?".into());
    let src_dev = Arc::new(Device::open(&src_uuid, path).map_err(|e| e.to_string())?);
    let dst_dev = Arc::new(Device::open(&dst_uuid, path).map_err(|e| e.to_string())?);
    let src =
        Vm::new(Arc::clone(&src_dev), "src-ram", ram_bytes, iova).map_err(|e| e.to_string())?;
    let dst =
        Vm::new(Arc::clone(&dst_dev), "dst-ram", ram_bytes, iova).map_err(|e| e.to_string())?;

    println!(
        "live migration {src_uuid} -> {dst_uuid} ({type_name}, {path}, separate IOMMU contexts)"
    );
    println!(
        "  guest RAM: {} per side at IOVA {iova:#x}; device workload: {workload}",
        live::human_bytes(ram_bytes as u64)
    );
    println!(
        "  vCPU workload: {cpu_opts}; pre-copy: at most {max_iterations} iteration{}, \
         converged at <= {converge_pages} dirty pages",
        if max_iterations == 1 { "" } else { "s" }
    );
    workload
        .prepare_source(&src)
        .map_err(|e| format!("setting up the source: {e}"))?;
    let mut cpu = if cpu_opts.rate > 0 || cpu_opts.bar2_rate > 0 {
        Some(CpuWorkload::start(&src, cpu_opts).map_err(|e| e.to_string())?)
    } else {
        None
    };
    // Let the workload run before migrating, as a guest would have been.
    std::thread::sleep(warmup);

    // Rows go to stderr as iterations end; with --quiet they are kept and
    // shown only if the migration fails (the report has them otherwise).
    let mut rows: Vec<live::Iteration> = Vec::new();
    let mut progress = |it: &live::Iteration| {
        if !quiet {
            if rows.is_empty() {
                eprintln!("  {}", live::IterationHeader);
            }
            eprintln!("  {}", live::IterationRow(it));
        }
        rows.push(*it);
    };
    let opts = LiveOptions {
        max_iterations,
        converge_pages,
        dirty_window,
        threshold,
        settle,
        progress: Some(&mut progress),
    };
    let result = live::migrate(&src, cpu.as_mut(), &dst, opts);
    // Whatever happened, the vCPU thread is stopped before the devices go.
    drop(cpu);
    if result.is_err() && quiet && !rows.is_empty() {
        eprintln!("  {}", live::IterationHeader);
        for it in &rows {
            eprintln!("  {}", live::IterationRow(it));
        }
    }
    let report = result.map_err(|e| {
        format!(
            "live migration failed: {e} (source left in {}, destination in {})",
            state_words(&src.dev),
            state_words(&dst.dev)
        )
    })?;
    println!("{report}");
    let checked = workload
        .check_destination(&dst)
        .map_err(|e| format!("the destination does not carry on: {e}"))?;
    if !checked.is_empty() {
        println!("destination: {checked}");
    }
    drop((src, dst, src_dev, dst_dev));
    let removed = guards.len();
    for g in guards {
        g.remove()
            .map_err(|e| format!("removing a created mdev: {e}"))?;
    }
    if removed > 0 {
        println!("removed the {removed} mdevs created for the migration");
    }
    Ok(())
}

fn state_words(dev: &Device) -> String {
    match dev.device_state_raw() {
        Ok(v) => migration::state_name(v),
        Err(e) => e.to_string(),
    }
}

fn main() -> ExitCode {
    // Die quietly on a closed pipe (`vfio-mig info ... | head`), as C tools do.
    // SAFETY: restoring the default disposition of SIGPIPE before any thread
    // exists has no memory-safety preconditions.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(name) = args.first() else {
        eprint!("{}", usage());
        return ExitCode::from(2);
    };
    if name == "-h" || name == "--help" || name == "help" {
        print!("{}", usage());
        return ExitCode::SUCCESS;
    }
    let Some(cmd) = COMMANDS.iter().find(|c| c.name == name) else {
        eprint!("vfio-mig: unknown command {name}\n{}", usage());
        return ExitCode::from(2);
    };
    let opts = match Opts::parse(&args[1..], cmd.switches, cmd.valued) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("vfio-mig {}: {e}\nusage: vfio-mig {}", cmd.name, cmd.usage);
            return ExitCode::from(2);
        }
    };
    match (cmd.run)(&opts) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vfio-mig {}: {e}", cmd.name);
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers() {
        assert_eq!(parse_num("n", "4096"), Ok(4096));
        assert_eq!(parse_num("n", "0x1000"), Ok(4096));
        assert_eq!(parse_num("n", "4K"), Ok(4096));
        assert_eq!(parse_num("n", "1M"), Ok(1 << 20));
        assert_eq!(parse_num("n", "2g"), Ok(2 << 30));
        assert!(parse_num("n", "").is_err());
        assert!(parse_num("n", "K").is_err());
        assert!(parse_num("n", "12x").is_err());
        assert!(parse_num("n", "-1").is_err());
        assert!(parse_num("n", "0xffffffffffffffffK").is_err());
    }

    #[test]
    fn options() {
        let args: Vec<String> = ["u", "--out=f", "--threshold", "4K", "--iommufd"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let o = Opts::parse(&args, &["--iommufd"], &["--out", "--threshold"]).unwrap();
        assert_eq!(o.pos, ["u"]);
        assert_eq!(o.value("--out"), Some("f"));
        assert_eq!(o.value("--threshold"), Some("4K"));
        assert!(o.has("--iommufd"));
        assert!(Opts::parse(&args, &[], &["--out", "--threshold"]).is_err());
        let every = COMMANDS.iter().map(|c| c.name).collect::<Vec<_>>();
        assert_eq!(
            every,
            ["types", "create", "remove", "info", "save", "restore", "migrate"]
        );
    }
}
