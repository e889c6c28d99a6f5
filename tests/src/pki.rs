//! Test certificates made with openssl: a CA, and keys with certificates it signs (EC P-256),
//! for the registry's TLS and the Kubernetes control plane's serving and client certificates.

use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};

/// Run `openssl ARGS` in `dir`; a failure names the arguments and openssl's message.
pub fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl runs (apt-get install openssl)");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A new EC P-256 key, unencrypted (`openssl req` arguments).
const NEW_KEY: [&str; 5] = [
    "-newkey",
    "ec",
    "-pkeyopt",
    "ec_paramgen_curve:prime256v1",
    "-nodes",
];

/// A self-signed CA in `dir`: `ca.key`, `ca.crt` (subject `/CN=NAME`).
pub fn ca(dir: &Path, name: &str) {
    let subject = format!("/CN={name}");
    let mut args = vec!["req", "-x509"];
    args.extend(NEW_KEY);
    args.extend([
        "-keyout", "ca.key", "-out", "ca.crt", "-days", "3650", "-subj", &subject,
    ]);
    openssl(dir, &args);
}

/// `NAME.key` and `NAME.crt` in `dir`, for `subject`, signed by the CA there, with the
/// extensions `ext` (openssl's extension lines: `subjectAltName=...`, `extendedKeyUsage=...`).
/// Serial numbers differ across the certificates of one test process, also when tests issue
/// theirs at the same time.
pub fn issue(dir: &Path, name: &str, subject: &str, ext: &str) {
    static NEXT_SERIAL: AtomicU64 = AtomicU64::new(2);
    let (key, csr) = (format!("{name}.key"), format!("{name}.csr"));
    let mut args = vec!["req"];
    args.extend(NEW_KEY);
    args.extend(["-keyout", &key, "-out", &csr, "-subj", subject]);
    openssl(dir, &args);
    std::fs::write(dir.join(format!("{name}.ext")), ext).expect("write the extensions");
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &format!("{name}.csr"),
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-set_serial",
            &NEXT_SERIAL.fetch_add(1, Ordering::SeqCst).to_string(),
            "-days",
            "3650",
            "-out",
            &format!("{name}.crt"),
            "-extfile",
            &format!("{name}.ext"),
        ],
    );
}
