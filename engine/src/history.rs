//! History entries the shards write beside the blocks: the access log (who
//! read which record, when, why, and whether it was permitted) and the custody
//! trail of each unit. They are indexes over the chain, rebuilt and compared by
//! `verify`.

use crate::codec::{Codec, DecodeError, Decoder, EncodeError, Encoder};
use crate::limits::CODE_LENGTH_MAX;
use crate::model::{ActorKey, Hash, Purpose, Timestamp, TxId, TxResult};

/// Where a history entry stands: its block's height and its place among the block's entries.
/// A page's `next` cursor is its oldest entry; the next page holds the entries before it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Cursor {
    /// The block's height.
    pub height: u64,
    /// The entry's place in the block.
    pub index: u32,
}

impl Cursor {
    /// The cursor as the last 12 bytes of a history key hold it (big-endian, so keys sort by it).
    pub fn to_bytes(self) -> [u8; 12] {
        let mut out = [0; 12];
        out[..8].copy_from_slice(&self.height.to_be_bytes());
        out[8..].copy_from_slice(&self.index.to_be_bytes());
        out
    }

    /// The cursor of a history key (its last 12 bytes), if the key is long enough.
    pub fn of_key(key: &[u8]) -> Option<Self> {
        let tail = key.get(key.len().checked_sub(12)?..)?;
        Some(Self {
            height: u64::from_be_bytes(tail[..8].try_into().ok()?),
            index: u32::from_be_bytes(tail[8..].try_into().ok()?),
        })
    }
}

/// One page of a history, newest first, with how many entries the whole history holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Page<T> {
    /// Newest first.
    pub entries: Vec<T>,
    /// Entries in the whole history, this page's included.
    pub total: u64,
    /// Where the next (older) page begins, if there are older entries.
    pub next: Option<Cursor>,
}

/// One access to a patient's record, permitted or denied.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccessEntry {
    /// The access transaction.
    pub transaction: TxId,
    /// The record read.
    pub record: u128,
    /// Who read it.
    pub accessor: ActorKey,
    /// `None` for an emergency (break-glass) access.
    pub purpose: Option<Purpose>,
    /// Commit time.
    pub time: Timestamp,
    /// Permitted (committed) or why it was denied.
    pub result: TxResult,
    /// An emergency access, flagged for review.
    pub break_glass: bool,
    /// Not a read: the record's erasure (`erase-record`), by the patient or an operator.
    pub erasure: bool,
    /// An auditor's read of the actor's data (`audit-read`); its record is 0.
    pub audit: bool,
}

impl AccessEntry {
    /// Whether the access was permitted.
    pub fn permitted(&self) -> bool {
        self.result.is_committed()
    }
}

impl Codec for AccessEntry {
    fn encode_into(&self, e: &mut Encoder) -> Result<(), EncodeError> {
        e.u128(self.transaction);
        e.u128(self.record);
        e.array(&self.accessor.0);
        e.u8(self.purpose.map_or(u8::MAX, Purpose::code));
        e.u64(self.time);
        e.u16(self.result.code());
        e.bool(self.break_glass);
        e.bool(self.erasure);
        e.bool(self.audit);
        Ok(())
    }
    fn decode_from(d: &mut Decoder<'_>) -> Result<Self, DecodeError> {
        Ok(Self {
            transaction: d.u128()?,
            record: d.u128()?,
            accessor: ActorKey(d.array()?),
            purpose: match d.u8()? {
                u8::MAX => None,
                code => Some(Purpose::from_code(code).ok_or(DecodeError::Invalid("purpose"))?),
            },
            time: d.u64()?,
            result: TxResult::from_code(d.u16()?).ok_or(DecodeError::Invalid("result"))?,
            break_glass: d.bool("break_glass")?,
            erasure: d.bool("erasure")?,
            audit: d.bool("audit")?,
        })
    }
}

/// One event in a unit's custody trail, accepted or refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CustodyEvent {
    /// The transaction.
    pub transaction: TxId,
    /// The operation's name (`commission-unit`, `ship-unit`, ...).
    pub event: String,
    /// Who signed it.
    pub actor: ActorKey,
    /// The addressee of a shipment, or the patient of a dispense.
    pub counterparty: Option<ActorKey>,
    /// Commit time.
    pub time: Timestamp,
    /// Accepted (committed) or why it was refused.
    pub result: TxResult,
}

impl Codec for CustodyEvent {
    fn encode_into(&self, e: &mut Encoder) -> Result<(), EncodeError> {
        e.u128(self.transaction);
        e.text("event", &self.event, CODE_LENGTH_MAX)?;
        e.array(&self.actor.0);
        match &self.counterparty {
            Some(key) => {
                e.u8(1);
                e.array(&key.0);
            }
            None => e.u8(0),
        }
        e.u64(self.time);
        e.u16(self.result.code());
        Ok(())
    }
    fn decode_from(d: &mut Decoder<'_>) -> Result<Self, DecodeError> {
        Ok(Self {
            transaction: d.u128()?,
            event: d.text("event", CODE_LENGTH_MAX)?,
            actor: ActorKey(d.array()?),
            counterparty: if d.bool("counterparty")? { Some(ActorKey(d.array()?)) } else { None },
            time: d.u64()?,
            result: TxResult::from_code(d.u16()?).ok_or(DecodeError::Invalid("result"))?,
        })
    }
}

/// Where a transaction is recorded, and its result: the idempotency index.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TxLocation {
    /// The shard whose block holds it.
    pub shard: u32,
    /// That block's height.
    pub height: u64,
    /// Its position in the block.
    pub index: u32,
    /// Its result.
    pub result: TxResult,
    /// Its body's digest (`SignedTransaction::digest`): a resubmission under its id with
    /// another body is a conflict.
    pub digest: Hash,
}

impl TxLocation {
    /// What a resubmission under this id with body `digest` is answered.
    pub fn answer(&self, digest: &Hash) -> TxResult {
        TxResult::for_repeat(self.result, &self.digest, digest)
    }
}

impl Codec for TxLocation {
    fn encode_into(&self, e: &mut Encoder) -> Result<(), EncodeError> {
        e.u32(self.shard);
        e.u64(self.height);
        e.u32(self.index);
        e.u16(self.result.code());
        e.array(&self.digest);
        Ok(())
    }
    fn decode_from(d: &mut Decoder<'_>) -> Result<Self, DecodeError> {
        Ok(Self {
            shard: d.u32()?,
            height: d.u64()?,
            index: d.u32()?,
            result: TxResult::from_code(d.u16()?).ok_or(DecodeError::Invalid("result"))?,
            digest: d.array()?,
        })
    }
}
