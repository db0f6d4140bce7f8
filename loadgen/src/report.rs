//! What a run prints and writes: the table, the JSON report and the SVG plot.

use std::path::Path;

use anyhow::Result;
use caduceus_engine::ledger::StorageReads;
use hdrhistogram::Histogram;
use plotters::prelude::*;
use serde_json::{json, Value};

use caduceus_loadgen::record::{cores, machine};

use crate::drive::Tally;

pub use caduceus_loadgen::bar_style;

/// The latency percentiles every report gives, in microseconds.
pub fn percentiles(latency: &Histogram<u64>) -> Value {
    let at = |q: f64| if latency.is_empty() { 0 } else { latency.value_at_quantile(q) };
    json!({ "p50": at(0.5), "p90": at(0.9), "p99": at(0.99), "p999": at(0.999), "max": latency.max() })
}

/// Peak resident memory of this process, in bytes (Linux; `None` elsewhere).
pub fn peak_rss() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse::<u64>().ok().map(|kib| kib * 1024)
}

/// CPU time this process has used so far (user and system), in seconds.
pub fn cpu_seconds() -> f64 {
    // SAFETY: getrusage fills the struct it is given and nothing else.
    let usage = unsafe {
        let mut usage = std::mem::zeroed::<libc::rusage>();
        libc::getrusage(libc::RUSAGE_SELF, &mut usage);
        usage
    };
    let seconds = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    seconds(usage.ru_utime) + seconds(usage.ru_stime)
}

/// The raw two-thread `verify_batch` rate (signatures per second), measured before and after
/// the load.
#[derive(Clone, Copy)]
pub struct Reference {
    pub before: f64,
    pub after: f64,
}

impl Reference {
    /// What throughput is compared with: the mean of the two measurements.
    pub fn rate(&self) -> f64 {
        (self.before + self.after) / 2.0
    }
}

/// The run's figures, for the table and the JSON report.
pub struct Figures<'a> {
    pub tally: &'a Tally,
    pub reference: Option<Reference>,
    pub open_seconds: f64,
    /// CPU time the process used during the load (engine and load generator).
    pub cpu_seconds: f64,
    /// With a state cache: what it read from storage during the load.
    pub storage_reads: Option<StorageReads>,
}

impl Figures<'_> {
    pub fn throughput(&self) -> f64 {
        self.tally.acknowledged as f64 / self.tally.elapsed.as_secs_f64().max(1e-9)
    }

    fn committed(&self) -> u64 {
        self.tally.results.get("committed").copied().unwrap_or(0)
    }

    /// CPU microseconds per acknowledged transaction, over all threads.
    fn cpu_us_per_transaction(&self) -> f64 {
        1e6 * self.cpu_seconds / self.tally.acknowledged.max(1) as f64
    }

    fn cross_shard_share(&self) -> f64 {
        self.tally.cross_shard as f64 / self.tally.acknowledged.max(1) as f64
    }

    pub fn print(&self, shape: &str, place: &str) {
        let tally = self.tally;
        let throughput = self.throughput();
        println!("load         {shape}");
        println!(
            "throughput   {throughput:.0} tx/s ({} transactions acknowledged in {:.2} s)",
            tally.acknowledged,
            tally.elapsed.as_secs_f64()
        );
        match self.reference {
            Some(reference) => {
                println!(
                    "reference    {:.0} signatures/s (raw ed25519 verify_batch, 2 threads, this run: {:.0} before the load, {:.0} after)",
                    reference.rate(),
                    reference.before,
                    reference.after
                );
                println!("ratio        {:.2} of the reference", throughput / reference.rate());
            }
            None => println!("reference    not measured (--no-reference)"),
        }
        println!("committed    {}", self.committed());
        println!("rejected     {}", tally.acknowledged - self.committed());
        let mut rejected: Vec<(&&str, &u64)> = tally.results.iter().filter(|(r, _)| **r != "committed").collect();
        rejected.sort_by_key(|(_, n)| std::cmp::Reverse(**n));
        for (reason, count) in rejected {
            println!("  {reason:<30} {count}");
        }
        if tally.acknowledged > 0 {
            println!(
                "cpu          {:.1} us per transaction ({:.0}% of {} cores busy)",
                self.cpu_us_per_transaction(),
                100.0 * self.cpu_seconds / tally.elapsed.as_secs_f64().max(1e-9) / cores() as f64,
                cores()
            );
        }
        if let Some(reads) = self.storage_reads {
            let per = |n: u64| n as f64 / tally.acknowledged.max(1) as f64;
            println!(
                "state reads  {} entries from storage, {} of them stored ({:.2} and {:.2} per transaction)",
                reads.keys,
                reads.found,
                per(reads.keys),
                per(reads.found)
            );
        }
        println!("cross-shard  {:.1}% of transactions", 100.0 * self.cross_shard_share());
        let p = percentiles(&tally.latency);
        let ms = |field: &str| p[field].as_u64().unwrap_or(0) as f64 / 1000.0;
        println!(
            "latency ms   p50 {:.1}  p90 {:.1}  p99 {:.1}  p99.9 {:.1}  max {:.1}",
            ms("p50"),
            ms("p90"),
            ms("p99"),
            ms("p999"),
            ms("max")
        );
        if let Some(rss) = peak_rss() {
            println!("peak RSS     {:.0} MiB (this process: engine and load generator)", rss as f64 / 1048576.0);
        }
        println!("ledger open  {:.2} s", self.open_seconds);
        println!("data         {place}");
    }

    /// The JSON report: the figures, the configuration and the machine.
    pub fn json(&self, config: Value) -> Value {
        let tally = self.tally;
        let throughput = self.throughput();
        let rejected: serde_json::Map<String, Value> = tally
            .results
            .iter()
            .filter(|(r, _)| **r != "committed")
            .map(|(r, n)| ((*r).to_owned(), json!(n)))
            .collect();
        json!({
            "throughput_tps": throughput,
            "reference_verify_batch_tps": self.reference.map(|r| r.rate()),
            "reference_verify_batch_before_tps": self.reference.map(|r| r.before),
            "reference_verify_batch_after_tps": self.reference.map(|r| r.after),
            "ratio_to_reference": self.reference.map(|r| throughput / r.rate()),
            "committed": self.committed(),
            "rejected": tally.acknowledged - self.committed(),
            "rejected_by_reason": rejected,
            "acknowledged": tally.acknowledged,
            "elapsed_seconds": tally.elapsed.as_secs_f64(),
            "cross_shard_share": self.cross_shard_share(),
            "cpu_us_per_transaction": self.cpu_us_per_transaction(),
            "state_cache_storage_reads": self.storage_reads.map(|r| json!({ "keys": r.keys, "found": r.found })),
            "latency_us": percentiles(&tally.latency),
            "throughput_per_second": tally.timeline,
            "peak_rss_bytes": peak_rss(),
            "ledger_open_seconds": self.open_seconds,
            "config": config,
            "machine": machine(),
        })
    }
}

/// Draws throughput over time and the latency distribution (by percentile, in nines) to an SVG.
pub fn plot(path: &Path, tally: &Tally, title: &str) -> Result<()> {
    let root = SVGBackend::new(path, (1200, 480)).into_drawing_area();
    root.fill(&WHITE).map_err(plot_error)?;
    let root = root.titled(title, ("sans-serif", 18)).map_err(plot_error)?;
    let (left, right) = root.split_horizontally(600);

    let peak = tally.timeline.iter().copied().max().unwrap_or(0).max(1) as f64;
    let seconds = tally.timeline.len().max(1) as f64;
    let mut chart = ChartBuilder::on(&left)
        .caption("Acknowledged transactions per second", ("sans-serif", 15))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(64)
        .build_cartesian_2d(0f64..seconds, 0f64..peak * 1.1)
        .map_err(plot_error)?;
    chart.configure_mesh().x_desc("seconds since start").y_desc("tx/s").draw().map_err(plot_error)?;
    // Each point is the second that ended at x; the last second is usually partial.
    let points = tally.timeline.iter().enumerate().map(|(s, n)| (s as f64 + 1.0, *n as f64));
    chart.draw_series(LineSeries::new(points, BLUE.stroke_width(2))).map_err(plot_error)?;

    // Latency by percentile on a "nines" axis: x = -log10(1 - q), so 1 is p90, 2 is p99, 3 is p99.9.
    let latency = &tally.latency;
    let nines_max = 5.0;
    let curve: Vec<(f64, f64)> = (0..=500)
        .map(|i| {
            let nines = nines_max * i as f64 / 500.0;
            let q = 1.0 - 10f64.powf(-nines);
            (nines, if latency.is_empty() { 0.0 } else { latency.value_at_quantile(q) as f64 / 1000.0 })
        })
        .collect();
    let top = (latency.max() as f64 / 1000.0).max(1.0) * 1.1;
    let mut chart = ChartBuilder::on(&right)
        .caption("Commit latency by percentile", ("sans-serif", 15))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(64)
        .build_cartesian_2d(0f64..nines_max, 0f64..top)
        .map_err(plot_error)?;
    chart
        .configure_mesh()
        .x_desc("percentile")
        .y_desc("ms")
        .x_label_formatter(&|nines| {
            let percent = format!("{:.4}", 100.0 - 100.0 * 10f64.powf(-nines));
            percent.trim_end_matches('0').trim_end_matches('.').to_owned()
        })
        .draw()
        .map_err(plot_error)?;
    chart.draw_series(LineSeries::new(curve, RED.stroke_width(2))).map_err(plot_error)?;
    root.present().map_err(plot_error)
}

fn plot_error(error: impl std::fmt::Display) -> anyhow::Error {
    anyhow::anyhow!("draw the plot: {error}")
}
