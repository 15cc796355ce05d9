//! What the proxflow layers share, and nothing else: the [`Clock`] each layer takes by
//! injection, the client's address behind trusted proxies ([`client`]), the body of the
//! layers' own answers ([`LayerBody`]), the connection's own header fields ([`headers`]), the
//! Redis server instances share ([`redis`]) and the field-naming [`ConfigError`].
//!
//! Layers read time only through a [`Clock`] given to their builder, so that tests can drive
//! them on tokio's paused clock without a cargo feature that would change the clock of every
//! binary in the same build:
//!
//! ```
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() {
//! use std::time::Duration;
//! use proxflow_core::Clock;
//!
//! let clock = Clock::tokio(); // a layer's `.clock(clock.clone())`
//! let start = clock.now();
//! tokio::time::advance(Duration::from_secs(60)).await;
//! assert_eq!(clock.elapsed(start), Duration::from_secs(60));
//! # }
//! ```

pub mod body;
pub mod client;
pub mod clock;
mod error;
pub mod headers;
pub mod redis;

pub use body::{text_response, BoxError, ConnectionDropped, LayerBody};
pub use client::{ClientAddr, ForwardedHeader, TrustedProxies};
pub use clock::{Clock, ManualClock, Moment};
pub use error::ConfigError;
