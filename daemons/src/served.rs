//! The byte stream of one served connection: it holds the connection's
//! [`Slot`] (so the place is given back only when the stream, or the WebSocket
//! it was upgraded to, is gone) and closes itself when no byte has moved either
//! way for the idle timeout.
//!
//! The idle check lives in the stream rather than in the task serving it so it
//! goes with the stream through a WebSocket upgrade. Progress in either
//! direction counts: a viewer downloading a large file sends nothing for
//! minutes, but the writes move; a viewer that stops reading stalls the writes,
//! and after the idle timeout the connection ends with `TimedOut`.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};
use tokio_util::either::Either;

use crate::admission::Slot;

#[derive(Debug)]
pub struct ServedIo<T> {
    inner: T,
    _slot: Slot,
    idle: Duration,
    last: Instant,
    timer: Pin<Box<Sleep>>,
}

impl<T> ServedIo<T> {
    pub fn new(inner: T, slot: Slot, idle: Duration) -> ServedIo<T> {
        let last = Instant::now();
        ServedIo {
            inner,
            _slot: slot,
            idle,
            last,
            timer: Box::pin(tokio::time::sleep_until(last + idle)),
        }
    }

    pub fn get_ref(&self) -> &T {
        &self.inner
    }

    fn moved(&mut self) {
        self.last = Instant::now();
    }

    /// Pending while the connection has moved a byte within the idle timeout;
    /// the `TimedOut` error once it has not. Registers the waker with the timer,
    /// so it is called only after the inner stream said `Pending`.
    fn poll_idle(&mut self, cx: &mut Context<'_>) -> Poll<io::Error> {
        loop {
            let deadline = self.last + self.idle;
            if self.timer.deadline() != deadline {
                self.timer.as_mut().reset(deadline);
            }
            ready!(self.timer.as_mut().poll(cx));
            if self.last.elapsed() >= self.idle {
                return Poll::Ready(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                        "no byte either way for {}s (limits.idle_timeout)",
                        self.idle.as_secs()
                    ),
                ));
            }
        }
    }
}

/// Writes that bypass `AsyncWrite`, for plain TCP connections only: the box's
/// zero-copy file answers ([`crate::boxnode::sendfile`]). Each counts as
/// progress for the idle timeout like any other write.
impl<T> ServedIo<Either<TcpStream, T>> {
    /// Whether the connection is plain TCP, which these writes need.
    pub fn is_plain_tcp(&self) -> bool {
        matches!(self.inner, Either::Left(_))
    }

    /// Sends up to `count` bytes of `file` from `*offset` with sendfile(2): the
    /// kernel moves them from the page cache to the socket without a copy
    /// through this process. Advances `*offset`; 0 means the file ended.
    pub async fn send_file(
        &mut self,
        file: &std::fs::File,
        offset: &mut u64,
        count: usize,
    ) -> io::Result<usize> {
        self.write_with(|tcp| Ok(rustix::fs::sendfile(tcp, file, Some(offset), count)?))
            .await
    }

    /// Sends some of `bytes` with `MSG_MORE`: the kernel holds a short
    /// response head back until the body that follows fills the packet.
    pub async fn send_more(&mut self, bytes: &[u8]) -> io::Result<usize> {
        self.write_with(|tcp| Ok(rustix::net::send(tcp, bytes, rustix::net::SendFlags::MORE)?))
            .await
    }

    /// Runs `write` when the socket is writable, until it does not say
    /// `WouldBlock`, within the idle timeout.
    async fn write_with(
        &mut self,
        mut write: impl FnMut(&TcpStream) -> io::Result<usize>,
    ) -> io::Result<usize> {
        std::future::poll_fn(|cx| {
            loop {
                let Either::Left(tcp) = &self.inner else {
                    return Poll::Ready(Err(io::Error::from(io::ErrorKind::Unsupported)));
                };
                match tcp.poll_write_ready(cx) {
                    Poll::Ready(Ok(())) => {}
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                    Poll::Pending => return self.poll_idle(cx).map(Err),
                }
                match tcp.try_io(Interest::WRITABLE, || write(tcp)) {
                    Ok(n) => {
                        if n > 0 {
                            self.moved();
                        }
                        return Poll::Ready(Ok(n));
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) => return Poll::Ready(Err(e)),
                }
            }
        })
        .await
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for ServedIo<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(result) => {
                if buf.filled().len() > before {
                    this.moved();
                }
                Poll::Ready(result)
            }
            Poll::Pending => this.poll_idle(cx).map(Err),
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for ServedIo<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_write(cx, buf) {
            Poll::Ready(result) => {
                if matches!(result, Ok(n) if n > 0) {
                    this.moved();
                }
                Poll::Ready(result)
            }
            Poll::Pending => this.poll_idle(cx).map(Err),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_write_vectored(cx, bufs) {
            Poll::Ready(result) => {
                if matches!(result, Ok(n) if n > 0) {
                    this.moved();
                }
                Poll::Ready(result)
            }
            Poll::Pending => this.poll_idle(cx).map(Err),
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_flush(cx) {
            Poll::Ready(result) => Poll::Ready(result),
            Poll::Pending => this.poll_idle(cx).map(Err),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_shutdown(cx) {
            Poll::Ready(result) => Poll::Ready(result),
            Poll::Pending => this.poll_idle(cx).map(Err),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admission::Admission;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn slot() -> Slot {
        Admission::unlimited()
            .admit("192.0.2.1".parse().unwrap())
            .unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_peer_times_out_and_gives_its_place_back() {
        let admission = Admission::new(1, 1, &[]);
        let (ours, _theirs) = tokio::io::duplex(64);
        let slot = admission.admit("192.0.2.1".parse().unwrap()).unwrap();
        let mut io = ServedIo::new(ours, slot, Duration::from_secs(60));
        let mut buf = [0u8; 8];
        let err = io.read(&mut buf).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert_eq!(admission.open(), 1);
        drop(io);
        assert_eq!(admission.open(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn bytes_either_way_keep_it_open() {
        let (ours, mut theirs) = tokio::io::duplex(64);
        let mut io = ServedIo::new(ours, slot(), Duration::from_secs(60));
        for _ in 0..5 {
            tokio::time::advance(Duration::from_secs(40)).await;
            io.write_all(b"x").await.unwrap();
            let mut one = [0u8; 1];
            theirs.read_exact(&mut one).await.unwrap();
        }
        // 200 s in, but never 60 s without a byte: a read still waits.
        let started = Instant::now();
        theirs.write_all(b"y").await.unwrap();
        let mut one = [0u8; 1];
        io.read_exact(&mut one).await.unwrap();
        assert_eq!(started.elapsed(), Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn a_reader_that_stops_reading_stalls_the_writes_and_times_out() {
        let (ours, _theirs) = tokio::io::duplex(16);
        let mut io = ServedIo::new(ours, slot(), Duration::from_secs(60));
        let err = io.write_all(&[0u8; 1024]).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
    }
}
