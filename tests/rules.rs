//! The business rules, one line each: who may do what, consent at access
//! time, duplicate claims, payment exactly once, custody, recalls, expiry.

use caduceus_engine::model::{Adjudication, ClaimLine, Operation, Purpose, Purposes, Reason::*, Role, UnitId};

use caduceus_engine::limits::BATCH_TRANSACTIONS_MAX;
use caduceus_engine::SignedTransaction;

use crate::support::{check, committed, dispense, rejected, submit_claim, World, DAY, START};

fn record(world: &World, record: u128, resource_type: &str) -> Operation {
    Operation::RegisterRecord {
        record,
        patient: world.patient.id,
        content_hash: *blake3::hash(&record.to_le_bytes()).as_bytes(),
        resource_type: resource_type.into(),
    }
}

fn consent(world: &World, consent: u128, scope: &[&str], purposes: &[Purpose], days: u64) -> Operation {
    Operation::GrantConsent {
        consent,
        patient: world.patient.id,
        grantee: world.nurse.id,
        scope: scope.iter().map(|s| s.to_string()).collect(),
        purposes: Purposes::of(purposes),
        valid_from: START - DAY,
        valid_until: START + days * DAY,
    }
}

fn access(world: &World, record: u128, purpose: Purpose) -> Operation {
    Operation::AccessRecord { record, patient: world.patient.id, purpose }
}

#[test]
fn roles_are_enforced() {
    let w = World::new();
    let ledger = w.ledger(3);
    check(
        &w,
        &ledger,
        &[
            (&w.stranger, record(&w, 1, "Observation"), rejected(UnknownSigner)),
            (&w.payer, record(&w, 1, "Observation"), rejected(RoleNotPermitted)),
            (
                &w.doctor,
                Operation::RegisterActor { actor: w.stranger.id, role: Role::Operator, prefixes: Vec::new() },
                rejected(RoleNotPermitted),
            ),
            (
                &w.operator,
                Operation::RegisterActor { actor: w.doctor.id, role: Role::Payer, prefixes: Vec::new() },
                rejected(ActorExists),
            ),
            (&w.doctor, Operation::FundAccount { amount: 10 }, rejected(RoleNotPermitted)),
            (
                &w.patient,
                Operation::RecallLot { gtin: 1, lot: "L".into(), reason: caduceus_engine::model::RecallClass::ClassII },
                rejected(RoleNotPermitted),
            ),
            (
                &w.doctor,
                Operation::RegisterRecord {
                    record: 2,
                    patient: w.doctor.id,
                    content_hash: [0; 32],
                    resource_type: "Observation".into(),
                },
                rejected(UnknownPatient),
            ),
            (&w.doctor, record(&w, 1, "Observation"), committed()),
            (&w.doctor, record(&w, 1, "Observation"), rejected(RecordExists)),
            (
                &w.nurse,
                Operation::AmendRecord { record: 1, patient: w.patient.id, content_hash: [1; 32] },
                rejected(NotCustodian),
            ),
            (
                &w.doctor,
                Operation::AmendRecord { record: 1, patient: w.patient.id, content_hash: [1; 32] },
                committed(),
            ),
        ],
    );
}

#[test]
fn consent_is_checked_at_access_time_and_every_access_is_logged() {
    let w = World::new();
    let ledger = w.ledger(4);
    check(
        &w,
        &ledger,
        &[
            (&w.doctor, record(&w, 10, "Observation"), committed()),
            (&w.doctor, record(&w, 11, "MedicationRequest"), committed()),
            (&w.nurse, access(&w, 10, Purpose::Treatment), rejected(ConsentMissing)),
            (&w.nurse, consent(&w, 100, &[], &[Purpose::Treatment], 30), rejected(RoleNotPermitted)),
            (&w.patient, consent(&w, 100, &["Observation"], &[Purpose::Treatment], 30), committed()),
            (&w.patient, consent(&w, 100, &["Observation"], &[Purpose::Treatment], 30), rejected(ConsentExists)),
            (&w.nurse, access(&w, 10, Purpose::Treatment), committed()),
            (&w.nurse, access(&w, 10, Purpose::Research), rejected(ConsentPurpose)),
            (&w.nurse, access(&w, 11, Purpose::Treatment), rejected(ConsentScope)),
            (&w.nurse, access(&w, 99, Purpose::Treatment), rejected(UnknownRecord)),
            // The patient reads their own record, and the custodian its own, without consent.
            (&w.patient, access(&w, 11, Purpose::PatientRequest), committed()),
            (&w.doctor, access(&w, 11, Purpose::Operations), committed()),
            (
                &w.other_patient,
                Operation::RevokeConsent { consent: 100, patient: w.patient.id },
                rejected(NotThePatient),
            ),
            (&w.patient, Operation::RevokeConsent { consent: 555, patient: w.patient.id }, rejected(UnknownConsent)),
            (&w.patient, Operation::RevokeConsent { consent: 100, patient: w.patient.id }, committed()),
            (&w.nurse, access(&w, 10, Purpose::Treatment), rejected(ConsentRevoked)),
            (&w.patient, Operation::RevokeConsent { consent: 100, patient: w.patient.id }, rejected(ConsentRevoked)),
            (
                &w.nurse,
                Operation::EmergencyAccess {
                    record: 11,
                    patient: w.patient.id,
                    reason: caduceus_engine::model::EmergencyReason::LifeThreatening,
                },
                committed(),
            ),
            (&w.patient, consent(&w, 101, &[], &[Purpose::Treatment, Purpose::Payment], 2), committed()),
            (&w.nurse, access(&w, 11, Purpose::Payment), committed()),
        ],
    );
    // Consent periods are checked against commit time, not the client's clock.
    w.advance(3 * DAY);
    check(&w, &ledger, &[(&w.nurse, access(&w, 11, Purpose::Treatment), rejected(ConsentExpired))]);

    let page = w.reads(&ledger, &w.patient).access_report(&w.patient.id, None, 100).unwrap();
    assert_eq!((page.total, page.next), (10, None));
    let report: Vec<_> = page.entries.into_iter().rev().collect(); // oldest first
    let summary: Vec<(u128, bool, bool)> = report.iter().map(|e| (e.record, e.permitted(), e.break_glass)).collect();
    assert_eq!(
        summary,
        vec![
            (10, false, false),
            (10, true, false),
            (10, false, false),
            (11, false, false),
            (11, true, false),
            (11, true, false),
            (10, false, false),
            (11, true, true),
            (11, true, false),
            (11, false, false),
        ],
        "every access to an existing record of the patient is logged, denied ones and break-glass included"
    );
    assert!(report.iter().all(|e| e.time >= START));
    assert_eq!(report.last().unwrap().time, START + 3 * DAY);
}

fn lines(codes: &[(&str, &str, u64)]) -> Vec<ClaimLine> {
    codes.iter().map(|(p, d, a)| ClaimLine { procedure: p.to_string(), diagnosis: d.to_string(), amount: *a }).collect()
}

/// A claim as the doctor submits it: its total and the intake's commitment to date and codes.
fn claim(w: &World, claim: u128, date: u32, codes: &[(&str, &str, u64)]) -> Operation {
    submit_claim(claim, &w.patient.id, &w.doctor.id, &w.payer.id, date, &lines(codes))
}

#[test]
fn claims_are_checked_for_duplicates_and_paid_exactly_once() {
    let w = World::new();
    let ledger = w.ledger(4);
    let pay =
        |claim: u128, amount: u64| Operation::PayClaim { claim, patient: w.patient.id, provider: w.doctor.id, amount };
    let adjudicate =
        |claim: u128, decision: Adjudication| Operation::AdjudicateClaim { claim, patient: w.patient.id, decision };
    check(
        &w,
        &ledger,
        &[
            (
                &w.doctor,
                claim(&w, 1, 2027_01_10, &[("99213", "E11.9", 12_000), ("80053", "E11.9", 4_000)]),
                committed(),
            ),
            (&w.doctor, claim(&w, 1, 2027_01_10, &[("99214", "I10", 1)]), rejected(ClaimExists)),
            // Same patient, provider, date and codes, in another order and another amount: a duplicate.
            (
                &w.doctor,
                claim(&w, 2, 2027_01_10, &[("80053", "E11.9", 9), ("99213", "E11.9", 5)]),
                rejected(DuplicateClaim),
            ),
            (&w.doctor, claim(&w, 5, 2027_01_11, &[("99213", "E11.9", 0)]), rejected(InvalidField)),
            (&w.payer, pay(1, 14_000), rejected(ClaimNotPayable)),
            (&w.regulator, adjudicate(1, Adjudication::Approve { amount: 14_000 }), rejected(RoleNotPermitted)),
            (&w.payer, adjudicate(1, Adjudication::Approve { amount: 16_001 }), rejected(AmountMismatch)),
            (&w.payer, adjudicate(1, Adjudication::Pend), committed()),
            (&w.payer, adjudicate(1, Adjudication::Approve { amount: 14_000 }), committed()),
            (&w.payer, adjudicate(1, Adjudication::Deny { reason: 29 }), rejected(ClaimClosed)),
            (&w.payer, pay(1, 14_000), rejected(InsufficientFunds)),
            (&w.payer, Operation::FundAccount { amount: 20_000 }, committed()),
            (&w.payer, pay(1, 13_999), rejected(AmountMismatch)),
            (&w.payer, pay(1, 14_000), committed()),
            (&w.payer, pay(1, 14_000), rejected(ClaimAlreadyPaid)),
        ],
    );
    assert_eq!(w.reads(&ledger, &w.payer).account(&w.payer.id).unwrap().unwrap().balance, 6_000);
    assert_eq!(w.reads(&ledger, &w.doctor).account(&w.doctor.id).unwrap().unwrap().balance, 14_000);
    let (balances, funded) = ledger.fund_totals();
    assert_eq!((balances, funded), (20_000, 20_000));
    assert!(matches!(
        w.reads(&ledger, &w.patient).claim(&w.patient.id, 1).unwrap().unwrap().status,
        caduceus_engine::state::ClaimStatus::Paid { amount: 14_000, .. }
    ));
    // The date and codes never reach the ledger: the intake checks them before it commits.
    let check_claim = caduceus_engine::commitment::check_claim;
    let today = 2027_01_31;
    assert_eq!(
        check_claim(2027_01_10, &lines(&[("99213", "E11.9", 12_000), ("80053", "E11.9", 4_000)]), today),
        Ok(16_000)
    );
    assert_eq!(check_claim(2027_02_10, &lines(&[("99213", "E11.9", 100)]), today), Err(ServiceDateInFuture));
    assert_eq!(check_claim(2027_13_10, &lines(&[("99213", "E11.9", 100)]), today), Err(InvalidField));
    assert_eq!(check_claim(2027_01_11, &lines(&[("99213", "E11.9", 0)]), today), Err(InvalidField));
    assert_eq!(check_claim(2027_01_11, &lines(&[("", "E11.9", 10)]), today), Err(InvalidField));
    assert_eq!(check_claim(2027_01_11, &[], today), Err(InvalidField));
}

#[test]
fn two_payments_of_one_claim_in_one_batch_pay_once() {
    let w = World::new();
    let ledger = w.ledger(4);
    check(
        &w,
        &ledger,
        &[
            (&w.payer, Operation::FundAccount { amount: 1_000_000 }, committed()),
            (&w.doctor, claim(&w, 7, 2027_01_02, &[("93000", "I10", 5_000)]), committed()),
            (
                &w.payer,
                Operation::AdjudicateClaim {
                    claim: 7,
                    patient: w.patient.id,
                    decision: Adjudication::Approve { amount: 5_000 },
                },
                committed(),
            ),
        ],
    );
    let pay = Operation::PayClaim { claim: 7, patient: w.patient.id, provider: w.doctor.id, amount: 5_000 };
    let results = ledger.submit(vec![w.tx(&w.payer, pay.clone()), w.tx(&w.payer, pay)]).unwrap();
    assert_eq!(results.iter().filter(|r| r.is_committed()).count(), 1, "{results:?}");
    assert_eq!(w.reads(&ledger, &w.doctor).account(&w.doctor.id).unwrap().unwrap().balance, 5_000);
    assert_eq!(ledger.fund_totals(), (1_000_000, 1_000_000));
}

#[test]
fn units_have_one_custodian_and_are_never_dispensed_after_recall_or_expiry() {
    let w = World::new();
    let ledger = w.ledger(4);
    let unit = |serial: &str| UnitId { gtin: 30_001_001_234_568, serial: serial.into() };
    let commission = |serial: &str, lot: &str, days: u64| Operation::CommissionUnit {
        unit: unit(serial),
        lot: lot.into(),
        expiry: START + days * DAY,
    };
    let ship = |serial: &str, to: &crate::support::Actor| Operation::ShipUnit { unit: unit(serial), to: to.id };
    let receive = |serial: &str| Operation::ReceiveUnit { unit: unit(serial) };
    let dispense = |serial: &str| dispense(unit(serial), &w.patient.id);
    check(
        &w,
        &ledger,
        &[
            (&w.distributor, commission("A1", "LOT1", 365), rejected(RoleNotPermitted)),
            (&w.manufacturer, commission("A1", "LOT1", 365), committed()),
            (&w.manufacturer, commission("A1", "LOT1", 365), rejected(UnitExists)),
            (&w.manufacturer, commission("A2", "LOT2", 365), committed()),
            (&w.manufacturer, commission("A3", "LOT3", 2), committed()),
            (&w.manufacturer, commission("OLD", "LOT3", 0), rejected(UnitExpired)),
            (&w.distributor, ship("A1", &w.pharmacy), rejected(NotUnitCustodian)),
            (&w.manufacturer, ship("A1", &w.doctor), rejected(UnknownActor)),
            (&w.manufacturer, ship("A1", &w.distributor), committed()),
            (&w.manufacturer, ship("A1", &w.pharmacy), rejected(UnitNotActive)),
            (&w.pharmacy, receive("A1"), rejected(NotAddressee)),
            (&w.pharmacy, dispense("A1"), rejected(NotUnitCustodian)),
            (&w.distributor, receive("A1"), committed()),
            (&w.distributor, receive("A1"), rejected(UnitNotActive)),
            (&w.distributor, dispense("A1"), rejected(RoleNotPermitted)),
            (&w.distributor, ship("A1", &w.pharmacy), committed()),
            (&w.pharmacy, receive("A1"), committed()),
            (&w.pharmacy, dispense("A1"), committed()),
            (&w.pharmacy, dispense("A1"), rejected(UnitNotActive)),
            (&w.pharmacy, dispense("NOPE"), rejected(UnknownUnit)),
            // A2 reaches the pharmacy, then its lot is recalled.
            (&w.manufacturer, ship("A2", &w.pharmacy), committed()),
            (&w.pharmacy, receive("A2"), committed()),
            (
                &w.regulator,
                Operation::RecallLot {
                    gtin: 30_001_001_234_568,
                    lot: "LOT2".into(),
                    reason: caduceus_engine::model::RecallClass::ClassII,
                },
                committed(),
            ),
            (
                &w.manufacturer,
                Operation::RecallLot {
                    gtin: 30_001_001_234_568,
                    lot: "LOT2".into(),
                    reason: caduceus_engine::model::RecallClass::ClassII,
                },
                rejected(LotAlreadyRecalled),
            ),
            (&w.pharmacy, dispense("A2"), rejected(UnitRecalled)),
            (
                &w.pharmacy,
                Operation::DecommissionUnit { unit: unit("A2"), reason: caduceus_engine::model::Disposition::Recalled },
                committed(),
            ),
            (&w.manufacturer, ship("A3", &w.pharmacy), committed()),
            (&w.pharmacy, receive("A3"), committed()),
        ],
    );
    w.advance(2 * DAY);
    check(&w, &ledger, &[(&w.pharmacy, dispense("A3"), rejected(UnitExpired))]);

    let trace: Vec<(String, bool)> = w
        .reads(&ledger, &w.regulator)
        .custody_trace(&unit("A1"), None, 100)
        .unwrap()
        .entries
        .into_iter()
        .rev()
        .map(|e| (e.event, e.result.is_committed()))
        .collect();
    let expected = [
        ("commission-unit", true),
        ("commission-unit", false),
        ("ship-unit", false),
        ("ship-unit", false),
        ("ship-unit", true),
        ("ship-unit", false),
        ("receive-unit", false),
        ("dispense-unit", false),
        ("receive-unit", true),
        ("receive-unit", false),
        ("ship-unit", true),
        ("receive-unit", true),
        ("dispense-unit", true),
        ("dispense-unit", false),
    ];
    assert_eq!(
        trace,
        expected.map(|(e, c)| (e.to_string(), c)).to_vec(),
        "the trail keeps registered actors' rejected attempts too (a second commission is a counterfeit signal), not refusals"
    );
    let verdict = ledger.verify_unit(&unit("A2")).unwrap();
    assert!(verdict.genuine() && verdict.recall.is_some() && !verdict.dispensable());
    assert!(!ledger.verify_unit(&unit("FAKE")).unwrap().genuine());
    assert!(ledger.verify_unit(&unit("A3")).unwrap().expired);
}

#[test]
fn manufacturers_act_only_within_their_prefixes_and_recalled_units_only_go_back() {
    let w = World::new();
    let ledger = w.ledger(3);
    let gtin = 30_001_001_234_568; // within the test manufacturer's prefix 0001001
    let unit = |serial: &str| UnitId { gtin, serial: serial.into() };
    let register = |role, prefixes: &[&str]| Operation::RegisterActor {
        actor: w.stranger.id,
        role,
        prefixes: prefixes.iter().map(|p| p.to_string()).collect(),
    };
    let commission = |serial: &str, lot: &str| Operation::CommissionUnit {
        unit: unit(serial),
        lot: lot.into(),
        expiry: START + 365 * DAY,
    };
    let recall =
        || Operation::RecallLot { gtin, lot: "L1".into(), reason: caduceus_engine::model::RecallClass::ClassII };
    let ship = |serial: &str, to: &crate::support::Actor| Operation::ShipUnit { unit: unit(serial), to: to.id };
    let receive = |serial: &str| Operation::ReceiveUnit { unit: unit(serial) };
    check(
        &w,
        &ledger,
        &[
            // A manufacturer is registered with well-formed prefixes; no other role has any.
            (&w.operator, register(Role::Manufacturer, &[]), rejected(InvalidField)),
            (&w.operator, register(Role::Manufacturer, &["12ab45"]), rejected(InvalidField)),
            (&w.operator, register(Role::Dispenser, &["099999"]), rejected(InvalidField)),
            (&w.operator, register(Role::Manufacturer, &["099999"]), committed()),
            // Another manufacturer's GTIN: neither commissioned nor recalled by this one.
            (&w.stranger, commission("R1", "L1"), rejected(PrefixNotOwned)),
            (&w.stranger, recall(), rejected(PrefixNotOwned)),
            // The owner commissions two units and moves one to the pharmacy.
            (&w.manufacturer, commission("A", "L1"), committed()),
            (&w.manufacturer, commission("B", "L1"), committed()),
            (&w.manufacturer, ship("A", &w.distributor), committed()),
            (&w.distributor, receive("A"), committed()),
            (&w.distributor, ship("A", &w.pharmacy), committed()),
            (&w.pharmacy, receive("A"), committed()),
            (&w.regulator, recall(), committed()),
            // Nothing is commissioned into the recalled lot.
            (&w.manufacturer, commission("C", "L1"), rejected(UnitRecalled)),
            // A recalled unit never goes forward to a dispenser...
            (&w.manufacturer, ship("B", &w.pharmacy), rejected(UnitRecalled)),
            // ...but goes back toward its manufacturer, by way of a distributor or directly.
            (&w.pharmacy, ship("A", &w.distributor), committed()),
            (&w.distributor, receive("A"), committed()),
            (&w.distributor, ship("A", &w.manufacturer), committed()),
            (&w.manufacturer, receive("A"), committed()),
            (&w.manufacturer, ship("B", &w.distributor), committed()),
        ],
    );
}

/// A flood of refused attempts does not bury a patient's real accesses: the report pages newest
/// first with a cursor and says how many entries there are.
#[test]
fn a_flood_of_refused_accesses_does_not_hide_the_last_real_access() {
    let w = World::new();
    let ledger = w.ledger(2);
    check(&w, &ledger, &[(&w.doctor, record(&w, 1, "Observation"), committed())]);
    // 50,000 attempts by a registered provider with no consent, in batches: each is denied
    // and logged.
    let flood: Vec<SignedTransaction> =
        (0..50_000).map(|_| w.tx(&w.nurse, access(&w, 1, Purpose::Treatment))).collect();
    for batch in flood.chunks(BATCH_TRANSACTIONS_MAX) {
        let results = ledger.submit(batch.to_vec()).unwrap();
        assert!(results.iter().all(|r| *r == rejected(ConsentMissing)));
    }
    // And 50,000 by a key no one registered: refused before the ledger, so they reach no
    // block and no access log, and burn no id.
    let (heights, state) = (ledger.heights(), ledger.state_hash().unwrap());
    let minted: Vec<SignedTransaction> =
        (0..50_000).map(|_| w.tx(&w.stranger, access(&w, 1, Purpose::Treatment))).collect();
    for batch in minted.chunks(BATCH_TRANSACTIONS_MAX) {
        let results = ledger.submit(batch.to_vec()).unwrap();
        assert!(results.iter().all(|r| *r == rejected(UnknownSigner)));
    }
    assert_eq!((ledger.heights(), ledger.state_hash().unwrap()), (heights, state), "nothing recorded");
    assert!(w.reads(&ledger, &w.operator).transaction(minted[0].id()).unwrap().is_none(), "the id is not burnt");
    // Then the custodian reads the record: permitted.
    check(&w, &ledger, &[(&w.doctor, access(&w, 1, Purpose::Treatment), committed())]);
    let first = w.reads(&ledger, &w.patient).access_report(&w.patient.id, None, 20).unwrap();
    assert_eq!(first.entries.len(), 20);
    assert_eq!(first.total, 50_001, "the report counts every entry");
    assert_eq!(first.entries[0].accessor, w.doctor.id, "the real access heads the first page");
    assert!(first.entries[0].permitted());
    // The cursor walks back through older entries, without overlap.
    let second = w.reads(&ledger, &w.patient).access_report(&w.patient.id, first.next, 20).unwrap();
    assert_eq!(second.entries.len(), 20);
    assert_eq!(second.total, first.total);
    assert!(second.entries.iter().all(|e| e.accessor == w.nurse.id && !e.permitted()));
    let (newest_second, oldest_first) = (second.entries[0].transaction, first.entries[19].transaction);
    assert_ne!(newest_second, oldest_first);
}

/// An operator revokes an actor: its later transactions are refused unrecorded, its earlier
/// ones stand (in the access report, and in a ledger that verifies). Roles change only by an
/// operator's transaction, never to or from operator.
#[test]
fn operators_revoke_actors_and_change_roles_and_no_one_else_does() {
    let w = World::new();
    let storage = std::sync::Arc::new(caduceus_engine::storage::MemoryStorage::new());
    let ledger = w.ledger_on(storage.clone(), 2);
    check(
        &w,
        &ledger,
        &[
            (&w.doctor, record(&w, 1, "Observation"), committed()),
            (&w.patient, consent(&w, 100, &[], &[Purpose::Treatment], 30), committed()),
            (&w.nurse, access(&w, 1, Purpose::Treatment), committed()),
            // Only an operator revokes, and not itself.
            (&w.doctor, Operation::RevokeActor { actor: w.nurse.id }, rejected(RoleNotPermitted)),
            (&w.operator, Operation::RevokeActor { actor: w.operator.id }, rejected(InvalidField)),
            (&w.operator, Operation::RevokeActor { actor: w.stranger.id }, rejected(UnknownActor)),
            (&w.operator, Operation::RevokeActor { actor: w.nurse.id }, committed()),
            (&w.operator, Operation::RevokeActor { actor: w.nurse.id }, rejected(ActorRevoked)),
        ],
    );
    // The revoked nurse's later attempt is refused and recorded nowhere.
    let heights = ledger.heights();
    check(&w, &ledger, &[(&w.nurse, access(&w, 1, Purpose::Treatment), rejected(SignerRevoked))]);
    assert_eq!(ledger.heights(), heights, "a revoked signer's transaction reaches no block");
    let report = w.reads(&ledger, &w.patient).access_report(&w.patient.id, None, 10).unwrap();
    assert_eq!(report.total, 1, "its earlier access stands, and only that one is logged");
    assert_eq!(report.entries[0].accessor, w.nurse.id);

    // Roles change by an operator's transaction: the doctor becomes a payer.
    let to_payer = Operation::ChangeRole { actor: w.doctor.id, role: Role::Payer, prefixes: Vec::new() };
    check(
        &w,
        &ledger,
        &[
            (&w.doctor, to_payer.clone(), rejected(RoleNotPermitted)),
            (
                &w.operator,
                Operation::ChangeRole { actor: w.doctor.id, role: Role::Operator, prefixes: Vec::new() },
                rejected(InvalidField),
            ),
            (
                &w.operator,
                Operation::ChangeRole { actor: w.operator.id, role: Role::Payer, prefixes: Vec::new() },
                rejected(InvalidField),
            ),
            (
                &w.operator,
                Operation::ChangeRole { actor: w.doctor.id, role: Role::Manufacturer, prefixes: Vec::new() },
                rejected(InvalidField),
            ),
            (
                &w.operator,
                Operation::ChangeRole { actor: w.nurse.id, role: Role::Payer, prefixes: Vec::new() },
                rejected(ActorRevoked),
            ),
            (&w.operator, to_payer, committed()),
            (&w.doctor, record(&w, 2, "Observation"), rejected(RoleNotPermitted)),
            (&w.doctor, Operation::FundAccount { amount: 10 }, committed()),
        ],
    );
    drop(ledger);
    assert!(caduceus_engine::verify::verify_storage(storage.as_ref()).unwrap().is_intact());
}

/// With a quorum of 2 of 3 genesis operators, one operator alone cannot add an operator: its
/// own approval counts once, an approval from a non-operator or over another actor counts not
/// at all, and one other operator's approval completes the quorum.
#[test]
fn adding_an_operator_needs_the_genesis_quorum() {
    use caduceus_engine::signature::approve_operator;

    use crate::support::Actor;

    let w = World::new();
    let (second, third, newcomer) = (Actor::new("second"), Actor::new("third"), Actor::new("newcomer"));
    let config = caduceus_engine::Config {
        shards: 2,
        genesis_operators: vec![w.operator.id, second.id, third.id],
        operator_quorum: 2,
    };
    let open =
        |config: &caduceus_engine::Config| caduceus_engine::Ledger::builder().clock(w.clock()).open_in_memory(config);
    let ledger = open(&config).unwrap();
    let add = |approvals| Operation::AddOperator { actor: newcomer.id, approvals };
    let register_as_operator =
        Operation::RegisterActor { actor: newcomer.id, role: Role::Operator, prefixes: Vec::new() };
    check(
        &w,
        &ledger,
        &[
            (&w.operator, register_as_operator, rejected(InvalidField)),
            (&w.operator, add(vec![]), rejected(QuorumNotMet)),
            (&w.operator, add(vec![approve_operator(&w.operator.key, &newcomer.id)]), rejected(QuorumNotMet)),
            (&w.operator, add(vec![approve_operator(&w.stranger.key, &newcomer.id)]), rejected(QuorumNotMet)),
            (&w.operator, add(vec![approve_operator(&second.key, &w.doctor.id)]), rejected(QuorumNotMet)),
            (&w.operator, add(vec![approve_operator(&second.key, &newcomer.id)]), committed()),
            (
                &newcomer,
                Operation::RegisterActor { actor: w.nurse.id, role: Role::Provider, prefixes: Vec::new() },
                committed(),
            ),
        ],
    );
    // A quorum larger than the genesis operators is refused when the ledger is made.
    let too_many = caduceus_engine::Config { operator_quorum: 4, ..config };
    assert!(open(&too_many).is_err());
}

/// An actor rotates its key with a transaction signed by its current one; it keeps its
/// identity (its records, consents and accounts), signs with the new key from then on, and
/// whatever is signed with an earlier key is refused unrecorded.
#[test]
fn an_actor_rotates_its_key_and_keeps_its_identity() {
    use caduceus_engine::signature::sign;
    use caduceus_engine::Transaction;

    use crate::support::Actor;

    let w = World::new();
    let storage = std::sync::Arc::new(caduceus_engine::storage::MemoryStorage::new());
    let ledger = w.ledger_on(storage.clone(), 2);
    let (second, third) = (Actor::new("patient key 2"), Actor::new("patient key 3"));
    let with_key = |key: &Actor, nonce: u128, operation: Operation| {
        let transaction =
            Transaction { nonce, signer: w.patient.id, key: Some(key.id), timestamp: crate::support::START, operation };
        sign(transaction, &key.key).unwrap()
    };
    check(
        &w,
        &ledger,
        &[
            (&w.doctor, record(&w, 1, "Observation"), committed()),
            (&w.patient, Operation::RotateKey { new_key: w.doctor.id }, rejected(InvalidField)),
            (&w.patient, Operation::RotateKey { new_key: second.id }, committed()),
            // The first key is stale now.
            (&w.patient, consent(&w, 100, &[], &[Purpose::Treatment], 30), rejected(StaleKey)),
        ],
    );
    // Signed with the new key, as the same patient: its own consents and reads.
    let results = ledger
        .submit(vec![
            with_key(&second, 1, consent(&w, 100, &[], &[Purpose::Treatment], 30)),
            with_key(&second, 2, access(&w, 1, Purpose::PatientRequest)),
        ])
        .unwrap();
    assert_eq!(results, vec![committed(), committed()]);
    check(&w, &ledger, &[(&w.nurse, access(&w, 1, Purpose::Treatment), committed())]);
    // Rotating again, with the current key; then the second key is stale too.
    let again = with_key(&second, 3, Operation::RotateKey { new_key: third.id });
    assert_eq!(ledger.submit(vec![again]).unwrap(), vec![committed()]);
    let stale = with_key(&second, 4, Operation::RevokeConsent { consent: 100, patient: w.patient.id });
    assert_eq!(ledger.submit(vec![stale]).unwrap(), vec![rejected(StaleKey)]);
    let current = with_key(&third, 5, Operation::RevokeConsent { consent: 100, patient: w.patient.id });
    assert_eq!(ledger.submit(vec![current]).unwrap(), vec![committed()]);
    assert_eq!(w.reads(&ledger, &w.patient).access_report(&w.patient.id, None, 10).unwrap().total, 2);
    drop(ledger);
    assert!(caduceus_engine::verify::verify_storage(storage.as_ref()).unwrap().is_intact());
}

/// Submits one transaction and returns its id and result.
fn run(
    w: &World,
    ledger: &caduceus_engine::Ledger,
    signer: &crate::support::Actor,
    operation: Operation,
) -> (u128, caduceus_engine::TxResult) {
    let signed = w.tx(signer, operation);
    (signed.id(), ledger.submit(vec![signed]).expect("submit")[0])
}

#[test]
fn an_investigator_enrols_a_patient_only_on_its_research_consent() {
    use caduceus_engine::ReadError;
    let w = World::new();
    let ledger = w.ledger(3);
    let (study, result) = run(&w, &ledger, &w.doctor, Operation::RegisterStudy { protocol: [7; 32] });
    assert_eq!(result, committed());
    let enrol = |consent| Operation::EnrollSubject { study, patient: w.patient.id, consent };
    let grant = |consent, grantee: &crate::support::Actor, purposes: &[Purpose]| Operation::GrantConsent {
        consent,
        patient: w.patient.id,
        grantee: grantee.id,
        scope: vec![],
        purposes: Purposes::of(purposes),
        valid_from: START - DAY,
        valid_until: START + 30 * DAY,
    };
    check(
        &w,
        &ledger,
        &[
            (&w.nurse, enrol(1), rejected(NotInvestigator)),
            (&w.doctor, enrol(1), rejected(UnknownConsent)),
            (&w.patient, grant(1, &w.doctor, &[Purpose::Treatment]), committed()),
            (&w.doctor, enrol(1), rejected(ConsentPurpose)),
            (&w.patient, grant(2, &w.nurse, &[Purpose::Research]), committed()),
            (&w.doctor, enrol(2), rejected(ConsentMissing)),
            (&w.patient, grant(3, &w.doctor, &[Purpose::Research]), committed()),
            (
                &w.doctor,
                Operation::EnrollSubject { study: study + 1, patient: w.patient.id, consent: 3 },
                rejected(UnknownStudy),
            ),
            (&w.doctor, Operation::EnrollSubject { study, patient: w.nurse.id, consent: 3 }, rejected(UnknownPatient)),
            (
                &w.doctor,
                Operation::EnrollSubject { study, patient: w.other_patient.id, consent: 3 },
                rejected(UnknownConsent),
            ),
            (&w.doctor, enrol(3), committed()),
            (&w.doctor, enrol(3), rejected(AlreadyEnrolled)),
        ],
    );
    // The enrolment is the patient's and the investigator's to read, no one else's.
    let enrolment = w.reads(&ledger, &w.patient).enrolment(&w.patient.id, study).unwrap().expect("enrolled");
    assert_eq!((enrolment.consent, enrolment.withdrawn_at), (3, None));
    assert!(w.reads(&ledger, &w.doctor).enrolment(&w.patient.id, study).unwrap().is_some());
    let nurse = w.reads(&ledger, &w.nurse).enrolment(&w.patient.id, study);
    assert!(matches!(nurse, Err(ReadError::Forbidden { .. })), "{nurse:?}");
    let withdraw = Operation::WithdrawSubject { study, patient: w.patient.id };
    check(
        &w,
        &ledger,
        &[
            (&w.other_patient, withdraw.clone(), rejected(NotThePatient)),
            (&w.nurse, withdraw.clone(), rejected(NotInvestigator)),
            (&w.patient, withdraw.clone(), committed()),
            (&w.doctor, withdraw.clone(), rejected(NotEnrolled)),
            (&w.patient, Operation::RevokeConsent { consent: 3, patient: w.patient.id }, committed()),
            (&w.doctor, enrol(3), rejected(ConsentRevoked)),
            (&w.nurse, Operation::CloseStudy { study }, rejected(NotInvestigator)),
            (&w.doctor, Operation::CloseStudy { study }, committed()),
            (&w.doctor, Operation::CloseStudy { study }, rejected(StudyClosed)),
            (&w.patient, grant(4, &w.doctor, &[Purpose::Research]), committed()),
            (&w.doctor, enrol(4), rejected(StudyClosed)),
        ],
    );
    let withdrawn = w.reads(&ledger, &w.patient).enrolment(&w.patient.id, study).unwrap().expect("kept");
    assert!(withdrawn.withdrawn_at.is_some());
    let closed = ledger.study(study).unwrap().expect("registered");
    assert_eq!((closed.investigator, closed.protocol), (w.doctor.id, [7; 32]));
    assert!(closed.closed_at.is_some());
}

#[test]
fn an_issuer_issues_and_revokes_providers_credentials_and_anyone_verifies_them() {
    let w = World::new();
    let ledger = w.ledger(3);
    let other_issuer = crate::support::Actor::new("other issuer");
    for issuer in [&w.stranger, &other_issuer] {
        let register = Operation::RegisterActor { actor: issuer.id, role: Role::Issuer, prefixes: vec![] };
        assert_eq!(run(&w, &ledger, &w.operator, register).1, committed());
    }
    let issue = |subject: &crate::support::Actor, kind: &str, days: u64| Operation::IssueCredential {
        subject: subject.id,
        kind: kind.into(),
        document: [9; 32],
        valid_from: START - DAY,
        valid_until: START - DAY + days * DAY,
    };
    let (licence, result) = run(&w, &ledger, &w.stranger, issue(&w.doctor, "license", 365));
    assert_eq!(result, committed());
    check(
        &w,
        &ledger,
        &[
            (&w.stranger, issue(&w.patient, "license", 365), rejected(UnknownActor)),
            (&w.stranger, issue(&w.doctor, "", 365), rejected(InvalidField)),
            // A kind is a code, not text a reader's terminal would act on.
            (&w.stranger, issue(&w.doctor, "license\nvalid now", 365), rejected(InvalidField)),
            (&w.operator, Operation::RevokeActor { actor: w.nurse.id }, committed()),
            (&w.stranger, issue(&w.nurse, "license", 365), rejected(ActorRevoked)),
            (&w.stranger, issue(&w.doctor, "cme", 0), rejected(InvalidField)),
            (&w.regulator, issue(&w.doctor, "license", 365), rejected(RoleNotPermitted)),
            (&w.doctor, issue(&w.doctor, "license", 365), rejected(RoleNotPermitted)),
        ],
    );
    let found = ledger.credential(licence).unwrap().expect("issued");
    assert_eq!((found.issuer, found.subject, found.kind.as_str()), (w.stranger.id, w.doctor.id, "license"));
    assert!(found.valid_at(START) && !found.valid_at(START + 365 * DAY));
    assert!(ledger.credential(licence + 1).unwrap().is_none());
    let revoke =
        |credential, subject: &crate::support::Actor| Operation::RevokeCredential { credential, subject: subject.id };
    check(
        &w,
        &ledger,
        &[
            (&other_issuer, revoke(licence, &w.doctor), rejected(NotIssuer)),
            (&w.stranger, revoke(licence + 1, &w.doctor), rejected(UnknownCredential)),
            // The revocation names the credential's own holder.
            (&w.stranger, revoke(licence, &w.nurse), rejected(InvalidField)),
        ],
    );
    let (revocation, result) = run(&w, &ledger, &w.stranger, revoke(licence, &w.doctor));
    assert_eq!(result, committed());
    assert_eq!(run(&w, &ledger, &w.stranger, revoke(licence, &w.doctor)).1, rejected(CredentialRevoked));
    // The provider is a party to its credential's revocation: it reads and proves it.
    assert!(w.reads(&ledger, &w.doctor).prove(revocation).unwrap().is_some());
    let revoked = ledger.credential(licence).unwrap().expect("kept");
    assert!(revoked.revoked_at.is_some() && !revoked.valid_at(START));
}
