//! The options of a load run that the demo (`caduceus demo`, `caduceus submit`) and `loadgen`
//! share, and the workload they describe.

use caduceus_workload::{parse_mix, Mix, WorkloadConfig};

/// The options of a load run that the demo and `loadgen` share.
#[derive(clap::Args, Clone, Debug)]
pub struct LoadArgs {
    /// Transactions in the measured workload, signed before the clock starts [default: 300000].
    #[arg(long)]
    pub transactions: Option<usize>,
    #[arg(long, default_value_t = 4)]
    pub shards: u32,
    /// Transactions per submitted batch.
    #[arg(long, default_value_t = 2_048)]
    pub batch: usize,
    /// Batches in flight at once (closed loop).
    #[arg(long, default_value_t = 4)]
    pub in_flight: usize,
    #[arg(long, default_value_t = LoadArgs::default_seed())]
    pub seed: u64,
    /// Patients in the population.
    #[arg(long, default_value_t = 20_000)]
    pub patients: usize,
    /// Providers in the population.
    #[arg(long, default_value_t = 400)]
    pub providers: usize,
    /// Activity skew exponent (1: uniform).
    #[arg(long, default_value_t = 2.0)]
    pub skew: f64,
    /// How strongly reads of existing records, consents and units favour recent ones: the
    /// exponent of a skew toward the newest (1: uniform over all of history).
    #[arg(long, default_value_t = 1.0)]
    pub recency: f64,
    /// Milliseconds since the Unix epoch that the workload's dates (consent windows, service
    /// dates, expiry) count from (default: now). The same seed and start give the same
    /// workload, byte for byte.
    #[arg(long)]
    pub start: Option<u64>,
    /// Shares of the mix, in percent: records and accesses, consent changes, claims, supply chain.
    #[arg(long, default_value = "50,5,30,15", value_parser = parse_mix)]
    pub mix: Mix,
    /// Share of transactions that span shards (claim payments between parties on different
    /// shards), 0 to 1. Without it, parties are chosen regardless of shard.
    #[arg(long)]
    pub cross_shard: Option<f64>,
}

impl LoadArgs {
    /// The population's seed when none is given.
    pub const fn default_seed() -> u64 {
        1
    }

    pub fn workload(&self) -> WorkloadConfig {
        WorkloadConfig {
            seed: self.seed,
            patients: self.patients,
            providers: self.providers,
            skew: self.skew,
            recency: self.recency,
            mix: self.mix.0,
            shards: self.shards,
            cross_shard: self.cross_shard,
            ..WorkloadConfig::default()
        }
    }
    /// The start the workload's dates count from: `--start`, or now.
    pub fn start_ms(&self) -> u64 {
        self.start.unwrap_or_else(|| caduceus_engine::ledger::system_clock()())
    }
    /// The number of measured transactions.
    pub fn transactions(&self) -> usize {
        self.transactions.unwrap_or(300_000)
    }
    /// The batch size within the engine's limit.
    pub fn batch_size(&self) -> usize {
        self.batch.clamp(1, caduceus_engine::limits::BATCH_TRANSACTIONS_MAX)
    }
}
