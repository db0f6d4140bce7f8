//! Exports valid by their own specifications: the FHIR resources read back by the R4 models
//! (no unknown element, every primitive in its R4 format), the EPCIS document read back by the
//! EPCIS reader with each event id its GS1 event hash, and the hash itself reproducing the
//! event-hash reference vectors.

mod common;
use common::{corpus, data};

use caduceus_interop::epcis::read_json as read_epcis;
use caduceus_interop::export::{
    audit_events, claim_response, consents, custody_document, event_hashes, Access, ClaimEntry, ConsentEntry, Custody,
    ProofRef,
};
use caduceus_interop::fhir::read_json;

fn proof(n: u8) -> ProofRef {
    ProofRef {
        transaction: format!("{n:032x}"),
        proof: Some(vec![n; 40]),
        checkpoint: Some(("ab".repeat(32), u64::from(n))),
    }
}

const KEY: &str = "5e1f2a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f7";
const OTHER: &str = "0f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0";

/// The resources of a FHIR export, read back by the models: every one, none rejected.
fn reads_back(value: &serde_json::Value, expected: usize) -> Vec<serde_json::Value> {
    let read = read_json(&serde_json::to_vec(value).unwrap()).unwrap_or_else(|r| panic!("{r}"));
    assert!(read.rejections.is_empty(), "{:?}", read.rejections);
    assert_eq!(read.resources.len(), expected);
    read.resources.into_iter().map(|found| found.json).collect()
}

#[test]
fn fhir_exports_read_back_with_the_r4_models() {
    let access = |n: u8, purpose: Option<&str>, permitted: bool, minutes: u64| Access {
        proof: proof(n),
        record: format!("{:032x}", 7),
        accessor: OTHER.into(),
        purpose: purpose.map(str::to_owned),
        time: 1_767_225_600_123 + minutes * 60_000,
        permitted,
        result: if permitted { "committed".into() } else { "consent-missing".into() },
        break_glass: purpose.is_none(),
        erasure: false,
    };
    let accesses =
        [access(1, Some("treatment"), true, 0), access(2, None, true, 1), access(3, Some("research"), false, 2)];
    let events = reads_back(&audit_events(KEY, &accesses, 1_767_300_000_000), 3);
    assert_eq!(events[0]["purposeOfEvent"][0]["coding"][0]["code"], "TREAT");
    assert_eq!(events[1]["meta"]["security"][0]["code"], "BTG");
    assert_eq!(events[1]["purposeOfEvent"][0]["coding"][0]["code"], "ETREAT");
    assert_eq!(
        (events[2]["outcome"].as_str(), events[2]["outcomeDesc"].as_str()),
        (Some("4"), Some("consent-missing"))
    );
    assert_eq!(events[0]["recorded"], "2026-01-01T00:00:00.123Z");
    assert_eq!(events[0]["entity"][2]["detail"][0]["type"], "proof");

    let granted = ConsentEntry {
        id: format!("{:032x}", 9),
        grantee: OTHER.into(),
        scope: vec!["Observation".into(), "Condition".into()],
        purposes: vec!["treatment".into(), "payment".into()],
        valid_from: 1_767_225_600_000,
        valid_until: None,
        revoked_at: None,
        grant: proof(5),
        revocation: None,
    };
    let revoked = ConsentEntry {
        valid_until: Some(1_798_761_600_000),
        revoked_at: Some(1_767_300_000_000),
        revocation: Some(proof(6)),
        ..granted.clone()
    };
    let read = reads_back(&consents(KEY, &[granted, revoked], Some(("cd".repeat(32), 4)), 1_767_300_000_000), 2);
    assert_eq!((read[0]["status"].as_str(), read[1]["status"].as_str()), (Some("active"), Some("inactive")));
    assert_eq!(read[0]["provision"]["purpose"][1]["code"], "HPAYMT");
    assert!(read[0]["provision"]["period"].get("end").is_none());
    // Each carries the proof of its grant; the revoked one that of its revocation too.
    let urls = |consent: &serde_json::Value| -> Vec<String> {
        consent["extension"].as_array().unwrap().iter().map(|e| e["url"].as_str().unwrap().to_owned()).collect()
    };
    assert_eq!(urls(&read[0]), vec![caduceus_interop::export::PROOF_EXTENSION]);
    assert_eq!(
        urls(&read[1]),
        vec![caduceus_interop::export::PROOF_EXTENSION, caduceus_interop::export::REVOCATION_PROOF_EXTENSION]
    );
    assert_eq!(read[1]["extension"][1]["extension"][0]["valueString"], format!("{:032x}", 6));

    let paid = ClaimEntry {
        claim: format!("{:032x}", 11),
        patient: KEY.into(),
        provider: OTHER.into(),
        payer: OTHER.into(),
        total: 10_000,
        status: "paid".into(),
        benefit: Some(8_000),
        denial: None,
        submitted_at: 1_767_225_600_000,
        payment: Some((8_000, proof(4))),
    };
    let read = reads_back(&claim_response(&paid), 1);
    assert_eq!(read[0]["payment"]["amount"]["value"], 80.0);
    assert_eq!(read[0]["extension"][0]["extension"][1]["url"], "proof");
    let denied = ClaimEntry { status: "denied".into(), benefit: None, denial: Some(50), payment: None, ..paid };
    let read = reads_back(&claim_response(&denied), 1);
    assert_eq!(
        (read[0]["outcome"].as_str(), read[0]["error"][0]["code"]["coding"][0]["code"].as_str()),
        (Some("complete"), Some("50"))
    );
}

#[test]
fn a_unit_s_custody_is_an_epcis_document_whose_event_ids_are_their_hashes() {
    let step = |n: u8, operation: &str, counterparty: Option<&str>| Custody {
        proof: proof(n),
        operation: operation.into(),
        actor: KEY.into(),
        counterparty: counterparty.map(str::to_owned),
        time: 1_767_225_600_000 + u64::from(n) * 60_000,
    };
    let steps = [step(1, "commission-unit", None), step(2, "ship-unit", Some(OTHER)), step(3, "receive-unit", None)];
    let document = custody_document(10614141073464, "A/1", "L1", 1_956_528_000_000, &steps, 1_767_300_000_000).unwrap();
    let events = document["epcisBody"]["eventList"].as_array().unwrap();
    // Each id is the hash of its event as written (recomputed from the document).
    let ids: Vec<&str> = events.iter().map(|e| e["eventID"].as_str().unwrap()).collect();
    assert_eq!(ids, event_hashes(&document).unwrap());
    assert!(ids.iter().all(|id| id.starts_with("ni:///sha-256;") && id.ends_with("?ver=CBV2.0")));
    assert_eq!(events[0]["ilmd"]["cbvmda:itemExpirationDate"], "2031-12-31");
    assert_eq!(events[0]["epcList"][0], "https://id.gs1.org/01/10614141073464/21/A%2F1");
    // Changing any hashed field changes the hash.
    let mut changed = document.clone();
    changed["epcisBody"]["eventList"][1]["eventTime"] = serde_json::json!("2026-01-01T00:02:00.001Z");
    assert_ne!(event_hashes(&changed).unwrap()[1], ids[1]);
    // The EPCIS reader reads it whole.
    let read = read_epcis(&serde_json::to_vec(&document).unwrap()).unwrap();
    assert!(read.rejections.is_empty(), "{:?}", read.rejections);
    assert_eq!(read.events.len(), 3);
    assert_eq!(read.events[1].biz_step.as_deref(), Some("shipping"));
}

/// The event hash the exports use reproduces every reference hash of the event-hash
/// generator's examples (JSON-LD and XML), event by event.
#[test]
fn the_event_hash_reproduces_the_reference_vectors() {
    let (mut documents, mut events) = (0, 0);
    for file in corpus("epcis-hash-generator-examples") {
        let extension = file.extension().and_then(|e| e.to_str()).unwrap_or("");
        if !["jsonld", "xml"].contains(&extension) {
            continue;
        }
        let expected = file.with_extension("hashes");
        let Ok(expected) = std::fs::read_to_string(&expected) else { continue };
        let text = std::fs::read_to_string(&file).unwrap();
        let prehashes = if extension == "jsonld" {
            epcis_hash::canonicalize_json(&serde_json::from_str(&text).unwrap(), true).unwrap()
        } else {
            epcis_hash::canonicalize_xml(&text, true).unwrap()
        };
        let got: Vec<String> = prehashes.split('\n').map(epcis_hash::compute_hash_from_prehash).collect();
        let want: Vec<&str> = expected.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
        assert_eq!(got, want, "{}", file.strip_prefix(data()).unwrap().display());
        documents += 1;
        events += want.len();
    }
    println!("{documents} documents, {events} event hashes reproduced");
    assert!(documents >= 39, "{documents}");
}
