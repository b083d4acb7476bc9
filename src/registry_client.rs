//! Pulls one OCI artifact (manifest, then its single layer) over the distribution API, with the
//! docker token dance ghcr.io and public.ecr.aws require, and errors that keep exactly what the
//! retry policy needs: HTTP status, registry error code, `Retry-After`.
//!
//! Written on reqwest rather than `oci-client` because that crate folds statuses and headers
//! into its own error type, and the retry policy must see `Retry-After` and the exact status.

use std::collections::HashMap;
use std::io::{self, Write};
use std::time::Duration;

use reqwest::header::{HeaderMap, WWW_AUTHENTICATE};
use reqwest::{Client, Response, StatusCode};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::docker_config::{Credentials, DockerConfig};
use crate::failure::Cause;
use crate::retry_after;

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const ACCEPT_MANIFESTS: &str = "application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json";

/// `registry/repository:tag` as trivy writes DB repositories.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    pub registry: String,
    pub repository: String,
    /// A tag, or a digest (`sha256:...`).
    pub tag: String,
}

impl Reference {
    /// Parses a repository reference; a missing tag becomes `default_tag` (trivy appends the
    /// schema version the same way).
    pub fn parse(text: &str, default_tag: &str) -> Result<Reference, String> {
        let text = text.trim();
        let (name, tag) = if let Some((name, digest)) = text.split_once('@') {
            (name, digest.to_string())
        } else {
            match text.rfind(':') {
                Some(colon) if !text[colon..].contains('/') => {
                    (&text[..colon], text[colon + 1..].to_string())
                }
                _ => (text, default_tag.to_string()),
            }
        };
        let (registry, repository) = match name.split_once('/') {
            Some((first, rest))
                if first.contains('.') || first.contains(':') || first == "localhost" =>
            {
                (first.to_string(), rest.to_string())
            }
            _ => ("index.docker.io".to_string(), name.to_string()),
        };
        if repository.is_empty() || tag.is_empty() || name.contains("://") {
            return Err(format!(
                "'{text}' is not a repository reference (HOST/PATH[:TAG])"
            ));
        }
        Ok(Reference {
            registry,
            repository,
            tag,
        })
    }

    /// Loopback registries are spoken to over plain HTTP, as trivy does.
    pub fn is_loopback(&self) -> bool {
        let host = self
            .registry
            .rsplit_once(':')
            .filter(|(_, port)| port.chars().all(|c| c.is_ascii_digit()))
            .map(|(host, _)| host)
            .unwrap_or(&self.registry);
        host == "localhost" || host.starts_with("127.") || host == "[::1]"
    }
}

impl std::fmt::Display for Reference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let sep = if self.tag.contains(':') { '@' } else { ':' };
        write!(f, "{}/{}{sep}{}", self.registry, self.repository, self.tag)
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    pub media_type: String,
    pub digest: String,
    pub size: u64,
    #[serde(default)]
    pub annotations: HashMap<String, String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    #[serde(default)]
    pub media_type: Option<String>,
    #[serde(default)]
    pub artifact_type: Option<String>,
    pub config: Descriptor,
    #[serde(default)]
    pub layers: Vec<Descriptor>,
    #[serde(default)]
    pub annotations: HashMap<String, String>,
    /// `sha256:` of the manifest bytes as served (not part of the JSON).
    #[serde(skip)]
    pub digest: String,
}

/// Why a pull from one mirror failed.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("HTTP {status}{}{}", code.as_deref().map(|c| format!(" {c}")).unwrap_or_default(), if message.is_empty() { String::new() } else { format!(": {message}") })]
    Status {
        status: u16,
        code: Option<String>,
        message: String,
        retry_after: Option<Duration>,
    },
    #[error("{0}")]
    Transport(String, TransportKind),
    #[error("digest mismatch: expected {expected}, got {actual}")]
    DigestMismatch { expected: String, actual: String },
    #[error("not a trivy DB artifact: {0}")]
    BadArtifact(String),
    #[error("cannot write to the cache: {0}")]
    Local(#[from] io::Error),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransportKind {
    Timeout,
    Refused,
    Dns,
    Reset,
    Other,
}

impl FetchError {
    /// The same classification trivy's log lines get, so one retry policy serves both.
    pub fn cause(&self) -> Cause {
        match self {
            FetchError::Status {
                status,
                code,
                retry_after,
                ..
            } => match (*status, code.as_deref()) {
                (429, _) | (_, Some("TOOMANYREQUESTS")) => Cause::RateLimited {
                    retry_after: *retry_after,
                },
                (_, Some("BLOB_UNKNOWN")) => Cause::BlobUnknown,
                (404, _) => Cause::NotFound,
                (401 | 403, _) => Cause::Unauthorized,
                (500..=599, _) => Cause::ServerError(Some(*status)),
                (status, _) => Cause::Other(format!("unexpected HTTP {status}")),
            },
            FetchError::Transport(_, kind) => match kind {
                TransportKind::Timeout => Cause::Timeout,
                TransportKind::Refused => Cause::ConnectionRefused,
                TransportKind::Dns => Cause::Dns,
                TransportKind::Reset | TransportKind::Other => Cause::ConnectionReset,
            },
            FetchError::DigestMismatch { .. } => Cause::Corrupt,
            FetchError::BadArtifact(reason) => Cause::BadArtifact(reason.clone()),
            FetchError::Local(err) => Cause::Other(format!("cannot write to the cache: {err}")),
        }
    }
}

fn transport_error(err: reqwest::Error) -> FetchError {
    // The useful detail (refused, DNS) is in the source chain.
    let mut text = err.to_string();
    let mut source = std::error::Error::source(&err);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    let lower = text.to_ascii_lowercase();
    let kind = if err.is_timeout() || lower.contains("timed out") {
        TransportKind::Timeout
    } else if lower.contains("connection refused") {
        TransportKind::Refused
    } else if lower.contains("dns")
        || lower.contains("failed to lookup")
        || lower.contains("name or service not known")
    {
        TransportKind::Dns
    } else if err.is_body()
        || err.is_decode()
        || lower.contains("reset")
        || lower.contains("closed")
    {
        TransportKind::Reset
    } else {
        TransportKind::Other
    };
    FetchError::Transport(crate::redact::url_userinfo_hidden(&text), kind)
}

/// How long to wait for a connection, and for the next bytes of a response.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    pub connect: Duration,
    pub read: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            connect: Duration::from_secs(10),
            read: Duration::from_secs(30),
        }
    }
}

/// A client for one run: HTTP connections, tokens per repository and the docker config.
pub struct RegistryClient {
    http: Client,
    credentials: DockerConfig,
    tokens: HashMap<String, String>,
    insecure: bool,
}

/// A `WWW-Authenticate` challenge.
#[derive(Debug, PartialEq, Eq)]
enum Challenge {
    Bearer {
        realm: String,
        service: Option<String>,
        scope: Option<String>,
    },
    Basic,
}

fn parse_challenge(headers: &HeaderMap) -> Option<Challenge> {
    let value = headers.get(WWW_AUTHENTICATE)?.to_str().ok()?;
    let (scheme, params) = value.trim().split_once(' ').unwrap_or((value, ""));
    if scheme.eq_ignore_ascii_case("basic") {
        return Some(Challenge::Basic);
    }
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let mut fields = HashMap::new();
    let mut rest = params;
    while let Some(eq) = rest.find('=') {
        let key = rest[..eq]
            .trim()
            .trim_start_matches(',')
            .trim()
            .to_ascii_lowercase();
        let after = &rest[eq + 1..];
        let (value, next) = if let Some(stripped) = after.strip_prefix('"') {
            let end = stripped.find('"').unwrap_or(stripped.len());
            (&stripped[..end], &stripped[(end + 1).min(stripped.len())..])
        } else {
            let end = after.find(',').unwrap_or(after.len());
            (&after[..end], &after[end..])
        };
        fields.insert(key, value.to_string());
        rest = next;
    }
    Some(Challenge::Bearer {
        realm: fields.remove("realm")?,
        service: fields.remove("service"),
        scope: fields.remove("scope"),
    })
}

#[derive(Deserialize)]
struct TokenReply {
    #[serde(default)]
    token: Option<String>,
    #[serde(default)]
    access_token: Option<String>,
}

#[derive(Deserialize)]
struct ErrorBody {
    #[serde(default)]
    errors: Vec<RegistryError>,
}

#[derive(Deserialize)]
struct RegistryError {
    #[serde(default)]
    code: String,
    #[serde(default)]
    message: String,
}

impl RegistryClient {
    pub fn new(
        credentials: DockerConfig,
        timeouts: Timeouts,
        insecure: bool,
    ) -> Result<RegistryClient, String> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = Client::builder()
            .connect_timeout(timeouts.connect)
            .read_timeout(timeouts.read)
            .user_agent(concat!("trivy-ecr/", env!("CARGO_PKG_VERSION")))
            .tls_danger_accept_invalid_certs(insecure)
            .build()
            .map_err(|e| format!("cannot set up HTTPS: {e}"))?;
        Ok(RegistryClient {
            http,
            credentials,
            tokens: HashMap::new(),
            insecure,
        })
    }

    fn url(scheme: &str, reference: &Reference, path: &str) -> String {
        format!(
            "{scheme}://{}/v2/{}/{path}",
            reference.registry, reference.repository
        )
    }

    /// Plain HTTP for loopback registries (as trivy); with `--insecure`, HTTPS without
    /// certificate checks first, then plain HTTP.
    fn schemes(&self, reference: &Reference) -> &'static [&'static str] {
        if reference.is_loopback() {
            &["http"]
        } else if self.insecure {
            &["https", "http"]
        } else {
            &["https"]
        }
    }

    /// Sends a GET, answering an auth challenge once (anonymous token, or the docker config's
    /// credentials), and turns error statuses into [`FetchError::Status`].
    async fn get(
        &mut self,
        reference: &Reference,
        path: &str,
        accept: Option<&str>,
    ) -> Result<Response, FetchError> {
        let key = format!("{}/{}", reference.registry, reference.repository);
        let mut last_error = None;
        let mut first = None;
        for scheme in self.schemes(reference) {
            let url = Self::url(scheme, reference, path);
            match self
                .send(&url, accept, self.tokens.get(&key).cloned(), None)
                .await
            {
                Ok(response) => {
                    first = Some((url, response));
                    break;
                }
                Err(err) => last_error = Some(err),
            }
        }
        let Some((url, response)) = first else {
            return Err(last_error.expect("at least one scheme"));
        };
        let response = if response.status() == StatusCode::UNAUTHORIZED {
            let creds = self.credentials.credentials(&reference.registry);
            match parse_challenge(response.headers()) {
                Some(Challenge::Bearer {
                    realm,
                    service,
                    scope,
                }) => {
                    let scope = scope
                        .unwrap_or_else(|| format!("repository:{}:pull", reference.repository));
                    let token = self
                        .token(&realm, service.as_deref(), &scope, creds.as_ref())
                        .await?;
                    self.tokens.insert(key, token.clone());
                    self.send(&url, accept, Some(token), None).await?
                }
                Some(Challenge::Basic) if creds.is_some() => {
                    self.send(&url, accept, None, creds.as_ref()).await?
                }
                _ => response,
            }
        } else {
            response
        };
        if response.status().is_success() {
            Ok(response)
        } else {
            Err(status_error(response).await)
        }
    }

    async fn send(
        &self,
        url: &str,
        accept: Option<&str>,
        bearer: Option<String>,
        basic: Option<&Credentials>,
    ) -> Result<Response, FetchError> {
        let mut request = self.http.get(url);
        if let Some(accept) = accept {
            request = request.header(reqwest::header::ACCEPT, accept);
        }
        if let Some(token) = bearer {
            request = request.bearer_auth(token);
        } else if let Some(creds) = basic {
            request = request.basic_auth(&creds.username, Some(creds.secret.expose()));
        }
        request.send().await.map_err(transport_error)
    }

    /// The docker token endpoint: with credentials if there are any, anonymously if they are
    /// refused (what trivy does).
    async fn token(
        &self,
        realm: &str,
        service: Option<&str>,
        scope: &str,
        creds: Option<&Credentials>,
    ) -> Result<String, FetchError> {
        let mut query = vec![("scope", scope)];
        if let Some(service) = service {
            query.push(("service", service));
        }
        let url = reqwest::Url::parse_with_params(realm, &query)
            .map_err(|e| FetchError::BadArtifact(format!("bad token realm {realm}: {e}")))?;
        let attempt = |with: Option<&Credentials>| {
            let mut request = self.http.get(url.clone());
            if let Some(c) = with {
                request = request.basic_auth(&c.username, Some(c.secret.expose()));
            }
            request.send()
        };
        let mut response = attempt(creds).await.map_err(transport_error)?;
        if creds.is_some() && response.status() == StatusCode::UNAUTHORIZED {
            tracing::warn!(
                realm,
                "the token service refused the docker config's credentials; trying anonymously"
            );
            response = attempt(None).await.map_err(transport_error)?;
        }
        if !response.status().is_success() {
            return Err(status_error(response).await);
        }
        let body = response.bytes().await.map_err(transport_error)?;
        let reply: TokenReply = serde_json::from_slice(&body).map_err(|e| {
            FetchError::BadArtifact(format!("token service answered without a token: {e}"))
        })?;
        reply
            .token
            .or(reply.access_token)
            .ok_or_else(|| FetchError::BadArtifact("token service answered without a token".into()))
    }

    /// Fetches and checks the manifest of a trivy DB artifact with one layer of `layer_type`.
    pub async fn manifest(
        &mut self,
        reference: &Reference,
        layer_type: &str,
        max_layer_size: u64,
    ) -> Result<(Manifest, Descriptor), FetchError> {
        let response = self
            .get(
                reference,
                &format!("manifests/{}", reference.tag),
                Some(ACCEPT_MANIFESTS),
            )
            .await?;
        let body = response.bytes().await.map_err(transport_error)?;
        if body.len() > 4 << 20 {
            return Err(FetchError::BadArtifact("manifest larger than 4 MiB".into()));
        }
        let mut manifest: Manifest = serde_json::from_slice(&body)
            .map_err(|e| FetchError::BadArtifact(format!("unreadable manifest: {e}")))?;
        manifest.digest = sha256_digest(&body);
        if let Some(media_type) = manifest.media_type.as_deref()
            && media_type != OCI_MANIFEST
        {
            return Err(FetchError::BadArtifact(format!(
                "manifest media type {media_type}"
            )));
        }
        let layer = match manifest.layers.as_slice() {
            [layer] => layer.clone(),
            layers => {
                return Err(FetchError::BadArtifact(format!(
                    "{} layers, expected 1",
                    layers.len()
                )));
            }
        };
        if layer.media_type != layer_type {
            return Err(FetchError::BadArtifact(format!(
                "layer media type {}, expected {layer_type}",
                layer.media_type
            )));
        }
        if layer.size > max_layer_size {
            return Err(FetchError::BadArtifact(format!(
                "layer of {} bytes exceeds the {max_layer_size}-byte limit",
                layer.size
            )));
        }
        if !layer.digest.starts_with("sha256:") {
            return Err(FetchError::BadArtifact(format!(
                "unsupported digest {}",
                layer.digest
            )));
        }
        Ok((manifest, layer))
    }

    /// Streams a blob into `sink`, checking its size and sha256 as it arrives. `progress` gets
    /// the byte count so far.
    pub async fn blob(
        &mut self,
        reference: &Reference,
        layer: &Descriptor,
        sink: &mut dyn Write,
        progress: &mut dyn FnMut(u64),
    ) -> Result<(), FetchError> {
        let mut response = self
            .get(reference, &format!("blobs/{}", layer.digest), None)
            .await?;
        if let Some(length) = response.content_length()
            && length != layer.size
        {
            return Err(FetchError::BadArtifact(format!(
                "blob is {length} bytes, the manifest says {}",
                layer.size
            )));
        }
        let mut hasher = Sha256::new();
        let mut received = 0u64;
        while let Some(chunk) = response.chunk().await.map_err(transport_error)? {
            received += chunk.len() as u64;
            if received > layer.size {
                return Err(FetchError::BadArtifact(format!(
                    "blob is larger than the manifest's {} bytes",
                    layer.size
                )));
            }
            hasher.update(&chunk);
            sink.write_all(&chunk)?;
            progress(received);
        }
        if received < layer.size {
            return Err(FetchError::Transport(
                format!("connection closed after {received} of {} bytes", layer.size),
                TransportKind::Reset,
            ));
        }
        let actual = hex_digest(&hasher.finalize());
        if actual != layer.digest {
            return Err(FetchError::DigestMismatch {
                expected: layer.digest.clone(),
                actual,
            });
        }
        Ok(())
    }
}

// ---- `trivy-ecr doctor`: one timed manifest request, and what the registry says about limits ----

/// How a [`ManifestProbe`] got past the registry's authentication.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProbeAuth {
    /// The registry asked for nothing.
    NotRequired,
    /// An anonymous token from the registry's token service.
    AnonymousToken,
    /// A token issued for the docker config's credentials.
    CredentialsToken,
    /// The token service refused the docker config's credentials; an anonymous token was used.
    CredentialsRefused,
    /// Basic auth with the docker config's credentials.
    Basic,
    /// The registry asked for credentials and there were none to give.
    NoCredentials,
}

/// Which request of a probe failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProbeStep {
    Token,
    Manifest,
}

/// A probe that got no HTTP answer it could judge.
#[derive(Debug)]
pub struct ProbeFailure {
    pub step: ProbeStep,
    pub error: FetchError,
}

/// What one manifest request to a mirror showed: status, time, auth and rate-limit headers.
#[derive(Debug)]
pub struct ManifestProbe {
    pub auth: ProbeAuth,
    /// How long the token request took, when one was needed.
    pub token_time: Option<Duration>,
    /// `HEAD`, or `GET` when the registry does not take HEAD.
    pub method: &'static str,
    pub status: u16,
    /// How long the manifest request that gave `status` took.
    pub time: Duration,
    /// `ratelimit-*`, `x-ratelimit-*` and `retry-after` headers, as sent (values shortened).
    pub rate_limit: Vec<(String, String)>,
    /// `Docker-Content-Digest`, when sent.
    pub digest: Option<String>,
    /// For an error status: the registry's error (code and message only for GET).
    pub error: Option<FetchError>,
}

/// The headers in which registries announce their limits.
pub fn is_rate_limit_header(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    name.starts_with("ratelimit-") || name.starts_with("x-ratelimit-") || name == "retry-after"
}

impl RegistryClient {
    /// One manifest request (HEAD, or GET where HEAD is refused) for `trivy-ecr doctor`,
    /// answering an auth challenge like [`RegistryClient::manifest`] does but reporting how;
    /// an HTTP error status is part of the probe, not a failure.
    pub async fn probe_manifest(
        &mut self,
        reference: &Reference,
    ) -> Result<ManifestProbe, ProbeFailure> {
        let manifest_failure = |error| ProbeFailure {
            step: ProbeStep::Manifest,
            error,
        };
        let path = format!("manifests/{}", reference.tag);
        let mut last_error = None;
        let mut first = None;
        for scheme in self.schemes(reference) {
            let url = Self::url(scheme, reference, &path);
            match self
                .probe_send(reqwest::Method::HEAD, &url, None, None)
                .await
            {
                Ok((response, time)) => {
                    first = Some((url, response, time));
                    break;
                }
                Err(err) => last_error = Some(err),
            }
        }
        let Some((url, mut response, mut time)) = first else {
            return Err(manifest_failure(last_error.expect("at least one scheme")));
        };
        let mut auth = ProbeAuth::NotRequired;
        let mut token_time = None;
        let mut bearer = None;
        let mut basic = None;
        if response.status() == StatusCode::UNAUTHORIZED {
            let creds = self.credentials.credentials(&reference.registry);
            match parse_challenge(response.headers()) {
                Some(Challenge::Bearer {
                    realm,
                    service,
                    scope,
                }) => {
                    let scope = scope
                        .unwrap_or_else(|| format!("repository:{}:pull", reference.repository));
                    let started = std::time::Instant::now();
                    let (token, how) = self
                        .probe_token(&realm, service.as_deref(), &scope, creds.as_ref())
                        .await
                        .map_err(|error| ProbeFailure {
                            step: ProbeStep::Token,
                            error,
                        })?;
                    token_time = Some(started.elapsed());
                    auth = how;
                    bearer = Some(token);
                }
                Some(Challenge::Basic) if creds.is_some() => {
                    auth = ProbeAuth::Basic;
                    basic = creds;
                }
                _ => auth = ProbeAuth::NoCredentials,
            }
            if auth != ProbeAuth::NoCredentials {
                (response, time) = self
                    .probe_send(
                        reqwest::Method::HEAD,
                        &url,
                        bearer.as_deref(),
                        basic.as_ref(),
                    )
                    .await
                    .map_err(manifest_failure)?;
            }
        }
        let mut method = "HEAD";
        if matches!(response.status().as_u16(), 405 | 501) {
            method = "GET";
            (response, time) = self
                .probe_send(
                    reqwest::Method::GET,
                    &url,
                    bearer.as_deref(),
                    basic.as_ref(),
                )
                .await
                .map_err(manifest_failure)?;
        }
        let header_text = |value: &reqwest::header::HeaderValue| {
            String::from_utf8_lossy(value.as_bytes())
                .chars()
                .take(120)
                .collect::<String>()
        };
        let rate_limit = response
            .headers()
            .iter()
            .filter(|(name, _)| is_rate_limit_header(name.as_str()))
            .take(8)
            .map(|(name, value)| (name.as_str().to_string(), header_text(value)))
            .collect();
        let digest = response
            .headers()
            .get("docker-content-digest")
            .map(header_text);
        let status = response.status().as_u16();
        let error = if response.status().is_success() {
            None
        } else {
            Some(status_error(response).await)
        };
        Ok(ManifestProbe {
            auth,
            token_time,
            method,
            status,
            time,
            rate_limit,
            digest,
            error,
        })
    }

    async fn probe_send(
        &self,
        method: reqwest::Method,
        url: &str,
        bearer: Option<&str>,
        basic: Option<&Credentials>,
    ) -> Result<(Response, Duration), FetchError> {
        let mut request = self
            .http
            .request(method, url)
            .header(reqwest::header::ACCEPT, ACCEPT_MANIFESTS);
        if let Some(token) = bearer {
            request = request.bearer_auth(token);
        } else if let Some(creds) = basic {
            request = request.basic_auth(&creds.username, Some(creds.secret.expose()));
        }
        let started = std::time::Instant::now();
        let response = request.send().await.map_err(transport_error)?;
        Ok((response, started.elapsed()))
    }

    /// The token dance of [`RegistryClient::token`], telling whether the credentials were
    /// accepted.
    async fn probe_token(
        &self,
        realm: &str,
        service: Option<&str>,
        scope: &str,
        creds: Option<&Credentials>,
    ) -> Result<(String, ProbeAuth), FetchError> {
        let mut query = vec![("scope", scope)];
        if let Some(service) = service {
            query.push(("service", service));
        }
        let url = reqwest::Url::parse_with_params(realm, &query)
            .map_err(|e| FetchError::BadArtifact(format!("bad token realm {realm}: {e}")))?;
        let attempt = |with: Option<&Credentials>| {
            let mut request = self.http.get(url.clone());
            if let Some(c) = with {
                request = request.basic_auth(&c.username, Some(c.secret.expose()));
            }
            request.send()
        };
        let mut how = if creds.is_some() {
            ProbeAuth::CredentialsToken
        } else {
            ProbeAuth::AnonymousToken
        };
        let mut response = attempt(creds).await.map_err(transport_error)?;
        if creds.is_some() && response.status() == StatusCode::UNAUTHORIZED {
            how = ProbeAuth::CredentialsRefused;
            response = attempt(None).await.map_err(transport_error)?;
        }
        if !response.status().is_success() {
            return Err(status_error(response).await);
        }
        let body = response.bytes().await.map_err(transport_error)?;
        let reply: TokenReply = serde_json::from_slice(&body).map_err(|e| {
            FetchError::BadArtifact(format!("token service answered without a token: {e}"))
        })?;
        let token = reply.token.or(reply.access_token).ok_or_else(|| {
            FetchError::BadArtifact("token service answered without a token".into())
        })?;
        Ok((token, how))
    }
}

/// `sha256:<hex>` of some bytes.
pub fn sha256_digest(bytes: &[u8]) -> String {
    hex_digest(&Sha256::digest(bytes))
}

fn hex_digest(hash: &[u8]) -> String {
    let hex: String = hash.iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

async fn status_error(response: Response) -> FetchError {
    let status = response.status().as_u16();
    let header_delay = response
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(retry_after::parse_header);
    let body = response.text().await.unwrap_or_default();
    let first = serde_json::from_str::<ErrorBody>(&body)
        .ok()
        .and_then(|b| b.errors.into_iter().next());
    let (code, message) = match first {
        Some(e) => (Some(e.code).filter(|c| !c.is_empty()), e.message),
        None => (None, String::new()),
    };
    let retry_after = header_delay.or_else(|| retry_after::find_in_message(&message));
    FetchError::Status {
        status,
        code,
        message: message.chars().take(200).collect(),
        retry_after,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references() {
        let r = Reference::parse("public.ecr.aws/aquasecurity/trivy-db:2", "2").unwrap();
        assert_eq!(
            (r.registry.as_str(), r.repository.as_str(), r.tag.as_str()),
            ("public.ecr.aws", "aquasecurity/trivy-db", "2")
        );
        let r = Reference::parse("127.0.0.1:5000/trivy-db", "2").unwrap();
        assert_eq!(
            (r.registry.as_str(), r.tag.as_str()),
            ("127.0.0.1:5000", "2")
        );
        assert!(r.is_loopback());
        assert_eq!(r.to_string(), "127.0.0.1:5000/trivy-db:2");
        let r = Reference::parse("localhost/x@sha256:abc", "1").unwrap();
        assert_eq!(r.tag, "sha256:abc");
        assert!(r.is_loopback());
        assert!(
            !Reference::parse("ghcr.io/aquasecurity/trivy-db:2", "2")
                .unwrap()
                .is_loopback()
        );
        assert_eq!(
            Reference::parse("aquasec/trivy-db", "2").unwrap().registry,
            "index.docker.io"
        );
        assert!(Reference::parse("https://x/y", "2").is_err());
    }

    #[test]
    fn challenges() {
        let mut headers = HeaderMap::new();
        headers.insert(
            WWW_AUTHENTICATE,
            r#"Bearer realm="https://ghcr.io/token",service="ghcr.io",scope="repository:aquasecurity/trivy-db:pull""#.parse().unwrap(),
        );
        assert_eq!(
            parse_challenge(&headers),
            Some(Challenge::Bearer {
                realm: "https://ghcr.io/token".into(),
                service: Some("ghcr.io".into()),
                scope: Some("repository:aquasecurity/trivy-db:pull".into()),
            })
        );
        headers.insert(WWW_AUTHENTICATE, r#"Basic realm="r""#.parse().unwrap());
        assert_eq!(parse_challenge(&headers), Some(Challenge::Basic));
    }

    #[test]
    fn causes_from_statuses() {
        let status = |status, code: Option<&str>| FetchError::Status {
            status,
            code: code.map(str::to_owned),
            message: String::new(),
            retry_after: Some(Duration::from_secs(2)),
        };
        assert_eq!(
            status(429, None).cause(),
            Cause::RateLimited {
                retry_after: Some(Duration::from_secs(2))
            }
        );
        assert_eq!(
            status(404, Some("BLOB_UNKNOWN")).cause(),
            Cause::BlobUnknown
        );
        assert_eq!(
            status(404, Some("MANIFEST_UNKNOWN")).cause(),
            Cause::NotFound
        );
        assert_eq!(status(403, None).cause(), Cause::Unauthorized);
        assert_eq!(status(502, None).cause(), Cause::ServerError(Some(502)));
        assert!(!status(418, None).cause().is_retryable());
    }
}
