//! `trivy-ecr db mirror --to REGISTRY/PREFIX`: copies trivy's DB artifacts from the mirror chain
//! into a registry the organisation owns, byte for byte (same manifest and blob digests), so
//! scans read them from there (`TRIVY_ECR_DB_REPOSITORIES=REGISTRY/PREFIX/trivy-db:2,...`)
//! instead of sharing the public mirrors' rate limits.
//!
//! The source side is `db pull`'s: the same chain, retry policy and failover; a source that fails
//! goes to the back of the chain. The destination is one registry: its transient failures (429,
//! 5xx, timeouts) are waited out with their own backoff within the same budget; refusals
//! (credentials, permissions, a missing repository) stop at once with one line naming the
//! registry and the fix. A destination whose tag already points at the source's manifest
//! digest costs one HEAD and nothing is uploaded; blobs it already holds are not uploaded again.

use std::time::Instant;

use crate::db_fetch::{MAX_LAYER_BYTES, layer_media_type};
use crate::failure::{Cause, DbFailure, MirrorFailure};
use crate::mirrors::{DbKind, same_repository};
use crate::progress::ProgressMode;
use crate::registry_client::{Access, FetchError, Reference, RegistryClient};
use crate::registry_push::UploadError;
use crate::retry::{Decision, MirrorChain, RetryBudget, RetryPolicy};
use crate::supervisor::Signals;

/// The repository name each artifact gets under the destination prefix.
pub fn artifact_name(kind: DbKind) -> &'static str {
    match kind {
        DbKind::Vulnerability => "trivy-db",
        DbKind::Java => "trivy-java-db",
        DbKind::Checks => "trivy-checks",
    }
}

/// `--to REGISTRY[/PREFIX]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Destination {
    pub registry: String,
    /// Repository path prefix without slashes at either end; may be empty.
    pub prefix: String,
}

impl Destination {
    pub fn parse(text: &str) -> Result<Destination, String> {
        let text = text.trim().trim_end_matches('/');
        if text.contains("://") {
            return Err("write REGISTRY/PREFIX without a scheme".into());
        }
        let (registry, prefix) = text.split_once('/').unwrap_or((text, ""));
        let looks_like_host =
            registry.contains('.') || registry.contains(':') || registry == "localhost";
        if registry.is_empty() || !looks_like_host {
            return Err(format!(
                "'{registry}' is not a registry host; write REGISTRY/PREFIX, e.g. 123456789012.dkr.ecr.eu-west-1.amazonaws.com/trivy"
            ));
        }
        let component_ok = |c: &str| {
            !c.is_empty()
                && c.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
                && c.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
        };
        if !prefix.is_empty() && !prefix.split('/').all(component_ok) {
            return Err(format!(
                "'{prefix}' is not a repository path: use lower-case letters, digits, '.', '_', '-' and '/', without a tag"
            ));
        }
        Ok(Destination {
            registry: registry.to_string(),
            prefix: prefix.to_string(),
        })
    }

    /// `REGISTRY/PREFIX/trivy-db:2` and the like.
    pub fn reference(&self, kind: DbKind) -> Reference {
        let name = artifact_name(kind);
        Reference {
            registry: self.registry.clone(),
            repository: if self.prefix.is_empty() {
                name.to_string()
            } else {
                format!("{}/{name}", self.prefix)
            },
            tag: kind.schema_tag().to_string(),
        }
    }
}

/// The repositories to copy `kind` from: the configured chain (or the default one) without the
/// destination itself, so the same `TRIVY_ECR_DB_REPOSITORIES` serves scans and the mirror job.
/// A chain naming only the destination falls back to the default chain.
pub fn sources(kind: DbKind, configured: Option<Vec<String>>, destination: &Reference) -> Sources {
    let defaults = || kind.default_chain();
    let destination = destination.to_string();
    let chain = configured.unwrap_or_else(defaults);
    let before = chain.len();
    let kept: Vec<String> = chain
        .into_iter()
        .filter(|r| !same_repository(r, &destination))
        .collect();
    let skipped_destination = kept.len() != before;
    Sources {
        repositories: if kept.is_empty() { defaults() } else { kept },
        skipped_destination,
    }
}

#[derive(Debug, PartialEq, Eq)]
pub struct Sources {
    pub repositories: Vec<String>,
    /// The configured chain named the destination, which was left out.
    pub skipped_destination: bool,
}

/// What a mirror run did for one artifact.
#[derive(Debug, PartialEq)]
pub enum MirrorOutcome {
    /// The destination already had this manifest: one HEAD, nothing uploaded.
    UpToDate { digest: String },
    Copied {
        digest: String,
        from: String,
        /// Bytes uploaded (blobs the destination already had are not counted).
        uploaded: u64,
        seconds: f64,
    },
}

/// Why an artifact was not copied.
#[derive(Debug, thiserror::Error)]
pub enum MirrorStop {
    /// No source mirror delivered within the budget (exit 3); names each mirror.
    #[error("{0}")]
    Unavailable(String),
    /// The destination refused, or stayed unavailable (exit 6); names the registry and the fix.
    #[error("{0}")]
    Destination(String),
    #[error("interrupted")]
    Signal(i32),
}

/// One artifact to copy.
pub struct MirrorJob<'a> {
    pub kind: DbKind,
    pub chain: &'a mut MirrorChain,
    pub destination: &'a Reference,
    pub policy: RetryPolicy,
    pub progress: ProgressMode,
}

/// Which side an attempt failed on.
enum CopyError {
    Source(FetchError),
    Destination(FetchError),
}

impl From<UploadError> for CopyError {
    fn from(err: UploadError) -> CopyError {
        match err {
            UploadError::Source(e) => CopyError::Source(e),
            UploadError::Destination(e) => CopyError::Destination(e),
        }
    }
}

/// Copies `job.kind` from the first source that delivers into `job.destination`.
pub async fn mirror(
    client: &mut RegistryClient,
    job: MirrorJob<'_>,
    signals: &mut Signals,
) -> Result<MirrorOutcome, MirrorStop> {
    let MirrorJob {
        kind,
        chain,
        destination,
        policy,
        progress,
    } = job;
    let target = destination.to_string();
    // The destination's own backoff, so its 429s and 5xx are waited out like a mirror's.
    let mut destination_backoff = MirrorChain::new(kind, vec![target.clone()], false, &policy);
    let mut last_failed_destination: Option<Cause> = None;
    let mut budget = RetryBudget::new(policy);
    loop {
        let now = Instant::now();
        let Some((source, source_wait)) = chain.next_ready(now).map(|(r, w)| (r.to_string(), w))
        else {
            return Err(source_unavailable(
                kind,
                chain,
                &budget,
                "every mirror was ruled out",
            ));
        };
        let wait = source_wait.max(destination_backoff.ready_in(now));
        if budget.attempts > 0 {
            let reason = match budget.decide(wait) {
                Decision::Retry { wait } => {
                    if !wait.is_zero() {
                        tokio::select! {
                            _ = tokio::time::sleep(wait) => {}
                            signal = signals.recv() => return Err(MirrorStop::Signal(signal as i32)),
                        }
                        budget.waited += wait;
                    }
                    None
                }
                Decision::AttemptsExhausted => Some("no attempts left".to_string()),
                Decision::WaitBudgetExhausted { needed } => Some(format!(
                    "the next try is possible only in {needed:.1?}, beyond the wait budget"
                )),
            };
            if let Some(reason) = reason {
                return Err(match &last_failed_destination {
                    Some(cause) => MirrorStop::Destination(format!(
                        "could not write the {kind} to {target} after {} attempt{} and {:.1}s of waiting ({reason}): {cause}. Retry later, or raise TRIVY_ECR_MAX_ATTEMPTS/TRIVY_ECR_MAX_WAIT",
                        budget.attempts,
                        if budget.attempts == 1 { "" } else { "s" },
                        budget.waited.as_secs_f64()
                    )),
                    None => source_unavailable(kind, chain, &budget, &reason),
                });
            }
        }
        budget.attempts += 1;
        let attempt = tokio::select! {
            result = copy_once(client, kind, &source, destination, progress) => result,
            signal = signals.recv() => return Err(MirrorStop::Signal(signal as i32)),
        };
        match attempt {
            Ok(outcome) => return Ok(outcome),
            Err(CopyError::Source(err)) => {
                last_failed_destination = None;
                let cause = err.cause();
                record(chain, kind, &source, cause.clone(), &policy);
                let detail = match &cause {
                    Cause::Other(_) | Cause::BadArtifact(_) => cause.to_string(),
                    _ => format!("{cause}: {err}"),
                };
                crate::retry::announce_mirror_failure(kind, &source, &detail, chain, &budget);
            }
            Err(CopyError::Destination(err)) => {
                let cause = err.cause();
                if !destination_may_recover(&cause) {
                    return Err(MirrorStop::Destination(refusal(
                        client,
                        kind,
                        destination,
                        &err,
                    )));
                }
                record(
                    &mut destination_backoff,
                    kind,
                    &target,
                    cause.clone(),
                    &policy,
                );
                let wait = destination_backoff.ready_in(Instant::now());
                crate::say!(
                    "{kind}: destination {target} {cause}: {err}; retrying in {:.1}s (attempt {}/{})",
                    wait.as_secs_f64(),
                    budget.attempts + 1,
                    policy.max_attempts
                );
                last_failed_destination = Some(cause);
            }
        }
    }
}

/// One try: source manifest, one HEAD at the destination, the blobs it lacks, the manifest.
async fn copy_once(
    client: &mut RegistryClient,
    kind: DbKind,
    source: &str,
    destination: &Reference,
    progress: ProgressMode,
) -> Result<MirrorOutcome, CopyError> {
    let from = Reference::parse(source, kind.schema_tag())
        .map_err(|e| CopyError::Source(FetchError::BadArtifact(e)))?;
    let manifest = client
        .manifest_bytes(&from, Access::Pull)
        .await
        .map_err(CopyError::Source)?;
    let parsed = manifest.parse().map_err(CopyError::Source)?;
    let layer = parsed
        .trivy_layer(layer_media_type(kind), MAX_LAYER_BYTES)
        .map_err(CopyError::Source)?;
    if client
        .manifest_digest(destination)
        .await
        .map_err(CopyError::Destination)?
        .as_deref()
        == Some(manifest.digest.as_str())
    {
        return Ok(MirrorOutcome::UpToDate {
            digest: manifest.digest,
        });
    }
    let started = Instant::now();
    let mut uploaded = 0;
    for blob in [&parsed.config, &layer] {
        if client
            .has_blob(destination, &blob.digest)
            .await
            .map_err(CopyError::Destination)?
        {
            tracing::debug!(digest = %blob.digest, "the destination already has this blob");
            continue;
        }
        if blob.digest == layer.digest {
            progress.phase(format_args!(
                "copying the {kind} ({:.1} MiB) from {source} to {destination}",
                blob.size as f64 / (1 << 20) as f64
            ));
        }
        let response = client
            .blob_response(&from, blob)
            .await
            .map_err(CopyError::Source)?;
        let bar = progress.download(blob.size, &format!("{kind}"));
        client
            .upload_blob(destination, blob, response, &mut |n| bar.update(n))
            .await?;
        uploaded += blob.size;
    }
    client
        .put_manifest(destination, &manifest, &manifest.media_type(&parsed))
        .await
        .map_err(CopyError::Destination)?;
    Ok(MirrorOutcome::Copied {
        digest: manifest.digest,
        from: source.to_string(),
        uploaded,
        seconds: started.elapsed().as_secs_f64(),
    })
}

fn record(
    chain: &mut MirrorChain,
    kind: DbKind,
    repository: &str,
    cause: Cause,
    policy: &RetryPolicy,
) {
    chain.record(
        &DbFailure {
            kind,
            mirrors: vec![MirrorFailure {
                repository: Some(repository.to_string()),
                cause,
            }],
        },
        policy,
        Instant::now(),
    );
}

/// Failures of the destination worth waiting out; anything else is its answer for this run.
fn destination_may_recover(cause: &Cause) -> bool {
    matches!(
        cause,
        Cause::RateLimited { .. }
            | Cause::ServerError(_)
            | Cause::Timeout
            | Cause::ConnectionRefused
            | Cause::ConnectionReset
            | Cause::Dns
    )
}

/// The one-line error for a destination that said no: what it refused, with which
/// credentials, and what to do about it.
fn refusal(
    client: &RegistryClient,
    kind: DbKind,
    destination: &Reference,
    err: &FetchError,
) -> String {
    let registry = &destination.registry;
    let repository = &destination.repository;
    let used = client.credential_source(registry);
    let status = match err {
        FetchError::Status { status, .. } => Some(*status),
        _ => None,
    };
    match (err.cause(), status) {
        (Cause::Unauthorized, Some(403)) => format!(
            "{registry} denied pushing the {kind} to {repository} ({err}; credentials: {used}). Grant push on {repository} (private ECR: ecr:BatchCheckLayerAvailability, ecr:InitiateLayerUpload, ecr:UploadLayerPart, ecr:CompleteLayerUpload, ecr:PutImage)"
        ),
        (Cause::Unauthorized, _) => {
            let fix = if used.starts_with("TRIVY_ECR_REGISTRY_USERNAME") {
                "check TRIVY_ECR_REGISTRY_USERNAME and TRIVY_ECR_REGISTRY_PASSWORD".to_string()
            } else if used.starts_with("no credentials") {
                format!(
                    "set TRIVY_ECR_REGISTRY_USERNAME and TRIVY_ECR_REGISTRY_PASSWORD, or run `docker login {registry}` (private ECR: use docker-credential-ecr-login)"
                )
            } else {
                format!(
                    "log in again (`docker login {registry}`, or check the credential helper), or set TRIVY_ECR_REGISTRY_USERNAME and TRIVY_ECR_REGISTRY_PASSWORD"
                )
            };
            format!(
                "{registry} refused the credentials for pushing the {kind} to {repository} ({err}; credentials: {used}). Fix: {fix}"
            )
        }
        (Cause::NotFound, _) => format!(
            "{registry} has no repository {repository} to push the {kind} to ({err}). Create it first (private ECR: aws ecr create-repository --repository-name {repository})"
        ),
        _ => format!("{registry} rejected the {kind} for {repository}: {err}"),
    }
}

fn source_unavailable(
    kind: DbKind,
    chain: &MirrorChain,
    budget: &RetryBudget,
    reason: &str,
) -> MirrorStop {
    MirrorStop::Unavailable(crate::retry::unavailable_message(
        kind, chain, budget, reason,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn destinations() {
        let d = Destination::parse("123456789012.dkr.ecr.eu-west-1.amazonaws.com/trivy/").unwrap();
        assert_eq!(d.registry, "123456789012.dkr.ecr.eu-west-1.amazonaws.com");
        assert_eq!(
            d.reference(DbKind::Vulnerability).to_string(),
            "123456789012.dkr.ecr.eu-west-1.amazonaws.com/trivy/trivy-db:2"
        );
        assert_eq!(
            d.reference(DbKind::Java).to_string(),
            "123456789012.dkr.ecr.eu-west-1.amazonaws.com/trivy/trivy-java-db:1"
        );
        assert_eq!(
            d.reference(DbKind::Checks).to_string(),
            "123456789012.dkr.ecr.eu-west-1.amazonaws.com/trivy/trivy-checks:2"
        );
        let bare = Destination::parse("127.0.0.1:5000").unwrap();
        assert_eq!(
            bare.reference(DbKind::Vulnerability).to_string(),
            "127.0.0.1:5000/trivy-db:2"
        );
        for bad in [
            "trivy/db",
            "https://r.example/x",
            "r.example/Upper",
            "r.example/a//b",
            "",
        ] {
            assert!(Destination::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_destination_is_never_its_own_source() {
        let dest = Destination::parse("r.example/trivy")
            .unwrap()
            .reference(DbKind::Vulnerability);
        let configured = vec![
            "r.example/trivy/trivy-db".to_string(),
            "public.ecr.aws/aquasecurity/trivy-db:2".to_string(),
        ];
        assert_eq!(
            sources(DbKind::Vulnerability, Some(configured), &dest),
            Sources {
                repositories: vec!["public.ecr.aws/aquasecurity/trivy-db:2".to_string()],
                skipped_destination: true,
            }
        );
        let only_itself = sources(
            DbKind::Vulnerability,
            Some(vec!["r.example/trivy/trivy-db:2".to_string()]),
            &dest,
        );
        assert_eq!(
            only_itself.repositories,
            DbKind::Vulnerability.default_chain()
        );
        let checks = sources(DbKind::Checks, None, &dest);
        assert!(checks.repositories[0].starts_with("public.ecr.aws/"));
        assert!(!checks.skipped_destination);
    }

    #[test]
    fn only_transient_destination_failures_are_retried() {
        assert!(destination_may_recover(&Cause::RateLimited {
            retry_after: None
        }));
        assert!(destination_may_recover(&Cause::ServerError(Some(503))));
        assert!(!destination_may_recover(&Cause::Unauthorized));
        assert!(!destination_may_recover(&Cause::NotFound));
        assert!(!destination_may_recover(&Cause::Other("HTTP 400".into())));
    }
}
