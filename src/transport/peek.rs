//! What a JSON-RPC body asks for, read in one pass over the paid body
//! without building it: each message's `method` and, for `tools/call`, the
//! tool's `name`, mapped to the scopes they need (`auth::needed`). The
//! same pass is the JSON check (a body that is not JSON gets -32700), so
//! the body is scanned once before rmcp parses it.
//!
//! Nothing is taken on trust from the shape: a batch needs what all its
//! messages need, and a key given twice counts with every value it was
//! given (one parser keeps the first, another the last), so a body cannot
//! ask rmcp for one tool while showing this check another.

use std::fmt;

use serde::Deserializer;
use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};

use crate::auth::{self, Scopes};

/// Longest method or tool name kept for the check; longer ones are no
/// name this server knows.
const MAX_NAME: usize = 128;

/// The scopes the body's messages need; `Err` when it is not JSON.
pub fn needs(body: &[u8]) -> Result<Scopes, serde_json::Error> {
    let mut de = serde_json::Deserializer::from_slice(body);
    let mut acc = Scopes::NONE;
    Body(&mut acc).deserialize(&mut de)?;
    de.end()?;
    Ok(acc)
}

/// Accepts any JSON value and drops it (for values of no interest).
fn drain_map<'de, A: MapAccess<'de>>(mut map: A) -> Result<(), A::Error> {
    while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
    Ok(())
}

fn drain_seq<'de, A: SeqAccess<'de>>(mut seq: A) -> Result<(), A::Error> {
    while seq.next_element::<IgnoredAny>()?.is_some() {}
    Ok(())
}

/// Implements the scalar visits as "nothing of interest".
macro_rules! ignore_scalars {
    ($ok:expr) => {
        fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
            Ok($ok)
        }
        fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
            Ok($ok)
        }
        fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
            Ok($ok)
        }
        fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
            Ok($ok)
        }
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok($ok)
        }
    };
}

/// The whole body: one message or a batch.
struct Body<'a>(&'a mut Scopes);

impl<'de> DeserializeSeed<'de> for Body<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Body<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON-RPC message or batch")
    }
    ignore_scalars!(());
    fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
        Ok(())
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element_seed(Message(&mut *self.0))?.is_some() {}
        Ok(())
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<(), A::Error> {
        Message(self.0).visit_map(map)
    }
}

/// One message: its methods and tool names.
struct Message<'a>(&'a mut Scopes);

impl<'de> DeserializeSeed<'de> for Message<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Message<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON-RPC message")
    }
    ignore_scalars!(());
    fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
        Ok(())
    }
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<(), A::Error> {
        drain_seq(seq)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let mut methods: Vec<String> = Vec::new();
        let mut names: Vec<String> = Vec::new();
        while let Some(key) = map.next_key::<Key>()? {
            match key {
                Key::Method => {
                    if let Some(m) = map.next_value::<Name>()?.0 {
                        methods.push(m);
                    }
                }
                Key::Params => map.next_value_seed(Params(&mut names))?,
                Key::Other => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        for m in &methods {
            if names.is_empty()
                && let Some(s) = auth::needed(m, None)
            {
                *self.0 = self.0.with(s);
            }
            for n in &names {
                if let Some(s) = auth::needed(m, Some(n)) {
                    *self.0 = self.0.with(s);
                }
            }
        }
        Ok(())
    }
}

/// A key of interest, matched without keeping the key.
enum Key {
    Method,
    Params,
    Other,
}

impl<'de> de::Deserialize<'de> for Key {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Key;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a key")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Key, E> {
                Ok(match s {
                    "method" => Key::Method,
                    "params" => Key::Params,
                    _ => Key::Other,
                })
            }
        }
        d.deserialize_identifier(V)
    }
}

/// A short string value, or nothing (any other value, drained).
struct Name(Option<String>);

impl<'de> de::Deserialize<'de> for Name {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Name;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a name")
            }
            ignore_scalars!(Name(None));
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Name, E> {
                Ok(Name((s.len() <= MAX_NAME).then(|| s.to_string())))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Name, A::Error> {
                drain_seq(seq).map(|_| Name(None))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Name, A::Error> {
                drain_map(map).map(|_| Name(None))
            }
        }
        d.deserialize_any(V)
    }
}

/// `params`: the tool's `name` when it is an object.
struct Params<'a>(&'a mut Vec<String>);

impl<'de> DeserializeSeed<'de> for Params<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Params<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("params")
    }
    ignore_scalars!(());
    fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
        Ok(())
    }
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<(), A::Error> {
        drain_seq(seq)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(key) = map.next_key::<ParamKey>()? {
            if key.0 {
                if let Some(n) = map.next_value::<Name>()?.0 {
                    self.0.push(n);
                }
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(())
    }
}

/// Whether a key of `params` is `name`.
struct ParamKey(bool);

impl<'de> de::Deserialize<'de> for ParamKey {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = ParamKey;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a key")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<ParamKey, E> {
                Ok(ParamKey(s == "name"))
            }
        }
        d.deserialize_identifier(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::Scope;

    fn call(tool: &str) -> String {
        format!(
            r#"{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{{"name":"{tool}","arguments":{{"prompt":"a \"quoted\" prompt","n":[1,2,{{"x":null}}]}}}}}}"#
        )
    }

    fn only(s: Scope) -> Scopes {
        Scopes::NONE.with(s)
    }

    #[test]
    fn tool_calls_need_their_tools_scope() {
        assert_eq!(
            needs(call("generate_image").as_bytes()).unwrap(),
            only(Scope::Generate)
        );
        assert_eq!(
            needs(call("edit_image").as_bytes()).unwrap(),
            only(Scope::Edit)
        );
        assert_eq!(
            needs(call("get_last_image_info").as_bytes()).unwrap(),
            only(Scope::Read)
        );
        assert_eq!(
            needs(call("configure_gemini_token").as_bytes()).unwrap(),
            Scopes::NONE
        );
        // params before method, and an escaped name.
        let b = r#"{"params":{"arguments":{},"name":"generate\u005fimage"},"method":"tools/call","id":2,"jsonrpc":"2.0"}"#;
        assert_eq!(needs(b.as_bytes()).unwrap(), only(Scope::Generate));
    }

    #[test]
    fn other_methods() {
        for (m, want) in [
            ("initialize", Scopes::NONE),
            ("tools/list", Scopes::NONE),
            ("notifications/initialized", Scopes::NONE),
            ("resources/read", only(Scope::Read)),
            ("tasks/cancel", only(Scope::Read)),
        ] {
            let b = format!(r#"{{"jsonrpc":"2.0","id":1,"method":"{m}","params":{{}}}}"#);
            assert_eq!(needs(b.as_bytes()).unwrap(), want, "{m}");
        }
        // A response from the client (no method).
        assert_eq!(
            needs(br#"{"jsonrpc":"2.0","id":1,"result":{}}"#).unwrap(),
            Scopes::NONE
        );
        // Positional params, odd types: nothing known, still JSON.
        for b in [
            r#"{"method":"tools/call","params":["generate_image"]}"#,
            r#"{"method":7,"params":{"name":{"a":1}}}"#,
            r#"[1, "x", null, true]"#,
            r#""just a string""#,
        ] {
            assert_eq!(needs(b.as_bytes()).unwrap(), Scopes::NONE, "{b}");
        }
    }

    #[test]
    fn batches_and_repeated_keys_need_everything_they_name() {
        let b = format!("[{}, {}]", call("generate_image"), call("edit_image"));
        assert_eq!(
            needs(b.as_bytes()).unwrap(),
            only(Scope::Generate).with(Scope::Edit)
        );
        let b = r#"{"method":"tools/call","params":{"name":"get_configuration_status","name":"generate_image"}}"#;
        assert_eq!(
            needs(b.as_bytes()).unwrap(),
            only(Scope::Read).with(Scope::Generate)
        );
        let b = r#"{"method":"tools/list","method":"tools/call","params":{"name":"edit_image"}}"#;
        assert_eq!(needs(b.as_bytes()).unwrap(), only(Scope::Edit));
    }

    #[test]
    fn not_json_is_an_error() {
        for b in ["", "not json", r#"{"method":"tools/call""#, "{} {}", "{}x"] {
            assert!(needs(b.as_bytes()).is_err(), "{b:?}");
        }
    }
}
