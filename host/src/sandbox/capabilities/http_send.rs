//! Sends a guest's HTTP request to one address chosen and checked before:
//! the TCP connection goes to that address (no second name lookup that a
//! DNS answer changed in between could redirect), TLS verifies the
//! certificate against the *name* of the request (webpki roots), and the
//! request travels over HTTP/1.1 (hyper). Adapted from wasmtime-wasi-http's
//! `default_send_request`, which connects by name.

use http_body_util::BodyExt;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tokio::net::TcpStream;
use tokio_rustls::rustls;
use wasmtime_wasi_http::io::TokioIo;
use wasmtime_wasi_http::{Error, RequestOptions, WasiBody};

/// How long a connection may take when the guest set no timeout (the step's
/// deadline bounds the whole call anyway).
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(600);

/// The largest response body a guest can read: past it, reading fails with
/// `HTTP-response-body-size` (the step's memory and deadline bound it too).
pub const MAX_RESPONSE_BODY_BYTES: usize = 16 << 20;

/// A response, and the future that drives its connection to the end.
pub type Sent = (http::Response<WasiBody>, Box<dyn Future<Output = Result<(), Error>> + Send>);

fn tls_config() -> Arc<rustls::ClientConfig> {
    static CONFIG: OnceLock<Arc<rustls::ClientConfig>> = OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let roots = rustls::RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.into() };
            // ring, named: whatever else in the process enables another provider.
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let config = rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .expect("ring supports the default protocol versions")
                .with_root_certificates(roots)
                .with_no_client_auth();
            Arc::new(config)
        })
        .clone()
}

trait Stream: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static {}
impl<T> Stream for T where T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static {}

/// Connects to the first of `addresses` that accepts, in order.
async fn connect(addresses: &[SocketAddr], timeout: Duration) -> Result<TcpStream, Error> {
    let mut last = Error::DestinationNotFound;
    for address in addresses {
        match tokio::time::timeout(timeout, TcpStream::connect(address)).await {
            Ok(Ok(stream)) => return Ok(stream),
            Ok(Err(error)) => last = Error::Connect(error),
            Err(_) => last = Error::ConnectionTimeout,
        }
    }
    Err(last)
}

/// Sends `request` to the first of `addresses` that accepts a connection;
/// `server_name` (the request's host) is what TLS verifies when `tls`.
pub async fn send_to(
    mut request: http::Request<WasiBody>,
    options: Option<RequestOptions>,
    addresses: &[SocketAddr],
    server_name: &str,
    tls: bool,
) -> Result<Sent, Error> {
    let connect_timeout = options.and_then(|o| o.connect_timeout).unwrap_or(DEFAULT_TIMEOUT);
    let first_byte_timeout = options.and_then(|o| o.first_byte_timeout).unwrap_or(DEFAULT_TIMEOUT);
    let tcp = connect(addresses, connect_timeout).await?;
    let stream: Box<dyn Stream> = if tls {
        let name = rustls::pki_types::ServerName::try_from(server_name.to_string())?;
        let connector = tokio_rustls::TlsConnector::from(tls_config());
        match tokio::time::timeout(connect_timeout, connector.connect(name, tcp)).await {
            Ok(stream) => Box::new(stream.map_err(Error::Tls)?),
            Err(_) => return Err(Error::ConnectionTimeout),
        }
    } else {
        Box::new(tcp)
    };
    let (mut sender, connection) =
        tokio::time::timeout(connect_timeout, hyper::client::conn::http1::handshake(TokioIo::new(stream)))
            .await
            .map_err(|_| Error::ConnectionTimeout)??;
    // The request line carries only the path: the authority is in the Host
    // header, as to any server that is not a proxy.
    let path = request.uri().path_and_query().map_or("/", |path| path.as_str()).to_string();
    *request.uri_mut() = http::Uri::builder().path_and_query(path).build().map_err(|_| Error::HttpRequestUriInvalid)?;
    // The connection runs beside the request until the response body ends.
    let connection = tokio::spawn(connection);
    let response = tokio::time::timeout(first_byte_timeout, sender.send_request(request))
        .await
        .map_err(|_| Error::ConnectionReadTimeout)??;
    let response = response.map(|body| {
        http_body_util::Limited::new(body, MAX_RESPONSE_BODY_BYTES)
            .map_err(|error| match error.downcast::<hyper::Error>() {
                Ok(error) => Error::from(*error),
                Err(_) => Error::HttpResponseBodySize(Some(MAX_RESPONSE_BODY_BYTES as u64)),
            })
            .boxed_unsync()
    });
    let driven = async move {
        match connection.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(error)) => Err(Error::from(error)),
            Err(_) => Err(Error::ConnectionTerminated),
        }
    };
    Ok((response, Box::new(driven)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A server on loopback answering one request with 200 and the request head.
    async fn echo_head_server() -> (SocketAddr, tokio::task::JoinHandle<String>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let served = tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.unwrap();
            let mut head = Vec::new();
            let mut buffer = [0u8; 1024];
            while !head.windows(4).any(|window| window == b"\r\n\r\n") {
                let read = stream.read(&mut buffer).await.unwrap();
                head.extend_from_slice(&buffer[..read]);
            }
            stream.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok").await.unwrap();
            String::from_utf8_lossy(&head).to_string()
        });
        (address, served)
    }

    fn request(uri: &str) -> http::Request<WasiBody> {
        let body = http_body_util::Empty::<axum::body::Bytes>::new().map_err(|never| match never {}).boxed_unsync();
        http::Request::builder().uri(uri).header("host", "pinned.invalid").body(body).unwrap()
    }

    #[tokio::test]
    async fn the_connection_goes_to_the_checked_address_never_to_a_new_lookup() {
        let (address, served) = echo_head_server().await;
        // `pinned.invalid` resolves nowhere (RFC 6761): had the name been
        // looked up again, the request could not have been sent.
        let unreachable: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let (response, driven) =
            send_to(request("http://pinned.invalid/path?q=1"), None, &[unreachable, address], "pinned.invalid", false)
                .await
                .unwrap();
        assert_eq!(response.status(), 200);
        let body = response.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&body[..], b"ok");
        let head = served.await.unwrap();
        assert!(head.starts_with("GET /path?q=1 HTTP/1.1\r\n"), "origin form, not the absolute URI: {head}");
        assert!(head.to_ascii_lowercase().contains("host: pinned.invalid"), "{head}");
        let _ = Box::into_pin(driven).await;
    }

    #[tokio::test]
    async fn a_response_body_past_the_limit_fails_reading() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.unwrap();
            let mut buffer = [0u8; 1024];
            let _ = stream.read(&mut buffer).await;
            let size = MAX_RESPONSE_BODY_BYTES + 1;
            let head = format!("HTTP/1.1 200 OK\r\ncontent-length: {size}\r\nconnection: close\r\n\r\n");
            stream.write_all(head.as_bytes()).await.unwrap();
            let _ = stream.write_all(&vec![b'x'; size]).await;
        });
        let (response, _driven) =
            send_to(request("http://pinned.invalid/big"), None, &[address], "pinned.invalid", false).await.unwrap();
        let error = response.into_body().collect().await.err();
        assert!(matches!(error, Some(Error::HttpResponseBodySize(_))), "{error:?}");
    }

    #[tokio::test]
    async fn no_address_accepting_is_a_connection_error() {
        let refused: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let error = send_to(request("http://pinned.invalid/"), None, &[refused], "pinned.invalid", false).await.err();
        assert!(matches!(error, Some(Error::Connect(_))), "{error:?}");
    }
}
