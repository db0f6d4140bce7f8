//! Which parts of a shard's state are in memory.
//!
//! By default (`Options::state_cache_entries` unset) a ledger loads its whole
//! state on open and keeps it: nothing is read on the commit path, and memory
//! grows with history. With a limit, actors, accounts and recalls (which grow
//! with the population, not with history) stay resident; records, consents and
//! each patient-grantee consent index, claims, the duplicate-claim index, units,
//! studies, enrolments and credentials grow with history (any provider may
//! register a study, and each is held on every shard): they live in storage, and the execute stage
//! loads what a group of transactions will read (`load`) before it runs them,
//! and drops them again when a shard holds more than its limit (`evict`).
//! The shard state machine never does I/O: everything it reads is resident
//! when it runs, and a transaction's needs are a pure function of the
//! transaction (a revocation's, of the transaction and the consent it names).
//!
//! An entry written by a group that is not yet durable is never evicted
//! (storage does not have it yet), so whatever is not resident is in storage.
//! A patient's consent index for a grantee is stored with a copy of every
//! consent it lists, so whoever reads the index has them all (a resident
//! consent is never older than the stored copy, and is kept), and eviction
//! keeps the consents a kept index lists. What the groups read since the
//! cache grew past half its limit survives the next eviction, unless it alone
//! is over half the limit.

use crate::layout;
use crate::model::{ActorKey, Operation, SignedTransaction};
use crate::routing::{shard_of_actor, shard_of_credential, shard_of_unit};
use crate::shard::Shard;
use crate::state::{Map, Set, StateKey};
use crate::storage::{Storage, StorageError};

/// Tags of the state families that are always resident (see `StateKey::to_bytes`).
pub const RESIDENT_TAGS: [u8; 3] = [1, 6, 8];

/// What one transaction reads beyond the resident families.
enum Need {
    Entry(u32, StateKey),
    /// A consent that may change: the consent, then its grantee's index (a revocation writes the
    /// index again, since the index holds a copy of each of its consents).
    Changed(u32, ActorKey, u128),
}

fn needs(transaction: &SignedTransaction, shards: u32, out: &mut Vec<Need>) {
    let patient_shard = |patient: &ActorKey| shard_of_actor(patient, shards);
    match &transaction.transaction.operation {
        Operation::RegisterRecord { record, patient, .. }
        | Operation::AmendRecord { record, patient, .. }
        | Operation::EraseRecord { record, patient } => {
            out.push(Need::Entry(patient_shard(patient), StateKey::Record(*patient, *record)));
        }
        Operation::AccessRecord { record, patient, .. } | Operation::EmergencyAccess { record, patient, .. } => {
            let shard = patient_shard(patient);
            out.push(Need::Entry(shard, StateKey::Record(*patient, *record)));
            out.push(Need::Entry(shard, StateKey::ConsentIndex(*patient, transaction.transaction.signer)));
        }
        Operation::GrantConsent { consent, patient, grantee, .. } => {
            let shard = patient_shard(patient);
            out.push(Need::Entry(shard, StateKey::Consent(*patient, *consent)));
            out.push(Need::Entry(shard, StateKey::ConsentIndex(*patient, *grantee)));
        }
        Operation::RevokeConsent { consent, patient } => {
            out.push(Need::Changed(patient_shard(patient), *patient, *consent));
        }
        Operation::SubmitClaim { claim, patient, commitment, .. } => {
            let shard = patient_shard(patient);
            out.push(Need::Entry(shard, StateKey::Claim(*patient, *claim)));
            out.push(Need::Entry(shard, StateKey::ClaimKey(*commitment)));
        }
        Operation::AdjudicateClaim { claim, patient, .. } | Operation::PayClaim { claim, patient, .. } => {
            out.push(Need::Entry(patient_shard(patient), StateKey::Claim(*patient, *claim)));
        }
        Operation::CommissionUnit { unit, .. }
        | Operation::ShipUnit { unit, .. }
        | Operation::ReceiveUnit { unit }
        | Operation::DispenseUnit { unit, .. }
        | Operation::DecommissionUnit { unit, .. } => {
            out.push(Need::Entry(shard_of_unit(unit, shards), StateKey::Unit(unit.clone())));
        }
        Operation::EnrollSubject { study, patient, consent } => {
            let shard = patient_shard(patient);
            out.push(Need::Entry(shard, StateKey::Study(*study)));
            out.push(Need::Entry(shard, StateKey::Enrolment(*patient, *study)));
            out.push(Need::Entry(shard, StateKey::Consent(*patient, *consent)));
        }
        Operation::WithdrawSubject { study, patient } => {
            let shard = patient_shard(patient);
            out.push(Need::Entry(shard, StateKey::Study(*study)));
            out.push(Need::Entry(shard, StateKey::Enrolment(*patient, *study)));
        }
        // A study is held on every shard, and closing it reads it on each.
        Operation::CloseStudy { study } => {
            out.extend((0..shards).map(|shard| Need::Entry(shard, StateKey::Study(*study))));
        }
        Operation::IssueCredential { .. } => {
            let id = transaction.id();
            out.push(Need::Entry(shard_of_credential(id, shards), StateKey::Credential(id)));
        }
        Operation::RevokeCredential { credential, .. } => {
            out.push(Need::Entry(shard_of_credential(*credential, shards), StateKey::Credential(*credential)));
        }
        // Actors, accounts and recalls are resident; a new study's id is new.
        Operation::RegisterStudy { .. }
        | Operation::RegisterActor { .. }
        | Operation::RevokeActor { .. }
        | Operation::ChangeRole { .. }
        | Operation::AddOperator { .. }
        | Operation::RotateKey { .. }
        | Operation::FundAccount { .. }
        | Operation::AuditRead { .. }
        | Operation::RecallLot { .. } => {}
    }
}

/// What a state cache has read from storage since the ledger opened: the entries transactions
/// needed that were not in memory. `found` of them were stored; the rest were new (a record, a
/// claim or a unit registered for the first time), which storage answers from its filters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StorageReads {
    /// Entries asked of storage.
    pub keys: u64,
    /// Of those, the ones storage held.
    pub found: u64,
}

impl StorageReads {
    /// What was read after `earlier` (an earlier reading of the same cache).
    pub fn since(self, earlier: StorageReads) -> StorageReads {
        StorageReads { keys: self.keys - earlier.keys, found: self.found - earlier.found }
    }
}

/// A state entry of one shard.
pub type ShardKey = (u32, StateKey);

/// A consent that may change: its shard, patient and id.
pub type ChangedConsent = (u32, ActorKey, u128);

/// State entries read from storage for a group, not yet resident: the entry, its stored key,
/// and its value if stored.
pub struct Fetched {
    entries: Vec<(ShardKey, Vec<u8>, Option<Vec<u8>>)>,
}

/// The cached families' residency, per shard, for a ledger opened with a limit (without one,
/// the whole state is resident and there is no cache).
pub struct StateCache {
    /// What the groups since the last eviction read, per shard: it survives the next one.
    recent: Vec<Set<StateKey>>,
    /// Most cached entries a shard keeps once a group is durable.
    limit: usize,
    reads: StorageReads,
}

impl StateCache {
    pub fn new(shards: usize, limit: usize) -> Self {
        Self { recent: vec![Set::default(); shards], limit, reads: StorageReads::default() }
    }

    pub fn limit(&self) -> usize {
        self.limit
    }

    pub fn reads(&self) -> StorageReads {
        self.reads
    }

    /// Before a group runs: what its transactions will read beyond the resident families, and
    /// the consents among them that may change (a revocation writes its grantee's index again,
    /// so that index is read too, once the consent is resident: see `changed_indexes`).
    pub fn needs<'a>(
        shard_count: u32,
        transactions: impl IntoIterator<Item = &'a SignedTransaction>,
    ) -> (Vec<ShardKey>, Vec<ChangedConsent>) {
        let mut wanted = Vec::new();
        for transaction in transactions {
            needs(transaction, shard_count, &mut wanted);
        }
        let mut entries = Vec::new();
        let mut changed = Vec::new();
        for need in wanted {
            match need {
                Need::Entry(shard, key) => entries.push((shard, key)),
                Need::Changed(shard, patient, id) => {
                    entries.push((shard, StateKey::Consent(patient, id)));
                    changed.push((shard, patient, id));
                }
            }
        }
        (entries, changed)
    }

    /// The grantee indexes of consents that may change, once those consents are resident.
    pub fn changed_indexes(shards: &[Shard], changed: &[(u32, ActorKey, u128)]) -> Vec<(u32, StateKey)> {
        changed
            .iter()
            .filter_map(|(shard, patient, id)| {
                let consent = shards[*shard as usize].state().consents.get(&(*patient, *id))?;
                Some((*shard, StateKey::ConsentIndex(*patient, consent.grantee)))
            })
            .collect()
    }

    /// Of `wanted`, the entries that are not resident, each once: what storage must be asked.
    pub fn missing(shards: &[Shard], wanted: &[(u32, StateKey)]) -> Vec<(u32, StateKey)> {
        let mut seen: Set<(u32, StateKey)> = Set::default();
        wanted
            .iter()
            .filter(|(shard, key)| !shards[*shard as usize].state().holds(key) && seen.insert((*shard, key.clone())))
            .cloned()
            .collect()
    }

    /// Reads `missing` entries from storage (absent ones stay absent). It needs no lock on the
    /// state: what it reads is durable, and nothing is made resident until `insert`.
    pub fn read(storage: &dyn Storage, missing: Vec<(u32, StateKey)>) -> Result<Fetched, StorageError> {
        let keys: Vec<Vec<u8>> = missing.iter().map(|(shard, key)| layout::state(*shard, key)).collect();
        let values = storage.get_many(&keys)?;
        Ok(Fetched { entries: missing.into_iter().zip(keys).zip(values).map(|((e, k), v)| (e, k, v)).collect() })
    }

    /// Makes what `read` found resident, and notes what the group uses (`wanted`) so the next
    /// eviction keeps it.
    pub fn insert(
        &mut self,
        shards: &mut [Shard],
        wanted: &[(u32, StateKey)],
        fetched: Fetched,
    ) -> Result<(), StorageError> {
        for recent in &mut self.recent {
            if recent.len() > self.limit {
                recent.clear(); // no eviction for a long while: it only needs what is in use now
            }
        }
        // What is in use is worth keeping at the next eviction; tracked once that is near. (Counted
        // once per shard: a state map's length is a sum over its parts.)
        let near_limit: Vec<bool> = shards.iter().map(|s| s.state().cached_len() > self.limit / 2).collect();
        for (shard, key) in wanted {
            if near_limit[*shard as usize] {
                self.recent[*shard as usize].insert(key.clone());
            }
        }
        self.reads.keys += fetched.entries.len() as u64;
        // Nothing was made resident between `missing` and here: the execute stage plans and
        // reads under an upgradable lock, which no other writer can take.
        for ((shard, key), full, value) in fetched.entries {
            if let Some(value) = value {
                self.reads.found += 1;
                shards[shard as usize].state_mut().insert(key, &value).map_err(|e| damaged(&full, e))?;
            }
        }
        Ok(())
    }

    /// Whether any shard holds more cached entries than the limit.
    pub fn over_limit(&self, shards: &[Shard]) -> bool {
        shards.iter().any(|shard| shard.state().cached_len() > self.limit)
    }

    /// Drops cached entries of every shard over its limit, except those in `keep` (written by
    /// groups that are not yet durable). What was read since the last eviction stays too (the
    /// entries in use now), unless that alone is over the limit.
    pub fn evict(&mut self, shards: &mut [Shard], mut keep: Map<u32, Set<StateKey>>) {
        for (index, shard) in shards.iter_mut().enumerate() {
            if shard.state().cached_len() <= self.limit {
                continue;
            }
            let mut retained = keep.remove(&(index as u32)).unwrap_or_default();
            if self.recent[index].len() <= self.limit / 2 {
                retained.extend(self.recent[index].drain());
            }
            self.recent[index].clear();
            shard.state_mut().retain_cached(&retained);
        }
    }
}

fn damaged(key: &[u8], error: crate::codec::DecodeError) -> StorageError {
    StorageError::Damaged { place: layout::describe(key), detail: error.to_string() }
}
