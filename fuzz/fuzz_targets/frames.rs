//! The HTTP/2 frame follower (src/server/frames.rs) on arbitrary bytes: never panics, and
//! finds the same frame headers however the bytes are split into reads (the first bytes of
//! the input choose the split), as TLS records and TCP segments split them.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&n, rest)) = data.split_first() else {
        return;
    };
    let (splits, bytes) = rest.split_at(usize::from(n).min(rest.len()).min(16));
    let pieces: Vec<usize> = splits.iter().map(|&b| usize::from(b)).collect();
    let whole = vitals::server::frame_headers(bytes, &[]);
    let split = vitals::server::frame_headers(bytes, &pieces);
    assert_eq!(whole, split, "a split changed the frames found");
    assert!(whole.len() <= bytes.len() / 9, "more frames than headers fit");
    for (_, _, stream) in whole {
        assert_eq!(stream & 0x8000_0000, 0, "the reserved bit is dropped");
    }
});
