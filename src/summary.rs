//! The short text summary trivy-ecr prints on stderr after a gated scan: counts per severity
//! per target, every finding at or above the threshold, and the verdict.

use std::fmt::Write;

use crate::baseline::BaselineComparison;
use crate::degraded::DegradedDb;
use crate::gate::{FailOn, GateOutcome, Severity};
use crate::report::Report;

/// Blocking findings listed one per line before the list is cut short.
const MAX_LISTED: usize = 50;

pub struct SummaryInput<'a> {
    pub report: &'a Report<'a>,
    pub outcome: &'a GateOutcome<'a>,
    pub fail_on: FailOn,
    /// Where the vulnerability DB came from this run, if it was downloaded.
    pub db_source: Option<&'a str>,
    /// Cached DBs scanned with because no mirror delivered (degraded mode).
    pub degraded: &'a [DegradedDb],
    /// Only the verdict and the blocking findings (trivy's `--quiet`).
    pub quiet: bool,
    /// What `--ecr-baseline` changed, when given.
    pub baseline: Option<&'a BaselineComparison<'a>>,
}

impl SummaryInput<'_> {
    /// The number of findings of each severity (indexed by `Severity as usize`), for each
    /// target that has any.
    pub fn counts_per_target(&self) -> impl Iterator<Item = (&str, [usize; 5])> {
        self.report.results.iter().filter_map(|result| {
            let mut counts = [0usize; 5];
            for finding in result.findings() {
                counts[finding.severity as usize] += 1;
            }
            (counts.iter().sum::<usize>() > 0).then_some((result.target.as_ref(), counts))
        })
    }

    /// "new " when a baseline decides what blocks, so the verdict says what it counts.
    pub fn new_word(&self) -> &'static str {
        if self.baseline.is_some() { "new " } else { "" }
    }
}

/// `1 finding`, `2 new findings`: `noun` gets an `s` unless there is one.
pub fn count(n: usize, noun: &str) -> String {
    format!("{n} {noun}{}", if n == 1 { "" } else { "s" })
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
        for (target, counts) in input.counts_per_target() {
            any = true;
            let per_severity: Vec<String> = Severity::ALL
                .iter()
                .map(|s| format!("{s} {}", counts[*s as usize]))
                .collect();
            let _ = writeln!(out, "trivy-ecr: {target}: {}", per_severity.join(", "));
        }
        if !any {
            let _ = writeln!(
                out,
                "trivy-ecr: {}: no findings",
                input.report.artifact_name
            );
        }
    }
    if let Some(comparison) = input.baseline
        && input.fail_on != FailOn::Disabled
    {
        let _ = writeln!(
            out,
            "trivy-ecr: baseline {}: {} at or above {} already known (not blocking), {} fixed since",
            comparison.baseline.path,
            count(comparison.known, "finding"),
            input.fail_on,
            comparison.fixed_since
        );
    }
    match input.outcome {
        GateOutcome::Passed if input.fail_on == FailOn::Disabled => {
            let _ = writeln!(out, "trivy-ecr: gate disabled (fail-on: none)");
        }
        GateOutcome::Passed => {
            let _ = writeln!(
                out,
                "trivy-ecr: PASSED: nothing {}at or above {}",
                input.new_word(),
                input.fail_on
            );
        }
        GateOutcome::Failed { blocking } => {
            let noun = format!("{}finding", input.new_word());
            let what = format!(
                "{} at or above {}",
                count(blocking.len(), &noun),
                input.fail_on
            );
            let _ = writeln!(out, "trivy-ecr: {what}:");
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
            let _ = writeln!(out, "trivy-ecr: FAILED: {what} (exit 1)");
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
            baseline: None,
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

    const BASELINE: &str = include_str!("../tests/data/baseline-alpine.json");

    #[test]
    fn baseline_summary_counts_known_and_fixed() {
        let old = Report::from_slice(BASELINE.as_bytes()).unwrap();
        let baseline = crate::baseline::Baseline::from_report("old.json".into(), &old);
        let report = Report::from_slice(REPORT.as_bytes()).unwrap();
        let outcome = evaluate(&report, FailOn::default(), TrivyExitFlags::default());
        let (outcome, comparison) = baseline.apply(&report, FailOn::default(), outcome);
        let text = render(&SummaryInput {
            report: &report,
            outcome: &outcome,
            fail_on: FailOn::default(),
            db_source: None,
            degraded: &[],
            quiet: true,
            baseline: Some(&comparison),
        });
        let expected = "\
trivy-ecr: baseline old.json: 1 finding at or above CRITICAL already known (not blocking), 1 fixed since
trivy-ecr: 1 new finding at or above CRITICAL:
  CRITICAL CVE-2099-0002 busybox 1.36.1-r15 -> no fix yet (127.0.0.1:5000/app:latest (alpine 3.19.1))
trivy-ecr: FAILED: 1 new finding at or above CRITICAL (exit 1)
";
        assert_eq!(text, expected);

        // Everything at or above HIGH that is left is known: the gate passes.
        let high = FailOn::AtOrAbove(Severity::High);
        let itself = crate::baseline::Baseline::from_report("same.json".into(), &report);
        let outcome = evaluate(&report, high, TrivyExitFlags::default());
        let (outcome, comparison) = itself.apply(&report, high, outcome);
        let text = render(&SummaryInput {
            report: &report,
            outcome: &outcome,
            fail_on: high,
            db_source: None,
            degraded: &[],
            quiet: true,
            baseline: Some(&comparison),
        });
        let expected = "\
trivy-ecr: baseline same.json: 3 findings at or above HIGH already known (not blocking), 0 fixed since
trivy-ecr: PASSED: nothing new at or above HIGH
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
            baseline: None,
        });
        assert_eq!(
            text,
            "trivy-ecr: DEGRADED: the cached vulnerability DB is 5h old (limit 3days); no mirror delivered a fresh one\ntrivy-ecr: gate disabled (fail-on: none)\n"
        );
    }
}
