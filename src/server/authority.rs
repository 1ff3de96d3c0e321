//! The `:authority` of requests on unix-socket connections, made one that h2 accepts.
//!
//! gRPC C-core clients (grpcio, gRPC C++) send a unix socket's path percent-encoded as the
//! authority (`tmp%2Fvitals.sock`), grpc-java sends the raw path. The `http` crate's
//! authority parser refuses both, so h2 resets the stream with PROTOCOL_ERROR before hyper
//! sees the request, and h2 has no setting to relax it (hyperium/h2#487, open). On a unix
//! socket the authority names nothing (the path is the address), so on those connections
//! each request's header block is decoded here, before h2 reads it: by loona-hpack, with the
//! dynamic table the client's encoder keeps. An `:authority` that does not parse becomes
//! `localhost`, what grpc-go sends; the block is encoded again (loona-hpack's encoder with
//! no dynamic table, so it refers to HPACK's static table only and h2's decoder can never
//! disagree with it) and sent on in one HEADERS frame, or with CONTINUATIONs past
//! [`MAX_FRAME`]. Every other frame passes as it came, byte for byte.
//!
//! Outside input, bounded at the door: a header block (HEADERS and its CONTINUATIONs) over
//! [`MAX_BLOCK`], a decoded list over [`MAX_DECODED`] (an HPACK bomb: small references to a
//! large table entry), a block that does not decode, or a frame between a HEADERS and its
//! CONTINUATION end the connection, as h2 itself would with a GOAWAY.

use std::{
    io,
    pin::Pin,
    task::{Context, Poll, ready},
};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::frames::{HEADERS, PREFACE};

const CONTINUATION: u8 = 0x9;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const PADDED: u8 = 0x8;
const PRIORITY: u8 = 0x20;

/// The largest header block taken in (the plaintext listener takes header lists of 4 KiB).
pub const MAX_BLOCK: usize = 64 << 10;
/// The largest decoded header list (names and values, 32 bytes more a field, as HTTP/2
/// counts it) taken in: eight times what the plaintext listener's h2 accepts (4 KiB), so a
/// block of small references to large table entries costs a bounded decode.
pub const MAX_DECODED: usize = 32 << 10;
/// The largest frame payload sent on: HTTP/2's initial SETTINGS_MAX_FRAME_SIZE, which the
/// server keeps.
pub const MAX_FRAME: usize = 16 << 10;
/// SETTINGS_HEADER_TABLE_SIZE: h2's default, which the server keeps, so the client's encoder
/// may use a dynamic table this large.
const TABLE_SIZE: usize = 4096;
/// What an authority that does not parse becomes.
const LOCALHOST: &[u8] = b"localhost";

/// Why a connection's header blocks could not be followed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    #[error("a header block over {MAX_BLOCK} bytes")]
    BlockTooLarge,
    #[error("a header list over {MAX_DECODED} bytes decoded")]
    ListTooLarge,
    #[error("a header block that does not decode: {0}")]
    Hpack(String),
    #[error("a frame of type {0} where a CONTINUATION was due")]
    NotContinuation(u8),
    #[error("a CONTINUATION on another stream than its HEADERS")]
    ContinuationStream,
    #[error("a HEADERS frame shorter than its padding and priority fields")]
    Malformed,
}

/// Where the byte stream from the client stands.
#[derive(Debug)]
enum At {
    /// The connection preface, this many bytes of it still to come.
    Preface(usize),
    /// A frame's 9-byte header, this many bytes of it read.
    Head(usize),
    /// A frame passed through as it came: this many payload bytes still to pass.
    Pass(usize),
    /// A HEADERS or CONTINUATION payload being collected: this many bytes still to come.
    Collect(usize),
}

/// The HEADERS frame whose header block is being collected.
#[derive(Debug, Clone, Copy)]
struct Open {
    stream: [u8; 4],
    flags: u8,
    /// The PRIORITY fields, sent on as they came.
    priority: Option<[u8; 5]>,
}

/// The frames from one client, with each header block's `:authority` made one h2 accepts.
pub struct Frames {
    at: At,
    head: [u8; 9],
    /// The frame being collected (its header).
    kind: u8,
    flags: u8,
    payload: Vec<u8>,
    /// The header block so far, and the HEADERS it started with.
    block: Vec<u8>,
    open: Option<Open>,
    decoder: loona_hpack::Decoder<'static>,
    encoder: loona_hpack::Encoder<'static>,
    /// Authorities replaced so far.
    pub replaced: u64,
}

impl Default for Frames {
    fn default() -> Frames {
        let mut decoder = loona_hpack::Decoder::new();
        decoder.set_max_allowed_table_size(TABLE_SIZE);
        let mut encoder = loona_hpack::Encoder::new();
        encoder.set_max_table_size(0);
        Frames {
            at: At::Preface(PREFACE),
            head: [0; 9],
            kind: 0,
            flags: 0,
            payload: Vec::new(),
            block: Vec::new(),
            open: None,
            decoder,
            encoder,
            replaced: 0,
        }
    }
}

impl Frames {
    /// Follows `bytes` from the client, appending what h2 is to read to `out`.
    pub fn feed(&mut self, mut bytes: &[u8], out: &mut Vec<u8>) -> Result<(), Error> {
        while !bytes.is_empty() {
            match self.at {
                At::Preface(left) | At::Pass(left) => {
                    let n = left.min(bytes.len());
                    out.extend_from_slice(&bytes[..n]);
                    bytes = &bytes[n..];
                    self.at = match self.at {
                        At::Preface(_) if n == left => At::Head(0),
                        At::Preface(_) => At::Preface(left - n),
                        _ if n == left => At::Head(0),
                        _ => At::Pass(left - n),
                    };
                }
                At::Head(have) => {
                    let n = (9 - have).min(bytes.len());
                    self.head[have..have + n].copy_from_slice(&bytes[..n]);
                    bytes = &bytes[n..];
                    if have + n < 9 {
                        self.at = At::Head(have + n);
                    } else {
                        self.frame_head(out)?;
                    }
                }
                At::Collect(left) => {
                    let n = left.min(bytes.len());
                    self.payload.extend_from_slice(&bytes[..n]);
                    bytes = &bytes[n..];
                    if n < left {
                        self.at = At::Collect(left - n);
                    } else {
                        self.at = At::Head(0);
                        self.collected(out)?;
                    }
                }
            }
        }
        Ok(())
    }

    /// A frame header is complete: pass the frame, or collect its payload.
    fn frame_head(&mut self, out: &mut Vec<u8>) -> Result<(), Error> {
        let h = self.head;
        let len = usize::from(h[0]) << 16 | usize::from(h[1]) << 8 | usize::from(h[2]);
        let (kind, flags) = (h[3], h[4]);
        let collect = match (kind, self.open.is_some()) {
            (HEADERS, false) => true,
            (CONTINUATION, true) => {
                if self.open.is_some_and(|o| o.stream[..] != h[5..9]) {
                    return Err(Error::ContinuationStream);
                }
                true
            }
            (_, true) => return Err(Error::NotContinuation(kind)),
            // A CONTINUATION with no HEADERS before it: h2's to refuse.
            (_, false) => false,
        };
        if !collect {
            out.extend_from_slice(&h);
            self.at = if len == 0 { At::Head(0) } else { At::Pass(len) };
            return Ok(());
        }
        if self.block.len() + len > MAX_BLOCK + 6 + 255 {
            return Err(Error::BlockTooLarge);
        }
        self.kind = kind;
        self.flags = flags;
        self.payload.clear();
        if len == 0 {
            self.at = At::Head(0);
            return self.collected(out);
        }
        self.at = At::Collect(len);
        Ok(())
    }

    /// A HEADERS or CONTINUATION payload is complete.
    fn collected(&mut self, out: &mut Vec<u8>) -> Result<(), Error> {
        let payload = std::mem::take(&mut self.payload);
        let mut fragment = &payload[..];
        if self.kind == HEADERS {
            let mut pad = 0;
            if self.flags & PADDED != 0 {
                let (&n, rest) = fragment.split_first().ok_or(Error::Malformed)?;
                pad = usize::from(n);
                fragment = rest;
            }
            let mut priority = None;
            if self.flags & PRIORITY != 0 {
                let (fields, rest) = fragment.split_at_checked(5).ok_or(Error::Malformed)?;
                priority = Some(<[u8; 5]>::try_from(fields).map_err(|_| Error::Malformed)?);
                fragment = rest;
            }
            fragment = fragment
                .get(..fragment.len().checked_sub(pad).ok_or(Error::Malformed)?)
                .ok_or(Error::Malformed)?;
            let stream = [self.head[5], self.head[6], self.head[7], self.head[8]];
            self.open = Some(Open {
                stream,
                flags: self.flags,
                priority,
            });
        }
        if self.block.len() + fragment.len() > MAX_BLOCK {
            return Err(Error::BlockTooLarge);
        }
        self.block.extend_from_slice(fragment);
        self.payload = payload;
        if self.flags & END_HEADERS != 0
            && let Some(open) = self.open.take()
        {
            self.emit(open, out)?;
        }
        Ok(())
    }

    /// Decodes the header block, replaces an authority h2 would refuse, and writes the
    /// block encoded again as HEADERS (and CONTINUATIONs).
    fn emit(&mut self, open: Open, out: &mut Vec<u8>) -> Result<(), Error> {
        let block = std::mem::take(&mut self.block);
        let mut fields: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
        let mut decoded = 0usize;
        let mut replaced = false;
        let result = self.decoder.decode_with_cb(&block, |name, value| {
            decoded = decoded.saturating_add(name.len() + value.len() + 32);
            if decoded > MAX_DECODED {
                return;
            }
            let value = if &name[..] == b":authority"
                && http::uri::Authority::try_from(&value[..]).is_err()
            {
                replaced = true;
                LOCALHOST.to_vec()
            } else {
                value.into_owned()
            };
            fields.push((name.into_owned(), value));
        });
        result.map_err(|e| Error::Hpack(e.to_string()))?;
        if decoded > MAX_DECODED {
            return Err(Error::ListTooLarge);
        }
        self.replaced += u64::from(replaced);
        let mut encoded = Vec::with_capacity(block.len() + 16);
        self.encoder
            .encode_into(fields.iter().map(|(n, v)| (&n[..], &v[..])), &mut encoded)
            .map_err(|e| Error::Hpack(e.to_string()))?;
        self.block = block;
        self.block.clear();

        let priority = open.priority.as_ref().map_or(&[][..], |p| &p[..]);
        let first = (MAX_FRAME - priority.len()).min(encoded.len());
        let (head, mut rest) = encoded.split_at(first);
        let mut flags = open.flags & (END_STREAM | PRIORITY);
        if rest.is_empty() {
            flags |= END_HEADERS;
        }
        frame(out, HEADERS, flags, open.stream, &[priority, head]);
        while !rest.is_empty() {
            let (chunk, more) = rest.split_at(MAX_FRAME.min(rest.len()));
            let flags = if more.is_empty() { END_HEADERS } else { 0 };
            frame(out, CONTINUATION, flags, open.stream, &[chunk]);
            rest = more;
        }
        Ok(())
    }
}

/// Appends one frame whose payload is `parts`, in order.
fn frame(out: &mut Vec<u8>, kind: u8, flags: u8, stream: [u8; 4], parts: &[&[u8]]) {
    let len: usize = parts.iter().map(|p| p.len()).sum();
    out.extend_from_slice(&(len as u32).to_be_bytes()[1..]);
    out.extend_from_slice(&[kind, flags]);
    out.extend_from_slice(&stream);
    for part in parts {
        out.extend_from_slice(part);
    }
}

/// What h2 reads of `bytes` from a client, fed in pieces of the sizes `pieces` gives, in
/// turn (zeros count as one; none: all at once). For the fuzz target `authority`, whose
/// properties are no panic and the same bytes however the input is split.
#[cfg(any(fuzzing, test))]
pub fn rewritten(bytes: &[u8], pieces: &[usize]) -> Result<Vec<u8>, Error> {
    let mut frames = Frames::default();
    let mut out = Vec::new();
    for piece in super::frames::split(bytes, pieces) {
        frames.feed(piece, &mut out)?;
    }
    Ok(out)
}

/// A unix-socket connection whose requests' authorities are made ones h2 accepts.
pub struct Rewrite<I> {
    inner: I,
    frames: Frames,
    /// Bytes for h2 to read, from `at` on.
    out: Vec<u8>,
    at: usize,
    scratch: Box<[u8]>,
    failed: Option<Error>,
}

impl<I> Rewrite<I> {
    pub fn new(inner: I) -> Rewrite<I> {
        Rewrite {
            inner,
            frames: Frames::default(),
            out: Vec::new(),
            at: 0,
            scratch: vec![0; 8 << 10].into_boxed_slice(),
            failed: None,
        }
    }
}

impl<I> Drop for Rewrite<I> {
    fn drop(&mut self) {
        if self.frames.replaced > 0 {
            tracing::debug!(
                requests = self.frames.replaced,
                "a unix-socket client sent an authority h2 refuses (a socket path); read as localhost"
            );
        }
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for Rewrite<I> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if this.at < this.out.len() {
                let n = buf.remaining().min(this.out.len() - this.at);
                buf.put_slice(&this.out[this.at..this.at + n]);
                this.at += n;
                if this.at == this.out.len() {
                    this.out.clear();
                    this.at = 0;
                }
                return Poll::Ready(Ok(()));
            }
            if let Some(err) = &this.failed {
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    err.to_string(),
                )));
            }
            let mut read = ReadBuf::new(&mut this.scratch);
            ready!(Pin::new(&mut this.inner).poll_read(cx, &mut read))?;
            let got = read.filled();
            if got.is_empty() {
                return Poll::Ready(Ok(()));
            }
            if let Err(err) = this.frames.feed(got, &mut this.out) {
                tracing::debug!(reason = %err, "closing a unix-socket connection");
                this.failed = Some(err);
            }
        }
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Rewrite<I> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CLIENT_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

    fn raw_frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let mut f = Vec::new();
        frame(&mut f, kind, flags, stream.to_be_bytes(), &[payload]);
        f
    }

    /// A header block as a client encoder writes it (loona-hpack's, with its dynamic table).
    fn block(encoder: &mut loona_hpack::Encoder<'_>, fields: &[(&str, &str)]) -> Vec<u8> {
        encoder.encode(fields.iter().map(|(n, v)| (n.as_bytes(), v.as_bytes())))
    }

    fn request(authority: &str) -> Vec<(&'static str, String)> {
        vec![
            (":method", "POST".into()),
            (":scheme", "http".into()),
            (":path", "/grpc.health.v1.Health/Check".into()),
            (":authority", authority.into()),
            ("content-type", "application/grpc".into()),
            ("te", "trailers".into()),
        ]
    }

    /// The frames in `bytes` (after the preface): type, flags, stream, payload.
    fn frames(mut bytes: &[u8]) -> Vec<(u8, u8, u32, Vec<u8>)> {
        assert_eq!(&bytes[..24], CLIENT_PREFACE);
        bytes = &bytes[24..];
        let mut found = Vec::new();
        while !bytes.is_empty() {
            let len =
                usize::from(bytes[0]) << 16 | usize::from(bytes[1]) << 8 | usize::from(bytes[2]);
            let stream = u32::from_be_bytes([bytes[5], bytes[6], bytes[7], bytes[8]]);
            found.push((bytes[3], bytes[4], stream, bytes[9..9 + len].to_vec()));
            bytes = &bytes[9 + len..];
        }
        found
    }

    /// The header lists h2 would decode from the HEADERS (and CONTINUATION) frames.
    fn decoded(bytes: &[u8]) -> Vec<Vec<(String, String)>> {
        let mut decoder = loona_hpack::Decoder::new();
        let mut lists = Vec::new();
        let mut block = Vec::new();
        for (kind, flags, _, payload) in frames(bytes) {
            match kind {
                HEADERS => {
                    let skip = if flags & PRIORITY != 0 { 5 } else { 0 };
                    assert_eq!(flags & PADDED, 0, "padding is dropped");
                    block.extend_from_slice(&payload[skip..]);
                }
                CONTINUATION => block.extend_from_slice(&payload),
                _ => continue,
            }
            if flags & END_HEADERS != 0 {
                let list = decoder.decode(&block).unwrap();
                lists.push(
                    list.into_iter()
                        .map(|(n, v)| {
                            (String::from_utf8(n).unwrap(), String::from_utf8(v).unwrap())
                        })
                        .collect(),
                );
                block.clear();
            }
        }
        lists
    }

    fn authority(list: &[(String, String)]) -> &str {
        &list.iter().find(|(n, _)| n == ":authority").unwrap().1
    }

    fn connection(blocks: &[Vec<u8>]) -> Vec<u8> {
        let mut bytes = CLIENT_PREFACE.to_vec();
        bytes.extend(raw_frame(4, 0, 0, &[0, 3, 0, 0, 0, 100]));
        for (i, b) in blocks.iter().enumerate() {
            let stream = 2 * i as u32 + 1;
            bytes.extend(raw_frame(HEADERS, END_HEADERS, stream, b));
            bytes.extend(raw_frame(0, END_STREAM, stream, &[0, 0, 0, 0, 0]));
        }
        bytes
    }

    /// A socket path, percent-encoded (gRPC C-core) or raw (grpc-java), reads as localhost;
    /// a valid authority stays; every other field and frame comes through unchanged, the
    /// SETTINGS and DATA frames byte for byte.
    #[test]
    fn socket_paths_become_localhost() {
        let mut client = loona_hpack::Encoder::new();
        let mut blocks = Vec::new();
        let mut sent = Vec::new();
        for authority in [
            "tmp%2Fvitals.sock",
            "/run/vitals/health.sock",
            "localhost:50052",
        ] {
            let fields = request(authority);
            let pairs: Vec<(&str, &str)> = fields.iter().map(|(n, v)| (*n, v.as_str())).collect();
            blocks.push(block(&mut client, &pairs));
            sent.push(fields);
        }
        let input = connection(&blocks);
        let out = rewritten(&input, &[]).unwrap();
        let lists = decoded(&out);
        assert_eq!(lists.len(), 3);
        let authorities: Vec<&str> = lists.iter().map(|l| authority(l)).collect();
        assert_eq!(authorities, ["localhost", "localhost", "localhost:50052"]);
        for (list, fields) in lists.iter().zip(&sent) {
            for ((n, v), (want_n, want_v)) in list.iter().zip(fields) {
                assert_eq!(n, want_n);
                if n != ":authority" {
                    assert_eq!(v, want_v);
                }
            }
        }
        let kinds: Vec<(u8, u8, u32)> = frames(&out).iter().map(|f| (f.0, f.1, f.2)).collect();
        assert_eq!(
            kinds,
            [
                (4, 0, 0),
                (1, 4, 1),
                (0, 1, 1),
                (1, 4, 3),
                (0, 1, 3),
                (1, 4, 5),
                (0, 1, 5)
            ]
        );
        assert_eq!(frames(&out)[0].3, [0, 3, 0, 0, 0, 100]);
        assert_eq!(frames(&out)[2].3, [0, 0, 0, 0, 0]);
    }

    /// A literal field with incremental indexing: the name from the static table
    /// (`index`), the value as a plain string; the field enters the dynamic table.
    fn indexed_literal(index: u8, value: &str) -> Vec<u8> {
        assert!(index < 63 && value.len() < 127);
        let mut b = vec![0x40 | index, value.len() as u8];
        b.extend_from_slice(value.as_bytes());
        b
    }

    /// Later requests that refer to the client's dynamic table (C-core's encoder adds the
    /// path and the authority to it once, then sends one-byte references) decode right,
    /// however the bytes are split into reads.
    #[test]
    fn dynamic_table_references_and_any_split() {
        // :method POST (3), :scheme http (6), then :path and :authority into the table.
        let mut first = vec![0x83, 0x86];
        first.extend(indexed_literal(4, "/grpc.health.v1.Health/Check"));
        first.extend(indexed_literal(1, "tmp%2Fvitals.sock"));
        first.extend(indexed_literal(31, "application/grpc"));
        // The same again by reference: the newest entry is 62.
        let second = vec![0x83, 0x86, 0xc0, 0xbf, 0xbe];
        let input = connection(&[first, second]);
        let whole = rewritten(&input, &[]).unwrap();
        let lists = decoded(&whole);
        assert_eq!(lists.len(), 2);
        assert_eq!(lists[0], lists[1]);
        assert_eq!(authority(&lists[1]), "localhost");
        assert_eq!(
            lists[1][2],
            (":path".into(), "/grpc.health.v1.Health/Check".into())
        );
        for pieces in [&[1][..], &[2, 7], &[9], &[0, 5, 13], &[100, 1]] {
            assert_eq!(rewritten(&input, pieces).unwrap(), whole, "{pieces:?}");
        }
    }

    /// A block split over CONTINUATIONs, with padding and priority, comes out as one
    /// HEADERS with the priority kept and the padding dropped; a block longer than a frame
    /// once encoded again is split into CONTINUATIONs.
    #[test]
    fn continuation_padding_priority_and_long_blocks() {
        let mut client = loona_hpack::Encoder::new();
        let fields = request("tmp%2Fvitals.sock");
        let pairs: Vec<(&str, &str)> = fields.iter().map(|(n, v)| (*n, v.as_str())).collect();
        let b = block(&mut client, &pairs);
        let (a, rest) = b.split_at(10);
        let mut payload = vec![3u8];
        payload.extend_from_slice(&[0x80, 0, 0, 1, 15]);
        payload.extend_from_slice(a);
        payload.extend_from_slice(&[0; 3]);
        let mut input = CLIENT_PREFACE.to_vec();
        input.extend(raw_frame(
            HEADERS,
            PADDED | PRIORITY | END_STREAM,
            1,
            &payload,
        ));
        input.extend(raw_frame(CONTINUATION, END_HEADERS, 1, rest));
        let out = rewritten(&input, &[3]).unwrap();
        let found = frames(&out);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].1, PRIORITY | END_STREAM | END_HEADERS);
        assert_eq!(&found[0].3[..5], &[0x80, 0, 0, 1, 15]);
        assert_eq!(authority(&decoded(&out)[0]), "localhost");

        let long = "x".repeat(20 << 10);
        let mut pairs = pairs.clone();
        pairs.push(("x-long", &long));
        let b = block(&mut loona_hpack::Encoder::new(), &pairs);
        let mut input = CLIENT_PREFACE.to_vec();
        input.extend(raw_frame(HEADERS, 0, 1, &b[..MAX_FRAME]));
        input.extend(raw_frame(CONTINUATION, END_HEADERS, 1, &b[MAX_FRAME..]));
        let out = rewritten(&input, &[]).unwrap();
        let found = frames(&out);
        let kinds: Vec<(u8, u8)> = found.iter().map(|f| (f.0, f.1)).collect();
        assert_eq!(kinds, [(HEADERS, 0), (CONTINUATION, END_HEADERS)]);
        assert!(found.iter().all(|f| f.3.len() <= MAX_FRAME));
        let list = &decoded(&out)[0];
        assert_eq!(authority(list), "localhost");
        assert_eq!(list.last().unwrap().1.len(), 20 << 10);
    }

    /// What h2 would refuse with a GOAWAY ends the connection here: a block over the
    /// limit, an HPACK bomb (references to a large table entry), a frame between a HEADERS
    /// and its CONTINUATION or a CONTINUATION on another stream, a table larger than the
    /// server allows, an index past the table, padding longer than the frame.
    #[test]
    fn hostile_blocks_end_the_connection() {
        let with = |frames: &[Vec<u8>]| {
            let mut bytes = CLIENT_PREFACE.to_vec();
            for f in frames {
                bytes.extend_from_slice(f);
            }
            rewritten(&bytes, &[])
        };
        let big = vec![0u8; MAX_BLOCK - 100];
        assert_eq!(
            with(&[
                raw_frame(HEADERS, 0, 1, &big),
                raw_frame(CONTINUATION, END_HEADERS, 1, &[0; 200]),
            ]),
            Err(Error::BlockTooLarge)
        );
        // One 4 KiB entry in the table, then 40,000 one-byte references to it (160 MB).
        let mut bomb = vec![0x40, 1, b'x', 0x7f, 0xa1, 0x1e];
        bomb.extend(std::iter::repeat_n(b'v', 4000));
        bomb.extend(std::iter::repeat_n(0xbe, 40_000));
        assert_eq!(
            with(&[raw_frame(HEADERS, END_HEADERS, 1, &bomb)]),
            Err(Error::ListTooLarge)
        );
        assert_eq!(
            with(&[raw_frame(HEADERS, 0, 1, &[0x82]), raw_frame(0, 0, 1, b"x"),]),
            Err(Error::NotContinuation(0))
        );
        assert_eq!(
            with(&[
                raw_frame(HEADERS, 0, 1, &[0x82]),
                raw_frame(CONTINUATION, END_HEADERS, 3, &[0x84]),
            ]),
            Err(Error::ContinuationStream)
        );
        let too_big_table = [0x3f, 0xe1, 0x7f];
        assert!(matches!(
            with(&[raw_frame(HEADERS, END_HEADERS, 1, &too_big_table)]),
            Err(Error::Hpack(_))
        ));
        assert!(matches!(
            with(&[raw_frame(HEADERS, END_HEADERS, 1, &[0xff, 0x7f])]),
            Err(Error::Hpack(_))
        ));
        assert_eq!(
            with(&[raw_frame(HEADERS, END_HEADERS | PADDED, 1, &[9, 0x82])]),
            Err(Error::Malformed)
        );
    }
}
