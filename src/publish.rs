//! Everything a gated scan hands to CI besides the user's own report, all from the one JSON
//! report trivy already wrote (never a second scan): the JUnit XML (`--ecr-junit`), a copy of
//! the JSON (`--ecr-json`), the GitHub step summary (`$GITHUB_STEP_SUMMARY`) and GitHub
//! annotations (`--ecr-github-annotations`). Runs whatever the verdict, so a failing build
//! still has its test report.

use std::ffi::OsString;
use std::fs::{self, File};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

use crate::github;
use crate::junit;
use crate::options::Options;
use crate::render::{self, RenderError};
use crate::say;
use crate::summary::SummaryInput;
use crate::trivy_args::Flag;

/// Where the CI outputs go, from the settings and the environment.
pub struct Destinations<'a> {
    pub junit: Option<&'a Path>,
    pub json: Option<&'a Path>,
    /// `$GITHUB_STEP_SUMMARY`, set by GitHub Actions in every step.
    pub github_step_summary: Option<PathBuf>,
    pub github_annotations: bool,
}

impl<'a> Destinations<'a> {
    /// `github_step_summary`: the value of `GITHUB_STEP_SUMMARY`, if set.
    pub fn new(options: &'a Options, github_step_summary: Option<OsString>) -> Destinations<'a> {
        Destinations {
            junit: options.junit.as_deref(),
            json: options.json.as_deref(),
            github_step_summary: github_step_summary
                .filter(|p| !p.is_empty())
                .map(PathBuf::from),
            github_annotations: options.github_annotations,
        }
    }
}

/// The CI settings given on the command line of a command trivy-ecr does not gate (it writes no
/// JSON report of its own there, so they cannot apply), as a note for the user; `None` when
/// there are none. Settings from the environment are meant for every command and stay silent.
pub fn unused_note(own_flags: &[Flag]) -> Option<String> {
    let mut named: Vec<String> = Vec::new();
    for flag in own_flags
        .iter()
        .filter(|f| CI_FLAGS.contains(&f.name.as_str()))
    {
        let name = format!("--{}", flag.name);
        if !named.contains(&name) {
            named.push(name);
        }
    }
    (!named.is_empty()).then(|| {
        format!(
            "note: {} {} only to scans trivy-ecr gates; this command's output and exit code are trivy's",
            named.join(", "),
            if named.len() == 1 { "applies" } else { "apply" }
        )
    })
}

/// The settings that only a gated scan can honour.
const CI_FLAGS: &[&str] = &[
    "ecr-baseline",
    "ecr-junit",
    "ecr-json",
    "ecr-github-annotations",
];

/// Writes every requested output; each failure is reported on stderr and the others are still
/// written. Returns whether all were written.
pub fn publish(input: &SummaryInput<'_>, report_path: &Path, to: &Destinations<'_>) -> bool {
    let mut all_written = true;
    let mut failed = |what: String, err: RenderError| {
        let cause = match err {
            RenderError::Write { source, .. } => source.to_string(),
            other => other.to_string(),
        };
        say!("error: cannot write {what}: {cause}");
        all_written = false;
    };
    if let Some(path) = to.junit {
        let baseline = input.baseline.map(|c| c.baseline);
        let written = write_file(path, |file| {
            junit::write(file, input.report, input.fail_on, baseline, input.degraded)
        });
        if let Err(err) = written {
            failed(format!("the JUnit report {}", path.display()), err);
        }
    }
    if let Some(path) = to.json {
        let written = create_parent(path).and_then(|()| {
            render::atomic_write(path, |temp| fs::copy(report_path, temp).map(drop))
        });
        if let Err(err) = written {
            failed(format!("the JSON report {}", path.display()), err);
        }
    }
    if let Some(path) = &to.github_step_summary {
        let section = github::step_summary(input);
        if let Err(source) = github::append_step_summary(path, &section) {
            let what = format!(
                "the GitHub step summary GITHUB_STEP_SUMMARY={}",
                path.display()
            );
            let path = path.display().to_string();
            failed(what, RenderError::Write { path, source });
        }
    }
    if to.github_annotations {
        eprint!("{}", github::annotations(input));
    }
    all_written
}

/// Writes `path` atomically through a buffered writer, creating its directory if needed.
fn write_file(
    path: &Path,
    write: impl FnOnce(&mut BufWriter<File>) -> io::Result<()>,
) -> Result<(), RenderError> {
    create_parent(path)?;
    render::atomic_write(path, |temp| {
        let mut file = BufWriter::new(File::create(temp)?);
        write(&mut file)?;
        file.flush()
    })
}

/// `mkdir -p` of the file's directory (`reports/` in a CodeBuild buildspec need not exist).
fn create_parent(path: &Path) -> Result<(), RenderError> {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => {
            fs::create_dir_all(dir).map_err(|source| RenderError::Write {
                path: path.display().to_string(),
                source,
            })
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ci_flags_on_an_ungated_command_get_a_note() {
        let flag = |name: &str| Flag {
            name: name.into(),
            value: Some("x".into()),
        };
        assert_eq!(unused_note(&[flag("ecr-fail-on")]), None);
        assert_eq!(
            unused_note(&[
                flag("ecr-junit"),
                flag("ecr-log"),
                flag("ecr-json"),
                flag("ecr-junit")
            ])
            .unwrap(),
            "note: --ecr-junit, --ecr-json apply only to scans trivy-ecr gates; this command's output and exit code are trivy's"
        );
    }
}
