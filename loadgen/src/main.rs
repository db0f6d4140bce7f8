//! `loadgen`: measures Caduceus with a seeded, realistic healthcare workload.
//!
//! - `loadgen generate --out FILE` writes a pre-signed workload;
//! - `loadgen run --embedded ...` replays one (or generates one in memory
//!   first) in a closed or open loop, and reports throughput against the raw
//!   ed25519 `verify_batch` rate measured in the same run, results by reason,
//!   commit latency, and optionally JSON, an SVG plot and an ack log;
//! - `loadgen verify --ack-log FILE` checks that every acknowledged
//!   transaction is in the ledger with the same result.

/// The engine allocates and frees many small objects per transaction (decoded transactions,
/// state values, storage keys); mimalloc's thread-local free lists do that with less work than
/// the system allocator.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod drive;
mod report;
mod sink;
mod source;

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use caduceus_engine::ledger::Options as LedgerOptions;
use caduceus_engine::limits::BATCH_TRANSACTIONS_MAX;
use caduceus_engine::signature::{measure_verify_batch_rate, measure_verify_one_rate};
use caduceus_engine::{Config, Ledger, SignedTransaction, TxResult};
use caduceus_loadgen::args::LoadArgs;
use caduceus_loadgen::record;
use caduceus_workload::file::write_workload;
use caduceus_workload::{forge_every_chunk, Workload};
use clap::{Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;

use crate::drive::Tally;
use crate::sink::Sink;
use crate::source::Source;
use caduceus_shards::client::Client;

#[derive(Parser)]
#[command(name = "loadgen", version, about = "Load generator for Caduceus")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Write a pre-signed workload to a file, so signing is not part of what a run measures.
    Generate {
        #[arg(long)]
        out: PathBuf,
        #[command(flatten)]
        load: LoadArgs,
    },
    /// Run a workload against a target and report.
    Run(Box<Run>),
    /// Regenerate the README's headline table from the recorded runs.
    Headline {
        /// The folder of recorded runs.
        #[arg(long, default_value = "docs/benchmarks")]
        benchmarks: PathBuf,
        /// The README whose table (between its headline markers) is rewritten.
        #[arg(long, default_value = "README.md")]
        readme: PathBuf,
        /// Change nothing; fail if the README's table is not what the runs give.
        #[arg(long)]
        check: bool,
    },
    /// Write a large X12 837 (`DIR/claims.837`) and the 835s that pay it (`DIR/remittances.835`),
    /// to measure `caduceus import` on.
    X12 {
        #[arg(long)]
        out: PathBuf,
        #[arg(long, default_value_t = 20_000)]
        claims: usize,
        #[arg(long, default_value_t = 50)]
        providers: usize,
        #[arg(long, default_value_t = 4)]
        payers: usize,
    },
    /// Write a large EPCIS 2.0 JSON-LD document (`DIR/supply.jsonld`): units commissioned,
    /// packed, shipped to wholesalers, received, shipped on to pharmacies, received and dispensed,
    /// to measure `caduceus import` on.
    Epcis {
        #[arg(long)]
        out: PathBuf,
        #[arg(long, default_value_t = 20_000)]
        units: usize,
        #[arg(long, default_value_t = 4)]
        manufacturers: usize,
        #[arg(long, default_value_t = 8)]
        wholesalers: usize,
        #[arg(long, default_value_t = 50)]
        pharmacies: usize,
    },
    /// Check that every transaction in an ack log is in the ledger with the same result.
    Verify {
        #[command(flatten)]
        target: Target,
        #[arg(long)]
        ack_log: PathBuf,
    },
}

/// Where the load goes: the embedded engine, or a cluster's coordinator.
#[derive(clap::Args)]
#[group(required = true, multiple = false, id = "where")]
struct TargetChoice {
    /// The embedded engine in this process.
    #[arg(long)]
    embedded: bool,
    /// A cluster's coordinator (its client address, as `caduceus cluster up` prints it).
    #[arg(long)]
    target: Option<std::net::SocketAddr>,
    /// A cluster made by `caduceus cluster init`: its coordinator and CA.
    #[arg(long)]
    cluster_dir: Option<PathBuf>,
}

#[derive(clap::Args)]
struct Target {
    #[command(flatten)]
    choice: TargetChoice,
    /// The embedded engine's data directory: an existing ledger is continued, a new one created
    /// (default for `run`: a new temporary directory).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// The cluster CA certificate, with `--target` (default: the cluster directory's).
    #[arg(long)]
    ca: Option<PathBuf>,
}

impl Target {
    /// The cluster's address and CA file, or `None` for the embedded engine.
    fn cluster(&self) -> Result<Option<(std::net::SocketAddr, PathBuf)>> {
        if self.choice.embedded {
            return Ok(None);
        }
        let (target, ca, dir) = (self.choice.target, self.ca.as_deref(), self.choice.cluster_dir.as_deref());
        Ok(Some(caduceus_shards::local::resolve_target(target, ca, dir)?))
    }
}

#[derive(clap::Args)]
struct Run {
    #[command(flatten)]
    target: Target,
    /// Replay a workload written by `loadgen generate` (default: generate one in memory first).
    #[arg(long)]
    workload: Option<PathBuf>,
    /// Skip this many of the workload file's load transactions (to continue a ledger that
    /// already holds them).
    #[arg(long, default_value_t = 0)]
    skip: u64,
    #[command(flatten)]
    load: LoadArgs,
    /// Run for this long (`30s`, `2m`, `500ms`) instead of a transaction count.
    #[arg(long, value_parser = humantime::parse_duration)]
    duration: Option<Duration>,
    /// Open loop: offer this many transactions per second on a fixed schedule, and measure
    /// latency from each batch's intended send time. Without it: closed loop (`--in-flight`).
    #[arg(long)]
    rate: Option<f64>,
    /// Put the payload store in the path of record registrations: each record version's
    /// payload (a small FHIR resource) is sealed when the workload is generated, and stored
    /// (one durable write per batch) before its batch is submitted. Embedded, generated
    /// workloads only. The store is `DIR.payloads` beside `--dir` (its key-encryption key
    /// `DIR.kek`), or a temporary directory.
    #[arg(long)]
    payloads: bool,
    /// Skip the reference measurement.
    #[arg(long)]
    no_reference: bool,
    /// Write the full report as JSON.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Record the run as data: one file in this folder (date, commit, command and the JSON
    /// report), which `loadgen headline` reads. Needs `--label`.
    #[arg(long, requires = "label")]
    record: Option<PathBuf>,
    /// What the recorded run measures, for the README's headline table.
    #[arg(long, value_enum)]
    label: Option<record::Label>,
    /// Draw throughput over time and the latency distribution as SVG.
    #[arg(long)]
    plot: Option<PathBuf>,
    /// List every acknowledged transaction id with its result, for `loadgen verify`.
    #[arg(long)]
    ack_log: Option<PathBuf>,
    /// Run a hostile client alongside, keeping this many batches in flight, each with one bad
    /// signature in every verify chunk (the report then gives the one-by-one verify rate too).
    #[arg(long, default_value_t = 0)]
    attack_in_flight: usize,
    /// Embedded engine: keep at most this many entries of the state that grows with history
    /// (records, consents, claims, units) in memory per shard, and read the rest from storage
    /// when a transaction needs it (default: the whole state, loaded on open).
    #[arg(long)]
    state_cache: Option<usize>,
}

/// Batches from another population (so their transactions are new), with one bad signature
/// at the start of every verify chunk.
fn hostile_batches(load: &LoadArgs, count: usize) -> Vec<Vec<SignedTransaction>> {
    if count == 0 {
        return Vec::new();
    }
    let config = caduceus_workload::WorkloadConfig { seed: load.seed ^ 0x4a77_ac4e, ..load.workload() };
    let mut workload = Workload::new(config, load.start_ms());
    (0..count)
        .map(|_| {
            let mut batch = workload.signed_batch(load.batch_size());
            forge_every_chunk(&mut batch);
            batch
        })
        .collect()
}

fn main() -> ExitCode {
    let outcome = match Cli::parse().command {
        Command::Generate { out, load } => generate(&out, &load).map(|()| ExitCode::SUCCESS),
        Command::Run(options) => run(*options).map(|()| ExitCode::SUCCESS),
        Command::Headline { benchmarks, readme, check } => headline(&benchmarks, &readme, check),
        Command::Verify { target, ack_log } => verify(&target, &ack_log),
        Command::X12 { out, claims, providers, payers } => x12(&out, claims, providers, payers),
        Command::Epcis { out, units, manufacturers, wholesalers, pharmacies } => {
            epcis(&out, units, manufacturers, wholesalers, pharmacies)
        }
    };
    outcome.unwrap_or_else(|error| {
        eprintln!("error: {error:#}");
        ExitCode::FAILURE
    })
}

fn check_batch(load: &LoadArgs) -> Result<()> {
    if load.batch == 0 || load.batch > BATCH_TRANSACTIONS_MAX {
        bail!("--batch must be between 1 and {BATCH_TRANSACTIONS_MAX}");
    }
    if let Some(share) = load.cross_shard {
        if !(0.0..=1.0).contains(&share) {
            bail!("--cross-shard is a share between 0 and 1");
        }
    }
    if !(load.recency.is_finite() && load.recency > 0.0) {
        bail!("--recency is an exponent above 0 (1: uniform over history)");
    }
    Ok(())
}

/// How the workload was made, as reports and workload files record it.
fn describe(load: &LoadArgs, start_ms: u64) -> serde_json::Value {
    json!({
        "start_ms": start_ms,
        "seed": load.seed, "patients": load.patients, "providers": load.providers, "skew": load.skew, "recency": load.recency,
        "mix_records_consents_claims_supply": load.mix.to_string(), "cross_shard": load.cross_shard,
        "shards": load.shards,
    })
}

fn generate(out: &std::path::Path, load: &LoadArgs) -> Result<()> {
    check_batch(load)?;
    let count = load.transactions() as u64;
    let start = load.start_ms();
    let mut workload = Workload::new(load.workload(), start);
    let progress = ProgressBar::new(count).with_style(report::bar_style("signing"));
    let started = Instant::now();
    let header = write_workload(out, &mut workload, describe(load, start), count, load.batch_size(), |n| {
        progress.inc(n as u64);
    })?;
    progress.finish_and_clear();
    let size = std::fs::metadata(out)?.len();
    println!(
        "wrote {}: {} setup and {} load transactions ({:.1} MB) in {:.1} s",
        out.display(),
        header.setup.iter().sum::<u64>(),
        header.transactions,
        size as f64 / 1e6,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

fn run(options: Run) -> Result<()> {
    let load = &options.load;
    check_batch(load)?;
    if options.rate.is_some_and(|r| !(r.is_finite() && r > 0.0)) {
        bail!("--rate must be a positive number of transactions per second");
    }
    if options.workload.is_none() && options.skip > 0 {
        bail!("--skip applies to a workload file (--workload)");
    }
    let reference = (!options.no_reference).then(|| {
        eprintln!("measuring the reference: raw ed25519 verify_batch on 2 threads for 3 s (again after the load) ...");
        reference_rate()
    });
    let one_by_one = (!options.no_reference && options.attack_in_flight > 0).then(|| {
        eprintln!("measuring one-by-one ed25519 verify on 2 threads for 2 s ...");
        measure_verify_one_rate(2, Duration::from_secs(2))
    });
    let hostile = hostile_batches(load, options.attack_in_flight * 4);

    let cluster = options.target.cluster()?;
    // A cluster made with a generated operator key: the workload's registrations are signed
    // with it.
    let operator = cluster.as_ref().map(|(_, ca)| caduceus_shards::local::operator_key(ca)).transpose()?.flatten();
    if options.payloads && (cluster.is_some() || options.workload.is_some()) {
        bail!("--payloads needs the embedded engine and a generated workload (no --workload): payloads are sealed before their registrations are signed");
    }
    let mut source = source(&options, reference, operator)?;

    if cluster.is_some() && options.attack_in_flight > 0 {
        bail!("--attack-in-flight drives the embedded engine only");
    }
    if cluster.is_some() && options.state_cache.is_some() {
        bail!("--state-cache sets up the embedded engine only (shard servers keep their whole state)");
    }
    let opening = Instant::now();
    let (sink, place) = open_sink(&options, cluster.as_ref(), source.operator)?;
    let open_seconds = opening.elapsed().as_secs_f64();
    setup(&sink, &mut source, load.batch_size())?;
    let summary = summary(&options, &source);
    eprintln!("running: {summary}");
    let progress = progress_bar(&options, &source);
    let ack_log = options.ack_log.as_ref().map(File::create).transpose().context("create the ack log")?;
    let state_reads = || match &sink {
        Sink::Embedded(ledger) => ledger.state_cache_reads(),
        Sink::Cluster { .. } => None,
    };
    let state_reads_before = state_reads();
    let cpu_before = report::cpu_seconds();
    let mut tally = Tally::new(ack_log, progress, options.duration);
    let stop = std::sync::atomic::AtomicBool::new(false);
    let attack = std::thread::scope(|scope| -> Result<Option<drive::Attack>> {
        let attacker = match &sink {
            Sink::Embedded(ledger) if !hostile.is_empty() => {
                Some(scope.spawn(|| drive::attack(ledger, &hostile, options.attack_in_flight, &stop)))
            }
            _ => None,
        };
        let honest = match options.rate {
            Some(rate) => drive::open_loop(&sink, &mut source, rate, &mut tally),
            None => drive::closed_loop(&sink, &mut source, load.in_flight.max(1), &mut tally),
        };
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let attack = attacker.map(|a| a.join().expect("the hostile client does not panic")).transpose();
        honest?;
        attack
    })?;
    let cpu_seconds = report::cpu_seconds() - cpu_before;
    let storage_reads = state_reads().zip(state_reads_before).map(|(after, before)| after.since(before));
    tally.finish()?;
    // Closing the ledger finishes its background work before the second reference measurement.
    drop(sink);
    // This machine's speed drifts over minutes (the raw rate moved by a fifth between runs on
    // a shared host), so the reference is measured again after the load and the ratio is to
    // the mean of the two.
    let reference = reference.map(|before| {
        eprintln!("measuring the reference again after the load for 3 s ...");
        report::Reference { before, after: reference_rate() }
    });
    if let Some(duration) = options.duration {
        if tally.elapsed + Duration::from_millis(500) < duration {
            eprintln!(
                "note: the workload ran out after {:.1} s of the {:.1} s asked for",
                tally.elapsed.as_secs_f64(),
                duration.as_secs_f64()
            );
        }
    }

    let figures = report::Figures { tally: &tally, reference, open_seconds, cpu_seconds, storage_reads };
    figures.print(&summary, &place);
    if let Some(attack) = &attack {
        print_attack(attack, options.attack_in_flight, one_by_one, figures.throughput());
    }
    let config = run_config(&options, cluster.is_some(), &place, &source);
    let mut report = figures.json(config);
    report["reference_verify_one_tps"] = json!(one_by_one);
    report["attack"] = json!(attack.as_ref().map(|a| json!({ "batches": a.batches, "results": a.results })));
    if let Some(path) = &options.json {
        std::fs::write(path, serde_json::to_vec_pretty(&report)?)
            .with_context(|| format!("write {}", path.display()))?;
    }
    if let (Some(dir), Some(label)) = (&options.record, options.label) {
        println!("recorded     {}", record::write(dir, label, &report)?.display());
    }
    if let Some(path) = &options.plot {
        let title = format!(
            "Caduceus {}: {summary}; {:.0} tx/s",
            if cluster.is_some() { "cluster" } else { "embedded" },
            figures.throughput()
        );
        report::plot(path, &tally, &title)?;
    }
    Ok(())
}

/// Refuses a workload file signed too long ago for its transactions to commit now (they would
/// all be refused as `expired`): a ledger takes a transaction within
/// `limits::TRANSACTION_VALIDITY_MS` of its signing.
fn still_valid(path: &std::path::Path, description: &serde_json::Value) -> Result<()> {
    use caduceus_engine::limits::TRANSACTION_VALIDITY_MS;
    let Some(signed) = description.get("start_ms").and_then(serde_json::Value::as_u64) else { return Ok(()) };
    let now = caduceus_engine::ledger::system_clock()();
    // An hour to spare, so that a run does not cross the end of the window.
    if now.saturating_add(3_600_000) > signed.saturating_add(TRANSACTION_VALIDITY_MS) {
        let age = humantime::format_duration(Duration::from_secs(now.saturating_sub(signed) / 1000));
        anyhow::bail!(
            "{} was signed {age} ago; a ledger takes a transaction only within {} of its signing \
             (less an hour for the run): generate it again with `loadgen generate`",
            path.display(),
            humantime::format_duration(Duration::from_millis(TRANSACTION_VALIDITY_MS))
        );
    }
    Ok(())
}

/// The run's payload store: beside the ledger's directory, or in a temporary one.
fn payload_store(dir: Option<&std::path::Path>) -> Result<std::sync::Arc<caduceus_engine::payload::PayloadStore>> {
    let base = match dir {
        Some(dir) => dir.to_owned(),
        None => tempfile::Builder::new().prefix("caduceus-loadgen-payloads-").tempdir()?.keep().join("ledger"),
    };
    Ok(std::sync::Arc::new(caduceus_engine::payload::PayloadStore::beside(&base)?))
}

/// The workload: the file given, or one generated in memory, large enough for `--duration`.
fn source(
    options: &Run,
    reference: Option<f64>,
    operator: Option<caduceus_engine::signature::SigningKey>,
) -> Result<Source> {
    let load = &options.load;
    Ok(match &options.workload {
        Some(path) => {
            let limit = load.transactions.map(|n| n as u64);
            let source = Source::file(path, load.shards, load.batch_size(), options.skip, limit)
                .with_context(|| format!("read the workload {}", path.display()))?;
            still_valid(path, &source.description)?;
            if operator.as_ref().is_some_and(|key| caduceus_engine::signature::actor_key(key) != source.operator) {
                bail!(
                    "{} is signed by its seeded operator, and this cluster has its own operator key: \
                     run a generated workload (no --workload), or a cluster made with --operator {}",
                    path.display(),
                    source.operator
                );
            }
            source
        }
        None => {
            let count = match (options.duration, load.transactions) {
                (Some(duration), None) => {
                    // Enough for the whole duration: the offered rate, or the machine's
                    // signature-check ceiling, which no run can exceed.
                    let ceiling = options.rate.or(reference).unwrap_or_else(|| {
                        eprintln!("measuring how many transactions the duration needs ...");
                        measure_verify_batch_rate(2, Duration::from_secs(1))
                    });
                    (ceiling * duration.as_secs_f64()).ceil() as u64
                }
                _ => load.transactions() as u64,
            };
            let start = load.start_ms();
            let mut workload = Workload::new(load.workload(), start);
            if let Some(key) = operator {
                workload = workload.with_operator(key);
            }
            let payloads = options.payloads.then(|| payload_store(options.target.dir.as_deref())).transpose()?;
            Source::generate(workload, count, load.batch_size(), describe(load, start), payloads)
        }
    })
}

/// The target: a cluster's coordinator, or an embedded ledger in `--dir` (continued if it
/// exists) or a new temporary directory. Also says where the data is.
fn open_sink(
    options: &Run,
    cluster: Option<&(std::net::SocketAddr, PathBuf)>,
    operator: caduceus_engine::ActorKey,
) -> Result<(Sink, String)> {
    let load = &options.load;
    Ok(match cluster {
        Some((address, ca)) => (Sink::connect(*address, ca)?, format!("cluster at {address}")),
        None => {
            let dir = match &options.target.dir {
                Some(dir) => dir.clone(),
                None => tempfile::Builder::new().prefix("caduceus-loadgen-").tempdir()?.keep(),
            };
            let ledger_options = LedgerOptions { state_cache_entries: options.state_cache };
            let ledger = if dir.join("CURRENT").exists() {
                let ledger =
                    Ledger::builder().options(ledger_options.clone()).open_existing(&dir).context("open the ledger")?;
                eprintln!("continuing the ledger in {} at round {}", dir.display(), ledger.round());
                if ledger.shard_count() != load.shards {
                    bail!("the ledger in {} has {} shards, not {}", dir.display(), ledger.shard_count(), load.shards);
                }
                ledger
            } else {
                let config = Config { shards: load.shards, genesis_operators: vec![operator], operator_quorum: 1 };
                Ledger::builder().options(ledger_options.clone()).open(&dir, &config).context("create the ledger")?
            };
            (Sink::Embedded(ledger), dir.display().to_string())
        }
    })
}

/// Registrations, then funding, each phase durable before the next.
fn setup(sink: &Sink, source: &mut Source, batch: usize) -> Result<()> {
    for phase in std::mem::take(&mut source.setup) {
        for chunk in phase.chunks(batch) {
            for result in sink.submit(0, chunk.to_vec())?.wait()? {
                match result {
                    Some(TxResult::Committed) => {}
                    Some(bad) => {
                        bail!("a setup transaction was rejected ({bad}): is this ledger from another workload?")
                    }
                    None => bail!("a setup transaction was not acknowledged: a cluster shard is unreachable"),
                }
            }
        }
    }
    Ok(())
}

/// One line saying what the run does.
fn summary(options: &Run, source: &Source) -> String {
    let load = &options.load;
    let shape = match options.rate {
        Some(rate) => format!("open loop at {rate:.0} tx/s"),
        None => format!("closed loop, {} batches in flight", load.in_flight.max(1)),
    };
    let extent = match options.duration {
        Some(duration) => format!("for {:.1} s (at most {} transactions)", duration.as_secs_f64(), source.transactions),
        None => format!("{} transactions", source.transactions),
    };
    let state = options.state_cache.map_or(String::new(), |n| format!(", state cache of {n} entries per shard"));
    format!("{shape}, {extent}, {} shards, batches of {}{state}", load.shards, load.batch_size())
}

/// Progress by time with `--duration`, else by transactions.
fn progress_bar(options: &Run, source: &Source) -> ProgressBar {
    match options.duration {
        Some(duration) => ProgressBar::new(duration.as_secs()).with_style(
            ProgressStyle::with_template("   running [{bar:40}] {pos}/{len} s")
                .expect("template")
                .progress_chars("=> "),
        ),
        None => ProgressBar::new(source.transactions).with_style(report::bar_style("running")),
    }
}

/// What the hostile client sent and got back, and the one-by-one rate it is measured against.
fn print_attack(attack: &drive::Attack, in_flight: usize, one_by_one: Option<f64>, throughput: f64) {
    println!(
        "attack       a hostile client kept {} batches in flight: {} batches, {} transactions",
        in_flight,
        attack.batches,
        attack.results.values().sum::<u64>()
    );
    for (result, count) in &attack.results {
        println!("  {result:<30} {count}");
    }
    if let Some(rate) = one_by_one {
        println!(
                "one-by-one   {rate:.0} signatures/s (ed25519 verify, 2 threads, this run); honest throughput is {:.2} of it",
                throughput / rate
            );
    }
}

/// The run's configuration, as its JSON report records it.
fn run_config(options: &Run, cluster: bool, place: &str, source: &Source) -> serde_json::Value {
    let load = &options.load;
    json!({
        "target": if cluster { "cluster" } else { "embedded" },
        "place": place,
        "shards": load.shards,
        "batch": load.batch_size(),
        "load": match options.rate {
            Some(rate) => json!({ "shape": "open loop", "rate_tps": rate }),
            None => json!({ "shape": "closed loop", "in_flight": load.in_flight.max(1) }),
        },
        "duration_seconds": options.duration.map(|d| d.as_secs_f64()),
        "attack_in_flight": options.attack_in_flight,
        "state_cache_entries_per_shard": options.state_cache,
        "transactions_available": source.transactions,
        "workload": {
            "source": source.kind,
            "file": options.workload,
            "skip": options.skip,
            "description": source.description,
        },
    })
}

/// The reference: the raw two-thread `verify_batch` rate over 3 s.
fn reference_rate() -> f64 {
    measure_verify_batch_rate(2, Duration::from_secs(3))
}

/// Writes (or with `check`, compares) the README's headline table.
fn headline(benchmarks: &std::path::Path, readme: &std::path::Path, check: bool) -> Result<ExitCode> {
    let table = record::table(benchmarks)?;
    if record::update_readme(readme, &table, check)? {
        println!("{}: the headline table is what {} gives", readme.display(), benchmarks.display());
        Ok(ExitCode::SUCCESS)
    } else {
        println!("{}: the headline table differs from what {} gives:\n{table}", readme.display(), benchmarks.display());
        Ok(ExitCode::from(2))
    }
}

/// Checks an ack log against the ledger; fails if any acknowledged transaction is missing or different.
fn verify(target: &Target, ack_log: &std::path::Path) -> Result<ExitCode> {
    let mut log = BufReader::new(File::open(ack_log).with_context(|| format!("open {}", ack_log.display()))?);
    let mut entries = Vec::new();
    let mut line = String::new();
    for number in 1.. {
        line.clear();
        if log.read_line(&mut line).with_context(|| format!("read {}", ack_log.display()))? == 0 {
            break;
        }
        let Some(complete) = line.strip_suffix('\n') else {
            // A run killed while writing leaves its last line unfinished: the lines before it
            // are whole, and the torn one no longer names a transaction that can be checked.
            eprintln!("note: dropped a torn last line ({} bytes) of {}", line.len(), ack_log.display());
            break;
        };
        let parsed = complete.split_once(' ').and_then(|(id, result)| {
            let id = u128::from_str_radix(id, 16).ok()?;
            let result = match result {
                "committed" => TxResult::Committed,
                reason => TxResult::Rejected(caduceus_engine::Reason::parse(reason)?),
            };
            Some((id, result))
        });
        let Some(entry) = parsed else {
            bail!("{}:{number}: not an ack-log line: {complete:?}", ack_log.display());
        };
        entries.push(entry);
    }
    // What the target recorded for each id.
    let recorded: Vec<Option<TxResult>> = match target.cluster()? {
        Some((address, ca)) => {
            let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build()?;
            runtime.block_on(async {
                // Lookups are reads: signed by the cluster's operator (its generated key, else the
                // seeded workload's).
                let operator = caduceus_shards::local::operator_key(&ca)?
                    .unwrap_or_else(|| caduceus_workload::operator_key_of(LoadArgs::default_seed()));
                let client =
                    Client::connect(address, &ca).await?.reading_as(operator, caduceus_engine::ledger::system_clock());
                let mut recorded = Vec::with_capacity(entries.len());
                for chunk in entries.chunks(8192) {
                    recorded.extend(client.lookup(chunk.iter().map(|(id, _)| *id).collect()).await?);
                }
                client.close().await;
                anyhow::Ok(recorded)
            })?
        }
        None => {
            let dir = target.dir.as_ref().context("loadgen verify --embedded needs --dir")?;
            let ledger = Ledger::open_existing(dir).context("open the ledger")?;
            entries
                .iter()
                .map(|(id, _)| Ok(ledger.locate(*id)?.map(|location| location.result)))
                .collect::<Result<_>>()?
        }
    };
    let (mut checked, mut missing, mut different) = (0u64, 0u64, 0u64);
    for ((id, acknowledged), recorded) in entries.into_iter().zip(recorded) {
        checked += 1;
        match recorded {
            None => {
                missing += 1;
                if missing <= 10 {
                    eprintln!("missing: {id:032x} was acknowledged as {acknowledged}");
                }
            }
            Some(result) if result != acknowledged => {
                different += 1;
                if different <= 10 {
                    eprintln!("different: {id:032x} was acknowledged as {acknowledged}, the ledger says {result}");
                }
            }
            Some(_) => {}
        }
    }
    println!(
        "checked {checked} acknowledged transactions: {} present with the same result, {missing} missing, {different} different",
        checked - missing - different
    );
    Ok(if missing + different == 0 { ExitCode::SUCCESS } else { ExitCode::from(2) })
}

fn epcis(
    out: &std::path::Path,
    units: usize,
    manufacturers: usize,
    wholesalers: usize,
    pharmacies: usize,
) -> Result<ExitCode> {
    std::fs::create_dir_all(out).with_context(|| format!("create {}", out.display()))?;
    let document = caduceus_loadgen::epcis::document(units, manufacturers, wholesalers, pharmacies);
    let path = out.join("supply.jsonld");
    std::fs::write(&path, serde_json::to_vec(&document)?).with_context(|| format!("write {}", path.display()))?;
    println!("wrote {} ({units} units)", path.display());
    Ok(ExitCode::SUCCESS)
}

fn x12(out: &std::path::Path, claims: usize, providers: usize, payers: usize) -> Result<ExitCode> {
    std::fs::create_dir_all(out).with_context(|| format!("create {}", out.display()))?;
    let files = caduceus_loadgen::x12::files(claims, providers, payers);
    for (name, text) in [("claims.837", &files.claims), ("remittances.835", &files.remittances)] {
        let path = out.join(name);
        std::fs::write(&path, text).with_context(|| format!("write {}", path.display()))?;
        println!("wrote {} ({} bytes)", path.display(), text.len());
    }
    Ok(ExitCode::SUCCESS)
}
