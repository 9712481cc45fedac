//! The HTTP/1.1 client the gateway calls harmony replicas with.
//!
//! Each exchange drives its own connection from the request's task: hyper's connection
//! (`client::conn::http1`) is polled together with the response, instead of in a task of its own
//! as in a general-purpose client (reqwest, hyper-util's pooled client). Every handoff between
//! that task and the request's (request, response head, each body chunk) was a task wake-up,
//! often across worker threads; here a burst of stream events that arrived in one read is
//! decoded in one go, and the relay can send it to the client in one write. Replicas are
//! internal, plain HTTP and never redirect, so nothing is lost by not having URL parsing,
//! redirect and retry layers either (docs/benchmarks.md, "Gateway added latency").
//!
//! Idle connections are pooled per replica (`host:port`) and reused; one that the replica closed
//! while idle is noticed when it is taken out, and a request that fails on a reused connection is
//! sent once more on a new one. An exchange dropped before its response ended (the client went
//! away) closes its connection, which tells harmony to cancel the generation. Connections have
//! `TCP_NODELAY`, so relayed events are never held by Nagle's algorithm.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// Idle connections kept per replica.
const MAX_IDLE_PER_REPLICA: usize = 1024;

#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("invalid replica URL '{0}' (plain http://host:port expected)")]
    InvalidUrl(String),
    #[error("connecting to {authority} timed out")]
    ConnectTimeout { authority: String },
    #[error("connecting to {authority} failed: {source}")]
    Connect {
        authority: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Http(#[from] hyper::Error),
    #[error("invalid request: {0}")]
    Request(#[from] http::Error),
}

#[derive(Clone)]
pub struct UpstreamClient {
    inner: Arc<ClientInner>,
}

struct ClientInner {
    connect_timeout: Duration,
    idle: Mutex<HashMap<String, Vec<Connection>>>,
}

struct Connection {
    sender: http1::SendRequest<RequestBody>,
    /// Boxed: hyper's connection state is large, and a connection moves from the pool through
    /// the request's futures to the exchange and back once per request.
    driver: Box<http1::Connection<TokioIo<TcpStream>, RequestBody>>,
}

impl UpstreamClient {
    pub fn new(connect_timeout: Duration) -> Self {
        Self {
            inner: Arc::new(ClientInner {
                connect_timeout,
                idle: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// POSTs `body` as JSON to `base_url` + `path` and returns the response head and the
    /// exchange to read its body from.
    pub async fn post_json(
        &self,
        base_url: &str,
        path: &str,
        body: Bytes,
    ) -> Result<(http::StatusCode, Exchange), UpstreamError> {
        let (authority, prefix) = split_base_url(base_url)?;
        let request = || {
            http::Request::post(format!("{prefix}{path}"))
                .header(http::header::HOST, authority)
                .header(http::header::CONTENT_TYPE, "application/json")
                .body(RequestBody::new(body.clone()))
        };
        if let Some(connection) = self.checkout(authority) {
            match self.send(authority, connection, request()?).await {
                Ok(answer) => return Ok(answer),
                // The replica may have closed this idle connection as the request went out.
                Err(error) => tracing::debug!(%error, "a reused connection failed; reconnecting"),
            }
        }
        let connection = self.connect(authority).await?;
        self.send(authority, connection, request()?).await
    }

    async fn send(
        &self,
        authority: &str,
        mut connection: Connection,
        request: http::Request<RequestBody>,
    ) -> Result<(http::StatusCode, Exchange), UpstreamError> {
        let mut response = std::pin::pin!(connection.sender.send_request(request));
        let mut driver_done = false;
        let response = std::future::poll_fn(|cx| {
            if let Poll::Ready(outcome) = response.as_mut().poll(cx) {
                return Poll::Ready(outcome);
            }
            if driver_done {
                return Poll::Pending;
            }
            // Driving the connection sends the request and reads the head; once it has ended,
            // the response resolves with the error if there was one.
            driver_done = Pin::new(&mut connection.driver).poll(cx).is_ready();
            response.as_mut().poll(cx)
        })
        .await?;
        let (head, body) = response.into_parts();
        Ok((
            head.status,
            Exchange {
                client: self.clone(),
                authority: authority.to_owned(),
                connection: (!driver_done).then_some(connection),
                body,
                ended: false,
            },
        ))
    }

    fn checkout(&self, authority: &str) -> Option<Connection> {
        let mut idle = self
            .inner
            .idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let connections = idle.get_mut(authority)?;
        while let Some(mut connection) = connections.pop() {
            // A connection the replica closed while it sat idle ends when polled.
            let mut context = Context::from_waker(Waker::noop());
            let closed = Pin::new(&mut connection.driver)
                .poll(&mut context)
                .is_ready();
            if !closed && connection.sender.is_ready() {
                return Some(connection);
            }
        }
        None
    }

    fn checkin(&self, authority: &str, connection: Connection) {
        let mut idle = self
            .inner
            .idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let Some(connections) = idle.get_mut(authority) else {
            idle.insert(authority.to_owned(), vec![connection]);
            return;
        };
        if connections.len() < MAX_IDLE_PER_REPLICA {
            connections.push(connection);
        }
    }

    async fn connect(&self, authority: &str) -> Result<Connection, UpstreamError> {
        let address = if authority.contains(':') {
            authority.to_owned()
        } else {
            format!("{authority}:80")
        };
        let stream = tokio::time::timeout(self.inner.connect_timeout, TcpStream::connect(address))
            .await
            .map_err(|_| UpstreamError::ConnectTimeout {
                authority: authority.to_owned(),
            })?
            .map_err(|source| UpstreamError::Connect {
                authority: authority.to_owned(),
                source,
            })?;
        stream
            .set_nodelay(true)
            .map_err(|source| UpstreamError::Connect {
                authority: authority.to_owned(),
                source,
            })?;
        let (sender, driver) = http1::handshake(TokioIo::new(stream)).await?;
        Ok(Connection {
            sender,
            driver: Box::new(driver),
        })
    }
}

/// `http://host:port/prefix` → (`host:port`, `/prefix`). Replicas are plain HTTP.
fn split_base_url(base_url: &str) -> Result<(&str, &str), UpstreamError> {
    let invalid = || UpstreamError::InvalidUrl(base_url.to_owned());
    let rest = base_url.strip_prefix("http://").ok_or_else(invalid)?;
    let (authority, prefix) = match rest.find('/') {
        Some(slash) => rest.split_at(slash),
        None => (rest, ""),
    };
    if authority.is_empty() {
        return Err(invalid());
    }
    Ok((authority, prefix.trim_end_matches('/')))
}

/// A response being read. Its connection goes back to the pool once the body has been read to
/// the end; dropped earlier, it closes the connection.
pub struct Exchange {
    client: UpstreamClient,
    authority: String,
    /// `None` once the connection has ended (closed by the replica, or failed).
    connection: Option<Connection>,
    body: Incoming,
    ended: bool,
}

impl Exchange {
    /// The next piece of the body; `None` at its end. Trailers are skipped.
    pub async fn next_chunk(&mut self) -> Option<Result<Bytes, hyper::Error>> {
        std::future::poll_fn(|cx| self.poll_chunk(cx)).await
    }

    /// The next piece of the body if it has already arrived: `None` when it has not.
    pub fn ready_chunk(&mut self) -> Option<Option<Result<Bytes, hyper::Error>>> {
        let mut context = Context::from_waker(Waker::noop());
        match self.poll_chunk(&mut context) {
            Poll::Ready(chunk) => Some(chunk),
            Poll::Pending => None,
        }
    }

    /// The whole body, in one buffer.
    pub async fn read_to_end(&mut self) -> Result<Bytes, hyper::Error> {
        let Some(first) = self.next_chunk().await.transpose()? else {
            return Ok(Bytes::new());
        };
        let Some(second) = self.next_chunk().await.transpose()? else {
            return Ok(first);
        };
        let mut whole = Vec::with_capacity(first.len() + second.len());
        whole.extend_from_slice(&first);
        whole.extend_from_slice(&second);
        while let Some(chunk) = self.next_chunk().await.transpose()? {
            whole.extend_from_slice(&chunk);
        }
        Ok(Bytes::from(whole))
    }

    fn poll_chunk(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes, hyper::Error>>> {
        if self.ended {
            return Poll::Ready(None);
        }
        loop {
            if let Poll::Ready(frame) = Pin::new(&mut self.body).poll_frame(cx) {
                match frame {
                    Some(Ok(frame)) => match frame.into_data() {
                        Ok(data) => return Poll::Ready(Some(Ok(data))),
                        Err(_trailers) => continue,
                    },
                    Some(Err(error)) => {
                        self.ended = true;
                        self.connection = None;
                        return Poll::Ready(Some(Err(error)));
                    }
                    None => {
                        self.ended = true;
                        self.release(cx);
                        return Poll::Ready(None);
                    }
                }
            }
            // Drive the connection: it reads the socket and hands the body over a chunk at a
            // time, so poll the body again whenever it made progress.
            let Some(connection) = self.connection.as_mut() else {
                return Poll::Pending;
            };
            match Pin::new(&mut connection.driver).poll(cx) {
                Poll::Ready(_) => {
                    // Ended: the body now resolves (its end, or an error).
                    self.connection = None;
                }
                Poll::Pending => {
                    if Pin::new(&mut self.body).is_end_stream() {
                        continue;
                    }
                    match Pin::new(&mut self.body).poll_frame(cx) {
                        Poll::Pending => return Poll::Pending,
                        Poll::Ready(frame) => {
                            return Poll::Ready(self.settle(frame, cx));
                        }
                    }
                }
            }
        }
    }

    fn settle(
        &mut self,
        frame: Option<Result<Frame<Bytes>, hyper::Error>>,
        cx: &mut Context<'_>,
    ) -> Option<Result<Bytes, hyper::Error>> {
        match frame {
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) => Some(Ok(data)),
                // Trailers carry nothing the gateway uses; the body ends after them.
                Err(_trailers) => {
                    self.ended = true;
                    self.release(cx);
                    None
                }
            },
            Some(Err(error)) => {
                self.ended = true;
                self.connection = None;
                Some(Err(error))
            }
            None => {
                self.ended = true;
                self.release(cx);
                None
            }
        }
    }

    /// Returns the connection to the pool if it can carry another request.
    fn release(&mut self, cx: &mut Context<'_>) {
        let Some(mut connection) = self.connection.take() else {
            return;
        };
        // One more turn lets the connection finish the exchange and become idle.
        if Pin::new(&mut connection.driver).poll(cx).is_ready() {
            return;
        }
        if connection.sender.is_ready() {
            self.client.checkin(&self.authority, connection);
        }
    }
}

/// A request body sent in one piece (the JSON forwarded to harmony).
pub struct RequestBody(Option<Bytes>);

impl RequestBody {
    pub fn new(bytes: Bytes) -> Self {
        Self(Some(bytes))
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        Poll::Ready(self.0.take().map(|bytes| Ok(Frame::data(bytes))))
    }

    fn is_end_stream(&self) -> bool {
        self.0.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.0.as_ref().map_or(0, |bytes| bytes.len() as u64))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_urls_split_into_authority_and_path_prefix() {
        assert_eq!(
            split_base_url("http://127.0.0.1:8080").ok(),
            Some(("127.0.0.1:8080", ""))
        );
        assert_eq!(
            split_base_url("http://pool-0.pool-hdls:50053/").ok(),
            Some(("pool-0.pool-hdls:50053", ""))
        );
        assert_eq!(
            split_base_url("http://h:1/prefix/").ok(),
            Some(("h:1", "/prefix"))
        );
        assert_eq!(split_base_url("http://h").ok(), Some(("h", "")));
        assert!(split_base_url("https://h:1").is_err());
        assert!(split_base_url("http:///v1").is_err());
    }

    /// A replica answering `{}` to every request; with `close_after_each` it closes each
    /// connection after one response, as a replica closing idle keep-alive connections does.
    async fn replica(close_after_each: bool) -> (String, Arc<std::sync::atomic::AtomicUsize>) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("address"));
        let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = accepted.clone();
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                tokio::spawn(async move {
                    loop {
                        // Every request of these tests ends with its body, `{}`.
                        let mut request = Vec::new();
                        let mut buffer = [0u8; 4096];
                        while !request.ends_with(b"\r\n\r\n{}") {
                            match socket.read(&mut buffer).await {
                                Ok(0) | Err(_) => return,
                                Ok(count) => request.extend_from_slice(&buffer[..count]),
                            }
                        }
                        let answer = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}";
                        if socket.write_all(answer).await.is_err() || close_after_each {
                            return;
                        }
                    }
                });
            }
        });
        (url, accepted)
    }

    async fn post_three_times(url: &str) {
        let client = UpstreamClient::new(Duration::from_secs(5));
        for _ in 0..3 {
            let (status, mut exchange) = client
                .post_json(url, "/v1/chat/completions", Bytes::from_static(b"{}"))
                .await
                .expect("answered");
            assert_eq!(status, http::StatusCode::OK);
            assert_eq!(exchange.read_to_end().await.expect("body"), "{}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    #[tokio::test]
    async fn connections_are_reused() {
        let (url, accepted) = replica(false).await;
        post_three_times(&url).await;
        assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_pooled_connection_the_replica_closed_is_replaced_not_failed() {
        let (url, accepted) = replica(true).await;
        post_three_times(&url).await;
        assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 3);
    }
}
