//! `caduceus demo`: the embedded engine on the seeded healthcare workload, then a report with
//! samples of what the ledger now answers.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use caduceus_engine::model::{hex, Operation};
use caduceus_engine::signature::measure_verify_batch_rate;
use caduceus_engine::{Ledger, SignedTransaction, TxResult};
use caduceus_loadgen::args::LoadArgs;
use caduceus_loadgen::embedded::closed_loop;
use caduceus_workload::Workload;
use indicatif::ProgressBar;

use crate::print;
use crate::reader::{Embedded, Reader};

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

    let reader = Embedded(ledger);
    samples(&reader, &workload, &transactions, &results)?;
    let checkpoint = reader.0.checkpoint().context("the demo wrote rounds")?;
    println!();
    println!("checkpoint: round {} root {}", checkpoint.round, hex(&checkpoint.hash()));
    println!("state hash: {}", hex(&reader.0.state_hash()?));
    println!("heights:    {:?}", reader.0.heights());
    drop(reader);
    println!("data directory: {}", dir.display());
    println!("check it:       caduceus verify --dir {}", dir.display());
    println!(
        "ask it:         caduceus query --dir {} access-report --patient {}",
        dir.display(),
        workload.patients()[0]
    );
    Ok(())
}

/// The busiest patient's access report, a dispensed unit's custody and a paid claim's proof.
fn samples(
    reader: &Embedded,
    workload: &Workload,
    transactions: &[SignedTransaction],
    results: &[TxResult],
) -> Result<()> {
    let patient = workload.patients()[0];
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
            let (verification, events) = reader.unit(unit, None, 20)?;
            print::unit(&verification, &events.entries);
        }
    }
    if let Some(payment) = committed("pay-claim") {
        if let Operation::PayClaim { claim, patient, amount, .. } = &payment.transaction.operation {
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
