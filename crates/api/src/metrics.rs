//! Prometheus metrics (`GET /metrics`, text exposition format).
//!
//! HTTP latency and counts by route are recorded by a middleware. Everything
//! about the work is computed from the store at scrape time, so workers need
//! no metrics endpoint of their own and every API replica reports the same
//! numbers: request and job gauges, queue depth and age; job durations
//! (first claim to end, by final state) and GRIN stage durations (from the
//! stage timings each published version records) as histograms rebuilt from
//! all finished jobs at each scrape; jobs rescued after an expired lease
//! (the reaper's audit records). Each scrape reads at most `SCRAPE_CAP` rows
//! per kind.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use grin_store::{AuditFilter, JobFilter, JobState, PageRequest, RequestFilter, RequestStatus, Store};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    method: String,
    route: String,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteOnly {
    method: String,
    route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusLabel {
    status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StageLabel {
    stage: String,
}

struct Inner {
    registry: Registry,
    http_requests: Family<RouteLabels, Counter>,
    http_latency: Family<RouteOnly, Histogram>,
    requests_by_status: Family<StatusLabel, Gauge>,
    jobs_by_state: Family<StatusLabel, Gauge>,
    queue_depth: Gauge,
    oldest_queued_age: Gauge<f64, std::sync::atomic::AtomicU64>,
    job_duration: Family<OutcomeLabel, Histogram>,
    stage_duration: Family<StageLabel, Histogram>,
    rescued: Counter,
    /// Rebuilding the histograms is clear-then-refill: one scrape at a time.
    rebuild: Mutex<()>,
}

/// The metrics registry of one API process. Cheap to clone.
#[derive(Clone)]
pub struct Metrics {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

/// Most rows counted per status / state at scrape time.
const SCRAPE_CAP: usize = 100_000;

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let http_requests = Family::<RouteLabels, Counter>::default();
        let http_latency = Family::<RouteOnly, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.001, 2.0, 16))
        });
        let requests_by_status = Family::<StatusLabel, Gauge>::default();
        let jobs_by_state = Family::<StatusLabel, Gauge>::default();
        let queue_depth = Gauge::default();
        let oldest_queued_age = Gauge::<f64, std::sync::atomic::AtomicU64>::default();
        let job_duration = Family::<OutcomeLabel, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(1.0, 2.0, 16))
        });
        let stage_duration =
            Family::<StageLabel, Histogram>::new_with_constructor(|| Histogram::new(exponential_buckets(0.1, 2.0, 18)));
        let rescued = Counter::default();
        registry.register(
            "grin_http_requests",
            "HTTP requests by route and status",
            http_requests.clone(),
        );
        registry.register(
            "grin_http_request_duration_seconds",
            "HTTP latency by route",
            http_latency.clone(),
        );
        registry.register(
            "grin_deletion_requests",
            "Deletion requests by status",
            requests_by_status.clone(),
        );
        registry.register("grin_jobs", "Jobs by state", jobs_by_state.clone());
        registry.register("grin_queue_depth", "Jobs queued", queue_depth.clone());
        registry.register(
            "grin_queue_oldest_age_seconds",
            "Age of the oldest queued job",
            oldest_queued_age.clone(),
        );
        registry.register(
            "grin_job_duration_seconds",
            "Job run time from first claim to end, by final state",
            job_duration.clone(),
        );
        registry.register(
            "grin_stage_duration_seconds",
            "GRIN stage run time (published versions)",
            stage_duration.clone(),
        );
        registry.register(
            "grin_jobs_rescued",
            "Jobs returned to the queue after their lease expired",
            rescued.clone(),
        );
        Metrics {
            inner: Arc::new(Inner {
                registry,
                http_requests,
                http_latency,
                requests_by_status,
                jobs_by_state,
                queue_depth,
                oldest_queued_age,
                job_duration,
                stage_duration,
                rescued,
                rebuild: Mutex::new(()),
            }),
        }
    }

    fn observe_http(&self, method: &str, route: &str, status: u16, seconds: f64) {
        self.inner
            .http_requests
            .get_or_create(&RouteLabels {
                method: method.to_owned(),
                route: route.to_owned(),
                status,
            })
            .inc();
        self.inner
            .http_latency
            .get_or_create(&RouteOnly {
                method: method.to_owned(),
                route: route.to_owned(),
            })
            .observe(seconds);
    }

    /// Refreshes the store gauges and renders everything.
    pub async fn render(&self, store: &Store) -> grin_store::Result<String> {
        for status in RequestStatus::ALL {
            let filter = RequestFilter {
                status: Some(*status),
                ..RequestFilter::default()
            };
            let mut n = 0usize;
            let mut after = None;
            loop {
                let page = store.list_requests(&filter, PageRequest { after, limit: 1000 }).await?;
                n += page.items.len();
                after = page.next;
                if after.is_none() || n >= SCRAPE_CAP {
                    break;
                }
            }
            self.inner
                .requests_by_status
                .get_or_create(&StatusLabel {
                    status: status.as_str().to_owned(),
                })
                .set(n as i64);
        }
        let now = chrono::Utc::now();
        let mut durations: Vec<(&'static str, f64)> = Vec::new();
        for state in JobState::ALL {
            let filter = JobFilter {
                state: Some(*state),
                ..JobFilter::default()
            };
            let mut n = 0usize;
            let mut after = None;
            let mut oldest = None;
            loop {
                let page = store.list_jobs(&filter, PageRequest { after, limit: 1000 }).await?;
                n += page.items.len();
                if let Some(last) = page.items.last() {
                    oldest = Some(last.created_at);
                }
                if state.is_terminal() {
                    durations.extend(page.items.iter().filter_map(|j| {
                        let (start, end) = (j.started_at?, j.finished_at?);
                        Some((state.as_str(), (end - start).num_milliseconds().max(0) as f64 / 1000.0))
                    }));
                }
                after = page.next;
                if after.is_none() || n >= SCRAPE_CAP {
                    break;
                }
            }
            self.inner
                .jobs_by_state
                .get_or_create(&StatusLabel {
                    status: state.as_str().to_owned(),
                })
                .set(n as i64);
            if *state == JobState::Queued {
                self.inner.queue_depth.set(n as i64);
                let age = oldest.map_or(0.0, |t| (now - t).num_milliseconds().max(0) as f64 / 1000.0);
                self.inner.oldest_queued_age.set(age);
            }
        }
        let stages = stage_timings(store).await?;
        let rescued = rescued_jobs(store).await?;
        let _one_at_a_time = self.inner.rebuild.lock().unwrap_or_else(|e| e.into_inner());
        self.inner.job_duration.clear();
        for (outcome, seconds) in durations {
            self.inner
                .job_duration
                .get_or_create(&OutcomeLabel {
                    outcome: outcome.to_owned(),
                })
                .observe(seconds);
        }
        self.inner.stage_duration.clear();
        for (stage, seconds) in stages {
            self.inner
                .stage_duration
                .get_or_create(&StageLabel { stage })
                .observe(seconds);
        }
        // A counter only goes up: add what the audit log gained.
        let counted = self.inner.rescued.get();
        if rescued > counted {
            self.inner.rescued.inc_by(rescued - counted);
        }
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.inner.registry)
            .map_err(|e| grin_store::Error::Corrupt(format!("encoding metrics: {e}")))?;
        Ok(out)
    }
}

/// Middleware (a route layer): counts requests and records latency by route.
pub async fn track_http(State(metrics): State<Metrics>, req: Request, next: Next) -> Response {
    let start = Instant::now();
    let method = req.method().as_str().to_owned();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let response = next.run(req).await;
    metrics.observe_http(
        &method,
        &route,
        response.status().as_u16(),
        start.elapsed().as_secs_f64(),
    );
    response
}

/// (stage, seconds) of every published version's GRIN stages.
async fn stage_timings(store: &Store) -> grin_store::Result<Vec<(String, f64)>> {
    let mut out = Vec::new();
    for model in store.list_models().await? {
        for version in store.list_versions(&model.name).await? {
            if let Some(stages) = version.metrics.get("stage_seconds").and_then(|v| v.as_object()) {
                out.extend(stages.iter().filter_map(|(k, v)| Some((k.clone(), v.as_f64()?))));
            }
            if out.len() >= SCRAPE_CAP {
                return Ok(out);
            }
        }
    }
    Ok(out)
}

/// Jobs the reaper put back in the queue after their lease expired.
async fn rescued_jobs(store: &Store) -> grin_store::Result<u64> {
    let filter = AuditFilter {
        action: Some("job.retry_scheduled".into()),
        ..AuditFilter::default()
    };
    let (mut n, mut after) = (0u64, 0i64);
    loop {
        let page = store.list_audit(&filter, after, 1000).await?;
        n += page.iter().filter(|r| r.actor == "reaper").count() as u64;
        match page.last() {
            Some(last) if page.len() == 1000 && (n as usize) < SCRAPE_CAP => after = last.seq,
            _ => return Ok(n),
        }
    }
}
