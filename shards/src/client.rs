//! The client library: submits batches to a cluster's coordinator and asks it
//! questions, over QUIC with TLS (the coordinator is authenticated by the
//! cluster CA; transactions by their own signatures).

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use caduceus_engine::{Checkpoint, Proof, SignedTransaction, TxId};
use thiserror::Error;

use super::rpc::{call, CallError};
use super::wire::{Answer, Outcome, Query, Request, Response};

/// How long a call may take before the client gives up on it.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(60);
/// How many times a "busy" answer is retried (with doubling waits from 5 ms) before giving up.
pub const BUSY_RETRIES: u32 = 12;

#[derive(Debug, Error)]
pub enum ClientError {
    #[error("TLS setup: {0}")]
    Setup(String),
    #[error("connecting to {address}: {detail}")]
    Connect { address: SocketAddr, detail: String },
    #[error(transparent)]
    Call(#[from] CallError),
    #[error("the server refused the request ({code}): {message}")]
    Refused { code: u16, message: String },
    #[error("the server stayed busy")]
    Busy,
    #[error("unexpected response: {0}")]
    Unexpected(String),
}

/// A connection to a coordinator.
pub struct Client {
    endpoint: quinn::Endpoint,
    connection: quinn::Connection,
    /// Who signs this client's reads, and its clock; without one, only health and checkpoints
    /// are answered.
    reader: Option<(caduceus_engine::signature::SigningKey, caduceus_engine::ledger::Clock)>,
    /// Whether the reader is an auditor: each read then carries its `audit-read` transaction.
    auditor: bool,
    /// Each signed read's nonce: never the same twice from this client.
    nonces: std::sync::atomic::AtomicU64,
}

impl Client {
    /// Connects to the coordinator at `address`, trusting the cluster CA certificate in `ca`.
    pub async fn connect(address: SocketAddr, ca: &Path) -> Result<Self, ClientError> {
        let roots = super::tls::roots(ca).map_err(|e| ClientError::Setup(format!("{e:#}")))?;
        let config = super::tls::client(roots, None).map_err(|e| ClientError::Setup(format!("{e:#}")))?;
        Self::connect_with(address, config, super::tls::COORDINATOR_NAME).await
    }

    /// Connects with a prepared QUIC client configuration to a server whose certificate names
    /// `server_name` (`tls::COORDINATOR_NAME` or `tls::SHARD_SERVER_NAME`).
    pub async fn connect_with(
        address: SocketAddr,
        config: quinn::ClientConfig,
        server_name: &str,
    ) -> Result<Self, ClientError> {
        let connect_error = |detail: String| ClientError::Connect { address, detail };
        let bind: SocketAddr = if address.is_ipv6() { "[::]:0" } else { "0.0.0.0:0" }.parse().expect("an address");
        let mut endpoint = quinn::Endpoint::client(bind).map_err(|e| connect_error(e.to_string()))?;
        endpoint.set_default_client_config(config);
        let connecting = endpoint.connect(address, server_name).map_err(|e| connect_error(e.to_string()))?;
        let connection = tokio::time::timeout(Duration::from_secs(5), connecting)
            .await
            .map_err(|_| connect_error("no answer within 5 s".into()))?
            .map_err(|e| connect_error(e.to_string()))?;
        let start = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        Ok(Self {
            endpoint,
            connection,
            reader: None,
            auditor: false,
            nonces: std::sync::atomic::AtomicU64::new(start.as_nanos() as u64),
        })
    }

    /// Signs this client's reads (queries, proofs, lookups) as the actor whose key this is, at
    /// the times `clock` gives.
    pub fn reading_as(
        mut self,
        key: caduceus_engine::signature::SigningKey,
        clock: caduceus_engine::ledger::Clock,
    ) -> Self {
        self.reader = Some((key, clock));
        self
    }

    /// Signs this client's reads as an auditor: each read carries the `audit-read` transaction
    /// the coordinator commits (logs) before it answers.
    pub fn auditing_as(
        self,
        key: caduceus_engine::signature::SigningKey,
        clock: caduceus_engine::ledger::Clock,
    ) -> Self {
        Self { auditor: true, ..self.reading_as(key, clock) }
    }

    /// A read signed if the client has a reader; anything else as it is.
    fn signed<'a>(&self, request: &'a Request) -> Result<std::borrow::Cow<'a, Request>, ClientError> {
        let (Some((key, clock)), true) = (&self.reader, request.is_signed_read()) else {
            return Ok(std::borrow::Cow::Borrowed(request));
        };
        let request = request.clone();
        let nonce = self.nonces.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let signed = if self.auditor && super::wire::Credential::logged(&request) {
            let audit_nonce = (u128::from(nonce) << 64) | u128::from(std::process::id());
            super::wire::Credential::sign_audited(key, clock(), nonce, audit_nonce, request)
        } else {
            super::wire::Credential::sign(key, clock(), nonce, request)
        };
        signed.map(std::borrow::Cow::Owned).map_err(|e| ClientError::Unexpected(e.to_string()))
    }

    /// Sends any request and returns the raw response (an error frame is a response too).
    pub async fn request(&self, request: &Request) -> Result<Response, ClientError> {
        Ok(call(&self.connection, request, CALL_TIMEOUT).await?)
    }

    /// Sends a request until it is not answered "busy"; a read is signed anew for each attempt
    /// (the coordinator may have noted the last signature's nonce before it answered "busy").
    async fn expect(&self, request: &Request) -> Result<Response, ClientError> {
        let mut wait = Duration::from_millis(5);
        for _ in 0..=BUSY_RETRIES {
            match self.request(self.signed(request)?.as_ref()).await? {
                Response::Busy => {
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(Duration::from_secs(1));
                }
                Response::Error { code, message } => return Err(ClientError::Refused { code, message }),
                response => return Ok(response),
            }
        }
        Err(ClientError::Busy)
    }

    /// Submits a batch and waits for its outcomes, one per transaction, in order. "Busy"
    /// answers are retried with backoff.
    pub async fn submit(&self, transactions: Vec<SignedTransaction>) -> Result<Vec<Outcome>, ClientError> {
        match self.expect(&Request::Submit(transactions)).await? {
            Response::Results(outcomes) => Ok(outcomes),
            other => Err(ClientError::Unexpected(format!("{other:?}"))),
        }
    }

    pub async fn query(&self, query: Query) -> Result<Answer, ClientError> {
        match self.expect(&Request::Query(query)).await? {
            Response::Answer(answer) => Ok(answer),
            other => Err(ClientError::Unexpected(format!("{other:?}"))),
        }
    }

    /// The recorded result of each id (`None`: not in the ledger), from every shard's index.
    pub async fn lookup(&self, ids: Vec<TxId>) -> Result<Vec<Option<caduceus_engine::TxResult>>, ClientError> {
        match self.expect(&Request::Lookup(ids)).await? {
            Response::Lookup(found) => Ok(found),
            other => Err(ClientError::Unexpected(format!("{other:?}"))),
        }
    }

    /// An inclusion proof up to the cluster checkpoint of the round that sealed it.
    pub async fn prove(&self, id: TxId) -> Result<Option<Proof>, ClientError> {
        match self.expect(&Request::Prove(id)).await? {
            Response::Proof(proof) => Ok(proof.map(|p| *p)),
            other => Err(ClientError::Unexpected(format!("{other:?}"))),
        }
    }

    /// Stores a record's payload in the cluster's payload store, encrypted: the content hash
    /// its `register-record` names. The client reads as a provider.
    pub async fn put_payload(
        &self,
        patient: caduceus_engine::ActorKey,
        record: u128,
        payload: Vec<u8>,
    ) -> Result<caduceus_engine::model::Hash, ClientError> {
        match self.expect(&Request::PutPayload { patient, record, payload }).await? {
            Response::Stored(hash) => Ok(hash),
            other => Err(ClientError::Unexpected(format!("{other:?}"))),
        }
    }

    /// A record's payload, read through `access` (an `access-record` or `emergency-access`
    /// signed by this client's reader), which the cluster commits and logs first.
    pub async fn read_payload(&self, access: SignedTransaction) -> Result<Vec<u8>, ClientError> {
        match self.expect(&Request::ReadPayload(access)).await? {
            Response::Payload(payload) => Ok(payload),
            _ => Err(ClientError::Unexpected("an answer that is not a payload".into())),
        }
    }

    /// The cluster's latest checkpoint: every shard's head folded into one hash.
    pub async fn checkpoint(&self) -> Result<Option<Checkpoint>, ClientError> {
        match self.expect(&Request::Checkpoint).await? {
            Response::Checkpoint(checkpoint) => Ok(checkpoint),
            other => Err(ClientError::Unexpected(format!("{other:?}"))),
        }
    }

    /// The checkpoint of one round, as the coordinator stored it.
    pub async fn checkpoint_at(&self, round: u64) -> Result<Option<Checkpoint>, ClientError> {
        match self.expect(&Request::CheckpointAt(round)).await? {
            Response::Checkpoint(checkpoint) => Ok(checkpoint),
            other => Err(ClientError::Unexpected(format!("{other:?}"))),
        }
    }

    /// The node's role and a one-line description of its health.
    pub async fn health(&self) -> Result<(String, String), ClientError> {
        match self.expect(&Request::Health).await? {
            Response::Health { role, detail } => Ok((role, detail)),
            other => Err(ClientError::Unexpected(format!("{other:?}"))),
        }
    }

    pub async fn close(self) {
        self.connection.close(0u32.into(), b"done");
        self.endpoint.wait_idle().await;
    }
}
