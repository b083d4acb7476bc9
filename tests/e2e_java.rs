//! trivy-ecr and the Java DB, end to end with the real trivy (0.76 and 0.69): an image with a JAR
//! that only the Java DB can name makes trivy fetch the Java DB mid-scan, from the chain
//! trivy-ecr injects (`TRIVY_ECR_JAVA_DB_REPOSITORIES` points it at rig mirrors). Asserts the
//! JAR's finding in the report, the exit code, the retry lines and every mirror's request log.

#[macro_use]
mod rig;

use rig::proxy::{Fault, FaultProxy, Recorded, When};
use rig::report::{Report, normalised_json};
use rig::run::Ran;
use rig::sandbox::{Cli, Program, Sandbox};
use rig::scene::{self, Scene};
use rig::trivy_db;
use rig::trivys::Trivy;

on_each_trivy!(
    java_db_chain_is_injected_and_names_the_jar,
    java_db_first_mirror_always_429,
    java_db_first_mirror_refusing_connections,
);

/// trivy-ecr scanning the image with the JAR, the vulnerability DB from `db_mirror` and the Java
/// DB chain `java_chain`.
fn trivy_ecr(sb: &Sandbox, trivy: Trivy, scene: &Scene, db: &str, java_chain: &[String]) -> Cli {
    let trivy = trivy.path();
    let mut cli = sb.scan(
        Program::TrivyEcr(&trivy),
        &scene.jar_image(),
        &["--format", "json"],
    );
    cli.env("TRIVY_ECR_DB_REPOSITORIES", db)
        .env("TRIVY_ECR_JAVA_DB_REPOSITORIES", java_chain.join(","));
    cli
}

fn java_db_requests(mirror: &FaultProxy) -> Vec<Recorded> {
    mirror.requests_to(scene::JAVA_DB_PATH)
}

/// The report holds the fixture's Alpine findings and the JAR's, which only the Java DB can give;
/// the gate fails on the CRITICALs.
fn assert_verdict_with_the_jar(ran: &Ran) {
    assert_eq!(ran.code(), Some(1), "{}", ran.describe());
    let report = Report::parse(&ran.stdout);
    assert_eq!(
        report.findings_of_class("lang-pkgs"),
        [trivy_db::expected_jar_finding()],
        "{}",
        ran.describe()
    );
    assert_eq!(
        report.findings_of_class("os-pkgs"),
        trivy_db::expected_alpine_findings()
    );
    assert!(
        ran.stderr
            .contains("trivy-ecr: FAILED: 2 findings at or above CRITICAL (exit 1)"),
        "{}",
        ran.describe()
    );
}

fn assert_served_the_java_db(mirror: &FaultProxy, ran: &Ran) {
    let served: Vec<String> = java_db_requests(mirror)
        .into_iter()
        .filter(|r| r.status == Some(200))
        .map(|r| r.path)
        .collect();
    assert!(
        served.iter().any(|p| p.contains("/manifests/"))
            && served.iter().any(|p| p.contains("/blobs/")),
        "the Java DB did not come from {}: {:#?}\n{}",
        mirror.host_port(),
        mirror.requests(),
        ran.describe()
    );
}

/// The Java DB comes from the first mirror of trivy-ecr's chain; the report is the one bare
/// trivy writes given that repository (JSON without `ReportID`/`CreatedAt`).
fn java_db_chain_is_injected_and_names_the_jar(trivy: Trivy) {
    let scene = Scene::start();
    let db_mirror = scene.mirror();
    let db = scene::db_repo(&db_mirror);
    let (first, second) = (scene.mirror(), scene.mirror());
    let chain = [scene::java_db_repo(&first), scene::java_db_repo(&second)];

    let sb = Sandbox::new();
    let ran = trivy_ecr(&sb, trivy, &scene, &db, &chain).run();

    assert_verdict_with_the_jar(&ran);
    assert!(
        ran.stderr_lines_with("[javadb] Artifact successfully downloaded")
            .iter()
            .any(|l| l.contains(&chain[0])),
        "{}",
        ran.describe()
    );
    assert_served_the_java_db(&first, &ran);
    assert!(second.requests().is_empty(), "{:#?}", second.requests());
    assert!(sb.cache_dir().join("java-db/trivy-java.db").is_file());

    let bare_sb = Sandbox::new();
    let bare = bare_sb
        .scan(
            Program::Trivy(&trivy.path()),
            &scene.jar_image(),
            &[
                "--format",
                "json",
                "--db-repository",
                &db,
                "--java-db-repository",
                &chain[0],
            ],
        )
        .run();
    assert_eq!(bare.code(), Some(0), "{}", bare.describe());
    assert_eq!(normalised_json(&ran.stdout), normalised_json(&bare.stdout));
}

/// The first Java DB mirror always answers 429. Bare trivy given only that mirror dies mid-scan
/// (after pulling the image); trivy-ecr's chain gets the Java DB from the next mirror.
fn java_db_first_mirror_always_429(trivy: Trivy) {
    let scene = Scene::start();
    let db_mirror = scene.mirror();
    let db = scene::db_repo(&db_mirror);
    let limited = scene.mirror();
    limited.add_rule(
        scene::JAVA_DB_PATH,
        When::Always,
        Fault::too_many_requests(),
    );
    let healthy = scene.mirror();
    let chain = [scene::java_db_repo(&limited), scene::java_db_repo(&healthy)];

    let bare_sb = Sandbox::new();
    let bare = bare_sb
        .scan(
            Program::Trivy(&trivy.path()),
            &scene.jar_image(),
            &[
                "--format",
                "json",
                "--db-repository",
                &db,
                "--java-db-repository",
                &chain[0],
            ],
        )
        .run();
    assert_eq!(bare.code(), Some(1), "{}", bare.describe());
    let fatal = bare
        .fatal()
        .unwrap_or_else(|| panic!("{}", bare.describe()));
    assert!(
        fatal.contains("Java DB") && fatal.contains("TOOMANYREQUESTS"),
        "{fatal}"
    );
    assert!(bare.stdout.is_empty(), "{}", bare.describe());
    let bare_hits = java_db_requests(&limited).len();

    let sb = Sandbox::new();
    let ran = trivy_ecr(&sb, trivy, &scene, &db, &chain).run();

    assert_verdict_with_the_jar(&ran);
    let hits = java_db_requests(&limited).len() - bare_hits;
    eprintln!(
        "measure: Java DB first mirror 429 on trivy {}: verdict in {:.2?}, {hits} requests to \
         the rate-limited mirror (bare trivy: FATAL after {:.2?}, {bare_hits} requests)",
        trivy.version(),
        ran.elapsed,
        bare.elapsed
    );
    assert_eq!(hits, trivy.tries_on_429(), "{:#?}", limited.requests());
    assert!(
        java_db_requests(&limited)
            .iter()
            .all(|r| r.status == Some(429)),
        "{:#?}",
        limited.requests()
    );
    assert_served_the_java_db(&healthy, &ran);
}

/// The first Java DB mirror refuses connections: trivy aborts the scan there (bare trivy never
/// asks the second mirror), trivy-ecr runs the scan again with the next mirror first, and the
/// vulnerability DB downloaded by the first attempt is reused from the cache.
fn java_db_first_mirror_refusing_connections(trivy: Trivy) {
    let scene = Scene::start();
    let db_mirror = scene.mirror();
    let db = scene::db_repo(&db_mirror);
    let dead = format!("{}/{}", rig::proxy::refused_addr(), scene::JAVA_DB_REPO);
    let healthy = scene.mirror();
    let chain = [dead.clone(), scene::java_db_repo(&healthy)];

    let bare_sb = Sandbox::new();
    let both = chain.join(",");
    let bare = bare_sb
        .scan(
            Program::Trivy(&trivy.path()),
            &scene.jar_image(),
            &["--db-repository", &db, "--java-db-repository", &both],
        )
        .run();
    assert_eq!(bare.code(), Some(1), "{}", bare.describe());
    let fatal = bare
        .fatal()
        .unwrap_or_else(|| panic!("{}", bare.describe()));
    assert!(
        fatal.contains(&format!("failed to download artifact from {dead}")),
        "{fatal}"
    );
    assert!(healthy.requests().is_empty(), "{:#?}", healthy.requests());
    let db_blobs_before = db_mirror.requests_to("/blobs/").len();

    let sb = Sandbox::new();
    let ran = trivy_ecr(&sb, trivy, &scene, &db, &chain).run();

    assert_verdict_with_the_jar(&ran);
    let retries = ran.stderr_lines_with("; retrying");
    assert_eq!(retries.len(), 1, "{}", ran.describe());
    assert!(
        retries[0].contains(&format!("Java DB: {dead} connection refused"))
            && retries[0].contains(&format!("retrying with {} first in 0.0s", chain[1])),
        "{}",
        retries[0]
    );
    assert_served_the_java_db(&healthy, &ran);
    assert_eq!(
        db_mirror.requests_to("/blobs/").len() - db_blobs_before,
        1,
        "the vulnerability DB is downloaded once and reused by the retry: {:#?}",
        db_mirror.requests()
    );
    assert_eq!(
        scene.images.requests_to("/app/manifests/jar").len(),
        2 + 1,
        "bare trivy pulled the image once, trivy-ecr once per attempt"
    );
}
