//! node_exporter's textfile collector: the metrics other tools on the device write as
//! `*.prom` files (the Prometheus text format 0.0.4) into one directory, served with ours.
//!
//! Why a parser of our own: the Rust crates that read the text format are either lenient
//! (prometheus-parse skips lines it does not understand, where node_exporter refuses the
//! file) or bring a parser generator and a date library for a few hundred lines of input.
//! This one follows node_exporter's (expfmt's TextParser) rules: HELP and TYPE once per
//! family and TYPE before its samples, escapes `\\`, `\"` and `\n` only, a histogram's
//! `_bucket` needs `le` and a summary's quantiles `quantile`, and no timestamps (node_exporter
//! refuses client-side timestamps). It is fuzzed (fuzz/fuzz_targets/textfile.rs).
//!
//! Bad files are handled as node_exporter handles them: a file that does not parse, cannot
//! be read, is too large, or repeats a series is skipped whole, node_textfile_scrape_error
//! is 1 and the reason is logged (once per change of the file); the other files are still
//! served, each with node_textfile_mtime_seconds. Bounded at the door: at most
//! [`MAX_FILES`] files of at most [`MAX_FILE_BYTES`] each. A file is parsed again only when
//! its size or mtime changes.

use std::{
    fs,
    io::Read,
    path::{Path, PathBuf},
    sync::Arc,
    time::UNIX_EPOCH,
};

use tracing::warn;

/// Files read from the directory (in name order); more are an error.
pub const MAX_FILES: usize = 128;
/// A larger file is an error, not read.
pub const MAX_FILE_BYTES: u64 = 1 << 20;

/// A family's type, as its TYPE line gives it (untyped without one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Untyped,
    Histogram,
    Summary,
}

/// One sample: the suffix it adds to its family's name (`_bucket`, `_sum`, `_count`, or
/// nothing), its labels in file order, and its value.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub suffix: &'static str,
    pub labels: Vec<(String, String)>,
    pub value: f64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Family {
    pub name: String,
    pub help: String,
    pub kind: Kind,
    pub samples: Vec<Sample>,
}

/// Why a file was refused: its line and what is wrong there.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("line {line}: {reason}")]
pub struct ParseError {
    pub line: usize,
    pub reason: String,
}

/// A series already seen: its family's index, suffix and labels.
type Series = (usize, &'static str, Vec<(String, String)>);

/// The families of a text-format file, in the order first named; samples of a family
/// stay in file order.
pub fn parse(text: &str) -> Result<Vec<Family>, ParseError> {
    let mut families: Vec<Family> = Vec::new();
    // Per family: HELP seen, TYPE seen, samples seen.
    let mut seen: Vec<(bool, bool)> = Vec::new();
    // To find a series written twice.
    let mut series: Vec<Series> = Vec::new();
    for (n, line) in text.split('\n').enumerate() {
        let err = |reason: String| ParseError {
            line: n + 1,
            reason,
        };
        let trimmed = line.trim_start_matches([' ', '\t']);
        if trimmed.is_empty() {
            continue;
        }
        if let Some(comment) = trimmed.strip_prefix('#') {
            let comment = comment.trim_start_matches([' ', '\t']);
            let (keyword, rest) = split_word(comment);
            if keyword != "HELP" && keyword != "TYPE" {
                continue;
            }
            let (name, rest) = split_word(rest);
            if !is_metric_name(name) {
                return Err(err(format!(
                    "{keyword} for an invalid metric name {name:?}"
                )));
            }
            let index = family_index(&mut families, &mut seen, name);
            if keyword == "HELP" {
                if seen[index].0 {
                    return Err(err(format!("second HELP line for {name}")));
                }
                seen[index].0 = true;
                families[index].help = unescape_help(rest).map_err(err)?;
            } else {
                if seen[index].1 {
                    return Err(err(format!("second TYPE line for {name}")));
                }
                if !families[index].samples.is_empty() {
                    return Err(err(format!("TYPE line for {name} after its samples")));
                }
                seen[index].1 = true;
                families[index].kind = match rest.trim_end_matches([' ', '\t']) {
                    "counter" => Kind::Counter,
                    "gauge" => Kind::Gauge,
                    "untyped" => Kind::Untyped,
                    "histogram" => Kind::Histogram,
                    "summary" => Kind::Summary,
                    other => return Err(err(format!("unknown type {other:?} for {name}"))),
                };
            }
            continue;
        }
        let (name, labels, value) = parse_sample(trimmed).map_err(err)?;
        // A _bucket, _sum or _count sample belongs to the histogram or summary it extends.
        let (index, suffix) = match ["_bucket", "_sum", "_count"].iter().find_map(|suffix| {
            let base = name.strip_suffix(suffix)?;
            let i = families.iter().position(|f| f.name == base)?;
            let fits = match families[i].kind {
                Kind::Histogram => true,
                Kind::Summary => *suffix != "_bucket",
                _ => false,
            };
            fits.then_some((i, *suffix))
        }) {
            Some(found) => found,
            None => (family_index(&mut families, &mut seen, name), ""),
        };
        let family = &families[index];
        let needs = match (family.kind, suffix) {
            (Kind::Histogram, "_bucket") => Some("le"),
            (Kind::Summary, "") => Some("quantile"),
            (Kind::Histogram, "") => {
                return Err(err(format!(
                    "{name} is a histogram: its samples are _bucket, _sum and _count"
                )));
            }
            _ => None,
        };
        if let Some(label) = needs
            && !labels.iter().any(|(k, _)| k == label)
        {
            return Err(err(format!("{name}{suffix} needs a {label} label")));
        }
        let mut key = labels.clone();
        key.sort();
        if series
            .iter()
            .any(|(i, s, l)| *i == index && *s == suffix && *l == key)
        {
            return Err(err(format!("{name} repeats a series")));
        }
        series.push((index, suffix, key));
        families[index].samples.push(Sample {
            suffix,
            labels,
            value,
        });
    }
    families.retain(|f| !f.samples.is_empty());
    Ok(families)
}

fn family_index(families: &mut Vec<Family>, seen: &mut Vec<(bool, bool)>, name: &str) -> usize {
    match families.iter().position(|f| f.name == name) {
        Some(i) => i,
        None => {
            families.push(Family {
                name: name.to_owned(),
                help: String::new(),
                kind: Kind::Untyped,
                samples: Vec::new(),
            });
            seen.push((false, false));
            families.len() - 1
        }
    }
}

/// The first whitespace-separated word and what follows it (leading blanks removed).
fn split_word(text: &str) -> (&str, &str) {
    let end = text.find([' ', '\t']).unwrap_or(text.len());
    (&text[..end], text[end..].trim_start_matches([' ', '\t']))
}

fn is_metric_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn is_label_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// HELP text: `\\` and `\n` are escapes; any other backslash stays as it is.
fn unescape_help(text: &str) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('\\') => out.push('\\'),
            Some('n') => out.push('\n'),
            Some(other) => {
                out.push('\\');
                out.push(other);
            }
            None => out.push('\\'),
        }
    }
    Ok(out)
}

type Parsed<'a> = (&'a str, Vec<(String, String)>, f64);

/// `name{label="value",...} value` (no timestamp).
fn parse_sample(line: &str) -> Result<Parsed<'_>, String> {
    let end = line
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
        .unwrap_or(line.len());
    let (name, mut rest) = line.split_at(end);
    if !is_metric_name(name) {
        return Err(format!("invalid metric name in {:?}", truncate(line)));
    }
    let mut labels: Vec<(String, String)> = Vec::new();
    rest = rest.trim_start_matches([' ', '\t']);
    if let Some(inner) = rest.strip_prefix('{') {
        rest = inner;
        loop {
            rest = rest.trim_start_matches([' ', '\t']);
            if let Some(after) = rest.strip_prefix('}') {
                rest = after;
                break;
            }
            let end = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(rest.len());
            let (label, after) = rest.split_at(end);
            if !is_label_name(label) {
                return Err(format!("invalid label name in {:?}", truncate(line)));
            }
            let after = after.trim_start_matches([' ', '\t']);
            let Some(after) = after.strip_prefix("=\"") else {
                return Err(format!("expected =\" after label {label}"));
            };
            let (value, after) = label_value(after)?;
            if labels.iter().any(|(k, _)| k == label) {
                return Err(format!("label {label} twice in one sample"));
            }
            labels.push((label.to_owned(), value));
            rest = after.trim_start_matches([' ', '\t']);
            if let Some(after) = rest.strip_prefix(',') {
                rest = after;
            } else if !rest.starts_with('}') {
                return Err(format!("expected , or }} in {:?}", truncate(line)));
            }
        }
    }
    let mut words = rest.split([' ', '\t']).filter(|w| !w.is_empty());
    let Some(value) = words.next() else {
        return Err(format!("no value in {:?}", truncate(line)));
    };
    let value = parse_value(value).ok_or_else(|| format!("invalid value {:?}", truncate(value)))?;
    if words.next().is_some() {
        return Err(
            "client-side timestamps are not supported (node_exporter refuses them too)".into(),
        );
    }
    Ok((name, labels, value))
}

/// A quoted label value up to its closing quote: its unescaped text and what follows.
fn label_value(text: &str) -> Result<(String, &str), String> {
    let mut out = String::new();
    let mut chars = text.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return Ok((out, &text[i + 1..])),
            '\\' => match chars.next() {
                Some((_, '\\')) => out.push('\\'),
                Some((_, '"')) => out.push('"'),
                Some((_, 'n')) => out.push('\n'),
                other => {
                    return Err(format!(
                        "invalid escape \\{} in a label value",
                        other.map_or(String::new(), |(_, c)| c.to_string())
                    ));
                }
            },
            c => out.push(c),
        }
    }
    Err("a label value is not closed".into())
}

/// Go's ParseFloat's spellings: numbers, NaN, and infinities with or without a sign.
fn parse_value(text: &str) -> Option<f64> {
    match text {
        "NaN" => Some(f64::NAN),
        "+Inf" | "Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        // Rust also reads "inf", "infinity" and "nan" in any case; Go reads those too.
        _ => text.parse().ok(),
    }
}

fn truncate(text: &str) -> &str {
    match text.char_indices().nth(80) {
        Some((i, _)) => &text[..i],
        None => text,
    }
}

/// What the directory held at the last read: the families of every file that parsed, each
/// file's mtime, and whether any file could not be used.
#[derive(Debug, Default)]
pub struct Collected {
    pub families: Vec<Family>,
    /// (file name, mtime in Unix seconds) of every file served.
    pub mtimes: Vec<(String, f64)>,
    pub error: bool,
}

/// A file as last read: its size and mtime, and what it gave.
struct Cached {
    name: String,
    len: u64,
    mtime: f64,
    parsed: Result<Vec<Family>, String>,
}

/// The collector: the directory and what each file gave when last changed.
pub struct Textfile {
    dir: Option<PathBuf>,
    files: Vec<Cached>,
    dir_error: bool,
    collected: Arc<Collected>,
}

impl Textfile {
    pub fn new(dir: Option<PathBuf>) -> Textfile {
        Textfile {
            dir,
            files: Vec::new(),
            dir_error: false,
            collected: Arc::default(),
        }
    }

    /// The directory's metrics now; files whose size and mtime did not change are not
    /// read again. `None` when no directory is configured.
    pub fn read(&mut self) -> Option<Arc<Collected>> {
        let dir = self.dir.clone()?;
        let mut listed: Vec<(String, u64, f64)> = Vec::new();
        let mut error = false;
        match fs::read_dir(&dir) {
            Ok(entries) => {
                for entry in entries.filter_map(Result::ok) {
                    let Ok(name) = entry.file_name().into_string() else {
                        continue;
                    };
                    if !name.ends_with(".prom") {
                        continue;
                    }
                    match entry.metadata() {
                        Ok(meta) if meta.is_file() => {
                            let mtime = meta
                                .modified()
                                .ok()
                                .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                                .map_or(0.0, |d| d.as_secs_f64());
                            listed.push((name, meta.len(), mtime));
                        }
                        _ => {}
                    }
                }
                if self.dir_error {
                    self.dir_error = false;
                }
            }
            Err(e) => {
                if !self.dir_error {
                    warn!(dir = %dir.display(), "textfile collector: reading the directory: {e}");
                    self.dir_error = true;
                }
                error = true;
            }
        }
        listed.sort_by(|a, b| a.0.cmp(&b.0));
        if listed.len() > MAX_FILES {
            warn!(dir = %dir.display(), files = listed.len(), "textfile collector: more than {MAX_FILES} files; the rest are not read");
            listed.truncate(MAX_FILES);
            error = true;
        }
        let unchanged = listed.len() == self.files.len()
            && listed
                .iter()
                .zip(&self.files)
                .all(|((n, l, m), c)| *n == c.name && *l == c.len && *m == c.mtime);
        if unchanged && error == self.collected.error {
            return Some(self.collected.clone());
        }
        let mut files = Vec::with_capacity(listed.len());
        for (name, len, mtime) in listed {
            if let Some(i) = self
                .files
                .iter()
                .position(|c| c.name == name && c.len == len && c.mtime == mtime)
            {
                files.push(self.files.swap_remove(i));
                continue;
            }
            let parsed = read_file(&dir.join(&name), len)
                .and_then(|text| parse(&text).map_err(|e| format!("{e}")));
            if let Err(reason) = &parsed {
                warn!(file = %dir.join(&name).display(), "textfile collector: skipping the file: {reason}");
            }
            files.push(Cached {
                name,
                len,
                mtime,
                parsed,
            });
        }
        self.files = files;
        self.collected = Arc::new(merge(&self.files, error));
        Some(self.collected.clone())
    }
}

fn read_file(path: &Path, len: u64) -> Result<String, String> {
    if len > MAX_FILE_BYTES {
        return Err(format!("{len} bytes, over the {MAX_FILE_BYTES}-byte limit"));
    }
    let mut text = String::new();
    fs::File::open(path)
        .and_then(|f| f.take(MAX_FILE_BYTES + 1).read_to_string(&mut text))
        .map_err(|e| format!("reading it: {e}"))?;
    if text.len() as u64 > MAX_FILE_BYTES {
        return Err(format!("over the {MAX_FILE_BYTES}-byte limit"));
    }
    Ok(text)
}

/// Every parsed file's families together: a family named in two files is one family if
/// its type agrees (the first file's HELP), and a file that disagrees on a type or repeats
/// another file's series is refused whole, as if it had not parsed.
fn merge(files: &[Cached], mut error: bool) -> Collected {
    let mut out = Collected::default();
    for file in files {
        let Ok(families) = &file.parsed else {
            error = true;
            continue;
        };
        let conflict = families.iter().find_map(|f| {
            let other = out.families.iter().find(|o| o.name == f.name)?;
            if other.kind != f.kind {
                return Some(format!("{} is a {:?} in another file", f.name, other.kind));
            }
            f.samples
                .iter()
                .any(|s| {
                    other
                        .samples
                        .iter()
                        .any(|o| o.suffix == s.suffix && same_labels(&o.labels, &s.labels))
                })
                .then(|| format!("{} repeats a series of another file", f.name))
        });
        if let Some(reason) = conflict {
            warn!(file = %file.name, "textfile collector: skipping the file: {reason}");
            error = true;
            continue;
        }
        for f in families {
            match out.families.iter_mut().find(|o| o.name == f.name) {
                Some(o) => o.samples.extend(f.samples.iter().cloned()),
                None => out.families.push(f.clone()),
            }
        }
        out.mtimes.push((file.name.clone(), file.mtime));
    }
    out.error = error;
    out
}

fn same_labels(a: &[(String, String)], b: &[(String, String)]) -> bool {
    a.len() == b.len() && a.iter().all(|l| b.contains(l))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// HELP, TYPE and samples of each type parse, with escapes, special values, histograms'
    /// buckets and summaries' quantiles under their family.
    #[test]
    fn parses_the_text_format() {
        let text = "# HELP apt_upgrades_pending Apt packages pending updates by origin.\n\
                    # TYPE apt_upgrades_pending gauge\n\
                    apt_upgrades_pending{arch=\"all\",origin=\"Debian:bookworm/stable\"} 3\n\
                    # a comment\n\n\
                    # TYPE backup_duration_seconds histogram\n\
                    backup_duration_seconds_bucket{le=\"1\"} 0\n\
                    backup_duration_seconds_bucket{le=\"+Inf\"} 2\n\
                    backup_duration_seconds_sum 3.5\n\
                    backup_duration_seconds_count 2\n\
                    # TYPE rpc_seconds summary\n\
                    rpc_seconds{quantile=\"0.5\"} 0.25\n\
                    rpc_seconds_sum 1\n\
                    rpc_seconds_count 4\n\
                    smart_ok{disk=\"a \\\"b\\\"\\\\c\\nd\"} NaN\n\
                    temp -Inf\n";
        let families = parse(text).unwrap();
        let names: Vec<_> = families.iter().map(|f| (f.name.as_str(), f.kind)).collect();
        assert_eq!(
            names,
            [
                ("apt_upgrades_pending", Kind::Gauge),
                ("backup_duration_seconds", Kind::Histogram),
                ("rpc_seconds", Kind::Summary),
                ("smart_ok", Kind::Untyped),
                ("temp", Kind::Untyped),
            ]
        );
        assert_eq!(families[0].help, "Apt packages pending updates by origin.");
        assert_eq!(families[1].samples.len(), 4);
        assert_eq!(families[1].samples[2].suffix, "_sum");
        assert_eq!(families[3].samples[0].labels[0].1, "a \"b\"\\c\nd");
        assert!(families[3].samples[0].value.is_nan());
        assert_eq!(families[4].samples[0].value, f64::NEG_INFINITY);
    }

    /// What node_exporter refuses is refused, with the line: timestamps, a second TYPE,
    /// TYPE after samples, bad names and escapes, a bucket without le, repeated series,
    /// an unknown type.
    #[test]
    fn refuses_what_node_exporter_refuses() {
        for (text, line) in [
            ("a 1 1700000000000\n", 1),
            ("# TYPE a gauge\n# TYPE a gauge\n", 2),
            ("a 1\n# TYPE a gauge\n", 2),
            ("1a 1\n", 1),
            ("a{b=\"\\x\"} 1\n", 1),
            ("# TYPE h histogram\nh_bucket 1\n", 2),
            ("a{b=\"1\"} 1\na{b=\"1\"} 2\n", 2),
            ("# TYPE a gaugeish\n", 1),
            ("a{b=\"1\",b=\"2\"} 1\n", 1),
            ("a{b=\"1\"\n", 1),
            ("a one\n", 1),
        ] {
            let err = parse(text).unwrap_err();
            assert_eq!(err.line, line, "{text:?}: {err}");
        }
    }

    /// A directory of files: good ones served with their mtimes, a bad one and an oversize
    /// one skipped and counted as an error, a type conflict between files refused; a file
    /// is parsed again only when it changes.
    #[test]
    fn directory_is_read_as_node_exporter_reads_it() {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, text: &str| fs::write(dir.path().join(name), text).unwrap();
        write("a.prom", "# TYPE x gauge\nx{f=\"a\"} 1\n");
        write("b.prom", "# TYPE x gauge\nx{f=\"b\"} 2\n");
        write("ignored.txt", "garbage");
        let mut collector = Textfile::new(Some(dir.path().to_owned()));
        let first = collector.read().unwrap();
        assert!(!first.error);
        assert_eq!(first.families.len(), 1, "{first:?}");
        assert_eq!(first.families[0].samples.len(), 2);
        assert_eq!(first.mtimes.len(), 2);
        write("c.prom", "not a metric line at all{\n");
        write("d.prom", &"y 1\n".repeat(300_000));
        let second = collector.read().unwrap();
        assert!(second.error);
        assert_eq!(second.mtimes.len(), 2);
        fs::remove_file(dir.path().join("c.prom")).unwrap();
        fs::remove_file(dir.path().join("d.prom")).unwrap();
        let third = collector.read().unwrap();
        assert!(!third.error);
        let again = collector.read().unwrap();
        assert!(
            Arc::ptr_eq(&third, &again),
            "unchanged files are not read again"
        );
        let missing = Textfile::new(Some(dir.path().join("nope"))).read().unwrap();
        assert!(missing.error);
        assert!(Textfile::new(None).read().is_none());
    }
}
