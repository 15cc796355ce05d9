//! The example site: a Tera page whose asset URLs come from the `asset` filter, and the
//! files under `/static`, as a Kalgan application is laid out.

use std::path::Path;
use std::sync::Arc;

use axum::extract::State;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use http::StatusCode;
use proxflow_static::{AssetVersion, StaticLayer};

/// The version Kalgan's `static.version` would hold.
pub const VERSION: &str = "v001";

/// The site under `root` (holding `templates/` and `public/`): `/` renders the template,
/// `/static/...` serves `public/`.
pub fn router(root: &Path, prod: bool) -> Result<Router, tera::Error> {
    let statics = StaticLayer::new("/static", root.join("public"))
        .prod(prod)
        .version(AssetVersion::Query(VERSION.into()));
    Ok(pages(&root.join("templates"), &statics)?.layer(statics))
}

/// The site's pages from the templates in `templates`, their asset URLs from `statics`
/// (which serves the files when it wraps the application: after every `merge`, since a merge
/// keeps the routes of a router, not the layers around its fallback).
pub fn pages(templates: &Path, statics: &StaticLayer) -> Result<Router, tera::Error> {
    let mut tera = tera::Tera::new(&templates.join("**/*.html").to_string_lossy())?;
    statics.assets().register_tera(&mut tera);
    Ok(Router::new()
        .route("/", get(home))
        .with_state(Arc::new(tera)))
}

async fn home(State(tera): State<Arc<tera::Tera>>) -> Response {
    let mut context = tera::Context::new();
    context.insert("title", "proxflow-static asset versioning");
    match tera.render("index.html", &context) {
        Ok(page) => Html(page).into_response(),
        Err(error) => {
            tracing::error!(%error, "template failed");
            (StatusCode::INTERNAL_SERVER_ERROR, "template error\n").into_response()
        }
    }
}
