//! The ledger's state in memory: every shard, the last checkpoint, and the results of groups
//! executed but not yet durable. Only the execute stage changes it, except that the persist
//! stage reloads it after a failed write. It reads storage only when opening and reloading;
//! the execute stage reads what a group needs before it runs.

use std::sync::Arc;

use crate::block::{BlockHeader, Checkpoint};
use crate::cache::{StateCache, RESIDENT_TAGS};
use crate::codec::Codec;
use crate::history::TxLocation;
use crate::layout;
use crate::limits::SHARDS_MAX;
use crate::model::{Hash, Reason, SignedTransaction, TxId, TxResult};
use crate::round::{decode_round_meta, execute_round, Genesis};
use crate::shard::Shard;
use crate::state::{Map, Set, State, StateKey, StateLoader};
use crate::storage::Storage;

use super::execute_stage::{Executed, Verified};
use super::{Clock, Config, OpenError, Options, QueryError};

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

/// The shards, the last checkpoint, and what executed groups not yet durable left behind.
pub(super) struct Core {
    pub(super) storage: Arc<dyn Storage>,
    pub(super) genesis: Genesis,
    pub(super) shards: Vec<Shard>,
    pub(super) round: u64,
    pub(super) checkpoint: Option<Checkpoint>,
    /// The last executed group (groups are numbered from 1 as they execute).
    pub(super) executed: u64,
    /// Bumped whenever a failed write throws away executed, not yet durable groups.
    pub(super) epoch: u64,
    /// Results of transactions recorded in groups not yet durable, so a repeat of one in a
    /// later group gets the same answer: id -> (group, result, body digest).
    pub(super) unpersisted: Map<TxId, (u64, TxResult, Hash)>,
    /// The ids each not yet durable group executed, and the state entries it wrote, oldest first.
    pub(super) unpersisted_groups: std::collections::VecDeque<UnpersistedGroup>,
    /// Which state entries of the families that grow with history are in memory, with a limit;
    /// `None`: all of them.
    pub(super) cache: Option<StateCache>,
}

impl Core {
    pub(super) fn checkpoint_hash(&self) -> Hash {
        self.checkpoint.as_ref().map_or_else(|| self.genesis.hash(), Checkpoint::hash)
    }

    /// Loads the durable state: config, each shard's state and head, the last checkpoint.
    pub(super) fn load(storage: Arc<dyn Storage>, config: &Config, options: &Options) -> Result<Self, OpenError> {
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
                let quorum = config.operator_quorum;
                if quorum == 0 || quorum as usize > config.genesis_operators.len() {
                    return Err(OpenError::Config("the operator quorum must be between 1 and the genesis operators"));
                }
                let genesis = Genesis { shards: config.shards, operators: config.genesis_operators.clone(), quorum };
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
                Ok(Shard::restore(id, genesis.shards, state, height, head, time).with_quorum(genesis.quorum))
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

    /// Before a group runs: forgets the unpersisted results of groups now durable (`durable` is
    /// the last one), and with a state cache over its limit drops what storage has.
    pub(super) fn settle(&mut self, durable: u64) {
        while self.unpersisted_groups.front().is_some_and(|group| group.seq <= durable) {
            let UnpersistedGroup { seq, ids, .. } = self.unpersisted_groups.pop_front().expect("a durable group");
            for id in ids {
                if self.unpersisted.get(&id).is_some_and(|(s, _, _)| *s == seq) {
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
    }

    /// Executes a group of verified batches, whose earlier results `stored` gives (one
    /// transaction-index lookup per transaction, in order): each batch is its own round (so
    /// results depend only on the order of batches, never on how they were grouped), and all
    /// the group's rounds go to storage in one write, which the persist stage makes. Everything
    /// the rules read is resident: the execute stage read it before.
    pub(super) fn run(&mut self, group: Vec<Verified>, stored: Vec<Option<Vec<u8>>>, clock: &Clock) -> Executed {
        let seq = self.executed + 1;
        let mut stored = stored.into_iter();
        let mut executed_ids = Vec::new();
        let mut written = Vec::new();
        let mut writes = Vec::new();
        let mut answers: Vec<Vec<TxResult>> = Vec::with_capacity(group.len());
        // The commit time of the group's rounds, never before any shard's last block (as
        // `execute_round` takes it): transactions are admitted against it.
        let now = self.shards.iter().map(Shard::last_time).fold(clock(), u64::max);
        for verified in &group {
            let mut slots = Vec::with_capacity(verified.transactions.len());
            let mut round_transactions: Vec<SignedTransaction> = Vec::new();
            let mut in_round: Map<TxId, usize> = Map::default();
            for (transaction, verdict) in verified.transactions.iter().zip(&verified.verdicts) {
                let earlier = stored.next().expect("one lookup per transaction");
                let slot = if let Some(reason) = verdict {
                    Slot::Done(TxResult::Rejected(*reason))
                } else if let Some(bytes) = earlier {
                    match TxLocation::decode(&bytes) {
                        Ok(location) => Slot::Done(location.answer(transaction.digest())),
                        Err(_) => Slot::Done(TxResult::Rejected(Reason::Malformed)),
                    }
                } else if let Some((_, result, digest)) = self.unpersisted.get(&transaction.id()) {
                    Slot::Done(TxResult::for_repeat(*result, digest, transaction.digest()))
                } else if let Some(&position) = in_round.get(&transaction.id()) {
                    if round_transactions[position].digest() == transaction.digest() {
                        Slot::Round(position)
                    } else {
                        Slot::Done(TxResult::Rejected(Reason::Conflict))
                    }
                } else if let Err(reason) = self.shards[0].admit(&transaction.transaction, now) {
                    // Refused before the ledger: no round sees it, and its id stays free.
                    Slot::Done(TxResult::Rejected(reason))
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
                // A refused transaction is not recorded: its id stays free.
                for (transaction, result) in round_transactions.iter().zip(&results).filter(|(_, r)| r.is_recorded()) {
                    self.unpersisted.insert(transaction.id(), (seq, *result, *transaction.digest()));
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
        Executed { seq, epoch: self.epoch, writes, replies }
    }

    /// A state entry that is not resident, read from storage (so durable).
    pub(super) fn stored<T: Codec>(&self, shard: u32, key: &StateKey) -> Result<Option<T>, QueryError> {
        let key = layout::state(shard, key);
        self.storage.get(&key)?.map(|bytes| T::decode(&bytes).map_err(crate::reads::corrupt(&key))).transpose()
    }

    /// Goes back to what is durable, after a failed write: everything executed since is dropped.
    pub(super) fn reload(&mut self) {
        let config = Config {
            shards: self.genesis.shards,
            genesis_operators: self.genesis.operators.clone(),
            operator_quorum: self.genesis.quorum,
        };
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
pub(super) struct UnpersistedGroup {
    seq: u64,
    /// The transactions it executed.
    ids: Vec<TxId>,
    /// The state entries it wrote, by shard (with a state cache only): kept in memory until
    /// storage has them.
    written: Vec<(u32, StateKey)>,
}

/// Where a transaction's result comes from: known already, or its round.
enum Slot {
    Done(TxResult),
    Round(usize),
}
