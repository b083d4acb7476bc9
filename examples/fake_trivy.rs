//! A stand-in for trivy in trivy-ecr's own tests (never installed): it prints trivy 0.76's
//! real log lines for DB downloads, falls back across `--db-repository` lists as trivy does,
//! writes a given JSON report, and can hang, crash or exit with any code. Environment
//! variables choose the behaviour:
//!
//! - `FAKE_TRIVY_RECORD`: file to append one JSON line per run (`{"argv":[..],"t":secs}`).
//! - `FAKE_TRIVY_VERSION`: what `--version` prints (default 0.76.0).
//! - `FAKE_TRIVY_BAD`: `;`-separated `SUBSTRING=MODE` rules: a repository containing SUBSTRING
//!   fails with MODE (`429`, `503`, `refused`, `404`, `401`, `dns`, `corrupt`).
//! - `FAKE_TRIVY_BAD_RUNS`: the rules apply only to the first N runs (counted in the record file).
//! - `FAKE_TRIVY_JAVA`: `1` to also fetch the Java DB (as for an image with JARs).
//! - `FAKE_TRIVY_REPORT`: JSON file written to `--output` on success.
//! - `FAKE_TRIVY_EXIT`: exit code after a successful scan (default 0); `FAKE_TRIVY_FATAL`: a
//!   FATAL message to print before exiting 1 instead of scanning.
//! - `FAKE_TRIVY_HANG`: `1` to wait for a signal (printing trivy's shutdown line, recording it
//!   in `FAKE_TRIVY_SIGNALS`, exiting 1; with `FAKE_TRIVY_IGNORE_TERM` it ignores SIGTERM);
//!   `FAKE_TRIVY_DIE`: signal number to kill itself with.

use std::ffi::OsString;
use std::io::Write;
use std::time::{SystemTime, UNIX_EPOCH};

fn env(key: &str) -> Option<String> {
    std::env::var(key).ok().filter(|v| !v.is_empty())
}

fn log(level: &str, message: &str) {
    eprintln!("2026-12-04T16:00:00Z\t{level}\t{message}");
}

fn main() {
    let argv: Vec<OsString> = std::env::args_os().skip(1).collect();
    let args: Vec<String> = argv
        .iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let runs_before = record(&args);

    if args.first().map(String::as_str) == Some("--version") {
        println!(
            "Version: {}",
            env("FAKE_TRIVY_VERSION").unwrap_or_else(|| "0.76.0".into())
        );
        return;
    }
    if args.iter().any(|a| a == "--help") {
        println!("FAKE TRIVY HELP");
        return;
    }
    if let Some(signal) = env("FAKE_TRIVY_DIE") {
        let signal: i32 = signal.parse().expect("signal number");
        unsafe {
            libc::signal(signal, libc::SIG_DFL);
            libc::raise(signal);
        }
        unreachable!("the signal should have killed the process");
    }
    if env("FAKE_TRIVY_HANG").is_some() {
        hang();
    }
    match args.first().map(String::as_str) {
        Some("convert") => convert(&args),
        _ => scan(&args, runs_before),
    }
}

/// Appends this run to the record file; returns how many runs came before.
fn record(args: &[String]) -> usize {
    let Some(path) = env("FAKE_TRIVY_RECORD") else {
        return 0;
    };
    let before = std::fs::read_to_string(&path)
        .map(|t| t.lines().filter(|l| !l.contains("[\"--version\"]")).count())
        .unwrap_or(0);
    let t = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let line = serde_json::json!({ "argv": args, "t": t });
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .unwrap();
    writeln!(file, "{line}").unwrap();
    before
}

fn flag_value(args: &[String], name: &str) -> Option<String> {
    let long = format!("--{name}");
    let eq = format!("--{name}=");
    let mut found = None;
    let mut iter = args.iter();
    while let Some(a) = iter.next() {
        if *a == long {
            found = iter.next().cloned();
        } else if let Some(v) = a.strip_prefix(&eq) {
            found = Some(v.to_string());
        }
    }
    found
}

fn bad_mode(repo: &str, runs_before: usize) -> Option<String> {
    if let Some(limit) = env("FAKE_TRIVY_BAD_RUNS")
        && runs_before >= limit.parse::<usize>().unwrap()
    {
        return None;
    }
    let rules = env("FAKE_TRIVY_BAD")?;
    rules.split(';').find_map(|rule| {
        let (needle, mode) = rule.split_once('=')?;
        repo.contains(needle).then(|| mode.to_string())
    })
}

fn url(repo: &str) -> String {
    let (name, tag) = repo
        .rsplit_once(':')
        .filter(|(_, t)| !t.contains('/'))
        .unwrap_or((repo, "2"));
    let (host, path) = name.split_once('/').unwrap_or((name, ""));
    format!("https://{host}/v2/{path}/manifests/{tag}")
}

/// Emulates trivy's download of one DB across its repository list. Exits on fatal failure.
fn download(tag: &str, what: &str, repos: &[String], runs_before: usize) {
    log("INFO", &format!("[{tag}] Need to update DB"));
    log("INFO", &format!("[{tag}] Downloading {what}..."));
    let mut errors = Vec::new();
    for repo in repos {
        log(
            "INFO",
            &format!("[{tag}] Downloading artifact...\trepo=\"{repo}\""),
        );
        let Some(mode) = bad_mode(repo, runs_before) else {
            log(
                "INFO",
                &format!("[{tag}] Artifact successfully downloaded\trepo=\"{repo}\""),
            );
            return;
        };
        let u = url(repo);
        let host = u.split('/').nth(2).unwrap().to_string();
        let (err, falls_back) = match mode.as_str() {
            "429" => (
                format!("GET {u}: TOOMANYREQUESTS: retry-after: 153.601µs, allowed: 44000/minute"),
                true,
            ),
            "503" => (
                format!("GET {u}: unexpected status code 503 Service Unavailable"),
                true,
            ),
            "refused" => (
                format!("Get \"https://{host}/v2/\": dial tcp {host}: connect: connection refused"),
                false,
            ),
            "404" => (
                format!("GET {u}: MANIFEST_UNKNOWN: manifest unknown; map[Tag:2]"),
                false,
            ),
            "401" => (
                format!("GET {u}: UNAUTHORIZED: authentication required"),
                false,
            ),
            "dns" => (
                format!("Get \"https://{host}/v2/\": dial tcp: lookup {host}: no such host"),
                false,
            ),
            "corrupt" => ("failed to copy: unexpected EOF".to_string(), false),
            other => panic!("unknown failure mode {other}"),
        };
        if !falls_back {
            let db = if tag == "javadb" {
                "Java DB error: Java DB update failed"
            } else {
                "init error: DB error: failed to download vulnerability DB"
            };
            log(
                "FATAL",
                &format!(
                    // As trivy 0.76: the wrapped error continues on the next line.
                    "Fatal error\trun error: {db}: OCI artifact error: failed to download artifact from {repo}: OCI repository error: 1 error occurred:\n\t* {err}"
                ),
            );
            std::process::exit(1);
        }
        log(
            "ERROR",
            &format!(
                "[{tag}] Failed to download artifact\trepo=\"{repo}\" err=\"OCI repository error: 1 error occurred:\\n\\t* {err}\\n\\n\""
            ),
        );
        log(
            "INFO",
            &format!("[{tag}] Trying to download artifact from other repository..."),
        );
        errors.push(err);
    }
    let db = if tag == "javadb" {
        "Java DB error: Java DB update failed"
    } else {
        "init error: DB error: failed to download vulnerability DB: OCI artifact error: failed to download vulnerability DB"
    };
    log(
        "FATAL",
        &format!(
            "Fatal error\trun error: {db}: failed to download artifact from any source: {} errors occurred",
            errors.len()
        ),
    );
    std::process::exit(1);
}

fn repositories(args: &[String], name: &str, default: &str) -> Vec<String> {
    let mut repos = Vec::new();
    let long = format!("--{name}");
    let eq = format!("--{name}=");
    let mut iter = args.iter();
    while let Some(a) = iter.next() {
        let value = if *a == long {
            iter.next().cloned()
        } else {
            a.strip_prefix(&eq).map(str::to_owned)
        };
        if let Some(v) = value {
            repos.extend(v.split(',').map(str::to_owned));
        }
    }
    if repos.is_empty() {
        let from_env = std::env::var(if name == "db-repository" {
            "TRIVY_DB_REPOSITORY"
        } else {
            "TRIVY_JAVA_DB_REPOSITORY"
        })
        .ok()
        .filter(|v| !v.is_empty());
        repos = from_env
            .unwrap_or_else(|| default.to_string())
            .split(',')
            .map(str::to_owned)
            .collect();
    }
    repos
}

fn scan(args: &[String], runs_before: usize) {
    let one_at_a_time =
        env("FAKE_TRIVY_VERSION").is_some_and(|v| v.starts_with("0.5") && *v < *"0.56");
    let vuln = repositories(
        args,
        "db-repository",
        "mirror.gcr.io/aquasec/trivy-db:2,ghcr.io/aquasecurity/trivy-db:2",
    );
    if one_at_a_time && vuln.len() > 1 {
        log(
            "FATAL",
            "Fatal error\tmultiple repositories are not supported by this fake old trivy",
        );
        std::process::exit(1);
    }
    download("vulndb", "vulnerability DB", &vuln, runs_before);
    if env("FAKE_TRIVY_JAVA").is_some() {
        let java = repositories(
            args,
            "java-db-repository",
            "mirror.gcr.io/aquasec/trivy-java-db:1,ghcr.io/aquasecurity/trivy-java-db:1",
        );
        download("javadb", "Java DB", &java, runs_before);
    }
    if let Some(message) = env("FAKE_TRIVY_FATAL") {
        log("FATAL", &format!("Fatal error\t{message}"));
        std::process::exit(1);
    }
    if let (Some(report), Some(output)) = (env("FAKE_TRIVY_REPORT"), flag_value(args, "output")) {
        std::fs::copy(report, output).expect("write report");
    }
    std::process::exit(
        env("FAKE_TRIVY_EXIT")
            .map(|c| c.parse().unwrap())
            .unwrap_or(0),
    );
}

fn convert(args: &[String]) {
    let format = flag_value(args, "format").unwrap_or_else(|| "table".into());
    let report = args.last().unwrap();
    let text = format!(
        "rendered {format} from {}\n",
        std::fs::read_to_string(report)
            .map(|t| t.len())
            .unwrap_or(0)
    );
    match flag_value(args, "output") {
        Some(path) => std::fs::write(path, text).unwrap(),
        None => print!("{text}"),
    }
}

fn hang() -> ! {
    if env("FAKE_TRIVY_IGNORE_TERM").is_some() {
        // A trivy that ignores SIGTERM: only SIGKILL ends it.
        unsafe { libc::signal(libc::SIGTERM, libc::SIG_IGN) };
        if let Some(ready) = env("FAKE_TRIVY_READY") {
            std::fs::write(ready, "ready").unwrap();
        }
        loop {
            std::thread::sleep(std::time::Duration::from_secs(1));
        }
    }
    let mut set = nix::sys::signal::SigSet::empty();
    set.add(nix::sys::signal::Signal::SIGTERM);
    set.add(nix::sys::signal::Signal::SIGINT);
    set.thread_block().unwrap();
    if let Some(ready) = env("FAKE_TRIVY_READY") {
        std::fs::write(ready, "ready").unwrap();
    }
    let signal = set.wait().unwrap();
    // Recorded first: when trivy-ecr is gone, writing to its stderr pipe kills us (SIGPIPE).
    if let Some(path) = env("FAKE_TRIVY_SIGNALS") {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .unwrap();
        writeln!(f, "{}", signal.as_str()).unwrap();
    }
    log("INFO", "Received signal, attempting graceful shutdown...");
    std::process::exit(1);
}
