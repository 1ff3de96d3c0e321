//! Prometheus remote_write 1.0 bodies: a `WriteRequest` (prost, generated from
//! proto/prometheus/, the specification's protobuf) in snappy's block format (not the
//! framed one). The `snap` crate does the compression: the reference implementation's
//! algorithm in pure Rust, with a decoder to check it against; prost encodes the messages
//! the gRPC services already use it for.

pub use crate::proto::prometheus::{Label, Sample, TimeSeries, WriteRequest};

/// `WriteRequest.timeseries`'s field number.
const TIMESERIES: u32 = 1;

/// Why a body could not be made.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Only an encoded request over snappy's 4 GiB block limit.
    #[error("remote_write body: {0}")]
    Compress(#[from] snap::Error),
}

/// A `WriteRequest` encoded one series at a time. A repeated field's encoding is its
/// elements', one after another, so the request is never held whole as messages: one
/// [`TimeSeries`] is filled and encoded per sample, its strings reused from one to the
/// next (as cheap as the hand-written encoder was; a whole `WriteRequest` of owned strings
/// cost about twice the CPU for a push's few hundred series).
pub struct Request {
    series: TimeSeries,
    out: Vec<u8>,
    count: u64,
}

impl Request {
    /// An empty request with room for `bytes` of encoding.
    pub fn with_capacity(bytes: usize) -> Request {
        Request {
            series: TimeSeries::default(),
            out: Vec::with_capacity(bytes),
            count: 0,
        }
    }

    /// Adds a series of one sample; `labels` as they are to be sent (sorted by name,
    /// `__name__` among them).
    pub fn push(&mut self, labels: &[(&str, &str)], value: f64, timestamp_ms: i64) {
        let series = &mut self.series;
        series.labels.resize_with(labels.len(), Label::default);
        for (label, (name, value)) in series.labels.iter_mut().zip(labels) {
            label.name.clear();
            label.name.push_str(name);
            label.value.clear();
            label.value.push_str(value);
        }
        series.samples.clear();
        series.samples.push(Sample {
            value,
            timestamp: timestamp_ms,
        });
        prost::encoding::message::encode(TIMESERIES, &*series, &mut self.out);
        self.count += 1;
    }

    /// How many series (each one sample) it holds.
    pub fn series(&self) -> u64 {
        self.count
    }

    /// How many bytes its encoding has so far, before compression.
    pub fn encoded_len(&self) -> usize {
        self.out.len()
    }

    /// The request in snappy's block format.
    pub fn body(&self) -> Result<Vec<u8>, Error> {
        compress(&self.out)
    }
}

fn compress(protobuf: &[u8]) -> Result<Vec<u8>, Error> {
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

    /// The wire shape the specification gives, byte for byte (what the hand-written
    /// encoder wrote): timeseries 1, labels 1 (name 1, value 2), samples 2 (value 1 as a
    /// double, timestamp 2 as a varint).
    #[test]
    fn the_specification_wire_shape() {
        let mut request = Request::with_capacity(0);
        request.push(&[("a", "b")], 1.0, 300);
        let mut sample = vec![0x09];
        sample.extend_from_slice(&1.0f64.to_le_bytes());
        sample.extend_from_slice(&[0x10, 0xac, 0x02]);
        let mut series = vec![
            0x0a,
            6,
            0x0a,
            1,
            b'a',
            0x12,
            1,
            b'b',
            0x12,
            sample.len() as u8,
        ];
        series.extend_from_slice(&sample);
        let mut expected = vec![0x0a, series.len() as u8];
        expected.extend_from_slice(&series);
        assert_eq!(request.out, expected);
    }

    /// Series pushed one by one, with fewer or more labels than the one before, decode
    /// from the body as one `WriteRequest` holding each as it was pushed.
    #[test]
    fn a_body_decodes_as_the_request() {
        let mut request = Request::with_capacity(0);
        request.push(&[("__name__", "up"), ("job", "a"), ("zone", "z")], 1.0, 5);
        request.push(&[("__name__", "up")], 0.0, 0);
        request.push(&[("__name__", "x"), ("k", "")], -2.5, -1);
        assert_eq!(request.series(), 3);
        let raw = decompress(&request.body().unwrap());
        let decoded = <WriteRequest as prost::Message>::decode(&raw[..]).unwrap();
        let series = |labels: &[(&str, &str)], value, timestamp| TimeSeries {
            labels: labels
                .iter()
                .map(|(name, value)| Label {
                    name: (*name).into(),
                    value: (*value).into(),
                })
                .collect(),
            samples: vec![Sample { value, timestamp }],
        };
        assert_eq!(
            decoded.timeseries,
            [
                series(&[("__name__", "up"), ("job", "a"), ("zone", "z")], 1.0, 5),
                series(&[("__name__", "up")], 0.0, 0),
                series(&[("__name__", "x"), ("k", "")], -2.5, -1),
            ]
        );
    }
}
