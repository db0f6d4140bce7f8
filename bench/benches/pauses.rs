//! The longest single insert into a shard's state map as it grows, against one `HashMap`
//! holding the same entries: a hash map doubles all at once when it fills, and the execute
//! stage holds the round for that long. Criterion reports means, so this prints the worst
//! case itself. Run with `cargo bench -p caduceus-bench --bench pauses [-- ENTRIES]`.

use std::time::{Duration, Instant};

use caduceus_engine::model::ActorKey;
use caduceus_engine::state::{Map, Record, StateMap};

/// The allocator the binaries use (see loadgen/src/main.rs).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn record(version: u32) -> Record {
    Record {
        patient: ActorKey([1; 32]),
        custodian: ActorKey([2; 32]),
        resource_type: "Observation".to_owned(),
        content_hash: [3; 32],
        previous_hash: [0; 32],
        version,
        updated_at: 0,
        erased_at: None,
        written_by: 0,
    }
}

fn key(i: u64) -> (ActorKey, u128) {
    let mut patient = [0; 32];
    patient[..8].copy_from_slice(&i.to_le_bytes());
    (ActorKey(patient), u128::from(i))
}

/// Inserts `entries` records one by one; the total time, the longest insert and where it was.
fn grow(entries: u64, mut insert: impl FnMut((ActorKey, u128), Record)) -> (Duration, Duration, u64) {
    let started = Instant::now();
    let (mut worst, mut at) = (Duration::ZERO, 0);
    for i in 0..entries {
        let one = Instant::now();
        insert(key(i), record(i as u32));
        let took = one.elapsed();
        if took > worst {
            (worst, at) = (took, i);
        }
    }
    (started.elapsed(), worst, at)
}

fn main() {
    // `cargo bench` passes `--bench`; a number among the arguments is the entry count (a
    // million records is one shard's share of about 8 million transactions).
    let entries = std::env::args().skip(1).find_map(|a| a.parse().ok()).unwrap_or(1_200_000);
    println!("{entries} records inserted one by one, three rounds each (the first one on fresh memory):");
    for round in 1..=3 {
        let mut one: Map<(ActorKey, u128), Record> = Map::default();
        let (total, worst, at) = grow(entries, |k, v| {
            one.insert(k, v);
        });
        println!("  round {round}, one HashMap: {total:.2?} in all, longest insert {worst:.2?} (entry {at})");
        drop(one);
        let mut split: StateMap<(ActorKey, u128), Record> = StateMap::default();
        let (total, worst, at) = grow(entries, |k, v| {
            split.insert(k, v);
        });
        println!("  round {round}, StateMap:    {total:.2?} in all, longest insert {worst:.2?} (entry {at})");
    }
}
