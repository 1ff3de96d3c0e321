//! The merged layers as a tree whose every value remembers its layer, and the serde
//! deserializer that reads [`super::RawConfig`] out of it.
//!
//! The deserializer tracks where it is, so an error names the key (`server.listen`,
//! `secrets.sources[0].addr`) without wrapping every type the schema has (which is what a
//! path-tracking wrapper costs in code). It coerces as config files and the environment
//! need: an environment value is text, so `"128"` reads as a number, `"true"` as a
//! boolean; a number where text is expected (`max_message_size = 65536`) reads as its
//! digits; an integer reads as a float.

use std::{collections::BTreeMap, fmt, sync::Arc};

use serde::de::{
    self, DeserializeSeed, Deserializer, IntoDeserializer, MapAccess, SeqAccess, Unexpected,
    Visitor,
};

/// A value and the layer it came from (`None`: built-in).
#[derive(Debug, Clone)]
pub(super) struct Node {
    pub value: Value,
    pub origin: Option<Arc<str>>,
}

#[derive(Debug, Clone)]
pub(super) enum Value {
    Table(Table),
    Array(Vec<Node>),
    String(String),
    Integer(i64),
    Float(f64),
    Boolean(bool),
}

pub(super) type Table = BTreeMap<String, Node>;

impl Node {
    /// A TOML value, every part of it from `origin`.
    pub fn from_toml(value: &toml::Value, origin: &Arc<str>) -> Node {
        let value = match value {
            toml::Value::String(s) => Value::String(s.clone()),
            toml::Value::Integer(i) => Value::Integer(*i),
            toml::Value::Float(f) => Value::Float(*f),
            toml::Value::Boolean(b) => Value::Boolean(*b),
            toml::Value::Datetime(d) => Value::String(d.to_string()),
            toml::Value::Array(items) => {
                Value::Array(items.iter().map(|v| Node::from_toml(v, origin)).collect())
            }
            toml::Value::Table(table) => Value::Table(
                table
                    .iter()
                    .map(|(k, v)| (k.clone(), Node::from_toml(v, origin)))
                    .collect(),
            ),
        };
        Node {
            value,
            origin: Some(origin.clone()),
        }
    }
}

/// Puts `node` under `key`: tables merge key by key, anything else replaces what was there.
pub(super) fn merge(table: &mut Table, key: String, node: Node) {
    match (table.get_mut(&key), node.value) {
        (
            Some(Node {
                value: Value::Table(target),
                ..
            }),
            Value::Table(incoming),
        ) => {
            for (k, v) in incoming {
                merge(target, k, v);
            }
        }
        (_, value) => {
            table.insert(
                key,
                Node {
                    value,
                    origin: node.origin,
                },
            );
        }
    }
}

/// Why a value did not deserialize, and where (`None` until the value's place is known).
#[derive(Debug)]
pub(super) struct Error {
    pub path: Option<String>,
    pub message: String,
}

impl Error {
    /// Says where, unless a deeper value already did.
    fn at(mut self, path: &str) -> Error {
        if self.path.is_none() {
            self.path = Some(path.to_string());
        }
        self
    }
}

impl de::Error for Error {
    fn custom<T: fmt::Display>(message: T) -> Error {
        Error {
            path: None,
            message: message.to_string(),
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {}

/// Deserializes the whole tree.
pub(super) fn deserialize<'de, T: de::Deserialize<'de>>(root: &Table) -> Result<T, Error> {
    T::deserialize(TableDe {
        table: root,
        path: "",
    })
}

fn child(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

/// The root, or any table, as a map.
struct TableDe<'a> {
    table: &'a Table,
    path: &'a str,
}

impl<'de> Deserializer<'de> for TableDe<'_> {
    type Error = Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_map(Entries {
            entries: self.table.iter(),
            path: self.path,
            value: None,
        })
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
        option unit unit_struct newtype_struct seq tuple tuple_struct map struct enum
        identifier ignored_any
    }
}

struct Entries<'a, I> {
    entries: I,
    path: &'a str,
    value: Option<(String, &'a Node)>,
}

impl<'de, 'a, I: Iterator<Item = (&'a String, &'a Node)>> MapAccess<'de> for Entries<'a, I> {
    type Error = Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, Error> {
        let Some((key, node)) = self.entries.next() else {
            return Ok(None);
        };
        let path = child(self.path, key);
        let key = seed
            .deserialize(key.as_str().into_deserializer())
            .map_err(|e: Error| e.at(&path))?;
        self.value = Some((path, node));
        Ok(Some(key))
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, Error> {
        let (path, node) = self.value.take().expect("next_key_seed came first");
        seed.deserialize(NodeDe { node, path: &path })
            .map_err(|e| e.at(&path))
    }
}

struct Items<'a, I> {
    items: I,
    path: &'a str,
    index: usize,
}

impl<'de, 'a, I: Iterator<Item = &'a Node>> SeqAccess<'de> for Items<'a, I> {
    type Error = Error;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, Error> {
        let Some(node) = self.items.next() else {
            return Ok(None);
        };
        let path = format!("{}[{}]", self.path, self.index);
        self.index += 1;
        seed.deserialize(NodeDe { node, path: &path })
            .map(Some)
            .map_err(|e| e.at(&path))
    }
}

/// One value, with the coercions the module docs describe.
struct NodeDe<'a> {
    node: &'a Node,
    path: &'a str,
}

impl NodeDe<'_> {
    fn unexpected(&self) -> Unexpected<'_> {
        match &self.node.value {
            Value::Table(_) => Unexpected::Map,
            Value::Array(_) => Unexpected::Seq,
            Value::String(s) => Unexpected::Str(s),
            Value::Integer(i) => Unexpected::Signed(*i),
            Value::Float(f) => Unexpected::Float(*f),
            Value::Boolean(b) => Unexpected::Bool(*b),
        }
    }

    fn integer<'de, V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match &self.node.value {
            Value::Integer(i) => visitor.visit_i64(*i),
            Value::Float(f) if f.fract() == 0.0 && f.abs() < 9e15 => visitor.visit_i64(*f as i64),
            Value::String(s) => match s.trim().parse::<i64>() {
                Ok(i) => visitor.visit_i64(i),
                Err(_) => match s.trim().parse::<u64>() {
                    Ok(u) => visitor.visit_u64(u),
                    Err(_) => Err(de::Error::invalid_type(self.unexpected(), &visitor)),
                },
            },
            _ => Err(de::Error::invalid_type(self.unexpected(), &visitor)),
        }
    }
}

impl<'de> Deserializer<'de> for NodeDe<'_> {
    type Error = Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match &self.node.value {
            Value::Table(table) => TableDe {
                table,
                path: self.path,
            }
            .deserialize_any(visitor),
            Value::Array(items) => visitor.visit_seq(Items {
                items: items.iter(),
                path: self.path,
                index: 0,
            }),
            Value::String(s) => visitor.visit_str(s),
            Value::Integer(i) => visitor.visit_i64(*i),
            Value::Float(f) => visitor.visit_f64(*f),
            Value::Boolean(b) => visitor.visit_bool(*b),
        }
    }

    fn deserialize_bool<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        let parsed = match &self.node.value {
            Value::Boolean(b) => Some(*b),
            Value::Integer(0) => Some(false),
            Value::Integer(1) => Some(true),
            Value::String(s) => match s.trim().to_ascii_lowercase().as_str() {
                "true" | "yes" | "on" | "1" => Some(true),
                "false" | "no" | "off" | "0" => Some(false),
                _ => None,
            },
            _ => None,
        };
        match parsed {
            Some(b) => visitor.visit_bool(b),
            None => Err(de::Error::invalid_type(self.unexpected(), &visitor)),
        }
    }

    fn deserialize_i8<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.integer(visitor)
    }
    fn deserialize_i16<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.integer(visitor)
    }
    fn deserialize_i32<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.integer(visitor)
    }
    fn deserialize_i64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.integer(visitor)
    }
    fn deserialize_u8<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.integer(visitor)
    }
    fn deserialize_u16<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.integer(visitor)
    }
    fn deserialize_u32<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.integer(visitor)
    }
    fn deserialize_u64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.integer(visitor)
    }

    fn deserialize_f64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match &self.node.value {
            Value::Float(f) => visitor.visit_f64(*f),
            Value::Integer(i) => visitor.visit_f64(*i as f64),
            Value::String(s) => match s.trim().parse::<f64>() {
                Ok(f) => visitor.visit_f64(f),
                Err(_) => Err(de::Error::invalid_type(self.unexpected(), &visitor)),
            },
            _ => Err(de::Error::invalid_type(self.unexpected(), &visitor)),
        }
    }

    fn deserialize_f32<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.deserialize_f64(visitor)
    }

    fn deserialize_str<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match &self.node.value {
            Value::String(s) => visitor.visit_str(s),
            Value::Integer(i) => visitor.visit_string(i.to_string()),
            Value::Float(f) => visitor.visit_string(f.to_string()),
            Value::Boolean(b) => visitor.visit_string(b.to_string()),
            _ => Err(de::Error::invalid_type(self.unexpected(), &visitor)),
        }
    }

    fn deserialize_string<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.deserialize_str(visitor)
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_some(self)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Error> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match &self.node.value {
            Value::Array(_) => self.deserialize_any(visitor),
            _ => Err(de::Error::invalid_type(self.unexpected(), &visitor)),
        }
    }

    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match &self.node.value {
            Value::Table(_) => self.deserialize_any(visitor),
            _ => Err(de::Error::invalid_type(self.unexpected(), &visitor)),
        }
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        self.deserialize_map(visitor)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        match &self.node.value {
            Value::String(s) => visitor.visit_enum(s.as_str().into_deserializer()),
            _ => Err(de::Error::invalid_type(self.unexpected(), &visitor)),
        }
    }

    serde::forward_to_deserialize_any! {
        i128 u128 char bytes byte_buf unit unit_struct tuple tuple_struct identifier ignored_any
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Inner {
        n: u64,
        on: bool,
        text: String,
        ratio: f64,
        #[serde(default)]
        list: Vec<String>,
    }

    #[derive(Debug, PartialEq, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Outer {
        inner: Inner,
        #[serde(default)]
        items: Vec<Inner>,
    }

    fn tree(text: &str) -> Table {
        let origin: Arc<str> = Arc::from("t.toml");
        let parsed: toml::Table = text.parse().unwrap();
        let mut root = Table::new();
        for (k, v) in &parsed {
            merge(&mut root, k.clone(), Node::from_toml(v, &origin));
        }
        root
    }

    /// Text where numbers and booleans are wanted, and numbers where text is wanted, read
    /// as the environment and hand-written files need.
    #[test]
    fn coerces_text_numbers_and_booleans() {
        let root =
            tree("[inner]\nn = \"128\"\non = \"yes\"\ntext = 65536\nratio = 2\nlist = [\"a\"]\n");
        let outer: Outer = deserialize(&root).unwrap();
        assert_eq!(
            outer.inner,
            Inner {
                n: 128,
                on: true,
                text: "65536".into(),
                ratio: 2.0,
                list: vec!["a".into()],
            }
        );
    }

    /// Errors name the key where they happened: an unknown field, a wrong type deep in an
    /// array, a missing field of an array's table.
    #[test]
    fn errors_name_their_key() {
        let err = |text: &str| deserialize::<Outer>(&tree(text)).unwrap_err();
        let base = "[inner]\nn = 1\non = true\ntext = \"x\"\nratio = 1.0\n";
        let e = err(&format!("{base}bogus = 1\n"));
        assert_eq!(e.path.as_deref(), Some("inner.bogus"));
        assert!(e.message.contains("unknown field `bogus`"), "{e}");
        let e = err(&format!(
            "{base}[[items]]\nn = 1\non = true\ntext = \"x\"\nratio = 1.0\n[[items]]\nn = \"many\"\non = true\ntext = \"x\"\nratio = 1.0\n"
        ));
        assert_eq!(e.path.as_deref(), Some("items[1].n"));
        assert!(
            e.message.starts_with("invalid type: string \"many\""),
            "{e}"
        );
        let e = err(&format!("{base}[[items]]\nn = 1\n"));
        assert_eq!(e.path.as_deref(), Some("items[0]"));
        assert!(e.message.contains("missing field"), "{e}");
        let e = err("[inner]\nn = -3\non = true\ntext = \"x\"\nratio = 1.0\n");
        assert_eq!(e.path.as_deref(), Some("inner.n"));
    }
}
