//! Reads made by an identified actor: every read of health data on the embedded ledger goes
//! through [`Reads`], which asks `authority::may_read` before it answers, so an embedding
//! platform cannot forget who is asking. An auditor's reads are committed on the ledger as
//! `audit-read` transactions, signed with the auditor's key, before they are answered.

use std::sync::atomic::{AtomicU64, Ordering};

use thiserror::Error;

use super::{Ledger, QueryError};
use crate::authority::{custody_holders, may_read, Subject};
use crate::block::Proof;
use crate::codec::Codec;
use crate::history::{AccessEntry, Cursor, CustodyEvent, Page};
use crate::model::{ActorKey, Hash, Operation, Role, SignedTransaction, Transaction, TxId, TxResult, UnitId};
use crate::reads::{self, Listing, PatientEntries};
use crate::routing::shard_of_actor;
use crate::signature::SigningKey;
use crate::state::{Account, Claim, Consent, Enrolment, Record};

/// Why a read was not answered.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum ReadError {
    /// The reader is not a registered actor, or was revoked.
    #[error("the reader is not a registered, unrevoked actor")]
    UnknownReader,
    /// The key given to sign an auditor's reads is not the auditor's current key.
    #[error("the signing key is not the reader's current key")]
    WrongKey,
    /// An auditor's reads are logged on the ledger, signed with its key: `Ledger::audits_as`.
    #[error("an auditor's reads are logged on the ledger: read with `Ledger::audits_as` and the auditor's key")]
    Unlogged,
    /// The reader's role may not read what the answer would reveal.
    #[error("a {role} may not read this")]
    Forbidden {
        /// The reader's role.
        role: Role,
    },
    /// An auditor's `audit-read` was not committed, so the read was not answered.
    #[error("the audit-read was not committed, so the read is not answered: {0}")]
    NotLogged(String),
    /// The read itself failed.
    #[error(transparent)]
    Query(#[from] QueryError),
}

/// An identified actor's reads of one ledger: `Ledger::reads_as` or `Ledger::audits_as`.
pub struct Reads<'a> {
    ledger: &'a Ledger,
    reader: ActorKey,
    role: Role,
    /// An auditor's key, which signs the `audit-read` of each read before it is answered.
    auditor: Option<&'a SigningKey>,
}

/// Counts this process's audit-reads, so that each has its own id (with the reader, the time
/// and the question): the ledger would answer a repeated one with its first result and log
/// nothing.
static AUDIT_READS: AtomicU64 = AtomicU64::new(0);

impl Ledger {
    /// Reads as `reader`, an actor the embedding platform has authenticated: each read is
    /// answered only if the actor's role lets it read what the answer reveals
    /// (`authority::may_read`). An auditor reads with [`Ledger::audits_as`] instead.
    pub fn reads_as(&self, reader: &ActorKey) -> Result<Reads<'_>, ReadError> {
        let role = self.reader(reader)?.role;
        if role == Role::Auditor {
            return Err(ReadError::Unlogged);
        }
        Ok(Reads { ledger: self, reader: *reader, role, auditor: None })
    }

    /// Reads as the auditor `reader`, whose current key is `key`: every read but of public facts
    /// is first committed as an `audit-read` transaction signed with `key` (naming a digest of
    /// the read and whose data it reads), so it is on the ledger, and in that actor's access
    /// report, before it is answered. Any other role reads as with [`Ledger::reads_as`].
    pub fn audits_as<'a>(&'a self, reader: &ActorKey, key: &'a SigningKey) -> Result<Reads<'a>, ReadError> {
        let actor = self.reader(reader)?;
        if crate::signature::actor_key(key) != actor.key.unwrap_or(*reader) {
            return Err(ReadError::WrongKey);
        }
        let auditor = (actor.role == Role::Auditor).then_some(key);
        Ok(Reads { ledger: self, reader: *reader, role: actor.role, auditor })
    }

    /// The reader's entry, if it is a registered, unrevoked actor.
    fn reader(&self, reader: &ActorKey) -> Result<crate::state::Actor, ReadError> {
        self.actor(reader).filter(|actor| actor.revoked_at.is_none()).ok_or(ReadError::UnknownReader)
    }
}

/// What a read names, for its audit-read's digest.
enum Asked<'k> {
    AccessReport(&'k ActorKey, Option<Cursor>, usize),
    Records(&'k ActorKey, Option<u128>, usize),
    Consents(&'k ActorKey, Option<u128>, usize),
    Record(&'k ActorKey, u128),
    Claim(&'k ActorKey, u128),
    Account(&'k ActorKey),
    Custody(&'k UnitId, Option<Cursor>, usize),
    Transaction(TxId),
    Prove(TxId),
    Enrolment(&'k ActorKey, TxId),
}

impl Asked<'_> {
    /// The bytes an audit-read's digest covers (with the reader, time and a counter).
    fn describe(&self) -> Vec<u8> {
        let mut out = Vec::new();
        let cursor = |out: &mut Vec<u8>, cursor: &Option<Cursor>| {
            out.extend_from_slice(&cursor.map_or([0xff; 12], Cursor::to_bytes));
        };
        match self {
            Asked::AccessReport(patient, before, limit) => {
                out.push(1);
                out.extend_from_slice(&patient.0);
                cursor(&mut out, before);
                out.extend_from_slice(&(*limit as u64).to_le_bytes());
            }
            Asked::Records(patient, after, limit) | Asked::Consents(patient, after, limit) => {
                out.push(if matches!(self, Asked::Records(..)) { 2 } else { 3 });
                out.extend_from_slice(&patient.0);
                out.extend_from_slice(&after.map_or([0xff; 16], u128::to_be_bytes));
                out.extend_from_slice(&(*limit as u64).to_le_bytes());
            }
            Asked::Record(patient, id) | Asked::Claim(patient, id) => {
                out.push(if matches!(self, Asked::Record(..)) { 4 } else { 5 });
                out.extend_from_slice(&patient.0);
                out.extend_from_slice(&id.to_be_bytes());
            }
            Asked::Account(owner) => {
                out.push(6);
                out.extend_from_slice(&owner.0);
            }
            Asked::Custody(unit, before, limit) => {
                out.push(7);
                out.extend_from_slice(&unit.gtin.to_le_bytes());
                out.extend_from_slice(&(unit.serial.len() as u64).to_le_bytes());
                out.extend_from_slice(unit.serial.as_bytes());
                cursor(&mut out, before);
                out.extend_from_slice(&(*limit as u64).to_le_bytes());
            }
            Asked::Transaction(id) | Asked::Prove(id) => {
                out.push(if matches!(self, Asked::Transaction(_)) { 8 } else { 9 });
                out.extend_from_slice(&id.to_be_bytes());
            }
            Asked::Enrolment(patient, study) => {
                out.push(10);
                out.extend_from_slice(&patient.0);
                out.extend_from_slice(&study.to_be_bytes());
            }
        }
        out
    }

    /// Whose data the read names, if the question names it.
    fn subject(&self) -> Option<ActorKey> {
        match self {
            Asked::AccessReport(actor, ..)
            | Asked::Records(actor, ..)
            | Asked::Consents(actor, ..)
            | Asked::Record(actor, _)
            | Asked::Claim(actor, _)
            | Asked::Account(actor)
            | Asked::Enrolment(actor, _) => Some(**actor),
            Asked::Custody(..) | Asked::Transaction(_) | Asked::Prove(_) => None,
        }
    }
}

impl Reads<'_> {
    /// The reader.
    pub fn reader(&self) -> &ActorKey {
        &self.reader
    }

    /// The reader's role.
    pub fn role(&self) -> Role {
        self.role
    }

    /// A page of a patient's access report: the patient's, or an auditor's. Newest first, at
    /// most `limit` entries before `before` (`None`: the newest), with the history's total and
    /// the cursor of the next, older page.
    ///
    /// ```
    /// use caduceus_engine::signature::{actor_key, sign, signing_key};
    /// use caduceus_engine::{Config, Ledger, Operation, Purpose, Reason, Role, Transaction, TxResult};
    ///
    /// let (operator, patient, nurse) = (signing_key([1; 32]), signing_key([2; 32]), signing_key([3; 32]));
    /// let ledger = Ledger::open_in_memory(&Config { shards: 2, genesis_operators: vec![actor_key(&operator)], operator_quorum: 1 })?;
    /// let now = caduceus_engine::ledger::system_clock()();
    /// let tx = |id, key: &caduceus_engine::signature::SigningKey, operation| {
    ///     sign(Transaction { nonce: id, signer: actor_key(key), timestamp: now, operation, key: None }, key)
    /// };
    /// let register = |actor: &caduceus_engine::signature::SigningKey, role| Operation::RegisterActor {
    ///     actor: actor_key(actor),
    ///     role,
    ///     prefixes: vec![],
    /// };
    /// ledger.submit(vec![tx(1, &operator, register(&patient, Role::Patient))?, tx(2, &operator, register(&nurse, Role::Provider))?])?;
    /// let record = Operation::RegisterRecord {
    ///     record: 10,
    ///     patient: actor_key(&patient),
    ///     content_hash: [0; 32],
    ///     resource_type: "Observation".into(),
    /// };
    /// // The nurse registers a record (so holds it), then another provider without consent tries to read it.
    /// let other = signing_key([4; 32]);
    /// ledger.submit(vec![tx(3, &operator, register(&other, Role::Provider))?, tx(4, &nurse, record)?])?;
    /// let read = Operation::AccessRecord { record: 10, patient: actor_key(&patient), purpose: Purpose::Treatment };
    /// assert_eq!(ledger.submit(vec![tx(5, &other, read)?])?, vec![TxResult::Rejected(Reason::ConsentMissing)]);
    ///
    /// // The patient reads its own report; the provider may not.
    /// let report = ledger.reads_as(&actor_key(&patient))?.access_report(&actor_key(&patient), None, 20)?;
    /// assert_eq!((report.entries.len(), report.total, report.next), (1, 1, None));
    /// assert_eq!(report.entries[0].accessor, actor_key(&other));
    /// assert!(!report.entries[0].permitted());
    /// assert!(ledger.reads_as(&actor_key(&other))?.access_report(&actor_key(&patient), None, 20).is_err());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn access_report(
        &self,
        patient: &ActorKey,
        before: Option<Cursor>,
        limit: usize,
    ) -> Result<Page<AccessEntry>, ReadError> {
        self.allow(&Subject::Patient { patient }, &Asked::AccessReport(patient, before, limit))?;
        Ok(reads::access_report(self.ledger.storage().as_ref(), patient, before, limit)?)
    }

    /// A patient's records, by id (`after` the last one seen): the patient's, or an auditor's.
    pub fn records(&self, patient: &ActorKey, after: Option<u128>, limit: usize) -> Result<Listing<Record>, ReadError> {
        self.allow(&Subject::Patient { patient }, &Asked::Records(patient, after, limit))?;
        self.patient_entries(patient, PatientEntries::Records, after, limit)
    }

    /// The consents a patient gave, by id: the patient's, or an auditor's.
    pub fn consents(
        &self,
        patient: &ActorKey,
        after: Option<u128>,
        limit: usize,
    ) -> Result<Listing<Consent>, ReadError> {
        self.allow(&Subject::Patient { patient }, &Asked::Consents(patient, after, limit))?;
        self.patient_entries(patient, PatientEntries::Consents, after, limit)
    }

    /// A record's entry: its patient's, its custodian's, or an auditor's. (Another provider
    /// reads a record through an `access-record`, checked against consent and logged.)
    pub fn record(&self, patient: &ActorKey, record: u128) -> Result<Option<Record>, ReadError> {
        let asked = Asked::Record(patient, record);
        self.log(&asked)?;
        let found = self.ledger.record(patient, record)?;
        self.found(patient, found, |record| Subject::Record(record))
    }

    /// A claim: its patient's, provider's and payer's, or an auditor's.
    pub fn claim(&self, patient: &ActorKey, claim: u128) -> Result<Option<Claim>, ReadError> {
        self.log(&Asked::Claim(patient, claim))?;
        let found = self.ledger.claim(patient, claim)?;
        self.found(patient, found, |claim| Subject::Claim(claim))
    }

    /// A patient's enrolment in a study: the patient's, the study's investigator's, or an
    /// auditor's.
    pub fn enrolment(&self, patient: &ActorKey, study: TxId) -> Result<Option<Enrolment>, ReadError> {
        self.log(&Asked::Enrolment(patient, study))?;
        let found = self.ledger.enrolment(patient, study)?;
        let investigator = self.ledger.study(study)?.map(|s| s.investigator);
        match &investigator {
            Some(investigator) => self.may(&Subject::Enrolment { patient, investigator })?,
            None => self.may(&Subject::Patient { patient })?,
        }
        Ok(found)
    }

    /// An account: its owner's, or an auditor's.
    pub fn account(&self, owner: &ActorKey) -> Result<Option<Account>, ReadError> {
        self.allow(&Subject::Account { owner }, &Asked::Account(owner))?;
        Ok(self.ledger.account(owner))
    }

    /// A page of a unit's custody trail: for the actors that have held it (as far as the page
    /// and the unit's current entry show), a regulator, or an auditor. A unit's status is
    /// anyone's: `Ledger::verify_unit`.
    pub fn custody_trace(
        &self,
        unit: &UnitId,
        before: Option<Cursor>,
        limit: usize,
    ) -> Result<Page<CustodyEvent>, ReadError> {
        self.log(&Asked::Custody(unit, before, limit))?;
        let page = reads::custody_trace(self.ledger.storage().as_ref(), unit, before, limit)?;
        let current = self.ledger.verify_unit(unit)?.state;
        let holders = custody_holders(&page.entries, current.as_ref());
        self.may(&Subject::Custody { holders: &holders })?;
        Ok(page)
    }

    /// A transaction as recorded, with its result: for the actors it names, or an auditor.
    pub fn transaction(&self, id: TxId) -> Result<Option<(SignedTransaction, TxResult)>, ReadError> {
        self.log(&Asked::Transaction(id))?;
        let found = self.ledger.transaction(id)?;
        if let Some((transaction, _)) = &found {
            self.may(&Subject::Transaction(&transaction.transaction))?;
        }
        Ok(found)
    }

    /// A transaction's inclusion proof (see `Ledger::checkpoint_at` for its checkpoint): for
    /// the actors it names, or an auditor.
    pub fn prove(&self, id: TxId) -> Result<Option<Proof>, ReadError> {
        self.log(&Asked::Prove(id))?;
        let found = self.ledger.prove(id)?;
        if let Some(proof) = &found {
            self.may(&Subject::Transaction(&proof.transaction.transaction))?;
        }
        Ok(found)
    }

    fn patient_entries<T: Codec>(
        &self,
        patient: &ActorKey,
        kind: PatientEntries,
        after: Option<u128>,
        limit: usize,
    ) -> Result<Listing<T>, ReadError> {
        let shard = shard_of_actor(patient, self.ledger.shard_count());
        Ok(reads::patient_entries(self.ledger.storage().as_ref(), shard, patient, kind, after, limit)?)
    }

    /// An entry found by a patient's id, if `subject` of it may be read; that none exists is
    /// the patient's to learn.
    fn found<T>(
        &self,
        patient: &ActorKey,
        found: Option<T>,
        subject: impl Fn(&T) -> Subject<'_>,
    ) -> Result<Option<T>, ReadError> {
        match &found {
            Some(entry) => self.may(&subject(entry))?,
            None => self.may(&Subject::Patient { patient })?,
        }
        Ok(found)
    }

    /// Decides a read whose subject the question names, before reading; logs an auditor's.
    fn allow(&self, subject: &Subject<'_>, asked: &Asked<'_>) -> Result<(), ReadError> {
        self.may(subject)?;
        self.log(asked)
    }

    fn may(&self, subject: &Subject<'_>) -> Result<(), ReadError> {
        if may_read(&self.reader, self.role, subject) {
            Ok(())
        } else {
            Err(ReadError::Forbidden { role: self.role })
        }
    }

    /// Commits an auditor's `audit-read` of `asked` (nothing for any other reader): a new
    /// transaction each time, never one the ledger holds (which it would not log again).
    fn log(&self, asked: &Asked<'_>) -> Result<(), ReadError> {
        let Some(key) = self.auditor else { return Ok(()) };
        let signing = crate::signature::actor_key(key);
        for _ in 0..4 {
            let now = (self.ledger.clock)();
            let mut message = b"caduceus.embedded-read.1".to_vec();
            message.extend_from_slice(&self.reader.0);
            message.extend_from_slice(&now.to_le_bytes());
            message.extend_from_slice(&AUDIT_READS.fetch_add(1, Ordering::Relaxed).to_le_bytes());
            message.extend_from_slice(&asked.describe());
            let read: Hash = *blake3::hash(&message).as_bytes();
            let audit = Transaction {
                nonce: u128::from_le_bytes(read[..16].try_into().expect("16 bytes")),
                signer: self.reader,
                timestamp: now,
                operation: Operation::AuditRead { read, subject: asked.subject() },
                key: (signing != self.reader).then_some(signing),
            };
            let audit = crate::signature::sign(audit, key).map_err(|e| ReadError::NotLogged(e.to_string()))?;
            // Held already (another run of this process at the same time and count): another id.
            if self.ledger.locate(audit.id())?.is_some() {
                continue;
            }
            return match self.ledger.submit(vec![audit]) {
                Ok(results) if results == [TxResult::Committed] => Ok(()),
                Ok(results) => Err(ReadError::NotLogged(format!("{results:?}"))),
                Err(e) => Err(ReadError::NotLogged(e.to_string())),
            };
        }
        Err(ReadError::NotLogged("no unused audit-read id".into()))
    }
}
