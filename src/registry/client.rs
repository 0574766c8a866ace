//! Blocking HTTP client of one registry: one keep-alive `ureq` agent (rustls; proxies from
//! `HTTPS_PROXY`/`NO_PROXY`), scheme selection (`tls_verify=false`: unverified HTTPS, falling
//! back to plain HTTP), and authentication (anonymous, Basic, Bearer tokens cached per scope).

use crate::oci::reference::registry_api_host;
use crate::registry::auth::{
    Challenge, Credentials, Origin, find_credentials, lookup_credentials, parse_challenge,
};
use crate::registry::credhelper::Helpers;
use crate::registry::error::{Error, Result};
use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;
use ureq::http::{self, Response};
use ureq::{Agent, Body};

/// How to reach and authenticate to a registry.
#[derive(Clone, Debug)]
pub struct ClientOptions {
    /// Verify TLS certificates (`--tls-verify`). When false, the registry is tried over
    /// HTTPS without verification, then over plain HTTP.
    pub tls_verify: bool,
    /// Credentials to use instead of the credentials file (`--creds`).
    pub credentials: Option<Credentials>,
    /// Credentials file to use instead of the default search (`--authfile`).
    pub auth_file: Option<PathBuf>,
    /// Where to look for the credential helpers (`docker-credential-NAME`) that the
    /// credentials file names, `PATH`-style; `None`: `$PATH`.
    pub helper_path: Option<std::ffi::OsString>,
    /// Give up connecting after this long.
    pub connect_timeout: Duration,
    /// Give up when a read stalls this long.
    pub read_timeout: Duration,
    /// Give up on a whole request (connect, send, answer, body) after this long; none for
    /// pulls of whole blobs, a few seconds for the range reads of lazy layers.
    pub request_timeout: Option<Duration>,
}

/// The environment variable that sets every registry timeout, in seconds (see
/// [`ClientOptions::default`]).
pub const TIMEOUT_ENV: &str = "STRATA_REGISTRY_TIMEOUT";

/// `STRATA_REGISTRY_TIMEOUT` as a duration, if set to a positive number of seconds.
fn env_timeout() -> Option<Duration> {
    let v = std::env::var(TIMEOUT_ENV).ok()?;
    let secs: f64 = v.trim().parse().ok()?;
    (secs.is_finite() && secs > 0.0).then(|| Duration::from_secs_f64(secs.min(86_400.0)))
}

impl Default for ClientOptions {
    /// Connect within 30 s; a read that stalls 120 s fails. `STRATA_REGISTRY_TIMEOUT=N`
    /// sets both to N seconds. The read timeout also bounds the response headers and every
    /// whole body but a blob's (manifests, tokens, errors): a server that trickles a byte at
    /// a time cannot hold a pull forever. A blob's body is bounded by its declared size and
    /// the stall timeout.
    fn default() -> Self {
        let env = env_timeout();
        ClientOptions {
            tls_verify: true,
            credentials: None,
            auth_file: None,
            helper_path: None,
            connect_timeout: env.unwrap_or(Duration::from_secs(30)),
            read_timeout: env.unwrap_or(Duration::from_secs(120)),
            request_timeout: None,
        }
    }
}

/// A request body that can be sent again after an authentication round trip.
pub(crate) enum ReqBody<'a> {
    Empty,
    Bytes(&'a [u8]),
    File(&'a Path),
}

/// Which repository and actions a request needs (`repository:REPO:pull,push`).
#[derive(Clone, Copy)]
pub(crate) struct Scope<'a> {
    pub repository: &'a str,
    pub push: bool,
}

impl Scope<'_> {
    fn token_scope(&self) -> String {
        let actions = if self.push { "pull,push" } else { "pull" };
        format!("repository:{}:{actions}", self.repository)
    }
    fn action(&self) -> &'static str {
        if self.push { "push" } else { "pull" }
    }
}

#[derive(Default)]
struct AuthState {
    basic: bool,
    bearer: Option<(String, Option<String>)>,
    tokens: HashMap<String, String>,
}

/// A connection to one registry. `Sync`: download threads share it (and its connection pool).
pub struct Client {
    agent: Agent,
    /// Bound on a whole response body other than a blob's.
    body_timeout: Duration,
    registry: String,
    host: String,
    base: String,
    creds: Option<Credentials>,
    /// Where `creds` came from, for the wrong-credentials message.
    origin: Option<Origin>,
    /// The credential helpers, with the answers they gave (asked once per registry).
    helpers: Helpers,
    state: Mutex<AuthState>,
}

fn build_agent(opts: &ClientOptions, verify: bool) -> Agent {
    let mut b = Agent::config_builder()
        .http_status_as_error(false)
        .user_agent(concat!("strata/", env!("CARGO_PKG_VERSION")))
        .max_redirects(10)
        .timeout_connect(Some(opts.connect_timeout))
        .timeout_recv_response(Some(opts.read_timeout))
        .timeout_per_read(Some(opts.read_timeout))
        .timeout_global(opts.request_timeout);
    if !verify {
        b = b.tls_config(
            ureq::tls::TlsConfig::builder()
                .disable_verification(true)
                .build(),
        );
    }
    Agent::new_with_config(b.build())
}

/// Whether `host[:port]` is on the loopback interface (`localhost`, 127.0.0.0/8, `[::1]`),
/// which Docker treats as an insecure registry by default.
pub fn is_loopback(host: &str) -> bool {
    let name = if let Some(rest) = host.strip_prefix('[') {
        rest.split(']').next().unwrap_or("")
    } else {
        host.rsplit_once(':').map_or(host, |(h, _)| h)
    };
    name == "localhost"
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Maps a ureq failure to the registry error it means.
fn map_err(host: &str, e: ureq::Error) -> Error {
    use std::io::ErrorKind as K;
    let unreachable = match &e {
        ureq::Error::Io(io) => matches!(
            io.kind(),
            K::ConnectionRefused
                | K::ConnectionReset
                | K::ConnectionAborted
                // the registry went away between request and response ("Peer disconnected")
                | K::UnexpectedEof
                | K::BrokenPipe
                | K::TimedOut
                | K::NotConnected
                | K::AddrNotAvailable
                | K::HostUnreachable
                | K::NetworkUnreachable
        ),
        ureq::Error::HostNotFound | ureq::Error::ConnectionFailed | ureq::Error::Timeout(_) => true,
        _ => false,
    };
    if unreachable {
        Error::Unreachable {
            host: host.to_string(),
            detail: e.to_string(),
        }
    } else {
        Error::Protocol {
            host: host.to_string(),
            detail: e.to_string(),
        }
    }
}

/// The `errors[0]` code and message of a distribution API error body, if any.
pub(crate) fn api_error(body: &str) -> Option<(String, String)> {
    let v: serde_json::Value = serde_json::from_str(body).ok()?;
    let e = v.get("errors")?.get(0)?;
    let code = e.get("code")?.as_str()?.to_string();
    let msg = e
        .get("message")
        .and_then(|m| m.as_str())
        .unwrap_or("")
        .to_string();
    Some((code, msg))
}

/// Reads a small (error) body as text, bounded.
pub(crate) fn body_text(resp: Response<Body>) -> String {
    let mut body = resp.into_body();
    body.with_config()
        .limit(64 * 1024)
        .read_to_string()
        .unwrap_or_default()
}

impl Client {
    /// Connects to `registry` (a registry name such as `docker.io` or `localhost:5000`):
    /// picks the scheme, loads credentials, and learns the auth scheme from `GET /v2/`.
    pub fn new(registry: &str, opts: &ClientOptions) -> Result<Client> {
        let host = registry_api_host(registry).to_string();
        let helpers = Helpers::new(opts.helper_path.clone());
        let found = match (&opts.credentials, &opts.auth_file) {
            (Some(c), _) => Some((c.clone(), Origin::Given)),
            (None, Some(f)) => lookup_credentials(f, registry, "", &helpers)?,
            (None, None) => find_credentials(registry, "", &helpers)?,
        };
        let (creds, origin) = found.unzip();
        let mut client = Client {
            agent: build_agent(opts, opts.tls_verify),
            body_timeout: opts.read_timeout,
            registry: registry.to_string(),
            base: format!("https://{host}"),
            host,
            creds,
            origin,
            helpers,
            state: Mutex::new(AuthState::default()),
        };
        if let Err(e) = client.ping() {
            if opts.tls_verify && !is_loopback(&client.host) {
                return Err(e);
            }
            // Insecure or loopback registry without usable HTTPS: plain HTTP (Docker's rule).
            client.base = format!("http://{}", client.host);
            client.ping()?;
        }
        Ok(client)
    }

    /// Loads repository-specific credentials (entries keyed `host/repo`) if the file has any.
    pub(crate) fn for_repository(
        mut self,
        repository: &str,
        opts: &ClientOptions,
    ) -> Result<Client> {
        if opts.credentials.is_none() {
            // The helpers answered in `new` already: only a per-repository entry can differ.
            let found = match &opts.auth_file {
                Some(f) => lookup_credentials(f, &self.registry, repository, &self.helpers)?,
                None => find_credentials(&self.registry, repository, &self.helpers)?,
            };
            if let Some((c, o)) = found {
                self.creds = Some(c);
                self.origin = Some(o);
            }
        }
        Ok(self)
    }

    /// The wrong-credentials error, saying where the credentials came from.
    fn wrong_credentials(&self) -> Error {
        Error::WrongCredentials {
            host: self.host.clone(),
            from: match &self.origin {
                Some(o @ (Origin::File(_) | Origin::Helper { .. })) => {
                    format!(" (credentials from {o})")
                }
                _ => String::new(),
            },
        }
    }

    /// The API host (`index.docker.io`, `localhost:5000`).
    pub fn host(&self) -> &str {
        &self.host
    }

    /// `https://host` or `http://host`.
    pub fn base_url(&self) -> &str {
        &self.base
    }

    fn ping(&self) -> Result<()> {
        let url = format!("{}/v2/", self.base);
        let resp = self
            .agent
            .get(&url)
            .config()
            .timeout_recv_body(Some(self.body_timeout))
            .build()
            .call()
            .map_err(|e| map_err(&self.host, e))?;
        let status = resp.status().as_u16();
        if status == 401 {
            self.learn_challenge(&resp);
            return Ok(());
        }
        if status == 200 || status == 404 || status == 403 {
            // 404: not a v2 registry root, but the repository paths may still work.
            return Ok(());
        }
        Err(Error::Status {
            host: self.host.clone(),
            status,
            what: "GET /v2/".to_string(),
            detail: body_text(resp),
        })
    }

    fn learn_challenge(&self, resp: &Response<Body>) -> Option<Challenge> {
        let challenges: Vec<Challenge> = resp
            .headers()
            .get_all(http::header::WWW_AUTHENTICATE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .filter_map(parse_challenge)
            .collect();
        let c = challenges
            .iter()
            .find(|c| matches!(c, Challenge::Bearer { .. }))
            .or(challenges.first())
            .cloned()?;
        if let Ok(mut st) = self.state.lock() {
            match &c {
                Challenge::Basic => st.basic = true,
                Challenge::Bearer { realm, service, .. } => {
                    st.bearer = Some((realm.clone(), service.clone()));
                }
            }
        }
        Some(c)
    }

    /// Verifies the credentials (login): a token for the registry, or `GET /v2/` with Basic.
    pub fn check_login(&self) -> Result<()> {
        let Some(creds) = &self.creds else {
            return Ok(());
        };
        let bearer = self.state.lock().ok().and_then(|s| s.bearer.clone());
        if let Some((realm, service)) = bearer {
            self.fetch_token(&realm, service.as_deref(), None)?;
            return Ok(());
        }
        let url = format!("{}/v2/", self.base);
        let resp = self
            .agent
            .get(&url)
            .header("Authorization", format!("Basic {}", creds.encoded()))
            .call()
            .map_err(|e| map_err(&self.host, e))?;
        match resp.status().as_u16() {
            200 | 404 => Ok(()),
            401 | 403 => Err(self.wrong_credentials()),
            status => Err(Error::Status {
                host: self.host.clone(),
                status,
                what: "login".to_string(),
                detail: body_text(resp),
            }),
        }
    }

    fn fetch_token(
        &self,
        realm: &str,
        service: Option<&str>,
        scope: Option<&Scope>,
    ) -> Result<String> {
        let realm_host = realm.to_string();
        let identity_token = self.creds.as_ref().and_then(Credentials::identity_token);
        let resp = if let Some(refresh) = identity_token {
            // An identity token (a helper's `<token>` answer): OAuth2 refresh-token grant,
            // as docker sends it.
            let mut form = vec![
                ("grant_type", "refresh_token".to_string()),
                ("refresh_token", refresh.to_string()),
                ("client_id", "strata".to_string()),
            ];
            if let Some(s) = service {
                form.push(("service", s.to_string()));
            }
            if let Some(s) = scope {
                form.push(("scope", s.token_scope()));
            }
            self.agent
                .post(realm)
                .config()
                .timeout_recv_body(Some(self.body_timeout))
                .build()
                .send_form(form)
                .map_err(|e| map_err(&realm_host, e))?
        } else {
            let mut req = self.agent.get(realm);
            if let Some(s) = service {
                req = req.query("service", s);
            }
            if let Some(s) = scope {
                req = req.query("scope", s.token_scope());
            }
            if let Some(c) = &self.creds {
                req = req
                    .query("account", &c.username)
                    .header("Authorization", format!("Basic {}", c.encoded()));
            }
            req.config()
                .timeout_recv_body(Some(self.body_timeout))
                .build()
                .call()
                .map_err(|e| map_err(&realm_host, e))?
        };
        match resp.status().as_u16() {
            200 => {}
            401 | 403 if self.creds.is_some() => {
                return Err(self.wrong_credentials());
            }
            401 | 403 => {
                return Err(Error::AuthRequired {
                    host: self.host.clone(),
                    repository: scope.map(|s| s.repository).unwrap_or("").to_string(),
                    action: scope.map(|s| s.action()).unwrap_or("access").to_string(),
                });
            }
            status => {
                return Err(Error::Token {
                    realm: realm.to_string(),
                    reason: format!("HTTP {status}: {}", body_text(resp)),
                });
            }
        }
        let text = resp
            .into_body()
            .with_config()
            .limit(1024 * 1024)
            .read_to_string()
            .map_err(|e| Error::Token {
                realm: realm.to_string(),
                reason: e.to_string(),
            })?;
        let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| Error::Token {
            realm: realm.to_string(),
            reason: e.to_string(),
        })?;
        v.get("token")
            .or_else(|| v.get("access_token"))
            .and_then(|t| t.as_str())
            .map(str::to_string)
            .ok_or_else(|| Error::Token {
                realm: realm.to_string(),
                reason: "answer has no token".to_string(),
            })
    }

    fn auth_header(&self, scope: &Scope) -> Option<String> {
        let st = self.state.lock().ok()?;
        if let Some(t) = st.tokens.get(&scope.token_scope()) {
            return Some(format!("Bearer {t}"));
        }
        if st.basic {
            return self
                .creds
                .as_ref()
                .map(|c| format!("Basic {}", c.encoded()));
        }
        None
    }

    /// `req` with the whole-body deadline, unless it fetches a blob.
    fn bound<S: ureq::AsSendBody>(&self, req: http::Request<S>, blob: bool) -> http::Request<S> {
        if blob {
            return req;
        }
        self.agent
            .configure_request(req)
            .timeout_recv_body(Some(self.body_timeout))
            .build()
    }

    /// Sends a request to a full URL, authenticating as the registry asks (one retry).
    pub(crate) fn send(
        &self,
        method: http::Method,
        url: &str,
        scope: Scope,
        headers: &[(&str, &str)],
        body: ReqBody,
    ) -> Result<Response<Body>> {
        let mut authed = false;
        loop {
            let mut b = http::Request::builder().method(method.clone()).uri(url);
            for (k, v) in headers {
                b = b.header(*k, *v);
            }
            if let Some(a) = self.auth_header(&scope) {
                b = b.header("Authorization", a);
            }
            let bad_req = |e: http::Error| Error::Protocol {
                host: self.host.clone(),
                detail: format!("bad request {url}: {e}"),
            };
            // Every body but a blob's (bounded by its size and the stall timeout) must arrive
            // within the read timeout: a trickling server cannot hold a pull forever.
            let blob_body = method == http::Method::GET && url.contains("/blobs/");
            let result = match &body {
                ReqBody::Empty => self
                    .agent
                    .run(self.bound(b.body(()).map_err(bad_req)?, blob_body)),
                ReqBody::Bytes(bytes) => self
                    .agent
                    .run(self.bound(b.body(*bytes).map_err(bad_req)?, blob_body)),
                ReqBody::File(path) => {
                    let f = File::open(path).map_err(|e| Error::io("open", *path, e))?;
                    self.agent
                        .run(self.bound(b.body(f).map_err(bad_req)?, blob_body))
                }
            };
            let resp = result.map_err(|e| map_err(&self.host, e))?;
            log::debug!("{method} {url} -> {}", resp.status());
            if resp.status().as_u16() != 401 {
                return Ok(resp);
            }
            let challenge = self.learn_challenge(&resp);
            let denied = || Error::AuthRequired {
                host: self.host.clone(),
                repository: scope.repository.to_string(),
                action: scope.action().to_string(),
            };
            if authed {
                return Err(match (&self.creds, challenge) {
                    (None, _) => denied(),
                    (Some(_), Some(Challenge::Bearer { error: Some(e), .. }))
                        if e == "insufficient_scope" =>
                    {
                        Error::Denied {
                            host: self.host.clone(),
                            repository: scope.repository.to_string(),
                            action: scope.action().to_string(),
                            detail: "insufficient scope".to_string(),
                        }
                    }
                    (Some(_), _) => self.wrong_credentials(),
                });
            }
            authed = true;
            match challenge {
                Some(Challenge::Basic) => {
                    if self.creds.is_none() {
                        return Err(denied());
                    }
                }
                Some(Challenge::Bearer { realm, service, .. }) => {
                    let token = self.fetch_token(&realm, service.as_deref(), Some(&scope))?;
                    if let Ok(mut st) = self.state.lock() {
                        st.tokens.insert(scope.token_scope(), token);
                    }
                }
                None => {
                    return Err(if self.creds.is_some() {
                        self.wrong_credentials()
                    } else {
                        denied()
                    });
                }
            }
        }
    }

    /// Streams `len` bytes of blob `digest` of `repository` from `offset` (an HTTP range
    /// request): the fetch-on-read primitive of lazy pulling. The bytes are not verified
    /// here; the caller checks them against the chunk digests of the layer's table of
    /// contents.
    pub fn fetch_range(
        &self,
        repository: &str,
        digest: &crate::oci::Digest,
        offset: u64,
        len: u64,
    ) -> Result<impl std::io::Read + use<>> {
        if len == 0 {
            return Err(Error::Protocol {
                host: self.host.clone(),
                detail: format!("empty range of blob {digest}"),
            });
        }
        let url = self.url(repository, &format!("blobs/{digest}"));
        let range = format!("bytes={}-{}", offset, offset.saturating_add(len - 1));
        let resp = self.send(
            http::Method::GET,
            &url,
            Scope {
                repository,
                push: false,
            },
            &[("Range", range.as_str())],
            ReqBody::Empty,
        )?;
        match resp.status().as_u16() {
            206 => {}
            404 => {
                return Err(Error::BlobUnknown {
                    host: self.host.clone(),
                    repository: repository.to_string(),
                    digest: digest.clone(),
                });
            }
            200 => {
                return Err(Error::Protocol {
                    host: self.host.clone(),
                    detail: format!("range requests on blob {digest} are not supported"),
                });
            }
            _ => {
                return Err(self.status_error(
                    resp,
                    &format!("GET range of blob {digest}"),
                    repository,
                ));
            }
        }
        use std::io::Read as _;
        Ok(resp.into_body().into_reader().take(len))
    }

    /// `base/v2/<repository>/<tail>`.
    pub(crate) fn url(&self, repository: &str, tail: &str) -> String {
        format!("{}/v2/{}/{}", self.base, repository, tail)
    }

    /// Resolves a `Location` header against the registry base.
    pub(crate) fn resolve_location(&self, location: &str) -> String {
        if location.starts_with("http://") || location.starts_with("https://") {
            location.to_string()
        } else if location.starts_with('/') {
            format!("{}{}", self.base, location)
        } else {
            format!("{}/{}", self.base, location)
        }
    }

    /// Maps an unexpected answer to an error, reading the API error code from the body.
    pub(crate) fn status_error(&self, resp: Response<Body>, what: &str, repository: &str) -> Error {
        let status = resp.status().as_u16();
        let text = body_text(resp);
        let api = api_error(&text);
        let code = api.as_ref().map(|(c, _)| c.as_str());
        match (status, code) {
            (403, _) | (_, Some("DENIED")) => Error::Denied {
                host: self.host.clone(),
                repository: repository.to_string(),
                action: what.to_string(),
                detail: api.map(|(c, m)| format!("{c}: {m}")).unwrap_or(text),
            },
            _ => Error::Status {
                host: self.host.clone(),
                status,
                what: what.to_string(),
                detail: api
                    .map(|(c, m)| format!("{c}: {m}"))
                    .unwrap_or_else(|| text.chars().take(200).collect()),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_hosts() {
        for h in [
            "localhost",
            "localhost:5000",
            "127.0.0.1:5000",
            "127.1.2.3",
            "[::1]:5000",
        ] {
            assert!(is_loopback(h), "{h}");
        }
        for h in [
            "quay.io",
            "10.0.0.1:5000",
            "index.docker.io",
            "[2001:db8::1]:443",
        ] {
            assert!(!is_loopback(h), "{h}");
        }
    }

    #[test]
    fn api_error_body() {
        let b =
            r#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown","detail":{}}]}"#;
        assert_eq!(
            api_error(b),
            Some((
                "MANIFEST_UNKNOWN".to_string(),
                "manifest unknown".to_string()
            ))
        );
        assert_eq!(api_error("<html>"), None);
    }
}
