//! The closed loop over an embedded ledger: the demo's driver and the hostile client's.

use std::collections::VecDeque;
use std::time::Instant;

use caduceus_engine::ledger::{ClientId, PendingBatch};
use caduceus_engine::{Ledger, SignedTransaction, SubmitError, TxId, TxResult};

/// Submits batches as `client` in a closed loop, keeping up to `in_flight` of
/// them pending, and hands each batch's transaction ids and results, with the
/// moment it was sent, to `settled` in submission order. Stops when `batches` ends.
pub fn closed_loop(
    ledger: &Ledger,
    client: ClientId,
    batches: impl IntoIterator<Item = Vec<SignedTransaction>>,
    in_flight: usize,
    mut settled: impl FnMut(Instant, Vec<TxId>, Vec<TxResult>),
) -> Result<(), SubmitError> {
    let mut pending: VecDeque<(Instant, Vec<TxId>, PendingBatch)> = VecDeque::new();
    for batch in batches {
        if pending.len() >= in_flight.max(1) {
            let (sent, ids, batch) = pending.pop_front().expect("a pending batch");
            settled(sent, ids, batch.wait()?);
        }
        let ids = batch.iter().map(SignedTransaction::id).collect();
        pending.push_back((Instant::now(), ids, ledger.submit_async_from(client, batch)?));
    }
    for (sent, ids, batch) in pending {
        settled(sent, ids, batch.wait()?);
    }
    Ok(())
}
