//! Runs a child process (trivy, the wrapper) with a deadline and captures its output, so a hung
//! child fails the test with its stderr instead of hanging `cargo test`.

use std::io::Read;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

/// The outcome of a bounded run.
#[derive(Debug)]
pub struct Ran {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
    pub elapsed: Duration,
    /// The child was still running at the deadline and was killed.
    pub killed_at_deadline: bool,
}

impl Ran {
    /// The exit code; `None` when the child died by a signal.
    pub fn code(&self) -> Option<i32> {
        self.status.code()
    }

    /// The stderr lines that contain `needle`.
    pub fn stderr_lines_with(&self, needle: &str) -> Vec<&str> {
        self.stderr.lines().filter(|l| l.contains(needle)).collect()
    }

    /// trivy's fatal error: from the line logged at level `FATAL` to the end of stderr (trivy
    /// prints the error chain over several lines and exits); `None` without a FATAL line.
    pub fn fatal(&self) -> Option<&str> {
        let start = self
            .stderr
            .match_indices("\tFATAL\t")
            .next()
            .map(|(i, _)| self.stderr[..i].rfind('\n').map_or(0, |nl| nl + 1))?;
        Some(self.stderr[start..].trim_end())
    }

    /// A short dump for assertion messages.
    pub fn describe(&self) -> String {
        format!(
            "status: {}\nelapsed: {:?}\n--- stderr ---\n{}\n--- stdout (first 4000 bytes) ---\n{}",
            self.status,
            self.elapsed,
            self.stderr,
            self.stdout.get(..4000).unwrap_or(&self.stdout)
        )
    }
}

/// Runs `cmd` with stdin closed and stdout/stderr captured. If it has not exited after
/// `timeout`, it is killed (SIGKILL), reaped, and the test panics with what it printed.
pub fn run_bounded(cmd: &mut Command, timeout: Duration) -> Ran {
    let ran = run_with_deadline(cmd, timeout);
    assert!(
        !ran.killed_at_deadline,
        "{cmd:?} did not finish within {timeout:?}; killed it\n{}",
        ran.describe()
    );
    ran
}

/// Like [`run_bounded`], but a child still running after `timeout` is killed (SIGKILL) and
/// reported with `killed_at_deadline`, for tests that expect a hang.
pub fn run_with_deadline(cmd: &mut Command, timeout: Duration) -> Ran {
    let started = Instant::now();
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot spawn {cmd:?}: {e}"));
    let pid = child.id() as libc::pid_t;
    let stdout = drain(child.stdout.take().expect("piped stdout"));
    let stderr = drain(child.stderr.take().expect("piped stderr"));

    let (tx, rx) = mpsc::channel();
    let waiter = thread::spawn(move || {
        let _ = tx.send(child.wait());
    });
    let (status, timed_out) = match rx.recv_timeout(timeout) {
        Ok(status) => (status, false),
        Err(_) => {
            // The child is not reaped yet (the waiter still blocks on it), so `pid` is still ours.
            // SAFETY: plain kill(2) on our own unreaped child.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            (rx.recv().expect("waiter thread"), true)
        }
    };
    waiter.join().expect("waiter thread");
    Ran {
        status: status.expect("wait for child"),
        stdout: stdout.join().expect("stdout reader"),
        stderr: stderr.join().expect("stderr reader"),
        elapsed: started.elapsed(),
        killed_at_deadline: timed_out,
    }
}

fn drain(mut pipe: impl Read + Send + 'static) -> thread::JoinHandle<String> {
    thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = pipe.read_to_end(&mut buf);
        String::from_utf8_lossy(&buf).into_owned()
    })
}
