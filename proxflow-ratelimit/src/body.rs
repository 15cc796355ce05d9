//! The response body: the inner service's, a short text the layer wrote, or one that aborts the
//! connection (`reject: drop`).

use std::error::Error;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

/// Errors of a [`RateLimitBody`].
pub type BoxError = Box<dyn Error + Send + Sync>;

/// The connection was closed on purpose (`reject: drop`).
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("rate limited: connection dropped without a response")]
pub struct ConnectionDropped;

pin_project! {
    /// Body of the responses of [`RateLimit`](crate::RateLimit): the inner service's, a short
    /// text the layer wrote, or one that fails at once so that hyper closes the connection.
    pub struct RateLimitBody<B> {
        #[pin]
        kind: Kind<B>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<B> {
        Inner { #[pin] body: B },
        Full { bytes: Option<Bytes> },
        Abort,
    }
}

impl<B> RateLimitBody<B> {
    pub(crate) fn inner(body: B) -> Self {
        RateLimitBody {
            kind: Kind::Inner { body },
        }
    }

    pub(crate) fn text(text: &'static str) -> Self {
        RateLimitBody {
            kind: Kind::Full {
                bytes: Some(Bytes::from_static(text.as_bytes())),
            },
        }
    }

    pub(crate) fn abort() -> Self {
        RateLimitBody { kind: Kind::Abort }
    }
}

impl<B> Body for RateLimitBody<B>
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
            KindProj::Inner { body } => body.poll_frame(cx).map_err(Into::into),
            KindProj::Full { bytes } => {
                Poll::Ready(bytes.take().map(|bytes| Ok(Frame::data(bytes))))
            }
            KindProj::Abort => Poll::Ready(Some(Err(ConnectionDropped.into()))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Inner { body } => body.is_end_stream(),
            Kind::Full { bytes } => bytes.is_none(),
            Kind::Abort => false,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Inner { body } => body.size_hint(),
            Kind::Full { bytes } => {
                SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64))
            }
            Kind::Abort => SizeHint::default(),
        }
    }
}
