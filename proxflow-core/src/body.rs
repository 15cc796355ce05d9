//! The body of a layer's responses: the inner service's, or a short text the layer answered
//! with itself (a 429, a 503, a 502...), or one that fails at once so that the server closes
//! the connection without an answer.

use std::error::Error;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

/// The error type of a [`LayerBody`]: the inner body's error, boxed, or [`ConnectionDropped`].
pub type BoxError = Box<dyn Error + Send + Sync>;

/// The layer chose to close the connection without an answer (a rate limiter's `reject: drop`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("connection dropped on purpose, without a response")]
pub struct ConnectionDropped;

pin_project! {
    /// The body of every proxflow layer's responses. axum and hyper take it as it is.
    pub struct LayerBody<B> {
        #[pin]
        kind: Kind<B>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<B> {
        Inner { #[pin] body: B },
        // What is left to send, one pointer wide: every response a layer passes on carries
        // this variant's room, and a response over 128 bytes is moved with `memcpy`.
        Text { text: &'static &'static str },
        Abort,
    }
}

impl<B> LayerBody<B> {
    /// The inner service's body, passed on.
    pub fn inner(body: B) -> Self {
        LayerBody {
            kind: Kind::Inner { body },
        }
    }

    /// A text the layer answers with itself: `LayerBody::text(&"too many requests\n")`.
    ///
    /// It takes a reference to the text, not the text, so that the body stays one pointer wide
    /// beside an inner body with no room of its own.
    pub fn text(text: &'static &'static str) -> Self {
        LayerBody {
            kind: Kind::Text { text },
        }
    }

    /// A body whose first frame is the error [`ConnectionDropped`]: hyper then closes the
    /// connection without finishing the response.
    pub fn abort() -> Self {
        LayerBody { kind: Kind::Abort }
    }
}

impl<B> Body for LayerBody<B>
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
            KindProj::Text { text } => {
                let sent = std::mem::replace(text, &"");
                Poll::Ready(
                    (!sent.is_empty())
                        .then(|| Ok(Frame::data(Bytes::from_static(sent.as_bytes())))),
                )
            }
            KindProj::Abort => Poll::Ready(Some(Err(ConnectionDropped.into()))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Inner { body } => body.is_end_stream(),
            Kind::Text { text } => text.is_empty(),
            Kind::Abort => false,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Inner { body } => body.size_hint(),
            Kind::Text { text } => SizeHint::with_exact(text.len() as u64),
            Kind::Abort => SizeHint::default(),
        }
    }
}

/// A layer's own plain-text answer: `status`, `Content-Type: text/plain; charset=utf-8`, and
/// `text` as the body.
pub fn text_response<B>(status: StatusCode, text: &'static &'static str) -> Response<LayerBody<B>> {
    let mut response = Response::new(LayerBody::text(text));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

impl<B> std::fmt::Debug for LayerBody<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.kind {
            Kind::Inner { .. } => f.write_str("LayerBody::Inner"),
            Kind::Text { text } => f.debug_tuple("LayerBody::Text").field(text).finish(),
            Kind::Abort => f.write_str("LayerBody::Abort"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{BodyExt, Empty, Full};
    use std::task::Waker;

    type Inner = Empty<Bytes>;

    #[test]
    fn a_text_body_sends_its_text_once_then_ends() {
        let mut body = std::pin::pin!(LayerBody::<Inner>::text(&"no\n"));
        let mut cx = Context::from_waker(Waker::noop());
        assert_eq!(body.size_hint().exact(), Some(3));
        assert!(!body.is_end_stream());
        let Poll::Ready(Some(Ok(frame))) = body.as_mut().poll_frame(&mut cx) else {
            panic!("the text first");
        };
        assert_eq!(frame.into_data().ok(), Some(Bytes::from_static(b"no\n")));
        assert!(body.is_end_stream());
        assert_eq!(body.size_hint().exact(), Some(0));
        assert!(matches!(
            body.as_mut().poll_frame(&mut cx),
            Poll::Ready(None)
        ));
    }

    #[test]
    fn an_aborted_body_fails_at_once() {
        let mut body = std::pin::pin!(LayerBody::<Inner>::abort());
        let mut cx = Context::from_waker(Waker::noop());
        let Poll::Ready(Some(Err(error))) = body.as_mut().poll_frame(&mut cx) else {
            panic!("an error first");
        };
        assert!(error.is::<ConnectionDropped>());
        assert!(!body.is_end_stream());
    }

    #[test]
    fn a_text_answer_is_plain_text_and_one_pointer_wide() {
        let response = text_response::<()>(StatusCode::BAD_GATEWAY, &"bad gateway\n");
        assert_eq!(response.status(), StatusCode::BAD_GATEWAY);
        assert_eq!(
            response.headers()[header::CONTENT_TYPE],
            "text/plain; charset=utf-8"
        );
        // Beside an inner body without room (the benchmarks' `()`), the response stays within
        // the 128 bytes that are moved without a call to `memcpy`.
        assert!(std::mem::size_of::<LayerBody<()>>() <= 16);
        assert!(std::mem::size_of::<Response<LayerBody<()>>>() <= 128);
    }

    #[tokio::test]
    async fn an_inner_body_passes_through() {
        let body = LayerBody::inner(Full::new(Bytes::from_static(b"upstream")));
        assert_eq!(body.size_hint().exact(), Some(8));
        let collected = body.collect().await.unwrap().to_bytes();
        assert_eq!(collected, Bytes::from_static(b"upstream"));
    }
}
