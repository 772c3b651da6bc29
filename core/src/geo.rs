//! Locating peers by address: GeoLite2-City (and optionally GeoLite2-ASN)
//! compatible `.mmdb` databases, read with `maxminddb`, mapped onto the wire's
//! [`GeoIp`] fields (`COUNTRY`, `CITY`, `REGION`, `LOC`, `ORG`).
//!
//! The entrance locates boxes itself rather than trusting what a box says about
//! its own location: a household device's self-report is only a fallback. The
//! database files are read into memory once (no `mmap`, which needs `unsafe`);
//! a GeoLite2-City file is about 60 MB.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use maxminddb::Reader;
use maxminddb::geoip2;

use crate::protocol::GeoIp;

#[derive(Debug, thiserror::Error)]
pub enum GeoError {
    #[error("cannot open GeoIP database {path}: {cause}")]
    Open { path: PathBuf, cause: String },
}

/// Mean Earth radius in km, for [`haversine_km`].
const EARTH_RADIUS_KM: f64 = 6371.0;

/// Great-circle distance between two `(latitude, longitude)` points in km.
pub fn haversine_km(a: (f64, f64), b: (f64, f64)) -> f64 {
    let (lat1, lon1) = (a.0.to_radians(), a.1.to_radians());
    let (lat2, lon2) = (b.0.to_radians(), b.1.to_radians());
    let h = ((lat2 - lat1) / 2.0).sin().powi(2)
        + lat1.cos() * lat2.cos() * ((lon2 - lon1) / 2.0).sin().powi(2);
    2.0 * EARTH_RADIUS_KM * h.sqrt().min(1.0).asin()
}

/// The databases an entrance was configured with.
pub struct GeoDb {
    city: Reader<Vec<u8>>,
    asn: Option<Reader<Vec<u8>>>,
}

impl std::fmt::Debug for GeoDb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GeoDb")
            .field("city", &self.city.metadata().database_type)
            .field(
                "asn",
                &self.asn.as_ref().map(|r| &r.metadata().database_type),
            )
            .finish()
    }
}

fn open(path: &Path) -> Result<Reader<Vec<u8>>, GeoError> {
    Reader::open_readfile(path).map_err(|e| GeoError::Open {
        path: path.to_owned(),
        cause: e.to_string(),
    })
}

impl GeoDb {
    /// Opens a city database and, when given, an ASN database.
    pub fn open(city: &Path, asn: Option<&Path>) -> Result<GeoDb, GeoError> {
        Ok(GeoDb {
            city: open(city)?,
            asn: asn.map(open).transpose()?,
        })
    }

    /// Where `ip` is, or `None` when the database does not know it. Lookup
    /// errors (a corrupt record) count as unknown: a location is a nicety, and
    /// a box must not be refused for it.
    pub fn lookup(&self, ip: IpAddr) -> Option<GeoIp> {
        let decoded = self
            .city
            .lookup(ip)
            .and_then(|r| r.decode::<geoip2::City<'_>>());
        let city = match decoded {
            Ok(city) => city?,
            Err(e) => {
                // A record of unexpected shape (a non-MaxMind writer): say so once
                // per lookup at debug, where an operator chasing "no city" looks.
                tracing::debug!(%ip, "GeoIP record does not decode as a city: {e}");
                return None;
            }
        };
        let mut geo = GeoIp {
            ip: Some(ip.to_string()),
            country: city.country.iso_code.map(str::to_owned),
            city: city.city.names.english.map(str::to_owned),
            region: city
                .subdivisions
                .first()
                .and_then(|s| s.names.english.or(s.iso_code))
                .map(str::to_owned),
            ..GeoIp::default()
        };
        if let (Some(lat), Some(lon)) = (city.location.latitude, city.location.longitude) {
            geo.set_lat_lon(lat, lon);
        }
        geo.org = self.org(ip);
        Some(geo)
    }

    fn org(&self, ip: IpAddr) -> Option<String> {
        let asn: geoip2::Asn<'_> = self.asn.as_ref()?.lookup(ip).ok()?.decode().ok()??;
        match (
            asn.autonomous_system_number,
            asn.autonomous_system_organization,
        ) {
            (Some(n), Some(org)) => Some(format!("AS{n} {org}")),
            (None, Some(org)) => Some(org.to_owned()),
            (Some(n), None) => Some(format!("AS{n}")),
            (None, None) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distances_are_plausible() {
        let taipei = (25.033, 121.5654);
        let tokyo = (35.6762, 139.6503);
        let d = haversine_km(taipei, tokyo);
        assert!((2090.0..2120.0).contains(&d), "{d}");
        assert!(haversine_km(taipei, taipei) < 1e-9);
    }

    #[test]
    fn a_written_database_is_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("city.mmdb");
        let mut w = mmdb_writer::Writer::new("GeoLite2-City");
        let rec = serde_json::json!({
            "city": {"names": {"en": "Taipei"}},
            "country": {"iso_code": "TW", "names": {"en": "Taiwan"}},
            "subdivisions": [{"iso_code": "TPE", "names": {"en": "Taipei City"}}],
            "location": {"latitude": 25.0330, "longitude": 121.5654}
        });
        w.insert("127.0.0.2/32".parse::<ipnet::IpNet>().unwrap(), &rec)
            .unwrap();
        std::fs::write(&path, w.to_bytes().unwrap()).unwrap();
        let db = GeoDb::open(&path, None).unwrap();
        let geo = db.lookup("127.0.0.2".parse().unwrap()).unwrap();
        assert_eq!(geo.city.as_deref(), Some("Taipei"));
        assert_eq!(geo.country.as_deref(), Some("TW"));
        assert_eq!(geo.region.as_deref(), Some("Taipei City"));
        assert_eq!(geo.loc.as_deref(), Some("25.0330,121.5654"));
        assert!(db.lookup("10.1.1.1".parse().unwrap()).is_none());
        assert_eq!(geo.org, None, "no ASN database");

        let asn_path = dir.path().join("asn.mmdb");
        let mut w = mmdb_writer::Writer::new("GeoLite2-ASN");
        // Typed, so the number is written as uint32 as in MaxMind's files (a
        // JSON number would be uint64, which the reader refuses for this field).
        #[derive(serde::Serialize)]
        struct Asn {
            autonomous_system_number: u32,
            autonomous_system_organization: &'static str,
        }
        let asn = Asn {
            autonomous_system_number: 3462,
            autonomous_system_organization: "Data Communication Business Group",
        };
        w.insert("127.0.0.0/24".parse::<ipnet::IpNet>().unwrap(), &asn)
            .unwrap();
        std::fs::write(&asn_path, w.to_bytes().unwrap()).unwrap();
        let db = GeoDb::open(&path, Some(&asn_path)).unwrap();
        let geo = db.lookup("127.0.0.2".parse().unwrap()).unwrap();
        assert_eq!(
            geo.org.as_deref(),
            Some("AS3462 Data Communication Business Group")
        );
        let err = GeoDb::open(&dir.path().join("missing.mmdb"), None).unwrap_err();
        assert!(
            err.to_string().starts_with("cannot open GeoIP database"),
            "{err}"
        );
    }
}
