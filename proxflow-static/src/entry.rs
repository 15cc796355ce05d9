//! A file ready to be served: its representations (identity and compressed), validators and
//! headers, computed once per load so that answering a request only copies prepared values.

use std::fs::{self, File, Metadata};
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue};
use xxhash_rust::xxh3::{xxh3_64, Xxh3};

use crate::body::{Chunk, FileBody};
use crate::conditional::unix_seconds;
use crate::confine;
use crate::encoding::Encoding;
use crate::fingerprint::Fingerprint;

/// Where a representation's bytes are.
pub(crate) enum Source {
    Memory(Bytes),
    Disk {
        path: PathBuf,
        /// The folder the file is opened beneath, unless symlinks may leave it.
        root: Option<Arc<Path>>,
        fingerprint: Fingerprint,
    },
}

/// The file a representation was read from, as it was then, to tell at revalidation whether
/// it changed.
#[derive(Clone, Copy)]
struct Origin {
    fingerprint: Fingerprint,
    /// The hash of the bytes held in memory; `None` for a streamed file.
    hash: Option<u64>,
}

/// One encoding of a file.
pub(crate) struct Representation {
    pub(crate) encoding: Encoding,
    pub(crate) len: u64,
    pub(crate) etag: HeaderValue,
    source: Source,
    /// `None` for a representation compressed in memory, which has no file of its own.
    origin: Option<Origin>,
    /// The headers of a 200 for an unversioned and a versioned URL, built on first use.
    pub(crate) ok_headers: [OnceLock<HeaderMap>; 2],
}

impl Representation {
    /// The body chunk for `range` of this representation.
    pub(crate) fn chunk(&self, range: std::ops::Range<u64>) -> Chunk {
        match &self.source {
            Source::Memory(bytes) => {
                Chunk::Memory(bytes.slice(range.start as usize..range.end as usize))
            }
            Source::Disk {
                path,
                root,
                fingerprint,
            } => Chunk::File {
                path: path.clone(),
                root: root.clone(),
                range,
                expected: *fingerprint,
            },
        }
    }

    /// The whole representation as a body.
    pub(crate) fn whole(&self) -> FileBody {
        match &self.source {
            Source::Memory(bytes) => FileBody::full(bytes.clone()),
            Source::Disk { .. } => FileBody::chunks(vec![self.chunk(0..self.len)]),
        }
    }

    /// Whether the file at `path`, whose metadata is `metadata`, is still the one this
    /// representation was read from: same size, modification time and inode, and with
    /// `by_content` the same bytes. Blocking.
    fn unchanged(&self, path: &Path, metadata: &Metadata, by_content: bool) -> io::Result<bool> {
        let Some(origin) = self.origin else {
            return Ok(true);
        };
        if Fingerprint::of(metadata) != origin.fingerprint {
            return Ok(false);
        }
        match origin.hash {
            Some(hash) if by_content => Ok(hash_file(path)? == hash),
            _ => Ok(true),
        }
    }

    /// The ETag without quotes, for building the tags of derived representations.
    fn opaque_tag(&self) -> &str {
        let text = self.etag.to_str().unwrap_or("\"\"");
        text.trim_matches('"')
    }
}

/// How a file is loaded.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LoadOptions {
    /// Keep files up to this many bytes in memory; `None` streams every file (development).
    pub(crate) memory_limit: Option<u64>,
    /// Only compressible files go into memory (development, to compress them per request).
    pub(crate) memory_only_if_compressible: bool,
    /// Look for `.br`, `.zst` and `.gz` siblings.
    pub(crate) precompressed: bool,
    /// Compress compressible in-memory files on first demand when no sibling exists.
    pub(crate) compress: bool,
    /// Hash streamed files too (content-hash versioning needs every file's hash).
    pub(crate) hash_streamed: bool,
}

/// Smaller files gain nothing from compression once headers are counted.
const MIN_COMPRESS_LEN: u64 = 256;

/// A file and everything needed to answer requests for it.
pub(crate) struct Entry {
    pub(crate) path: PathBuf,
    pub(crate) content_type: HeaderValue,
    pub(crate) last_modified: Option<HeaderValue>,
    pub(crate) modified_secs: Option<u64>,
    /// The content hash of the identity representation, when it was read.
    pub(crate) hash: Option<u64>,
    identity: Representation,
    siblings: [Option<Representation>; 3],
    /// Siblings were looked for, so revalidation looks for them again.
    has_sibling_files: bool,
    generated: [OnceLock<Option<Representation>>; 3],
    can_generate: bool,
    /// When the metadata was last checked, in milliseconds of the memory cache's clock.
    pub(crate) verified_at_ms: AtomicU64,
    /// When a request last took on checking the metadata (see `MemoryCache::claim_revalidation`).
    pub(crate) revalidation_claimed_ms: AtomicU64,
}

/// Which representation a negotiation picked.
pub(crate) enum Selected<'a> {
    Ready(&'a Representation),
    /// The coding may be generated but has not been yet.
    NeedsCompression(Encoding),
}

impl Entry {
    /// Reads the regular file `path` as the options say, opening it and its siblings only
    /// beneath `root` when one is given. Blocking.
    pub(crate) fn load_beneath(
        root: Option<&Path>,
        path: &Path,
        options: LoadOptions,
        now_ms: u64,
    ) -> io::Result<Entry> {
        let mime = mime_guess::from_path(path).first_or_octet_stream();
        let compressible = is_compressible(&mime);
        let options = if options.memory_only_if_compressible && !compressible {
            LoadOptions {
                memory_limit: None,
                ..options
            }
        } else {
            options
        };
        let (identity, metadata, hash) =
            load_representation(root, path, Encoding::Identity, options)?;
        let has_sibling_files = options.precompressed && compressible;
        let siblings = if has_sibling_files {
            Encoding::COMPRESSED
                .map(|encoding| load_sibling(root, path, encoding, &identity, options))
        } else {
            [None, None, None]
        };
        let modified = metadata.modified().ok();
        Ok(Entry {
            path: path.to_path_buf(),
            content_type: content_type(&mime),
            last_modified: modified
                .and_then(|time| HeaderValue::from_str(&httpdate::fmt_http_date(time)).ok()),
            modified_secs: modified.map(unix_seconds),
            hash,
            can_generate: options.compress
                && compressible
                && identity.len >= MIN_COMPRESS_LEN
                && matches!(identity.source, Source::Memory(_)),
            identity,
            siblings,
            has_sibling_files,
            generated: Default::default(),
            verified_at_ms: AtomicU64::new(now_ms),
            revalidation_claimed_ms: AtomicU64::new(0),
        })
    }

    /// Reads `path` with no folder to stay beneath. Blocking.
    #[cfg(test)]
    pub(crate) fn load(path: &Path, options: LoadOptions, now_ms: u64) -> io::Result<Entry> {
        Entry::load_beneath(None, path, options, now_ms)
    }

    /// Whether the answer depends on `Accept-Encoding` (then `Vary` is sent).
    pub(crate) fn negotiable(&self) -> bool {
        self.can_generate || self.siblings.iter().any(Option::is_some)
    }

    /// Whether a request may be answered in `encoding`, possibly after compressing.
    pub(crate) fn offers(&self, encoding: Encoding) -> bool {
        if encoding == Encoding::Identity {
            return true;
        }
        let i = encoding.index();
        self.siblings[i].is_some()
            || match self.generated[i].get() {
                Some(generated) => generated.is_some(),
                None => self.can_generate,
            }
    }

    pub(crate) fn select(&self, encoding: Encoding) -> Selected<'_> {
        if encoding == Encoding::Identity {
            return Selected::Ready(&self.identity);
        }
        let i = encoding.index();
        if let Some(sibling) = &self.siblings[i] {
            return Selected::Ready(sibling);
        }
        match self.generated[i].get() {
            Some(Some(generated)) => Selected::Ready(generated),
            Some(None) => Selected::Ready(&self.identity),
            None if self.can_generate => Selected::NeedsCompression(encoding),
            None => Selected::Ready(&self.identity),
        }
    }

    /// Compresses the identity bytes into `encoding` once; concurrent callers wait for the first.
    /// Returns true when this call did the work. Blocking.
    pub(crate) fn generate(&self, encoding: Encoding) -> bool {
        let mut compressed_now = false;
        self.generated[encoding.index()].get_or_init(|| {
            compressed_now = true;
            let Source::Memory(plain) = &self.identity.source else {
                return None;
            };
            let compressed = compress(encoding, plain).ok()?;
            // Not worth a second copy unless it saves at least a tenth.
            if compressed.len() as u64 * 10 > plain.len() as u64 * 9 {
                return None;
            }
            let etag = format!("\"{}-{}\"", self.identity.opaque_tag(), encoding.token());
            Some(Representation {
                encoding,
                len: compressed.len() as u64,
                etag: HeaderValue::from_str(&etag).ok()?,
                source: Source::Memory(Bytes::from(compressed)),
                origin: None,
                ok_headers: Default::default(),
            })
        });
        compressed_now
    }

    /// Bytes this entry keeps in memory, for the cache's weigher.
    pub(crate) fn memory_weight(&self) -> u64 {
        let in_memory = |rep: &Representation| match rep.source {
            Source::Memory(_) => rep.len,
            Source::Disk { .. } => 0,
        };
        let generated: u64 = self
            .generated
            .iter()
            .filter_map(|g| g.get()?.as_ref())
            .map(in_memory)
            .sum();
        let siblings: u64 = self.siblings.iter().flatten().map(in_memory).sum();
        // The fixed part (paths, header values) is a few hundred bytes.
        512 + in_memory(&self.identity) + siblings + generated
    }

    /// Whether every byte is served from memory (no file is opened per request), for every
    /// coding: a streamed sibling must be checked before each response like a streamed file.
    pub(crate) fn is_in_memory(&self) -> bool {
        let in_memory = |rep: &Representation| matches!(rep.source, Source::Memory(_));
        in_memory(&self.identity) && self.siblings.iter().flatten().all(in_memory)
    }

    /// Whether the file and each of its siblings are still the ones loaded, each compared on
    /// its own: a sibling that changed, appeared or disappeared means the entry must be
    /// loaded again. Blocking.
    pub(crate) fn unchanged_on_disk(&self, by_content: bool) -> io::Result<bool> {
        let metadata = fs::metadata(&self.path)?;
        if !self.identity.unchanged(&self.path, &metadata, by_content)? {
            return Ok(false);
        }
        if !self.has_sibling_files {
            return Ok(true);
        }
        for (encoding, sibling) in Encoding::COMPRESSED.into_iter().zip(&self.siblings) {
            let path = sibling_path(&self.path, encoding);
            let on_disk = fs::metadata(&path).ok().filter(Metadata::is_file);
            let same = match (sibling, on_disk) {
                (None, None) => true,
                (Some(sibling), Some(metadata)) => sibling
                    .unchanged(&path, &metadata, by_content)
                    .unwrap_or(false),
                _ => false,
            };
            if !same {
                return Ok(false);
            }
        }
        Ok(true)
    }
}

fn load_representation(
    root: Option<&Path>,
    path: &Path,
    encoding: Encoding,
    options: LoadOptions,
) -> io::Result<(Representation, Metadata, Option<u64>)> {
    let file = confine::open(root, path)?;
    let metadata = file.metadata()?;
    if !metadata.is_file() {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("{} is not a regular file", path.display()),
        ));
    }
    let fits = options
        .memory_limit
        .is_some_and(|limit| metadata.len() <= limit);
    if fits {
        let (bytes, metadata) = read_consistent(path, file, || confine::open(root, path))?;
        let hash = xxh3_64(&bytes);
        let representation = Representation {
            encoding,
            len: bytes.len() as u64,
            etag: etag_value(format!("\"{hash:016x}\"")),
            source: Source::Memory(bytes),
            origin: Some(Origin {
                fingerprint: Fingerprint::of(&metadata),
                hash: Some(hash),
            }),
            ok_headers: Default::default(),
        };
        return Ok((representation, metadata, Some(hash)));
    }
    let fingerprint = Fingerprint::of(&metadata);
    let hash = if options.hash_streamed {
        Some(hash_reader(file)?)
    } else {
        None
    };
    let representation = Representation {
        encoding,
        len: metadata.len(),
        etag: etag_value(fingerprint.etag()),
        source: Source::Disk {
            path: path.to_path_buf(),
            root: root.map(Arc::from),
            fingerprint,
        },
        origin: Some(Origin {
            fingerprint,
            hash: None,
        }),
        ok_headers: Default::default(),
    };
    Ok((representation, metadata, hash))
}

fn etag_value(text: String) -> HeaderValue {
    HeaderValue::from_str(&text).unwrap_or_else(|_| HeaderValue::from_static("\"0\""))
}

fn load_sibling(
    root: Option<&Path>,
    path: &Path,
    encoding: Encoding,
    identity: &Representation,
    options: LoadOptions,
) -> Option<Representation> {
    let sibling_path = sibling_path(path, encoding);
    if !fs::metadata(&sibling_path).ok()?.is_file() {
        return None;
    }
    let options = LoadOptions {
        hash_streamed: false,
        ..options
    };
    let (mut sibling, _, _) = load_representation(root, &sibling_path, encoding, options).ok()?;
    // Tie the sibling's tag to the identity's, so an edit of either changes it.
    let etag = format!(
        "\"{}-{}-{}\"",
        identity.opaque_tag(),
        encoding.token(),
        sibling.opaque_tag()
    );
    sibling.etag = etag_value(etag);
    Some(sibling)
}

/// Where the sibling of `path` precompressed in `encoding` is (`app.js.br`).
fn sibling_path(path: &Path, encoding: Encoding) -> PathBuf {
    let mut sibling = path.as_os_str().to_owned();
    sibling.push(encoding.file_suffix());
    PathBuf::from(sibling)
}

/// Reads a whole file, opened as `file` and by `reopen`, and returns the metadata it had while
/// being read; a file that changes under the read is opened and read again, so the bytes and the
/// metadata always belong together.
fn read_consistent(
    path: &Path,
    file: File,
    reopen: impl Fn() -> io::Result<File>,
) -> io::Result<(Bytes, Metadata)> {
    const ATTEMPTS: usize = 3;
    let mut opened = Some(file);
    for _ in 0..ATTEMPTS {
        let mut file = match opened.take() {
            Some(file) => file,
            None => reopen()?,
        };
        let before = file.metadata()?;
        let mut bytes = Vec::with_capacity(before.len() as usize);
        file.read_to_end(&mut bytes)?;
        let after = file.metadata()?;
        if Fingerprint::of(&before) == Fingerprint::of(&after) && bytes.len() as u64 == after.len()
        {
            return Ok((Bytes::from(bytes), after));
        }
    }
    Err(io::Error::other(format!(
        "{} kept changing while being read",
        path.display()
    )))
}

/// The content hash of a file, read in blocks. Blocking.
pub(crate) fn hash_file(path: &Path) -> io::Result<u64> {
    hash_reader(File::open(path)?)
}

/// The content hash of what `file` reads, in blocks. Blocking.
fn hash_reader(mut file: File) -> io::Result<u64> {
    let mut hasher = Xxh3::new();
    let mut buffer = vec![0; 64 * 1024];
    loop {
        let read = file.read(&mut buffer)?;
        if read == 0 {
            return Ok(hasher.digest());
        }
        hasher.update(&buffer[..read]);
    }
}

fn is_compressible(mime: &mime_guess::Mime) -> bool {
    let essence = mime.essence_str();
    mime.type_() == mime_guess::mime::TEXT
        || mime
            .suffix()
            .is_some_and(|suffix| suffix == "json" || suffix == "xml")
        || matches!(
            essence,
            "application/javascript"
                | "application/json"
                | "application/xml"
                | "application/wasm"
                | "image/svg+xml"
                | "image/x-icon"
                | "image/vnd.microsoft.icon"
                | "font/ttf"
                | "font/otf"
                | "application/x-font-ttf"
        )
}

fn content_type(mime: &mime_guess::Mime) -> HeaderValue {
    let textual = mime.type_() == mime_guess::mime::TEXT
        || matches!(
            mime.essence_str(),
            "application/javascript" | "application/json" | "image/svg+xml"
        )
        || mime
            .suffix()
            .is_some_and(|suffix| suffix == "json" || suffix == "xml");
    let value = if textual && mime.get_param("charset").is_none() {
        format!("{}; charset=utf-8", mime.essence_str())
    } else {
        mime.to_string()
    };
    HeaderValue::from_str(&value)
        .unwrap_or_else(|_| HeaderValue::from_static("application/octet-stream"))
}

#[cfg(feature = "compress")]
fn compress(encoding: Encoding, plain: &[u8]) -> io::Result<Vec<u8>> {
    use std::io::Write;
    // Compression runs once per file per coding, so the levels favour size over speed, short of
    // the slowest settings (brotli 11, zstd 19+), whose time grows far faster than what they save.
    match encoding {
        Encoding::Brotli => {
            let mut out = Vec::new();
            let params = brotli::enc::BrotliEncoderParams {
                quality: 9,
                ..Default::default()
            };
            brotli::BrotliCompress(&mut &plain[..], &mut out, &params)?;
            Ok(out)
        }
        Encoding::Zstd => zstd::bulk::compress(plain, 15),
        Encoding::Gzip => {
            let mut encoder =
                flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
            encoder.write_all(plain)?;
            encoder.finish()
        }
        Encoding::Identity => Ok(plain.to_vec()),
    }
}

#[cfg(not(feature = "compress"))]
fn compress(_: Encoding, _: &[u8]) -> io::Result<Vec<u8>> {
    Err(io::Error::other("built without the `compress` feature"))
}

/// Load options for tests: in memory up to 1 MiB, siblings and compression on.
#[cfg(test)]
pub(crate) mod tests_support {
    use super::LoadOptions;

    pub(crate) const MEMORY: LoadOptions = LoadOptions {
        memory_limit: Some(1 << 20),
        memory_only_if_compressible: false,
        precompressed: true,
        compress: true,
        hash_streamed: false,
    };
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    use super::tests_support::MEMORY;

    #[test]
    fn text_gets_a_charset_and_compresses_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("app.js");
        fs::write(&path, "console.log('hello');\n".repeat(100)).unwrap();
        let entry = Entry::load(&path, MEMORY, 0).unwrap();
        assert_eq!(entry.content_type, "text/javascript; charset=utf-8");
        assert!(entry.negotiable());
        assert!(matches!(
            entry.select(Encoding::Gzip),
            Selected::NeedsCompression(Encoding::Gzip)
        ));
        assert!(entry.generate(Encoding::Gzip));
        assert!(
            !entry.generate(Encoding::Gzip),
            "second call reuses the first result"
        );
        let Selected::Ready(gzip) = entry.select(Encoding::Gzip) else {
            panic!("not generated")
        };
        assert!(gzip.len < 200);
        assert_ne!(gzip.etag, entry.select_identity_etag());
    }

    #[test]
    fn precompressed_siblings_are_found() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("style.css");
        fs::write(&path, "body{}").unwrap();
        fs::write(dir.path().join("style.css.br"), "fake brotli").unwrap();
        let entry = Entry::load(&path, MEMORY, 0).unwrap();
        assert!(entry.offers(Encoding::Brotli));
        assert!(!entry.offers(Encoding::Gzip), "too small to generate");
        let Selected::Ready(br) = entry.select(Encoding::Brotli) else {
            panic!()
        };
        assert_eq!(br.len, 11);
    }

    #[test]
    fn streamed_files_get_a_metadata_tag() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("big.bin");
        fs::write(&path, vec![7u8; 4096]).unwrap();
        let options = LoadOptions {
            memory_limit: Some(1024),
            ..MEMORY
        };
        let entry = Entry::load(&path, options, 0).unwrap();
        assert!(!entry.is_in_memory());
        assert!(entry.hash.is_none());
        assert!(entry
            .select_identity_etag()
            .to_str()
            .unwrap()
            .starts_with("\"1000-"));
    }

    impl Entry {
        fn select_identity_etag(&self) -> HeaderValue {
            self.identity.etag.clone()
        }
    }
}
