//! Runs bare trivy hermetically: its own cache dir and working dir in a temp dir (so no
//! `trivy.yaml`/`.trivyignore` or user cache leaks in), no proxy or `TRIVY_*` variables from the
//! environment, no telemetry or version check, JSON output, and a deadline.

use crate::rig::run::{Ran, run_bounded, run_with_deadline};
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// Deadline for one trivy run; scans of the fixture take about a second.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(90);

/// A prepared `trivy image` command plus the temp dir holding its cache and working dir.
pub struct TrivyScan {
    cmd: Command,
    workdir: tempfile::TempDir,
    timeout: Duration,
}

impl TrivyScan {
    /// `trivy image --cache-dir <tmp>/cache --db-repository R... --format json --no-progress
    /// --skip-version-check --disable-telemetry`; add the target with [`TrivyScan::remote`] or
    /// [`TrivyScan::input`].
    pub fn image(trivy: &Path, db_repositories: &[&str]) -> TrivyScan {
        let workdir = tempfile::Builder::new()
            .prefix("rig-trivy-")
            .tempdir()
            .expect("trivy temp dir");
        let mut cmd = Command::new(trivy);
        clean_env(&mut cmd);
        cmd.current_dir(workdir.path())
            .arg("image")
            .arg("--cache-dir")
            .arg(workdir.path().join("cache"));
        for repo in db_repositories {
            cmd.arg("--db-repository").arg(repo);
        }
        cmd.args([
            "--format",
            "json",
            "--no-progress",
            "--skip-version-check",
            "--disable-telemetry",
            "--timeout",
            "60s",
        ]);
        TrivyScan {
            cmd,
            workdir,
            timeout: DEFAULT_TIMEOUT,
        }
    }

    /// Adds one argument.
    pub fn arg(&mut self, arg: impl AsRef<OsStr>) -> &mut Self {
        self.cmd.arg(arg);
        self
    }

    /// Adds arguments.
    pub fn args<I: IntoIterator<Item = S>, S: AsRef<OsStr>>(&mut self, args: I) -> &mut Self {
        self.cmd.args(args);
        self
    }

    /// Scans `reference` straight from its registry (`--image-src remote`).
    pub fn remote(&mut self, reference: &str) -> &mut Self {
        self.cmd.args(["--image-src", "remote", reference]);
        self
    }

    /// Scans a `docker save` archive (`--input`).
    pub fn input(&mut self, archive: &Path) -> &mut Self {
        self.cmd.arg("--input").arg(archive);
        self
    }

    pub fn timeout(&mut self, timeout: Duration) -> &mut Self {
        self.timeout = timeout;
        self
    }

    /// `<tmp>/cache`, the `--cache-dir` given to trivy.
    pub fn cache_dir(&self) -> PathBuf {
        self.workdir.path().join("cache")
    }

    /// Runs trivy; panics if it is still running after the timeout (90 s by default).
    pub fn run(&mut self) -> Ran {
        run_bounded(&mut self.cmd, self.timeout)
    }

    /// Runs trivy, killing it if it is still running after `deadline` (see
    /// [`Ran::killed_at_deadline`]), for tests that expect a hang.
    pub fn run_with_deadline(&mut self, deadline: Duration) -> Ran {
        run_with_deadline(&mut self.cmd, deadline)
    }
}

/// Removes what could make a child trivy leave loopback or read the developer's settings.
pub fn clean_env(cmd: &mut Command) {
    for (key, _) in std::env::vars_os() {
        let k = key.to_string_lossy();
        if k.starts_with("TRIVY_") || k.to_ascii_lowercase().ends_with("_proxy") {
            cmd.env_remove(&key);
        }
    }
}
