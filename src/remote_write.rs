//! Prometheus remote_write 1.0 bodies: the protobuf `WriteRequest` in snappy's block
//! format (not the framed one). The `snap` crate does the compression: it is the reference
//! implementation's algorithm in pure Rust (BurntSushi's port, with its hash-table skipping
//! heuristics), with a decoder to check it against, where the daemon had its own encoder.

/// Why a body could not be made.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Only an input over snappy's 4 GiB block limit.
    #[error("remote_write body: {0}")]
    Compress(#[from] snap::Error),
}

/// An encoded `WriteRequest` in snappy's block format.
pub fn compress(protobuf: &[u8]) -> Result<Vec<u8>, Error> {
    let mut body = snap::raw::Encoder::new().compress_vec(protobuf)?;
    // compress_vec sizes its buffer for the worst case (the input and a sixth more); a body
    // waits in the push buffer, which should hold its length only.
    body.shrink_to_fit();
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decompress(body: &[u8]) -> Vec<u8> {
        snap::raw::Decoder::new().decompress_vec(body).unwrap()
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
            let body = compress(input).unwrap();
            assert_eq!(decompress(&body), input, "{} bytes", input.len());
            assert_eq!(body.capacity(), body.len(), "no worst-case buffer kept");
        }
        assert!(compress(&repetitive).unwrap().len() < repetitive.len() / 10);
    }

    /// The block format, not the framed one: the uncompressed length as a varint, then
    /// the elements (here a short input's one literal: tag `(8 - 1) << 2`, the bytes); a
    /// framed stream would open with its `sNaPpY` chunk.
    #[test]
    fn block_format() {
        let mut expected = vec![8, 7 << 2];
        expected.extend_from_slice(b"aaaaaaaa");
        assert_eq!(compress(b"aaaaaaaa").unwrap(), expected);
        let long = vec![b'a'; 300];
        let body = compress(&long).unwrap();
        assert_eq!(body[..2], [0xac, 0x02], "300 as a varint");
        assert!(body.len() < 30, "{} bytes", body.len());
    }
}
