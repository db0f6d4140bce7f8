//! One shard as a participant of a cluster: the shard state machine with its
//! own storage, driven by a coordinator's round requests and decisions.
//!
//! A round request carries the round's single-shard transactions for this
//! shard and the cross-shard ones it takes part in. Without cross-shard
//! transactions the participant executes, seals and writes the block at once
//! (one write, one fsync). With them it executes the singles, prepares the
//! cross-shard ones, and persists the request itself as its prepared state
//! before voting: the state machine is deterministic, so after a crash,
//! running the stored request again on the stored state restores exactly the
//! same prepared transactions, locks and votes. The coordinator's decision then
//! finishes the prepared transactions and seals the block in one write that
//! also drops the prepared record.
//!
//! It does no network I/O; `caduceus-shards` carries its messages.

use std::collections::HashMap;
use std::sync::Arc;

use thiserror::Error;

use crate::block::ShardHead;
use crate::codec::{Codec, DecodeError, Decoder, EncodeError, Encoder};
use crate::coordinator::Message;
use crate::history::TxLocation;
use crate::layout;
use crate::ledger::{check_format, load_state, OpenError};
use crate::limits::ROUND_TRANSACTIONS_MAX;
use crate::model::{
    decode_result, decode_transactions, encode_result, encode_transactions, Hash, Reason, SignedTransaction, Timestamp,
    TxId, TxResult,
};
use crate::round::{Genesis, Write};
use crate::routing::participants;
use crate::shard::{Admission, Reply, SealedBlock, Shard};
use crate::storage::{Storage, StorageError};

/// A coordinator's request to run one round on one shard.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoundRequest {
    pub round: u64,
    /// The round's commit time; the participant never goes below its last block's time.
    pub now: Timestamp,
    /// Transactions that touch only this shard, in submission order.
    pub singles: Vec<SignedTransaction>,
    /// Cross-shard transactions this shard takes part in, in submission order.
    pub prepares: Vec<SignedTransaction>,
}

impl Codec for RoundRequest {
    fn encode_into(&self, e: &mut Encoder) -> Result<(), EncodeError> {
        e.u64(self.round);
        e.u64(self.now);
        encode_transactions(e, &self.singles)?;
        encode_transactions(e, &self.prepares)
    }
    fn decode_from(d: &mut Decoder<'_>) -> Result<Self, DecodeError> {
        let (round, now) = (d.u64()?, d.u64()?);
        let singles = decode_transactions(d)?;
        let prepares = decode_transactions(d)?;
        if singles.len() + prepares.len() > ROUND_TRANSACTIONS_MAX {
            return Err(DecodeError::TooLong {
                field: "round",
                length: singles.len() + prepares.len(),
                limit: ROUND_TRANSACTIONS_MAX,
            });
        }
        Ok(Self { round, now, singles, prepares })
    }
}

/// A participant's answer to a round request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoundReply {
    pub round: u64,
    /// One result per single-shard transaction, in request order.
    pub results: Vec<TxResult>,
    /// One vote per cross-shard transaction, in request order.
    pub votes: Vec<Result<(), Reason>>,
    /// The shard's head once the round is sealed: at once when there was nothing to prepare.
    pub sealed: Option<ShardHead>,
}

fn encode_head(e: &mut Encoder, head: &ShardHead) {
    e.u32(head.shard);
    e.u64(head.height);
    e.array(&head.hash);
}

fn decode_head(d: &mut Decoder<'_>) -> Result<ShardHead, DecodeError> {
    Ok(ShardHead { shard: d.u32()?, height: d.u64()?, hash: d.array()? })
}

impl Codec for RoundReply {
    fn encode_into(&self, e: &mut Encoder) -> Result<(), EncodeError> {
        e.u64(self.round);
        e.count("results", self.results.len(), ROUND_TRANSACTIONS_MAX)?;
        for result in &self.results {
            encode_result(e, *result);
        }
        e.count("votes", self.votes.len(), ROUND_TRANSACTIONS_MAX)?;
        for vote in &self.votes {
            e.u16(vote.map_or_else(|reason| reason.code(), |()| 0));
        }
        e.bool(self.sealed.is_some());
        if let Some(head) = &self.sealed {
            encode_head(e, head);
        }
        Ok(())
    }
    fn decode_from(d: &mut Decoder<'_>) -> Result<Self, DecodeError> {
        let round = d.u64()?;
        let count = d.count("results", ROUND_TRANSACTIONS_MAX)?;
        let results = (0..count).map(|_| decode_result(d)).collect::<Result<_, _>>()?;
        let count = d.count("votes", ROUND_TRANSACTIONS_MAX)?;
        let votes = (0..count)
            .map(|_| match decode_result(d)? {
                TxResult::Committed => Ok(Ok(())),
                TxResult::Rejected(reason) => Ok(Err(reason)),
            })
            .collect::<Result<_, DecodeError>>()?;
        let sealed = if d.bool("sealed")? { Some(decode_head(d)?) } else { None };
        Ok(Self { round, results, votes, sealed })
    }
}

/// A participant's durable position: its last block and the last round it finished.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Head {
    pub height: u64,
    pub hash: Hash,
    pub time: Timestamp,
    pub round: u64,
}

impl Codec for Head {
    fn encode_into(&self, e: &mut Encoder) -> Result<(), EncodeError> {
        e.u64(self.height);
        e.array(&self.hash);
        e.u64(self.time);
        e.u64(self.round);
        Ok(())
    }
    fn decode_from(d: &mut Decoder<'_>) -> Result<Self, DecodeError> {
        Ok(Self { height: d.u64()?, hash: d.array()?, time: d.u64()?, round: d.u64()? })
    }
}

/// What a participant tells a (restarted) coordinator about itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Status {
    pub shard: u32,
    pub shards: u32,
    pub head: Head,
    /// A prepared round waiting for its decision, with the ids it prepared.
    pub pending: Option<(u64, Vec<TxId>)>,
}

impl Codec for Status {
    fn encode_into(&self, e: &mut Encoder) -> Result<(), EncodeError> {
        e.u32(self.shard);
        e.u32(self.shards);
        self.head.encode_into(e)?;
        e.bool(self.pending.is_some());
        if let Some((round, ids)) = &self.pending {
            e.u64(*round);
            e.count("pending", ids.len(), ROUND_TRANSACTIONS_MAX)?;
            for id in ids {
                e.u128(*id);
            }
        }
        Ok(())
    }
    fn decode_from(d: &mut Decoder<'_>) -> Result<Self, DecodeError> {
        let (shard, shards) = (d.u32()?, d.u32()?);
        let head = Head::decode_from(d)?;
        let pending = if d.bool("pending")? {
            let round = d.u64()?;
            let count = d.count("pending", ROUND_TRANSACTIONS_MAX)?;
            Some((round, (0..count).map(|_| d.u128()).collect::<Result<_, _>>()?))
        } else {
            None
        };
        Ok(Self { shard, shards, head, pending })
    }
}

/// Why a participant refused a request. Nothing was applied when one is returned.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum ParticipantError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("round {round} is in doubt here: decide it first")]
    InDoubt { round: u64 },
    #[error("round {round} is older than this shard's last round {last}")]
    Stale { round: u64, last: u64 },
    #[error("round {round} is not prepared here")]
    NotPrepared { round: u64 },
    #[error("transaction {id:032x} does not belong in this shard's part of the round")]
    Misrouted { id: TxId },
    #[error("the decision commits transaction {id:032x}, which this shard voted to refuse")]
    CommitAgainstVote { id: TxId },
    #[error("a round of {count} transactions is over the limit of {limit}")]
    RoundTooLarge { count: usize, limit: usize },
    #[error("transaction {id:032x} is prepared twice in one round")]
    PreparedTwice { id: TxId },
}

/// Whether a cluster node's store was created for the cluster of `genesis` (`false`: the store
/// is new); a store of another cluster is refused.
pub(crate) fn belongs_to(storage: &dyn Storage, genesis: &Genesis) -> Result<bool, OpenError> {
    let Some(bytes) = storage.get(layout::META_CONFIG)? else { return Ok(false) };
    check_format(storage)?;
    let stored = Genesis::decode(&bytes)
        .map_err(|e| OpenError::Corrupt { place: layout::describe(layout::META_CONFIG), detail: e.to_string() })?;
    if stored != *genesis {
        return Err(OpenError::Config("the store belongs to a cluster with another genesis"));
    }
    Ok(true)
}

struct Pending {
    request: RoundRequest,
    reply: RoundReply,
}

/// A participant's records of the cross-shard transactions in its block that another shard
/// (their first participant) indexes: where this block holds each, and its result.
pub(crate) fn participation_records<'a>(
    header: &'a crate::block::BlockHeader,
    body: &'a crate::block::BlockBody,
    shard_count: u32,
) -> impl Iterator<Item = (Vec<u8>, Vec<u8>)> + 'a {
    let (shard, height) = (header.shard, header.height);
    body.entries.iter().enumerate().filter_map(move |(index, (transaction, result))| {
        if participants(&transaction.transaction, shard_count)[0] == shard {
            return None;
        }
        let digest = *transaction.digest();
        let location = TxLocation { shard, height, index: index as u32, result: *result, digest };
        Some((layout::participation(transaction.id()), location.encode().expect("fixed size")))
    })
}

/// One shard of a cluster with its storage.
pub struct Participant {
    genesis: Genesis,
    storage: Arc<dyn Storage>,
    shard: Shard,
    head: Head,
    pending: Option<Pending>,
    /// The reply to the last finished round, for a coordinator that asks again.
    last_reply: Option<RoundReply>,
}

impl Participant {
    /// Opens shard `id` of a cluster created with `genesis`: a new store gets the genesis
    /// state; a stored prepared round is run again, so its transactions are prepared as before.
    pub fn open(storage: Arc<dyn Storage>, genesis: &Genesis, id: u32) -> Result<Self, OpenError> {
        if id >= genesis.shards {
            return Err(OpenError::Config("shard id is not below the shard count"));
        }
        let damaged = |key: &[u8], detail: String| OpenError::Corrupt { place: layout::describe(key), detail };
        if belongs_to(storage.as_ref(), genesis)? {
            let shard =
                storage.get(layout::META_SHARD)?.ok_or_else(|| damaged(layout::META_SHARD, "missing".into()))?;
            if shard != id.to_le_bytes() {
                return Err(OpenError::Config("the store belongs to another shard of the cluster"));
            }
        } else {
            let prefix = layout::state_prefix(id);
            let mut writes: Vec<Write> =
                genesis.writes().into_iter().filter(|(key, _)| key.starts_with(&prefix)).collect();
            writes.extend(genesis.config_writes());
            writes.push((layout::META_SHARD.to_vec(), Some(id.to_le_bytes().to_vec())));
            storage.write(&writes)?;
        }
        let head = match storage.get(layout::META_HEAD)? {
            Some(bytes) => Head::decode(&bytes).map_err(|e| damaged(layout::META_HEAD, e.to_string()))?,
            None => Head { height: 0, hash: [0; 32], time: 0, round: 0 },
        };
        let state = load_state(storage.as_ref(), id, None)?;
        let shard =
            Shard::restore(id, genesis.shards, state, head.height, head.hash, head.time).with_quorum(genesis.quorum);
        let mut participant =
            Self { genesis: genesis.clone(), storage: storage.clone(), shard, head, pending: None, last_reply: None };
        if let Some(bytes) = storage.get(layout::META_PENDING)? {
            let request = RoundRequest::decode(&bytes).map_err(|e| damaged(layout::META_PENDING, e.to_string()))?;
            let reply = participant.run(&request)?;
            participant.pending = Some(Pending { request, reply });
        }
        Ok(participant)
    }

    pub fn id(&self) -> u32 {
        self.shard.id()
    }
    pub fn shard(&self) -> &Shard {
        &self.shard
    }
    pub fn storage(&self) -> &Arc<dyn Storage> {
        &self.storage
    }

    pub fn status(&self) -> Status {
        Status {
            shard: self.shard.id(),
            shards: self.genesis.shards,
            head: self.head,
            pending: self
                .pending
                .as_ref()
                .map(|p| (p.request.round, p.request.prepares.iter().map(|t| t.id()).collect())),
        }
    }

    /// The result this shard recorded for each id, if it holds it: from the transaction index,
    /// or, for a cross-shard transaction indexed by another participant, from its
    /// participation record.
    pub fn lookup(&self, ids: &[TxId]) -> Result<Vec<Option<TxResult>>, StorageError> {
        Ok(self.locations(ids)?.into_iter().map(|found| found.map(|location| location.result)).collect())
    }

    /// What each transaction (id, body digest) is answered if this shard holds its id already:
    /// the first result for the same body, a conflict for another (`TxLocation::answer`).
    pub fn repeats(&self, transactions: &[(TxId, Hash)]) -> Result<Vec<Option<TxResult>>, StorageError> {
        let ids: Vec<TxId> = transactions.iter().map(|(id, _)| *id).collect();
        let found = self.locations(&ids)?;
        Ok(found.into_iter().zip(transactions).map(|(found, (_, digest))| found.map(|l| l.answer(digest))).collect())
    }

    /// What each transaction is answered before a round at commit time `now`, without running
    /// it: the first result or a conflict if this shard holds its id (`repeats`); else a
    /// refusal if it may not reach the rules (`Shard::admit`, the same on every shard); else
    /// nothing (it is new). The coordinator asks every shard, so an id recorded anywhere is
    /// found, and a round holds only transactions the ledger will record.
    pub fn admit(&self, now: Timestamp, entries: &[Admission]) -> Result<Vec<Option<TxResult>>, StorageError> {
        let ids: Vec<(TxId, Hash)> = entries.iter().map(|a| (a.id, a.digest)).collect();
        let found = self.repeats(&ids)?;
        Ok(found
            .into_iter()
            .zip(entries)
            .map(|(found, a)| found.or_else(|| self.shard.admit_parts(a, now).err().map(TxResult::Rejected)))
            .collect())
    }

    /// Where this shard recorded each id, if it holds it: from the transaction index, or, for
    /// a cross-shard transaction indexed by another participant, from its participation record.
    fn locations(&self, ids: &[TxId]) -> Result<Vec<Option<TxLocation>>, StorageError> {
        // A damaged entry is an error for the coordinator to report, never a panic: the
        // request comes from a peer, and the shard server must keep serving.
        let result_of = |key: &[u8], bytes: Vec<u8>| {
            TxLocation::decode(&bytes)
                .map_err(|error| StorageError::Damaged { place: layout::describe(key), detail: error.to_string() })
        };
        let keys: Vec<Vec<u8>> = ids.iter().map(|id| layout::transaction(*id)).collect();
        let mut found = Vec::with_capacity(ids.len());
        for (key, stored) in keys.iter().zip(self.storage.get_many(&keys)?) {
            found.push(stored.map(|bytes| result_of(key, bytes)).transpose()?);
        }
        let missing: Vec<usize> = (0..ids.len()).filter(|&i| found[i].is_none()).collect();
        if !missing.is_empty() {
            let keys: Vec<Vec<u8>> = missing.iter().map(|&i| layout::participation(ids[i])).collect();
            for ((&i, key), stored) in missing.iter().zip(&keys).zip(self.storage.get_many(&keys)?) {
                found[i] = stored.map(|bytes| result_of(key, bytes)).transpose()?;
            }
        }
        Ok(found)
    }

    /// Runs a round request; see the module documentation. A repeated request gets the same reply.
    pub fn round(&mut self, request: RoundRequest) -> Result<RoundReply, ParticipantError> {
        if let Some(pending) = &self.pending {
            return if pending.request.round == request.round {
                Ok(pending.reply.clone())
            } else {
                Err(ParticipantError::InDoubt { round: pending.request.round })
            };
        }
        if request.round <= self.head.round {
            return match &self.last_reply {
                Some(reply) if reply.round == request.round => Ok(reply.clone()),
                _ => Err(ParticipantError::Stale { round: request.round, last: self.head.round }),
            };
        }
        // What a peer sends never reaches an assertion: a round too large to seal, or one that
        // prepares a transaction twice, is refused before anything runs.
        let count = request.singles.len() + request.prepares.len();
        if count > ROUND_TRANSACTIONS_MAX {
            return Err(ParticipantError::RoundTooLarge { count, limit: ROUND_TRANSACTIONS_MAX });
        }
        let mut prepared = std::collections::HashSet::new();
        if let Some(twice) = request.prepares.iter().find(|t| !prepared.insert(t.id())) {
            return Err(ParticipantError::PreparedTwice { id: twice.id() });
        }
        let shards = self.genesis.shards;
        let id = self.shard.id();
        for single in &request.singles {
            let coordinated = single.transaction.operation.kind().coordinated();
            if coordinated || participants(&single.transaction, shards) != [id] {
                return Err(ParticipantError::Misrouted { id: single.id() });
            }
        }
        for cross in &request.prepares {
            let coordinated = cross.transaction.operation.kind().coordinated();
            if !coordinated || !participants(&cross.transaction, shards).contains(&id) {
                return Err(ParticipantError::Misrouted { id: cross.id() });
            }
        }
        // A failed lookup happens before anything is executed.
        let mut reply = self.run(&request)?;
        if request.prepares.is_empty() {
            let block = self.shard.seal(request.round);
            reply.sealed = Some(self.persist(request.round, block, Vec::new())?);
            self.last_reply = Some(reply.clone());
        } else {
            let record = (layout::META_PENDING.to_vec(), Some(request.encode().expect("a bounded round")));
            if let Err(error) = self.storage.write(&[record]) {
                self.reload();
                return Err(error.into());
            }
            self.pending = Some(Pending { request, reply: reply.clone() });
        }
        Ok(reply)
    }

    /// Finishes the prepared round with the coordinator's decisions and seals its block. A
    /// prepared transaction the decisions do not name is aborted: the coordinator logs every
    /// cross-shard transaction of a round it decided, so one it did not name was never
    /// decided, and it never will commit it (presumed abort).
    pub fn decide(&mut self, round: u64, decisions: &[(TxId, TxResult)]) -> Result<ShardHead, ParticipantError> {
        let Some(pending) = &self.pending else {
            return if round <= self.head.round {
                Ok(self.shard_head()) // a repeated decision: the round is sealed
            } else {
                Err(ParticipantError::NotPrepared { round })
            };
        };
        if pending.request.round != round {
            return if round < pending.request.round {
                Err(ParticipantError::Stale { round, last: self.head.round })
            } else {
                Err(ParticipantError::NotPrepared { round })
            };
        }
        let decided: HashMap<TxId, TxResult> = decisions.iter().copied().collect();
        let finals: Vec<(TxId, TxResult)> = pending
            .request
            .prepares
            .iter()
            .map(|t| {
                (t.id(), decided.get(&t.id()).copied().unwrap_or(TxResult::Rejected(Reason::ParticipantUnavailable)))
            })
            .collect();
        for ((id, result), vote) in finals.iter().zip(&pending.reply.votes) {
            if result.is_committed() && vote.is_err() {
                return Err(ParticipantError::CommitAgainstVote { id: *id });
            }
        }
        let Pending { mut reply, .. } = self.pending.take().expect("checked above");
        let Reply::Acknowledged { .. } =
            self.shard.handle(Message::Decide { round, shard: self.shard.id(), decisions: finals })
        else {
            unreachable!("a decision is acknowledged")
        };
        let block = self.shard.seal(round);
        let head = self.persist(round, block, vec![(layout::META_PENDING.to_vec(), None)])?;
        reply.sealed = Some(head);
        self.last_reply = Some(reply);
        Ok(head)
    }

    /// Executes the singles and prepares the cross-shard transactions of a request in memory.
    fn run(&mut self, request: &RoundRequest) -> Result<RoundReply, StorageError> {
        let ids: Vec<(TxId, Hash)> = request.singles.iter().map(|t| (t.id(), *t.digest())).collect();
        let earlier = self.repeats(&ids)?;
        self.shard.begin(request.now.max(self.shard.last_time()));
        let mut seen: HashMap<TxId, (TxResult, Hash)> = HashMap::new();
        let results = request
            .singles
            .iter()
            .zip(earlier)
            .map(|(transaction, earlier)| {
                let digest = transaction.digest();
                let repeat = seen.get(&transaction.id()).map(|(first, d)| TxResult::for_repeat(*first, d, digest));
                if let Some(result) = earlier.or(repeat) {
                    return result; // applies once: a repeat gets the first result
                }
                let result = self.shard.execute(transaction);
                seen.insert(transaction.id(), (result, *digest));
                result
            })
            .collect();
        let votes = if request.prepares.is_empty() {
            Vec::new()
        } else {
            let message = Message::Prepare {
                round: request.round,
                shard: self.shard.id(),
                transactions: request.prepares.clone(),
            };
            match self.shard.handle(message) {
                Reply::Votes { votes, .. } => votes,
                Reply::Acknowledged { .. } => unreachable!("a prepare is answered with votes"),
            }
        };
        Ok(RoundReply { round: request.round, results, votes, sealed: None })
    }

    /// Writes a sealed block (if any) with the new head and `extra`, in one write.
    fn persist(
        &mut self,
        round: u64,
        block: Option<SealedBlock>,
        extra: Vec<Write>,
    ) -> Result<ShardHead, ParticipantError> {
        let head = Head { height: self.shard.height(), hash: self.shard.head(), time: self.shard.last_time(), round };
        let mut writes = extra;
        if let Some(block) = block {
            // Cross-shard transactions indexed elsewhere: remembered here too, with where this
            // block holds them, so a repeat is recognised and the transaction can be proved even
            // when its first participant never saw it.
            let records = participation_records(&block.header, &block.body, self.genesis.shards);
            writes.extend(records.map(|(key, value)| (key, Some(value))));
            block.into_writes(&mut writes);
        }
        writes.push((layout::META_HEAD.to_vec(), Some(head.encode().expect("fixed size"))));
        if let Err(error) = self.storage.write(&writes) {
            self.reload();
            return Err(error.into());
        }
        self.head = head;
        Ok(self.shard_head())
    }

    fn shard_head(&self) -> ShardHead {
        ShardHead { shard: self.shard.id(), height: self.head.height, hash: self.head.hash }
    }

    /// Goes back to what is durable, after a failed write or lookup.
    fn reload(&mut self) {
        match Self::open(self.storage.clone(), &self.genesis, self.shard.id()) {
            Ok(reloaded) => *self = reloaded,
            Err(error) => panic!("a write failed and the durable state cannot be reloaded: {error}"),
        }
    }
}
