//! Degraded mode: when no mirror delivers a fresh DB within the retry budget, scan with the DB
//! already in the cache if it was built no longer ago than `TRIVY_ECR_MAX_DB_AGE`, and say so.
//! A gate that blocks every deploy because a registry throttles is worse than one that scans
//! with a DB a few hours old. A cached DB that is damaged is never used.

use std::fmt;
use std::path::Path;
use std::time::{Duration, SystemTime};

use crate::db_cache::{DbLocation, Metadata};
use crate::db_integrity;
use crate::mirrors::DbKind;

/// A cached DB trivy-ecr decided to scan with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DegradedDb {
    pub kind: DbKind,
    /// Since the DB was built (`UpdatedAt`; the checks bundle: since it was downloaded).
    pub age: Duration,
    pub limit: Duration,
}

impl fmt::Display for DegradedDb {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the cached {} is {} old (limit {})",
            self.kind,
            short(self.age),
            short(self.limit)
        )
    }
}

/// Why there is nothing to fall back on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NoFallback {
    Disabled,
    Missing,
    Damaged(String),
    TooOld { age: Duration, limit: Duration },
}

impl fmt::Display for NoFallback {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NoFallback::Disabled => f.write_str("degraded mode is off (TRIVY_ECR_MAX_DB_AGE=0)"),
            NoFallback::Missing => f.write_str("no DB in the cache to fall back on"),
            NoFallback::Damaged(why) => {
                write!(f, "the cached DB is damaged ({why}) and will not be used")
            }
            NoFallback::TooOld { age, limit } => write!(
                f,
                "the cached DB is {} old, beyond TRIVY_ECR_MAX_DB_AGE={}",
                short(*age),
                short(*limit)
            ),
        }
    }
}

/// `5h`, `3d 2h`, `40m`: ages to the minute.
pub fn short(d: Duration) -> String {
    let rounded = Duration::from_secs(d.as_secs() / 60 * 60);
    if rounded.is_zero() {
        return "under a minute".into();
    }
    humantime::format_duration(rounded).to_string()
}

/// Whether the DB of `kind` in `cache_dir` may be scanned with instead of a fresh one.
pub fn fallback(
    kind: DbKind,
    cache_dir: &Path,
    limit: Option<Duration>,
    now: SystemTime,
) -> Result<DegradedDb, NoFallback> {
    let limit = limit.ok_or(NoFallback::Disabled)?;
    let location = DbLocation::new(cache_dir, kind);
    let built = built_at(&location)?;
    let age = now.duration_since(built).unwrap_or_default();
    if age > limit {
        return Err(NoFallback::TooOld { age, limit });
    }
    Ok(DegradedDb { kind, age, limit })
}

/// When the cached DB was built, after checking it is whole.
pub fn built_at(location: &DbLocation) -> Result<SystemTime, NoFallback> {
    let damaged = |why: String| NoFallback::Damaged(why);
    match location.kind {
        DbKind::Checks => {
            if !location.dir.join("content/.manifest").is_file() {
                return Err(NoFallback::Missing);
            }
            let bytes = std::fs::read(location.metadata_file()).map_err(|_| NoFallback::Missing)?;
            let value: serde_json::Value = serde_json::from_slice(&bytes)
                .map_err(|e| damaged(format!("metadata.json: {e}")))?;
            value["DownloadedAt"]
                .as_str()
                .and_then(|t| humantime::parse_rfc3339_weak(t).ok())
                .ok_or_else(|| damaged("metadata.json has no DownloadedAt".into()))
        }
        kind => {
            let db = location.db_file();
            if !db.exists() && !location.metadata_file().exists() {
                return Err(NoFallback::Missing);
            }
            let metadata = Metadata::read(&location.metadata_file())
                .map_err(|e| damaged(format!("metadata.json: {e}")))?;
            let check = match kind {
                DbKind::Java => db_integrity::check_sqlite(&db),
                _ => db_integrity::check_bolt(&db),
            };
            check.map_err(|e| damaged(format!("{}: {e}", db.display())))?;
            metadata
                .updated_at
                .ok_or_else(|| damaged("metadata.json has no UpdatedAt".into()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hours(h: u64) -> Duration {
        Duration::from_secs(h * 3600)
    }

    #[test]
    fn nothing_to_fall_back_on() {
        let cache = tempfile::tempdir().unwrap();
        let now = SystemTime::now();
        assert_eq!(
            fallback(DbKind::Vulnerability, cache.path(), None, now),
            Err(NoFallback::Disabled)
        );
        assert_eq!(
            fallback(DbKind::Vulnerability, cache.path(), Some(hours(72)), now),
            Err(NoFallback::Missing)
        );
    }

    #[test]
    fn damaged_metadata_or_db_is_refused() {
        let cache = tempfile::tempdir().unwrap();
        let location = DbLocation::new(cache.path(), DbKind::Vulnerability);
        std::fs::create_dir_all(&location.dir).unwrap();
        std::fs::write(location.db_file(), b"truncated").unwrap();
        std::fs::write(location.metadata_file(), b"{not json").unwrap();
        let err = fallback(
            DbKind::Vulnerability,
            cache.path(),
            Some(hours(72)),
            SystemTime::now(),
        )
        .unwrap_err();
        assert!(
            matches!(&err, NoFallback::Damaged(why) if why.contains("metadata.json")),
            "{err}"
        );
        std::fs::write(
            location.metadata_file(),
            br#"{"Version":2,"UpdatedAt":"2026-12-04T06:00:00Z"}"#,
        )
        .unwrap();
        let err = fallback(
            DbKind::Vulnerability,
            cache.path(),
            Some(hours(72)),
            SystemTime::now(),
        )
        .unwrap_err();
        assert!(
            matches!(&err, NoFallback::Damaged(why) if why.contains("not a bbolt database")),
            "{err}"
        );
    }

    #[test]
    fn short_ages() {
        assert_eq!(short(hours(5)), "5h");
        assert_eq!(short(hours(74)), "3days 2h");
        assert_eq!(short(Duration::from_secs(30)), "under a minute");
    }
}
