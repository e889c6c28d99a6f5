//! Flip one byte at hundreds of random offsets of a real bundle, in the tar stream (re-compressed
//! with the format's settings) and in the compressed file: no changed content may be accepted, and
//! no file may remain in staging.
//!
//! Every byte of the tar stream is covered by the signature, or (the signature document, which
//! holds only the one trusted signature here) checked, so every flip there must be refused; what
//! the signature document does not cover is tested on its own. The zstd encoding
//! itself is not unique: a few flips of the compressed file (about 0.3% measured, in block and
//! entropy-table headers) decode to the very same tar stream. Such a copy installs exactly what
//! was signed; the test accepts it only after an independent decoder confirms the identical bytes.

#![allow(clippy::unwrap_used)]

use rin_bundle::Silent;
use rin_tests::craft::{self, build_stack, keys, policy};
use rin_tests::fixture::write_stack;
use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

const FLIPS: usize = 240;

/// A small deterministic generator (splitmix64): the same offsets on every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e3779b97f4a7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58476d1ce4e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d049bb133111eb);
        z ^ (z >> 31)
    }
}

/// Checks the bundle is refused and staging is empty; returns the kind of refusal.
/// Verify `bundle` with extraction. Refused: checks staging is empty and returns the kind of
/// refusal. Accepted: returns `None` (the caller decides whether that was right).
fn check(bundle: &Path, work: &Path, pol: &rin_signing::TrustPolicy, what: &str) -> Option<String> {
    let staging = work.join("staging");
    match rin_bundle::verify(bundle, pol, Some(&staging), &Silent) {
        Ok(_) => {
            fs::remove_dir_all(&staging).unwrap();
            None
        }
        Err(err) => {
            assert!(
                err.is_refusal(),
                "{what}: refused for a local reason instead of the bundle: {err}"
            );
            rin_tests::assert_only(work, &["b.tar.zst"], what);
            let debug = format!("{err:?}");
            Some(
                debug
                    .split([' ', '{', '('])
                    .next()
                    .unwrap_or_default()
                    .to_string(),
            )
        }
    }
}

/// Flip bytes of `original` (a compressed bundle, or a tar stream that `make` compresses) and
/// check each copy. A copy may be accepted only when `same_content` confirms it carries the
/// original tar stream byte for byte. Returns the refusal kinds and the number accepted.
fn flip_all(
    original: &[u8],
    seed: u64,
    pol: &rin_signing::TrustPolicy,
    make: impl Fn(Vec<u8>) -> Vec<u8>,
    same_content: impl Fn(&[u8]) -> bool,
    label: &str,
) -> (BTreeMap<String, usize>, usize) {
    let mut kinds = BTreeMap::new();
    let mut accepted = 0;
    let work = tempfile::tempdir().unwrap();
    let bundle = work.path().join("b.tar.zst");
    let mut rng = Rng(seed);
    let mut offsets = std::collections::BTreeSet::new();
    while offsets.len() < FLIPS {
        offsets.insert((rng.next() % original.len() as u64) as usize);
    }
    // Always the frame header and the last bytes (zstd's checksum; the end-of-archive marker).
    offsets.extend((0..8).chain(original.len() - 4..original.len()));
    for &off in &offsets {
        let mut copy = original.to_vec();
        copy[off] ^= 1 + (rng.next() % 255) as u8;
        let file = make(copy);
        fs::write(&bundle, &file).unwrap();
        let what = format!("{label} offset {off} of {}", original.len());
        match check(&bundle, work.path(), pol, &what) {
            Some(kind) => *kinds.entry(kind).or_insert(0) += 1,
            None => {
                assert!(
                    same_content(&file),
                    "{what}: a copy with changed content was accepted"
                );
                accepted += 1;
            }
        }
    }
    eprintln!(
        "{label}: {} flips, refused {kinds:?}, accepted with identical content {accepted}",
        offsets.len()
    );
    (kinds, accepted)
}

#[test]
fn no_flipped_byte_changes_what_is_accepted_and_nothing_is_left() {
    let tmp = tempfile::tempdir().unwrap();
    let stack = write_stack(&tmp.path().join("stack")).unwrap();
    let ks = keys(1);
    let pol = policy(&ks, 1);
    let out = tmp.path().join("bundle.tar.zst");
    build_stack(&stack, &out, &ks, &["amd64"], 1);
    let compressed = fs::read(&out).unwrap();
    let tar = craft::decompress(&out);

    // The untouched bundle and its re-compressed tar both verify: refusals below are the flips'.
    rin_bundle::verify(&out, &pol, None, &Silent).unwrap();
    let recompressed = tmp.path().join("re.tar.zst");
    fs::write(&recompressed, craft::compress(&tar)).unwrap();
    rin_bundle::verify(&recompressed, &pol, None, &Silent).unwrap();

    // The tar stream: every flip refused.
    let (kinds, accepted) = flip_all(&tar, 2, &pol, |t| craft::compress(&t), |_| false, "tar");
    assert_eq!(accepted, 0);
    // The flips land everywhere in the tar stream, so several different checks must fire.
    for expected in ["HashMismatch", "Untrusted"] {
        assert!(
            kinds.contains_key(expected),
            "no flip was caught as {expected}: {kinds:?}"
        );
    }
    assert!(
        kinds.len() >= 4,
        "refusals came from too few checks: {kinds:?}"
    );

    // The compressed file: refused, or (rarely) an alternative encoding of the same tar stream,
    // which an independent decoder (zstd's own one-shot API) must confirm.
    let decodes_to_original = |file: &[u8]| zstd::stream::decode_all(file).is_ok_and(|d| d == tar);
    let (_, accepted) = flip_all(
        &compressed,
        1,
        &pol,
        |b| b,
        decodes_to_original,
        "compressed",
    );
    assert!(
        accepted * 20 < FLIPS,
        "{accepted} of {FLIPS} compressed flips went unnoticed: far more than zstd's encoding freedom explains"
    );
}

/// What the signatures cover, as FORMAT.md sections 1 and 7 state it: every byte but
/// `rinbundle.sig`'s own. Adding a signature by a key the site does not trust, or dropping a
/// trusted one the threshold does not need, gives another file the site accepts with the same
/// signed index; a trusted key's signature that does not verify refuses the bundle.
#[test]
fn the_signature_document_is_checked_not_covered_and_a_bad_trusted_signature_refuses() {
    let t = tempfile::tempdir().unwrap();
    let ks = keys(3);
    let index = craft::index_for(&[("files/a.txt", b"alpha\n")]);
    let bundle = |name: &str, sig: &[u8]| {
        let bytes = index.to_canonical_json();
        let members = vec![
            craft::Member::file(rin_bundle::index::INDEX_PATH, &bytes),
            craft::Member::file(rin_bundle::index::SIGNATURES_PATH, sig),
            craft::Member::file("files/a.txt", b"alpha\n"),
        ];
        let path = t.path().join(name);
        fs::write(&path, craft::compress(&craft::tar(&members))).unwrap();
        path
    };
    let signed =
        |keys: &[ed25519_dalek::SigningKey]| rin_signing::sign(&index.to_canonical_json(), keys);
    let verify = |path: &Path, pol: &rin_signing::TrustPolicy| {
        rin_bundle::verify(path, pol, None, &Silent).map(|v| v.index_sha256)
    };
    let site = policy(&ks[..1], 1);

    let alone = bundle("alone.tar.zst", &signed(&ks[..1]));
    let with_stranger = bundle("stranger.tar.zst", &signed(&ks[..2]));
    assert_ne!(fs::read(&alone).unwrap(), fs::read(&with_stranger).unwrap());
    let a = verify(&alone, &site).unwrap();
    let b = verify(&with_stranger, &site).unwrap();
    assert_eq!(a, b, "the same signed index");
    // The stranger's signature alone is not trusted.
    let only_stranger = bundle("only.tar.zst", &signed(&ks[1..2]));
    assert!(verify(&only_stranger, &site).is_err());

    // Two trusted keys, threshold 1: either signature alone is enough.
    let both_trusted = policy(&ks[..2], 1);
    assert!(verify(&alone, &both_trusted).is_ok());
    // A trusted key's signature over other bytes refuses the bundle, though the other trusted
    // signature verifies.
    let good: serde_json::Value = serde_json::from_slice(&signed(&ks[..1])).unwrap();
    let bad: serde_json::Value =
        serde_json::from_slice(&rin_signing::sign(b"other bytes", &ks[1..2])).unwrap();
    let mut entries: Vec<serde_json::Value> = good["signatures"]
        .as_array()
        .unwrap()
        .iter()
        .chain(bad["signatures"].as_array().unwrap())
        .cloned()
        .collect();
    entries.sort_by_key(|e| e["key_id"].as_str().unwrap().to_string());
    let doc = serde_json::to_vec(&serde_json::json!({ "signatures": entries })).unwrap();
    let forged = bundle("forged.tar.zst", &doc);
    let err = verify(&forged, &both_trusted).unwrap_err();
    assert!(err.is_refusal(), "{err}");
    assert!(
        verify(&forged, &site).is_ok(),
        "the bad signature is not by a key it trusts"
    );
}
