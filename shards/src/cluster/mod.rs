//! The cluster: shard servers and the cross-shard coordinator over QUIC, the
//! client library, and the local cluster the command line starts.

pub mod client;
pub mod config;
pub mod coordinator;
pub mod local;
pub mod rpc;
pub mod shard_server;
pub mod tls;
pub mod wire;
