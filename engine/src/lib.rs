//! Caduceus engine: the embeddable ledger for health data exchange.
//!
//! It records medical-record registrations, consents and audited accesses;
//! claims, adjudications and payments; and the custody of serialized drug
//! units, as signed transactions in per-shard hash chains with Merkle proofs,
//! persisted in RocksDB. Open a [`Ledger`] on a directory, [`Ledger::submit`]
//! signed batches, query, prove and verify.
//!
//! This crate never opens a socket: the cluster drivers live in
//! `caduceus-shards`. See ARCHITECTURE.md for the map.

pub mod block;
pub mod cache;
pub mod codec;
pub mod coordinator;
pub mod coordinator_store;
pub mod history;
pub mod layout;
pub mod ledger;
pub mod limits;
pub mod model;
pub mod participant;
pub mod reads;
pub mod round;
pub mod routing;
pub mod shard;
pub mod signature;
pub mod state;
pub mod storage;
pub mod verify;

pub use block::{Checkpoint, Proof};
pub use ledger::{Config, Ledger, OpenError, QueryError, SubmitError, UnitVerification};
pub use model::{
    ActorKey, Adjudication, ClaimLine, Operation, Purpose, Purposes, Reason, Role, SignedTransaction, Transaction,
    TxId, TxResult, UnitId,
};
