//! Limits on new box identities, per address and per network prefix per hour.
//!
//! A key costs nothing to make, so whoever may join at all could otherwise
//! join as many boxes as they like, each out-ranking real ones on what it
//! claims. Every admission of an identity the entrance does not know yet
//! (a redeemed invitation, or a new key under a join token) takes a token
//! from two hourly buckets: its address (IPv4 address, IPv6 /64) and its
//! prefix (IPv4 /24, IPv6 /48), so neither one household nor a rented block of
//! addresses makes a crowd. Known boxes reconnecting are never counted.
//!
//! The buckets live in this entrance's memory: entrances sharing a store each
//! keep their own, so an attacker spreading over `n` entrances gets `n` times
//! the budget, still a small number an hour.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::admission::address_key;
use crate::ratelimit::Limiter;

/// How long after one console event about an address the next is held back.
const EVENT_EVERY: Duration = Duration::from_secs(3600);

/// The network an address belongs to for the prefix limit: IPv4 /24, IPv6 /48.
pub fn prefix_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V4(v4) => IpAddr::V4(Ipv4Addr::from(u32::from(v4) & 0xffff_ff00)),
        IpAddr::V6(v6) => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & !((1u128 << 80) - 1))),
    }
}

/// A new identity refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    /// `"address"` or `"prefix"`.
    pub scope: &'static str,
    /// The address or prefix that ran out.
    pub key: IpAddr,
    pub per_hour: u32,
    /// Whether this is the first refusal of the key within [`EVENT_EVERY`],
    /// the one worth a console event.
    pub newsworthy: bool,
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let what = if self.scope == "prefix" {
            "network"
        } else {
            "address"
        };
        write!(
            f,
            "too many new boxes from your {what} ({}): at most {} an hour; try again later",
            self.key, self.per_hour
        )
    }
}

#[derive(Debug)]
pub struct Newcomers {
    per_address: Option<(Limiter, u32)>,
    per_prefix: Option<(Limiter, u32)>,
    reported: Mutex<HashMap<IpAddr, Instant>>,
}

impl Newcomers {
    /// 0 switches a limit off.
    pub fn new(per_address: u32, per_prefix: u32) -> Newcomers {
        Newcomers {
            per_address: Limiter::per_hour(per_address).map(|l| (l, per_address)),
            per_prefix: Limiter::per_hour(per_prefix).map(|l| (l, per_prefix)),
            reported: Mutex::new(HashMap::new()),
        }
    }

    /// Counts one new identity from `ip`, or says why it is refused.
    pub fn admit(&self, ip: IpAddr) -> Result<(), Refused> {
        for (scope, limit, key) in [
            ("address", &self.per_address, address_key(ip)),
            ("prefix", &self.per_prefix, prefix_key(ip)),
        ] {
            let Some((limiter, per_hour)) = limit else {
                continue;
            };
            if !limiter.check(&key) {
                return Err(Refused {
                    scope,
                    key,
                    per_hour: *per_hour,
                    newsworthy: self.first_report(key),
                });
            }
        }
        Ok(())
    }

    fn first_report(&self, key: IpAddr) -> bool {
        let mut reported = self.reported.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        if reported.len() >= crate::ratelimit::MAX_TRACKED {
            reported.retain(|_, at| now.duration_since(*at) < EVENT_EVERY);
        }
        match reported.get(&key) {
            Some(at) if now.duration_since(*at) < EVENT_EVERY => false,
            _ => {
                if reported.len() < crate::ratelimit::MAX_TRACKED {
                    reported.insert(key, now);
                }
                true
            }
        }
    }

    /// Forgets full buckets and old reports (the sweep calls it now and then).
    pub fn prune(&self) {
        for (name, limit) in [
            ("new_boxes_per_address", &self.per_address),
            ("new_boxes_per_prefix", &self.per_prefix),
        ] {
            if let Some((limiter, _)) = limit {
                limiter.prune(name);
            }
        }
        let now = Instant::now();
        self.reported
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|_, at| now.duration_since(*at) < EVENT_EVERY);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn prefixes_are_a_slash_24_and_a_slash_48() {
        assert_eq!(prefix_key(ip("203.0.113.77")), ip("203.0.113.0"));
        assert_eq!(prefix_key(ip("::ffff:203.0.113.77")), ip("203.0.113.0"));
        assert_eq!(prefix_key(ip("2001:db8:1:2:3::4")), ip("2001:db8:1::"));
    }

    #[test]
    fn an_address_gets_its_hourly_few_and_a_prefix_its_hourly_more() {
        let n = Newcomers::new(2, 3);
        assert!(n.admit(ip("198.51.100.1")).is_ok());
        assert!(n.admit(ip("198.51.100.1")).is_ok());
        let refused = n.admit(ip("198.51.100.1")).unwrap_err();
        assert_eq!(refused.scope, "address");
        assert!(refused.newsworthy);
        // Said once an hour, not at every attempt.
        assert!(!n.admit(ip("198.51.100.1")).unwrap_err().newsworthy);
        // A neighbour has its own address budget but shares the prefix's.
        assert!(n.admit(ip("198.51.100.2")).is_ok());
        assert_eq!(n.admit(ip("198.51.100.3")).unwrap_err().scope, "prefix");
        // Another network is untouched.
        assert!(n.admit(ip("192.0.2.1")).is_ok());
    }

    #[test]
    fn zero_switches_a_limit_off() {
        let n = Newcomers::new(0, 0);
        for _ in 0..100 {
            assert!(n.admit(ip("198.51.100.1")).is_ok());
        }
    }
}
