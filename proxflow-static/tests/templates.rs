//! The template helpers render the URLs the layer serves.

#![cfg(any(feature = "tera", feature = "minijinja"))]

use proxflow_static::{AssetVersion, StaticLayer};

fn layer(prod: bool) -> StaticLayer {
    StaticLayer::new("/static", "public")
        .prod(prod)
        .version(AssetVersion::Query("v001".into()))
}

#[cfg(feature = "tera")]
#[test]
fn tera_filter_renders_like_kalgan() {
    let mut tera = tera::Tera::default();
    tera.add_raw_template(
        "page.html",
        r#"<script src="{{ "/vendor/jquery/dist/jquery.min.js" | asset }}"></script>"#,
    )
    .unwrap();
    layer(true).assets().register_tera(&mut tera);
    let page = tera.render("page.html", &tera::Context::new()).unwrap();
    assert_eq!(
        page,
        r#"<script src="/static/vendor/jquery/dist/jquery.min.js?v001"></script>"#
    );

    let mut dev = tera::Tera::default();
    dev.add_raw_template("page.html", r#"{{ "/app.js" | asset }}"#)
        .unwrap();
    layer(false).assets().register_tera(&mut dev);
    assert_eq!(
        dev.render("page.html", &tera::Context::new()).unwrap(),
        "/static/app.js"
    );
}

#[cfg(feature = "tera")]
#[test]
fn tera_filter_refuses_non_strings() {
    let mut tera = tera::Tera::default();
    tera.add_raw_template("page.html", "{{ 42 | asset }}")
        .unwrap();
    layer(true).assets().register_tera(&mut tera);
    assert!(tera.render("page.html", &tera::Context::new()).is_err());
}

#[cfg(feature = "minijinja")]
#[test]
fn minijinja_function_and_filter_render_the_same_url() {
    let mut env = minijinja::Environment::new();
    layer(true).assets().register_minijinja(&mut env);
    env.add_template(
        "page.html",
        r#"<link href="{{ asset("/css/site.css") }}"> {{ "/app.js" | asset }}"#,
    )
    .unwrap();
    let page = env.get_template("page.html").unwrap().render(()).unwrap();
    assert_eq!(
        page,
        r#"<link href="/static/css/site.css?v001"> /static/app.js?v001"#
    );
}
