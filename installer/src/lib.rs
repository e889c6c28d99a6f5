//! `rininstall`'s library: what happens at the site. Verification itself lives in `rin-bundle`
//! (one streaming pass) with the trust policy of `rin-signing`; `seed` fills the site registry.

pub mod error;
pub mod seed;

pub use error::{InstallError, Result};

/// Trusted public keys (`*.pub`) used when neither `--key` nor `--trusted-keys` is given.
pub const DEFAULT_TRUSTED_KEYS: &str = "/etc/rininstall/trusted-keys";
