// SPDX-License-Identifier: GPL-2.0
//! `vfio-mig`: inspect and manage vfio-mig-sample mdevs.
//!
//! The command line is `clap`'s (derive): `--help` is generated, values are
//! parsed and checked before anything runs. Exit codes: 0 success, 1 a
//! command failed (the message names the operation, the device and the
//! errno), 2 a usage error. `--json` makes `types`, `info`, `save`,
//! `restore` and `migrate` print one JSON document instead of text.

mod info;
mod migrate;
mod save_restore;

use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::error::ErrorKind;
use clap::{Args, CommandFactory, Parser, Subcommand};
use serde::Serialize;
use vfio_mig::sysfs::{self, Parent, TypeAttrs, DEFAULT_PARENT};
use vfio_mig::v2::V2Transfer;
use vfio_mig::{AreaAccess, Device, MigrationRegionTransfer, OpenPath, StateTransfer};

const AFTER_HELP: &str = "\
--fd N uses the VFIO device fd N inherited from the parent process (which keeps
the device open, so its state outlives this command) instead of opening it.
Sizes and counts take 0x, K, M and G: 4096, 0x1000, 4K.";

/// Inspect and manage vfio-mig-sample mdevs.
#[derive(Debug, Parser)]
#[command(name = "vfio-mig", version, after_help = AFTER_HELP)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// List the mdev types of a parent and their attributes
    Types {
        #[command(flatten)]
        parent: ParentArg,
        #[command(flatten)]
        out: Output,
    },
    /// Create an mdev; prints its UUID
    Create {
        /// The type: full name or suffix, e.g. small
        #[arg(value_name = "TYPE")]
        mdev_type: String,
        /// The new mdev's UUID (default: a random one)
        #[arg(long)]
        uuid: Option<String>,
        #[command(flatten)]
        parent: ParentArg,
    },
    /// Remove an mdev
    Remove {
        /// The mdev
        uuid: String,
    },
    /// Open the device; print its device, region, migration and IRQ info
    Info {
        /// The mdev
        uuid: String,
        #[command(flatten)]
        open: OpenArgs,
        #[command(flatten)]
        out: Output,
    },
    /// Save the device state (the raw stream) to FILE
    Save(save_restore::SaveArgs),
    /// Restore the device state from FILE and leave the device RUNNING
    Restore(save_restore::RestoreArgs),
    /// Live-migrate a running device (DMA and vCPU workload) between two
    /// mdevs; verify bit-exact
    Migrate(migrate::MigrateArgs),
}

impl Command {
    fn name(&self) -> &'static str {
        match self {
            Command::Types { .. } => "types",
            Command::Create { .. } => "create",
            Command::Remove { .. } => "remove",
            Command::Info { .. } => "info",
            Command::Save(_) => "save",
            Command::Restore(_) => "restore",
            Command::Migrate(_) => "migrate",
        }
    }
}

/// `--parent NAME`.
#[derive(Debug, Args)]
struct ParentArg {
    /// The mdev parent
    #[arg(long = "parent", value_name = "NAME", default_value = DEFAULT_PARENT)]
    name: String,
}

/// `--json`.
#[derive(Debug, Args)]
struct Output {
    /// Print one JSON document instead of text
    #[arg(long)]
    json: bool,
}

/// How to get at the device: open it (legacy container or iommufd), or
/// take an inherited fd.
#[derive(Debug, Args)]
struct OpenArgs {
    /// Open through the iommufd cdev instead of the legacy container
    #[arg(long, conflicts_with = "fd")]
    iommufd: bool,
    /// Use the inherited VFIO device fd N
    #[arg(long, value_name = "N", value_parser = inherited_fd)]
    fd: Option<RawFd>,
}

/// `--v2`, `--no-mmap`: which interface moves the device state, and how.
#[derive(Debug, Args)]
struct Interface {
    /// Move the state through the upstream v2 interface (data file, DMA
    /// logging) instead of the 2018 migration region
    #[arg(long)]
    v2: bool,
    /// Read and write the migration region's data and bitmap areas with
    /// pread/pwrite even when they are mmap-able
    #[arg(long, conflicts_with = "v2")]
    no_mmap: bool,
}

/// How a device's state moves: through its migration region (the 2018
/// interface; its mapped areas unless `--no-mmap`), or through v2.
fn transfer_of<'a>(
    dev: &'a Device,
    interface: &Interface,
) -> vfio_mig::Result<Box<dyn StateTransfer + 'a>> {
    if interface.v2 {
        return Ok(Box::new(V2Transfer::new(dev)));
    }
    let access = if interface.no_mmap {
        AreaAccess::ReadWrite
    } else {
        AreaAccess::MmapIfOffered
    };
    Ok(Box::new(MigrationRegionTransfer::new(dev, access)?))
}

/// The open path `--iommufd` asks for.
fn open_path(iommufd: bool) -> OpenPath {
    if iommufd {
        OpenPath::Iommufd
    } else {
        OpenPath::Legacy
    }
}

impl OpenArgs {
    /// The device `uuid`, opened the way the options say.
    fn open(&self, uuid: &str) -> Result<Device> {
        let Some(fd) = self.fd else {
            let path = open_path(self.iommufd);
            return Device::open(uuid, path).with_context(|| format!("open {uuid} ({path})"));
        };
        // SAFETY: `inherited_fd` checked that the fd is open; it was handed
        // to this process for its use, and nothing else in it owns the
        // number.
        let owned = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(Device::from_fd(owned, uuid))
    }
}

/// A size or count: decimal, `0x` hex, or with a `K`, `M` or `G` suffix.
fn parse_num(v: &str) -> Result<u64, String> {
    let bad = || format!("{v:?} is not a number (e.g. 4096, 0x1000, 4K, 1M)");
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

/// [`parse_num`] into a type it must fit.
fn number<T: TryFrom<u64>>(v: &str) -> Result<T, String> {
    T::try_from(parse_num(v)?).map_err(|_| format!("{v} is too large"))
}

/// `--fd N`: an open descriptor above 2.
fn inherited_fd(v: &str) -> Result<RawFd, String> {
    let fd: RawFd = number(v).map_err(|_| format!("{v} is not an fd number"))?;
    // SAFETY: F_GETFD only inspects the descriptor table.
    if fd < 3 || unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
        return Err(format!("{fd} is not an open file descriptor above 2"));
    }
    Ok(fd)
}

/// Prints `value` as one pretty JSON document.
fn print_json(value: &impl Serialize) -> Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

/// One type of `vfio-mig types --json`.
#[derive(Serialize)]
struct TypeEntry {
    name: String,
    attributes: TypeAttrs,
    devices: Vec<String>,
}

fn cmd_types(parent: &ParentArg, out: &Output) -> Result<()> {
    let p = Parent::new(&parent.name);
    let what = || format!("list the mdev types of {}", parent.name);
    let mut types = Vec::new();
    for name in p.types().with_context(what)? {
        let ty = p.mdev_type(&name);
        let attributes = ty
            .attrs()
            .with_context(|| format!("read the attributes of {name}"))?;
        let devices = ty
            .devices()
            .with_context(|| format!("list the mdevs of {name}"))?;
        types.push(TypeEntry {
            name,
            attributes,
            devices,
        });
    }
    if out.json {
        return print_json(&types);
    }
    for t in &types {
        let a = &t.attributes;
        println!("{}", t.name);
        println!("  name:                {}", a.name);
        println!(
            "  description:         {}",
            a.description.as_deref().unwrap_or("(none)")
        );
        println!("  device_api:          {}", a.device_api);
        println!("  available_instances: {}", a.available_instances);
        println!("  devices:             {}", t.devices.join(" "));
    }
    Ok(())
}

fn cmd_create(mdev_type: &str, uuid: Option<&str>, parent: &ParentArg) -> Result<()> {
    let ty = Parent::new(&parent.name).mdev_type(mdev_type);
    let uuid = match uuid {
        Some(u) => u.to_string(),
        None => sysfs::random_uuid().context("pick a UUID")?,
    };
    ty.create(&uuid)
        .with_context(|| format!("create {uuid} of type {mdev_type}"))?;
    println!("{uuid}");
    Ok(())
}

fn run(command: &Command) -> Result<()> {
    match command {
        Command::Types { parent, out } => cmd_types(parent, out),
        Command::Create {
            mdev_type,
            uuid,
            parent,
        } => cmd_create(mdev_type, uuid.as_deref(), parent),
        Command::Remove { uuid } => {
            sysfs::remove_mdev(uuid).with_context(|| format!("remove {uuid}"))
        }
        Command::Info { uuid, open, out } => info::run(uuid, open, out),
        Command::Save(args) => save_restore::save(args),
        Command::Restore(args) => save_restore::restore(args),
        Command::Migrate(args) => migrate::run(args),
    }
}

fn main() -> ExitCode {
    // Die quietly on a closed pipe (`vfio-mig info ... | head`), as C tools do.
    // SAFETY: restoring the default disposition of SIGPIPE before any thread
    // exists has no memory-safety preconditions.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    // Usage errors exit with 2, --help and --version with 0.
    let cli = Cli::parse();
    if let Command::Migrate(a) = &cli.command {
        if a.src.is_some() && a.src == a.dst {
            let msg = "--src and --dst must be two different mdevs";
            Cli::command()
                .error(ErrorKind::ArgumentConflict, msg)
                .exit();
        }
    }
    match run(&cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vfio-mig {}: {}", cli.command.name(), message(&e));
            ExitCode::FAILURE
        }
    }
}

/// The error and its contexts, outermost first, down to the library's
/// error, whose message already says what its own cause said.
fn message(e: &anyhow::Error) -> String {
    let mut parts = Vec::new();
    for cause in e.chain() {
        parts.push(cause.to_string());
        if cause.is::<vfio_mig::Error>() {
            break;
        }
    }
    parts.join(": ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("vfio-mig").chain(args.iter().copied()))
    }

    #[test]
    fn messages_stop_at_the_library_error() {
        let io = std::io::Error::from_raw_os_error(libc::ENOENT);
        let e = anyhow::Error::new(vfio_mig::Error::path("open", "/dev/x", io)).context("open u");
        assert_eq!(
            message(&e),
            "open u: open /dev/x failed: ENOENT (No such file or directory)"
        );
    }

    #[test]
    fn numbers() {
        assert_eq!(parse_num("4096"), Ok(4096));
        assert_eq!(parse_num("0x1000"), Ok(4096));
        assert_eq!(parse_num("4K"), Ok(4096));
        assert_eq!(parse_num("1M"), Ok(1 << 20));
        assert_eq!(parse_num("2g"), Ok(2 << 30));
        assert!(parse_num("").is_err());
        assert!(parse_num("K").is_err());
        assert!(parse_num("12x").is_err());
        assert!(parse_num("-1").is_err());
        assert!(parse_num("0xffffffffffffffffK").is_err());
        assert_eq!(number::<u32>("4G"), Err("4G is too large".to_string()));
    }

    #[test]
    fn command_line() {
        Cli::command().debug_assert();
        let cli = parse(&["save", "u", "--out=f", "--threshold", "4K", "--iommufd"]).unwrap();
        let Command::Save(a) = cli.command else {
            panic!("not save: {cli:?}");
        };
        assert_eq!((a.uuid.as_str(), a.threshold, a.precopy), ("u", 4096, 1));
        assert!(a.open.iommufd);
        let kind = |args: &[&str]| parse(args).unwrap_err().kind();
        assert_eq!(kind(&["save", "u"]), ErrorKind::MissingRequiredArgument);
        assert_eq!(
            kind(&["save", "u", "--out", "f", "--threshold", "x"]),
            ErrorKind::ValueValidation
        );
        assert_eq!(
            kind(&["info", "u", "--fd", "1"]),
            ErrorKind::ValueValidation
        );
        let open = std::fs::File::open("/dev/null").unwrap();
        let fd = std::os::fd::AsRawFd::as_raw_fd(&open).to_string();
        assert!(parse(&["info", "u", "--fd", &fd]).is_ok());
        assert_eq!(
            kind(&["info", "u", "--iommufd", "--fd", &fd]),
            ErrorKind::ArgumentConflict
        );
        assert_eq!(kind(&["bogus"]), ErrorKind::InvalidSubcommand);
        assert_eq!(
            kind(&["migrate", "--src", "a"]),
            ErrorKind::MissingRequiredArgument
        );
        assert_eq!(
            kind(&["migrate", "--create", "large", "--src", "a", "--dst", "b"]),
            ErrorKind::ArgumentConflict
        );
        assert_eq!(
            kind(&["migrate", "--create", "large", "--max-iterations", "0"]),
            ErrorKind::ValueValidation
        );
        let names: Vec<String> = Cli::command()
            .get_subcommands()
            .map(|c| c.get_name().to_string())
            .collect();
        assert_eq!(
            names,
            ["types", "create", "remove", "info", "save", "restore", "migrate"]
        );
    }
}
