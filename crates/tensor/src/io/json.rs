//! JSON objects read in document order with duplicate keys rejected.
//!
//! `serde_json`'s own maps keep the last of two equal keys without a word; a checkpoint
//! whose header names a tensor twice must be an error instead, so headers and indexes
//! are read through [`Entries`].

use std::collections::HashSet;
use std::fmt;
use std::marker::PhantomData;

use serde::de::{Deserialize, Deserializer, Error as _, MapAccess, Visitor};

/// The entries of a JSON object in document order; deserializing fails on a repeated key.
pub(crate) struct Entries<V>(pub Vec<(String, V)>);

impl<'de, V: Deserialize<'de>> Deserialize<'de> for Entries<V> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct EntriesVisitor<V>(PhantomData<V>);

        impl<'de, V: Deserialize<'de>> Visitor<'de> for EntriesVisitor<V> {
            type Value = Entries<V>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Entries<V>, A::Error> {
                let mut seen = HashSet::new();
                let mut entries = Vec::new();
                while let Some(key) = map.next_key::<String>()? {
                    if !seen.insert(key.clone()) {
                        return Err(A::Error::custom(format!("duplicate key `{key}`")));
                    }
                    let value = map.next_value::<V>()?;
                    entries.push((key, value));
                }
                Ok(Entries(entries))
            }
        }

        deserializer.deserialize_map(EntriesVisitor(PhantomData))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_order_and_rejects_duplicates() {
        let e: Entries<u32> = serde_json::from_str(r#"{"b": 1, "a": 2}"#).unwrap();
        assert_eq!(e.0, vec![("b".to_string(), 1), ("a".to_string(), 2)]);
        let err = serde_json::from_str::<Entries<u32>>(r#"{"a": 1, "a": 2}"#).err().unwrap().to_string();
        assert!(err.contains("duplicate key `a`"), "{err}");
        assert!(serde_json::from_str::<Entries<u32>>("[1]").is_err());
    }
}
