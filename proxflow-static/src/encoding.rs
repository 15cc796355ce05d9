//! `Accept-Encoding` negotiation with q-values (RFC 9110 §12.5.3).

use crate::conditional::FieldLines;

/// A content coding the layer can serve.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Encoding {
    /// Brotli (`br`), file suffix `.br`.
    Brotli,
    /// Zstandard (`zstd`), file suffix `.zst`.
    Zstd,
    /// gzip (`gzip`), file suffix `.gz`.
    Gzip,
    /// No coding.
    Identity,
}

impl Encoding {
    /// The compressed codings, in the order preferred when the client weighs them equally.
    pub const COMPRESSED: [Encoding; 3] = [Encoding::Brotli, Encoding::Zstd, Encoding::Gzip];

    /// The token used in `Content-Encoding`.
    pub fn token(self) -> &'static str {
        match self {
            Encoding::Brotli => "br",
            Encoding::Zstd => "zstd",
            Encoding::Gzip => "gzip",
            Encoding::Identity => "identity",
        }
    }

    /// The suffix of a precompressed sibling file, with its dot.
    pub fn file_suffix(self) -> &'static str {
        match self {
            Encoding::Brotli => ".br",
            Encoding::Zstd => ".zst",
            Encoding::Gzip => ".gz",
            Encoding::Identity => "",
        }
    }

    pub(crate) fn index(self) -> usize {
        self as usize
    }
}

/// Picks the coding with the highest q-value among those `available` says exist; equal weights
/// go to the order of [`Encoding::COMPRESSED`], then identity. Identity not named by the client
/// (nor by `*`) is acceptable but least preferred; when nothing is acceptable, identity is sent
/// anyway (RFC 9110 allows this rather than a 406). A field sent on several lines is one list
/// (RFC 9110 §5.3); a line that is not text is skipped.
pub(crate) fn negotiate(accept: FieldLines<'_>, available: impl Fn(Encoding) -> bool) -> Encoding {
    if !accept.is_present() {
        return Encoding::Identity;
    }
    let mut weights = [None::<u16>; 4];
    let mut star = None;
    let items = accept
        .lines()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|text| text.split(','));
    for item in items {
        let mut parts = item.split(';');
        let token = parts.next().unwrap_or("").trim();
        let q = parts
            .find_map(|param| {
                let (name, value) = param.split_once('=')?;
                name.trim()
                    .eq_ignore_ascii_case("q")
                    .then(|| parse_q(value.trim()))
            })
            .unwrap_or(Some(1000));
        let Some(q) = q else { continue };
        let slot = match token.to_ascii_lowercase().as_str() {
            "br" => &mut weights[Encoding::Brotli.index()],
            "zstd" => &mut weights[Encoding::Zstd.index()],
            "gzip" | "x-gzip" => &mut weights[Encoding::Gzip.index()],
            "identity" => &mut weights[Encoding::Identity.index()],
            "*" => &mut star,
            _ => continue,
        };
        *slot = Some(q);
    }
    // Unnamed, identity is acceptable but least preferred: any coding the client accepts wins.
    let identity = weights[Encoding::Identity.index()].or(star).unwrap_or(1);
    let weight = |encoding: Encoding| match encoding {
        Encoding::Identity => identity,
        _ if available(encoding) => weights[encoding.index()].or(star).unwrap_or(0),
        _ => 0,
    };
    let preference = [
        Encoding::Brotli,
        Encoding::Zstd,
        Encoding::Gzip,
        Encoding::Identity,
    ];
    let best = preference.into_iter().map(weight).max().unwrap_or(0);
    if best == 0 {
        return Encoding::Identity;
    }
    preference
        .into_iter()
        .find(|&encoding| weight(encoding) == best)
        .unwrap_or(Encoding::Identity)
}

/// A q-value in thousandths; `None` for a malformed one, which drops the item.
fn parse_q(text: &str) -> Option<u16> {
    let value: f32 = text.parse().ok()?;
    (0.0..=1.0)
        .contains(&value)
        .then(|| (value * 1000.0).round() as u16)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn pick(accept: &str) -> Encoding {
        let value = HeaderValue::from_str(accept).unwrap();
        negotiate(FieldLines::one(&value), |_| true)
    }

    #[test]
    fn server_order_breaks_ties() {
        assert_eq!(pick("gzip, deflate, br, zstd"), Encoding::Brotli);
        assert_eq!(pick("gzip, zstd"), Encoding::Zstd);
        assert_eq!(pick("gzip"), Encoding::Gzip);
        assert_eq!(
            negotiate(FieldLines::default(), |_| true),
            Encoding::Identity
        );
    }

    #[test]
    fn q_values_decide() {
        assert_eq!(pick("br;q=0.5, gzip;q=0.8"), Encoding::Gzip);
        assert_eq!(pick("br;q=0, gzip"), Encoding::Gzip);
        assert_eq!(pick("*;q=0.1, identity;q=0.5"), Encoding::Identity);
        assert_eq!(pick("*"), Encoding::Brotli);
        assert_eq!(pick("gzip;q=0.4, identity;q=0.3"), Encoding::Gzip);
        assert_eq!(
            pick("gzip;q=0.3"),
            Encoding::Gzip,
            "unnamed identity is the last resort"
        );
        assert_eq!(pick("gzip;q=0.3, identity"), Encoding::Identity);
        assert_eq!(
            pick("br;q=abc, gzip"),
            Encoding::Gzip,
            "a malformed q drops the item"
        );
        assert_eq!(pick("deflate"), Encoding::Identity);
    }

    #[test]
    fn only_available_codings_are_chosen() {
        let accept = HeaderValue::from_static("br, gzip");
        assert_eq!(
            negotiate(FieldLines::one(&accept), |e| e == Encoding::Gzip),
            Encoding::Gzip
        );
        assert_eq!(
            negotiate(FieldLines::one(&accept), |_| false),
            Encoding::Identity
        );
    }
}
