//! `trivy-ecr doctor` against the rig: a real registry behind fault proxies (healthy, throttled,
//! stalled, token auth), a refused address, the real trivy, and a real cache.

mod rig;

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use rig::proxy::{Fault, FaultProxy, When, refused_addr};
use rig::registry::Registry;
use rig::run::{Ran, run_bounded};
use rig::trivy_db::{self, DbSpec};

/// A registry holding the three artifacts doctor asks for (their manifests are all it reads).
fn registry() -> Registry {
    let registry = Registry::start();
    let client = registry.client();
    let db = trivy_db::db_tar_gz(&DbSpec::fresh());
    client.push_trivy_db("trivy-db", "2", &db);
    client.push_trivy_db("trivy-java-db", "1", &db);
    client.push_trivy_db("trivy-checks", "2", &db);
    registry
}

struct Chains {
    db: Vec<String>,
    java: Vec<String>,
    checks: Vec<String>,
}

impl Chains {
    /// Every chain served by `mirror` alone.
    fn all_on(mirror: &FaultProxy) -> Chains {
        let host = mirror.host_port();
        Chains {
            db: vec![format!("{host}/trivy-db:2")],
            java: vec![format!("{host}/trivy-java-db:1")],
            checks: vec![format!("{host}/trivy-checks:2")],
        }
    }
}

/// A hermetic home: no docker config unless the test writes one, its own cache.
struct Home {
    dir: tempfile::TempDir,
}

impl Home {
    fn new() -> Home {
        Home {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn cache(&self) -> PathBuf {
        self.dir.path().join("cache")
    }

    fn docker_config(&self, json: &str) -> PathBuf {
        let dir = self.dir.path().join(".docker");
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("config.json");
        std::fs::write(&path, json).unwrap();
        path
    }

    fn doctor(&self, chains: &Chains, args: &[&str], env: &[(&str, &str)]) -> Ran {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_trivy-ecr"));
        cmd.env_clear()
            .env("PATH", "/usr/bin:/bin")
            .env("HOME", self.dir.path())
            .env("TRIVY_ECR_TRIVY", rig::tools::trivy())
            .env("TRIVY_CACHE_DIR", self.cache())
            .env("TRIVY_ECR_DB_REPOSITORIES", chains.db.join(","))
            .env("TRIVY_ECR_JAVA_DB_REPOSITORIES", chains.java.join(","))
            .env("TRIVY_ECR_CHECKS_REPOSITORIES", chains.checks.join(","))
            .envs(env.iter().copied())
            .current_dir(self.dir.path())
            .arg("doctor")
            .args(args);
        run_bounded(&mut cmd, Duration::from_secs(60))
    }
}

/// The one line that starts with `verdict` and contains every needle.
fn line<'a>(ran: &'a Ran, verdict: &str, needles: &[&str]) -> &'a str {
    ran.stdout
        .lines()
        .find(|l| l.starts_with(&format!("{verdict:<5} ")) && needles.iter().all(|n| l.contains(n)))
        .unwrap_or_else(|| panic!("no '{verdict}' line with {needles:?}\n{}", ran.describe()))
}

fn fail_lines(ran: &Ran) -> Vec<&str> {
    ran.stdout
        .lines()
        .filter(|l| l.starts_with("FAIL"))
        .collect()
}

#[test]
fn healthy_throttled_stalled_refused_and_token_mirrors_each_get_their_verdict() {
    let registry = registry();
    let healthy = FaultProxy::start(registry.addr());
    let home = Home::new();
    trivy_db::install_into_cache(&home.cache(), &DbSpec::fresh());

    // Everything healthy and a fresh cache: only ok lines, exit 0.
    let ran = home.doctor(&Chains::all_on(&healthy), &[], &[]);
    assert_eq!(ran.code(), Some(0), "{}", ran.describe());
    assert!(fail_lines(&ran).is_empty(), "{}", ran.describe());
    line(
        &ran,
        "ok",
        &["trivy: ", "version 0.76.0", "takes mirror lists"],
    );
    let repo = format!("{}/trivy-db:2", healthy.host_port());
    line(
        &ran,
        "ok",
        &[&format!(
            "vulnerability DB mirror {repo}: manifest: HEAD 200 in "
        )],
    );
    line(
        &ran,
        "ok",
        &[&format!(
            "vulnerability DB mirror {repo}: token: none asked for"
        )],
    );
    line(
        &ran,
        "ok",
        &["vulnerability DB chain: 1 of 1 mirrors serve it now"],
    );
    line(&ran, "ok", &["vulnerability DB cache: fresh"]);
    assert!(
        ran.stdout.contains("\ndoctor: 0 FAIL, 0 warn, "),
        "{}",
        ran.stdout
    );
    // Doctor reads manifests and nothing else: no blob, no write.
    let requests = healthy.requests();
    assert!(
        requests
            .iter()
            .all(|r| r.method == "HEAD" && r.path.contains("/manifests/")),
        "{requests:?}"
    );

    let throttled = FaultProxy::start(registry.addr());
    throttled.add_rule(
        "/trivy-db/",
        When::Always,
        Fault::TooManyRequests {
            retry_after: Some("2".into()),
        },
    );
    let stalled = FaultProxy::start(registry.addr());
    stalled.add_rule("/trivy-db/", When::Always, Fault::Stall);
    let token = FaultProxy::start(registry.addr());
    token.require_token_auth("rig-registry");
    let refused = format!("{}/trivy-db:2", refused_addr());
    let mut chains = Chains::all_on(&healthy);
    chains.db = vec![
        format!("{}/trivy-db:2", throttled.host_port()),
        refused.clone(),
        format!("{}/trivy-db:2", stalled.host_port()),
        format!("{}/trivy-db:2", token.host_port()),
        repo.clone(),
    ];
    let ran = home.doctor(&chains, &["--timeout", "1s"], &[]);
    // Shown with --nocapture: what a user sees.
    println!("{}", ran.stdout);
    assert_eq!(ran.code(), Some(7), "{}", ran.describe());
    assert!(
        ran.elapsed < Duration::from_secs(15),
        "bounded: {:?}",
        ran.elapsed
    );
    let limited = line(
        &ran,
        "warn",
        &[&format!(
            "mirror {}/trivy-db:2: manifest: HEAD 429 in ",
            throttled.host_port()
        )],
    );
    assert!(
        limited.contains("rate limited, retry after 2s; registry limits: retry-after: 2"),
        "{limited}"
    );
    line(
        &ran,
        "FAIL",
        &[
            &format!("mirror {refused}: manifest: connection refused"),
            "fix: check the host and port, or remove it from TRIVY_ECR_DB_REPOSITORIES",
        ],
    );
    line(
        &ran,
        "FAIL",
        &[&format!(
            "mirror {}/trivy-db:2: manifest: no answer within 1s",
            stalled.host_port()
        )],
    );
    line(
        &ran,
        "ok",
        &[&format!(
            "mirror {}/trivy-db:2: token: anonymous token in ",
            token.host_port()
        )],
    );
    line(
        &ran,
        "ok",
        &[&format!(
            "mirror {}/trivy-db:2: manifest: HEAD 200 in ",
            token.host_port()
        )],
    );
    line(
        &ran,
        "ok",
        &["vulnerability DB chain: 2 of 5 mirrors serve it now (from TRIVY_ECR_DB_REPOSITORIES)"],
    );
    assert_eq!(fail_lines(&ran).len(), 2, "{}", ran.stdout);
    assert!(
        ran.stdout.contains("doctor: 2 FAIL, 1 warn, "),
        "{}",
        ran.stdout
    );
    assert_eq!(
        throttled.requests_to("/trivy-db/").len(),
        1,
        "one request per mirror"
    );
}

#[test]
fn a_chain_with_no_mirror_left_and_a_missing_trivy_fail_with_exit_6() {
    let home = Home::new();
    let refused = refused_addr();
    let chains = Chains {
        db: vec![format!("{refused}/trivy-db:2")],
        java: vec![format!("{refused}/trivy-java-db:1")],
        checks: vec![format!("{refused}/trivy-checks:2")],
    };
    let config = home.docker_config("{\"auths\": ");
    let missing = home.dir.path().join("no-trivy");
    let ran = home.doctor(
        &chains,
        &[],
        &[("TRIVY_ECR_TRIVY", missing.to_str().unwrap())],
    );
    assert_eq!(ran.code(), Some(7), "{}", ran.describe());
    line(
        &ran,
        "FAIL",
        &[&format!(
            "trivy: TRIVY_ECR_TRIVY={}: no such file",
            missing.display()
        )],
    );
    line(
        &ran,
        "FAIL",
        &[
            "vulnerability DB chain: none of 1 mirrors serves it now",
            "exit 3",
        ],
    );
    // One registry that does not answer is asked once.
    line(
        &ran,
        "FAIL",
        &[&format!(
            "Java DB mirror {refused}/trivy-java-db:1: not checked: {refused} did not answer for {refused}/trivy-db:2"
        )],
    );
    line(
        &ran,
        "warn",
        &[&format!(
            "docker config: {} cannot be read",
            config.display()
        )],
    );
    line(
        &ran,
        "warn",
        &[
            "vulnerability DB cache: needs a download (not in the cache)",
            "trivy-ecr db pull",
        ],
    );

    // No TRIVY_ECR_TRIVY and no trivy on PATH.
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_trivy-ecr"));
    cmd.env_clear()
        .env("PATH", home.dir.path())
        .env("HOME", home.dir.path())
        .env("TRIVY_ECR_DB_REPOSITORIES", &chains.db[0])
        .env("TRIVY_ECR_JAVA_DB_REPOSITORIES", &chains.java[0])
        .env("TRIVY_ECR_CHECKS_REPOSITORIES", &chains.checks[0])
        .args(["doctor", "--timeout", "1s"]);
    let ran = run_bounded(&mut cmd, Duration::from_secs(30));
    assert_eq!(ran.code(), Some(7), "{}", ran.describe());
    line(
        &ran,
        "FAIL",
        &["trivy: trivy not found on PATH", "TRIVY_ECR_TRIVY"],
    );

    let ran = home.doctor(&chains, &["--bogus"], &[]);
    assert_eq!(ran.code(), Some(2), "usage error: {}", ran.describe());
}

#[test]
fn token_auth_with_docker_credentials_never_prints_them() {
    let registry = registry();
    let mirror = FaultProxy::start(registry.addr());
    mirror.require_token_auth("rig-registry");
    let home = Home::new();
    let password = "d0ctor-s3cret-pw";
    let auth = "Ym9iOmQwY3Rvci1zM2NyZXQtcHc="; // bob:d0ctor-s3cret-pw
    let config = home.docker_config(&format!(
        r#"{{"auths":{{"{}":{{"auth":"{auth}"}}}}}}"#,
        mirror.host_port()
    ));
    let chains = Chains::all_on(&mirror);
    let repo = &chains.db[0];
    let ran = home.doctor(&chains, &[], &[("TRIVY_ECR_LOG", "trace")]);
    assert_eq!(ran.code(), Some(0), "{}", ran.describe());
    line(
        &ran,
        "ok",
        &[&format!(
            "vulnerability DB mirror {repo}: docker credentials: found for {} in {}",
            mirror.host_port(),
            config.display()
        )],
    );
    line(
        &ran,
        "ok",
        &[&format!(
            "mirror {repo}: token: with docker credentials in "
        )],
    );
    line(
        &ran,
        "ok",
        &[&format!("mirror {repo}: manifest: HEAD 200 in ")],
    );
    let token_requests = mirror.requests_to("/token");
    assert!(
        token_requests
            .iter()
            .all(|r| r.auth_scheme.as_deref() == Some("Basic")),
        "{token_requests:?}"
    );
    assert_no_secret(&ran, &[password, auth]);

    // The token service refuses them: a warning, an anonymous token, still no secret shown.
    mirror.reject_basic_credentials_at_token();
    let ran = home.doctor(&chains, &[], &[("TRIVY_ECR_LOG", "trace")]);
    assert_eq!(ran.code(), Some(0), "warnings only: {}", ran.describe());
    line(
        &ran,
        "warn",
        &[&format!(
            "mirror {repo}: token: the token service refused the docker credentials; anonymous token in "
        )],
    );
    assert_no_secret(&ran, &[password, auth]);
}

fn assert_no_secret(ran: &Ran, secrets: &[&str]) {
    for secret in secrets {
        assert!(
            !ran.stdout.contains(secret) && !ran.stderr.contains(secret),
            "a secret was printed"
        );
    }
}
