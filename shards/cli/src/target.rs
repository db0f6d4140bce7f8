//! Where `caduceus import` sends what it maps: an embedded ledger in a directory (made if it
//! holds none), or a running cluster's coordinator. Both answer the same few questions (is this
//! actor registered, which of these ids does the ledger hold), take the same batches, and store
//! a record's payload encrypted before its registration names its hash: embedded in the store
//! beside the ledger, in a cluster through the coordinator's store, put by the record's
//! custodian.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use caduceus_engine::ledger::Clock;
use caduceus_engine::model::{ActorKey, Hash};
use caduceus_engine::payload::{PayloadError, PayloadStore};
use caduceus_engine::signature::{actor_key, SigningKey};
use caduceus_engine::state::Actor;
use caduceus_engine::{Config, Ledger, SignedTransaction, TxId};
use caduceus_shards::client::Client;
use caduceus_shards::wire::{Answer, Credential, Outcome, Query, Request, Response};

/// Transactions per submitted batch.
const BATCH: usize = 1024;
/// Batches pending at once on an embedded ledger: it verifies one while it commits another.
const IN_FLIGHT: usize = 4;

/// A record's payload to store: who holds it, whose it is, its id, its bytes.
pub struct Payload<'a> {
    pub custodian: &'a SigningKey,
    pub patient: ActorKey,
    pub record: u128,
    pub bytes: &'a [u8],
}

/// An import's ledger.
pub enum Target {
    Embedded {
        ledger: Ledger,
        dir: PathBuf,
        /// The payload store beside the ledger, opened for the first record.
        store: Option<PayloadStore>,
    },
    Cluster(Box<Remote>),
}

/// A cluster's coordinator, as an import's target.
pub struct Remote {
    runtime: tokio::runtime::Runtime,
    /// Its reads signed by the operator; taken when the target is dropped, to close it.
    client: Option<Client>,
    /// The cluster's directory, beside which the import's catalogue is kept.
    dir: PathBuf,
    clock: Clock,
    /// Nonces of the custodians' signed payload requests.
    nonces: AtomicU64,
}

impl Target {
    /// The ledger in `dir`, made if it holds none, its genesis operator `operator` (the
    /// keystore's key `name`).
    pub fn embedded(dir: &Path, operator: &SigningKey, name: &str) -> Result<Self> {
        let ledger = if dir.join("CURRENT").exists() {
            Ledger::open_existing(dir).with_context(|| format!("open the ledger in {}", dir.display()))?
        } else {
            let config = Config { shards: 4, genesis_operators: vec![actor_key(operator)], operator_quorum: 1 };
            println!("a new ledger in {} (4 shards), its operator the keystore's {name:?}", dir.display());
            Ledger::open(dir, &config)?
        };
        Ok(Target::Embedded { ledger, dir: dir.to_owned(), store: None })
    }

    /// A running cluster at `target` (its CA `ca`), read as `operator` (a registered operator,
    /// which registers the import's actors); `dir` holds the catalogue.
    pub fn cluster(
        target: std::net::SocketAddr,
        ca: &Path,
        dir: &Path,
        operator: &SigningKey,
        clock: Clock,
    ) -> Result<Self> {
        let runtime = crate::runtime()?;
        let client = runtime.block_on(Client::connect(target, ca)).with_context(|| format!("connect to {target}"))?;
        let client = client.reading_as(operator.clone(), clock.clone());
        let nonces = AtomicU64::new(crate::now_ms() << 12);
        Ok(Target::Cluster(Box::new(Remote { runtime, client: Some(client), dir: dir.to_owned(), clock, nonces })))
    }

    /// Commit time as the target sees it (a cluster may run on a fixed clock).
    pub fn now(&self) -> u64 {
        match self {
            Target::Embedded { .. } => crate::now_ms(),
            Target::Cluster(remote) => (remote.clock)(),
        }
    }

    /// Where the catalogue is kept (`catalogue`): beside the ledger's directory, or the cluster's.
    pub fn dir(&self) -> &Path {
        match self {
            Target::Embedded { dir, .. } => dir,
            Target::Cluster(remote) => &remote.dir,
        }
    }

    /// A registered actor's entry.
    pub fn actor(&self, key: &ActorKey) -> Result<Option<Actor>> {
        match self {
            Target::Embedded { ledger, .. } => Ok(ledger.actor(key)),
            Target::Cluster(remote) => {
                match remote.runtime.block_on(connection(&remote.client).query(Query::Actor(*key)))? {
                    Answer::Actor(found) => Ok(found),
                    other => bail!("the coordinator answered an actor query with {other:?}"),
                }
            }
        }
    }

    /// Which of `ids` the ledger holds (recorded, whatever the result).
    pub fn held(&self, ids: &[TxId]) -> Result<Vec<bool>> {
        match self {
            Target::Embedded { ledger, .. } => {
                ids.iter().map(|id| Ok(ledger.locate(*id)?.is_some())).collect::<Result<_>>()
            }
            Target::Cluster(remote) => {
                let mut held = Vec::with_capacity(ids.len());
                for chunk in ids.chunks(BATCH) {
                    let found = remote.runtime.block_on(connection(&remote.client).lookup(chunk.to_vec()))?;
                    if found.len() != chunk.len() {
                        bail!("the coordinator answered {} of {} lookups", found.len(), chunk.len());
                    }
                    held.extend(found.iter().map(Option::is_some));
                }
                Ok(held)
            }
        }
    }

    /// Submits one phase's transactions (none depends on another of the same phase) in
    /// batches, and counts their results by name.
    pub fn submit(&self, transactions: Vec<SignedTransaction>, results: &mut BTreeMap<String, usize>) -> Result<()> {
        match self {
            Target::Embedded { ledger, .. } => {
                let mut transactions = transactions.into_iter();
                let batches = std::iter::from_fn(|| {
                    let batch: Vec<SignedTransaction> = transactions.by_ref().take(BATCH).collect();
                    (!batch.is_empty()).then_some(batch)
                });
                caduceus_loadgen::embedded::closed_loop(ledger, 0, batches, IN_FLIGHT, |_, _, answers| {
                    for result in answers {
                        *results.entry(result.as_str().to_owned()).or_default() += 1;
                    }
                })?;
            }
            Target::Cluster(remote) => {
                for batch in transactions.chunks(BATCH) {
                    for outcome in remote.runtime.block_on(connection(&remote.client).submit(batch.to_vec()))? {
                        let name = match outcome {
                            Outcome::Done(result) => result.as_str(),
                            Outcome::Unavailable => "unavailable (not acknowledged)",
                        };
                        *results.entry(name.to_owned()).or_default() += 1;
                    }
                }
            }
        }
        Ok(())
    }

    /// Stores records' payloads encrypted, durably, before their registrations: each its
    /// content hash, or why that payload alone was refused (too long, another custodian's).
    pub fn store_payloads(&mut self, payloads: &[Payload<'_>]) -> Result<Vec<Result<Hash, String>>> {
        match self {
            Target::Embedded { dir, store, .. } => {
                let store = match store {
                    Some(store) => store,
                    None => store.insert(PayloadStore::beside(dir)?),
                };
                let (mut sealed, mut hashes) = (Vec::new(), Vec::new());
                for payload in payloads {
                    match store.seal(&payload.patient, payload.record, payload.bytes) {
                        Ok(one) => {
                            hashes.push(Ok(one.hash));
                            sealed.push(one);
                        }
                        Err(error @ PayloadError::TooLong(_)) => hashes.push(Err(error.to_string())),
                        Err(error) => return Err(error.into()),
                    }
                }
                if !sealed.is_empty() {
                    store.store(&sealed)?;
                }
                Ok(hashes)
            }
            Target::Cluster(remote) => payloads
                .iter()
                .map(|payload| {
                    let put = Request::PutPayload {
                        patient: payload.patient,
                        record: payload.record,
                        payload: payload.bytes.to_vec(),
                    };
                    let client = connection(&remote.client);
                    remote.runtime.block_on(put_as(client, payload.custodian, &remote.clock, &remote.nonces, put))
                })
                .collect(),
        }
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        if let Target::Cluster(remote) = self {
            if let Some(client) = remote.client.take() {
                remote.runtime.block_on(client.close());
            }
        }
    }
}

fn connection(client: &Option<Client>) -> &Client {
    client.as_ref().expect("the connection is open until the target is dropped")
}

/// A payload put signed by its custodian (the coordinator stores a record's payload only for
/// a provider, and only the record's custodian's once it is registered); busy answers retried.
async fn put_as(
    client: &Client,
    custodian: &SigningKey,
    clock: &Clock,
    nonces: &AtomicU64,
    put: Request,
) -> Result<Result<Hash, String>> {
    let mut wait = Duration::from_millis(5);
    for _ in 0..12 {
        let signed = Credential::sign(custodian, clock(), nonces.fetch_add(1, Ordering::Relaxed), put.clone())?;
        match client.request(&signed).await? {
            Response::Stored(hash) => return Ok(Ok(hash)),
            Response::Busy => {
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(1));
            }
            Response::Error { message, .. } => return Ok(Err(message)),
            other => bail!("the coordinator answered a payload with {other:?}"),
        }
    }
    bail!("the coordinator stayed busy")
}
