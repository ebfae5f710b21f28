//! Reading only what a mapping needs from a record: the JSON Pointers of
//! an input are compiled into a trie, and one serde pass over the record
//! descends where the trie goes, skips everything else without building
//! it, and captures the scalars it points at, borrowed from the record
//! where the JSON has no escapes. No `serde_json::Value` is built.

use std::borrow::Cow;
use std::fmt;

use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

use crate::engine::native::Text;

/// A captured value.
#[derive(Debug, Clone, PartialEq)]
pub enum Scalar<'a> {
    /// A string.
    Str(Cow<'a, str>),
    /// A negative integer (or any that fits).
    Int(i64),
    /// A non-negative integer past `i64`.
    UInt(u64),
    /// A float.
    Float(f64),
    /// A boolean.
    Bool(bool),
    /// JSON `null`.
    Null,
    /// An array of scalars (`tags`); nested containers inside are `Object`.
    List(Vec<Scalar<'a>>),
    /// An object, or a container where a scalar was expected.
    Object,
}

impl<'a> Scalar<'a> {
    /// What the value is, in the user's terms (for "expected a number, got …").
    pub fn describe(&self) -> String {
        match self {
            Scalar::Str(s) => format!("the string \"{}\"", crate::engine::event::shorten(s)),
            Scalar::Int(i) => format!("the number {i}"),
            Scalar::UInt(u) => format!("the number {u}"),
            Scalar::Float(f) => format!("the number {f}"),
            Scalar::Bool(b) => format!("{b}"),
            Scalar::Null => "null".into(),
            Scalar::List(_) => "an array".into(),
            Scalar::Object => "an object".into(),
        }
    }

    /// [`Scalar::text`], keeping a borrowed string borrowed.
    pub fn into_text(self) -> Option<Cow<'a, str>> {
        match self {
            Scalar::Str(s) => Some(s),
            other => other.text().map(|t| Cow::Owned(t.into_owned())),
        }
    }

    /// The value as text for comparisons and id fields: strings as they
    /// are, numbers and booleans in their JSON spelling.
    pub fn text(&self) -> Option<Cow<'_, str>> {
        match self {
            Scalar::Str(s) => Some(Cow::Borrowed(s)),
            Scalar::Int(i) => Some(Cow::Owned(i.to_string())),
            Scalar::UInt(u) => Some(Cow::Owned(u.to_string())),
            Scalar::Float(f) => Some(Cow::Owned(f.to_string())),
            Scalar::Bool(b) => Some(Cow::Borrowed(if *b { "true" } else { "false" })),
            Scalar::Null | Scalar::List(_) | Scalar::Object => None,
        }
    }
}

/// One step of the pointer trie.
#[derive(Debug, Default)]
pub struct Node {
    key: Box<str>,
    /// The key as an array index, when it is one.
    index: Option<usize>,
    /// Where the value found here is captured.
    slot: Option<usize>,
    children: Vec<Node>,
}

impl Node {
    /// Adds the pointer `tokens` (already unescaped), captured into `slot`.
    pub fn insert(&mut self, tokens: &[String], slot: usize) {
        match tokens.split_first() {
            None => self.slot = Some(slot),
            Some((first, rest)) => {
                let child = match self.children.iter().position(|c| *c.key == **first) {
                    Some(i) => &mut self.children[i],
                    None => {
                        self.children.push(Node {
                            key: first.as_str().into(),
                            index: first
                                .parse()
                                .ok()
                                .filter(|_| !first.starts_with('+') && first.len() < 20),
                            ..Node::default()
                        });
                        let last = self.children.len() - 1;
                        &mut self.children[last]
                    }
                };
                child.insert(rest, slot);
            }
        }
    }

    fn child(&self, key: &str) -> Option<&Node> {
        self.children.iter().find(|c| *c.key == *key)
    }

    fn element(&self, i: usize) -> Option<&Node> {
        self.children.iter().find(|c| c.index == Some(i))
    }
}

/// Splits an RFC 6901 JSON Pointer into unescaped tokens; `None` if it is
/// not one (it must be empty or start with `/`).
pub fn tokens(pointer: &str) -> Option<Vec<String>> {
    if pointer.is_empty() {
        return Some(Vec::new());
    }
    let rest = pointer.strip_prefix('/')?;
    Some(
        rest.split('/')
            .map(|t| t.replace("~1", "/").replace("~0", "~"))
            .collect(),
    )
}

/// The seed that walks a record along the trie.
pub struct Capture<'s, 'a> {
    /// Where to go.
    pub node: &'s Node,
    /// Captured values by slot.
    pub slots: &'s mut [Option<Scalar<'a>>],
}

impl<'s, 'de> DeserializeSeed<'de> for Capture<'s, 'de> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'s, 'de> Capture<'s, 'de> {
    fn put(self, v: Scalar<'de>) {
        if let Some(slot) = self.node.slot {
            self.slots[slot] = Some(v);
        }
    }
}

impl<'s, 'de> Visitor<'de> for Capture<'s, 'de> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<(), E> {
        self.put(Scalar::Bool(v));
        Ok(())
    }

    fn visit_i64<E>(self, v: i64) -> Result<(), E> {
        self.put(Scalar::Int(v));
        Ok(())
    }

    fn visit_u64<E>(self, v: u64) -> Result<(), E> {
        self.put(i64::try_from(v).map_or(Scalar::UInt(v), Scalar::Int));
        Ok(())
    }

    fn visit_f64<E>(self, v: f64) -> Result<(), E> {
        self.put(Scalar::Float(v));
        Ok(())
    }

    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<(), E> {
        self.put(Scalar::Str(Cow::Borrowed(v)));
        Ok(())
    }

    fn visit_str<E>(self, v: &str) -> Result<(), E> {
        self.put(Scalar::Str(Cow::Owned(v.to_owned())));
        Ok(())
    }

    fn visit_string<E>(self, v: String) -> Result<(), E> {
        self.put(Scalar::Str(Cow::Owned(v)));
        Ok(())
    }

    fn visit_unit<E>(self) -> Result<(), E> {
        self.put(Scalar::Null);
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let Capture { node, slots } = self;
        while let Some(key) = map.next_key::<Text<'de>>()? {
            match node.child(&key) {
                Some(child) => map.next_value_seed(Capture {
                    node: child,
                    slots: &mut *slots,
                })?,
                None => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        if let Some(slot) = node.slot {
            slots[slot] = Some(Scalar::Object);
        }
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let Capture { node, slots } = self;
        if node.children.is_empty() && node.slot.is_some() {
            let mut items = Vec::new();
            while let Some(item) = seq.next_element_seed(Element)? {
                items.push(item);
            }
            if let Some(slot) = node.slot {
                slots[slot] = Some(Scalar::List(items));
            }
            return Ok(());
        }
        let mut i = 0;
        loop {
            let found = match node.element(i) {
                Some(child) => seq
                    .next_element_seed(Capture {
                        node: child,
                        slots: &mut *slots,
                    })?
                    .is_some(),
                None => seq.next_element::<IgnoredAny>()?.is_some(),
            };
            if !found {
                return Ok(());
            }
            i += 1;
        }
    }
}

/// An array element as a scalar (containers inside become `Object`).
struct Element;

impl<'de> DeserializeSeed<'de> for Element {
    type Value = Scalar<'de>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Scalar<'de>, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Element {
    type Value = Scalar<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Scalar<'de>, E> {
        Ok(Scalar::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Scalar<'de>, E> {
        Ok(Scalar::Int(v))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Scalar<'de>, E> {
        Ok(i64::try_from(v).map_or(Scalar::UInt(v), Scalar::Int))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Scalar<'de>, E> {
        Ok(Scalar::Float(v))
    }

    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Scalar<'de>, E> {
        Ok(Scalar::Str(Cow::Borrowed(v)))
    }

    fn visit_str<E>(self, v: &str) -> Result<Scalar<'de>, E> {
        Ok(Scalar::Str(Cow::Owned(v.to_owned())))
    }

    fn visit_string<E>(self, v: String) -> Result<Scalar<'de>, E> {
        Ok(Scalar::Str(Cow::Owned(v)))
    }

    fn visit_unit<E>(self) -> Result<Scalar<'de>, E> {
        Ok(Scalar::Null)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Scalar<'de>, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(Scalar::Object)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Scalar<'de>, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Scalar::Object)
    }
}

/// Captures `pointers`' values from `json`, for the tests (a test-only
/// helper: its parse error is a failed test).
#[cfg(test)]
pub fn capture<'a>(pointers: &[&str], json: &'a str) -> Vec<Option<Scalar<'a>>> {
    let mut root = Node::default();
    for (slot, p) in pointers.iter().enumerate() {
        root.insert(&tokens(p).unwrap_or_default(), slot);
    }
    let mut slots = vec![None; pointers.len()];
    let mut de = serde_json::Deserializer::from_str(json);
    Capture {
        node: &root,
        slots: &mut slots,
    }
    .deserialize(&mut de)
    .unwrap();
    slots
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn captures_nested_values_arrays_and_indexes_and_skips_the_rest() {
        let json = r#"{"a":{"b":"x","skip":{"deep":[1,2,{"z":3}]}},"n":-7,"u":18446744073709551615,
            "f":1.5,"t":true,"z":null,"tags":["vip",{"o":1},2],"items":[{"id":"i0"},{"id":"i1"}],
            "esc":"caf\u00e9","a~b":1,"c/d":2}"#;
        let got = capture(
            &[
                "/a/b",
                "/n",
                "/u",
                "/f",
                "/t",
                "/z",
                "/tags",
                "/items/1/id",
                "/esc",
                "/a~0b",
                "/c~1d",
                "/missing",
                "/a",
            ],
            json,
        );
        assert_eq!(got[0], Some(Scalar::Str("x".into())));
        assert_eq!(got[1], Some(Scalar::Int(-7)));
        assert_eq!(got[2], Some(Scalar::UInt(u64::MAX)));
        assert_eq!(got[3], Some(Scalar::Float(1.5)));
        assert_eq!(got[4], Some(Scalar::Bool(true)));
        assert_eq!(got[5], Some(Scalar::Null));
        assert_eq!(
            got[6],
            Some(Scalar::List(vec![
                Scalar::Str("vip".into()),
                Scalar::Object,
                Scalar::Int(2)
            ]))
        );
        assert_eq!(got[7], Some(Scalar::Str("i1".into())));
        assert_eq!(got[8], Some(Scalar::Str("café".into())));
        assert_eq!(got[9], Some(Scalar::Int(1)));
        assert_eq!(got[10], Some(Scalar::Int(2)));
        assert_eq!(got[11], None);
        assert_eq!(
            got[12],
            Some(Scalar::Object),
            "a container where a value was expected"
        );
    }

    #[test]
    fn pointers_follow_rfc_6901() {
        assert_eq!(tokens(""), Some(vec![]));
        assert_eq!(
            tokens("/a~1b/~0c"),
            Some(vec!["a/b".to_string(), "~c".to_string()])
        );
        assert_eq!(tokens("a/b"), None);
    }
}
