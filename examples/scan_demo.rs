//! `scripts/scan-demo`: trivy-ecr against rate-limited mirrors, on this machine, offline.
//!
//! Starts a local registry holding the test rig's synthetic trivy DB and Alpine image, puts three
//! fault proxies in front of it standing in for the default mirror chain (ECR Public answering
//! 429 to everything, mirror.gcr.io unreachable, ghcr.io healthy), and runs
//! `trivy-ecr image <local image>` with that chain, its output going straight to the terminal.
//! Exits with trivy-ecr's exit code: 1, because the gate finds the image's CRITICAL findings.
//!
//! Needs `scripts/install-tools` (trivy, docker-registry) and a built trivy-ecr next to this
//! example (`cargo build` of the same profile); `scripts/scan-demo` does both.

#[path = "../tests/rig/mod.rs"]
mod rig;

use rig::proxy::{Fault, When};
use rig::sandbox::{Program, Sandbox};
use rig::scene::{self, Scene};

fn say(line: &str) {
    eprintln!("scan-demo: {line}");
}

fn main() {
    // The registry and the proxies are stopped when `demo` returns (process::exit skips drops).
    let code = demo();
    say("exiting with trivy-ecr's exit code (1 expected)");
    std::process::exit(code);
}

/// Runs the demo; trivy-ecr's exit code.
fn demo() -> i32 {
    let trivy = rig::tools::trivy();
    let scene = Scene::start();
    let ecr = scene.mirror();
    ecr.add_rule(scene::DB_PATH, When::Always, Fault::too_many_requests());
    let gcr = format!("{}/{}", rig::proxy::refused_addr(), scene::DB_REPO);
    let ghcr = scene.mirror();
    let chain = [scene::db_repo(&ecr), gcr.clone(), scene::db_repo(&ghcr)];
    let image = scene.image();

    say(&format!(
        "a local registry (docker-registry, {}) holds a synthetic trivy DB and an Alpine 3.19 image \
         with two CRITICAL vulnerabilities (one fixed upstream, one not)",
        scene.registry.host_port()
    ));
    say("the mirror chain (TRIVY_ECR_DB_REPOSITORIES), standing in for trivy-ecr's defaults:");
    say(&format!(
        "  1. {}  as public.ecr.aws: answers every request 429 TOOMANYREQUESTS",
        chain[0]
    ));
    say(&format!(
        "  2. {}  as mirror.gcr.io: unreachable (connection refused)",
        chain[1]
    ));
    say(&format!("  3. {}  as ghcr.io: healthy", chain[2]));
    say(&format!(
        "trivy alone gives up here: it falls back from a 429 but aborts on the refused mirror. \
         trivy-ecr downloads the DB itself, moving past both at once, then runs trivy with \
         --skip-db-update. Running trivy-ecr image {image} (trivy {}):",
        rig::tools::version_of(&trivy)
    ));
    eprintln!();

    let sb = Sandbox::new();
    let mut cli = sb.scan(Program::TrivyEcr(&trivy), &image, &[]);
    // trivy-ecr as it ships: native download on (the rig's sandbox turns it off by default).
    cli.env("TRIVY_ECR_DB_REPOSITORIES", chain.join(","))
        .env("TRIVY_ECR_PREFETCH", "on");
    if let Some(term) = std::env::var_os("TERM") {
        cli.env("TERM", term);
    }
    let cmd = cli.command_mut();
    cmd.stdin(std::process::Stdio::null());
    let status = cmd
        .status()
        .unwrap_or_else(|e| panic!("cannot run trivy-ecr: {e}"));

    let code = status.code().unwrap_or(128);
    eprintln!();
    say(&format!(
        "requests seen: the public.ecr.aws stand-in {} (all answered 429), the ghcr.io stand-in {} \
         (it served the DB)",
        ecr.requests_to(scene::DB_PATH).len(),
        ghcr.requests_to(scene::DB_PATH).len()
    ));
    let meaning = match code {
        1 => "the gate failed on the image's CRITICAL findings, as it should: the demo worked",
        0 => "the gate passed, which this image should not (it has CRITICAL findings)",
        3 => "no mirror delivered the DB within the retry budget",
        _ => "unexpected; see trivy-ecr's messages above",
    };
    say(&format!("trivy-ecr exited with {code}: {meaning}"));
    code
}
