//! One crafted archive for each refusal rule. Most are signed by a trusted key, so the refusal
//! comes from the structural check itself, not from the signature.

#![allow(clippy::unwrap_used)]

use rin_bundle::header::canonical_header;
use rin_bundle::index::{INDEX_PATH, MAX_INDEX_SIZE, MODE_FILE, SIGNATURES_PATH};
use rin_bundle::{BundleError, Silent};
use rin_signing::{TrustError, TrustPolicy};
use rin_tests::craft::{CREATED, Member, compress, head, index_for, keys, policy, tar};
use std::fs;
use tar::EntryType;

const A: &[u8] = b"alpha\n";
const B: &[u8] = b"bravo bravo\n";

/// Write `bytes` as a bundle, verify it with extraction, check nothing is left, return the error.
fn refused(bytes: &[u8], pol: &TrustPolicy) -> BundleError {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("b.tar.zst");
    fs::write(&path, bytes).unwrap();
    let staging = dir.path().join("staging");
    let err = rin_bundle::verify(&path, pol, Some(&staging), &Silent)
        .expect_err("crafted bundle accepted");
    rin_tests::assert_only(dir.path(), &["b.tar.zst"], "refused crafted bundle");
    assert!(err.is_refusal(), "{err}");
    assert!(
        err.hint().is_some() || matches!(err, BundleError::Untrusted { .. }),
        "no hint for {err}"
    );
    err
}

fn trust_error(e: BundleError) -> TrustError {
    match e {
        BundleError::Untrusted { source } => {
            *source.downcast::<TrustError>().expect("a TrustError")
        }
        other => panic!("expected a trust refusal, got {other}"),
    }
}

/// A valid two-entry bundle body with custom members after the signed head.
fn with_members(files: &[(&str, &[u8])], members: Vec<Member>) -> (Vec<u8>, TrustPolicy) {
    let ks = keys(1);
    let mut all = head(&index_for(files), &ks);
    all.extend(members);
    (compress(&tar(&all)), policy(&ks, 1))
}

#[test]
fn a_well_formed_crafted_bundle_is_accepted() {
    // The baseline every case below departs from.
    let (bytes, pol) = with_members(
        &[("a", A), ("b", B)],
        vec![Member::file("a", A), Member::file("b", B)],
    );
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("ok.tar.zst");
    fs::write(&p, bytes).unwrap();
    let v = rin_bundle::verify(&p, &pol, Some(&dir.path().join("x")), &Silent).unwrap();
    assert_eq!(v.index.entries.len(), 2);
    assert_eq!(fs::read(dir.path().join("x/b")).unwrap(), B);
}

#[test]
fn unsigned_unknown_bad_and_below_threshold() {
    let ks = keys(3);
    let index = index_for(&[("a", A)]);
    let body = vec![Member::file("a", A)];

    // No signature entry at all.
    let mut m = vec![Member::file(INDEX_PATH, &index.to_canonical_json())];
    m.push(Member::file("a", A));
    assert!(matches!(
        refused(&compress(&tar(&m)), &policy(&ks, 1)),
        BundleError::Unsigned
    ));

    // A signature entry with no signatures.
    let mut m = head(&index, &[]);
    m.extend([Member::file("a", A)]);
    assert!(matches!(
        trust_error(refused(&compress(&tar(&m)), &policy(&ks, 1))),
        TrustError::Unsigned
    ));

    // Signed by a key nobody trusts.
    let mut m = head(&index, &keys(1));
    m.extend([Member::file("a", A)]);
    assert!(matches!(
        trust_error(refused(&compress(&tar(&m)), &policy(&ks, 1))),
        TrustError::UnknownKeys { .. }
    ));

    // A trusted signature over a different index.
    let other = index_for(&[("a", B)]);
    let sig = rin_signing::sign(&other.to_canonical_json(), &ks[..1]);
    let m = vec![
        Member::file(INDEX_PATH, &index.to_canonical_json()),
        Member::file(SIGNATURES_PATH, &sig),
        Member::file("a", A),
    ];
    assert!(matches!(
        trust_error(refused(&compress(&tar(&m)), &policy(&ks, 1))),
        TrustError::BadSignature { .. }
    ));

    // 2 of 3 required, 1 given; and 2 given passes.
    let mut m = head(&index, &ks[..1]);
    m.extend(body);
    assert!(matches!(
        trust_error(refused(&compress(&tar(&m)), &policy(&ks, 2))),
        TrustError::BelowThreshold {
            have: 1,
            need: 2,
            ..
        }
    ));
    let mut m = head(&index, &ks[1..]);
    m.push(Member::file("a", A));
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("ok"), compress(&tar(&m))).unwrap();
    let v = rin_bundle::verify(&dir.path().join("ok"), &policy(&ks, 2), None, &Silent).unwrap();
    assert_eq!(v.signers.len(), 2);
}

#[test]
fn entry_order_and_presence() {
    let files: &[(&str, &[u8])] = &[("a", A), ("b", B)];
    let (x, p) = with_members(
        &files[..1],
        vec![Member::file("a", A), Member::file("b", B)],
    );
    assert!(matches!(refused(&x, &p), BundleError::UnlistedEntry { path } if path == "b"));
    let (x, p) = with_members(files, vec![Member::file("a", A)]);
    assert!(
        matches!(refused(&x, &p), BundleError::MissingEntries { first, count: 1 } if first == "b")
    );
    let (x, p) = with_members(
        files,
        vec![
            Member::file("a", A),
            Member::file("a", A),
            Member::file("b", B),
        ],
    );
    assert!(matches!(refused(&x, &p), BundleError::DuplicateEntry { path } if path == "a"));
    let (x, p) = with_members(
        files,
        vec![
            Member::file("a", A),
            Member::file(INDEX_PATH, b"{}"),
            Member::file("b", B),
        ],
    );
    assert!(matches!(refused(&x, &p), BundleError::DuplicateEntry { path } if path == INDEX_PATH));
    let (x, p) = with_members(files, vec![Member::file("b", B), Member::file("a", A)]);
    assert!(
        matches!(refused(&x, &p), BundleError::OutOfOrder { path, expected } if path == "b" && expected == "a")
    );
}

#[test]
fn sizes_hashes_headers_and_padding() {
    // Larger than declared: the header says 12 bytes where the index says 6.
    let (x, p) = with_members(&[("a", A)], vec![Member::file("a", B)]);
    assert!(matches!(
        refused(&x, &p),
        BundleError::EntryTooLarge {
            declared: 6,
            actual: 12,
            ..
        }
    ));
    // Smaller than declared.
    let (x, p) = with_members(&[("a", B)], vec![Member::file("a", A)]);
    assert!(matches!(
        refused(&x, &p),
        BundleError::SizeMismatch {
            declared: 12,
            actual: 6,
            ..
        }
    ));
    // Same size, other bytes.
    let (x, p) = with_members(&[("a", A)], vec![Member::file("a", b"ALPHA\n")]);
    assert!(matches!(refused(&x, &p), BundleError::HashMismatch { path, .. } if path == "a"));
    // Mode differs from the index (0600 instead of 0644).
    let m = Member {
        header: canonical_header("a", A.len() as u64, 0o600, CREATED),
        content: A.to_vec(),
    };
    let (x, p) = with_members(&[("a", A)], vec![m]);
    assert!(matches!(refused(&x, &p), BundleError::NonCanonicalHeader { path } if path == "a"));
    // An owner set.
    let mut h = canonical_header("a", A.len() as u64, MODE_FILE, CREATED);
    h[108..115].copy_from_slice(b"0001750");
    fix_checksum(&mut h);
    let (x, p) = with_members(
        &[("a", A)],
        vec![Member {
            header: h,
            content: A.to_vec(),
        }],
    );
    assert!(matches!(
        refused(&x, &p),
        BundleError::NonCanonicalHeader { .. }
    ));
    // Bytes hidden in the padding after the content.
    let ks = keys(1);
    let mut t = tar(&{
        let mut m = head(&index_for(&[("a", A)]), &ks);
        m.push(Member::file("a", A));
        m
    });
    let at = t.len() - 1024 - 512 + A.len() + 3;
    t[at] = b'!';
    assert!(
        matches!(refused(&compress(&t), &policy(&ks, 1)), BundleError::NonZeroPadding { path } if path == "a")
    );
}

fn fix_checksum(h: &mut [u8]) {
    let block: &mut [u8; 512] = (&mut h[..512]).try_into().unwrap();
    let sum = rin_bundle::header::checksum(block);
    block[148..154].copy_from_slice(format!("{sum:06o}").as_bytes());
}

#[test]
fn unsafe_paths_in_the_archive_and_in_a_signed_index() {
    for (path, problem) in [
        (&b"/etc/passwd"[..], "absolute path"),
        (b"../escape", "`..` component"),
        (b"a/../../escape", "`..` component"),
    ] {
        let (x, p) = with_members(
            &[("a", A)],
            vec![Member::raw(path, EntryType::Regular, A, None)],
        );
        match refused(&x, &p) {
            BundleError::UnsafePath { problem: got, .. } => assert_eq!(got, problem),
            other => panic!("{}: {other}", String::from_utf8_lossy(path)),
        }
    }
    // Even signed by a trusted key, an index naming such paths is refused before any entry.
    for bad in ["/etc/passwd", "../x", "ok/../../x"] {
        let ks = keys(1);
        let mut index = index_for(&[("a", A)]);
        index.entries[0].path = bad.into();
        let mut m = head(&index, &ks);
        m.push(Member::file("a", A));
        assert!(
            matches!(
                refused(&compress(&tar(&m)), &policy(&ks, 1)),
                BundleError::UnsafePath { .. }
            ),
            "{bad}"
        );
    }
}

#[test]
fn links_devices_fifos_and_directories() {
    let cases = [
        (EntryType::Symlink, "symbolic link", Some("/etc/shadow")),
        (EntryType::Link, "hard link", Some("a")),
        (EntryType::Char, "character device", None),
        (EntryType::Block, "block device", None),
        (EntryType::Fifo, "fifo", None),
        (EntryType::Directory, "directory", None),
        (EntryType::GNUSparse, "sparse file", None),
    ];
    for (kind, name, link) in cases {
        let (x, p) = with_members(&[("a", A)], vec![Member::raw(b"a", kind, b"", link)]);
        match refused(&x, &p) {
            BundleError::NonRegularEntry { kind, .. } => assert_eq!(kind, name),
            other => panic!("{name}: {other}"),
        }
    }
}

#[test]
fn oversized_index_is_refused_before_it_is_read() {
    // The header claims more than the cap; no such amount of data follows.
    let h = canonical_header(INDEX_PATH, MAX_INDEX_SIZE + 1, MODE_FILE, CREATED);
    let mut t = h;
    t.extend_from_slice(&[b'{'; 4096]);
    let ks = keys(1);
    assert!(matches!(
        refused(&compress(&t), &policy(&ks, 1)),
        BundleError::IndexTooLarge { .. }
    ));
    let h = canonical_header(INDEX_PATH, 2, MODE_FILE, CREATED);
    let mut t = h;
    t.extend_from_slice(b"{}");
    t.resize(512 + 512, 0);
    t.extend(canonical_header(
        SIGNATURES_PATH,
        2 << 20,
        MODE_FILE,
        CREATED,
    ));
    assert!(matches!(
        refused(&compress(&t), &policy(&ks, 1)),
        BundleError::SignaturesTooLarge { .. }
    ));
}

#[test]
fn truncation_and_trailing_data() {
    let (good, pol) = with_members(
        &[("a", A), ("b", B)],
        vec![Member::file("a", A), Member::file("b", B)],
    );
    // Cut the compressed file anywhere after the frame header.
    for cut in [7, good.len() / 2, good.len() - 5, good.len() - 1] {
        let e = refused(&good[..cut], &pol);
        assert!(
            matches!(
                e,
                BundleError::Truncated { .. } | BundleError::Compression { .. }
            ),
            "cut at {cut}: {e}"
        );
    }
    // A tar cut short, compressed properly: the stream ends inside an entry or the end marker.
    let ks = keys(1);
    let mut m = head(&index_for(&[("a", A)]), &ks);
    m.push(Member::file("a", A));
    let full = tar(&m);
    for cut in [
        full.len() - 1024 - 512 + 3,
        full.len() - 700,
        full.len() - 10,
    ] {
        let e = refused(&compress(&full[..cut]), &policy(&ks, 1));
        assert!(
            matches!(e, BundleError::Truncated { .. }),
            "tar cut at {cut}: {e}"
        );
    }
    // Data after the end-of-archive marker, inside the compressed stream.
    let mut more = full.clone();
    more.extend_from_slice(b"hidden payload");
    assert!(matches!(
        refused(&compress(&more), &policy(&ks, 1)),
        BundleError::TrailingData {
            what: "tar archive"
        }
    ));
    // Zero blocks beyond the two of the marker are trailing data too.
    let mut zeros = full.clone();
    zeros.resize(full.len() + 512, 0);
    assert!(matches!(
        refused(&compress(&zeros), &policy(&ks, 1)),
        BundleError::TrailingData { .. }
    ));
    // Bytes after the zstd frame, and a second frame.
    let mut after = good.clone();
    after.extend_from_slice(b"junk");
    assert!(matches!(
        refused(&after, &pol),
        BundleError::TrailingData {
            what: "compressed stream"
        }
    ));
    let mut two = good.clone();
    two.extend(compress(b"second frame"));
    assert!(matches!(
        refused(&two, &pol),
        BundleError::TrailingData {
            what: "compressed stream"
        }
    ));
}

#[test]
fn not_a_bundle() {
    let pol = policy(&keys(1), 1);
    assert!(matches!(
        refused(b"plain text, not zstd", &pol),
        BundleError::NotABundle { .. }
    ));
    // A zstd file with a different frame header (content size recorded).
    let mut other = Vec::new();
    zstd::stream::copy_encode(&b"data"[..], &mut other, 3).unwrap();
    assert!(matches!(
        refused(&other, &pol),
        BundleError::NotABundle { .. }
    ));
    // A tar whose first entry is something else.
    let t = tar(&[Member::file("README", b"hi")]);
    assert!(matches!(
        refused(&compress(&t), &pol),
        BundleError::NotABundle { .. }
    ));
}

#[test]
fn index_time_must_match_the_headers() {
    let ks = keys(1);
    let mut index = index_for(&[("a", A)]);
    index.created = rin_bundle::index::format_created(CREATED + 1);
    let mut m = head(&index, &ks);
    m.push(Member::file("a", A));
    let e = refused(&compress(&tar(&m)), &policy(&ks, 1));
    assert!(
        matches!(e, BundleError::InvalidIndex { ref reason } if reason.contains("created")),
        "{e}"
    );
}

#[test]
fn extraction_never_touches_an_existing_directory() {
    let (bytes, pol) = with_members(&[("a", A)], vec![Member::file("a", A)]);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("b.tar.zst");
    fs::write(&path, bytes).unwrap();
    let target = dir.path().join("existing");
    fs::create_dir(&target).unwrap();
    fs::write(target.join("keep.txt"), b"mine").unwrap();
    let e = rin_bundle::verify(&path, &pol, Some(&target), &Silent).unwrap_err();
    assert!(matches!(e, BundleError::StagingExists { .. }), "{e}");
    assert!(!e.is_refusal(), "a local problem, not a bad bundle");
    assert_eq!(fs::read(target.join("keep.txt")).unwrap(), b"mine");
    assert_eq!(fs::read_dir(&target).unwrap().count(), 1);
}

#[test]
fn a_header_with_a_wrong_checksum_is_corrupt() {
    // One byte of the name changed and the checksum left as it was.
    let mut h = canonical_header("a", A.len() as u64, MODE_FILE, CREATED);
    h[0] = b'b';
    let (x, p) = with_members(
        &[("a", A)],
        vec![Member {
            header: h,
            content: A.to_vec(),
        }],
    );
    assert!(matches!(refused(&x, &p), BundleError::CorruptHeader { .. }));
}

/// A control sequence in a signed stack name (a window-title escape) is refused as a malformed
/// index (exit code 3), and the refusal prints it escaped: nothing raw reaches the terminal.
#[test]
fn a_control_sequence_in_a_signed_name_is_refused_and_never_printed_raw() {
    let ks = keys(1);
    let mut index = index_for(&[("a", A)]);
    index.stack.name = "demo\u{1b}]0;owned\u{7}".into();
    let mut all = head(&index, &ks);
    all.push(Member::file("a", A));
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("b.tar.zst");
    fs::write(&p, compress(&tar(&all))).unwrap();
    let (_, public, _) = rin_signing::write_keypair(&dir.path().join("k"), &ks[0]).unwrap();
    for (binary, args) in [
        ("rininstall", vec!["verify".to_string()]),
        ("rinbundle", vec!["verify".to_string()]),
        ("rinbundle", vec!["inspect".to_string()]),
    ] {
        let mut c = std::process::Command::new(rin_tests::bin(binary));
        c.args(&args).arg(&p);
        if args[0] == "verify" {
            c.arg("--key").arg(&public);
        }
        let out = c.output().unwrap();
        let said = rin_tests::text(&out);
        assert_eq!(out.status.code(), Some(3), "{binary} {args:?}: {said}");
        assert!(
            said.contains("must be letters, digits") && said.contains("\\u{1b}"),
            "{binary} {args:?}: {said}"
        );
        assert!(
            !out.stderr.contains(&0x1b) && !out.stdout.contains(&0x1b) && !out.stderr.contains(&7),
            "{binary} {args:?} printed a raw control character: {said:?}"
        );
    }
}

/// Paths no extraction can hold are refused as malformed before anything is extracted: a
/// component longer than file systems take, and a file that another entry puts a file under.
#[test]
fn a_long_component_and_a_file_that_is_a_directory_are_malformed() {
    let long = format!("files/{}", "c".repeat(1018));
    let (bytes, pol) = with_members(&[(&long, A)], vec![Member::file(&long, A)]);
    let err = refused(&bytes, &pol);
    assert!(err.to_string().contains("longer than 255 bytes"), "{err}");
    let (bytes, pol) = with_members(
        &[("files/f", A), ("files/f/x", B)],
        vec![Member::file("files/f", A), Member::file("files/f/x", B)],
    );
    let err = refused(&bytes, &pol);
    assert!(err.to_string().contains("is a file, and"), "{err}");
}

/// A bundle of one single-manifest image whose manifest is `manifest`, carrying `config` and the
/// `carried` blobs.
fn one_image(manifest: &[u8], config: &[u8], carried: &[&[u8]]) -> (Vec<u8>, TrustPolicy) {
    use rin_bundle::digest::sha256_hex;
    let blob = |b: &[u8]| (format!("oci/blobs/sha256/{}", sha256_hex(b)), b.to_vec());
    let mut files: Vec<(String, Vec<u8>)> = vec![blob(manifest), blob(config)];
    files.extend(carried.iter().map(|b| blob(b)));
    files.push(("oci/index.json".into(), b"{\"manifests\":[]}".to_vec()));
    files.push((
        "oci/oci-layout".into(),
        b"{\"imageLayoutVersion\":\"1.0.0\"}".to_vec(),
    ));
    files.sort();
    let refs: Vec<(&str, &[u8])> = files
        .iter()
        .map(|(p, c)| (p.as_str(), c.as_slice()))
        .collect();
    let mut index = index_for(&refs);
    let digest = format!("sha256:{}", sha256_hex(manifest));
    index.images.push(rin_bundle::index::Image {
        reference: "registry.example/app:1".into(),
        digest: digest.clone(),
        media_type: rin_bundle::oci::MT_OCI_MANIFEST.into(),
        upstream_digest: None,
        platforms: vec![rin_bundle::index::ImagePlatform {
            platform: "linux/amd64".parse().unwrap(),
            digest,
            size: 1,
        }],
    });
    let ks = keys(1);
    let mut all = head(&index, &ks);
    all.extend(refs.iter().map(|(p, c)| Member::file(p, c)));
    (compress(&tar(&all)), policy(&ks, 1))
}

#[test]
fn a_manifest_that_names_a_blob_the_bundle_lacks_or_does_not_parse_is_malformed() {
    use rin_bundle::digest::sha256_hex;
    let config = b"{\"architecture\":\"amd64\",\"os\":\"linux\"}";
    let layer = b"layer bytes";
    let manifest = format!(
        "{{\"schemaVersion\":2,\"mediaType\":\"{}\",\"config\":{{\"mediaType\":\"application/vnd.oci.image.config.v1+json\",\"digest\":\"sha256:{}\",\"size\":{}}},\"layers\":[{{\"mediaType\":\"application/vnd.oci.image.layer.v1.tar+gzip\",\"digest\":\"sha256:{}\",\"size\":{}}}]}}",
        rin_bundle::oci::MT_OCI_MANIFEST,
        sha256_hex(config),
        config.len(),
        sha256_hex(layer),
        layer.len()
    );
    // Whole: accepted.
    let (bytes, pol) = one_image(manifest.as_bytes(), config, &[layer]);
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("ok.tar.zst");
    fs::write(&p, bytes).unwrap();
    rin_bundle::verify(&p, &pol, None, &Silent).unwrap();
    // Its layer left out: refused, naming it.
    let (bytes, pol) = one_image(manifest.as_bytes(), config, &[]);
    let err = refused(&bytes, &pol);
    assert!(matches!(err, BundleError::BadDocument { .. }), "{err}");
    assert!(
        err.to_string().contains(&format!(
            "names sha256:{}, which the bundle neither carries",
            sha256_hex(layer)
        )),
        "{err}"
    );
    // Not a manifest at all.
    let (bytes, pol) = one_image(b"not json", config, &[layer]);
    let err = refused(&bytes, &pol);
    assert!(
        err.to_string()
            .contains("does not parse as an image manifest"),
        "{err}"
    );
    // Larger than a manifest may be (4 MiB): refused before it is held in memory.
    let big = vec![b' '; (rin_bundle::oci::MAX_DOCUMENT + 1) as usize];
    let (bytes, pol) = one_image(&big, config, &[layer]);
    let err = refused(&bytes, &pol);
    assert!(
        err.to_string().contains("over the 4194304-byte limit"),
        "{err}"
    );
}
