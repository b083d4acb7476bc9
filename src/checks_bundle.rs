//! trivy's misconfiguration checks bundle (`trivy-checks:2`, an OPA bundle) in the cache:
//! `<cache>/policy/content/` holds the unpacked bundle and `<cache>/policy/metadata.json` its
//! `Digest`, `DownloadedAt`, `MajorVersion` and `CustomBuild`, as trivy writes them. trivy
//! re-checks a bundle at most once a day and drops one whose major version is not its own.

use std::fs::{self, File};
use std::io;
use std::path::{Component, Path};
use std::time::{Duration, SystemTime};

use flate2::read::GzDecoder;
use serde::Deserialize;

use crate::db_archive::ArchiveError;
use crate::db_cache::{DbLocation, Staleness};

/// The bundle major version trivy 0.76 reads.
pub const BUNDLE_MAJOR_VERSION: u64 = 2;
/// The manifest annotation that carries the bundle's version.
pub const VERSION_ANNOTATION: &str = "org.opencontainers.image.version";
/// Entries accepted in one bundle (trivy-checks has a few thousand files).
const MAX_ENTRIES: usize = 100_000;

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ChecksMetadata {
    #[serde(default)]
    downloaded_at: Option<String>,
    #[serde(default)]
    major_version: Option<u64>,
    #[serde(default)]
    custom_build: bool,
}

/// trivy's rule for the checks bundle: download when metadata is missing or unreadable, when
/// an official bundle's major version is missing or not trivy's, or a day after the last
/// download (trivy then compares digests; trivy-ecr downloads again).
pub fn staleness(location: &DbLocation, now: SystemTime) -> Result<(), Staleness> {
    let content = location.dir.join("content");
    if !content.join(".manifest").is_file() {
        return Err(Staleness::Missing);
    }
    let bytes = fs::read(location.metadata_file()).map_err(|_| Staleness::Missing)?;
    let metadata: ChecksMetadata =
        serde_json::from_slice(&bytes).map_err(|_| Staleness::MetadataUnreadable)?;
    if !metadata.custom_build && metadata.major_version != Some(BUNDLE_MAJOR_VERSION) {
        return Err(Staleness::SchemaChanged {
            found: metadata.major_version.unwrap_or(0) as u32,
        });
    }
    let downloaded_at = metadata
        .downloaded_at
        .and_then(|t| humantime::parse_rfc3339_weak(&t).ok())
        .ok_or(Staleness::NeverDownloaded)?;
    if now >= downloaded_at + Duration::from_secs(24 * 3600) {
        return Err(Staleness::Outdated);
    }
    Ok(())
}

/// The major version from the manifest's version annotation; 0 marks a custom build, as in
/// trivy.
pub fn major_version(annotations: &std::collections::HashMap<String, String>) -> u64 {
    annotations
        .get(VERSION_ANNOTATION)
        .and_then(|v| v.trim_start_matches('v').split('.').next()?.parse().ok())
        .unwrap_or(0)
}

/// Writes `metadata.json` for a bundle with this manifest digest and version.
pub fn write_metadata(dir: &Path, digest: &str, major_version: u64) -> io::Result<()> {
    let metadata = serde_json::json!({
        "Digest": digest,
        "DownloadedAt": humantime::format_rfc3339_nanos(SystemTime::now()).to_string(),
        "MajorVersion": major_version,
        "CustomBuild": major_version == 0,
    });
    fs::write(dir.join("metadata.json"), serde_json::to_vec(&metadata)?)
}

/// Unpacks a bundle into `dir`: directories and regular files only, every path relative and
/// inside `dir`, at most `max_bytes` in all.
pub fn extract_tree(archive: &Path, dir: &Path, max_bytes: u64) -> Result<(), ArchiveError> {
    let file = File::open(archive).map_err(|e| ArchiveError::Damaged(e.to_string()))?;
    let mut tar = tar::Archive::new(GzDecoder::new(io::BufReader::new(file)));
    let mut written = 0u64;
    let mut count = 0usize;
    for entry in tar
        .entries()
        .map_err(|e| ArchiveError::Damaged(e.to_string()))?
    {
        let mut entry = entry.map_err(|e| ArchiveError::Damaged(e.to_string()))?;
        count += 1;
        if count > MAX_ENTRIES {
            return Err(ArchiveError::TooLarge(max_bytes));
        }
        let raw = entry.path_bytes().into_owned();
        let name = String::from_utf8_lossy(&raw).into_owned();
        let relative = Path::new(&name);
        if relative
            .components()
            .any(|c| !matches!(c, Component::Normal(_) | Component::CurDir))
        {
            return Err(ArchiveError::UnexpectedEntry(name, "relative paths"));
        }
        let target = dir.join(relative);
        let kind = entry.header().entry_type();
        if kind.is_dir() {
            fs::create_dir_all(&target).map_err(|e| ArchiveError::Damaged(e.to_string()))?;
            continue;
        }
        if !kind.is_file() {
            return Err(ArchiveError::NotARegularFile(name));
        }
        if let Some(parent) = target.parent() {
            fs::create_dir_all(parent).map_err(|e| ArchiveError::Damaged(e.to_string()))?;
        }
        let mut out = File::create(&target).map_err(|e| ArchiveError::Damaged(e.to_string()))?;
        written += crate::db_archive::copy_within(&mut entry, &mut out, written, max_bytes)?;
    }
    if !dir.join(".manifest").is_file() {
        return Err(ArchiveError::Missing(".manifest"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mirrors::DbKind;
    use flate2::Compression;
    use flate2::write::GzEncoder;

    fn bundle(dir: &Path, entries: &[(&str, &[u8])]) -> std::path::PathBuf {
        let path = dir.join("bundle.tar.gz");
        let mut builder = tar::Builder::new(GzEncoder::new(
            File::create(&path).unwrap(),
            Compression::fast(),
        ));
        for (name, data) in entries {
            let mut header = tar::Header::new_gnu();
            header.set_size(data.len() as u64);
            header.set_mode(0o644);
            header.set_entry_type(tar::EntryType::Regular);
            header.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
            header.set_cksum();
            builder.append(&header, *data).unwrap();
        }
        builder.into_inner().unwrap().finish().unwrap();
        path
    }

    #[test]
    fn unpacks_a_tree_and_refuses_escapes() {
        let dir = tempfile::tempdir().unwrap();
        let good = bundle(
            dir.path(),
            &[(".manifest", b"{}"), ("checks/docker/x.rego", b"package x")],
        );
        let out = dir.path().join("out");
        fs::create_dir(&out).unwrap();
        extract_tree(&good, &out, 1 << 20).unwrap();
        assert_eq!(
            fs::read(out.join("checks/docker/x.rego")).unwrap(),
            b"package x"
        );

        for hostile in ["../evil.rego", "/etc/evil", "checks/../../evil"] {
            let path = bundle(dir.path(), &[(".manifest", b"{}"), (hostile, b"x")]);
            let out = tempfile::tempdir().unwrap();
            let err = extract_tree(&path, out.path(), 1 << 20).unwrap_err();
            assert!(
                matches!(err, ArchiveError::UnexpectedEntry(..)),
                "{hostile}: {err}"
            );
        }
        let no_manifest = bundle(dir.path(), &[("checks/x.rego", b"x")]);
        let out = tempfile::tempdir().unwrap();
        assert_eq!(
            extract_tree(&no_manifest, out.path(), 1 << 20),
            Err(ArchiveError::Missing(".manifest"))
        );
    }

    #[test]
    fn freshness_as_trivy_decides() {
        let cache = tempfile::tempdir().unwrap();
        let location = DbLocation::new(cache.path(), DbKind::Checks);
        assert_eq!(
            staleness(&location, SystemTime::now()),
            Err(Staleness::Missing)
        );
        fs::create_dir_all(location.dir.join("content")).unwrap();
        fs::write(location.dir.join("content/.manifest"), "{}").unwrap();
        write_metadata(&location.dir, "sha256:abc", 2).unwrap();
        assert_eq!(staleness(&location, SystemTime::now()), Ok(()));
        let tomorrow = SystemTime::now() + Duration::from_secs(25 * 3600);
        assert_eq!(staleness(&location, tomorrow), Err(Staleness::Outdated));
        write_metadata(&location.dir, "sha256:abc", 1).unwrap();
        assert_eq!(
            staleness(&location, SystemTime::now()),
            Err(Staleness::SchemaChanged { found: 1 })
        );
        write_metadata(&location.dir, "sha256:abc", 0).unwrap();
        assert_eq!(
            staleness(&location, SystemTime::now()),
            Ok(()),
            "custom builds keep any version"
        );
    }

    #[test]
    fn major_version_from_the_annotation() {
        let mut annotations = std::collections::HashMap::new();
        assert_eq!(major_version(&annotations), 0);
        annotations.insert(VERSION_ANNOTATION.to_string(), "2.3.1".to_string());
        assert_eq!(major_version(&annotations), 2);
    }
}
