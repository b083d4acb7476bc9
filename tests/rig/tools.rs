//! Finds the real tools the rig drives (trivy 0.76, trivy 0.69, docker-registry), so that a
//! missing tool makes a test fail with the fix in the message instead of silently skipping.

use std::ffi::OsStr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// What to do when a tool is missing; part of every "not found" panic message.
pub const INSTALL_HINT: &str = "run `scripts/install-tools` from the repository root";

/// The repository root (where `Cargo.toml` and `.tools/` live).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The trivy the wrapper targets (0.76): `$TRIVY_ECR_TEST_TRIVY`, else
/// `<repo>/.tools/trivy-0.76/bin/trivy`. Panics with [`INSTALL_HINT`] when it is missing.
pub fn trivy() -> PathBuf {
    locate("TRIVY_ECR_TEST_TRIVY", ".tools/trivy-0.76/bin/trivy")
}

/// An older trivy (0.69, no 429 retries): `$TRIVY_ECR_TEST_TRIVY_OLD`, else
/// `<repo>/.tools/trivy-0.69/bin/trivy`. Panics with [`INSTALL_HINT`] when it is missing.
pub fn trivy_old() -> PathBuf {
    locate("TRIVY_ECR_TEST_TRIVY_OLD", ".tools/trivy-0.69/bin/trivy")
}

/// Debian's `docker-registry` (CNCF distribution 2.8): `$TRIVY_ECR_TEST_DOCKER_REGISTRY`, else
/// `/usr/bin/docker-registry`. Panics with [`INSTALL_HINT`] when it is missing.
pub fn docker_registry() -> PathBuf {
    let path = std::env::var_os("TRIVY_ECR_TEST_DOCKER_REGISTRY")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/docker-registry"));
    require_executable(OsStr::new("TRIVY_ECR_TEST_DOCKER_REGISTRY"), &path);
    path
}

fn locate(var: &str, default_relative: &str) -> PathBuf {
    let path = std::env::var_os(var)
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join(default_relative));
    require_executable(OsStr::new(var), &path);
    path
}

fn require_executable(var: &OsStr, path: &Path) {
    let executable = std::fs::metadata(path)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false);
    assert!(
        executable,
        "e2e tool not found: {} is not an executable file; {INSTALL_HINT} (or point {} at one)",
        path.display(),
        var.to_string_lossy(),
    );
}

/// What `<trivy> --version` says, e.g. `0.76.0`; panics when it cannot be run.
pub fn version_of(trivy: &Path) -> String {
    let ran = crate::rig::run::run_bounded(
        std::process::Command::new(trivy).arg("--version"),
        std::time::Duration::from_secs(30),
    );
    ran.stdout
        .lines()
        .find_map(|l| l.strip_prefix("Version: "))
        .unwrap_or_else(|| panic!("no version from {}\n{}", trivy.display(), ran.describe()))
        .trim()
        .to_owned()
}
