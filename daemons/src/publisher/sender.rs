//! Sending: workers take jobs off the reliable queue, choose boxes, stream the
//! file to each in parallel, and record a placement only when the box confirmed
//! size and SHA-256. A sweep re-places files whose boxes went away and forgets
//! files whose TTL ran out.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use dandelion_core::console::Level;
use dandelion_core::ids::NodeId;
use dandelion_core::paths;
use futures_util::future::join_all;

use super::jobs::{Failure, Job, JobState, Origin, Placement};
use super::link::{SendFile, Source, Stored};
use super::ranking::{choose_keeping, rank};
use super::{Publisher, now_secs};

/// How long a worker waits on an empty queue before checking for shutdown.
const TAKE_TIMEOUT: Duration = Duration::from_secs(1);
/// Pause before a job that could not be placed is tried again.
const RETRY_DELAY: Duration = Duration::from_secs(2);
/// How often the sweep runs.
const SWEEP_INTERVAL: Duration = Duration::from_secs(2);
/// Files with less TTL left than this are not worth re-placing.
const MIN_TTL_TO_REPLACE: u64 = 3;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    Done,
    /// Done, and already off the in-flight list (in the batch that recorded
    /// the placements).
    Finished,
    Retry,
}

/// One sender worker; runs until shutdown.
pub async fn run(p: Arc<Publisher>, worker: usize) {
    // Until the first search round, no box is known and every job would wait.
    if p.directory.read().await.is_empty() {
        tokio::select! {
            () = p.common.shutdown.cancelled() => return,
            () = p.searched.notified() => {}
            () = tokio::time::sleep(p.config.search_interval) => {}
        }
    }
    loop {
        if p.common.shutdown.is_triggered() {
            return;
        }
        let name = match p.queue.take(TAKE_TIMEOUT).await {
            Ok(Some(name)) => name,
            Ok(None) => continue,
            Err(e) => {
                tracing::warn!(worker, "cannot read the sending queue: {e}");
                pause(&p, RETRY_DELAY).await;
                continue;
            }
        };
        let next = match place(&p, &name).await {
            Ok(next) => next,
            Err(e) => {
                tracing::warn!(worker, file = %name, "cannot place: {e}");
                Next::Retry
            }
        };
        advance(&p, &name, next).await;
    }
}

/// Moves a job that was in flight on as [`place`] or [`settle`] decided.
pub async fn advance(p: &Publisher, name: &str, next: Next) {
    let result = match next {
        Next::Done => p.queue.finish(name).await,
        Next::Finished => Ok(()),
        Next::Retry => {
            pause(p, RETRY_DELAY).await;
            p.queue.requeue(name).await
        }
    };
    if let Err(e) = result {
        // The job stays in flight and comes back at the next start-up.
        tracing::warn!(file = %name, "cannot update the sending queue: {e}");
    }
}

async fn pause(p: &Publisher, d: Duration) {
    tokio::select! {
        () = p.common.shutdown.cancelled() => {}
        () = tokio::time::sleep(d) => {}
    }
}

/// Places what is missing of one job.
pub async fn place(p: &Publisher, name: &str) -> Result<Next, String> {
    let Some(known) = p
        .records
        .known_after_write(name)
        .await
        .map_err(|e| e.to_string())?
    else {
        return Ok(Next::Done);
    };
    let mut job = known.job.clone();
    if job.state != JobState::Queued {
        return Ok(Next::Done);
    }
    let now = now_secs();
    if job.ttl_left(now) == 0 {
        job.state = JobState::Failed;
        job.failures.push(Failure {
            box_id: None,
            reason: "the TTL ran out before enough boxes stored the file".into(),
            at: now,
        });
        p.records.put_job(&job).await.map_err(|e| e.to_string())?;
        return Ok(Next::Done);
    }
    let placements = &known.placements;
    let (live, exclude) = {
        let dir = p.directory.read().await;
        let live = placements.iter().filter(|pl| holds(&dir, pl, now)).count();
        let exclude: HashSet<NodeId> = placements
            .iter()
            .filter_map(|pl| pl.box_id.parse().ok())
            .collect();
        (live, exclude)
    };
    let missing = (job.replicas as usize).saturating_sub(live);
    if missing == 0 {
        job.state = JobState::Placed;
        p.records.put_job(&job).await.map_err(|e| e.to_string())?;
        return Ok(Next::Done);
    }
    if job.origin == Origin::File
        && p.records.shared()
        && !tokio::fs::try_exists(p.origin_path(name))
            .await
            .unwrap_or(false)
    {
        let mine = p.records.instance();
        if let Some(holder) = job.origin_at.as_deref().filter(|at| Some(*at) != mine)
            && p.queue
                .holder_alive(holder, now)
                .await
                .map_err(|e| e.to_string())?
        {
            // Another front end took this upload and holds its bytes on its own
            // disk; the sending queue is shared, so its senders take the job in
            // turn. Trying here would only fail boxes that did nothing wrong.
            tracing::debug!(file = %name, "the origin copy is on another front end's disk");
            return Ok(Next::Retry);
        }
        // The front end that held it is gone (or was this one, and the file
        // with it): the copies still missing are made from a box's.
        let urls: Vec<String> = {
            let dir = p.directory.read().await;
            placements
                .iter()
                .filter(|pl| holds(&dir, pl, now))
                .map(|pl| pl.url.clone())
                .collect()
        };
        if let Err(e) = super::refetch::from_boxes(p, &job, &urls).await {
            tracing::warn!(file = %name, "the front end that took it is gone: {e}");
            note_failure(
                &mut job,
                None,
                &format!("the front end that took it is gone, and {e}"),
                now,
            );
            p.records.put_job(&job).await.map_err(|e| e.to_string())?;
            return Ok(Next::Retry);
        }
        tracing::info!(
            file = %name,
            from = job.origin_at.as_deref().unwrap_or("?"),
            "fetched back from a box: the front end that took it is gone"
        );
        p.common.console.event(
            Level::Warn,
            format!("{name}: its front end is gone; fetched it back from a box to copy it on"),
        );
        job.origin_at = mine.map(str::to_owned);
    }
    let ranked = {
        let dir = p.directory.read().await;
        rank(&dir.candidates(p.audience, now), &p.weights)
    };
    let kept = p.homes().of(name, now);
    let choices = choose_keeping(&ranked, missing, &exclude, &kept, &mut |n| p.draw(n));
    if choices.is_empty() {
        note_failure(&mut job, None, "no eligible box is known yet", now);
        p.records.put_job(&job).await.map_err(|e| e.to_string())?;
        return Ok(Next::Retry);
    }
    let source = source(p, &job).await?;
    let results = join_all(
        choices
            .iter()
            .map(|choice| send_to(p, &job, &source, choice.chosen.id.clone())),
    )
    .await;
    let outcomes = choices
        .iter()
        .zip(results)
        .map(|(choice, result)| Outcome {
            box_id: choice.chosen.id.clone(),
            trace: choice.to_string(),
            result,
        })
        .collect();
    settle(p, job, live, outcomes).await
}

/// How sending a job to one box ended.
#[derive(Debug)]
pub struct Outcome {
    pub box_id: NodeId,
    /// Why this box was chosen, kept with the placement.
    pub trace: String,
    pub result: Result<Placement, String>,
}

/// Records what sending `job` to some boxes achieved, with `live` copies
/// already serving: the placements, the failures, and the state they lead to,
/// in one write with the job's removal from the in-flight list when it is
/// finished. If the name was pushed again meanwhile, nothing is recorded and
/// this job is done: the newer upload is placed on its own.
pub async fn settle(
    p: &Publisher,
    mut job: Job,
    live: usize,
    outcomes: Vec<Outcome>,
) -> Result<Next, String> {
    let name = job.name.clone();
    let name = name.as_str();
    let size = job.size;
    job.attempts = job.attempts.saturating_add(1);
    let mut placed = Vec::new();
    for Outcome {
        box_id,
        trace,
        result,
    } in outcomes
    {
        match result {
            Ok(mut placement) => {
                placement.trace = trace;
                placed.push(placement);
            }
            Err(reason) => {
                p.metrics.transfer_failures.inc();
                tracing::warn!(file = %name, box_id = %box_id, "transfer failed: {reason}");
                p.common.console.event(
                    Level::Warn,
                    format!("sending {name} to {box_id} failed: {reason}"),
                );
                p.directory
                    .write()
                    .await
                    .record_failure(&box_id, now_secs());
                note_failure(&mut job, Some(&box_id), &reason, now_secs());
            }
        }
    }
    let stored = placed.len();
    if live == 0 {
        // A new file: where it went is where its stream lives now.
        let boxes = placed
            .iter()
            .filter_map(|pl| pl.box_id.parse().ok())
            .collect();
        p.homes().placed(name, boxes);
    }
    let box_failures = job.failures.iter().filter(|f| f.box_id.is_some()).count();
    let next = if live + stored >= job.replicas as usize {
        job.state = JobState::Placed;
        Next::Done
    } else if box_failures >= p.config.max_attempts as usize {
        job.state = JobState::Failed;
        tracing::warn!(file = %name, failures = box_failures, "giving up on this file");
        p.common.console.event(
            Level::Error,
            format!("gave up on {name} after {box_failures} failures"),
        );
        Next::Done
    } else {
        Next::Retry
    };
    // The new placements and the state they lead to in one write: a viewer can be
    // sent to a copy only once the job says so too.
    let log: Vec<(String, String)> = placed
        .iter()
        .map(|pl| (pl.box_id.clone(), pl.url.clone()))
        .collect();
    let finished = matches!(next, Next::Done);
    let saved = p
        .records
        .save_if_current(
            &job,
            |all| {
                for placement in &placed {
                    all.retain(|pl| pl.box_id != placement.box_id);
                    all.push(placement.clone());
                }
            },
            |batch| {
                if finished {
                    p.queue.finish_in(batch, name);
                }
            },
        )
        .await
        .map_err(|e| e.to_string())?;
    if saved.is_none() {
        tracing::info!(file = %name, "pushed again while being placed; this upload's copies are not recorded");
        return Ok(Next::Done);
    }
    let placed_ms = crate::publisher::now_ms();
    for (box_id, url) in log {
        p.metrics.placements.inc();
        if let Some(at) = job.accepted_ms {
            p.metrics
                .push_to_placed
                .0
                .observe(placed_ms.saturating_sub(at) as f64 / 1000.0);
        }
        p.uploaded(name, size);
        tracing::info!(file = %name, box_id = %box_id, url = %url, "placed");
        p.common
            .console
            .event(Level::Info, format!("placed {name} on {box_id}"));
    }
    p.common.console.touch();
    Ok(if finished { Next::Finished } else { next })
}

/// Where the publisher's copy of `job` is read from: read once for all its
/// boxes when the store holds it.
async fn source(p: &Publisher, job: &Job) -> Result<Source, String> {
    Ok(match job.origin {
        Origin::File => Source::File(p.origin_path(&job.name)),
        Origin::Store => Source::Memory(
            p.records
                .origin(&job.name)
                .await
                .map_err(|e| format!("cannot read the publisher's copy from the store: {e}"))?
                .ok_or("the publisher's copy is gone from the store")?,
        ),
    })
}

/// Streams the job's bytes to one box; the placement on success.
async fn send_to(
    p: &Publisher,
    job: &Job,
    source: &Source,
    box_id: NodeId,
) -> Result<Placement, String> {
    let url = placement_url(p, &job.name, &box_id).await?;
    let link = p.link(&box_id).await?;
    let ttl = job.ttl_left(now_secs()).max(1);
    let stored = link
        .send(SendFile {
            name: job.name.clone(),
            source: source.clone(),
            size: job.size,
            sha256: job.sha256.clone(),
            ttl,
        })
        .await?;
    confirm(p, job.size, &box_id, url, ttl, stored).await
}

/// Where viewers are sent for `name` on `box_id`: only under the box's data URL
/// as the entrance verified it.
pub async fn placement_url(p: &Publisher, name: &str, box_id: &NodeId) -> Result<String, String> {
    let data_url = p
        .directory
        .read()
        .await
        .get(box_id)
        .and_then(|b| b.exchange.data_url.clone())
        .ok_or_else(|| format!("box {box_id} advertises no DATA_URL"))?;
    Ok(paths::file_url(
        &data_url,
        &format!("{}/{name}", p.common.identity.id()),
    ))
}

/// The placement a box's confirmation makes, if it names the URL the publisher
/// derived ([`placement_url`]): a box confirming any other URL has not placed
/// the file. Counts the transfer for the box's ranking.
pub async fn confirm(
    p: &Publisher,
    size: u64,
    box_id: &NodeId,
    url: String,
    ttl: u64,
    stored: Stored,
) -> Result<Placement, String> {
    if stored.url != url {
        p.common.metrics.refuse("placement_url");
        return Err(format!(
            "the box confirmed the file at {}, not at {url} where the publisher sends viewers; \
             not recorded",
            stored
                .url
                .chars()
                .take(200)
                .collect::<String>()
                .escape_debug()
        ));
    }
    p.directory
        .write()
        .await
        .record_success(box_id, size, stored.seconds);
    let now = now_secs();
    Ok(Placement {
        box_id: box_id.to_string(),
        url,
        stored_at: now,
        expires_at: now + ttl,
        trace: String::new(),
        headers: stored.headers.into_iter().collect(),
    })
}

fn note_failure(job: &mut Job, box_id: Option<&NodeId>, reason: &str, at: u64) {
    // Keep the record bounded however long a job keeps failing.
    const KEEP: usize = 20;
    if job.failures.len() >= KEEP {
        job.failures.remove(0);
    }
    job.failures.push(Failure {
        box_id: box_id.map(|b| b.to_string()),
        reason: reason.to_owned(),
        at,
    });
}

/// Whether a placement still serves viewers.
fn holds(dir: &super::directory::Directory, pl: &Placement, now: u64) -> bool {
    pl.expires_at > now
        && pl
            .box_id
            .parse::<NodeId>()
            .is_ok_and(|id| dir.is_live(&id, now))
}

/// Re-places files whose boxes went away (newest first: live viewers ask for
/// the newest segments next) and forgets files whose TTL ran out, bytes included.
pub async fn sweep(p: Arc<Publisher>) {
    loop {
        tokio::select! {
            () = p.common.shutdown.cancelled() => return,
            () = tokio::time::sleep(SWEEP_INTERVAL) => {}
        }
        if let Err(e) = sweep_once(&p).await {
            tracing::warn!("re-placement sweep failed: {e}");
        }
    }
}

async fn sweep_once(p: &Publisher) -> Result<(), String> {
    let now = now_secs();
    let mut to_replace: Vec<(u64, String)> = Vec::new();
    let mut by_state = [0i64; 3];
    for known in p.records.all() {
        let job = &known.job;
        by_state[match job.state {
            JobState::Queued => 0,
            JobState::Placed => 1,
            JobState::Failed => 2,
        }] += 1;
        if job.expires_at() <= now {
            p.records
                .forget(&job.name)
                .await
                .map_err(|e| e.to_string())?;
            // Also when the job's bytes were in the store: a file from an
            // earlier push of the name may still be there.
            let _ = tokio::fs::remove_file(p.origin_path(&job.name)).await;
            continue;
        }
        if job.state != JobState::Placed || job.ttl_left(now) < MIN_TTL_TO_REPLACE {
            continue;
        }
        let lost = {
            let dir = p.directory.read().await;
            known.placements.iter().any(|pl| !holds(&dir, pl, now))
        };
        if lost {
            to_replace.push((job.ttl_left(now), job.name.clone()));
        }
    }
    for (state, n) in [JobState::Queued, JobState::Placed, JobState::Failed]
        .into_iter()
        .zip(by_state)
    {
        p.metrics
            .jobs
            .get_or_create(&crate::publisher::StateLabel {
                state: state.as_str(),
            })
            .set(n);
    }
    to_replace.sort_by_key(|(ttl_left, _)| std::cmp::Reverse(*ttl_left));
    for (_, name) in to_replace {
        let Some(mut job) = p.records.job(&name) else {
            continue;
        };
        // Pushed again since the scan: the new job is queued already.
        if job.state != JobState::Placed {
            continue;
        }
        job.state = JobState::Queued;
        // Decided before the write, not under the directory's lock across it:
        // a store slow to answer would hold up every redirect and /healthz
        // behind the next writer of the directory.
        let holding: HashSet<String> = {
            let dir = p.directory.read().await;
            p.records
                .known(&name)
                .map(|k| {
                    k.placements
                        .iter()
                        .filter(|pl| holds(&dir, pl, now))
                        .map(|pl| pl.box_id.clone())
                        .collect()
                })
                .unwrap_or_default()
        };
        // Trimmed and queued in one write, so no reader sees the job `placed`
        // without the copies it was placed on.
        let kept = p
            .records
            .save(&job, |all| all.retain(|pl| holding.contains(&pl.box_id)))
            .await
            .map_err(|e| e.to_string())?;
        tracing::info!(file = %name, copies_left = kept.len(), "a box holding this file went away; re-placing it");
        p.common.console.event(
            Level::Warn,
            format!("a box holding {name} went away; placing it again"),
        );
        p.common.console.touch();
        // A crash before this push leaves a queued job outside the queue, which
        // the next start-up queues (`queue_orphans`).
        p.queue.push(&name).await.map_err(|e| e.to_string())?;
    }
    Ok(())
}
