//! `rininstall`'s library: what happens at the site. Verification itself lives in `rin-bundle`
//! (one streaming pass) with the trust policy of `rin-signing`; `apply` runs the node's steps
//! (preflight, staging, K3s host files, the site registry, seeding, the release record).

pub mod apply;
pub mod deploy;
pub mod error;
pub mod health;
pub mod helmchart;
pub mod host;
pub mod manage;
pub mod objects;
pub mod placement;
pub mod preflight;
pub mod release;
pub mod rollout;
pub mod seed;
pub mod site_registry;
pub mod stack;
pub mod stage;
pub mod state;
#[cfg(test)]
mod testing;

pub use error::{InstallError, Result};

/// Trusted public keys (`*.pub`) used when neither `--key` nor `--trusted-keys` is given.
pub const DEFAULT_TRUSTED_KEYS: &str = "/etc/rininstall/trusted-keys";
