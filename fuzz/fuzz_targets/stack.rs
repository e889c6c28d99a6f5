//! `bundle.yaml`: arbitrary bytes loaded as a stack definition.
#![no_main]
use libfuzzer_sys::fuzz_target;

#[path = "common.rs"]
mod common;

fuzz_target!(|data: &[u8]| {
    if let Some((dir, _)) = common::file("bundle.yaml", data)
        && let Ok(stack) = rin_builder::Stack::load(dir.path())
    {
        let _ = stack.select(&[], &[]);
    }
});
