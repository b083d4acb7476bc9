//! The JUnit XML report (`--ecr-junit`), so that CI systems showing test results (AWS CodeBuild
//! report groups with `file-format: JUNITXML`, GitLab, Jenkins) list what the scan found: one
//! testsuite per target, one testcase per finding, a failure for each finding that fails the
//! gate, skipped for those the baseline already had, and the rest passing.
//!
//! Written by hand rather than through an XML library: the format is small and fixed, and every
//! string from the report goes through [`escape`], which also keeps control characters (that
//! XML 1.0 cannot carry at all) out of the file.

use std::io::{self, Write};

use crate::baseline::Baseline;
use crate::degraded::DegradedDb;
use crate::gate::FailOn;
use crate::report::{Finding, FindingKind, Report};

/// How one finding appears in the report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Case {
    Passed,
    /// At or above the threshold: fails the gate.
    Failed,
    /// At or above the threshold, but the baseline had it.
    Known,
}

#[derive(Debug, Default, Clone, Copy)]
struct Counts {
    tests: usize,
    failures: usize,
    skipped: usize,
}

impl Counts {
    fn add(&mut self, case: Case) {
        self.tests += 1;
        match case {
            Case::Passed => {}
            Case::Failed => self.failures += 1,
            Case::Known => self.skipped += 1,
        }
    }
}

/// Writes the JUnit XML of `report` to `out`.
pub fn write(
    out: &mut impl Write,
    report: &Report<'_>,
    fail_on: FailOn,
    baseline: Option<&Baseline>,
    degraded: &[DegradedDb],
) -> io::Result<()> {
    let case = |finding: &Finding<'_>| {
        if !fail_on.blocks(finding.severity) {
            Case::Passed
        } else if baseline.is_some_and(|b| b.contains(finding)) {
            Case::Known
        } else {
            Case::Failed
        }
    };
    let per_target: Vec<Counts> = report
        .results
        .iter()
        .map(|result| {
            let mut counts = Counts::default();
            result.findings().for_each(|f| counts.add(case(&f)));
            counts
        })
        .collect();
    let total = per_target.iter().fold(Counts::default(), |sum, c| Counts {
        tests: sum.tests + c.tests,
        failures: sum.failures + c.failures,
        skipped: sum.skipped + c.skipped,
    });

    out.write_all(b"<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n")?;
    out.write_all(b"<testsuites name=\"")?;
    escape(out, artifact_name(report), true)?;
    out.write_all(b"\"")?;
    counts_attributes(out, total)?;
    out.write_all(b">\n")?;
    if report.results.is_empty() {
        // A scan with nothing to report still names what was scanned.
        out.write_all(b"  <testsuite name=\"")?;
        escape(out, artifact_name(report), true)?;
        out.write_all(b"\"")?;
        counts_attributes(out, Counts::default())?;
        out.write_all(b"/>\n")?;
    }
    for (result, counts) in report.results.iter().zip(&per_target) {
        out.write_all(b"  <testsuite name=\"")?;
        escape(out, non_empty(&result.target, artifact_name(report)), true)?;
        out.write_all(b"\"")?;
        counts_attributes(out, *counts)?;
        out.write_all(b">\n")?;
        degraded_properties(out, degraded)?;
        for finding in result.findings() {
            testcase(out, &finding, case(&finding), baseline)?;
        }
        out.write_all(b"  </testsuite>\n")?;
    }
    out.write_all(b"</testsuites>\n")
}

/// Degraded mode, where report viewers show it: one `trivy-ecr.degraded` property per DB.
fn degraded_properties(out: &mut impl Write, degraded: &[DegradedDb]) -> io::Result<()> {
    if degraded.is_empty() {
        return Ok(());
    }
    out.write_all(b"    <properties>\n")?;
    for db in degraded {
        out.write_all(b"      <property name=\"trivy-ecr.degraded\" value=\"")?;
        escape(out, &db.to_string(), true)?;
        out.write_all(b"\"/>\n")?;
    }
    out.write_all(b"    </properties>\n")
}

fn artifact_name<'r>(report: &'r Report<'_>) -> &'r str {
    non_empty(&report.artifact_name, "trivy")
}

/// JUnit readers want names; trivy leaves some fields empty.
fn non_empty<'s>(text: &'s str, fallback: &'s str) -> &'s str {
    if text.is_empty() { fallback } else { text }
}

fn counts_attributes(out: &mut impl Write, counts: Counts) -> io::Result<()> {
    write!(
        out,
        " tests=\"{}\" failures=\"{}\" errors=\"0\" skipped=\"{}\" time=\"0\"",
        counts.tests, counts.failures, counts.skipped
    )
}

fn testcase(
    out: &mut impl Write,
    finding: &Finding<'_>,
    case: Case,
    baseline: Option<&Baseline>,
) -> io::Result<()> {
    out.write_all(b"    <testcase name=\"")?;
    let name = [finding.id, &finding.subject]
        .into_iter()
        .filter(|part| !part.is_empty())
        .collect::<Vec<_>>()
        .join(" ");
    escape(out, non_empty(&name, "(unnamed finding)"), true)?;
    out.write_all(b"\" classname=\"")?;
    escape(out, finding.target, true)?;
    out.write_all(b"\" time=\"0\"")?;
    match case {
        Case::Passed => out.write_all(b"/>\n"),
        Case::Failed => {
            out.write_all(b">\n      <failure message=\"")?;
            escape(out, &headline(finding), true)?;
            write!(out, "\" type=\"{}\">", finding.severity.as_str())?;
            escape(out, &details(finding), false)?;
            out.write_all(b"</failure>\n    </testcase>\n")
        }
        Case::Known => {
            out.write_all(b">\n      <skipped message=\"")?;
            let path = baseline.map(|b| b.path.as_str()).unwrap_or_default();
            escape(
                out,
                &format!("known in the baseline {path}: {}", headline(finding)),
                true,
            )?;
            out.write_all(b"\"/>\n    </testcase>\n")
        }
    }
}

/// One line: severity, ID, what it is about, and the fix for vulnerabilities.
fn headline(f: &Finding<'_>) -> String {
    match f.kind {
        FindingKind::Vulnerability => {
            let fixed = if f.fixed.is_empty() {
                "no fix yet".to_string()
            } else {
                format!("fixed in {}", f.fixed)
            };
            format!(
                "{} {} in {} {} ({fixed})",
                f.severity.as_str(),
                f.id,
                f.package,
                f.installed
            )
        }
        _ => format!("{} {}: {}", f.severity.as_str(), f.id, f.subject),
    }
}

/// The failure's text: everything a reader needs without opening the trivy report.
fn details(f: &Finding<'_>) -> String {
    let mut text = format!("{}\n", headline(f));
    if !f.title.is_empty() {
        text.push_str(&format!("Title: {}\n", f.title));
    }
    text.push_str(&format!("Target: {}\n", f.target));
    text
}

/// Writes `text` as XML character data or (when `attribute`) as an attribute value. `&`, `<`,
/// `>`, `"` and `'` become entities; in attributes tab, newline and carriage return become
/// character references so they survive attribute normalisation. Characters XML 1.0 does not
/// allow anywhere (other C0 controls, U+FFFE, U+FFFF) are written as visible `\u{..}` escapes.
pub fn escape(out: &mut impl Write, text: &str, attribute: bool) -> io::Result<()> {
    let mut start = 0;
    for (at, c) in text.char_indices() {
        let replacement: Option<std::borrow::Cow<'static, str>> = match c {
            '&' => Some("&amp;".into()),
            '<' => Some("&lt;".into()),
            '>' => Some("&gt;".into()),
            '"' => Some("&quot;".into()),
            '\'' => Some("&apos;".into()),
            '\t' if attribute => Some("&#9;".into()),
            '\n' if attribute => Some("&#10;".into()),
            '\r' => Some("&#13;".into()),
            '\t' | '\n' => None,
            c if (c as u32) < 0x20 || c == '\u{FFFE}' || c == '\u{FFFF}' => {
                Some(c.escape_unicode().to_string().into())
            }
            _ => None,
        };
        if let Some(replacement) = replacement {
            out.write_all(&text.as_bytes()[start..at])?;
            out.write_all(replacement.as_bytes())?;
            start = at + c.len_utf8();
        }
    }
    out.write_all(&text.as_bytes()[start..])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn escaped(text: &str, attribute: bool) -> String {
        let mut out = Vec::new();
        escape(&mut out, text, attribute).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn escapes_markup_and_control_characters() {
        assert_eq!(
            escaped("a<b>&\"c\"'d'", true),
            "a&lt;b&gt;&amp;&quot;c&quot;&apos;d&apos;"
        );
        assert_eq!(escaped("x\ty\nz\r", true), "x&#9;y&#10;z&#13;");
        assert_eq!(escaped("x\ty\nz\r", false), "x\ty\nz&#13;");
        assert_eq!(
            escaped("bell\u{7}esc\u{1b}nul\u{0}end\u{FFFF}", false),
            "bell\\u{7}esc\\u{1b}nul\\u{0}end\\u{ffff}"
        );
        assert_eq!(escaped("ünïcödé ✓", true), "ünïcödé ✓");
    }

    #[test]
    fn one_suite_per_target_one_case_per_finding() {
        let json = r#"{"SchemaVersion":2,"ArtifactName":"app:1","Results":[
            {"Target":"app:1 (alpine 3.19.1)","Class":"os-pkgs","Vulnerabilities":[
              {"VulnerabilityID":"CVE-1","PkgName":"openssl","InstalledVersion":"3.1","FixedVersion":"3.2","Title":"bad <ssl>","Severity":"CRITICAL"},
              {"VulnerabilityID":"CVE-2","PkgName":"musl","InstalledVersion":"1.2","Severity":"LOW"}]},
            {"Target":"Dockerfile","Class":"config","Misconfigurations":[
              {"ID":"DS002","Title":"root user","Severity":"HIGH","Status":"FAIL"}]}]}"#;
        let report = Report::from_slice(json.as_bytes()).unwrap();
        let mut out = Vec::new();
        write(&mut out, &report, FailOn::default(), None, &[]).unwrap();
        let expected = r#"<?xml version="1.0" encoding="UTF-8"?>
<testsuites name="app:1" tests="3" failures="1" errors="0" skipped="0" time="0">
  <testsuite name="app:1 (alpine 3.19.1)" tests="2" failures="1" errors="0" skipped="0" time="0">
    <testcase name="CVE-1 openssl" classname="app:1 (alpine 3.19.1)" time="0">
      <failure message="CRITICAL CVE-1 in openssl 3.1 (fixed in 3.2)" type="CRITICAL">CRITICAL CVE-1 in openssl 3.1 (fixed in 3.2)
Title: bad &lt;ssl&gt;
Target: app:1 (alpine 3.19.1)
</failure>
    </testcase>
    <testcase name="CVE-2 musl" classname="app:1 (alpine 3.19.1)" time="0"/>
  </testsuite>
  <testsuite name="Dockerfile" tests="1" failures="0" errors="0" skipped="0" time="0">
    <testcase name="DS002 root user" classname="Dockerfile" time="0"/>
  </testsuite>
</testsuites>
"#;
        assert_eq!(String::from_utf8(out).unwrap(), expected);
    }

    #[test]
    fn degraded_mode_is_a_property_of_every_suite() {
        let json = r#"{"SchemaVersion":2,"ArtifactName":"app:1","Results":[
            {"Target":"t","Vulnerabilities":[{"VulnerabilityID":"CVE-1","PkgName":"p","Severity":"LOW"}]}]}"#;
        let report = Report::from_slice(json.as_bytes()).unwrap();
        let degraded = [DegradedDb {
            kind: crate::mirrors::DbKind::Vulnerability,
            age: std::time::Duration::from_secs(10 * 3600),
            limit: std::time::Duration::from_secs(72 * 3600),
        }];
        let mut out = Vec::new();
        write(&mut out, &report, FailOn::default(), None, &degraded).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.contains(r#"    <properties>
      <property name="trivy-ecr.degraded" value="the cached vulnerability DB is 10h old (limit 3days)"/>
    </properties>
    <testcase name="CVE-1 p""#),
            "{text}"
        );
    }

    #[test]
    fn an_empty_scan_still_names_the_artifact() {
        let report = Report::from_slice(br#"{"SchemaVersion":2,"ArtifactName":"app:1"}"#).unwrap();
        let mut out = Vec::new();
        write(&mut out, &report, FailOn::default(), None, &[]).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.contains(r#"<testsuite name="app:1" tests="0" failures="0" errors="0" skipped="0" time="0"/>"#),
            "{text}"
        );
    }
}
