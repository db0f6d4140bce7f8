//! FHIR files read with the R4 model: the exchange's corpus as it is, and damaged input, each
//! part read or rejected with its place and the reason.

use std::collections::BTreeMap;
use std::path::PathBuf;

use caduceus_interop::detect::{detect, Format};
use caduceus_interop::fhir::{read_json, read_ndjson};
use caduceus_interop::report::Place;

fn corpus(dir: &str) -> Vec<PathBuf> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/data").join(dir);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&root)
        .unwrap_or_else(|e| panic!("{}: {e}", root.display()))
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|e| e == "json" || e == "ndjson"))
        .collect();
    files.sort();
    files
}

/// Every FHIR file of the corpus is read, or rejected as a whole with a reason; no resource of
/// them is rejected by the model, and every Synthea bundle reads whole.
#[test]
fn every_fhir_file_of_the_corpus_is_read_or_rejected_with_a_reason() {
    let mut table: BTreeMap<(&str, String), usize> = BTreeMap::new();
    let mut resources: BTreeMap<String, usize> = BTreeMap::new();
    let mut parts_rejected = 0;
    for dir in ["fhir-r4-examples-hl7", "fhir-synthea-r4-smart"] {
        for file in corpus(dir) {
            let bytes = std::fs::read(&file).unwrap();
            let outcome = match detect(&bytes) {
                Some(Format::Fhir) => match read_json(&bytes) {
                    Ok(read) => {
                        for found in &read.resources {
                            *resources.entry(found.resource_type().to_owned()).or_default() += 1;
                        }
                        for rejection in &read.rejections {
                            println!("{}: {rejection}", file.display());
                            // The corpus's own resources all fit the model: what is rejected in
                            // a file read is an entry that only requests (a read, a delete).
                            assert!(rejection.reason.contains("without a resource"), "{rejection}");
                            parts_rejected += 1;
                        }
                        match (read.resources.len(), read.rejections.len()) {
                            (_, 0) => "read".to_owned(),
                            (0, _) => "read, every entry rejected".to_owned(),
                            _ => "read, some entries rejected".to_owned(),
                        }
                    }
                    Err(rejection) => format!("rejected: {}", rejection.reason),
                },
                Some(other) => panic!("{} taken for {other}", file.display()),
                None => "not a FHIR, X12 or EPCIS file".to_owned(),
            };
            *table.entry((dir, outcome)).or_default() += 1;
        }
    }
    for ((dir, outcome), count) in &table {
        println!("{dir:<24} {count:>4} {outcome}");
    }
    println!("resources read by type: {resources:?}");
    println!("entries rejected in files read: {parts_rejected}");
    assert_eq!(table.get(&("fhir-synthea-r4-smart", "read".to_owned())), Some(&corpus("fhir-synthea-r4-smart").len()));
    let hl7 = |outcome: &str| -> usize {
        table
            .iter()
            .filter(|((dir, o), _)| *dir == "fhir-r4-examples-hl7" && o.starts_with(outcome))
            .map(|(_, n)| n)
            .sum()
    };
    // Documents, messages and responses are refused whole, with their type named; the
    // examples' npm package description is JSON but no resource; everything else is read.
    assert_eq!(hl7("rejected: a Bundle of type"), 6);
    assert_eq!(hl7("not a FHIR, X12 or EPCIS file"), 1);
    assert_eq!(hl7("read"), corpus("fhir-r4-examples-hl7").len() - 7);
    assert_eq!(hl7("rejected"), 6, "no file is rejected for anything else");
    assert!(resources["Patient"] > 40 && resources["Observation"] > 1000 && resources["Consent"] > 5, "{resources:?}");
}

/// A Bundle with one resource the model refuses is read but for that entry, which is rejected
/// at its JSON path with the element named; bundles of other types and non-resources are
/// rejected whole.
#[test]
fn a_damaged_entry_is_rejected_at_its_path_and_the_rest_is_read() {
    let bundle = br#"{"resourceType":"Bundle","type":"collection","entry":[
        {"resource":{"resourceType":"Patient","id":"a","gender":"female"}},
        {"resource":{"resourceType":"Observation","id":"b","status":"final","code":{"text":"x"},"valueQuantity":{"value":"high"}}},
        {"resource":{"resourceType":"Patient","id":"c","birthDate":"1970-01-01","colour":"red"}},
        {"request":{"method":"DELETE","url":"Patient/d"}},
        {"resource":{"resourceType":"Patient","id":"e","gender":"femme"}}]}"#;
    let read = read_json(bundle).unwrap();
    assert_eq!(read.resources.len(), 1);
    assert_eq!(read.resources[0].id(), Some("a"));
    let places: Vec<String> = read.rejections.iter().map(|r| r.place.to_string()).collect();
    assert_eq!(places, ["$.entry[1].resource", "$.entry[2].resource.colour", "$.entry[3]", "$.entry[4].resource"]);
    assert!(read.rejections[0].reason.contains("\"high\""), "{}", read.rejections[0].reason);
    assert!(read.rejections[1].reason.contains("does not define"), "{}", read.rejections[1].reason);
    assert!(read.rejections[2].reason.contains("DELETE"));
    assert!(read.rejections[3].reason.contains("femme"), "{}", read.rejections[3].reason);

    let document = br#"{"resourceType":"Bundle","type":"document","entry":[]}"#;
    assert_eq!(read_json(document).unwrap_err().place, Place::Json("$.type".into()));
    assert_eq!(read_json(b"{\"id\":\"x\"}").unwrap_err().place, Place::Json("$".into()));
    assert_eq!(read_json(b"{\"resourceType\":").unwrap_err().place, Place::File);
    assert_eq!(detect(b"not a file we read"), None);
}

/// NDJSON (a Bulk Data export): recognised from its lines, each line read on its own, a bad
/// line rejected at its number.
#[test]
fn ndjson_is_read_line_by_line() {
    let ndjson = b"{\"resourceType\":\"Patient\",\"id\":\"p1\"}\n{\"resourceType\":\"Patient\",\"id\":\n\n{\"resourceType\":\"Patient\",\"id\":\"p3\",\"active\":\"maybe\"}\n{\"resourceType\":\"Patient\",\"id\":\"p4\"}\n";
    assert_eq!(detect(ndjson), Some(Format::FhirNdjson));
    // A first line longer than the detector's look at the head is still one line of many.
    let long = format!(
        "{{\"resourceType\":\"Patient\",\"id\":\"p\",\"text\":{{\"status\":\"generated\",\"div\":\"<div xmlns=\\\"http://www.w3.org/1999/xhtml\\\">{}</div>\"}}}}\n{{\"resourceType\":\"Patient\",\"id\":\"q\"}}\n",
        "x".repeat(100_000)
    );
    assert_eq!(detect(long.as_bytes()), Some(Format::FhirNdjson));
    assert_eq!(read_ndjson(long.as_bytes()).unwrap().resources.len(), 2);
    // A pretty-printed resource is one JSON file.
    assert_eq!(detect(b"{\n  \"resourceType\": \"Patient\",\n  \"id\": \"p\"\n}\n"), Some(Format::Fhir));
    let read = read_ndjson(ndjson).unwrap();
    let ids: Vec<_> = read.resources.iter().map(|r| r.id().unwrap()).collect();
    assert_eq!(ids, ["p1", "p4"]);
    let places: Vec<String> = read.rejections.iter().map(|r| r.place.to_string()).collect();
    assert_eq!(places, ["line 2, $", "line 4, $"]);
}

/// The plan: actors by key name, records by patient; a versioned reference resolves; the same
/// resource id under two patients is two records; an id that is no FHIR id is rejected.
#[test]
fn the_plan_names_each_actor_and_record_once() {
    use caduceus_interop::fhir_plan::{plan, ActorKind};
    let bundle = br#"{"resourceType":"Bundle","type":"collection","entry":[
        {"fullUrl":"urn:uuid:p1","resource":{"resourceType":"Patient","id":"p1"}},
        {"resource":{"resourceType":"Organization","id":"org"}},
        {"resource":{"resourceType":"Observation","id":"o1","status":"final","code":{"text":"x"},
            "subject":{"reference":"urn:uuid:p1"}}},
        {"resource":{"resourceType":"Observation","id":"o1","status":"final","code":{"text":"x"},
            "subject":{"reference":"Patient/p2/_history/3"},"performer":[{"reference":"Practitioner/dr"}]}},
        {"resource":{"resourceType":"Observation","status":"final","code":{"text":"x"},
            "subject":{"reference":"Patient/p1"}}},
        {"resource":{"resourceType":"Medication","id":"m"}}]}"#;
    let read = read_json(bundle).unwrap();
    assert!(read.rejections.is_empty(), "{:?}", read.rejections);
    let plan = plan(&read);
    let actors: Vec<(ActorKind, &str)> = plan.actors.iter().map(|a| (a.kind, a.key.as_str())).collect();
    assert_eq!(
        actors,
        [
            (ActorKind::Patient, "fhir.Patient.p1"),
            (ActorKind::Patient, "fhir.Patient.p2"),
            (ActorKind::Provider, "fhir.Organization.org"),
            (ActorKind::Provider, "fhir.Practitioner.dr"),
        ]
    );
    let records: Vec<(&str, &str)> = plan.records.iter().map(|r| (r.patient.as_str(), r.custodian.as_str())).collect();
    assert_eq!(records, [("fhir.Patient.p1", "fhir.Organization.org"), ("fhir.Patient.p2", "fhir.Practitioner.dr")]);
    assert_eq!(plan.records[0].record, plan.records[1].record, "one resource id, scoped by each patient");
    let reasons: Vec<String> = plan.rejections.iter().map(|r| format!("{}: {}", r.place, r.reason)).collect();
    assert_eq!(reasons.len(), 2, "{reasons:?}");
    assert!(reasons[0].starts_with("$.entry[4].resource: neither a FHIR id"), "{reasons:?}");
    assert!(reasons[1].starts_with("$.entry[5].resource: Medication names no patient"), "{reasons:?}");
}

/// A Consent is the ledger's consent to each provider its provision names: scope from its
/// classes, purposes from its purpose-of-use codes, period from its provision (its end
/// exclusive); inactive, it revokes the same consents; what the ledger's consents cannot say
/// is rejected at its element.
#[test]
fn a_consent_is_granted_to_each_provider_it_permits_or_rejected_at_its_element() {
    use caduceus_interop::fhir_plan::{fhir_time, plan, OPEN_END};
    let consent = |status: &str, provision: &str| {
        format!(
            r#"{{"resourceType":"Consent","id":"c1","status":"{status}",
            "scope":{{"coding":[{{"code":"patient-privacy"}}]}},"category":[{{"coding":[{{"code":"INFA"}}]}}],
            "patient":{{"reference":"Patient/p1"}},"dateTime":"2020-01-02","provision":{provision}}}"#
        )
    };
    let permits = r#"{"type":"permit","period":{"start":"2020-02-01","end":"2020-12-31"},
        "actor":[{"role":{"text":"reader"},"reference":{"reference":"Practitioner/dr"}},
                 {"role":{"text":"reader"},"reference":{"reference":"Organization/org"}},
                 {"role":{"text":"reader"},"reference":{"reference":"RelatedPerson/mum"}}],
        "purpose":[{"code":"TREAT"},{"code":"ETREAT"},{"code":"HPAYMT"}],
        "class":[{"code":"Observation"},{"code":"Condition"}]}"#;
    let planned = plan(&read_json(consent("active", permits).as_bytes()).unwrap());
    assert!(planned.rejections.is_empty(), "{:?}", planned.rejections);
    let grantees: Vec<&str> = planned.consents.iter().map(|c| c.grantee.as_str()).collect();
    assert_eq!(grantees, ["fhir.Organization.org", "fhir.Practitioner.dr"]);
    let grant = planned.consents[0].grant.clone().unwrap();
    assert_eq!(grant.scope, ["Observation", "Condition"]);
    assert_eq!(grant.purposes, ["treatment", "payment"]);
    assert_eq!((grant.valid_from, grant.valid_until), (1_580_515_200_000, 1_609_459_200_000));
    assert_ne!(planned.consents[0].consent, planned.consents[1].consent);

    // Inactive: the same consents, revoked.
    let revoked = plan(&read_json(consent("inactive", permits).as_bytes()).unwrap());
    let ids = |p: &caduceus_interop::fhir_plan::Plan| p.consents.iter().map(|c| c.consent).collect::<Vec<_>>();
    assert_eq!(ids(&revoked), ids(&planned));
    assert!(revoked.consents.iter().all(|c| c.grant.is_none()));

    // No period, no purpose: from the consent's date, for every purpose, open-ended.
    let bare = r#"{"type":"permit","actor":[{"role":{"text":"reader"},"reference":{"reference":"Practitioner/dr"}}]}"#;
    let grant = plan(&read_json(consent("active", bare).as_bytes()).unwrap()).consents[0].grant.clone().unwrap();
    assert_eq!((grant.valid_from, grant.valid_until), (fhir_time("2020-01-02", false).unwrap(), OPEN_END));
    assert_eq!(grant.purposes.len(), 6);

    let rejected = |status: &str, provision: &str| {
        let planned = plan(&read_json(consent(status, provision).as_bytes()).unwrap());
        assert!(planned.consents.is_empty());
        planned.rejections.iter().map(|r| format!("{}: {}", r.place, r.reason)).collect::<Vec<_>>()
    };
    assert!(rejected("draft", bare)[0].starts_with("$.status: a consent of status \"draft\""));
    let deny = bare.replace("permit", "deny");
    assert!(rejected("active", &deny)[0].starts_with("$.provision.type: a deny provision"));
    // No type: withheld or permitted by a policy the ledger cannot read, so never a grant.
    let untyped = bare.replace(r#""type":"permit","#, "");
    assert!(rejected("active", &untyped)[0].starts_with("$.provision.type: the provision does not say permit"));
    let marketing = bare.replacen('{', r#"{"purpose":[{"code":"HMARKT"}],"#, 1);
    assert!(rejected("active", &marketing)[0].starts_with("$.provision.purpose[0]: purpose of use \"HMARKT\""));
    let nested = bare.replacen('{', r#"{"provision":[{"type":"deny"}],"#, 1);
    assert!(rejected("active", &nested)[0].starts_with("$.provision.provision: nested provisions"));
    let nobody =
        r#"{"type":"permit","actor":[{"role":{"text":"reader"},"reference":{"reference":"RelatedPerson/mum"}}]}"#;
    assert!(rejected("active", nobody)[0].starts_with("$.provision.actor: the provision names no provider"));
    assert_eq!(fhir_time("2016-06-23T17:02:33+10:00", false), Some(1_466_665_353_000));
    assert_eq!(fhir_time("2016-02", true), fhir_time("2016-03-01", false));
    assert_eq!(fhir_time("2016-13", false), None);
}

/// The HL7 examples' consents: each rejected at its element with the reason. Most withhold or
/// withdraw consent, and none says permit outright, so none becomes a grant.
#[test]
fn the_hl7_consents_are_granted_or_rejected_at_their_elements() {
    use caduceus_interop::fhir_plan::plan;
    let (mut granted, mut rejected) = (0, 0);
    for file in corpus("fhir-r4-examples-hl7").iter().filter(|f| f.to_str().unwrap().contains("/Consent-")) {
        let planned = plan(&read_json(&std::fs::read(file).unwrap()).unwrap());
        for rejection in &planned.rejections {
            println!("{}: {rejection}", file.file_name().unwrap().to_str().unwrap());
            assert!(rejection.place != Place::File);
        }
        granted += planned.consents.len();
        rejected += planned.rejections.len();
    }
    println!("{granted} consents granted, {rejected} rejected");
    assert_eq!((granted, rejected), (0, 12));
}

/// A Claim is its provider's claim against its payer, each priced item a line with its code and
/// the diagnosis it points to (here through a Condition); the ExplanationOfBenefit that pays it
/// is the payment of that claim to the same provider, rounded to the cent. A Claim without a
/// coded diagnosis is rejected at `.diagnosis`, and so is what pays it, naming the Claim.
#[test]
fn a_claim_and_the_explanation_of_benefit_that_pays_it() {
    use caduceus_interop::claims::Decision;
    use caduceus_interop::fhir_plan::plan;
    let claim = |id: &str, diagnosis: &str| {
        format!(
            r#"{{"fullUrl":"urn:uuid:{id}","resource":{{"resourceType":"Claim","id":"{id}","status":"active",
            "type":{{"coding":[{{"code":"professional"}}]}},"use":"claim","patient":{{"reference":"urn:uuid:p1"}},
            "billablePeriod":{{"start":"2011-12-13T22:28:27+00:00"}},"created":"2011-12-13T22:58:27+00:00",
            "provider":{{"reference":"urn:uuid:org"}},"priority":{{"coding":[{{"code":"normal"}}]}},
            "insurance":[{{"sequence":1,"focal":true,"coverage":{{"display":"private"}}}}],{diagnosis}
            "item":[{{"sequence":1,"productOrService":{{"coding":[{{"code":"185349003"}}]}}}},
              {{"sequence":2,"diagnosisSequence":[2],"productOrService":{{"coding":[{{"code":"140"}}]}},"net":{{"value":140.52,"currency":"USD"}}}},
              {{"sequence":3,"productOrService":{{"coding":[{{"code":"428191000124101"}}]}},"net":{{"value":718.58,"currency":"USD"}}}}],
            "total":{{"value":984.1,"currency":"USD"}}}}}}"#
        )
    };
    let paying = |id: &str, claim: &str| {
        format!(
            r#"{{"fullUrl":"urn:uuid:{id}","resource":{{"resourceType":"ExplanationOfBenefit","id":"{id}","status":"active",
            "type":{{"coding":[{{"code":"professional"}}]}},"use":"claim","patient":{{"reference":"urn:uuid:p1"}},
            "created":"2011-12-13T22:58:27+00:00","insurer":{{"display":"private"}},"provider":{{"reference":"urn:uuid:dr"}},
            "claim":{{"reference":"urn:uuid:{claim}"}},"outcome":"complete",
            "insurance":[{{"focal":true,"coverage":{{"display":"private"}}}}],"payment":{{"amount":{{"value":559.032}}}}}}}}"#
        )
    };
    let diagnosis = r#""diagnosis":[{"sequence":1,"diagnosisCodeableConcept":{"coding":[{"code":"J20.9"}]}},
        {"sequence":2,"diagnosisReference":{"reference":"urn:uuid:cond"}}],"#;
    let bundle = format!(
        r#"{{"resourceType":"Bundle","type":"collection","entry":[
        {{"fullUrl":"urn:uuid:p1","resource":{{"resourceType":"Patient","id":"p1"}}}},
        {{"fullUrl":"urn:uuid:org","resource":{{"resourceType":"Organization","id":"org"}}}},
        {{"fullUrl":"urn:uuid:dr","resource":{{"resourceType":"Practitioner","id":"dr"}}}},
        {{"fullUrl":"urn:uuid:cond","resource":{{"resourceType":"Condition","id":"cond","subject":{{"reference":"urn:uuid:p1"}},
          "code":{{"coding":[{{"code":"444814009"}}]}}}}}},
        {},{},{},{}]}}"#,
        claim("c1", diagnosis),
        paying("e1", "c1"),
        claim("c2", ""),
        paying("e2", "c2")
    );
    let read = read_json(bundle.as_bytes()).unwrap();
    assert!(read.rejections.is_empty(), "{:?}", read.rejections);
    let planned = plan(&read);
    let [claim] = planned.claims.as_slice() else { panic!("{:?}", planned.claims) };
    assert_eq!((claim.patient.as_str(), claim.provider.as_str()), ("fhir.Patient.p1", "fhir.Organization.org"));
    assert_eq!((claim.payer.as_str(), claim.total, claim.service_date), ("fhir.payer.private", 98_410, 2011_12_13));
    let lines: Vec<(&str, &str, u64)> =
        claim.lines.iter().map(|l| (l.procedure.as_str(), l.diagnosis.as_str(), l.amount)).collect();
    assert_eq!(lines, [("140", "444814009", 14_052), ("428191000124101", "J20.9", 71_858)]);
    let [paid] = planned.remittances.as_slice() else { panic!("{:?}", planned.remittances) };
    assert_eq!((paid.payer.as_str(), paid.funding()), ("fhir.payer.private", 55_903));
    assert_eq!((paid.payments[0].claim, paid.payments[0].provider.as_str()), (claim.claim, "fhir.Organization.org"));
    assert_eq!(paid.payments[0].decision, Decision::Paid(55_903));
    let reasons: Vec<String> = planned.rejections.iter().map(ToString::to_string).collect();
    assert_eq!(
        reasons,
        [
            "$.entry[6].resource.diagnosis: the claim names no coded diagnosis (diagnosis), which its commitment covers",
            "$.entry[7].resource.claim: its Claim is not imported: see $.entry[6].resource"
        ]
    );
}
