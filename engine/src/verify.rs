//! Verification of stored ledgers: an embedded ledger's store, or a cluster's
//! stores (one per shard, and the coordinator's), checked against each other.
//!
//! Every key a ledger stores is a function of its blocks and, for cross-shard
//! transactions, of the coordinator's logged decisions. Verification streams
//! through the history once:
//!
//! 1. the genesis, the same in every store;
//! 2. the shards' chains, merged by round. Each block's links, height, round,
//!    time, both Merkle roots and every signature are checked; then the round
//!    is replayed shard by shard through the shard state machine: single-shard
//!    transactions in block order, cross-shard ones prepared in the order of
//!    the round's logged decisions, each decision checked against the replayed
//!    votes (commit only where every participant voted yes, otherwise the
//!    lowest refusal code), applied, and the block sealed and compared byte for
//!    byte with the stored one. What the round adds to the history (transaction
//!    index, access log, custody trail, participation records, checkpoint) is
//!    read back from the store at once and counted;
//! 3. the final state of each shard against the stored state entries;
//! 4. in a cluster, the coordinator's checkpoint chain from the genesis hash,
//!    every head a block of its shard's chain, and every note of a late one;
//! 5. one scan of each store counting its keys by family: a key the blocks do
//!    not imply shows as more keys than were matched, and a second replay
//!    names it.
//!
//! Memory: one block per shard, one round's writes and the replayed state,
//! nothing per transaction of history. With a `Scratch` store the replayed
//! state that grows with history (records, consents, claims, units) lives
//! there behind the ledger's own bounded state cache (`cache`), so memory
//! stays the same however long the history. Damaged input is reported with
//! its place, never panicked on.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::panic::{catch_unwind, AssertUnwindSafe};

use crate::block::{merkle_root, BlockBody, BlockHeader, Checkpoint, ShardHead};
use crate::cache::StateCache;
use crate::codec::Codec;
use crate::coordinator::Message;
use crate::layout;
use crate::model::{hex, Hash, Reason, SignedTransaction, TxId, TxResult};
use crate::participant::{participation_records, Head, RoundRequest};
use crate::round::{decode_decisions, encode_round_meta, Genesis};
use crate::routing::participants;
use crate::shard::{Reply, SealedBlock, Shard};
use crate::signature::SignatureVerifier;
use crate::state::{Map, StateKey};
use crate::storage::{Storage, StorageError};

/// Most problems listed in a report (all are counted).
pub const PROBLEMS_LISTED_MAX: usize = 50;

/// One damaged place.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// Where: a key, a block, a round (in a cluster, prefixed with the store).
    pub place: String,
    /// What is wrong there.
    pub detail: String,
}

/// What verification found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Report {
    /// Shards in the ledger.
    pub shards: u32,
    /// The genesis hash the checkpoint chain starts from (`Genesis::hash`).
    pub genesis: Hash,
    /// The genesis operators.
    pub operators: Vec<crate::model::ActorKey>,
    /// Rounds replayed.
    pub rounds: u64,
    /// Blocks whose chain checked.
    pub blocks: u64,
    /// Distinct transactions replayed (a cross-shard one is in several blocks, counted once).
    pub transactions: u64,
    /// Keys in the stores.
    pub keys: u64,
    /// Checkpoints checked.
    pub checkpoints: u64,
    /// The first `PROBLEMS_LISTED_MAX` problems, first found first.
    pub problems: Vec<Problem>,
    /// Every problem found, listed or not.
    pub problem_count: u64,
}

impl Report {
    /// Whether nothing was found wrong.
    pub fn is_intact(&self) -> bool {
        self.problem_count == 0
    }
    fn problem(&mut self, place: impl Into<String>, detail: impl Into<String>) {
        self.problem_count += 1;
        if self.problems.len() < PROBLEMS_LISTED_MAX {
            self.problems.push(Problem { place: place.into(), detail: detail.into() });
        }
    }
}

/// The stores of one ledger.
#[derive(Clone, Copy)]
pub enum Stores<'a> {
    /// An embedded ledger: one store holds everything.
    Embedded(&'a dyn Storage),
    /// A cluster: each shard's store and the coordinator's.
    Cluster {
        /// Each shard's store, by shard id.
        shards: &'a [&'a dyn Storage],
        /// The coordinator's store: its decision log and checkpoints.
        coordinator: &'a dyn Storage,
    },
}

impl<'a> Stores<'a> {
    fn is_cluster(&self) -> bool {
        matches!(self, Stores::Cluster { .. })
    }
    /// Every store, by index: a cluster's shards by id, then its coordinator.
    fn all(&self) -> Vec<&'a dyn Storage> {
        match *self {
            Stores::Embedded(storage) => vec![storage],
            Stores::Cluster { shards, coordinator } => shards.iter().copied().chain([coordinator]).collect(),
        }
    }
    /// The index of the store that holds a shard's blocks, state and history.
    fn of_shard(&self, shard: u32) -> usize {
        if self.is_cluster() {
            shard as usize
        } else {
            0
        }
    }
    /// The index of the store that holds decisions and checkpoints.
    fn of_coordinator(&self) -> usize {
        match self {
            Stores::Embedded(_) => 0,
            Stores::Cluster { shards, .. } => shards.len(),
        }
    }
    fn at(&self, index: usize) -> &'a dyn Storage {
        match *self {
            Stores::Embedded(storage) => storage,
            Stores::Cluster { shards, coordinator } => shards.get(index).copied().unwrap_or(coordinator),
        }
    }
    /// A place in store `index`, named as a report gives it.
    fn place(&self, index: usize, place: impl std::fmt::Display) -> String {
        match self {
            Stores::Embedded(_) => place.to_string(),
            Stores::Cluster { shards, .. } if index == shards.len() => format!("coordinator store: {place}"),
            Stores::Cluster { .. } => format!("shard {index} store: {place}"),
        }
    }
}

/// A block as stored: decoded, and its bytes.
struct Block {
    header: BlockHeader,
    body: BlockBody,
    header_bytes: Vec<u8>,
    body_bytes: Vec<u8>,
}

/// A stored block: `None` where there is no header (past the chain's end), else the block or what is wrong with it.
type StoredBlock = Option<Result<Block, String>>;

fn read_block(storage: &dyn Storage, shard: u32, height: u64) -> Result<StoredBlock, StorageError> {
    let Some(header_bytes) = storage.get(&layout::header(shard, height))? else {
        return Ok(None);
    };
    let header = match BlockHeader::decode(&header_bytes) {
        Ok(header) => header,
        Err(error) => return Ok(Some(Err(format!("header cannot be decoded: {error}")))),
    };
    let Some(body_bytes) = storage.get(&layout::body(shard, height))? else {
        return Ok(Some(Err("body is missing".into())));
    };
    Ok(Some(match BlockBody::decode(&body_bytes) {
        Ok(body) => Ok(Block { header, body, header_bytes, body_bytes }),
        Err(error) => Err(format!("body cannot be decoded: {error}")),
    }))
}

/// Verifies everything in a store.
///
/// ```
/// use std::sync::Arc;
/// use caduceus_engine::storage::{MemoryStorage, Storage};
/// use caduceus_engine::verify::verify_storage;
/// use caduceus_engine::{signature, Config, Ledger, Operation, Role, Transaction};
///
/// let operator = signature::signing_key([1; 32]);
/// let storage = Arc::new(MemoryStorage::new());
/// let config = Config { shards: 2, genesis_operators: vec![signature::actor_key(&operator)], operator_quorum: 1 };
/// let ledger = Ledger::builder().clock(caduceus_engine::ledger::system_clock()).open_on(storage.clone(), &config)?;
/// let actor = signature::actor_key(&signature::signing_key([2; 32]));
/// let register = Transaction {
///     nonce: 7,
///     signer: signature::actor_key(&operator),
///     timestamp: caduceus_engine::ledger::system_clock()(),
///     operation: Operation::RegisterActor { actor, role: Role::Patient, prefixes: vec![] },
///     key: None,
/// };
/// let register = signature::sign(register, &operator)?;
/// ledger.submit(vec![register.clone()])?;
/// drop(ledger);
/// assert!(verify_storage(storage.as_ref())?.is_intact());
///
/// // Change one byte of the transaction index: verification names the place.
/// let key = caduceus_engine::layout::transaction(register.id());
/// let mut value = storage.get(&key)?.unwrap();
/// value[0] ^= 1;
/// storage.write(&[(key, Some(value))])?;
/// let report = verify_storage(storage.as_ref())?;
/// assert!(!report.is_intact());
/// assert!(report.problems[0].place.starts_with("transaction index"));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn verify_storage(storage: &dyn Storage) -> Result<Report, StorageError> {
    verify_against(storage, &[])
}

/// `verify_storage`, and also that the store's chain holds every checkpoint in `anchors`
/// (hashes published earlier, which an auditor trusts). A self-consistent store is not enough:
/// one cut short by whole rounds lacks the later anchors, and one rebuilt without a transaction
/// has other checkpoint hashes from that round on. Either is reported.
pub fn verify_against(storage: &dyn Storage, anchors: &[Hash]) -> Result<Report, StorageError> {
    verify_stores(Stores::Embedded(storage), anchors)
}

/// Verifies a ledger's stores (an embedded one, or a cluster's, checked against each other) and
/// that its checkpoint chain holds every checkpoint in `anchors`, with the replayed state in
/// memory.
pub fn verify_stores(stores: Stores<'_>, anchors: &[Hash]) -> Result<Report, StorageError> {
    verify_stores_with(stores, anchors, None)
}

/// Where the replayed state lives when it should not all be in memory.
#[derive(Clone, Copy)]
pub struct Scratch<'a> {
    /// An empty store the replay fills with the state it rebuilds; the caller throws it away.
    pub storage: &'a dyn Storage,
    /// Most entries of the families that grow with history each shard keeps in memory.
    pub entries: usize,
}

/// `verify_stores`, with the replayed state in `scratch` if given: memory then stays bounded
/// whatever the history.
pub fn verify_stores_with(
    stores: Stores<'_>,
    anchors: &[Hash],
    scratch: Option<Scratch<'_>>,
) -> Result<Report, StorageError> {
    let mut report = Report::default();
    let Some(genesis) = read_genesis(stores, &mut report)? else { return Ok(report) };
    report.shards = genesis.shards;
    report.genesis = genesis.hash();
    report.operators = genesis.operators.clone();
    let mut anchors: HashSet<Hash> = anchors.iter().copied().collect();

    let mut replay = Replay::new(stores, &genesis, scratch, None)?;
    let completed = replay.run(&mut anchors, &mut report)?;
    let mut counts = std::mem::take(&mut replay.counts);
    report.rounds = replay.rounds;
    report.blocks = replay.blocks;
    report.transactions = replay.transactions;
    if !stores.is_cluster() {
        report.checkpoints = replay.rounds;
    }
    let tips: Vec<Tip> = replay.chains.iter().map(|chain| chain.tip).collect();
    let (last_round, last_checkpoint) = (replay.last_round, replay.checkpoint);
    let consumed = std::mem::take(&mut replay.decided);
    let shards: Vec<Shard> = std::mem::take(&mut replay.shards);
    drop(replay);

    // A cluster coordinator's last stored checkpoint, which its round record must name.
    let mut last_stored = None;
    if stores.is_cluster() {
        // Heads are compared with the chains only when the replay reached their ends.
        let tips = completed.then_some(tips.as_slice());
        last_stored = check_checkpoint_chain(stores, &genesis, tips, &mut anchors, &mut counts, &mut report)?;
    }
    for anchor in &anchors {
        let detail = "not in this ledger's chain: the store does not extend it (rounds removed, or rebuilt)";
        report.problem(format!("checkpoint {}", hex(anchor)), detail);
    }
    if !completed {
        // The stores are compared only with an intact chain and replay: anything else would
        // report every later key as well.
        report.keys = count_keys(stores)?;
        return Ok(report);
    }
    match scratch {
        None => check_state(stores, genesis.shards, &Expected::Memory(&shards), &mut report)?,
        Some(scratch) => check_state(stores, genesis.shards, &Expected::Scratch(scratch.storage), &mut report)?,
    }
    let last = if stores.is_cluster() { last_stored } else { Some((last_round, last_checkpoint)) };
    check_metadata(stores, &genesis, &tips, last, &mut counts, &mut report)?;
    let extra = count_families(stores, &genesis, &tips, &consumed, &counts, &mut report)?;
    check_ids_unique(stores, &mut report)?;
    if !extra.is_empty() {
        // Name the keys no block implies: a second replay lists what those families should hold.
        if let Some(scratch) = scratch {
            clear(scratch.storage)?;
        }
        let collect = Collect { families: extra.clone(), keys: HashSet::new() };
        let mut again = Replay::new(stores, &genesis, scratch, Some(collect))?;
        again.run(&mut HashSet::new(), &mut Report::default())?;
        let wanted = again.collect.take().expect("collecting").keys;
        for (index, family) in extra {
            stores.at(index).scan(&[family], &mut |key, _| {
                if !wanted.contains(&(index, key.to_vec())) {
                    let detail = "present but not implied by the blocks (added, or its block was removed)";
                    report.problem(stores.place(index, layout::describe(key)), detail);
                }
                true
            })?;
        }
    }
    Ok(report)
}

/// The genesis, the same in every store; `None` with the problem reported.
fn read_genesis(stores: Stores<'_>, report: &mut Report) -> Result<Option<Genesis>, StorageError> {
    let mut found: Option<Genesis> = None;
    for (index, storage) in stores.all().into_iter().enumerate() {
        let place = stores.place(index, layout::describe(layout::META_CONFIG));
        match storage.get(layout::META_CONFIG)?.map(|bytes| Genesis::decode(&bytes)) {
            Some(Ok(genesis)) => match &found {
                Some(first) if *first != genesis => {
                    report.problem(place, "names another genesis than the other stores: not one ledger");
                    return Ok(None);
                }
                _ => found = Some(genesis),
            },
            Some(Err(error)) => {
                report.problem(place, format!("cannot be decoded: {error}"));
                return Ok(None);
            }
            None => {
                report.problem(place, "missing: not a ledger, or its configuration was deleted");
                return Ok(None);
            }
        }
    }
    let genesis = found.expect("at least one store");
    if let Stores::Cluster { shards, .. } = stores {
        if shards.len() != genesis.shards as usize {
            let detail = format!("the genesis has {} shards, {} shard stores were given", genesis.shards, shards.len());
            report.problem(stores.place(stores.of_coordinator(), "metadata config"), detail);
            return Ok(None);
        }
    }
    Ok(Some(genesis))
}

/// Where a shard's chain stands: its last intact block.
#[derive(Clone, Copy, Default)]
struct Tip {
    height: u64,
    hash: Hash,
    round: u64,
    time: u64,
}

struct Chain {
    tip: Tip,
    /// The next block, read ahead.
    next: StoredBlock,
}

/// Expected key counts: by store, by leading byte.
type Counts = Vec<[u64; 256]>;

/// A second replay's job: the keys of some (store, family) pairs.
struct Collect {
    families: Vec<(usize, u8)>,
    keys: HashSet<(usize, Vec<u8>)>,
}

/// The replay of the merged chains.
struct Replay<'a> {
    stores: Stores<'a>,
    shard_count: u32,
    shards: Vec<Shard>,
    chains: Vec<Chain>,
    verifier: SignatureVerifier,
    counts: Counts,
    collect: Option<Collect>,
    /// Where the replayed state that grows with history lives, and which of it is in memory.
    scratch: Option<(Scratch<'a>, StateCache)>,
    /// The last replayed checkpoint's hash (an embedded ledger's; a cluster's are stored).
    checkpoint: Hash,
    last_round: u64,
    /// Rounds whose logged decisions were replayed.
    decided: BTreeSet<u64>,
    rounds: u64,
    blocks: u64,
    transactions: u64,
}

/// What happened to a round: replayed, or the replay stops here (the problem is reported).
type Step = Result<bool, StorageError>;

impl<'a> Replay<'a> {
    fn new(
        stores: Stores<'a>,
        genesis: &Genesis,
        scratch: Option<Scratch<'a>>,
        collect: Option<Collect>,
    ) -> Result<Self, StorageError> {
        let chains = (0..genesis.shards).map(|_| Chain { tip: Tip::default(), next: None }).collect();
        if let Some(scratch) = scratch {
            let state: Vec<_> = genesis.writes().into_iter().filter(|(key, _)| key[0] == layout::STATE).collect();
            scratch.storage.write(&state)?;
        }
        Ok(Self {
            stores,
            shard_count: genesis.shards,
            shards: genesis.shards(),
            chains,
            verifier: SignatureVerifier::new(),
            counts: vec![[0; 256]; stores.all().len()],
            collect,
            scratch: scratch.map(|scratch| (scratch, StateCache::new(genesis.shards as usize, scratch.entries))),
            checkpoint: genesis.hash(),
            last_round: 0,
            decided: BTreeSet::new(),
            rounds: 0,
            blocks: 0,
            transactions: 0,
        })
    }

    /// With a scratch store: makes resident what the round's transactions will read (as the
    /// ledger's execute stage does for a group).
    fn load(&mut self, blocks: &[(u32, Block)]) -> Result<(), StorageError> {
        let Some((scratch, cache)) = &mut self.scratch else { return Ok(()) };
        let transactions = blocks.iter().flat_map(|(_, block)| block.body.entries.iter().map(|(t, _)| t));
        let (wanted, changed) = StateCache::needs(self.shard_count, transactions);
        let missing = StateCache::missing(&self.shards, &wanted);
        cache.insert(&mut self.shards, &wanted, StateCache::read(scratch.storage, missing)?)?;
        let indexes = StateCache::changed_indexes(&self.shards, &changed);
        let missing = StateCache::missing(&self.shards, &indexes);
        cache.insert(&mut self.shards, &indexes, StateCache::read(scratch.storage, missing)?)
    }

    /// With a scratch store: writes the round's state there, and drops from memory what is
    /// over the limit.
    fn store_state(&mut self, writes: Vec<(Vec<u8>, Option<Vec<u8>>)>) -> Result<(), StorageError> {
        let Some((scratch, cache)) = &mut self.scratch else { return Ok(()) };
        scratch.storage.write(&writes)?;
        if cache.over_limit(&self.shards) {
            cache.evict(&mut self.shards, Map::default());
        }
        Ok(())
    }

    /// Replays every round; whether it reached the chains' ends intact.
    fn run(&mut self, anchors: &mut HashSet<Hash>, report: &mut Report) -> Step {
        for shard in 0..self.shard_count {
            self.chains[shard as usize].next = read_block(self.stores.at(self.stores.of_shard(shard)), shard, 1)?;
        }
        let stores = self.stores;
        let replayed = catch_unwind(AssertUnwindSafe(|| -> Step {
            loop {
                // A block that cannot be read stops the replay where it stands.
                for (shard, chain) in self.chains.iter_mut().enumerate() {
                    if let Some(Err(detail)) = &chain.next {
                        let place = format!("shard {shard} height {}", chain.tip.height + 1);
                        report.problem(stores.place(stores.of_shard(shard as u32), place), detail.clone());
                        return Ok(false);
                    }
                }
                let Some(round) = self
                    .chains
                    .iter()
                    .filter_map(|chain| match &chain.next {
                        Some(Ok(block)) => Some(block.header.round),
                        _ => None,
                    })
                    .min()
                else {
                    return Ok(true);
                };
                let mut blocks = Vec::new();
                for (shard, chain) in self.chains.iter_mut().enumerate() {
                    if matches!(&chain.next, Some(Ok(block)) if block.header.round == round) {
                        let Some(Ok(block)) = chain.next.take() else { unreachable!("matched above") };
                        blocks.push((shard as u32, block));
                    }
                }
                if !self.round(round, &blocks, anchors, report)? {
                    return Ok(false);
                }
                for (shard, block) in blocks {
                    let chain = &mut self.chains[shard as usize];
                    let header = &block.header;
                    chain.tip = Tip { height: header.height, hash: header.hash(), round, time: header.time };
                    let storage = stores.at(stores.of_shard(shard));
                    chain.next = read_block(storage, shard, header.height + 1)?;
                }
            }
        }));
        match replayed {
            Ok(step) => step,
            Err(_) => {
                report.problem(
                    "replay",
                    "replaying the chain broke an invariant; the stored blocks are not a valid ledger",
                );
                Ok(false)
            }
        }
    }

    /// Checks, replays and compares one round's blocks (ascending by shard).
    fn round(&mut self, round: u64, blocks: &[(u32, Block)], anchors: &mut HashSet<Hash>, report: &mut Report) -> Step {
        let stores = self.stores;
        let at_shard = |shard: u32, place: String| stores.place(stores.of_shard(shard), place);
        for (shard, block) in blocks {
            let chain = &self.chains[*shard as usize];
            let broken = block_problems(&self.verifier, block, *shard, &chain.tip);
            if !broken.is_empty() {
                for detail in broken {
                    report.problem(at_shard(*shard, format!("shard {shard} height {}", block.header.height)), detail);
                }
                return Ok(false);
            }
        }
        if !stores.is_cluster() {
            // One ledger runs every round over all its shards at one commit time.
            if round != self.last_round + 1 {
                report.problem(format!("round {round}"), format!("rounds skip from {} to {round}", self.last_round));
                return Ok(false);
            }
            if blocks.iter().any(|(_, block)| block.header.time != blocks[0].1.header.time) {
                report.problem(format!("round {round}"), "the round's blocks disagree on its time");
                return Ok(false);
            }
        }

        // Which shards hold each cross-shard transaction; every other one must be local.
        let mut held: HashMap<TxId, (SignedTransaction, Vec<u32>)> = HashMap::new();
        for (shard, block) in blocks {
            let place = || at_shard(*shard, format!("shard {shard} height {}", block.header.height));
            for (transaction, _) in &block.body.entries {
                let touched = participants(&transaction.transaction, self.shard_count);
                if !touched.contains(shard) {
                    report.problem(place(), "holds a transaction that does not touch its shard");
                    return Ok(false);
                }
                if transaction.transaction.operation.kind().coordinated() {
                    let entry = held.entry(transaction.id()).or_insert_with(|| (transaction.clone(), Vec::new()));
                    if entry.0.digest() != transaction.digest() || entry.1.contains(shard) {
                        report.problem(place(), "holds a cross-shard transaction twice, or unlike its other shards");
                        return Ok(false);
                    }
                    entry.1.push(*shard);
                } else if touched.len() != 1 {
                    report.problem(place(), "holds a single-shard operation that touches several shards");
                    return Ok(false);
                }
            }
        }
        let decision_key = layout::decision(round);
        let decision_place = stores.place(stores.of_coordinator(), layout::describe(&decision_key));
        let decisions = match stores.at(stores.of_coordinator()).get(&decision_key)? {
            None if held.is_empty() => Vec::new(),
            None => {
                report.problem(decision_place, "missing, but the round holds cross-shard transactions");
                return Ok(false);
            }
            Some(bytes) => match decode_decisions(&bytes) {
                Ok(decisions) => {
                    self.decided.insert(round);
                    self.counts[stores.of_coordinator()][layout::DECISION as usize] += 1;
                    decisions
                }
                Err(error) => {
                    report.problem(decision_place, format!("cannot be decoded: {error}"));
                    return Ok(false);
                }
            },
        };
        // A cluster participant takes a cross-shard transaction the log leaves out as aborted
        // (`Participant::decide`): the coordinator restarted and presumed the round aborted
        // from another participant's prepared transactions.
        let mut position: HashMap<TxId, usize> = HashMap::new();
        if decisions.iter().enumerate().any(|(index, (id, _))| position.insert(*id, index).is_some()) {
            report.problem(decision_place, "names a transaction twice");
            return Ok(false);
        }
        let decision_of = |id: &TxId| match position.get(id) {
            Some(&index) => Some(decisions[index].1),
            None => stores.is_cluster().then_some(TxResult::Rejected(Reason::ParticipantUnavailable)),
        };
        if held.keys().any(|id| decision_of(id).is_none()) {
            report.problem(decision_place, "leaves out cross-shard transactions of the round");
            return Ok(false);
        }

        self.load(blocks)?;
        // Phase one on every shard: singles, then the prepares, each in block order (the order
        // the shard finished them in, which must be the decisions' order).
        let mut votes: HashMap<(TxId, u32), Result<(), Reason>> = HashMap::new();
        for (shard, block) in blocks {
            let state = &mut self.shards[*shard as usize];
            state.begin(block.header.time);
            let mut prepares = Vec::new();
            for (transaction, _) in &block.body.entries {
                if transaction.transaction.operation.kind().coordinated() {
                    prepares.push(transaction.clone());
                } else {
                    state.execute(transaction);
                    self.transactions += 1;
                }
            }
            let order: Vec<usize> = prepares.iter().filter_map(|t| position.get(&t.id()).copied()).collect();
            if order.windows(2).any(|pair| pair[0] > pair[1]) {
                let place = at_shard(*shard, format!("shard {shard} height {}", block.header.height));
                report.problem(place, "holds cross-shard transactions in another order than the round's decisions");
                return Ok(false);
            }
            if prepares.is_empty() {
                continue;
            }
            let ids: Vec<TxId> = prepares.iter().map(SignedTransaction::id).collect();
            let message = Message::Prepare { round, shard: *shard, transactions: prepares };
            let Reply::Votes { votes: cast, .. } = state.handle(message) else {
                unreachable!("votes answer a prepare")
            };
            votes.extend(ids.into_iter().zip(cast).map(|(id, vote)| ((id, *shard), vote)));
        }
        // The decisions must follow from the votes.
        let unrecorded = decisions.iter().filter(|(id, _)| !held.contains_key(id));
        for (id, decision) in unrecorded {
            // No participant recorded it: refused before the rules, or (in a cluster) aborted
            // for a participant that never answered.
            if !unrecorded_fits(*decision, stores.is_cluster()) {
                let detail = format!(
                    "decides transaction {} as {decision}, but no participant's block holds it",
                    hex(&id.to_be_bytes())
                );
                report.problem(decision_place, detail);
                return Ok(false);
            }
        }
        for (id, (transaction, holders)) in &held {
            let decision = decision_of(id).expect("checked above");
            let touched = participants(&transaction.transaction, self.shard_count);
            let absent = touched.len() - holders.len();
            let cast: Vec<Result<(), Reason>> = holders.iter().map(|shard| votes[&(*id, *shard)]).collect();
            self.transactions += 1;
            if !decision_fits(decision, &cast, absent, stores.is_cluster()) {
                let id = hex(&id.to_be_bytes());
                let detail =
                    format!("decides transaction {id} as {decision}, which its participants' votes do not give");
                report.problem(decision_place, detail);
                return Ok(false);
            }
        }

        // Phase two, then seal and compare.
        let mut writes: Vec<Vec<(Vec<u8>, Vec<u8>)>> = vec![Vec::new(); stores.all().len()];
        let mut state_writes = Vec::new();
        let mut heads = Vec::new();
        for (shard, block) in blocks {
            let state = &mut self.shards[*shard as usize];
            let mine: Vec<(TxId, TxResult)> = block
                .body
                .entries
                .iter()
                .filter(|(t, _)| t.transaction.operation.kind().coordinated())
                .map(|(t, _)| (t.id(), decision_of(&t.id()).expect("checked above")))
                .collect();
            if !mine.is_empty() {
                state.handle(Message::Decide { round, shard: *shard, decisions: mine });
            }
            let place = at_shard(*shard, format!("shard {shard} height {}", block.header.height));
            let Some(sealed) = state.seal(round) else {
                report.problem(place, "replaying the round gives no block here");
                return Ok(false);
            };
            if !replays_as_stored(block, &sealed, &place, report) {
                return Ok(false);
            }
            heads.push(ShardHead { shard: *shard, height: sealed.header.height, hash: sealed.header.hash() });
            let store = stores.of_shard(*shard);
            self.counts[store][layout::HEADER as usize] += 1;
            self.counts[store][layout::BODY as usize] += 1;
            self.blocks += 1;
            let SealedBlock { header, body, index_writes, state_writes: state } = sealed;
            writes[store].extend(index_writes);
            state_writes.extend(state);
            if stores.is_cluster() {
                // A cluster participant's records of what another shard indexes (`Participant::persist`).
                writes[store].extend(participation_records(&header, &body, self.shard_count));
            }
        }
        if !stores.is_cluster() {
            let heads =
                self.shards.iter().map(|s| ShardHead { shard: s.id(), height: s.height(), hash: s.head() }).collect();
            let checkpoint = Checkpoint { round, previous: self.checkpoint, heads };
            self.checkpoint = checkpoint.hash();
            anchors.remove(&self.checkpoint);
            writes[0].push((layout::checkpoint(round), checkpoint.encode().expect("bounded checkpoint")));
        }
        for (index, writes) in writes.into_iter().enumerate() {
            self.expect(index, writes, report)?;
        }
        self.store_state(state_writes)?;
        self.last_round = round;
        self.rounds += 1;
        Ok(true)
    }

    /// What the round adds to store `index`: read back and compared now (or collected, on a
    /// second replay), and counted.
    fn expect(
        &mut self,
        index: usize,
        writes: Vec<(Vec<u8>, Vec<u8>)>,
        report: &mut Report,
    ) -> Result<(), StorageError> {
        if writes.is_empty() {
            return Ok(());
        }
        for (key, _) in &writes {
            self.counts[index][key[0] as usize] += 1;
        }
        if let Some(collect) = &mut self.collect {
            for (key, _) in writes {
                if collect.families.contains(&(index, key[0])) {
                    collect.keys.insert((index, key));
                }
            }
            return Ok(());
        }
        let keys: Vec<Vec<u8>> = writes.iter().map(|(key, _)| key.clone()).collect();
        let stored = self.stores.at(index).get_many(&keys)?;
        for ((key, value), stored) in writes.iter().zip(stored) {
            let detail = match stored {
                Some(stored) if stored == *value => continue,
                Some(_) if key[0] == layout::TRANSACTION => {
                    "value differs from what the blocks imply (changed, or the transaction is in the chain twice)"
                }
                Some(_) => "value differs from what the blocks imply (changed)",
                None => "missing (deleted)",
            };
            report.problem(self.stores.place(index, layout::describe(key)), detail);
        }
        Ok(())
    }
}

/// Whether a decision no participant's block records fits: a refusal before the rules (no one
/// records it), or in a cluster an abort for a participant that never answered.
fn unrecorded_fits(decision: TxResult, cluster: bool) -> bool {
    matches!(decision, TxResult::Rejected(reason)
        if reason.is_refusal() || (cluster && reason == Reason::ParticipantUnavailable))
}

/// Whether a logged decision follows from the participants' replayed votes: commit where every
/// participant voted yes, else the lowest refusal code (`Coordinator::on_votes`), an absent
/// participant counting as unavailable. In a cluster, a participant that did not answer in time
/// counted as unavailable although its block may hold its vote: there, an abort for an
/// unavailable participant fits any votes, and another reason fits if some participant gave it
/// and it is lower than unavailable's.
fn decision_fits(decision: TxResult, votes: &[Result<(), Reason>], absent: usize, cluster: bool) -> bool {
    let refusals: Vec<Reason> = votes.iter().filter_map(|vote| vote.err()).collect();
    let lowest = refusals
        .iter()
        .copied()
        .chain((absent > 0).then_some(Reason::ParticipantUnavailable))
        .min_by_key(|reason| reason.code());
    if decision == lowest.map_or(TxResult::Committed, TxResult::Rejected) {
        return true;
    }
    match decision {
        _ if !cluster => false,
        TxResult::Committed => false,
        TxResult::Rejected(Reason::ParticipantUnavailable) => true,
        TxResult::Rejected(reason) => {
            refusals.contains(&reason) && reason.code() < Reason::ParticipantUnavailable.code()
        }
    }
}

/// What is wrong with one block, given its shard's last intact block.
fn block_problems(verifier: &SignatureVerifier, block: &Block, shard: u32, tip: &Tip) -> Vec<String> {
    let (header, body) = (&block.header, &block.body);
    let mut broken = Vec::new();
    if header.shard != shard || header.height != tip.height + 1 {
        broken.push("header names another shard or height".to_owned());
    }
    if header.previous != tip.hash {
        broken.push("header does not link to the previous block's hash".to_owned());
    }
    if header.round <= tip.round || header.time < tip.time {
        broken.push("round or time does not increase".to_owned());
    }
    if header.count as usize != body.entries.len() {
        broken.push(format!("header counts {} transactions, body holds {}", header.count, body.entries.len()));
    }
    if merkle_root(&body.transaction_leaves()) != header.transactions_root {
        broken.push("transactions do not match the transaction root".to_owned());
    }
    if merkle_root(&body.result_leaves()) != header.results_root {
        broken.push("results do not match the result root".to_owned());
    }
    let transactions: Vec<SignedTransaction> = body.entries.iter().map(|(t, _)| t.clone()).collect();
    for (index, verdict) in verifier.verify(&transactions).into_iter().enumerate() {
        if let Some(reason) = verdict {
            broken.push(format!("transaction {index} fails its signature check ({reason})"));
        }
    }
    broken
}

/// Whether the stored block is, byte for byte, the block replaying it gave; if not, says how.
fn replays_as_stored(stored: &Block, replayed: &SealedBlock, place: &str, report: &mut Report) -> bool {
    let header = replayed.header.encode().expect("fixed size");
    let body = replayed.body.encode().expect("bounded block");
    if header == stored.header_bytes && body == stored.body_bytes {
        return true;
    }
    let detail = replayed
        .body
        .entries
        .iter()
        .zip(&stored.body.entries)
        .find(|((_, replay), (_, stored))| replay != stored)
        .map(|((t, replay), (_, stored))| {
            let id = hex(&t.id().to_be_bytes());
            format!("transaction {id} is stored as {stored} but replays as {replay}")
        })
        .unwrap_or_else(|| "replaying the round gives a different block".into());
    report.problem(place, detail);
    false
}

/// The replayed state: in memory, or in a scratch store.
enum Expected<'s> {
    Memory(&'s [Shard]),
    Scratch(&'s dyn Storage),
}

/// Stored state entries compared at once.
const STATE_CHUNK: usize = 4096;

/// (3) Each shard's replayed state against the stored state entries, in one scan of each store.
fn check_state(
    stores: Stores<'_>,
    shard_count: u32,
    expected: &Expected<'_>,
    report: &mut Report,
) -> Result<(), StorageError> {
    let shard_count = shard_count as usize;
    let mut matched = vec![0usize; shard_count];
    for (index, storage) in stores.all().into_iter().enumerate() {
        let mut chunk: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
        let mut failed = None;
        storage.scan(&[layout::STATE], &mut |key, value| {
            chunk.push((key.to_vec(), value.to_vec()));
            if chunk.len() == STATE_CHUNK {
                let entries = std::mem::take(&mut chunk);
                if let Err(error) = compare_state(stores, index, expected, entries, &mut matched, report) {
                    failed = Some(error);
                    return false;
                }
            }
            true
        })?;
        if let Some(error) = failed {
            return Err(error);
        }
        compare_state(stores, index, expected, chunk, &mut matched, report)?;
    }
    // Some are missing where fewer matched than the replay holds: find which (only a damaged
    // store gets here).
    match expected {
        Expected::Memory(shards) => {
            for (shard, replayed) in shards.iter().enumerate() {
                if matched[shard] == replayed.state().len() {
                    continue;
                }
                let storage = stores.at(stores.of_shard(shard as u32));
                for (key, _) in replayed.state().entries() {
                    let stored_key = [layout::state_prefix(shard as u32), key].concat();
                    if storage.get(&stored_key)?.is_none() {
                        let place = stores.place(stores.of_shard(shard as u32), layout::describe(&stored_key));
                        report.problem(place, "missing (deleted)");
                    }
                }
            }
        }
        Expected::Scratch(scratch) => {
            let mut replayed = vec![0usize; shard_count];
            scratch.scan(&[layout::STATE], &mut |key, _| {
                replayed[u32::from_be_bytes(key[1..5].try_into().expect("our own key")) as usize] += 1;
                true
            })?;
            if replayed != matched {
                let mut failed = None;
                scratch.scan(&[layout::STATE], &mut |key, _| {
                    let shard = u32::from_be_bytes(key[1..5].try_into().expect("our own key"));
                    if replayed[shard as usize] == matched[shard as usize] {
                        return true;
                    }
                    let index = stores.of_shard(shard);
                    match stores.at(index).get(key) {
                        Ok(Some(_)) => {}
                        Ok(None) => report.problem(stores.place(index, layout::describe(key)), "missing (deleted)"),
                        Err(error) => failed = Some(error),
                    }
                    failed.is_none()
                })?;
                if let Some(error) = failed {
                    return Err(error);
                }
            }
        }
    }
    Ok(())
}

/// Compares a chunk of stored state entries of store `index` with the replayed state.
fn compare_state(
    stores: Stores<'_>,
    index: usize,
    expected: &Expected<'_>,
    entries: Vec<(Vec<u8>, Vec<u8>)>,
    matched: &mut [usize],
    report: &mut Report,
) -> Result<(), StorageError> {
    let replayed: Vec<Option<Vec<u8>>> = match expected {
        Expected::Memory(shards) => entries
            .iter()
            .map(|(key, _)| {
                let shard = key.get(1..5).map(|s| u32::from_be_bytes(s.try_into().expect("four bytes")))?;
                let state_key = StateKey::from_bytes(key.get(5..)?).ok()?;
                shards.get(shard as usize)?.state().value(&state_key)
            })
            .collect(),
        Expected::Scratch(scratch) => {
            scratch.get_many(&entries.iter().map(|(key, _)| key.clone()).collect::<Vec<_>>())?
        }
    };
    for ((key, value), replayed) in entries.iter().zip(replayed) {
        let place = || stores.place(index, layout::describe(key));
        let shard = key.get(1..5).map(|s| u32::from_be_bytes(s.try_into().expect("four bytes")));
        let held_here = shard.is_some_and(|s| (s as usize) < matched.len() && stores.of_shard(s) == index);
        if !held_here || key.get(5..).is_none_or(|k| StateKey::from_bytes(k).is_err()) {
            report.problem(place(), "present but not a state entry of a shard this store holds (added)");
            continue;
        }
        match replayed {
            Some(replayed) if replayed == *value => matched[shard.expect("held") as usize] += 1,
            Some(_) => report.problem(place(), "value differs from what the blocks imply (changed)"),
            None => report.problem(place(), "present but not implied by the blocks (added)"),
        }
    }
    Ok(())
}

/// Empties a scratch store, a bounded number of keys at a time.
fn clear(scratch: &dyn Storage) -> Result<(), StorageError> {
    loop {
        let mut keys = Vec::new();
        scratch.scan(&[], &mut |key, _| {
            keys.push((key.to_vec(), None));
            keys.len() < 65_536
        })?;
        if keys.is_empty() {
            return Ok(());
        }
        scratch.write(&keys)?;
    }
}

/// (4) A cluster coordinator's checkpoints: a chain from the genesis hash, each head a block of
/// its shard's chain and never behind the checkpoint before; each late-checkpoint note names a
/// checkpoint that holds its block.
fn check_checkpoint_chain(
    stores: Stores<'_>,
    genesis: &Genesis,
    tips: Option<&[Tip]>,
    anchors: &mut HashSet<Hash>,
    counts: &mut Counts,
    report: &mut Report,
) -> Result<Option<(u64, Hash)>, StorageError> {
    let index = stores.of_coordinator();
    let coordinator = stores.at(index);
    let mut last = None;
    let mut previous = genesis.hash();
    let mut heights = vec![0u64; genesis.shards as usize];
    let mut wanted_headers: Vec<(Vec<u8>, Hash, String)> = Vec::new();
    let mut broken = false;
    coordinator.scan(&[layout::CHECKPOINT], &mut |key, value| {
        counts[index][layout::CHECKPOINT as usize] += 1;
        let decoded = Checkpoint::decode(value);
        last = decoded.as_ref().ok().map(|c| (c.round, c.hash()));
        let place = stores.place(index, layout::describe(key));
        if broken {
            return true;
        }
        let checkpoint = match decoded {
            Ok(checkpoint) if layout::checkpoint(checkpoint.round) == key => checkpoint,
            Ok(_) => {
                report.problem(place, "names another round than its key");
                broken = true;
                return true;
            }
            Err(error) => {
                report.problem(place, format!("cannot be decoded: {error}"));
                broken = true;
                return true;
            }
        };
        if checkpoint.previous != previous {
            report.problem(place, "does not link to the previous checkpoint (or the genesis)");
            broken = true;
            return true;
        }
        let shaped = checkpoint.heads.len() == heights.len()
            && checkpoint.heads.iter().enumerate().all(|(shard, head)| head.shard as usize == shard);
        if !shaped {
            report.problem(place, "does not list one head per shard");
            broken = true;
            return true;
        }
        for head in &checkpoint.heads {
            let shard = head.shard as usize;
            if head.height < heights[shard] || tips.is_some_and(|tips| head.height > tips[shard].height) {
                report.problem(&place, format!("shard {shard}'s head goes back, or past its chain's end"));
                broken = true;
            } else if head.height > 0 && tips.is_some() {
                let detail = format!("shard {shard}'s head is not its chain's block at height {}", head.height);
                wanted_headers.push((layout::header(head.shard, head.height), head.hash, detail));
            }
            heights[shard] = head.height;
        }
        previous = checkpoint.hash();
        anchors.remove(&previous);
        report.checkpoints += 1;
        // Heads are checked in groups, so memory stays bounded.
        if wanted_headers.len() >= 4096 {
            check_heads(stores, &mut wanted_headers, &place, report);
        }
        true
    })?;
    check_heads(stores, &mut wanted_headers, "checkpoints", report);
    coordinator.scan(&[layout::LATE_CHECKPOINT], &mut |key, value| {
        counts[index][layout::LATE_CHECKPOINT as usize] += 1;
        let place = stores.place(index, layout::describe(key));
        let (Some(shard), Some(height), Ok(round)) = (
            key.get(1..5).map(|b| u32::from_be_bytes(b.try_into().expect("4"))),
            key.get(5..13).map(|b| u64::from_be_bytes(b.try_into().expect("8"))),
            <[u8; 8]>::try_from(value).map(u64::from_le_bytes),
        ) else {
            report.problem(place, "not a late-checkpoint note");
            return true;
        };
        let holds = coordinator
            .get(&layout::checkpoint(round))
            .ok()
            .flatten()
            .and_then(|bytes| Checkpoint::decode(&bytes).ok())
            .is_some_and(|c| c.heads.iter().any(|h| h.shard == shard && h.height == height));
        if !holds {
            report.problem(place, "names a checkpoint that does not hold the block");
        }
        true
    })?;
    Ok(last)
}

/// Checks that each listed header hashes as a checkpoint says.
fn check_heads(stores: Stores<'_>, wanted: &mut Vec<(Vec<u8>, Hash, String)>, place: &str, report: &mut Report) {
    for (key, hash, detail) in wanted.drain(..) {
        let shard = u32::from_be_bytes(key[1..5].try_into().expect("header key"));
        let stored = stores.at(stores.of_shard(shard)).get(&key).ok().flatten();
        let hashed = stored.and_then(|bytes| BlockHeader::decode(&bytes).ok()).map(|header| header.hash());
        if hashed != Some(hash) {
            report.problem(place, detail);
        }
    }
}

/// (5) Each store's metadata: exactly the keys its kind holds, with the values the history implies.
fn check_metadata(
    stores: Stores<'_>,
    genesis: &Genesis,
    tips: &[Tip],
    last: Option<(u64, Hash)>,
    counts: &mut Counts,
    report: &mut Report,
) -> Result<(), StorageError> {
    let config = genesis.config_writes();
    for (index, storage) in stores.all().into_iter().enumerate() {
        let mut expected: Vec<(&[u8], Option<Vec<u8>>)> =
            config.iter().map(|(key, value)| (key.as_slice(), value.clone())).collect();
        let mut optional: Vec<&[u8]> = Vec::new();
        let shard = (index < tips.len() && stores.is_cluster()).then_some(index as u32);
        match (stores, shard) {
            (Stores::Embedded(_), _) => {
                if let Some((round, checkpoint)) = last.filter(|(round, _)| *round > 0) {
                    expected.push((layout::META_ROUND, Some(encode_round_meta(round, &checkpoint))));
                }
            }
            (Stores::Cluster { .. }, Some(shard)) => {
                expected.push((layout::META_SHARD, Some(shard.to_le_bytes().to_vec())));
                // Its head and a prepared round are checked by what they say, below.
                optional.extend([layout::META_HEAD, layout::META_PENDING]);
            }
            (Stores::Cluster { .. }, None) => optional.extend([layout::META_ROUND, layout::META_RESERVED]),
        }
        for (key, value) in &expected {
            let detail = match storage.get(key)? {
                Some(stored) if Some(&stored) == value.as_ref() => continue,
                Some(_) => "value differs from what the blocks imply (changed)",
                None => "missing (deleted)",
            };
            report.problem(stores.place(index, layout::describe(key)), detail);
        }
        storage.scan(&[layout::META], &mut |key, _| {
            counts[index][layout::META as usize] += 1;
            if !expected.iter().any(|(k, _)| *k == key) && !optional.contains(&key) {
                report.problem(
                    stores.place(index, layout::describe(key)),
                    "present but not a key this store holds (added)",
                );
            }
            true
        })?;
        let place = |key: &[u8]| stores.place(index, layout::describe(key));
        if let Some(shard) = shard {
            let tip = tips[shard as usize];
            let head = storage.get(layout::META_HEAD)?.map(|bytes| Head::decode(&bytes));
            match head {
                Some(Ok(head))
                    if head.height == tip.height
                        && head.hash == tip.hash
                        && head.time == tip.time
                        && head.round >= tip.round => {}
                Some(_) => report.problem(place(layout::META_HEAD), "does not match the shard's last block"),
                None if tip.height > 0 => report.problem(place(layout::META_HEAD), "missing (deleted)"),
                None => {}
            }
            if let Some(bytes) = storage.get(layout::META_PENDING)? {
                if !RoundRequest::decode(&bytes).is_ok_and(|pending| pending.round > tip.round) {
                    report.problem(place(layout::META_PENDING), "not a prepared round after the shard's last block");
                }
            }
        } else if stores.is_cluster() {
            let coordinator = storage;
            let round = coordinator.get(layout::META_ROUND)?;
            if round != last.map(|(round, hash)| encode_round_meta(round, &hash)) {
                report.problem(place(layout::META_ROUND), "does not name the last checkpoint");
            }
            let reserved = coordinator.get(layout::META_RESERVED)?;
            let reserved = reserved.map(|bytes| <[u8; 8]>::try_from(bytes.as_slice()).map(u64::from_le_bytes));
            let highest = last.map_or(0, |(round, _)| round).max(tips.iter().map(|t| t.round).max().unwrap_or(0));
            if !matches!(reserved, Some(Ok(r)) if r >= highest) && highest > 0 {
                report.problem(place(layout::META_RESERVED), "missing, or below a round already used");
            }
        }
    }
    Ok(())
}

/// One scan of every store: its keys counted by family against what the replay matched. Returns
/// the (store, family) pairs holding keys the blocks do not imply, for a second replay to name.
fn count_families(
    stores: Stores<'_>,
    genesis: &Genesis,
    tips: &[Tip],
    decided: &BTreeSet<u64>,
    expected: &Counts,
    report: &mut Report,
) -> Result<Vec<(usize, u8)>, StorageError> {
    let mut extra = Vec::new();
    for (index, storage) in stores.all().into_iter().enumerate() {
        let mut found = [0u64; 256];
        storage.scan(&[], &mut |key, value| {
            report.keys += 1;
            let family = key[0];
            found[family as usize] += 1;
            let place = || stores.place(index, layout::describe(key));
            match family {
                layout::HEADER | layout::BODY => {
                    // A block past its chain's end, or of a shard this store does not hold.
                    let shard = u32::from_be_bytes(key.get(1..5).unwrap_or(&[0xff; 4]).try_into().expect("4"));
                    let height = u64::from_be_bytes(key.get(5..13).unwrap_or(&[0xff; 8]).try_into().expect("8"));
                    let held = shard < genesis.shards && stores.of_shard(shard) == index;
                    if !held || height > tips[shard as usize].height || key.len() != 13 {
                        report.problem(place(), "present but not in the chain (added, or its chain was cut)");
                    }
                }
                layout::DECISION
                    if !key
                        .get(1..9)
                        .is_some_and(|round| decided.contains(&u64::from_be_bytes(round.try_into().expect("8")))) =>
                {
                    // In a cluster, a round whose participants never answered may be logged
                    // (presumed abort) with no block: every decision an abort.
                    let aborts = decode_decisions(value)
                        .is_ok_and(|decisions| decisions.iter().all(|(_, d)| unrecorded_fits(*d, true)));
                    if !(stores.is_cluster() && aborts) {
                        report.problem(place(), "present but not implied by the blocks (added)");
                    }
                    found[family as usize] -= 1;
                }
                layout::DECISION | layout::CHECKPOINT | layout::LATE_CHECKPOINT | layout::META | layout::STATE => {}
                layout::TRANSACTION | layout::ACCESS | layout::CUSTODY | layout::PARTICIPATION => {}
                _ => report.problem(place(), "not a key any store holds (added)"),
            }
            true
        })?;
        for family in [layout::TRANSACTION, layout::ACCESS, layout::CUSTODY, layout::PARTICIPATION] {
            if found[family as usize] > expected[index][family as usize] {
                extra.push((index, family));
            }
        }
        if !stores.is_cluster() && found[layout::CHECKPOINT as usize] > expected[index][layout::CHECKPOINT as usize] {
            extra.push((index, layout::CHECKPOINT));
        }
    }
    Ok(extra)
}

/// In a cluster, a transaction id is indexed by one shard only (its first participant): the
/// same id indexed in two shard stores means one of them recorded a transaction the cluster's
/// admission refused (another body under a signer's nonce). Scanned one leading id byte at a
/// time, so memory is a 256th of the index.
fn check_ids_unique(stores: Stores<'_>, report: &mut Report) -> Result<(), StorageError> {
    let Stores::Cluster { shards, .. } = stores else { return Ok(()) };
    for first in 0..=u8::MAX {
        let mut seen: HashMap<Vec<u8>, usize> = HashMap::new();
        for (index, storage) in shards.iter().enumerate() {
            storage.scan(&[layout::TRANSACTION, first], &mut |key, _| {
                if let Some(earlier) = seen.insert(key.to_vec(), index) {
                    let detail = format!("indexed by shard {earlier}'s store too: one id recorded twice");
                    report.problem(stores.place(index, layout::describe(key)), detail);
                }
                true
            })?;
        }
    }
    Ok(())
}

/// Keys in all stores (for a report on a damaged chain, whose stores are not compared).
fn count_keys(stores: Stores<'_>) -> Result<u64, StorageError> {
    let mut keys = 0;
    for storage in stores.all() {
        storage.scan(&[], &mut |_, _| {
            keys += 1;
            true
        })?;
    }
    Ok(keys)
}
