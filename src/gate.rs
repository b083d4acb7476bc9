//! The verdict: which findings block the build, and trivy's own `--exit-code`/`--exit-on-eol`.
//!
//! This is a pure function of the parsed report and the user's settings, so every rule is
//! tested without running anything.

use std::fmt;
use std::str::FromStr;

use serde::Deserialize;

use crate::report::{Finding, Report};

/// trivy's severities, lowest first, so `>=` means "at or above".
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Deserialize)]
#[serde(from = "String")]
pub enum Severity {
    #[default]
    Unknown,
    Low,
    Medium,
    High,
    Critical,
}

impl Severity {
    pub const ALL: [Severity; 5] = [
        Severity::Critical,
        Severity::High,
        Severity::Medium,
        Severity::Low,
        Severity::Unknown,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Unknown => "UNKNOWN",
            Severity::Low => "LOW",
            Severity::Medium => "MEDIUM",
            Severity::High => "HIGH",
            Severity::Critical => "CRITICAL",
        }
    }
}

impl From<String> for Severity {
    fn from(s: String) -> Self {
        s.parse().unwrap_or(Severity::Unknown)
    }
}

impl FromStr for Severity {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_uppercase().as_str() {
            "UNKNOWN" => Ok(Severity::Unknown),
            "LOW" => Ok(Severity::Low),
            "MEDIUM" => Ok(Severity::Medium),
            "HIGH" => Ok(Severity::High),
            "CRITICAL" => Ok(Severity::Critical),
            other => Err(format!(
                "unknown severity '{other}'; use CRITICAL, HIGH, MEDIUM, LOW, UNKNOWN or none"
            )),
        }
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

/// When the gate fails the build (`TRIVY_ECR_FAIL_ON`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailOn {
    /// On any finding of this severity or higher.
    AtOrAbove(Severity),
    /// Never (`none`): exit codes then come only from trivy's own flags.
    Disabled,
}

impl Default for FailOn {
    fn default() -> Self {
        FailOn::AtOrAbove(Severity::Critical)
    }
}

impl FromStr for FailOn {
    type Err = String;
    /// `CRITICAL`, `HIGH`, `CRITICAL,HIGH` (the lowest listed is the threshold), `none`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.trim().eq_ignore_ascii_case("none") {
            return Ok(FailOn::Disabled);
        }
        let mut lowest: Option<Severity> = None;
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let severity: Severity = part.parse()?;
            lowest = Some(lowest.map_or(severity, |l| l.min(severity)));
        }
        lowest
            .map(FailOn::AtOrAbove)
            .ok_or_else(|| "expected a severity such as CRITICAL, or none".to_string())
    }
}

impl fmt::Display for FailOn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FailOn::AtOrAbove(s) => write!(f, "{s}"),
            FailOn::Disabled => f.write_str("none (gate disabled)"),
        }
    }
}

impl FailOn {
    pub fn blocks(self, severity: Severity) -> bool {
        matches!(self, FailOn::AtOrAbove(threshold) if severity >= threshold)
    }
}

/// trivy's own exit flags as the user set them (flag, `TRIVY_*` variable or config file).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TrivyExitFlags {
    pub exit_code: Option<i32>,
    pub exit_on_eol: Option<i32>,
}

/// The verdict on one report.
#[derive(Debug, PartialEq, Eq)]
pub enum GateOutcome<'r> {
    Passed,
    /// Findings at or above the threshold remain.
    Failed {
        blocking: Vec<Finding<'r>>,
    },
    /// The user's `--exit-code N` fired: findings remain (trivy's own meaning).
    TrivyExitCode {
        code: i32,
    },
    /// The user's `--exit-on-eol N` fired: the OS is end of life.
    EndOfLife {
        code: i32,
    },
}

/// Decides the verdict. trivy's own flags keep trivy's precedence (end of life first, then
/// `--exit-code`); the gate applies when neither fired, and `--exit-code 0` never disables it.
pub fn evaluate(report: &Report, fail_on: FailOn, trivy: TrivyExitFlags) -> GateOutcome<'_> {
    if let Some(code) = trivy.exit_on_eol.filter(|&c| c != 0)
        && report.os_end_of_life()
    {
        return GateOutcome::EndOfLife { code };
    }
    if let Some(code) = trivy.exit_code.filter(|&c| c != 0)
        && report.findings().next().is_some()
    {
        return GateOutcome::TrivyExitCode { code };
    }
    let blocking: Vec<Finding<'_>> = report
        .findings()
        .filter(|f| fail_on.blocks(f.severity))
        .collect();
    if blocking.is_empty() {
        GateOutcome::Passed
    } else {
        GateOutcome::Failed { blocking }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const REPORT: &str = include_str!("../tests/data/report-alpine.json");

    fn report(json: &str) -> Report {
        Report::from_slice(json.as_bytes()).unwrap()
    }

    #[test]
    fn parses_thresholds() {
        assert_eq!(
            "CRITICAL".parse::<FailOn>(),
            Ok(FailOn::AtOrAbove(Severity::Critical))
        );
        assert_eq!(
            "critical, HIGH".parse::<FailOn>(),
            Ok(FailOn::AtOrAbove(Severity::High))
        );
        assert_eq!("None".parse::<FailOn>(), Ok(FailOn::Disabled));
        assert!("".parse::<FailOn>().is_err());
        assert!("SEVERE".parse::<FailOn>().is_err());
    }

    #[test]
    fn default_gate_fails_on_criticals_only() {
        let r = report(REPORT);
        let GateOutcome::Failed { blocking } = evaluate(&r, FailOn::default(), Default::default())
        else {
            panic!("expected failure");
        };
        assert!(!blocking.is_empty());
        assert!(blocking.iter().all(|f| f.severity == Severity::Critical));
        let total_criticals = r
            .findings()
            .filter(|f| f.severity == Severity::Critical)
            .count();
        assert_eq!(blocking.len(), total_criticals);
    }

    #[test]
    fn lower_threshold_blocks_more() {
        let r = report(REPORT);
        let count = |fail_on| match evaluate(&r, fail_on, Default::default()) {
            GateOutcome::Failed { blocking } => blocking.len(),
            _ => 0,
        };
        let critical = count(FailOn::AtOrAbove(Severity::Critical));
        let high = count(FailOn::AtOrAbove(Severity::High));
        let medium = count(FailOn::AtOrAbove(Severity::Medium));
        assert!(
            critical < high && high < medium,
            "{critical} {high} {medium}"
        );
    }

    #[test]
    fn disabled_gate_passes() {
        let r = report(REPORT);
        assert_eq!(
            evaluate(&r, FailOn::Disabled, Default::default()),
            GateOutcome::Passed
        );
    }

    #[test]
    fn clean_report_passes() {
        let r = report(r#"{"SchemaVersion":2,"ArtifactName":"x"}"#);
        assert_eq!(
            evaluate(
                &r,
                FailOn::default(),
                TrivyExitFlags {
                    exit_code: Some(9),
                    exit_on_eol: Some(7)
                }
            ),
            GateOutcome::Passed
        );
    }

    #[test]
    fn trivy_exit_flags_keep_their_meaning_and_precedence() {
        let r = report(REPORT);
        let flags = TrivyExitFlags {
            exit_code: Some(9),
            exit_on_eol: None,
        };
        assert_eq!(
            evaluate(&r, FailOn::Disabled, flags),
            GateOutcome::TrivyExitCode { code: 9 }
        );
        let zero = TrivyExitFlags {
            exit_code: Some(0),
            exit_on_eol: None,
        };
        assert!(matches!(
            evaluate(&r, FailOn::default(), zero),
            GateOutcome::Failed { .. }
        ));
        let eol = report(
            r#"{"SchemaVersion":2,"Metadata":{"OS":{"Family":"alpine","Name":"3.9","EOSL":true}},
            "Results":[{"Target":"t","Vulnerabilities":[{"VulnerabilityID":"CVE-1","Severity":"LOW"}]}]}"#,
        );
        let both = TrivyExitFlags {
            exit_code: Some(9),
            exit_on_eol: Some(7),
        };
        assert_eq!(
            evaluate(&eol, FailOn::default(), both),
            GateOutcome::EndOfLife { code: 7 }
        );
    }

    #[test]
    fn unknown_severity_strings_are_unknown() {
        let r = report(
            r#"{"SchemaVersion":2,"Results":[{"Target":"t","Vulnerabilities":[{"VulnerabilityID":"X","Severity":"weird"}]}]}"#,
        );
        assert_eq!(r.findings().next().unwrap().severity, Severity::Unknown);
    }
}
