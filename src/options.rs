//! trivy-ecr's own settings: `--ecr-*` flags over `TRIVY_ECR_*` variables over defaults.
//!
//! They never collide with trivy's: trivy has no `--ecr-` flags and reads no `TRIVY_ECR_`
//! variables. Invalid values are usage errors (exit 2) naming the setting and the fix.

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use crate::gate::FailOn;
use crate::trivy_args::{Flag, is_own_boolean};

/// One documented setting: its flag, its variable, what it means.
pub struct Setting {
    pub flag: &'static str,
    pub env: &'static str,
    pub value: &'static str,
    pub default: &'static str,
    pub meaning: &'static str,
}

/// Every setting, in the order `--help` lists them.
pub const SETTINGS: &[Setting] = &[
    Setting {
        flag: "--ecr-fail-on",
        env: "TRIVY_ECR_FAIL_ON",
        value: "SEVERITY[,..]|none",
        default: "CRITICAL",
        meaning: "fail (exit 1) on findings at or above the lowest severity listed; none disables the gate",
    },
    Setting {
        flag: "--ecr-db-repositories",
        env: "TRIVY_ECR_DB_REPOSITORIES",
        value: "REPO[,REPO..]",
        default: "public.ecr.aws, mirror.gcr.io, ghcr.io",
        meaning: "vulnerability DB mirror chain, tried in order (replaces the default chain)",
    },
    Setting {
        flag: "--ecr-java-db-repositories",
        env: "TRIVY_ECR_JAVA_DB_REPOSITORIES",
        value: "REPO[,REPO..]",
        default: "public.ecr.aws, mirror.gcr.io, ghcr.io",
        meaning: "Java DB mirror chain, tried in order (replaces the default chain)",
    },
    Setting {
        flag: "--ecr-checks-repositories",
        env: "TRIVY_ECR_CHECKS_REPOSITORIES",
        value: "REPO[,REPO..]",
        default: "public.ecr.aws, mirror.gcr.io, ghcr.io",
        meaning: "checks bundle chain for native downloads and db mirror (db pull --checks, TRIVY_ECR_PREFETCH=all)",
    },
    Setting {
        flag: "--ecr-max-attempts",
        env: "TRIVY_ECR_MAX_ATTEMPTS",
        value: "N",
        default: "5",
        meaning: "download attempts at most (trivy runs, or native pulls per DB), counting the first",
    },
    Setting {
        flag: "--ecr-max-wait",
        env: "TRIVY_ECR_MAX_WAIT",
        value: "DURATION",
        default: "120s",
        meaning: "total time spent waiting between attempts (e.g. 90s, 5m)",
    },
    Setting {
        flag: "--ecr-prefetch",
        env: "TRIVY_ECR_PREFETCH",
        value: "on|all|off",
        default: "on",
        meaning: "download the vulnerability DB natively before the scan, then run trivy with --skip-db-update; all: also the Java DB and (with misconfiguration scanning) the checks bundle; off: let trivy download",
    },
    Setting {
        flag: "--ecr-max-db-age",
        env: "TRIVY_ECR_MAX_DB_AGE",
        value: "DURATION",
        default: "72h",
        meaning: "when no mirror delivers a fresh DB, scan with the cached one if it was built no longer ago than this (e.g. 24h, 3d); 0 turns degraded mode off",
    },
    Setting {
        flag: "--ecr-timeout",
        env: "TRIVY_ECR_TIMEOUT",
        value: "DURATION",
        default: "30m",
        meaning: "the longest one trivy run may take; then SIGTERM to it, a grace of a tenth of this (1-10s), SIGKILL (exit 5); 0 for no limit",
    },
    Setting {
        flag: "--ecr-http-timeout",
        env: "TRIVY_ECR_HTTP_TIMEOUT",
        value: "DURATION",
        default: "30s",
        meaning: "native downloads: how long to wait for a connection or for the next bytes before trying the next mirror",
    },
    Setting {
        flag: "--ecr-trivy",
        env: "TRIVY_ECR_TRIVY",
        value: "PATH",
        default: "trivy on PATH",
        meaning: "the real trivy binary to run",
    },
    Setting {
        flag: "--ecr-baseline",
        env: "TRIVY_ECR_BASELINE",
        value: "OLD.json",
        default: "none",
        meaning: "fail only on findings at or above the threshold that this earlier trivy JSON report does not have (same ID, package and target)",
    },
    Setting {
        flag: "--ecr-junit",
        env: "TRIVY_ECR_JUNIT",
        value: "PATH",
        default: "none",
        meaning: "also write a JUnit XML report: a testsuite per target, a testcase per finding, a failure per blocking finding",
    },
    Setting {
        flag: "--ecr-json",
        env: "TRIVY_ECR_JSON",
        value: "PATH",
        default: "none",
        meaning: "also write trivy's JSON report of the same scan",
    },
    Setting {
        flag: "--ecr-github-annotations",
        env: "TRIVY_ECR_GITHUB_ANNOTATIONS",
        value: "[=true|false]",
        default: "false",
        meaning: "print ::error annotations for blocking findings and ::warning for those the baseline knows (GitHub Actions)",
    },
    Setting {
        flag: "--ecr-log",
        env: "TRIVY_ECR_LOG",
        value: "FILTER",
        default: "warn",
        meaning: "trivy-ecr's own log level or tracing filter (debug shows trivy's command lines, secrets redacted)",
    },
];

/// The settings after flags, environment and defaults are merged and checked.
#[derive(Debug, Clone)]
pub struct Options {
    pub fail_on: FailOn,
    pub prefetch: Prefetch,
    pub db_repositories: Option<Vec<String>>,
    pub java_db_repositories: Option<Vec<String>>,
    pub checks_repositories: Option<Vec<String>>,
    pub max_attempts: u32,
    pub max_wait: Duration,
    /// Degraded mode's limit on the cached DB's age; `None` when off.
    pub max_db_age: Option<Duration>,
    /// The longest one trivy run may take; `None` for no limit.
    pub timeout: Option<Duration>,
    /// Connect and read timeout of native downloads.
    pub http_timeout: Duration,
    pub trivy: Option<PathBuf>,
    pub log: Option<String>,
    /// An earlier trivy JSON report whose findings do not fail the gate.
    pub baseline: Option<FileSetting>,
    /// Where to write the JUnit XML report.
    pub junit: Option<PathBuf>,
    /// Where to write a copy of trivy's JSON report.
    pub json: Option<PathBuf>,
    pub github_annotations: bool,
}

/// A file named by a setting, with the setting it came from (for error messages).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileSetting {
    /// `--ecr-baseline` or `TRIVY_ECR_BASELINE`.
    pub from: String,
    pub path: PathBuf,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            fail_on: FailOn::default(),
            prefetch: Prefetch::VulnerabilityDb,
            db_repositories: None,
            java_db_repositories: None,
            checks_repositories: None,
            max_attempts: 5,
            max_wait: Duration::from_secs(120),
            max_db_age: Some(Duration::from_secs(72 * 3600)),
            timeout: Some(Duration::from_secs(30 * 60)),
            http_timeout: Duration::from_secs(30),
            trivy: None,
            log: None,
            baseline: None,
            junit: None,
            json: None,
            github_annotations: false,
        }
    }
}

/// Which DBs trivy-ecr downloads itself before a scan (`TRIVY_ECR_PREFETCH`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Prefetch {
    /// trivy downloads its DBs (the core behaviour: mirrors injected, runs retried).
    Off,
    VulnerabilityDb,
    /// The vulnerability DB and the Java DB.
    All,
}

/// A setting with a bad value or an unknown `--ecr-` flag.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{0}")]
pub struct UsageError(pub String);

impl Options {
    /// Merges `--ecr-*` flags (last one wins) over `TRIVY_ECR_*` variables.
    pub fn resolve(
        flags: &[Flag],
        env: &dyn Fn(&str) -> Option<OsString>,
    ) -> Result<Options, UsageError> {
        for flag in flags {
            if !SETTINGS.iter().any(|s| s.flag[2..] == flag.name) {
                let known: Vec<&str> = SETTINGS.iter().map(|s| s.flag).collect();
                return Err(UsageError(format!(
                    "unknown option --{}; trivy-ecr's options are {}",
                    flag.name,
                    known.join(", ")
                )));
            }
        }
        let lookup = |setting: &str| -> Result<Option<(String, String)>, UsageError> {
            let s = SETTINGS
                .iter()
                .find(|s| s.flag == setting)
                .expect("setting is declared");
            if let Some(flag) = flags.iter().rev().find(|f| f.name == s.flag[2..]) {
                let value = match &flag.value {
                    Some(value) => value.clone(),
                    None if is_own_boolean(&flag.name) => OsString::from("true"),
                    None => {
                        return Err(UsageError(format!(
                            "{} needs a value ({})",
                            s.flag, s.value
                        )));
                    }
                };
                return Ok(Some((s.flag.to_string(), into_utf8(s.flag, value)?)));
            }
            match env(s.env) {
                Some(v) if !v.is_empty() => Ok(Some((s.env.to_string(), into_utf8(s.env, v)?))),
                _ => Ok(None),
            }
        };

        let mut options = Options::default();
        if let Some((from, v)) = lookup("--ecr-fail-on")? {
            options.fail_on = v
                .parse()
                .map_err(|e| UsageError(format!("{from}={v}: {e}")))?;
        }
        if let Some((from, v)) = lookup("--ecr-db-repositories")? {
            options.db_repositories = Some(parse_chain(&from, &v)?);
        }
        if let Some((from, v)) = lookup("--ecr-java-db-repositories")? {
            options.java_db_repositories = Some(parse_chain(&from, &v)?);
        }
        if let Some((from, v)) = lookup("--ecr-checks-repositories")? {
            options.checks_repositories = Some(parse_chain(&from, &v)?);
        }
        if let Some((from, v)) = lookup("--ecr-max-attempts")? {
            options.max_attempts = match v.trim().parse::<u32>() {
                Ok(n) if n >= 1 => n,
                _ => {
                    return Err(UsageError(format!(
                        "{from}={v}: expected a whole number of attempts, at least 1 (e.g. 5)"
                    )));
                }
            };
        }
        if let Some((from, v)) = lookup("--ecr-max-wait")? {
            options.max_wait =
                parse_duration(&v).map_err(|e| UsageError(format!("{from}={v}: {e}")))?;
        }
        if let Some((from, v)) = lookup("--ecr-max-db-age")? {
            let age = parse_duration(&v).map_err(|e| UsageError(format!("{from}={v}: {e}")))?;
            options.max_db_age = (!age.is_zero()).then_some(age);
        }
        if let Some((from, v)) = lookup("--ecr-timeout")? {
            let limit = parse_duration(&v).map_err(|e| UsageError(format!("{from}={v}: {e}")))?;
            options.timeout = (!limit.is_zero()).then_some(limit);
        }
        if let Some((from, v)) = lookup("--ecr-http-timeout")? {
            let limit = parse_duration(&v).map_err(|e| UsageError(format!("{from}={v}: {e}")))?;
            if limit.is_zero() {
                return Err(UsageError(format!(
                    "{from}={v}: must be more than zero (e.g. 30s)"
                )));
            }
            options.http_timeout = limit;
        }
        if let Some((from, v)) = lookup("--ecr-prefetch")? {
            options.prefetch = match v.trim().to_ascii_lowercase().as_str() {
                "on" | "true" | "1" | "db" => Prefetch::VulnerabilityDb,
                "all" => Prefetch::All,
                "off" | "false" | "0" => Prefetch::Off,
                _ => {
                    return Err(UsageError(format!("{from}={v}: expected on, all or off")));
                }
            };
        }
        if let Some((_, v)) = lookup("--ecr-trivy")? {
            options.trivy = Some(PathBuf::from(v));
        }
        if let Some((_, v)) = lookup("--ecr-log")? {
            options.log = Some(v);
        }
        if let Some((from, v)) = lookup("--ecr-baseline")? {
            let path = parse_path(&from, v)?;
            options.baseline = Some(FileSetting { from, path });
        }
        if let Some((from, v)) = lookup("--ecr-junit")? {
            options.junit = Some(parse_path(&from, v)?);
        }
        if let Some((from, v)) = lookup("--ecr-json")? {
            options.json = Some(parse_path(&from, v)?);
        }
        if let Some((from, v)) = lookup("--ecr-github-annotations")? {
            options.github_annotations = parse_bool(&v)
                .ok_or_else(|| UsageError(format!("{from}={v}: expected true or false")))?;
        }
        Ok(options)
    }
}

impl Options {
    /// The mirror chain trivy-ecr uses for `kind`: the configured one, else the default.
    pub fn repositories(&self, kind: crate::mirrors::DbKind) -> Vec<String> {
        use crate::mirrors::DbKind;
        match kind {
            DbKind::Vulnerability => self.db_repositories.clone(),
            DbKind::Java => self.java_db_repositories.clone(),
            DbKind::Checks => self.checks_repositories.clone(),
        }
        .unwrap_or_else(|| kind.default_chain())
    }
}

fn into_utf8(name: &str, value: OsString) -> Result<String, UsageError> {
    value
        .into_string()
        .map_err(|_| UsageError(format!("{name} is not valid UTF-8")))
}

fn parse_path(from: &str, value: String) -> Result<PathBuf, UsageError> {
    if value.trim().is_empty() {
        return Err(UsageError(format!("{from} is empty; give a file path")));
    }
    Ok(PathBuf::from(value))
}

/// pflag's boolean spellings (`true`, `1`, `t`, `false`, `0`, `f`, any case).
fn parse_bool(value: &str) -> Option<bool> {
    match value.trim().to_ascii_lowercase().as_str() {
        "true" | "t" | "1" => Some(true),
        "false" | "f" | "0" => Some(false),
        _ => None,
    }
}

fn parse_chain(from: &str, value: &str) -> Result<Vec<String>, UsageError> {
    let chain: Vec<String> = value
        .split(',')
        .map(str::trim)
        .filter(|r| !r.is_empty())
        .map(str::to_owned)
        .collect();
    if chain.is_empty() {
        return Err(UsageError(format!(
            "{from} is empty; give repositories separated by commas, e.g. public.ecr.aws/aquasecurity/trivy-db:2"
        )));
    }
    if let Some(bad) = chain.iter().find(|r| r.contains("://") || r.contains(' ')) {
        return Err(UsageError(format!(
            "{from}: '{bad}' is not a repository; write HOST[:PORT]/PATH[:TAG] without a scheme"
        )));
    }
    Ok(chain)
}

/// `90`, `90s`, `2m`, `1h30m`, `500ms`: a bare number means seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if let Ok(secs) = text.parse::<u64>() {
        return Ok(Duration::from_secs(secs));
    }
    humantime::parse_duration(text)
        .map_err(|_| "expected a duration such as 90s, 5m or 1h30m".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gate::Severity;

    fn flag(name: &str, value: &str) -> Flag {
        Flag {
            name: name.into(),
            value: Some(value.into()),
        }
    }

    fn no_env(_: &str) -> Option<OsString> {
        None
    }

    #[test]
    fn defaults() {
        let o = Options::resolve(&[], &no_env).unwrap();
        assert_eq!(o.fail_on, FailOn::AtOrAbove(Severity::Critical));
        assert_eq!(o.max_attempts, 5);
        assert_eq!(o.max_wait, Duration::from_secs(120));
        assert!(o.db_repositories.is_none());
    }

    #[test]
    fn flags_override_environment() {
        let env = |k: &str| match k {
            "TRIVY_ECR_FAIL_ON" => Some(OsString::from("HIGH")),
            "TRIVY_ECR_MAX_WAIT" => Some(OsString::from("2m")),
            "TRIVY_ECR_DB_REPOSITORIES" => Some(OsString::from("a/b:2, c/d:2")),
            _ => None,
        };
        let o = Options::resolve(&[flag("ecr-fail-on", "none")], &env).unwrap();
        assert_eq!(o.fail_on, FailOn::Disabled);
        assert_eq!(o.max_wait, Duration::from_secs(120));
        assert_eq!(o.db_repositories.unwrap(), vec!["a/b:2", "c/d:2"]);
    }

    #[test]
    fn bad_values_are_usage_errors_naming_the_setting() {
        let cases = [
            (flag("ecr-max-attempts", "0"), "--ecr-max-attempts=0"),
            (flag("ecr-max-wait", "soon"), "--ecr-max-wait=soon"),
            (flag("ecr-fail-on", "SEVERE"), "--ecr-fail-on=SEVERE"),
            (
                flag("ecr-db-repositories", " , "),
                "--ecr-db-repositories is empty",
            ),
            (
                flag("ecr-db-repositories", "https://x/y"),
                "not a repository",
            ),
            (flag("ecr-fial-on", "x"), "unknown option --ecr-fial-on"),
            (
                flag("ecr-prefetch", "maybe"),
                "--ecr-prefetch=maybe: expected on, all or off",
            ),
        ];
        for (f, expected) in cases {
            let err = Options::resolve(&[f], &no_env).unwrap_err();
            assert!(err.0.contains(expected), "{err} should contain {expected}");
        }
    }

    #[test]
    fn max_db_age_defaults_to_three_days_and_zero_turns_it_off() {
        assert_eq!(
            Options::default().max_db_age,
            Some(Duration::from_secs(72 * 3600))
        );
        let o = Options::resolve(&[flag("ecr-max-db-age", "3d")], &no_env).unwrap();
        assert_eq!(o.max_db_age, Some(Duration::from_secs(3 * 86_400)));
        let o = Options::resolve(&[flag("ecr-max-db-age", "0")], &no_env).unwrap();
        assert_eq!(o.max_db_age, None);
    }

    #[test]
    fn ci_outputs_and_baseline() {
        let env = |k: &str| match k {
            "TRIVY_ECR_BASELINE" => Some(OsString::from("old.json")),
            "TRIVY_ECR_JSON" => Some(OsString::from("env.json")),
            "TRIVY_ECR_GITHUB_ANNOTATIONS" => Some(OsString::from("true")),
            _ => None,
        };
        let o = Options::resolve(&[flag("ecr-junit", "junit.xml")], &env).unwrap();
        assert_eq!(
            o.baseline,
            Some(FileSetting {
                from: "TRIVY_ECR_BASELINE".into(),
                path: "old.json".into()
            })
        );
        assert_eq!(o.junit, Some(PathBuf::from("junit.xml")));
        assert_eq!(o.json, Some(PathBuf::from("env.json")));
        assert!(o.github_annotations);
        let bare = Flag {
            name: "ecr-github-annotations".into(),
            value: None,
        };
        assert!(
            Options::resolve(&[bare], &no_env)
                .unwrap()
                .github_annotations
        );
        let off = flag("ecr-github-annotations", "FALSE");
        assert!(!Options::resolve(&[off], &env).unwrap().github_annotations);
        assert!(!Options::resolve(&[], &no_env).unwrap().github_annotations);
    }

    #[test]
    fn bad_ci_settings_are_usage_errors() {
        let cases = [
            (
                flag("ecr-github-annotations", "yes please"),
                "--ecr-github-annotations=yes please: expected true or false",
            ),
            (flag("ecr-junit", ""), "--ecr-junit is empty"),
            (
                Flag {
                    name: "ecr-baseline".into(),
                    value: None,
                },
                "--ecr-baseline needs a value (OLD.json)",
            ),
        ];
        for (f, expected) in cases {
            let err = Options::resolve(&[f], &no_env).unwrap_err();
            assert!(err.0.contains(expected), "{err} should contain {expected}");
        }
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("1m30s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert!(parse_duration("-1").is_err());
    }
}
