//! Runs trivy as a child: streams its output live, keeps the log lines that explain a failure,
//! forwards signals, and reports how it ended (exit code, or the signal that killed it).
//!
//! Signal rules (as uv's `child.rs`): SIGTERM is always forwarded (CI runners such as CodeBuild
//! send it on timeout); SIGINT only when the terminal did not already deliver it to trivy. Once
//! trivy-ecr has received either, it ends with 128+N after trivy has exited, whatever trivy's
//! own status.
//!
//! Without a terminal (CI), trivy runs in a process group of its own, so a run past its
//! deadline is stopped as a group (as nextest does): SIGTERM, a grace period, SIGKILL. On a
//! terminal trivy stays in trivy-ecr's group, so Ctrl-C and `--password-stdin` keep working.

use std::ffi::OsString;
use std::io::{self, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::io::AsyncReadExt;
use tokio::process::Command;
use tokio::signal::unix::{SignalKind, signal};

use crate::locate::NESTING_VAR;

/// Log lines kept per run (the ones that can explain a failure).
const MAX_KEPT_LINES: usize = 2000;
/// Longest log line kept; longer ones are cut.
const MAX_LINE_BYTES: usize = 16 * 1024;

/// How a trivy run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunEnd {
    Exited(i32),
    /// trivy died by this signal (not one trivy-ecr forwarded).
    Killed(i32),
    /// trivy-ecr received this terminating signal; trivy was told and has ended.
    Interrupted(i32),
    /// trivy ran past the deadline and was stopped.
    TimedOut(Duration),
}

/// A finished run: how it ended and the log lines worth reading.
#[derive(Debug)]
pub struct RunOutcome {
    pub end: RunEnd,
    pub log: Vec<String>,
}

/// trivy could not be started at all.
#[derive(Debug, thiserror::Error)]
#[error("cannot start {path}: {source}")]
pub struct SpawnError {
    pub path: String,
    pub source: io::Error,
}

/// The terminating signals trivy-ecr handles for its whole lifetime.
pub struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl Signals {
    pub fn install() -> io::Result<Signals> {
        Ok(Signals {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
        })
    }

    /// Waits for SIGTERM or SIGINT.
    pub async fn recv(&mut self) -> Signal {
        tokio::select! {
            _ = self.term.recv() => Signal::SIGTERM,
            _ = self.int.recv() => Signal::SIGINT,
        }
    }

    /// Sleeps, unless a terminating signal arrives first.
    pub async fn sleep(&mut self, duration: Duration) -> Result<(), Signal> {
        tokio::select! {
            _ = tokio::time::sleep(duration) => Ok(()),
            signal = self.recv() => Err(signal),
        }
    }
}

/// Starts trivy processes for one trivy-ecr run.
pub struct Supervisor {
    pub trivy: PathBuf,
    nesting: u32,
    pub signals: Signals,
    /// The longest one trivy run may take; `None` for no limit.
    pub deadline: Option<Duration>,
    /// Between SIGTERM and SIGKILL when the deadline passes.
    pub grace: Duration,
}

impl Supervisor {
    pub fn new(trivy: PathBuf, nesting: u32, signals: Signals) -> Supervisor {
        Supervisor {
            trivy,
            nesting,
            signals,
            deadline: None,
            grace: Duration::from_secs(10),
        }
    }

    pub fn trivy(&self) -> &Path {
        &self.trivy
    }

    /// Runs trivy with `args`, stdin and stdout inherited, stderr streamed through.
    pub async fn run(&mut self, args: &[OsString]) -> Result<RunOutcome, SpawnError> {
        tracing::debug!(command = %crate::redact::command_line(&self.trivy, args), "running trivy");
        let own_group = !io::stdin().is_terminal();
        let mut command = Command::new(&self.trivy);
        command
            .args(args)
            .env(NESTING_VAR, (self.nesting + 1).to_string())
            .stdin(Stdio::inherit())
            .stdout(Stdio::inherit())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        if own_group {
            command.process_group(0);
        }
        // If trivy-ecr itself is killed outright (SIGKILL), trivy must not live on without it.
        #[cfg(target_os = "linux")]
        // SAFETY: prctl is async-signal-safe and touches nothing but the calling process.
        unsafe {
            command.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) == -1 {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut child = command.spawn().map_err(|source| SpawnError {
            path: self.trivy.display().to_string(),
            source,
        })?;
        let target = child.id().map(|id| Target {
            pid: Pid::from_raw(id as i32),
            own_group,
        });
        let stderr = child.stderr.take().expect("stderr is piped");
        let pump = tokio::spawn(pump_stderr(stderr));

        let mut received: Option<Signal> = None;
        let mut timed_out = None;
        let deadline = tokio::time::sleep(self.deadline.unwrap_or(Duration::MAX / 4));
        tokio::pin!(deadline);
        let mut killed_at: Option<tokio::time::Instant> = None;
        let status = loop {
            let kill_after = tokio::time::sleep_until(
                killed_at.unwrap_or_else(|| tokio::time::Instant::now() + Duration::MAX / 4),
            );
            tokio::select! {
                status = child.wait() => break status,
                signal = self.signals.recv() => {
                    received.get_or_insert(signal);
                    if let Some(target) = target
                        && (own_group || should_forward(signal))
                    {
                        tracing::debug!(?signal, "forwarding signal to trivy");
                        target.send(signal);
                    }
                }
                () = &mut deadline, if timed_out.is_none() && self.deadline.is_some() => {
                    timed_out = self.deadline;
                    tracing::debug!("trivy ran past its deadline; SIGTERM");
                    if let Some(target) = target {
                        target.send(Signal::SIGTERM);
                    }
                    killed_at = Some(tokio::time::Instant::now() + self.grace);
                }
                () = kill_after, if killed_at.is_some() => {
                    tracing::debug!("trivy outlived its grace period; SIGKILL");
                    if let Some(target) = target {
                        target.send(Signal::SIGKILL);
                    }
                    killed_at = None;
                }
            }
        };
        let status = status.map_err(|source| SpawnError {
            path: self.trivy.display().to_string(),
            source,
        })?;
        // trivy has exited; its stderr reaches EOF unless a grandchild holds it open.
        let log = match tokio::time::timeout(Duration::from_secs(5), pump).await {
            Ok(Ok(lines)) => lines,
            _ => Vec::new(),
        };
        let end = if let Some(signal) = received {
            RunEnd::Interrupted(signal as i32)
        } else if let Some(limit) = timed_out {
            RunEnd::TimedOut(limit)
        } else {
            use std::os::unix::process::ExitStatusExt;
            match (status.code(), status.signal()) {
                (Some(code), _) => RunEnd::Exited(code),
                (None, Some(signal)) => RunEnd::Killed(signal),
                (None, None) => RunEnd::Exited(1),
            }
        };
        Ok(RunOutcome { end, log })
    }
}

/// Where signals for one trivy run go: its process group when it has its own, else trivy.
#[derive(Debug, Clone, Copy)]
struct Target {
    pid: Pid,
    own_group: bool,
}

impl Target {
    fn send(self, signal: Signal) {
        let _ = if self.own_group {
            nix::sys::signal::killpg(self.pid, signal)
        } else {
            kill(self.pid, signal)
        };
    }
}

/// SIGTERM always; SIGINT only when trivy did not already get it from the terminal, i.e. when
/// trivy-ecr is not in the terminal's foreground process group (trivy shares that group).
fn should_forward(signal: Signal) -> bool {
    match signal {
        Signal::SIGINT => !terminal_delivers_sigint(),
        _ => true,
    }
}

fn terminal_delivers_sigint() -> bool {
    match nix::unistd::tcgetpgrp(io::stdin()) {
        Ok(foreground) => foreground == nix::unistd::getpgrp(),
        Err(_) => false,
    }
}

/// Copies trivy's stderr to ours as it arrives, and keeps the lines that can explain a failure.
async fn pump_stderr(mut stderr: tokio::process::ChildStderr) -> Vec<String> {
    let mut kept = Kept::default();
    let mut partial: Vec<u8> = Vec::new();
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match stderr.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        {
            let mut out = io::stderr().lock();
            let _ = out.write_all(&buf[..n]);
            let _ = out.flush();
        }
        for &byte in &buf[..n] {
            if byte == b'\n' {
                kept.line(&partial);
                partial.clear();
            } else if partial.len() < MAX_LINE_BYTES {
                partial.push(byte);
            }
        }
    }
    kept.line(&partial);
    kept.lines
}

/// The log lines that can explain a failure: trivy's errors and DB lines, and everything from
/// the FATAL line on (its message continues over several lines).
#[derive(Default)]
struct Kept {
    lines: Vec<String>,
    after_fatal: bool,
}

impl Kept {
    fn line(&mut self, line: &[u8]) {
        if line.is_empty() {
            return;
        }
        let text = String::from_utf8_lossy(line);
        self.after_fatal |= text.contains("FATAL");
        let worth_keeping = self.after_fatal
            || [
                "ERROR",
                "WARN",
                "Failed",
                "failed",
                "successfully downloaded",
                "[vulndb]",
                "[javadb]",
            ]
            .iter()
            .any(|needle| text.contains(needle));
        if worth_keeping {
            if self.lines.len() == MAX_KEPT_LINES {
                self.lines.remove(0);
            }
            self.lines.push(text.into_owned());
        }
    }
}

/// The conventional name of a signal, for messages (`SIGSEGV`).
pub fn signal_name(number: i32) -> String {
    Signal::try_from(number)
        .map(|s| s.as_str().to_string())
        .unwrap_or_else(|_| format!("signal {number}"))
}
