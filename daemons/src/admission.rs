//! Which connections a listener takes: at most so many in total, and so many
//! from one address, so that one client (or one botnet member) cannot hold all
//! of a daemon's file descriptors and leave none for its boxes, publishers and
//! viewers. Decided at TCP accept, before a TLS handshake or a byte of HTTP.
//!
//! Plain state, no I/O: [`Admission::admit`] hands out a [`Slot`] that gives
//! its place back when the connection (or the WebSocket it became) is dropped.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::{Arc, Mutex};

/// Files a process needs besides its connections: the store, logs, GeoIP
/// databases, files being served or received, outgoing sessions.
pub const RESERVED_DESCRIPTORS: u64 = 256;

/// What one address counts as: an IPv4 address, or the /64 of an IPv6 one (a
/// household or a server gets a whole /64, so counting single IPv6 addresses
/// would let one client be 2^64 clients). IPv4-mapped IPv6 is IPv4.
pub fn address_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => {
            let prefix = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(Ipv6Addr::from(prefix))
        }
    }
}

/// `wanted` connections, lowered to stay [`RESERVED_DESCRIPTORS`] below the
/// descriptor limit `nofile` when there is one. Returns the cap and whether it
/// was lowered.
pub fn cap_below_descriptors(wanted: usize, nofile: Option<u64>) -> (usize, bool) {
    match nofile {
        Some(limit) => {
            let room = limit.saturating_sub(RESERVED_DESCRIPTORS).max(1);
            let room = usize::try_from(room).unwrap_or(usize::MAX);
            if room < wanted {
                (room, true)
            } else {
                (wanted, false)
            }
        }
        None => (wanted, false),
    }
}

/// Why a connection was not taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Full {
    /// The listener holds its `max_connections`.
    Total(usize),
    /// This address holds its `max_connections_per_address`.
    Address(usize),
}

impl Full {
    /// The reason code counted in `/metrics` and logged.
    pub fn code(self) -> &'static str {
        match self {
            Full::Total(_) => "connections_full",
            Full::Address(_) => "connections_per_address",
        }
    }

    pub fn reason(self) -> String {
        match self {
            Full::Total(n) => format!(
                "{n} connections open, the limit (limits.max_connections); closing new ones until some end"
            ),
            Full::Address(n) => format!(
                "{n} connections open from this address, the limit \
                 (limits.max_connections_per_address)"
            ),
        }
    }
}

/// The connection counts of one listener (or of several sharing the caps).
#[derive(Debug)]
pub struct Admission {
    max_total: usize,
    max_per_address: usize,
    /// Addresses not held to the per-address cap: the TLS proxies in front of
    /// the daemon carry many clients each.
    exempt: Vec<IpAddr>,
    // A std Mutex: every critical section is a counter update.
    state: Mutex<Counts>,
}

#[derive(Debug, Default)]
struct Counts {
    total: usize,
    per_address: HashMap<IpAddr, usize>,
}

impl Admission {
    pub fn new(max_total: usize, max_per_address: usize, exempt: &[IpAddr]) -> Arc<Admission> {
        Arc::new(Admission {
            max_total,
            max_per_address,
            exempt: exempt.iter().map(|ip| ip.to_canonical()).collect(),
            state: Mutex::new(Counts::default()),
        })
    }

    /// No caps: the tests' stand-in servers.
    pub fn unlimited() -> Arc<Admission> {
        Admission::new(usize::MAX, usize::MAX, &[])
    }

    /// A place for one more connection from `ip`, or why there is none.
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<Slot, Full> {
        let key = (!self.exempt.contains(&ip.to_canonical())).then(|| address_key(ip));
        let mut counts = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if counts.total >= self.max_total {
            return Err(Full::Total(counts.total));
        }
        if let Some(key) = key {
            let n = counts.per_address.entry(key).or_insert(0);
            if *n >= self.max_per_address {
                return Err(Full::Address(*n));
            }
            *n += 1;
        }
        counts.total += 1;
        Ok(Slot {
            admission: self.clone(),
            key,
        })
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).total
    }

    fn release(&self, key: Option<IpAddr>) {
        let mut counts = self.state.lock().unwrap_or_else(|p| p.into_inner());
        counts.total = counts.total.saturating_sub(1);
        if let Some(key) = key
            && let Some(n) = counts.per_address.get_mut(&key)
        {
            *n -= 1;
            if *n == 0 {
                // Gone addresses take no memory: the map holds only open ones.
                counts.per_address.remove(&key);
            }
        }
    }
}

/// One admitted connection's place; given back on drop.
#[derive(Debug)]
pub struct Slot {
    admission: Arc<Admission>,
    key: Option<IpAddr>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.admission.release(self.key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn one_address_cannot_take_every_place() {
        let a = Admission::new(10, 2, &[]);
        let first = a.admit(ip("192.0.2.1")).unwrap();
        let _second = a.admit(ip("192.0.2.1")).unwrap();
        assert_eq!(a.admit(ip("192.0.2.1")).unwrap_err(), Full::Address(2));
        // Others still get in.
        let _other = a.admit(ip("192.0.2.2")).unwrap();
        drop(first);
        assert!(a.admit(ip("192.0.2.1")).is_ok());
    }

    #[test]
    fn the_total_holds_across_addresses() {
        let a = Admission::new(2, 5, &[]);
        let _x = a.admit(ip("192.0.2.1")).unwrap();
        let y = a.admit(ip("192.0.2.2")).unwrap();
        assert_eq!(a.admit(ip("192.0.2.3")).unwrap_err(), Full::Total(2));
        drop(y);
        assert_eq!(a.open(), 1);
        assert!(a.admit(ip("192.0.2.3")).is_ok());
    }

    #[test]
    fn an_ipv6_64_is_one_address_and_mapped_ipv4_is_ipv4() {
        let a = Admission::new(10, 1, &[]);
        let _x = a.admit(ip("2001:db8:1:2::1")).unwrap();
        assert!(a.admit(ip("2001:db8:1:2:ffff::9")).is_err());
        assert!(a.admit(ip("2001:db8:1:3::1")).is_ok());
        let _v4 = a.admit(ip("192.0.2.7")).unwrap();
        assert!(a.admit(ip("::ffff:192.0.2.7")).is_err());
    }

    #[test]
    fn trusted_proxies_are_held_only_to_the_total() {
        let a = Admission::new(3, 1, &[ip("10.0.0.9")]);
        let _x = a.admit(ip("10.0.0.9")).unwrap();
        let _y = a.admit(ip("10.0.0.9")).unwrap();
        let _z = a.admit(ip("::ffff:10.0.0.9")).unwrap();
        assert_eq!(a.admit(ip("10.0.0.9")).unwrap_err(), Full::Total(3));
    }

    #[test]
    fn released_addresses_take_no_memory() {
        let a = Admission::new(100, 100, &[]);
        let slots: Vec<_> = (1..=50)
            .map(|n| a.admit(ip(&format!("192.0.2.{n}"))).unwrap())
            .collect();
        drop(slots);
        assert_eq!(a.open(), 0);
        assert!(a.state.lock().unwrap().per_address.is_empty());
    }

    #[test]
    fn the_cap_stays_below_the_descriptor_limit() {
        assert_eq!(cap_below_descriptors(8192, None), (8192, false));
        assert_eq!(cap_below_descriptors(8192, Some(1 << 20)), (8192, false));
        assert_eq!(cap_below_descriptors(8192, Some(1024)), (768, true));
        assert_eq!(cap_below_descriptors(8192, Some(10)), (1, true));
    }
}
