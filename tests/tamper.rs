//! Tamper tests: any changed byte, deleted key or added key anywhere in the
//! store is found by `verify`, which names the place; an intact store passes.

use std::collections::BTreeMap;
use std::sync::Arc;

use caduceus_engine::layout;
use caduceus_engine::storage::{MemoryStorage, RocksStorage, Storage};
use caduceus_engine::verify::verify_storage;
use caduceus_engine::Ledger;
use caduceus_workload::{Workload, WorkloadConfig};

/// A small ledger with every kind of key: all three families, cross-shard payments and recalls.
pub fn small_ledger(storage: Arc<dyn Storage>, transactions: usize) -> Ledger {
    let config = WorkloadConfig {
        seed: 3,
        patients: 25,
        providers: 6,
        payers: 2,
        manufacturers: 2,
        distributors: 2,
        pharmacies: 3,
        ..WorkloadConfig::default()
    };
    let mut workload = Workload::new(config, 1_800_000_000_000);
    let ledger = Ledger::builder()
        .clock(Arc::new(|| 1_800_000_000_000))
        .open_on(storage, &workload.ledger_config(3))
        .expect("open");
    for phase in workload.signed_setup() {
        assert!(ledger.submit(phase).unwrap().iter().all(|r| r.is_committed()));
    }
    for _ in 0..transactions / 50 {
        ledger.submit(workload.signed_batch(50)).unwrap();
    }
    let recall = workload.sign(vec![caduceus_engine::Transaction {
        nonce: 0xdead,
        signer: workload.regulator(),
        timestamp: 0,
        operation: caduceus_engine::Operation::RecallLot {
            gtin: 3_000_000_000_000,
            lot: "L0000".into(),
            reason: caduceus_engine::model::RecallClass::ClassII,
        },
        key: None,
    }]);
    ledger.submit(recall).unwrap();
    ledger
}

fn families(map: &BTreeMap<Vec<u8>, Vec<u8>>) -> Vec<u8> {
    let mut prefixes: Vec<u8> = map.keys().map(|k| k[0]).collect();
    prefixes.dedup();
    prefixes
}

#[test]
fn every_changed_deleted_or_added_key_is_reported() {
    let storage = Arc::new(MemoryStorage::new());
    let ledger = small_ledger(storage.clone(), 300);
    drop(ledger);
    let original = storage.snapshot();
    assert_eq!(families(&original), b"ABCDHMSTU".to_vec(), "the sample holds every family of key");

    let intact = verify_storage(&MemoryStorage::from_map(original.clone())).unwrap();
    assert!(intact.is_intact(), "{:?}", intact.problems);
    assert!(intact.transactions > 300, "{}", intact.transactions);

    let mut checked = 0;
    for (index, (key, value)) in original.iter().enumerate() {
        let mut changed = original.clone();
        let position = (index * 7919) % value.len().max(1);
        let mut tampered = value.clone();
        if tampered.is_empty() {
            tampered.push(0);
        } else {
            tampered[position] ^= 1 << (index % 8);
        }
        changed.insert(key.clone(), tampered);
        let report = verify_storage(&MemoryStorage::from_map(changed)).unwrap();
        assert!(!report.is_intact(), "a changed byte in {} went unnoticed", layout::describe(key));

        let mut deleted = original.clone();
        deleted.remove(key);
        let report = verify_storage(&MemoryStorage::from_map(deleted)).unwrap();
        assert!(!report.is_intact(), "deleting {} went unnoticed", layout::describe(key));
        checked += 1;
    }
    assert_eq!(checked, original.len());

    let mut added = original.clone();
    added.insert(layout::transaction(42), vec![0; 18]);
    let report = verify_storage(&MemoryStorage::from_map(added)).unwrap();
    assert!(report.problems.iter().any(|p| p.place.starts_with("transaction index")), "{:?}", report.problems);
}

#[test]
fn verify_names_the_damaged_place_on_rocksdb() {
    let dir = tempfile::tempdir().unwrap();
    let storage: Arc<dyn Storage> = Arc::new(RocksStorage::open(dir.path()).unwrap());
    drop(small_ledger(storage.clone(), 200));
    assert!(verify_storage(storage.as_ref()).unwrap().is_intact());

    let cases: [(Vec<u8>, &str); 3] = [
        (layout::header(1, 1), "shard 1 height 1"),
        (layout::body(2, 2), "shard 2 height 2"),
        (layout::META_ROUND.to_vec(), "metadata round"),
    ];
    for (key, place) in cases {
        let original = storage.get(&key).unwrap().expect("the key exists");
        let mut changed = original.clone();
        let last = changed.len() - 1;
        changed[last] ^= 0x80;
        storage.write(&[(key.clone(), Some(changed))]).unwrap();
        let report = verify_storage(storage.as_ref()).unwrap();
        assert!(report.problems.iter().any(|p| p.place.contains(place)), "{place}: {:?}", report.problems);
        storage.write(&[(key, Some(original))]).unwrap();
    }
    // A deleted state entry: the first account.
    let mut account = None;
    storage
        .scan(&layout::state_prefix(0), &mut |key, value| {
            if key[5] == 6 {
                account = Some((key.to_vec(), value.to_vec()));
            }
            account.is_none()
        })
        .unwrap();
    let (key, _) = account.expect("shard 0 holds an account");
    storage.write(&[(key.clone(), None)]).unwrap();
    let report = verify_storage(storage.as_ref()).unwrap();
    assert!(
        report.problems.iter().any(|p| p.place.starts_with("state entry shard 0") && p.detail.contains("missing")),
        "{:?}",
        report.problems
    );
}

/// A store that is self-consistent but does not extend a checkpoint published earlier is
/// refused against that anchor: one cut short by whole rounds, and one rebuilt without one
/// transaction. The original passes against every anchor it published.
#[test]
fn a_store_cut_short_or_rebuilt_fails_against_a_published_checkpoint() {
    use caduceus_engine::verify::verify_against;
    let config = WorkloadConfig {
        seed: 8,
        patients: 25,
        providers: 6,
        payers: 2,
        manufacturers: 2,
        pharmacies: 3,
        ..WorkloadConfig::default()
    };
    let mut workload = Workload::new(config, 1_800_000_000_000);
    let mut batches: Vec<Vec<caduceus_engine::SignedTransaction>> = workload.signed_setup().into_iter().collect();
    batches.extend((0..4).map(|_| workload.signed_batch(100)));
    // The same batches on every store, at the same fixed commit time: the same checkpoints.
    let build_on = |config: &caduceus_engine::Config, batches: &[Vec<caduceus_engine::SignedTransaction>]| {
        let storage = Arc::new(MemoryStorage::new());
        let ledger =
            Ledger::builder().clock(Arc::new(|| 1_800_000_000_000)).open_on(storage.clone(), config).expect("open");
        let mut anchors = Vec::new();
        for batch in batches {
            ledger.submit(batch.clone()).unwrap();
            anchors.push(ledger.checkpoint().unwrap().hash());
        }
        (storage, anchors)
    };
    let build = |batches: &[Vec<caduceus_engine::SignedTransaction>]| build_on(&workload.ledger_config(3), batches);
    let (original, anchors) = build(&batches);
    let (early, late) = (anchors[2], *anchors.last().unwrap());
    assert!(verify_against(original.as_ref(), &[early, late]).unwrap().is_intact());

    // Cut short by whole rounds: intact on its own, and against the early anchor, not the late.
    let (short, _) = build(&batches[..batches.len() - 2]);
    assert!(verify_against(short.as_ref(), &[early]).unwrap().is_intact());
    let report = verify_against(short.as_ref(), &[late]).unwrap();
    assert!(!report.is_intact());
    assert!(report.problems[0].detail.contains("does not extend"), "{:?}", report.problems);

    // Rebuilt without one transaction of the last batch: intact on its own, not against the anchor.
    let mut rebuilt = batches.clone();
    rebuilt.last_mut().unwrap().remove(7);
    let (without, _) = build(&rebuilt);
    assert!(verify_storage(without.as_ref()).unwrap().is_intact());
    assert!(verify_against(without.as_ref(), &[early]).unwrap().is_intact());
    assert!(!verify_against(without.as_ref(), &[late]).unwrap().is_intact());

    // Rebuilt from another genesis (one more operator), with the same batches: the chain starts
    // from the genesis, so it is intact on its own and extends not even the earliest anchor.
    let mut config = workload.ledger_config(3);
    config.genesis_operators.push(caduceus_engine::ActorKey([7; 32]));
    let (regenesis, _) = build_on(&config, &batches);
    assert!(verify_storage(regenesis.as_ref()).unwrap().is_intact());
    assert!(!verify_against(regenesis.as_ref(), &[anchors[0]]).unwrap().is_intact());
    let report = verify_against(original.as_ref(), &[]).unwrap();
    assert_eq!(report.operators, vec![workload.operator()], "the report names the genesis it checked");
}

/// With the replayed state in a scratch store and a state cache of a few entries (what
/// `caduceus verify` does, for memory that does not grow with history), verification finds
/// the same: an intact store passes with the same counts, and a changed, deleted or added
/// state entry, or an added index entry, is named.
#[test]
fn verify_with_its_state_in_a_scratch_store_finds_the_same() {
    use caduceus_engine::verify::{verify_stores_with, Report, Scratch, Stores};
    let storage = Arc::new(MemoryStorage::new());
    drop(small_ledger(storage.clone(), 300));
    let original = storage.snapshot();
    let bounded = |map: &BTreeMap<Vec<u8>, Vec<u8>>| -> Report {
        let scratch = MemoryStorage::new();
        let store = MemoryStorage::from_map(map.clone());
        verify_stores_with(Stores::Embedded(&store), &[], Some(Scratch { storage: &scratch, entries: 4 })).unwrap()
    };
    let in_memory = verify_storage(&MemoryStorage::from_map(original.clone())).unwrap();
    let report = bounded(&original);
    assert!(report.is_intact(), "{:?}", report.problems);
    assert_eq!(report, in_memory, "the same counts either way");

    let states: Vec<(&Vec<u8>, &Vec<u8>)> = original.iter().filter(|(key, _)| key[0] == layout::STATE).collect();
    assert!(states.len() > 100, "{} state entries", states.len());
    for (index, (key, value)) in states.iter().enumerate().step_by(3) {
        let place = layout::describe(key);
        let mut changed = original.clone();
        let mut tampered = (*value).clone();
        let position = index % tampered.len();
        tampered[position] ^= 1;
        changed.insert((*key).clone(), tampered);
        let report = bounded(&changed);
        assert!(
            report.problems.iter().any(|p| p.place == place && p.detail.contains("changed")),
            "{place}: {report:?}"
        );

        let mut deleted = original.clone();
        deleted.remove(*key);
        let report = bounded(&deleted);
        assert!(
            report.problems.iter().any(|p| p.place == place && p.detail.contains("missing")),
            "{place}: {report:?}"
        );
    }
    // An entry no block implies: a state key with its last byte changed; and a transaction
    // index entry, which a second replay (into the emptied scratch store) names.
    let mut added = original.clone();
    let mut key = states[states.len() / 2].0.clone();
    *key.last_mut().unwrap() ^= 0x55;
    added.insert(key.clone(), states[0].1.clone());
    added.insert(layout::transaction(42), vec![0; 18]);
    let report = bounded(&added);
    assert!(report.problems.iter().any(|p| p.place == layout::describe(&key)), "{:?}", report.problems);
    assert!(report.problems.iter().any(|p| p.place.starts_with("transaction index")), "{:?}", report.problems);
}
