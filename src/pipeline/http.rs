//! The daemon's HTTP endpoint (actix-web), for dashboards and monitoring: `GET /snapshot`
//! (the latest snapshot, SPEC 6's JSON object), `GET /healthz` (liveness and progress) and
//! `GET /metrics` (Prometheus text format). It only reads [`Metrics`]; it never touches the
//! counting path. It binds where `http.listen` says; a bare port means 127.0.0.1.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use actix_web::{web, App, HttpResponse, HttpServer};

use super::metrics::Metrics;
use super::PipelineError;

/// Parse `http.listen`: `HOST:PORT`, or a bare `PORT` meaning 127.0.0.1; empty or `off` means
/// no server.
pub fn parse_listen(s: &str) -> Result<Option<SocketAddr>, String> {
    let s = s.trim();
    if s.is_empty() || s == "off" {
        return Ok(None);
    }
    if let Ok(port) = s.parse::<u16>() {
        return Ok(Some(SocketAddr::from(([127, 0, 0, 1], port))));
    }
    s.parse::<SocketAddr>()
        .map(Some)
        .map_err(|_| format!("{s:?} is not HOST:PORT (an IP address and a port), a port or off"))
}

async fn snapshot(m: web::Data<Arc<Metrics>>) -> HttpResponse {
    match m.latest() {
        Some(json) => HttpResponse::Ok()
            .content_type("application/json")
            .body(json.to_string()),
        None => HttpResponse::ServiceUnavailable()
            .content_type("application/json")
            .insert_header(("Retry-After", "1"))
            .body(r#"{"error":"no snapshot yet"}"#),
    }
}

async fn healthz(m: web::Data<Arc<Metrics>>) -> HttpResponse {
    let status = if m.draining.load(Ordering::Relaxed) {
        "draining"
    } else {
        "ok"
    };
    let body = serde_json::json!({
        "status": status,
        "records": m.records.load(Ordering::Relaxed),
        "triggers": m.triggers.load(Ordering::Relaxed),
        "lag": m.lag(),
        "uptime_seconds": m.uptime(),
    });
    HttpResponse::Ok()
        .content_type("application/json")
        .body(body.to_string())
}

async fn metrics(m: web::Data<Arc<Metrics>>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(m.prometheus())
}

/// Bind and start the server on the current actix system; the caller spawns the returned
/// server and stops it through its handle. One worker thread is plenty for scrapes.
pub fn serve(
    addr: SocketAddr,
    m: Arc<Metrics>,
) -> Result<(actix_web::dev::Server, Vec<SocketAddr>), PipelineError> {
    let data = web::Data::new(m);
    let server = HttpServer::new(move || {
        App::new()
            .app_data(data.clone())
            .route("/snapshot", web::get().to(snapshot))
            .route("/healthz", web::get().to(healthz))
            .route("/metrics", web::get().to(metrics))
    })
    .workers(1)
    .disable_signals()
    .shutdown_timeout(1)
    .bind(addr)
    .map_err(|e| PipelineError::Http {
        addr: addr.to_string(),
        message: e.to_string(),
    })?;
    let addrs = server.addrs();
    Ok((server.run(), addrs))
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert!(parse_listen("localhost:80")
            .unwrap_err()
            .contains("localhost"));
    }
}
