//! Builds the minimal Alpine 3.19 image the rig scans (an apk database listing the fixture's
//! vulnerable packages), optionally with a JAR layer, and ships it both ways trivy takes images:
//! pushed to a registry, and as a `docker save` archive for `trivy image --input`.

use crate::rig::oci::{self, Descriptor};
use crate::rig::tarball::{self, Entry, sha256_digest};
use serde_json::json;
use std::path::Path;

pub const ALPINE_RELEASE: &str = "3.19.1";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";

/// One installed apk package.
#[derive(Debug, Clone, Copy)]
pub struct Package {
    pub name: &'static str,
    pub version: &'static str,
    /// The source package (`o:`), which trivy looks advisories up by.
    pub origin: &'static str,
}

/// The packages in the image's `lib/apk/db/installed`.
pub const PACKAGES: &[Package] = &[
    Package {
        name: "musl",
        version: "1.2.4_git20230717-r4",
        origin: "musl",
    },
    Package {
        name: "busybox",
        version: "1.36.1-r15",
        origin: "busybox",
    },
    Package {
        name: "alpine-baselayout",
        version: "3.4.3-r2",
        origin: "alpine-baselayout",
    },
    Package {
        name: "libcrypto3",
        version: "3.1.4-r5",
        origin: "openssl",
    },
    Package {
        name: "zlib",
        version: "1.3.1-r0",
        origin: "zlib",
    },
];

/// One layer, kept both uncompressed (docker archive, diff ID) and gzipped (registry).
pub struct Layer {
    pub tar: Vec<u8>,
    pub gz: Vec<u8>,
}

impl Layer {
    fn new(tar: Vec<u8>) -> Layer {
        let gz = tarball::gzip(&tar);
        Layer { tar, gz }
    }

    pub fn diff_id(&self) -> String {
        sha256_digest(&self.tar)
    }
}

/// A built image: its layers and config blob.
pub struct Image {
    pub layers: Vec<Layer>,
    pub config: Vec<u8>,
}

impl Image {
    /// The single-layer Alpine 3.19 image.
    pub fn alpine() -> Image {
        Image::build(vec![Layer::new(alpine_rootfs())])
    }

    /// The Alpine image plus a second layer holding [`crate::rig::java_db::JAR`].
    pub fn alpine_with_jar() -> Image {
        Image::build(vec![Layer::new(alpine_rootfs()), Layer::new(jar_layer())])
    }

    fn build(layers: Vec<Layer>) -> Image {
        let diff_ids: Vec<String> = layers.iter().map(Layer::diff_id).collect();
        let history: Vec<_> = layers
            .iter()
            .map(|_| json!({"created": "2024-01-01T00:00:00Z", "created_by": "trivy-ecr test rig"}))
            .collect();
        let config = json!({
            "architecture": "amd64",
            "os": "linux",
            "created": "2024-01-01T00:00:00Z",
            "config": {
                "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
                "Cmd": ["/bin/sh"],
            },
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
            "history": history,
        });
        Image {
            layers,
            config: serde_json::to_vec(&config).expect("config json"),
        }
    }

    /// Pushes the image as `repo:tag` (OCI manifest, gzipped layers); returns the manifest digest.
    pub fn push(&self, client: &oci::Client, repo: &str, tag: &str) -> String {
        let config = Descriptor {
            media_type: OCI_CONFIG.into(),
            digest: client.push_blob(repo, &self.config),
            size: self.config.len() as u64,
        };
        let layers: Vec<_> = self
            .layers
            .iter()
            .map(|l| {
                Descriptor {
                    media_type: OCI_LAYER_GZIP.into(),
                    digest: client.push_blob(repo, &l.gz),
                    size: l.gz.len() as u64,
                }
                .to_json()
            })
            .collect();
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": oci::OCI_MANIFEST,
            "config": config.to_json(),
            "layers": layers,
        });
        let body = serde_json::to_vec(&manifest).expect("manifest json");
        client.push_manifest(repo, tag, oci::OCI_MANIFEST, &body)
    }

    /// Writes a `docker save` archive (manifest.json, config, uncompressed layer tars) tagged
    /// `repo_tag` (e.g. `app:latest`) at `path`.
    pub fn write_docker_archive(&self, path: &Path, repo_tag: &str) {
        let config_name = format!("{}.json", &sha256_digest(&self.config)[7..]);
        let layer_names: Vec<String> = self
            .layers
            .iter()
            .map(|l| format!("{}/layer.tar", &l.diff_id()[7..]))
            .collect();
        let manifest = json!([{
            "Config": config_name,
            "RepoTags": [repo_tag],
            "Layers": layer_names,
        }]);
        let manifest = serde_json::to_vec(&manifest).expect("manifest json");
        let mut entries = vec![
            Entry::file("manifest.json", &manifest),
            Entry::file(&config_name, &self.config),
        ];
        for (name, layer) in layer_names.iter().zip(&self.layers) {
            entries.push(Entry::file(name, &layer.tar));
        }
        std::fs::write(path, tarball::tar(&entries))
            .unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    }
}

/// `lib/apk/db/installed` for [`PACKAGES`].
pub fn apk_installed() -> String {
    PACKAGES
        .iter()
        .map(|p| {
            format!(
                "C:Q1rigfixture{name}=\nP:{name}\nV:{version}\nA:x86_64\nS:1000\nI:2000\n\
                 T:{name} (trivy-ecr rig fixture)\nU:https://alpinelinux.org\nL:MIT\n\
                 o:{origin}\nm:rig\nt:1704067200\n\n",
                name = p.name,
                version = p.version,
                origin = p.origin,
            )
        })
        .collect()
}

fn alpine_rootfs() -> Vec<u8> {
    let os_release = format!(
        "NAME=\"Alpine Linux\"\nID=alpine\nVERSION_ID={ALPINE_RELEASE}\n\
         PRETTY_NAME=\"Alpine Linux v3.19\"\nHOME_URL=\"https://alpinelinux.org/\"\n"
    );
    let alpine_release = format!("{ALPINE_RELEASE}\n");
    let installed = apk_installed();
    tarball::tar(&[
        Entry::Dir("etc/"),
        Entry::file("etc/os-release", os_release.as_bytes()),
        Entry::file("etc/alpine-release", alpine_release.as_bytes()),
        Entry::Dir("lib/"),
        Entry::Dir("lib/apk/"),
        Entry::Dir("lib/apk/db/"),
        Entry::file("lib/apk/db/installed", installed.as_bytes()),
    ])
}

fn jar_layer() -> Vec<u8> {
    let jar = crate::rig::java_db::jar_bytes();
    tarball::tar(&[
        Entry::Dir("opt/"),
        Entry::Dir("opt/app/"),
        Entry::file(crate::rig::java_db::JAR.path_in_image, &jar),
    ])
}
