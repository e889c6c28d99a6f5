//! An APT repository's `InRelease`, as a mirror may serve anything: its signature checked
//! against Debian's archive keyring (rpgp parses the armor, the packets and the dash-escaped
//! text) and a Release text's `SHA256` lines and `Valid-Until` read.
#![no_main]
use libfuzzer_sys::fuzz_target;

const KEYRING: &[u8] = include_bytes!("../../manifests/keys/debian-archive-keyring.gpg");

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(r) = rin_hostpkg::Release::parse(text)
            && let Some(v) = r.valid_until
        {
            let _ = rin_builder::net::hostpkg::still_valid(&v, std::time::SystemTime::now());
        }
        if let Ok(signed) = rin_builder::net::hostpkg::verify_clearsigned(text, KEYRING) {
            // Only a real Debian signature gets here; what it signs must read.
            let _ = rin_hostpkg::Release::parse(&signed);
        }
    }
});
