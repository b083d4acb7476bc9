//! `trivy-ecr db mirror` against real registries: the rig's registry (behind fault proxies) as
//! the public source, a second real registry with htpasswd Basic auth as the organisation's
//! private destination. Byte-for-byte copies, idempotence, refused credentials, bearer push
//! scope, failover, damaged sources, and a scan by the real trivy reading the private copy with
//! credentials from a docker config.

mod rig;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use rig::image::Image;
use rig::oci::{self, PushedArtifact};
use rig::proxy::{Fault, FaultProxy, When};
use rig::registry::Registry;
use rig::trivy_db::{self, DbSpec};

const USER: &str = "mirror-bot";
const PASSWORD: &str = "pa55-Wd-for-the-rig";
const CHECKS_LAYER: &str = "application/vnd.cncf.openpolicyagent.layer.v1.tar+gzip";

/// The public side: a registry holding the three artifacts and the fixture images.
struct Source {
    registry: Registry,
    db: PushedArtifact,
    java_db: PushedArtifact,
    checks: PushedArtifact,
}

impl Source {
    fn start() -> Source {
        let registry = Registry::start();
        let client = registry.client();
        let db = client.push_trivy_db("trivy-db", "2", &trivy_db::db_tar_gz(&DbSpec::fresh()));
        let java_db = client.push_java_db(
            "trivy-java-db",
            "1",
            &rig::java_db::javadb_tar_gz(&DbSpec::fresh()),
        );
        let bundle = rig::tarball::gzip(&rig::tarball::tar(&[rig::tarball::Entry::file(
            "policy/rig.rego",
            b"package rig\n",
        )]));
        let checks =
            client.push_db_artifact("trivy-checks", "2", CHECKS_LAYER, "bundle.tar.gz", &bundle);
        Image::alpine_with_jar().push(&client, "jar-app", "latest");
        Source {
            registry,
            db,
            java_db,
            checks,
        }
    }

    fn proxy(&self) -> FaultProxy {
        FaultProxy::start(self.registry.addr())
    }

    fn image(&self) -> String {
        format!("{}/jar-app:latest", self.registry.host_port())
    }
}

/// The environment that points the mirror's sources at `proxy`.
fn source_env(proxy: &FaultProxy) -> Vec<(String, String)> {
    let at = proxy.host_port();
    vec![
        (
            "TRIVY_ECR_DB_REPOSITORIES".into(),
            format!("{at}/trivy-db:2"),
        ),
        (
            "TRIVY_ECR_JAVA_DB_REPOSITORIES".into(),
            format!("{at}/trivy-java-db:1"),
        ),
        (
            "TRIVY_CHECKS_BUNDLE_REPOSITORY".into(),
            format!("{at}/trivy-checks:2"),
        ),
    ]
}

fn credentials(password: &str) -> Vec<(String, String)> {
    vec![
        ("TRIVY_ECR_REGISTRY_USERNAME".into(), USER.into()),
        ("TRIVY_ECR_REGISTRY_PASSWORD".into(), password.into()),
    ]
}

/// A hermetic home for trivy-ecr runs.
struct Home {
    dir: tempfile::TempDir,
}

impl Home {
    fn new() -> Home {
        Home {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn command(&self, args: &[&str], env: &[(String, String)]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_trivy-ecr"));
        cmd.env_clear()
            .env("PATH", "/usr/bin:/bin")
            .env("HOME", self.path())
            .env("TRIVY_ECR_TRIVY", rig::tools::trivy())
            .current_dir(self.path())
            .stdin(Stdio::null())
            .args(args)
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        cmd
    }

    fn mirror(&self, to: &str, extra: &[&str], env: &[(String, String)]) -> Output {
        let mut args = vec!["db", "mirror", "--to", to, "--no-progress"];
        args.extend_from_slice(extra);
        run(self.command(&args, env))
    }

    /// A docker config directory with an `auths` entry for `registry`.
    fn docker_config(&self, registry: &str, password: &str) -> PathBuf {
        use base64::Engine;
        let dir = self.path().join("docker-config");
        std::fs::create_dir_all(&dir).unwrap();
        let auth = base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{password}"));
        std::fs::write(
            dir.join("config.json"),
            format!(r#"{{"auths":{{"{registry}":{{"auth":"{auth}"}}}}}}"#),
        )
        .unwrap();
        dir
    }

    /// A docker config directory sending `registry` to a credential helper
    /// (`docker-credential-rig`, like `docker-credential-ecr-login`), and the PATH that finds it.
    fn docker_config_with_helper(&self, registry: &str, password: &str) -> (PathBuf, String) {
        use std::os::unix::fs::PermissionsExt;
        let dir = self.path().join("docker-helper");
        let bin = dir.join("bin");
        std::fs::create_dir_all(&bin).unwrap();
        let helper = bin.join("docker-credential-rig");
        std::fs::write(
            &helper,
            format!(
                "#!/bin/sh\n[ \"$1\" = get ] || exit 1\nread host\n[ \"$host\" = \"{registry}\" ] || exit 1\nprintf '{{\"ServerURL\":\"%s\",\"Username\":\"{USER}\",\"Secret\":\"{password}\"}}' \"$host\"\n"
            ),
        )
        .unwrap();
        std::fs::set_permissions(&helper, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::write(
            dir.join("config.json"),
            format!(r#"{{"credHelpers":{{"{registry}":"rig"}}}}"#),
        )
        .unwrap();
        (dir, format!("{}:/usr/bin:/bin", bin.display()))
    }
}

/// Runs `cmd` within 3 minutes; what it printed goes to the test's output (shown on failure).
fn run(mut cmd: Command) -> Output {
    let ran = rig::run::run_bounded(&mut cmd, Duration::from_secs(180));
    eprintln!(
        "$ {:?} {:?}\n{}{}exit: {:?}\n",
        cmd.get_program(),
        cmd.get_args().collect::<Vec<_>>(),
        ran.stdout,
        ran.stderr,
        ran.status.code()
    );
    Output {
        status: ran.status,
        stdout: ran.stdout.into_bytes(),
        stderr: ran.stderr.into_bytes(),
    }
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn everything(out: &Output) -> String {
    format!("{}{}", stdout(out), stderr(out))
}

fn assert_no_secret(out: &Output, password: &str) {
    use base64::Engine;
    let all = everything(out);
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{password}"));
    assert!(!all.contains(password), "the password leaked:\n{all}");
    assert!(
        !all.contains(&basic),
        "the Basic credentials leaked:\n{all}"
    );
}

/// The manifest bytes `client` gets for `repo:tag`, and the digest the registry names.
fn manifest_of(client: &oci::Client, repo: &str, tag: &str) -> (u16, Vec<u8>, Option<String>) {
    let response = client.get(
        &format!("/v2/{repo}/manifests/{tag}"),
        Some(oci::OCI_MANIFEST),
    );
    let digest = response.header("Docker-Content-Digest").map(str::to_owned);
    (response.status, response.body, digest)
}

fn writes(proxy: &FaultProxy) -> Vec<String> {
    proxy
        .requests()
        .iter()
        .filter(|r| matches!(r.method.as_str(), "PUT" | "POST" | "PATCH" | "DELETE"))
        .map(|r| format!("{} {}", r.method, r.path))
        .collect()
}

#[test]
fn mirror_copies_every_artifact_byte_for_byte_and_a_second_run_uploads_nothing() {
    let source = Source::start();
    let public = source.proxy();
    let private = Registry::start_with_htpasswd(USER, PASSWORD);
    let front = FaultProxy::start(private.addr());
    let to = format!("{}/org/trivy", front.host_port());
    let home = Home::new();
    let mut env = source_env(&public);
    // The same chain a scan would use: the private copy first. The mirror skips it as a source.
    env[0].1 = format!("{to}/trivy-db:2,{}", env[0].1);
    env.extend(credentials(PASSWORD));
    env.push(("TRIVY_ECR_LOG".into(), "trace".into()));

    let out = home.mirror(&to, &["--java", "--checks"], &env);
    assert_eq!(out.status.code(), Some(0), "{}", everything(&out));
    assert_no_secret(&out, PASSWORD);
    let expected_stdout = format!(
        "{to}/trivy-db:2@{}\n{to}/trivy-java-db:1@{}\n{to}/trivy-checks:2@{}\n",
        source.db.manifest_digest, source.java_db.manifest_digest, source.checks.manifest_digest
    );
    assert_eq!(stdout(&out), expected_stdout);
    assert!(
        stderr(&out).contains("not copying from"),
        "{}",
        stderr(&out)
    );

    let upstream = source.registry.client();
    let copy = private.client();
    for (artifact, repo, tag) in [
        (&source.db, "trivy-db", "2"),
        (&source.java_db, "trivy-java-db", "1"),
        (&source.checks, "trivy-checks", "2"),
    ] {
        let (status, original, _) = manifest_of(&upstream, repo, tag);
        assert_eq!(status, 200);
        let (status, copied, digest) = manifest_of(&copy, &format!("org/trivy/{repo}"), tag);
        assert_eq!(status, 200, "{repo} is in the private registry");
        assert_eq!(copied, original, "{repo}: manifest bytes identical");
        assert_eq!(digest.as_deref(), Some(artifact.manifest_digest.as_str()));
        for blob in [&artifact.config, &artifact.layer] {
            let got = copy.get(&format!("/v2/org/trivy/{repo}/blobs/{}", blob.digest), None);
            assert_eq!(got.status, 200, "{repo} blob {}", blob.digest);
            assert_eq!(rig::tarball::sha256_digest(&got.body), blob.digest);
        }
    }
    let uploads = writes(&front);
    assert!(
        uploads.iter().any(|w| w.starts_with("PATCH ")),
        "{uploads:?}"
    );
    // A config and a layer per repository (blobs are linked per repository).
    let commits = uploads
        .iter()
        .filter(|w| w.starts_with("PUT ") && w.contains("/blobs/uploads/"))
        .count();
    assert_eq!(commits, 6, "{uploads:?}");

    // Second run: the destination already has each manifest. One authorised HEAD each.
    let before = front.requests().len();
    let source_before = public.requests_to("/blobs/").len();
    let out = home.mirror(&to, &["--java", "--checks"], &env);
    assert_eq!(out.status.code(), Some(0), "{}", everything(&out));
    assert_eq!(stdout(&out), expected_stdout);
    assert!(stderr(&out).contains("is up to date"), "{}", stderr(&out));
    let second: Vec<_> = front.requests().into_iter().skip(before).collect();
    assert!(
        second
            .iter()
            .all(|r| r.method == "HEAD" && r.path.contains("/manifests/")),
        "only manifest HEADs: {second:?}"
    );
    let answered: Vec<_> = second.iter().filter(|r| r.status == Some(200)).collect();
    assert_eq!(answered.len(), 3, "{second:?}");
    assert_eq!(public.requests_to("/blobs/").len(), source_before);
}

#[test]
fn a_wrong_password_is_exit_6_naming_the_registry_and_the_fix() {
    let source = Source::start();
    let public = source.proxy();
    let private = Registry::start_with_htpasswd(USER, PASSWORD);
    let front = FaultProxy::start(private.addr());
    let to = format!("{}/org/trivy", front.host_port());
    let home = Home::new();
    let wrong = "not-the-Pa55word";

    let mut env = source_env(&public);
    env.extend(credentials(wrong));
    env.push(("TRIVY_ECR_LOG".into(), "trace".into()));
    let out = home.mirror(&to, &[], &env);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(6), "{err}");
    let errors: Vec<_> = err.lines().filter(|l| l.contains("error:")).collect();
    assert_eq!(errors.len(), 1, "{err}");
    let line = errors[0];
    for needle in [
        front.host_port().as_str(),
        "refused the credentials",
        "org/trivy/trivy-db",
        "HTTP 401",
        "check TRIVY_ECR_REGISTRY_USERNAME and TRIVY_ECR_REGISTRY_PASSWORD",
    ] {
        assert!(line.contains(needle), "{needle}: {line}");
    }
    assert_no_secret(&out, wrong);
    assert!(writes(&front).is_empty(), "{:?}", writes(&front));
    assert!(
        public.requests_to("/blobs/").is_empty(),
        "nothing downloaded for nothing"
    );

    // The same refusal with a docker config's credentials names that file instead.
    let mut env = source_env(&public);
    let config = home.docker_config(&front.host_port(), wrong);
    env.push(("DOCKER_CONFIG".into(), config.display().to_string()));
    env.push(("TRIVY_ECR_LOG".into(), "trace".into()));
    let out = home.mirror(&to, &[], &env);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(6), "{err}");
    assert!(err.contains("the auths entry for"), "{err}");
    assert!(err.contains("docker login"), "{err}");
    assert_no_secret(&out, wrong);

    // Without any credentials: exit 6 too, and the fix says how to give them.
    let out = home.mirror(&to, &[], &source_env(&public));
    assert_eq!(out.status.code(), Some(6), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("set TRIVY_ECR_REGISTRY_USERNAME and TRIVY_ECR_REGISTRY_PASSWORD"),
        "{}",
        stderr(&out)
    );

    // Half the pair is a usage error.
    let mut env = source_env(&public);
    env.push(("TRIVY_ECR_REGISTRY_USERNAME".into(), USER.into()));
    let out = home.mirror(&to, &[], &env);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
}

#[test]
fn scans_read_the_private_copy_with_docker_config_credentials() {
    let source = Source::start();
    let public = source.proxy();
    let private = Registry::start_with_htpasswd(USER, PASSWORD);
    let front = FaultProxy::start(private.addr());
    let to = format!("{}/org/trivy", front.host_port());
    let home = Home::new();
    // Credentials from a credential helper named in the docker config, as with
    // docker-credential-ecr-login: trivy-ecr and trivy both ask it.
    let (config, path) = home.docker_config_with_helper(&front.host_port(), PASSWORD);
    let docker = ("DOCKER_CONFIG".to_string(), config.display().to_string());
    let helper_path = ("PATH".to_string(), path);

    // Mirror with the docker config's credentials.
    let mut env = source_env(&public);
    env.push(docker.clone());
    env.push(helper_path.clone());
    let out = home.mirror(&to, &["--java"], &env);
    assert_eq!(out.status.code(), Some(0), "{}", everything(&out));

    // Scan: the vulnerability DB is fetched natively, the Java DB by trivy itself (the JAR
    // needs it mid-scan); both from the private copy, both with the docker config.
    let cache = home.path().join("cache");
    let scan_env = vec![
        (
            "TRIVY_ECR_DB_REPOSITORIES".to_string(),
            format!("{to}/trivy-db:2,{}/trivy-db:2", public.host_port()),
        ),
        (
            "TRIVY_ECR_JAVA_DB_REPOSITORIES".to_string(),
            format!("{to}/trivy-java-db:1"),
        ),
        ("TRIVY_ECR_LOG".to_string(), "trace".to_string()),
        docker.clone(),
        helper_path.clone(),
    ];
    let public_before = public.requests().len();
    let image = source.image();
    let scan = |env: &[(String, String)]| {
        run(home.command(
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
                &image,
            ],
            env,
        ))
    };
    let out = scan(&scan_env);
    let err = stderr(&out);
    assert_eq!(
        out.status.code(),
        Some(1),
        "the CRITICALs fail the gate: {err}"
    );
    assert_no_secret(&out, PASSWORD);
    assert!(
        err.contains("[javadb] Downloading"),
        "trivy downloaded the Java DB itself: {err}"
    );
    let report = rig::report::Report::parse(
        &std::fs::read_to_string(home.path().join("report.json")).unwrap(),
    );
    let mut expected = trivy_db::expected_alpine_findings();
    expected.push(trivy_db::expected_jar_finding());
    expected.sort();
    assert_eq!(report.findings(), expected);
    assert_eq!(
        public.requests().len(),
        public_before,
        "the public mirror was not used"
    );
    for repo in ["trivy-db", "trivy-java-db"] {
        let blob_gets: Vec<_> = front
            .requests_to(&format!("/org/trivy/{repo}/blobs/"))
            .into_iter()
            .filter(|r| r.method == "GET" && r.status == Some(200))
            .collect();
        assert!(
            blob_gets
                .iter()
                .all(|r| r.auth_scheme.as_deref() == Some("Basic")),
            "{repo}: {blob_gets:?}"
        );
        assert!(
            blob_gets
                .iter()
                .any(|r| r.path.contains(&source.db.layer.digest)
                    || r.path.contains(&source.java_db.layer.digest)),
            "{repo} layer read from the private copy: {blob_gets:?}"
        );
    }

    // Without the credentials the private copy is closed: the native download names it.
    std::fs::remove_dir_all(&cache).unwrap();
    let without: Vec<_> = scan_env
        .iter()
        .filter(|(k, _)| k != "DOCKER_CONFIG" && k != "TRIVY_ECR_DB_REPOSITORIES")
        .cloned()
        .chain([(
            "TRIVY_ECR_DB_REPOSITORIES".to_string(),
            format!("{to}/trivy-db:2"),
        )])
        .collect();
    let out = scan(&without);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(&format!("{to}/trivy-db:2: access denied")),
        "{}",
        stderr(&out)
    );
}

#[test]
fn a_token_service_is_asked_for_push_scope() {
    let source = Source::start();
    let public = source.proxy();
    let private = Registry::start();
    let front = FaultProxy::start(private.addr());
    front.require_token_auth("private-registry");
    let to = format!("{}/org/trivy", front.host_port());
    let home = Home::new();
    let out = home.mirror(&to, &[], &source_env(&public));
    assert_eq!(out.status.code(), Some(0), "{}", everything(&out));
    let scopes: Vec<String> = front
        .requests_to("/token")
        .into_iter()
        .map(|r| r.query)
        .collect();
    assert!(
        scopes
            .iter()
            .all(|q| q.contains("scope=repository%3Aorg%2Ftrivy%2Ftrivy-db%3Apull%2Cpush")),
        "{scopes:?}"
    );
    assert_eq!(scopes.len(), 1, "one token for the whole copy: {scopes:?}");
    let (status, _, digest) = manifest_of(&private.client(), "org/trivy/trivy-db", "2");
    assert_eq!(status, 200);
    assert_eq!(digest.as_deref(), Some(source.db.manifest_digest.as_str()));
}

#[test]
fn a_destination_that_is_briefly_unavailable_is_waited_out() {
    let source = Source::start();
    let public = source.proxy();
    let private = Registry::start_with_htpasswd(USER, PASSWORD);
    let front = FaultProxy::start(private.addr());
    front.add_rule("/blobs/uploads/", When::FirstN(1), Fault::Unavailable);
    let to = format!("{}/org/trivy", front.host_port());
    let home = Home::new();
    let mut env = source_env(&public);
    env.extend(credentials(PASSWORD));
    let out = home.mirror(&to, &[], &env);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(
        err.contains(&format!(
            "destination {to}/trivy-db:2 server error (HTTP 503)"
        )),
        "{err}"
    );
    assert_eq!(
        public.requests_to("/trivy-db/manifests/").len(),
        2,
        "the source is not blamed: it is read again"
    );
    let (_, _, digest) = manifest_of(&private.client(), "org/trivy/trivy-db", "2");
    assert_eq!(digest.as_deref(), Some(source.db.manifest_digest.as_str()));

    // A destination that stays unavailable is exit 6, naming it.
    front.add_rule("/blobs/uploads/", When::Always, Fault::Unavailable);
    let out = home.mirror(&to.replace("org/trivy", "org/other"), &[], &{
        let mut env = env.clone();
        env.push(("TRIVY_ECR_MAX_WAIT".into(), "2s".into()));
        env
    });
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(6), "{err}");
    let last = err.lines().last().unwrap();
    assert!(
        last.contains(&format!(
            "could not write the vulnerability DB to {}/org/other/trivy-db:2",
            front.host_port()
        )) && last.contains("server error (HTTP 503)"),
        "{last}"
    );
}

#[test]
fn failing_sources_fail_over_and_exit_3_names_every_mirror() {
    let source = Source::start();
    let (throttled, down, good) = (source.proxy(), source.proxy(), source.proxy());
    throttled.add_rule("/trivy-db/", When::Always, Fault::too_many_requests());
    down.add_rule("/trivy-db/", When::Always, Fault::Unavailable);
    let private = Registry::start_with_htpasswd(USER, PASSWORD);
    let to = format!("{}/org/trivy", private.host_port());
    let home = Home::new();
    let chain = |mirrors: &[&FaultProxy]| {
        let mut env = credentials(PASSWORD);
        env.push((
            "TRIVY_ECR_DB_REPOSITORIES".into(),
            mirrors
                .iter()
                .map(|m| format!("{}/trivy-db:2", m.host_port()))
                .collect::<Vec<_>>()
                .join(","),
        ));
        env.push(("TRIVY_ECR_MAX_WAIT".into(), "3s".into()));
        env
    };

    let out = home.mirror(&to, &[], &chain(&[&throttled, &down]));
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(3), "{err}");
    let last = err.lines().last().unwrap();
    assert!(
        last.contains(&format!(
            "{}/trivy-db:2: rate limited",
            throttled.host_port()
        )),
        "{last}"
    );
    assert!(
        last.contains(&format!(
            "{}/trivy-db:2: server error (HTTP 503)",
            down.host_port()
        )),
        "{last}"
    );
    let (status, _, _) = manifest_of(&private.client(), "org/trivy/trivy-db", "2");
    assert_eq!(status, 404, "nothing was pushed");

    let before = throttled.requests_to("/manifests/").len();
    let out = home.mirror(&to, &[], &chain(&[&throttled, &good]));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(
        throttled.requests_to("/manifests/").len(),
        before + 1,
        "one try, then the next mirror at once"
    );
    let (_, _, digest) = manifest_of(&private.client(), "org/trivy/trivy-db", "2");
    assert_eq!(digest.as_deref(), Some(source.db.manifest_digest.as_str()));
}

#[test]
fn a_damaged_source_blob_never_completes_an_upload() {
    let source = Source::start();
    let (corrupt, cut, good) = (source.proxy(), source.proxy(), source.proxy());
    corrupt.add_rule("/trivy-db/blobs/", When::Always, Fault::CorruptBody);
    cut.add_rule("/trivy-db/blobs/", When::Always, Fault::DropMidBody);
    let private = Registry::start_with_htpasswd(USER, PASSWORD);
    let front = FaultProxy::start(private.addr());
    let to = format!("{}/org/trivy", front.host_port());
    let home = Home::new();
    let mut env = credentials(PASSWORD);
    env.push((
        "TRIVY_ECR_DB_REPOSITORIES".into(),
        [&corrupt, &cut, &good]
            .iter()
            .map(|m| format!("{}/trivy-db:2", m.host_port()))
            .collect::<Vec<_>>()
            .join(","),
    ));
    let out = home.mirror(&to, &[], &env);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(err.contains("damaged") || err.contains("corrupt"), "{err}");
    // Both damaged uploads were abandoned before their last byte: no commit (PUT ?digest=)
    // happened for them, only for the good copy.
    let commits: Vec<_> = front
        .requests()
        .into_iter()
        .filter(|r| r.method == "PUT" && r.query.contains("digest=sha256"))
        .filter(|r| {
            r.query
                .contains(&source.db.layer.digest.replace(':', "%3A"))
        })
        .collect();
    assert_eq!(commits.len(), 1, "{:?}", front.requests());
    let copy = private.client();
    let layer = copy.get(
        &format!("/v2/org/trivy/trivy-db/blobs/{}", source.db.layer.digest),
        None,
    );
    assert_eq!(
        rig::tarball::sha256_digest(&layer.body),
        source.db.layer.digest
    );
    assert_eq!(
        good.requests_to("/trivy-db/blobs/").len(),
        2,
        "config + layer"
    );
}

/// Run by `scripts/bench-mirror` (in --release): peak RSS of a mirror of a padded artifact.
/// Prints one line per size; asserts nothing about speed.
#[test]
#[ignore = "benchmark: run scripts/bench-mirror"]
fn bench_mirror_peak_rss() {
    let sizes: Vec<u64> = std::env::var("BENCH_MIRROR_SIZES_MB")
        .unwrap_or_else(|_| "20,200".into())
        .split(',')
        .map(|s| s.trim().parse().expect("sizes in MB"))
        .collect();
    let time = Path::new("/usr/bin/time");
    assert!(
        time.exists(),
        "/usr/bin/time is needed (Debian package `time`)"
    );
    for mb in sizes {
        let source = Registry::start();
        let artifact = trivy_db::db_tar_gz(&DbSpec::fresh().with_padding(mb << 20));
        let pushed = source.client().push_trivy_db("trivy-db", "2", &artifact);
        let private = Registry::start_with_htpasswd(USER, PASSWORD);
        let to = format!("{}/org/trivy", private.host_port());
        let home = Home::new();
        let mut env = credentials(PASSWORD);
        env.push((
            "TRIVY_ECR_DB_REPOSITORIES".into(),
            format!("{}/trivy-db:2", source.host_port()),
        ));
        let cmd = home.command(&["db", "mirror", "--to", &to, "--no-progress"], &env);
        let program = PathBuf::from(cmd.get_program());
        let args: Vec<_> = cmd.get_args().map(|a| a.to_owned()).collect();
        let mut timed = Command::new(time);
        timed.arg("-v").arg(program).args(args);
        timed
            .env_clear()
            .envs(cmd.get_envs().filter_map(|(k, v)| v.map(|v| (k, v))))
            .current_dir(home.path())
            .stdin(Stdio::null());
        let out = run(timed);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(0), "{err}");
        let field = |name: &str| {
            err.lines()
                .find_map(|l| l.trim().strip_prefix(name))
                .map(|v| v.trim().to_string())
                .unwrap_or_default()
        };
        let (_, _, digest) = manifest_of(&private.client(), "org/trivy/trivy-db", "2");
        assert_eq!(digest.as_deref(), Some(pushed.manifest_digest.as_str()));
        println!(
            "bench-mirror: artifact {:.1} MiB: wall {}, peak RSS {} KiB",
            artifact.len() as f64 / (1 << 20) as f64,
            field("Elapsed (wall clock) time (h:mm:ss or m:ss):"),
            field("Maximum resident set size (kbytes):"),
        );
    }
}

#[test]
fn usage_errors_are_exit_2_with_the_reason() {
    let home = Home::new();
    let cases: [(&[&str], &str); 3] = [
        (
            &["db", "mirror"],
            "the following required arguments were not provided: --to <REGISTRY/PREFIX>",
        ),
        (
            &["db", "mirror", "--to", "trivy/db"],
            "'trivy' is not a registry host",
        ),
        (
            &["db", "mirror", "--to", "r.example/Trivy"],
            "'Trivy' is not a repository path",
        ),
    ];
    for (args, reason) in cases {
        let out = run(home.command(args, &[]));
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        assert!(stderr(&out).contains(reason), "{args:?}: {}", stderr(&out));
        assert_eq!(stderr(&out).lines().count(), 1, "{}", stderr(&out));
    }
}
