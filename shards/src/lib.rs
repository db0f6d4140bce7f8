//! Caduceus shards: the cluster (shard servers, the coordinator, the client
//! library, all over QUIC), the `caduceus` command line, the realistic
//! workload generator the demo and `loadgen` drive, and the pre-signed
//! workload files `loadgen` writes and replays.

pub mod cluster;
pub mod workload;
pub mod workload_file;
