//! The tar header check: checksums of arbitrary blocks, PAX records, and the canonical encoder
//! against the checker.
#![no_main]
use libfuzzer_sys::fuzz_target;
use rin_bundle::header;

fuzz_target!(|data: &[u8]| {
    let _ = header::parse_pax(data);
    if data.len() >= 512 {
        let mut block = [0u8; 512];
        block.copy_from_slice(&data[..512]);
        let _ = header::checksum_ok(&block);
    }
    // A path made of the input, when it is one: its canonical header passes the checksum.
    if let Ok(path) = std::str::from_utf8(data)
        && rin_bundle::index::check_entry_path(path).is_ok()
    {
        let h = header::canonical_header(path, data.len() as u64, 0o644, 1_700_000_000);
        let first: [u8; 512] = h[h.len() - 512..].try_into().expect("a block");
        assert!(header::checksum_ok(&first));
    }
});
