//! Each stage on its own, then the whole pipeline, whose throughput is
//! printed as a ratio to the raw two-thread `verify_batch` rate measured in
//! the same run.

use std::sync::Arc;
use std::time::{Duration, Instant};

use caduceus_engine::block::merkle_root;
use caduceus_engine::codec::Codec;
use caduceus_engine::model::{Operation, Transaction};
use caduceus_engine::round::{execute_round, Genesis};
use caduceus_engine::routing::participants;
use caduceus_engine::shard::Shard;
use caduceus_engine::signature::{
    actor_key, measure_verify_batch_rate, sign, signing_key, verify_all, SignatureVerifier,
};
use caduceus_engine::storage::{MemoryStorage, RocksStorage, Storage, Write};
use caduceus_engine::{Ledger, SignedTransaction};
use caduceus_workload::{Workload, WorkloadConfig};
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use ed25519_dalek::{Signature, Signer, VerifyingKey};

/// The allocator the binaries use (see loadgen/src/main.rs), so the pipeline runs as measured there.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const NOW: u64 = 1_800_000_000_000;

fn workload() -> Workload {
    Workload::new(WorkloadConfig { patients: 2_000, providers: 100, pharmacies: 50, ..WorkloadConfig::default() }, NOW)
}

fn codec_and_signatures(c: &mut Criterion) {
    let mut workload = workload();
    let batch = workload.signed_batch(256);
    let sample = batch[0].clone();
    let key = signing_key([9; 32]);
    let mut group = c.benchmark_group("transaction");
    group.throughput(Throughput::Elements(1));
    group.bench_function("encode", |b| b.iter(|| sample.transaction.encode().unwrap()));
    group.bench_function("decode", |b| b.iter(|| SignedTransaction::decode(sample.bytes()).unwrap()));
    group.bench_function("sign", |b| b.iter(|| sign((*sample.transaction).clone(), &key).unwrap()));
    group.bench_function("verify one", |b| b.iter(|| verify_all(std::slice::from_ref(&sample))));
    group.bench_function("route (participants, 4 shards)", |b| {
        b.iter(|| batch.iter().map(|t| participants(&t.transaction, 4).len()).sum::<usize>() / batch.len())
    });
    group.finish();

    // The raw ed25519 batch check, without the engine: the physical ceiling.
    let mut group = c.benchmark_group("verify_batch (raw ed25519)");
    for size in [16usize, 64, 256, 1024] {
        let keys: Vec<_> = (0..size as u64).map(|i| signing_key(*blake3::hash(&i.to_le_bytes()).as_bytes())).collect();
        let messages: Vec<Vec<u8>> = (0..size as u64).map(|i| i.to_le_bytes().repeat(20)).collect();
        let signatures: Vec<Signature> = keys.iter().zip(&messages).map(|(k, m)| k.sign(m)).collect();
        let verifying: Vec<VerifyingKey> = keys.iter().map(|k| k.verifying_key()).collect();
        let refs: Vec<&[u8]> = messages.iter().map(Vec::as_slice).collect();
        for threads in [1usize, 2] {
            // Each thread checks its own copy of the batch, so the rate is per `threads` cores.
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
            group.throughput(Throughput::Elements((size * threads) as u64));
            group.bench_function(format!("{size} signatures, {threads} thread(s)"), |b| {
                b.iter(|| {
                    pool.broadcast(|_| ed25519_dalek::verify_batch(&refs, &signatures, &verifying).unwrap());
                })
            });
        }
    }
    group.finish();

    let mut group = c.benchmark_group("verify (engine, 2 threads)");
    for size in [64usize, 256, 1024, 4096] {
        let transactions: Vec<SignedTransaction> = workload.signed_batch(size);
        group.throughput(Throughput::Elements(size as u64));
        group.bench_function(format!("verify_all {size}"), |b| b.iter(|| verify_all(&transactions)));
    }
    group.finish();

    // One chunk of 1,024 on one thread: the engine's batch check (each signer's terms summed)
    // against the raw `verify_batch` of the same signatures, with the workload's signers (a few
    // hundred distinct keys a chunk) and with a distinct signer for every signature.
    let mut group = c.benchmark_group("batch check of 1024 (1 thread)");
    group.throughput(Throughput::Elements(1024));
    let one_thread = rayon::ThreadPoolBuilder::new().num_threads(1).build().unwrap();
    let distinct: Vec<SignedTransaction> = (0..1024u64)
        .map(|i| {
            let key = signing_key(*blake3::hash(&i.to_le_bytes()).as_bytes());
            let transaction = Transaction {
                nonce: i as u128,
                signer: actor_key(&key),
                timestamp: NOW,
                operation: Operation::FundAccount { amount: 5 },
                key: None,
            };
            sign(transaction, &key).unwrap()
        })
        .collect();
    for (signers, chunk) in [("workload signers", workload.signed_batch(1024)), ("distinct signers", distinct)] {
        let messages: Vec<&[u8]> = chunk.iter().map(SignedTransaction::body).collect();
        let signatures: Vec<Signature> = chunk.iter().map(|t| Signature::from_bytes(&t.signature())).collect();
        let keys: Vec<VerifyingKey> =
            chunk.iter().map(|t| VerifyingKey::from_bytes(&t.transaction.signer.0).unwrap()).collect();
        group.bench_function(format!("raw verify_batch, {signers}"), |b| {
            b.iter(|| ed25519_dalek::verify_batch(&messages, &signatures, &keys).unwrap())
        });
        let verifier = SignatureVerifier::new();
        assert!(one_thread.install(|| verifier.verify(&chunk)).iter().all(Option::is_none));
        group.bench_function(format!("engine, {signers}"), |b| {
            b.iter(|| one_thread.install(|| verifier.verify(&chunk)))
        });
    }
    group.finish();

    let leaves: Vec<[u8; 32]> = (0..2048u32).map(|i| *blake3::hash(&i.to_le_bytes()).as_bytes()).collect();
    c.bench_function("merkle root of 2048 leaves", |b| b.iter(|| merkle_root(&leaves)));
}

/// Shards warmed with the default mix (setup and 20,480 transactions), and the workload that did it.
fn warm_shards() -> (Workload, Vec<Shard>, u64) {
    let mut workload = workload();
    let genesis = Genesis { shards: 4, operators: workload.ledger_config(4).genesis_operators, quorum: 1 };
    let mut shards = genesis.shards();
    let mut round = 0;
    for phase in workload.signed_setup() {
        round += 1;
        execute_round(&mut shards, round, [0; 32], NOW, &phase);
    }
    for _ in 0..10 {
        round += 1;
        let warm = workload.signed_batch(2_048);
        execute_round(&mut shards, round, [0; 32], NOW, &warm);
    }
    (workload, shards, round)
}

fn execution(c: &mut Criterion) {
    let (mut workload, shards, round) = warm_shards();
    let states: Vec<_> = shards.iter().map(|s| (s.state().clone(), s.height(), s.head(), s.last_time())).collect();
    let restore = || -> Vec<Shard> {
        states
            .iter()
            .enumerate()
            .map(|(id, (state, height, head, time))| Shard::restore(id as u32, 4, state.clone(), *height, *head, *time))
            .collect()
    };
    let families = [
        ("default mix", [0.50, 0.05, 0.30, 0.15]),
        ("records and accesses", [1.0, 0.0, 0.0, 0.0]),
        ("consent changes", [0.0, 1.0, 0.0, 0.0]),
        ("claims", [0.0, 0.0, 1.0, 0.0]),
        ("supply chain", [0.0, 0.0, 0.0, 1.0]),
    ];
    let mut group = c.benchmark_group("execute round of 2048, 4 shards");
    for (name, mix) in families {
        workload.set_mix(mix);
        let batch = workload.signed_batch(2_048);
        group.throughput(Throughput::Elements(batch.len() as u64));
        group.bench_function(name, |b| {
            b.iter_batched(
                restore,
                |mut shards| execute_round(&mut shards, round + 1, [0; 32], NOW, &batch),
                BatchSize::LargeInput,
            )
        });
    }
    group.finish();
}

/// One round's writes (blocks, state, history, index, checkpoint) to RocksDB: one WriteBatch, one fsync.
fn persistence(c: &mut Criterion) {
    let (mut workload, mut shards, mut round) = warm_shards();
    let rounds: Vec<(usize, Vec<Write>)> = (0..16)
        .map(|_| {
            round += 1;
            let batch = workload.signed_batch(2_048);
            (batch.len(), execute_round(&mut shards, round, [0; 32], NOW, &batch).into_writes())
        })
        .collect();
    let dir = tempfile::tempdir().expect("temporary directory");
    let storage = RocksStorage::open(dir.path()).expect("open RocksDB");
    let mut group = c.benchmark_group("persist");
    group.throughput(Throughput::Elements(rounds[0].0 as u64));
    let mut next = 0;
    group.bench_function("round of 2048 to RocksDB, fsynced", |b| {
        b.iter(|| {
            storage.write(&rounds[next % rounds.len()].1).expect("write");
            next += 1;
        })
    });
    group.finish();
}

fn pipeline(c: &mut Criterion) {
    let reference = measure_verify_batch_rate(2, Duration::from_secs(3));
    let mut group = c.benchmark_group("pipeline");
    group.sample_size(10);
    for batch_size in [256usize, 1_024, 2_048, 8_192] {
        let mut workload = workload();
        let ledger = Ledger::builder()
            .clock(Arc::new(|| NOW))
            .open_on(Arc::new(MemoryStorage::new()), &workload.ledger_config(4))
            .expect("open");
        for phase in workload.signed_setup() {
            ledger.submit(phase).expect("setup");
        }
        let (mut transactions, mut elapsed) = (0u64, Duration::ZERO);
        group.throughput(Throughput::Elements(batch_size as u64));
        group.bench_function(format!("batches of {batch_size}, 4 shards, memory storage"), |b| {
            b.iter_custom(|iterations| {
                let batches: Vec<Vec<SignedTransaction>> =
                    (0..iterations).map(|_| workload.signed_batch(batch_size)).collect();
                let started = Instant::now();
                let pending: Vec<_> = batches.into_iter().map(|b| ledger.submit_async(b).expect("queue")).collect();
                for p in pending {
                    p.wait().expect("durable");
                }
                let took = started.elapsed();
                transactions += iterations * batch_size as u64;
                elapsed += took;
                took
            })
        });
        let throughput = transactions as f64 / elapsed.as_secs_f64();
        println!(
            "pipeline, batches of {batch_size}: {throughput:.0} tx/s = {:.2} x the raw 2-thread verify_batch rate \
             ({reference:.0}/s) measured in this run",
            throughput / reference
        );
    }
    group.finish();
}

criterion_group!(benches, codec_and_signatures, execution, persistence, pipeline);
criterion_main!(benches);
