//! The gateway on its embedded defaults: the example site, `/api` rate limited, behind a
//! circuit breaker and balanced over three demo upstreams started in process, and a dashboard
//! (see `proxflow_examples::gateway`).
//!
//! ```text
//! cargo run --release -p proxflow-examples --bin gateway
//! ```

use clap::Parser;
use proxflow_examples::gateway::{self, Settings};
use proxflow_examples::{runtime, serve};

/// Runs the proxflow gateway on its embedded defaults.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// Address to listen on.
    #[arg(short = 'H', long, default_value = "127.0.0.1")]
    host: String,
    /// Port to listen on.
    #[arg(short = 'p', long, default_value_t = 3000)]
    port: u16,
}

fn main() -> std::io::Result<()> {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    runtime(None)?.block_on(run(args))
}

async fn run(args: Args) -> std::io::Result<()> {
    let settings = Settings::default();
    let gateway = gateway::start(&settings)
        .await
        .map_err(std::io::Error::other)?;
    let listener = tokio::net::TcpListener::bind((args.host.as_str(), args.port)).await?;
    let local = listener.local_addr()?;
    println!("listening on http://{local}");
    println!("  site       http://{local}/");
    println!("  api        http://{local}/api/hello");
    println!("  dashboard  http://{local}/dashboard");
    for (demo, addr) in settings.upstreams.iter().zip(&gateway.upstreams) {
        println!("  upstream   {} at http://{addr}", demo.name);
    }
    serve(listener, gateway.router).await
}
