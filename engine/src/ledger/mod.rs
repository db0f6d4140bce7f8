//! The `Ledger`: the embeddable facade over shards, pipeline and storage.
//!
//! Submitted batches flow through three pipeline stages joined by bounded
//! channels: a verify stage checks signatures on the global rayon pool; an
//! execute stage, on a rayon pool of its own, de-duplicates by transaction id
//! and executes each batch as a round over all shards, in memory; a persist
//! stage writes each executed group in one atomic, fsynced write and only then
//! answers. So while one group is written, the next executes and the one after
//! is verified. The rounds of
//! all batches waiting at once share one write (group commit); a batch is
//! always its own round, so results depend only on the order of batches,
//! never on timing.
//!
//! The in-memory state can be ahead of storage by the groups being written.
//! Queries of it return only once what they read is durable, so nothing a
//! query returns can be lost by a crash. When a write fails, the state goes
//! back to what is durable and every batch executed on top of the lost write
//! is refused as well: nothing unacknowledged is kept.

//!
//! The parts: `builder` opens a ledger and starts the stages; `admission` decides which queue
//! a client's batch waits in; `verify_stage`, `execute_stage` and `persist_stage` are the three
//! stages; `core` is the state they share. This file is the facade: submitting and querying.

mod admission;
mod builder;
mod core;
mod execute_stage;
mod persist_stage;
mod reads_as;
mod verify_stage;

use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{SystemTime, UNIX_EPOCH};

use crossbeam_channel::{bounded, Receiver, Sender};
use parking_lot::RwLock;
use thiserror::Error;

use self::admission::{Standings, Submission};
pub use self::builder::LedgerBuilder;
pub(crate) use self::core::check_format;
pub use self::core::load_state;
use self::core::Core;
use self::persist_stage::Durable;
pub use self::reads_as::{ReadError, Reads};
use crate::block::{Checkpoint, Proof};
use crate::cache::StateCache;
pub use crate::cache::StorageReads;
use crate::codec::{Codec, DecodeError};
use crate::history::TxLocation;
use crate::layout;
use crate::limits::BATCH_TRANSACTIONS_MAX;
use crate::model::{ActorKey, Hash, SignedTransaction, Timestamp, TxId, TxResult, UnitId};
use crate::reads;
use crate::routing::{shard_of_actor, shard_of_credential, shard_of_unit};
use crate::shard::Shard;
use crate::state::{Account, Actor, Claim, Enrolment, ProviderCredential, Recall, Record, StateKey, Study, Unit};
use crate::storage::{Storage, StorageError};

/// The source of commit time: milliseconds since the Unix epoch.
pub type Clock = Arc<dyn Fn() -> Timestamp + Send + Sync>;

/// The system clock.
pub fn system_clock() -> Clock {
    Arc::new(|| SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64))
}

/// How a ledger is created. On reopen the stored configuration wins, and a
/// different shard count is refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// Shards the state is partitioned into (fixed for the ledger's life).
    pub shards: u32,
    /// Operators that exist from the start; they register every other actor.
    pub genesis_operators: Vec<ActorKey>,
    /// How many operators must agree to add another operator (`add-operator`): between 1 and
    /// the number of genesis operators (for example 2 of 3).
    pub operator_quorum: u32,
}

/// How this process runs a ledger; nothing here is stored.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// Entries of the state that grows with history (records, consents, claims, units) each
    /// shard keeps in memory; past it, durable entries are dropped and read again from storage
    /// when a transaction needs them (see `cache`). `None` (the default): the whole state is
    /// loaded on open and stays in memory. A limit bounds memory and makes opening fast
    /// whatever the history; each transaction that touches an entry not in memory pays a
    /// storage read.
    pub state_cache_entries: Option<usize>,
}

/// Why a ledger could not be opened.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum OpenError {
    /// The storage failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// The configuration of a new ledger is not valid.
    #[error("invalid configuration: {0}")]
    Config(&'static str),
    /// The ledger was created with another shard count.
    #[error("the ledger has {stored} shards; it cannot be opened with {requested}")]
    ShardCount {
        /// The ledger's.
        stored: u32,
        /// The one asked for.
        requested: u32,
    },
    /// What opening reads is damaged.
    #[error("stored data is damaged at {place}: {detail} (run `caduceus verify`)")]
    Corrupt {
        /// Which key.
        place: String,
        /// What is wrong.
        detail: String,
    },
    /// The directory holds no ledger.
    #[error("{0} holds no ledger")]
    NoLedger(std::path::PathBuf),
    /// The store was written in another format than this build's.
    #[error(
        "the store is in format {stored} and this build reads format {expected}: open it with the build that wrote it, or rebuild it"
    )]
    Format {
        /// The store's format.
        stored: u32,
        /// This build's.
        expected: u32,
    },
}

/// Why a batch was not accepted. Per-transaction outcomes are `TxResult`s, not errors.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum SubmitError {
    /// More transactions than a batch may hold.
    #[error("batch of {count} transactions is over the limit of {limit}")]
    BatchTooLarge {
        /// In the batch.
        count: usize,
        /// The limit.
        limit: usize,
    },
    /// The write failed: nothing of the batch was applied, and the ledger goes on serving.
    #[error("the write was not made durable, so nothing in the batch was applied: {0}")]
    Storage(String),
    /// The ledger is shutting down.
    #[error("the ledger is closed")]
    Closed,
}

/// Why a query failed.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum QueryError {
    /// The storage failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// A stored value could not be decoded.
    #[error("stored data is damaged at {place}: {source} (run `caduceus verify`)")]
    Corrupt {
        /// Which key.
        place: String,
        /// Why it does not decode.
        source: DecodeError,
    },
    /// Stored values that should agree do not.
    #[error("stored data is inconsistent at {place}: {detail} (run `caduceus verify`)")]
    Inconsistent {
        /// Which key.
        place: String,
        /// What disagrees.
        detail: &'static str,
    },
}

/// What the ledger says about a serialized unit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnitVerification {
    /// The unit asked about.
    pub unit: UnitId,
    /// `None`: never commissioned on this ledger, so not genuine.
    pub state: Option<Unit>,
    /// Its lot's recall, if recalled.
    pub recall: Option<Recall>,
    /// Past its expiry at the ledger clock's now.
    pub expired: bool,
}

impl UnitVerification {
    /// Commissioned on this ledger.
    pub fn genuine(&self) -> bool {
        self.state.is_some()
    }
    /// Genuine, active, not recalled and not expired.
    pub fn dispensable(&self) -> bool {
        self.state.as_ref().is_some_and(|u| u.status == crate::state::UnitStatus::Active)
            && self.recall.is_none()
            && !self.expired
    }
}

/// One result per transaction of a batch, or why the batch was not applied.
type Answer = Result<Vec<TxResult>, SubmitError>;

/// Who submitted a batch, as the embedding application (or the cluster's coordinator, per
/// connection) tells it; `Ledger::submit_async` uses client 0.
pub type ClientId = u64;

/// A submitted batch whose results are not yet durable.
pub struct PendingBatch {
    reply: Receiver<Answer>,
}

impl PendingBatch {
    /// Waits until the batch is durable and returns one result per transaction, in order.
    pub fn wait(self) -> Answer {
        self.reply.recv().unwrap_or(Err(SubmitError::Closed))
    }
}

/// An open ledger.
///
/// ```
/// use caduceus_engine::{Config, Ledger, Operation, Reason, Role, Transaction, TxResult};
/// use caduceus_engine::signature::{actor_key, sign, signing_key};
///
/// let operator = signing_key([1; 32]);
/// let config = Config { shards: 2, genesis_operators: vec![actor_key(&operator)], operator_quorum: 1 };
/// let ledger = Ledger::open_in_memory(&config)?;
/// // A transaction is signed with the time of its signing; it may commit within a day of it.
/// let now = caduceus_engine::ledger::system_clock()();
///
/// let provider = signing_key([2; 32]);
/// let register = Transaction {
///     nonce: 1,
///     signer: actor_key(&operator),
///     timestamp: now,
///     operation: Operation::RegisterActor { actor: actor_key(&provider), role: Role::Provider, prefixes: vec![] },
///     key: None,
/// };
/// let register = sign(register, &operator)?;
/// assert_eq!(ledger.submit(vec![register.clone()])?, vec![TxResult::Committed]);
/// // The same transaction again gets the first result and applies nothing.
/// assert_eq!(ledger.submit(vec![register.clone()])?, vec![TxResult::Committed]);
///
/// // Another transaction under the same nonce (so the same id) is refused as a conflict.
/// let again = Transaction {
///     nonce: 1,
///     signer: actor_key(&operator),
///     timestamp: now,
///     operation: Operation::RegisterActor { actor: actor_key(&provider), role: Role::Payer, prefixes: vec![] },
///     key: None,
/// };
/// assert_eq!(ledger.submit(vec![sign(again, &operator)?])?, vec![TxResult::Rejected(Reason::Conflict)]);
/// assert_eq!(ledger.actor(&actor_key(&provider)).unwrap().role, Role::Provider);
///
/// // The operator signed it, so may prove it.
/// let proof = ledger.reads_as(&actor_key(&operator))?.prove(register.id())?.expect("committed transactions have proofs");
/// let checkpoint = ledger.checkpoint_at(proof.checkpoint_round)?.expect("stored checkpoint");
/// assert!(proof.verify(&checkpoint.hash()).is_ok());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Ledger {
    core: Arc<RwLock<Core>>,
    durable: Arc<Durable>,
    /// Batches of clients in good standing, and of clients that recently sent bad signatures;
    /// the verify stage takes from the second only when the first is empty.
    submit: Option<(Sender<Submission>, Sender<Submission>)>,
    standings: Arc<Standings>,
    threads: Vec<JoinHandle<()>>,
    clock: Clock,
}

impl Ledger {
    /// Opens (or creates) a ledger in a directory, on RocksDB, with default options. See
    /// [`Ledger::builder`] for options, another clock or another storage.
    ///
    /// ```
    /// use caduceus_engine::signature::{actor_key, signing_key};
    /// use caduceus_engine::{Config, Ledger};
    ///
    /// let dir = tempfile::tempdir()?;
    /// let config = Config { shards: 4, genesis_operators: vec![actor_key(&signing_key([7; 32]))], operator_quorum: 1 };
    /// let ledger = Ledger::open(dir.path(), &config)?;
    /// assert_eq!((ledger.shard_count(), ledger.round()), (4, 0));
    /// drop(ledger);
    /// // Reopening takes the stored configuration.
    /// assert_eq!(Ledger::open_existing(dir.path())?.shard_count(), 4);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[cfg(feature = "rocksdb")]
    pub fn open(path: &std::path::Path, config: &Config) -> Result<Self, OpenError> {
        Self::builder().open(path, config)
    }

    /// Opens a ledger that already exists in a directory, with its stored configuration.
    #[cfg(feature = "rocksdb")]
    pub fn open_existing(path: &std::path::Path) -> Result<Self, OpenError> {
        Self::builder().open_existing(path)
    }

    /// A ledger that lives in memory only (tests, simulations, examples).
    pub fn open_in_memory(config: &Config) -> Result<Self, OpenError> {
        Self::builder().open_in_memory(config)
    }

    /// How to open a ledger with options, a chosen clock or any storage.
    pub fn builder() -> LedgerBuilder {
        LedgerBuilder::default()
    }

    /// Queues a batch and returns at once; `wait` on the result for the per-transaction outcomes.
    /// Blocks while the pipeline's queues are full.
    pub fn submit_async(&self, transactions: Vec<SignedTransaction>) -> Result<PendingBatch, SubmitError> {
        self.submit_async_from(0, transactions)
    }

    /// `submit_async` for one of several clients. A client whose batch held bad signatures has
    /// its next `PENALTY_BATCHES` batches verified only when no other client's batch is
    /// waiting, so a client that sends forgeries slows itself, not the others.
    pub fn submit_async_from(
        &self,
        client: ClientId,
        transactions: Vec<SignedTransaction>,
    ) -> Result<PendingBatch, SubmitError> {
        if transactions.len() > BATCH_TRANSACTIONS_MAX {
            return Err(SubmitError::BatchTooLarge { count: transactions.len(), limit: BATCH_TRANSACTIONS_MAX });
        }
        let (reply, receiver) = bounded(1);
        let (clean, penalized) = self.submit.as_ref().ok_or(SubmitError::Closed)?;
        let penalize = self.standings.route(client);
        let queue = if penalize { penalized } else { clean };
        queue.send(Submission { client, penalized: penalize, transactions, reply }).map_err(|_| SubmitError::Closed)?;
        Ok(PendingBatch { reply: receiver })
    }

    /// Submits a batch and waits until its results are durable: one result per transaction, in
    /// order. Business outcomes (a missing consent, a duplicate claim) are results, not errors.
    ///
    /// ```
    /// use caduceus_engine::signature::{actor_key, sign, signing_key};
    /// use caduceus_engine::{Config, Ledger, Operation, Reason, Role, Transaction, TxResult};
    ///
    /// let operator = signing_key([1; 32]);
    /// let ledger = Ledger::open_in_memory(&Config { shards: 1, genesis_operators: vec![actor_key(&operator)], operator_quorum: 1 })?;
    /// let stranger = signing_key([9; 32]);
    /// let now = caduceus_engine::ledger::system_clock()();
    /// let register = |id, signer: &caduceus_engine::signature::SigningKey| {
    ///     let actor = actor_key(&signing_key([id as u8; 32]));
    ///     let operation = Operation::RegisterActor { actor, role: Role::Provider, prefixes: vec![] };
    ///     sign(Transaction { nonce: id, signer: actor_key(signer), timestamp: now, operation, key: None }, signer)
    /// };
    /// // A stranger's transaction is refused before the ledger: not recorded, nothing burnt.
    /// let results = ledger.submit(vec![register(2, &operator)?, register(3, &stranger)?])?;
    /// assert_eq!(results, vec![TxResult::Committed, TxResult::Rejected(Reason::UnknownSigner)]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn submit(&self, transactions: Vec<SignedTransaction>) -> Answer {
        self.submit_async(transactions)?.wait()
    }

    /// Shards the state is partitioned into.
    pub fn shard_count(&self) -> u32 {
        self.core.read().genesis.shards
    }

    /// Reads the in-memory state, and returns once what was read is durable: the executed
    /// state can be ahead of storage by the groups being written, and nothing a query
    /// returns may be lost by a crash.
    fn read_durable<T>(&self, read: impl Fn(&Core) -> T) -> T {
        loop {
            let (value, seq, epoch) = {
                let core = self.core.read();
                (read(&core), core.executed, core.epoch)
            };
            if self.durable.wait(seq, epoch) {
                return value;
            }
        }
    }

    /// The number of the last durable round.
    pub fn round(&self) -> u64 {
        self.read_durable(|core| core.round)
    }

    /// The latest checkpoint: every shard's head after the last round.
    pub fn checkpoint(&self) -> Option<Checkpoint> {
        self.read_durable(|core| core.checkpoint.clone())
    }

    /// The checkpoint of a round, as stored.
    pub fn checkpoint_at(&self, round: u64) -> Result<Option<Checkpoint>, QueryError> {
        reads::checkpoint_at(self.storage().as_ref(), round)
    }

    /// blake3 over every shard's canonical state: equal hashes, equal states. Read from storage
    /// in one consistent scan, since the in-memory state is only partly resident.
    pub fn state_hash(&self) -> Result<Hash, QueryError> {
        let (storage, shards) = self.read_durable(|core| (core.storage.clone(), core.genesis.shards));
        let mut hashers: Vec<blake3::Hasher> = (0..shards).map(|_| blake3::Hasher::new()).collect();
        // A state key is the family byte, the shard (u32 BE), then the entry's own key.
        storage.scan(&[layout::STATE], &mut |key, value| {
            let shard = u32::from_be_bytes(key[1..5].try_into().expect("4 bytes"));
            crate::state::hash_entry(&mut hashers[shard as usize], &key[5..], value);
            true
        })?;
        let mut hasher = blake3::Hasher::new();
        for shard in hashers {
            hasher.update(shard.finalize().as_bytes());
        }
        Ok(*hasher.finalize().as_bytes())
    }

    /// What the state cache has read from storage since the ledger opened (`None`: the ledger
    /// has no cache, its whole state is in memory): per transaction, what the limit costs.
    pub fn state_cache_reads(&self) -> Option<StorageReads> {
        self.core.read().cache.as_ref().map(StateCache::reads)
    }

    /// Every shard's height.
    pub fn heights(&self) -> Vec<u64> {
        self.read_durable(|core| core.shards.iter().map(Shard::height).collect())
    }

    /// Total balances and total funding over all accounts; equal whenever the ledger is at rest.
    pub fn fund_totals(&self) -> (u128, u128) {
        self.read_durable(|core| crate::shard::fund_totals(&core.shards))
    }

    /// A registered actor.
    pub fn actor(&self, actor: &ActorKey) -> Option<Actor> {
        self.read_durable(|core| core.shards[0].state().actors.get(actor).cloned())
    }

    /// A payer's or provider's account.
    pub(crate) fn account(&self, owner: &ActorKey) -> Option<Account> {
        self.read_durable(|core| {
            core.shards[shard_of_actor(owner, core.genesis.shards) as usize].state().accounts.get(owner).copied()
        })
    }

    /// A record, looked up on its patient's shard.
    pub(crate) fn record(&self, patient: &ActorKey, record: u128) -> Result<Option<Record>, QueryError> {
        self.patient_entry(patient, StateKey::Record(*patient, record), |state| state.records.get(&(*patient, record)))
    }

    /// A claim, looked up on its patient's shard.
    pub(crate) fn claim(&self, patient: &ActorKey, claim: u128) -> Result<Option<Claim>, QueryError> {
        self.patient_entry(patient, StateKey::Claim(*patient, claim), |state| state.claims.get(&(*patient, claim)))
    }

    /// A patient's enrolment in a study, looked up on its patient's shard.
    pub(crate) fn enrolment(&self, patient: &ActorKey, study: TxId) -> Result<Option<Enrolment>, QueryError> {
        self.patient_entry(patient, StateKey::Enrolment(*patient, study), |state| {
            state.enrolments.get(&(*patient, study))
        })
    }

    /// A clinical study, by its registration's transaction id: a public fact (its investigator,
    /// its protocol's hash, whether it is closed), held on every shard.
    pub fn study(&self, study: TxId) -> Result<Option<Study>, QueryError> {
        self.read_durable(|core| match core.shards[0].state().studies.get(&study) {
            Some(entry) => Ok(Some(entry.clone())),
            None => core.stored(0, &StateKey::Study(study)),
        })
    }

    /// A provider's credential, by its issuance's transaction id: public, so that anyone
    /// verifies it (`ProviderCredential::valid_at`).
    pub fn credential(&self, credential: TxId) -> Result<Option<ProviderCredential>, QueryError> {
        self.read_durable(|core| {
            let shard = shard_of_credential(credential, core.genesis.shards);
            match core.shards[shard as usize].state().credentials.get(&credential) {
                Some(entry) => Ok(Some(entry.clone())),
                None => core.stored(shard, &StateKey::Credential(credential)),
            }
        })
    }

    /// An entry on the patient's shard: in memory, or (with a state cache) read from storage.
    fn patient_entry<T: Clone + Codec>(
        &self,
        patient: &ActorKey,
        key: StateKey,
        resident: impl Fn(&crate::state::State) -> Option<&T>,
    ) -> Result<Option<T>, QueryError> {
        self.read_durable(|core| {
            let shard = shard_of_actor(patient, core.genesis.shards);
            match resident(core.shards[shard as usize].state()) {
                Some(entry) => Ok(Some(entry.clone())),
                None => core.stored(shard, &key),
            }
        })
    }

    /// Whether a unit is genuine, who holds it, whether it is recalled or expired (at the clock's now).
    pub fn verify_unit(&self, unit: &UnitId) -> Result<UnitVerification, QueryError> {
        self.read_durable(|core| {
            let shard = shard_of_unit(unit, core.genesis.shards);
            let state = core.shards[shard as usize].state();
            let current = match state.units.get(unit) {
                Some(current) => Some(current.clone()),
                None => core.stored::<Unit>(shard, &StateKey::Unit(unit.clone()))?,
            };
            let recall = current.as_ref().and_then(|u| state.recalls.get(&(unit.gtin, u.lot.clone())).cloned());
            let expired = current.as_ref().is_some_and(|u| (self.clock)() >= u.expiry);
            Ok(UnitVerification { unit: unit.clone(), state: current, recall, expired })
        })
    }

    /// Where a transaction is recorded and its result, if it reached the ledger.
    pub fn locate(&self, id: TxId) -> Result<Option<TxLocation>, QueryError> {
        reads::locate(self.storage().as_ref(), id)
    }

    /// A transaction as recorded, with its result.
    pub(crate) fn transaction(&self, id: TxId) -> Result<Option<(SignedTransaction, TxResult)>, QueryError> {
        reads::transaction(self.storage().as_ref(), id)
    }

    /// An inclusion proof of a transaction and its result, up to the checkpoint of the round
    /// that sealed it. Anyone holding that checkpoint's hash checks it offline; the example of
    /// [`Ledger`] proves a transaction and checks the proof.
    pub(crate) fn prove(&self, id: TxId) -> Result<Option<Proof>, QueryError> {
        let storage = self.storage();
        let Some(mut proof) = reads::prove_in_block(storage.as_ref(), id)? else { return Ok(None) };
        let round = proof.header.round;
        let checkpoint = reads::checkpoint_at(storage.as_ref(), round)?.ok_or_else(|| QueryError::Inconsistent {
            place: layout::describe(&layout::checkpoint(round)),
            detail: "the block's checkpoint is missing",
        })?;
        reads::complete_proof(&mut proof, &checkpoint)?;
        Ok(Some(proof))
    }

    fn storage(&self) -> Arc<dyn Storage> {
        self.core.read().storage.clone()
    }
}

impl Drop for Ledger {
    fn drop(&mut self) {
        self.submit = None;
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}
