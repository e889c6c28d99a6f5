//! The node's steps: everything `apply` does on the machine itself, from the signed index alone
//! or the verified bundle: `preflight` checks, `stage` (the first verified pass), `host` (K3s's
//! files under the root), `site_registry` (the in-cluster registry's image archive and objects),
//! `seed` (images and charts into the registry), `state` (the lock, staging, release record)
//! and `inventory` (what the site holds, for a delta).

pub mod check_config;
pub mod host;
pub mod inventory;
pub mod packages;
pub mod preflight;
pub mod readiness;
pub mod seed;
pub mod site_registry;
pub mod stage;
pub mod state;
pub mod support;
