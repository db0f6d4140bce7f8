//! `caduceus`: the command line.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use caduceus_engine::codec::Codec;
use caduceus_engine::history::{AccessEntry, CustodyEvent};
use caduceus_engine::model::{hex, unhex, ActorKey, Operation, TxResult, UnitId};
use caduceus_engine::signature::{actor_key, measure_verify_batch_rate, signing_key};
use caduceus_engine::storage::RocksStorage;
use caduceus_engine::verify::verify_storage;
use caduceus_engine::{Checkpoint, Ledger, Proof, SignedTransaction, UnitVerification};
use caduceus_shards::cluster;
use caduceus_shards::cluster::client::Client;
use caduceus_shards::cluster::config::NodeConfig;
use caduceus_shards::cluster::wire::{Answer, Outcome, Query as WireQuery};
use caduceus_shards::workload::{self, LoadArgs, Workload};
use clap::{Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};

/// The same allocator as `loadgen` (see there), so a shard server or the demo runs as measured.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
    /// Ask an embedded ledger (`--dir`) or a cluster (`--target`) a question.
    Query {
        #[arg(long, required_unless_present_any = ["target", "cluster_dir"], conflicts_with_all = ["target", "cluster_dir"])]
        dir: Option<PathBuf>,
        #[command(flatten)]
        cluster: ClusterTarget,
        #[command(subcommand)]
        question: Question,
    },
    /// Serve one or more shards of a cluster (a config written by `caduceus cluster init`).
    Shard {
        #[arg(long)]
        config: PathBuf,
    },
    /// Run a cluster's coordinator (a config written by `caduceus cluster init`).
    Coordinator {
        #[arg(long)]
        config: PathBuf,
    },
    /// Create, start, inspect or stop a cluster on this machine.
    Cluster {
        #[command(subcommand)]
        action: ClusterAction,
    },
    /// Submit the seeded workload to a cluster and report its results.
    Submit {
        #[command(flatten)]
        cluster: ClusterTarget,
        #[command(flatten)]
        load: LoadArgs,
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

/// Where a cluster's coordinator takes clients.
#[derive(clap::Args)]
struct ClusterTarget {
    /// The coordinator's client address (printed by `caduceus cluster up`).
    #[arg(long)]
    target: Option<std::net::SocketAddr>,
    /// The cluster CA certificate (default: `ca.pem` in `--cluster-dir`).
    #[arg(long)]
    ca: Option<PathBuf>,
    /// A cluster directory made by `caduceus cluster init`: gives the target and the CA.
    #[arg(long)]
    cluster_dir: Option<PathBuf>,
}

impl ClusterTarget {
    fn resolve(&self) -> Result<(std::net::SocketAddr, PathBuf)> {
        let from_dir = self.cluster_dir.as_deref().map(cluster::local::client_target).transpose()?;
        let target =
            self.target.or(from_dir.as_ref().map(|t| t.0)).context("give --target ADDR or --cluster-dir DIR")?;
        let ca = self.ca.clone().or(from_dir.map(|t| t.1)).context("give --ca FILE or --cluster-dir DIR")?;
        Ok((target, ca))
    }
}

#[derive(Subcommand)]
enum ClusterAction {
    /// Create a cluster: CA, node certificates and keys, one config per node (ports on 127.0.0.1).
    Init {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long, default_value_t = 4)]
        shards: u32,
        /// Shard server processes (shards are dealt to them in turn; default one per shard).
        #[arg(long)]
        servers: Option<u32>,
        /// The coordinator's client port; shard servers take the next ones. 0 picks free ports.
        #[arg(long, default_value_t = 7400)]
        base_port: u16,
        /// A genesis operator's actor key (hex); repeat for several. Default: the operator of
        /// the seeded demo workload with `--seed`, so `caduceus submit` works at once. A real
        /// deployment names its own.
        #[arg(long)]
        operator: Vec<String>,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Commit every round at this time (ms since the epoch) instead of the clock, for
        /// reproducible runs.
        #[arg(long)]
        fixed_time: Option<u64>,
    },
    /// Start every node, wait until healthy, print the client address; stop on Ctrl-C or SIGTERM.
    Up {
        #[arg(long)]
        dir: PathBuf,
    },
    /// Each node's role, pid, address and health.
    Status {
        #[arg(long)]
        dir: PathBuf,
    },
    /// Stop a running cluster.
    Down {
        #[arg(long)]
        dir: PathBuf,
    },
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
        Command::Query { dir: Some(dir), question, .. } => {
            query(&dir, question)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Query { dir: None, cluster: target, question } => {
            let (target, ca) = target.resolve()?;
            runtime()?.block_on(cluster_query(target, &ca, question))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Shard { config } => {
            let config = NodeConfig::load(&config)?;
            runtime()?.block_on(cluster::shard_server::serve(config, stop_signal()))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Coordinator { config } => {
            let config = NodeConfig::load(&config)?;
            runtime()?.block_on(cluster::coordinator::serve(config, stop_signal()))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Cluster { action } => cluster_command(action),
        Command::Submit { cluster: target, load } => {
            let (target, ca) = target.resolve()?;
            runtime()?.block_on(submit(target, &ca, &load))?;
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

    samples(&ledger, &workload, &transactions, &results)?;
    let checkpoint = ledger.checkpoint().context("the demo wrote rounds")?;
    println!();
    println!("checkpoint: round {} root {}", checkpoint.round, hex(&checkpoint.hash()));
    println!("state hash: {}", hex(&ledger.state_hash()?));
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
            let status = ledger.claim(patient, *claim)?.context("a paid claim is on the ledger")?;
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
    print_unit_report(&ledger.verify_unit(unit)?, &ledger.custody_trace(unit)?);
    Ok(())
}

fn print_unit_report(verification: &UnitVerification, events: &[CustodyEvent]) {
    let unit = &verification.unit;
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
    for event in events {
        let to = event.counterparty.map(|c| format!(" -> {}", &c.to_hex()[..16])).unwrap_or_default();
        println!("  {} {:<18} by {}{to}: {}", when(event.time), event.event, &event.actor.to_hex()[..16], event.result);
    }
}

fn print_access(entry: &AccessEntry) {
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

fn print_proof(ledger: &Ledger, id: u128) -> Result<()> {
    let proof = ledger.prove(id)?.with_context(|| format!("no transaction {} on this ledger", id_hex(id)))?;
    let checkpoint = ledger.checkpoint_at(proof.checkpoint_round)?.context("its checkpoint is stored")?;
    report_proof(id, &proof, &checkpoint);
    Ok(())
}

/// Prints a transaction's result and whether its proof checks against `checkpoint`.
fn report_proof(id: u128, proof: &Proof, checkpoint: &Checkpoint) {
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
}

fn print_checkpoint(checkpoint: &Checkpoint) {
    println!("round {} checkpoint {}", checkpoint.round, hex(&checkpoint.hash()));
    for head in &checkpoint.heads {
        println!("  shard {} height {} head {}", head.shard, head.height, hex(&head.hash));
    }
}

/// A transaction's proof from a cluster, with the checkpoint it leads to.
async fn cluster_proof(client: &Client, id: u128) -> Result<(Proof, Checkpoint)> {
    let proof = client.prove(id).await?.with_context(|| format!("no transaction {} in the cluster", id_hex(id)))?;
    let checkpoint = client.checkpoint_at(proof.checkpoint_round).await?.context("its checkpoint is stored")?;
    Ok((proof, checkpoint))
}

/// Writes a proof for `caduceus check-proof` and says which checkpoint it leads to.
fn write_proof(out: &Path, id: u128, proof: &Proof, checkpoint: &Checkpoint) -> Result<()> {
    std::fs::write(out, proof.encode()?)?;
    println!("wrote the proof of {} to {}", id_hex(id), out.display());
    println!("it leads to checkpoint {} (round {})", hex(&checkpoint.hash()), checkpoint.round);
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
                print_access(&entry);
            }
        }
        Question::Unit { gtin, serial } => print_unit(&ledger, &UnitId { gtin, serial })?,
        Question::Claim { patient, claim } => {
            let claim =
                ledger.claim(&parse_actor(&patient)?, parse_id(&claim)?)?.context("no such claim for that patient")?;
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
            let checkpoint = ledger.checkpoint_at(proof.checkpoint_round)?.context("its checkpoint is stored")?;
            write_proof(&out, id, &proof, &checkpoint)?;
        }
        Question::Checkpoint => {
            print_checkpoint(&ledger.checkpoint().context("the ledger has no rounds yet")?);
            println!("state hash {}", hex(&ledger.state_hash()?));
        }
    }
    Ok(())
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread().enable_all().build()?)
}

/// Resolves on Ctrl-C or SIGTERM.
async fn stop_signal() {
    let mut terminate =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("a SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
    }
}

fn cluster_command(action: ClusterAction) -> Result<ExitCode> {
    match action {
        ClusterAction::Init { dir, shards, servers, base_port, operator, seed, fixed_time } => {
            let operators = if operator.is_empty() {
                #[derive(Parser)]
                struct Seeded {
                    #[command(flatten)]
                    load: LoadArgs,
                }
                let load = Seeded::parse_from(["caduceus", "--seed", &seed.to_string()]).load;
                let workload = Workload::new(load.workload(), load.start_ms());
                println!("genesis operator: the demo workload's (seed {seed}); name your own with --operator");
                vec![workload.operator()]
            } else {
                operator.iter().map(|o| parse_actor(o)).collect::<Result<_>>()?
            };
            let options = cluster::local::InitOptions {
                dir,
                shards,
                servers: servers.unwrap_or(shards),
                base_port,
                operators,
                fixed_time,
            };
            cluster::local::init(&options)?;
            Ok(ExitCode::SUCCESS)
        }
        ClusterAction::Up { dir } => {
            runtime()?.block_on(cluster::local::up(&dir))?;
            Ok(ExitCode::SUCCESS)
        }
        ClusterAction::Status { dir } => {
            let healthy = runtime()?.block_on(cluster::local::status(&dir))?;
            Ok(if healthy { ExitCode::SUCCESS } else { ExitCode::from(3) })
        }
        ClusterAction::Down { dir } => {
            cluster::local::down(&dir)?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Submits the seeded workload (setup, then load) to a cluster and prints results by reason.
async fn submit(target: std::net::SocketAddr, ca: &Path, load: &LoadArgs) -> Result<()> {
    let client = Client::connect(target, ca).await?;
    let mut workload = Workload::new(load.workload(), load.start_ms());
    let mut counts: std::collections::BTreeMap<String, usize> = Default::default();
    let started = Instant::now();
    let mut total = 0;
    let mut record = |outcomes: Vec<Outcome>| {
        for outcome in outcomes {
            let name = match outcome {
                Outcome::Done(result) => result.as_str().to_string(),
                Outcome::Unavailable => "unavailable (not acknowledged)".to_string(),
            };
            *counts.entry(name).or_default() += 1;
        }
    };
    for phase in workload.signed_setup() {
        for batch in phase.chunks(load.batch_size()) {
            total += batch.len();
            record(client.submit(batch.to_vec()).await?);
        }
    }
    let mut left = load.transactions();
    while left > 0 {
        let batch = workload.signed_batch(left.min(load.batch_size()));
        left -= batch.len();
        total += batch.len();
        record(client.submit(batch).await?);
    }
    let elapsed = started.elapsed().as_secs_f64();
    println!(
        "{total} transactions to {target} in {elapsed:.1} s ({:.0} tx/s, one batch at a time)",
        total as f64 / elapsed
    );
    for (name, count) in counts {
        println!("  {name:<32} {count}");
    }
    if let Some(checkpoint) = client.checkpoint().await? {
        println!("checkpoint round {} {}", checkpoint.round, hex(&checkpoint.hash()));
    }
    client.close().await;
    Ok(())
}

async fn cluster_query(target: std::net::SocketAddr, ca: &Path, question: Question) -> Result<()> {
    let client = Client::connect(target, ca).await?;
    match question {
        Question::AccessReport { patient } => {
            let Answer::AccessReport(entries) = client.query(WireQuery::AccessReport(parse_actor(&patient)?)).await?
            else {
                bail!("unexpected answer")
            };
            for entry in entries {
                print_access(&entry);
            }
        }
        Question::Unit { gtin, serial } => {
            let unit = UnitId { gtin, serial };
            let Answer::Unit(state, recall) = client.query(WireQuery::Unit(unit.clone())).await? else {
                bail!("unexpected answer")
            };
            let Answer::Custody(events) = client.query(WireQuery::Custody(unit.clone())).await? else {
                bail!("unexpected answer")
            };
            let expired = state.as_ref().is_some_and(|u| now_ms() >= u.expiry);
            print_unit_report(&UnitVerification { unit, state, recall, expired }, &events);
        }
        Question::Claim { patient, claim } => {
            let Answer::Claim(found) =
                client.query(WireQuery::Claim(parse_actor(&patient)?, parse_id(&claim)?)).await?
            else {
                bail!("unexpected answer")
            };
            println!("{:#?}", found.context("no such claim for that patient")?);
        }
        Question::Balance { account } => {
            let Answer::Account(found) = client.query(WireQuery::Account(parse_actor(&account)?)).await? else {
                bail!("unexpected answer")
            };
            let account = found.context("no such account")?;
            println!("balance {} cents (funded {} cents)", account.balance, account.funded);
        }
        Question::Transaction { id } => {
            let id = parse_id(&id)?;
            let (proof, checkpoint) = cluster_proof(&client, id).await?;
            report_proof(id, &proof, &checkpoint);
        }
        Question::Proof { id, out } => {
            let id = parse_id(&id)?;
            let (proof, checkpoint) = cluster_proof(&client, id).await?;
            write_proof(&out, id, &proof, &checkpoint)?;
        }
        Question::Checkpoint => {
            print_checkpoint(&client.checkpoint().await?.context("the cluster has no rounds yet")?);
            if let Answer::Totals(hash, balances, funded) = client.query(WireQuery::Totals).await? {
                println!("state hash {}", hex(&hash));
                println!("balances {balances} cents, funded {funded} cents");
            }
        }
    }
    client.close().await;
    Ok(())
}
