//! A real OCI registry (Debian's `docker-registry`, CNCF distribution 2.8) on a free loopback
//! port with storage in a temp dir, so tests push and pull through the same code paths trivy
//! uses against ghcr.io / public.ecr.aws. Optionally with htpasswd (Basic) auth, like a private
//! registry an organisation owns. Dropping it kills and reaps the process.

use crate::rig::oci;
use crate::rig::tools;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

/// How long `start` waits for `/v2/` to answer before giving up.
const READY_TIMEOUT: Duration = Duration::from_secs(15);
/// Port races (another process grabbing the port between probe and bind) are retried this often.
const START_ATTEMPTS: usize = 3;

/// A running `docker-registry serve` on `127.0.0.1:<port>`.
pub struct Registry {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
    /// `(user, password)` when the registry demands Basic auth.
    login: Option<(String, String)>,
}

impl Registry {
    /// Starts a registry and waits until `GET /v2/` answers 200. Panics (with the registry's
    /// log) when it does not come up within 15 s.
    pub fn start() -> Registry {
        Registry::start_inner(None)
    }

    /// Starts a registry that demands Basic auth for every request (distribution's htpasswd
    /// backend, bcrypt entry written here); only `user`/`password` are let in.
    pub fn start_with_htpasswd(user: &str, password: &str) -> Registry {
        Registry::start_inner(Some((user.to_string(), password.to_string())))
    }

    fn start_inner(login: Option<(String, String)>) -> Registry {
        let binary = tools::docker_registry();
        let mut last_log = String::new();
        for _ in 0..START_ATTEMPTS {
            let dir = tempfile::Builder::new()
                .prefix("rig-registry-")
                .tempdir()
                .expect("registry temp dir");
            let port = free_port();
            let storage = dir.path().join("storage");
            let config = dir.path().join("config.yml");
            let mut yaml = config_yaml(port, &storage);
            if let Some((user, password)) = &login {
                let htpasswd = dir.path().join("htpasswd");
                std::fs::write(&htpasswd, htpasswd_line(user, password)).expect("htpasswd");
                yaml.push_str(&format!(
                    "auth:\n  htpasswd:\n    realm: rig-registry\n    path: {}\n",
                    htpasswd.display()
                ));
            }
            std::fs::write(&config, yaml).expect("registry config");
            let log = std::fs::File::create(dir.path().join("registry.log")).expect("log file");
            let child = Command::new(&binary)
                .arg("serve")
                .arg(&config)
                .stdin(Stdio::null())
                .stdout(log.try_clone().expect("log file"))
                .stderr(log)
                .spawn()
                .unwrap_or_else(|e| panic!("cannot spawn {}: {e}", binary.display()));
            let mut registry = Registry {
                child,
                port,
                dir,
                login: login.clone(),
            };
            if registry.wait_ready() {
                return registry;
            }
            last_log = registry.log();
            // Dropping `registry` kills it; try again on another port.
        }
        panic!("docker-registry did not become ready on 127.0.0.1; last log:\n{last_log}");
    }

    /// `127.0.0.1:PORT`, as used in image and DB references.
    pub fn host_port(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// A push/pull client for this registry (with its credentials, if it demands them).
    pub fn client(&self) -> oci::Client {
        let client = oci::Client::new(&self.host_port());
        match &self.login {
            Some((user, password)) => client.with_basic_auth(user, password),
            None => client,
        }
    }

    /// What the registry printed so far (errors only; access logs are off).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }

    /// Where the registry keeps its blobs.
    pub fn storage_dir(&self) -> PathBuf {
        self.dir.path().join("storage")
    }

    fn wait_ready(&mut self) -> bool {
        let deadline = Instant::now() + READY_TIMEOUT;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return false; // exited, e.g. the port was taken meanwhile
            }
            if TcpStream::connect_timeout(&self.addr(), Duration::from_millis(200)).is_ok()
                && self.client().get("/v2/", None).status == 200
            {
                return true;
            }
            thread::sleep(Duration::from_millis(20));
        }
        false
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An htpasswd line distribution accepts: `user:` and a bcrypt hash (`$2y$`, low cost: tests
/// only).
fn htpasswd_line(user: &str, password: &str) -> String {
    let hash = bcrypt::hash_with_result(password, 5)
        .expect("bcrypt")
        .format_for_version(bcrypt::Version::TwoY);
    format!("{user}:{hash}\n")
}

/// A loopback port that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind 127.0.0.1:0")
        .port()
}

fn config_yaml(port: u16, storage: &std::path::Path) -> String {
    format!(
        "version: 0.1
log:
  level: error
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: {storage}
  delete:
    enabled: true
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: 127.0.0.1:{port}
",
        storage = storage.display()
    )
}
