//! The unix-socket header-block rewriter (src/server/authority.rs) on arbitrary bytes from a
//! client: never panics, and gives h2 the same bytes (or the same refusal) however the input
//! is split into reads (the first bytes of the input choose the split).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&n, rest)) = data.split_first() else {
        return;
    };
    let (splits, bytes) = rest.split_at(usize::from(n).min(rest.len()).min(16));
    let pieces: Vec<usize> = splits.iter().map(|&b| usize::from(b)).collect();
    let whole = vitals::server::authority_rewritten(bytes, &[]);
    let split = vitals::server::authority_rewritten(bytes, &pieces);
    assert_eq!(whole, split, "a split changed what h2 reads");
});
