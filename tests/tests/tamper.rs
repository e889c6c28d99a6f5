//! Flip one byte at hundreds of random offsets of a real bundle, in the compressed file and in
//! the tar stream (re-compressed with the format's settings): every copy must be refused, and no
//! file may remain in staging.

#![allow(clippy::unwrap_used)]

use rin_bundle::Silent;
use rin_tests::craft::{self, build_stack, keys, policy};
use rin_tests::fixture::write_stack;
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
fn assert_refused_and_clean(
    bundle: &Path,
    work: &Path,
    pol: &rin_signing::TrustPolicy,
    what: &str,
) -> String {
    let staging = work.join("staging");
    let r = rin_bundle::verify(bundle, pol, Some(&staging), &Silent);
    let err = r
        .err()
        .unwrap_or_else(|| panic!("{what}: a tampered bundle was accepted"));
    assert!(
        err.is_refusal(),
        "{what}: refused for a local reason instead of the bundle: {err}"
    );
    let left: Vec<_> = fs::read_dir(work)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(
        left,
        vec![std::ffi::OsString::from("b.tar.zst")],
        "{what}: something remained next to the bundle: {left:?}"
    );
    let debug = format!("{err:?}");
    debug
        .split([' ', '{', '('])
        .next()
        .unwrap_or_default()
        .to_string()
}

fn flip_all(
    original: &[u8],
    seed: u64,
    pol: &rin_signing::TrustPolicy,
    make: impl Fn(Vec<u8>) -> Vec<u8>,
    label: &str,
) -> std::collections::BTreeMap<String, usize> {
    let mut kinds = std::collections::BTreeMap::new();
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
        fs::write(&bundle, make(copy)).unwrap();
        let kind = assert_refused_and_clean(
            &bundle,
            work.path(),
            pol,
            &format!("{label} offset {off} of {}", original.len()),
        );
        *kinds.entry(kind).or_insert(0) += 1;
    }
    eprintln!("{label}: {kinds:?}");
    kinds
}

#[test]
fn every_flipped_byte_is_refused_and_leaves_nothing() {
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

    flip_all(&compressed, 1, &pol, |b| b, "compressed");
    let kinds = flip_all(&tar, 2, &pol, |t| craft::compress(&t), "tar");
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
}
