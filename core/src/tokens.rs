//! Where a bearer token (the join token, an admin token) may travel: over TLS,
//! or within this machine. Never in clear across a network, where anyone on the
//! path reads it and replays it.
//!
//! Clients check before sending ([`may_send`]), servers before looking at one
//! ([`may_receive`]). An operator who runs plain HTTP on a network they trust can
//! opt out for the whole process with `insecure_plain_tokens = true`
//! ([`allow_plain`]), which the daemons log loudly at start.

use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};

static PLAIN_ALLOWED: AtomicBool = AtomicBool::new(false);

/// Lets every client and server of the process pass tokens over plain
/// connections off this machine (`insecure_plain_tokens`).
pub fn allow_plain(allowed: bool) {
    PLAIN_ALLOWED.store(allowed, Ordering::Relaxed);
}

fn plain_allowed() -> bool {
    PLAIN_ALLOWED.load(Ordering::Relaxed)
}

/// Whether `host` (a URL's host: a name, an IPv4 literal or a bracketed IPv6
/// literal) is this machine. Only `localhost` and loopback literals count: any
/// other name may resolve anywhere.
pub fn is_local_host(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<IpAddr>()
            .is_ok_and(|ip| ip.to_canonical().is_loopback())
}

/// Fewest characters a join or admin token may have. Guessing is throttled,
/// but a token like `a` or a word is found before any throttle matters; the
/// generated ones are 64 hex digits.
pub const MIN_TOKEN_LEN: usize = 16;

/// Why `token` is too weak to accept, if it is.
pub fn weakness(token: &str) -> Option<String> {
    let n = token.chars().count();
    (n < MIN_TOKEN_LEN).then(|| {
        format!(
            "a token must be at least {MIN_TOKEN_LEN} characters, this one has {n} \
             (make one with `openssl rand -hex 32`)"
        )
    })
}

/// Compares secrets in time independent of where they differ (the length is
/// not secret: every generated token has the same one).
pub fn matches(given: &str, expected: &str) -> bool {
    use subtle::ConstantTimeEq;
    bool::from(given.as_bytes().ct_eq(expected.as_bytes()))
}

/// Whether a client may send a token to `host` over a connection that is TLS
/// (`tls`) or not.
pub fn may_send(tls: bool, host: &str) -> bool {
    tls || is_local_host(host) || plain_allowed()
}

/// Whether a server may accept a token from `peer` over a connection that is
/// TLS (`tls`) or not. `proxies` are TLS-terminating proxies in front of it,
/// which forward in clear what crossed the network encrypted.
pub fn may_receive(tls: bool, peer: IpAddr, proxies: &[IpAddr]) -> bool {
    tls || peer.to_canonical().is_loopback()
        || crate::proxies::is_trusted(peer, proxies)
        || plain_allowed()
}

/// What a client says when it will not send a token.
pub fn refusal_to_send(url: &str) -> String {
    format!(
        "refusing to send a token in clear to {url}: use https:// or wss:// (give that daemon \
         tls_cert and tls_key, or put it behind a TLS proxy), or set insecure_plain_tokens = true \
         on a network you trust"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_and_localhost_are_this_machine() {
        for local in [
            "127.0.0.1",
            "127.0.0.5",
            "localhost",
            "LOCALHOST",
            "[::1]",
            "::ffff:127.0.0.1",
        ] {
            assert!(is_local_host(local), "{local}");
        }
        for remote in [
            "10.0.0.5",
            "192.0.2.1",
            "example.net",
            "[2001:db8::1]",
            "localhost.example.net",
        ] {
            assert!(!is_local_host(remote), "{remote}");
        }
    }

    #[test]
    fn tokens_cross_a_network_only_over_tls_unless_the_operator_opts_out() {
        assert!(may_send(true, "example.net"));
        assert!(may_send(false, "127.0.0.1"));
        assert!(!may_send(false, "example.net"));
        let lan: IpAddr = "10.0.0.5".parse().unwrap();
        let proxy: IpAddr = "10.0.0.1".parse().unwrap();
        assert!(may_receive(true, lan, &[]));
        assert!(may_receive(false, "127.0.0.9".parse().unwrap(), &[]));
        assert!(!may_receive(false, lan, &[proxy]));
        assert!(may_receive(false, proxy, &[proxy]));
        let mapped: IpAddr = "::ffff:10.0.0.1".parse().unwrap();
        assert!(may_receive(false, mapped, &[proxy]));
        assert!(may_receive(false, "::ffff:127.0.0.1".parse().unwrap(), &[]));
        assert!(!may_receive(
            false,
            "::ffff:10.0.0.5".parse().unwrap(),
            &[proxy]
        ));
    }
}
