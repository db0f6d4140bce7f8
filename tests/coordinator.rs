//! A deterministic simulation of batched two-phase commit between the
//! coordinator and shard state machines, with no sockets: messages are
//! dropped, duplicated and reordered, and the coordinator crashes and
//! recovers from its decision log. After every step no transaction may be
//! committed on one shard and aborted on another; at the end every
//! transaction is decided everywhere, nothing is left in doubt, and funds
//! are conserved. Each seed is one scenario.

use std::collections::VecDeque;

use caduceus_engine::coordinator::{Action, Coordinator, Message};
use caduceus_engine::model::{Adjudication, ClaimLine, Operation, Role, TxResult};
use caduceus_engine::round::{execute_round, Genesis};
use caduceus_engine::routing::participants;
use caduceus_engine::shard::{Reply, Shard};
use caduceus_engine::SignedTransaction;
use caduceus_workload::Rng;

use crate::support::{submit_claim, Actor, World, START};

const SHARDS: u32 = 3;

struct Scenario {
    world: World,
    patients: Vec<Actor>,
    shards: Vec<Shard>,
    payments: Vec<(SignedTransaction, Vec<u32>)>,
}

fn scenario(rng: &mut Rng) -> Scenario {
    let world = World::new();
    let patients: Vec<Actor> = (0..8).map(|i| Actor::new(&format!("simulated patient {i}"))).collect();
    let mut shards = Genesis { shards: SHARDS, operators: vec![world.operator.id], quorum: 1 }.shards();
    let register = |actor: &Actor, role: Role| {
        world.tx(&world.operator, Operation::RegisterActor { actor: actor.id, role, prefixes: Vec::new() })
    };
    let mut round1: Vec<SignedTransaction> = patients.iter().map(|p| register(p, Role::Patient)).collect();
    round1.extend([
        register(&world.doctor, Role::Provider),
        register(&world.nurse, Role::Provider),
        register(&world.payer, Role::Payer),
    ]);
    execute_round(&mut shards, 1, [0; 32], START, &round1);

    // Funding for only some of the claims, so some payments find the funds reserved.
    let mut round2 = vec![world.tx(&world.payer, Operation::FundAccount { amount: 1_000 + rng.below(4_000) as u64 })];
    let mut round3 = Vec::new();
    let mut payments = Vec::new();
    for claim in 0..12u128 {
        let patient = &patients[rng.below(patients.len())];
        let provider = if rng.chance(0.5) { &world.doctor } else { &world.nurse };
        let amount = 300 + rng.below(700) as u64;
        let line = ClaimLine { procedure: format!("9921{claim}"), diagnosis: "I10".into(), amount };
        round2.push(
            world.tx(provider, submit_claim(claim, &patient.id, &provider.id, &world.payer.id, 2027_01_02, &[line])),
        );
        round3.push(world.tx(
            &world.payer,
            Operation::AdjudicateClaim { claim, patient: patient.id, decision: Adjudication::Approve { amount } },
        ));
        let pay = Operation::PayClaim { claim, patient: patient.id, provider: provider.id, amount };
        for _ in 0..1 + usize::from(rng.chance(0.3)) {
            payments.push(world.tx(&world.payer, pay.clone())); // sometimes twice: it must pay once
        }
    }
    execute_round(&mut shards, 2, [0; 32], START, &round2);
    execute_round(&mut shards, 3, [0; 32], START, &round3);
    let payments = payments
        .into_iter()
        .map(|t| {
            let touched = participants(&t.transaction, SHARDS);
            (t, touched)
        })
        .filter(|(_, touched)| touched.len() > 1)
        .collect();
    Scenario { world, patients, shards, payments }
}

fn shard_of(message: &Message) -> u32 {
    match message {
        Message::Prepare { shard, .. } | Message::Decide { shard, .. } => *shard,
    }
}

/// One seeded run: random batches through the coordinator and participants with loss,
/// duplication, reordering and crashes, checking atomicity and agreement after every step.
/// Kept as one function so a failing seed reads top to bottom as the schedule it ran.
fn run(seed: u64) {
    let mut rng = Rng::new(seed);
    let Scenario { world, patients, mut shards, payments } = scenario(&mut rng);
    assert!(!payments.is_empty());
    let round = 4;
    for shard in &mut shards {
        shard.begin(START);
    }
    let mut coordinator = Coordinator::new(round, payments.clone());
    let mut log: Option<Vec<TxResult>> = None;
    let mut to_shards: VecDeque<Message> = VecDeque::new();
    let mut to_coordinator: VecDeque<Reply> = VecDeque::new();
    let mut pending_actions = coordinator.start();

    for step in 0..20_000 {
        // Carry out the coordinator's actions: messages onto the network, decisions into the log.
        while let Some(action) = pending_actions.pop() {
            match action {
                Action::Send(message) => to_shards.push_back(message),
                Action::LogDecisions { round, decisions } => {
                    log = Some(decisions.iter().map(|(_, r)| *r).collect());
                    pending_actions.extend(coordinator.decisions_logged(round));
                }
            }
        }
        if coordinator.is_done() {
            break;
        }
        let roll = rng.unit();
        if roll < 0.35 && !to_shards.is_empty() {
            // Deliver one message, not necessarily the oldest; sometimes deliver it twice.
            let message = to_shards.remove(rng.below(to_shards.len())).unwrap();
            if rng.chance(0.1) {
                to_shards.push_back(message.clone());
            }
            let reply = shards[shard_of(&message) as usize].handle(message);
            to_coordinator.push_back(reply);
        } else if roll < 0.45 && !to_shards.is_empty() {
            to_shards.remove(rng.below(to_shards.len())); // lost
        } else if roll < 0.75 && !to_coordinator.is_empty() {
            let reply = to_coordinator.remove(rng.below(to_coordinator.len())).unwrap();
            if rng.chance(0.15) {
                continue; // lost
            }
            match reply {
                Reply::Votes { round, shard, votes } => {
                    pending_actions.extend(coordinator.on_votes(round, shard, votes))
                }
                Reply::Acknowledged { round, shard } => coordinator.on_acknowledged(round, shard),
            }
        } else if roll < 0.97 {
            pending_actions.extend(coordinator.tick()); // a timeout: resend what is unanswered
        } else {
            // The coordinator crashes; what it had logged survives.
            coordinator = match &log {
                Some(decisions) => Coordinator::recover(round, payments.clone(), decisions.clone()),
                None => Coordinator::new(round, payments.clone()),
            };
            pending_actions = coordinator.tick();
        }
        // Atomicity: a transaction finished on several shards has one result on all of them.
        for (transaction, touched) in &payments {
            let results: Vec<TxResult> =
                touched.iter().filter_map(|&s| shards[s as usize].recorded(transaction.id())).collect();
            assert!(results.windows(2).all(|w| w[0] == w[1]), "seed {seed} step {step}: {results:?}");
            if let (Some(decided), Some(first)) = (&log, results.first()) {
                let position = payments.iter().position(|(t, _)| t.id() == transaction.id()).unwrap();
                assert_eq!(decided[position], *first, "seed {seed} step {step}: a shard applied what was not decided");
            }
        }
    }
    assert!(coordinator.is_done(), "seed {seed}: the protocol finished within its step bound");
    for (transaction, touched) in &payments {
        for &shard in touched {
            assert!(
                shards[shard as usize].recorded(transaction.id()).is_some(),
                "seed {seed}: decided on every participant"
            );
        }
    }
    assert!(shards.iter().all(|s| s.in_doubt() == 0), "seed {seed}: nothing left in doubt, no lock held");
    let (balances, funded) = caduceus_engine::shard::fund_totals(&shards);
    assert_eq!(balances, funded, "seed {seed}: funds conserved");
    let committed = log.unwrap().iter().filter(|r| r.is_committed()).count();
    let paid = patients
        .iter()
        .flat_map(|p| (0..12u128).map(move |c| (p.id, c)))
        .filter(|(p, c)| {
            let shard = caduceus_engine::routing::shard_of_actor(p, SHARDS) as usize;
            matches!(
                shards[shard].state().claims.get(&(*p, *c)).map(|c| &c.status),
                Some(caduceus_engine::state::ClaimStatus::Paid { .. })
            )
        })
        .count();
    assert_eq!(committed, paid, "seed {seed}: each committed payment paid its claim, and only once");
    for shard in &mut shards {
        shard.seal(round);
    }
    let _ = world;
}

#[test]
fn two_phase_commit_survives_loss_duplication_reordering_and_coordinator_crashes() {
    for seed in 0..300 {
        run(seed);
    }
}
