//! The loopback rule: plain HTTP is allowed to these hosts without being asked for; and how a
//! TLS failure about the server's certificate reads.

/// The default of both binaries' `--stall-timeout`: how long a server may send nothing (no
/// answer, no byte of a transfer) before the request is given up and tried again.
pub const DEFAULT_STALL: std::time::Duration = std::time::Duration::from_secs(120);

/// A TLS failure about the server's certificate (rustls and OpenSSL wording): retrying does not
/// help, a CA file does.
pub fn is_certificate_error(text: &str) -> bool {
    let t = text.to_ascii_lowercase();
    t.contains("certificate") || t.contains("unknownissuer") || t.contains("badsignature")
}

/// True for `localhost`, `127.x.y.z` and `[::1]`, with or without a port.
pub fn is_loopback(host: &str) -> bool {
    let h = if let Some(rest) = host.strip_prefix('[') {
        rest.split(']').next().unwrap_or_default()
    } else {
        host.rsplit_once(':').map_or(host, |(h, _)| h)
    };
    h == "localhost"
        || h == "::1"
        || h.parse::<std::net::Ipv4Addr>()
            .is_ok_and(|a| a.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn certificate_errors_are_recognised() {
        assert!(is_certificate_error(
            "invalid peer certificate: UnknownIssuer"
        ));
        assert!(is_certificate_error(
            "invalid peer certificate: BadSignature"
        ));
        assert!(!is_certificate_error("connection refused"));
    }

    #[test]
    fn loopback_hosts() {
        for h in [
            "localhost",
            "localhost:5000",
            "127.0.0.1",
            "127.9.9.9:1",
            "[::1]:5000",
        ] {
            assert!(is_loopback(h), "{h}");
        }
        for h in [
            "registry.local:5000",
            "10.0.0.1",
            "128.0.0.1:80",
            "localhost.evil.com",
        ] {
            assert!(!is_loopback(h), "{h}");
        }
    }
}
