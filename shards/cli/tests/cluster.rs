//! A real multi-process cluster on loopback: the `caduceus` binary as shard
//! servers and coordinator, on free ports, each test bounded in time.
//!
//! - the same batches give the same results, state hash and checkpoint as the
//!   embedded engine (`cluster up`, `status` and `down` included);
//! - a shard server killed with SIGKILL during load comes back by itself and
//!   nothing acknowledged is lost; funds stay conserved;
//! - a coordinator killed after the votes (nothing decided) or after logging
//!   its decisions (none sent) settles every prepared transaction on restart;
//! - garbage, oversized and unknown frames get error frames while a
//!   well-behaved client keeps being served; replays get their first result;
//! - a node certificate from another CA is refused.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use caduceus_engine::ledger::Clock;
use caduceus_engine::routing::participants;
use caduceus_engine::storage::{MemoryStorage, Storage};
use caduceus_engine::{Ledger, SignedTransaction, TxResult};
use caduceus_shards::client::Client;
use caduceus_shards::config::NodeConfig;
use caduceus_shards::rpc::call;
use caduceus_shards::tls;
use caduceus_shards::wire::{self, Answer, Outcome, Query, Request, Response};
use caduceus_workload::{Workload, WorkloadConfig};

const FIXED_TIME: u64 = 1_790_000_000_000;

fn caduceus() -> Command {
    Command::new(env!("CARGO_BIN_EXE_caduceus"))
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}

fn workload(seed: u64) -> Workload {
    let config = WorkloadConfig { seed, patients: 400, providers: 40, pharmacies: 30, ..WorkloadConfig::default() };
    Workload::new(config, FIXED_TIME)
}

/// Every batch of a small workload: the setup phases, then `load` transactions in batches of 200.
fn batches(workload: &mut Workload, load: usize) -> Vec<Vec<SignedTransaction>> {
    let mut batches: Vec<Vec<SignedTransaction>> = workload
        .signed_setup()
        .into_iter()
        .flat_map(|phase| phase.chunks(500).map(<[_]>::to_vec).collect::<Vec<_>>())
        .collect();
    let mut left = load;
    while left > 0 {
        let batch = workload.signed_batch(left.min(200));
        left -= batch.len();
        batches.push(batch);
    }
    batches
}

/// A seeded workload's batches (`load` transactions after setup) and a cluster of `shards`
/// on `servers` shard servers whose genesis operator is the workload's, not started yet.
fn prepared(seed: u64, load: usize, shards: u32, servers: u32) -> (Vec<Vec<SignedTransaction>>, Cluster) {
    let mut work = workload(seed);
    let operator = work.operator().to_string();
    let batches = batches(&mut work, load);
    (batches, Cluster::init(shards, servers, &operator))
}

/// A cluster directory made by `caduceus cluster init`, with its node processes.
struct Cluster {
    _dir: tempfile::TempDir,
    path: PathBuf,
    nodes: Vec<(String, Option<Child>)>,
    /// Shards, shard servers and the genesis operator, to make the cluster again.
    shape: (u32, u32, String),
}

/// How often a cluster is made again when a port `init` chose was taken before its node bound it.
const LAUNCH_ATTEMPTS: usize = 5;

impl Cluster {
    fn init(shards: u32, servers: u32, operator: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cluster");
        // No operator given: `init` generates one.
        let operator_args: &[&str] = if operator.is_empty() { &[] } else { &["--operator", operator] };
        let output = caduceus()
            .args(["cluster", "init", "--dir", path.to_str().unwrap(), "--base-port", "0"])
            .args(["--shards", &shards.to_string(), "--servers", &servers.to_string()])
            .args(operator_args)
            .args(["--fixed-time", &FIXED_TIME.to_string()])
            .output()
            .unwrap();
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
        let mut nodes: Vec<(String, Option<Child>)> = (0..servers).map(|s| (format!("shard-{s}"), None)).collect();
        nodes.push(("coordinator".into(), None));
        Cluster { _dir: dir, path, nodes, shape: (shards, servers, operator.to_owned()) }
    }

    /// Starts every node (those named in `failpoints` with that failpoint) and waits until each
    /// has bound its port. `init` picks free ports by binding and releasing them, so another
    /// test may take one before the node binds it: then the cluster is made again with other
    /// ports (a fresh, empty directory: nothing had started) and started again.
    fn launch(&mut self, failpoints: &[(&str, &str)]) {
        for _ in 0..LAUNCH_ATTEMPTS {
            let names: Vec<String> = self.nodes.iter().map(|(n, _)| n.clone()).collect();
            for name in &names {
                let failpoint = failpoints.iter().find(|(n, _)| n == name).map(|(_, f)| *f);
                self.start(name, failpoint);
            }
            if names.iter().all(|name| self.listening(name)) {
                return;
            }
            let (shards, servers, operator) = self.shape.clone();
            *self = Cluster::init(shards, servers, &operator);
        }
        panic!("no free ports for a cluster after {LAUNCH_ATTEMPTS} attempts");
    }

    /// Waits until the node says it is listening (true), or exits because its port was
    /// taken (false); any other exit fails the test with the node's own words.
    fn listening(&mut self, name: &str) -> bool {
        let log = self.path.join(format!("{name}.err"));
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let said = std::fs::read_to_string(&log).unwrap_or_default();
            if said.contains("listening on") {
                return true;
            }
            if self.exited(name) {
                let said = std::fs::read_to_string(&log).unwrap_or_default();
                assert!(said.contains("Address already in use"), "{name} exited while starting: {said}");
                return false;
            }
            assert!(Instant::now() < deadline, "{name} did not bind its port in 60 s");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn config(&self, name: &str) -> NodeConfig {
        NodeConfig::load(&self.path.join(format!("{name}.toml"))).unwrap()
    }

    fn address(&self) -> SocketAddr {
        self.config("coordinator").listen
    }

    fn ca(&self) -> PathBuf {
        self.path.join("ca.pem")
    }

    fn start(&mut self, name: &str, failpoint: Option<&str>) {
        let index = self.nodes.iter().position(|(n, _)| n == name).unwrap();
        let role = if name == "coordinator" { "coordinator" } else { "shard" };
        let mut command = caduceus();
        command.args([role, "--config", self.path.join(format!("{name}.toml")).to_str().unwrap()]);
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.path.join(format!("{name}.err")));
        command.stdin(Stdio::null()).stdout(Stdio::null()).stderr(log.unwrap());
        if let Some(failpoint) = failpoint {
            command.env("CADUCEUS_FAILPOINT", failpoint);
        }
        self.nodes[index].1 = Some(command.spawn().unwrap());
    }

    fn start_all(&mut self) {
        self.launch(&[]);
    }

    fn pid(&self, name: &str) -> u32 {
        self.nodes.iter().find(|(n, _)| n == name).and_then(|(_, c)| c.as_ref()).unwrap().id()
    }

    /// Whether the node's process has exited (a failpoint, or a kill).
    fn exited(&mut self, name: &str) -> bool {
        let index = self.nodes.iter().position(|(n, _)| n == name).unwrap();
        self.nodes[index].1.as_mut().is_some_and(|child| child.try_wait().unwrap().is_some())
    }

    /// Waits for a process killed from elsewhere.
    fn reap(&mut self, name: &str) {
        let index = self.nodes.iter().position(|(n, _)| n == name).unwrap();
        let mut child = self.nodes[index].1.take().unwrap();
        child.wait().unwrap();
    }

    /// Waits until the process exits by itself (a failpoint), at most `limit`.
    fn wait_exit(&mut self, name: &str, limit: Duration) {
        let index = self.nodes.iter().position(|(n, _)| n == name).unwrap();
        let child = self.nodes[index].1.as_mut().unwrap();
        let deadline = Instant::now() + limit;
        while child.try_wait().unwrap().is_none() {
            assert!(Instant::now() < deadline, "{name} did not stop at its failpoint");
            std::thread::sleep(Duration::from_millis(20));
        }
        self.nodes[index].1 = None;
    }
}

impl Cluster {
    /// Stops every node (killed: whatever a node acknowledged is durable already).
    fn stop_all(&mut self) {
        for (_, child) in &mut self.nodes {
            if let Some(mut child) = child.take() {
                let _ = child.kill();
                child.wait().unwrap();
            }
        }
    }
}

/// `caduceus verify --cluster-dir` on a stopped cluster: whether it found the stores intact, and what it said.
fn verify_cluster(path: &Path, anchors: &[String]) -> (bool, String) {
    let mut command = caduceus();
    command.args(["verify", "--cluster-dir", path.to_str().unwrap()]);
    for anchor in anchors {
        command.args(["--checkpoint", anchor]);
    }
    let output = command.output().unwrap();
    let said = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    match output.status.code() {
        Some(0) => (true, said),
        Some(2) => (false, said),
        other => panic!("verify failed to run ({other:?}): {said}"),
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for (_, child) in &mut self.nodes {
            if let Some(child) = child {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

/// Connects and waits until the coordinator reports every shard healthy (at most 30 s); the
/// client reads as the auditor of the workload with this seed (registered by its setup).
async fn healthy_client(address: SocketAddr, ca: &Path, seed: u64) -> Client {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(client) = Client::connect(address, ca).await {
            match client.health().await {
                Ok((_, detail)) if detail.starts_with("healthy") => {
                    let auditor = caduceus_workload::auditor_key_of(seed);
                    return client.auditing_as(auditor, Arc::new(|| FIXED_TIME));
                }
                _ => client.close().await,
            }
        }
        assert!(Instant::now() < deadline, "the cluster did not become healthy in 30 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn is_cross(transaction: &SignedTransaction, shards: u32) -> bool {
    participants(&transaction.transaction, shards).len() > 1
}

/// Asks the cluster for every acknowledged transaction: each must be recorded with its result.
async fn assert_acknowledged_present(client: &Client, acknowledged: &[(SignedTransaction, TxResult)]) {
    for chunk in acknowledged.chunks(4_096) {
        let found = client.lookup(chunk.iter().map(|(t, _)| t.id()).collect()).await.unwrap();
        for ((transaction, result), found) in chunk.iter().zip(found) {
            assert_eq!(
                found,
                Some(*result),
                "acknowledged transaction {:032x} is missing or changed",
                transaction.id()
            );
        }
    }
}

async fn assert_conserved(client: &Client) {
    let Answer::Totals(_, balances, funded) = client.query(Query::Totals).await.unwrap() else { panic!("totals") };
    assert_eq!(balances, funded, "funds are conserved across the cluster");
}

#[test]
fn a_cluster_gives_the_embedded_engine_s_results_state_and_checkpoint() {
    let mut work = workload(11);
    let operator = work.operator().to_string();
    let mut batches = batches(&mut work, 6_000);
    let shards = 4;
    // One signer's nonce used twice, for reads of two patients' records on different shards:
    // the second is a conflict in either deployment (the cluster once checked it only on its
    // own shard, and recorded it there), and the first, sent again, keeps its first result.
    let patients = work.patients();
    let first_patient = patients[0];
    let shard_of = |patient| caduceus_engine::routing::shard_of_actor(patient, shards);
    let other_patient = *patients.iter().find(|p| shard_of(*p) != shard_of(&first_patient)).unwrap();
    let read = |patient| caduceus_engine::Transaction {
        nonce: 0x5a3e,
        signer: work.regulator(),
        timestamp: FIXED_TIME,
        operation: caduceus_engine::Operation::AccessRecord {
            record: 1,
            patient,
            purpose: caduceus_engine::Purpose::PublicHealth,
        },
        key: None,
    };
    let reads = work.sign(vec![read(first_patient), read(other_patient)]);
    batches.extend([vec![reads[0].clone()], vec![reads[1].clone()], vec![reads[0].clone()]]);

    let clock: Clock = Arc::new(|| FIXED_TIME);
    let ledger = Ledger::builder()
        .clock(clock)
        .open_on(Arc::new(MemoryStorage::default()), &work.ledger_config(shards))
        .unwrap();
    let embedded: Vec<Vec<TxResult>> = batches.iter().map(|b| ledger.submit(b.clone()).unwrap()).collect();
    let last_three = &embedded[embedded.len() - 3..];
    assert!(last_three[0][0].is_recorded(), "{:?}", last_three[0]);
    assert_eq!(last_three[1], vec![TxResult::Rejected(caduceus_engine::Reason::Conflict)]);
    assert_eq!(last_three[2], last_three[0]);

    let cluster = Cluster::init(shards, 2, &operator);
    // `cluster up` prints the client address on its first line once every node is healthy.
    let mut up = caduceus()
        .args(["cluster", "up", "--dir", cluster.path.to_str().unwrap()])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(up.stdout.take().unwrap()).read_line(&mut first).unwrap();
    assert_eq!(first.trim(), format!("client address: {}", cluster.address()));

    let status = caduceus().args(["cluster", "status", "--dir", cluster.path.to_str().unwrap()]).output().unwrap();
    let status_text = String::from_utf8_lossy(&status.stdout).to_string();
    assert!(status.status.success(), "{status_text}");
    assert_eq!(status_text.lines().filter(|l| l.contains("127.0.0.1")).count(), 3, "{status_text}");

    let (erased, plaintext) = runtime().block_on(async {
        let client = healthy_client(cluster.address(), &cluster.ca(), 11).await;
        let mut cross = 0;
        for (batch, expected) in batches.iter().zip(&embedded) {
            cross += batch.iter().filter(|t| is_cross(t, shards)).count();
            let outcomes = client.submit(batch.clone()).await.unwrap();
            let results: Vec<TxResult> = outcomes
                .iter()
                .map(|o| match o {
                    Outcome::Done(result) => *result,
                    Outcome::Unavailable => panic!("every shard is up"),
                })
                .collect();
            assert_eq!(&results, expected);
        }
        assert!(cross > 100, "the workload crosses shards ({cross} transactions)");
        let Answer::Totals(hash, balances, funded) = client.query(Query::Totals).await.unwrap() else { panic!() };
        assert_eq!(hash, ledger.state_hash().unwrap(), "same state");
        assert_eq!((balances, funded), ledger.fund_totals());
        let checkpoint = client.checkpoint().await.unwrap().unwrap();
        assert_eq!(checkpoint, ledger.checkpoint().unwrap(), "same blocks, same checkpoint");
        // A proof from the cluster checks against the cluster's checkpoint that holds its block.
        let (load, results) = (&batches[batches.len() - 4], &embedded[batches.len() - 4]);
        let last = load.iter().zip(results).rfind(|(_, r)| r.is_recorded()).unwrap().0.id();
        let proof = client.prove(last).await.unwrap().unwrap();
        let holding = client.checkpoint_at(proof.checkpoint_round).await.unwrap().unwrap();
        assert_eq!(Some(holding.clone()), ledger.checkpoint_at(proof.checkpoint_round).unwrap());
        proof.verify(&holding.hash()).unwrap();
        client.close().await;
        hostile_readers_are_refused(&cluster, &work, &batches).await;
        payloads_are_read_through_permitted_accesses(&cluster, &work).await
    });

    let down = caduceus().args(["cluster", "down", "--dir", cluster.path.to_str().unwrap()]).output().unwrap();
    assert!(down.status.success());
    let deadline = Instant::now() + Duration::from_secs(20);
    while up.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "`cluster up` returns once its nodes are down");
        std::thread::sleep(Duration::from_millis(50));
    }

    // The erased record's data key and ciphertext left the coordinator's payload store, and no
    // file beside it holds a run of its plaintext.
    let (coordinator_store, _) = caduceus_shards::local::stores(&cluster.path).unwrap();
    let payload_dir = coordinator_store.with_extension("payloads");
    {
        let store = caduceus_engine::storage::RocksStorage::open_for_payloads(&payload_dir).unwrap();
        for family in [b'K', b'O'] {
            assert!(store.get(&[&[family][..], &erased].concat()).unwrap().is_none(), "{} left", family as char);
        }
    }
    let mut files = Vec::new();
    every_file(&payload_dir, &mut files);
    assert!(!files.is_empty());
    for run in plaintext.chunks_exact(24) {
        assert!(files.iter().all(|bytes| !bytes.windows(run.len()).any(|w| w == run)), "plaintext in a file");
    }

    // The stopped cluster's stores verify, against each other and against the checkpoint the
    // embedded ledger published for the same batches.
    let anchor = caduceus_engine::model::hex(&ledger.checkpoint().unwrap().hash());
    let (intact, said) = verify_cluster(&cluster.path, std::slice::from_ref(&anchor));
    assert!(intact, "{said}");
    assert!(said.contains(&format!("extends checkpoint {anchor}")), "{said}");
    // A changed state entry in one shard's store is found there; a block removed from the end
    // of another's chain is found through the coordinator's store (its decisions need the
    // block's votes; its checkpoints name the block).
    let (coordinator_store, shard_stores) = caduceus_shards::local::stores(&cluster.path).unwrap();
    assert!(coordinator_store.exists());
    // One shard indexing a transaction id another shard indexes: found across the stores.
    let copied = {
        let from = caduceus_engine::storage::RocksStorage::open(&shard_stores[0]).unwrap();
        let mut entry = None;
        from.scan(&[caduceus_engine::layout::TRANSACTION], &mut |key, value| {
            entry = Some((key.to_vec(), value.to_vec()));
            false
        })
        .unwrap();
        entry.expect("shard 0 indexes transactions")
    };
    let to = caduceus_engine::storage::RocksStorage::open(&shard_stores[3]).unwrap();
    to.write(&[(copied.0.clone(), Some(copied.1))]).unwrap();
    drop(to);
    let (intact, said) = verify_cluster(&cluster.path, &[]);
    assert!(!intact && said.contains("indexed by shard 0's store too"), "{said}");
    let to = caduceus_engine::storage::RocksStorage::open(&shard_stores[3]).unwrap();
    to.write(&[(copied.0, None)]).unwrap();
    drop(to);
    {
        let store = caduceus_engine::storage::RocksStorage::open(&shard_stores[2]).unwrap();
        let mut entry = None;
        store
            .scan(&caduceus_engine::layout::state_prefix(2), &mut |key, value| {
                entry = Some((key.to_vec(), value.to_vec()));
                false
            })
            .unwrap();
        let (key, mut value) = entry.expect("shard 2 holds state");
        let last = value.len() - 1;
        value[last] ^= 1;
        store.write(&[(key, Some(value))]).unwrap();
    }
    let (intact, said) = verify_cluster(&cluster.path, &[]);
    assert!(!intact && said.contains("shard 2 store: state entry shard 2"), "{said}");
    {
        let store = caduceus_engine::storage::RocksStorage::open(&shard_stores[1]).unwrap();
        let mut last_height = 0;
        store
            .scan(&[caduceus_engine::layout::HEADER], &mut |key, _| {
                last_height = u64::from_be_bytes(key[5..13].try_into().unwrap());
                true
            })
            .unwrap();
        let cut = [caduceus_engine::layout::header(1, last_height), caduceus_engine::layout::body(1, last_height)];
        store.write(&cut.map(|key| (key, None))).unwrap();
    }
    let (intact, said) = verify_cluster(&cluster.path, &[]);
    assert!(!intact && said.contains("coordinator store: "), "{said}");
}

/// The code of the error a request gets, or `None` if it was answered.
async fn refusal(client: &Client, request: &Request) -> Option<u16> {
    match client.request(request).await.unwrap() {
        Response::Error { code, .. } => Some(code),
        _ => None,
    }
}

fn every_file(dir: &Path, out: &mut Vec<Vec<u8>>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            every_file(&path, out);
        } else {
            out.push(std::fs::read(&path).unwrap());
        }
    }
}

/// The cluster's payload store: a provider stores a payload and registers its hash; the patient
/// reads it through its own access; a replayed access, an unconsented provider, another's
/// access and an unsigned request are refused; the patient's erasure shreds it, and the
/// report shows it all. Returns the erased payload's content hash and its plaintext.
async fn payloads_are_read_through_permitted_accesses(cluster: &Cluster, work: &Workload) -> ([u8; 32], Vec<u8>) {
    use caduceus_engine::model::Purpose;
    use caduceus_engine::signature::{actor_key, sign, signing_key, SigningKey};
    use caduceus_engine::{Operation, Role, Transaction};
    use caduceus_shards::client::ClientError;
    use caduceus_shards::wire::error_code;
    const RECORD: u128 = 0x7e57;
    let payload = br#"{"resourceType":"Observation","status":"final","code":{"coding":[{"system":"http://loinc.org","code":"2339-0"}]},"valueQuantity":{"value":6.3,"unit":"mmol/L"}}"#.to_vec();
    let clock: Clock = Arc::new(|| FIXED_TIME);
    let connect = |key: Option<SigningKey>| {
        let clock = clock.clone();
        async move {
            let client = Client::connect(cluster.address(), &cluster.ca()).await.unwrap();
            match key {
                Some(key) => client.reading_as(key, clock),
                None => client,
            }
        }
    };
    let at = |key: &SigningKey, nonce: u128, operation| {
        sign(Transaction { nonce, signer: actor_key(key), timestamp: FIXED_TIME, operation, key: None }, key).unwrap()
    };
    let refused = |result: Result<Vec<u8>, ClientError>, why: &str| match result {
        Err(ClientError::Refused { code, message }) => {
            assert_eq!(code, error_code::FORBIDDEN, "{message}");
            assert!(message.contains(why), "{message} does not say {why}");
        }
        other => panic!("not refused ({why}): {:?}", other.map(|p| p.len())),
    };
    // A new patient, with no consents.
    let patient_key = signing_key([0x51; 32]);
    let patient = actor_key(&patient_key);
    let anyone = connect(None).await;
    let registration = Transaction {
        nonce: 0x7e57_0001,
        signer: work.operator(),
        timestamp: FIXED_TIME,
        operation: Operation::RegisterActor { actor: patient, role: Role::Patient, prefixes: vec![] },
        key: None,
    };
    let done = |outcomes: Vec<Outcome>| matches!(outcomes[..], [Outcome::Done(TxResult::Committed)]);
    assert!(done(anyone.submit(work.sign(vec![registration])).await.unwrap()));
    let (provider, stranger) = (work.providers()[0], work.providers()[1]);
    let provider_key = work.signing_key(&provider).unwrap().clone();
    let stranger_key = work.signing_key(&stranger).unwrap().clone();

    let as_provider = connect(Some(provider_key.clone())).await;
    let hash = as_provider.put_payload(patient, RECORD, payload.clone()).await.unwrap();
    let as_patient = connect(Some(patient_key.clone())).await;
    let stored = as_patient.put_payload(patient, RECORD, payload.clone()).await;
    assert!(matches!(stored, Err(ClientError::Refused { code: error_code::FORBIDDEN, .. })), "a patient stores none");
    let register =
        Operation::RegisterRecord { record: RECORD, patient, content_hash: hash, resource_type: "Observation".into() };
    assert!(done(anyone.submit(vec![at(&provider_key, 0x7e57_0002, register)]).await.unwrap()));

    let access = |key: &SigningKey, nonce: u128, purpose| {
        at(key, nonce, Operation::AccessRecord { record: RECORD, patient, purpose })
    };
    let own = access(&patient_key, 1, Purpose::PatientRequest);
    assert_eq!(as_patient.read_payload(own.clone()).await.unwrap(), payload, "the patient reads its own");
    refused(as_patient.read_payload(own).await, "submitted before");
    let as_stranger = connect(Some(stranger_key.clone())).await;
    refused(as_stranger.read_payload(access(&stranger_key, 2, Purpose::Treatment)).await, "consent-missing");
    refused(as_stranger.read_payload(access(&patient_key, 3, Purpose::PatientRequest)).await, "its reader signed");
    let unsigned = Request::ReadPayload(access(&patient_key, 4, Purpose::PatientRequest));
    assert_eq!(refusal(&anyone, &unsigned).await, Some(error_code::UNAUTHENTICATED));

    // Another provider stores nothing under a record it does not hold.
    let other_version = as_stranger.put_payload(patient, RECORD, b"{}".to_vec()).await.map(|h| h.to_vec());
    refused(other_version, "another custodian's");

    // An erasure signed by someone else is refused and destroys nothing; the patient's shreds.
    let forged = at(&stranger_key, 7, Operation::EraseRecord { record: RECORD, patient });
    assert!(!done(anyone.submit(vec![forged]).await.unwrap()));
    assert_eq!(as_patient.read_payload(access(&patient_key, 8, Purpose::PatientRequest)).await.unwrap(), payload);
    let erase = at(&patient_key, 5, Operation::EraseRecord { record: RECORD, patient });
    assert!(done(anyone.submit(vec![erase]).await.unwrap()));
    refused(as_patient.read_payload(access(&patient_key, 6, Purpose::PatientRequest)).await, "erased");
    let late = as_provider.put_payload(patient, RECORD, payload.clone()).await.map(|h| h.to_vec());
    refused(late, "erased");
    let Answer::AccessReport(report) = as_patient.query(Query::AccessReport(patient, None, 10)).await.unwrap() else {
        panic!("a report")
    };
    let seen: Vec<(bool, bool, bool)> =
        report.entries.iter().map(|e| (e.accessor == stranger, e.erasure, e.permitted())).collect();
    assert!(seen.contains(&(true, false, false)), "the stranger's refused read: {seen:?}");
    assert!(seen.contains(&(false, true, true)), "the erasure: {seen:?}");
    assert!(seen.contains(&(false, false, true)), "the patient's read: {seen:?}");
    for client in [anyone, as_provider, as_patient, as_stranger] {
        client.close().await;
    }
    (hash, payload)
}

/// Each kind of read, asked with another actor's key, with no key, replayed, and signed too
/// long ago, is refused; its rightful reader gets it; health and checkpoints are anyone's.
async fn hostile_readers_are_refused(cluster: &Cluster, work: &Workload, batches: &[Vec<SignedTransaction>]) {
    use caduceus_engine::Operation;
    use caduceus_shards::wire::{error_code, Credential};
    let key = |actor: &caduceus_engine::ActorKey| work.signing_key(actor).unwrap().clone();
    let transactions: Vec<&SignedTransaction> = batches.iter().flatten().collect();
    let claim = transactions
        .iter()
        .find_map(|t| match &t.transaction.operation {
            Operation::SubmitClaim { claim, patient, payer, .. } => {
                Some((*claim, *patient, *payer, t.transaction.signer))
            }
            _ => None,
        })
        .unwrap();
    let (claim, patient, payer, provider) = claim;
    let other = *work.patients().iter().find(|p| **p != patient).unwrap();
    let unit = transactions
        .iter()
        .find_map(|t| match &t.transaction.operation {
            Operation::CommissionUnit { unit, .. } => Some((unit.clone(), t.transaction.signer)),
            _ => None,
        })
        .unwrap();
    let access = transactions
        .iter()
        .find(|t| matches!(t.transaction.operation, Operation::AccessRecord { .. }) && t.transaction.signer != other)
        .unwrap();
    let (record, record_patient, custodian) = transactions
        .iter()
        .find_map(|t| match &t.transaction.operation {
            Operation::RegisterRecord { record, patient, .. } => Some((*record, *patient, t.transaction.signer)),
            _ => None,
        })
        .unwrap();
    let signed = |reader: &caduceus_engine::ActorKey, at: u64, nonce: u64, request: Request| {
        Credential::sign(&key(reader), at, nonce, request).unwrap()
    };
    let client = Client::connect(cluster.address(), &cluster.ca()).await.unwrap();
    // A study the provider leads, and the patient enrolled in it on its research consent.
    let step = |signer, nonce, operation| caduceus_engine::Transaction {
        nonce,
        signer,
        timestamp: FIXED_TIME,
        operation,
        key: None,
    };
    let register = step(provider, 0x57d1, Operation::RegisterStudy { protocol: [5; 32] });
    let study = work.sign(vec![register.clone()])[0].id();
    let purposes = caduceus_engine::model::Purposes::of(&[caduceus_engine::model::Purpose::Research]);
    let grant = Operation::GrantConsent {
        consent: 0x57d2,
        patient,
        grantee: provider,
        scope: vec![],
        purposes,
        valid_from: 0,
        valid_until: FIXED_TIME * 2,
    };
    let enrol = Operation::EnrollSubject { study, patient, consent: 0x57d2 };
    for transaction in [register, step(patient, 0x57d2, grant), step(provider, 0x57d3, enrol)] {
        let submitted = client.submit(work.sign(vec![transaction])).await.unwrap();
        assert!(matches!(submitted[0], Outcome::Done(TxResult::Committed)), "{submitted:?}");
    }
    // (the read, its rightful reader, another actor)
    let reads: Vec<(Request, caduceus_engine::ActorKey, caduceus_engine::ActorKey)> = vec![
        (Request::Query(Query::AccessReport(patient, None, 10)), patient, other),
        (Request::Query(Query::Claim(patient, claim)), provider, other),
        (Request::Query(Query::Claim(patient, claim)), payer, other),
        (Request::Query(Query::Account(payer)), payer, provider),
        (Request::Query(Query::Custody(unit.0.clone(), None, 10)), unit.1, other),
        (Request::Query(Query::Transaction(access.id())), access.transaction.signer, other),
        (Request::Prove(access.id()), access.transaction.signer, other),
        (Request::Query(Query::Record(record_patient, record)), custodian, payer),
        (Request::Query(Query::Record(record_patient, record)), record_patient, payer),
        (Request::Query(Query::Records(patient, None, 10)), patient, provider),
        (Request::Query(Query::Consents(patient, None, 10)), patient, provider),
        (Request::Query(Query::Enrolment(patient, study)), patient, other),
        (Request::Query(Query::Enrolment(patient, study)), provider, payer),
    ];
    let mut nonce = 0;
    for (read, rightful, intruder) in reads {
        nonce += 1;
        let allowed = signed(&rightful, FIXED_TIME, nonce, read.clone());
        assert_eq!(refusal(&client, &allowed).await, None, "{read:?} as its reader");
        assert_eq!(refusal(&client, &allowed).await, Some(error_code::UNAUTHENTICATED), "{read:?} replayed");
        let intruding = signed(&intruder, FIXED_TIME, nonce, read.clone());
        assert_eq!(refusal(&client, &intruding).await, Some(error_code::FORBIDDEN), "{read:?} as another actor");
        assert_eq!(refusal(&client, &read).await, Some(error_code::UNAUTHENTICATED), "{read:?} unsigned");
        let stale = signed(&rightful, FIXED_TIME - 6 * 60_000, nonce + 1_000, read.clone());
        assert_eq!(refusal(&client, &stale).await, Some(error_code::UNAUTHENTICATED), "{read:?} signed too long ago");
        // Signed by a key that is no registered actor's.
        let stranger = caduceus_engine::signature::signing_key([0x77; 32]);
        let unknown = Credential::sign(&stranger, FIXED_TIME, nonce, read.clone()).unwrap();
        assert_eq!(refusal(&client, &unknown).await, Some(error_code::UNAUTHENTICATED), "{read:?} by a stranger");
    }
    // An auditor reads anything, but only with the audit-read that logs it first; the patient
    // then sees the audit in its own report.
    let auditor = work.auditor();
    let report = Request::Query(Query::AccessReport(patient, None, 10));
    let unlogged = signed(&auditor, FIXED_TIME, 50_000, report.clone());
    assert_eq!(refusal(&client, &unlogged).await, Some(error_code::FORBIDDEN), "an auditor's read, unlogged");
    let logged = Credential::sign_audited(&key(&auditor), FIXED_TIME, 50_001, 0xa0d1, report.clone()).unwrap();
    assert_eq!(refusal(&client, &logged).await, None, "an auditor's read, logged");
    let reused = Credential::sign_audited(&key(&auditor), FIXED_TIME, 50_002, 0xa0d1, report.clone()).unwrap();
    assert_eq!(refusal(&client, &reused).await, Some(error_code::FORBIDDEN), "an audit-read used twice");
    let own = signed(&patient, FIXED_TIME, 50_003, report);
    let Response::Answer(Answer::AccessReport(page)) = client.request(&own).await.unwrap() else { panic!("report") };
    assert!(page.entries.iter().any(|e| e.audit && e.accessor == auditor), "{:?}", page.entries);

    // A distributor that never held the unit, whose refused receive is in the unit's trail, is
    // no holder: the trail is not its to read.
    let touched: Vec<caduceus_engine::ActorKey> = transactions
        .iter()
        .filter_map(|t| match &t.transaction.operation {
            Operation::ShipUnit { unit: u, to } if *u == unit.0 => Some([t.transaction.signer, *to]),
            Operation::ReceiveUnit { unit: u } | Operation::DispenseUnit { unit: u, .. } if *u == unit.0 => {
                Some([t.transaction.signer, t.transaction.signer])
            }
            _ => None,
        })
        .flatten()
        .collect();
    let outsider = work
        .directory()
        .into_iter()
        .find(|(actor, name)| name.starts_with("Distributor") && !touched.contains(actor))
        .map(|(actor, _)| actor)
        .unwrap();
    let receive = caduceus_engine::Transaction {
        nonce: 0x0dd,
        signer: outsider,
        timestamp: FIXED_TIME,
        operation: Operation::ReceiveUnit { unit: unit.0.clone() },
        key: None,
    };
    let submitted = client.submit(work.sign(vec![receive])).await.unwrap();
    assert!(
        matches!(submitted[0], Outcome::Done(result) if !result.is_committed() && result.is_recorded()),
        "{submitted:?}"
    );
    let trail = signed(&outsider, FIXED_TIME, 60_000, Request::Query(Query::Custody(unit.0.clone(), None, 10)));
    assert_eq!(refusal(&client, &trail).await, Some(error_code::FORBIDDEN), "a refused receive makes no holder");

    // A unit's status is any registered actor's; health and checkpoints anyone's.
    let status = signed(&other, FIXED_TIME, 99_999, Request::Query(Query::Unit(unit.0)));
    assert_eq!(refusal(&client, &status).await, None);
    let led = signed(&other, FIXED_TIME, 99_998, Request::Query(Query::Study(study)));
    let Response::Answer(Answer::Study(Some(led))) = client.request(&led).await.unwrap() else { panic!("study") };
    assert_eq!((led.investigator, led.protocol, led.closed_at), (provider, [5; 32], None));
    let enrolled = signed(&patient, FIXED_TIME, 99_997, Request::Query(Query::Enrolment(patient, study)));
    let Response::Answer(Answer::Enrolment(Some(enrolled))) = client.request(&enrolled).await.unwrap() else {
        panic!("enrolment")
    };
    assert_eq!((enrolled.consent, enrolled.withdrawn_at), (0x57d2, None));
    assert_eq!(refusal(&client, &Request::Checkpoint).await, None);
    assert_eq!(refusal(&client, &Request::Health).await, None);
    client.close().await;
}

#[test]
fn a_shard_server_killed_during_load_rejoins_and_nothing_acknowledged_is_lost() {
    let (batches, mut cluster) = prepared(12, 8_000, 4, 2);
    // shard-1 stops itself with a round in flight (durable, its reply not sent) about halfway
    // through the load; it is started again once a submission has found it gone.
    let stop_at = batches.len() / 2;
    cluster.launch(&[("shard-1", &format!("after-round:{stop_at}"))]);
    let runtime = runtime();
    let client = runtime.block_on(healthy_client(cluster.address(), &cluster.ca(), 12));

    let mut acknowledged = Vec::new();
    let mut unavailable = Vec::new();
    let mut found_gone = None;
    for (number, batch) in batches.iter().enumerate() {
        let outcomes = runtime.block_on(client.submit(batch.clone())).unwrap();
        for (transaction, outcome) in batch.iter().zip(outcomes) {
            match outcome {
                Outcome::Done(result) => acknowledged.push((transaction.clone(), result)),
                Outcome::Unavailable => unavailable.push(transaction.clone()),
            }
        }
        if found_gone.is_none() && cluster.exited("shard-1") {
            cluster.reap("shard-1");
            cluster.start("shard-1", None);
            found_gone = Some(number);
        }
    }
    let found_gone = found_gone.expect("shard-1 stopped at its failpoint during the load");
    assert!(!unavailable.is_empty(), "transactions that needed the killed server waited");
    runtime.block_on(async {
        let client = healthy_client(cluster.address(), &cluster.ca(), 12).await;
        assert_acknowledged_present(&client, &acknowledged).await;
        assert_conserved(&client).await;
        // What was not acknowledged can be sent again, and now gets a result.
        for chunk in unavailable.chunks(200) {
            let outcomes = client.submit(chunk.to_vec()).await.unwrap();
            assert!(outcomes.iter().all(|o| matches!(o, Outcome::Done(_))), "{outcomes:?}");
        }
        // Every transaction of the batches around the kill (those in flight when the server died
        // included) has a proof that checks against the checkpoint it names.
        for batch in &batches[found_gone.saturating_sub(1)..(found_gone + 2).min(batches.len())] {
            for transaction in batch {
                // A cross-shard transaction whose first participant never saw it is proved
                // from the block of another participant that recorded it.
                let proof = client.prove(transaction.id()).await.unwrap().expect("recorded, so provable");
                let checkpoint = client.checkpoint_at(proof.checkpoint_round).await.unwrap().unwrap();
                proof.verify(&checkpoint.hash()).unwrap();
            }
        }
        // A replay of acknowledged transactions gets the first results and applies nothing.
        let replay: Vec<SignedTransaction> = acknowledged.iter().take(500).map(|(t, _)| t.clone()).collect();
        let outcomes = client.submit(replay).await.unwrap();
        for ((_, result), outcome) in acknowledged.iter().zip(outcomes) {
            assert_eq!(outcome, Outcome::Done(*result));
        }
        assert_conserved(&client).await;
        client.close().await;
    });
    // Blocks sealed while the coordinator did not hear from their shard, and rounds it aborted
    // for it: the stores still verify against each other.
    cluster.stop_all();
    let (intact, said) = verify_cluster(&cluster.path, &[]);
    assert!(intact, "{said}");
}

/// Kills the coordinator at a failpoint in the round that holds the first cross-shard
/// payment after setup, restarts it, and checks what became of that round.
fn coordinator_crash(failpoint: &str, expect_committed: bool) {
    let shards = 4;
    let (batches, mut cluster) = prepared(13, 4_000, shards, 2);
    let runtime = runtime();
    // Rounds are numbered from 1, one per batch with anything new: the crash comes in the
    // round of this batch.
    let crash_batch = batches.len() - 3;
    assert!(batches[crash_batch].iter().any(|t| is_cross(t, shards)));
    cluster.launch(&[("coordinator", &format!("{failpoint}:{}", crash_batch + 1))]);
    let client = runtime.block_on(healthy_client(cluster.address(), &cluster.ca(), 13));
    let mut acknowledged = Vec::new();
    for batch in &batches[..crash_batch] {
        let outcomes = runtime.block_on(client.submit(batch.clone())).unwrap();
        for (transaction, outcome) in batch.iter().zip(outcomes) {
            let Outcome::Done(result) = outcome else { panic!("every shard is up") };
            acknowledged.push((transaction.clone(), result));
        }
    }
    assert!(runtime.block_on(client.submit(batches[crash_batch].clone())).is_err(), "the coordinator stopped");
    cluster.wait_exit("coordinator", Duration::from_secs(10));
    // A shard server holding prepared transactions dies too: they come back from its store.
    let pid = cluster.pid("shard-0");
    Command::new("kill").args(["-9", &pid.to_string()]).status().unwrap();
    cluster.reap("shard-0");
    cluster.start("shard-0", None);
    cluster.start("coordinator", None);
    runtime.block_on(async {
        let client = healthy_client(cluster.address(), &cluster.ca(), 13).await;
        assert_acknowledged_present(&client, &acknowledged).await;
        assert_conserved(&client).await;
        // The crashed batch again: single-shard transactions were sealed with the round;
        // cross-shard ones got the logged decision, or were aborted if none was logged.
        let batch = &batches[crash_batch];
        let outcomes = client.submit(batch.clone()).await.unwrap();
        let mut cross_committed = 0;
        for (transaction, outcome) in batch.iter().zip(&outcomes) {
            let Outcome::Done(result) = outcome else { panic!("every shard is up") };
            if is_cross(transaction, shards) {
                if expect_committed {
                    assert_ne!(*result, TxResult::Rejected(caduceus_engine::Reason::ParticipantUnavailable));
                    cross_committed += usize::from(result.is_committed());
                } else {
                    assert_eq!(*result, TxResult::Rejected(caduceus_engine::Reason::ParticipantUnavailable));
                }
            }
        }
        if expect_committed {
            assert!(cross_committed > 0, "logged commits were applied");
        }
        assert_conserved(&client).await;
        // And the rest of the load goes on.
        for batch in &batches[crash_batch + 1..] {
            let outcomes = client.submit(batch.clone()).await.unwrap();
            assert!(outcomes.iter().all(|o| matches!(o, Outcome::Done(_))));
        }
        assert_conserved(&client).await;
        client.close().await;
    });
    // A round decided from the log after a restart, or aborted because nothing was logged: the
    // stores still verify against each other.
    cluster.stop_all();
    let (intact, said) = verify_cluster(&cluster.path, &[]);
    assert!(intact, "{said}");
}

#[test]
fn a_coordinator_killed_before_deciding_aborts_the_prepared_round_on_restart() {
    coordinator_crash("after-votes", false);
}

#[test]
fn a_coordinator_killed_after_logging_its_decisions_sends_them_on_restart() {
    coordinator_crash("after-log", true);
}

/// Sends raw bytes as one request on a new stream and reads the response frame.
async fn raw(connection: &quinn::Connection, bytes: &[u8]) -> Response {
    let (mut send, mut recv) = connection.open_bi().await.unwrap();
    let _ = send.write_all(bytes).await;
    let _ = send.finish();
    let (kind, payload) = tokio::time::timeout(Duration::from_secs(15), wire::read_frame(&mut recv))
        .await
        .expect("an answer in time")
        .expect("an error frame, not a dropped stream");
    Response::decode(kind, &payload).unwrap()
}

/// Sends a frame's head alone, declaring `length` bytes, and returns the response, or `None`
/// when the server dropped the stream (it read a truncated frame).
async fn probe(connection: &quinn::Connection, length: usize) -> Option<Response> {
    let (mut send, mut recv) = connection.open_bi().await.unwrap();
    let _ = send.write_all(&head(length)).await;
    let _ = send.finish();
    match tokio::time::timeout(Duration::from_secs(15), wire::read_frame(&mut recv)).await {
        Ok(Ok((kind, payload))) => Some(Response::decode(kind, &payload).unwrap()),
        _ => None,
    }
}

/// A frame's head alone: it declares `length` bytes (version and kind included).
fn head(length: usize) -> Vec<u8> {
    let mut out = (length as u32).to_be_bytes().to_vec();
    out.extend_from_slice(&[wire::VERSION, 1]);
    out
}

fn frame(version: u8, kind: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = ((payload.len() + 2) as u32).to_be_bytes().to_vec();
    out.push(version);
    out.push(kind);
    out.extend_from_slice(payload);
    out
}

#[test]
fn garbage_oversized_and_unknown_frames_get_errors_while_others_are_served() {
    let (batches, mut cluster) = prepared(14, 2_000, 2, 1);
    cluster.start_all();
    let runtime = runtime();
    runtime.block_on(async {
        let client = healthy_client(cluster.address(), &cluster.ca(), 14).await;
        let config = tls::client(tls::roots(&cluster.ca()).unwrap(), None).unwrap();
        let mut endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
        endpoint.set_default_client_config(config);
        let hostile = endpoint.connect(cluster.address(), tls::COORDINATOR_NAME).unwrap().await.unwrap();

        let replayed = batches[0].clone();
        let good = tokio::spawn(async move {
            let mut served = 0;
            for batch in batches {
                let outcomes = client.submit(batch.clone()).await.unwrap();
                assert!(outcomes.iter().all(|o| matches!(o, Outcome::Done(_))));
                if served == 0 {
                    assert!(outcomes.iter().all(|o| *o == Outcome::Done(TxResult::Committed)));
                }
                served += outcomes.len();
            }
            (client, served)
        });
        let error_code = |response: Response| match response {
            Response::Error { code, .. } => code,
            other => panic!("expected an error frame, got {other:?}"),
        };
        for _ in 0..20 {
            assert_eq!(
                error_code(raw(&hostile, &frame(1, 1, b"not a batch at all")).await),
                wire::error_code::MALFORMED
            );
            assert_eq!(error_code(raw(&hostile, &frame(1, 99, b"")).await), wire::error_code::UNKNOWN_KIND);
            assert_eq!(error_code(raw(&hostile, &frame(7, 1, b"")).await), wire::error_code::VERSION);
            assert_eq!(error_code(raw(&hostile, &head(wire::FRAME_MAX + 1)).await), wire::error_code::TOO_LARGE);
            // A shard request from a client is refused: clients do not speak for the coordinator.
            let body = Request::AtShard { shard: 0, request: Box::new(Request::Status) }.encode().unwrap();
            assert_eq!(error_code(raw(&hostile, &frame(1, body[0], &body[1..])).await), wire::error_code::NOT_HERE);
            // Replays of the well-behaved client's registrations apply once: whoever is first,
            // every copy gets the same result.
            match call(&hostile, &Request::Submit(replayed.clone()), Duration::from_secs(30)).await.unwrap() {
                Response::Results(outcomes) => {
                    assert!(outcomes.iter().all(|o| *o == Outcome::Done(TxResult::Committed)), "{outcomes:?}")
                }
                Response::Busy => {}
                other => panic!("{other:?}"),
            }
        }
        // A stream that declares the largest frame and then sends nothing holds its
        // connection's whole byte budget: the next large request on that connection is told
        // "busy" at once (the server never buffers more than it allows), and others are served.
        // Until the server has read the held head, a probe is only a truncated frame (its stream
        // is dropped); once it has, every probe is told "busy". A probe that holds part of the
        // budget just when the held head arrives gets the held frame refused instead: then a
        // new one is held. Condition-driven, so a slow machine only takes longer.
        let deadline = Instant::now() + Duration::from_secs(60);
        let _held = 'held: loop {
            let (mut held_send, mut held_recv) = hostile.open_bi().await.unwrap();
            held_send.write_all(&head(wire::FRAME_MAX)).await.unwrap();
            loop {
                assert!(Instant::now() < deadline, "the held frame never made the server answer busy");
                if probe(&hostile, wire::FRAME_MAX / 2).await == Some(Response::Busy) {
                    break 'held (held_send, held_recv);
                }
                if let Ok(Ok(_)) =
                    tokio::time::timeout(Duration::from_millis(1), wire::read_frame(&mut held_recv)).await
                {
                    break; // the held frame itself was refused: hold another
                }
            }
        };
        assert_eq!(raw(&hostile, &head(wire::FRAME_MAX / 2)).await, Response::Busy, "and it stays busy");
        // The hostile connection itself still works for a proper (small) request.
        let health = call(&hostile, &Request::Health, Duration::from_secs(10)).await.unwrap();
        assert!(matches!(health, Response::Health { .. }));
        let (client, served) = good.await.unwrap();
        assert!(served > 2_000);
        client.close().await;
    });
}

#[test]
fn a_node_certificate_from_another_ca_or_in_another_role_is_refused() {
    let work = workload(15);
    let operator = work.operator().to_string();
    let mut cluster = Cluster::init(2, 2, &operator);
    let stranger = Cluster::init(2, 1, &operator);
    cluster.start_all();
    let runtime = runtime();
    runtime.block_on(async {
        let shard = cluster.config("shard-0").listen;
        let roots = tls::roots(&cluster.ca()).unwrap();
        // The coordinator's own certificate is accepted.
        let own = tls::client(roots.clone(), Some(cluster.config("coordinator").identity().unwrap())).unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        let accepted = loop {
            match Client::connect_with(shard, own.clone(), tls::SHARD_SERVER_NAME).await {
                Ok(client) => break client,
                Err(_) if Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(100)).await,
                Err(error) => panic!("{error}"),
            }
        };
        assert!(accepted.health().await.is_ok());
        // Another cluster's coordinator certificate, no certificate at all, and this cluster's
        // own shard-server certificate (a node in another role) are not.
        let other_role = cluster.config("shard-1").identity().unwrap();
        for identity in [Some(stranger.config("coordinator").identity().unwrap()), None, Some(other_role)] {
            let config = tls::client(roots.clone(), identity).unwrap();
            let refused = match Client::connect_with(shard, config, tls::SHARD_SERVER_NAME).await {
                Err(_) => true,
                Ok(client) => client.health().await.is_err(),
            };
            assert!(refused, "a shard server serves only its own cluster's coordinator");
        }
        // A client checks that it reached the coordinator: a shard server's certificate, from the
        // same CA, does not name it.
        let posing = Client::connect(shard, &cluster.ca()).await;
        assert!(posing.is_err(), "a shard server cannot pose as the coordinator");
        let real = Client::connect(cluster.address(), &cluster.ca()).await.expect("the coordinator");
        assert!(real.health().await.is_ok());

        // A node added later with the CA key kept apart (a coordinator moved to another
        // machine) is one of the cluster's: the shard server serves it.
        let add = |name: &str, ca_key: &Path| {
            caduceus()
                .args(["cluster", "add-node", "--dir", cluster.path.to_str().unwrap(), "--name", name])
                .args(["--role", "coordinator", "--host", "coordinator2.exchange.example"])
                .args(["--ca-key", ca_key.to_str().unwrap()])
                .output()
                .unwrap()
        };
        let ca_key = caduceus_shards::local::default_ca_key(&cluster.path);
        let added = add("coordinator-2", &ca_key);
        assert!(added.status.success(), "{}", String::from_utf8_lossy(&added.stderr));
        let identity =
            tls::Identity::load(&cluster.path.join("coordinator-2.pem"), &cluster.path.join("coordinator-2.key"))
                .unwrap();
        let config = tls::client(roots.clone(), Some(identity)).unwrap();
        let client = Client::connect_with(shard, config, tls::SHARD_SERVER_NAME).await.unwrap();
        assert!(client.health().await.is_ok(), "the added coordinator is served");
        // Another cluster's CA key issues nothing here, and a name is never issued twice.
        let foreign = add("coordinator-3", &caduceus_shards::local::default_ca_key(&stranger.path));
        assert!(!foreign.status.success());
        assert!(String::from_utf8_lossy(&foreign.stderr).contains("is not the private key of"));
        assert!(!cluster.path.join("coordinator-3.pem").exists());
        assert!(!add("coordinator-2", &ca_key).status.success(), "coordinator-2 exists already");
    });
}

/// A port `init` chose and another process took before the node bound it: the node says so
/// and exits, and the harness makes the cluster again on other ports instead of failing.
#[test]
fn a_taken_port_makes_the_cluster_again_on_other_ports() {
    let work = workload(16);
    let mut cluster = Cluster::init(2, 1, &work.operator().to_string());
    let taken = cluster.config("shard-0").listen;
    let _holder = std::net::UdpSocket::bind(taken).expect("the port init chose is free a moment later");
    cluster.start_all();
    assert_ne!(cluster.config("shard-0").listen, taken, "made again on another port");
    let runtime = runtime();
    let client = runtime.block_on(healthy_client(cluster.address(), &cluster.ca(), 16));
    runtime.block_on(client.close());
}

/// A cluster made without `--operator` has a real operator key, generated by `init` and kept
/// apart from the nodes; `caduceus submit --cluster-dir` signs the seeded workload's
/// registrations with it, so the workload runs as it does on the embedded default.
#[test]
fn a_cluster_s_generated_operator_key_signs_the_demo_workload() {
    let mut cluster = Cluster::init(2, 1, "");
    let key = caduceus_shards::local::default_operator_key(&cluster.path);
    assert!(key.exists(), "init writes the operator key beside the cluster directory");
    let public = caduceus_shards::local::operator_key(&cluster.ca()).unwrap().unwrap();
    let public = caduceus_engine::signature::actor_key(&public);
    assert_ne!(public, caduceus_workload::operator_of(1), "not the seeded demo operator");
    assert_eq!(cluster.config("coordinator").operators, vec![public.to_string()]);
    cluster.start_all();
    let submit = caduceus()
        .args(["submit", "--cluster-dir", cluster.path.to_str().unwrap(), "--transactions", "2000"])
        .args(["--start", &FIXED_TIME.to_string(), "--patients", "200"])
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&submit.stdout).to_string() + &String::from_utf8_lossy(&submit.stderr);
    assert!(submit.status.success(), "{said}");
    assert!(!said.contains("unknown-signer"), "the registrations were signed by the cluster's operator: {said}");
    assert!(said.contains("committed"), "{said}");

    // A person's key from the keystore, registered by the cluster's operator, reads as that
    // actor: an auditor reads a patient's report; unsigned, the same question is refused.
    let dir = cluster.path.to_str().unwrap();
    let keystore = cluster.path.with_extension("keys");
    let keystore = keystore.to_str().unwrap();
    let run = |args: &[&str]| caduceus().args(args).output().unwrap();
    let said = |output: &std::process::Output| {
        format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr))
    };
    assert!(run(&["keys", "--keystore", keystore, "new", "audit-office"]).status.success());
    let registered =
        run(&["register", "--cluster-dir", dir, "--keystore", keystore, "--key", "audit-office", "--role", "auditor"]);
    assert!(registered.status.success(), "{}", said(&registered));
    let config = WorkloadConfig { seed: 1, patients: 200, ..WorkloadConfig::default() };
    let patient = Workload::new(config, FIXED_TIME).patients()[0].to_string();
    let unsigned = run(&["query", "--cluster-dir", dir, "access-report", "--patient", &patient]);
    assert!(!unsigned.status.success() && said(&unsigned).contains("signed"), "{}", said(&unsigned));
    let signed = run(&[
        "query",
        "--cluster-dir",
        dir,
        "--as",
        "audit-office",
        "--keystore",
        keystore,
        "access-report",
        "--patient",
        &patient,
    ]);
    assert!(signed.status.success(), "{}", said(&signed));
    let operator =
        run(&["register", "--cluster-dir", dir, "--keystore", keystore, "--key", "audit-office", "--role", "operator"]);
    assert!(!operator.status.success(), "an operator is never added by one registration");
}

/// `caduceus import` into a running cluster: the demo's files (a Synthea bundle, an 837 and the
/// 835 that pays it, an EPCIS shipment) and the study bundle, registered by the cluster's
/// generated operator, each record's payload put into the coordinator's store by its
/// custodian; the same files again change nothing; what was imported is read back through the
/// cluster as its owners.
#[test]
fn a_cluster_takes_an_import_and_answers_for_it() {
    let mut cluster = Cluster::init(2, 1, "");
    cluster.start_all();
    let dir = cluster.path.to_str().unwrap().to_owned();
    let keystore = cluster.path.with_extension("keys");
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/data");
    let files: Vec<String> = [
        "fhir-synthea-r4-smart/Agustín_Fonseca_cb5696d9-a0de-4f49-94f9-433f96a28eb0.json",
        "x12-linuxforhealth/demo-file/demo.837",
        "caduceus/demo-remittance.835",
        "caduceus/demo-shipment.jsonld",
        "caduceus/research-study.json",
    ]
    .iter()
    .map(|f| data.join(f).to_str().unwrap().to_owned())
    .collect();
    let import = || {
        let output = caduceus().args(["import", "--cluster-dir", &dir]).args(&files).output().unwrap();
        let said = String::from_utf8_lossy(&output.stdout).to_string() + &String::from_utf8_lossy(&output.stderr);
        assert!(output.status.success(), "{said}");
        said
    };
    let first = import();
    assert!(!first.contains("unavailable") && !first.contains("unknown-signer"), "{first}");
    // Every file imported; what the ledger refuses is only what it should: the enrolment on a
    // consent for treatment only.
    assert!(first.contains("files: 5 imported, 0 rejected"), "{first}");
    let totals = first.split("files: 5 imported").nth(1).unwrap();
    let refused: Vec<&str> = totals
        .lines()
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter(|l| !l.contains("committed"))
        .map(str::trim)
        .collect();
    assert_eq!(refused, vec!["1 consent-purpose-not-covered"], "{first}");
    let again = import();
    assert!(again.contains("transactions: 0 submitted"), "{again}");

    // Read back through the cluster, signed as their owners.
    let keystore = keystore.to_str().unwrap();
    let query = |who: &str, what: &[&str]| {
        let output = caduceus()
            .args(["query", "--cluster-dir", &dir, "--keystore", keystore, "--as", who])
            .args(what)
            .output()
            .unwrap();
        String::from_utf8_lossy(&output.stdout).to_string() + &String::from_utf8_lossy(&output.stderr)
    };
    let listed = caduceus().args(["keys", "--keystore", keystore, "list"]).output().unwrap();
    let listed = String::from_utf8_lossy(&listed.stdout).to_string();
    let key_of = |prefix: &str| -> (String, String) {
        let line = listed.lines().find(|l| l.starts_with(prefix)).unwrap_or_else(|| panic!("{prefix}: {listed}"));
        let mut words = line.split_whitespace();
        (words.next().unwrap().to_owned(), words.last().unwrap().to_owned())
    };
    let (patient, patient_key) = key_of("fhir.Patient.27de96c6");
    let records = query(&patient, &["records", "--patient", &patient_key, "--limit", "1000"]);
    assert_eq!(records.lines().filter(|l| l.starts_with("record ")).count(), 67, "{records}");
    let unit = query("gs1.party.0098765", &["unit", "--gtin", "10614141073464", "--serial", "2017"]);
    assert!(unit.contains("genuine, lot DP2611, dispensed"), "{unit}");
    let credential_id = first
        .lines()
        .find(|l| l.trim_start().starts_with("credential ") && l.contains("(MD)"))
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap()
        .to_owned();
    let credential = query(&patient, &["credential", "--credential", &credential_id]);
    assert!(credential.contains("MD held by"), "{credential}");
}
