//! Produces the report the user asked for (format, template, output file) from the one JSON
//! report of a gated scan, never by scanning twice: JSON is copied as is, every other format
//! is rendered by `trivy convert`. Files are written beside their destination and renamed into
//! place, so an existing report is never left half-written.

use std::ffi::OsString;
use std::fs::{self, File};
use std::io::{self, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::invocation::Invocation;
use crate::plan::scanners_from_security_checks;
use crate::supervisor::{RunEnd, SpawnError, Supervisor};
use crate::trivy_args::{Flag, flag_tokens};

/// The user's flags that `trivy convert` understands and that shape the rendered report.
const FLAGS_FOR_CONVERT: &[&str] = &[
    "cacert",
    "cache-dir",
    "config",
    "debug",
    "dependency-tree",
    "ignore-policy",
    "ignorefile",
    "insecure",
    "list-all-pkgs",
    "output-plugin-arg",
    "report",
    "scanners",
    "severity",
    "show-suppressed",
    "table-mode",
    "timeout",
];

/// Where the rendered report goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Destination {
    Stdout,
    File(PathBuf),
    /// `--output plugin=NAME`: handed to trivy as given.
    Plugin(OsString),
}

impl Destination {
    pub fn of(output: Option<&OsString>) -> Destination {
        match output {
            None => Destination::Stdout,
            Some(o) if o.is_empty() => Destination::Stdout,
            Some(o) if o.to_string_lossy().starts_with("plugin=") => Destination::Plugin(o.clone()),
            Some(o) => Destination::File(PathBuf::from(o)),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    #[error("cannot write the report to {path}: {source}")]
    Write { path: String, source: io::Error },
    #[error(
        "trivy convert could not render the {format} report (exit {code}); see its message above"
    )]
    Convert { format: String, code: i32 },
    #[error(transparent)]
    Spawn(#[from] SpawnError),
    #[error("trivy convert did not finish within {} (TRIVY_ECR_TIMEOUT) and was stopped", humantime::format_duration(*.0))]
    TimedOut(std::time::Duration),
    /// trivy-ecr was interrupted while rendering.
    #[error("interrupted by {0}")]
    Interrupted(i32),
}

/// `trivy convert` arguments rendering `report` as the user asked, into `output_path`.
pub fn convert_argv(
    invocation: &Invocation,
    report: &Path,
    output_path: Option<&OsString>,
) -> Vec<OsString> {
    let request = &invocation.output;
    let mut argv: Vec<OsString> = vec!["convert".into(), "--quiet".into()];
    argv.extend(["--format".into(), OsString::from(&request.format)]);
    if let Some(template) = &request.template {
        argv.extend(["--template".into(), template.clone()]);
    }
    if let Some(output) = output_path {
        argv.extend(["--output".into(), output.clone()]);
    }
    let mut scanners_given = false;
    for flag in invocation.trivy_flags() {
        let flag: Flag = if flag.name == "security-checks" {
            scanners_from_security_checks(flag)
        } else {
            flag.clone()
        };
        if FLAGS_FOR_CONVERT.contains(&flag.name.as_str()) {
            scanners_given |= flag.name == "scanners";
            argv.extend(flag_tokens(&flag));
        }
    }
    if !scanners_given && !invocation.scanners_chosen {
        // trivy's default scanners, which convert needs to draw the summary table.
        let default = match &invocation.command {
            crate::invocation::Command::Scan(sub) if sub == "sbom" => "vuln",
            _ => "vuln,secret",
        };
        argv.extend(["--scanners".into(), default.into()]);
    }
    argv.extend(["--exit-code", "0", "--exit-on-eol", "0"].map(OsString::from));
    argv.push(report.as_os_str().to_owned());
    argv
}

/// Writes the user's report from the JSON report at `report`.
pub async fn render(
    supervisor: &mut Supervisor,
    invocation: &Invocation,
    report: &Path,
) -> Result<(), RenderError> {
    let destination = Destination::of(invocation.output.output.as_ref());
    let plain_json = invocation.output.format == "json" && invocation.output.template.is_none();
    match destination {
        Destination::Stdout if plain_json => {
            let mut file = File::open(report).map_err(|e| write_error("stdout", e))?;
            let mut stdout = io::stdout().lock();
            io::copy(&mut file, &mut stdout).map_err(|e| write_error("stdout", e))?;
            stdout.flush().map_err(|e| write_error("stdout", e))
        }
        Destination::File(path) if plain_json => {
            atomic_write(&path, |temp| fs::copy(report, temp).map(|_| ()))
        }
        Destination::Stdout => run_convert(supervisor, invocation, report, None).await,
        Destination::Plugin(spec) => run_convert(supervisor, invocation, report, Some(&spec)).await,
        Destination::File(path) => {
            let (temp, guard) = temp_beside(&path)?;
            run_convert(supervisor, invocation, report, Some(temp.as_os_str())).await?;
            finish_atomic(guard, &temp, &path)
        }
    }
}

async fn run_convert(
    supervisor: &mut Supervisor,
    invocation: &Invocation,
    report: &Path,
    output: Option<&std::ffi::OsStr>,
) -> Result<(), RenderError> {
    let output = output.map(|o| o.to_owned());
    let argv = convert_argv(invocation, report, output.as_ref());
    let outcome = supervisor.run(&argv).await?;
    match outcome.end {
        RunEnd::Exited(0) => Ok(()),
        RunEnd::Exited(code) => Err(RenderError::Convert {
            format: invocation.output.format.clone(),
            code,
        }),
        RunEnd::Killed(signal) => Err(RenderError::Convert {
            format: invocation.output.format.clone(),
            code: 128 + signal,
        }),
        RunEnd::Interrupted(signal) => Err(RenderError::Interrupted(signal)),
        RunEnd::TimedOut(limit) => Err(RenderError::TimedOut(limit)),
    }
}

fn write_error(path: &str, source: io::Error) -> RenderError {
    RenderError::Write {
        path: path.to_string(),
        source,
    }
}

/// A temporary file in the destination's directory (so the final rename is atomic).
fn temp_beside(path: &Path) -> Result<(PathBuf, tempfile::TempPath), RenderError> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "report".into());
    let temp = tempfile::Builder::new()
        .prefix(&format!(".{name}."))
        .suffix(".trivy-ecr.tmp")
        .tempfile_in(&dir)
        .map_err(|e| write_error(&path.display().to_string(), e))?
        .into_temp_path();
    Ok((temp.to_path_buf(), temp))
}

fn finish_atomic(guard: tempfile::TempPath, temp: &Path, path: &Path) -> Result<(), RenderError> {
    let shown = path.display().to_string();
    let file = File::open(temp).map_err(|e| write_error(&shown, e))?;
    file.sync_all().map_err(|e| write_error(&shown, e))?;
    fs::set_permissions(temp, fs::Permissions::from_mode(0o644))
        .map_err(|e| write_error(&shown, e))?;
    guard
        .persist(path)
        .map_err(|e| write_error(&shown, e.error))
}

/// Writes `path` through a temporary file and a rename.
pub fn atomic_write(
    path: &Path,
    write: impl FnOnce(&Path) -> io::Result<()>,
) -> Result<(), RenderError> {
    let (temp, guard) = temp_beside(path)?;
    write(&temp).map_err(|e| write_error(&path.display().to_string(), e))?;
    finish_atomic(guard, &temp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn invocation(argv: &[&str]) -> Invocation {
        let argv: Vec<OsString> = argv.iter().map(OsString::from).collect();
        Invocation::parse(&argv, &|_| None, Path::new("/nonexistent"))
    }

    fn strings(v: Vec<OsString>) -> Vec<String> {
        v.into_iter().map(|s| s.into_string().unwrap()).collect()
    }

    #[test]
    fn convert_gets_the_report_flags_only() {
        let inv = invocation(&[
            "--cache-dir",
            "/c",
            "image",
            "-f",
            "template",
            "-t",
            "@junit.tpl",
            "-o",
            "out.xml",
            "--severity",
            "CRITICAL",
            "--ignore-unfixed",
            "--skip-dirs",
            "x",
            "--exit-code",
            "1",
            "img",
        ]);
        let argv = strings(convert_argv(
            &inv,
            Path::new("/t/r.json"),
            Some(&"/t/out".into()),
        ));
        assert_eq!(
            argv,
            [
                "convert",
                "--quiet",
                "--format",
                "template",
                "--template",
                "@junit.tpl",
                "--output",
                "/t/out",
                "--cache-dir",
                "/c",
                "--severity",
                "CRITICAL",
                "--scanners",
                "vuln,secret",
                "--exit-code",
                "0",
                "--exit-on-eol",
                "0",
                "/t/r.json",
            ]
        );
    }

    #[test]
    fn convert_keeps_chosen_scanners() {
        let inv = invocation(&["image", "--security-checks", "vuln,config", "img"]);
        let argv = strings(convert_argv(&inv, Path::new("r.json"), None));
        assert!(
            argv.windows(2)
                .any(|w| w == ["--scanners", "vuln,misconfig"])
        );
        assert_eq!(argv.iter().filter(|a| *a == "--scanners").count(), 1);
        let sbom = invocation(&["sbom", "bom.json"]);
        let argv = strings(convert_argv(&sbom, Path::new("r.json"), None));
        assert!(argv.windows(2).any(|w| w == ["--scanners", "vuln"]));
    }

    #[test]
    fn destinations() {
        assert_eq!(Destination::of(None), Destination::Stdout);
        assert_eq!(Destination::of(Some(&"".into())), Destination::Stdout);
        assert_eq!(
            Destination::of(Some(&"r.sarif".into())),
            Destination::File("r.sarif".into())
        );
        assert!(matches!(
            Destination::of(Some(&"plugin=x".into())),
            Destination::Plugin(_)
        ));
    }

    #[test]
    fn atomic_write_replaces_whole_or_not_at_all() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("report.json");
        fs::write(&path, "old").unwrap();
        let failed = atomic_write(&path, |_| Err(io::Error::other("boom")));
        assert!(failed.is_err());
        assert_eq!(fs::read_to_string(&path).unwrap(), "old");
        atomic_write(&path, |temp| fs::write(temp, "new")).unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), "new");
        let leftovers: Vec<_> = fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(leftovers.len(), 1);
    }
}
