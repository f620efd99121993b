//! A client for the OCI distribution API.
//!
//! Written here rather than taken from `oci-client`: skiff's lazy reader needs
//! blocking range reads, resumable streams, bounded retries on every call and
//! token refresh mid-stream, none of which that crate exposes. It is small.
//!
//! Transient faults (connection errors, timeouts, HTTP 5xx and 429, truncated
//! bodies) are retried with exponential backoff for up to `retry_for` per
//! request (a stream: since it last made progress). A bound in time rather
//! than in attempts keeps reads working through a flaky link while still
//! failing within a known delay when the registry is gone.
//! A 401 triggers one (re-)authentication per request, so expired tokens are
//! refreshed transparently.

use std::collections::HashMap;
use std::io::{self, Read};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ureq::http::Response;
use ureq::{Agent, Body, SendBody};

use crate::auth::{lookup_credentials, parse_challenge, Challenge, Credentials};
use crate::error::{OciError, Result};
use crate::manifest::{valid_digest_or_err, Descriptor, MANIFEST_ACCEPT, MAX_DOCUMENT};
use crate::reference::RegistryRef;
use crate::repository::{FetchedManifest, Repository};
use crate::verify::VerifyingReader;

#[derive(Debug, Clone)]
pub struct RegistryOptions {
    /// Use plain HTTP even for non-loopback registries.
    pub plain_http: bool,
    /// How long to keep retrying a request that fails transiently.
    pub retry_for: Duration,
    /// How long to keep retrying a registry that refuses connections or
    /// whose name does not resolve: short, so a wrong address fails at
    /// once. A process that serves reads raises it to `retry_for` with
    /// [`wait_out_unreachable_registries`], to ride out a restart.
    pub unreachable_retry_for: Duration,
    /// Connect timeout and longest wait for any single read.
    pub timeout: Duration,
    /// First backoff delay; doubles per attempt, capped at 2 s.
    pub backoff: Duration,
    /// An HTTP(S) proxy for every request (default: `HTTPS_PROXY` and friends).
    pub proxy: Option<String>,
    /// A pull-through mirror (a registry mirror, or a P2P daemon such as
    /// Dragonfly's in mirror mode) tried first for every pull.
    pub mirror: Option<String>,
}

impl Default for RegistryOptions {
    fn default() -> Self {
        Self {
            plain_http: false,
            retry_for: Duration::from_secs(30),
            unreachable_retry_for: Duration::from_secs(1),
            timeout: Duration::from_secs(30),
            backoff: Duration::from_millis(200),
            proxy: None,
            mirror: None,
        }
    }
}

/// One registry host; shared by every repository on it.
pub struct RegistryClient {
    agent: Agent,
    /// `scheme://host[:port]` of the pull-through mirror, if any.
    mirror: Option<String>,
    base: String,
    registry: String,
    credentials: Option<Credentials>,
    /// Authorization header value per scope.
    auth_cache: Mutex<HashMap<String, String>>,
    options: RegistryOptions,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Method {
    Get,
    Head,
    Post,
    Put,
}

/// A request body that can be produced again for a retry.
enum ReqBody<'a> {
    Empty,
    Bytes(&'a [u8]),
    Reopen(&'a mut dyn FnMut() -> io::Result<Box<dyn Read + Send>>, u64),
}

fn transient_status(s: u16) -> bool {
    s == 429 || s == 408 || (500..=599).contains(&s)
}

fn is_transient(e: &OciError) -> bool {
    match e {
        OciError::Io { .. } | OciError::Network { .. } => true,
        OciError::Http { status, .. } => transient_status(*status),
        _ => false,
    }
}

/// One logical request's retries: exponential backoff, bounded by time.
struct Retry {
    started: Instant,
    attempt: u32,
    budget: Duration,
    base: Duration,
}

impl Retry {
    /// Sleeps before the next attempt; false once the time budget is spent.
    fn wait(&mut self) -> bool {
        let delay = self
            .base
            .saturating_mul(1 << self.attempt.min(4))
            .min(Duration::from_secs(2));
        if self.started.elapsed() + delay > self.budget {
            return false;
        }
        std::thread::sleep(delay);
        self.attempt += 1;
        true
    }
}

fn read_error_body(resp: Response<Body>) -> String {
    let mut body = resp.into_body();
    let text = body
        .with_config()
        .limit(4096)
        .read_to_string()
        .unwrap_or_default();
    let text = text.trim();
    if text.is_empty() {
        "(empty body)".to_string()
    } else {
        text.chars().take(400).collect()
    }
}

/// Percent-encodes a query value.
fn qs(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for b in v.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

impl RegistryClient {
    pub fn new(registry_ref: &RegistryRef, options: RegistryOptions) -> Result<Arc<Self>> {
        let scheme = if options.plain_http || registry_ref.is_loopback() {
            "http"
        } else {
            "https"
        };
        let mut config = Agent::config_builder();
        if let Some(p) = &options.proxy {
            let proxy = ureq::Proxy::new(p).map_err(|e| {
                OciError::Unsupported(format!("proxy {p:?} is not a proxy URL: {e}"))
            })?;
            config = config.proxy(Some(proxy));
        }
        let mirror = options.mirror.as_ref().map(|m| {
            let m = m.trim_end_matches('/');
            if m.contains("://") {
                m.to_string()
            } else {
                format!("https://{m}")
            }
        });
        let agent: Agent = config
            .http_status_as_error(false)
            .timeout_connect(Some(options.timeout))
            .timeout_per_read(Some(options.timeout))
            .timeout_per_write(Some(options.timeout))
            .user_agent(concat!("skiff/", env!("CARGO_PKG_VERSION")))
            .max_idle_connections_per_host(16)
            .build()
            .into();
        Ok(Arc::new(Self {
            agent,
            mirror,
            base: format!("{scheme}://{}", registry_ref.api_host()),
            registry: registry_ref.registry.clone(),
            credentials: lookup_credentials(&registry_ref.registry),
            auth_cache: Mutex::new(HashMap::new()),
            options,
        }))
    }

    pub fn registry(&self) -> &str {
        &self.registry
    }

    fn retry(&self) -> Retry {
        self.retry_within(self.options.retry_for)
    }

    fn retry_within(&self, budget: Duration) -> Retry {
        Retry {
            started: Instant::now(),
            attempt: 0,
            budget,
            base: self.options.backoff,
        }
    }

    fn cached_auth(&self, scope: &str) -> Option<String> {
        self.auth_cache.lock().ok()?.get(scope).cloned()
    }

    /// Answers a 401 challenge for `scope`, caching the header to send.
    fn authenticate(&self, challenge: Option<Challenge>, scope: &str, what: &str) -> Result<()> {
        let unauthorized = || OciError::Unauthorized {
            registry: self.registry.clone(),
            what: what.to_string(),
        };
        let header = match challenge {
            Some(Challenge::Basic) => self
                .credentials
                .as_ref()
                .ok_or_else(unauthorized)?
                .basic_header(),
            Some(Challenge::Bearer {
                realm,
                service,
                scope: asked,
            }) => {
                let mut url = realm.clone();
                url.push(if realm.contains('?') { '&' } else { '?' });
                let mut params = Vec::new();
                if let Some(s) = service {
                    params.push(format!("service={}", qs(&s)));
                }
                let mut scopes: Vec<&str> = scope.split(' ').filter(|s| !s.is_empty()).collect();
                if let Some(a) = asked.as_deref() {
                    scopes.extend(a.split(' ').filter(|s| !s.is_empty()));
                }
                scopes.sort_unstable();
                scopes.dedup();
                params.extend(scopes.iter().map(|s| format!("scope={}", qs(s))));
                url.push_str(&params.join("&"));
                let mut req = self.agent.get(&url);
                if let Some(c) = &self.credentials {
                    req = req.header("Authorization", c.basic_header());
                }
                let resp = req.call().map_err(|e| OciError::Network {
                    url: realm.clone(),
                    source: Box::new(e),
                })?;
                let status = resp.status().as_u16();
                if status == 401 || status == 403 {
                    return Err(unauthorized());
                }
                if status != 200 {
                    return Err(OciError::Http {
                        method: "GET",
                        url: realm,
                        status,
                        body: read_error_body(resp),
                    });
                }
                let body = resp
                    .into_body()
                    .with_config()
                    .limit(MAX_DOCUMENT)
                    .read_to_vec()
                    .map_err(|e| OciError::Network {
                        url: realm.clone(),
                        source: Box::new(e),
                    })?;
                let v: serde_json::Value =
                    serde_json::from_slice(&body).map_err(|e| OciError::Json {
                        context: format!("token from {realm}"),
                        source: e,
                    })?;
                let token = v
                    .get("token")
                    .or_else(|| v.get("access_token"))
                    .and_then(|t| t.as_str())
                    .ok_or_else(|| {
                        OciError::Unsupported(format!("token server {realm} returned no token"))
                    })?;
                format!("Bearer {token}")
            }
            None => return Err(unauthorized()),
        };
        if let Ok(mut cache) = self.auth_cache.lock() {
            cache.insert(scope.to_string(), header);
        }
        Ok(())
    }

    /// Sends a request with auth, retries and backoff. Returns any response
    /// that is not a transient failure or a 401; the caller judges the status.
    fn send(
        &self,
        method: Method,
        url: &str,
        scope: &str,
        headers: &[(&str, String)],
        body: ReqBody<'_>,
        what: &str,
    ) -> Result<Response<Body>> {
        self.send_within(
            method,
            url,
            scope,
            headers,
            body,
            what,
            self.options.retry_for,
        )
    }

    /// [`Self::send`], retrying transient faults for at most `budget`.
    #[allow(clippy::too_many_arguments)]
    fn send_within(
        &self,
        method: Method,
        url: &str,
        scope: &str,
        headers: &[(&str, String)],
        mut body: ReqBody<'_>,
        what: &str,
        budget: Duration,
    ) -> Result<Response<Body>> {
        let mut authenticated = false;
        let mut retry = self.retry_within(budget);
        let started = std::time::Instant::now();
        loop {
            let auth = self.cached_auth(scope);
            let result = {
                macro_rules! with_headers {
                    ($req:expr) => {{
                        let mut r = $req;
                        for (k, v) in headers {
                            r = r.header(*k, v.as_str());
                        }
                        if let Some(a) = &auth {
                            r = r.header("Authorization", a.as_str());
                        }
                        r
                    }};
                }
                match method {
                    Method::Get => with_headers!(self.agent.get(url)).call(),
                    Method::Head => with_headers!(self.agent.head(url)).call(),
                    Method::Post | Method::Put => {
                        let req = if method == Method::Post {
                            self.agent.post(url)
                        } else {
                            self.agent.put(url)
                        };
                        let req = with_headers!(req);
                        match &mut body {
                            ReqBody::Empty => {
                                req.header("Content-Length", "0").send(SendBody::none())
                            }
                            ReqBody::Bytes(b) => req.send(*b),
                            ReqBody::Reopen(open, len) => {
                                let mut reader = open().map_err(|e| OciError::Io {
                                    context: format!("reading {what} to upload"),
                                    source: e,
                                })?;
                                req.header("Content-Length", len.to_string())
                                    .send(SendBody::from_reader(&mut reader))
                            }
                        }
                    }
                }
            };
            match result {
                Ok(resp) => {
                    let status = resp.status().as_u16();
                    if status == 401 && !authenticated {
                        authenticated = true;
                        let challenge = resp
                            .headers()
                            .get("www-authenticate")
                            .and_then(|h| h.to_str().ok())
                            .and_then(parse_challenge);
                        drop(resp);
                        self.authenticate(challenge, scope, what)?;
                        continue;
                    }
                    if status == 401 || status == 403 {
                        return Err(OciError::Unauthorized {
                            registry: self.registry.clone(),
                            what: what.to_string(),
                        });
                    }
                    if transient_status(status) {
                        tracing::warn!(
                            url,
                            status,
                            attempt = retry.attempt,
                            "registry returned a transient error"
                        );
                        if retry.wait() {
                            drop(resp);
                            continue;
                        }
                    }
                    return Ok(resp);
                }
                Err(e) => {
                    if let Some(reason) = unreachable_reason(&e) {
                        // A few quick tries ride out a restart; a registry
                        // that is not there fails in about a second.
                        tracing::debug!(url, error = %e, attempt = retry.attempt, "registry unreachable");
                        let patience = if SERVING.load(std::sync::atomic::Ordering::Relaxed) {
                            budget
                        } else {
                            self.options.unreachable_retry_for.min(budget)
                        };
                        if started.elapsed() < patience && retry.wait() {
                            continue;
                        }
                        return Err(self.unreachable(reason));
                    }
                    tracing::warn!(url, error = %e, attempt = retry.attempt, "registry request failed");
                    if retry.wait() {
                        continue;
                    }
                    return Err(OciError::Network {
                        url: url.to_string(),
                        source: Box::new(e),
                    });
                }
            }
        }
    }
}

/// Set once this process serves reads (a mount daemon whose mount is
/// ready): from then on, its users need the data more than a quick error.
static SERVING: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// From now on, requests in this process wait out a registry that refuses
/// connections or does not resolve for their full retry budget.
pub fn wait_out_unreachable_registries() {
    SERVING.store(true, std::sync::atomic::Ordering::Relaxed);
}

/// Why a request never reached a registry, if that is what happened.
fn unreachable_reason(e: &ureq::Error) -> Option<&'static str> {
    use std::io::ErrorKind;
    match e {
        ureq::Error::HostNotFound => Some("its name does not resolve"),
        ureq::Error::ConnectionFailed => Some("the connection failed"),
        ureq::Error::Io(io) => match io.kind() {
            ErrorKind::ConnectionRefused => Some("connection refused"),
            ErrorKind::NetworkUnreachable | ErrorKind::HostUnreachable => Some("no route to it"),
            // getaddrinfo's failures come as uncategorised I/O errors.
            _ if io.to_string().contains("failed to lookup address") => {
                Some("its name does not resolve")
            }
            _ => None,
        },
        _ => None,
    }
}

impl RegistryClient {
    fn unreachable(&self, reason: &str) -> OciError {
        let hint = if self.registry == crate::reference::DOCKER_HUB {
            "a name without a registry goes to Docker Hub, as in Docker: give the registry \
             (HOST:PORT/NAME:TAG) or a local image (oci:DIR:TAG)"
                .to_string()
        } else if reason == "connection refused" {
            format!(
                "is a registry listening at {}? Check the host and port",
                self.registry
            )
        } else {
            format!("check the name {} and this host's network", self.registry)
        };
        OciError::Unreachable {
            registry: self.registry.clone(),
            reason: reason.to_string(),
            hint,
        }
    }
}

/// One repository on a registry.
pub struct RegistryRepository {
    client: Arc<RegistryClient>,
    repository: String,
}

impl RegistryRepository {
    pub fn new(client: Arc<RegistryClient>, repository: &str) -> Self {
        Self {
            client,
            repository: repository.to_string(),
        }
    }

    fn url(&self, tail: &str) -> String {
        format!("{}/v2/{}/{tail}", self.client.base, self.repository)
    }

    /// Sends a pull to the mirror first, if one is set and answers with an
    /// accepted status, else to the registry. Returns the response and its URL.
    fn pull(
        &self,
        method: Method,
        tail: &str,
        headers: &[(&str, String)],
        what: &str,
        accept: impl Fn(u16) -> bool,
    ) -> Result<(Response<Body>, String)> {
        if let Some(m) = &self.client.mirror {
            let url = format!("{m}/v2/{}/{tail}", self.repository);
            // One attempt: a failing mirror must not delay the fallback.
            match self.client.send_within(
                method,
                &url,
                &self.pull_scope(),
                headers,
                ReqBody::Empty,
                what,
                Duration::ZERO,
            ) {
                Ok(resp) if accept(resp.status().as_u16()) => return Ok((resp, url)),
                Ok(resp) => tracing::debug!(
                    url,
                    status = resp.status().as_u16(),
                    "mirror declined; asking the registry"
                ),
                Err(e) => tracing::debug!(url, error = %e, "mirror failed; asking the registry"),
            }
        }
        let url = self.url(tail);
        let resp = self.client.send(
            method,
            &url,
            &self.pull_scope(),
            headers,
            ReqBody::Empty,
            what,
        )?;
        Ok((resp, url))
    }

    fn pull_scope(&self) -> String {
        format!("repository:{}:pull", self.repository)
    }

    fn push_scope(&self) -> String {
        format!("repository:{}:pull,push", self.repository)
    }

    fn unexpected(&self, method: &'static str, url: String, resp: Response<Body>) -> OciError {
        let status = resp.status().as_u16();
        OciError::Http {
            method,
            url,
            status,
            body: read_error_body(resp),
        }
    }

    /// GET a blob from `offset`, expecting a 206 (or a 200 from offset 0).
    fn get_blob_from(
        &self,
        digest: &str,
        offset: u64,
        end: Option<u64>,
    ) -> Result<(Response<Body>, bool)> {
        let mut headers = Vec::new();
        if offset > 0 || end.is_some() {
            let range = match end {
                Some(e) => format!("bytes={offset}-{}", e - 1),
                None => format!("bytes={offset}-"),
            };
            headers.push(("Range", range));
        }
        let what = format!("blob {digest} in {}", self.repository);
        let (resp, url) = self.pull(
            Method::Get,
            &format!("blobs/{digest}"),
            &headers,
            &what,
            |s| s == 200 || s == 206,
        )?;
        match resp.status().as_u16() {
            206 => Ok((resp, true)),
            200 => Ok((resp, false)),
            404 => Err(OciError::NotFound {
                what,
                hint: Some(format!("is the image on {}?", self.client.registry)),
            }),
            416 => Err(OciError::Unsupported(format!(
                "{what}: range {offset}..{end:?} is beyond its end"
            ))),
            _ => Err(self.unexpected("GET", url, resp)),
        }
    }
}

/// Streams a blob, resuming with a range request where the connection broke.
struct ResumingReader {
    repo: Arc<RegistryRepository>,
    digest: String,
    size: u64,
    pos: u64,
    body: Option<Box<dyn Read + Send>>,
    /// Retries since the stream last made progress.
    retry: Option<Retry>,
}

impl Read for ResumingReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            if self.pos >= self.size {
                // Let the verifier see a longer body as an error.
                if let Some(b) = &mut self.body {
                    return b.read(buf);
                }
                return Ok(0);
            }
            if self.body.is_none() {
                let (resp, partial) = self.repo.get_blob_from(&self.digest, self.pos, None)?;
                let mut reader: Box<dyn Read + Send> = Box::new(resp.into_body().into_reader());
                if !partial && self.pos > 0 {
                    // The server ignored the range: skip what we already have.
                    io::copy(&mut (&mut reader).take(self.pos), &mut io::sink())?;
                }
                self.body = Some(reader);
            }
            let body = self.body.as_mut().expect("set above");
            match body.read(buf) {
                Ok(0) => {
                    self.body = None;
                    self.fail(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "connection closed early",
                    ))?;
                }
                Ok(n) => {
                    self.pos += n as u64;
                    self.retry = None;
                    return Ok(n);
                }
                Err(e) => {
                    self.body = None;
                    self.fail(e)?;
                }
            }
        }
    }
}

impl ResumingReader {
    fn fail(&mut self, e: io::Error) -> io::Result<()> {
        let client = &self.repo.client;
        let retry = self.retry.get_or_insert_with(|| client.retry());
        tracing::warn!(digest = %self.digest, pos = self.pos, error = %e, "blob download interrupted");
        if !retry.wait() {
            return Err(io::Error::new(
                e.kind(),
                format!(
                    "blob {} broke off at byte {} of {}: {e}",
                    self.digest, self.pos, self.size
                ),
            ));
        }
        Ok(())
    }
}

impl Repository for Arc<RegistryRepository> {
    fn describe(&self) -> String {
        format!("{}/{}", self.client.registry, self.repository)
    }

    fn registry_location(&self) -> Option<(String, String)> {
        Some((self.client.registry.clone(), self.repository.clone()))
    }

    fn fetch_manifest(&self, reference: &str) -> Result<FetchedManifest> {
        let what = format!("manifest {}:{reference}", self.describe());
        let (resp, url) = self.pull(
            Method::Get,
            &format!("manifests/{reference}"),
            &[("Accept", MANIFEST_ACCEPT.to_string())],
            &what,
            |s| s == 200,
        )?;
        match resp.status().as_u16() {
            200 => {}
            404 => {
                return Err(OciError::NotFound {
                    what,
                    hint: Some("check the repository and tag".into()),
                })
            }
            _ => return Err(self.unexpected("GET", url, resp)),
        }
        let media_type = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .map(|s| s.split(';').next().unwrap_or(s).trim().to_string());
        let bytes = resp
            .into_body()
            .with_config()
            .limit(MAX_DOCUMENT)
            .read_to_vec()
            .map_err(|e| OciError::Network {
                url: url.clone(),
                source: Box::new(e),
            })?;
        FetchedManifest::new(bytes, media_type, reference, &what)
    }

    fn open_blob(&self, desc: &Descriptor) -> Result<Box<dyn Read + Send>> {
        valid_digest_or_err(&desc.digest)?;
        let reader = ResumingReader {
            repo: self.clone(),
            digest: desc.digest.clone(),
            size: desc.size,
            pos: 0,
            body: None,
            retry: None,
        };
        let what = format!("blob {} from {}", desc.digest, self.describe());
        Ok(Box::new(VerifyingReader::new(
            reader,
            &desc.digest,
            desc.size,
            what,
        )))
    }

    fn read_range(&self, digest: &str, offset: u64, len: u64) -> Result<Vec<u8>> {
        valid_digest_or_err(digest)?;
        let mut retry = self.client.retry();
        loop {
            let result = (|| -> Result<Vec<u8>> {
                let (resp, partial) = self.get_blob_from(digest, offset, Some(offset + len))?;
                let mut reader = resp.into_body().into_reader();
                if !partial {
                    io::copy(&mut (&mut reader).take(offset), &mut io::sink()).map_err(|e| {
                        OciError::Io {
                            context: format!("skipping to {offset} in {digest}"),
                            source: e,
                        }
                    })?;
                }
                // Grown as bytes arrive: `len` may come from an unverified
                // blob, and the registry may have far fewer.
                let mut out = Vec::with_capacity(len.min(1 << 20) as usize);
                reader
                    .take(len)
                    .read_to_end(&mut out)
                    .map_err(|e| OciError::Io {
                        context: format!("reading {len} bytes at {offset} of {digest}"),
                        source: e,
                    })?;
                if out.len() as u64 != len {
                    return Err(OciError::Io {
                        context: format!("reading {len} bytes at {offset} of {digest}"),
                        source: io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            format!("got {} bytes", out.len()),
                        ),
                    });
                }
                Ok(out)
            })();
            match result {
                // A body cut short, a reset, or a 5xx that outlived the
                // request's own retries: try the whole range again.
                Err(e) if is_transient(&e) => {
                    tracing::warn!(digest, offset, len, error = %e, "range read failed");
                    if !retry.wait() {
                        return Err(e);
                    }
                }
                other => return other,
            }
        }
    }

    fn has_blob(&self, digest: &str) -> Result<bool> {
        // Origin only: this guards pushes, which a mirror must never satisfy.
        let url = self.url(&format!("blobs/{digest}"));
        let resp = self.client.send(
            Method::Head,
            &url,
            &self.pull_scope(),
            &[],
            ReqBody::Empty,
            digest,
        )?;
        match resp.status().as_u16() {
            200 => Ok(true),
            404 => Ok(false),
            _ => Err(self.unexpected("HEAD", url, resp)),
        }
    }

    fn mount_blob(&self, digest: &str, from: &dyn Repository) -> Result<bool> {
        let Some((from_registry, from_repo)) = from.registry_location() else {
            return Ok(false);
        };
        if from_registry != self.client.registry {
            return Ok(false);
        }
        let url = self.url(&format!(
            "blobs/uploads/?mount={}&from={}",
            qs(digest),
            qs(&from_repo)
        ));
        let scope = format!("{} repository:{from_repo}:pull", self.push_scope());
        let resp = self
            .client
            .send(Method::Post, &url, &scope, &[], ReqBody::Empty, &url)?;
        match resp.status().as_u16() {
            201 => Ok(true),
            202 => Ok(false), // the registry opened an upload instead; it expires unused
            _ => Err(self.unexpected("POST", url, resp)),
        }
    }

    fn push_blob(
        &self,
        desc: &Descriptor,
        open: &mut dyn FnMut() -> io::Result<Box<dyn Read + Send>>,
    ) -> Result<()> {
        valid_digest_or_err(&desc.digest)?;
        if self.has_blob(&desc.digest)? {
            return Ok(());
        }
        let what = format!("blob {} to {}", desc.digest, self.describe());
        let start = self.url("blobs/uploads/");
        let resp = self.client.send(
            Method::Post,
            &start,
            &self.push_scope(),
            &[],
            ReqBody::Empty,
            &what,
        )?;
        if resp.status().as_u16() != 202 {
            return Err(self.unexpected("POST", start, resp));
        }
        let location = resp
            .headers()
            .get("location")
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| OciError::Unsupported(format!("{start} returned no upload location")))?
            .to_string();
        let mut url = if location.starts_with('/') {
            format!("{}{location}", self.client.base)
        } else {
            location
        };
        url.push(if url.contains('?') { '&' } else { '?' });
        url.push_str(&format!("digest={}", qs(&desc.digest)));
        let resp = self.client.send(
            Method::Put,
            &url,
            &self.push_scope(),
            &[("Content-Type", "application/octet-stream".to_string())],
            ReqBody::Reopen(open, desc.size),
            &what,
        )?;
        match resp.status().as_u16() {
            201 | 204 => Ok(()),
            _ => Err(self.unexpected("PUT", url, resp)),
        }
    }

    fn push_manifest(&self, bytes: &[u8], media_type: &str, tag: Option<&str>) -> Result<String> {
        let digest = crate::manifest::sha256_digest(bytes);
        let reference = tag.unwrap_or(&digest);
        let url = self.url(&format!("manifests/{reference}"));
        let what = format!("manifest {}:{reference}", self.describe());
        let resp = self.client.send(
            Method::Put,
            &url,
            &self.push_scope(),
            &[("Content-Type", media_type.to_string())],
            ReqBody::Bytes(bytes),
            &what,
        )?;
        match resp.status().as_u16() {
            201 | 200 | 204 => Ok(digest),
            _ => Err(self.unexpected("PUT", url, resp)),
        }
    }
}
