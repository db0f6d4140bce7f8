//! `caduceus cluster init/up/status/down`, the node commands and `caduceus submit`: running a
//! cluster on this machine and sending it the seeded workload.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Result;
use caduceus_engine::model::{hex, ActorKey};
use caduceus_loadgen::args::LoadArgs;
use caduceus_shards::client::Client;
use caduceus_shards::wire::Outcome;
use caduceus_shards::{config, local};
use caduceus_workload::Workload;
use clap::Subcommand;

use crate::parse;

/// Exit code of `cluster status` when a node is not healthy.
const UNHEALTHY: u8 = 3;

#[derive(Subcommand)]
pub enum ClusterAction {
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
        /// A genesis operator's actor key (hex); repeat for several. Default: a new key from
        /// the system's random source, written to `DIR.operator.key` beside the cluster
        /// directory (`caduceus submit` and `loadgen run` sign registrations with it).
        #[arg(long, value_parser = parse::actor)]
        operator: Vec<ActorKey>,
        /// How many operators must agree to add another operator (at most the number of
        /// `--operator`s; for example 2 of 3).
        #[arg(long, default_value_t = 1)]
        operator_quorum: u32,
        /// Commit every round at this time (ms since the epoch) instead of the clock, for
        /// reproducible runs.
        #[arg(long)]
        fixed_time: Option<u64>,
        /// Where to write the CA's private key, apart from the nodes' files (default:
        /// `DIR.ca.key` beside the cluster directory).
        #[arg(long)]
        ca_key: Option<PathBuf>,
        /// A DNS name or IP address the nodes are reached at, written into their
        /// certificates (repeatable), for a deployment across machines.
        #[arg(long = "host")]
        hosts: Vec<String>,
    },
    /// Issue a certificate for one more node (a shard server replaced or moved to another
    /// machine) with the CA key that `init` wrote apart; it is checked against `DIR/ca.pem`.
    AddNode {
        #[arg(long)]
        dir: PathBuf,
        /// The node's name: its files are `NAME.pem` and `NAME.key` in DIR.
        #[arg(long)]
        name: String,
        /// `shard` (a shard server) or `coordinator`.
        #[arg(long, value_parser = ["shard", "coordinator"])]
        role: String,
        /// A DNS name or IP address the node is reached at (repeatable).
        #[arg(long = "host")]
        hosts: Vec<String>,
        /// The CA's private key (default: `DIR.ca.key` beside the cluster directory).
        #[arg(long)]
        ca_key: Option<PathBuf>,
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

pub fn command(action: ClusterAction) -> Result<ExitCode> {
    match action {
        ClusterAction::Init {
            dir,
            shards,
            servers,
            base_port,
            operator,
            operator_quorum,
            fixed_time,
            ca_key,
            hosts,
        } => {
            let operators = if operator.is_empty() {
                // A real key, from the system's random source, kept apart from the nodes.
                let path = local::default_operator_key(&dir);
                let key = local::new_key_file(&path)?;
                println!("genesis operator {key}: its private key is in {} (mode 0600)", path.display());
                println!("  `caduceus submit` and `loadgen run` with --cluster-dir sign registrations with it");
                vec![key]
            } else {
                operator
            };
            let servers = servers.unwrap_or(shards);
            if operator_quorum == 0 || operator_quorum as usize > operators.len() {
                anyhow::bail!("--operator-quorum must be between 1 and the number of operators ({})", operators.len());
            }
            let options = local::InitOptions {
                dir,
                shards,
                servers,
                base_port,
                operators,
                operator_quorum,
                fixed_time,
                ca_key,
                hosts,
            };
            local::init(&options)?;
            Ok(ExitCode::SUCCESS)
        }
        ClusterAction::AddNode { dir, name, role, hosts, ca_key } => {
            let role = if role == "coordinator" { config::Role::Coordinator } else { config::Role::Shard };
            local::add_node(&local::AddNode { dir, name, role, hosts, ca_key })?;
            Ok(ExitCode::SUCCESS)
        }
        ClusterAction::Up { dir } => {
            crate::runtime()?.block_on(local::up(&dir))?;
            Ok(ExitCode::SUCCESS)
        }
        ClusterAction::Status { dir } => {
            let healthy = crate::runtime()?.block_on(local::status(&dir))?;
            Ok(if healthy { ExitCode::SUCCESS } else { ExitCode::from(UNHEALTHY) })
        }
        ClusterAction::Down { dir } => {
            local::down(&dir)?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Registers a keystore key's actor in a role, signed by the cluster's operator key (the one
/// `cluster init` generated beside the cluster directory); prints the result.
pub async fn register(
    target: std::net::SocketAddr,
    ca: &Path,
    actor: caduceus_engine::ActorKey,
    role: caduceus_engine::Role,
    clock: caduceus_engine::ledger::Clock,
) -> Result<()> {
    let Some(operator) = local::operator_key(ca)? else {
        anyhow::bail!(
            "this cluster has no generated operator key beside its directory: register with the key of its operator"
        );
    };
    let transaction = caduceus_engine::Transaction {
        nonce: u128::from(crate::now_ms()) << 64 | u128::from(std::process::id()),
        signer: caduceus_engine::signature::actor_key(&operator),
        timestamp: clock(),
        operation: caduceus_engine::Operation::RegisterActor { actor, role, prefixes: Vec::new() },
        key: None,
    };
    let client = Client::connect(target, ca).await?;
    let outcome = client.submit(vec![caduceus_engine::signature::sign(transaction, &operator)?]).await?;
    client.close().await;
    match outcome.first() {
        Some(Outcome::Done(result)) if result.is_committed() => {
            println!("registered {actor} as {role}");
            Ok(())
        }
        other => anyhow::bail!("the registration was not committed: {other:?}"),
    }
}

/// Submits the seeded workload (setup, then load) to a cluster and prints results by reason.
pub async fn submit(target: std::net::SocketAddr, ca: &Path, load: &LoadArgs) -> Result<()> {
    let client = Client::connect(target, ca).await?;
    let mut workload = Workload::new(load.workload(), load.start_ms());
    if let Some(key) = local::operator_key(ca)? {
        workload = workload.with_operator(key);
    }
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
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
