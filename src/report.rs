//! The part of trivy's JSON report (schema 2) that the gate, the summary and the CI outputs read.
//!
//! Only the fields trivy-ecr uses are modelled; everything else is skipped by serde (as
//! `serde::de::IgnoredAny`), so new trivy fields never break the gate. Strings are borrowed from
//! the report's bytes (`Cow`, owned only when JSON escapes must be undone), so a 100 MB report
//! costs little more than its own size in memory. Findings are flattened into [`Finding`]s, one
//! model for vulnerabilities, misconfigurations, secrets and licenses.

use std::borrow::Cow;
use std::fmt;
use std::path::Path;

use serde::{Deserialize, Deserializer};

use crate::gate::Severity;

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Report<'a> {
    pub schema_version: u32,
    #[serde(borrow, default)]
    pub artifact_name: Cow<'a, str>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub metadata: Metadata,
    #[serde(borrow, default, deserialize_with = "null_as_default")]
    pub results: Vec<TargetResult<'a>>,
}

/// `null` where a list or an object is expected reads as absent (older trivy and hand-merged
/// reports write `"Vulnerabilities": null`).
fn null_as_default<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Option::<T>::deserialize(deserializer)?.unwrap_or_default())
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
    #[serde(rename = "EOSL", default)]
    pub eosl: bool,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct TargetResult<'a> {
    #[serde(borrow, default)]
    pub target: Cow<'a, str>,
    /// `os-pkgs`, `lang-pkgs`, `config`, `secret`, `license`, ...
    #[serde(borrow, default)]
    pub class: Cow<'a, str>,
    #[serde(borrow, default, deserialize_with = "null_as_default")]
    pub vulnerabilities: Vec<Vulnerability<'a>>,
    #[serde(borrow, default, deserialize_with = "null_as_default")]
    pub misconfigurations: Vec<Misconfiguration<'a>>,
    #[serde(borrow, default, deserialize_with = "null_as_default")]
    pub secrets: Vec<Secret<'a>>,
    #[serde(borrow, default, deserialize_with = "null_as_default")]
    pub licenses: Vec<License<'a>>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Vulnerability<'a> {
    #[serde(rename = "VulnerabilityID", borrow)]
    pub vulnerability_id: Cow<'a, str>,
    #[serde(borrow, default)]
    pub pkg_name: Cow<'a, str>,
    #[serde(borrow, default)]
    pub installed_version: Cow<'a, str>,
    #[serde(borrow, default)]
    pub fixed_version: Cow<'a, str>,
    #[serde(borrow, default)]
    pub title: Cow<'a, str>,
    #[serde(default)]
    pub severity: Severity,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Misconfiguration<'a> {
    #[serde(rename = "ID", borrow, default)]
    pub id: Cow<'a, str>,
    #[serde(borrow, default)]
    pub title: Cow<'a, str>,
    #[serde(default)]
    pub severity: Severity,
    #[serde(borrow, default)]
    pub status: Cow<'a, str>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Secret<'a> {
    #[serde(rename = "RuleID", borrow, default)]
    pub rule_id: Cow<'a, str>,
    #[serde(borrow, default)]
    pub title: Cow<'a, str>,
    #[serde(default)]
    pub severity: Severity,
    #[serde(default)]
    pub start_line: u64,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct License<'a> {
    #[serde(borrow, default)]
    pub name: Cow<'a, str>,
    #[serde(borrow, default)]
    pub pkg_name: Cow<'a, str>,
    #[serde(borrow, default)]
    pub file_path: Cow<'a, str>,
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

/// One issue trivy reported, whatever scanner found it. Borrows from the [`Report`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding<'r> {
    pub kind: FindingKind,
    /// `VulnerabilityID`, misconfiguration `ID`, secret `RuleID` or license name.
    pub id: &'r str,
    pub severity: Severity,
    /// Package (vulnerabilities, licenses), title and line (secrets) or title
    /// (misconfigurations): what a person reads after the ID.
    pub subject: Cow<'r, str>,
    /// The package name (vulnerabilities, licenses); empty for misconfigurations and secrets,
    /// whose target is the file they are in.
    pub package: &'r str,
    pub title: &'r str,
    pub installed: &'r str,
    pub fixed: &'r str,
    pub target: &'r str,
    /// The result's class (`os-pkgs`, `lang-pkgs`, ...).
    pub class: &'r str,
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

impl<'r> Finding<'r> {
    /// A finding with only its kind, ID and place; the scanner-specific fields are filled in.
    fn at(kind: FindingKind, id: &'r str, target: &'r str, class: &'r str) -> Finding<'r> {
        Finding {
            kind,
            id,
            severity: Severity::Unknown,
            subject: Cow::Borrowed(""),
            package: "",
            title: "",
            installed: "",
            fixed: "",
            target,
            class,
        }
    }
}

impl TargetResult<'_> {
    /// This target's findings: vulnerabilities, failed misconfigurations, secrets, licenses.
    pub fn findings(&self) -> impl Iterator<Item = Finding<'_>> {
        let target = self.target.as_ref();
        let class = self.class.as_ref();
        let finding = move |kind, id| Finding::at(kind, id, target, class);
        let vulns = self.vulnerabilities.iter().map(move |v| Finding {
            severity: v.severity,
            subject: Cow::Borrowed(&v.pkg_name),
            package: &v.pkg_name,
            title: &v.title,
            installed: &v.installed_version,
            fixed: &v.fixed_version,
            ..finding(FindingKind::Vulnerability, &v.vulnerability_id)
        });
        let misconfigs = self
            .misconfigurations
            .iter()
            .filter(|m| m.status.is_empty() || m.status == "FAIL")
            .map(move |m| Finding {
                severity: m.severity,
                subject: Cow::Borrowed(&m.title),
                title: &m.title,
                ..finding(FindingKind::Misconfiguration, &m.id)
            });
        let secrets = self.secrets.iter().map(move |s| Finding {
            severity: s.severity,
            subject: Cow::Owned(if s.title.is_empty() {
                format!("line {}", s.start_line)
            } else {
                format!("{} (line {})", s.title, s.start_line)
            }),
            title: &s.title,
            ..finding(FindingKind::Secret, &s.rule_id)
        });
        let licenses = self.licenses.iter().map(move |l| {
            let package: &str = if l.pkg_name.is_empty() {
                &l.file_path
            } else {
                &l.pkg_name
            };
            Finding {
                severity: l.severity,
                subject: Cow::Borrowed(package),
                package,
                ..finding(FindingKind::License, &l.name)
            }
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
    #[error("trivy's JSON report {}", describe_json_error(.0))]
    Malformed(serde_json::Error),
    #[error(
        "trivy's JSON report has SchemaVersion {0}; trivy-ecr reads version 2 (trivy 0.20 or newer)"
    )]
    UnsupportedSchema(u32),
    /// A JSON list: the shape of reports before schema version 2.
    #[error(
        "trivy's JSON report is a list, the format of trivy before 0.20; trivy-ecr reads SchemaVersion 2 (trivy 0.20 or newer)"
    )]
    ListShaped,
}

/// What is wrong with a report serde_json refused, for "trivy's JSON report ..." messages.
pub fn describe_json_error(err: &serde_json::Error) -> String {
    use serde_json::error::Category;
    match err.classify() {
        Category::Eof => format!("is truncated ({err})"),
        Category::Syntax | Category::Io => format!("is not valid JSON ({err})"),
        Category::Data => format!("does not have the shape of a trivy report ({err})"),
    }
}

/// Reads a report file whole; [`Report::from_slice`] then borrows from these bytes.
pub fn read(path: &Path) -> Result<Vec<u8>, ReportError> {
    std::fs::read(path).map_err(|source| ReportError::Read {
        path: path.display().to_string(),
        source,
    })
}

impl<'a> Report<'a> {
    pub fn from_slice(bytes: &'a [u8]) -> Result<Report<'a>, ReportError> {
        match bytes.iter().find(|b| !b.is_ascii_whitespace()) {
            None => return Err(ReportError::Empty),
            Some(b'[') => return Err(ReportError::ListShaped),
            Some(_) => {}
        }
        let report: Report = serde_json::from_slice(bytes).map_err(ReportError::Malformed)?;
        if report.schema_version != 2 {
            return Err(ReportError::UnsupportedSchema(report.schema_version));
        }
        Ok(report)
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
        let cases: [(&[u8], &str); 6] = [
            (b"", "empty"),
            (
                b"{\"SchemaVersion\": 2, \"Results\": [",
                "is truncated (EOF while parsing",
            ),
            (
                b"{\"SchemaVersion\": 2,, }",
                "is not valid JSON (key must be a string",
            ),
            (
                b"{\"SchemaVersion\": \"2\"}",
                "does not have the shape of a trivy report (invalid type",
            ),
            (b"{\"SchemaVersion\": 1}", "SchemaVersion 1"),
            (b" [1,2]", "is a list, the format of trivy before 0.20"),
        ];
        for (bytes, expected) in cases {
            let err = Report::from_slice(bytes).unwrap_err().to_string();
            assert!(err.contains(expected), "{err} should contain {expected}");
        }
    }

    #[test]
    fn nulls_read_as_absent_and_strings_are_borrowed() {
        let json = br#"{"SchemaVersion":2,"Metadata":null,"Results":[
            {"Target":"a","Vulnerabilities":null,"Secrets":null},
            {"Target":"b \"quoted\"","Vulnerabilities":[
              {"VulnerabilityID":"CVE-1","PkgName":"p","Severity":"HIGH"}]}]}"#;
        let report = Report::from_slice(json).unwrap();
        assert!(report.results[0].vulnerabilities.is_empty());
        assert!(matches!(report.results[1].target, Cow::Owned(_)));
        assert_eq!(report.results[1].target, "b \"quoted\"");
        let vuln = &report.results[1].vulnerabilities[0];
        assert!(matches!(vuln.vulnerability_id, Cow::Borrowed("CVE-1")));
        let empty = Report::from_slice(br#"{"SchemaVersion":2,"Results":null}"#).unwrap();
        assert_eq!(empty.findings().count(), 0);
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
