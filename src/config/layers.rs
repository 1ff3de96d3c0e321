//! The layers of a config, merged: built-in defaults, the main file, `vitalsd.d/*.toml` in
//! lexical order, then `VITALSD_*` environment variables. Every value keeps the layer it
//! came from, so an error can name the file (or "the environment") that set a bad key.

use std::{
    path::{Path, PathBuf},
    sync::Arc,
};

use super::{
    DEFAULT_PATH, DROPIN_DIR, ENV_PREFIX, Error, Location, RawConfig,
    tree::{self, Node, Table, Value},
};

/// Keys whose environment value is a comma-separated list.
const ENV_LIST_KEYS: &[&str] = &[
    "server.listen",
    "health.plaintext_listen",
    "health.disk_paths",
];

/// The origin of every value set by a `VITALSD_*` variable.
const ENVIRONMENT: &str = "the environment";

/// The merged layers, kept so that an error can say which layer a key came from.
pub(super) struct Layers(Table);

impl Layers {
    pub(super) fn read(location: &Location) -> Result<(Layers, Vec<PathBuf>), Error> {
        let mut layers = Layers::defaults();
        let mut files = Vec::new();
        match location {
            Location::Dev(dir) => {
                let mut tls = Table::new();
                for (key, file) in [
                    ("cert", "server.crt"),
                    ("key", "server.key"),
                    ("client_ca", "ca.crt"),
                ] {
                    let path = dir.join(file).display().to_string();
                    tls.insert(key.to_string(), built_in(Value::String(path)));
                }
                layers.merge("tls".into(), built_in(Value::Table(tls)));
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
            TomlFile::read(file)?.merge_into(&mut layers);
        }
        let environment: Arc<str> = Arc::from(ENVIRONMENT);
        let mut vars: Vec<(String, String)> = std::env::vars()
            .filter_map(|(name, value)| {
                let key = name.strip_prefix(ENV_PREFIX)?.strip_prefix('_')?;
                Some((key.to_ascii_lowercase().replace("__", "."), value))
            })
            .collect();
        vars.sort();
        for (path, text) in vars {
            // `server.listen` from VITALSD_SERVER__LISTEN: nest by dots, nothing else.
            let value = if ENV_LIST_KEYS.contains(&path.as_str()) {
                Value::Array(
                    text.split(',')
                        .map(|item| Node {
                            value: Value::String(item.trim().to_string()),
                            origin: Some(environment.clone()),
                        })
                        .collect(),
                )
            } else {
                Value::String(text)
            };
            let mut parts: Vec<&str> = path.split('.').collect();
            let mut key = parts.pop().unwrap_or_default().to_string();
            let mut nested = Node {
                value,
                origin: Some(environment.clone()),
            };
            while let Some(parent) = parts.pop() {
                let mut table = Table::new();
                table.insert(key, nested);
                nested = Node {
                    value: Value::Table(table),
                    origin: Some(environment.clone()),
                };
                key = parent.to_string();
            }
            layers.merge(key, nested);
        }
        Ok((layers, files))
    }

    /// No layer yet: an empty root table, which serde fills from the `Default`s in
    /// [`super::raw`].
    pub(super) fn defaults() -> Layers {
        Layers(Table::new())
    }

    /// Puts a layer's top-level key in. Keys are keys, never path expressions: a quoted
    /// `"x[99999999999]"` is one odd key, not an array to grow.
    pub(super) fn merge(&mut self, key: String, node: Node) {
        tree::merge(&mut self.0, key, node);
    }

    /// Deserializes the merged layers, naming the key and its layer on error.
    pub(super) fn raw(&self) -> Result<RawConfig, Error> {
        tree::deserialize(&self.0).map_err(|err| {
            let path = err.path.unwrap_or_default();
            self.invalid(&path, err.message)
        })
    }

    /// The layer a key's value came from: a file path, "the environment" or "built-in defaults".
    fn origin(&self, key: &str) -> String {
        let mut node: Option<&Node> = None;
        let mut table = Some(&self.0);
        let parts: Vec<&str> = key.split('.').collect();
        let mut i = 0;
        'walk: while i < parts.len() {
            let Some(current) = table else { break };
            // The longest literal key first (a file may say "a.b" = 1 or "x[1]" = 1) ...
            for j in (i + 1..=parts.len()).rev() {
                if let Some(v) = current.get(&parts[i..j].join(".")) {
                    node = Some(v);
                    table = as_table(v);
                    i = j;
                    continue 'walk;
                }
            }
            // ... then `name[index]`.
            let Some((name, index)) = parts[i].strip_suffix(']').and_then(|p| p.split_once('['))
            else {
                break;
            };
            let Some(v) = current.get(name) else { break };
            node = Some(v);
            table = None;
            if let (Ok(n), Value::Array(items)) = (index.parse::<usize>(), &v.value)
                && let Some(item) = items.get(n)
            {
                node = Some(item);
                table = as_table(item);
            }
            i += 1;
        }
        node.and_then(|n| n.origin.as_deref())
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

fn as_table(node: &Node) -> Option<&Table> {
    match &node.value {
        Value::Table(table) => Some(table),
        _ => None,
    }
}

/// A value built in (the dev PKI's paths).
fn built_in(value: Value) -> Node {
    Node {
        value,
        origin: None,
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
    table: toml::Table,
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

    /// Merges every top-level key of the file into `layers`.
    pub(super) fn merge_into(&self, layers: &mut Layers) {
        let origin: Arc<str> = Arc::from(self.origin.as_str());
        for (key, value) in &self.table {
            layers.merge(key.clone(), Node::from_toml(value, &origin));
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
