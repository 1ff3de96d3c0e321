//! The layers of a config, merged: built-in defaults, the main file, `vitalsd.d/*.toml` in
//! lexical order, then `VITALSD_*` environment variables. Every value keeps the layer it
//! came from, so an error can name the file (or "the environment") that set a bad key.

use std::path::{Path, PathBuf};

use super::{DEFAULT_PATH, DROPIN_DIR, ENV_PREFIX, Error, Location, RawConfig};

/// Keys whose environment value is a comma-separated list.
const ENV_LIST_KEYS: &[&str] = &[
    "server.listen",
    "health.plaintext_listen",
    "health.disk_paths",
];

/// The merged layers, kept so that an error can say which layer a key came from.
pub(super) struct Layers(pub(super) config::Config);

impl Layers {
    pub(super) fn read(location: &Location) -> Result<(Layers, Vec<PathBuf>), Error> {
        let mut layers = Layers::defaults();
        let mut files = Vec::new();
        match location {
            Location::Dev(dir) => {
                let mut tls = config::Map::new();
                for (key, file) in [
                    ("cert", "server.crt"),
                    ("key", "server.key"),
                    ("client_ca", "ca.crt"),
                ] {
                    let path = dir.join(file).display().to_string();
                    tls.insert(key.to_string(), config::Value::new(None, path));
                }
                layers.merge("tls".into(), config::Value::new(None, tls));
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
            let file = TomlFile::read(file)?;
            for (key, value) in file.map(&file.table) {
                layers.merge(key, value);
            }
        }
        let mut env = config::Environment::with_prefix(ENV_PREFIX)
            .prefix_separator("_")
            .separator("__")
            .list_separator(",")
            .try_parsing(true);
        for key in ENV_LIST_KEYS {
            env = env.with_list_parse_key(key);
        }
        let from_env = config::Source::collect(&env).map_err(parse_error)?;
        for (path, value) in from_env {
            // `server.listen` from VITALSD_SERVER__LISTEN: nest by dots, nothing else.
            let origin = value.origin().map(str::to_string);
            let mut parts: Vec<&str> = path.split('.').collect();
            let last = parts.pop().unwrap_or_default().to_string();
            let mut nested = value;
            let mut key = last;
            while let Some(parent) = parts.pop() {
                let mut table = config::Map::new();
                table.insert(key, nested);
                nested = config::Value::new(origin.as_ref(), table);
                key = parent.to_string();
            }
            layers.merge(key, nested);
        }
        Ok((layers, files))
    }

    /// No layer yet: an empty root table, which serde fills from the `Default`s in
    /// [`super::raw`].
    pub(super) fn defaults() -> Layers {
        let mut merged = config::Config::default();
        merged.cache = config::Value::new(None, config::Map::<String, config::Value>::new());
        Layers(merged)
    }

    /// Puts a layer's top-level key in. Keys are keys: the layers are merged here rather
    /// than by the config crate's builder, which reads every top-level key as a path
    /// expression (a quoted `"x[99999999999]"` would grow an array to that size).
    pub(super) fn merge(&mut self, key: String, value: config::Value) {
        let config::ValueKind::Table(root) = &mut self.0.cache.kind else {
            unreachable!("the root is a table from defaults()")
        };
        merge(root, key, value);
    }

    /// Deserializes the merged layers, naming the key and its layer on error.
    pub(super) fn raw(&self) -> Result<RawConfig, Error> {
        serde_path_to_error::deserialize(self.0.clone()).map_err(|err| {
            let path = err.path().to_string();
            let inner = err.into_inner();
            let reason = match &inner {
                config::ConfigError::Message(m) => m.clone(),
                other => other.to_string(),
            };
            let reason = reason
                .split(" for key `")
                .next()
                .unwrap_or_default()
                .to_string();
            self.invalid(&path, reason)
        })
    }

    /// The layer a key's value came from: a file path, "the environment" or "built-in defaults".
    fn origin(&self, key: &str) -> String {
        let mut value = &self.0.cache;
        let parts: Vec<&str> = key.split('.').collect();
        let mut i = 0;
        'walk: while i < parts.len() {
            let config::ValueKind::Table(table) = &value.kind else {
                break;
            };
            // The longest literal key first (a file may say "a.b" = 1 or "x[1]" = 1) ...
            for j in (i + 1..=parts.len()).rev() {
                if let Some(v) = table.get(&parts[i..j].join(".")) {
                    value = v;
                    i = j;
                    continue 'walk;
                }
            }
            // ... then `name[index]`.
            let Some((name, index)) = parts[i].strip_suffix(']').and_then(|p| p.split_once('['))
            else {
                break;
            };
            let Some(v) = table.get(name) else { break };
            value = v;
            if let (Ok(n), config::ValueKind::Array(items)) = (index.parse::<usize>(), &value.kind)
                && let Some(item) = items.get(n)
            {
                value = item;
            }
            i += 1;
        }
        value.origin().unwrap_or("built-in defaults").to_string()
    }

    pub(super) fn invalid(&self, key: &str, reason: impl Into<String>) -> Error {
        Error::Invalid {
            origin: self.origin(key),
            key: key.to_string(),
            reason: reason.into(),
        }
    }
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
        if path.extension().is_some_and(|e| e == "toml") && path.is_file() {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

/// One TOML file as a config layer, every value remembering the file's path as its origin.
#[derive(Debug, Clone)]
pub(super) struct TomlFile {
    origin: String,
    pub(super) table: toml::Table,
}

impl TomlFile {
    fn read(path: &Path) -> Result<TomlFile, Error> {
        let origin = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| Error::Parse {
            origin: origin.clone(),
            reason: e.to_string(),
        })?;
        TomlFile::parse(origin, &text)
    }

    pub(super) fn parse(origin: String, text: &str) -> Result<TomlFile, Error> {
        let table = text.parse::<toml::Table>().map_err(|e| Error::Parse {
            origin: origin.clone(),
            reason: one_line_toml_error(text, &e),
        })?;
        Ok(TomlFile { origin, table })
    }

    fn value(&self, value: &toml::Value) -> config::Value {
        let origin = Some(&self.origin);
        match value {
            toml::Value::String(s) => config::Value::new(origin, s.as_str()),
            toml::Value::Integer(i) => config::Value::new(origin, *i),
            toml::Value::Float(f) => config::Value::new(origin, *f),
            toml::Value::Boolean(b) => config::Value::new(origin, *b),
            toml::Value::Datetime(d) => config::Value::new(origin, d.to_string()),
            toml::Value::Array(items) => config::Value::new(
                origin,
                items.iter().map(|v| self.value(v)).collect::<Vec<_>>(),
            ),
            toml::Value::Table(table) => config::Value::new(origin, self.map(table)),
        }
    }

    pub(super) fn map(&self, table: &toml::Table) -> config::Map<String, config::Value> {
        table
            .iter()
            .map(|(k, v)| (k.clone(), self.value(v)))
            .collect()
    }
}

/// Puts `value` under `key`: tables merge key by key, anything else replaces what was there.
fn merge(table: &mut config::Map<String, config::Value>, key: String, value: config::Value) {
    let origin = value.origin().map(str::to_string);
    match (table.get_mut(&key), value.kind) {
        (Some(existing), config::ValueKind::Table(incoming))
            if matches!(existing.kind, config::ValueKind::Table(_)) =>
        {
            let config::ValueKind::Table(target) = &mut existing.kind else {
                unreachable!("matched a table")
            };
            for (k, v) in incoming {
                merge(target, k, v);
            }
        }
        (_, kind) => {
            table.insert(key, config::Value::new(origin.as_ref(), kind));
        }
    }
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

fn parse_error(err: config::ConfigError) -> Error {
    match err {
        config::ConfigError::FileParse { uri, cause } => Error::Parse {
            origin: uri.unwrap_or_else(|| "a config file".into()),
            reason: cause.to_string().trim().replace('\n', " "),
        },
        config::ConfigError::Foreign(cause) => Error::Parse {
            origin: "a config file".into(),
            reason: cause.to_string(),
        },
        other => Error::Parse {
            origin: "config".into(),
            reason: other.to_string(),
        },
    }
}
