//! Request bodies on their way to a handler, watched for the memory they tie up and for
//! streams that never send their first message.
//!
//! tonic buffers a message until its last byte arrives. Bytes of messages still arriving
//! are charged to one budget shared by every connection (`server.max_request_buffer`);
//! a chunk that would take it past the limit fails its call with RESOURCE_EXHAUSTED, so a
//! client that announces large messages and never finishes them holds at most the budget.
//! The first [`SMALL_REQUEST`] bytes of each message are not charged: they are bounded by
//! the per-method limit and `server.max_calls`, and so a health check or a small echo is
//! never refused because large messages hold the budget.
//!
//! A streaming call's first message must be whole within `server.first_message_timeout`,
//! or the call ends with DEADLINE_EXCEEDED (unary calls have `server.max_deadline`).

use std::{
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    task::{Context, Poll, ready},
    time::Duration,
};

use bytes::{Buf, Bytes};
use http_body::{Body, Frame, SizeHint};
use tokio::time::Sleep;
use tonic::Status;

use crate::{methods::SMALL_REQUEST, rpc_stats::RpcStats};

/// Charges `n` more bytes to the budget unless that would pass `limit`.
fn charge(used: &AtomicU64, n: usize, limit: usize) -> bool {
    used.fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
        (used + n as u64 <= limit as u64).then_some(used + n as u64)
    })
    .is_ok()
}

/// Where the gRPC framing of a request body stands: `header` bytes of the next 5-byte
/// prefix read so far, then `left` bytes of the message body to come.
#[derive(Debug, Default)]
struct Framing {
    header: [u8; 5],
    header_len: usize,
    left: usize,
    /// Bytes of the message in progress received so far (prefix included).
    partial: usize,
    /// Messages completed.
    messages: u64,
}

impl Framing {
    /// Follows `chunk` through the framing.
    fn feed(&mut self, mut chunk: &[u8]) {
        while !chunk.is_empty() {
            if self.header_len < 5 {
                let n = (5 - self.header_len).min(chunk.len());
                self.header[self.header_len..self.header_len + n].copy_from_slice(&chunk[..n]);
                self.header_len += n;
                self.partial += n;
                chunk = &chunk[n..];
                if self.header_len == 5 {
                    self.left = u32::from_be_bytes([
                        self.header[1],
                        self.header[2],
                        self.header[3],
                        self.header[4],
                    ]) as usize;
                }
            } else {
                let n = self.left.min(chunk.len());
                self.left -= n;
                self.partial += n;
                chunk = &chunk[n..];
            }
            if self.header_len == 5 && self.left == 0 {
                self.header_len = 0;
                self.partial = 0;
                self.messages += 1;
            }
        }
    }
}

/// A request body that charges its incomplete message to the budget
/// (`ServerStats::request_buffer_bytes`).
pub struct RequestBody<B> {
    inner: B,
    stats: Arc<RpcStats>,
    limit: usize,
    framing: Framing,
    charged: usize,
    /// Until the first message is whole, for streaming calls.
    first_message: Option<(Pin<Box<Sleep>>, Duration)>,
}

impl<B> RequestBody<B> {
    pub fn new(
        inner: B,
        stats: Arc<RpcStats>,
        limit: usize,
        first_message: Option<Duration>,
    ) -> RequestBody<B> {
        RequestBody {
            inner,
            stats,
            limit,
            framing: Framing::default(),
            charged: 0,
            first_message: first_message.map(|d| (Box::pin(tokio::time::sleep(d)), d)),
        }
    }

    /// Charges (or releases) what the message in progress holds now.
    fn account(&mut self) -> Result<(), Status> {
        let held = self.framing.partial.saturating_sub(SMALL_REQUEST);
        let used = &self.stats.server.request_buffer_bytes;
        if held > self.charged {
            if !charge(used, held - self.charged, self.limit) {
                (self.stats.server.request_buffer_refusals).fetch_add(1, Ordering::Relaxed);
                return Err(Status::resource_exhausted(
                    "the server's request memory is in use by other calls (server.max_request_buffer); try again",
                ));
            }
        } else {
            used.fetch_sub((self.charged - held) as u64, Ordering::AcqRel);
        }
        self.charged = held;
        Ok(())
    }
}

impl<B> Drop for RequestBody<B> {
    fn drop(&mut self) {
        (self.stats.server.request_buffer_bytes).fetch_sub(self.charged as u64, Ordering::AcqRel);
    }
}

impl<B> Body for RequestBody<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        let this = &mut *self;
        let frame = match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(frame) => frame,
            Poll::Pending => {
                if let Some((sleep, limit)) = &mut this.first_message {
                    ready!(sleep.as_mut().poll(cx));
                    let limit = limit.as_millis();
                    this.first_message = None;
                    (this.stats.server.first_message_timeouts).fetch_add(1, Ordering::Relaxed);
                    return Poll::Ready(Some(Err(Status::deadline_exceeded(format!(
                        "no request message within {limit}ms (server.first_message_timeout)"
                    )))));
                }
                return Poll::Pending;
            }
        };
        let frame = match frame {
            Some(Ok(frame)) => frame,
            Some(Err(err)) => return Poll::Ready(Some(Err(Status::from_error(err.into())))),
            None => return Poll::Ready(None),
        };
        if let Some(data) = frame.data_ref() {
            this.framing.feed(data.chunk());
            if this.framing.messages > 0 {
                this.first_message = None;
            }
            if let Err(status) = this.account() {
                return Poll::Ready(Some(Err(status)));
            }
        }
        Poll::Ready(Some(Ok(frame)))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prefix(len: u32) -> Vec<u8> {
        let mut p = vec![0];
        p.extend_from_slice(&len.to_be_bytes());
        p
    }

    /// The framing follows messages split anywhere, prefixes included.
    #[test]
    fn framing_follows_split_messages() {
        let mut stream = prefix(3);
        stream.extend_from_slice(b"abc");
        stream.extend(prefix(0));
        stream.extend(prefix(10));
        stream.extend_from_slice(b"0123");
        for split in 0..stream.len() {
            let mut f = Framing::default();
            f.feed(&stream[..split]);
            f.feed(&stream[split..]);
            assert_eq!(
                (f.messages, f.partial, f.left),
                (2, 9, 6),
                "split at {split}"
            );
        }
    }

    /// Only bytes past the first 4 KiB of a message are charged, up to the limit; what a
    /// body held returns when it is dropped.
    #[tokio::test]
    async fn charges_large_partial_messages_only() {
        let stats = Arc::new(RpcStats::new());
        let mut body = RequestBody::new((), stats.clone(), 10_000, None);
        let used = || stats.server.request_buffer_bytes.load(Ordering::Relaxed) as usize;
        body.framing.feed(&prefix(100_000));
        body.framing.feed(&[0; 4000]);
        body.account().unwrap();
        assert_eq!(used(), 0);
        body.framing.feed(&[0; 9000]);
        body.account().unwrap();
        assert_eq!(used(), 4005 + 9000 - SMALL_REQUEST);
        body.framing.feed(&[0; 2000]);
        assert_eq!(
            body.account().unwrap_err().code(),
            tonic::Code::ResourceExhausted
        );
        drop(body);
        assert_eq!(used(), 0);
    }
}
