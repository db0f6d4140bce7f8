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
use crate::routing::participants;
use crate::signature::SignatureVerifier;
use crate::storage::{Storage, StorageError};

/// Most problems listed in a report (all are counted).
pub const PROBLEMS_LISTED_MAX: usize = 50;

/// One damaged place.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    pub place: String,
    pub detail: String,
}

/// What verification found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Report {
    pub shards: u32,
    pub rounds: u64,
    pub blocks: u64,
    /// Distinct transactions replayed (a cross-shard one is in several blocks, counted once).
    pub transactions: u64,
    pub keys: u64,
    /// The first `PROBLEMS_LISTED_MAX` problems, first found first.
    pub problems: Vec<Problem>,
    pub problem_count: u64,
}

impl Report {
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
/// let config = Config { shards: 2, genesis_operators: vec![signature::actor_key(&operator)] };
/// let ledger = Ledger::builder().clock(caduceus_engine::ledger::system_clock()).open_on(storage.clone(), &config)?;
/// let actor = signature::actor_key(&signature::signing_key([2; 32]));
/// let register = Transaction {
///     id: 7,
///     signer: signature::actor_key(&operator),
///     timestamp: 0,
///     operation: Operation::RegisterActor { actor, role: Role::Patient, name: "Ada".into() },
/// };
/// ledger.submit(vec![signature::sign(register, &operator)?])?;
/// drop(ledger);
/// assert!(verify_storage(storage.as_ref())?.is_intact());
///
/// // Change one byte of the transaction index: verification names the place.
/// let key = caduceus_engine::layout::transaction(7);
/// let mut value = storage.get(&key)?.unwrap();
/// value[0] ^= 1;
/// storage.write(&[(key, Some(value))])?;
/// let report = verify_storage(storage.as_ref())?;
/// assert!(!report.is_intact());
/// assert!(report.problems[0].place.starts_with("transaction index"));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn verify_storage(storage: &dyn Storage) -> Result<Report, StorageError> {
    let mut report = Report::default();
    let genesis = match storage.get(layout::META_CONFIG)?.map(|bytes| Genesis::decode(&bytes)) {
        Some(Ok(genesis)) => genesis,
        Some(Err(error)) => {
            report.problem(layout::describe(layout::META_CONFIG), format!("cannot be decoded: {error}"));
            return Ok(report);
        }
        None => {
            report.problem(
                layout::describe(layout::META_CONFIG),
                "missing: not a ledger, or its configuration was deleted",
            );
            return Ok(report);
        }
    };
    report.shards = genesis.shards;

    // (1) Chains. Kept per block: its round and header hash.
    let verifier = SignatureVerifier::new();
    let mut chains: Vec<Vec<(u64, Hash)>> = vec![Vec::new(); genesis.shards as usize];
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
            if !broken.is_empty() {
                for detail in broken {
                    report.problem(&place, detail);
                }
                break;
            }
            previous = header.hash();
            (previous_round, previous_time) = (header.round, header.time);
            chains[shard as usize].push((header.round, previous));
            report.blocks += 1;
        }
    }
    let mut rounds: BTreeMap<u64, Vec<(u32, u64)>> = BTreeMap::new();
    for (shard, chain) in chains.iter().enumerate() {
        for (index, (round, _)) in chain.iter().enumerate() {
            rounds.entry(*round).or_default().push((shard as u32, index as u64 + 1));
        }
    }

    // (2) Replay, collecting the hash of every value the store should hold.
    let mut expected: BTreeMap<Vec<u8>, Hash> = BTreeMap::new();
    let apply = |expected: &mut BTreeMap<Vec<u8>, Hash>, writes: Vec<Write>| {
        for (key, value) in writes {
            match value {
                Some(value) => expected.insert(key, value_hash(&value)),
                None => expected.remove(&key),
            };
        }
    };
    apply(&mut expected, genesis.writes());
    let mut shards = genesis.shards();
    let mut checkpoint: Hash = [0; 32];
    let mut seen: HashSet<TxId> = HashSet::new();
    let mut failure: Option<StorageError> = None;
    let replayed = catch_unwind(AssertUnwindSafe(|| {
        for (expected_round, (&round, placements)) in (1..).zip(&rounds) {
            let place = format!("round {round}");
            if round != expected_round {
                report.problem(&place, format!("rounds skip from {} to {round}", expected_round - 1));
                return;
            }
            let mut blocks = Vec::with_capacity(placements.len());
            for &(shard, height) in placements {
                match read_block(storage, shard, height) {
                    Ok(Some(Ok(block))) => blocks.push(block),
                    Ok(Some(Err(detail))) => {
                        report.problem(format!("shard {shard} height {height}"), detail);
                        return;
                    }
                    Ok(None) => {
                        report.problem(format!("shard {shard} height {height}"), "header is missing");
                        return;
                    }
                    Err(error) => {
                        failure = Some(error);
                        return;
                    }
                }
            }
            let time = blocks[0].0.time;
            if blocks.iter().any(|(header, _)| header.time != time) {
                report.problem(&place, "the round's blocks disagree on its time");
                return;
            }
            let mut input = Vec::new();
            let mut cross: HashMap<TxId, SignedTransaction> = HashMap::new();
            for (_, body) in &blocks {
                for (transaction, _) in &body.entries {
                    if participants(&transaction.transaction, genesis.shards).len() > 1 {
                        cross.insert(transaction.id(), transaction.clone());
                    } else if seen.insert(transaction.id()) {
                        input.push(transaction.clone());
                    } else {
                        let id = hex(&transaction.id().to_be_bytes());
                        report.problem(&place, format!("transaction {id} appears twice in the chain"));
                        return;
                    }
                }
            }
            if !cross.is_empty() {
                let key = layout::decision(round);
                let decisions = match storage.get(&key).map(|b| b.map(|b| decode_decisions(&b))) {
                    Ok(Some(Ok(decisions))) => decisions,
                    Ok(Some(Err(error))) => {
                        report.problem(layout::describe(&key), format!("cannot be decoded: {error}"));
                        return;
                    }
                    Ok(None) => {
                        report.problem(layout::describe(&key), "missing, but the round holds cross-shard transactions");
                        return;
                    }
                    Err(error) => {
                        failure = Some(error);
                        return;
                    }
                };
                for (id, _) in &decisions {
                    match cross.remove(id) {
                        Some(transaction) if seen.insert(*id) => input.push(transaction),
                        _ => {
                            let detail = "names a transaction that is not in the round's blocks, or names it twice";
                            report.problem(layout::describe(&key), detail);
                            return;
                        }
                    }
                }
                if !cross.is_empty() {
                    report.problem(layout::describe(&key), "leaves out cross-shard transactions of the round");
                    return;
                }
            }
            let outcome = execute_round(&mut shards, round, checkpoint, time, &input);
            for (header, body) in &blocks {
                let replayed = outcome.blocks.iter().find(|b| b.header.shard == header.shard);
                if replayed.map(|b| b.header.hash()) == Some(header.hash()) {
                    continue;
                }
                let detail = match replayed {
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
                return;
            }
            checkpoint = outcome.checkpoint.hash();
            apply(&mut expected, outcome.into_writes());
            report.rounds = round;
        }
    }));
    if let Some(error) = failure {
        return Err(error);
    }
    if replayed.is_err() {
        report.problem("replay", "replaying the chain broke an invariant; the stored blocks are not a valid ledger");
    }
    report.transactions = seen.len() as u64;

    // (3) The store must hold exactly what the blocks imply: one ordered scan, merged with the expectation.
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
    Ok(report)
}
