//! Writes the content-hash manifest of one or more folders, for a build step:
//!
//! ```text
//! asset_manifest public -o public-manifest.json
//! ```
//!
//! Load it at start with `StaticConfig { manifest: Some(path), content_hash: true, .. }` or
//! `StaticLayer::manifest(AssetManifest::load(path)?)`, so that production renders versioned
//! URLs without hashing any file.

use std::path::PathBuf;

use clap::Parser;
use proxflow_static::AssetManifest;

/// Writes logical path -> content-hashed path for every file in the folders.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// Folders to hash; earlier folders win, as when serving.
    #[arg(required = true)]
    folders: Vec<PathBuf>,
    /// Where to write the JSON (default: standard output).
    #[arg(short, long)]
    output: Option<PathBuf>,
}

fn main() -> std::io::Result<()> {
    let args = Args::parse();
    let manifest = AssetManifest::build(&args.folders)?;
    match &args.output {
        Some(path) => {
            manifest.write(path)?;
            eprintln!("wrote {} entries to {}", manifest.len(), path.display());
        }
        None => println!("{}", manifest.to_json()),
    }
    Ok(())
}
