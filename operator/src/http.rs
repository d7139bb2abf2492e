//! `/metrics` and `/healthz` over HTTP/1.1.
//!
//! Served with hyper, which the operator already links through kube: two fixed
//! routes do not need a web framework. [`respond`] is the whole routing table and
//! pure; [`serve`] owns the connections.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{ALLOW, CONTENT_TYPE, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tracing::{debug, error};

use crate::controller::signalled;
use crate::metrics::Metrics;

/// Content type of `/metrics`.
pub const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// Content type of `/healthz`.
pub const TEXT: &str = "text/plain; charset=utf-8";

/// The response to `method` on `path`: `/metrics` (OpenMetrics text) and `/healthz`
/// (`ok`) answer GET and HEAD (hyper leaves out a HEAD response's body), other methods
/// get 405 with `Allow`, other paths 404.
pub fn respond(metrics: &Metrics, method: &Method, path: &str) -> Response<Full<Bytes>> {
    if !matches!(path, "/metrics" | "/healthz") {
        return empty(StatusCode::NOT_FOUND);
    }
    if method != Method::GET && method != Method::HEAD {
        let mut response = empty(StatusCode::METHOD_NOT_ALLOWED);
        response
            .headers_mut()
            .insert(ALLOW, HeaderValue::from_static("GET,HEAD"));
        return response;
    }
    if path == "/healthz" {
        return text(TEXT, "ok".into());
    }
    match metrics.encode() {
        Ok(body) => text(OPENMETRICS, body),
        Err(_) => empty(StatusCode::INTERNAL_SERVER_ERROR),
    }
}

fn empty(status: StatusCode) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::default());
    *response.status_mut() = status;
    response
}

fn text(content_type: &'static str, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

/// Serves [`respond`] on `listener` until `shutdown` turns true, then stops accepting,
/// lets each open connection finish the request it is on (idle keep-alive connections
/// close at once) and returns when all have closed.
pub async fn serve(
    listener: TcpListener,
    m: Arc<Metrics>,
    shutdown: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let mut connections = JoinSet::new();
    let mut stop = pin!(signalled(shutdown.clone()));
    loop {
        tokio::select! {
            () = &mut stop => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    connections.spawn(connection(stream, Arc::clone(&m), shutdown.clone()));
                }
                Err(e) if is_connection_error(&e) => {}
                // Out of file descriptors and the like: accepting again at once would
                // spin, so wait a little (the shutdown still wins).
                Err(e) => {
                    error!(error = %e, "accepting a /metrics connection");
                    tokio::select! {
                        () = &mut stop => break,
                        () = tokio::time::sleep(Duration::from_secs(1)) => {}
                    }
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    drop(listener);
    while connections.join_next().await.is_some() {}
    Ok(())
}

/// One HTTP/1.1 connection, shut down gracefully when `shutdown` turns true.
async fn connection(
    stream: tokio::net::TcpStream,
    m: Arc<Metrics>,
    shutdown: watch::Receiver<bool>,
) {
    let service = service_fn(move |req| {
        let response = respond(&m, req.method(), req.uri().path());
        async move { Ok::<_, Infallible>(response) }
    });
    let mut conn = pin!(http1::Builder::new().serve_connection(TokioIo::new(stream), service));
    let mut stop = pin!(signalled(shutdown));
    let mut stopping = false;
    loop {
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(e) = result {
                    debug!(error = %e, "a /metrics connection ended with an error");
                }
                return;
            }
            () = &mut stop, if !stopping => {
                stopping = true;
                conn.as_mut().graceful_shutdown();
            }
        }
    }
}

/// Errors of one connection (the peer went away before it was accepted), not of the
/// listener.
fn is_connection_error(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::ConnectionRefused
            | std::io::ErrorKind::ConnectionAborted
            | std::io::ErrorKind::ConnectionReset
    )
}

/// Binds `addr`.
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;
    use tokio::sync::watch;

    use crate::metrics::Metrics;

    /// A server on a free loopback port: its address, the shutdown sender, the task.
    /// One API write is on record, so /metrics has a sample to show.
    async fn start() -> (
        std::net::SocketAddr,
        watch::Sender<bool>,
        tokio::task::JoinHandle<std::io::Result<()>>,
    ) {
        let listener = super::bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = watch::channel(false);
        let metrics = Metrics::default();
        metrics.write("agentruntime", "Deployment", "apply");
        let task = tokio::spawn(super::serve(listener, Arc::new(metrics), rx));
        (addr, tx, task)
    }

    /// One request with `Connection: close`: the status code, the lower-cased head and
    /// the body.
    async fn request(
        addr: std::net::SocketAddr,
        method: &str,
        path: &str,
    ) -> (u16, String, String) {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        let req = format!("{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        stream.write_all(req.as_bytes()).await.unwrap();
        let mut raw = String::new();
        tokio::time::timeout(Duration::from_secs(5), stream.read_to_string(&mut raw))
            .await
            .unwrap()
            .unwrap();
        let (head, body) = raw.split_once("\r\n\r\n").unwrap();
        let status = head.split(' ').nth(1).unwrap().parse().unwrap();
        (status, head.to_ascii_lowercase(), body.to_owned())
    }

    #[tokio::test]
    async fn serves_metrics_and_healthz_with_their_content_types() {
        let (addr, _tx, _task) = start().await;
        let (status, head, body) = request(addr, "GET", "/healthz").await;
        assert_eq!(status, 200);
        assert!(
            head.contains("content-type: text/plain; charset=utf-8"),
            "{head}"
        );
        assert_eq!(body, "ok");

        let (status, head, body) = request(addr, "GET", "/metrics").await;
        assert_eq!(status, 200);
        assert!(
            head.contains(
                "content-type: application/openmetrics-text; version=1.0.0; charset=utf-8"
            ),
            "{head}"
        );
        assert!(
            body.contains(
                "switchboard_operator_api_writes_total{controller=\"agentruntime\",kind=\"Deployment\",verb=\"apply\"} 1"
            ),
            "{body}"
        );
        assert!(body.ends_with("# EOF\n"), "{body}");

        let (status, head, body) = request(addr, "HEAD", "/healthz").await;
        assert_eq!((status, body.as_str()), (200, ""));
        assert!(head.contains("content-length: 2"), "{head}");
    }

    #[tokio::test]
    async fn other_paths_are_not_found_and_other_methods_not_allowed() {
        let (addr, _tx, _task) = start().await;
        assert_eq!(request(addr, "GET", "/").await.0, 404);
        assert_eq!(request(addr, "GET", "/metrics/x").await.0, 404);
        let (status, head, _) = request(addr, "POST", "/metrics").await;
        assert_eq!(status, 405);
        assert!(head.contains("allow: get,head"), "{head}");
    }

    #[tokio::test]
    async fn returns_on_shutdown_although_a_keep_alive_connection_is_open() {
        let (addr, tx, task) = start().await;
        // A keep-alive connection that has had its response and now idles.
        let mut idle = TcpStream::connect(addr).await.unwrap();
        idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let mut buf = [0u8; 512];
        let n = idle.read(&mut buf).await.unwrap();
        assert!(buf[..n].starts_with(b"HTTP/1.1 200"));

        tx.send(true).unwrap();
        let result = tokio::time::timeout(Duration::from_secs(5), task).await;
        assert!(matches!(result, Ok(Ok(Ok(())))), "{result:?}");
        // The idle connection was closed, and nothing listens any more.
        assert_eq!(idle.read(&mut buf).await.unwrap(), 0);
        assert!(TcpStream::connect(addr).await.is_err());
    }
}
