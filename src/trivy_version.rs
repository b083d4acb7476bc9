//! Which trivy this is, and what its command line supports.
//!
//! Detected from `trivy --version` (first line `Version: X.Y.Z`) and remembered per binary (path,
//! size, modification time) under trivy-ecr's cache directory, so a run does not pay for an
//! extra trivy start. When it cannot be read, trivy-ecr assumes a current trivy.

use std::path::Path;
use std::process::{Command, Stdio};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct TrivyVersion {
    pub major: u32,
    pub minor: u32,
    pub patch: u32,
}

impl TrivyVersion {
    /// Parses the output of `trivy --version`.
    pub fn parse(output: &str) -> Option<TrivyVersion> {
        let line = output
            .lines()
            .find_map(|l| l.trim().strip_prefix("Version:"))?;
        let text = line.trim().trim_start_matches('v');
        let core = text.split(['-', '+', ' ']).next()?;
        let mut parts = core.split('.').map(|p| p.parse::<u32>());
        Some(TrivyVersion {
            major: parts.next()?.ok()?,
            minor: parts.next()?.ok()?,
            patch: parts.next().and_then(Result::ok).unwrap_or(0),
        })
    }

    /// Runs `trivy --version`; `None` when it fails or prints something unexpected.
    pub fn detect(trivy: &Path) -> Option<TrivyVersion> {
        let output = Command::new(trivy)
            .arg("--version")
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .output()
            .ok()?;
        TrivyVersion::parse(&String::from_utf8_lossy(&output.stdout))
    }

    /// As [`TrivyVersion::detect`], remembered in `memo` (a small JSON file) per binary.
    pub fn detect_remembered(trivy: &Path, memo: &Path) -> Option<TrivyVersion> {
        let key = binary_key(trivy);
        let mut known: std::collections::BTreeMap<String, String> = std::fs::read(memo)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        if let Some(key) = &key
            && let Some(version) = known
                .get(key)
                .and_then(|v| TrivyVersion::parse(&format!("Version: {v}")))
        {
            return Some(version);
        }
        let version = TrivyVersion::detect(trivy)?;
        if let Some(key) = key {
            known.insert(key, version.to_string());
            let write = || -> std::io::Result<()> {
                std::fs::create_dir_all(memo.parent().unwrap_or(Path::new(".")))?;
                let temp = memo.with_extension(format!("tmp.{}", std::process::id()));
                std::fs::write(&temp, serde_json::to_vec(&known)?)?;
                std::fs::rename(temp, memo)
            };
            if let Err(err) = write() {
                tracing::debug!(%err, "cannot remember trivy's version");
            }
        }
        Some(version)
    }

    const fn at_least(self, minor: u32) -> bool {
        self.major > 0 || self.minor >= minor
    }
}

impl std::fmt::Display for TrivyVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

/// Identifies one trivy binary: its resolved path, size and modification time.
fn binary_key(trivy: &Path) -> Option<String> {
    let path = trivy.canonicalize().ok()?;
    let meta = path.metadata().ok()?;
    let modified = meta
        .modified()
        .ok()?
        .duration_since(std::time::UNIX_EPOCH)
        .ok()?;
    Some(format!(
        "{}|{}|{}",
        path.display(),
        meta.len(),
        modified.as_nanos()
    ))
}

/// What trivy-ecr may put on this trivy's command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capabilities {
    /// `--db-repository a,b` (0.56+); older trivy takes one repository.
    pub multiple_repositories: bool,
    /// `--scanners` (0.37+), the replacement of `--security-checks`.
    pub scanners_flag: bool,
}

impl Capabilities {
    pub fn of(version: Option<TrivyVersion>) -> Capabilities {
        match version {
            Some(v) => Capabilities {
                multiple_repositories: v.at_least(56),
                scanners_flag: v.at_least(37),
            },
            None => Capabilities {
                multiple_repositories: true,
                scanners_flag: true,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_trivy_version_output() {
        let v = TrivyVersion::parse("Version: 0.76.0\nVulnerability DB:\n  Version: 2\n").unwrap();
        assert_eq!(
            v,
            TrivyVersion {
                major: 0,
                minor: 76,
                patch: 0
            }
        );
        let v = TrivyVersion::parse("Version: v0.55.2-dev").unwrap();
        assert_eq!(v.minor, 55);
        assert_eq!(TrivyVersion::parse("garbage"), None);
    }

    #[test]
    fn versions_are_remembered_per_binary() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let trivy = dir.path().join("trivy");
        let counter = dir.path().join("runs");
        std::fs::write(
            &trivy,
            format!(
                "#!/bin/sh\necho x >> {}\necho 'Version: 0.55.1'\n",
                counter.display()
            ),
        )
        .unwrap();
        std::fs::set_permissions(&trivy, std::fs::Permissions::from_mode(0o755)).unwrap();
        let memo = dir.path().join("memo/versions.json");
        let expected = Some(TrivyVersion {
            major: 0,
            minor: 55,
            patch: 1,
        });
        assert_eq!(TrivyVersion::detect_remembered(&trivy, &memo), expected);
        assert_eq!(TrivyVersion::detect_remembered(&trivy, &memo), expected);
        let runs = std::fs::read_to_string(&counter).unwrap().lines().count();
        assert_eq!(runs, 1, "asked trivy once");
        // A different binary at the same path is asked again.
        std::fs::write(&trivy, "#!/bin/sh\necho 'Version: 0.76.0'\n").unwrap();
        assert_eq!(
            TrivyVersion::detect_remembered(&trivy, &memo)
                .unwrap()
                .minor,
            76
        );
    }

    #[test]
    fn capabilities_follow_the_version() {
        let old = TrivyVersion {
            major: 0,
            minor: 55,
            patch: 2,
        };
        let new = TrivyVersion {
            major: 0,
            minor: 56,
            patch: 0,
        };
        assert!(!Capabilities::of(Some(old)).multiple_repositories);
        assert!(Capabilities::of(Some(new)).multiple_repositories);
        assert!(
            !Capabilities::of(Some(TrivyVersion {
                major: 0,
                minor: 36,
                patch: 0
            }))
            .scanners_flag
        );
        assert!(Capabilities::of(None).multiple_repositories);
    }
}
