//! One way to ask questions of a ledger, embedded or clustered: `query` is written once
//! against [`Reader`], and each target answers it in its own way.

use std::path::Path;

use anyhow::{bail, Context, Result};
use caduceus_engine::history::{AccessEntry, Cursor, CustodyEvent, Page};
use caduceus_engine::model::{ActorKey, Hash, UnitId};
use caduceus_engine::reads::Listing;
use caduceus_engine::signature::SigningKey;
use caduceus_engine::state::{Account, Claim, Consent, Enrolment, ProviderCredential, Record, Study};
use caduceus_engine::{Checkpoint, Ledger, Proof, Reads, TxId, UnitVerification};
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
    fn record(&self, patient: &ActorKey, record: u128) -> Result<Option<Record>>;
    /// A patient's records, by id, after `after`.
    fn records(&self, patient: &ActorKey, after: Option<u128>, limit: u32) -> Result<Listing<Record>>;
    /// The consents a patient gave, by id, after `after`.
    fn consents(&self, patient: &ActorKey, after: Option<u128>, limit: u32) -> Result<Listing<Consent>>;
    fn account(&self, owner: &ActorKey) -> Result<Option<Account>>;
    /// A clinical study: public.
    fn study(&self, study: TxId) -> Result<Option<Study>>;
    /// A patient's enrolment in a study: the patient's and the investigator's.
    fn enrolment(&self, patient: &ActorKey, study: TxId) -> Result<Option<Enrolment>>;
    /// A provider's credential: public.
    fn credential(&self, credential: TxId) -> Result<Option<ProviderCredential>>;
    /// A transaction's proof with the checkpoint it leads to.
    fn proof(&self, id: TxId) -> Result<Option<(Proof, Checkpoint)>>;
    fn checkpoint(&self) -> Result<Option<Checkpoint>>;
    fn totals(&self) -> Result<Totals>;
}

/// A ledger in a data directory, opened in this process, read as one actor: the embedded
/// ledger, like a cluster, answers reads of health data only to an identified actor, and
/// only what that actor may read.
pub struct Embedded {
    pub ledger: Ledger,
    /// Who reads, and the key that signs its reads' audit-reads if it is an auditor.
    reader: Option<(ActorKey, Option<SigningKey>)>,
}

impl Embedded {
    /// Opens the ledger in `dir`, to be read as the actor of `key` (`--as`), if given.
    pub fn open(dir: &Path, key: Option<SigningKey>) -> Result<Self> {
        let ledger = Ledger::open_existing(dir).with_context(|| format!("open the ledger in {}", dir.display()))?;
        let reader = key.map(|key| (caduceus_engine::signature::actor_key(&key), Some(key)));
        Ok(Self { ledger, reader })
    }

    /// An open ledger, read by no one yet (`read_as`).
    pub fn new(ledger: Ledger) -> Self {
        Self { ledger, reader: None }
    }

    /// Reads from now on as `actor`, an actor that is not an auditor (whose reads are signed).
    pub fn read_as(&mut self, actor: ActorKey) {
        self.reader = Some((actor, None));
    }

    fn reads(&self) -> Result<Reads<'_>> {
        Ok(match &self.reader {
            None => bail!("this read is for an identified actor: ask as one (`--as NAME`, a keystore key)"),
            Some((actor, Some(key))) => self.ledger.audits_as(actor, key)?,
            Some((actor, None)) => self.ledger.reads_as(actor)?,
        })
    }
}

impl Reader for Embedded {
    fn access_report(&self, patient: &ActorKey, before: Option<Cursor>, limit: u32) -> Result<Page<AccessEntry>> {
        Ok(self.reads()?.access_report(patient, before, limit as usize)?)
    }
    fn unit(
        &self,
        unit: &UnitId,
        before: Option<Cursor>,
        limit: u32,
    ) -> Result<(UnitVerification, Page<CustodyEvent>)> {
        Ok((self.ledger.verify_unit(unit)?, self.reads()?.custody_trace(unit, before, limit as usize)?))
    }
    fn claim(&self, patient: &ActorKey, claim: TxId) -> Result<Option<Claim>> {
        Ok(self.reads()?.claim(patient, claim)?)
    }
    fn record(&self, patient: &ActorKey, record: u128) -> Result<Option<Record>> {
        Ok(self.reads()?.record(patient, record)?)
    }
    fn records(&self, patient: &ActorKey, after: Option<u128>, limit: u32) -> Result<Listing<Record>> {
        Ok(self.reads()?.records(patient, after, limit as usize)?)
    }
    fn consents(&self, patient: &ActorKey, after: Option<u128>, limit: u32) -> Result<Listing<Consent>> {
        Ok(self.reads()?.consents(patient, after, limit as usize)?)
    }
    fn account(&self, owner: &ActorKey) -> Result<Option<Account>> {
        Ok(self.reads()?.account(owner)?)
    }
    fn study(&self, study: TxId) -> Result<Option<Study>> {
        Ok(self.ledger.study(study)?)
    }
    fn enrolment(&self, patient: &ActorKey, study: TxId) -> Result<Option<Enrolment>> {
        Ok(self.reads()?.enrolment(patient, study)?)
    }
    fn credential(&self, credential: TxId) -> Result<Option<ProviderCredential>> {
        Ok(self.ledger.credential(credential)?)
    }
    fn proof(&self, id: TxId) -> Result<Option<(Proof, Checkpoint)>> {
        let Some(proof) = self.reads()?.prove(id)? else { return Ok(None) };
        let checkpoint = self.ledger.checkpoint_at(proof.checkpoint_round)?.context("its checkpoint is stored")?;
        Ok(Some((proof, checkpoint)))
    }
    fn checkpoint(&self) -> Result<Option<Checkpoint>> {
        Ok(self.ledger.checkpoint())
    }
    fn totals(&self) -> Result<Totals> {
        let (balances, funded) = self.ledger.fund_totals();
        Ok((self.ledger.state_hash()?, balances, funded))
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
    fn record(&self, patient: &ActorKey, record: u128) -> Result<Option<Record>> {
        Ok(expect!(self.ask(Query::Record(*patient, record))?, Answer::Record))
    }
    fn records(&self, patient: &ActorKey, after: Option<u128>, limit: u32) -> Result<Listing<Record>> {
        Ok(expect!(self.ask(Query::Records(*patient, after, limit))?, Answer::Records))
    }
    fn consents(&self, patient: &ActorKey, after: Option<u128>, limit: u32) -> Result<Listing<Consent>> {
        Ok(expect!(self.ask(Query::Consents(*patient, after, limit))?, Answer::Consents))
    }
    fn account(&self, owner: &ActorKey) -> Result<Option<Account>> {
        Ok(expect!(self.ask(Query::Account(*owner))?, Answer::Account))
    }
    fn study(&self, study: TxId) -> Result<Option<Study>> {
        Ok(expect!(self.ask(Query::Study(study))?, Answer::Study))
    }
    fn enrolment(&self, patient: &ActorKey, study: TxId) -> Result<Option<Enrolment>> {
        Ok(expect!(self.ask(Query::Enrolment(*patient, study))?, Answer::Enrolment))
    }
    fn credential(&self, credential: TxId) -> Result<Option<ProviderCredential>> {
        Ok(expect!(self.ask(Query::Credential(credential))?, Answer::Credential))
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
