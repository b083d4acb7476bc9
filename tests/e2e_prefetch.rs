//! trivy-ecr's native DB download against a real registry behind the fault proxy, with the real
//! trivy scanning afterwards with `--skip-db-update`: cold and fresh caches, failover, Retry-After,
//! damaged downloads, concurrency, token auth and docker credentials.

mod native;
mod rig;

use native::{Run, Scene, blob_gets, db_repo, output_within, staging_leftovers, stderr};

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use rig::image::Image;
use rig::proxy::{Fault, FaultProxy, When, refused_addr};
use rig::registry::Registry;
use rig::trivy_db::{self, DbSpec};

#[test]
fn cold_cache_one_pull_then_trivy_scans_with_skip_db_update() {
    let scene = Scene::start();
    let mirror = scene.mirror();
    let run = Run::new();
    let out = run.scan(&[db_repo(&mirror)], &scene.image(), &[]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "the CRITICALs fail the gate: {}",
        stderr(&out)
    );
    assert_eq!(
        run.report().findings(),
        trivy_db::expected_alpine_findings()
    );
    assert_eq!(blob_gets(&mirror), 1, "{:?}", mirror.requests());
    let err = stderr(&out);
    assert!(err.contains("vulnerability DB ready: "), "{err}");
    assert!(
        !err.contains("Downloading vulnerability DB"),
        "trivy did not download: {err}"
    );
    assert!(staging_leftovers(&run.cache()).is_empty());

    // Fresh cache: not a single request to the mirror.
    let before = mirror.requests().len();
    let out = run.scan(&[db_repo(&mirror)], &scene.image(), &[]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert_eq!(mirror.requests().len(), before, "{:?}", mirror.requests());

    let status = run
        .command(
            &[],
            &["db", "status", "--cache-dir", run.cache().to_str().unwrap()],
        )
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&status.stdout);
    assert!(text.contains("state:       fresh"), "{text}");
    assert!(
        text.contains(&format!("from:        {}", db_repo(&mirror))),
        "{text}"
    );
}

#[test]
fn seed_failure_fails_over_in_well_under_a_second() {
    let scene = Scene::start();
    let (bad, good) = (scene.mirror(), scene.mirror());
    bad.add_rule("/trivy-db/", When::Always, Fault::too_many_requests());
    let run = Run::new();
    let out = run.scan(&[db_repo(&bad), db_repo(&good)], &scene.image(), &[]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert_eq!(
        run.report().findings(),
        trivy_db::expected_alpine_findings()
    );
    let bad_requests = bad.requests();
    assert_eq!(
        bad_requests.len(),
        1,
        "one request to the throttled mirror: {bad_requests:?}"
    );
    let first_good = good.requests().first().unwrap().at;
    let failover = first_good.duration_since(bad_requests[0].at);
    eprintln!("failover took {failover:?}");
    assert!(failover < Duration::from_millis(500), "{failover:?}");
    assert!(stderr(&out).contains("rate limited"), "{}", stderr(&out));
}

#[test]
fn retry_after_is_honoured_on_the_only_mirror() {
    let scene = Scene::start();
    let mirror = scene.mirror();
    mirror.add_rule(
        "/trivy-db/manifests/",
        When::FirstN(1),
        Fault::TooManyRequests {
            retry_after: Some("2".into()),
        },
    );
    let run = Run::new();
    let out = run.scan(&[db_repo(&mirror)], &scene.image(), &[]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let manifests: Vec<_> = mirror.requests_to("/trivy-db/manifests/");
    assert_eq!(manifests.len(), 2, "{manifests:?}");
    let gap = manifests[1].at.duration_since(manifests[0].at);
    assert!(
        gap >= Duration::from_secs(2),
        "Retry-After: 2 honoured: {gap:?}"
    );
    assert!(gap < Duration::from_secs(6), "{gap:?}");
}

#[test]
fn dropped_and_corrupted_blobs_never_reach_the_cache() {
    let scene = Scene::start();
    for fault in [Fault::DropMidBody, Fault::CorruptBody] {
        let (bad, good) = (scene.mirror(), scene.mirror());
        bad.add_rule("/trivy-db/blobs/", When::Always, fault.clone());
        let run = Run::new();
        // An older DB is already cached: it must survive the bad download untouched.
        let yesterday = std::time::SystemTime::now() - Duration::from_secs(86_400);
        trivy_db::install_into_cache(&run.cache(), &DbSpec::stale().downloaded_at(yesterday));
        let old = std::fs::read(run.cache().join("db/trivy.db")).unwrap();
        let only_bad = run.scan(
            &[db_repo(&bad)],
            &scene.image(),
            &[
                ("TRIVY_ECR_MAX_ATTEMPTS", "2"),
                ("TRIVY_ECR_MAX_DB_AGE", "0"),
                ("TRIVY_ECR_MAX_WAIT", "5s"),
            ],
        );
        assert_eq!(
            only_bad.status.code(),
            Some(3),
            "{fault:?}: {}",
            stderr(&only_bad)
        );
        assert_eq!(
            std::fs::read(run.cache().join("db/trivy.db")).unwrap(),
            old,
            "{fault:?}"
        );
        assert!(staging_leftovers(&run.cache()).is_empty(), "{fault:?}");
        let out = run.scan(&[db_repo(&bad), db_repo(&good)], &scene.image(), &[]);
        assert_eq!(out.status.code(), Some(1), "{fault:?}: {}", stderr(&out));
        assert_eq!(blob_gets(&good), 1);
        assert!(staging_leftovers(&run.cache()).is_empty());
    }
}

#[test]
fn refused_not_found_and_denied_mirrors_are_skipped() {
    let scene = Scene::start();
    let not_found = scene.mirror();
    not_found.add_rule("/trivy-db/manifests/", When::Always, Fault::ManifestUnknown);
    let denied = scene.mirror();
    denied.add_rule("/trivy-db/", When::Always, Fault::Unauthorized);
    let good = scene.mirror();
    let chain = [
        format!("{}/trivy-db:2", refused_addr()),
        db_repo(&not_found),
        db_repo(&denied),
        db_repo(&good),
    ];
    let run = Run::new();
    let out = run.scan(&chain, &scene.image(), &[]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert_eq!(
        not_found.requests_to("/manifests/").len(),
        1,
        "404 is not retried"
    );
    assert_eq!(blob_gets(&good), 1);
}

#[test]
fn every_mirror_failing_is_exit_3_naming_each() {
    let scene = Scene::start();
    let (a, b) = (scene.mirror(), scene.mirror());
    a.add_rule("/trivy-db/", When::Always, Fault::too_many_requests());
    b.add_rule("/trivy-db/", When::Always, Fault::Unavailable);
    let run = Run::new();
    let started = Instant::now();
    let out = run.scan(
        &[db_repo(&a), db_repo(&b)],
        &scene.image(),
        &[("TRIVY_ECR_MAX_WAIT", "3s")],
    );
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(started.elapsed() < Duration::from_secs(20));
    let last = stderr(&out).lines().last().unwrap().to_string();
    assert!(
        last.contains(&format!("{}: rate limited", db_repo(&a))),
        "{last}"
    );
    assert!(
        last.contains(&format!("{}: server error (HTTP 503)", db_repo(&b))),
        "{last}"
    );
    let registry_log = scene.registry.log();
    assert!(
        !registry_log.contains("/v2/app/manifests"),
        "no scan was attempted"
    );
}

#[test]
fn eight_parallel_runs_on_a_cold_cache_download_once() {
    let scene = Scene::start();
    let mirror = scene.mirror();
    let run = Run::new();
    let children: Vec<_> = (0..8)
        .map(|i| {
            let cache = run.cache();
            let mut cmd = run.command(
                &[db_repo(&mirror)],
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
                    &format!("r{i}.json"),
                    &scene.image(),
                ],
            );
            cmd.stdout(Stdio::null()).stderr(Stdio::piped());
            cmd.spawn().unwrap()
        })
        .collect();
    for child in children {
        let out = child.wait_with_output().unwrap();
        assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    }
    assert_eq!(blob_gets(&mirror), 1, "{:?}", mirror.requests());
}

#[test]
fn token_auth_and_docker_credentials_without_leaking_them() {
    let scene = Scene::start();
    let mirror = scene.mirror();
    mirror.require_token_auth("rig-registry");
    let run = Run::new();
    let docker = run.dir.path().join(".docker");
    std::fs::create_dir_all(&docker).unwrap();
    let auth = "Ym9iOnMzY3JldC1wYXNzd29yZA=="; // bob:s3cret-password
    std::fs::write(
        docker.join("config.json"),
        format!(
            r#"{{"auths":{{"{}":{{"auth":"{auth}"}}}}}}"#,
            mirror.host_port()
        ),
    )
    .unwrap();
    let out = run.scan(
        &[db_repo(&mirror)],
        &scene.image(),
        &[("TRIVY_ECR_LOG", "trace")],
    );
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(mirror.tokens_issued() >= 1);
    let token_requests: Vec<_> = mirror
        .requests()
        .into_iter()
        .filter(|r| r.path.ends_with("/token"))
        .collect();
    assert!(
        token_requests
            .iter()
            .any(|r| r.auth_scheme.as_deref() == Some("Basic")),
        "credentials sent: {token_requests:?}"
    );
    let all = format!("{}{}", String::from_utf8_lossy(&out.stdout), stderr(&out));
    for secret in ["s3cret-password", auth] {
        assert!(!all.contains(secret), "secret leaked");
    }
}

/// A `db.tar.gz` whose entries are written raw, so hostile names and links survive.
fn hostile_db_tar_gz(name: &str, link: Option<&str>) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_gnu();
    match link {
        Some(target) => {
            header.set_entry_type(tar::EntryType::Symlink);
            header.set_link_name(target).unwrap();
            header.set_size(0);
        }
        None => {
            header.set_entry_type(tar::EntryType::Regular);
            header.set_size(4);
        }
    }
    header.set_mode(0o644);
    header.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
    header.set_cksum();
    builder
        .append(&header, &b"evil"[..link.map_or(4, |_| 0)])
        .unwrap();
    rig::tarball::gzip(&builder.into_inner().unwrap())
}

#[test]
fn archives_with_traversal_or_links_are_refused_and_the_next_mirror_used() {
    let scene = Scene::start();
    let client = scene.registry.client();
    client.push_trivy_db(
        "evil/traversal",
        "2",
        &hostile_db_tar_gz("../trivy.db", None),
    );
    client.push_trivy_db(
        "evil/symlink",
        "2",
        &hostile_db_tar_gz("trivy.db", Some("/etc/passwd")),
    );
    let good = scene.mirror();
    let host = scene.registry.host_port();
    let chain = [
        format!("{host}/evil/traversal:2"),
        format!("{host}/evil/symlink:2"),
        db_repo(&good),
    ];
    let run = Run::new();
    let out = run.scan(&chain, &scene.image(), &[]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("unexpected entry '../trivy.db'"), "{err}");
    assert!(
        err.contains("entry 'trivy.db' is not a regular file"),
        "{err}"
    );
    assert!(!run.dir.path().join("trivy.db").exists());
    assert!(staging_leftovers(&run.cache()).is_empty());
    assert_eq!(blob_gets(&good), 1);
}

#[test]
fn prefetch_all_fetches_the_java_db_too_and_trivy_skips_both_updates() {
    let scene = Scene::start();
    let client = scene.registry.client();
    client.push_java_db(
        "trivy-java-db",
        "1",
        &rig::java_db::javadb_tar_gz(&DbSpec::fresh()),
    );
    Image::alpine_with_jar().push(&client, "jar-app", "latest");
    let mirror = scene.mirror();
    let run = Run::new();
    let java_chain = format!("{}/trivy-java-db:1", mirror.host_port());
    let image = format!("{}/jar-app:latest", scene.registry.host_port());
    let out = run.scan(
        &[db_repo(&mirror)],
        &image,
        &[
            ("TRIVY_ECR_PREFETCH", "all"),
            ("TRIVY_ECR_JAVA_DB_REPOSITORIES", &java_chain),
            ("TRIVY_ECR_LOG", "debug"),
        ],
    );
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("--skip-db-update --skip-java-db-update"),
        "{err}"
    );
    assert!(
        !err.contains("[javadb] Downloading"),
        "trivy did not download the Java DB: {err}"
    );
    assert!(err.contains("Java DB ready: "), "{err}");
    let report = run.report();
    assert!(
        report
            .findings_of_class("lang-pkgs")
            .contains(&trivy_db::expected_jar_finding()),
        "{:?}",
        report.findings()
    );
    assert_eq!(mirror.requests_to("/trivy-java-db/blobs/").len(), 1);
}

#[test]
fn quiet_runs_print_no_download_phases() {
    let scene = Scene::start();
    let mirror = scene.mirror();
    let run = Run::new();
    let cache = run.cache();
    let mut cmd = run.command(
        &[db_repo(&mirror)],
        &[
            "image",
            "-q",
            "--cache-dir",
            cache.to_str().unwrap(),
            "--skip-version-check",
            "--scanners",
            "vuln",
            &scene.image(),
        ],
    );
    let out = output_within(
        std::mem::replace(&mut cmd, Command::new("true")),
        Duration::from_secs(120),
    );
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(!err.contains("downloading the vulnerability DB"), "{err}");
    assert!(!err.contains("DB ready"), "{err}");
    assert!(err.contains("FAILED"), "the verdict is still shown: {err}");
    assert_eq!(blob_gets(&mirror), 1);
}

/// Pushes a minimal checks bundle (an OPA bundle with a `.manifest`) as trivy-checks:2.
fn push_checks_bundle(registry: &Registry) {
    use rig::tarball::{Entry, gzip, sha256_digest, tar};
    let client = registry.client();
    let bundle = gzip(&tar(&[
        Entry::file(".manifest", br#"{"revision":"rig","roots":[""]}"#),
        Entry::Dir("checks/"),
        Entry::file("checks/rig.rego", b"package rig\n"),
    ]));
    let config = b"{}";
    let config_digest = client.push_blob("trivy-checks", config);
    let layer_digest = client.push_blob("trivy-checks", &bundle);
    assert_eq!(layer_digest, sha256_digest(&bundle));
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.cncf.openpolicyagent.config.v1+json", "digest": config_digest, "size": config.len()},
        "layers": [{
            "mediaType": "application/vnd.cncf.openpolicyagent.layer.v1.tar+gzip",
            "digest": layer_digest,
            "size": bundle.len(),
            "annotations": {"org.opencontainers.image.title": "bundle.tar.gz"}
        }],
        "annotations": {"org.opencontainers.image.version": "2.1.0"}
    });
    client.push_manifest(
        "trivy-checks",
        "2",
        "application/vnd.oci.image.manifest.v1+json",
        manifest.to_string().as_bytes(),
    );
}

#[test]
fn db_pull_checks_fills_the_cache_real_trivy_then_uses_without_a_request() {
    let scene = Scene::start();
    push_checks_bundle(&scene.registry);
    let mirror = scene.mirror();
    let run = Run::new();
    let cache = run.cache();
    let checks_repo = format!("{}/trivy-checks:2", mirror.host_port());
    let mut pull = run.command(
        &[db_repo(&mirror)],
        &[
            "db",
            "pull",
            "--checks",
            "--cache-dir",
            cache.to_str().unwrap(),
        ],
    );
    pull.env("TRIVY_ECR_CHECKS_REPOSITORIES", &checks_repo);
    let out = output_within(pull, Duration::from_secs(60));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(cache.join("policy/content/checks/rig.rego").is_file());
    let metadata: serde_json::Value =
        serde_json::from_slice(&std::fs::read(cache.join("policy/metadata.json")).unwrap())
            .unwrap();
    assert_eq!(metadata["MajorVersion"], 2, "{metadata}");

    let requests_after_pull = mirror.requests().len();
    let project = run.dir.path().join("project");
    std::fs::create_dir(&project).unwrap();
    std::fs::write(project.join("Dockerfile"), "FROM alpine:3.19\nUSER root\n").unwrap();
    let mut cmd = Command::new(rig::tools::trivy());
    rig::scan::clean_env(&mut cmd);
    cmd.args([
        "config",
        "--cache-dir",
        cache.to_str().unwrap(),
        "--skip-version-check",
        "--disable-telemetry",
    ])
    .args(["--checks-bundle-repository", &checks_repo])
    .arg(&project);
    let out = output_within(cmd, Duration::from_secs(120));
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(err.contains("Using existing checks from cache"), "{err}");
    assert_eq!(
        mirror.requests().len(),
        requests_after_pull,
        "trivy asked the mirror nothing"
    );

    let status = run
        .command(
            &[],
            &["db", "status", "--cache-dir", cache.to_str().unwrap()],
        )
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&status.stdout);
    assert!(
        text.contains("checks bundle: ") && text.contains("fresh (trivy will not download it)"),
        "{text}"
    );
}

#[test]
fn a_terminal_gets_a_progress_bar_and_a_pipe_gets_lines() {
    let registry = Registry::start();
    // Big enough that the bar is drawn before the download ends.
    let spec = DbSpec::fresh().with_padding(8 << 20);
    registry
        .client()
        .push_trivy_db("trivy-db", "2", &trivy_db::db_tar_gz(&spec));
    let repo = format!("{}/trivy-db:2", registry.host_port());
    let run = Run::new();
    let cache = run.cache();
    let pull = format!(
        "{} db pull --cache-dir {}",
        env!("CARGO_BIN_EXE_trivy-ecr"),
        cache.display()
    );
    // `script` (util-linux) gives trivy-ecr a pseudo-terminal; same hermetic environment.
    let prepared = run.command(std::slice::from_ref(&repo), &[]);
    let mut script = Command::new("script");
    script
        .args(["-qec", &pull, "/dev/null"])
        .env_clear()
        .env("TERM", "xterm");
    for (key, value) in prepared.get_envs() {
        if let Some(value) = value {
            script.env(key, value);
        }
    }
    let out = output_within(script, Duration::from_secs(60));
    let transcript = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(out.status.code(), Some(0), "{transcript}");
    assert!(
        transcript.contains("MiB/"),
        "a bar with byte counts: {transcript}"
    );

    let piped = output_within(
        run.command(
            &[repo],
            &[
                "db",
                "pull",
                "--cache-dir",
                run.dir.path().join("c2").to_str().unwrap(),
            ],
        ),
        Duration::from_secs(60),
    );
    let err = stderr(&piped);
    assert!(!err.contains("MiB/"), "no bar into a pipe: {err}");
    assert!(
        err.contains("trivy-ecr: downloading the vulnerability DB from"),
        "{err}"
    );
}

// ---- Degraded mode: every mirror fails, the cached DB may stand in (TRIVY_ECR_MAX_DB_AGE) ----

/// Makes the cached DB in `dir` (`db` or `java-db`) look built `built_ago`, downloaded two
/// hours ago and past its next update, so trivy (and trivy-ecr) want a new one.
fn age_cached_db(cache: &Path, dir: &str, version: u32, built_ago: Duration) {
    let now = std::time::SystemTime::now();
    let stamp = |t: std::time::SystemTime| humantime::format_rfc3339_seconds(t).to_string();
    let metadata = serde_json::json!({
        "Version": version,
        "UpdatedAt": stamp(now - built_ago),
        "NextUpdate": stamp(now - Duration::from_secs(3600)),
        "DownloadedAt": stamp(now - Duration::from_secs(2 * 86_400)),
    });
    std::fs::write(cache.join(dir).join("metadata.json"), metadata.to_string()).unwrap();
}

fn hours(h: u64) -> Duration {
    Duration::from_secs(h * 3600)
}

/// A run that filled its cache from a healthy mirror, and a mirror that now always throttles.
fn warmed_up(scene: &Scene) -> (Run, FaultProxy, Output) {
    let mirror = scene.mirror();
    let run = Run::new();
    let healthy = run.scan(&[db_repo(&mirror)], &scene.image(), &[]);
    assert_eq!(healthy.status.code(), Some(1), "{}", stderr(&healthy));
    mirror.add_rule("/trivy-db/", When::Always, Fault::too_many_requests());
    (run, mirror, healthy)
}

#[test]
fn every_mirror_throttled_scans_with_a_recent_cached_db_and_says_so() {
    let scene = Scene::start();
    let (run, mirror, _) = warmed_up(&scene);
    let healthy_findings = run.report().findings();
    age_cached_db(&run.cache(), "db", 2, hours(10));
    let status = run
        .command(
            &[],
            &["db", "status", "--cache-dir", run.cache().to_str().unwrap()],
        )
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&status.stdout);
    assert!(
        text.contains("fallback:    usable if every mirror fails: 10h old, limit 3days"),
        "{text}"
    );
    let before = mirror.requests().len();
    let out = run.scan(
        &[db_repo(&mirror)],
        &scene.image(),
        &[
            ("TRIVY_ECR_MAX_WAIT", "2s"),
            ("TRIVY_ECR_MAX_ATTEMPTS", "3"),
        ],
    );
    let err = stderr(&out);
    assert_eq!(
        out.status.code(),
        Some(1),
        "the gate decides as usual: {err}"
    );
    assert_eq!(run.report().findings(), healthy_findings);
    let warning = err
        .lines()
        .find(|l| l.contains("warning: DEGRADED"))
        .unwrap_or_else(|| panic!("{err}"));
    assert!(
        warning.contains("the cached vulnerability DB is 10h old (limit 3days)"),
        "{warning}"
    );
    assert!(
        warning.contains(&format!("{}: rate limited", db_repo(&mirror))),
        "{warning}"
    );
    assert!(
        err.contains("trivy-ecr: DEGRADED: the cached vulnerability DB is 10h old"),
        "summary says it: {err}"
    );
    let attempts = mirror.requests().len() - before;
    assert!(
        (1..=3).contains(&attempts),
        "no download beyond the budget: {attempts}"
    );
}

#[test]
fn a_cached_db_older_than_the_limit_or_a_zero_limit_is_exit_3() {
    let scene = Scene::start();
    let (run, mirror, _) = warmed_up(&scene);
    for (built_ago, limit, expected) in [
        (
            hours(80),
            "72h",
            "is 3days 8h old, beyond TRIVY_ECR_MAX_DB_AGE=3days",
        ),
        (
            hours(1),
            "0",
            "degraded mode is off (TRIVY_ECR_MAX_DB_AGE=0)",
        ),
    ] {
        age_cached_db(&run.cache(), "db", 2, built_ago);
        let out = run.scan(
            &[db_repo(&mirror)],
            &scene.image(),
            &[
                ("TRIVY_ECR_MAX_WAIT", "1s"),
                ("TRIVY_ECR_MAX_DB_AGE", limit),
            ],
        );
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(3), "{err}");
        let last = err.lines().last().unwrap();
        assert!(last.contains(expected), "{last}");
        assert!(
            last.contains("rate limited"),
            "names the mirror's error: {last}"
        );
    }
}

#[test]
fn a_damaged_cached_db_is_never_scanned_with() {
    let scene = Scene::start();
    let (run, mirror, _) = warmed_up(&scene);
    let db = run.cache().join("db/trivy.db");
    let whole = std::fs::read(&db).unwrap();
    let image_requests = || scene.registry.log().matches("/v2/app/manifests/").count();

    age_cached_db(&run.cache(), "db", 2, hours(5));
    std::fs::write(&db, &whole[..whole.len() / 3]).unwrap();
    let seen = image_requests();
    let out = run.scan(
        &[db_repo(&mirror)],
        &scene.image(),
        &[("TRIVY_ECR_MAX_WAIT", "1s")],
    );
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(
        err.lines()
            .last()
            .unwrap()
            .contains("the cached DB is damaged"),
        "{err}"
    );
    assert!(err.contains("truncated"), "{err}");
    assert_eq!(image_requests(), seen, "no scan was attempted");

    std::fs::write(&db, &whole).unwrap();
    std::fs::write(run.cache().join("db/metadata.json"), b"{\"Version\": 2, ").unwrap();
    let out = run.scan(
        &[db_repo(&mirror)],
        &scene.image(),
        &[("TRIVY_ECR_MAX_WAIT", "1s")],
    );
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(
        err.lines().last().unwrap().contains("metadata.json"),
        "{err}"
    );
    assert_eq!(image_requests(), seen, "no scan was attempted");
}

#[test]
fn the_java_db_falls_back_too_when_trivy_cannot_download_it() {
    let scene = Scene::start();
    let client = scene.registry.client();
    client.push_java_db(
        "trivy-java-db",
        "1",
        &rig::java_db::javadb_tar_gz(&DbSpec::fresh()),
    );
    Image::alpine_with_jar().push(&client, "jar-app", "latest");
    let mirror = scene.mirror();
    let java_chain = format!("{}/trivy-java-db:1", mirror.host_port());
    let image = format!("{}/jar-app:latest", scene.registry.host_port());
    let run = Run::new();
    let env = [
        ("TRIVY_ECR_JAVA_DB_REPOSITORIES", java_chain.as_str()),
        ("TRIVY_ECR_MAX_WAIT", "2s"),
        ("TRIVY_ECR_MAX_ATTEMPTS", "2"),
    ];
    let healthy = run.scan(&[db_repo(&mirror)], &image, &env);
    assert_eq!(healthy.status.code(), Some(1), "{}", stderr(&healthy));
    let healthy_findings = run.report().findings();
    assert!(healthy_findings.contains(&trivy_db::expected_jar_finding()));

    mirror.add_rule("/trivy-java-db/", When::Always, Fault::Unavailable);
    age_cached_db(&run.cache(), "java-db", 1, hours(30));
    // trivy looks JARs up in the Java DB while analysing layers; drop its layer cache so it
    // analyses (and wants the Java DB) again.
    std::fs::remove_dir_all(run.cache().join("fanal")).unwrap();
    let out = run.scan(&[db_repo(&mirror)], &image, &env);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("warning: DEGRADED: the cached Java DB is 1day 6h old"),
        "{err}"
    );
    assert_eq!(run.report().findings(), healthy_findings);
}

#[test]
fn the_checks_bundle_falls_back_too() {
    let scene = Scene::start();
    push_checks_bundle(&scene.registry);
    scene.registry.client().push_java_db(
        "trivy-java-db",
        "1",
        &rig::java_db::javadb_tar_gz(&DbSpec::fresh()),
    );
    let mirror = scene.mirror();
    let run = Run::new();
    let cache = run.cache();
    let checks_repo = format!("{}/trivy-checks:2", mirror.host_port());
    let java_repo = format!("{}/trivy-java-db:1", mirror.host_port());
    let mut pull = run.command(
        &[db_repo(&mirror)],
        &[
            "db",
            "pull",
            "--checks",
            "--cache-dir",
            cache.to_str().unwrap(),
        ],
    );
    pull.env("TRIVY_ECR_CHECKS_REPOSITORIES", &checks_repo);
    let out = output_within(pull, Duration::from_secs(60));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));

    // A day and a half later the bundle is due, and its mirror is down.
    let metadata_path = cache.join("policy/metadata.json");
    let mut metadata: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&metadata_path).unwrap()).unwrap();
    let then = std::time::SystemTime::now() - hours(36);
    metadata["DownloadedAt"] = humantime::format_rfc3339_seconds(then).to_string().into();
    std::fs::write(&metadata_path, metadata.to_string()).unwrap();
    mirror.add_rule("/trivy-checks/", When::Always, Fault::Unavailable);

    let mut scan = run.command(
        &[db_repo(&mirror)],
        &[
            "image",
            "--cache-dir",
            cache.to_str().unwrap(),
            "--skip-version-check",
            "--disable-telemetry",
            "--scanners",
            "vuln,misconfig",
            "--format",
            "json",
            "--output",
            "report.json",
            &scene.image(),
        ],
    );
    scan.env("TRIVY_ECR_PREFETCH", "all")
        .env("TRIVY_ECR_CHECKS_REPOSITORIES", &checks_repo)
        .env("TRIVY_ECR_JAVA_DB_REPOSITORIES", &java_repo)
        .env("TRIVY_ECR_MAX_WAIT", "2s")
        .env("TRIVY_ECR_LOG", "debug");
    let out = output_within(scan, Duration::from_secs(120));
    let err = stderr(&out);
    assert_eq!(
        out.status.code(),
        Some(1),
        "the gate decides as usual: {err}"
    );
    assert!(
        err.contains("warning: DEGRADED: the cached checks bundle is 1day 12h old (limit 3days)"),
        "{err}"
    );
    assert!(
        err.contains("server error (HTTP 503)"),
        "names the mirror's error: {err}"
    );
    assert!(
        err.contains("--skip-check-update"),
        "trivy uses the cached bundle: {err}"
    );
    assert_eq!(
        run.report().findings(),
        trivy_db::expected_alpine_findings()
    );
}
