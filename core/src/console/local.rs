//! The network `dandelion up` started: where its daemons listen and where their
//! data directories (and so their admin tokens) are. `up` writes it; the client
//! commands and the console read it, so they find a local network without flags.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::secrets::admin_token_path;

/// The file `dandelion up` writes into its base data directory.
pub const NETWORK_FILE: &str = "network.json";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LocalNetwork {
    pub entrance: String,
    pub publisher: String,
    pub boxes: Vec<String>,
    pub entrance_dir: PathBuf,
    pub publisher_dir: PathBuf,
    pub box_dirs: Vec<PathBuf>,
    /// The network's private CA (`dandelion up` runs on TLS): what its clients
    /// trust. Absent in files of older versions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
}

impl LocalNetwork {
    /// The network described in `data_dir`, if one is running there.
    pub fn load(data_dir: &Path) -> Option<LocalNetwork> {
        let text = std::fs::read_to_string(data_dir.join(NETWORK_FILE)).ok()?;
        serde_json::from_str(&text).ok()
    }

    /// [`LocalNetwork::load`], and every TLS client of this process trusts the
    /// network's CA from then on: what the client commands and the console do
    /// to find a local network without flags.
    pub fn load_trusted(data_dir: &Path) -> Result<Option<LocalNetwork>, crate::tls::TlsError> {
        let Some(net) = LocalNetwork::load(data_dir) else {
            return Ok(None);
        };
        if let Some(ca) = &net.ca_file {
            crate::tls::trust(ca)?;
        }
        Ok(Some(net))
    }

    /// Every daemon's URL with the file holding its admin token: entrance,
    /// publisher, then the boxes.
    pub fn daemons(&self) -> Vec<(String, PathBuf)> {
        let mut all = vec![
            (self.entrance.clone(), admin_token_path(&self.entrance_dir)),
            (
                self.publisher.clone(),
                admin_token_path(&self.publisher_dir),
            ),
        ];
        all.extend(
            self.boxes
                .iter()
                .zip(&self.box_dirs)
                .map(|(url, dir)| (url.clone(), admin_token_path(dir))),
        );
        all
    }
}
