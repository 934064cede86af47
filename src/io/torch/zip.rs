//! The zip container of `torch.save` (torch ≥ 1.6): a reader of the central directory for
//! STORED (uncompressed) records, zip64 included, and a writer of STORED records whose data
//! start on 64-byte boundaries (as PyTorch writes them).
//!
//! Every count, size and offset is checked against the bytes available before it is used; no
//! allocation depends on a declared size.

use std::collections::HashMap;

type R<T> = std::result::Result<T, String>;

/// One record of the archive.
#[derive(Debug, Clone)]
pub(super) struct Entry {
    /// Offset of the record's first data byte in the file.
    pub start: usize,
    /// Bytes (stored = compressed size = uncompressed size).
    pub len: usize,
    /// Compression method (0 = STORED).
    pub method: u16,
    pub crc: u32,
}

/// The records of a zip file by name.
pub(super) struct Archive<'a> {
    pub bytes: &'a [u8],
    pub entries: HashMap<String, Entry>,
}

fn rd(b: &[u8], at: usize, n: usize) -> R<&[u8]> {
    at.checked_add(n)
        .filter(|&e| e <= b.len())
        .map(|e| &b[at..e])
        .ok_or_else(|| {
            format!(
                "zip structure at byte {at} runs past the end of the file ({} bytes)",
                b.len()
            )
        })
}
fn u16_at(b: &[u8], at: usize) -> R<u16> {
    Ok(u16::from_le_bytes(rd(b, at, 2)?.try_into().unwrap()))
}
fn u32_at(b: &[u8], at: usize) -> R<u32> {
    Ok(u32::from_le_bytes(rd(b, at, 4)?.try_into().unwrap()))
}
fn u64_at(b: &[u8], at: usize) -> R<usize> {
    usize::try_from(u64::from_le_bytes(rd(b, at, 8)?.try_into().unwrap()))
        .map_err(|e| e.to_string())
}

const EOCD: u32 = 0x0605_4b50;
const EOCD64: u32 = 0x0606_4b50;
const LOCATOR64: u32 = 0x0706_4b50;
const CENTRAL: u32 = 0x0201_4b50;
const LOCAL: u32 = 0x0403_4b50;

impl<'a> Archive<'a> {
    /// Reads the central directory.
    pub fn parse(b: &'a [u8]) -> R<Archive<'a>> {
        if b.len() < 22 {
            return Err(format!(
                "a zip file of {} bytes is too short for its end record",
                b.len()
            ));
        }
        let lowest = b.len().saturating_sub(22 + 0xffff);
        let eocd = (lowest..=b.len() - 22)
            .rev()
            .find(|&i| u32_at(b, i) == Ok(EOCD))
            .ok_or("the zip end-of-central-directory record is missing (truncated file?)")?;
        let mut count = u16_at(b, eocd + 10)? as usize;
        let mut cd_size = u32_at(b, eocd + 12)? as usize;
        let mut cd_off = u32_at(b, eocd + 16)? as usize;
        if count == 0xffff || cd_size == 0xffff_ffff || cd_off == 0xffff_ffff {
            let loc = eocd.checked_sub(20).ok_or("zip64 locator missing")?;
            if u32_at(b, loc)? != LOCATOR64 {
                return Err("zip64 end-of-central-directory locator missing".into());
            }
            let e64 = u64_at(b, loc + 8)?;
            if u32_at(b, e64)? != EOCD64 {
                return Err(format!("no zip64 end record at byte {e64}"));
            }
            count = u64_at(b, e64 + 32)?;
            cd_size = u64_at(b, e64 + 40)?;
            cd_off = u64_at(b, e64 + 48)?;
        }
        let cd = rd(b, cd_off, cd_size).map_err(|_| {
            format!("the central directory (byte {cd_off}, {cd_size} bytes) lies outside the file")
        })?;
        if count > cd.len() / 46 {
            return Err(format!(
                "{count} zip entries cannot fit in a central directory of {cd_size} bytes"
            ));
        }
        let mut entries = HashMap::new();
        let mut at = 0;
        for _ in 0..count {
            if u32_at(cd, at)? != CENTRAL {
                return Err(format!(
                    "bad central directory entry at byte {}",
                    cd_off + at
                ));
            }
            let method = u16_at(cd, at + 10)?;
            let crc = u32_at(cd, at + 16)?;
            let mut csize = u32_at(cd, at + 20)? as usize;
            let mut usize_ = u32_at(cd, at + 24)? as usize;
            let (n, m, k) = (
                u16_at(cd, at + 28)? as usize,
                u16_at(cd, at + 30)? as usize,
                u16_at(cd, at + 32)? as usize,
            );
            let mut local = u32_at(cd, at + 42)? as usize;
            let name = rd(cd, at + 46, n)?;
            let name = String::from_utf8(name.to_vec())
                .map_err(|_| "a zip entry name is not UTF-8".to_string())?;
            // zip64 extra field: the 64-bit values of the fields saturated above, in order
            let mut extra = rd(cd, at + 46 + n, m)?;
            while extra.len() >= 4 {
                let (id, len) = (u16_at(extra, 0)?, u16_at(extra, 2)? as usize);
                let body = rd(extra, 4, len)?;
                if id == 1 {
                    let mut p = 0;
                    for f in [&mut usize_, &mut csize, &mut local] {
                        if *f == 0xffff_ffff {
                            *f = u64_at(body, p)?;
                            p += 8;
                        }
                    }
                }
                extra = &extra[4 + len..];
            }
            at += 46 + n + m + k;
            if method == 0 && csize != usize_ {
                return Err(format!(
                    "STORED zip entry {name:?} has compressed size {csize} != size {usize_}"
                ));
            }
            if u32_at(b, local)? != LOCAL {
                return Err(format!(
                    "zip entry {name:?}: no local header at byte {local}"
                ));
            }
            let start =
                local + 30 + u16_at(b, local + 26)? as usize + u16_at(b, local + 28)? as usize;
            rd(b, start, csize).map_err(|_| {
                format!("zip entry {name:?} ({csize} bytes at byte {start}) runs past the end of the file")
            })?;
            let e = Entry {
                start,
                len: csize,
                method,
                crc,
            };
            if entries.insert(name.clone(), e).is_some() {
                return Err(format!("the zip archive has two entries named {name:?}"));
            }
        }
        Ok(Archive { bytes: b, entries })
    }

    /// The bytes of a STORED record, CRC-checked.
    pub fn read(&self, name: &str) -> R<&'a [u8]> {
        let e = self
            .entries
            .get(name)
            .ok_or_else(|| format!("the archive has no record {name:?}"))?;
        if e.method != 0 {
            return Err(format!(
                "record {name:?} is compressed (method {}); torch.save writes STORED records only",
                e.method
            ));
        }
        let data = &self.bytes[e.start..e.start + e.len];
        let crc = crc32fast::hash(data);
        if crc != e.crc {
            return Err(format!(
                "record {name:?} is corrupt (CRC-32 {crc:08x}, the directory says {:08x})",
                e.crc
            ));
        }
        Ok(data)
    }
}

/// A STORED zip of `records` (name, bytes), each record's data starting on a 64-byte boundary.
///
/// # Errors
/// When the archive would exceed 4 GiB or 65535 records (zip64 is not written).
pub(super) fn write(records: &[(String, &[u8])]) -> R<Vec<u8>> {
    const ALIGN: usize = 64;
    let total: usize = records
        .iter()
        .map(|(n, d)| d.len() + 2 * n.len() + 200)
        .sum();
    if total >= u32::MAX as usize || records.len() >= 0xffff {
        return Err(format!(
            "{} bytes in {} records: archives over 4 GiB are not supported",
            total,
            records.len()
        ));
    }
    let mut out = Vec::with_capacity(total);
    let mut central = Vec::new();
    for (name, data) in records {
        let offset = out.len();
        let header_end = offset + 30 + name.len() + 4;
        let pad = (ALIGN - header_end % ALIGN) % ALIGN;
        let crc = crc32fast::hash(data);
        let fixed = |v: &mut Vec<u8>| {
            v.extend_from_slice(&20u16.to_le_bytes()); // version needed
            v.extend_from_slice(&0u16.to_le_bytes()); // flags
            v.extend_from_slice(&0u16.to_le_bytes()); // STORED
            v.extend_from_slice(&0u32.to_le_bytes()); // time, date
            v.extend_from_slice(&crc.to_le_bytes());
            v.extend_from_slice(&(data.len() as u32).to_le_bytes());
            v.extend_from_slice(&(data.len() as u32).to_le_bytes());
            v.extend_from_slice(&(name.len() as u16).to_le_bytes());
        };
        out.extend_from_slice(&LOCAL.to_le_bytes());
        fixed(&mut out);
        out.extend_from_slice(&((4 + pad) as u16).to_le_bytes());
        out.extend_from_slice(name.as_bytes());
        // padding extra field (id "FB", as PyTorch's writer uses)
        out.extend_from_slice(&0x4246u16.to_le_bytes());
        out.extend_from_slice(&(pad as u16).to_le_bytes());
        out.resize(out.len() + pad, b'Z');
        debug_assert_eq!(out.len() % ALIGN, 0);
        out.extend_from_slice(data);

        central.extend_from_slice(&CENTRAL.to_le_bytes());
        central.extend_from_slice(&20u16.to_le_bytes()); // version made by
        fixed(&mut central);
        central.extend_from_slice(&[0u8; 12]); // extra len, comment len, disk, internal, external attrs
        central.extend_from_slice(&(offset as u32).to_le_bytes());
        central.extend_from_slice(name.as_bytes());
    }
    let cd_off = out.len();
    out.extend_from_slice(&central);
    out.extend_from_slice(&EOCD.to_le_bytes());
    out.extend_from_slice(&[0u8; 4]); // disk numbers
    out.extend_from_slice(&(records.len() as u16).to_le_bytes());
    out.extend_from_slice(&(records.len() as u16).to_le_bytes());
    out.extend_from_slice(&(central.len() as u32).to_le_bytes());
    out.extend_from_slice(&(cd_off as u32).to_le_bytes());
    out.extend_from_slice(&0u16.to_le_bytes());
    Ok(out)
}
