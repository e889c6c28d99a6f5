//! Unit tests of `writer`.

use super::*;
use crate::index::{Entry, FORMAT, Stack, format_created};

fn index_with(content: &[u8]) -> Index {
    Index {
        format: FORMAT.into(),
        stack: Stack {
            name: "t".into(),
            version: "1".into(),
        },
        created: format_created(0),
        platforms: vec![],
        k3s: None,
        images: vec![],
        charts: vec![],
        components: Vec::new(),
        base: None,
        entries: vec![Entry {
            path: "files/data".into(),
            size: content.len() as u64,
            sha256: crate::digest::sha256_hex(content),
            mode: 0o644,
        }],
    }
}

#[test]
fn output_and_frame_header_do_not_depend_on_threads() {
    // Several MiB of mixed data so the multi-threaded encoder cuts it into several jobs.
    let content: Vec<u8> = (0..6u64 << 20)
        .map(|i| ((i * 2654435761) >> 13) as u8 ^ (i % 7) as u8)
        .collect();
    let index = index_with(&content);
    let out: Vec<(String, Vec<u8>)> = [0u32, 1, 3]
        .iter()
        .map(|&t| {
            let b = write_bundle(
                Vec::new(),
                &index,
                b"{}",
                &[Source::Bytes(content.clone())],
                t,
                &crate::Silent,
            )
            .unwrap();
            (crate::digest::sha256_hex(&b), b[..6].to_vec())
        })
        .collect();
    assert_eq!(out[0].1, FRAME_HEADER);
    assert_eq!(out[0].0, out[1].0, "0 (meaning 1) and 1 worker differ");
    assert_eq!(out[1].0, out[2].0, "one and three workers differ");
}

#[derive(Debug)]
struct Said(Arrived);

impl Gate for Said {
    fn wait(&self) -> io::Result<Arrived> {
        Ok(self.0)
    }
}

fn write_awaited(src: &Path, said: Arrived, index: &Index) -> Result<(Option<String>, u64)> {
    let out = src.with_extension("bundle");
    let gate = std::sync::Arc::new(Said(said));
    let source = Source::Awaited(src.to_path_buf(), gate);
    write_bundle_file(&out, index, b"{}", &[source], 1, false, &crate::Silent)
}

#[test]
fn a_verified_file_is_trusted_only_while_its_stamp_holds() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    std::fs::write(&src, b"hello").unwrap();
    let stamp = FileStamp::of(&std::fs::metadata(&src).unwrap());
    // The index says "hellO": hashing would refuse it, so success proves it was trusted.
    let index = index_with(b"hellO");
    write_awaited(&src, Arrived::Verified(stamp), &index).unwrap();
    // Unchecked: hashed and refused.
    let r = write_awaited(&src, Arrived::Unchecked, &index);
    assert!(matches!(r, Err(BundleError::InputChanged { .. })), "{r:?}");
    // The same path, replaced by another file of the same size: hashed again and refused.
    let other = dir.path().join("other");
    std::fs::write(&other, b"hello").unwrap();
    std::fs::rename(&other, &src).unwrap();
    let r = write_awaited(&src, Arrived::Verified(stamp), &index);
    assert!(matches!(r, Err(BundleError::InputChanged { .. })), "{r:?}");
    // And the right bytes pass through a stale stamp, because they are hashed.
    write_awaited(&src, Arrived::Verified(stamp), &index_with(b"hello")).unwrap();
}

#[test]
fn many_entries_of_every_size_cross_the_stages_intact() {
    // Entry sizes around the stage buffer size, zero included, many more entries than
    // buffers: the reader must never lose a buffer, and the bytes must come out in order.
    let dir = tempfile::tempdir().unwrap();
    let sizes = [
        0,
        1,
        CHUNK - 1,
        CHUNK,
        CHUNK + 1,
        3 * CHUNK + 7,
        511,
        512,
        513,
    ];
    let mut entries = Vec::new();
    let mut sources = Vec::new();
    let mut expected = Vec::new();
    for i in 0..40 {
        let size = sizes[i % sizes.len()];
        let content: Vec<u8> = (0..size).map(|j| (i * 31 + j * 7) as u8).collect();
        let path = dir.path().join(format!("f{i}"));
        std::fs::write(&path, &content).unwrap();
        entries.push(Entry {
            path: format!("files/f{i:02}"),
            size: size as u64,
            sha256: crate::digest::sha256_hex(&content),
            mode: 0o644,
        });
        sources.push(if i % 2 == 0 {
            Source::File(path)
        } else {
            Source::Bytes(content.clone())
        });
        expected.push(content);
    }
    let mut index = index_with(b"");
    index.entries = entries;
    let bundle = write_bundle(Vec::new(), &index, b"{}", &sources, 2, &crate::Silent).unwrap();
    let tar = zstd::decode_all(&bundle[..]).unwrap();
    let mut archive = tar::Archive::new(&tar[..]);
    let got: Vec<Vec<u8>> = archive
        .entries()
        .unwrap()
        .skip(2)
        .map(|e| {
            let mut v = Vec::new();
            io::Read::read_to_end(&mut e.unwrap(), &mut v).unwrap();
            v
        })
        .collect();
    assert_eq!(got.len(), expected.len());
    assert!(got == expected, "entry bytes differ");
}

#[test]
fn the_file_checksum_is_made_only_when_asked_and_is_the_file_s_sha256() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    std::fs::write(&src, b"hello").unwrap();
    let index = index_with(b"hello");
    let out = dir.path().join("b.tar.zst");
    for checksum in [false, true] {
        let sources = [Source::File(src.clone())];
        let (sha, size) =
            write_bundle_file(&out, &index, b"{}", &sources, 1, checksum, &crate::Silent).unwrap();
        let bytes = std::fs::read(&out).unwrap();
        assert_eq!(size, bytes.len() as u64);
        assert_eq!(sha, checksum.then(|| crate::digest::sha256_hex(&bytes)));
    }
}

#[test]
fn changed_input_is_refused_and_leaves_no_partial_file() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    std::fs::write(&src, b"hello").unwrap();
    let index = index_with(b"hellO");
    let out = dir.path().join("b.tar.zst");
    let r = write_bundle_file(
        &out,
        &index,
        b"{}",
        &[Source::File(src)],
        1,
        false,
        &crate::Silent,
    );
    assert!(matches!(r, Err(BundleError::InputChanged { .. })), "{r:?}");
    assert!(!out.exists() && !partial_path(&out).exists());
}
