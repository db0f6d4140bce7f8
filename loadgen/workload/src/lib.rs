//! A seeded, realistic healthcare workload: a population of patients,
//! providers, payers, manufacturers, distributors and pharmacies, and a mix of
//! all three transaction families, including a share that the ledger should
//! reject (accesses without consent, duplicate claims, recalled units).
//!
//! The generator keeps a small model of what it has already created, so most
//! transactions are valid and depend only on earlier batches. The same seed
//! and start time give the same transactions, byte for byte.

pub mod file;

use std::collections::{HashMap, VecDeque};

use caduceus_engine::commitment::{claim_commitment, recipient_commitment, CommitmentKey};
use caduceus_engine::model::{
    ActorKey, Adjudication, ClaimLine, EmergencyReason, Operation, Purpose, Purposes, RecallClass, Role, Transaction,
    UnitId,
};
use caduceus_engine::payload::{PayloadStore, Sealed};
use caduceus_engine::routing::shard_of_actor;
use caduceus_engine::signature::SigningKey;
use caduceus_engine::signature::{actor_key, sign, signing_key};
use caduceus_engine::{Config, SignedTransaction};
use rayon::prelude::*;

const DAY_MS: u64 = 86_400_000;

/// About this share of claim operations are payments once the claim pipeline is full.
const PAYMENT_SHARE_OF_CLAIMS: f64 = 0.31;

/// SplitMix64: small, fast and good enough to drive a workload.
#[derive(Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed ^ 0x9e37_79b9_7f4a_7c15)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    /// Uniform in `0..n`.
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
    /// Uniform in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
    /// Skewed toward low indexes: a few actors are very busy, most are not.
    pub fn skewed(&mut self, n: usize, skew: f64) -> usize {
        ((n as f64) * self.unit().powf(skew)).min(n as f64 - 1.0) as usize
    }
    pub fn chance(&mut self, p: f64) -> bool {
        self.unit() < p
    }
}

/// Spoils one signature at the start of every verify chunk of a batch: what a client trying to
/// make the ledger search every chunk sends (for the forgery tests and loadgen's hostile client).
pub fn forge_every_chunk(batch: &mut [SignedTransaction]) {
    let size = caduceus_engine::signature::chunk_size(batch.len());
    for start in (0..batch.len()).step_by(size) {
        let mut bytes = batch[start].bytes().to_vec();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        batch[start] = SignedTransaction::decode(&bytes).expect("only the signature changed");
    }
}

/// Shares of the four families, summing to 1: records and accesses, consent changes, claims, supply chain.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Mix(pub [f64; 4]);

impl std::fmt::Display for Mix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let [a, b, c, d] = self.0.map(|share| share * 100.0);
        write!(f, "{a:.0},{b:.0},{c:.0},{d:.0}")
    }
}

/// Parses `records,consents,claims,supply` shares (any positive scale; normalized to sum to 1).
pub fn parse_mix(text: &str) -> Result<Mix, String> {
    let parts: Vec<f64> = text
        .split(',')
        .map(|part| part.trim().parse::<f64>().map_err(|_| format!("{part:?} is not a number")))
        .collect::<Result<_, _>>()?;
    let shares: [f64; 4] =
        parts.try_into().map_err(|_| "the mix has four shares: records,consents,claims,supply".to_owned())?;
    let total: f64 = shares.iter().sum();
    if shares.iter().any(|s| !s.is_finite() || *s < 0.0) || total <= 0.0 {
        return Err("mix shares must be non-negative and not all zero".into());
    }
    Ok(Mix(shares.map(|s| s / total)))
}

/// The size and shape of a workload.
#[derive(Clone, Debug)]
pub struct WorkloadConfig {
    pub seed: u64,
    pub patients: usize,
    pub providers: usize,
    pub payers: usize,
    pub manufacturers: usize,
    pub distributors: usize,
    pub pharmacies: usize,
    /// Exponent of the activity skew (1.0: uniform).
    pub skew: f64,
    /// How strongly reads of existing records, consents and units favour the newest: the
    /// exponent of a skew toward the end of history (1.0: uniform over all of history).
    pub recency: f64,
    /// Shares of the mix: records and accesses, consent changes, claims, supply chain.
    pub mix: [f64; 4],
    /// The shard count the cross-shard share is computed for.
    pub shards: u32,
    /// Share of all transactions meant to span shards; `None`: parties chosen regardless of shard.
    pub cross_shard: Option<f64>,
}

impl Default for WorkloadConfig {
    fn default() -> Self {
        Self {
            seed: 1,
            patients: 20_000,
            providers: 400,
            payers: 12,
            manufacturers: 12,
            distributors: 24,
            pharmacies: 300,
            skew: 2.0,
            recency: 1.0,
            mix: [0.50, 0.05, 0.30, 0.15],
            shards: 4,
            cross_shard: None,
        }
    }
}

struct Unit {
    id: UnitId,
    lot: String,
    custodian: usize, // index into `supply`
    stage: u8,        // 0 commissioned, 1 at distributor in transit, 2 at distributor, 3 to pharmacy, 4 at pharmacy
}

/// The GTIN of a manufacturer's product: within its company prefix (`manufacturer_prefix`).
fn gtin_of(manufacturer: usize, product: u64) -> u64 {
    3_000_000_000_000 + manufacturer as u64 * 100 + product
}

/// A manufacturer's GS1 company prefix: the first 11 digits after the indicator digit of its
/// products' GTINs, which differ only in the last two.
fn manufacturer_prefix(manufacturer: usize) -> String {
    format!("{:014}", gtin_of(manufacturer, 0))[1..12].to_owned()
}

/// The signing key of a workload's `index`th actor of a kind, derived from the seed alone.
fn key_of(seed: u64, role: &str, index: usize) -> SigningKey {
    let material = format!("caduceus workload {seed} {role} {index}");
    signing_key(*blake3::hash(material.as_bytes()).as_bytes())
}

/// The seeded auditor's signing key (a demo's, like the operator's).
pub fn auditor_key_of(seed: u64) -> SigningKey {
    key_of(seed, "auditor", 0)
}

/// The seeded genesis operator's signing key (a demo's: derived from a public string).
pub fn operator_key_of(seed: u64) -> SigningKey {
    key_of(seed, "operator", 0)
}

/// The genesis operator of the workload with this seed, without making its population.
pub fn operator_of(seed: u64) -> ActorKey {
    actor_key(&key_of(seed, "operator", 0))
}

/// The population and the generator's model of what exists.
pub struct Workload {
    config: WorkloadConfig,
    rng: Rng,
    now: u64,
    next_id: u64,
    keys: HashMap<ActorKey, SigningKey>,
    /// The exchange's commitment secret, as its intake would hold it.
    commitment_key: CommitmentKey,
    operator: ActorKey,
    patients: Vec<ActorKey>,
    providers: Vec<ActorKey>,
    payers: Vec<ActorKey>,
    /// The shard of each provider's and each payer's account.
    provider_shard: Vec<u32>,
    payer_shard: Vec<u32>,
    /// Manufacturers, then distributors, then pharmacies.
    supply: Vec<ActorKey>,
    regulator: ActorKey,
    /// Reads everything (`Role::Auditor`): what tests and tools read a cluster as.
    auditor: ActorKey,
    records: Vec<(u128, usize, usize)>, // record, patient, custodian provider
    records_by_patient: HashMap<usize, Vec<u128>>,
    consents: Vec<(u128, usize, usize)>, // consent, patient, grantee provider
    submitted: VecDeque<(u128, usize, usize, usize, u64)>, // claim, patient, provider, payer, total
    approved: VecDeque<(u128, usize, usize, usize, u64)>,
    /// Submitted claims' patient, provider, date and lines, to resubmit as duplicates.
    submitted_keys: Vec<(usize, usize, u32, Vec<ClaimLine>)>,
    units: Vec<Unit>,
    lots: Vec<(u64, String)>,
    /// Lots recalled so far: their units are not moved forward (the ledger refuses it).
    recalled: std::collections::HashSet<(u64, String)>,
    /// With a payload store: each record version's payload is sealed with it, and waits here
    /// to be stored before its registration is submitted.
    payloads: Option<std::sync::Arc<PayloadStore>>,
    sealed: Vec<Sealed>,
}

const RESOURCE_TYPES: [&str; 6] =
    ["Observation", "Condition", "MedicationRequest", "DiagnosticReport", "Immunization", "Encounter"];
/// The procedure codes the mix bills (they reach the ledger only inside commitments).
pub const PROCEDURES: [&str; 8] = ["99213", "99214", "80053", "85025", "93000", "71046", "36415", "G0439"];
/// The diagnosis codes the mix bills (they reach the ledger only inside commitments).
pub const DIAGNOSES: [&str; 8] = ["E11.9", "I10", "J06.9", "M54.5", "Z00.00", "E78.5", "F41.1", "K21.9"];

impl Workload {
    /// A population; `now` is the commit-time horizon that consents and expiries are set around.
    pub fn new(config: WorkloadConfig, now: u64) -> Self {
        let seed = config.seed;
        let mut keys = HashMap::new();
        let mut make = |role: &str, count: usize| -> Vec<ActorKey> {
            (0..count)
                .map(|i| {
                    let key = key_of(seed, role, i);
                    let actor = actor_key(&key);
                    keys.insert(actor, key);
                    actor
                })
                .collect()
        };
        let operator = make("operator", 1)[0];
        let regulator = make("regulator", 1)[0];
        let auditor = make("auditor", 1)[0];
        let patients = make("patient", config.patients);
        let providers = make("provider", config.providers);
        let payers = make("payer", config.payers);
        let mut supply = make("manufacturer", config.manufacturers);
        supply.extend(make("distributor", config.distributors));
        supply.extend(make("pharmacy", config.pharmacies));
        let shards_of = |actors: &[ActorKey]| actors.iter().map(|a| shard_of_actor(a, config.shards.max(1))).collect();
        let (provider_shard, payer_shard) = (shards_of(&providers), shards_of(&payers));
        Self {
            rng: Rng::new(seed),
            config,
            now,
            next_id: 0,
            keys,
            commitment_key: CommitmentKey::new(
                *blake3::hash(&[b"caduceus.workload.commitment.".as_slice(), &seed.to_le_bytes()].concat()).as_bytes(),
            ),
            operator,
            patients,
            providers,
            payers,
            provider_shard,
            payer_shard,
            supply,
            regulator,
            auditor,
            records: Vec::new(),
            records_by_patient: HashMap::new(),
            consents: Vec::new(),
            submitted: VecDeque::new(),
            approved: VecDeque::new(),
            submitted_keys: Vec::new(),
            units: Vec::new(),
            lots: Vec::new(),
            recalled: std::collections::HashSet::new(),
            payloads: None,
            sealed: Vec::new(),
        }
    }

    /// Seals every record version's payload (a small FHIR resource) with `store` as it is
    /// generated, so the content hash each registration carries is its ciphertext's; the sealed
    /// payloads are taken with `take_sealed` and stored before their batch is submitted.
    pub fn with_payloads(mut self, store: std::sync::Arc<PayloadStore>) -> Self {
        self.payloads = Some(store);
        self
    }

    /// The payloads sealed since the last call, for the transactions generated since.
    pub fn take_sealed(&mut self) -> Vec<Sealed> {
        std::mem::take(&mut self.sealed)
    }

    /// A record version's content hash: its sealed payload's with a payload store, else a
    /// stand-in derived from the version's id.
    fn content_hash(&mut self, patient: ActorKey, record: u128, version: u128, resource_type: &str) -> [u8; 32] {
        let Some(store) = &self.payloads else { return *blake3::hash(&version.to_le_bytes()).as_bytes() };
        let value = 70 + version % 130;
        let payload = format!(
            r#"{{"resourceType":"{resource_type}","id":"{record:032x}","meta":{{"versionId":"{version:032x}"}},"status":"final","subject":{{"reference":"Patient/{}"}},"valueQuantity":{{"value":{value},"unit":"mg/dL","system":"http://unitsofmeasure.org","code":"mg/dL"}}}}"#,
            patient.to_hex()
        );
        let sealed = store.seal(&patient, record, payload.as_bytes()).expect("the system's random source works");
        let hash = sealed.hash;
        self.sealed.push(sealed);
        hash
    }

    /// The ledger configuration this population expects: its operator is the genesis operator.
    pub fn ledger_config(&self, shards: u32) -> Config {
        Config { shards, genesis_operators: vec![self.operator], operator_quorum: 1 }
    }

    pub fn patients(&self) -> &[ActorKey] {
        &self.patients
    }

    pub fn providers(&self) -> &[ActorKey] {
        &self.providers
    }

    /// Changes the mix of the transactions generated from now on.
    pub fn set_mix(&mut self, mix: [f64; 4]) {
        self.config.mix = mix;
    }

    /// The same population with another genesis operator: a real operator's key (from
    /// `cluster init`) signs the registrations instead of the seeded one.
    pub fn with_operator(mut self, key: caduceus_engine::signature::SigningKey) -> Self {
        self.keys.remove(&self.operator);
        self.operator = actor_key(&key);
        self.keys.insert(self.operator, key);
        self
    }

    /// The exchange's secret for claim and dispense commitments (`caduceus_engine::commitment`).
    pub fn commitment_key(&self) -> &CommitmentKey {
        &self.commitment_key
    }

    /// The member directory the exchange keeps off the ledger: each actor's name. The ledger
    /// knows actors by key alone.
    pub fn directory(&self) -> Vec<(ActorKey, String)> {
        let (m, d) = (self.config.manufacturers, self.config.distributors);
        let mut names = vec![
            (self.regulator, "National drug regulator".to_owned()),
            (self.auditor, "Exchange audit office".to_owned()),
        ];
        names.extend(self.patients.iter().enumerate().map(|(i, a)| (*a, format!("Patient {i}"))));
        names.extend(self.providers.iter().enumerate().map(|(i, a)| (*a, format!("Provider {i}"))));
        names.extend(self.payers.iter().enumerate().map(|(i, a)| (*a, format!("Payer {i}"))));
        names.extend(self.supply.iter().enumerate().map(|(i, a)| {
            let kind = if i < m {
                "Manufacturer"
            } else if i < m + d {
                "Distributor"
            } else {
                "Pharmacy"
            };
            (*a, format!("{kind} {i}"))
        }));
        names
    }

    /// The genesis operator, who registers everyone else.
    pub fn operator(&self) -> ActorKey {
        self.operator
    }

    /// The shard count the workload's cross-shard share is computed for.
    pub fn shards(&self) -> u32 {
        self.config.shards
    }

    pub fn regulator(&self) -> ActorKey {
        self.regulator
    }

    /// The population's auditor: it reads everything.
    pub fn auditor(&self) -> ActorKey {
        self.auditor
    }

    /// The signing key of one of the population's actors.
    pub fn signing_key(&self, actor: &ActorKey) -> Option<&SigningKey> {
        self.keys.get(actor)
    }

    fn id(&mut self) -> u128 {
        self.next_id += 1;
        let digest = blake3::hash(&[self.config.seed.to_le_bytes(), self.next_id.to_le_bytes()].concat());
        u128::from_le_bytes(digest.as_bytes()[..16].try_into().expect("16 bytes"))
    }

    fn transaction(&mut self, signer: ActorKey, operation: Operation) -> Transaction {
        Transaction { nonce: self.id(), signer, timestamp: self.now, operation, key: None }
    }

    /// Signs transactions on all cores.
    pub fn sign(&self, transactions: Vec<Transaction>) -> Vec<SignedTransaction> {
        transactions
            .into_par_iter()
            .map(|t| {
                let key = &self.keys[&t.signer];
                sign(t, key).expect("generated transactions are within limits")
            })
            .collect()
    }

    /// `setup`, signed: registrations, then (in a later round) funding.
    pub fn signed_setup(&mut self) -> [Vec<SignedTransaction>; 2] {
        let [registrations, funding] = self.setup();
        [self.sign(registrations), self.sign(funding)]
    }

    /// `batch`, signed.
    pub fn signed_batch(&mut self, count: usize) -> Vec<SignedTransaction> {
        let transactions = self.batch(count);
        self.sign(transactions)
    }

    /// Registers every actor, then funds every payer. Registrations apply on
    /// every shard, after a round's single-shard transactions, so the funding
    /// goes in a later round: submit the first part and wait before the second.
    pub fn setup(&mut self) -> [Vec<Transaction>; 2] {
        let mut out = Vec::new();
        let mut register = |w: &mut Self, actor: ActorKey, role: Role, prefixes: Vec<String>| {
            let t = w.transaction(w.operator, Operation::RegisterActor { actor, role, prefixes });
            out.push(t);
        };
        register(self, self.regulator, Role::Regulator, Vec::new());
        register(self, self.auditor, Role::Auditor, Vec::new());
        for a in self.patients.clone() {
            register(self, a, Role::Patient, Vec::new());
        }
        for a in self.providers.clone() {
            register(self, a, Role::Provider, Vec::new());
        }
        for a in self.payers.clone() {
            register(self, a, Role::Payer, Vec::new());
        }
        let (m, d) = (self.config.manufacturers, self.config.distributors);
        for (i, a) in self.supply.clone().into_iter().enumerate() {
            let role = if i < m {
                Role::Manufacturer
            } else if i < m + d {
                Role::Distributor
            } else {
                Role::Dispenser
            };
            let prefixes = if role == Role::Manufacturer { vec![manufacturer_prefix(i)] } else { Vec::new() };
            register(self, a, role, prefixes);
        }
        let mut funding = Vec::new();
        for payer in self.payers.clone() {
            funding.push(self.transaction(payer, Operation::FundAccount { amount: 50_000_000_000 }));
        }
        [out, funding]
    }

    /// The next `count` transactions of the mix.
    pub fn batch(&mut self, count: usize) -> Vec<Transaction> {
        let [records, consents, claims, _] = self.config.mix;
        (0..count)
            .map(|_| {
                let roll = self.rng.unit();
                if roll < records {
                    self.record_operation()
                } else if roll < records + consents {
                    self.consent_operation()
                } else if roll < records + consents + claims {
                    self.claim_operation()
                } else {
                    self.supply_operation()
                }
            })
            .collect()
    }

    /// An index into a list kept in the order its entries were made, favouring the newest as
    /// `recency` says; `None` with `recency` 1 (uniform), where each caller keeps its own draw so
    /// the default workload stays what it was.
    fn recent(&mut self, n: usize) -> Option<usize> {
        (self.config.recency != 1.0).then(|| n - 1 - self.rng.skewed(n, self.config.recency))
    }

    fn patient(&mut self) -> usize {
        self.rng.skewed(self.patients.len(), self.config.skew)
    }
    fn provider(&mut self) -> usize {
        self.rng.skewed(self.providers.len(), self.config.skew)
    }

    fn register_record(&mut self) -> Transaction {
        let (patient, provider) = (self.patient(), self.provider());
        self.register_record_for(patient, provider)
    }

    fn register_record_for(&mut self, patient: usize, provider: usize) -> Transaction {
        let record = self.id();
        let resource_type = RESOURCE_TYPES[self.rng.below(RESOURCE_TYPES.len())].to_owned();
        let content_hash = self.content_hash(self.patients[patient], record, record, &resource_type);
        self.records.push((record, patient, provider));
        self.records_by_patient.entry(patient).or_default().push(record);
        let (patient_key, signer) = (self.patients[patient], self.providers[provider]);
        self.transaction(
            signer,
            Operation::RegisterRecord { record, patient: patient_key, content_hash, resource_type },
        )
    }

    fn record_operation(&mut self) -> Transaction {
        if self.records.is_empty() || self.rng.chance(0.3) {
            return self.register_record();
        }
        let n = self.records.len();
        let index = self.recent(n).unwrap_or_else(|| self.rng.skewed(n, 1.0));
        let (record, patient, custodian) = self.records[index];
        let patient_key = self.patients[patient];
        let roll = self.rng.unit();
        if roll < 0.05 {
            let version = self.id();
            let content_hash = self.content_hash(patient_key, record, version, "Observation");
            return self.transaction(
                self.providers[custodian],
                Operation::AmendRecord { record, patient: patient_key, content_hash },
            );
        }
        if roll < 0.08 {
            let index = self.provider();
            let provider = self.providers[index];
            let reason = EmergencyReason::Unresponsive;
            return self.transaction(provider, Operation::EmergencyAccess { record, patient: patient_key, reason });
        }
        // Mostly a provider reading a record of a patient who consented to it; sometimes one
        // without consent (a denied access the patient will see in their report).
        let purpose = if self.rng.chance(0.95) { Purpose::Treatment } else { Purpose::Research };
        if !self.consents.is_empty() && self.rng.chance(0.85) {
            let n = self.consents.len();
            let index = self.recent(n).unwrap_or_else(|| self.rng.below(n));
            let (_, patient, grantee) = self.consents[index];
            let Some(count) = self.records_by_patient.get(&patient).map(Vec::len) else {
                return self.register_record_for(patient, grantee);
            };
            let index = self.recent(count).unwrap_or_else(|| self.rng.below(count));
            let record = self.records_by_patient[&patient][index];
            let patient = self.patients[patient];
            return self.transaction(self.providers[grantee], Operation::AccessRecord { record, patient, purpose });
        }
        let accessor = self.provider();
        self.transaction(self.providers[accessor], Operation::AccessRecord { record, patient: patient_key, purpose })
    }

    fn consent_operation(&mut self) -> Transaction {
        if !self.consents.is_empty() && self.rng.chance(0.1) {
            let (consent, patient, _) = self.consents.swap_remove(self.rng.below(self.consents.len()));
            let patient_key = self.patients[patient];
            return self.transaction(patient_key, Operation::RevokeConsent { consent, patient: patient_key });
        }
        let (patient, grantee) = (self.patient(), self.provider());
        let consent = self.id();
        self.consents.push((consent, patient, grantee));
        let scope = if self.rng.chance(0.7) { Vec::new() } else { vec![RESOURCE_TYPES[self.rng.below(3)].to_owned()] };
        let (patient_key, grantee_key) = (self.patients[patient], self.providers[grantee]);
        self.transaction(
            patient_key,
            Operation::GrantConsent {
                consent,
                patient: patient_key,
                grantee: grantee_key,
                scope,
                purposes: Purposes::of(&[Purpose::Treatment, Purpose::Payment]),
                valid_from: self.now.saturating_sub(DAY_MS),
                valid_until: self.now + 365 * DAY_MS,
            },
        )
    }

    fn claim_operation(&mut self) -> Transaction {
        let roll = self.rng.unit();
        // Adjudications and payments each take about a third when claims are waiting for them,
        // so the claim pipeline stays short and payments are about 30% of claim operations.
        if roll < 0.35 && !self.submitted.is_empty() {
            let (claim, patient, provider, payer, total) = self.submitted.pop_front().expect("non-empty");
            let decision = if self.rng.chance(0.9) {
                self.approved.push_back((claim, patient, provider, payer, total));
                Adjudication::Approve { amount: total - total / 10 }
            } else {
                // X12 CARC 50: not deemed a medical necessity.
                Adjudication::Deny { reason: 50 }
            };
            return self.transaction(
                self.payers[payer],
                Operation::AdjudicateClaim { claim, patient: self.patients[patient], decision },
            );
        }
        if roll < 0.70 && !self.approved.is_empty() {
            let (claim, patient, provider, payer, total) = self.approved.pop_front().expect("non-empty");
            let operation = Operation::PayClaim {
                claim,
                patient: self.patients[patient],
                provider: self.providers[provider],
                amount: total - total / 10,
            };
            return self.transaction(self.payers[payer], operation);
        }
        let claim = self.id();
        if roll > 0.98 && !self.submitted_keys.is_empty() {
            // The same patient, provider, date and codes again: a duplicate.
            let (patient, provider, service_date, lines) =
                self.submitted_keys[self.rng.below(self.submitted_keys.len())].clone();
            let payer = self.payers[0];
            let operation = self.submission(claim, patient, provider, payer, service_date, &lines);
            return self.transaction(self.providers[provider], operation);
        }
        let (patient, provider, payer) = self.claim_parties();
        let lines: Vec<ClaimLine> = (0..1 + self.rng.below(3))
            .map(|_| ClaimLine {
                procedure: PROCEDURES[self.rng.below(PROCEDURES.len())].into(),
                diagnosis: DIAGNOSES[self.rng.below(DIAGNOSES.len())].into(),
                amount: 2_000 + self.rng.below(50_000) as u64,
            })
            .collect();
        let total = lines.iter().map(|l| l.amount).sum();
        let service_date = caduceus_engine::shard::date_of(self.now - (1 + self.rng.below(60) as u64) * DAY_MS);
        self.submitted.push_back((claim, patient, provider, payer, total));
        if self.submitted_keys.len() < 10_000 {
            self.submitted_keys.push((patient, provider, service_date, lines.clone()));
        }
        let operation = self.submission(claim, patient, provider, self.payers[payer], service_date, &lines);
        self.transaction(self.providers[provider], operation)
    }

    /// A claim as the ledger holds it: its total and the exchange intake's commitment to the
    /// service; the date and codes stay off the ledger.
    fn submission(
        &self,
        claim: u128,
        patient: usize,
        provider: usize,
        payer: ActorKey,
        service_date: u32,
        lines: &[ClaimLine],
    ) -> Operation {
        let (patient, provider) = (self.patients[patient], self.providers[provider]);
        let commitment = claim_commitment(&self.commitment_key, &patient, &provider, service_date, lines);
        Operation::SubmitClaim { claim, patient, payer, total: lines.iter().map(|l| l.amount).sum(), commitment }
    }

    /// A new claim's patient, provider and payer. With a cross-shard share set, the claim is
    /// either local (provider and payer on the patient's shard, so its payment touches one
    /// shard) or cross-shard (payer on another shard), in the proportion that makes payments
    /// spanning shards that share of all transactions.
    fn claim_parties(&mut self) -> (usize, usize, usize) {
        let patient = self.patient();
        let Some(target) = self.config.cross_shard else {
            return (patient, self.provider(), self.rng.below(self.payers.len()));
        };
        let shards = self.config.shards.max(1);
        let home = shard_of_actor(&self.patients[patient], shards);
        let payment_share = self.config.mix[2] * PAYMENT_SHARE_OF_CLAIMS;
        let cross = shards > 1 && self.rng.chance((target / payment_share).clamp(0.0, 1.0));
        let local_providers: Vec<usize> =
            (0..self.providers.len()).filter(|&i| self.provider_shard[i] == home).collect();
        let provider = if cross || local_providers.is_empty() {
            self.provider()
        } else {
            local_providers[self.rng.skewed(local_providers.len(), self.config.skew)]
        };
        let payers: Vec<usize> = (0..self.payers.len()).filter(|&i| (self.payer_shard[i] == home) != cross).collect();
        let payer =
            if payers.is_empty() { self.rng.below(self.payers.len()) } else { payers[self.rng.below(payers.len())] };
        (patient, provider, payer)
    }

    fn supply_operation(&mut self) -> Transaction {
        let (m, d, p) = (self.config.manufacturers, self.config.distributors, self.config.pharmacies);
        let roll = self.rng.unit();
        // A recall applies on every shard, so a workload with no cross-shard share has none.
        if roll < 0.002 && !self.lots.is_empty() && self.config.cross_shard != Some(0.0) {
            let (gtin, lot) = self.lots[self.rng.below(self.lots.len())].clone();
            let reason = RecallClass::ClassI;
            self.recalled.insert((gtin, lot.clone()));
            return self.transaction(self.regulator, Operation::RecallLot { gtin, lot, reason });
        }
        if roll < 0.3 || self.units.is_empty() {
            let manufacturer = self.rng.below(m);
            let product = self.rng.below(4) as u64;
            let gtin = gtin_of(manufacturer, product);
            let lot = format!("L{}{:03}", manufacturer, self.next_id / 5_000);
            if self.lots.last() != Some(&(gtin, lot.clone())) {
                self.lots.push((gtin, lot.clone()));
            }
            let serial = format!("{:012}", self.next_id);
            let unit = UnitId { gtin, serial };
            // Into a recalled lot the ledger commissions nothing: the attempt is sent (a refusal
            // the mix means to hold), but no unit follows it.
            if !self.recalled.contains(&(gtin, lot.clone())) {
                self.units.push(Unit { id: unit.clone(), lot: lot.clone(), custodian: manufacturer, stage: 0 });
            }
            let expiry = self.now + 730 * DAY_MS;
            return self.transaction(self.supply[manufacturer], Operation::CommissionUnit { unit, lot, expiry });
        }
        let n = self.units.len();
        let index = self.recent(n).unwrap_or_else(|| self.rng.below(n));
        let unit = &mut self.units[index];
        let id = unit.id.clone();
        let holder = self.supply[unit.custodian];
        let (next_stage, operation, signer) = match unit.stage {
            0 => {
                let to = m + (self.rng.next_u64() as usize % d);
                unit.custodian = to;
                (1, Operation::ShipUnit { unit: id, to: self.supply[to] }, holder)
            }
            1 | 3 => (unit.stage + 1, Operation::ReceiveUnit { unit: id }, holder),
            2 => {
                let to = m + d + (self.rng.next_u64() as usize % p);
                let recalled = self.recalled.contains(&(id.gtin, unit.lot.clone()));
                if recalled {
                    // A recalled unit does not go forward to a pharmacy: the attempt is refused,
                    // and the unit moves no further.
                    self.units.swap_remove(index);
                    return self.transaction(holder, Operation::ShipUnit { unit: id, to: self.supply[to] });
                }
                unit.custodian = to;
                (3, Operation::ShipUnit { unit: id, to: self.supply[to] }, holder)
            }
            _ => {
                let patient = self.patients[self.rng.below(self.patients.len())];
                let recipient = recipient_commitment(&self.commitment_key, &patient, &id);
                self.units.swap_remove(index);
                return self.transaction(holder, Operation::DispenseUnit { unit: id, recipient });
            }
        };
        // The custodian ships; the addressee (now `custodian`) receives.
        let unit = &mut self.units[index];
        unit.stage = next_stage;
        let signer =
            if matches!(operation, Operation::ReceiveUnit { .. }) { self.supply[unit.custodian] } else { signer };
        self.transaction(signer, operation)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_operator_of_a_seed_is_the_operator_of_its_workload() {
        let config = WorkloadConfig { seed: 9, patients: 3, providers: 2, ..WorkloadConfig::default() };
        assert_eq!(operator_of(9), Workload::new(config, 0).operator());
        assert_ne!(operator_of(9), operator_of(10));
    }
}
