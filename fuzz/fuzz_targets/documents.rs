//! Signed documents read from files: a split bundle's part list and a site inventory.
#![no_main]
use libfuzzer_sys::fuzz_target;

#[path = "common.rs"]
mod common;

fuzz_target!(|data: &[u8]| {
    if let Some((_dir, file)) = common::file("b.tar.zst.parts", data) {
        let _ = rin_bundle::parts::open_list(&file, &common::AnyTrust);
        let _ = rin_bundle::inventory::read(&file);
    }
});
