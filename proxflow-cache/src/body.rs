//! The body of every answer that passes the cache: a stored body, the origin's body streaming
//! through (and copied into the store on the way when it is storable), or nothing.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use proxflow_core::BoxError;

use crate::service::Shared;
use crate::store::Stored;

pin_project! {
    /// The body of an answer that passed the cache.
    pub struct CacheBody<B> {
        #[pin]
        kind: Kind<B>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<B> {
        Stored { data: Option<Bytes> },
        Origin {
            #[pin]
            inner: B,
            // Present while the body is being copied for the store.
            copy: Option<Copy>,
        },
    }
}

/// A body on its way into the store: the response it belongs to, and the bytes so far.
pub(crate) struct Copy {
    pub(crate) shared: Arc<Shared>,
    pub(crate) key: Arc<str>,
    /// The stored response without its body.
    pub(crate) stored: Stored,
    pub(crate) bytes: BytesMut,
    /// Request coalescing: the waiters for this key wake when the copy is stored or dropped.
    pub(crate) _leader: Option<crate::coalesce::Leader>,
}

impl<B> CacheBody<B> {
    pub(crate) fn stored(data: Bytes) -> Self {
        CacheBody {
            kind: Kind::Stored { data: Some(data) },
        }
    }

    pub(crate) fn empty() -> Self {
        CacheBody {
            kind: Kind::Stored { data: None },
        }
    }

    pub(crate) fn origin(inner: B, copy: Option<Copy>) -> Self {
        CacheBody {
            kind: Kind::Origin { inner, copy },
        }
    }
}

impl<B> Body for CacheBody<B>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.project().kind.project() {
            KindProj::Stored { data } => Poll::Ready(
                data.take()
                    .filter(|data| !data.is_empty())
                    .map(|data| Ok(Frame::data(data))),
            ),
            KindProj::Origin { mut inner, copy } => {
                let frame = match std::task::ready!(inner.as_mut().poll_frame(cx)) {
                    Some(Ok(frame)) => frame,
                    Some(Err(error)) => {
                        // Nothing half-stored.
                        *copy = None;
                        return Poll::Ready(Some(Err(error.into())));
                    }
                    None => {
                        if let Some(copy) = copy.take() {
                            copy.finish();
                        }
                        return Poll::Ready(None);
                    }
                };
                if let Some(data) = frame.data_ref() {
                    let too_big = copy
                        .as_ref()
                        .is_some_and(|c| c.bytes.len() + data.len() > c.shared.max_object_size);
                    if too_big {
                        tracing::debug!("body larger than max_object_size: not stored");
                        *copy = None;
                    } else if let Some(copy) = copy {
                        copy.bytes.extend_from_slice(data);
                    }
                } else if copy.is_some() {
                    // Trailers are not stored; neither is a response that has them.
                    *copy = None;
                }
                // A server stops polling a body that says it has ended (its length is
                // reached), so the copy is complete now, not at a `None` that may never be
                // asked for.
                if inner.is_end_stream() {
                    if let Some(copy) = copy.take() {
                        copy.finish();
                    }
                }
                Poll::Ready(Some(Ok(frame)))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Stored { data } => data.as_ref().is_none_or(Bytes::is_empty),
            Kind::Origin { inner, .. } => inner.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Stored { data } => {
                SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64))
            }
            Kind::Origin { inner, .. } => inner.size_hint(),
        }
    }
}

impl Copy {
    /// The whole body has been read: the response goes into the store.
    pub(crate) fn finish(self) {
        let Copy {
            shared,
            key,
            mut stored,
            bytes,
            _leader,
        } = self;
        // The stored body is whole: its length frames it, for HEAD answers too.
        stored.headers.remove(http::header::TRANSFER_ENCODING);
        stored
            .headers
            .insert(http::header::CONTENT_LENGTH, bytes.len().into());
        stored.body = bytes.freeze();
        shared.store_response(key, Arc::new(stored));
    }
}

impl<B> std::fmt::Debug for CacheBody<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.kind {
            Kind::Stored { data } => f
                .debug_struct("CacheBody::Stored")
                .field("len", &data.as_ref().map_or(0, Bytes::len))
                .finish(),
            Kind::Origin { copy, .. } => f
                .debug_struct("CacheBody::Origin")
                .field("storing", &copy.is_some())
                .finish(),
        }
    }
}
