//! Hostile-input properties (proptest) for the parts of trivy-ecr that read what others wrote:
//! the argument rewriter (`Invocation::parse` + `plan::trivy_argv`), the report parser and gate,
//! and the `Retry-After` parsers.
//!
//! `cargo test` runs a modest number of cases per property; `scripts/fuzz` runs the same
//! properties with `PROPTEST_CASES` in the hundreds of thousands, each bounded by
//! `TRIVY_ECR_FUZZ_SECONDS` of wall-clock time, and prints the executions per property.

use std::cell::Cell;
use std::ffi::OsString;
use std::fmt::Debug;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::Path;
use std::time::{Duration, Instant};

use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestError, TestRunner};

use trivy_ecr::gate::{self, FailOn, GateOutcome, Severity, TrivyExitFlags};
use trivy_ecr::invocation::{Command, Invocation};
use trivy_ecr::mirrors::DbKind;
use trivy_ecr::options::{Options, Prefetch};
use trivy_ecr::plan::{self, Extras};
use trivy_ecr::report::Report;
use trivy_ecr::retry::{MirrorChain, RetryPolicy};
use trivy_ecr::retry_after;
use trivy_ecr::trivy_args::{self, Arg};
use trivy_ecr::trivy_version::Capabilities;

// ---- the runner: proptest's, with a case count and a wall-clock bound from the environment ----

/// Runs `test` on values of `strategy`: `PROPTEST_CASES` cases (else `default_cases`), stopping
/// early once `TRIVY_ECR_FUZZ_SECONDS` have passed. A failure (a panic included) is shrunk and
/// fails the test with the minimal input, as `proptest!` does. Prints the executions.
fn check<S>(
    name: &str,
    default_cases: u32,
    strategy: S,
    test: impl Fn(S::Value) -> Result<(), TestCaseError>,
) where
    S: Strategy,
    S::Value: Debug,
{
    let env_number = |key: &str| std::env::var(key).ok().and_then(|v| v.parse::<u64>().ok());
    let cases = env_number("PROPTEST_CASES").map_or(default_cases, |n| n as u32);
    let deadline = env_number("TRIVY_ECR_FUZZ_SECONDS").map(Duration::from_secs);
    let config = Config {
        cases,
        // The deadline stops the run through one global reject.
        max_global_rejects: 0,
        failure_persistence: None,
        max_shrink_time: 120_000,
        ..Config::default()
    };
    let mut runner = TestRunner::new(config);
    let started = Instant::now();
    let ran = Cell::new(0u64);
    let failing = Cell::new(false);
    let result = runner.run(&strategy, |value| {
        if !failing.get() && deadline.is_some_and(|d| started.elapsed() >= d) {
            return Err(TestCaseError::reject("deadline"));
        }
        ran.set(ran.get() + 1);
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| test(value)))
            .unwrap_or_else(|panic| {
                let text = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                Err(TestCaseError::fail(format!("panicked: {text}")))
            });
        failing.set(failing.get() || outcome.is_err());
        outcome
    });
    println!(
        "property {name}: {} executions in {:.1}s",
        ran.get(),
        started.elapsed().as_secs_f64()
    );
    match result {
        Ok(()) => {}
        Err(TestError::Abort(_)) if !failing.get() && deadline.is_some() => {}
        Err(err) => panic!("property {name} failed: {err}"),
    }
}

fn os(text: &str) -> OsString {
    OsString::from(text)
}

// ---- the argument rewriter ----

/// One piece of a command line whose meaning is known by construction: a flag that takes a
/// value always carries it, so the pieces parse back exactly as they were put together.
#[derive(Debug, Clone)]
enum Piece {
    /// trivy's flags and their values: reach trivy unchanged.
    Trivy(Vec<OsString>),
    /// trivy-ecr's own flags: never reach trivy.
    Own(Vec<OsString>),
    Positional(OsString),
}

impl Piece {
    fn tokens(&self) -> Vec<OsString> {
        match self {
            Piece::Trivy(t) | Piece::Own(t) => t.clone(),
            Piece::Positional(p) => vec![p.clone()],
        }
    }
}

/// A command line built from pieces, `--` and what follows it, and the environment.
#[derive(Debug, Clone)]
struct CommandLine {
    pieces: Vec<Piece>,
    rest: Option<Vec<OsString>>,
    db_env: Option<String>,
    java_db_env: Option<String>,
    multiple_repositories: bool,
    prefetch: u8,
    gated_report: bool,
}

impl CommandLine {
    fn argv(&self) -> Vec<OsString> {
        let mut argv: Vec<OsString> = self.pieces.iter().flat_map(Piece::tokens).collect();
        if let Some(rest) = &self.rest {
            argv.push(os("--"));
            argv.extend(rest.iter().cloned());
        }
        argv
    }
}

fn non_utf8() -> impl Strategy<Value = OsString> {
    prop::collection::vec(any::<u8>(), 1..8).prop_map(|mut bytes| {
        bytes.push(0xff);
        OsString::from_vec(bytes)
    })
}

/// Values, including ones that look like flags, `--`, empty ones and non-UTF-8 bytes.
fn value() -> impl Strategy<Value = OsString> {
    prop_oneof![
        4 => "[a-zA-Z0-9._:,@=-]{0,12}".prop_map(OsString::from),
        1 => prop::sample::select(vec![
            "--format", "-q", "--", "-", "--ecr-junit", "--ecr-fail-on=LOW", "--db-repository",
            "-fjson", "--output=x", "HIGH,CRITICAL", "public.ecr.aws/x/y:2", "a,,b", " ",
        ])
        .prop_map(OsString::from),
        1 => non_utf8(),
    ]
}

/// A value that is not empty (attached short-flag values must be).
fn attached_value() -> impl Strategy<Value = OsString> {
    value().prop_filter("non-empty", |v| !v.is_empty())
}

fn repository_list() -> impl Strategy<Value = String> {
    prop::collection::vec(
        "[a-z0-9.]{1,8}(:[0-9]{2,4})?/[a-z0-9/-]{1,10}(:[0-9])?",
        1..3,
    )
    .prop_map(|r| r.join(","))
}

const VALUE_FLAGS: &[&str] = &[
    "format",
    "output",
    "severity",
    "cache-dir",
    "skip-dirs",
    "template",
    "security-checks",
    "scanners",
    "exit-code",
    "exit-on-eol",
    "timeout",
    "username",
    "password",
    "registry-token",
    "checks-bundle-repository",
    "platform",
];

const BOOLEAN_FLAGS: &[&str] = &[
    "quiet",
    "ignore-unfixed",
    "debug",
    "skip-db-update",
    "skip-java-db-update",
    "list-all-pkgs",
    "insecure",
    "no-progress",
    "download-db-only",
    "zz-unknown",
    "help",
];

fn long_value_flag() -> impl Strategy<Value = Piece> {
    (prop::sample::select(VALUE_FLAGS), value(), any::<bool>()).prop_map(|(name, value, inline)| {
        Piece::Trivy(if inline {
            let mut token = os(&format!("--{name}="));
            token.push(&value);
            vec![token]
        } else {
            vec![os(&format!("--{name}")), value]
        })
    })
}

fn repository_flag() -> impl Strategy<Value = Piece> {
    (
        prop::sample::select(vec!["db-repository", "java-db-repository"]),
        prop_oneof![
            4 => repository_list().prop_map(OsString::from),
            1 => value(),
        ],
        any::<bool>(),
    )
        .prop_map(|(name, value, inline)| {
            Piece::Trivy(if inline {
                let mut token = os(&format!("--{name}="));
                token.push(&value);
                vec![token]
            } else {
                vec![os(&format!("--{name}")), value]
            })
        })
}

fn long_boolean_flag() -> impl Strategy<Value = Piece> {
    (
        prop::sample::select(BOOLEAN_FLAGS),
        prop::sample::select(vec!["", "=true", "=false", "=0"]),
    )
        .prop_map(|(name, suffix)| Piece::Trivy(vec![os(&format!("--{name}{suffix}"))]))
}

/// `-q`, `-qd`, `-qf json`, `-fjson`, `-s=HIGH`, `-d=false`.
fn short_group() -> impl Strategy<Value = Piece> {
    (
        prop::collection::vec(prop::sample::select(vec!['q', 'd']), 0..3),
        prop::option::of((prop::sample::select(vec!['f', 'o', 's', 't']), 0u8..3)),
        attached_value(),
        value(),
        any::<bool>(),
    )
        .prop_map(|(booleans, valued, attached, separate, false_form)| {
            let mut group: Vec<u8> = b"-".to_vec();
            group.extend(booleans.iter().map(|&c| c as u8));
            match valued {
                None if booleans.is_empty() => Piece::Trivy(vec![os("-q")]),
                None if false_form => {
                    group.extend(b"=false");
                    Piece::Trivy(vec![OsString::from_vec(group)])
                }
                None => Piece::Trivy(vec![OsString::from_vec(group)]),
                Some((letter, form)) => {
                    group.push(letter as u8);
                    match form {
                        0 => Piece::Trivy(vec![OsString::from_vec(group), separate]),
                        1 => {
                            group.extend(attached.as_bytes());
                            Piece::Trivy(vec![OsString::from_vec(group)])
                        }
                        _ => {
                            group.push(b'=');
                            group.extend(attached.as_bytes());
                            Piece::Trivy(vec![OsString::from_vec(group)])
                        }
                    }
                }
            }
        })
}

fn own_flag() -> impl Strategy<Value = Piece> {
    prop_oneof![
        (
            prop::sample::select(vec![
                "ecr-fail-on",
                "ecr-junit",
                "ecr-max-wait",
                "ecr-db-repositories",
                "ecr-not-a-setting",
            ]),
            value(),
            any::<bool>(),
        )
            .prop_map(|(name, value, inline)| {
                Piece::Own(if inline {
                    let mut token = os(&format!("--{name}="));
                    token.push(&value);
                    vec![token]
                } else {
                    vec![os(&format!("--{name}")), value]
                })
            }),
        prop::sample::select(vec![
            "--ecr-github-annotations",
            "--ecr-github-annotations=false"
        ])
        .prop_map(|t| Piece::Own(vec![os(t)])),
    ]
}

fn positional() -> impl Strategy<Value = Piece> {
    prop_oneof![
        3 => prop::sample::select(vec![
            "image", "fs", "repo", "sbom", "k8s", "server", "convert", "version", "plugin", "-",
        ])
        .prop_map(os),
        2 => "[a-z0-9][a-z0-9.:/@-]{0,15}".prop_map(OsString::from),
        1 => prop::collection::vec(any::<u8>(), 1..8).prop_map(|mut bytes| {
            bytes[0] = b'x';
            bytes.push(0xfe);
            OsString::from_vec(bytes)
        }),
    ]
    .prop_map(Piece::Positional)
}

fn piece() -> impl Strategy<Value = Piece> {
    prop_oneof![
        3 => long_value_flag(),
        2 => repository_flag(),
        2 => long_boolean_flag(),
        2 => short_group(),
        2 => own_flag(),
        3 => positional(),
    ]
}

/// Anything after `--`, or a whole hostile command line: tokens of any bytes.
fn any_token() -> impl Strategy<Value = OsString> {
    prop_oneof![
        2 => value(),
        1 => prop::collection::vec(any::<u8>(), 0..12).prop_map(OsString::from_vec),
        1 => prop::collection::vec(prop::sample::select(vec![b'-', b'=', b'f', b'q', b'e', b'c', b'r', 0xff]), 1..8)
            .prop_map(OsString::from_vec),
    ]
}

fn command_line() -> impl Strategy<Value = CommandLine> {
    (
        (
            prop::collection::vec(piece(), 0..12),
            prop::option::of(prop::collection::vec(any_token(), 0..4)),
        ),
        prop::option::weighted(0.2, repository_list()),
        prop::option::weighted(0.2, repository_list()),
        any::<bool>(),
        0u8..3,
        any::<bool>(),
    )
        .prop_map(
            |((pieces, rest), db_env, java_db_env, multiple_repositories, prefetch, gated)| {
                CommandLine {
                    pieces,
                    rest,
                    db_env,
                    java_db_env,
                    multiple_repositories,
                    prefetch,
                    gated_report: gated,
                }
            },
        )
}

/// Whether trivy-ecr runs this command with its mirrors (lib.rs), or passes it through.
fn uses_db(invocation: &Invocation) -> bool {
    matches!(invocation.command, Command::Scan(_) | Command::UsesDb(_)) && !invocation.wants_help
}

/// What trivy-ecr's own wiring (lib.rs) does with a command line: the chains it owns, the
/// prefetch's skip flags and, for gated scans, the JSON report; then `plan::trivy_argv`.
fn rewrite(
    argv: &[OsString],
    line: &CommandLine,
    capabilities: Capabilities,
) -> (Vec<OsString>, Invocation) {
    let env = |key: &str| match key {
        "TRIVY_DB_REPOSITORY" => line.db_env.clone().map(OsString::from),
        "TRIVY_JAVA_DB_REPOSITORY" => line.java_db_env.clone().map(OsString::from),
        _ => None,
    };
    let invocation = Invocation::parse(argv, &env, Path::new("/nonexistent/trivy-ecr-props"));
    if !uses_db(&invocation) {
        let out = plan::trivy_argv(&invocation, &[], Capabilities::of(None), &Extras::default());
        return (out, invocation);
    }
    let policy = RetryPolicy::new(3, Duration::from_secs(1));
    let chains: Vec<MirrorChain> = [DbKind::Vulnerability, DbKind::Java, DbKind::Checks]
        .into_iter()
        .map(|kind| match invocation.choice(kind) {
            Some(choice) => MirrorChain::new(kind, choice.repositories.clone(), false, &policy),
            None => MirrorChain::new(kind, kind.default_chain(), kind != DbKind::Checks, &policy),
        })
        .collect();
    let options = Options {
        prefetch: [Prefetch::Off, Prefetch::VulnerabilityDb, Prefetch::All]
            [usize::from(line.prefetch)],
        ..Options::default()
    };
    let kinds = trivy_ecr::prefetch::kinds_to_fetch(&invocation, &options);
    let extras = Extras {
        skip_db_update: kinds.contains(&DbKind::Vulnerability),
        skip_java_db_update: kinds.contains(&DbKind::Java),
        skip_check_update: kinds.contains(&DbKind::Checks),
        json_report: (line.gated_report && invocation.is_gated())
            .then(|| "/tmp/trivy-ecr-report.json".into()),
    };
    (
        plan::trivy_argv(&invocation, &chains, capabilities, &extras),
        invocation,
    )
}

/// Whether `sub` appears in `all` in order (not necessarily adjacent).
fn is_subsequence(sub: &[OsString], all: &[OsString]) -> bool {
    let mut it = all.iter();
    sub.iter().all(|s| it.any(|a| a == s))
}

/// The values of one trivy flag before `--`, in order, as trivy's tokenizer reads them.
fn flag_values(argv: &[OsString], name: &str) -> Vec<Option<OsString>> {
    trivy_args::parse(argv)
        .iter()
        .flat_map(|arg| match arg {
            Arg::Trivy { flags, .. } => flags.clone(),
            _ => Vec::new(),
        })
        .filter(|f| f.name == name)
        .map(|f| f.value)
        .collect()
}

/// A command line as a multiset of flags (each with its tokens) and the sequence of everything
/// else, for comparing command lines that differ only in the order of their flags.
fn units(argv: &[OsString]) -> (Vec<Vec<OsString>>, Vec<OsString>) {
    let mut flags = Vec::new();
    let mut others = Vec::new();
    for arg in trivy_args::parse(argv) {
        match arg {
            Arg::Trivy { raw, .. } => flags.push(raw),
            other => others.extend(other.tokens()),
        }
    }
    flags.sort();
    (flags, others)
}

/// Whether a repository flag value names at least one repository.
fn names_a_repository(value: &Option<OsString>) -> bool {
    value
        .as_ref()
        .is_some_and(|v| v.to_string_lossy().split(',').any(|r| !r.trim().is_empty()))
}

#[test]
fn rewriter_keeps_every_foreign_argument_in_order_and_is_idempotent() {
    check("rewriter", 256, command_line(), |line| {
        let argv = line.argv();
        // --security-checks is translated when trivy knows --scanners; keep it verbatim here.
        let capabilities = Capabilities {
            multiple_repositories: line.multiple_repositories,
            scanners_flag: false,
        };
        let plain = CommandLine {
            gated_report: false,
            prefetch: 0,
            ..line.clone()
        };
        let (out, invocation) = rewrite(&argv, &plain, capabilities);

        // Every token trivy-ecr does not own survives, in order; own flags are gone. The one
        // rewrite: --security-checks becomes --scanners where trivy-ecr does not know trivy's
        // version (commands it passes through).
        let translated = !uses_db(&invocation);
        let foreign: Vec<OsString> = line
            .pieces
            .iter()
            .filter(|p| !matches!(p, Piece::Own(_)))
            .flat_map(|p| {
                let tokens = p.tokens();
                if translated && tokens[0].as_bytes().starts_with(b"--security-checks") {
                    match &trivy_args::parse(&tokens)[0] {
                        Arg::Trivy { flags, .. } => {
                            trivy_args::flag_tokens(&plan::scanners_from_security_checks(&flags[0]))
                        }
                        _ => tokens,
                    }
                } else {
                    tokens
                }
            })
            .chain(
                line.rest
                    .iter()
                    .flat_map(|r| std::iter::once(os("--")).chain(r.iter().cloned())),
            )
            .collect();
        prop_assert!(
            is_subsequence(&foreign, &out),
            "{foreign:?} not kept in {out:?}"
        );
        // And nothing else is added but the chains, right after the subcommand.
        let added = out.len() - foreign.len();
        prop_assert!(added <= 4, "added {added}: {out:?}");
        if added > 0 {
            let at = invocation
                .subcommand_at
                .expect("injection needs a subcommand");
            let sub_index = line.pieces[..=at]
                .iter()
                .filter(|p| !matches!(p, Piece::Own(_)))
                .map(|p| p.tokens().len())
                .sum::<usize>();
            prop_assert_eq!(&out[..sub_index], &foreign[..sub_index]);
            prop_assert_eq!(&out[sub_index + added..], &foreign[sub_index..]);
            for pair in out[sub_index..sub_index + added].chunks(2) {
                prop_assert!(
                    pair[0] == "--db-repository" || pair[0] == "--java-db-repository",
                    "{pair:?}"
                );
            }
        }

        // Nothing after `--` is touched.
        if let Some(rest) = &line.rest {
            prop_assert!(out.ends_with(rest), "{rest:?} is not the end of {out:?}");
        }

        // A repository the user chose is never joined by an injected one.
        for (flag, env) in [
            ("db-repository", &line.db_env),
            ("java-db-repository", &line.java_db_env),
        ] {
            let given = flag_values(&argv, flag);
            if given.iter().any(names_a_repository) || env.is_some() {
                prop_assert_eq!(flag_values(&out, flag), given, "{}", flag);
            }
        }

        // Rewriting the output again adds nothing, with every extra trivy-ecr may add.
        let capabilities = Capabilities {
            multiple_repositories: line.multiple_repositories,
            scanners_flag: true,
        };
        let (once, invocation) = rewrite(&argv, &line, capabilities);
        let (twice, _) = rewrite(&once, &line, capabilities);
        if line.gated_report && invocation.is_gated() {
            // The report flags trivy-ecr takes over are dropped and injected again, ahead of
            // the chains that are now the user's: the same arguments, in another order.
            prop_assert_eq!(units(&twice), units(&once), "argv {:?}", argv);
        } else {
            prop_assert_eq!(&twice, &once, "argv {:?}", argv);
        }
        Ok(())
    });
}

#[test]
fn rewriter_survives_any_bytes() {
    let hostile = (
        prop::collection::vec(any_token(), 0..16),
        any::<bool>(),
        0u8..3,
    );
    check(
        "rewriter-any-bytes",
        256,
        hostile,
        |(argv, gated, prefetch)| {
            let line = CommandLine {
                pieces: Vec::new(),
                rest: None,
                db_env: None,
                java_db_env: None,
                multiple_repositories: true,
                prefetch,
                gated_report: gated,
            };
            let capabilities = Capabilities {
                multiple_repositories: true,
                scanners_flag: false,
            };
            let (out, _) = rewrite(&argv, &line, capabilities);
            // Judged by the tokenizer: what is not an own flag survives, in order.
            let args = trivy_args::parse(&argv);
            let kept: Vec<OsString> = args
                .iter()
                .filter(|a| !matches!(a, Arg::Own(_)))
                .flat_map(Arg::tokens)
                .collect();
            if !gated {
                prop_assert!(is_subsequence(&kept, &out), "{kept:?} not kept in {out:?}");
            }
            if let Some(Arg::Rest(rest)) = args.last() {
                prop_assert!(out.ends_with(rest));
            }
            let (again, invocation) = rewrite(&out, &line, capabilities);
            if gated && invocation.is_gated() {
                prop_assert_eq!(units(&again), units(&out));
            } else {
                prop_assert_eq!(again, out);
            }
            Ok(())
        },
    );
}

// ---- the report parser and the gate ----

const SEVERITIES: &[&str] = &[
    "CRITICAL", "HIGH", "MEDIUM", "LOW", "UNKNOWN", "critical", "weird", "",
];

fn severity_of(text: &str) -> Severity {
    text.parse().unwrap_or(Severity::Unknown)
}

/// A text with JSON's awkward characters: quotes, backslashes, control characters, non-ASCII.
fn awkward_text() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => "[A-Za-z0-9 ._:/-]{0,16}",
        1 => "[\"\\\\\u{0}-\u{1f}é€😀 ]{0,8}",
    ]
}

#[derive(Debug, Clone)]
struct ResultSpec {
    target: String,
    vulnerabilities: Vec<(String, &'static str)>,
    misconfigurations: Vec<(&'static str, &'static str)>,
    secrets: Vec<&'static str>,
    licenses: Vec<&'static str>,
}

fn result_spec() -> impl Strategy<Value = ResultSpec> {
    let severity = || prop::sample::select(SEVERITIES);
    (
        awkward_text(),
        prop::collection::vec((awkward_text(), severity()), 0..6),
        prop::collection::vec(
            (severity(), prop::sample::select(vec!["FAIL", "PASS", ""])),
            0..4,
        ),
        prop::collection::vec(severity(), 0..3),
        prop::collection::vec(severity(), 0..3),
    )
        .prop_map(
            |(target, vulnerabilities, misconfigurations, secrets, licenses)| ResultSpec {
                target,
                vulnerabilities,
                misconfigurations,
                secrets,
                licenses,
            },
        )
}

fn report_json(results: &[ResultSpec], eosl: bool) -> serde_json::Value {
    use serde_json::json;
    let with_severity = |mut v: serde_json::Value, severity: &str| {
        if !severity.is_empty() {
            v["Severity"] = json!(severity);
        }
        v
    };
    let results: Vec<_> = results
        .iter()
        .map(|r| {
            json!({
                "Target": r.target,
                "Class": "os-pkgs",
                "Vulnerabilities": r.vulnerabilities.iter().enumerate().map(|(i, (pkg, s))| with_severity(json!({
                    "VulnerabilityID": format!("CVE-2099-{i}"), "PkgName": pkg,
                    "InstalledVersion": "1", "FixedVersion": "", "Title": pkg, "Extra": {"Nested": [1, 2, {"x": null}]}
                }), s)).collect::<Vec<_>>(),
                "Misconfigurations": r.misconfigurations.iter().map(|(s, status)| {
                    let mut m = with_severity(json!({"ID": "DS001", "Title": "t"}), s);
                    if !status.is_empty() { m["Status"] = json!(status); }
                    m
                }).collect::<Vec<_>>(),
                "Secrets": r.secrets.iter().map(|s| with_severity(json!({"RuleID": "r", "StartLine": 3}), s)).collect::<Vec<_>>(),
                "Licenses": r.licenses.iter().map(|s| with_severity(json!({"Name": "GPL", "PkgName": "p"}), s)).collect::<Vec<_>>(),
            })
        })
        .collect();
    json!({
        "SchemaVersion": 2,
        "ArtifactName": "app:1",
        "Metadata": {"OS": {"Family": "alpine", "Name": "3.19", "EOSL": eosl}},
        "Results": results,
    })
}

fn expected_severities(results: &[ResultSpec]) -> Vec<Severity> {
    results
        .iter()
        .flat_map(|r| {
            r.vulnerabilities
                .iter()
                .map(|(_, s)| severity_of(s))
                .chain(
                    r.misconfigurations
                        .iter()
                        .filter(|(_, status)| *status != "PASS")
                        .map(|(s, _)| severity_of(s)),
                )
                .chain(r.secrets.iter().map(|s| severity_of(s)))
                .chain(r.licenses.iter().map(|s| severity_of(s)))
                .collect::<Vec<_>>()
        })
        .collect()
}

fn fail_on() -> impl Strategy<Value = FailOn> {
    prop_oneof![
        Just(FailOn::Disabled),
        prop::sample::select(Severity::ALL.to_vec()).prop_map(FailOn::AtOrAbove),
    ]
}

fn exit_flags() -> impl Strategy<Value = TrivyExitFlags> {
    (prop::option::of(-2i32..300), prop::option::of(-2i32..300)).prop_map(
        |(exit_code, exit_on_eol)| TrivyExitFlags {
            exit_code,
            exit_on_eol,
        },
    )
}

/// Parses and, when it parses, gates: neither may panic.
fn parse_and_gate(bytes: &[u8], fail_on: FailOn, flags: TrivyExitFlags) {
    if let Ok(report) = Report::from_slice(bytes) {
        let count = report.findings().count();
        for finding in report.findings() {
            let _ = finding.to_string();
        }
        match gate::evaluate(&report, fail_on, flags) {
            GateOutcome::Failed { blocking } => {
                assert!(!blocking.is_empty() && blocking.len() <= count)
            }
            GateOutcome::Passed
            | GateOutcome::TrivyExitCode { .. }
            | GateOutcome::EndOfLife { .. } => {}
        }
    }
}

#[test]
fn valid_reports_keep_their_findings_through_parser_and_gate() {
    let strategy = (
        prop::collection::vec(result_spec(), 0..5),
        any::<bool>(),
        prop::sample::select(Severity::ALL.to_vec()),
    );
    check(
        "report-valid",
        128,
        strategy,
        |(results, eosl, threshold)| {
            let bytes = serde_json::to_vec(&report_json(&results, eosl)).unwrap();
            let report =
                Report::from_slice(&bytes).map_err(|e| TestCaseError::fail(e.to_string()))?;
            let expected = expected_severities(&results);
            let got: Vec<Severity> = report.findings().map(|f| f.severity).collect();
            prop_assert_eq!(&got, &expected);
            let targets: Vec<&str> = report.results.iter().map(|r| r.target.as_ref()).collect();
            let wanted: Vec<&str> = results.iter().map(|r| r.target.as_str()).collect();
            prop_assert_eq!(targets, wanted);
            prop_assert_eq!(report.os_end_of_life(), eosl);

            let blocking = expected.iter().filter(|s| **s >= threshold).count();
            match gate::evaluate(
                &report,
                FailOn::AtOrAbove(threshold),
                TrivyExitFlags::default(),
            ) {
                GateOutcome::Passed => prop_assert_eq!(blocking, 0),
                GateOutcome::Failed { blocking: found } => prop_assert_eq!(found.len(), blocking),
                other => prop_assert!(false, "{other:?}"),
            }
            let flags = TrivyExitFlags {
                exit_code: Some(7),
                exit_on_eol: Some(9),
            };
            let outcome = gate::evaluate(&report, FailOn::Disabled, flags);
            let wanted = if eosl {
                GateOutcome::EndOfLife { code: 9 }
            } else if !expected.is_empty() {
                GateOutcome::TrivyExitCode { code: 7 }
            } else {
                GateOutcome::Passed
            };
            prop_assert_eq!(outcome, wanted);
            Ok(())
        },
    );
}

/// Ways to damage a valid report.
#[derive(Debug, Clone)]
enum Damage {
    Truncate(usize),
    FlipBytes(Vec<(usize, u8)>),
    DeepNesting { depth: usize, in_results: bool },
    HugeNumber(&'static str, &'static str),
    WrongType(&'static str, &'static str),
}

fn damage() -> impl Strategy<Value = Damage> {
    let field = prop::sample::select(vec![
        "SchemaVersion",
        "Results",
        "Vulnerabilities",
        "Severity",
        "StartLine",
        "Target",
        "EOSL",
        "Metadata",
    ]);
    prop_oneof![
        any::<usize>().prop_map(Damage::Truncate),
        prop::collection::vec((any::<usize>(), 1u8..=255), 1..6).prop_map(Damage::FlipBytes),
        (1usize..200_000, any::<bool>())
            .prop_map(|(depth, in_results)| Damage::DeepNesting { depth, in_results }),
        (
            field.clone(),
            prop::sample::select(vec![
                "1e400",
                "-1e400",
                "18446744073709551616",
                "-1",
                "2.0",
                "99999999999999999999999999999999999999",
                "4294967298",
            ])
        )
            .prop_map(|(f, n)| Damage::HugeNumber(f, n)),
        (
            field,
            prop::sample::select(vec![
                "\"x\"",
                "1",
                "{}",
                "[]",
                "true",
                "null",
                "[null]",
                "{\"a\":[]}"
            ])
        )
            .prop_map(|(f, v)| Damage::WrongType(f, v)),
    ]
}

/// Replaces the value after the first `"field":` with `replacement` (a JSON text).
fn replace_value(json: &str, field: &str, replacement: &str) -> String {
    let key = format!("\"{field}\":");
    let Some(at) = json.find(&key) else {
        return json.to_string();
    };
    let start = at + key.len();
    // The value ends at the first `,` or `}` at depth zero outside strings.
    let (mut depth, mut in_string, mut escaped) = (0i32, false, false);
    let mut end = json.len();
    for (i, c) in json[start..].char_indices() {
        if in_string {
            match (escaped, c) {
                (true, _) => escaped = false,
                (false, '\\') => escaped = true,
                (false, '"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match c {
            '"' => in_string = true,
            '[' | '{' => depth += 1,
            ']' | '}' if depth == 0 => {
                end = start + i;
                break;
            }
            ']' | '}' => depth -= 1,
            ',' if depth == 0 => {
                end = start + i;
                break;
            }
            _ => {}
        }
    }
    format!("{}{replacement}{}", &json[..start], &json[end..])
}

fn apply(damage: &Damage, valid: &[u8]) -> Vec<u8> {
    match damage {
        Damage::Truncate(at) => valid[..at % (valid.len() + 1)].to_vec(),
        Damage::FlipBytes(flips) => {
            let mut bytes = valid.to_vec();
            for (at, mask) in flips {
                let i = at % bytes.len();
                bytes[i] ^= mask;
            }
            bytes
        }
        Damage::DeepNesting { depth, in_results } => {
            let nested = format!("{}{}", "[".repeat(*depth), "]".repeat(*depth));
            let text = String::from_utf8_lossy(valid);
            let field = if *in_results { "Title" } else { "ArtifactName" };
            replace_value(&text, field, &nested).into_bytes()
        }
        Damage::HugeNumber(field, number) | Damage::WrongType(field, number) => {
            replace_value(&String::from_utf8_lossy(valid), field, number).into_bytes()
        }
    }
}

#[test]
fn damaged_reports_never_panic_the_parser_or_the_gate() {
    let strategy = (
        prop::collection::vec(result_spec(), 1..4),
        damage(),
        fail_on(),
        exit_flags(),
    );
    check(
        "report-damaged",
        128,
        strategy,
        |(results, damage, fail_on, flags)| {
            let valid = serde_json::to_vec(&report_json(&results, false)).unwrap();
            parse_and_gate(&apply(&damage, &valid), fail_on, flags);
            let sample = include_bytes!("data/report-alpine.json");
            parse_and_gate(&apply(&damage, sample), fail_on, flags);
            Ok(())
        },
    );
}

#[test]
fn arbitrary_bytes_never_panic_the_parser_or_the_gate() {
    let json_ish = prop::collection::vec(
        prop_oneof![
            3 => prop::sample::select(vec![
                "{", "}", "[", "]", ",", ":", "\"SchemaVersion\"", "2", "\"Results\"",
                "\"Vulnerabilities\"", "\"VulnerabilityID\"", "\"Severity\"", "\"CRITICAL\"",
                "\"Metadata\"", "\"OS\"", "\"EOSL\"", "true", "null", "\"\\u0000\"", "\"\\ud800\"",
                "-0", "1e999", " ", "\"",
            ])
            .prop_map(|s| s.as_bytes().to_vec()),
            1 => prop::collection::vec(any::<u8>(), 0..4),
        ],
        0..64,
    )
    .prop_map(|parts| parts.concat());
    let bytes = prop_oneof![prop::collection::vec(any::<u8>(), 0..512), json_ish];
    check(
        "report-bytes",
        256,
        (bytes, fail_on(), exit_flags()),
        |(bytes, fail_on, flags)| {
            parse_and_gate(&bytes, fail_on, flags);
            // The same behind a valid prefix, so the parser gets past the first byte.
            let mut prefixed =
                br#"{"SchemaVersion":2,"Results":[{"Target":"t","Vulnerabilities":["#.to_vec();
            prefixed.extend(&bytes);
            parse_and_gate(&prefixed, fail_on, flags);
            Ok(())
        },
    );
}

// ---- Retry-After ----

/// Go's `time.Duration.String()`.
fn go_format(d: Duration) -> String {
    let ns = d.as_nanos() as u64;
    if ns == 0 {
        return "0s".into();
    }
    let fraction = |value: u64, unit: u64| {
        let (whole, part) = (value / unit, value % unit);
        if part == 0 {
            whole.to_string()
        } else {
            let width = unit.to_string().len() - 1;
            let digits = format!("{part:0width$}");
            format!("{whole}.{}", digits.trim_end_matches('0'))
        }
    };
    if ns < 1_000 {
        return format!("{ns}ns");
    }
    if ns < 1_000_000 {
        return format!("{}µs", fraction(ns, 1_000));
    }
    if ns < 1_000_000_000 {
        return format!("{}ms", fraction(ns, 1_000_000));
    }
    let (hours, rest) = (ns / 3_600_000_000_000, ns % 3_600_000_000_000);
    let (minutes, seconds) = (rest / 60_000_000_000, rest % 60_000_000_000);
    let mut out = String::new();
    if hours > 0 {
        out.push_str(&format!("{hours}h"));
    }
    if hours > 0 || minutes > 0 {
        out.push_str(&format!("{minutes}m"));
    }
    out.push_str(&format!("{}s", fraction(seconds, 1_000_000_000)));
    out
}

/// The bound every `Retry-After` parser keeps to.
const BOUND: Duration = retry_after::MAX_DELAY;

fn bounded(d: Option<Duration>) -> Result<(), TestCaseError> {
    if let Some(d) = d {
        prop_assert!(d < BOUND, "{d:?}");
    }
    Ok(())
}

#[test]
fn go_durations_round_trip() {
    let durations = prop_oneof![
        (0u64..1_000_000_000).prop_map(Duration::from_nanos),
        (0u64..999_999_999_999_999_999).prop_map(Duration::from_nanos),
        (0u64..100_000).prop_map(Duration::from_secs),
    ];
    check("go-duration-round-trip", 512, durations, |d| {
        let text = go_format(d);
        let parsed = retry_after::parse_go_duration(&text)
            .ok_or_else(|| TestCaseError::fail(format!("{text} did not parse")))?;
        let tolerance = Duration::from_nanos(2 + d.as_nanos() as u64 / 1_000_000_000_000_000);
        prop_assert!(
            parsed.abs_diff(d) <= tolerance,
            "{text}: {parsed:?} vs {d:?}"
        );
        let line = format!(
            r#"err="GET https://ghcr.io/v2/x/manifests/2: TOOMANYREQUESTS: retry-after: {text}, allowed: 44000/minute""#
        );
        let found = retry_after::find_in_message(&line)
            .ok_or_else(|| TestCaseError::fail(format!("not found in {line}")))?;
        prop_assert!(found.abs_diff(d) <= tolerance);
        Ok(())
    });
}

#[test]
fn retry_after_parsers_never_panic_and_stay_bounded() {
    let text = prop_oneof![
        2 => any::<String>(),
        2 => "[0-9.µμunsmh -]{0,24}",
        1 => "(retry-after|Retry-After|RETRY-AFTER)[:= ]{0,3}[0-9.a-zµ]{0,30}[,\" ]?.{0,10}",
        1 => "(Mon|Wed|Sun), [0-9]{1,2} (Jan|Oct|Dec) [0-9]{1,5} [0-9]{2}:[0-9]{2}:[0-9]{2} GMT",
        1 => "[0-9]{1,30}",
    ];
    check("retry-after", 512, text, |text| {
        bounded(retry_after::parse_go_duration(&text))?;
        bounded(retry_after::find_in_message(&text))?;
        bounded(retry_after::parse_header(&text))?;
        bounded(retry_after::parse_header_seconds(&text))?;
        Ok(())
    });
}
