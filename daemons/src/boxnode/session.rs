//! Publisher sessions: the handshake on `/dandelion/ws` (and the original's
//! `/dandelion/<box-id>/ws/`), `PUBLISH`, then file frames until the publisher
//! leaves.
//!
//! Everything a session knows (which publisher, its transfers under way) lives in
//! the session task — the original kept it on a handler shared by all
//! connections, which mixed publishers up. Transfers go through
//! `frame::Transfers`, so memory per session is bounded by its limits whatever
//! the file sizes; bytes go straight to a temporary file.

use std::collections::{HashMap, HashSet};

use std::sync::Arc;

use crate::listener::Remote;
use axum::extract::{ConnectInfo, Path, Request, State};
use axum::response::{IntoResponse, Response};
use dandelion_core::connection::{ConnectionError, Incoming, MAX_CONSECUTIVE_ERRORS, ws_config};
use dandelion_core::console::Level;
use dandelion_core::frame::{self, Event, Frame, FrameError, FrameHeader, TransferId, Transfers};
use dandelion_core::ids::Role;
use dandelion_core::paths;
use dandelion_core::protocol::{
    ErrorReply, Header, Message, PublishReply, ServedCount, TrafficReply, TransferOutcome,
    TransferResult,
};
use futures_util::StreamExt;
use futures_util::future::BoxFuture;
use futures_util::stream::FuturesUnordered;
use serde_json::{Map, Value};
use tracing::Instrument;

use super::BoxState;
use super::rules;
use super::storage::{Pending, StoreRefusal};
use crate::handshake::{self, Peer, Refusal};
use crate::ws::ServerConnection;
use tokio::sync::OwnedSemaphorePermit;

/// `/dandelion/ws` and `/dandelion/ws/`.
pub async fn publisher_ws(
    State(state): State<Arc<BoxState>>,
    ConnectInfo(remote): ConnectInfo<Remote>,
    request: Request,
) -> Response {
    admit(state, remote, request).await
}

/// `/dandelion/<box-id>/ws` and with a trailing slash: the original's path.
pub async fn publisher_ws_with_id(
    State(state): State<Arc<BoxState>>,
    ConnectInfo(remote): ConnectInfo<Remote>,
    Path(box_id): Path<String>,
    request: Request,
) -> Response {
    if box_id != state.common.identity.id().as_str() {
        return (axum::http::StatusCode::NOT_FOUND, "this is another box\n").into_response();
    }
    admit(state, remote, request).await
}

async fn admit(state: Arc<BoxState>, remote: Remote, request: Request) -> Response {
    let (addr, channel) = (remote.addr, remote.channel());
    let common = &state.common;
    // Cloned: a borrowed request (its body is not Sync) cannot be held across an await.
    let headers = request.headers().clone();
    let admitted = async {
        let peer = handshake::verify_proof(
            &headers,
            &common.nonces,
            common.identity.id(),
            channel,
        )
        .await?
        .ok_or_else(|| Refusal::unauthorized("no_proof", "prove your publisher ID first"))?;
        handshake::require_role(&peer, Role::Publisher)?;
        if !state.trusts(&peer.public_key) {
            return Err(Refusal::forbidden(
                "untrusted_publisher",
                format!(
                    "publisher {} is not trusted by this box (its key is neither configured nor named by an entrance)",
                    peer.id
                ),
            ));
        }
        let place = state.sessions.clone().try_acquire_owned().map_err(|_| {
            Refusal::busy(
                "publisher_sessions_full",
                format!(
                    "{} publisher sessions are open, the limit (box.max_publisher_sessions); \
                     try again later",
                    state.config.max_publisher_sessions
                ),
            )
        })?;
        Ok((peer, place))
    }
    .await;
    match admitted {
        Ok((peer, place)) => {
            let state = state.clone();
            // No message over one chunk frame: a peer cannot make the box
            // buffer more than that per session.
            let largest = state.frame_limits().max_chunked_message();
            let config = ws_config()
                .max_message_size(Some(largest))
                .max_frame_size(Some(largest));
            crate::ws::upgrade_for(request, common, config, move |conn| async move {
                let _place = place;
                let span = tracing::info_span!("publisher", peer = %addr, id = %peer.id);
                run(state, peer, conn).instrument(span).await;
            })
        }
        Err(refusal) => {
            common.refusals.record(&common.metrics, addr.ip(), &refusal);
            refusal.into_response()
        }
    }
}

/// Transfers refused at their start whose later frames are dropped silently; bounded.
const MAX_REMEMBERED_REFUSALS: usize = 1024;

struct Session {
    state: Arc<BoxState>,
    publisher: String,
    transfers: Transfers,
    /// Temporary files of transfers under way, by transfer (`None`: one-shot frame).
    pending: HashMap<Option<TransferId>, Upload>,
    refused: HashSet<TransferId>,
    /// Frames refused in a row; a peer that only sends garbage is cut off.
    strikes: u32,
    /// Completed chunked transfers being made durable, each ending in its
    /// verdict. They land side by side so one transfer's fsyncs do not hold
    /// up the next one's bytes (a publisher keeps several in flight).
    landings: FuturesUnordered<BoxFuture<'static, Message>>,
}

/// Transfers of one session landing at once; beyond, the session stops
/// reading frames until one has landed.
pub const MAX_LANDINGS: usize = 8;

struct Upload {
    pending: Pending,
    path: String,
    ttl: u64,
    extra: Map<String, Value>,
}

async fn run(state: Arc<BoxState>, peer: Peer, mut conn: ServerConnection) {
    let publisher = peer.id.to_string();
    let mut session = Session {
        transfers: Transfers::new(state.frame_limits()),
        state,
        publisher,
        pending: HashMap::new(),
        refused: HashSet::new(),
        strikes: 0,
        landings: FuturesUnordered::new(),
    };
    let shutdown = session.state.common.shutdown.clone();
    let mut published = false;
    loop {
        let incoming = tokio::select! {
            () = shutdown.cancelled() => {
                conn.close_with(
                    tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode::Away,
                    "box shutting down",
                ).await;
                break;
            }
            Some(verdict) = session.landings.next(), if !session.landings.is_empty() => {
                if conn.send(&verdict).await.is_err() {
                    break;
                }
                continue;
            }
            incoming = conn.recv(), if session.landings.len() < MAX_LANDINGS => incoming,
        };
        let replies = match incoming {
            Ok(None) => break,
            Ok(Some(Incoming::Message(Message::Publish(_)))) => {
                if !published {
                    session.state.publisher_session(&session.publisher, true);
                    session
                        .state
                        .common
                        .console
                        .event(Level::Info, format!("{} connected", session.publisher));
                }
                published = true;
                vec![Message::PublishReply(session.publish_reply())]
            }
            Ok(Some(Incoming::Message(Message::Goodbye(_)))) => break,
            Ok(Some(Incoming::Message(Message::Traffic(_)))) => {
                vec![Message::TrafficReply(session.traffic_reply())]
            }
            Ok(Some(Incoming::Message(other))) => vec![session.error(
                "unexpected_command",
                &format!(
                    "a box takes PUBLISH and file frames, not {}",
                    other.command()
                ),
            )],
            Ok(Some(Incoming::Binary(_))) if !published => {
                vec![session.error("publish_first", "send PUBLISH before file frames")]
            }
            Ok(Some(Incoming::Binary(bytes))) => {
                // Until its bytes are on disk the frame counts against
                // upload_memory (the permit goes with its write, which may
                // end after this loop has moved on); when that is full this
                // session waits here and, not reading, lets TCP hold its
                // publisher back.
                let size = u32::try_from(bytes.len()).unwrap_or(u32::MAX);
                let Ok(in_flight) = session
                    .state
                    .upload_memory
                    .clone()
                    .acquire_many_owned(size)
                    .await
                else {
                    break;
                };
                let replies = session.frame(bytes, in_flight).await;
                if session.strikes >= MAX_CONSECUTIVE_ERRORS {
                    for reply in &replies {
                        let _ = conn.send(reply).await;
                    }
                    tracing::warn!(publisher = %session.publisher, "disconnecting: {} malformed frames in a row", session.strikes);
                    conn.close_with(
                        tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode::Policy,
                        "too many malformed frames",
                    )
                    .await;
                    break;
                }
                replies
            }
            Err(ConnectionError::BadMessage(e)) => {
                vec![session.error(e.reason_code(), &e.to_string())]
            }
            Err(e) => {
                tracing::debug!(publisher = %session.publisher, "publisher session ended: {e}");
                break;
            }
        };
        for reply in replies {
            if conn.send(&reply).await.is_err() {
                break;
            }
        }
    }
    // What completed lands even if its verdict can no longer be sent: the
    // publisher sends it again, and an overwrite is harmless.
    while session.landings.next().await.is_some() {}
    if published {
        session.state.publisher_session(&session.publisher, false);
    }
    // Dropping the uploads removes their temporary files.
    session.transfers.abort_all();
    session.pending.clear();
    tracing::debug!(publisher = %session.publisher, "publisher session closed");
}

impl Session {
    fn header(&self) -> Header {
        self.state.header()
    }

    fn publish_reply(&self) -> PublishReply {
        let limits = self.state.frame_limits();
        PublishReply {
            header: self.header(),
            data_url: Some(format!("{}/{}/", self.state.public_base, self.publisher)),
            max_file_size: Some(self.state.config.max_file_size.as_u64()),
            max_frame: u64::try_from(limits.max_chunk_bytes).ok(),
            quota_free: self.state.storage.quota_free(&self.publisher),
            extra: Default::default(),
        }
    }

    /// What this box served of the session's publisher's files, per stream:
    /// the publisher's offload ledger. Only the publisher the session proved
    /// is answered, and only about its own files.
    fn traffic_reply(&self) -> TrafficReply {
        let traffic = &self.state.traffic;
        TrafficReply {
            header: self.header(),
            since: traffic.since,
            streams: traffic
                .streams_of(&self.publisher)
                .into_iter()
                .map(|(stream, s)| {
                    let count = ServedCount {
                        bytes: s.bytes,
                        requests: s.requests,
                    };
                    (stream, count)
                })
                .collect(),
        }
    }

    fn error(&self, code: &str, text: &str) -> Message {
        self.state.common.metrics.refuse(code);
        Message::Error(ErrorReply {
            header: self.header(),
            error: text.to_owned(),
            code: Some(code.to_owned()),
            command: None,
            entrance_urls: None,
        })
    }

    /// `held` is the frame's share of `upload_memory`, given up when its bytes
    /// are written (or dropped).
    async fn frame(&mut self, bytes: bytes::Bytes, held: OwnedSemaphorePermit) -> Vec<Message> {
        // Decoded without the file-size limit so that a too-large start frame is
        // refused by `accept`, where its transfer id is known: its later frames are
        // then dropped quietly instead of each drawing an "unknown transfer".
        let lenient = frame::Limits {
            max_file_size: u64::MAX,
            ..self.transfers.limits().clone()
        };
        let frame = match Frame::decode(bytes, &lenient) {
            Ok(frame) => frame,
            Err(e) => {
                // Only undecodable frames count as garbage: a refused transfer
                // (quota, hash) is a legitimate answer, not misbehaviour.
                self.strikes += 1;
                return self.frame_error(e, None);
            }
        };
        let start = match &frame.header {
            FrameHeader::Start(s) => Some((s.chunked.as_ref().map(|c| c.transfer), s.path.clone())),
            FrameHeader::Continue { .. }
            | FrameHeader::Finish { .. }
            | FrameHeader::Abort { .. } => None,
        };
        match self.transfers.accept(frame) {
            Ok(event) => {
                self.strikes = 0;
                self.event(event, held).await
            }
            Err(e) => self.frame_error(e, start),
        }
    }

    fn frame_error(
        &mut self,
        e: FrameError,
        start: Option<(Option<TransferId>, String)>,
    ) -> Vec<Message> {
        if let FrameError::UnknownTransfer { transfer } = e
            && self.refused.contains(&transfer)
        {
            return Vec::new();
        }
        let (start_transfer, start_path) = match start {
            Some((t, p)) => (t, Some(p)),
            None => (None, None),
        };
        let transfer = e.transfer().or(start_transfer);
        let (path, extra) = match self.pending.remove(&transfer) {
            Some(upload) if transfer.is_some() => (upload.path, upload.extra),
            _ => (start_path.unwrap_or_default(), Map::new()),
        };
        if let Some(t) = transfer {
            self.remember_refused(t);
        }
        vec![refused_file(
            &self.state,
            &self.publisher,
            transfer,
            &path,
            e.reason_code(),
            e.to_string(),
            extra,
        )]
    }

    fn remember_refused(&mut self, transfer: TransferId) {
        if self.refused.len() >= MAX_REMEMBERED_REFUSALS {
            self.refused.clear();
        }
        self.refused.insert(transfer);
    }

    async fn event(&mut self, event: Event, held: OwnedSemaphorePermit) -> Vec<Message> {
        let key = event.transfer;
        if let Some(reason) = event.aborted {
            // Dropping the upload deletes its partial file. The publisher
            // expects no verdict.
            if let Some(upload) = self.pending.remove(&key) {
                tracing::debug!(publisher = %self.publisher, path = %upload.path, "transfer aborted by the publisher: {reason}");
            }
            return Vec::new();
        }
        if let Some(started) = event.started {
            // A new one-shot frame replaces nothing: the previous one completed at once.
            let ttl = rules::effective_ttl(started.ttl, self.state.config.max_ttl);
            match self
                .state
                .storage
                .begin(&self.publisher, &started.path, started.size)
                .await
            {
                Ok(pending) => {
                    self.pending.insert(
                        key,
                        Upload {
                            pending,
                            path: started.path,
                            ttl,
                            extra: started.extra,
                        },
                    );
                }
                Err(refusal) => {
                    if let Some(t) = key {
                        self.transfers.abort(t);
                        self.remember_refused(t);
                    }
                    return vec![refused_file(
                        &self.state,
                        &self.publisher,
                        key,
                        &started.path,
                        refusal.code(),
                        refusal.to_string(),
                        started.extra,
                    )];
                }
            }
        }
        if let Some(chunk) = event.data {
            let last = event.completed.is_some();
            let written = match self.pending.get_mut(&key) {
                Some(upload) => upload.pending.write(chunk.bytes, last, held).await,
                None => Err(StoreRefusal::Io(
                    "no open file for this transfer".to_owned(),
                )),
            };
            if let Err(refusal) = written {
                return self.fail(key, refusal);
            }
        }
        let Some(completed) = event.completed else {
            return Vec::new();
        };
        let Some(upload) = self.pending.remove(&key) else {
            return Vec::new();
        };
        let landing = land(
            self.state.clone(),
            self.publisher.clone(),
            key,
            upload,
            completed,
        );
        if key.is_some() {
            self.landings.push(Box::pin(landing));
            Vec::new()
        } else {
            // The original's one-frame transfers carry no id to tell verdicts
            // apart: they land in order.
            vec![landing.await]
        }
    }

    fn fail(&mut self, key: Option<TransferId>, refusal: StoreRefusal) -> Vec<Message> {
        if let Some(t) = key {
            self.transfers.abort(t);
            self.remember_refused(t);
        }
        let (path, extra) = self
            .pending
            .remove(&key)
            .map(|u| (u.path, u.extra))
            .unwrap_or_default();
        vec![refused_file(
            &self.state,
            &self.publisher,
            key,
            &path,
            refusal.code(),
            refusal.to_string(),
            extra,
        )]
    }
}

/// Makes a completed upload durable and says so: the transfer's verdict.
async fn land(
    state: Arc<BoxState>,
    publisher: String,
    key: Option<TransferId>,
    upload: Upload,
    completed: frame::Completed,
) -> Message {
    let Upload {
        pending,
        path,
        ttl,
        extra,
    } = upload;
    let member = pending.member.clone();
    match state.storage.land(pending, completed.size, ttl).await {
        Ok(()) => {
            tracing::debug!(%publisher, path, size = completed.size, "stored");
            let console = &state.common.console;
            console.event(
                Level::Info,
                format!("stored {path} ({} bytes, TTL {ttl}s)", completed.size),
            );
            console.touch();
            Message::Transfer(TransferResult {
                header: state.header(),
                transfer: key,
                file_path: path,
                outcome: TransferOutcome::Stored {
                    size: completed.size,
                    sha256: completed.sha256,
                    url: paths::file_url(&state.public_base, &member),
                },
                headers: extra,
            })
        }
        Err(refused) => refused_file(
            &state,
            &publisher,
            key,
            &path,
            refused.code(),
            refused.to_string(),
            extra,
        ),
    }
}

/// A transfer's refusal: counted, logged, shown on the console.
fn refused_file(
    state: &BoxState,
    publisher: &str,
    transfer: Option<TransferId>,
    path: &str,
    code: &str,
    reason: String,
    headers: Map<String, Value>,
) -> Message {
    state.common.metrics.refuse(code);
    tracing::info!(publisher, path, code, "refused a file: {reason}");
    state
        .common
        .console
        .event(Level::Warn, format!("refused {path} ({code}): {reason}"));
    Message::Transfer(TransferResult {
        header: state.header(),
        transfer,
        file_path: path.to_owned(),
        outcome: TransferOutcome::Refused {
            reason,
            code: code.to_owned(),
        },
        headers,
    })
}
