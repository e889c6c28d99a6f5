//! OCI documents as build and seed read them: descriptors, platforms, and the platform filter
//! over an arbitrary image index.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(doc) = serde_json::from_slice::<rin_bundle::oci::Document>(data) {
        let manifests = doc.manifests.unwrap_or_default();
        let keep: Vec<bool> = manifests.iter().map(|d| d.size % 2 == 0).collect();
        for d in &manifests {
            let _ = d.platform.as_ref().map(|p| p.platform());
        }
        let _ = rin_bundle::oci::filtered_index(data, &keep);
    }
});
