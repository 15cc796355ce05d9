//! The reverse proxies of scenarios 2 and 5, started in front of the same upstreams:
//! proxflow's `hyper_proxy` (proxflow-lb) with each policy asked for, nginx `upstream`, HAProxy
//! and Caddy `reverse_proxy`, each from its committed template.

use proxflow_benches::vendor::process::{free_port, sibling_binary, start_printing_port};
use proxflow_benches::vendor::template::{
    self, CADDY_REVERSE_PROXY, HAPROXY_REVERSE_PROXY, NGINX_REVERSE_PROXY,
};
use proxflow_benches::vendor::{caddy, haproxy, nginx, Result};

use super::Context;
use crate::engine::Contestant;
use crate::upstream::Upstream;

/// The vendors' balancing policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VendorPolicy {
    /// Round robin: nginx's default, HAProxy `roundrobin`, Caddy `round_robin`.
    RoundRobin,
    /// Fewest requests in flight: nginx `least_conn`, HAProxy `leastconn`, Caddy `least_conn`,
    /// each vendor's best built-in answer to an upstream that slows down.
    LeastConn,
}

/// A vendor proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Vendor {
    /// nginx `upstream`.
    Nginx,
    /// HAProxy.
    HAProxy,
    /// Caddy `reverse_proxy`.
    Caddy,
}

/// Every vendor proxy.
pub const ALL: [Vendor; 3] = [Vendor::Nginx, Vendor::HAProxy, Vendor::Caddy];

/// `hyper_proxy --policy <policy>` for each of `policies`, then each of `vendors` with
/// `vendor`, all in front of `upstreams`.
pub fn start(
    ctx: &Context,
    scenario: &str,
    upstreams: &[Upstream],
    policies: &[&str],
    vendor: VendorPolicy,
    vendors: &[Vendor],
) -> Result<Vec<Contestant>> {
    let mut contestants = Vec::new();
    let hyper_proxy = sibling_binary("hyper_proxy")?;
    let urls: Vec<String> = upstreams.iter().map(Upstream::url).collect();
    for policy in policies {
        let dir = ctx.dir(scenario, &format!("hyper_proxy-{policy}"));
        std::fs::create_dir_all(&dir)?;
        // No passive ejection: the vendors get no health checks either.
        let mut args = vec![
            "--listen",
            "127.0.0.1:0",
            "--policy",
            policy,
            "--consecutive-failures",
            "0",
        ];
        args.extend(urls.iter().map(String::as_str));
        let server = start_printing_port("hyper_proxy", &hyper_proxy, &args, &dir)?;
        contestants.push(Contestant::new(format!("proxflow {policy}"), true, server));
    }

    let (nginx_policy, haproxy_balance, caddy_policy) = match vendor {
        VendorPolicy::RoundRobin => ("", "roundrobin", "round_robin"),
        VendorPolicy::LeastConn => ("least_conn;", "leastconn", "least_conn"),
    };
    let suffix = |name: &str| match vendor {
        VendorPolicy::RoundRobin => name.to_string(),
        VendorPolicy::LeastConn => format!("{name} {}", policy_name(name)),
    };

    if vendors.contains(&Vendor::Nginx) {
        let port = free_port()?;
        let servers: Vec<String> = upstreams
            .iter()
            .map(|u| format!("        server {} max_fails=0;", u.addr()))
            .collect();
        let http = template::render(
            NGINX_REVERSE_PROXY,
            &[
                ("policy", nginx_policy),
                ("servers", &servers.join("\n")),
                ("port", &port.to_string()),
            ],
        )?;
        let server = nginx::start(&ctx.dir(scenario, "nginx"), &http, &[port])?;
        contestants.push(Contestant::new(suffix("nginx"), false, server));
    }
    if vendors.contains(&Vendor::HAProxy) {
        let port = free_port()?;
        let servers: Vec<String> = upstreams
            .iter()
            .enumerate()
            .map(|(i, u)| format!("    server u{i} {}", u.addr()))
            .collect();
        let config = template::render(
            HAPROXY_REVERSE_PROXY,
            &[
                ("balance", haproxy_balance),
                ("servers", &servers.join("\n")),
                ("port", &port.to_string()),
            ],
        )?;
        let server = haproxy::start(&ctx.dir(scenario, "haproxy"), &config, port)?;
        contestants.push(Contestant::new(suffix("HAProxy"), false, server));
    }
    if vendors.contains(&Vendor::Caddy) {
        let port = free_port()?;
        let addrs: Vec<String> = upstreams.iter().map(Upstream::addr).collect();
        let config = template::render(
            CADDY_REVERSE_PROXY,
            &[
                ("policy", caddy_policy),
                ("upstreams", &addrs.join(" ")),
                ("port", &port.to_string()),
            ],
        )?;
        let server = caddy::start(&ctx.dir(scenario, "caddy"), &config, port)?;
        contestants.push(Contestant::new(suffix("Caddy"), false, server));
    }
    Ok(contestants)
}

/// Each vendor's name for its least-connections policy.
fn policy_name(vendor: &str) -> &'static str {
    match vendor {
        "HAProxy" => "leastconn",
        _ => "least_conn",
    }
}

/// The versions of the vendors, for the set-up line.
pub fn versions() -> String {
    format!(
        "{}, {}, {}",
        nginx::version(),
        haproxy::version(),
        caddy::version()
    )
}
