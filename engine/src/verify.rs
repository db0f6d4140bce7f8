//! Verification of a stored ledger.
//!
//! Every key a ledger stores is a function of its blocks. So verification
//! (1) checks each shard's chain: header links, heights, rounds, times, both
//! Merkle roots and every signature; then (2) replays every round from the
//! genesis state through the same `execute_round` the live ledger runs,
//! checking that each replayed block equals the stored one; and (3) compares
//! the store it rebuilt this way with the stored one, key by key, in one
//! ordered scan. A changed byte or a deleted or added key anywhere (blocks,
//! state, history, indexes, decisions, checkpoints, metadata) is reported
//! with its place. Damaged input is reported, never panicked on.
//!
//! Memory: blocks are read twice (check, then replay) rather than held; what
//! is held is the replayed state and the hash of every expected value.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::panic::{catch_unwind, AssertUnwindSafe};

use crate::block::{merkle_root, BlockBody, BlockHeader};
use crate::codec::Codec;
use crate::layout;
use crate::model::{hex, Hash, SignedTransaction, TxId};
use crate::round::{decode_decisions, execute_round, Genesis, Write};
use crate::shard::SealedBlock;
use crate::signature::SignatureVerifier;
use crate::storage::{Storage, StorageError};

/// Most problems listed in a report (all are counted).
pub const PROBLEMS_LISTED_MAX: usize = 50;

/// One damaged place.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// Where: a key, a block, a round.
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
    /// Keys in the store.
    pub keys: u64,
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

fn value_hash(value: &[u8]) -> Hash {
    *blake3::hash(value).as_bytes()
}

/// A stored block: `None` where there is no header (past the chain's end), else the block or what is wrong with it.
type StoredBlock = Option<Result<(BlockHeader, BlockBody), String>>;

fn read_block(storage: &dyn Storage, shard: u32, height: u64) -> Result<StoredBlock, StorageError> {
    let Some(header) = storage.get(&layout::header(shard, height))? else {
        return Ok(None);
    };
    let header = match BlockHeader::decode(&header) {
        Ok(header) => header,
        Err(error) => return Ok(Some(Err(format!("header cannot be decoded: {error}")))),
    };
    let Some(body) = storage.get(&layout::body(shard, height))? else {
        return Ok(Some(Err("body is missing".into())));
    };
    let body = BlockBody::decode(&body).map_err(|error| format!("body cannot be decoded: {error}"));
    Ok(Some(body.map(|body| (header, body))))
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
///     operation: Operation::RegisterActor { actor, role: Role::Patient, name: "Ada".into(), prefixes: vec![] },
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
    let mut report = Report::default();
    let Some(genesis) = read_genesis(storage, &mut report)? else { return Ok(report) };
    report.shards = genesis.shards;
    report.genesis = genesis.hash();
    report.operators = genesis.operators.clone();
    let rounds = check_chains(storage, &genesis, &mut report)?;
    let mut replayed = HashSet::new();
    let expected = replay(storage, &genesis, &rounds, &mut replayed, &mut report)?;
    for anchor in anchors.iter().filter(|anchor| !replayed.contains(*anchor)) {
        let detail = "not in this store's chain: the store does not extend it (rounds removed, or rebuilt)";
        report.problem(format!("checkpoint {}", hex(anchor)), detail);
    }
    compare_store(storage, &expected, &mut report)?;
    Ok(report)
}

/// The stored genesis, or `None` with the problem reported.
fn read_genesis(storage: &dyn Storage, report: &mut Report) -> Result<Option<Genesis>, StorageError> {
    match storage.get(layout::META_CONFIG)?.map(|bytes| Genesis::decode(&bytes)) {
        Some(Ok(genesis)) => Ok(Some(genesis)),
        Some(Err(error)) => {
            report.problem(layout::describe(layout::META_CONFIG), format!("cannot be decoded: {error}"));
            Ok(None)
        }
        None => {
            let detail = "missing: not a ledger, or its configuration was deleted";
            report.problem(layout::describe(layout::META_CONFIG), detail);
            Ok(None)
        }
    }
}

/// The blocks of each round, as (shard, height), by round.
type Rounds = BTreeMap<u64, Vec<(u32, u64)>>;

/// (1) Each shard's chain: header links, heights, rounds, times, both Merkle roots and every
/// signature, up to the first broken block. Returns the intact blocks by round.
fn check_chains(storage: &dyn Storage, genesis: &Genesis, report: &mut Report) -> Result<Rounds, StorageError> {
    let verifier = SignatureVerifier::new();
    let mut rounds = Rounds::new();
    for shard in 0..genesis.shards {
        let (mut previous, mut previous_round, mut previous_time) = ([0u8; 32], 0, 0);
        for height in 1.. {
            let place = format!("shard {shard} height {height}");
            let (header, body) = match read_block(storage, shard, height)? {
                None => break,
                Some(Ok(block)) => block,
                Some(Err(detail)) => {
                    report.problem(&place, detail);
                    break;
                }
            };
            let broken =
                block_problems(&verifier, &header, &body, (shard, height), previous, (previous_round, previous_time));
            if !broken.is_empty() {
                for detail in broken {
                    report.problem(&place, detail);
                }
                break;
            }
            previous = header.hash();
            (previous_round, previous_time) = (header.round, header.time);
            rounds.entry(header.round).or_default().push((shard, height));
            report.blocks += 1;
        }
    }
    Ok(rounds)
}

/// What is wrong with one block, given where it stands and the block before it.
fn block_problems(
    verifier: &SignatureVerifier,
    header: &BlockHeader,
    body: &BlockBody,
    (shard, height): (u32, u64),
    previous: Hash,
    (previous_round, previous_time): (u64, u64),
) -> Vec<String> {
    let mut broken = Vec::new();
    if header.shard != shard || header.height != height {
        broken.push("header names another shard or height".to_owned());
    }
    if header.previous != previous {
        broken.push("header does not link to the previous block's hash".to_owned());
    }
    if header.round <= previous_round || header.time < previous_time {
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

/// The hash of every value the store should hold, by key.
type Expected = BTreeMap<Vec<u8>, Hash>;

fn apply(expected: &mut Expected, writes: Vec<Write>) {
    for (key, value) in writes {
        match value {
            Some(value) => expected.insert(key, value_hash(&value)),
            None => expected.remove(&key),
        };
    }
}

/// (2) Replays every round from the genesis state through `execute_round`, checking that each
/// replayed block equals the stored one, up to the first that does not; returns what the store
/// should hold, and adds each replayed checkpoint's hash to `checkpoints`.
fn replay(
    storage: &dyn Storage,
    genesis: &Genesis,
    rounds: &Rounds,
    checkpoints: &mut HashSet<Hash>,
    report: &mut Report,
) -> Result<Expected, StorageError> {
    let mut expected = Expected::new();
    apply(&mut expected, genesis.writes());
    let mut shards = genesis.shards();
    let mut checkpoint: Hash = genesis.hash();
    let mut seen: HashSet<TxId> = HashSet::new();
    let replayed = catch_unwind(AssertUnwindSafe(|| -> Result<(), StorageError> {
        for (expected_round, (&round, placements)) in (1..).zip(rounds) {
            if round != expected_round {
                report.problem(format!("round {round}"), format!("rounds skip from {} to {round}", expected_round - 1));
                return Ok(());
            }
            let Some(blocks) = read_round(storage, round, placements, report)? else { return Ok(()) };
            let Some(input) = round_input(storage, round, &blocks, &mut seen, report)? else {
                return Ok(());
            };
            let outcome = execute_round(&mut shards, round, checkpoint, blocks[0].0.time, &input);
            if !replays_as_stored(&blocks, &outcome.blocks, report) {
                return Ok(());
            }
            checkpoint = outcome.checkpoint.hash();
            checkpoints.insert(checkpoint);
            apply(&mut expected, outcome.into_writes());
            report.rounds = round;
        }
        Ok(())
    }));
    match replayed {
        Ok(result) => result?,
        Err(_) => {
            report.problem("replay", "replaying the chain broke an invariant; the stored blocks are not a valid ledger")
        }
    }
    report.transactions = seen.len() as u64;
    Ok(expected)
}

/// The blocks of one round, which must share its time; `None` with the problem reported.
fn read_round(
    storage: &dyn Storage,
    round: u64,
    placements: &[(u32, u64)],
    report: &mut Report,
) -> Result<Option<Vec<(BlockHeader, BlockBody)>>, StorageError> {
    let mut blocks = Vec::with_capacity(placements.len());
    for &(shard, height) in placements {
        match read_block(storage, shard, height)? {
            Some(Ok(block)) => blocks.push(block),
            Some(Err(detail)) => {
                report.problem(format!("shard {shard} height {height}"), detail);
                return Ok(None);
            }
            None => {
                report.problem(format!("shard {shard} height {height}"), "header is missing");
                return Ok(None);
            }
        }
    }
    let time = blocks[0].0.time;
    if blocks.iter().any(|(header, _)| header.time != time) {
        report.problem(format!("round {round}"), "the round's blocks disagree on its time");
        return Ok(None);
    }
    Ok(Some(blocks))
}

/// The round's transactions in the order the ledger ran them: first-phase ones as the blocks
/// hold them, then coordinated ones in the order of the round's logged decisions. `None` with
/// the problem reported.
fn round_input(
    storage: &dyn Storage,
    round: u64,
    blocks: &[(BlockHeader, BlockBody)],
    seen: &mut HashSet<TxId>,
    report: &mut Report,
) -> Result<Option<Vec<SignedTransaction>>, StorageError> {
    let mut input = Vec::new();
    let mut cross: HashMap<TxId, SignedTransaction> = HashMap::new();
    for (_, body) in blocks {
        for (transaction, _) in &body.entries {
            if transaction.transaction.operation.kind().coordinated() {
                cross.insert(transaction.id(), transaction.clone());
            } else if seen.insert(transaction.id()) {
                input.push(transaction.clone());
            } else {
                let id = hex(&transaction.id().to_be_bytes());
                report.problem(format!("round {round}"), format!("transaction {id} appears twice in the chain"));
                return Ok(None);
            }
        }
    }
    if cross.is_empty() {
        return Ok(Some(input));
    }
    let key = layout::decision(round);
    let decisions = match storage.get(&key)?.map(|bytes| decode_decisions(&bytes)) {
        Some(Ok(decisions)) => decisions,
        Some(Err(error)) => {
            report.problem(layout::describe(&key), format!("cannot be decoded: {error}"));
            return Ok(None);
        }
        None => {
            report.problem(layout::describe(&key), "missing, but the round holds cross-shard transactions");
            return Ok(None);
        }
    };
    for (id, _) in &decisions {
        match cross.remove(id) {
            Some(transaction) if seen.insert(*id) => input.push(transaction),
            _ => {
                let detail = "names a transaction that is not in the round's blocks, or names it twice";
                report.problem(layout::describe(&key), detail);
                return Ok(None);
            }
        }
    }
    if !cross.is_empty() {
        report.problem(layout::describe(&key), "leaves out cross-shard transactions of the round");
        return Ok(None);
    }
    Ok(Some(input))
}

/// Whether every stored block of the round is the block replaying it gave; the first that is
/// not is reported.
fn replays_as_stored(blocks: &[(BlockHeader, BlockBody)], replayed: &[SealedBlock], report: &mut Report) -> bool {
    for (header, body) in blocks {
        let again = replayed.iter().find(|b| b.header.shard == header.shard);
        if again.map(|b| b.header.hash()) == Some(header.hash()) {
            continue;
        }
        let detail = match again {
            Some(again) => again
                .body
                .entries
                .iter()
                .zip(&body.entries)
                .find(|((_, replay), (_, stored))| replay != stored)
                .map(|((t, replay), (_, stored))| {
                    let id = hex(&t.id().to_be_bytes());
                    format!("transaction {id} is stored as {stored} but replays as {replay}")
                })
                .unwrap_or_else(|| "replaying the round gives a different block".into()),
            None => "replaying the round gives no block here".into(),
        };
        report.problem(format!("shard {} height {}", header.shard, header.height), detail);
        return false;
    }
    true
}

/// (3) The store must hold exactly what the blocks imply: one ordered scan, merged with the
/// expectation. Compared only when the chains and the replay were intact.
fn compare_store(storage: &dyn Storage, expected: &Expected, report: &mut Report) -> Result<(), StorageError> {
    let mut keys = 0u64;
    let mut wanted = expected.iter().peekable();
    let compare = report.is_intact();
    storage.scan(&[], &mut |key, value| {
        keys += 1;
        if !compare {
            return true;
        }
        while let Some((missing, _)) = wanted.next_if(|(wanted_key, _)| wanted_key.as_slice() < key) {
            report.problem(layout::describe(missing), "missing (deleted)");
        }
        match wanted.next_if(|(wanted_key, _)| wanted_key.as_slice() == key) {
            Some((_, hash)) if *hash != value_hash(value) => {
                report.problem(layout::describe(key), "value differs from what the blocks imply (changed)")
            }
            Some(_) => {}
            None => report.problem(
                layout::describe(key),
                "present but not implied by the blocks (added, or its block was removed)",
            ),
        }
        true
    })?;
    if compare {
        for (missing, _) in wanted {
            report.problem(layout::describe(missing), "missing (deleted)");
        }
    }
    report.keys = keys;
    Ok(())
}
