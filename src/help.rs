//! `trivy-ecr --help` (trivy's help, then trivy-ecr's own options and exit codes) and
//! `trivy-ecr --version` (both versions).

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use crate::exit_status::{EXIT_CODE_TABLE, ExitStatus};
use crate::options::SETTINGS;

/// trivy-ecr's own section of the help text.
pub fn own_help() -> String {
    let mut text = String::from(
        "\ntrivy-ecr: a drop-in trivy that downloads the DBs from the ECR Public mirrors, retries\n\
         rate limits across a mirror chain and fails the build on findings at or above a threshold.\n\n\
         trivy-ecr options (flag or environment variable; flags are removed before trivy runs):\n",
    );
    for s in SETTINGS {
        text.push_str(&format!(
            "  {} {}\n  {}\n      {} (default: {})\n",
            s.flag, s.value, s.env, s.meaning, s.default
        ));
    }
    text.push_str(
        "\ntrivy-ecr's own commands:\n\
         \x20 trivy-ecr db pull [--java] [--checks]   download the DBs into trivy's cache if stale\n\
         \x20 trivy-ecr db status                     what the cache holds, its age, its source\n\
         \x20 trivy-ecr db mirror --to REGISTRY/PREFIX copy the DB artifacts into your own registry\n\
         \x20 trivy-ecr doctor                        check trivy, every mirror, credentials and the cache\n",
    );
    text.push_str("\nExit codes:\n");
    for (code, meaning) in EXIT_CODE_TABLE {
        text.push_str(&format!("  {code:<6} {meaning}\n"));
    }
    text
}

/// Parses the arguments of one of trivy-ecr's own commands (`db`, `doctor`). `--help` prints
/// clap's help (exit 0); a usage error is one line naming the reason and where to read more
/// (exit 2).
pub fn parse_command<T: clap::Parser>(
    name: &str,
    args: &[std::ffi::OsString],
) -> Result<T, ExitStatus> {
    let argv = std::iter::once(std::ffi::OsString::from(format!("trivy-ecr {name}")))
        .chain(args.iter().cloned());
    match T::try_parse_from(argv) {
        Ok(parsed) => Ok(parsed),
        Err(err) if !err.use_stderr() => {
            let _ = err.print();
            Err(ExitStatus::Success)
        }
        Err(err) => {
            let text = err.to_string();
            // clap names a missing argument on the line after the message.
            let line = text
                .lines()
                .take_while(|l| !l.starts_with("Usage:"))
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .fold(String::new(), |joined, l| match joined.as_str() {
                    "" => l.to_string(),
                    _ if joined.ends_with(':') => format!("{joined} {l}"),
                    _ => format!("{joined}; {l}"),
                });
            let line = line.trim_start_matches("error: ");
            crate::say!("error: {name}: {line}; see trivy-ecr {name} --help");
            Err(ExitStatus::Usage)
        }
    }
}

/// Prints trivy's help followed by trivy-ecr's section.
pub fn print_help(trivy: Option<&Path>, out: &mut dyn Write) -> ExitStatus {
    if let Some(trivy) = trivy {
        if let Ok(output) = Command::new(trivy)
            .arg("--help")
            .stdin(Stdio::null())
            .output()
        {
            let _ = out.write_all(&output.stdout);
        }
    } else {
        let _ = writeln!(
            out,
            "(trivy was not found: set TRIVY_ECR_TRIVY or put trivy on PATH)"
        );
    }
    let _ = out.write_all(own_help().as_bytes());
    let _ = out.flush();
    ExitStatus::Success
}

/// Prints trivy-ecr's version, then trivy's.
pub fn print_version(trivy: Option<&Path>) -> ExitStatus {
    crate::out(format_args!("trivy-ecr {}\n", env!("CARGO_PKG_VERSION")));
    let Some(trivy) = trivy else {
        crate::out(format_args!(
            "trivy: not found (set TRIVY_ECR_TRIVY or put trivy on PATH)\n"
        ));
        return ExitStatus::TrivyNotStarted;
    };
    match Command::new(trivy)
        .arg("--version")
        .stdin(Stdio::null())
        .status()
    {
        Ok(status) => ExitStatus::PassedThrough(status.code().unwrap_or(1)),
        Err(err) => {
            crate::say!("error: cannot start {}: {err}", trivy.display());
            ExitStatus::TrivyNotStarted
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_help_lists_every_setting_and_exit_code() {
        let text = own_help();
        for s in SETTINGS {
            assert!(text.contains(s.flag) && text.contains(s.env), "{}", s.flag);
        }
        for (code, _) in EXIT_CODE_TABLE {
            assert!(text.contains(code));
        }
    }
}
