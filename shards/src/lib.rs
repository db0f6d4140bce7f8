//! The Caduceus cluster: shard servers and the cross-shard coordinator over
//! QUIC, the client library, the wire protocol, and the local cluster the
//! command line starts. The rules and the commit protocol's logic live in
//! `caduceus-engine`; this crate moves their messages and runs their processes.

pub mod client;
pub mod config;
pub mod coordinator;
pub mod local;
mod payloads;
pub mod rpc;
pub mod shard_server;
pub mod tls;
pub mod wire;
