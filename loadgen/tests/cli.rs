//! `loadgen` end to end on the embedded engine: generate, run (with and without a state
//! cache), and the loss check, which must pass on the ledger and fail on a changed ack log.

use std::path::Path;
use std::process::{Command, Output};

fn loadgen(dir: &Path, args: &[&str]) -> Output {
    let output = Command::new(env!("CARGO_BIN_EXE_loadgen")).current_dir(dir).args(args).output().expect("run loadgen");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!stderr.contains("panicked"), "loadgen {args:?} panicked: {stderr}");
    output
}

fn succeeds(dir: &Path, args: &[&str]) -> String {
    let output = loadgen(dir, args);
    let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success(), "loadgen {args:?} failed: {text}");
    text
}

fn sorted_lines(path: &Path) -> Vec<String> {
    let mut lines: Vec<String> = std::fs::read_to_string(path).unwrap().lines().map(str::to_owned).collect();
    lines.sort();
    lines
}

#[test]
fn a_run_with_or_without_a_state_cache_acknowledges_the_same_results_and_the_loss_check_holds() {
    let work = tempfile::tempdir().unwrap();
    let dir = work.path();
    succeeds(dir, &["generate", "--out", "w.cw", "--transactions", "6000", "--seed", "3", "--batch", "500"]);
    let whole = ["run", "--embedded", "--dir", "whole", "--workload", "w.cw", "--no-reference"];
    succeeds(dir, &[&whole[..], &["--ack-log", "whole.acks", "--json", "whole.json"]].concat());
    let cached = ["run", "--embedded", "--dir", "cached", "--workload", "w.cw", "--no-reference"];
    let report = succeeds(dir, &[&cached[..], &["--state-cache", "50", "--ack-log", "cached.acks"]].concat());
    assert!(report.contains("state cache of 50 entries per shard"), "{report}");

    let json: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.join("whole.json")).unwrap()).unwrap();
    assert_eq!(json["acknowledged"], 6000);
    assert_eq!(json["committed"].as_u64().unwrap() + json["rejected"].as_u64().unwrap(), 6000);
    assert!(json["rejected"].as_u64().unwrap() > 0, "the mix holds transactions refused for business reasons");
    assert!(json["ratio_to_reference"].is_null(), "no reference was measured");
    for field in ["p50", "p90", "p99", "p999", "max"] {
        assert!(json["latency_us"][field].as_u64().is_some(), "latency {field}");
    }

    // The same ids with the same results, whatever the engine kept in memory.
    let acks = sorted_lines(&dir.join("whole.acks"));
    assert_eq!(acks.len(), 6000);
    assert_eq!(acks, sorted_lines(&dir.join("cached.acks")));

    for ledger in ["whole", "cached"] {
        let text = succeeds(dir, &["verify", "--embedded", "--dir", ledger, "--ack-log", "cached.acks"]);
        assert!(text.contains("6000 present with the same result, 0 missing, 0 different"), "{text}");
    }
    // One result changed and one id that was never submitted: the check fails and says so.
    let mut changed = acks.clone();
    let committed = changed.iter().position(|line| line.ends_with(" committed")).expect("a committed transaction");
    changed[committed] = changed[committed].replace(" committed", " duplicate-claim");
    changed.push(format!("{:032x} committed", 0xdead_u128));
    std::fs::write(dir.join("changed.acks"), changed.join("\n") + "\n").unwrap();
    let output = loadgen(dir, &["verify", "--embedded", "--dir", "whole", "--ack-log", "changed.acks"]);
    let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(!output.status.success(), "{text}");
    assert!(text.contains("1 missing, 1 different"), "{text}");
}

#[test]
fn a_state_cache_is_refused_for_a_cluster_target() {
    let work = tempfile::tempdir().unwrap();
    let output = loadgen(
        work.path(),
        &["run", "--target", "127.0.0.1:9", "--ca", "none.pem", "--transactions", "10", "--state-cache", "5"],
    );
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("--state-cache sets up the embedded engine only"));
}

#[test]
fn the_same_seed_and_start_give_the_same_workload_byte_for_byte() {
    let work = tempfile::tempdir().unwrap();
    let dir = work.path();
    let generate = |out: &str, seed: &str, recency: &str| {
        let args = ["generate", "--out", out, "--transactions", "3000", "--seed", seed, "--start", "1800000000000"];
        succeeds(dir, &[&args[..], &["--recency", recency]].concat());
        std::fs::read(dir.join(out)).unwrap()
    };
    let first = generate("a.cw", "7", "1");
    assert_eq!(first, generate("b.cw", "7", "1"), "same seed, same start");
    assert_ne!(first, generate("c.cw", "8", "1"), "another seed");
    assert_ne!(first, generate("d.cw", "7", "4"), "reads skewed toward recent history");
    let refused = loadgen(dir, &["generate", "--out", "e.cw", "--transactions", "10", "--recency", "0"]);
    assert!(!refused.status.success(), "a recency exponent of 0 is refused");
}

/// As a crash tester would: `kill -9` of an embedded run while it writes its ack log, then
/// `loadgen verify`. Every complete line is checked and a torn last line is dropped and named.
#[test]
fn verify_after_a_killed_run_checks_every_complete_line_and_drops_a_torn_tail() {
    let work = tempfile::tempdir().unwrap();
    let dir = work.path();
    succeeds(dir, &["generate", "--out", "w.cw", "--transactions", "200000", "--seed", "5"]);
    let mut run = Command::new(env!("CARGO_BIN_EXE_loadgen"))
        .current_dir(dir)
        .args(["run", "--embedded", "--dir", "l", "--workload", "w.cw", "--no-reference", "--ack-log", "a.acks"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Killed once the ack log holds something, so the kill lands mid-run (bounded: 5 minutes).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(300);
    while std::fs::metadata(dir.join("a.acks")).map_or(0, |m| m.len()) == 0 {
        assert!(run.try_wait().unwrap().is_none(), "the run ended before writing any ack");
        assert!(std::time::Instant::now() < deadline, "no ack within 5 minutes");
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    run.kill().unwrap();
    run.wait().unwrap();

    // Whatever the kill left, plus a torn line as a write cut short leaves it.
    let mut log = std::fs::read(dir.join("a.acks")).unwrap();
    let complete = log.iter().filter(|b| **b == b'\n').count();
    log.truncate(log.iter().rposition(|b| *b == b'\n').map_or(0, |p| p + 1));
    log.extend_from_slice(b"0000000000000000000000000000abcd comm");
    std::fs::write(dir.join("a.acks"), &log).unwrap();
    let text = succeeds(dir, &["verify", "--embedded", "--dir", "l", "--ack-log", "a.acks"]);
    assert!(text.contains(&format!("checked {complete} acknowledged transactions: {complete} present")), "{text}");
    assert!(text.contains("dropped a torn last line"), "{text}");

    // A damaged line in the middle is still an error, with its line number.
    log.splice(0..0, b"not an ack\n".iter().copied());
    std::fs::write(dir.join("b.acks"), &log).unwrap();
    let output = loadgen(dir, &["verify", "--embedded", "--dir", "l", "--ack-log", "b.acks"]);
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("b.acks:1: not an ack-log line"));
}

/// A recorded run lands in the headline table, and `--check` notices a table edited by hand.
#[test]
fn a_recorded_run_feeds_the_headline_table() {
    let work = tempfile::tempdir().unwrap();
    let dir = work.path();
    let readme = "# R\n\n<!-- headline: generated by `loadgen headline` from docs/benchmarks/; do not edit by hand -->\n<!-- end of headline -->\n";
    std::fs::write(dir.join("README.md"), readme).unwrap();
    let args = ["run", "--embedded", "--transactions", "3000", "--no-reference", "--json", "r.json"];
    let text = succeeds(dir, &[&args[..], &["--record", "runs", "--label", "closed-loop"]].concat());
    assert!(text.contains("recorded     runs/"), "{text}");
    let check = loadgen(dir, &["headline", "--benchmarks", "runs", "--check"]);
    assert!(!check.status.success(), "the README's table is still empty");
    succeeds(dir, &["headline", "--benchmarks", "runs"]);
    let report: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.join("r.json")).unwrap()).unwrap();
    let written = std::fs::read_to_string(dir.join("README.md")).unwrap();
    let throughput = report["throughput_tps"].as_f64().unwrap();
    let shown = written.lines().find(|l| l.starts_with("| Closed loop, embedded |")).expect("a closed-loop row");
    let figure: f64 = shown.split(" | ").nth(1).unwrap().split(' ').next().unwrap().replace(',', "").parse().unwrap();
    assert_eq!(figure, throughput.round(), "{shown}");
    assert!(written.contains("| Open loop, p99 commit latency | not measured yet |"), "{written}");
    succeeds(dir, &["headline", "--benchmarks", "runs", "--check"]);
    std::fs::write(dir.join("README.md"), written.replace(&shown[..30], "| Closed loop, embedded | 999")).unwrap();
    assert!(!loadgen(dir, &["headline", "--benchmarks", "runs", "--check"]).status.success());
}

/// The repository's own README shows exactly what its recorded runs give.
#[test]
fn the_readme_headline_is_generated_from_the_recorded_runs() {
    // Read when the test runs, not when it was built: a shared target folder may hold a test
    // binary built from another checkout.
    let package = std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").to_owned());
    let root = Path::new(&package).parent().unwrap().to_owned();
    succeeds(&root, &["headline", "--check"]);
}

/// A workload file signed more than a day ago would be refused transaction by transaction
/// (`expired`): the run refuses it up front and says what to do.
#[test]
fn a_workload_signed_more_than_a_day_ago_is_refused_before_the_run() {
    let work = tempfile::tempdir().unwrap();
    let dir = work.path();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64;
    let two_days_ago = (now - 2 * 86_400_000).to_string();
    succeeds(dir, &["generate", "--out", "old.cw", "--transactions", "100", "--start", &two_days_ago]);
    let output = loadgen(dir, &["run", "--embedded", "--dir", "l", "--workload", "old.cw", "--no-reference"]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("was signed 2days") && stderr.contains("generate it again"), "{stderr}");
}
