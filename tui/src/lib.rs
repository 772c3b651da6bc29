//! `dandelion-console`: the operator's terminal dashboard for a Dandelion network.
//!
//! Four parts, as the ratatui examples and gitui split them: [`app`] is the
//! state and the only code that changes it (plain data, tested without a
//! terminal); [`input`] turns keys into actions through one keymap table;
//! [`ui`] draws the state with a [`theme`] and never changes it; [`net`] runs
//! the tasks that talk to daemons. [`shell`] ties them together in one event
//! loop that never waits on the network.

pub mod app;
pub mod cli;
pub mod contexts;
#[cfg(test)]
mod fixtures;
pub mod input;
pub mod net;
pub mod shell;
pub mod theme;
pub mod ui;
