//! The cross-shard coordinator: batched two-phase commit as a state machine.
//!
//! It does no I/O. The driver feeds it votes, the fact that its decisions are
//! durable, and acknowledgements, and carries out the actions it returns
//! (send a prepare, log decisions, send decisions). One prepare message carries
//! every transaction of the round that touches a shard. A decision is logged
//! before any participant hears it, so after a crash the log alone settles
//! every in-doubt transaction. Votes and acknowledgements may arrive late,
//! twice or out of order; `tick` resends whatever is still unanswered.

use std::collections::{BTreeMap, BTreeSet};

use crate::model::{Reason, SignedTransaction, TxId, TxResult};

/// A message from the coordinator to one shard.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Message {
    /// Prepare these transactions, in this order, and vote on each.
    Prepare { round: u64, shard: u32, transactions: Vec<SignedTransaction> },
    /// Finish these transactions with these results, in this order.
    Decide { round: u64, shard: u32, decisions: Vec<(TxId, TxResult)> },
}

/// What the driver must do next.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    Send(Message),
    /// Persist these decisions (in coordinator order) durably, then call `decisions_logged`.
    LogDecisions {
        round: u64,
        decisions: Vec<(TxId, TxResult)>,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Preparing,
    Logging,
    Deciding,
    Done,
}

/// One round's batched two-phase commit.
pub struct Coordinator {
    round: u64,
    transactions: Vec<(SignedTransaction, Vec<u32>)>,
    /// Per shard, the positions of the transactions it takes part in.
    plan: BTreeMap<u32, Vec<usize>>,
    votes: BTreeMap<u32, Vec<Result<(), Reason>>>,
    decisions: Vec<TxResult>,
    unacknowledged: BTreeSet<u32>,
    phase: Phase,
}

impl Coordinator {
    /// A coordinator for these transactions, each with its participant shards (ascending).
    pub fn new(round: u64, transactions: Vec<(SignedTransaction, Vec<u32>)>) -> Self {
        let mut plan: BTreeMap<u32, Vec<usize>> = BTreeMap::new();
        for (position, (_, shards)) in transactions.iter().enumerate() {
            assert!(!shards.is_empty(), "a coordinated transaction has participants");
            for &shard in shards {
                plan.entry(shard).or_default().push(position);
            }
        }
        Self {
            round,
            transactions,
            plan,
            votes: BTreeMap::new(),
            decisions: Vec::new(),
            unacknowledged: BTreeSet::new(),
            phase: Phase::Preparing,
        }
    }

    /// A coordinator restarted from its log: decisions are known, participants must hear them again.
    pub fn recover(round: u64, transactions: Vec<(SignedTransaction, Vec<u32>)>, decisions: Vec<TxResult>) -> Self {
        assert_eq!(transactions.len(), decisions.len(), "one logged decision per transaction");
        let mut coordinator = Self::new(round, transactions);
        coordinator.decisions = decisions;
        coordinator.unacknowledged = coordinator.plan.keys().copied().collect();
        coordinator.phase = Phase::Deciding;
        coordinator
    }

    pub fn is_done(&self) -> bool {
        self.phase == Phase::Done
    }

    /// The final result of every transaction, in the order given, once decided.
    pub fn results(&self) -> Option<&[TxResult]> {
        matches!(self.phase, Phase::Deciding | Phase::Done).then_some(self.decisions.as_slice())
    }

    /// The first actions: a prepare to every participant (or nothing, with no transactions).
    pub fn start(&mut self) -> Vec<Action> {
        if self.transactions.is_empty() {
            self.phase = Phase::Done;
            return Vec::new();
        }
        self.tick()
    }

    /// Resends whatever is still unanswered in the current phase.
    pub fn tick(&mut self) -> Vec<Action> {
        match self.phase {
            Phase::Preparing => self
                .plan
                .iter()
                .filter(|(shard, _)| !self.votes.contains_key(shard))
                .map(|(&shard, positions)| {
                    Action::Send(Message::Prepare {
                        round: self.round,
                        shard,
                        transactions: positions.iter().map(|&p| self.transactions[p].0.clone()).collect(),
                    })
                })
                .collect(),
            Phase::Logging => vec![Action::LogDecisions { round: self.round, decisions: self.decided() }],
            Phase::Deciding => {
                self.unacknowledged.iter().map(|&shard| Action::Send(self.decide_message(shard))).collect()
            }
            Phase::Done => Vec::new(),
        }
    }

    /// A shard's votes, one per transaction of its prepare message, in order.
    pub fn on_votes(&mut self, round: u64, shard: u32, votes: Vec<Result<(), Reason>>) -> Vec<Action> {
        let expected = self.plan.get(&shard).map(Vec::len);
        if round != self.round || self.phase != Phase::Preparing || expected != Some(votes.len()) {
            return Vec::new(); // stale, duplicate or not ours
        }
        self.votes.entry(shard).or_insert(votes);
        if self.votes.len() < self.plan.len() {
            return Vec::new();
        }
        // Commit where every participant voted yes. Otherwise the refusal with the lowest
        // code, so the reason never depends on how keys happen to map to shards.
        let mut decisions = vec![TxResult::Committed; self.transactions.len()];
        for (shard, positions) in &self.plan {
            for (vote, &position) in self.votes[shard].iter().zip(positions) {
                if let Err(reason) = vote {
                    decisions[position] = match decisions[position] {
                        TxResult::Rejected(earlier) if earlier.code() <= reason.code() => decisions[position],
                        _ => TxResult::Rejected(*reason),
                    };
                }
            }
        }
        self.decisions = decisions;
        self.phase = Phase::Logging;
        self.tick()
    }

    /// The decisions are durable: tell the participants.
    pub fn decisions_logged(&mut self, round: u64) -> Vec<Action> {
        if round != self.round || self.phase != Phase::Logging {
            return Vec::new();
        }
        self.unacknowledged = self.plan.keys().copied().collect();
        self.phase = Phase::Deciding;
        self.tick()
    }

    /// A shard has applied its decisions.
    pub fn on_acknowledged(&mut self, round: u64, shard: u32) {
        if round == self.round && self.phase == Phase::Deciding {
            self.unacknowledged.remove(&shard);
            if self.unacknowledged.is_empty() {
                self.phase = Phase::Done;
            }
        }
    }

    fn decided(&self) -> Vec<(TxId, TxResult)> {
        self.transactions.iter().zip(&self.decisions).map(|((t, _), r)| (t.id(), *r)).collect()
    }

    fn decide_message(&self, shard: u32) -> Message {
        let decisions = self.plan[&shard].iter().map(|&p| (self.transactions[p].0.id(), self.decisions[p])).collect();
        Message::Decide { round: self.round, shard, decisions }
    }
}
