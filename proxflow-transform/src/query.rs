//! The query verbs: the header verbs' semantics on a request's query parameters, values as
//! templates. The query is read and written as `application/x-www-form-urlencoded` (what
//! browsers send and `url` parses); a request without rules keeps its query byte for byte.

use http::uri::{PathAndQuery, Uri};

use crate::headers::{RequestView, Template};

/// What a query rule does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QueryVerb {
    /// Sets the parameter only if it is absent.
    Add(Template),
    /// Replaces every value of the parameter, or adds it.
    Set(Template),
    /// Adds another value.
    Append(Template),
    /// Removes every value.
    Delete,
    /// Moves every value to another name (replacing what that name had).
    Rename(String),
}

/// One query rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueryRule {
    /// The parameter.
    pub name: String,
    /// What to do with it.
    pub verb: QueryVerb,
}

impl QueryRule {
    /// Its template, for the verbs that have one.
    pub(crate) fn template(&self) -> Option<&Template> {
        match &self.verb {
            QueryVerb::Add(template) | QueryVerb::Set(template) | QueryVerb::Append(template) => {
                Some(template)
            }
            QueryVerb::Delete | QueryVerb::Rename(_) => None,
        }
    }
}

/// Applies `rules` in order to the query of `uri`, rendering templates over `request`.
pub fn apply<'a>(
    uri: &Uri,
    rules: impl IntoIterator<Item = &'a QueryRule>,
    request: &RequestView<'_>,
) -> Uri {
    let mut rules = rules.into_iter().peekable();
    if rules.peek().is_none() {
        return uri.clone();
    }
    let mut pairs: Vec<(String, String)> =
        form_urlencoded::parse(uri.query().unwrap_or("").as_bytes())
            .into_owned()
            .collect();
    for rule in rules {
        let present = pairs.iter().any(|(name, _)| *name == rule.name);
        match &rule.verb {
            QueryVerb::Add(template) => {
                if !present {
                    pairs.push((rule.name.clone(), template.render(request)));
                }
            }
            QueryVerb::Set(template) => {
                pairs.retain(|(name, _)| *name != rule.name);
                pairs.push((rule.name.clone(), template.render(request)));
            }
            QueryVerb::Append(template) => {
                pairs.push((rule.name.clone(), template.render(request)))
            }
            QueryVerb::Delete => pairs.retain(|(name, _)| *name != rule.name),
            QueryVerb::Rename(to) => {
                if present && *to != rule.name {
                    pairs.retain(|(name, _)| name != to);
                    for (name, _) in pairs.iter_mut().filter(|(name, _)| *name == rule.name) {
                        name.clone_from(to);
                    }
                }
            }
        }
    }
    let query = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(&pairs)
        .finish();
    let path_and_query = if query.is_empty() {
        uri.path().to_string()
    } else {
        format!("{}?{query}", uri.path())
    };
    let mut parts = uri.clone().into_parts();
    parts.path_and_query = PathAndQuery::try_from(path_and_query).ok();
    Uri::from_parts(parts).unwrap_or_else(|_| uri.clone())
}

#[cfg(test)]
mod tests {
    use http::{HeaderMap, Method};

    use super::*;

    fn rule(name: &str, verb: QueryVerb) -> QueryRule {
        QueryRule {
            name: name.into(),
            verb,
        }
    }

    fn template(text: &str) -> Template {
        Template::parse(text).unwrap()
    }

    #[test]
    fn each_verb_on_the_query() {
        let uri = Uri::from_static("/search?q=a+b&page=2&old=x&old=y");
        let headers = HeaderMap::new();
        let request = RequestView {
            method: &Method::GET,
            uri: &uri,
            headers: &headers,
            client_ip: None,
        };
        let rules = [
            rule("page", QueryVerb::Add(template("1"))),
            rule("lang", QueryVerb::Add(template("en"))),
            rule("q", QueryVerb::Set(template("{query.q} c"))),
            rule("tag", QueryVerb::Append(template("t&1"))),
            rule("old", QueryVerb::Rename("new".into())),
            rule("page", QueryVerb::Delete),
        ];
        let out = apply(&uri, &rules, &request);
        assert_eq!(out.path(), "/search");
        assert_eq!(out.query(), Some("new=x&new=y&lang=en&q=a+b+c&tag=t%261"));
        let untouched = apply(&uri, &[], &request);
        assert_eq!(untouched, uri, "no rules: the query byte for byte");
        let emptied = apply(
            &Uri::from_static("/p?a=1"),
            &[rule("a", QueryVerb::Delete)],
            &request,
        );
        assert_eq!(emptied.to_string(), "/p");
    }
}
