//! Cut-through: a big upload goes on to its boxes while it is still arriving,
//! instead of after the publisher's copy is complete.
//!
//! Before the body is read, the boxes are chosen as the sender would choose
//! them and a stream is opened to each ([`super::link::Link::stream`]; only
//! boxes that speak `dandelion/2`, which take the hash in the final frame).
//! Every piece the intake writes to its own copy goes to the streams too, so
//! the upload is hashed once and read from the network once. The push is still
//! answered `202` only once the publisher's copy is durable, and a placement is
//! still recorded only once a box confirmed size and SHA-256: the job is
//! recorded as in flight (not queued) together with its acceptance, and a task
//! awaits the verdicts and settles it as a sender would
//! ([`super::sender::settle`]). A crash in between leaves it in flight, which
//! the next start-up queues again.
//!
//! A box that falls behind by more than `STALL` (10 s) or refuses the file is
//! dropped from the cut-through (its transfer aborted) and counted as a failed
//! transfer; the senders place the missing copies from the publisher's copy.
//! A slow box slows the upload down by at most that much: memory stays at a few
//! pieces per box. The other way round, an upload that sends nothing for
//! `upload_stall_timeout` lets go of its boxes' transfers (the link decides,
//! [`super::link::Failed::upload`]) without anything held against them.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use dandelion_core::ids::NodeId;
use futures_util::future::join_all;

use super::jobs::Job;
use super::link::{Failed, Piece, Stream, StreamFile};
use super::ranking::{choose_keeping, rank};
use super::sender::{self, Next, Outcome};
use super::{Publisher, now_secs};

/// How long one box may take to accept one piece before the upload goes on
/// without it.
const STALL: Duration = Duration::from_secs(10);

/// How long an upload waits for a publish session to one of its boxes to
/// open before it goes on without that box. Sessions to the best boxes are
/// usually open already (`keep_sessions`).
const OPEN_WAIT: Duration = Duration::from_secs(2);

/// The streams one upload feeds.
#[derive(Debug, Default)]
pub struct Forwards {
    list: Vec<Forward>,
}

#[derive(Debug)]
struct Forward {
    box_id: NodeId,
    /// Where viewers will be sent, derived before anything was sent.
    url: String,
    /// Why the box was chosen.
    trace: String,
    ttl: u64,
    /// `None` once the box was dropped.
    stream: Option<Stream>,
    /// Why the box was dropped.
    failure: Option<String>,
}

impl Forwards {
    /// Chooses boxes for a new upload of `size` bytes and opens a stream to
    /// each that can take one. Empty when none can: the upload then goes the
    /// usual way, stored first and queued.
    pub async fn open(p: &Publisher, name: &str, size: u64, ttl: u64, replicas: u32) -> Forwards {
        let now = now_secs();
        let ranked = {
            let dir = p.directory.read().await;
            rank(&dir.candidates(p.audience, now), &p.weights)
        };
        let kept = p.homes().of(name, now);
        let choices = choose_keeping(
            &ranked,
            replicas as usize,
            &Default::default(),
            &kept,
            &mut |n| p.draw(n),
        );
        let opened = join_all(choices.iter().map(|choice| async move {
            let box_id = choice.chosen.id.clone();
            let url = sender::placement_url(p, name, &box_id).await?;
            // The upload waits for this: a box whose session is not open
            // within OPEN_WAIT gets its copy from the senders later.
            let link = tokio::time::timeout(OPEN_WAIT, p.link(&box_id))
                .await
                .map_err(|_| format!("no session within {}s", OPEN_WAIT.as_secs()))??;
            let stream = link
                .stream(StreamFile {
                    name: name.to_owned(),
                    size,
                    ttl,
                })
                .await?;
            Ok::<_, String>(Forward {
                box_id,
                url,
                trace: choice.to_string(),
                ttl,
                stream: Some(stream),
                failure: None,
            })
        }))
        .await;
        let mut list = Vec::new();
        for (choice, opened) in choices.iter().zip(opened) {
            match opened {
                Ok(forward) => list.push(forward),
                // Not a failure of the box: the senders place this copy later.
                Err(e) => tracing::debug!(
                    file = %name,
                    box_id = %choice.chosen.id,
                    "no cut-through to this box: {e}"
                ),
            }
        }
        if !list.is_empty() {
            tracing::debug!(file = %name, boxes = list.len(), "forwarding the upload as it arrives");
        }
        Forwards { list }
    }

    /// Whether any box was streamed to.
    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// Sends the next bytes of the upload to every box still taking it.
    pub async fn feed(&mut self, piece: &Bytes) {
        self.deliver(|| Piece::Data(piece.clone())).await;
    }

    /// Tells every box still taking the upload that it is complete, with its hash.
    pub async fn end(&mut self, sha256: &str) {
        self.deliver(|| Piece::End {
            sha256: sha256.to_owned(),
        })
        .await;
    }

    async fn deliver(&mut self, piece: impl Fn() -> Piece) {
        let sends = self.list.iter_mut().filter_map(|f| {
            let pieces = f.stream.as_ref()?.pieces.clone();
            let piece = piece();
            Some(async move {
                let sent = tokio::time::timeout(STALL, pieces.send(piece)).await;
                (f, sent)
            })
        });
        for (forward, sent) in join_all(sends).await {
            match sent {
                Ok(Ok(())) => {}
                // The link ended the stream (the box refused it, or the
                // session broke): its verdict says why.
                Ok(Err(_)) => {}
                Err(_) => {
                    // Dropping the stream aborts the transfer on the box.
                    forward.stream = None;
                    forward.failure = Some(format!(
                        "the box took more than {}s to take a piece of the upload",
                        STALL.as_secs()
                    ));
                }
            }
        }
    }

    /// Awaits the boxes' verdicts on `job` in the background and settles it as
    /// a sender would. The job must have been recorded in flight
    /// ([`super::queue::Queue::hold_in`]).
    pub fn settle_later(self, p: Arc<Publisher>, job: Job) {
        let shutdown = p.common.shutdown.token();
        let tasks = p.common.shutdown.clone();
        tasks.spawn(async move {
            let name = job.name.clone();
            let outcomes = tokio::select! {
                // Left in flight: the next start-up queues it again.
                () = shutdown.cancelled() => return,
                outcomes = self.verdicts(&p, job.size) => outcomes,
            };
            match sender::settle(&p, job, 0, outcomes).await {
                // The copies that did not make it are placed by the senders
                // from the publisher's copy, at once.
                Ok(Next::Retry) => {
                    if let Err(e) = p.queue.requeue(&name).await {
                        tracing::warn!(file = %name, "cannot queue the rest of a cut-through: {e}");
                    }
                }
                Ok(next) => sender::advance(&p, &name, next).await,
                Err(e) => {
                    tracing::warn!(file = %name, "cannot record a cut-through: {e}");
                    sender::advance(&p, &name, Next::Retry).await;
                }
            }
        });
    }

    /// Waits for what each box made of the upload and records it, as
    /// [`Forwards::settle_later`] does, but now: for an upload that may be
    /// acknowledged only once a box holds a copy.
    pub async fn settle_now(self, p: &Publisher, job: Job) -> Result<Next, String> {
        let outcomes = self.verdicts(p, job.size).await;
        sender::settle(p, job, 0, outcomes).await
    }

    /// What each box made of the upload. A transfer dropped because the
    /// upload stalled is no outcome at all: nothing is held against the box,
    /// and the senders place that copy.
    async fn verdicts(self, p: &Publisher, size: u64) -> Vec<Outcome> {
        let outcomes = join_all(self.list.into_iter().map(|f| async move {
            let result = match (f.stream, f.failure) {
                (Some(stream), None) => match stream.verdict().await {
                    Ok(stored) => sender::confirm(p, size, &f.box_id, f.url, f.ttl, stored).await,
                    Err(Failed { upload: true, .. }) => return None,
                    Err(Failed { reason, .. }) => Err(reason),
                },
                (_, failure) => Err(failure_or(failure)),
            };
            Some(Outcome {
                box_id: f.box_id,
                trace: f.trace,
                result,
            })
        }))
        .await;
        outcomes.into_iter().flatten().collect()
    }
}

fn failure_or(failure: Option<String>) -> String {
    failure.unwrap_or_else(|| "the cut-through to the box ended".to_owned())
}
