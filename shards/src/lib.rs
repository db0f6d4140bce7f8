//! Caduceus shards: the `caduceus` command line and what it is built from.
//! The cluster servers and the coordinator over QUIC will live here; for now
//! it holds the realistic workload generator the demo (and `loadgen`) drive,
//! and the pre-signed workload files `loadgen` writes and replays.

pub mod workload;
pub mod workload_file;
