//! Property tests: random sequences of operations against a small model of
//! the rules (money, claims, unit custody, recalls). Every sequence runs on a
//! one-shard and a four-shard ledger; both must agree with the model on every
//! result, and funds must be conserved.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use caduceus_engine::model::{Adjudication, ClaimLine, Operation, Reason, TxResult, UnitId};
use caduceus_engine::storage::MemoryStorage;
use caduceus_engine::{Ledger, SignedTransaction};
use proptest::prelude::*;

use crate::support::{dispense, submit_claim, Actor, World, DAY, START};

#[derive(Clone, Debug)]
enum Step {
    Fund(u64),
    Submit { claim: u8, patient: u8, provider: u8, amount: u64, code: u8 },
    Approve { claim: u8, patient: u8, amount: u64 },
    Deny { claim: u8, patient: u8 },
    Pay { claim: u8, patient: u8, amount: u64 },
    Commission { serial: u8, lot: u8 },
    Ship { serial: u8 },
    Receive { serial: u8 },
    Dispense { serial: u8 },
    Recall { lot: u8 },
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        (1u64..2_000).prop_map(Step::Fund),
        (0u8..6, 0u8..2, 0u8..2, 1u64..900, 0u8..3).prop_map(|(claim, patient, provider, amount, code)| Step::Submit {
            claim,
            patient,
            provider,
            amount,
            code
        }),
        (0u8..6, 0u8..2, 1u64..900).prop_map(|(claim, patient, amount)| Step::Approve { claim, patient, amount }),
        (0u8..6, 0u8..2).prop_map(|(claim, patient)| Step::Deny { claim, patient }),
        (0u8..6, 0u8..2, 1u64..900).prop_map(|(claim, patient, amount)| Step::Pay { claim, patient, amount }),
        (0u8..4, 0u8..2).prop_map(|(serial, lot)| Step::Commission { serial, lot }),
        (0u8..4).prop_map(|serial| Step::Ship { serial }),
        (0u8..4).prop_map(|serial| Step::Receive { serial }),
        (0u8..4).prop_map(|serial| Step::Dispense { serial }),
        (0u8..2).prop_map(|lot| Step::Recall { lot }),
    ]
}

#[derive(Clone, Copy, PartialEq, Debug)]
enum ClaimState {
    Submitted,
    Approved(u64),
    Denied,
    Paid,
}

#[derive(Clone, Copy, PartialEq, Debug)]
enum UnitState {
    AtManufacturer,
    InTransit,
    AtPharmacy,
    Dispensed,
}

/// The rules for this corner of the ledger, written as plainly as possible.
#[derive(Default)]
struct Model {
    payer_balance: u64,
    provider_balance: [u64; 2],
    funded: u64,
    /// By (patient, claim): a claim id is the patient's own.
    claims: HashMap<(u8, u8), (u8, u64, ClaimState)>, // provider, total, state
    duplicate_keys: HashSet<(u8, u8, u8)>,
    units: HashMap<u8, (u8, UnitState)>, // lot, state
    recalled: HashSet<u8>,
}

impl Model {
    fn apply(&mut self, step: &Step) -> TxResult {
        use Reason::*;
        let reject = TxResult::Rejected;
        match *step {
            Step::Fund(amount) => {
                self.payer_balance += amount;
                self.funded += amount;
            }
            Step::Submit { claim, patient, provider, amount, code } => {
                if self.claims.contains_key(&(patient, claim)) {
                    return reject(ClaimExists);
                }
                if !self.duplicate_keys.insert((patient, provider, code)) {
                    return reject(DuplicateClaim);
                }
                self.claims.insert((patient, claim), (provider, amount, ClaimState::Submitted));
            }
            Step::Approve { claim, patient, .. } | Step::Deny { claim, patient }
                if !self.claims.contains_key(&(patient, claim)) =>
            {
                return reject(UnknownClaim);
            }
            Step::Approve { claim, patient, amount } => {
                let entry = self.claims.get_mut(&(patient, claim)).unwrap();
                if entry.2 != ClaimState::Submitted {
                    return reject(ClaimClosed);
                }
                if amount > entry.1 {
                    return reject(AmountMismatch);
                }
                entry.2 = ClaimState::Approved(amount);
            }
            Step::Deny { claim, patient } => {
                let entry = self.claims.get_mut(&(patient, claim)).unwrap();
                if entry.2 != ClaimState::Submitted {
                    return reject(ClaimClosed);
                }
                entry.2 = ClaimState::Denied;
            }
            Step::Pay { claim, patient, amount } => {
                // Every refusal counts; the lowest reason code is the answer.
                let mut refusals = Vec::new();
                match self.claims.get(&(patient, claim)) {
                    None => refusals.push(UnknownClaim),
                    Some((_, _, ClaimState::Paid)) => refusals.push(ClaimAlreadyPaid),
                    Some((_, _, ClaimState::Approved(approved))) if *approved != amount => {
                        refusals.push(AmountMismatch)
                    }
                    Some((_, _, ClaimState::Approved(_))) => {}
                    Some(_) => refusals.push(ClaimNotPayable),
                }
                if self.payer_balance < amount {
                    refusals.push(InsufficientFunds);
                }
                if let Some(reason) = refusals.into_iter().min_by_key(|r| r.code()) {
                    return reject(reason);
                }
                let entry = self.claims.get_mut(&(patient, claim)).unwrap();
                entry.2 = ClaimState::Paid;
                self.payer_balance -= amount;
                self.provider_balance[entry.0 as usize] += amount;
            }
            Step::Commission { serial, lot } => {
                if self.recalled.contains(&lot) {
                    return reject(UnitRecalled);
                }
                if self.units.contains_key(&serial) {
                    return reject(UnitExists);
                }
                self.units.insert(serial, (lot, UnitState::AtManufacturer));
            }
            // Shipments go forward, to the pharmacy: a recalled unit does not.
            Step::Ship { serial } => match self.units.get_mut(&serial) {
                None => return reject(UnknownUnit),
                Some((lot, UnitState::AtManufacturer)) if self.recalled.contains(lot) => return reject(UnitRecalled),
                Some((_, state @ UnitState::AtManufacturer)) => *state = UnitState::InTransit,
                Some((_, UnitState::InTransit)) => return reject(UnitNotActive),
                Some(_) => return reject(NotUnitCustodian),
            },
            Step::Receive { serial } => match self.units.get_mut(&serial) {
                None => return reject(UnknownUnit),
                Some((_, state @ UnitState::InTransit)) => *state = UnitState::AtPharmacy,
                Some(_) => return reject(UnitNotActive),
            },
            Step::Dispense { serial } => match self.units.get_mut(&serial) {
                None => return reject(UnknownUnit),
                Some((_, UnitState::AtManufacturer | UnitState::InTransit)) => return reject(NotUnitCustodian),
                Some((_, UnitState::Dispensed)) => return reject(UnitNotActive),
                Some((lot, state)) => {
                    if self.recalled.contains(lot) {
                        return reject(UnitRecalled);
                    }
                    *state = UnitState::Dispensed;
                }
            },
            Step::Recall { lot } => {
                if !self.recalled.insert(lot) {
                    return reject(LotAlreadyRecalled);
                }
            }
        }
        TxResult::Committed
    }
}

const CODES: [&str; 3] = ["99213", "80053", "93000"];

fn operation(world: &World, model: &Model, step: &Step) -> (&'static str, Operation) {
    let patients = [&world.patient, &world.other_patient];
    let providers = [&world.doctor, &world.nurse];
    // A payment names the claim's own provider, as a real payer would.
    let provider_of = |patient: u8, claim: u8| model.claims.get(&(patient, claim)).map_or(0, |c| c.0 as usize);
    let unit = |serial: u8| UnitId { gtin: 30_001_001_234_568, serial: format!("S{serial}") };
    match *step {
        Step::Fund(amount) => ("payer", Operation::FundAccount { amount }),
        Step::Submit { claim, patient, provider, amount, code } => (
            if provider == 0 { "doctor" } else { "nurse" },
            submit_claim(
                u128::from(claim),
                &patients[patient as usize].id,
                &[&world.doctor, &world.nurse][provider as usize].id,
                &world.payer.id,
                2027_01_02,
                &[ClaimLine { procedure: CODES[code as usize].into(), diagnosis: "I10".into(), amount }],
            ),
        ),
        Step::Approve { claim, patient, amount } => (
            "payer",
            Operation::AdjudicateClaim {
                claim: u128::from(claim),
                patient: patients[patient as usize].id,
                decision: Adjudication::Approve { amount },
            },
        ),
        Step::Deny { claim, patient } => (
            "payer",
            Operation::AdjudicateClaim {
                claim: u128::from(claim),
                patient: patients[patient as usize].id,
                decision: Adjudication::Deny { reason: 29 },
            },
        ),
        Step::Pay { claim, patient, amount } => {
            let provider = providers[provider_of(patient, claim)].id;
            (
                "payer",
                Operation::PayClaim {
                    claim: u128::from(claim),
                    patient: patients[patient as usize].id,
                    provider,
                    amount,
                },
            )
        }
        Step::Commission { serial, lot } => (
            "manufacturer",
            Operation::CommissionUnit { unit: unit(serial), lot: format!("LOT{lot}"), expiry: START + 90 * DAY },
        ),
        Step::Ship { serial } => ("manufacturer", Operation::ShipUnit { unit: unit(serial), to: world.pharmacy.id }),
        Step::Receive { serial } => ("pharmacy", Operation::ReceiveUnit { unit: unit(serial) }),
        Step::Dispense { serial } => ("pharmacy", dispense(unit(serial), &world.patient.id)),
        Step::Recall { lot } => (
            "regulator",
            Operation::RecallLot {
                gtin: 30_001_001_234_568,
                lot: format!("LOT{lot}"),
                reason: caduceus_engine::model::RecallClass::ClassI,
            },
        ),
    }
}

fn signer<'a>(world: &'a World, name: &str) -> &'a Actor {
    match name {
        "payer" => &world.payer,
        "doctor" => &world.doctor,
        "nurse" => &world.nurse,
        "manufacturer" => &world.manufacturer,
        "pharmacy" => &world.pharmacy,
        _ => &world.regulator,
    }
}

fn run(world: &World, ledgers: &[Ledger], steps: &[Step]) -> Result<(), TestCaseError> {
    let mut model = Model::default();
    for (number, step) in steps.iter().enumerate() {
        let (who, operation) = operation(world, &model, step);
        let expected = model.apply(step);
        let transaction = world.tx(signer(world, who), operation);
        for ledger in ledgers {
            let result = ledger.submit(vec![transaction.clone()]).unwrap()[0];
            prop_assert_eq!(result, expected, "step {} {:?} on {} shards", number, step, ledger.shard_count());
        }
    }
    for ledger in ledgers {
        let (balances, funded) = ledger.fund_totals();
        prop_assert_eq!(balances, funded);
        prop_assert_eq!(funded, u128::from(model.funded));
        prop_assert_eq!(
            world.reads(ledger, &world.payer).account(&world.payer.id).unwrap().map_or(0, |a| a.balance),
            model.payer_balance
        );
        prop_assert_eq!(
            world.reads(ledger, &world.doctor).account(&world.doctor.id).unwrap().map_or(0, |a| a.balance),
            model.provider_balance[0]
        );
        prop_assert_eq!(
            world.reads(ledger, &world.nurse).account(&world.nurse.id).unwrap().map_or(0, |a| a.balance),
            model.provider_balance[1]
        );
    }
    Ok(())
}

/// Submits `steps` in batches of the given sizes (steps past the sizes' sum are left out) to
/// every ledger, and asks that every ledger give each batch the same results: a batch's results
/// are a function of the batch, never of the shard count. The model only picks each step's
/// parameters (a payment names its claim's provider); inside a batch its predictions do not hold.
fn run_batches(world: &World, ledgers: &[Ledger], steps: &[Step], sizes: &[usize]) -> Result<(), TestCaseError> {
    let mut model = Model::default();
    let mut steps = steps.iter();
    for (number, &size) in sizes.iter().enumerate() {
        let batch: Vec<SignedTransaction> = steps
            .by_ref()
            .take(size)
            .map(|step| {
                let (who, operation) = operation(world, &model, step);
                model.apply(step);
                world.tx(signer(world, who), operation)
            })
            .collect();
        if batch.is_empty() {
            break;
        }
        let results: Vec<Vec<TxResult>> = ledgers.iter().map(|ledger| ledger.submit(batch.clone()).unwrap()).collect();
        let names: Vec<&str> = batch.iter().map(|t| t.transaction.operation.name()).collect();
        for (ledger, got) in ledgers.iter().zip(&results).skip(1) {
            prop_assert_eq!(got, &results[0], "batch {} {:?} on {} shards", number, names, ledger.shard_count());
        }
    }
    for ledger in ledgers {
        let (balances, funded) = ledger.fund_totals();
        prop_assert_eq!(balances, funded);
    }
    Ok(())
}

/// Dependent operations in one batch: a recall and a dispense of a unit of the recalled lot,
/// a payment and the adjudication that approves its claim. On one shard every operation touches
/// one shard; on four, the recall and the payment span shards. Both give the same results.
#[test]
fn dependent_operations_in_one_batch_give_the_same_results_on_one_and_four_shards() {
    let world = World::new();
    let ledgers = [world.ledger(1), world.ledger(4)];
    let setup = [
        Step::Fund(1_000),
        Step::Submit { claim: 1, patient: 0, provider: 0, amount: 500, code: 0 },
        Step::Commission { serial: 1, lot: 0 },
        Step::Ship { serial: 1 },
        Step::Receive { serial: 1 },
    ];
    let steps: Vec<Step> = setup
        .into_iter()
        .chain([Step::Recall { lot: 0 }, Step::Dispense { serial: 1 }])
        .chain([Step::Pay { claim: 1, patient: 0, amount: 500 }, Step::Approve { claim: 1, patient: 0, amount: 500 }])
        .collect();
    run_batches(&world, &ledgers, &steps, &[1, 1, 1, 1, 1, 2, 2]).unwrap();
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn random_batches_give_the_same_results_on_one_and_four_shards(
        steps in proptest::collection::vec(step(), 1..80),
        sizes in proptest::collection::vec(1usize..8, 1..40),
    ) {
        let world = World::new();
        let ledgers = [world.ledger(1), world.ledger(4)];
        run_batches(&world, &ledgers, &steps, &sizes)?;
        prop_assert_eq!(ledgers[0].fund_totals(), ledgers[1].fund_totals());
    }

    #[test]
    fn random_sequences_follow_the_model_on_one_and_four_shards(steps in proptest::collection::vec(step(), 1..60)) {
        let world = World::new();
        // World's ledgers keep nothing of records, consents, claims and units in memory between
        // batches (everything comes back from storage); the third keeps its whole state, as a
        // ledger does by default.
        let whole = world.ledger_with(Arc::new(MemoryStorage::new()), 4, None);
        let ledgers = [world.ledger(1), world.ledger(4), whole];
        run(&world, &ledgers, &steps)?;
        prop_assert_eq!(ledgers[1].state_hash().unwrap(), ledgers[2].state_hash().unwrap());
    }
}
