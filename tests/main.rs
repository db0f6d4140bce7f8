//! The integration tests, one crate, one module per concern.

mod bad_input;
mod crash;
mod data;
mod model;
mod pipeline;
mod rules;
mod support;
mod tamper;
