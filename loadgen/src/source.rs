//! Where a run's transactions come from: generated in memory before the
//! clock starts, or read from a pre-signed workload file (loaded up front
//! when it is small, streamed when it is large, so a run over a history of
//! millions of transactions keeps its memory bounded).

use std::path::Path;

use anyhow::{bail, Result};
use std::sync::Arc;

use caduceus_engine::model::ActorKey;
use caduceus_engine::payload::{PayloadStore, Sealed};
use caduceus_engine::routing::participants;
use caduceus_engine::SignedTransaction;
use caduceus_workload::file::WorkloadReader;
use caduceus_workload::Workload;
use indicatif::ProgressBar;

/// Workloads up to this many transactions are read into memory before the run; larger ones are
/// streamed, so a long run's memory is the engine's, not the workload's.
const PRELOAD_TRANSACTIONS_MAX: u64 = 500_000;

/// A batch, how many of its transactions span shards, and the payloads its record
/// registrations and amendments carry (stored before the batch is submitted).
pub struct Batch {
    pub transactions: Vec<SignedTransaction>,
    pub cross_shard: usize,
    pub payloads: Vec<Sealed>,
}

impl Batch {
    fn new(transactions: Vec<SignedTransaction>, shards: u32) -> Self {
        let cross_shard = transactions.iter().filter(|t| participants(&t.transaction, shards).len() > 1).count();
        Self { transactions, cross_shard, payloads: Vec::new() }
    }
}

enum Load {
    Memory(std::vec::IntoIter<Batch>),
    Stream { reader: Box<WorkloadReader>, batch: usize, remaining: u64 },
}

/// The setup and load of one run.
pub struct Source {
    pub operator: ActorKey,
    pub setup: [Vec<SignedTransaction>; 2],
    /// Load transactions this source will yield at most.
    pub transactions: u64,
    /// `memory`, `file` or `file (streamed)`.
    pub kind: &'static str,
    pub description: serde_json::Value,
    load: Load,
    shards: u32,
    /// Where the batches' payloads go, if the run has a payload store.
    payloads: Option<Arc<PayloadStore>>,
}

impl Source {
    /// Generates and signs `count` transactions (plus setup) before the run.
    /// With `payloads`, each record version's payload is sealed as it is generated and stored
    /// (`persist`) before its batch is submitted.
    pub fn generate(
        mut workload: Workload,
        count: u64,
        batch: usize,
        description: serde_json::Value,
        payloads: Option<Arc<PayloadStore>>,
    ) -> Self {
        if let Some(store) = &payloads {
            workload = workload.with_payloads(store.clone());
        }
        let setup = workload.signed_setup();
        let shards = workload.shards();
        let progress = ProgressBar::new(count).with_style(crate::report::bar_style("signing"));
        let mut batches = Vec::new();
        let mut remaining = count;
        while remaining > 0 {
            let size = remaining.min(batch as u64) as usize;
            let mut next = Batch::new(workload.signed_batch(size), shards);
            next.payloads = workload.take_sealed();
            batches.push(next);
            progress.inc(size as u64);
            remaining -= size as u64;
        }
        progress.finish_and_clear();
        Self {
            operator: workload.operator(),
            setup,
            transactions: count,
            kind: "memory",
            description,
            load: Load::Memory(batches.into_iter()),
            shards,
            payloads,
        }
    }

    /// Stores a batch's payloads in the payload store (one durable write), before the batch's
    /// registrations are submitted: what the ledger registers is then there to be read.
    pub fn persist(&self, batch: &Batch) -> Result<()> {
        match &self.payloads {
            Some(store) if !batch.payloads.is_empty() => Ok(store.store(&batch.payloads)?),
            _ => Ok(()),
        }
    }

    /// Replays a workload file from load transaction `skip`, at most `limit` transactions.
    pub fn file(path: &Path, shards: u32, batch: usize, skip: u64, limit: Option<u64>) -> Result<Self> {
        let mut reader = WorkloadReader::open(path)?;
        let header = reader.header().clone();
        if header.shards != shards && !header.description["cross_shard"].is_null() {
            eprintln!(
                "note: the workload's cross-shard share was set for {} shards; on {shards} it will differ",
                header.shards
            );
        }
        let setup = reader.setup()?;
        if reader.skip(skip)? < skip {
            bail!("the workload has only {} load transactions; cannot skip {skip}", header.transactions);
        }
        let available = header.transactions - skip;
        let transactions = limit.map_or(available, |limit| limit.min(available));
        let mut source = Self {
            operator: header.operator,
            setup,
            transactions,
            kind: "file (streamed)",
            description: header.description,
            load: Load::Stream { reader: Box::new(reader), batch, remaining: transactions },
            shards,
            payloads: None,
        };
        if transactions <= PRELOAD_TRANSACTIONS_MAX {
            let progress = ProgressBar::new(transactions).with_style(crate::report::bar_style("loading"));
            let mut batches = Vec::new();
            while let Some(batch) = source.next_batch()? {
                progress.inc(batch.transactions.len() as u64);
                batches.push(batch);
            }
            progress.finish_and_clear();
            source.load = Load::Memory(batches.into_iter());
            source.kind = "file";
        }
        Ok(source)
    }

    /// The next batch, or `None` when the workload is used up.
    pub fn next_batch(&mut self) -> Result<Option<Batch>> {
        match &mut self.load {
            Load::Memory(batches) => Ok(batches.next()),
            Load::Stream { reader, batch, remaining } => {
                if *remaining == 0 {
                    return Ok(None);
                }
                let transactions = reader.batch((*batch as u64).min(*remaining) as usize)?;
                if transactions.is_empty() {
                    return Ok(None);
                }
                *remaining -= transactions.len() as u64;
                Ok(Some(Batch::new(transactions, self.shards)))
            }
        }
    }
}
