//! A static file server for development and production, with Caflax's flags:
//!
//! ```text
//! static_server -p 3000 -H 0.0.0.0 -d ./public --spa --cors --compress
//! static_server --prod --not-found 404.html ./dist
//! ```

use std::future::Future;
use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use axum::extract::ConnectInfo;
use axum::Router;
use clap::Parser;
use http::{header, HeaderValue, Method, Request, Response};
use http_body::Body;
use proxflow_examples::{runtime, serve};
use proxflow_static::{StaticConfig, StaticLayer};
use tower::Service;
use tower_http::cors::{Any, CorsLayer};
use tower_http::set_header::SetResponseHeaderLayer;

/// Serves the files of a folder over HTTP, as Caflax does.
///
/// Serves the files of a folder (`-d`, or the first argument; default: the current folder)
/// over HTTP/1.1 on 127.0.0.1:3000 until Ctrl-C or SIGTERM. It answers GET and HEAD with
/// ETags, ranges and precompressed `.br`/`.zst`/`.gz` siblings; `index.html` stands for its
/// folder. Dotfiles and symlinks out of the folder are never served.
///
/// Development mode (the default) reads each file from disk and sends
/// `Cache-Control: no-cache`; with `--compress` it compresses text files on each request. Production mode (`--prod`) keeps files in memory, compressed
/// once, and marks versioned URLs immutable.
///
/// Each request is logged on stderr (client address, method, path, status, body bytes, time
/// to the response head) unless `--quiet`; `RUST_LOG` sets the level.
#[derive(Debug, Parser)]
#[command(
    version,
    after_help = "Examples:\n  static_server -p 3000 -H 0.0.0.0 -d ./public --spa --cors\n  \
                  static_server --prod --not-found 404.html ./dist"
)]
struct Args {
    /// Port to listen on (0: any free port).
    #[arg(short = 'p', long, default_value_t = 3000)]
    port: u16,
    /// Address to listen on (0.0.0.0: every interface).
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
    /// Compress text files up to 1 MiB on each request (brotli, zstd, gzip), each coding with
    /// its own ETag; in --prod the files are compressed once and kept in memory anyway.
    #[arg(long)]
    compress: bool,
    /// List folders that have no index.html.
    #[arg(long)]
    list: bool,
    /// Page sent with status 404 for paths that name no file, relative to the folder
    /// (default: the text `not found`).
    #[arg(long, value_name = "FILE")]
    not_found: Option<PathBuf>,
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
    let filter = if args.quiet { "warn" } else { "info" };
    // Colours only for a person: a file or a pipe gets plain lines.
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
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
    if let Some(page) = &args.not_found {
        if let Err(reason) = check_not_found_page(&folder, page) {
            eprintln!("static_server: --not-found: {reason}");
            std::process::exit(2);
        }
    }
    runtime(args.threads)?.block_on(run(args, folder))
}

async fn run(args: Args, folder: PathBuf) -> std::io::Result<()> {
    let mut files = StaticLayer::new("/", &folder)
        .prod(args.prod)
        .spa(args.spa)
        .listing(args.list)
        .compress_in_development(args.compress);
    if let Some(page) = args.not_found {
        files = files.not_found_page(page);
    }
    let files = files.into_service();
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

    if !(args.cors || args.no_cache) {
        // Nothing to add: the file service answers hyper directly.
        return if args.quiet {
            serve(listener, files).await
        } else {
            serve(listener, AccessLog(files)).await
        };
    }
    // Router::layer turns each layer's body into axum's, so optional layers compose.
    let mut app = Router::new().fallback_service(files);
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
    if args.quiet {
        serve(listener, app).await
    } else {
        serve(listener, AccessLog(app)).await
    }
}

/// Refuses a 404 page the layer would panic on (one outside the folder) or could not find,
/// so that a typo ends the program with a message instead of a 404 page that never shows.
fn check_not_found_page(folder: &Path, page: &Path) -> Result<(), String> {
    let config = StaticConfig {
        folders: vec![folder.to_path_buf()],
        not_found_page: Some(page.to_path_buf()),
        ..StaticConfig::default()
    };
    config.validate().map_err(|error| error.to_string())?;
    let file = folder.join(page);
    if !file.is_file() {
        return Err(format!("{} is not a file", file.display()));
    }
    Ok(())
}

/// Logs one line per request once the response head is ready:
/// `CLIENT "METHOD PATH VERSION" STATUS BYTES TIME`, where BYTES is the body length (`-` when
/// it is not known in advance, as for a compressed or chunked body).
#[derive(Clone)]
struct AccessLog<S>(S);

impl<S, B, ResBody> Service<Request<B>> for AccessLog<S>
where
    S: Service<Request<B>, Response = Response<ResBody>>,
    S::Future: Send + 'static,
    ResBody: Body,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let start = Instant::now();
        let client = request
            .extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .map_or_else(|| "-".to_string(), |ConnectInfo(peer)| peer.to_string());
        let line = format!(
            "{client} \"{} {} {:?}\"",
            request.method(),
            request.uri(),
            request.version()
        );
        let response = self.0.call(request);
        Box::pin(async move {
            let response = response.await?;
            let bytes = response
                .body()
                .size_hint()
                .exact()
                .map_or_else(|| "-".to_string(), |bytes| bytes.to_string());
            let status = response.status().as_u16();
            let millis = start.elapsed().as_secs_f64() * 1000.0;
            tracing::info!(target: "access", "{line} {status} {bytes} {millis:.3}ms");
            Ok(response)
        })
    }
}
