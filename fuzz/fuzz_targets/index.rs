//! The index parser: arbitrary bytes as `rinbundle.json`.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(index) = rin_bundle::Index::from_canonical_json(data) {
        // What was accepted is canonical: it encodes to the same bytes.
        assert_eq!(index.to_canonical_json(), data);
    }
});
