//! Crashes at every point lose nothing acknowledged, and recovery restores
//! exactly the durable state: simulated (fault-injecting storage), a failing
//! disk, real SIGKILLs of a writer process, and a torn RocksDB WAL tail.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use caduceus_engine::ledger::Options;
use caduceus_engine::model::TxResult;
use caduceus_engine::storage::{FaultyStorage, MemoryStorage, RocksStorage, Storage};
use caduceus_engine::verify::verify_storage;
use caduceus_engine::{Ledger, OpenError, SignedTransaction, SubmitError};
use caduceus_workload::{Workload, WorkloadConfig};

fn batches() -> (Workload, Vec<Vec<SignedTransaction>>) {
    let config =
        WorkloadConfig { seed: 11, patients: 40, providers: 8, payers: 2, pharmacies: 4, ..WorkloadConfig::default() };
    let mut workload = Workload::new(config, 1_800_000_000_000);
    let mut batches = workload.signed_setup().to_vec();
    for _ in 0..24 {
        batches.push(workload.signed_batch(40));
    }
    (workload, batches)
}

/// The tests' ledger: 3 shards, a fixed clock, these options.
fn open_on(workload: &Workload, storage: Arc<dyn Storage>, options: &Options) -> Result<Ledger, OpenError> {
    Ledger::builder()
        .clock(Arc::new(|| 1_800_000_000_000))
        .options(options.clone())
        .open_on(storage, &workload.ledger_config(3))
}

fn open(workload: &Workload, storage: Arc<dyn Storage>) -> Ledger {
    open_on(workload, storage, &Options::default()).expect("open")
}

#[test]
fn a_crash_after_any_write_loses_nothing_acknowledged() {
    let (workload, batches) = batches();
    // The crash-free run, one batch per round.
    let reference = open(&workload, Arc::new(MemoryStorage::new()));
    let expected: Vec<Vec<TxResult>> = batches.iter().map(|b| reference.submit(b.clone()).unwrap()).collect();
    let final_hash = reference.state_hash().unwrap();

    for crash_point in 0..=batches.len() as u64 {
        let storage = Arc::new(FaultyStorage::new());
        let ledger = open(&workload, storage.clone());
        storage.crash_after(crash_point);
        let mut acknowledged = HashMap::new();
        for batch in &batches {
            match ledger.submit(batch.clone()) {
                Ok(results) => acknowledged.extend(batch.iter().map(|t| t.id()).zip(results)),
                Err(SubmitError::Storage(_)) => {}
                Err(other) => panic!("unexpected {other}"),
            }
        }
        let hash_at_crash = ledger.state_hash().unwrap();
        drop(ledger);

        let durable = Arc::new(MemoryStorage::from_map(storage.durable()));
        let report = verify_storage(durable.as_ref()).unwrap();
        assert!(report.is_intact(), "crash point {crash_point}: {:?}", report.problems);
        let reopened = open(&workload, durable.clone());
        assert_eq!(
            reopened.state_hash().unwrap(),
            hash_at_crash,
            "crash point {crash_point}: reopening restores the durable state"
        );
        for (id, result) in &acknowledged {
            let location = reopened.locate(*id).unwrap();
            if !result.is_recorded() {
                assert!(location.is_none(), "crash point {crash_point}: refused {id:x} recorded");
                continue;
            }
            let location = location.unwrap_or_else(|| panic!("crash point {crash_point}: acknowledged {id:x} lost"));
            assert_eq!(location.result, *result);
        }
        // Resubmitting everything completes the work exactly once.
        for (batch, expected) in batches.iter().zip(&expected) {
            assert_eq!(&reopened.submit(batch.clone()).unwrap(), expected, "crash point {crash_point}");
        }
        assert_eq!(reopened.state_hash().unwrap(), final_hash, "crash point {crash_point}");
    }
}

#[test]
fn a_failing_disk_loses_the_batch_cleanly_and_the_ledger_keeps_serving() {
    let (workload, batches) = batches();
    let storage = Arc::new(FaultyStorage::new());
    let ledger = open(&workload, storage.clone());
    ledger.submit(batches[0].clone()).unwrap();
    let before = ledger.state_hash().unwrap();
    storage.fail_next_writes(1);
    assert!(matches!(ledger.submit(batches[1].clone()), Err(SubmitError::Storage(_))));
    assert_eq!(ledger.state_hash().unwrap(), before, "nothing of the failed round is applied");
    assert!(ledger.locate(batches[1][0].id()).unwrap().is_none());
    let results = ledger.submit(batches[1].clone()).unwrap();
    assert_eq!(results.len(), batches[1].len());
    assert!(verify_storage(storage.as_ref()).unwrap().is_intact());
}

/// With writes slower than execution, several groups are executed ahead of storage. A write
/// that fails then takes every group executed on top of it down too: each batch is either
/// acknowledged and durable, or refused and absent. Queries meanwhile never report more than
/// is durable.
#[test]
fn a_failed_write_refuses_the_groups_executed_on_top_of_it() {
    let (workload, batches) = batches();
    let storage = Arc::new(FaultyStorage::new());
    let ledger = open(&workload, storage.clone());
    for batch in &batches[..2] {
        ledger.submit(batch.clone()).unwrap(); // setup
    }
    storage.delay_writes(Duration::from_millis(20));
    let stored_round = || {
        let bytes = storage.get(caduceus_engine::layout::META_ROUND).unwrap().unwrap();
        caduceus_engine::round::decode_round_meta(&bytes).unwrap().0
    };
    let mut outcomes: Vec<Option<Vec<TxResult>>> = Vec::new();
    let done = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|scope| {
        let watcher = scope.spawn(|| {
            let mut checks = 0;
            while !done.load(std::sync::atomic::Ordering::SeqCst) {
                let queried = ledger.round();
                assert!(stored_round() >= queried, "a query reported round {queried} before it was durable");
                checks += 1;
            }
            checks
        });
        let pending: Vec<_> = batches[2..]
            .iter()
            .enumerate()
            .map(|(i, batch)| {
                if i == 6 {
                    storage.fail_next_writes(1);
                }
                ledger.submit_async(batch.clone()).unwrap()
            })
            .collect();
        for (batch, pending) in batches[2..].iter().zip(pending) {
            match pending.wait() {
                Ok(results) => {
                    for (t, result) in batch.iter().zip(&results) {
                        assert_eq!(ledger.locate(t.id()).unwrap().map(|l| l.result), Some(*result));
                    }
                    outcomes.push(Some(results));
                }
                Err(SubmitError::Storage(_)) => {
                    assert!(batch.iter().all(|t| ledger.locate(t.id()).unwrap().is_none()), "refused means absent");
                    outcomes.push(None);
                }
                Err(other) => panic!("unexpected {other}"),
            }
        }
        done.store(true, std::sync::atomic::Ordering::SeqCst);
        assert!(watcher.join().unwrap() > 0);
    });
    let refused = outcomes.iter().filter(|o| o.is_none()).count();
    assert!(refused >= 1 && refused < outcomes.len(), "{refused} of {} batches refused", outcomes.len());
    assert!(verify_storage(storage.as_ref()).unwrap().is_intact());
    let reopened = open(&workload, Arc::new(MemoryStorage::from_map(storage.durable())));
    assert_eq!(
        reopened.state_hash().unwrap(),
        ledger.state_hash().unwrap(),
        "memory and storage agree after the failure"
    );
    // Acknowledged batches keep their results; refused ones can be submitted again.
    for (batch, outcome) in batches[2..].iter().zip(&outcomes) {
        let results = ledger.submit(batch.clone()).unwrap();
        if let Some(acknowledged) = outcome {
            assert_eq!(&results, acknowledged);
        }
    }
}

/// Reads `ack` lines from a running writer until it has acknowledged `acks` transactions (or
/// exits, or a generous deadline passes), then kills it with SIGKILL. Counting acks rather than
/// waiting a fixed time puts each kill mid-run on a machine of any speed.
fn run_and_kill(dir: &std::path::Path, seed: u64, acks: usize, acknowledged: &mut HashMap<u128, u16>) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_crash-writer"))
        .arg(dir)
        .arg(seed.to_string())
        .stdout(Stdio::piped())
        .spawn()
        .expect("start the writer");
    let stdout = child.stdout.take().unwrap();
    let seen_count = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = seen_count.clone();
    let reader = std::thread::spawn(move || {
        let mut seen = Vec::new();
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let mut parts = line.split(' ');
            if parts.next() == Some("ack") {
                let id = u128::from_str_radix(parts.next().unwrap(), 16).unwrap();
                let code: u16 = parts.next().unwrap().parse().unwrap();
                seen.push((id, code));
                counter.store(seen.len(), std::sync::atomic::Ordering::Relaxed);
            }
        }
        seen
    });
    let deadline = Instant::now() + Duration::from_secs(120);
    while seen_count.load(std::sync::atomic::Ordering::Relaxed) < acks && Instant::now() < deadline {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    let _ = child.kill(); // SIGKILL
    child.wait().unwrap();
    for (id, code) in reader.join().unwrap() {
        if let Some(first) = acknowledged.insert(id, code) {
            assert_eq!(first, code, "a resubmitted transaction got a different result");
        }
    }
}

#[test]
fn sigkill_at_random_moments_loses_nothing_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let mut acknowledged = HashMap::new();
    let mut rng = caduceus_workload::Rng::new(99);
    for round in 0..6u64 {
        // Every run replays the same workload from its start (resubmission is idempotent), so
        // each kill lands further in than the last.
        let acks = 500 * (round as usize + 1) + rng.below(400);
        run_and_kill(dir.path(), round, acks, &mut acknowledged);
        let storage = RocksStorage::open(dir.path()).expect("reopens after SIGKILL");
        for (id, code) in &acknowledged {
            let key = caduceus_engine::layout::transaction(*id);
            let refused = caduceus_engine::TxResult::from_code(*code).is_some_and(|r| !r.is_recorded());
            if refused {
                assert!(storage.get(&key).unwrap().is_none(), "kill {round}: refused {id:x} recorded");
                continue;
            }
            let stored = storage.get(&key).unwrap().unwrap_or_else(|| panic!("kill {round}: acknowledged {id:x} lost"));
            let location =
                <caduceus_engine::history::TxLocation as caduceus_engine::codec::Codec>::decode(&stored).unwrap();
            assert_eq!(location.result.code(), *code);
        }
        let report = verify_storage(&storage).unwrap();
        assert!(report.is_intact(), "kill {round}: {:?}", report.problems);
    }
    assert!(acknowledged.len() > 1_000, "the writer made progress between kills ({} acknowledged)", acknowledged.len());
}

#[test]
fn a_torn_wal_tail_is_dropped_never_half_applied() {
    let (workload, batches) = batches();
    let dir = tempfile::tempdir().unwrap();
    let ledger = open(&workload, Arc::new(RocksStorage::open(dir.path()).unwrap()));
    for batch in &batches {
        ledger.submit(batch.clone()).unwrap();
    }
    let rounds = ledger.round();
    // Copy the files as a crash would leave them: the ledger is still open.
    let copy_of = |target: &std::path::Path| {
        for entry in std::fs::read_dir(dir.path()).unwrap() {
            let entry = entry.unwrap();
            if entry.file_name() != "LOCK" {
                std::fs::copy(entry.path(), target.join(entry.file_name())).unwrap();
            }
        }
    };
    let mut lost_rounds = 0;
    for cut in [1u64, 17, 100, 700, 3_000] {
        let torn = tempfile::tempdir().unwrap();
        copy_of(torn.path());
        let wal = std::fs::read_dir(torn.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "log"))
            .max_by_key(|p| std::fs::metadata(p).unwrap().len())
            .expect("a write-ahead log");
        let length = std::fs::metadata(&wal).unwrap().len();
        assert!(length > cut, "the WAL holds the recent rounds");
        std::fs::OpenOptions::new().write(true).open(&wal).unwrap().set_len(length - cut).unwrap();

        let storage = Arc::new(RocksStorage::open(torn.path()).expect("a torn tail still opens"));
        let report = verify_storage(storage.as_ref()).unwrap();
        assert!(report.is_intact(), "cut {cut}: {:?}", report.problems);
        let reopened = open(&workload, storage);
        assert!(reopened.round() < rounds, "cut {cut}: the torn last round is dropped");
        lost_rounds += rounds - reopened.round();
    }
    assert!(lost_rounds >= 5);
    drop(ledger);
}

#[test]
fn a_clean_stop_and_reopen_restores_the_same_state() {
    let (workload, batches) = batches();
    let dir = tempfile::tempdir().unwrap();
    let (hash, round, checkpoint, heights) = {
        let ledger = open(&workload, Arc::new(RocksStorage::open(dir.path()).unwrap()));
        for batch in &batches {
            ledger.submit(batch.clone()).unwrap();
        }
        (ledger.state_hash().unwrap(), ledger.round(), ledger.checkpoint(), ledger.heights())
    };
    let reopened = open(&workload, Arc::new(RocksStorage::open(dir.path()).unwrap()));
    assert_eq!(
        (reopened.state_hash().unwrap(), reopened.round(), reopened.checkpoint(), reopened.heights()),
        (hash, round, checkpoint, heights)
    );
    // And it carries on: resubmitting is idempotent, new work commits.
    assert_eq!(reopened.submit(batches[3].clone()).unwrap().len(), batches[3].len());
    assert_eq!(reopened.state_hash().unwrap(), hash);
    drop(reopened);
    let wrong = Ledger::builder()
        .clock(Arc::new(|| 1_800_000_000_000))
        .open_on(Arc::new(RocksStorage::open(dir.path()).unwrap()), &workload.ledger_config(5));
    assert!(matches!(wrong, Err(caduceus_engine::OpenError::ShardCount { stored: 3, requested: 5 })));
}

#[test]
fn loading_state_in_any_entry_order_gives_the_same_state() {
    use caduceus_engine::layout;
    use caduceus_engine::ledger::load_state;
    use caduceus_engine::state::StateLoader;

    let (workload, batches) = batches();
    let storage = Arc::new(MemoryStorage::new());
    let ledger = open(&workload, storage.clone());
    for batch in &batches {
        ledger.submit(batch.clone()).unwrap();
    }
    let mut hasher = blake3::Hasher::new();
    let mut families = std::collections::BTreeSet::new();
    for shard in 0..3 {
        let prefix = layout::state_prefix(shard);
        let mut stored: Vec<(Vec<u8>, Vec<u8>)> =
            storage.snapshot().into_iter().filter(|(key, _)| key.starts_with(&prefix)).collect();
        families.extend(stored.iter().map(|(key, _)| key[prefix.len()]));
        let in_order = load_state(storage.as_ref(), shard, None).unwrap();
        // Families interleaved (ordered by the keys' last bytes): each is gathered many times.
        stored.sort_by_key(|(key, _)| key.iter().rev().copied().collect::<Vec<u8>>());
        let mut loader = StateLoader::new();
        for (key, value) in &stored {
            loader.insert(&key[prefix.len()..], value).unwrap();
        }
        let reversed = loader.finish();
        assert_eq!(reversed, in_order, "shard {shard}");
        assert_eq!(reversed.entries().len(), stored.len(), "shard {shard}: every stored entry loads");
        hasher.update(&in_order.hash());
    }
    assert_eq!(*hasher.finalize().as_bytes(), ledger.state_hash().unwrap(), "the loaded states are the ledger's");
    assert!(families.len() >= 6, "the workload stores most families of state: {families:?}");
}

#[test]
fn lookups_answer_in_the_order_asked_with_repeats_and_missing_keys() {
    let dir = tempfile::tempdir().unwrap();
    let rocks = RocksStorage::open(dir.path()).unwrap();
    let memory = MemoryStorage::new();
    let writes: Vec<_> =
        (0u32..500).map(|i| (format!("T{:08}", i * 7 % 500).into_bytes(), Some(i.to_le_bytes().to_vec()))).collect();
    for storage in [&rocks as &dyn Storage, &memory] {
        storage.write(&writes).unwrap();
    }
    // Unsorted, with repeats and keys that were never written.
    let keys: Vec<Vec<u8>> =
        [499u32, 3, 777, 3, 0, 250, 1000, 499].iter().map(|i| format!("T{i:08}").into_bytes()).collect();
    let from_rocks = rocks.get_many(&keys).unwrap();
    assert_eq!(from_rocks, memory.get_many(&keys).unwrap());
    let expected: Vec<Option<Vec<u8>>> = keys.iter().map(|key| memory.get(key).unwrap()).collect();
    assert_eq!(from_rocks, expected);
    assert_eq!(from_rocks.iter().filter(|v| v.is_none()).count(), 2, "777 and 1000 were never written");
    assert_eq!(from_rocks[1], from_rocks[3], "a repeated key gets the same answer");
}

#[test]
fn scans_see_exactly_the_keys_under_their_prefix() {
    let dir = tempfile::tempdir().unwrap();
    let rocks = RocksStorage::open(dir.path()).unwrap();
    let memory = MemoryStorage::new();
    // Prefixes ending in 0xff and 0xfe, neighbours on both sides, and the empty key's prefix.
    let keys: [&[u8]; 9] =
        [b"A", b"A\xfe", b"A\xfe\x00", b"A\xfe\xff", b"A\xff", b"A\xff\x01", b"A\xff\xff\xff", b"B", b"\xff\xff"];
    let writes: Vec<_> = keys.iter().map(|key| (key.to_vec(), Some(key.len().to_le_bytes().to_vec()))).collect();
    for storage in [&rocks as &dyn Storage, &memory] {
        storage.write(&writes).unwrap();
    }
    let scan = |storage: &dyn Storage, prefix: &[u8]| {
        let mut seen = Vec::new();
        storage
            .scan(prefix, &mut |key, value| {
                seen.push((key.to_vec(), value.to_vec()));
                true
            })
            .unwrap();
        seen
    };
    for prefix in [&b""[..], b"A", b"A\xfe", b"A\xff", b"A\xff\xff", b"\xff", b"\xff\xff", b"C"] {
        let expected: Vec<_> = writes
            .iter()
            .filter(|(key, _)| key.starts_with(prefix))
            .map(|(key, value)| (key.clone(), value.clone().unwrap()))
            .collect();
        assert_eq!(scan(&rocks, prefix), expected, "prefix {prefix:?}");
        assert_eq!(scan(&memory, prefix), expected, "prefix {prefix:?}");
    }
}

#[test]
fn a_small_state_cache_gives_the_whole_states_results_and_reopens_to_the_same_state() {
    let (workload, batches) = batches();
    let whole = open(&workload, Arc::new(MemoryStorage::new()));
    let storage = Arc::new(FaultyStorage::new());
    let options = Options { state_cache_entries: Some(64) };
    let cached = open_on(&workload, storage.clone(), &options).unwrap();
    // Every batch in flight at once behind a slow disk, so groups execute ahead of their writes
    // and evictions meet groups that are not yet durable.
    storage.delay_writes(std::time::Duration::from_millis(10));
    let pending: Vec<_> = batches.iter().map(|batch| cached.submit_async(batch.clone()).unwrap()).collect();
    for (index, (pending, batch)) in pending.into_iter().zip(&batches).enumerate() {
        assert_eq!(pending.wait().unwrap(), whole.submit(batch.clone()).unwrap(), "batch {index}");
    }
    assert_eq!(cached.state_hash().unwrap(), whole.state_hash().unwrap());
    let (hash, checkpoint) = (cached.state_hash().unwrap(), cached.checkpoint());
    drop(cached);
    let reopened = open_on(&workload, storage, &options).unwrap();
    assert_eq!((reopened.state_hash().unwrap(), reopened.checkpoint()), (hash, checkpoint));
    let more = batches.last().unwrap().clone();
    assert_eq!(reopened.submit(more.clone()).unwrap(), whole.submit(more).unwrap(), "a replayed batch, reopened");
}

#[test]
fn a_store_in_another_format_is_refused_with_a_clear_error() {
    use caduceus_engine::layout::{META_FORMAT, STORE_FORMAT};

    let (workload, batches) = batches();
    let storage = Arc::new(MemoryStorage::new());
    let ledger = open(&workload, storage.clone());
    ledger.submit(batches[0].clone()).unwrap();
    drop(ledger);
    let reopen = || open_on(&workload, storage.clone(), &Options::default());
    assert!(reopen().is_ok(), "the format this build wrote");
    for (stored, expected) in [(None, 1), (Some(99u32.to_le_bytes().to_vec()), 99)] {
        storage.write(&[(META_FORMAT.to_vec(), stored)]).unwrap();
        match reopen() {
            Err(OpenError::Format { stored, expected: ours }) => assert_eq!((stored, ours), (expected, STORE_FORMAT)),
            other => panic!("format {expected}: {:?}", other.map(|_| "opened")),
        }
    }
    storage.write(&[(META_FORMAT.to_vec(), Some(vec![2, 0, 0]))]).unwrap();
    assert!(matches!(reopen(), Err(OpenError::Corrupt { .. })), "a malformed format number");
}
