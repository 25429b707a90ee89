//! `/metrics` in the Prometheus text format (0.0.4): requests and latency per route, tokens
//! issued per grant type, OAuth errors per RFC error code, expired records purged per kind, log
//! lines dropped, the store's size on disk. Counters are
//! process-wide atomics (no lock on the hot path but the per-route table's read lock), so a
//! scrape costs nothing to requests.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::RwLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds of the latency buckets, in seconds.
const BUCKETS: [f64; 12] = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5];

#[derive(Default)]
struct RouteStats {
    /// Requests per status code.
    by_status: RwLock<BTreeMap<u16, AtomicU64>>,
    /// Cumulative counts per bucket, then +Inf.
    buckets: [AtomicU64; BUCKETS.len() + 1],
    sum_micros: AtomicU64,
}

pub struct Metrics {
    routes: RwLock<BTreeMap<&'static str, RouteStats>>,
    tokens_issued: RwLock<BTreeMap<&'static str, AtomicU64>>,
    oauth_errors: RwLock<BTreeMap<&'static str, AtomicU64>>,
    purged: RwLock<BTreeMap<&'static str, AtomicU64>>,
}

pub static METRICS: Metrics = Metrics {
    routes: RwLock::new(BTreeMap::new()),
    tokens_issued: RwLock::new(BTreeMap::new()),
    oauth_errors: RwLock::new(BTreeMap::new()),
    purged: RwLock::new(BTreeMap::new()),
};

/// Adds one to `key` in `table`, creating the entry the first time.
fn bump<K: Ord + Copy>(table: &RwLock<BTreeMap<K, AtomicU64>>, key: K) {
    add(table, key, 1);
}

fn add<K: Ord + Copy>(table: &RwLock<BTreeMap<K, AtomicU64>>, key: K, amount: u64) {
    if let Some(counter) = table.read().unwrap_or_else(|poisoned| poisoned.into_inner()).get(&key) {
        counter.fetch_add(amount, Ordering::Relaxed);
        return;
    }
    table
        .write()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .entry(key)
        .or_default()
        .fetch_add(amount, Ordering::Relaxed);
}

/// One counter family with a single label, one line per label value.
fn counter_family(
    out: &mut String,
    name: &str,
    help: &str,
    label: &str,
    table: &RwLock<BTreeMap<&'static str, AtomicU64>>,
) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} counter");
    for (value, count) in table.read().unwrap_or_else(|poisoned| poisoned.into_inner()).iter() {
        let _ = writeln!(out, "{name}{{{label}=\"{value}\"}} {}", count.load(Ordering::Relaxed));
    }
}

/// The route label of a path: its pattern, so that ids do not make label values unbounded.
pub fn route_label(path: &str) -> &'static str {
    const ROUTES: [&str; 20] = [
        "/o/token",
        "/o/revoke_token",
        "/o/introspect",
        "/o/revoked_tokens",
        "/o/userinfo",
        "/o/authorize",
        "/o/logout",
        "/.well-known/oauth-authorization-server",
        "/.well-known/openid-configuration",
        "/.well-known/jwks.json",
        "/api/hello",
        "/healthz",
        "/metrics",
        "/openapi.json",
        "/docs",
        "/docs/oauth2-redirect.html",
        "/login",
        "/logout",
        "/static/portcullis.css",
        "/",
    ];
    let path = if path.len() > 1 { path.trim_end_matches('/') } else { path };
    if let Some(route) = ROUTES.iter().find(|route| **route == path) {
        return route;
    }
    if path.starts_with("/o/applications") {
        "/o/applications/*"
    } else if path.starts_with("/o/authorized_tokens") {
        "/o/authorized_tokens/*"
    } else {
        "other"
    }
}

impl Metrics {
    pub fn record_request(&self, path: &str, status: u16, elapsed: Duration) {
        let route = route_label(path);
        {
            let routes = self.routes.read().unwrap_or_else(|poisoned| poisoned.into_inner());
            if let Some(stats) = routes.get(route) {
                stats.record(status, elapsed);
                return;
            }
        }
        self.routes
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .entry(route)
            .or_default()
            .record(status, elapsed);
    }

    pub fn record_token_issued(&self, grant_type: &'static str) {
        bump(&self.tokens_issued, grant_type);
    }

    pub fn record_oauth_error(&self, code: &'static str) {
        bump(&self.oauth_errors, code);
    }

    /// Counts what one run of the background purge removed.
    pub fn record_purged(&self, counts: &crate::store::PurgeCounts) {
        for (kind, count) in [
            ("code", counts.codes),
            ("grant", counts.grants),
            ("refresh_token", counts.refresh_tokens),
            ("session", counts.sessions),
            ("revoked_access_token", counts.revoked_access_tokens),
            ("revoked_client", counts.revoked_clients),
        ] {
            add(&self.purged, kind, count);
        }
    }

    /// The exposition text; `store_bytes` is the store's size on disk, if known.
    pub fn render(&self, store_bytes: Option<u64>) -> String {
        let mut out = String::new();
        let routes = self.routes.read().unwrap_or_else(|poisoned| poisoned.into_inner());
        out.push_str("# HELP portcullis_http_requests_total HTTP requests by route and status.\n");
        out.push_str("# TYPE portcullis_http_requests_total counter\n");
        for (route, stats) in routes.iter() {
            for (status, count) in
                stats.by_status.read().unwrap_or_else(|poisoned| poisoned.into_inner()).iter()
            {
                let _ = writeln!(
                    out,
                    "portcullis_http_requests_total{{route=\"{route}\",status=\"{status}\"}} {}",
                    count.load(Ordering::Relaxed)
                );
            }
        }
        out.push_str("# HELP portcullis_http_request_duration_seconds Time to answer, by route.\n");
        out.push_str("# TYPE portcullis_http_request_duration_seconds histogram\n");
        for (route, stats) in routes.iter() {
            for (index, bound) in BUCKETS.iter().enumerate() {
                let _ = writeln!(
                    out,
                    "portcullis_http_request_duration_seconds_bucket{{route=\"{route}\",le=\"{bound}\"}} {}",
                    stats.buckets[index].load(Ordering::Relaxed)
                );
            }
            let count = stats.buckets[BUCKETS.len()].load(Ordering::Relaxed);
            let _ = writeln!(
                out,
                "portcullis_http_request_duration_seconds_bucket{{route=\"{route}\",le=\"+Inf\"}} {count}"
            );
            let _ = writeln!(
                out,
                "portcullis_http_request_duration_seconds_sum{{route=\"{route}\"}} {}",
                stats.sum_micros.load(Ordering::Relaxed) as f64 / 1e6
            );
            let _ =
                writeln!(out, "portcullis_http_request_duration_seconds_count{{route=\"{route}\"}} {count}");
        }
        drop(routes);
        counter_family(
            &mut out,
            "portcullis_tokens_issued_total",
            "Access tokens issued, by grant type.",
            "grant_type",
            &self.tokens_issued,
        );
        counter_family(
            &mut out,
            "portcullis_oauth_errors_total",
            "OAuth error responses, by error code (RFC 6749, RFC 6750 at protected resources, OpenID Connect).",
            "error",
            &self.oauth_errors,
        );
        counter_family(
            &mut out,
            "portcullis_purged_records_total",
            "Expired records the purge removed, by kind.",
            "kind",
            &self.purged,
        );
        out.push_str(
            "# HELP portcullis_log_lines_dropped_total Log lines dropped because stderr was not read fast enough.\n",
        );
        out.push_str("# TYPE portcullis_log_lines_dropped_total counter\n");
        let _ = writeln!(out, "portcullis_log_lines_dropped_total {}", crate::logging::dropped_lines());
        if let Some(bytes) = store_bytes {
            out.push_str("# HELP portcullis_store_size_bytes Size of the store on disk.\n");
            out.push_str("# TYPE portcullis_store_size_bytes gauge\n");
            let _ = writeln!(out, "portcullis_store_size_bytes {bytes}");
        }
        out
    }
}

impl RouteStats {
    fn record(&self, status: u16, elapsed: Duration) {
        bump(&self.by_status, status);
        let seconds = elapsed.as_secs_f64();
        // Cumulative buckets: every bucket whose bound the latency does not exceed.
        for (index, bound) in BUCKETS.iter().enumerate() {
            if seconds <= *bound {
                self.buckets[index].fetch_add(1, Ordering::Relaxed);
            }
        }
        self.buckets[BUCKETS.len()].fetch_add(1, Ordering::Relaxed);
        self.sum_micros.fetch_add(elapsed.as_micros() as u64, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_cumulative_and_routes_are_patterns() {
        let metrics = Metrics {
            routes: RwLock::new(BTreeMap::new()),
            tokens_issued: RwLock::new(BTreeMap::new()),
            oauth_errors: RwLock::new(BTreeMap::new()),
            purged: RwLock::new(BTreeMap::new()),
        };
        metrics.record_purged(&crate::store::PurgeCounts { refresh_tokens: 3, ..Default::default() });
        metrics.record_purged(&crate::store::PurgeCounts {
            refresh_tokens: 2,
            codes: 1,
            ..Default::default()
        });
        metrics.record_request("/o/token/", 200, Duration::from_micros(700));
        metrics.record_request("/o/applications/abc/update", 303, Duration::from_millis(30));
        let text = metrics.render(Some(42));
        assert!(text.contains("portcullis_http_requests_total{route=\"/o/token\",status=\"200\"} 1"));
        assert!(
            text.contains(
                "portcullis_http_request_duration_seconds_bucket{route=\"/o/token\",le=\"0.0005\"} 0"
            )
        );
        assert!(
            text.contains(
                "portcullis_http_request_duration_seconds_bucket{route=\"/o/token\",le=\"0.001\"} 1"
            )
        );
        assert!(
            text.contains(
                "portcullis_http_request_duration_seconds_bucket{route=\"/o/token\",le=\"+Inf\"} 1"
            )
        );
        assert!(text.contains("route=\"/o/applications/*\""));
        assert!(text.contains("portcullis_store_size_bytes 42"));
        assert!(text.contains("portcullis_purged_records_total{kind=\"refresh_token\"} 5"));
        assert!(text.contains("portcullis_purged_records_total{kind=\"code\"} 1"));
    }
}
