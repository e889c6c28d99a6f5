//! Signing keys, signatures over the bundle index, and the installer's trust policy.
//!
//! Keys are ed25519 in the PEM forms `openssl` reads: PKCS#8 for the private key, SPKI for the
//! public key. A key's id is `sha256:` and the hex SHA-256 of its SPKI DER encoding, so
//! `openssl pkey -pubin -in NAME.pub -outform DER | sha256sum` prints it. Signatures are
//! ed25519 (RFC 8032, pure) over the exact bytes of `rinbundle.json`.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
use ed25519_dalek::pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey};
use ed25519_dalek::{Signer, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

/// The one signature algorithm of format v1.
pub const ALGORITHM: &str = "ed25519";

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("cannot read key {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write key {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not an ed25519 {expected} in PEM form ({reason})")]
    Parse {
        path: PathBuf,
        expected: &'static str,
        reason: String,
    },
    #[error("{path} is a private key (BEGIN PRIVATE KEY); a public key is wanted here")]
    PrivateGiven { path: PathBuf },
    #[error("{path} is a public key (BEGIN PUBLIC KEY); signing needs the private key")]
    PublicGiven { path: PathBuf },
    #[error("the system random number generator failed: {0}")]
    Random(String),
    #[error("no trusted keys: {0}")]
    NoKeys(String),
    #[error("threshold {threshold} cannot be met by {keys} trusted key(s)")]
    Threshold { threshold: usize, keys: usize },
}

impl KeyError {
    pub fn hint(&self) -> Option<&'static str> {
        Some(match self {
            KeyError::Read { .. } => "check the key path",
            KeyError::Write { .. } => {
                "choose a --out path in a writable directory where NAME.key and NAME.pub do not exist yet"
            }
            KeyError::Parse { .. } => {
                "pass NAME.key (PKCS#8, BEGIN PRIVATE KEY) to sign and NAME.pub (BEGIN PUBLIC KEY) to trust, as rinbundle keygen writes them"
            }
            KeyError::PrivateGiven { .. } => {
                "give NAME.pub, the public half rinbundle keygen wrote beside NAME.key; NAME.key stays on the machine that signs"
            }
            KeyError::PublicGiven { .. } => {
                "give NAME.key, the private key rinbundle keygen wrote beside NAME.pub"
            }
            KeyError::Random(_) => return None,
            KeyError::NoKeys(_) => {
                "pass --key NAME.pub (repeatable) or --trusted-keys DIR with the builders' public keys"
            }
            KeyError::Threshold { .. } => "lower --threshold or trust more keys",
        })
    }
}

/// Refusals of a bundle's signatures.
#[derive(Debug, thiserror::Error)]
pub enum TrustError {
    #[error("the bundle carries no signatures")]
    Unsigned,
    #[error("the signature entry is malformed: {0}")]
    Malformed(String),
    #[error("signed only by unknown key(s) {}", .found.join(", "))]
    UnknownKeys { found: Vec<String> },
    #[error(
        "the signature by trusted key {key_id} does not match the index: the index was altered or the signature damaged"
    )]
    BadSignature { key_id: String },
    #[error("{have} of the required {need} trusted signatures (signed by: {})", .signers.join(", "))]
    BelowThreshold {
        have: usize,
        need: usize,
        signers: Vec<String>,
    },
}

impl TrustError {
    pub fn hint(&self) -> &'static str {
        match self {
            TrustError::Unsigned => {
                "ask the builder to sign the bundle: rinbundle build --key NAME.key"
            }
            TrustError::Malformed(_) | TrustError::BadSignature { .. } => {
                "the bundle was damaged or altered after it was signed: copy it again from the original (`sha256sum` of both copies shows whether they match)"
            }
            TrustError::UnknownKeys { .. } => {
                "if you trust that key, add its .pub file with --key or to the trusted-keys directory; otherwise do not use this bundle"
            }
            TrustError::BelowThreshold { .. } => {
                "the trust policy needs more signers: have the bundle signed by more of the trusted keys"
            }
        }
    }
}

/// The id of a public key: `sha256:<hex of the SHA-256 of its SPKI DER>`.
pub fn key_id(key: &VerifyingKey) -> String {
    // Encoding a valid ed25519 public key as SPKI DER cannot fail.
    let der = key.to_public_key_der().expect("ed25519 SPKI encoding");
    format!("sha256:{}", hex::encode(Sha256::digest(der.as_bytes())))
}

/// A fresh signing key from the operating system's random source.
pub fn generate() -> Result<SigningKey, KeyError> {
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).map_err(|e| KeyError::Random(e.to_string()))?;
    Ok(SigningKey::from_bytes(&seed))
}

/// Write `NAME.key` (PKCS#8 PEM, mode 0600) and `NAME.pub` (SPKI PEM, mode 0644) for `base` =
/// `NAME`. Neither file may exist yet. Returns (key path, pub path, key id).
pub fn write_keypair(
    base: &Path,
    key: &SigningKey,
) -> Result<(PathBuf, PathBuf, String), KeyError> {
    let key_path = with_suffix(base, ".key");
    let pub_path = with_suffix(base, ".pub");
    // PKCS#8 v1 (no embedded public key), as `openssl genpkey` writes it: OpenSSL 3.0 cannot
    // read the v2 form that ed25519-dalek writes by default.
    let pem = ed25519_dalek::pkcs8::KeypairBytes {
        secret_key: key.to_bytes(),
        public_key: None,
    }
    .to_pkcs8_pem(LineEnding::LF)
    .expect("ed25519 PKCS#8 encoding");
    let public = key
        .verifying_key()
        .to_public_key_pem(LineEnding::LF)
        .expect("ed25519 SPKI encoding");
    for p in [&key_path, &pub_path] {
        if p.exists() {
            return Err(KeyError::Write {
                path: p.clone(),
                source: std::io::Error::new(
                    std::io::ErrorKind::AlreadyExists,
                    "refusing to overwrite an existing key",
                ),
            });
        }
    }
    write_new(&key_path, pem.as_bytes(), 0o600)?;
    if let Err(e) = write_new(&pub_path, public.as_bytes(), 0o644) {
        let _ = fs::remove_file(&key_path);
        return Err(e);
    }
    Ok((key_path, pub_path, key_id(&key.verifying_key())))
}

/// Written whole or not at all, and never over an existing file.
fn write_new(path: &Path, bytes: &[u8], mode: u32) -> Result<(), KeyError> {
    rin_support::fs::write_new(path, bytes, mode).map_err(|e| KeyError::Write {
        path: e.path,
        source: e.source,
    })
}

fn with_suffix(base: &Path, suffix: &str) -> PathBuf {
    let mut s = base.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

fn read_text(path: &Path) -> Result<String, KeyError> {
    fs::read_to_string(path).map_err(|source| KeyError::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// Load a private key (PKCS#8 PEM).
pub fn load_signing_key(path: &Path) -> Result<SigningKey, KeyError> {
    let text = read_text(path)?;
    if text.contains("-----BEGIN PUBLIC KEY-----") {
        return Err(KeyError::PublicGiven {
            path: path.to_path_buf(),
        });
    }
    SigningKey::from_pkcs8_pem(&text).map_err(|e| KeyError::Parse {
        path: path.to_path_buf(),
        expected: "private key (PKCS#8)",
        reason: e.to_string(),
    })
}

/// Load a public key (SPKI PEM).
pub fn load_verifying_key(path: &Path) -> Result<VerifyingKey, KeyError> {
    let text = read_text(path)?;
    if text.contains("-----BEGIN PRIVATE KEY-----") {
        return Err(KeyError::PrivateGiven {
            path: path.to_path_buf(),
        });
    }
    VerifyingKey::from_public_key_pem(text.trim()).map_err(|e| KeyError::Parse {
        path: path.to_path_buf(),
        expected: "public key (SPKI)",
        reason: e.to_string(),
    })
}

/// The `rinbundle.sig` document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignatureFile {
    pub signatures: Vec<SignatureEntry>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignatureEntry {
    pub algorithm: String,
    pub key_id: String,
    /// Standard base64 (with padding) of the 64-byte signature.
    pub signature: String,
}

impl SignatureFile {
    pub fn parse(bytes: &[u8]) -> Result<Self, TrustError> {
        let f: SignatureFile =
            serde_json::from_slice(bytes).map_err(|e| TrustError::Malformed(e.to_string()))?;
        let mut ids = std::collections::HashSet::new();
        for s in &f.signatures {
            if !ids.insert(&s.key_id) {
                return Err(TrustError::Malformed(format!(
                    "key {} signs twice",
                    s.key_id
                )));
            }
        }
        // As FORMAT.md section 5 states them: sorted by key id, canonical JSON.
        if !f.signatures.windows(2).all(|w| w[0].key_id < w[1].key_id) {
            return Err(TrustError::Malformed(
                "the signatures are not sorted by key_id".into(),
            ));
        }
        if rin_bundle::json::canonical_json(&f) != bytes {
            return Err(TrustError::Malformed("it is not canonical JSON".into()));
        }
        Ok(f)
    }

    /// Key ids of all signatures, trusted or not.
    pub fn key_ids(&self) -> Vec<String> {
        self.signatures.iter().map(|s| s.key_id.clone()).collect()
    }
}

/// A detached signature of `bytes`: the raw 64-byte Ed25519 signature, as
/// `openssl pkeyutl -verify -pubin -inkey KEY.pub -rawin -in FILE -sigfile FILE.sig` checks it
/// (release checksums are signed so).
pub fn sign_detached(bytes: &[u8], key: &SigningKey) -> [u8; 64] {
    key.sign(bytes).to_bytes()
}

/// Sign `index` with every key: the canonical `rinbundle.sig` bytes (entries sorted by key id).
pub fn sign(index: &[u8], keys: &[SigningKey]) -> Vec<u8> {
    let mut by_id = BTreeMap::new();
    for k in keys {
        by_id.insert(
            key_id(&k.verifying_key()),
            SignatureEntry {
                algorithm: ALGORITHM.into(),
                key_id: key_id(&k.verifying_key()),
                signature: B64.encode(k.sign(index).to_bytes()),
            },
        );
    }
    rin_bundle::json::canonical_json(&SignatureFile {
        signatures: by_id.into_values().collect(),
    })
}

/// `signatures` (a `rinbundle.sig` document over `bytes`) with `key`'s signature added, as
/// canonical JSON sorted by key id: what [`sign`] with every key at once would have written.
/// None when `key` already signed (nothing to add).
pub fn add(
    bytes: &[u8],
    signatures: &[u8],
    key: &SigningKey,
) -> Result<Option<Vec<u8>>, TrustError> {
    let mut file = SignatureFile::parse(signatures)?;
    let id = key_id(&key.verifying_key());
    if file.signatures.iter().any(|s| s.key_id == id) {
        return Ok(None);
    }
    file.signatures.push(SignatureEntry {
        algorithm: ALGORITHM.into(),
        key_id: id,
        signature: B64.encode(key.sign(bytes).to_bytes()),
    });
    file.signatures.sort_by(|a, b| a.key_id.cmp(&b.key_id));
    Ok(Some(rin_bundle::json::canonical_json(&file)))
}

/// Which keys an installer trusts and how many of them must have signed.
#[derive(Debug, Clone)]
pub struct TrustPolicy {
    keys: BTreeMap<String, VerifyingKey>,
    threshold: usize,
}

impl TrustPolicy {
    /// Keys from files and every `*.pub` in `dir`; `threshold` distinct trusted signatures needed.
    pub fn load(files: &[PathBuf], dir: Option<&Path>, threshold: usize) -> Result<Self, KeyError> {
        let mut paths: Vec<PathBuf> = files.to_vec();
        if let Some(dir) = dir {
            let err = |source| KeyError::Read {
                path: dir.to_path_buf(),
                source,
            };
            let mut found: Vec<PathBuf> = fs::read_dir(dir)
                .map_err(err)?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "pub"))
                .collect();
            found.sort();
            paths.extend(found);
        }
        let mut keys = Vec::new();
        for p in &paths {
            keys.push(load_verifying_key(p)?);
        }
        Self::new(keys, threshold)
    }

    pub fn new(keys: Vec<VerifyingKey>, threshold: usize) -> Result<Self, KeyError> {
        let keys: BTreeMap<String, VerifyingKey> =
            keys.into_iter().map(|k| (key_id(&k), k)).collect();
        if keys.is_empty() {
            return Err(KeyError::NoKeys("no public key was given".into()));
        }
        if threshold == 0 || threshold > keys.len() {
            return Err(KeyError::Threshold {
                threshold,
                keys: keys.len(),
            });
        }
        Ok(TrustPolicy { keys, threshold })
    }

    pub fn key_ids(&self) -> Vec<String> {
        self.keys.keys().cloned().collect()
    }

    pub fn threshold(&self) -> usize {
        self.threshold
    }

    /// Check the signatures over `index`; the ids of the trusted keys that signed.
    pub fn evaluate(&self, index: &[u8], signatures: &[u8]) -> Result<Vec<String>, TrustError> {
        self.evaluate_with(index, signatures, &[])
    }

    /// [`Self::evaluate`], with `vouched`: keys that already vouch for `index` elsewhere (the
    /// signers of a split bundle's part list, which names the index by its sha256). Those that
    /// are trusted count toward the threshold beside the signatures' own.
    pub fn evaluate_with(
        &self,
        index: &[u8],
        signatures: &[u8],
        vouched: &[String],
    ) -> Result<Vec<String>, TrustError> {
        let file = SignatureFile::parse(signatures)?;
        let mut signers = self.valid_signers(index, &file)?;
        for v in vouched {
            if self.keys.contains_key(v) && !signers.contains(v) {
                signers.push(v.clone());
            }
        }
        signers.sort();
        if signers.is_empty() {
            if file.signatures.is_empty() {
                return Err(TrustError::Unsigned);
            }
            return Err(TrustError::UnknownKeys {
                found: file.key_ids(),
            });
        }
        if signers.len() < self.threshold {
            return Err(TrustError::BelowThreshold {
                have: signers.len(),
                need: self.threshold,
                signers,
            });
        }
        Ok(signers)
    }

    /// The trusted keys whose signatures over `bytes` verify, without the threshold; at least
    /// one. A trusted key's signature that does not verify refuses.
    pub fn signers(&self, bytes: &[u8], signatures: &[u8]) -> Result<Vec<String>, TrustError> {
        let file = SignatureFile::parse(signatures)?;
        let signers = self.valid_signers(bytes, &file)?;
        if signers.is_empty() {
            if file.signatures.is_empty() {
                return Err(TrustError::Unsigned);
            }
            return Err(TrustError::UnknownKeys {
                found: file.key_ids(),
            });
        }
        Ok(signers)
    }

    fn valid_signers(&self, bytes: &[u8], file: &SignatureFile) -> Result<Vec<String>, TrustError> {
        let mut signers = Vec::new();
        for s in &file.signatures {
            let Some(key) = self.keys.get(&s.key_id) else {
                continue;
            };
            if s.algorithm != ALGORITHM {
                return Err(TrustError::Malformed(format!(
                    "unsupported algorithm {:?}",
                    s.algorithm
                )));
            }
            let bad = || TrustError::BadSignature {
                key_id: s.key_id.clone(),
            };
            let raw = B64.decode(&s.signature).map_err(|_| bad())?;
            let sig = ed25519_dalek::Signature::from_slice(&raw).map_err(|_| bad())?;
            key.verify_strict(bytes, &sig).map_err(|_| bad())?;
            signers.push(s.key_id.clone());
        }
        Ok(signers)
    }
}

impl rin_bundle::Trust for TrustPolicy {
    fn check(
        &self,
        index: &[u8],
        signatures: &[u8],
        vouched: &[String],
    ) -> Result<Vec<String>, Box<dyn std::error::Error + Send + Sync>> {
        self.evaluate_with(index, signatures, vouched)
            .map_err(|e| Box::new(e) as _)
    }

    fn signers(
        &self,
        bytes: &[u8],
        signatures: &[u8],
    ) -> Result<Vec<String>, Box<dyn std::error::Error + Send + Sync>> {
        TrustPolicy::signers(self, bytes, signatures).map_err(|e| Box::new(e) as _)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(n: usize) -> Vec<SigningKey> {
        (0..n).map(|_| generate().unwrap()).collect()
    }

    #[test]
    fn pem_round_trip_and_key_id() {
        let dir = tempfile::tempdir().unwrap();
        let k = generate().unwrap();
        let (kp, pp, id) = write_keypair(&dir.path().join("site"), &k).unwrap();
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            fs::metadata(&kp).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(load_signing_key(&kp).unwrap().to_bytes(), k.to_bytes());
        assert_eq!(key_id(&load_verifying_key(&pp).unwrap()), id);
        assert!(
            fs::read_to_string(&kp)
                .unwrap()
                .starts_with("-----BEGIN PRIVATE KEY-----")
        );
        assert!(
            fs::read_to_string(&pp)
                .unwrap()
                .starts_with("-----BEGIN PUBLIC KEY-----")
        );
        assert!(
            write_keypair(&dir.path().join("site"), &k).is_err(),
            "never overwrites"
        );
        // Each half where the other is wanted is named as such.
        let e = load_verifying_key(&kp).unwrap_err();
        assert!(matches!(e, KeyError::PrivateGiven { .. }), "{e}");
        assert!(e.hint().unwrap().starts_with("give NAME.pub"));
        let e = load_signing_key(&pp).unwrap_err();
        assert!(matches!(e, KeyError::PublicGiven { .. }), "{e}");
        assert!(
            e.to_string().ends_with("signing needs the private key"),
            "{e}"
        );
        // Anything else is not a key of ours.
        fs::write(dir.path().join("x.pub"), "ssh-ed25519 AAAA\n").unwrap();
        assert!(matches!(
            load_verifying_key(&dir.path().join("x.pub")),
            Err(KeyError::Parse { .. })
        ));
    }

    #[test]
    fn a_signature_document_must_be_canonical_and_sorted() {
        let ks = keys(2);
        let index = b"{\"format\":\"rinbundle/v1\"}";
        let good = sign(index, &ks);
        let parsed = SignatureFile::parse(&good).unwrap();
        assert_eq!(parsed.signatures.len(), 2);
        let mut swapped = parsed.clone();
        swapped.signatures.reverse();
        let unsorted = rin_bundle::json::canonical_json(&swapped);
        assert!(matches!(
            SignatureFile::parse(&unsorted),
            Err(TrustError::Malformed(ref m)) if m.contains("not sorted")
        ));
        let pretty = serde_json::to_vec_pretty(&parsed).unwrap();
        assert!(matches!(
            SignatureFile::parse(&pretty),
            Err(TrustError::Malformed(ref m)) if m.contains("not canonical")
        ));
    }

    #[test]
    fn threshold_two_of_three() {
        let ks = keys(3);
        let policy = TrustPolicy::new(ks.iter().map(|k| k.verifying_key()).collect(), 2).unwrap();
        let index = b"{\"format\":\"rinbundle/v1\"}";
        let two = sign(index, &ks[..2]);
        assert_eq!(policy.evaluate(index, &two).unwrap().len(), 2);
        let one = sign(index, &ks[2..]);
        assert!(matches!(
            policy.evaluate(index, &one),
            Err(TrustError::BelowThreshold {
                have: 1,
                need: 2,
                ..
            })
        ));
        // The same key twice is one signer, not two.
        let dup = sign(index, &[ks[0].clone(), ks[0].clone()]);
        assert!(matches!(
            policy.evaluate(index, &dup),
            Err(TrustError::BelowThreshold { have: 1, .. })
        ));
    }

    #[test]
    fn adding_a_signature_gives_what_signing_with_both_keys_gives() {
        let ks = keys(3);
        let index = b"{\"format\":\"rinbundle/v1\"}";
        let one = sign(index, &ks[..1]);
        let added = add(index, &one, &ks[1]).unwrap().unwrap();
        assert_eq!(added, sign(index, &ks[..2]));
        assert_eq!(add(index, &added, &ks[0]).unwrap(), None, "already signed");
        assert!(matches!(
            add(index, b"[]", &ks[2]),
            Err(TrustError::Malformed(_))
        ));
    }

    #[test]
    fn a_part_list_signers_count_toward_the_index_threshold() {
        let ks = keys(3);
        let policy =
            TrustPolicy::new(ks[..2].iter().map(|k| k.verifying_key()).collect(), 2).unwrap();
        let index = b"index";
        let ids: Vec<String> = ks.iter().map(|k| key_id(&k.verifying_key())).collect();
        let by_first = sign(index, &ks[..1]);
        assert!(policy.evaluate(index, &by_first).is_err());
        // Vouched by the second trusted key: two.
        assert_eq!(
            policy
                .evaluate_with(index, &by_first, &ids[1..2])
                .unwrap()
                .len(),
            2
        );
        // The first again, or an untrusted key, does not make two.
        assert!(matches!(
            policy.evaluate_with(index, &by_first, &[ids[0].clone(), ids[2].clone()]),
            Err(TrustError::BelowThreshold { have: 1, .. })
        ));
        // Vouching does not excuse a bad signature by a trusted key.
        assert!(matches!(
            policy.evaluate_with(b"indeX", &by_first, &ids[..2]),
            Err(TrustError::BadSignature { .. })
        ));
        // A list needs one trusted signer, whatever the threshold.
        assert_eq!(policy.signers(index, &by_first).unwrap(), ids[..1].to_vec());
        assert!(matches!(
            policy.signers(index, &sign(index, &ks[2..])),
            Err(TrustError::UnknownKeys { .. })
        ));
    }

    #[test]
    fn refusals() {
        let ks = keys(2);
        let policy = TrustPolicy::new(vec![ks[0].verifying_key()], 1).unwrap();
        let index = b"index";
        assert!(matches!(
            policy.evaluate(index, &sign(index, &[])),
            Err(TrustError::Unsigned)
        ));
        assert!(matches!(
            policy.evaluate(index, &sign(index, &ks[1..])),
            Err(TrustError::UnknownKeys { .. })
        ));
        assert!(matches!(
            policy.evaluate(b"indeX", &sign(index, &ks[..1])),
            Err(TrustError::BadSignature { .. })
        ));
        assert!(matches!(
            policy.evaluate(index, b"{}"),
            Err(TrustError::Malformed(_))
        ));
        // One key listed twice is malformed, not two signers.
        let one: SignatureFile = serde_json::from_slice(&sign(index, &ks[..1])).unwrap();
        let twice = SignatureFile {
            signatures: vec![one.signatures[0].clone(), one.signatures[0].clone()],
        };
        let twice = rin_bundle::json::canonical_json(&twice);
        assert!(
            matches!(policy.evaluate(index, &twice), Err(TrustError::Malformed(m)) if m.contains("twice"))
        );
        assert!(matches!(
            TrustPolicy::new(vec![ks[0].verifying_key()], 2),
            Err(KeyError::Threshold { .. })
        ));
        assert!(matches!(
            TrustPolicy::new(vec![], 1),
            Err(KeyError::NoKeys(_))
        ));
    }
}
