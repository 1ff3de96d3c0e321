//! `Config::parse` on arbitrary text: never panics; an error names the file first and is
//! one line (it goes to the journal and to `--check-config` as one message); a text that
//! parses gives the same config when parsed again.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vitals::config::Config;
use vitals_fuzz::CONFIG_ORIGIN;

fuzz_target!(|data: &[u8]| {
    // A config file that is not UTF-8 is refused by the read, before parsing.
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match Config::parse(CONFIG_ORIGIN, text) {
        Ok(config) => {
            let again =
                Config::parse(CONFIG_ORIGIN, text).expect("parsed once, fails the second time");
            assert_eq!(config, again, "the same text parsed to two configs");
        }
        Err(err) => {
            let message = err.to_string();
            assert!(
                message.starts_with(CONFIG_ORIGIN),
                "the error does not start with the file name: {message:?}"
            );
            assert!(
                !message.contains('\n'),
                "the error is more than one line: {message:?}"
            );
        }
    }
});
