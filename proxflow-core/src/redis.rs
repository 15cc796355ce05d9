//! Where a layer finds the Redis server it shares with other instances: the `redis` section of
//! a configuration, in the origin's names (`address`, `password`, `db`), checked, and read
//! into the `redis` crate's connection settings (feature `redis`).
//!
//! ```
//! use proxflow_core::redis::{Fields, RedisConfig};
//!
//! let config = RedisConfig {
//!     password: Some("secret".into()),
//!     db: Some(2),
//!     ..RedisConfig::new("localhost:6379")
//! };
//! config.check(FIELDS)?;
//! assert!(!format!("{config:?}").contains("secret"), "Debug hides the password");
//! # const FIELDS: Fields = Fields { address: "redis.address", db: "redis.db" };
//! # Ok::<(), proxflow_core::ConfigError>(())
//! ```
//!
//! One server (or a proxy in front of several) is what the layers speak to. A Redis Cluster
//! (several addresses, a cluster scheme) and Sentinel are refused with an error that says so:
//! the layers' scripts and channels are not written for keys spread over shards.

use serde::{Deserialize, Serialize};

use crate::ConfigError;

/// Which Redis, and how to log in. Its `Debug` hides the password.
#[derive(Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisConfig {
    /// `host:port` (the origin's `localhost:6379`), or a URL:
    /// `redis://[user:password@]host[:port][/db]`, `redis+unix:///path/to/redis.sock`.
    pub address: String,
    /// `AUTH` password; overrides one in the URL. Default: none (or the URL's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
    /// `AUTH` user name (Redis 6 ACLs); overrides one in the URL. Default: none (or the URL's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// The database index; overrides one in the URL. Default: the URL's, else 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub db: Option<i64>,
}

/// The names a configuration gives the section's fields, for its errors
/// (`distributed.redis.address`, say).
#[derive(Debug, Clone, Copy)]
pub struct Fields {
    /// The `address` field.
    pub address: &'static str,
    /// The `db` field.
    pub db: &'static str,
}

impl std::fmt::Debug for RedisConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisConfig")
            .field("address", &self.address)
            .field("password", &self.password.as_ref().map(|_| "<hidden>"))
            .field("username", &self.username)
            .field("db", &self.db)
            .finish()
    }
}

impl RedisConfig {
    /// A server at `address`, no password, the default database.
    pub fn new(address: impl Into<String>) -> Self {
        RedisConfig {
            address: address.into(),
            ..RedisConfig::default()
        }
    }

    /// Refuses what is not one standalone server (Sentinel and Cluster addresses) and a
    /// negative database, whatever the features.
    pub fn check(&self, fields: Fields) -> Result<(), ConfigError> {
        let address = self.address.trim();
        if address.is_empty() {
            return Err(ConfigError::new(
                fields.address,
                "must name a Redis server, such as localhost:6379",
            ));
        }
        let scheme = address
            .split_once("://")
            .map(|(scheme, _)| scheme.to_ascii_lowercase());
        if scheme.as_deref().is_some_and(|s| s.contains("sentinel")) {
            return Err(ConfigError::new(
                fields.address,
                format!(
                    "{address:?}: Redis Sentinel is not supported; give the address of the \
                     master (or of a proxy that follows failovers)"
                ),
            ));
        }
        if scheme.as_deref().is_some_and(|s| s.contains("cluster"))
            || address.contains(',')
            || address.split_whitespace().nth(1).is_some()
        {
            return Err(ConfigError::new(
                fields.address,
                format!(
                    "{address:?}: Redis Cluster is not supported; give one standalone server \
                     (or a proxy in front of the cluster)"
                ),
            ));
        }
        if self.db.is_some_and(|db| db < 0) {
            return Err(ConfigError::new(
                fields.db,
                "must be a database index, 0 or more",
            ));
        }
        Ok(())
    }

    /// The connection settings: the address with the password, user and db applied.
    #[cfg(feature = "redis")]
    pub fn connection_info(&self, fields: Fields) -> Result<redis::ConnectionInfo, ConfigError> {
        use redis::IntoConnectionInfo;
        self.check(fields)?;
        let address = self.address.trim();
        let url = if address.contains("://") {
            address.to_string()
        } else {
            format!("redis://{address}")
        };
        let info = url.as_str().into_connection_info().map_err(|error| {
            ConfigError::new(
                fields.address,
                format!(
                    "{address:?}: expected host:port or a redis://, redis+unix:// URL ({error})"
                ),
            )
        })?;
        let mut settings = info.redis_settings().clone();
        if let Some(password) = &self.password {
            settings = settings.set_password(password);
        }
        if let Some(username) = &self.username {
            settings = settings.set_username(username);
        }
        if let Some(db) = self.db {
            settings = settings.set_db(db);
        }
        Ok(info.set_redis_settings(settings))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIELDS: Fields = Fields {
        address: "redis.address",
        db: "redis.db",
    };

    #[test]
    fn clusters_sentinels_and_negative_databases_are_refused_by_name() {
        let check = |address: &str| RedisConfig::new(address).check(FIELDS);
        assert!(check("localhost:6379").is_ok());
        assert!(check("redis://:pw@h:1/3").is_ok());
        let error = check("h1:7000,h2:7000").unwrap_err();
        assert!(error.to_string().contains("Cluster"), "{error}");
        let error = check("redis+sentinel://h:26379/mymaster").unwrap_err();
        assert!(error.to_string().contains("Sentinel"), "{error}");
        assert!(check("").is_err());
        let negative = RedisConfig {
            db: Some(-1),
            ..RedisConfig::new("h:1")
        };
        assert_eq!(negative.check(FIELDS).unwrap_err().field, "redis.db");
    }
}
