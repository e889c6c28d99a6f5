//! Canonical JSON, the one encoding of every document the bundle signs or writes anew (the
//! index, the signature file, a platform-filtered image index).

use serde::Serialize;

/// Canonical JSON of any serialisable value: serde_json's `Value` keeps object keys in a sorted
/// map, and the compact writer adds no white space.
pub fn canonical_json<T: Serialize>(value: &T) -> Vec<u8> {
    // Serialising plain data structures (strings, integers, vectors, maps with string keys)
    // cannot fail.
    let v = serde_json::to_value(value).expect("serialisable data");
    serde_json::to_vec(&v).expect("serialisable value")
}
