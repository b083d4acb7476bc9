//! GitHub Actions: the Markdown summary appended to `$GITHUB_STEP_SUMMARY` (shown on the
//! workflow run's page) and, with `--ecr-github-annotations`, `::error`/`::warning` workflow
//! commands that GitHub turns into annotations.
//!
//! Both are built from the same [`SummaryInput`] as the stderr summary, so the three always
//! agree. Annotations go to stderr (the runner reads workflow commands from both streams), never
//! to stdout, which may carry the user's report.

use std::fmt::Write as _;
use std::io::{self, Write};
use std::path::Path;

use crate::gate::{FailOn, GateOutcome, Severity};
use crate::report::{Finding, FindingKind};
use crate::summary::{SummaryInput, count};

/// Rows of the findings table before it is cut short (GitHub refuses summaries over 1 MiB).
const MAX_ROWS: usize = 100;

/// Annotations of each kind at most (GitHub shows 10 per step; the rest only add noise).
const MAX_ANNOTATIONS: usize = 50;

/// The Markdown section for one gated scan.
pub fn step_summary(input: &SummaryInput<'_>) -> String {
    let mut md = String::new();
    let artifact = if input.report.artifact_name.is_empty() {
        "scan"
    } else {
        &input.report.artifact_name
    };
    let verdict = match input.outcome {
        GateOutcome::Passed if input.fail_on == FailOn::Disabled => "gate disabled",
        GateOutcome::Passed => "passed",
        _ => "FAILED",
    };
    let _ = writeln!(md, "### trivy-ecr: {} — {verdict}\n", cell(artifact));

    let noun = format!("{}finding", input.new_word());
    let _ = match input.outcome {
        GateOutcome::Passed if input.fail_on == FailOn::Disabled => {
            writeln!(md, "The gate is disabled (fail-on: none).")
        }
        GateOutcome::Passed => writeln!(
            md,
            "Nothing {}at or above **{}**.",
            input.new_word(),
            input.fail_on
        ),
        GateOutcome::Failed { blocking } => writeln!(
            md,
            "**Failed: {} at or above {}** (exit 1).",
            count(blocking.len(), &noun),
            input.fail_on
        ),
        GateOutcome::TrivyExitCode { code } => writeln!(
            md,
            "Findings remain and `--exit-code {code}` was given (exit {code})."
        ),
        GateOutcome::EndOfLife { code } => writeln!(
            md,
            "The OS is end of life and `--exit-on-eol {code}` was given (exit {code})."
        ),
    };
    if let Some(comparison) = input.baseline
        && input.fail_on != FailOn::Disabled
    {
        let _ = writeln!(
            md,
            "\nBaseline `{}`: {} at or above {} already known (not blocking), {} fixed since.",
            code_span(&comparison.baseline.path),
            count(comparison.known, "finding"),
            input.fail_on,
            comparison.fixed_since
        );
    }

    let mut counts = input.counts_per_target().peekable();
    if counts.peek().is_none() {
        let _ = writeln!(md, "\nNo findings.");
    } else {
        md.push_str("\n| Target |");
        for severity in Severity::ALL {
            let _ = write!(md, " {severity} |");
        }
        md.push_str("\n| --- |");
        md.push_str(&" ---: |".repeat(Severity::ALL.len()));
        md.push('\n');
        for (target, per_severity) in counts {
            let _ = write!(md, "| {} |", cell(target));
            for severity in Severity::ALL {
                let _ = write!(md, " {} |", per_severity[severity as usize]);
            }
            md.push('\n');
        }
    }

    if let FailOn::AtOrAbove(_) = input.fail_on {
        findings_table(&mut md, input);
    }

    for db in input.degraded {
        let _ = writeln!(
            md,
            "\n> **Degraded mode:** {}; no mirror delivered a fresh one, so the scan used it.",
            cell(&db.to_string())
        );
    }
    let _ = match input.db_source {
        Some(source) => writeln!(
            md,
            "\nVulnerability DB downloaded from `{}`.\n",
            code_span(source)
        ),
        None => writeln!(
            md,
            "\nVulnerability DB: trivy's cache (not downloaded this run).\n"
        ),
    };
    md
}

/// The findings at or above the threshold, new ones first when a baseline is given.
fn findings_table(md: &mut String, input: &SummaryInput<'_>) {
    let at_or_above: Vec<(Finding<'_>, bool)> = input
        .report
        .findings()
        .filter(|f| input.fail_on.blocks(f.severity))
        .map(|f| {
            let known = input.baseline.is_some_and(|c| c.baseline.contains(&f));
            (f, known)
        })
        .collect();
    if at_or_above.is_empty() {
        return;
    }
    let mut rows: Vec<&(Finding<'_>, bool)> = at_or_above.iter().collect();
    rows.sort_by_key(|(f, known)| (*known, std::cmp::Reverse(f.severity)));
    let _ = writeln!(
        md,
        "\nFindings at or above {}:\n\n| Severity | ID | Package | Installed | Fixed | Title | Target |{}",
        input.fail_on,
        if input.baseline.is_some() {
            " Baseline |"
        } else {
            ""
        }
    );
    let _ = writeln!(
        md,
        "| --- | --- | --- | --- | --- | --- | --- |{}",
        if input.baseline.is_some() {
            " --- |"
        } else {
            ""
        }
    );
    for (finding, known) in rows.iter().take(MAX_ROWS) {
        let fixed = match finding.kind {
            FindingKind::Vulnerability if finding.fixed.is_empty() => "no fix yet",
            _ => finding.fixed,
        };
        let _ = write!(
            md,
            "| {} | {} | {} | {} | {} | {} | {} |",
            finding.severity,
            cell(finding.id),
            cell(&finding.subject),
            cell(finding.installed),
            cell(fixed),
            cell(finding.title),
            cell(finding.target)
        );
        if input.baseline.is_some() {
            md.push_str(if *known { " known |" } else { " **new** |" });
        }
        md.push('\n');
    }
    if rows.len() > MAX_ROWS {
        let _ = writeln!(
            md,
            "\n… and {} more (see the full report).",
            rows.len() - MAX_ROWS
        );
    }
}

/// Text for a Markdown table cell: one line, and nothing GitHub would read as markup or as a
/// column separator.
pub fn cell(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\\' | '`' | '*' | '_' | '[' | ']' | '|' | '~' | '#' | '!' => {
                out.push('\\');
                out.push(c);
            }
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            c if c.is_control() => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

/// Text inside a `code span`: one line, backticks replaced (they would end the span).
fn code_span(text: &str) -> String {
    text.chars()
        .map(|c| if c == '`' || c.is_control() { '\'' } else { c })
        .collect()
}

/// Appends `section` to the step summary file, creating it if needed; never truncates it.
pub fn append_step_summary(path: &Path, section: &str) -> io::Result<()> {
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?;
    file.write_all(section.as_bytes())?;
    file.flush()
}

/// `::error` for every finding that fails the gate and `::warning` for findings at or above the
/// threshold that the baseline already had, one line each, at most [`MAX_ANNOTATIONS`] of each.
pub fn annotations(input: &SummaryInput<'_>) -> String {
    let mut out = String::new();
    if input.fail_on == FailOn::Disabled {
        return out;
    }
    let (mut errors, mut warnings) = (0usize, 0usize);
    for finding in input.report.findings() {
        if !input.fail_on.blocks(finding.severity) {
            continue;
        }
        let known = input
            .baseline
            .is_some_and(|c| c.baseline.contains(&finding));
        let (command, shown) = if known {
            warnings += 1;
            ("warning", warnings)
        } else {
            errors += 1;
            ("error", errors)
        };
        if shown > MAX_ANNOTATIONS {
            continue;
        }
        let title = format!(
            "{} {} in {}{}",
            finding.severity,
            finding.id,
            finding.subject,
            if known {
                " (known in the baseline)"
            } else {
                ""
            }
        );
        let mut message = String::new();
        if finding.kind == FindingKind::Vulnerability {
            let fixed = if finding.fixed.is_empty() {
                "no fix yet".to_string()
            } else {
                format!("fixed in {}", finding.fixed)
            };
            let _ = write!(
                message,
                "{} {} ({fixed})",
                finding.package, finding.installed
            );
        }
        if !finding.title.is_empty() {
            let _ = write!(message, ": {}", finding.title);
        }
        let _ = write!(message, "\nTarget: {}", finding.target);
        let _ = writeln!(
            out,
            "::{command} title={}::{}",
            escape_property(&title),
            escape_data(&message)
        );
    }
    for (command, total) in [("error", errors), ("warning", warnings)] {
        if total > MAX_ANNOTATIONS {
            let _ = writeln!(
                out,
                "::{command} title=trivy-ecr::{}",
                escape_data(&format!(
                    "{} more not annotated; see the step summary or the report",
                    total - MAX_ANNOTATIONS
                ))
            );
        }
    }
    out
}

/// A workflow command's message: `%`, `\r` and `\n` percent-encoded, as GitHub requires.
pub fn escape_data(text: &str) -> String {
    text.replace('%', "%25")
        .replace('\r', "%0D")
        .replace('\n', "%0A")
}

/// A workflow command's property value: as a message, plus `:` and `,`, which end a property.
pub fn escape_property(text: &str) -> String {
    escape_data(text).replace(':', "%3A").replace(',', "%2C")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::baseline::Baseline;
    use crate::gate::{TrivyExitFlags, evaluate};
    use crate::report::Report;

    const REPORT: &str = include_str!("../tests/data/report-alpine.json");
    const BASELINE: &str = include_str!("../tests/data/baseline-alpine.json");

    fn input<'a>(
        report: &'a Report<'a>,
        outcome: &'a GateOutcome<'a>,
        fail_on: FailOn,
        baseline: Option<&'a crate::baseline::BaselineComparison<'a>>,
    ) -> SummaryInput<'a> {
        SummaryInput {
            report,
            outcome,
            fail_on,
            db_source: Some("public.ecr.aws/aquasecurity/trivy-db:2"),
            degraded: &[],
            quiet: false,
            baseline,
        }
    }

    #[test]
    fn step_summary_with_a_baseline() {
        let old = Report::from_slice(BASELINE.as_bytes()).unwrap();
        let baseline = Baseline::from_report("old.json".into(), &old);
        let report = Report::from_slice(REPORT.as_bytes()).unwrap();
        let outcome = evaluate(&report, FailOn::default(), TrivyExitFlags::default());
        let (outcome, comparison) = baseline.apply(&report, FailOn::default(), outcome);
        let input = input(&report, &outcome, FailOn::default(), Some(&comparison));
        let expected = "\
### trivy-ecr: 127.0.0.1:5000/app:latest — FAILED

**Failed: 1 new finding at or above CRITICAL** (exit 1).

Baseline `old.json`: 1 finding at or above CRITICAL already known (not blocking), 1 fixed since.

| Target | CRITICAL | HIGH | MEDIUM | LOW | UNKNOWN |
| --- | ---: | ---: | ---: | ---: | ---: |
| 127.0.0.1:5000/app:latest (alpine 3.19.1) | 2 | 1 | 1 | 0 | 0 |

Findings at or above CRITICAL:

| Severity | ID | Package | Installed | Fixed | Title | Target | Baseline |
| --- | --- | --- | --- | --- | --- | --- | --- |
| CRITICAL | CVE-2099-0002 | busybox | 1.36.1-r15 | no fix yet | busybox: critical without a fix | 127.0.0.1:5000/app:latest (alpine 3.19.1) | **new** |
| CRITICAL | CVE-2099-0001 | libcrypto3 | 3.1.4-r5 | 3.1.4-r6 | openssl: critical with a fix | 127.0.0.1:5000/app:latest (alpine 3.19.1) | known |

Vulnerability DB downloaded from `public.ecr.aws/aquasecurity/trivy-db:2`.

";
        assert_eq!(step_summary(&input), expected);
        let expected = "\
::warning title=CRITICAL CVE-2099-0001 in libcrypto3 (known in the baseline)::libcrypto3 3.1.4-r5 (fixed in 3.1.4-r6): openssl: critical with a fix%0ATarget: 127.0.0.1:5000/app:latest (alpine 3.19.1)
::error title=CRITICAL CVE-2099-0002 in busybox::busybox 1.36.1-r15 (no fix yet): busybox: critical without a fix%0ATarget: 127.0.0.1:5000/app:latest (alpine 3.19.1)
";
        assert_eq!(annotations(&input), expected);
    }

    #[test]
    fn step_summary_of_a_clean_scan_and_a_disabled_gate() {
        let report = Report::from_slice(br#"{"SchemaVersion":2,"ArtifactName":"app:1"}"#).unwrap();
        let outcome = GateOutcome::Passed;
        let mut clean = input(&report, &outcome, FailOn::default(), None);
        clean.db_source = None;
        let expected = "\
### trivy-ecr: app:1 — passed

Nothing at or above **CRITICAL**.

No findings.

Vulnerability DB: trivy's cache (not downloaded this run).

";
        assert_eq!(step_summary(&clean), expected);

        let report = Report::from_slice(REPORT.as_bytes()).unwrap();
        let disabled = input(&report, &outcome, FailOn::Disabled, None);
        let text = step_summary(&disabled);
        assert!(text.starts_with("### trivy-ecr: 127.0.0.1:5000/app:latest — gate disabled\n\nThe gate is disabled (fail-on: none).\n"), "{text}");
        assert!(!text.contains("Findings at or above"), "{text}");
        assert_eq!(annotations(&disabled), "");
    }

    #[test]
    fn hostile_strings_stay_in_their_cell_and_command() {
        let json = r#"{"SchemaVersion":2,"ArtifactName":"x","Results":[{"Target":"a|b\nc","Class":"lang-pkgs",
            "Vulnerabilities":[{"VulnerabilityID":"CVE-1","PkgName":"p*_`[x]`<img>","InstalledVersion":"1%2,3:4",
            "Title":"50% off\r\nnext: line, more","Severity":"CRITICAL"}]}]}"#;
        let report = Report::from_slice(json.as_bytes()).unwrap();
        let outcome = evaluate(&report, FailOn::default(), TrivyExitFlags::default());
        let input = input(&report, &outcome, FailOn::default(), None);
        let md = step_summary(&input);
        assert!(
            md.contains("| CRITICAL | CVE-1 | p\\*\\_\\`\\[x\\]\\`&lt;img&gt; | 1%2,3:4 | no fix yet | 50% off  next: line, more | a\\|b c |"),
            "{md}"
        );
        let expected = "::error title=CRITICAL CVE-1 in p*_`[x]`<img>::p*_`[x]`<img> 1%252,3:4 (no fix yet): 50%25 off%0D%0Anext: line, more%0ATarget: a|b%0Ac\n";
        assert_eq!(annotations(&input), expected);
        assert_eq!(escape_property("a:b,c%d\ne"), "a%3Ab%2Cc%25d%0Ae");
    }

    #[test]
    fn long_lists_are_cut_short() {
        let vulns: Vec<String> = (0..130)
            .map(|i| {
                format!(r#"{{"VulnerabilityID":"CVE-{i}","PkgName":"p","Severity":"CRITICAL"}}"#)
            })
            .collect();
        let json = format!(
            r#"{{"SchemaVersion":2,"Results":[{{"Target":"t","Vulnerabilities":[{}]}}]}}"#,
            vulns.join(",")
        );
        let report = Report::from_slice(json.as_bytes()).unwrap();
        let outcome = evaluate(&report, FailOn::default(), TrivyExitFlags::default());
        let input = input(&report, &outcome, FailOn::default(), None);
        let md = step_summary(&input);
        assert_eq!(md.matches("| CRITICAL | CVE-").count(), MAX_ROWS);
        assert!(
            md.contains("\n… and 30 more (see the full report).\n"),
            "{md}"
        );
        let notes = annotations(&input);
        assert_eq!(notes.lines().count(), MAX_ANNOTATIONS + 1);
        assert!(
            notes.ends_with("::error title=trivy-ecr::80 more not annotated; see the step summary or the report\n"),
            "{notes}"
        );
    }

    #[test]
    fn appends_and_never_truncates() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("summary.md");
        std::fs::write(&path, "earlier step\n").unwrap();
        append_step_summary(&path, "one\n").unwrap();
        append_step_summary(&path, "two\n").unwrap();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "earlier step\none\ntwo\n"
        );
    }
}
