//! Cheap structural checks that a cached DB file is whole, so a degraded-mode scan never runs on
//! a truncated or damaged DB: bbolt's meta pages (magic, version, checksum, high-water mark
//! against the file length) for trivy.db, and SQLite's header (page size × page count) for
//! trivy-java.db. No page beyond the headers is read.

use std::fs::File;
use std::io::Read;
use std::path::Path;

const BOLT_MAGIC: u32 = 0xED0C_DAED;
const BOLT_VERSION: u32 = 2;
const BOLT_PAGE_HEADER: usize = 16;
/// magic, version, pageSize, flags (4×4), root bucket (16), freelist, pgid, txid (3×8).
const BOLT_META_BEFORE_CHECKSUM: usize = 16 + 16 + 24;

/// Why a DB file is not usable.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Damage {
    #[error("cannot read it: {0}")]
    Unreadable(String),
    #[error("not a bbolt database (no valid meta page)")]
    NotBolt,
    #[error("truncated: {len} bytes, the database needs {needed}")]
    Truncated { len: u64, needed: u64 },
    #[error("not an SQLite database")]
    NotSqlite,
}

fn read_prefix(path: &Path, max: usize) -> Result<(Vec<u8>, u64), Damage> {
    let mut file = File::open(path).map_err(|e| Damage::Unreadable(e.to_string()))?;
    let len = file
        .metadata()
        .map_err(|e| Damage::Unreadable(e.to_string()))?
        .len();
    let mut buf = Vec::with_capacity(max);
    file.by_ref()
        .take(max as u64)
        .read_to_end(&mut buf)
        .map_err(|e| Damage::Unreadable(e.to_string()))?;
    Ok((buf, len))
}

fn fnv64a(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

/// A valid bbolt meta page at `offset`: its page size and high-water mark (pages in use).
fn bolt_meta(buf: &[u8], offset: usize) -> Option<(u64, u64)> {
    let meta = buf.get(
        offset + BOLT_PAGE_HEADER..offset + BOLT_PAGE_HEADER + BOLT_META_BEFORE_CHECKSUM + 8,
    )?;
    let u32_at = |i: usize| u32::from_le_bytes(meta[i..i + 4].try_into().unwrap());
    let u64_at = |i: usize| u64::from_le_bytes(meta[i..i + 8].try_into().unwrap());
    if u32_at(0) != BOLT_MAGIC || u32_at(4) != BOLT_VERSION {
        return None;
    }
    if fnv64a(&meta[..BOLT_META_BEFORE_CHECKSUM]) != u64_at(BOLT_META_BEFORE_CHECKSUM) {
        return None;
    }
    Some((u64::from(u32_at(8)), u64_at(40)))
}

/// Checks trivy.db: a valid meta page whose high-water mark fits in the file.
pub fn check_bolt(path: &Path) -> Result<(), Damage> {
    let (buf, len) = read_prefix(path, 64 * 1024 + 4096)?;
    let first = bolt_meta(&buf, 0).ok_or(Damage::NotBolt);
    let page_size = match first {
        Ok((size, _)) => size as usize,
        Err(_) => 4096,
    };
    let metas = [first.ok(), bolt_meta(&buf, page_size)];
    let (size, high_water) = metas
        .into_iter()
        .flatten()
        .max_by_key(|(_, hwm)| *hwm)
        .ok_or(Damage::NotBolt)?;
    let needed = size * high_water;
    if len < needed {
        return Err(Damage::Truncated { len, needed });
    }
    Ok(())
}

/// Checks trivy-java.db: SQLite's header and, when the header's page count is current, the
/// file length it implies.
pub fn check_sqlite(path: &Path) -> Result<(), Damage> {
    let (buf, len) = read_prefix(path, 100)?;
    if buf.len() < 100 || &buf[..16] != b"SQLite format 3\0" {
        return Err(Damage::NotSqlite);
    }
    let be32 = |i: usize| u32::from_be_bytes(buf[i..i + 4].try_into().unwrap());
    let page_size = match u16::from_be_bytes([buf[16], buf[17]]) {
        1 => 65536u64,
        n => u64::from(n),
    };
    let (change_counter, pages, valid_for) = (be32(24), be32(28), be32(92));
    if change_counter == valid_for && pages > 0 {
        let needed = page_size * u64::from(pages);
        if len < needed {
            return Err(Damage::Truncated { len, needed });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A two-meta-page bbolt header as Go's bbolt writes it.
    fn bolt_file(page_size: u32, high_water: u64, pages_written: u64) -> Vec<u8> {
        let mut file = vec![0u8; (page_size as u64 * pages_written) as usize];
        for (page, txid) in [(0usize, 0u64), (1, 1)] {
            let mut meta = Vec::new();
            meta.extend(BOLT_MAGIC.to_le_bytes());
            meta.extend(BOLT_VERSION.to_le_bytes());
            meta.extend(page_size.to_le_bytes());
            meta.extend(0u32.to_le_bytes());
            meta.extend(3u64.to_le_bytes()); // root bucket page
            meta.extend(0u64.to_le_bytes()); // sequence
            meta.extend(2u64.to_le_bytes()); // freelist page
            meta.extend(high_water.to_le_bytes());
            meta.extend(txid.to_le_bytes());
            let checksum = fnv64a(&meta);
            meta.extend(checksum.to_le_bytes());
            let start = page * page_size as usize + BOLT_PAGE_HEADER;
            file[start..start + meta.len()].copy_from_slice(&meta);
        }
        file
    }

    #[test]
    fn bolt_files_whole_truncated_and_foreign() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("trivy.db");
        std::fs::write(&path, bolt_file(4096, 6, 6)).unwrap();
        assert_eq!(check_bolt(&path), Ok(()));
        std::fs::write(&path, bolt_file(4096, 6, 4)).unwrap();
        assert_eq!(
            check_bolt(&path),
            Err(Damage::Truncated {
                len: 4 * 4096,
                needed: 6 * 4096
            })
        );
        let mut corrupt = bolt_file(4096, 6, 6);
        corrupt[16 + 40] ^= 0xff; // first meta's high-water mark, checksum now wrong
        corrupt[4096 + 16 + 40] ^= 0xff;
        std::fs::write(&path, corrupt).unwrap();
        assert_eq!(check_bolt(&path), Err(Damage::NotBolt));
        std::fs::write(&path, b"").unwrap();
        assert_eq!(check_bolt(&path), Err(Damage::NotBolt));
        assert!(matches!(
            check_bolt(&dir.path().join("missing")),
            Err(Damage::Unreadable(_))
        ));
    }

    #[test]
    fn sqlite_header_and_length() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("trivy-java.db");
        let mut header = vec![0u8; 100];
        header[..16].copy_from_slice(b"SQLite format 3\0");
        header[16..18].copy_from_slice(&4096u16.to_be_bytes());
        header[24..28].copy_from_slice(&7u32.to_be_bytes());
        header[28..32].copy_from_slice(&3u32.to_be_bytes());
        header[92..96].copy_from_slice(&7u32.to_be_bytes());
        let mut whole = header.clone();
        whole.resize(3 * 4096, 0);
        std::fs::write(&path, &whole).unwrap();
        assert_eq!(check_sqlite(&path), Ok(()));
        std::fs::write(&path, &whole[..4096]).unwrap();
        assert_eq!(
            check_sqlite(&path),
            Err(Damage::Truncated {
                len: 4096,
                needed: 3 * 4096
            })
        );
        std::fs::write(&path, b"not sqlite at all, but long enough to hold a header of one hundred bytes..............").unwrap();
        assert_eq!(check_sqlite(&path), Err(Damage::NotSqlite));
    }
}
