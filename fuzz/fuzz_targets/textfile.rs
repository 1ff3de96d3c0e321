//! The textfile collector's parser (src/sampler/textfile.rs) on arbitrary text: never
//! panics, and what it accepts holds what the page writer relies on: valid metric and
//! label names, no family without samples, a histogram's buckets carrying `le`, no series
//! twice, and the same answer every time.
//!
//! Other tools on the device write these files; a malformed or hostile one must be refused
//! with a reason, never take the scrape down.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vitals::sampler::textfile::{Kind, parse};

fn valid_name(name: &str, colon: bool) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || (colon && c == ':'))
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || (colon && c == ':'))
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let parsed = parse(text);
    // Compared as debug text: a NaN sample (which the format allows) is never == itself.
    assert_eq!(
        format!("{:?}", parse(text)),
        format!("{parsed:?}"),
        "parse is not deterministic"
    );
    let Ok(families) = parsed else { return };
    for family in &families {
        assert!(valid_name(&family.name, true), "{:?}", family.name);
        assert!(!family.samples.is_empty(), "{} has no samples", family.name);
        let mut seen = Vec::new();
        for sample in &family.samples {
            for (label, _) in &sample.labels {
                assert!(valid_name(label, false), "{label:?}");
            }
            if family.kind == Kind::Histogram && sample.suffix == "_bucket" {
                assert!(sample.labels.iter().any(|(k, _)| k == "le"));
            }
            let mut key = sample.labels.clone();
            key.sort();
            assert!(!seen.contains(&(sample.suffix, key.clone())), "a series twice");
            seen.push((sample.suffix, key));
        }
    }
});
