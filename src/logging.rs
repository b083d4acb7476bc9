//! trivy-ecr's own diagnostics (`TRIVY_ECR_LOG` / `--ecr-log`), kept apart from the user-facing
//! lines (retries, summary, errors) that are always printed.

use tracing_subscriber::EnvFilter;

/// Installs the stderr logger. `filter` is a level (`debug`) or a tracing filter; invalid
/// filters fall back to `warn` rather than failing the scan.
pub fn init(filter: Option<&str>) {
    let filter = filter
        .and_then(|f| EnvFilter::try_new(expand(f)).ok())
        .unwrap_or_else(|| EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .try_init();
}

/// A bare level applies to trivy-ecr only, not to the libraries it uses.
fn expand(filter: &str) -> String {
    match filter.trim() {
        level @ ("trace" | "debug" | "info" | "warn" | "error" | "off") => {
            format!("warn,trivy_ecr={level}")
        }
        other => other.to_string(),
    }
}
