//! A static file server for development and production, with Caflax's flags:
//!
//! ```text
//! static_server -p 3000 -H 0.0.0.0 -d ./public --spa --cors --compress
//! static_server --prod ./dist
//! ```

use std::net::SocketAddr;
use std::path::PathBuf;

use axum::Router;
use clap::Parser;
use http::{header, HeaderValue, Method};
use proxflow_examples::{runtime, serve};
use proxflow_static::StaticLayer;
use tower_http::compression::CompressionLayer;
use tower_http::cors::{Any, CorsLayer};
use tower_http::set_header::SetResponseHeaderLayer;
use tower_http::trace::TraceLayer;

/// Serves a folder over HTTP.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// Port to listen on.
    #[arg(short = 'p', long, default_value_t = 3000)]
    port: u16,
    /// Address to listen on.
    #[arg(short = 'H', long, default_value = "127.0.0.1")]
    host: String,
    /// Folder to serve (also accepted as the first positional argument).
    #[arg(short = 'd', long = "dir")]
    dir: Option<PathBuf>,
    /// Folder to serve.
    #[arg(conflicts_with = "dir")]
    folder: Option<PathBuf>,
    /// Single-page app: extensionless paths that name no file get index.html.
    #[arg(long)]
    spa: bool,
    /// Allow cross-origin GET and HEAD from any origin.
    #[arg(long)]
    cors: bool,
    /// Tell clients never to cache (`Cache-Control: no-store`).
    #[arg(long)]
    no_cache: bool,
    /// Compress responses on the fly (gzip, brotli); in --prod the files are compressed once
    /// and kept in memory anyway.
    #[arg(long)]
    compress: bool,
    /// List folders that have no index.html.
    #[arg(long)]
    list: bool,
    /// Production mode: memory cache, immutable caching of versioned URLs.
    #[arg(long)]
    prod: bool,
    /// Log nothing per request.
    #[arg(short, long)]
    quiet: bool,
    /// Worker threads (default: the cores this process may run on).
    #[arg(long)]
    threads: Option<usize>,
}

fn main() -> std::io::Result<()> {
    let args = Args::parse();
    let filter = if args.quiet {
        "warn"
    } else {
        "info,tower_http=debug"
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| filter.into()),
        )
        .init();
    let folder = args
        .dir
        .clone()
        .or(args.folder.clone())
        .unwrap_or_else(|| PathBuf::from("."));
    if !folder.is_dir() {
        eprintln!("static_server: {} is not a folder", folder.display());
        std::process::exit(2);
    }
    runtime(args.threads)?.block_on(run(args, folder))
}

async fn run(args: Args, folder: PathBuf) -> std::io::Result<()> {
    let files = StaticLayer::new("/", &folder)
        .prod(args.prod)
        .spa(args.spa)
        .listing(args.list)
        .into_service();
    let address: SocketAddr = format!("{}:{}", args.host, args.port)
        .parse()
        .map_err(|e| {
            std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("bad -H/-p: {e}"))
        })?;
    let listener = tokio::net::TcpListener::bind(address).await?;
    let local = listener.local_addr()?;
    let mode = if args.prod {
        "production"
    } else {
        "development"
    };
    println!("listening on http://{local}");
    eprintln!("serving {} in {mode} mode", folder.display());

    let plain = !(args.cors || args.no_cache || args.compress || !args.quiet);
    if plain {
        // Nothing to add: the file service answers hyper directly.
        return serve(listener, files).await;
    }
    // Router::layer turns each layer's body into axum's, so optional layers compose.
    let mut app = Router::new().fallback_service(files);
    if args.compress && !args.prod {
        app = app.layer(CompressionLayer::new());
    }
    if args.no_cache {
        let no_store = HeaderValue::from_static("no-store");
        app = app.layer(SetResponseHeaderLayer::overriding(
            header::CACHE_CONTROL,
            no_store,
        ));
    }
    if args.cors {
        let methods = [Method::GET, Method::HEAD, Method::OPTIONS];
        app = app.layer(CorsLayer::new().allow_origin(Any).allow_methods(methods));
    }
    if !args.quiet {
        app = app.layer(TraceLayer::new_for_http());
    }
    serve(listener, app).await
}
