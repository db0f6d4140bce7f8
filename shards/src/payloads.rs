//! The cluster's payload store, served by the coordinator on its client port.
//!
//! One store (`engine::payload::PayloadStore`) beside the coordinator's own (`DATA.payloads`,
//! its key-encryption key in `DATA.kek`). The coordinator serves it, rather than the shard that
//! holds each record, because a payload read is a signed client request that must first commit
//! an access through a round, and the coordinator is what authenticates clients and runs rounds;
//! shard servers speak only to the coordinator, so a shard-held payload would pass through it
//! anyway. The store runs the same code as embedded: it asks the ledger through
//! [`RecordLedger`], here the coordinator's rounds and queries.
//!
//! - `put-payload` (a provider, signed): sealed under a fresh data key and stored; answered
//!   with the content hash its `register-record` names.
//! - `read-payload` (the access's signer, signed): the access is submitted like any
//!   transaction; once committed as permitted, the plaintext, checked against the ledger's hash.
//! - An `erase-record` submitted to the cluster is marked in the store before its round and
//!   shredded once committed, before the batch is answered; marks a crash left are settled on
//!   start (`settle_erasures`).

use std::sync::Arc;

use caduceus_engine::model::OperationKind;
use caduceus_engine::payload::{PayloadError, PayloadStore, RecordLedger};
use caduceus_engine::state::Record;
use caduceus_engine::{ActorKey, Operation, Role, SignedTransaction, TxId, TxResult};
use tokio::sync::mpsc;

use super::coordinator::{lookup, query_cluster, run_job, Job, Shared};
use super::wire::{error_code, Answer, Outcome, Query, Response};

/// The ledger as the payload store sees it from the coordinator: submits go through rounds,
/// reads to the shards. Called from blocking threads only (`tokio::task::spawn_blocking`).
struct ClusterRecords {
    shared: Arc<Shared>,
    jobs: mpsc::Sender<Job>,
    runtime: tokio::runtime::Handle,
}

fn ledger_error(response: Response) -> PayloadError {
    PayloadError::Ledger(match response {
        Response::Error { message, .. } => message,
        Response::Busy => "the coordinator is busy".into(),
        other => format!("unexpected answer {other:?}"),
    })
}

impl RecordLedger for ClusterRecords {
    fn submit_one(&self, transaction: SignedTransaction) -> Result<TxResult, PayloadError> {
        match self.runtime.block_on(run_job(&self.jobs, vec![transaction])).map_err(ledger_error)?.pop() {
            Some(Outcome::Done(result)) => Ok(result),
            _ => Err(PayloadError::Ledger("a shard it needs did not answer: try again".into())),
        }
    }
    fn holds(&self, id: TxId) -> Result<bool, PayloadError> {
        match self.runtime.block_on(lookup(&self.shared, vec![id])) {
            Response::Lookup(found) => Ok(found.first().is_some_and(Option::is_some)),
            other => Err(ledger_error(other)),
        }
    }
    fn record(&self, patient: &ActorKey, record: u128) -> Result<Option<Record>, PayloadError> {
        match self.runtime.block_on(query_cluster(&self.shared, Query::Record(*patient, record))) {
            Response::Answer(Answer::Record(found)) => Ok(found),
            other => Err(ledger_error(other)),
        }
    }
}

/// The payload store and what it needs to ask the ledger.
#[derive(Clone)]
pub(crate) struct Payloads {
    store: Arc<PayloadStore>,
    shared: Arc<Shared>,
    jobs: mpsc::Sender<Job>,
}

impl Payloads {
    pub(crate) fn new(store: PayloadStore, shared: Arc<Shared>, jobs: mpsc::Sender<Job>) -> Self {
        Self { store: Arc::new(store), shared, jobs }
    }

    /// Runs `work` on the store on a blocking thread (RocksDB writes, fsyncs and compactions),
    /// with the ledger to ask.
    async fn blocking<T: Send + 'static>(
        &self,
        work: impl FnOnce(&PayloadStore, &ClusterRecords) -> Result<T, PayloadError> + Send + 'static,
    ) -> Result<T, PayloadError> {
        let store = self.store.clone();
        let records = ClusterRecords {
            shared: self.shared.clone(),
            jobs: self.jobs.clone(),
            runtime: tokio::runtime::Handle::current(),
        };
        tokio::task::spawn_blocking(move || work(&store, &records))
            .await
            .unwrap_or_else(|e| Err(PayloadError::Ledger(format!("the payload task failed: {e}"))))
    }

    /// A signed `put-payload` from a reader of `role`.
    pub(crate) async fn put(&self, role: Role, patient: ActorKey, record: u128, payload: Vec<u8>) -> Response {
        if !OperationKind::RegisterRecord.signer_roles().contains(&role) {
            let detail = format!("a {role} registers no records, so stores no payloads");
            return Response::error(error_code::FORBIDDEN, detail);
        }
        match self.blocking(move |store, _| store.put(&patient, record, &payload)).await {
            Ok(hash) => Response::Stored(hash),
            Err(error) => payload_error(error),
        }
    }

    /// A signed `read-payload` from `reader`: the access must be its own.
    pub(crate) async fn read(&self, reader: &ActorKey, access: SignedTransaction) -> Response {
        if access.transaction.signer != *reader {
            return Response::error(error_code::FORBIDDEN, "a payload is read through an access its reader signed");
        }
        match self.blocking(move |store, records| store.read(records, access).map(|plain| plain.to_vec())).await {
            Ok(plaintext) => Response::Payload(plaintext),
            Err(error) => payload_error(error),
        }
    }

    /// Marks the batch's erasures before its round; returns them (index in the batch, patient,
    /// record) for `shred`.
    pub(crate) async fn mark(&self, batch: &[SignedTransaction]) -> Result<Vec<(usize, ActorKey, u128)>, Response> {
        let erasures: Vec<(usize, ActorKey, u128)> = batch
            .iter()
            .enumerate()
            .filter_map(|(index, t)| match &t.transaction.operation {
                Operation::EraseRecord { patient, record } => Some((index, *patient, *record)),
                _ => None,
            })
            .collect();
        if erasures.is_empty() {
            return Ok(erasures);
        }
        let marks: Vec<(ActorKey, u128)> = erasures.iter().map(|(_, p, r)| (*p, *r)).collect();
        match self.blocking(move |store, _| store.mark_erasing(&marks)).await {
            Ok(()) => Ok(erasures),
            Err(error) => Err(payload_error(error)),
        }
    }

    /// After the round: shreds the records whose erasure committed, unmarks the refused ones.
    /// One whose outcome is unknown (a shard did not answer) stays marked, for `settle`.
    pub(crate) async fn shred(&self, erasures: Vec<(usize, ActorKey, u128)>, outcomes: &[Outcome]) {
        for (index, patient, record) in erasures {
            let Some(Outcome::Done(result)) = outcomes.get(index).copied() else { continue };
            match self.blocking(move |store, _| store.erased(&patient, record, result)).await {
                Ok(_) | Err(PayloadError::Refused(_)) => {}
                Err(error) => {
                    eprintln!("coordinator: shredding an erased record's payload: {error} (settled on restart)")
                }
            }
        }
    }

    /// Settles the erasures a crash left marked, once the shards answer: tries until it has.
    pub(crate) async fn settle(self) {
        loop {
            match self.blocking(|store, records| store.settle_erasures(records)).await {
                Ok(0) => return,
                Ok(shredded) => {
                    eprintln!("coordinator: shredded the payloads of {shredded} records erased before a stop");
                    return;
                }
                Err(_) => tokio::time::sleep(super::coordinator::RETRY_AFTER).await,
            }
        }
    }
}

/// A payload error as the client sees it.
fn payload_error(error: PayloadError) -> Response {
    let code = match &error {
        PayloadError::WrongOperation(_)
        | PayloadError::Replayed
        | PayloadError::Refused(_)
        | PayloadError::UnknownRecord
        | PayloadError::Erased => error_code::FORBIDDEN,
        PayloadError::TooLong(_) => error_code::TOO_LARGE,
        PayloadError::Ledger(_) => error_code::UNAVAILABLE,
        _ => error_code::STORAGE,
    };
    Response::error(code, error)
}
