//! The verify stage: checks each submitted batch's signatures on the global rayon pool, taking
//! penalized clients' batches only when no other is waiting.

use std::iter::once;
use std::time::Instant;

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};

use crate::limits::{PENALIZED_VERIFY_PERCENT, VERIFY_ONE_CHUNK_MAX};
use crate::model::Reason;
use crate::signature::SignatureVerifier;

use super::admission::{Standings, Submission};
use super::execute_stage::Verified;

/// Checks the signatures of each submitted batch. A penalized client's batch is taken only when
/// no batch of a client in good standing is waiting, and penalized batches get at most
/// `PENALIZED_VERIFY_PERCENT` of the stage's time.
pub(super) fn verify_stage(
    clean: &Receiver<Submission>,
    penalized: &Receiver<Submission>,
    standings: &Standings,
    verified: &Sender<Verified>,
) {
    let verifier = SignatureVerifier::new();
    let mut penalized_from = Instant::now();
    let mut carried: Option<Submission> = None;
    loop {
        let submission = match carried.take() {
            Some(submission) => Ok(submission),
            None => match clean.try_recv() {
                Ok(submission) => Ok(submission),
                Err(_) if Instant::now() >= penalized_from => crossbeam_channel::select_biased! {
                    recv(clean) -> submission => submission,
                    recv(penalized) -> submission => submission,
                },
                Err(_) => match clean.recv_deadline(penalized_from) {
                    Ok(submission) => Ok(submission),
                    Err(RecvTimeoutError::Timeout) => continue,
                    Err(RecvTimeoutError::Disconnected) => return,
                },
            },
        };
        let Ok(submission) = submission else { return };
        // A small batch is one chunk on one thread; a second one waiting takes the other.
        let beside = if !submission.penalized && submission.transactions.len() <= VERIFY_ONE_CHUNK_MAX {
            match clean.try_recv() {
                Ok(next) if next.transactions.len() <= VERIFY_ONE_CHUNK_MAX => Some(next),
                Ok(next) => {
                    carried = Some(next);
                    None
                }
                Err(_) => None,
            }
        } else {
            None
        };
        let started = Instant::now();
        let (verdicts, beside) = match beside {
            Some(other) => {
                let (verdicts, others) =
                    rayon::join(|| verifier.verify(&submission.transactions), || verifier.verify(&other.transactions));
                (verdicts, Some((other, others)))
            }
            None => (verifier.verify(&submission.transactions), None),
        };
        if submission.penalized {
            let took = started.elapsed();
            penalized_from = Instant::now() + took * (100 / PENALIZED_VERIFY_PERCENT - 1);
        }
        for (submission, verdicts) in once((submission, verdicts)).chain(beside) {
            let bad = verdicts.iter().any(|v| matches!(v, Some(Reason::BadSignature | Reason::BatchAbandoned)));
            standings.verified(submission.client, submission.penalized, bad);
            let batch = Verified { transactions: submission.transactions, verdicts, reply: submission.reply };
            if verified.send(batch).is_err() {
                return;
            }
        }
    }
}
