//! trivy-ecr on the rig with native DB downloads: a scene (registry with the fixture's DB and
//! image, fault proxies posing as mirrors) and hermetic runs of the trivy-ecr binary.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use crate::rig;
use rig::image::Image;
use rig::proxy::FaultProxy;
use rig::registry::Registry;
use rig::trivy_db::{self, DbSpec};

/// A registry holding the fixture's DB and image, and a proxy in front of it posing as a mirror.
pub struct Scene {
    pub registry: Registry,
}

impl Scene {
    pub fn start() -> Scene {
        let registry = Registry::start();
        let client = registry.client();
        client.push_trivy_db("trivy-db", "2", &trivy_db::db_tar_gz(&DbSpec::fresh()));
        Image::alpine().push(&client, "app", "latest");
        Scene { registry }
    }

    pub fn mirror(&self) -> FaultProxy {
        FaultProxy::start(self.registry.addr())
    }

    pub fn image(&self) -> String {
        format!("{}/app:latest", self.registry.host_port())
    }
}

pub fn db_repo(mirror: &FaultProxy) -> String {
    format!("{}/trivy-db:2", mirror.host_port())
}

/// One hermetic trivy-ecr run: its own home and cache, only what the test sets in the env.
pub struct Run {
    pub dir: tempfile::TempDir,
}

impl Run {
    pub fn new() -> Run {
        Run {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    pub fn cache(&self) -> PathBuf {
        self.dir.path().join("cache")
    }

    pub fn command(&self, chain: &[String], args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_trivy-ecr"));
        cmd.env_clear()
            .env("PATH", "/usr/bin:/bin")
            .env("HOME", self.dir.path())
            .env("TRIVY_ECR_TRIVY", rig::tools::trivy())
            .env("TRIVY_ECR_DB_REPOSITORIES", chain.join(","))
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .args(args);
        cmd
    }

    pub fn scan(&self, chain: &[String], image: &str, env: &[(&str, &str)]) -> Output {
        let cache = self.cache();
        let mut cmd = self.command(
            chain,
            &[
                "image",
                "--cache-dir",
                cache.to_str().unwrap(),
                "--skip-version-check",
                "--disable-telemetry",
                "--scanners",
                "vuln",
                "--format",
                "json",
                "--output",
                "report.json",
                image,
            ],
        );
        cmd.envs(env.iter().copied());
        output_within(cmd, Duration::from_secs(120))
    }

    pub fn report(&self) -> rig::report::Report {
        rig::report::Report::parse(
            &std::fs::read_to_string(self.dir.path().join("report.json")).unwrap(),
        )
    }
}

pub fn output_within(mut cmd: Command, limit: Duration) -> Output {
    let ran = rig::run::run_bounded(&mut cmd, limit);
    Output {
        status: ran.status,
        stdout: ran.stdout.into_bytes(),
        stderr: ran.stderr.into_bytes(),
    }
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

pub fn blob_gets(mirror: &FaultProxy) -> usize {
    mirror
        .requests()
        .iter()
        .filter(|r| r.method == "GET" && r.path.contains("/trivy-db/blobs/"))
        .count()
}

pub fn staging_leftovers(cache: &Path) -> Vec<String> {
    std::fs::read_dir(cache)
        .map(|dir| {
            dir.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with(".trivy-ecr-staging"))
                .collect()
        })
        .unwrap_or_default()
}
