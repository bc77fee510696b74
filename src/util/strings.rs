//! Visit every string value a `Serialize` type holds, as `serde_json::to_value` followed
//! by a walk over its string leaves would, without building the JSON tree.

use serde::ser::{self, Serialize};

/// Call `f` on every string in `v`'s serialized form: strings, chars and unit enum
/// variants (which serialize as strings), in any nesting. Map keys and struct field names
/// are not values and are skipped; numbers, booleans and bytes hold no strings.
pub fn for_each_string<T: Serialize + ?Sized>(v: &T, f: &mut dyn FnMut(&str)) {
    let _ = v.serialize(Strings { f });
}

struct Strings<'a, 'f> {
    f: &'a mut (dyn FnMut(&str) + 'f),
}

#[derive(Debug)]
struct Never;

impl std::fmt::Display for Never {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("custom serialization error")
    }
}

impl std::error::Error for Never {}

impl ser::Error for Never {
    fn custom<T: std::fmt::Display>(_: T) -> Self {
        Never
    }
}

macro_rules! ignore {
    ($($name:ident: $t:ty),*) => {
        $(fn $name(self, _: $t) -> Result<(), Never> { Ok(()) })*
    };
}

impl<'a, 'f> ser::Serializer for Strings<'a, 'f> {
    type Ok = ();
    type Error = Never;
    type SerializeSeq = Self;
    type SerializeTuple = Self;
    type SerializeTupleStruct = Self;
    type SerializeTupleVariant = Self;
    type SerializeMap = Self;
    type SerializeStruct = Self;
    type SerializeStructVariant = Self;

    ignore!(serialize_bool: bool, serialize_i8: i8, serialize_i16: i16, serialize_i32: i32, serialize_i64: i64,
        serialize_i128: i128, serialize_u8: u8, serialize_u16: u16, serialize_u32: u32, serialize_u64: u64,
        serialize_u128: u128, serialize_f32: f32, serialize_f64: f64, serialize_bytes: &[u8],
        serialize_unit_struct: &'static str);

    fn serialize_char(self, v: char) -> Result<(), Never> {
        (self.f)(v.encode_utf8(&mut [0; 4]));
        Ok(())
    }
    fn serialize_str(self, v: &str) -> Result<(), Never> {
        (self.f)(v);
        Ok(())
    }
    fn serialize_none(self) -> Result<(), Never> {
        Ok(())
    }
    fn serialize_some<T: Serialize + ?Sized>(self, v: &T) -> Result<(), Never> {
        v.serialize(self)
    }
    fn serialize_unit(self) -> Result<(), Never> {
        Ok(())
    }
    fn serialize_unit_variant(self, _: &'static str, _: u32, variant: &'static str) -> Result<(), Never> {
        (self.f)(variant);
        Ok(())
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(self, _: &'static str, v: &T) -> Result<(), Never> {
        v.serialize(self)
    }
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        v: &T,
    ) -> Result<(), Never> {
        v.serialize(self)
    }
    fn serialize_seq(self, _: Option<usize>) -> Result<Self, Never> {
        Ok(self)
    }
    fn serialize_tuple(self, _: usize) -> Result<Self, Never> {
        Ok(self)
    }
    fn serialize_tuple_struct(self, _: &'static str, _: usize) -> Result<Self, Never> {
        Ok(self)
    }
    fn serialize_tuple_variant(self, _: &'static str, _: u32, _: &'static str, _: usize) -> Result<Self, Never> {
        Ok(self)
    }
    fn serialize_map(self, _: Option<usize>) -> Result<Self, Never> {
        Ok(self)
    }
    fn serialize_struct(self, _: &'static str, _: usize) -> Result<Self, Never> {
        Ok(self)
    }
    fn serialize_struct_variant(self, _: &'static str, _: u32, _: &'static str, _: usize) -> Result<Self, Never> {
        Ok(self)
    }
}

impl Strings<'_, '_> {
    fn value<T: Serialize + ?Sized>(&mut self, v: &T) -> Result<(), Never> {
        v.serialize(Strings { f: &mut *self.f })
    }
}

macro_rules! elements {
    ($($trait:ident: $method:ident),*) => {$(
        impl ser::$trait for Strings<'_, '_> {
            type Ok = ();
            type Error = Never;
            fn $method<T: Serialize + ?Sized>(&mut self, v: &T) -> Result<(), Never> {
                self.value(v)
            }
            fn end(self) -> Result<(), Never> {
                Ok(())
            }
        }
    )*};
}

elements!(SerializeSeq: serialize_element, SerializeTuple: serialize_element,
    SerializeTupleStruct: serialize_field, SerializeTupleVariant: serialize_field);

impl ser::SerializeMap for Strings<'_, '_> {
    type Ok = ();
    type Error = Never;
    fn serialize_key<T: Serialize + ?Sized>(&mut self, _: &T) -> Result<(), Never> {
        Ok(())
    }
    fn serialize_value<T: Serialize + ?Sized>(&mut self, v: &T) -> Result<(), Never> {
        self.value(v)
    }
    fn end(self) -> Result<(), Never> {
        Ok(())
    }
}

macro_rules! fields {
    ($($trait:ident),*) => {$(
        impl ser::$trait for Strings<'_, '_> {
            type Ok = ();
            type Error = Never;
            fn serialize_field<T: Serialize + ?Sized>(&mut self, _: &'static str, v: &T) -> Result<(), Never> {
                self.value(v)
            }
            fn end(self) -> Result<(), Never> {
                Ok(())
            }
        }
    )*};
}

fields!(SerializeStruct, SerializeStructVariant);

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Serialize;

    fn via_json<T: Serialize>(v: &T) -> Vec<String> {
        fn walk(v: &serde_json::Value, out: &mut Vec<String>) {
            match v {
                serde_json::Value::String(s) => out.push(s.clone()),
                serde_json::Value::Array(a) => a.iter().for_each(|x| walk(x, out)),
                serde_json::Value::Object(m) => m.values().for_each(|x| walk(x, out)),
                _ => {}
            }
        }
        let mut out = Vec::new();
        walk(&serde_json::to_value(v).unwrap(), &mut out);
        out
    }

    fn direct<T: Serialize>(v: &T) -> Vec<String> {
        let mut out = Vec::new();
        for_each_string(v, &mut |s| out.push(s.to_string()));
        out
    }

    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    enum Kind {
        Plain,
        Wrapped(String),
        Pair { a: String, n: u32 },
    }

    #[derive(Serialize)]
    #[serde(untagged)]
    enum Either {
        One(String),
        Many(Vec<String>),
    }

    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    struct Spec {
        name: String,
        skipped: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        absent: Option<String>,
        present: Option<String>,
        kinds: Vec<Kind>,
        labels: std::collections::BTreeMap<String, String>,
        values: Vec<Either>,
        raw: serde_json::Value,
        letter: char,
        tuple: (String, u8, bool),
        retries: u32,
    }

    #[test]
    fn visits_the_strings_a_json_walk_visits() {
        let spec = Spec {
            name: "t".into(),
            skipped: None,
            absent: None,
            present: Some("$(tasks.a.results.x)".into()),
            kinds: vec![Kind::Plain, Kind::Wrapped("w".into()), Kind::Pair { a: "p".into(), n: 2 }],
            labels: [("key-not-a-value".to_string(), "v".to_string())].into(),
            values: vec![Either::One("o".into()), Either::Many(vec!["m1".into(), "m2".into()])],
            raw: serde_json::json!({"k": ["x", 1, true, null, {"deep": "$(params.p)"}]}),
            letter: 'é',
            tuple: ("tu".into(), 1, false),
            retries: 3,
        };
        let expected = via_json(&spec);
        assert_eq!(
            expected,
            ["t", "$(tasks.a.results.x)", "plain", "w", "p", "v", "o", "m1", "m2", "x", "$(params.p)", "é", "tu"]
        );
        assert_eq!(direct(&spec), expected);
    }
}
