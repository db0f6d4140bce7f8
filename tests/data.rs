//! Real healthcare files from `tests/data/`, mapped onto the ledger:
//! CMS SynPUF carrier claims (codes, providers, amounts), a GS1 US pharma
//! EPCIS document (SGTINs, lots, expiry) and HL7 FHIR R4 Consent examples.

use std::path::PathBuf;

use caduceus_engine::model::{Adjudication, ClaimLine, Operation, Purpose, Purposes, Reason, Role, UnitId};
use caduceus_engine::shard::timestamp_of;

use crate::support::{check, committed, dispense, rejected, submit_claim, Actor, World};

/// A file of the real test data in `tests/data/` (each source with its SOURCE.md and licence).
/// The package directory is read when the test runs (cargo sets it), not when it was
/// compiled: a target folder shared between checkouts may hold a test binary built from
/// another one.
fn data(path: &str) -> PathBuf {
    let package = std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").to_owned());
    let file = PathBuf::from(package).join("data").join(path);
    assert!(file.exists(), "{} is missing from the repository's test data", file.display());
    file
}

fn register(world: &World, ledger: &caduceus_engine::Ledger, actors: &[(&Actor, Role)]) {
    let batch = actors
        .iter()
        .map(|(a, role)| {
            world.tx(&world.operator, Operation::RegisterActor { actor: a.id, role: *role, prefixes: Vec::new() })
        })
        .collect();
    assert!(ledger.submit(batch).unwrap().iter().all(|r| r.is_committed()));
}

/// One SynPUF carrier claim row: patient id, provider NPI, service date, lines (HCPCS, ICD-9, cents).
fn carrier_claims(path: &str) -> Vec<(String, String, u32, Vec<ClaimLine>)> {
    let text = std::fs::read_to_string(data(path)).unwrap();
    let mut rows = text.lines();
    let header: Vec<&str> = rows.next().unwrap().split(',').map(|h| h.trim_matches('"')).collect();
    let column = |name: &str| header.iter().position(|h| *h == name).unwrap_or_else(|| panic!("column {name}"));
    rows.map(|row| {
        let fields: Vec<&str> = row.split(',').collect();
        let lines = (1..=13)
            .filter_map(|i| {
                let procedure = fields[column(&format!("HCPCS_CD_{i}"))];
                let diagnosis = fields[column(&format!("LINE_ICD9_DGNS_CD_{i}"))];
                let allowed: f64 = fields[column(&format!("LINE_ALOWD_CHRG_AMT_{i}"))].parse().unwrap_or(0.0);
                (!procedure.is_empty() && allowed > 0.0).then(|| ClaimLine {
                    procedure: procedure.into(),
                    diagnosis: diagnosis.into(),
                    amount: (allowed * 100.0).round() as u64,
                })
            })
            .collect();
        (
            fields[column("DESYNPUF_ID")].to_owned(),
            fields[column("PRF_PHYSN_NPI_1")].to_owned(),
            fields[column("CLM_FROM_DT")].parse().unwrap(),
            lines,
        )
    })
    .collect()
}

#[test]
fn synpuf_carrier_claims_are_submitted_caught_as_duplicates_and_paid() {
    let world = World::new();
    let ledger = world.ledger(4);
    let mut claims = carrier_claims("cms-synpuf-ohdsi/DE_0/DE1_0_2008_to_2010_Carrier_Claims_Sample_0A.csv");
    claims.extend(carrier_claims("cms-synpuf-ohdsi/DE_0/DE1_0_2008_to_2010_Carrier_Claims_Sample_0B.csv"));
    assert!(claims.len() >= 2 && claims.iter().all(|c| !c.3.is_empty()));
    for (number, (patient_id, npi, date, lines)) in claims.into_iter().enumerate() {
        let patient = Actor::new(&format!("synpuf {patient_id}"));
        let provider = Actor::new(&format!("npi {npi}"));
        register(&world, &ledger, &[(&patient, Role::Patient), (&provider, Role::Provider)]);
        let total: u64 = lines.iter().map(|l| l.amount).sum();
        let claim = |id: u128| submit_claim(id, &patient.id, &provider.id, &world.payer.id, date, &lines);
        let base = 1_000 * (number as u128 + 1);
        let patient_id = patient.id;
        check(
            &world,
            &ledger,
            &[
                (&provider, claim(base), committed()),
                (&provider, claim(base + 1), rejected(Reason::DuplicateClaim)),
                (
                    &world.payer,
                    Operation::AdjudicateClaim {
                        claim: base,
                        patient: patient_id,
                        decision: Adjudication::Approve { amount: total },
                    },
                    committed(),
                ),
                (&world.payer, Operation::FundAccount { amount: total }, committed()),
                (
                    &world.payer,
                    Operation::PayClaim { claim: base, patient: patient_id, provider: provider.id, amount: total },
                    committed(),
                ),
                (
                    &world.payer,
                    Operation::PayClaim { claim: base, patient: patient_id, provider: provider.id, amount: total },
                    rejected(Reason::ClaimAlreadyPaid),
                ),
            ],
        );
        assert_eq!(world.reads(&ledger, &provider).account(&provider.id).unwrap().unwrap().balance, total);
    }
    let (balances, funded) = ledger.fund_totals();
    assert_eq!(balances, funded);
}

/// GTIN-14 of an SGTIN EPC URN's company prefix and item reference (indicator digit first), with its check digit.
fn sgtin(urn: &str) -> UnitId {
    let body = urn.strip_prefix("urn:epc:id:sgtin:").unwrap();
    let mut parts = body.split('.');
    let (prefix, item, serial) = (parts.next().unwrap(), parts.next().unwrap(), parts.next().unwrap());
    let digits13 = format!("{}{}{}", &item[..1], prefix, &item[1..]);
    assert_eq!(digits13.len(), 13);
    let sum: u32 =
        digits13.chars().rev().enumerate().map(|(i, c)| c.to_digit(10).unwrap() * if i % 2 == 0 { 3 } else { 1 }).sum();
    let check = (10 - sum % 10) % 10;
    UnitId { gtin: format!("{digits13}{check}").parse().unwrap(), serial: serial.into() }
}

fn between<'a>(text: &'a str, open: &str, close: &str) -> Vec<&'a str> {
    text.split(open).skip(1).filter_map(|rest| rest.split(close).next()).collect()
}

#[test]
fn epcis_pharma_units_are_commissioned_once_traced_and_expire() {
    let text = std::fs::read_to_string(data(
        "epcis-openepcis-test-resources/core/src/main/resources/1.2/EPCIS/XML/Capture/Documents/GS1_US_Pharma_Example_2_2_1_1.xml",
    ))
    .unwrap();
    // The ledger's clock starts at the document's first event: commit time never goes back.
    let first_date: u32 = between(&text, "<eventTime>", "</eventTime>")[0][..10].replace('-', "").parse().unwrap();
    let world = World::new();
    world.time.store(timestamp_of(first_date), std::sync::atomic::Ordering::SeqCst);
    let ledger = world.ledger(4);
    let mut commissioned = Vec::new();
    for event in between(&text, "<ObjectEvent>", "</ObjectEvent>") {
        // Serialized drug units (SGTINs) only; a pallet's SSCC is a logistic unit, not a unit of product.
        if !event.contains("bizstep:commissioning") || !event.contains("urn:epc:id:sgtin:") {
            continue;
        }
        let time = between(event, "<eventTime>", "</eventTime>")[0];
        let date: u32 = time[..10].replace('-', "").parse().unwrap();
        world.time.store(timestamp_of(date) + 12 * 3_600_000, std::sync::atomic::Ordering::SeqCst);
        let lot = between(event, "<cbvmda:lotNumber>", "</cbvmda:lotNumber>")[0];
        let expiry_date: u32 = between(event, "<cbvmda:itemExpirationDate>", "</cbvmda:itemExpirationDate>")[0]
            .replace('-', "")
            .parse()
            .unwrap();
        for epc in between(event, "<epc>", "</epc>") {
            let unit = sgtin(epc);
            let operation =
                Operation::CommissionUnit { unit: unit.clone(), lot: lot.into(), expiry: timestamp_of(expiry_date) };
            check(
                &world,
                &ledger,
                &[
                    (&world.manufacturer, operation.clone(), committed()),
                    (&world.manufacturer, operation, rejected(Reason::UnitExists)),
                ],
            );
            commissioned.push(unit);
        }
    }
    assert_eq!(commissioned.len(), 15, "12 items and 3 cases in the document");
    // Indicator 0, company prefix 030001, item 012345, check digit 5 (weighted sum 45).
    assert_eq!(commissioned[0].element_string(), "(01)00300010123455(21)11");
    let first = commissioned[0].clone();
    check(
        &world,
        &ledger,
        &[
            (&world.manufacturer, Operation::ShipUnit { unit: first.clone(), to: world.pharmacy.id }, committed()),
            (&world.pharmacy, Operation::ReceiveUnit { unit: first.clone() }, committed()),
        ],
    );
    // The lot expires on 2025-03-27; a dispense after that is refused.
    world.time.store(timestamp_of(2025_03_28), std::sync::atomic::Ordering::SeqCst);
    check(
        &world,
        &ledger,
        &[(&world.pharmacy, dispense(first.clone(), &world.patient.id), rejected(Reason::UnitExpired))],
    );
    let trace = world.reads(&ledger, &world.pharmacy).custody_trace(&first, None, 100).unwrap();
    assert_eq!(
        trace.entries.iter().rev().map(|e| e.event.as_str()).collect::<Vec<_>>(),
        ["commission-unit", "commission-unit", "ship-unit", "receive-unit", "dispense-unit"]
    );
    assert!(ledger.verify_unit(&first).unwrap().genuine() && ledger.verify_unit(&first).unwrap().expired);
    assert!(!ledger.verify_unit(&UnitId { serial: "99999".into(), ..first }).unwrap().genuine());
}

#[test]
fn fhir_consents_are_enforced_by_their_period() {
    let world = World::new();
    let ledger = world.ledger(3);
    check(
        &world,
        &ledger,
        &[(
            &world.doctor,
            Operation::RegisterRecord {
                record: 1,
                patient: world.patient.id,
                content_hash: [7; 32],
                resource_type: "Observation".into(),
            },
            committed(),
        )],
    );
    let mut periods = 0;
    for (number, name) in
        ["Consent-consent-example-basic.json", "Consent-consent-example-notTime.json"].iter().enumerate()
    {
        let consent: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(data(&format!("fhir-r4-examples-hl7/{name}"))).unwrap())
                .unwrap();
        assert_eq!(consent["resourceType"], "Consent");
        let period = &consent["provision"]["period"];
        let date = |field: &str| -> u32 { period[field].as_str().unwrap().replace('-', "").parse().unwrap() };
        let grant = Operation::GrantConsent {
            consent: number as u128 + 1,
            patient: world.patient.id,
            grantee: world.nurse.id,
            scope: vec![],
            purposes: Purposes::of(&[Purpose::Treatment]),
            valid_from: timestamp_of(date("start")),
            valid_until: timestamp_of(date("end")),
        };
        check(
            &world,
            &ledger,
            &[
                (&world.patient, grant, committed()),
                // Both periods ended years before the tests' now (2027): access is refused.
                (
                    &world.nurse,
                    Operation::AccessRecord { record: 1, patient: world.patient.id, purpose: Purpose::Treatment },
                    rejected(Reason::ConsentExpired),
                ),
            ],
        );
        periods += 1;
    }
    assert_eq!(periods, 2);
}
