//! The client's address behind reverse proxies.
//!
//! The TCP peer of a request is often a load balancer or a CDN; the client is further left in
//! `X-Forwarded-For` or `Forwarded`. Anyone can write those headers, so only the entries appended
//! by proxies we trust are believed: the walk starts at the right (the entry the nearest proxy
//! added) and stops at the first address that no trusted proxy can vouch for.
//!
//! Only one of the two headers is read, the one the trusted proxies write ([`ForwardedHeader`]):
//! a proxy passes the other one on as the client sent it, so reading it, even as a fallback,
//! would let the client choose its own address.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use http::header::{GetAll, HeaderMap, HeaderName, HeaderValue, FORWARDED};
use http::Extensions;
use ipnet::{IpNet, Ipv4Net};
use serde::{Deserialize, Serialize};

/// The client's address, for servers that are not axum: insert it into each request's
/// extensions. Every layer that needs the peer address reads it, then axum's
/// `ConnectInfo<SocketAddr>` (feature `axum`), then a bare `SocketAddr` ([`peer_addr`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ClientAddr(pub SocketAddr);

/// The address of the connection's peer, as the server recorded it in the request's extensions:
/// a [`ClientAddr`], axum's `ConnectInfo<SocketAddr>` (feature `axum`), or a bare `SocketAddr`,
/// in that order. `None` when the server recorded none (a plain `axum::serve` without
/// `into_make_service_with_connect_info`).
#[inline]
pub fn peer_addr(extensions: &Extensions) -> Option<SocketAddr> {
    if let Some(ClientAddr(addr)) = extensions.get::<ClientAddr>() {
        return Some(*addr);
    }
    #[cfg(feature = "axum")]
    if let Some(axum::extract::ConnectInfo(addr)) =
        extensions.get::<axum::extract::ConnectInfo<SocketAddr>>()
    {
        return Some(*addr);
    }
    extensions.get::<SocketAddr>().copied()
}

/// How many entries [`client_ip`] reads at most. A longer chain stops here as at garbage: no
/// real path has 64 proxies, and the walk must not cost more for a client that sends a huge header.
const MAX_HOPS: usize = 64;

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

/// The header the trusted proxies write the client's address into (`forwarded_header`). Only
/// that one is read; the other is whatever the client sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ForwardedHeader {
    /// `X-Forwarded-For`, each proxy appending the address it saw (nginx's
    /// `$proxy_add_x_forwarded_for`): what nginx's realip module, Caddy and Envoy read by
    /// default.
    #[default]
    XForwardedFor,
    /// `Forwarded` (RFC 7239), the `for=` of each element.
    Forwarded,
}

/// Which proxies may speak for the client.
///
/// Only a request whose peer is in this list has its forwarding header ([`ForwardedHeader`]) read
/// at all, and only the entries that listed proxies appended are believed. The default list is
/// empty: no header is trusted and the client is the peer of the connection.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies {
    nets: Vec<IpNet>,
}

impl TrustedProxies {
    /// Trusts the given networks.
    ///
    /// Host bits are cleared (`10.1.2.3/8` is `10.0.0.0/8`), and an IPv4-mapped IPv6 network
    /// (`::ffff:10.0.0.0/104`) becomes the IPv4 network it maps, since addresses are compared in
    /// their IPv4 form. An IPv6 network never covers IPv4 addresses otherwise: `::/0` trusts every
    /// IPv6 proxy and no IPv4 one.
    pub fn new(nets: impl IntoIterator<Item = IpNet>) -> Self {
        let nets = nets.into_iter().map(|net| unmap(net.trunc())).collect();
        Self { nets }
    }

    /// Parses CIDR ranges (`10.0.0.0/8`, `2001:db8::/32`) and bare addresses (`127.0.0.1` is
    /// `127.0.0.1/32`, `::1` is `::1/128`). Spaces around an entry are ignored.
    ///
    /// # Errors
    ///
    /// The first bad entry, as given, and why it is bad. A range with host bits set
    /// (`10.0.0.1/8`) is refused rather than guessed at: read as `10.0.0.0/8` it would trust
    /// sixteen million addresses where `10.0.0.1/32` may have been meant.
    pub fn parse<S: AsRef<str>>(cidrs: &[S]) -> Result<Self, (String, String)> {
        let nets = cidrs
            .iter()
            .map(|entry| parse_net(entry.as_ref()).map_err(|why| (entry.as_ref().to_owned(), why)))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self::new(nets))
    }

    /// Whether `ip` is a trusted proxy. An IPv4-mapped IPv6 address (`::ffff:10.0.0.1`) counts as
    /// its IPv4 address, as dual-stack sockets report IPv4 peers that way.
    #[inline]
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.nets.iter().any(|net| net.contains(&ip))
    }

    /// Whether no proxy is trusted (then every forwarding header is ignored).
    pub fn is_empty(&self) -> bool {
        self.nets.is_empty()
    }
}

fn parse_net(entry: &str) -> Result<IpNet, String> {
    let text = entry.trim();
    if text.is_empty() {
        return Err(
            "empty entry; expected an IP address or a CIDR range such as 10.0.0.0/8".into(),
        );
    }
    if let Ok(ip) = text.parse::<IpAddr>() {
        return Ok(IpNet::from(ip));
    }
    let net: IpNet = text.parse().map_err(|_| {
        if text.contains('/') {
            "not a CIDR range; expected an address and a prefix length of at most 32 (IPv4) or 128 (IPv6), such as 10.0.0.0/8 or 2001:db8::/32"
        } else {
            "not an IP address or a CIDR range such as 10.0.0.0/8 or 2001:db8::/32"
        }
        .to_owned()
    })?;
    if net != net.trunc() {
        return Err(format!(
            "host bits are set; write {} for the range or {}/{} for the single address",
            net.trunc(),
            net.addr(),
            net.max_prefix_len()
        ));
    }
    Ok(net)
}

/// `::ffff:a.b.c.d/(96 + n)` as `a.b.c.d/n`.
fn unmap(net: IpNet) -> IpNet {
    if let IpNet::V6(v6) = net {
        if let (Some(v4), Some(len)) = (
            v6.network().to_ipv4_mapped(),
            v6.prefix_len().checked_sub(96),
        ) {
            if let Ok(v4) = Ipv4Net::new(v4, len) {
                return IpNet::V4(v4);
            }
        }
    }
    net
}

/// The address a request comes from, after walking the forwarding headers.
///
/// - An untrusted `peer` (or an empty list) is the client; no header is read.
/// - Otherwise the entries of `header` are walked from the right: those of `X-Forwarded-For`
///   (every line, comma-separated, in order) or the `for=` of each `Forwarded` element; the other
///   header is never read. Trusted entries are skipped; the first untrusted one is the client.
/// - An entry that names no address (garbage, a hostname, `unknown`, an obfuscated `_id`, bytes
///   that are not UTF-8, a `Forwarded` element without a single `for=`) ends the walk at the
///   last trusted hop: nothing to its left was vouched for. So does the 65th entry.
/// - If every entry is trusted, the leftmost one is the client; no entries at all means `peer`.
/// - Empty entries (`a,,b`, a trailing comma) are skipped: they claim nothing.
///
/// IPv4-mapped IPv6 addresses come out as IPv4.
// Inlined: a rate limiter asks per request, and most peers are not trusted proxies.
#[inline]
pub fn client_ip(
    peer: IpAddr,
    headers: &HeaderMap,
    trusted: &TrustedProxies,
    header: ForwardedHeader,
) -> IpAddr {
    let peer = peer.to_canonical();
    if !trusted.contains(peer) {
        return peer;
    }
    walk_header(peer, headers, trusted, header)
}

/// [`client_ip`] for a trusted `peer`: the walk of the one header the proxies write.
fn walk_header(
    peer: IpAddr,
    headers: &HeaderMap,
    trusted: &TrustedProxies,
    header: ForwardedHeader,
) -> IpAddr {
    match header {
        ForwardedHeader::XForwardedFor => {
            walk(peer, headers.get_all(X_FORWARDED_FOR), parse_node, trusted)
        }
        ForwardedHeader::Forwarded => walk(
            peer,
            headers.get_all(FORWARDED),
            parse_forwarded_element,
            trusted,
        ),
    }
}

/// Walks the comma-separated entries of `lines` from the right, starting at the trusted `peer`.
fn walk(
    peer: IpAddr,
    lines: GetAll<'_, HeaderValue>,
    parse: fn(&str) -> Option<IpAddr>,
    trusted: &TrustedProxies,
) -> IpAddr {
    // Later lines and later entries were added by nearer proxies. Splitting the raw bytes (not
    // the whole line as text) keeps a client's non-UTF-8 bytes inside its own entries, where
    // they are garbage to the left of everything the proxies appended.
    let entries = lines
        .iter()
        .rev()
        .flat_map(|line| line.as_bytes().rsplit(|&b| b == b','))
        .map(|entry| std::str::from_utf8(entry).map(|text| text.trim_matches([' ', '\t'])))
        .filter(|entry| !matches!(entry, Ok("")));
    let mut nearest = peer;
    for (walked, entry) in entries.enumerate() {
        if walked == MAX_HOPS {
            tracing::debug!(%nearest, "more than {MAX_HOPS} forwarding hops; stopping at the last trusted one");
            break;
        }
        match entry.ok().and_then(parse).map(|ip| ip.to_canonical()) {
            Some(ip) if trusted.contains(ip) => nearest = ip,
            Some(ip) => return ip,
            None => {
                tracing::debug!(%nearest, "unparseable forwarding entry; stopping at the last trusted hop");
                return nearest;
            }
        }
    }
    nearest
}

/// The `for` address of one `Forwarded` element (`for=192.0.2.60;proto=http;by=203.0.113.43`).
///
/// Legitimate values never contain `,` or `;`, so splitting on them without regard to quotes is
/// safe, and it keeps a client's unterminated quote from swallowing what the proxies appended.
fn parse_forwarded_element(element: &str) -> Option<IpAddr> {
    let mut fors = element.split(';').filter_map(|pair| {
        let (name, value) = pair.split_once('=')?;
        name.trim()
            .eq_ignore_ascii_case("for")
            .then_some(value.trim())
    });
    let value = fors.next()?;
    // RFC 7239 allows a parameter once per element; with two, we cannot tell which is real.
    if fors.next().is_some() {
        return None;
    }
    let node = match value.strip_prefix('"') {
        Some(quoted) => quoted.strip_suffix('"')?,
        None => value,
    };
    parse_node(node)
}

/// An address as proxies write it: `192.0.2.60`, `192.0.2.60:8080`, `2001:db8::1`,
/// `[2001:db8::1]`, `[2001:db8::1]:4711`, `fe80::1%eth0`. Anything else (a hostname, `unknown`,
/// an obfuscated `_hidden`) names no address.
fn parse_node(node: &str) -> Option<IpAddr> {
    if let Some(rest) = node.strip_prefix('[') {
        let (addr, after) = rest.split_once(']')?;
        if !after.is_empty() && !after.strip_prefix(':').is_some_and(is_port) {
            return None;
        }
        return parse_ipv6(addr).map(IpAddr::V6);
    }
    if let Ok(ip) = node.parse() {
        return Some(ip);
    }
    // One colon can only be an IPv4 address with a port; an IPv6 address has at least two.
    if let Some((host, port)) = node.split_once(':') {
        if is_port(port) {
            if let Ok(v4) = host.parse::<Ipv4Addr>() {
                return Some(IpAddr::V4(v4));
            }
        }
    }
    parse_ipv6(node).map(IpAddr::V6)
}

/// An IPv6 address, any zone id (`%eth0`) dropped: a zone only means something on the proxy's host.
fn parse_ipv6(text: &str) -> Option<Ipv6Addr> {
    let addr = text.split_once('%').map_or(text, |(addr, _zone)| addr);
    addr.parse().ok()
}

/// A port as RFC 7239 allows it: a number up to 65535, or an obfuscated `_name`.
fn is_port(port: &str) -> bool {
    let numeric =
        !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) && port.parse::<u16>().is_ok();
    let obfuscated = port.strip_prefix('_').is_some_and(|name| {
        !name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    });
    numeric || obfuscated
}

/// Groups IPv6 clients by prefix (a /64 is one household or one host's privacy addresses).
///
/// IPv4 addresses (IPv4-mapped ones included) are unchanged; an IPv6 address keeps its first
/// `ipv6_prefix` bits (more than 128 counts as 128).
#[inline]
pub fn group_by_prefix(ip: IpAddr, ipv6_prefix: u8) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => {
            let prefix = u32::from(ipv6_prefix.min(128));
            // A shift by 128 (prefix 0) overflows: then no bit is kept.
            let mask = u128::MAX.checked_shl(128 - prefix).unwrap_or(0);
            IpAddr::V6(Ipv6Addr::from(u128::from(v6) & mask))
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use proptest::prelude::*;
    use proptest::test_runner::{Config as ProptestConfig, RngSeed};

    use super::*;

    const XFF: &str = "x-forwarded-for";
    const FWD: &str = "forwarded";

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    /// The proxies of most tests: two private IPv4 ranges and one private IPv6 range.
    fn trusted() -> TrustedProxies {
        TrustedProxies::parse(&["10.0.0.0/8", "192.168.0.0/16", "fd00::/8"]).unwrap()
    }

    fn headers<'a>(lines: impl IntoIterator<Item = (&'a str, &'a [u8])>) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in lines {
            map.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_bytes(value).unwrap(),
            );
        }
        map
    }

    // --- client_ip: the rules, one row each -------------------------------------------------

    struct Case {
        name: &'static str,
        peer: &'static str,
        lines: &'static [(&'static str, &'static str)],
        want: &'static str,
    }

    const fn case(
        name: &'static str,
        peer: &'static str,
        lines: &'static [(&'static str, &'static str)],
        want: &'static str,
    ) -> Case {
        Case {
            name,
            peer,
            lines,
            want,
        }
    }

    const P: &str = "10.0.0.1"; // a trusted peer

    #[rustfmt::skip]
    const CASES: &[Case] = &[
        // Who is asked at all.
        case("no headers", P, &[], P),
        case("untrusted peer ignores headers", "198.51.100.1", &[(XFF, "203.0.113.7")], "198.51.100.1"),
        case("untrusted peer ignores trusted-looking entries", "198.51.100.1", &[(XFF, "10.0.0.2")], "198.51.100.1"),
        case("untrusted peer ignores Forwarded", "198.51.100.1", &[(FWD, "for=203.0.113.7")], "198.51.100.1"),
        // Walking from the right.
        case("single client", P, &[(XFF, "203.0.113.7")], "203.0.113.7"),
        case("spoofed leftmost entry ignored", P, &[(XFF, "6.6.6.6, 203.0.113.7")], "203.0.113.7"),
        case("two trusted hops", P, &[(XFF, "6.6.6.6, 203.0.113.7, 192.168.1.1, 10.0.0.2")], "203.0.113.7"),
        case("all trusted: the leftmost", P, &[(XFF, "10.0.0.3, 192.168.0.9, 10.0.0.2")], "10.0.0.3"),
        case("later lines are nearer", P, &[(XFF, "6.6.6.6"), (XFF, "203.0.113.7")], "203.0.113.7"),
        case("lines and entries in order", P, &[(XFF, "6.6.6.6, 203.0.113.8"), (XFF, "10.0.0.2, 192.168.0.1")], "203.0.113.8"),
        case("trusted hop on its own line", P, &[(XFF, "203.0.113.7"), (XFF, "10.0.0.2")], "203.0.113.7"),
        case("IPv6 hops", "fd00::1", &[(XFF, "2001:db8::6, 2001:db8::7, fd00::2")], "2001:db8::7"),
        // Garbage stops the walk at the nearest hop that vouched.
        case("garbage in the middle", P, &[(XFF, "203.0.113.7, not-an-ip, 10.0.0.2")], "10.0.0.2"),
        case("garbage nearest: the peer", P, &[(XFF, "203.0.113.7, garbage")], P),
        case("nothing left of garbage wins", P, &[(XFF, "6.6.6.6, ???, 10.0.0.2, 10.0.0.3")], "10.0.0.2"),
        case("hostname", P, &[(XFF, "203.0.113.7, proxy.example.com, 10.0.0.2")], "10.0.0.2"),
        case("unknown", P, &[(XFF, "unknown")], P),
        case("obfuscated in X-Forwarded-For", P, &[(XFF, "203.0.113.7, _hidden")], P),
        case("IPv4 in brackets", P, &[(XFF, "[203.0.113.7]")], P),
        case("unclosed bracket", P, &[(XFF, "[2001:db8::1")], P),
        case("junk after bracket", P, &[(XFF, "[2001:db8::1]x")], P),
        case("port too large", P, &[(XFF, "203.0.113.7:99999")], P),
        case("empty port", P, &[(XFF, "203.0.113.7:")], P),
        case("two ports", P, &[(XFF, "203.0.113.7:80:80")], P),
        case("signed port", P, &[(XFF, "203.0.113.7:+80")], P),
        case("leading zeros in IPv4", P, &[(XFF, "010.0.0.1")], P),
        // Empty and odd spacing.
        case("empty value", P, &[(XFF, "")], P),
        case("only commas", P, &[(XFF, ",,, ,")], P),
        case("only spaces", P, &[(XFF, "   ")], P),
        case("empty entry skipped", P, &[(XFF, "1.2.3.4,,5.6.7.8")], "5.6.7.8"),
        case("empty entry between trusted and client", P, &[(XFF, "203.0.113.7,,10.0.0.2")], "203.0.113.7"),
        case("leading and trailing commas", P, &[(XFF, ", 203.0.113.7 ,")], "203.0.113.7"),
        case("spaces and tabs", P, &[(XFF, "  203.0.113.7 \t,\t 10.0.0.2  ")], "203.0.113.7"),
        case("no spaces", P, &[(XFF, "6.6.6.6,203.0.113.7,10.0.0.2")], "203.0.113.7"),
        // Spellings of one address.
        case("IPv4 with port", P, &[(XFF, "203.0.113.7:5678")], "203.0.113.7"),
        case("ports on every hop", P, &[(XFF, "203.0.113.7:5678, 10.0.0.2:80")], "203.0.113.7"),
        case("bare IPv6", P, &[(XFF, "2001:db8::1")], "2001:db8::1"),
        case("bracketed IPv6", P, &[(XFF, "[2001:db8::1]")], "2001:db8::1"),
        case("bracketed IPv6 with port", P, &[(XFF, "[2001:db8::1]:80")], "2001:db8::1"),
        case("upper-case IPv6", P, &[(XFF, "2001:DB8::1")], "2001:db8::1"),
        case("zone id", P, &[(XFF, "fe80::1%eth0")], "fe80::1"),
        case("zone id in brackets", P, &[(XFF, "[fe80::1%25eth0]:80")], "fe80::1"),
        case("trusted hop with zone id", "fd00::1", &[(XFF, "2001:db8::7, fd00::2%eth0")], "2001:db8::7"),
        // IPv4-mapped IPv6 is IPv4.
        case("mapped client", P, &[(XFF, "::ffff:203.0.113.7")], "203.0.113.7"),
        case("mapped client in brackets", P, &[(XFF, "[::ffff:203.0.113.7]:443")], "203.0.113.7"),
        case("mapped trusted hop", P, &[(XFF, "203.0.113.7, ::ffff:10.0.0.2")], "203.0.113.7"),
        case("mapped trusted peer", "::ffff:10.0.0.1", &[(XFF, "203.0.113.7")], "203.0.113.7"),
        case("mapped untrusted peer", "::ffff:198.51.100.1", &[(XFF, "203.0.113.7")], "198.51.100.1"),
        case("mapped peer, no headers", "::ffff:10.0.0.1", &[], P),
        case("mapped, all trusted", P, &[(XFF, "::ffff:10.0.0.9")], "10.0.0.9"),
        // Forwarded (RFC 7239).
        case("Forwarded", P, &[(FWD, "for=192.0.2.60;proto=http;by=203.0.113.43")], "192.0.2.60"),
        case("Forwarded quoted IPv6 with port", P, &[(FWD, "for=\"[2001:db8:cafe::17]:4711\"")], "2001:db8:cafe::17"),
        case("Forwarded quoted IPv6", P, &[(FWD, "for=\"[2001:db8:cafe::17]\"")], "2001:db8:cafe::17"),
        case("Forwarded quoted IPv4 with port", P, &[(FWD, "for=\"192.0.2.60:8080\"")], "192.0.2.60"),
        case("Forwarded obfuscated port", P, &[(FWD, "for=\"[2001:db8::1]:_port\"")], "2001:db8::1"),
        case("Forwarded unquoted IPv6", P, &[(FWD, "for=2001:db8::1")], "2001:db8::1"),
        case("Forwarded For=", P, &[(FWD, "For=192.0.2.43")], "192.0.2.43"),
        case("Forwarded FOR= after other pairs", P, &[(FWD, "proto=https;FOR=\"192.0.2.43\"")], "192.0.2.43"),
        case("Forwarded chain", P, &[(FWD, "for=6.6.6.6, for=192.0.2.43, for=10.0.0.2")], "192.0.2.43"),
        case("Forwarded chain over lines", P, &[(FWD, "for=6.6.6.6, for=192.0.2.43"), (FWD, "for=10.0.0.2;proto=https")], "192.0.2.43"),
        case("Forwarded all trusted", P, &[(FWD, "for=10.0.0.5, for=10.0.0.2")], "10.0.0.5"),
        case("Forwarded obfuscated", P, &[(FWD, "for=192.0.2.43, for=_hidden, for=10.0.0.2")], "10.0.0.2"),
        case("Forwarded quoted obfuscated", P, &[(FWD, "for=\"_gazonk\"")], P),
        case("Forwarded unknown", P, &[(FWD, "for=unknown")], P),
        case("Forwarded element without for", P, &[(FWD, "for=192.0.2.43, proto=https;by=10.0.0.9")], P),
        case("Forwarded for twice in one element", P, &[(FWD, "for=192.0.2.43;for=6.6.6.6")], P),
        case("Forwarded unbalanced quote", P, &[(FWD, "for=\"192.0.2.43")], P),
        case("Forwarded stray closing quote", P, &[(FWD, "for=192.0.2.43\"")], P),
        case("Forwarded empty for", P, &[(FWD, "for=")], P),
        case("Forwarded empty elements skipped", P, &[(FWD, ",for=192.0.2.43,,")], "192.0.2.43"),
        case("unterminated quote does not swallow later entries", P, &[(FWD, "for=\"x, for=192.0.2.43;proto=http")], "192.0.2.43"),
    ];

    /// The setting of proxies that write the headers named: `Forwarded` for rows that write
    /// only that header (each row of the table writes one header).
    fn header_of<'a>(names: impl IntoIterator<Item = &'a str>) -> ForwardedHeader {
        let mut names = names.into_iter().peekable();
        if names.peek().is_some() && names.all(|name| name == FWD) {
            ForwardedHeader::Forwarded
        } else {
            ForwardedHeader::XForwardedFor
        }
    }

    #[test]
    fn client_ip_table() {
        for case in CASES {
            let map = headers(
                case.lines
                    .iter()
                    .map(|&(name, value)| (name, value.as_bytes())),
            );
            let header = header_of(case.lines.iter().map(|&(name, _)| name));
            assert_eq!(
                client_ip(ip(case.peer), &map, &trusted(), header),
                ip(case.want),
                "{}",
                case.name
            );
        }
    }

    /// A trusted proxy writes one header and passes the other on as the client sent it: only
    /// the configured one is read, present or not.
    #[test]
    fn client_ip_reads_only_the_configured_header() {
        use ForwardedHeader::{Forwarded, XForwardedFor};
        let peer = ip(P);
        let run = |lines: &[(&str, &[u8])], header| {
            client_ip(peer, &headers(lines.iter().copied()), &trusted(), header)
        };
        let both: &[(&str, &[u8])] = &[(FWD, b"for=192.0.2.43"), (XFF, b"203.0.113.7")];
        assert_eq!(run(both, XForwardedFor), ip("203.0.113.7"));
        assert_eq!(run(both, Forwarded), ip("192.0.2.43"));
        assert_eq!(run(&[(FWD, b"for=192.0.2.43")], XForwardedFor), peer);
        assert_eq!(run(&[(XFF, b"203.0.113.7")], Forwarded), peer);
        assert_eq!(
            run(&[(XFF, b""), (FWD, b"for=192.0.2.43")], XForwardedFor),
            peer
        );
        assert_eq!(
            run(&[(XFF, b""), (FWD, b"for=192.0.2.43")], Forwarded),
            ip("192.0.2.43")
        );
    }

    #[test]
    fn client_ip_without_trusted_proxies_is_the_peer() {
        let map = headers([(XFF, &b"203.0.113.7"[..]), (FWD, b"for=192.0.2.43")]);
        let none = TrustedProxies::default();
        for header in [ForwardedHeader::XForwardedFor, ForwardedHeader::Forwarded] {
            assert_eq!(
                client_ip(ip("10.0.0.1"), &map, &none, header),
                ip("10.0.0.1")
            );
            assert_eq!(
                client_ip(ip("::ffff:10.0.0.1"), &map, &none, header),
                ip("10.0.0.1")
            );
        }
    }

    #[test]
    fn client_ip_non_utf8_entries_are_garbage() {
        let peer = ip(P);
        let run = |lines: &[(&str, &[u8])]| {
            let header = header_of(lines.iter().map(|&(name, _)| name));
            client_ip(peer, &headers(lines.iter().copied()), &trusted(), header)
        };
        assert_eq!(run(&[(XFF, b"\xff")]), peer);
        assert_eq!(run(&[(XFF, b"203.0.113.7, \xff\xfe")]), peer);
        assert_eq!(
            run(&[(XFF, b"203.0.113.7, caf\xc3\xa9, 10.0.0.2")]),
            ip("10.0.0.2"),
            "UTF-8, not an address"
        );
        assert_eq!(
            run(&[(XFF, b"203.0.113.7, \xe9t\xe9, 10.0.0.2")]),
            ip("10.0.0.2")
        );
        assert_eq!(
            run(&[(XFF, b"203.0.113.7\xff")]),
            peer,
            "a bad byte spoils its entry"
        );
        // The client's own bytes sit left of what the proxies appended and cannot hide it.
        assert_eq!(run(&[(XFF, b"\xff, 203.0.113.7")]), ip("203.0.113.7"));
        assert_eq!(
            run(&[(XFF, b"\xff"), (XFF, b"203.0.113.7")]),
            ip("203.0.113.7")
        );
        assert_eq!(run(&[(XFF, b"203.0.113.7"), (XFF, b"\x80")]), peer);
        assert_eq!(run(&[(FWD, b"for=\xff")]), peer);
        assert_eq!(
            run(&[(FWD, b"for=\"\xff\", for=192.0.2.43")]),
            ip("192.0.2.43")
        );
    }

    /// `count` distinct trusted addresses, 10.0.0.0 first.
    fn trusted_hops(count: usize) -> Vec<String> {
        (0..count)
            .map(|i| format!("10.0.{}.{}", i / 256, i % 256))
            .collect()
    }

    #[test]
    fn client_ip_walks_at_most_64_entries() {
        let peer = ip(P);
        let run = |value: String| {
            let map = headers([(XFF, value.as_bytes())]);
            client_ip(peer, &map, &trusted(), ForwardedHeader::XForwardedFor)
        };

        // 63 trusted hops: the client is the 64th entry and still read.
        let hops = trusted_hops(63).join(", ");
        assert_eq!(run(format!("203.0.113.7, {hops}")), ip("203.0.113.7"));
        // 64 trusted hops and nothing left of them: the leftmost, as for any all-trusted chain.
        assert_eq!(run(trusted_hops(64).join(", ")), ip("10.0.0.0"));
        // 64 trusted hops before the client: it is the 65th and never read.
        let hops = trusted_hops(64).join(", ");
        assert_eq!(run(format!("203.0.113.7, {hops}")), ip("10.0.0.0"));
        // 100 hops: the walk ends at the 64th from the right.
        let hops = trusted_hops(100).join(", ");
        assert_eq!(run(format!("203.0.113.7, {hops}")), ip("10.0.0.36"));
        // The limit counts entries over all lines, not per line.
        let lines: Vec<String> = trusted_hops(100)
            .chunks(10)
            .map(|chunk| chunk.join(","))
            .collect();
        let map = headers(lines.iter().map(|line| (XFF, line.as_bytes())));
        assert_eq!(
            client_ip(peer, &map, &trusted(), ForwardedHeader::XForwardedFor),
            ip("10.0.0.36")
        );
    }

    #[test]
    fn client_ip_copes_with_huge_headers() {
        let peer = ip(P);
        let run = |value: String| {
            let map = headers([(XFF, value.as_bytes())]);
            client_ip(peer, &map, &trusted(), ForwardedHeader::XForwardedFor)
        };
        assert_eq!(run(",".repeat(1 << 20)), peer);
        assert_eq!(
            run(format!("{}203.0.113.7", "6.6.6.6, ".repeat(100_000))),
            ip("203.0.113.7")
        );
        assert_eq!(run("10.0.0.2,".repeat(100_000)), ip("10.0.0.2"));
        assert_eq!(run("x".repeat(1 << 20)), peer);
        let fwd = format!(
            "{}for=192.0.2.43",
            "for=6.6.6.6;proto=http, ".repeat(50_000)
        );
        assert_eq!(
            client_ip(
                peer,
                &headers([(FWD, fwd.as_bytes())]),
                &trusted(),
                ForwardedHeader::Forwarded
            ),
            ip("192.0.2.43")
        );
    }

    // --- TrustedProxies ------------------------------------------------------------------

    #[test]
    fn trusted_proxies_parse_ranges_and_bare_addresses() {
        let list = TrustedProxies::parse(&[
            "10.0.0.0/8",
            "::1/128",
            "127.0.0.1",
            "2001:db8::5",
            " 192.168.0.0/16 ",
        ])
        .unwrap();
        for yes in [
            "10.0.0.0",
            "10.255.255.255",
            "::1",
            "127.0.0.1",
            "2001:db8::5",
            "192.168.7.7",
        ] {
            assert!(list.contains(ip(yes)), "{yes}");
        }
        for no in [
            "11.0.0.0",
            "9.255.255.255",
            "::2",
            "127.0.0.2",
            "2001:db8::6",
            "::",
            "0.0.0.0",
        ] {
            assert!(!list.contains(ip(no)), "{no}");
        }
        assert!(!list.is_empty());
        let owned = vec![String::from("10.0.0.0/8")];
        assert_eq!(
            TrustedProxies::parse(&owned),
            TrustedProxies::parse(&["10.0.0.0/8"])
        );
    }

    #[test]
    fn trusted_proxies_parse_rejects_bad_entries() {
        for bad in [
            "",
            "  ",
            "10.0.0.0/33",
            "::1/129",
            "10.0.0.1/8",
            "2001:db8::1/32",
            "not-an-ip",
            "localhost",
            "10.0.0.0/8/8",
            "10.0.0.0/",
            "/8",
            "10.0.0.0/-1",
            "010.0.0.1",
            "10.0.0.0 /8",
        ] {
            let (entry, why) = TrustedProxies::parse(&["127.0.0.1", bad]).unwrap_err();
            assert_eq!(entry, bad);
            assert!(!why.is_empty(), "{bad:?}");
        }
        let (entry, _) = TrustedProxies::parse(&["10.0.0.0/8", "bad", "worse"]).unwrap_err();
        assert_eq!(entry, "bad", "the first bad entry");
        let (_, why) = TrustedProxies::parse(&["10.0.0.1/8"]).unwrap_err();
        assert!(
            why.contains("10.0.0.0/8") && why.contains("10.0.0.1/32"),
            "{why}"
        );
    }

    #[test]
    fn trusted_proxies_ipv4_mapped() {
        let list = TrustedProxies::parse(&["10.0.0.0/8"]).unwrap();
        assert!(list.contains(ip("::ffff:10.1.2.3")));
        assert!(!list.contains(ip("::ffff:11.1.2.3")));
        // A mapped range is the IPv4 range, for IPv4 and mapped addresses alike.
        let mapped = TrustedProxies::parse(&["::ffff:10.0.0.0/104"]).unwrap();
        assert_eq!(mapped, list);
        assert!(mapped.contains(ip("10.1.2.3")));
        assert!(TrustedProxies::parse(&["::ffff:0:0/96"])
            .unwrap()
            .contains(ip("1.2.3.4")));
        // IPv6 ranges never cover IPv4 otherwise: "::/0" means every IPv6 proxy.
        let v6 = TrustedProxies::parse(&["::/0"]).unwrap();
        assert!(v6.contains(ip("2001:db8::1")));
        assert!(!v6.contains(ip("1.2.3.4")));
        assert!(!v6.contains(ip("::ffff:1.2.3.4")));
        // And IPv4 ranges never cover IPv6.
        assert!(!TrustedProxies::parse(&["0.0.0.0/0"])
            .unwrap()
            .contains(ip("::1")));
    }

    #[test]
    fn trusted_proxies_new_normalises() {
        let nets: Vec<IpNet> = ["10.1.2.3/8", "::ffff:192.168.1.1/112"]
            .iter()
            .map(|n| n.parse().unwrap())
            .collect();
        assert_eq!(
            TrustedProxies::new(nets),
            TrustedProxies::parse(&["10.0.0.0/8", "192.168.0.0/16"]).unwrap()
        );
        assert!(TrustedProxies::new([]).is_empty());
        assert!(TrustedProxies::default().is_empty());
        assert!(TrustedProxies::parse::<&str>(&[]).unwrap().is_empty());
        assert!(!TrustedProxies::default().contains(ip("127.0.0.1")));
    }

    // --- group ---------------------------------------------------------------------------

    #[test]
    fn peer_addr_reads_each_kind_of_tag() {
        let addr: SocketAddr = "192.0.2.1:4000".parse().unwrap();
        let mut extensions = Extensions::new();
        assert_eq!(peer_addr(&extensions), None);
        extensions.insert(addr);
        assert_eq!(peer_addr(&extensions), Some(addr));
        let connect: SocketAddr = "192.0.2.2:4000".parse().unwrap();
        #[cfg(feature = "axum")]
        {
            extensions.insert(axum::extract::ConnectInfo(connect));
            assert_eq!(peer_addr(&extensions), Some(connect));
        }
        let tagged: SocketAddr = "192.0.2.3:4000".parse().unwrap();
        extensions.insert(ClientAddr(tagged));
        assert_eq!(peer_addr(&extensions), Some(tagged), "ClientAddr first");
    }

    #[test]
    fn group_masks_ipv6_only() {
        assert_eq!(group_by_prefix(ip("203.0.113.7"), 64), ip("203.0.113.7"));
        assert_eq!(group_by_prefix(ip("203.0.113.7"), 0), ip("203.0.113.7"));
        assert_eq!(
            group_by_prefix(ip("::ffff:203.0.113.7"), 64),
            ip("203.0.113.7"),
            "mapped is IPv4, not one /64 for all"
        );
        let v6 = ip("2001:db8:1:2:3:4:5:6");
        assert_eq!(group_by_prefix(v6, 64), ip("2001:db8:1:2::"));
        assert_eq!(group_by_prefix(v6, 48), ip("2001:db8:1::"));
        assert_eq!(group_by_prefix(v6, 56), ip("2001:db8:1::"));
        assert_eq!(group_by_prefix(v6, 63), ip("2001:db8:1:2::"));
        assert_eq!(group_by_prefix(v6, 1), ip("::"));
        assert_eq!(group_by_prefix(ip("ffff::1"), 1), ip("8000::"));
        assert_eq!(group_by_prefix(v6, 0), ip("::"));
        assert_eq!(group_by_prefix(v6, 128), v6);
        assert_eq!(group_by_prefix(v6, 129), v6);
        assert_eq!(group_by_prefix(v6, 255), v6);
    }

    // --- properties ----------------------------------------------------------------------

    /// Addresses for the header generators: trusted and untrusted, IPv4, IPv6 and mapped.
    fn pool_ip() -> impl Strategy<Value = IpAddr> {
        prop_oneof![
            (0u8..4).prop_map(|n| IpAddr::V4(Ipv4Addr::new(10, 0, 0, n))),
            (0u8..4).prop_map(|n| IpAddr::V6(Ipv4Addr::new(10, 0, 0, n).to_ipv6_mapped())),
            (0u16..4).prop_map(|n| IpAddr::V6(Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, n))),
            any::<Ipv4Addr>().prop_map(IpAddr::V4),
            any::<Ipv4Addr>().prop_map(|v4| IpAddr::V6(v4.to_ipv6_mapped())),
            any::<Ipv6Addr>().prop_map(IpAddr::V6),
        ]
    }

    /// One entry in any spelling a proxy or a client might use, garbage included.
    fn entry() -> impl Strategy<Value = String> {
        prop_oneof![
            pool_ip().prop_map(|ip| ip.to_string()),
            pool_ip().prop_map(|ip| format!("[{ip}]:443")),
            any::<Ipv4Addr>().prop_map(|v4| format!("{v4}:8080")),
            pool_ip().prop_map(|ip| format!("for={ip}")),
            pool_ip().prop_map(|ip| format!("For=\"[{ip}]:4711\";proto=https")),
            pool_ip().prop_map(|ip| format!("{ip}%eth0")),
            Just(String::from("unknown")),
            Just(String::from("for=_hidden")),
            Just(String::new()),
            "[0-9a-fA-F:.\\[\\]\"%;=_ forFOR]{0,24}",
        ]
    }

    /// Any byte a `HeaderValue` accepts.
    fn valid_header_bytes(bytes: Vec<u8>) -> Vec<u8> {
        bytes
            .into_iter()
            .filter(|&b| b == b'\t' || (b >= 32 && b != 127))
            .collect()
    }

    fn header_value() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            prop::collection::vec(entry(), 0..8).prop_map(|entries| entries.join(",").into_bytes()),
            prop::collection::vec(any::<u8>(), 0..64).prop_map(valid_header_bytes),
            ".{0,32}".prop_map(|text: String| valid_header_bytes(text.into_bytes())),
        ]
    }

    /// Every address written anywhere in the headers: each substring that parses as one. This
    /// oracle shares nothing with the parser's idea of an entry.
    fn addresses_in(map: &HeaderMap) -> HashSet<IpAddr> {
        // The longest address text: ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255.
        const LONGEST: usize = 45;
        let mut found = HashSet::new();
        for value in map.values() {
            let bytes = value.as_bytes();
            for start in 0..bytes.len() {
                for end in start + 1..=bytes.len().min(start + LONGEST) {
                    if let Some(ip) = std::str::from_utf8(&bytes[start..end])
                        .ok()
                        .and_then(|text| text.parse::<IpAddr>().ok())
                    {
                        found.insert(ip.to_canonical());
                    }
                }
            }
        }
        found
    }

    fn untrusted_ip() -> impl Strategy<Value = IpAddr> {
        any::<IpAddr>().prop_filter("a client is no trusted proxy", |ip| {
            !trusted().contains(*ip)
        })
    }

    fn trusted_ip() -> impl Strategy<Value = IpAddr> {
        prop_oneof![
            any::<u32>().prop_map(|n| IpAddr::V4(Ipv4Addr::from(0x0a00_0000 | (n & 0x00ff_ffff)))),
            any::<u16>().prop_map(|n| IpAddr::V4(Ipv4Addr::from(0xc0a8_0000 | u32::from(n)))),
            any::<u128>().prop_map(|n| IpAddr::V6(Ipv6Addr::from((0xfd << 120) | (n >> 8)))),
            any::<u32>().prop_map(|n| IpAddr::V6(
                Ipv4Addr::from(0x0a00_0000 | (n & 0x00ff_ffff)).to_ipv6_mapped()
            )),
        ]
    }

    /// How a proxy may write `ip` into X-Forwarded-For.
    fn spell_xff(ip: IpAddr, style: u8) -> String {
        match (ip, style % 3) {
            (_, 0) => ip.to_string(),
            (IpAddr::V4(v4), 1) => format!("{v4}:5678"),
            (IpAddr::V4(v4), _) => format!("[{}]", v4.to_ipv6_mapped()),
            (IpAddr::V6(v6), 1) => format!("[{v6}]:443"),
            (IpAddr::V6(v6), _) => format!("[{v6}]"),
        }
    }

    /// How a proxy may write `ip` into Forwarded.
    fn spell_forwarded(ip: IpAddr, style: u8) -> String {
        match (ip, style % 2) {
            (IpAddr::V4(v4), 0) => format!("for={v4}"),
            (IpAddr::V4(v4), _) => format!("For=\"{v4}:8080\";proto=https"),
            (IpAddr::V6(v6), 0) => format!("for=\"[{v6}]\""),
            (IpAddr::V6(v6), _) => format!("proto=http;for=\"[{v6}]:4711\";by=_proxy"),
        }
    }

    /// What a client may send: any bytes a header holds, or entries that look real, trusted
    /// proxies' addresses included.
    fn attacker_value() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            prop::collection::vec(any::<u8>(), 0..32).prop_map(valid_header_bytes),
            header_value(),
            (trusted_ip(), any::<u8>(), any::<bool>()).prop_map(|(ip, style, fwd)| {
                if fwd {
                    spell_forwarded(ip, style)
                } else {
                    spell_xff(ip, style)
                }
                .into_bytes()
            }),
        ]
    }

    /// Seeded, so that a run is the same on every machine, and nothing is written beside the
    /// sources on failure (the failing case is in the message).
    fn config() -> ProptestConfig {
        ProptestConfig {
            rng_seed: RngSeed::Fixed(0x636c_6965_6e74_6970),
            failure_persistence: None,
            ..ProptestConfig::default()
        }
    }

    proptest! {
        #![proptest_config(config())]

        #[test]
        fn client_ip_only_returns_the_peer_or_a_written_address(
            peer in pool_ip(),
            lines in prop::collection::vec((any::<bool>(), header_value()), 0..4),
            forwarded in any::<bool>(),
        ) {
            let map = headers(lines.iter().map(|(xff, value)| (if *xff { XFF } else { FWD }, value.as_slice())));
            let header = if forwarded { ForwardedHeader::Forwarded } else { ForwardedHeader::XForwardedFor };
            let got = client_ip(peer, &map, &trusted(), header);
            let peer = peer.to_canonical();
            prop_assert!(got == peer || addresses_in(&map).contains(&got), "{got} from {map:?}");
            prop_assert_eq!(got, got.to_canonical());
            if !trusted().contains(peer) {
                prop_assert_eq!(got, peer);
            }
        }

        #[test]
        fn client_ip_entries_left_of_the_client_never_win(
            attacker in prop::collection::vec(attacker_value(), 0..4),
            client in untrusted_ip(),
            hops in prop::collection::vec(trusted_ip(), 0..6),
            peer in trusted_ip(),
            styles in prop::collection::vec(any::<u8>(), 7),
            forwarded in any::<bool>(),
            own_line in any::<bool>(),
            other_header in prop::collection::vec(attacker_value(), 0..3),
        ) {
            let (header, name, other, spell) = if forwarded {
                (ForwardedHeader::Forwarded, FWD, XFF, spell_forwarded as fn(IpAddr, u8) -> String)
            } else {
                (ForwardedHeader::XForwardedFor, XFF, FWD, spell_xff as _)
            };
            let appended = std::iter::once(client)
                .chain(hops)
                .zip(&styles)
                .map(|(ip, style)| spell(ip, *style))
                .collect::<Vec<_>>()
                .join(", ");
            let mut map = if own_line {
                // The client sent lines of its own; the first proxy added a line.
                headers(attacker.iter().map(|value| (name, value.as_slice())).chain([(name, appended.as_bytes())]))
            } else {
                // The first proxy appended to the client's line, as nginx's
                // `$proxy_add_x_forwarded_for` does.
                let mut line = attacker.join(&b", "[..]);
                if !attacker.is_empty() {
                    line.extend_from_slice(b", ");
                }
                line.extend_from_slice(appended.as_bytes());
                headers([(name, line.as_slice())])
            };
            // The client also writes the header the proxies do not, which they pass on.
            for value in &other_header {
                map.append(other, HeaderValue::from_bytes(value).unwrap());
            }
            prop_assert_eq!(client_ip(peer, &map, &trusted(), header), client.to_canonical(), "{:?}", map);
        }

        #[test]
        fn group_keeps_the_prefix_and_is_idempotent(v6 in any::<Ipv6Addr>(), prefix in any::<u8>()) {
            let grouped = group_by_prefix(IpAddr::V6(v6), prefix);
            prop_assert_eq!(group_by_prefix(grouped, prefix), grouped);
            if v6.to_ipv4_mapped().is_none() {
                let net = ipnet::Ipv6Net::new(v6, prefix.min(128)).unwrap();
                prop_assert_eq!(grouped, IpAddr::V6(net.network()));
            }
        }

        #[test]
        fn trusted_proxies_parse_what_they_print(net in any::<IpAddr>(), len in 0u8..=128) {
            let net = IpNet::new(net, len.min(if net.is_ipv4() { 32 } else { 128 })).unwrap().trunc();
            let list = TrustedProxies::parse(&[net.to_string()]).unwrap();
            prop_assert!(list.contains(net.network()));
            // An IPv6 range reaching into ::ffff:0:0/96 does not cover IPv4 (see `new`).
            if net.broadcast() == net.broadcast().to_canonical() {
                prop_assert!(list.contains(net.broadcast()));
            }
        }
    }
}
