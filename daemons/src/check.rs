//! `dandelion check` and `dandelion id`: the start-up path of every daemon —
//! configuration, data directory, logging, identity, store — run on its own, so an
//! operator can prove a machine is ready before starting a role on it.

use std::path::Path;

use anyhow::Context;
use dandelion_core::config::{self, Config};
use dandelion_core::identity::Identity;
use dandelion_core::ids::Role;
use dandelion_core::{logging, store};

pub async fn run(config: &Config, file: Option<&Path>, role: Option<Role>) -> anyhow::Result<()> {
    config::prepare_data_dir(&config.data_dir)?;
    let _log = logging::init(
        &config.log_level,
        config.log_format,
        config.log_file.then_some(config.data_dir.as_path()),
    )?;
    match file {
        Some(path) => println!("config file:    {}", path.display()),
        None => println!("config file:    none found, using the defaults"),
    }
    println!("data directory: {} (writable)", config.data_dir.display());
    let store = store::open_configured(config).await?;
    store
        .exists("{check}:PING")
        .await
        .context("the store does not answer")?;
    if config.store.starts_with("redis") {
        println!(
            "store:          {} (answering)",
            store::redact_url(&config.store)
        );
    } else {
        println!(
            "store:          embedded, {}",
            config.data_dir.join(store::EMBEDDED_FILE_NAME).display()
        );
    }
    let roles = role.map_or(Role::ALL.to_vec(), |r| vec![r]);
    for role in roles {
        let identity = Identity::load_or_create(&config.data_dir, role)?;
        println!("{:<15} {}", format!("{role} ID:"), identity.id());
    }
    tracing::info!(data_dir = %config.data_dir.display(), "configuration checked");
    Ok(())
}

pub fn print_id(config: &Config, role: Role) -> anyhow::Result<()> {
    config::prepare_data_dir(&config.data_dir)?;
    let identity = Identity::load_or_create(&config.data_dir, role)?;
    println!("id:         {}", identity.id());
    println!("public key: {}", identity.public_key_hex());
    Ok(())
}
