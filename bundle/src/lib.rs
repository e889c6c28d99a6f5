//! The Rin bundle format, version 1: the signed index, canonical tar headers, the deterministic
//! writer and the one-pass verifying reader. Plain synchronous `Read`/`Write` code: no network,
//! no async runtime. `docs/FORMAT.md` is the contract this crate implements.

pub mod digest;
pub mod error;
pub mod header;
pub mod host;
pub mod index;
pub mod inventory;
pub mod json;
pub mod k3s;
pub mod oci;
pub mod parts;
pub mod platform;
pub mod progress;
pub mod reader;
pub mod resign;
pub mod writer;

pub use error::{BundleError, Result};
pub use index::Index;
pub use platform::{Arch, Platform};
pub use progress::{Progress, Silent};
pub use reader::{Discard, Opened, Sink, Trust, Verified, open, peek, verify};
pub use writer::{Arrived, FileStamp, Gate, Source, write_bundle, write_bundle_file};
