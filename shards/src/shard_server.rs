//! `caduceus shard`: serves one or more shards to the coordinator over QUIC.
//!
//! Each shard is a `Participant` on its own RocksDB store. Only peers with a
//! certificate from the cluster CA are accepted (the coordinator); they are
//! trusted to have verified signatures, so nothing is verified again here.
//! A participant's work (execution, fsync) runs on blocking threads, one
//! request at a time per shard.

use std::collections::BTreeMap;
use std::sync::Arc;

use anyhow::{Context, Result};
use caduceus_engine::participant::{Participant, ParticipantError};
use caduceus_engine::reads;
use caduceus_engine::storage::RocksStorage;
use parking_lot::Mutex;

use super::config::NodeConfig;
use super::wire::{error_code, Answer, Query, Request, Response};
use super::{rpc, tls};

type Shards = BTreeMap<u32, Arc<Mutex<Participant>>>;

/// Opens every shard's store (recovering prepared rounds) and serves until `shutdown` resolves.
pub async fn serve(config: NodeConfig, shutdown: impl std::future::Future<Output = ()>) -> Result<()> {
    let genesis = config.genesis()?;
    let mut shards = Shards::new();
    for &id in &config.ids {
        let path = config.shard_store(id);
        std::fs::create_dir_all(&path).with_context(|| format!("creating {}", path.display()))?;
        let storage = Arc::new(RocksStorage::open(&path).with_context(|| format!("opening {}", path.display()))?);
        let participant = Participant::open(storage, &genesis, id).with_context(|| format!("opening shard {id}"))?;
        if let Some((round, ids)) = participant.status().pending {
            let count = ids.len();
            eprintln!("shard {id}: round {round} is prepared ({count} transactions) and waits for its decision");
        }
        shards.insert(id, Arc::new(Mutex::new(participant)));
    }
    let server = tls::server(config.identity()?, Some(tls::roots(&config.ca)?))?;
    let endpoint =
        quinn::Endpoint::server(server, config.listen).with_context(|| format!("binding {}", config.listen))?;
    // Said once the port is bound, so whoever starts the node knows it took its port.
    eprintln!("{}: listening on {}", config.name, endpoint.local_addr()?);
    let shards = Arc::new(shards);
    let name = config.name.clone();
    let handle = Arc::new(move |request: Request| {
        let shards = shards.clone();
        let name = name.clone();
        async move { handle(&shards, &name, request).await }
    });
    // A peer without a certificate from the cluster CA fails the handshake; one whose
    // certificate is not the coordinator's (another shard server's, say) is closed at once.
    rpc::serve_endpoint(&endpoint, handle, Some(tls::COORDINATOR_NAME), shutdown).await;
    Ok(())
}

async fn handle(shards: &Shards, name: &str, request: Request) -> Response {
    let (shard, request) = match request {
        Request::Health => {
            let detail = shards
                .iter()
                .map(|(id, p)| {
                    let status = p.lock().status();
                    format!("shard {id} height {} round {}", status.head.height, status.head.round)
                })
                .collect::<Vec<_>>()
                .join("; ");
            return Response::Health { role: format!("shard server {name}"), detail };
        }
        Request::AtShard { shard, request } => (shard, *request),
        _ => return Response::error(error_code::NOT_HERE, "a shard server takes shard requests from the coordinator"),
    };
    let Some(participant) = shards.get(&shard).cloned() else {
        return Response::error(error_code::NOT_HERE, format!("shard {shard} is not served here"));
    };
    let is_round = matches!(request, Request::Round(_));
    let response = tokio::task::spawn_blocking(move || {
        let mut participant = participant.lock();
        serve_one(&mut participant, request)
    })
    .await
    .unwrap_or_else(|panic| std::panic::resume_unwind(panic.into_panic()));
    if is_round {
        failpoint_after_round();
    }
    response
}

/// Rounds this process has handled, for the failpoint.
static ROUNDS_HANDLED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Crash tests stop a shard server with a round in flight: `CADUCEUS_FAILPOINT=after-round:N`
/// aborts once the Nth round this process handles is durable, before its reply is sent.
fn failpoint_after_round() {
    let handled = ROUNDS_HANDLED.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
    if std::env::var("CADUCEUS_FAILPOINT").is_ok_and(|spec| spec == format!("after-round:{handled}")) {
        eprintln!("failpoint after-round:{handled}: stopping the process");
        std::process::abort();
    }
}

fn participant_error(error: ParticipantError) -> Response {
    let code = match error {
        ParticipantError::Storage(_) => error_code::STORAGE,
        _ => error_code::PROTOCOL,
    };
    Response::error(code, error)
}

/// Answers one request for one participant: what a shard server does with each stream.
pub fn serve_one(participant: &mut Participant, request: Request) -> Response {
    let query_error = |e: caduceus_engine::QueryError| Response::error(error_code::STORAGE, e);
    match request {
        Request::Round(request) => participant.round(request).map_or_else(participant_error, Response::RoundReply),
        Request::Decide { round, decisions } => {
            participant.decide(round, &decisions).map_or_else(participant_error, Response::Decided)
        }
        Request::Status => Response::Status(participant.status()),
        Request::Lookup(ids) => {
            participant.lookup(&ids).map_or_else(|e| Response::error(error_code::STORAGE, e), Response::Lookup)
        }
        Request::Admit { now, entries } => {
            participant.admit(now, &entries).map_or_else(|e| Response::error(error_code::STORAGE, e), Response::Lookup)
        }
        Request::Prove(id) => reads::prove_in_block(participant.storage().as_ref(), id)
            .map_or_else(query_error, |p| Response::Proof(p.map(Box::new))),
        Request::Query(query) => {
            let state = participant.shard().state();
            let storage = participant.storage().as_ref();
            let answer = match query {
                Query::Actor(key) => Answer::Actor(state.actors.get(&key).cloned()),
                Query::Account(owner) => Answer::Account(state.accounts.get(&owner).copied()),
                Query::Claim(patient, claim) => Answer::Claim(state.claims.get(&(patient, claim)).cloned()),
                Query::Unit(unit) => {
                    let current = state.units.get(&unit).cloned();
                    let recall = current.as_ref().and_then(|u| state.recalls.get(&(unit.gtin, u.lot.clone())).cloned());
                    Answer::Unit(current, recall)
                }
                Query::AccessReport(patient, before, limit) => {
                    match reads::access_report(storage, &patient, before, limit as usize) {
                        Ok(page) => Answer::AccessReport(page),
                        Err(e) => return query_error(e),
                    }
                }
                Query::Custody(unit, before, limit) => {
                    match reads::custody_trace(storage, &unit, before, limit as usize) {
                        Ok(page) => Answer::Custody(page),
                        Err(e) => return query_error(e),
                    }
                }
                Query::Transaction(id) => match reads::transaction(storage, id) {
                    Ok(found) => Answer::Transaction(found),
                    Err(e) => return query_error(e),
                },
                Query::Totals => {
                    let (balances, funded) = participant.shard().fund_totals();
                    Answer::Totals(state.hash(), balances, funded)
                }
                Query::Record(patient, record) => Answer::Record(state.records.get(&(patient, record)).cloned()),
                Query::Records(patient, after, limit) => {
                    let kind = reads::PatientEntries::Records;
                    match reads::patient_entries(storage, participant.id(), &patient, kind, after, limit as usize) {
                        Ok(listing) => Answer::Records(listing),
                        Err(e) => return query_error(e),
                    }
                }
                Query::Consents(patient, after, limit) => {
                    let kind = reads::PatientEntries::Consents;
                    match reads::patient_entries(storage, participant.id(), &patient, kind, after, limit as usize) {
                        Ok(listing) => Answer::Consents(listing),
                        Err(e) => return query_error(e),
                    }
                }
                Query::Study(study) => Answer::Study(state.studies.get(&study).cloned()),
                Query::Enrolment(patient, study) => Answer::Enrolment(state.enrolments.get(&(patient, study)).cloned()),
                Query::Credential(id) => Answer::Credential(state.credentials.get(&id).cloned()),
            };
            Response::Answer(answer)
        }
        _ => Response::error(error_code::NOT_HERE, "not a shard request"),
    }
}
