//! `rininstall`'s library. Today: the site's defaults; verification itself lives in `rin-bundle`
//! (one streaming pass) with the trust policy of `rin-signing`.

/// Trusted public keys (`*.pub`) used when neither `--key` nor `--trusted-keys` is given.
pub const DEFAULT_TRUSTED_KEYS: &str = "/etc/rininstall/trusted-keys";
