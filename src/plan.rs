//! Writes the trivy command lines for one attempt: the user's arguments, in order and verbatim,
//! plus the mirror chains trivy-ecr owns and, for gated scans, a JSON report to a private file.

use std::ffi::OsString;
use std::path::Path;

use crate::invocation::{Command, Invocation};
use crate::mirrors::DbKind;
use crate::retry::MirrorChain;
use crate::trivy_args::Arg;
use crate::trivy_args::{Flag, FlagEdit, rewrite_flags};
use crate::trivy_version::Capabilities;

/// Flags trivy-ecr sets itself on a gated scan (the user's are read, then dropped).
const REPORT_FLAGS_TAKEN_OVER: &[&str] = &[
    "format",
    "output",
    "template",
    "exit-code",
    "exit-on-eol",
    "output-plugin-arg",
];

/// Formats rendered from a package list, which trivy only puts in the JSON with `--list-all-pkgs`.
const FORMATS_NEEDING_PACKAGES: &[&str] = &["cyclonedx", "spdx", "spdx-json", "github"];

/// What trivy-ecr adds to trivy's command line besides the mirror chains.
#[derive(Debug, Clone, Default)]
pub struct Extras {
    /// The vulnerability DB was fetched natively: `--skip-db-update`.
    pub skip_db_update: bool,
    /// The Java DB was fetched natively: `--skip-java-db-update`.
    pub skip_java_db_update: bool,
    /// The checks bundle was fetched natively: `--skip-check-update`.
    pub skip_check_update: bool,
    /// Gated scans: trivy writes its JSON report here.
    pub json_report: Option<std::path::PathBuf>,
}

/// trivy's argv for a command trivy-ecr does not touch: the user's tokens, verbatim, without
/// trivy-ecr's own `--ecr-*` flags.
pub fn passthrough_argv(invocation: &Invocation) -> Vec<OsString> {
    invocation.args.iter().flat_map(Arg::tokens).collect()
}

/// trivy's argv for one attempt.
pub fn trivy_argv(
    invocation: &Invocation,
    chains: &[MirrorChain],
    capabilities: Capabilities,
    extras: &Extras,
) -> Vec<OsString> {
    let json_report = extras.json_report.as_deref();
    let mut argv = Vec::new();
    for (index, arg) in invocation.args.iter().enumerate() {
        let tokens = match arg {
            Arg::Trivy { .. } => {
                rewrite_flags(arg, |flag| edit_user_flag(flag, capabilities, extras))
            }
            other => other.tokens(),
        };
        argv.extend(tokens);
        if Some(index) == invocation.subcommand_at {
            argv.extend(injected_flags(
                invocation,
                chains,
                capabilities,
                json_report,
            ));
            if extras.skip_db_update {
                argv.push(OsString::from("--skip-db-update"));
            }
            if extras.skip_java_db_update {
                argv.push(OsString::from("--skip-java-db-update"));
            }
            if extras.skip_check_update {
                argv.push(OsString::from("--skip-check-update"));
            }
        }
    }
    argv
}

fn injected_flags(
    invocation: &Invocation,
    chains: &[MirrorChain],
    capabilities: Capabilities,
    json_report: Option<&Path>,
) -> Vec<OsString> {
    let mut out = Vec::new();
    // `trivy server` takes no `--java-db-repository` (its clients fetch the Java DB).
    let server =
        matches!(&invocation.command, Command::UsesDb(sub) if sub == "server" || sub == "s");
    for chain in chains
        .iter()
        .filter(|c| c.owned && !(server && c.kind == DbKind::Java))
    {
        let value = if capabilities.multiple_repositories {
            chain.repositories().collect::<Vec<_>>().join(",")
        } else {
            chain.head().unwrap_or_default().to_string()
        };
        out.push(OsString::from(format!("--{}", chain.kind.flag())));
        out.push(OsString::from(value));
    }
    if let Some(report) = json_report {
        out.extend(["--format", "json", "--output"].map(OsString::from));
        out.push(report.as_os_str().to_owned());
        out.extend(["--exit-code", "0", "--exit-on-eol", "0"].map(OsString::from));
        if FORMATS_NEEDING_PACKAGES.contains(&invocation.output.format.as_str()) {
            out.push(OsString::from("--list-all-pkgs"));
        }
    }
    out
}

fn edit_user_flag(flag: &Flag, capabilities: Capabilities, extras: &Extras) -> FlagEdit {
    if extras.json_report.is_some() && REPORT_FLAGS_TAKEN_OVER.contains(&flag.name.as_str()) {
        return FlagEdit::Drop;
    }
    if undoes_added_skip(flag, extras) {
        return FlagEdit::Drop;
    }
    if flag.name == "security-checks" && capabilities.scanners_flag {
        return FlagEdit::Replace(scanners_from_security_checks(flag));
    }
    FlagEdit::Keep
}

/// Whether a user's flag would undo a `--skip-*-update` trivy-ecr adds after fetching a DB
/// itself. trivy-ecr fetches only when the user did not skip the update, so such a flag says
/// "false" (`--skip-db-update=false`); coming after trivy-ecr's flag it would win (pflag keeps
/// the last) and trivy would download the DB again.
fn undoes_added_skip(flag: &Flag, extras: &Extras) -> bool {
    match flag.name.as_str() {
        "skip-db-update" | "skip-update" => extras.skip_db_update,
        "skip-java-db-update" => extras.skip_java_db_update,
        "skip-check-update" | "skip-policy-update" => extras.skip_check_update,
        _ => false,
    }
}

/// `--security-checks vuln,config` → `--scanners vuln,misconfig` (the rename of trivy 0.37).
pub fn scanners_from_security_checks(flag: &Flag) -> Flag {
    let value = flag.value.as_ref().map(|v| {
        let text = v.to_string_lossy();
        let mapped: Vec<&str> = text
            .split(',')
            .map(|s| match s.trim() {
                "config" => "misconfig",
                other => other,
            })
            .collect();
        OsString::from(mapped.join(","))
    });
    Flag {
        name: "scanners".into(),
        value,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mirrors::DbKind;
    use crate::retry::RetryPolicy;
    use std::time::Duration;

    fn invocation(argv: &[&str]) -> Invocation {
        let argv: Vec<OsString> = argv.iter().map(OsString::from).collect();
        Invocation::parse(&argv, &|_| None, Path::new("/nonexistent"))
    }

    fn chains(inv: &Invocation) -> Vec<MirrorChain> {
        let policy = RetryPolicy::new(3, Duration::from_secs(1));
        [DbKind::Vulnerability, DbKind::Java]
            .into_iter()
            .map(|kind| match inv.choice(kind) {
                Some(c) => MirrorChain::new(kind, c.repositories.clone(), false, &policy),
                None => MirrorChain::new(kind, kind.default_chain(), true, &policy),
            })
            .collect()
    }

    fn argv(args: &[&str], caps: Capabilities, report: Option<&str>) -> Vec<String> {
        let inv = invocation(args);
        let extras = Extras {
            json_report: report.map(std::path::PathBuf::from),
            ..Extras::default()
        };
        trivy_argv(&inv, &chains(&inv), caps, &extras)
            .into_iter()
            .map(|s| s.into_string().unwrap())
            .collect()
    }

    const MODERN: Capabilities = Capabilities {
        multiple_repositories: true,
        scanners_flag: true,
    };
    const OLD: Capabilities = Capabilities {
        multiple_repositories: false,
        scanners_flag: true,
    };
    const VULN: &str = "public.ecr.aws/aquasecurity/trivy-db:2,mirror.gcr.io/aquasec/trivy-db:2,ghcr.io/aquasecurity/trivy-db:2";
    const JAVA: &str = "public.ecr.aws/aquasecurity/trivy-java-db:1,mirror.gcr.io/aquasec/trivy-java-db:1,ghcr.io/aquasecurity/trivy-java-db:1";

    #[test]
    fn rewriting_table() {
        type Case<'a> = (&'a [&'a str], Capabilities, Option<&'a str>, &'a [&'a str]);
        let cases: &[Case] = &[
            // Chains injected right after the subcommand; the rest untouched.
            (
                &["image", "--severity", "CRITICAL", "alpine"],
                MODERN,
                None,
                &[
                    "image",
                    "--db-repository",
                    VULN,
                    "--java-db-repository",
                    JAVA,
                    "--severity",
                    "CRITICAL",
                    "alpine",
                ],
            ),
            // Global flags before the subcommand stay before it.
            (
                &["--cache-dir", "/c", "fs", "."],
                MODERN,
                None,
                &[
                    "--cache-dir",
                    "/c",
                    "fs",
                    "--db-repository",
                    VULN,
                    "--java-db-repository",
                    JAVA,
                    ".",
                ],
            ),
            // The user's choice (either form) is kept; only the other DB gets a chain.
            (
                &["image", "--db-repository=my/db:2", "x"],
                MODERN,
                None,
                &[
                    "image",
                    "--java-db-repository",
                    JAVA,
                    "--db-repository=my/db:2",
                    "x",
                ],
            ),
            (
                &["image", "--java-db-repository", "j/db", "x"],
                MODERN,
                None,
                &[
                    "image",
                    "--db-repository",
                    VULN,
                    "--java-db-repository",
                    "j/db",
                    "x",
                ],
            ),
            // Old trivy takes one repository.
            (
                &["image", "x"],
                OLD,
                None,
                &[
                    "image",
                    "--db-repository",
                    "public.ecr.aws/aquasecurity/trivy-db:2",
                    "--java-db-repository",
                    "public.ecr.aws/aquasecurity/trivy-java-db:1",
                    "x",
                ],
            ),
            // `--` and what follows are verbatim.
            (
                &["image", "x", "--", "--db-repository", "y"],
                MODERN,
                None,
                &[
                    "image",
                    "--db-repository",
                    VULN,
                    "--java-db-repository",
                    JAVA,
                    "x",
                    "--",
                    "--db-repository",
                    "y",
                ],
            ),
            // Old flags translated.
            (
                &["image", "--security-checks", "vuln,config", "x"],
                MODERN,
                None,
                &[
                    "image",
                    "--db-repository",
                    VULN,
                    "--java-db-repository",
                    JAVA,
                    "--scanners",
                    "vuln,misconfig",
                    "x",
                ],
            ),
            // Own flags never reach trivy.
            (
                &["image", "--ecr-fail-on", "HIGH", "x"],
                MODERN,
                None,
                &[
                    "image",
                    "--db-repository",
                    VULN,
                    "--java-db-repository",
                    JAVA,
                    "x",
                ],
            ),
            // Gated: the user's output flags are replaced by the JSON report.
            (
                &[
                    "image",
                    "-f",
                    "sarif",
                    "-o",
                    "out.sarif",
                    "--exit-code",
                    "1",
                    "-q",
                    "x",
                ],
                MODERN,
                Some("/tmp/r.json"),
                &[
                    "image",
                    "--db-repository",
                    VULN,
                    "--java-db-repository",
                    JAVA,
                    "--format",
                    "json",
                    "--output",
                    "/tmp/r.json",
                    "--exit-code",
                    "0",
                    "--exit-on-eol",
                    "0",
                    "-q",
                    "x",
                ],
            ),
            (
                &["image", "-qf", "cyclonedx", "--scanners", "vuln", "x"],
                MODERN,
                Some("/tmp/r.json"),
                &[
                    "image",
                    "--db-repository",
                    VULN,
                    "--java-db-repository",
                    JAVA,
                    "--format",
                    "json",
                    "--output",
                    "/tmp/r.json",
                    "--exit-code",
                    "0",
                    "--exit-on-eol",
                    "0",
                    "--list-all-pkgs",
                    "--quiet",
                    "--scanners",
                    "vuln",
                    "x",
                ],
            ),
            // Values that look like flags stay where they are.
            (
                &["fs", "--skip-dirs", "--format", "."],
                MODERN,
                None,
                &[
                    "fs",
                    "--db-repository",
                    VULN,
                    "--java-db-repository",
                    JAVA,
                    "--skip-dirs",
                    "--format",
                    ".",
                ],
            ),
        ];
        for (args, caps, report, expected) in cases {
            assert_eq!(argv(args, *caps, *report), *expected, "{args:?}");
        }
    }

    #[test]
    fn every_user_token_survives_in_order_when_nothing_is_taken_over() {
        let args = [
            "-d",
            "image",
            "--skip-dirs",
            "a,b",
            "--platform=linux/arm64",
            "--ignore-unfixed",
            "img:1",
            "--",
            "-x",
        ];
        let out = argv(&args, MODERN, None);
        let kept: Vec<&str> = out
            .iter()
            .map(String::as_str)
            .filter(|t| args.contains(t))
            .collect();
        assert_eq!(kept, args);
    }

    #[test]
    fn passthrough_commands_are_not_rewritten() {
        let args = [
            "config",
            "--security-checks",
            "config",
            "--ecr-fail-on",
            "HIGH",
            ".",
        ];
        let out: Vec<String> = passthrough_argv(&invocation(&args))
            .into_iter()
            .map(|s| s.into_string().unwrap())
            .collect();
        assert_eq!(out, ["config", "--security-checks", "config", "."]);
    }

    #[test]
    fn natively_fetched_dbs_are_not_downloaded_again() {
        let inv = invocation(&["image", "x"]);
        let extras = Extras {
            skip_db_update: true,
            skip_java_db_update: true,
            skip_check_update: false,
            json_report: None,
        };
        let out = trivy_argv(&inv, &chains(&inv), MODERN, &extras);
        assert_eq!(
            out[5..],
            ["--skip-db-update", "--skip-java-db-update", "x"].map(OsString::from)
        );
    }

    #[test]
    fn a_users_false_skip_flag_cannot_undo_a_native_fetch() {
        let inv = invocation(&[
            "image",
            "--skip-db-update=false",
            "-q",
            "--skip-java-db-update=false",
            "x",
        ]);
        let extras = Extras {
            skip_db_update: true,
            skip_java_db_update: true,
            ..Extras::default()
        };
        let out = trivy_argv(&inv, &chains(&inv), MODERN, &extras);
        assert_eq!(
            out[5..],
            ["--skip-db-update", "--skip-java-db-update", "-q", "x"].map(OsString::from)
        );
        // Nothing fetched natively: the user's flags stay as written.
        let out = trivy_argv(&inv, &chains(&inv), MODERN, &Extras::default());
        assert!(out.contains(&OsString::from("--skip-db-update=false")));
    }

    #[test]
    fn rewriting_is_idempotent() {
        let first = argv(&["image", "--severity", "HIGH", "alpine"], MODERN, None);
        let first_refs: Vec<&str> = first.iter().map(String::as_str).collect();
        let second = argv(&first_refs, MODERN, None);
        assert_eq!(first, second);
    }
}
