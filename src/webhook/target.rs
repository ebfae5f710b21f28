//! Where a webhook may connect: public addresses only, unless the endpoint
//! allows its private network. Checked on every resolved address at connect
//! time (a resolver in front of reqwest's), so a public name that resolves
//! inward (DNS rebinding, a metadata service at 169.254.169.254) is refused
//! too; literal addresses in the URL are checked at start.

use std::net::{IpAddr, SocketAddr};

use reqwest::dns::{Addrs, Name, Resolve, Resolving};

/// Why `ip` is not a public unicast address, if it is not. IPv6 forms
/// that carry an IPv4 address (IPv4-mapped, NAT64's 64:ff9b::/96, 6to4's
/// 2002::/16) are judged by the IPv4 address they reach.
pub fn not_public(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(a) => {
            let [first, second, third, _] = a.octets();
            Some(if a.is_loopback() {
                "loopback"
            } else if a.is_private() {
                "private"
            } else if a.is_link_local() {
                "link-local"
            } else if a.is_unspecified() || first == 0 {
                "unspecified (0.0.0.0/8)"
            } else if a.is_broadcast() || first >= 240 {
                "reserved (240.0.0.0/4)"
            } else if a.is_multicast() {
                "multicast"
            } else if a.is_documentation() {
                "documentation"
            } else if first == 100 && (64..128).contains(&second) {
                "shared address space (100.64.0.0/10)"
            } else if first == 198 && (18..20).contains(&second) {
                "benchmarking (198.18.0.0/15)"
            } else if first == 192 && second == 0 && third == 0 {
                "IETF protocol assignments (192.0.0.0/24)"
            } else {
                return None;
            })
        }
        IpAddr::V6(a) => {
            let s = a.segments();
            let embedded = |hi: u16, lo: u16| {
                let [a, b] = hi.to_be_bytes();
                let [c, d] = lo.to_be_bytes();
                IpAddr::V4(std::net::Ipv4Addr::new(a, b, c, d))
            };
            if let Some(v4) = a.to_ipv4_mapped() {
                return not_public(IpAddr::V4(v4));
            }
            if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
                return not_public(embedded(s[6], s[7]));
            }
            if s[0] == 0x2002 {
                return not_public(embedded(s[1], s[2]));
            }
            Some(if a.is_loopback() {
                "loopback"
            } else if a.is_unspecified() {
                "unspecified"
            } else if a.is_multicast() {
                "multicast"
            } else if a.is_unique_local() {
                "unique-local (fc00::/7)"
            } else if a.is_unicast_link_local() {
                "link-local"
            } else if s[0] == 0x64 && s[1] == 0xff9b {
                "local-use NAT64 (64:ff9b:1::/48)"
            } else {
                return None;
            })
        }
    }
}

/// Whether `ip` is a public unicast address (see [`not_public`]).
pub fn is_public(ip: IpAddr) -> bool {
    not_public(ip).is_none()
}

/// The system resolver, keeping only public addresses; a name with none
/// left fails to resolve (the attempt is a transport failure, retried and
/// finally dead-lettered like any other).
pub struct PublicOnly;

impl Resolve for PublicOnly {
    fn resolve(&self, name: Name) -> Resolving {
        let host = name.as_str().to_string();
        Box::pin(async move {
            let all: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let public: Vec<SocketAddr> =
                all.iter().copied().filter(|a| is_public(a.ip())).collect();
            if public.is_empty() {
                let example = all
                    .first()
                    .and_then(|a| Some(format!("{} is {}", a.ip(), not_public(a.ip())?)))
                    .unwrap_or_default();
                return Err(format!(
                    "{host} resolves only to non-public addresses ({} refused, {example}; allow_private_network is off)",
                    all.len()
                )
                .into());
            }
            let addrs: Addrs = Box::new(public.into_iter());
            Ok(addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::{is_public, not_public};

    #[test]
    fn inward_addresses_are_not_public() {
        for a in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "255.255.255.255",
            "::1",
            "::",
            "fd00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "64:ff9b::7f00:1",
            "64:ff9b::a9fe:a9fe",
            "64:ff9b:1::1",
            "2002:7f00:1::1",
            "2002:c0a8:101::1",
            "198.18.0.1",
            "198.19.255.255",
            "192.0.0.8",
            "240.0.0.1",
            "250.1.2.3",
        ] {
            assert!(!is_public(a.parse().unwrap()), "{a}");
            assert!(not_public(a.parse().unwrap()).is_some_and(|why| !why.is_empty()));
        }
        for a in [
            "93.184.216.34",
            "8.8.8.8",
            "2606:4700::1111",
            "64:ff9b::808:808",
            "2002:808:808::1",
            "198.20.0.1",
        ] {
            assert!(is_public(a.parse().unwrap()), "{a}");
        }
    }
}
