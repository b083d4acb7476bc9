//! End-to-end test rig: real trivy, a real OCI registry, synthetic trivy DBs and images, and a
//! fault-injecting proxy, all on loopback, so integration tests can prove trivy-ecr against real
//! parts without the internet. Use it from an integration test with `mod rig;`.
//!
//! Every piece cleans up after itself on `Drop` (processes are killed and reaped, temp dirs
//! removed) and every wait is bounded. See `tests/rig/README.md` for an overview.

// Each integration test binary compiles this module and uses only part of it.
#![allow(dead_code)]

pub mod image;
pub mod java_db;
pub mod oci;
pub mod proxy;
pub mod registry;
pub mod report;
pub mod run;
pub mod sandbox;
pub mod scan;
pub mod scene;
pub mod tarball;
pub mod tools;
pub mod trivy_db;
#[macro_use]
pub mod trivys;
