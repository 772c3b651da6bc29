//! Where every daemon accepts connections: TCP, with TLS ended here when the role
//! has a certificate (`tls_cert` and `tls_key` in its section).
//!
//! Every connection is first admitted ([`crate::admission`]): a cap in total and
//! per address, decided before a TLS handshake or a byte of HTTP, each refusal
//! counted and logged once per address and reason. An admitted connection is
//! served as a [`ServedIo`], which gives its place back when it ends and closes
//! it after `limits.idle_timeout` without a byte either way.
//!
//! TLS handshakes run in tasks of their own — at most [`MAX_HANDSHAKES`] at
//! once, each within [`HANDSHAKE_TIMEOUT`] — so a client that connects and says
//! nothing, or a flood of them, holds neither the accept loop nor unbounded
//! memory. A failed handshake is counted
//! (`dandelion_refused_total{reason="tls_handshake"}`) and logged once per
//! address and reason. The certificate is read again when its files change or
//! the daemon gets SIGHUP.
//!
//! A box without a certificate of its own serves plain HTTP and TLS with its
//! identity certificate on one port ([`Listener::plain_and_tls`]): viewers keep
//! `http://`, publishers dial `wss://` and accept the certificate because its key
//! is the box's ID (`dandelion_core::idcert`). Until its first byte arrives a
//! connection holds a handshake slot, so idle ones are bounded the same way.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use dandelion_core::auth::Channel;
use dandelion_core::config::Limits;
use dandelion_core::tls::ServerTls;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_util::either::Either;

use crate::admission::{Admission, Slot};
use crate::handshake::Refusal;
use crate::ratelimit::Kind;
use crate::served::ServedIo;
use crate::server::Common;

/// How long a client has to finish its TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// TLS handshakes in progress at most; connections beyond are closed at once.
pub const MAX_HANDSHAKES: usize = 1024;

/// How often the certificate files are looked at for a renewal.
pub const RELOAD_POLL: Duration = Duration::from_secs(10);

/// A connection's bytes: plain TCP or TLS over TCP.
pub type Stream = Either<TcpStream, TlsStream<TcpStream>>;

/// A connection as it is served: admitted, with its idle deadline.
pub type Io = ServedIo<Stream>;

/// Who is at the other end of a connection (`ConnectInfo<Remote>` in handlers).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Remote {
    pub addr: SocketAddr,
    /// Whether TLS ended in this daemon for the connection.
    pub tls: bool,
    /// The connection's RFC 9266 `tls-exporter` value when TLS ended here: what
    /// a session proof presented on it must sign.
    pub binding: Option<[u8; 32]>,
}

impl Remote {
    /// What a session proof presented on this connection is bound to.
    pub fn channel(&self) -> Channel {
        self.binding.map_or(Channel::Unbound, Channel::TlsExporter)
    }
}

/// A daemon's listener.
#[derive(Debug)]
pub struct Listener {
    local: SocketAddr,
    inner: Inner,
    limits: Limits,
}

#[derive(Debug)]
enum Inner {
    Plain {
        tcp: TcpListener,
        admission: Arc<Admission>,
        /// Where refusals are counted; none for the tests' stand-in servers.
        common: Option<Arc<Common>>,
    },
    /// Handshaken connections, from the accept loop's tasks.
    Tls {
        rx: mpsc::Receiver<(Io, Remote)>,
        accept: Accept,
    },
}

/// What a TLS listener takes besides TLS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Accept {
    TlsOnly,
    /// Plain HTTP too: a connection whose first byte does not open a TLS
    /// record (22, handshake) is served as it is.
    PlainToo,
}

/// The first byte of every TLS connection: a handshake record.
const TLS_HANDSHAKE_RECORD: u8 = 0x16;

impl Listener {
    /// Plain HTTP with no caps: the tests' stand-in servers.
    pub fn plain(tcp: TcpListener) -> io::Result<Listener> {
        Ok(Listener {
            local: tcp.local_addr()?,
            inner: Inner::Plain {
                tcp,
                admission: Admission::unlimited(),
                common: None,
            },
            limits: Limits::default(),
        })
    }

    /// Plain HTTP under the role's limits.
    pub fn plain_for(tcp: TcpListener, common: Arc<Common>) -> io::Result<Listener> {
        Ok(Listener {
            local: tcp.local_addr()?,
            inner: Inner::Plain {
                tcp,
                admission: common.admission.clone(),
                common: Some(common.clone()),
            },
            limits: common.limits.clone(),
        })
    }

    /// Ends TLS with `tls`'s certificate; refusals are counted in `common`'s
    /// metrics. Must be called inside the runtime: it starts the accept loop
    /// and the certificate reloader, which end with the listener.
    pub fn tls(tcp: TcpListener, tls: Arc<ServerTls>, common: Arc<Common>) -> io::Result<Listener> {
        Listener::accepting(tcp, tls, common, Accept::TlsOnly)
    }

    /// Plain HTTP and TLS on one port, told apart by the first byte a client
    /// sends: a household box serves viewers `http://` and its publishers
    /// `wss://` with its identity certificate, behind one forwarded port.
    pub fn plain_and_tls(
        tcp: TcpListener,
        tls: Arc<ServerTls>,
        common: Arc<Common>,
    ) -> io::Result<Listener> {
        Listener::accepting(tcp, tls, common, Accept::PlainToo)
    }

    fn accepting(
        tcp: TcpListener,
        tls: Arc<ServerTls>,
        common: Arc<Common>,
        accept: Accept,
    ) -> io::Result<Listener> {
        let local = tcp.local_addr()?;
        let (tx, rx) = mpsc::channel(64);
        if tls.files().is_some() {
            tokio::spawn(reload(tls.clone(), tx.clone()));
        }
        let acceptor = TlsAcceptor::from(tls.config());
        let limits = common.limits.clone();
        tokio::spawn(accept_tls(tcp, acceptor, accept, tx, common));
        Ok(Listener {
            local,
            inner: Inner::Tls { rx, accept },
            limits,
        })
    }

    /// `tcp` with TLS when `tls` is given.
    pub fn new(
        tcp: TcpListener,
        tls: Option<Arc<ServerTls>>,
        common: &Arc<Common>,
    ) -> io::Result<Listener> {
        match tls {
            Some(tls) => Listener::tls(tcp, tls, common.clone()),
            None => Listener::plain_for(tcp, common.clone()),
        }
    }

    /// The limits connections are served under.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// `https` when this listener takes TLS only, else `http`: for the URLs a
    /// daemon gives out.
    pub fn scheme(&self) -> &'static str {
        match self.inner {
            Inner::Tls {
                accept: Accept::TlsOnly,
                ..
            } => "https",
            Inner::Plain { .. } | Inner::Tls { .. } => "http",
        }
    }

    /// The next admitted connection.
    pub async fn accept(&mut self) -> (Io, Remote) {
        let idle = self.limits.idle_timeout;
        match &mut self.inner {
            Inner::Plain {
                tcp,
                admission,
                common,
            } => loop {
                match TcpListener::accept(tcp).await {
                    Ok((stream, addr)) => {
                        let Some(slot) = admit(admission, common.as_deref(), addr) else {
                            continue;
                        };
                        let _ = stream.set_nodelay(true);
                        let remote = Remote {
                            addr,
                            tls: false,
                            binding: None,
                        };
                        return (ServedIo::new(Either::Left(stream), slot, idle), remote);
                    }
                    Err(e) => accept_error(e).await,
                }
            },
            // The accept loop only ends when this receiver is dropped, so the
            // channel never closes under it; if it did, nothing more would come.
            Inner::Tls { rx, .. } => match rx.recv().await {
                Some(accepted) => accepted,
                None => std::future::pending().await,
            },
        }
    }
}

/// A place for a connection from `addr`, or `None` after counting and logging
/// why there is none (the stream is then dropped, which closes it).
fn admit(admission: &Arc<Admission>, common: Option<&Common>, addr: SocketAddr) -> Option<Slot> {
    match admission.admit(addr.ip()) {
        Ok(slot) => Some(slot),
        Err(full) => {
            if let Some(common) = common {
                refuse(common, addr, full.code(), &full.reason());
            }
            None
        }
    }
}

/// Errors of `accept` that concern one connection are skipped; others (out of
/// file descriptors) are waited out, as axum's own listener does.
async fn accept_error(e: io::Error) {
    use io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    if matches!(
        e.kind(),
        ConnectionRefused | ConnectionAborted | ConnectionReset
    ) {
        return;
    }
    tracing::error!("accepting a connection failed: {e}; retrying in 1s");
    tokio::time::sleep(Duration::from_secs(1)).await;
}

async fn accept_tls(
    tcp: TcpListener,
    acceptor: TlsAcceptor,
    accept: Accept,
    tx: mpsc::Sender<(Io, Remote)>,
    common: Arc<Common>,
) {
    let permits = Arc::new(Semaphore::new(MAX_HANDSHAKES));
    let idle = common.limits.idle_timeout;
    loop {
        let accepted = tokio::select! {
            () = tx.closed() => return,
            accepted = TcpListener::accept(&tcp) => accepted,
        };
        let (stream, addr) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                accept_error(e).await;
                continue;
            }
        };
        let Some(slot) = admit(&common.admission, Some(&common), addr) else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            refuse(
                &common,
                addr,
                "tls_busy",
                "too many TLS handshakes in progress",
            );
            continue;
        };
        let (acceptor, tx, common) = (acceptor.clone(), tx.clone(), common.clone());
        tokio::spawn(async move {
            let _permit = permit;
            if accept == Accept::PlainToo {
                let mut first = [0u8; 1];
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, stream.peek(&mut first)).await {
                    Ok(Ok(1..)) if first[0] == TLS_HANDSHAKE_RECORD => {}
                    Ok(Ok(1..)) => {
                        let remote = Remote {
                            addr,
                            tls: false,
                            binding: None,
                        };
                        let io = ServedIo::new(Either::Left(stream), slot, idle);
                        let _ = tx.send((io, remote)).await;
                        return;
                    }
                    // Closed or failed before a byte: nothing to serve.
                    Ok(_) => return,
                    Err(_) => {
                        refuse(
                            &common,
                            addr,
                            "idle_connection",
                            &format!("sent nothing within {}s", HANDSHAKE_TIMEOUT.as_secs()),
                        );
                        return;
                    }
                }
            }
            if !common.rates.allow(Kind::TlsHandshake, addr.ip()) {
                refuse(
                    &common,
                    addr,
                    "tls_rate",
                    &format!(
                        "too many TLS handshakes from this address \
                         (limits.tls_handshakes_per_minute = {})",
                        common.limits.tls_handshakes_per_minute
                    ),
                );
                return;
            }
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                Ok(Ok(tls)) => {
                    // Without the exporter no proof could be bound to the
                    // connection: not one to serve.
                    match dandelion_core::tls::exporter(std::ops::Deref::deref(tls.get_ref().1)) {
                        Ok(binding) => {
                            let remote = Remote {
                                addr,
                                tls: true,
                                binding: Some(binding),
                            };
                            let io = ServedIo::new(Either::Right(tls), slot, idle);
                            let _ = tx.send((io, remote)).await;
                        }
                        Err(e) => {
                            refuse(&common, addr, "tls_exporter", &format!("TLS exporter: {e}"))
                        }
                    }
                }
                Ok(Err(e)) => refuse(&common, addr, "tls_handshake", &format!("TLS: {e}")),
                Err(_) => refuse(
                    &common,
                    addr,
                    "tls_timeout",
                    &format!("no TLS handshake within {}s", HANDSHAKE_TIMEOUT.as_secs()),
                ),
            }
        });
    }
}

/// Counts and logs a connection closed at accept or in its TLS handshake. No
/// HTTP answer goes out; the status in the log says which kind it was: a
/// handshake that failed (401) or a limit that was full (503).
fn refuse(common: &Common, addr: SocketAddr, code: &'static str, reason: &str) {
    let refusal = match code {
        "tls_handshake" | "tls_exporter" => Refusal::unauthorized(code, reason),
        _ => Refusal::busy(code, reason),
    };
    common.refusals.record(&common.metrics, addr.ip(), &refusal);
}

/// Reads the certificate again on SIGHUP and when its files change, until the
/// listener is gone.
async fn reload(tls: Arc<ServerTls>, tx: mpsc::Sender<(Io, Remote)>) {
    let mut hangups = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
    let mut poll = tokio::time::interval(RELOAD_POLL);
    poll.tick().await;
    loop {
        let outcome = tokio::select! {
            () = tx.closed() => return,
            Some(()) = async {
                match hangups.as_mut() {
                    Some(h) => h.recv().await,
                    None => std::future::pending().await,
                }
            } => tls.reload().map(|()| true),
            _ = poll.tick() => tls.reload_if_changed(),
        };
        match outcome {
            Ok(true) => tracing::info!(
                cert = %tls.files().map(|(c, _)| c.display().to_string()).unwrap_or_default(),
                "TLS certificate loaded again"
            ),
            Ok(false) => {}
            Err(e) => tracing::error!("the TLS certificate in use stays: {e}"),
        }
    }
}
