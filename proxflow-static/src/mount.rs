//! Which requests are for the layer, and the part of their path below the mount prefix, also
//! when a router has stripped a prefix before the layer sees the request.

use std::borrow::Cow;

use http::Extensions;

/// The URL prefix files are served under.
#[derive(Debug, Clone)]
pub(crate) struct Mount {
    /// Without a trailing slash; empty for `/`.
    prefix: String,
}

impl Mount {
    pub(crate) fn new(path: &str) -> Self {
        Mount {
            prefix: path.trim_end_matches('/').to_string(),
        }
    }

    pub(crate) fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The part of `path` below the mount prefix (empty or starting with `/`), if the request
    /// is for this mount.
    ///
    /// `nested_at` is the prefix a router removed from the path before this service saw it.
    /// When the mount prefix lies at or below it, the mount is matched against the path the
    /// client sent: a service mounted at `/static` and nested at `/static` serves
    /// `/static/app.js` from its seen path `/app.js`. Otherwise (a mount at `/`, or one unrelated
    /// to the nest point) the seen path is matched, as without nesting.
    pub(crate) fn below<'a>(&self, path: &'a str, nested_at: Option<&str>) -> Option<&'a str> {
        let within_nest = nested_at.and_then(|nest| {
            let nest = nest.trim_end_matches('/');
            let rest = self.prefix.strip_prefix(nest)?;
            let is_boundary = !nest.is_empty() && (rest.is_empty() || rest.starts_with('/'));
            is_boundary.then_some(rest)
        });
        match within_nest {
            Some(inner_prefix) if !self.prefix.is_empty() => below(path, inner_prefix),
            _ => below(path, &self.prefix),
        }
    }
}

fn below<'a>(path: &'a str, prefix: &str) -> Option<&'a str> {
    let rest = path.strip_prefix(prefix)?;
    (rest.is_empty() || rest.starts_with('/')).then_some(rest)
}

/// The path the client sent: `path` behind the prefix a router removed from it.
pub(crate) fn full_path<'a>(path: &'a str, nested_at: Option<&str>) -> Cow<'a, str> {
    match nested_at.map(|nest| nest.trim_end_matches('/')) {
        Some(nest) if !nest.is_empty() => Cow::Owned(format!("{nest}{path}")),
        _ => Cow::Borrowed(path),
    }
}

/// The prefix a router removed from the request path before this service saw it: axum's
/// `NestedPath`, which `Router::nest` and `Router::nest_service` set.
#[cfg(feature = "axum")]
pub(crate) fn nested_at(extensions: &Extensions) -> Option<&str> {
    extensions
        .get::<axum::extract::NestedPath>()
        .map(axum::extract::NestedPath::as_str)
}

/// Without the `axum` feature no router's nesting is known; paths are matched as seen.
#[cfg(not(feature = "axum"))]
pub(crate) fn nested_at(_: &Extensions) -> Option<&str> {
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_nesting_the_seen_path_is_matched() {
        let mount = Mount::new("/static/");
        assert_eq!(mount.below("/static/app.js", None), Some("/app.js"));
        assert_eq!(mount.below("/static", None), Some(""));
        assert_eq!(mount.below("/staticx/app.js", None), None);
        assert_eq!(mount.below("/app.js", None), None);
        assert_eq!(Mount::new("/").below("/app.js", None), Some("/app.js"));
    }

    #[test]
    fn nested_at_the_mount_the_seen_path_is_below_it() {
        let mount = Mount::new("/static");
        let nest = Some("/static");
        assert_eq!(mount.below("/app.js", nest), Some("/app.js"));
        assert_eq!(mount.below("/", nest), Some("/"));
        // A folder named like the mount is still a folder.
        assert_eq!(mount.below("/static/app.js", nest), Some("/static/app.js"));
        let deeper = Mount::new("/app/static");
        assert_eq!(deeper.below("/static/x.js", Some("/app/")), Some("/x.js"));
        assert_eq!(deeper.below("/x.js", Some("/app")), None);
    }

    #[test]
    fn nested_elsewhere_the_seen_path_is_matched() {
        // A mount at `/` serves paths relative to wherever it is nested.
        assert_eq!(
            Mount::new("/").below("/app.js", Some("/static")),
            Some("/app.js")
        );
        // A mount unrelated to the nest point: as without nesting.
        let mount = Mount::new("/static");
        assert_eq!(
            mount.below("/static/app.js", Some("/site")),
            Some("/app.js")
        );
        assert_eq!(mount.below("/app.js", Some("/site")), None);
        // `/stat` is not a segment boundary of `/static`.
        assert_eq!(mount.below("/ic/app.js", Some("/stat")), None);
    }

    #[test]
    fn the_full_path_puts_the_nest_back() {
        assert_eq!(full_path("/app.js", Some("/static")), "/static/app.js");
        assert_eq!(full_path("/app.js", Some("/static/")), "/static/app.js");
        assert_eq!(full_path("/app.js", None), "/app.js");
    }
}
