//! The reader below the compression: arbitrary bytes (and mutations of a valid bundle's tar
//! stream, from the seeds) compressed here with the format's pinned settings, then verified and
//! extracted with every signature accepted, so the mutations reach the tar, index and entry
//! checks instead of stopping at the compressed frame.
#![no_main]
use libfuzzer_sys::fuzz_target;

#[path = "common.rs"]
mod common;

/// `data` compressed as the format pins it (section 2: one frame, checksum, no content size,
/// a 2^21 window), so the reader gets past the frame header.
fn compress(data: &[u8]) -> Option<Vec<u8>> {
    use std::io::Write;
    let mut enc = rin_bundle::writer::encoder(Vec::new(), 1).ok()?;
    enc.write_all(data).ok()?;
    enc.finish().ok()
}

fuzz_target!(|data: &[u8]| {
    let Some(compressed) = compress(data) else {
        return;
    };
    if let Some((dir, file)) = common::file("b.tar.zst", &compressed) {
        common::verify(dir.path(), &file);
    }
});
