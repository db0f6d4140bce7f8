//! Where batches go: the embedded engine in this process, or a cluster's
//! coordinator over QUIC. Both answer each batch once it is durable.

use std::sync::Arc;

use anyhow::{Context, Result};
use caduceus_engine::ledger::{ClientId, PendingBatch};
use caduceus_engine::{Ledger, SignedTransaction, TxResult};
use caduceus_shards::client::{Client, ClientError};
use caduceus_shards::wire::Outcome;

pub enum Sink {
    Embedded(Ledger),
    Cluster { runtime: tokio::runtime::Runtime, client: Arc<Client> },
}

/// A batch sent and not yet answered.
pub enum Pending {
    Embedded(PendingBatch),
    Cluster(tokio::runtime::Handle, tokio::task::JoinHandle<Result<Vec<Outcome>, ClientError>>),
}

impl Sink {
    pub fn connect(address: std::net::SocketAddr, ca: &std::path::Path) -> Result<Self> {
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build()?;
        let client = runtime.block_on(Client::connect(address, ca)).context("connect to the cluster")?;
        Ok(Sink::Cluster { runtime, client: Arc::new(client) })
    }

    pub fn submit(&self, client_id: ClientId, batch: Vec<SignedTransaction>) -> Result<Pending> {
        Ok(match self {
            Sink::Embedded(ledger) => Pending::Embedded(ledger.submit_async_from(client_id, batch)?),
            Sink::Cluster { runtime, client } => {
                let client = client.clone();
                Pending::Cluster(runtime.handle().clone(), runtime.spawn(async move { client.submit(batch).await }))
            }
        })
    }
}

impl Pending {
    /// One result per transaction; `None` where a cluster did not acknowledge it (a shard it
    /// needed was unreachable).
    pub fn wait(self) -> Result<Vec<Option<TxResult>>> {
        Ok(match self {
            Pending::Embedded(pending) => pending.wait()?.into_iter().map(Some).collect(),
            Pending::Cluster(runtime, handle) => runtime
                .block_on(handle)
                .expect("a submission does not panic")?
                .into_iter()
                .map(|outcome| match outcome {
                    Outcome::Done(result) => Some(result),
                    Outcome::Unavailable => None,
                })
                .collect(),
        })
    }
}
