//! Turning the request path into a safe path below the root.
//!
//! The rules are strict on purpose: a browser never sends `..`, encoded separators or NUL, so a
//! request that does is refused outright instead of being "repaired" into something that might
//! still escape the root on some platform.

use std::borrow::Cow;

use percent_encoding::percent_decode_str;

/// A request path that is safe to join onto a root directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SafePath<'a> {
    /// Segments joined by `/`, no leading slash, with a trailing slash when the request had one.
    /// This is also the memory cache key.
    pub(crate) key: Cow<'a, str>,
    /// The request path ended with `/` (or was empty below the mount point).
    pub(crate) trailing_slash: bool,
    /// The request named the mount point itself without a slash (`/static`).
    pub(crate) is_mount_root: bool,
}

impl SafePath<'_> {
    /// The path without its trailing slash, as it is joined onto a root.
    pub(crate) fn relative(&self) -> &str {
        self.key.strip_suffix('/').unwrap_or(&self.key)
    }

    /// The last segment, as a relative reference for a redirect (`docs` -> `docs/`).
    pub(crate) fn last_segment(&self) -> &str {
        let relative = self.relative();
        relative.rsplit('/').next().unwrap_or(relative)
    }
}

/// Why a path was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PathRejection {
    /// `..`, an encoded separator, a backslash, NUL, a drive letter, double encoding, bad UTF-8,
    /// a malformed percent escape.
    Invalid,
    /// A dotfile or dot-directory other than `/.well-known/`.
    Hidden,
}

/// Checks `rest`, the part of the request path below the mount point (empty or starting with `/`).
pub(crate) fn sanitize(rest: &str, allow_dotfiles: bool) -> Result<SafePath<'_>, PathRejection> {
    if rest.is_empty() {
        return Ok(SafePath {
            key: Cow::Borrowed(""),
            trailing_slash: false,
            is_mount_root: true,
        });
    }
    let Some(body) = rest.strip_prefix('/') else {
        return Err(PathRejection::Invalid);
    };
    // A final `.` names the directory itself, as `/docs/.` resolves to `/docs/` (RFC 3986
    // §5.2.4); read without its slash, `docs` would redirect to `docs/` below itself.
    let trailing_slash =
        body.is_empty() || body.ends_with('/') || body.rsplit('/').next() == Some(".");
    let mut rewritten = false;
    let mut first = true;
    let mut hidden = false;
    let mut raw_segments = body.split('/').peekable();
    while let Some(raw) = raw_segments.next() {
        let is_last = raw_segments.peek().is_none();
        if raw.is_empty() || raw == "." {
            rewritten |= raw == "." || !is_last;
            continue;
        }
        let segment = decode_segment(raw)?;
        rewritten |= matches!(segment, Cow::Owned(_));
        hidden |= segment.starts_with('.') && !(first && segment == ".well-known");
        first = false;
    }
    // Checked after every segment, so a traversal behind a dotfile is still refused as such.
    if hidden && !allow_dotfiles {
        return Err(PathRejection::Hidden);
    }
    let key = if rewritten {
        Cow::Owned(normalise(body, trailing_slash))
    } else {
        Cow::Borrowed(body)
    };
    Ok(SafePath {
        key,
        trailing_slash,
        is_mount_root: false,
    })
}

/// Decodes and checks one segment; borrowed when it needed no decoding.
fn decode_segment(raw: &str) -> Result<Cow<'_, str>, PathRejection> {
    let segment = if raw.contains('%') {
        if !escapes_are_well_formed(raw) {
            // `%` not followed by two hex digits is no URI (RFC 3986 §2.1); nginx answers 400.
            return Err(PathRejection::Invalid);
        }
        let decoded = percent_decode_str(raw)
            .decode_utf8()
            .map_err(|_| PathRejection::Invalid)?;
        if has_percent_escape(&decoded) {
            // Double encoding (`%252e`) is how traversal slips past a filter that decodes once.
            return Err(PathRejection::Invalid);
        }
        Cow::Owned(decoded.into_owned())
    } else {
        Cow::Borrowed(raw)
    };
    check_segment(&segment)?;
    Ok(segment)
}

/// Rebuilds an already checked path without empty and `.` segments and with escapes decoded.
fn normalise(body: &str, trailing_slash: bool) -> String {
    let segments: Vec<Cow<'_, str>> = body
        .split('/')
        .filter(|raw| !raw.is_empty() && *raw != ".")
        .filter_map(|raw| decode_segment(raw).ok())
        .collect();
    let mut key = segments.join("/");
    if trailing_slash && !key.is_empty() {
        key.push('/');
    }
    key
}

fn check_segment(segment: &str) -> Result<(), PathRejection> {
    let forbidden = segment == ".."
        || segment.contains(['/', '\\', '\0', ':'])
        || segment.chars().any(char::is_control);
    if forbidden {
        Err(PathRejection::Invalid)
    } else {
        Ok(())
    }
}

/// Whether every `%` starts an escape of two hex digits.
fn escapes_are_well_formed(raw: &str) -> bool {
    let bytes = raw.as_bytes();
    bytes.iter().enumerate().all(|(i, &b)| {
        b != b'%'
            || (bytes.get(i + 1).is_some_and(u8::is_ascii_hexdigit)
                && bytes.get(i + 2).is_some_and(u8::is_ascii_hexdigit))
    })
}

fn has_percent_escape(text: &str) -> bool {
    let bytes = text.as_bytes();
    bytes
        .windows(3)
        .any(|w| w[0] == b'%' && w[1].is_ascii_hexdigit() && w[2].is_ascii_hexdigit())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn key(rest: &str) -> Result<String, PathRejection> {
        sanitize(rest, false).map(|p| p.key.into_owned())
    }

    #[test]
    fn plain_paths_borrow_the_request_text() {
        let path = sanitize("/vendor/jquery.min.js", false).unwrap();
        assert!(matches!(path.key, Cow::Borrowed("vendor/jquery.min.js")));
        assert!(!path.trailing_slash);
        assert_eq!(path.last_segment(), "jquery.min.js");
    }

    #[test]
    fn directories_keep_their_slash() {
        let path = sanitize("/docs/", false).unwrap();
        assert_eq!(path.key, "docs/");
        assert!(path.trailing_slash);
        assert_eq!(path.relative(), "docs");
        assert_eq!(sanitize("/", false).unwrap().key, "");
        assert!(sanitize("", false).unwrap().is_mount_root);
    }

    #[test]
    fn redundant_segments_are_normalised() {
        assert_eq!(key("//a///b"), Ok("a/b".into()));
        assert_eq!(key("/a/./b/"), Ok("a/b/".into()));
        assert_eq!(key("/a%20b.txt"), Ok("a b.txt".into()));
        assert_eq!(key("/./"), Ok("".into()));
        assert_eq!(key("/docs/."), Ok("docs/".into()));
        assert_eq!(key("/."), Ok("".into()));
        assert!(sanitize("/docs/.", false).unwrap().trailing_slash);
    }

    #[test]
    fn traversal_and_tricks_are_refused() {
        for bad in [
            "/../etc/passwd",
            "/a/../../etc/passwd",
            "/%2e%2e/etc/passwd",
            "/%2E%2E%2Fetc%2Fpasswd",
            "/..%2fetc",
            "/..%5cetc",
            "/a\\..\\..\\etc",
            "/a%00.txt",
            "/C:/Windows/win.ini",
            "/c%3a/x",
            "/%252e%252e/etc/passwd",
            "/%ff%fe",
            "/100%.txt",
            "/%zz",
            "/a%2",
            "/a%",
            "relative",
        ] {
            assert_eq!(key(bad), Err(PathRejection::Invalid), "{bad}");
        }
    }

    #[test]
    fn dotfiles_are_hidden_except_well_known() {
        assert_eq!(key("/.env"), Err(PathRejection::Hidden));
        assert_eq!(key("/a/.git/config"), Err(PathRejection::Hidden));
        assert_eq!(key("/%2egit/config"), Err(PathRejection::Hidden));
        assert_eq!(
            key("/.well-known/security.txt"),
            Ok(".well-known/security.txt".into())
        );
        assert_eq!(key("/a/.well-known/x"), Err(PathRejection::Hidden));
        assert!(sanitize("/.env", true).is_ok());
    }

    proptest! {
        #[test]
        fn accepted_keys_never_climb(rest in "(/[a-z.%25A-F0-9\\\\:]{0,6}){0,5}/?") {
            if let Ok(path) = sanitize(&rest, true) {
                for segment in path.relative().split('/') {
                    prop_assert!(segment != ".." && segment != ".");
                    prop_assert!(!segment.contains(['\\', '\0', ':']));
                }
                prop_assert!(!path.key.starts_with('/'));
            }
        }
    }
}
