//! The gateway: every proxflow layer from one configuration file, with demo upstreams and a
//! live dashboard (see `proxflow_examples::gateway`).
//!
//! ```text
//! cargo run --release -p proxflow-examples --bin gateway                     # embedded default
//! cargo run --release -p proxflow-examples --bin gateway -- --config gateway.yaml
//! cargo run --release -p proxflow-examples --bin gateway -- --print-default-config
//! ```

use std::io::IsTerminal;
use std::path::PathBuf;

use clap::Parser;
use proxflow_examples::gateway::config::{default_yaml_for_a_file, Loaded, LogFormat};
use proxflow_examples::gateway::{self};
use proxflow_examples::{runtime, serve};

// Every request through the stack allocates and frees a few dozen small blocks (header maps,
// boxed futures, the cache key, the forwarded fields); mimalloc's thread-local free lists
// serve them with fewer instructions than glibc's malloc, which also merges its fast bins
// again and again on this path (`malloc_consolidate`).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Runs the proxflow gateway: the example site, `/api` through the transform, cache, rate
/// limit, balancer and per-upstream breakers to demo upstreams, and a live dashboard.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// The configuration (YAML, or TOML for a `.toml` file). Default: the embedded one.
    #[arg(short, long)]
    config: Option<PathBuf>,
    /// Writes the embedded configuration to stdout and exits.
    #[arg(long)]
    print_default_config: bool,
    /// Address to listen on (overrides `listen`).
    #[arg(short = 'H', long)]
    host: Option<String>,
    /// Port to listen on (overrides `listen`).
    #[arg(short = 'p', long)]
    port: Option<u16>,
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    if args.print_default_config {
        print!("{}", default_yaml_for_a_file());
        return std::process::ExitCode::SUCCESS;
    }
    let loaded = match &args.config {
        Some(path) => Loaded::from_file(path),
        None => Ok(Loaded::embedded()),
    };
    let loaded = match loaded {
        Ok(loaded) => loaded,
        Err(error) => {
            eprintln!("gateway: {error}");
            return std::process::ExitCode::from(2);
        }
    };
    init_logging(&loaded);
    let result = runtime(None).and_then(|runtime| runtime.block_on(run(args, loaded)));
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("gateway: {error}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Plain lines, coloured only on a terminal, or JSON lines; `RUST_LOG` filters them.
fn init_logging(loaded: &Loaded) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        let access = if loaded.config.access_log.enabled {
            "info"
        } else {
            "off"
        };
        format!("info,access={access}").into()
    });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stdout().is_terminal());
    match loaded.config.access_log.format {
        LogFormat::Plain => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

async fn run(args: Args, loaded: Loaded) -> std::io::Result<()> {
    let gateway = gateway::start(&loaded)
        .await
        .map_err(std::io::Error::other)?;
    let listen = &loaded.config.listen;
    let (host, port) = listen
        .rsplit_once(':')
        .ok_or_else(|| std::io::Error::other(format!("listen: {listen:?} is not host:port")))?;
    let host = args
        .host
        .as_deref()
        .unwrap_or(host.trim_matches(['[', ']']));
    let port = match args.port {
        Some(port) => port,
        None => port
            .parse()
            .map_err(|_| std::io::Error::other(format!("listen: {listen:?}: not a port")))?,
    };
    let listener = tokio::net::TcpListener::bind((host, port)).await?;
    let local = listener.local_addr()?;
    let dashboard = &loaded.config.traffic_dashboard.path;
    println!("listening on http://{local}");
    println!("  site       http://{local}/");
    println!("  api        http://{local}/api/hello");
    println!("  dashboard  http://{local}{dashboard}");
    println!("  admin      http://{local}/admin/upstreams");
    for upstream in &gateway.upstreams {
        println!("  upstream   {} at http://{}", upstream.name, upstream.addr);
    }
    serve(listener, gateway.router).await?;
    tracing::info!("stopped: every request in flight was answered");
    Ok(())
}
