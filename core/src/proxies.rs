//! What a TLS-terminating proxy in front of a daemon (its role's
//! `trusted_proxies`) is believed about: the client's address
//! (`X-Forwarded-For`) and whether the client came over TLS
//! (`X-Forwarded-Proto`). From anyone else both headers are ignored: a client
//! could write either.

use std::net::IpAddr;

use http::HeaderMap;

/// Whether `peer` is one of `proxies`. A dual-stack listener sees IPv4 peers as
/// `::ffff:a.b.c.d`, so both sides are compared in canonical form.
pub fn is_trusted(peer: IpAddr, proxies: &[IpAddr]) -> bool {
    let peer = peer.to_canonical();
    proxies.iter().any(|p| p.to_canonical() == peer)
}

/// The client's address: the socket's, or — when the socket is a trusted proxy
/// — the nearest address in `X-Forwarded-For` that is not itself a trusted
/// proxy (earlier entries were written by whoever reached the first proxy).
pub fn client_ip(peer: IpAddr, headers: &HeaderMap, proxies: &[IpAddr]) -> IpAddr {
    if !is_trusted(peer, proxies) {
        return peer;
    }
    let forwarded = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|a| a.trim().parse::<IpAddr>().ok())
        .collect::<Vec<_>>();
    forwarded
        .into_iter()
        .rev()
        .find(|a| !is_trusted(*a, proxies))
        .map(|a| a.to_canonical())
        .unwrap_or(peer)
}

/// Whether the client reached us over TLS: this connection is TLS (`tls`), or a
/// trusted proxy says in `X-Forwarded-Proto` that it ended TLS for the client.
/// Of several values the last counts: a proxy that appends rather than replaces
/// puts its own there.
pub fn client_used_tls(tls: bool, peer: IpAddr, headers: &HeaderMap, proxies: &[IpAddr]) -> bool {
    tls || (is_trusted(peer, proxies)
        && headers
            .get_all("x-forwarded-proto")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .next_back()
            .is_some_and(|proto| proto.trim().eq_ignore_ascii_case("https")))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn forwarded_for_is_believed_only_from_trusted_proxies() {
        let proxy = ip("10.0.0.1");
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", "203.0.113.9, 10.0.0.2".parse().unwrap());
        let other = ip("198.51.100.1");
        assert_eq!(client_ip(other, &h, &[proxy]), other);
        assert_eq!(
            client_ip(proxy, &h, &[proxy, ip("10.0.0.2")]),
            ip("203.0.113.9")
        );
        assert_eq!(client_ip(proxy, &HeaderMap::new(), &[proxy]), proxy);
        // The proxy as a dual-stack listener sees it.
        assert_eq!(
            client_ip(ip("::ffff:10.0.0.1"), &h, &[proxy, ip("10.0.0.2")]),
            ip("203.0.113.9")
        );
    }

    #[test]
    fn forwarded_proto_is_believed_only_from_trusted_proxies() {
        let proxy = ip("10.0.0.1");
        let mut https = HeaderMap::new();
        https.insert("x-forwarded-proto", "https".parse().unwrap());
        assert!(client_used_tls(false, proxy, &https, &[proxy]));
        assert!(client_used_tls(
            false,
            ip("::ffff:10.0.0.1"),
            &https,
            &[proxy]
        ));
        assert!(!client_used_tls(
            false,
            ip("198.51.100.1"),
            &https,
            &[proxy]
        ));
        assert!(!client_used_tls(false, proxy, &HeaderMap::new(), &[proxy]));
        assert!(client_used_tls(
            true,
            ip("198.51.100.1"),
            &HeaderMap::new(),
            &[]
        ));
        // A client's own value, appended to by the proxy, does not count.
        let mut appended = HeaderMap::new();
        appended.insert("x-forwarded-proto", "https, http".parse().unwrap());
        assert!(!client_used_tls(false, proxy, &appended, &[proxy]));
    }
}
