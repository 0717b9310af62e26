//! Outgoing HTTP (`wasi:http/outgoing-handler`), only to the hosts a plugin's
//! manifest lists under `capabilities.http`: `host:port`, or `host` for the
//! scheme's own port. A listed *name* must resolve to public addresses only
//! (a name pointing at loopback, a private range or link-local cloud
//! metadata reaches nothing); a listed IP address is reached as listed.
//! Every other request is denied with `HTTP-request-denied` before any
//! connection is made.
//!
//! The `wasi:http/types` interface is linked for every plugin (language
//! runtimes import it whatever they do); only the handler needs a grant.

use super::Capability;
use crate::sandbox::{Grants, HostState};
use http::uri::Scheme;
use std::future::Future;
use std::net::IpAddr;
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
/// and gives every request the step's idempotency key.
pub struct HttpPolicy {
    allowed_hosts: Arc<[String]>,
    idempotency_key: Option<http::HeaderValue>,
}

/// What a grant entry that matched a request allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reach {
    /// The entry names this IP address itself: it may be any address.
    Address,
    /// The entry names a host: it must resolve to public addresses only, so
    /// that a listed name pointing at loopback, a private range or a
    /// link-local address (cloud metadata) reaches nothing.
    PublicOnly,
}

impl HttpPolicy {
    /// A policy allowing exactly `allowed_hosts`: `host:port` for that port,
    /// `host` for the scheme's own port (80 for http, 443 for https).
    pub fn new(allowed_hosts: Arc<[String]>) -> Self {
        Self { allowed_hosts, idempotency_key: None }
    }

    /// The same policy, sending `key` as the `Idempotency-Key` header of
    /// every request whose guest did not set one (a retried attempt sends
    /// the same key, so the remote side can apply the effect once).
    pub fn with_idempotency_key(mut self, key: &str) -> Self {
        self.idempotency_key = http::HeaderValue::from_str(key).ok();
        self
    }

    /// Whether a request to `host` on `port` is allowed (`default_port` is
    /// the scheme's), and what it may reach.
    pub fn allows(&self, host: &str, port: u16, default_port: u16) -> Option<Reach> {
        let host = unbracket(host).to_ascii_lowercase();
        let matched = self.allowed_hosts.iter().any(|entry| match entry.rsplit_once(':') {
            Some((allowed, allowed_port)) if allowed_port.parse::<u16>().is_ok() => {
                unbracket(allowed).eq_ignore_ascii_case(&host) && allowed_port.parse::<u16>() == Ok(port)
            }
            _ => unbracket(entry).eq_ignore_ascii_case(&host) && port == default_port,
        });
        match (matched, host.parse::<IpAddr>()) {
            (false, _) => None,
            (true, Ok(_)) => Some(Reach::Address),
            (true, Err(_)) => Some(Reach::PublicOnly),
        }
    }
}

fn unbracket(host: &str) -> &str {
    host.trim_start_matches('[').trim_end_matches(']')
}

/// Whether `ip` is an address of the public internet: not loopback,
/// private, link-local, shared (CGNAT), unspecified, multicast, broadcast,
/// documentation or reserved.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            !(v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_multicast()
                || v4.is_broadcast()
                || v4.is_documentation()
                || a == 0
                || (a == 100 && (64..128).contains(&b))
                || (a == 198 && (18..20).contains(&b))
                || a >= 240)
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public(IpAddr::V4(v4));
            }
            let first = v6.segments()[0];
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (first & 0xfe00) == 0xfc00
                || (first & 0xffc0) == 0xfe80
                || first == 0x2001 && v6.segments()[1] == 0x0db8)
        }
    }
}

type SendResult = wasmtime_wasi_http::Result<(
    http::Response<WasiBody>,
    Box<dyn Future<Output = wasmtime_wasi_http::Result<()>> + Send>,
)>;

impl WasiHttpHooks for HttpPolicy {
    fn send_request(
        &mut self,
        mut request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        _fut: Box<dyn Future<Output = wasmtime_wasi_http::Result<()>> + Send>,
    ) -> Box<dyn Future<Output = SendResult> + Send> {
        let uri = request.uri();
        let default_port = if uri.scheme() == Some(&Scheme::HTTP) { 80 } else { 443 };
        let target = uri.authority().and_then(|authority| {
            let port = authority.port_u16().unwrap_or(default_port);
            let reach = self.allows(authority.host(), port, default_port)?;
            Some((unbracket(authority.host()).to_string(), port, reach))
        });
        let Some((host, port, reach)) = target else {
            return Box::new(async { Err(wasmtime_wasi_http::Error::HttpRequestDenied) });
        };
        if let Some(key) = &self.idempotency_key {
            request.headers_mut().entry("idempotency-key").or_insert_with(|| key.clone());
        }
        Box::new(async move {
            use http_body_util::BodyExt;
            if reach == Reach::PublicOnly {
                // Resolved here and refused unless every address is public.
                // The connection resolves again: a name that changes its
                // answer in between (DNS rebinding) is not covered yet.
                let addresses = tokio::net::lookup_host((host.as_str(), port)).await;
                if let Ok(addresses) = addresses {
                    if addresses.into_iter().any(|address| !is_public(address.ip())) {
                        return Err(wasmtime_wasi_http::Error::HttpRequestDenied);
                    }
                }
            }
            let (response, io) = wasmtime_wasi_http::default_send_request(request, options).await?;
            Ok((response.map(BodyExt::boxed_unsync), Box::new(io) as Box<dyn Future<Output = _> + Send>))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_match_exactly_and_a_grant_without_a_port_means_the_schemes_port() {
        let entries = ["api.example.com", "127.0.0.1:8080", "10.0.0.7"].map(String::from);
        let policy = HttpPolicy::new(Arc::from(entries.to_vec()));
        assert_eq!(policy.allows("api.example.com", 443, 443), Some(Reach::PublicOnly));
        assert_eq!(policy.allows("API.example.com", 80, 80), Some(Reach::PublicOnly));
        assert_eq!(policy.allows("api.example.com", 8443, 443), None, "no other port without naming it");
        assert_eq!(policy.allows("127.0.0.1", 8080, 80), Some(Reach::Address));
        assert_eq!(policy.allows("127.0.0.1", 8081, 80), None);
        assert_eq!(policy.allows("10.0.0.7", 80, 80), Some(Reach::Address));
        assert_eq!(policy.allows("evil.example.com", 443, 443), None);
        assert_eq!(policy.allows("api.example.com.evil.net", 443, 443), None);
    }

    #[test]
    fn only_addresses_of_the_public_internet_are_public() {
        for private in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "0.0.0.0",
            "100.64.0.1",
            "224.0.0.1",
            "255.255.255.255",
            "::1",
            "::",
            "fd00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
        ] {
            assert!(!is_public(private.parse().unwrap()), "{private}");
        }
        for public in ["93.184.216.34", "8.8.8.8", "2606:4700::1111", "::ffff:8.8.8.8"] {
            assert!(is_public(public.parse().unwrap()), "{public}");
        }
    }
}
