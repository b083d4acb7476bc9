//! When to try again, and with which mirror first.
//!
//! Each mirror keeps its own exponential backoff (backon, with jitter): a mirror that just
//! failed goes to the back of its chain and may not be used again before its backoff, or the
//! delay the registry asked for (capped), has passed. A mirror nobody has tried yet is ready at
//! once, so failing over costs no wait. The whole retry is bounded by attempts and by the total
//! time spent waiting.

use std::time::{Duration, Instant};

use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};

use crate::failure::{Cause, DbFailure};
use crate::mirrors::{DbKind, same_repository};

/// Limits and shape of the backoff.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    pub max_attempts: u32,
    pub max_wait: Duration,
    pub min_delay: Duration,
    pub max_delay: Duration,
    /// The longest server-requested delay honoured; longer requests are capped to this.
    pub max_server_delay: Duration,
}

impl RetryPolicy {
    pub fn new(max_attempts: u32, max_wait: Duration) -> RetryPolicy {
        RetryPolicy {
            max_attempts,
            max_wait,
            min_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(30),
            max_server_delay: Duration::from_secs(60),
        }
    }

    fn backoff(&self) -> ExponentialBackoff {
        ExponentialBuilder::default()
            .with_min_delay(self.min_delay)
            .with_max_delay(self.max_delay)
            .with_factor(2.0)
            .with_jitter()
            .without_max_times()
            .build()
    }
}

/// One mirror and what trivy-ecr has learnt about it during this run.
#[derive(Debug)]
pub struct Mirror {
    pub repository: String,
    pub last_error: Option<Cause>,
    /// Failed in a way that will not change during this run (404, 401/403, wrong artifact).
    pub excluded: bool,
    ready_at: Option<Instant>,
    backoff: ExponentialBackoff,
}

/// The repositories for one DB in the order the next attempt will use them.
#[derive(Debug)]
pub struct MirrorChain {
    pub kind: DbKind,
    /// trivy-ecr chose this chain (and writes it into trivy's arguments); otherwise it is the
    /// user's, retried as given.
    pub owned: bool,
    mirrors: Vec<Mirror>,
}

impl MirrorChain {
    pub fn new(kind: DbKind, repositories: Vec<String>, owned: bool, policy: &RetryPolicy) -> Self {
        MirrorChain {
            kind,
            owned,
            mirrors: repositories
                .into_iter()
                .map(|repository| Mirror {
                    repository,
                    last_error: None,
                    excluded: false,
                    ready_at: None,
                    backoff: policy.backoff(),
                })
                .collect(),
        }
    }

    /// The mirrors still worth trying, in order.
    pub fn repositories(&self) -> impl Iterator<Item = &str> {
        self.usable().map(|m| m.repository.as_str())
    }

    fn usable(&self) -> impl Iterator<Item = &Mirror> {
        self.mirrors.iter().filter(|m| !m.excluded)
    }

    /// Every mirror failed in a way that rules it out for this run.
    pub fn exhausted(&self) -> bool {
        self.usable().next().is_none()
    }

    /// The usable mirror that can be tried soonest (the earlier in the chain on a tie), and
    /// how long until it can.
    pub fn next_ready(&self, now: Instant) -> Option<(&str, Duration)> {
        self.usable()
            .map(|m| {
                let wait = m
                    .ready_at
                    .map(|at| at.saturating_duration_since(now))
                    .unwrap_or_default();
                (m.repository.as_str(), wait)
            })
            .min_by_key(|(_, wait)| *wait)
    }

    pub fn mirrors(&self) -> &[Mirror] {
        &self.mirrors
    }

    pub fn head(&self) -> Option<&str> {
        self.repositories().next()
    }

    /// Records a failed attempt: each failing mirror backs off and, in a chain trivy-ecr owns,
    /// moves to the back, in the order trivy tried them. Failures trivy did not attribute go to the first mirror.
    pub fn record(&mut self, failure: &DbFailure, policy: &RetryPolicy, now: Instant) {
        for mirror_failure in &failure.mirrors {
            if self.mirrors.is_empty() {
                return;
            }
            let index = mirror_failure
                .repository
                .as_deref()
                .and_then(|repo| {
                    self.mirrors
                        .iter()
                        .position(|m| same_repository(&m.repository, repo))
                })
                .unwrap_or(0);
            let mut mirror = self.mirrors.remove(index);
            let backoff = mirror.backoff.next().unwrap_or(policy.max_delay);
            let asked = mirror_failure
                .cause
                .retry_after()
                .map(|d| d.min(policy.max_server_delay))
                .unwrap_or_default();
            mirror.ready_at = Some(now + backoff.max(asked));
            mirror.last_error = Some(mirror_failure.cause.clone());
            mirror.excluded |= mirror_failure.cause.excludes_mirror();
            // The user's own chain is passed to trivy as written, so its order stays.
            let to = if self.owned {
                self.mirrors.len()
            } else {
                index
            };
            self.mirrors.insert(to, mirror);
        }
    }

    /// Puts the mirrors in the order they can next be used (untried ones first, in chain order),
    /// so that when every mirror has failed, the one whose backoff ends first leads.
    pub fn order_by_readiness(&mut self) {
        if self.owned {
            self.mirrors.sort_by_key(|m| m.ready_at);
        }
    }

    /// How long until the first usable mirror may be used.
    pub fn ready_in(&self, now: Instant) -> Duration {
        self.usable()
            .next()
            .and_then(|m| m.ready_at)
            .map(|at| at.saturating_duration_since(now))
            .unwrap_or_default()
    }
}

/// Bookkeeping across attempts.
#[derive(Debug)]
pub struct RetryBudget {
    pub policy: RetryPolicy,
    pub attempts: u32,
    pub waited: Duration,
}

/// What to do after a failed attempt.
#[derive(Debug, PartialEq, Eq)]
pub enum Decision {
    Retry {
        wait: Duration,
    },
    /// No attempts left.
    AttemptsExhausted,
    /// The next wait would overrun the total wait budget.
    WaitBudgetExhausted {
        needed: Duration,
    },
}

impl RetryBudget {
    pub fn new(policy: RetryPolicy) -> Self {
        RetryBudget {
            policy,
            attempts: 0,
            waited: Duration::ZERO,
        }
    }

    /// Called after attempt number `self.attempts` failed on a DB.
    pub fn decide(&self, wait: Duration) -> Decision {
        if self.attempts >= self.policy.max_attempts {
            return Decision::AttemptsExhausted;
        }
        if self.waited + wait > self.policy.max_wait {
            return Decision::WaitBudgetExhausted { needed: wait };
        }
        Decision::Retry { wait }
    }
}

/// The line said when one mirror failed a native download: its cause, and which mirror is
/// next and when (while attempts remain).
pub fn announce_mirror_failure(
    kind: DbKind,
    repository: &str,
    detail: &str,
    chain: &MirrorChain,
    budget: &RetryBudget,
) {
    match chain.next_ready(Instant::now()) {
        Some((next, wait)) if budget.attempts < budget.policy.max_attempts => crate::say!(
            "{kind}: {repository} {detail}; trying {next} in {:.1}s (attempt {}/{})",
            wait.as_secs_f64(),
            budget.attempts + 1,
            budget.policy.max_attempts
        ),
        _ => crate::say!("{kind}: {repository} {detail}"),
    }
}

/// The one-line error when a DB could not be had: every mirror and its last error.
pub fn unavailable_message(
    kind: DbKind,
    chain: &MirrorChain,
    budget: &RetryBudget,
    reason: &str,
) -> String {
    let mirrors: Vec<String> = chain
        .mirrors()
        .iter()
        .map(|m| match &m.last_error {
            Some(cause) => format!("{}: {cause}", m.repository),
            None => format!("{}: not tried", m.repository),
        })
        .collect();
    format!(
        "could not obtain the {kind} from any mirror after {} attempt{} and {:.1}s of waiting ({reason}): {}. Retry later, raise TRIVY_ECR_MAX_ATTEMPTS/TRIVY_ECR_MAX_WAIT, or add a mirror you control to {}",
        budget.attempts,
        if budget.attempts == 1 { "" } else { "s" },
        budget.waited.as_secs_f64(),
        mirrors.join("; "),
        match kind {
            DbKind::Vulnerability => "TRIVY_ECR_DB_REPOSITORIES",
            DbKind::Java => "TRIVY_ECR_JAVA_DB_REPOSITORIES",
            DbKind::Checks => "TRIVY_CHECKS_BUNDLE_REPOSITORY",
        }
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::failure::MirrorFailure;

    fn policy() -> RetryPolicy {
        RetryPolicy::new(5, Duration::from_secs(60))
    }

    fn chain(repos: &[&str]) -> MirrorChain {
        MirrorChain::new(
            DbKind::Vulnerability,
            repos.iter().map(|s| s.to_string()).collect(),
            true,
            &policy(),
        )
    }

    fn failed(repo: Option<&str>, cause: Cause) -> DbFailure {
        DbFailure {
            kind: DbKind::Vulnerability,
            mirrors: vec![MirrorFailure {
                repository: repo.map(str::to_owned),
                cause,
            }],
        }
    }

    #[test]
    fn failing_mirror_moves_back_and_fresh_mirror_is_ready_at_once() {
        let mut c = chain(&["a/db:2", "b/db:2", "c/db:2"]);
        let now = Instant::now();
        c.record(
            &failed(Some("a/db:2"), Cause::RateLimited { retry_after: None }),
            &policy(),
            now,
        );
        assert_eq!(
            c.repositories().collect::<Vec<_>>(),
            ["b/db:2", "c/db:2", "a/db:2"]
        );
        assert_eq!(c.ready_in(now), Duration::ZERO);
    }

    #[test]
    fn a_mirror_comes_back_only_after_its_growing_backoff() {
        let mut c = chain(&["a/db:2"]);
        let p = policy();
        let now = Instant::now();
        let mut previous = Duration::ZERO;
        for round in 0..4 {
            c.record(
                &failed(Some("a/db"), Cause::ServerError(Some(503))),
                &p,
                now,
            );
            let wait = c.ready_in(now);
            let base = p.min_delay * 2u32.pow(round);
            assert!(wait >= base && wait <= base * 2, "round {round}: {wait:?}");
            assert!(round == 0 || wait >= previous / 2);
            previous = wait;
        }
    }

    #[test]
    fn server_delay_is_honoured_and_capped() {
        let p = policy();
        let now = Instant::now();
        let mut c = chain(&["a/db:2"]);
        let ask = |d| Cause::RateLimited {
            retry_after: Some(d),
        };
        c.record(
            &failed(Some("a/db:2"), ask(Duration::from_secs(20))),
            &p,
            now,
        );
        assert!(c.ready_in(now) >= Duration::from_secs(20));
        let mut c = chain(&["a/db:2"]);
        c.record(
            &failed(Some("a/db:2"), ask(Duration::from_secs(3600))),
            &p,
            now,
        );
        assert_eq!(c.ready_in(now), p.max_server_delay);
    }

    #[test]
    fn unattributed_failures_count_against_the_first_mirror() {
        let mut c = chain(&["a/db:2", "b/db:2"]);
        c.record(&failed(None, Cause::Timeout), &policy(), Instant::now());
        assert_eq!(c.head(), Some("b/db:2"));
        assert_eq!(c.mirrors()[1].last_error, Some(Cause::Timeout));
    }

    #[test]
    fn not_found_and_denied_rule_a_mirror_out_for_the_run() {
        let mut c = chain(&["a/db:2", "b/db:2"]);
        let now = Instant::now();
        c.record(&failed(Some("a/db:2"), Cause::NotFound), &policy(), now);
        assert_eq!(c.repositories().collect::<Vec<_>>(), ["b/db:2"]);
        assert!(!c.exhausted());
        c.record(&failed(Some("b/db:2"), Cause::Unauthorized), &policy(), now);
        assert!(c.exhausted());
        assert_eq!(c.next_ready(now), None);
        assert_eq!(c.mirrors()[0].last_error, Some(Cause::NotFound));
    }

    #[test]
    fn next_ready_prefers_the_soonest_mirror() {
        let mut c = chain(&["a/db:2", "b/db:2"]);
        let now = Instant::now();
        let slow = Cause::RateLimited {
            retry_after: Some(Duration::from_secs(30)),
        };
        c.record(&failed(Some("a/db:2"), slow), &policy(), now);
        c.record(
            &failed(Some("b/db:2"), Cause::ServerError(Some(503))),
            &policy(),
            now,
        );
        let (repo, wait) = c.next_ready(now).unwrap();
        assert_eq!(repo, "b/db:2");
        assert!(wait <= Duration::from_secs(2));
    }

    #[test]
    fn when_all_failed_the_soonest_ready_leads() {
        let mut c = chain(&["a/db:2", "b/db:2", "c/db:2"]);
        let now = Instant::now();
        let after = |secs| Cause::RateLimited {
            retry_after: Some(Duration::from_secs(secs)),
        };
        c.record(&failed(Some("a/db:2"), after(50)), &policy(), now);
        c.record(&failed(Some("b/db:2"), after(20)), &policy(), now);
        c.order_by_readiness();
        assert_eq!(c.head(), Some("c/db:2"), "the untried one first");
        c.record(&failed(Some("c/db:2"), after(35)), &policy(), now);
        c.order_by_readiness();
        assert_eq!(
            c.repositories().collect::<Vec<_>>(),
            ["b/db:2", "c/db:2", "a/db:2"]
        );
    }

    #[test]
    fn budget_bounds_attempts_and_waiting() {
        let mut b = RetryBudget::new(RetryPolicy::new(3, Duration::from_secs(10)));
        b.attempts = 1;
        assert_eq!(
            b.decide(Duration::from_secs(4)),
            Decision::Retry {
                wait: Duration::from_secs(4)
            }
        );
        b.waited = Duration::from_secs(8);
        assert_eq!(
            b.decide(Duration::from_secs(4)),
            Decision::WaitBudgetExhausted {
                needed: Duration::from_secs(4)
            }
        );
        b.attempts = 3;
        assert_eq!(b.decide(Duration::ZERO), Decision::AttemptsExhausted);
    }
}
