//! `caduceus import`: files in the formats health systems speak, onto an embedded ledger.
//!
//! Each file is recognised from its content (or `--format`), read with its format's models
//! (`caduceus-interop`) and mapped onto transactions: its actors registered by the operator,
//! each with a keystore key (`fhir.TYPE.ID`); its clinical resources registered as records
//! whose payloads go encrypted into the payload store beside the ledger. A directory without a
//! ledger gets one, its genesis operator the keystore's operator key. Transaction ids are a
//! function of the source resource, so importing a file again changes nothing: what the ledger
//! holds already is counted, not submitted. Every file ends imported or rejected, every
//! rejection with its place and reason.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use caduceus_engine::model::{transaction_id, Operation, Role, Transaction};
use caduceus_engine::payload::PayloadStore;
use caduceus_engine::signature::{actor_key, sign, SigningKey};
use caduceus_engine::{Config, Ledger, SignedTransaction};
use caduceus_interop::detect::{detect, Format};
use caduceus_interop::fhir::{read_json, read_ndjson};
use caduceus_interop::fhir_plan::{plan, ActorKind, Plan};
use caduceus_interop::report::{Place, Rejection};

/// Transactions per submitted batch.
const BATCH: usize = 1024;

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
}

/// Imports `files` into the ledger in `dir`, signing with keys of `keystore` (`operator` names
/// the operator's key). Prints each file's outcome and returns the tally.
pub fn run(dir: &Path, keystore: &Path, operator: &str, format: Option<Format>, files: &[PathBuf]) -> Result<Tally> {
    let operator_key = crate::keys::load_or_new(keystore, operator)?;
    let ledger = if dir.join("CURRENT").exists() {
        Ledger::open_existing(dir).with_context(|| format!("open the ledger in {}", dir.display()))?
    } else {
        let config = Config { shards: 4, genesis_operators: vec![actor_key(&operator_key)], operator_quorum: 1 };
        println!("a new ledger in {} (4 shards), its operator the keystore's {operator:?}", dir.display());
        Ledger::open(dir, &config)?
    };
    let store = PayloadStore::beside(dir)?;
    let mut tally = Tally::default();
    for file in files {
        let bytes = std::fs::read(file).with_context(|| format!("read {}", file.display()))?;
        let read = match format.or_else(|| detect(&bytes)) {
            Some(Format::Fhir) => read_json(&bytes),
            Some(Format::FhirNdjson) => read_ndjson(&bytes),
            Some(other) => Err(Rejection::new(Place::File, format!("{other} files are not imported yet"))),
            None => Err(Rejection::new(Place::File, "not a FHIR, X12 or EPCIS file")),
        };
        let read = match read {
            Ok(read) => read,
            Err(rejection) => {
                println!("{}: rejected: {rejection}", file.display());
                *tally.rejected.entry(rejection.reason).or_default() += 1;
                tally.files_rejected += 1;
                continue;
            }
        };
        let mut plan = plan(&read);
        plan.rejections.splice(0..0, read.rejections);
        import_plan(&ledger, &store, keystore, &operator_key, file, plan, &mut tally)?;
        tally.files_imported += 1;
    }
    Ok(tally)
}

fn import_plan(
    ledger: &Ledger,
    store: &PayloadStore,
    keystore: &Path,
    operator: &SigningKey,
    file: &Path,
    plan: Plan,
    tally: &mut Tally,
) -> Result<()> {
    let now = caduceus_engine::ledger::system_clock()();
    let (mut submitted, mut already) = (BTreeMap::<String, usize>::new(), 0);
    // The actors, registered by the operator.
    let mut registrations = Vec::new();
    // Each actor's key read once from the keystore (the plan names every record's patient and
    // custodian among its actors).
    let mut keys: BTreeMap<&str, SigningKey> = BTreeMap::new();
    for actor in &plan.actors {
        let signing = crate::keys::load_or_new(keystore, &actor.key)?;
        let key = actor_key(&signing);
        keys.insert(&actor.key, signing);
        if ledger.actor(&key).is_some() {
            already += 1;
            continue;
        }
        let role = match actor.kind {
            ActorKind::Patient => Role::Patient,
            ActorKind::Provider => Role::Provider,
        };
        let nonce = nonce_of(&[b"actor", &key.0]);
        let operation = Operation::RegisterActor { actor: key, role, prefixes: Vec::new() };
        registrations.push(signed(operator, nonce, now, operation)?);
    }
    submit(ledger, registrations, &mut submitted)?;
    // The records: payloads sealed and stored first, then registered by their custodians.
    let (mut sealed, mut records, mut rejections) = (Vec::new(), Vec::new(), Vec::new());
    for record in &plan.records {
        let custodian = &keys[record.custodian.as_str()];
        let patient = actor_key(&keys[record.patient.as_str()]);
        // Records are scoped by patient: the patient is part of the transaction's identity.
        let nonce = nonce_of(&[b"record", &patient.0, &record.record.to_le_bytes()]);
        if ledger.locate(transaction_id(&actor_key(custodian), nonce))?.is_some() {
            already += 1;
            continue;
        }
        let payload = match store.seal(&patient, record.record, &record.payload) {
            Ok(payload) => payload,
            // Too long for the store: this resource only.
            Err(error @ caduceus_engine::payload::PayloadError::TooLong(_)) => {
                rejections.push(Rejection::new(record.place.clone(), error.to_string()));
                continue;
            }
            Err(error) => return Err(error.into()),
        };
        let operation = Operation::RegisterRecord {
            record: record.record,
            patient,
            content_hash: payload.hash,
            resource_type: record.resource_type.clone(),
        };
        records.push(signed(custodian, nonce, now, operation)?);
        sealed.push(payload);
    }
    store.store(&sealed)?;
    submit(ledger, records, &mut submitted)?;
    let mut plan = plan;
    plan.rejections.extend(rejections);

    let count: usize = submitted.values().sum();
    let committed = submitted.get("committed").copied().unwrap_or(0);
    println!(
        "{}: {count} transactions submitted ({committed} committed), {already} already on the ledger, {} parts rejected",
        file.display(),
        plan.rejections.len()
    );
    for (result, n) in submitted.iter().filter(|(r, _)| *r != "committed") {
        println!("  {n} {result}");
    }
    for rejection in &plan.rejections {
        println!("  rejected {rejection}");
        *tally.rejected.entry(reason_class(&rejection.reason)).or_default() += 1;
    }
    for (result, n) in submitted {
        *tally.results.entry(result).or_default() += n;
    }
    tally.already += already;
    Ok(())
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

fn signed(key: &SigningKey, nonce: u128, timestamp: u64, operation: Operation) -> Result<SignedTransaction> {
    Ok(sign(Transaction { nonce, signer: actor_key(key), timestamp, operation, key: None }, key)?)
}

fn submit(ledger: &Ledger, transactions: Vec<SignedTransaction>, results: &mut BTreeMap<String, usize>) -> Result<()> {
    for batch in transactions.chunks(BATCH) {
        for result in ledger.submit(batch.to_vec())? {
            *results.entry(result.as_str().to_owned()).or_default() += 1;
        }
    }
    Ok(())
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
