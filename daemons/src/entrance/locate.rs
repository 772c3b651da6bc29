//! Where a box is: the address it connects from (believing `X-Forwarded-For`
//! only from configured proxies: `dandelion_core::proxies`), looked up in the GeoIP database; the box's own
//! `GEOIP` only when the entrance has no answer. An operator's override, kept in
//! the store, wins over both (see `book::Book::set_location`).

use std::net::IpAddr;

use dandelion_core::geo::GeoDb;
use dandelion_core::protocol::GeoIp;

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
