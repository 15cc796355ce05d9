//! The body of a transformed message: the original streaming through untouched, or a body
//! the layer rewrote (or read and gave back, with the rest still to stream).

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use proxflow_core::BoxError;

pin_project! {
    /// A request or response body after the transform layer.
    pub struct TransformBody<B> {
        // Bytes read ahead of `rest` (a rewritten body, or what was read before the limit).
        head: Option<Bytes>,
        #[pin]
        rest: Option<B>,
        // A failure met while the layer read the body, given to the reader in its place.
        error: Option<BoxError>,
    }
}

impl<B> TransformBody<B> {
    /// The body as it came.
    pub fn original(body: B) -> Self {
        TransformBody {
            head: None,
            rest: Some(body),
            error: None,
        }
    }

    /// A whole body of these bytes.
    pub fn bytes(bytes: Bytes) -> Self {
        TransformBody {
            head: Some(bytes),
            rest: None,
            error: None,
        }
    }

    /// `head`, read already, then the rest of `body`.
    pub(crate) fn resumed(head: Bytes, body: B) -> Self {
        TransformBody {
            head: Some(head),
            rest: Some(body),
            error: None,
        }
    }

    /// A body that fails with `error` when read.
    pub(crate) fn failed(error: BoxError) -> Self {
        TransformBody {
            head: None,
            rest: None,
            error: Some(error),
        }
    }
}

impl<B> Body for TransformBody<B>
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
        let this = self.project();
        if let Some(error) = this.error.take() {
            return Poll::Ready(Some(Err(error)));
        }
        if let Some(head) = this.head.take().filter(|head| !head.is_empty()) {
            return Poll::Ready(Some(Ok(Frame::data(head))));
        }
        match this.rest.as_pin_mut() {
            Some(rest) => rest.poll_frame(cx).map_err(Into::into),
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.error.is_none()
            && self.head.as_ref().is_none_or(Bytes::is_empty)
            && self.rest.as_ref().is_none_or(Body::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        let head = self.head.as_ref().map_or(0, |h| h.len() as u64);
        match &self.rest {
            None => SizeHint::with_exact(head),
            Some(rest) => {
                let rest = rest.size_hint();
                let mut hint = SizeHint::new();
                hint.set_lower(rest.lower() + head);
                if let Some(upper) = rest.upper() {
                    hint.set_upper(upper + head);
                }
                hint
            }
        }
    }
}

impl<B> std::fmt::Debug for TransformBody<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TransformBody")
            .field("head", &self.head.as_ref().map(Bytes::len))
            .field("streaming", &self.rest.is_some())
            .finish()
    }
}

/// What reading a body up to a limit gave.
pub(crate) enum Read<B> {
    /// The whole body, within the limit.
    Whole(Bytes),
    /// Over the limit: what was read, and the rest unread.
    TooLarge(Bytes, B),
    /// The body failed while read.
    Failed(BoxError),
}

/// Reads `body` to its end, holding at most `limit` bytes.
pub(crate) async fn read<B>(body: B, limit: usize) -> Read<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    let mut body = body;
    let mut bytes = bytes::BytesMut::new();
    loop {
        let frame = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await;
        match frame {
            None => return Read::Whole(bytes.freeze()),
            Some(Err(error)) => return Read::Failed(error.into()),
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    bytes.extend_from_slice(&data);
                    if bytes.len() > limit {
                        return Read::TooLarge(bytes.freeze(), body);
                    }
                }
            }
        }
    }
}
