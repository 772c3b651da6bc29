//! Rate limits per client address, so that a flood from some addresses is
//! paid for by those addresses and not turned against everyone else: session
//! handshakes (each costs the daemon a signature), TLS handshakes (each costs
//! it a key exchange), and failed credentials (each is a guess at a join or
//! admin token).
//!
//! An address is an IPv4 address or an IPv6 /64 ([`address_key`]), taken
//! through the configured `trusted_proxies` only (the caller passes the client
//! address it believes). The proxies themselves are never limited: they carry
//! many clients.
//!
//! Failed credentials work as a penalty: each failure takes a token from the
//! address's bucket; a failure that finds it empty shuts the address out of
//! every credentialed request (429, before anything is checked) until the next
//! token is due. An address therefore tests at most `failed_credentials_per_minute`
//! guesses a minute, while honest clients, which do not fail, are never slowed.
//!
//! The limiters' memory is pruned ([`RateLimits::prune`], `governor`'s
//! `retain_recent`) and bounded: beyond [`MAX_TRACKED`] addresses a limiter
//! starts over, logged, rather than grow without end under an IPv6 sweep.

use std::collections::HashMap;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::{Mutex, RwLock};
use std::time::{Duration, Instant};

use dandelion_core::config::Limits;
use governor::{DefaultKeyedRateLimiter, Quota};

use crate::admission::address_key;

/// Addresses a limiter tracks at most (about 100 bytes each).
pub const MAX_TRACKED: usize = 100_000;

/// What is limited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Handshake,
    TlsHandshake,
}

#[derive(Debug)]
pub struct RateLimits {
    handshakes: Option<Limiter>,
    tls: Option<Limiter>,
    failures: Option<Limiter>,
    /// How long an address is shut out once its failure bucket is empty.
    penalty: Duration,
    shut_out: Mutex<HashMap<IpAddr, Instant>>,
    exempt: Vec<IpAddr>,
}

/// One keyed limiter, replaceable when it must start over (governor's has no
/// reset). An RwLock: every check takes the read side; only pruning writes.
#[derive(Debug)]
pub(crate) struct Limiter {
    quota: Quota,
    inner: RwLock<DefaultKeyedRateLimiter<IpAddr>>,
}

impl Limiter {
    /// A limiter of `n` per hour with a burst of `n`; `None` (no limit) for 0.
    pub(crate) fn per_hour(n: u32) -> Option<Limiter> {
        let n = NonZeroU32::new(n)?;
        let quota = Quota::per_hour(n).allow_burst(n);
        Some(Limiter {
            quota,
            inner: RwLock::new(DefaultKeyedRateLimiter::keyed(quota)),
        })
    }

    pub(crate) fn check(&self, key: &IpAddr) -> bool {
        let inner = self.inner.read().unwrap_or_else(|p| p.into_inner());
        inner.check_key(key).is_ok()
    }

    /// Prunes, starts over when still too large, and says how many remain.
    pub(crate) fn prune(&self, name: &str) -> usize {
        let mut inner = self.inner.write().unwrap_or_else(|p| p.into_inner());
        inner.retain_recent();
        if inner.len() > MAX_TRACKED {
            tracing::warn!(
                limiter = name,
                addresses = inner.len(),
                "rate limiter over {MAX_TRACKED} addresses: starting it over"
            );
            *inner = DefaultKeyedRateLimiter::keyed(self.quota);
        }
        inner.shrink_to_fit();
        inner.len()
    }
}

fn keyed(per_minute: u32) -> Option<Limiter> {
    // 0 switches a limit off.
    let n = NonZeroU32::new(per_minute)?;
    let quota = Quota::per_minute(n).allow_burst(n);
    Some(Limiter {
        quota,
        inner: RwLock::new(DefaultKeyedRateLimiter::keyed(quota)),
    })
}

impl RateLimits {
    pub fn new(limits: &Limits, exempt: &[IpAddr]) -> RateLimits {
        let per_failure = 60.0 / f64::from(limits.failed_credentials_per_minute.max(1));
        RateLimits {
            handshakes: keyed(limits.handshakes_per_minute),
            tls: keyed(limits.tls_handshakes_per_minute),
            failures: keyed(limits.failed_credentials_per_minute),
            penalty: Duration::from_secs_f64(per_failure),
            shut_out: Mutex::new(HashMap::new()),
            exempt: exempt.iter().map(|ip| ip.to_canonical()).collect(),
        }
    }

    /// No limits: the tests' stand-in servers.
    pub fn off() -> RateLimits {
        RateLimits {
            handshakes: None,
            tls: None,
            failures: None,
            penalty: Duration::ZERO,
            shut_out: Mutex::new(HashMap::new()),
            exempt: Vec::new(),
        }
    }

    fn key(&self, ip: IpAddr) -> Option<IpAddr> {
        (!self.exempt.contains(&ip.to_canonical())).then(|| address_key(ip))
    }

    /// Whether `ip` may start one more handshake of `kind` now (and counts it).
    pub fn allow(&self, kind: Kind, ip: IpAddr) -> bool {
        let limiter = match kind {
            Kind::Handshake => &self.handshakes,
            Kind::TlsHandshake => &self.tls,
        };
        match (limiter, self.key(ip)) {
            (Some(limiter), Some(key)) => limiter.check(&key),
            _ => true,
        }
    }

    /// Counts a failed credential from `ip`; an address out of guesses is shut
    /// out of credentialed requests for a while. Returns whether it now is.
    pub fn failed(&self, ip: IpAddr) -> bool {
        let (Some(limiter), Some(key)) = (&self.failures, self.key(ip)) else {
            return false;
        };
        if limiter.check(&key) {
            return false;
        }
        let mut shut = self.shut_out.lock().unwrap_or_else(|p| p.into_inner());
        if shut.len() >= MAX_TRACKED {
            let now = Instant::now();
            shut.retain(|_, until| *until > now);
        }
        if shut.len() < MAX_TRACKED {
            shut.insert(key, Instant::now() + self.penalty);
        }
        true
    }

    /// Whether `ip` is shut out of credentialed requests now.
    pub fn shut_out(&self, ip: IpAddr) -> bool {
        let Some(key) = self.key(ip) else {
            return false;
        };
        let shut = self.shut_out.lock().unwrap_or_else(|p| p.into_inner());
        shut.get(&key).is_some_and(|until| *until > Instant::now())
    }

    /// Forgets addresses whose buckets are full again and penalties over; a
    /// limiter still over [`MAX_TRACKED`] starts over. Returns the addresses
    /// tracked afterwards.
    pub fn prune(&self) -> usize {
        let mut tracked = 0;
        for (name, limiter) in [
            ("handshakes", &self.handshakes),
            ("tls_handshakes", &self.tls),
            ("failed_credentials", &self.failures),
        ] {
            if let Some(limiter) = limiter {
                tracked += limiter.prune(name);
            }
        }
        let now = Instant::now();
        let mut shut = self.shut_out.lock().unwrap_or_else(|p| p.into_inner());
        shut.retain(|_, until| *until > now);
        shut.shrink_to_fit();
        tracked + shut.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(handshakes: u32, failures: u32) -> Limits {
        Limits {
            handshakes_per_minute: handshakes,
            failed_credentials_per_minute: failures,
            ..Limits::default()
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn a_flooding_address_is_limited_and_others_are_not() {
        let r = RateLimits::new(&limits(3, 10), &[]);
        for _ in 0..3 {
            assert!(r.allow(Kind::Handshake, ip("192.0.2.1")));
        }
        assert!(!r.allow(Kind::Handshake, ip("192.0.2.1")));
        assert!(r.allow(Kind::Handshake, ip("192.0.2.2")));
        // One IPv6 /64 is one address.
        for n in 1..=3 {
            assert!(r.allow(Kind::Handshake, ip(&format!("2001:db8::{n}"))));
        }
        assert!(!r.allow(Kind::Handshake, ip("2001:db8::ffff")));
        assert!(r.allow(Kind::Handshake, ip("2001:db8:0:1::1")));
    }

    #[test]
    fn failed_guesses_shut_an_address_out_and_honest_ones_never() {
        let r = RateLimits::new(&limits(100, 2), &[]);
        assert!(!r.failed(ip("192.0.2.1")));
        assert!(!r.failed(ip("192.0.2.1")));
        assert!(!r.shut_out(ip("192.0.2.1")));
        assert!(r.failed(ip("192.0.2.1")));
        assert!(r.shut_out(ip("192.0.2.1")));
        assert!(!r.shut_out(ip("192.0.2.2")));
    }

    #[test]
    fn trusted_proxies_and_zero_quotas_are_not_limited() {
        let r = RateLimits::new(&limits(1, 1), &[ip("10.0.0.9")]);
        for _ in 0..10 {
            assert!(r.allow(Kind::Handshake, ip("10.0.0.9")));
            assert!(!r.failed(ip("10.0.0.9")));
        }
        let off = RateLimits::new(&limits(0, 0), &[]);
        for _ in 0..10 {
            assert!(off.allow(Kind::Handshake, ip("192.0.2.1")));
            assert!(!off.failed(ip("192.0.2.1")));
        }
    }

    #[test]
    fn pruning_forgets_addresses_with_full_buckets() {
        let r = RateLimits::new(
            &Limits {
                handshakes_per_minute: 60_000,
                ..Limits::default()
            },
            &[],
        );
        for n in 0..100u32 {
            assert!(r.allow(Kind::Handshake, IpAddr::from(n.to_be_bytes())));
        }
        // At 1 000 a second every bucket is full again within a millisecond.
        let deadline = Instant::now() + Duration::from_secs(5);
        while r.prune() != 0 {
            assert!(Instant::now() < deadline, "never pruned");
        }
    }
}
