//! What a request is counted under.

use std::borrow::Cow;
use std::fmt;
use std::hash::{BuildHasher, RandomState};
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;
use std::sync::Arc;

use http::{Extensions, HeaderMap, HeaderName, Method, Uri};
use proxflow_core::client::{
    client_ip, group_by_prefix, peer_addr, ForwardedHeader, TrustedProxies,
};
use proxflow_core::ConfigError;

/// The parts of a request a key is taken from.
#[derive(Debug, Clone, Copy)]
pub struct RequestView<'a> {
    /// The method.
    pub method: &'a Method,
    /// The URI.
    pub uri: &'a Uri,
    /// The headers.
    pub headers: &'a HeaderMap,
    /// The extensions (authentication middleware puts the user there).
    pub extensions: &'a Extensions,
    /// The connection's peer, when the service was given it with
    /// [`RateLimit::with_peer`](crate::RateLimit::with_peer).
    pub peer: Option<SocketAddr>,
}

/// A custom key: return `None` when the request has no key.
///
/// Closures work: `|request: &RequestView<'_>| request.headers.get("x-tenant").map(|v| v.as_bytes().to_vec())`.
pub trait KeyExtractor: Send + Sync + 'static {
    /// The key's bytes; equal bytes share a bucket.
    fn extract(&self, request: &RequestView<'_>) -> Option<Vec<u8>>;
}

impl<F> KeyExtractor for F
where
    F: Fn(&RequestView<'_>) -> Option<Vec<u8>> + Send + Sync + 'static,
{
    fn extract(&self, request: &RequestView<'_>) -> Option<Vec<u8>> {
        self(request)
    }
}

/// The authenticated user, put into the request's extensions by authentication middleware.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct UserId(pub String);

/// What requests are counted under: each distinct key has a limit of its own.
///
/// In a config, `key` reads `ip`, `user`, `api_key`, `header:<name>` or `global` (its
/// [`FromStr`] and [`Display`](fmt::Display)); a [`Key::Custom`] exists only in code.
#[derive(Clone)]
pub enum Key {
    /// The client's address. **The server must record it, or every client shares one
    /// bucket**: serve axum with `into_make_service_with_connect_info::<SocketAddr>()`, tell a
    /// hyper service its peer with [`RateLimit::with_peer`](crate::RateLimit::with_peer), or
    /// insert a [`ClientAddr`](crate::ClientAddr) into each request. A plain
    /// `axum::serve(listener, router)` records none: such requests have no key (they go where
    /// [`missing_key`](crate::RateLimitLayer::missing_key) says, one shared bucket by default),
    /// count as [`no_client_address`](crate::StatsSnapshot::no_client_address), and the first
    /// one logs a warning.
    ///
    /// The address is the connection's peer, or behind
    /// [trusted proxies](crate::RateLimitLayer::trusted_proxies) the one they forward; IPv6
    /// clients are grouped by [prefix](crate::RateLimitLayer::ipv6_prefix).
    Ip,
    /// The authenticated user: a [`UserId`] in the request's extensions, else the
    /// [`user_header`](crate::RateLimitLayer::user_header).
    User,
    /// The API key: the [`api_key_header`](crate::RateLimitLayer::api_key_header), else the
    /// [`api_key_query`](crate::RateLimitLayer::api_key_query) parameter.
    ApiKey,
    /// The value of a request header (a tenant id, say); an empty value is no key.
    Header(HeaderName),
    /// One key for every request: a limit on the whole service.
    Global,
    /// A key of your own; [`Key::custom`] makes one from a closure.
    Custom(Arc<dyn KeyExtractor>),
}

impl Key {
    /// A key of your own (a closure over [`RequestView`] works).
    pub fn custom(extractor: impl KeyExtractor) -> Key {
        Key::Custom(Arc::new(extractor))
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// The config's spelling: `ip`, `user`, `api_key`, `header:<name>`, `global`; `custom` for a
/// [`Key::Custom`] (which no config can name).
impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Key::Ip => f.write_str("ip"),
            Key::User => f.write_str("user"),
            Key::ApiKey => f.write_str("api_key"),
            Key::Header(name) => write!(f, "header:{name}"),
            Key::Global => f.write_str("global"),
            Key::Custom(_) => f.write_str("custom"),
        }
    }
}

/// Reads the config's spelling. The error names the field `key`.
impl FromStr for Key {
    type Err = ConfigError;

    fn from_str(text: &str) -> Result<Key, ConfigError> {
        Ok(match text {
            "ip" => Key::Ip,
            "user" => Key::User,
            "api_key" => Key::ApiKey,
            "global" => Key::Global,
            other => {
                let name = other.strip_prefix("header:").ok_or_else(|| {
                    ConfigError::new(
                        "key",
                        format!("{other:?}: expected ip, user, api_key, header:<name> or global"),
                    )
                })?;
                let name = HeaderName::from_bytes(name.as_bytes()).map_err(|_| {
                    ConfigError::new("key", format!("{name:?} is not a header name"))
                })?;
                Key::Header(name)
            }
        })
    }
}

/// Everything key extraction needs, fixed when the layer is built.
#[derive(Debug, Clone)]
pub(crate) struct KeyRules {
    pub(crate) kind: Key,
    pub(crate) trusted: TrustedProxies,
    pub(crate) forwarded_header: ForwardedHeader,
    pub(crate) ipv6_prefix: u8,
    pub(crate) user_header: Option<HeaderName>,
    pub(crate) api_key_header: HeaderName,
    pub(crate) api_key_query: Option<String>,
    /// Seeded per process, so clients cannot aim keys at each other's hashes.
    pub(crate) seed: RandomState,
    /// The `ip` key's hash, keyed from `seed`.
    pub(crate) address: AddressHasher,
}

/// A request's key: a seeded 64-bit hash of what identifies the client.
pub(crate) type KeyHash = u64;

/// How a key's parts become its hash. Key extraction is written once, over this.
pub(crate) trait KeyHasher {
    type Hash;
    /// A key of `kind` (a tag per [`Key`] variant) whose value is `value`.
    fn bytes(&self, kind: u8, value: &[u8]) -> Self::Hash;
    /// An `ip` key: the address as one 128-bit word.
    fn address(&self, bits: u128) -> Self::Hash;
}

/// The process's own hash: seeded at random, so clients cannot aim keys at each other's.
struct Seeded<'a>(&'a KeyRules);

impl KeyHasher for Seeded<'_> {
    type Hash = KeyHash;

    #[inline]
    fn bytes(&self, kind: u8, value: &[u8]) -> KeyHash {
        self.0.seed.hash_one((kind, value))
    }

    #[inline]
    fn address(&self, bits: u128) -> KeyHash {
        self.0.address.hash(bits)
    }
}

impl KeyRules {
    /// The key's hash, or `None` when the request has no key of this kind.
    #[inline]
    pub(crate) fn key(&self, request: &RequestView<'_>) -> Option<KeyHash> {
        self.key_with(request, &Seeded(self))
    }

    /// The key, hashed by `hasher`, or `None` when the request has no key of this kind.
    #[inline]
    pub(crate) fn key_with<H: KeyHasher>(
        &self,
        request: &RequestView<'_>,
        hasher: &H,
    ) -> Option<H::Hash> {
        match &self.kind {
            Key::Global => Some(hasher.bytes(0, &[])),
            Key::Ip => {
                let peer = peer(request)?.ip();
                let client = client_ip(peer, request.headers, &self.trusted, self.forwarded_header);
                Some(self.ip_key(client, hasher))
            }
            Key::User => {
                if let Some(UserId(user)) = request.extensions.get::<UserId>() {
                    return Some(hasher.bytes(2, user.as_bytes()));
                }
                let value = request.headers.get(self.user_header.as_ref()?)?;
                non_empty(value.as_bytes()).map(|bytes| hasher.bytes(2, bytes))
            }
            Key::ApiKey => {
                // An empty header is no key, and must not hide the query's (the backend may
                // well read the query).
                let header = request.headers.get(&self.api_key_header);
                if let Some(bytes) = header.and_then(|value| non_empty(value.as_bytes())) {
                    return Some(hasher.bytes(3, bytes));
                }
                let name = self.api_key_query.as_deref()?;
                let value = query_value(request.uri.query()?, name)?;
                non_empty(value.as_bytes()).map(|bytes| hasher.bytes(3, bytes))
            }
            Key::Header(name) => {
                let value = request.headers.get(name)?;
                non_empty(value.as_bytes()).map(|bytes| hasher.bytes(4, bytes))
            }
            Key::Custom(extractor) => {
                let bytes = extractor.extract(request)?;
                Some(hasher.bytes(5, &bytes))
            }
        }
    }

    /// The `ip` key of a connection from `peer` whose requests carry no address of their own,
    /// made once per connection: `None` unless the key is `ip` and `peer` is not a trusted
    /// proxy (behind one, the key depends on each request's forwarding headers).
    pub(crate) fn connection_key(&self, peer: SocketAddr) -> Option<KeyHash> {
        let peer = peer.ip().to_canonical();
        (matches!(self.kind, Key::Ip) && !self.trusted.contains(peer))
            .then(|| self.ip_key(peer, &Seeded(self)))
    }

    #[inline]
    fn ip_key<H: KeyHasher>(&self, client: IpAddr, hasher: &H) -> H::Hash {
        // The address as one 128-bit word (IPv4 mapped into IPv6). No kind tag is needed: the
        // only other key of an `ip` layer, the shared key of requests without one, is hashed
        // under other keys.
        let bits = match group_by_prefix(client, self.ipv6_prefix) {
            IpAddr::V4(v4) => v4.to_ipv6_mapped(),
            IpAddr::V6(v6) => v6,
        };
        hasher.address(u128::from(bits))
    }

    /// The shared key of requests that have none (`missing_key: shared`).
    pub(crate) fn missing(&self) -> KeyHash {
        Seeded(self).bytes(MISSING, &[])
    }
}

/// The kind tag of the shared key of requests without one.
pub(crate) const MISSING: u8 = 6;

/// SipHash-1-3, the standard library's `HashMap` hash, of one 128-bit word under random keys.
/// std's `DefaultHasher` takes these 16 bytes through its byte-slice path and length
/// bookkeeping; written for exactly two words, the same function skips both, and every keyed
/// request of an `ip` layer pays it.
#[derive(Debug, Clone)]
pub(crate) struct AddressHasher {
    k0: u64,
    k1: u64,
}

impl AddressHasher {
    pub(crate) fn new(seed: &RandomState) -> Self {
        AddressHasher {
            k0: seed.hash_one(0u8),
            k1: seed.hash_one(1u8),
        }
    }

    #[inline]
    fn hash(&self, word: u128) -> u64 {
        siphash::<1, 3>(self.k0, self.k1, word)
    }
}

/// SipHash-c-d of the 16 little-endian bytes of `word` (Aumasson and Bernstein, 2012).
fn siphash<const C: usize, const D: usize>(k0: u64, k1: u64, word: u128) -> u64 {
    let mut v = [
        k0 ^ 0x736f_6d65_7073_6575,
        k1 ^ 0x646f_7261_6e64_6f6d,
        k0 ^ 0x6c79_6765_6e65_7261,
        k1 ^ 0x7465_6462_7974_6573,
    ];
    // The two message words, then the final block: the length (16) in its top byte.
    for m in [word as u64, (word >> 64) as u64, 16 << 56] {
        v[3] ^= m;
        for _ in 0..C {
            sip_round(&mut v);
        }
        v[0] ^= m;
    }
    v[2] ^= 0xff;
    for _ in 0..D {
        sip_round(&mut v);
    }
    v[0] ^ v[1] ^ v[2] ^ v[3]
}

fn sip_round(v: &mut [u64; 4]) {
    v[0] = v[0].wrapping_add(v[1]);
    v[1] = v[1].rotate_left(13) ^ v[0];
    v[0] = v[0].rotate_left(32);
    v[2] = v[2].wrapping_add(v[3]);
    v[3] = v[3].rotate_left(16) ^ v[2];
    v[0] = v[0].wrapping_add(v[3]);
    v[3] = v[3].rotate_left(21) ^ v[0];
    v[2] = v[2].wrapping_add(v[1]);
    v[1] = v[1].rotate_left(17) ^ v[2];
    v[2] = v[2].rotate_left(32);
}

fn non_empty(bytes: &[u8]) -> Option<&[u8]> {
    (!bytes.is_empty()).then_some(bytes)
}

/// The peer address the server recorded for the connection: in the request's extensions first
/// (middleware that knows better, such as a PROXY protocol reader, puts it there), then the one
/// the service was given.
fn peer(request: &RequestView<'_>) -> Option<SocketAddr> {
    peer_addr(request.extensions).or(request.peer)
}

/// The value of `name` in a query string (`a=1&api_key=xyz`). Names and values are decoded as
/// a form's (percent escapes, `+` for a space), as the backend reads them: otherwise each
/// spelling of one key (`k1`, `k%31`, `%6B1`) would be a bucket of its own, and `api%5Fkey` no
/// key at all. Escapes that are not UTF-8 become U+FFFD, so such keys may share a bucket. The
/// first occurrence counts, as the first line of a header does (`HeaderMap::get`).
fn query_value<'q>(query: &'q str, name: &str) -> Option<Cow<'q, str>> {
    form_urlencoded::parse(query.as_bytes()).find_map(|(key, value)| (key == name).then_some(value))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::Request;
    use proxflow_core::ClientAddr;

    fn rules(kind: &str) -> KeyRules {
        let seed = RandomState::new();
        KeyRules {
            kind: kind.parse().unwrap(),
            trusted: TrustedProxies::default(),
            forwarded_header: ForwardedHeader::default(),
            ipv6_prefix: 64,
            user_header: Some(HeaderName::from_static("x-user")),
            api_key_header: HeaderName::from_static("x-api-key"),
            api_key_query: Some("api_key".into()),
            address: AddressHasher::new(&seed),
            seed,
        }
    }

    fn key(rules: &KeyRules, request: &Request<()>) -> Option<KeyHash> {
        let view = RequestView {
            method: request.method(),
            uri: request.uri(),
            headers: request.headers(),
            extensions: request.extensions(),
            peer: None,
        };
        rules.key(&view)
    }

    fn from(addr: &str) -> Request<()> {
        let mut request = Request::new(());
        request
            .extensions_mut()
            .insert(ClientAddr(addr.parse().unwrap()));
        request
    }

    #[test]
    fn ip_keys_group_ipv6_by_prefix() {
        let rules = rules("ip");
        assert_eq!(
            key(&rules, &from("1.2.3.4:1")),
            key(&rules, &from("1.2.3.4:2"))
        );
        assert_ne!(
            key(&rules, &from("1.2.3.4:1")),
            key(&rules, &from("1.2.3.5:1"))
        );
        assert_eq!(
            key(&rules, &from("[2001:db8::1]:1")),
            key(&rules, &from("[2001:db8::ffff]:1"))
        );
        assert_ne!(
            key(&rules, &from("[2001:db8::1]:1")),
            key(&rules, &from("[2001:db8:0:1::1]:1"))
        );
        assert_eq!(key(&rules, &Request::new(())), None, "no peer address");
    }

    #[test]
    fn api_keys_come_from_the_header_or_the_query() {
        let rules = rules("api_key");
        let header = Request::builder()
            .header("x-api-key", "k1")
            .body(())
            .unwrap();
        let query = Request::builder()
            .uri("/x?a=1&api_key=k1")
            .body(())
            .unwrap();
        let other = Request::builder().uri("/x?api_key=k2").body(()).unwrap();
        assert!(key(&rules, &header).is_some());
        assert_eq!(key(&rules, &header), key(&rules, &query));
        assert_ne!(key(&rules, &query), key(&rules, &other));
        assert_eq!(
            key(
                &rules,
                &Request::builder().uri("/x?api_key=").body(()).unwrap()
            ),
            None
        );
    }

    #[test]
    fn users_come_from_the_extension_or_the_header() {
        let rules = rules("user");
        let mut by_extension = Request::new(());
        by_extension.extensions_mut().insert(UserId("alice".into()));
        let by_header = Request::builder()
            .header("x-user", "alice")
            .body(())
            .unwrap();
        assert_eq!(key(&rules, &by_extension), key(&rules, &by_header));
        assert_eq!(key(&rules, &Request::new(())), None);
    }

    /// The same code with SipHash-2-4's rounds is std's `SipHasher` (2-4, keyed), so the
    /// rounds, constants and final block are SipHash's; the layer uses 1-3, as std's `HashMap`.
    #[test]
    #[allow(deprecated)] // `SipHasher` is std's only keyed SipHash.
    fn address_hash_is_siphash() {
        use std::hash::{Hasher, SipHasher};
        let words = [
            0u128,
            1,
            u128::MAX,
            0x0000_0000_0000_0000_0000_ffff_c000_0201,
            1 << 64,
        ];
        for (k0, k1) in [
            (0, 0),
            (0x0706_0504_0302_0100, 0x0f0e_0d0c_0b0a_0908),
            (u64::MAX, 7),
        ] {
            for word in words {
                let mut reference = SipHasher::new_with_keys(k0, k1);
                reference.write(&word.to_le_bytes());
                assert_eq!(
                    siphash::<2, 4>(k0, k1, word),
                    reference.finish(),
                    "{word:#x}"
                );
            }
        }
        // Distinct addresses, distinct hashes; other keys, other hashes.
        let seed = RandomState::new();
        let one = AddressHasher::new(&seed);
        let other = AddressHasher::new(&RandomState::new());
        assert_ne!(one.hash(1), one.hash(2));
        assert_ne!(one.hash(1), other.hash(1));
    }

    #[test]
    fn kinds_do_not_collide() {
        let header = rules("header:x-api-key");
        let api = rules("api_key");
        let request = Request::builder()
            .header("x-api-key", "same")
            .body(())
            .unwrap();
        let api = KeyRules {
            seed: header.seed.clone(),
            ..api
        };
        assert_ne!(key(&header, &request), key(&api, &request));
    }

    #[test]
    fn bad_key_names_are_refused() {
        for bad in ["cookie", "header:bad name", "header:", "IP"] {
            let error = bad.parse::<Key>().expect_err(bad);
            assert_eq!(error.field, "key", "{bad}");
        }
        let tenant: Key = "header:X-Tenant".parse().unwrap();
        assert!(matches!(&tenant, Key::Header(name) if name == "x-tenant"));
        // What a key prints reads back as the same key.
        for key in [Key::Ip, Key::User, Key::ApiKey, Key::Global, tenant] {
            assert_eq!(
                key.to_string().parse::<Key>().unwrap().to_string(),
                key.to_string()
            );
        }
        assert_eq!(
            Key::custom(|_: &RequestView<'_>| None).to_string(),
            "custom"
        );
    }
}
