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
