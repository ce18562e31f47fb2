//! Operations metrics in Prometheus text format at `/metrics` (the `metrics` facade and its
//! Prometheus exporter): requests by route and status with latency histograms, the change log
//! and the indexes' lag, the outbox, imports, and the database pool.

use std::sync::OnceLock;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

use crate::error::Result;
use crate::on_engine;
use crate::state::AppState;

/// Latency buckets in seconds, from a cached page to a whole export.
const LATENCY_BUCKETS: [f64; 14] = [
    0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// The process's recorder, installed on first use (one per process: tests build many servers).
pub fn handle() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let recorder = PrometheusBuilder::new()
            .set_buckets(&LATENCY_BUCKETS)
            .unwrap_or_else(|_| PrometheusBuilder::new())
            .build_recorder();
        let handle = recorder.handle();
        // Another recorder already installed (a library user's) keeps the metrics; this handle
        // then renders an empty page rather than failing the server.
        let _ = metrics::set_global_recorder(recorder);
        handle
    })
}

/// Counts and times every request by its route (the router's path template, so that ids do
/// not multiply the series), method and status.
pub async fn track(request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let method = request.method().as_str().to_owned();
    let started = Instant::now();
    let response = next.run(request).await;
    let status = response.status().as_u16().to_string();
    metrics::counter!("proximites_http_requests_total",
        "route" => route.clone(), "method" => method.clone(), "status" => status)
    .increment(1);
    metrics::histogram!("proximites_http_request_duration_seconds",
        "route" => route, "method" => method)
    .record(started.elapsed().as_secs_f64());
    response
}

/// Records what an import did: rows by outcome and its duration.
pub fn record_import(report: &crate::import::ImportReport, seconds: f64) {
    for (outcome, rows) in [
        ("created", report.created),
        ("updated", report.updated),
        ("unchanged", report.unchanged),
        ("rejected", report.rejected),
        ("withdrawn", report.withdrawn),
    ] {
        metrics::counter!("proximites_import_rows_total", "outcome" => outcome).increment(rows);
    }
    metrics::histogram!("proximites_import_duration_seconds").record(seconds);
}

/// Whether `client` may read the metrics: this machine and private networks (RFC 1918, RFC 4193)
/// where a Prometheus scrapes from, not the open internet (behind a trusted proxy, the client
/// is the one it forwards for).
fn may_scrape(client: Option<std::net::IpAddr>) -> bool {
    match client {
        Some(std::net::IpAddr::V4(ip)) => ip.is_loopback() || ip.is_private(),
        Some(std::net::IpAddr::V6(ip)) => {
            ip.is_loopback()
                || (ip.segments()[0] & 0xfe00) == 0xfc00
                || ip
                    .to_ipv4_mapped()
                    .is_some_and(|v4| v4.is_loopback() || v4.is_private())
        }
        // No address known: a server tried through its router, never the internet.
        None => true,
    }
}

/// The metrics of this instance in Prometheus text format (version 0.0.4), for this machine
/// and private networks only (404 to others).
#[utoipa::path(get, path = "/metrics", tag = "meta",
    responses((status = 200, description = "Métriques Prometheus / Prometheus metrics", content_type = "text/plain")))]
pub(crate) async fn metrics_page(
    State(state): State<AppState>,
    crate::admission::ClientAddress(client): crate::admission::ClientAddress,
) -> Result<Response> {
    if !may_scrape(client) {
        return Err(crate::error::Error::not_found("ressource", "/metrics"));
    }
    let positions = state.live.positions();
    let head = crate::db::log_head(&state.store).await?;
    let (pending, failed): (i64, i64) = on_engine!(&state.store, |db| sqlx::query_as(
        "SELECT COUNT(*) FILTER (WHERE sent_at IS NULL),
                COUNT(*) FILTER (WHERE sent_at IS NULL AND last_error IS NOT NULL)
           FROM outbox",
    )
    .fetch_one(db)
    .await)?;
    metrics::gauge!("proximites_change_log_head").set(head as f64);
    metrics::gauge!("proximites_index_position", "index" => "spatial")
        .set(positions.spatial as f64);
    metrics::gauge!("proximites_index_position", "index" => "text").set(positions.text as f64);
    metrics::gauge!("proximites_index_lag_rows")
        .set((head - positions.spatial.min(positions.text)).max(0) as f64);
    metrics::gauge!("proximites_outbox_pending").set(pending as f64);
    metrics::gauge!("proximites_outbox_failing").set(failed as f64);
    let (size, idle) = state.store.connections();
    metrics::gauge!("proximites_db_pool_connections", "state" => "in_use")
        .set(f64::from(size.saturating_sub(idle)));
    metrics::gauge!("proximites_db_pool_connections", "state" => "idle").set(f64::from(idle));
    metrics::gauge!("proximites_db_pool_waiting_transactions")
        .set(crate::db::transactions_waiting() as f64);
    metrics::gauge!("proximites_heavy_requests_in_flight")
        .set(state.admission.heavy.in_flight() as f64);
    Ok((
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        handle().render(),
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_this_machine_and_private_networks_scrape() {
        for (address, allowed) in [
            ("127.0.0.1", true),
            ("10.1.2.3", true),
            ("192.168.1.9", true),
            ("::1", true),
            ("fd12::1", true),
            ("203.0.113.7", false),
            ("2001:db8::1", false),
        ] {
            assert_eq!(
                may_scrape(Some(address.parse().unwrap())),
                allowed,
                "{address}"
            );
        }
    }
}
