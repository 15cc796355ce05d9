//! Errors.

use std::path::PathBuf;

/// A configuration the layer cannot run with. Each variant names the field.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A field has a value outside what it allows.
    #[error("`{field}`: {reason}")]
    Invalid {
        /// The field, as named in the serde config.
        field: &'static str,
        /// What is allowed.
        reason: String,
    },
    /// A folder to serve cannot be opened.
    #[error("`folders`: cannot use {path}: {source}")]
    Folder {
        /// The folder as configured.
        path: PathBuf,
        /// Why it cannot be used.
        source: std::io::Error,
    },
    /// The asset manifest cannot be read or parsed.
    #[error("`manifest`: cannot load {path}: {reason}")]
    Manifest {
        /// The manifest file as configured.
        path: PathBuf,
        /// Why it cannot be loaded.
        reason: String,
    },
}
