//! The content codings a transformed body can be read through and written back in.
//!
//! A body with one coding the layer knows (`gzip`, `deflate`, `br`, `zstd`) is decoded when
//! the layer is set to (`decode_content`, feature `compression`), its JSON transformed, and
//! encoded again in the same coding, so that the receiver gets what it was going to get.
//! Decoding stops at `max_body_size` decoded bytes: a small body that expands to gigabytes
//! (a compression bomb) costs the layer no more than the limit.

// Without the feature only identity is read: the decoding paths and errors go unused.
#![cfg_attr(
    not(feature = "compression"),
    allow(unused_imports, unused_variables, dead_code)
)]

use std::io::Read;

use bytes::Bytes;
use http::header::{HeaderMap, CONTENT_ENCODING};

/// How a body's bytes are coded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Coding {
    /// Not coded.
    Identity,
    /// Coded by a compression the layer knows.
    #[cfg(feature = "compression")]
    Compressed(Compression),
}

/// The compressions the layer reads and writes.
#[cfg(feature = "compression")]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Compression {
    /// `gzip`.
    Gzip,
    /// `deflate` (zlib, as RFC 9110 defines it).
    Deflate,
    /// `br`.
    Brotli,
    /// `zstd`.
    Zstd,
}

/// Why a coded body could not be decoded.
#[derive(Debug)]
pub(crate) enum DecodeError {
    /// It decodes to more than the limit.
    TooLarge,
    /// It is not valid in its coding.
    Invalid(std::io::Error),
}

impl Coding {
    /// The coding of a message the layer can read: identity, or, when `decode` is set, one
    /// compression it knows. `None` for anything else (several codings, an unknown one),
    /// which passes untouched.
    pub(crate) fn readable(headers: &HeaderMap, decode: bool) -> Option<Coding> {
        let mut values = headers.get_all(CONTENT_ENCODING).iter();
        let Some(value) = values.next() else {
            return Some(Coding::Identity);
        };
        if values.next().is_some() {
            return None;
        }
        let name = value.to_str().ok()?.trim();
        if name.eq_ignore_ascii_case("identity") {
            return Some(Coding::Identity);
        }
        #[cfg(feature = "compression")]
        if decode {
            return Compression::named(name).map(Coding::Compressed);
        }
        None
    }

    /// The decoded bytes, at most `limit` of them.
    pub(crate) fn decode(self, bytes: Bytes, limit: usize) -> Result<Bytes, DecodeError> {
        match self {
            Coding::Identity => Ok(bytes),
            #[cfg(feature = "compression")]
            Coding::Compressed(compression) => compression.decode(&bytes, limit),
        }
    }

    /// `plain` in this coding.
    pub(crate) fn encode(self, plain: Vec<u8>) -> Bytes {
        match self {
            Coding::Identity => Bytes::from(plain),
            #[cfg(feature = "compression")]
            Coding::Compressed(compression) => compression.encode(&plain),
        }
    }
}

#[cfg(feature = "compression")]
impl Compression {
    fn named(name: &str) -> Option<Compression> {
        [
            ("gzip", Compression::Gzip),
            ("x-gzip", Compression::Gzip),
            ("deflate", Compression::Deflate),
            ("br", Compression::Brotli),
            ("zstd", Compression::Zstd),
        ]
        .into_iter()
        .find(|(known, _)| name.eq_ignore_ascii_case(known))
        .map(|(_, compression)| compression)
    }

    fn decode(self, coded: &[u8], limit: usize) -> Result<Bytes, DecodeError> {
        let reader: Box<dyn Read + '_> = match self {
            Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(coded)),
            Compression::Deflate => Box::new(flate2::read::ZlibDecoder::new(coded)),
            Compression::Brotli => Box::new(brotli::Decompressor::new(coded, 16 * 1024)),
            Compression::Zstd => Box::new(zstd::Decoder::new(coded).map_err(DecodeError::Invalid)?),
        };
        let mut decoded = Vec::new();
        // One byte past the limit tells a body at the limit from one over it.
        reader
            .take(limit as u64 + 1)
            .read_to_end(&mut decoded)
            .map_err(DecodeError::Invalid)?;
        if decoded.len() > limit {
            return Err(DecodeError::TooLarge);
        }
        Ok(Bytes::from(decoded))
    }

    /// At each coder's usual speed setting (gzip 6, brotli 5, zstd 3: the levels web servers
    /// compress dynamic answers with).
    fn encode(self, plain: &[u8]) -> Bytes {
        use std::io::Write;
        let encoded = match self {
            Compression::Gzip => {
                let mut encoder =
                    flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
                encoder.write_all(plain).and_then(|()| encoder.finish())
            }
            Compression::Deflate => {
                let mut encoder =
                    flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
                encoder.write_all(plain).and_then(|()| encoder.finish())
            }
            Compression::Brotli => {
                let mut encoded = Vec::new();
                let params = brotli::enc::BrotliEncoderParams {
                    quality: 5,
                    ..Default::default()
                };
                brotli::BrotliCompress(&mut &plain[..], &mut encoded, &params).map(|_| encoded)
            }
            Compression::Zstd => zstd::bulk::compress(plain, 3),
        };
        // Writing to memory cannot fail; the coders' signatures are those of streams.
        Bytes::from(encoded.expect("encoding into memory"))
    }
}

#[cfg(all(test, feature = "compression"))]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn headers(coding: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_ENCODING, HeaderValue::from_str(coding).unwrap());
        headers
    }

    #[test]
    fn each_coding_round_trips() {
        let plain = br#"{"user":{"name":"ada"}}"#.repeat(50);
        for name in ["gzip", "deflate", "br", "zstd", "identity"] {
            let coding = Coding::readable(&headers(name), true).unwrap();
            let encoded = coding.encode(plain.clone());
            assert_eq!(coding.decode(encoded, 1 << 20).unwrap(), plain, "{name}");
        }
    }

    #[test]
    fn only_one_known_coding_is_read_and_only_when_asked() {
        assert_eq!(
            Coding::readable(&HeaderMap::new(), false),
            Some(Coding::Identity)
        );
        assert_eq!(Coding::readable(&headers("gzip"), false), None);
        assert_eq!(
            Coding::readable(&headers("GZIP"), true),
            Some(Coding::Compressed(Compression::Gzip))
        );
        assert_eq!(Coding::readable(&headers("compress"), true), None);
        let mut stacked = headers("gzip");
        stacked.append(CONTENT_ENCODING, HeaderValue::from_static("br"));
        assert_eq!(Coding::readable(&stacked, true), None);
    }

    #[test]
    fn a_bomb_stops_at_the_limit_and_garbage_is_invalid() {
        let zeros = vec![0u8; 16 << 20];
        for compression in [
            Compression::Gzip,
            Compression::Brotli,
            Compression::Zstd,
            Compression::Deflate,
        ] {
            let coding = Coding::Compressed(compression);
            let bomb = coding.encode(zeros.clone());
            assert!(bomb.len() < 1 << 20, "{coding:?}: {} bytes", bomb.len());
            assert!(matches!(
                coding.decode(bomb, 1 << 20),
                Err(DecodeError::TooLarge)
            ));
            assert!(matches!(
                coding.decode(Bytes::from_static(b"not coded at all"), 1 << 20),
                Err(DecodeError::Invalid(_))
            ));
        }
    }
}
