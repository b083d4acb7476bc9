//! The scene the end-to-end suites play in: one real registry holding the fixture's DBs and
//! images under the public mirrors' repository names, any number of mirrors (fault proxies) in
//! front of it, and the images served through a proxy of their own, so that image pulls are
//! logged apart from DB pulls ("no scan was attempted" = no image manifest request).

use crate::rig::image::Image;
use crate::rig::java_db;
use crate::rig::proxy::{FaultProxy, Recorded};
use crate::rig::registry::Registry;
use crate::rig::trivy_db::{self, DbSpec};
use std::sync::OnceLock;

/// The vulnerability DB's repository on every rig mirror, as on ghcr.io and ECR Public.
pub const DB_REPO: &str = "aquasecurity/trivy-db:2";
/// The Java DB's repository on every rig mirror.
pub const JAVA_DB_REPO: &str = "aquasecurity/trivy-java-db:1";
/// Path fragment of every vulnerability DB request (manifests and blobs), for proxy rules.
pub const DB_PATH: &str = "/trivy-db/";
/// Path fragment of every Java DB request.
pub const JAVA_DB_PATH: &str = "/trivy-java-db/";
/// The Alpine image, and the same image with the JAR layer.
pub const APP: &str = "app:latest";
pub const APP_WITH_JAR: &str = "app:jar";

/// A registry with both DBs and both images, and the proxy the images are pulled through.
pub struct Scene {
    pub registry: Registry,
    /// Serves the images (and could serve anything else); its log shows whether trivy scanned.
    pub images: FaultProxy,
}

impl Scene {
    /// Starts a registry and pushes `aquasecurity/trivy-db:2`, `aquasecurity/trivy-java-db:1`
    /// (both fresh), `app:latest` and `app:jar`.
    pub fn start() -> Scene {
        let registry = Registry::start();
        let client = registry.client();
        client.push_trivy_db("aquasecurity/trivy-db", "2", db_artifact());
        client.push_java_db("aquasecurity/trivy-java-db", "1", java_db_artifact());
        Image::alpine().push(&client, "app", "latest");
        Image::alpine_with_jar().push(&client, "app", "jar");
        let images = FaultProxy::start(registry.addr());
        Scene { registry, images }
    }

    /// A new mirror: a fault proxy in front of the registry, passing everything through until
    /// rules are added.
    pub fn mirror(&self) -> FaultProxy {
        FaultProxy::start(self.registry.addr())
    }

    /// `127.0.0.1:PORT/app:latest` through the image proxy.
    pub fn image(&self) -> String {
        format!("{}/{APP}", self.images.host_port())
    }

    /// `127.0.0.1:PORT/app:jar` through the image proxy.
    pub fn jar_image(&self) -> String {
        format!("{}/{APP_WITH_JAR}", self.images.host_port())
    }

    /// The image manifest requests the image proxy saw: empty when trivy never got to scan.
    pub fn image_manifest_requests(&self) -> Vec<Recorded> {
        self.images.requests_to("/app/manifests/")
    }
}

/// `<mirror>/aquasecurity/trivy-db:2`
pub fn db_repo(mirror: &FaultProxy) -> String {
    format!("{}/{DB_REPO}", mirror.host_port())
}

/// `<mirror>/aquasecurity/trivy-java-db:1`
pub fn java_db_repo(mirror: &FaultProxy) -> String {
    format!("{}/{JAVA_DB_REPO}", mirror.host_port())
}

/// The fixture's `db.tar.gz`, built once per test binary (a few hundred ms in debug builds).
pub fn db_artifact() -> &'static [u8] {
    static DB: OnceLock<Vec<u8>> = OnceLock::new();
    DB.get_or_init(|| trivy_db::db_tar_gz(&DbSpec::fresh()))
}

/// The fixture's `javadb.tar.gz`, built once per test binary.
pub fn java_db_artifact() -> &'static [u8] {
    static DB: OnceLock<Vec<u8>> = OnceLock::new();
    DB.get_or_init(|| java_db::javadb_tar_gz(&DbSpec::fresh()))
}
