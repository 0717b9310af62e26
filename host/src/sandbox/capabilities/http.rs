//! Outgoing HTTP (`wasi:http/outgoing-handler`), only to the hosts a plugin's
//! manifest lists under `capabilities.http`. Every other request is denied
//! with `HTTP-request-denied` before any connection is made.
//!
//! The `wasi:http/types` interface is linked for every plugin (language
//! runtimes import it whatever they do); only the handler needs a grant.

use super::Capability;
use crate::sandbox::{Grants, HostState};
use http::uri::Scheme;
use std::future::Future;
use std::sync::Arc;
use wasmtime::component::Linker;
use wasmtime_wasi_http::{RequestOptions, WasiBody, WasiHttpHooks};

/// The outgoing HTTP capability.
pub struct Http;

impl Capability for Http {
    fn interface(&self) -> &'static str {
        "wasi:http/outgoing-handler"
    }

    fn is_granted(&self, grants: &Grants) -> bool {
        !grants.http_hosts.is_empty()
    }

    fn grant_hint(&self) -> &'static str {
        "`http = [\"<host>\" or \"<host>:<port>\", ...]` under [capabilities]"
    }

    fn add_to_linker(&self, linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(linker)
    }
}

/// Decides, per request, whether the plugin may reach the request's host.
pub struct HttpPolicy {
    allowed_hosts: Arc<[String]>,
}

impl HttpPolicy {
    /// A policy allowing exactly `allowed_hosts` (`host` for any port, `host:port` for one).
    pub fn new(allowed_hosts: Arc<[String]>) -> Self {
        Self { allowed_hosts }
    }

    /// Whether a request to `host` on `port` is allowed.
    pub fn allows(&self, host: &str, port: u16) -> bool {
        let host = host.trim_start_matches('[').trim_end_matches(']').to_ascii_lowercase();
        self.allowed_hosts.iter().any(|entry| match entry.rsplit_once(':') {
            Some((allowed, allowed_port)) if allowed_port.parse::<u16>().is_ok() => {
                allowed.trim_start_matches('[').trim_end_matches(']').eq_ignore_ascii_case(&host)
                    && allowed_port.parse::<u16>() == Ok(port)
            }
            _ => entry.eq_ignore_ascii_case(&host),
        })
    }
}

type SendResult = wasmtime_wasi_http::Result<(
    http::Response<WasiBody>,
    Box<dyn Future<Output = wasmtime_wasi_http::Result<()>> + Send>,
)>;

impl WasiHttpHooks for HttpPolicy {
    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        _fut: Box<dyn Future<Output = wasmtime_wasi_http::Result<()>> + Send>,
    ) -> Box<dyn Future<Output = SendResult> + Send> {
        let uri = request.uri();
        let default_port = if uri.scheme() == Some(&Scheme::HTTP) { 80 } else { 443 };
        let allowed = uri
            .authority()
            .is_some_and(|authority| self.allows(authority.host(), authority.port_u16().unwrap_or(default_port)));
        if !allowed {
            return Box::new(async { Err(wasmtime_wasi_http::Error::HttpRequestDenied) });
        }
        Box::new(async move {
            use http_body_util::BodyExt;
            let (response, io) = wasmtime_wasi_http::default_send_request(request, options).await?;
            Ok((response.map(BodyExt::boxed_unsync), Box::new(io) as Box<dyn Future<Output = _> + Send>))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_match_exactly_with_or_without_a_port() {
        let policy = HttpPolicy::new(Arc::from(vec!["api.example.com".to_string(), "127.0.0.1:8080".to_string()]));
        assert!(policy.allows("api.example.com", 443));
        assert!(policy.allows("API.example.com", 80));
        assert!(policy.allows("127.0.0.1", 8080));
        assert!(!policy.allows("127.0.0.1", 8081));
        assert!(!policy.allows("evil.example.com", 443));
        assert!(!policy.allows("api.example.com.evil.net", 443));
    }
}
