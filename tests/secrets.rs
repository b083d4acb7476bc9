//! No secret trivy-ecr is handed ever shows up in anything it prints or writes: a registry
//! password in the docker config, `--password` / `--registry-token`, `TRIVY_PASSWORD`,
//! `AWS_SECRET_ACCESS_KEY`, `TRIVY_ECR_REGISTRY_PASSWORD`; at every log level; on the
//! successful path (native download through token auth, real trivy, every CI output) and
//! through failures (a 401 mirror, a refused mirror, trivy downloading and failing itself).

mod rig;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use base64::Engine;
use rig::image::Image;
use rig::proxy::{Fault, FaultProxy, When, refused_addr};
use rig::registry::Registry;
use rig::run::{Ran, run_bounded};
use rig::trivy_db::{self, DbSpec};

const DOCKER_PASSWORD: &str = "dockercfg-S3cret-1";
const FLAG_PASSWORD: &str = "flag-pw-S3cret-2";
const FLAG_TOKEN: &str = "flag-token-S3cret-3";
const ENV_PASSWORD: &str = "env-pw-S3cret-4";
const AWS_SECRET: &str = "aws-S3cret-5";
const ECR_PASSWORD: &str = "ecr-registry-S3cret-6";
const ENV_TOKEN: &str = "env-token-S3cret-7";

/// Every secret, and the encodings in which it travels (Basic auth, the docker config).
fn needles() -> Vec<String> {
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let mut needles: Vec<String> = [
        DOCKER_PASSWORD,
        FLAG_PASSWORD,
        FLAG_TOKEN,
        ENV_PASSWORD,
        AWS_SECRET,
        ECR_PASSWORD,
        ENV_TOKEN,
    ]
    .map(str::to_owned)
    .to_vec();
    needles.push(b64(&format!("bob:{DOCKER_PASSWORD}")));
    needles.push(b64(&format!("flaguser:{FLAG_PASSWORD}")));
    needles.push(b64(&format!("envuser:{ENV_PASSWORD}")));
    // A common part of all of them, in case one is printed cut or escaped.
    needles.push("S3cret".into());
    needles
}

/// The trivy-ecr log levels a user may pick, the last one asking every library to trace too.
const LEVELS: &[Option<&str>] = &[
    None,
    Some("info"),
    Some("debug"),
    Some("trace"),
    Some("trace,reqwest=trace,hyper=trace,hyper_util=trace,rustls=trace"),
];

struct Scene {
    registry: Registry,
}

impl Scene {
    fn start() -> Scene {
        let registry = Registry::start();
        let client = registry.client();
        client.push_trivy_db("trivy-db", "2", &trivy_db::db_tar_gz(&DbSpec::fresh()));
        Image::alpine().push(&client, "app", "latest");
        Scene { registry }
    }

    fn image(&self) -> String {
        format!("{}/app:latest", self.registry.host_port())
    }
}

/// One hermetic run directory with a docker config holding a password for `registries`.
struct Run {
    dir: tempfile::TempDir,
}

impl Run {
    fn new(registries: &[String], config_text: Option<String>) -> Run {
        let dir = tempfile::tempdir().unwrap();
        let docker = dir.path().join(".docker");
        std::fs::create_dir_all(&docker).unwrap();
        let auth =
            base64::engine::general_purpose::STANDARD.encode(format!("bob:{DOCKER_PASSWORD}"));
        let auths: Vec<String> = registries
            .iter()
            .map(|r| format!(r#""{r}":{{"auth":"{auth}"}}"#))
            .collect();
        let text = config_text.unwrap_or_else(|| format!(r#"{{"auths":{{{}}}}}"#, auths.join(",")));
        std::fs::write(docker.join("config.json"), text).unwrap();
        Run { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn trivy_ecr(&self, level: Option<&str>, env: &[(&str, &str)], args: &[&str]) -> Ran {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_trivy-ecr"));
        cmd.env_clear()
            .env("PATH", "/usr/bin:/bin")
            .env("HOME", self.dir.path())
            .env("TRIVY_ECR_TRIVY", rig::tools::trivy())
            .env("TRIVY_USERNAME", "envuser")
            .env("TRIVY_PASSWORD", ENV_PASSWORD)
            .env("TRIVY_REGISTRY_TOKEN", ENV_TOKEN)
            .env("AWS_ACCESS_KEY_ID", "AKIAEXAMPLE")
            .env("AWS_SECRET_ACCESS_KEY", AWS_SECRET)
            .env("TRIVY_ECR_REGISTRY_PASSWORD", ECR_PASSWORD)
            .env("GITHUB_STEP_SUMMARY", self.path("step-summary.md"))
            .env("TRIVY_ECR_MAX_WAIT", "2s")
            .env("TRIVY_ECR_MAX_ATTEMPTS", "3")
            .env("TRIVY_ECR_MAX_DB_AGE", "0")
            .current_dir(self.dir.path())
            .args(args);
        if let Some(level) = level {
            cmd.env("TRIVY_ECR_LOG", level);
        }
        cmd.envs(env.iter().copied());
        run_bounded(&mut cmd, Duration::from_secs(120))
    }

    /// A gated scan asking for every output, with the credential flags trivy takes.
    fn scan(&self, level: Option<&str>, image: &str, env: &[(&str, &str)]) -> Ran {
        let cache = self.path("cache");
        self.trivy_ecr(
            level,
            env,
            &[
                "image",
                "--cache-dir",
                cache.to_str().unwrap(),
                "--skip-version-check",
                "--disable-telemetry",
                "--scanners",
                "vuln",
                "--username",
                "flaguser",
                "--password",
                FLAG_PASSWORD,
                &format!("--registry-token={FLAG_TOKEN}"),
                "--format",
                "json",
                "--output",
                "report.json",
                "--ecr-junit",
                "junit.xml",
                "--ecr-json",
                "copy.json",
                "--ecr-github-annotations",
                image,
            ],
        )
    }

    /// Fails when any needle is in the run's output or any file it left, but two: the docker
    /// config, which holds the password by design, and the downloaded `trivy.db`, whose bytes
    /// are the rig's blob as pushed (its sha256 is checked): the rig writes it with bbolt-rs
    /// from this test process, whose free pages may carry heap bytes such as these needles.
    fn assert_clean(&self, what: &str, ran: &Ran) {
        let config = self.path(".docker/config.json");
        let db = self.path("cache/db/trivy.db");
        let mut places = vec![
            ("stdout".to_string(), ran.stdout.clone().into_bytes()),
            ("stderr".to_string(), ran.stderr.clone().into_bytes()),
        ];
        for file in files_under(self.dir.path()) {
            if file != config && file != db {
                places.push((file.display().to_string(), std::fs::read(&file).unwrap()));
            }
        }
        for (place, bytes) in &places {
            for needle in needles() {
                assert!(
                    !contains(bytes, needle.as_bytes()),
                    "{what}: a secret ({}…) is in {place}\n{}",
                    &needle[..4],
                    ran.describe()
                );
            }
        }
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        let kind = entry.file_type().unwrap();
        if kind.is_dir() {
            out.extend(files_under(&path));
        } else if kind.is_file() {
            out.push(path);
        }
    }
    out
}

fn scan_and_failure_paths_at(level: Option<&str>) {
    let scene = Scene::start();
    let token_mirror = FaultProxy::start(scene.registry.addr());
    token_mirror.require_token_auth("rig-registry");
    let denied = FaultProxy::start(scene.registry.addr());
    denied.add_rule("/trivy-db/", When::Always, Fault::Unauthorized);
    let refused = refused_addr();
    let registries = [
        token_mirror.host_port(),
        denied.host_port(),
        refused.clone(),
        scene.registry.host_port(),
    ];
    let db = |host: &str| format!("{host}/trivy-db:2");

    // Success: native download with the docker credentials, trivy scans, every output written.
    let run = Run::new(&registries, None);
    let ok = run.scan(
        level,
        &scene.image(),
        &[("TRIVY_ECR_DB_REPOSITORIES", &db(&token_mirror.host_port()))],
    );
    assert_eq!(
        ok.code(),
        Some(1),
        "the fixture's CRITICALs: {}",
        ok.describe()
    );
    assert!(run.path("junit.xml").is_file() && run.path("copy.json").is_file());
    assert!(
        token_mirror
            .requests_to("/token")
            .iter()
            .any(|r| r.auth_scheme.as_deref() == Some("Basic")),
        "the docker credentials were used"
    );
    run.assert_clean("successful scan", &ok);

    // Every mirror fails (401, refused): exit 3 after retries, each error named.
    let run = Run::new(&registries, None);
    let chain = format!("{},{}", db(&denied.host_port()), db(&refused));
    let failed = run.scan(
        level,
        &scene.image(),
        &[("TRIVY_ECR_DB_REPOSITORIES", &chain)],
    );
    assert_eq!(failed.code(), Some(3), "{}", failed.describe());
    run.assert_clean("native download failing", &failed);

    // The same with trivy downloading: trivy's command lines (debug) and its errors.
    let run = Run::new(&registries, None);
    let failed = run.scan(
        level,
        &scene.image(),
        &[
            ("TRIVY_ECR_DB_REPOSITORIES", &chain),
            ("TRIVY_ECR_PREFETCH", "off"),
        ],
    );
    assert_eq!(failed.code(), Some(3), "{}", failed.describe());
    if level.is_some_and(|l| l.starts_with("debug") || l.starts_with("trace")) {
        assert!(
            failed.stderr.contains("--password ***"),
            "trivy's command line is logged, redacted: {}",
            failed.describe()
        );
    }
    run.assert_clean("trivy downloading and failing", &failed);

    // A token service that refuses the docker credentials (warning path) and doctor.
    token_mirror.reject_basic_credentials_at_token();
    let run = Run::new(&registries, None);
    let doctor = run.trivy_ecr(
        level,
        &[(
            "TRIVY_ECR_DB_REPOSITORIES",
            &format!("{},{chain}", db(&token_mirror.host_port())),
        )],
        &["doctor", "--timeout", "2s"],
    );
    assert_eq!(doctor.code(), Some(7), "{}", doctor.describe());
    assert!(
        doctor.stdout.contains("refused the docker credentials"),
        "{}",
        doctor.stdout
    );
    run.assert_clean("doctor", &doctor);
}

#[test]
fn no_secret_at_the_default_log_level() {
    scan_and_failure_paths_at(LEVELS[0]);
}

#[test]
fn no_secret_at_info() {
    scan_and_failure_paths_at(LEVELS[1]);
}

#[test]
fn no_secret_at_debug() {
    scan_and_failure_paths_at(LEVELS[2]);
}

#[test]
fn no_secret_at_trace() {
    scan_and_failure_paths_at(LEVELS[3]);
}

#[test]
fn no_secret_with_every_library_tracing() {
    scan_and_failure_paths_at(LEVELS[4]);
}

#[test]
fn a_docker_config_trivy_ecr_cannot_read_is_reported_without_its_content() {
    let scene = Scene::start();
    let mirror = FaultProxy::start(scene.registry.addr());
    // The auth string written where docker expects an object: a parse error that must not
    // quote it.
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("bob:{DOCKER_PASSWORD}"));
    let broken = format!(r#"{{"auths":{{"{}":"{auth}"}}}}"#, mirror.host_port());
    let run = Run::new(&[], Some(broken));
    let ran = run.trivy_ecr(
        Some("trace"),
        &[(
            "TRIVY_ECR_DB_REPOSITORIES",
            &format!("{}/trivy-db:2", mirror.host_port()),
        )],
        &[
            "db",
            "pull",
            "--cache-dir",
            run.path("cache").to_str().unwrap(),
        ],
    );
    assert_eq!(ran.code(), Some(0), "{}", ran.describe());
    assert!(
        ran.stderr.contains("ignoring unreadable docker config"),
        "{}",
        ran.describe()
    );
    run.assert_clean("unreadable docker config", &ran);
}
