//! The whole reader: arbitrary bytes (and, from the seed corpus, mutations of a valid bundle)
//! opened, verified and extracted, with every signature accepted so the structural checks are
//! what is fuzzed. Nothing may be left in the extraction directory after a refusal.
#![no_main]
use libfuzzer_sys::fuzz_target;

#[path = "common.rs"]
mod common;

fuzz_target!(|data: &[u8]| {
    if let Some((dir, file)) = common::file("b.tar.zst", data) {
        common::verify(dir.path(), &file);
    }
});
