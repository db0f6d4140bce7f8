//! The execute stage: takes verified batches as they come, groups those waiting, reads from
//! storage what the group needs (earlier results of its ids, and with a state cache the state
//! it will read) while queries go on, then runs the group's rounds under the state's write lock.

use crossbeam_channel::{Receiver, Sender, TryRecvError};
use parking_lot::{RwLock, RwLockUpgradableReadGuard, RwLockWriteGuard};

use crate::cache::StateCache;
use crate::layout;
use crate::limits::ROUND_TRANSACTIONS_MAX;
use crate::model::{Reason, SignedTransaction, TxResult};
use crate::storage::{Storage, StorageError, Write};

use super::core::Core;
use super::persist_stage::Durable;
use super::{Answer, Clock, SubmitError};

/// A batch whose signatures are checked: one verdict per transaction.
pub(super) struct Verified {
    pub(super) transactions: Vec<SignedTransaction>,
    pub(super) verdicts: Vec<Option<Reason>>,
    pub(super) reply: Sender<Answer>,
}

pub(super) fn answer_all(group: Vec<Verified>, answer: Answer) {
    for verified in group {
        let _ = verified.reply.send(answer.clone());
    }
}

/// A group executed in memory, waiting to be made durable before it is answered.
pub(super) struct Executed {
    pub(super) seq: u64,
    pub(super) epoch: u64,
    pub(super) writes: Vec<Write>,
    pub(super) replies: Vec<(Sender<Answer>, Vec<TxResult>)>,
}

/// Takes verified batches as they come, groups those waiting, and executes each group under
/// the core's lock; the persist stage makes it durable and answers.
pub(super) fn execute_stage(
    core: &RwLock<Core>,
    verified: &Receiver<Verified>,
    clock: &Clock,
    durable: &Durable,
    persist: &Sender<Executed>,
) {
    let mut carried: Option<Verified> = None;
    loop {
        let first = match carried.take() {
            Some(first) => first,
            None => match verified.recv() {
                Ok(first) => first,
                Err(_) => return,
            },
        };
        let mut count = first.transactions.len();
        let mut group = vec![first];
        while count < ROUND_TRANSACTIONS_MAX {
            match verified.try_recv() {
                Ok(next) if count + next.transactions.len() <= ROUND_TRANSACTIONS_MAX => {
                    count += next.transactions.len();
                    group.push(next);
                }
                Ok(next) => {
                    carried = Some(next);
                    break;
                }
                Err(TryRecvError::Empty | TryRecvError::Disconnected) => break,
            }
        }
        if let Some(executed) = execute_group(core, group, clock, durable.get().0) {
            if persist.send(executed).is_err() {
                return;
            }
        }
    }
}

/// Runs one group: settles what became durable, reads from storage what the group needs under
/// an upgradable read lock (queries go on; no other writer can change what the reads were
/// planned from), then executes under the write lock. `durable` was read before any lookup, so
/// a group that became durable since is found in storage or among the unpersisted results.
/// Returns `None` when a read failed (the group is answered with the error).
fn execute_group(core: &RwLock<Core>, group: Vec<Verified>, clock: &Clock, durable: u64) -> Option<Executed> {
    let mut guard = core.write();
    guard.settle(durable);
    let guard = RwLockWriteGuard::downgrade_to_upgradable(guard);
    let storage = guard.storage.clone();
    let lookups: Vec<Vec<u8>> =
        group.iter().flat_map(|v| v.transactions.iter().map(|t| layout::transaction(t.id()))).collect();
    let read = storage.get_many(&lookups).and_then(|stored| Ok((stored, prefetch(guard, storage.as_ref(), &group)?)));
    match read {
        Ok((stored, mut guard)) => Some(guard.run(group, stored, clock)),
        Err(error) => {
            answer_all(group, Err(SubmitError::Storage(error.to_string())));
            None
        }
    }
}

/// With a state cache, makes resident everything the group's transactions will read (those whose
/// signatures passed); returns the write lock to run the group under.
fn prefetch<'a>(
    guard: RwLockUpgradableReadGuard<'a, Core>,
    storage: &dyn Storage,
    group: &[Verified],
) -> Result<RwLockWriteGuard<'a, Core>, StorageError> {
    if guard.cache.is_none() {
        return Ok(RwLockUpgradableReadGuard::upgrade(guard));
    }
    let verified = group.iter().flat_map(|v| v.transactions.iter().zip(&v.verdicts));
    let to_run = verified.filter(|(_, verdict)| verdict.is_none()).map(|(transaction, _)| transaction);
    let (wanted, changed) = StateCache::needs(guard.shards.len() as u32, to_run);
    let fetched = StateCache::read(storage, StateCache::missing(&guard.shards, &wanted))?;
    let mut guard = RwLockUpgradableReadGuard::upgrade(guard);
    make_resident(&mut guard, &wanted, fetched)?;
    if changed.is_empty() {
        return Ok(guard);
    }
    // Revocations: their grantees' indexes, now that the consents they name are resident.
    let guard = RwLockWriteGuard::downgrade_to_upgradable(guard);
    let indexes = StateCache::changed_indexes(&guard.shards, &changed);
    let fetched = StateCache::read(storage, StateCache::missing(&guard.shards, &indexes))?;
    let mut guard = RwLockUpgradableReadGuard::upgrade(guard);
    make_resident(&mut guard, &indexes, fetched)?;
    Ok(guard)
}

fn make_resident(
    core: &mut Core,
    wanted: &[(u32, crate::state::StateKey)],
    fetched: crate::cache::Fetched,
) -> Result<(), StorageError> {
    let Core { cache, shards, .. } = core;
    cache.as_mut().expect("prefetch runs with a cache").insert(shards, wanted, fetched)
}
