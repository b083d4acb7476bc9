//! Keeps secrets out of anything trivy-ecr prints or logs.
//!
//! Values of credential flags (`--password`, `--registry-token`, `--token`, ...) and the
//! user-info part of URLs are replaced by `***` whenever a command line is shown.

use std::ffi::OsString;
use std::path::Path;

/// Flags whose value is a secret.
const SECRET_FLAGS: &[&str] = &[
    "password",
    "registry-token",
    "token",
    "custom-headers",
    "aws-secret-access-key",
];

fn is_secret_flag(token: &str) -> Option<bool> {
    let name = token.strip_prefix("--")?;
    let (name, inline) = match name.split_once('=') {
        Some((n, _)) => (n, true),
        None => (name, false),
    };
    SECRET_FLAGS.contains(&name).then_some(inline)
}

/// The command line as one shell-like string, secrets replaced by `***`.
pub fn command_line(program: &Path, args: &[OsString]) -> String {
    let mut out = vec![program.display().to_string()];
    let mut hide_next = false;
    for arg in args {
        let text = arg.to_string_lossy();
        if hide_next {
            out.push("***".into());
            hide_next = false;
            continue;
        }
        match is_secret_flag(&text) {
            Some(true) => {
                let name = text.split_once('=').map(|(n, _)| n).unwrap_or(&text);
                out.push(format!("{name}=***"));
            }
            Some(false) => {
                out.push(text.into_owned());
                hide_next = true;
            }
            None => out.push(url_userinfo_hidden(&text)),
        }
    }
    out.join(" ")
}

/// `https://user:pass@host/x` → `https://***@host/x`.
pub fn url_userinfo_hidden(text: &str) -> String {
    if let Some(scheme_end) = text.find("://") {
        let rest = &text[scheme_end + 3..];
        let authority_end = rest.find('/').unwrap_or(rest.len());
        if let Some(at) = rest[..authority_end].rfind('@') {
            return format!("{}://***@{}", &text[..scheme_end], &rest[at + 1..]);
        }
    }
    text.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hides_secret_values_in_both_forms() {
        let args: Vec<OsString> = [
            "image",
            "--username",
            "bob",
            "--password",
            "hunter2",
            "--registry-token=tok123",
            "--token",
            "srv",
            "--server",
            "https://u:pw@host:4954/x",
            "alpine",
        ]
        .iter()
        .map(OsString::from)
        .collect();
        let line = command_line(Path::new("trivy"), &args);
        for secret in ["hunter2", "tok123", "srv", "u:pw"] {
            assert!(!line.contains(secret), "{line}");
        }
        assert!(line.contains("--username bob"));
        assert!(line.contains("--registry-token=***"));
        assert!(line.contains("https://***@host:4954/x"));
    }
}
