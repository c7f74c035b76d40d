//! The job queue: exclusive claims, leases, the reaper, backoff, attempts,
//! cancellation, idempotent publish, wake-ups.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use grin_store::{Error, JobFilter, JobState, PageRequest, Progress, RequestStatus, VersionStatus};
use serde_json::json;
use tokio::sync::Mutex;
use uuid::Uuid;

use crate::common::{eventually, new_model, new_request, new_version, store_options, TestDb, ADMIN};

backend_tests!(
    concurrent_claimers_claim_each_job_once,
    expired_lease_returns_job_to_queue_and_it_completes_once,
    claim_respects_run_after_backoff_and_max_attempts,
    released_job_is_runnable_at_once_and_keeps_its_attempts,
    cancel_queued_request_at_once,
    cancel_running_request_sets_flag_and_requeues_the_rest,
    heartbeat_after_lease_loss_fails,
    publishing_is_idempotent,
    requests_coalesce_into_one_job_up_to_max_batch,
    waiter_wakes_when_work_is_queued,
);

const LEASE: Duration = Duration::from_secs(30);

/// N claimers (each its own store and pool: real parallel connections) race
/// over M jobs; every job is claimed exactly once.
async fn concurrent_claimers_claim_each_job_once(db: TestDb) -> Result<()> {
    const MODELS: usize = 8;
    const JOBS_PER_MODEL: usize = 4;
    const CLAIMERS: usize = 8;
    let mut options = store_options();
    options.queue.max_batch = 1; // one request per job
    let store = db.store_with(options.clone()).await?;
    let mut job_ids = BTreeSet::new();
    for m in 0..MODELS {
        let model = format!("model-{m}");
        store.create_model(&new_model(&model), ADMIN).await?;
        for j in 0..JOBS_PER_MODEL {
            let (request, _) = store
                .create_request(&new_request(&store, &model, &format!("{m}-{j}"), "text"))
                .await?;
            let jobs = store.jobs_for_request(request.id).await?;
            job_ids.insert(jobs[0].id);
        }
    }
    ensure!(job_ids.len() == MODELS * JOBS_PER_MODEL, "one job per request");

    let claims: Arc<Mutex<Vec<Uuid>>> = Arc::default();
    let mut tasks = Vec::new();
    for c in 0..CLAIMERS {
        let store = db.store_with(options.clone()).await?;
        let claims = Arc::clone(&claims);
        let total = job_ids.len();
        tasks.push(tokio::spawn(async move {
            let worker = format!("worker-{c}");
            let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
            loop {
                if claims.lock().await.len() >= total {
                    return anyhow::Ok(());
                }
                ensure!(tokio::time::Instant::now() < deadline, "claimers stalled");
                match store.claim(&worker, LEASE).await? {
                    Some(claimed) => {
                        claims.lock().await.push(claimed.job.id);
                        store.complete_job(claimed.job.id, &worker, None).await?;
                    }
                    // Jobs left belong to models with a running job.
                    None => tokio::time::sleep(Duration::from_millis(5)).await,
                }
            }
        }));
    }
    for t in tasks {
        t.await??;
    }
    let claims = claims.lock().await.clone();
    let mut counts: HashMap<Uuid, usize> = HashMap::new();
    for id in &claims {
        *counts.entry(*id).or_default() += 1;
    }
    let twice: Vec<_> = counts.iter().filter(|(_, n)| **n > 1).collect();
    ensure!(twice.is_empty(), "jobs claimed more than once: {twice:?}");
    ensure!(
        counts.keys().copied().collect::<BTreeSet<_>>() == job_ids,
        "claimed {} of {} jobs",
        counts.len(),
        job_ids.len()
    );
    let succeeded = store
        .list_jobs(
            &JobFilter {
                state: Some(JobState::Succeeded),
                ..Default::default()
            },
            PageRequest {
                after: None,
                limit: 1000,
            },
        )
        .await?;
    ensure!(succeeded.items.len() == job_ids.len());
    ensure!(succeeded.items.iter().all(|j| j.attempts == 1));
    store.verify_audit().await?;
    Ok(())
}

async fn expired_lease_returns_job_to_queue_and_it_completes_once(db: TestDb) -> Result<()> {
    let store = db.store().await?;
    store.create_model(&new_model("m"), ADMIN).await?;
    let (request, _) = store.create_request(&new_request(&store, "m", "k", "t")).await?;

    let first = store
        .claim("worker-a", Duration::from_millis(800))
        .await?
        .context("claimable")?;
    ensure!(first.job.attempts == 1);
    ensure!(
        store.claim("worker-b", LEASE).await?.is_none(),
        "leased job is not claimable"
    );
    ensure!(store.reap_expired().await?.is_empty(), "lease still valid");

    tokio::time::sleep(Duration::from_millis(1000)).await;
    let reaped = store.reap_expired().await?;
    ensure!(reaped.len() == 1 && reaped[0].state == JobState::Queued, "{reaped:?}");
    ensure!(store.get_request(request.id).await?.status == RequestStatus::Queued);

    let second = eventually(Duration::from_secs(5), || store.claim("worker-b", LEASE)).await?;
    ensure!(second.job.id == first.job.id && second.job.attempts == 2);
    ensure!(second.requests.iter().map(|r| r.id).collect::<Vec<_>>() == vec![request.id]);

    // The stale worker wakes up: everything it tries is refused.
    let stale = store.heartbeat(first.job.id, "worker-a", LEASE).await;
    ensure!(matches!(stale, Err(Error::LeaseLost { .. })), "{stale:?}");
    let stale = store
        .complete_job(
            first.job.id,
            "worker-a",
            Some(new_version("m", first.job.id, &[request.id], VersionStatus::Published)),
        )
        .await;
    ensure!(matches!(stale, Err(Error::LeaseLost { .. })), "{stale:?}");

    let version = store
        .complete_job(
            second.job.id,
            "worker-b",
            Some(new_version("m", second.job.id, &[request.id], VersionStatus::Published)),
        )
        .await?
        .context("a version")?;
    ensure!(version.number == 2);
    ensure!(store.list_versions("m").await?.len() == 2, "base + one");
    let job = store.get_job(first.job.id).await?;
    ensure!(job.state == JobState::Succeeded && job.result_version_id == Some(version.id));
    let request = store.get_request(request.id).await?;
    ensure!(request.status == RequestStatus::Succeeded);
    ensure!(request.result_version_id == Some(version.id));
    ensure!(store.get_alias("m", "production").await?.version_id == version.id);
    store.verify_audit().await?;
    Ok(())
}

async fn claim_respects_run_after_backoff_and_max_attempts(db: TestDb) -> Result<()> {
    let mut options = store_options();
    options.queue.backoff_base = Duration::from_millis(600);
    options.queue.backoff_max = Duration::from_secs(10);
    options.queue.max_attempts = 3;
    let store = db.store_with(options).await?;
    store.create_model(&new_model("m"), ADMIN).await?;
    let (request, _) = store.create_request(&new_request(&store, "m", "k", "t")).await?;

    let mut last_delay = chrono::TimeDelta::zero();
    for attempt in 1..=2_i64 {
        let claimed = eventually(Duration::from_secs(5), || store.claim("w", LEASE)).await?;
        ensure!(claimed.job.attempts == attempt);
        let job = store.fail_job(claimed.job.id, "w", "CUDA out of memory", true).await?;
        ensure!(job.state == JobState::Queued, "retryable failure re-queues");
        ensure!(job.last_error.as_deref() == Some("CUDA out of memory"));
        let delay = job.run_after - job.updated_at;
        // base * 2^(attempt-1), jittered into [half, full].
        let full = chrono::TimeDelta::milliseconds(600 * (1 << (attempt - 1)));
        ensure!(delay >= full / 2 && delay <= full, "attempt {attempt}: delay {delay}");
        ensure!(delay > last_delay / 2, "backoff grows");
        last_delay = delay;
        // Not claimable before run_after.
        ensure!(store.claim("w", LEASE).await?.is_none(), "claimed before run_after");
        ensure!(store.get_request(request.id).await?.status == RequestStatus::Queued);
    }
    let claimed = eventually(Duration::from_secs(5), || store.claim("w", LEASE)).await?;
    ensure!(claimed.job.attempts == 3);
    let job = store.fail_job(claimed.job.id, "w", "still out of memory", true).await?;
    ensure!(job.state == JobState::Failed, "attempts exhausted: {:?}", job.state);
    ensure!(job.finished_at.is_some());
    tokio::time::sleep(Duration::from_millis(600)).await;
    ensure!(
        store.claim("w", LEASE).await?.is_none(),
        "a failed job is never claimed"
    );
    let request = store.get_request(request.id).await?;
    ensure!(request.status == RequestStatus::Failed);
    ensure!(request.error.as_deref() == Some("still out of memory"));

    // A non-retryable error fails at once.
    let (second, _) = store.create_request(&new_request(&store, "m", "k2", "t")).await?;
    let claimed = eventually(Duration::from_secs(5), || store.claim("w", LEASE)).await?;
    let job = store.fail_job(claimed.job.id, "w", "bad input", false).await?;
    ensure!(job.state == JobState::Failed && job.attempts == 1);
    ensure!(store.get_request(second.id).await?.status == RequestStatus::Failed);
    store.verify_audit().await?;
    Ok(())
}

/// A worker that shuts down hands its job back: runnable at once, the
/// attempt not counted, so repeated shutdowns never exhaust a job.
async fn released_job_is_runnable_at_once_and_keeps_its_attempts(db: TestDb) -> Result<()> {
    let mut options = store_options();
    options.queue.backoff_base = Duration::from_secs(600);
    options.queue.max_attempts = 2;
    let store = db.store_with(options).await?;
    store.create_model(&new_model("m"), ADMIN).await?;
    let (request, _) = store.create_request(&new_request(&store, "m", "k", "t")).await?;
    for round in 0..3 {
        let claimed = eventually(Duration::from_secs(5), || store.claim("w", LEASE)).await?;
        ensure!(
            claimed.job.attempts == 1,
            "round {round}: attempt {}",
            claimed.job.attempts
        );
        ensure!(store.get_request(request.id).await?.status == RequestStatus::Running);
        let job = store.release_job(claimed.job.id, "w", "worker shut down").await?;
        ensure!(job.state == JobState::Queued, "released job is queued: {:?}", job.state);
        ensure!(job.attempts == 0 && job.worker_id.is_none() && job.lease_expires_at.is_none());
        ensure!(job.run_after <= job.updated_at, "no backoff after a release");
        ensure!(store.get_request(request.id).await?.status == RequestStatus::Queued);
        // Only the owner may release.
        let again = store.release_job(claimed.job.id, "w", "twice").await;
        ensure!(matches!(again, Err(Error::LeaseLost { .. })), "{again:?}");
    }
    // A cancel requested while running wins over the release. (`eventually`:
    // the refused release's rolled-back transaction may still hold its row
    // lock for a moment, and claims skip locked rows.)
    let claimed = eventually(Duration::from_secs(5), || store.claim("w", LEASE)).await?;
    store.cancel_request(request.id, ADMIN).await?;
    let job = store.release_job(claimed.job.id, "w", "worker shut down").await?;
    ensure!(job.state == JobState::Cancelled, "{:?}", job.state);
    ensure!(store.get_request(request.id).await?.status == RequestStatus::Cancelled);
    let actions: Vec<String> = store
        .list_audit(&Default::default(), 0, 1000)
        .await?
        .into_iter()
        .map(|r| r.action)
        .collect();
    ensure!(
        actions.iter().filter(|a| *a == "job.released").count() == 3,
        "{actions:?}"
    );
    store.verify_audit().await?;
    Ok(())
}

async fn cancel_queued_request_at_once(db: TestDb) -> Result<()> {
    let store = db.store().await?;
    store.create_model(&new_model("m"), ADMIN).await?;
    let (request, _) = store.create_request(&new_request(&store, "m", "k", "t")).await?;
    let job = store.jobs_for_request(request.id).await?[0].clone();

    let cancelled = store.cancel_request(request.id, "client:client-1").await?;
    ensure!(cancelled.status == RequestStatus::Cancelled && cancelled.finished_at.is_some());
    ensure!(
        store.get_job(job.id).await?.state == JobState::Cancelled,
        "empty job is cancelled"
    );
    ensure!(store.claim("w", LEASE).await?.is_none());
    // Idempotent.
    let again = store.cancel_request(request.id, "client:client-1").await?;
    ensure!(again.status == RequestStatus::Cancelled);

    // A queued job keeps running for the requests that were not cancelled.
    let (a, _) = store.create_request(&new_request(&store, "m", "a", "t")).await?;
    let (b, _) = store.create_request(&new_request(&store, "m", "b", "u")).await?;
    store.cancel_request(a.id, "client:client-1").await?;
    let claimed = store.claim("w", LEASE).await?.context("claimable")?;
    ensure!(claimed.requests.iter().map(|r| r.id).collect::<Vec<_>>() == vec![b.id]);

    // cancel_job on a queued job cancels everything in it.
    let job = store.complete_job(claimed.job.id, "w", None).await;
    ensure!(job.is_ok());
    ensure!(store.get_request(b.id).await?.status == RequestStatus::NothingToForget);
    let (c, _) = store.create_request(&new_request(&store, "m", "c", "t")).await?;
    let job_c = store.jobs_for_request(c.id).await?[0].id;
    let job = store.cancel_job(job_c, ADMIN).await?;
    ensure!(job.state == JobState::Cancelled);
    ensure!(store.get_request(c.id).await?.status == RequestStatus::Cancelled);
    store.verify_audit().await?;
    Ok(())
}

async fn cancel_running_request_sets_flag_and_requeues_the_rest(db: TestDb) -> Result<()> {
    let store = db.store().await?;
    store.create_model(&new_model("m"), ADMIN).await?;
    let (a, _) = store.create_request(&new_request(&store, "m", "a", "t")).await?;
    let (b, _) = store.create_request(&new_request(&store, "m", "b", "u")).await?;
    let claimed = store.claim("w", LEASE).await?.context("claimable")?;
    ensure!(claimed.requests.len() == 2, "coalesced into one job");

    let hb = store.heartbeat(claimed.job.id, "w", LEASE).await?;
    ensure!(!hb.cancel_requested);
    let a_now = store.cancel_request(a.id, "client:client-1").await?;
    ensure!(a_now.status == RequestStatus::Running && a_now.cancel_requested);
    let hb = store.heartbeat(claimed.job.id, "w", LEASE).await?;
    ensure!(hb.cancel_requested, "the worker sees the flag");

    let job = store.acknowledge_cancel(claimed.job.id, "w").await?;
    ensure!(job.state == JobState::Cancelled);
    ensure!(store.get_request(a.id).await?.status == RequestStatus::Cancelled);
    let b_now = store.get_request(b.id).await?;
    ensure!(
        b_now.status == RequestStatus::Queued,
        "the other request goes back to the queue"
    );
    let jobs_b = store.jobs_for_request(b.id).await?;
    ensure!(jobs_b.len() == 2 && jobs_b[1].state == JobState::Queued);

    let next = store.claim("w", LEASE).await?.context("re-queued job")?;
    ensure!(next.job.id == jobs_b[1].id);
    ensure!(next.requests.iter().map(|r| r.id).collect::<Vec<_>>() == vec![b.id]);
    // cancel_job on a running job: flag; a failing worker then cancels it.
    let job = store.cancel_job(next.job.id, ADMIN).await?;
    ensure!(job.state == JobState::Running && job.cancel_requested);
    let job = store.fail_job(next.job.id, "w", "stopped", true).await?;
    ensure!(job.state == JobState::Cancelled);
    ensure!(store.get_request(b.id).await?.status == RequestStatus::Cancelled);
    store.verify_audit().await?;
    Ok(())
}

async fn heartbeat_after_lease_loss_fails(db: TestDb) -> Result<()> {
    let store = db.store().await?;
    store.create_model(&new_model("m"), ADMIN).await?;
    store.create_request(&new_request(&store, "m", "k", "t")).await?;
    let claimed = store
        .claim("w1", Duration::from_millis(100))
        .await?
        .context("claimable")?;
    let job = claimed.job.id;
    // While leased: renewals, progress and payload reads work for the owner only.
    store.heartbeat(job, "w1", Duration::from_millis(100)).await?;
    store
        .update_progress(
            job,
            "w1",
            &Progress {
                stage: "saliency".into(),
                percent: 12.5,
                message: Some("scoring".into()),
            },
        )
        .await?;
    let progress = store.get_job(job).await?;
    ensure!(progress.progress_stage.as_deref() == Some("saliency"));
    ensure!(progress.progress_percent == Some(12.5));
    ensure!(store.job_payloads(job, "w1").await?.len() == 1);
    ensure!(matches!(
        store.job_payloads(job, "intruder").await,
        Err(Error::LeaseLost { .. })
    ));
    ensure!(matches!(
        store.heartbeat(job, "intruder", LEASE).await,
        Err(Error::LeaseLost { .. })
    ));

    tokio::time::sleep(Duration::from_millis(250)).await;
    ensure!(store.reap_expired().await?.len() == 1);
    let lost = store.heartbeat(job, "w1", LEASE).await;
    ensure!(matches!(lost, Err(Error::LeaseLost { .. })), "{lost:?}");
    ensure!(lost.as_ref().err().map(Error::http_status) == Some(409));
    let progress = Progress {
        stage: "noise".into(),
        percent: 50.0,
        message: None,
    };
    ensure!(matches!(
        store.update_progress(job, "w1", &progress).await,
        Err(Error::LeaseLost { .. })
    ));
    ensure!(matches!(
        store.fail_job(job, "w1", "x", true).await,
        Err(Error::LeaseLost { .. })
    ));
    // Another worker takes it; the old one stays locked out.
    let retaken = eventually(Duration::from_secs(5), || store.claim("w2", LEASE)).await?;
    ensure!(retaken.job.id == job);
    ensure!(matches!(
        store.heartbeat(job, "w1", LEASE).await,
        Err(Error::LeaseLost { .. })
    ));
    store.heartbeat(job, "w2", LEASE).await?;
    Ok(())
}

async fn publishing_is_idempotent(db: TestDb) -> Result<()> {
    let store = db.store().await?;
    store.create_model(&new_model("m"), ADMIN).await?;
    let (request, _) = store.create_request(&new_request(&store, "m", "k", "t")).await?;
    let claimed = store.claim("w", LEASE).await?.context("claimable")?;
    let job = claimed.job.id;
    let new = new_version("m", job, &[request.id], VersionStatus::Published);

    let (first, created) = store.register_version(&new, "worker:w").await?;
    ensure!(created && first.number == 2);
    ensure!(first.parent_id.is_none() || first.parent_id == claimed.job.base_version_id);
    ensure!(first.files.len() == 2 && first.files[0].path == "config.json");
    let mut other = new.clone();
    other.location = "file:///elsewhere".into();
    let (second, created) = store.register_version(&other, "worker:w").await?;
    ensure!(!created && second == first, "second registration returns the first");
    ensure!(store.version_for_job(job).await? == Some(first.clone()));

    let published = store.complete_job(job, "w", Some(new.clone())).await?;
    ensure!(published.as_ref().map(|v| v.id) == Some(first.id));
    let again = store.complete_job(job, "w", Some(new)).await?;
    ensure!(again.map(|v| v.id) == Some(first.id), "completing twice publishes once");
    let versions = store.list_versions("m").await?;
    ensure!(versions.len() == 2, "{} versions", versions.len());
    ensure!(versions[1].fulfilled_request_ids == vec![request.id]);
    ensure!(versions[1].seed == Some(42));
    ensure!(versions[1].metrics == json!({"forget_quality": 0.9}));
    Ok(())
}

async fn requests_coalesce_into_one_job_up_to_max_batch(db: TestDb) -> Result<()> {
    let mut options = store_options();
    options.queue.max_batch = 3;
    let store = db.store_with(options).await?;
    store.create_model(&new_model("m"), ADMIN).await?;
    let mut jobs = Vec::new();
    for i in 0..7 {
        let (r, _) = store
            .create_request(&new_request(&store, "m", &format!("k{i}"), &format!("t{i}")))
            .await?;
        jobs.push(store.jobs_for_request(r.id).await?[0].id);
    }
    // Different method overrides never share a job.
    let mut special = new_request(&store, "m", "special", "s");
    special.method_overrides = json!({"method": "npo"});
    let (special, _) = store.create_request(&special).await?;
    let special_job = store.jobs_for_request(special.id).await?[0].clone();
    ensure!(special_job.method_overrides == json!({"method": "npo"}));

    let distinct: BTreeSet<_> = jobs.iter().collect();
    ensure!(
        distinct.len() == 3,
        "7 requests in batches of 3: {} jobs",
        distinct.len()
    );
    ensure!(!distinct.contains(&special_job.id));
    for job in &distinct {
        let n = store.requests_for_job(**job).await?.len();
        ensure!(n <= 3);
    }
    Ok(())
}

async fn waiter_wakes_when_work_is_queued(db: TestDb) -> Result<()> {
    let store = db.store().await?;
    store.create_model(&new_model("m"), ADMIN).await?;
    let mut waiter = store.work_waiter().await?;
    // Nothing queued: the wait times out.
    ensure!(!waiter.wait(Duration::from_millis(100)).await);

    // On Postgres the producer is another store (another process, in
    // effect): the wake-up travels by NOTIFY. On SQLite it is this store.
    let producer = match db.kind {
        crate::common::Kind::Postgres => db.store().await?,
        crate::common::Kind::Sqlite => store.clone(),
    };
    let started = tokio::time::Instant::now();
    let enqueue = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(100)).await;
        producer
            .create_request(&new_request(&producer, "m", "k", "t"))
            .await
            .map(|_| ())
    });
    let woken = waiter.wait(Duration::from_secs(10)).await;
    enqueue.await??;
    ensure!(woken, "woken by the enqueue");
    ensure!(started.elapsed() < Duration::from_secs(5));
    ensure!(store.claim("w", LEASE).await?.is_some());
    Ok(())
}
