//! Synthesises a real trivy vulnerability DB (schema 2): a Go-bbolt file written with `bbolt-rs`
//! (its `compat` feature gives Go's magic number) plus `metadata.json`, packed as `db.tar.gz`,
//! so tests control exactly which findings trivy reports and how fresh the DB claims to be.
//!
//! # Fixture content and the findings it yields for [`crate::rig::image`]'s Alpine 3.19 image
//!
//! | ID            | source pkg | fixed in                | severity | image package (installed)       | reported? |
//! |---------------|------------|-------------------------|----------|---------------------------------|-----------|
//! | CVE-2099-0001 | openssl    | 3.1.4-r6                | CRITICAL | libcrypto3 3.1.4-r5             | yes, fixed |
//! | CVE-2099-0002 | busybox    | — (`{}`, unfixed)       | CRITICAL | busybox 1.36.1-r15              | yes, Status `affected` |
//! | CVE-2099-0003 | zlib       | 1.3.1-r1                | HIGH     | zlib 1.3.1-r0                   | yes, fixed |
//! | CVE-2099-0004 | musl       | 1.2.4_git20230717-r5    | MEDIUM   | musl 1.2.4_git20230717-r4       | yes, fixed |
//! | CVE-2099-0005 | zlib       | 1.2.13-r0               | LOW      | zlib 1.3.1-r0                   | no (already fixed) |
//! | CVE-2099-0101 | maven `com.example.rig:rig-lib` | 1.2.4 | HIGH | `rig-lib.jar` 1.2.3 (JAR layer only, identified through the Java DB) | only with the JAR |
//!
//! [`expected_alpine_findings`] derives the reported rows from these tables; tests compare trivy's
//! JSON report with it.

use crate::rig::report::Finding;
use crate::rig::tarball::{self, Entry};
use bbolt_rs::{Bolt, BucketRwApi, DbApi, DbRwAPI, TxRwApi, TxRwRefApi};
use flate2::Compression;
use std::path::Path;
use std::time::{Duration, SystemTime};

/// The bucket trivy reads Alpine 3.19 advisories from.
pub const ALPINE_BUCKET: &str = "alpine 3.19";
/// The bucket trivy reads Maven advisories (GHSA) from.
pub const MAVEN_BUCKET: &str = "maven::GitHub Security Advisory Maven";

/// Severities as trivy-db numbers them (`VendorSeverity` values).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    Unknown = 0,
    Low = 1,
    Medium = 2,
    High = 3,
    Critical = 4,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Unknown => "UNKNOWN",
            Severity::Low => "LOW",
            Severity::Medium => "MEDIUM",
            Severity::High => "HIGH",
            Severity::Critical => "CRITICAL",
        }
    }
}

/// One advisory of the fixture DB.
#[derive(Debug, Clone, Copy)]
pub struct Advisory {
    pub id: &'static str,
    /// Alpine: the source (origin) package; Maven: `groupId:artifactId`.
    pub package: &'static str,
    /// `None` writes `{}`: unfixed, reported with Status `affected`.
    pub fixed_version: Option<&'static str>,
    pub severity: Severity,
    pub title: &'static str,
}

/// The Alpine 3.19 advisories of the fixture DB (see the module table).
pub const ALPINE_ADVISORIES: &[Advisory] = &[
    Advisory {
        id: "CVE-2099-0001",
        package: "openssl",
        fixed_version: Some("3.1.4-r6"),
        severity: Severity::Critical,
        title: "rig fixture: fixed critical in openssl",
    },
    Advisory {
        id: "CVE-2099-0002",
        package: "busybox",
        fixed_version: None,
        severity: Severity::Critical,
        title: "rig fixture: unfixed critical in busybox",
    },
    Advisory {
        id: "CVE-2099-0003",
        package: "zlib",
        fixed_version: Some("1.3.1-r1"),
        severity: Severity::High,
        title: "rig fixture: high in zlib",
    },
    Advisory {
        id: "CVE-2099-0004",
        package: "musl",
        fixed_version: Some("1.2.4_git20230717-r5"),
        severity: Severity::Medium,
        title: "rig fixture: medium in musl",
    },
    Advisory {
        id: "CVE-2099-0005",
        package: "zlib",
        fixed_version: Some("1.2.13-r0"),
        severity: Severity::Low,
        title: "rig fixture: low in zlib, fixed before the installed version",
    },
];

/// The Maven advisory matched by the JAR that only the Java DB can identify.
pub const MAVEN_ADVISORY: Advisory = Advisory {
    id: "CVE-2099-0101",
    package: "com.example.rig:rig-lib",
    fixed_version: Some("1.2.4"),
    severity: Severity::High,
    title: "rig fixture: high in rig-lib (found through the Java DB)",
};

/// What `metadata.json` says, and how much padding to add.
#[derive(Debug, Clone)]
pub struct DbSpec {
    pub updated_at: SystemTime,
    pub next_update: SystemTime,
    /// `None` writes Go's zero time, as in the published artifact.
    pub downloaded_at: Option<SystemTime>,
    /// Extra incompressible bytes stored in an unused bucket, to make big artifacts.
    pub padding_bytes: u64,
}

impl DbSpec {
    /// Built an hour ago, next update in 5 hours (like upstream's 6-hourly build).
    pub fn fresh() -> Self {
        let now = SystemTime::now();
        DbSpec {
            updated_at: now - Duration::from_secs(3600),
            next_update: now + Duration::from_secs(5 * 3600),
            downloaded_at: None,
            padding_bytes: 0,
        }
    }

    /// Built two days ago, next update was due a day ago.
    pub fn stale() -> Self {
        let now = SystemTime::now();
        DbSpec {
            updated_at: now - Duration::from_secs(2 * 86_400),
            next_update: now - Duration::from_secs(86_400),
            downloaded_at: None,
            padding_bytes: 0,
        }
    }

    pub fn with_padding(mut self, bytes: u64) -> Self {
        self.padding_bytes = bytes;
        self
    }

    pub fn downloaded_at(mut self, at: SystemTime) -> Self {
        self.downloaded_at = Some(at);
        self
    }

    /// `metadata.json` for this spec, schema 2.
    pub fn metadata_json(&self) -> String {
        metadata_json(2, self.updated_at, self.next_update, self.downloaded_at)
    }
}

/// `{"Version":V,"NextUpdate":...,"UpdatedAt":...,"DownloadedAt":...}` with RFC 3339 times;
/// `downloaded_at: None` gives Go's zero time.
pub fn metadata_json(
    version: u32,
    updated_at: SystemTime,
    next_update: SystemTime,
    downloaded_at: Option<SystemTime>,
) -> String {
    let downloaded = downloaded_at
        .map(rfc3339)
        .unwrap_or_else(|| "0001-01-01T00:00:00Z".into());
    format!(
        r#"{{"Version":{version},"NextUpdate":"{}","UpdatedAt":"{}","DownloadedAt":"{downloaded}"}}"#,
        rfc3339(next_update),
        rfc3339(updated_at)
    )
}

fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

/// Writes the fixture bbolt DB (`trivy.db`) at `path`.
pub fn write_bolt(path: &Path, spec: &DbSpec) {
    let mut db = Bolt::open(path).unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    let mut tx = db.begin_rw().expect("bolt rw tx");
    {
        let mut alpine = tx
            .create_bucket_if_not_exists(ALPINE_BUCKET)
            .expect("bucket");
        for adv in ALPINE_ADVISORIES {
            let mut pkg = alpine
                .create_bucket_if_not_exists(adv.package)
                .expect("pkg bucket");
            let value = match adv.fixed_version {
                Some(v) => serde_json::json!({ "FixedVersion": v }),
                None => serde_json::json!({}),
            };
            pkg.put(adv.id, value.to_string()).expect("put advisory");
        }
    }
    {
        let mut maven = tx
            .create_bucket_if_not_exists(MAVEN_BUCKET)
            .expect("bucket");
        let mut pkg = maven
            .create_bucket_if_not_exists(MAVEN_ADVISORY.package)
            .expect("pkg bucket");
        let fixed = MAVEN_ADVISORY
            .fixed_version
            .expect("maven fixture is fixed");
        let value = serde_json::json!({
            "PatchedVersions": [fixed],
            "VulnerableVersions": [format!("<{fixed}")],
        });
        pkg.put(MAVEN_ADVISORY.id, value.to_string())
            .expect("put advisory");
    }
    {
        let mut vulns = tx
            .create_bucket_if_not_exists("vulnerability")
            .expect("bucket");
        for adv in ALPINE_ADVISORIES.iter().chain([&MAVEN_ADVISORY]) {
            let source = if adv.id == MAVEN_ADVISORY.id {
                "ghsa"
            } else {
                "alpine"
            };
            let value = serde_json::json!({
                "Title": adv.title,
                "Description": format!("{} (synthetic, for the trivy-ecr test rig)", adv.title),
                "Severity": adv.severity.as_str(),
                "VendorSeverity": { source: adv.severity as u8 },
            });
            vulns.put(adv.id, value.to_string()).expect("put vuln");
        }
    }
    {
        let mut sources = tx
            .create_bucket_if_not_exists("data-source")
            .expect("bucket");
        let alpine = serde_json::json!({
            "ID": "alpine", "Name": "Alpine Secdb", "URL": "https://secdb.alpinelinux.org/",
        });
        sources
            .put(ALPINE_BUCKET, alpine.to_string())
            .expect("put source");
        let ghsa = serde_json::json!({
            "ID": "ghsa", "Name": "GitHub Security Advisory Maven",
            "URL": "https://github.com/advisories?query=type%3Areviewed+ecosystem%3Amaven",
        });
        sources
            .put(MAVEN_BUCKET, ghsa.to_string())
            .expect("put source");
    }
    tx.commit().expect("bolt commit");
    write_padding(&mut db, spec.padding_bytes);
    db.close();
}

/// Fills an unused bucket with `bytes` of xorshift noise in 64 KiB values, a few MiB per
/// transaction, so the DB (and its gzip) grows by about `bytes`.
fn write_padding(db: &mut Bolt, bytes: u64) {
    const VALUE: usize = 64 * 1024;
    const PER_TX: u64 = 64;
    let values = bytes.div_ceil(VALUE as u64);
    let mut state = 0x9E37_79B9_7F4A_7C15_u64;
    let mut value = vec![0u8; VALUE];
    let mut done = 0;
    while done < values {
        let mut tx = db.begin_rw().expect("bolt rw tx");
        {
            let mut pad = tx
                .create_bucket_if_not_exists("rig-padding")
                .expect("bucket");
            for i in done..(done + PER_TX).min(values) {
                for chunk in value.chunks_mut(8) {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    chunk.copy_from_slice(&state.to_le_bytes()[..chunk.len()]);
                }
                pad.put(format!("pad-{i:08}"), &value).expect("put padding");
            }
        }
        tx.commit().expect("bolt commit");
        done = (done + PER_TX).min(values);
    }
}

/// The `db.tar.gz` layer: `trivy.db` + `metadata.json`.
pub fn db_tar_gz(spec: &DbSpec) -> Vec<u8> {
    let dir = tempfile::tempdir().expect("temp dir");
    let db_path = dir.path().join("trivy.db");
    write_bolt(&db_path, spec);
    let db = std::fs::read(&db_path).expect("read trivy.db");
    let meta = spec.metadata_json();
    let tar = tarball::tar(&[
        Entry::file("trivy.db", &db),
        Entry::file("metadata.json", meta.as_bytes()),
    ]);
    let level = if spec.padding_bytes > 0 {
        Compression::fast()
    } else {
        Compression::default()
    };
    tarball::gzip_with(&tar, level)
}

/// Installs the fixture DB straight into a trivy cache dir (`<cache>/db/trivy.db` and
/// `metadata.json`), as if trivy had downloaded it at `spec.downloaded_at` (now if `None`).
pub fn install_into_cache(cache_dir: &Path, spec: &DbSpec) {
    let db_dir = cache_dir.join("db");
    std::fs::create_dir_all(&db_dir).expect("mkdir cache/db");
    write_bolt(&db_dir.join("trivy.db"), spec);
    let meta = metadata_json(
        2,
        spec.updated_at,
        spec.next_update,
        Some(spec.downloaded_at.unwrap_or_else(SystemTime::now)),
    );
    std::fs::write(db_dir.join("metadata.json"), meta).expect("write metadata.json");
}

/// The findings trivy must report for the rig's Alpine image against this DB, derived from
/// [`ALPINE_ADVISORIES`] and [`crate::rig::image::PACKAGES`], sorted.
pub fn expected_alpine_findings() -> Vec<Finding> {
    let mut out = Vec::new();
    for pkg in crate::rig::image::PACKAGES {
        for adv in ALPINE_ADVISORIES.iter().filter(|a| a.package == pkg.origin) {
            let affected = adv
                .fixed_version
                .is_none_or(|fixed| version_less(pkg.version, fixed));
            if affected {
                out.push(Finding {
                    id: adv.id.into(),
                    pkg: pkg.name.into(),
                    installed: pkg.version.into(),
                    fixed: adv.fixed_version.map(Into::into),
                    status: if adv.fixed_version.is_some() {
                        "fixed"
                    } else {
                        "affected"
                    }
                    .into(),
                    severity: adv.severity.as_str().into(),
                });
            }
        }
    }
    out.sort();
    out
}

/// The finding trivy must report for the JAR layer once the Java DB identified it.
pub fn expected_jar_finding() -> Finding {
    let jar = crate::rig::java_db::JAR;
    Finding {
        id: MAVEN_ADVISORY.id.into(),
        pkg: format!("{}:{}", jar.group_id, jar.artifact_id),
        installed: jar.version.into(),
        fixed: MAVEN_ADVISORY.fixed_version.map(Into::into),
        status: "fixed".into(),
        severity: MAVEN_ADVISORY.severity.as_str().into(),
    }
}

/// Compares version strings by runs of digits (numerically) and other characters (bytewise):
/// enough for the fixture's apk versions, not a general apk comparator.
pub fn version_less(a: &str, b: &str) -> bool {
    fn tokens(s: &str) -> Vec<(bool, &str)> {
        let mut out = Vec::new();
        let mut start = 0;
        let bytes = s.as_bytes();
        for i in 1..=bytes.len() {
            if i == bytes.len() || bytes[i].is_ascii_digit() != bytes[start].is_ascii_digit() {
                out.push((bytes[start].is_ascii_digit(), &s[start..i]));
                start = i;
            }
        }
        out
    }
    for (x, y) in tokens(a).into_iter().zip(tokens(b)) {
        let ord = match (x, y) {
            ((true, x), (true, y)) => x.parse::<u64>().unwrap().cmp(&y.parse::<u64>().unwrap()),
            ((_, x), (_, y)) => x.cmp(y),
        };
        if ord != std::cmp::Ordering::Equal {
            return ord.is_lt();
        }
    }
    tokens(a).len() < tokens(b).len()
}
