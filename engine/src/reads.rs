//! Reads of stored history, shared by the embedded `Ledger` and a cluster's
//! shard participants: access logs, custody trails, the transaction index,
//! blocks and inclusion proofs. Each takes the storage it reads.

use crate::block::{merkle_path, BlockBody, BlockHeader, Checkpoint, Proof};
use crate::codec::{Codec, DecodeError};
use crate::history::{AccessEntry, Cursor, CustodyEvent, Page, TxLocation};
use crate::layout;
use crate::ledger::QueryError;
use crate::limits::HISTORY_ENTRIES_MAX;
use crate::model::{ActorKey, Hash, SignedTransaction, TxId, TxResult, UnitId};
use crate::storage::Storage;

pub(crate) fn corrupt(key: &[u8]) -> impl FnOnce(DecodeError) -> QueryError + '_ {
    move |source| QueryError::Corrupt { place: layout::describe(key), source }
}

/// One page of the history under `prefix`: the `limit` newest entries before `before` (or the
/// newest of all), newest first, with the history's total. Memory is bounded by the page; the
/// history is scanned once (keys sort oldest first) and only the page's values are decoded.
fn history_page<T: Codec>(
    storage: &dyn Storage,
    prefix: &[u8],
    before: Option<Cursor>,
    limit: usize,
) -> Result<Page<T>, QueryError> {
    let limit = limit.clamp(1, HISTORY_ENTRIES_MAX);
    let before = before.map(Cursor::to_bytes);
    let (mut total, mut older) = (0u64, 0u64);
    let mut window: std::collections::VecDeque<(Vec<u8>, Vec<u8>)> = std::collections::VecDeque::new();
    storage.scan(prefix, &mut |key, value| {
        total += 1;
        let tail = &key[key.len().saturating_sub(12)..];
        if before.is_none_or(|before| tail < before.as_slice()) {
            older += 1;
            // A full window gives its oldest entry's buffers to the newest.
            let (mut k, mut v) =
                if window.len() == limit { window.pop_front().expect("a full window") } else { Default::default() };
            k.clear();
            k.extend_from_slice(key);
            v.clear();
            v.extend_from_slice(value);
            window.push_back((k, v));
        }
        true
    })?;
    let next = (older > window.len() as u64).then(|| window.front().and_then(|(key, _)| Cursor::of_key(key))).flatten();
    let entries = window
        .iter()
        .rev()
        .map(|(key, value)| {
            T::decode(value).map_err(|source| QueryError::Corrupt { place: layout::describe(key), source })
        })
        .collect::<Result<_, _>>()?;
    Ok(Page { entries, total, next })
}

/// Who accessed the patient's records, when, why, and whether it was permitted: a page, newest
/// first (`limit` entries before `before`, or the newest), with the total.
pub fn access_report(
    storage: &dyn Storage,
    patient: &ActorKey,
    before: Option<Cursor>,
    limit: usize,
) -> Result<Page<AccessEntry>, QueryError> {
    history_page(storage, &layout::access_prefix(patient), before, limit)
}

/// Custody events of a unit, accepted or refused: a page, newest first, with the total.
pub fn custody_trace(
    storage: &dyn Storage,
    unit: &UnitId,
    before: Option<Cursor>,
    limit: usize,
) -> Result<Page<CustodyEvent>, QueryError> {
    history_page(storage, &layout::custody_prefix(unit), before, limit)
}

/// A patient's entries of one kind (records or consents), by id: at most `limit` after `after`
/// (or from the first), in id order, with the id to continue after if there are more.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Listing<T> {
    /// `(id, entry)`, ids ascending.
    pub entries: Vec<(u128, T)>,
    /// The last id of this listing, if more follow.
    pub next: Option<u128>,
}

/// Which of a patient's entries `patient_entries` lists.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PatientEntries {
    Records,
    Consents,
}

/// A listing of a patient's records or consents, read from the patient's shard's stored state
/// (durable entries only). Memory is bounded by `limit` (at most `HISTORY_ENTRIES_MAX`).
pub fn patient_entries<T: Codec>(
    storage: &dyn Storage,
    shard: u32,
    patient: &ActorKey,
    kind: PatientEntries,
    after: Option<u128>,
    limit: usize,
) -> Result<Listing<T>, QueryError> {
    let limit = limit.clamp(1, HISTORY_ENTRIES_MAX);
    let first = match kind {
        PatientEntries::Records => crate::state::StateKey::Record(*patient, 0),
        PatientEntries::Consents => crate::state::StateKey::Consent(*patient, 0),
    };
    let mut prefix = layout::state(shard, &first);
    prefix.truncate(prefix.len() - 16);
    let (mut found, mut more) = (Vec::new(), false);
    storage.scan(&prefix, &mut |key, value| {
        let Some(id) = key.get(prefix.len()..).and_then(|id| <[u8; 16]>::try_from(id).ok()) else {
            return true;
        };
        let id = u128::from_be_bytes(id);
        if after.is_some_and(|after| id <= after) {
            return true;
        }
        if found.len() == limit {
            more = true;
            return false;
        }
        found.push((id, key.to_vec(), value.to_vec()));
        true
    })?;
    let next = more.then(|| found.last().map(|(id, ..)| *id)).flatten();
    let entries = found
        .into_iter()
        .map(|(id, key, value)| T::decode(&value).map(|entry| (id, entry)).map_err(corrupt(&key)))
        .collect::<Result<_, _>>()?;
    Ok(Listing { entries, next })
}

/// Where a transaction is recorded and its result, if it reached the ledger.
pub fn locate(storage: &dyn Storage, id: TxId) -> Result<Option<TxLocation>, QueryError> {
    let key = layout::transaction(id);
    storage.get(&key)?.map(|bytes| TxLocation::decode(&bytes).map_err(corrupt(&key))).transpose()
}

/// Where a transaction is in this store's blocks: its index entry, or on a cluster
/// participant that does not index it, its participation record (a cross-shard transaction
/// whose first participant may never have seen it).
pub fn locate_held(storage: &dyn Storage, id: TxId) -> Result<Option<TxLocation>, QueryError> {
    if let Some(location) = locate(storage, id)? {
        return Ok(Some(location));
    }
    let key = layout::participation(id);
    storage.get(&key)?.map(|bytes| TxLocation::decode(&bytes).map_err(corrupt(&key))).transpose()
}

/// A stored checkpoint.
pub fn checkpoint_at(storage: &dyn Storage, round: u64) -> Result<Option<Checkpoint>, QueryError> {
    let key = layout::checkpoint(round);
    storage.get(&key)?.map(|bytes| Checkpoint::decode(&bytes).map_err(corrupt(&key))).transpose()
}

/// A stored block; missing is an inconsistency, since only indexed blocks are asked for.
pub fn block(storage: &dyn Storage, shard: u32, height: u64) -> Result<(BlockHeader, BlockBody), QueryError> {
    let read = |key: Vec<u8>| -> Result<Vec<u8>, QueryError> {
        storage
            .get(&key)?
            .ok_or_else(|| QueryError::Inconsistent { place: layout::describe(&key), detail: "indexed but missing" })
    };
    let header_key = layout::header(shard, height);
    let body_key = layout::body(shard, height);
    let header = BlockHeader::decode(&read(header_key.clone())?).map_err(corrupt(&header_key))?;
    let body = BlockBody::decode(&read(body_key.clone())?).map_err(corrupt(&body_key))?;
    Ok((header, body))
}

/// A transaction as recorded, with its result.
pub fn transaction(storage: &dyn Storage, id: TxId) -> Result<Option<(SignedTransaction, TxResult)>, QueryError> {
    let Some(location) = locate_held(storage, id)? else { return Ok(None) };
    let (_, body) = block(storage, location.shard, location.height)?;
    Ok(body.entries.get(location.index as usize).cloned())
}

/// The block half of an inclusion proof: the transaction and its result up to their block's
/// header. Its checkpoint half is empty until `complete_proof` adds it.
pub fn prove_in_block(storage: &dyn Storage, id: TxId) -> Result<Option<Proof>, QueryError> {
    let Some(location) = locate_held(storage, id)? else { return Ok(None) };
    let (header, body) = block(storage, location.shard, location.height)?;
    let index = location.index as usize;
    let (transaction, result) = body.entries.get(index).cloned().ok_or_else(|| QueryError::Inconsistent {
        place: layout::describe(&layout::body(header.shard, header.height)),
        detail: "the index points past the block",
    })?;
    Ok(Some(Proof {
        transaction,
        result,
        transaction_path: merkle_path(&body.transaction_leaves(), index),
        result_path: merkle_path(&body.result_leaves(), index),
        header,
        head_path: Vec::new(),
        checkpoint_round: 0,
        checkpoint_previous: [0; 32],
    }))
}

/// Adds the path from the proof's block header to `checkpoint`, which must hold that block.
pub fn complete_proof(proof: &mut Proof, checkpoint: &Checkpoint) -> Result<(), QueryError> {
    let header = &proof.header;
    let position =
        checkpoint.heads.iter().position(|h| h.shard == header.shard && h.height == header.height).ok_or_else(
            || QueryError::Inconsistent {
                place: layout::describe(&layout::checkpoint(checkpoint.round)),
                detail: "does not hold the block",
            },
        )?;
    let heads: Vec<Hash> = checkpoint.heads.iter().map(|h| h.leaf()).collect();
    proof.head_path = merkle_path(&heads, position);
    proof.checkpoint_round = checkpoint.round;
    proof.checkpoint_previous = checkpoint.previous;
    Ok(())
}
