//! The one place where outcomes become process exit codes (documented in README.md).

/// Every way trivy-ecr can end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitStatus {
    /// 0: the scan ran and nothing reached the threshold.
    Success,
    /// 1: findings at or above the threshold remain.
    GateFailed,
    /// The user's own `--exit-code N` / `--exit-on-eol N` fired, with trivy's meaning.
    TrivyExitFlag(i32),
    /// trivy's exit code, passed on for commands trivy-ecr does not gate.
    PassedThrough(i32),
    /// 2: a trivy-ecr option is invalid (including a baseline report that cannot be used).
    Usage,
    /// 3: a DB could not be obtained from any mirror within the retry budget.
    DbUnavailable,
    /// 4: trivy could not be started (not found, not executable, recursion).
    TrivyNotStarted,
    /// 5: trivy failed for another reason (its stderr was shown), its report was unusable, or a
    /// CI output (JUnit, JSON copy, step summary) could not be written.
    TrivyFailed,
    /// 6: `db mirror` could not write to the destination registry (credentials refused,
    /// push denied, repository missing, or unavailable within the retry budget).
    DestinationFailed,
    /// 7: `trivy-ecr doctor` found a problem (at least one FAIL line).
    ProblemsFound,
    /// 128+N: trivy, or trivy-ecr itself, was stopped by signal N.
    Signal(i32),
}

impl ExitStatus {
    pub fn code(self) -> i32 {
        match self {
            ExitStatus::Success => 0,
            ExitStatus::GateFailed => 1,
            ExitStatus::TrivyExitFlag(code) | ExitStatus::PassedThrough(code) => code,
            ExitStatus::Usage => 2,
            ExitStatus::DbUnavailable => 3,
            ExitStatus::TrivyNotStarted => 4,
            ExitStatus::TrivyFailed => 5,
            ExitStatus::DestinationFailed => 6,
            ExitStatus::ProblemsFound => 7,
            ExitStatus::Signal(signal) => 128 + signal,
        }
    }
}

/// The exit-code table printed by `--help` and copied into README.md.
pub const EXIT_CODE_TABLE: &[(&str, &str)] = &[
    (
        "0",
        "scan done; nothing at or above the threshold (TRIVY_ECR_FAIL_ON)",
    ),
    (
        "1",
        "the gate failed: findings at or above the threshold remain",
    ),
    (
        "N",
        "your own --exit-code N / --exit-on-eol N fired (trivy's meaning)",
    ),
    (
        "2",
        "usage error in trivy-ecr's own options (or an unusable --ecr-baseline report)",
    ),
    (
        "3",
        "a DB could not be obtained from any mirror within the retry budget",
    ),
    (
        "4",
        "trivy could not be started (not found, not executable, recursion)",
    ),
    (
        "5",
        "trivy failed for another reason (its stderr is shown above), its report was unusable, or a JUnit/JSON/step summary file could not be written",
    ),
    (
        "6",
        "db mirror could not write to the destination registry (credentials refused, push denied, repository missing, or unavailable within the retry budget)",
    ),
    (
        "7",
        "trivy-ecr doctor found a problem (at least one FAIL line)",
    ),
    ("128+N", "trivy (or trivy-ecr) was killed by signal N"),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_as_documented() {
        assert_eq!(ExitStatus::Success.code(), 0);
        assert_eq!(ExitStatus::GateFailed.code(), 1);
        assert_eq!(ExitStatus::Usage.code(), 2);
        assert_eq!(ExitStatus::DbUnavailable.code(), 3);
        assert_eq!(ExitStatus::TrivyNotStarted.code(), 4);
        assert_eq!(ExitStatus::TrivyFailed.code(), 5);
        assert_eq!(ExitStatus::DestinationFailed.code(), 6);
        assert_eq!(ExitStatus::ProblemsFound.code(), 7);
        assert_eq!(ExitStatus::Signal(15).code(), 143);
        assert_eq!(ExitStatus::TrivyExitFlag(9).code(), 9);
        assert_eq!(ExitStatus::PassedThrough(0).code(), 0);
    }
}
