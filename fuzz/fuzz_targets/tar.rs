//! The reader below the compression: arbitrary bytes (and mutations of a valid bundle's tar
//! stream, from the seeds) compressed with zstd here, then verified and extracted with every
//! signature accepted, so the mutations reach the tar, index and entry checks instead of
//! stopping at the compressed frame.
#![no_main]
use libfuzzer_sys::fuzz_target;

#[path = "common.rs"]
mod common;

fuzz_target!(|data: &[u8]| {
    let Ok(compressed) = zstd::encode_all(data, 1) else {
        return;
    };
    if let Some((dir, file)) = common::file("b.tar.zst", &compressed) {
        common::verify(dir.path(), &file);
    }
});
