//! `rinbundle`'s library: the stack definition, the lock, the network half (`net`: fetching
//! images, charts and K3s releases into a content-addressed cache) and the packing half (`pack`:
//! everything into a signed, deterministic bundle with `rin-bundle`'s writer).

pub mod build;
pub mod cache;
pub mod error;
pub mod fetched;
pub mod lock;
pub mod net;
pub mod pack;
pub mod spec;

pub use build::BuildFailure;
pub use error::{BuildError, Result};
pub use fetched::Fetched;
pub use net::fetch::LockOutcome;
pub use net::session::FetchOptions;
pub use pack::{BuildOptions, Built, build, build_from};
pub use rin_bundle::progress::{Event, Progress};
pub use spec::Stack;
