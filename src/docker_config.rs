//! Registry credentials from the docker config (`$DOCKER_CONFIG/config.json` or
//! `~/.docker/config.json`): `credHelpers`, `auths`, then `credsStore`, as docker looks them up.
//! Authenticated pulls get higher rate limits (ECR Public: 10/s instead of 1/s).
//!
//! Secrets live in [`Secret`], whose `Debug` and `Display` never show the value.

use std::collections::HashMap;
use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use base64::Engine;
use serde::Deserialize;

/// A password or token: printable only as `***`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// A username and its password or identity token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub secret: Secret,
}

#[derive(Debug, Default, Clone, Deserialize)]
struct ConfigFile {
    #[serde(default)]
    auths: HashMap<String, AuthEntry>,
    #[serde(default, rename = "credsStore")]
    creds_store: Option<String>,
    #[serde(default, rename = "credHelpers")]
    cred_helpers: HashMap<String, String>,
}

#[derive(Debug, Default, Clone, Deserialize)]
struct AuthEntry {
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
    #[serde(default, rename = "identitytoken")]
    identity_token: Option<String>,
}

/// The docker config, loaded once per run.
#[derive(Debug, Default, Clone)]
pub struct DockerConfig {
    file: ConfigFile,
    pub path: Option<PathBuf>,
    /// Where credential helpers are looked up (the PATH of the run).
    helper_path: Option<std::ffi::OsString>,
}

impl DockerConfig {
    /// Reads `$DOCKER_CONFIG/config.json`, else `$HOME/.docker/config.json`; a missing or
    /// unreadable file means no credentials.
    pub fn load(env: &dyn Fn(&str) -> Option<std::ffi::OsString>) -> DockerConfig {
        let dir = env("DOCKER_CONFIG")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .or_else(|| env("HOME").map(|h| PathBuf::from(h).join(".docker")));
        let Some(path) = dir.map(|d| d.join("config.json")) else {
            return DockerConfig::default();
        };
        DockerConfig::from_path(&path, env("PATH"))
    }

    pub fn from_path(path: &Path, helper_path: Option<std::ffi::OsString>) -> DockerConfig {
        let Ok(bytes) = std::fs::read(path) else {
            return DockerConfig::default();
        };
        match serde_json::from_slice(&bytes) {
            Ok(file) => DockerConfig {
                file,
                path: Some(path.to_path_buf()),
                helper_path,
            },
            Err(err) => {
                // Only the place and kind: serde's message quotes what it did not expect
                // (`invalid type: string "<the auth string>"`), which can be a credential.
                tracing::warn!(
                    path = %path.display(),
                    line = err.line(),
                    column = err.column(),
                    problem = problem(&err),
                    "ignoring unreadable docker config"
                );
                DockerConfig::default()
            }
        }
    }

    /// Credentials for `registry` (`host[:port]`), if the config has any.
    pub fn credentials(&self, registry: &str) -> Option<Credentials> {
        if let Some(helper) = self.file.cred_helpers.get(registry) {
            return self.run_helper(helper, registry);
        }
        if let Some(entry) = self
            .file
            .auths
            .iter()
            .find(|(key, _)| auth_key_host(key) == registry)
            .map(|(_, e)| e)
            && let Some(creds) = entry.credentials()
        {
            return Some(creds);
        }
        self.file
            .creds_store
            .as_deref()
            .and_then(|store| self.run_helper(store, registry))
    }
}

impl DockerConfig {
    /// Where [`DockerConfig::credentials`] looks for `registry`'s credentials, for messages:
    /// the entry and the file, never the secret. `None` when the config has nothing for it.
    pub fn describe(&self, registry: &str) -> Option<String> {
        let file = self.path.as_ref()?.display();
        if let Some(helper) = self.file.cred_helpers.get(registry) {
            return Some(format!(
                "credHelpers (docker-credential-{helper}) in {file}"
            ));
        }
        if self
            .file
            .auths
            .iter()
            .any(|(key, e)| auth_key_host(key) == registry && e.credentials().is_some())
        {
            return Some(format!("the auths entry for {registry} in {file}"));
        }
        self.file
            .creds_store
            .as_deref()
            .map(|store| format!("credsStore (docker-credential-{store}) in {file}"))
    }
}

/// What is wrong with a docker config, without quoting any of it.
fn problem(err: &serde_json::Error) -> &'static str {
    match err.classify() {
        serde_json::error::Category::Syntax => "not valid JSON",
        serde_json::error::Category::Eof => "truncated",
        serde_json::error::Category::Data => "a value of the wrong type",
        serde_json::error::Category::Io => "unreadable",
    }
}

/// `https://host/v1/` or `host` → `host`.
fn auth_key_host(key: &str) -> &str {
    let key = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    key.split('/').next().unwrap_or(key)
}

impl AuthEntry {
    fn credentials(&self) -> Option<Credentials> {
        if let Some(token) = &self.identity_token {
            return Some(Credentials {
                username: "<token>".into(),
                secret: Secret::new(token.clone()),
            });
        }
        if let (Some(user), Some(pass)) = (&self.username, &self.password) {
            return Some(Credentials {
                username: user.clone(),
                secret: Secret::new(pass.clone()),
            });
        }
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(self.auth.as_deref()?.trim())
            .ok()?;
        let text = String::from_utf8(decoded).ok()?;
        let (user, pass) = text.split_once(':')?;
        Some(Credentials {
            username: user.to_string(),
            secret: Secret::new(pass),
        })
    }
}

#[derive(Deserialize)]
struct HelperReply {
    #[serde(rename = "Username")]
    username: String,
    #[serde(rename = "Secret")]
    secret: String,
}

impl DockerConfig {
    /// `docker-credential-NAME get` with the registry on stdin; any failure means no credentials.
    fn run_helper(&self, name: &str, registry: &str) -> Option<Credentials> {
        let program = format!("docker-credential-{name}");
        let found = std::env::split_paths(self.helper_path.as_deref().unwrap_or_default())
            .map(|dir| dir.join(&program))
            .find(|candidate| candidate.is_file());
        let Some(found) = found else {
            tracing::debug!(%program, "credential helper not on PATH");
            return None;
        };
        run_helper_at(&found, registry)
    }
}

fn run_helper_at(program: &Path, registry: &str) -> Option<Credentials> {
    let program_name = program.display().to_string();
    let program = &program_name;
    let mut child = Command::new(program)
        .arg("get")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|err| tracing::debug!(%program, %err, "credential helper not available"))
        .ok()?;
    let _ = child.stdin.take()?.write_all(registry.as_bytes());
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if std::time::Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(20))
            }
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                tracing::warn!(%program, "credential helper timed out");
                return None;
            }
        }
    }
    let output = child.wait_with_output().ok()?;
    if !output.status.success() {
        tracing::debug!(%program, registry, "credential helper has no credentials");
        return None;
    }
    let reply: HelperReply = serde_json::from_slice(&output.stdout).ok()?;
    Some(Credentials {
        username: reply.username,
        secret: Secret::new(reply.secret),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn auths_in_every_spelling() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.json");
        let auth = base64::engine::general_purpose::STANDARD.encode("bob:hunter2");
        std::fs::write(
            &path,
            format!(r#"{{"auths":{{"https://r.example/v1/":{{"auth":"{auth}"}},"plain.example":{{"username":"u","password":"p"}}}}}}"#),
        )
        .unwrap();
        let config = DockerConfig::from_path(&path, None);
        let creds = config.credentials("r.example").unwrap();
        assert_eq!(creds.username, "bob");
        let described = config.describe("r.example").unwrap();
        assert!(described.starts_with("the auths entry for r.example in "));
        assert!(!described.contains("hunter2") && !described.contains(&auth));
        assert_eq!(config.describe("other.example"), None);
        assert_eq!(creds.secret.expose(), "hunter2");
        assert!(!format!("{creds:?}").contains("hunter2"));
        assert_eq!(
            config.credentials("plain.example").unwrap().secret.expose(),
            "p"
        );
        assert!(config.credentials("other.example").is_none());
    }

    #[test]
    fn credential_helpers_are_asked() {
        let dir = tempfile::tempdir().unwrap();
        let helper = dir.path().join("docker-credential-test");
        std::fs::write(
            &helper,
            "#!/bin/sh\nread host\n[ \"$host\" = r.example ] || exit 1\necho '{\"ServerURL\":\"r.example\",\"Username\":\"AWS\",\"Secret\":\"tok\"}'\n",
        )
        .unwrap();
        std::fs::set_permissions(&helper, std::fs::Permissions::from_mode(0o755)).unwrap();
        let path = dir.path().join("config.json");
        std::fs::write(&path, r#"{"credHelpers":{"r.example":"test"}}"#).unwrap();
        // The helper is found on the run's PATH, like docker does.
        let search =
            std::env::join_paths([dir.path(), Path::new("/usr/bin"), Path::new("/bin")]).unwrap();
        let config = DockerConfig::from_path(&path, Some(search));
        let creds = config.credentials("r.example").unwrap();
        assert_eq!(
            (creds.username.as_str(), creds.secret.expose()),
            ("AWS", "tok")
        );
        assert!(
            config
                .describe("r.example")
                .unwrap()
                .starts_with("credHelpers (docker-credential-test) in ")
        );
        assert!(config.credentials("elsewhere.example").is_none());
    }
}
