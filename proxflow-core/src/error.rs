//! The error of a configuration a layer cannot run with.

use std::error::Error;

/// A configuration value a layer refuses, with the field it came from and what is allowed.
///
/// Every layer's `from_config` returns it. The message reads `` `field`: reason ``, followed by
/// the cause where there is one (a folder that cannot be opened, a file that does not parse).
#[derive(Debug, thiserror::Error)]
#[error("`{field}`: {reason}")]
pub struct ConfigError {
    /// The field, as named in the serde config (`failure_threshold`, `trusted_proxies`).
    pub field: &'static str,
    /// What is wrong and what is allowed.
    pub reason: String,
    /// What caused it, when something outside the value did (an I/O error, a parse error).
    #[source]
    pub source: Option<Box<dyn Error + Send + Sync>>,
}

impl ConfigError {
    /// A refused value of `field`.
    pub fn new(field: &'static str, reason: impl Into<String>) -> Self {
        ConfigError {
            field,
            reason: reason.into(),
            source: None,
        }
    }

    /// The same error, caused by `source`.
    pub fn with_source(mut self, source: impl Into<Box<dyn Error + Send + Sync>>) -> Self {
        self.source = Some(source.into());
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_message_names_the_field() {
        let error = ConfigError::new("failure_threshold", "a share in [0, 1]; got 1.5");
        assert_eq!(
            error.to_string(),
            "`failure_threshold`: a share in [0, 1]; got 1.5"
        );
        assert!(error.source().is_none());
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "gone");
        let error = ConfigError::new("folders", "cannot open public").with_source(io);
        assert_eq!(error.source().unwrap().to_string(), "gone");
    }
}
