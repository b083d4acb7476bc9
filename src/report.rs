//! The part of trivy's JSON report (schema 2) that the gate and the summary read.
//!
//! Only the fields trivy-ecr uses are modelled; everything else is skipped by serde, so new
//! trivy fields never break the gate. Findings are flattened into [`Finding`]s, one model for
//! vulnerabilities, misconfigurations, secrets and licenses.

use std::fmt;
use std::path::Path;

use serde::Deserialize;

use crate::gate::Severity;

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Report {
    pub schema_version: u32,
    #[serde(default)]
    pub artifact_name: String,
    #[serde(default)]
    pub metadata: Metadata,
    #[serde(default)]
    pub results: Vec<TargetResult>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Metadata {
    #[serde(rename = "OS")]
    pub os: Option<Os>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Os {
    #[serde(default)]
    pub family: String,
    #[serde(default)]
    pub name: String,
    #[serde(rename = "EOSL", default)]
    pub eosl: bool,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct TargetResult {
    #[serde(default)]
    pub target: String,
    #[serde(default)]
    pub vulnerabilities: Vec<Vulnerability>,
    #[serde(default)]
    pub misconfigurations: Vec<Misconfiguration>,
    #[serde(default)]
    pub secrets: Vec<Secret>,
    #[serde(default)]
    pub licenses: Vec<License>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Vulnerability {
    #[serde(rename = "VulnerabilityID")]
    pub vulnerability_id: String,
    #[serde(default)]
    pub pkg_name: String,
    #[serde(default)]
    pub installed_version: String,
    #[serde(default)]
    pub fixed_version: String,
    #[serde(default)]
    pub severity: Severity,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Misconfiguration {
    #[serde(rename = "ID", default)]
    pub id: String,
    #[serde(default)]
    pub title: String,
    #[serde(default)]
    pub severity: Severity,
    #[serde(default)]
    pub status: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Secret {
    #[serde(rename = "RuleID", default)]
    pub rule_id: String,
    #[serde(default)]
    pub title: String,
    #[serde(default)]
    pub severity: Severity,
    #[serde(default)]
    pub start_line: u64,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct License {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub pkg_name: String,
    #[serde(default)]
    pub file_path: String,
    #[serde(default)]
    pub severity: Severity,
}

/// What kind of issue a finding is, as trivy's scanners name them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FindingKind {
    Vulnerability,
    Misconfiguration,
    Secret,
    License,
}

/// One issue trivy reported, whatever scanner found it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding<'r> {
    pub kind: FindingKind,
    pub id: &'r str,
    pub severity: Severity,
    /// Package (vulnerabilities, licenses), file line (secrets) or title (misconfigurations).
    pub subject: String,
    pub installed: &'r str,
    pub fixed: &'r str,
    pub target: &'r str,
}

impl fmt::Display for Finding<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:<8} {} {}", self.severity, self.id, self.subject)?;
        if self.kind == FindingKind::Vulnerability {
            let fixed = if self.fixed.is_empty() {
                "no fix yet"
            } else {
                self.fixed
            };
            write!(f, " {} -> {}", self.installed, fixed)?;
        }
        write!(f, " ({})", self.target)
    }
}

impl TargetResult {
    /// This target's findings: vulnerabilities, failed misconfigurations, secrets, licenses.
    pub fn findings(&self) -> impl Iterator<Item = Finding<'_>> {
        let target = self.target.as_str();
        let vulns = self.vulnerabilities.iter().map(move |v| Finding {
            kind: FindingKind::Vulnerability,
            id: &v.vulnerability_id,
            severity: v.severity,
            subject: v.pkg_name.clone(),
            installed: &v.installed_version,
            fixed: &v.fixed_version,
            target,
        });
        let misconfigs = self
            .misconfigurations
            .iter()
            .filter(|m| m.status.is_empty() || m.status == "FAIL")
            .map(move |m| Finding {
                kind: FindingKind::Misconfiguration,
                id: &m.id,
                severity: m.severity,
                subject: m.title.clone(),
                installed: "",
                fixed: "",
                target,
            });
        let secrets = self.secrets.iter().map(move |s| Finding {
            kind: FindingKind::Secret,
            id: &s.rule_id,
            severity: s.severity,
            subject: format!("{} (line {})", s.title, s.start_line),
            installed: "",
            fixed: "",
            target,
        });
        let licenses = self.licenses.iter().map(move |l| Finding {
            kind: FindingKind::License,
            id: &l.name,
            severity: l.severity,
            subject: if l.pkg_name.is_empty() {
                l.file_path.clone()
            } else {
                l.pkg_name.clone()
            },
            installed: "",
            fixed: "",
            target,
        });
        vulns.chain(misconfigs).chain(secrets).chain(licenses)
    }
}

/// The report could not be used for a verdict.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("cannot read trivy's JSON report {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("trivy's JSON report is empty")]
    Empty,
    #[error("trivy's JSON report is not valid JSON ({0}); was it truncated?")]
    Malformed(serde_json::Error),
    #[error(
        "trivy's JSON report has SchemaVersion {0}; trivy-ecr reads version 2 (trivy 0.20 or newer)"
    )]
    UnsupportedSchema(u32),
}

impl Report {
    pub fn from_slice(bytes: &[u8]) -> Result<Report, ReportError> {
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Err(ReportError::Empty);
        }
        let report: Report = serde_json::from_slice(bytes).map_err(ReportError::Malformed)?;
        if report.schema_version != 2 {
            return Err(ReportError::UnsupportedSchema(report.schema_version));
        }
        Ok(report)
    }

    pub fn from_path(path: &Path) -> Result<Report, ReportError> {
        let bytes = std::fs::read(path).map_err(|source| ReportError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Report::from_slice(&bytes)
    }

    /// Every finding left after trivy's own filters, in report order.
    pub fn findings(&self) -> impl Iterator<Item = Finding<'_>> {
        self.results.iter().flat_map(TargetResult::findings)
    }

    /// Whether the OS is end of service/life (trivy's `--exit-on-eol`).
    pub fn os_end_of_life(&self) -> bool {
        self.metadata.os.as_ref().is_some_and(|os| os.eosl)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub const SAMPLE: &str = include_str!("../tests/data/report-alpine.json");

    #[test]
    fn reads_a_real_trivy_report() {
        let report = Report::from_slice(SAMPLE.as_bytes()).unwrap();
        let findings: Vec<_> = report.findings().collect();
        assert!(findings.len() >= 4, "{findings:?}");
        assert!(
            findings
                .iter()
                .any(|f| f.severity == Severity::Critical && f.fixed.is_empty())
        );
    }

    #[test]
    fn bad_reports_say_why() {
        let cases: [(&[u8], &str); 4] = [
            (b"", "empty"),
            (b"{\"SchemaVersion\": 2, \"Results\": [", "not valid JSON"),
            (b"{\"SchemaVersion\": 1}", "SchemaVersion 1"),
            (b"[1,2]", "not valid JSON"),
        ];
        for (bytes, expected) in cases {
            let err = Report::from_slice(bytes).unwrap_err().to_string();
            assert!(err.contains(expected), "{err} should contain {expected}");
        }
    }

    #[test]
    fn only_failed_misconfigurations_count() {
        let json = r#"{"SchemaVersion":2,"Results":[{"Target":"Dockerfile","Misconfigurations":[
            {"ID":"DS002","Title":"root user","Severity":"HIGH","Status":"FAIL"},
            {"ID":"DS001","Title":"latest tag","Severity":"MEDIUM","Status":"PASS"}]}]}"#;
        let report = Report::from_slice(json.as_bytes()).unwrap();
        let ids: Vec<_> = report.findings().map(|f| f.id).collect();
        assert_eq!(ids, ["DS002"]);
    }
}
