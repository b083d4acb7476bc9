//! `trivy-ecr db pull`, `db status` and `db mirror`: trivy-ecr's own subcommands (trivy has no
//! `db` command), to warm a cache ahead of scans, to see what it holds, and to copy the DBs into
//! a registry you own.

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::SystemTime;

use clap::{Parser, Subcommand};

use crate::checks_bundle;
use crate::db_cache::{self, DbLocation, Metadata, default_cache_dir};
use crate::db_fetch::{FetchJob, FetchOutcome, FetchStop, ensure_fresh, kind_key, read_sources};
use crate::db_mirror::{Destination, MirrorJob, MirrorOutcome, MirrorStop};
use crate::degraded;
use crate::docker_config::{Credentials, DockerConfig, Secret};
use crate::exit_status::ExitStatus;
use crate::invocation::Env;
use crate::mirrors::DbKind;
use crate::options::Options;
use crate::progress::ProgressMode;
use crate::registry_client::{RegistryClient, Timeouts};
use crate::retry::{MirrorChain, RetryPolicy};
use crate::supervisor::Signals;

#[derive(Debug, Parser)]
#[command(
    name = "trivy-ecr db",
    about = "Manage trivy's DBs with trivy-ecr's downloader: warm the cache, show it, mirror the DBs into your registry"
)]
struct DbArgs {
    #[command(subcommand)]
    command: DbCommand,
}

/// How downloads and uploads talk and report, shared by `pull` and `mirror`.
#[derive(Debug, clap::Args)]
struct TransferArgs {
    /// No progress output, only errors.
    #[arg(short, long)]
    quiet: bool,
    /// One line per phase instead of a progress bar.
    #[arg(long)]
    no_progress: bool,
    /// Skip TLS certificate checks and fall back to plain HTTP.
    #[arg(long)]
    insecure: bool,
}

#[derive(Debug, Subcommand)]
enum DbCommand {
    /// Download the vulnerability DB (and optionally the Java DB and the checks bundle) into
    /// trivy's cache if trivy would consider the cached copy stale.
    Pull {
        /// Also the Java DB.
        #[arg(long)]
        java: bool,
        /// Also the misconfiguration checks bundle.
        #[arg(long)]
        checks: bool,
        /// trivy's cache directory (default: TRIVY_CACHE_DIR, else ~/.cache/trivy).
        #[arg(long, value_name = "DIR")]
        cache_dir: Option<PathBuf>,
        #[command(flatten)]
        transfer: TransferArgs,
    },
    /// Show what the cache holds: age, next update, and the mirror it came from.
    Status {
        #[arg(long, value_name = "DIR")]
        cache_dir: Option<PathBuf>,
    },
    /// Copy the current DBs from the mirror chain into a registry you own, byte for byte (same
    /// digests); nothing is uploaded when the copy is already current.
    #[command(after_help = MIRROR_HELP)]
    Mirror {
        /// Where to copy to: REGISTRY[/PREFIX]; the vulnerability DB goes to
        /// REGISTRY/PREFIX/trivy-db:2.
        #[arg(long, value_name = "REGISTRY/PREFIX")]
        to: String,
        /// Also the Java DB (REGISTRY/PREFIX/trivy-java-db:1).
        #[arg(long)]
        java: bool,
        /// Also the misconfiguration checks bundle (REGISTRY/PREFIX/trivy-checks:2).
        #[arg(long)]
        checks: bool,
        #[command(flatten)]
        transfer: TransferArgs,
    },
}

const MIRROR_HELP: &str = "\
Sources: TRIVY_ECR_DB_REPOSITORIES / TRIVY_ECR_JAVA_DB_REPOSITORIES (or the default chains), and
TRIVY_CHECKS_BUNDLE_REPOSITORY (or the default checks chain); the destination itself is skipped.
Credentials: the docker config (auths, credHelpers, credsStore) for every registry;
TRIVY_ECR_REGISTRY_USERNAME and TRIVY_ECR_REGISTRY_PASSWORD for the destination only.
Exit codes: 0 copied or already current, 2 usage, 3 no source mirror delivered,
6 the destination refused or stayed unavailable.";

/// Runs `trivy-ecr db ARGS` (args after `db`).
pub async fn run(
    args: &[OsString],
    options: &Options,
    signals: &mut Signals,
    env: Env<'_>,
) -> ExitStatus {
    let parsed: DbArgs = match crate::help::parse_command("db", args) {
        Ok(parsed) => parsed,
        Err(status) => return status,
    };
    let resolve = |dir: Option<PathBuf>| {
        dir.or_else(|| {
            env("TRIVY_CACHE_DIR")
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        })
        .unwrap_or_else(|| default_cache_dir(env))
    };
    match parsed.command {
        DbCommand::Pull {
            java,
            checks,
            cache_dir,
            transfer:
                TransferArgs {
                    quiet,
                    no_progress,
                    insecure,
                },
        } => {
            let cache_dir = resolve(cache_dir);
            let mut kinds = vec![DbKind::Vulnerability];
            if java {
                kinds.push(DbKind::Java);
            }
            if checks {
                kinds.push(DbKind::Checks);
            }
            pull(
                &cache_dir,
                &kinds,
                ProgressMode::choose(quiet, no_progress),
                insecure,
                options,
                signals,
                env,
            )
            .await
        }
        DbCommand::Status { cache_dir } => {
            crate::out(format_args!(
                "{}",
                status(&resolve(cache_dir), SystemTime::now(), options.max_db_age)
            ));
            ExitStatus::Success
        }
        DbCommand::Mirror {
            to,
            java,
            checks,
            transfer:
                TransferArgs {
                    quiet,
                    no_progress,
                    insecure,
                },
        } => {
            let mut kinds = vec![DbKind::Vulnerability];
            if java {
                kinds.push(DbKind::Java);
            }
            if checks {
                kinds.push(DbKind::Checks);
            }
            let request = MirrorRequest {
                to: &to,
                kinds: &kinds,
                progress: ProgressMode::choose(quiet, no_progress),
                insecure,
            };
            mirror(request, options, signals, env).await
        }
    }
}

/// The destination's credentials from `TRIVY_ECR_REGISTRY_USERNAME` / `_PASSWORD`: both or
/// neither.
fn registry_credentials(env: Env<'_>) -> Result<Option<Credentials>, String> {
    let read = |key: &str| {
        env(key)
            .filter(|v| !v.is_empty())
            .map(|v| {
                v.into_string()
                    .map_err(|_| format!("{key} is not valid UTF-8"))
            })
            .transpose()
    };
    match (
        read("TRIVY_ECR_REGISTRY_USERNAME")?,
        read("TRIVY_ECR_REGISTRY_PASSWORD")?,
    ) {
        (Some(username), Some(password)) => Ok(Some(Credentials {
            username,
            secret: Secret::new(password),
        })),
        (None, None) => Ok(None),
        _ => Err(
            "set both TRIVY_ECR_REGISTRY_USERNAME and TRIVY_ECR_REGISTRY_PASSWORD, or neither"
                .to_string(),
        ),
    }
}

struct MirrorRequest<'a> {
    to: &'a str,
    kinds: &'a [DbKind],
    progress: ProgressMode,
    insecure: bool,
}

async fn mirror(
    request: MirrorRequest<'_>,
    options: &Options,
    signals: &mut Signals,
    env: Env<'_>,
) -> ExitStatus {
    let destination = match Destination::parse(request.to) {
        Ok(destination) => destination,
        Err(err) => {
            crate::say!("error: db mirror --to {}: {err}", request.to);
            return ExitStatus::Usage;
        }
    };
    let given = match registry_credentials(env) {
        Ok(given) => given,
        Err(err) => {
            crate::say!("error: db mirror: {err}");
            return ExitStatus::Usage;
        }
    };
    let mut client = match RegistryClient::new(
        DockerConfig::load(env),
        Timeouts::uniform(options.http_timeout),
        request.insecure,
    ) {
        Ok(client) => client,
        Err(err) => {
            crate::say!("error: {err}");
            return ExitStatus::TrivyFailed;
        }
    };
    if let Some(credentials) = given {
        client.use_credentials(&destination.registry, credentials);
    }
    let policy = RetryPolicy::new(options.max_attempts, options.max_wait);
    let progress = request.progress;
    for &kind in request.kinds {
        let target = destination.reference(kind);
        let configured = match kind {
            DbKind::Vulnerability => options.db_repositories.clone(),
            DbKind::Java => options.java_db_repositories.clone(),
            // trivy-ecr's own chain, else trivy's own setting.
            DbKind::Checks => options.checks_repositories.clone().or_else(|| {
                env(DbKind::Checks.env_var())
                    .and_then(|v| v.into_string().ok())
                    .map(|v| {
                        v.split(',')
                            .map(str::trim)
                            .filter(|r| !r.is_empty())
                            .map(str::to_owned)
                            .collect::<Vec<_>>()
                    })
                    .filter(|chain| !chain.is_empty())
            }),
        };
        let sources = crate::db_mirror::sources(kind, configured, &target);
        if sources.skipped_destination {
            progress.phase(format_args!(
                "{kind}: not copying from {target} onto itself; sources: {}",
                sources.repositories.join(", ")
            ));
        }
        let mut chain = MirrorChain::new(kind, sources.repositories, true, &policy);
        let job = MirrorJob {
            kind,
            chain: &mut chain,
            destination: &target,
            policy,
            progress,
        };
        match crate::db_mirror::mirror(&mut client, job, signals).await {
            Ok(MirrorOutcome::UpToDate { digest }) => {
                progress.phase(format_args!(
                    "{kind}: {target} is up to date ({digest}); nothing uploaded"
                ));
                crate::out(format_args!("{target}@{digest}\n"));
            }
            Ok(MirrorOutcome::Copied {
                digest,
                from,
                uploaded,
                seconds,
            }) => {
                progress.phase(format_args!(
                    "{kind}: copied {from} to {target} ({digest}): {:.1} MiB uploaded in {seconds:.1}s",
                    uploaded as f64 / (1 << 20) as f64
                ));
                crate::out(format_args!("{target}@{digest}\n"));
            }
            Err(MirrorStop::Unavailable(message)) => {
                crate::say!("error: {message}");
                return ExitStatus::DbUnavailable;
            }
            Err(MirrorStop::Destination(message)) => {
                crate::say!("error: {message}");
                return ExitStatus::DestinationFailed;
            }
            Err(MirrorStop::Signal(signal)) => return ExitStatus::Signal(signal),
        }
    }
    ExitStatus::Success
}

async fn pull(
    cache_dir: &std::path::Path,
    kinds: &[DbKind],
    progress: ProgressMode,
    insecure: bool,
    options: &Options,
    signals: &mut Signals,
    env: Env<'_>,
) -> ExitStatus {
    let policy = RetryPolicy::new(options.max_attempts, options.max_wait);
    let mut client = match RegistryClient::new(
        DockerConfig::load(env),
        Timeouts::uniform(options.http_timeout),
        insecure,
    ) {
        Ok(client) => client,
        Err(err) => {
            crate::say!("error: {err}");
            return ExitStatus::TrivyFailed;
        }
    };
    for &kind in kinds {
        let repositories = options.repositories(kind);
        let mut chain = MirrorChain::new(kind, repositories, true, &policy);
        let job = FetchJob {
            kind,
            cache_dir,
            chain: &mut chain,
            policy,
            progress,
        };
        match ensure_fresh(&mut client, job, signals).await {
            Ok(FetchOutcome::AlreadyFresh) => progress.phase(format_args!(
                "{kind} in {} is fresh; nothing to download",
                cache_dir.display()
            )),
            Ok(FetchOutcome::Downloaded { .. }) => {}
            Err(FetchStop::Unavailable(message)) => {
                crate::say!("error: {message}");
                return ExitStatus::DbUnavailable;
            }
            Err(FetchStop::Signal(signal)) => return ExitStatus::Signal(signal),
            Err(FetchStop::Local(message)) => {
                crate::say!("error: {message}");
                return ExitStatus::TrivyFailed;
            }
        }
    }
    ExitStatus::Success
}

/// `db status` text for every DB kind trivy-ecr manages.
pub fn status(
    cache_dir: &std::path::Path,
    now: SystemTime,
    max_db_age: Option<std::time::Duration>,
) -> String {
    let sources = read_sources(cache_dir);
    let mut out = format!("cache: {}\n", cache_dir.display());
    for kind in [DbKind::Vulnerability, DbKind::Java, DbKind::Checks] {
        let location = DbLocation::new(cache_dir, kind);
        let shown = match kind {
            DbKind::Checks => location.dir.join("content"),
            _ => location.db_file(),
        };
        out.push_str(&format!("{kind}: {}\n", shown.display()));
        let freshness = match kind {
            DbKind::Checks => checks_bundle::staleness(&location, now),
            _ => db_cache::staleness(&location, now).map(|_| ()),
        };
        let state = match freshness {
            Ok(()) => "fresh (trivy will not download it)".to_string(),
            Err(why) => format!("needs a download: {why}"),
        };
        out.push_str(&format!("  state:       {state}\n"));
        out.push_str(&format!(
            "  fallback:    {}\n",
            fallback_line(kind, cache_dir, now, max_db_age)
        ));
        if kind == DbKind::Checks {
            continue;
        }
        let Ok(metadata) = Metadata::read(&location.metadata_file()) else {
            continue;
        };
        out.push_str(&format!(
            "  built:       {}\n",
            when(metadata.updated_at, now)
        ));
        out.push_str(&format!(
            "  downloaded:  {}\n",
            when(metadata.downloaded_at, now)
        ));
        out.push_str(&format!(
            "  next update: {}\n",
            when(metadata.next_update, now)
        ));
        let from = match sources.get(kind_key(kind)) {
            Some(source)
                if metadata.downloaded_at.is_some_and(|at| {
                    humantime::parse_rfc3339_weak(&source.downloaded_at).is_ok_and(|recorded| {
                        recorded
                            .duration_since(at)
                            .unwrap_or_else(|e| e.duration())
                            .as_secs()
                            < 120
                    })
                }) =>
            {
                format!("{} ({})", source.repository, source.digest)
            }
            _ => "unknown (downloaded by trivy itself)".to_string(),
        };
        out.push_str(&format!("  from:        {from}\n"));
    }
    out
}

/// Whether degraded mode could scan with this DB if every mirror failed now.
fn fallback_line(
    kind: DbKind,
    cache_dir: &std::path::Path,
    now: SystemTime,
    max_db_age: Option<std::time::Duration>,
) -> String {
    match degraded::fallback(kind, cache_dir, max_db_age, now) {
        Ok(d) => format!(
            "usable if every mirror fails: {} old, limit {} (TRIVY_ECR_MAX_DB_AGE)",
            degraded::short(d.age),
            degraded::short(d.limit)
        ),
        Err(why) => format!("none: {why}"),
    }
}

fn when(time: Option<SystemTime>, now: SystemTime) -> String {
    let Some(time) = time else {
        return "never".into();
    };
    let stamp = humantime::format_rfc3339_seconds(time);
    let rounded = |d: std::time::Duration| {
        humantime::format_duration(std::time::Duration::from_secs(d.as_secs() / 60 * 60))
            .to_string()
    };
    match now.duration_since(time) {
        Ok(ago) => format!("{stamp} ({} ago)", rounded(ago)),
        Err(ahead) => format!("{stamp} (in {})", rounded(ahead.duration())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn destination_credentials_come_in_pairs() {
        let both = |key: &str| match key {
            "TRIVY_ECR_REGISTRY_USERNAME" => Some(OsString::from("bot")),
            "TRIVY_ECR_REGISTRY_PASSWORD" => Some(OsString::from("s3cret")),
            _ => None,
        };
        let creds = registry_credentials(&both).unwrap().unwrap();
        assert_eq!(
            (creds.username.as_str(), creds.secret.expose()),
            ("bot", "s3cret")
        );
        assert_eq!(registry_credentials(&|_| None).unwrap(), None);
        let half =
            |key: &str| (key == "TRIVY_ECR_REGISTRY_USERNAME").then(|| OsString::from("bot"));
        let err = registry_credentials(&half).unwrap_err();
        assert!(err.contains("set both"), "{err}");
    }

    #[test]
    fn status_reports_age_and_source() {
        let cache = tempfile::tempdir().unwrap();
        let location = DbLocation::new(cache.path(), DbKind::Vulnerability);
        std::fs::create_dir_all(&location.dir).unwrap();
        std::fs::write(location.db_file(), b"bolt").unwrap();
        std::fs::write(
            location.metadata_file(),
            r#"{"Version":2,"NextUpdate":"2026-12-04T18:00:00Z","UpdatedAt":"2026-12-04T06:00:00Z","DownloadedAt":"2026-12-04T11:00:00Z"}"#,
        )
        .unwrap();
        let now = humantime::parse_rfc3339("2026-12-04T12:00:00Z").unwrap();
        let text = status(
            cache.path(),
            now,
            Some(std::time::Duration::from_secs(72 * 3600)),
        );
        assert!(text.contains("state:       fresh"), "{text}");
        assert!(
            text.contains("built:       2026-12-04T06:00:00Z (6h ago)"),
            "{text}"
        );
        assert!(
            text.contains("next update: 2026-12-04T18:00:00Z (in 6h)"),
            "{text}"
        );
        assert!(
            text.contains("from:        unknown (downloaded by trivy itself)"),
            "{text}"
        );
        assert!(
            text.contains("Java DB:") && text.contains("needs a download: not in the cache"),
            "{text}"
        );
    }
}
