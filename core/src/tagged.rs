//! Events as one flat JSON object whose first field, `kind`, names the variant, read in one pass.
//!
//! serde's own `#[serde(tag = "kind")]` writes the same JSON, but reads it by first copying every
//! field into an intermediate tree and then reading that tree again: every string of every event is
//! allocated twice, which made start-up with a million records spend a quarter of its time there.
//! [`KindTagged`] wraps a serializer or a deserializer so that an enum deriving serde's *default*
//! (externally tagged) representation is written and read as the `kind`-tagged object directly:
//!
//! ```
//! use conductor_core::tagged::KindTagged;
//! use serde::{Deserialize, Deserializer, Serialize, Serializer};
//!
//! #[derive(Debug, PartialEq, Serialize, Deserialize)]
//! #[serde(remote = "Self", rename_all = "snake_case")]
//! enum Event { Ping { n: u32 } }
//!
//! impl Serialize for Event {
//!     fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
//!         Event::serialize(self, KindTagged(s))
//!     }
//! }
//! impl<'de> Deserialize<'de> for Event {
//!     fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
//!         Event::deserialize(KindTagged(d))
//!     }
//! }
//!
//! let text = serde_json::to_string(&Event::Ping { n: 1 }).unwrap();
//! assert_eq!(text, r#"{"kind":"ping","n":1}"#);
//! assert_eq!(serde_json::from_str::<Event>(&text).unwrap(), Event::Ping { n: 1 });
//! ```
//!
//! Writing puts `kind` first, so reading takes the one-pass path; an object whose `kind` comes
//! later (written by hand, or re-ordered by a tool) is still read, through a buffered path.
//! Only variants with named fields (and unit variants, written as `{"kind": …}`) are supported:
//! anything else is an error naming what was given.

use serde::de::{self, DeserializeSeed, EnumAccess, IgnoredAny, MapAccess, VariantAccess, Visitor};
use serde::ser::{self, Impossible, SerializeMap, SerializeStructVariant};
use serde::{Deserializer, Serializer, forward_to_deserialize_any};
use std::fmt;

/// The field that names the variant.
pub const KIND: &str = "kind";

/// Wraps a [`Serializer`] or a [`Deserializer`]; see the module documentation.
pub struct KindTagged<T>(pub T);

const NOT_A_STRUCT_VARIANT: &str =
    "an event must be an enum variant with named fields (written as one JSON object)";

macro_rules! refuse {
    ($($method:ident($($arg:ty),*);)*) => {
        $(fn $method(self, $(_: $arg),*) -> Result<S::Ok, S::Error> {
            Err(ser::Error::custom(NOT_A_STRUCT_VARIANT))
        })*
    };
}

impl<S: Serializer> Serializer for KindTagged<S> {
    type Ok = S::Ok;
    type Error = S::Error;
    type SerializeSeq = Impossible<S::Ok, S::Error>;
    type SerializeTuple = Impossible<S::Ok, S::Error>;
    type SerializeTupleStruct = Impossible<S::Ok, S::Error>;
    type SerializeTupleVariant = Impossible<S::Ok, S::Error>;
    type SerializeMap = Impossible<S::Ok, S::Error>;
    type SerializeStruct = Impossible<S::Ok, S::Error>;
    type SerializeStructVariant = TaggedFields<S::SerializeMap>;

    refuse! {
        serialize_bool(bool); serialize_i8(i8); serialize_i16(i16); serialize_i32(i32);
        serialize_i64(i64); serialize_u8(u8); serialize_u16(u16); serialize_u32(u32);
        serialize_u64(u64); serialize_f32(f32); serialize_f64(f64); serialize_char(char);
        serialize_str(&str); serialize_bytes(&[u8]); serialize_none(); serialize_unit();
        serialize_unit_struct(&'static str);
    }

    fn serialize_unit_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
    ) -> Result<S::Ok, S::Error> {
        let mut map = self.0.serialize_map(Some(1))?;
        map.serialize_entry(KIND, variant)?;
        map.end()
    }

    fn serialize_some<T: ?Sized + ser::Serialize>(self, _: &T) -> Result<S::Ok, S::Error> {
        Err(ser::Error::custom(NOT_A_STRUCT_VARIANT))
    }

    fn serialize_newtype_struct<T: ?Sized + ser::Serialize>(
        self,
        _: &'static str,
        _: &T,
    ) -> Result<S::Ok, S::Error> {
        Err(ser::Error::custom(NOT_A_STRUCT_VARIANT))
    }

    fn serialize_newtype_variant<T: ?Sized + ser::Serialize>(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: &T,
    ) -> Result<S::Ok, S::Error> {
        Err(ser::Error::custom(NOT_A_STRUCT_VARIANT))
    }

    fn serialize_seq(self, _: Option<usize>) -> Result<Self::SerializeSeq, S::Error> {
        Err(ser::Error::custom(NOT_A_STRUCT_VARIANT))
    }

    fn serialize_tuple(self, _: usize) -> Result<Self::SerializeTuple, S::Error> {
        Err(ser::Error::custom(NOT_A_STRUCT_VARIANT))
    }

    fn serialize_tuple_struct(
        self,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeTupleStruct, S::Error> {
        Err(ser::Error::custom(NOT_A_STRUCT_VARIANT))
    }

    fn serialize_tuple_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeTupleVariant, S::Error> {
        Err(ser::Error::custom(NOT_A_STRUCT_VARIANT))
    }

    fn serialize_map(self, _: Option<usize>) -> Result<Self::SerializeMap, S::Error> {
        Err(ser::Error::custom(NOT_A_STRUCT_VARIANT))
    }

    fn serialize_struct(
        self,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeStruct, S::Error> {
        Err(ser::Error::custom(NOT_A_STRUCT_VARIANT))
    }

    fn serialize_struct_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        len: usize,
    ) -> Result<Self::SerializeStructVariant, S::Error> {
        let mut map = self.0.serialize_map(Some(len + 1))?;
        map.serialize_entry(KIND, variant)?;
        Ok(TaggedFields(map))
    }
}

/// The fields of a variant, written after its `kind`.
pub struct TaggedFields<M>(M);

impl<M: SerializeMap> SerializeStructVariant for TaggedFields<M> {
    type Ok = M::Ok;
    type Error = M::Error;

    fn serialize_field<T: ?Sized + ser::Serialize>(
        &mut self,
        key: &'static str,
        value: &T,
    ) -> Result<(), M::Error> {
        self.0.serialize_entry(key, value)
    }

    fn end(self) -> Result<M::Ok, M::Error> {
        self.0.end()
    }
}

impl<'de, D: Deserializer<'de>> Deserializer<'de> for KindTagged<D> {
    type Error = D::Error;

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, D::Error> {
        self.0.deserialize_map(TagFirst { visitor, variants })
    }

    fn deserialize_any<V: Visitor<'de>>(self, _visitor: V) -> Result<V::Value, D::Error> {
        Err(de::Error::custom(NOT_A_STRUCT_VARIANT))
    }

    forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf option
        unit unit_struct newtype_struct seq tuple tuple_struct map struct identifier ignored_any
    }
}

/// Reads the object: `kind` first (the one-pass path), else buffered.
struct TagFirst<V> {
    visitor: V,
    variants: &'static [&'static str],
}

impl<'de, V: Visitor<'de>> Visitor<'de> for TagFirst<V> {
    type Value = V::Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "a JSON object with a `{KIND}` field")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<V::Value, A::Error> {
        match map.next_key_seed(FirstKey)? {
            None => Err(de::Error::missing_field(KIND)),
            Some(None) => {
                let variant = map.next_value_seed(VariantName(self.variants))?;
                self.visitor.visit_enum(Tagged { variant, map })
            }
            Some(Some(first)) => buffered(self.visitor, self.variants, first, map),
        }
    }
}

/// `kind` came later: the fields go into a map first, then the variant is read from it.
fn buffered<'de, V: Visitor<'de>, A: MapAccess<'de>>(
    visitor: V,
    variants: &'static [&'static str],
    first: String,
    mut map: A,
) -> Result<V::Value, A::Error> {
    let mut fields = serde_json::Map::new();
    fields.insert(first, map.next_value()?);
    while let Some(key) = map.next_key::<String>()? {
        let value = map.next_value()?;
        fields.insert(key, value);
    }
    let variant = match fields.remove(KIND) {
        Some(serde_json::Value::String(kind)) => VariantName(variants).visit_str(&kind)?,
        Some(other) => {
            return Err(de::Error::custom(format!(
                "`{KIND}` must be a string, not {other}"
            )));
        }
        None => return Err(de::Error::missing_field(KIND)),
    };
    let map = de::value::MapDeserializer::<_, serde_json::Error>::new(fields.into_iter());
    visitor
        .visit_enum(Tagged { variant, map })
        .map_err(de::Error::custom)
}

/// Reads the first key: `None` when it is `kind` (without allocating), else the key.
struct FirstKey;

impl<'de> DeserializeSeed<'de> for FirstKey {
    type Value = Option<String>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl Visitor<'_> for FirstKey {
    type Value = Option<String>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a field name")
    }

    fn visit_str<E: de::Error>(self, key: &str) -> Result<Self::Value, E> {
        Ok((key != KIND).then(|| key.to_string()))
    }
}

/// Reads the `kind` value as one of the enum's variant names, without allocating.
struct VariantName(&'static [&'static str]);

impl<'de> DeserializeSeed<'de> for VariantName {
    type Value = &'static str;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl Visitor<'_> for VariantName {
    type Value = &'static str;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "`{KIND}` as a string")
    }

    fn visit_str<E: de::Error>(self, kind: &str) -> Result<Self::Value, E> {
        self.0
            .iter()
            .find(|v| **v == kind)
            .copied()
            .ok_or_else(|| E::unknown_variant(kind, self.0))
    }
}

/// The variant named by `kind`, with the rest of the object as its fields.
struct Tagged<A> {
    variant: &'static str,
    map: A,
}

impl<'de, A: MapAccess<'de>> EnumAccess<'de> for Tagged<A> {
    type Error = A::Error;
    type Variant = Self;

    fn variant_seed<S: DeserializeSeed<'de>>(self, seed: S) -> Result<(S::Value, Self), A::Error> {
        let name = seed.deserialize(de::value::BorrowedStrDeserializer::new(self.variant))?;
        Ok((name, self))
    }
}

impl<'de, A: MapAccess<'de>> VariantAccess<'de> for Tagged<A> {
    type Error = A::Error;

    fn unit_variant(mut self) -> Result<(), A::Error> {
        while self.map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(())
    }

    fn newtype_variant_seed<T: DeserializeSeed<'de>>(self, _: T) -> Result<T::Value, A::Error> {
        Err(de::Error::custom(NOT_A_STRUCT_VARIANT))
    }

    fn tuple_variant<V: Visitor<'de>>(self, _: usize, _: V) -> Result<V::Value, A::Error> {
        Err(de::Error::custom(NOT_A_STRUCT_VARIANT))
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, A::Error> {
        visitor.visit_map(self.map)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::{Deserialize, Serialize};
    use serde_json::json;

    /// The representation under test.
    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    #[serde(remote = "Self", rename_all = "snake_case")]
    enum Ev {
        Ping {
            n: u32,
            #[serde(default, skip_serializing_if = "Option::is_none")]
            note: Option<String>,
            #[serde(default)]
            args: serde_json::Value,
        },
        Stop,
        Pair(u8, u8),
    }

    impl Serialize for Ev {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            Ev::serialize(self, KindTagged(s))
        }
    }

    impl<'de> Deserialize<'de> for Ev {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            Ev::deserialize(KindTagged(d))
        }
    }

    /// serde's own internally tagged form of the same enum: what older logs were written with.
    #[derive(Debug, Serialize, Deserialize)]
    #[serde(tag = "kind", rename_all = "snake_case")]
    enum SerdeTagged {
        Ping {
            n: u32,
            #[serde(default, skip_serializing_if = "Option::is_none")]
            note: Option<String>,
            #[serde(default)]
            args: serde_json::Value,
        },
        Stop,
    }

    fn ping(n: u32, note: Option<&str>) -> Ev {
        Ev::Ping {
            n,
            note: note.map(str::to_string),
            args: json!({"kind": "nested", "a": [1, 2]}),
        }
    }

    #[test]
    fn writes_exactly_what_serde_tag_writes_and_reads_it_back() {
        for (ours, theirs) in [
            (
                ping(1, None),
                SerdeTagged::Ping {
                    n: 1,
                    note: None,
                    args: json!({"kind": "nested", "a": [1, 2]}),
                },
            ),
            (
                ping(2, Some("x")),
                SerdeTagged::Ping {
                    n: 2,
                    note: Some("x".into()),
                    args: json!({"kind": "nested", "a": [1, 2]}),
                },
            ),
            (Ev::Stop, SerdeTagged::Stop),
        ] {
            let text = serde_json::to_string(&ours).unwrap();
            assert_eq!(text, serde_json::to_string(&theirs).unwrap());
            assert!(text.starts_with("{\"kind\":"), "{text}");
            assert_eq!(serde_json::from_str::<Ev>(&text).unwrap(), ours);
            assert_eq!(serde_json::from_value::<Ev>(json!(ours)).unwrap(), ours);
        }
    }

    #[test]
    fn kind_anywhere_in_the_object_is_read_and_unknown_fields_are_ignored() {
        let text = r#"{"n": 4, "added_later": {"x": 1}, "kind": "ping", "note": "late"}"#;
        assert_eq!(
            serde_json::from_str::<Ev>(text).unwrap(),
            Ev::Ping {
                n: 4,
                note: Some("late".into()),
                args: serde_json::Value::Null,
            }
        );
        let text = r#"{"kind": "ping", "added_later": [1], "n": 5}"#;
        assert!(matches!(
            serde_json::from_str::<Ev>(text).unwrap(),
            Ev::Ping { n: 5, .. }
        ));
        assert_eq!(
            serde_json::from_str::<Ev>(r#"{"x": 1, "kind": "stop"}"#).unwrap(),
            Ev::Stop
        );
    }

    #[test]
    fn bad_objects_say_what_is_wrong() {
        let error = |text: &str| serde_json::from_str::<Ev>(text).unwrap_err().to_string();
        assert!(error(r#"{"kind": "pong", "n": 1}"#).contains("unknown variant `pong`"));
        assert!(error(r#"{"n": 1, "kind": "pong"}"#).contains("unknown variant `pong`"));
        assert!(error(r#"{"n": 1}"#).contains("missing field `kind`"));
        assert!(error("{}").contains("missing field `kind`"));
        assert!(error(r#"{"n": 1, "kind": 7}"#).contains("must be a string"));
        assert!(error(r#"{"kind": 7}"#).contains("`kind` as a string"));
        assert!(error(r#"{"kind": "ping"}"#).contains("missing field `n`"));
        assert!(error(r#"{"kind": "ping", "n": "one"}"#).contains("invalid type"));
        assert!(error("[1]").contains("invalid type"));
        assert!(error(r#""ping""#).contains("invalid type"));
        assert!(error(r#"{"kind": "pair"}"#).contains("named fields"));
        let refused = serde_json::to_string(&Ev::Pair(1, 2)).unwrap_err();
        assert!(refused.to_string().contains("named fields"), "{refused}");
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(10_000))]

        /// Any text: an event or an error, never a panic; and an event read always writes back
        /// to an object that reads as the same event.
        #[test]
        fn arbitrary_text_never_panics(text in r#"\{("kind"|"n"|"note"|"args"|:|,|"ping"|"stop"|[0-9]|\[|\]|\{|\}| ){0,24}\}?"#) {
            if let Ok(event) = serde_json::from_str::<Ev>(&text) {
                let again = serde_json::to_string(&event).unwrap();
                proptest::prop_assert_eq!(serde_json::from_str::<Ev>(&again).unwrap(), event);
            }
        }
    }
}
