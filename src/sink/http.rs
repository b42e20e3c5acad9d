//! The daemon's HTTP endpoint (actix-web), for dashboards, monitoring and orchestration:
//! - `GET /`: the live page (self-contained HTML: the top-K of every subset and cluster with
//!   diff-rank bars, the counts and the trigger number), which follows `GET /events`;
//! - `GET /events`: server-sent events, the latest snapshot at once and each new one as it is
//!   emitted;
//! - `GET /snapshot`: the latest snapshot, SPEC 6's JSON object;
//! - `GET /metrics`: Prometheus text format;
//! - `GET /livez`: 200 while the ingestor and every shard actor beat (each stamps a
//!   heartbeat from its own event loop every half second, none while a handler blocks it)
//!   within `http.live_timeout`, else 503 naming the actors that did not;
//! - `GET /readyz`: 200 while [`health::readiness`] passes (broker reachable, partitions
//!   held, snapshots fresh, not draining), else 503 with a JSON body naming each failing check;
//! - `GET /healthz`: the readiness summary (its status code) with the progress counters, as
//!   before the probes were split.
//!
//! It only reads [`Metrics`]; it never touches the counting path or an actor's mailbox. It
//! binds where `http.listen` says; a bare port means 127.0.0.1. With `http.token` set,
//! `/`, `/events`, `/snapshot` and `/metrics` answer only `Authorization: Bearer TOKEN`
//! (compared in constant time) and say 401 with `WWW-Authenticate: Bearer` otherwise; the probes stay open for the
//! orchestrator and tell nothing worth hiding.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use actix_web::http::header;
use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};

use crate::pipeline::health::{self, Check, ReadyBounds};
use crate::pipeline::metrics::Metrics;
use crate::pipeline::PipelineError;
use crate::secret::Secret;

/// What the probes need besides the metrics: their bounds.
#[derive(Clone, Debug)]
pub struct Probes {
    /// Readiness bounds.
    pub ready: ReadyBounds,
    /// `/livez` fails when an actor's heartbeat is older than this.
    pub live_timeout: Duration,
}

impl Probes {
    /// Probes with these bounds.
    pub fn new(ready: ReadyBounds, live_timeout: Duration) -> Probes {
        Probes {
            ready,
            live_timeout,
        }
    }
}

impl Default for Probes {
    fn default() -> Self {
        Probes::new(
            ReadyBounds {
                trigger_age: Duration::from_secs(30),
                interval_triggers: false,
                rebalance_grace: Duration::from_secs(30),
            },
            Duration::from_secs(30),
        )
    }
}

/// The token `/snapshot` and `/metrics` require, if any.
#[derive(Clone, Debug, Default)]
pub struct Auth(Option<Secret>);

impl Auth {
    /// Require `token` (none: every request is let through).
    pub fn new(token: Option<Secret>) -> Auth {
        Auth(token)
    }

    /// `None` when `req` may be answered, else the 401 to send: no or another scheme gets a
    /// bare challenge, a wrong token `error="invalid_token"` (RFC 6750 section 3).
    fn check(&self, req: &HttpRequest) -> Option<HttpResponse> {
        let want = self.0.as_ref()?;
        let given = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, token)| token.trim());
        let challenge = match given {
            Some(token) if constant_time_eq(token.as_bytes(), want.expose().as_bytes()) => {
                return None
            }
            Some(_) => r#"Bearer realm="viewpulse", error="invalid_token""#,
            None => r#"Bearer realm="viewpulse""#,
        };
        Some(
            HttpResponse::Unauthorized()
                .insert_header((header::WWW_AUTHENTICATE, challenge))
                .content_type("application/json")
                .body(r#"{"error":"unauthorized"}"#),
        )
    }
}

/// Whether `given` equals `want`, in a time that depends only on `want`'s length, so that a
/// client cannot find the token a byte at a time by timing the answers.
fn constant_time_eq(given: &[u8], want: &[u8]) -> bool {
    let mut diff = u8::from(given.len() != want.len());
    for (i, &w) in want.iter().enumerate() {
        diff |= w ^ given.get(i).copied().unwrap_or(!w);
    }
    std::hint::black_box(diff) == 0
}

/// Parse `http.listen`: `IP:PORT`, `HOST:PORT` (a name such as `localhost`, resolved now,
/// its first IPv4 address preferred), `:PORT` (every interface, as Go and Prometheus read
/// it), or a bare `PORT` meaning 127.0.0.1; empty or `off` means no server.
pub fn parse_listen(s: &str) -> Result<Option<SocketAddr>, String> {
    use std::net::ToSocketAddrs;
    let s = s.trim();
    if s.is_empty() || s == "off" {
        return Ok(None);
    }
    let form = || format!("{s:?} is not HOST:PORT, :PORT, a port or off");
    if let Ok(port) = s.parse::<u16>() {
        return Ok(Some(SocketAddr::from(([127, 0, 0, 1], port))));
    }
    if let Some(port) = s.strip_prefix(':') {
        let port = port.parse::<u16>().map_err(|_| form())?;
        return Ok(Some(SocketAddr::from(([0, 0, 0, 0], port))));
    }
    if let Ok(a) = s.parse::<SocketAddr>() {
        return Ok(Some(a));
    }
    let (host, port) = s.rsplit_once(':').ok_or_else(form)?;
    if host.is_empty() || port.parse::<u16>().is_err() {
        return Err(form());
    }
    let addrs: Vec<SocketAddr> = s
        .to_socket_addrs()
        .map_err(|e| format!("{s:?}: cannot resolve {host:?}: {e}"))?
        .collect();
    addrs
        .iter()
        .find(|a| a.is_ipv4())
        .or(addrs.first())
        .copied()
        .map(Some)
        .ok_or_else(|| format!("{s:?}: {host:?} resolves to no address"))
}

async fn snapshot(
    req: HttpRequest,
    m: web::Data<Arc<Metrics>>,
    auth: web::Data<Auth>,
) -> HttpResponse {
    if let Some(denied) = auth.check(&req) {
        return denied;
    }
    match m.latest() {
        Some(json) => HttpResponse::Ok()
            .content_type("application/json")
            .body(json.to_string()),
        // scale-out: only the coordinator (the owner of input partition 0) has the global
        // snapshot; the others say so, and viewpulse_coordinator tells which one is
        None if !m.coordinator.load(Ordering::Relaxed) => HttpResponse::ServiceUnavailable()
            .content_type("application/json")
            .insert_header(("Retry-After", "5"))
            .body(r#"{"error":"this member is not the coordinator: ask the member whose viewpulse_coordinator is 1"}"#),
        None => HttpResponse::ServiceUnavailable()
            .content_type("application/json")
            .insert_header(("Retry-After", "1"))
            .body(r#"{"error":"no snapshot yet"}"#),
    }
}

/// 200 or 503 with `body` as JSON.
fn probe_answer(ok: bool, body: serde_json::Value) -> HttpResponse {
    let mut r = if ok {
        HttpResponse::Ok()
    } else {
        HttpResponse::ServiceUnavailable()
    };
    r.content_type("application/json")
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .body(body.to_string())
}

/// The checks that fail, by name, for the body's `failing`.
fn failing(checks: &[Check]) -> Vec<&'static str> {
    checks.iter().filter(|c| !c.ok).map(|c| c.name).collect()
}

async fn readyz(m: web::Data<Arc<Metrics>>, p: web::Data<Probes>) -> HttpResponse {
    let checks = health::readiness(&m, &p.ready);
    let ok = checks.iter().all(|c| c.ok);
    let body = serde_json::json!({
        "status": if ok { "ready" } else { "not ready" },
        "failing": failing(&checks),
        "checks": checks,
    });
    probe_answer(ok, body)
}

async fn livez(m: web::Data<Arc<Metrics>>, p: web::Data<Probes>) -> HttpResponse {
    let checks: Vec<Check> = m
        .heartbeats()
        .into_iter()
        .map(|(name, age)| match age {
            Some(a) if a <= p.live_timeout => Check {
                name: "actor",
                ok: true,
                detail: format!("{name} beat {:.1} s ago", a.as_secs_f64()),
            },
            Some(a) => Check {
                name: "actor",
                ok: false,
                detail: format!(
                    "{name} last beat {:.1} s ago (bound {:.1} s)",
                    a.as_secs_f64(),
                    p.live_timeout.as_secs_f64()
                ),
            },
            None => Check {
                name: "actor",
                ok: false,
                detail: format!("{name} is not running yet"),
            },
        })
        .collect();
    let ok = checks.iter().all(|c| c.ok);
    let body = serde_json::json!({
        "status": if ok { "alive" } else { "not alive" },
        "checks": checks,
    });
    probe_answer(ok, body)
}

async fn healthz(m: web::Data<Arc<Metrics>>, p: web::Data<Probes>) -> HttpResponse {
    let checks = health::readiness(&m, &p.ready);
    let ok = checks.iter().all(|c| c.ok);
    let status = if m.draining.load(Ordering::Relaxed) {
        "draining"
    } else if ok {
        "ok"
    } else {
        "not ready"
    };
    let body = serde_json::json!({
        "status": status,
        "failing": failing(&checks),
        "records": m.records.load(Ordering::Relaxed),
        "triggers": m.triggers.load(Ordering::Relaxed),
        "lag": m.lag(),
        "uptime_seconds": m.uptime(),
    });
    probe_answer(ok, body)
}

/// What `GET /metrics` serves: the pipeline's metrics and `viewpulse_ready`, the readiness
/// `/readyz` would answer now (1 or 0), for the alert rules.
pub fn exposition(m: &Metrics, probes: &Probes) -> String {
    let mut out = m.prometheus();
    let ready = health::readiness(m, &probes.ready).iter().all(|c| c.ok);
    out.push_str(
        "# HELP viewpulse_ready 1 while /readyz answers 200.\n# TYPE viewpulse_ready gauge\n",
    );
    out.push_str(&format!("viewpulse_ready {}\n", u8::from(ready)));
    out
}

async fn metrics(
    req: HttpRequest,
    m: web::Data<Arc<Metrics>>,
    auth: web::Data<Auth>,
    p: web::Data<Probes>,
) -> HttpResponse {
    if let Some(denied) = auth.check(&req) {
        return denied;
    }
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(exposition(&m, &p))
}

/// The live page: one self-contained HTML file (no external script, style or font), which
/// follows `/events`.
const LIVE_PAGE: &str = include_str!("live.html");

async fn live_page(req: HttpRequest, auth: web::Data<Auth>) -> HttpResponse {
    if let Some(denied) = auth.check(&req) {
        return denied;
    }
    HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .body(LIVE_PAGE)
}

/// How often `/events` looks for a new snapshot, and how long a quiet stream waits before a
/// keep-alive comment (so that proxies do not close it).
const EVENTS_POLL: Duration = Duration::from_millis(100);
const EVENTS_KEEPALIVE: Duration = Duration::from_secs(15);

/// One server-sent event carrying a snapshot's JSON (one line: JSON has no raw newline).
fn snapshot_event(json: &str) -> web::Bytes {
    let id = serde_json::from_str::<serde_json::Value>(json)
        .ok()
        .and_then(|v| v["trigger"].as_u64())
        .unwrap_or(0);
    web::Bytes::from(format!("event: snapshot\nid: {id}\ndata: {json}\n\n"))
}

/// `GET /events`: the latest snapshot at once (if any), then each new one as it is emitted,
/// as server-sent events (`event: snapshot`, `id:` the trigger number).
async fn events(
    req: HttpRequest,
    m: web::Data<Arc<Metrics>>,
    auth: web::Data<Auth>,
) -> HttpResponse {
    if let Some(denied) = auth.check(&req) {
        return denied;
    }
    let m: Arc<Metrics> = m.get_ref().clone();
    let stream = futures_util::stream::unfold(
        (m, None::<Arc<str>>, std::time::Instant::now()),
        |(m, sent, mut quiet)| async move {
            loop {
                if let Some(latest) = m.latest() {
                    if sent.as_ref().is_none_or(|s| !Arc::ptr_eq(s, &latest)) {
                        let event = snapshot_event(&latest);
                        return Some((
                            Ok::<_, std::convert::Infallible>(event),
                            (m, Some(latest), std::time::Instant::now()),
                        ));
                    }
                }
                if quiet.elapsed() >= EVENTS_KEEPALIVE {
                    quiet = std::time::Instant::now();
                    return Some((
                        Ok(web::Bytes::from_static(b": keep-alive\n\n")),
                        (m, sent, quiet),
                    ));
                }
                actix_web::rt::time::sleep(EVENTS_POLL).await;
            }
        },
    );
    HttpResponse::Ok()
        .content_type("text/event-stream")
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .streaming(stream)
}

/// The endpoint's routes over `m`, behind `auth`: what [`serve`] serves, and what tests call
/// with `actix_web::test` (`App::new().configure(routes(m, auth))`).
pub fn routes(
    m: Arc<Metrics>,
    auth: Auth,
    probes: Probes,
) -> impl Fn(&mut web::ServiceConfig) + Clone {
    let data = web::Data::new(m);
    let auth = web::Data::new(auth);
    let probes = web::Data::new(probes);
    move |cfg: &mut web::ServiceConfig| {
        cfg.app_data(data.clone())
            .app_data(auth.clone())
            .app_data(probes.clone())
            .route("/", web::get().to(live_page))
            .route("/events", web::get().to(events))
            .route("/snapshot", web::get().to(snapshot))
            .route("/healthz", web::get().to(healthz))
            .route("/readyz", web::get().to(readyz))
            .route("/livez", web::get().to(livez))
            .route("/metrics", web::get().to(metrics));
    }
}

/// Bind and start the server on the current actix system; the caller spawns the returned
/// server and stops it through its handle. One worker thread is plenty for scrapes.
pub fn serve(
    addr: SocketAddr,
    m: Arc<Metrics>,
    token: Option<Secret>,
    probes: Probes,
) -> Result<(actix_web::dev::Server, Vec<SocketAddr>), PipelineError> {
    if token.is_none() && !addr.ip().is_loopback() {
        tracing::warn!(
            %addr,
            "HTTP listens beyond this machine without a token: anyone who reaches the address can read /snapshot and /metrics; set http.token (--http-token, VIEWPULSE_HTTP_TOKEN)"
        );
    }
    let routes = routes(m, Auth::new(token), probes);
    let server = HttpServer::new(move || App::new().configure(routes.clone()))
        .workers(1)
        .disable_signals()
        .shutdown_timeout(1)
        .bind(addr)
        .map_err(|source| PipelineError::Http {
            addr: addr.to_string(),
            source,
        })?;
    let addrs = server.addrs();
    Ok((server.run(), addrs))
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::http::StatusCode;
    use actix_web::test as web_test;

    #[test]
    fn constant_time_comparison() {
        assert!(constant_time_eq(b"s3cret", b"s3cret"));
        assert!(constant_time_eq(b"", b""));
        for other in [&b"s3creT"[..], b"s3cre", b"s3cret!", b"", b"\xff3cret"] {
            assert!(!constant_time_eq(other, b"s3cret"), "{other:?}");
        }
        // a byte equal to the complement of the token's cannot stand in for a missing one
        assert!(!constant_time_eq(b"a", b"ab"));
    }

    /// Status, `WWW-Authenticate` and body of `GET path` with `authorization`.
    async fn get(
        token: Option<&str>,
        path: &str,
        authorization: Option<&str>,
    ) -> (StatusCode, Option<String>, String) {
        let m = Arc::new(Metrics::new(2));
        m.records.store(42, Ordering::Relaxed);
        let app = web_test::init_service(App::new().configure(routes(
            m,
            Auth::new(token.map(Secret::new)),
            Probes::default(),
        )))
        .await;
        let mut req = web_test::TestRequest::get().uri(path);
        if let Some(a) = authorization {
            req = req.insert_header((header::AUTHORIZATION, a));
        }
        let resp = web_test::call_service(&app, req.to_request()).await;
        let status = resp.status();
        let challenge = resp
            .headers()
            .get(header::WWW_AUTHENTICATE)
            .map(|v| v.to_str().unwrap().to_string());
        let body = web_test::read_body(resp).await;
        (status, challenge, String::from_utf8(body.to_vec()).unwrap())
    }

    #[actix_web::test]
    async fn the_right_token_is_let_through() {
        let (status, challenge, body) = get(Some("t0k3n"), "/metrics", Some("Bearer t0k3n")).await;
        assert_eq!((status, challenge), (StatusCode::OK, None));
        assert!(body.contains("viewpulse_records_total 42"), "{body}");
        // the scheme is case-insensitive (RFC 7235)
        let (status, _, _) = get(Some("t0k3n"), "/metrics", Some("bearer  t0k3n")).await;
        assert_eq!(status, StatusCode::OK);
        // past the token, /snapshot answers as it does without one: none yet
        let (status, _, body) = get(Some("t0k3n"), "/snapshot", Some("Bearer t0k3n")).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(body.contains("no snapshot yet"), "{body}");
    }

    #[actix_web::test]
    async fn no_or_a_wrong_token_is_refused_with_a_challenge() {
        for path in ["/snapshot", "/metrics", "/", "/events"] {
            for (authorization, error) in [
                (None, false),
                (Some("Bearer wrong"), true),
                (Some("Bearer t0k3n-and-more"), true),
                (Some("Bearer t0k3"), true),
                (Some("Bearer "), false),
                (Some("Basic dDBrM24="), false),
                (Some("t0k3n"), false),
            ] {
                let (status, challenge, body) = get(Some("t0k3n"), path, authorization).await;
                assert_eq!(status, StatusCode::UNAUTHORIZED, "{path} {authorization:?}");
                let challenge = challenge.unwrap_or_default();
                assert!(challenge.starts_with("Bearer"), "{challenge}");
                assert_eq!(
                    challenge.contains("invalid_token"),
                    error,
                    "{path} {authorization:?}: {challenge}"
                );
                assert!(!body.contains("42") && !body.contains("t0k3n"), "{body}");
            }
        }
    }

    #[actix_web::test]
    async fn healthz_stays_open_and_no_token_means_no_check() {
        let (status, challenge, body) = get(Some("t0k3n"), "/healthz", None).await;
        assert_eq!((status, challenge), (StatusCode::OK, None));
        assert!(body.contains(r#""records":42"#), "{body}");
        let (status, _, body) = get(None, "/metrics", None).await;
        assert_eq!(status, StatusCode::OK);
        assert!(body.contains("viewpulse_records_total 42"), "{body}");
    }

    #[test]
    fn listen_values() {
        assert_eq!(parse_listen("off"), Ok(None));
        assert_eq!(parse_listen(""), Ok(None));
        assert_eq!(
            parse_listen("9898"),
            Ok(Some("127.0.0.1:9898".parse().unwrap()))
        );
        assert_eq!(
            parse_listen("0.0.0.0:80"),
            Ok(Some("0.0.0.0:80".parse().unwrap()))
        );
        assert_eq!(
            parse_listen("localhost:9898"),
            Ok(Some("127.0.0.1:9898".parse().unwrap()))
        );
        assert_eq!(
            parse_listen(":9898"),
            Ok(Some("0.0.0.0:9898".parse().unwrap()))
        );
        assert_eq!(
            parse_listen("[::1]:80"),
            Ok(Some("[::1]:80".parse().unwrap()))
        );
        for bad in [":", ":x", "localhost", "localhost:", "host:99999", "a b:80"] {
            let e = parse_listen(bad).unwrap_err();
            assert!(e.contains(bad), "{bad}: {e}");
        }
    }
}
