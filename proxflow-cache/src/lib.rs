//! An RFC 9111 shared HTTP cache as a Tower layer (issue 19, being built).
//!
//! What exists so far is listed below; the README's crate table says what is left.
//!
//! - [`warming`]: predictive warming's arithmetic: per key, how often and how regularly it is
//!   requested, and which key tends to follow which.

mod directives;
mod policy;
pub mod warming;
