//! `caduceus`: the command line.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use caduceus_engine::codec::Codec;
use caduceus_engine::model::{hex, unhex, ActorKey, Operation, TxResult, UnitId};
use caduceus_engine::signature::{actor_key, measure_verify_batch_rate, signing_key};
use caduceus_engine::storage::RocksStorage;
use caduceus_engine::verify::verify_storage;
use caduceus_engine::{Ledger, SignedTransaction};
use caduceus_shards::workload::{self, LoadArgs, Workload};
use clap::{Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};

#[derive(Parser)]
#[command(name = "caduceus", version, about = "Caduceus: a sharded ledger for health data exchange")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a realistic healthcare workload through the embedded engine and report.
    Demo {
        /// Data directory (default: a new temporary directory, kept for `verify`).
        #[arg(long)]
        dir: Option<PathBuf>,
        #[command(flatten)]
        load: LoadArgs,
        /// Seconds spent measuring the ed25519 verify_batch reference (0 skips it).
        #[arg(long, default_value_t = 3.0)]
        reference_seconds: f64,
    },
    /// Check every chain, root, proof path and state entry in a data directory.
    Verify {
        #[arg(long)]
        data: PathBuf,
    },
    /// Ask an embedded ledger a question.
    Query {
        #[arg(long)]
        dir: PathBuf,
        #[command(subcommand)]
        question: Question,
    },
    /// Check an inclusion proof offline, against a checkpoint hash you trust.
    CheckProof {
        /// A proof written by `caduceus query --dir DIR proof --id ID --out FILE`.
        #[arg(long)]
        proof: PathBuf,
        /// The checkpoint hash (hex), from `caduceus query --dir DIR checkpoint` or any trusted copy.
        #[arg(long)]
        checkpoint: String,
    },
    /// Print a new ed25519 key pair (secret seed and actor key), hex.
    Keygen,
}

#[derive(Subcommand)]
enum Question {
    /// Who accessed a patient's records, when, why, permitted or denied.
    AccessReport {
        #[arg(long)]
        patient: String,
    },
    /// A unit's custody trail and whether it is genuine, recalled or expired.
    Unit {
        #[arg(long)]
        gtin: u64,
        #[arg(long)]
        serial: String,
    },
    /// A claim's status and payment.
    Claim {
        #[arg(long)]
        patient: String,
        #[arg(long)]
        claim: String,
    },
    /// An account's balance.
    Balance {
        #[arg(long)]
        account: String,
    },
    /// A transaction's result, and its inclusion proof checked against its checkpoint.
    Transaction {
        #[arg(long)]
        id: String,
    },
    /// Write a transaction's inclusion proof to a file, for `caduceus check-proof`.
    Proof {
        #[arg(long)]
        id: String,
        #[arg(long)]
        out: PathBuf,
    },
    /// The latest checkpoint and state hash.
    Checkpoint,
}

fn main() -> ExitCode {
    // Die quietly when the reader of our output goes away (`caduceus query ... | head`),
    // as command-line tools do, instead of panicking on a closed pipe.
    // SAFETY: restoring the default disposition of SIGPIPE before any thread starts.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    match run(Cli::parse()) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Demo { dir, load, reference_seconds } => {
            demo(dir, &load, reference_seconds)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Verify { data } => verify(&data),
        Command::Query { dir, question } => {
            query(&dir, question)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::CheckProof { proof, checkpoint } => check_proof(&proof, &checkpoint),
        Command::Keygen => {
            use std::io::Read;
            let mut seed = [0u8; 32];
            std::fs::File::open("/dev/urandom")?.read_exact(&mut seed)?;
            let key = signing_key(seed);
            println!("secret: {}", hex(&seed));
            println!("actor:  {}", actor_key(&key));
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn parse_actor(text: &str) -> Result<ActorKey> {
    ActorKey::from_hex(text).with_context(|| format!("{text:?} is not a 64-digit hex actor key"))
}

fn parse_id(text: &str) -> Result<u128> {
    let bytes = unhex(text)
        .filter(|b| b.len() <= 16)
        .with_context(|| format!("{text:?} is not a hex id of up to 32 digits"))?;
    let mut padded = [0u8; 16];
    padded[16 - bytes.len()..].copy_from_slice(&bytes);
    Ok(u128::from_be_bytes(padded))
}

fn id_hex(id: u128) -> String {
    hex(&id.to_be_bytes())
}

/// A timestamp as UTC date and time, to the millisecond.
fn when(ms: u64) -> String {
    let date = caduceus_engine::shard::date_of(ms);
    let of_day = ms % 86_400_000;
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02}.{:03}Z",
        date / 10_000,
        date / 100 % 100,
        date % 100,
        of_day / 3_600_000,
        of_day / 60_000 % 60,
        of_day / 1_000 % 60,
        of_day % 1_000
    )
}

fn now_ms() -> u64 {
    caduceus_engine::ledger::system_clock()()
}

fn bar(length: u64, label: &'static str) -> ProgressBar {
    let bar = ProgressBar::new(length);
    bar.set_style(
        ProgressStyle::with_template("{msg:>10} [{bar:40}] {pos}/{len} ({per_sec}, {eta} left)")
            .expect("template")
            .progress_chars("=> "),
    );
    bar.set_message(label);
    bar
}

/// Submits batches keeping `in_flight` of them pending, and tallies the results.
fn drive(
    ledger: &Ledger,
    batches: Vec<Vec<SignedTransaction>>,
    in_flight: usize,
    progress: &ProgressBar,
) -> Result<Vec<TxResult>> {
    let mut results = Vec::new();
    workload::drive(ledger, 0, batches, in_flight, |_, _, answer| {
        progress.inc(answer.len() as u64);
        results.extend(answer);
    })?;
    Ok(results)
}

fn demo(dir: Option<PathBuf>, load: &LoadArgs, reference_seconds: f64) -> Result<()> {
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

    let reference = if reference_seconds > 0.0 {
        println!("measuring the reference: raw ed25519 verify_batch on 2 threads for {reference_seconds:.0} s ...");
        Some(measure_verify_batch_rate(2, Duration::from_secs_f64(reference_seconds)))
    } else {
        None
    };

    let mut workload = Workload::new(load.workload(), now_ms());
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

    samples(&ledger, &workload, &transactions, &results)?;
    let checkpoint = ledger.checkpoint().context("the demo wrote rounds")?;
    println!();
    println!("checkpoint: round {} root {}", checkpoint.round, hex(&checkpoint.hash()));
    println!("state hash: {}", hex(&ledger.state_hash()));
    println!("heights:    {:?}", ledger.heights());
    drop(ledger);
    println!("data directory: {}", dir.display());
    println!("check it:       caduceus verify --data {}", dir.display());
    println!(
        "ask it:         caduceus query --dir {} access-report --patient {}",
        dir.display(),
        workload.patients()[0]
    );
    Ok(())
}

fn samples(
    ledger: &Ledger,
    workload: &Workload,
    transactions: &[SignedTransaction],
    results: &[TxResult],
) -> Result<()> {
    // The busiest patient's access report.
    let patient = workload.patients()[0];
    let report = ledger.access_report(&patient)?;
    println!();
    println!("access report of patient {patient} ({} accesses, last 5):", report.len());
    for entry in report.iter().rev().take(5).rev() {
        let purpose = entry.purpose.map_or("EMERGENCY (break-glass)", |p| p.as_str());
        let verdict = if entry.permitted() { "permitted".to_owned() } else { format!("denied: {}", entry.result) };
        println!(
            "  {} record {} by {} for {purpose}: {verdict}",
            when(entry.time),
            &id_hex(entry.record)[..12],
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
            print_unit(ledger, unit)?;
        }
    }
    if let Some(payment) = committed("pay-claim") {
        if let Operation::PayClaim { claim, patient, amount, .. } = &payment.transaction.operation {
            let status = ledger.claim(patient, *claim).context("a paid claim is on the ledger")?;
            println!();
            println!(
                "claim {} of patient {patient}: {} (total {} cents, paid {} cents)",
                id_hex(*claim),
                status.status.name(),
                status.total,
                amount
            );
            print_proof(ledger, payment.id())?;
        }
    }
    Ok(())
}

fn print_unit(ledger: &Ledger, unit: &UnitId) -> Result<()> {
    let verification = ledger.verify_unit(unit);
    println!();
    match &verification.state {
        None => println!("unit {unit}: NOT GENUINE (never commissioned on this ledger)"),
        Some(state) => println!(
            "unit {unit}: genuine, lot {}, {}, custodian {}, recalled: {}, expired: {}",
            state.lot,
            state.status.name(),
            &state.custodian.to_hex()[..16],
            verification.recall.as_ref().map_or("no".to_owned(), |r| format!("yes ({})", r.reason)),
            if verification.expired { "yes" } else { "no" }
        ),
    }
    for event in ledger.custody_trace(unit)? {
        let to = event.counterparty.map(|c| format!(" -> {}", &c.to_hex()[..16])).unwrap_or_default();
        println!("  {} {:<18} by {}{to}: {}", when(event.time), event.event, &event.actor.to_hex()[..16], event.result);
    }
    Ok(())
}

fn print_proof(ledger: &Ledger, id: u128) -> Result<()> {
    let proof = ledger.prove(id)?.with_context(|| format!("no transaction {} on this ledger", id_hex(id)))?;
    let checkpoint = ledger.checkpoint_at(proof.checkpoint_round)?.context("its checkpoint is stored")?;
    let verdict = match proof.verify(&checkpoint.hash()) {
        Ok(()) => "VERIFIED".to_owned(),
        Err(error) => format!("FAILED: {error}"),
    };
    println!(
        "transaction {}: {} in shard {} block {}; proof ({} + {} + {} hashes) against checkpoint {} ({}): {verdict}",
        id_hex(id),
        proof.result,
        proof.header.shard,
        proof.header.height,
        proof.transaction_path.len(),
        proof.result_path.len(),
        proof.head_path.len(),
        proof.checkpoint_round,
        &hex(&checkpoint.hash())[..16],
    );
    Ok(())
}

fn check_proof(path: &Path, checkpoint: &str) -> Result<ExitCode> {
    let trusted: [u8; 32] = unhex(checkpoint)
        .and_then(|bytes| bytes.try_into().ok())
        .with_context(|| format!("{checkpoint:?} is not a 64-digit hex checkpoint hash"))?;
    let bytes = std::fs::read(path).with_context(|| format!("read {}", path.display()))?;
    let proof = <caduceus_engine::Proof as Codec>::decode(&bytes).context("the file is not a Caduceus proof")?;
    let transaction = &proof.transaction.transaction;
    println!(
        "transaction {}: {} signed by {}, result {}, shard {} height {}, round {}",
        id_hex(transaction.id),
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
        return Ok(ExitCode::from(2));
    }
    match proof.verify(&trusted) {
        Ok(()) => {
            println!("VALID: signature checks and the proof leads to checkpoint {checkpoint}");
            Ok(ExitCode::SUCCESS)
        }
        Err(error) => {
            println!("INVALID: {error}");
            Ok(ExitCode::from(2))
        }
    }
}

fn verify(data: &Path) -> Result<ExitCode> {
    if !data.join("CURRENT").exists() {
        bail!("{} holds no ledger", data.display());
    }
    let storage = RocksStorage::open(data)?;
    let report = verify_storage(&storage)?;
    println!(
        "checked {} shards, {} rounds, {} blocks, {} transactions, {} stored keys",
        report.shards, report.rounds, report.blocks, report.transactions, report.keys
    );
    if report.is_intact() {
        println!("intact: every chain, root, signature, state entry and index matches the blocks");
        return Ok(ExitCode::SUCCESS);
    }
    println!("DAMAGED: {} problems", report.problem_count);
    for problem in &report.problems {
        println!("  {}: {}", problem.place, problem.detail);
    }
    if report.problem_count > report.problems.len() as u64 {
        println!("  ... and {} more", report.problem_count - report.problems.len() as u64);
    }
    Ok(ExitCode::from(2))
}

fn query(dir: &Path, question: Question) -> Result<()> {
    let ledger = Ledger::open_existing(dir)?;
    match question {
        Question::AccessReport { patient } => {
            let patient = parse_actor(&patient)?;
            for entry in ledger.access_report(&patient)? {
                let purpose = entry.purpose.map_or("emergency", |p| p.as_str());
                println!(
                    "{} record={} accessor={} purpose={purpose} result={} break_glass={} tx={}",
                    when(entry.time),
                    id_hex(entry.record),
                    entry.accessor,
                    entry.result,
                    entry.break_glass,
                    id_hex(entry.transaction)
                );
            }
        }
        Question::Unit { gtin, serial } => print_unit(&ledger, &UnitId { gtin, serial })?,
        Question::Claim { patient, claim } => {
            let claim =
                ledger.claim(&parse_actor(&patient)?, parse_id(&claim)?).context("no such claim for that patient")?;
            println!("{claim:#?}");
        }
        Question::Balance { account } => {
            let account = ledger.account(&parse_actor(&account)?).context("no such account")?;
            println!("balance {} cents (funded {} cents)", account.balance, account.funded);
        }
        Question::Transaction { id } => print_proof(&ledger, parse_id(&id)?)?,
        Question::Proof { id, out } => {
            let id = parse_id(&id)?;
            let proof = ledger.prove(id)?.with_context(|| format!("no transaction {} on this ledger", id_hex(id)))?;
            std::fs::write(&out, proof.encode()?)?;
            let checkpoint = ledger.checkpoint_at(proof.checkpoint_round)?.context("its checkpoint is stored")?;
            println!("wrote the proof of {} to {}", id_hex(id), out.display());
            println!("it leads to checkpoint {} (round {})", hex(&checkpoint.hash()), checkpoint.round);
        }
        Question::Checkpoint => {
            let checkpoint = ledger.checkpoint().context("the ledger has no rounds yet")?;
            println!("round {} checkpoint {}", checkpoint.round, hex(&checkpoint.hash()));
            for head in &checkpoint.heads {
                println!("  shard {} height {} head {}", head.shard, head.height, hex(&head.hash));
            }
            println!("state hash {}", hex(&ledger.state_hash()));
        }
    }
    Ok(())
}
