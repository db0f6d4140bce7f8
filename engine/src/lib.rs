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
//!
//! The embedding API is [`Ledger`] (opened with [`Ledger::open`] or [`Ledger::builder`]),
//! the transaction model ([`model`]), signing ([`signature`]), proofs and checkpoints
//! ([`block`]), history entries ([`history`]), storage ([`storage`]), whole-store
//! verification ([`verify`]) and the bounds ([`limits`]). The modules hidden from these docs
//! (the shard state machine, the coordinator's protocol, participants, the key layout, ...)
//! are public for the cluster crate, the tests and the fuzz targets of this workspace; they
//! are not an API to embed against.
#![warn(missing_docs)]

pub mod authority;
pub mod block;
pub(crate) mod cache;
pub mod codec;
pub mod commitment;
#[doc(hidden)]
pub mod coordinator;
#[doc(hidden)]
pub mod coordinator_store;
pub mod history;
#[doc(hidden)]
pub mod layout;
pub mod ledger;
pub mod limits;
pub mod model;
#[doc(hidden)]
pub mod participant;
pub mod payload;
#[doc(hidden)]
pub mod reads;
#[doc(hidden)]
pub mod round;
#[doc(hidden)]
pub mod routing;
#[doc(hidden)]
pub mod shard;
pub mod signature;
#[doc(hidden)]
pub mod state;
pub mod storage;
pub mod verify;

pub use block::{Checkpoint, Proof};
pub use ledger::{
    Config, Ledger, LedgerBuilder, OpenError, QueryError, ReadError, Reads, SubmitError, UnitVerification,
};
pub use model::{
    ActorKey, Adjudication, ClaimLine, Operation, Purpose, Purposes, Reason, Role, SignedTransaction, Transaction,
    TxId, TxResult, UnitId,
};
pub use state::{
    Account, Actor, Claim, ClaimStatus, Consent, Enrolment, ProviderCredential, Recall, Record, Study, Unit, UnitStatus,
};
