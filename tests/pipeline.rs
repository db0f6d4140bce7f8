//! The pipeline: results depend only on the order of batches, never on how
//! the execute stage happened to group them into one write, nor on what the
//! state cache held.

use std::sync::Arc;

use caduceus_engine::ledger::Options;
use caduceus_engine::storage::{FaultyStorage, MemoryStorage};
use caduceus_engine::verify::verify_storage;
use caduceus_engine::Ledger;
use caduceus_workload::{Workload, WorkloadConfig};

#[test]
fn grouping_batches_changes_no_result() {
    let config =
        WorkloadConfig { seed: 5, patients: 60, providers: 10, payers: 3, pharmacies: 5, ..WorkloadConfig::default() };
    let mut workload = Workload::new(config, 1_800_000_000_000);
    let setup = workload.signed_setup();
    let batches: Vec<_> = (0..40).map(|i| workload.signed_batch(10 + i % 7 * 20)).collect();
    let clock = Arc::new(|| 1_800_000_000_000);

    let one_at_a_time = Ledger::builder()
        .clock(clock.clone())
        .open_on(Arc::new(MemoryStorage::new()), &workload.ledger_config(4))
        .unwrap();
    // A slow disk, so that batches queue behind each write and share the next one.
    let storage = Arc::new(FaultyStorage::new());
    // And keep nothing cached between groups: groups execute ahead of the slow disk, so what they
    // read comes from storage and from the entries earlier groups wrote but have not stored yet.
    let nothing_cached = Options { state_cache_entries: Some(0) };
    let all_at_once = Ledger::builder()
        .clock(clock)
        .options(nothing_cached.clone())
        .open_on(storage.clone(), &workload.ledger_config(4))
        .unwrap();
    for phase in &setup {
        one_at_a_time.submit(phase.clone()).unwrap();
        all_at_once.submit(phase.clone()).unwrap();
    }
    let sequential: Vec<_> = batches.iter().map(|b| one_at_a_time.submit(b.clone()).unwrap()).collect();
    storage.delay_writes(std::time::Duration::from_millis(20));
    let writes_before = storage.writes_done();
    let pending: Vec<_> = batches.iter().map(|b| all_at_once.submit_async(b.clone()).unwrap()).collect();
    let grouped: Vec<_> = pending.into_iter().map(|p| p.wait().unwrap()).collect();

    assert_eq!(sequential, grouped);
    assert_eq!(one_at_a_time.state_hash().unwrap(), all_at_once.state_hash().unwrap());
    assert_eq!(one_at_a_time.round(), all_at_once.round(), "one round per batch either way");
    let writes = storage.writes_done() - writes_before;
    assert!(writes < batches.len() as u64 / 2, "{} batches shared {writes} writes", batches.len());
    let rejected = sequential.iter().flatten().filter(|r| !r.is_committed()).count();
    assert!(rejected > 0 && rejected < sequential.iter().flatten().count() / 2, "the mix holds some rejections");
    drop(all_at_once);
    assert!(verify_storage(storage.as_ref()).unwrap().is_intact());
}

#[test]
fn a_state_cache_counts_what_it_reads_from_storage() {
    let config =
        WorkloadConfig { seed: 9, patients: 40, providers: 8, payers: 3, pharmacies: 4, ..WorkloadConfig::default() };
    let mut workload = Workload::new(config, 1_800_000_000_000);
    let setup = workload.signed_setup();
    let batches: Vec<_> = (0..12).map(|_| workload.signed_batch(100)).collect();
    let clock = Arc::new(|| 1_800_000_000_000);
    let open = |options: &Options| {
        Ledger::builder()
            .clock(clock.clone())
            .options(options.clone())
            .open_on(Arc::new(MemoryStorage::new()), &workload.ledger_config(4))
            .unwrap()
    };
    let whole = open(&Options::default());
    let roomy = open(&Options { state_cache_entries: Some(1_000_000) });
    let nothing_cached = open(&Options { state_cache_entries: Some(0) });
    for ledger in [&whole, &roomy, &nothing_cached] {
        for phase in setup.iter().chain(&batches) {
            ledger.submit(phase.clone()).unwrap();
        }
    }
    assert_eq!(whole.state_cache_reads(), None, "without a cache nothing is read on the commit path");
    // A cache that evicts nothing holds every entry it wrote: storage answers only for new ones.
    let roomy = roomy.state_cache_reads().unwrap();
    assert!(roomy.keys > 0 && roomy.found == 0, "{roomy:?}");
    // One that keeps nothing reads back every entry a later transaction touches.
    let nothing = nothing_cached.state_cache_reads().unwrap();
    assert!(nothing.found > 0 && nothing.keys >= nothing.found && nothing.keys >= roomy.keys, "{nothing:?}");
    assert_eq!(nothing.keys - nothing.found, roomy.keys, "the same new entries are absent from storage either way");
}
