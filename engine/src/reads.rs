//! Reads of stored history, shared by the embedded `Ledger` and a cluster's
//! shard participants: access logs, custody trails, the transaction index,
//! blocks and inclusion proofs. Each takes the storage it reads.

use crate::block::{merkle_path, BlockBody, BlockHeader, Checkpoint, Proof};
use crate::codec::{Codec, DecodeError};
use crate::history::{AccessEntry, CustodyEvent, TxLocation};
use crate::layout;
use crate::ledger::QueryError;
use crate::limits::HISTORY_ENTRIES_MAX;
use crate::model::{ActorKey, Hash, SignedTransaction, TxId, TxResult, UnitId};
use crate::storage::Storage;

pub(crate) fn corrupt(key: &[u8]) -> impl FnOnce(DecodeError) -> QueryError + '_ {
    move |source| QueryError::Corrupt { place: layout::describe(key), source }
}

/// Decodes every entry under `prefix`, oldest first, up to `HISTORY_ENTRIES_MAX`.
fn history<T: Codec>(storage: &dyn Storage, prefix: &[u8]) -> Result<Vec<T>, QueryError> {
    let mut entries = Vec::new();
    let mut failure = None;
    storage.scan(prefix, &mut |key, value| match T::decode(value) {
        Ok(entry) => {
            entries.push(entry);
            entries.len() < HISTORY_ENTRIES_MAX
        }
        Err(source) => {
            failure = Some(QueryError::Corrupt { place: layout::describe(key), source });
            false
        }
    })?;
    failure.map_or(Ok(entries), Err)
}

/// Who accessed the patient's records, when, why, and whether it was permitted; oldest first.
pub fn access_report(storage: &dyn Storage, patient: &ActorKey) -> Result<Vec<AccessEntry>, QueryError> {
    history(storage, &layout::access_prefix(patient))
}

/// Every custody event of a unit, accepted or refused; oldest first.
pub fn custody_trace(storage: &dyn Storage, unit: &UnitId) -> Result<Vec<CustodyEvent>, QueryError> {
    history(storage, &layout::custody_prefix(unit))
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
