//! Reads, parses and gates one trivy JSON report the way trivy-ecr does after a scan, for
//! `scripts/bench-report` to time under `/usr/bin/time -v`: read the file, parse it (strings
//! borrowed from its bytes), gate at the threshold, apply a baseline if given, render the
//! stderr summary, and write the JUnit report if asked. Prints the time of each phase.
//!
//! Usage: `gate_report REPORT [--fail-on SEVERITY] [--baseline OLD.json] [--junit OUT.xml]`

use std::io::{BufWriter, Write};
use std::path::PathBuf;
use std::time::Instant;

use trivy_ecr::gate::{FailOn, GateOutcome, TrivyExitFlags};
use trivy_ecr::{baseline, gate, junit, report, summary};

fn main() {
    let mut args = std::env::args().skip(1);
    let path = PathBuf::from(args.next().expect("usage: gate_report REPORT [options]"));
    let (mut fail_on, mut baseline_path, mut junit_path) = (FailOn::default(), None, None);
    while let Some(arg) = args.next() {
        let value = args.next().expect("option value");
        match arg.as_str() {
            "--fail-on" => fail_on = value.parse().expect("severity"),
            "--baseline" => baseline_path = Some(PathBuf::from(value)),
            "--junit" => junit_path = Some(PathBuf::from(value)),
            other => panic!("unknown option {other}"),
        }
    }
    let start = Instant::now();
    let baseline = baseline_path.map(|p| {
        baseline::Baseline::load(&trivy_ecr::options::FileSetting {
            from: "--baseline".into(),
            path: p,
        })
        .unwrap_or_else(|e| panic!("{e}"))
    });
    let loaded_baseline = start.elapsed();

    let bytes = report::read(&path).unwrap_or_else(|e| panic!("{e}"));
    let read = start.elapsed();
    let report = report::Report::from_slice(&bytes).unwrap_or_else(|e| panic!("{e}"));
    let parsed = start.elapsed();
    let outcome = gate::evaluate(&report, fail_on, TrivyExitFlags::default());
    let (outcome, comparison) = baseline::apply(baseline.as_ref(), &report, fail_on, outcome);
    let text = summary::render(&summary::SummaryInput {
        report: &report,
        outcome: &outcome,
        fail_on,
        db_source: None,
        degraded: &[],
        quiet: true,
        baseline: comparison.as_ref(),
    });
    let gated = start.elapsed();
    if let Some(junit_path) = junit_path {
        let mut out = BufWriter::new(std::fs::File::create(junit_path).expect("create"));
        junit::write(&mut out, &report, fail_on, baseline.as_ref(), &[]).expect("write JUnit");
        out.flush().expect("flush");
    }
    let published = start.elapsed();

    let findings = report.findings().count();
    let blocking = match &outcome {
        GateOutcome::Failed { blocking } => blocking.len(),
        _ => 0,
    };
    eprint!(
        "{}",
        text.lines()
            .last()
            .map(|l| format!("{l}\n"))
            .unwrap_or_default()
    );
    println!(
        "targets={} findings={findings} blocking={blocking} bytes={}",
        report.results.len(),
        bytes.len()
    );
    println!(
        "baseline_load_s={:.3} read_s={:.3} parse_s={:.3} gate_s={:.3} parse_and_gate_s={:.3} junit_s={:.3}",
        loaded_baseline.as_secs_f64(),
        (read - loaded_baseline).as_secs_f64(),
        (parsed - read).as_secs_f64(),
        (gated - parsed).as_secs_f64(),
        (gated - loaded_baseline).as_secs_f64(),
        (published - gated).as_secs_f64(),
    );
}
