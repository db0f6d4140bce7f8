//! Verification of a stored ledger.
//!
//! Every key a ledger stores is a function of its blocks. So verification
//! (1) checks each shard's chain: header links, heights, rounds, times, both
//! Merkle roots and every signature; then (2) replays every round from the
//! genesis state through the same `execute_round` the live ledger runs,
//! checking that each replayed block equals the stored one; and (3) compares
//! the store it rebuilt this way with the stored one, key by key. A changed
//! byte or a deleted or added key anywhere (blocks, state, history, indexes,
//! decisions, checkpoints, metadata) is reported with its place. Damaged
//! input is reported, never panicked on.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::panic::{catch_unwind, AssertUnwindSafe};

use crate::block::{merkle_root, BlockBody, BlockHeader};
use crate::codec::Codec;
use crate::layout;
use crate::model::{hex, Hash, SignedTransaction, TxId};
use crate::round::{decode_decisions, execute_round, Genesis};
use crate::routing::participants;
use crate::signature::verify_all;
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

struct StoredBlock {
    header: BlockHeader,
    body: BlockBody,
}

/// Verifies everything in a store.
pub fn verify_storage(storage: &dyn Storage) -> Result<Report, StorageError> {
    let mut stored: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
    storage.scan(&[], &mut |key, value| {
        stored.insert(key.to_vec(), value.to_vec());
        true
    })?;
    let mut report = Report { keys: stored.len() as u64, ..Report::default() };

    let genesis = match stored.get(layout::META_CONFIG).map(|bytes| Genesis::decode(bytes)) {
        Some(Ok(genesis)) => genesis,
        Some(Err(error)) => {
            report.problem(layout::describe(layout::META_CONFIG), format!("cannot be decoded: {error}"));
            return Ok(report);
        }
        None => {
            report.problem(
                layout::describe(layout::META_CONFIG),
                "missing: this is not a ledger, or its configuration was deleted",
            );
            return Ok(report);
        }
    };
    report.shards = genesis.shards;

    // (1) Chains.
    let mut rounds: BTreeMap<u64, Vec<StoredBlock>> = BTreeMap::new();
    for shard in 0..genesis.shards {
        let mut previous: Hash = [0; 32];
        let mut previous_round = 0;
        let mut previous_time = 0;
        for height in 1.. {
            let header_key = layout::header(shard, height);
            let Some(header_bytes) = stored.get(&header_key) else { break };
            let place = format!("shard {shard} height {height}");
            let header = match BlockHeader::decode(header_bytes) {
                Ok(header) => header,
                Err(error) => {
                    report.problem(&place, format!("header cannot be decoded: {error}"));
                    break;
                }
            };
            let body = match stored.get(&layout::body(shard, height)).map(|b| BlockBody::decode(b)) {
                Some(Ok(body)) => body,
                Some(Err(error)) => {
                    report.problem(&place, format!("body cannot be decoded: {error}"));
                    break;
                }
                None => {
                    report.problem(&place, "body is missing");
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
            for (index, verdict) in verify_all(&transactions).into_iter().enumerate() {
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
            previous_round = header.round;
            previous_time = header.time;
            report.blocks += 1;
            rounds.entry(header.round).or_default().push(StoredBlock { header, body });
        }
    }

    // (2) Replay.
    let mut expected: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
    let apply = |expected: &mut BTreeMap<Vec<u8>, Vec<u8>>, writes: Vec<crate::round::Write>| {
        for (key, value) in writes {
            match value {
                Some(value) => expected.insert(key, value),
                None => expected.remove(&key),
            };
        }
    };
    apply(&mut expected, genesis.writes());
    let mut shards = genesis.shards();
    let mut checkpoint: Hash = [0; 32];
    let mut seen: HashSet<TxId> = HashSet::new();
    let replayed = catch_unwind(AssertUnwindSafe(|| {
        for (expected_round, (&round, blocks)) in (1..).zip(&rounds) {
            let place = format!("round {round}");
            if round != expected_round {
                report.problem(&place, format!("rounds skip from {} to {round}", expected_round - 1));
                return;
            }
            let time = blocks[0].header.time;
            if blocks.iter().any(|b| b.header.time != time) {
                report.problem(&place, "the round's blocks disagree on its time");
                return;
            }
            let mut input = Vec::new();
            let mut cross: HashMap<TxId, SignedTransaction> = HashMap::new();
            for block in blocks {
                for (transaction, _) in &block.body.entries {
                    if participants(&transaction.transaction, genesis.shards).len() == 1 {
                        if !seen.insert(transaction.id()) {
                            report.problem(
                                &place,
                                format!(
                                    "transaction {} appears twice in the chain",
                                    hex(&transaction.id().to_be_bytes())
                                ),
                            );
                            return;
                        }
                        input.push(transaction.clone());
                    } else {
                        cross.insert(transaction.id(), transaction.clone());
                    }
                }
            }
            if !cross.is_empty() {
                let key = layout::decision(round);
                let decisions = match stored.get(&key).map(|b| decode_decisions(b)) {
                    Some(Ok(decisions)) => decisions,
                    Some(Err(error)) => {
                        report.problem(layout::describe(&key), format!("cannot be decoded: {error}"));
                        return;
                    }
                    None => {
                        report.problem(layout::describe(&key), "missing, but the round holds cross-shard transactions");
                        return;
                    }
                };
                for (id, _) in &decisions {
                    match cross.remove(id) {
                        Some(transaction) if seen.insert(*id) => input.push(transaction),
                        _ => {
                            report.problem(
                                layout::describe(&key),
                                "names a transaction that is not in the round's blocks, or twice",
                            );
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
            let replayed: HashMap<(u32, u64), Hash> =
                outcome.blocks.iter().map(|b| ((b.header.shard, b.header.height), b.header.hash())).collect();
            for block in blocks {
                let header = &block.header;
                if replayed.get(&(header.shard, header.height)) != Some(&header.hash()) {
                    let detail = match outcome.blocks.iter().find(|b| b.header.shard == header.shard) {
                        Some(again) => again
                            .body
                            .entries
                            .iter()
                            .zip(&block.body.entries)
                            .find(|((_, replay), (_, stored))| replay != stored)
                            .map(|((t, replay), (_, stored))| {
                                format!(
                                    "transaction {} is stored as {stored} but replays as {replay}",
                                    hex(&t.id().to_be_bytes())
                                )
                            })
                            .unwrap_or_else(|| "replaying the round gives a different block".into()),
                        None => "replaying the round gives no block here".into(),
                    };
                    report.problem(format!("shard {} height {}", header.shard, header.height), detail);
                    return;
                }
            }
            checkpoint = outcome.checkpoint.hash();
            apply(&mut expected, outcome.writes());
            report.rounds = round;
        }
    }));
    report.transactions = seen.len() as u64;
    if replayed.is_err() {
        report.problem("replay", "replaying the chain broke an invariant; the stored blocks are not a valid ledger");
    }

    // (3) Everything else must be exactly what the blocks imply.
    if report.is_intact() {
        let mut stored_entries = stored.iter().peekable();
        let mut expected_entries = expected.iter().peekable();
        loop {
            match (stored_entries.peek(), expected_entries.peek()) {
                (None, None) => break,
                (Some((key, _)), None) => {
                    report.problem(
                        layout::describe(key),
                        "present but not implied by the blocks (added, or its block was removed)",
                    );
                    stored_entries.next();
                }
                (None, Some((key, _))) => {
                    report.problem(layout::describe(key), "missing (deleted)");
                    expected_entries.next();
                }
                (Some((stored_key, stored_value)), Some((expected_key, expected_value))) => {
                    if stored_key < expected_key {
                        report.problem(
                            layout::describe(stored_key),
                            "present but not implied by the blocks (added, or its block was removed)",
                        );
                        stored_entries.next();
                    } else if stored_key > expected_key {
                        report.problem(layout::describe(expected_key), "missing (deleted)");
                        expected_entries.next();
                    } else {
                        if stored_value != expected_value {
                            report.problem(
                                layout::describe(stored_key),
                                "value differs from what the blocks imply (changed)",
                            );
                        }
                        stored_entries.next();
                        expected_entries.next();
                    }
                }
            }
        }
    }
    Ok(report)
}
