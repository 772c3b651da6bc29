//! Dandelion's shared library.
//!
//! Everything the three daemons and the console have in common lives here, free of
//! any terminal or HTTP-server code, so that it can be tested without sockets:
//!
//! - [`ids`], [`identity`], [`secrets`] and [`auth`]: who a daemon is, its key pair
//!   and tokens on disk, and the nonce-signing proof that opens every session;
//! - [`protocol`] and [`connection`]: typed wire messages and a WebSocket wrapper
//!   that yields them, and [`http`], a small client for daemons' HTTP APIs;
//!   [`frame`]: the binary file frames and the transfer state
//!   machine that reassembles them with bounded memory;
//! - [`store`]: the Redis-like store every daemon keeps its state in, embedded
//!   (redb) or on a shared Redis, with the original's key names;
//! - [`paths`]: which file paths arriving from the network may be stored and
//!   published; [`media`]: the `Content-Type` a published name is served with;
//! - [`geo`]: locating peers by address in GeoLite2-compatible databases;
//!   [`ipscope`]: which addresses lead into private networks;
//! - [`config`] and [`logging`]: the layered configuration and log set-up every
//!   binary shares;
//! - [`probe`]: the box's reading of its own CPU, memory, disk and network.

pub mod admintoken;
pub mod auth;
pub mod config;
pub mod connection;
pub mod console;
pub mod frame;
pub mod fsio;
pub mod geo;
pub mod http;
pub mod idcert;
pub mod identity;
pub mod ids;
pub mod ipscope;
pub mod logging;
pub mod media;
pub mod nonces;
pub mod paths;
pub mod pinned;
pub mod probe;
pub mod protocol;
pub mod proxies;
pub mod secrets;
pub mod store;
pub mod stripes;
pub mod tls;
pub mod tokens;
