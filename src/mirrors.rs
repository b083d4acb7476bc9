//! The DBs trivy downloads and the mirror chains trivy-ecr offers for each.
//!
//! ECR Public comes first because it is the mirror built for this (generous anonymous limits,
//! reachable from every AWS region); mirror.gcr.io and ghcr.io follow as trivy's own defaults.

use std::fmt;

/// One of the artifacts trivy fetches from an OCI registry before or while scanning.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DbKind {
    Vulnerability,
    Java,
    /// The misconfiguration checks bundle: retried, never rewritten.
    Checks,
}

impl DbKind {
    /// trivy's flag that names this artifact's repositories.
    pub fn flag(self) -> &'static str {
        match self {
            DbKind::Vulnerability => "db-repository",
            DbKind::Java => "java-db-repository",
            DbKind::Checks => "checks-bundle-repository",
        }
    }

    /// trivy's environment variable for the same.
    pub fn env_var(self) -> &'static str {
        match self {
            DbKind::Vulnerability => "TRIVY_DB_REPOSITORY",
            DbKind::Java => "TRIVY_JAVA_DB_REPOSITORY",
            DbKind::Checks => "TRIVY_CHECKS_BUNDLE_REPOSITORY",
        }
    }

    /// trivy's config-file key (`db: repository:`) as a path.
    pub fn config_key(self) -> &'static [&'static str] {
        match self {
            DbKind::Vulnerability => &["db", "repository"],
            DbKind::Java => &["db", "java-repository"],
            DbKind::Checks => &["misconfiguration", "checks-bundle-repository"],
        }
    }

    /// The tag trivy appends to a repository given without one.
    pub fn schema_tag(self) -> &'static str {
        match self {
            DbKind::Vulnerability => "2",
            DbKind::Java => "1",
            DbKind::Checks => "2",
        }
    }

    pub fn default_chain(self) -> Vec<String> {
        let names: &[&str] = match self {
            DbKind::Vulnerability => &[
                "public.ecr.aws/aquasecurity/trivy-db:2",
                "mirror.gcr.io/aquasec/trivy-db:2",
                "ghcr.io/aquasecurity/trivy-db:2",
            ],
            DbKind::Java => &[
                "public.ecr.aws/aquasecurity/trivy-java-db:1",
                "mirror.gcr.io/aquasec/trivy-java-db:1",
                "ghcr.io/aquasecurity/trivy-java-db:1",
            ],
            // trivy's own default is mirror.gcr.io; ECR Public carries the bundle too.
            DbKind::Checks => &[
                "public.ecr.aws/aquasecurity/trivy-checks:2",
                "mirror.gcr.io/aquasec/trivy-checks:2",
                "ghcr.io/aquasecurity/trivy-checks:2",
            ],
        };
        names.iter().map(|s| s.to_string()).collect()
    }
}

impl fmt::Display for DbKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DbKind::Vulnerability => "vulnerability DB",
            DbKind::Java => "Java DB",
            DbKind::Checks => "checks bundle",
        })
    }
}

/// `host/path` without the tag or digest, so `ghcr.io/x/trivy-db` and `ghcr.io/x/trivy-db:2`
/// compare equal, as they name the same artifact for trivy.
pub fn repository_without_tag(reference: &str) -> &str {
    let reference = reference.split('@').next().unwrap_or(reference);
    match reference.rfind(':') {
        Some(colon) if !reference[colon..].contains('/') => &reference[..colon],
        _ => reference,
    }
}

/// Whether two references name the same repository (tags aside).
pub fn same_repository(a: &str, b: &str) -> bool {
    repository_without_tag(a) == repository_without_tag(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_tags_but_not_ports() {
        assert_eq!(
            repository_without_tag("127.0.0.1:5000/trivy-db:2"),
            "127.0.0.1:5000/trivy-db"
        );
        assert_eq!(
            repository_without_tag("127.0.0.1:5000/trivy-db"),
            "127.0.0.1:5000/trivy-db"
        );
        assert_eq!(
            repository_without_tag("ghcr.io/a/b@sha256:abc"),
            "ghcr.io/a/b"
        );
        assert!(same_repository("ghcr.io/a/b", "ghcr.io/a/b:2"));
        assert!(!same_repository("ghcr.io/a/b", "ghcr.io/a/c"));
    }

    #[test]
    fn the_checks_chain_includes_trivys_own_default() {
        let chain = DbKind::Checks.default_chain();
        assert!(chain.contains(&"mirror.gcr.io/aquasec/trivy-checks:2".to_string()));
    }

    #[test]
    fn default_chains_start_with_ecr_public() {
        for kind in [DbKind::Vulnerability, DbKind::Java, DbKind::Checks] {
            let chain = kind.default_chain();
            assert_eq!(chain.len(), 3);
            assert!(chain[0].starts_with("public.ecr.aws/aquasecurity/"));
            assert!(
                chain
                    .iter()
                    .all(|r| r.ends_with(&format!(":{}", kind.schema_tag())))
            );
        }
    }
}
