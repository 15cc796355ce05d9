//! [`Upstream`]: where a balancer sends requests, and its static weight.

use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;

use http::uri::{Authority, Scheme};
use http::Uri;
use proxflow_core::ConfigError;

/// The largest static weight: a weight is a share, and a million to one is as uneven as a
/// share gets.
pub const MAX_WEIGHT: u32 = 1_000_000;

/// An upstream of an [`AdaptiveLb`](crate::AdaptiveLb): the scheme and authority requests
/// go to (`http://10.0.0.1:8080`), and its static weight (default 1).
///
/// Made from a parsed URI ([`Upstream::new`]), a literal ([`Upstream::from_static`]), a socket
/// address (`http://` assumed), or parsed from untrusted text with [`str::parse`], whose error
/// says what is wrong.
///
/// ```
/// use proxflow_lb::Upstream;
///
/// let a = Upstream::from_static("http://10.0.0.1:8080").weight(3);
/// let b: Upstream = "https://api.example".parse()?;
/// let c = Upstream::from(std::net::SocketAddr::from(([127, 0, 0, 1], 3000)));
/// assert_eq!(a.to_string(), "http://10.0.0.1:8080");
/// assert_eq!((a.static_weight(), b.static_weight()), (3, 1));
/// assert_eq!(c.to_string(), "http://127.0.0.1:3000");
/// # Ok::<(), proxflow_lb::ConfigError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Upstream {
    scheme: Scheme,
    authority: Authority,
    weight: u32,
}

impl Upstream {
    /// The upstream at `uri`, of weight 1.
    ///
    /// # Panics
    ///
    /// If `uri` is not `http://authority` or `https://authority` (a path other than `/`, a
    /// query, another scheme, or no scheme). Parse untrusted text with [`str::parse`] instead.
    pub fn new(uri: Uri) -> Upstream {
        match Upstream::try_from(uri) {
            Ok(upstream) => upstream,
            Err(error) => panic!("Upstream::new: {}", error.reason),
        }
    }

    /// The upstream at a URL written in the program, of weight 1.
    ///
    /// # Panics
    ///
    /// If `url` is not `http://authority` or `https://authority`, as [`Upstream::new`].
    pub fn from_static(url: &'static str) -> Upstream {
        match url.parse() {
            Ok(upstream) => upstream,
            Err(error) => panic!("Upstream::from_static: {}", error.reason),
        }
    }

    /// Its static weight: its share in weighted round robin, a multiplier of its share in the
    /// other policies. Default 1.
    ///
    /// # Panics
    ///
    /// If `weight` is 0 or above [`MAX_WEIGHT`]. (To send an upstream no traffic, drain it
    /// with [`LbHandle::drain`](crate::LbHandle::drain).)
    pub fn weight(mut self, weight: u32) -> Upstream {
        if let Err(reason) = check_weight(weight) {
            panic!("Upstream::weight: {reason}");
        }
        self.weight = weight;
        self
    }

    /// Its static weight.
    pub fn static_weight(&self) -> u32 {
        self.weight
    }

    /// `http` or `https`.
    pub fn scheme(&self) -> &Scheme {
        &self.scheme
    }

    /// Host and port.
    pub fn authority(&self) -> &Authority {
        &self.authority
    }

    pub(crate) fn into_parts(self) -> (Scheme, Authority, u32) {
        (self.scheme, self.authority, self.weight)
    }
}

/// The weight's range, as an error message.
pub(crate) fn check_weight(weight: u32) -> Result<(), String> {
    if (1..=MAX_WEIGHT).contains(&weight) {
        Ok(())
    } else {
        Err(format!("a weight is in 1..={MAX_WEIGHT}; got {weight}"))
    }
}

/// The error of an upstream URL, naming the config field it comes from.
fn invalid(url: impl fmt::Display) -> ConfigError {
    ConfigError::new(
        "upstreams.url",
        format!(
            "expected http://host:port or https://host:port; got {:?}",
            url.to_string()
        ),
    )
}

impl TryFrom<Uri> for Upstream {
    type Error = ConfigError;

    /// Scheme and authority of `uri`; anything after the authority but `/` is refused.
    fn try_from(uri: Uri) -> Result<Upstream, ConfigError> {
        let scheme = uri.scheme().cloned().ok_or_else(|| invalid(&uri))?;
        if scheme != Scheme::HTTP && scheme != Scheme::HTTPS {
            return Err(invalid(&uri));
        }
        let authority = uri.authority().cloned().ok_or_else(|| invalid(&uri))?;
        if uri
            .path_and_query()
            .is_some_and(|path| path.as_str() != "/")
        {
            return Err(invalid(&uri));
        }
        Ok(Upstream {
            scheme,
            authority,
            weight: 1,
        })
    }
}

impl FromStr for Upstream {
    type Err = ConfigError;

    fn from_str(url: &str) -> Result<Upstream, ConfigError> {
        let uri: Uri = url.parse().map_err(|_| invalid(url))?;
        Upstream::try_from(uri).map_err(|_| invalid(url))
    }
}

impl From<SocketAddr> for Upstream {
    /// `http://` at this address, of weight 1.
    fn from(addr: SocketAddr) -> Upstream {
        let authority = Authority::try_from(addr.to_string())
            .unwrap_or_else(|_| unreachable!("a socket address is an authority"));
        Upstream {
            scheme: Scheme::HTTP,
            authority,
            weight: 1,
        }
    }
}

impl fmt::Display for Upstream {
    /// `scheme://authority`, the name snapshots and [`LbHandle`](crate::LbHandle) use.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://{}", self.scheme, self.authority)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_urls_only() {
        for good in [
            "http://10.0.0.1:8080",
            "https://api.example",
            "http://10.0.0.1:8080/",
            "http://[::1]:80",
        ] {
            assert!(good.parse::<Upstream>().is_ok(), "{good}");
        }
        for bad in [
            "10.0.0.1:8080",
            "ftp://x",
            "http://x/path",
            "http://x/?q",
            "",
            "http://",
        ] {
            let error = bad.parse::<Upstream>().unwrap_err();
            assert_eq!(error.field, "upstreams.url", "{bad}");
        }
        let v6 = Upstream::from(SocketAddr::from(([0, 0, 0, 0, 0, 0, 0, 1], 80)));
        assert_eq!(v6.to_string(), "http://[::1]:80");
    }

    #[test]
    #[should_panic(expected = "Upstream::from_static: expected http://host:port")]
    fn a_path_panics_at_the_call() {
        Upstream::from_static("http://x/path");
    }

    #[test]
    #[should_panic(expected = "Upstream::weight: a weight is in 1..=1000000; got 0")]
    fn a_zero_weight_panics_at_the_call() {
        let _ = Upstream::from_static("http://x").weight(0);
    }
}
