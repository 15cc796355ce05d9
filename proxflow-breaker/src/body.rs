//! The response body: the inner service's, or the short text of a 503 or 504 the breaker wrote.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

pin_project! {
    /// Body of the responses of [`CircuitBreaker`](crate::CircuitBreaker).
    pub struct BreakerBody<B> {
        #[pin]
        kind: Kind<B>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<B> {
        Inner { #[pin] body: B },
        // What is left to send. A slice rather than `Bytes` keeps the response small (16
        // bytes, not 32: every response the breaker passes on carries this variant's room).
        Text { text: &'static [u8] },
    }
}

impl<B> BreakerBody<B> {
    pub(crate) fn inner(body: B) -> Self {
        BreakerBody {
            kind: Kind::Inner { body },
        }
    }

    pub(crate) fn text(text: &'static str) -> Self {
        BreakerBody {
            kind: Kind::Text {
                text: text.as_bytes(),
            },
        }
    }
}

impl<B> Body for BreakerBody<B>
where
    B: Body<Data = Bytes>,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        match self.project().kind.project() {
            KindProj::Inner { body } => body.poll_frame(cx),
            KindProj::Text { text } => {
                let text = std::mem::take(text);
                Poll::Ready((!text.is_empty()).then(|| Ok(Frame::data(Bytes::from_static(text)))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Inner { body } => body.is_end_stream(),
            Kind::Text { text } => text.is_empty(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Inner { body } => body.size_hint(),
            Kind::Text { text } => SizeHint::with_exact(text.len() as u64),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::task::Waker;

    #[test]
    fn a_text_body_sends_its_text_once_then_ends() {
        let mut body = std::pin::pin!(BreakerBody::<http_body_util::Empty<Bytes>>::text("no\n"));
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
}
