//! The response body types the forwarder hands hyper: a body that is all here
//! ([`WholeBody`]), and a channel bounded in bytes that the pump task feeds
//! ([`body_channel`]): a slow client holds back the pump, never a Python thread beyond
//! `response_buffer` bytes.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::Frame as BodyFrame;
use tokio::sync::{mpsc, Semaphore};

/// A response body channel holding at most `bound` bytes (at least one chunk, however large):
/// the pump's side and the client's side.
pub(super) fn body_channel(bound: u64) -> (BodySender, ChannelBody) {
    // The semaphore counts free bytes; u32 because that is what one acquire can take.
    let bound = bound.clamp(1, u64::from(u32::MAX)) as usize;
    let budget = Arc::new(Semaphore::new(bound));
    let (tx, rx) = mpsc::unbounded_channel();
    (
        BodySender {
            tx,
            budget: budget.clone(),
            bound,
        },
        ChannelBody {
            rx,
            budget,
            bound,
            flushed: true,
            held: None,
        },
    )
}

/// A response body that is all here, in chunks: hyper writes them in one vectored write where
/// they fit, and knows the length (Content-Length) as it does for a single chunk.
pub(super) struct WholeBody(pub(super) std::collections::VecDeque<Bytes>);

impl http_body::Body for WholeBody {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<BodyFrame<Bytes>, Self::Error>>> {
        Poll::Ready(self.0.pop_front().map(|chunk| Ok(BodyFrame::data(chunk))))
    }

    fn is_end_stream(&self) -> bool {
        self.0.is_empty()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        http_body::SizeHint::with_exact(self.0.iter().map(|chunk| chunk.len() as u64).sum())
    }
}

/// The client has gone: its body was dropped.
pub(super) struct ClientGone;

/// The pump's side of a response body channel.
pub(super) struct BodySender {
    tx: mpsc::UnboundedSender<Result<Bytes, std::io::Error>>,
    /// Free bytes in the channel.
    budget: Arc<Semaphore>,
    bound: usize,
}

impl BodySender {
    /// Waits until `chunk` fits in the channel's bound, then queues it.
    pub(super) async fn send(&self, chunk: Bytes) -> Result<(), ClientGone> {
        let cost = chunk.len().min(self.bound) as u32;
        // Closed when the client's side is dropped, which also wakes a pump waiting here.
        self.budget
            .acquire_many(cost)
            .await
            .map_err(|_| ClientGone)?
            .forget();
        self.tx.send(Ok(chunk)).map_err(|_| ClientGone)
    }

    /// Ends the body with an error, so hyper cuts the response off rather than complete it.
    pub(super) fn fail(&self, why: &str) {
        let _ = self.tx.send(Err(std::io::Error::other(why.to_owned())));
    }
}

/// A response body fed by the pump task. An `Err` item makes hyper abort the response, so the
/// client sees it cut off rather than complete.
pub(super) struct ChannelBody {
    rx: mpsc::UnboundedReceiver<Result<Bytes, std::io::Error>>,
    budget: Arc<Semaphore>,
    bound: usize,
    /// No data has been handed to hyper since it last found this body pending (and so flushed).
    flushed: bool,
    /// An error held back for one round so hyper flushes the data before it (see `poll_frame`).
    held: Option<std::io::Error>,
}

impl http_body::Body for ChannelBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<BodyFrame<Bytes>, std::io::Error>>> {
        if let Some(err) = self.held.take() {
            return Poll::Ready(Some(Err(err)));
        }
        let item = match self.rx.poll_recv(cx) {
            Poll::Ready(item) => item,
            Poll::Pending => {
                self.flushed = true;
                return Poll::Pending;
            }
        };
        match item {
            Some(Ok(chunk)) => {
                // hyper has it now: room for the pump to read on.
                self.budget.add_permits(chunk.len().min(self.bound));
                self.flushed = false;
                Poll::Ready(Some(Ok(BodyFrame::data(chunk))))
            }
            // hyper drops what it has buffered when a body fails, so data that came just before
            // the error (often in the same read from the worker) would never reach the client:
            // look pending once, which makes hyper flush, and fail on the next poll.
            Some(Err(err)) if !self.flushed => {
                self.held = Some(err);
                self.flushed = true;
                cx.waker().wake_by_ref();
                Poll::Pending
            }
            other => Poll::Ready(other.map(|item| item.map(BodyFrame::data))),
        }
    }
}

impl Drop for ChannelBody {
    fn drop(&mut self) {
        self.budget.close();
    }
}
