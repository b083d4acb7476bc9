//! trivy-ecr against the fake trivy (`examples/fake_trivy.rs`): a sandbox with its own working
//! directory and record of trivy runs, and a clean environment. Shared by the fast suites.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

pub const REPORT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/report-alpine.json");

/// The fake trivy, built by `cargo test` with the other examples.
pub fn fake_trivy() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let target = exe.parent().unwrap().parent().unwrap();
    let fake = target.join("examples/fake_trivy");
    assert!(
        fake.exists(),
        "{} missing: run plain `cargo test` (it builds the examples)",
        fake.display()
    );
    fake
}

/// One finished trivy-ecr run.
pub struct Run {
    pub output: Output,
    pub elapsed: Duration,
}

impl Run {
    pub fn code(&self) -> i32 {
        self.output.status.code().unwrap_or(-1)
    }
    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.output.stderr).into_owned()
    }
    pub fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.output.stdout).into_owned()
    }
}

/// One test's sandbox: a working directory, the fake's record file, a clean environment.
pub struct Sandbox {
    dir: tempfile::TempDir,
    /// `$HOME`, apart from the working directory (trivy-ecr keeps small state under it).
    home: tempfile::TempDir,
}

impl Default for Sandbox {
    fn default() -> Self {
        Sandbox::new()
    }
}

impl Sandbox {
    pub fn new() -> Sandbox {
        Sandbox {
            dir: tempfile::tempdir().unwrap(),
            home: tempfile::tempdir().unwrap(),
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn file(&self, name: &str) -> PathBuf {
        self.path().join(name)
    }

    pub fn record(&self) -> PathBuf {
        self.file("record.jsonl")
    }

    /// trivy-ecr with the fake trivy (reporting [`REPORT`]) and nothing from the caller's
    /// environment.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_trivy-ecr"));
        cmd.args(args)
            .current_dir(self.path())
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .env("HOME", self.home.path())
            .env("TRIVY_ECR_TRIVY", fake_trivy())
            // The fake downloads nothing; native DB downloads are tested on the rig.
            .env("TRIVY_ECR_PREFETCH", "off")
            .env("FAKE_TRIVY_RECORD", self.record())
            .env("FAKE_TRIVY_REPORT", REPORT)
            .stdin(Stdio::null());
        cmd
    }

    pub fn run(&self, args: &[&str], env: &[(&str, &str)]) -> Run {
        let mut cmd = self.command(args);
        cmd.envs(env.iter().copied());
        let start = Instant::now();
        let output = cmd.output().unwrap();
        Run {
            output,
            elapsed: start.elapsed(),
        }
    }

    /// As [`Sandbox::run`], with the fake reporting `report`.
    pub fn run_with_report(&self, report: &Path, args: &[&str], env: &[(&str, &str)]) -> Run {
        let report = report.to_str().unwrap();
        let mut all = vec![("FAKE_TRIVY_REPORT", report)];
        all.extend_from_slice(env);
        self.run(args, &all)
    }

    /// The argv of every trivy run (not the `--version` probes), with its start time.
    pub fn trivy_runs(&self) -> Vec<(Vec<String>, f64)> {
        std::fs::read_to_string(self.record())
            .unwrap_or_default()
            .lines()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).unwrap();
                let argv: Vec<String> = v["argv"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|a| a.as_str().unwrap().to_string())
                    .collect();
                (argv, v["t"].as_f64().unwrap())
            })
            .filter(|(argv, _)| argv.first().map(String::as_str) != Some("--version"))
            .collect()
    }

    /// The argv of every trivy run, without times.
    pub fn trivy_argvs(&self) -> Vec<Vec<String>> {
        self.trivy_runs()
            .into_iter()
            .map(|(argv, _)| argv)
            .collect()
    }
}
