//! Errors.

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
}
