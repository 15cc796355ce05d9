//! The body verbs of a transform, over the RFC 6902 core: the six RFC operations as the RFC
//! defines them, and the gateway verbs around them (`set`, `delete`, `append`, `prepend`,
//! `allow`, `deny`). A rule set runs in the order written on a copy of the body, which
//! replaces it only when every rule succeeded.

use serde_json::{Map, Value};

use crate::headers::{RequestView, Template};
use crate::patch::{self, add, get_mut, remove, Operation, PatchError};
use crate::pointer::{array_index, Path};

/// One body rule.
#[derive(Debug, Clone, PartialEq)]
pub enum BodyRule {
    /// An RFC 6902 operation, with its exact semantics: `add`, `remove`, `replace` (the target
    /// must exist), `move` (also written `rename`), `copy`, `test`.
    Patch(Operation),
    /// Creates or overwrites the value at `path`, making missing parent objects on the way.
    Set {
        /// Where.
        path: Path,
        /// What.
        value: Value,
    },
    /// Removes the value at `path` if there is one (RFC `remove` fails when there is none).
    Delete {
        /// Where.
        path: Path,
    },
    /// Adds `value` at the end of the array at `path` (created if missing); a scalar or an
    /// object there becomes the first element of a new array when `promote` is set, and
    /// fails the rule set otherwise.
    Append {
        /// Where.
        path: Path,
        /// What.
        value: Value,
        /// Whether a value that is not an array is wrapped in one.
        promote: bool,
    },
    /// As [`BodyRule::Append`], at the start.
    Prepend {
        /// Where.
        path: Path,
        /// What.
        value: Value,
        /// Whether a value that is not an array is wrapped in one.
        promote: bool,
    },
    /// Keeps only these paths (and what is under them); the rest of the document goes.
    Allow {
        /// The paths kept.
        paths: Vec<Path>,
    },
    /// Removes these paths where present.
    Deny {
        /// The paths removed.
        paths: Vec<Path>,
    },
}

impl BodyRule {
    /// The value this rule writes or tests, for the verbs that carry one.
    pub fn value_mut(&mut self) -> Option<&mut Value> {
        match self {
            BodyRule::Patch(
                Operation::Add { value, .. }
                | Operation::Replace { value, .. }
                | Operation::Test { value, .. },
            )
            | BodyRule::Set { value, .. }
            | BodyRule::Append { value, .. }
            | BodyRule::Prepend { value, .. } => Some(value),
            _ => None,
        }
    }
}

/// A body rule as a layer holds it: its value, when it is a template, rendered from each
/// request as a JSON string.
#[derive(Debug, Clone)]
pub struct BodyStep {
    rule: BodyRule,
    template: Option<Template>,
}

impl BodyStep {
    /// `rule` with its value rendered from `template` for each request.
    ///
    /// # Panics
    ///
    /// If `rule` carries no value (`remove`, `move`, `copy`, `delete`, `allow`, `deny`).
    pub fn templated(mut rule: BodyRule, template: Template) -> BodyStep {
        assert!(
            rule.value_mut().is_some(),
            "BodyStep::templated: the rule takes no value"
        );
        BodyStep {
            rule,
            template: Some(template),
        }
    }

    /// Its template, if its value is one.
    pub(crate) fn template(&self) -> Option<&Template> {
        self.template.as_ref()
    }

    /// The rule for one request.
    pub(crate) fn render(&self, request: &RequestView<'_>) -> BodyRule {
        let mut rule = self.rule.clone();
        if let (Some(template), Some(value)) = (&self.template, rule.value_mut()) {
            *value = Value::String(template.render(request));
        }
        rule
    }
}

impl From<BodyRule> for BodyStep {
    fn from(rule: BodyRule) -> Self {
        BodyStep {
            rule,
            template: None,
        }
    }
}

/// Why a rule set failed; the body is then unchanged.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RuleError {
    /// An RFC 6902 operation failed.
    #[error("rule {index}: {source}")]
    Patch {
        /// The rule's position.
        index: usize,
        /// Why.
        source: PatchError,
    },
    /// `set` through a value that is not an object or an array, or past an array's end.
    #[error("rule {index}: cannot set {path}: a parent is not an object")]
    NoParent {
        /// The rule's position.
        index: usize,
        /// The path, as a JSON Pointer.
        path: String,
    },
    /// `append` or `prepend` on a value that is not an array, without `promote`.
    #[error("rule {index}: {path} is not an array")]
    NotAnArray {
        /// The rule's position.
        index: usize,
        /// The path, as a JSON Pointer.
        path: String,
    },
}

/// Applies `rules` in order; on the first failure `document` is left as it was.
pub fn apply(document: &mut Value, rules: &[BodyRule]) -> Result<(), RuleError> {
    let mut work = document.clone();
    apply_in_place(&mut work, rules)?;
    *document = work;
    Ok(())
}

/// Applies `rules` in order to `document` itself, without a copy: on a failure it is left
/// with the rules before the failing one applied. For a caller that keeps the original (the
/// layer keeps the body's bytes and sends them on unchanged), this saves a copy of the whole
/// document.
pub fn apply_in_place(document: &mut Value, rules: &[BodyRule]) -> Result<(), RuleError> {
    for (index, rule) in rules.iter().enumerate() {
        apply_one(document, index, rule)?;
    }
    Ok(())
}

fn apply_one(doc: &mut Value, index: usize, rule: &BodyRule) -> Result<(), RuleError> {
    match rule {
        BodyRule::Patch(operation) => patch::apply_one(doc, index, operation)
            .map_err(|source| RuleError::Patch { index, source }),
        BodyRule::Set { path, value } => {
            set(doc, path, value.clone()).ok_or_else(|| RuleError::NoParent {
                index,
                path: path.to_string(),
            })
        }
        BodyRule::Delete { path } => {
            remove(doc, path);
            Ok(())
        }
        BodyRule::Append {
            path,
            value,
            promote,
        } => push(doc, index, path, value.clone(), *promote, false),
        BodyRule::Prepend {
            path,
            value,
            promote,
        } => push(doc, index, path, value.clone(), *promote, true),
        BodyRule::Allow { paths } => {
            let paths: Vec<&[String]> = paths.iter().map(Path::tokens).collect();
            prune(doc, &paths);
            Ok(())
        }
        BodyRule::Deny { paths } => {
            for path in paths {
                remove(doc, path);
            }
            Ok(())
        }
    }
}

/// `set`: missing parents become objects; an existing array takes an index or `-`.
fn set(doc: &mut Value, path: &Path, value: Value) -> Option<()> {
    let Some((parents, last)) = path.split_last() else {
        *doc = value;
        return Some(());
    };
    let mut target = doc;
    for token in parents {
        target = match target {
            Value::Object(map) => map
                .entry(token.clone())
                .or_insert_with(|| Value::Object(Map::new())),
            Value::Array(items) => items.get_mut(array_index(token)?)?,
            _ => return None,
        };
    }
    match target {
        Value::Object(map) => {
            map.insert(last.to_string(), value);
            Some(())
        }
        Value::Array(items) if last == "-" => {
            items.push(value);
            Some(())
        }
        Value::Array(items) => {
            *items.get_mut(array_index(last)?)? = value;
            Some(())
        }
        _ => None,
    }
}

/// For `allow`: keeps in `value` only what lies on or under one of `paths` (each relative to
/// `value`); whether anything was kept. An array keeps the order of its elements, closing up
/// over those dropped.
fn prune(value: &mut Value, paths: &[&[String]]) -> bool {
    if paths.iter().any(|path| path.is_empty()) {
        return true;
    }
    let under = |token: &str| -> Vec<&[String]> {
        paths
            .iter()
            .filter(|path| path[0] == token)
            .map(|path| &path[1..])
            .collect()
    };
    match value {
        Value::Object(map) => {
            map.retain(|key, member| {
                let paths = under(key);
                !paths.is_empty() && prune(member, &paths)
            });
            !map.is_empty()
        }
        Value::Array(items) => {
            let mut position = 0;
            items.retain_mut(|item| {
                let paths = under(&position.to_string());
                position += 1;
                !paths.is_empty() && prune(item, &paths)
            });
            !items.is_empty()
        }
        _ => false,
    }
}

/// `append` and `prepend`.
fn push(
    doc: &mut Value,
    index: usize,
    path: &Path,
    value: Value,
    promote: bool,
    front: bool,
) -> Result<(), RuleError> {
    let not_an_array = || RuleError::NotAnArray {
        index,
        path: path.to_string(),
    };
    let Some(target) = get_mut(doc, path.tokens()) else {
        return add(doc, path, Value::Array(vec![value])).ok_or_else(|| RuleError::NoParent {
            index,
            path: path.to_string(),
        });
    };
    if !target.is_array() {
        if !promote {
            return Err(not_an_array());
        }
        let single = std::mem::take(target);
        *target = Value::Array(vec![single]);
    }
    let Value::Array(items) = target else {
        return Err(not_an_array());
    };
    if front {
        items.insert(0, value);
    } else {
        items.push(value);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn p(text: &str) -> Path {
        Path::parse(text).unwrap()
    }

    fn run(doc: Value, rules: &[BodyRule]) -> Result<Value, RuleError> {
        let mut doc = doc;
        apply(&mut doc, rules)?;
        Ok(doc)
    }

    #[test]
    fn set_creates_parents_and_overwrites() {
        let rules = [
            BodyRule::Set {
                path: p("user.name"),
                value: json!("enriched"),
            },
            BodyRule::Set {
                path: p("meta.source.kind"),
                value: json!("gateway"),
            },
            BodyRule::Set {
                path: p("items.-"),
                value: json!(3),
            },
            BodyRule::Set {
                path: p("items.0"),
                value: json!(0),
            },
        ];
        assert_eq!(
            run(json!({"user": {"name": "ada"}, "items": [1, 2]}), &rules),
            Ok(
                json!({"user": {"name": "enriched"}, "meta": {"source": {"kind": "gateway"}}, "items": [0, 2, 3]})
            )
        );
        let through_scalar = [BodyRule::Set {
            path: p("user.name.first"),
            value: json!(1),
        }];
        assert!(matches!(
            run(json!({"user": {"name": "ada"}}), &through_scalar),
            Err(RuleError::NoParent { .. })
        ));
    }

    #[test]
    fn append_prepend_and_promotion() {
        let doc = json!({"tags": ["b"], "one": "x"});
        let rules = [
            BodyRule::Append {
                path: p("tags"),
                value: json!("c"),
                promote: false,
            },
            BodyRule::Prepend {
                path: p("tags"),
                value: json!("a"),
                promote: false,
            },
            BodyRule::Append {
                path: p("new"),
                value: json!(1),
                promote: false,
            },
            BodyRule::Append {
                path: p("one"),
                value: json!("y"),
                promote: true,
            },
        ];
        assert_eq!(
            run(doc.clone(), &rules),
            Ok(json!({"tags": ["a", "b", "c"], "new": [1], "one": ["x", "y"]}))
        );
        let strict = [BodyRule::Append {
            path: p("one"),
            value: json!("y"),
            promote: false,
        }];
        assert!(matches!(
            run(doc, &strict),
            Err(RuleError::NotAnArray { .. })
        ));
    }

    #[test]
    fn delete_is_quiet_and_remove_is_not() {
        let doc = json!({"a": 1});
        assert_eq!(
            run(doc.clone(), &[BodyRule::Delete { path: p("missing") }]),
            Ok(doc.clone())
        );
        let remove = BodyRule::Patch(Operation::Remove {
            path: p("/missing"),
        });
        assert!(matches!(
            run(doc, &[remove]),
            Err(RuleError::Patch { index: 0, .. })
        ));
    }

    #[test]
    fn allow_keeps_only_the_listed_paths_and_deny_drops_them() {
        let doc = json!({"user": {"name": "ada", "password": "x", "email": "a@b"}, "items": [{"id": 1, "secret": 2}], "debug": true});
        let allow = BodyRule::Allow {
            paths: vec![p("user.name"), p("user.email"), p("items.0.id")],
        };
        assert_eq!(
            run(doc.clone(), &[allow]),
            Ok(json!({"user": {"name": "ada", "email": "a@b"}, "items": [{"id": 1}]}))
        );
        let deny = BodyRule::Deny {
            paths: vec![p("user.password"), p("debug"), p("nothing.here")],
        };
        assert_eq!(
            run(doc, &[deny]),
            Ok(json!({"user": {"name": "ada", "email": "a@b"}, "items": [{"id": 1, "secret": 2}]}))
        );
    }

    #[test]
    fn a_failing_rule_leaves_the_body_as_it_was() {
        let doc = json!({"a": 1});
        let rules = [
            BodyRule::Set {
                path: p("b"),
                value: json!(2),
            },
            BodyRule::Patch(Operation::Test {
                path: p("/a"),
                value: json!(2),
            }),
        ];
        let mut body = doc.clone();
        assert!(apply(&mut body, &rules).is_err());
        assert!(crate::patch::json_eq(&body, &doc));
    }
}
