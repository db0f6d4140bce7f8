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

use std::collections::HashMap;
use std::iter::once;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use crossbeam_channel::{bounded, Receiver, RecvTimeoutError, Sender, TryRecvError};
use parking_lot::RwLock;
use thiserror::Error;

use crate::block::{BlockHeader, Checkpoint, Proof};
use crate::cache::{StateCache, StorageReads, RESIDENT_TAGS};
use crate::codec::{Codec, DecodeError};
use crate::history::{AccessEntry, CustodyEvent, TxLocation};
use crate::layout;
#[cfg(feature = "rocksdb")]
use crate::limits::BLOCK_CACHE_BYTES;
use crate::limits::{
    BATCH_TRANSACTIONS_MAX, EXECUTE_QUEUE_DEPTH, PENALIZED_CLIENTS_MAX, PENALIZED_QUEUE_DEPTH,
    PENALIZED_VERIFY_PERCENT, PENALTY_BATCHES, PERSIST_QUEUE_DEPTH, ROUND_TRANSACTIONS_MAX, SHARDS_MAX,
    SUBMIT_QUEUE_DEPTH, VERIFY_ONE_CHUNK_MAX,
};
use crate::model::{ActorKey, Hash, Reason, SignedTransaction, Timestamp, TxId, TxResult, UnitId};
use crate::reads;
use crate::round::{decode_round_meta, execute_round, Genesis};
use crate::routing::{shard_of_actor, shard_of_unit};
use crate::shard::Shard;
use crate::signature::SignatureVerifier;
use crate::state::{Account, Actor, Claim, Map, Recall, Set, State, StateKey, StateLoader, Unit};
#[cfg(feature = "rocksdb")]
use crate::storage::RocksStorage;
use crate::storage::{MemoryStorage, Storage, StorageError};

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
    pub shards: u32,
    /// Operators that exist from the start; they register every other actor.
    pub genesis_operators: Vec<ActorKey>,
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

/// RocksDB in a directory; with a state cache, its own memory is bounded too.
#[cfg(feature = "rocksdb")]
fn rocks_storage(path: &std::path::Path, options: &Options) -> Result<RocksStorage, StorageError> {
    RocksStorage::open_with(path, options.state_cache_entries.map(|_| BLOCK_CACHE_BYTES))
}

/// Why a ledger could not be opened.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum OpenError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("invalid configuration: {0}")]
    Config(&'static str),
    #[error("the ledger has {stored} shards; it cannot be opened with {requested}")]
    ShardCount { stored: u32, requested: u32 },
    #[error("stored data is damaged at {place}: {detail} (run `caduceus verify`)")]
    Corrupt { place: String, detail: String },
    #[error("{0} holds no ledger")]
    NoLedger(std::path::PathBuf),
    #[error(
        "the store is in format {stored} and this build reads format {expected}: open it with the build that wrote it, or rebuild it"
    )]
    Format { stored: u32, expected: u32 },
}

/// Refuses a store written in another format than this build's (`layout::STORE_FORMAT`).
pub(crate) fn check_format(storage: &dyn Storage) -> Result<(), OpenError> {
    let stored = match storage.get(layout::META_FORMAT)? {
        None => 1,
        Some(bytes) => u32::from_le_bytes(bytes.as_slice().try_into().map_err(|_| OpenError::Corrupt {
            place: layout::describe(layout::META_FORMAT),
            detail: "not a 4-byte format number".into(),
        })?),
    };
    if stored != layout::STORE_FORMAT {
        return Err(OpenError::Format { stored, expected: layout::STORE_FORMAT });
    }
    Ok(())
}

/// Why a batch was not accepted. Per-transaction outcomes are `TxResult`s, not errors.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum SubmitError {
    #[error("batch of {count} transactions is over the limit of {limit}")]
    BatchTooLarge { count: usize, limit: usize },
    #[error("the write was not made durable, so nothing in the batch was applied: {0}")]
    Storage(String),
    #[error("the ledger is closed")]
    Closed,
}

/// Why a query failed.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum QueryError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("stored data is damaged at {place}: {source} (run `caduceus verify`)")]
    Corrupt { place: String, source: DecodeError },
    #[error("stored data is inconsistent at {place}: {detail} (run `caduceus verify`)")]
    Inconsistent { place: String, detail: &'static str },
}

/// What the ledger says about a serialized unit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnitVerification {
    pub unit: UnitId,
    /// `None`: never commissioned on this ledger, so not genuine.
    pub state: Option<Unit>,
    pub recall: Option<Recall>,
    pub expired: bool,
}

impl UnitVerification {
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

/// Loads one shard's stored state entries: every family, or only those whose tags (see
/// `StateKey::to_bytes`) are listed.
pub fn load_state(storage: &dyn Storage, id: u32, families: Option<&[u8]>) -> Result<State, OpenError> {
    let mut loader = StateLoader::new();
    let prefix = layout::state_prefix(id);
    let prefixes: Vec<Vec<u8>> = match families {
        None => vec![prefix.clone()],
        Some(tags) => tags.iter().map(|tag| [prefix.as_slice(), &[*tag]].concat()).collect(),
    };
    let mut failure = None;
    for scanned in &prefixes {
        storage.scan(scanned, &mut |key, value| match loader.insert(&key[prefix.len()..], value) {
            Ok(()) => true,
            Err(e) => {
                failure = Some(OpenError::Corrupt { place: layout::describe(key), detail: e.to_string() });
                false
            }
        })?;
    }
    failure.map_or_else(|| Ok(loader.finish()), Err)
}

struct Core {
    storage: Arc<dyn Storage>,
    genesis: Genesis,
    shards: Vec<Shard>,
    round: u64,
    checkpoint: Option<Checkpoint>,
    /// The last executed group (groups are numbered from 1 as they execute).
    executed: u64,
    /// Bumped whenever a failed write throws away executed, not yet durable groups.
    epoch: u64,
    /// Results of transactions executed in groups not yet durable, so a repeat of one in a
    /// later group gets the same answer: id -> (group, result).
    unpersisted: Map<TxId, (u64, TxResult)>,
    /// The ids each not yet durable group executed, and the state entries it wrote, oldest first.
    unpersisted_groups: std::collections::VecDeque<UnpersistedGroup>,
    /// Which state entries of the families that grow with history are in memory, with a limit;
    /// `None`: all of them.
    cache: Option<StateCache>,
}

impl Core {
    fn checkpoint_hash(&self) -> Hash {
        self.checkpoint.as_ref().map_or([0; 32], Checkpoint::hash)
    }

    /// Loads the durable state: config, each shard's state and head, the last checkpoint.
    fn load(storage: Arc<dyn Storage>, config: &Config, options: &Options) -> Result<Self, OpenError> {
        let damaged = |key: &[u8], detail: String| OpenError::Corrupt { place: layout::describe(key), detail };
        let genesis = match storage.get(layout::META_CONFIG)? {
            Some(bytes) => {
                check_format(storage.as_ref())?;
                let genesis = Genesis::decode(&bytes).map_err(|e| damaged(layout::META_CONFIG, e.to_string()))?;
                if genesis.shards != config.shards {
                    return Err(OpenError::ShardCount { stored: genesis.shards, requested: config.shards });
                }
                genesis
            }
            None => {
                if config.shards == 0 || config.shards > SHARDS_MAX {
                    return Err(OpenError::Config("shard count must be between 1 and 256"));
                }
                if config.genesis_operators.is_empty() {
                    return Err(OpenError::Config("a new ledger needs at least one genesis operator"));
                }
                let genesis = Genesis { shards: config.shards, operators: config.genesis_operators.clone() };
                storage.write(&genesis.writes())?;
                genesis
            }
        };
        let (round, checkpoint) = match storage.get(layout::META_ROUND)? {
            None => (0, None),
            Some(bytes) => {
                let (round, hash) =
                    decode_round_meta(&bytes).map_err(|e| damaged(layout::META_ROUND, e.to_string()))?;
                let key = layout::checkpoint(round);
                let stored = storage.get(&key)?.ok_or_else(|| damaged(&key, "missing".into()))?;
                let checkpoint = Checkpoint::decode(&stored).map_err(|e| damaged(&key, e.to_string()))?;
                if checkpoint.hash() != hash || checkpoint.heads.len() != genesis.shards as usize {
                    return Err(damaged(&key, "does not match the round record".into()));
                }
                (round, Some(checkpoint))
            }
        };
        // Every shard's state loads on its own thread: reopening is a scan and a decode of
        // every state entry, which divides over the cores.
        use rayon::prelude::*;
        let shards = (0..genesis.shards)
            .into_par_iter()
            .map(|id| {
                // With a cache limit, only the families that grow with the population; the rest
                // is read as needed.
                let families = options.state_cache_entries.map(|_| RESIDENT_TAGS.as_slice());
                let state = load_state(storage.as_ref(), id, families)?;
                let (height, head, time) = match checkpoint.as_ref().map(|c| c.heads[id as usize]) {
                    Some(head) if head.height > 0 => {
                        let key = layout::header(id, head.height);
                        let bytes = storage.get(&key)?.ok_or_else(|| damaged(&key, "missing".into()))?;
                        let header = BlockHeader::decode(&bytes).map_err(|e| damaged(&key, e.to_string()))?;
                        if header.hash() != head.hash || head.shard != id {
                            return Err(damaged(&key, "does not match the checkpoint".into()));
                        }
                        (head.height, head.hash, header.time)
                    }
                    _ => (0, [0; 32], 0),
                };
                Ok(Shard::restore(id, genesis.shards, state, height, head, time))
            })
            .collect::<Result<Vec<Shard>, OpenError>>()?;
        let cache = options.state_cache_entries.map(|limit| StateCache::new(shards.len(), limit));
        Ok(Core {
            storage,
            genesis,
            shards,
            round,
            checkpoint,
            executed: 0,
            epoch: 0,
            unpersisted: Map::default(),
            unpersisted_groups: Default::default(),
            cache,
        })
    }

    /// Executes a group of verified batches: each batch is its own round (so results depend
    /// only on the order of batches, never on how they were grouped), and all the group's
    /// rounds go to storage in one write, which the persist stage makes. `durable` is the last
    /// group known to be durable. Returns `None` when the group was answered already (a failed
    /// lookup).
    fn execute(&mut self, group: Vec<Verified>, clock: &Clock, durable: u64) -> Option<Executed> {
        while self.unpersisted_groups.front().is_some_and(|group| group.seq <= durable) {
            let UnpersistedGroup { seq, ids, .. } = self.unpersisted_groups.pop_front().expect("a durable group");
            for id in ids {
                if self.unpersisted.get(&id).is_some_and(|(s, _)| *s == seq) {
                    self.unpersisted.remove(&id);
                }
            }
        }
        if let Some(cache) = self.cache.as_mut().filter(|cache| cache.over_limit(&self.shards)) {
            let mut keep: Map<u32, Set<StateKey>> = Map::default();
            for (shard, key) in self.unpersisted_groups.iter().flat_map(|group| &group.written) {
                keep.entry(*shard).or_default().insert(key.clone());
            }
            cache.evict(&mut self.shards, keep);
        }
        let lookups: Vec<Vec<u8>> =
            group.iter().flat_map(|v| v.transactions.iter().map(|t| layout::transaction(t.id()))).collect();
        let stored = self.storage.get_many(&lookups).and_then(|stored| match self.cache.as_mut() {
            Some(cache) => {
                let verified = group.iter().flat_map(|v| v.transactions.iter().zip(&v.verdicts));
                let to_run = verified.filter(|(_, verdict)| verdict.is_none()).map(|(transaction, _)| transaction);
                cache.load(&mut self.shards, self.storage.as_ref(), to_run).map(|()| stored)
            }
            None => Ok(stored),
        });
        let stored = match stored {
            Ok(stored) => stored,
            Err(error) => {
                answer_all(group, Err(SubmitError::Storage(error.to_string())));
                return None;
            }
        };
        let seq = self.executed + 1;
        let mut stored = stored.into_iter();
        let mut executed_ids = Vec::new();
        let mut written = Vec::new();
        let mut writes = Vec::new();
        let mut answers: Vec<Vec<TxResult>> = Vec::with_capacity(group.len());
        let now = clock();
        for verified in &group {
            let mut slots = Vec::with_capacity(verified.transactions.len());
            let mut round_transactions = Vec::new();
            let mut in_round: Map<TxId, usize> = Map::default();
            for (transaction, verdict) in verified.transactions.iter().zip(&verified.verdicts) {
                let earlier = stored.next().expect("one lookup per transaction");
                let slot = if let Some(reason) = verdict {
                    Slot::Done(TxResult::Rejected(*reason))
                } else if let Some(bytes) = earlier {
                    match TxLocation::decode(&bytes) {
                        Ok(location) => Slot::Done(location.result),
                        Err(_) => Slot::Done(TxResult::Rejected(Reason::Malformed)),
                    }
                } else if let Some((_, result)) = self.unpersisted.get(&transaction.id()) {
                    Slot::Done(*result)
                } else if let Some(&position) = in_round.get(&transaction.id()) {
                    Slot::Round(position)
                } else {
                    in_round.insert(transaction.id(), round_transactions.len());
                    round_transactions.push(transaction.clone());
                    Slot::Round(round_transactions.len() - 1)
                };
                slots.push(slot);
            }
            let mut results = Vec::new();
            if !round_transactions.is_empty() {
                let round = self.round + 1;
                let previous = self.checkpoint_hash();
                let mut outcome = execute_round(&mut self.shards, round, previous, now, &round_transactions);
                let (balances, funded) = crate::shard::fund_totals(&self.shards);
                assert_eq!(balances, funded, "funds are conserved after every round");
                // With a cache, what storage does not have yet must stay in memory.
                for block in outcome.blocks.iter().filter(|_| self.cache.is_some()) {
                    let skip = layout::state_prefix(block.header.shard).len();
                    for (key, _) in &block.state_writes {
                        let key = StateKey::from_bytes(&key[skip..]).expect("the shard wrote a valid state key");
                        written.push((block.header.shard, key));
                    }
                }
                results = std::mem::take(&mut outcome.results);
                for (transaction, result) in round_transactions.iter().zip(&results) {
                    self.unpersisted.insert(transaction.id(), (seq, *result));
                    executed_ids.push(transaction.id());
                }
                self.round = round;
                self.checkpoint = Some(outcome.checkpoint.clone());
                writes.extend(outcome.into_writes());
            }
            answers.push(
                slots
                    .into_iter()
                    .map(|slot| match slot {
                        Slot::Done(result) => result,
                        Slot::Round(position) => results[position],
                    })
                    .collect(),
            );
        }
        self.executed = seq;
        self.unpersisted_groups.push_back(UnpersistedGroup { seq, ids: executed_ids, written });
        let replies = group.into_iter().map(|v| v.reply).zip(answers).collect();
        Some(Executed { seq, epoch: self.epoch, writes, replies })
    }

    /// A state entry that is not resident, read from storage (so durable).
    fn stored<T: Codec>(&self, shard: u32, key: &StateKey) -> Result<Option<T>, QueryError> {
        let key = layout::state(shard, key);
        self.storage.get(&key)?.map(|bytes| T::decode(&bytes).map_err(crate::reads::corrupt(&key))).transpose()
    }

    /// Goes back to what is durable, after a failed write: everything executed since is dropped.
    fn reload(&mut self) {
        let config = Config { shards: self.genesis.shards, genesis_operators: self.genesis.operators.clone() };
        let options = Options { state_cache_entries: self.cache.as_ref().map(StateCache::limit) };
        match Core::load(self.storage.clone(), &config, &options) {
            Ok(reloaded) => {
                let (executed, epoch) = (self.executed, self.epoch + 1);
                *self = reloaded;
                self.executed = executed;
                self.epoch = epoch;
            }
            Err(reload) => panic!("a write failed and the durable state cannot be reloaded: {reload}"),
        }
    }
}

/// What the execute stage remembers of a group until it is durable.
struct UnpersistedGroup {
    seq: u64,
    /// The transactions it executed.
    ids: Vec<TxId>,
    /// The state entries it wrote, by shard (with a state cache only): kept in memory until
    /// storage has them.
    written: Vec<(u32, StateKey)>,
}

/// A group executed in memory, waiting to be made durable before it is answered.
struct Executed {
    seq: u64,
    epoch: u64,
    writes: Vec<crate::storage::Write>,
    replies: Vec<(Sender<Answer>, Vec<TxResult>)>,
}

/// The last durable group, and the epoch it belongs to; queries wait on it.
#[derive(Default)]
struct Durable {
    state: parking_lot::Mutex<(u64, u64)>,
    changed: parking_lot::Condvar,
}

impl Durable {
    fn set(&self, seq: u64, epoch: u64) {
        *self.state.lock() = (seq, epoch);
        self.changed.notify_all();
    }
    fn get(&self) -> (u64, u64) {
        *self.state.lock()
    }
    /// Waits until group `seq` of `epoch` is durable (true) or was thrown away (false).
    fn wait(&self, seq: u64, epoch: u64) -> bool {
        let mut state = self.state.lock();
        loop {
            let (durable, current) = *state;
            if current != epoch {
                return false;
            }
            if durable >= seq {
                return true;
            }
            self.changed.wait(&mut state);
        }
    }
}

enum Slot {
    Done(TxResult),
    Round(usize),
}

type Answer = Result<Vec<TxResult>, SubmitError>;

struct Submission {
    client: ClientId,
    /// Queued behind other clients' batches because this client sent bad signatures.
    penalized: bool,
    transactions: Vec<SignedTransaction>,
    reply: Sender<Answer>,
}

/// Who submitted a batch, as the embedding application (or the cluster's coordinator, per
/// connection) tells it; `Ledger::submit_async` uses client 0.
pub type ClientId = u64;

/// A client's standing with the verify stage.
#[derive(Default)]
struct Standing {
    /// This client's next batches still go to the penalized queue.
    penalty_left: u32,
    /// Its batches waiting in the penalized queue (while any wait, its later ones queue behind
    /// them there, so one client's batches keep their order).
    queued: usize,
}

/// Clients that sent bad signatures, and how their batches queue.
#[derive(Default)]
struct Standings(parking_lot::Mutex<HashMap<ClientId, Standing>>);

impl Standings {
    /// Whether the client's next batch goes to the penalized queue (and counts it there).
    fn route(&self, client: ClientId) -> bool {
        let mut standings = self.0.lock();
        let Some(standing) = standings.get_mut(&client) else { return false };
        if standing.penalty_left == 0 && standing.queued == 0 {
            standings.remove(&client);
            return false;
        }
        standing.penalty_left = standing.penalty_left.saturating_sub(1);
        standing.queued += 1;
        true
    }

    /// After a batch is verified: a bad signature (re)starts the client's penalty.
    fn verified(&self, client: ClientId, penalized: bool, bad: bool) {
        let mut standings = self.0.lock();
        if bad {
            if standings.len() >= PENALIZED_CLIENTS_MAX {
                // Forget the penalties of clients with nothing queued rather than grow without bound.
                standings.retain(|_, standing| standing.queued > 0);
            }
            standings.entry(client).or_default().penalty_left = PENALTY_BATCHES;
        }
        if penalized {
            if let Some(standing) = standings.get_mut(&client) {
                standing.queued -= 1;
            }
        }
    }
}

struct Verified {
    transactions: Vec<SignedTransaction>,
    verdicts: Vec<Option<Reason>>,
    reply: Sender<Answer>,
}

fn answer_all(group: Vec<Verified>, answer: Answer) {
    for verified in group {
        let _ = verified.reply.send(answer.clone());
    }
}

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
/// use caduceus_engine::{Config, Ledger, Operation, Role, Transaction, TxResult};
/// use caduceus_engine::signature::{actor_key, sign, signing_key};
///
/// let operator = signing_key([1; 32]);
/// let config = Config { shards: 2, genesis_operators: vec![actor_key(&operator)] };
/// let ledger = Ledger::open_in_memory(&config)?;
///
/// let provider = signing_key([2; 32]);
/// let register = Transaction {
///     id: 1,
///     signer: actor_key(&operator),
///     timestamp: 0,
///     operation: Operation::RegisterActor { actor: actor_key(&provider), role: Role::Provider, name: "Clinic".into() },
/// };
/// let results = ledger.submit(vec![sign(register, &operator)?])?;
/// assert_eq!(results, vec![TxResult::Committed]);
///
/// // The same id again returns the first result and applies nothing.
/// let again = Transaction {
///     id: 1,
///     signer: actor_key(&operator),
///     timestamp: 0,
///     operation: Operation::RegisterActor { actor: actor_key(&provider), role: Role::Payer, name: "Clinic".into() },
/// };
/// assert_eq!(ledger.submit(vec![sign(again, &operator)?])?, vec![TxResult::Committed]);
/// assert_eq!(ledger.actor(&actor_key(&provider)).unwrap().role, Role::Provider);
///
/// let proof = ledger.prove(1)?.expect("committed transactions have proofs");
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
    /// Opens (or creates) a ledger in a directory, on RocksDB.
    #[cfg(feature = "rocksdb")]
    pub fn open(path: &std::path::Path, config: &Config) -> Result<Self, OpenError> {
        Self::open_with(Arc::new(RocksStorage::open(path)?), config, system_clock())
    }

    /// Opens (or creates) a ledger in a directory, on RocksDB, with options.
    #[cfg(feature = "rocksdb")]
    pub fn open_with_options(path: &std::path::Path, config: &Config, options: &Options) -> Result<Self, OpenError> {
        Self::open_on(Arc::new(rocks_storage(path, options)?), config, system_clock(), options)
    }

    /// Opens a ledger that already exists in a directory, with its stored configuration.
    #[cfg(feature = "rocksdb")]
    pub fn open_existing(path: &std::path::Path) -> Result<Self, OpenError> {
        Self::open_existing_with(path, &Options::default())
    }

    /// Opens a ledger that already exists in a directory, with its stored configuration and
    /// these options.
    #[cfg(feature = "rocksdb")]
    pub fn open_existing_with(path: &std::path::Path, options: &Options) -> Result<Self, OpenError> {
        if !path.join("CURRENT").exists() {
            return Err(OpenError::NoLedger(path.to_owned()));
        }
        let storage = Arc::new(rocks_storage(path, options)?);
        let bytes = storage.get(layout::META_CONFIG)?.ok_or_else(|| OpenError::Corrupt {
            place: layout::describe(layout::META_CONFIG),
            detail: "missing".into(),
        })?;
        let genesis = Genesis::decode(&bytes)
            .map_err(|e| OpenError::Corrupt { place: layout::describe(layout::META_CONFIG), detail: e.to_string() })?;
        let config = Config { shards: genesis.shards, genesis_operators: genesis.operators };
        Self::open_on(storage, &config, system_clock(), options)
    }

    /// A ledger that lives in memory only.
    pub fn open_in_memory(config: &Config) -> Result<Self, OpenError> {
        Self::open_with(Arc::new(MemoryStorage::new()), config, system_clock())
    }

    /// Opens a ledger on any storage, with a chosen clock.
    pub fn open_with(storage: Arc<dyn Storage>, config: &Config, clock: Clock) -> Result<Self, OpenError> {
        Self::open_on(storage, config, clock, &Options::default())
    }

    /// Opens a ledger on any storage, with a chosen clock and options.
    pub fn open_on(
        storage: Arc<dyn Storage>,
        config: &Config,
        clock: Clock,
        options: &Options,
    ) -> Result<Self, OpenError> {
        let core = Arc::new(RwLock::new(Core::load(storage, config, options)?));
        let (submit_sender, submit_receiver) = bounded::<Submission>(SUBMIT_QUEUE_DEPTH);
        let (penalized_sender, penalized_receiver) = bounded::<Submission>(PENALIZED_QUEUE_DEPTH);
        let (verified_sender, verified_receiver) = bounded::<Verified>(EXECUTE_QUEUE_DEPTH);
        let standings = Arc::new(Standings::default());
        let verifier = {
            let standings = standings.clone();
            std::thread::Builder::new()
                .name("caduceus-verify".into())
                .spawn(move || verify_stage(&submit_receiver, &penalized_receiver, &standings, &verified_sender))
                .expect("spawn the verify stage")
        };
        let durable = Arc::new(Durable::default());
        let (persist_sender, persist_receiver) = bounded::<Executed>(PERSIST_QUEUE_DEPTH);
        let executor = {
            let (core, clock, durable) = (core.clone(), clock.clone(), durable.clone());
            // The execute stage runs on rayon threads of its own, one per core: on the pool
            // the verify stage uses, a round's shards would wait behind whole signature chunks.
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(std::thread::available_parallelism().map_or(1, |n| n.get()))
                .thread_name(|i| format!("caduceus-exec-{i}"))
                .build()
                .expect("start the execution threads");
            std::thread::Builder::new()
                .name("caduceus-execute".into())
                .spawn(move || {
                    pool.install(|| execute_stage(&core, &verified_receiver, &clock, &durable, &persist_sender))
                })
                .expect("spawn the execute stage")
        };
        let persister = {
            let (core, durable) = (core.clone(), durable.clone());
            let storage = core.read().storage.clone();
            std::thread::Builder::new()
                .name("caduceus-persist".into())
                .spawn(move || persist_stage(&core, storage.as_ref(), &persist_receiver, &durable))
                .expect("spawn the persist stage")
        };
        Ok(Self {
            core,
            durable,
            submit: Some((submit_sender, penalized_sender)),
            standings,
            threads: vec![verifier, executor, persister],
            clock,
        })
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

    /// Submits a batch and waits until its results are durable.
    pub fn submit(&self, transactions: Vec<SignedTransaction>) -> Answer {
        self.submit_async(transactions)?.wait()
    }

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

    pub fn actor(&self, actor: &ActorKey) -> Option<Actor> {
        self.read_durable(|core| core.shards[0].state().actors.get(actor).cloned())
    }

    pub fn account(&self, owner: &ActorKey) -> Option<Account> {
        self.read_durable(|core| {
            core.shards[shard_of_actor(owner, core.genesis.shards) as usize].state().accounts.get(owner).copied()
        })
    }

    /// A claim, looked up on its patient's shard.
    pub fn claim(&self, patient: &ActorKey, claim: u128) -> Result<Option<Claim>, QueryError> {
        self.read_durable(|core| {
            let shard = shard_of_actor(patient, core.genesis.shards);
            match core.shards[shard as usize].state().claims.get(&(*patient, claim)) {
                Some(claim) => Ok(Some(claim.clone())),
                None => core.stored(shard, &StateKey::Claim(*patient, claim)),
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

    /// Who accessed the patient's records, when, why, and whether it was permitted; oldest first.
    pub fn access_report(&self, patient: &ActorKey) -> Result<Vec<AccessEntry>, QueryError> {
        reads::access_report(self.storage().as_ref(), patient)
    }

    /// Every custody event of a unit, accepted or refused; oldest first.
    pub fn custody_trace(&self, unit: &UnitId) -> Result<Vec<CustodyEvent>, QueryError> {
        reads::custody_trace(self.storage().as_ref(), unit)
    }

    /// Where a transaction is recorded and its result, if it reached the ledger.
    pub fn locate(&self, id: TxId) -> Result<Option<TxLocation>, QueryError> {
        reads::locate(self.storage().as_ref(), id)
    }

    /// A transaction as recorded, with its result.
    pub fn transaction(&self, id: TxId) -> Result<Option<(SignedTransaction, TxResult)>, QueryError> {
        reads::transaction(self.storage().as_ref(), id)
    }

    /// An inclusion proof of a transaction and its result, up to the checkpoint of the round that sealed it.
    pub fn prove(&self, id: TxId) -> Result<Option<Proof>, QueryError> {
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

/// Checks the signatures of each submitted batch. A penalized client's batch is taken only when
/// no batch of a client in good standing is waiting, and penalized batches get at most
/// `PENALIZED_VERIFY_PERCENT` of the stage's time.
fn verify_stage(
    clean: &Receiver<Submission>,
    penalized: &Receiver<Submission>,
    standings: &Standings,
    verified: &Sender<Verified>,
) {
    let verifier = SignatureVerifier::new();
    let mut penalized_from = Instant::now();
    let mut carried: Option<Submission> = None;
    loop {
        let submission = match carried.take() {
            Some(submission) => Ok(submission),
            None => match clean.try_recv() {
                Ok(submission) => Ok(submission),
                Err(_) if Instant::now() >= penalized_from => crossbeam_channel::select_biased! {
                    recv(clean) -> submission => submission,
                    recv(penalized) -> submission => submission,
                },
                Err(_) => match clean.recv_deadline(penalized_from) {
                    Ok(submission) => Ok(submission),
                    Err(RecvTimeoutError::Timeout) => continue,
                    Err(RecvTimeoutError::Disconnected) => return,
                },
            },
        };
        let Ok(submission) = submission else { return };
        // A small batch is one chunk on one thread; a second one waiting takes the other.
        let beside = if !submission.penalized && submission.transactions.len() <= VERIFY_ONE_CHUNK_MAX {
            match clean.try_recv() {
                Ok(next) if next.transactions.len() <= VERIFY_ONE_CHUNK_MAX => Some(next),
                Ok(next) => {
                    carried = Some(next);
                    None
                }
                Err(_) => None,
            }
        } else {
            None
        };
        let started = Instant::now();
        let (verdicts, beside) = match beside {
            Some(other) => {
                let (verdicts, others) =
                    rayon::join(|| verifier.verify(&submission.transactions), || verifier.verify(&other.transactions));
                (verdicts, Some((other, others)))
            }
            None => (verifier.verify(&submission.transactions), None),
        };
        if submission.penalized {
            let took = started.elapsed();
            penalized_from = Instant::now() + took * (100 / PENALIZED_VERIFY_PERCENT - 1);
        }
        for (submission, verdicts) in once((submission, verdicts)).chain(beside) {
            let bad = verdicts.iter().any(|v| matches!(v, Some(Reason::BadSignature | Reason::BatchAbandoned)));
            standings.verified(submission.client, submission.penalized, bad);
            let batch = Verified { transactions: submission.transactions, verdicts, reply: submission.reply };
            if verified.send(batch).is_err() {
                return;
            }
        }
    }
}

/// Takes verified batches as they come, groups those waiting, and executes each group under
/// the core's lock; the persist stage makes it durable and answers.
fn execute_stage(
    core: &RwLock<Core>,
    verified: &Receiver<Verified>,
    clock: &Clock,
    durable: &Durable,
    persist: &Sender<Executed>,
) {
    let mut carried: Option<Verified> = None;
    loop {
        let first = match carried.take() {
            Some(first) => first,
            None => match verified.recv() {
                Ok(first) => first,
                Err(_) => return,
            },
        };
        let mut count = first.transactions.len();
        let mut group = vec![first];
        while count < ROUND_TRANSACTIONS_MAX {
            match verified.try_recv() {
                Ok(next) if count + next.transactions.len() <= ROUND_TRANSACTIONS_MAX => {
                    count += next.transactions.len();
                    group.push(next);
                }
                Ok(next) => {
                    carried = Some(next);
                    break;
                }
                Err(TryRecvError::Empty | TryRecvError::Disconnected) => break,
            }
        }
        let executed = core.write().execute(group, clock, durable.get().0);
        if let Some(executed) = executed {
            if persist.send(executed).is_err() {
                return;
            }
        }
    }
}

/// Writes each executed group in one atomic, fsynced write, in order, and only then answers.
/// When a write fails, the core goes back to what is durable, and every group executed on top
/// of the lost one is refused too.
fn persist_stage(core: &RwLock<Core>, storage: &dyn Storage, executed: &Receiver<Executed>, durable: &Durable) {
    let mut epoch = 0;
    for group in executed {
        if group.epoch != epoch {
            let refused = SubmitError::Storage("an earlier write failed, so nothing in the batch was applied".into());
            for (reply, _) in group.replies {
                let _ = reply.send(Err(refused.clone()));
            }
            continue;
        }
        if group.writes.is_empty() {
            durable.set(group.seq, epoch);
        } else if let Err(error) = storage.write(&group.writes) {
            let mut core = core.write();
            core.reload();
            epoch = core.epoch;
            // The reloaded state is the durable one.
            durable.set(core.executed, epoch);
            drop(core);
            for (reply, _) in group.replies {
                let _ = reply.send(Err(SubmitError::Storage(error.to_string())));
            }
            continue;
        } else {
            durable.set(group.seq, epoch);
        }
        for (reply, results) in group.replies {
            let _ = reply.send(Ok(results));
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_stays_penalized_for_its_next_batches_and_while_any_wait_in_the_penalized_queue() {
        let standings = Standings::default();
        assert!(!standings.route(3), "a client in good standing");
        standings.verified(3, false, true); // a batch with bad signatures
        let routed: Vec<bool> = (0..PENALTY_BATCHES).map(|_| standings.route(3)).collect();
        assert!(routed.iter().all(|&penalized| penalized));
        // The penalty is used up, but its batches still wait there: the next one queues behind them.
        assert!(standings.route(3));
        for _ in 0..=PENALTY_BATCHES {
            standings.verified(3, true, false);
        }
        assert!(!standings.route(3), "back in good standing once its queued batches are verified");
        assert!(!standings.route(4), "other clients were never penalized");
    }
}
