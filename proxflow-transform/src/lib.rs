//! Header and JSON body transforms as a Tower layer.
//!
//! [`TransformLayer`] runs header rules and JSON body rules on requests and responses, each
//! under a [`When`] (method, path prefix or [`PathGlob`], a request header, content type,
//! response status);
//! its docs say how bodies are read, limited and refused. What it is made of:
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
//! - [`query`]: the same verbs on a request's query parameters.
//! - [`enrich`]: static data and a URL's JSON answer merged into a body (through a client
//!   service of yours), with a timeout and a failure policy (skip, or 502).
//! - [`aggregate`]: an endpoint the layer answers itself from several backends called at
//!   once (merge, array or group; partial answers say so; 502 when all failed).
//! - [`config`]: the same rules as a JSON, YAML or TOML file writes them
//!   ([`TransformLayer::from_config`]).
//!
//! - Coded bodies: with [`TransformLayer::decode_content`] (feature `compression`, on by
//!   default), `gzip`, `deflate`, `br` and `zstd` JSON bodies are decoded, transformed and
//!   encoded again in their coding, decoding stopping at the body limit.
//!
//! Hostile bodies (deep nesting, numbers past `f64`, duplicate keys, invalid UTF-8,
//! compression bombs) are tested: serde_json refuses nesting past 128 levels and invalid input
//! (400 for a request), and keeps the last of duplicate keys.
//!
//! Not done: an enrichment URL is the same for every body (no templates in it), so its kept
//! answer is one object; the JSON library is serde_json (see `benches/RESULTS.md` for the
//! measurement against sonic-rs and simd-json).
pub mod aggregate;
mod body;
mod client;
mod coding;
pub mod config;
pub mod enrich;
pub mod headers;
mod layer;
pub mod patch;
mod pointer;
pub mod query;
pub mod rules;
mod service;

pub use body::TransformBody;
pub use client::Client;
pub use config::TransformConfig;
pub use layer::{PathGlob, TransformLayer, When};
pub use proxflow_core::ConfigError;
pub use service::{ResponseFuture, Transform};

pub use pointer::{Path, PathError};
