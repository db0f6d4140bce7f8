//! The storage key layout: one keyspace, one leading byte per family.
//!
//! | prefix | key after the prefix                          | value                         | stores |
//! |--------|-----------------------------------------------|-------------------------------|--------|
//! | `M`    | a name: see the metadata keys below            | see below                     | all    |
//! | `H`    | shard u32 BE, height u64 BE                    | block header                  | ledger, shard |
//! | `B`    | shard u32 BE, height u64 BE                    | block body (txs and results)  | ledger, shard |
//! | `C`    | round u64 BE                                   | checkpoint                    | ledger, coordinator |
//! | `D`    | round u64 BE                                   | decisions of the round's cross-shard txs, in order | ledger, coordinator |
//! | `S`    | shard u32 BE, state key (tags below)           | state entry                   | ledger, shard |
//! | `T`    | tx id u128 BE                                  | where the tx is, its result   | ledger, shard |
//! | `A`    | patient (32), height u64 BE, index u32 BE      | access log entry              | ledger, shard |
//! | `U`    | gtin u64 BE, serial length u8, serial, height u64 BE, index u32 BE | custody event | ledger, shard |
//! | `P`    | tx id u128 BE                                  | where a cross-shard tx indexed by its first participant is in this shard's blocks, and its result (`TxLocation`) | shard |
//! | `L`    | shard u32 BE, height u64 BE                    | round (u64 LE) of the checkpoint that holds a block its own round's does not | coordinator |
//!
//! "ledger" is an embedded ledger's store; "shard" a cluster shard server's store of one
//! shard; "coordinator" the cluster coordinator's store.
//!
//! Metadata keys (`M` and the name in ASCII):
//!
//! | key         | value                                                  | stores |
//! |-------------|--------------------------------------------------------|--------|
//! | `Mconfig`   | the genesis (shard count, operators), `round::Genesis`  | all    |
//! | `Mformat`   | `STORE_FORMAT`, u32 LE                                  | all    |
//! | `Mround`    | the last round written (u64 LE) and its checkpoint hash (32) | ledger, coordinator |
//! | `Mshard`    | the shard this store holds, u32 LE                      | shard  |
//! | `Mhead`     | the shard's last block and round, `participant::Head`   | shard  |
//! | `Mpending`  | the prepared round awaiting its decision, `participant::RoundRequest` | shard |
//! | `Mreserved` | the highest round number reserved, u64 LE: round numbers are never reused | coordinator |
//!
//! State keys (after `S` and the shard) begin with a tag byte (`state::StateKey::to_bytes`):
//! 1 actor (key 32); 2 record, 3 consent, 4 claim (patient 32, id u128 BE); 5 duplicate-claim
//! key (hash 32); 6 account (owner 32); 7 unit (gtin u64 BE, serial); 8 recall (gtin u64 BE,
//! lot); 9 consent index (patient 32, grantee 32); 10 study (id u128 BE); 11 enrolment
//! (patient 32, study u128 BE); 12 credential (id u128 BE).
//!
//! Every key and value but the cluster's bookkeeping (`Mshard`, `Mhead`, `Mpending`,
//! `Mreserved`, `P`, `L`) is a function of the block chain, which is what lets `verify`
//! rebuild the whole store from the blocks and compare.

use crate::model::{ActorKey, TxId, UnitId};
use crate::state::StateKey;

pub const META: u8 = b'M';
pub const HEADER: u8 = b'H';
pub const BODY: u8 = b'B';
pub const CHECKPOINT: u8 = b'C';
pub const DECISION: u8 = b'D';
pub const STATE: u8 = b'S';
pub const TRANSACTION: u8 = b'T';
pub const ACCESS: u8 = b'A';
pub const CUSTODY: u8 = b'U';
/// A cluster participant's record of a cross-shard transaction it holds but does not index.
pub const PARTICIPATION: u8 = b'P';
/// A cluster coordinator's note of the checkpoint that holds a block no checkpoint of its own
/// round holds (its shard did not answer in that round).
pub const LATE_CHECKPOINT: u8 = b'L';

pub const META_CONFIG: &[u8] = b"Mconfig";
pub const META_ROUND: &[u8] = b"Mround";
/// A cluster participant's shard id, and its last block and round (`participant::Head`).
pub const META_SHARD: &[u8] = b"Mshard";
pub const META_HEAD: &[u8] = b"Mhead";
/// A cluster participant's prepared round, until the coordinator's decision seals it.
pub const META_PENDING: &[u8] = b"Mpending";
/// A cluster coordinator's highest reserved round number: round numbers are never reused.
pub const META_RESERVED: &[u8] = b"Mreserved";
/// The store's format (`STORE_FORMAT`, u32 LE), written with its configuration.
pub const META_FORMAT: &[u8] = b"Mformat";

/// The format this build writes and reads. 1: stores written before the format was recorded
/// (consent indexes rebuilt on load, never stored); 2: each patient-grantee consent index is a
/// state entry; 3: that entry holds a copy of every consent it lists; 4: a cluster
/// participant's participation record holds the transaction's place in its block, not only its
/// result; 5: coordinated operations (actor registrations, recalls, payments) run in a round's
/// second phase whatever the shard count, so their decisions are logged even on one shard;
/// 6: an actor's state entry holds its GS1 company prefixes; 7: transactions are indexed by an
/// id derived from their signer and nonce, with their body's digest, and refused transactions
/// (unknown or wrong-role signers) are not in the blocks, and the checkpoint chain starts from
/// the genesis hash; an actor's entry holds its revocation and its current key, the genesis its
/// operator quorum; 8: no health data in clear: actors have no names, claims hold a keyed
/// commitment instead of their service date and codes, a dispensed unit a commitment to its
/// recipient, and reasons are codes; a record holds when it was erased, and an access log entry
/// whether it is an erasure or an auditor's read (`audit-read`); 9: studies, enrolments and
/// providers' credentials are state entries, and an issuer is a role; a record names the
/// transaction that wrote its version, a consent those that granted and revoked it.
pub const STORE_FORMAT: u32 = 9;

/// The write that records `STORE_FORMAT`, made with a new store's configuration.
pub fn format_write() -> (Vec<u8>, Option<Vec<u8>>) {
    (META_FORMAT.to_vec(), Some(STORE_FORMAT.to_le_bytes().to_vec()))
}

fn key(prefix: u8, parts: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + parts.iter().map(|part| part.len()).sum::<usize>());
    out.push(prefix);
    for part in parts {
        out.extend_from_slice(part);
    }
    out
}

pub fn header(shard: u32, height: u64) -> Vec<u8> {
    key(HEADER, &[&shard.to_be_bytes(), &height.to_be_bytes()])
}
pub fn body(shard: u32, height: u64) -> Vec<u8> {
    key(BODY, &[&shard.to_be_bytes(), &height.to_be_bytes()])
}
pub fn checkpoint(round: u64) -> Vec<u8> {
    key(CHECKPOINT, &[&round.to_be_bytes()])
}
pub fn decision(round: u64) -> Vec<u8> {
    key(DECISION, &[&round.to_be_bytes()])
}
pub fn state_prefix(shard: u32) -> Vec<u8> {
    key(STATE, &[&shard.to_be_bytes()])
}
/// A state entry's key: the prefix, then `key.to_bytes()`, built in one allocation.
pub fn state(shard: u32, key: &StateKey) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + 4 + StateKey::USUAL_MAX_LEN);
    out.push(STATE);
    out.extend_from_slice(&shard.to_be_bytes());
    key.append_to(&mut out);
    out
}
pub fn transaction(id: TxId) -> Vec<u8> {
    key(TRANSACTION, &[&id.to_be_bytes()])
}
pub fn late_checkpoint(shard: u32, height: u64) -> Vec<u8> {
    key(LATE_CHECKPOINT, &[&shard.to_be_bytes(), &height.to_be_bytes()])
}
pub fn participation(id: TxId) -> Vec<u8> {
    key(PARTICIPATION, &[&id.to_be_bytes()])
}
pub fn access_prefix(patient: &ActorKey) -> Vec<u8> {
    key(ACCESS, &[&patient.0])
}
pub fn access(patient: &ActorKey, height: u64, index: u32) -> Vec<u8> {
    key(ACCESS, &[&patient.0, &height.to_be_bytes(), &index.to_be_bytes()])
}
/// A unit's custody keys: the unit, then `tail` (empty for the prefix of them all).
fn custody_key(unit: &UnitId, tail: &[u8]) -> Vec<u8> {
    key(CUSTODY, &[&unit.gtin.to_be_bytes(), &[unit.serial.len() as u8], unit.serial.as_bytes(), tail])
}
pub fn custody_prefix(unit: &UnitId) -> Vec<u8> {
    custody_key(unit, &[])
}
pub fn custody(unit: &UnitId, height: u64, index: u32) -> Vec<u8> {
    let mut tail = [0; 12];
    tail[..8].copy_from_slice(&height.to_be_bytes());
    tail[8..].copy_from_slice(&index.to_be_bytes());
    custody_key(unit, &tail)
}

/// A short human description of a stored key, for verification reports.
pub fn describe(key: &[u8]) -> String {
    let shard_height = |rest: &[u8]| -> Option<(u32, u64)> {
        Some((
            u32::from_be_bytes(rest.get(..4)?.try_into().ok()?),
            u64::from_be_bytes(rest.get(4..12)?.try_into().ok()?),
        ))
    };
    let rest = key.get(1..).unwrap_or_default();
    match key.first() {
        Some(&HEADER) => shard_height(rest)
            .map_or("malformed header key".into(), |(s, h)| format!("block header shard {s} height {h}")),
        Some(&BODY) => {
            shard_height(rest).map_or("malformed body key".into(), |(s, h)| format!("block body shard {s} height {h}"))
        }
        Some(&CHECKPOINT) => format!("checkpoint {}", crate::model::hex(rest)),
        Some(&DECISION) => format!("coordinator decision {}", crate::model::hex(rest)),
        Some(&STATE) => match rest.get(..4) {
            Some(shard) => format!(
                "state entry shard {} key {}",
                u32::from_be_bytes(shard.try_into().expect("4")),
                crate::model::hex(&rest[4..])
            ),
            None => "malformed state key".into(),
        },
        Some(&TRANSACTION) => format!("transaction index {}", crate::model::hex(rest)),
        Some(&PARTICIPATION) => format!("participation {}", crate::model::hex(rest)),
        Some(&LATE_CHECKPOINT) => format!("late checkpoint of block {}", crate::model::hex(rest)),
        Some(&ACCESS) => format!("access log entry {}", crate::model::hex(rest)),
        Some(&CUSTODY) => format!("custody event {}", crate::model::hex(rest)),
        Some(&META) => format!("metadata {}", String::from_utf8_lossy(rest)),
        _ => format!("unknown key {}", crate::model::hex(key)),
    }
}
