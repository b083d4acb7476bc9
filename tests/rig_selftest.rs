//! Proves the e2e rig against the REAL trivy (no wrapper): a synthetic DB pushed to a real
//! registry makes real trivy report exactly the fixture's findings, and the fault proxy makes it
//! fail the way the public mirrors do.

mod rig;

use rig::image::Image;
use rig::registry::Registry;
use rig::report::Report;
use rig::scan::TrivyScan;
use rig::trivy_db::{self, DbSpec};

fn registry_with_db_and_image() -> Registry {
    let registry = Registry::start();
    let client = registry.client();
    client.push_trivy_db("trivy-db", "2", &trivy_db::db_tar_gz(&DbSpec::fresh()));
    Image::alpine().push(&client, "app", "latest");
    registry
}

#[test]
fn real_trivy_reports_the_fixture_findings_from_the_registry() {
    let trivy = rig::tools::trivy();
    let registry = registry_with_db_and_image();
    let db_repo = format!("{}/trivy-db:2", registry.host_port());
    let image = format!("{}/app:latest", registry.host_port());

    let ran = TrivyScan::image(&trivy, &[&db_repo]).remote(&image).run();

    assert_eq!(ran.code(), Some(0), "{}", ran.describe());
    let report = Report::parse(&ran.stdout);
    assert_eq!(
        report.os(),
        ("alpine".into(), rig::image::ALPINE_RELEASE.into())
    );
    assert_eq!(report.findings(), trivy_db::expected_alpine_findings());
}

#[test]
fn fixture_promises_a_fixed_and_an_unfixed_critical_a_high_and_a_medium() {
    let expected = trivy_db::expected_alpine_findings();
    let summary: Vec<(&str, &str, bool)> = expected
        .iter()
        .map(|f| (f.id.as_str(), f.severity.as_str(), f.fixed.is_some()))
        .collect();
    assert_eq!(
        summary,
        [
            ("CVE-2099-0001", "CRITICAL", true),
            ("CVE-2099-0002", "CRITICAL", false),
            ("CVE-2099-0003", "HIGH", true),
            ("CVE-2099-0004", "MEDIUM", true),
        ]
    );
    assert!(
        expected.iter().all(|f| f.id != "CVE-2099-0005"),
        "an advisory fixed before the installed version must not be expected"
    );
}

#[test]
fn real_trivy_reports_the_fixture_findings_from_a_docker_archive() {
    let trivy = rig::tools::trivy();
    let registry = Registry::start();
    registry
        .client()
        .push_trivy_db("trivy-db", "2", &trivy_db::db_tar_gz(&DbSpec::fresh()));
    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join("app.tar");
    Image::alpine().write_docker_archive(&archive, "app:latest");
    let db_repo = format!("{}/trivy-db:2", registry.host_port());

    let ran = TrivyScan::image(&trivy, &[&db_repo]).input(&archive).run();

    assert_eq!(ran.code(), Some(0), "{}", ran.describe());
    let report = Report::parse(&ran.stdout);
    assert_eq!(report.artifact_name(), archive.display().to_string());
    assert_eq!(report.findings(), trivy_db::expected_alpine_findings());
}

#[test]
fn old_trivy_0_69_reports_the_same_findings() {
    let trivy = rig::tools::trivy_old();
    let registry = registry_with_db_and_image();
    let db_repo = format!("{}/trivy-db:2", registry.host_port());
    let image = format!("{}/app:latest", registry.host_port());

    let ran = TrivyScan::image(&trivy, &[&db_repo]).remote(&image).run();

    assert_eq!(ran.code(), Some(0), "{}", ran.describe());
    assert_eq!(
        Report::parse(&ran.stdout).findings(),
        trivy_db::expected_alpine_findings()
    );
}

#[test]
fn exit_code_flag_fires_on_the_critical_findings() {
    let trivy = rig::tools::trivy();
    let registry = registry_with_db_and_image();
    let db_repo = format!("{}/trivy-db:2", registry.host_port());
    let image = format!("{}/app:latest", registry.host_port());

    let gated = TrivyScan::image(&trivy, &[&db_repo])
        .args(["--exit-code", "3", "--severity", "CRITICAL"])
        .remote(&image)
        .run();
    assert_eq!(gated.code(), Some(3), "{}", gated.describe());

    let unfixed_ignored = TrivyScan::image(&trivy, &[&db_repo])
        .args([
            "--exit-code",
            "3",
            "--severity",
            "CRITICAL",
            "--ignore-unfixed",
        ])
        .remote(&image)
        .run();
    assert_eq!(
        unfixed_ignored.code(),
        Some(3),
        "{}",
        unfixed_ignored.describe()
    );
    let ids: Vec<String> = Report::parse(&unfixed_ignored.stdout)
        .findings()
        .into_iter()
        .map(|f| f.id)
        .collect();
    assert_eq!(ids, ["CVE-2099-0001"]);
}

#[test]
fn real_trivy_fetches_the_java_db_and_identifies_the_jar_through_it() {
    let trivy = rig::tools::trivy();
    let registry = Registry::start();
    let client = registry.client();
    client.push_trivy_db("trivy-db", "2", &trivy_db::db_tar_gz(&DbSpec::fresh()));
    client.push_java_db(
        "trivy-java-db",
        "1",
        &rig::java_db::javadb_tar_gz(&DbSpec::fresh()),
    );
    Image::alpine_with_jar().push(&client, "app", "jar");
    let db_repo = format!("{}/trivy-db:2", registry.host_port());
    let java_repo = format!("{}/trivy-java-db:1", registry.host_port());
    let image = format!("{}/app:jar", registry.host_port());

    let mut scan = TrivyScan::image(&trivy, &[&db_repo]);
    let ran = scan
        .arg("--java-db-repository")
        .arg(&java_repo)
        .remote(&image)
        .run();

    assert_eq!(ran.code(), Some(0), "{}", ran.describe());
    let javadb_lines = ran.stderr_lines_with("[javadb]");
    assert!(
        javadb_lines.iter().any(|l| l.contains(&java_repo)),
        "no [javadb] download from {java_repo}\n{}",
        ran.describe()
    );
    assert!(
        scan.cache_dir().join("java-db/trivy-java.db").is_file(),
        "Java DB not in the cache"
    );
    let report = Report::parse(&ran.stdout);
    assert_eq!(
        report.findings_of_class("lang-pkgs"),
        [trivy_db::expected_jar_finding()]
    );
    assert_eq!(
        report.findings_of_class("os-pkgs"),
        trivy_db::expected_alpine_findings()
    );
}

// ---- fault proxy in front of the registry, bare trivy 0.76 ----

use rig::proxy::{Fault, FaultProxy, When};
use std::time::Duration;

/// Runs bare trivy 0.76 against `db_repo` on the fixture image (pulled straight from the
/// registry, not through the proxy), dumping stderr to `RIG_STDERR_DUMP_DIR/<name>.log` if set.
fn scan_with_db_repos(registry: &Registry, db_repos: &[&str], name: &str) -> rig::run::Ran {
    let image = format!("{}/app:latest", registry.host_port());
    let ran = TrivyScan::image(&rig::tools::trivy(), db_repos)
        .remote(&image)
        .run();
    if let Some(dir) = std::env::var_os("RIG_STDERR_DUMP_DIR") {
        std::fs::write(
            std::path::Path::new(&dir).join(format!("{name}.log")),
            &ran.stderr,
        )
        .unwrap();
    }
    ran
}

fn fatal_line(ran: &rig::run::Ran) -> String {
    ran.fatal()
        .unwrap_or_else(|| panic!("no FATAL line\n{}", ran.describe()))
        .to_owned()
}

#[test]
fn bare_trivy_fails_on_a_mirror_that_always_answers_429() {
    let registry = registry_with_db_and_image();
    let ghcr = FaultProxy::start(registry.addr());
    ghcr.add_rule("/trivy-db/", When::Always, Fault::too_many_requests());
    let db_repo = format!("{}/trivy-db:2", ghcr.host_port());

    let ran = scan_with_db_repos(&registry, &[&db_repo], "429-always");

    assert_eq!(ran.code(), Some(1), "{}", ran.describe());
    let fatal = fatal_line(&ran);
    assert!(fatal.contains("TOOMANYREQUESTS"), "{fatal}");
    assert!(fatal.contains("failed to download"), "{fatal}");
    let hits = ghcr.requests_to("/trivy-db/");
    assert!(!hits.is_empty(), "trivy never asked the mirror");
    assert!(
        hits.iter()
            .all(|r| r.status == Some(429) && r.fault == Some("429")),
        "{hits:#?}"
    );
    assert!(ran.stdout.is_empty(), "no report on a failed DB download");
    // trivy 0.76 (ggcr) tries a request 3 times, backing off ~1 s then ~3 s.
    let paths: Vec<&str> = hits.iter().map(|r| r.path.as_str()).collect();
    assert_eq!(paths, ["/v2/trivy-db/manifests/2"; 3]);
    let gaps: Vec<Duration> = hits.windows(2).map(|w| w[1].at - w[0].at).collect();
    eprintln!("429 retry gaps: {gaps:?}");
    assert!(
        gaps[0] >= Duration::from_millis(800) && gaps[1] >= Duration::from_millis(2500),
        "retry spacing {gaps:?}"
    );
}
