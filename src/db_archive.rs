//! Unpacks a DB artifact's `db.tar.gz` (or `javadb.tar.gz`) from a hostile source: only the
//! expected regular files, no links, no paths outside the target, and a size limit so a tar
//! bomb cannot fill the disk.

use std::fs::File;
use std::io::{self, Read};
use std::path::Path;

use flate2::read::GzDecoder;

use crate::db_cache::db_file_name;
use crate::mirrors::DbKind;

/// Why an archive was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ArchiveError {
    #[error("unexpected entry '{0}' (only {1} and metadata.json are allowed)")]
    UnexpectedEntry(String, &'static str),
    #[error("entry '{0}' is not a regular file")]
    NotARegularFile(String),
    #[error("unpacks to more than {0} bytes")]
    TooLarge(u64),
    #[error("{0} is missing from the archive")]
    Missing(&'static str),
    #[error("damaged archive: {0}")]
    Damaged(String),
}

/// Extracts `archive` into `dir` (which must exist), writing at most `max_bytes` in all.
pub fn extract(
    kind: DbKind,
    archive: &Path,
    dir: &Path,
    max_bytes: u64,
) -> Result<(), ArchiveError> {
    let file = File::open(archive).map_err(|e| ArchiveError::Damaged(e.to_string()))?;
    let mut tar = tar::Archive::new(GzDecoder::new(io::BufReader::new(file)));
    let expected = db_file_name(kind);
    let mut written = 0u64;
    let mut found_db = false;
    let mut found_metadata = false;
    let entries = tar
        .entries()
        .map_err(|e| ArchiveError::Damaged(e.to_string()))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| ArchiveError::Damaged(e.to_string()))?;
        let raw = entry.path_bytes().into_owned();
        let name = String::from_utf8_lossy(&raw).into_owned();
        let clean = name.trim_start_matches("./");
        if clean.is_empty() && entry.header().entry_type().is_dir() {
            continue;
        }
        let target = match clean {
            n if n == expected => &mut found_db,
            "metadata.json" => &mut found_metadata,
            _ => return Err(ArchiveError::UnexpectedEntry(name, expected)),
        };
        if !entry.header().entry_type().is_file() {
            return Err(ArchiveError::NotARegularFile(name));
        }
        if *target {
            return Err(ArchiveError::UnexpectedEntry(
                format!("{name} (twice)"),
                expected,
            ));
        }
        *target = true;
        let mut out =
            File::create(dir.join(clean)).map_err(|e| ArchiveError::Damaged(e.to_string()))?;
        written += copy_within(&mut entry, &mut out, written, max_bytes)?;
    }
    if !found_db {
        return Err(ArchiveError::Missing(expected));
    }
    if !found_metadata {
        return Err(ArchiveError::Missing("metadata.json"));
    }
    Ok(())
}

/// Copies one entry, refusing to take the total past `max_bytes`; returns the bytes copied.
pub fn copy_within(
    entry: &mut impl Read,
    out: &mut impl io::Write,
    written: u64,
    max_bytes: u64,
) -> Result<u64, ArchiveError> {
    let budget = max_bytes.saturating_sub(written);
    let copied = io::copy(&mut entry.take(budget + 1), out)
        .map_err(|e| ArchiveError::Damaged(e.to_string()))?;
    if copied > budget {
        return Err(ArchiveError::TooLarge(max_bytes));
    }
    Ok(copied)
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::Compression;
    use flate2::write::GzEncoder;

    enum E<'a> {
        File(&'a str, &'a [u8]),
        Symlink(&'a str, &'a str),
    }

    fn archive(dir: &Path, entries: &[E]) -> std::path::PathBuf {
        let path = dir.join("db.tar.gz");
        let gz = GzEncoder::new(File::create(&path).unwrap(), Compression::fast());
        let mut builder = tar::Builder::new(gz);
        for entry in entries {
            let mut header = tar::Header::new_gnu();
            match entry {
                E::File(name, data) => {
                    header.set_size(data.len() as u64);
                    header.set_mode(0o644);
                    header.set_entry_type(tar::EntryType::Regular);
                    // Write the raw name so hostile paths survive the builder's checks.
                    header.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
                    header.set_cksum();
                    builder.append(&header, *data).unwrap();
                }
                E::Symlink(name, target) => {
                    header.set_size(0);
                    header.set_entry_type(tar::EntryType::Symlink);
                    header.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
                    header.set_link_name(target).unwrap();
                    header.set_cksum();
                    builder.append(&header, &[][..]).unwrap();
                }
            }
        }
        builder.into_inner().unwrap().finish().unwrap();
        path
    }

    fn run(entries: &[E], max: u64) -> (Result<(), ArchiveError>, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let path = archive(dir.path(), entries);
        let out = dir.path().join("out");
        std::fs::create_dir(&out).unwrap();
        (extract(DbKind::Vulnerability, &path, &out, max), dir)
    }

    #[test]
    fn extracts_the_expected_files() {
        let (result, dir) = run(
            &[
                E::File("trivy.db", b"bolt"),
                E::File("./metadata.json", b"{}"),
            ],
            1 << 20,
        );
        result.unwrap();
        assert_eq!(
            std::fs::read(dir.path().join("out/trivy.db")).unwrap(),
            b"bolt"
        );
    }

    #[test]
    fn refuses_hostile_archives() {
        let cases: Vec<(Vec<E>, ArchiveError)> = vec![
            (
                vec![E::File("../trivy.db", b"x")],
                ArchiveError::UnexpectedEntry("../trivy.db".into(), "trivy.db"),
            ),
            (
                vec![E::File("/etc/passwd", b"x")],
                ArchiveError::UnexpectedEntry("/etc/passwd".into(), "trivy.db"),
            ),
            (
                vec![E::Symlink("trivy.db", "/etc/passwd")],
                ArchiveError::NotARegularFile("trivy.db".into()),
            ),
            (
                vec![
                    E::File("trivy.db", &[0u8; 4096]),
                    E::File("metadata.json", b"{}"),
                ],
                ArchiveError::TooLarge(1000),
            ),
            (
                vec![E::File("metadata.json", b"{}")],
                ArchiveError::Missing("trivy.db"),
            ),
            (
                vec![E::File("trivy.db", b"x")],
                ArchiveError::Missing("metadata.json"),
            ),
        ];
        for (entries, expected) in cases {
            let (result, dir) = run(&entries, 1000);
            assert_eq!(result, Err(expected));
            assert!(!dir.path().join("passwd").exists());
        }
    }

    #[test]
    fn damaged_gzip_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.tar.gz");
        std::fs::write(&path, b"not gzip at all").unwrap();
        let result = extract(DbKind::Vulnerability, &path, dir.path(), 1 << 20);
        assert!(
            matches!(result, Err(ArchiveError::Damaged(_))),
            "{result:?}"
        );
    }
}
