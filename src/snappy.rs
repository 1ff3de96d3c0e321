//! Snappy's block format (not the framed one), compression only: what Prometheus
//! remote_write bodies are. A greedy single-pass matcher over 64 KiB fragments with a hash
//! table of 4-byte sequences, as the reference implementation does, without its skipping
//! heuristics; the output is valid snappy any decoder reads. Fewer than 200 lines instead
//! of a crate (docs/arm.md has the size).

/// Bytes compressed with one hash table; copies never reach back further than this, so
/// every offset fits the 2-byte copy.
const FRAGMENT: usize = 1 << 16;
const HASH_BITS: u32 = 14;

/// `input` in snappy's block format.
pub fn compress(input: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(input.len() / 2 + 16);
    varint(&mut out, input.len() as u64);
    let mut table = vec![0u32; 1 << HASH_BITS];
    for fragment in input.chunks(FRAGMENT) {
        table.fill(0);
        compress_fragment(fragment, &mut table, &mut out);
    }
    out
}

/// `n` as a little-endian base-128 varint (snappy's length prefix, and protobuf's).
pub fn varint(out: &mut Vec<u8>, mut n: u64) {
    while n >= 0x80 {
        out.push((n as u8) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

fn load32(data: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([data[at], data[at + 1], data[at + 2], data[at + 3]])
}

fn hash(v: u32) -> usize {
    (v.wrapping_mul(0x1e35_a7bd) >> (32 - HASH_BITS)) as usize
}

fn compress_fragment(data: &[u8], table: &mut [u32], out: &mut Vec<u8>) {
    let mut literal_start = 0;
    let mut i = 0;
    while i + 4 <= data.len() {
        let v = load32(data, i);
        let h = hash(v);
        let candidate = table[h] as usize;
        table[h] = i as u32;
        if candidate < i && load32(data, candidate) == v {
            literal(out, &data[literal_start..i]);
            let mut len = 4;
            while i + len < data.len() && data[candidate + len] == data[i + len] {
                len += 1;
            }
            copy(out, i - candidate, len);
            i += len;
            literal_start = i;
        } else {
            i += 1;
        }
    }
    literal(out, &data[literal_start..]);
}

fn literal(out: &mut Vec<u8>, bytes: &[u8]) {
    if bytes.is_empty() {
        return;
    }
    let n = bytes.len() - 1;
    if n < 60 {
        out.push((n as u8) << 2);
    } else {
        let width = (u32::BITS - (n as u32).leading_zeros()).div_ceil(8) as usize;
        out.push(((59 + width) as u8) << 2);
        out.extend_from_slice(&(n as u32).to_le_bytes()[..width]);
    }
    out.extend_from_slice(bytes);
}

/// A back-reference of `len` (at least 4) bytes `offset` (below 64 KiB) back.
fn copy(out: &mut Vec<u8>, offset: usize, mut len: usize) {
    while len >= 68 {
        copy2(out, offset, 64);
        len -= 64;
    }
    if len > 64 {
        copy2(out, offset, 60);
        len -= 60;
    }
    if len < 12 && offset < 2048 {
        out.push(1 | (((len - 4) as u8) << 2) | (((offset >> 8) as u8) << 5));
        out.push(offset as u8);
    } else {
        copy2(out, offset, len);
    }
}

fn copy2(out: &mut Vec<u8>, offset: usize, len: usize) {
    out.push(2 | (((len - 1) as u8) << 2));
    out.extend_from_slice(&(offset as u16).to_le_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A reference decoder of the block format, to check the encoder against.
    fn decompress(mut data: &[u8]) -> Vec<u8> {
        let mut len = 0u64;
        let mut shift = 0;
        loop {
            let b = data[0];
            data = &data[1..];
            len |= u64::from(b & 0x7f) << shift;
            shift += 7;
            if b < 0x80 {
                break;
            }
        }
        let mut out: Vec<u8> = Vec::with_capacity(len as usize);
        while !data.is_empty() {
            let tag = data[0];
            data = &data[1..];
            match tag & 3 {
                0 => {
                    let mut n = usize::from(tag >> 2);
                    if n >= 60 {
                        let width = n - 59;
                        let mut bytes = [0u8; 4];
                        bytes[..width].copy_from_slice(&data[..width]);
                        n = u32::from_le_bytes(bytes) as usize;
                        data = &data[width..];
                    }
                    out.extend_from_slice(&data[..=n]);
                    data = &data[n + 1..];
                }
                kind => {
                    let (len, offset) = match kind {
                        1 => {
                            let offset = (usize::from(tag >> 5) << 8) | usize::from(data[0]);
                            data = &data[1..];
                            (usize::from((tag >> 2) & 7) + 4, offset)
                        }
                        2 => {
                            let offset = usize::from(u16::from_le_bytes([data[0], data[1]]));
                            data = &data[2..];
                            (usize::from(tag >> 2) + 1, offset)
                        }
                        _ => panic!("4-byte offsets are never written"),
                    };
                    assert!(offset > 0 && offset <= out.len(), "offset {offset}");
                    for _ in 0..len {
                        out.push(out[out.len() - offset]);
                    }
                }
            }
        }
        assert_eq!(out.len() as u64, len);
        out
    }

    /// Empty, tiny, repetitive, random and multi-fragment inputs round-trip, and
    /// repetitive ones shrink.
    #[test]
    fn round_trips() {
        let mut random = vec![0u8; 70_000];
        fastrand::fill(&mut random);
        let repetitive: Vec<u8> = b"node_cpu_seconds_total{cpu=\"0\",mode=\"idle\"} "
            .iter()
            .copied()
            .cycle()
            .take(200_000)
            .collect();
        let mut mixed = repetitive[..1000].to_vec();
        mixed.extend_from_slice(&random[..5000]);
        mixed.extend_from_slice(&[7u8; 300]);
        for input in [&b""[..], b"a", b"abcd", &random, &repetitive, &mixed] {
            let compressed = compress(input);
            assert_eq!(decompress(&compressed), input, "{} bytes", input.len());
        }
        assert!(compress(&repetitive).len() < repetitive.len() / 10);
    }

    /// A known encoding: the format's own example of a literal then a copy.
    #[test]
    fn known_encoding() {
        // Length 8; a literal `a`; a 1-byte-offset copy (tag 01) of 7 bytes, 1 back.
        assert_eq!(compress(b"aaaaaaaa"), [8, 0, b'a', 1 | ((7 - 4) << 2), 1]);
    }
}
