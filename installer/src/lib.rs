//! `rininstall`'s library: what happens at the site. Verification itself lives in `rin-bundle`
//! (one streaming pass) with the trust policy of `rin-signing`. `apply` runs the pipeline: the
//! node's steps (`node`: preflight, staging, K3s host files, the site registry, seeding, the
//! release record) and the cluster step (`cluster`: deploy, wait, record, status, rollback).

pub mod apply;
pub mod cluster;
pub mod error;
pub mod node;
pub mod release;
#[cfg(test)]
mod testing;

pub use error::{InstallError, Result};

/// Trusted public keys (`*.pub`) used when neither `--key` nor `--trusted-keys` is given.
pub const DEFAULT_TRUSTED_KEYS: &str = "/etc/rininstall/trusted-keys";
