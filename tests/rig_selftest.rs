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
fn the_installed_trivys_are_the_versions_the_rig_was_verified_with() {
    assert_eq!(rig::tools::version_of(&rig::tools::trivy()), "0.76.0");
    assert_eq!(rig::tools::version_of(&rig::tools::trivy_old()), "0.69.3");
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

#[test]
fn bare_trivy_falls_back_to_the_next_mirror_after_429() {
    let registry = registry_with_db_and_image();
    let ghcr = FaultProxy::start(registry.addr());
    ghcr.add_rule("/trivy-db/", When::Always, Fault::too_many_requests());
    let ecr = FaultProxy::start(registry.addr());
    let first = format!("{}/trivy-db:2", ghcr.host_port());
    let second = format!("{}/trivy-db:2", ecr.host_port());

    let ran = scan_with_db_repos(&registry, &[&first, &second], "429-then-ok");

    assert_eq!(ran.code(), Some(0), "{}", ran.describe());
    assert!(
        !ran.stderr_lines_with("Trying to download artifact from other repository")
            .is_empty(),
        "{}",
        ran.describe()
    );
    assert_eq!(
        Report::parse(&ran.stdout).findings(),
        trivy_db::expected_alpine_findings()
    );
    assert!(
        ghcr.requests_to("/blobs/").is_empty(),
        "no blob from the 429 mirror"
    );
    let from_ecr: Vec<_> = ecr
        .requests_to("/trivy-db/")
        .into_iter()
        .map(|r| (r.method, r.status))
        .collect();
    assert!(
        from_ecr.contains(&("GET".into(), Some(200))) && from_ecr.len() >= 2,
        "manifest and blob from the second mirror: {from_ecr:?}"
    );
}

#[test]
fn bare_trivy_aborts_on_connection_refused() {
    let registry = registry_with_db_and_image();
    let dead = format!("{}/trivy-db:2", rig::proxy::refused_addr());

    let ran = scan_with_db_repos(&registry, &[&dead], "connection-refused");

    assert_eq!(ran.code(), Some(1), "{}", ran.describe());
    let fatal = fatal_line(&ran);
    assert!(fatal.contains("connection refused"), "{fatal}");
    assert!(fatal.contains("failed to download"), "{fatal}");
}

#[test]
fn bare_trivy_aborts_on_manifest_unknown_without_trying_the_next_mirror() {
    let registry = registry_with_db_and_image();
    let gone = FaultProxy::start(registry.addr());
    gone.add_rule("/manifests/", When::Always, Fault::ManifestUnknown);
    let healthy = FaultProxy::start(registry.addr());
    let first = format!("{}/trivy-db:2", gone.host_port());
    let second = format!("{}/trivy-db:2", healthy.host_port());

    let ran = scan_with_db_repos(&registry, &[&first, &second], "404-manifest-unknown");

    assert_eq!(ran.code(), Some(1), "{}", ran.describe());
    let fatal = fatal_line(&ran);
    assert!(fatal.contains("MANIFEST_UNKNOWN"), "{fatal}");
    assert_eq!(
        gone.requests_to("/manifests/").len(),
        1,
        "404 is not retried"
    );
    assert!(healthy.requests().is_empty(), "404 does not fall back");
}

#[test]
fn bare_trivy_downloads_through_docker_token_auth() {
    let registry = registry_with_db_and_image();
    let ecr = FaultProxy::start(registry.addr());
    ecr.require_token_auth("public.ecr.aws");
    let db_repo = format!("{}/trivy-db:2", ecr.host_port());

    let ran = scan_with_db_repos(&registry, &[&db_repo], "token-auth-ok");

    assert_eq!(ran.code(), Some(0), "{}", ran.describe());
    assert!(ecr.tokens_issued() >= 1, "{:#?}", ecr.requests());
    let token_requests = ecr.requests_to("/token");
    assert!(
        token_requests
            .iter()
            .all(|r| r.query.contains("scope=repository%3Atrivy-db%3Apull")
                || r.query.contains("scope=repository:trivy-db:pull")),
        "{token_requests:#?}"
    );
    let served: Vec<_> = ecr
        .requests_to("/v2/trivy-db/")
        .into_iter()
        .filter(|r| r.status == Some(200))
        .collect();
    assert!(
        !served.is_empty()
            && served
                .iter()
                .all(|r| r.auth_scheme.as_deref() == Some("Bearer")),
        "{served:#?}"
    );
}

#[test]
fn bare_trivy_aborts_on_401_unauthorized() {
    let registry = registry_with_db_and_image();
    let ghcr = FaultProxy::start(registry.addr());
    ghcr.require_token_auth("ghcr.io");
    ghcr.add_rule("/trivy-db/manifests/", When::Always, Fault::Unauthorized);
    let db_repo = format!("{}/trivy-db:2", ghcr.host_port());

    let ran = scan_with_db_repos(&registry, &[&db_repo], "401-unauthorized");

    assert_eq!(ran.code(), Some(1), "{}", ran.describe());
    let fatal = fatal_line(&ran);
    assert!(fatal.contains("UNAUTHORIZED"), "{fatal}");
    assert!(
        ran.elapsed < Duration::from_secs(3),
        "401 is not retried: {:?}",
        ran.elapsed
    );
}

#[test]
fn bare_trivy_falls_back_after_503() {
    let registry = registry_with_db_and_image();
    let flaky = FaultProxy::start(registry.addr());
    flaky.add_rule("/trivy-db/", When::Always, Fault::Unavailable);
    let healthy = FaultProxy::start(registry.addr());
    let first = format!("{}/trivy-db:2", flaky.host_port());
    let second = format!("{}/trivy-db:2", healthy.host_port());

    let ran = scan_with_db_repos(&registry, &[&first, &second], "503-then-ok");

    assert_eq!(ran.code(), Some(0), "{}", ran.describe());
    assert_eq!(
        flaky.requests_to("/trivy-db/").len(),
        3,
        "{:#?}",
        flaky.requests()
    );
    assert!(!healthy.requests_to("/blobs/").is_empty());
}

#[test]
fn bare_trivy_fails_on_a_blob_cut_mid_download() {
    let registry = registry_with_db_and_image();
    let mirror = FaultProxy::start(registry.addr());
    mirror.add_rule("/trivy-db/blobs/sha256:", When::Always, Fault::DropMidBody);
    let healthy = FaultProxy::start(registry.addr());
    let first = format!("{}/trivy-db:2", mirror.host_port());
    let second = format!("{}/trivy-db:2", healthy.host_port());

    let ran = scan_with_db_repos(&registry, &[&first, &second], "drop-mid-blob");

    assert_eq!(ran.code(), Some(1), "{}", ran.describe());
    // trivy 0.76 re-requests the cut blob (4 GETs seen) but never moves to the next mirror.
    let blob_gets = mirror.requests_to("/blobs/");
    assert!(blob_gets.len() >= 2, "{blob_gets:#?}");
    assert!(blob_gets.iter().all(|r| r.fault == Some("drop-mid-body")));
    assert!(
        healthy.requests().is_empty(),
        "a cut blob does not fall back"
    );
}

#[test]
fn bare_trivy_fails_on_a_corrupted_blob() {
    let registry = registry_with_db_and_image();
    let mirror = FaultProxy::start(registry.addr());
    mirror.add_rule("/trivy-db/blobs/sha256:", When::Always, Fault::CorruptBody);
    let db_repo = format!("{}/trivy-db:2", mirror.host_port());

    let ran = scan_with_db_repos(&registry, &[&db_repo], "corrupt-blob");

    assert_eq!(ran.code(), Some(1), "{}", ran.describe());
    assert!(
        mirror
            .requests_to("/blobs/")
            .iter()
            .all(|r| r.status == Some(200))
    );
}

#[test]
fn old_trivy_0_69_gives_up_on_429_after_one_request() {
    let registry = registry_with_db_and_image();
    let ghcr = FaultProxy::start(registry.addr());
    ghcr.add_rule("/trivy-db/", When::Always, Fault::too_many_requests());
    let db_repo = format!("{}/trivy-db:2", ghcr.host_port());
    let image = format!("{}/app:latest", registry.host_port());

    let ran = TrivyScan::image(&rig::tools::trivy_old(), &[&db_repo])
        .remote(&image)
        .run();
    if let Some(dir) = std::env::var_os("RIG_STDERR_DUMP_DIR") {
        std::fs::write(
            std::path::Path::new(&dir).join("429-always-0.69.log"),
            &ran.stderr,
        )
        .unwrap();
    }

    assert_eq!(ran.code(), Some(1), "{}", ran.describe());
    assert!(
        fatal_line(&ran).contains("TOOMANYREQUESTS"),
        "{}",
        ran.describe()
    );
    assert_eq!(
        ghcr.requests_to("/trivy-db/").len(),
        1,
        "{:#?}",
        ghcr.requests()
    );
}

// ---- fault proxy mechanics, checked with the rig's own client (no trivy) ----

fn get_manifest(client: &rig::oci::Client, path: &str) -> rig::oci::Response {
    client.get(path, Some(rig::oci::OCI_MANIFEST))
}

#[test]
fn proxy_first_n_and_every_kth_count_matching_requests_only() {
    let registry = registry_with_db_and_image();
    let proxy = FaultProxy::start(registry.addr());
    proxy.add_rule("/trivy-db/manifests/", When::FirstN(2), Fault::Unavailable);
    proxy.add_rule(
        "/app/manifests/",
        When::EveryKth(3),
        Fault::too_many_requests(),
    );
    let client = rig::oci::Client::new(&proxy.host_port());

    let db: Vec<u16> = (0..4)
        .map(|_| get_manifest(&client, "/v2/trivy-db/manifests/2").status)
        .collect();
    let app: Vec<u16> = (0..6)
        .map(|_| get_manifest(&client, "/v2/app/manifests/latest").status)
        .collect();

    assert_eq!(db, [503, 503, 200, 200]);
    assert_eq!(app, [200, 200, 429, 200, 200, 429]);
    let logged: Vec<Option<u16>> = proxy.requests().iter().map(|r| r.status).collect();
    let expected: Vec<Option<u16>> = db.iter().chain(&app).map(|s| Some(*s)).collect();
    assert_eq!(logged, expected);
}

#[test]
fn proxy_429_carries_ghcr_body_and_optional_retry_after() {
    let registry = Registry::start();
    let proxy = FaultProxy::start(registry.addr());
    proxy.add_rule(
        "/v2/",
        When::FirstN(1),
        Fault::TooManyRequests {
            retry_after: Some("7".into()),
        },
    );
    proxy.add_rule("/v2/", When::Always, Fault::too_many_requests());
    let client = rig::oci::Client::new(&proxy.host_port());

    let first = client.get("/v2/", None);
    let second = client.get("/v2/", None);

    for resp in [&first, &second] {
        assert_eq!(resp.status, 429);
        assert_eq!(resp.body, rig::proxy::GHCR_429_BODY.as_bytes());
    }
    assert_eq!(first.header("Retry-After"), Some("7"));
    assert_eq!(second.header("Retry-After"), None);
}

#[test]
fn proxy_stall_never_answers_and_drop_releases_the_connection() {
    let registry = Registry::start();
    let proxy = FaultProxy::start(registry.addr());
    proxy.add_rule("/v2/", When::Always, Fault::Stall);
    let addr = proxy.addr();

    let mut conn = std::net::TcpStream::connect(addr).unwrap();
    conn.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    use std::io::{Read, Write};
    conn.write_all(b"GET /v2/ HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    assert!(proxy.wait_for_requests("/v2/", 1, Duration::from_secs(5)));
    let mut buf = [0u8; 64];
    let err = conn
        .read(&mut buf)
        .expect_err("a stalled request gets no answer");
    assert!(
        matches!(
            err.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        ),
        "{err}"
    );
    assert_eq!(proxy.requests()[0].status, None);

    drop(proxy);
    conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let n = conn.read(&mut buf).unwrap_or(0);
    assert_eq!(n, 0, "the connection closes when the proxy is dropped");
    assert!(
        std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_err(),
        "the listener is closed"
    );
}

#[test]
fn refused_addr_refuses() {
    let addr: std::net::SocketAddr = rig::proxy::refused_addr().parse().unwrap();
    let err = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(1)).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused);
}

// ---- DB freshness and size knobs ----

#[test]
fn padded_db_grows_the_artifact_and_stays_valid_for_trivy() {
    let padding = 3 * 1024 * 1024;
    let db = trivy_db::db_tar_gz(&DbSpec::fresh().with_padding(padding));
    assert!(
        db.len() as u64 >= padding,
        "artifact only {} bytes",
        db.len()
    );

    let registry = Registry::start();
    let client = registry.client();
    let pushed = client.push_trivy_db("trivy-db", "2", &db);
    assert_eq!(pushed.layer.size, db.len() as u64);
    Image::alpine().push(&client, "app", "latest");
    let db_repo = format!("{}/trivy-db:2", registry.host_port());

    let ran = scan_with_db_repos(&registry, &[&db_repo], "padded");

    assert_eq!(ran.code(), Some(0), "{}", ran.describe());
    assert_eq!(
        Report::parse(&ran.stdout).findings(),
        trivy_db::expected_alpine_findings()
    );
}

#[test]
fn cached_db_freshness_decides_whether_trivy_downloads() {
    let registry = registry_with_db_and_image();
    let mirror = FaultProxy::start(registry.addr());
    let db_repo = format!("{}/trivy-db:2", mirror.host_port());
    let image = format!("{}/app:latest", registry.host_port());
    let two_hours_ago = std::time::SystemTime::now() - Duration::from_secs(2 * 3600);

    // Fresh (NextUpdate ahead): trivy uses the cache and never asks the mirror.
    let mut fresh = TrivyScan::image(&rig::tools::trivy(), &[&db_repo]);
    trivy_db::install_into_cache(&fresh.cache_dir(), &DbSpec::fresh());
    let ran = fresh.remote(&image).run();
    assert_eq!(ran.code(), Some(0), "{}", ran.describe());
    assert!(mirror.requests().is_empty(), "{:#?}", mirror.requests());

    // Stale (NextUpdate passed, downloaded 2 h ago): trivy downloads from the mirror.
    let mut stale = TrivyScan::image(&rig::tools::trivy(), &[&db_repo]);
    trivy_db::install_into_cache(
        &stale.cache_dir(),
        &DbSpec::stale().downloaded_at(two_hours_ago),
    );
    let ran = stale.remote(&image).run();
    assert_eq!(ran.code(), Some(0), "{}", ran.describe());
    assert!(
        !ran.stderr_lines_with("Need to update DB").is_empty(),
        "{}",
        ran.describe()
    );
    assert!(!mirror.requests_to("/trivy-db/blobs/").is_empty());
    let meta = std::fs::read_to_string(stale.cache_dir().join("db/metadata.json")).unwrap();
    assert!(
        !meta.contains("0001-01-01"),
        "trivy stamps DownloadedAt: {meta}"
    );
}

#[tokio::test]
async fn proxy_can_live_and_die_inside_an_async_test() {
    let proxy = FaultProxy::start(rig::proxy::refused_addr().parse().unwrap());
    proxy.add_rule("/", When::Always, Fault::Denied);
    let client = rig::oci::Client::new(&proxy.host_port());
    let resp = tokio::task::spawn_blocking(move || client.get("/v2/", None))
        .await
        .unwrap();
    assert_eq!(resp.status, 403);
    assert_eq!(resp.body, rig::proxy::DENIED_BODY.as_bytes());
    drop(proxy);
}

#[test]
fn a_java_db_installed_in_the_cache_is_used_without_a_download() {
    let registry = registry_with_db_and_image();
    Image::alpine_with_jar().push(&registry.client(), "app", "jar");
    let db_repo = format!("{}/trivy-db:2", registry.host_port());
    let nowhere = format!("{}/trivy-java-db:1", rig::proxy::refused_addr());
    let image = format!("{}/app:jar", registry.host_port());

    let mut scan = TrivyScan::image(&rig::tools::trivy(), &[&db_repo]);
    rig::java_db::install_into_cache(&scan.cache_dir(), &DbSpec::fresh());
    let ran = scan
        .args(["--java-db-repository", &nowhere])
        .remote(&image)
        .run();

    assert_eq!(ran.code(), Some(0), "{}", ran.describe());
    assert!(
        ran.stderr_lines_with("[javadb] Downloading").is_empty(),
        "{}",
        ran.describe()
    );
    assert_eq!(
        Report::parse(&ran.stdout).findings_of_class("lang-pkgs"),
        [trivy_db::expected_jar_finding()]
    );
}

#[test]
fn bare_trivy_aborts_when_the_token_service_rejects_its_credentials() {
    let registry = registry_with_db_and_image();
    let ghcr = FaultProxy::start(registry.addr());
    ghcr.require_token_auth("ghcr.io");
    ghcr.add_rule(
        "/token",
        When::Always,
        Fault::Status {
            status: 401,
            body: rig::proxy::UNAUTHORIZED_BODY.into(),
        },
    );
    let db_repo = format!("{}/trivy-db:2", ghcr.host_port());
    let image = format!("{}/app:latest", registry.host_port());

    // --username/--password are meant for the image's registry, but trivy sends them to the DB
    // repository's token service too.
    let ran = TrivyScan::image(&rig::tools::trivy(), &[&db_repo])
        .args(["--username", "someone", "--password", "secret"])
        .remote(&image)
        .run();
    if let Some(dir) = std::env::var_os("RIG_STDERR_DUMP_DIR") {
        std::fs::write(
            std::path::Path::new(&dir).join("401-token.log"),
            &ran.stderr,
        )
        .unwrap();
    }

    assert_eq!(ran.code(), Some(1), "{}", ran.describe());
    let fatal = fatal_line(&ran);
    assert!(fatal.contains("failed to download"), "{fatal}");
    // trivy 0.76 asks with the credentials first, then once more anonymously.
    let schemes: Vec<Option<String>> = ghcr
        .requests_to("/token")
        .into_iter()
        .map(|r| r.auth_scheme)
        .collect();
    assert_eq!(schemes, [Some("Basic".to_owned()), None]);
}

#[test]
fn bare_trivy_survives_a_token_service_that_rejects_only_its_credentials() {
    let registry = registry_with_db_and_image();
    let ghcr = FaultProxy::start(registry.addr());
    ghcr.require_token_auth("ghcr.io");
    ghcr.reject_basic_credentials_at_token();
    let db_repo = format!("{}/trivy-db:2", ghcr.host_port());
    let image = format!("{}/app:latest", registry.host_port());

    let ran = TrivyScan::image(&rig::tools::trivy(), &[&db_repo])
        .args(["--username", "someone", "--password", "secret"])
        .remote(&image)
        .run();
    if let Some(dir) = std::env::var_os("RIG_STDERR_DUMP_DIR") {
        std::fs::write(
            std::path::Path::new(&dir).join("401-basic.log"),
            &ran.stderr,
        )
        .unwrap();
    }

    // trivy 0.76 falls back to an anonymous token when its credentials are refused.
    assert_eq!(ran.code(), Some(0), "{}", ran.describe());
    assert_eq!(
        Report::parse(&ran.stdout).findings(),
        trivy_db::expected_alpine_findings()
    );
    let schemes: Vec<Option<String>> = ghcr
        .requests_to("/token")
        .into_iter()
        .map(|r| r.auth_scheme)
        .collect();
    assert_eq!(schemes, [Some("Basic".to_owned()), None]);
    assert!(
        ghcr.requests_to("/blobs/")
            .iter()
            .all(|r| r.auth_scheme.as_deref() == Some("Bearer") && r.status == Some(200))
    );
}

#[test]
fn bare_trivy_hangs_on_a_stalled_mirror_whatever_its_timeout() {
    let registry = registry_with_db_and_image();
    let mirror = FaultProxy::start(registry.addr());
    mirror.add_rule("/trivy-db/manifests/", When::Always, Fault::Stall);
    let db_repo = format!("{}/trivy-db:2", mirror.host_port());
    let image = format!("{}/app:latest", registry.host_port());

    // `--timeout` does not cover the DB download: only an outside deadline ends the run.
    let ran = TrivyScan::image(&rig::tools::trivy(), &[&db_repo])
        .args(["--timeout", "1s"])
        .remote(&image)
        .run_with_deadline(Duration::from_secs(5));

    assert!(ran.killed_at_deadline, "{}", ran.describe());
    let stalled = mirror.requests_to("/trivy-db/manifests/");
    assert_eq!(stalled.len(), 1, "{stalled:#?}");
    assert_eq!(stalled[0].status, None);
}
