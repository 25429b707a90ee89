//! Closing connections that stay idle: a keep-alive connection on which nothing is read or
//! written for the idle timeout is closed, so that idle or stalled clients cannot hold sockets
//! (and file descriptors) forever.
//!
//! poem's own `Server::idle_timeout` does this with a watchdog task per connection that every
//! read and write wakes, and that arms a new timer each time (its timer-wheel and `Notify` frames
//! were about 1.5 % of the server's profile; live, the difference is below this machine's noise,
//! bench/README.md). Here each connection keeps one timer and the time of its last read or
//! write; the timer is re-armed only when it fires on a connection that was active since, so a
//! busy connection pays for reading the clock and nothing else. The same timer also bounds a
//! request that goes unanswered (a header trickled byte by byte), see [`IdleClosing`].

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use poem::http::uri::Scheme;
use poem::listener::Acceptor;
use poem::web::{LocalAddr, RemoteAddr};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// Wraps every connection `inner` accepts in [`IdleClosing`].
pub struct IdleClosingAcceptor<A> {
    inner: A,
    timeout: Duration,
}

impl<A> IdleClosingAcceptor<A> {
    pub fn new(inner: A, timeout: Duration) -> IdleClosingAcceptor<A> {
        IdleClosingAcceptor { inner, timeout }
    }
}

impl<A: Acceptor> Acceptor for IdleClosingAcceptor<A> {
    type Io = IdleClosing<A::Io>;

    fn local_addr(&self) -> Vec<LocalAddr> {
        self.inner.local_addr()
    }

    async fn accept(&mut self) -> io::Result<(Self::Io, LocalAddr, RemoteAddr, Scheme)> {
        let (io, local, remote, scheme) = self.inner.accept().await?;
        Ok((IdleClosing::new(io, self.timeout), local, remote, scheme))
    }
}

/// A connection that fails its pending read or write with `TimedOut` once nothing has been read
/// or written for `timeout`, or once the client has sent bytes that have had no answer for
/// `timeout`; the HTTP server then drops it. The second rule bounds a client that trickles a
/// request's header a byte at a time (slowloris): every byte is activity, but no answer comes.
pub struct IdleClosing<T> {
    inner: T,
    timeout: Duration,
    last_active: Instant,
    /// When the client sent the first bytes since the server last wrote: a request under way.
    unanswered_since: Option<Instant>,
    timer: Pin<Box<Sleep>>,
}

impl<T> IdleClosing<T> {
    pub fn new(inner: T, timeout: Duration) -> IdleClosing<T> {
        let now = Instant::now();
        IdleClosing {
            inner,
            timeout,
            last_active: now,
            unanswered_since: None,
            timer: Box::pin(tokio::time::sleep_until(now + timeout)),
        }
    }

    /// Called while a read or write waits: ready with the error once the connection has been idle
    /// for the whole timeout; otherwise pending, with the timer set to when it would be.
    fn poll_idle(&mut self, cx: &mut Context<'_>) -> Poll<io::Error> {
        loop {
            ready!(self.timer.as_mut().poll(cx));
            let mut due = self.last_active + self.timeout;
            if let Some(since) = self.unanswered_since {
                due = due.min(since + self.timeout);
            }
            if due <= Instant::now() {
                return Poll::Ready(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "connection idle, or a request unanswered, for too long",
                ));
            }
            self.timer.as_mut().reset(due);
        }
    }

    /// A write that went out answers what the client sent. Returns whether it wrote anything.
    fn answered(&mut self, poll: &Poll<io::Result<usize>>) -> bool {
        let wrote = matches!(poll, Poll::Ready(Ok(written)) if *written > 0);
        if wrote {
            self.unanswered_since = None;
        }
        wrote
    }

    /// Passes a finished operation through, noting the activity when it moved bytes (`moved`);
    /// a pending one waits on the timer too. Only bytes count: hyper flushes on every wake-up of
    /// its connection task, the timer's own included, so a flush with nothing to send counted as
    /// activity kept postponing the timeout and an idle connection stayed open for good.
    fn track<R>(
        &mut self,
        cx: &mut Context<'_>,
        poll: Poll<io::Result<R>>,
        moved: bool,
    ) -> Poll<io::Result<R>> {
        match poll {
            Poll::Ready(result) => {
                if moved {
                    self.last_active = Instant::now();
                }
                Poll::Ready(result)
            }
            Poll::Pending => self.poll_idle(cx).map(Err),
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for IdleClosing<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let before = buf.filled().len();
        let poll = Pin::new(&mut this.inner).poll_read(cx, buf);
        let moved = matches!(poll, Poll::Ready(Ok(()))) && buf.filled().len() > before;
        if moved && this.unanswered_since.is_none() {
            this.unanswered_since = Some(Instant::now());
        }
        this.track(cx, poll, moved)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for IdleClosing<T> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        let poll = Pin::new(&mut this.inner).poll_write(cx, buf);
        let moved = this.answered(&poll);
        this.track(cx, poll, moved)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        let poll = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        let moved = this.answered(&poll);
        this.track(cx, poll, moved)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let poll = Pin::new(&mut this.inner).poll_flush(cx);
        this.track(cx, poll, false)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    // Real time, short timeouts: the elapsed time is what these tests are about.
    const TIMEOUT: Duration = Duration::from_millis(300);

    #[tokio::test]
    async fn an_idle_connection_fails_after_the_timeout_and_an_active_one_does_not() {
        let (mut client, server) = tokio::io::duplex(64);
        let mut server = IdleClosing::new(server, TIMEOUT);
        let mut byte = [0u8; 1];
        // A request every 150 ms for 600 ms, twice the timeout, each answered: never closed.
        for _ in 0..4 {
            let reader = tokio::spawn(async move {
                let mut byte = [0u8; 1];
                server.read_exact(&mut byte).await?;
                server.write_all(b"y").await.map(|_| server)
            });
            tokio::time::sleep(TIMEOUT / 2).await;
            client.write_all(b"x").await.unwrap();
            server = reader.await.unwrap().expect("an active connection stays open");
            client.read_exact(&mut byte).await.unwrap();
        }
        let started = std::time::Instant::now();
        let error = server.read(&mut byte).await.unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::TimedOut);
        assert!(started.elapsed() >= TIMEOUT, "not before the idle timeout: {:?}", started.elapsed());
    }

    #[tokio::test]
    async fn a_request_trickled_byte_by_byte_is_cut_off() {
        let (mut client, server) = tokio::io::duplex(64);
        let mut server = IdleClosing::new(server, TIMEOUT);
        let trickle = tokio::spawn(async move {
            // A byte every 100 ms, never a whole request: the server never answers.
            for _ in 0..20 {
                tokio::time::sleep(TIMEOUT / 3).await;
                if client.write_all(b"G").await.is_err() {
                    break;
                }
            }
        });
        let started = std::time::Instant::now();
        let mut received = 0;
        let error = loop {
            let mut byte = [0u8; 1];
            match server.read(&mut byte).await {
                Ok(0) => panic!("the trickle ended before the server cut it off"),
                Ok(_) => received += 1,
                Err(error) => break error,
            }
        };
        assert_eq!(error.kind(), io::ErrorKind::TimedOut);
        assert!(
            started.elapsed() < TIMEOUT * 3,
            "cut off at the timeout, not after the trickle: {:?}",
            started.elapsed()
        );
        assert!(received >= 2, "bytes kept coming until then");
        trickle.abort();
    }

    #[tokio::test]
    async fn flushes_with_nothing_to_send_are_not_activity() {
        // As hyper does on every wake-up of its connection task: a read that waits, then a flush.
        let (_client, server) = tokio::io::duplex(64);
        let mut server = IdleClosing::new(server, TIMEOUT);
        let started = std::time::Instant::now();
        let error = loop {
            assert!(started.elapsed() < TIMEOUT * 4, "still open after four timeouts");
            let mut byte = [0u8; 1];
            match tokio::time::timeout(TIMEOUT / 6, server.read(&mut byte)).await {
                Ok(Err(error)) => break error,
                Ok(Ok(read)) => panic!("read {read} bytes from a silent client"),
                Err(_) => server.flush().await.unwrap(),
            }
        };
        assert_eq!(error.kind(), io::ErrorKind::TimedOut);
    }

    #[tokio::test]
    async fn a_stalled_write_counts_as_idle() {
        // The peer never reads: the buffer fills and the write waits until the timeout ends it.
        let (_client, server) = tokio::io::duplex(4);
        let mut server = IdleClosing::new(server, TIMEOUT);
        let error = server.write_all(&[0u8; 64]).await.unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::TimedOut);
    }
}
