//! The persist stage: writes each executed group in one atomic, fsynced write, in order, and
//! only then answers; and `Durable`, the last durable group, which queries wait on.

use crossbeam_channel::Receiver;
use parking_lot::RwLock;

use crate::storage::Storage;

use super::core::Core;
use super::execute_stage::Executed;
use super::SubmitError;

/// The last durable group, and the epoch it belongs to; queries wait on it.
#[derive(Default)]
pub(super) struct Durable {
    state: parking_lot::Mutex<(u64, u64)>,
    changed: parking_lot::Condvar,
}

impl Durable {
    pub(super) fn set(&self, seq: u64, epoch: u64) {
        *self.state.lock() = (seq, epoch);
        self.changed.notify_all();
    }
    pub(super) fn get(&self) -> (u64, u64) {
        *self.state.lock()
    }
    /// Waits until group `seq` of `epoch` is durable (true) or was thrown away (false).
    pub(super) fn wait(&self, seq: u64, epoch: u64) -> bool {
        let mut state = self.state.lock();
        loop {
            let (durable, current) = *state;
            if current != epoch {
                return false;
            }
            if durable >= seq {
                return true;
            }
            self.changed.wait(&mut state);
        }
    }
}

/// Writes each executed group in one atomic, fsynced write, in order, and only then answers.
/// When a write fails, the core goes back to what is durable, and every group executed on top
/// of the lost one is refused too.
pub(super) fn persist_stage(
    core: &RwLock<Core>,
    storage: &dyn Storage,
    executed: &Receiver<Executed>,
    durable: &Durable,
) {
    let mut epoch = 0;
    for group in executed {
        if group.epoch != epoch {
            let refused = SubmitError::Storage("an earlier write failed, so nothing in the batch was applied".into());
            for (reply, _) in group.replies {
                let _ = reply.send(Err(refused.clone()));
            }
            continue;
        }
        if group.writes.is_empty() {
            durable.set(group.seq, epoch);
        } else if let Err(error) = storage.write(&group.writes) {
            let mut core = core.write();
            core.reload();
            epoch = core.epoch;
            // The reloaded state is the durable one.
            durable.set(core.executed, epoch);
            drop(core);
            for (reply, _) in group.replies {
                let _ = reply.send(Err(SubmitError::Storage(error.to_string())));
            }
            continue;
        } else {
            durable.set(group.seq, epoch);
        }
        for (reply, results) in group.replies {
            let _ = reply.send(Ok(results));
        }
    }
}
