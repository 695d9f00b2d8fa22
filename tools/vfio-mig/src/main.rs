// SPDX-License-Identifier: GPL-2.0
//! `vfio-mig`: inspect and manage vfio-mig-sample mdevs.
//!
//! Subcommands live in the `COMMANDS` table; adding one is a new entry and a
//! `fn(&Opts) -> Result<(), String>`.

use std::fs::File;
use std::io::{BufReader, BufWriter};
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::process::ExitCode;

use vfio_mig::migration::{self, Field, SaveOptions};
use vfio_mig::sysfs::{self, Parent, DEFAULT_PARENT};
use vfio_mig::uapi::{self, vfio};
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
                let known = if t == uapi::VFIO_REGION_TYPE_MIGRATION_RFC
                    && s == uapi::VFIO_REGION_SUBTYPE_MIGRATION_RFC
                {
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
        0,
        migration::INFO_SIZE
    );
    println!(
        "  {:#08x}..{:#08x}  reserved (EINVAL)",
        migration::INFO_SIZE,
        r.data_offset
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
            ["types", "create", "remove", "info", "save", "restore"]
        );
    }
}
