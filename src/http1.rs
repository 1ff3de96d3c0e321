//! The HTTP/1.1 wire format, as much as the daemon speaks: bounded reads of a message head,
//! its start line and headers parsed into `http` types, the body's length (Content-Length
//! or chunked), bodies read within a limit, and heads written. The `/metrics` page
//! (server/http1.rs) and the outbound client (outbound.rs) both use it.
//!
//! Written here rather than taken from hyper's `http1` feature: the two codecs (server and
//! client roles) cost about 150 KiB of the aarch64 binary, this about a tenth of that
//! (docs/arm.md), and a scrape or a push needs none of what they add (upgrades, 100-continue
//! flows, header casing, trailers).

use http::{HeaderMap, HeaderName, HeaderValue};
use tokio::io::{AsyncRead, AsyncReadExt};

/// Why a message head could not be read.
#[derive(Debug)]
pub enum HeadError {
    /// The peer closed before sending a byte of it (a kept connection ending cleanly).
    Closed,
    /// The peer closed in the middle of it.
    Incomplete,
    /// It is longer than the limit.
    TooLarge,
    Io(std::io::Error),
}

/// Reads until `buf` (which may already hold bytes read earlier) holds a whole head, ending
/// in an empty line, of at most `max` bytes; returns its length. Bytes after it stay in
/// `buf`.
pub async fn read_head<R: AsyncRead + Unpin>(
    io: &mut R,
    buf: &mut Vec<u8>,
    max: usize,
) -> Result<usize, HeadError> {
    let mut searched: usize = 0;
    loop {
        if let Some(at) = find(&buf[searched.saturating_sub(3)..], b"\r\n\r\n") {
            return Ok(searched.saturating_sub(3) + at + 4);
        }
        searched = buf.len();
        if buf.len() >= max {
            return Err(HeadError::TooLarge);
        }
        if read_more(io, buf, max - buf.len())
            .await
            .map_err(HeadError::Io)?
            == 0
        {
            return Err(if buf.is_empty() {
                HeadError::Closed
            } else {
                HeadError::Incomplete
            });
        }
    }
}

/// Appends at most `limit` (and at most 16 KiB) bytes read from `io`; how many.
async fn read_more<R: AsyncRead + Unpin>(
    io: &mut R,
    buf: &mut Vec<u8>,
    limit: usize,
) -> std::io::Result<usize> {
    let start = buf.len();
    buf.resize(start + limit.min(16 << 10), 0);
    let n = io.read(&mut buf[start..]).await;
    buf.truncate(start + *n.as_ref().unwrap_or(&0));
    n
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// A parsed head: the three parts of its start line and its headers.
#[derive(Debug)]
pub struct Head {
    /// Method, target, version for a request; version, status code, reason for a response.
    pub start: [String; 3],
    pub headers: HeaderMap,
}

/// Parses a head (as [`read_head`] delimited it). Lines folded onto the next (obsolete
/// since RFC 7230) and malformed names or values are refused.
pub fn parse_head(head: &[u8]) -> Result<Head, &'static str> {
    let text = std::str::from_utf8(head).map_err(|_| "the head is not text")?;
    let mut lines = text.strip_suffix("\r\n\r\n").unwrap_or(text).split("\r\n");
    let mut start = lines.next().unwrap_or_default().splitn(3, ' ');
    let mut part = || {
        start
            .next()
            .map(str::to_owned)
            .ok_or("a malformed start line")
    };
    let start = [part()?, part()?, part().unwrap_or_default()];
    let mut headers = HeaderMap::new();
    for line in lines {
        if line.starts_with([' ', '\t']) {
            return Err("a folded header line");
        }
        let (name, value) = line
            .split_once(':')
            .ok_or("a header line without a colon")?;
        let name =
            HeaderName::from_bytes(name.as_bytes()).map_err(|_| "a malformed header name")?;
        let value = HeaderValue::from_str(value.trim_matches([' ', '\t']))
            .map_err(|_| "a malformed header value")?;
        headers.append(name, value);
    }
    Ok(Head { start, headers })
}

/// How a message's body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Length {
    Exactly(u64),
    Chunked,
}

/// The body length its headers give (two different Content-Lengths are refused).
pub fn body_length(headers: &HeaderMap) -> Result<Option<Length>, &'static str> {
    if let Some(te) = headers.get(http::header::TRANSFER_ENCODING) {
        let chunked = te
            .to_str()
            .ok()
            .and_then(|v| v.rsplit(',').next())
            .is_some_and(|last| last.trim().eq_ignore_ascii_case("chunked"));
        return if chunked {
            Ok(Some(Length::Chunked))
        } else {
            Err("a transfer coding other than chunked")
        };
    }
    let mut lengths = headers.get_all(http::header::CONTENT_LENGTH).iter();
    let Some(first) = lengths.next() else {
        return Ok(None);
    };
    if lengths.any(|other| other != first) {
        return Err("conflicting Content-Length headers");
    }
    first
        .to_str()
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .map(|n| Some(Length::Exactly(n)))
        .ok_or("a malformed Content-Length")
}

/// Whether the connection may carry another message after this one: HTTP/1.1 unless
/// `Connection: close`, HTTP/1.0 only with `Connection: keep-alive`.
pub fn keeps_alive(version: &str, headers: &HeaderMap) -> bool {
    let has = |token: &str| {
        headers
            .get_all(http::header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    };
    match version {
        "HTTP/1.1" => !has("close"),
        _ => has("keep-alive"),
    }
}

/// Reads a body of `length` into a new buffer, starting with what `buf` holds already
/// (which is consumed); more than `max` bytes is an error.
pub async fn read_body<R: AsyncRead + Unpin>(
    io: &mut R,
    buf: &mut Vec<u8>,
    length: Length,
    max: usize,
) -> Result<Vec<u8>, &'static str> {
    const TOO_LARGE: &str = "the body is larger than allowed";
    const CLOSED: &str = "the connection closed inside the body";
    let mut body = Vec::new();
    match length {
        Length::Exactly(n) => {
            let n = usize::try_from(n).map_err(|_| TOO_LARGE)?;
            if n > max {
                return Err(TOO_LARGE);
            }
            while buf.len() < n {
                if read_more(io, buf, n - buf.len())
                    .await
                    .map_err(|_| CLOSED)?
                    == 0
                {
                    return Err(CLOSED);
                }
            }
            body.extend(buf.drain(..n));
        }
        Length::Chunked => loop {
            let line = read_line(io, buf).await?;
            let size = line.split(';').next().unwrap_or_default().trim();
            let size = usize::from_str_radix(size, 16).map_err(|_| "a malformed chunk size")?;
            if size == 0 {
                // Trailers, up to the empty line.
                while !read_line(io, buf).await?.is_empty() {}
                return Ok(body);
            }
            if body.len() + size > max {
                return Err(TOO_LARGE);
            }
            while buf.len() < size + 2 {
                if read_more(io, buf, size + 2 - buf.len())
                    .await
                    .map_err(|_| CLOSED)?
                    == 0
                {
                    return Err(CLOSED);
                }
            }
            body.extend_from_slice(&buf[..size]);
            buf.drain(..size + 2);
        },
    }
    Ok(body)
}

/// One line (of a chunked body's framing) without its CRLF, at most 4 KiB.
async fn read_line<R: AsyncRead + Unpin>(
    io: &mut R,
    buf: &mut Vec<u8>,
) -> Result<String, &'static str> {
    loop {
        if let Some(at) = find(buf, b"\r\n") {
            let line = String::from_utf8_lossy(&buf[..at]).into_owned();
            buf.drain(..at + 2);
            return Ok(line);
        }
        if buf.len() > 4096 {
            return Err("a chunk line is too long");
        }
        if read_more(io, buf, 4096)
            .await
            .map_err(|_| "the connection closed")?
            == 0
        {
            return Err("the connection closed inside the body");
        }
    }
}

/// Writes a head: the start line, the headers, Content-Length, and the empty line.
pub fn write_head(out: &mut Vec<u8>, start: &str, headers: &HeaderMap, content_length: usize) {
    out.extend_from_slice(start.as_bytes());
    out.extend_from_slice(b"\r\n");
    for (name, value) in headers {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"content-length: ");
    out.extend_from_slice(content_length.to_string().as_bytes());
    out.extend_from_slice(b"\r\n\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn head_of(mut input: &[u8], max: usize) -> (Result<usize, HeadError>, Vec<u8>) {
        let mut buf = Vec::new();
        let r = read_head(&mut input, &mut buf, max).await;
        (r, buf)
    }

    /// A head is found across reads, what follows it stays in the buffer, and a head over
    /// the limit, cut short or absent says so.
    #[tokio::test]
    async fn heads_are_bounded() {
        let (n, buf) = head_of(b"GET / HTTP/1.1\r\nhost: x\r\n\r\nNEXT", 1024).await;
        let n = n.unwrap();
        assert_eq!(&buf[n..], b"NEXT");
        let head = parse_head(&buf[..n]).unwrap();
        assert_eq!(head.start, ["GET", "/", "HTTP/1.1"]);
        assert_eq!(head.headers["host"], "x");
        assert!(matches!(
            head_of(&[b'a'; 5000], 1024).await.0,
            Err(HeadError::TooLarge)
        ));
        assert!(matches!(
            head_of(b"GET / HTTP/1.1\r\n", 1024).await.0,
            Err(HeadError::Incomplete)
        ));
        assert!(matches!(head_of(b"", 1024).await.0, Err(HeadError::Closed)));
    }

    /// Malformed heads are refused: folded lines, no colon, bad names.
    #[test]
    fn malformed_heads() {
        for bad in [
            &b"GET / HTTP/1.1\r\nx: 1\r\n  folded\r\n\r\n"[..],
            b"GET / HTTP/1.1\r\nno colon\r\n\r\n",
            b"GET / HTTP/1.1\r\nbad name: 1\r\n\r\n",
            b"GET\r\n\r\n",
        ] {
            assert!(parse_head(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
        let head = parse_head(b"HTTP/1.1 204 No Content\r\n\r\n").unwrap();
        assert_eq!(head.start, ["HTTP/1.1", "204", "No Content"]);
    }

    /// Bodies by Content-Length and chunked (with an extension and a trailer), each within
    /// the limit.
    #[tokio::test]
    async fn bodies() {
        let mut buf = b"hel".to_vec();
        let mut rest: &[u8] = b"lo, and more";
        let body = read_body(&mut rest, &mut buf, Length::Exactly(5), 100).await;
        assert_eq!(body.unwrap(), b"hello");
        let mut buf = Vec::new();
        let mut chunked: &[u8] = b"4;x=y\r\nWiki\r\n5\r\npedia\r\n0\r\nx-t: 1\r\n\r\n";
        let body = read_body(&mut chunked, &mut buf, Length::Chunked, 100).await;
        assert_eq!(body.unwrap(), b"Wikipedia");
        let mut buf = Vec::new();
        let mut big: &[u8] = b"ff\r\n";
        assert!(
            read_body(&mut big, &mut buf, Length::Chunked, 100)
                .await
                .is_err()
        );
        assert!(
            read_body(
                &mut &b""[..],
                &mut Vec::new(),
                Length::Exactly(1 << 40),
                100
            )
            .await
            .is_err()
        );
    }

    /// Lengths and keep-alive follow the headers and the version.
    #[test]
    fn lengths_and_keep_alive() {
        let head = |text: &str| parse_head(text.as_bytes()).unwrap().headers;
        let h = head("X / HTTP/1.1\r\ncontent-length: 7\r\n\r\n");
        assert_eq!(body_length(&h), Ok(Some(Length::Exactly(7))));
        let h = head("X / HTTP/1.1\r\ntransfer-encoding: gzip, chunked\r\n\r\n");
        assert_eq!(body_length(&h), Ok(Some(Length::Chunked)));
        let h = head("X / HTTP/1.1\r\ncontent-length: 7\r\ncontent-length: 8\r\n\r\n");
        assert!(body_length(&h).is_err());
        assert_eq!(body_length(&HeaderMap::new()), Ok(None));
        assert!(keeps_alive("HTTP/1.1", &HeaderMap::new()));
        assert!(!keeps_alive(
            "HTTP/1.1",
            &head("X / Y\r\nconnection: close\r\n\r\n")
        ));
        assert!(!keeps_alive("HTTP/1.0", &HeaderMap::new()));
        assert!(keeps_alive(
            "HTTP/1.0",
            &head("X / Y\r\nconnection: Keep-Alive\r\n\r\n")
        ));
    }
}
