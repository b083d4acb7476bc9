//! Runs trivy-ecr, or bare trivy with the same arguments for comparison, hermetically: its own
//! cache, home and working directory in a temp dir, an environment holding only `PATH`, `HOME`
//! and what the test sets (no `TRIVY_*`, no proxies, no docker credentials), and a deadline.

use crate::rig::run::{Background, Ran, run_bounded, run_with_deadline};
use crate::rig::tools;
use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// Deadline for one run of trivy-ecr or trivy (scans of the fixture take about a second; runs
/// against rate-limited mirrors a few more).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(120);

/// Which program a [`Cli`] runs.
#[derive(Debug, Clone, Copy)]
pub enum Program<'a> {
    /// Bare trivy.
    Trivy(&'a Path),
    /// trivy-ecr (see [`trivy_ecr_bin`]) running this trivy (`TRIVY_ECR_TRIVY`).
    TrivyEcr(&'a Path),
}

/// A temp dir with `home/`, `work/` (the working directory) and `cache/` (trivy's cache dir).
pub struct Sandbox {
    dir: tempfile::TempDir,
}

impl Default for Sandbox {
    fn default() -> Self {
        Sandbox::new()
    }
}

impl Sandbox {
    pub fn new() -> Sandbox {
        let dir = tempfile::Builder::new()
            .prefix("rig-sandbox-")
            .tempdir()
            .expect("sandbox temp dir");
        for sub in ["home", "work"] {
            std::fs::create_dir(dir.path().join(sub)).expect("sandbox dirs");
        }
        Sandbox { dir }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The working directory (where a `trivy.yaml` would be read from).
    pub fn work_dir(&self) -> PathBuf {
        self.dir.path().join("work")
    }

    /// The `--cache-dir` [`Sandbox::scan`] passes.
    pub fn cache_dir(&self) -> PathBuf {
        self.dir.path().join("cache")
    }

    /// `program` with the sandbox's environment and working directory, no arguments.
    pub fn command(&self, program: Program<'_>) -> Cli {
        let binary = match program {
            Program::Trivy(trivy) => trivy.to_path_buf(),
            Program::TrivyEcr(_) => trivy_ecr_bin(),
        };
        let mut cmd = Command::new(binary);
        cmd.env_clear()
            .env("PATH", "/usr/bin:/bin")
            .env("HOME", self.dir.path().join("home"))
            .current_dir(self.work_dir());
        if let Program::TrivyEcr(trivy) = program {
            // These suites prove the wrapper around trivy's own downloads (mirror chains injected,
            // whole runs retried); trivy-ecr's native download has its own suites
            // (e2e_prefetch, e2e_faults). A test may set it back on.
            cmd.env("TRIVY_ECR_TRIVY", trivy)
                .env("TRIVY_ECR_PREFETCH", "off");
        }
        Cli {
            cmd,
            timeout: DEFAULT_TIMEOUT,
        }
    }

    /// `image --cache-dir <cache> --no-progress --skip-version-check --disable-telemetry
    /// --timeout 60s --image-src remote <extra...> <image>`.
    pub fn scan(&self, program: Program<'_>, image: &str, extra: &[&str]) -> Cli {
        let mut cli = self.command(program);
        cli.arg("image")
            .arg("--cache-dir")
            .arg(self.cache_dir())
            .args([
                "--no-progress",
                "--skip-version-check",
                "--disable-telemetry",
                "--timeout",
                "60s",
                "--image-src",
                "remote",
            ])
            .args(extra)
            .arg(image);
        cli
    }
}

/// A prepared command line.
pub struct Cli {
    cmd: Command,
    timeout: Duration,
}

impl Cli {
    pub fn arg(&mut self, arg: impl AsRef<OsStr>) -> &mut Self {
        self.cmd.arg(arg);
        self
    }

    pub fn args<I: IntoIterator<Item = S>, S: AsRef<OsStr>>(&mut self, args: I) -> &mut Self {
        self.cmd.args(args);
        self
    }

    pub fn env(&mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> &mut Self {
        self.cmd.env(key, value);
        self
    }

    pub fn timeout(&mut self, timeout: Duration) -> &mut Self {
        self.timeout = timeout;
        self
    }

    /// The arguments, for messages.
    pub fn argv(&self) -> Vec<OsString> {
        self.cmd.get_args().map(OsStr::to_owned).collect()
    }

    /// The underlying command (for callers that spawn it themselves, e.g. the benchmark).
    pub fn command_mut(&mut self) -> &mut Command {
        &mut self.cmd
    }

    /// Runs it; panics if it is still running after the timeout (120 s by default).
    pub fn run(&mut self) -> Ran {
        run_bounded(&mut self.cmd, self.timeout)
    }

    /// Starts it in the background (a server); dropping the handle kills it.
    pub fn spawn(&mut self) -> Background {
        Background::spawn(&mut self.cmd)
    }

    /// Runs it, killing it at `deadline` (see [`Ran::killed_at_deadline`]).
    pub fn run_with_deadline(&mut self, deadline: Duration) -> Ran {
        run_with_deadline(&mut self.cmd, deadline)
    }
}

/// The trivy-ecr binary under test: `$TRIVY_ECR_BIN`; in integration tests cargo's
/// `CARGO_BIN_EXE_trivy-ecr`; elsewhere (examples) `trivy-ecr` in the target directory of the
/// running executable (`target/<profile>/examples/x` → `target/<profile>/trivy-ecr`).
pub fn trivy_ecr_bin() -> PathBuf {
    if let Some(path) = std::env::var_os("TRIVY_ECR_BIN") {
        return PathBuf::from(path);
    }
    if let Some(path) = option_env!("CARGO_BIN_EXE_trivy-ecr") {
        return PathBuf::from(path);
    }
    let exe = std::env::current_exe().expect("current exe");
    let path = exe
        .ancestors()
        .nth(2)
        .map(|profile| profile.join("trivy-ecr"))
        .expect("target dir");
    assert!(
        path.is_file(),
        "{} missing: build it first (cargo build, with --release for a release example) or \
         point TRIVY_ECR_BIN at it; {}",
        path.display(),
        tools::INSTALL_HINT
    );
    path
}
