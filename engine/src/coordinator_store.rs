//! A cluster coordinator's own storage: the decision log and the checkpoints.
//!
//! Each round's decisions are written (and fsynced) before any participant
//! hears them, so after a crash the log alone settles every in-doubt
//! transaction: a logged round is re-sent, and a round with no log record was
//! never decided, so its prepared transactions are aborted (presumed abort).
//! The checkpoint of each finished round folds every shard's head, as the
//! embedded ledger's does, so proofs end at the same kind of checkpoint.

use std::sync::Arc;

use crate::block::Checkpoint;
use crate::codec::Codec;
use crate::layout;
use crate::ledger::{OpenError, QueryError};
use crate::model::{TxId, TxResult};
use crate::participant::belongs_to;
use crate::reads::{checkpoint_at, corrupt};
use crate::round::{decode_decisions, decode_round_meta, encode_decisions, encode_round_meta, Genesis};
use crate::storage::{Storage, StorageError};

pub struct CoordinatorStore {
    storage: Arc<dyn Storage>,
    genesis: Genesis,
    checkpoint: Option<Checkpoint>,
}

impl CoordinatorStore {
    /// Opens (or creates) the store of the coordinator of a cluster created with `genesis`.
    pub fn open(storage: Arc<dyn Storage>, genesis: &Genesis) -> Result<Self, OpenError> {
        let damaged = |key: &[u8], detail: String| OpenError::Corrupt { place: layout::describe(key), detail };
        if !belongs_to(storage.as_ref(), genesis)? {
            storage.write(&genesis.config_writes())?;
        }
        let checkpoint = match storage.get(layout::META_ROUND)? {
            None => None,
            Some(bytes) => {
                let (round, hash) =
                    decode_round_meta(&bytes).map_err(|e| damaged(layout::META_ROUND, e.to_string()))?;
                let checkpoint = checkpoint_at(storage.as_ref(), round)
                    .map_err(|e| damaged(&layout::checkpoint(round), e.to_string()))?
                    .ok_or_else(|| damaged(&layout::checkpoint(round), "missing".into()))?;
                if checkpoint.hash() != hash {
                    return Err(damaged(&layout::checkpoint(round), "does not match the round record".into()));
                }
                Some(checkpoint)
            }
        };
        Ok(Self { storage, genesis: genesis.clone(), checkpoint })
    }

    pub fn genesis(&self) -> &Genesis {
        &self.genesis
    }

    /// The last finished round's checkpoint.
    pub fn checkpoint(&self) -> Option<&Checkpoint> {
        self.checkpoint.as_ref()
    }

    pub fn checkpoint_at(&self, round: u64) -> Result<Option<Checkpoint>, QueryError> {
        checkpoint_at(self.storage.as_ref(), round)
    }

    /// The highest round number reserved so far (0 for a new cluster).
    pub fn reserved(&self) -> Result<u64, QueryError> {
        let key = layout::META_RESERVED;
        match self.storage.get(key)? {
            None => Ok(0),
            Some(bytes) => Ok(u64::from_le_bytes(bytes.as_slice().try_into().map_err(|_| {
                QueryError::Inconsistent { place: layout::describe(key), detail: "not a round number" }
            })?)),
        }
    }

    /// Reserves round numbers up to `round` durably, so a restarted coordinator starts above them.
    pub fn reserve(&self, round: u64) -> Result<(), StorageError> {
        self.storage.write(&[(layout::META_RESERVED.to_vec(), Some(round.to_le_bytes().to_vec()))])
    }

    /// Logs a round's decisions durably; only then may participants hear them.
    pub fn log_decisions(&self, round: u64, decisions: &[(TxId, TxResult)]) -> Result<(), StorageError> {
        self.storage.write(&[(layout::decision(round), Some(encode_decisions(decisions)))])
    }

    /// A round's logged decisions, if it was decided.
    pub fn decisions(&self, round: u64) -> Result<Option<Vec<(TxId, TxResult)>>, QueryError> {
        let key = layout::decision(round);
        self.storage.get(&key)?.map(|bytes| decode_decisions(&bytes).map_err(corrupt(&key))).transpose()
    }

    /// The checkpoint that holds block `height` of `shard`, sealed in `round`: that round's, or
    /// the late one recorded when the coordinator learned of the block afterwards.
    pub fn checkpoint_holding(&self, shard: u32, height: u64, round: u64) -> Result<Option<Checkpoint>, QueryError> {
        let holds = |c: &Checkpoint| c.heads.iter().any(|h| h.shard == shard && h.height == height);
        if let Some(checkpoint) = self.checkpoint_at(round)?.filter(holds) {
            return Ok(Some(checkpoint));
        }
        let key = layout::late_checkpoint(shard, height);
        let Some(bytes) = self.storage.get(&key)? else { return Ok(None) };
        let late =
            u64::from_le_bytes(bytes.as_slice().try_into().map_err(|_| QueryError::Inconsistent {
                place: layout::describe(&key),
                detail: "not a round number",
            })?);
        Ok(self.checkpoint_at(late)?.filter(holds))
    }

    /// Records a checkpoint for a block of `shard` that the checkpoint of its own round does not
    /// hold (the shard did not answer in time), and notes it for proofs.
    pub fn record_late_checkpoint(
        &mut self,
        checkpoint: Checkpoint,
        shard: u32,
        height: u64,
    ) -> Result<(), StorageError> {
        let note = (layout::late_checkpoint(shard, height), Some(checkpoint.round.to_le_bytes().to_vec()));
        self.record_with(checkpoint, vec![note])
    }

    /// Records a finished round's checkpoint (the next round's `previous`).
    pub fn record_checkpoint(&mut self, checkpoint: Checkpoint) -> Result<(), StorageError> {
        self.record_with(checkpoint, Vec::new())
    }

    fn record_with(
        &mut self,
        checkpoint: Checkpoint,
        mut writes: Vec<crate::round::Write>,
    ) -> Result<(), StorageError> {
        writes.extend([
            (layout::checkpoint(checkpoint.round), Some(checkpoint.encode().expect("bounded checkpoint"))),
            (layout::META_ROUND.to_vec(), Some(encode_round_meta(checkpoint.round, &checkpoint.hash()))),
        ]);
        self.storage.write(&writes)?;
        self.checkpoint = Some(checkpoint);
        Ok(())
    }
}
