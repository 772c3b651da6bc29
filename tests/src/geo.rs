//! A GeoLite2-City shaped database for tests, so an entrance locates boxes by the
//! loopback address they connect from as if they were households in real cities.

use std::path::{Path, PathBuf};

/// Source address (127.0.0.x), city, country, latitude, longitude.
pub const TEST_CITIES: [(&str, &str, &str, f64, f64); 3] = [
    ("127.0.0.2", "Taipei", "TW", 25.0330, 121.5654),
    ("127.0.0.3", "Tokyo", "JP", 35.6762, 139.6503),
    ("127.0.0.4", "London", "GB", 51.5074, -0.1278),
];

/// Writes `dir/city.mmdb` mapping each of [`TEST_CITIES`] to its city.
pub fn write_city_db(dir: &Path) -> PathBuf {
    let mut w = mmdb_writer::Writer::new("GeoLite2-City");
    for (ip, city, country, lat, lon) in TEST_CITIES {
        let rec = serde_json::json!({
            "city": {"names": {"en": city}},
            "country": {"iso_code": country},
            "location": {"latitude": lat, "longitude": lon}
        });
        let net: ipnet::IpNet = format!("{ip}/32")
            .parse()
            .unwrap_or_else(|e| panic!("{ip}: {e}"));
        w.insert(net, &rec)
            .unwrap_or_else(|e| panic!("cannot add {ip}: {e}"));
    }
    let path = dir.join("city.mmdb");
    let bytes = w
        .to_bytes()
        .unwrap_or_else(|e| panic!("cannot build the database: {e}"));
    std::fs::write(&path, bytes).unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
    path
}
