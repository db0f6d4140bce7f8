//! `caduceus coordinator`: takes client batches, verifies their signatures,
//! and runs each batch as one round over the shard servers: single-shard
//! transactions go straight to their shard, cross-shard ones through batched
//! two-phase commit (the engine's `Coordinator` state machine), with every
//! decision logged durably before any participant hears it.
//!
//! Rounds run one at a time, in arrival order, so a cluster gives the same
//! results as the embedded engine on the same batches. A shard that does not
//! answer is marked down: transactions that need it are answered
//! `Unavailable` (not acknowledged) while it is down, cross-shard ones already
//! prepared are aborted, and nothing else waits for it. Before a shard takes
//! part in a round again (and for every shard at start), the coordinator asks
//! for its status and settles its prepared round from the log: re-sending the
//! logged decisions, or aborting a round that was never decided.

use std::collections::{BTreeSet, HashMap};
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use caduceus_engine::authority::{custody_holders, may_read, Subject};
use caduceus_engine::block::{Checkpoint, ShardHead};
use caduceus_engine::coordinator::{Action, Coordinator, Message};
use caduceus_engine::coordinator_store::CoordinatorStore;
use caduceus_engine::limits::CLOCK_SKEW_MS;
use caduceus_engine::limits::{BATCH_TRANSACTIONS_MAX, SUBMIT_QUEUE_DEPTH};
use caduceus_engine::participant::RoundRequest;
use caduceus_engine::payload::PayloadStore;
use caduceus_engine::reads::complete_proof;
use caduceus_engine::round::{split, Genesis};
use caduceus_engine::routing::{shard_of_actor, shard_of_credential, shard_of_unit};
use caduceus_engine::shard::Admission;
use caduceus_engine::signature::verify_all;
use caduceus_engine::storage::RocksStorage;
use caduceus_engine::{ActorKey, Operation, Reason, Role, SignedTransaction, TxId, TxResult};
use parking_lot::Mutex;
use tokio::sync::{mpsc, oneshot};

use super::config::NodeConfig;
use super::payloads::Payloads;
use super::rpc::{self, call};
use super::tls;
use super::wire::{error_code, Answer, Credential, Outcome, Query, Request, Response};

/// How long a shard may take to answer one request.
pub const SHARD_TIMEOUT: Duration = Duration::from_secs(2);
/// How often a lost shard server is dialled again, and an idle coordinator settles shards.
pub const RETRY_AFTER: Duration = Duration::from_millis(300);
/// Round numbers reserved per durable write of the reservation.
const ROUND_RESERVATION: u64 = 1 << 16;

/// A call in progress: the shard's response, or why there is none.
pub type Call<'a> = Pin<Box<dyn Future<Output = Result<Response, String>> + Send + 'a>>;

/// How the coordinator reaches shards: QUIC in a cluster, direct calls in the protocol
/// simulation. A failed call is an `Err`: the request may or may not have been applied.
pub trait Transport: Send + Sync + 'static {
    fn call(&self, shard: u32, request: Request) -> Call<'_>;
    /// Known to be down: not worth calling now.
    fn is_down(&self, shard: u32) -> bool;
}

/// A shard server as the coordinator sees it. Calls never wait for a connection: while a
/// server is down they fail at once, and its prober reconnects in the background, so a dead
/// server costs the rounds nothing but the transactions that need it.
struct Link {
    name: String,
    address: SocketAddr,
    connection: Mutex<Option<quinn::Connection>>,
}

/// Shard servers over QUIC, with mutual TLS.
struct QuicTransport {
    links: Vec<Arc<Link>>,
    /// Index into `links` of each shard's server.
    link_of: Vec<usize>,
}

impl Transport for QuicTransport {
    fn call(&self, shard: u32, request: Request) -> Call<'_> {
        Box::pin(async move {
            let link = &self.links[self.link_of[shard as usize]];
            link.call(&Request::AtShard { shard, request: Box::new(request) }).await
        })
    }

    fn is_down(&self, shard: u32) -> bool {
        self.links[self.link_of[shard as usize]].connection.lock().is_none()
    }
}

impl Link {
    async fn call(&self, request: &Request) -> Result<Response, String> {
        let connection = self.connection.lock().clone().ok_or_else(|| format!("{} is down", self.name))?;
        call(&connection, request, SHARD_TIMEOUT).await.map_err(|error| {
            // Down until the prober reconnects.
            let mut slot = self.connection.lock();
            if slot.as_ref().is_some_and(|c| c.stable_id() == connection.stable_id()) {
                *slot = None;
            }
            format!("{}: {error}", self.name)
        })
    }

    /// Keeps a connection to the server: reconnects whenever it is missing or closed.
    async fn probe(self: Arc<Self>, endpoint: quinn::Endpoint) {
        loop {
            let missing = {
                let mut slot = self.connection.lock();
                if slot.as_ref().is_some_and(|c| c.close_reason().is_some()) {
                    *slot = None;
                }
                slot.is_none()
            };
            if missing {
                if let Ok(connecting) = endpoint.connect(self.address, tls::SHARD_SERVER_NAME) {
                    if let Ok(Ok(connection)) = tokio::time::timeout(Duration::from_secs(2), connecting).await {
                        *self.connection.lock() = Some(connection);
                    }
                }
            }
            tokio::time::sleep(RETRY_AFTER).await;
        }
    }
}

pub(crate) struct Shared {
    genesis: Genesis,
    store: Mutex<CoordinatorStore>,
    transport: Box<dyn Transport>,
    /// The last known head of every shard.
    heads: Mutex<Vec<ShardHead>>,
    /// Shards whose prepared round must be settled before they take part again.
    unresolved: Mutex<BTreeSet<u32>>,
    fixed_time: Option<u64>,
    /// The next round number, and the highest one reserved durably.
    rounds: Mutex<(u64, u64)>,
    /// Signed reads' (reader, nonce) pairs within the clock-skew window, with when each leaves
    /// it: a read is answered once.
    reads_seen: Mutex<HashMap<ActorKey, SeenReads>>,
}

impl Shared {
    /// The coordinator's time: its fixed time (tests), else the system's.
    pub(crate) fn now(&self) -> u64 {
        self.fixed_time.unwrap_or_else(|| (caduceus_engine::ledger::system_clock())())
    }

    /// A new round number, never used before, even across restarts.
    fn next_round(&self) -> Result<u64, String> {
        let mut rounds = self.rounds.lock();
        let (next, reserved) = *rounds;
        if next > reserved {
            let reserved = next + ROUND_RESERVATION;
            self.store.lock().reserve(reserved).map_err(|e| e.to_string())?;
            rounds.1 = reserved;
        }
        rounds.0 = next + 1;
        Ok(next)
    }

    async fn at_shard(&self, shard: u32, request: Request) -> Result<Response, String> {
        let result = self.transport.call(shard, request).await;
        if result.is_err() {
            self.unresolved.lock().insert(shard);
        }
        result
    }

    /// Asks every shard in parallel.
    async fn all_shards(self: &Arc<Self>, request: Request) -> Vec<Result<Response, String>> {
        let mut calls = tokio::task::JoinSet::new();
        for shard in 0..self.genesis.shards {
            let shared = self.clone();
            let request = request.clone();
            calls.spawn(async move { (shard, shared.at_shard(shard, request).await) });
        }
        let mut answers: Vec<Option<Result<Response, String>>> = (0..self.genesis.shards).map(|_| None).collect();
        while let Some(joined) = calls.join_next().await {
            let (shard, answer) = joined.expect("a shard call does not panic");
            answers[shard as usize] = Some(answer);
        }
        answers.into_iter().map(|a| a.expect("every shard answered")).collect()
    }

    fn down(&self, shard: u32) -> bool {
        self.transport.is_down(shard)
    }

    /// Settles a shard's prepared round from the log, and learns its head.
    async fn resolve(&self, shard: u32) -> Result<(), String> {
        let status = match self.at_shard(shard, Request::Status).await? {
            Response::Status(status) if status.shard == shard && status.shards == self.genesis.shards => status,
            other => return Err(format!("shard {shard}: unexpected status answer {other:?}")),
        };
        let mut head = ShardHead { shard, height: status.head.height, hash: status.head.hash };
        if let Some((round, ids)) = &status.pending {
            let round = *round;
            let logged = self.store.lock().decisions(round).map_err(|e| e.to_string())?;
            let decisions = match logged {
                Some(decisions) => decisions,
                None => {
                    // Never decided: abort (presumed abort), and log it so every participant hears the same.
                    let abort: Vec<(TxId, TxResult)> =
                        ids.iter().map(|id| (*id, TxResult::Rejected(Reason::ParticipantUnavailable))).collect();
                    self.store.lock().log_decisions(round, &abort).map_err(|e| e.to_string())?;
                    abort
                }
            };
            match self.at_shard(shard, Request::Decide { round, decisions }).await? {
                Response::Decided(decided) => head = decided,
                other => return Err(format!("shard {shard}: unexpected decide answer {other:?}")),
            }
        }
        self.heads.lock()[shard as usize] = head;
        // A block sealed while the coordinator did not hear from its shard is in no checkpoint
        // yet: record one now, so it can be proved.
        let block_round = status.pending.as_ref().map_or(status.head.round, |(round, _)| *round);
        if head.height > 0 {
            let held =
                self.store.lock().checkpoint_holding(shard, head.height, block_round).map_err(|e| e.to_string())?;
            if held.is_none() {
                let round = self.next_round()?;
                let mut store = self.store.lock();
                let checkpoint = Checkpoint {
                    round,
                    previous: store.checkpoint().map_or_else(|| self.genesis.hash(), Checkpoint::hash),
                    heads: self.heads.lock().clone(),
                };
                store.record_late_checkpoint(checkpoint, shard, head.height).map_err(|e| e.to_string())?;
            }
        }
        self.unresolved.lock().remove(&shard);
        Ok(())
    }

    /// Settles every shard that needs it and is not known to be down.
    async fn resolve_pending(&self) {
        let shards: Vec<u32> = self.unresolved.lock().iter().copied().collect();
        for shard in shards {
            if !self.down(shard) {
                if let Err(error) = self.resolve(shard).await {
                    eprintln!("shard {shard} not settled yet: {error}");
                }
            }
        }
    }
}

/// The round driver: runs batches as rounds, one at a time, and settles shards that need it.
/// It writes the coordinator's store on the async thread (a few fsyncs per round); nothing
/// else runs on that task.
pub struct RoundDriver {
    shared: Arc<Shared>,
    last_now: u64,
}

impl RoundDriver {
    /// Opens a driver on the coordinator's store; settles every shard it can reach.
    pub async fn open(
        store: CoordinatorStore,
        transport: Box<dyn Transport>,
        fixed_time: Option<u64>,
    ) -> Result<Self, String> {
        let genesis = store.genesis().clone();
        let reserved = store.reserved().map_err(|e| e.to_string())?;
        let heads = match store.checkpoint() {
            Some(checkpoint) => checkpoint.heads.clone(),
            None => (0..genesis.shards).map(|shard| ShardHead { shard, height: 0, hash: [0; 32] }).collect(),
        };
        let shared = Arc::new(Shared {
            unresolved: Mutex::new((0..genesis.shards).collect()),
            genesis,
            store: Mutex::new(store),
            transport,
            heads: Mutex::new(heads),
            fixed_time,
            reads_seen: Mutex::new(HashMap::new()),
            rounds: Mutex::new((reserved + 1, reserved)),
        });
        shared.resolve_pending().await;
        Ok(Self { shared, last_now: fixed_time.unwrap_or(0) })
    }

    /// Settles every shard that needs it and is not known to be down.
    pub async fn settle(&self) {
        self.shared.resolve_pending().await;
    }

    /// Shards still to settle.
    pub fn unsettled(&self) -> Vec<u32> {
        self.shared.unresolved.lock().iter().copied().collect()
    }

    fn now(&mut self) -> u64 {
        let clock = self.shared.now();
        self.last_now = self.last_now.max(clock);
        self.last_now
    }

    /// Runs one batch as one round; returns one outcome per transaction.
    pub async fn run(&mut self, transactions: Vec<SignedTransaction>) -> Vec<Outcome> {
        let verdicts = verify(transactions.clone()).await;
        self.run_verified(transactions, verdicts).await
    }

    /// Runs a batch whose signatures were checked already (`verdicts` from `verify_all`).
    pub async fn run_verified(
        &mut self,
        transactions: Vec<SignedTransaction>,
        verdicts: Vec<Option<Reason>>,
    ) -> Vec<Outcome> {
        assert_eq!(transactions.len(), verdicts.len(), "one verdict per transaction");
        let shared = self.shared.clone();
        let shard_count = shared.genesis.shards;
        let mut outcomes: Vec<Option<Outcome>> =
            verdicts.iter().map(|v| v.map(|reason| Outcome::Done(TxResult::Rejected(reason)))).collect();
        // A repeated id within the batch gets the first occurrence's outcome if it is the same
        // transaction, and is refused as a conflict if its body differs.
        let mut first: HashMap<TxId, usize> = HashMap::new();
        let mut repeat_of: Vec<(usize, usize)> = Vec::new();
        for (position, transaction) in transactions.iter().enumerate() {
            if outcomes[position].is_some() {
                continue;
            }
            match first.get(&transaction.id()) {
                Some(&earlier) if transactions[earlier].digest() == transaction.digest() => {
                    repeat_of.push((position, earlier))
                }
                Some(_) => outcomes[position] = Some(Outcome::Done(TxResult::Rejected(Reason::Conflict))),
                None => {
                    first.insert(transaction.id(), position);
                }
            }
        }
        shared.resolve_pending().await;
        let unavailable: Vec<bool> = {
            let unresolved = shared.unresolved.lock();
            (0..shard_count).map(|shard| shared.down(shard) || unresolved.contains(&shard)).collect()
        };

        // Candidates: verified, first of their id, and every shard reachable. An id is unique on
        // the whole ledger, as in the embedded engine, but the shard that recorded it may be
        // any (a different body under the same id lands where its own keys do), so every
        // shard is asked about every candidate (`Request::Admit`): a shard that holds its id
        // answers its first result or a conflict; every shard refuses alike what may not reach
        // the rules. What holds an id wins over a refusal, as in the embedded engine, which
        // looks up an id before admitting it.
        let mut candidates: Vec<usize> = first.values().copied().collect();
        candidates.sort_unstable();
        if unavailable.iter().any(|&down| down) {
            for &position in &candidates {
                outcomes[position] = Some(Outcome::Unavailable);
            }
            candidates.clear();
        }
        let now = self.now();
        let mut unasked = Vec::new();
        let mut calls = tokio::task::JoinSet::new();
        let entries: Vec<Admission> = candidates.iter().map(|&p| Admission::of(&transactions[p])).collect();
        for shard in (0..shard_count).filter(|_| !candidates.is_empty()) {
            let entries = entries.clone();
            let shared = shared.clone();
            calls.spawn(async move { shared.at_shard(shard, Request::Admit { now, entries }).await });
        }
        let holds_id = |result: TxResult| result.is_recorded() || result == TxResult::Rejected(Reason::Conflict);
        while let Some(joined) = calls.join_next().await {
            match joined.expect("a shard call does not panic") {
                Ok(Response::Lookup(found)) if found.len() == candidates.len() => {
                    for (&position, known) in candidates.iter().zip(found) {
                        let Some(result) = known else { continue };
                        let settled = matches!(outcomes[position], Some(Outcome::Done(earlier)) if holds_id(earlier));
                        if !settled {
                            outcomes[position] = Some(Outcome::Done(result));
                        }
                    }
                }
                _ => unasked.extend(candidates.iter().copied()),
            }
        }
        // Not known to be new: wait for the shard that could not say.
        for position in unasked {
            outcomes[position].get_or_insert(Outcome::Unavailable);
        }
        candidates.retain(|&p| outcomes[p].is_none());

        if !candidates.is_empty() {
            if let Err(error) = self.round(&transactions, &candidates, now, &mut outcomes).await {
                eprintln!("round failed: {error}");
                for &p in &candidates {
                    if outcomes[p].is_none() {
                        outcomes[p] = Some(Outcome::Unavailable);
                    }
                }
            }
        }
        for (position, earlier) in repeat_of {
            outcomes[position] = outcomes[earlier];
        }
        outcomes.into_iter().map(|o| o.unwrap_or(Outcome::Unavailable)).collect()
    }

    /// One round across the shards: singles to their shards, prepares, votes, the logged
    /// decisions, the decide messages and the checkpoint. Long because it is the protocol's one
    /// sequence of steps, in the order the invariants require (log before decide); splitting it
    /// would hide that order across functions.
    async fn round(
        &mut self,
        transactions: &[SignedTransaction],
        candidates: &[usize],
        now: u64,
        outcomes: &mut [Option<Outcome>],
    ) -> Result<(), String> {
        let shared = self.shared.clone();
        let shard_count = shared.genesis.shards;
        let round_transactions: Vec<SignedTransaction> = candidates.iter().map(|&p| transactions[p].clone()).collect();
        let round = shared.next_round()?;
        let (singles, cross) = split(&round_transactions, shard_count);
        let mut coordinator = Coordinator::new(
            round,
            cross.iter().map(|(p, touched)| (round_transactions[*p].clone(), touched.clone())).collect(),
        );
        let mut requests: Vec<RoundRequest> = (0..shard_count)
            .map(|shard| RoundRequest {
                round,
                now,
                singles: singles[shard as usize].iter().map(|&p| round_transactions[p].clone()).collect(),
                prepares: Vec::new(),
            })
            .collect();
        for action in coordinator.start() {
            if let Action::Send(Message::Prepare { shard, transactions, .. }) = action {
                requests[shard as usize].prepares = transactions;
            }
        }
        let mut calls = tokio::task::JoinSet::new();
        for (shard, request) in requests.into_iter().enumerate() {
            if request.singles.is_empty() && request.prepares.is_empty() {
                continue;
            }
            let shared = shared.clone();
            calls.spawn(async move {
                let expected = (request.singles.len(), request.prepares.len());
                let answer = shared.at_shard(shard as u32, Request::Round(request)).await;
                (shard as u32, expected, answer)
            });
        }
        let mut actions = Vec::new();
        let mut silent = BTreeSet::new();
        while let Some(joined) = calls.join_next().await {
            let (shard, (single_count, prepare_count), answer) = joined.expect("a shard call does not panic");
            match answer {
                Ok(Response::RoundReply(reply))
                    if reply.round == round
                        && reply.results.len() == single_count
                        && reply.votes.len() == prepare_count =>
                {
                    for (&p, result) in singles[shard as usize].iter().zip(&reply.results) {
                        outcomes[candidates[p]] = Some(Outcome::Done(*result));
                    }
                    if let Some(head) = reply.sealed {
                        shared.heads.lock()[shard as usize] = head;
                    }
                    if prepare_count > 0 {
                        actions.extend(coordinator.on_votes(round, shard, reply.votes));
                    }
                }
                other => {
                    if let Ok(response) = other {
                        eprintln!("shard {shard} refused round {round}: {response:?}");
                    }
                    shared.unresolved.lock().insert(shard);
                    silent.insert(shard);
                    for &p in &singles[shard as usize] {
                        outcomes[candidates[p]] = Some(Outcome::Unavailable);
                    }
                    if prepare_count > 0 {
                        let votes = vec![Err(Reason::ParticipantUnavailable); prepare_count];
                        actions.extend(coordinator.on_votes(round, shard, votes));
                    }
                }
            }
        }
        failpoint("after-votes", round);
        // Log the decisions, then tell the participants.
        while !actions.is_empty() {
            let mut decides = Vec::new();
            let mut next = Vec::new();
            for action in actions {
                match action {
                    Action::LogDecisions { round, decisions } => {
                        shared
                            .store
                            .lock()
                            .log_decisions(round, &decisions)
                            .map_err(|e| format!("logging the decisions of round {round}: {e}"))?;
                        failpoint("after-log", round);
                        next.extend(coordinator.decisions_logged(round));
                    }
                    Action::Send(Message::Decide { shard, decisions, .. }) => decides.push((shard, decisions)),
                    Action::Send(Message::Prepare { .. }) => unreachable!("every prepare went out with the round"),
                }
            }
            let mut calls = tokio::task::JoinSet::new();
            for (shard, decisions) in decides {
                let shared = shared.clone();
                calls.spawn(async move { (shard, shared.at_shard(shard, Request::Decide { round, decisions }).await) });
            }
            while let Some(joined) = calls.join_next().await {
                let (shard, answer) = joined.expect("a shard call does not panic");
                match answer {
                    Ok(Response::Decided(head)) => {
                        shared.heads.lock()[shard as usize] = head;
                        coordinator.on_acknowledged(round, shard);
                    }
                    // The decision is logged: the shard hears it again when it is settled.
                    _ => {
                        shared.unresolved.lock().insert(shard);
                    }
                }
            }
            actions = next;
        }
        if let Some(results) = coordinator.results() {
            for ((p, touched), result) in cross.iter().zip(results) {
                // Aborted for a participant that did not answer: that one may never have heard
                // of it, so only a repeat (which asks every participant) can give the durable
                // answer. Everything else is decided and logged.
                let outcome = if touched.iter().any(|s| silent.contains(s)) {
                    Outcome::Unavailable
                } else {
                    Outcome::Done(*result)
                };
                outcomes[candidates[*p]] = Some(outcome);
            }
        }
        let checkpoint = {
            let store = shared.store.lock();
            Checkpoint {
                round,
                previous: store.checkpoint().map_or_else(|| shared.genesis.hash(), Checkpoint::hash),
                heads: shared.heads.lock().clone(),
            }
        };
        shared
            .store
            .lock()
            .record_checkpoint(checkpoint)
            .map_err(|e| format!("recording the checkpoint of round {round}: {e}"))?;
        Ok(())
    }
}

/// Checks a batch's signatures on the blocking pool (rayon inside).
async fn verify(transactions: Vec<SignedTransaction>) -> Vec<Option<Reason>> {
    tokio::task::spawn_blocking(move || verify_all(&transactions)).await.expect("verification does not panic")
}

/// Crash tests stop the process at a chosen point: `CADUCEUS_FAILPOINT=after-votes:ROUND` (all
/// votes in, nothing decided) or `after-log:ROUND` (decisions logged, none sent).
fn failpoint(name: &str, round: u64) {
    if std::env::var("CADUCEUS_FAILPOINT").is_ok_and(|spec| spec == format!("{name}:{round}")) {
        eprintln!("failpoint {name}:{round}: stopping the process");
        std::process::abort();
    }
}

pub(crate) struct Job {
    transactions: Vec<SignedTransaction>,
    reply: oneshot::Sender<Vec<Outcome>>,
}

/// Runs a batch through the round driver: its outcomes, or the answer to give instead.
pub(crate) async fn run_job(
    jobs: &mpsc::Sender<Job>,
    transactions: Vec<SignedTransaction>,
) -> Result<Vec<Outcome>, Response> {
    let shutting_down = || Response::error(error_code::UNAVAILABLE, "the coordinator is shutting down");
    let (reply, answer) = oneshot::channel();
    match jobs.try_send(Job { transactions, reply }) {
        Ok(()) => answer.await.map_err(|_| shutting_down()),
        Err(mpsc::error::TrySendError::Full(_)) => Err(Response::Busy),
        Err(mpsc::error::TrySendError::Closed(_)) => Err(shutting_down()),
    }
}

/// Opens the coordinator's log, connects to the shard servers, and serves clients until
/// `shutdown` resolves.
pub async fn serve(config: NodeConfig, shutdown: impl std::future::Future<Output = ()>) -> Result<()> {
    let genesis = config.genesis()?;
    std::fs::create_dir_all(&config.data).with_context(|| format!("creating {}", config.data.display()))?;
    let storage =
        Arc::new(RocksStorage::open(&config.data).with_context(|| format!("opening {}", config.data.display()))?);
    let store = CoordinatorStore::open(storage, &genesis).context("opening the coordinator's log")?;
    let mut link_of = vec![0; genesis.shards as usize];
    let links: Vec<Arc<Link>> = config
        .shard_servers
        .iter()
        .enumerate()
        .map(|(index, server)| {
            server.ids.iter().for_each(|&id| link_of[id as usize] = index);
            Arc::new(Link { name: server.name.clone(), address: server.address, connection: Mutex::new(None) })
        })
        .collect();
    let mut endpoint = quinn::Endpoint::client("0.0.0.0:0".parse().expect("an address"))?;
    endpoint.set_default_client_config(tls::client(tls::roots(&config.ca)?, Some(config.identity()?))?);
    let probers: Vec<_> = links.iter().map(|link| tokio::spawn(link.clone().probe(endpoint.clone()))).collect();
    // Give the first connections a moment, so the first settlement finds the servers that are up.
    for _ in 0..20 {
        if links.iter().all(|l| l.connection.lock().is_some()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The probers' handles keep the endpoint open.
    let transport = Box::new(QuicTransport { links, link_of });
    let mut rounds = RoundDriver::open(store, transport, config.fixed_time).await.map_err(anyhow::Error::msg)?;
    let shared = rounds.shared.clone();
    // Submitted batches are verified while the round before them runs: a bounded queue in,
    // one verified batch waiting at most.
    let (jobs, mut queue) = mpsc::channel::<Job>(SUBMIT_QUEUE_DEPTH);
    let (verified_sender, mut verified) = mpsc::channel::<(Job, Vec<Option<Reason>>)>(1);
    let verifier = tokio::spawn(async move {
        while let Some(job) = queue.recv().await {
            let verdicts = verify(job.transactions.clone()).await;
            if verified_sender.send((job, verdicts)).await.is_err() {
                break;
            }
        }
    });
    let driver = tokio::spawn(async move {
        loop {
            match tokio::time::timeout(RETRY_AFTER, verified.recv()).await {
                Ok(Some((job, verdicts))) => {
                    let outcomes = rounds.run_verified(job.transactions, verdicts).await;
                    let _ = job.reply.send(outcomes);
                }
                Ok(None) => break,
                // Idle: settle shards that came back. Only this task settles shards, so a
                // settlement never races a round in flight.
                Err(_) => rounds.shared.resolve_pending().await,
            }
        }
    });

    let store = PayloadStore::beside(&config.data).context("opening the payload store")?;
    let payloads = Payloads::new(store, shared.clone(), jobs.clone());
    let settler = tokio::spawn(payloads.clone().settle());

    let server = tls::server(config.identity()?, None)?;
    let client_endpoint =
        quinn::Endpoint::server(server, config.listen).with_context(|| format!("binding {}", config.listen))?;
    // Said once the port is bound, so whoever starts the node knows it took its port.
    eprintln!("{}: listening on {}", config.name, client_endpoint.local_addr()?);
    let handle = {
        let shared = shared.clone();
        Arc::new(move |request: Request| {
            let shared = shared.clone();
            let jobs = jobs.clone();
            let payloads = payloads.clone();
            async move { handle(&shared, &jobs, &payloads, request).await }
        })
    };
    rpc::serve_endpoint(&client_endpoint, handle, None, shutdown).await;
    driver.abort();
    verifier.abort();
    settler.abort();
    probers.iter().for_each(tokio::task::JoinHandle::abort);
    Ok(())
}

async fn handle(shared: &Arc<Shared>, jobs: &mpsc::Sender<Job>, payloads: &Payloads, request: Request) -> Response {
    match request {
        Request::Submit(transactions) => {
            if transactions.is_empty() {
                return Response::Results(Vec::new());
            }
            if transactions.len() > BATCH_TRANSACTIONS_MAX {
                let detail = format!("a batch holds at most {BATCH_TRANSACTIONS_MAX} transactions");
                return Response::error(error_code::BATCH_TOO_LARGE, detail);
            }
            // An erasure is marked in the payload store before its round, and shredded before
            // the batch is answered.
            let erasures = match payloads.mark(&transactions).await {
                Ok(erasures) => erasures,
                Err(refused) => return refused,
            };
            match run_job(jobs, transactions).await {
                Ok(outcomes) => {
                    if !erasures.is_empty() {
                        payloads.shred(erasures, &outcomes).await;
                    }
                    Response::Results(outcomes)
                }
                Err(answer) => answer,
            }
        }
        // A client's reads are answered only when signed by a registered actor allowed to read
        // what they reveal (`caduceus_engine::authority`); without a credential, a client gets
        // health and checkpoints.
        read if read.is_signed_read() => Response::error(
            error_code::UNAUTHENTICATED,
            "reads are answered only when signed by a registered actor: health and checkpoints are anyone's",
        ),
        Request::Signed { credential, request } => signed_read(shared, jobs, payloads, credential, *request).await,
        Request::Checkpoint => Response::Checkpoint(shared.store.lock().checkpoint().cloned()),
        Request::CheckpointAt(round) => match shared.store.lock().checkpoint_at(round) {
            Ok(checkpoint) => Response::Checkpoint(checkpoint),
            Err(e) => Response::error(error_code::STORAGE, e),
        },
        Request::Health => {
            let down: Vec<u32> = (0..shared.genesis.shards).filter(|&s| shared.down(s)).collect();
            let unresolved = shared.unresolved.lock().len();
            let round = shared.store.lock().checkpoint().map_or(0, |c| c.round);
            let state = if down.is_empty() && unresolved == 0 { "healthy" } else { "degraded" };
            Response::Health {
                role: "coordinator".into(),
                detail: format!(
                    "{state}: {} shards, down {down:?}, {unresolved} to settle, last round {round}",
                    shared.genesis.shards
                ),
            }
        }
        _ => Response::error(error_code::NOT_HERE, "not a client request"),
    }
}

/// Most signed reads remembered at once (each for `CLOCK_SKEW_MS` either side of its time);
/// past it, reads are answered "busy" until older ones leave the window.
const READS_PER_READER_MAX: usize = 1 << 16;

/// One reader's signed reads still within the window: their nonces, and when each leaves it, in
/// arrival order (so the oldest are dropped from the front, a few at a time).
#[derive(Default)]
struct SeenReads {
    nonces: std::collections::HashSet<u64>,
    order: std::collections::VecDeque<(u64, u64)>,
}

impl SeenReads {
    /// Notes a read; the refusal if its nonce was seen within the window, "busy" if the reader
    /// has `READS_PER_READER_MAX` reads in the window (it alone is slowed).
    fn note(&mut self, nonce: u64, leaves: u64, now: u64) -> Option<Response> {
        while self.order.front().is_some_and(|(gone, _)| *gone < now) {
            let (_, old) = self.order.pop_front().expect("a front entry");
            self.nonces.remove(&old);
        }
        if self.nonces.contains(&nonce) {
            return Some(unauthenticated("this signed read was answered before: sign each read anew"));
        }
        if self.order.len() >= READS_PER_READER_MAX {
            return Some(Response::Busy);
        }
        self.nonces.insert(nonce);
        self.order.push_back((leaves, nonce));
        None
    }
}

fn unauthenticated(detail: &str) -> Response {
    Response::error(error_code::UNAUTHENTICATED, detail)
}

/// Authenticates a signed read, then answers it if the reader may read what it reveals.
async fn signed_read(
    shared: &Arc<Shared>,
    jobs: &mpsc::Sender<Job>,
    payloads: &Payloads,
    credential: Credential,
    request: Request,
) -> Response {
    let now = shared.now();
    if credential.timestamp.abs_diff(now) > CLOCK_SKEW_MS {
        return unauthenticated("the read was signed more than 5 minutes from the coordinator's time: sign it anew");
    }
    let reader = credential.reader;
    let actor = match query_cluster(shared, Query::Actor(reader)).await {
        Response::Answer(Answer::Actor(Some(actor))) if actor.revoked_at.is_none() => actor,
        Response::Answer(Answer::Actor(_)) => {
            return unauthenticated("the reader is not a registered, unrevoked actor")
        }
        other => return other,
    };
    let Some(message) = credential.verified(&actor.key.unwrap_or(reader), &request) else {
        return unauthenticated("the read's signature does not check against the reader's current key");
    };
    {
        let mut seen = shared.reads_seen.lock();
        let leaves = credential.timestamp + CLOCK_SKEW_MS;
        if let Some(refused) = seen.entry(reader).or_default().note(credential.nonce, leaves, now) {
            return refused;
        }
    }
    let role = actor.role;
    if role == Role::Auditor && Credential::logged(&request) {
        if let Err(refused) = log_audit(jobs, shared, &credential, &message, &request).await {
            return refused;
        }
    }
    let forbidden = || Response::error(error_code::FORBIDDEN, format!("a {role} may not read this"));
    match request {
        Request::Query(query) => authorized_query(shared, &reader, role, query).await,
        Request::Prove(id) => match prove(shared, id).await {
            Response::Proof(Some(proof))
                if !may_read(&reader, role, &Subject::Transaction(&proof.transaction.transaction)) =>
            {
                forbidden()
            }
            answer => answer,
        },
        // Results only, by id: anyone registered may learn whether an id was recorded.
        Request::Lookup(ids) => lookup(shared, ids).await,
        Request::PutPayload { patient, record, payload } => payloads.put(&reader, role, patient, record, payload).await,
        Request::ReadPayload(access) => payloads.read(&reader, access).await,
        _ => Response::error(error_code::NOT_HERE, "only reads are signed"),
    }
}

/// Commits an auditor's `audit-read` before its read is answered, so every auditor's read is on
/// the ledger (and in the report of the actor whose data it reads).
async fn log_audit(
    jobs: &mpsc::Sender<Job>,
    shared: &Arc<Shared>,
    credential: &Credential,
    message: &[u8],
    request: &Request,
) -> Result<(), Response> {
    let forbidden = |detail: String| Response::error(error_code::FORBIDDEN, detail);
    let reader = &credential.reader;
    let audit = credential
        .audit
        .clone()
        .ok_or_else(|| forbidden("an auditor's read is logged first: attach its audit-read transaction".into()))?;
    // Bound to this credential (its nonce and time): one audit-read logs one read.
    let digest = Credential::digest(message);
    let names_this_read = matches!(&audit.transaction.operation,
        Operation::AuditRead { read, subject } if *read == digest && *subject == Credential::subject_of(request));
    if audit.transaction.signer != *reader || !names_this_read {
        return Err(forbidden("the audit-read does not name this read, its subject, or its reader".into()));
    }
    // A new one: the ledger answers a repeat with its first result and logs nothing more.
    match lookup(shared, vec![audit.id()]).await {
        Response::Lookup(found) if found.iter().all(Option::is_none) => {}
        Response::Lookup(_) => return Err(forbidden("this audit-read was used before: sign each read anew".into())),
        other => return Err(other),
    }
    match run_job(jobs, vec![audit]).await?.into_iter().next() {
        Some(Outcome::Done(TxResult::Committed)) => Ok(()),
        Some(Outcome::Done(TxResult::Rejected(reason))) => {
            Err(forbidden(format!("the audit-read was refused: {reason}")))
        }
        _ => Err(Response::error(error_code::UNAVAILABLE, "the audit-read could not be logged now")),
    }
}

/// Answers a query if the reader may read what the answer reveals.
async fn authorized_query(shared: &Arc<Shared>, reader: &ActorKey, role: Role, query: Query) -> Response {
    let forbidden = || Response::error(error_code::FORBIDDEN, format!("a {role} may not read this"));
    // Decided before reading where the question names the owner.
    let before = match &query {
        Query::AccessReport(patient, ..) | Query::Records(patient, ..) | Query::Consents(patient, ..) => {
            Some(Subject::Patient { patient })
        }
        Query::Account(owner) => Some(Subject::Account { owner }),
        Query::Actor(_) | Query::Unit(_) | Query::Totals | Query::Study(_) | Query::Credential(_) => {
            Some(Subject::Public)
        }
        Query::Claim(..) | Query::Record(..) | Query::Custody(..) | Query::Transaction(_) | Query::Enrolment(..) => {
            None
        }
    };
    if let Some(subject) = before {
        return if may_read(reader, role, &subject) { query_cluster(shared, query).await } else { forbidden() };
    }
    let custody_unit = match &query {
        Query::Custody(unit, ..) => Some(unit.clone()),
        _ => None,
    };
    let patient = match &query {
        Query::Claim(patient, _) | Query::Record(patient, _) | Query::Enrolment(patient, _) => Some(*patient),
        _ => None,
    };
    // An enrolment is its patient's and its study's investigator's.
    let investigator = match &query {
        Query::Enrolment(_, study) => match query_cluster(shared, Query::Study(*study)).await {
            Response::Answer(Answer::Study(study)) => study.map(|s| s.investigator),
            other => return other,
        },
        _ => None,
    };
    let answer = query_cluster(shared, query).await;
    let allowed = match &answer {
        Response::Answer(Answer::Claim(Some(claim))) => may_read(reader, role, &Subject::Claim(claim)),
        Response::Answer(Answer::Record(Some(record))) => may_read(reader, role, &Subject::Record(record)),
        Response::Answer(Answer::Enrolment(_)) if investigator.is_some() => {
            let (patient, investigator) =
                (patient.expect("an enrolment names its patient"), investigator.expect("some"));
            may_read(reader, role, &Subject::Enrolment { patient: &patient, investigator: &investigator })
        }
        // That a claim, record or enrolment does not exist is the patient's to learn.
        Response::Answer(Answer::Claim(None) | Answer::Record(None) | Answer::Enrolment(_)) => {
            patient.is_some_and(|patient| may_read(reader, role, &Subject::Patient { patient: &patient }))
        }
        Response::Answer(Answer::Transaction(Some((transaction, _)))) => {
            may_read(reader, role, &Subject::Transaction(&transaction.transaction))
        }
        Response::Answer(Answer::Custody(page)) => {
            let mut current = None;
            if let Some(unit) = custody_unit {
                if let Response::Answer(Answer::Unit(unit, _)) = query_cluster(shared, Query::Unit(unit)).await {
                    current = unit;
                }
            }
            let holders = custody_holders(&page.entries, current.as_ref());
            may_read(reader, role, &Subject::Custody { holders: &holders })
        }
        _ => true, // nothing found, or an error
    };
    if allowed {
        answer
    } else {
        forbidden()
    }
}

async fn prove(shared: &Arc<Shared>, id: TxId) -> Response {
    for answer in shared.all_shards(Request::Prove(id)).await {
        if let Ok(Response::Proof(Some(mut proof))) = answer {
            let (shard, height, round) = (proof.header.shard, proof.header.height, proof.header.round);
            let checkpoint = shared.store.lock().checkpoint_holding(shard, height, round);
            return match checkpoint {
                Ok(Some(checkpoint)) => match complete_proof(&mut proof, &checkpoint) {
                    Ok(()) => Response::Proof(Some(proof)),
                    Err(e) => Response::error(error_code::STORAGE, e),
                },
                Ok(None) => Response::error(
                    error_code::STORAGE,
                    format!("no checkpoint holds block {height} of shard {shard} yet"),
                ),
                Err(e) => Response::error(error_code::STORAGE, e),
            };
        }
    }
    Response::Proof(None)
}

/// Where each id is recorded, from every shard's transaction index.
pub(crate) async fn lookup(shared: &Arc<Shared>, ids: Vec<TxId>) -> Response {
    let mut found: Vec<Option<TxResult>> = vec![None; ids.len()];
    for answer in shared.all_shards(Request::Lookup(ids)).await {
        match answer {
            Ok(Response::Lookup(results)) if results.len() == found.len() => {
                for (slot, result) in found.iter_mut().zip(results) {
                    *slot = slot.or(result);
                }
            }
            Ok(other) => return other,
            Err(e) => return Response::error(error_code::UNAVAILABLE, e),
        }
    }
    Response::Lookup(found)
}

pub(crate) async fn query_cluster(shared: &Arc<Shared>, query: Query) -> Response {
    let shards = shared.genesis.shards;
    let shard = match &query {
        Query::Actor(_) | Query::Study(_) => Some(0),
        Query::Credential(id) => Some(shard_of_credential(*id, shards)),
        Query::Account(owner) => Some(shard_of_actor(owner, shards)),
        Query::Claim(patient, _)
        | Query::AccessReport(patient, ..)
        | Query::Record(patient, _)
        | Query::Records(patient, ..)
        | Query::Consents(patient, ..)
        | Query::Enrolment(patient, _) => Some(shard_of_actor(patient, shards)),
        Query::Unit(unit) | Query::Custody(unit, ..) => Some(shard_of_unit(unit, shards)),
        Query::Transaction(_) | Query::Totals => None,
    };
    if let Some(shard) = shard {
        return shared
            .at_shard(shard, Request::Query(query))
            .await
            .unwrap_or_else(|e| Response::error(error_code::UNAVAILABLE, e));
    }
    let answers = shared.all_shards(Request::Query(query.clone())).await;
    let mut hasher = blake3::Hasher::new();
    let (mut balances, mut funded) = (0u128, 0u128);
    for answer in answers {
        match answer {
            Ok(Response::Answer(Answer::Transaction(Some(found)))) => {
                return Response::Answer(Answer::Transaction(Some(found)))
            }
            Ok(Response::Answer(Answer::Transaction(None))) => {}
            Ok(Response::Answer(Answer::Totals(hash, b, f))) => {
                hasher.update(&hash);
                balances += b;
                funded += f;
            }
            Ok(other) => return other,
            Err(e) => return Response::error(error_code::UNAVAILABLE, e),
        }
    }
    match query {
        Query::Totals => Response::Answer(Answer::Totals(*hasher.finalize().as_bytes(), balances, funded)),
        _ => Response::Answer(Answer::Transaction(None)),
    }
}
