//! `rinbundle`'s library: the stack definition, collecting images, charts and files, and packing
//! them into a signed, deterministic bundle with `rin-bundle`'s writer.

pub mod collect;
pub mod error;
pub mod pack;
pub mod spec;

pub use error::{BuildError, Result};
pub use pack::{BuildOptions, Built, build};
pub use spec::Stack;
