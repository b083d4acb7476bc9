//! What the user asked trivy for: the subcommand, the repositories they chose, the report they
//! want and trivy's own exit flags, from flags (either form), `TRIVY_*` variables and trivy's
//! config file, with trivy's precedence (flag over variable over file).

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use crate::gate::TrivyExitFlags;
use crate::mirrors::DbKind;
use crate::trivy_args::{self, Arg, Flag};
use crate::trivy_config::TrivyConfig;

/// Reads the process environment, or a fake one in tests.
pub type Env<'a> = &'a dyn Fn(&str) -> Option<OsString>;

/// How trivy-ecr treats a trivy subcommand.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// image, filesystem, rootfs, repository, sbom, vm: mirrors injected, report gated.
    Scan(String),
    /// kubernetes, server: mirrors injected; output and exit code stay trivy's.
    UsesDb(String),
    /// Every other subcommand, or none: passed through untouched.
    Other,
}

/// Where a user's repository choice came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChoiceSource {
    Flag,
    Env,
    ConfigFile,
}

/// Repositories the user chose for one DB; trivy-ecr then leaves that DB's chain alone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserChoice {
    pub repositories: Vec<String>,
    pub source: ChoiceSource,
}

/// The report the user wants to see, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputRequest {
    pub format: String,
    pub output: Option<OsString>,
    pub template: Option<OsString>,
}

impl OutputRequest {
    /// SBOM formats: without explicit `--scanners` trivy only lists packages for them.
    pub fn is_sbom(&self) -> bool {
        matches!(self.format.as_str(), "cyclonedx" | "spdx" | "spdx-json")
    }
}

#[derive(Debug, Clone)]
pub struct Invocation {
    pub args: Vec<Arg>,
    /// Index in `args` of the subcommand token, if any.
    pub subcommand_at: Option<usize>,
    pub command: Command,
    pub own_flags: Vec<Flag>,
    pub vuln_choice: Option<UserChoice>,
    pub java_choice: Option<UserChoice>,
    pub checks_choice: Option<UserChoice>,
    pub output: OutputRequest,
    pub exit_flags: TrivyExitFlags,
    /// `--help`/`-h` anywhere before `--`.
    pub wants_help: bool,
    /// `--version`/`-v` with no subcommand.
    pub wants_version: bool,
    pub quiet: bool,
    /// The user set `--scanners`/`--security-checks` (any source).
    pub scanners_chosen: bool,
    pub compliance: bool,
    /// `--download-db-only` / `--download-java-db-only`: no report is produced.
    pub download_only: bool,
    /// `--download-db-only` (the vulnerability DB alone).
    pub download_db_only: bool,
    /// trivy's cache directory if the user set one (flag, `TRIVY_CACHE_DIR`, `cache.dir`).
    pub cache_dir: Option<PathBuf>,
    /// `--skip-db-update` (any source): the user wants the cached DB as it is.
    pub skip_db_update: bool,
    /// `--skip-java-db-update` (any source).
    pub skip_java_db_update: bool,
    /// `--skip-check-update` (any source).
    pub skip_check_update: bool,
    /// `--no-progress` (any source).
    pub no_progress: bool,
    /// `--insecure` (any source).
    pub insecure: bool,
    /// The scanners the user enabled, if they said (`--scanners`, `--security-checks`, ...).
    pub scanners: Option<Vec<String>>,
    /// `--server URL`: client mode, the server holds the DB.
    pub client_mode: bool,
    pub config: TrivyConfig,
}

impl Invocation {
    pub fn parse(argv: &[OsString], env: Env<'_>, cwd: &Path) -> Invocation {
        let args = trivy_args::parse(argv);
        let own_flags: Vec<Flag> = args
            .iter()
            .filter_map(|a| match a {
                Arg::Own(f) => Some(f.clone()),
                _ => None,
            })
            .collect();
        let subcommand_at = args.iter().position(|a| matches!(a, Arg::Positional(_)));
        let subcommand = subcommand_at.and_then(|i| match &args[i] {
            Arg::Positional(p) => p.to_str().map(str::to_owned),
            _ => None,
        });
        let flags = || {
            args.iter().flat_map(|a| match a {
                Arg::Trivy { flags, .. } => flags.as_slice(),
                _ => &[],
            })
        };
        let last_value = |name: &str| -> Option<OsString> {
            flags()
                .rev()
                .find(|f| f.name == name)
                .and_then(|f| f.value.clone())
        };
        let bool_flag = |name: &str| -> Option<bool> {
            flags()
                .rev()
                .find(|f| f.name == name)
                .map(|f| !trivy_args::is_false(&f.value))
        };
        let env_str = |key: &str| env(key).filter(|v| !v.is_empty());
        let env_bool = |key: &str| env_str(key).map(|v| v != "false" && v != "0");

        let config_path: Option<PathBuf> = last_value("config")
            .or_else(|| env("TRIVY_CONFIG"))
            .map(PathBuf::from);
        let config = TrivyConfig::load(config_path.as_deref(), cwd);

        let choice = |kind: DbKind| -> Option<UserChoice> {
            let from_flags: Vec<String> = flags()
                .filter(|f| f.name == kind.flag())
                .filter_map(|f| f.value.as_ref())
                .flat_map(|v| split_list(&v.to_string_lossy()))
                .collect();
            if !from_flags.is_empty() {
                return Some(UserChoice {
                    repositories: from_flags,
                    source: ChoiceSource::Flag,
                });
            }
            if let Some(v) = env_str(kind.env_var()) {
                return Some(UserChoice {
                    repositories: split_list(&v.to_string_lossy()),
                    source: ChoiceSource::Env,
                });
            }
            config
                .list(kind.config_key())
                .map(|repositories| UserChoice {
                    repositories,
                    source: ChoiceSource::ConfigFile,
                })
        };

        let text = |flag: &str, env_key: &str, config_key: &[&str]| -> Option<OsString> {
            last_value(flag)
                .or_else(|| env_str(env_key))
                .or_else(|| config.string(config_key).map(OsString::from))
        };
        let int = |flag: &str, env_key: &str, config_key: &[&str]| -> Option<i32> {
            match last_value(flag).or_else(|| env_str(env_key)) {
                Some(v) => v.to_str().and_then(|s| s.trim().parse().ok()),
                None => config.int(config_key),
            }
        };

        let output = OutputRequest {
            format: text("format", "TRIVY_FORMAT", &["format"])
                .map(|f| f.to_string_lossy().into_owned())
                .unwrap_or_else(|| "table".to_string()),
            output: text("output", "TRIVY_OUTPUT", &["output"]),
            template: text("template", "TRIVY_TEMPLATE", &["template"]),
        };
        let exit_flags = TrivyExitFlags {
            exit_code: int("exit-code", "TRIVY_EXIT_CODE", &["exit-code"]),
            exit_on_eol: int("exit-on-eol", "TRIVY_EXIT_ON_EOL", &["exit-on-eol"]),
        };

        let command = match subcommand.as_deref() {
            Some(
                "image" | "i" | "filesystem" | "fs" | "rootfs" | "repository" | "repo" | "sbom"
                | "vm",
            ) => Command::Scan(subcommand.clone().unwrap_or_default()),
            Some("kubernetes" | "k8s" | "server" | "s") => {
                Command::UsesDb(subcommand.clone().unwrap_or_default())
            }
            _ => Command::Other,
        };

        let wants_help = bool_flag("help").unwrap_or(false);
        let wants_version = subcommand_at.is_none() && bool_flag("version").unwrap_or(false);
        let quiet = bool_flag("quiet")
            .or_else(|| env_bool("TRIVY_QUIET"))
            .or_else(|| config.bool(&["quiet"]))
            .unwrap_or(false);
        let scanners_chosen = flags().any(|f| f.name == "scanners" || f.name == "security-checks")
            || env_str("TRIVY_SCANNERS").is_some()
            || env_str("TRIVY_SECURITY_CHECKS").is_some()
            || config.has(&["scan", "scanners"])
            || config.has(&["scanners"]);
        let compliance = last_value("compliance").is_some_and(|v| !v.is_empty())
            || env_str("TRIVY_COMPLIANCE").is_some()
            || config.has(&["compliance"])
            || config.has(&["scan", "compliance"]);
        let download_only = bool_flag("download-db-only").unwrap_or(false)
            || bool_flag("download-java-db-only").unwrap_or(false)
            || env_bool("TRIVY_DOWNLOAD_DB_ONLY").unwrap_or(false)
            || env_bool("TRIVY_DOWNLOAD_JAVA_DB_ONLY").unwrap_or(false);

        let download_db_only = bool_flag("download-db-only")
            .or_else(|| env_bool("TRIVY_DOWNLOAD_DB_ONLY"))
            .unwrap_or(false);
        let cache_dir =
            text("cache-dir", "TRIVY_CACHE_DIR", &["cache", "dir"]).map(|d| cwd.join(d));
        let bool_setting = |flag: &str, env_key: &str, config_key: &[&str]| {
            bool_flag(flag)
                .or_else(|| env_bool(env_key))
                .or_else(|| config.bool(config_key))
                .unwrap_or(false)
        };
        let skip_db_update = bool_setting(
            "skip-db-update",
            "TRIVY_SKIP_DB_UPDATE",
            &["db", "skip-update"],
        ) || bool_flag("skip-update").unwrap_or(false);
        let skip_java_db_update = bool_setting(
            "skip-java-db-update",
            "TRIVY_SKIP_JAVA_DB_UPDATE",
            &["db", "java-skip-update"],
        );
        let skip_check_update = bool_setting(
            "skip-check-update",
            "TRIVY_SKIP_CHECK_UPDATE",
            &["rego", "skip-check-update"],
        ) || bool_flag("skip-policy-update").unwrap_or(false);
        let no_progress = bool_setting("no-progress", "TRIVY_NO_PROGRESS", &["db", "no-progress"]);
        let insecure = bool_setting("insecure", "TRIVY_INSECURE", &["insecure"]);
        let scanners = flags()
            .rev()
            .find(|f| f.name == "scanners" || f.name == "security-checks")
            .and_then(|f| f.value.as_ref().map(|v| v.to_string_lossy().into_owned()))
            .or_else(|| env_str("TRIVY_SCANNERS").map(|v| v.to_string_lossy().into_owned()))
            .map(|v| split_list(&v))
            .or_else(|| config.list(&["scan", "scanners"]));
        let client_mode = last_value("server").is_some_and(|v| !v.is_empty())
            || env_str("TRIVY_SERVER").is_some();

        Invocation {
            download_db_only,
            cache_dir,
            skip_db_update,
            skip_java_db_update,
            skip_check_update,
            no_progress,
            insecure,
            scanners,
            client_mode,
            vuln_choice: choice(DbKind::Vulnerability),
            java_choice: choice(DbKind::Java),
            checks_choice: choice(DbKind::Checks),
            args,
            subcommand_at,
            command,
            own_flags,
            output,
            exit_flags,
            wants_help,
            wants_version,
            quiet,
            scanners_chosen,
            compliance,
            download_only,
            config,
        }
    }

    pub fn choice(&self, kind: DbKind) -> Option<&UserChoice> {
        match kind {
            DbKind::Vulnerability => self.vuln_choice.as_ref(),
            DbKind::Java => self.java_choice.as_ref(),
            DbKind::Checks => self.checks_choice.as_ref(),
        }
    }

    /// Whether trivy-ecr can run this scan with a JSON report of its own and gate it.
    /// Otherwise (compliance reports, SBOM generation, DB-only runs, help) trivy's output
    /// and exit code are passed on unchanged.
    pub fn is_gated(&self) -> bool {
        matches!(self.command, Command::Scan(_))
            && !self.wants_help
            && !self.download_only
            && !self.compliance
            && (!self.output.is_sbom() || self.scanners_chosen)
    }

    /// Whether this run needs the vulnerability DB in the local cache: a scan (or `k8s`) with
    /// the vuln scanner on, not in client mode, and the user did not pin the cached DB.
    pub fn needs_vulnerability_db(&self) -> bool {
        let scans = matches!(&self.command, Command::Scan(_))
            || matches!(&self.command, Command::UsesDb(s) if s == "k8s" || s == "kubernetes");
        let vuln_scanner = match &self.scanners {
            Some(list) => list.iter().any(|s| s == "vuln"),
            None => !self.output.is_sbom(),
        };
        scans && vuln_scanner && !self.wants_help && !self.client_mode && !self.skip_db_update
    }

    /// The misconfiguration scanner is on (it needs the checks bundle).
    pub fn scans_misconfigurations(&self) -> bool {
        self.scanners
            .as_ref()
            .is_some_and(|list| list.iter().any(|s| s == "misconfig" || s == "config"))
    }

    /// The subcommand as typed, if any.
    pub fn subcommand(&self) -> Option<&str> {
        match self.args.get(self.subcommand_at?)? {
            Arg::Positional(p) => p.to_str(),
            _ => None,
        }
    }

    /// The tokens after the subcommand (trivy-ecr's own flags removed).
    pub fn args_after_subcommand(&self) -> Vec<OsString> {
        let start = self.subcommand_at.map_or(0, |i| i + 1);
        self.args[start..].iter().flat_map(Arg::tokens).collect()
    }

    /// All of trivy's flags the user gave, in order.
    pub fn trivy_flags(&self) -> impl Iterator<Item = &Flag> {
        self.args.iter().flat_map(|a| match a {
            Arg::Trivy { flags, .. } => flags.as_slice(),
            _ => &[],
        })
    }
}

fn split_list(value: &str) -> Vec<String> {
    value
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_with(argv: &[&str], env: &[(&str, &str)], config: Option<&str>) -> Invocation {
        let dir = tempfile::tempdir().unwrap();
        if let Some(text) = config {
            std::fs::write(dir.path().join("trivy.yaml"), text).unwrap();
        }
        let env: Vec<(String, OsString)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), OsString::from(v)))
            .collect();
        let lookup = move |k: &str| env.iter().find(|(key, _)| key == k).map(|(_, v)| v.clone());
        let argv: Vec<OsString> = argv.iter().map(OsString::from).collect();
        Invocation::parse(&argv, &lookup, dir.path())
    }

    fn parse(argv: &[&str]) -> Invocation {
        parse_with(argv, &[], None)
    }

    #[test]
    fn classifies_subcommands_and_aliases() {
        for sub in [
            "image",
            "i",
            "fs",
            "filesystem",
            "rootfs",
            "repo",
            "repository",
            "sbom",
            "vm",
        ] {
            assert_eq!(
                parse(&[sub, "x"]).command,
                Command::Scan(sub.into()),
                "{sub}"
            );
        }
        for sub in ["k8s", "kubernetes", "server", "s"] {
            assert_eq!(parse(&[sub]).command, Command::UsesDb(sub.into()), "{sub}");
        }
        for sub in [
            "convert", "clean", "version", "plugin", "module", "registry", "config",
        ] {
            assert_eq!(parse(&[sub]).command, Command::Other, "{sub}");
        }
        // Global flags (with values) before the subcommand.
        let inv = parse(&["--cache-dir", "/c", "-q", "image", "alpine"]);
        assert_eq!(inv.command, Command::Scan("image".into()));
        assert!(inv.quiet);
    }

    #[test]
    fn user_choices_from_every_source() {
        type Case<'a> = (
            &'a [&'a str],
            &'a [(&'a str, &'a str)],
            Option<&'a str>,
            Option<ChoiceSource>,
            &'a [&'a str],
        );
        let cases: &[Case] = &[
            (&["image", "x"], &[], None, None, &[]),
            (
                &["image", "--db-repository", "a/b", "x"],
                &[],
                None,
                Some(ChoiceSource::Flag),
                &["a/b"],
            ),
            (
                &["image", "--db-repository=a/b,c/d", "x"],
                &[],
                None,
                Some(ChoiceSource::Flag),
                &["a/b", "c/d"],
            ),
            (
                &[
                    "image",
                    "--db-repository",
                    "a/b",
                    "--db-repository",
                    "c/d",
                    "x",
                ],
                &[],
                None,
                Some(ChoiceSource::Flag),
                &["a/b", "c/d"],
            ),
            (
                &["image", "x"],
                &[("TRIVY_DB_REPOSITORY", "e/f,g/h")],
                None,
                Some(ChoiceSource::Env),
                &["e/f", "g/h"],
            ),
            (
                &["image", "x"],
                &[],
                Some("db:\n  repository: c/f\n"),
                Some(ChoiceSource::ConfigFile),
                &["c/f"],
            ),
            (
                &["image", "x"],
                &[("TRIVY_DB_REPOSITORY", "")],
                None,
                None,
                &[],
            ),
            (
                &["image", "--", "--db-repository", "a/b"],
                &[],
                None,
                None,
                &[],
            ),
        ];
        for (argv, env, config, source, repos) in cases {
            let inv = parse_with(argv, env, *config);
            let choice = inv.choice(DbKind::Vulnerability);
            assert_eq!(choice.map(|c| c.source), *source, "{argv:?} {env:?}");
            let got: Vec<&str> = choice
                .map(|c| c.repositories.iter().map(String::as_str).collect())
                .unwrap_or_default();
            assert_eq!(got, *repos, "{argv:?}");
            assert!(inv.choice(DbKind::Java).is_none());
        }
    }

    #[test]
    fn config_file_from_flag_or_env() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("ci.yaml"), "db:\n  java-repository: j/k\n").unwrap();
        let argv = [
            OsString::from("-c"),
            "ci.yaml".into(),
            "fs".into(),
            ".".into(),
        ];
        let inv = Invocation::parse(&argv, &|_| None, dir.path());
        assert_eq!(inv.choice(DbKind::Java).unwrap().repositories, vec!["j/k"]);
        let argv = [OsString::from("fs"), ".".into()];
        let env = |k: &str| (k == "TRIVY_CONFIG").then(|| OsString::from("ci.yaml"));
        let inv = Invocation::parse(&argv, &env, dir.path());
        assert_eq!(
            inv.choice(DbKind::Java).unwrap().source,
            ChoiceSource::ConfigFile
        );
    }

    #[test]
    fn output_request_and_exit_flags() {
        let inv = parse(&[
            "image",
            "-f",
            "sarif",
            "-o",
            "out.sarif",
            "--exit-code",
            "3",
            "x",
        ]);
        assert_eq!(inv.output.format, "sarif");
        assert_eq!(inv.output.output, Some("out.sarif".into()));
        assert_eq!(inv.exit_flags.exit_code, Some(3));
        let inv = parse_with(
            &["image", "x"],
            &[("TRIVY_FORMAT", "json"), ("TRIVY_EXIT_ON_EOL", "4")],
            Some("format: sarif\nexit-code: 2\ntemplate: '@x.tpl'\n"),
        );
        assert_eq!(inv.output.format, "json");
        assert_eq!(inv.output.template, Some("@x.tpl".into()));
        assert_eq!(
            inv.exit_flags,
            TrivyExitFlags {
                exit_code: Some(2),
                exit_on_eol: Some(4)
            }
        );
        assert_eq!(parse(&["image", "x"]).output.format, "table");
    }

    #[test]
    fn what_gets_gated() {
        assert!(parse(&["image", "x"]).is_gated());
        assert!(parse(&["image", "--format", "cyclonedx", "--scanners", "vuln", "x"]).is_gated());
        assert!(!parse(&["image", "--format", "cyclonedx", "x"]).is_gated());
        assert!(!parse(&["image", "--compliance", "docker-cis-1.6.0", "x"]).is_gated());
        assert!(!parse(&["image", "--download-db-only"]).is_gated());
        assert!(parse(&["image", "--download-db-only=false", "x"]).is_gated());
        assert!(!parse(&["image", "--help"]).is_gated());
        assert!(!parse(&["k8s", "cluster"]).is_gated());
        assert!(!parse(&["convert", "r.json"]).is_gated());
    }

    #[test]
    fn which_runs_need_the_vulnerability_db() {
        assert!(parse(&["image", "x"]).needs_vulnerability_db());
        assert!(parse(&["k8s", "cluster"]).needs_vulnerability_db());
        assert!(!parse(&["image", "--scanners", "secret", "x"]).needs_vulnerability_db());
        assert!(!parse(&["image", "--skip-db-update", "x"]).needs_vulnerability_db());
        assert!(parse(&["image", "--skip-db-update=false", "x"]).needs_vulnerability_db());
        let inv = parse_with(
            &["image", "--skip-java-db-update", "x"],
            &[("TRIVY_SKIP_CHECK_UPDATE", "true")],
            None,
        );
        assert!(inv.skip_java_db_update && inv.skip_check_update && !inv.skip_db_update);
        let inv = parse_with(
            &["image", "x"],
            &[],
            Some("db:\n  java-skip-update: true\nrego:\n  skip-check-update: true\n"),
        );
        assert!(inv.skip_java_db_update && inv.skip_check_update);
        assert!(!parse(&["image", "--server", "http://s:4954", "x"]).needs_vulnerability_db());
        assert!(!parse(&["image", "-f", "cyclonedx", "x"]).needs_vulnerability_db());
        assert!(!parse(&["server"]).needs_vulnerability_db());
        assert!(!parse(&["convert", "r.json"]).needs_vulnerability_db());
        let inv = parse_with(
            &["image", "x"],
            &[("TRIVY_CACHE_DIR", "/c"), ("TRIVY_SKIP_DB_UPDATE", "false")],
            None,
        );
        assert_eq!(inv.cache_dir.as_deref(), Some(Path::new("/c")));
        assert!(inv.needs_vulnerability_db());
    }

    #[test]
    fn help_and_version() {
        assert!(parse(&["--help"]).wants_help);
        assert!(parse(&["-v"]).wants_version);
        assert!(!parse(&["image", "-v"]).wants_version);
    }

    #[test]
    fn own_flags_are_collected() {
        let inv = parse(&["image", "--ecr-fail-on", "HIGH", "x"]);
        assert_eq!(inv.own_flags.len(), 1);
        assert_eq!(inv.own_flags[0].name, "ecr-fail-on");
    }
}
