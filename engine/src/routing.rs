//! Partitioning: which shards a transaction touches.
//!
//! Records, consents, accesses, claims and study enrolments live on their
//! patient's shard; accounts on their owner's; units on the hash of GTIN and
//! serial; credentials on the hash of their id. Actor registrations, lot
//! recalls and studies apply on every shard, so that role checks, recall
//! checks and enrolments stay shard-local.

use crate::model::{transaction_id, ActorKey, Operation, Transaction, TxId, UnitId};

/// Shard of a partition key's bytes.
pub fn shard_of_bytes(bytes: &[u8], shard_count: u32) -> u32 {
    let digest = blake3::hash(bytes);
    let head = u64::from_le_bytes(digest.as_bytes()[..8].try_into().expect("8 bytes"));
    (head % u64::from(shard_count)) as u32
}

/// Shard that holds a patient's records, consents and claims, or an actor's account.
pub fn shard_of_actor(actor: &ActorKey, shard_count: u32) -> u32 {
    shard_of_bytes(&actor.0, shard_count)
}

/// Shard that holds a unit.
pub fn shard_of_unit(unit: &UnitId, shard_count: u32) -> u32 {
    let mut bytes = unit.gtin.to_le_bytes().to_vec();
    bytes.extend_from_slice(unit.serial.as_bytes());
    shard_of_bytes(&bytes, shard_count)
}

/// Shard that holds a credential.
pub fn shard_of_credential(credential: TxId, shard_count: u32) -> u32 {
    shard_of_bytes(&credential.to_le_bytes(), shard_count)
}

/// The shards a transaction touches, ascending and without repeats.
pub fn participants(transaction: &Transaction, shard_count: u32) -> Vec<u32> {
    let actor = |key: &ActorKey| shard_of_actor(key, shard_count);
    let mut shards = match &transaction.operation {
        Operation::RegisterActor { .. }
        | Operation::RevokeActor { .. }
        | Operation::ChangeRole { .. }
        | Operation::AddOperator { .. }
        | Operation::RotateKey { .. }
        | Operation::RecallLot { .. }
        | Operation::RegisterStudy { .. }
        | Operation::CloseStudy { .. } => return (0..shard_count).collect(),
        Operation::RegisterRecord { patient, .. }
        | Operation::AmendRecord { patient, .. }
        | Operation::GrantConsent { patient, .. }
        | Operation::RevokeConsent { patient, .. }
        | Operation::AccessRecord { patient, .. }
        | Operation::EmergencyAccess { patient, .. }
        | Operation::EraseRecord { patient, .. }
        | Operation::SubmitClaim { patient, .. }
        | Operation::AdjudicateClaim { patient, .. }
        | Operation::EnrollSubject { patient, .. }
        | Operation::WithdrawSubject { patient, .. } => vec![actor(patient)],
        Operation::IssueCredential { .. } => {
            vec![shard_of_credential(transaction_id(&transaction.signer, transaction.nonce), shard_count)]
        }
        Operation::RevokeCredential { credential, .. } => vec![shard_of_credential(*credential, shard_count)],
        Operation::FundAccount { .. } | Operation::AuditRead { subject: None, .. } => vec![actor(&transaction.signer)],
        Operation::AuditRead { subject: Some(subject), .. } => vec![actor(subject)],
        Operation::PayClaim { patient, provider, .. } => {
            vec![actor(patient), actor(&transaction.signer), actor(provider)]
        }
        Operation::CommissionUnit { unit, .. }
        | Operation::ShipUnit { unit, .. }
        | Operation::ReceiveUnit { unit }
        | Operation::DispenseUnit { unit, .. }
        | Operation::DecommissionUnit { unit, .. } => vec![shard_of_unit(unit, shard_count)],
    };
    shards.sort_unstable();
    shards.dedup();
    shards
}
