//! EPCIS documents read and mapped onto the supply chain's operations: the corpus as it is
//! (openepcis' documents, events and invalid set; the event-hash examples), GS1 identifiers
//! against the GS1 syntax engine's vectors, and damaged input, each part read or rejected with
//! its event index and field and the reason.

mod common;
use common::{corpus, data};

use std::collections::{BTreeMap, BTreeSet};

use caduceus_interop::detect::{detect, Format};
use caduceus_interop::epcis::{read_json, read_xml, Read};
use caduceus_interop::epcis_plan::{plan, PartyRole, Plan, Step};
use caduceus_interop::gs1;
use caduceus_interop::report::{Place, Rejection};

fn read(bytes: &[u8]) -> Result<Read, Rejection> {
    match detect(bytes) {
        Some(Format::EpcisJson) => read_json(bytes),
        Some(Format::EpcisXml) => read_xml(bytes),
        other => Err(Rejection::new(Place::File, format!("not EPCIS ({other:?})"))),
    }
}

/// A file read and planned: its plan and every rejection.
fn import(bytes: &[u8]) -> Result<(Plan, Vec<Rejection>), Rejection> {
    let read = read(bytes)?;
    let mut plan = plan(&read);
    let mut rejections = read.rejections;
    rejections.append(&mut plan.rejections);
    Ok((plan, rejections))
}

/// A reason without the values that name the one case (quoted, or after a colon).
fn class(reason: &str) -> String {
    let mut out = String::new();
    for (i, part) in reason.split('"').enumerate() {
        out.push_str(if i % 2 == 0 { part } else { "_" });
    }
    out.split(": ").next().unwrap().to_owned()
}

#[test]
fn every_epcis_file_of_the_corpus_is_read_or_rejected_with_a_place() {
    let mut table: BTreeMap<(String, &str), usize> = BTreeMap::new();
    let mut reasons: BTreeMap<String, usize> = BTreeMap::new();
    let mut steps: BTreeMap<&str, usize> = BTreeMap::new();
    let mut unmapped: BTreeMap<String, usize> = BTreeMap::new();
    let mut unflagged = Vec::new();
    for dir in ["epcis-openepcis-test-resources", "epcis-hash-generator-examples"] {
        for file in corpus(dir) {
            let name = file.strip_prefix(data()).unwrap().display().to_string();
            let folder =
                name.split('/').take(if dir.starts_with("epcis-open") { 10 } else { 1 }).collect::<Vec<_>>().join("/");
            let folder = folder.replace("epcis-openepcis-test-resources/core/src/main/resources/", "openepcis/");
            let bytes = std::fs::read(&file).unwrap();
            let outcome = match import(&bytes) {
                Ok((plan, rejections)) => {
                    for rejection in &rejections {
                        println!("{name}: {rejection}");
                        assert!(matches!(rejection.place, Place::Event { field: Some(_), .. }), "{name}: {rejection}");
                        *reasons.entry(class(&rejection.reason)).or_default() += 1;
                    }
                    for step in &plan.steps {
                        *steps.entry(step.step.name()).or_default() += 1;
                    }
                    *steps.entry("recall").or_default() += plan.recalls.len();
                    for (step, n) in &plan.unmapped {
                        *unmapped.entry(step.clone()).or_default() += n;
                    }
                    if rejections.is_empty() {
                        "imported whole"
                    } else {
                        "imported, parts rejected"
                    }
                }
                Err(rejection) => {
                    println!("{name}: rejected: {rejection}");
                    assert!(!rejection.reason.is_empty());
                    *reasons.entry(class(&rejection.reason)).or_default() += 1;
                    "rejected"
                }
            };
            if name.contains("/Capture/Invalid/") && outcome == "imported whole" {
                unflagged.push(name.clone());
            }
            *table.entry((folder, outcome)).or_default() += 1;
        }
    }
    for ((folder, outcome), n) in &table {
        println!("| {folder} | {outcome} | {n} |");
    }
    println!("rejections by reason: {reasons:#?}");
    println!("operations planned: {steps:?}");
    println!("events without a ledger operation: {unmapped:?}");
    // Every document of openepcis' invalid capture set is caught at its fault, but the one whose
    // fault is only its elements' order (which the reader does not check: it reads by name).
    assert_eq!(unflagged, vec!["epcis-openepcis-test-resources/core/src/main/resources/2.0/EPCIS/XML/Capture/Invalid/ObjectEvent_with_wrong_element_order.xml"]);
    // Every document of the event-hash examples is read (their .hashes and .prehashes are not EPCIS).
    let examples =
        |outcome: &str| table.get(&("epcis-hash-generator-examples".to_owned(), outcome)).copied().unwrap_or(0);
    assert_eq!((examples("imported whole"), examples("imported, parts rejected"), examples("rejected")), (30, 9, 56));
    assert_eq!(steps, BTreeMap::from([("commission", 30), ("receive", 41), ("recall", 0), ("ship", 39)]));
}

/// The GS1 syntax engine's vectors for Digital Link URIs and bracketed element strings, run
/// through `gs1`: each vector either agrees (both accept with the same element string, or both
/// refuse), or uses an AI outside the supply chain's (which `gs1` refuses by name).
#[test]
fn gs1_identifiers_agree_with_the_syntax_engines_vectors() {
    let vectors =
        std::fs::read_to_string(data().join("gs1-syntax-engine-vectors/gs1_syntax_engine_test_vectors.jsonl")).unwrap();
    let mut table: BTreeMap<(String, &str), usize> = BTreeMap::new();
    let mut disagreements = Vec::new();
    // The C tests switch options between vectors (convenience names for AIs, for one); an input
    // the vectors expect both accepted and refused depends on an option they do not carry.
    let mut expectations: BTreeMap<(String, String), BTreeSet<String>> = BTreeMap::new();
    for line in vectors.lines() {
        let vector: serde_json::Value = serde_json::from_str(line).unwrap();
        let args = vector["args"].as_array().unwrap();
        let key = (vector["fn"].as_str().unwrap().to_owned(), args[1].as_str().unwrap_or("").to_owned());
        expectations.entry(key).or_default().insert(args[0].as_str().unwrap_or("").to_owned());
    }
    for line in vectors.lines() {
        let vector: serde_json::Value = serde_json::from_str(line).unwrap();
        let function = vector["fn"].as_str().unwrap();
        let args: Vec<&str> = vector["args"].as_array().unwrap().iter().map(|a| a.as_str().unwrap_or("")).collect();
        let result = match function {
            "test_parseDLuri" => gs1::parse_digital_link(args[1]),
            "test_parseAIdata" => gs1::parse_element_string(args[1]),
            _ => {
                *table.entry((function.to_owned(), "not a parse of either form")).or_default() += 1;
                continue;
            }
        };
        if expectations[&(function.to_owned(), args[1].to_owned())].len() > 1 {
            *table.entry((function.to_owned(), "expected both ways (an engine option)")).or_default() += 1;
            continue;
        }
        let expected = (args[0] == "true").then(|| args[2].to_owned());
        let outcome = match (&result, &expected) {
            (Ok(got), Some(want)) if got.unbracketed() == *want => "agree: accepted",
            (Err(_), None) => "agree: refused",
            (Err(reason), Some(_)) if reason.contains("supply chain") => "AI outside the supply chain's",
            _ => {
                disagreements.push(format!("{}:{} {args:?} -> {result:?}", vector["src"], vector["line"]));
                "disagree"
            }
        };
        *table.entry((function.to_owned(), outcome)).or_default() += 1;
    }
    for ((function, outcome), n) in &table {
        println!("| {function} | {outcome} | {n} |");
    }
    for d in &disagreements {
        println!("{d}");
    }
    assert!(disagreements.is_empty(), "{} vectors disagree", disagreements.len());
}

fn document(events: &str) -> Vec<u8> {
    format!(
        r#"{{"@context":["https://ref.gs1.org/standards/epcis/epcis-context.jsonld"],"type":"EPCISDocument",
        "schemaVersion":"2.0","creationDate":"2026-01-01T00:00:00Z","epcisBody":{{"eventList":[{events}]}}}}"#
    )
    .into_bytes()
}

const COMMISSION: &str = r#"{"type":"ObjectEvent","eventTime":"2026-01-01T00:00:00Z","eventTimeZoneOffset":"+00:00",
    "epcList":["urn:epc:id:sgtin:0614141.107346.1"],"action":"ADD","bizStep":"commissioning",
    "bizLocation":{"id":"urn:epc:id:sgln:0614141.00777.0"},
    "ilmd":{"cbvmda:lotNumber":"L1","cbvmda:itemExpirationDate":"2030-01-31"}}"#;

fn event_place(index: usize, field: &str) -> Place {
    Place::Event { index, field: Some(field.to_owned()) }
}

/// Damaged documents: each fault is rejected at its event and field, the document's other
/// events still planned; nothing reaches an assertion.
#[test]
fn damaged_documents_are_rejected_at_their_event_and_field() {
    // A Digital Link whose GTIN fails its check digit, a commissioning without an expiry, a
    // shipment to no one: three events rejected, the commissioning before them planned.
    let bad_link = r#"{"type":"ObjectEvent","eventTime":"2026-01-02T00:00:00Z","eventTimeZoneOffset":"+00:00",
        "epcList":["https://id.gs1.org/01/10614141073465/21/1"],"action":"OBSERVE","bizStep":"receiving",
        "bizLocation":{"id":"urn:epc:id:sgln:0012345.00001.0"}}"#;
    let no_expiry = COMMISSION.replace(r#","cbvmda:itemExpirationDate":"2030-01-31""#, "");
    let nowhere = r#"{"type":"ObjectEvent","eventTime":"2026-01-03T00:00:00Z","eventTimeZoneOffset":"+00:00",
        "epcList":["urn:epc:id:sgtin:0614141.107346.1"],"action":"OBSERVE","bizStep":"shipping",
        "bizLocation":{"id":"urn:epc:id:sgln:0614141.00777.0"}}"#;
    let (plan, rejections) = import(&document(&[COMMISSION, bad_link, &no_expiry, nowhere].join(","))).unwrap();
    let places: Vec<(Place, &str)> = rejections.iter().map(|r| (r.place.clone(), r.reason.as_str())).collect();
    assert_eq!(places.len(), 3, "{places:?}");
    assert_eq!(places[0].0, event_place(2, "epcList[1]"));
    assert!(places[0].1.contains("check digit"), "{places:?}");
    assert_eq!(places[1].0, event_place(3, "ilmd.itemExpirationDate"));
    assert_eq!(places[2].0, event_place(4, "destinationList"));
    assert_eq!(plan.steps.len(), 1);
    assert_eq!(plan.steps[0].step, Step::Commission { lot: "L1".into(), expiry: 1_896_134_400_000 });
    assert_eq!(plan.parties[0].role, PartyRole::Manufacturer);
    assert_eq!(plan.parties[0].prefixes, vec!["0614141".to_owned()]);

    // Not JSON, and XML that declares entities (which could expand without bound).
    let cut = document(COMMISSION);
    let rejection = import(&cut[..cut.len() / 2]).unwrap_err();
    assert!(rejection.place == Place::File && rejection.reason.starts_with("not JSON: line"), "{rejection}");
    let laughs = br#"<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
        <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;"><!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
        <!ENTITY lol5 "&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;"><!ENTITY lol6 "&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;">
        <!ENTITY lol7 "&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;"><!ENTITY lol8 "&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;">
        <!ENTITY lol9 "&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;">]>
        <epcis:EPCISDocument xmlns:epcis="urn:epcglobal:epcis:xsd:2"><EPCISBody><EventList><ObjectEvent>
        <eventTime>&lol9;</eventTime></ObjectEvent></EventList></EPCISBody></epcis:EPCISDocument>"#;
    let rejection = import(laughs).unwrap_err();
    assert!(rejection.place == Place::File && rejection.reason.starts_with("not XML"), "{rejection}");
}

/// A recall comes after every operation before it in the document, and the operations after it
/// after the recall; a recall without a class is rejected at the field that would give it.
#[test]
fn a_recall_is_ordered_between_the_events_around_it() {
    let recall = |class: &str| {
        format!(
            r#"{{"type":"ObjectEvent","eventTime":"2026-01-05T00:00:00Z","eventTimeZoneOffset":"+00:00",
            "quantityList":[{{"epcClass":"urn:epc:class:lgtin:0614141.107346.L1"}}],"action":"OBSERVE",
            "bizStep":"holding","disposition":"recalled","bizLocation":{{"id":"urn:epc:id:sgln:0614141.00777.0"}}{class}}}"#
        )
    };
    let ship = r#"{"type":"ObjectEvent","eventTime":"2026-01-06T00:00:00Z","eventTimeZoneOffset":"+00:00",
        "epcList":["urn:epc:id:sgtin:0614141.107346.2"],"action":"OBSERVE","bizStep":"shipping",
        "bizLocation":{"id":"urn:epc:id:sgln:0614141.00777.0"},
        "destinationList":[{"type":"owning_party","destination":"urn:epc:id:pgln:0012345.00001"}]}"#;
    let classed = recall(r#","example:recallClass":"class-ii""#);
    let (plan, rejections) = import(&document(&[COMMISSION, &classed, ship].join(","))).unwrap();
    assert!(rejections.is_empty(), "{rejections:?}");
    assert_eq!(plan.recalls.len(), 1);
    assert_eq!((plan.recalls[0].lot.as_str(), plan.recalls[0].class.as_str()), ("L1", "class-ii"));
    assert_eq!((plan.steps[0].phase, plan.recalls[0].phase, plan.steps[1].phase), (0, 1, 2));

    let (plan, rejections) = import(&document(&[COMMISSION, &recall("")].join(","))).unwrap();
    assert!(plan.recalls.is_empty());
    assert_eq!(rejections[0].place, event_place(2, "recallClass"));
}
