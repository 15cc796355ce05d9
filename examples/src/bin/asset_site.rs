//! The example site: a Tera template using Kalgan's `asset` filter over proxflow-static.
//!
//! ```text
//! cargo run -p proxflow-examples --bin asset_site -- --prod
//! ```

use std::path::PathBuf;

use clap::Parser;
use proxflow_examples::{runtime, serve, site};

/// Serves the example site.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// Port to listen on.
    #[arg(short = 'p', long, default_value_t = 3000)]
    port: u16,
    /// Production mode: versioned asset URLs, memory cache.
    #[arg(long)]
    prod: bool,
}

fn main() -> std::io::Result<()> {
    let args = Args::parse();
    tracing_subscriber::fmt().with_env_filter("info").init();
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("site");
    runtime(None)?.block_on(async move {
        let app = site::router(&root, args.prod).map_err(std::io::Error::other)?;
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", args.port)).await?;
        println!("listening on http://{}", listener.local_addr()?);
        serve(listener, app).await
    })
}
