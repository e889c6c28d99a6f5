//! Making bundles by hand for refusal tests: raw tar streams with any header, a signed index,
//! zstd with the format's settings; and the trust policy that goes with the keys.

use ed25519_dalek::SigningKey;
use rin_bundle::digest::sha256_hex;
use rin_bundle::header::{BLOCK, canonical_header, padding};
use rin_bundle::index::{self, Entry, INDEX_PATH, Index, MODE_FILE, SIGNATURES_PATH};
use rin_signing::TrustPolicy;
use std::io::Read;
use std::path::Path;

pub const CREATED: u64 = 1_700_000_000;

/// Fresh signing keys.
pub fn keys(n: usize) -> Vec<SigningKey> {
    (0..n)
        .map(|_| rin_signing::generate().expect("random"))
        .collect()
}

/// A policy trusting `keys` with the given threshold.
pub fn policy(keys: &[SigningKey], threshold: usize) -> TrustPolicy {
    TrustPolicy::new(keys.iter().map(|k| k.verifying_key()).collect(), threshold).expect("policy")
}

/// A small index over `files` (path, content), in the given order.
pub fn index_for(files: &[(&str, &[u8])]) -> Index {
    Index {
        format: index::FORMAT.into(),
        stack: index::Stack {
            name: "crafted".into(),
            version: "1.0.0".into(),
        },
        created: index::format_created(CREATED),
        platforms: vec!["linux/amd64".parse().expect("a platform")],
        k3s: None,
        images: vec![],
        charts: vec![],
        components: Vec::new(),
        base: None,
        entries: files
            .iter()
            .map(|(p, c)| Entry {
                path: p.to_string(),
                size: c.len() as u64,
                sha256: sha256_hex(c),
                mode: MODE_FILE,
            })
            .collect(),
    }
}

/// One raw tar member: header blocks (any bytes) and content (padded with zeros when written).
pub struct Member {
    pub header: Vec<u8>,
    pub content: Vec<u8>,
}

impl Member {
    /// A canonical member for `path` with `content`.
    pub fn file(path: &str, content: &[u8]) -> Self {
        Member {
            header: canonical_header(path, content.len() as u64, MODE_FILE, CREATED),
            content: content.to_vec(),
        }
    }

    /// A member with a header made by the `tar` crate (for links, devices, odd paths).
    pub fn raw(path: &[u8], kind: tar::EntryType, content: &[u8], link: Option<&str>) -> Self {
        let mut h = tar::Header::new_ustar();
        // set_path refuses `..` and absolute paths: write the name bytes directly.
        h.as_old_mut().name[..path.len()].copy_from_slice(path);
        h.set_size(content.len() as u64);
        h.set_mode(0o644);
        h.set_mtime(CREATED);
        h.set_entry_type(kind);
        if let Some(l) = link {
            h.set_link_name(l).expect("link name");
        }
        h.set_cksum();
        Member {
            header: h.as_bytes().to_vec(),
            content: content.to_vec(),
        }
    }
}

/// The index and signature members signed by `keys`.
pub fn head(index: &Index, keys: &[SigningKey]) -> Vec<Member> {
    let bytes = index.to_canonical_json();
    let sig = rin_signing::sign(&bytes, keys);
    vec![
        Member::file(INDEX_PATH, &bytes),
        Member::file(SIGNATURES_PATH, &sig),
    ]
}

/// A tar stream of the members followed by the end-of-archive marker.
pub fn tar(members: &[Member]) -> Vec<u8> {
    let mut out = Vec::new();
    for m in members {
        out.extend_from_slice(&m.header);
        out.extend_from_slice(&m.content);
        out.resize(out.len() + padding(m.content.len() as u64), 0);
    }
    out.resize(out.len() + 2 * BLOCK, 0);
    out
}

/// zstd with exactly the format's settings (the writer's own encoder).
pub fn compress(tar: &[u8]) -> Vec<u8> {
    let mut enc = rin_bundle::writer::encoder(Vec::new(), 1).expect("zstd");
    std::io::Write::write_all(&mut enc, tar).expect("in-memory zstd");
    enc.finish().expect("in-memory zstd")
}

/// The whole decompressed tar stream of a bundle file.
pub fn decompress(path: &Path) -> Vec<u8> {
    let mut out = Vec::new();
    zstd::stream::read::Decoder::new(std::fs::File::open(path).expect("bundle"))
        .expect("zstd")
        .read_to_end(&mut out)
        .expect("zstd");
    out
}

/// Build the fixture stack in `dir` into `out` with `keys`, as of [`CREATED`].
pub fn build_stack(
    stack_dir: &Path,
    out: &Path,
    keys: &[SigningKey],
    arches: &[&str],
    threads: u32,
) -> rin_builder::Built {
    let stack = rin_builder::Stack::load(stack_dir).expect("stack");
    let opts = rin_builder::BuildOptions {
        arches: arches
            .iter()
            .map(|a| a.parse().expect("an architecture"))
            .collect(),
        keys: keys.to_vec(),
        output: out.to_path_buf(),
        created: CREATED,
        threads,
        checksum: true,
        ..Default::default()
    };
    rin_builder::build(&stack, &opts, &rin_bundle::Silent).expect("build")
}
