//! A fault-injecting reverse proxy in front of a [`crate::rig::registry::Registry`], posing as
//! one public mirror (ghcr.io, public.ecr.aws, mirror.gcr.io): it answers 429 with ghcr's exact
//! body, 503, 404 MANIFEST_UNKNOWN, 401/403, drops or corrupts blobs, stalls, and can demand
//! docker token auth like the real mirrors. Rules change at run time; every request is recorded
//! (method, path, status, time) so tests can assert request counts and retry spacing.
//!
//! It runs on its own tokio runtime; dropping it shuts the runtime down, which closes the
//! listener and every connection, stalled ones included. Several proxies may front one registry.

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt as _;
use futures_util::stream;
use std::net::{SocketAddr, TcpListener as StdListener};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// ghcr.io's body for a rate-limited request, byte for byte.
pub const GHCR_429_BODY: &str = r#"{"errors":[{"code":"TOOMANYREQUESTS","message":"retry-after: 153.601µs, allowed: 44000/minute"}]}"#;
pub const UNAVAILABLE_BODY: &str =
    r#"{"errors":[{"code":"UNAVAILABLE","message":"service unavailable"}]}"#;
pub const MANIFEST_UNKNOWN_BODY: &str =
    r#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown"}]}"#;
pub const UNAUTHORIZED_BODY: &str =
    r#"{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}"#;
pub const DENIED_BODY: &str =
    r#"{"errors":[{"code":"DENIED","message":"requested access to the resource is denied"}]}"#;

/// What to do instead of (or to) the upstream answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// 429 with [`GHCR_429_BODY`] and, if given, a `Retry-After` header.
    TooManyRequests { retry_after: Option<String> },
    /// 503 with [`UNAVAILABLE_BODY`].
    Unavailable,
    /// 404 with [`MANIFEST_UNKNOWN_BODY`].
    ManifestUnknown,
    /// 401 with [`UNAUTHORIZED_BODY`] and a Bearer challenge pointing at this proxy's `/token`.
    Unauthorized,
    /// 403 with [`DENIED_BODY`].
    Denied,
    /// Any status and body.
    Status { status: u16, body: String },
    /// Forward, then send the headers (full `Content-Length`) and half the body, and cut the
    /// connection.
    DropMidBody,
    /// Forward, then flip every byte of the body's second half (same length and headers).
    CorruptBody,
    /// Read the request and never answer.
    Stall,
    /// Forward, send the headers and half the body, then never send the rest.
    StallMidBody,
}

impl Fault {
    /// 429 like ghcr.io, without `Retry-After`.
    pub fn too_many_requests() -> Fault {
        Fault::TooManyRequests { retry_after: None }
    }

    fn name(&self) -> &'static str {
        match self {
            Fault::TooManyRequests { .. } => "429",
            Fault::Unavailable => "503",
            Fault::ManifestUnknown => "404",
            Fault::Unauthorized => "401",
            Fault::Denied => "403",
            Fault::Status { .. } => "status",
            Fault::DropMidBody => "drop-mid-body",
            Fault::CorruptBody => "corrupt-body",
            Fault::Stall => "stall",
            Fault::StallMidBody => "stall-mid-body",
        }
    }
}

/// Which of the requests matching a rule get the fault (counted per rule, from 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum When {
    Always,
    /// The first N matching requests; later ones pass through.
    FirstN(usize),
    /// The k-th, 2k-th, ... matching requests.
    EveryKth(usize),
}

/// One recorded request.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    /// The path without the query.
    pub path: String,
    pub query: String,
    /// `None` while no answer was sent (stalled) or when forwarding failed before a status.
    pub status: Option<u16>,
    /// The fault applied, if any (`"429"`, `"drop-mid-body"`, ...).
    pub fault: Option<&'static str>,
    /// The scheme of the `Authorization` header (`Basic`, `Bearer`), if one was sent.
    pub auth_scheme: Option<String>,
    /// When the request arrived.
    pub at: Instant,
}

struct Rule {
    path_contains: String,
    when: When,
    fault: Fault,
    matched: usize,
}

#[derive(Default)]
struct Config {
    rules: Vec<Rule>,
    /// `Some(service)`: demand docker token auth with this service name.
    token_service: Option<String>,
    /// `/token` answers 401 to requests carrying Basic credentials (like a mirror that does
    /// not know the user's registry credentials).
    token_rejects_basic: bool,
    tokens_issued: usize,
}

struct Shared {
    upstream: SocketAddr,
    self_addr: SocketAddr,
    config: Mutex<Config>,
    log: Mutex<Vec<Recorded>>,
}

/// A running fault proxy. See the module docs.
pub struct FaultProxy {
    shared: Arc<Shared>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl FaultProxy {
    /// Starts a proxy on `127.0.0.1:<free port>` forwarding to `upstream` (e.g.
    /// `registry.addr()`); it passes everything through until rules are added.
    pub fn start(upstream: SocketAddr) -> FaultProxy {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("rig-fault-proxy")
            .enable_all()
            .build()
            .expect("proxy runtime");
        let listener = StdListener::bind("127.0.0.1:0").expect("bind proxy");
        listener.set_nonblocking(true).expect("nonblocking");
        let self_addr = listener.local_addr().expect("proxy addr");
        let shared = Arc::new(Shared {
            upstream,
            self_addr,
            config: Mutex::new(Config::default()),
            log: Mutex::new(Vec::new()),
        });
        let app = axum::Router::new()
            .fallback(handle)
            .with_state(shared.clone());
        runtime.spawn(async move {
            let listener = tokio::net::TcpListener::from_std(listener).expect("tokio listener");
            let _ = axum::serve(listener, app).await;
        });
        FaultProxy {
            shared,
            runtime: Some(runtime),
        }
    }

    /// `127.0.0.1:PORT`, to use in place of the registry in references.
    pub fn host_port(&self) -> String {
        self.shared.self_addr.to_string()
    }

    pub fn addr(&self) -> SocketAddr {
        self.shared.self_addr
    }

    /// Adds a rule: requests whose path contains `path_contains` (e.g. `/trivy-db/`,
    /// `/manifests/`, `/blobs/`, `/token`, or `/` for all) get `fault` as `when` says. The first
    /// matching rule whose `when` fires wins; rules that do not fire still count the request.
    pub fn add_rule(&self, path_contains: &str, when: When, fault: Fault) {
        self.shared.config.lock().unwrap().rules.push(Rule {
            path_contains: path_contains.into(),
            when,
            fault,
            matched: 0,
        });
    }

    /// Removes every rule: the proxy passes everything through again.
    pub fn clear_rules(&self) {
        self.shared.config.lock().unwrap().rules.clear();
    }

    /// Demands docker token auth like ghcr.io / public.ecr.aws: requests to `/v2/...` without a
    /// token this proxy issued get 401 with `WWW-Authenticate: Bearer
    /// realm="http://127.0.0.1:PORT/token",service="<service>",scope="repository:<name>:pull"`;
    /// `GET /token` hands out `{"token":...}` to anyone.
    pub fn require_token_auth(&self, service: &str) {
        self.shared.config.lock().unwrap().token_service = Some(service.into());
    }

    /// Makes `/token` answer 401 `UNAUTHORIZED` to requests with Basic credentials (anonymous
    /// requests still get tokens), like ghcr.io given someone else's username and password.
    pub fn reject_basic_credentials_at_token(&self) {
        self.shared.config.lock().unwrap().token_rejects_basic = true;
    }

    /// How many tokens `/token` handed out.
    pub fn tokens_issued(&self) -> usize {
        self.shared.config.lock().unwrap().tokens_issued
    }

    /// Every request so far, in arrival order.
    pub fn requests(&self) -> Vec<Recorded> {
        self.shared.log.lock().unwrap().clone()
    }

    /// The requests whose path contains `needle`.
    pub fn requests_to(&self, needle: &str) -> Vec<Recorded> {
        self.requests()
            .into_iter()
            .filter(|r| r.path.contains(needle))
            .collect()
    }

    /// The log cut into client runs: registry clients (trivy's ggcr) start every run against a
    /// registry with the `GET /v2/` ping, so each inner list is one trivy run's requests.
    pub fn runs(&self) -> Vec<Vec<Recorded>> {
        let mut runs: Vec<Vec<Recorded>> = Vec::new();
        for request in self.requests() {
            if request.path == "/v2/" || runs.is_empty() {
                runs.push(Vec::new());
            }
            runs.last_mut().expect("a run").push(request);
        }
        runs
    }

    /// Waits (polling, bounded by `timeout`) until at least `n` requests whose path contains
    /// `needle` arrived; returns whether they did.
    pub fn wait_for_requests(&self, needle: &str, n: usize, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if self.requests_to(needle).len() >= n {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            if tokio::runtime::Handle::try_current().is_ok() {
                // Inside an async test a runtime may not block on its shutdown.
                rt.shutdown_background();
            } else {
                rt.shutdown_timeout(Duration::from_secs(2));
            }
        }
    }
}

/// A loopback `127.0.0.1:PORT` where nothing listens: connections are refused.
pub fn refused_addr() -> String {
    let listener = StdListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    drop(listener);
    addr.to_string()
}

async fn handle(State(shared): State<Arc<Shared>>, req: Request) -> Response {
    let path = req.uri().path().to_owned();
    let auth_scheme = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_whitespace().next())
        .map(str::to_owned);
    let (fault, token_service, token_rejects_basic) = {
        let mut config = shared.config.lock().unwrap();
        let fault = config.rules.iter_mut().find_map(|rule| {
            if !path.contains(&rule.path_contains) {
                return None;
            }
            rule.matched += 1;
            let fires = match rule.when {
                When::Always => true,
                When::FirstN(n) => rule.matched <= n,
                When::EveryKth(k) => k > 0 && rule.matched % k == 0,
            };
            fires.then(|| rule.fault.clone())
        });
        (
            fault,
            config.token_service.clone(),
            config.token_rejects_basic,
        )
    };
    let index = {
        let mut log = shared.log.lock().unwrap();
        log.push(Recorded {
            method: req.method().to_string(),
            path: path.clone(),
            query: req.uri().query().unwrap_or_default().to_owned(),
            status: None,
            fault: fault.as_ref().map(Fault::name),
            auth_scheme: auth_scheme.clone(),
            at: Instant::now(),
        });
        log.len() - 1
    };
    let response = if token_service.is_some()
        && token_rejects_basic
        && path == "/token"
        && auth_scheme.as_deref() == Some("Basic")
    {
        json_error(StatusCode::UNAUTHORIZED, UNAUTHORIZED_BODY)
    } else {
        respond(&shared, req, fault, token_service, auth_scheme.as_deref()).await
    };
    shared.log.lock().unwrap()[index].status = Some(response.status().as_u16());
    response
}

async fn respond(
    shared: &Shared,
    mut req: Request,
    fault: Option<Fault>,
    token_service: Option<String>,
    auth_scheme: Option<&str>,
) -> Response {
    let path = req.uri().path().to_owned();
    match fault {
        Some(Fault::TooManyRequests { retry_after }) => {
            let mut resp = json_error(StatusCode::TOO_MANY_REQUESTS, GHCR_429_BODY);
            if let Some(v) = retry_after {
                resp.headers_mut().insert(
                    header::RETRY_AFTER,
                    HeaderValue::from_str(&v).expect("Retry-After value"),
                );
            }
            return resp;
        }
        Some(Fault::Unavailable) => {
            return json_error(StatusCode::SERVICE_UNAVAILABLE, UNAVAILABLE_BODY);
        }
        Some(Fault::ManifestUnknown) => {
            return json_error(StatusCode::NOT_FOUND, MANIFEST_UNKNOWN_BODY);
        }
        Some(Fault::Unauthorized) => {
            let service = token_service.as_deref().unwrap_or("rig-registry");
            return unauthorized(shared, service, &path);
        }
        Some(Fault::Denied) => return json_error(StatusCode::FORBIDDEN, DENIED_BODY),
        Some(Fault::Status { status, body }) => {
            let status = StatusCode::from_u16(status).expect("status code");
            return json_error(status, &body);
        }
        Some(Fault::Stall) => return std::future::pending::<Response>().await,
        _ => {}
    }

    if let Some(service) = token_service {
        if path == "/token" {
            let mut config = shared.config.lock().unwrap();
            config.tokens_issued += 1;
            let token = format!("rig-token-{}", config.tokens_issued);
            let body = serde_json::json!({
                "token": token, "access_token": token, "expires_in": 300,
            });
            return (
                [(header::CONTENT_TYPE, "application/json")],
                body.to_string(),
            )
                .into_response();
        }
        let token_ok = auth_scheme == Some("Bearer")
            && req
                .headers()
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.starts_with("Bearer rig-token-"));
        if path.starts_with("/v2") && !token_ok {
            return unauthorized(shared, &service, &path);
        }
        req.headers_mut().remove(header::AUTHORIZATION);
    }

    let upstream = match forward(shared.upstream, req).await {
        Ok(resp) => resp,
        Err(e) => {
            return (
                StatusCode::BAD_GATEWAY,
                format!("rig fault proxy: upstream error: {e}"),
            )
                .into_response();
        }
    };
    match fault {
        Some(Fault::DropMidBody) => {
            let (parts, body) = upstream.into_parts();
            let bytes = axum::body::to_bytes(body, usize::MAX)
                .await
                .unwrap_or_default();
            let half = bytes.slice(..bytes.len() / 2);
            let chunks: Vec<Result<Bytes, std::io::Error>> = vec![
                Ok(half),
                Err(std::io::Error::other("rig fault proxy: connection dropped")),
            ];
            Response::from_parts(parts, Body::from_stream(stream::iter(chunks)))
        }
        Some(Fault::StallMidBody) => {
            let (parts, body) = upstream.into_parts();
            let bytes = axum::body::to_bytes(body, usize::MAX)
                .await
                .unwrap_or_default();
            let half = bytes.slice(..bytes.len() / 2);
            let body = stream::iter([Ok::<_, std::io::Error>(half)]).chain(stream::pending());
            Response::from_parts(parts, Body::from_stream(body))
        }
        Some(Fault::CorruptBody) => {
            let (parts, body) = upstream.into_parts();
            let bytes = axum::body::to_bytes(body, usize::MAX)
                .await
                .unwrap_or_default();
            let mut corrupted = bytes.to_vec();
            let half = corrupted.len() / 2;
            corrupted[half..].iter_mut().for_each(|b| *b ^= 0xff);
            Response::from_parts(parts, Body::from(corrupted))
        }
        _ => upstream,
    }
}

fn json_error(status: StatusCode, body: &str) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_owned(),
    )
        .into_response()
}

fn unauthorized(shared: &Shared, service: &str, path: &str) -> Response {
    let realm = format!("http://{}/token", shared.self_addr);
    let mut challenge = format!(r#"Bearer realm="{realm}",service="{service}""#);
    if let Some(name) = repository_of(path) {
        challenge.push_str(&format!(r#",scope="repository:{name}:pull""#));
    }
    let mut resp = json_error(StatusCode::UNAUTHORIZED, UNAUTHORIZED_BODY);
    resp.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_str(&challenge).expect("challenge header"),
    );
    resp
}

/// `trivy-db` from `/v2/trivy-db/manifests/2`, `aquasec/trivy-db` from
/// `/v2/aquasec/trivy-db/blobs/...`.
fn repository_of(path: &str) -> Option<&str> {
    let rest = path.strip_prefix("/v2/")?;
    ["/manifests/", "/blobs/", "/tags/"]
        .iter()
        .find_map(|sep| rest.find(sep).map(|i| &rest[..i]))
}

async fn forward(upstream: SocketAddr, req: Request) -> Result<Response, String> {
    let stream = tokio::net::TcpStream::connect(upstream)
        .await
        .map_err(|e| format!("connect {upstream}: {e}"))?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .map_err(|e| format!("handshake: {e}"))?;
    tokio::spawn(conn);
    let resp = sender
        .send_request(req)
        .await
        .map_err(|e| format!("request: {e}"))?;
    Ok(resp.map(Body::new))
}
