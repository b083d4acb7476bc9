//! Synthesises trivy's Java DB (`trivy-java.db`, the SQLite index trivy-java-db publishes,
//! schema 1) and the JAR it identifies, so a scan makes trivy fetch the Java DB (`[javadb]`
//! lines) and depend on its content: the JAR carries no `pom.properties` and its file name has no
//! version, so trivy can only name it by looking its SHA-1 up in this DB.

use crate::rig::tarball::{self, Entry};
use crate::rig::trivy_db::{DbSpec, metadata_json};
use sha1::{Digest, Sha1};
use std::io::Write;
use std::path::Path;
use std::time::SystemTime;

/// The Java DB schema version trivy asks for (`trivy-java-db:1`, `"Version":1`).
pub const SCHEMA_VERSION: u32 = 1;

/// The Maven coordinates the Java DB gives the rig's JAR.
pub struct JarSpec {
    pub group_id: &'static str,
    pub artifact_id: &'static str,
    pub version: &'static str,
    /// Where the JAR sits in the image layer.
    pub path_in_image: &'static str,
}

pub const JAR: JarSpec = JarSpec {
    group_id: "com.example.rig",
    artifact_id: "rig-lib",
    version: "1.2.3",
    path_in_image: "opt/app/rig-lib.jar",
};

/// The JAR: a stored (uncompressed) zip with `META-INF/MANIFEST.MF` (no Maven coordinates) and
/// one class-like entry; byte-for-byte deterministic so its SHA-1 is stable.
pub fn jar_bytes() -> Vec<u8> {
    let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let options = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Stored)
        .last_modified_time(
            zip::DateTime::from_date_and_time(2024, 1, 1, 0, 0, 0).expect("zip date"),
        );
    zip.start_file("META-INF/MANIFEST.MF", options)
        .expect("zip entry");
    zip.write_all(b"Manifest-Version: 1.0\r\nCreated-By: trivy-ecr test rig\r\n\r\n")
        .expect("zip write");
    zip.start_file("com/example/rig/Lib.class", options)
        .expect("zip entry");
    zip.write_all(b"\xca\xfe\xba\xbe not a real class, only bytes for the rig's JAR")
        .expect("zip write");
    zip.finish().expect("zip finish").into_inner()
}

/// SHA-1 of [`jar_bytes`], the key trivy looks up in `indices.sha1`.
pub fn jar_sha1() -> [u8; 20] {
    Sha1::digest(jar_bytes()).into()
}

/// Writes `trivy-java.db` at `path` with the trivy-java-db tables and indexes, holding the
/// rig's one artifact.
pub fn write_sqlite(path: &Path) {
    let conn = rusqlite::Connection::open(path).expect("open sqlite");
    conn.execute_batch(
        "CREATE TABLE artifacts(id INTEGER PRIMARY KEY, group_id TEXT, artifact_id TEXT);
         CREATE TABLE indices(artifact_id INTEGER, version TEXT, sha1 BLOB, archive_type TEXT,
                              FOREIGN KEY (artifact_id) REFERENCES artifacts(id));
         CREATE UNIQUE INDEX artifacts_idx ON artifacts(artifact_id, group_id);
         CREATE INDEX indices_artifact_idx ON indices(artifact_id);
         CREATE UNIQUE INDEX indices_sha1_idx ON indices(sha1);",
    )
    .expect("create java db schema");
    conn.execute(
        "INSERT INTO artifacts(id, group_id, artifact_id) VALUES (1, ?1, ?2)",
        (JAR.group_id, JAR.artifact_id),
    )
    .expect("insert artifact");
    conn.execute(
        "INSERT INTO indices(artifact_id, version, sha1, archive_type) VALUES (1, ?1, ?2, 'jar')",
        (JAR.version, jar_sha1().as_slice()),
    )
    .expect("insert index");
}

/// `metadata.json` of the Java DB (`"Version":1`).
pub fn metadata(spec: &DbSpec) -> String {
    metadata_json(
        SCHEMA_VERSION,
        spec.updated_at,
        spec.next_update,
        spec.downloaded_at,
    )
}

/// The `javadb.tar.gz` layer: `trivy-java.db` + `metadata.json`.
pub fn javadb_tar_gz(spec: &DbSpec) -> Vec<u8> {
    let dir = tempfile::tempdir().expect("temp dir");
    let db_path = dir.path().join("trivy-java.db");
    write_sqlite(&db_path);
    let db = std::fs::read(&db_path).expect("read trivy-java.db");
    let meta = metadata(spec);
    tarball::gzip(&tarball::tar(&[
        Entry::file("trivy-java.db", &db),
        Entry::file("metadata.json", meta.as_bytes()),
    ]))
}

/// Installs the Java DB into a trivy cache dir (`<cache>/java-db/`), as downloaded at
/// `spec.downloaded_at` (now if `None`).
pub fn install_into_cache(cache_dir: &Path, spec: &DbSpec) {
    let dir = cache_dir.join("java-db");
    std::fs::create_dir_all(&dir).expect("mkdir cache/java-db");
    write_sqlite(&dir.join("trivy-java.db"));
    let meta = metadata_json(
        SCHEMA_VERSION,
        spec.updated_at,
        spec.next_update,
        Some(spec.downloaded_at.unwrap_or_else(SystemTime::now)),
    );
    std::fs::write(dir.join("metadata.json"), meta).expect("write metadata.json");
}
