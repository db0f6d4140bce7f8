//! What `loadgen` shares with the `caduceus` command line: the load options and the closed
//! loop over an embedded ledger. The workload itself (population, mix, signing) is the
//! `caduceus-workload` crate; `loadgen`'s measuring loops, sinks and reports are its binary's.

pub mod args;
pub mod embedded;
