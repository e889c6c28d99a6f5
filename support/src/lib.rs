//! What the Rin libraries share beyond the format: one way to write a file so that it is
//! complete or absent ([`fs`]), the rule for when plain HTTP is allowed ([`net`]), byte sizes as
//! people read them ([`units`]), outside text made safe for a terminal ([`text`]), and one retry policy ([`retry`]; its loops with feature `tokio`). No printing,
//! no command-line parsing: both binaries and both libraries use it.

pub mod fs;
pub mod net;
pub mod retry;
pub mod text;
pub mod units;

pub use net::{DEFAULT_STALL, is_certificate_error, is_loopback};
pub use text::printable;
pub use units::{count, human_bytes};
