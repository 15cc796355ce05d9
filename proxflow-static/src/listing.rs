//! Directory listings: HTML for browsers, JSON for programs.

use std::fs;
use std::io;
use std::path::Path;

use http::{header, HeaderMap, HeaderValue, Response};
use serde::Serialize;

use crate::body::FileBody;
use crate::conditional::unix_seconds;
use crate::respond::NO_CACHE;

/// One entry of a listing.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub(crate) struct ListingEntry {
    pub(crate) name: String,
    pub(crate) is_dir: bool,
    pub(crate) size: u64,
    /// Seconds since the epoch.
    pub(crate) modified: u64,
}

#[derive(Serialize)]
struct JsonListing<'a> {
    path: &'a str,
    entries: &'a [ListingEntry],
}

/// Reads a directory, dotfiles left out unless `dotfiles`; folders first, then by name. Blocking.
pub(crate) fn read(dir: &Path, dotfiles: bool) -> io::Result<Vec<ListingEntry>> {
    let mut entries = Vec::new();
    for item in fs::read_dir(dir)? {
        let item = item?;
        let name = item.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') && !dotfiles {
            continue;
        }
        let Ok(metadata) = item.metadata() else {
            continue;
        };
        entries.push(ListingEntry {
            name,
            is_dir: metadata.is_dir(),
            size: if metadata.is_dir() { 0 } else { metadata.len() },
            modified: metadata.modified().map(unix_seconds).unwrap_or(0),
        });
    }
    entries.sort_by(|a, b| b.is_dir.cmp(&a.is_dir).then_with(|| a.name.cmp(&b.name)));
    Ok(entries)
}

/// The listing of the directory at `url_path`: JSON when the request accepts it, HTML otherwise.
pub(crate) fn response(
    url_path: &str,
    entries: &[ListingEntry],
    request_headers: &HeaderMap,
) -> Response<FileBody> {
    let wants_json = request_headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|accept| accept.contains("application/json"));
    let (body, content_type) = if wants_json {
        (to_json(url_path, entries), "application/json")
    } else {
        (to_html(url_path, entries), "text/html; charset=utf-8")
    };
    let mut response = Response::new(FileBody::full(body));
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CACHE_CONTROL, NO_CACHE);
    headers.insert(header::VARY, HeaderValue::from_static("accept"));
    response
}

fn to_json(url_path: &str, entries: &[ListingEntry]) -> String {
    serde_json::to_string(&JsonListing {
        path: url_path,
        entries,
    })
    .unwrap_or_else(|_| "{}".into())
}

fn to_html(url_path: &str, entries: &[ListingEntry]) -> String {
    let title = escape(url_path);
    let mut html = format!(
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>Index of {title}</title></head>\n\
         <body><h1>Index of {title}</h1>\n<ul>\n<li><a href=\"../\">../</a></li>\n"
    );
    for entry in entries {
        let slash = if entry.is_dir { "/" } else { "" };
        let href =
            percent_encoding::utf8_percent_encode(&entry.name, percent_encoding::NON_ALPHANUMERIC);
        let size = if entry.is_dir {
            String::new()
        } else {
            format!(" ({} bytes)", entry.size)
        };
        html.push_str(&format!(
            "<li><a href=\"{href}{slash}\">{}{slash}</a>{size}</li>\n",
            escape(&entry.name)
        ));
    }
    html.push_str("</ul></body></html>\n");
    html
}

fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_folders_first_and_escapes_names() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("b<script>.txt"), "x").unwrap();
        fs::write(dir.path().join(".hidden"), "x").unwrap();
        fs::create_dir(dir.path().join("zdir")).unwrap();
        let entries = read(dir.path(), false).unwrap();
        let names: Vec<_> = entries.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(names, ["zdir", "b<script>.txt"]);
        let html = to_html("/static/", &entries);
        assert!(html.contains("b&lt;script&gt;.txt") && !html.contains("<script>"));
        assert!(html.contains("href=\"zdir/\""));
        let json: serde_json::Value = serde_json::from_str(&to_json("/static/", &entries)).unwrap();
        assert_eq!(json["entries"][1]["size"], 1);
    }
}
