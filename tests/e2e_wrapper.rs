//! trivy-ecr end to end, offline: the real binary running the REAL trivy (0.76 and 0.69, every
//! scenario on both) against a real registry behind fault proxies posing as the public mirrors.
//! Each scenario asserts the exit code, what reached stdout (the report), stderr's verdict and
//! retry lines, and what every mirror was asked (the proxies' request logs).
//!
//! The mirror chains are pointed at the rig with `TRIVY_ECR_DB_REPOSITORIES` (the Java DB chain at
//! a refused port: the Alpine image has no JAR, so it must never be used; see `e2e_java.rs`).
//! Measurements print with `cargo test --test e2e_wrapper -- --nocapture` (lines `measure:`).

#[macro_use]
mod rig;

use rig::proxy::{Fault, FaultProxy, Recorded, When};
use rig::report::{Finding, Report, normalised_json};
use rig::run::Ran;
use rig::sandbox::{Cli, Program, Sandbox};
use rig::scene::{self, Scene};
use rig::trivy_db;
use rig::trivys::Trivy;
use std::time::Duration;

on_each_trivy!(
    clean_scan_renders_what_bare_trivy_renders,
    gate_fails_on_the_criticals_and_follows_trivys_filters,
    seed_failure_first_mirror_always_429,
    first_mirror_refusing_connections,
    first_mirror_without_the_artifact,
    first_mirror_demanding_credentials_it_cannot_get,
    every_mirror_rate_limited_ends_with_exit_3_within_the_budget,
    rate_limited_for_the_first_3_requests_then_served,
    users_own_repository_is_the_only_one_contacted,
    users_own_rate_limited_repository_is_retried_never_replaced,
    server_mode_gets_the_db_from_the_chain_and_stops_on_sigterm,
);

// ---- helpers ----

/// trivy-ecr scanning `image` with the vulnerability DB chain `chain`; the Java DB chain points
/// at a port where nothing listens.
fn trivy_ecr(sb: &Sandbox, trivy: Trivy, image: &str, chain: &[String], extra: &[&str]) -> Cli {
    let trivy = trivy.path();
    let mut cli = sb.scan(Program::TrivyEcr(&trivy), image, extra);
    cli.env("TRIVY_ECR_DB_REPOSITORIES", chain.join(","))
        .env("TRIVY_ECR_JAVA_DB_REPOSITORIES", nowhere_java_db());
    cli
}

/// Bare trivy scanning `image` with `extra` (which names the DB repositories).
fn bare_trivy(sb: &Sandbox, trivy: Trivy, image: &str, extra: &[&str]) -> Cli {
    sb.scan(Program::Trivy(&trivy.path()), image, extra)
}

fn nowhere_java_db() -> String {
    format!("{}/{}", rig::proxy::refused_addr(), scene::JAVA_DB_REPO)
}

fn findings(json: &str) -> Vec<Finding> {
    Report::parse(json).findings()
}

fn ids(findings: &[Finding]) -> Vec<&str> {
    findings.iter().map(|f| f.id.as_str()).collect()
}

/// The requests a mirror got for the vulnerability DB (manifests and blobs, not the `/v2/` ping).
fn db_requests(mirror: &FaultProxy) -> Vec<Recorded> {
    mirror.requests_to(scene::DB_PATH)
}

fn statuses(requests: &[Recorded]) -> Vec<Option<u16>> {
    requests.iter().map(|r| r.status).collect()
}

/// The mirror served the DB: a manifest and a blob, both 200.
fn assert_served_the_db(mirror: &FaultProxy, ran: &Ran) {
    assert_served(mirror, &ran.describe());
}

fn assert_served(mirror: &FaultProxy, context: &str) {
    let served: Vec<(String, Option<u16>)> = db_requests(mirror)
        .into_iter()
        .filter(|r| r.status == Some(200))
        .map(|r| (r.path, r.status))
        .collect();
    assert!(
        served.iter().any(|(p, _)| p.contains("/manifests/"))
            && served.iter().any(|(p, _)| p.contains("/blobs/")),
        "the mirror did not serve the DB: {:#?}\n{context}",
        mirror.requests(),
    );
}

/// trivy-ecr's gate verdict on the fixture: exit 1, both CRITICALs named, and (the run used
/// `--format json`) the report holds exactly the fixture's findings.
fn assert_gate_failed_on_the_fixture(ran: &Ran) {
    assert_eq!(ran.code(), Some(1), "{}", ran.describe());
    assert_eq!(
        findings(&ran.stdout),
        trivy_db::expected_alpine_findings(),
        "{}",
        ran.describe()
    );
    assert!(
        ran.stderr
            .contains("trivy-ecr: FAILED: 2 findings at or above CRITICAL (exit 1)"),
        "{}",
        ran.describe()
    );
}

fn retry_lines(ran: &Ran) -> Vec<&str> {
    ran.stderr_lines_with("; retrying")
}

// ---- clean runs: output and gate ----

/// The wrapper renders table, JSON and SARIF exactly as bare trivy does for the same scan:
/// table and SARIF byte for byte, JSON after dropping `ReportID` and `CreatedAt`.
fn clean_scan_renders_what_bare_trivy_renders(trivy: Trivy) {
    let scene = Scene::start();
    let mirror = scene.mirror();
    let repo = scene::db_repo(&mirror);
    for format in ["table", "json", "sarif"] {
        let bare_sb = Sandbox::new();
        let bare = bare_trivy(
            &bare_sb,
            trivy,
            &scene.image(),
            &["--format", format, "--db-repository", &repo],
        )
        .run();
        let wrapped_sb = Sandbox::new();
        let wrapped = trivy_ecr(
            &wrapped_sb,
            trivy,
            &scene.image(),
            std::slice::from_ref(&repo),
            &["--format", format],
        )
        .run();

        assert_eq!(bare.code(), Some(0), "{format}: {}", bare.describe());
        assert_eq!(wrapped.code(), Some(1), "{format}: {}", wrapped.describe());
        assert!(!bare.stdout.is_empty(), "{format}: {}", bare.describe());
        match format {
            "json" => {
                assert_eq!(
                    normalised_json(&wrapped.stdout),
                    normalised_json(&bare.stdout)
                );
                assert_eq!(findings(&wrapped.stdout), findings(&bare.stdout));
                assert_eq!(
                    findings(&wrapped.stdout),
                    trivy_db::expected_alpine_findings()
                );
            }
            _ => assert!(
                wrapped.stdout == bare.stdout,
                "{format} differs\n--- bare trivy ---\n{}\n--- trivy-ecr ---\n{}",
                bare.stdout,
                wrapped.stdout
            ),
        }
    }
}

/// The default gate fails on the two CRITICALs; `--ignore-unfixed` (trivy's filter) leaves one;
/// `TRIVY_ECR_FAIL_ON=HIGH` adds the HIGH; `TRIVY_ECR_FAIL_ON=none` passes with the same report.
fn gate_fails_on_the_criticals_and_follows_trivys_filters(trivy: Trivy) {
    let scene = Scene::start();
    let mirror = scene.mirror();
    let chain = [scene::db_repo(&mirror)];
    // One sandbox: the first run downloads the DB, the others use the cache.
    let sb = Sandbox::new();
    let run = |extra: &[&str], fail_on: Option<&str>| {
        let mut cli = trivy_ecr(&sb, trivy, &scene.image(), &chain, extra);
        if let Some(fail_on) = fail_on {
            cli.env("TRIVY_ECR_FAIL_ON", fail_on);
        }
        cli.run()
    };

    let default = run(&["--format", "json"], None);
    assert_gate_failed_on_the_fixture(&default);
    for id in ["CVE-2099-0001", "CVE-2099-0002"] {
        assert_eq!(
            default
                .stderr_lines_with(&format!("  CRITICAL {id} "))
                .len(),
            1,
            "{id} not listed as blocking\n{}",
            default.describe()
        );
    }

    let fixed_only = run(&["--format", "json", "--ignore-unfixed"], None);
    assert_eq!(fixed_only.code(), Some(1), "{}", fixed_only.describe());
    assert_eq!(
        ids(&findings(&fixed_only.stdout)),
        ["CVE-2099-0001", "CVE-2099-0003", "CVE-2099-0004"]
    );
    assert!(
        fixed_only
            .stderr
            .contains("trivy-ecr: FAILED: 1 finding at or above CRITICAL (exit 1)"),
        "{}",
        fixed_only.describe()
    );

    let high = run(&["--format", "json", "--ignore-unfixed"], Some("HIGH"));
    assert_eq!(high.code(), Some(1), "{}", high.describe());
    assert!(
        high.stderr
            .contains("trivy-ecr: FAILED: 2 findings at or above HIGH (exit 1)"),
        "{}",
        high.describe()
    );

    let report_only = run(&[], Some("none"));
    assert_eq!(report_only.code(), Some(0), "{}", report_only.describe());
    assert!(
        report_only.stdout.contains("CVE-2099-0002") && report_only.stdout.contains("Total: 4"),
        "the table is still printed\n{}",
        report_only.describe()
    );
    assert!(
        report_only
            .stderr
            .contains("trivy-ecr: gate disabled (fail-on: none)"),
        "{}",
        report_only.describe()
    );
    assert_eq!(
        db_requests(&mirror)
            .iter()
            .filter(|r| r.path.contains("/blobs/"))
            .count(),
        1,
        "the DB is downloaded once and then read from the cache"
    );
}

// ---- the seed's failure ----

/// The first mirror always answers 429 (ghcr's exact body). Bare trivy pointed at it alone dies
/// with FATAL; trivy-ecr gets the verdict from the next mirror.
fn seed_failure_first_mirror_always_429(trivy: Trivy) {
    let scene = Scene::start();
    let limited = scene.mirror();
    limited.add_rule(scene::DB_PATH, When::Always, Fault::too_many_requests());
    let healthy = scene.mirror();
    let chain = [scene::db_repo(&limited), scene::db_repo(&healthy)];

    let bare_sb = Sandbox::new();
    let bare = bare_trivy(
        &bare_sb,
        trivy,
        &scene.image(),
        &["--format", "json", "--db-repository", &chain[0]],
    )
    .run();
    assert_eq!(bare.code(), Some(1), "{}", bare.describe());
    let fatal = bare
        .fatal()
        .unwrap_or_else(|| panic!("{}", bare.describe()));
    assert!(fatal.contains("TOOMANYREQUESTS"), "{fatal}");
    assert!(bare.stdout.is_empty(), "no report without a DB");
    let bare_hits = db_requests(&limited).len();
    assert!(
        scene.image_manifest_requests().is_empty(),
        "bare trivy never got to scan"
    );

    let clean_sb = Sandbox::new();
    let clean = trivy_ecr(
        &clean_sb,
        trivy,
        &scene.image(),
        &chain[1..],
        &["--format", "json"],
    )
    .run();
    assert_gate_failed_on_the_fixture(&clean);

    let sb = Sandbox::new();
    let ran = trivy_ecr(&sb, trivy, &scene.image(), &chain, &["--format", "json"]).run();

    assert_gate_failed_on_the_fixture(&ran);
    assert!(
        ran.stderr.contains(&format!(
            "trivy-ecr: vulnerability DB downloaded from {}",
            chain[1]
        )),
        "{}",
        ran.describe()
    );
    let limited_hits = db_requests(&limited).len() - bare_hits;
    eprintln!(
        "measure: seed failure on trivy {}: verdict in {:.2?} with the first mirror always 429 \
         (clean run {:.2?}, bare trivy's FATAL after {:.2?}); requests to the rate-limited \
         mirror: trivy-ecr {limited_hits}, bare trivy {bare_hits}",
        trivy.version(),
        ran.elapsed,
        clean.elapsed,
        bare.elapsed,
    );
    assert_eq!(
        limited_hits,
        trivy.tries_on_429(),
        "{:#?}",
        limited.requests()
    );
    assert!(
        db_requests(&limited)
            .iter()
            .all(|r| r.status == Some(429) && r.path.contains("/manifests/")),
        "{:#?}",
        limited.requests()
    );
    assert_served_the_db(&healthy, &ran);
    assert!(
        retry_lines(&ran).is_empty(),
        "trivy {} takes the chain as one list (trivy-ecr read its version) and falls back \
         from the 429 within a single run\n{}",
        trivy.version(),
        ran.describe()
    );
    // Loose: trivy's own retries of the 429 (~4 s on 0.76) plus one scan and one render.
    assert!(
        ran.elapsed < Duration::from_secs(30),
        "verdict took {:?}",
        ran.elapsed
    );
}

// ---- first mirror broken in ways trivy does not fall back from ----

/// A broken first mirror that makes trivy abort without trying the next repository: bare trivy
/// given both mirrors dies (and never asks the second); trivy-ecr retries with the next mirror
/// first and gets the verdict. `cause` is how trivy-ecr's retry line names the failure.
fn fails_over_where_trivy_aborts(trivy: Trivy, scene: &Scene, first: &str, cause: &str) {
    let healthy = scene.mirror();
    let chain = [first.to_owned(), scene::db_repo(&healthy)];

    let bare_sb = Sandbox::new();
    let both = chain.join(",");
    let bare = bare_trivy(
        &bare_sb,
        trivy,
        &scene.image(),
        &["--format", "json", "--db-repository", &both],
    )
    .run();
    assert_eq!(bare.code(), Some(1), "{}", bare.describe());
    let fatal = bare
        .fatal()
        .unwrap_or_else(|| panic!("{}", bare.describe()));
    assert!(
        fatal.contains(&format!("failed to download artifact from {first}")),
        "{fatal}"
    );
    assert!(
        healthy.requests().is_empty(),
        "bare trivy does not fall back: {:#?}",
        healthy.requests()
    );

    let sb = Sandbox::new();
    let ran = trivy_ecr(&sb, trivy, &scene.image(), &chain, &["--format", "json"]).run();

    assert_gate_failed_on_the_fixture(&ran);
    let retries = retry_lines(&ran);
    assert_eq!(retries.len(), 1, "{}", ran.describe());
    assert!(
        retries[0].contains(&format!("vulnerability DB: {first} {cause}"))
            && retries[0].contains(&format!("retrying with {} first in 0.0s", chain[1]))
            && retries[0].contains("(attempt 2/5)"),
        "{}",
        retries[0]
    );
    assert_served_the_db(&healthy, &ran);
    assert!(
        ran.elapsed < Duration::from_secs(20),
        "failing over cost {:?}",
        ran.elapsed
    );
}

fn first_mirror_refusing_connections(trivy: Trivy) {
    let scene = Scene::start();
    let dead = format!("{}/{}", rig::proxy::refused_addr(), scene::DB_REPO);
    fails_over_where_trivy_aborts(trivy, &scene, &dead, "connection refused");
}

fn first_mirror_without_the_artifact(trivy: Trivy) {
    let scene = Scene::start();
    let gone = scene.mirror();
    gone.add_rule("/manifests/", When::Always, Fault::ManifestUnknown);
    fails_over_where_trivy_aborts(
        trivy,
        &scene,
        &scene::db_repo(&gone),
        "artifact not found (404 MANIFEST_UNKNOWN)",
    );
    assert!(
        db_requests(&gone)
            .iter()
            .all(|r| r.status == Some(404) && r.path.contains("/manifests/")),
        "{:#?}",
        gone.requests()
    );
}

/// The mirror demands docker token auth and its token service refuses anonymous requests.
fn first_mirror_demanding_credentials_it_cannot_get(trivy: Trivy) {
    let scene = Scene::start();
    let private = scene.mirror();
    private.require_token_auth("ghcr.io");
    private.add_rule(
        "/token",
        When::Always,
        Fault::Status {
            status: 401,
            body: rig::proxy::UNAUTHORIZED_BODY.into(),
        },
    );
    fails_over_where_trivy_aborts(
        trivy,
        &scene,
        &scene::db_repo(&private),
        "access denied (401/403)",
    );
    assert!(
        private.tokens_issued() == 0 && db_requests(&private).is_empty(),
        "no token, no DB request: {:#?}",
        private.requests()
    );
}

// ---- every mirror rate limited ----

/// Both mirrors always answer 429: trivy-ecr gives up with exit 3 inside its budget, in one
/// message naming each mirror and its last error, and trivy never starts scanning.
///
/// The budget differs per version to keep the test short: on 0.76 an attempt costs ~8 s of
/// trivy's own retries (3 tries per mirror), so the wait budget (500 ms) stops it after one
/// attempt; on 0.69 an attempt is quick, so it runs out of attempts (2) after one backoff wait.
fn every_mirror_rate_limited_ends_with_exit_3_within_the_budget(trivy: Trivy) {
    let scene = Scene::start();
    let (first, second) = (scene.mirror(), scene.mirror());
    for mirror in [&first, &second] {
        mirror.add_rule(scene::DB_PATH, When::Always, Fault::too_many_requests());
    }
    let chain = [scene::db_repo(&first), scene::db_repo(&second)];
    let (max_attempts, max_wait, attempts, reason) = match trivy {
        Trivy::Current => (2, Duration::from_millis(500), 1, "beyond the wait budget"),
        Trivy::Old => (2, Duration::from_secs(30), 2, "no attempts left"),
    };

    let sb = Sandbox::new();
    let ran = trivy_ecr(&sb, trivy, &scene.image(), &chain, &[])
        .env("TRIVY_ECR_MAX_ATTEMPTS", max_attempts.to_string())
        .env("TRIVY_ECR_MAX_WAIT", format!("{}ms", max_wait.as_millis()))
        .run();

    eprintln!(
        "measure: every mirror 429 on trivy {}: exit {:?} after {:.2?}; requests per mirror (with the /v2/ pings): {} and {}",
        trivy.version(),
        ran.code(),
        ran.elapsed,
        first.requests().len(),
        second.requests().len()
    );
    assert_eq!(ran.code(), Some(3), "{}", ran.describe());
    assert!(ran.stdout.is_empty(), "{}", ran.describe());
    let errors = ran.stderr_lines_with("trivy-ecr: error:");
    assert_eq!(errors.len(), 1, "{}", ran.describe());
    let error = errors[0];
    let plural = if attempts == 1 { "" } else { "s" };
    assert!(
        error.contains(&format!(
            "could not obtain the vulnerability DB from any mirror after {attempts} attempt{plural}"
        )) && error.contains(reason),
        "{error}"
    );
    for repo in &chain {
        assert!(
            error.contains(&format!(
                "{repo}: rate limited (429 TOOMANYREQUESTS, retry after 153.6µs)"
            )),
            "{repo} and its last error are not named: {error}"
        );
    }
    assert!(
        scene.image_manifest_requests().is_empty(),
        "trivy must not scan without a DB: {:#?}",
        scene.images.requests()
    );
    for mirror in [&first, &second] {
        assert_eq!(mirror.runs().len(), attempts, "{}", ran.describe());
        assert_eq!(
            statuses(&db_requests(mirror)),
            vec![Some(429); attempts * trivy.tries_on_429()],
        );
    }
    // Each attempt costs trivy's retries (~4 s per mirror on 0.76), plus at most the wait budget.
    let per_attempt = Duration::from_secs(4) * trivy.tries_on_429() as u32 + Duration::from_secs(3);
    assert!(
        ran.elapsed <= per_attempt * attempts as u32 + max_wait,
        "took {:?}",
        ran.elapsed
    );
}

// ---- transient rate limit ----

/// The only mirror answers 429 to its first 3 DB requests, then serves. trivy-ecr retries the
/// same mirror (there is no other) with growing backoff and gets the verdict; the gaps between
/// trivy runs, read from the proxy's clock, respect the backoff (1 s doubling, up to +100 %
/// jitter), and each retry line announces a wait within those bounds.
fn rate_limited_for_the_first_3_requests_then_served(trivy: Trivy) {
    let scene = Scene::start();
    let mirror = scene.mirror();
    mirror.add_rule(scene::DB_PATH, When::FirstN(3), Fault::too_many_requests());
    let chain = [scene::db_repo(&mirror)];

    let sb = Sandbox::new();
    let ran = trivy_ecr(&sb, trivy, &scene.image(), &chain, &["--format", "json"]).run();

    assert_gate_failed_on_the_fixture(&ran);
    let requests = db_requests(&mirror);
    let manifest_statuses: Vec<Option<u16>> = requests
        .iter()
        .filter(|r| r.path.contains("/manifests/"))
        .map(|r| r.status)
        .collect();
    assert_eq!(
        manifest_statuses,
        [Some(429), Some(429), Some(429), Some(200)]
    );
    assert_served_the_db(&mirror, &ran);

    let runs = mirror.runs();
    let failed_runs = 3 / trivy.tries_on_429();
    assert_eq!(runs.len(), failed_runs + 1, "{}", ran.describe());
    let retries = retry_lines(&ran);
    assert_eq!(retries.len(), failed_runs, "{}", ran.describe());
    let mut gaps = Vec::new();
    for (k, pair) in runs.windows(2).enumerate() {
        let gap = pair[1][0].at - pair[0].last().expect("requests").at;
        let backoff = Duration::from_secs(1 << k);
        gaps.push(gap);
        // The wait is backoff..2*backoff after trivy exits; trivy starts in well under 2 s.
        assert!(
            gap >= backoff && gap <= backoff * 2 + Duration::from_secs(2),
            "retry {} came {gap:?} after the failed run; backoff is {backoff:?} + up to 100 %\n{}",
            k + 1,
            ran.describe()
        );
        let announced: f64 = retries[k]
            .split(" first in ")
            .nth(1)
            .and_then(|rest| rest.split('s').next())
            .and_then(|secs| secs.parse().ok())
            .unwrap_or_else(|| panic!("no wait in {}", retries[k]));
        assert!(
            announced >= backoff.as_secs_f64() - 0.05
                && announced <= 2.0 * backoff.as_secs_f64() + 0.05,
            "{}",
            retries[k]
        );
    }
    eprintln!(
        "measure: 429 x3 on trivy {}: verdict in {:.2?} after {} trivy runs; gaps between runs \
         {gaps:.2?}",
        trivy.version(),
        ran.elapsed,
        runs.len()
    );
}

// ---- the user's own repository ----

/// However the user names a repository (flag, `--flag=value`, `TRIVY_DB_REPOSITORY`,
/// `trivy.yaml`), trivy uses only it: the mirrors of trivy-ecr's chain see no request at all.
fn users_own_repository_is_the_only_one_contacted(trivy: Trivy) {
    let scene = Scene::start();
    let (ecr, gcr) = (scene.mirror(), scene.mirror());
    let chain = [scene::db_repo(&ecr), scene::db_repo(&gcr)];
    let mine = scene.mirror();
    let repo = scene::db_repo(&mine);
    let forms = ["flag", "flag=value", "TRIVY_DB_REPOSITORY", "trivy.yaml"];
    for form in forms {
        let before = db_requests(&mine).len();
        let sb = Sandbox::new();
        let equals = format!("--db-repository={repo}");
        let extra: Vec<&str> = match form {
            "flag" => vec!["--format", "json", "--db-repository", &repo],
            "flag=value" => vec!["--format", "json", &equals],
            _ => vec!["--format", "json"],
        };
        let mut cli = trivy_ecr(&sb, trivy, &scene.image(), &chain, &extra);
        match form {
            "TRIVY_DB_REPOSITORY" => {
                cli.env("TRIVY_DB_REPOSITORY", &repo);
            }
            "trivy.yaml" => std::fs::write(
                sb.work_dir().join("trivy.yaml"),
                format!("db:\n  repository:\n    - {repo}\n"),
            )
            .expect("write trivy.yaml"),
            _ => {}
        }
        let ran = cli.run();

        assert_gate_failed_on_the_fixture(&ran);
        assert!(
            db_requests(&mine).len() > before,
            "{form}: the user's repository was not used\n{}",
            ran.describe()
        );
        assert!(
            ran.stderr.contains(&format!("downloaded from {repo}")),
            "{form}: {}",
            ran.describe()
        );
        for mirror in [&ecr, &gcr] {
            assert!(
                mirror.requests().is_empty(),
                "{form}: trivy-ecr's mirror {} was contacted: {:#?}",
                mirror.host_port(),
                mirror.requests()
            );
        }
    }
    assert_served(&mine, "the user's repository");
}

/// The user's repository answers 429 until trivy has given up once: trivy-ecr retries that
/// repository after a backoff, and never swaps in its own mirrors.
fn users_own_rate_limited_repository_is_retried_never_replaced(trivy: Trivy) {
    let scene = Scene::start();
    let (ecr, gcr) = (scene.mirror(), scene.mirror());
    let chain = [scene::db_repo(&ecr), scene::db_repo(&gcr)];
    let mine = scene.mirror();
    mine.add_rule(
        scene::DB_PATH,
        When::FirstN(trivy.tries_on_429()),
        Fault::too_many_requests(),
    );
    let repo = scene::db_repo(&mine);

    let sb = Sandbox::new();
    let ran = trivy_ecr(
        &sb,
        trivy,
        &scene.image(),
        &chain,
        &["--format", "json", "--db-repository", &repo],
    )
    .run();

    assert_gate_failed_on_the_fixture(&ran);
    let retries = retry_lines(&ran);
    assert_eq!(retries.len(), 1, "{}", ran.describe());
    assert!(
        retries[0].contains(&format!("vulnerability DB: {repo} rate limited"))
            && retries[0].contains("; retrying in ")
            && !retries[0].contains(" first "),
        "the user's repository is retried as given: {}",
        retries[0]
    );
    assert_eq!(mine.runs().len(), 2, "{:#?}", mine.requests());
    assert_served_the_db(&mine, &ran);
    for mirror in [&ecr, &gcr] {
        assert!(mirror.requests().is_empty(), "{:#?}", mirror.requests());
    }
}

// ---- trivy server ----

/// `trivy-ecr server` is trivy's server with the mirror chain: it downloads the DB from the
/// chain, serves scans (a bare trivy client gets the fixture's findings through it), and ends
/// with 143 when the CI runner sends SIGTERM.
fn server_mode_gets_the_db_from_the_chain_and_stops_on_sigterm(trivy: Trivy) {
    let scene = Scene::start();
    let mirror = scene.mirror();
    let chain = [scene::db_repo(&mirror)];
    let port = rig::registry::free_port();
    let listen = format!("127.0.0.1:{port}");

    let sb = Sandbox::new();
    let trivy_path = trivy.path();
    let mut server = sb
        .command(Program::TrivyEcr(&trivy_path))
        .args(["server", "--listen", &listen, "--cache-dir"])
        .arg(sb.cache_dir())
        .env("TRIVY_ECR_DB_REPOSITORIES", chain.join(","))
        .env("TRIVY_ECR_JAVA_DB_REPOSITORIES", nowhere_java_db())
        .spawn();
    let addr: std::net::SocketAddr = listen.parse().expect("address");
    let listening = server.wait_until(Duration::from_secs(60), || {
        std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(100)).is_ok()
    });
    assert!(
        listening,
        "trivy-ecr server is not listening on {listen}; exit {:?}\n--- stderr ---\n{}",
        server.try_wait(),
        server.stderr()
    );
    assert_served(&mirror, &server.stderr());

    let client_sb = Sandbox::new();
    let client = bare_trivy(
        &client_sb,
        trivy,
        &scene.image(),
        &["--format", "json", "--server", &format!("http://{listen}")],
    )
    .run();
    assert_eq!(client.code(), Some(0), "{}", client.describe());
    assert_eq!(
        findings(&client.stdout),
        trivy_db::expected_alpine_findings()
    );

    server.signal(libc::SIGTERM);
    let status = server.wait_timeout(Duration::from_secs(20));
    assert_eq!(
        status.and_then(|s| s.code()),
        Some(128 + libc::SIGTERM),
        "{status:?}\n{}",
        server.stderr()
    );
}

// ---- logs ----

/// With stderr going to a CI log (a pipe, not a terminal), everything on it is plain text:
/// trivy leaves its colours out there, and so must trivy-ecr's own log lines.
#[test]
fn logs_are_plain_text_when_stderr_is_not_a_terminal() {
    let trivy = Trivy::Current;
    let scene = Scene::start();
    let mirror = scene.mirror();
    let sb = Sandbox::new();
    let ran = trivy_ecr(&sb, trivy, &scene.image(), &[scene::db_repo(&mirror)], &[])
        .env("TRIVY_ECR_LOG", "debug")
        .run();

    assert_eq!(ran.code(), Some(1), "{}", ran.describe());
    let debug: Vec<&str> = ran.stderr_lines_with("running trivy");
    assert!(!debug.is_empty(), "no debug lines\n{}", ran.describe());
    let coloured: Vec<&str> = ran
        .stderr
        .lines()
        .filter(|l| l.contains('\u{1b}'))
        .collect();
    assert!(
        coloured.is_empty(),
        "escape codes in a CI log:\n{}",
        coloured.join("\n").escape_debug()
    );
}

// ---- a stalled mirror ----

/// The first mirror accepts the manifest request and never answers. trivy 0.76 waits forever
/// (its `--timeout` does not cover DB downloads; see the rig selftest); trivy-ecr's deadline
/// (`TRIVY_ECR_TIMEOUT`) stops that run, counts the stall as a timeout of that mirror, and the
/// next attempt starts with the healthy one.
#[test]
fn first_mirror_stalling_does_not_hang_the_build() {
    let trivy = Trivy::Current;
    let scene = Scene::start();
    let stalled = scene.mirror();
    stalled.add_rule("/trivy-db/manifests/", When::Always, Fault::Stall);
    let healthy = scene.mirror();
    let chain = [scene::db_repo(&stalled), scene::db_repo(&healthy)];

    let sb = Sandbox::new();
    let ran = trivy_ecr(&sb, trivy, &scene.image(), &chain, &["--format", "json"])
        .env("TRIVY_ECR_TIMEOUT", "4s")
        .run_with_deadline(Duration::from_secs(60));

    assert!(
        !ran.killed_at_deadline,
        "trivy-ecr still waiting on the stalled mirror after {:?}\n{}",
        ran.elapsed,
        ran.describe()
    );
    assert_gate_failed_on_the_fixture(&ran);
    assert_served_the_db(&healthy, &ran);
}
