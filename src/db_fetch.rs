//! trivy-ecr's own DB download: makes sure a fresh DB is in trivy's cache before the scan, so
//! trivy can run with `--skip-db-update`.
//!
//! Under an exclusive cache lock it checks freshness (a fresh cache costs no request), then
//! pulls from the mirror chain with the same retry policy as the rest of trivy-ecr: a mirror
//! that fails transiently goes to the back and waits out its backoff (or the registry's
//! `Retry-After`), the next mirror is tried at once, and 404/401/403 rule a mirror out for the
//! run. The blob is verified while it streams and installed atomically.

use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::path::Path;
use std::time::{Instant, SystemTime};

use serde::{Deserialize, Serialize};

use crate::checks_bundle;
use crate::db_archive::{self, ArchiveError};
use crate::db_cache::{self, CacheLock, DbLocation, Metadata, Staging};
use crate::failure::{Cause, DbFailure, MirrorFailure};
use crate::mirrors::DbKind;
use crate::progress::ProgressMode;
use crate::registry_client::{FetchError, Reference, RegistryClient, TransportKind};
use crate::retry::{Decision, MirrorChain, RetryBudget, RetryPolicy};
use crate::supervisor::Signals;

/// Largest compressed layer accepted (trivy's Java DB is the biggest, well under this).
pub const MAX_LAYER_BYTES: u64 = 4 << 30;
/// Largest unpacked DB accepted, whatever the layer's size.
pub const MAX_UNPACKED_BYTES: u64 = 16 << 30;

/// How much a layer may unpack to: 64 times its size (trivy's DBs compress about 4–15×), at
/// least 64 MiB, at most [`MAX_UNPACKED_BYTES`]. A tar bomb stops at the limit.
pub fn unpack_limit(layer_size: u64) -> u64 {
    layer_size
        .saturating_mul(64)
        .clamp(64 << 20, MAX_UNPACKED_BYTES)
}

pub fn layer_media_type(kind: DbKind) -> &'static str {
    match kind {
        DbKind::Vulnerability => "application/vnd.aquasec.trivy.db.layer.v1.tar+gzip",
        DbKind::Java => "application/vnd.aquasec.trivy.javadb.layer.v1.tar+gzip",
        DbKind::Checks => "application/vnd.cncf.openpolicyagent.layer.v1.tar+gzip",
    }
}

/// What `ensure_fresh` did.
#[derive(Debug)]
pub enum FetchOutcome {
    /// The cached DB is fresh: no request was made.
    AlreadyFresh,
    Downloaded {
        from: String,
        bytes: u64,
        seconds: f64,
    },
}

/// Why no fresh DB could be had.
#[derive(Debug, thiserror::Error)]
pub enum FetchStop {
    /// Every mirror failed within the budget; the message names each mirror and its last error.
    #[error("{0}")]
    Unavailable(String),
    #[error("interrupted")]
    Signal(i32),
    /// A local problem (disk, permissions): not a mirror's fault, so not retried.
    #[error("{0}")]
    Local(String),
}

/// Where the DB in the cache came from, kept beside trivy's own files for `db status`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct DbSource {
    pub repository: String,
    pub digest: String,
    pub downloaded_at: String,
}

fn sources_path(cache_dir: &Path) -> std::path::PathBuf {
    cache_dir.join("trivy-ecr").join("sources.json")
}

pub fn read_sources(cache_dir: &Path) -> std::collections::BTreeMap<String, DbSource> {
    fs::read(sources_path(cache_dir))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

fn write_source(cache_dir: &Path, kind: DbKind, source: DbSource) -> std::io::Result<()> {
    let mut all = read_sources(cache_dir);
    all.insert(kind_key(kind).to_string(), source);
    let path = sources_path(cache_dir);
    fs::create_dir_all(path.parent().expect("has a parent"))?;
    let temp = path.with_extension("json.tmp");
    fs::write(
        &temp,
        serde_json::to_vec_pretty(&all).map_err(std::io::Error::other)?,
    )?;
    fs::rename(temp, path)
}

pub fn kind_key(kind: DbKind) -> &'static str {
    match kind {
        DbKind::Vulnerability => "db",
        DbKind::Java => "java-db",
        DbKind::Checks => "checks",
    }
}

/// One DB to make fresh.
pub struct FetchJob<'a> {
    pub kind: DbKind,
    pub cache_dir: &'a Path,
    pub chain: &'a mut MirrorChain,
    pub policy: RetryPolicy,
    pub progress: ProgressMode,
}

/// Makes sure `job.kind` is fresh in the cache, downloading it if trivy would.
pub async fn ensure_fresh(
    client: &mut RegistryClient,
    job: FetchJob<'_>,
    signals: &mut Signals,
) -> Result<FetchOutcome, FetchStop> {
    let location = DbLocation::new(job.cache_dir, job.kind);
    let _lock = tokio::select! {
        lock = CacheLock::exclusive(job.cache_dir) => lock.map_err(|e| FetchStop::Local(format!("cannot lock the cache {}: {e}", job.cache_dir.display())))?,
        signal = signals.recv() => return Err(FetchStop::Signal(signal as i32)),
    };
    let freshness = match job.kind {
        DbKind::Checks => checks_bundle::staleness(&location, SystemTime::now()),
        _ => db_cache::staleness(&location, SystemTime::now()).map(|_| ()),
    };
    match freshness {
        Ok(()) => {
            tracing::debug!(kind = %job.kind, "cached DB is fresh; no download");
            return Ok(FetchOutcome::AlreadyFresh);
        }
        Err(why) => tracing::debug!(kind = %job.kind, %why, "DB needs a download"),
    }
    let mut budget = RetryBudget::new(job.policy);
    loop {
        let now = Instant::now();
        let Some((repository, wait)) = job.chain.next_ready(now).map(|(r, w)| (r.to_string(), w))
        else {
            return Err(unavailable(
                job.kind,
                job.chain,
                &budget,
                "every mirror was ruled out",
            ));
        };
        if budget.attempts > 0 {
            match budget.decide(wait) {
                Decision::Retry { wait } => {
                    if !wait.is_zero() {
                        tokio::select! {
                            _ = tokio::time::sleep(wait) => {}
                            signal = signals.recv() => return Err(FetchStop::Signal(signal as i32)),
                        }
                        budget.waited += wait;
                    }
                }
                Decision::AttemptsExhausted => {
                    return Err(unavailable(
                        job.kind,
                        job.chain,
                        &budget,
                        "no attempts left",
                    ));
                }
                Decision::WaitBudgetExhausted { needed } => {
                    let reason = format!(
                        "the next mirror is usable only in {needed:.1?}, beyond the wait budget"
                    );
                    return Err(unavailable(job.kind, job.chain, &budget, &reason));
                }
            }
        }
        budget.attempts += 1;
        let started = Instant::now();
        let attempt = tokio::select! {
            result = pull_once(client, job.kind, &repository, job.cache_dir, &location, job.progress) => result,
            signal = signals.recv() => return Err(FetchStop::Signal(signal as i32)),
        };
        match attempt {
            Ok((bytes, digest)) => {
                let source = DbSource {
                    repository: repository.clone(),
                    digest,
                    downloaded_at: humantime::format_rfc3339_seconds(SystemTime::now()).to_string(),
                };
                if let Err(err) = write_source(job.cache_dir, job.kind, source) {
                    tracing::warn!(%err, "cannot record where the DB came from");
                }
                let seconds = started.elapsed().as_secs_f64();
                job.progress.phase(format_args!(
                    "{} ready: {:.1} MiB from {repository} in {seconds:.1}s",
                    job.kind,
                    bytes as f64 / (1 << 20) as f64
                ));
                return Ok(FetchOutcome::Downloaded {
                    from: repository,
                    bytes,
                    seconds,
                });
            }
            Err(err) => {
                let cause = err.cause();
                if let FetchError::Local(io) = &err {
                    return Err(FetchStop::Local(format!(
                        "cannot write the {} into {}: {io}",
                        job.kind,
                        job.cache_dir.display()
                    )));
                }
                job.chain.record(
                    &DbFailure {
                        kind: job.kind,
                        mirrors: vec![MirrorFailure {
                            repository: Some(repository.clone()),
                            cause: cause.clone(),
                        }],
                    },
                    &job.policy,
                    Instant::now(),
                );
                let detail = failure_detail(&err, &cause);
                crate::retry::announce_mirror_failure(
                    job.kind,
                    &repository,
                    &detail,
                    job.chain,
                    &budget,
                );
            }
        }
    }
}

/// Statuses are described by their cause; transport errors say more in their own words.
fn failure_detail(err: &FetchError, cause: &Cause) -> String {
    match err {
        FetchError::Transport(text, TransportKind::Reset | TransportKind::Other) => {
            format!("{cause}: {text}")
        }
        _ => cause.to_string(),
    }
}

fn unavailable(kind: DbKind, chain: &MirrorChain, budget: &RetryBudget, reason: &str) -> FetchStop {
    FetchStop::Unavailable(crate::retry::unavailable_message(
        kind, chain, budget, reason,
    ))
}

/// One try against one mirror: manifest, verified blob, safe extraction, atomic install.
async fn pull_once(
    client: &mut RegistryClient,
    kind: DbKind,
    repository: &str,
    cache_dir: &Path,
    location: &DbLocation,
    progress: ProgressMode,
) -> Result<(u64, String), FetchError> {
    let reference =
        Reference::parse(repository, kind.schema_tag()).map_err(FetchError::BadArtifact)?;
    let (manifest, layer) = client
        .manifest(&reference, layer_media_type(kind), MAX_LAYER_BYTES)
        .await?;
    progress.phase(format_args!(
        "downloading the {kind} from {repository} ({:.1} MiB)",
        layer.size as f64 / (1 << 20) as f64
    ));
    let staging = Staging::new(cache_dir)?;
    let blob_path = staging.path().join("artifact.tar.gz");
    {
        let mut sink = BufWriter::new(File::create(&blob_path)?);
        let bar = progress.download(layer.size, &format!("{kind}"));
        client
            .blob(&reference, &layer, &mut sink, &mut |n| bar.update(n))
            .await?;
        sink.flush()?;
    }
    fs::create_dir(staging.db_dir())?;
    let (blob, dir) = (blob_path.clone(), staging.db_dir());
    let limit = unpack_limit(layer.size);
    let unpacked = tokio::task::spawn_blocking(move || match kind {
        DbKind::Checks => {
            let content = dir.join("content");
            fs::create_dir(&content).map_err(|e| ArchiveError::Damaged(e.to_string()))?;
            checks_bundle::extract_tree(&blob, &content, limit)
        }
        _ => db_archive::extract(kind, &blob, &dir, limit),
    })
    .await
    .map_err(|e| FetchError::Local(std::io::Error::other(e)))?;
    unpacked.map_err(|e| match e {
        ArchiveError::Damaged(reason) => FetchError::DigestMismatch {
            expected: "a readable tar.gz".into(),
            actual: reason,
        },
        other => FetchError::BadArtifact(other.to_string()),
    })?;
    fs::remove_file(&blob_path)?;
    if kind == DbKind::Checks {
        let version = checks_bundle::major_version(&manifest.annotations);
        checks_bundle::write_metadata(&staging.db_dir(), &manifest.digest, version)?;
    } else {
        // metadata.json must be readable, or trivy would download again.
        Metadata::read(&staging.db_dir().join("metadata.json"))
            .map_err(|e| FetchError::BadArtifact(format!("metadata.json: {e}")))?;
    }
    staging.install(location, SystemTime::now())?;
    Ok((layer.size, layer.digest))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unpack_limits_scale_with_the_layer() {
        assert_eq!(unpack_limit(1024), 64 << 20);
        assert_eq!(unpack_limit(60 << 20), (60 * 64) << 20);
        assert_eq!(unpack_limit(1 << 30), MAX_UNPACKED_BYTES);
    }
}
