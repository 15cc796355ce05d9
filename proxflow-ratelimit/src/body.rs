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
        // A text, not `Bytes`: a response over 128 bytes is moved by a call to `memcpy`, and
        // `Bytes` made the layer's response type 40 bytes larger than the inner one.
        Text { text: Option<Text> },
        Abort,
    }
}

/// The texts of the answers the layer gives itself.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Text {
    TooManyRequests,
    MissingKey,
}

impl Text {
    fn as_str(self) -> &'static str {
        match self {
            Text::TooManyRequests => "too many requests\n",
            Text::MissingKey => "missing rate limit key\n",
        }
    }
}

impl<B> RateLimitBody<B> {
    pub(crate) fn inner(body: B) -> Self {
        RateLimitBody {
            kind: Kind::Inner { body },
        }
    }

    pub(crate) fn text(text: Text) -> Self {
        RateLimitBody {
            kind: Kind::Text { text: Some(text) },
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
            KindProj::Text { text } => Poll::Ready(
                text.take()
                    .map(|text| Ok(Frame::data(Bytes::from_static(text.as_str().as_bytes())))),
            ),
            KindProj::Abort => Poll::Ready(Some(Err(ConnectionDropped.into()))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Inner { body } => body.is_end_stream(),
            Kind::Text { text } => text.is_none(),
            Kind::Abort => false,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Inner { body } => body.size_hint(),
            Kind::Text { text } => {
                SizeHint::with_exact(text.map_or(0, |text| text.as_str().len() as u64))
            }
            Kind::Abort => SizeHint::default(),
        }
    }
}
