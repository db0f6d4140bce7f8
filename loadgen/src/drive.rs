//! The two load shapes, and what they record.
//!
//! - Closed loop: a fixed number of batches in flight; a new batch is sent
//!   when the oldest is acknowledged. Measures peak throughput.
//! - Open loop: batches are sent on a fixed schedule (the offered rate),
//!   whether or not earlier ones are done. Latency is measured from each
//!   batch's intended send time, so a stall that delays sending is counted
//!   in full instead of hidden (coordinated omission).

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use std::collections::VecDeque;

use caduceus_engine::ledger::ClientId;
use caduceus_engine::model::TxId;
use caduceus_engine::{Ledger, SignedTransaction, TxResult};
use crossbeam_channel::bounded;
use hdrhistogram::Histogram;
use indicatif::ProgressBar;

use crate::sink::{Pending, Sink};
use crate::source::Source;

/// Batches sent but not yet acknowledged that the open loop tracks; past this the sender waits
/// (the ledger's own queues are smaller, so this is never the limit in practice).
const OPEN_LOOP_PENDING_MAX: usize = 4_096;

/// The client ids the load and the hostile client submit as.
const HONEST_CLIENT: ClientId = 0;
const HOSTILE_CLIENT: ClientId = 1;

/// Everything a run records.
pub struct Tally {
    /// Commit latency in microseconds, one entry per transaction.
    pub latency: Histogram<u64>,
    /// Acknowledged transactions by result (`committed` or a rejection reason).
    pub results: BTreeMap<&'static str, u64>,
    /// Acknowledged transactions in each second of the run.
    pub timeline: Vec<u64>,
    pub acknowledged: u64,
    /// Sent transactions that span more than one shard.
    pub cross_shard: u64,
    /// From the first send to the last acknowledgement.
    pub elapsed: Duration,
    started: Instant,
    ack_log: Option<BufWriter<File>>,
    progress: ProgressBar,
    deadline: Option<Instant>,
}

impl Tally {
    pub fn new(ack_log: Option<File>, progress: ProgressBar, duration: Option<Duration>) -> Self {
        let started = Instant::now();
        Self {
            latency: Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("histogram bounds"),
            results: BTreeMap::new(),
            timeline: Vec::new(),
            acknowledged: 0,
            cross_shard: 0,
            elapsed: Duration::ZERO,
            started,
            ack_log: ack_log.map(|f| BufWriter::with_capacity(1 << 20, f)),
            progress,
            deadline: duration.map(|d| started + d),
        }
    }

    /// Records a batch sent (or meant to be sent) at `intended`; `None` results were not
    /// acknowledged (a cluster shard they needed was unreachable).
    fn settle(&mut self, intended: Instant, ids: &[TxId], answered: &[Option<TxResult>]) -> Result<()> {
        let now = Instant::now();
        let unavailable = answered.iter().filter(|r| r.is_none()).count() as u64;
        if unavailable > 0 {
            *self.results.entry("unavailable (not acknowledged)").or_default() += unavailable;
        }
        let (ids, results): (Vec<TxId>, Vec<TxResult>) =
            ids.iter().zip(answered).filter_map(|(id, r)| r.map(|r| (*id, r))).unzip();
        let count = results.len() as u64;
        self.latency.saturating_record_n(now.saturating_duration_since(intended).as_micros().max(1) as u64, count);
        for result in &results {
            *self.results.entry(result.as_str()).or_default() += 1;
        }
        let second = now.duration_since(self.started).as_secs() as usize;
        if self.timeline.len() <= second {
            self.timeline.resize(second + 1, 0);
        }
        self.timeline[second] += count;
        self.acknowledged += count;
        self.elapsed = now.duration_since(self.started);
        if let Some(log) = &mut self.ack_log {
            for (id, result) in ids.iter().zip(results) {
                writeln!(log, "{id:032x} {result}").context("write the ack log")?;
            }
        }
        match self.deadline {
            Some(deadline) => self.progress.set_position(now.min(deadline).duration_since(self.started).as_secs()),
            None => self.progress.inc(count),
        }
        Ok(())
    }

    /// Flushes and fsyncs the ack log.
    pub fn finish(&mut self) -> Result<()> {
        self.progress.finish_and_clear();
        if let Some(log) = self.ack_log.take() {
            log.into_inner().map_err(|e| e.into_error())?.sync_all().context("sync the ack log")?;
        }
        Ok(())
    }
}

/// What the hostile client sent and got back.
#[derive(Default)]
pub struct Attack {
    pub batches: u64,
    pub results: BTreeMap<&'static str, u64>,
}

/// A hostile client: keeps `in_flight` of its batches pending, cycling through them, until
/// `stop` is set.
pub fn attack(
    ledger: &Ledger,
    batches: &[Vec<SignedTransaction>],
    in_flight: usize,
    stop: &AtomicBool,
) -> Result<Attack> {
    let mut attack = Attack::default();
    let endless = batches.iter().cycle().take_while(|_| !stop.load(Ordering::Relaxed)).cloned();
    caduceus_loadgen::embedded::closed_loop(ledger, HOSTILE_CLIENT, endless, in_flight, |_, _, results| {
        attack.batches += 1;
        for result in results {
            *attack.results.entry(result.as_str()).or_default() += 1;
        }
    })?;
    Ok(attack)
}

/// Keeps `in_flight` batches pending until the source is used up or the duration is over.
pub fn closed_loop(sink: &Sink, source: &mut Source, in_flight: usize, tally: &mut Tally) -> Result<()> {
    let mut pending: VecDeque<(Instant, Vec<TxId>, Pending)> = VecDeque::new();
    loop {
        if tally.deadline.is_some_and(|d| Instant::now() >= d) {
            break;
        }
        let Some(batch) = source.next_batch()? else { break };
        if pending.len() >= in_flight.max(1) {
            let (sent, ids, answer) = pending.pop_front().expect("a pending batch");
            tally.settle(sent, &ids, &answer.wait()?)?;
        }
        tally.cross_shard += batch.cross_shard as u64;
        let ids = batch.transactions.iter().map(|t| t.id()).collect();
        let sent = Instant::now();
        source.persist(&batch)?;
        pending.push_back((sent, ids, sink.submit(HONEST_CLIENT, batch.transactions)?));
    }
    for (sent, ids, answer) in pending {
        tally.settle(sent, &ids, &answer.wait()?)?;
    }
    Ok(())
}

/// Sends at `rate` transactions per second, on schedule, until the source is used up or the
/// duration is over; waits for everything sent.
pub fn open_loop(sink: &Sink, source: &mut Source, rate: f64, tally: &mut Tally) -> Result<()> {
    let (sender, receiver) = bounded::<(Instant, Vec<TxId>, Pending)>(OPEN_LOOP_PENDING_MAX);
    let (started, deadline) = (tally.started, tally.deadline);
    let mut cross_shard = 0;
    std::thread::scope(|scope| -> Result<()> {
        let tally = &mut *tally;
        let collector = scope.spawn(move || -> Result<()> {
            for (intended, ids, pending) in receiver {
                let results = pending.wait()?;
                tally.settle(intended, &ids, &results)?;
            }
            Ok(())
        });
        let mut sent = 0u64;
        let sending = (|| -> Result<()> {
            loop {
                let intended = started + Duration::from_secs_f64(sent as f64 / rate);
                if deadline.is_some_and(|d| intended >= d) {
                    break;
                }
                let Some(batch) = source.next_batch()? else { break };
                let now = Instant::now();
                if intended > now {
                    std::thread::sleep(intended - now);
                }
                sent += batch.transactions.len() as u64;
                cross_shard += batch.cross_shard as u64;
                let ids = batch.transactions.iter().map(|t| t.id()).collect();
                source.persist(&batch)?;
                let pending = sink.submit(HONEST_CLIENT, batch.transactions)?;
                if sender.send((intended, ids, pending)).is_err() {
                    break; // the collector failed; its error is reported below
                }
            }
            Ok(())
        })();
        drop(sender);
        let collected = collector.join().expect("the collector does not panic");
        sending.and(collected)
    })?;
    tally.cross_shard += cross_shard;
    Ok(())
}
