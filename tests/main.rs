//! The integration tests, one crate, one module per concern.

mod bad_input;
mod coordinator;
mod crash;
mod data;
mod model;
mod pipeline;
mod privacy;
mod proofs;
mod rules;
mod support;
mod tamper;
