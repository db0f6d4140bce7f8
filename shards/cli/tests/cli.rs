//! The `caduceus` command line end to end: demo, verify, query, and verify
//! on a damaged directory. (Here rather than in `tests/`, because Cargo hands
//! a package's binaries only to that package's own tests.)

use std::process::{Command, Output};

use caduceus_engine::storage::{RocksStorage, Storage};

fn caduceus(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_caduceus")).args(args).output().expect("run caduceus")
}

fn text(output: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr))
}

#[test]
fn demo_verify_query_and_damage() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("ledger");
    let data_arg = data.to_str().unwrap();
    let demo = caduceus(&[
        "demo",
        "--dir",
        data_arg,
        "--transactions",
        "4000",
        "--patients",
        "400",
        "--reference-seconds",
        "0",
    ]);
    assert!(demo.status.success(), "{}", text(&demo));
    let report = text(&demo);
    // The imports: the Synthea patient reads its records, the 837's patient its claim, paid by the
    // 835, the pharmacy the unit the EPCIS shipment brought it, with its product.
    assert!(report.contains("files: 5 imported, 0 rejected"), "{report}");
    assert!(report.contains("licence: credential ") && report.contains(": valid now"), "{report}");
    assert!(report.contains("reads its enrolment: enrolled in study"), "{report}");
    assert!(report.contains("reads its 67 records"), "{report}");
    assert!(report.contains("100.00 billed, paid, 80.00 in payment"), "{report}");
    assert!(report.contains("unit (01)10614141073464(21)2017: genuine, lot DP2611, dispensed"), "{report}");
    assert!(report.contains("regulatedProductName: Demoprofen"), "{report}");
    assert!(report.contains("throughput:") && report.contains("VERIFIED"), "{report}");
    let patient = report.lines().find_map(|l| l.split("--patient ").nth(1)).expect("the demo names a patient").trim();

    let intact = caduceus(&["verify", "--dir", data_arg]);
    assert_eq!(intact.status.code(), Some(0), "{}", text(&intact));
    assert!(text(&intact).contains("intact"));

    // The demo's patient reads its own report with its keystore key; no one reads it unnamed,
    // and another provider may not.
    let keystore = data.with_extension("keys");
    let keystore = keystore.to_str().unwrap();
    let as_actor = |name: &str, question: &[&str]| {
        caduceus(&[&["query", "--dir", data_arg, "--as", name, "--keystore", keystore][..], question].concat())
    };
    let query = as_actor("patient", &["access-report", "--patient", patient]);
    let unnamed = caduceus(&["query", "--dir", data_arg, "access-report", "--patient", patient]);
    assert!(!unnamed.status.success() && text(&unnamed).contains("--as"), "{}", text(&unnamed));
    let other = as_actor("other-clinic", &["access-report", "--patient", patient]);
    assert!(!other.status.success() && text(&other).contains("may not read"), "{}", text(&other));
    let records = as_actor("patient", &["records", "--patient", patient]);
    assert!(records.status.success() && text(&records).contains("Observation v1"), "{}", text(&records));
    let consents = as_actor("patient", &["consents", "--patient", patient]);
    assert!(consents.status.success() && text(&consents).contains("1 listed"), "{}", text(&consents));
    assert!(query.status.success(), "{}", text(&query));
    assert!(text(&query).lines().count() > 0 && text(&query).contains("accessor="));
    // A malformed key is refused by the command line's parser, naming the flag, before any
    // ledger is opened.
    let bad_key = caduceus(&["query", "--dir", data_arg, "access-report", "--patient", "xyz"]);
    assert_eq!(bad_key.status.code(), Some(2), "{}", text(&bad_key));
    assert!(text(&bad_key).contains("--patient") && text(&bad_key).contains("not a 64-digit hex actor key"));
    let bad_id = caduceus(&["query", "--dir", data_arg, "transaction", "--id", "12345678901234567890123456789012f"]);
    assert_eq!(bad_id.status.code(), Some(2), "{}", text(&bad_id));
    assert!(text(&bad_id).contains("not a hex id of up to 32 digits"));
    let bad_hash = caduceus(&["check-proof", "--proof", "p", "--checkpoint", "abc"]);
    assert_eq!(bad_hash.status.code(), Some(2), "{}", text(&bad_hash));
    assert!(text(&bad_hash).contains("not a 64-digit hex hash"));

    // A proof carried away and checked offline against the checkpoint.
    // The patient's erasure, which the patient may prove.
    let id = report.lines().find_map(|l| l.split("(erasure ").nth(1)).and_then(|l| l.split(')').next()).unwrap();
    let proof_file = dir.path().join("proof.bin");
    let exported = as_actor("patient", &["proof", "--id", id, "--out", proof_file.to_str().unwrap()]);
    assert!(exported.status.success(), "{}", text(&exported));
    let checkpoint =
        text(&exported).lines().find_map(|l| l.strip_prefix("it leads to checkpoint ")).unwrap()[..64].to_owned();
    let valid = caduceus(&["check-proof", "--proof", proof_file.to_str().unwrap(), "--checkpoint", &checkpoint]);
    assert_eq!(valid.status.code(), Some(0), "{}", text(&valid));
    assert!(text(&valid).contains("VALID"));
    let mut other = checkpoint.clone().into_bytes();
    other[0] = if other[0] == b'0' { b'1' } else { b'0' };
    let other = String::from_utf8(other).unwrap();
    let invalid = caduceus(&["check-proof", "--proof", proof_file.to_str().unwrap(), "--checkpoint", &other]);
    assert_eq!(invalid.status.code(), Some(2), "{}", text(&invalid));
    assert!(text(&invalid).contains("INVALID"));

    // The store extends the checkpoint its proof led to, and not one it never had.
    let anchored = caduceus(&["verify", "--dir", data_arg, "--checkpoint", &checkpoint]);
    assert_eq!(anchored.status.code(), Some(0), "{}", text(&anchored));
    assert!(text(&anchored).contains(&format!("extends checkpoint {checkpoint}")));
    let stranger = caduceus(&["verify", "--dir", data_arg, "--checkpoint", &other]);
    assert_eq!(stranger.status.code(), Some(2), "{}", text(&stranger));
    assert!(text(&stranger).contains("does not extend"), "{}", text(&stranger));

    // One changed byte in a block body of shard 2.
    {
        let storage = RocksStorage::open(&data).unwrap();
        let key = caduceus_engine::layout::body(2, 3);
        let mut value = storage.get(&key).unwrap().expect("shard 2 has a third block");
        value[40] ^= 0x20;
        storage.write(&[(key, Some(value))]).unwrap();
    }
    // `--data` stays an alias of `--dir`, for scripts written before the flags were unified.
    let damaged = caduceus(&["verify", "--data", data_arg]);
    assert_eq!(damaged.status.code(), Some(2), "{}", text(&damaged));
    assert!(text(&damaged).contains("DAMAGED") && text(&damaged).contains("shard 2 height 3"), "{}", text(&damaged));

    let nothing = caduceus(&["verify", "--dir", dir.path().join("nothing").to_str().unwrap()]);
    assert_eq!(nothing.status.code(), Some(1));
    assert!(text(&nothing).contains("holds no ledger"));
}

/// `cluster init` leaves no CA private key among the nodes' files: it writes it apart, says
/// where, readable by its owner alone.
#[test]
fn cluster_init_writes_the_ca_key_apart_from_the_nodes() {
    use std::os::unix::fs::PermissionsExt;
    let work = tempfile::tempdir().unwrap();
    let dir = work.path().join("c");
    let init = caduceus(&["cluster", "init", "--dir", dir.to_str().unwrap(), "--base-port", "0"]);
    assert!(init.status.success(), "{}", text(&init));
    let said = text(&init);
    let key = said.lines().find_map(|l| l.strip_prefix("the CA's private key is in ")).expect("says where");
    let key = std::path::Path::new(key.split(" (mode").next().unwrap());
    assert!(!key.starts_with(&dir), "{} is among the nodes' files", key.display());
    assert_eq!(std::fs::metadata(key).unwrap().permissions().mode() & 0o777, 0o600);
    assert!(std::fs::read_to_string(key).unwrap().contains("PRIVATE KEY"));
    let ca_key = std::fs::read_to_string(key).unwrap();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let stored = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(!stored.contains(ca_key.trim()), "{} holds the CA's key", path.display());
    }
    assert!(!dir.join("ca.key").exists());
}

/// The keystore: a new key per name (never replaced), listed and exported by name, kept where
/// only its owner reads it, and refused once others may.
#[test]
fn the_keystore_keeps_each_key_to_its_owner() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("keys");
    let keystore = store.to_str().unwrap();
    let stdout = |output: &Output| String::from_utf8_lossy(&output.stdout).to_string();
    let made = caduceus(&["keys", "--keystore", keystore, "new", "ada"]);
    assert!(made.status.success(), "{made:?}");
    let actor = stdout(&made).split_whitespace().nth(1).unwrap().to_owned();
    assert_eq!(actor.len(), 64);
    assert!(caduceus(&["keys", "--keystore", keystore, "new", "clinic"]).status.success());
    let again = caduceus(&["keys", "--keystore", keystore, "new", "ada"]);
    assert!(!again.status.success(), "a key is never replaced");
    assert!(!caduceus(&["keys", "--keystore", keystore, "new", "../escape"]).status.success());

    let listed = stdout(&caduceus(&["keys", "--keystore", keystore, "list"]));
    assert_eq!(listed.lines().count(), 2, "{listed}");
    assert!(listed.lines().any(|line| line == format!("ada {actor}")), "{listed}");
    let exported = stdout(&caduceus(&["keys", "--keystore", keystore, "export", "ada"]));
    assert_eq!(exported.trim(), format!("actor:  {actor}"), "the secret only on request");
    let secret = stdout(&caduceus(&["keys", "--keystore", keystore, "export", "ada", "--secret"]));
    let seed = secret.lines().nth(1).unwrap().strip_prefix("secret: ").unwrap().to_owned();
    let seed: [u8; 32] = caduceus_engine::model::unhex(&seed).unwrap().try_into().unwrap();
    let key = caduceus_engine::signature::signing_key(seed);
    assert_eq!(caduceus_engine::signature::actor_key(&key).to_hex(), actor, "the secret is the actor's key");

    let mode = |path: &std::path::Path| std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&store), 0o700);
    assert_eq!(mode(&store.join("ada.key")), 0o600);
    std::fs::set_permissions(store.join("ada.key"), std::fs::Permissions::from_mode(0o644)).unwrap();
    let refused = caduceus(&["keys", "--keystore", keystore, "export", "ada"]);
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("may be read by others"), "{refused:?}");
}

/// A Synthea bundle imported into a new directory: a ledger is made, the patient, its
/// practitioner and organization registered, its clinical resources registered as records with
/// encrypted payloads (its claims, without a coded diagnosis, rejected at their paths); the patient reads
/// its records; a second import changes nothing; the ledger verifies and holds no name.
#[test]
fn a_synthea_bundle_is_imported_once_and_its_patient_reads_its_records() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("ledger");
    let data_arg = data.to_str().unwrap();
    let source = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/data/fhir-synthea-r4-smart/Agustín_Fonseca_cb5696d9-a0de-4f49-94f9-433f96a28eb0.json");
    let bundle: serde_json::Value = serde_json::from_slice(&std::fs::read(&source).unwrap()).unwrap();
    let entries = bundle["entry"].as_array().unwrap();
    let count = |kinds: &[&str]| {
        entries.iter().filter(|e| kinds.contains(&e["resource"]["resourceType"].as_str().unwrap())).count()
    };
    let actors = count(&["Patient", "Practitioner", "Organization"]);
    let not_yet = count(&["Claim", "ExplanationOfBenefit"]);
    let records = entries.len() - actors - not_yet;

    let first = caduceus(&["import", "--dir", data_arg, source.to_str().unwrap()]);
    assert!(first.status.success(), "{}", text(&first));
    let said = text(&first);
    let submitted = actors + records;
    assert!(said.contains(&format!("{submitted} transactions submitted ({submitted} committed), 0 already")), "{said}");
    assert!(said.contains(&format!("{not_yet} parts rejected")), "{said}");
    // Its claims name no coded diagnosis, which a claim's commitment covers; what pays them
    // names the Claim rejected.
    assert!(said.contains("rejected $.entry[") && said.contains("the claim names no coded diagnosis"), "{said}");
    assert!(said.contains("its Claim is not imported: see $.entry["), "{said}");

    let again = caduceus(&["import", "--dir", data_arg, source.to_str().unwrap()]);
    assert!(again.status.success(), "{}", text(&again));
    assert!(
        text(&again).contains(&format!("0 transactions submitted (0 committed), {submitted} already")),
        "{}",
        text(&again)
    );

    // The patient, with its keystore key, lists its records.
    let patient_id = entries.iter().find(|e| e["resource"]["resourceType"] == "Patient").unwrap()["resource"]["id"]
        .as_str()
        .unwrap();
    let key_name = format!("fhir.Patient.{patient_id}");
    let keystore = data.with_extension("keys");
    let listed = caduceus(&["keys", "--keystore", keystore.to_str().unwrap(), "list"]);
    let patient_key =
        text(&listed).lines().find(|l| l.contains(&key_name)).unwrap().split_whitespace().last().unwrap().to_owned();
    let own = caduceus(&[
        "query",
        "--dir",
        data_arg,
        "--as",
        &key_name,
        "--keystore",
        keystore.to_str().unwrap(),
        "records",
        "--patient",
        &patient_key,
        "--limit",
        "1000",
    ]);
    assert!(own.status.success(), "{}", text(&own));
    assert!(text(&own).contains(&format!("{records} listed")), "{}", text(&own));

    let intact = caduceus(&["verify", "--dir", data_arg]);
    assert!(intact.status.success() && text(&intact).contains("intact"), "{}", text(&intact));
    // Neither the ledger nor the payload store holds the patient's name in clear.
    let name = bundle["entry"][0]["resource"]["name"][0]["family"].as_str().unwrap();
    for place in [data.clone(), data.with_extension("payloads")] {
        let mut files = vec![place];
        while let Some(path) = files.pop() {
            if path.is_dir() {
                files.extend(std::fs::read_dir(&path).unwrap().map(|e| e.unwrap().path()));
            } else {
                let bytes = std::fs::read(&path).unwrap();
                assert!(!bytes.windows(name.len()).any(|w| w == name.as_bytes()), "{name} in {}", path.display());
            }
        }
    }
}

/// An 837 and the 835 that answers it: the claim is submitted by its billing provider, then
/// funded, approved and paid by its payer; importing both again changes nothing; the patient
/// reads the claim paid.
#[test]
fn an_837_and_its_835_are_a_claim_submitted_then_paid_once() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("ledger");
    let data_arg = data.to_str().unwrap();
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/data");
    let claims = root.join("x12-linuxforhealth/demo-file/demo.837");
    let remittance = root.join("caduceus/demo-remittance.835");
    let (claims, remittance) = (claims.to_str().unwrap(), remittance.to_str().unwrap());

    let first = caduceus(&["import", "--dir", data_arg, claims]);
    assert!(first.status.success(), "{}", text(&first));
    // The patient, the billing provider, the payer, and the claim.
    assert!(text(&first).contains("4 transactions submitted (4 committed), 0 already"), "{}", text(&first));
    let paid = caduceus(&["import", "--dir", data_arg, remittance]);
    assert!(paid.status.success(), "{}", text(&paid));
    // The payer's funding, its approval and its payment; the three actors are known already.
    assert!(text(&paid).contains("3 transactions submitted (3 committed), 3 already"), "{}", text(&paid));
    let again = caduceus(&["import", "--dir", data_arg, claims, remittance]);
    assert!(text(&again).contains("transactions: 0 submitted, 10 already on the ledger"), "{}", text(&again));

    let keystore = data.with_extension("keys");
    let patient_name = caduceus_interop::x12_plan::patient_key("999996666", "JS00111223333", Some(("SMITH", "TED")));
    let listed = caduceus(&["keys", "--keystore", keystore.to_str().unwrap(), "list"]);
    let patient = text(&listed)
        .lines()
        .find(|l| l.contains(&patient_name))
        .unwrap()
        .split_whitespace()
        .last()
        .unwrap()
        .to_owned();
    let claim = format!("{:032x}", caduceus_interop::x12_plan::claim_id("999996666", "1912301953", "26463774"));
    let status = caduceus(&[
        "query",
        "--dir",
        data_arg,
        "--as",
        &patient_name,
        "--keystore",
        keystore.to_str().unwrap(),
        "claim",
        "--patient",
        &patient,
        "--claim",
        &claim,
    ]);
    assert!(status.status.success(), "{}", text(&status));
    assert!(text(&status).contains("Paid {") && text(&status).contains("amount: 8000"), "{}", text(&status));

    // The claim as a FHIR ClaimResponse: complete, 80.00 paid, the payment's proof with it.
    let out = dir.path().join("claim.json");
    let args = ["--dir", data_arg, "--as", &patient_name, "--keystore", keystore.to_str().unwrap()];
    let read = fhir_export(&args, &out, &["claim", "--patient", &patient, "--claim", &claim]);
    let response = &read[0];
    assert_eq!((response["outcome"].as_str(), response["disposition"].as_str()), (Some("complete"), Some("paid")));
    assert_eq!(response["payment"]["amount"]["value"], 80.0);
    assert_eq!(response["extension"][0]["extension"][1]["url"], "proof", "{response}");
    // Its payment as an X12 835, read back by the X12 reader (envelope and 005010 model).
    let remittance = dir.path().join("paid.835");
    let args = ["export", "--out", remittance.to_str().unwrap(), "--dir", data_arg, "--as", &patient_name];
    let said = caduceus(
        &[
            &args[..],
            &["--keystore", keystore.to_str().unwrap(), "remittance", "--patient", &patient, "--claim", &claim],
        ]
        .concat(),
    );
    assert!(said.status.success(), "{}", text(&said));
    let read = caduceus_interop::x12::read(&std::fs::read(&remittance).unwrap()).unwrap();
    assert!(read.rejections.is_empty(), "{:?}", read.rejections);
    let written = std::fs::read_to_string(&remittance).unwrap();
    assert!(
        written.contains(&format!("CLP*{claim}*1*100.00*80.00**ZZ*")) && written.contains("BPR*I*80.00*C*NON"),
        "{written}"
    );
}

/// A FHIR Consent that permits a provider becomes the patient's grant; the same Consent,
/// inactive, revokes it; the patient reads both, and a consent open to the end of the year
/// 9999 prints.
#[test]
fn a_fhir_consent_is_granted_then_revoked_by_its_patient() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("ledger");
    let data_arg = data.to_str().unwrap();
    let bundle = |status: &str| {
        format!(
            r#"{{"resourceType":"Bundle","type":"collection","entry":[
            {{"resource":{{"resourceType":"Patient","id":"p1"}}}},
            {{"resource":{{"resourceType":"Practitioner","id":"dr"}}}},
            {{"resource":{{"resourceType":"Consent","id":"c1","status":"{status}",
              "scope":{{"coding":[{{"code":"patient-privacy"}}]}},"category":[{{"coding":[{{"code":"INFA"}}]}}],
              "patient":{{"reference":"Patient/p1"}},"dateTime":"2020-01-02",
              "provision":{{"type":"permit","purpose":[{{"code":"TREAT"}}],"class":[{{"code":"Observation"}}],
                "actor":[{{"role":{{"text":"reader"}},"reference":{{"reference":"Practitioner/dr"}}}}]}}}}}}]}}"#
        )
    };
    let (granted, revoked) = (dir.path().join("granted.json"), dir.path().join("revoked.json"));
    std::fs::write(&granted, bundle("active")).unwrap();
    std::fs::write(&revoked, bundle("inactive")).unwrap();
    let keystore = data.with_extension("keys");
    let keystore_arg = keystore.to_str().unwrap();
    let consents = || {
        let listed = caduceus(&["keys", "--keystore", keystore_arg, "list"]);
        let listed = text(&listed);
        let patient = listed.lines().find(|l| l.starts_with("fhir.Patient.p1")).unwrap();
        let patient = patient.split_whitespace().last().unwrap().to_owned();
        let said = caduceus(&[
            "query",
            "--dir",
            data_arg,
            "--as",
            "fhir.Patient.p1",
            "--keystore",
            keystore_arg,
            "consents",
            "--patient",
            &patient,
        ]);
        assert!(said.status.success(), "{}", text(&said));
        text(&said)
    };

    let first = caduceus(&["import", "--dir", data_arg, granted.to_str().unwrap()]);
    // The patient, the practitioner, and the grant.
    assert!(text(&first).contains("3 transactions submitted (3 committed)"), "{}", text(&first));
    let listed = consents();
    assert!(listed.contains("Observation") && listed.contains("treatment") && !listed.contains("revoked"), "{listed}");
    let second = caduceus(&["import", "--dir", data_arg, revoked.to_str().unwrap()]);
    assert!(text(&second).contains("1 transactions submitted (1 committed), 2 already"), "{}", text(&second));
    assert!(consents().contains("revoked"), "{}", consents());

    // The consent as FHIR: inactive now, permitting the practitioner Observations for treatment.
    let out = dir.path().join("consents.json");
    let patient = listed_key(&keystore, "fhir.Patient.p1");
    let args = ["--dir", data_arg, "--as", "fhir.Patient.p1", "--keystore", keystore_arg];
    let read = fhir_export(&args, &out, &["consents", "--patient", &patient]);
    let consent = &read[0];
    assert_eq!(consent["status"], "inactive");
    assert_eq!(consent["provision"]["class"][0]["code"], "Observation");
    assert_eq!(consent["provision"]["purpose"][0]["code"], "TREAT");
    assert_eq!(
        consent["provision"]["actor"][0]["reference"]["identifier"]["value"],
        listed_key(&keystore, "fhir.Practitioner.dr")
    );
    // It carries the proofs of its grant and of its revocation, each checking against its
    // checkpoint, and each of the transaction it names.
    let proven: Vec<(String, String)> = consent["extension"]
        .as_array()
        .unwrap()
        .iter()
        .map(|extension| {
            let part =
                |name: &str| extension["extension"].as_array().unwrap().iter().find(|p| p["url"] == name).cloned();
            let value = |name: &str, kind: &str| part(name).unwrap()[kind].as_str().unwrap().to_owned();
            use base64::Engine;
            let bytes = base64::engine::general_purpose::STANDARD.decode(value("proof", "valueBase64Binary")).unwrap();
            let proof = <caduceus_engine::Proof as caduceus_engine::codec::Codec>::decode(&bytes).unwrap();
            let checkpoint = caduceus_engine::model::unhex(&value("checkpoint", "valueString")).unwrap();
            proof.verify(&checkpoint.try_into().unwrap()).unwrap();
            assert_eq!(format!("{:032x}", proof.transaction.id()), value("transaction", "valueString"));
            (extension["url"].as_str().unwrap().to_owned(), proof.transaction.transaction.operation.name().to_owned())
        })
        .collect();
    assert_eq!(
        proven,
        vec![
            (caduceus_interop::export::PROOF_EXTENSION.to_owned(), "grant-consent".to_owned()),
            (caduceus_interop::export::REVOCATION_PROOF_EXTENSION.to_owned(), "revoke-consent".to_owned()),
        ]
    );
}

/// `loadgen x12`'s claims and remittances (the import measurement's input) are read whole:
/// every claim submitted, funded, approved and paid, all committed; a second import changes
/// nothing.
#[test]
fn loadgen_s_x12_files_import_whole_and_once() {
    let dir = tempfile::tempdir().unwrap();
    let files = caduceus_loadgen::x12::files(200, 7, 3);
    let (claims, remittances) = (dir.path().join("claims.837"), dir.path().join("remittances.835"));
    std::fs::write(&claims, &files.claims).unwrap();
    std::fs::write(&remittances, &files.remittances).unwrap();
    let data = dir.path().join("ledger");
    let args = ["import", "--dir", data.to_str().unwrap(), claims.to_str().unwrap(), remittances.to_str().unwrap()];
    let first = caduceus(&args);
    let said = text(&first);
    assert!(first.status.success() && !said.contains("rejected "), "{said}");
    // 210 actors and 200 claims; 200 approvals and payments, and a funding per payer and provider.
    let submitted = 210 + 200 + 200 + 200 + 21;
    assert!(said.contains(&format!("transactions: {submitted} submitted")), "{said}");
    assert!(said.contains(&format!("{submitted} committed")), "{said}");
    let again = caduceus(&args);
    assert!(text(&again).contains("transactions: 0 submitted"), "{}", text(&again));
}

/// The project's EPCIS shipment: three units commissioned and packed in a case by their maker,
/// the case shipped to a wholesaler and received, one unit unpacked and shipped on to a pharmacy
/// (named by Digital Link), received and dispensed. Each custodian reads the trail of what it
/// held; importing the document again changes nothing.
#[test]
fn an_epcis_shipment_moves_custody_from_maker_to_pharmacy_once() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("ledger");
    let data_arg = data.to_str().unwrap();
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/data");
    let shipment = root.join("caduceus/demo-shipment.jsonld");
    let first = caduceus(&["import", "--dir", data_arg, shipment.to_str().unwrap()]);
    let said = text(&first);
    // 3 parties; 3 commissioned, 3 shipped, 3 received; 1 shipped on, received and dispensed.
    assert!(
        said.contains("15 transactions submitted (15 committed), 0 already on the ledger, 0 parts rejected"),
        "{said}"
    );
    assert!(said.contains("1 products' master data kept"), "{said}");
    let again = caduceus(&["import", "--dir", data_arg, shipment.to_str().unwrap()]);
    assert!(text(&again).contains("transactions: 0 submitted, 15 already on the ledger"), "{}", text(&again));

    let keystore = data.with_extension("keys");
    let unit = |party: &str, serial: &str| {
        let said = caduceus(&[
            "query",
            "--dir",
            data_arg,
            "--as",
            party,
            "--keystore",
            keystore.to_str().unwrap(),
            "unit",
            "--gtin",
            "10614141073464",
            "--serial",
            serial,
        ]);
        text(&said)
    };
    let dispensed = unit("gs1.party.0098765", "2017");
    assert!(dispensed.contains("genuine, lot DP2611, dispensed"), "{dispensed}");
    assert!(dispensed.contains("commission-unit") && dispensed.matches("ship-unit").count() == 2, "{dispensed}");
    assert!(dispensed.contains("regulatedProductName: Demoprofen"), "{dispensed}");
    // Its custody as EPCIS: six events, each id the event's GS1 hash; the pharmacy is given the
    // proofs of its own and its supplier's shipment, and the ids of the rest.
    let out = dir.path().join("unit.jsonld");
    let exported = caduceus(&[
        "export",
        "--dir",
        data_arg,
        "--keystore",
        keystore.to_str().unwrap(),
        "--as",
        "gs1.party.0098765",
        "--out",
        out.to_str().unwrap(),
        "unit",
        "--gtin",
        "10614141073464",
        "--serial",
        "2017",
    ]);
    assert!(text(&exported).contains("3 proofs not given to this reader"), "{}", text(&exported));
    let document: serde_json::Value = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
    let events = document["epcisBody"]["eventList"].as_array().unwrap();
    let ids: Vec<String> = events.iter().map(|e| e["eventID"].as_str().unwrap().to_owned()).collect();
    assert_eq!(ids.len(), 6);
    assert_eq!(ids, caduceus_interop::export::event_hashes(&document).unwrap());
    assert_eq!(events[5]["bizStep"], "dispensing");
    assert!(events[5]["caduceus:proof"]["proof"].is_string() && events[0]["caduceus:proof"]["proof"].is_null());
    // Still in the wholesaler's hands: received, never shipped on.
    let held = unit("gs1.party.0012345", "2018");
    assert!(held.contains("genuine, lot DP2611, active") && !held.contains("dispense-unit"), "{held}");
}

/// `loadgen epcis`' document (the import measurement's input) is read whole: every unit's six
/// operations committed; a second import changes nothing.
#[test]
fn loadgen_s_epcis_document_imports_whole_and_once() {
    let dir = tempfile::tempdir().unwrap();
    let document = caduceus_loadgen::epcis::document(250, 2, 3, 5);
    let path = dir.path().join("supply.jsonld");
    std::fs::write(&path, serde_json::to_vec(&document).unwrap()).unwrap();
    let data = dir.path().join("ledger");
    let args = ["import", "--dir", data.to_str().unwrap(), path.to_str().unwrap()];
    let first = caduceus(&args);
    let said = text(&first);
    assert!(first.status.success() && !said.contains("rejected "), "{said}");
    // 10 parties, and six operations for each of 250 units.
    let submitted = 10 + 6 * 250;
    assert!(said.contains(&format!("transactions: {submitted} submitted")), "{said}");
    assert!(said.contains(&format!("{submitted} committed")), "{said}");
    let again = caduceus(&args);
    assert!(text(&again).contains("transactions: 0 submitted"), "{}", text(&again));
}

/// The GS1 US DSCSA example (EPCIS 1.2 XML): its 15 units expired in 2025, so the ledger refuses
/// to commission them and knows none of them when the pallet ships; the pallet's own
/// commissioning names no trade item; both products' master data are kept.
#[test]
fn the_dscsa_example_s_expired_units_are_refused_at_commissioning() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("ledger");
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/data");
    let file = root.join(
        "epcis-openepcis-test-resources/core/src/main/resources/1.2/EPCIS/XML/Capture/Documents/GS1_US_Pharma_Example_2_2_1_1.xml",
    );
    let said = text(&caduceus(&["import", "--dir", data.to_str().unwrap(), file.to_str().unwrap()]));
    assert!(said.contains("15 unit-expired") && said.contains("15 unknown-unit"), "{said}");
    assert!(said.contains("2 products' master data kept"), "{said}");
    assert!(
        said.contains("1 events with no ledger operation: ObjectEvent commissioning of no serialized unit"),
        "{said}"
    );
}

/// `caduceus export` with `args` (target, reader) into `out`, read back with the FHIR R4 models:
/// the resources, none rejected.
fn fhir_export(args: &[&str], out: &std::path::Path, what: &[&str]) -> Vec<serde_json::Value> {
    let mut all = vec!["export", "--out", out.to_str().unwrap()];
    all.extend(args);
    all.extend(what);
    let said = caduceus(&all);
    assert!(said.status.success(), "{}", text(&said));
    let read = caduceus_interop::fhir::read_json(&std::fs::read(out).unwrap()).unwrap();
    assert!(read.rejections.is_empty(), "{:?}", read.rejections);
    read.resources.into_iter().map(|found| found.json).collect()
}

/// A keystore key's public half, from `keys list`.
fn listed_key(keystore: &std::path::Path, name: &str) -> String {
    let listed = caduceus(&["keys", "--keystore", keystore.to_str().unwrap(), "list"]);
    let said = text(&listed);
    let line = said.lines().find(|l| l.split_whitespace().next() == Some(name));
    line.unwrap_or_else(|| panic!("no key {name}: {said}")).split_whitespace().last().unwrap().to_owned()
}

/// The round trip: a Synthea bundle imported, its patient's records exported (each read
/// through a logged access), that export imported into a fresh ledger under the same keystore,
/// then exported again: the same records (ids, types, custodians) on both ledgers, and the same
/// resources in both exports. (Content hashes differ: each ledger's payload store seals under
/// fresh data keys.) The access report exports as AuditEvents, each with its proof.
#[test]
fn a_synthea_bundle_round_trips_through_export_and_import() {
    let dir = tempfile::tempdir().unwrap();
    let (first, second) = (dir.path().join("first"), dir.path().join("second"));
    let keystore = dir.path().join("shared.keys");
    let ks = keystore.to_str().unwrap();
    let source = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/data/fhir-synthea-r4-smart/Agustín_Fonseca_cb5696d9-a0de-4f49-94f9-433f96a28eb0.json");
    let imported = caduceus(&["import", "--dir", first.to_str().unwrap(), "--keystore", ks, source.to_str().unwrap()]);
    assert!(imported.status.success(), "{}", text(&imported));
    let patient_name = "fhir.Patient.27de96c6-6910-4f0f-8f10-00ce6090f447";
    let patient = listed_key(&keystore, patient_name);
    let export = |ledger: &std::path::Path, out: &str, what: &[&str]| {
        let out = dir.path().join(out);
        let mut args = vec!["export", "--dir", ledger.to_str().unwrap(), "--keystore", ks, "--as", patient_name];
        args.extend(["--out", out.to_str().unwrap()]);
        args.extend(what);
        let said = caduceus(&args);
        assert!(said.status.success(), "{}", text(&said));
        serde_json::from_slice::<serde_json::Value>(&std::fs::read(&out).unwrap()).unwrap()
    };
    let records = |ledger: &std::path::Path| {
        let said = caduceus(&[
            "query",
            "--dir",
            ledger.to_str().unwrap(),
            "--as",
            patient_name,
            "--keystore",
            ks,
            "records",
            "--patient",
            &patient,
            "--limit",
            "1000",
        ]);
        // Each record's id, type, version and custodian (not its content hash or time).
        let listed: Vec<String> = text(&said)
            .lines()
            .filter(|l| l.starts_with("record "))
            .map(|l| l.split(" content ").next().unwrap().to_owned())
            .collect();
        listed
    };

    let exported = export(&first, "first.json", &["records", "--patient", &patient]);
    let reimported = caduceus(&[
        "import",
        "--dir",
        second.to_str().unwrap(),
        "--keystore",
        ks,
        dir.path().join("first.json").to_str().unwrap(),
    ]);
    assert!(reimported.status.success() && !text(&reimported).contains("rejected "), "{}", text(&reimported));
    let again = export(&second, "second.json", &["records", "--patient", &patient]);
    assert_eq!(records(&first).len(), 67);
    assert_eq!(records(&first), records(&second));
    // The same entries, but each record's proof, which is of its own ledger's transaction: each
    // names the transaction that registered that record on that ledger and carries its proof.
    let (mut exported, mut again) = (exported, again);
    for bundle in [&mut exported, &mut again] {
        for entry in bundle["entry"].as_array_mut().unwrap() {
            let proven = entry.as_object_mut().unwrap().remove("extension");
            let kind = entry["resource"]["resourceType"].as_str().unwrap();
            if !["Patient", "Practitioner", "Organization"].contains(&kind) {
                let proof = proven.unwrap_or_else(|| panic!("{kind} without its proof"));
                assert_eq!(proof[0]["url"], caduceus_interop::export::PROOF_EXTENSION);
                assert_eq!(proof[0]["extension"][1]["url"], "proof", "the patient reads its records' proofs");
            }
        }
    }
    assert!(exported["entry"] == again["entry"], "the same resources from both ledgers");
    // What the export read is on the patient's report: 67 reads, each an AuditEvent with its proof.
    let args = ["--dir", first.to_str().unwrap(), "--as", patient_name, "--keystore", ks];
    let events = fhir_export(&args, &dir.path().join("audit.json"), &["access-report", "--patient", &patient]);
    assert_eq!(events.len(), 67);
    for event in &events {
        assert_eq!(event["purposeOfEvent"][0]["coding"][0]["code"], "PATRQT");
        assert_eq!(event["entity"][2]["detail"][0]["type"], "proof", "{event}");
    }
}

/// A pharmacy first seen as a shipment's addressee is registered a distributor; a later file in
/// which it dispenses has the operator raise it to a dispenser, so its dispense commits.
#[test]
fn a_party_a_later_file_shows_dispensing_is_raised_to_a_dispenser() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("ledger");
    let document = |events: &str| {
        format!(
            r#"{{"@context":["https://ref.gs1.org/standards/epcis/epcis-context.jsonld"],"type":"EPCISDocument",
            "schemaVersion":"2.0","creationDate":"2026-12-01T00:00:00Z","epcisBody":{{"eventList":[{events}]}}}}"#
        )
    };
    let event = |time: &str, step: &str, at: &str, extra: &str| {
        format!(
            r#"{{"type":"ObjectEvent","eventTime":"2026-12-0{time}T00:00:00Z","eventTimeZoneOffset":"+00:00",
            "epcList":["urn:epc:id:sgtin:0614141.107346.7"],"action":"{}","bizStep":"{step}",
            "bizLocation":{{"id":"urn:epc:id:sgln:{at}.00001.0"}}{extra}}}"#,
            if step == "commissioning" { "ADD" } else { "OBSERVE" }
        )
    };
    let shipped = document(
        &[
            event(
                "1",
                "commissioning",
                "0614141",
                r#","ilmd":{"cbvmda:lotNumber":"L7","cbvmda:itemExpirationDate":"2031-01-31"}"#,
            ),
            event(
                "2",
                "shipping",
                "0614141",
                r#","destinationList":[{"type":"owning_party","destination":"urn:epc:id:pgln:0098765.00001"}]"#,
            ),
        ]
        .join(","),
    );
    let dispensed =
        document(&[event("3", "receiving", "0098765", ""), event("4", "dispensing", "0098765", "")].join(","));
    let (first, second) = (dir.path().join("shipped.jsonld"), dir.path().join("dispensed.jsonld"));
    std::fs::write(&first, shipped).unwrap();
    std::fs::write(&second, dispensed).unwrap();
    let said = text(&caduceus(&["import", "--dir", data.to_str().unwrap(), first.to_str().unwrap()]));
    assert!(said.contains("4 transactions submitted (4 committed)"), "{said}");
    // The role change, the receipt and the dispense; the pharmacy is known already.
    let said = text(&caduceus(&["import", "--dir", data.to_str().unwrap(), second.to_str().unwrap()]));
    assert!(said.contains("3 transactions submitted (3 committed), 1 already on the ledger"), "{said}");
}

/// The study bundle: the study registered, patient 1 enrolled on its research consent and
/// patient 2 refused on a treatment consent; a later file's research consent and subject enrol
/// patient 2 in the study imported before; a later status closes the study. The credentials
/// verify by their ids for anyone; an enrolment is read by its patient and investigator only.
#[test]
fn a_study_enrols_on_research_consent_and_credentials_verify_by_id() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("ledger");
    let data_arg = data.to_str().unwrap();
    let keystore = data.with_extension("keys");
    let bundle = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/data/caduceus/research-study.json");
    let first = text(&caduceus(&["import", "--dir", data_arg, bundle.to_str().unwrap()]));
    // 7 actors (2 patients, the investigator, 2 Organizations and their 2 issuer keys), 2
    // consents, the study, 2 enrolments (1 refused), 2 credentials.
    assert!(
        first.contains("14 transactions submitted (13 committed), 0 already on the ledger, 1 parts rejected"),
        "{first}"
    );
    assert!(first.contains("1 consent-purpose-not-covered"), "{first}");
    assert!(first.contains("rejected $.entry[10].resource.status: a subject of status \"screening\""), "{first}");
    let id_after = |said: &str, prefix: &str| -> String {
        let line =
            said.lines().find(|l| l.trim_start().starts_with(prefix)).unwrap_or_else(|| panic!("{prefix}: {said}"));
        line.split_whitespace().find(|w| w.len() == 32 && w.chars().all(|c| c.is_ascii_hexdigit())).unwrap().to_owned()
    };
    let study = id_after(&first, "study fhir.ResearchStudy.rs-study registered as");
    let licence = id_after(&first, "credential");
    let again = text(&caduceus(&["import", "--dir", data_arg, bundle.to_str().unwrap()]));
    assert!(again.contains("transactions: 0 submitted, 14 already on the ledger"), "{again}");

    let query = |who: Option<&str>, what: &[&str]| -> String {
        let mut args = vec!["query", "--dir", data_arg, "--keystore", keystore.to_str().unwrap()];
        if let Some(who) = who {
            args.extend(["--as", who]);
        }
        args.extend(what);
        text(&caduceus(&args))
    };
    let key = |name: &str| listed_key(&keystore, name);
    let (pi, board) = (key("fhir.Practitioner.rs-pi"), key("fhir.issuer.Organization.rs-board"));
    let credential = query(None, &["credential", "--credential", &licence]);
    assert!(credential.contains(&format!("MD held by {} issued by {}", &pi[..16], &board[..16])), "{credential}");
    assert!(credential.contains("valid 2015-07-01") && credential.contains(": valid now"), "{credential}");
    let opened = query(None, &["study", "--study", &study]);
    assert!(
        opened.contains(&format!("by investigator {}", &pi[..16])) && opened.contains("open to enrolment"),
        "{opened}"
    );
    let (one, two) = (key("fhir.Patient.rs-patient-1"), key("fhir.Patient.rs-patient-2"));
    let enrolment =
        |who: &str, patient: &str| query(Some(who), &["enrolment", "--patient", patient, "--study", &study]);
    assert!(enrolment("fhir.Patient.rs-patient-1", &one).contains("enrolled in study"));
    assert!(enrolment("fhir.Practitioner.rs-pi", &one).contains("enrolled in study"));
    assert!(enrolment("fhir.Patient.rs-patient-2", &one).contains("may not read"));
    assert!(enrolment("fhir.Patient.rs-patient-2", &two).contains("never enrolled"));

    // A later file: patient 2's research consent, and its subject naming the study of the first.
    let later = dir.path().join("later.json");
    let consent = serde_json::json!({
        "resourceType": "Consent", "id": "rs-consent-3", "status": "active",
        "scope": { "coding": [{ "system": "http://terminology.hl7.org/CodeSystem/consentscope", "code": "research" }] },
        "category": [{ "coding": [{ "system": "http://loinc.org", "code": "57016-8" }] }],
        "patient": { "reference": "Patient/rs-patient-2" },
        "provision": { "type": "permit", "purpose": [{ "code": "HRESCH" }],
            "actor": [{ "role": { "text": "investigator" }, "reference": { "reference": "Practitioner/rs-pi" } }] }
    });
    let subject = serde_json::json!({
        "resourceType": "ResearchSubject", "id": "rs-subject-2", "status": "on-study",
        "study": { "reference": "ResearchStudy/rs-study" }, "individual": { "reference": "Patient/rs-patient-2" },
        "consent": { "reference": "Consent/rs-consent-3" }
    });
    let file = serde_json::json!({ "resourceType": "Bundle", "type": "collection",
        "entry": [{ "resource": consent }, { "resource": subject }] });
    std::fs::write(&later, serde_json::to_vec(&file).unwrap()).unwrap();
    let said = text(&caduceus(&["import", "--dir", data_arg, later.to_str().unwrap()]));
    assert!(said.contains("2 transactions submitted (2 committed)"), "{said}");
    assert!(enrolment("fhir.Patient.rs-patient-2", &two).contains("enrolled in study"));

    // The study completed: registered already, now closed to enrolment.
    let closing = dir.path().join("closing.json");
    let mut completed: serde_json::Value = serde_json::from_slice(&std::fs::read(&bundle).unwrap()).unwrap();
    let entries = completed["entry"].as_array().unwrap().clone();
    let mut study_resource = entries.iter().find(|e| e["resource"]["resourceType"] == "ResearchStudy").unwrap().clone();
    study_resource["resource"]["status"] = "completed".into();
    completed["entry"] = serde_json::json!([study_resource]);
    std::fs::write(&closing, serde_json::to_vec(&completed).unwrap()).unwrap();
    let said = text(&caduceus(&["import", "--dir", data_arg, closing.to_str().unwrap()]));
    // The study and its investigator are held already; the close is new.
    assert!(said.contains("1 transactions submitted (1 committed), 2 already on the ledger"), "{said}");
    assert_eq!(id_after(&said, "study fhir.ResearchStudy.rs-study"), study);
    let closed = query(None, &["study", "--study", &study]);
    assert!(closed.contains(", closed "), "{closed}");
}
