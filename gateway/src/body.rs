//! Request bodies as the services hand them to the operations: a no-progress timer, and a record
//! of how the body ended that decides how the connection may continue.
//!
//! The rule ("trickling" clients): a body fails with [`BodyIdleTimeout`] when the server waits
//! for its next byte for the configured idle time (`body_idle_timeout_secs`, default 30 s). The
//! timer runs only while an operation is waiting for the body and restarts with every piece that
//! arrives, so a body that keeps making some progress, however slowly, is never cut, and a
//! server busy elsewhere (a slow disk) never blames the client. There is no minimum rate and no
//! overall cap: a slow but steady client holds one connection, which the per-core connection cap
//! bounds; S3 documents no rate either.
//!
//! After the operation, [`BodyWatch`] tells the service what happened: a body that timed out is
//! answered with S3's `RequestTimeout` whatever the operation made of the failure (s3s reports a
//! failed XML body as an internal error), and a response sent before the body was read to its
//! end carries `Connection: close`. The latter matters beyond timeouts: a client that sent
//! `Expect: 100-continue` and got an early answer (a refusal, `AccessDenied`) does not send the
//! body, and would otherwise reuse the connection while the server still expects those bytes.
//!
//! Must never: time out a body nobody is reading, or leave a connection open for reuse while
//! part of a request body may still arrive on it.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::HeaderValue;
use http::header::CONNECTION;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use send_wrapper::SendWrapper;

/// The error a body yields once no byte arrived for the idle time.
#[derive(Debug, thiserror::Error)]
#[error("the request body made no progress for {} s", .idle.as_secs())]
pub struct BodyIdleTimeout {
    /// The configured idle time.
    pub idle: Duration,
}

/// What the operation's reading of a body left behind.
#[derive(Debug, Default)]
struct Outcome {
    /// The body was read to its end.
    complete: AtomicBool,
    /// The body failed with [`BodyIdleTimeout`].
    timed_out: AtomicBool,
}

/// The service's view of a request body after the operation ran.
#[derive(Clone, Debug, Default)]
pub struct BodyWatch {
    /// `None` for a request without a body.
    outcome: Option<Arc<Outcome>>,
}

impl BodyWatch {
    /// Whether the body failed with [`BodyIdleTimeout`].
    pub fn timed_out(&self) -> bool {
        self.outcome
            .as_ref()
            .is_some_and(|o| o.timed_out.load(Ordering::Relaxed))
    }

    /// Whether the body was read to its end (always true without a body).
    pub fn complete(&self) -> bool {
        self.outcome
            .as_ref()
            .is_none_or(|o| o.complete.load(Ordering::Relaxed))
    }

    /// Adds `Connection: close` to `headers` when the body was not read to its end: part of it
    /// may still arrive on the connection, which therefore cannot carry another request.
    pub fn close_if_unread(&self, headers: &mut http::HeaderMap) {
        if !self.complete() {
            headers.insert(CONNECTION, HeaderValue::from_static("close"));
        }
    }
}

/// The no-progress timer of a body that is being waited for.
struct IdleTimer {
    idle: Duration,
    /// Armed when a poll finds no data; `None` until the first wait. Sound to wrap: monoio never
    /// moves a task between threads, so the timer is only touched on the thread that made it.
    sleep: Option<SendWrapper<Pin<Box<monoio::time::Sleep>>>>,
    /// Whether the last poll found no data (the timer runs from the first such poll).
    waiting: bool,
}

/// A request body with the no-progress timer; reports to its [`BodyWatch`].
pub struct WatchedBody<B = Incoming> {
    inner: B,
    /// `None` when the body was empty from the start.
    watch: Option<(IdleTimer, Arc<Outcome>)>,
}

impl<B: Body<Data = Bytes> + Unpin> WatchedBody<B> {
    /// Watches `inner` with an idle time of `idle`; an empty body is passed through untouched.
    pub fn new(inner: B, idle: Duration) -> (Self, BodyWatch) {
        if inner.is_end_stream() {
            return (Self { inner, watch: None }, BodyWatch::default());
        }
        let outcome = Arc::new(Outcome::default());
        let timer = IdleTimer {
            idle,
            sleep: None,
            waiting: false,
        };
        let watch = BodyWatch {
            outcome: Some(outcome.clone()),
        };
        (
            Self {
                inner,
                watch: Some((timer, outcome)),
            },
            watch,
        )
    }
}

impl WatchedBody<Incoming> {
    /// The body as s3s takes it (an empty body stays hyper's, without a box).
    pub fn into_s3s_body(self) -> s3s::Body {
        if self.watch.is_none() {
            s3s::Body::from(self.inner)
        } else {
            s3s::Body::http_body(self)
        }
    }
}

impl<B> Body for WatchedBody<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        let Some((timer, outcome)) = &mut this.watch else {
            return Pin::new(&mut this.inner).poll_frame(cx).map_err(Into::into);
        };
        if outcome.timed_out.load(Ordering::Relaxed) {
            return Poll::Ready(Some(Err(Box::new(BodyIdleTimeout { idle: timer.idle }))));
        }
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(frame) => {
                timer.waiting = false;
                if frame.is_none() || this.inner.is_end_stream() {
                    outcome.complete.store(true, Ordering::Relaxed);
                }
                Poll::Ready(frame.map(|f| f.map_err(Into::into)))
            }
            Poll::Pending => {
                if !timer.waiting {
                    timer.waiting = true;
                    let deadline = monoio::time::Instant::now() + timer.idle;
                    match &mut timer.sleep {
                        Some(sleep) => sleep.as_mut().reset(deadline),
                        None => {
                            timer.sleep = Some(SendWrapper::new(Box::pin(
                                monoio::time::sleep_until(deadline),
                            )));
                        }
                    }
                }
                let expired = timer
                    .sleep
                    .as_mut()
                    .is_some_and(|sleep| sleep.as_mut().poll(cx).is_ready());
                if expired {
                    outcome.timed_out.store(true, Ordering::Relaxed);
                    return Poll::Ready(Some(Err(Box::new(BodyIdleTimeout { idle: timer.idle }))));
                }
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt;
    use futures_util::stream;
    use http_body_util::{BodyExt, StreamBody};
    use std::time::Instant;

    type Piece = Result<Frame<Bytes>, std::convert::Infallible>;

    fn run<F: Future>(f: F) -> F::Output {
        monoio::RuntimeBuilder::<monoio::FusionDriver>::new()
            .enable_timer()
            .build()
            .expect("runtime")
            .block_on(f)
    }

    /// A body sending `pieces`, each after its delay.
    fn paced(
        pieces: Vec<(Duration, &'static [u8])>,
    ) -> StreamBody<futures_util::stream::LocalBoxStream<'static, Piece>> {
        StreamBody::new(
            stream::iter(pieces)
                .then(|(delay, bytes)| async move {
                    monoio::time::sleep(delay).await;
                    Ok(Frame::data(Bytes::from_static(bytes)))
                })
                .boxed_local(),
        )
    }

    const IDLE: Duration = Duration::from_millis(200);

    #[test]
    fn a_body_that_keeps_arriving_is_never_cut() {
        run(async {
            let pieces = vec![(IDLE / 2, &b"a"[..]); 8];
            let (body, watch) = WatchedBody::new(paced(pieces), IDLE);
            let started = Instant::now();
            let bytes = body.collect().await.expect("complete").to_bytes();
            assert_eq!(&bytes[..], b"aaaaaaaa");
            assert!(started.elapsed() > IDLE * 3);
            assert!(watch.complete() && !watch.timed_out());
        });
    }

    #[test]
    fn a_stalled_body_fails_after_the_idle_time() {
        run(async {
            let pieces = vec![(Duration::ZERO, &b"a"[..]), (IDLE * 10, &b"b"[..])];
            let (mut body, watch) = WatchedBody::new(paced(pieces), IDLE);
            let first = body.frame().await.expect("frame").expect("data");
            assert_eq!(first.into_data().expect("data"), Bytes::from_static(b"a"));
            let started = Instant::now();
            let err = body.frame().await.expect("error").expect_err("timeout");
            assert!(err.is::<BodyIdleTimeout>());
            assert!(started.elapsed() >= IDLE && started.elapsed() < IDLE * 5);
            assert!(watch.timed_out() && !watch.complete());
            let mut headers = http::HeaderMap::new();
            watch.close_if_unread(&mut headers);
            assert_eq!(headers[CONNECTION], "close");
            // It stays failed.
            assert!(body.frame().await.expect("error").is_err());
        });
    }

    #[test]
    fn the_timer_runs_only_while_the_body_is_awaited() {
        run(async {
            let (mut body, watch) = WatchedBody::new(paced(vec![(IDLE, &b"a"[..]); 2]), IDLE * 2);
            assert!(body.frame().await.expect("frame").is_ok());
            // The reader is busy for much longer than the idle time: not the client's fault.
            monoio::time::sleep(IDLE * 4).await;
            assert!(body.frame().await.expect("frame").is_ok());
            assert!(body.frame().await.is_none());
            assert!(watch.complete() && !watch.timed_out());
        });
    }

    #[test]
    fn an_empty_body_needs_no_watch_and_an_unread_one_closes_the_connection() {
        let (_, watch) = WatchedBody::new(http_body_util::Empty::<Bytes>::new(), IDLE);
        assert!(watch.complete());
        let mut headers = http::HeaderMap::new();
        watch.close_if_unread(&mut headers);
        assert!(headers.is_empty());
        let (_, watch) = WatchedBody::new(paced(vec![(IDLE, &b"a"[..])]), IDLE);
        assert!(!watch.complete());
        watch.close_if_unread(&mut headers);
        assert_eq!(headers[CONNECTION], "close");
    }
}
