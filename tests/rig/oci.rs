//! Pushes blobs and manifests to a registry over the distribution HTTP API (monolithic
//! POST + PUT uploads), and pushes trivy DB artifacts in exactly the shape trivy expects.
//!
//! The client speaks plain HTTP to loopback only; it follows no proxy from the environment.

use crate::rig::tarball::sha256_digest;
use serde_json::{Value, json};
use std::time::Duration;

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const TRIVY_CONFIG: &str = "application/vnd.aquasec.trivy.config.v1+json";
pub const TRIVY_DB_LAYER: &str = "application/vnd.aquasec.trivy.db.layer.v1.tar+gzip";
pub const TRIVY_JAVA_DB_LAYER: &str = "application/vnd.aquasec.trivy.javadb.layer.v1.tar+gzip";
pub const TITLE_ANNOTATION: &str = "org.opencontainers.image.title";

/// A content descriptor as it appears in a manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Descriptor {
    pub media_type: String,
    pub digest: String,
    pub size: u64,
}

impl Descriptor {
    pub fn to_json(&self) -> Value {
        json!({"mediaType": self.media_type, "digest": self.digest, "size": self.size})
    }
}

/// What a DB artifact push produced.
#[derive(Debug, Clone)]
pub struct PushedArtifact {
    /// `<repo>:<tag>` relative to the registry, e.g. `trivy-db:2`.
    pub reference: String,
    pub manifest_digest: String,
    pub config: Descriptor,
    pub layer: Descriptor,
}

/// A registry HTTP response, body read whole.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// A minimal distribution API client for one registry (`127.0.0.1:PORT`).
#[derive(Clone)]
pub struct Client {
    base: String,
    agent: ureq::Agent,
    /// `Authorization` header value sent with every request, if set.
    authorization: Option<String>,
}

impl Client {
    /// A client for the registry at `host_port` (plain HTTP).
    pub fn new(host_port: &str) -> Self {
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .proxy(None)
            .max_redirects(0)
            .timeout_global(Some(Duration::from_secs(120)))
            .build()
            .new_agent();
        Client {
            base: format!("http://{host_port}"),
            agent,
            authorization: None,
        }
    }

    /// The same client sending Basic credentials with every request.
    pub fn with_basic_auth(mut self, user: &str, password: &str) -> Self {
        use base64::Engine;
        let pair = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        self.authorization = Some(format!("Basic {pair}"));
        self
    }

    fn auth<B>(&self, request: ureq::RequestBuilder<B>) -> ureq::RequestBuilder<B> {
        match &self.authorization {
            Some(value) => request.header("Authorization", value),
            None => request,
        }
    }

    /// `http://127.0.0.1:PORT`
    pub fn base_url(&self) -> &str {
        &self.base
    }

    /// GET `path` (starting with `/`), body read whole (up to 1 GiB).
    pub fn get(&self, path: &str, accept: Option<&str>) -> Response {
        let mut req = self.auth(self.agent.get(format!("{}{path}", self.base)));
        if let Some(accept) = accept {
            req = req.header("Accept", accept);
        }
        let resp = req.call().unwrap_or_else(|e| panic!("GET {path}: {e}"));
        into_response(resp)
    }

    /// Uploads `data` as a blob of `repo` unless the registry already has it; returns its digest.
    pub fn push_blob(&self, repo: &str, data: &[u8]) -> String {
        let digest = sha256_digest(data);
        let head = self
            .auth(
                self.agent
                    .head(format!("{}/v2/{repo}/blobs/{digest}", self.base)),
            )
            .call()
            .unwrap_or_else(|e| panic!("HEAD blob {digest}: {e}"));
        if head.status() == 200 {
            return digest;
        }
        let start = self
            .auth(
                self.agent
                    .post(format!("{}/v2/{repo}/blobs/uploads/", self.base)),
            )
            .send_empty()
            .unwrap_or_else(|e| panic!("POST upload for {repo}: {e}"));
        let start = into_response(start);
        assert_eq!(start.status, 202, "start upload: {start:?}");
        let location = start
            .header("Location")
            .expect("upload Location")
            .to_owned();
        let mut url = if location.starts_with('/') {
            format!("{}{location}", self.base)
        } else {
            location
        };
        url.push(if url.contains('?') { '&' } else { '?' });
        url.push_str("digest=");
        url.push_str(&digest);
        let put = self
            .auth(self.agent.put(&url))
            .header("Content-Type", "application/octet-stream")
            .send(data)
            .unwrap_or_else(|e| panic!("PUT blob {digest}: {e}"));
        let put = into_response(put);
        assert_eq!(put.status, 201, "finish upload of {digest}: {put:?}");
        digest
    }

    /// PUTs a manifest under `reference` (tag or digest); returns the manifest's digest.
    pub fn push_manifest(
        &self,
        repo: &str,
        reference: &str,
        media_type: &str,
        body: &[u8],
    ) -> String {
        let resp = self
            .auth(
                self.agent
                    .put(format!("{}/v2/{repo}/manifests/{reference}", self.base)),
            )
            .header("Content-Type", media_type)
            .send(body)
            .unwrap_or_else(|e| panic!("PUT manifest {repo}:{reference}: {e}"));
        let resp = into_response(resp);
        assert_eq!(
            resp.status,
            201,
            "push manifest {repo}:{reference}: {resp:?} {}",
            String::from_utf8_lossy(&resp.body)
        );
        let digest = sha256_digest(body);
        if let Some(reported) = resp.header("Docker-Content-Digest") {
            assert_eq!(reported, digest, "registry digest of {repo}:{reference}");
        }
        digest
    }

    /// Pushes a trivy vulnerability DB artifact (`db.tar.gz`) as `repo:tag`.
    pub fn push_trivy_db(&self, repo: &str, tag: &str, db_tar_gz: &[u8]) -> PushedArtifact {
        self.push_db_artifact(repo, tag, TRIVY_DB_LAYER, "db.tar.gz", db_tar_gz)
    }

    /// Pushes a trivy Java DB artifact (`javadb.tar.gz`) as `repo:tag`.
    pub fn push_java_db(&self, repo: &str, tag: &str, javadb_tar_gz: &[u8]) -> PushedArtifact {
        self.push_db_artifact(
            repo,
            tag,
            TRIVY_JAVA_DB_LAYER,
            "javadb.tar.gz",
            javadb_tar_gz,
        )
    }

    /// Pushes a one-layer trivy artifact: OCI image manifest with `artifactType` and config media
    /// type `application/vnd.aquasec.trivy.config.v1+json` (config body `{}`), and one layer of
    /// `layer_media_type` annotated with `org.opencontainers.image.title: <title>`.
    pub fn push_db_artifact(
        &self,
        repo: &str,
        tag: &str,
        layer_media_type: &str,
        title: &str,
        layer: &[u8],
    ) -> PushedArtifact {
        let config_body = b"{}";
        let config = Descriptor {
            media_type: TRIVY_CONFIG.into(),
            digest: self.push_blob(repo, config_body),
            size: config_body.len() as u64,
        };
        let layer = Descriptor {
            media_type: layer_media_type.into(),
            digest: self.push_blob(repo, layer),
            size: layer.len() as u64,
        };
        let mut layer_json = layer.to_json();
        layer_json["annotations"] = json!({ TITLE_ANNOTATION: title });
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "artifactType": TRIVY_CONFIG,
            "config": config.to_json(),
            "layers": [layer_json],
        });
        let body = serde_json::to_vec(&manifest).expect("manifest json");
        let manifest_digest = self.push_manifest(repo, tag, OCI_MANIFEST, &body);
        PushedArtifact {
            reference: format!("{repo}:{tag}"),
            manifest_digest,
            config,
            layer,
        }
    }
}

fn into_response(mut resp: ureq::http::Response<ureq::Body>) -> Response {
    let status = resp.status().as_u16();
    let headers = resp
        .headers()
        .iter()
        .map(|(k, v)| (k.as_str().to_owned(), v.to_str().unwrap_or("").to_owned()))
        .collect();
    let body = resp
        .body_mut()
        .with_config()
        .limit(1 << 30)
        .read_to_vec()
        .unwrap_or_default();
    Response {
        status,
        headers,
        body,
    }
}
