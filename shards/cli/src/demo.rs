//! `caduceus demo`: the embedded engine on the seeded healthcare workload, then a report with
//! samples of what the ledger now answers.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use caduceus_engine::model::{hex, ActorKey, Operation, UnitId};
use caduceus_engine::signature::{actor_key, measure_verify_batch_rate};
use caduceus_engine::{Ledger, ReadError, SignedTransaction, TxResult};
use caduceus_interop::x12_plan;
use caduceus_loadgen::args::LoadArgs;
use caduceus_loadgen::embedded::closed_loop;
use caduceus_workload::Workload;
use indicatif::ProgressBar;

use crate::reader::{Embedded, Reader};
use crate::{import, keys, print};

fn bar(length: u64, label: &'static str) -> ProgressBar {
    ProgressBar::new(length).with_style(caduceus_loadgen::bar_style(label))
}

/// Submits batches keeping `in_flight` of them pending, and returns every result in order.
fn drive(
    ledger: &Ledger,
    batches: Vec<Vec<SignedTransaction>>,
    in_flight: usize,
    progress: &ProgressBar,
) -> Result<Vec<TxResult>> {
    let mut results = Vec::new();
    closed_loop(ledger, 0, batches, in_flight, |_, _, answer| {
        progress.inc(answer.len() as u64);
        results.extend(answer);
    })?;
    Ok(results)
}

pub fn run(dir: Option<PathBuf>, load: &LoadArgs, reference_seconds: f64) -> Result<()> {
    let (count, shards, batch, in_flight) =
        (load.transactions(), load.shards, load.batch_size(), load.in_flight.max(1));
    let dir = match dir {
        Some(dir) => dir,
        None => tempfile::Builder::new().prefix("caduceus-demo-").tempdir()?.keep(),
    };
    if dir.join("CURRENT").exists() {
        bail!("{} already holds a ledger; give the demo a new directory", dir.display());
    }
    println!("Caduceus demo: {count} transactions, {shards} shards, batches of {batch}, data in {}", dir.display());

    let reference = (reference_seconds > 0.0).then(|| {
        println!("measuring the reference: raw ed25519 verify_batch on 2 threads for {reference_seconds:.0} s ...");
        measure_verify_batch_rate(2, Duration::from_secs_f64(reference_seconds))
    });

    let mut workload = Workload::new(load.workload(), load.start_ms());
    let ledger = Ledger::open(&dir, &workload.ledger_config(shards))?;

    let setup = workload.signed_setup();
    let setup_count: usize = setup.iter().map(Vec::len).sum();
    let progress = bar(setup_count as u64, "setup");
    let mut setup_results = Vec::new();
    for phase in setup {
        let phase_batches: Vec<Vec<SignedTransaction>> = phase.chunks(batch).map(<[_]>::to_vec).collect();
        setup_results.extend(drive(&ledger, phase_batches, in_flight, &progress)?);
    }
    progress.finish_and_clear();
    let setup_failed = setup_results.iter().filter(|r| !r.is_committed()).count();
    if setup_failed > 0 {
        bail!("{setup_failed} of {setup_count} setup transactions were rejected");
    }
    println!("registered and funded {setup_count} actors");

    let progress = bar(count as u64, "signing");
    let mut batches = Vec::new();
    let mut remaining = count;
    while remaining > 0 {
        let size = remaining.min(batch);
        batches.push(workload.signed_batch(size));
        progress.inc(size as u64);
        remaining -= size;
    }
    progress.finish_and_clear();
    let transactions: Vec<SignedTransaction> = batches.iter().flatten().cloned().collect();

    let progress = bar(count as u64, "committing");
    let started = Instant::now();
    let results = drive(&ledger, batches, in_flight, &progress)?;
    let elapsed = started.elapsed();
    progress.finish_and_clear();

    let throughput = count as f64 / elapsed.as_secs_f64();
    println!();
    println!(
        "throughput: {throughput:.0} tx/s ({count} transactions in {:.2} s, signatures verified, every round fsynced)",
        elapsed.as_secs_f64()
    );
    if let Some(reference) = reference {
        println!("reference:  {reference:.0} signatures/s (raw ed25519 verify_batch, 2 threads, this run)");
        println!("ratio:      {:.2} of the reference", throughput / reference);
    }
    let mut tally: BTreeMap<&'static str, usize> = BTreeMap::new();
    for result in &results {
        *tally.entry(result.as_str()).or_default() += 1;
    }
    let committed = tally.get("committed").copied().unwrap_or(0);
    println!("committed:  {committed}");
    println!("rejected:   {} by reason:", count - committed);
    let mut rejected: Vec<(&str, usize)> = tally.into_iter().filter(|(name, _)| *name != "committed").collect();
    rejected.sort_by_key(|(_, n)| std::cmp::Reverse(*n));
    for (reason, n) in rejected {
        println!("  {reason:<32} {n}");
    }

    let mut reader = Embedded::new(ledger);
    samples(&mut reader, &workload, &transactions, &results)?;
    let patient = payloads(&reader.ledger, &workload, &dir)?;
    imports(&dir)?;
    let checkpoint = reader.ledger.checkpoint().context("the demo wrote rounds")?;
    println!();
    println!("checkpoint: round {} root {}", checkpoint.round, hex(&checkpoint.hash()));
    println!("state hash: {}", hex(&reader.ledger.state_hash()?));
    println!("heights:    {:?}", reader.ledger.heights());
    drop(reader);
    println!("data directory: {}", dir.display());
    println!("check it:       caduceus verify --dir {}", dir.display());
    println!(
        "ask it:         caduceus query --dir {} --as patient --keystore {} access-report --patient {patient}",
        dir.display(),
        dir.with_extension("keys").display()
    );
    Ok(())
}

/// A Synthea bundle, an 837 and the 835 that pays it, and an EPCIS shipment, imported into a ledger of their own
/// beside the demo's (`DIR-imports`, its keys in `DIR-imports.keys`); then what the ledger holds
/// of them, read as the patients themselves.
fn imports(dir: &Path) -> Result<()> {
    const SYNTHEA: &str = "fhir-synthea-r4-smart/Agustín_Fonseca_cb5696d9-a0de-4f49-94f9-433f96a28eb0.json";
    const CLAIMS: &str = "x12-linuxforhealth/demo-file/demo.837";
    const REMITTANCE: &str = "caduceus/demo-remittance.835";
    const SHIPMENT: &str = "caduceus/demo-shipment.jsonld";
    const STUDY: &str = "caduceus/research-study.json";
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/data").canonicalize()?;
    // `DIR-imports`, not `DIR.imports`: the keystore, payload store and key-encryption key
    // beside it take its name with another extension, which must not be the demo's own.
    let mut name = dir.file_name().context("the demo's directory has a name")?.to_owned();
    name.push("-imports");
    let target = dir.with_file_name(name);
    let keystore = target.with_extension("keys");
    println!();
    println!(
        "importing a FHIR bundle, an X12 837 and the 835 that pays it, an EPCIS shipment and a clinical study into {}:",
        target.display()
    );
    let files: Vec<PathBuf> = [SYNTHEA, CLAIMS, REMITTANCE, SHIPMENT, STUDY].iter().map(|f| data.join(f)).collect();
    let operator = keys::load_or_new(&keystore, "operator")?;
    let tally = {
        let mut into = crate::target::Target::embedded(&target, &operator, "operator")?;
        import::run(&mut into, &keystore, &operator, None, &files)?
    };
    import::print_totals(&tally);

    let ledger = Ledger::open_existing(&target)?;
    let key = |name: &str| -> Result<ActorKey> { Ok(actor_key(&keys::load(&keystore, name)?)) };
    let (patient_name, _) = keys::list(&keystore)?
        .into_iter()
        .find(|(name, _)| name.starts_with("fhir.Patient.") && !name.starts_with("fhir.Patient.rs-"))
        .context("the bundle's patient has a key")?;
    let patient = key(&patient_name)?;
    let records = ledger.reads_as(&patient)?.records(&patient, None, 1000)?;
    let mut kinds: BTreeMap<&str, usize> = BTreeMap::new();
    for (_, record) in &records.entries {
        *kinds.entry(record.resource_type.as_str()).or_default() += 1;
    }
    println!("  the FHIR patient {} reads its {} records: {kinds:?}", &patient.to_hex()[..16], records.entries.len());
    let member = x12_plan::patient_key("999996666", "JS00111223333", Some(("SMITH", "TED")));
    let patient = key(&member)?;
    let claim = x12_plan::claim_id("999996666", "1912301953", "26463774");
    if let Some(found) = ledger.reads_as(&patient)?.claim(&patient, claim)? {
        let paid = match found.status {
            caduceus_engine::ClaimStatus::Paid { amount, payment } => {
                format!(", {}.{:02} in payment {}", amount / 100, amount % 100, &print::id_hex(payment)[..16])
            }
            _ => String::new(),
        };
        println!(
            "  the X12 patient {} reads its claim {}: {}.{:02} billed, {}{paid}",
            &patient.to_hex()[..16],
            &print::id_hex(claim)[..16],
            found.total / 100,
            found.total % 100,
            found.status.name(),
        );
    }
    // The shipment's dispensed unit (its events name it by EPC URI and by Digital Link), read
    // by the pharmacy that dispensed it, with its product's master data.
    let unit = UnitId { gtin: 10614141073464, serial: "2017".into() };
    let pharmacy = key(&caduceus_interop::actors::key_name("gs1.party", "0098765"))?;
    let trail = ledger.reads_as(&pharmacy)?.custody_trace(&unit, None, 20)?;
    print!("  the EPCIS shipment's pharmacy {} reads the unit it dispensed:", &pharmacy.to_hex()[..16]);
    print::unit(&ledger.verify_unit(&unit)?, &trail.entries);
    if let Some(product) = crate::catalogue::product(&target, unit.gtin)? {
        print::product(&product);
    }
    // The study: its investigator's licence, verified by anyone; a subject's enrolment, read by
    // that patient.
    let study = crate::catalogue::entry(&target, "fhir.ResearchStudy.rs-study")?
        .and_then(|entry| entry.get("study").and_then(|id| u128::from_str_radix(id, 16).ok()))
        .context("the study is in the catalogue")?;
    let mut licence = None;
    for id in &tally.credentials {
        licence = licence.or(ledger.credential(*id)?.filter(|c| c.kind == "MD").map(|c| (*id, c)));
    }
    let (id, found) = licence.context("the study bundle's licence is on the ledger")?;
    print!("  anyone verifies the study investigator's licence: ");
    print::credential(id, &found, crate::now_ms());
    let subject = key("fhir.Patient.rs-patient-1")?;
    print!("  the study's subject {} reads its enrolment: ", &subject.to_hex()[..16]);
    match ledger.reads_as(&subject)?.enrolment(&subject, study)? {
        Some(enrolment) => print::enrolment(study, &enrolment),
        None => println!("none (the import above says why)"),
    }
    Ok(())
}

/// The busiest patient's access report, a dispensed unit's custody and a paid claim's proof,
/// each read as an actor that may read it: the patient, the pharmacy that dispensed the unit.
fn samples(
    reader: &mut Embedded,
    workload: &Workload,
    transactions: &[SignedTransaction],
    results: &[TxResult],
) -> Result<()> {
    let patient = workload.patients()[0];
    reader.read_as(patient);
    let report = reader.access_report(&patient, None, 5)?;
    println!();
    println!("access report of patient {patient} ({} accesses, newest 5):", report.total);
    for entry in &report.entries {
        let purpose = entry.purpose.map_or("EMERGENCY (break-glass)", |p| p.as_str());
        let verdict = if entry.permitted() { "permitted".to_owned() } else { format!("denied: {}", entry.result) };
        println!(
            "  {} record {} by {} for {purpose}: {verdict}",
            print::when(entry.time),
            &print::id_hex(entry.record)[..12],
            &entry.accessor.to_hex()[..16]
        );
    }

    let committed = |name: &str| {
        transactions
            .iter()
            .zip(results)
            .find(|(t, r)| t.transaction.operation.name() == name && r.is_committed())
            .map(|(t, _)| t)
    };
    if let Some(dispense) = committed("dispense-unit") {
        if let Operation::DispenseUnit { unit, .. } = &dispense.transaction.operation {
            reader.read_as(dispense.transaction.signer);
            let (verification, events) = reader.unit(unit, None, 20)?;
            print::unit(&verification, &events.entries);
        }
    }
    if let Some(payment) = committed("pay-claim") {
        if let Operation::PayClaim { claim, patient, amount, .. } = &payment.transaction.operation {
            reader.read_as(*patient);
            let status = reader.claim(patient, *claim)?.context("a paid claim is on the ledger")?;
            println!();
            println!(
                "claim {} of patient {patient}: {} (total {} cents, paid {} cents)",
                print::id_hex(*claim),
                status.status.name(),
                status.total,
                amount
            );
            let (proof, checkpoint) = reader.proof(payment.id())?.context("a paid claim's payment is provable")?;
            print::proof(payment.id(), &proof, &checkpoint);
        }
    }
    Ok(())
}

/// A clinical document the demo stores: a FHIR R4 Observation, with no one's name in it.
const OBSERVATION: &str = r#"{"resourceType":"Observation","status":"final","code":{"coding":[{"system":"http://loinc.org","code":"2339-0","display":"Glucose [Mass/volume] in Blood"}]},"valueQuantity":{"value":6.3,"unit":"mmol/L","system":"http://unitsofmeasure.org","code":"mmol/L"}}"#;

/// The payload store beside the ledger: a provider registers a record whose payload is stored
/// encrypted; the patient grants one provider consent; that provider reads it, another is
/// refused; the patient erases it, and its key is destroyed; the patient reads its own report
/// (another provider may not). Returns the patient, whose key is in the keystore.
fn payloads(ledger: &Ledger, workload: &Workload, dir: &std::path::Path) -> Result<ActorKey> {
    use caduceus_engine::model::{Purpose, Purposes, Role, Transaction};
    use caduceus_engine::payload::{PayloadError, PayloadStore};

    let store_dir = dir.with_extension("payloads");
    let kek_path = dir.with_extension("kek");
    let store = PayloadStore::beside(dir)?;
    // The actors of this part sign with keys of the command line's keystore, beside the data
    // directory (`caduceus keys --keystore DIR.keys list`); the operator registers them.
    let keystore = dir.with_extension("keys");
    let key = |name: &str| crate::keys::load_or_new(&keystore, name);
    let (patient_key, reader_key, stranger_key) = (key("patient")?, key("clinic")?, key("other-clinic")?);
    let actor = caduceus_engine::signature::actor_key;
    let (patient, reader, stranger) = (actor(&patient_key), actor(&reader_key), actor(&stranger_key));
    let now = caduceus_engine::ledger::system_clock()();
    // Nonces count up from the time: a demo run never reuses one.
    let mut nonce = u128::from(now) << 64;
    let mut next = || {
        nonce += 1;
        nonce
    };
    let submit =
        |transaction: SignedTransaction| -> Result<TxResult> { Ok(ledger.submit(vec![transaction])?.remove(0)) };
    let registrations: Vec<Transaction> =
        [(patient, Role::Patient), (reader, Role::Provider), (stranger, Role::Provider)]
            .into_iter()
            .map(|(actor, role)| Transaction {
                nonce: next(),
                signer: workload.operator(),
                timestamp: now,
                operation: Operation::RegisterActor { actor, role, prefixes: Vec::new() },
                key: None,
            })
            .collect();
    let results = ledger.submit(workload.sign(registrations))?;
    if !results.iter().all(|r| r.is_committed()) {
        bail!("registering the keystore's actors: {results:?}");
    }
    let mut signed = |key: &caduceus_engine::signature::SigningKey, operation| -> Result<SignedTransaction> {
        let transaction = Transaction { nonce: next(), signer: actor(key), timestamp: now, operation, key: None };
        Ok(caduceus_engine::signature::sign(transaction, key)?)
    };
    let record = (u128::from(now) << 64) | 0xd3e0;
    let hash = store.put(&patient, record, OBSERVATION.as_bytes())?;
    let register =
        Operation::RegisterRecord { record, patient, content_hash: hash, resource_type: "Observation".into() };
    let registered = submit(signed(&reader_key, register)?)?;
    let grant = Operation::GrantConsent {
        consent: 0xd3e0,
        patient,
        grantee: reader,
        scope: vec!["Observation".into()],
        purposes: Purposes::of(&[Purpose::Treatment]),
        valid_from: now,
        valid_until: now + 86_400_000,
    };
    let granted = submit(signed(&patient_key, grant)?)?;
    println!();
    println!(
        "payload store: {} (key-encryption key {}); keystore {}",
        store_dir.display(),
        kek_path.display(),
        keystore.display()
    );
    println!(
        "  record {} of patient {}: {} bytes of FHIR stored encrypted, content hash {} on the ledger: {registered}; consent to provider {}: {granted}",
        &print::id_hex(record)[..12],
        &patient.to_hex()[..16],
        OBSERVATION.len(),
        &hex(&hash)[..16],
        &reader.to_hex()[..16],
    );
    let access = || Operation::AccessRecord { record, patient, purpose: Purpose::Treatment };
    match store.read(ledger, signed(&reader_key, access())?) {
        Ok(payload) => println!(
            "  provider {} reads it: permitted, {} bytes, decrypted and checked against the ledger's hash",
            &reader.to_hex()[..16],
            payload.len()
        ),
        Err(error) => bail!("the consented provider could not read the payload: {error}"),
    }
    match store.read(ledger, signed(&stranger_key, access())?) {
        Err(PayloadError::Refused(reason)) => {
            println!(
                "  provider {} without consent: refused ({reason}), and the attempt is logged",
                &stranger.to_hex()[..16]
            )
        }
        other => bail!("a provider without consent was not refused: {other:?}"),
    }
    let erase = Operation::EraseRecord { record, patient };
    let erase = signed(&patient_key, erase)?;
    let erasure = erase.id();
    let versions = store.erase(ledger, erase)?;
    println!(
        "  the patient erases it (erasure {}): {versions} version's data key and ciphertext destroyed; the ledger keeps its entries",
        print::id_hex(erasure)
    );
    match store.read(ledger, signed(&reader_key, access())?) {
        Err(PayloadError::Erased) => println!("  provider {} again: refused (record-erased)", &reader.to_hex()[..16]),
        other => bail!("an erased record was read: {other:?}"),
    }
    match ledger.reads_as(&stranger)?.access_report(&patient, None, 4) {
        Err(ReadError::Forbidden { role }) => {
            println!(
                "  provider {} asks for the patient's report: refused (a {role} may not read it)",
                &stranger.to_hex()[..16]
            )
        }
        other => bail!("another provider read the patient's report: {other:?}"),
    }
    let report = ledger.reads_as(&patient)?.access_report(&patient, None, 4)?;
    println!("  patient {} reads its own report, newest 4:", &patient.to_hex()[..16]);
    for entry in &report.entries {
        let what = if entry.erasure { "erasure".to_owned() } else { format!("read for {}", print::purpose(entry)) };
        let verdict = match entry.result {
            TxResult::Committed if entry.erasure => "done".to_owned(),
            TxResult::Committed => "permitted".to_owned(),
            TxResult::Rejected(reason) => format!("denied: {reason}"),
        };
        println!("    {} {what} by {}: {verdict}", print::when(entry.time), &entry.accessor.to_hex()[..16]);
    }
    Ok(patient)
}
