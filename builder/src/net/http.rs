//! Plain HTTP(S) downloads (Helm repositories, K3s releases) with `reqwest`: the same cache,
//! retries and `Range` resume as registry blobs. Proxies come from the usual environment
//! variables (`HTTPS_PROXY`, `HTTP_PROXY`, `NO_PROXY`), which reqwest reads by default.

use crate::cache::Cache;
use crate::error::{BuildError, Result};
use crate::net::download::{Body, Downloader, Failure};
use crate::net::registry::{RegistryOptions, is_loopback};
use futures_util::{StreamExt, TryStreamExt};
use reqwest::StatusCode;
use reqwest::header::RANGE;
use std::path::PathBuf;

/// Largest document read into memory (a Helm repository's index.yaml, a checksum list).
pub const MAX_SMALL: u64 = 64 << 20;

pub fn client(opts: &RegistryOptions) -> Result<reqwest::Client> {
    let mut b = reqwest::Client::builder()
        .user_agent(concat!("rinbundle/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(std::time::Duration::from_secs(30))
        .read_timeout(opts.stall());
    for pem in opts.certificates()? {
        let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| BuildError::Fetch {
            what: "CA file".into(),
            reason: e.to_string(),
        })?;
        b = b.tls_certs_merge(certs);
    }
    b.build().map_err(|e| BuildError::Fetch {
        what: "HTTP client".into(),
        reason: e.to_string(),
    })
}

/// The URL to fetch `url` from: through the first `--url-mirror` whose prefix it starts with
/// (the longest prefix wins), else itself. Refuse plain `http://` except to loopback or a host
/// given with `--insecure-registry`.
pub fn check_scheme(url: &str, opts: &RegistryOptions) -> Result<reqwest::Url> {
    let mirrored = opts
        .url_mirrors
        .iter()
        .filter(|(from, _)| url.starts_with(from.as_str()))
        .max_by_key(|(from, _)| from.len())
        .map(|(from, to)| format!("{to}{}", &url[from.len()..]));
    let url = mirrored.as_deref().unwrap_or(url);
    let u = reqwest::Url::parse(url).map_err(|e| BuildError::Fetch {
        what: url.into(),
        reason: format!("not a valid URL: {e}"),
    })?;
    match u.scheme() {
        "https" => Ok(u),
        "http" => {
            let host = match (u.host_str(), u.port()) {
                (Some(h), Some(p)) => format!("{h}:{p}"),
                (Some(h), None) => h.to_string(),
                _ => String::new(),
            };
            if is_loopback(&host) || opts.insecure.contains(&host) {
                Ok(u)
            } else {
                Err(BuildError::Fetch {
                    what: url.into(),
                    reason: format!(
                        "plain HTTP to {host} is refused; use https, or pass --insecure-registry {host}"
                    ),
                })
            }
        }
        s => Err(BuildError::Fetch {
            what: url.into(),
            reason: format!("unsupported URL scheme {s:?}"),
        }),
    }
}

fn status_failure(url: &str, status: StatusCode) -> Failure {
    let reason = format!("HTTP {status} from {url}");
    if status.is_server_error()
        || status == StatusCode::TOO_MANY_REQUESTS
        || status == StatusCode::REQUEST_TIMEOUT
    {
        Failure::Transient(reason)
    } else if status == StatusCode::NOT_FOUND {
        Failure::Fatal(BuildError::NotFound {
            what: url.into(),
            reason,
        })
    } else if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
        Failure::Fatal(BuildError::Auth {
            what: url.into(),
            reason,
        })
    } else {
        Failure::Fatal(BuildError::Fetch {
            what: url.into(),
            reason,
        })
    }
}

fn transport(e: reqwest::Error) -> Failure {
    let what = e.url().map(|u| u.to_string()).unwrap_or_default();
    crate::net::failure::transport(&what, &e)
}

/// GET a small document into memory (at most [`MAX_SMALL`] bytes), with retries.
pub async fn get_small(
    net: &Downloader,
    http: &reqwest::Client,
    url: &reqwest::Url,
) -> Result<Vec<u8>> {
    net.retry(url.as_str(), || async {
        let resp = http.get(url.clone()).send().await.map_err(transport)?;
        if !resp.status().is_success() {
            return Err(status_failure(url.as_str(), resp.status()));
        }
        let mut out = Vec::new();
        let mut stream = resp.bytes_stream();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(transport)?;
            out.extend_from_slice(&chunk);
            if out.len() as u64 > MAX_SMALL {
                return Err(Failure::Fatal(BuildError::Fetch {
                    what: url.to_string(),
                    reason: format!("larger than {MAX_SMALL} bytes"),
                }));
            }
        }
        Ok(out)
    })
    .await
}

/// Download `url`, whose sha256 is known, into the cache (resumed with `Range` when the server
/// answers 206).
pub async fn download(
    net: &Downloader,
    http: &reqwest::Client,
    cache: &Cache,
    url: &reqwest::Url,
    sha256: &str,
    what: &str,
) -> Result<PathBuf> {
    net.download(cache, sha256, None, what, |offset| {
        let url = url.clone();
        async move {
            let mut req = http.get(url.clone());
            if offset > 0 {
                req = req.header(RANGE, format!("bytes={offset}-"));
            }
            let resp = req.send().await.map_err(transport)?;
            let status = resp.status();
            let partial = status == StatusCode::PARTIAL_CONTENT && offset > 0;
            if !status.is_success() {
                return Err(status_failure(url.as_str(), status));
            }
            let stream = resp.bytes_stream().map_err(std::io::Error::other).boxed();
            Ok(if partial {
                Body::Partial(stream)
            } else {
                Body::Full(stream)
            })
        }
    })
    .await
    .map(|got| got.path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_http_only_to_loopback_or_a_named_insecure_host() {
        let none = RegistryOptions::default();
        assert!(check_scheme("https://charts.example.com/x", &none).is_ok());
        assert!(check_scheme("http://127.0.0.1:8080/x", &none).is_ok());
        assert!(check_scheme("http://localhost/x", &none).is_ok());
        assert!(check_scheme("http://[::1]:5000/x", &none).is_ok());
        let err = check_scheme("http://mirror.lan:8080/x", &none).unwrap_err();
        assert!(
            err.to_string()
                .contains("--insecure-registry mirror.lan:8080"),
            "{err}"
        );
        let named = RegistryOptions {
            insecure: vec!["mirror.lan:8080".into()],
            ..Default::default()
        };
        assert!(check_scheme("http://mirror.lan:8080/x", &named).is_ok());
        assert!(check_scheme("http://mirror.lan:9090/x", &named).is_err());
        assert!(check_scheme("ftp://127.0.0.1/x", &none).is_err());
    }
}
