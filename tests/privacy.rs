//! What the ledger holds: keys, ids, hashes, amounts and the codes rules need, never health
//! data in clear. The ledger is replicated to every operator and auditor and kept for decades.

use std::collections::BTreeMap;
use std::sync::Arc;

use caduceus_engine::block::BlockBody;
use caduceus_engine::codec::Codec;
use caduceus_engine::layout;
use caduceus_engine::model::{Adjudication, OperationKind};
use caduceus_engine::storage::MemoryStorage;
use caduceus_engine::{Ledger, Operation};
use caduceus_workload::{Workload, WorkloadConfig, DIAGNOSES, PROCEDURES};

const DAY: u64 = 86_400_000;

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|window| window == needle)
}

/// Every byte of a demo ledger's store (block bodies first among them) is searched for the
/// population's names, the codes its claims bill and its service dates: none is there.
#[test]
fn a_demo_ledger_holds_none_of_its_population_s_names_codes_or_dates() {
    let config = WorkloadConfig {
        seed: 21,
        patients: 200,
        providers: 20,
        payers: 3,
        manufacturers: 2,
        distributors: 2,
        pharmacies: 4,
        ..WorkloadConfig::default()
    };
    let now = 1_800_000_000_000;
    let mut workload = Workload::new(config, now);
    let storage = Arc::new(MemoryStorage::new());
    let ledger = Ledger::builder()
        .clock(Arc::new(move || now))
        .open_on(storage.clone(), &workload.ledger_config(4))
        .expect("open");
    for phase in workload.signed_setup() {
        ledger.submit(phase).unwrap();
    }
    for _ in 0..40 {
        ledger.submit(workload.signed_batch(250)).unwrap();
    }
    drop(ledger);
    let store: BTreeMap<Vec<u8>, Vec<u8>> = storage.snapshot();

    // The sample holds what used to carry health data: claims, denials, dispenses,
    // break-glass accesses and actors' registrations.
    let mut kinds: BTreeMap<&str, usize> = BTreeMap::new();
    let mut bodies = Vec::new();
    for (key, value) in store.range(vec![layout::BODY]..vec![layout::BODY + 1]) {
        assert_eq!(key[0], layout::BODY);
        bodies.extend_from_slice(value);
        for (transaction, _) in BlockBody::decode(value).unwrap().entries {
            let operation = &transaction.transaction.operation;
            let kind = match operation {
                Operation::AdjudicateClaim { decision: Adjudication::Deny { .. }, .. } => "deny",
                other => other.name(),
            };
            *kinds.entry(kind).or_default() += 1;
        }
    }
    for kind in [OperationKind::RegisterActor, OperationKind::SubmitClaim, OperationKind::DispenseUnit] {
        assert!(kinds.get(kind.name()).is_some_and(|n| *n > 0), "no {} in {kinds:?}", kind.name());
    }
    assert!(kinds.get("emergency-access").is_some_and(|n| *n > 0), "{kinds:?}");
    assert!(kinds.get("deny").is_some_and(|n| *n > 0), "{kinds:?}");

    let mut everything = bodies;
    for (key, value) in &store {
        everything.extend_from_slice(key);
        everything.extend_from_slice(value);
    }
    let mut needles: Vec<(Vec<u8>, String)> = Vec::new();
    for (_, name) in workload.directory() {
        needles.push((name.clone().into_bytes(), format!("the name {name:?}")));
    }
    for code in PROCEDURES.iter().chain(DIAGNOSES.iter()) {
        if code.len() >= 5 {
            needles.push((code.as_bytes().to_vec(), format!("the code {code}")));
        } else {
            // Too short to search for alone among hashes and signatures: as the codec writes
            // text, after its length.
            for prefix in [vec![code.len() as u8, 0], vec![code.len() as u8, 0, 0, 0]] {
                needles.push(([prefix, code.as_bytes().to_vec()].concat(), format!("the code {code}")));
            }
        }
    }
    for days in 1..=60 {
        let date = caduceus_engine::shard::date_of(now - days * DAY);
        let iso = format!("{}-{:02}-{:02}", date / 10_000, date / 100 % 100, date % 100);
        needles.push((date.to_string().into_bytes(), format!("the service date {date}")));
        needles.push((iso.clone().into_bytes(), format!("the service date {iso}")));
    }
    assert!(needles.len() > 200, "{} needles", needles.len());
    for (needle, what) in &needles {
        assert!(!contains(&everything, needle), "{what} is on the ledger");
    }
}

mod payloads {
    use std::path::Path;
    use std::sync::Arc;

    use caduceus_engine::model::{Purpose, Purposes, Reason};
    use caduceus_engine::payload::{FileKek, KeyEncryptionKey, PayloadError, PayloadStore};
    use caduceus_engine::storage::{RocksStorage, Storage};
    use caduceus_engine::Operation;

    use crate::support::{check, committed, rejected, World, DAY, START};

    /// A real FHIR R4 resource from the shared corpus.
    fn observation() -> Vec<u8> {
        std::fs::read("data/fhir-r4-examples-hl7/Observation-10minute-apgar-score.json")
            .or_else(|_| std::fs::read("tests/data/fhir-r4-examples-hl7/Observation-10minute-apgar-score.json"))
            .expect("the corpus's FHIR example")
    }

    /// A payload store on RocksDB in `directory/payloads`, its key-encryption key beside it.
    fn store(directory: &Path) -> (PayloadStore, Arc<RocksStorage>) {
        let kek = FileKek::open_or_create(&directory.join("kek")).unwrap();
        let storage = Arc::new(RocksStorage::open_for_payloads(&directory.join("payloads")).unwrap());
        (PayloadStore::new(storage.clone(), Box::new(kek)), storage)
    }

    fn stored(storage: &RocksStorage, family: u8, hash: &[u8; 32]) -> Option<Vec<u8>> {
        storage.get(&[&[family][..], hash].concat()).unwrap()
    }

    fn register(world: &World, record: u128, content_hash: [u8; 32]) -> Operation {
        Operation::RegisterRecord {
            record,
            patient: world.patient.id,
            content_hash,
            resource_type: "Observation".into(),
        }
    }

    fn access(world: &World, record: u128, purpose: Purpose) -> Operation {
        Operation::AccessRecord { record, patient: world.patient.id, purpose }
    }

    /// The patient reads its own payload; a provider without consent is refused (and the
    /// attempt is in the patient's report), then reads it once consent is granted; a changed
    /// ciphertext is refused as not matching the ledger; only an access reads.
    #[test]
    fn a_payload_is_read_only_through_a_permitted_access_and_checked_against_the_ledger() {
        let directory = tempfile::tempdir().unwrap();
        let (store, storage) = store(directory.path());
        let world = World::new();
        let ledger = world.ledger(4);
        let payload = observation();
        let hash = store.put(&world.patient.id, 11, &payload).unwrap();
        check(&world, &ledger, &[(&world.doctor, register(&world, 11, hash), committed())]);
        // Encrypted at rest.
        let object = stored(&storage, b'O', &hash).expect("stored");
        assert!(!super::contains(&object, &payload[..64]));

        let read = store.read(&ledger, world.tx(&world.patient, access(&world, 11, Purpose::PatientRequest))).unwrap();
        assert_eq!(read.as_slice(), payload.as_slice());
        let refused = store.read(&ledger, world.tx(&world.nurse, access(&world, 11, Purpose::Treatment)));
        assert!(matches!(refused, Err(PayloadError::Refused(Reason::ConsentMissing))), "{refused:?}");
        let grant = Operation::GrantConsent {
            consent: 1,
            patient: world.patient.id,
            grantee: world.nurse.id,
            scope: vec!["Observation".into()],
            purposes: Purposes::of(&[Purpose::Treatment]),
            valid_from: START - DAY,
            valid_until: START + DAY,
        };
        check(&world, &ledger, &[(&world.patient, grant, committed())]);
        let nurse_access = world.tx(&world.nurse, access(&world, 11, Purpose::Treatment));
        let read = store.read(&ledger, nurse_access.clone()).unwrap();
        // The same signed access again (a copy from a block, say) reads nothing: each read is a
        // new access on the patient's report.
        assert!(matches!(store.read(&ledger, nurse_access), Err(PayloadError::Replayed)));
        assert_eq!(read.as_slice(), payload.as_slice());
        let report = world.reads(&ledger, &world.patient).access_report(&world.patient.id, None, 10).unwrap();
        let seen: Vec<(bool, bool)> =
            report.entries.iter().map(|e| (e.accessor == world.nurse.id, e.permitted())).collect();
        assert_eq!(seen, vec![(true, true), (true, false), (false, true)], "newest first");

        let not_an_access = store.read(&ledger, world.tx(&world.doctor, register(&world, 12, hash)));
        assert!(matches!(not_an_access, Err(PayloadError::WrongOperation("register-record"))));
        let mut changed = object.clone();
        changed[40] ^= 1;
        storage.write(&[([&[b'O'][..], &hash].concat(), Some(changed))]).unwrap();
        let damaged = store.read(&ledger, world.tx(&world.patient, access(&world, 11, Purpose::PatientRequest)));
        assert!(matches!(damaged, Err(PayloadError::Damaged(_))), "{damaged:?}");
    }

    fn every_file(directory: &Path, out: &mut Vec<(std::path::PathBuf, Vec<u8>)>) {
        for entry in std::fs::read_dir(directory).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                every_file(&path, out);
            } else {
                out.push((path.clone(), std::fs::read(&path).unwrap()));
            }
        }
    }

    /// An erasure committed and never shredded (the process stopped between the two, or it went
    /// to the ledger without the store) is shredded when the store settles; a marked erasure
    /// the ledger refused destroys nothing, and its mark goes once it can no longer commit.
    #[test]
    fn an_erasure_a_crash_interrupted_is_shredded_when_the_store_settles() {
        use caduceus_engine::payload::Erasure;
        let directory = tempfile::tempdir().unwrap();
        let world = World::new();
        let ledger = world.ledger(4);
        let erase = |who: &crate::support::Actor, record| {
            world.tx(who, Operation::EraseRecord { record, patient: world.patient.id })
        };
        let hashes = {
            let (store, _) = store(directory.path());
            let mut hashes = Vec::new();
            for record in [11, 12, 13] {
                let hash = store.put(&world.patient.id, record, &observation()).unwrap();
                check(&world, &ledger, &[(&world.doctor, register(&world, record, hash), committed())]);
                hashes.push(hash);
            }
            // Record 11's erasure is marked and committed, and the process stops before shredding.
            let (first, refused) = (erase(&world.patient, 11), erase(&world.other_patient, 12));
            store.mark_erasing(&[Erasure::of(&first).unwrap(), Erasure::of(&refused).unwrap()]).unwrap();
            assert!(ledger.submit(vec![first]).unwrap()[0].is_committed());
            // Record 12's was signed by someone else, and refused.
            assert_eq!(ledger.submit(vec![refused]).unwrap()[0], rejected(Reason::NotThePatient));
            // Record 13's went to the ledger without the store.
            assert!(ledger.submit(vec![erase(&world.patient, 13)]).unwrap()[0].is_committed());
            hashes
        };
        let (store, storage) = store(directory.path());
        let marks = || {
            let mut marks = 0;
            storage
                .scan(b"E", &mut |_, _| {
                    marks += 1;
                    true
                })
                .unwrap();
            marks
        };
        assert!(hashes.iter().all(|hash| stored(&storage, b'K', hash).is_some()), "the keys outlived the erasures");
        assert_eq!(marks(), 2);
        assert_eq!(store.settle(&ledger, START).unwrap(), 2, "records 11 and 13");
        for hash in [hashes[0], hashes[2]] {
            assert!(stored(&storage, b'K', &hash).is_none() && stored(&storage, b'O', &hash).is_none());
        }
        assert!(stored(&storage, b'K', &hashes[1]).is_some(), "a refused erasure destroys nothing");
        assert_eq!(marks(), 1, "the refused erasure's mark stays while it could still commit");
        assert_eq!(store.settle(&ledger, START + 2 * DAY).unwrap(), 0, "settled once");
        assert_eq!(marks(), 0, "and goes once it cannot");
        let read = store.read(&ledger, world.tx(&world.patient, access(&world, 12, Purpose::PatientRequest)));
        assert!(read.is_ok(), "{read:?}");
    }

    /// As an auditor would test it: after the patient erases a record, no file under the
    /// ledger's and the payload store's directories holds the data key, the wrapped data key
    /// or any run of the payload's plaintext; the access report shows the erasure; nobody
    /// reads it again; and the ledger still verifies, its proofs too.
    #[test]
    fn an_erased_record_leaves_no_key_or_plaintext_in_any_file_and_the_ledger_still_verifies() {
        let directory = tempfile::tempdir().unwrap();
        let (store, payload_storage) = store(directory.path());
        let kek = FileKek::open_or_create(&directory.path().join("kek")).unwrap();
        let world = World::new();
        let ledger_directory = directory.path().join("ledger");
        let storage = Arc::new(RocksStorage::open(&ledger_directory).unwrap());
        let ledger = world.ledger_with(storage.clone(), 4, None);
        let payload = observation();
        let hash = store.put(&world.patient.id, 11, &payload).unwrap();
        let registration = world.tx(&world.doctor, register(&world, 11, hash));
        assert!(ledger.submit(vec![registration.clone()]).unwrap()[0].is_committed());
        assert!(store.read(&ledger, world.tx(&world.patient, access(&world, 11, Purpose::PatientRequest))).is_ok());

        // What must not survive: the data key, the wrapped key (the KEK opens it) and the plaintext.
        let wrapped = stored(&payload_storage, b'K', &hash).expect("the wrapped data key is stored");
        let context = [b"caduceus.payload.1".as_slice(), &world.patient.id.0, &11u128.to_be_bytes(), &hash].concat();
        let data_key = kek.unwrap(&wrapped, &context).expect("the KEK opens the stored data key");
        let runs: Vec<&[u8]> = payload.chunks(32).filter(|run| run.len() == 32).collect();
        let search = |what: &[u8]| -> Vec<std::path::PathBuf> {
            let mut files = Vec::new();
            every_file(&ledger_directory, &mut files);
            every_file(&directory.path().join("payloads"), &mut files);
            files.into_iter().filter(|(_, bytes)| super::contains(bytes, what)).map(|(path, _)| path).collect()
        };
        assert!(!search(&wrapped).is_empty(), "the search finds the wrapped key while the record stands");
        assert!(runs.iter().all(|run| search(run).is_empty()), "the payload is encrypted at rest");

        let erase = Operation::EraseRecord { record: 11, patient: world.patient.id };
        assert_eq!(store.erase(&ledger, world.tx(&world.patient, erase.clone())).unwrap(), 1);
        let again = store.read(&ledger, world.tx(&world.patient, access(&world, 11, Purpose::PatientRequest)));
        assert!(matches!(again, Err(PayloadError::Erased)), "{again:?}");
        let amend = Operation::AmendRecord { record: 11, patient: world.patient.id, content_hash: [9; 32] };
        check(&world, &ledger, &[(&world.doctor, amend, rejected(Reason::RecordErased))]);
        let newest = world.reads(&ledger, &world.patient).access_report(&world.patient.id, None, 10).unwrap().entries;
        assert!(newest.iter().any(|e| e.erasure && e.accessor == world.patient.id && e.permitted()), "{newest:?}");
        // Another patient cannot erase it.
        check(&world, &ledger, &[(&world.other_patient, erase, rejected(Reason::NotThePatient))]);
        drop(ledger);

        assert!(search(data_key.as_ref()).is_empty(), "the data key is in a file");
        assert!(search(&wrapped).is_empty(), "the wrapped data key is still in a file");
        for run in &runs {
            assert!(search(run).is_empty(), "plaintext of the payload is still in a file");
        }
        let report = caduceus_engine::verify::verify_storage(storage.as_ref()).unwrap();
        assert!(report.is_intact(), "{:?}", report.problems);
        let ledger =
            caduceus_engine::Ledger::builder().clock(world.clock()).open_on(storage, &world.config(4)).unwrap();
        let proof = world
            .reads(&ledger, &world.patient)
            .prove(registration.id())
            .unwrap()
            .expect("the registration stays provable");
        let checkpoint = ledger.checkpoint_at(proof.checkpoint_round).unwrap().unwrap();
        proof.verify(&checkpoint.hash()).unwrap();
    }
}

/// With a payload store, the workload (what `loadgen --payloads` runs) seals each record
/// version's payload before signing its registration: every registered content hash is a stored
/// ciphertext that its patient reads back.
#[test]
fn the_workload_s_registrations_carry_the_hashes_of_stored_payloads() {
    use caduceus_engine::model::Purpose;
    use caduceus_engine::payload::{FileKek, PayloadStore};
    use caduceus_engine::Transaction;

    let directory = tempfile::tempdir().unwrap();
    let kek = FileKek::open_or_create(&directory.path().join("kek")).unwrap();
    let storage =
        Arc::new(caduceus_engine::storage::RocksStorage::open_for_payloads(&directory.path().join("p")).unwrap());
    let store = Arc::new(PayloadStore::new(storage, Box::new(kek)));
    let config = WorkloadConfig { seed: 5, patients: 50, providers: 10, ..WorkloadConfig::default() };
    let now = 1_800_000_000_000;
    let mut workload = Workload::new(config, now).with_payloads(store.clone());
    let ledger = Ledger::builder()
        .clock(Arc::new(move || now))
        .open_on(Arc::new(MemoryStorage::new()), &workload.ledger_config(2))
        .unwrap();
    for phase in workload.signed_setup() {
        ledger.submit(phase).unwrap();
    }
    assert!(workload.take_sealed().is_empty(), "setup registers no records");
    let mut registered = Vec::new();
    for _ in 0..4 {
        let batch = workload.signed_batch(200);
        let sealed = workload.take_sealed();
        store.store(&sealed).unwrap();
        let results = ledger.submit(batch.clone()).unwrap();
        for (transaction, result) in batch.iter().zip(results) {
            if let Operation::RegisterRecord { record, patient, content_hash, .. } = &transaction.transaction.operation
            {
                assert!(result.is_committed());
                assert!(sealed.iter().any(|s| s.hash == *content_hash), "the registration's payload was sealed");
                registered.push((*patient, *record));
            }
        }
    }
    assert!(registered.len() > 20, "{} registrations", registered.len());
    for (index, (patient, record)) in registered.iter().enumerate().step_by(7) {
        let access = Transaction {
            nonce: 1_000_000 + index as u128,
            signer: *patient,
            timestamp: now,
            operation: Operation::AccessRecord { record: *record, patient: *patient, purpose: Purpose::PatientRequest },
            key: None,
        };
        let payload = store.read(&ledger, workload.sign(vec![access]).remove(0)).unwrap();
        let text = String::from_utf8(payload.to_vec()).unwrap();
        assert!(text.starts_with("{\"resourceType\":") && text.contains(&format!("{record:032x}")), "{text}");
    }
}

/// The embedded ledger's reads of health data take the reader: each goes to the actors it
/// concerns (and an auditor, whose every read is committed on the ledger first), and everyone
/// else gets `Forbidden`; an unregistered or revoked reader gets nothing at all.
mod reads {
    use caduceus_engine::model::{Purpose, Purposes, Role};
    use caduceus_engine::{ClaimLine, Operation, ReadError, Reads, UnitId};

    use crate::support::{check, committed, submit_claim, Actor, World, DAY, START};

    #[test]
    fn each_embedded_read_goes_to_its_parties_and_a_logged_auditor_only() {
        let w = World::new();
        let ledger = w.ledger(4);
        let auditor = Actor::new("auditor");
        let patient = w.patient.id;
        let unit = UnitId { gtin: 30_001_001_234_568, serial: "R1".into() };
        let lines = [ClaimLine { procedure: "99213".into(), diagnosis: "E11.9".into(), amount: 9_000 }];
        let record = Operation::RegisterRecord {
            record: 5,
            patient,
            content_hash: [1; 32],
            resource_type: "Observation".into(),
        };
        let grant = Operation::GrantConsent {
            consent: 6,
            patient,
            grantee: w.nurse.id,
            scope: vec!["Observation".into()],
            purposes: Purposes::of(&[Purpose::Treatment]),
            valid_from: START - DAY,
            valid_until: START + DAY,
        };
        let commission = Operation::CommissionUnit { unit: unit.clone(), lot: "L1".into(), expiry: START + 90 * DAY };
        let registration = w.tx(&w.doctor, record);
        assert!(ledger.submit(vec![registration.clone()]).unwrap()[0].is_committed());
        let auditor_registration =
            Operation::RegisterActor { actor: auditor.id, role: Role::Auditor, prefixes: vec![] };
        check(
            &w,
            &ledger,
            &[
                (&w.operator, auditor_registration, committed()),
                (&w.patient, grant, committed()),
                (&w.nurse, Operation::AccessRecord { record: 5, patient, purpose: Purpose::Treatment }, committed()),
                (&w.doctor, submit_claim(7, &patient, &w.doctor.id, &w.payer.id, 2027_01_10, &lines), committed()),
                (&w.payer, Operation::FundAccount { amount: 5_000 }, committed()),
                (&w.manufacturer, commission, committed()),
                (&w.manufacturer, Operation::ShipUnit { unit: unit.clone(), to: w.distributor.id }, committed()),
            ],
        );

        // Each read, with who may make it and who may not.
        type Read<'a> = Box<dyn Fn(&Reads<'_>) -> Result<bool, ReadError> + 'a>;
        // (what, the read, who may make it, who may not)
        type Case<'a> = (&'a str, Read<'a>, Vec<&'a Actor>, Vec<&'a Actor>);
        let reads: Vec<Case<'_>> = vec![
            (
                "access report",
                Box::new(|r| Ok(r.access_report(&patient, None, 10)?.total > 0)),
                vec![&w.patient],
                vec![&w.doctor, &w.nurse, &w.payer, &w.regulator, &w.other_patient],
            ),
            (
                "records",
                Box::new(|r| Ok(r.records(&patient, None, 10)?.entries.len() == 1)),
                vec![&w.patient],
                vec![&w.doctor, &w.nurse, &w.other_patient],
            ),
            (
                "consents",
                Box::new(|r| Ok(r.consents(&patient, None, 10)?.entries[0].1.grantee == w.nurse.id)),
                vec![&w.patient],
                vec![&w.nurse, &w.doctor, &w.payer],
            ),
            (
                "record",
                Box::new(|r| Ok(r.record(&patient, 5)?.is_some_and(|r| r.custodian == w.doctor.id))),
                vec![&w.patient, &w.doctor],
                vec![&w.nurse, &w.payer, &w.other_patient],
            ),
            (
                "a missing record",
                Box::new(|r| Ok(r.record(&patient, 99)?.is_none())),
                vec![&w.patient],
                vec![&w.doctor, &w.nurse],
            ),
            (
                "claim",
                Box::new(|r| Ok(r.claim(&patient, 7)?.is_some_and(|c| c.total == 9_000))),
                vec![&w.patient, &w.doctor, &w.payer],
                vec![&w.nurse, &w.other_patient],
            ),
            (
                "account",
                Box::new(|r| Ok(r.account(&w.payer.id)?.is_some_and(|a| a.balance == 5_000))),
                vec![&w.payer],
                vec![&w.doctor, &w.patient],
            ),
            (
                "custody trail",
                Box::new(|r| Ok(r.custody_trace(&unit, None, 10)?.total == 2)),
                vec![&w.manufacturer, &w.distributor, &w.regulator],
                vec![&w.pharmacy, &w.patient],
            ),
            (
                "transaction",
                Box::new(|r| Ok(r.transaction(registration.id())?.is_some())),
                vec![&w.doctor, &w.patient],
                vec![&w.nurse, &w.payer],
            ),
            (
                "proof",
                Box::new(|r| Ok(r.prove(registration.id())?.is_some())),
                vec![&w.doctor, &w.patient],
                vec![&w.nurse, &w.payer],
            ),
        ];
        for (what, read, allowed, refused) in &reads {
            for actor in allowed {
                assert!(read(&ledger.reads_as(&actor.id).unwrap()).unwrap(), "{what}: the answer");
                // `audits_as` with the actor's own key reads the same for any other role.
                assert!(read(&ledger.audits_as(&actor.id, &actor.key).unwrap()).unwrap(), "{what}, signed");
            }
            for actor in refused {
                let refusal = read(&ledger.reads_as(&actor.id).unwrap());
                assert!(matches!(refusal, Err(ReadError::Forbidden { .. })), "{what} read by another: {refusal:?}");
            }
            let audits = ledger.audits_as(&auditor.id, &auditor.key).unwrap();
            let before = ledger.heights().iter().sum::<u64>();
            assert!(read(&audits).unwrap(), "{what}: the auditor's answer");
            assert!(ledger.heights().iter().sum::<u64>() > before, "{what}: the auditor's read is on the ledger");
        }
        // The same question twice, from two handles at the same time: each read logged anew.
        for _ in 0..2 {
            let audits = ledger.audits_as(&auditor.id, &auditor.key).unwrap();
            audits.access_report(&patient, None, 1).unwrap();
        }
        // The auditor's reads that name the patient are in the patient's report, as audits.
        let report = ledger.reads_as(&patient).unwrap().access_report(&patient, None, 50).unwrap();
        let audits = report.entries.iter().filter(|e| e.audit && e.accessor == auditor.id).count();
        assert_eq!(
            audits, 8,
            "the access report (three times), records, consents, the record, the missing one, the claim"
        );

        // An auditor reads only with its key, so that its reads are logged.
        assert!(matches!(ledger.reads_as(&auditor.id), Err(ReadError::Unlogged)));
        assert!(matches!(ledger.audits_as(&auditor.id, &w.patient.key), Err(ReadError::WrongKey)));
        // No one unregistered, and no one revoked, reads anything.
        assert!(matches!(ledger.reads_as(&w.stranger.id), Err(ReadError::UnknownReader)));
        check(&w, &ledger, &[(&w.operator, Operation::RevokeActor { actor: w.nurse.id }, committed())]);
        assert!(matches!(ledger.reads_as(&w.nurse.id), Err(ReadError::UnknownReader)));
    }
}
