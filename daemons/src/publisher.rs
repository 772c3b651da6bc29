//! The publisher: takes files from users, places them on the best boxes and sends
//! viewers there. Its decisions are plain functions ([`ranking`]); the daemon
//! around them arrives with the publisher milestone.

pub mod queue;
pub mod ranking;
pub mod redirect;
