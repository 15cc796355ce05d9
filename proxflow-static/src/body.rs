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
    /// Files not opened yet: by [`FileBody::open_files`] before the head goes out, or else on
    /// the first poll.
    Chunks {
        chunks: Vec<Chunk>,
        remaining: u64,
    },
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
        FileBody {
            kind: Kind::Chunks { chunks, remaining },
        }
    }

    /// Opens every file the body reads and checks that each is still the version whose length
    /// the headers announce, so that a file replaced since it was checked fails the request
    /// before its head goes out instead of cutting the body after it. An opened file keeps its
    /// bytes when it is replaced by a rename; a file truncated in place still ends the body
    /// early, with an error.
    pub(crate) async fn open_files(self) -> io::Result<FileBody> {
        let Kind::Chunks { chunks, remaining } = self.kind else {
            return Ok(self);
        };
        let mut parts = Vec::with_capacity(chunks.len());
        for chunk in chunks {
            parts.push(chunk.open().await?);
        }
        let stream = stream::iter(parts).flatten().boxed();
        Ok(FileBody {
            kind: Kind::Stream { stream, remaining },
        })
    }
}

/// Reads the chunks as a stream, opening each file when its turn comes.
fn lazy_stream(chunks: Vec<Chunk>) -> BoxStream<'static, io::Result<Bytes>> {
    stream::iter(chunks)
        .flat_map(|chunk| stream::once(chunk.open()).try_flatten().boxed())
        .boxed()
}

impl Chunk {
    /// The chunk's bytes as a stream; a file is opened and checked first ([`open_checked`]).
    async fn open(self) -> io::Result<BoxStream<'static, io::Result<Bytes>>> {
        Ok(match self {
            Chunk::Memory(bytes) => stream::once(async { Ok(bytes) }).boxed(),
            Chunk::File {
                path,
                root,
                range,
                expected,
            } => read_range(open_checked(path, root, expected).await?, range),
        })
    }
}

/// Opens a file beneath `root` ([`confine::open`]) after checking that it is still the one
/// whose length the headers announce: a file replaced in between is an error rather than other
/// bytes under the old `Content-Length`.
async fn open_checked(
    path: PathBuf,
    root: Option<Arc<Path>>,
    expected: Fingerprint,
) -> io::Result<tokio::fs::File> {
    let opening = path.clone();
    let file = tokio::task::spawn_blocking(move || confine::open(root.as_deref(), &opening))
        .await
        .unwrap_or_else(|join| Err(io::Error::other(join)))?;
    let file = tokio::fs::File::from_std(file);
    let metadata = file.metadata().await?;
    if Fingerprint::of(&metadata) != expected {
        return Err(io::Error::other(format!(
            "{} changed while being served",
            path.display()
        )));
    }
    Ok(file)
}

/// Streams a byte range of an opened file.
fn read_range(
    mut file: tokio::fs::File,
    range: Range<u64>,
) -> BoxStream<'static, io::Result<Bytes>> {
    let seek = async move {
        file.seek(io::SeekFrom::Start(range.start)).await?;
        let capacity = READ_BUFFER.min((range.end - range.start) as usize).max(1);
        io::Result::Ok(ReaderStream::with_capacity(
            file.take(range.end - range.start),
            capacity,
        ))
    };
    stream::once(seek).try_flatten().boxed()
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
            Kind::Chunks { chunks, remaining } => {
                let (stream, remaining) = (lazy_stream(std::mem::take(chunks)), *remaining);
                self.kind = Kind::Stream { stream, remaining };
                self.poll_frame(cx)
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Full(bytes) => bytes.is_none(),
            Kind::Chunks { remaining, .. } | Kind::Stream { remaining, .. } => *remaining == 0,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Full(bytes) => SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64)),
            Kind::Chunks { remaining, .. } | Kind::Stream { remaining, .. } => {
                SizeHint::with_exact(*remaining)
            }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fingerprint::Fingerprint;

    async fn collect(mut body: FileBody) -> io::Result<Vec<u8>> {
        let mut bytes = Vec::new();
        while let Some(frame) = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await
        {
            bytes.extend_from_slice(&frame?.into_data().unwrap_or_default());
        }
        Ok(bytes)
    }

    fn file_chunk(path: &std::path::Path) -> Chunk {
        let metadata = std::fs::metadata(path).unwrap();
        Chunk::File {
            path: path.to_path_buf(),
            root: None,
            range: 0..metadata.len(),
            expected: Fingerprint::of(&metadata),
        }
    }

    #[tokio::test]
    async fn a_file_replaced_before_the_head_fails_before_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("big.bin");
        std::fs::write(&path, vec![1u8; 5000]).unwrap();
        let body = FileBody::chunks(vec![file_chunk(&path)]);
        std::fs::write(&path, vec![2u8; 300]).unwrap();
        assert!(body.open_files().await.is_err());
    }

    #[tokio::test]
    async fn an_opened_file_keeps_its_bytes_when_replaced_by_a_rename() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("big.bin");
        std::fs::write(&path, vec![1u8; 5000]).unwrap();
        let body = FileBody::chunks(vec![Chunk::Memory("head".into()), file_chunk(&path)]);
        let body = body.open_files().await.unwrap();
        assert_eq!(body.size_hint().exact(), Some(5004));
        let next = dir.path().join("next.bin");
        std::fs::write(&next, vec![2u8; 300]).unwrap();
        std::fs::rename(&next, &path).unwrap();
        let bytes = collect(body).await.unwrap();
        assert_eq!(bytes.len(), 5004);
        assert!(bytes[4..].iter().all(|&b| b == 1));
    }

    #[tokio::test]
    async fn unopened_chunks_are_read_on_the_first_poll() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("big.bin");
        std::fs::write(&path, vec![3u8; 2000]).unwrap();
        let body = FileBody::chunks(vec![file_chunk(&path), Chunk::Memory("tail".into())]);
        assert_eq!(body.size_hint().exact(), Some(2004));
        let bytes = collect(body).await.unwrap();
        assert_eq!(&bytes[2000..], b"tail");
    }
}
