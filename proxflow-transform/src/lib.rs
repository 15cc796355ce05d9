//! Header and JSON body transforms as a Tower layer (issue 20, being built).
//!
//! What exists so far: the JSON operations' exact core, with no layer around it yet.
//!
//! - [`Path`]: RFC 6901 JSON Pointers and dotted paths (`user.name`, `items.0.id`, `\.` for a
//!   dot in a key), read into the same reference tokens.
//! - [`patch`]: RFC 6902 JSON Patch (`add`, `remove`, `replace`, `move`, `copy`, `test`),
//!   evaluated in order on a copy, all or nothing; checked against the public JSON Patch test
//!   suite (`tests/json_patch_suite.rs`).
//!
//! ```
//! use proxflow_transform::patch::{apply, Operation};
//! use serde_json::json;
//!
//! let mut user = json!({"user": {"name": "ada", "tags": ["a"]}});
//! let ops = Operation::parse_patch(&json!([
//!     {"op": "replace", "path": "/user/name", "value": "enriched"},
//!     {"op": "add", "path": "/user/tags/-", "value": "b"},
//! ]))?;
//! apply(&mut user, &ops)?;
//! assert_eq!(user, json!({"user": {"name": "enriched", "tags": ["a", "b"]}}));
//! # Ok::<(), proxflow_transform::patch::PatchError>(())
//! ```
//!
//! - [`rules`]: the body verbs around it, `set` (creating parents), `delete`, `append` and
//!   `prepend` (a scalar promoted to an array by option), `allow` and `deny` filters, in the
//!   order written, all or nothing.
//!
//! - [`headers`]: the header verbs (`add`, `set`, `append`, `delete`, `rename`), values as
//!   templates over the request, and the protected headers.
//!
//! Not yet (issue 20): the query verbs, rule conditions and the config, the layer with its
//! body buffering and limits, encodings, enrichment, aggregation, and the benchmarks.

pub mod headers;
pub mod patch;
mod pointer;
pub mod rules;

pub use pointer::{Path, PathError};
