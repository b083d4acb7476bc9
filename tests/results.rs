//! CI-native results end to end: the trivy-ecr binary against the fake trivy
//! (`examples/fake_trivy.rs`), in the sandbox style of `tests/wrapper.rs`. JUnit reports are
//! checked twice: against `tests/data/junit.xsd` with `xmllint --schema` (installed by
//! `scripts/install-tools`), and by parsing them the way a CodeBuild report group reads them
//! (counts, names, failures). Also: the raw JSON copy, the GitHub step summary and annotations,
//! baseline gating, and reports trivy-ecr cannot use.

mod fake;

use std::path::{Path, PathBuf};
use std::process::Command;

use fake::Sandbox;

use quick_xml::XmlVersion;
use quick_xml::events::{BytesStart, Event};

const DATA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data");

fn data(name: &str) -> PathBuf {
    Path::new(DATA).join(name)
}

/// Validates `xml` against tests/data/junit.xsd with xmllint.
fn assert_valid_junit(xml: &Path) {
    let output = Command::new("xmllint")
        .arg("--noout")
        .arg("--schema")
        .arg(data("junit.xsd"))
        .arg(xml)
        .output()
        .unwrap_or_else(|e| panic!("cannot run xmllint ({e}): run scripts/install-tools"));
    assert!(
        output.status.success(),
        "{} does not validate against junit.xsd:\n{}",
        xml.display(),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A JUnit report as a CodeBuild report group reads it.
#[derive(Debug, Default)]
struct Suites {
    attributes: Attributes,
    suites: Vec<Suite>,
}

#[derive(Debug, Default)]
struct Suite {
    attributes: Attributes,
    cases: Vec<Case>,
}

#[derive(Debug, Default)]
struct Case {
    attributes: Attributes,
    /// `failure`, `error` or `skipped`, with its attributes and text.
    outcome: Option<(String, Attributes, String)>,
}

#[derive(Debug, Default, Clone)]
struct Attributes(Vec<(String, String)>);

impl Attributes {
    fn of(element: &BytesStart<'_>) -> Attributes {
        Attributes(
            element
                .attributes()
                .map(|a| {
                    let a = a.unwrap();
                    let key = a.key.as_ref().to_string();
                    let value = a.normalized_value(XmlVersion::Implicit1_0).unwrap();
                    (key, value.into_owned())
                })
                .collect(),
        )
    }

    fn get(&self, key: &str) -> &str {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .unwrap_or_else(|| panic!("attribute {key} missing from {self:?}"))
    }

    fn count(&self, key: &str) -> usize {
        self.get(key)
            .parse()
            .unwrap_or_else(|_| panic!("{key} is not a count: {self:?}"))
    }
}

fn parse_junit(xml: &str) -> Suites {
    let mut reader = quick_xml::Reader::from_str(xml);
    let mut root = Suites::default();
    let mut text = String::new();
    loop {
        let event = reader.read_event().expect("well-formed XML");
        let element = match &event {
            Event::Start(e) | Event::Empty(e) => Some(e),
            _ => None,
        };
        if let Some(e) = element {
            let attributes = Attributes::of(e);
            match e.name().as_ref() {
                "testsuites" => root.attributes = attributes,
                "testsuite" => root.suites.push(Suite {
                    attributes,
                    cases: Vec::new(),
                }),
                "testcase" => root.suites.last_mut().unwrap().cases.push(Case {
                    attributes,
                    outcome: None,
                }),
                name @ ("failure" | "error" | "skipped") => {
                    let case = root.suites.last_mut().unwrap().cases.last_mut().unwrap();
                    assert!(case.outcome.is_none(), "one outcome per testcase");
                    case.outcome = Some((name.to_string(), attributes, String::new()));
                    text.clear();
                }
                other => panic!("unexpected element {other}"),
            }
            continue;
        }
        match event {
            Event::Text(t) => text.push_str(&t.xml_content(XmlVersion::Implicit1_0)),
            Event::GeneralRef(r) => {
                let reference = format!("&{};", &*r);
                text.push_str(&quick_xml::escape::unescape(&reference).unwrap());
            }
            Event::End(e) if matches!(e.name().as_ref(), "failure" | "error" | "skipped") => {
                let case = root.suites.last_mut().unwrap().cases.last_mut().unwrap();
                case.outcome.as_mut().unwrap().2 = text.clone();
            }
            Event::Eof => break,
            _ => {}
        }
    }
    root
}

/// Checks what CodeBuild relies on: every count agrees with the testcases it summarises.
fn assert_counts_agree(junit: &Suites) {
    let mut totals = [0usize; 4];
    for suite in &junit.suites {
        let kinds = |kind: &str| {
            suite
                .cases
                .iter()
                .filter(|c| c.outcome.as_ref().is_some_and(|(k, _, _)| k == kind))
                .count()
        };
        let counted = [
            suite.cases.len(),
            kinds("failure"),
            kinds("error"),
            kinds("skipped"),
        ];
        for (i, key) in ["tests", "failures", "errors", "skipped"]
            .iter()
            .enumerate()
        {
            assert_eq!(
                suite.attributes.count(key),
                counted[i],
                "{key} of {suite:?}"
            );
            totals[i] += counted[i];
        }
        for case in &suite.cases {
            assert!(!case.attributes.get("name").is_empty());
            case.attributes.get("classname");
            case.attributes.get("time");
        }
    }
    for (i, key) in ["tests", "failures", "errors", "skipped"]
        .iter()
        .enumerate()
    {
        assert_eq!(
            junit.attributes.count(key),
            totals[i],
            "{key} of testsuites"
        );
    }
}

fn read_junit(path: &Path) -> Suites {
    assert_valid_junit(path);
    let junit = parse_junit(&std::fs::read_to_string(path).unwrap());
    assert_counts_agree(&junit);
    junit
}

#[test]
fn one_scan_gives_junit_json_and_sarif() {
    let sb = Sandbox::new();
    let run = sb.run(
        &[
            "image",
            "--ecr-junit",
            "reports/trivy.xml",
            "--format",
            "sarif",
            "-o",
            "out.sarif",
            "app:latest",
        ],
        &[("TRIVY_ECR_JSON", "raw.json")],
    );
    assert_eq!(
        run.code(),
        1,
        "the gate fails on two CRITICALs: {}",
        run.stderr()
    );
    assert_eq!(run.stdout(), "");

    let runs = sb.trivy_argvs();
    let scans: Vec<_> = runs.iter().filter(|a| a[0] == "image").collect();
    assert_eq!(scans.len(), 1, "exactly one scan: {runs:?}");
    assert_eq!(
        runs.len(),
        2,
        "one scan, one convert for the SARIF: {runs:?}"
    );
    assert!(
        !scans[0].iter().any(|a| a.starts_with("--ecr")),
        "own flags never reach trivy: {:?}",
        scans[0]
    );

    // Three files: the user's SARIF, the raw JSON byte for byte, and the JUnit report.
    let sarif = std::fs::read_to_string(sb.file("out.sarif")).unwrap();
    assert!(sarif.starts_with("rendered sarif from"), "{sarif}");
    assert_eq!(
        std::fs::read(sb.file("raw.json")).unwrap(),
        std::fs::read(data("report-alpine.json")).unwrap()
    );
    let junit = read_junit(&sb.file("reports/trivy.xml"));
    assert_eq!(junit.suites.len(), 1);
    let suite = &junit.suites[0];
    let target = "127.0.0.1:5000/app:latest (alpine 3.19.1)";
    assert_eq!(suite.attributes.get("name"), target);
    let names: Vec<&str> = suite
        .cases
        .iter()
        .map(|c| c.attributes.get("name"))
        .collect();
    assert_eq!(
        names,
        [
            "CVE-2099-0001 libcrypto3",
            "CVE-2099-0002 busybox",
            "CVE-2099-0003 musl",
            "CVE-2099-0004 zlib"
        ]
    );
    assert!(
        suite
            .cases
            .iter()
            .all(|c| c.attributes.get("classname") == target)
    );
    let failures: Vec<(&str, &str)> = suite
        .cases
        .iter()
        .filter_map(|c| c.outcome.as_ref())
        .map(|(kind, attributes, _)| {
            assert_eq!(kind, "failure");
            (attributes.get("type"), attributes.get("message"))
        })
        .collect();
    assert_eq!(
        failures,
        [
            (
                "CRITICAL",
                "CRITICAL CVE-2099-0001 in libcrypto3 3.1.4-r5 (fixed in 3.1.4-r6)"
            ),
            (
                "CRITICAL",
                "CRITICAL CVE-2099-0002 in busybox 1.36.1-r15 (no fix yet)"
            ),
        ]
    );
    let body = &suite.cases[1].outcome.as_ref().unwrap().2;
    assert!(
        body.contains("Title: busybox: critical without a fix\n"),
        "{body}"
    );

    // No temporary files are left beside the outputs.
    let mut left: Vec<String> = std::fs::read_dir(sb.path())
        .unwrap()
        .chain(std::fs::read_dir(sb.file("reports")).unwrap())
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    assert_eq!(
        left,
        [
            "out.sarif",
            "raw.json",
            "record.jsonl",
            "reports",
            "trivy.xml"
        ]
    );
}

#[test]
fn junit_of_a_passing_scan_has_no_failures() {
    let sb = Sandbox::new();
    let run = sb.run(
        &["image", "--ecr-fail-on", "none", "--ecr-junit=j.xml", "x"],
        &[],
    );
    assert_eq!(run.code(), 0, "{}", run.stderr());
    let junit = read_junit(&sb.file("j.xml"));
    assert_eq!(junit.attributes.count("tests"), 4);
    assert_eq!(junit.attributes.count("failures"), 0);
}

#[test]
fn hostile_report_strings_still_make_valid_junit() {
    let sb = Sandbox::new();
    let report = sb.file("hostile.json");
    std::fs::write(
        &report,
        r#"{"SchemaVersion":2,"ArtifactName":"a&b","Results":[
        {"Target":"<script>\"x\"</script>","Class":"lang-pkgs","Vulnerabilities":[
          {"VulnerabilityID":"CVE-1","PkgName":"p]]>q","InstalledVersion":"1'2","Title":"bell\u0007 esc\u001b nul\u0000 cr\r lf\n tab\t end \uffff","Severity":"CRITICAL"}]},
        {"Target":"","Class":"secret","Secrets":[{"RuleID":"","Title":"","Severity":"LOW","StartLine":3}]}]}"#,
    )
    .unwrap();
    let run = sb.run_with_report(&report, &["image", "--ecr-junit", "j.xml", "x"], &[]);
    assert_eq!(run.code(), 1, "{}", run.stderr());
    let junit = read_junit(&sb.file("j.xml"));
    let case = &junit.suites[0].cases[0];
    assert_eq!(
        junit.suites[0].attributes.get("name"),
        "<script>\"x\"</script>"
    );
    assert_eq!(case.attributes.get("name"), "CVE-1 p]]>q");
    let (_, _, body) = case.outcome.as_ref().unwrap();
    assert!(
        body.contains("Title: bell\\u{7} esc\\u{1b} nul\\u{0} cr\r lf\n tab\t end \\u{ffff}\n"),
        "{body:?}"
    );
    // An empty target and an empty ID still give names.
    assert_eq!(junit.suites[1].attributes.get("name"), "a&b");
    assert_eq!(junit.suites[1].cases[0].attributes.get("name"), "line 3");
}

#[test]
fn github_step_summary_is_appended_to_the_existing_file() {
    let sb = Sandbox::new();
    let summary = sb.file("step_summary.md");
    std::fs::write(&summary, "## Build\n\nearlier step's text\n").unwrap();
    let env = [("GITHUB_STEP_SUMMARY", summary.to_str().unwrap())];
    let run = sb.run(&["image", "x"], &env);
    assert_eq!(run.code(), 1, "{}", run.stderr());
    let run = sb.run(&["image", "--ecr-fail-on=none", "x"], &env);
    assert_eq!(run.code(), 0, "{}", run.stderr());
    let text = std::fs::read_to_string(&summary).unwrap();
    assert!(
        text.starts_with(
            "## Build\n\nearlier step's text\n### trivy-ecr: 127.0.0.1:5000/app:latest — FAILED\n"
        ),
        "{text}"
    );
    assert_eq!(text.matches("### trivy-ecr: ").count(), 2, "{text}");
    assert!(text.contains("**Failed: 2 findings at or above CRITICAL** (exit 1)."));
    assert!(text.contains("| CRITICAL | CVE-2099-0002 | busybox | 1.36.1-r15 | no fix yet |"));
    assert!(text.contains("— gate disabled\n"), "{text}");
    // The fake trivy downloads from the first mirror of the chain.
    assert!(
        text.contains("Vulnerability DB downloaded from `public.ecr.aws/aquasecurity/trivy-db:2`.")
    );
    // The plain-text summary is still on stderr.
    assert!(
        run.stderr()
            .contains("trivy-ecr: gate disabled (fail-on: none)")
    );
}

#[test]
fn annotations_on_request_on_stderr_only() {
    let sb = Sandbox::new();
    let run = sb.run(&["image", "-f", "json", "x"], &[]);
    assert!(!run.stderr().contains("::error"), "{}", run.stderr());

    // A bare boolean flag before the subcommand does not swallow it.
    let run = sb.run(
        &["--ecr-github-annotations", "image", "-f", "json", "x"],
        &[],
    );
    assert_eq!(run.code(), 1, "{}", run.stderr());
    let errors: Vec<&str> = run
        .output
        .stderr
        .split(|b| *b == b'\n')
        .map(|l| std::str::from_utf8(l).unwrap())
        .filter(|l| l.starts_with("::"))
        .collect();
    assert_eq!(
        errors,
        [
            "::error title=CRITICAL CVE-2099-0001 in libcrypto3::libcrypto3 3.1.4-r5 (fixed in 3.1.4-r6): openssl: critical with a fix%0ATarget: 127.0.0.1:5000/app:latest (alpine 3.19.1)",
            "::error title=CRITICAL CVE-2099-0002 in busybox::busybox 1.36.1-r15 (no fix yet): busybox: critical without a fix%0ATarget: 127.0.0.1:5000/app:latest (alpine 3.19.1)",
        ]
    );
    // stdout is the user's JSON report, untouched.
    assert_eq!(
        run.output.stdout,
        std::fs::read(data("report-alpine.json")).unwrap()
    );
    let run = sb.run(&["image", "x"], &[("TRIVY_ECR_GITHUB_ANNOTATIONS", "true")]);
    assert!(run.stderr().contains("::error title="), "{}", run.stderr());
    let run = sb.run(
        &["image", "--ecr-github-annotations=false", "x"],
        &[("TRIVY_ECR_GITHUB_ANNOTATIONS", "true")],
    );
    assert!(!run.stderr().contains("::error"), "{}", run.stderr());
}

#[test]
fn baseline_blocks_only_new_findings() {
    let sb = Sandbox::new();
    let baseline = data("baseline-alpine.json");
    let baseline = baseline.to_str().unwrap();
    let run = sb.run(
        &[
            "image",
            "--ecr-baseline",
            baseline,
            "--ecr-junit",
            "j.xml",
            "x",
        ],
        &[],
    );
    assert_eq!(run.code(), 1, "{}", run.stderr());
    let stderr = run.stderr();
    assert!(
        stderr.contains(&format!(
            "trivy-ecr: baseline {baseline}: 1 finding at or above CRITICAL already known (not blocking), 1 fixed since\n"
        )),
        "{stderr}"
    );
    assert!(stderr.contains("trivy-ecr: FAILED: 1 new finding at or above CRITICAL (exit 1)\n"));
    assert!(
        !stderr.contains("  CRITICAL CVE-2099-0001"),
        "known: not listed: {stderr}"
    );
    let junit = read_junit(&sb.file("j.xml"));
    let outcomes: Vec<(&str, Option<&str>)> = junit.suites[0]
        .cases
        .iter()
        .map(|c| {
            (
                c.attributes.get("name"),
                c.outcome.as_ref().map(|(k, _, _)| k.as_str()),
            )
        })
        .collect();
    assert_eq!(
        outcomes,
        [
            ("CVE-2099-0001 libcrypto3", Some("skipped")),
            ("CVE-2099-0002 busybox", Some("failure")),
            ("CVE-2099-0003 musl", None),
            ("CVE-2099-0004 zlib", None),
        ]
    );

    // The report as its own baseline: everything is known, the gate passes.
    let itself = data("report-alpine.json");
    let run = sb.run(
        &["image", "x"],
        &[
            ("TRIVY_ECR_BASELINE", itself.to_str().unwrap()),
            ("TRIVY_ECR_FAIL_ON", "LOW"),
        ],
    );
    assert_eq!(run.code(), 0, "{}", run.stderr());
    assert!(
        run.stderr()
            .contains("trivy-ecr: PASSED: nothing new at or above LOW\n"),
        "{}",
        run.stderr()
    );
}

#[test]
fn unusable_baseline_is_a_usage_error_before_any_scan() {
    let sb = Sandbox::new();
    std::fs::write(sb.file("cut.json"), r#"{"SchemaVersion":2,"Results":[{"#).unwrap();
    let cases = [
        (
            "missing.json",
            "trivy-ecr: error: --ecr-baseline=missing.json: cannot read the baseline report: No such file or directory (os error 2)\n",
        ),
        (
            "cut.json",
            "trivy-ecr: error: --ecr-baseline=cut.json: the baseline report is truncated (EOF while parsing an object at line 1 column 31); give a report written by trivy --format json (SchemaVersion 2)\n",
        ),
    ];
    for (file, expected) in cases {
        let run = sb.run(&["image", "--ecr-baseline", file, "x"], &[]);
        assert_eq!(run.code(), 2, "{}", run.stderr());
        assert_eq!(run.stderr(), expected);
    }
    assert!(sb.trivy_argvs().is_empty(), "trivy never ran");
}

#[test]
fn unusable_reports_exit_5_with_one_clear_line() {
    let sb = Sandbox::new();
    let cases = [
        ("", "trivy-ecr: error: trivy's JSON report is empty"),
        (
            r#"{"SchemaVersion":2,"Results":[{"Target":"x","Vulnerabilities":[{"Vuln"#,
            "trivy-ecr: error: trivy's JSON report is truncated (EOF while parsing a string at line 1 column 69)",
        ),
        (
            "\u{0}\u{1}binary",
            "trivy-ecr: error: trivy's JSON report is not valid JSON (expected value at line 1 column 1)",
        ),
        (
            r#"{"SchemaVersion":1,"Results":[]}"#,
            "trivy-ecr: error: trivy's JSON report has SchemaVersion 1; trivy-ecr reads version 2 (trivy 0.20 or newer)",
        ),
        (
            r#"[{"Target":"x","Vulnerabilities":[]}]"#,
            "trivy-ecr: error: trivy's JSON report is a list, the format of trivy before 0.20; trivy-ecr reads SchemaVersion 2 (trivy 0.20 or newer)",
        ),
        (
            r#"{"SchemaVersion":2,"Results":[{"Vulnerabilities":[{"Severity":"HIGH"}]}]}"#,
            "trivy-ecr: error: trivy's JSON report does not have the shape of a trivy report (missing field `VulnerabilityID` at line 1 column 69)",
        ),
    ];
    for (content, expected) in cases {
        let report = sb.file("bad.json");
        std::fs::write(&report, content).unwrap();
        let run = sb.run_with_report(&report, &["image", "--ecr-junit", "j.xml", "x"], &[]);
        assert_eq!(run.code(), 5, "{content}: {}", run.stderr());
        let last = run.stderr().lines().last().unwrap_or_default().to_string();
        assert_eq!(last, expected, "{content}");
        assert!(!run.stderr().contains("panicked"), "{}", run.stderr());
        assert!(
            !sb.file("j.xml").exists(),
            "no JUnit from an unusable report"
        );
    }
}

#[test]
fn an_output_that_cannot_be_written_is_exit_5_after_the_others() {
    let sb = Sandbox::new();
    std::fs::write(sb.file("not-a-dir"), "").unwrap();
    let run = sb.run(
        &[
            "image",
            "--ecr-junit",
            "not-a-dir/j.xml",
            "--ecr-json",
            "ok/raw.json",
            "x",
        ],
        &[],
    );
    assert_eq!(run.code(), 5, "{}", run.stderr());
    assert!(
        run.stderr().contains(
            "trivy-ecr: error: cannot write the JUnit report not-a-dir/j.xml: File exists (os error 17)"
        ),
        "{}",
        run.stderr()
    );
    assert!(
        sb.file("ok/raw.json").exists(),
        "the other output is still written"
    );
    assert!(
        run.stderr()
            .contains("trivy-ecr: FAILED: 2 findings at or above CRITICAL"),
        "the summary is still shown: {}",
        run.stderr()
    );
}

#[test]
fn ci_flags_on_a_command_that_is_not_gated_get_a_note() {
    let sb = Sandbox::new();
    // SBOM generation without --scanners: trivy's own output and exit code.
    let run = sb.run(
        &[
            "image",
            "--format",
            "cyclonedx",
            "--ecr-junit",
            "j.xml",
            "x",
        ],
        &[("TRIVY_ECR_JSON", "raw.json")],
    );
    assert_eq!(run.code(), 0, "{}", run.stderr());
    assert_eq!(
        run.stderr()
            .matches(
                "trivy-ecr: note: --ecr-junit applies only to scans trivy-ecr gates; this command's output and exit code are trivy's\n"
            )
            .count(),
        1,
        "{}",
        run.stderr()
    );
    assert!(!sb.file("j.xml").exists() && !sb.file("raw.json").exists());
    // Set in the environment only (as in a buildspec for every command): silent.
    let run = sb.run(&["version"], &[("TRIVY_ECR_JUNIT", "j.xml")]);
    assert!(!run.stderr().contains("note:"), "{}", run.stderr());
}
