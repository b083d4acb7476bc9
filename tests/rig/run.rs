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

/// Runs `cmd` with stdin closed and stdout/stderr captured, in a process group of its own. If it
/// has not exited after `timeout`, the whole group is killed (SIGKILL: trivy-ecr and the trivy it
/// runs, which holds the same output pipes), reaped, and the test panics with what it printed.
pub fn run_bounded(cmd: &mut Command, timeout: Duration) -> Ran {
    let ran = run_with_deadline(cmd, timeout);
    assert!(
        !ran.killed_at_deadline,
        "{cmd:?} did not finish within {timeout:?}; killed it\n{}",
        ran.describe()
    );
    ran
}

/// Like [`run_bounded`], but a child still running after `timeout` is killed with its process
/// group (SIGKILL) and reported with `killed_at_deadline`, for tests that expect a hang.
pub fn run_with_deadline(cmd: &mut Command, timeout: Duration) -> Ran {
    use std::os::unix::process::CommandExt;
    let started = Instant::now();
    let mut child = cmd
        .process_group(0)
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
            // The child is not reaped yet (the waiter still blocks on it), so its pid, which is
            // also its process group's id, is still ours. Killing only the child would leave
            // its children holding the pipes, and the readers below would never finish.
            // SAFETY: plain kill(2) on the process group of our own unreaped child.
            unsafe { libc::kill(-pid, libc::SIGKILL) };
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

/// A child running in the background (a server) in a process group of its own, its output going
/// to files; dropping it kills the whole group (SIGKILL) and reaps the child.
pub struct Background {
    child: std::process::Child,
    dir: tempfile::TempDir,
}

impl Background {
    /// Spawns `cmd` with stdin closed and stdout/stderr written to files.
    pub fn spawn(cmd: &mut Command) -> Background {
        use std::os::unix::process::CommandExt;
        let dir = tempfile::Builder::new()
            .prefix("rig-background-")
            .tempdir()
            .expect("temp dir");
        let out = std::fs::File::create(dir.path().join("stdout")).expect("stdout file");
        let err = std::fs::File::create(dir.path().join("stderr")).expect("stderr file");
        let child = cmd
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot spawn {cmd:?}: {e}"));
        Background { child, dir }
    }

    pub fn pid(&self) -> libc::pid_t {
        self.child.id() as libc::pid_t
    }

    /// Sends `signal` to the child itself (not its group), as a CI runner does.
    pub fn signal(&mut self, signal: libc::c_int) {
        if self.try_wait().is_none() {
            // SAFETY: kill(2) on our own child, not reaped yet (try_wait just said so).
            unsafe { libc::kill(self.pid(), signal) };
        }
    }

    /// The exit status, if the child has exited.
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().expect("try_wait")
    }

    /// Waits (polling, bounded by `timeout`) for the child to exit.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_wait() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// Waits (polling, bounded by `timeout`) until `ready()` holds; `false` when the child
    /// exited first or the time ran out.
    pub fn wait_until(&mut self, timeout: Duration, mut ready: impl FnMut() -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if ready() {
                return true;
            }
            if self.try_wait().is_some() {
                return false;
            }
            thread::sleep(Duration::from_millis(10));
        }
        false
    }

    pub fn stdout(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("stdout")).unwrap_or_default()
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("stderr")).unwrap_or_default()
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        if self.try_wait().is_none() {
            // SAFETY: kill(2) on the process group of our own unreaped child.
            unsafe { libc::kill(-self.pid(), libc::SIGKILL) };
            let _ = self.child.wait();
        }
    }
}
