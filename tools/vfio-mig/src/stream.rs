// SPDX-License-Identifier: GPL-2.0
//! A look inside a saved device-state stream (Documentation/migration-stream.rst).
//!
//! Saving and restoring treat the stream as opaque bytes; only the device
//! produces and checks it. This module only walks a stream's structure, as
//! the format allows a tool to (every record says its tag and length): for
//! `vfio-mig save` to print a summary and for tests to find where to damage
//! a stream. It does not verify the checksum or the device's register blob.

use std::fmt;

use crate::abi::stream::{
    END_BODY_LEN, HEADER_LEN, HEADER_MEMORY_SIZE, HEADER_PAGE_SIZE, HEADER_REGISTER_LEN,
    HEADER_TYPE_ID, HEADER_VERSION, MAGIC, PAGE_BODY_LEN, RECORD_HEAD_LEN, TAG_END, TAG_PAGE,
    TAG_REGS,
};

/// The stream header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Format version.
    pub version: u32,
    /// The module's mdev type id.
    pub type_id: u32,
    /// Device memory size in bytes.
    pub mem_size: u64,
    /// Page size.
    pub page_size: u32,
    /// Register-state length `R` (the register record is `8 + R` bytes).
    pub reg_len: u32,
}

/// The kind of a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `PAGE`, with the page index.
    Page(u64),
    /// `REGS`.
    Regs,
    /// `END.`, with `L` (the stream bytes before it).
    End(u64),
}

/// One record: where it starts in the stream, its total length, its kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record {
    pub offset: usize,
    pub len: usize,
    pub kind: Kind,
}

/// A stream's structure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    pub header: Header,
    pub records: Vec<Record>,
}

impl Layout {
    /// The page records.
    pub fn pages(&self) -> impl Iterator<Item = &Record> {
        self.records
            .iter()
            .filter(|r| matches!(r.kind, Kind::Page(_)))
    }

    /// The register record.
    pub fn regs(&self) -> Option<&Record> {
        self.records.iter().find(|r| r.kind == Kind::Regs)
    }

    /// The end record.
    pub fn end(&self) -> Option<&Record> {
        self.records.iter().find(|r| matches!(r.kind, Kind::End(_)))
    }
}

impl fmt::Display for Layout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let h = &self.header;
        write!(
            f,
            "version {}, type id {}, memory {:#x} bytes, page size {}, {} page records, \
             register record {} bytes",
            h.version,
            h.type_id,
            h.mem_size,
            h.page_size,
            self.pages().count(),
            RECORD_HEAD_LEN + h.reg_len as usize
        )
    }
}

fn u32_at(b: &[u8], off: usize) -> u32 {
    u32::from_le_bytes(b[off..off + 4].try_into().unwrap())
}

fn u64_at(b: &[u8], off: usize) -> u64 {
    u64::from_le_bytes(b[off..off + 8].try_into().unwrap())
}

/// Walks a whole stream: header, records, end record, nothing after.
/// Fails with a description of the first thing that does not fit.
pub fn walk(s: &[u8]) -> Result<Layout, String> {
    let header = read_header(s)?;
    let mut records = Vec::new();
    let mut off = HEADER_LEN;
    loop {
        let r = read_record(s, off, &header)?;
        records.push(r);
        off += r.len;
        if matches!(r.kind, Kind::End(_)) {
            if off != s.len() {
                return Err(format!(
                    "{} bytes after the end record at {:#x}",
                    s.len() - off,
                    r.offset
                ));
            }
            return Ok(Layout { header, records });
        }
    }
}

fn read_header(s: &[u8]) -> Result<Header, String> {
    if s.len() < HEADER_LEN {
        return Err(format!("{} bytes: shorter than the header", s.len()));
    }
    if s[..MAGIC.len()] != MAGIC {
        return Err(format!("bad magic {:02x?}", &s[..MAGIC.len()]));
    }
    Ok(Header {
        version: u32_at(s, HEADER_VERSION),
        type_id: u32_at(s, HEADER_TYPE_ID),
        mem_size: u64_at(s, HEADER_MEMORY_SIZE),
        page_size: u32_at(s, HEADER_PAGE_SIZE),
        reg_len: u32_at(s, HEADER_REGISTER_LEN),
    })
}

/// The record at `off`, checked against its tag's body length.
fn read_record(s: &[u8], off: usize, header: &Header) -> Result<Record, String> {
    if off + RECORD_HEAD_LEN > s.len() {
        return Err(format!(
            "truncated: record head at {off:#x} runs past the end"
        ));
    }
    let tag = u32_at(s, off);
    let body = u32_at(s, off + 4) as usize;
    let want = match tag {
        TAG_PAGE => PAGE_BODY_LEN,
        TAG_REGS => header.reg_len as usize,
        TAG_END => END_BODY_LEN,
        _ => {
            return Err(format!(
                "unknown tag {:02x?} at {off:#x}",
                tag.to_le_bytes()
            ))
        }
    };
    if body != want {
        return Err(format!(
            "record {:?} at {off:#x} has body length {body}, want {want}",
            String::from_utf8_lossy(&tag.to_le_bytes())
        ));
    }
    let len = RECORD_HEAD_LEN + body;
    if off + len > s.len() {
        return Err(format!("truncated: record at {off:#x} runs past the end"));
    }
    // Page and end records start their body with a u64: the page index, the
    // stream length before the end record.
    let kind = match tag {
        TAG_PAGE => Kind::Page(u64_at(s, off + RECORD_HEAD_LEN)),
        TAG_REGS => Kind::Regs,
        _ => Kind::End(u64_at(s, off + RECORD_HEAD_LEN)),
    };
    Ok(Record {
        offset: off,
        len,
        kind,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stream with `pages` page records and an `r`-byte register blob
    /// (the checksum is not computed: the walker does not check it).
    fn fake(pages: u64, r: u32) -> Vec<u8> {
        let mut s = Vec::new();
        s.extend_from_slice(&MAGIC);
        s.extend_from_slice(&1u32.to_le_bytes());
        s.extend_from_slice(&1u32.to_le_bytes());
        s.extend_from_slice(&(pages * 4096).to_le_bytes());
        s.extend_from_slice(&4096u32.to_le_bytes());
        s.extend_from_slice(&r.to_le_bytes());
        for i in 0..pages {
            s.extend_from_slice(b"PAGE");
            s.extend_from_slice(&(PAGE_BODY_LEN as u32).to_le_bytes());
            s.extend_from_slice(&i.to_le_bytes());
            s.extend_from_slice(&[i as u8; 4096]);
        }
        s.extend_from_slice(b"REGS");
        s.extend_from_slice(&r.to_le_bytes());
        s.extend(std::iter::repeat_n(0xab, r as usize));
        let l = s.len() as u64;
        s.extend_from_slice(b"END.");
        s.extend_from_slice(&(END_BODY_LEN as u32).to_le_bytes());
        s.extend_from_slice(&l.to_le_bytes());
        s.extend_from_slice(&[0; 16]);
        s
    }

    #[test]
    fn walks_a_stream() {
        let s = fake(3, 280);
        let l = walk(&s).unwrap();
        assert_eq!(l.header.reg_len, 280);
        assert_eq!(l.header.mem_size, 3 * 4096);
        assert_eq!(l.pages().count(), 3);
        assert_eq!(l.records[1].offset, HEADER_LEN + 4112);
        assert_eq!(l.records[1].kind, Kind::Page(1));
        let regs = l.regs().unwrap();
        assert_eq!((regs.offset, regs.len), (HEADER_LEN + 3 * 4112, 288));
        let end = l.end().unwrap();
        assert_eq!(end.kind, Kind::End(end.offset as u64));
        assert_eq!(end.offset + end.len, s.len());
        assert!(l
            .to_string()
            .contains("3 page records, register record 288 bytes"));
    }

    #[test]
    fn rejects_damage() {
        let s = fake(2, 16);
        assert!(walk(&s[..s.len() - 1]).unwrap_err().contains("truncated"));
        assert!(walk(&s[..20]).unwrap_err().contains("header"));
        let mut long = s.clone();
        long.push(0);
        assert!(walk(&long).unwrap_err().contains("after the end record"));
        let mut bad = s.clone();
        bad[0] ^= 0xff;
        assert!(walk(&bad).unwrap_err().contains("magic"));
        let mut bad = s.clone();
        bad[HEADER_LEN + 4] ^= 1;
        assert!(walk(&bad).unwrap_err().contains("body length"));
        let mut bad = s;
        bad[HEADER_LEN] = b'X';
        assert!(walk(&bad).unwrap_err().contains("unknown tag"));
    }
}
