//! `caduceus`: the command line. Each subcommand's work lives in its own module; this file
//! parses the command line and dispatches.

mod audit;
mod catalogue;
mod cluster;
mod demo;
mod export;
mod import;
mod keys;
mod parse;
mod print;
mod query;
mod reader;
mod target;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Result;
use caduceus_engine::model::Hash;
use caduceus_loadgen::args::LoadArgs;
use caduceus_shards::config::NodeConfig;
use clap::{Parser, Subcommand};

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
        /// Time spent measuring the ed25519 verify_batch reference (0 skips it).
        #[arg(long, default_value_t = 3.0)]
        reference_seconds: f64,
    },
    /// Check every chain, root, proof path and state entry of a ledger: an embedded one's data
    /// directory, or a stopped cluster's stores, checked against each other.
    Verify {
        /// The ledger's data directory.
        #[arg(long, alias = "data", required_unless_present = "cluster_dir", conflicts_with = "cluster_dir")]
        dir: Option<PathBuf>,
        /// A local cluster's directory (from `cluster init`): every shard's store and the coordinator's.
        #[arg(long)]
        cluster_dir: Option<PathBuf>,
        /// A checkpoint hash published earlier that the store must extend (repeatable).
        #[arg(long, value_parser = parse::hash)]
        checkpoint: Vec<Hash>,
    },
    /// Ask an embedded ledger (`--dir`) or a cluster (`--target` or `--cluster-dir`) a question.
    Query {
        #[arg(long, alias = "data", required_unless_present_any = ["target", "cluster_dir"], conflicts_with_all = ["target", "cluster_dir"])]
        dir: Option<PathBuf>,
        #[command(flatten)]
        cluster: ClusterTarget,
        /// Ask as this keystore key's actor: health data is answered only to an identified
        /// actor, and only what it may read (a cluster's reads are signed with the key; an
        /// auditor's reads are logged on the ledger first).
        #[arg(long = "as", value_name = "NAME")]
        reader: Option<String>,
        /// The keystore holding `--as` (default: `$CADUCEUS_KEYSTORE`, else `~/.caduceus/keys`).
        #[arg(long)]
        keystore: Option<PathBuf>,
        #[command(subcommand)]
        question: query::Question,
    },
    /// Write what the ledger holds in the formats health systems read (FHIR R4, EPCIS 2.0), each
    /// entry with its proof, read as the `--as` actor from an embedded ledger (`--dir`) or a
    /// cluster.
    Export {
        #[arg(long, alias = "data", required_unless_present_any = ["target", "cluster_dir"], conflicts_with_all = ["target", "cluster_dir"])]
        dir: Option<PathBuf>,
        #[command(flatten)]
        cluster: ClusterTarget,
        /// Read as this keystore key's actor.
        #[arg(long = "as", value_name = "NAME")]
        reader: String,
        /// The keystore holding `--as` (default: `$CADUCEUS_KEYSTORE`, else `~/.caduceus/keys`).
        #[arg(long)]
        keystore: Option<PathBuf>,
        /// The file to write.
        #[arg(long)]
        out: PathBuf,
        #[command(subcommand)]
        what: export::Export,
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
        action: cluster::ClusterAction,
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
        #[arg(long, value_parser = parse::hash)]
        checkpoint: Hash,
    },
    /// Register a keystore key's actor with a cluster, signed by the cluster's generated operator key.
    Register {
        #[command(flatten)]
        cluster: ClusterTarget,
        /// The key's name in the keystore.
        #[arg(long)]
        key: String,
        /// The keystore (default: `$CADUCEUS_KEYSTORE`, else `~/.caduceus/keys`).
        #[arg(long)]
        keystore: Option<PathBuf>,
        /// patient, provider, payer, manufacturer, distributor, dispenser, regulator or auditor.
        #[arg(long, value_parser = parse::role)]
        role: caduceus_engine::Role,
    },
    /// Import FHIR R4 (a resource, a Bundle, Bulk Data NDJSON), X12 5010 (837, 835), GS1 EPCIS
    /// (2.0 JSON-LD or XML, 1.2 XML) and FDA NDC directory files into an embedded ledger (made if
    /// the directory holds none) or a running cluster: actors, records (payloads stored
    /// encrypted), consents, claims and payments, units' custody, studies and enrolments,
    /// providers' credentials. Importing a file again changes nothing.
    Import {
        /// An embedded ledger's directory (made if it holds none).
        #[arg(long, alias = "data", required_unless_present_any = ["target", "cluster_dir"], conflicts_with_all = ["target", "cluster_dir"])]
        dir: Option<PathBuf>,
        /// Or a running cluster: its actors registered by the cluster's generated operator key
        /// (else `--operator`), its catalogue beside the cluster's directory.
        #[command(flatten)]
        cluster: ClusterTarget,
        /// The keystore of the actors' keys, made as needed (default: DIR.keys, or the cluster
        /// directory's beside it, CLUSTER_DIR.keys).
        #[arg(long)]
        keystore: Option<PathBuf>,
        /// The keystore key of the operator that registers actors (and, for a new ledger, its
        /// genesis operator).
        #[arg(long, default_value = "operator")]
        operator: String,
        /// The files' format, instead of recognising it from their content.
        #[arg(long)]
        format: Option<caduceus_interop::detect::Format>,
        /// Time spent measuring the ed25519 verify_batch reference before and after the import
        /// (0 skips it; 3 s when recording).
        #[arg(long, default_value_t = 0.0)]
        reference_seconds: f64,
        /// Record the run's throughput and reference as one file in this folder (as `loadgen
        /// run --record`; label `import`).
        #[arg(long)]
        record: Option<PathBuf>,
        /// The files.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Keep actors' signing keys: `keys new NAME`, `keys list`, `keys export NAME`.
    Keys {
        /// The keystore directory (default: `$CADUCEUS_KEYSTORE`, else `~/.caduceus/keys`).
        #[arg(long, global = true)]
        keystore: Option<PathBuf>,
        #[command(subcommand)]
        action: keys::KeysAction,
    },
}

/// Where a cluster's coordinator takes clients.
#[derive(clap::Args)]
struct ClusterTarget {
    /// The coordinator's client address (printed by `caduceus cluster up`).
    #[arg(long)]
    target: Option<std::net::SocketAddr>,
    /// The cluster CA certificate (default: the cluster directory's).
    #[arg(long)]
    ca: Option<PathBuf>,
    /// A cluster directory made by `caduceus cluster init`: gives the target and the CA.
    #[arg(long)]
    cluster_dir: Option<PathBuf>,
}

impl ClusterTarget {
    fn resolve(&self) -> Result<(std::net::SocketAddr, PathBuf)> {
        caduceus_shards::local::resolve_target(self.target, self.ca.as_deref(), self.cluster_dir.as_deref())
    }
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
            demo::run(dir, &load, reference_seconds)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Verify { dir, cluster_dir, checkpoint } => match (dir, cluster_dir) {
            (Some(dir), _) => audit::verify(&dir, &checkpoint),
            (None, Some(cluster)) => audit::verify_cluster(&cluster, &checkpoint),
            (None, None) => unreachable!("clap requires one"),
        },
        Command::Query { dir, cluster, reader, keystore, question } => {
            let key = reader.map(|name| keys::load(&keys::keystore(keystore.as_deref())?, &name)).transpose()?;
            let reader: Box<dyn reader::Reader> = match &dir {
                Some(dir) => Box::new(reader::Embedded::open(dir, key)?),
                None => {
                    let (target, ca) = cluster.resolve()?;
                    let clock = caduceus_shards::local::cluster_clock(cluster.cluster_dir.as_deref())?;
                    Box::new(reader::Cluster::connect(target, &ca, key.map(|key| (key, clock)))?)
                }
            };
            query::answer(reader.as_ref(), question, dir.as_deref())?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Export { dir, cluster, reader, keystore, out, what } => {
            let keystore = keys::keystore(keystore.as_deref())?;
            let key = keys::load(&keystore, &reader)?;
            match &dir {
                Some(dir) => {
                    let embedded = reader::Embedded::open(dir, Some(key.clone()))?;
                    export::run(&embedded, what, &out, Some((&embedded, dir, &keystore, &key)))?;
                }
                None => {
                    let (target, ca) = cluster.resolve()?;
                    let clock = caduceus_shards::local::cluster_clock(cluster.cluster_dir.as_deref())?;
                    let reader = reader::Cluster::connect(target, &ca, Some((key, clock)))?;
                    export::run(&reader, what, &out, None)?;
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Shard { config } => {
            let config = NodeConfig::load(&config)?;
            runtime()?.block_on(caduceus_shards::shard_server::serve(config, stop_signal()))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Coordinator { config } => {
            let config = NodeConfig::load(&config)?;
            runtime()?.block_on(caduceus_shards::coordinator::serve(config, stop_signal()))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Cluster { action } => cluster::command(action),
        Command::Submit { cluster, load } => {
            let (target, ca) = cluster.resolve()?;
            runtime()?.block_on(cluster::submit(target, &ca, &load))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::CheckProof { proof, checkpoint } => audit::check_proof(&proof, &checkpoint),
        Command::Register { cluster, key, keystore, role } => {
            let (target, ca) = cluster.resolve()?;
            let actor =
                caduceus_engine::signature::actor_key(&keys::load(&keys::keystore(keystore.as_deref())?, &key)?);
            let clock = caduceus_shards::local::cluster_clock(cluster.cluster_dir.as_deref())?;
            runtime()?.block_on(cluster::register(target, &ca, actor, role, clock))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Import { dir, cluster, keystore, operator, format, reference_seconds, record, files } => {
            let place = dir.as_ref().or(cluster.cluster_dir.as_ref()).map(|d| d.with_extension("keys"));
            let keystore = match keystore.or(place) {
                Some(keystore) => keystore,
                None => keys::keystore(None)?,
            };
            let (mut target, operator) = match &dir {
                Some(dir) => {
                    let key = keys::load_or_new(&keystore, &operator)?;
                    (target::Target::embedded(dir, &key, &operator)?, key)
                }
                None => {
                    let (address, ca) = cluster.resolve()?;
                    let key = match caduceus_shards::local::operator_key(&ca)? {
                        Some(key) => key,
                        None => keys::load(&keystore, &operator)?,
                    };
                    let clock = caduceus_shards::local::cluster_clock(cluster.cluster_dir.as_deref())?;
                    let beside = match &cluster.cluster_dir {
                        Some(dir) => dir.clone(),
                        None => ca.parent().map_or_else(|| PathBuf::from("."), Path::to_owned),
                    };
                    (target::Target::cluster(address, &ca, &beside, &key, clock)?, key)
                }
            };
            let seconds = if record.is_some() && reference_seconds <= 0.0 { 3.0 } else { reference_seconds };
            let reference = || {
                (seconds > 0.0).then(|| {
                    caduceus_engine::signature::measure_verify_batch_rate(
                        2,
                        std::time::Duration::from_secs_f64(seconds),
                    )
                })
            };
            let before = reference();
            let started = std::time::Instant::now();
            let tally = import::run(&mut target, &keystore, &operator, format, &files)?;
            drop(target);
            let elapsed = started.elapsed();
            let after = reference();
            import::print_totals(&tally);
            import::speed(&tally, elapsed, before.zip(after), record.as_deref())?;
            Ok(if tally.files_rejected == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE })
        }
        Command::Keys { keystore, action } => {
            keys::command(&keys::keystore(keystore.as_deref())?, action)?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn now_ms() -> u64 {
    caduceus_engine::ledger::system_clock()()
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
