//! Paths into a JSON document: RFC 6901 JSON Pointers (`/user/name`, `~0` for `~`, `~1` for
//! `/`) and dotted paths (`user.name`, `items.0.id`, `\.` for a dot in a key, `\\` for a
//! backslash), both read into the same list of reference tokens.

use std::fmt;

/// A parsed path: its reference tokens, outermost first. The empty list is the whole
/// document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Path {
    tokens: Vec<String>,
}

/// Why a path does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// A JSON Pointer that is not empty must start with `/`.
    #[error("a JSON Pointer starts with '/': {0:?}")]
    NoLeadingSlash(String),
    /// `~` is followed by something other than `0` or `1` (RFC 6901 §3).
    #[error("'~' must be followed by 0 or 1 in {0:?}")]
    BadEscape(String),
    /// A dotted path ends with a lone `\`, or escapes something other than `.` or `\`.
    #[error("'\\' escapes '.' or '\\' only, in {0:?}")]
    BadDottedEscape(String),
}

impl Path {
    /// The whole document.
    pub fn root() -> Path {
        Path { tokens: Vec::new() }
    }

    /// An RFC 6901 JSON Pointer: `""` is the whole document, otherwise `/` and tokens.
    pub fn pointer(text: &str) -> Result<Path, PathError> {
        if text.is_empty() {
            return Ok(Path::root());
        }
        let Some(rest) = text.strip_prefix('/') else {
            return Err(PathError::NoLeadingSlash(text.to_string()));
        };
        let tokens = rest
            .split('/')
            .map(|raw| unescape_pointer(raw).ok_or_else(|| PathError::BadEscape(text.to_string())))
            .collect::<Result<_, _>>()?;
        Ok(Path { tokens })
    }

    /// A dotted path: tokens between dots, `\.` a dot inside a key, `\\` a backslash. `""` is
    /// the whole document.
    pub fn dotted(text: &str) -> Result<Path, PathError> {
        if text.is_empty() {
            return Ok(Path::root());
        }
        let mut tokens = Vec::new();
        let mut token = String::new();
        let mut chars = text.chars();
        while let Some(c) = chars.next() {
            match c {
                '\\' => match chars.next() {
                    Some(escaped @ ('.' | '\\')) => token.push(escaped),
                    _ => return Err(PathError::BadDottedEscape(text.to_string())),
                },
                '.' => tokens.push(std::mem::take(&mut token)),
                c => token.push(c),
            }
        }
        tokens.push(token);
        Ok(Path { tokens })
    }

    /// A JSON Pointer if `text` starts with `/` (or is empty), a dotted path otherwise.
    pub fn parse(text: &str) -> Result<Path, PathError> {
        if text.is_empty() || text.starts_with('/') {
            Path::pointer(text)
        } else {
            Path::dotted(text)
        }
    }

    /// The reference tokens, outermost first.
    pub fn tokens(&self) -> &[String] {
        &self.tokens
    }

    /// The parent's path and the last token; `None` for the whole document.
    pub fn split_last(&self) -> Option<(&[String], &str)> {
        let (last, parents) = self.tokens.split_last()?;
        Some((parents, last))
    }

    /// Whether `self` is a proper prefix of `other` (RFC 6902 §4.4: a value cannot be moved
    /// into one of its children).
    pub fn is_proper_prefix_of(&self, other: &Path) -> bool {
        self.tokens.len() < other.tokens.len() && other.tokens.starts_with(&self.tokens)
    }
}

impl fmt::Display for Path {
    /// The path as a JSON Pointer.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for token in &self.tokens {
            write!(f, "/{}", token.replace('~', "~0").replace('/', "~1"))?;
        }
        Ok(())
    }
}

/// `~1` to `/` and then `~0` to `~` (in that order, RFC 6901 §4); `None` for any other `~`.
fn unescape_pointer(raw: &str) -> Option<String> {
    let mut out = String::with_capacity(raw.len());
    let mut chars = raw.chars();
    while let Some(c) = chars.next() {
        if c == '~' {
            match chars.next() {
                Some('0') => out.push('~'),
                Some('1') => out.push('/'),
                _ => return None,
            }
        } else {
            out.push(c);
        }
    }
    Some(out)
}

/// An array index as RFC 6901 §4 allows it: `0`, or digits without a leading zero.
pub(crate) fn array_index(token: &str) -> Option<usize> {
    let digits = !token.is_empty() && token.bytes().all(|b| b.is_ascii_digit());
    if !digits || (token.len() > 1 && token.starts_with('0')) {
        return None;
    }
    token.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens(path: &Path) -> Vec<&str> {
        path.tokens().iter().map(String::as_str).collect()
    }

    #[test]
    fn pointers_follow_rfc_6901() {
        assert!(Path::pointer("").unwrap().tokens().is_empty());
        assert_eq!(tokens(&Path::pointer("/").unwrap()), [""]);
        assert_eq!(
            tokens(&Path::pointer("/a~1b/m~0n/~01").unwrap()),
            ["a/b", "m~n", "~1"]
        );
        assert_eq!(
            Path::pointer("a").unwrap_err(),
            PathError::NoLeadingSlash("a".into())
        );
        assert!(matches!(
            Path::pointer("/a~2"),
            Err(PathError::BadEscape(_))
        ));
        assert!(matches!(Path::pointer("/a~"), Err(PathError::BadEscape(_))));
        assert_eq!(
            Path::pointer("/a~1b/m~0n").unwrap().to_string(),
            "/a~1b/m~0n"
        );
    }

    #[test]
    fn dotted_paths_escape_dots_and_backslashes() {
        assert_eq!(
            tokens(&Path::dotted("user.name").unwrap()),
            ["user", "name"]
        );
        assert_eq!(
            tokens(&Path::dotted("items.0.id").unwrap()),
            ["items", "0", "id"]
        );
        assert_eq!(
            tokens(&Path::dotted(r"a\.b.c\\d").unwrap()),
            ["a.b", r"c\d"]
        );
        assert!(Path::dotted(r"a\b").is_err());
        assert!(Path::dotted("a\\").is_err());
        assert_eq!(tokens(&Path::parse("/x/y").unwrap()), ["x", "y"]);
        assert_eq!(tokens(&Path::parse("x.y").unwrap()), ["x", "y"]);
    }

    #[test]
    fn array_indexes_have_no_leading_zeros() {
        assert_eq!(array_index("0"), Some(0));
        assert_eq!(array_index("10"), Some(10));
        for bad in ["01", "", "-", "1e0", "-1", " 1", "+1"] {
            assert_eq!(array_index(bad), None, "{bad:?}");
        }
    }
}
