//! A bench's HTTP/1.1 client: one kept-alive connection to a `stepwise
//! serve` process started by the bench, requests one after another (hyper).

use anyhow::{Context, Result};
use axum::body::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use wasmtime_wasi_http::io::TokioIo;

/// How long one request may take, its answer's body included.
const ANSWER_WITHIN: std::time::Duration = std::time::Duration::from_secs(60);

/// One connection to a server.
pub(super) struct Connection {
    sender: SendRequest<Full<Bytes>>,
    address: String,
}

impl Connection {
    /// Connects to `address` (`host:port`).
    pub(super) async fn open(address: &str) -> Result<Self> {
        let stream =
            tokio::net::TcpStream::connect(address).await.with_context(|| format!("connecting to {address}"))?;
        stream.set_nodelay(true)?;
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(connection);
        Ok(Self { sender, address: address.to_string() })
    }

    /// GETs `path`, with a bearer token or none; the status and the body.
    pub(super) async fn get(&mut self, path: &str, token: Option<&str>) -> Result<(u16, Bytes)> {
        let mut request = http::Request::get(path).header(http::header::HOST, &self.address);
        if let Some(token) = token {
            request = request.header(http::header::AUTHORIZATION, format!("Bearer {token}"));
        }
        self.send(request.body(Full::new(Bytes::new()))?).await
    }

    /// POSTs a JSON body to `path` with a bearer token; the status and the body.
    pub(super) async fn post(&mut self, path: &str, token: &str, json: &'static [u8]) -> Result<(u16, Bytes)> {
        let request = http::Request::post(path)
            .header(http::header::HOST, &self.address)
            .header(http::header::AUTHORIZATION, format!("Bearer {token}"))
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from_static(json)))?;
        self.send(request).await
    }

    async fn send(&mut self, request: http::Request<Full<Bytes>>) -> Result<(u16, Bytes)> {
        let path = request.uri().to_string();
        let exchange = async {
            self.sender.ready().await?;
            let response = self.sender.send_request(request).await?;
            let status = response.status().as_u16();
            let body = response.into_body().collect().await?.to_bytes();
            Ok::<_, anyhow::Error>((status, body))
        };
        tokio::time::timeout(ANSWER_WITHIN, exchange)
            .await
            .with_context(|| format!("{} did not answer {path} within {ANSWER_WITHIN:?}", self.address))?
    }
}
