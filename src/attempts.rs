//! The retry loop around trivy itself: run, read why it died, and when it died obtaining a DB
//! for a reason another mirror or a wait may cure, rotate that DB's chain, wait and run again,
//! within the budget. When the budget is spent, degraded mode may still let the scan run on the
//! cached DB.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::degraded::DegradedDb;
use crate::exit_status::ExitStatus;
use crate::failure::{self, DbFailure};
use crate::invocation::Invocation;
use crate::mirrors::DbKind;
use crate::plan;
use crate::prefetch;
use crate::retry::{self, Decision, MirrorChain, RetryBudget, RetryPolicy};
use crate::say;
use crate::supervisor::{RunEnd, RunOutcome, Supervisor};
use crate::trivy_version::Capabilities;

/// Everything one series of trivy runs needs, and what it learnt (degraded DBs).
pub struct Attempts<'a> {
    pub invocation: &'a Invocation,
    pub capabilities: Capabilities,
    pub policy: RetryPolicy,
    pub extras: plan::Extras,
    pub cache_dir: PathBuf,
    pub max_db_age: Option<Duration>,
    /// Cached DBs scanned with because no mirror delivered.
    pub degraded: Vec<DegradedDb>,
}

impl Attempts<'_> {
    /// Runs trivy until it gets past its DB downloads. Returns the last run: a success, or a
    /// failure that is not a DB failure (the caller decides what that means).
    pub async fn run(
        &mut self,
        supervisor: &mut Supervisor,
        chains: &mut [MirrorChain],
    ) -> Result<RunOutcome, ExitStatus> {
        let mut budget = RetryBudget::new(self.policy);
        loop {
            budget.attempts += 1;
            let argv = plan::trivy_argv(self.invocation, chains, self.capabilities, &self.extras);
            let outcome = match supervisor.run(&argv).await {
                Ok(outcome) => outcome,
                Err(err) => {
                    say!("error: {err}");
                    return Err(ExitStatus::TrivyNotStarted);
                }
            };
            let diagnosis = match outcome.end {
                RunEnd::Exited(0) | RunEnd::Killed(_) | RunEnd::Interrupted(_) => {
                    return Ok(outcome);
                }
                RunEnd::Exited(_) => failure::diagnose(&outcome.log),
                // Stopped at the deadline while a mirror stalled a download: that mirror timed out.
                RunEnd::TimedOut(_) => failure::diagnose_stall(&outcome.log),
            };
            let Some(failure) = diagnosis else {
                return Ok(outcome);
            };
            if !failure.is_retryable() {
                tracing::debug!(?failure, "DB failure that no mirror or wait can cure");
                return Ok(outcome);
            }
            let now = Instant::now();
            let kind = failure.kind;
            let Some(chain) = chains.iter_mut().find(|c| c.kind == kind) else {
                return Ok(outcome);
            };
            chain.record(&failure, &self.policy, now);
            chain.order_by_readiness();
            if chain.exhausted() {
                self.give_up(kind, chains, &budget, "every mirror was ruled out")?;
                continue;
            }
            let wait = chains
                .iter()
                .map(|c| c.ready_in(now))
                .max()
                .unwrap_or_default();
            match budget.decide(wait) {
                Decision::Retry { wait } => {
                    announce_retry(
                        &failure,
                        chains,
                        wait,
                        budget.attempts + 1,
                        self.policy.max_attempts,
                    );
                    if let Err(signal) = supervisor.signals.sleep(wait).await {
                        return Err(ExitStatus::Signal(signal as i32));
                    }
                    budget.waited += wait;
                }
                Decision::AttemptsExhausted => {
                    self.give_up(kind, chains, &budget, "no attempts left")?;
                }
                Decision::WaitBudgetExhausted { needed } => {
                    let reason = format!(
                        "the next mirror is usable only in {needed:.1?}, beyond the wait budget"
                    );
                    self.give_up(kind, chains, &budget, &reason)?;
                }
            }
        }
    }

    /// No mirror delivered `kind`: fall back on the cached copy (and tell trivy not to update
    /// it), or end with exit 3.
    fn give_up(
        &mut self,
        kind: DbKind,
        chains: &[MirrorChain],
        budget: &RetryBudget,
        reason: &str,
    ) -> Result<(), ExitStatus> {
        let Some(chain) = chains.iter().find(|c| c.kind == kind) else {
            return Err(ExitStatus::DbUnavailable);
        };
        let message = retry::unavailable_message(kind, chain, budget, reason);
        let already = self.degraded.iter().any(|d| d.kind == kind);
        if already {
            say!("error: {message}");
            return Err(ExitStatus::DbUnavailable);
        }
        let degraded = prefetch::fall_back(kind, &self.cache_dir, self.max_db_age, &message)?;
        match kind {
            DbKind::Vulnerability => self.extras.skip_db_update = true,
            DbKind::Java => self.extras.skip_java_db_update = true,
            DbKind::Checks => self.extras.skip_check_update = true,
        }
        self.degraded.push(degraded);
        Ok(())
    }
}

fn announce_retry(
    failure: &DbFailure,
    chains: &[MirrorChain],
    wait: Duration,
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
