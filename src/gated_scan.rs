//! A scan whose verdict trivy-ecr decides: trivy writes JSON to a private file (retried through
//! [`Attempts`]), the report is gated, the user's format is rendered from that one file, and
//! the summary goes to stderr.

use crate::attempts::Attempts;
use crate::baseline;
use crate::exit_status::ExitStatus;
use crate::gate;
use crate::options::Options;
use crate::publish;
use crate::render;
use crate::report;
use crate::report::Report;
use crate::retry::MirrorChain;
use crate::say;
use crate::summary;
use crate::supervisor::{RunEnd, Supervisor};

pub struct GatedScan<'a> {
    pub attempts: Attempts<'a>,
    pub options: &'a Options,
    /// The mirror the native download used, if it downloaded.
    pub prefetched_from: Option<String>,
}

impl GatedScan<'_> {
    pub async fn run(
        mut self,
        supervisor: &mut Supervisor,
        chains: &mut [MirrorChain],
    ) -> ExitStatus {
        let invocation = self.attempts.invocation;
        let options = self.options;
        let baseline = match options.baseline.as_ref().map(baseline::Baseline::load) {
            None => None,
            Some(Ok(baseline)) => Some(baseline),
            Some(Err(err)) => {
                say!("error: {err}");
                return ExitStatus::Usage;
            }
        };
        let workdir = match tempfile::Builder::new().prefix("trivy-ecr-").tempdir() {
            Ok(dir) => dir,
            Err(err) => {
                say!("error: cannot create a private temporary directory: {err}; check TMPDIR");
                return ExitStatus::TrivyFailed;
            }
        };
        let report_path = workdir.path().join("report.json");
        self.attempts.extras.json_report = Some(report_path.clone());
        let outcome = match self.attempts.run(supervisor, chains).await {
            Ok(outcome) => outcome,
            Err(status) => return status,
        };
        match outcome.end {
            RunEnd::Exited(0) => {}
            RunEnd::Exited(code) => {
                say!("error: trivy failed (exit {code}); its messages are above");
                return ExitStatus::TrivyFailed;
            }
            end => return crate::end_of_passthrough(end),
        }
        let report_bytes = match report::read(&report_path) {
            Ok(bytes) => bytes,
            Err(err) => {
                say!("error: {err}");
                return ExitStatus::TrivyFailed;
            }
        };
        let report = match Report::from_slice(&report_bytes) {
            Ok(report) => report,
            Err(err) => {
                say!("error: {err}");
                return ExitStatus::TrivyFailed;
            }
        };
        let verdict = gate::evaluate(&report, options.fail_on, invocation.exit_flags);
        let (verdict, baseline) =
            baseline::apply(baseline.as_ref(), &report, options.fail_on, verdict);
        let db_source = self
            .prefetched_from
            .take()
            .or_else(|| db_source(&outcome.log));
        let summary_input = summary::SummaryInput {
            report: &report,
            outcome: &verdict,
            fail_on: options.fail_on,
            db_source: db_source.as_deref(),
            degraded: &self.attempts.degraded,
            quiet: invocation.quiet,
            baseline: baseline.as_ref(),
        };
        let published = publish::publish(
            &summary_input,
            &report_path,
            &publish::Destinations::new(options, std::env::var_os("GITHUB_STEP_SUMMARY")),
        );
        if let Err(err) = render::render(supervisor, invocation, &report_path).await {
            return match err {
                render::RenderError::Interrupted(signal) => ExitStatus::Signal(signal),
                other => {
                    say!("error: {other}");
                    ExitStatus::TrivyFailed
                }
            };
        }
        eprint!("{}", summary::render(&summary_input));
        if !published {
            return ExitStatus::TrivyFailed;
        }
        match verdict {
            gate::GateOutcome::Passed => ExitStatus::Success,
            gate::GateOutcome::Failed { .. } => ExitStatus::GateFailed,
            gate::GateOutcome::TrivyExitCode { code } | gate::GateOutcome::EndOfLife { code } => {
                ExitStatus::TrivyExitFlag(code)
            }
        }
    }
}

/// The repository trivy reported downloading the vulnerability DB from, if it did.
fn db_source(log: &[String]) -> Option<String> {
    log.iter()
        .filter(|l| l.contains("[vulndb]") && l.contains("successfully downloaded"))
        .find_map(|l| {
            let start = l.find("repo=\"")? + 6;
            let end = l[start..].find('"')? + start;
            Some(l[start..end].to_string())
        })
}
