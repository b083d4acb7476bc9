//! The short text summary trivy-ecr prints on stderr after a gated scan: counts per severity
//! per target, every finding at or above the threshold, and the verdict.

use std::fmt::Write;

use crate::degraded::DegradedDb;
use crate::gate::{FailOn, GateOutcome, Severity};
use crate::report::Report;

/// Blocking findings listed one per line before the list is cut short.
const MAX_LISTED: usize = 50;

pub struct SummaryInput<'a> {
    pub report: &'a Report,
    pub outcome: &'a GateOutcome<'a>,
    pub fail_on: FailOn,
    /// Where the vulnerability DB came from this run, if it was downloaded.
    pub db_source: Option<&'a str>,
    /// Cached DBs scanned with because no mirror delivered (degraded mode).
    pub degraded: &'a [DegradedDb],
    /// Only the verdict and the blocking findings (trivy's `--quiet`).
    pub quiet: bool,
}

pub fn render(input: &SummaryInput<'_>) -> String {
    let mut out = String::new();
    for degraded in input.degraded {
        let _ = writeln!(
            out,
            "trivy-ecr: DEGRADED: {degraded}; no mirror delivered a fresh one"
        );
    }
    if !input.quiet {
        if let Some(source) = input.db_source {
            let _ = writeln!(out, "trivy-ecr: vulnerability DB downloaded from {source}");
        }
        let mut any = false;
        for result in &input.report.results {
            let mut counts = [0usize; 5];
            for finding in result.findings() {
                counts[finding.severity as usize] += 1;
            }
            if counts.iter().sum::<usize>() == 0 {
                continue;
            }
            any = true;
            let per_severity: Vec<String> = Severity::ALL
                .iter()
                .map(|s| format!("{s} {}", counts[*s as usize]))
                .collect();
            let _ = writeln!(
                out,
                "trivy-ecr: {}: {}",
                result.target,
                per_severity.join(", ")
            );
        }
        if !any {
            let _ = writeln!(
                out,
                "trivy-ecr: {}: no findings",
                input.report.artifact_name
            );
        }
    }
    match input.outcome {
        GateOutcome::Passed if input.fail_on == FailOn::Disabled => {
            let _ = writeln!(out, "trivy-ecr: gate disabled (fail-on: none)");
        }
        GateOutcome::Passed => {
            let _ = writeln!(
                out,
                "trivy-ecr: PASSED: nothing at or above {}",
                input.fail_on
            );
        }
        GateOutcome::Failed { blocking } => {
            let _ = writeln!(
                out,
                "trivy-ecr: {} finding{} at or above {}:",
                blocking.len(),
                if blocking.len() == 1 { "" } else { "s" },
                input.fail_on
            );
            for finding in blocking.iter().take(MAX_LISTED) {
                let _ = writeln!(out, "  {finding}");
            }
            if blocking.len() > MAX_LISTED {
                let _ = writeln!(
                    out,
                    "  ... and {} more (see the report)",
                    blocking.len() - MAX_LISTED
                );
            }
            let _ = writeln!(
                out,
                "trivy-ecr: FAILED: {} finding{} at or above {} (exit 1)",
                blocking.len(),
                if blocking.len() == 1 { "" } else { "s" },
                input.fail_on
            );
        }
        GateOutcome::TrivyExitCode { code } => {
            let _ = writeln!(
                out,
                "trivy-ecr: FAILED: findings remain and --exit-code {code} was given (exit {code})"
            );
        }
        GateOutcome::EndOfLife { code } => {
            let _ = writeln!(
                out,
                "trivy-ecr: FAILED: the OS is end of life and --exit-on-eol {code} was given (exit {code})"
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gate::{TrivyExitFlags, evaluate};

    const REPORT: &str = include_str!("../tests/data/report-alpine.json");

    #[test]
    fn failing_summary() {
        let report = Report::from_slice(REPORT.as_bytes()).unwrap();
        let outcome = evaluate(&report, FailOn::default(), TrivyExitFlags::default());
        let text = render(&SummaryInput {
            report: &report,
            outcome: &outcome,
            fail_on: FailOn::default(),
            db_source: Some("public.ecr.aws/aquasecurity/trivy-db:2"),
            degraded: &[],
            quiet: false,
        });
        let expected = "\
trivy-ecr: vulnerability DB downloaded from public.ecr.aws/aquasecurity/trivy-db:2
trivy-ecr: 127.0.0.1:5000/app:latest (alpine 3.19.1): CRITICAL 2, HIGH 1, MEDIUM 1, LOW 0, UNKNOWN 0
trivy-ecr: 2 findings at or above CRITICAL:
  CRITICAL CVE-2099-0001 libcrypto3 3.1.4-r5 -> 3.1.4-r6 (127.0.0.1:5000/app:latest (alpine 3.19.1))
  CRITICAL CVE-2099-0002 busybox 1.36.1-r15 -> no fix yet (127.0.0.1:5000/app:latest (alpine 3.19.1))
trivy-ecr: FAILED: 2 findings at or above CRITICAL (exit 1)
";
        assert_eq!(text, expected);
    }

    #[test]
    fn passing_quiet_summary() {
        let report = Report::from_slice(REPORT.as_bytes()).unwrap();
        let outcome = evaluate(&report, FailOn::Disabled, TrivyExitFlags::default());
        let text = render(&SummaryInput {
            report: &report,
            outcome: &outcome,
            fail_on: FailOn::Disabled,
            db_source: None,
            degraded: &[DegradedDb {
                kind: crate::mirrors::DbKind::Vulnerability,
                age: std::time::Duration::from_secs(5 * 3600),
                limit: std::time::Duration::from_secs(72 * 3600),
            }],
            quiet: true,
        });
        assert_eq!(
            text,
            "trivy-ecr: DEGRADED: the cached vulnerability DB is 5h old (limit 3days); no mirror delivered a fresh one\ntrivy-ecr: gate disabled (fail-on: none)\n"
        );
    }
}
