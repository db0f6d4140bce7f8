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
//! - An `erase-record` submitted to the cluster is marked in the store (by its own id) before
//!   its round and shredded once committed, before the batch is answered; marks whose outcome
//!   was not seen are settled on start and every minute (`settle_erasures`).
//!
//! At most `PAYLOAD_TASKS_MAX` payload requests run at once (each holds a blocking thread
//! while its access goes through a round); others wait for a slot. Erasures on the submit
//! path do not wait behind them.

use std::sync::Arc;

use caduceus_engine::model::OperationKind;
use caduceus_engine::payload::{Erasure, PayloadError, PayloadStore, RecordLedger};
use caduceus_engine::state::Record;
use caduceus_engine::{ActorKey, Role, SignedTransaction, TxId, TxResult};
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

/// Payload requests served at once.
const PAYLOAD_TASKS_MAX: usize = 8;
/// How often marked erasures are settled.
const SETTLE_EVERY: std::time::Duration = std::time::Duration::from_secs(60);

/// The payload store and what it needs to ask the ledger.
#[derive(Clone)]
pub(crate) struct Payloads {
    store: Arc<PayloadStore>,
    shared: Arc<Shared>,
    jobs: mpsc::Sender<Job>,
    tasks: Arc<tokio::sync::Semaphore>,
}

impl Payloads {
    pub(crate) fn new(store: PayloadStore, shared: Arc<Shared>, jobs: mpsc::Sender<Job>) -> Self {
        let tasks = Arc::new(tokio::sync::Semaphore::new(PAYLOAD_TASKS_MAX));
        Self { store: Arc::new(store), shared, jobs, tasks }
    }

    /// A client's payload request, run by `blocking` once one of `PAYLOAD_TASKS_MAX` slots is
    /// free. (Erasures on the submit path and settling do not wait for a slot.)
    async fn request<T: Send + 'static>(
        &self,
        work: impl FnOnce(&PayloadStore, &ClusterRecords) -> Result<T, PayloadError> + Send + 'static,
    ) -> Result<T, PayloadError> {
        let Ok(_slot) = self.tasks.acquire().await else {
            return Err(PayloadError::Ledger("the coordinator is shutting down".into()));
        };
        self.blocking(work).await
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

    /// A signed `put-payload` from `reader`, of `role`: a provider's, for a record not yet on
    /// the ledger or one it holds and that is not erased.
    pub(crate) async fn put(
        &self,
        reader: &ActorKey,
        role: Role,
        patient: ActorKey,
        record: u128,
        payload: Vec<u8>,
    ) -> Response {
        let forbidden = |detail: String| Response::error(error_code::FORBIDDEN, detail);
        if !OperationKind::RegisterRecord.signer_roles().contains(&role) {
            return forbidden(format!("a {role} registers no records, so stores no payloads"));
        }
        match query_cluster(&self.shared, Query::Record(patient, record)).await {
            Response::Answer(Answer::Record(None)) => {}
            Response::Answer(Answer::Record(Some(held))) if held.custodian == *reader && held.erased_at.is_none() => {}
            Response::Answer(Answer::Record(Some(_))) => {
                return forbidden("the record is another custodian's, or erased".into());
            }
            other => return other,
        }
        match self.request(move |store, _| store.put(&patient, record, &payload)).await {
            Ok(hash) => Response::Stored(hash),
            Err(error) => payload_error(error),
        }
    }

    /// A signed `read-payload` from `reader`: the access must be its own.
    pub(crate) async fn read(&self, reader: &ActorKey, access: SignedTransaction) -> Response {
        if access.transaction.signer != *reader {
            return Response::error(error_code::FORBIDDEN, "a payload is read through an access its reader signed");
        }
        match self.request(move |store, records| store.read_through(records, access).map(|plain| plain.to_vec())).await
        {
            Ok(plaintext) => Response::Payload(plaintext),
            Err(error) => payload_error(error),
        }
    }

    /// Marks the batch's erasures before its round (one write); returns them with their place
    /// in the batch, for `shred`.
    pub(crate) async fn mark(&self, batch: &[SignedTransaction]) -> Result<Vec<(usize, Erasure)>, Response> {
        let erasures: Vec<(usize, Erasure)> =
            batch.iter().enumerate().filter_map(|(index, t)| Erasure::of(t).map(|e| (index, e))).collect();
        if erasures.is_empty() {
            return Ok(erasures);
        }
        let marks: Vec<Erasure> = erasures.iter().map(|(_, e)| *e).collect();
        match self.blocking(move |store, _| store.mark_erasing(&marks)).await {
            Ok(()) => Ok(erasures),
            Err(error) => Err(payload_error(error)),
        }
    }

    /// After the round: shreds the records whose erasure committed and drops the marks of the
    /// refused ones, in one write. One whose outcome is unknown (a shard did not answer) stays
    /// marked, for `settle`.
    pub(crate) async fn shred(&self, erasures: Vec<(usize, Erasure)>, outcomes: &[Outcome]) {
        let done: Vec<(Erasure, TxResult)> = erasures
            .into_iter()
            .filter_map(|(index, erasure)| match outcomes.get(index) {
                Some(Outcome::Done(result)) => Some((erasure, *result)),
                _ => None,
            })
            .collect();
        if let Err(error) = self.blocking(move |store, _| store.erasures_done(&done)).await {
            eprintln!("coordinator: shredding erased records' payloads: {error} (settled later)");
        }
    }

    /// Settles marked erasures whose outcome was not seen: on start, once the shards answer,
    /// then every `SETTLE_EVERY`.
    pub(crate) async fn settle(self) {
        loop {
            let now = self.shared.now();
            match self.blocking(move |store, records| store.settle_erasures(records, now)).await {
                Ok(0) => tokio::time::sleep(SETTLE_EVERY).await,
                Ok(shredded) => {
                    eprintln!("coordinator: shredded the payloads of {shredded} erased records");
                    tokio::time::sleep(SETTLE_EVERY).await;
                }
                Err(error) => {
                    eprintln!("coordinator: settling marked erasures: {error} (tried again shortly)");
                    tokio::time::sleep(super::coordinator::RETRY_AFTER * 10).await;
                }
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
