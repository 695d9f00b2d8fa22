// SPDX-License-Identifier: GPL-2.0

//! `include/vfio_migration.h`, the C header for VMM authors, against
//! `rust/logic/abi.rs`, the numbers the module is built with: every
//! `#define`, every struct member's offset and size, every state, and the
//! access mode the header documents for each field. The header is both
//! parsed here and compiled with `cc` under `_Static_assert`s of the Rust
//! values, so neither a parsing slip nor a C subtlety can hide a drift.

use std::collections::HashMap;
use std::process::{Command, Output};

use crate::abi::migration::{
    DeviceState, Field, BITMAP_LEN, BITMAP_OFFSET, DATA_LEN, DATA_OFFSET, INFO_SIZE, NUM_STATES,
    REGION_SIZE, REGION_SUBTYPE, REGION_TYPE,
};
use crate::abi::GUEST_PAGE_SIZE;

const HEADER: &str = include_str!("../../../../include/vfio_migration.h");
const HEADER_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../include");

/// The `VFIO_MIG_OFF_*` macro of each field.
const FIELD_MACROS: [(Field, &str); 10] = [
    (Field::DeviceState, "VFIO_MIG_OFF_DEVICE_STATE"),
    (Field::PrecopyOnly, "VFIO_MIG_OFF_PRECOPY_ONLY"),
    (Field::Compatible, "VFIO_MIG_OFF_COMPATIBLE"),
    (Field::PostcopyOnly, "VFIO_MIG_OFF_POSTCOPY_ONLY"),
    (Field::ThresholdSize, "VFIO_MIG_OFF_THRESHOLD_SIZE"),
    (Field::DataOffset, "VFIO_MIG_OFF_DATA_OFFSET"),
    (Field::DataSize, "VFIO_MIG_OFF_DATA_SIZE"),
    (Field::DirtyStartAddr, "VFIO_MIG_OFF_DIRTY_START_ADDR"),
    (Field::DirtyTotal, "VFIO_MIG_OFF_DIRTY_TOTAL"),
    (Field::DirtyCopied, "VFIO_MIG_OFF_DIRTY_COPIED"),
];

/// Every `#define` with a value the header should have, from the Rust side.
fn rust_defines() -> Vec<(&'static str, u64)> {
    let mut v = vec![
        ("VFIO_MIG_REGION_TYPE", u64::from(REGION_TYPE)),
        ("VFIO_MIG_REGION_SUBTYPE", u64::from(REGION_SUBTYPE)),
        ("VFIO_REGION_TYPE_MIGRATION", u64::from(REGION_TYPE)),
        ("VFIO_REGION_SUBTYPE_MIGRATION", u64::from(REGION_SUBTYPE)),
        ("VFIO_MIG_INFO_SIZE", INFO_SIZE),
        ("VFIO_MIG_REGION_DATA_OFFSET", DATA_OFFSET),
        ("VFIO_MIG_DEFAULT_DATA_LEN", DATA_LEN),
        ("VFIO_MIG_DEFAULT_BITMAP_LEN", BITMAP_LEN),
        ("VFIO_MIG_DEFAULT_BITMAP_OFFSET", BITMAP_OFFSET),
        ("VFIO_MIG_DEFAULT_REGION_SIZE", REGION_SIZE),
        ("VFIO_MIG_DIRTY_PAGE_SIZE", GUEST_PAGE_SIZE),
        ("VFIO_MIG_NUM_STATES", u64::from(NUM_STATES)),
    ];
    v.extend(FIELD_MACROS.iter().map(|&(f, m)| (m, f.offset())));
    v
}

/// The C name of a state, e.g. `VFIO_DEVICE_STATE_MIGRATION_PRECOPY`.
fn state_c_name(s: DeviceState) -> String {
    format!("VFIO_DEVICE_STATE_{}", s.name())
}

/// Splits a macro body into numbers, names and the operators `(`, `)`,
/// `+` and `<<` (all the header uses).
fn tokens(s: &str) -> Vec<String> {
    let mut v = Vec::new();
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c.is_alphanumeric() || c == '_' {
            let mut word = String::from(c);
            while let Some(&d) = chars.peek().filter(|d| d.is_alphanumeric() || **d == '_') {
                word.push(d);
                chars.next();
            }
            v.push(word);
        } else if c == '<' {
            assert_eq!(chars.next(), Some('<'), "only << is supported in {s:?}");
            v.push("<<".into());
        } else if "()+".contains(c) {
            v.push(c.to_string());
        } else {
            assert!(c.is_whitespace(), "unsupported character {c:?} in {s:?}");
        }
    }
    v
}

/// A recursive-descent evaluator of macro bodies:
/// `shift := sum ('<<' sum)*`, `sum := atom ('+' atom)*`,
/// `atom := number | earlier macro | '(' shift ')'`.
struct Eval<'a> {
    toks: Vec<String>,
    at: usize,
    defs: &'a HashMap<String, u64>,
}

impl Eval<'_> {
    fn next_is(&self, op: &str) -> bool {
        self.toks.get(self.at).is_some_and(|t| t == op)
    }

    fn atom(&mut self) -> u64 {
        let tok = self.toks[self.at].clone();
        self.at += 1;
        if tok == "(" {
            let v = self.shift();
            assert!(self.next_is(")"), "unclosed parenthesis");
            self.at += 1;
            v
        } else if let Some(hex) = tok.strip_prefix("0x") {
            u64::from_str_radix(hex, 16).unwrap()
        } else if tok.chars().all(|c| c.is_ascii_digit()) {
            tok.parse().unwrap()
        } else {
            *self
                .defs
                .get(&tok)
                .unwrap_or_else(|| panic!("unknown name {tok}"))
        }
    }

    fn sum(&mut self) -> u64 {
        let mut v = self.atom();
        while self.next_is("+") {
            self.at += 1;
            v += self.atom();
        }
        v
    }

    fn shift(&mut self) -> u64 {
        let mut v = self.sum();
        while self.next_is("<<") {
            self.at += 1;
            v <<= self.sum();
        }
        v
    }
}

fn eval(body: &str, defs: &HashMap<String, u64>) -> u64 {
    let mut e = Eval {
        toks: tokens(body),
        at: 0,
        defs,
    };
    let v = e.shift();
    assert_eq!(e.at, e.toks.len(), "trailing tokens in {body:?}");
    v
}

/// The header without comments, continuation lines joined.
fn code_lines() -> Vec<String> {
    let mut code = String::new();
    let mut rest = HEADER;
    while let Some(i) = rest.find("/*") {
        code.push_str(&rest[..i]);
        let j = rest[i..].find("*/").expect("closed comment");
        rest = &rest[i + j + 2..];
    }
    code.push_str(rest);
    code.replace("\\\n", " ")
        .lines()
        .map(str::to_string)
        .collect()
}

/// Every `#define NAME VALUE` with a value, evaluated.
fn header_defines() -> HashMap<String, u64> {
    let mut d = HashMap::new();
    for l in code_lines() {
        let Some(rest) = l.trim().strip_prefix("#define") else {
            continue;
        };
        let (name, body) = rest
            .trim()
            .split_once(char::is_whitespace)
            .unwrap_or((rest, ""));
        if body.trim().is_empty() {
            continue; // include guards
        }
        let v = eval(body, &d);
        d.insert(name.trim().to_string(), v);
    }
    d
}

/// The members of the struct, dotted (`pending.compatible`), with their
/// packed offsets and sizes.
fn header_struct_members() -> Vec<(String, u64, u64)> {
    let lines = code_lines();
    let start = lines
        .iter()
        .position(|l| l.trim() == "struct vfio_device_migration_info {")
        .expect("struct in the header");
    let mut out = Vec::new();
    let mut off = 0;
    let mut inner: Vec<(String, u64, u64)> = Vec::new();
    for l in lines[start + 1..].iter().map(|l| l.trim()) {
        if l.is_empty() {
            continue;
        }
        if l == "struct {" {
            inner.clear();
            out.push((String::new(), 0, 0)); // marks an open sub-struct
        } else if l == "} __attribute__((packed));" {
            return out;
        } else if let Some(name) = l.strip_prefix("} ").and_then(|r| r.strip_suffix(';')) {
            assert_eq!(out.pop(), Some((String::new(), 0, 0)), "sub-struct closed");
            out.extend(
                inner
                    .drain(..)
                    .map(|(n, o, w)| (format!("{name}.{n}"), o, w)),
            );
        } else {
            let (ty, name) = l.split_once(' ').expect("type and name");
            let w = match ty {
                "__u32" => 4,
                "__u64" => 8,
                _ => panic!("unexpected type {ty}"),
            };
            let member = (name.trim_end_matches(';').to_string(), off, w);
            if out.last() == Some(&(String::new(), 0, 0)) {
                inner.push(member);
            } else {
                out.push(member);
            }
            off += w;
        }
    }
    panic!("struct not closed (or not packed)");
}

#[test]
fn every_define_matches() {
    let header = header_defines();
    let rust = rust_defines();
    for (name, v) in &rust {
        assert_eq!(header.get(*name), Some(v), "#define {name}");
    }
    for name in header.keys() {
        assert!(
            rust.iter().any(|(n, _)| n == name),
            "#define {name} has no Rust counterpart"
        );
    }
}

#[test]
fn struct_members_match() {
    let members = header_struct_members();
    let names: Vec<&str> = members.iter().map(|(n, _, _)| n.as_str()).collect();
    let want: Vec<&str> = Field::ALL.iter().map(|f| f.name()).collect();
    assert_eq!(names, want, "struct members in order");
    for ((name, off, w), f) in members.iter().zip(Field::ALL) {
        assert_eq!(*off, f.offset(), "offset of {name}");
        assert_eq!(*w, f.width() as u64, "size of {name}");
    }
    let (_, last_off, last_w) = members.last().unwrap();
    assert_eq!(last_off + last_w, INFO_SIZE, "sizeof the struct");
}

#[test]
fn states_match() {
    let lines = code_lines();
    let start = lines
        .iter()
        .position(|l| l.trim() == "enum {")
        .expect("enum");
    let names: Vec<String> = lines[start + 1..]
        .iter()
        .map(|l| l.trim())
        .take_while(|l| *l != "};")
        .filter(|l| !l.is_empty())
        .map(|l| l.trim_end_matches(',').to_string())
        .collect();
    let want: Vec<String> = DeviceState::ALL.into_iter().map(state_c_name).collect();
    assert_eq!(names, want, "enum members (values 0.. in order)");
    for (i, s) in DeviceState::ALL.into_iter().enumerate() {
        assert_eq!(s.raw(), i as u32);
        assert_eq!(DeviceState::from_raw(i as u32), Some(s));
    }
    assert_eq!(DeviceState::ALL.len() as u32, NUM_STATES);
    assert_eq!(DeviceState::from_raw(NUM_STATES), None);
    assert_eq!(DeviceState::from_raw(u32::MAX), None);
}

#[test]
fn access_modes_match() {
    // The struct's comment lists each field with R or RW.
    let mut modes = HashMap::new();
    for l in HEADER.lines() {
        let mut words = l.trim_start_matches([' ', '*']).split_whitespace();
        if let (Some(name), Some(mode @ ("R" | "RW"))) = (words.next(), words.next()) {
            modes.insert(name, mode == "RW");
        }
    }
    for f in Field::ALL {
        assert_eq!(modes.get(f.name()), Some(&f.writable()), "{f:?} R or RW");
    }
    assert_eq!(modes.len(), Field::ALL.len());
}

/// Runs `cc -fsyntax-only` on `src` with the header's directory on the
/// include path.
fn cc(src: &str, defines: &[&str]) -> Output {
    // One directory per call: tests run in parallel, and a directory two
    // calls shared could go between one's mkdir and its write.
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("vfio-mig-hdr-{}-{n}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("t.c");
    std::fs::write(&file, src).unwrap();
    let mut cmd = Command::new(std::env::var("CC").unwrap_or("cc".into()));
    cmd.args(["-std=c11", "-Wall", "-Wextra", "-Werror", "-pedantic"])
        .arg("-fsyntax-only")
        .arg("-I")
        .arg(HEADER_DIR);
    for d in defines {
        cmd.arg(format!("-D{d}"));
    }
    let out = cmd.arg(&file).output().expect("run cc");
    let _ = std::fs::remove_dir_all(&dir);
    out
}

#[test]
fn header_compiles_with_the_rust_values() {
    let mut src = String::from("#include <stddef.h>\n#include \"vfio_migration.h\"\n");
    src += "#define S struct vfio_device_migration_info\n";
    src += &format!("_Static_assert(sizeof(S) == {INFO_SIZE}, \"size\");\n");
    for f in Field::ALL {
        src += &format!(
            "_Static_assert(offsetof(S, {n}) == {o} && sizeof(((S *)0)->{n}) == {w}, \"{n}\");\n",
            n = f.name(),
            o = f.offset(),
            w = f.width()
        );
    }
    for (name, v) in rust_defines() {
        src += &format!("_Static_assert({name} == {v}ull, \"{name}\");\n");
    }
    for s in DeviceState::ALL {
        let name = state_c_name(s);
        src += &format!("_Static_assert({name} == {}, \"{name}\");\n", s.raw());
    }
    let out = cc(&src, &[]);
    assert!(
        out.status.success(),
        "the header with the Rust values asserted does not compile:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn header_refuses_linux_vfio_h() {
    // With <linux/vfio.h> first, the full header stops with its #error;
    // with VFIO_MIGRATION_CONSTANTS_ONLY it gives the VFIO_MIG_* names.
    let both = "#include <linux/vfio.h>\n#include \"vfio_migration.h\"\n";
    let out = cc(both, &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "linux/vfio.h + vfio_migration.h compiled"
    );
    assert!(
        err.contains("VFIO_MIGRATION_CONSTANTS_ONLY"),
        "the failure is not our #error:\n{err}"
    );
    let only = format!(
        "#include <linux/vfio.h>\n#include \"vfio_migration.h\"\n\
         _Static_assert(VFIO_MIG_REGION_TYPE == {REGION_TYPE}u, \"t\");\n\
         _Static_assert(VFIO_MIG_OFF_DIRTY_COPIED == {}, \"c\");\n\
         _Static_assert(sizeof(struct vfio_region_info_cap_type) == 16, \"linux/vfio.h\");\n",
        Field::DirtyCopied.offset()
    );
    let out = cc(&only, &["VFIO_MIGRATION_CONSTANTS_ONLY"]);
    assert!(
        out.status.success(),
        "constants-only mode does not compile with linux/vfio.h:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn abi_doc_examples_compile() {
    // The C blocks of Documentation/migration-abi.rst, against the header.
    let doc = include_str!("../../../../Documentation/migration-abi.rst");
    let mut blocks = Vec::new();
    let mut lines = doc.lines().peekable();
    while let Some(l) = lines.next() {
        if l.trim() != ".. code-block:: c" {
            continue;
        }
        let mut code = String::new();
        while let Some(l) = lines.next_if(|l| l.is_empty() || l.starts_with("   ")) {
            code += l.strip_prefix("   ").unwrap_or(l);
            code.push('\n');
        }
        blocks.push(code);
    }
    assert_eq!(blocks.len(), 2, "C blocks in migration-abi.rst");
    for b in &blocks {
        let out = cc(b, &[]);
        assert!(
            out.status.success(),
            "a C block of migration-abi.rst does not compile:\n{}\n{b}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
