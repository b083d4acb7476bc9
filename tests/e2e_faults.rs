//! The fault matrix: every way a mirror, the cache or trivy can fail, each row ending with its
//! documented exit code, one clear line naming the cause, no process left behind, no temp file
//! left behind, and a cache that is either the old DB or the new one, never a mix. Then signals
//! during the download and during the scan, and parallel runs on one cache.

mod fake;
mod native;
mod rig;

use fake::{REPORT, fake_trivy};

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant, SystemTime};

use native::{Run, Scene, blob_gets, db_repo, staging_leftovers, stderr};
use rig::proxy::{Fault, FaultProxy, When, refused_addr};
use rig::trivy_db::{self, DbSpec};

/// The DB a row's cache starts with: built two days ago, padded so its bytes differ from the
/// registry's, downloaded yesterday (so trivy-ecr wants a new one).
fn old_spec() -> DbSpec {
    let yesterday = SystemTime::now() - Duration::from_secs(86_400);
    DbSpec::stale().with_padding(4096).downloaded_at(yesterday)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CacheAfter {
    Old,
    New,
}

/// What a row sets up: the mirror chain, extra environment, proxies to keep alive.
struct Setup {
    chain: Vec<String>,
    env: Vec<(&'static str, String)>,
    _mirrors: Vec<FaultProxy>,
}

impl Setup {
    fn chain(mirrors: Vec<FaultProxy>) -> Setup {
        Setup {
            chain: mirrors.iter().map(db_repo).collect(),
            env: Vec::new(),
            _mirrors: mirrors,
        }
    }
}

struct Row {
    name: &'static str,
    setup: fn(&Scene, &Run) -> Setup,
    exit: i32,
    message: &'static str,
    cache: CacheAfter,
}

fn faulty(scene: &Scene, path: &str, when: When, fault: Fault) -> FaultProxy {
    let mirror = scene.mirror();
    mirror.add_rule(path, when, fault);
    mirror
}

fn manifest_fault(scene: &Scene, edit: fn(&mut serde_json::Value)) -> Setup {
    let response = scene.registry.client().get(
        "/v2/trivy-db/manifests/2",
        Some("application/vnd.oci.image.manifest.v1+json"),
    );
    let mut manifest: serde_json::Value = serde_json::from_slice(&response.body).unwrap();
    edit(&mut manifest);
    let body = manifest.to_string();
    Setup::chain(vec![faulty(
        scene,
        "/trivy-db/manifests/",
        When::Always,
        Fault::Status { status: 200, body },
    )])
}

fn fake(setup: &mut Setup, vars: &[(&'static str, &str)]) {
    setup
        .env
        .push(("TRIVY_ECR_TRIVY", fake_trivy().display().to_string()));
    setup.env.push(("FAKE_TRIVY_REPORT", REPORT.into()));
    for (k, v) in vars {
        setup.env.push((k, v.to_string()));
    }
}

fn rows() -> Vec<Row> {
    vec![
        Row {
            name: "429 always",
            exit: 3,
            message: "rate limited (429 TOOMANYREQUESTS",
            cache: CacheAfter::Old,
            setup: |s, _| {
                Setup::chain(vec![faulty(
                    s,
                    "/trivy-db/",
                    When::Always,
                    Fault::too_many_requests(),
                )])
            },
        },
        Row {
            name: "429 for the first 2 requests",
            exit: 1,
            message: "rate limited",
            cache: CacheAfter::New,
            setup: |s, _| {
                let mut setup = Setup::chain(vec![faulty(
                    s,
                    "/trivy-db/manifests/",
                    When::FirstN(2),
                    Fault::too_many_requests(),
                )]);
                // Two backoffs (1-2 s, then 2-4 s) fit in this budget.
                setup.env.push(("TRIVY_ECR_MAX_WAIT", "10s".into()));
                setup
            },
        },
        Row {
            name: "503 always",
            exit: 3,
            message: "server error (HTTP 503)",
            cache: CacheAfter::Old,
            setup: |s, _| {
                Setup::chain(vec![faulty(
                    s,
                    "/trivy-db/",
                    When::Always,
                    Fault::Unavailable,
                )])
            },
        },
        Row {
            name: "connection refused",
            exit: 3,
            message: "connection refused",
            cache: CacheAfter::Old,
            setup: |_, _| Setup {
                chain: vec![format!("{}/trivy-db:2", refused_addr())],
                env: vec![],
                _mirrors: vec![],
            },
        },
        Row {
            name: "DNS failure",
            exit: 3,
            message: "host name not resolved (DNS)",
            cache: CacheAfter::Old,
            setup: |_, _| Setup {
                chain: vec!["trivy-ecr-fault-matrix.invalid/trivy-db:2".into()],
                env: vec![],
                _mirrors: vec![],
            },
        },
        Row {
            name: "stall, then the next mirror",
            exit: 1,
            message: "timed out",
            cache: CacheAfter::New,
            setup: |s, _| {
                Setup::chain(vec![
                    faulty(s, "/trivy-db/", When::Always, Fault::Stall),
                    s.mirror(),
                ])
            },
        },
        Row {
            name: "drop mid-blob",
            exit: 3,
            message: "connection dropped",
            cache: CacheAfter::Old,
            setup: |s, _| {
                Setup::chain(vec![faulty(
                    s,
                    "/trivy-db/blobs/",
                    When::Always,
                    Fault::DropMidBody,
                )])
            },
        },
        Row {
            name: "corrupt blob",
            exit: 3,
            message: "artifact damaged in transit",
            cache: CacheAfter::Old,
            setup: |s, _| {
                Setup::chain(vec![faulty(
                    s,
                    "/trivy-db/blobs/",
                    When::Always,
                    Fault::CorruptBody,
                )])
            },
        },
        Row {
            name: "manifest of the wrong media type",
            exit: 3,
            message: "not a trivy DB artifact (manifest media type",
            cache: CacheAfter::Old,
            setup: |s, _| {
                manifest_fault(s, |m| {
                    m["mediaType"] =
                        "application/vnd.docker.distribution.manifest.list.v2+json".into()
                })
            },
        },
        Row {
            name: "manifest with two layers",
            exit: 3,
            message: "not a trivy DB artifact (2 layers, expected 1)",
            cache: CacheAfter::Old,
            setup: |s, _| {
                manifest_fault(s, |m| {
                    let layer = m["layers"][0].clone();
                    m["layers"].as_array_mut().unwrap().push(layer);
                })
            },
        },
        Row {
            name: "a 5 GB layer",
            exit: 3,
            message: "exceeds the",
            cache: CacheAfter::Old,
            setup: |s, _| manifest_fault(s, |m| m["layers"][0]["size"] = 5_000_000_000u64.into()),
        },
        Row {
            name: "a tar bomb",
            exit: 3,
            message: "unpacks to more than",
            cache: CacheAfter::Old,
            setup: |s, _| {
                let zeros = vec![0u8; 80 << 20];
                let bomb = rig::tarball::gzip(&rig::tarball::tar(&[
                    rig::tarball::Entry::file("trivy.db", &zeros),
                    rig::tarball::Entry::file("metadata.json", b"{\"Version\":2}"),
                ]));
                s.registry
                    .client()
                    .push_trivy_db("bomb/trivy-db", "2", &bomb);
                Setup {
                    chain: vec![format!("{}/bomb/trivy-db:2", s.registry.host_port())],
                    env: vec![],
                    _mirrors: vec![],
                }
            },
        },
        Row {
            name: "trivy missing",
            exit: 4,
            message: "no such file",
            cache: CacheAfter::Old,
            setup: |s, _| {
                let mut setup = Setup::chain(vec![s.mirror()]);
                setup
                    .env
                    .push(("TRIVY_ECR_TRIVY", "/nonexistent/trivy".into()));
                setup
            },
        },
        Row {
            name: "trivy not executable",
            exit: 4,
            message: "is not an executable file",
            cache: CacheAfter::Old,
            setup: |s, run| {
                let plain = run.dir.path().join("trivy");
                std::fs::write(&plain, "not a program").unwrap();
                let mut setup = Setup::chain(vec![s.mirror()]);
                setup
                    .env
                    .push(("TRIVY_ECR_TRIVY", plain.display().to_string()));
                setup
            },
        },
        Row {
            name: "trivy crashing (SIGSEGV)",
            exit: 139,
            message: "trivy was killed by SIGSEGV (11)",
            cache: CacheAfter::New,
            setup: |s, _| {
                let mut setup = Setup::chain(vec![s.mirror()]);
                fake(&mut setup, &[("FAKE_TRIVY_DIE", "11")]);
                setup
            },
        },
        Row {
            name: "trivy hanging past TRIVY_ECR_TIMEOUT",
            exit: 5,
            message: "did not finish within 2s (TRIVY_ECR_TIMEOUT)",
            cache: CacheAfter::New,
            setup: |s, _| {
                let mut setup = Setup::chain(vec![s.mirror()]);
                fake(
                    &mut setup,
                    &[
                        ("FAKE_TRIVY_HANG", "1"),
                        ("FAKE_TRIVY_IGNORE_TERM", "1"),
                        ("TRIVY_ECR_TIMEOUT", "2s"),
                    ],
                );
                setup
            },
        },
        Row {
            name: "malformed report",
            exit: 5,
            message: "report",
            cache: CacheAfter::New,
            setup: |s, run| {
                let bad = run.dir.path().join("bad.json");
                std::fs::write(&bad, b"\x00\x01 not json").unwrap();
                let mut setup = Setup::chain(vec![s.mirror()]);
                fake(&mut setup, &[]);
                setup
                    .env
                    .push(("FAKE_TRIVY_REPORT", bad.display().to_string()));
                setup
            },
        },
        Row {
            name: "truncated report",
            exit: 5,
            message: "truncated",
            cache: CacheAfter::New,
            setup: |s, run| {
                let whole = std::fs::read(REPORT).unwrap();
                let cut = run.dir.path().join("cut.json");
                std::fs::write(&cut, &whole[..whole.len() / 2]).unwrap();
                let mut setup = Setup::chain(vec![s.mirror()]);
                fake(&mut setup, &[]);
                setup
                    .env
                    .push(("FAKE_TRIVY_REPORT", cut.display().to_string()));
                setup
            },
        },
    ]
}

/// Processes still running whose command line mentions `dir` (trivy started for this run).
fn processes_mentioning(dir: &Path) -> Vec<String> {
    let needle = dir.to_string_lossy().into_owned();
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .chars()
                .all(|c| c.is_ascii_digit())
        })
        .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
        .map(|raw| String::from_utf8_lossy(&raw).replace('\0', " "))
        .filter(|cmd| cmd.contains(&needle))
        .collect()
}

fn cache_state(run: &Run, old_db: &[u8]) -> Option<CacheAfter> {
    let db = std::fs::read(run.cache().join("db/trivy.db")).ok()?;
    let metadata: serde_json::Value =
        serde_json::from_slice(&std::fs::read(run.cache().join("db/metadata.json")).ok()?).ok()?;
    let updated = humantime::parse_rfc3339_weak(metadata["UpdatedAt"].as_str()?).ok()?;
    let age = SystemTime::now()
        .duration_since(updated)
        .unwrap_or_default();
    match (db == old_db, age > Duration::from_secs(86_400)) {
        (true, true) => Some(CacheAfter::Old),
        (false, false) => Some(CacheAfter::New),
        _ => None, // a mix of the two
    }
}

#[test]
fn fault_matrix() {
    let scene = Scene::start();
    let mut failures = Vec::new();
    for row in rows() {
        let run = Run::new();
        trivy_db::install_into_cache(&run.cache(), &old_spec());
        let old_db = std::fs::read(run.cache().join("db/trivy.db")).unwrap();
        let tmp = run.dir.path().join("tmp");
        std::fs::create_dir(&tmp).unwrap();
        let setup = (row.setup)(&scene, &run);
        let mut env: Vec<(&str, String)> = vec![
            ("TMPDIR", tmp.display().to_string()),
            ("TRIVY_ECR_MAX_DB_AGE", "0".into()),
            ("TRIVY_ECR_HTTP_TIMEOUT", "2s".into()),
            ("TRIVY_ECR_MAX_WAIT", "3s".into()),
            ("TRIVY_ECR_MAX_ATTEMPTS", "3".into()),
        ];
        env.extend(setup.env.iter().map(|(k, v)| (*k, v.clone())));
        let env_refs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let started = Instant::now();
        let out = run.scan(&setup.chain, &scene.image(), &env_refs);
        let elapsed = started.elapsed();
        let err = stderr(&out);
        let mut problems = Vec::new();
        if out.status.code() != Some(row.exit) {
            problems.push(format!(
                "exit {:?}, expected {}",
                out.status.code(),
                row.exit
            ));
        }
        let messages: Vec<&str> = err
            .lines()
            .filter(|l| l.starts_with("trivy-ecr: error") || l.starts_with("trivy-ecr: "))
            .collect();
        if !messages.iter().any(|l| l.contains(row.message)) {
            problems.push(format!("no line names the cause ({:?})", row.message));
        }
        if row.exit != 1
            && row.exit != 139
            && !err.lines().any(|l| l.starts_with("trivy-ecr: error:"))
        {
            problems.push("no `trivy-ecr: error:` line".into());
        }
        let state = cache_state(&run, &old_db);
        if state != Some(row.cache) {
            problems.push(format!("cache is {state:?}, expected {:?}", row.cache));
        }
        if !staging_leftovers(&run.cache()).is_empty() {
            problems.push(format!(
                "staging left in the cache: {:?}",
                staging_leftovers(&run.cache())
            ));
        }
        let leftovers: Vec<_> = std::fs::read_dir(&tmp)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        if !leftovers.is_empty() {
            problems.push(format!("temp files left: {leftovers:?}"));
        }
        let orphans = processes_mentioning(run.dir.path());
        if !orphans.is_empty() {
            problems.push(format!("processes left: {orphans:?}"));
        }
        eprintln!(
            "{:<40} exit {:?} in {:>5.1}s {}",
            row.name,
            out.status.code(),
            elapsed.as_secs_f64(),
            if problems.is_empty() { "ok" } else { "FAILED" }
        );
        if !problems.is_empty() {
            failures.push(format!("{}: {}\n{err}", row.name, problems.join("; ")));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

fn spawn(mut cmd: Command) -> std::process::Child {
    cmd.stdout(Stdio::null()).stderr(Stdio::piped());
    cmd.spawn().unwrap()
}

fn wait_within(child: std::process::Child, limit: Duration) -> Output {
    let deadline = Instant::now() + limit;
    let pid = child.id() as i32;
    let waiter = std::thread::spawn(move || child.wait_with_output().unwrap());
    while !waiter.is_finished() {
        if Instant::now() > deadline {
            unsafe { libc::kill(pid, libc::SIGKILL) };
            panic!("trivy-ecr did not end within {limit:?} after the signal");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    waiter.join().unwrap()
}

#[test]
fn signals_during_the_download_leave_the_old_cache_and_no_temp_files() {
    let scene = Scene::start();
    for (signal, code) in [(libc::SIGTERM, 143), (libc::SIGINT, 130)] {
        let stalled = scene.mirror();
        stalled.add_rule("/trivy-db/blobs/", When::Always, Fault::StallMidBody);
        let run = Run::new();
        trivy_db::install_into_cache(&run.cache(), &old_spec());
        let old_db = std::fs::read(run.cache().join("db/trivy.db")).unwrap();
        let tmp = run.dir.path().join("tmp");
        std::fs::create_dir(&tmp).unwrap();
        let cache = run.cache();
        let mut cmd = run.command(
            &[db_repo(&stalled)],
            &[
                "image",
                "--cache-dir",
                cache.to_str().unwrap(),
                "--skip-version-check",
                &scene.image(),
            ],
        );
        cmd.env("TMPDIR", &tmp).env("TRIVY_ECR_HTTP_TIMEOUT", "60s");
        let child = spawn(cmd);
        assert!(
            stalled.wait_for_requests("/trivy-db/blobs/", 1, Duration::from_secs(20)),
            "the download never started"
        );
        unsafe { libc::kill(child.id() as i32, signal) };
        let out = wait_within(child, Duration::from_secs(10));
        assert_eq!(out.status.code(), Some(code), "{}", stderr(&out));
        assert_eq!(cache_state(&run, &old_db), Some(CacheAfter::Old));
        assert!(
            staging_leftovers(&cache).is_empty(),
            "{:?}",
            staging_leftovers(&cache)
        );
        assert_eq!(std::fs::read_dir(&tmp).unwrap().count(), 0);
        assert!(processes_mentioning(run.dir.path()).is_empty());
        assert!(
            !scene.registry.log().contains("/v2/app/manifests"),
            "trivy never started"
        );
    }
}

#[test]
fn signals_during_the_scan_stop_trivy_and_clean_up() {
    let scene = Scene::start();
    for (signal, code, name) in [
        (libc::SIGTERM, 143, "SIGTERM"),
        (libc::SIGINT, 130, "SIGINT"),
    ] {
        let mirror = scene.mirror();
        let run = Run::new();
        let tmp = run.dir.path().join("tmp");
        std::fs::create_dir(&tmp).unwrap();
        let (ready, signals) = (run.dir.path().join("ready"), run.dir.path().join("signals"));
        let cache = run.cache();
        let mut cmd = run.command(
            &[db_repo(&mirror)],
            &[
                "image",
                "--cache-dir",
                cache.to_str().unwrap(),
                &scene.image(),
            ],
        );
        cmd.env("TMPDIR", &tmp)
            .env("TRIVY_ECR_TRIVY", fake_trivy())
            .env("FAKE_TRIVY_HANG", "1")
            .env("FAKE_TRIVY_READY", &ready)
            .env("FAKE_TRIVY_SIGNALS", &signals);
        let child = spawn(cmd);
        let deadline = Instant::now() + Duration::from_secs(20);
        while !ready.exists() {
            assert!(Instant::now() < deadline, "trivy never started");
            std::thread::sleep(Duration::from_millis(10));
        }
        unsafe { libc::kill(child.id() as i32, signal) };
        let out = wait_within(child, Duration::from_secs(10));
        assert_eq!(out.status.code(), Some(code), "{}", stderr(&out));
        assert_eq!(
            std::fs::read_to_string(&signals).unwrap().trim(),
            name,
            "trivy got it once"
        );
        assert_eq!(
            std::fs::read_dir(&tmp).unwrap().count(),
            0,
            "the private report dir is gone"
        );
        assert!(processes_mentioning(run.dir.path()).is_empty());
        assert!(
            db_integrity_ok(&cache),
            "the DB downloaded before the scan is whole"
        );
    }
}

fn db_integrity_ok(cache: &Path) -> bool {
    trivy_ecr::db_integrity::check_bolt(&cache.join("db/trivy.db")).is_ok()
}

#[test]
fn eight_parallel_runs_on_a_cold_a_stale_and_a_fresh_cache() {
    let scene = Scene::start();
    for (state, expected_downloads) in [("cold", 1), ("stale", 1), ("fresh", 0)] {
        let mirror = scene.mirror();
        let run = Run::new();
        match state {
            "stale" => trivy_db::install_into_cache(&run.cache(), &old_spec()),
            "fresh" => trivy_db::install_into_cache(&run.cache(), &DbSpec::fresh()),
            _ => {}
        }
        let cache = run.cache();
        let children: Vec<_> = (0..8)
            .map(|_| {
                spawn(run.command(
                    &[db_repo(&mirror)],
                    &[
                        "image",
                        "--cache-dir",
                        cache.to_str().unwrap(),
                        "--skip-version-check",
                        "--scanners",
                        "vuln",
                        "-q",
                        &scene.image(),
                    ],
                ))
            })
            .collect();
        for child in children {
            let out = wait_within(child, Duration::from_secs(120));
            assert_eq!(out.status.code(), Some(1), "{state}: {}", stderr(&out));
        }
        assert_eq!(
            blob_gets(&mirror),
            expected_downloads,
            "{state}: {:?}",
            mirror.requests()
        );
        assert!(staging_leftovers(&cache).is_empty());
    }
}
