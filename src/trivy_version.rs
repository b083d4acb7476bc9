//! Which trivy this is, and what its command line supports.
//!
//! Detected once per run from `trivy --version` (first line `Version: X.Y.Z`). When it cannot
//! be read, trivy-ecr assumes a current trivy.

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

    const fn at_least(self, minor: u32) -> bool {
        self.major > 0 || self.minor >= minor
    }
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
