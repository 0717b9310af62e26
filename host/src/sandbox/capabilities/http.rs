//! Outgoing HTTP (`wasi:http/outgoing-handler`), only to the hosts a plugin's
//! manifest lists under `capabilities.http` (entries and their matching:
//! [`super::http_grant`]). A request to anything else is denied with
//! `HTTP-request-denied` before any lookup or connection. A listed *name*
//! is resolved once; unless every address is public or granted by an
//! address or range entry, the request fails with
//! `destination-IP-prohibited`; otherwise the connection goes to exactly
//! the addresses checked ([`super::http_send`]), so a DNS answer that
//! changes in between (rebinding) cannot redirect it.
//!
//! The `wasi:http/types` interface is linked for every plugin (language
//! runtimes import it whatever they do); only the handler needs a grant.

use super::http_grant::{address_allowed, authority_granted, Granted, HttpGrant};
use super::{http_send, Capability};
use crate::sandbox::{Grants, HostState};
use http::uri::Scheme;
use std::future::Future;
use std::net::SocketAddr;
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
        "`http = [\"<host>\" (its scheme's port) or \"<host>:<port>\", ...]` under [capabilities]"
    }

    fn add_to_linker(&self, linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(linker)
    }
}

/// Decides, per request, whether the plugin may reach the request's host,
/// connects only to addresses it checked, and gives every request the
/// step's idempotency key.
pub struct HttpPolicy {
    grants: Arc<[HttpGrant]>,
    idempotency_key: Option<http::HeaderValue>,
}

impl HttpPolicy {
    /// A policy allowing exactly `grants` (see [`super::http_grant`]).
    pub fn new(grants: Arc<[HttpGrant]>) -> Self {
        Self { grants, idempotency_key: None }
    }

    /// The same policy, sending `key` as the `Idempotency-Key` header of
    /// every request whose guest did not set one (a retried attempt sends
    /// the same key, so the remote side can apply the effect once).
    pub fn with_idempotency_key(mut self, key: &str) -> Self {
        self.idempotency_key = http::HeaderValue::from_str(key).ok();
        self
    }
}

/// The addresses a granted authority may be reached at: the granted
/// address itself, or every address its name resolves to, once, when each
/// is public or granted (one that is not refuses the request: a name that
/// points inside the network reaches nothing). The connection goes to these
/// addresses, never to a second lookup.
async fn checked_addresses(
    grants: &[HttpGrant],
    granted: Granted,
    port: u16,
    default_port: u16,
) -> Result<Vec<SocketAddr>, wasmtime_wasi_http::Error> {
    use wasmtime_wasi_http::Error;
    let name = match granted {
        Granted::Address(address) => return Ok(vec![SocketAddr::new(address, port)]),
        Granted::Name(name) => name,
    };
    let resolved: Vec<SocketAddr> = tokio::net::lookup_host((name.as_str(), port))
        .await
        .map_err(|error| Error::DnsError { rcode: Some(error.to_string()), info_code: None })?
        .collect();
    if resolved.is_empty() {
        return Err(Error::DestinationNotFound);
    }
    if resolved.iter().any(|address| !address_allowed(grants, address.ip(), port, default_port)) {
        return Err(Error::DestinationIpProhibited);
    }
    Ok(resolved)
}

type SendResult = wasmtime_wasi_http::Result<http_send::Sent>;

impl WasiHttpHooks for HttpPolicy {
    fn send_request(
        &mut self,
        mut request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        _fut: Box<dyn Future<Output = wasmtime_wasi_http::Result<()>> + Send>,
    ) -> Box<dyn Future<Output = SendResult> + Send> {
        let uri = request.uri();
        let tls = uri.scheme() != Some(&Scheme::HTTP);
        let default_port = if tls { 443 } else { 80 };
        let target = uri.authority().and_then(|authority| {
            let port = authority.port_u16().unwrap_or(default_port);
            let granted = authority_granted(&self.grants, authority.host(), port, default_port)?;
            Some((authority.host().trim_start_matches('[').trim_end_matches(']').to_string(), port, granted))
        });
        let Some((host, port, granted)) = target else {
            return Box::new(async { Err(wasmtime_wasi_http::Error::HttpRequestDenied) });
        };
        if let Some(key) = &self.idempotency_key {
            request.headers_mut().entry("idempotency-key").or_insert_with(|| key.clone());
        }
        let grants = self.grants.clone();
        Box::new(async move {
            let addresses = checked_addresses(&grants, granted, port, default_port).await?;
            http_send::send_to(request, options, &addresses, &host, tls).await
        })
    }
}
