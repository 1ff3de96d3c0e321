//! A connection's byte stream and what wraps it before HTTP sees it: the one trait object
//! every kind of stream is served as, the first bytes of an ALPN-less connection read to
//! tell HTTP/2 from HTTP/1 and then read again, and a deadline on writes a peer does not
//! take.

use std::{
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};

use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt},
    time::Sleep,
};

/// A connection's byte stream: TLS, TCP or unix. HTTP is served over it as a trait object,
/// so hyper's and h2's server code is compiled once rather than once per kind of stream
/// (~60 KiB each; docs/arm.md).
pub(super) trait Io: AsyncRead + AsyncWrite + Send + Unpin {}

impl<T: AsyncRead + AsyncWrite + Send + Unpin> Io for T {}

/// How long a closing connection may take to say goodbye (TLS close_notify, FIN, and the
/// peer's last bytes read) before it is simply dropped.
const LINGER: Duration = Duration::from_secs(1);

/// Closes our side of a connection that ended gracefully, then reads what the peer still
/// sends until its EOF, for at most [`LINGER`]: closing with the peer's bytes unread makes
/// the kernel send a reset, which the peer sees as an error.
pub(super) async fn linger<I: AsyncRead + AsyncWrite + Unpin + ?Sized>(io: &mut I) {
    let _ = tokio::time::timeout(LINGER, async {
        let _ = io.shutdown().await;
        let mut sink = [0u8; 1024];
        while matches!(io.read(&mut sink).await, Ok(n) if n > 0) {}
    })
    .await;
}

/// What an HTTP/2 connection starts with.
const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Reads the first bytes of a connection that negotiated no ALPN (Go's HTTP/1-only client,
/// which is Prometheus' scraper with `enable_http2: false`, offers none): whether they are
/// HTTP/2's preface, and the connection with those bytes put back. `None` when nothing
/// came within `limit`.
pub(super) async fn sniff<I: AsyncRead + Unpin>(
    mut io: I,
    limit: Duration,
) -> Option<(bool, Replay<I>)> {
    let mut prefix = vec![0u8; PREFACE.len()];
    let mut n = 0;
    let read = tokio::time::timeout(limit, async {
        // Stop at the first byte that differs from the preface: an HTTP/1 request line
        // does at once.
        while n < PREFACE.len() && prefix[..n] == PREFACE[..n] {
            match io.read(&mut prefix[n..]).await {
                Ok(0) | Err(_) => return false,
                Ok(got) => n += got,
            }
        }
        true
    })
    .await;
    if read != Ok(true) {
        return None;
    }
    prefix.truncate(n);
    let http2 = prefix[..] == PREFACE[..];
    Some((
        http2,
        Replay {
            prefix,
            at: 0,
            inner: io,
        },
    ))
}

/// A connection whose first bytes, already read, are read again first.
pub(super) struct Replay<I> {
    prefix: Vec<u8>,
    at: usize,
    inner: I,
}

impl<I: AsyncRead + Unpin> AsyncRead for Replay<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        if this.at < this.prefix.len() {
            let n = buf.remaining().min(this.prefix.len() - this.at);
            buf.put_slice(&this.prefix[this.at..this.at + n]);
            this.at += n;
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Replay<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// A stream whose writes fail with `TimedOut` once one has waited `limit` for the peer to
/// take bytes (a reader that does not read holds a response, and its memory, no longer).
/// hyper's HTTP/1 has a header read timeout but no write timeout.
pub(super) struct WriteDeadline<I> {
    inner: I,
    limit: Duration,
    /// Armed while a write waits.
    waiting: Option<Pin<Box<Sleep>>>,
}

impl<I> WriteDeadline<I> {
    pub(super) fn new(inner: I, limit: Duration) -> WriteDeadline<I> {
        WriteDeadline {
            inner,
            limit,
            waiting: None,
        }
    }

    /// A write's outcome: progress disarms the deadline; waiting arms it, and errors once
    /// it has passed.
    fn watch<T>(&mut self, cx: &mut Context<'_>, polled: Poll<T>) -> Poll<std::io::Result<T>> {
        match polled {
            Poll::Ready(t) => {
                self.waiting = None;
                Poll::Ready(Ok(t))
            }
            Poll::Pending => {
                let limit = self.limit;
                let waiting = self
                    .waiting
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
                match waiting.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Err(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        "the peer took no bytes within the write timeout",
                    ))),
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for WriteDeadline<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for WriteDeadline<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.watch(cx, polled).map(|r| r.and_then(|r| r))
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.watch(cx, polled).map(|r| r.and_then(|r| r))
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let polled = Pin::new(&mut self.inner).poll_flush(cx);
        self.watch(cx, polled).map(|r| r.and_then(|r| r))
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let polled = Pin::new(&mut self.inner).poll_shutdown(cx);
        self.watch(cx, polled).map(|r| r.and_then(|r| r))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A connection without ALPN is HTTP/2 when it starts with the preface, HTTP/1
    /// otherwise, and the bytes read to tell are read again; a silent one is given up.
    #[tokio::test]
    async fn sniffing_tells_http2_from_http1_and_replays() {
        for (sent, http2) in [
            (&b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00"[..], true),
            (b"GET /metrics HTTP/1.1\r\n\r\n", false),
            (b"POST / HTTP/1.1\r\n\r\n", false),
        ] {
            let (mut client, server) = tokio::io::duplex(64);
            client.write_all(sent).await.unwrap();
            drop(client);
            let (is_http2, mut replay) = sniff(server, Duration::from_secs(1)).await.unwrap();
            assert_eq!(is_http2, http2, "{sent:?}");
            let mut again = Vec::new();
            replay.read_to_end(&mut again).await.unwrap();
            assert_eq!(again, sent, "every byte is read again");
        }
        let (_client, server) = tokio::io::duplex(64);
        assert!(
            sniff(server, Duration::from_millis(10)).await.is_none(),
            "silence"
        );
    }

    /// A write the peer does not take fails after the limit; one it takes does not, however
    /// long the connection lives.
    #[tokio::test(start_paused = true)]
    async fn writes_the_peer_does_not_take_time_out() {
        let (mut peer, ours) = tokio::io::duplex(16);
        let mut io = WriteDeadline::new(ours, Duration::from_secs(5));
        io.write_all(&[0; 16]).await.unwrap();
        let mut sink = [0; 16];
        peer.read_exact(&mut sink).await.unwrap();
        tokio::time::sleep(Duration::from_secs(60)).await;
        io.write_all(&[0; 16]).await.unwrap();
        let started = tokio::time::Instant::now();
        let err = io.write_all(&[0; 16]).await.unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::TimedOut);
        assert_eq!(started.elapsed(), Duration::from_secs(5));
    }
}
