//! Shared helpers: a small world of actors with keys, a manual clock, and a
//! one-line way to state "this signer doing this gives that result".

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use caduceus_engine::ledger::{Clock, Options};
use caduceus_engine::model::{ActorKey, Operation, Role, Transaction, TxResult};
use caduceus_engine::signature::{actor_key, sign, signing_key, SigningKey};
use caduceus_engine::storage::{MemoryStorage, Storage};
use caduceus_engine::{Config, Ledger, Reads, SignedTransaction};

pub const DAY: u64 = 86_400_000;
/// 2027-01-15, the tests' "now".
pub const START: u64 = 1_800_000_000_000;
/// The GS1 company prefixes of the test manufacturer: those of the GTINs the tests commission
/// (`30001001234568`, and the GS1 US pharma example's `030001`).
pub const MANUFACTURER_PREFIXES: [&str; 2] = ["0001001", "030001"];

pub struct Actor {
    pub key: SigningKey,
    pub id: ActorKey,
}

impl Actor {
    pub fn new(name: &str) -> Self {
        let key = signing_key(*blake3::hash(name.as_bytes()).as_bytes());
        Self { id: actor_key(&key), key }
    }
}

pub struct World {
    pub operator: Actor,
    pub patient: Actor,
    pub other_patient: Actor,
    pub doctor: Actor,
    pub nurse: Actor,
    pub payer: Actor,
    pub manufacturer: Actor,
    pub distributor: Actor,
    pub pharmacy: Actor,
    pub regulator: Actor,
    pub stranger: Actor,
    pub time: Arc<AtomicU64>,
    next_id: AtomicU64,
}

impl World {
    pub fn new() -> Self {
        Self {
            operator: Actor::new("operator"),
            patient: Actor::new("patient"),
            other_patient: Actor::new("other patient"),
            doctor: Actor::new("doctor"),
            nurse: Actor::new("nurse"),
            payer: Actor::new("payer"),
            manufacturer: Actor::new("manufacturer"),
            distributor: Actor::new("distributor"),
            pharmacy: Actor::new("pharmacy"),
            regulator: Actor::new("regulator"),
            stranger: Actor::new("stranger"),
            time: Arc::new(AtomicU64::new(START)),
            next_id: AtomicU64::new(1),
        }
    }

    pub fn config(&self, shards: u32) -> Config {
        Config { shards, genesis_operators: vec![self.operator.id], operator_quorum: 1 }
    }

    pub fn clock(&self) -> Clock {
        let time = self.time.clone();
        Arc::new(move || time.load(Ordering::SeqCst))
    }

    pub fn advance(&self, ms: u64) {
        self.time.fetch_add(ms, Ordering::SeqCst);
    }

    /// What `actor` may read of `ledger` (a registered actor that is not an auditor).
    pub fn reads<'a>(&self, ledger: &'a Ledger, actor: &Actor) -> Reads<'a> {
        ledger.reads_as(&actor.id).expect("a registered reader")
    }

    /// A ledger on the given storage with every actor but the stranger registered. Nothing of
    /// the state that grows with history stays in memory between batches, so every rule is
    /// checked on state read back from storage.
    pub fn ledger_on(&self, storage: Arc<dyn Storage>, shards: u32) -> Ledger {
        self.ledger_with(storage, shards, Some(0))
    }

    /// As `ledger_on`, with a chosen state cache (`None`: the whole state in memory, the default).
    pub fn ledger_with(&self, storage: Arc<dyn Storage>, shards: u32, state_cache_entries: Option<usize>) -> Ledger {
        let options = Options { state_cache_entries };
        let ledger = Ledger::builder()
            .clock(self.clock())
            .options(options.clone())
            .open_on(storage, &self.config(shards))
            .expect("open");
        let registrations = [
            (&self.patient, Role::Patient),
            (&self.other_patient, Role::Patient),
            (&self.doctor, Role::Provider),
            (&self.nurse, Role::Provider),
            (&self.payer, Role::Payer),
            (&self.manufacturer, Role::Manufacturer),
            (&self.distributor, Role::Distributor),
            (&self.pharmacy, Role::Dispenser),
            (&self.regulator, Role::Regulator),
        ];
        let batch = registrations
            .iter()
            .map(|(actor, role)| {
                self.tx(
                    &self.operator,
                    Operation::RegisterActor {
                        actor: actor.id,
                        role: *role,
                        prefixes: if *role == Role::Manufacturer {
                            MANUFACTURER_PREFIXES.map(String::from).to_vec()
                        } else {
                            Vec::new()
                        },
                    },
                )
            })
            .collect();
        let results = ledger.submit(batch).expect("register");
        assert!(results.iter().all(|r| r.is_committed()), "{results:?}");
        ledger
    }

    pub fn ledger(&self, shards: u32) -> Ledger {
        self.ledger_on(Arc::new(MemoryStorage::new()), shards)
    }

    pub fn id(&self) -> u128 {
        u128::from(self.next_id.fetch_add(1, Ordering::SeqCst)) << 64 | 0xcad
    }

    pub fn tx(&self, signer: &Actor, operation: Operation) -> SignedTransaction {
        let transaction = Transaction {
            nonce: self.id(),
            signer: signer.id,
            timestamp: self.time.load(Ordering::SeqCst),
            operation,
            key: None,
        };
        sign(transaction, &signer.key).expect("sign")
    }
}

/// Submits each step as its own batch and checks its result: one line per rule.
pub fn check(world: &World, ledger: &Ledger, steps: &[(&Actor, Operation, TxResult)]) {
    for (number, (signer, operation, expected)) in steps.iter().enumerate() {
        let name = operation.name();
        let results = ledger.submit(vec![world.tx(signer, operation.clone())]).expect("submit");
        assert_eq!(results, vec![*expected], "step {number} ({name})");
    }
}

pub fn committed() -> TxResult {
    TxResult::Committed
}

pub fn rejected(reason: caduceus_engine::Reason) -> TxResult {
    TxResult::Rejected(reason)
}

/// The exchange's commitment secret in the tests.
pub fn commitment_key() -> caduceus_engine::commitment::CommitmentKey {
    caduceus_engine::commitment::CommitmentKey::new([0x5e; 32])
}

/// A claim as its provider submits it: its total, and the intake's commitment to the service
/// date and codes (which never reach the ledger).
pub fn submit_claim(
    claim: u128,
    patient: &ActorKey,
    provider: &ActorKey,
    payer: &ActorKey,
    service_date: u32,
    lines: &[caduceus_engine::ClaimLine],
) -> Operation {
    let commitment =
        caduceus_engine::commitment::claim_commitment(&commitment_key(), patient, provider, service_date, lines);
    let total = lines.iter().map(|l| l.amount).sum();
    Operation::SubmitClaim { claim, patient: *patient, payer: *payer, total, commitment }
}

/// A dispense to a patient, who is named on the ledger only by a commitment.
pub fn dispense(unit: caduceus_engine::UnitId, patient: &ActorKey) -> Operation {
    let recipient = caduceus_engine::commitment::recipient_commitment(&commitment_key(), patient, &unit);
    Operation::DispenseUnit { unit, recipient }
}
