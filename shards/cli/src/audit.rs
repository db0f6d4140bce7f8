//! What an auditor runs: `caduceus verify` over a data directory, and `caduceus check-proof`
//! of an exported proof against a checkpoint hash they trust.

use std::path::Path;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use caduceus_engine::codec::Codec;
use caduceus_engine::limits::{BLOCK_CACHE_BYTES, VERIFY_STATE_CACHE_ENTRIES};
use caduceus_engine::model::{hex, ActorKey, Hash};
use caduceus_engine::storage::RocksStorage;
use caduceus_engine::storage::Storage;
use caduceus_engine::verify::{verify_stores_with, Report, Scratch, Stores};
use caduceus_engine::Proof;

use crate::print::id_hex;

/// Exit code of a check that ran and found the ledger or proof damaged.
const DAMAGED: u8 = 2;

pub fn verify(dir: &Path, anchors: &[Hash]) -> Result<ExitCode> {
    let storage = open_store(dir)?;
    let report = verify_bounded(Stores::Embedded(&storage), anchors)?;
    print_report(&report, anchors)
}

/// Verifies with bounded memory: the replayed state in a scratch store in the system's
/// temporary directory, removed afterwards.
fn verify_bounded(stores: Stores<'_>, anchors: &[Hash]) -> Result<Report> {
    let scratch_dir = tempfile::Builder::new().prefix("caduceus-verify-").tempdir()?;
    let scratch = RocksStorage::scratch(scratch_dir.path())?;
    let scratch = Scratch { storage: &scratch, entries: VERIFY_STATE_CACHE_ENTRIES };
    Ok(verify_stores_with(stores, anchors, Some(scratch))?)
}

/// Verifies a stopped local cluster: each shard's store and the coordinator's, against each other.
pub fn verify_cluster(cluster: &Path, anchors: &[Hash]) -> Result<ExitCode> {
    let (coordinator, shards) = caduceus_shards::local::stores(cluster)?;
    let coordinator = open_store(&coordinator)?;
    let shards: Vec<RocksStorage> = shards.iter().map(|dir| open_store(dir)).collect::<Result<_>>()?;
    let shards: Vec<&dyn Storage> = shards.iter().map(|s| s as &dyn Storage).collect();
    let report = verify_bounded(Stores::Cluster { shards: &shards, coordinator: &coordinator }, anchors)?;
    print_report(&report, anchors)
}

fn open_store(dir: &Path) -> Result<RocksStorage> {
    if !dir.join("CURRENT").exists() {
        bail!("{} holds no ledger", dir.display());
    }
    // A bounded block cache: RocksDB's indexes and filters would otherwise grow with history.
    RocksStorage::open_with(dir, Some(BLOCK_CACHE_BYTES))
        .with_context(|| format!("opening {} (a running node holds its store: stop the cluster first)", dir.display()))
}

fn print_report(report: &Report, anchors: &[Hash]) -> Result<ExitCode> {
    println!(
        "checked {} shards, {} rounds, {} blocks, {} transactions, {} checkpoints, {} stored keys",
        report.shards, report.rounds, report.blocks, report.transactions, report.checkpoints, report.keys
    );
    let operators: Vec<String> = report.operators.iter().map(ActorKey::to_hex).collect();
    println!("genesis {} ({} shards; operators {})", hex(&report.genesis), report.shards, operators.join(", "));
    if report.is_intact() {
        println!("intact: every chain, root, signature, state entry and index matches the blocks");
        for anchor in anchors {
            println!("extends checkpoint {}", hex(anchor));
        }
        return Ok(ExitCode::SUCCESS);
    }
    println!("DAMAGED: {} problems", report.problem_count);
    for problem in &report.problems {
        println!("  {}: {}", problem.place, problem.detail);
    }
    if report.problem_count > report.problems.len() as u64 {
        println!("  ... and {} more", report.problem_count - report.problems.len() as u64);
    }
    Ok(ExitCode::from(DAMAGED))
}

pub fn check_proof(path: &Path, trusted: &Hash) -> Result<ExitCode> {
    let bytes = std::fs::read(path).with_context(|| format!("read {}", path.display()))?;
    let proof = <Proof as Codec>::decode(&bytes).context("the file is not a Caduceus proof")?;
    let transaction = &proof.transaction.transaction;
    println!(
        "transaction {}: {} signed by {}, result {}, shard {} height {}, round {}",
        id_hex(proof.transaction.id()),
        transaction.operation.name(),
        transaction.signer,
        proof.result,
        proof.header.shard,
        proof.header.height,
        proof.checkpoint_round
    );
    let signature = caduceus_engine::signature::verify_all(std::slice::from_ref(&proof.transaction));
    if let Some(reason) = signature[0] {
        println!("INVALID: the transaction's signature does not check ({reason})");
        return Ok(ExitCode::from(DAMAGED));
    }
    match proof.verify(trusted) {
        Ok(()) => {
            println!("VALID: signature checks and the proof leads to checkpoint {}", hex(trusted));
            Ok(ExitCode::SUCCESS)
        }
        Err(error) => {
            println!("INVALID: {error}");
            Ok(ExitCode::from(DAMAGED))
        }
    }
}
