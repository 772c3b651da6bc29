//! Dandelion's shared library.
//!
//! Everything the three daemons and the console have in common lives here, free of
//! any terminal or HTTP-server code, so that it can be tested without sockets:
//!
//! - [`ids`], [`identity`], [`secrets`] and [`auth`]: who a daemon is, its key pair
//!   and tokens on disk, and the nonce-signing proof that opens every session;
//! - [`protocol`] and [`connection`]: typed wire messages and a WebSocket wrapper
//!   that yields them;
//! - [`config`] and [`logging`]: the layered configuration and log set-up every
//!   binary shares.

pub mod auth;
pub mod config;
pub mod connection;
pub mod identity;
pub mod ids;
pub mod logging;
pub mod protocol;
pub mod secrets;
