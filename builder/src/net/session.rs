//! What one run uses to reach its sources: the options, the download routine, the cache, the
//! HTTP client and the registry clients, made once and shared by every fetch.

use crate::cache::Cache;
use crate::error::Result;
use crate::net::download::Downloader;
use crate::net::http;
use crate::net::registry::{self, Registries, RegistryOptions, parse_reference};
use crate::spec::Stack;
use rin_bundle::Progress;
use std::path::PathBuf;
use std::sync::Arc;

/// How to fetch.
#[derive(Debug, Clone)]
pub struct FetchOptions {
    /// The cache directory (content-addressed blobs).
    pub cache: PathBuf,
    pub registry: RegistryOptions,
    /// Downloads at a time.
    pub jobs: usize,
    /// Refuse to build when the lock is missing or would change.
    pub locked: bool,
    /// The lock file; default: the stack's `lock:` (images.lock in the stack directory).
    pub lock_path: Option<PathBuf>,
    /// Attempts per download (at least 1).
    pub attempts: u32,
}

impl FetchOptions {
    pub fn new(cache: PathBuf) -> Self {
        FetchOptions {
            cache,
            registry: RegistryOptions::default(),
            jobs: 8,
            locked: false,
            lock_path: None,
            attempts: 6,
        }
    }

    pub fn lock_path(&self, stack: &Stack) -> PathBuf {
        self.lock_path
            .clone()
            .unwrap_or_else(|| stack.resolve(&stack.spec.lock))
    }
}

/// Everything one run uses to reach its sources.
pub struct Session {
    pub net: Arc<Downloader>,
    pub cache: Arc<Cache>,
    pub http: reqwest::Client,
    pub regs: Arc<Registries>,
    pub opts: RegistryOptions,
}

pub(crate) async fn session(
    stack: &Stack,
    opts: &FetchOptions,
    reporter: Arc<dyn Progress>,
) -> Result<Session> {
    let cache = Cache::open(&opts.cache)?;
    let mut net = Downloader::new(reporter);
    net.policy.attempts = opts.attempts.max(1);
    let http = http::client(&opts.registry)?;
    let mut hosts: Vec<String> = Vec::new();
    for i in stack.spec.images.iter().filter(|i| i.layout.is_none()) {
        hosts.push(parse_reference(&i.reference)?.registry().to_string());
    }
    for c in &stack.spec.charts {
        if let Some(h) = c.repo.as_deref().and_then(registry::oci_host) {
            hosts.push(
                parse_reference(&format!("{h}/chart"))?
                    .registry()
                    .to_string(),
            );
        }
    }
    hosts.sort();
    hosts.dedup();
    let regs = Registries::connect(&hosts, &opts.registry, &http).await?;
    Ok(Session {
        net: Arc::new(net),
        cache: Arc::new(cache),
        http,
        regs: Arc::new(regs),
        opts: opts.registry.clone(),
    })
}
