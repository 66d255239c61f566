//! Serving an agent's HTTP app with bounded resources: hyper's HTTP/1 connection driver (what
//! `axum::serve` uses, which does not expose these settings) with
//!
//! - a header read timeout: a request's headers must be complete within [`HttpLimits::header_timeout`]
//!   of the moment the connection starts waiting for them (hyper's timer starts when the
//!   connection opens and again after each response), so it is also the idle keep-alive timeout;
//! - a request body timeout ([`TimedBody`]): each chunk of a body must arrive within the same time
//!   of the moment the server waits for it;
//! - a write stall limit ([`HttpLimits::write_stall`]): a connection whose writes make no progress
//!   for that long (a client that stopped reading) is closed, so it cannot pin a response, or a
//!   stream's task, in memory for ever. Streams that are only quiet are never cut: SSE responses
//!   stay open as long as the client reads them;
//! - a cap on connections served at once ([`HttpLimits::max_connections`]); the next ones wait
//!   in the kernel's listen backlog.
//!
//! The request body size limit is the server's own (checked against `Content-Length` before the
//! body is read, see `server.rs`).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tower::ServiceExt;

/// Limits on connections; see the module documentation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpLimits {
    pub header_timeout: Duration,
    pub write_stall: Duration,
    pub max_connections: usize,
}

impl Default for HttpLimits {
    fn default() -> HttpLimits {
        HttpLimits {
            header_timeout: Duration::from_secs(30),
            write_stall: Duration::from_secs(60),
            max_connections: 256,
        }
    }
}

/// How long in-flight responses get once `shutdown` resolves.
const SHUTDOWN_GRACE: Duration = Duration::from_millis(500);

/// Serve `app` on `listener` with `limits` until `shutdown` resolves; then idle connections are
/// closed, in-flight responses get [`SHUTDOWN_GRACE`], and this returns.
pub async fn serve<A>(
    listener: TcpListener,
    app: A,
    limits: HttpLimits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) where
    A: tower::Service<axum::extract::Request, Response = axum::response::Response, Error = std::convert::Infallible>
        + Clone
        + Send
        + 'static,
    A::Future: Send + 'static,
{
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new()).header_read_timeout(limits.header_timeout);
    let timeout = limits.header_timeout;
    let service = TowerToHyperService::new(app.map_request(move |req: axum::http::Request<Incoming>| {
        req.map(|body| axum::body::Body::new(TimedBody::new(body, timeout)))
    }));
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let slot = tokio::select! {
            s = slots.clone().acquire_owned() => s.expect("the connection semaphore is never closed"),
            _ = &mut shutdown => break,
        };
        let stream = tokio::select! {
            r = listener.accept() => match r {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of file descriptors and the like: wait a little rather than spin.
                    tracing::warn!("accepting a connection: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let mut io = tokio_io_timeout::TimeoutStream::new(stream);
        io.set_write_timeout(Some(limits.write_stall));
        let conn = http.serve_connection(TokioIo::new(Box::pin(io)), service.clone());
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!("connection ended: {e}");
            }
            drop(slot);
        });
    }
    drop(listener);
    tokio::select! {
        _ = graceful.shutdown() => {}
        _ = tokio::time::sleep(SHUTDOWN_GRACE) => {}
    }
}

/// A request body each chunk of which must arrive within `timeout` of the moment the server
/// waits for it; else reading it fails with [`BodyTimeout`] (the handler answers 400). The timer
/// is armed only when a chunk is not there yet: a body that already arrived with its headers (a
/// small request, the usual case) costs no timer. (tower-http's `RequestBodyTimeout`, used
/// before, armed and polled one for every chunk: 3.5K instructions of a 100K-instruction
/// request, see BENCHMARKS.md.)
struct TimedBody {
    body: Incoming,
    timeout: Duration,
    sleep: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl TimedBody {
    fn new(body: Incoming, timeout: Duration) -> TimedBody {
        TimedBody { body, timeout, sleep: None }
    }
}

/// A request body chunk did not arrive in time.
#[derive(Debug, thiserror::Error)]
#[error(
    "the request body stopped arriving: no data for {0:?} (RATCHET_HEADER_TIMEOUT_MS); send the whole body at once"
)]
pub struct BodyTimeout(Duration);

impl Body for TimedBody {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        if let Poll::Ready(frame) = Pin::new(&mut this.body).poll_frame(cx) {
            this.sleep = None;
            return Poll::Ready(frame.map(|r| r.map_err(Into::into)));
        }
        let timeout = this.timeout;
        let sleep = this.sleep.get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        match sleep.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Some(Err(Box::new(BodyTimeout(timeout))))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}
