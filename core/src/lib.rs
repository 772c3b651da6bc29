//! Dandelion's shared library.
//!
//! Everything the three daemons and the console have in common lives here, free of
//! any terminal or HTTP-server code, so that it can be tested without sockets.

pub mod frame;
