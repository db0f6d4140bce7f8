//! Clinical studies, enrolments and providers' credentials from FHIR: the project's study
//! bundle, the HL7 examples' qualifications, and damaged resources, each mapped or rejected at
//! its element with the reason.

use std::path::PathBuf;

use caduceus_interop::fhir::read_json;
use caduceus_interop::fhir_plan::{fhir_time, plan, ActorKind, Plan, OPEN_END};
use caduceus_interop::report::Place;
use serde_json::{json, Value};

fn data(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/data").join(path)
}

fn planned(path: &str) -> Plan {
    plan(&read_json(&std::fs::read(data(path)).unwrap()).unwrap())
}

fn planned_value(value: &Value) -> Plan {
    plan(&read_json(&serde_json::to_vec(value).unwrap()).unwrap())
}

fn collection(resources: &[Value]) -> Value {
    let entry: Vec<Value> = resources.iter().map(|r| json!({ "resource": r })).collect();
    json!({ "resourceType": "Bundle", "type": "collection", "entry": entry })
}

fn rejected_at(plan: &Plan) -> Vec<String> {
    plan.rejections.iter().map(|r| r.place.to_string()).collect()
}

/// The study bundle: the study registered by its principal investigator, two enrolments (each
/// on the consent its ResearchSubject names), the subject in screening rejected at its status;
/// the licence and the education certificate issued by their Organizations, which are issuers.
#[test]
fn the_study_bundle_is_a_study_its_enrolments_and_the_investigator_s_credentials() {
    let plan = planned("caduceus/research-study.json");
    assert_eq!(plan.studies.len(), 1);
    let study = &plan.studies[0];
    assert_eq!(
        (study.study.as_str(), study.investigator.as_str(), study.closed),
        ("fhir.ResearchStudy.rs-study", "fhir.Practitioner.rs-pi", false)
    );
    let enrolments: Vec<(&str, &str, bool, Option<&str>)> = plan
        .enrolments
        .iter()
        .map(|e| (e.patient.as_str(), e.consent.as_str(), e.enrolled, e.investigator.as_deref()))
        .collect();
    assert_eq!(
        enrolments,
        vec![
            ("fhir.Patient.rs-patient-1", "rs-consent-1", true, Some("fhir.Practitioner.rs-pi")),
            ("fhir.Patient.rs-patient-2", "rs-consent-2", true, Some("fhir.Practitioner.rs-pi")),
        ]
    );
    assert_eq!(rejected_at(&plan), vec!["$.entry[10].resource.status"]);
    assert!(plan.rejections[0].reason.contains("\"screening\" is not enrolled"), "{}", plan.rejections[0]);
    let credentials: Vec<(&str, &str, &str, u64, u64)> = plan
        .credentials
        .iter()
        .map(|c| (c.kind.as_str(), c.subject.as_str(), c.issuer.as_str(), c.valid_from, c.valid_until))
        .collect();
    let day = |d: &str| fhir_time(d, false).unwrap();
    assert_eq!(
        credentials,
        vec![
            (
                "MD",
                "fhir.Practitioner.rs-pi",
                "fhir.issuer.Organization.rs-board",
                day("2015-07-01"),
                day("2099-07-01")
            ),
            ("cme", "fhir.Practitioner.rs-pi", "fhir.issuer.Organization.rs-cme-body", day("2026-03-01"), OPEN_END),
        ]
    );
    let kind_of = |key: &str| plan.actors.iter().find(|a| a.key == key).map(|a| a.kind);
    // An issuing body signs as an issuer under its own key; the Organization resource stays a
    // provider, so one Organization may be both.
    assert_eq!(kind_of("fhir.issuer.Organization.rs-board"), Some(ActorKind::Issuer));
    assert_eq!(kind_of("fhir.issuer.Organization.rs-cme-body"), Some(ActorKind::Issuer));
    assert_eq!(kind_of("fhir.Organization.rs-board"), Some(ActorKind::Provider));
    assert_eq!(kind_of("fhir.Practitioner.rs-pi"), Some(ActorKind::Provider));
    // Consents as ever: one grant each, to the investigator.
    assert_eq!(plan.consents.len(), 2);
    assert!(plan.records.is_empty(), "no resource of the bundle is a patient's record");
}

/// The HL7 examples' practitioners: a qualification whose issuer is named by display becomes a
/// credential from that issuer; one that names no issuer is rejected at `.issuer`.
#[test]
fn the_hl7_qualifications_are_credentials_or_rejected_at_their_issuer() {
    let example = planned("fhir-r4-examples-hl7/Practitioner-example.json");
    assert_eq!(example.credentials.len(), 1, "{:?}", example.rejections);
    let credential = &example.credentials[0];
    assert_eq!((credential.kind.as_str(), credential.subject.as_str()), ("BS", "fhir.Practitioner.example"));
    assert!(credential.issuer.starts_with("fhir.issuer.named."), "{}", credential.issuer);
    assert_eq!((credential.valid_from, credential.valid_until), (fhir_time("1995", false).unwrap(), OPEN_END));
    let f201 = planned("fhir-r4-examples-hl7/Practitioner-f201.json");
    assert!(f201.credentials.is_empty());
    assert_eq!(rejected_at(&f201), vec!["$.qualification[0].issuer"]);
    // The practitioner itself is an actor either way.
    assert!(f201.actors.iter().any(|a| a.key == "fhir.Practitioner.f201" && a.kind == ActorKind::Provider));
}

/// What the ledger cannot hold of a study, a subject or a credential is rejected at its element.
#[test]
fn damaged_studies_subjects_and_credentials_are_rejected_at_their_elements() {
    let pi = json!({ "resourceType": "Practitioner", "id": "pi" });
    let board = json!({ "resourceType": "Organization", "id": "board" });
    let study = |status: &str, lead: Value| {
        let mut study = json!({ "resourceType": "ResearchStudy", "id": "s", "status": status });
        study.as_object_mut().unwrap().extend(lead.as_object().unwrap().clone());
        study
    };
    let led_by_pi = json!({ "principalInvestigator": { "reference": "Practitioner/pi" } });
    let subject = |status: &str, consent: Option<&str>| {
        let mut subject = json!({
            "resourceType": "ResearchSubject", "id": "x", "status": status,
            "study": { "reference": "ResearchStudy/s" }, "individual": { "reference": "Patient/p" }
        });
        if let Some(consent) = consent {
            subject["consent"] = json!({ "reference": format!("Consent/{consent}") });
        }
        subject
    };
    let cases: Vec<(Value, &str)> = vec![
        (study("withdrawn", led_by_pi.clone()), "$.entry[0].resource.status"),
        (study("active", json!({})), "$.entry[0].resource.principalInvestigator"),
        (subject("on-study", None), "$.entry[0].resource.consent"),
        (
            json!({ "resourceType": "DocumentReference", "id": "d", "status": "current",
                    "subject": { "reference": "Practitioner/pi" },
                    "type": { "coding": [{ "code": "license" }] },
                    "author": [{ "reference": "Practitioner/pi" }],
                    "content": [{ "attachment": { "contentType": "application/pdf" } }] }),
            "$.entry[0].resource.authenticator",
        ),
        (
            json!({ "resourceType": "Basic", "id": "b", "subject": { "reference": "Practitioner/pi" },
                    "author": { "reference": "Organization/board" }, "code": { "text": "no coding" } }),
            "$.entry[0].resource.code",
        ),
        (
            json!({ "resourceType": "Practitioner", "id": "pi2", "qualification": [{
                "code": { "coding": [{ "code": "MD" }] }, "issuer": { "reference": "Organization/board" },
                "period": { "start": "2020-01-01", "end": "2019-01-01" } }] }),
            "$.entry[0].resource.qualification[0]",
        ),
    ];
    for (resource, place) in cases {
        let plan = planned_value(&collection(&[resource.clone(), pi.clone(), board.clone()]));
        assert_eq!(rejected_at(&plan), vec![place], "{resource}");
        assert!(plan.studies.is_empty() && plan.enrolments.is_empty() && plan.credentials.is_empty());
    }
    // A credential exported again, with other bookkeeping and its keys in another order, is the
    // same document; a kind that is not a code is rejected at its element.
    let basic = |meta: &str| {
        json!({ "resourceType": "Basic", "id": "b", "meta": { "versionId": meta },
                "code": { "coding": [{ "code": "cme" }] }, "subject": { "reference": "Practitioner/pi" },
                "author": { "reference": "Organization/board" } })
    };
    let mut reordered =
        json!({ "author": { "reference": "Organization/board" }, "subject": { "reference": "Practitioner/pi" } });
    reordered.as_object_mut().unwrap().extend(basic("2").as_object().unwrap().clone());
    let mut bare = basic("1");
    bare.as_object_mut().unwrap().shift_remove("meta");
    let documents: Vec<[u8; 32]> = [basic("1"), reordered, bare]
        .iter()
        .map(|b| planned_value(&collection(&[b.clone(), pi.clone(), board.clone()])).credentials[0].document)
        .collect();
    assert_eq!((documents[0], documents[0]), (documents[1], documents[2]));
    let mut spaced = basic("1");
    spaced["code"]["coding"][0]["code"] = json!("cme certificate");
    assert_eq!(
        rejected_at(&planned_value(&collection(&[spaced, pi.clone(), board.clone()]))),
        vec!["$.entry[0].resource.code"]
    );
    // A study paused is registered open (the ledger has no reopening).
    let paused = planned_value(&collection(&[study("temporarily-closed-to-accrual", led_by_pi.clone()), pi.clone()]));
    assert!(!paused.studies[0].closed);
    // A study closed to accrual is registered and closed; a subject off the study withdrawn; a
    // subject of a study in another file is planned without its investigator, for the importer
    // to find among the studies it imported before.
    let plan = planned_value(&collection(&[study("closed-to-accrual", led_by_pi), pi.clone()]));
    assert!(plan.studies[0].closed);
    let plan = planned_value(&collection(&[subject("withdrawn", Some("c"))]));
    assert_eq!(plan.enrolments.len(), 1);
    assert!(!plan.enrolments[0].enrolled && plan.enrolments[0].investigator.is_none());
    // A patient's DocumentReference stays a record of that patient.
    let record = json!({ "resourceType": "DocumentReference", "id": "r", "status": "current",
                         "subject": { "reference": "Patient/p" }, "author": [{ "reference": "Practitioner/pi" }],
                         "content": [{ "attachment": { "contentType": "text/plain" } }] });
    let plan = planned_value(&collection(&[record, pi]));
    assert_eq!((plan.records.len(), plan.credentials.len()), (1, 0));
    assert_eq!(plan.rejections.first().map(|r| &r.place), None::<&Place>);
}
