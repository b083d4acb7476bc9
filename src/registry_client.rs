//! Speaks the distribution API to one registry at a time: pulls an OCI artifact (manifest, then
//! its blobs) with the docker token dance ghcr.io and public.ecr.aws require, and errors that
//! keep exactly what the retry policy needs: HTTP status, registry error code, `Retry-After`.
//!
//! Every request, pull or push, goes through [`RegistryClient::call`], which answers the
//! registry's auth challenge (Bearer token for the scope the request needs, or Basic) with
//! credentials from the docker config or the ones given for that registry, and remembers the
//! answer per repository and access. Uploads live in `registry_push.rs`.
//!
//! Written on reqwest rather than `oci-client` because that crate folds statuses and headers
//! into its own error type, and the retry policy must see `Retry-After` and the exact status.

use std::collections::HashMap;
use std::io::{self, Write};
use std::time::Duration;

use bytes::Bytes;
use reqwest::header::{ACCEPT, HeaderMap, HeaderName, WWW_AUTHENTICATE};
use reqwest::{Client, Method, Response, StatusCode};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::docker_config::{Credentials, DockerConfig, Secret};
use crate::failure::Cause;
use crate::retry_after;

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub(crate) const ACCEPT_MANIFESTS: &str = "application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json";
/// The largest manifest read.
const MAX_MANIFEST_BYTES: usize = 4 << 20;

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

pub(crate) fn transport_error(err: reqwest::Error) -> FetchError {
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

impl Timeouts {
    /// One limit for both (`TRIVY_ECR_HTTP_TIMEOUT`).
    pub fn uniform(limit: Duration) -> Timeouts {
        Timeouts {
            connect: limit,
            read: limit,
        }
    }
}

/// What a request needs the registry to allow: reading, or reading and writing. Tokens are asked
/// for with the matching scope (`repository:NAME:pull` or `repository:NAME:pull,push`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Access {
    Pull,
    Push,
}

impl Access {
    fn scope(self, repository: &str) -> String {
        match self {
            Access::Pull => format!("repository:{repository}:pull"),
            Access::Push => format!("repository:{repository}:pull,push"),
        }
    }
}

/// How requests to one repository are authorised once the registry has challenged.
#[derive(Debug, Clone)]
enum Authorization {
    Bearer(Secret),
    Basic(Credentials),
}

/// Where a request goes: a path under `/v2/<repository>/`, or a URL the registry handed out
/// (an upload `Location`, absolute or relative to the registry).
pub(crate) enum Target<'a> {
    Path(&'a str),
    Location(&'a str),
}

/// A request body. Bytes can be sent again after an auth challenge; a stream only once, so
/// callers make an ordinary request to the same repository first.
pub(crate) enum Payload {
    Empty,
    Bytes(Bytes),
    Stream(Option<reqwest::Body>),
}

impl Payload {
    /// The body for one send; `None` when a stream was already sent.
    fn body(&mut self) -> Option<Option<reqwest::Body>> {
        match self {
            Payload::Empty => Some(None),
            Payload::Bytes(bytes) => Some(Some(reqwest::Body::from(bytes.clone()))),
            Payload::Stream(stream) => stream.take().map(Some),
        }
    }
}

/// One request to a repository.
pub(crate) struct Call<'a> {
    pub method: Method,
    pub target: Target<'a>,
    pub headers: Vec<(HeaderName, String)>,
    pub payload: Payload,
}

impl<'a> Call<'a> {
    pub fn new(method: Method, target: Target<'a>) -> Call<'a> {
        Call {
            method,
            target,
            headers: Vec::new(),
            payload: Payload::Empty,
        }
    }

    pub fn header(mut self, name: HeaderName, value: impl Into<String>) -> Call<'a> {
        self.headers.push((name, value.into()));
        self
    }

    pub fn payload(mut self, payload: Payload) -> Call<'a> {
        self.payload = payload;
        self
    }
}

/// A manifest exactly as the registry sent it, with the digest of those bytes.
#[derive(Debug, Clone)]
pub struct RawManifest {
    pub bytes: Bytes,
    /// The `Content-Type` the registry gave, if any.
    pub content_type: Option<String>,
    /// `sha256:` of `bytes`, checked against the registry's `Docker-Content-Digest`.
    pub digest: String,
}

impl RawManifest {
    pub fn parse(&self) -> Result<Manifest, FetchError> {
        let mut manifest: Manifest = serde_json::from_slice(&self.bytes)
            .map_err(|e| FetchError::BadArtifact(format!("unreadable manifest: {e}")))?;
        manifest.digest = self.digest.clone();
        Ok(manifest)
    }

    /// The media type to push it with: the manifest's own, else what the registry said.
    pub fn media_type(&self, manifest: &Manifest) -> String {
        manifest
            .media_type
            .clone()
            .or_else(|| self.content_type.clone())
            .unwrap_or_else(|| OCI_MANIFEST.to_string())
    }
}

impl Manifest {
    /// The single layer of a trivy artifact of `layer_type`, checked the way trivy checks it.
    pub fn trivy_layer(
        &self,
        layer_type: &str,
        max_layer_size: u64,
    ) -> Result<Descriptor, FetchError> {
        if let Some(media_type) = self.media_type.as_deref()
            && media_type != OCI_MANIFEST
        {
            return Err(FetchError::BadArtifact(format!(
                "manifest media type {media_type}"
            )));
        }
        let layer = match self.layers.as_slice() {
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
        for blob in [&self.config, &layer] {
            if !is_sha256_digest(&blob.digest) {
                return Err(FetchError::BadArtifact(format!(
                    "unsupported digest {}",
                    blob.digest
                )));
            }
        }
        Ok(layer)
    }
}

fn is_sha256_digest(digest: &str) -> bool {
    digest
        .strip_prefix("sha256:")
        .is_some_and(|hex| hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// `sha256:<hex>` of `bytes`.
pub fn sha256_digest(bytes: &[u8]) -> String {
    hex_digest(Sha256::digest(bytes).as_slice())
}

fn hex_digest(sum: &[u8]) -> String {
    let hex: String = sum.iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

/// Checks a blob's size and sha256 while it streams past.
pub(crate) struct BlobCheck {
    hasher: Sha256,
    received: u64,
    size: u64,
    digest: String,
}

impl BlobCheck {
    pub fn new(blob: &Descriptor) -> BlobCheck {
        BlobCheck {
            hasher: Sha256::new(),
            received: 0,
            size: blob.size,
            digest: blob.digest.clone(),
        }
    }

    /// Bytes so far.
    pub fn received(&self) -> u64 {
        self.received
    }

    pub fn update(&mut self, chunk: &[u8]) -> Result<(), FetchError> {
        self.received += chunk.len() as u64;
        if self.received > self.size {
            return Err(FetchError::BadArtifact(format!(
                "blob is larger than the manifest's {} bytes",
                self.size
            )));
        }
        self.hasher.update(chunk);
        Ok(())
    }

    /// Called at the end of the body: all bytes there, digest right.
    pub fn finish(self) -> Result<(), FetchError> {
        if self.received < self.size {
            return Err(FetchError::Transport(
                format!(
                    "connection closed after {} of {} bytes",
                    self.received, self.size
                ),
                TransportKind::Reset,
            ));
        }
        let actual = hex_digest(self.hasher.finalize().as_slice());
        if actual != self.digest {
            return Err(FetchError::DigestMismatch {
                expected: self.digest,
                actual,
            });
        }
        Ok(())
    }
}

/// A client for one run: HTTP connections, authorisations per repository, the docker config
/// and credentials given for particular registries.
pub struct RegistryClient {
    http: Client,
    /// For streamed uploads: without reqwest's read timeout, which would count the whole upload
    /// as waiting for the answer. Uploads watch their own progress instead.
    upload_http: Client,
    timeouts: Timeouts,
    credentials: DockerConfig,
    /// Credentials given for a registry (`TRIVY_ECR_REGISTRY_USERNAME/PASSWORD`), used before
    /// the docker config's.
    given: HashMap<String, Credentials>,
    /// The docker config's answer per registry (credential helpers are slow processes).
    found: HashMap<String, Option<Credentials>>,
    authorizations: HashMap<(String, Access), Authorization>,
    /// The scheme each registry answered on.
    schemes: HashMap<String, &'static str>,
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
        let builder = || {
            Client::builder()
                .connect_timeout(timeouts.connect)
                .user_agent(concat!("trivy-ecr/", env!("CARGO_PKG_VERSION")))
                .tls_danger_accept_invalid_certs(insecure)
        };
        let http = builder()
            .read_timeout(timeouts.read)
            .build()
            .map_err(|e| format!("cannot set up HTTPS: {e}"))?;
        let upload_http = builder()
            .build()
            .map_err(|e| format!("cannot set up HTTPS: {e}"))?;
        Ok(RegistryClient {
            http,
            upload_http,
            timeouts,
            credentials,
            given: HashMap::new(),
            found: HashMap::new(),
            authorizations: HashMap::new(),
            schemes: HashMap::new(),
            insecure,
        })
    }

    pub fn timeouts(&self) -> Timeouts {
        self.timeouts
    }

    /// Uses `credentials` for `registry` (`host[:port]`) instead of the docker config's.
    pub fn use_credentials(&mut self, registry: &str, credentials: Credentials) {
        self.given.insert(registry.to_string(), credentials);
    }

    /// Where the credentials for `registry` come from, for error messages (never the secret).
    pub fn credential_source(&self, registry: &str) -> String {
        if self.given.contains_key(registry) {
            return "TRIVY_ECR_REGISTRY_USERNAME/TRIVY_ECR_REGISTRY_PASSWORD".to_string();
        }
        self.credentials
            .describe(registry)
            .unwrap_or_else(|| "no credentials (none in the docker config)".to_string())
    }

    fn credentials_for(&mut self, registry: &str) -> Option<Credentials> {
        if let Some(given) = self.given.get(registry) {
            return Some(given.clone());
        }
        if let Some(found) = self.found.get(registry) {
            return found.clone();
        }
        let found = self.credentials.credentials(registry);
        self.found.insert(registry.to_string(), found.clone());
        found
    }

    /// Plain HTTP for loopback registries (as trivy); with `--insecure`, HTTPS without
    /// certificate checks first, then plain HTTP.
    fn schemes(&self, reference: &Reference) -> &'static [&'static str] {
        if let Some(&known) = self.schemes.get(&reference.registry) {
            return match known {
                "http" => &["http"],
                _ => &["https"],
            };
        }
        if reference.is_loopback() {
            &["http"]
        } else if self.insecure {
            &["https", "http"]
        } else {
            &["https"]
        }
    }

    /// The URLs to try for `target`, in order.
    fn urls(&self, reference: &Reference, target: &Target<'_>) -> Vec<String> {
        if let Target::Location(location) = target
            && (location.starts_with("http://") || location.starts_with("https://"))
        {
            return vec![location.to_string()];
        }
        self.schemes(reference)
            .iter()
            .map(|scheme| match target {
                Target::Path(path) => format!(
                    "{scheme}://{}/v2/{}/{path}",
                    reference.registry, reference.repository
                ),
                Target::Location(location) => format!(
                    "{scheme}://{}/{}",
                    reference.registry,
                    location.trim_start_matches('/')
                ),
            })
            .collect()
    }

    /// The absolute URL of an upload location the registry handed out.
    pub(crate) fn location_url(&self, reference: &Reference, location: &str) -> String {
        self.urls(reference, &Target::Location(location))
            .into_iter()
            .next()
            .unwrap_or_else(|| location.to_string())
    }

    /// Sends `call` to `reference`'s repository, answering one auth challenge (a token with the
    /// scope `access` needs, or Basic credentials), and turns error statuses into
    /// [`FetchError::Status`].
    pub(crate) async fn call(
        &mut self,
        reference: &Reference,
        access: Access,
        mut call: Call<'_>,
    ) -> Result<Response, FetchError> {
        let key = (
            format!("{}/{}", reference.registry, reference.repository),
            access,
        );
        let known = self.authorizations.get(&key).cloned().or_else(|| {
            // A push token also allows pulling.
            (access == Access::Pull)
                .then(|| {
                    self.authorizations
                        .get(&(key.0.clone(), Access::Push))
                        .cloned()
                })
                .flatten()
        });
        let mut last_error = None;
        let mut answered = None;
        for url in self.urls(reference, &call.target) {
            let Some(body) = call.payload.body() else {
                break;
            };
            match self.send(&url, &call, known.as_ref(), body).await {
                Ok(response) => {
                    if let Ok(parsed) = reqwest::Url::parse(&url) {
                        let scheme = if parsed.scheme() == "http" {
                            "http"
                        } else {
                            "https"
                        };
                        self.schemes.insert(reference.registry.clone(), scheme);
                    }
                    answered = Some((url, response));
                    break;
                }
                Err(err) => last_error = Some(err),
            }
        }
        let Some((url, mut response)) = answered else {
            return Err(last_error.unwrap_or_else(|| {
                FetchError::Transport("nothing was sent".into(), TransportKind::Other)
            }));
        };
        if response.status() == StatusCode::UNAUTHORIZED
            && let Some(authorization) = self
                .authorize(reference, access, response.headers())
                .await?
        {
            self.authorizations.insert(key, authorization.clone());
            // A stream already sent cannot be sent again: its 401 stands.
            if let Some(body) = call.payload.body() {
                response = self.send(&url, &call, Some(&authorization), body).await?;
            }
        }
        if response.status().is_success() {
            Ok(response)
        } else {
            Err(status_error(response).await)
        }
    }

    async fn send(
        &self,
        url: &str,
        call: &Call<'_>,
        authorization: Option<&Authorization>,
        body: Option<reqwest::Body>,
    ) -> Result<Response, FetchError> {
        let client = if matches!(call.payload, Payload::Stream(_)) {
            &self.upload_http
        } else {
            &self.http
        };
        let mut request = client.request(call.method.clone(), url);
        for (name, value) in &call.headers {
            request = request.header(name, value);
        }
        match authorization {
            Some(Authorization::Bearer(token)) => request = request.bearer_auth(token.expose()),
            Some(Authorization::Basic(creds)) => {
                request = request.basic_auth(&creds.username, Some(creds.secret.expose()))
            }
            None => {}
        }
        if let Some(body) = body {
            request = request.body(body);
        }
        request.send().await.map_err(transport_error)
    }

    /// Answers a 401's challenge: a token for the scope `access` needs (with the registry's
    /// credentials if there are any), or Basic credentials. `None` when there is nothing to
    /// answer with.
    async fn authorize(
        &mut self,
        reference: &Reference,
        access: Access,
        headers: &HeaderMap,
    ) -> Result<Option<Authorization>, FetchError> {
        let creds = self.credentials_for(&reference.registry);
        match parse_challenge(headers) {
            Some(Challenge::Bearer {
                realm,
                service,
                scope,
            }) => {
                let scope = match (access, scope) {
                    (Access::Pull, Some(scope)) => scope,
                    _ => access.scope(&reference.repository),
                };
                let token = self
                    .token(&realm, service.as_deref(), &scope, creds.as_ref(), access)
                    .await?;
                Ok(Some(Authorization::Bearer(Secret::new(token))))
            }
            Some(Challenge::Basic) => Ok(creds.map(Authorization::Basic)),
            None => Ok(None),
        }
    }

    /// The docker token endpoint, with credentials if there are any. For pulls, refused
    /// credentials are followed by an anonymous request (what trivy does); for pushes the
    /// refusal stands, since an anonymous token cannot push.
    async fn token(
        &self,
        realm: &str,
        service: Option<&str>,
        scope: &str,
        creds: Option<&Credentials>,
        access: Access,
    ) -> Result<String, FetchError> {
        let (token, credentials_refused) = self
            .exchange_token(realm, service, scope, creds, access == Access::Pull)
            .await?;
        if credentials_refused {
            tracing::warn!(
                realm,
                "the token service refused the docker config's credentials; trying anonymously"
            );
        }
        Ok(token)
    }

    /// The docker token endpoint, asked with `creds` if any; when it refuses them and
    /// `anonymous_fallback` allows, asked again anonymously (what trivy does). Returns the
    /// token and whether the credentials were refused.
    async fn exchange_token(
        &self,
        realm: &str,
        service: Option<&str>,
        scope: &str,
        creds: Option<&Credentials>,
        anonymous_fallback: bool,
    ) -> Result<(String, bool), FetchError> {
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
        let refused = creds.is_some() && response.status() == StatusCode::UNAUTHORIZED;
        if refused && anonymous_fallback {
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
        Ok((token, refused))
    }

    /// The manifest `reference` names, byte for byte, its digest checked against the
    /// registry's `Docker-Content-Digest` and against `reference` itself when that is a digest.
    pub async fn manifest_bytes(
        &mut self,
        reference: &Reference,
        access: Access,
    ) -> Result<RawManifest, FetchError> {
        let path = format!("manifests/{}", reference.tag);
        let call = Call::new(Method::GET, Target::Path(&path)).header(ACCEPT, ACCEPT_MANIFESTS);
        let mut response = self.call(reference, access, call).await?;
        let content_type = header_text(response.headers(), reqwest::header::CONTENT_TYPE);
        let announced = header_text(response.headers(), DOCKER_CONTENT_DIGEST);
        let mut bytes = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(transport_error)? {
            bytes.extend_from_slice(&chunk);
            if bytes.len() > MAX_MANIFEST_BYTES {
                return Err(FetchError::BadArtifact("manifest larger than 4 MiB".into()));
            }
        }
        let digest = sha256_digest(&bytes);
        let expected = announced.filter(|d| d.starts_with("sha256:")).or_else(|| {
            reference
                .tag
                .starts_with("sha256:")
                .then(|| reference.tag.clone())
        });
        if let Some(expected) = expected
            && expected != digest
        {
            return Err(FetchError::DigestMismatch {
                expected,
                actual: digest,
            });
        }
        Ok(RawManifest {
            bytes: Bytes::from(bytes),
            content_type,
            digest,
        })
    }

    /// Fetches and checks the manifest of a trivy DB artifact with one layer of `layer_type`.
    pub async fn manifest(
        &mut self,
        reference: &Reference,
        layer_type: &str,
        max_layer_size: u64,
    ) -> Result<(Manifest, Descriptor), FetchError> {
        let manifest = self
            .manifest_bytes(reference, Access::Pull)
            .await?
            .parse()?;
        let layer = manifest.trivy_layer(layer_type, max_layer_size)?;
        Ok((manifest, layer))
    }

    /// Starts the download of `blob`: the response whose body is the blob, its length checked
    /// against the descriptor when the registry gives one.
    pub async fn blob_response(
        &mut self,
        reference: &Reference,
        blob: &Descriptor,
    ) -> Result<Response, FetchError> {
        let path = format!("blobs/{}", blob.digest);
        let call = Call::new(Method::GET, Target::Path(&path));
        let response = self.call(reference, Access::Pull, call).await?;
        if let Some(length) = response.content_length()
            && length != blob.size
        {
            return Err(FetchError::BadArtifact(format!(
                "blob is {length} bytes, the manifest says {}",
                blob.size
            )));
        }
        Ok(response)
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
        let mut response = self.blob_response(reference, layer).await?;
        let mut check = BlobCheck::new(layer);
        while let Some(chunk) = response.chunk().await.map_err(transport_error)? {
            check.update(&chunk)?;
            sink.write_all(&chunk)?;
            progress(check.received());
        }
        check.finish()
    }
}

pub(crate) const DOCKER_CONTENT_DIGEST: &str = "docker-content-digest";

pub(crate) fn header_text(
    headers: &HeaderMap,
    name: impl reqwest::header::AsHeaderName,
) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
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
        for url in self.urls(reference, &Target::Path(&path)) {
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
        let (token, refused) = self
            .exchange_token(realm, service, scope, creds, true)
            .await?;
        let how = match (creds.is_some(), refused) {
            (_, true) => ProbeAuth::CredentialsRefused,
            (true, false) => ProbeAuth::CredentialsToken,
            (false, false) => ProbeAuth::AnonymousToken,
        };
        Ok((token, how))
    }
}

pub(crate) async fn status_error(response: Response) -> FetchError {
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
    fn upload_locations_resolve_against_the_registry() {
        let client = RegistryClient::new(
            DockerConfig::default(),
            Timeouts::uniform(Duration::from_secs(30)),
            true,
        )
        .expect("client");
        let loopback = Reference::parse("127.0.0.1:5000/org/trivy-db:2", "2").unwrap();
        assert_eq!(
            client.location_url(&loopback, "/v2/org/trivy-db/blobs/uploads/u?_state=s"),
            "http://127.0.0.1:5000/v2/org/trivy-db/blobs/uploads/u?_state=s"
        );
        let remote = Reference::parse("r.example/org/trivy-db:2", "2").unwrap();
        assert_eq!(
            client.urls(&remote, &Target::Location("https://up.example/u")),
            ["https://up.example/u"]
        );
        assert_eq!(
            client.urls(&remote, &Target::Path("blobs/uploads/")),
            [
                "https://r.example/v2/org/trivy-db/blobs/uploads/",
                "http://r.example/v2/org/trivy-db/blobs/uploads/"
            ]
        );
    }

    #[test]
    fn push_asks_for_pull_and_push() {
        assert_eq!(
            Access::Pull.scope("org/trivy-db"),
            "repository:org/trivy-db:pull"
        );
        assert_eq!(
            Access::Push.scope("org/trivy-db"),
            "repository:org/trivy-db:pull,push"
        );
    }

    fn descriptor(media_type: &str, body: &[u8]) -> Descriptor {
        Descriptor {
            media_type: media_type.into(),
            digest: sha256_digest(body),
            size: body.len() as u64,
            annotations: HashMap::new(),
        }
    }

    #[test]
    fn blob_checks_catch_short_long_and_damaged_bodies() {
        let blob = descriptor("x", b"hello world");
        let mut check = BlobCheck::new(&blob);
        check.update(b"hello ").unwrap();
        check.update(b"world").unwrap();
        assert_eq!(check.received(), 11);
        check.finish().unwrap();

        let mut short = BlobCheck::new(&blob);
        short.update(b"hello").unwrap();
        assert!(matches!(
            short.finish(),
            Err(FetchError::Transport(_, TransportKind::Reset))
        ));
        let mut long = BlobCheck::new(&blob);
        assert!(long.update(b"hello world!").is_err());
        let mut damaged = BlobCheck::new(&blob);
        damaged.update(b"hello World").unwrap();
        assert!(matches!(
            damaged.finish(),
            Err(FetchError::DigestMismatch { .. })
        ));
    }

    #[test]
    fn trivy_artifacts_are_checked_like_trivy_does() {
        let layer_type = "application/vnd.aquasec.trivy.db.layer.v1.tar+gzip";
        let manifest = |layers: Vec<Descriptor>, media_type: Option<&str>| Manifest {
            media_type: media_type.map(str::to_owned),
            artifact_type: None,
            config: descriptor("application/vnd.aquasec.trivy.config.v1+json", b"{}"),
            layers,
            annotations: HashMap::new(),
            digest: String::new(),
        };
        let layer = descriptor(layer_type, b"db");
        let good = manifest(vec![layer.clone()], Some(OCI_MANIFEST));
        assert_eq!(
            good.trivy_layer(layer_type, 10).unwrap().digest,
            layer.digest
        );
        assert!(good.trivy_layer(layer_type, 1).is_err(), "size limit");
        assert!(good.trivy_layer("other", 10).is_err(), "layer type");
        assert!(
            manifest(vec![layer.clone(), layer.clone()], None)
                .trivy_layer(layer_type, 10)
                .is_err()
        );
        assert!(
            manifest(
                vec![layer.clone()],
                Some("application/vnd.oci.image.index.v1+json")
            )
            .trivy_layer(layer_type, 10)
            .is_err()
        );
        let mut odd = layer;
        odd.digest = "sha512:abcd".into();
        assert!(
            manifest(vec![odd], None)
                .trivy_layer(layer_type, 10)
                .is_err()
        );
    }

    #[test]
    fn manifests_are_pushed_with_their_own_media_type() {
        let raw = RawManifest {
            bytes: Bytes::from_static(b"{}"),
            content_type: Some("application/vnd.docker.distribution.manifest.v2+json".into()),
            digest: sha256_digest(b"{}"),
        };
        let mut manifest = Manifest {
            media_type: Some(OCI_MANIFEST.into()),
            artifact_type: None,
            config: descriptor("c", b"{}"),
            layers: Vec::new(),
            annotations: HashMap::new(),
            digest: String::new(),
        };
        assert_eq!(raw.media_type(&manifest), OCI_MANIFEST);
        manifest.media_type = None;
        assert_eq!(
            raw.media_type(&manifest),
            "application/vnd.docker.distribution.manifest.v2+json"
        );
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
