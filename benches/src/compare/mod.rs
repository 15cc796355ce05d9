//! The contestants of comparisons that more than one program runs (`cache_vs_vendors`,
//! `static_vs_nginx` and `vendor_compare`): how each is started, what it is given, and the checks made before it is
//! loaded.

pub mod cache;
pub mod origin;
pub mod statics;
