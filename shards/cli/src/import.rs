//! `caduceus import`: files in the formats health systems speak, onto an embedded ledger or a
//! cluster (`target`).
//!
//! Each file is recognised from its content (or `--format`), read with its format's models
//! (`caduceus-interop`) and mapped onto transactions: its actors registered by the operator,
//! each with a keystore key (`fhir.TYPE.ID`, `x12.npi.NPI`, ...); a FHIR file's clinical
//! resources registered as records whose payloads go encrypted into the payload store beside
//! the ledger, and its consents granted or revoked by their patients; claims (X12 or FHIR)
//! submitted, and remittances funded, adjudicated and paid (claims commit under the exchange's
//! commitment key, kept in the keystore); studies registered by their investigators, subjects
//! enrolled on their research consents, and providers' credentials issued by their issuers.
//! A directory without a
//! ledger gets one, its genesis operator the keystore's operator key. Transaction ids are a
//! function of the source resource, so importing a file again changes nothing: what the ledger
//! holds already is counted, not submitted. Every file ends imported or rejected, every
//! rejection with its place and reason.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use caduceus_engine::commitment::{check_claim, claim_commitment, recipient_commitment, CommitmentKey};
use caduceus_engine::model::{
    transaction_id, ActorKey, Adjudication, ClaimLine, Disposition, Operation, Purpose, Purposes, RecallClass, Role,
    Transaction, UnitId,
};
use caduceus_engine::shard::date_of;
use caduceus_engine::signature::{actor_key, sign, SigningKey};
use caduceus_engine::{SignedTransaction, TxId};
use caduceus_interop::actors::{ActorKind, PlannedActor};
use caduceus_interop::claims::{Decision, PlannedClaim, PlannedRemittance};
use caduceus_interop::detect::{detect, Format};
use caduceus_interop::epcis;
use caduceus_interop::epcis_plan::{self, PartyRole, Step};
use caduceus_interop::fhir::{read_json, read_ndjson};
use caduceus_interop::fhir_credentials::PlannedCredential;
use caduceus_interop::fhir_plan::{plan, Plan};
use caduceus_interop::report::{Place, Rejection};
use caduceus_interop::x12_plan;

use crate::target::{Payload, Target};

/// What one import run did, over all its files.
#[derive(Default)]
pub struct Tally {
    /// Results of submitted transactions, by name (`committed`, a reason).
    pub results: BTreeMap<String, usize>,
    /// Transactions the ledger held already.
    pub already: usize,
    /// Parts of files rejected before the ledger, by reason.
    pub rejected: BTreeMap<String, usize>,
    pub files_imported: usize,
    pub files_rejected: usize,
    /// The ids of the credentials the files issued (or the ledger held), in file order.
    pub credentials: Vec<TxId>,
}

/// Imports `files` into `target`, signing with keys of `keystore` (`operator` registers the
/// actors). Prints each file's outcome and returns the tally.
pub fn run(
    target: &mut Target,
    keystore: &Path,
    operator: &SigningKey,
    format: Option<Format>,
    files: &[PathBuf],
) -> Result<Tally> {
    let mut importer = Importer {
        now: target.now(),
        target,
        keystore,
        operator,
        commitment: None,
        submitted: BTreeMap::new(),
        already: 0,
        rejections: Vec::new(),
        unmapped: BTreeMap::new(),
        kept: None,
        ids: Vec::new(),
        credentials: Vec::new(),
    };
    let mut tally = Tally::default();
    for file in files {
        let bytes = std::fs::read(file).with_context(|| format!("read {}", file.display()))?;
        let read = match format.or_else(|| detect(&bytes)) {
            Some(Format::Fhir) => read_json(&bytes).map(Read::Fhir),
            Some(Format::FhirNdjson) => read_ndjson(&bytes).map(Read::Fhir),
            Some(Format::X12) => caduceus_interop::x12::read(&bytes).map(Read::X12),
            Some(Format::EpcisJson) => epcis::read_json(&bytes).map(Read::Epcis),
            Some(Format::EpcisXml) => epcis::read_xml(&bytes).map(Read::Epcis),
            Some(Format::Ndc) => caduceus_interop::ndc::read(&bytes).map(Read::Ndc),
            None => Err(Rejection::new(Place::File, "not a FHIR, X12, EPCIS or NDC directory file")),
        };
        match read {
            Ok(Read::Fhir(read)) => {
                let plan = plan(&read);
                importer.rejections.extend(read.rejections);
                importer.fhir(plan)?;
            }
            Ok(Read::X12(read)) => {
                let plan = x12_plan::plan(&read);
                importer.rejections.extend(read.rejections);
                importer.x12(plan)?;
            }
            Ok(Read::Epcis(read)) => {
                let plan = epcis_plan::plan(&read);
                importer.rejections.extend(read.rejections);
                importer.epcis(plan)?;
            }
            Ok(Read::Ndc(read)) => {
                importer.rejections.extend(read.rejections);
                if !read.entries.is_empty() {
                    let path = crate::catalogue::keep(importer.target.dir(), &read.entries)?;
                    importer.kept = Some((read.entries.len(), path));
                }
            }
            Err(rejection) => {
                println!("{}: rejected: {rejection}", file.display());
                *tally.rejected.entry(rejection.reason).or_default() += 1;
                tally.files_rejected += 1;
                continue;
            }
        }
        importer.report(file, &mut tally);
        tally.files_imported += 1;
    }
    tally.credentials = std::mem::take(&mut importer.credentials);
    Ok(tally)
}

/// What a file held, read with its format's models.
enum Read {
    Fhir(caduceus_interop::fhir::Read),
    X12(caduceus_interop::x12::Read),
    Epcis(epcis::Read),
    Ndc(caduceus_interop::ndc::Read),
}

/// One import run's ledger, keys and clock, and what the file at hand has done so far.
struct Importer<'a> {
    target: &'a mut Target,
    keystore: &'a Path,
    operator: &'a SigningKey,
    now: u64,
    /// The exchange's commitment key, read for the run's first claim or dispense.
    commitment: Option<CommitmentKey>,
    /// Results of the file's submitted transactions, by name.
    submitted: BTreeMap<String, usize>,
    /// The file's transactions the ledger held already.
    already: usize,
    /// The file's parts rejected.
    rejections: Vec<Rejection>,
    /// The file's EPCIS events with no ledger operation, by type and business step.
    unmapped: BTreeMap<String, usize>,
    /// How many products' master data the file gave the catalogue, and where it is.
    kept: Option<(usize, PathBuf)>,
    /// What the file registered that a reader asks for by id: its studies and credentials.
    ids: Vec<String>,
    /// The run's credentials, by id.
    credentials: Vec<TxId>,
}

impl Importer<'_> {
    /// Registers the actors a file names (by the operator), and returns each one's key, read
    /// once from the keystore.
    fn actors(&mut self, actors: &[PlannedActor]) -> Result<BTreeMap<String, SigningKey>> {
        let actors = actors.iter().map(|actor| {
            let role = match actor.kind {
                ActorKind::Patient => Role::Patient,
                ActorKind::Provider => Role::Provider,
                ActorKind::Payer => Role::Payer,
                ActorKind::Issuer => Role::Issuer,
            };
            (actor.key.as_str(), role, Vec::new())
        });
        self.register(actors.collect())
    }

    /// Registers actors (key name, role, a manufacturer's prefixes) by the operator, and returns
    /// each one's key, read once from the keystore. One the ledger holds already is counted.
    fn register(&mut self, actors: Vec<(&str, Role, Vec<String>)>) -> Result<BTreeMap<String, SigningKey>> {
        let mut registrations = Vec::new();
        let mut keys = BTreeMap::new();
        let names: Vec<&str> = actors.iter().map(|(name, _, _)| *name).collect();
        let signing_keys = crate::keys::load_or_new_many(self.keystore, &names)?;
        for ((name, role, prefixes), signing) in actors.into_iter().zip(signing_keys) {
            let key = actor_key(&signing);
            keys.insert(name.to_owned(), signing);
            if let Some(held) = self.target.actor(&key)? {
                self.already += 1;
                // A supply-chain party a later file shows doing more (a distributor that
                // dispenses, a manufacturer under another prefix) is raised by the operator.
                if let Some(change) = raised(held.role, &held.prefixes, role, &prefixes) {
                    let (role, prefixes) = change;
                    let codes: Vec<&[u8]> = prefixes.iter().map(|p| p.as_bytes()).collect();
                    let nonce = nonce_of(&[&[b"role".as_slice(), &key.0, &[role.code()]], &codes[..]].concat());
                    let operation = Operation::ChangeRole { actor: key, role, prefixes };
                    registrations.push(signed(self.operator, nonce, self.now, operation)?);
                }
                continue;
            }
            let nonce = nonce_of(&[b"actor", &key.0]);
            let operation = Operation::RegisterActor { actor: key, role, prefixes };
            registrations.push(signed(self.operator, nonce, self.now, operation)?);
        }
        // New: the ledger holds none of these actors, or not in the role raised.
        self.send(registrations)?;
        Ok(keys)
    }

    /// An EPCIS document's parties, then its operations on units phase by phase (a unit's
    /// operations in the order of its events; a recall after every operation before it), and
    /// its product master data kept in the catalogue beside the ledger.
    fn epcis(&mut self, plan: epcis_plan::Plan) -> Result<()> {
        self.rejections.extend(plan.rejections);
        for (step, n) in &plan.unmapped {
            *self.unmapped.entry(step.clone()).or_default() += n;
        }
        let parties = plan.parties.iter().map(|party| {
            let role = match party.role {
                PartyRole::Manufacturer => Role::Manufacturer,
                PartyRole::Distributor => Role::Distributor,
                PartyRole::Dispenser => Role::Dispenser,
            };
            let prefixes = if role == Role::Manufacturer { party.prefixes.clone() } else { Vec::new() };
            (party.key.as_str(), role, prefixes)
        });
        let keys = self.register(parties.collect())?;
        let dispenses = plan.steps.iter().any(|s| s.step == Step::Dispense);
        let commitment_key = if dispenses { Some(self.commitment_key()?) } else { None };
        let phases = plan.steps.iter().map(|s| s.phase).chain(plan.recalls.iter().map(|r| r.phase)).max();
        for phase in 0..phases.map_or(0, |last| last + 1) {
            let mut batch = Vec::new();
            for step in plan.steps.iter().filter(|s| s.phase == phase) {
                let unit = UnitId { gtin: step.gtin, serial: step.serial.clone() };
                let operation = match &step.step {
                    Step::Commission { lot, expiry } => {
                        Operation::CommissionUnit { unit: unit.clone(), lot: lot.clone(), expiry: *expiry }
                    }
                    Step::Ship { to } => Operation::ShipUnit { unit: unit.clone(), to: actor_key(&keys[to]) },
                    Step::Receive => Operation::ReceiveUnit { unit: unit.clone() },
                    // An EPCIS event names no patient: the commitment covers the unit alone,
                    // under the exchange's key.
                    Step::Dispense => {
                        let key = commitment_key.as_ref().expect("read for a file that dispenses");
                        let recipient = recipient_commitment(key, &ActorKey([0; 32]), &unit);
                        Operation::DispenseUnit { unit: unit.clone(), recipient }
                    }
                    Step::Decommission { reason } => {
                        let reason = Disposition::parse(reason).expect("the plan names reasons the ledger knows");
                        Operation::DecommissionUnit { unit: unit.clone(), reason }
                    }
                };
                let id: [&[u8]; 5] = [
                    b"epcis",
                    step.step.name().as_bytes(),
                    &unit.gtin.to_le_bytes(),
                    unit.serial.as_bytes(),
                    step.event_time.as_bytes(),
                ];
                batch.push(self.fresh(&keys[&step.signer], &id, operation));
            }
            for recall in plan.recalls.iter().filter(|r| r.phase == phase) {
                let reason = RecallClass::parse(&recall.class).expect("the plan names classes the ledger knows");
                let operation = Operation::RecallLot { gtin: recall.gtin, lot: recall.lot.clone(), reason };
                let id: [&[u8]; 4] =
                    [b"epcis recall", &recall.gtin.to_le_bytes(), recall.lot.as_bytes(), recall.event_time.as_bytes()];
                batch.push(self.fresh(&keys[&recall.signer], &id, operation));
            }
            self.submit(batch)?;
        }
        if !plan.products.is_empty() {
            let path = crate::catalogue::keep(self.target.dir(), &crate::catalogue::of_products(&plan.products))?;
            self.kept = Some((plan.products.len(), path));
        }
        Ok(())
    }

    /// The exchange's commitment key, read from the keystore the first time a run needs it.
    fn commitment_key(&mut self) -> Result<CommitmentKey> {
        if self.commitment.is_none() {
            self.commitment = Some(commitment_key(self.keystore)?);
        }
        Ok(self.commitment.clone().expect("read above"))
    }

    /// A transaction whose id is a function of what it imports, to be signed by `key` if the
    /// ledger does not hold it (`submit`).
    fn fresh(&self, key: &SigningKey, id: &[&[u8]], operation: Operation) -> Unsigned {
        let transaction =
            Transaction { nonce: nonce_of(id), signer: actor_key(key), timestamp: self.now, operation, key: None };
        Unsigned { key: key.clone(), transaction }
    }

    /// Signs and submits what the ledger does not hold yet; what it holds is counted.
    fn submit(&mut self, transactions: Vec<Unsigned>) -> Result<()> {
        let ids: Vec<TxId> =
            transactions.iter().map(|t| transaction_id(&t.transaction.signer, t.transaction.nonce)).collect();
        let held = self.target.held(&ids)?;
        let mut fresh = Vec::new();
        for (unsigned, held) in transactions.into_iter().zip(held) {
            if held {
                self.already += 1;
            } else {
                fresh.push(sign(unsigned.transaction, &unsigned.key)?);
            }
        }
        self.send(fresh)
    }

    /// Submits transactions known to be new.
    fn send(&mut self, transactions: Vec<SignedTransaction>) -> Result<()> {
        self.target.submit(transactions, &mut self.submitted)
    }

    /// Prints what the file did and adds it to the tally.
    fn report(&mut self, file: &Path, tally: &mut Tally) {
        let submitted = std::mem::take(&mut self.submitted);
        let rejections = std::mem::take(&mut self.rejections);
        let already = std::mem::take(&mut self.already);
        let count: usize = submitted.values().sum();
        let committed = submitted.get("committed").copied().unwrap_or(0);
        println!(
            "{}: {count} transactions submitted ({committed} committed), {already} already on the ledger, {} parts rejected",
            file.display(),
            rejections.len()
        );
        for (result, n) in submitted.iter().filter(|(r, _)| *r != "committed") {
            println!("  {n} {result}");
        }
        for line in std::mem::take(&mut self.ids) {
            println!("  {line}");
        }
        if let Some((products, path)) = self.kept.take() {
            println!("  {products} products' master data kept in {}", path.display());
        }
        for (step, n) in std::mem::take(&mut self.unmapped) {
            println!("  {n} events with no ledger operation: {step}");
        }
        for rejection in &rejections {
            println!("  rejected {rejection}");
            *tally.rejected.entry(reason_class(&rejection.reason)).or_default() += 1;
        }
        for (result, n) in submitted {
            *tally.results.entry(result).or_default() += n;
        }
        tally.already += already;
    }

    /// An X12 file's claims and remittances.
    fn x12(&mut self, plan: x12_plan::Plan) -> Result<()> {
        self.rejections.extend(plan.rejections);
        let keys = self.actors(&plan.actors)?;
        self.claims(&keys, &plan.claims, &plan.remittances)
    }

    /// Claims submitted by their providers, then each remittance: its payer funded with its
    /// payments, the claims adjudicated, then paid.
    fn claims(
        &mut self,
        keys: &BTreeMap<String, SigningKey>,
        planned: &[PlannedClaim],
        remittances: &[PlannedRemittance],
    ) -> Result<()> {
        let key = |name: &str| -> ActorKey { actor_key(&keys[name]) };
        let today = date_of(self.now);
        let mut claims = Vec::new();
        let commitment_key = if planned.is_empty() { None } else { Some(self.commitment_key()?) };
        for claim in planned {
            let commitment_key = commitment_key.as_ref().expect("read for a file with claims");
            let lines: Vec<ClaimLine> = claim
                .lines
                .iter()
                .map(|l| ClaimLine { procedure: l.procedure.clone(), diagnosis: l.diagnosis.clone(), amount: l.amount })
                .collect();
            if let Err(reason) = check_claim(claim.service_date, &lines, today) {
                self.rejections.push(Rejection::new(claim.place.clone(), format!("the claim is {}", reason.as_str())));
                continue;
            }
            let (patient, provider) = (key(&claim.patient), key(&claim.provider));
            let commitment = claim_commitment(commitment_key, &patient, &provider, claim.service_date, &lines);
            let operation = Operation::SubmitClaim {
                claim: claim.claim,
                patient,
                payer: key(&claim.payer),
                total: claim.total,
                commitment,
            };
            let id: [&[u8]; 3] = [b"claim", &patient.0, &claim.claim.to_le_bytes()];
            claims.push(self.fresh(&keys[&claim.provider], &id, operation));
        }
        self.submit(claims)?;
        let (mut funds, mut decisions, mut payments) = (Vec::new(), Vec::new(), Vec::new());
        for remittance in remittances {
            let payer = &keys[&remittance.payer];
            let funding = remittance.funding();
            if funding > 0 {
                let id: [&[u8]; 4] =
                    [b"fund", &actor_key(payer).0, remittance.trace.as_bytes(), &funding.to_le_bytes()];
                funds.push(self.fresh(payer, &id, Operation::FundAccount { amount: funding }));
            }
            for payment in &remittance.payments {
                let patient = key(&payment.patient);
                let claim = payment.claim;
                let decision = match payment.decision {
                    Decision::Paid(amount) => Adjudication::Approve { amount },
                    Decision::Denied(reason) => Adjudication::Deny { reason },
                };
                let id: [&[u8]; 3] = [b"adjudicate", &patient.0, &claim.to_le_bytes()];
                decisions.push(self.fresh(payer, &id, Operation::AdjudicateClaim { claim, patient, decision }));
                if let Decision::Paid(amount) = payment.decision {
                    let provider = key(&payment.provider);
                    let id: [&[u8]; 3] = [b"pay", &patient.0, &claim.to_le_bytes()];
                    let operation = Operation::PayClaim { claim, patient, provider, amount };
                    payments.push(self.fresh(payer, &id, operation));
                }
            }
        }
        self.submit(funds)?;
        self.submit(decisions)?;
        self.submit(payments)
    }

    /// A FHIR file's actors, records, consents (each signed by its patient), studies and
    /// enrolments, credentials, then claims and their payments.
    fn fhir(&mut self, mut plan: Plan) -> Result<()> {
        self.rejections.extend(std::mem::take(&mut plan.rejections));
        let keys = self.actors(&plan.actors)?;
        self.records(&keys, &plan.records)?;
        let mut consents = Vec::new();
        for planned in &plan.consents {
            let signer = &keys[&planned.patient];
            let (patient, consent) = (actor_key(signer), planned.consent);
            let (what, operation): (&[u8], _) = match &planned.grant {
                Some(grant) => {
                    let purposes: Vec<Purpose> = grant.purposes.iter().filter_map(|p| Purpose::parse(p)).collect();
                    let operation = Operation::GrantConsent {
                        consent,
                        patient,
                        grantee: actor_key(&keys[&planned.grantee]),
                        scope: grant.scope.clone(),
                        purposes: Purposes::of(&purposes),
                        valid_from: grant.valid_from,
                        valid_until: grant.valid_until,
                    };
                    (b"consent", operation)
                }
                None => (b"revoke", Operation::RevokeConsent { consent, patient }),
            };
            consents.push(self.fresh(signer, &[what, &patient.0, &consent.to_le_bytes()], operation));
        }
        self.submit(consents)?;
        self.research(&keys, &plan)?;
        self.credentials(&keys, &plan.credentials)?;
        self.claims(&keys, &plan.claims, &plan.remittances)
    }

    /// A FHIR file's studies, registered by their investigators and kept in the catalogue (so
    /// that a later file's subjects find them); its subjects enrolled (or withdrawn) by their
    /// study's investigator; then the studies closed to enrolment.
    fn research(&mut self, keys: &BTreeMap<String, SigningKey>, plan: &Plan) -> Result<()> {
        let study_nonce = |study: &str| nonce_of(&[b"study", study.as_bytes()]);
        let mut registrations = Vec::new();
        let mut ids = Vec::new();
        for study in &plan.studies {
            let key = &keys[&study.investigator];
            let operation = Operation::RegisterStudy { protocol: study.protocol };
            registrations.push(self.fresh(key, &[b"study", study.study.as_bytes()], operation));
            let id = transaction_id(&actor_key(key), study_nonce(&study.study));
            self.ids.push(format!("study {} registered as {}", study.study, crate::print::id_hex(id)));
            ids.push(id);
        }
        self.submit(registrations)?;
        // Kept for a later file's subjects once the ledger holds the registration.
        let held = self.target.held(&ids)?;
        let kept: Vec<(String, Vec<(String, String)>)> = plan
            .studies
            .iter()
            .zip(&ids)
            .zip(held)
            .filter(|(_, held)| *held)
            .map(|((study, id), _)| {
                let entry = [("investigator", study.investigator.clone()), ("study", crate::print::id_hex(*id))];
                (study.study.clone(), entry.map(|(k, v)| (k.to_owned(), v)).to_vec())
            })
            .collect();
        if !kept.is_empty() {
            crate::catalogue::keep(self.target.dir(), &kept)?;
        }
        let imported_before = if plan.enrolments.iter().any(|e| e.investigator.is_none()) {
            crate::catalogue::all(self.target.dir())?
        } else {
            BTreeMap::new()
        };
        let (mut enrolments, mut withdrawals) = (Vec::new(), Vec::new());
        for planned in &plan.enrolments {
            let known = match &planned.investigator {
                Some(name) => Some(name.clone()),
                None => imported_before.get(&planned.study).and_then(|e| e.get("investigator").cloned()),
            };
            let Some(investigator) = known else {
                let reason = format!("the study {} is neither in this file nor imported before", planned.study);
                self.rejections.push(Rejection::new(planned.place.clone(), reason));
                continue;
            };
            let key = match keys.get(&investigator) {
                Some(key) => key.clone(),
                None => match crate::keys::load(self.keystore, &investigator) {
                    Ok(key) => key,
                    Err(error) => {
                        let reason = format!("the study's investigator {investigator} has no key here: {error:#}");
                        self.rejections.push(Rejection::new(planned.place.clone(), reason));
                        continue;
                    }
                },
            };
            let study = transaction_id(&actor_key(&key), study_nonce(&planned.study));
            let patient = actor_key(&keys[&planned.patient]);
            let consent = caduceus_interop::fhir_plan::consent_id(&planned.consent, &investigator);
            // Each statement of a subject is its own transaction: a re-enrolment, or an enrolment
            // once a refused one's consent has arrived, is tried; the same file again is not.
            let id: [&[u8]; 5] =
                [b"enrol", &patient.0, &study.to_le_bytes(), &consent.to_le_bytes(), planned.statement.as_bytes()];
            if planned.enrolled {
                let operation = Operation::EnrollSubject { study, patient, consent };
                enrolments.push(self.fresh(&key, &id, operation));
            } else {
                let operation = Operation::WithdrawSubject { study, patient };
                withdrawals.push(self.fresh(&key, &[&[b"withdraw".as_slice()], &id[1..]].concat(), operation));
            }
        }
        self.submit(enrolments)?;
        self.submit(withdrawals)?;
        let mut closes = Vec::new();
        for study in plan.studies.iter().filter(|s| s.closed) {
            let key = &keys[&study.investigator];
            let operation = Operation::CloseStudy { study: transaction_id(&actor_key(key), study_nonce(&study.study)) };
            closes.push(self.fresh(key, &[b"close study", study.study.as_bytes()], operation));
        }
        self.submit(closes)
    }

    /// Providers' credentials, each issued by its issuer; its id (the issuance's transaction id)
    /// is what anyone verifies it by.
    fn credentials(&mut self, keys: &BTreeMap<String, SigningKey>, planned: &[PlannedCredential]) -> Result<()> {
        let mut issued = Vec::new();
        for credential in planned {
            let issuer = &keys[&credential.issuer];
            let operation = Operation::IssueCredential {
                subject: actor_key(&keys[&credential.subject]),
                kind: credential.kind.clone(),
                document: credential.document,
                valid_from: credential.valid_from,
                valid_until: credential.valid_until,
            };
            let id: [&[u8]; 2] = [b"credential", credential.source.as_bytes()];
            issued.push(self.fresh(issuer, &id, operation));
            let ledger_id = transaction_id(&actor_key(issuer), nonce_of(&id));
            self.credentials.push(ledger_id);
            self.ids.push(format!(
                "credential {} ({}) of {} from {}",
                crate::print::id_hex(ledger_id),
                credential.kind,
                credential.subject,
                credential.issuer
            ));
        }
        self.submit(issued)
    }

    fn records(
        &mut self,
        keys: &BTreeMap<String, SigningKey>,
        planned: &[caduceus_interop::fhir_plan::PlannedRecord],
    ) -> Result<()> {
        if planned.is_empty() {
            return Ok(());
        }
        // Records are scoped by patient: the patient is part of the transaction's identity.
        let nonce = |record: &caduceus_interop::fhir_plan::PlannedRecord| {
            nonce_of(&[b"record", &actor_key(&keys[record.patient.as_str()]).0, &record.record.to_le_bytes()])
        };
        let ids: Vec<TxId> = planned
            .iter()
            .map(|record| transaction_id(&actor_key(&keys[record.custodian.as_str()]), nonce(record)))
            .collect();
        let held = self.target.held(&ids)?;
        let new: Vec<&caduceus_interop::fhir_plan::PlannedRecord> =
            planned.iter().zip(&held).filter(|(_, held)| !**held).map(|(record, _)| record).collect();
        self.already += planned.len() - new.len();
        // The payloads stored first, then the records registered by their custodians.
        let payloads: Vec<Payload<'_>> = new
            .iter()
            .map(|record| Payload {
                custodian: &keys[record.custodian.as_str()],
                patient: actor_key(&keys[record.patient.as_str()]),
                record: record.record,
                bytes: &record.payload,
            })
            .collect();
        let stored = self.target.store_payloads(&payloads)?;
        let mut records = Vec::new();
        for (record, hash) in new.into_iter().zip(stored) {
            match hash {
                Ok(content_hash) => {
                    let operation = Operation::RegisterRecord {
                        record: record.record,
                        patient: actor_key(&keys[record.patient.as_str()]),
                        content_hash,
                        resource_type: record.resource_type.clone(),
                    };
                    records.push(signed(&keys[record.custodian.as_str()], nonce(record), self.now, operation)?);
                }
                // Refused by the store (too long, another custodian's record): this resource only.
                Err(reason) => self.rejections.push(Rejection::new(record.place.clone(), reason)),
            }
        }
        self.send(records)
    }
}

/// The role and prefixes a supply-chain party held as `role` with `prefixes` needs to do what a
/// file plans for it as `planned` with `wanted`: the higher of the two roles (distributor, then
/// dispenser, then manufacturer) and, for a manufacturer, both sets of prefixes; `None` if it
/// needs no change, or is not a supply-chain party (whose role an import never changes).
fn raised(role: Role, prefixes: &[String], planned: Role, wanted: &[String]) -> Option<(Role, Vec<String>)> {
    const SUPPLY: [Role; 3] = [Role::Distributor, Role::Dispenser, Role::Manufacturer];
    let rank = |role: Role| SUPPLY.iter().position(|r| *r == role);
    let (held, planned_rank) = (rank(role)?, rank(planned)?);
    let role = SUPPLY[held.max(planned_rank)];
    let mut union: Vec<String> = prefixes.to_vec();
    if role == Role::Manufacturer {
        union.extend(wanted.iter().filter(|p| !prefixes.contains(p)).cloned());
    }
    (held < planned_rank || union.len() > prefixes.len()).then_some((role, union))
}

/// The exchange's key for claim commitments, derived from the keystore's `exchange.commitment`
/// key (made on first use): kept like any other key, never on the ledger.
fn commitment_key(keystore: &Path) -> Result<CommitmentKey> {
    let secret = crate::keys::load_or_new(keystore, "exchange.commitment")?;
    Ok(CommitmentKey::new(blake3::derive_key("caduceus claim commitment key 1", &secret.to_bytes())))
}

/// A rejection's reason without what names the one case (for counting by reason).
fn reason_class(reason: &str) -> String {
    reason.split(':').next().unwrap_or(reason).to_owned()
}

/// A nonce that is a function of what the transaction imports: the same source, the same id.
fn nonce_of(parts: &[&[u8]]) -> u128 {
    let mut hasher = blake3::Hasher::new();
    hasher.update(b"caduceus.import.1");
    for part in parts {
        hasher.update(&(part.len() as u64).to_le_bytes());
        hasher.update(part);
    }
    u128::from_le_bytes(hasher.finalize().as_bytes()[..16].try_into().expect("16 bytes"))
}

/// A transaction of the import and the key that signs it.
struct Unsigned {
    key: SigningKey,
    transaction: Transaction,
}

fn signed(key: &SigningKey, nonce: u128, timestamp: u64, operation: Operation) -> Result<SignedTransaction> {
    Ok(sign(Transaction { nonce, signer: actor_key(key), timestamp, operation, key: None }, key)?)
}

/// Prints the run's totals.
pub fn print_totals(tally: &Tally) {
    println!(
        "files: {} imported, {} rejected; transactions: {} submitted, {} already on the ledger",
        tally.files_imported,
        tally.files_rejected,
        tally.results.values().sum::<usize>(),
        tally.already
    );
    for (result, n) in &tally.results {
        println!("  {n:>6} {result}");
    }
    if !tally.rejected.is_empty() {
        println!("parts rejected before the ledger, by reason:");
        for (reason, n) in &tally.rejected {
            println!("  {n:>6} {reason}");
        }
    }
}

/// Prints the import's throughput (transactions submitted per second over the whole run:
/// reading, mapping, sealing, signing and committing, every round fsynced) and, if measured,
/// its ratio to the raw two-thread `verify_batch` rate measured before and after; with `record`,
/// writes the run's file there.
pub fn speed(
    tally: &Tally,
    elapsed: std::time::Duration,
    reference: Option<(f64, f64)>,
    record: Option<&Path>,
) -> Result<()> {
    let submitted: usize = tally.results.values().sum();
    let seconds = elapsed.as_secs_f64().max(1e-9);
    let throughput = submitted as f64 / seconds;
    println!("import: {submitted} transactions in {seconds:.2} s, {throughput:.0} tx/s");
    let rate = reference.map(|(before, after)| (before + after) / 2.0);
    if let Some(rate) = rate {
        println!(
            "reference: {rate:.0} signatures/s (raw ed25519 verify_batch, 2 threads, this run); ratio {:.3}",
            throughput / rate
        );
    }
    if let Some(dir) = record {
        let report = serde_json::json!({
            "machine": caduceus_loadgen::record::machine(),
            "files": { "imported": tally.files_imported, "rejected": tally.files_rejected },
            "transactions": { "submitted": submitted, "results": tally.results, "already": tally.already },
            "parts_rejected": tally.rejected.values().sum::<usize>(),
            "elapsed_seconds": seconds,
            "throughput": throughput,
            "reference": reference.map(|(before, after)| serde_json::json!({ "before": before, "after": after })),
            "ratio": rate.map(|rate| throughput / rate),
        });
        let path = caduceus_loadgen::record::write(dir, caduceus_loadgen::record::Label::Import, &report)?;
        println!("recorded {}", path.display());
    }
    Ok(())
}
