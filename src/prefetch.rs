//! The download step before a scan: which DBs to fetch natively for this run, fetching them,
//! and what that changes on trivy's command line (`--skip-db-update`, `--skip-java-db-update`).

use std::path::PathBuf;

use crate::db_cache::{CacheLock, default_cache_dir};
use crate::db_fetch::{FetchJob, FetchOutcome, FetchStop, ensure_fresh};
use crate::degraded::{self, DegradedDb};
use crate::docker_config::DockerConfig;
use crate::exit_status::ExitStatus;
use crate::invocation::{Env, Invocation};
use crate::mirrors::DbKind;
use crate::options::{Options, Prefetch};
use crate::progress::ProgressMode;
use crate::registry_client::{RegistryClient, Timeouts};
use crate::retry::{MirrorChain, RetryPolicy};
use crate::supervisor::Signals;

/// What the prefetch did for this run.
#[derive(Default)]
pub struct Prefetched {
    pub skip_db_update: bool,
    pub skip_java_db_update: bool,
    pub skip_check_update: bool,
    /// Where the vulnerability DB came from, if it was downloaded now.
    pub db_source: Option<String>,
    /// Cached DBs scanned with because no mirror delivered (degraded mode).
    pub degraded: Vec<DegradedDb>,
    /// Held while trivy reads the cache, so no other trivy-ecr swaps a DB under it.
    pub read_lock: Option<CacheLock>,
}

/// The cache directory trivy will use for this invocation.
pub fn cache_dir(invocation: &Invocation, env: Env<'_>) -> PathBuf {
    invocation
        .cache_dir
        .clone()
        .unwrap_or_else(|| default_cache_dir(env))
}

/// The DBs this run fetches itself, in order.
pub fn kinds_to_fetch(invocation: &Invocation, options: &Options) -> Vec<DbKind> {
    if options.prefetch == Prefetch::Off || !invocation.needs_vulnerability_db() {
        return Vec::new();
    }
    let mut kinds = vec![DbKind::Vulnerability];
    // The user's `--skip-java-db-update` / `--skip-check-update` keep what the cache holds.
    if options.prefetch == Prefetch::All && !invocation.download_db_only {
        if !invocation.skip_java_db_update {
            kinds.push(DbKind::Java);
        }
        if invocation.scans_misconfigurations() && !invocation.skip_check_update {
            kinds.push(DbKind::Checks);
        }
    }
    kinds
}

/// Degraded mode: the cached DB if it may stand in (one warning line), else exit 3 with both
/// the mirrors' errors and why the cache cannot help.
pub fn fall_back(
    kind: DbKind,
    cache_dir: &std::path::Path,
    max_db_age: Option<std::time::Duration>,
    mirrors_message: &str,
) -> Result<DegradedDb, ExitStatus> {
    match degraded::fallback(kind, cache_dir, max_db_age, std::time::SystemTime::now()) {
        Ok(degraded) => {
            crate::say!(
                "warning: DEGRADED: {degraded}; scanning with it because {mirrors_message}"
            );
            Ok(degraded)
        }
        Err(why) => {
            crate::say!("error: {mirrors_message}; {why}");
            Err(ExitStatus::DbUnavailable)
        }
    }
}

/// Fetches every DB in `kinds` from its chain. Errors are already reported on stderr.
pub async fn run(
    invocation: &Invocation,
    kinds: &[DbKind],
    chains: &mut [MirrorChain],
    policy: RetryPolicy,
    options: &Options,
    signals: &mut Signals,
    env: Env<'_>,
) -> Result<Prefetched, ExitStatus> {
    let mut prefetched = Prefetched::default();
    if kinds.is_empty() {
        return Ok(prefetched);
    }
    let cache_dir = cache_dir(invocation, env);
    let mut client = RegistryClient::new(
        DockerConfig::load(env),
        Timeouts::uniform(options.http_timeout),
        invocation.insecure,
    )
    .map_err(|err| {
        crate::say!("error: {err}");
        ExitStatus::TrivyFailed
    })?;
    let progress = ProgressMode::choose(invocation.quiet, invocation.no_progress);
    for &kind in kinds {
        let Some(chain) = chains.iter_mut().find(|c| c.kind == kind) else {
            continue;
        };
        let job = FetchJob {
            kind,
            cache_dir: &cache_dir,
            chain,
            policy,
            progress,
        };
        match ensure_fresh(&mut client, job, signals).await {
            Ok(outcome) => {
                if let FetchOutcome::Downloaded { from, .. } = &outcome
                    && kind == DbKind::Vulnerability
                {
                    prefetched.db_source = Some(from.clone());
                }
                match kind {
                    DbKind::Vulnerability => prefetched.skip_db_update = true,
                    DbKind::Java => prefetched.skip_java_db_update = true,
                    DbKind::Checks => prefetched.skip_check_update = true,
                }
            }
            Err(FetchStop::Unavailable(message)) => {
                let degraded = fall_back(kind, &cache_dir, options.max_db_age, &message)?;
                match kind {
                    DbKind::Vulnerability => prefetched.skip_db_update = true,
                    DbKind::Java => prefetched.skip_java_db_update = true,
                    DbKind::Checks => prefetched.skip_check_update = true,
                }
                prefetched.degraded.push(degraded);
            }
            Err(FetchStop::Signal(signal)) => return Err(ExitStatus::Signal(signal)),
            Err(FetchStop::Local(message)) => {
                crate::say!(
                    "error: {message}; check that the cache directory is writable (--cache-dir / TRIVY_CACHE_DIR)"
                );
                return Err(ExitStatus::TrivyFailed);
            }
        }
    }
    prefetched.read_lock = tokio::select! {
        lock = CacheLock::shared(&cache_dir) => lock.ok(),
        signal = signals.recv() => return Err(ExitStatus::Signal(signal as i32)),
    };
    Ok(prefetched)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(argv: &[&str], prefetch: Prefetch) -> Vec<DbKind> {
        let argv: Vec<std::ffi::OsString> = argv.iter().map(Into::into).collect();
        let invocation = Invocation::parse(&argv, &|_| None, std::path::Path::new("/nonexistent"));
        let options = Options {
            prefetch,
            ..Options::default()
        };
        kinds_to_fetch(&invocation, &options)
    }

    #[test]
    fn the_users_skip_flags_keep_a_db_out_of_the_prefetch() {
        use DbKind::*;
        let all = Prefetch::All;
        let scan = ["image", "--scanners", "vuln,misconfig", "x"];
        assert_eq!(kinds(&scan, all), [Vulnerability, Java, Checks]);
        assert_eq!(kinds(&scan, Prefetch::VulnerabilityDb), [Vulnerability]);
        assert_eq!(kinds(&scan, Prefetch::Off), []);
        let skipping = |flag| {
            let mut argv = scan.to_vec();
            argv.insert(1, flag);
            kinds(&argv, all)
        };
        assert_eq!(skipping("--skip-java-db-update"), [Vulnerability, Checks]);
        assert_eq!(skipping("--skip-check-update"), [Vulnerability, Java]);
        assert_eq!(skipping("--skip-policy-update"), [Vulnerability, Java]);
        assert_eq!(skipping("--skip-db-update"), []);
        assert_eq!(
            skipping("--skip-java-db-update=false"),
            [Vulnerability, Java, Checks]
        );
    }
}
