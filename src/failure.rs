//! Why a trivy run died, read from its log lines: did it fail while obtaining a DB, from which
//! mirror, and was that transient or mirror-specific (worth another mirror or a wait)?
//!
//! trivy prints no machine-readable error, so this matches stable fragments (error codes,
//! status codes, Go network errors, `repo="..."`), never whole lines: the wording around them
//! changes between trivy versions.

use std::fmt;
use std::time::Duration;

use crate::mirrors::DbKind;
use crate::retry_after;

/// Why one mirror did not deliver a DB.
#[derive(Debug, Clone, PartialEq)]
pub enum Cause {
    /// HTTP 429 / TOOMANYREQUESTS, with the delay the registry asked for, if any.
    RateLimited {
        retry_after: Option<Duration>,
    },
    /// HTTP 5xx / UNAVAILABLE.
    ServerError(Option<u16>),
    Timeout,
    ConnectionRefused,
    ConnectionReset,
    Dns,
    /// 404, MANIFEST_UNKNOWN, NAME_UNKNOWN: this mirror lacks the artifact.
    NotFound,
    /// 401/403, UNAUTHORIZED, DENIED: this mirror wants credentials we do not have.
    Unauthorized,
    BlobUnknown,
    /// The artifact arrived damaged (digest mismatch, bad gzip, truncated).
    Corrupt,
    /// The mirror serves something that is not the DB artifact (media type, layers, size).
    BadArtifact(String),
    /// Anything else: not a registry problem trivy-ecr knows how to route around.
    Other(String),
}

impl Cause {
    /// Worth trying another mirror, or the same one later.
    pub fn is_retryable(&self) -> bool {
        !matches!(self, Cause::Other(_))
    }

    /// This mirror will not do better later in this run: skip it.
    pub fn excludes_mirror(&self) -> bool {
        matches!(
            self,
            Cause::NotFound | Cause::Unauthorized | Cause::BadArtifact(_)
        )
    }

    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Cause::RateLimited { retry_after } => *retry_after,
            _ => None,
        }
    }

    /// Classifies the error text trivy printed for one download.
    pub fn classify(text: &str) -> Cause {
        let lower = text.to_ascii_lowercase();
        let has = |needle: &str| lower.contains(needle);
        // Registry error codes are upper case in the distribution spec; matching them
        // exactly keeps "permission denied" on disk from reading as a registry DENIED.
        let code = |c: &str| text.contains(c);
        let status = status_code(&lower);
        if code("TOOMANYREQUESTS") || status == Some(429) {
            return Cause::RateLimited {
                retry_after: retry_after::find_in_message(text),
            };
        }
        if code("BLOB_UNKNOWN") {
            return Cause::BlobUnknown;
        }
        if code("MANIFEST_UNKNOWN") || code("NAME_UNKNOWN") || status == Some(404) {
            return Cause::NotFound;
        }
        if code("UNAUTHORIZED") || code("DENIED") || matches!(status, Some(401 | 403)) {
            return Cause::Unauthorized;
        }
        if let Some(code @ 500..=599) = status {
            return Cause::ServerError(Some(code));
        }
        if code("UNAVAILABLE") {
            return Cause::ServerError(None);
        }
        if has("connection refused") {
            return Cause::ConnectionRefused;
        }
        if has("no such host") || has("server misbehaving") || has("name resolution") {
            return Cause::Dns;
        }
        if has("i/o timeout")
            || has("deadline exceeded")
            || has("client.timeout")
            || has("handshake timeout")
            || has("timeout awaiting")
        {
            return Cause::Timeout;
        }
        if has("digest mismatch")
            || has("verifying sha256")
            || has("checksum")
            || has("gzip: invalid")
            || has("invalid gzip")
            || has("flate: corrupt")
            || has("unexpected eof")
            || has("archive/tar")
        {
            return Cause::Corrupt;
        }
        if has("connection reset") || has("broken pipe") || has(": eof") {
            return Cause::ConnectionReset;
        }
        Cause::Other(text.trim().chars().take(300).collect())
    }
}

impl fmt::Display for Cause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Cause::RateLimited {
                retry_after: Some(d),
            } => write!(f, "rate limited (429 TOOMANYREQUESTS, retry after {d:.1?})"),
            Cause::RateLimited { retry_after: None } => {
                f.write_str("rate limited (429 TOOMANYREQUESTS)")
            }
            Cause::ServerError(Some(code)) => write!(f, "server error (HTTP {code})"),
            Cause::ServerError(None) => f.write_str("server error (UNAVAILABLE)"),
            Cause::Timeout => f.write_str("timed out"),
            Cause::ConnectionRefused => f.write_str("connection refused"),
            Cause::ConnectionReset => f.write_str("connection dropped"),
            Cause::Dns => f.write_str("host name not resolved (DNS)"),
            Cause::NotFound => f.write_str("artifact not found (404 MANIFEST_UNKNOWN)"),
            Cause::Unauthorized => f.write_str("access denied (401/403)"),
            Cause::BlobUnknown => f.write_str("blob missing on the mirror (BLOB_UNKNOWN)"),
            Cause::Corrupt => f.write_str("artifact damaged in transit"),
            Cause::BadArtifact(reason) => write!(f, "not a trivy DB artifact ({reason})"),
            Cause::Other(text) => write!(f, "{text}"),
        }
    }
}

/// `unexpected status code 503 Service Unavailable`, `... 429 Too Many Requests`.
fn status_code(lower: &str) -> Option<u16> {
    if let Some(at) = lower.find("status code ") {
        let digits: String = lower[at + 12..].chars().take(3).collect();
        if let Ok(code) = digits.parse() {
            return Some(code);
        }
    }
    const REASONS: &[(&str, u16)] = &[
        (" 429 too many requests", 429),
        (" 404 not found", 404),
        (" 401 unauthorized", 401),
        (" 403 forbidden", 403),
        (" 500 internal server error", 500),
        (" 502 bad gateway", 502),
        (" 503 service unavailable", 503),
        (" 504 gateway timeout", 504),
    ];
    REASONS
        .iter()
        .find(|(reason, _)| lower.contains(reason))
        .map(|(_, code)| *code)
}

/// One mirror's failure as trivy reported it.
#[derive(Debug, Clone, PartialEq)]
pub struct MirrorFailure {
    /// The repository as trivy named it; `None` when trivy did not say (old versions).
    pub repository: Option<String>,
    pub cause: Cause,
}

/// A run that died obtaining a DB.
#[derive(Debug, Clone, PartialEq)]
pub struct DbFailure {
    pub kind: DbKind,
    /// In the order trivy tried them.
    pub mirrors: Vec<MirrorFailure>,
}

impl DbFailure {
    /// Worth a retry: every mirror failed for a reason another attempt may not meet.
    pub fn is_retryable(&self) -> bool {
        !self.mirrors.is_empty() && self.mirrors.iter().all(|m| m.cause.is_retryable())
    }
}

/// Reads a failed run's log lines. `None` when the run did not die obtaining a DB.
pub fn diagnose(lines: &[String]) -> Option<DbFailure> {
    // trivy's FATAL message goes on over the following lines (one per wrapped error).
    let fatal_at = lines.iter().rposition(|l| l.contains("FATAL"))?;
    let fatal = lines[fatal_at..].join("\n");
    let fatal = fatal.as_str();
    let kind = kind_of_fatal(fatal)?;
    let mut mirrors: Vec<MirrorFailure> = Vec::new();
    for line in lines {
        if line_kind(line) != Some(kind) || !line.contains("Failed to download artifact") {
            continue;
        }
        if let Some(repo) = quoted_field(line, "repo=") {
            let err = quoted_field(line, "err=").unwrap_or_else(|| line.clone());
            record(&mut mirrors, Some(repo), Cause::classify(&err));
        }
    }
    // `failed to download artifact from REPO: cause`: trivy aborted on this mirror.
    if let Some(at) = fatal.find("failed to download artifact from ")
        && !fatal[at..].starts_with("failed to download artifact from any source")
    {
        let rest = &fatal[at + "failed to download artifact from ".len()..];
        let repo = rest.split([':', ' ']).next().unwrap_or_default();
        // The repository itself may contain `host:port`; take up to the ": " separator.
        let repo = rest.find(": ").map(|end| &rest[..end]).unwrap_or(repo);
        record(&mut mirrors, Some(repo.to_string()), Cause::classify(rest));
    }
    if mirrors.is_empty() {
        let repository = registry_url_repository(fatal);
        record(&mut mirrors, repository, Cause::classify(fatal));
    }
    Some(DbFailure { kind, mirrors })
}

/// Adds a mirror's failure, or updates it when trivy named the same repository again.
fn record(mirrors: &mut Vec<MirrorFailure>, repository: Option<String>, cause: Cause) {
    let known = repository.as_deref().and_then(|repo| {
        mirrors.iter_mut().find(|m| {
            m.repository
                .as_deref()
                .is_some_and(|r| crate::mirrors::same_repository(r, repo))
        })
    });
    match known {
        Some(existing) => existing.cause = cause,
        None => mirrors.push(MirrorFailure { repository, cause }),
    }
}

/// A run stopped at its deadline: if trivy was still downloading a DB (its last download line
/// names a repository and nothing says it finished), that mirror stalled.
pub fn diagnose_stall(lines: &[String]) -> Option<DbFailure> {
    let (index, line) = lines
        .iter()
        .enumerate()
        .rev()
        .find(|(_, l)| l.contains("Downloading artifact") && l.contains("repo=\""))?;
    let kind = line_kind(line)?;
    let finished = lines[index..].iter().any(|l| {
        line_kind(l) == Some(kind)
            && (l.contains("successfully downloaded") || l.contains("Failed to download"))
    });
    if finished {
        return None;
    }
    Some(DbFailure {
        kind,
        mirrors: vec![MirrorFailure {
            repository: quoted_field(line, "repo="),
            cause: Cause::Timeout,
        }],
    })
}

fn kind_of_fatal(fatal: &str) -> Option<DbKind> {
    let lower = fatal.to_ascii_lowercase();
    if lower.contains("java db") || lower.contains("javadb") || lower.contains("java-db") {
        Some(DbKind::Java)
    } else if lower.contains("vulnerability db") || lower.contains("db error") {
        Some(DbKind::Vulnerability)
    } else if lower.contains("checks bundle") || lower.contains("policy bundle") {
        Some(DbKind::Checks)
    } else {
        None
    }
}

fn line_kind(line: &str) -> Option<DbKind> {
    if line.contains("[javadb]") {
        Some(DbKind::Java)
    } else if line.contains("[vulndb]") || line.contains("[db]") {
        Some(DbKind::Vulnerability)
    } else if line.contains("[misconfig]") || line.contains("checks") {
        Some(DbKind::Checks)
    } else {
        None
    }
}

/// `key="value"` as trivy's logger writes it (Go-quoted).
fn quoted_field(line: &str, key: &str) -> Option<String> {
    let start = line.find(key)? + key.len();
    let rest = line[start..].strip_prefix('"')?;
    let mut out = String::new();
    let mut chars = rest.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next()? {
                'n' => out.push('\n'),
                't' => out.push('\t'),
                other => out.push(other),
            },
            '"' => return Some(out),
            c => out.push(c),
        }
    }
    None
}

/// `GET https://HOST/v2/PATH/manifests/TAG` → `HOST/PATH`.
fn registry_url_repository(text: &str) -> Option<String> {
    let start = text.find("://")? + 3;
    let rest = &text[start..];
    let (host, path) = rest.split_once("/v2/")?;
    if host.contains(' ') {
        return None;
    }
    let end = ["/manifests/", "/blobs/", "/tags/"]
        .iter()
        .filter_map(|m| path.find(m))
        .min()?;
    Some(format!("{host}/{}", &path[..end]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(text: &str) -> Vec<String> {
        text.lines().map(str::to_owned).collect()
    }

    const SEED_FAILURE: &str = r#"2026-12-04T16:00:00Z	INFO	[vulndb] Need to update DB
2026-12-04T16:00:00Z	INFO	[vulndb] Downloading vulnerability DB...
2026-12-04T16:00:00Z	INFO	[vulndb] Downloading artifact...	repo="ghcr.io/aquasecurity/trivy-db:2"
2026-12-04T16:00:04Z	ERROR	[vulndb] Failed to download artifact	repo="ghcr.io/aquasecurity/trivy-db:2" err="OCI repository error: 1 error occurred:\n\t* GET https://ghcr.io/v2/aquasecurity/trivy-db/manifests/2: TOOMANYREQUESTS: retry-after: 153.601µs, allowed: 44000/minute\n\n"
2026-12-04T16:00:04Z	FATAL	Fatal error	init error: DB error: failed to download vulnerability DB: OCI artifact error: failed to download vulnerability DB: failed to download artifact from any source"#;

    #[test]
    fn the_seed_failure_is_a_rate_limit_on_ghcr() {
        let failure = diagnose(&lines(SEED_FAILURE)).unwrap();
        assert_eq!(failure.kind, DbKind::Vulnerability);
        assert_eq!(
            failure.mirrors,
            vec![MirrorFailure {
                repository: Some("ghcr.io/aquasecurity/trivy-db:2".into()),
                cause: Cause::RateLimited {
                    retry_after: Some(Duration::from_nanos(153_601))
                },
            }]
        );
        assert!(failure.is_retryable());
    }

    #[test]
    fn fallback_then_abort_names_both_mirrors() {
        let text = r#"2026-12-04T16:00:04Z	ERROR	[vulndb] Failed to download artifact	repo="127.0.0.1:4000/trivy-db:2" err="OCI repository error: 1 error occurred:\n\t* GET http://127.0.0.1:4000/v2/trivy-db/manifests/2: unexpected status code 503 Service Unavailable\n\n"
2026-12-04T16:00:04Z	INFO	[vulndb] Trying to download artifact from other repository...
2026-12-04T16:00:04Z	FATAL	Fatal error	run error: init error: DB error: failed to download vulnerability DB: OCI artifact error: failed to download vulnerability DB: failed to download artifact from 127.0.0.1:4001/trivy-db:2: OCI repository error: 1 error occurred:\n\t* Get "http://127.0.0.1:4001/v2/": dial tcp 127.0.0.1:4001: connect: connection refused"#;
        let failure = diagnose(&lines(text)).unwrap();
        let got: Vec<_> = failure
            .mirrors
            .iter()
            .map(|m| (m.repository.clone().unwrap(), m.cause.clone()))
            .collect();
        assert_eq!(
            got,
            vec![
                (
                    "127.0.0.1:4000/trivy-db:2".to_string(),
                    Cause::ServerError(Some(503))
                ),
                (
                    "127.0.0.1:4001/trivy-db:2".to_string(),
                    Cause::ConnectionRefused
                ),
            ]
        );
    }

    /// trivy 0.76's real stderr (from the rig): the cause is on a continuation line.
    #[test]
    fn multi_line_fatal_messages_from_real_trivy() {
        let refused = "2026-12-04T16:20:20Z\tFATAL\tFatal error\trun error: init error: DB error: failed to download vulnerability DB: OCI artifact error: failed to download vulnerability DB: failed to download artifact from 127.0.0.1:36505/trivy-db:2: OCI repository error: 1 error occurred:\n\t* Get \"https://127.0.0.1:36505/v2/\": dial tcp 127.0.0.1:36505: connect: connection refused; Get \"http://127.0.0.1:36505/v2/\": dial tcp 127.0.0.1:36505: connect: connection refused";
        let not_found = "2026-12-04T16:20:20Z\tFATAL\tFatal error\trun error: init error: DB error: failed to download vulnerability DB: OCI artifact error: failed to download vulnerability DB: failed to download artifact from 127.0.0.1:32799/trivy-db:2: OCI repository error: 1 error occurred:\n\t* GET http://127.0.0.1:32799/v2/trivy-db/manifests/2: MANIFEST_UNKNOWN: manifest unknown";
        let unauthorized = "2026-12-04T16:20:20Z\tWARN\tSee https://trivy.dev/docs/v0.76/guide/references/troubleshooting#db\n2026-12-04T16:20:20Z\tFATAL\tFatal error\trun error: init error: DB error: failed to download vulnerability DB: OCI artifact error: failed to download vulnerability DB: failed to download artifact from 127.0.0.1:44773/trivy-db:2: OCI repository error: 1 error occurred:\n\t* GET http://127.0.0.1:44773/v2/trivy-db/manifests/2: UNAUTHORIZED: authentication required";
        let cut = "2026-12-04T16:20:20Z\tFATAL\tFatal error\trun error: init error: DB error: failed to download vulnerability DB: OCI artifact error: failed to download vulnerability DB: failed to download artifact from 127.0.0.1:34425/trivy-db:2: oci download error: failed to fetch the layer: Get \"http://127.0.0.1:34425/v2/trivy-db/blobs/sha256:80fe\": EOF";
        let corrupt = "2026-12-04T16:20:20Z\tFATAL\tFatal error\trun error: init error: DB error: failed to download vulnerability DB: OCI artifact error: failed to download vulnerability DB: failed to download artifact from 127.0.0.1:34425/trivy-db:2: oci download error: copy error: error verifying sha256 checksum after reading 1272 bytes; got \"sha256:aa\", want \"sha256:bb\"";
        let cases = [
            (
                refused,
                "127.0.0.1:36505/trivy-db:2",
                Cause::ConnectionRefused,
            ),
            (not_found, "127.0.0.1:32799/trivy-db:2", Cause::NotFound),
            (
                unauthorized,
                "127.0.0.1:44773/trivy-db:2",
                Cause::Unauthorized,
            ),
            (cut, "127.0.0.1:34425/trivy-db:2", Cause::ConnectionReset),
            (corrupt, "127.0.0.1:34425/trivy-db:2", Cause::Corrupt),
        ];
        for (text, repo, cause) in cases {
            let failure = diagnose(&lines(text)).unwrap();
            assert_eq!(failure.kind, DbKind::Vulnerability);
            assert_eq!(
                failure.mirrors,
                vec![MirrorFailure {
                    repository: Some(repo.into()),
                    cause
                }],
                "{text}"
            );
        }
    }

    #[test]
    fn old_trivy_names_the_url_only() {
        let text = "2024-01-01T00:00:00Z\tFATAL\tinit error: DB error: failed to download vulnerability DB: database download error: OCI repository error: GET https://ghcr.io/v2/aquasecurity/trivy-db/manifests/2: TOOMANYREQUESTS: retry-after: 1s";
        let failure = diagnose(&lines(text)).unwrap();
        assert_eq!(
            failure.mirrors[0].repository.as_deref(),
            Some("ghcr.io/aquasecurity/trivy-db")
        );
        assert_eq!(
            failure.mirrors[0].cause.retry_after(),
            Some(Duration::from_secs(1))
        );
    }

    #[test]
    fn java_db_failures_are_told_apart() {
        let text = r#"2026-12-04T16:00:04Z	ERROR	[javadb] Failed to download artifact	repo="r.example/trivy-java-db:1" err="GET https://r.example/v2/trivy-java-db/manifests/1: TOOMANYREQUESTS: slow down"
2026-12-04T16:00:04Z	FATAL	Fatal error	run error: image scan error: scan error: scan failed: failed analysis: analyze error: pipeline error: failed to analyze layer: post analysis error: Java DB error: Java DB update failed: failed to download artifact from any source"#;
        let failure = diagnose(&lines(text)).unwrap();
        assert_eq!(failure.kind, DbKind::Java);
        assert_eq!(
            failure.mirrors[0].repository.as_deref(),
            Some("r.example/trivy-java-db:1")
        );
    }

    #[test]
    fn a_run_stopped_mid_download_names_the_stalled_mirror() {
        let stalled = lines(
            "2026-12-04T16:00:00Z\tINFO\t[vulndb] Downloading vulnerability DB...\n2026-12-04T16:00:00Z\tINFO\t[vulndb] Downloading artifact...\trepo=\"127.0.0.1:9/trivy-db:2\"",
        );
        assert_eq!(
            diagnose_stall(&stalled),
            Some(DbFailure {
                kind: DbKind::Vulnerability,
                mirrors: vec![MirrorFailure {
                    repository: Some("127.0.0.1:9/trivy-db:2".into()),
                    cause: Cause::Timeout
                }],
            })
        );
        let finished = lines(
            "2026-12-04T16:00:00Z\tINFO\t[vulndb] Downloading artifact...\trepo=\"r/db:2\"\n2026-12-04T16:00:01Z\tINFO\t[vulndb] Artifact successfully downloaded\trepo=\"r/db:2\"",
        );
        assert_eq!(
            diagnose_stall(&finished),
            None,
            "stuck scanning, not downloading"
        );
        assert_eq!(diagnose_stall(&lines("nothing about downloads")), None);
    }

    #[test]
    fn other_failures_are_not_db_failures() {
        let text = "2026-12-04T16:00:04Z\tFATAL\tFatal error\trun error: image scan error: unable to find the specified image \"nope\"";
        assert_eq!(diagnose(&lines(text)), None);
        assert_eq!(diagnose(&lines("all good")), None);
        let text = "2026-12-04T16:00:04Z\tFATAL\tFatal error\tinit error: DB error: failed to download vulnerability DB: mkdir /cache/db: permission denied";
        let failure = diagnose(&lines(text)).unwrap();
        assert!(!failure.is_retryable());
    }

    #[test]
    fn causes() {
        let cases: &[(&str, Cause)] = &[
            (
                "TOOMANYREQUESTS: x",
                Cause::RateLimited { retry_after: None },
            ),
            (
                "unexpected status code 429 Too Many Requests",
                Cause::RateLimited { retry_after: None },
            ),
            (
                "unexpected status code 502 Bad Gateway",
                Cause::ServerError(Some(502)),
            ),
            ("UNAVAILABLE: try later", Cause::ServerError(None)),
            ("MANIFEST_UNKNOWN: manifest unknown", Cause::NotFound),
            (
                "unexpected status code 404 Not Found (HEAD responses have no body)",
                Cause::NotFound,
            ),
            ("UNAUTHORIZED: authentication required", Cause::Unauthorized),
            (
                "DENIED: requested access to the resource is denied",
                Cause::Unauthorized,
            ),
            ("dial tcp: lookup nope.invalid: no such host", Cause::Dns),
            (
                "dial tcp 127.0.0.1:9: connect: connection refused",
                Cause::ConnectionRefused,
            ),
            ("read tcp: connection reset by peer", Cause::ConnectionReset),
            (
                "net/http: request canceled (Client.Timeout exceeded)",
                Cause::Timeout,
            ),
            ("BLOB_UNKNOWN: blob unknown to registry", Cause::BlobUnknown),
            ("failed to copy: unexpected EOF", Cause::Corrupt),
            ("sha256 digest mismatch", Cause::Corrupt),
        ];
        for (text, expected) in cases {
            assert_eq!(&Cause::classify(text), expected, "{text}");
        }
        assert!(!Cause::classify("mkdir /cache/db: permission denied").is_retryable());
    }
}
