//! The header verbs (`add`, `set`, `append`, `delete`, `rename`) with values that are
//! templates over the request, and the headers they may not touch unless allowed.
//!
//! A template is text with placeholders: `{method}`, `{path}`, `{client_ip}`,
//! `{header.<name>}` (the request's header, its lines joined by `, `), `{query.<name>}` (the
//! first value of a query parameter, percent-decoded); `{{` and `}}` write braces. A
//! placeholder with nothing to show renders empty. A rendered value that is not a valid header
//! value (a control character from a decoded query parameter, say) leaves the header alone
//! instead: a template can never inject a header line.

use std::net::IpAddr;

use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::{Method, Uri};

/// Whether a rule may touch `name` only when it says so: the connection's own fields
/// ([`proxflow_core::headers::HOP_BY_HOP`]), `Host` and `Content-Length`, which the message's
/// routing and framing depend on.
pub fn is_protected(name: &HeaderName) -> bool {
    proxflow_core::headers::is_hop_by_hop(name)
        || name == http::header::HOST
        || name == http::header::CONTENT_LENGTH
}

/// What a header rule does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeaderVerb {
    /// Sets the header only if it is absent.
    Add(Template),
    /// Replaces every line of the header, or adds it.
    Set(Template),
    /// Adds another line.
    Append(Template),
    /// Removes every line.
    Delete,
    /// Moves every line to another name (replacing what that name had).
    Rename(HeaderName),
}

/// One header rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderRule {
    name: HeaderName,
    verb: HeaderVerb,
    /// The value of a template without placeholders, made once.
    constant: Option<HeaderValue>,
}

/// Why a header rule cannot be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeaderRuleError {
    /// Not a valid header name.
    #[error("not a header name: {0:?}")]
    BadName(String),
    /// A protected header without `allow_protected`.
    #[error("{0} is protected: allow it explicitly to change it")]
    Protected(String),
    /// The template does not parse.
    #[error("template {template:?}: {reason}")]
    BadTemplate {
        /// The template.
        template: String,
        /// What is wrong.
        reason: String,
    },
}

impl HeaderRule {
    /// A rule on `name`; a protected header needs `allow_protected`.
    pub fn new(
        name: &str,
        verb: HeaderVerb,
        allow_protected: bool,
    ) -> Result<Self, HeaderRuleError> {
        let name = parse_name(name)?;
        let renamed_to = match &verb {
            HeaderVerb::Rename(to) => Some(to),
            _ => None,
        };
        for touched in std::iter::once(&name).chain(renamed_to) {
            if !allow_protected && is_protected(touched) {
                return Err(HeaderRuleError::Protected(touched.to_string()));
            }
        }
        let constant = match &verb {
            HeaderVerb::Add(template)
            | HeaderVerb::Set(template)
            | HeaderVerb::Append(template) => template
                .literal()
                .and_then(|text| HeaderValue::from_str(text).ok()),
            HeaderVerb::Delete | HeaderVerb::Rename(_) => None,
        };
        Ok(HeaderRule {
            name,
            verb,
            constant,
        })
    }

    /// Its template, for the verbs that have one.
    pub(crate) fn template(&self) -> Option<&Template> {
        match &self.verb {
            HeaderVerb::Add(template)
            | HeaderVerb::Set(template)
            | HeaderVerb::Append(template) => Some(template),
            HeaderVerb::Delete | HeaderVerb::Rename(_) => None,
        }
    }

    /// Applies the rule to `headers`, rendering templates over `request`.
    pub fn apply(&self, headers: &mut HeaderMap, request: &RequestView<'_>) {
        let render = |template: &Template| match &self.constant {
            Some(value) => Some(value.clone()),
            None => HeaderValue::from_str(&template.render(request)).ok(),
        };
        match &self.verb {
            HeaderVerb::Add(template) => {
                if !headers.contains_key(&self.name) {
                    if let Some(value) = render(template) {
                        headers.insert(self.name.clone(), value);
                    }
                }
            }
            HeaderVerb::Set(template) => {
                if let Some(value) = render(template) {
                    headers.insert(self.name.clone(), value);
                }
            }
            HeaderVerb::Append(template) => {
                if let Some(value) = render(template) {
                    headers.append(self.name.clone(), value);
                }
            }
            HeaderVerb::Delete => {
                headers.remove(&self.name);
            }
            HeaderVerb::Rename(to) => {
                let lines: Vec<HeaderValue> = headers.get_all(&self.name).iter().cloned().collect();
                if lines.is_empty() || *to == self.name {
                    return;
                }
                headers.remove(&self.name);
                headers.remove(to);
                for line in lines {
                    headers.append(to.clone(), line);
                }
            }
        }
    }
}

/// A header name, checked.
pub fn parse_name(name: &str) -> Result<HeaderName, HeaderRuleError> {
    HeaderName::from_bytes(name.as_bytes()).map_err(|_| HeaderRuleError::BadName(name.to_string()))
}

/// What templates read: the request as it arrived.
#[derive(Debug, Clone, Copy)]
pub struct RequestView<'a> {
    /// The method.
    pub method: &'a Method,
    /// The URI (path and query).
    pub uri: &'a Uri,
    /// The headers.
    pub headers: &'a HeaderMap,
    /// The client's address, if known.
    pub client_ip: Option<IpAddr>,
}

/// A header (or body) value with placeholders, parsed once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    parts: Vec<Part>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(String),
    Method,
    Path,
    ClientIp,
    Header(HeaderName),
    Query(String),
}

impl Template {
    /// Parses `text` (see the module docs for the placeholders).
    pub fn parse(text: &str) -> Result<Template, HeaderRuleError> {
        let bad = |reason: &str| HeaderRuleError::BadTemplate {
            template: text.to_string(),
            reason: reason.to_string(),
        };
        let mut parts = Vec::new();
        let mut literal = String::new();
        let mut chars = text.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '{' if chars.peek() == Some(&'{') => {
                    chars.next();
                    literal.push('{');
                }
                '}' if chars.peek() == Some(&'}') => {
                    chars.next();
                    literal.push('}');
                }
                '}' => return Err(bad("a lone '}' (write '}}')")),
                '{' => {
                    let name: String = chars.by_ref().take_while(|&c| c != '}').collect();
                    if !literal.is_empty() {
                        parts.push(Part::Text(std::mem::take(&mut literal)));
                    }
                    parts.push(match name.as_str() {
                        "method" => Part::Method,
                        "path" => Part::Path,
                        "client_ip" => Part::ClientIp,
                        _ => match name.split_once('.') {
                            Some(("header", header)) => Part::Header(
                                parse_name(header).map_err(|_| bad("not a header name"))?,
                            ),
                            Some(("query", param)) if !param.is_empty() => {
                                Part::Query(param.to_string())
                            }
                            _ => return Err(bad(&format!("unknown placeholder {{{name}}}"))),
                        },
                    });
                }
                c => literal.push(c),
            }
        }
        if !literal.is_empty() {
            parts.push(Part::Text(literal));
        }
        Ok(Template { parts })
    }

    /// Its text when it has no placeholders.
    fn literal(&self) -> Option<&str> {
        match self.parts.as_slice() {
            [] => Some(""),
            [Part::Text(text)] => Some(text),
            _ => None,
        }
    }

    /// Whether it reads a request header (the layer then keeps a copy of them).
    pub(crate) fn reads_headers(&self) -> bool {
        self.parts
            .iter()
            .any(|part| matches!(part, Part::Header(_)))
    }

    /// The text for `request`.
    pub fn render(&self, request: &RequestView<'_>) -> String {
        let mut out = String::new();
        for part in &self.parts {
            match part {
                Part::Text(text) => out.push_str(text),
                Part::Method => out.push_str(request.method.as_str()),
                Part::Path => out.push_str(request.uri.path()),
                Part::ClientIp => {
                    if let Some(ip) = request.client_ip {
                        out.push_str(&ip.to_string());
                    }
                }
                Part::Header(name) => {
                    let lines: Vec<&str> = request
                        .headers
                        .get_all(name)
                        .iter()
                        .filter_map(|v| v.to_str().ok())
                        .collect();
                    out.push_str(&lines.join(", "));
                }
                Part::Query(param) => {
                    let query = request.uri.query().unwrap_or("");
                    if let Some((_, value)) = form_urlencoded::parse(query.as_bytes())
                        .find(|(name, _)| name == param.as_str())
                    {
                        out.push_str(&value);
                    }
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view<'a>(method: &'a Method, uri: &'a Uri, headers: &'a HeaderMap) -> RequestView<'a> {
        RequestView {
            method,
            uri,
            headers,
            client_ip: Some(IpAddr::from([192, 0, 2, 7])),
        }
    }

    fn rule(name: &str, verb: HeaderVerb) -> HeaderRule {
        HeaderRule::new(name, verb, false).unwrap()
    }

    fn template(text: &str) -> Template {
        Template::parse(text).unwrap()
    }

    #[test]
    fn templates_read_the_request() {
        let (method, uri) = (Method::POST, Uri::from_static("/api/users?id=7&name=a%20b"));
        let mut headers = HeaderMap::new();
        headers.append("x-a", HeaderValue::from_static("1"));
        headers.append("x-a", HeaderValue::from_static("2"));
        let request = view(&method, &uri, &headers);
        let text =
            template("{method} {path} {query.name} {header.X-A} {client_ip} {{x}} {query.none}|");
        assert_eq!(
            text.render(&request),
            "POST /api/users a b 1, 2 192.0.2.7 {x} |"
        );
        assert!(Template::parse("{nope}").is_err());
        assert!(Template::parse("a}b").is_err());
        assert!(Template::parse("{header.bad name}").is_err());
    }

    #[test]
    fn each_verb_does_what_it_says() {
        let (method, uri) = (Method::GET, Uri::from_static("/"));
        let empty = HeaderMap::new();
        let request = view(&method, &uri, &empty);
        let mut headers = HeaderMap::new();
        headers.insert("x-present", HeaderValue::from_static("old"));
        rule("x-present", HeaderVerb::Add(template("new"))).apply(&mut headers, &request);
        rule("x-api-version", HeaderVerb::Add(template("v1"))).apply(&mut headers, &request);
        assert_eq!(headers["x-present"], "old", "add only if absent");
        assert_eq!(headers["x-api-version"], "v1");
        rule("x-present", HeaderVerb::Set(template("new"))).apply(&mut headers, &request);
        rule("x-present", HeaderVerb::Append(template("more"))).apply(&mut headers, &request);
        let lines: Vec<_> = headers.get_all("x-present").iter().collect();
        assert_eq!(lines, ["new", "more"]);
        rule(
            "x-present",
            HeaderVerb::Rename(parse_name("x-moved").unwrap()),
        )
        .apply(&mut headers, &request);
        assert!(!headers.contains_key("x-present"));
        assert_eq!(headers.get_all("x-moved").iter().count(), 2);
        rule("x-moved", HeaderVerb::Delete).apply(&mut headers, &request);
        assert!(!headers.contains_key("x-moved"));
    }

    #[test]
    fn protected_headers_need_an_explicit_allowance() {
        for name in ["Host", "content-length", "connection", "transfer-encoding"] {
            let error = HeaderRule::new(name, HeaderVerb::Delete, false).unwrap_err();
            assert!(matches!(error, HeaderRuleError::Protected(_)), "{name}");
            assert!(HeaderRule::new(name, HeaderVerb::Delete, true).is_ok());
        }
        let into_host = HeaderRule::new(
            "x-host",
            HeaderVerb::Rename(parse_name("host").unwrap()),
            false,
        );
        assert!(matches!(into_host, Err(HeaderRuleError::Protected(_))));
    }

    #[test]
    fn a_template_cannot_inject_a_header_line() {
        let (method, uri) = (Method::GET, Uri::from_static("/?v=a%0D%0AX-Evil:%201"));
        let empty = HeaderMap::new();
        let request = view(&method, &uri, &empty);
        let mut headers = HeaderMap::new();
        rule("x-echo", HeaderVerb::Set(template("{query.v}"))).apply(&mut headers, &request);
        assert!(headers.is_empty(), "{headers:?}");
    }
}
