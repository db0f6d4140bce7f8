//! A deterministic simulation of the cluster's commit protocol, without
//! sockets: the coordinator's real round driver talks to real participants
//! through a seeded transport that drops requests and replies, duplicates
//! them, delivers stale copies late (reordering), crashes participants
//! (reopened from their stores) and crashes the coordinator mid-round
//! (reopened from its log). After every step: no transaction has two results
//! on two shards, nothing acknowledged is contradicted, and funds are
//! conserved whenever no round is in doubt. At the end, with faults off and
//! everything settled: every acknowledged commit is sealed on every
//! participant, every acknowledged rejection on at least one, each with its
//! acknowledged result; nothing is in doubt; funds are conserved.

use std::collections::HashMap;
use std::sync::Arc;

use caduceus_engine::codec::Codec;
use caduceus_engine::coordinator_store::CoordinatorStore;
use caduceus_engine::layout;
use caduceus_engine::participant::{Head, Participant};
use caduceus_engine::reads;
use caduceus_engine::round::Genesis;
use caduceus_engine::routing::participants;
use caduceus_engine::state::State;
use caduceus_engine::storage::{MemoryStorage, Storage};
use caduceus_engine::{SignedTransaction, TxId, TxResult};
use caduceus_shards::coordinator::{Call, RoundDriver, Transport};
use caduceus_shards::shard_server::serve_one;
use caduceus_shards::wire::{Outcome, Request, Response};
use caduceus_workload::{Rng, Workload, WorkloadConfig};
use parking_lot::Mutex;

const TIME: u64 = 1_790_000_000_000;
const SHARDS: u32 = 3;
/// Seeded runs, each short; `CADUCEUS_SIM_SEEDS` runs more.
const SEEDS: u64 = 24;

struct Node {
    storage: Arc<MemoryStorage>,
    /// `None` while crashed; it restarts after `down_for` more calls.
    participant: Option<Participant>,
    down_for: u32,
}

struct Sim {
    genesis: Genesis,
    nodes: Mutex<Vec<Node>>,
    rng: Mutex<Rng>,
    faults: Mutex<bool>,
    /// Copies of requests delivered again later, out of order.
    late: Mutex<Vec<(u32, Request)>>,
    /// Fired when the coordinator "crashes": its round future is dropped.
    crash: Mutex<Option<tokio::sync::oneshot::Sender<()>>>,
    events: Mutex<HashMap<&'static str, u32>>,
}

impl Sim {
    fn chance(&self, p: f64) -> bool {
        *self.faults.lock() && self.rng.lock().chance(p)
    }

    fn note(&self, event: &'static str) {
        *self.events.lock().entry(event).or_default() += 1;
    }

    /// Delivers a request to a live participant (restarting it when its down time is over).
    fn apply(&self, shard: u32, request: Request) -> Result<Response, String> {
        let mut nodes = self.nodes.lock();
        let node = &mut nodes[shard as usize];
        if node.participant.is_none() {
            if node.down_for > 0 {
                node.down_for -= 1;
                return Err("down".into());
            }
            node.participant = Some(Participant::open(node.storage.clone(), &self.genesis, shard).unwrap());
            self.note("participant restarted");
        }
        Ok(serve_one(node.participant.as_mut().unwrap(), request))
    }

    fn crash_participant(&self, shard: u32) {
        let down = 1 + self.rng.lock().below(4) as u32;
        let mut nodes = self.nodes.lock();
        nodes[shard as usize].participant = None;
        nodes[shard as usize].down_for = down;
        self.note("participant crashed");
    }

    fn deliver(&self, shard: u32, request: Request) -> Result<Response, String> {
        if self.chance(0.15) {
            let late = {
                let mut late = self.late.lock();
                if late.is_empty() {
                    None
                } else {
                    let pick = self.rng.lock().below(late.len());
                    Some(late.swap_remove(pick))
                }
            };
            if let Some((to, old)) = late {
                let _ = self.apply(to, old);
                self.note("stale message delivered");
            }
        }
        if self.chance(0.05) {
            self.note("request lost");
            return Err("lost".into());
        }
        if self.chance(0.08) {
            self.late.lock().push((shard, request.clone()));
        }
        if self.chance(0.03) {
            self.crash_participant(shard);
            return Err("crashed".into());
        }
        let mut reply = self.apply(shard, request.clone())?;
        if self.chance(0.08) {
            self.note("request duplicated");
            reply = self.apply(shard, request)?;
        }
        if self.chance(0.03) {
            self.crash_participant(shard);
            return Err("crashed after applying".into());
        }
        if self.chance(0.05) {
            self.note("reply lost");
            return Err("reply lost".into());
        }
        Ok(reply)
    }
}

struct SimTransport(Arc<Sim>);

impl Transport for SimTransport {
    fn call(&self, shard: u32, request: Request) -> Call<'_> {
        Box::pin(async move {
            let crash = if self.0.chance(0.01) { self.0.crash.lock().take() } else { None };
            if let Some(crash) = crash {
                let _ = crash.send(());
                std::future::pending::<()>().await;
            }
            self.0.deliver(shard, request)
        })
    }

    fn is_down(&self, _shard: u32) -> bool {
        false
    }
}

/// Every sealed transaction of a shard, with its result; and the ids of its prepared round.
fn sealed(storage: &MemoryStorage, shard: u32) -> (HashMap<TxId, TxResult>, Vec<TxId>) {
    let head = storage.get(layout::META_HEAD).unwrap().map(|b| Head::decode(&b).unwrap());
    let mut recorded = HashMap::new();
    let mut at: HashMap<TxId, (u64, u64)> = HashMap::new();
    for height in 1..=head.map_or(0, |h| h.height) {
        let (header, body) = reads::block(storage, shard, height).unwrap();
        for (transaction, result) in body.entries {
            let earlier = at.insert(transaction.id(), (height, header.round));
            assert!(
                recorded.insert(transaction.id(), result).is_none(),
                "transaction {:032x} ({:?}) is sealed twice on shard {shard}: at (height, round) {earlier:?} and {:?}",
                transaction.id(),
                transaction.transaction.operation,
                (height, header.round)
            );
        }
    }
    let pending = storage
        .get(layout::META_PENDING)
        .unwrap()
        .map(|b| caduceus_engine::participant::RoundRequest::decode(&b).unwrap())
        .map_or(Vec::new(), |r| r.prepares.iter().map(SignedTransaction::id).collect());
    (recorded, pending)
}

fn fund_totals(sim: &Sim) -> (u128, u128) {
    let nodes = sim.nodes.lock();
    nodes.iter().enumerate().fold((0, 0), |(b, f), (shard, node)| {
        let state = caduceus_engine::ledger::load_state(node.storage.as_ref(), shard as u32, None).unwrap();
        let (sb, sf) = totals(&state);
        (b + sb, f + sf)
    })
}

fn totals(state: &State) -> (u128, u128) {
    state.accounts.values().fold((0, 0), |(b, f), a| (b + u128::from(a.balance), f + u128::from(a.funded)))
}

/// The checks after every step; `settled` when nothing may be in doubt any more.
fn check(sim: &Sim, acknowledged: &HashMap<TxId, (SignedTransaction, TxResult)>, settled: bool) {
    let storages: Vec<Arc<MemoryStorage>> = sim.nodes.lock().iter().map(|n| n.storage.clone()).collect();
    let views: Vec<_> = storages.iter().enumerate().map(|(shard, s)| sealed(s, shard as u32)).collect();
    let mut seen: HashMap<TxId, TxResult> = HashMap::new();
    for (recorded, _) in &views {
        for (id, result) in recorded {
            let first = *seen.entry(*id).or_insert(*result);
            assert_eq!(first, *result, "transaction {id:032x} has two results on two shards");
        }
    }
    for (id, (transaction, result)) in acknowledged {
        if let Some(recorded) = seen.get(id) {
            assert_eq!(recorded, result, "acknowledged transaction {id:032x} contradicted");
        }
        if settled {
            // A commit is sealed on every participant; a rejection at least where it was
            // prepared (a participant that never heard of an aborted transaction records nothing).
            let holders: Vec<u32> = participants(&transaction.transaction, SHARDS)
                .into_iter()
                .filter(|&shard| views[shard as usize].0.contains_key(id))
                .collect();
            if result.is_committed() {
                assert_eq!(holders, participants(&transaction.transaction, SHARDS), "{id:032x} committed everywhere");
            } else if result.is_recorded() {
                assert!(!holders.is_empty(), "rejected {id:032x} is recorded somewhere");
            } else {
                assert!(holders.is_empty(), "refused {id:032x} is recorded nowhere");
            }
        }
    }
    let in_doubt = views.iter().any(|(_, pending)| !pending.is_empty());
    assert!(!(settled && in_doubt), "nothing is in doubt once settled");
    if !in_doubt {
        let (balances, funded) = fund_totals(sim);
        assert_eq!(balances, funded, "funds are conserved");
    }
}

async fn open_driver(sim: &Arc<Sim>, coordinator: &Arc<MemoryStorage>) -> RoundDriver {
    let store = CoordinatorStore::open(coordinator.clone(), &sim.genesis).unwrap();
    RoundDriver::open(store, Box::new(SimTransport(sim.clone())), Some(TIME)).await.unwrap()
}

async fn simulate(seed: u64) -> HashMap<&'static str, u32> {
    let config = WorkloadConfig {
        seed,
        patients: 60,
        providers: 8,
        payers: 3,
        manufacturers: 2,
        distributors: 3,
        pharmacies: 4,
        shards: SHARDS,
        ..WorkloadConfig::default()
    };
    let mut workload = Workload::new(config, TIME);
    let genesis = Genesis { shards: SHARDS, operators: vec![workload.operator()], quorum: 1 };
    let sim = Arc::new(Sim {
        nodes: Mutex::new(
            (0..SHARDS)
                .map(|shard| {
                    let storage = Arc::new(MemoryStorage::default());
                    let participant = Some(Participant::open(storage.clone(), &genesis, shard).unwrap());
                    Node { storage, participant, down_for: 0 }
                })
                .collect(),
        ),
        genesis,
        rng: Mutex::new(Rng::new(seed)),
        faults: Mutex::new(true),
        late: Mutex::new(Vec::new()),
        crash: Mutex::new(None),
        events: Mutex::new(HashMap::new()),
    });
    let coordinator = Arc::new(MemoryStorage::default());
    let mut driver = open_driver(&sim, &coordinator).await;
    let mut batches: Vec<Vec<SignedTransaction>> =
        workload.signed_setup().into_iter().flat_map(|p| p.chunks(40).map(<[_]>::to_vec).collect::<Vec<_>>()).collect();
    batches.extend((0..30).map(|_| workload.signed_batch(40)));

    let mut acknowledged: HashMap<TxId, (SignedTransaction, TxResult)> = HashMap::new();
    for batch in batches {
        // A client sends a batch until every transaction has a result (at most 6 times).
        let mut left = batch;
        for _ in 0..6 {
            if left.is_empty() {
                break;
            }
            let (crash, crashed) = tokio::sync::oneshot::channel();
            *sim.crash.lock() = Some(crash);
            let outcomes = tokio::select! {
                outcomes = driver.run(left.clone()) => Some(outcomes),
                _ = crashed => None,
            };
            match outcomes {
                Some(outcomes) => {
                    let mut again = Vec::new();
                    for (transaction, outcome) in left.into_iter().zip(outcomes) {
                        match outcome {
                            Outcome::Done(result) => {
                                let earlier = acknowledged.insert(transaction.id(), (transaction.clone(), result));
                                assert!(earlier.is_none_or(|(_, r)| r == result), "a repeat gets the first result");
                            }
                            Outcome::Unavailable => again.push(transaction),
                        }
                    }
                    left = again;
                }
                None => {
                    sim.note("coordinator crashed");
                    driver = open_driver(&sim, &coordinator).await;
                }
            }
            check(&sim, &acknowledged, false);
        }
    }
    // Faults off: restart everything, settle, and check that all is sealed and agreed.
    *sim.faults.lock() = false;
    *sim.crash.lock() = None;
    driver = open_driver(&sim, &coordinator).await;
    for _ in 0..10 {
        if driver.unsettled().is_empty() {
            break;
        }
        driver.settle().await;
    }
    assert!(driver.unsettled().is_empty());
    check(&sim, &acknowledged, true);
    let events = sim.events.lock().clone();
    events
}

#[test]
fn the_commit_protocol_survives_loss_duplication_reordering_and_crashes() {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let mut totals: HashMap<&'static str, u32> = HashMap::new();
    let seeds = std::env::var("CADUCEUS_SIM_SEEDS").ok().and_then(|n| n.parse().ok()).unwrap_or(SEEDS);
    for seed in 0..seeds {
        eprintln!("seed {seed}");
        let events = runtime.block_on(simulate(seed));
        for (event, count) in events {
            *totals.entry(event).or_default() += count;
        }
    }
    // The faults really happened, every kind of them.
    for event in [
        "participant crashed",
        "participant restarted",
        "coordinator crashed",
        "request lost",
        "reply lost",
        "request duplicated",
        "stale message delivered",
    ] {
        assert!(totals.get(event).copied().unwrap_or(0) > 0, "no {event:?} in any run: {totals:?}");
    }
}

/// A peer's lookup that meets a damaged transaction-index entry or participation record gets
/// an error answer; the shard server does not panic and answers the next request.
#[test]
fn a_damaged_index_entry_is_an_error_answer_not_a_panic() {
    let genesis = Genesis { shards: 2, operators: vec![caduceus_engine::ActorKey([1; 32])], quorum: 1 };
    let storage = Arc::new(MemoryStorage::default());
    let mut participant = Participant::open(storage.clone(), &genesis, 0).unwrap();
    storage.write(&[(layout::transaction(7), Some(b"not a location".to_vec()))]).unwrap();
    storage.write(&[(layout::participation(8), Some(vec![1, 2, 3]))]).unwrap();
    for id in [7, 8] {
        match serve_one(&mut participant, Request::Lookup(vec![5, id])) {
            Response::Error { code, message } => {
                assert_eq!(code, caduceus_shards::wire::error_code::STORAGE);
                assert!(message.contains("damaged"), "{message}");
            }
            other => panic!("a damaged entry answered {other:?}"),
        }
    }
    assert_eq!(serve_one(&mut participant, Request::Lookup(vec![5])), Response::Lookup(vec![None]));
}

/// A round request no coordinator of ours sends (a transaction prepared twice, more
/// transactions than a block may hold) is refused with an error; the shard server does not
/// panic and serves the next request.
#[test]
fn a_malformed_round_request_is_refused_not_a_panic() {
    use caduceus_engine::participant::RoundRequest;
    let mut workload =
        Workload::new(WorkloadConfig { seed: 5, patients: 20, shards: 1, ..WorkloadConfig::default() }, TIME);
    let genesis = Genesis { shards: 1, operators: vec![workload.operator()], quorum: 1 };
    let storage = Arc::new(MemoryStorage::default());
    let mut participant = Participant::open(storage, &genesis, 0).unwrap();
    let setup = workload.signed_setup();
    let (registration, funding) = (setup[0][0].clone(), setup[1][0].clone());
    let twice = RoundRequest {
        round: 1,
        now: TIME,
        singles: Vec::new(),
        prepares: vec![registration.clone(), registration.clone()],
    };
    let too_many = RoundRequest {
        round: 1,
        now: TIME,
        singles: vec![funding; caduceus_engine::limits::ROUND_TRANSACTIONS_MAX],
        prepares: vec![registration],
    };
    for request in [twice, too_many] {
        match serve_one(&mut participant, Request::Round(request)) {
            Response::Error { message, .. } => {
                assert!(message.contains("twice") || message.contains("limit"), "{message}")
            }
            other => panic!("a malformed round was answered {other:?}"),
        }
    }
    assert!(matches!(serve_one(&mut participant, Request::Status), Response::Status(_)));
}
