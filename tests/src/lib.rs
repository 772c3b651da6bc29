//! Test harness for Dandelion's end-to-end tests.
//!
//! It starts real things — processes, a real `redis-server` — on loopback and waits on
//! conditions with deadlines instead of sleeping.

pub mod redis;
