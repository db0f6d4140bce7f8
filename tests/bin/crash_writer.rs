//! Opens a ledger in a directory and commits workload batches until killed,
//! printing `ack <id hex> <result code>` for every acknowledged transaction.
//! The crash test kills it with SIGKILL and checks that every acknowledged
//! transaction survived.

use std::io::Write;

use caduceus_engine::Ledger;
use caduceus_workload::{Workload, WorkloadConfig};

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let dir = args.next().expect("usage: crash-writer DIR SEED");
    let seed: u64 = args.next().expect("usage: crash-writer DIR SEED").parse()?;
    let config = WorkloadConfig { seed: 7, patients: 300, providers: 30, pharmacies: 20, ..WorkloadConfig::default() };
    let mut workload = Workload::new(config, 1_800_000_000_000);
    // A fixed commit time, the workload's own: every run signs and commits the same transactions.
    let ledger = Ledger::builder()
        .clock(std::sync::Arc::new(|| 1_800_000_000_000))
        .open(std::path::Path::new(&dir), &workload.ledger_config(3))?;
    let mut out = std::io::stdout().lock();
    let setup = workload.signed_setup();
    // The workload is the same on every run: resubmitting is idempotent.
    for batch in setup.into_iter().chain((0..400).map(|_| workload.signed_batch(64 + (seed as usize % 64)))) {
        let ids: Vec<u128> = batch.iter().map(|t| t.id()).collect();
        let results = ledger.submit(batch)?;
        for (id, result) in ids.iter().zip(results) {
            writeln!(out, "ack {id:032x} {}", result.code())?;
        }
        out.flush()?;
    }
    writeln!(out, "done")?;
    Ok(())
}
