//! One way to ask questions of a ledger, embedded or clustered: `query` is written once
//! against [`Reader`], and each target answers it in its own way.

use std::path::Path;

use anyhow::{bail, Context, Result};
use caduceus_engine::history::{AccessEntry, Cursor, CustodyEvent, Page};
use caduceus_engine::model::{ActorKey, Hash, UnitId};
use caduceus_engine::state::{Account, Claim};
use caduceus_engine::{Checkpoint, Ledger, Proof, TxId, UnitVerification};
use caduceus_shards::client::Client;
use caduceus_shards::wire::{Answer, Query};

/// State hash, total balances and total funding.
pub type Totals = (Hash, u128, u128);

/// The questions `caduceus query` asks, of either target.
pub trait Reader {
    /// A page of a patient's access log, newest first.
    fn access_report(&self, patient: &ActorKey, before: Option<Cursor>, limit: u32) -> Result<Page<AccessEntry>>;
    /// Whether a unit is genuine, recalled or expired, and a page of its custody trail.
    fn unit(&self, unit: &UnitId, before: Option<Cursor>, limit: u32)
        -> Result<(UnitVerification, Page<CustodyEvent>)>;
    fn claim(&self, patient: &ActorKey, claim: TxId) -> Result<Option<Claim>>;
    fn account(&self, owner: &ActorKey) -> Result<Option<Account>>;
    /// A transaction's proof with the checkpoint it leads to.
    fn proof(&self, id: TxId) -> Result<Option<(Proof, Checkpoint)>>;
    fn checkpoint(&self) -> Result<Option<Checkpoint>>;
    fn totals(&self) -> Result<Totals>;
}

/// A ledger in a data directory, opened in this process.
pub struct Embedded(pub Ledger);

impl Embedded {
    pub fn open(dir: &Path) -> Result<Self> {
        Ok(Self(Ledger::open_existing(dir).with_context(|| format!("open the ledger in {}", dir.display()))?))
    }
}

impl Reader for Embedded {
    fn access_report(&self, patient: &ActorKey, before: Option<Cursor>, limit: u32) -> Result<Page<AccessEntry>> {
        Ok(self.0.access_report(patient, before, limit as usize)?)
    }
    fn unit(
        &self,
        unit: &UnitId,
        before: Option<Cursor>,
        limit: u32,
    ) -> Result<(UnitVerification, Page<CustodyEvent>)> {
        Ok((self.0.verify_unit(unit)?, self.0.custody_trace(unit, before, limit as usize)?))
    }
    fn claim(&self, patient: &ActorKey, claim: TxId) -> Result<Option<Claim>> {
        Ok(self.0.claim(patient, claim)?)
    }
    fn account(&self, owner: &ActorKey) -> Result<Option<Account>> {
        Ok(self.0.account(owner))
    }
    fn proof(&self, id: TxId) -> Result<Option<(Proof, Checkpoint)>> {
        let Some(proof) = self.0.prove(id)? else { return Ok(None) };
        let checkpoint = self.0.checkpoint_at(proof.checkpoint_round)?.context("its checkpoint is stored")?;
        Ok(Some((proof, checkpoint)))
    }
    fn checkpoint(&self) -> Result<Option<Checkpoint>> {
        Ok(self.0.checkpoint())
    }
    fn totals(&self) -> Result<Totals> {
        let (balances, funded) = self.0.fund_totals();
        Ok((self.0.state_hash()?, balances, funded))
    }
}

/// A cluster's coordinator, over QUIC.
pub struct Cluster {
    runtime: tokio::runtime::Runtime,
    /// Taken when the reader is dropped, to close the connection cleanly.
    connection: Option<Client>,
}

impl Cluster {
    /// Connects to the coordinator; reads are signed as `reader` (a cluster answers an
    /// unsigned read with health and checkpoints only).
    pub fn connect(
        target: std::net::SocketAddr,
        ca: &Path,
        reader: Option<(caduceus_engine::signature::SigningKey, caduceus_engine::ledger::Clock)>,
    ) -> Result<Self> {
        let runtime = crate::runtime()?;
        let mut client =
            runtime.block_on(Client::connect(target, ca)).with_context(|| format!("connect to {target}"))?;
        if let Some((key, clock)) = reader {
            // An auditor's reads are logged on the ledger: ask what role the key has.
            let me = caduceus_engine::signature::actor_key(&key);
            client = client.reading_as(key.clone(), clock.clone());
            let answer = runtime.block_on(client.query(Query::Actor(me)));
            if matches!(answer, Ok(Answer::Actor(Some(actor))) if actor.role == caduceus_engine::Role::Auditor) {
                client = client.auditing_as(key, clock);
            }
        }
        Ok(Self { runtime, connection: Some(client) })
    }

    fn client(&self) -> &Client {
        self.connection.as_ref().expect("the connection is open until the reader is dropped")
    }

    fn ask(&self, query: Query) -> Result<Answer> {
        Ok(self.runtime.block_on(self.client().query(query))?)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if let Some(client) = self.connection.take() {
            self.runtime.block_on(client.close());
        }
    }
}

/// The answer a query kind must get; anything else is the server's error, not ours.
macro_rules! expect {
    ($answer:expr, $variant:path) => {
        match $answer {
            $variant(found) => found,
            other => bail!("the coordinator answered {other:?}"),
        }
    };
}

impl Reader for Cluster {
    fn access_report(&self, patient: &ActorKey, before: Option<Cursor>, limit: u32) -> Result<Page<AccessEntry>> {
        Ok(expect!(self.ask(Query::AccessReport(*patient, before, limit))?, Answer::AccessReport))
    }
    fn unit(
        &self,
        unit: &UnitId,
        before: Option<Cursor>,
        limit: u32,
    ) -> Result<(UnitVerification, Page<CustodyEvent>)> {
        let Answer::Unit(state, recall) = self.ask(Query::Unit(unit.clone()))? else {
            bail!("the coordinator answered a unit query with something else")
        };
        let events = expect!(self.ask(Query::Custody(unit.clone(), before, limit))?, Answer::Custody);
        let expired = state.as_ref().is_some_and(|u| crate::now_ms() >= u.expiry);
        Ok((UnitVerification { unit: unit.clone(), state, recall, expired }, events))
    }
    fn claim(&self, patient: &ActorKey, claim: TxId) -> Result<Option<Claim>> {
        Ok(expect!(self.ask(Query::Claim(*patient, claim))?, Answer::Claim))
    }
    fn account(&self, owner: &ActorKey) -> Result<Option<Account>> {
        Ok(expect!(self.ask(Query::Account(*owner))?, Answer::Account))
    }
    fn proof(&self, id: TxId) -> Result<Option<(Proof, Checkpoint)>> {
        let Some(proof) = self.runtime.block_on(self.client().prove(id))? else { return Ok(None) };
        let checkpoint = self
            .runtime
            .block_on(self.client().checkpoint_at(proof.checkpoint_round))?
            .context("its checkpoint is stored")?;
        Ok(Some((proof, checkpoint)))
    }
    fn checkpoint(&self) -> Result<Option<Checkpoint>> {
        Ok(self.runtime.block_on(self.client().checkpoint())?)
    }
    fn totals(&self) -> Result<Totals> {
        let Answer::Totals(hash, balances, funded) = self.ask(Query::Totals)? else {
            bail!("the coordinator answered a totals query with something else")
        };
        Ok((hash, balances, funded))
    }
}
