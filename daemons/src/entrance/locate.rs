//! Where a box is: the address it connects from (believing `X-Forwarded-For`
//! only from configured proxies), looked up in the GeoIP database; the box's own
//! `GEOIP` only when the entrance has no answer. An operator's override, kept in
//! the store, wins over both (see `book::Book::set_location`).

use std::net::IpAddr;

use axum::http::HeaderMap;
use dandelion_core::geo::GeoDb;
use dandelion_core::protocol::GeoIp;

/// The peer's address: the socket's, or — when the socket is a trusted proxy —
/// the nearest address in `X-Forwarded-For` that is not itself a trusted proxy.
pub fn observed_ip(peer: IpAddr, headers: &HeaderMap, trusted: &[IpAddr]) -> IpAddr {
    if !trusted.contains(&peer) {
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
        .find(|a| !trusted.contains(a))
        .unwrap_or(peer)
}

/// The location to record and where it came from (`geoip` or `box`).
pub fn resolve(db: Option<&GeoDb>, ip: IpAddr, own: Option<&GeoIp>) -> (GeoIp, &'static str) {
    if let Some(found) = db.and_then(|db| db.lookup(ip)) {
        return (found, "geoip");
    }
    let mut geo = own.cloned().unwrap_or_default();
    geo.ip.get_or_insert_with(|| ip.to_string());
    (geo, "box")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forwarded_for_is_believed_only_from_trusted_proxies() {
        let proxy: IpAddr = "10.0.0.1".parse().unwrap();
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", "203.0.113.9, 10.0.0.2".parse().unwrap());
        let other: IpAddr = "198.51.100.1".parse().unwrap();
        assert_eq!(observed_ip(other, &h, &[proxy]), other);
        let two: IpAddr = "10.0.0.2".parse().unwrap();
        assert_eq!(
            observed_ip(proxy, &h, &[proxy, two]),
            "203.0.113.9".parse::<IpAddr>().unwrap()
        );
        assert_eq!(observed_ip(proxy, &HeaderMap::new(), &[proxy]), proxy);
    }

    #[test]
    fn without_a_database_the_boxs_own_location_is_used() {
        let own = GeoIp {
            city: Some("Taipei".into()),
            ..GeoIp::default()
        };
        let ip: IpAddr = "127.0.0.9".parse().unwrap();
        let (geo, source) = resolve(None, ip, Some(&own));
        assert_eq!(
            (geo.city.as_deref(), geo.ip.as_deref(), source),
            (Some("Taipei"), Some("127.0.0.9"), "box")
        );
    }
}
