//! The shard state machine: the rules of every operation, applied to one
//! shard's state in a deterministic order.
//!
//! It is sans-IO: the driver passes in `now`, the transactions and (on load)
//! the stored entries, and takes out results, sealed blocks and the writes to
//! persist. It never reads a clock, a random source or a disk, and it never
//! spawns a thread: the same calls in the same order give the same bytes.
//!
//! Every transaction runs as *prepare* (check the rules, compute the effects,
//! lock what a concurrent transaction must not change) then *finish* (apply or
//! drop the effects). A single-shard transaction does both at once; a
//! cross-shard one is prepared on each participant and finished once the
//! coordinator has decided.

mod actors;
mod claims;
mod credentials;
mod records;
mod research;
mod supply;

use crate::block::{merkle_root, BlockBody, BlockHeader};
use crate::codec::Codec;
use crate::coordinator::Message;
use crate::history::{AccessEntry, CustodyEvent, TxLocation};
use crate::layout;
use crate::limits::{
    AMOUNT_MAX, BALANCE_MAX, CLOCK_SKEW_MS, CONSENTS_PER_GRANTEE_MAX, FUNDED_MAX, TRANSACTION_VALIDITY_MS,
};
use crate::model::{
    gtin_within_prefix, valid_gs1_prefix, ActorKey, Adjudication, Family, Hash, Operation, Purpose, Reason, Role,
    SignedTransaction, Timestamp, Transaction, TxId, TxResult, UnitId, DENIAL_REASON_MAX,
};
use crate::routing::{participants, shard_of_actor};
use crate::state::{
    Actor, Claim, ClaimStatus, Consent, Enrolment, Map, ProviderCredential, Recall, Record, Set, State, StateKey,
    Study, Unit, UnitStatus,
};

/// A change to state, computed when a transaction is prepared and applied when it finishes.
#[derive(Clone, Debug)]
enum Effect {
    PutActor(ActorKey, Actor),
    PutRecord(u128, Record),
    PutConsent(u128, Consent),
    PutClaim(u128, Claim),
    PutClaimKey(Hash, u128),
    /// Adds to an account's balance; `funding` also adds to what it was funded with.
    Credit {
        account: ActorKey,
        amount: u64,
        funding: bool,
    },
    Debit {
        account: ActorKey,
        amount: u64,
    },
    PutUnit(UnitId, Unit),
    PutRecall(u64, String, Recall),
    PutStudy(TxId, Study),
    /// A patient's enrolment in a study: patient, study.
    PutEnrolment(ActorKey, TxId, Enrolment),
    PutCredential(TxId, ProviderCredential),
}

/// A prepared transaction: its effects, the keys it holds, the funds it holds.
#[derive(Debug, Default)]
struct Plan {
    effects: Vec<Effect>,
    locks: Vec<StateKey>,
    reserve: Option<(ActorKey, u64)>,
}

/// What sealing a block hands the driver to persist.
#[derive(Debug)]
pub struct SealedBlock {
    pub header: BlockHeader,
    pub body: BlockBody,
    /// State entries changed by the block: `None` deletes.
    pub state_writes: Vec<(Vec<u8>, Option<Vec<u8>>)>,
    /// History and index entries the block adds (access log, custody trail, tx index).
    pub index_writes: Vec<(Vec<u8>, Vec<u8>)>,
}

impl SealedBlock {
    /// Appends what storing the block writes: header, body, state and history entries. They
    /// move into `writes` rather than being copied.
    pub fn into_writes(self, writes: &mut Vec<(Vec<u8>, Option<Vec<u8>>)>) {
        let header = &self.header;
        writes.push((layout::header(header.shard, header.height), Some(header.encode().expect("fixed size"))));
        writes.push((layout::body(header.shard, header.height), Some(self.body.encode().expect("bounded block"))));
        writes.extend(self.state_writes);
        writes.extend(self.index_writes.into_iter().map(|(k, v)| (k, Some(v))));
    }
}

/// A participant's answer to a coordinator message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reply {
    Votes { round: u64, shard: u32, votes: Vec<Result<(), Reason>> },
    Acknowledged { round: u64, shard: u32 },
}

/// One shard's state machine.
pub struct Shard {
    id: u32,
    shard_count: u32,
    state: State,
    height: u64,
    head: Hash,
    last_time: Timestamp,
    now: Timestamp,
    /// Cross-shard transactions prepared and awaiting a decision, with this shard's plan if it voted yes.
    prepared: Map<TxId, (SignedTransaction, Result<Plan, Reason>)>,
    locked: Set<StateKey>,
    reserved: Map<ActorKey, u64>,
    /// Running sums over this shard's accounts, for the conservation check.
    balance_total: u128,
    funded_total: u128,
    entries: Vec<(SignedTransaction, TxResult)>,
    /// Results of the transactions in the block being built, so a late or
    /// repeated prepare finds its transaction finished instead of starting it again.
    recorded: Map<TxId, TxResult>,
    dirty: Set<StateKey>,
    index_writes: Vec<(Vec<u8>, Vec<u8>)>,
    /// How many operators must agree to add an operator.
    operator_quorum: u32,
}

type Check<T = ()> = Result<T, Reason>;

/// The civil date (YYYYMMDD) of a timestamp, by Howard Hinnant's algorithm.
pub fn date_of(time: Timestamp) -> u32 {
    let days = (time / 86_400_000) as i64 + 719_468;
    let era = days.div_euclid(146_097);
    let day_of_era = days.rem_euclid(146_097);
    let year_of_era = (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_index + 2) / 5 + 1;
    let month = if month_index < 10 { month_index + 3 } else { month_index - 9 };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year * 10_000 + month * 100 + day) as u32
}

/// Midnight UTC of a civil date (YYYYMMDD), as a timestamp; the inverse of `date_of`.
pub fn timestamp_of(date: u32) -> Timestamp {
    let (year, month, day) = (i64::from(date / 10_000), i64::from(date / 100 % 100), i64::from(date % 100));
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year.rem_euclid(400);
    let day_of_year = (153 * (if month > 2 { month - 3 } else { month + 9 }) + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    let days = era * 146_097 + day_of_era - 719_468;
    (days.max(0) as u64) * 86_400_000
}

/// Whether a YYYYMMDD date is one: what an intake checks of a claim's service date before it
/// commits to it (`commitment::claim_commitment`).
pub fn valid_date(date: u32) -> bool {
    let (year, month, day) = (date / 10_000, date / 100 % 100, date % 100);
    let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
    let days = match month {
        2 if leap => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    };
    date >= 1900_01_01 && (1..=12).contains(&month) && (1..=days).contains(&day)
}

/// What admission reads of a transaction (`Shard::admit_parts`), with its id and body digest:
/// what the cluster's coordinator sends every shard before a round, instead of the whole
/// transaction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Admission {
    pub id: TxId,
    pub digest: Hash,
    pub signer: ActorKey,
    pub key: Option<ActorKey>,
    pub kind: crate::model::OperationKind,
    pub timestamp: Timestamp,
}

impl Admission {
    /// A signed transaction's admission entry.
    pub fn of(signed: &SignedTransaction) -> Self {
        let t = &signed.transaction;
        Self {
            id: signed.id(),
            digest: *signed.digest(),
            signer: t.signer,
            key: t.key,
            kind: t.operation.kind(),
            timestamp: t.timestamp,
        }
    }
}

impl Codec for Admission {
    fn encode_into(&self, e: &mut crate::codec::Encoder) -> Result<(), crate::codec::EncodeError> {
        e.u128(self.id);
        e.array(&self.digest);
        e.array(&self.signer.0);
        e.bool(self.key.is_some());
        if let Some(key) = &self.key {
            e.array(&key.0);
        }
        e.u8(self.kind.code());
        e.u64(self.timestamp);
        Ok(())
    }
    fn decode_from(d: &mut crate::codec::Decoder<'_>) -> Result<Self, crate::codec::DecodeError> {
        Ok(Self {
            id: d.u128()?,
            digest: d.array()?,
            signer: ActorKey(d.array()?),
            key: if d.bool("key")? { Some(ActorKey(d.array()?)) } else { None },
            kind: {
                let tag = d.u8()?;
                crate::model::OperationKind::from_code(tag)
                    .ok_or(crate::codec::DecodeError::UnknownTag { field: "operation", tag })?
            },
            timestamp: d.u64()?,
        })
    }
}

/// Sum of balances and of funding over all shards; equal whenever no payment is in flight.
pub fn fund_totals(shards: &[Shard]) -> (u128, u128) {
    shards.iter().map(Shard::fund_totals).fold((0, 0), |(b, f), (sb, sf)| (b + sb, f + sf))
}

impl Shard {
    /// A shard resumed from stored state and its head block.
    pub fn restore(id: u32, shard_count: u32, state: State, height: u64, head: Hash, last_time: Timestamp) -> Self {
        assert!(id < shard_count, "shard id within the shard count");
        let (balance_total, funded_total) = state
            .accounts
            .values()
            .fold((0u128, 0u128), |(b, f), a| (b + u128::from(a.balance), f + u128::from(a.funded)));
        Self {
            balance_total,
            funded_total,
            id,
            shard_count,
            state,
            height,
            head,
            last_time,
            now: last_time,
            prepared: Map::default(),
            locked: Set::default(),
            reserved: Map::default(),
            entries: Vec::new(),
            recorded: Map::default(),
            dirty: Set::default(),
            index_writes: Vec::new(),
            operator_quorum: 1,
        }
    }

    /// The ledger's operator quorum (`Genesis::quorum`): how many operators add an operator.
    pub fn with_quorum(mut self, quorum: u32) -> Self {
        self.operator_quorum = quorum;
        self
    }

    pub fn id(&self) -> u32 {
        self.id
    }
    pub fn height(&self) -> u64 {
        self.height
    }
    pub fn head(&self) -> Hash {
        self.head
    }
    pub fn state(&self) -> &State {
        &self.state
    }
    /// For the ledger's state cache, between rounds only: loads and evictions never change
    /// what the state machine would read.
    pub(crate) fn state_mut(&mut self) -> &mut State {
        &mut self.state
    }
    /// Transactions prepared and not yet finished.
    pub fn in_doubt(&self) -> usize {
        self.prepared.len()
    }

    /// The time of the last sealed block.
    pub fn last_time(&self) -> Timestamp {
        self.last_time
    }

    /// Starts a block at commit time `now`, which never goes back.
    pub fn begin(&mut self, now: Timestamp) {
        assert!(self.entries.is_empty() && self.prepared.is_empty(), "a block begins empty");
        assert!(now >= self.last_time, "commit time never goes back");
        self.now = now;
    }

    /// Runs a transaction that touches only this shard, and records it (unless it is refused:
    /// `Reason::is_refusal`).
    pub fn execute(&mut self, transaction: &SignedTransaction) -> TxResult {
        let result = match self.check(transaction) {
            Ok(plan) => {
                self.apply(plan);
                TxResult::Committed
            }
            Err(reason) => TxResult::Rejected(reason),
        };
        // A single-shard transaction's only participant is this shard.
        if result.is_recorded() {
            self.record(transaction, result, true);
        }
        result
    }

    /// Phase one of a cross-shard transaction: checks this shard's part,
    /// locks its keys and reserves its funds. `Ok` is a vote to commit.
    pub fn prepare(&mut self, transaction: &SignedTransaction) -> Result<(), Reason> {
        assert!(!self.prepared.contains_key(&transaction.id()), "a transaction is prepared once");
        let verdict = self.check(transaction);
        if let Ok(plan) = &verdict {
            for key in &plan.locks {
                assert!(self.locked.insert(key.clone()), "checked keys are unlocked");
            }
            if let Some((account, amount)) = plan.reserve {
                *self.reserved.entry(account).or_default() += amount;
            }
        }
        let vote = verdict.as_ref().map(|_| ()).map_err(|reason| *reason);
        self.prepared.insert(transaction.id(), (transaction.clone(), verdict));
        vote
    }

    /// Phase two: applies (on commit) or drops (on abort) what was prepared,
    /// and records the transaction with the coordinator's decision.
    pub fn finish(&mut self, id: TxId, result: TxResult) {
        let (transaction, plan) = self.prepared.remove(&id).expect("a decided transaction was prepared here");
        // A transaction refused before the rules (every participant refuses it alike) is not
        // recorded, whatever the decision says (a presumed abort names no reason).
        let refused = matches!(&plan, Err(reason) if reason.is_refusal());
        match plan {
            Ok(plan) => {
                for key in &plan.locks {
                    self.locked.remove(key);
                }
                if let Some((account, amount)) = plan.reserve {
                    let reserved = self.reserved.get_mut(&account).expect("reservation exists");
                    *reserved -= amount;
                    if *reserved == 0 {
                        self.reserved.remove(&account);
                    }
                }
                if result.is_committed() {
                    self.apply(plan);
                }
            }
            Err(_) => assert!(!result.is_committed(), "a transaction this shard refused never commits"),
        }
        if result.is_recorded() && !refused {
            let indexed_here = participants(&transaction.transaction, self.shard_count)[0] == self.id;
            self.record(&transaction, result, indexed_here);
        }
    }

    /// Handles one coordinator message: the participant's half of two-phase commit.
    pub fn handle(&mut self, message: Message) -> Reply {
        match message {
            Message::Prepare { round, shard, transactions } => {
                assert_eq!(shard, self.id, "message delivered to its shard");
                // A repeated prepare gets the vote already given; a late one, after the
                // decision, gets the decision's outcome and prepares nothing.
                let votes = transactions
                    .iter()
                    .map(|t| match self.recorded(t.id()) {
                        Some(TxResult::Committed) => Ok(()),
                        Some(TxResult::Rejected(reason)) => Err(reason),
                        None if self.prepared.contains_key(&t.id()) => self.vote_of(t.id()),
                        None => self.prepare(t),
                    })
                    .collect();
                Reply::Votes { round, shard, votes }
            }
            Message::Decide { round, shard, decisions } => {
                assert_eq!(shard, self.id, "message delivered to its shard");
                for (id, result) in decisions {
                    // A repeated decision finds nothing prepared: it was applied already.
                    if self.prepared.contains_key(&id) {
                        self.finish(id, result);
                    }
                }
                Reply::Acknowledged { round, shard }
            }
        }
    }

    fn vote_of(&self, id: TxId) -> Result<(), Reason> {
        self.prepared[&id].1.as_ref().map(|_| ()).map_err(|reason| *reason)
    }

    /// Seals the block begun by `begin`, or returns `None` if it holds nothing.
    pub fn seal(&mut self, round: u64) -> Option<SealedBlock> {
        assert!(self.prepared.is_empty(), "no transaction is in doubt when a block is sealed");
        if self.entries.is_empty() {
            return None;
        }
        self.recorded.clear();
        // The next block starts with room for as many entries as this one had: blocks of a
        // steady load are alike, and growing these vectors push by push is wasted work.
        let room = self.entries.len();
        let body = BlockBody { entries: std::mem::replace(&mut self.entries, Vec::with_capacity(room)) };
        let header = BlockHeader {
            shard: self.id,
            height: self.height + 1,
            round,
            previous: self.head,
            time: self.now,
            count: body.entries.len() as u32,
            transactions_root: merkle_root(&body.transaction_leaves()),
            results_root: merkle_root(&body.result_leaves()),
        };
        self.height = header.height;
        self.head = header.hash();
        self.last_time = self.now;
        // In no particular order: storage sorts a write set before it writes it.
        let state = &self.state;
        let id = self.id;
        let state_writes = self.dirty.drain().map(|key| (layout::state(id, &key), state.value(&key))).collect();
        let index_room = self.index_writes.len();
        let index_writes = std::mem::replace(&mut self.index_writes, Vec::with_capacity(index_room));
        Some(SealedBlock { header, body, state_writes, index_writes })
    }

    /// Appends a finished transaction to the block and writes its history entries;
    /// `indexed_here` when this shard is the one that keeps its transaction index entry
    /// (its first participant).
    fn record(&mut self, transaction: &SignedTransaction, result: TxResult, indexed_here: bool) {
        let index = self.entries.len() as u32;
        let height = self.height + 1;
        let t = &transaction.transaction;
        if indexed_here {
            let location = TxLocation { shard: self.id, height, index, result, digest: *transaction.digest() };
            self.index_writes.push((layout::transaction(transaction.id()), location.encode().expect("fixed size")));
        }
        // Logged in an actor's report: an access to a patient's record, permitted or not, and an
        // erasure of it, in the patient's; an auditor's read in the report of the actor whose
        // data it reads. (owner, record, purpose, erasure, audit)
        let held = |patient: &ActorKey, record: &u128| self.state.records.contains_key(&(*patient, *record));
        let logged = match &t.operation {
            Operation::AccessRecord { record, patient, purpose } if held(patient, record) => {
                Some((*patient, *record, Some(*purpose), false, false))
            }
            Operation::EmergencyAccess { record, patient, .. } if held(patient, record) => {
                Some((*patient, *record, None, false, false))
            }
            Operation::EraseRecord { record, patient } if held(patient, record) => {
                Some((*patient, *record, None, true, false))
            }
            Operation::AuditRead { subject: Some(subject), .. } => Some((*subject, 0, None, false, true)),
            _ => None,
        };
        if let Some((owner, record, purpose, erasure, audit)) = logged {
            let entry = AccessEntry {
                transaction: transaction.id(),
                record,
                accessor: t.signer,
                purpose,
                time: self.now,
                result,
                break_glass: purpose.is_none() && !erasure && !audit,
                erasure,
                audit,
            };
            self.index_writes.push((layout::access(&owner, height, index), entry.encode().expect("bounded")));
        }
        match &t.operation {
            Operation::CommissionUnit { unit, .. }
            | Operation::ShipUnit { unit, .. }
            | Operation::ReceiveUnit { unit }
            | Operation::DispenseUnit { unit, .. }
            | Operation::DecommissionUnit { unit, .. }
                if self.state.units.contains_key(unit) =>
            {
                let counterparty = match &t.operation {
                    Operation::ShipUnit { to, .. } => Some(*to),
                    _ => None,
                };
                let event = CustodyEvent {
                    transaction: transaction.id(),
                    event: t.operation.name().to_owned(),
                    actor: t.signer,
                    counterparty,
                    time: self.now,
                    result,
                };
                self.index_writes.push((layout::custody(unit, height, index), event.encode().expect("bounded")));
            }
            _ => {}
        }
        self.recorded.insert(transaction.id(), result);
        self.entries.push((transaction.clone(), result));
    }

    /// The result of a transaction finished in the block being built.
    pub fn recorded(&self, id: TxId) -> Option<TxResult> {
        self.recorded.get(&id).copied()
    }

    fn apply(&mut self, plan: Plan) {
        for effect in plan.effects {
            let key = match effect {
                Effect::PutActor(key, actor) => {
                    self.state.actors.insert(key, actor);
                    StateKey::Actor(key)
                }
                Effect::PutRecord(id, record) => {
                    let patient = record.patient;
                    self.state.records.insert((patient, id), record);
                    StateKey::Record(patient, id)
                }
                Effect::PutConsent(id, consent) => {
                    let patient = consent.patient;
                    // A new consent joins its grantee's index (resident: the grant loaded it); a
                    // changed one (a revocation) is already listed there. Either way the index,
                    // which holds a copy of each of its consents, is written again.
                    if !self.state.consents.contains_key(&(patient, id)) {
                        let ids = self.state.consent_index.entry((patient, consent.grantee)).or_default();
                        if let Err(position) = ids.binary_search(&id) {
                            ids.insert(position, id);
                        }
                    } else {
                        let listed = self.state.consent_index.get(&(patient, consent.grantee));
                        assert!(
                            listed.is_some_and(|ids| ids.binary_search(&id).is_ok()),
                            "a changed consent's index is resident and lists it"
                        );
                    }
                    self.dirty.insert(StateKey::ConsentIndex(patient, consent.grantee));
                    self.state.consents.insert((patient, id), consent);
                    StateKey::Consent(patient, id)
                }
                Effect::PutClaim(id, claim) => {
                    let patient = claim.patient;
                    self.state.claims.insert((patient, id), claim);
                    StateKey::Claim(patient, id)
                }
                Effect::PutClaimKey(hash, id) => {
                    self.state.claim_keys.insert(hash, id);
                    StateKey::ClaimKey(hash)
                }
                Effect::Credit { account, amount, funding } => {
                    let entry = self.state.accounts.entry(account).or_default();
                    entry.balance = entry.balance.checked_add(amount).expect("credits are bounded when checked");
                    self.balance_total += u128::from(amount);
                    if funding {
                        entry.funded = entry.funded.checked_add(amount).expect("funding is bounded when checked");
                        self.funded_total += u128::from(amount);
                    }
                    StateKey::Account(account)
                }
                Effect::Debit { account, amount } => {
                    let entry = self.state.accounts.get_mut(&account).expect("debited account exists");
                    entry.balance = entry.balance.checked_sub(amount).expect("debits are covered when checked");
                    self.balance_total -= u128::from(amount);
                    StateKey::Account(account)
                }
                Effect::PutUnit(unit, entry) => {
                    self.state.units.insert(unit.clone(), entry);
                    StateKey::Unit(unit)
                }
                Effect::PutRecall(gtin, lot, recall) => {
                    self.state.recalls.insert((gtin, lot.clone()), recall);
                    StateKey::Recall(gtin, lot)
                }
                Effect::PutStudy(id, study) => {
                    self.state.studies.insert(id, study);
                    StateKey::Study(id)
                }
                Effect::PutEnrolment(patient, study, enrolment) => {
                    self.state.enrolments.insert((patient, study), enrolment);
                    StateKey::Enrolment(patient, study)
                }
                Effect::PutCredential(id, credential) => {
                    self.state.credentials.insert(id, credential);
                    StateKey::Credential(id)
                }
            };
            self.dirty.insert(key);
        }
    }

    fn role(&self, actor: &ActorKey) -> Option<Role> {
        self.state.actors.get(actor).map(|a| a.role)
    }

    fn require_signer(&self, signer: &ActorKey, key: &ActorKey, roles: &[Role]) -> Check {
        match self.state.actors.get(signer) {
            None => Err(Reason::UnknownSigner),
            Some(actor) if actor.revoked_at.is_some() => Err(Reason::SignerRevoked),
            Some(actor) if actor.key.as_ref().unwrap_or(signer) != key => Err(Reason::StaleKey),
            Some(actor) if roles.contains(&actor.role) => Ok(()),
            Some(_) => Err(Reason::RoleNotPermitted),
        }
    }

    fn require_role(&self, actor: &ActorKey, roles: &[Role], missing: Reason) -> Check {
        match self.role(actor) {
            Some(role) if roles.contains(&role) => Ok(()),
            _ => Err(missing),
        }
    }

    /// `require_role`, and the actor's registration not revoked.
    fn require_active(&self, actor: &ActorKey, roles: &[Role], missing: Reason) -> Check {
        self.require_role(actor, roles, missing)?;
        match self.state.actors.get(actor) {
            Some(found) if found.revoked_at.is_some() => Err(Reason::ActorRevoked),
            _ => Ok(()),
        }
    }

    fn unlocked(&self, key: &StateKey) -> Check {
        if self.locked.contains(key) {
            Err(Reason::KeyLocked)
        } else {
            Ok(())
        }
    }

    fn is_local(&self, actor: &ActorKey) -> bool {
        shard_of_actor(actor, self.shard_count) == self.id
    }

    /// The rules: checks a transaction's part on this shard against the
    /// current state and returns its effects, or the reason it is rejected.
    /// Each family's rules live in their own module.
    fn check(&self, transaction: &SignedTransaction) -> Check<Plan> {
        let t = &transaction.transaction;
        self.admit(t, self.now)?;
        let mut plan = Plan::default();
        match t.operation.kind().family() {
            Family::Actors => self.check_actors(t, &mut plan)?,
            Family::Records => self.check_records(t, transaction.id(), &mut plan)?,
            Family::Claims => self.check_claims(t, transaction.id(), &mut plan)?,
            Family::Supply => self.check_supply(t, &mut plan)?,
            Family::Research => self.check_research(t, transaction.id(), &mut plan)?,
            Family::Credentials => self.check_credentials(t, transaction.id(), &mut plan)?,
        }
        Ok(plan)
    }

    /// Whether a transaction may reach the rules at commit time `now`: signed within its
    /// validity window, by a registered actor of a role that may sign its kind. A transaction
    /// that may not is refused (`Reason::is_refusal`) and never recorded. Every shard holds
    /// every actor, so every shard gives the same answer.
    pub fn admit(&self, t: &Transaction, now: Timestamp) -> Check {
        self.admit_signed(&t.signer, t.verifying_key(), t.operation.kind(), t.timestamp, now)
    }

    /// `admit` on the parts of a transaction it reads, as the coordinator sends them.
    pub fn admit_parts(&self, a: &Admission, now: Timestamp) -> Check {
        self.admit_signed(&a.signer, a.key.as_ref().unwrap_or(&a.signer), a.kind, a.timestamp, now)
    }

    fn admit_signed(
        &self,
        signer: &ActorKey,
        key: &ActorKey,
        kind: crate::model::OperationKind,
        signed: Timestamp,
        now: Timestamp,
    ) -> Check {
        if now > signed.saturating_add(TRANSACTION_VALIDITY_MS) {
            return Err(Reason::Expired);
        }
        if signed > now.saturating_add(CLOCK_SKEW_MS) {
            return Err(Reason::NotYetValid);
        }
        self.require_signer(signer, key, kind.signer_roles())
    }

    /// Sum of balances and of funding over this shard's accounts, kept as they change.
    pub fn fund_totals(&self) -> (u128, u128) {
        (self.balance_total, self.funded_total)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A one-shard state machine with a payer, a provider and a patient whose accounts are
    /// set as given, and an approved claim of `approved` cents to pay.
    fn at_the_edge(payer: crate::state::Account, provider_balance: u64, approved: u64) -> Shard {
        let mut state = State::default();
        for (key, role) in [([1; 32], Role::Payer), ([2; 32], Role::Provider), ([3; 32], Role::Patient)] {
            state.actors.insert(
                ActorKey(key),
                Actor { role, registered_at: 0, prefixes: Vec::new(), revoked_at: None, key: None },
            );
        }
        state.accounts.insert(ActorKey([1; 32]), payer);
        state.accounts.insert(ActorKey([2; 32]), crate::state::Account { balance: provider_balance, funded: 0 });
        let claim = Claim {
            patient: ActorKey([3; 32]),
            provider: ActorKey([2; 32]),
            payer: ActorKey([1; 32]),
            total: approved,
            duplicate_key: [0; 32],
            status: ClaimStatus::Approved { amount: approved },
            submitted_at: 0,
        };
        state.claims.insert((ActorKey([3; 32]), 9), claim);
        let mut shard = Shard::restore(0, 1, state, 0, [0; 32], 0);
        shard.begin(1_800_000_000_000);
        shard
    }

    fn run(shard: &mut Shard, id: TxId, signer: u8, operation: Operation) -> TxResult {
        let transaction = Transaction {
            nonce: id,
            signer: ActorKey([signer; 32]),
            timestamp: 1_800_000_000_000,
            operation,
            key: None,
        };
        shard.execute(&SignedTransaction::from_parts(transaction, [0; 64]).expect("a small transaction"))
    }

    #[test]
    fn amounts_at_the_edge_of_their_bounds_are_refused_as_results_never_a_panic() {
        use crate::state::Account;
        let limit = TxResult::Rejected(Reason::LimitExceeded);
        let fund = |amount| Operation::FundAccount { amount };
        // A payer's balance up to its bound, and not a cent past it.
        let mut shard = at_the_edge(Account { balance: BALANCE_MAX - 10, funded: BALANCE_MAX - 10 }, 0, 1);
        assert_eq!(run(&mut shard, 1, 1, fund(11)), limit);
        assert_eq!(run(&mut shard, 2, 1, fund(10)), TxResult::Committed);
        assert_eq!(shard.state().accounts.get(&ActorKey([1; 32])).unwrap().balance, BALANCE_MAX);
        // Lifetime funding likewise, even with room in the balance; and where adding would
        // overflow the type itself.
        for funded in [FUNDED_MAX - 5, u64::MAX - 5] {
            let mut shard = at_the_edge(Account { balance: 0, funded }, 0, 1);
            assert_eq!(run(&mut shard, 3, 1, fund(10)), limit, "funded {funded}");
        }
        // A provider's balance: a payment that would take it past its bound, or past the type.
        for balance in [BALANCE_MAX - 5, u64::MAX - 5] {
            let mut shard = at_the_edge(Account { balance: 100, funded: 100 }, balance, 10);
            let pay =
                Operation::PayClaim { claim: 9, patient: ActorKey([3; 32]), provider: ActorKey([2; 32]), amount: 10 };
            assert_eq!(run(&mut shard, 4, 1, pay), limit, "provider balance {balance}");
            assert_eq!(shard.fund_totals(), (100 + u128::from(balance), 100), "nothing moved");
        }
        let mut shard = at_the_edge(Account { balance: 100, funded: 100 }, BALANCE_MAX - 10, 10);
        let pay = Operation::PayClaim { claim: 9, patient: ActorKey([3; 32]), provider: ActorKey([2; 32]), amount: 10 };
        assert_eq!(run(&mut shard, 5, 1, pay), TxResult::Committed, "up to the bound is paid");
    }

    #[test]
    fn civil_dates() {
        assert_eq!(date_of(0), 1970_01_01);
        assert_eq!(date_of(951_782_400_000), 2000_02_29);
        assert_eq!(date_of(1_767_225_599_000), 2025_12_31);
        assert!(valid_date(2024_02_29) && !valid_date(2024_13_01) && !valid_date(1899_12_31));
        assert!(valid_date(2000_02_29) && !valid_date(1900_02_29) && !valid_date(2025_02_29));
        assert!(valid_date(2025_04_30) && !valid_date(2025_04_31) && !valid_date(2025_01_00));
        for date in [1970_01_01, 2000_02_29, 2024_12_31, 2027_03_01] {
            assert_eq!(date_of(timestamp_of(date)), date);
        }
    }
}
