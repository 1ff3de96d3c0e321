//! The layers of a config, merged by the `config` crate (config-rs): built-in defaults (the
//! `Default`s in `raw.rs`), the main file, `vitalsd.d/*.toml` in lexical order, then
//! `VITALSD_*` environment variables. config-rs keeps the layer every value came from, so an
//! error can name the file (or "the environment") that set a bad key, and `--check-config`
//! can say where each setting came from.
//!
//! config-rs is fed through [`Layer`], a `config::Source` of our own, rather than its `File`
//! and `Environment` sources:
//! - config-rs reads every top-level key a source hands it as a path expression
//!   (rust-cli/config-rs#232): a quoted key `"x[1000000]" = 1` grows an array of a million
//!   entries and `"x[9223372036854775807]"` overflows. A [`Layer`] hands it one top-level
//!   key, [`ROOT`], and the file's keys below it, where config-rs takes keys literally: a
//!   quoted `"x[1]"` is one odd key that deserializing refuses, naming the file.
//! - TOML is parsed here by the `toml` crate, so a syntax error keeps its line and column.
//! - The environment's values stay text (config-rs's own `try_parsing` turns a label value
//!   `007` into `7`); the deserializer reads `"128"` as a number where one is wanted, and the
//!   three list keys are split on commas.
//!
//! Lists: a later layer replaces a list, except the grants, `auth.rules` and `auth.bearer`,
//! whose entries accumulate across the files in layer order: a drop-in adds grants and
//! cannot silently take away those of the main file or of an earlier drop-in.

use std::{
    fmt,
    path::{Path, PathBuf},
};

use ::config::{ConfigError, Map, Source, Value, ValueKind};
use serde::Deserialize;

use super::{DEFAULT_PATH, DROPIN_DIR, ENV_PREFIX, Error, Location, RawConfig};

/// Keys whose environment value is a comma-separated list.
const ENV_LIST_KEYS: &[&str] = &[
    "server.listen",
    "health.plaintext_listen",
    "health.disk_paths",
];

/// Lists whose entries accumulate across the layers instead of the last one winning.
pub(super) const ACCUMULATED: &[(&str, &str)] = &[("auth", "rules"), ("auth", "bearer")];

/// The longest string a config value may be (a path is at most 4096 bytes on Linux).
pub(super) const MAX_STRING: usize = 4096;

/// The most entries of each list, by its key with indices left out (`auth.rules[].methods`);
/// a list not named here has at most [`DEFAULT_LIST_LIMIT`]. config/vitalsd.toml documents
/// them beside their keys.
pub(super) const LIST_LIMITS: &[(&str, usize)] = &[
    ("server.listen", 16),
    ("health.plaintext_listen", 16),
    ("health.disk_paths", 64),
    ("tls.crl", 16),
    ("tls.issue.alt_names", 64),
    ("tls.issue.uri_sans", 64),
    ("tls.issue.ip_sans", 64),
    ("secrets.sources", 16),
    ("auth.public", 256),
    ("auth.audit", 256),
    ("auth.rules", 1024),
    ("auth.rules[].identities", 256),
    ("auth.rules[].methods", 256),
    ("auth.bearer", 64),
    ("auth.bearer[].methods", 256),
    ("auth.bearer[].tokens", 64),
];
const DEFAULT_LIST_LIMIT: usize = 64;

/// The most keys of the tables whose keys are the user's: `push.labels` (each series
/// carries them all, and receivers such as Mimir refuse series of more than 30 labels) and
/// a Vault source's `fields`.
pub(super) const KEYED_LIMITS: &[(&str, usize)] =
    &[("push.labels", 16), ("secrets.sources[].fields", 256)];

/// `key` with its indices left out: `auth.rules[3].methods` is `auth.rules[].methods`.
fn shape(key: &str) -> String {
    let mut out = String::with_capacity(key.len());
    let mut skipping = false;
    for c in key.chars() {
        match c {
            '[' => {
                skipping = true;
                out.push_str("[]");
            }
            ']' => skipping = false,
            _ if skipping => {}
            _ => out.push(c),
        }
    }
    out
}

/// The most entries the list at `key` may have.
fn limit(key: &str) -> usize {
    let shape = shape(key);
    LIST_LIMITS
        .iter()
        .find(|(k, _)| *k == shape)
        .map_or(DEFAULT_LIST_LIMIT, |(_, max)| *max)
}

/// The origin of every value set by a `VITALSD_*` variable.
const ENVIRONMENT: &str = "the environment";

/// The one top-level key each [`Layer`] gives config-rs; the config's own keys sit below it.
const ROOT: &str = "vitalsd";

/// One layer for config-rs: a table of values that remember where they came from.
#[derive(Debug, Clone)]
struct Layer(Map<String, Value>);

impl Source for Layer {
    fn clone_into_box(&self) -> Box<dyn Source + Send + Sync> {
        Box::new(self.clone())
    }

    fn collect(&self) -> Result<Map<String, Value>, ConfigError> {
        let mut top = Map::new();
        top.insert(
            ROOT.to_string(),
            Value::new(None, ValueKind::Table(self.0.clone())),
        );
        Ok(top)
    }
}

/// The merged layers, kept so that an error can say which layer a key came from.
pub(super) struct Layers {
    /// What config-rs merged.
    root: Value,
    /// The layers as they were merged (the accumulated lists as one layer of their own), for
    /// the origin of a key.
    layers: Vec<Layer>,
}

impl Layers {
    pub(super) fn read(location: &Location) -> Result<(Layers, Vec<PathBuf>), Error> {
        let mut layers = Vec::new();
        let mut files = Vec::new();
        match location {
            Location::Dev(dir) => {
                let mut tls = Map::new();
                for (key, file) in [
                    ("cert", "server.crt"),
                    ("key", "server.key"),
                    ("client_ca", "ca.crt"),
                ] {
                    let path = dir.join(file).display().to_string();
                    tls.insert(key.to_string(), Value::new(None, path));
                }
                let mut table = Map::new();
                table.insert("tls".to_string(), Value::new(None, tls));
                layers.push(Layer(table));
            }
            Location::Default | Location::File(_) => {
                let (main, required) = match location {
                    Location::File(path) => (path.clone(), true),
                    _ => (PathBuf::from(DEFAULT_PATH), false),
                };
                if required || main.exists() {
                    files.push(main.clone());
                }
                let dropins = main.parent().unwrap_or(Path::new(".")).join(DROPIN_DIR);
                files.extend(dropin_files(&dropins)?);
                if required && !main.is_file() {
                    return Err(Error::Parse {
                        origin: main.display().to_string(),
                        reason: "no such file".into(),
                    });
                }
            }
        }
        for file in &files {
            layers.push(read_toml(file)?);
        }
        let environment = environment(std::env::vars())?;
        Ok((Layers::merge(layers, Some(environment)), files))
    }

    /// Defaults, then one TOML text from `origin` (no files, no environment).
    pub(super) fn from_text(origin: &str, text: &str) -> Result<Layers, Error> {
        Ok(Layers::merge(vec![parse_toml(origin, text)?], None))
    }

    /// Merges the file layers in order, later ones winning, with the [`ACCUMULATED`] lists
    /// appended, then the environment.
    fn merge(mut layers: Vec<Layer>, environment: Option<Layer>) -> Layers {
        let mut accumulated: Map<String, Value> = Map::new();
        for layer in &mut layers {
            for (section, key) in ACCUMULATED {
                let Some(entries) = take_list(layer, section, key) else {
                    continue;
                };
                let list = accumulated
                    .entry(format!("{section}.{key}"))
                    .or_insert_with(|| Value::new(None, ValueKind::Array(Vec::new())));
                if let ValueKind::Array(list) = &mut list.kind {
                    list.extend(entries);
                }
            }
        }
        let mut builder = ::config::Config::builder();
        for layer in &layers {
            builder = builder.add_source(layer.clone());
        }
        let mut lists = Map::new();
        for (path, list) in accumulated {
            let (section, key) = path.split_once('.').unwrap_or_default();
            let table = lists
                .entry(section.to_string())
                .or_insert_with(|| Value::new(None, Map::<String, Value>::new()));
            if let ValueKind::Table(table) = &mut table.kind {
                table.insert(key.to_string(), list);
            }
        }
        layers.push(Layer(lists));
        builder = builder.add_source(layers[layers.len() - 1].clone());
        if let Some(environment) = environment {
            builder = builder.add_source(environment.clone());
            layers.push(environment);
        }
        // Our sources never fail to collect, and their one top-level key is a plain name.
        let root = builder
            .build()
            .ok()
            .and_then(|config| config.cache.into_table().ok())
            .and_then(|mut top| top.swap_remove(ROOT))
            .unwrap_or_else(|| Value::new(None, Map::<String, Value>::new()));
        Layers { root, layers }
    }

    /// Deserializes the merged layers, naming the key and its layer on error; first, every
    /// list and string is held to its [`limit`].
    pub(super) fn raw(&self) -> Result<RawConfig, Error> {
        self.within_limits(&self.root, &mut String::new())?;
        RawConfig::deserialize(self.root.clone()).map_err(|err| {
            let (key, reason) = describe(err);
            self.invalid(&key, reason)
        })
    }

    /// Checks `value` (at `key`) and everything under it against [`limit`] and
    /// [`MAX_STRING`].
    fn within_limits(&self, value: &Value, key: &mut String) -> Result<(), Error> {
        let over = |what: &str, n: usize, max: usize| {
            self.invalid(
                key,
                format!("{n} {what}; at most {max} (config/vitalsd.toml)"),
            )
        };
        match &value.kind {
            ValueKind::String(text) if text.len() > MAX_STRING => {
                Err(over("bytes", text.len(), MAX_STRING))
            }
            ValueKind::Array(items) => {
                let max = limit(key);
                if items.len() > max {
                    return Err(over("entries", items.len(), max));
                }
                for (i, item) in items.iter().enumerate() {
                    let len = key.len();
                    key.push_str(&format!("[{i}]"));
                    self.within_limits(item, key)?;
                    key.truncate(len);
                }
                Ok(())
            }
            ValueKind::Table(table) => {
                if let Some(max) = KEYED_LIMITS
                    .iter()
                    .find(|(k, _)| *k == shape(key))
                    .map(|(_, max)| *max)
                    && table.len() > max
                {
                    return Err(over("keys", table.len(), max));
                }
                for (name, child) in table {
                    let len = key.len();
                    if !key.is_empty() {
                        key.push('.');
                    }
                    key.push_str(name);
                    self.within_limits(child, key)?;
                    key.truncate(len);
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }

    /// Every value a layer set, with that layer: `(key, origin)` in key order, a list of
    /// tables entry by entry (`auth.rules[1]`). Built-in values are left out.
    pub(super) fn origins(&self) -> Vec<(String, String)> {
        fn walk(value: &Value, key: String, out: &mut Vec<(String, String)>) {
            match &value.kind {
                ValueKind::Table(table) => {
                    for (name, child) in table {
                        let key = match key.is_empty() {
                            true => name.clone(),
                            false => format!("{key}.{name}"),
                        };
                        walk(child, key, out);
                    }
                }
                ValueKind::Array(items)
                    if items
                        .iter()
                        .any(|item| matches!(item.kind, ValueKind::Table(_))) =>
                {
                    for (i, item) in items.iter().enumerate() {
                        if let Some(origin) = item.origin() {
                            out.push((format!("{key}[{i}]"), origin.to_string()));
                        }
                    }
                }
                _ => {
                    if let Some(origin) = value.origin() {
                        out.push((key, origin.to_string()));
                    }
                }
            }
        }
        let mut out = Vec::new();
        walk(&self.root, String::new(), &mut out);
        out.sort();
        out
    }

    /// The layer a key's value came from: a file path, "the environment" or "built-in
    /// defaults". The last layer that has the whole key set it; config-rs's merged tree
    /// does not keep the origin of the tables it merged (an empty `[r]`, say).
    fn origin(&self, key: &str) -> String {
        let whole = self
            .layers
            .iter()
            .rev()
            .find_map(|layer| match find(&layer.0, key) {
                (Some(value), true) => Some(value),
                _ => None,
            });
        let found = whole.or_else(|| match as_table(&self.root) {
            Some(root) => find(root, key).0,
            None => None,
        });
        found
            .and_then(Value::origin)
            .unwrap_or("built-in defaults")
            .to_string()
    }

    pub(super) fn invalid(&self, key: &str, reason: impl Into<String>) -> Error {
        Error::Invalid {
            origin: self.origin(key),
            key: key.to_string(),
            reason: reason.into(),
        }
    }
}

fn as_table(value: &Value) -> Option<&Map<String, Value>> {
    match &value.kind {
        ValueKind::Table(table) => Some(table),
        _ => None,
    }
}

/// The value at `key` (`a.b`, `a[2].c`; a literal key with dots or brackets in it is tried
/// first), or the deepest one on its way there; and whether the whole key was found.
fn find<'a>(root: &'a Map<String, Value>, key: &str) -> (Option<&'a Value>, bool) {
    let mut found: Option<&Value> = None;
    let mut table = Some(root);
    let parts: Vec<&str> = key.split('.').collect();
    let mut i = 0;
    'walk: while i < parts.len() {
        let Some(current) = table else { break };
        // The longest literal key first (a file may say "a.b" = 1 or "x[1]" = 1) ...
        for j in (i + 1..=parts.len()).rev() {
            if let Some(v) = current.get(&parts[i..j].join(".")) {
                found = Some(v);
                table = as_table(v);
                i = j;
                continue 'walk;
            }
        }
        // ... then `name[index]`.
        let Some((name, index)) = parts[i].strip_suffix(']').and_then(|p| p.split_once('[')) else {
            break;
        };
        let Some(v) = current.get(name) else { break };
        found = Some(v);
        let ValueKind::Array(items) = &v.kind else {
            break;
        };
        let Some(item) = index.parse::<usize>().ok().and_then(|n| items.get(n)) else {
            break;
        };
        found = Some(item);
        table = as_table(item);
        i += 1;
    }
    (found, i == parts.len() && !key.is_empty())
}

/// Takes `section.key` out of a layer when it is a list (its entries, each with its origin).
/// Anything else there is left for deserializing to refuse with its origin.
fn take_list(layer: &mut Layer, section: &str, key: &str) -> Option<Vec<Value>> {
    let ValueKind::Table(table) = &mut layer.0.get_mut(section)?.kind else {
        return None;
    };
    if !matches!(table.get(key)?.kind, ValueKind::Array(_)) {
        return None;
    }
    match table.shift_remove(key)?.kind {
        ValueKind::Array(items) => Some(items),
        _ => None,
    }
}

/// The key (`a.b[2].c`, relative to the config's root) and reason of a deserializing error.
fn describe(err: ConfigError) -> (String, String) {
    let (key, reason) = match err {
        ConfigError::Type {
            unexpected,
            expected,
            key,
            ..
        } => (
            key.unwrap_or_default(),
            format!("invalid type: {unexpected}, expected {expected}"),
        ),
        ConfigError::At { error, key, .. } => {
            let (inner, reason) = describe(*error);
            let key = match (key, inner.is_empty()) {
                (Some(key), true) => key,
                (Some(key), false) => format!("{key}.{inner}"),
                (None, _) => inner,
            };
            (key, reason)
        }
        ConfigError::Message(message) => (String::new(), message),
        // serde's missing field: config-rs writes it after its table's path, with no dot
        // after an index (`auth.rules[0]identities`); the key named is the table.
        ConfigError::NotFound(path) => {
            let cut = path.rfind(['.', ']']).map_or(0, |i| i + 1);
            let table = path[..cut].trim_end_matches('.').to_string();
            (table, format!("missing field `{}`", &path[cut..]))
        }
        other => (String::new(), other.to_string()),
    };
    // config-rs joins a key to the index before it without a dot (`rules[0]methods`).
    let key = dotted(&key);
    // serde names an unknown key in its message, not in the path: the path is its table.
    let unknown = reason
        .strip_prefix("unknown field `")
        .and_then(|rest| rest.split_once('`'))
        .map(|(name, _)| name.to_string());
    match unknown {
        Some(name) if key.is_empty() => (name, reason),
        Some(name) if !key.ends_with(&format!(".{name}")) => (format!("{key}.{name}"), reason),
        _ => (key, reason),
    }
}

/// `key` with a dot between an index and the name after it: `a[0]b` is `a[0].b`.
fn dotted(key: &str) -> String {
    let mut out = String::with_capacity(key.len() + 4);
    let mut chars = key.chars().peekable();
    while let Some(c) = chars.next() {
        out.push(c);
        if c == ']' && chars.peek().is_some_and(|next| !matches!(next, '.' | '[')) {
            out.push('.');
        }
    }
    out
}

/// The `*.toml` files of a drop-in directory, in lexical order; none when it does not exist.
fn dropin_files(dir: &Path) -> Result<Vec<PathBuf>, Error> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(Error::DropinDir {
                path: dir.to_path_buf(),
                source,
            });
        }
    };
    let mut files = Vec::new();
    for entry in entries {
        let path = entry
            .map_err(|source| Error::DropinDir {
                path: dir.to_path_buf(),
                source,
            })?
            .path();
        // Anything named *.toml is read, so one that is not a regular file (a FIFO, a
        // directory) is refused by name rather than passed over.
        if path.extension().is_some_and(|e| e == "toml") {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

/// A TOML file as a layer, every value remembering the file's path as its origin.
fn read_toml(path: &Path) -> Result<Layer, Error> {
    let origin = path.display().to_string();
    let failed = |reason: String| Error::Parse {
        origin: origin.clone(),
        reason,
    };
    let bytes =
        crate::file::read(path, crate::file::CONFIG_MAX).map_err(|e| failed(e.to_string()))?;
    let text = String::from_utf8(bytes).map_err(|_| failed("not UTF-8 text".into()))?;
    parse_toml(&origin, &text)
}

fn parse_toml(origin: &str, text: &str) -> Result<Layer, Error> {
    let table = text.parse::<toml::Table>().map_err(|e| Error::Parse {
        origin: origin.to_string(),
        reason: one_line_toml_error(text, &e),
    })?;
    let origin = origin.to_string();
    Ok(Layer(
        table
            .into_iter()
            .map(|(k, v)| (k, from_toml(v, &origin)))
            .collect(),
    ))
}

/// A TOML value as config-rs's, every part of it from `origin`.
fn from_toml(value: toml::Value, origin: &String) -> Value {
    let kind = match value {
        toml::Value::String(s) => ValueKind::String(s),
        toml::Value::Integer(i) => ValueKind::I64(i),
        toml::Value::Float(f) => ValueKind::Float(f),
        toml::Value::Boolean(b) => ValueKind::Boolean(b),
        toml::Value::Datetime(d) => ValueKind::String(d.to_string()),
        toml::Value::Array(items) => {
            ValueKind::Array(items.into_iter().map(|v| from_toml(v, origin)).collect())
        }
        toml::Value::Table(table) => ValueKind::Table(
            table
                .into_iter()
                .map(|(k, v)| (k, from_toml(v, origin)))
                .collect(),
        ),
    };
    Value::new(Some(origin), kind)
}

/// The `VITALSD_SECTION__KEY` variables as a layer: `__` nests, names are lowercased, the
/// [`ENV_LIST_KEYS`] are split on commas, every value is text. A name with anything but
/// letters, digits and `_` after the prefix is refused: it can only be a mistake.
fn environment(vars: impl Iterator<Item = (String, String)>) -> Result<Layer, Error> {
    let origin = ENVIRONMENT.to_string();
    let mut vars: Vec<(String, String, String)> = vars
        .filter_map(|(name, value)| {
            let key = name.strip_prefix(ENV_PREFIX)?.strip_prefix('_')?;
            let path = key.to_ascii_lowercase().replace("__", ".");
            Some((path, name, value))
        })
        .collect();
    vars.sort();
    let mut root = Map::new();
    for (path, name, text) in vars {
        let well_formed = path.split('.').all(|part| {
            !part.is_empty() && part.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
        });
        if !well_formed {
            return Err(Error::Invalid {
                origin: origin.clone(),
                key: name,
                reason: "not a config key: VITALSD_SECTION__KEY, of letters, digits and _".into(),
            });
        }
        let value = if ENV_LIST_KEYS.contains(&path.as_str()) {
            let items = text.split(',').map(|item| item.trim().to_string());
            ValueKind::Array(items.map(|i| Value::new(Some(&origin), i)).collect())
        } else {
            ValueKind::String(text)
        };
        let mut value = Value::new(Some(&origin), value);
        let mut parts: Vec<&str> = path.split('.').collect();
        let key = parts.remove(0);
        while let Some(last) = parts.pop() {
            let mut table = Map::new();
            table.insert(last.to_string(), value);
            value = Value::new(Some(&origin), table);
        }
        merge_into(&mut root, key, value);
    }
    Ok(Layer(root))
}

/// Puts `value` under `key`: tables merge key by key, anything else replaces.
fn merge_into(table: &mut Map<String, Value>, key: &str, value: Value) {
    if let (Some(target), ValueKind::Table(incoming)) = (table.get_mut(key), &value.kind)
        && let ValueKind::Table(target) = &mut target.kind
    {
        for (k, v) in incoming {
            merge_into(target, k, v.clone());
        }
        return;
    }
    table.insert(key.to_string(), value);
}

/// "invalid TOML at line 3, column 8: unclosed table" from toml's multi-line report.
fn one_line_toml_error(text: &str, err: &toml::de::Error) -> String {
    let what = err.message().trim();
    match err.span() {
        Some(span) => {
            let before = &text[..span.start.min(text.len())];
            let line = before.matches('\n').count() + 1;
            let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
            format!("invalid TOML at line {line}, column {column}: {what}")
        }
        None => format!("invalid TOML: {what}"),
    }
}

impl fmt::Debug for Layers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Layers").finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layers(texts: &[(&str, &str)], env: &[(&str, &str)]) -> Result<Layers, Error> {
        let mut all = Vec::new();
        for (origin, text) in texts {
            all.push(parse_toml(origin, text)?);
        }
        let env = env.iter().map(|(k, v)| (k.to_string(), v.to_string()));
        Ok(Layers::merge(all, Some(environment(env)?)))
    }

    /// Grants accumulate across layers in order, each entry keeping its file; other lists
    /// are replaced by the later layer.
    #[test]
    fn grants_accumulate_and_other_lists_are_replaced() {
        let l = layers(
            &[
                (
                    "main.toml",
                    "[auth]\npublic = [\"a/*\"]\n[[auth.rules]]\nidentities = [\"x\"]\nmethods = [\"*\"]\n",
                ),
                (
                    "10.toml",
                    "[auth]\npublic = [\"b/*\"]\n[[auth.rules]]\nidentities = [\"y\"]\nmethods = [\"/metrics\"]\n",
                ),
            ],
            &[],
        )
        .unwrap();
        let raw = l.raw().unwrap();
        let who: Vec<&str> = raw
            .auth
            .rules
            .iter()
            .map(|r| r.identities[0].as_str())
            .collect();
        assert_eq!(who, ["x", "y"]);
        assert_eq!(raw.auth.public, ["b/*"]);
        let origins = l.origins();
        assert!(origins.contains(&("auth.rules[0]".into(), "main.toml".into())));
        assert!(origins.contains(&("auth.rules[1]".into(), "10.toml".into())));
        assert!(origins.contains(&("auth.public".into(), "10.toml".into())));
    }

    /// Keys that read as config-rs path expressions are one literal key each: refused as
    /// unknown, with the file, at once and without a large allocation.
    #[test]
    fn path_expression_keys_are_literal() {
        for text in [
            "\"x[1000000]\" = 1\n",
            "\"x[9223372036854775807]\" = 1\n",
            "\"server.listen\" = 1\n",
            "[server]\n\"listen[100000000]\" = 1\n",
            "\"x[-9223372036854775808]\" = 1\n",
        ] {
            let err = layers(&[("f.toml", text)], &[])
                .unwrap()
                .raw()
                .unwrap_err()
                .to_string();
            assert!(err.starts_with("f.toml: `"), "{text}: {err}");
            assert!(err.contains("unknown field"), "{text}: {err}");
        }
    }

    /// Environment values stay text until a number is wanted, lists are split, and a
    /// malformed name is refused naming the environment.
    #[test]
    fn environment_values() {
        let l = layers(
            &[],
            &[
                ("VITALSD_PUSH__LABELS__ZONE", "007"),
                ("VITALSD_SERVER__MAX_CONNECTIONS", "77"),
                ("VITALSD_SERVER__LISTEN", "127.0.0.1:1, 127.0.0.1:2"),
                ("OTHER_VAR", "x"),
            ],
        )
        .unwrap();
        let raw = l.raw().unwrap();
        assert_eq!(raw.push.labels["zone"], "007");
        assert_eq!(raw.server.max_connections, 77);
        assert_eq!(raw.server.listen, ["127.0.0.1:1", "127.0.0.1:2"]);
        let err = layers(&[], &[("VITALSD_X[99999999]", "1")]).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("the environment: `VITALSD_X[99999999]`"),
            "{err}"
        );
    }

    /// A list entry without a required field names the entry and the field, and the file
    /// (the fuzzer's `missing-field-in-a-list-entry`: "built-in defaults" and a key run
    /// together, `auth.rules[0]identities`).
    #[test]
    fn a_missing_field_names_its_table_and_file() {
        let err = layers(&[("f.toml", "[[auth.rules]]\n")], &[])
            .unwrap()
            .raw()
            .unwrap_err()
            .to_string();
        assert_eq!(err, "f.toml: `auth.rules[0]`: missing field `identities`");
        let err = layers(&[("f.toml", "[[secrets.sources]]\ndir = \"/x\"\n")], &[])
            .unwrap()
            .raw()
            .unwrap_err()
            .to_string();
        assert_eq!(err, "f.toml: `secrets.sources[0]`: missing field `kind`");
    }

    /// A value of the wrong type inside a list entry names the entry's key with its dot and
    /// the file (the fuzzer's `wrong-type-in-a-list-entry`: `secrets.sources[1]client_cert`
    /// from "built-in defaults").
    #[test]
    fn a_wrong_type_in_a_list_entry_names_the_file() {
        let text = "[[secrets.sources]]\nkind = \"credentials\"\n[[secrets.sources]]\nkind = \"vault\"\nclient_cert = { tls_key = \"key\" }\n";
        let err = layers(&[("f.toml", text)], &[])
            .unwrap()
            .raw()
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("f.toml: `secrets.sources[1].client_cert`: invalid type"),
            "{err}"
        );
        assert_eq!(dotted("a[0]b[1][2]c.d"), "a[0].b[1][2].c.d");
    }

    /// Lists, user-keyed tables and strings past their limits are refused naming the key
    /// and the file: 10,000 push labels, a rule with 300 methods, a 5,000-byte path.
    #[test]
    fn lists_and_strings_are_bounded() {
        let labels: String = (0..10_000).map(|i| format!("l{i} = \"v\"\n")).collect();
        let methods = vec!["\"*\""; 300].join(",");
        let long = "x".repeat(5000);
        for (text, key, said) in [
            (
                format!("[push.labels]\n{labels}"),
                "`push.labels`",
                "10000 keys; at most 16",
            ),
            (
                format!("[[auth.rules]]\nidentities = [\"a\"]\nmethods = [{methods}]\n"),
                "`auth.rules[0].methods`",
                "300 entries; at most 256",
            ),
            (
                format!("[tls]\ncert = \"{long}\"\n"),
                "`tls.cert`",
                "5000 bytes; at most 4096",
            ),
        ] {
            let err = layers(&[("f.toml", &text)], &[])
                .unwrap()
                .raw()
                .unwrap_err()
                .to_string();
            assert!(err.starts_with(&format!("f.toml: {key}: {said}")), "{err}");
        }
        let sixteen: String = (0..16).map(|i| format!("l{i} = \"v\"\n")).collect();
        let l = layers(&[("f.toml", &format!("[push.labels]\n{sixteen}"))], &[]).unwrap();
        assert_eq!(l.raw().unwrap().push.labels.len(), 16);
    }
}
