//! The response body for files: a single buffer for cached files, a stream for files on disk.

use std::io;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_util::stream::{self, BoxStream, StreamExt, TryStreamExt};
use http_body::{Body, Frame, SizeHint};
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio_util::io::ReaderStream;

use crate::confine;
use crate::fingerprint::Fingerprint;

/// Body of the responses this crate generates. It reports its exact length, so hyper sends a
/// `Content-Length` (and no chunked encoding) for every file.
pub struct FileBody {
    kind: Kind,
}

enum Kind {
    Full(Option<Bytes>),
    Stream {
        stream: BoxStream<'static, io::Result<Bytes>>,
        remaining: u64,
    },
}

/// One piece of a body that is streamed: bytes already in memory, or a byte range of a file.
pub(crate) enum Chunk {
    Memory(Bytes),
    File {
        path: PathBuf,
        /// The folder the file is opened beneath, unless symlinks may leave it.
        root: Option<Arc<Path>>,
        range: Range<u64>,
        expected: Fingerprint,
    },
}

impl Chunk {
    pub(crate) fn len(&self) -> u64 {
        match self {
            Chunk::Memory(bytes) => bytes.len() as u64,
            Chunk::File { range, .. } => range.end - range.start,
        }
    }
}

/// Read buffer for streamed files: large enough that a 1 MiB file is a handful of reads.
const READ_BUFFER: usize = 64 * 1024;

impl FileBody {
    /// A body with these bytes.
    pub fn full(bytes: impl Into<Bytes>) -> Self {
        FileBody {
            kind: Kind::Full(Some(bytes.into())),
        }
    }

    /// An empty body.
    pub fn empty() -> Self {
        FileBody {
            kind: Kind::Full(None),
        }
    }

    pub(crate) fn chunks(chunks: Vec<Chunk>) -> Self {
        if let [Chunk::Memory(bytes)] = chunks.as_slice() {
            return FileBody::full(bytes.clone());
        }
        let remaining = chunks.iter().map(Chunk::len).sum();
        let stream = stream::iter(chunks)
            .flat_map(|chunk| match chunk {
                Chunk::Memory(bytes) => stream::once(async { Ok(bytes) }).boxed(),
                Chunk::File {
                    path,
                    root,
                    range,
                    expected,
                } => read_range(path, root, range, expected),
            })
            .boxed();
        FileBody {
            kind: Kind::Stream { stream, remaining },
        }
    }
}

/// Streams a byte range of a file, after checking that it is still the file whose length the
/// headers announced: a file replaced in between ends the body with an error (hyper then closes
/// the connection) instead of sending other bytes under the old `Content-Length`.
fn read_range(
    path: PathBuf,
    root: Option<Arc<Path>>,
    range: Range<u64>,
    expected: Fingerprint,
) -> BoxStream<'static, io::Result<Bytes>> {
    let open = async move {
        let opening = path.clone();
        let file = tokio::task::spawn_blocking(move || confine::open(root.as_deref(), &opening))
            .await
            .unwrap_or_else(|join| Err(io::Error::other(join)))?;
        let mut file = tokio::fs::File::from_std(file);
        let metadata = file.metadata().await?;
        if Fingerprint::of(&metadata) != expected {
            return Err(io::Error::other(format!(
                "{} changed while being served",
                path.display()
            )));
        }
        file.seek(io::SeekFrom::Start(range.start)).await?;
        let capacity = READ_BUFFER.min((range.end - range.start) as usize).max(1);
        Ok(ReaderStream::with_capacity(
            file.take(range.end - range.start),
            capacity,
        ))
    };
    stream::once(open).try_flatten().boxed()
}

impl Body for FileBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        match &mut self.kind {
            Kind::Full(bytes) => Poll::Ready(bytes.take().map(|bytes| Ok(Frame::data(bytes)))),
            Kind::Stream { stream, remaining } => match stream.poll_next_unpin(cx) {
                Poll::Ready(Some(Ok(bytes))) => {
                    *remaining = remaining.saturating_sub(bytes.len() as u64);
                    Poll::Ready(Some(Ok(Frame::data(bytes))))
                }
                Poll::Ready(None) if *remaining > 0 => {
                    let short =
                        io::Error::new(io::ErrorKind::UnexpectedEof, "file shorter than announced");
                    *remaining = 0;
                    Poll::Ready(Some(Err(short)))
                }
                other => other.map(|item| item.map(|result| result.map(Frame::data))),
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Full(bytes) => bytes.is_none(),
            Kind::Stream { remaining, .. } => *remaining == 0,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Full(bytes) => SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64)),
            Kind::Stream { remaining, .. } => SizeHint::with_exact(*remaining),
        }
    }
}

impl std::fmt::Debug for FileBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileBody")
            .field("size_hint", &self.size_hint().exact())
            .finish()
    }
}
