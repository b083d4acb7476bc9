//! trivy-ecr's own logic against a fake trivy (`examples/fake_trivy.rs`): retries, mirror
//! rotation, backoff bounds, the gate, exit codes, signal forwarding and the recursion guard.
//! Fast and deterministic; the proof against the real trivy and a real registry is in `e2e_*`.

mod fake;

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use fake::{REPORT, Sandbox};

const ECR: &str = "public.ecr.aws/aquasecurity/trivy-db:2";
const GCR: &str = "mirror.gcr.io/aquasec/trivy-db:2";
const GHCR: &str = "ghcr.io/aquasecurity/trivy-db:2";

fn flag_value<'a>(argv: &'a [String], name: &str) -> Option<&'a str> {
    argv.iter()
        .position(|a| a == name)
        .and_then(|i| argv.get(i + 1))
        .map(String::as_str)
}

#[test]
fn gate_fails_on_criticals_and_renders_the_requested_format() {
    let sb = Sandbox::new();
    let run = sb.run(&["image", "--severity", "CRITICAL,HIGH", "app:latest"], &[]);
    assert_eq!(run.code(), 1, "{}", run.stderr());
    assert!(
        run.stderr()
            .contains("trivy-ecr: FAILED: 2 findings at or above CRITICAL (exit 1)"),
        "{}",
        run.stderr()
    );
    assert!(
        run.stderr()
            .contains("CVE-2099-0002 busybox 1.36.1-r15 -> no fix yet")
    );
    assert!(
        run.stdout().starts_with("rendered table from "),
        "{}",
        run.stdout()
    );

    let runs = sb.trivy_runs();
    assert_eq!(runs.len(), 2, "one scan, one convert: {runs:?}");
    let scan = &runs[0].0;
    assert_eq!(
        flag_value(scan, "--db-repository"),
        Some(format!("{ECR},{GCR},{GHCR}").as_str())
    );
    assert_eq!(flag_value(scan, "--format"), Some("json"));
    assert_eq!(flag_value(scan, "--exit-code"), Some("0"));
    assert_eq!(flag_value(scan, "--severity"), Some("CRITICAL,HIGH"));
    assert_eq!(scan.last().unwrap(), "app:latest");
    let convert = &runs[1].0;
    assert_eq!(convert[0], "convert");
    assert_eq!(flag_value(convert, "--format"), Some("table"));
    assert_eq!(flag_value(convert, "--severity"), Some("CRITICAL,HIGH"));
    // The private report is gone afterwards.
    assert!(!Path::new(flag_value(scan, "--output").unwrap()).exists());
}

#[test]
fn thresholds_and_trivy_exit_flags() {
    let sb = Sandbox::new();
    type Case<'a> = (&'a [&'a str], &'a [(&'a str, &'a str)], i32);
    let cases: &[Case] = &[
        (&["image", "x"], &[("TRIVY_ECR_FAIL_ON", "none")], 0),
        (&["image", "--ecr-fail-on", "none", "x"], &[], 0),
        (
            &["image", "--ecr-fail-on=HIGH", "x"],
            &[("TRIVY_ECR_FAIL_ON", "none")],
            1,
        ),
        (
            &["image", "--exit-code", "9", "x"],
            &[("TRIVY_ECR_FAIL_ON", "none")],
            9,
        ),
        (&["image", "--exit-code", "0", "x"], &[], 1),
        (&["image", "x"], &[("TRIVY_EXIT_CODE", "7")], 7),
    ];
    for (args, env, expected) in cases {
        let run = sb.run(args, env);
        assert_eq!(run.code(), *expected, "{args:?} {env:?}: {}", run.stderr());
    }
}

#[test]
fn json_output_file_is_the_report_itself() {
    let sb = Sandbox::new();
    let run = sb.run(&["image", "-f", "json", "-o", "out.json", "x"], &[]);
    assert_eq!(run.code(), 1, "{}", run.stderr());
    assert_eq!(
        std::fs::read(sb.path().join("out.json")).unwrap(),
        std::fs::read(REPORT).unwrap()
    );
    assert_eq!(sb.trivy_runs().len(), 1, "json needs no convert");
    let leftovers: Vec<_> = std::fs::read_dir(sb.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(
        leftovers.len(),
        2,
        "only out.json and the record: {leftovers:?}"
    );
}

#[test]
fn other_formats_go_through_convert_into_the_output_file() {
    let sb = Sandbox::new();
    let run = sb.run(
        &["image", "--format", "sarif", "--output", "r.sarif", "x"],
        &[],
    );
    assert_eq!(run.code(), 1, "{}", run.stderr());
    let text = std::fs::read_to_string(sb.path().join("r.sarif")).unwrap();
    assert!(text.starts_with("rendered sarif from"), "{text}");
    assert_eq!(run.stdout(), "");
}

#[test]
fn the_seed_failure_fails_over_to_the_next_mirror() {
    // Old trivy takes one repository at a time: trivy-ecr moves to the next itself, at once.
    let sb = Sandbox::new();
    let env = [
        ("FAKE_TRIVY_VERSION", "0.55.2"),
        ("FAKE_TRIVY_BAD", "public.ecr.aws=429"),
    ];
    let run = sb.run(&["image", "x"], &env);
    assert_eq!(run.code(), 1, "{}", run.stderr());
    let scans: Vec<_> = sb
        .trivy_runs()
        .into_iter()
        .filter(|(a, _)| a[0] == "image")
        .collect();
    let repos: Vec<_> = scans
        .iter()
        .map(|(a, _)| flag_value(a, "--db-repository").unwrap().to_string())
        .collect();
    assert_eq!(repos, [ECR, GCR]);
    assert!(run.stderr().contains(&format!(
        "trivy-ecr: vulnerability DB: {ECR} rate limited (429 TOOMANYREQUESTS, retry after 153.6µs); retrying with {GCR} first in 0.0s (attempt 2/5)"
    )), "{}", run.stderr());
    assert!(run.elapsed < Duration::from_secs(5), "{:?}", run.elapsed);
}

#[test]
fn connection_refused_rotates_the_chain_where_trivy_would_abort() {
    let sb = Sandbox::new();
    let run = sb.run(
        &["image", "x"],
        &[("FAKE_TRIVY_BAD", "public.ecr.aws=refused")],
    );
    assert_eq!(run.code(), 1, "{}", run.stderr());
    let scans: Vec<_> = sb
        .trivy_runs()
        .into_iter()
        .filter(|(a, _)| a[0] == "image")
        .collect();
    assert_eq!(scans.len(), 2);
    assert_eq!(
        flag_value(&scans[1].0, "--db-repository"),
        Some(format!("{GCR},{GHCR},{ECR}").as_str())
    );
    assert!(
        run.stderr()
            .contains("connection refused; retrying with mirror.gcr.io"),
        "{}",
        run.stderr()
    );
}

#[test]
fn every_mirror_rate_limited_ends_with_exit_3_naming_each_mirror() {
    let sb = Sandbox::new();
    let env = [
        (
            "FAKE_TRIVY_BAD",
            "public.ecr.aws=429;mirror.gcr.io=503;ghcr.io=429",
        ),
        ("TRIVY_ECR_MAX_WAIT", "3s"),
    ];
    let run = sb.run(&["image", "x"], &env);
    assert_eq!(run.code(), 3, "{}", run.stderr());
    let last = run.stderr().lines().last().unwrap().to_string();
    assert!(
        last.starts_with("trivy-ecr: error: could not obtain the vulnerability DB from any mirror"),
        "{last}"
    );
    for expected in [
        format!("{ECR}: rate limited"),
        format!("{GCR}: server error (HTTP 503)"),
        format!("{GHCR}: rate limited"),
    ] {
        assert!(last.contains(&expected), "{expected} missing from {last}");
    }
    assert!(
        run.elapsed < Duration::from_secs(10),
        "bounded by the 3s budget: {:?}",
        run.elapsed
    );
    assert!(
        sb.trivy_runs().iter().all(|(a, _)| a[0] != "convert"),
        "no report rendered"
    );
}

#[test]
fn attempts_are_bounded() {
    let sb = Sandbox::new();
    let env = [
        (
            "FAKE_TRIVY_BAD",
            "public.ecr.aws=refused;mirror.gcr.io=refused;ghcr.io=refused",
        ),
        ("TRIVY_ECR_MAX_ATTEMPTS", "3"),
    ];
    let run = sb.run(&["image", "x"], &env);
    assert_eq!(run.code(), 3, "{}", run.stderr());
    assert_eq!(sb.trivy_runs().len(), 3);
    assert!(
        run.stderr().contains("after 3 attempts"),
        "{}",
        run.stderr()
    );
}

#[test]
fn a_users_own_repository_is_retried_with_backoff_not_replaced() {
    let sb = Sandbox::new();
    let env = [
        ("FAKE_TRIVY_BAD", "my.registry=429"),
        ("FAKE_TRIVY_BAD_RUNS", "1"),
    ];
    let run = sb.run(&["image", "--db-repository", "my.registry/db:2", "x"], &env);
    assert_eq!(run.code(), 1, "{}", run.stderr());
    let scans: Vec<_> = sb
        .trivy_runs()
        .into_iter()
        .filter(|(a, _)| a[0] == "image")
        .collect();
    assert_eq!(scans.len(), 2);
    for (argv, _) in &scans {
        let repos: Vec<_> = argv
            .windows(2)
            .filter(|w| w[0] == "--db-repository")
            .map(|w| w[1].as_str())
            .collect();
        assert_eq!(repos, ["my.registry/db:2"], "{argv:?}");
    }
    let spacing = scans[1].1 - scans[0].1;
    assert!(
        (1.0..10.0).contains(&spacing),
        "backoff of at least the 1s base: {spacing}"
    );
}

#[test]
fn user_choices_from_env_and_config_file_are_respected() {
    let sb = Sandbox::new();
    sb.run(
        &["image", "x"],
        &[("TRIVY_DB_REPOSITORY", "env.registry/db:2")],
    );
    std::fs::write(
        sb.path().join("trivy.yaml"),
        "db:\n  java-repository: cfg.registry/java-db:1\n",
    )
    .unwrap();
    sb.run(&["image", "x"], &[]);
    let scans: Vec<_> = sb
        .trivy_runs()
        .into_iter()
        .filter(|(a, _)| a[0] == "image")
        .collect();
    assert!(
        !scans[0].0.iter().any(|a| a == "--db-repository"),
        "{:?}",
        scans[0].0
    );
    assert!(scans[0].0.iter().any(|a| a == "--java-db-repository"));
    assert!(scans[1].0.iter().any(|a| a == "--db-repository"));
    assert!(
        !scans[1].0.iter().any(|a| a == "--java-db-repository"),
        "{:?}",
        scans[1].0
    );
}

#[test]
fn java_db_failures_rotate_the_java_chain() {
    let sb = Sandbox::new();
    let env = [
        ("FAKE_TRIVY_JAVA", "1"),
        ("FAKE_TRIVY_BAD", "trivy-java-db=refused"),
        ("FAKE_TRIVY_BAD_RUNS", "1"),
    ];
    let run = sb.run(&["image", "x"], &env);
    assert_eq!(run.code(), 1, "{}", run.stderr());
    let scans: Vec<_> = sb
        .trivy_runs()
        .into_iter()
        .filter(|(a, _)| a[0] == "image")
        .collect();
    assert_eq!(scans.len(), 2);
    assert!(
        flag_value(&scans[1].0, "--java-db-repository")
            .unwrap()
            .starts_with("mirror.gcr.io/aquasec/trivy-java-db:1")
    );
    assert!(
        run.stderr().contains(
            "trivy-ecr: Java DB: public.ecr.aws/aquasecurity/trivy-java-db:1 connection refused"
        ),
        "{}",
        run.stderr()
    );
}

#[test]
fn other_failures_are_not_retried() {
    let sb = Sandbox::new();
    let run = sb.run(
        &["image", "nope"],
        &[(
            "FAKE_TRIVY_FATAL",
            "run error: image scan error: unable to find the specified image \"nope\"",
        )],
    );
    assert_eq!(run.code(), 5, "{}", run.stderr());
    assert_eq!(sb.trivy_runs().len(), 1);
    assert!(run.stderr().contains("unable to find the specified image"));
    assert!(
        run.stderr()
            .contains("trivy-ecr: error: trivy failed (exit 1)")
    );
}

#[test]
fn passthrough_commands_keep_argv_and_exit_code() {
    let sb = Sandbox::new();
    let run = sb.run(
        &[
            "convert",
            "--format",
            "sarif",
            "--",
            "--db-repository",
            "r.json",
        ],
        &[("FAKE_TRIVY_EXIT", "7")],
    );
    let runs = sb.trivy_runs();
    assert_eq!(
        runs[0].0,
        [
            "convert",
            "--format",
            "sarif",
            "--",
            "--db-repository",
            "r.json"
        ]
    );
    assert_eq!(
        run.code(),
        0,
        "convert via the fake renders and exits 0: {}",
        run.stderr()
    );
    let run = sb.run(&["plugin", "list"], &[("FAKE_TRIVY_EXIT", "7")]);
    assert_eq!(run.code(), 7);
    assert_eq!(sb.trivy_runs().last().unwrap().0, ["plugin", "list"]);
}

#[test]
fn trivy_killed_by_a_signal_is_reported_by_name() {
    let sb = Sandbox::new();
    let run = sb.run(&["image", "x"], &[("FAKE_TRIVY_DIE", "11")]);
    assert_eq!(run.code(), 139, "{}", run.stderr());
    assert!(
        run.stderr().contains("trivy was killed by SIGSEGV (11)"),
        "{}",
        run.stderr()
    );
}

fn wait_for(path: &Path) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !path.exists() {
        assert!(
            Instant::now() < deadline,
            "{} never appeared",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn sigterm_and_sigint_are_forwarded_and_reported_as_128_plus_n() {
    for (signal, code) in [(libc::SIGTERM, 143), (libc::SIGINT, 130)] {
        let sb = Sandbox::new();
        let ready = sb.path().join("ready");
        let signals = sb.path().join("signals");
        let child = sb
            .command(&["image", "x"])
            .env("FAKE_TRIVY_HANG", "1")
            .env("FAKE_TRIVY_READY", &ready)
            .env("FAKE_TRIVY_SIGNALS", &signals)
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        wait_for(&ready);
        unsafe { libc::kill(child.id() as i32, signal) };
        let output = child.wait_with_output().unwrap();
        assert_eq!(
            output.status.code(),
            Some(code),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let got = std::fs::read_to_string(&signals).unwrap();
        let name = if signal == libc::SIGTERM {
            "SIGTERM"
        } else {
            "SIGINT"
        };
        assert_eq!(got.trim(), name, "trivy got the signal once");
        assert!(
            String::from_utf8_lossy(&output.stderr)
                .contains("Received signal, attempting graceful shutdown")
        );
    }
}

#[test]
fn never_runs_itself() {
    let sb = Sandbox::new();
    let own = Path::new(env!("CARGO_BIN_EXE_trivy-ecr"));
    // Installed as `trivy` on PATH and nothing else there: not found, rather than a loop.
    let bin = sb.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    std::os::unix::fs::symlink(own, bin.join("trivy")).unwrap();
    let mut cmd = sb.command(&["image", "x"]);
    cmd.env_remove("TRIVY_ECR_TRIVY").env("PATH", &bin);
    let out = cmd.output().unwrap();
    assert_eq!(out.status.code(), Some(4));
    assert!(String::from_utf8_lossy(&out.stderr).contains("trivy not found on PATH"));

    // Pointed at itself explicitly.
    let run = sb.run(
        &["image", "x"],
        &[("TRIVY_ECR_TRIVY", own.to_str().unwrap())],
    );
    assert_eq!(run.code(), 4);
    assert!(
        run.stderr().contains("is trivy-ecr itself"),
        "{}",
        run.stderr()
    );

    // A wrapper script named trivy that calls trivy-ecr again: the nesting guard stops it.
    let script = bin.join("trivy-shim");
    std::fs::write(
        &script,
        format!("#!/bin/sh\nexec {} \"$@\"\n", own.display()),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let run = sb.run(
        &["version"],
        &[("TRIVY_ECR_TRIVY", script.to_str().unwrap())],
    );
    assert_eq!(run.code(), 4, "{}", run.stderr());
    assert!(
        run.stderr().contains("trivy-ecr is calling itself"),
        "{}",
        run.stderr()
    );
}

#[test]
fn trivy_that_cannot_start_is_exit_4() {
    let sb = Sandbox::new();
    let run = sb.run(
        &["image", "x"],
        &[("TRIVY_ECR_TRIVY", "/nonexistent/trivy")],
    );
    assert_eq!(run.code(), 4);
    assert!(
        run.stderr()
            .contains("TRIVY_ECR_TRIVY=/nonexistent/trivy: no such file")
    );
    let plain = sb.path().join("trivy");
    std::fs::write(&plain, "not a program").unwrap();
    let run = sb.run(
        &["image", "x"],
        &[("TRIVY_ECR_TRIVY", plain.to_str().unwrap())],
    );
    assert_eq!(run.code(), 4);
    assert!(run.stderr().contains("is not an executable file"));
}

#[test]
fn usage_errors_are_one_line_and_exit_2() {
    let sb = Sandbox::new();
    let run = sb.run(&["image", "--ecr-fail-on", "SEVERE", "x"], &[]);
    assert_eq!(run.code(), 2);
    assert_eq!(run.stderr().lines().count(), 1, "{}", run.stderr());
    assert!(
        run.stderr()
            .contains("--ecr-fail-on=SEVERE: unknown severity 'SEVERE'")
    );
    let run = sb.run(&["image", "x"], &[("TRIVY_ECR_MAX_WAIT", "forever")]);
    assert_eq!(run.code(), 2);
    assert!(
        run.stderr().contains("TRIVY_ECR_MAX_WAIT=forever"),
        "{}",
        run.stderr()
    );
    assert!(sb.trivy_runs().is_empty(), "trivy never ran");
}

#[test]
fn help_and_version_show_both_programs() {
    let sb = Sandbox::new();
    let run = sb.run(&["--help"], &[]);
    assert_eq!(run.code(), 0);
    let out = run.stdout();
    assert!(out.starts_with("FAKE TRIVY HELP"), "{out}");
    assert!(out.contains("TRIVY_ECR_FAIL_ON") && out.contains("Exit codes:"));
    let run = sb.run(&["--version"], &[]);
    assert_eq!(run.code(), 0);
    assert_eq!(
        run.stdout(),
        format!("trivy-ecr {}\nVersion: 0.76.0\n", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn secrets_never_reach_the_logs() {
    let sb = Sandbox::new();
    let run = sb.run(
        &[
            "image",
            "--username",
            "bob",
            "--password",
            "hunter2",
            "--registry-token=tok-secret",
            "x",
        ],
        &[("TRIVY_ECR_LOG", "trace"), ("TRIVY_PASSWORD", "env-secret")],
    );
    assert_eq!(run.code(), 1);
    let all = format!("{}{}", run.stdout(), run.stderr());
    assert!(all.contains("running trivy"), "trace logging is on: {all}");
    for secret in ["hunter2", "tok-secret", "env-secret"] {
        assert!(!all.contains(secret), "{secret} leaked: {all}");
    }
}

#[test]
fn trivy_does_not_outlive_a_killed_trivy_ecr() {
    let sb = Sandbox::new();
    let ready = sb.path().join("ready");
    let signals = sb.path().join("signals");
    let mut child = sb
        .command(&["image", "x"])
        .env("FAKE_TRIVY_HANG", "1")
        .env("FAKE_TRIVY_READY", &ready)
        .env("FAKE_TRIVY_SIGNALS", &signals)
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for(&ready);
    child.kill().unwrap(); // SIGKILL: trivy-ecr gets no chance to forward anything
    child.wait().unwrap();
    wait_for(&signals);
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::fs::read_to_string(&signals)
        .unwrap_or_default()
        .trim()
        .is_empty()
    {
        assert!(
            Instant::now() < deadline,
            "trivy never heard of its parent's death"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(std::fs::read_to_string(&signals).unwrap().trim(), "SIGTERM");
}
