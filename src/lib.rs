//! trivy-ecr: a drop-in `trivy` that pulls its DBs from the ECR Public mirrors, retries rate
//! limits and other transient registry failures across a mirror chain, and gates the build on
//! the findings. This file wires the stages together; each concern lives in its own module.
//!
//! argv ─► Invocation ─► Options ─► locate trivy ─► prefetch (native DB download) ─► attempts
//! (plan ─► supervisor ─► failure ─► retry) ─► Report ─► gate (+ baseline) ─► CI outputs
//! (publish) ─► render + summary ─► ExitStatus

pub mod attempts;
pub mod baseline;
pub mod checks_bundle;
pub mod db_archive;
pub mod db_cache;
pub mod db_command;
pub mod db_fetch;
pub mod db_integrity;
pub mod db_mirror;
pub mod degraded;
pub mod docker_config;
pub mod doctor;
pub mod exit_status;
pub mod failure;
pub mod gate;
pub mod gated_scan;
pub mod github;
pub mod help;
pub mod invocation;
pub mod junit;
pub mod locate;
pub mod logging;
pub mod mirrors;
pub mod options;
pub mod plan;
pub mod prefetch;
pub mod progress;
pub mod publish;
pub mod redact;
pub mod registry_client;
pub mod registry_push;
pub mod render;
pub mod report;
pub mod retry;
pub mod retry_after;
pub mod summary;
pub mod supervisor;
pub mod trivy_args;
pub mod trivy_config;
pub mod trivy_version;

use std::ffi::OsString;
use std::time::Duration;

use attempts::Attempts;
use exit_status::ExitStatus;
use gated_scan::GatedScan;
use invocation::{Command, Invocation};
use mirrors::DbKind;
use options::Options;
use retry::{MirrorChain, RetryPolicy};
use supervisor::{RunEnd, Signals, Supervisor, signal_name};
use trivy_version::{Capabilities, TrivyVersion};

/// Prints a user-facing line on stderr (not a log line: always shown).
#[macro_export]
macro_rules! say {
    ($($arg:tt)*) => {
        eprintln!("trivy-ecr: {}", format_args!($($arg)*))
    };
}

/// Writes to stdout; a reader that went away (`| head`) is not an error worth a panic.
pub fn out(text: std::fmt::Arguments<'_>) {
    use std::io::Write;
    let _ = std::io::stdout().lock().write_fmt(text);
}

/// The process entry point: runs and returns the exit code.
pub fn main_entry() -> i32 {
    let argv: Vec<OsString> = std::env::args_os().skip(1).collect();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(err) => {
            say!("error: cannot start: {err}");
            return ExitStatus::TrivyFailed.code();
        }
    };
    runtime.block_on(run(argv)).code()
}

/// Runs trivy-ecr with `argv` (without the program name) in the current process environment.
pub async fn run(argv: Vec<OsString>) -> ExitStatus {
    let env = |key: &str| std::env::var_os(key);
    let cwd = std::env::current_dir().unwrap_or_else(|_| ".".into());
    let invocation = Invocation::parse(&argv, &env, &cwd);
    let options = match Options::resolve(&invocation.own_flags, &env) {
        Ok(options) => options,
        Err(err) => {
            say!("error: {err}");
            return ExitStatus::Usage;
        }
    };
    logging::init(options.log.as_deref());

    if invocation.subcommand() == Some("db") {
        let mut signals = match Signals::install() {
            Ok(signals) => signals,
            Err(err) => {
                say!("error: cannot install signal handlers: {err}");
                return ExitStatus::TrivyFailed;
            }
        };
        return db_command::run(
            &invocation.args_after_subcommand(),
            &options,
            &mut signals,
            &env,
        )
        .await;
    }
    if invocation.subcommand() == Some("doctor") {
        return doctor::run(
            &invocation.args_after_subcommand(),
            &invocation,
            &options,
            &env,
        )
        .await;
    }

    let own_exe = std::env::current_exe().ok();
    let trivy = locate::check_nesting(locate::nesting(env(locate::NESTING_VAR))).and_then(|()| {
        locate::find_trivy(options.trivy.as_deref(), env("PATH"), own_exe.as_deref())
    });
    if invocation.wants_help && invocation.subcommand_at.is_none() {
        return help::print_help(trivy.ok().as_deref(), &mut std::io::stdout());
    }
    if invocation.wants_version {
        return help::print_version(trivy.ok().as_deref());
    }
    let trivy = match trivy {
        Ok(path) => path,
        Err(err) => {
            say!("error: {err}");
            return ExitStatus::TrivyNotStarted;
        }
    };
    let signals = match Signals::install() {
        Ok(signals) => signals,
        Err(err) => {
            say!("error: cannot install signal handlers: {err}");
            return ExitStatus::TrivyFailed;
        }
    };
    let mut supervisor = Supervisor::new(trivy, locate::nesting(env(locate::NESTING_VAR)), signals);
    supervisor.deadline = options.timeout;
    if let Some(limit) = options.timeout {
        // A tenth of the timeout, between 1 and 10 seconds, for trivy to shut down cleanly.
        supervisor.grace = (limit / 10).clamp(Duration::from_secs(1), Duration::from_secs(10));
    }

    if !invocation.is_gated()
        && let Some(note) = publish::unused_note(&invocation.own_flags)
    {
        say!("{note}");
    }
    let uses_db = matches!(invocation.command, Command::Scan(_) | Command::UsesDb(_))
        && !invocation.wants_help;
    if !uses_db {
        let argv = plan::passthrough_argv(&invocation);
        return match supervisor.run(&argv).await {
            Ok(outcome) => end_of_passthrough(outcome.end),
            Err(err) => {
                say!("error: {err}");
                ExitStatus::TrivyNotStarted
            }
        };
    }

    let memo = db_cache::trivy_ecr_cache_dir(&env).join("trivy-versions.json");
    let capabilities = Capabilities::of(TrivyVersion::detect_remembered(supervisor.trivy(), &memo));
    tracing::debug!(?capabilities, "trivy capabilities");
    let policy = RetryPolicy::new(options.max_attempts, options.max_wait);
    let mut chains = mirror_chains(&invocation, &options, &policy);

    let kinds = prefetch::kinds_to_fetch(&invocation, &options);
    let prefetched = match prefetch::run(
        &invocation,
        &kinds,
        &mut chains,
        policy,
        &options,
        &mut supervisor.signals,
        &env,
    )
    .await
    {
        Ok(prefetched) => prefetched,
        Err(status) => return status,
    };
    if invocation.download_db_only && prefetched.skip_db_update {
        // The DB is in the cache; trivy would only download it again.
        return ExitStatus::Success;
    }
    let attempts = Attempts {
        invocation: &invocation,
        capabilities,
        policy,
        extras: plan::Extras {
            skip_db_update: prefetched.skip_db_update,
            skip_java_db_update: prefetched.skip_java_db_update,
            skip_check_update: prefetched.skip_check_update,
            json_report: None,
        },
        cache_dir: prefetch::cache_dir(&invocation, &env),
        max_db_age: options.max_db_age,
        degraded: prefetched.degraded.clone(),
    };

    let status = if invocation.is_gated() {
        let scan = GatedScan {
            attempts,
            options: &options,
            prefetched_from: prefetched.db_source.clone(),
        };
        scan.run(&mut supervisor, &mut chains).await
    } else {
        let mut attempts = attempts;
        match attempts.run(&mut supervisor, &mut chains).await {
            Ok(outcome) => end_of_passthrough(outcome.end),
            Err(status) => status,
        }
    };
    // The shared cache lock is held until trivy is done with the cache.
    drop(prefetched);
    status
}

/// The chains for the vulnerability DB and the Java DB: trivy-ecr's own unless the user chose.
fn mirror_chains(
    invocation: &Invocation,
    options: &Options,
    policy: &RetryPolicy,
) -> Vec<MirrorChain> {
    [DbKind::Vulnerability, DbKind::Java, DbKind::Checks]
        .into_iter()
        .map(|kind| match invocation.choice(kind) {
            Some(choice) => MirrorChain::new(kind, choice.repositories.clone(), false, policy),
            // trivy-ecr never rewrites trivy's checks bundle repository; its chain only serves
            // native downloads.
            None => MirrorChain::new(
                kind,
                options.repositories(kind),
                kind != DbKind::Checks,
                policy,
            ),
        })
        .collect()
}

/// trivy's own exit status, for commands trivy-ecr does not gate.
pub(crate) fn end_of_passthrough(end: RunEnd) -> ExitStatus {
    match end {
        RunEnd::Exited(code) => ExitStatus::PassedThrough(code),
        RunEnd::Killed(signal) => {
            say!("trivy was killed by {} ({signal})", signal_name(signal));
            ExitStatus::Signal(signal)
        }
        RunEnd::Interrupted(signal) => ExitStatus::Signal(signal),
        RunEnd::TimedOut(limit) => {
            say!(
                "error: trivy did not finish within {} (TRIVY_ECR_TIMEOUT) and was stopped; raise TRIVY_ECR_TIMEOUT if the scan needs longer, or look above for a registry that stalls",
                humantime::format_duration(limit)
            );
            ExitStatus::TrivyFailed
        }
    }
}
