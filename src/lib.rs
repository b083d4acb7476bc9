//! trivy-ecr: a drop-in `trivy` that pulls its DBs from the ECR Public mirrors, retries rate
//! limits and other transient registry failures across a mirror chain, and gates the build on
//! the findings. This file wires the stages together; each concern lives in its own module.
//!
//! argv ─► Invocation ─► Options ─► locate trivy ─► prefetch (native DB download) ─► attempts
//! (plan ─► supervisor ─► failure ─► retry) ─► Report ─► gate ─► render + summary ─► ExitStatus

pub mod db_archive;
pub mod db_cache;
pub mod db_command;
pub mod db_fetch;
pub mod db_mirror;
pub mod docker_config;
pub mod exit_status;
pub mod failure;
pub mod gate;
pub mod help;
pub mod invocation;
pub mod locate;
pub mod logging;
pub mod mirrors;
pub mod options;
pub mod plan;
pub mod prefetch;
pub mod progress;
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
use std::time::Instant;

use exit_status::ExitStatus;
use failure::DbFailure;
use invocation::{Command, Invocation};
use mirrors::DbKind;
use options::Options;
use retry::{Decision, MirrorChain, RetryBudget, RetryPolicy};
use supervisor::{RunEnd, RunOutcome, Signals, Supervisor, signal_name};
use trivy_version::{Capabilities, TrivyVersion};

/// Prints a user-facing line on stderr (not a log line: always shown).
#[macro_export]
macro_rules! say {
    ($($arg:tt)*) => {
        eprintln!("trivy-ecr: {}", format_args!($($arg)*))
    };
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

    let uses_db = matches!(invocation.command, Command::Scan(_) | Command::UsesDb(_))
        && !invocation.wants_help;
    if !uses_db {
        let argv = plan::trivy_argv(
            &invocation,
            &[],
            Capabilities::of(None),
            &plan::Extras::default(),
        );
        return match supervisor.run(&argv).await {
            Ok(outcome) => end_of_passthrough(outcome.end),
            Err(err) => {
                say!("error: {err}");
                ExitStatus::TrivyNotStarted
            }
        };
    }

    let capabilities = Capabilities::of(TrivyVersion::detect(supervisor.trivy()));
    tracing::debug!(?capabilities, "trivy capabilities");
    let policy = RetryPolicy::new(options.max_attempts, options.max_wait);
    let mut chains = mirror_chains(&invocation, &options, &policy);

    let kinds = prefetch::kinds_to_fetch(&invocation, &options);
    let prefetched = match prefetch::run(
        &invocation,
        &kinds,
        &mut chains,
        policy,
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
    let extras = plan::Extras {
        skip_db_update: prefetched.skip_db_update,
        skip_java_db_update: prefetched.skip_java_db_update,
        json_report: None,
    };

    if !invocation.is_gated() {
        return match attempt_until_db(
            &mut supervisor,
            &invocation,
            &mut chains,
            capabilities,
            policy,
            &extras,
        )
        .await
        {
            Ok(outcome) => end_of_passthrough(outcome.end),
            Err(status) => status,
        };
    }
    let scan = GatedScan {
        invocation: &invocation,
        options: &options,
        capabilities,
        policy,
        extras,
        prefetched_from: prefetched.db_source.clone(),
    };
    let status = scan.run(&mut supervisor, &mut chains).await;
    drop(prefetched);
    status
}

/// The chains for the vulnerability DB and the Java DB: trivy-ecr's own unless the user chose.
fn mirror_chains(
    invocation: &Invocation,
    options: &Options,
    policy: &RetryPolicy,
) -> Vec<MirrorChain> {
    [DbKind::Vulnerability, DbKind::Java]
        .into_iter()
        .map(|kind| match invocation.choice(kind) {
            Some(choice) => MirrorChain::new(kind, choice.repositories.clone(), false, policy),
            None => {
                let configured = match kind {
                    DbKind::Vulnerability => options.db_repositories.clone(),
                    _ => options.java_db_repositories.clone(),
                };
                MirrorChain::new(
                    kind,
                    configured.unwrap_or_else(|| kind.default_chain()),
                    true,
                    policy,
                )
            }
        })
        .collect()
}

fn end_of_passthrough(end: RunEnd) -> ExitStatus {
    match end {
        RunEnd::Exited(code) => ExitStatus::PassedThrough(code),
        RunEnd::Killed(signal) => {
            say!("trivy was killed by {} ({signal})", signal_name(signal));
            ExitStatus::Signal(signal)
        }
        RunEnd::Interrupted(signal) => ExitStatus::Signal(signal),
    }
}

/// Runs trivy until it gets past its DB downloads: retries DB failures that another mirror or
/// a wait may cure, within the budget. Returns the last run (success or not a DB failure).
async fn attempt_until_db(
    supervisor: &mut Supervisor,
    invocation: &Invocation,
    chains: &mut Vec<MirrorChain>,
    capabilities: Capabilities,
    policy: RetryPolicy,
    extras: &plan::Extras,
) -> Result<RunOutcome, ExitStatus> {
    let mut budget = RetryBudget::new(policy);
    loop {
        budget.attempts += 1;
        let argv = plan::trivy_argv(invocation, chains, capabilities, extras);
        let outcome = match supervisor.run(&argv).await {
            Ok(outcome) => outcome,
            Err(err) => {
                say!("error: {err}");
                return Err(ExitStatus::TrivyNotStarted);
            }
        };
        let code = match outcome.end {
            RunEnd::Exited(0) => return Ok(outcome),
            RunEnd::Exited(code) => code,
            RunEnd::Killed(_) | RunEnd::Interrupted(_) => return Ok(outcome),
        };
        let Some(failure) = failure::diagnose(&outcome.log) else {
            return Ok(outcome);
        };
        if !failure.is_retryable() {
            tracing::debug!(?failure, code, "DB failure that no mirror or wait can cure");
            return Ok(outcome);
        }
        let now = Instant::now();
        let chain = chain_for(chains, &failure, invocation, &policy);
        chain.record(&failure, &policy, now);
        let wait = chains
            .iter()
            .map(|c| c.ready_in(now))
            .max()
            .unwrap_or_default();
        let kind = failure.kind;
        if chains.iter().any(|c| c.kind == kind && c.exhausted()) {
            give_up(kind, chains, &budget, "every mirror was ruled out");
            return Err(ExitStatus::DbUnavailable);
        }
        match budget.decide(wait) {
            Decision::Retry { wait } => {
                announce_retry(
                    &failure,
                    chains,
                    wait,
                    budget.attempts + 1,
                    policy.max_attempts,
                );
                if let Err(signal) = supervisor.signals.sleep(wait).await {
                    return Err(ExitStatus::Signal(signal as i32));
                }
                budget.waited += wait;
            }
            Decision::AttemptsExhausted => {
                give_up(kind, chains, &budget, "no attempts left");
                return Err(ExitStatus::DbUnavailable);
            }
            Decision::WaitBudgetExhausted { needed } => {
                let reason = format!(
                    "the next mirror is usable only in {needed:.1?}, beyond the wait budget"
                );
                give_up(kind, chains, &budget, &reason);
                return Err(ExitStatus::DbUnavailable);
            }
        }
    }
}

/// The chain a failure belongs to; one is made up for a DB trivy-ecr does not rewrite (the
/// checks bundle), so it is still retried with backoff.
fn chain_for<'c>(
    chains: &'c mut Vec<MirrorChain>,
    failure: &DbFailure,
    invocation: &Invocation,
    policy: &RetryPolicy,
) -> &'c mut MirrorChain {
    if let Some(index) = chains.iter().position(|c| c.kind == failure.kind) {
        return &mut chains[index];
    }
    let repositories = invocation
        .choice(failure.kind)
        .map(|c| c.repositories.clone())
        .unwrap_or_else(|| vec![format!("trivy's default {}", failure.kind)]);
    chains.push(MirrorChain::new(failure.kind, repositories, false, policy));
    chains.last_mut().expect("just pushed")
}

fn announce_retry(
    failure: &DbFailure,
    chains: &[MirrorChain],
    wait: std::time::Duration,
    next_attempt: u32,
    max_attempts: u32,
) {
    let failed: Vec<String> = failure
        .mirrors
        .iter()
        .map(|m| {
            format!(
                "{} {}",
                m.repository.as_deref().unwrap_or("the first mirror"),
                m.cause
            )
        })
        .collect();
    let chain = chains.iter().find(|c| c.kind == failure.kind);
    let next = match chain {
        Some(c) if c.owned => format!(" with {} first", c.head().unwrap_or_default()),
        _ => String::new(),
    };
    say!(
        "{}: {}; retrying{next} in {:.1}s (attempt {next_attempt}/{max_attempts})",
        failure.kind,
        failed.join("; "),
        wait.as_secs_f64()
    );
}

fn give_up(kind: DbKind, chains: &[MirrorChain], budget: &RetryBudget, reason: &str) {
    if let Some(chain) = chains.iter().find(|c| c.kind == kind) {
        say!(
            "error: {}",
            retry::unavailable_message(kind, chain, budget, reason)
        );
    }
}

/// A scan whose verdict trivy-ecr decides: JSON to a private file, gate, render, summary.
struct GatedScan<'a> {
    invocation: &'a Invocation,
    options: &'a Options,
    capabilities: Capabilities,
    policy: RetryPolicy,
    extras: plan::Extras,
    /// The mirror the native download used, if it downloaded.
    prefetched_from: Option<String>,
}

impl GatedScan<'_> {
    async fn run(self, supervisor: &mut Supervisor, chains: &mut Vec<MirrorChain>) -> ExitStatus {
        let GatedScan {
            invocation,
            options,
            capabilities,
            policy,
            extras,
            prefetched_from,
        } = self;
        let workdir = match tempfile::Builder::new().prefix("trivy-ecr-").tempdir() {
            Ok(dir) => dir,
            Err(err) => {
                say!("error: cannot create a private temporary directory: {err}; check TMPDIR");
                return ExitStatus::TrivyFailed;
            }
        };
        let report_path = workdir.path().join("report.json");
        let extras = plan::Extras {
            json_report: Some(report_path.clone()),
            ..extras
        };
        let outcome = match attempt_until_db(
            supervisor,
            invocation,
            chains,
            capabilities,
            policy,
            &extras,
        )
        .await
        {
            Ok(outcome) => outcome,
            Err(status) => return status,
        };
        match outcome.end {
            RunEnd::Exited(0) => {}
            RunEnd::Exited(code) => {
                say!("error: trivy failed (exit {code}); its messages are above");
                return ExitStatus::TrivyFailed;
            }
            end => return end_of_passthrough(end),
        }
        let report = match report::Report::from_path(&report_path) {
            Ok(report) => report,
            Err(err) => {
                say!("error: {err}");
                return ExitStatus::TrivyFailed;
            }
        };
        let outcome_verdict = gate::evaluate(&report, options.fail_on, invocation.exit_flags);
        if let Err(err) = render::render(supervisor, invocation, &report_path).await {
            return match err {
                render::RenderError::Interrupted(signal) => ExitStatus::Signal(signal),
                other => {
                    say!("error: {other}");
                    ExitStatus::TrivyFailed
                }
            };
        }
        let db_source = prefetched_from.or_else(|| db_source(&outcome.log));
        eprint!(
            "{}",
            summary::render(&summary::SummaryInput {
                report: &report,
                outcome: &outcome_verdict,
                fail_on: options.fail_on,
                db_source: db_source.as_deref(),
                quiet: invocation.quiet,
            })
        );
        match outcome_verdict {
            gate::GateOutcome::Passed => ExitStatus::Success,
            gate::GateOutcome::Failed { .. } => ExitStatus::GateFailed,
            gate::GateOutcome::TrivyExitCode { code } | gate::GateOutcome::EndOfLife { code } => {
                ExitStatus::TrivyExitFlag(code)
            }
        }
    }
}

/// The repository trivy reported downloading the vulnerability DB from, if it did.
fn db_source(log: &[String]) -> Option<String> {
    log.iter()
        .filter(|l| l.contains("[vulndb]") && l.contains("successfully downloaded"))
        .find_map(|l| {
            let start = l.find("repo=\"")? + 6;
            let end = l[start..].find('"')? + start;
            Some(l[start..end].to_string())
        })
}
