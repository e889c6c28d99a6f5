//! `rinbundle`'s library: the stack definition, the lock, fetching images, charts and K3s
//! releases into a content-addressed cache, and packing everything into a signed,
//! deterministic bundle with `rin-bundle`'s writer.

pub mod cache;
pub mod charts;
pub mod collect;
pub mod error;
pub mod fetch;
pub mod http;
pub mod k3s;
pub mod lock;
pub mod pack;
pub mod registry;
pub mod report;
pub mod scan;
pub mod spec;

pub use error::{BuildError, Result};
pub use fetch::{FetchOptions, Fetched, LockOutcome};
pub use pack::{BuildOptions, Built, build, build_from};
pub use report::{Event, Reporter};
pub use spec::Stack;
