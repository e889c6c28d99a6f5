//! `images.lock`: arbitrary bytes loaded as a lock; what loads writes back and loads the same.
#![no_main]
use libfuzzer_sys::fuzz_target;

#[path = "common.rs"]
mod common;

fuzz_target!(|data: &[u8]| {
    let Some((_dir, path)) = common::file("images.lock", data) else {
        return;
    };
    if let Ok(Some(lock)) = rin_builder::lock::Lock::load(&path) {
        let text = lock.to_text();
        std::fs::write(&path, &text).expect("write");
        let again = rin_builder::lock::Lock::load(&path)
            .expect("a lock written by to_text loads")
            .expect("present");
        assert_eq!(again.to_text(), text);
    }
});
