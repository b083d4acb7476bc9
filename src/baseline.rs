//! Baseline gating (`--ecr-baseline OLD.json`): the build fails only on findings at or above the
//! threshold that an earlier trivy JSON report did not already have, so a team can block new
//! CRITICALs without freezing the images that carry old ones.
//!
//! A finding is "known" when the baseline has one with the same ID, package and target. OS
//! packages are the exception for the target: trivy names their target after the scanned
//! artifact and its tag (`app:1.4 (alpine 3.19.1)`), which changes with every build, so they
//! match any OS-package target of the baseline.

use std::collections::HashMap;

use crate::gate::{FailOn, GateOutcome, Severity};
use crate::options::FileSetting;
use crate::report::{self, Finding, Report, ReportError};

/// The findings of an earlier report, reduced to what matching needs.
pub struct Baseline {
    /// The file, as the user named it.
    pub path: String,
    /// Match key of every finding (see [`match_key`]) → its index in `severities`.
    keys: HashMap<Box<str>, usize>,
    /// The highest severity each key has in the baseline.
    severities: Vec<Severity>,
}

impl std::fmt::Debug for Baseline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Baseline")
            .field("path", &self.path)
            .field("findings", &self.severities.len())
            .finish()
    }
}

/// The baseline file cannot be used: a usage error (exit 2), named after the setting.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{from}={path}: {reason}")]
pub struct BaselineError {
    pub from: String,
    pub path: String,
    pub reason: String,
}

/// What the baseline changed in one verdict, for the summaries.
#[derive(Debug)]
pub struct BaselineComparison<'b> {
    pub baseline: &'b Baseline,
    /// Findings at or above the threshold that the baseline has (they do not fail the gate).
    pub known: usize,
    /// Baseline findings at or above the threshold (by their baseline severity) that this
    /// report no longer has.
    pub fixed_since: usize,
}

/// Why the baseline report cannot be used, in the user's terms.
fn reason(err: ReportError) -> String {
    const GIVE: &str = "give a report written by trivy --format json (SchemaVersion 2)";
    match err {
        ReportError::Read { source, .. } => format!("cannot read the baseline report: {source}"),
        ReportError::Empty => format!("the baseline report is empty; {GIVE}"),
        ReportError::UnsupportedSchema(v) => {
            format!("the baseline report has SchemaVersion {v}; {GIVE}")
        }
        ReportError::ListShaped => {
            format!("the baseline report is a list, the format of trivy before 0.20; {GIVE}")
        }
        ReportError::Malformed(json) => format!(
            "the baseline report {}; {GIVE}",
            report::describe_json_error(&json)
        ),
    }
}

/// The target a finding is matched on; see the module documentation.
const OS_PACKAGES: &str = "\0os-pkgs";

/// Writes the match key of `finding` into `key` (reused to avoid an allocation per finding).
fn match_key(finding: &Finding<'_>, key: &mut String) {
    let target = if finding.class == "os-pkgs" {
        OS_PACKAGES
    } else {
        finding.target
    };
    key.clear();
    for (i, part) in [target, finding.id, finding.package].iter().enumerate() {
        if i > 0 {
            key.push('\0');
        }
        key.push_str(part);
    }
}

impl Baseline {
    /// Reads the earlier report the setting names. Any problem is one line naming the setting.
    pub fn load(setting: &FileSetting) -> Result<Baseline, BaselineError> {
        let path = setting.path.display().to_string();
        let error = |reason: String| BaselineError {
            from: setting.from.clone(),
            path: path.clone(),
            reason,
        };
        let bytes = report::read(&setting.path).map_err(|e| error(reason(e)))?;
        let report = Report::from_slice(&bytes).map_err(|e| error(reason(e)))?;
        Ok(Baseline::from_report(path, &report))
    }

    pub fn from_report(path: String, report: &Report<'_>) -> Baseline {
        let mut keys: HashMap<Box<str>, usize> = HashMap::new();
        let mut severities = Vec::new();
        let mut key = String::new();
        for finding in report.findings() {
            match_key(&finding, &mut key);
            match keys.get(key.as_str()) {
                Some(&i) => severities[i] = finding.severity.max(severities[i]),
                None => {
                    keys.insert(key.as_str().into(), severities.len());
                    severities.push(finding.severity);
                }
            }
        }
        Baseline {
            path,
            keys,
            severities,
        }
    }

    /// Whether the baseline had this finding (same ID, package and target).
    pub fn contains(&self, finding: &Finding<'_>) -> bool {
        let mut key = String::new();
        match_key(finding, &mut key);
        self.keys.contains_key(key.as_str())
    }

    /// Takes the findings the baseline knows out of a failed gate (passing it when only known
    /// ones remain) and counts known and fixed findings. trivy's own `--exit-code` and
    /// `--exit-on-eol` keep trivy's meaning: the baseline does not change them.
    pub fn apply<'r>(
        &self,
        report: &'r Report<'_>,
        fail_on: FailOn,
        outcome: GateOutcome<'r>,
    ) -> (GateOutcome<'r>, BaselineComparison<'_>) {
        let mut key = String::new();
        let mut seen = vec![false; self.severities.len()];
        let mut known = 0;
        for finding in report.findings() {
            match_key(&finding, &mut key);
            if let Some(&i) = self.keys.get(key.as_str()) {
                seen[i] = true;
                known += usize::from(fail_on.blocks(finding.severity));
            }
        }
        let fixed_since = self
            .severities
            .iter()
            .zip(&seen)
            .filter(|&(severity, seen)| fail_on.blocks(*severity) && !seen)
            .count();
        let outcome = match outcome {
            GateOutcome::Failed { mut blocking } => {
                blocking.retain(|f| !self.contains(f));
                if blocking.is_empty() {
                    GateOutcome::Passed
                } else {
                    GateOutcome::Failed { blocking }
                }
            }
            other => other,
        };
        let comparison = BaselineComparison {
            baseline: self,
            known,
            fixed_since,
        };
        (outcome, comparison)
    }
}

/// [`Baseline::apply`] when there is a baseline; the verdict unchanged otherwise.
pub fn apply<'r, 'b>(
    baseline: Option<&'b Baseline>,
    report: &'r Report<'_>,
    fail_on: FailOn,
    outcome: GateOutcome<'r>,
) -> (GateOutcome<'r>, Option<BaselineComparison<'b>>) {
    match baseline {
        Some(baseline) => {
            let (outcome, comparison) = baseline.apply(report, fail_on, outcome);
            (outcome, Some(comparison))
        }
        None => (outcome, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gate::{TrivyExitFlags, evaluate};

    /// A report with one OS target (named after `image`) and one Java target.
    fn report_json(image: &str, os: &[(&str, &str, &str)], jar: &[(&str, &str, &str)]) -> String {
        let vulns = |list: &[(&str, &str, &str)]| {
            list.iter()
                .map(|(id, pkg, severity)| {
                    format!(
                        r#"{{"VulnerabilityID":"{id}","PkgName":"{pkg}","InstalledVersion":"1","Severity":"{severity}"}}"#
                    )
                })
                .collect::<Vec<_>>()
                .join(",")
        };
        format!(
            r#"{{"SchemaVersion":2,"ArtifactName":"{image}","Results":[
            {{"Target":"{image} (alpine 3.19.1)","Class":"os-pkgs","Vulnerabilities":[{}]}},
            {{"Target":"Java","Class":"lang-pkgs","Vulnerabilities":[{}]}}]}}"#,
            vulns(os),
            vulns(jar)
        )
    }

    fn baseline(json: &str) -> Baseline {
        Baseline::from_report(
            "old.json".into(),
            &Report::from_slice(json.as_bytes()).unwrap(),
        )
    }

    fn ids<'r>(outcome: &GateOutcome<'r>) -> Vec<&'r str> {
        match outcome {
            GateOutcome::Failed { blocking } => blocking.iter().map(|f| f.id).collect(),
            _ => Vec::new(),
        }
    }

    #[test]
    fn new_known_and_fixed_since() {
        let old = baseline(&report_json(
            "app:1",
            &[
                ("CVE-1", "openssl", "CRITICAL"),
                ("CVE-2", "musl", "CRITICAL"),
                ("CVE-5", "busybox", "HIGH"),
            ],
            &[("CVE-3", "log4j", "HIGH")],
        ));
        let json = report_json(
            "app:2",
            &[
                ("CVE-1", "openssl", "CRITICAL"),
                ("CVE-4", "zlib", "CRITICAL"),
            ],
            &[("CVE-3", "log4j", "CRITICAL")],
        );
        let now = Report::from_slice(json.as_bytes()).unwrap();
        let fail_on = FailOn::default();
        let outcome = evaluate(&now, fail_on, TrivyExitFlags::default());
        assert_eq!(ids(&outcome), ["CVE-1", "CVE-4", "CVE-3"]);
        let (outcome, comparison) = old.apply(&now, fail_on, outcome);
        // CVE-1: same package on the OS of another tag; CVE-3: re-scored, still the same finding.
        assert_eq!(ids(&outcome), ["CVE-4"]);
        assert_eq!(comparison.known, 2);
        // CVE-2 is gone; so is CVE-5, but it was below the threshold.
        assert_eq!(comparison.fixed_since, 1);
    }

    #[test]
    fn only_known_findings_pass_the_gate() {
        let json = report_json("app:1", &[("CVE-1", "openssl", "CRITICAL")], &[]);
        let old = baseline(&json);
        let now = Report::from_slice(json.as_bytes()).unwrap();
        let outcome = evaluate(&now, FailOn::default(), TrivyExitFlags::default());
        let (outcome, comparison) = old.apply(&now, FailOn::default(), outcome);
        assert_eq!(outcome, GateOutcome::Passed);
        assert_eq!((comparison.known, comparison.fixed_since), (1, 0));
    }

    #[test]
    fn matching_needs_id_package_and_target() {
        let old = baseline(&report_json(
            "app:1",
            &[("CVE-1", "openssl", "CRITICAL")],
            &[("CVE-2", "log4j", "CRITICAL")],
        ));
        // Same IDs, but another package, and the Java finding moved to the OS target.
        let json = report_json(
            "app:1",
            &[
                ("CVE-1", "libssl3", "CRITICAL"),
                ("CVE-2", "log4j", "CRITICAL"),
            ],
            &[],
        );
        let now = Report::from_slice(json.as_bytes()).unwrap();
        let outcome = evaluate(&now, FailOn::default(), TrivyExitFlags::default());
        let (outcome, comparison) = old.apply(&now, FailOn::default(), outcome);
        assert_eq!(ids(&outcome), ["CVE-1", "CVE-2"]);
        assert_eq!((comparison.known, comparison.fixed_since), (0, 2));
    }

    #[test]
    fn trivy_exit_flags_are_not_affected() {
        let json = report_json("app:1", &[("CVE-1", "openssl", "CRITICAL")], &[]);
        let old = baseline(&json);
        let now = Report::from_slice(json.as_bytes()).unwrap();
        let flags = TrivyExitFlags {
            exit_code: Some(9),
            exit_on_eol: None,
        };
        let outcome = evaluate(&now, FailOn::default(), flags);
        let (outcome, _) = old.apply(&now, FailOn::default(), outcome);
        assert_eq!(outcome, GateOutcome::TrivyExitCode { code: 9 });
    }

    #[test]
    fn unusable_baselines_are_one_line_naming_the_setting() {
        let dir = tempfile::tempdir().unwrap();
        let cases: [(&str, Option<&str>, &str); 6] = [
            (
                "missing.json",
                None,
                "cannot read the baseline report: No such file or directory",
            ),
            ("empty.json", Some(" \n"), "the baseline report is empty"),
            (
                "cut.json",
                Some(r#"{"SchemaVersion":2,"Results":[{"Tar"#),
                "the baseline report is truncated (EOF while parsing",
            ),
            (
                "v1.json",
                Some(r#"{"SchemaVersion":1}"#),
                "SchemaVersion 1; give a report written by trivy --format json (SchemaVersion 2)",
            ),
            (
                "list.json",
                Some("[]"),
                "a list, the format of trivy before 0.20",
            ),
            (
                "text.json",
                Some("hello"),
                "the baseline report is not valid JSON (expected value",
            ),
        ];
        for (name, content, expected) in cases {
            let path = dir.path().join(name);
            if let Some(text) = content {
                std::fs::write(&path, text).unwrap();
            }
            let err = Baseline::load(&FileSetting {
                from: "TRIVY_ECR_BASELINE".into(),
                path: path.clone(),
            })
            .unwrap_err()
            .to_string();
            assert!(
                err.starts_with(&format!("TRIVY_ECR_BASELINE={}: ", path.display())),
                "{err}"
            );
            assert!(err.contains(expected), "{err} should contain {expected}");
            assert_eq!(err.lines().count(), 1, "{err}");
        }
    }
}
