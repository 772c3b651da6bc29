//! The daemons behind the `dandelion` and `dandelion-box` binaries, as a
//! library; what both binaries do around a role is [`launch`].
//!
//! Each role is a function that takes a bound listener, its configuration and a
//! [`Shutdown`](shutdown::Shutdown), and runs until shutdown — so `main` stays
//! thin and tests run the very same code in-process on `127.0.0.1:0`. What every
//! role shares lives here too: the HTTP skeleton ([`server`]), the WebSocket
//! upgrade ([`ws`]), the handshake that checks a peer's proof of identity
//! ([`handshake`]), metrics ([`metrics`]), two-phase shutdown ([`shutdown`]) and
//! the feed every daemon serves to `dandelion-console` ([`console`]).
//! The roles: [`entrance`], [`boxnode`] (the box), [`publisher`].

pub mod admission;
pub mod boxnode;
pub mod cli;
pub mod client;
pub mod console;
pub mod entrance;
pub mod handshake;
pub mod heads;
pub mod health;
pub mod launch;
pub mod listener;
pub mod localca;
pub mod metrics;
pub mod process_metrics;
pub mod publisher;
pub mod ratelimit;
pub mod rewind;
pub mod served;
pub mod server;
pub mod shutdown;
pub mod up;
pub mod ws;
