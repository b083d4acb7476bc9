//! `scripts/bench`: what trivy-ecr costs and what it saves, measured on the test rig (real trivy,
//! real registry, fault proxies; loopback only). Not a test: run it with `scripts/bench`, which
//! builds trivy-ecr and this example with `--release`.
//!
//! Prints, as medians of `BENCH_RUNS` runs (default 7, at least 5):
//! - wall time of trivy-ecr vs bare trivy on a warm cache (DB and scan cache filled), for table
//!   output (scan + `trivy convert`) and JSON output (scan + copy);
//! - trivy-ecr's own peak RSS: `VmHWM` of the trivy-ecr process alone, sampled from
//!   `/proc/<pid>/status` every millisecond until it exits (trivy, its child, is sampled apart;
//!   `/usr/bin/time` would report the maximum over both);
//! - time to verdict on a cold cache with the first mirror always answering 429, against a clean
//!   chain and against bare trivy given the same two repositories (its own fallback);
//! - requests sent per scan to each mirror and to the image registry.
//!
//! `BENCH_TRIVY=0.69` measures trivy 0.69.3 instead of 0.76.0.

#[path = "../tests/rig/mod.rs"]
mod rig;

use rig::proxy::{Fault, FaultProxy, When};
use rig::sandbox::{Program, Sandbox};
use rig::scene::{self, Scene};
use rig::trivy_db;
use rig::trivys::Trivy;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn main() {
    let runs: usize = std::env::var("BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(7)
        .max(5);
    let trivy = match std::env::var("BENCH_TRIVY").as_deref() {
        Ok("0.69") => Trivy::Old,
        _ => Trivy::Current,
    };
    let trivy_path = trivy.path();
    let wrapper = rig::sandbox::trivy_ecr_bin();
    let load_at_start = load_average();
    let scene = Scene::start();
    let image = scene.image();
    progress(&format!(
        "trivy {}, trivy-ecr {}, {runs} runs per measurement",
        trivy.version(),
        wrapper.display()
    ));

    // -- warm cache: the wrapper's overhead --
    let mirror = scene.mirror();
    let repo = scene::db_repo(&mirror);
    let mut warm = Vec::new();
    for format in ["table", "json"] {
        let bare_sb = Sandbox::new();
        let wrapped_sb = Sandbox::new();
        let bare = || {
            let mut cli = bare_sb.scan(
                Program::Trivy(&trivy_path),
                &image,
                &["--format", format, "--db-repository", &repo],
            );
            timed(cli.command_mut())
        };
        let wrapped = || {
            let mut cli = wrapped_sb.scan(
                Program::TrivyEcr(&trivy_path),
                &image,
                &["--format", format],
            );
            cli.env("TRIVY_ECR_DB_REPOSITORIES", &repo)
                .env("TRIVY_ECR_PREFETCH", "on");
            timed(cli.command_mut())
        };
        // Fill both caches (DB download, layer analysis), then measure alternately.
        bare();
        wrapped();
        let (mut b, mut w) = (Vec::new(), Vec::new());
        for _ in 0..runs {
            b.push(bare());
            w.push(wrapped());
        }
        progress(&format!("warm cache, {format}: done"));
        warm.push((format, median(&mut w), median(&mut b)));
    }

    // -- what the wrapper's extra trivy runs cost on their own --
    let parts_sb = Sandbox::new();
    let report = parts_sb.path().join("report.json");
    let mut cli = parts_sb.scan(
        Program::Trivy(&trivy_path),
        &image,
        &[
            "--format",
            "json",
            "--output",
            "report.json",
            "--db-repository",
            &repo,
        ],
    );
    timed(cli.command_mut());
    let _ = std::fs::rename(parts_sb.work_dir().join("report.json"), &report);
    let mut convert = Vec::new();
    for _ in 0..runs {
        let mut cli = parts_sb.command(Program::Trivy(&trivy_path));
        cli.args(["convert", "--format", "table", "--scanners", "vuln,secret"])
            .arg(&report);
        convert.push(timed(cli.command_mut()));
    }
    progress("trivy convert alone: done");

    // -- the wrapper's own memory --
    let rss_sb = Sandbox::new();
    let mut own = Vec::new();
    let mut child = Vec::new();
    for round in 0..=runs {
        let mut cli = rss_sb.scan(Program::TrivyEcr(&trivy_path), &image, &[]);
        cli.env("TRIVY_ECR_DB_REPOSITORIES", &repo);
        let peaks = peak_rss(cli.command_mut());
        if round > 0 {
            // round 0 filled the cache
            own.push(peaks.own_kib);
            child.push(peaks.children_kib);
        }
    }
    progress("peak RSS: done");

    // -- cold cache: time to verdict with a rate-limited first mirror --
    let limited = scene.mirror();
    limited.add_rule(scene::DB_PATH, When::Always, Fault::too_many_requests());
    let healthy = scene.mirror();
    let spare = scene.mirror();
    let bad_chain = format!("{},{}", scene::db_repo(&limited), scene::db_repo(&healthy));
    let clean_chain = format!("{},{}", scene::db_repo(&healthy), scene::db_repo(&spare));
    // `prefetch`: "on" is trivy-ecr's default (native download), "off" its core path.
    let cold = |program: Program<'_>, chain: &str, prefetch: &str| {
        let sb = Sandbox::new();
        let mut cli = match program {
            Program::Trivy(_) => sb.scan(program, &image, &["--db-repository", chain]),
            Program::TrivyEcr(_) => {
                let mut cli = sb.scan(program, &image, &[]);
                cli.env("TRIVY_ECR_DB_REPOSITORIES", chain)
                    .env("TRIVY_ECR_PREFETCH", prefetch);
                cli
            }
        };
        timed(cli.command_mut())
    };
    let mut cold_clean = Vec::new();
    let mut cold_429 = Vec::new();
    let mut core_429 = Vec::new();
    let mut bare_429 = Vec::new();
    let mut bare_clean = Vec::new();
    let mut requests_clean = RequestCounts::default();
    let mut requests_429 = RequestCounts::default();
    for _ in 0..runs {
        let before = RequestCounts::of(&scene, &limited, &healthy);
        cold_clean.push(cold(Program::TrivyEcr(&trivy_path), &clean_chain, "on"));
        requests_clean = RequestCounts::of(&scene, &limited, &healthy).minus(&before);
        let before = RequestCounts::of(&scene, &limited, &healthy);
        cold_429.push(cold(Program::TrivyEcr(&trivy_path), &bad_chain, "on"));
        requests_429 = RequestCounts::of(&scene, &limited, &healthy).minus(&before);
        core_429.push(cold(Program::TrivyEcr(&trivy_path), &bad_chain, "off"));
        bare_429.push(cold(Program::Trivy(&trivy_path), &bad_chain, ""));
        bare_clean.push(cold(Program::Trivy(&trivy_path), &clean_chain, ""));
    }
    progress("cold cache: done");

    // -- cold pull of a big DB: trivy-ecr's downloader vs trivy --download-db-only --
    let big_mb: u64 = std::env::var("BENCH_BIG_DB_MB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let big = trivy_db::db_tar_gz(&trivy_db::DbSpec::fresh().with_padding(big_mb << 20));
    let big_size = big.len();
    scene
        .registry
        .client()
        .push_trivy_db("big/trivy-db", "2", &big);
    drop(big);
    let big_mirror = scene.mirror();
    let big_repo = format!("{}/big/trivy-db:2", big_mirror.host_port());
    let pull_runs = runs.min(5);
    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    let (mut ours_rss, mut theirs_rss) = (Vec::new(), Vec::new());
    let mut pull_requests = (0, 0);
    for _ in 0..pull_runs {
        let sb = Sandbox::new();
        let mut cli = sb.command(Program::TrivyEcr(&trivy_path));
        cli.args(["db", "pull", "--no-progress", "--cache-dir"])
            .arg(sb.cache_dir())
            .env("TRIVY_ECR_DB_REPOSITORIES", &big_repo);
        let before = big_mirror.requests().len();
        let started = Instant::now();
        let peaks = peak_rss(cli.command_mut());
        ours.push(started.elapsed());
        ours_rss.push(peaks.own_kib);
        pull_requests.0 = big_mirror.requests().len() - before;

        let sb = Sandbox::new();
        let mut cli = sb.command(Program::Trivy(&trivy_path));
        cli.args([
            "image",
            "--download-db-only",
            "--no-progress",
            "--skip-version-check",
        ])
        .args(["--db-repository", &big_repo, "--cache-dir"])
        .arg(sb.cache_dir());
        let before = big_mirror.requests().len();
        let started = Instant::now();
        let peaks = peak_rss(cli.command_mut());
        theirs.push(started.elapsed());
        theirs_rss.push(peaks.own_kib);
        pull_requests.1 = big_mirror.requests().len() - before;
    }
    progress("big DB pull: done");
    let (ours, theirs) = (median(&mut ours), median(&mut theirs));

    let cold_clean = median(&mut cold_clean);
    let cold_429 = median(&mut cold_429);
    let core_429 = median(&mut core_429);
    let bare_429 = median(&mut bare_429);
    let bare_clean = median(&mut bare_clean);
    let own = median_kib(&mut own);
    let child = median_kib(&mut child);

    let mut rows: Vec<[String; 4]> = Vec::new();
    for (format, w, b) in &warm {
        rows.push([
            format!("warm cache, `--format {format}`: wall time"),
            secs(*w),
            secs(*b),
            ratio(*w, *b),
        ]);
    }
    rows.push([
        "  of which `trivy convert` (table rendering)".into(),
        secs(median(&mut convert)),
        String::new(),
        String::new(),
    ]);
    rows.push([
        "peak RSS of the trivy-ecr process alone (VmHWM)".into(),
        mib(own),
        format!("trivy child: {}", mib(child)),
        String::new(),
    ]);
    rows.push([
        "cold cache, clean chain: time to verdict".into(),
        secs(cold_clean),
        secs(bare_clean),
        ratio(cold_clean, bare_clean),
    ]);
    rows.push([
        "cold cache, first mirror always 429: time to verdict".into(),
        secs(cold_429),
        format!("{} (trivy's own fallback)", secs(bare_429)),
        ratio(cold_429, bare_429),
    ]);
    rows.push([
        "  same, with `TRIVY_ECR_PREFETCH=off` (trivy downloads, trivy-ecr retries)".into(),
        secs(core_429),
        format!("{} (trivy's own fallback)", secs(bare_429)),
        ratio(core_429, bare_429),
    ]);
    rows.push([
        "  same, against trivy-ecr's clean run".into(),
        secs(cold_429),
        format!("{} (trivy-ecr, clean)", secs(cold_clean)),
        ratio(cold_429, cold_clean),
    ]);
    rows.push([
        "requests per scan, clean chain".into(),
        format!(
            "DB mirror {}, image registry {}",
            requests_clean.healthy, requests_clean.images
        ),
        String::new(),
        String::new(),
    ]);
    rows.push([
        "requests per scan, first mirror always 429".into(),
        format!(
            "429 mirror {}, next mirror {}, image registry {}",
            requests_429.limited, requests_429.healthy, requests_429.images
        ),
        String::new(),
        String::new(),
    ]);

    rows.push([
        format!(
            "cold pull of a {:.0} MiB DB artifact: `trivy-ecr db pull` vs `trivy image --download-db-only`",
            big_size as f64 / (1 << 20) as f64
        ),
        secs(ours),
        secs(theirs),
        ratio(ours, theirs),
    ]);
    rows.push([
        "  peak RSS during that pull".into(),
        mib(median_kib(&mut ours_rss)),
        mib(median_kib(&mut theirs_rss)),
        String::new(),
    ]);
    rows.push([
        "  requests for that pull".into(),
        pull_requests.0.to_string(),
        pull_requests.1.to_string(),
        String::new(),
    ]);

    println!(
        "Measured with `scripts/bench` (trivy {}, {} CPUs, load average {} at the start and {} at \
         the end, release build, medians of {runs} runs, loopback registry and mirrors; request \
         counts include each run's `/v2/` ping):",
        trivy.version(),
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        load_at_start,
        load_average(),
    );
    println!();
    println!("| measurement | trivy-ecr | bare trivy / reference | ratio |");
    println!("| --- | --- | --- | --- |");
    for row in rows {
        println!("| {} | {} | {} | {} |", row[0], row[1], row[2], row[3]);
    }
}

/// The 1-minute load average (`/proc/loadavg`): other work on the machine skews the timings.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(str::to_owned))
        .unwrap_or_else(|| "unknown".into())
}

fn progress(line: &str) {
    eprintln!("bench: {line}");
}

/// Runs `cmd` with output discarded; its wall time. Panics when it cannot be started.
fn timed(cmd: &mut Command) -> Duration {
    let started = Instant::now();
    let status = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    let elapsed = started.elapsed();
    assert!(
        matches!(status.code(), Some(0 | 1)),
        "{cmd:?} ended with {status}: the scan itself failed"
    );
    elapsed
}

struct Peaks {
    own_kib: u64,
    children_kib: u64,
}

/// Runs `cmd` (trivy-ecr) and samples `VmHWM` of its process and of each child every
/// millisecond; the high-water marks never decrease, so the last sample before exit is the peak.
fn peak_rss(cmd: &mut Command) -> Peaks {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    let pid = child.id();
    let mut peaks = Peaks {
        own_kib: 0,
        children_kib: 0,
    };
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if let Some(kib) = vm_hwm_kib(pid) {
            peaks.own_kib = peaks.own_kib.max(kib);
        }
        let children =
            std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
        for kid in children.split_whitespace().filter_map(|p| p.parse().ok()) {
            if let Some(kib) = vm_hwm_kib(kid) {
                peaks.children_kib = peaks.children_kib.max(kib);
            }
        }
        if child.try_wait().expect("try_wait").is_some() {
            return peaks;
        }
        assert!(Instant::now() < deadline, "{cmd:?} did not finish in 120 s");
        std::thread::sleep(Duration::from_millis(1));
    }
}

fn vm_hwm_kib(pid: u32) -> Option<u64> {
    let status =
        std::fs::read_to_string(Path::new("/proc").join(pid.to_string()).join("status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

#[derive(Default, Clone, Copy)]
struct RequestCounts {
    limited: usize,
    healthy: usize,
    images: usize,
}

impl RequestCounts {
    fn of(scene: &Scene, limited: &FaultProxy, healthy: &FaultProxy) -> RequestCounts {
        RequestCounts {
            limited: limited.requests().len(),
            healthy: healthy.requests().len(),
            images: scene.images.requests().len(),
        }
    }

    fn minus(&self, before: &RequestCounts) -> RequestCounts {
        RequestCounts {
            limited: self.limited - before.limited,
            healthy: self.healthy - before.healthy,
            images: self.images - before.images,
        }
    }
}

fn median(values: &mut [Duration]) -> Duration {
    values.sort();
    values[values.len() / 2]
}

fn median_kib(values: &mut [u64]) -> u64 {
    values.sort();
    values[values.len() / 2]
}

fn secs(d: Duration) -> String {
    format!("{:.2} s", d.as_secs_f64())
}

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

/// `a / b` and the difference, e.g. `2.75× (+0.21 s)`.
fn ratio(a: Duration, b: Duration) -> String {
    let diff = a.as_secs_f64() - b.as_secs_f64();
    format!("{:.2}× ({diff:+.2} s)", a.as_secs_f64() / b.as_secs_f64())
}
