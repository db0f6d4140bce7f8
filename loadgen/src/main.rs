//! `loadgen`: drives the embedded engine with a seeded, realistic healthcare
//! workload in a closed loop and reports throughput (with the raw ed25519
//! `verify_batch` reference measured in the same run) and commit latency.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use caduceus_engine::signature::measure_verify_batch_rate;
use caduceus_engine::{Ledger, SignedTransaction};
use caduceus_shards::workload::{self, LoadArgs, Workload};
use clap::{Parser, Subcommand};
use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressStyle};

#[derive(Parser)]
#[command(name = "loadgen", version, about = "Load generator for Caduceus")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a workload against a target and report.
    Run(Run),
}

#[derive(clap::Args)]
struct Run {
    /// Drive the embedded engine (the only target so far).
    #[arg(long, required = true)]
    embedded: bool,
    /// Data directory for the embedded engine (default: a new temporary directory).
    #[arg(long)]
    dir: Option<PathBuf>,
    #[command(flatten)]
    load: LoadArgs,
    /// Skip the reference measurement.
    #[arg(long)]
    no_reference: bool,
    /// Write the report as JSON.
    #[arg(long)]
    json: Option<PathBuf>,
}

fn main() -> Result<()> {
    match Cli::parse().command {
        Command::Run(run) => self::run(run),
    }
}

fn run(options: Run) -> Result<()> {
    let load = &options.load;
    if load.batch == 0 || load.batch > caduceus_engine::limits::BATCH_TRANSACTIONS_MAX {
        bail!("--batch must be between 1 and {}", caduceus_engine::limits::BATCH_TRANSACTIONS_MAX);
    }
    let dir = match &options.dir {
        Some(dir) => dir.clone(),
        None => tempfile::Builder::new().prefix("caduceus-loadgen-").tempdir()?.keep(),
    };
    let reference = (!options.no_reference).then(|| measure_verify_batch_rate(2, Duration::from_secs(3)));
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_millis() as u64;
    let mut workload = Workload::new(load.workload(), now);
    let ledger = Ledger::open(&dir, &workload.ledger_config(load.shards)).context("open the ledger")?;
    for phase in workload.signed_setup() {
        for chunk in phase.chunks(load.batch) {
            ledger.submit(chunk.to_vec())?;
        }
    }
    let mut batches: Vec<Vec<SignedTransaction>> = Vec::new();
    let mut remaining = load.transactions;
    while remaining > 0 {
        let size = remaining.min(load.batch);
        batches.push(workload.signed_batch(size));
        remaining -= size;
    }

    let progress = ProgressBar::new(load.transactions as u64);
    progress.set_style(ProgressStyle::with_template("[{bar:40}] {pos}/{len} tx ({per_sec})").expect("template"));
    let mut latency = Histogram::<u64>::new_with_bounds(1, 600_000_000, 3).expect("histogram bounds");
    let mut tally: BTreeMap<&'static str, u64> = BTreeMap::new();
    let started = Instant::now();
    workload::drive(&ledger, batches, load.in_flight, |sent, results| {
        let size = results.len() as u64;
        latency.saturating_record_n(sent.elapsed().as_micros().max(1) as u64, size);
        for result in results {
            *tally.entry(result.as_str()).or_default() += 1;
        }
        progress.inc(size);
    })?;
    let elapsed = started.elapsed();
    progress.finish_and_clear();

    let throughput = load.transactions as f64 / elapsed.as_secs_f64();
    let committed = tally.get("committed").copied().unwrap_or(0);
    let percentile = |q: f64| latency.value_at_quantile(q);
    println!(
        "workload     {} transactions, {} shards, batches of {}, {} in flight (closed loop), seed {}",
        load.transactions, load.shards, load.batch, load.in_flight, load.seed
    );
    println!("throughput   {throughput:.0} tx/s ({:.2} s)", elapsed.as_secs_f64());
    if let Some(reference) = reference {
        println!("reference    {reference:.0} signatures/s (raw ed25519 verify_batch, 2 threads, this run)");
        println!("ratio        {:.2}", throughput / reference);
    }
    println!("committed    {committed}");
    println!("rejected     {}", load.transactions as u64 - committed);
    for (reason, count) in tally.iter().filter(|(r, _)| **r != "committed") {
        println!("  {reason:<30} {count}");
    }
    println!(
        "latency us   p50 {}  p90 {}  p99 {}  p99.9 {}  max {}",
        percentile(0.5),
        percentile(0.9),
        percentile(0.99),
        percentile(0.999),
        latency.max()
    );
    println!("data         {}", dir.display());

    if let Some(path) = options.json {
        let report = serde_json::json!({
            "throughput_tps": throughput,
            "reference_verify_batch_tps": reference,
            "ratio_to_reference": reference.map(|r| throughput / r),
            "committed": committed,
            "rejected": load.transactions as u64 - committed,
            "rejected_by_reason": tally.iter().filter(|(r, _)| **r != "committed").collect::<BTreeMap<_, _>>(),
            "latency_us": {
                "p50": percentile(0.5), "p90": percentile(0.9), "p99": percentile(0.99),
                "p999": percentile(0.999), "max": latency.max(),
            },
            "config": {
                "target": "embedded", "dir": dir, "shards": load.shards, "transactions": load.transactions,
                "batch": load.batch, "in_flight": load.in_flight, "seed": load.seed,
                "patients": load.patients, "skew": load.skew, "load": "closed loop",
            },
            "machine": { "cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0), "os": std::env::consts::OS },
        });
        std::fs::write(&path, serde_json::to_vec_pretty(&report)?)?;
    }
    Ok(())
}
