//! The HTTP/2 frames of a connection, counted on their way through (after TLS): floods of
//! PING, SETTINGS and RST_STREAM end the connection, and a connection that stays silent
//! is closed.
//!
//! h2 answers every PING and SETTINGS and lets a client reset streams once they are
//! accepted, each for some CPU (RELIABILITY.md, findings 5 and 6). Each of the three has a
//! token bucket per connection; a frame that finds its bucket empty makes the next read
//! fail, the connection's HTTP/2 state is dropped, and [`goaway`] writes GOAWAY
//! ENHANCE_YOUR_CALM in its place. A PING that follows a DATA or HEADERS frame the server
//! sent is free, as in gRPC's keepalive enforcement, so BDP pings never count.
//!
//! Silence: the HTTP/2 preface (TLS connections) or a first request (plaintext ones) must
//! arrive within the given time, or the next read fails the same way.

use std::{
    io,
    pin::Pin,
    task::{Context, Poll},
    time::{Duration, Instant},
};

use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    time::Sleep,
};

/// The client connection preface's length (RFC 9113); it and `HEADERS` are `authority.rs`'s
/// too.
pub(super) const PREFACE: usize = 24;
const DATA: u8 = 0;
pub(super) const HEADERS: u8 = 1;
const RST_STREAM: u8 = 3;
const SETTINGS: u8 = 4;
const PING: u8 = 6;
const ACK: u8 = 1;

/// Which flood ended a connection (also its GOAWAY's debug data).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flood {
    Ping,
    Settings,
    Reset,
}

impl Flood {
    /// The name counted in `Snapshot.server.calm_goaways`.
    pub fn name(self) -> &'static str {
        match self {
            Flood::Ping => "ping",
            Flood::Settings => "settings",
            Flood::Reset => "reset",
        }
    }

    fn debug_data(self) -> &'static [u8] {
        match self {
            Flood::Ping => b"too_many_pings",
            Flood::Settings => b"too_many_settings",
            Flood::Reset => b"too_many_resets",
        }
    }
}

/// A token bucket: `burst` frames at once, `per_sec` more each second.
#[derive(Debug)]
struct Bucket {
    tokens: f64,
    burst: f64,
    per_sec: f64,
    at: Instant,
}

impl Bucket {
    fn new(burst: f64, per_sec: f64) -> Bucket {
        Bucket {
            tokens: burst,
            burst,
            per_sec,
            at: Instant::now(),
        }
    }

    fn take(&mut self, now: Instant) -> bool {
        let refill = now.saturating_duration_since(self.at).as_secs_f64() * self.per_sec;
        self.tokens = (self.tokens + refill).min(self.burst);
        self.at = now;
        if self.tokens < 1.0 {
            return false;
        }
        self.tokens -= 1.0;
        true
    }
}

/// What must arrive before the silence deadline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Awaited {
    /// The client's HTTP/2 preface.
    Preface,
    /// The HEADERS of a first request.
    Request,
}

/// Where a byte stream's framing stands: the 9-byte header being read, then the payload.
#[derive(Debug, Default)]
struct Framing {
    header: [u8; 9],
    header_len: usize,
    left: usize,
}

impl Framing {
    /// Follows `bytes`; calls `frame(type, flags, stream)` for each frame header completed.
    fn feed(&mut self, mut bytes: &[u8], mut frame: impl FnMut(u8, u8, u32)) {
        while !bytes.is_empty() {
            if self.left > 0 {
                let n = self.left.min(bytes.len());
                self.left -= n;
                bytes = &bytes[n..];
                continue;
            }
            let n = (9 - self.header_len).min(bytes.len());
            self.header[self.header_len..self.header_len + n].copy_from_slice(&bytes[..n]);
            self.header_len += n;
            bytes = &bytes[n..];
            if self.header_len == 9 {
                let h = self.header;
                self.header_len = 0;
                self.left = usize::from(h[0]) << 16 | usize::from(h[1]) << 8 | usize::from(h[2]);
                let stream = u32::from_be_bytes([h[5], h[6], h[7], h[8]]) & 0x7fff_ffff;
                frame(h[3], h[4], stream);
            }
        }
    }

    /// Between frames (a GOAWAY written now would not land inside another frame).
    fn at_boundary(&self) -> bool {
        self.header_len == 0 && self.left == 0
    }
}

/// The frame headers (type, flags, stream) that `bytes` holds, read as they arrive in pieces
/// of the sizes `pieces` gives, in turn (zeros count as one; none: all at once). For the
/// fuzz target `frames`, whose property is that every way of splitting finds the same frames.
#[cfg(any(fuzzing, test))]
pub fn frame_headers(bytes: &[u8], pieces: &[usize]) -> Vec<(u8, u8, u32)> {
    let mut framing = Framing::default();
    let mut found = Vec::new();
    for piece in split(bytes, pieces) {
        framing.feed(piece, |kind, flags, stream| {
            found.push((kind, flags, stream))
        });
    }
    found
}

/// `bytes` cut into pieces of the sizes `pieces` gives, in turn (zeros count as one; none:
/// all at once): how the fuzz targets of this module and `authority.rs` replay the ways TLS
/// records and TCP segments split what a client sends.
#[cfg(any(fuzzing, test))]
pub(super) fn split<'a>(
    mut bytes: &'a [u8],
    pieces: &'a [usize],
) -> impl Iterator<Item = &'a [u8]> + 'a {
    let mut sizes = pieces.iter().cycle();
    std::iter::from_fn(move || {
        if bytes.is_empty() {
            return None;
        }
        let n = sizes
            .next()
            .map_or(bytes.len(), |&n| n.max(1))
            .min(bytes.len());
        let (piece, rest) = bytes.split_at(n);
        bytes = rest;
        Some(piece)
    })
}

/// The state of a watched connection, kept by its owner across the HTTP/2 connection.
#[derive(Debug)]
pub struct Watch {
    preface_left: usize,
    read: Framing,
    written: Framing,
    pings: Bucket,
    settings: Bucket,
    resets: Bucket,
    /// The server wrote DATA or HEADERS since the client's last PING.
    wrote_since_ping: bool,
    /// The highest stream a client opened, for the GOAWAY.
    pub last_stream: u32,
    pub flood: Option<Flood>,
    /// Set when the silence deadline passed first.
    pub silent: bool,
    awaited: Option<(Awaited, Pin<Box<Sleep>>)>,
}

impl Watch {
    /// Limits on a fresh connection; `silence` is how long it may take to send `awaited`.
    pub fn new(awaited: Awaited, silence: Duration) -> Watch {
        Watch {
            preface_left: PREFACE,
            read: Framing::default(),
            written: Framing::default(),
            // A client sends a few of each; these allow bursts of ten times that.
            pings: Bucket::new(50.0, 10.0),
            settings: Bucket::new(50.0, 5.0),
            resets: Bucket::new(200.0, 50.0),
            wrote_since_ping: false,
            last_stream: 0,
            flood: None,
            silent: false,
            awaited: Some((awaited, Box::pin(tokio::time::sleep(silence)))),
        }
    }

    fn on_read(&mut self, mut bytes: &[u8]) {
        if self.preface_left > 0 {
            let n = self.preface_left.min(bytes.len());
            self.preface_left -= n;
            bytes = &bytes[n..];
            if self.preface_left == 0 && matches!(self.awaited, Some((Awaited::Preface, _))) {
                self.awaited = None;
            }
        }
        let now = Instant::now();
        let Watch {
            read,
            pings,
            settings,
            resets,
            wrote_since_ping,
            last_stream,
            flood,
            awaited,
            ..
        } = self;
        read.feed(bytes, |kind, flags, stream| {
            let over = match kind {
                HEADERS => {
                    *last_stream = (*last_stream).max(stream);
                    if matches!(awaited, Some((Awaited::Request, _))) {
                        *awaited = None;
                    }
                    None
                }
                PING if flags & ACK == 0 => {
                    let free = std::mem::take(wrote_since_ping);
                    (!free && !pings.take(now)).then_some(Flood::Ping)
                }
                SETTINGS if flags & ACK == 0 => (!settings.take(now)).then_some(Flood::Settings),
                RST_STREAM => (!resets.take(now)).then_some(Flood::Reset),
                _ => None,
            };
            if flood.is_none() {
                *flood = over;
            }
        });
    }

    fn on_write(&mut self, bytes: &[u8]) {
        let wrote = &mut self.wrote_since_ping;
        self.written.feed(bytes, |kind, _, _| {
            if kind == DATA || kind == HEADERS {
                *wrote = true;
            }
        });
    }

    /// The GOAWAY ENHANCE_YOUR_CALM for a flood, when it can be written between frames.
    pub fn goaway(&self) -> Option<Vec<u8>> {
        let flood = self.flood?;
        if !self.written.at_boundary() {
            return None;
        }
        let debug = flood.debug_data();
        let mut frame = Vec::with_capacity(17 + debug.len());
        frame.extend_from_slice(&(8 + debug.len() as u32).to_be_bytes()[1..]);
        frame.extend_from_slice(&[7, 0, 0, 0, 0, 0]);
        frame.extend_from_slice(&self.last_stream.to_be_bytes());
        frame.extend_from_slice(&0xb_u32.to_be_bytes());
        frame.extend_from_slice(debug);
        Some(frame)
    }
}

/// An IO that counts the frames through it into a [`Watch`].
pub struct Watched<'a> {
    pub io: &'a mut dyn super::io::Io,
    pub watch: &'a mut Watch,
}

fn ended() -> io::Error {
    io::Error::other("connection ended by the frame limits")
}

impl AsyncRead for Watched<'_> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let Some((_, sleep)) = &mut this.watch.awaited
            && sleep.as_mut().poll(cx).is_ready()
        {
            // Polled before every read, so a trickle of bytes does not keep it away.
            this.watch.silent = true;
        }
        if this.watch.flood.is_some() || this.watch.silent {
            return Poll::Ready(Err(ended()));
        }
        let before = buf.filled().len();
        match Pin::new(&mut *this.io).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                this.watch.on_read(&buf.filled()[before..]);
                if this.watch.flood.is_some() {
                    return Poll::Ready(Err(ended()));
                }
                Poll::Ready(Ok(()))
            }
            other => other,
        }
    }
}

impl AsyncWrite for Watched<'_> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let written = Pin::new(&mut *this.io).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = written {
            this.watch.on_write(&buf[..n]);
        }
        written
    }

    /// hyper writes a frame's header and body as separate slices when the stream takes
    /// them (TLS does): passed on, and followed slice by slice.
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let written = Pin::new(&mut *this.io).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(n)) = written {
            let mut left = n;
            for buf in bufs {
                let k = left.min(buf.len());
                this.watch.on_write(&buf[..k]);
                left -= k;
            }
        }
        written
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.get_mut().io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Frame headers are found wherever the bytes are split, a payload's bytes never
    /// mistaken for a header, and the stream id's reserved bit dropped.
    #[test]
    fn framing_is_the_same_however_split() {
        let mut bytes = frame(PING, 0, 0, &[7; 8]);
        bytes.extend(frame(HEADERS, 4, 0x8000_0003, &[1; 20]));
        bytes.extend(frame(DATA, 1, 3, &[9; 100]));
        let want = vec![(PING, 0, 0), (HEADERS, 4, 3), (DATA, 1, 3)];
        assert_eq!(frame_headers(&bytes, &[]), want);
        for pieces in [&[1][..], &[2, 7], &[9], &[0, 5, 13]] {
            assert_eq!(frame_headers(&bytes, pieces), want, "{pieces:?}");
        }
    }

    fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let mut f = (payload.len() as u32).to_be_bytes()[1..].to_vec();
        f.extend_from_slice(&[kind, flags]);
        f.extend_from_slice(&stream.to_be_bytes());
        f.extend_from_slice(payload);
        f
    }

    fn watch() -> Watch {
        let mut w = Watch::new(Awaited::Preface, Duration::from_secs(1));
        w.on_read(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");
        w
    }

    /// A PING burst past the bucket is a flood; PINGs after the server sent data are free.
    #[tokio::test]
    async fn ping_floods_trip_unless_data_was_sent() {
        let mut w = watch();
        assert!(w.awaited.is_none(), "the preface was awaited");
        for _ in 0..200 {
            w.on_write(&frame(DATA, 0, 1, b"x"));
            w.on_read(&frame(PING, 0, 0, &[0; 8]));
        }
        assert_eq!(w.flood, None);
        let pings: Vec<u8> = (0..60).flat_map(|_| frame(PING, 0, 0, &[0; 8])).collect();
        // Split anywhere, frames are still counted.
        for chunk in pings.chunks(7) {
            w.on_read(chunk);
        }
        assert_eq!(w.flood, Some(Flood::Ping));
    }

    /// Resets and SETTINGS have buckets of their own; the GOAWAY names the last stream.
    #[tokio::test]
    async fn resets_trip_and_goaway_names_the_last_stream() {
        let mut w = watch();
        for i in 0..201u32 {
            w.on_read(&frame(HEADERS, 4, 2 * i + 1, b"h"));
            w.on_read(&frame(RST_STREAM, 0, 2 * i + 1, &[0, 0, 0, 8]));
        }
        assert_eq!(w.flood, Some(Flood::Reset));
        let goaway = w.goaway().unwrap();
        assert_eq!(goaway[3], 7);
        assert_eq!(&goaway[9..13], &401u32.to_be_bytes());
        assert_eq!(&goaway[13..17], &11u32.to_be_bytes());
        assert_eq!(&goaway[17..], b"too_many_resets");
        let mut s = watch();
        for _ in 0..51 {
            s.on_read(&frame(SETTINGS, 0, 0, &[0; 6]));
            s.on_read(&frame(SETTINGS, ACK, 0, &[]));
        }
        assert_eq!(s.flood, Some(Flood::Settings));
        // Mid-frame on the write side, no GOAWAY can be slipped in.
        s.on_write(&frame(DATA, 0, 1, b"abc")[..10]);
        assert!(s.goaway().is_none());
    }
}
