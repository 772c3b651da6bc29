//! Where an IP address leads: this machine, a private network, a link, or the
//! internet. A daemon that dials an address a stranger named (a box's
//! `DATA_URL`) must not be steered into the networks behind it.
//!
//! std's `is_global` is not stable; this names the ranges a daemon on the open
//! internet must never be made to dial, after mapping IPv4-in-IPv6 addresses
//! to IPv4 so `::ffff:10.0.0.1` is the private address it is.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// The kind of network an address belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// This machine: 127.0.0.0/8, `::1`.
    Loopback,
    /// A private or carrier-grade NAT network: 10/8, 172.16/12, 192.168/16,
    /// 100.64/10, fc00::/7.
    Private,
    /// One link: 169.254/16 (cloud metadata services live here), fe80::/10.
    LinkLocal,
    /// Nothing to dial: unspecified, broadcast, multicast, reserved.
    Unusable,
    /// Anything else.
    Public,
}

impl Scope {
    pub fn of(ip: IpAddr) -> Scope {
        match ip.to_canonical() {
            IpAddr::V4(v4) => v4_scope(v4),
            IpAddr::V6(v6) => v6_scope(v6),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Loopback => "loopback",
            Scope::Private => "private",
            Scope::LinkLocal => "link-local",
            Scope::Unusable => "unusable",
            Scope::Public => "public",
        }
    }
}

fn v4_scope(ip: Ipv4Addr) -> Scope {
    let [a, b, ..] = ip.octets();
    if ip.is_loopback() {
        Scope::Loopback
    } else if ip.is_private() || (a == 100 && (64..128).contains(&b)) {
        Scope::Private
    } else if ip.is_link_local() {
        Scope::LinkLocal
    } else if ip.is_unspecified() || ip.is_broadcast() || ip.is_multicast() || a == 0 || a >= 240 {
        Scope::Unusable
    } else {
        Scope::Public
    }
}

fn v6_scope(ip: Ipv6Addr) -> Scope {
    let first = ip.segments()[0];
    if ip.is_loopback() {
        Scope::Loopback
    } else if first & 0xfe00 == 0xfc00 {
        Scope::Private
    } else if first & 0xffc0 == 0xfe80 {
        Scope::LinkLocal
    } else if ip.is_unspecified() || ip.is_multicast() {
        Scope::Unusable
    } else {
        Scope::Public
    }
}

/// Whether two addresses are the same host: equal once canonical, or both
/// loopback (every 127.x address is this machine).
pub fn same_host(a: IpAddr, b: IpAddr) -> bool {
    let (a, b) = (a.to_canonical(), b.to_canonical());
    a == b || (a.is_loopback() && b.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scope(text: &str) -> Scope {
        Scope::of(text.parse().unwrap())
    }

    #[test]
    fn addresses_fall_in_their_networks() {
        for (ip, want) in [
            ("127.0.0.1", Scope::Loopback),
            ("127.9.9.9", Scope::Loopback),
            ("::1", Scope::Loopback),
            ("::ffff:127.0.0.1", Scope::Loopback),
            ("10.1.2.3", Scope::Private),
            ("172.16.0.1", Scope::Private),
            ("172.31.255.255", Scope::Private),
            ("192.168.1.1", Scope::Private),
            ("100.64.0.1", Scope::Private),
            ("::ffff:10.0.0.1", Scope::Private),
            ("fd00::1", Scope::Private),
            ("169.254.169.254", Scope::LinkLocal),
            ("fe80::1", Scope::LinkLocal),
            ("0.0.0.0", Scope::Unusable),
            ("0.1.2.3", Scope::Unusable),
            ("255.255.255.255", Scope::Unusable),
            ("224.0.0.1", Scope::Unusable),
            ("240.0.0.1", Scope::Unusable),
            ("::", Scope::Unusable),
            ("ff02::1", Scope::Unusable),
            ("172.32.0.1", Scope::Public),
            ("100.128.0.1", Scope::Public),
            ("203.0.113.7", Scope::Public),
            ("2001:db8::1", Scope::Public),
        ] {
            assert_eq!(scope(ip), want, "{ip}");
        }
    }

    #[test]
    fn loopback_addresses_are_one_host() {
        let ip = |t: &str| t.parse::<IpAddr>().unwrap();
        assert!(same_host(ip("127.0.0.1"), ip("127.0.0.2")));
        assert!(same_host(ip("::ffff:203.0.113.7"), ip("203.0.113.7")));
        assert!(!same_host(ip("203.0.113.7"), ip("203.0.113.8")));
        assert!(!same_host(ip("127.0.0.1"), ip("10.0.0.1")));
    }
}
