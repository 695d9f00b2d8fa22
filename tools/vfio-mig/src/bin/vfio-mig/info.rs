// SPDX-License-Identifier: GPL-2.0
//! `vfio-mig info`: what a device says about itself (device, regions and
//! their capabilities, the migration region, the sample device's
//! registers, IRQs), gathered into one [`Info`] and shown as text or JSON.

use anyhow::{Context, Result};
use serde::Serialize;
use vfio_mig::abi::bar0;
use vfio_mig::abi::migration::{INFO_SIZE, REGION_SUBTYPE, REGION_TYPE};
use vfio_mig::migration::{state_name, Field};
use vfio_mig::sample::{self, Regs};
use vfio_mig::uapi::vfio;
use vfio_mig::{sysfs, Capability, Device};

use crate::{print_json, OpenArgs, Output};

/// A part that was read, or why it could not be.
#[derive(Serialize)]
#[serde(untagged)]
enum Part<T> {
    Read(T),
    Failed { error: String },
}

impl<T> Part<T> {
    fn of(r: vfio_mig::Result<T>) -> Self {
        match r {
            Ok(v) => Part::Read(v),
            Err(e) => Part::Failed {
                error: e.to_string(),
            },
        }
    }
}

/// Everything `info` shows.
#[derive(Serialize)]
struct Info {
    uuid: String,
    open_path: String,
    #[serde(rename = "type")]
    type_name: Option<String>,
    flags: u32,
    flag_names: Vec<String>,
    num_regions: u32,
    num_irqs: u32,
    regions: Vec<Indexed<RegionPart>>,
    migration: Part<MigrationPart>,
    migration_v2: Part<V2Part>,
    bar0: Bar0Part,
    irqs: Vec<Indexed<IrqPart>>,
}

/// The upstream v2 interface: flags, state, stop-copy size, DMA logging.
#[derive(Serialize)]
struct V2Part {
    flags: u64,
    flag_names: Vec<String>,
    state: String,
    stop_copy_bytes: Part<u64>,
    dma_logging: bool,
}

/// `VFIO_MIGRATION_*`.
const V2_FLAGS: [(u32, &str); 3] = [(1, "STOP_COPY"), (2, "P2P"), (4, "PRE_COPY")];

/// `VFIO_DEVICE_FEATURE_DMA_LOGGING_START`.
const DMA_LOGGING_START: u32 = 6;

/// A region or an IRQ index, with its name.
#[derive(Serialize)]
struct Indexed<T> {
    index: u32,
    name: String,
    #[serde(flatten)]
    part: Part<T>,
}

#[derive(Serialize)]
struct RegionPart {
    size: u64,
    offset: u64,
    flags: u32,
    flag_names: Vec<String>,
    caps: Vec<CapPart>,
}

/// One capability of a chain.
#[derive(Serialize)]
struct CapPart {
    id: u16,
    version: u16,
    offset: u32,
    next: u32,
    data_len: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    region_type: Option<RegionType>,
    #[serde(skip_serializing_if = "Option::is_none")]
    sparse_areas: Option<Vec<Area>>,
}

#[derive(Serialize, Clone, Copy)]
struct RegionType {
    #[serde(rename = "type")]
    ty: u32,
    subtype: u32,
}

#[derive(Serialize)]
struct Area {
    offset: u64,
    size: u64,
}

impl CapPart {
    fn of(c: &Capability) -> Self {
        CapPart {
            id: c.id,
            version: c.version,
            offset: c.offset,
            next: c.next,
            data_len: c.data.len(),
            region_type: c
                .region_type()
                .map(|(ty, subtype)| RegionType { ty, subtype }),
            sparse_areas: c.sparse_areas().map(|a| {
                a.into_iter()
                    .map(|(offset, size)| Area { offset, size })
                    .collect()
            }),
        }
    }
}

#[derive(Serialize)]
struct MigrationPart {
    index: u32,
    offset: u64,
    size: u64,
    data_offset: u64,
    data_len: u64,
    bitmap_offset: u64,
    bitmap_len: u64,
    /// The data and bitmap areas are mmap-able (sparse-mmap capability).
    mmap: bool,
    cap_offset: u32,
    argsz: u32,
    caps: Vec<CapPart>,
    device_state: Part<u32>,
    fields: Vec<FieldPart>,
}

/// A field of the migration region; `value` is not read when reading it
/// would be an action.
#[derive(Serialize)]
struct FieldPart {
    name: &'static str,
    offset: u64,
    width: usize,
    writable: bool,
    read_is_action: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    value: Option<Part<u64>>,
}

/// The sample device's BAR0, or why there is none to show.
#[derive(Serialize)]
#[serde(tag = "status", rename_all = "snake_case")]
enum Bar0Part {
    Unreadable {
        error: String,
    },
    NotSample {
        id: u32,
    },
    RegistersUnreadable {
        error: String,
    },
    Sample {
        registers: Vec<Register>,
        /// The module-wide count from debugfs.
        pinned_pages_total: Part<u64>,
        #[serde(skip)]
        dwords: Vec<u32>,
    },
}

#[derive(Serialize)]
struct Register {
    name: &'static str,
    offset: u32,
    value: u32,
}

#[derive(Serialize)]
struct IrqPart {
    count: u32,
    flags: u32,
    flag_names: Vec<String>,
}

const DEVICE_FLAGS: [(u32, &str); 8] = [
    (vfio::VFIO_DEVICE_FLAGS_RESET, "RESET"),
    (vfio::VFIO_DEVICE_FLAGS_PCI, "PCI"),
    (vfio::VFIO_DEVICE_FLAGS_PLATFORM, "PLATFORM"),
    (vfio::VFIO_DEVICE_FLAGS_AMBA, "AMBA"),
    (vfio::VFIO_DEVICE_FLAGS_CCW, "CCW"),
    (vfio::VFIO_DEVICE_FLAGS_AP, "AP"),
    (vfio::VFIO_DEVICE_FLAGS_FSL_MC, "FSL_MC"),
    (vfio::VFIO_DEVICE_FLAGS_CAPS, "CAPS"),
];

const REGION_FLAGS: [(u32, &str); 4] = [
    (vfio::VFIO_REGION_INFO_FLAG_READ, "READ"),
    (vfio::VFIO_REGION_INFO_FLAG_WRITE, "WRITE"),
    (vfio::VFIO_REGION_INFO_FLAG_MMAP, "MMAP"),
    (vfio::VFIO_REGION_INFO_FLAG_CAPS, "CAPS"),
];

const IRQ_FLAGS: [(u32, &str); 4] = [
    (vfio::VFIO_IRQ_INFO_EVENTFD, "EVENTFD"),
    (vfio::VFIO_IRQ_INFO_MASKABLE, "MASKABLE"),
    (vfio::VFIO_IRQ_INFO_AUTOMASKED, "AUTOMASKED"),
    (vfio::VFIO_IRQ_INFO_NORESIZE, "NORESIZE"),
];

/// The names of the bits set in `flags`, and the unknown rest in hex.
fn flag_list(flags: u32, names: &[(u32, &str)]) -> Vec<String> {
    let mut v: Vec<String> = names
        .iter()
        .filter(|(bit, _)| flags & bit != 0)
        .map(|(_, n)| n.to_string())
        .collect();
    let rest = names.iter().fold(flags, |f, (bit, _)| f & !bit);
    if rest != 0 {
        v.push(format!("{rest:#x}"));
    }
    v
}

/// `RESET|PCI`, or `none`.
fn flag_text(names: &[String]) -> String {
    if names.is_empty() {
        "none".into()
    } else {
        names.join("|")
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

pub fn run(uuid: &str, open: &OpenArgs, out: &Output) -> Result<()> {
    let dev = open.open(uuid)?;
    let info = gather(&dev).with_context(|| format!("read the info of {uuid}"))?;
    if out.json {
        return print_json(&info);
    }
    print_device(&info);
    if let Part::Read(m) = &info.migration {
        print_migration(m);
    } else if let Part::Failed { error } = &info.migration {
        println!("migration: {error}");
    }
    print_v2(&info.migration_v2);
    print_bar0(&info.bar0);
    for i in &info.irqs {
        match &i.part {
            Part::Read(p) => println!(
                "irq {} {}: count {} flags {:#x} ({})",
                i.index,
                i.name,
                p.count,
                p.flags,
                flag_text(&p.flag_names)
            ),
            Part::Failed { error } => println!("irq {} {}: {error}", i.index, i.name),
        }
    }
    Ok(())
}

/// Reads everything; only `VFIO_DEVICE_GET_INFO` itself may fail, the rest
/// records its errors in place.
fn gather(dev: &Device) -> vfio_mig::Result<Info> {
    let info = dev.info()?;
    let regions = (0..info.num_regions)
        .map(|index| Indexed {
            index,
            name: region_name(index),
            part: Part::of(dev.region_info(index)).map(|r| RegionPart {
                size: r.size,
                offset: r.offset,
                flags: r.flags,
                flag_names: flag_list(r.flags, &REGION_FLAGS),
                caps: r.caps.iter().map(CapPart::of).collect(),
            }),
        })
        .collect();
    let irqs = (0..info.num_irqs)
        .map(|index| Indexed {
            index,
            name: irq_name(index).to_string(),
            part: Part::of(dev.irq_info(index)).map(|i| IrqPart {
                count: i.count,
                flags: i.flags,
                flag_names: flag_list(i.flags, &IRQ_FLAGS),
            }),
        })
        .collect();
    Ok(Info {
        uuid: dev.uuid().to_string(),
        open_path: dev.open_path().to_string(),
        type_name: sysfs::mdev_type_name(dev.uuid()).ok(),
        flags: info.flags,
        flag_names: flag_list(info.flags, &DEVICE_FLAGS),
        num_regions: info.num_regions,
        num_irqs: info.num_irqs,
        regions,
        migration: gather_migration(dev),
        migration_v2: Part::of(gather_v2(dev)),
        bar0: gather_bar0(dev),
        irqs,
    })
}

impl<T> Part<T> {
    fn map<U>(self, f: impl FnOnce(T) -> U) -> Part<U> {
        match self {
            Part::Read(v) => Part::Read(f(v)),
            Part::Failed { error } => Part::Failed { error },
        }
    }
}

/// Reads the v2 side; only the flags may fail (`ENOTTY`: no v2).
fn gather_v2(dev: &Device) -> vfio_mig::Result<V2Part> {
    let flags = dev.v2_flags()?;
    Ok(V2Part {
        flags,
        flag_names: flag_list(flags as u32, &V2_FLAGS),
        state: match dev.v2_state() {
            Ok(s) => s.to_string(),
            Err(e) => e.to_string(),
        },
        stop_copy_bytes: Part::of(dev.v2_data_size()),
        dma_logging: dev.feature_probe(DMA_LOGGING_START).is_ok(),
    })
}

fn print_v2(p: &Part<V2Part>) {
    let v = match p {
        Part::Read(v) => v,
        Part::Failed { error } => return println!("migration v2: {error}"),
    };
    println!(
        "migration v2: flags {:#x} ({}), state {}, DMA logging {}",
        v.flags,
        flag_text(&v.flag_names),
        v.state,
        if v.dma_logging { "yes" } else { "no" }
    );
    match &v.stop_copy_bytes {
        Part::Read(n) => println!("  stop-copy size now: {n} bytes"),
        Part::Failed { error } => println!("  stop-copy size: {error}"),
    }
}

fn gather_migration(dev: &Device) -> Part<MigrationPart> {
    let r = match dev.migration_region() {
        Ok(r) => r,
        Err(e) => return Part::of(Err(e)),
    };
    let i = &r.info;
    // Plain fields only: reading data.size or dirty_pfns.copied is an action.
    let fields = Field::ALL
        .into_iter()
        .map(|f| FieldPart {
            name: f.name(),
            offset: f.offset(),
            width: f.width(),
            writable: f.writable(),
            read_is_action: f.read_is_action(),
            value: (!f.read_is_action()).then(|| Part::of(dev.read_field(f))),
        })
        .collect();
    Part::Read(MigrationPart {
        index: i.index,
        offset: i.offset,
        size: i.size,
        data_offset: r.data_offset,
        data_len: r.data_len,
        bitmap_offset: r.bitmap_offset,
        bitmap_len: r.bitmap_len,
        mmap: r.mmap,
        cap_offset: i.cap_offset,
        argsz: i.argsz,
        caps: i.caps.iter().map(CapPart::of).collect(),
        device_state: Part::of(dev.device_state_raw()),
        fields,
    })
}

/// The sample device's registers and the module's pinned-page count;
/// nothing for another device (mtty).
fn gather_bar0(dev: &Device) -> Bar0Part {
    let regs = Regs(dev);
    match regs.read(bar0::ID) {
        Ok(bar0::ID_VALUE) => {}
        Ok(id) => return Bar0Part::NotSample { id },
        Err(e) => {
            return Bar0Part::Unreadable {
                error: e.to_string(),
            }
        }
    }
    let dwords = match regs.snapshot() {
        Ok(r) => r,
        Err(e) => {
            return Bar0Part::RegistersUnreadable {
                error: e.to_string(),
            }
        }
    };
    let registers = bar0::REGISTERS
        .iter()
        .map(|&(offset, name)| Register {
            name,
            offset,
            value: dwords[(offset / 4) as usize],
        })
        .collect();
    Bar0Part::Sample {
        registers,
        pinned_pages_total: Part::of(sample::pinned_pages_total()),
        dwords,
    }
}

fn print_device(info: &Info) {
    println!("device {} ({})", info.uuid, info.open_path);
    if let Some(t) = &info.type_name {
        println!("  type {t}");
    }
    println!(
        "  flags {:#x} ({}), {} regions, {} irqs",
        info.flags,
        flag_text(&info.flag_names),
        info.num_regions,
        info.num_irqs
    );
    for r in &info.regions {
        let p = match &r.part {
            Part::Read(p) => p,
            Part::Failed { error } => {
                println!("region {} {}: {error}", r.index, r.name);
                continue;
            }
        };
        println!(
            "region {} {}: size {:#x} offset {:#x} flags {:#x} ({})",
            r.index,
            r.name,
            p.size,
            p.offset,
            p.flags,
            flag_text(&p.flag_names)
        );
        print_region_caps(r.index, p);
    }
}

fn print_region_caps(index: u32, p: &RegionPart) {
    for c in &p.caps {
        let what = if let Some(t) = c.region_type {
            let known = if (t.ty, t.subtype) == (REGION_TYPE, REGION_SUBTYPE) {
                " (migration, 2018 RFC)"
            } else {
                ""
            };
            format!("TYPE type {:#x} subtype {}{known}", t.ty, t.subtype)
        } else if let Some(areas) = &c.sparse_areas {
            let a: Vec<String> = areas
                .iter()
                .map(|a| format!("{:#x}+{:#x}", a.offset, a.size))
                .collect();
            format!("SPARSE_MMAP {}", a.join(" "))
        } else {
            format!("{} bytes", c.data_len)
        };
        println!(
            "  cap id {} version {} at {:#x}: {what}",
            c.id, c.version, c.offset
        );
    }
    if index == 9 && p.size > 0 {
        match p.caps.iter().find_map(|c| c.region_type) {
            Some(t) => println!("  migration region: type {:#x} subtype {}", t.ty, t.subtype),
            None => println!("  migration region: no VFIO_REGION_INFO_CAP_TYPE"),
        }
    }
}

/// The migration region's layout, capability chain, state and fields.
fn print_migration(m: &MigrationPart) {
    println!(
        "migration region {} at file offset {:#x}, size {:#x}:",
        m.index, m.offset, m.size
    );
    println!(
        "  {:#08x}..{:#08x}  struct vfio_device_migration_info (packed)",
        0, INFO_SIZE
    );
    println!(
        "  {:#08x}..{:#08x}  reserved (EINVAL)",
        INFO_SIZE, m.data_offset
    );
    println!(
        "  {:#08x}..{:#08x}  data area, {:#x} bytes",
        m.data_offset,
        m.data_offset + m.data_len,
        m.data_len
    );
    println!(
        "  {:#08x}..{:#08x}  dirty bitmap area, {:#x} bytes (BITMAP_LEN assumed: the ABI does \
         not report the split)",
        m.bitmap_offset,
        m.bitmap_offset + m.bitmap_len,
        m.bitmap_len
    );
    println!(
        "  data and bitmap areas mmap-able: {}",
        if m.mmap { "yes" } else { "no" }
    );
    println!(
        "  cap chain: cap_offset {:#x}, argsz {}",
        m.cap_offset, m.argsz
    );
    for c in &m.caps {
        let what = match c.region_type {
            Some(t) => format!(
                "VFIO_REGION_INFO_CAP_TYPE type {:#x} subtype {}",
                t.ty, t.subtype
            ),
            None => match &c.sparse_areas {
                Some(areas) => {
                    let list: Vec<String> = areas
                        .iter()
                        .map(|a| format!("{:#x}+{:#x}", a.offset, a.size))
                        .collect();
                    format!("VFIO_REGION_INFO_CAP_SPARSE_MMAP {}", list.join(", "))
                }
                None => format!("{} bytes", c.data_len),
            },
        };
        println!(
            "    id {} version {} at {:#x}, next {:#x}: {what}",
            c.id, c.version, c.offset, c.next
        );
    }
    match &m.device_state {
        Part::Read(v) => println!("  device_state {v} ({})", state_name(*v)),
        Part::Failed { error } => println!("  device_state: {error}"),
    }
    for f in &m.fields {
        let access = if f.writable { "RW" } else { "R " };
        let value = match &f.value {
            None => "(reading it is an action)".to_string(),
            Some(Part::Read(v)) => format!("{v:#x}"),
            Some(Part::Failed { error }) => error.clone(),
        };
        println!(
            "  {:#04x} {} {access} {:<24} {value}",
            f.offset, f.width, f.name
        );
    }
}

fn print_bar0(b: &Bar0Part) {
    let (dwords, pinned_total) = match b {
        Bar0Part::Unreadable { error } => return println!("BAR0: {error}"),
        Bar0Part::NotSample { id } => {
            return println!("BAR0 ID {id:#x}: not a vfio-mig-sample device, no DMA engine")
        }
        Bar0Part::RegistersUnreadable { error } => return println!("BAR0 registers: {error}"),
        Bar0Part::Sample {
            dwords,
            pinned_pages_total,
            ..
        } => (dwords, pinned_pages_total),
    };
    println!("BAR0 registers:");
    for row in bar0::REGISTERS.chunks(4) {
        let cells: Vec<String> = row
            .iter()
            .map(|(off, name)| format!("{name:<13} {:#010x}", dwords[(off / 4) as usize]))
            .collect();
        println!("  {}", cells.join("  "));
    }
    print_engine(dwords);
    match pinned_total {
        Part::Read(n) => println!(
            "module: {n} guest pages pinned ({})",
            sample::PINNED_PAGES_DEBUGFS
        ),
        Part::Failed { error } => println!("module: pinned pages unknown: {error}"),
    }
}

/// The DMA engine, the ring and the background writer, from BAR0 dwords.
fn print_engine(r: &[u32]) {
    let v = |off: u32| r[(off / 4) as usize];
    let iova = |lo: u32| u64::from(v(lo)) | u64::from(v(lo + 4)) << 32;
    let on = |b: bool| if b { "on" } else { "off" };
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
}
