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

/// Largest signed document (part list, inventory) read into memory.
pub const MAX_SIGNED_DOCUMENT: u64 = 16 << 20;

/// Read a signed document at `path`: canonical JSON holding `field` and `signatures`. Returns
/// the JSON and the signature document's bytes; `bad` makes the refusal. Nothing is trusted yet.
pub(crate) fn read_signed(
    path: &std::path::Path,
    field: &str,
    bad: &dyn Fn(String) -> crate::BundleError,
) -> crate::Result<(serde_json::Value, Vec<u8>)> {
    use std::io::Read as _;
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(MAX_SIGNED_DOCUMENT + 1).read_to_end(&mut bytes))
        .map_err(|source| crate::BundleError::Io {
            path: path.to_path_buf(),
            source,
        })?;
    if bytes.len() as u64 > MAX_SIGNED_DOCUMENT {
        return Err(bad(format!(
            "it is larger than {MAX_SIGNED_DOCUMENT} bytes"
        )));
    }
    let raw: serde_json::Value =
        serde_json::from_slice(&bytes).map_err(|e| bad(format!("it is not JSON: {e}")))?;
    if canonical_json(&raw) != bytes {
        return Err(bad("it is not canonical JSON".into()));
    }
    let (Some(_), Some(sigs)) = (raw.get(field), raw.get("signatures")) else {
        return Err(bad(format!("it lacks `{field}` or `signatures`")));
    };
    let sigs = canonical_json(sigs);
    Ok((raw, sigs))
}

#[cfg(test)]
mod escape_tests {
    /// The string escapes FORMAT.md section 4 states, as the canonical writer makes them.
    #[test]
    fn strings_use_jsons_minimal_escapes() {
        let s = "q\"b\\s/\u{8}\u{c}\n\r\t\u{1}\u{1f}\u{7f}é€";
        let got = String::from_utf8(super::canonical_json(&s)).unwrap();
        assert_eq!(got, "\"q\\\"b\\\\s/\\b\\f\\n\\r\\t\\u0001\\u001f\u{7f}é€\"");
    }
}
