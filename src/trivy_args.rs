//! Reads a trivy command line the way trivy's flag parser (cobra/pflag) does, without owning it.
//!
//! trivy-ecr must find a handful of flags (`--db-repository`, `--format`, `--output`, ...) in
//! arguments it otherwise forwards untouched. Doing that right needs to know which of trivy's
//! flags take a value, so that `--output --format` names a file and `--skip-dirs -x` is a value.
//! Every token is kept verbatim as `OsString`; only flag *names* have to be ASCII.

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;

/// Long names of trivy's flags that take a value (`--name VALUE` / `--name=VALUE`), read off
/// `trivy <command> --help` for every command of trivy 0.69 and 0.76, plus flags that are
/// deprecated but still accepted. Every other flag is a boolean: it never consumes the next token.
const VALUE_FLAGS: &[&str] = &[
    "ansible-extra-vars",
    "ansible-inventory",
    "ansible-playbook",
    "aws-region",
    "branch",
    "burst",
    "cacert",
    "cache-backend",
    "cache-dir",
    "cache-ttl",
    "cf-params",
    "check-namespaces",
    "checks-bundle-repository",
    "commit",
    "compliance",
    "config",
    "config-check",
    "config-data",
    "config-file-schemas",
    "config-policy",
    "custom-headers",
    "db-repository",
    "detection-priority",
    "distro",
    "docker-host",
    "enable-modules",
    "exclude-kinds",
    "exclude-namespaces",
    "exclude-nodes",
    "exit-code",
    "exit-on-eol",
    "file-patterns",
    "format",
    "helm-api-versions",
    "helm-kube-version",
    "helm-set",
    "helm-set-file",
    "helm-set-string",
    "helm-values",
    "ignore-policy",
    "ignore-status",
    "ignored-licenses",
    "ignorefile",
    "image-config-scanners",
    "image-src",
    "include-kinds",
    "include-namespaces",
    "input",
    "java-db-repository",
    "k8s-version",
    "kubeconfig",
    "license-confidence-level",
    "listen",
    "max-image-size",
    "misconfig-scanners",
    "module-dir",
    "node-collector-imageref",
    "node-collector-namespace",
    "output",
    "output-plugin-arg",
    "parallel",
    "password",
    "pkg-relationships",
    "pkg-types",
    "platform",
    "podman-host",
    "policy",
    "policy-namespaces",
    "qps",
    "raw-config-scanners",
    "redis-ca",
    "redis-cert",
    "redis-key",
    "registry-token",
    "rego-error-limit",
    "rekor-url",
    "render-cause",
    "report",
    "sbom-sources",
    "scanners",
    "secret-config",
    "security-checks",
    "server",
    "severity",
    "skip-dirs",
    "skip-files",
    "table-mode",
    "tag",
    "template",
    "tf-vars",
    "timeout",
    "token",
    "token-header",
    "tolerations",
    "username",
    "vex",
    "vuln-severity-source",
    "vuln-type",
];

/// trivy's one-letter flags and the long flag each stands for.
const SHORT_FLAGS: &[(u8, &str)] = &[
    (b'c', "config"),
    (b'd', "debug"),
    (b'f', "format"),
    (b'h', "help"),
    (b'o', "output"),
    (b'q', "quiet"),
    (b's', "severity"),
    (b't', "template"),
    (b'v', "version"),
];

/// Prefix of trivy-ecr's own flags; trivy has none that start with it.
pub const OWN_FLAG_PREFIX: &str = "ecr-";

/// trivy-ecr's own flags that are booleans: `--name` alone means true, `--name=false` false,
/// as pflag reads booleans. Every other own flag takes a value.
const OWN_BOOLEAN_FLAGS: &[&str] = &["ecr-github-annotations"];

/// Whether trivy-ecr's own flag `--name` is a boolean (takes no separate value).
pub fn is_own_boolean(long_name: &str) -> bool {
    OWN_BOOLEAN_FLAGS.contains(&long_name)
}

/// Whether trivy's flag `--name` takes a value.
pub fn takes_value(long_name: &str) -> bool {
    VALUE_FLAGS.binary_search(&long_name).is_ok()
}

fn short_to_long(short: u8) -> Option<&'static str> {
    SHORT_FLAGS
        .iter()
        .find(|(s, _)| *s == short)
        .map(|(_, l)| *l)
}

/// One flag as trivy will understand it, whatever spelling the user chose.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Flag {
    /// The long name without dashes (`-f` is reported as `format`).
    pub name: String,
    /// The value, for flags given `=value` or taking the next token.
    pub value: Option<OsString>,
}

/// One unit of the command line: a token or a flag with its separate value token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Arg {
    /// One or more of trivy's flags (several only for grouped short flags like `-qf json`),
    /// with the exact tokens the user wrote for them.
    Trivy {
        flags: Vec<Flag>,
        raw: Vec<OsString>,
    },
    /// A flag of trivy-ecr's own (`--ecr-...`), never shown to trivy.
    Own(Flag),
    /// A subcommand name, target or other positional argument.
    Positional(OsString),
    /// `--` and everything after it, verbatim.
    Rest(Vec<OsString>),
}

impl Arg {
    /// The tokens that reproduce this argument on a command line (empty for own flags).
    pub fn tokens(&self) -> Vec<OsString> {
        match self {
            Arg::Trivy { raw, .. } => raw.clone(),
            Arg::Own(_) => Vec::new(),
            Arg::Positional(p) => vec![p.clone()],
            Arg::Rest(rest) => rest.clone(),
        }
    }
}

/// Splits a command line into [`Arg`]s. Never fails: anything unusual is kept as written.
pub fn parse(tokens: &[OsString]) -> Vec<Arg> {
    let mut args = Vec::new();
    let mut i = 0;
    while i < tokens.len() {
        let token = &tokens[i];
        let bytes = token.as_bytes();
        i += 1;
        if bytes == b"--" {
            args.push(Arg::Rest(tokens[i - 1..].to_vec()));
            break;
        }
        if let Some(body) = bytes.strip_prefix(b"--") {
            let (name, inline) = split_inline_value(body);
            let name = String::from_utf8_lossy(name).into_owned();
            let own = name.starts_with(OWN_FLAG_PREFIX);
            let needs_value = if own {
                !is_own_boolean(&name)
            } else {
                takes_value(&name)
            };
            let mut raw = vec![token.clone()];
            let value = match inline {
                Some(v) => Some(v),
                None if needs_value && i < tokens.len() => {
                    raw.push(tokens[i].clone());
                    i += 1;
                    Some(tokens[i - 1].clone())
                }
                None => None,
            };
            let flag = Flag { name, value };
            args.push(if own {
                Arg::Own(flag)
            } else {
                Arg::Trivy {
                    flags: vec![flag],
                    raw,
                }
            });
            continue;
        }
        if bytes.len() > 1 && bytes[0] == b'-' {
            let (flags, consumed_next) = parse_short_group(&bytes[1..], tokens.get(i));
            let mut raw = vec![token.clone()];
            if consumed_next {
                raw.push(tokens[i].clone());
                i += 1;
            }
            args.push(Arg::Trivy { flags, raw });
            continue;
        }
        args.push(Arg::Positional(token.clone()));
    }
    args
}

fn split_inline_value(body: &[u8]) -> (&[u8], Option<OsString>) {
    match body.iter().position(|&b| b == b'=') {
        Some(eq) => (
            &body[..eq],
            Some(OsStr::from_bytes(&body[eq + 1..]).to_os_string()),
        ),
        None => (body, None),
    }
}

/// `-qf json`, `-fjson`, `-f=json`: pflag's rules for grouped one-letter flags.
fn parse_short_group(group: &[u8], next: Option<&OsString>) -> (Vec<Flag>, bool) {
    let mut flags = Vec::new();
    let mut pos = 0;
    while pos < group.len() {
        let letter = group[pos];
        pos += 1;
        let name = short_to_long(letter)
            .map(str::to_owned)
            .unwrap_or_else(|| (letter as char).to_string());
        if !takes_value(&name) {
            // `-d=false` style booleans.
            if group.get(pos) == Some(&b'=') {
                let value = OsStr::from_bytes(&group[pos + 1..]).to_os_string();
                flags.push(Flag {
                    name,
                    value: Some(value),
                });
                return (flags, false);
            }
            flags.push(Flag { name, value: None });
            continue;
        }
        // pflag: `-f=arg` is `arg`, but `-f=` alone is the value `=` (like `-farg`).
        let rest = match &group[pos..] {
            [b'=', value @ ..] if !value.is_empty() => value,
            rest => rest,
        };
        if !rest.is_empty() {
            flags.push(Flag {
                name,
                value: Some(OsStr::from_bytes(rest).to_os_string()),
            });
            return (flags, false);
        }
        return match next {
            Some(value) => {
                flags.push(Flag {
                    name,
                    value: Some(value.clone()),
                });
                (flags, true)
            }
            None => {
                flags.push(Flag { name, value: None });
                (flags, false)
            }
        };
    }
    (flags, false)
}

/// Writes one flag back out in its canonical long form.
pub fn flag_tokens(flag: &Flag) -> Vec<OsString> {
    let mut out = vec![OsString::from(format!("--{}", flag.name))];
    if let Some(value) = &flag.value {
        if takes_value(&flag.name) {
            out.push(value.clone());
        } else {
            let mut joined = out.pop().unwrap_or_default();
            joined.push("=");
            joined.push(value);
            out.push(joined);
        }
    }
    out
}

/// Rebuilds the tokens of a [`Arg::Trivy`] after dropping or replacing some of its flags.
/// Unchanged arguments keep their exact original spelling.
pub fn rewrite_flags(arg: &Arg, mut edit: impl FnMut(&Flag) -> FlagEdit) -> Vec<OsString> {
    let Arg::Trivy { flags, raw } = arg else {
        return arg.tokens();
    };
    let edits: Vec<FlagEdit> = flags.iter().map(&mut edit).collect();
    if edits.iter().all(|e| matches!(e, FlagEdit::Keep)) {
        return raw.clone();
    }
    let mut out = Vec::new();
    for (flag, edit) in flags.iter().zip(edits) {
        match edit {
            FlagEdit::Keep => out.extend(flag_tokens(flag)),
            FlagEdit::Drop => {}
            FlagEdit::Replace(new) => out.extend(flag_tokens(&new)),
        }
    }
    out
}

/// What to do with one of the user's flags when writing trivy's command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FlagEdit {
    Keep,
    Drop,
    Replace(Flag),
}

/// Is `value` a false boolean as pflag spells it (`--flag=false`)?
pub fn is_false(value: &Option<OsString>) -> bool {
    matches!(value.as_deref().and_then(OsStr::to_str), Some(v) if matches!(v, "false" | "0" | "f" | "F" | "FALSE" | "False"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(v: &[&str]) -> Vec<OsString> {
        v.iter().map(OsString::from).collect()
    }

    fn flag(name: &str, value: Option<&str>) -> Flag {
        Flag {
            name: name.into(),
            value: value.map(OsString::from),
        }
    }

    #[test]
    fn value_table_is_sorted_for_binary_search() {
        let mut sorted = VALUE_FLAGS.to_vec();
        sorted.sort_unstable();
        assert_eq!(sorted, VALUE_FLAGS);
    }

    #[test]
    fn long_flags_in_both_forms() {
        let args = parse(&os(&[
            "image",
            "--db-repository",
            "a",
            "--db-repository=b,c",
            "--ignore-unfixed",
            "alpine",
        ]));
        assert_eq!(
            args,
            vec![
                Arg::Positional("image".into()),
                Arg::Trivy {
                    flags: vec![flag("db-repository", Some("a"))],
                    raw: os(&["--db-repository", "a"])
                },
                Arg::Trivy {
                    flags: vec![flag("db-repository", Some("b,c"))],
                    raw: os(&["--db-repository=b,c"])
                },
                Arg::Trivy {
                    flags: vec![flag("ignore-unfixed", None)],
                    raw: os(&["--ignore-unfixed"])
                },
                Arg::Positional("alpine".into()),
            ]
        );
    }

    #[test]
    fn values_that_look_like_flags_stay_values() {
        let args = parse(&os(&[
            "fs",
            "--output",
            "--format",
            "--skip-dirs",
            "-x",
            ".",
        ]));
        assert_eq!(
            args[1],
            Arg::Trivy {
                flags: vec![flag("output", Some("--format"))],
                raw: os(&["--output", "--format"])
            }
        );
        assert_eq!(
            args[2],
            Arg::Trivy {
                flags: vec![flag("skip-dirs", Some("-x"))],
                raw: os(&["--skip-dirs", "-x"])
            }
        );
        assert_eq!(args[3], Arg::Positional(".".into()));
    }

    #[test]
    fn grouped_and_attached_short_flags() {
        let args = parse(&os(&["-qf", "json", "-ojson.out", "-s=HIGH", "-d=false"]));
        assert_eq!(
            args,
            vec![
                Arg::Trivy {
                    flags: vec![flag("quiet", None), flag("format", Some("json"))],
                    raw: os(&["-qf", "json"])
                },
                Arg::Trivy {
                    flags: vec![flag("output", Some("json.out"))],
                    raw: os(&["-ojson.out"])
                },
                Arg::Trivy {
                    flags: vec![flag("severity", Some("HIGH"))],
                    raw: os(&["-s=HIGH"])
                },
                Arg::Trivy {
                    flags: vec![flag("debug", Some("false"))],
                    raw: os(&["-d=false"])
                },
            ]
        );
    }

    #[test]
    fn an_equals_sign_alone_is_the_value_as_pflag_reads_it() {
        // trivy 0.76: `trivy fs -o= d` writes its report to a file named `=`.
        let args = parse(&os(&["-o=", "--ecr-junit", "j.xml"]));
        assert_eq!(
            args[0],
            Arg::Trivy {
                flags: vec![flag("output", Some("="))],
                raw: os(&["-o="])
            }
        );
        assert_eq!(args[1], Arg::Own(flag("ecr-junit", Some("j.xml"))));
        assert_eq!(
            parse(&os(&["-qo=="]))[0],
            Arg::Trivy {
                flags: vec![flag("quiet", None), flag("output", Some("="))],
                raw: os(&["-qo=="])
            }
        );
    }

    #[test]
    fn double_dash_ends_parsing() {
        let args = parse(&os(&["image", "--", "--db-repository", "x"]));
        assert_eq!(args[1], Arg::Rest(os(&["--", "--db-repository", "x"])));
    }

    #[test]
    fn own_flags_take_a_value_except_booleans() {
        let args = parse(&os(&[
            "--ecr-fail-on",
            "HIGH",
            "--ecr-max-wait=30s",
            "--ecr-github-annotations",
            "image",
            "--ecr-github-annotations=false",
            "--ecr-junit",
            "j.xml",
        ]));
        assert_eq!(args[0], Arg::Own(flag("ecr-fail-on", Some("HIGH"))));
        assert_eq!(args[1], Arg::Own(flag("ecr-max-wait", Some("30s"))));
        assert_eq!(args[2], Arg::Own(flag("ecr-github-annotations", None)));
        assert_eq!(args[3], Arg::Positional("image".into()));
        assert_eq!(
            args[4],
            Arg::Own(flag("ecr-github-annotations", Some("false")))
        );
        assert_eq!(args[5], Arg::Own(flag("ecr-junit", Some("j.xml"))));
    }

    #[test]
    fn value_flag_at_the_end_has_no_value() {
        let args = parse(&os(&["image", "--format"]));
        assert_eq!(
            args[1],
            Arg::Trivy {
                flags: vec![flag("format", None)],
                raw: os(&["--format"])
            }
        );
    }

    #[test]
    fn non_utf8_values_survive() {
        use std::os::unix::ffi::OsStringExt;
        let odd = OsString::from_vec(vec![b'f', 0xff, b'o']);
        let tokens = vec![OsString::from("--output"), odd.clone()];
        let args = parse(&tokens);
        assert_eq!(args[0].tokens(), tokens);
    }

    #[test]
    fn rewriting_keeps_untouched_spelling_and_splits_groups() {
        let arg = &parse(&os(&["-qf", "json"]))[0];
        assert_eq!(rewrite_flags(arg, |_| FlagEdit::Keep), os(&["-qf", "json"]));
        assert_eq!(
            rewrite_flags(arg, |f| if f.name == "format" {
                FlagEdit::Drop
            } else {
                FlagEdit::Keep
            }),
            os(&["--quiet"])
        );
    }
}
