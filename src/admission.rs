//! Admission of requests: who the client is (its own address, or the one a configured trusted
//! proxy forwarded) and how many heavy requests — exports, filtered OGC pages, cover previews —
//! run at once, overall and per client, so that no client can take the server from others.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{ConnectInfo, FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::HeaderMap;
use axum::middleware::Next;
use axum::response::Response;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::error::Error;
use crate::state::AppState;

/// Heavy requests running at once, whoever sends them: half the database pool, so that the
/// other half always serves the light ones (`/healthz`, searches, pages).
pub const DEFAULT_HEAVY_CONCURRENCY: usize = 4;
/// Heavy requests running at once from one client address, bodies still being sent included.
pub const DEFAULT_HEAVY_PER_CLIENT: usize = 2;
/// What a refused client is told to wait, in seconds.
pub const RETRY_AFTER_SECONDS: u64 = 5;

/// The proxies whose `X-Forwarded-For` is believed (`serve --trusted-proxy`): addresses or
/// networks in CIDR notation.
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies(Vec<ipnet::IpNet>);

impl TrustedProxies {
    /// Parses `10.0.0.1`, `10.0.0.0/8` or `::1`; says which one is wrong.
    pub fn parse(values: &[String]) -> Result<Self, String> {
        values
            .iter()
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .map(|v| {
                v.parse::<ipnet::IpNet>()
                    .or_else(|_| v.parse::<IpAddr>().map(ipnet::IpNet::from))
                    .map_err(|_| {
                        format!("--trusted-proxy « {v} » : adresse IP ou réseau CIDR attendu")
                    })
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Self)
    }

    fn trusts(&self, address: IpAddr) -> bool {
        let address = canonical(address);
        self.0.iter().any(|net| net.contains(&address))
    }

    /// The client's address: the peer's own, unless the peer is a trusted proxy, in which case
    /// the last address of `X-Forwarded-For` that is not itself a trusted proxy (the left part
    /// of the header is written by the client and proves nothing).
    pub fn client_address(&self, peer: Option<IpAddr>, headers: &HeaderMap) -> Option<IpAddr> {
        let peer = peer.map(canonical)?;
        if !self.trusts(peer) {
            return Some(peer);
        }
        let forwarded: Vec<IpAddr> = headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(|v| v.trim().parse::<IpAddr>().map(canonical))
            .collect::<Result<_, _>>()
            // A header that does not parse is not evidence of anything: the proxy itself is the
            // client then.
            .unwrap_or_default();
        Some(
            forwarded
                .into_iter()
                .rev()
                .find(|a| !self.trusts(*a))
                .unwrap_or(peer),
        )
    }

    /// Whether `X-Forwarded-Proto` and `X-Forwarded-Host` of this request may be believed.
    pub fn vouches_for(&self, peer: Option<IpAddr>) -> bool {
        peer.is_some_and(|p| self.trusts(p))
    }
}

/// An IPv4 address mapped in IPv6 is the IPv4 address: one client, one key.
fn canonical(address: IpAddr) -> IpAddr {
    match address {
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map(IpAddr::V4)
            .unwrap_or(IpAddr::V6(v6)),
        v4 => v4,
    }
}

/// Places taken overall and per client address: heavy requests, connections.
pub struct Gate {
    overall: Arc<Semaphore>,
    per_client: usize,
    running: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

/// Why a [`Gate`] refused a place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// This client holds its share.
    Client,
    /// Every place is taken.
    Overall,
}

/// A place in a [`Gate`]: the overall part and the client's part can be given back apart.
pub struct Place {
    overall: OwnedSemaphorePermit,
    client: Option<ClientSlot>,
}

/// One of a client's places, given back on drop.
pub struct ClientSlot {
    client: IpAddr,
    running: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

impl Drop for ClientSlot {
    fn drop(&mut self) {
        let mut running = self.running.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = running.get_mut(&self.client) {
            *n -= 1;
            if *n == 0 {
                running.remove(&self.client);
            }
        }
    }
}

impl Gate {
    pub fn new(overall: usize, per_client: usize) -> Self {
        Self {
            overall: Arc::new(Semaphore::new(overall.max(1))),
            per_client: per_client.max(1),
            running: Arc::default(),
        }
    }

    /// Places taken by clients known by address (bodies still being read included).
    pub fn in_flight(&self) -> usize {
        self.running
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .values()
            .sum()
    }

    /// A place for `client` (counted in its share when known), or why not.
    pub fn enter(&self, client: Option<IpAddr>) -> Result<Place, Refusal> {
        let client = match client {
            Some(client) => {
                let mut running = self.running.lock().unwrap_or_else(|e| e.into_inner());
                let n = running.entry(client).or_default();
                if *n >= self.per_client {
                    return Err(Refusal::Client);
                }
                *n += 1;
                Some(ClientSlot {
                    client,
                    running: self.running.clone(),
                })
            }
            None => None,
        };
        let overall = self
            .overall
            .clone()
            .try_acquire_owned()
            .map_err(|_| Refusal::Overall)?;
        Ok(Place { overall, client })
    }
}

/// How many heavy requests run, overall and per client address.
pub struct HeavyGate(Gate);

impl HeavyGate {
    pub fn new(overall: usize, per_client: usize) -> Self {
        Self(Gate::new(overall, per_client))
    }

    /// Heavy requests running now, by clients known by address.
    pub fn in_flight(&self) -> usize {
        self.0.in_flight()
    }

    /// A place for a heavy request of `client`, or why not: `429` when this client already
    /// runs its share, `503` when the server runs all it can.
    pub fn admit(&self, client: Option<IpAddr>) -> Result<Place, Error> {
        self.0.enter(client).map_err(|refusal| match refusal {
            Refusal::Client => Error::TooManyRequests {
                code: "too_many_heavy_requests",
                detail: format!(
                    "déjà {} téléchargements ou calculs lourds en cours depuis votre adresse : \
                     réessayez quand l'un d'eux est fini / already {} heavy requests running \
                     from your address",
                    self.0.per_client, self.0.per_client
                ),
                retry_after: RETRY_AFTER_SECONDS,
            },
            Refusal::Overall => Error::Busy {
                code: "server_busy",
                detail: "le serveur prépare déjà autant de téléchargements qu'il peut : réessayez \
                         dans quelques secondes / the server is busy with heavy requests, retry \
                         shortly"
                    .into(),
                retry_after: RETRY_AFTER_SECONDS,
            },
        })
    }
}

/// The admission rules of a server.
pub struct Admission {
    pub proxies: TrustedProxies,
    pub heavy: HeavyGate,
    /// Open connections, overall and per peer address (trusted proxies are not counted per
    /// peer: all their clients come through them).
    pub connections: Gate,
    /// The longest a client may take to send a request's head, and to start the next one on
    /// a kept-alive connection.
    pub head_timeout: Duration,
}

/// Seconds a client has to send a request's head.
pub const DEFAULT_HEAD_TIMEOUT_SECONDS: u64 = 10;
/// Open connections one peer address may hold.
pub const DEFAULT_CONNECTIONS_PER_PEER: usize = 256;

/// Open connections the process may hold: what its file descriptors allow, less a margin for
/// the database, the indexes and the files it serves.
pub fn default_max_connections() -> usize {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit only writes the structure it is given.
    let soft = if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0 {
        usize::try_from(limit.rlim_cur).unwrap_or(usize::MAX)
    } else {
        1024
    };
    soft.saturating_sub(256).clamp(64, 16_384)
}

impl Default for Admission {
    fn default() -> Self {
        Self {
            proxies: TrustedProxies::default(),
            heavy: HeavyGate::new(DEFAULT_HEAVY_CONCURRENCY, DEFAULT_HEAVY_PER_CLIENT),
            connections: Gate::new(default_max_connections(), DEFAULT_CONNECTIONS_PER_PEER),
            head_timeout: Duration::from_secs(DEFAULT_HEAD_TIMEOUT_SECONDS),
        }
    }
}

/// Serves `router` on `listener` until `shutdown` completes, then lets the requests in flight
/// finish for at most `grace`. Each connection takes a place of [`Admission::connections`]
/// (past them it is closed at once) and must send each request's head within
/// [`Admission::head_timeout`]; handlers see the peer as `ConnectInfo`.
pub async fn serve_connections(
    listener: tokio::net::TcpListener,
    router: axum::Router,
    admission: Arc<Admission>,
    shutdown: impl std::future::Future<Output = ()>,
    grace: Duration,
) {
    use tower::ServiceExt;
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors, most likely: wait for some to close.
                    tracing::warn!(%error, "connection not accepted");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let counted = Some(canonical(peer.ip())).filter(|ip| !admission.proxies.trusts(*ip));
        let place = match admission.connections.enter(counted) {
            Ok(place) => place,
            Err(refusal) => {
                tracing::debug!(%peer, ?refusal, "connection refused");
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let service = router.clone().map_request(
            move |mut request: axum::http::Request<hyper::body::Incoming>| {
                request.extensions_mut().insert(ConnectInfo(peer));
                request.map(Body::new)
            },
        );
        let connection = hyper::server::conn::http1::Builder::new()
            .timer(hyper_util::rt::TokioTimer::new())
            .header_read_timeout(admission.head_timeout)
            .serve_connection(
                hyper_util::rt::TokioIo::new(stream),
                hyper_util::service::TowerToHyperService::new(service),
            );
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::trace!(%error, "connection ended");
            }
            drop(place);
        });
    }
    drop(listener);
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(grace) => {
            tracing::warn!("requests still in flight at stop: cut after {grace:?}");
        }
    }
}

/// The client's address as [`TrustedProxies::client_address`] tells it; `None` only where the
/// server was not started with peer addresses (tests calling the router directly).
#[derive(Debug, Clone, Copy)]
pub struct ClientAddress(pub Option<IpAddr>);

impl ClientAddress {
    pub fn of(state: &AppState, parts: &Parts) -> Self {
        Self(
            state
                .admission
                .proxies
                .client_address(peer(&parts.extensions), &parts.headers),
        )
    }
}

/// The direct peer's address, when the server was started with it.
pub fn peer(extensions: &axum::http::Extensions) -> Option<IpAddr> {
    extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(address)| address.ip())
}

impl FromRequestParts<AppState> for ClientAddress {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        Ok(Self::of(state, parts))
    }
}

/// The scheme and authority absolute links and snippets start with (`https://annuaire.example.fr`):
/// the configured public URL; without one, what a trusted proxy forwarded
/// (`X-Forwarded-Proto`, `X-Forwarded-Host`), or the request's own `Host` when it names this
/// machine (a server tried locally). A `Host` from anywhere else is never echoed into a link.
#[derive(Debug, Clone)]
pub struct PublicBase(pub String);

impl PublicBase {
    pub fn of(state: &AppState, parts: &Parts) -> Self {
        if state.public_url_configured {
            return Self(state.public_url.to_string());
        }
        let header = |name: &str| {
            parts
                .headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::trim)
        };
        let peer = peer(&parts.extensions);
        if state.admission.proxies.vouches_for(peer) {
            let scheme = header("x-forwarded-proto").filter(|p| matches!(*p, "http" | "https"));
            let host = header("x-forwarded-host")
                .or_else(|| header("host"))
                .filter(|h| valid_authority(h));
            if let Some(host) = host {
                return Self(format!("{}://{host}", scheme.unwrap_or("http")));
            }
        }
        match header("host").filter(|h| valid_authority(h) && is_loopback_authority(h)) {
            Some(host) => Self(format!("http://{host}")),
            None => Self(state.public_url.to_string()),
        }
    }
}

/// A host name or IP address with an optional port, nothing else (no user, path, query or
/// scheme).
fn valid_authority(value: &str) -> bool {
    !value.is_empty()
        && value.len() <= 255
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '[' | ']'))
        && url::Url::parse(&format!("http://{value}/")).is_ok_and(|url| url.host().is_some())
}

fn is_loopback_authority(value: &str) -> bool {
    match url::Url::parse(&format!("http://{value}/"))
        .ok()
        .and_then(|u| u.host().map(|h| h.to_owned()))
    {
        Some(url::Host::Domain(name)) => name == "localhost",
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

impl FromRequestParts<AppState> for PublicBase {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        Ok(Self::of(state, parts))
    }
}

/// Middleware of the heavy routes: admits the request or answers `429`/`503` with
/// `Retry-After` at once, rather than letting it wait for a database connection.
pub async fn heavy(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let (parts, body) = request.into_parts();
    let client = ClientAddress::of(&state, &parts);
    let permit = match state.admission.heavy.admit(client.0) {
        Ok(permit) => permit,
        Err(error) => return axum::response::IntoResponse::into_response(error),
    };
    let response = next.run(Request::from_parts(parts, body)).await;
    let Place { overall, client } = permit;
    drop(overall);
    let (parts, body) = response.into_parts();
    // The client keeps its place until it has read the whole body: a slow reader uses up its
    // own share, never the others'.
    let body = Body::from_stream(tokio_stream::StreamExt::map(
        body.into_data_stream(),
        move |chunk| {
            let _ = &client;
            chunk
        },
    ));
    Response::from_parts(parts, body)
}

/// Refuses a state-changing request a browser sent from another site's page (CSRF, login
/// CSRF): `Sec-Fetch-Site` must say the same origin (or none: typed or bookmarked), else
/// `Origin`, when sent, must be this server's (its `Host`, or the public URL). Requests that carry their own credentials
/// (`Authorization`) or a body no cross-site form can send (JSON) are left to their own checks;
/// clients that send neither header (scripts, old browsers) rely on the forms' tokens.
pub async fn same_origin_forms(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    use axum::http::{header, Method};
    let headers = request.headers();
    let safe = matches!(
        *request.method(),
        Method::GET | Method::HEAD | Method::OPTIONS
    );
    let form_like = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.split(';')
                .next()
                .unwrap_or_default()
                .trim()
                .to_ascii_lowercase()
        })
        .is_none_or(|kind| {
            matches!(
                kind.as_str(),
                "application/x-www-form-urlencoded" | "multipart/form-data" | "text/plain"
            )
        });
    if safe || !form_like || headers.contains_key(header::AUTHORIZATION) {
        return next.run(request).await;
    }
    let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let allowed = match text("sec-fetch-site") {
        Some(site) => matches!(site, "same-origin" | "none"),
        None => match text("origin") {
            None => true,
            Some(origin) => {
                let own = text("host").unwrap_or_default();
                url::Url::parse(origin).is_ok_and(|url| {
                    let authority = match (url.host_str(), url.port()) {
                        (Some(host), Some(port)) => format!("{host}:{port}"),
                        (Some(host), None) => host.to_owned(),
                        _ => String::new(),
                    };
                    (!own.is_empty() && authority.eq_ignore_ascii_case(own))
                        || origin.trim_end_matches('/') == state.public_url.as_ref()
                })
            }
        },
    };
    if allowed {
        next.run(request).await
    } else {
        axum::response::IntoResponse::into_response(Error::Forbidden {
            code: "cross_site_form",
            detail: "formulaire envoyé depuis un autre site : refusé. Rechargez la page de \
                     Proximités et recommencez / form sent from another site: refused"
                .into(),
        })
    }
}

/// Middleware of routes that are heavy only with parameters that may read the whole directory
/// (an OGC page with a CQL2 `filter` or sorted by `sortby`, HSDS services of an organization or
/// modified after a date, an HSDS organization with its services): the others pass untouched.
pub async fn heavy_when_scanning(state: State<AppState>, request: Request, next: Next) -> Response {
    let filtered = request.uri().query().is_some_and(|q| {
        url::form_urlencoded::parse(q.as_bytes()).any(|(k, v)| {
            matches!(
                &*k,
                "filter" | "sortby" | "organization_id" | "modified_after"
            ) && !v.is_empty()
        })
    }) || request.uri().path().starts_with("/hsds/organizations/");
    if filtered {
        heavy(state, request, next).await
    } else {
        next.run(request).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(forwarded: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", forwarded.parse().unwrap());
        h
    }

    #[test]
    fn forwarded_addresses_count_only_from_trusted_proxies() {
        let none = TrustedProxies::default();
        let peer: IpAddr = "203.0.113.7".parse().unwrap();
        // Not behind a trusted proxy: the header is the client's own words.
        assert_eq!(
            none.client_address(Some(peer), &headers("198.51.100.1")),
            Some(peer)
        );
        let proxies = TrustedProxies::parse(&["10.0.0.0/8".into(), "::1".into()]).unwrap();
        let proxy: IpAddr = "10.1.2.3".parse().unwrap();
        // The client wrote the left part; the proxy appended the address it saw.
        assert_eq!(
            proxies.client_address(Some(proxy), &headers("1.1.1.1, 198.51.100.1, 10.0.0.9")),
            Some("198.51.100.1".parse().unwrap())
        );
        // Mapped IPv4 is the same client.
        let mapped: IpAddr = "::ffff:10.1.2.3".parse().unwrap();
        assert_eq!(
            proxies.client_address(Some(mapped), &headers("198.51.100.2")),
            Some("198.51.100.2".parse().unwrap())
        );
        // A garbled header: the proxy itself is the client.
        assert_eq!(
            proxies.client_address(Some(proxy), &headers("nonsense")),
            Some(proxy)
        );
        assert!(TrustedProxies::parse(&["10.0.0.0/99".into()])
            .unwrap_err()
            .contains("10.0.0.0/99"));
    }

    #[test]
    fn authorities_are_host_and_port_only() {
        assert!(valid_authority("annuaire.example.fr"));
        assert!(valid_authority("127.0.0.1:8080"));
        assert!(valid_authority("[::1]:3000"));
        for bad in [
            "",
            "javascript:alert(1)",
            "a@b.fr",
            "x.fr/path",
            "x.fr?q",
            "x.fr#f",
            "x .fr",
            "x.fr:99999",
        ] {
            assert!(!valid_authority(bad), "{bad}");
        }
        assert!(is_loopback_authority("127.0.0.1:8080"));
        assert!(is_loopback_authority("localhost:1"));
        assert!(is_loopback_authority("[::1]:3000"));
        assert!(!is_loopback_authority("evil.example:80"));
    }

    #[test]
    fn heavy_places_are_shared_out_and_given_back() {
        let gate = HeavyGate::new(3, 2);
        let a: Option<IpAddr> = Some("198.51.100.1".parse().unwrap());
        let b: Option<IpAddr> = Some("198.51.100.2".parse().unwrap());
        let first = gate.admit(a).unwrap();
        let _second = gate.admit(a).unwrap();
        assert_eq!(gate.admit(a).err().unwrap().status().as_u16(), 429);
        let _third = gate.admit(b).unwrap();
        assert_eq!(gate.admit(b).err().unwrap().status().as_u16(), 503);
        drop(first);
        let _again = gate.admit(a).unwrap();
        // A refusal takes no place.
        assert_eq!(gate.0.running.lock().unwrap().values().sum::<usize>(), 3);
    }
}
