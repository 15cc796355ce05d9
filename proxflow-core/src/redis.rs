//! Where a layer finds the Redis server it shares with other instances: the `redis` section of
//! a configuration, in the origin's names (`address`, `password`, `db`), read into the URL
//! the `redis` crate opens.
//!
//! ```
//! use proxflow_core::redis::RedisConfig;
//!
//! let config = RedisConfig {
//!     password: Some("s3cr/t".into()),
//!     db: 2,
//!     ..RedisConfig::new("localhost:6379")
//! };
//! assert_eq!(config.url("redis")?, "redis://:s3cr%2Ft@localhost:6379/2");
//! # Ok::<(), proxflow_core::ConfigError>(())
//! ```
//!
//! One server (or a proxy in front of several) is what the layers speak to. A Redis Cluster
//! (several addresses) and Sentinel (`redis+sentinel://`) are refused with an error that says
//! so: the layers' scripts and channels are not written for keys spread over shards.

use serde::{Deserialize, Serialize};

use crate::ConfigError;

/// A Redis server: `address` is `host:port`, or a `redis://`, `rediss://` (TLS, when the
/// `redis` crate is built with it) or `unix://` URL.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisConfig {
    /// `host:port` or a URL. Default port 6379.
    pub address: String,
    /// The ACL user, when the server has users (`AUTH user password`).
    #[serde(default)]
    pub username: Option<String>,
    /// The password (`requirepass`, or the user's).
    #[serde(default)]
    pub password: Option<String>,
    /// The database index. Default 0.
    #[serde(default)]
    pub db: u32,
}

impl RedisConfig {
    /// A server at `address`, no password, database 0.
    pub fn new(address: impl Into<String>) -> Self {
        RedisConfig {
            address: address.into(),
            ..RedisConfig::default()
        }
    }

    /// The URL to open; the error names `field` (the section's place in the caller's
    /// configuration) and says what is wrong.
    pub fn url(&self, field: &'static str) -> Result<String, ConfigError> {
        let address = self.address.trim();
        let invalid = |reason: String| ConfigError::new(field, reason);
        if address.is_empty() {
            return Err(invalid("address: empty".into()));
        }
        if address.contains(',') || address.contains(' ') {
            return Err(invalid(format!(
                "address {address:?}: several addresses (a Redis Cluster) are not supported; \
                 give one server, or a proxy in front of the cluster"
            )));
        }
        let (scheme, rest) = match address.split_once("://") {
            Some((scheme, rest)) => (scheme.to_ascii_lowercase(), rest),
            None => ("redis".to_string(), address),
        };
        match scheme.as_str() {
            "redis" | "rediss" | "valkey" | "valkeys" => {}
            "unix" | "redis+unix" => return Ok(format!("{scheme}://{rest}")),
            "redis+sentinel" | "rediss+sentinel" => {
                return Err(invalid(format!(
                "address {address:?}: Redis Sentinel is not supported; give the master's address"
            )))
            }
            other => {
                return Err(invalid(format!(
                    "address {address:?}: unknown scheme {other:?}"
                )))
            }
        }
        // A URL's own credentials and database stay unless the section sets its own.
        let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
        let (credentials, host) = match authority.rsplit_once('@') {
            Some((credentials, host)) => (Some(credentials), host),
            None => (None, authority),
        };
        if host.is_empty() {
            return Err(invalid(format!("address {address:?}: no host")));
        }
        let host = if host.contains(':') && !host.ends_with(']') {
            host.to_string()
        } else {
            format!("{host}:6379")
        };
        let credentials = match (&self.username, &self.password) {
            (None, None) => credentials.map(str::to_string),
            (user, password) => Some(format!(
                "{}:{}",
                encode(user.as_deref().unwrap_or("")),
                encode(password.as_deref().unwrap_or(""))
            )),
        };
        let db = if self.db != 0 || path.is_empty() {
            self.db.to_string()
        } else {
            path.to_string()
        };
        let at = credentials.map(|c| format!("{c}@")).unwrap_or_default();
        Ok(format!("{scheme}://{at}{host}/{db}"))
    }
}

/// Percent-encodes what a URL's user information cannot hold as is.
fn encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(address: &str) -> Result<String, ConfigError> {
        RedisConfig::new(address).url("redis")
    }

    #[test]
    fn addresses_become_urls() {
        assert_eq!(url("localhost").unwrap(), "redis://localhost:6379/0");
        assert_eq!(url("127.0.0.1:7000").unwrap(), "redis://127.0.0.1:7000/0");
        assert_eq!(
            url("redis://:pw@h:1/3").unwrap(),
            "redis://:pw@h:1/3",
            "a URL's own credentials and db stay"
        );
        assert_eq!(
            url("unix:///run/redis.sock").unwrap(),
            "unix:///run/redis.sock"
        );
        let config = RedisConfig {
            address: "h:1".into(),
            username: Some("app".into()),
            password: Some("p@ss word".into()),
            db: 5,
        };
        assert_eq!(
            config.url("redis").unwrap(),
            "redis://app:p%40ss%20word@h:1/5"
        );
    }

    #[test]
    fn clusters_and_sentinels_are_refused_by_name() {
        let error = url("h1:7000,h2:7000").unwrap_err();
        assert!(error.to_string().contains("Cluster"), "{error}");
        let error = url("redis+sentinel://h:26379/mymaster").unwrap_err();
        assert!(error.to_string().contains("Sentinel"), "{error}");
        assert!(url("http://h").is_err());
        assert!(url("").is_err());
    }
}
