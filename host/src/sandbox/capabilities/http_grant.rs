//! What one entry of a manifest's `capabilities.http` grants, and the
//! decisions made from a plugin's entries: whether a request's authority is
//! granted, and whether an address a granted name resolved to may be
//! reached. Pure: no lookups, no connections.
//!
//! An entry is a host name (`api.example.com`), an IP address
//! (`10.0.0.7`, `[::1]`) or a CIDR range (`10.20.0.0/16`), each with an
//! optional `:port`; without one, only the scheme's own port (80 for
//! `http`, 443 for `https`) is granted. A name must resolve to public
//! addresses only, unless an address or range entry grants the address it
//! resolved to: naming an address or a range is how an operator allows a
//! private one.

use ipnet::IpNet;
use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

/// One `capabilities.http` entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpGrant {
    host: GrantedHost,
    port: Option<u16>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum GrantedHost {
    /// A host name, lower case.
    Name(String),
    /// One IP address.
    Address(IpAddr),
    /// A range of addresses.
    Range(IpNet),
}

impl FromStr for HttpGrant {
    type Err = String;

    fn from_str(entry: &str) -> Result<Self, String> {
        let invalid = |why: &str| {
            format!(
                "`capabilities.http` entry `{entry}` {why} (expected `host`, `host:port`, an IP address \
                 (`[v6]:port` with a port) or a CIDR range such as `10.0.0.0/8:8080`)"
            )
        };
        let (host, port) = if let Some(rest) = entry.strip_prefix('[') {
            let (host, after) = rest.split_once(']').ok_or_else(|| invalid("has no closing `]`"))?;
            match after {
                "" => (host, None),
                _ => (host, Some(after.strip_prefix(':').ok_or_else(|| invalid("has text after `]`"))?)),
            }
        } else if entry.parse::<IpAddr>().is_ok() || entry.parse::<IpNet>().is_ok() {
            (entry, None)
        } else {
            match entry.rsplit_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (entry, None),
            }
        };
        let port = match port {
            None => None,
            Some(port) => match port.parse::<u16>() {
                Ok(port) if port > 0 => Some(port),
                _ => return Err(invalid("has a port that is not 1-65535")),
            },
        };
        let host = if let Ok(address) = host.parse::<IpAddr>() {
            GrantedHost::Address(address)
        } else if let Ok(range) = host.parse::<IpNet>() {
            GrantedHost::Range(range.trunc())
        } else if is_host_name(host) {
            GrantedHost::Name(host.to_ascii_lowercase())
        } else {
            return Err(invalid("is not a host name, an IP address or a CIDR range"));
        };
        Ok(HttpGrant { host, port })
    }
}

fn is_host_name(host: &str) -> bool {
    !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

impl fmt::Display for HttpGrant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.host, self.port) {
            (GrantedHost::Name(name), None) => write!(f, "{name}"),
            (GrantedHost::Name(name), Some(port)) => write!(f, "{name}:{port}"),
            (GrantedHost::Address(IpAddr::V6(v6)), None) => write!(f, "[{v6}]"),
            (GrantedHost::Address(IpAddr::V6(v6)), Some(port)) => write!(f, "[{v6}]:{port}"),
            (GrantedHost::Address(v4), None) => write!(f, "{v4}"),
            (GrantedHost::Address(v4), Some(port)) => write!(f, "{v4}:{port}"),
            (GrantedHost::Range(range @ IpNet::V6(_)), Some(port)) => write!(f, "[{range}]:{port}"),
            (GrantedHost::Range(range), None) => write!(f, "{range}"),
            (GrantedHost::Range(range), Some(port)) => write!(f, "{range}:{port}"),
        }
    }
}

impl HttpGrant {
    /// Whether the entry names a host (rather than an address or a range,
    /// which open private networks and only an operator may grant).
    pub fn names_a_host(&self) -> bool {
        matches!(self.host, GrantedHost::Name(_))
    }

    fn port_matches(&self, port: u16, default_port: u16) -> bool {
        self.port.map_or(port == default_port, |granted| granted == port)
    }

    fn covers_address(&self, address: IpAddr) -> bool {
        let address = canonical(address);
        match &self.host {
            GrantedHost::Address(granted) => canonical(*granted) == address,
            GrantedHost::Range(range) => range.contains(&address),
            GrantedHost::Name(_) => false,
        }
    }
}

/// An IPv4-mapped IPv6 address as the IPv4 address it maps.
fn canonical(address: IpAddr) -> IpAddr {
    match address {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(address, IpAddr::V4),
        v4 => v4,
    }
}

/// What a request's authority was granted as.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Granted {
    /// An IP address the entries grant: connect to it as it is.
    Address(IpAddr),
    /// A granted host name: resolve it, and reach only addresses that
    /// [`address_allowed`] accepts.
    Name(String),
}

/// Whether a request to `host` (an authority's host, brackets allowed) on
/// `port` is granted by `grants`, and as what.
pub fn authority_granted(grants: &[HttpGrant], host: &str, port: u16, default_port: u16) -> Option<Granted> {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if let Ok(address) = host.parse::<IpAddr>() {
        let granted =
            grants.iter().any(|grant| grant.covers_address(address) && grant.port_matches(port, default_port));
        return granted.then_some(Granted::Address(address));
    }
    let host = host.to_ascii_lowercase();
    let granted = grants.iter().any(|grant| {
        matches!(&grant.host, GrantedHost::Name(name) if *name == host) && grant.port_matches(port, default_port)
    });
    granted.then_some(Granted::Name(host))
}

/// Whether an address a granted name resolved to may be reached on `port`:
/// a public address, or one an address or range entry grants for that port.
pub fn address_allowed(grants: &[HttpGrant], address: IpAddr, port: u16, default_port: u16) -> bool {
    is_public(address)
        || grants.iter().any(|grant| grant.covers_address(address) && grant.port_matches(port, default_port))
}

/// Whether `ip` is an address of the public internet: not loopback,
/// private, link-local, site-local, shared (CGNAT), unspecified, multicast,
/// broadcast, documentation, discard-only or reserved, nor an IPv6 form that
/// embeds or translates to an IPv4 address (NAT64, IPv4-compatible, 6to4,
/// Teredo).
pub fn is_public(ip: IpAddr) -> bool {
    match canonical(ip) {
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
            let segments = v6.segments();
            let first = segments[0];
            // Forms that embed or translate to an IPv4 address (NAT64,
            // IPv4-compatible, 6to4, Teredo) are refused outright: on a
            // network that routes them they can reach private IPv4 hosts.
            let translated = (first == 0x0064 && segments[1] == 0xff9b)
                || segments[..6].iter().all(|segment| *segment == 0)
                || first == 0x2002
                || (first == 0x2001 && segments[1] == 0);
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || translated
                || (first & 0xfe00) == 0xfc00
                || (first & 0xffc0) == 0xfe80
                || (first & 0xffc0) == 0xfec0
                || (first == 0x0100 && segments[1..4].iter().all(|segment| *segment == 0))
                || first == 0x2001 && segments[1] == 0x0db8)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grants(entries: &[&str]) -> Vec<HttpGrant> {
        entries.iter().map(|entry| entry.parse().unwrap()).collect()
    }

    #[test]
    fn entries_parse_and_print_back() {
        for entry in ["api.example.com", "api.example.com:8443", "10.0.0.7", "10.0.0.7:8080", "[::1]", "[::1]:8080"] {
            assert_eq!(entry.parse::<HttpGrant>().unwrap().to_string(), entry);
        }
        assert_eq!("10.20.0.0/16:8080".parse::<HttpGrant>().unwrap().to_string(), "10.20.0.0/16:8080");
        assert_eq!("10.20.3.4/16".parse::<HttpGrant>().unwrap().to_string(), "10.20.0.0/16", "truncated");
        assert_eq!("[fd00::/8]:443".parse::<HttpGrant>().unwrap().to_string(), "[fd00::/8]:443");
        assert_eq!("::1".parse::<HttpGrant>().unwrap().to_string(), "[::1]");
        assert_eq!("API.Example.com".parse::<HttpGrant>().unwrap().to_string(), "api.example.com");
        for bad in ["", "a b", "host:0", "host:99999", "host:port", "[::1", "[::1]x", "10.0.0.0/33", "-x.com", "a..b"] {
            let error = bad.parse::<HttpGrant>().unwrap_err();
            assert!(error.contains(&format!("`{bad}`")), "{bad}: {error}");
        }
    }

    #[test]
    fn hosts_match_exactly_and_a_grant_without_a_port_means_the_schemes_port() {
        let grants = grants(&["api.example.com", "127.0.0.1:8080", "10.0.0.7", "192.168.0.0/24:9000"]);
        let name = Some(Granted::Name("api.example.com".into()));
        assert_eq!(authority_granted(&grants, "api.example.com", 443, 443), name);
        assert_eq!(authority_granted(&grants, "API.example.com", 80, 80), name);
        assert_eq!(authority_granted(&grants, "api.example.com", 8443, 443), None, "no other port without naming it");
        let loopback = Some(Granted::Address("127.0.0.1".parse().unwrap()));
        assert_eq!(authority_granted(&grants, "127.0.0.1", 8080, 80), loopback);
        assert_eq!(authority_granted(&grants, "127.0.0.1", 8081, 80), None);
        assert!(authority_granted(&grants, "10.0.0.7", 80, 80).is_some());
        assert!(authority_granted(&grants, "192.168.0.99", 9000, 80).is_some(), "inside the range");
        assert_eq!(authority_granted(&grants, "192.168.1.1", 9000, 80), None, "outside the range");
        assert_eq!(authority_granted(&grants, "evil.example.com", 443, 443), None);
        assert_eq!(authority_granted(&grants, "api.example.com.evil.net", 443, 443), None);
    }

    #[test]
    fn a_name_reaches_public_addresses_and_private_ones_only_when_granted() {
        let grants = grants(&["internal.shop", "10.1.0.0/16:8080", "[::1]:9000"]);
        assert!(address_allowed(&grants, "93.184.216.34".parse().unwrap(), 443, 443));
        assert!(!address_allowed(&grants, "127.0.0.1".parse().unwrap(), 443, 443));
        assert!(!address_allowed(&grants, "169.254.169.254".parse().unwrap(), 80, 80), "cloud metadata");
        assert!(address_allowed(&grants, "10.1.2.3".parse().unwrap(), 8080, 80), "the granted range and port");
        assert!(!address_allowed(&grants, "10.1.2.3".parse().unwrap(), 80, 80), "not on another port");
        assert!(!address_allowed(&grants, "10.2.0.1".parse().unwrap(), 8080, 80));
        assert!(address_allowed(&grants, "::1".parse().unwrap(), 9000, 80));
        assert!(!address_allowed(&grants, "::1".parse().unwrap(), 9001, 80));
        assert!(!address_allowed(&grants, "::ffff:127.0.0.1".parse().unwrap(), 443, 443));
        assert!(address_allowed(&grants, "::ffff:10.1.0.1".parse().unwrap(), 8080, 80), "mapped like the v4 address");
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
            "ff02::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "64:ff9b::a00:5",
            "64:ff9b:1::a00:5",
            "::a00:5",
            "2002:a00:5::1",
            "2001:0:4136:e378:8000:63bf:3fff:fdd2",
            "fec0::1",
            "100::1",
        ] {
            assert!(!is_public(private.parse().unwrap()), "{private}");
        }
        for public in ["93.184.216.34", "8.8.8.8", "2606:4700::1111", "::ffff:8.8.8.8"] {
            assert!(is_public(public.parse().unwrap()), "{public}");
        }
    }
}
