//! How the installer's long-running work reports. The library never prints: the binary
//! implements this with lines and bars, or JSON lines.

use rin_bundle::Progress;

/// How the pipeline reports: byte progress of its passes, steps, and lines for the operator.
pub trait Report: Progress {
    fn step(&self, n: usize, of: usize, name: &str);
    fn say(&self, line: &str);
}
