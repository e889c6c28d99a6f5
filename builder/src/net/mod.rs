//! The network half of a build (async, tokio): bring the lock up to date and fill the cache.
//! `fetch` orchestrates; `session` is what one run uses to reach its sources; `download` is the
//! one download routine with the retry policy; `registry`, `http`, `charts` and `k3s` speak to
//! registries, Helm repositories and K3s release pages.

pub mod charts;
pub mod download;
pub mod failure;
pub mod fetch;
pub mod hostpkg;
pub mod http;
pub mod k3s;
pub mod registry;
pub mod session;
