//! Builds the tar / tar.gz blobs the rig needs (DB artifacts, image layers, `docker save`
//! archives) in memory, deterministically, and computes their digests.

use flate2::Compression;
use flate2::write::GzEncoder;
use sha2::{Digest, Sha256};
use std::io::Write;

/// A fixed mtime for every entry (2024-01-01T00:00:00Z), so equal content gives equal digests.
const MTIME: u64 = 1_704_067_200;

/// One entry of a tar archive.
pub enum Entry<'a> {
    Dir(&'a str),
    File {
        path: &'a str,
        data: &'a [u8],
        mode: u32,
    },
}

impl<'a> Entry<'a> {
    /// A regular file with mode 0644.
    pub fn file(path: &'a str, data: &'a [u8]) -> Self {
        Entry::File {
            path,
            data,
            mode: 0o644,
        }
    }
}

/// An uncompressed tar archive of `entries`, in order.
pub fn tar(entries: &[Entry<'_>]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for entry in entries {
        let mut header = tar::Header::new_gnu();
        header.set_mtime(MTIME);
        header.set_uid(0);
        header.set_gid(0);
        match entry {
            Entry::Dir(path) => {
                header.set_entry_type(tar::EntryType::Directory);
                header.set_mode(0o755);
                header.set_size(0);
                builder
                    .append_data(&mut header, path, std::io::empty())
                    .expect("tar dir");
            }
            Entry::File { path, data, mode } => {
                header.set_entry_type(tar::EntryType::Regular);
                header.set_mode(*mode);
                header.set_size(data.len() as u64);
                builder
                    .append_data(&mut header, path, *data)
                    .expect("tar file");
            }
        }
    }
    builder.into_inner().expect("tar finish")
}

/// Gzip `data` at the given level (`Compression::fast()` for big padded DBs).
pub fn gzip_with(data: &[u8], level: Compression) -> Vec<u8> {
    let mut enc = GzEncoder::new(Vec::with_capacity(data.len() / 2 + 64), level);
    enc.write_all(data).expect("gzip");
    enc.finish().expect("gzip finish")
}

/// Gzip `data` at the default level.
pub fn gzip(data: &[u8]) -> Vec<u8> {
    gzip_with(data, Compression::default())
}

/// `sha256:<hex>` of `data`, as OCI digests are written.
pub fn sha256_digest(data: &[u8]) -> String {
    format!("sha256:{}", hex(&Sha256::digest(data)))
}

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
