//! The client address of a request: the TCP peer, or, when the peer is a trusted proxy
//! (`limits.trusted_proxies`), the address the proxies say they forwarded for.
//!
//! Owns the parsing of `Forwarded` (RFC 7239, its `for=` parameters) and `X-Forwarded-For`,
//! and the one rule for reading them: right to left (each proxy appends the address it
//! heard from), skipping trusted hops; the first untrusted address is the client. Only a
//! trusted peer's headers are read at all, so a client that talks to the gateway directly
//! cannot choose its address. A header that cannot be read (a hop that wrote `unknown`, an
//! obfuscated name, garbage) gives the peer: never a guess, and never a bucket the sender
//! picked. Must not know the limits that use the address.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;

use axum::http::HeaderMap;
use serde::Deserialize;

/// An address range, `192.0.2.0/24`, `2001:db8::/32`, or one address (`10.0.0.5`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr {
    network: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// Whether `ip` is in the range; an IPv4-mapped IPv6 address counts as its IPv4 one.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        match (self.network, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

impl FromStr for Cidr {
    type Err = String;

    fn from_str(s: &str) -> Result<Cidr, String> {
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let network = canonical(
            addr.parse::<IpAddr>()
                .map_err(|_| format!("`{s}` is not an address or address/prefix"))?,
        );
        let max = if network.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("`{s}`: the prefix length must be 0 to {max}"))?,
        };
        Ok(Cidr { network, prefix })
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

impl<'de> Deserialize<'de> for Cidr {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Cidr, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// The client a request comes from: `peer` itself unless it is trusted; then the last
/// untrusted address of the forwarding chain (`Forwarded` when present, else
/// `X-Forwarded-For`), or the chain's first address when every hop is trusted.
pub fn client_address(peer: SocketAddr, headers: &HeaderMap, trusted: &[Cidr]) -> IpAddr {
    let peer_ip = canonical(peer.ip());
    let is_trusted = |ip: IpAddr| trusted.iter().any(|c| c.contains(ip));
    if !is_trusted(peer_ip) {
        return peer_ip;
    }
    let Some(chain) = chain(headers) else {
        return peer_ip;
    };
    let mut client = peer_ip;
    for hop in chain.iter().rev() {
        match hop {
            Some(ip) if is_trusted(*ip) => client = *ip,
            Some(ip) => return *ip,
            // A hop we cannot read: what lies left of it cannot be trusted either.
            None => return peer_ip,
        }
    }
    client
}

/// The forwarding chain, left (the first client) to right (the hop nearest us): `None` when
/// there is no header or it cannot be read as a list; `Some(None)` entries are unreadable
/// hops.
fn chain(headers: &HeaderMap) -> Option<Vec<Option<IpAddr>>> {
    let forwarded = joined(headers, "forwarded")?;
    if let Some(forwarded) = forwarded {
        return Some(
            forwarded
                .split(',')
                .map(|element| {
                    element
                        .split(';')
                        .filter_map(|pair| pair.split_once('='))
                        .find(|(k, _)| k.trim().eq_ignore_ascii_case("for"))
                        .and_then(|(_, v)| node(v.trim().trim_matches('"')))
                })
                .collect(),
        );
    }
    let xff = joined(headers, "x-forwarded-for")??;
    Some(xff.split(',').map(|e| node(e.trim())).collect())
}

/// Every line of a header, joined as one list; `Some(None)` when absent, `None` when a line
/// is not text.
fn joined(headers: &HeaderMap, name: &str) -> Option<Option<String>> {
    let mut lines = Vec::new();
    for value in headers.get_all(name) {
        lines.push(value.to_str().ok()?);
    }
    Some((!lines.is_empty()).then(|| lines.join(",")))
}

/// One node: `192.0.2.1`, `192.0.2.1:4711`, `2001:db8::1`, `[2001:db8::1]:4711`.
fn node(s: &str) -> Option<IpAddr> {
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Some(canonical(ip));
    }
    if let Ok(sa) = s.parse::<SocketAddr>() {
        return Some(canonical(sa.ip()));
    }
    let inner = s.strip_prefix('[')?.split(']').next()?;
    inner.parse::<IpAddr>().ok().map(canonical)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    fn cidrs(list: &[&str]) -> Vec<Cidr> {
        list.iter().map(|c| c.parse().unwrap()).collect()
    }

    fn peer(ip: &str) -> SocketAddr {
        SocketAddr::new(ip.parse().unwrap(), 40000)
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn ranges_parse_and_match() {
        let c: Cidr = "10.1.0.0/16".parse().unwrap();
        assert!(c.contains(ip("10.1.200.3")));
        assert!(!c.contains(ip("10.2.0.1")));
        assert!(c.contains(ip("::ffff:10.1.0.1")));
        let c: Cidr = "2001:db8::/32".parse().unwrap();
        assert!(c.contains(ip("2001:db8:5::1")));
        assert!(!c.contains(ip("10.1.0.1")));
        assert!("0.0.0.0/0".parse::<Cidr>().unwrap().contains(ip("8.8.8.8")));
        assert_eq!(
            "127.0.0.2".parse::<Cidr>().unwrap().to_string(),
            "127.0.0.2/32"
        );
        for bad in ["10.0.0.0/33", "::/129", "example.com", "10.0.0.0/x", ""] {
            assert!(bad.parse::<Cidr>().is_err(), "{bad}");
        }
    }

    #[test]
    fn an_untrusted_peer_is_the_client_whatever_it_says() {
        let h = headers(&[("x-forwarded-for", "1.2.3.4"), ("forwarded", "for=5.6.7.8")]);
        assert_eq!(client_address(peer("9.9.9.9"), &h, &[]), ip("9.9.9.9"));
        let trusted = cidrs(&["10.0.0.0/8"]);
        assert_eq!(client_address(peer("9.9.9.9"), &h, &trusted), ip("9.9.9.9"));
    }

    #[test]
    fn a_trusted_chain_is_read_right_to_left_skipping_trusted_hops() {
        let trusted = cidrs(&["10.0.0.0/8", "2001:db8::/32"]);
        // The client's own claim (6.6.6.6) is left of the first untrusted hop: ignored.
        let h = headers(&[("x-forwarded-for", "6.6.6.6, 1.2.3.4, 10.0.0.7, 10.0.0.8")]);
        assert_eq!(
            client_address(peer("10.0.0.9"), &h, &trusted),
            ip("1.2.3.4")
        );
        // Two header lines are one list.
        let h = headers(&[
            ("x-forwarded-for", "1.2.3.4"),
            ("x-forwarded-for", "10.0.0.7"),
        ]);
        assert_eq!(
            client_address(peer("10.0.0.9"), &h, &trusted),
            ip("1.2.3.4")
        );
        // Forwarded wins over X-Forwarded-For; ports and brackets are dropped.
        let h = headers(&[
            ("x-forwarded-for", "7.7.7.7"),
            (
                "forwarded",
                "for=192.0.2.60;proto=http, For=\"[2001:db8:cafe::17]:4711\", for=\"10.0.0.3:80\"",
            ),
        ]);
        assert_eq!(
            client_address(peer("10.0.0.9"), &h, &trusted),
            ip("192.0.2.60")
        );
        // Every hop trusted: the first one.
        let h = headers(&[("x-forwarded-for", "10.0.0.1, 10.0.0.2")]);
        assert_eq!(
            client_address(peer("10.0.0.9"), &h, &trusted),
            ip("10.0.0.1")
        );
        // No header: the peer.
        assert_eq!(
            client_address(peer("10.0.0.9"), &HeaderMap::new(), &trusted),
            ip("10.0.0.9")
        );
    }

    #[test]
    fn an_unreadable_hop_gives_the_peer() {
        let trusted = cidrs(&["10.0.0.0/8"]);
        for (name, value) in [
            ("x-forwarded-for", "1.2.3.4, garbage"),
            ("x-forwarded-for", "1.2.3.4, , 10.0.0.1"),
            ("forwarded", "for=unknown"),
            ("forwarded", "for=_hidden, for=10.0.0.1"),
            ("forwarded", "proto=https"),
            ("x-forwarded-for", ""),
        ] {
            let h = headers(&[(name, value)]);
            assert_eq!(
                client_address(peer("10.0.0.9"), &h, &trusted),
                ip("10.0.0.9"),
                "{name}: {value}"
            );
        }
        // A readable hop right of the garbage is the client: the garbage is not reached.
        let h = headers(&[("x-forwarded-for", "garbage, 1.2.3.4, 10.0.0.1")]);
        assert_eq!(
            client_address(peer("10.0.0.9"), &h, &trusted),
            ip("1.2.3.4")
        );
    }
}
