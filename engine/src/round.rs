//! Executes one round across all shards, and says what it writes.
//!
//! A round is one or more submitted batches sealed together: every shard
//! runs its single-shard transactions in submission order, in parallel with
//! the other shards; then the cross-shard transactions go through the
//! coordinator's two-phase commit; then every shard that did anything seals a
//! block and a checkpoint folds all heads. The live ledger and `verify`'s
//! replay both run rounds through here, so a stored ledger can be rebuilt
//! byte for byte from its blocks.

use rayon::prelude::*;

use crate::block::{Checkpoint, ShardHead};
use crate::codec::{Codec, DecodeError, Decoder, EncodeError, Encoder};
use crate::coordinator::{Action, Coordinator, Message};
use crate::layout;
use crate::limits::{ROUND_TRANSACTIONS_MAX, SHARDS_MAX};
use crate::model::{ActorKey, Hash, Role, SignedTransaction, Timestamp, TxId, TxResult};
use crate::routing::participants;
use crate::shard::{Reply, SealedBlock, Shard};
use crate::state::{Actor, State, StateKey};

/// A key-value write: `None` deletes the key.
pub type Write = (Vec<u8>, Option<Vec<u8>>);

/// What a ledger is created with, stored in its first write and checked on every open.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Genesis {
    pub shards: u32,
    /// Operators registered before the first transaction; they register everyone else.
    pub operators: Vec<ActorKey>,
    /// How many operators must agree to add another operator (1 to `operators.len()`).
    pub quorum: u32,
}

impl Genesis {
    /// The hash the checkpoint chain starts from: round 1's checkpoint names it as its
    /// previous, so every checkpoint commits to the shard count and the genesis operators, and
    /// a store rebuilt on another genesis extends no checkpoint published from this one.
    pub fn hash(&self) -> Hash {
        let mut hasher = blake3::Hasher::new();
        hasher.update(b"caduceus.genesis.1");
        hasher.update(&self.encode().expect("a genesis is bounded"));
        *hasher.finalize().as_bytes()
    }
}

impl Codec for Genesis {
    fn encode_into(&self, e: &mut Encoder) -> Result<(), EncodeError> {
        e.u8(crate::model::ENCODING_VERSION);
        e.u32(self.shards);
        e.count("operators", self.operators.len(), 64)?;
        for operator in &self.operators {
            e.array(&operator.0);
        }
        e.u32(self.quorum);
        Ok(())
    }
    fn decode_from(d: &mut Decoder<'_>) -> Result<Self, DecodeError> {
        d.version()?;
        let shards = d.u32()?;
        if shards == 0 || shards > SHARDS_MAX {
            return Err(DecodeError::Invalid("shard count"));
        }
        let count = d.count("operators", 64)?;
        let operators: Vec<ActorKey> = (0..count).map(|_| d.array().map(ActorKey)).collect::<Result<_, _>>()?;
        let quorum = d.u32()?;
        if quorum == 0 || quorum as usize > operators.len() {
            return Err(DecodeError::Invalid("operator quorum"));
        }
        Ok(Self { shards, operators, quorum })
    }
}

impl Genesis {
    /// The state every shard starts from: the genesis operators.
    pub fn state(&self) -> State {
        let mut state = State::default();
        for operator in &self.operators {
            state.actors.insert(
                *operator,
                Actor { role: Role::Operator, registered_at: 0, prefixes: Vec::new(), revoked_at: None, key: None },
            );
        }
        state
    }

    pub fn shards(&self) -> Vec<Shard> {
        (0..self.shards)
            .map(|id| Shard::restore(id, self.shards, self.state(), 0, [0; 32], 0).with_quorum(self.quorum))
            .collect()
    }

    /// What a new store of this ledger or cluster records first: its configuration and the
    /// store format (`layout::STORE_FORMAT`).
    pub fn config_writes(&self) -> [Write; 2] {
        [(layout::META_CONFIG.to_vec(), Some(self.encode().expect("genesis is bounded"))), layout::format_write()]
    }

    /// The first write of a new ledger: its configuration and every shard's genesis state.
    pub fn writes(&self) -> Vec<Write> {
        let mut writes = self.config_writes().to_vec();
        let state = self.state();
        for shard in 0..self.shards {
            for operator in &self.operators {
                let key = StateKey::Actor(*operator);
                writes.push((layout::state(shard, &key), state.value(&key)));
            }
        }
        writes
    }
}

/// Everything one round produced.
pub struct RoundOutcome {
    pub round: u64,
    /// One result per input transaction, in input order.
    pub results: Vec<TxResult>,
    pub blocks: Vec<SealedBlock>,
    /// The coordinator's decisions, in the order it made them.
    pub decisions: Vec<(TxId, TxResult)>,
    pub checkpoint: Checkpoint,
}

/// The coordinator's log record for a round.
pub fn encode_decisions(decisions: &[(TxId, TxResult)]) -> Vec<u8> {
    let mut e = Encoder::new();
    e.u32(decisions.len() as u32);
    for (id, result) in decisions {
        e.u128(*id);
        e.u16(result.code());
    }
    e.bytes
}

pub fn decode_decisions(bytes: &[u8]) -> Result<Vec<(TxId, TxResult)>, DecodeError> {
    let mut d = Decoder::new(bytes);
    let count = d.u32()? as usize;
    if count > ROUND_TRANSACTIONS_MAX {
        return Err(DecodeError::TooLong { field: "decisions", length: count, limit: ROUND_TRANSACTIONS_MAX });
    }
    let decisions = (0..count)
        .map(|_| Ok((d.u128()?, TxResult::from_code(d.u16()?).ok_or(DecodeError::Invalid("result"))?)))
        .collect::<Result<_, DecodeError>>()?;
    d.finish()?;
    Ok(decisions)
}

/// The last round's number and checkpoint hash, as kept in metadata.
pub fn encode_round_meta(round: u64, checkpoint: &Hash) -> Vec<u8> {
    let mut out = round.to_le_bytes().to_vec();
    out.extend_from_slice(checkpoint);
    out
}

pub fn decode_round_meta(bytes: &[u8]) -> Result<(u64, Hash), DecodeError> {
    let mut d = Decoder::new(bytes);
    let value = (d.u64()?, d.array()?);
    d.finish()?;
    Ok(value)
}

/// Delivers messages to their shards, all shards in parallel, and returns the replies.
fn deliver(shards: &mut [Shard], messages: Vec<Message>) -> Vec<Reply> {
    let mut inbox: Vec<Vec<Message>> = vec![Vec::new(); shards.len()];
    for message in messages {
        let shard = match &message {
            Message::Prepare { shard, .. } | Message::Decide { shard, .. } => *shard,
        };
        inbox[shard as usize].push(message);
    }
    shards
        .par_iter_mut()
        .zip(inbox)
        .flat_map_iter(|(shard, messages)| messages.into_iter().map(|m| shard.handle(m)).collect::<Vec<_>>())
        .collect()
}

/// Splits a round's transactions by phase (`OperationKind::coordinated`): per shard, the
/// positions of the first-phase ones, which touch that shard alone; and the coordinated ones,
/// each with its participants (ascending; one or more).
#[allow(clippy::type_complexity)]
pub fn split(transactions: &[SignedTransaction], shard_count: u32) -> (Vec<Vec<usize>>, Vec<(usize, Vec<u32>)>) {
    let mut singles: Vec<Vec<usize>> = vec![Vec::new(); shard_count as usize];
    let mut cross: Vec<(usize, Vec<u32>)> = Vec::new();
    for (position, transaction) in transactions.iter().enumerate() {
        let touched = participants(&transaction.transaction, shard_count);
        if transaction.transaction.operation.kind().coordinated() {
            cross.push((position, touched));
        } else {
            assert_eq!(touched.len(), 1, "a first-phase operation touches one shard");
            singles[touched[0] as usize].push(position);
        }
    }
    (singles, cross)
}

/// Runs one round of already-verified, de-duplicated transactions at commit time `now`.
pub fn execute_round(
    shards: &mut [Shard],
    round: u64,
    previous_checkpoint: Hash,
    now: Timestamp,
    transactions: &[SignedTransaction],
) -> RoundOutcome {
    assert!(transactions.len() <= ROUND_TRANSACTIONS_MAX, "rounds are bounded");
    // One commit time for the whole round, never before any shard's last block.
    let now = shards.iter().map(Shard::last_time).fold(now, u64::max);
    let (singles, cross) = split(transactions, shards.len() as u32);

    let mut results = vec![TxResult::Committed; transactions.len()];
    let single_results: Vec<Vec<(usize, TxResult)>> = shards
        .par_iter_mut()
        .zip(&singles)
        .map(|(shard, positions)| {
            shard.begin(now);
            positions.iter().map(|&p| (p, shard.execute(&transactions[p]))).collect()
        })
        .collect();
    for (position, result) in single_results.into_iter().flatten() {
        results[position] = result;
    }

    let mut coordinator =
        Coordinator::new(round, cross.iter().map(|(p, touched)| (transactions[*p].clone(), touched.clone())).collect());
    let mut decisions = Vec::new();
    let mut actions = coordinator.start();
    while !actions.is_empty() {
        let mut messages = Vec::new();
        let mut next = Vec::new();
        for action in actions {
            match action {
                Action::Send(message) => messages.push(message),
                // The round's single write carries the log record, so it is durable
                // no later than any effect of the decisions.
                Action::LogDecisions { round, decisions: logged } => {
                    decisions = logged;
                    next.extend(coordinator.decisions_logged(round));
                }
            }
        }
        for reply in deliver(shards, messages) {
            match reply {
                Reply::Votes { round, shard, votes } => next.extend(coordinator.on_votes(round, shard, votes)),
                Reply::Acknowledged { round, shard } => coordinator.on_acknowledged(round, shard),
            }
        }
        actions = next;
    }
    assert!(coordinator.is_done(), "every cross-shard transaction is decided and applied within its round");
    for ((position, _), result) in cross.iter().zip(coordinator.results().expect("decided")) {
        results[*position] = *result;
    }

    let blocks: Vec<SealedBlock> = shards.par_iter_mut().filter_map(|shard| shard.seal(round)).collect();
    let checkpoint = Checkpoint {
        round,
        previous: previous_checkpoint,
        heads: shards.iter().map(|s| ShardHead { shard: s.id(), height: s.height(), hash: s.head() }).collect(),
    };
    RoundOutcome { round, results, blocks, decisions, checkpoint }
}

impl RoundOutcome {
    /// Every key the round writes, in one batch: blocks, state, history, the
    /// coordinator's decisions, the checkpoint and the round pointer. The blocks' own
    /// writes move into the batch rather than being copied.
    pub fn into_writes(self) -> Vec<Write> {
        let count = self.blocks.iter().map(|b| 2 + b.state_writes.len() + b.index_writes.len()).sum::<usize>();
        let mut writes = Vec::with_capacity(count + 3);
        for block in self.blocks {
            block.into_writes(&mut writes);
        }
        if !self.decisions.is_empty() {
            writes.push((layout::decision(self.round), Some(encode_decisions(&self.decisions))));
        }
        writes.push((layout::checkpoint(self.round), Some(self.checkpoint.encode().expect("bounded checkpoint"))));
        writes.push((layout::META_ROUND.to_vec(), Some(encode_round_meta(self.round, &self.checkpoint.hash()))));
        writes
    }
}
