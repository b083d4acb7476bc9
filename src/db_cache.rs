//! trivy's DB cache on disk: where it is, whether a DB in it is fresh (decided exactly as trivy
//! decides), the lock that serialises trivy-ecr processes sharing it, and the atomic swap that
//! installs a newly downloaded DB so trivy never sees half of one.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use nix::fcntl::{Flock, FlockArg};
use serde::Deserialize;

use crate::mirrors::DbKind;

/// trivy's cache directory: `--cache-dir`, `TRIVY_CACHE_DIR`, `cache.dir` in trivy.yaml, else
/// `$XDG_CACHE_HOME/trivy` or `~/.cache/trivy` (Go's `os.UserCacheDir`).
pub fn default_cache_dir(env: &dyn Fn(&str) -> Option<std::ffi::OsString>) -> PathBuf {
    if let Some(xdg) = env("XDG_CACHE_HOME").filter(|v| !v.is_empty()) {
        return PathBuf::from(xdg).join("trivy");
    }
    let home = env("HOME").unwrap_or_else(|| "/".into());
    PathBuf::from(home).join(".cache").join("trivy")
}

/// trivy-ecr's own small state (remembered trivy versions): `$XDG_CACHE_HOME/trivy-ecr` or
/// `~/.cache/trivy-ecr`.
pub fn trivy_ecr_cache_dir(env: &dyn Fn(&str) -> Option<std::ffi::OsString>) -> PathBuf {
    default_cache_dir(env).with_file_name("trivy-ecr")
}

/// Where one DB lives inside the cache.
#[derive(Debug, Clone)]
pub struct DbLocation {
    pub kind: DbKind,
    pub dir: PathBuf,
}

impl DbLocation {
    pub fn new(cache_dir: &Path, kind: DbKind) -> DbLocation {
        DbLocation {
            kind,
            dir: cache_dir.join(subdir(kind)),
        }
    }

    pub fn db_file(&self) -> PathBuf {
        self.dir.join(db_file_name(self.kind))
    }

    pub fn metadata_file(&self) -> PathBuf {
        self.dir.join("metadata.json")
    }
}

fn subdir(kind: DbKind) -> &'static str {
    match kind {
        DbKind::Vulnerability => "db",
        DbKind::Java => "java-db",
        DbKind::Checks => "policy",
    }
}

/// The DB file inside the artifact's archive and the cache.
pub fn db_file_name(kind: DbKind) -> &'static str {
    match kind {
        DbKind::Vulnerability => "trivy.db",
        DbKind::Java => "trivy-java.db",
        DbKind::Checks => "bundle.tar.gz",
    }
}

/// The schema version trivy expects in `metadata.json`.
pub fn schema_version(kind: DbKind) -> u32 {
    match kind {
        DbKind::Vulnerability => 2,
        DbKind::Java => 1,
        DbKind::Checks => 0,
    }
}

/// `metadata.json`, as trivy-db and trivy-java-db write it.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "PascalCase")]
pub struct Metadata {
    pub version: u32,
    #[serde(default, deserialize_with = "go_time")]
    pub next_update: Option<SystemTime>,
    #[serde(default, deserialize_with = "go_time")]
    pub updated_at: Option<SystemTime>,
    #[serde(default, deserialize_with = "go_time")]
    pub downloaded_at: Option<SystemTime>,
}

/// Go's RFC 3339 times; the zero time (`0001-01-01T00:00:00Z`) and anything unreadable are
/// `None`, which trivy treats as "never".
fn go_time<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<SystemTime>, D::Error> {
    let text: Option<String> = Option::deserialize(d)?;
    Ok(text.and_then(|t| {
        humantime::parse_rfc3339_weak(&t)
            .ok()
            .or_else(|| humantime::parse_rfc3339(&t).ok())
    }))
}

impl Metadata {
    pub fn read(path: &Path) -> io::Result<Metadata> {
        let bytes = fs::read(path)?;
        serde_json::from_slice(&bytes).map_err(io::Error::other)
    }
}

/// Why a DB must be downloaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Staleness {
    Missing,
    MetadataUnreadable,
    SchemaChanged { found: u32 },
    NeverDownloaded,
    Outdated,
}

impl std::fmt::Display for Staleness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Staleness::Missing => f.write_str("not in the cache"),
            Staleness::MetadataUnreadable => f.write_str("metadata.json unreadable"),
            Staleness::SchemaChanged { found } => {
                write!(f, "schema version {found} is not the one trivy reads")
            }
            Staleness::NeverDownloaded => f.write_str("never downloaded (DownloadedAt is zero)"),
            Staleness::Outdated => f.write_str("past its next update"),
        }
    }
}

/// trivy's rule: download when a file is missing, metadata is unreadable, `DownloadedAt` is
/// zero, or now ≥ NextUpdate and now ≥ DownloadedAt + 1 h (the Java DB: + 24 h).
pub fn staleness(location: &DbLocation, now: SystemTime) -> Result<Metadata, Staleness> {
    if !location.db_file().is_file() || !location.metadata_file().is_file() {
        return Err(Staleness::Missing);
    }
    let metadata =
        Metadata::read(&location.metadata_file()).map_err(|_| Staleness::MetadataUnreadable)?;
    if metadata.version != schema_version(location.kind) {
        return Err(Staleness::SchemaChanged {
            found: metadata.version,
        });
    }
    let Some(downloaded_at) = metadata.downloaded_at else {
        return Err(Staleness::NeverDownloaded);
    };
    let min_interval = match location.kind {
        DbKind::Java => Duration::from_secs(24 * 3600),
        _ => Duration::from_secs(3600),
    };
    let past_next_update = metadata.next_update.is_none_or(|next| now >= next);
    if past_next_update && now >= downloaded_at + min_interval {
        return Err(Staleness::Outdated);
    }
    Ok(metadata)
}

/// An advisory lock on the cache directory, held while a DB is checked and installed
/// (exclusive) or read by a scan (shared). Released on drop.
pub struct CacheLock {
    _lock: Flock<File>,
}

impl CacheLock {
    fn open(cache_dir: &Path) -> io::Result<File> {
        fs::create_dir_all(cache_dir)?;
        OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(cache_dir.join(".trivy-ecr.lock"))
    }

    /// Waits for every other trivy-ecr on this cache to finish installing or scanning.
    pub async fn exclusive(cache_dir: &Path) -> io::Result<CacheLock> {
        let file = Self::open(cache_dir)?;
        Self::acquire(file, FlockArg::LockExclusive).await
    }

    /// Waits for an install in progress; other readers share it.
    pub async fn shared(cache_dir: &Path) -> io::Result<CacheLock> {
        let file = Self::open(cache_dir)?;
        Self::acquire(file, FlockArg::LockShared).await
    }

    async fn acquire(file: File, arg: FlockArg) -> io::Result<CacheLock> {
        tokio::task::spawn_blocking(move || {
            Flock::lock(file, arg)
                .map(|lock| CacheLock { _lock: lock })
                .map_err(|(_, errno)| io::Error::from(errno))
        })
        .await
        .map_err(io::Error::other)?
    }
}

/// A directory inside the cache dir where a download is assembled; removed on drop unless
/// installed.
pub struct Staging {
    dir: tempfile::TempDir,
}

impl Staging {
    pub fn new(cache_dir: &Path) -> io::Result<Staging> {
        fs::create_dir_all(cache_dir)?;
        let dir = tempfile::Builder::new()
            .prefix(".trivy-ecr-staging-")
            .tempdir_in(cache_dir)?;
        Ok(Staging { dir })
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The extracted DB's directory inside the staging area.
    pub fn db_dir(&self) -> PathBuf {
        self.dir.path().join("db")
    }

    /// Replaces the DB's directory with the staged one: fsync the files, move the old directory
    /// aside, rename the new one in, remove the old. A crash leaves either DB, never a mix.
    pub fn install(self, location: &DbLocation, downloaded_at: SystemTime) -> io::Result<()> {
        let staged = self.db_dir();
        set_downloaded_at(&staged.join("metadata.json"), downloaded_at)?;
        for entry in fs::read_dir(&staged)? {
            File::open(entry?.path())?.sync_all()?;
        }
        File::open(&staged)?.sync_all()?;
        let old = self.path().join("old");
        let had_old = match fs::rename(&location.dir, &old) {
            Ok(()) => true,
            Err(e) if e.kind() == io::ErrorKind::NotFound => false,
            Err(e) => return Err(e),
        };
        if let Err(err) = fs::rename(&staged, &location.dir) {
            if had_old {
                let _ = fs::rename(&old, &location.dir);
            }
            return Err(err);
        }
        if let Some(parent) = location.dir.parent() {
            File::open(parent)?.sync_all()?;
        }
        Ok(())
    }
}

/// Writes `DownloadedAt` into metadata.json as trivy does after a download, keeping every other
/// field as the artifact had it.
fn set_downloaded_at(path: &Path, when: SystemTime) -> io::Result<()> {
    let mut value: serde_json::Value =
        serde_json::from_slice(&fs::read(path)?).map_err(io::Error::other)?;
    let object = value
        .as_object_mut()
        .ok_or_else(|| io::Error::other("metadata.json is not an object"))?;
    object.insert(
        "DownloadedAt".into(),
        serde_json::Value::String(humantime::format_rfc3339_nanos(when).to_string()),
    );
    fs::write(path, serde_json::to_vec(&value).map_err(io::Error::other)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_db(dir: &Path, metadata: &str) -> DbLocation {
        let location = DbLocation::new(dir, DbKind::Vulnerability);
        fs::create_dir_all(&location.dir).unwrap();
        fs::write(location.db_file(), b"bolt").unwrap();
        fs::write(location.metadata_file(), metadata).unwrap();
        location
    }

    fn at(text: &str) -> SystemTime {
        humantime::parse_rfc3339(text).unwrap()
    }

    #[test]
    fn freshness_follows_trivys_rule() {
        let dir = tempfile::tempdir().unwrap();
        let now = at("2026-12-04T12:00:00Z");
        let meta = |next: &str, downloaded: &str| {
            format!(
                r#"{{"Version":2,"NextUpdate":"{next}","UpdatedAt":"2026-12-04T06:00:00Z","DownloadedAt":"{downloaded}"}}"#
            )
        };
        let cases = [
            (meta("2026-12-04T18:00:00Z", "2026-12-04T11:30:00Z"), None),
            // Past NextUpdate but downloaded less than an hour ago: still fresh.
            (meta("2026-12-04T11:00:00Z", "2026-12-04T11:30:00Z"), None),
            (meta("2026-12-04T11:00:00Z", "2026-12-04T10:30:00Z"), Some(Staleness::Outdated)),
            (meta("2026-12-04T18:00:00Z", "0001-01-01T00:00:00Z"), Some(Staleness::NeverDownloaded)),
            (r#"{"Version":1,"NextUpdate":"2026-12-05T00:00:00Z","DownloadedAt":"2026-12-04T11:30:00Z"}"#.into(), Some(Staleness::SchemaChanged { found: 1 })),
            ("{not json".into(), Some(Staleness::MetadataUnreadable)),
        ];
        for (metadata, expected) in cases {
            let location = write_db(dir.path(), &metadata);
            assert_eq!(staleness(&location, now).err(), expected, "{metadata}");
        }
        fs::remove_file(DbLocation::new(dir.path(), DbKind::Vulnerability).db_file()).unwrap();
        let location = DbLocation::new(dir.path(), DbKind::Vulnerability);
        assert_eq!(staleness(&location, now).err(), Some(Staleness::Missing));
    }

    #[test]
    fn java_db_waits_a_day() {
        let dir = tempfile::tempdir().unwrap();
        let location = DbLocation::new(dir.path(), DbKind::Java);
        fs::create_dir_all(&location.dir).unwrap();
        fs::write(location.db_file(), b"sqlite").unwrap();
        fs::write(location.metadata_file(), r#"{"Version":1,"NextUpdate":"2026-12-03T00:00:00Z","UpdatedAt":"2026-12-02T00:00:00Z","DownloadedAt":"2026-12-04T00:00:00Z"}"#).unwrap();
        assert!(staleness(&location, at("2026-12-04T12:00:00Z")).is_ok());
        assert_eq!(
            staleness(&location, at("2026-12-05T00:00:01Z")).err(),
            Some(Staleness::Outdated)
        );
    }

    #[test]
    fn install_swaps_the_whole_directory_and_stamps_downloaded_at() {
        let cache = tempfile::tempdir().unwrap();
        let location = write_db(
            cache.path(),
            r#"{"Version":2,"DownloadedAt":"2026-01-01T00:00:00Z"}"#,
        );
        let staging = Staging::new(cache.path()).unwrap();
        fs::create_dir(staging.db_dir()).unwrap();
        fs::write(staging.db_dir().join("trivy.db"), b"new bolt").unwrap();
        fs::write(staging.db_dir().join("metadata.json"), r#"{"Version":2,"NextUpdate":"2026-12-05T00:00:00Z","UpdatedAt":"2026-12-04T00:00:00Z","DownloadedAt":"0001-01-01T00:00:00Z"}"#).unwrap();
        let now = at("2026-12-04T12:00:00Z");
        staging.install(&location, now).unwrap();
        assert_eq!(fs::read(location.db_file()).unwrap(), b"new bolt");
        let metadata = Metadata::read(&location.metadata_file()).unwrap();
        assert_eq!(metadata.downloaded_at, Some(now));
        assert_eq!(metadata.next_update, Some(at("2026-12-05T00:00:00Z")));
        let leftovers: Vec<_> = fs::read_dir(cache.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(leftovers, ["db"], "staging area removed");
    }

    #[test]
    fn dropped_staging_leaves_the_old_db() {
        let cache = tempfile::tempdir().unwrap();
        let location = write_db(cache.path(), r#"{"Version":2}"#);
        {
            let staging = Staging::new(cache.path()).unwrap();
            fs::create_dir(staging.db_dir()).unwrap();
            fs::write(staging.db_dir().join("trivy.db"), b"half").unwrap();
        }
        assert_eq!(fs::read(location.db_file()).unwrap(), b"bolt");
        assert_eq!(fs::read_dir(cache.path()).unwrap().count(), 1);
    }

    #[tokio::test]
    async fn exclusive_lock_excludes_others_until_dropped() {
        let cache = tempfile::tempdir().unwrap();
        let try_exclusive = || {
            let file = CacheLock::open(cache.path()).unwrap();
            Flock::lock(file, FlockArg::LockExclusiveNonblock).is_ok()
        };
        let held = CacheLock::exclusive(cache.path()).await.unwrap();
        assert!(!try_exclusive(), "a second exclusive lock must wait");
        drop(held);
        assert!(try_exclusive());
        let shared = CacheLock::shared(cache.path()).await.unwrap();
        let _also_shared = CacheLock::shared(cache.path()).await.unwrap();
        assert!(!try_exclusive(), "readers keep installers out");
        drop(shared);
    }
}
