//! Which parts of a shard's state are in memory.
//!
//! Actors, accounts and recalls grow with the population, not with history,
//! and stay resident. Records, consents, claims, the duplicate-claim index
//! and units grow with history: they live in storage, and the execute stage
//! loads what a group of transactions will read (`load`) before it runs them,
//! and drops them again when a shard holds more than its limit (`evict`).
//! The shard state machine never does I/O: everything it reads is resident
//! when it runs, and a transaction's needs are a pure function of the
//! transaction.
//!
//! An entry written by a group that is not yet durable is never evicted
//! (storage does not have it yet), so whatever is not resident is in storage.

use std::collections::{HashMap, HashSet};

use crate::layout;
use crate::model::{ActorKey, Operation, SignedTransaction};
use crate::routing::{shard_of_actor, shard_of_unit};
use crate::shard::{claim_duplicate_key, Shard};
use crate::state::StateKey;
use crate::storage::{Storage, StorageError};

/// Tags of the state families that are always resident (see `StateKey::to_bytes`).
pub const RESIDENT_TAGS: [u8; 3] = [1, 6, 8];
const CONSENT_TAG: u8 = 3;

/// What one transaction reads beyond the resident families.
enum Need {
    Entry(u32, StateKey),
    /// Every consent of a patient (the consent check looks them up by grantee).
    Consents(u32, ActorKey),
}

fn needs(transaction: &SignedTransaction, shards: u32, out: &mut Vec<Need>) {
    let patient_shard = |patient: &ActorKey| shard_of_actor(patient, shards);
    match &transaction.transaction.operation {
        Operation::RegisterRecord { record, patient, .. } | Operation::AmendRecord { record, patient, .. } => {
            out.push(Need::Entry(patient_shard(patient), StateKey::Record(*patient, *record)));
        }
        Operation::AccessRecord { record, patient, .. } | Operation::EmergencyAccess { record, patient, .. } => {
            out.push(Need::Entry(patient_shard(patient), StateKey::Record(*patient, *record)));
            out.push(Need::Consents(patient_shard(patient), *patient));
        }
        Operation::GrantConsent { patient, .. } | Operation::RevokeConsent { patient, .. } => {
            out.push(Need::Consents(patient_shard(patient), *patient));
        }
        Operation::SubmitClaim { claim, patient, service_date, lines, .. } => {
            let shard = patient_shard(patient);
            out.push(Need::Entry(shard, StateKey::Claim(*patient, *claim)));
            let duplicate = claim_duplicate_key(patient, &transaction.transaction.signer, *service_date, lines);
            out.push(Need::Entry(shard, StateKey::ClaimKey(duplicate)));
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
        Operation::RegisterActor { .. } | Operation::FundAccount { .. } | Operation::RecallLot { .. } => {}
    }
}

/// The cached families' residency, per shard.
pub struct StateCache {
    /// Patients whose consents are all resident, per shard.
    consents_loaded: Vec<HashSet<ActorKey>>,
    /// What the groups since the last eviction read, per shard: it survives the next one.
    recent: Vec<HashSet<StateKey>>,
    recent_patients: Vec<HashSet<ActorKey>>,
    /// Most cached entries a shard keeps once a group is durable.
    limit: usize,
}

impl StateCache {
    pub fn new(shards: usize, limit: usize) -> Self {
        Self {
            consents_loaded: vec![HashSet::new(); shards],
            recent: vec![HashSet::new(); shards],
            recent_patients: vec![HashSet::new(); shards],
            limit,
        }
    }

    pub fn set_limit(&mut self, limit: usize) {
        self.limit = limit;
    }

    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Makes resident everything `transactions` will read.
    pub fn load(
        &mut self,
        shards: &mut [Shard],
        storage: &dyn Storage,
        transactions: &[&SignedTransaction],
    ) -> Result<(), StorageError> {
        let shard_count = shards.len() as u32;
        for recent in &mut self.recent {
            if recent.len() > self.limit {
                recent.clear(); // no eviction for a long while: it only needs what is in use now
            }
        }
        let mut wanted = Vec::new();
        for transaction in transactions {
            needs(transaction, shard_count, &mut wanted);
        }
        let mut points: Vec<(u32, StateKey)> = Vec::new();
        let mut seen: HashSet<(u32, &StateKey)> = HashSet::new();
        let mut patients: Vec<(u32, ActorKey)> = Vec::new();
        for need in &wanted {
            match need {
                Need::Entry(shard, key) => {
                    self.recent[*shard as usize].insert(key.clone());
                    if !shards[*shard as usize].state().holds(key) && seen.insert((*shard, key)) {
                        points.push((*shard, key.clone()));
                    }
                }
                Need::Consents(shard, patient) => {
                    self.recent_patients[*shard as usize].insert(*patient);
                    if self.consents_loaded[*shard as usize].insert(*patient) {
                        patients.push((*shard, *patient));
                    }
                }
            }
        }
        let keys: Vec<Vec<u8>> = points.iter().map(|(shard, key)| layout::state(*shard, &key.to_bytes())).collect();
        for ((shard, key), value) in points.iter().zip(storage.get_many(&keys)?) {
            if let Some(value) = value {
                let state = shards[*shard as usize].state_mut();
                state
                    .insert_encoded(&key.to_bytes(), &value)
                    .map_err(|e| damaged(&layout::state(*shard, &key.to_bytes()), e))?;
            }
        }
        for (shard, patient) in patients {
            let mut prefix = vec![CONSENT_TAG];
            prefix.extend_from_slice(&patient.0);
            let full = layout::state(shard, &prefix);
            let state = shards[shard as usize].state_mut();
            let skip = layout::state_prefix(shard).len();
            let mut failure = None;
            storage.scan(&full, &mut |key, value| {
                let state_key = &key[skip..];
                match StateKey::from_bytes(state_key) {
                    // A consent granted by a group not yet durable is resident already, and newer.
                    Ok(parsed) if state.holds(&parsed) => true,
                    Ok(_) => match state.insert_encoded(state_key, value) {
                        Ok(()) => true,
                        Err(e) => {
                            failure = Some(damaged(key, e));
                            false
                        }
                    },
                    Err(e) => {
                        failure = Some(damaged(key, e));
                        false
                    }
                }
            })?;
            if let Some(failure) = failure {
                return Err(failure);
            }
        }
        Ok(())
    }

    /// Drops cached entries of every shard over its limit, except those in `keep` (written by
    /// groups that are not yet durable). What was read since the last eviction stays too (the
    /// entries in use now), unless that alone is over the limit.
    pub fn evict(&mut self, shards: &mut [Shard], keep: &HashMap<u32, HashSet<StateKey>>) {
        let nothing = HashSet::new();
        for (index, shard) in shards.iter_mut().enumerate() {
            if shard.state().cached_len() <= self.limit {
                continue;
            }
            let keep = keep.get(&(index as u32)).unwrap_or(&nothing);
            let mut retained: HashSet<StateKey> = keep.clone();
            let mut patients: HashSet<ActorKey> = keep
                .iter()
                .filter_map(|key| match key {
                    StateKey::Consent(patient, _) => Some(*patient),
                    _ => None,
                })
                .collect();
            if self.recent[index].len() + self.recent_patients[index].len() <= self.limit / 2 {
                retained.extend(self.recent[index].drain());
                patients.extend(self.recent_patients[index].drain());
            }
            self.recent[index].clear();
            self.recent_patients[index].clear();
            shard.state_mut().retain_cached(&retained, &patients);
            self.consents_loaded[index].retain(|patient| patients.contains(patient));
        }
    }

    /// After a failed write: nothing cached is known any more.
    pub fn forget(&mut self) {
        for loaded in &mut self.consents_loaded {
            loaded.clear();
        }
    }
}

fn damaged(key: &[u8], error: crate::codec::DecodeError) -> StorageError {
    StorageError::Damaged { place: layout::describe(key), detail: error.to_string() }
}
