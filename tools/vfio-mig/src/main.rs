// SPDX-License-Identifier: GPL-2.0
//! `vfio-mig`: inspect and manage vfio-mig-sample mdevs.
//!
//! Subcommands live in the `COMMANDS` table; adding one is a new entry and a
//! `fn(&Opts) -> Result<(), String>`.

use std::process::ExitCode;

use vfio_mig::sysfs::{self, Parent, DEFAULT_PARENT};
use vfio_mig::uapi::{self, vfio};
use vfio_mig::{Device, OpenPath};

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
        usage: "info <UUID> [--iommufd]",
        about: "open the device and print its VFIO device, region and IRQ info",
        switches: &["--iommufd"],
        valued: &[],
        run: cmd_info,
    },
];

fn usage() -> String {
    let mut s = String::from("usage: vfio-mig <command> [args]\n\ncommands:\n");
    for c in COMMANDS {
        s += &format!("  {:<44} {}\n", c.usage, c.about);
    }
    s
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
    let path = if o.has("--iommufd") {
        OpenPath::Iommufd
    } else {
        OpenPath::Legacy
    };
    let dev = Device::open(&pos[0], path).map_err(|e| e.to_string())?;
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
