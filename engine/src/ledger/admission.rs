//! Admission: which queue a client's batch waits in. A client whose batch held bad signatures
//! has its next `PENALTY_BATCHES` batches verified only when no other client's batch is waiting,
//! and those get at most `PENALIZED_VERIFY_PERCENT` of the verify stage's time, so a client that
//! sends forgeries slows itself, not the others.

use std::collections::HashMap;

use crossbeam_channel::Sender;

use crate::limits::{PENALIZED_CLIENTS_MAX, PENALTY_BATCHES};
use crate::model::SignedTransaction;

use super::{Answer, ClientId};

pub(super) struct Submission {
    pub(super) client: ClientId,
    /// Queued behind other clients' batches because this client sent bad signatures.
    pub(super) penalized: bool,
    pub(super) transactions: Vec<SignedTransaction>,
    pub(super) reply: Sender<Answer>,
}

/// A client's standing with the verify stage.
#[derive(Default)]
struct Standing {
    /// This client's next batches still go to the penalized queue.
    penalty_left: u32,
    /// Its batches waiting in the penalized queue (while any wait, its later ones queue behind
    /// them there, so one client's batches keep their order).
    queued: usize,
}

/// Clients that sent bad signatures, and how their batches queue.
#[derive(Default)]
pub(super) struct Standings(parking_lot::Mutex<HashMap<ClientId, Standing>>);

impl Standings {
    /// Whether the client's next batch goes to the penalized queue (and counts it there).
    pub(super) fn route(&self, client: ClientId) -> bool {
        let mut standings = self.0.lock();
        let Some(standing) = standings.get_mut(&client) else { return false };
        if standing.penalty_left == 0 && standing.queued == 0 {
            standings.remove(&client);
            return false;
        }
        standing.penalty_left = standing.penalty_left.saturating_sub(1);
        standing.queued += 1;
        true
    }

    /// After a batch is verified: a bad signature (re)starts the client's penalty.
    pub(super) fn verified(&self, client: ClientId, penalized: bool, bad: bool) {
        let mut standings = self.0.lock();
        if bad {
            if standings.len() >= PENALIZED_CLIENTS_MAX {
                // Forget the penalties of clients with nothing queued rather than grow without bound.
                standings.retain(|_, standing| standing.queued > 0);
            }
            standings.entry(client).or_default().penalty_left = PENALTY_BATCHES;
        }
        if penalized {
            if let Some(standing) = standings.get_mut(&client) {
                standing.queued -= 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_stays_penalized_for_its_next_batches_and_while_any_wait_in_the_penalized_queue() {
        let standings = Standings::default();
        assert!(!standings.route(3), "a client in good standing");
        standings.verified(3, false, true); // a batch with bad signatures
        let routed: Vec<bool> = (0..PENALTY_BATCHES).map(|_| standings.route(3)).collect();
        assert!(routed.iter().all(|&penalized| penalized));
        // The penalty is used up, but its batches still wait there: the next one queues behind them.
        assert!(standings.route(3));
        for _ in 0..=PENALTY_BATCHES {
            standings.verified(3, true, false);
        }
        assert!(!standings.route(3), "back in good standing once its queued batches are verified");
        assert!(!standings.route(4), "other clients were never penalized");
    }
}
