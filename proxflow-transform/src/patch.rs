//! RFC 6902 JSON Patch: `add`, `remove`, `replace`, `move`, `copy` and `test`, evaluated in
//! order on a copy of the document, which replaces it only when every operation succeeded.

use serde_json::{Map, Value};

use crate::pointer::{array_index, Path, PathError};

/// One operation of a patch.
#[derive(Debug, Clone, PartialEq)]
pub enum Operation {
    /// Adds `value` at `path`: a member set, an array element inserted (`-`: appended), or the
    /// whole document replaced.
    Add {
        /// Where.
        path: Path,
        /// What.
        value: Value,
    },
    /// Removes what is at `path`, which must exist.
    Remove {
        /// Where.
        path: Path,
    },
    /// Replaces what is at `path`, which must exist.
    Replace {
        /// Where.
        path: Path,
        /// With what.
        value: Value,
    },
    /// Removes what is at `from` and adds it at `path`; `from` cannot be a parent of `path`.
    Move {
        /// From where.
        from: Path,
        /// To where.
        path: Path,
    },
    /// Adds a copy of what is at `from` at `path`.
    Copy {
        /// From where.
        from: Path,
        /// To where.
        path: Path,
    },
    /// Succeeds when what is at `path` equals `value` (numbers by value, objects without
    /// order).
    Test {
        /// Where.
        path: Path,
        /// The value expected there.
        value: Value,
    },
}

/// Why an operation or a patch fails; the document is then unchanged.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PatchError {
    /// The patch document is not an array of operation objects.
    #[error("a patch is an array of operation objects")]
    NotAPatch,
    /// An operation lacks a member, or has one of the wrong type.
    #[error("operation {index}: {reason}")]
    Malformed {
        /// The operation's position in the patch.
        index: usize,
        /// What is wrong.
        reason: String,
    },
    /// A path does not parse.
    #[error("operation {index}: {source}")]
    Path {
        /// The operation's position in the patch.
        index: usize,
        /// Why.
        source: PathError,
    },
    /// The target (or `from`) does not exist, or an array index is out of range.
    #[error("operation {index}: nothing at {path}")]
    NotFound {
        /// The operation's position in the patch.
        index: usize,
        /// The path, as a JSON Pointer.
        path: String,
    },
    /// `move` into one of the moved value's own children.
    #[error("operation {index}: cannot move {from} into its own child {path}")]
    MoveIntoChild {
        /// The operation's position in the patch.
        index: usize,
        /// The source.
        from: String,
        /// The target.
        path: String,
    },
    /// A `test` that did not match.
    #[error("operation {index}: test failed at {path}")]
    TestFailed {
        /// The operation's position in the patch.
        index: usize,
        /// The path, as a JSON Pointer.
        path: String,
    },
}

impl Operation {
    /// The operations of an RFC 6902 patch document (members other than those of an
    /// operation are ignored, as §4 says).
    pub fn parse_patch(patch: &Value) -> Result<Vec<Operation>, PatchError> {
        let Value::Array(items) = patch else {
            return Err(PatchError::NotAPatch);
        };
        items
            .iter()
            .enumerate()
            .map(|(index, item)| Operation::parse(index, item))
            .collect()
    }

    fn parse(index: usize, item: &Value) -> Result<Operation, PatchError> {
        let malformed = |reason: &str| PatchError::Malformed {
            index,
            reason: reason.to_string(),
        };
        let Value::Object(member) = item else {
            return Err(malformed("an operation is an object"));
        };
        let text = |name: &str| match member.get(name) {
            Some(Value::String(s)) => Ok(s.as_str()),
            Some(_) => Err(malformed(&format!("\"{name}\" is a string"))),
            None => Err(malformed(&format!("\"{name}\" is missing"))),
        };
        let path = |name: &str| {
            Path::pointer(text(name)?).map_err(|source| PatchError::Path { index, source })
        };
        let value = || {
            member
                .get("value")
                .cloned()
                .ok_or_else(|| malformed("\"value\" is missing"))
        };
        Ok(match text("op")? {
            "add" => Operation::Add {
                path: path("path")?,
                value: value()?,
            },
            "remove" => Operation::Remove {
                path: path("path")?,
            },
            "replace" => Operation::Replace {
                path: path("path")?,
                value: value()?,
            },
            "move" => Operation::Move {
                from: path("from")?,
                path: path("path")?,
            },
            "copy" => Operation::Copy {
                from: path("from")?,
                path: path("path")?,
            },
            "test" => Operation::Test {
                path: path("path")?,
                value: value()?,
            },
            other => return Err(malformed(&format!("unknown op {other:?}"))),
        })
    }
}

/// Applies `operations` in order; on the first failure `document` is left as it was.
pub fn apply(document: &mut Value, operations: &[Operation]) -> Result<(), PatchError> {
    let mut work = document.clone();
    for (index, operation) in operations.iter().enumerate() {
        apply_one(&mut work, index, operation)?;
    }
    *document = work;
    Ok(())
}

/// One operation, numbered `index` in its errors, on `doc` itself (a `move` that fails half
/// way leaves it changed: [`apply`] works on a copy).
pub(crate) fn apply_one(
    doc: &mut Value,
    index: usize,
    operation: &Operation,
) -> Result<(), PatchError> {
    let not_found = |path: &Path| PatchError::NotFound {
        index,
        path: path.to_string(),
    };
    match operation {
        Operation::Add { path, value } => {
            add(doc, path, value.clone()).ok_or_else(|| not_found(path))
        }
        Operation::Remove { path } => remove(doc, path).map(drop).ok_or_else(|| not_found(path)),
        Operation::Replace { path, value } => {
            let target = get_mut(doc, path.tokens()).ok_or_else(|| not_found(path))?;
            *target = value.clone();
            Ok(())
        }
        Operation::Move { from, path } => {
            if from.is_proper_prefix_of(path) {
                return Err(PatchError::MoveIntoChild {
                    index,
                    from: from.to_string(),
                    path: path.to_string(),
                });
            }
            let value = remove(doc, from).ok_or_else(|| not_found(from))?;
            add(doc, path, value).ok_or_else(|| not_found(path))
        }
        Operation::Copy { from, path } => {
            let value = get(doc, from.tokens())
                .ok_or_else(|| not_found(from))?
                .clone();
            add(doc, path, value).ok_or_else(|| not_found(path))
        }
        Operation::Test { path, value } => {
            let found = get(doc, path.tokens()).ok_or_else(|| not_found(path))?;
            if json_eq(found, value) {
                Ok(())
            } else {
                Err(PatchError::TestFailed {
                    index,
                    path: path.to_string(),
                })
            }
        }
    }
}

/// What is at `tokens`, if anything.
pub(crate) fn get<'a>(doc: &'a Value, tokens: &[String]) -> Option<&'a Value> {
    tokens.iter().try_fold(doc, |value, token| match value {
        Value::Object(map) => map.get(token),
        Value::Array(items) => items.get(array_index(token)?),
        _ => None,
    })
}

pub(crate) fn get_mut<'a>(doc: &'a mut Value, tokens: &[String]) -> Option<&'a mut Value> {
    tokens.iter().try_fold(doc, |value, token| match value {
        Value::Object(map) => map.get_mut(token),
        Value::Array(items) => items.get_mut(array_index(token)?),
        _ => None,
    })
}

/// RFC 6902 §4.1's add; `None` when the parent is missing or the index out of range.
pub(crate) fn add(doc: &mut Value, path: &Path, value: Value) -> Option<()> {
    let Some((parents, last)) = path.split_last() else {
        *doc = value;
        return Some(());
    };
    match get_mut(doc, parents)? {
        Value::Object(map) => {
            map.insert(last.to_string(), value);
        }
        Value::Array(items) => {
            let at = if last == "-" {
                items.len()
            } else {
                array_index(last)?
            };
            if at > items.len() {
                return None;
            }
            items.insert(at, value);
        }
        _ => return None,
    }
    Some(())
}

/// RFC 6902 §4.2's remove, returning what was there; `None` when nothing was.
pub(crate) fn remove(doc: &mut Value, path: &Path) -> Option<Value> {
    let Some((parents, last)) = path.split_last() else {
        return Some(std::mem::replace(doc, Value::Null));
    };
    match get_mut(doc, parents)? {
        Value::Object(map) => map.remove(last),
        Value::Array(items) => {
            let at = array_index(last)?;
            (at < items.len()).then(|| items.remove(at))
        }
        _ => None,
    }
}

/// JSON equality (RFC 6902 §4.6): numbers by value, strings by code points, arrays in order,
/// objects as sets of members.
pub fn json_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            match (x.as_i64(), y.as_i64(), x.as_u64(), y.as_u64()) {
                (Some(x), Some(y), _, _) => x == y,
                (_, _, Some(x), Some(y)) => x == y,
                _ => x.as_f64() == y.as_f64(),
            }
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| json_eq(a, b))
        }
        (Value::Object(x), Value::Object(y)) => objects_eq(x, y),
        _ => a == b,
    }
}

fn objects_eq(x: &Map<String, Value>, y: &Map<String, Value>) -> bool {
    x.len() == y.len()
        && x.iter()
            .all(|(k, v)| y.get(k).is_some_and(|w| json_eq(v, w)))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn patch(doc: Value, ops: Value) -> Result<Value, PatchError> {
        let mut doc = doc;
        apply(&mut doc, &Operation::parse_patch(&ops)?)?;
        Ok(doc)
    }

    #[test]
    fn the_rfc_s_examples() {
        assert_eq!(
            patch(
                json!({"foo": ["bar", "baz"]}),
                json!([{"op": "add", "path": "/foo/1", "value": "qux"}])
            ),
            Ok(json!({"foo": ["bar", "qux", "baz"]}))
        );
        assert_eq!(
            patch(
                json!({"foo": [1]}),
                json!([{"op": "add", "path": "/foo/-", "value": 2}])
            ),
            Ok(json!({"foo": [1, 2]}))
        );
        assert!(matches!(
            patch(
                json!({"a": {"b": 1}}),
                json!([{"op": "move", "from": "/a", "path": "/a/b/c"}])
            ),
            Err(PatchError::MoveIntoChild { .. })
        ));
        assert_eq!(
            patch(
                json!({"n": 1}),
                json!([{"op": "test", "path": "/n", "value": 1.0}])
            ),
            Ok(json!({"n": 1}))
        );
    }

    #[test]
    fn a_failed_operation_leaves_the_document_unchanged() {
        let mut doc = json!({"a": 1});
        let ops = Operation::parse_patch(&json!([
            {"op": "add", "path": "/b", "value": 2},
            {"op": "remove", "path": "/missing"}
        ]))
        .unwrap();
        assert!(matches!(
            apply(&mut doc, &ops),
            Err(PatchError::NotFound { index: 1, .. })
        ));
        assert_eq!(doc, json!({"a": 1}));
    }
}
