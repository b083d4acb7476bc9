//! trivy's config file (`trivy.yaml`, `--config`, `TRIVY_CONFIG`), read only for the few keys
//! that change what trivy-ecr does: the DB repositories, the output request and exit flags.
//!
//! trivy itself still reads the file; when trivy-ecr cannot parse it, it assumes the user
//! chose nothing and lets trivy report the problem.

use std::path::{Path, PathBuf};

use serde_norway::Value;

/// A parsed config file, or an empty one.
#[derive(Debug, Default, Clone)]
pub struct TrivyConfig {
    root: Option<Value>,
    pub path: Option<PathBuf>,
}

impl TrivyConfig {
    /// Loads the file trivy would load. `explicit` is `--config`/`TRIVY_CONFIG`; an empty
    /// value disables loading, as in trivy.
    pub fn load(explicit: Option<&Path>, cwd: &Path) -> TrivyConfig {
        let path = match explicit {
            Some(p) if p.as_os_str().is_empty() => return TrivyConfig::default(),
            Some(p) => cwd.join(p),
            None => cwd.join("trivy.yaml"),
        };
        let Ok(text) = std::fs::read_to_string(&path) else {
            return TrivyConfig::default();
        };
        match serde_norway::from_str::<Value>(&text) {
            Ok(root) => TrivyConfig {
                root: Some(root),
                path: Some(path),
            },
            Err(err) => {
                tracing::warn!(path = %path.display(), %err, "cannot parse trivy's config file; assuming it sets nothing trivy-ecr needs");
                TrivyConfig::default()
            }
        }
    }

    pub fn from_yaml(text: &str) -> TrivyConfig {
        TrivyConfig {
            root: serde_norway::from_str(text).ok(),
            path: None,
        }
    }

    fn get(&self, path: &[&str]) -> Option<&Value> {
        let mut node = self.root.as_ref()?;
        for key in path {
            node = node.as_mapping()?.get(*key)?;
        }
        (!node.is_null()).then_some(node)
    }

    /// A string or list value as a list (`repository: a` or `repository: [a, b]`).
    pub fn list(&self, path: &[&str]) -> Option<Vec<String>> {
        match self.get(path)? {
            Value::Sequence(items) => Some(items.iter().filter_map(scalar).collect()),
            other => scalar(other).map(|s| s.split(',').map(|p| p.trim().to_string()).collect()),
        }
        .filter(|v: &Vec<String>| v.iter().any(|s| !s.is_empty()))
    }

    pub fn string(&self, path: &[&str]) -> Option<String> {
        self.get(path).and_then(scalar).filter(|s| !s.is_empty())
    }

    pub fn int(&self, path: &[&str]) -> Option<i32> {
        match self.get(path)? {
            Value::Number(n) => n.as_i64().and_then(|n| i32::try_from(n).ok()),
            Value::String(s) => s.trim().parse().ok(),
            _ => None,
        }
    }

    pub fn bool(&self, path: &[&str]) -> Option<bool> {
        match self.get(path)? {
            Value::Bool(b) => Some(*b),
            Value::String(s) => s.parse().ok(),
            _ => None,
        }
    }

    pub fn has(&self, path: &[&str]) -> bool {
        self.get(path).is_some()
    }
}

fn scalar(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_nested_keys_in_both_shapes() {
        let c = TrivyConfig::from_yaml(
            "db:\n  repository: [a.example/x/trivy-db:2, b.example/y]\n  java-repository: j.example/z\nformat: sarif\nexit-code: 3\nquiet: true\n",
        );
        assert_eq!(
            c.list(&["db", "repository"]).unwrap(),
            vec!["a.example/x/trivy-db:2", "b.example/y"]
        );
        assert_eq!(
            c.list(&["db", "java-repository"]).unwrap(),
            vec!["j.example/z"]
        );
        assert_eq!(c.string(&["format"]).as_deref(), Some("sarif"));
        assert_eq!(c.int(&["exit-code"]), Some(3));
        assert_eq!(c.bool(&["quiet"]), Some(true));
        assert!(c.list(&["cache", "dir"]).is_none());
    }

    #[test]
    fn empty_or_broken_files_set_nothing() {
        assert!(
            TrivyConfig::from_yaml("")
                .list(&["db", "repository"])
                .is_none()
        );
        assert!(
            TrivyConfig::from_yaml("db: [")
                .list(&["db", "repository"])
                .is_none()
        );
        assert!(
            TrivyConfig::from_yaml("db:\n  repository: []\n")
                .list(&["db", "repository"])
                .is_none()
        );
    }

    #[test]
    fn loads_from_disk_and_honours_empty_path() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("trivy.yaml"), "db:\n  repository: r/x\n").unwrap();
        let c = TrivyConfig::load(None, dir.path());
        assert_eq!(c.list(&["db", "repository"]).unwrap(), vec!["r/x"]);
        let disabled = TrivyConfig::load(Some(Path::new("")), dir.path());
        assert!(disabled.list(&["db", "repository"]).is_none());
        let missing = TrivyConfig::load(Some(Path::new("nope.yaml")), dir.path());
        assert!(missing.path.is_none());
    }
}
