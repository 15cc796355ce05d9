//! The vendors' configurations, as committed in `benches/vendor_configs/` (one comment line per
//! choice, so that anyone can check that the comparison is fair), filled in at run time.
//!
//! A template names what the run decides (ports, paths, the upstreams) as `{{name}}`; every
//! other character is written as committed.

use super::Result;

/// nginx's frame: the settings every nginx comparison shares; `{{http}}` is the scenario's part.
pub const NGINX_MAIN: &str = include_str!("../../vendor_configs/nginx/main.conf");
/// nginx `upstream` over three upstreams (`{{policy}}`, `{{servers}}`, `{{port}}`).
pub const NGINX_REVERSE_PROXY: &str = include_str!("../../vendor_configs/nginx/reverse_proxy.conf");
/// HAProxy over three upstreams (`{{balance}}`, `{{servers}}`, `{{port}}`).
pub const HAPROXY_REVERSE_PROXY: &str =
    include_str!("../../vendor_configs/haproxy/reverse_proxy.cfg");
/// nginx `proxy_cache` in front of one origin (`{{dir}}`, `{{origin}}`, `{{port}}`).
pub const NGINX_CACHE: &str = include_str!("../../vendor_configs/nginx/cache.conf");
/// Varnish's VCL in front of one origin (`{{origin}}`).
pub const VARNISH_CACHE: &str = include_str!("../../vendor_configs/varnish/cache.vcl");
/// nginx serving a directory (`{{port}}`, `{{docroot}}`).
pub const NGINX_STATIC: &str = include_str!("../../vendor_configs/nginx/static.conf");
/// Caddy `file_server` on a directory (`{{port}}`, `{{docroot}}`).
pub const CADDY_STATIC: &str = include_str!("../../vendor_configs/caddy/static.Caddyfile");
/// nginx with the gateway's features: rate limit, cache, passive health, balancing
/// (`{{dir}}`, `{{servers}}`, `{{port}}`).
pub const NGINX_GATEWAY: &str = include_str!("../../vendor_configs/nginx/gateway.conf");
/// proxflow's gateway configuration (`{{site}}`, `{{upstreams}}`).
pub const PROXFLOW_GATEWAY: &str = include_str!("../../vendor_configs/proxflow/gateway.yaml");
/// Caddy `reverse_proxy` over three upstreams (`{{policy}}`, `{{upstreams}}`, `{{port}}`).
pub const CADDY_REVERSE_PROXY: &str =
    include_str!("../../vendor_configs/caddy/reverse_proxy.Caddyfile");

/// `template` with each `{{name}}` of `values` replaced. Fails if the template names a value
/// not given, or a value given is not in the template: either is a mistake in the program.
pub fn render(template: &str, values: &[(&str, &str)]) -> Result<String> {
    let mut out = template.to_string();
    for (name, value) in values {
        let placeholder = format!("{{{{{name}}}}}");
        if !out.contains(&placeholder) {
            return Err(format!("template has no {placeholder}").into());
        }
        out = out.replace(&placeholder, value);
    }
    if let Some(start) = out.find("{{") {
        let rest = &out[start..];
        let end = rest.find("}}").map_or(rest.len(), |i| i + 2);
        return Err(format!("template value not given: {}", &rest[..end]).into());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_filled_and_checked() {
        assert_eq!(
            render(
                "listen {{port}}; root {{dir}}/{{port}};",
                &[("port", "80"), ("dir", "/x")]
            )
            .unwrap(),
            "listen 80; root /x/80;"
        );
        assert!(render("listen {{port}};", &[]).is_err());
        assert!(render("listen 80;", &[("port", "80")]).is_err());
    }

    #[test]
    fn committed_templates_name_only_what_the_programs_fill() {
        let cases: [(&str, &[&str]); 10] = [
            (NGINX_GATEWAY, &["dir", "servers", "port"]),
            (PROXFLOW_GATEWAY, &["site", "upstreams"]),
            (NGINX_STATIC, &["port", "docroot"]),
            (CADDY_STATIC, &["port", "docroot"]),
            (NGINX_CACHE, &["dir", "origin", "port"]),
            (VARNISH_CACHE, &["origin"]),
            (NGINX_MAIN, &["dir", "error_log", "http"]),
            (NGINX_REVERSE_PROXY, &["policy", "servers", "port"]),
            (HAPROXY_REVERSE_PROXY, &["balance", "servers", "port"]),
            (CADDY_REVERSE_PROXY, &["policy", "upstreams", "port"]),
        ];
        for (template, names) in cases {
            let values: Vec<(&str, &str)> = names.iter().map(|n| (*n, "x")).collect();
            render(template, &values).unwrap();
        }
    }
}
