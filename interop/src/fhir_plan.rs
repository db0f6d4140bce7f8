//! FHIR resources mapped onto the ledger: which actors a file names, and which of its resources
//! become records. Pure: the caller holds the keys (one per actor, named by `key_name`), the
//! payload store and the ledger.
//!
//! - A Patient is a patient actor; a Practitioner, PractitionerRole or Organization a provider.
//!   Actors a resource names only by reference (`Patient/example`) are registered too, under the
//!   reference. No name reaches the ledger: an actor is its key.
//! - A resource that names a patient (`subject` or `patient`) becomes a record of that patient,
//!   its JSON the record's encrypted payload, held by the first provider it names (or its
//!   encounter names, or, failing both, the file's first provider).
//! - A Consent is a grant (or revocation) per provider it permits; a Claim a claim submission;
//!   an ExplanationOfBenefit or ClaimResponse that pays, an adjudication and payment.
//! - A ResearchStudy is a study registration, a ResearchSubject an enrolment
//!   (`fhir_research`); a Practitioner's qualification, and a Basic or DocumentReference about a
//!   provider, a credential from the Organization that issued it (`fhir_credentials`), which
//!   signs as an issuer under a key of its own.
//! - Everything else is rejected at its place with the reason, such as a resource that names
//!   no patient.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use crate::claims::{ClaimLine, Decision, PlannedClaim, PlannedPayment, PlannedRemittance};
use crate::fhir::{within, Found, Read};
use crate::fhir_credentials::PlannedCredential;
use crate::fhir_research::{PlannedEnrolment, PlannedStudy};
use crate::report::{Place, Rejection};

pub use crate::actors::{ActorKind, PlannedActor};

/// A record to register.
#[derive(Clone, Debug)]
pub struct PlannedRecord {
    /// Where the resource was.
    pub place: Place,
    /// The record's id: a function of the resource's type and id (or full URL), so the same
    /// resource imported twice is the same record.
    pub record: u128,
    /// The patient's key name.
    pub patient: String,
    /// The custodian's key name (a provider).
    pub custodian: String,
    /// The resource's type (the record's class on the ledger).
    pub resource_type: String,
    /// The resource's JSON, which is stored encrypted.
    pub payload: Vec<u8>,
}

/// What a file puts on the ledger.
#[derive(Debug, Default)]
pub struct Plan {
    pub actors: Vec<PlannedActor>,
    pub records: Vec<PlannedRecord>,
    pub consents: Vec<PlannedConsent>,
    pub claims: Vec<PlannedClaim>,
    /// One per ExplanationOfBenefit or ClaimResponse that pays.
    pub remittances: Vec<PlannedRemittance>,
    pub studies: Vec<PlannedStudy>,
    pub enrolments: Vec<PlannedEnrolment>,
    pub credentials: Vec<PlannedCredential>,
    pub rejections: Vec<Rejection>,
}

pub(crate) const PROVIDERS: [&str; 3] = ["Practitioner", "PractitionerRole", "Organization"];
/// The resources that pay (or refuse) a claim, and the element that names the claim.
const PAYMENTS: [(&str, &str); 2] =
    [("ExplanationOfBenefit", "/claim/reference"), ("ClaimResponse", "/request/reference")];

/// HL7 v3 PurposeOfUse codes (a consent's `provision.purpose`) and the ledger's purposes they
/// are; the first code of each purpose is the one exports write.
pub(crate) const PURPOSES: [(&str, &str); 9] = [
    ("TREAT", "treatment"),
    ("ETREAT", "treatment"),
    ("CAREMGT", "treatment"),
    ("HPAYMT", "payment"),
    ("HOPERAT", "operations"),
    ("HRESCH", "research"),
    ("CLINTRCH", "research"),
    ("PUBHLTH", "public-health"),
    ("PATRQT", "patient-request"),
];

/// The last millisecond of the year 9999 (the last a date can name): the end of a consent that
/// names none.
pub const OPEN_END: u64 = 253_402_300_799_999;

/// A patient's consent to one grantee: granted, or revoked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlannedConsent {
    /// Where the Consent was.
    pub place: Place,
    /// The consent's id: a function of the resource's identity and the grantee, so the same
    /// Consent imported as inactive revokes what it granted when active.
    pub consent: u128,
    /// Key names.
    pub patient: String,
    pub grantee: String,
    /// `None` for a revocation.
    pub grant: Option<Grant>,
}

/// What a consent permits.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Grant {
    /// Resource types; empty for every type.
    pub scope: Vec<String>,
    /// The ledger's purpose names (`treatment`, ...).
    pub purposes: Vec<&'static str>,
    /// Milliseconds since the epoch; the end exclusive.
    pub valid_from: u64,
    pub valid_until: u64,
}

/// The keystore name of an actor's key: `fhir.TYPE.ID` (a digest of the id if that is longer
/// than a key name may be).
pub fn key_name(resource_type: &str, id: &str) -> String {
    crate::actors::key_name(&format!("fhir.{resource_type}"), id)
}

/// A resource's identity in the file: its type and id, or its full URL when it has no id.
/// An id that is not a FHIR id (1 to 64 letters, digits, '-' and '.') gives none.
fn identity(found: &Found) -> Option<(String, String)> {
    let id = match found.id() {
        Some(id) => is_fhir_id(id).then(|| id.to_owned())?,
        None => found.full_url.as_deref().filter(|url| !url.is_empty())?.to_owned(),
    };
    Some((found.resource_type().to_owned(), id))
}

/// FHIR's `id` datatype: `[A-Za-z0-9\-\.]{1,64}`.
pub fn is_fhir_id(id: &str) -> bool {
    (1..=64).contains(&id.len()) && id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
}

/// Maps what a file held onto the ledger.
pub fn plan(read: &Read) -> Plan {
    // Every resource by the names references may use: `Type/id`, and its full URL.
    let mut by_reference: BTreeMap<String, usize> = BTreeMap::new();
    for (index, found) in read.resources.iter().enumerate() {
        if let Some(id) = found.id() {
            by_reference.insert(format!("{}/{id}", found.resource_type()), index);
        }
        if let Some(url) = &found.full_url {
            by_reference.insert(url.clone(), index);
        }
    }
    // What a reference names: a resource of the file, or a `Type/id` outside it.
    let resolve = |reference: &str| -> Option<(String, String)> {
        let reference = reference.rsplit_once("/_history/").map_or(reference, |(head, _)| head);
        if let Some(&index) = by_reference.get(reference) {
            let found = &read.resources[index];
            return identity(found);
        }
        let (kind, id) = reference.split_once('/')?;
        (!kind.contains(':') && is_fhir_id(id)).then(|| (kind.to_owned(), id.to_owned()))
    };
    let mut plan = Plan::default();
    let mut actors = BTreeSet::new();
    // Credentials first: which Basic and DocumentReference resources they are.
    let mut credential_documents = BTreeSet::new();
    for (index, found) in read.resources.iter().enumerate() {
        let kind = found.resource_type();
        let credentials = if kind == "Practitioner" {
            identity(found)
                .map_or_else(Vec::new, |(_, id)| crate::fhir_credentials::qualifications(found, &id, &resolve))
        } else if crate::fhir_credentials::DOCUMENTS.contains(&kind) {
            let found = crate::fhir_credentials::document(found, &resolve);
            if found.is_some() {
                credential_documents.insert(index);
            }
            found.into_iter().collect()
        } else {
            Vec::new()
        };
        for credential in credentials {
            match credential {
                Ok(credential) => {
                    actors.insert(PlannedActor { kind: ActorKind::Issuer, key: credential.issuer.clone() });
                    actors.insert(PlannedActor { kind: ActorKind::Provider, key: credential.subject.clone() });
                    plan.credentials.push(credential);
                }
                Err(rejection) => plan.rejections.push(rejection),
            }
        }
    }
    let mut subjects = Vec::new();
    let mut studies_here: BTreeMap<String, String> = BTreeMap::new();
    let mut first_provider = None;
    let mut encounter_providers: BTreeMap<usize, Option<String>> = BTreeMap::new();
    let mut payers = Vec::new();
    // Every Claim of the file by its claim id: its provider if it is imported, else its place.
    let mut claims_here: BTreeMap<u128, Result<String, Place>> = BTreeMap::new();
    for found in &read.resources {
        let kind = found.resource_type();
        let Some((kind, id)) = identity(found).filter(|_| is_actor(kind)) else { continue };
        let actor = PlannedActor { kind: actor_kind(&kind), key: key_name(&kind, &id) };
        if actor.kind == ActorKind::Provider && first_provider.is_none() {
            first_provider = Some(actor.key.clone());
        }
        actors.insert(actor);
    }
    for (index, found) in read.resources.iter().enumerate() {
        let kind = found.resource_type();
        if is_actor(kind) || credential_documents.contains(&index) {
            continue;
        }
        if kind == "ResearchStudy" {
            match crate::fhir_research::study(found, &resolve) {
                Ok(study) => {
                    actors.insert(PlannedActor { kind: ActorKind::Provider, key: study.investigator.clone() });
                    studies_here.insert(study.study.clone(), study.investigator.clone());
                    plan.studies.push(study);
                }
                Err(rejection) => plan.rejections.push(rejection),
            }
            continue;
        }
        if kind == "ResearchSubject" {
            subjects.push(found);
            continue;
        }
        if kind == "Consent" {
            match consent(found, &resolve) {
                Ok(consents) => {
                    for planned in consents {
                        actors.insert(PlannedActor { kind: ActorKind::Patient, key: planned.patient.clone() });
                        actors.insert(PlannedActor { kind: ActorKind::Provider, key: planned.grantee.clone() });
                        plan.consents.push(planned);
                    }
                }
                Err(rejection) => plan.rejections.push(rejection),
            }
            continue;
        }
        if kind == "Claim" {
            match claim(found, &resolve, &|r: &str| by_reference.get(r).map(|i| &read.resources[*i])) {
                Ok(claim) => {
                    actors.extend(claim.actors());
                    claims_here.insert(claim.claim, Ok(claim.provider.clone()));
                    plan.claims.push(claim);
                }
                Err(rejection) => {
                    if let Some((_, id)) = identity(found) {
                        claims_here.entry(claim_id(&id)).or_insert(Err(found.place.clone()));
                    }
                    plan.rejections.push(rejection);
                }
            }
            continue;
        }
        if PAYMENTS.iter().any(|(paying, _)| *paying == kind) {
            payers.push(found);
            continue;
        }
        let patient = ["subject", "patient"]
            .iter()
            .find_map(|field| found.json.get(*field).and_then(|r| r.get("reference")).and_then(Value::as_str))
            .and_then(resolve)
            .filter(|(kind, _)| kind == "Patient");
        let Some((_, patient_id)) = patient else {
            let reason = format!("{kind} names no patient, so it is no one's record");
            plan.rejections.push(Rejection::new(found.place.clone(), reason));
            continue;
        };
        let provider_of = |json: &Value| -> Option<String> {
            let mut references = Vec::new();
            references_in(json, &mut references);
            references
                .iter()
                .filter_map(|r| resolve(r))
                .find(|(kind, _)| PROVIDERS.contains(&kind.as_str()))
                .map(|(kind, id)| key_name(&kind, &id))
        };
        let encounter = found.json.pointer("/encounter/reference").and_then(Value::as_str);
        let encounter_provider = |index: usize| -> Option<String> {
            // Each encounter's provider is looked for once, however many resources name it.
            encounter_providers.entry(index).or_insert_with(|| provider_of(&read.resources[index].json)).clone()
        };
        let custodian = provider_of(&found.json)
            .or_else(|| encounter.and_then(|r| by_reference.get(r).copied()).and_then(encounter_provider))
            .or_else(|| first_provider.clone());
        let Some(custodian) = custodian else {
            let reason = format!("its file names no provider to hold this {kind}");
            plan.rejections.push(Rejection::new(found.place.clone(), reason));
            continue;
        };
        let Some((_, id)) = identity(found) else {
            let reason = "neither a FHIR id (1 to 64 letters, digits, '-' or '.') nor a full URL to know it by";
            plan.rejections.push(Rejection::new(found.place.clone(), reason));
            continue;
        };
        let patient = key_name("Patient", &patient_id);
        actors.insert(PlannedActor { kind: ActorKind::Patient, key: patient.clone() });
        actors.insert(PlannedActor { kind: ActorKind::Provider, key: custodian.clone() });
        let digest = blake3::hash(format!("caduceus.fhir.record.1\0{kind}\0{id}").as_bytes());
        plan.records.push(PlannedRecord {
            place: found.place.clone(),
            record: u128::from_le_bytes(digest.as_bytes()[..16].try_into().expect("16 bytes")),
            patient,
            custodian,
            resource_type: kind.to_owned(),
            payload: serde_json::to_vec(&found.json).expect("a JSON value serializes"),
        });
    }
    // The enrolments, once the file's studies are known.
    for found in subjects {
        match crate::fhir_research::subject(found, &resolve, &studies_here) {
            Ok(enrolment) => {
                actors.insert(PlannedActor { kind: ActorKind::Patient, key: enrolment.patient.clone() });
                plan.enrolments.push(enrolment);
            }
            Err(rejection) => plan.rejections.push(rejection),
        }
    }
    // The payments, once the file's claims are known: a payment goes to its claim's provider.
    for found in payers {
        match remittance(found, &resolve, &claims_here) {
            Ok(remittance) => {
                for payment in &remittance.payments {
                    actors.insert(PlannedActor { kind: ActorKind::Patient, key: payment.patient.clone() });
                    actors.insert(PlannedActor { kind: ActorKind::Provider, key: payment.provider.clone() });
                }
                actors.insert(PlannedActor { kind: ActorKind::Payer, key: remittance.payer.clone() });
                plan.remittances.push(remittance);
            }
            Err(rejection) => plan.rejections.push(rejection),
        }
    }
    plan.actors = actors.into_iter().collect();
    plan
}

/// What a reference at `pointer` names, if it resolves to a resource of one of `kinds`.
pub(crate) fn referenced(
    json: &Value,
    pointer: &str,
    resolve: &dyn Fn(&str) -> Option<(String, String)>,
    kinds: &[&str],
) -> Option<(String, String)> {
    let (kind, id) = json.pointer(pointer).and_then(Value::as_str).and_then(resolve)?;
    kinds.contains(&kind.as_str()).then_some((kind, id))
}

/// A resource's id or full URL, or its rejection: a `what` with neither cannot be known by a
/// later file.
pub(crate) fn known_by(found: &Found, what: &str) -> Result<String, Rejection> {
    let reason = || format!("neither a FHIR id nor a full URL to know the {what} by");
    identity(found).map(|(_, id)| id).ok_or_else(|| Rejection::new(found.place.clone(), reason()))
}

/// A claim's id: a function of the Claim's identity, which its ExplanationOfBenefit or
/// ClaimResponse names.
fn claim_id(id: &str) -> u128 {
    crate::actors::derived_id("caduceus fhir claim 1", &[id])
}

/// The payer a Claim, ExplanationOfBenefit or ClaimResponse names: its insurer's reference or
/// display, or else its focal insurance's coverage display (as Synthea writes it). A file that
/// says there is no insurance names no payer.
fn payer_of(json: &Value, resolve: &dyn Fn(&str) -> Option<(String, String)>) -> Option<String> {
    if let Some((kind, id)) = json.pointer("/insurer/reference").and_then(Value::as_str).and_then(resolve) {
        return Some(crate::actors::key_name("fhir.payer", &format!("{kind}.{id}")));
    }
    let insurance = json.get("insurance").and_then(Value::as_array);
    let focal = insurance.and_then(|all| all.iter().find(|i| i["focal"] == true).or(all.first()));
    let display = json
        .pointer("/insurer/display")
        .or_else(|| focal.and_then(|i| i.pointer("/coverage/display")))
        .and_then(Value::as_str)
        .filter(|d| !d.is_empty() && !d.eq_ignore_ascii_case("no_insurance"))?;
    Some(crate::actors::key_name("fhir.payer", display))
}

/// A FHIR decimal money value in cents, rounded to the nearest: the ledger moves whole cents,
/// and Synthea writes payments such as 559.032 (80% of a charge) and 687.2800000000001.
fn money(value: Option<&Value>) -> Option<u64> {
    let rounded = (value?.as_f64()? * 100.0).round();
    (0.0..1e15).contains(&rounded).then_some(rounded as u64)
}

/// A FHIR date or dateTime's date as YYYYMMDD.
fn date_of(value: Option<&Value>) -> Option<u32> {
    let text = value?.as_str()?;
    let day = chrono::NaiveDate::parse_from_str(text.get(..10)?, "%Y-%m-%d").ok()?;
    day.format("%Y%m%d").to_string().parse().ok()
}

/// The first code of a CodeableConcept.
fn code_of(concept: Option<&Value>) -> Option<String> {
    let code = concept?.pointer("/coding/0/code")?.as_str()?;
    (!code.is_empty()).then(|| code.to_owned())
}

/// A Claim as a claim submission: its provider's, against its payer, for its patient. Each
/// priced item (with a `net`) is a line: its product or service code, and the diagnosis its
/// `diagnosisSequence` names or the first (coded, or the code of the Condition it references).
/// Its total is `total` (or the lines' sum); its service date the start of its billable period.
fn claim<'r>(
    found: &Found,
    resolve: &dyn Fn(&str) -> Option<(String, String)>,
    resource: &dyn Fn(&str) -> Option<&'r Found>,
) -> Result<PlannedClaim, Rejection> {
    let json = &found.json;
    let at = |path: &str| within(&found.place, path);
    let id = known_by(found, "claim")?;
    let patient = referenced(json, "/patient/reference", resolve, &["Patient"])
        .ok_or_else(|| Rejection::new(at(".patient"), "the claim names no patient (a Patient reference)"))?;
    let provider = referenced(json, "/provider/reference", resolve, &PROVIDERS).ok_or_else(|| {
        Rejection::new(
            at(".provider"),
            "the claim names no provider (a Practitioner, PractitionerRole or Organization)",
        )
    })?;
    let payer = payer_of(json, resolve)
        .ok_or_else(|| Rejection::new(at(".insurance"), "the claim names no payer: no insurer, or no insurance"))?;
    let diagnoses: Vec<Option<String>> = json
        .get("diagnosis")
        .and_then(Value::as_array)
        .map(|all| {
            all.iter()
                .map(|d| {
                    code_of(d.get("diagnosisCodeableConcept")).or_else(|| {
                        let condition =
                            d.pointer("/diagnosisReference/reference").and_then(Value::as_str).and_then(resource);
                        condition.and_then(|c| code_of(c.json.get("code")))
                    })
                })
                .collect()
        })
        .unwrap_or_default();
    let Some(principal) = diagnoses.iter().flatten().next() else {
        let reason = "the claim names no coded diagnosis (diagnosis), which its commitment covers";
        return Err(Rejection::new(at(".diagnosis"), reason));
    };
    let mut lines = Vec::new();
    for (index, item) in json.get("item").and_then(Value::as_array).into_iter().flatten().enumerate() {
        let Some(amount) = item.pointer("/net/value") else { continue };
        let amount = money(Some(amount))
            .filter(|a| *a > 0)
            .ok_or_else(|| Rejection::new(at(&format!(".item[{index}].net")), "not an amount above zero"))?;
        let procedure = code_of(item.get("productOrService"))
            .ok_or_else(|| Rejection::new(at(&format!(".item[{index}].productOrService")), "the item has no code"))?;
        let pointed = item
            .pointer("/diagnosisSequence/0")
            .and_then(Value::as_u64)
            .and_then(|sequence| usize::try_from(sequence).ok()?.checked_sub(1))
            .and_then(|index| diagnoses.get(index).cloned().flatten());
        lines.push(ClaimLine { procedure, diagnosis: pointed.unwrap_or_else(|| principal.clone()), amount });
    }
    if lines.is_empty() {
        return Err(Rejection::new(at(".item"), "the claim has no priced item (an item with a net amount)"));
    }
    let sum = lines.iter().try_fold(0u64, |sum, line| sum.checked_add(line.amount));
    let total = match json.pointer("/total/value") {
        Some(total) => money(Some(total)).ok_or_else(|| Rejection::new(at(".total"), "not an amount"))?,
        None => sum.ok_or_else(|| Rejection::new(at(".item"), "the items' amounts overflow"))?,
    };
    let service_date = date_of(json.pointer("/billablePeriod/start"))
        .or_else(|| json.pointer("/item/0/servicedDate").and_then(|d| date_of(Some(d))))
        .ok_or_else(|| Rejection::new(at(".billablePeriod"), "the claim has no service date (billablePeriod.start)"))?;
    Ok(PlannedClaim {
        place: found.place.clone(),
        claim: claim_id(&id),
        patient: key_name("Patient", &patient.1),
        provider: key_name(&provider.0, &provider.1),
        payer,
        service_date,
        lines,
        total,
    })
}

/// An ExplanationOfBenefit or ClaimResponse as its claim's approval and payment: the claim it
/// names, paid `payment.amount` by its payer to the claim's provider (the one its Claim in the
/// file names, or else its own provider). One that errs or pays nothing is rejected: the
/// ledger's denials need an adjustment reason code, which neither gives as one.
fn remittance(
    found: &Found,
    resolve: &dyn Fn(&str) -> Option<(String, String)>,
    claims_here: &BTreeMap<u128, Result<String, Place>>,
) -> Result<PlannedRemittance, Rejection> {
    let json = &found.json;
    let kind = found.resource_type();
    let at = |path: &str| within(&found.place, path);
    let id = known_by(found, kind)?;
    let pointer = PAYMENTS.iter().find(|(paying, _)| *paying == kind).map_or("/claim/reference", |(_, p)| p);
    let claim_place = at(&pointer[..pointer.len() - 10].replace('/', "."));
    let claim = referenced(json, pointer, resolve, &["Claim"])
        .ok_or_else(|| Rejection::new(claim_place.clone(), "names no Claim"))?;
    let patient = referenced(json, "/patient/reference", resolve, &["Patient"])
        .ok_or_else(|| Rejection::new(at(".patient"), "names no patient (a Patient reference)"))?;
    if json.get("outcome").and_then(Value::as_str) == Some("error") {
        return Err(Rejection::new(at(".outcome"), "an outcome of error decides nothing"));
    }
    let amount = money(json.pointer("/payment/amount/value")).filter(|a| *a > 0).ok_or_else(|| {
        Rejection::new(at(".payment.amount"), "pays nothing, and names no reason code a denial needs")
    })?;
    let payer = payer_of(json, resolve).ok_or_else(|| Rejection::new(at(".insurer"), "names no payer (insurer)"))?;
    let claim = claim_id(&claim.1);
    let provider = match claims_here.get(&claim) {
        Some(Err(place)) => {
            return Err(Rejection::new(claim_place, format!("its Claim is not imported: see {place}")));
        }
        Some(Ok(provider)) => Some(provider.clone()),
        None => referenced(json, "/provider/reference", resolve, &PROVIDERS).map(|(kind, id)| key_name(&kind, &id)),
    };
    let provider = provider.ok_or_else(|| Rejection::new(at(".provider"), "names no provider to pay"))?;
    Ok(PlannedRemittance {
        place: found.place.clone(),
        payer,
        trace: format!("{kind}/{id}"),
        payments: vec![PlannedPayment {
            place: found.place.clone(),
            claim,
            patient: key_name("Patient", &patient.1),
            provider,
            decision: Decision::Paid(amount),
        }],
    })
}

/// A Consent as the ledger's consents: one per provider its provision permits, granted if it is
/// active and revoked if inactive. What the ledger's consents cannot say is rejected: a
/// provision that is not an explicit permit, exceptions (nested provisions), a purpose with no
/// counterpart.
fn consent(
    found: &Found,
    resolve: &dyn Fn(&str) -> Option<(String, String)>,
) -> Result<Vec<PlannedConsent>, Rejection> {
    let json = &found.json;
    let at = |path: &str| within(&found.place, path);
    let text = |value: Option<&Value>| value.and_then(Value::as_str).unwrap_or("").to_owned();
    let patient = referenced(json, "/patient/reference", resolve, &["Patient"])
        .ok_or_else(|| Rejection::new(at(".patient"), "the consent names no patient (a Patient reference)"))?;
    let granted = match json.get("status").and_then(Value::as_str) {
        Some("active") => true,
        Some("inactive") => false,
        other => {
            let reason = format!("a consent of status {:?} neither grants nor revokes", other.unwrap_or(""));
            return Err(Rejection::new(at(".status"), reason));
        }
    };
    let id = known_by(found, "consent")?;
    let provision = json
        .get("provision")
        .ok_or_else(|| Rejection::new(at(""), "the consent has no provision to say whom it permits"))?;
    match provision.get("type").and_then(Value::as_str) {
        Some("permit") => {}
        Some(_) => {
            return Err(Rejection::new(at(".provision.type"), "a deny provision: the ledger's consents only permit"))
        }
        // Without a type, what the provision does rests on the consent's policy (opt-in or opt-out)
        // and its narrative; a consent withheld must never become a grant, so only an explicit
        // permit is one.
        None => {
            let reason = "the provision does not say permit (type): only an explicit permit becomes a grant";
            return Err(Rejection::new(at(".provision.type"), reason));
        }
    }
    if provision.get("provision").is_some() {
        let reason = "nested provisions (exceptions within the consent) have no counterpart on the ledger, \
                      whose consents permit whole resource types";
        return Err(Rejection::new(at(".provision.provision"), reason));
    }
    let items = |name: &str| provision.get(name).and_then(Value::as_array).cloned().unwrap_or_default();
    let grantees: BTreeSet<String> = items("actor")
        .iter()
        .filter_map(|actor| actor.pointer("/reference/reference").and_then(Value::as_str))
        .filter_map(resolve)
        .filter(|(kind, _)| PROVIDERS.contains(&kind.as_str()))
        .map(|(kind, id)| key_name(&kind, &id))
        .collect();
    if grantees.is_empty() {
        let reason = "the provision names no provider (Practitioner, PractitionerRole or Organization) to permit";
        return Err(Rejection::new(at(".provision.actor"), reason));
    }
    let mut scope = Vec::new();
    for (index, class) in items("class").iter().enumerate() {
        match class.get("code").and_then(Value::as_str) {
            Some(code) if !code.is_empty() => scope.push(code.to_owned()),
            _ => return Err(Rejection::new(at(&format!(".provision.class[{index}]")), "a class without a code")),
        }
    }
    let mut purposes = Vec::new();
    for (index, purpose) in items("purpose").iter().enumerate() {
        let code = text(purpose.get("code"));
        match PURPOSES.iter().find(|(v3, _)| *v3 == code) {
            Some((_, ours)) if !purposes.contains(ours) => purposes.push(*ours),
            Some(_) => {}
            None => {
                let known: Vec<&str> = PURPOSES.iter().map(|(v3, _)| *v3).collect();
                let reason = format!("purpose of use {code:?} has no counterpart on the ledger ({})", known.join(", "));
                return Err(Rejection::new(at(&format!(".provision.purpose[{index}]")), reason));
            }
        }
    }
    if purposes.is_empty() {
        // A consent that names no purpose is not limited by purpose.
        let mut all: Vec<&'static str> = PURPOSES.iter().map(|(_, ours)| *ours).collect();
        all.dedup();
        purposes = all;
    }
    let time = |path: &str, end: bool| time_at(json.pointer(path), end, &at(&path.replace('/', ".")));
    let valid_from = time("/provision/period/start", false)?.or(time("/dateTime", false)?).unwrap_or(0);
    let valid_until = time("/provision/period/end", true)?.unwrap_or(OPEN_END);
    let patient = key_name("Patient", &patient.1);
    let grant = Grant { scope, purposes, valid_from, valid_until };
    Ok(grantees
        .into_iter()
        .map(|grantee| PlannedConsent {
            place: found.place.clone(),
            consent: consent_id(&id, &grantee),
            patient: patient.clone(),
            grant: granted.then(|| grant.clone()),
            grantee,
        })
        .collect())
}

/// The ledger id of a Consent's grant to one grantee: a function of the Consent's identity (id or
/// full URL) and the grantee's key name, so that an enrolment naming the Consent finds it.
pub fn consent_id(consent: &str, grantee: &str) -> u128 {
    crate::actors::derived_id("caduceus fhir consent 1", &[consent, grantee])
}

/// An optional FHIR date or dateTime (`fhir_time`), or its rejection at `place`.
pub(crate) fn time_at(value: Option<&Value>, end: bool, place: &Place) -> Result<Option<u64>, Rejection> {
    match value.and_then(Value::as_str) {
        None => Ok(None),
        Some(text) => fhir_time(text, end)
            .map(Some)
            .ok_or_else(|| Rejection::new(place.clone(), format!("{text:?} is not a FHIR date or dateTime"))),
    }
}

/// A FHIR date or dateTime in milliseconds since the epoch: its start, or with `end` the start
/// of what follows it at its precision (the end of 2016-01-01 is 2016-01-02T00:00Z), so a
/// period's end is exclusive.
pub fn fhir_time(value: &str, end: bool) -> Option<u64> {
    use chrono::{DateTime, Months, NaiveDate};
    let date = |y: i32, m: u32, d: u32| NaiveDate::from_ymd_opt(y, m, d);
    let start_and_next = match value.len() {
        4 => {
            let year = value.parse().ok()?;
            (date(year, 1, 1)?, date(year + 1, 1, 1)?)
        }
        7 => {
            let first = NaiveDate::parse_from_str(&format!("{value}-01"), "%Y-%m-%d").ok()?;
            (first, first.checked_add_months(Months::new(1))?)
        }
        10 => {
            let day = NaiveDate::parse_from_str(value, "%Y-%m-%d").ok()?;
            (day, day.succ_opt()?)
        }
        _ => {
            let instant = DateTime::parse_from_rfc3339(value).ok()?.timestamp_millis();
            return u64::try_from(instant).ok();
        }
    };
    let (start, next) = start_and_next;
    let day = if end { next } else { start };
    let millis = day.and_hms_opt(0, 0, 0)?.and_utc().timestamp_millis();
    u64::try_from(millis).ok()
}

fn is_actor(kind: &str) -> bool {
    kind == "Patient" || PROVIDERS.contains(&kind)
}

fn actor_kind(kind: &str) -> ActorKind {
    if kind == "Patient" {
        ActorKind::Patient
    } else {
        ActorKind::Provider
    }
}

/// Every `reference` string in a resource, in document order (contained resources aside).
fn references_in(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::Object(object) => {
            for (key, inner) in object {
                match (key.as_str(), inner) {
                    ("reference", Value::String(reference)) => out.push(reference.clone()),
                    ("contained", _) => {}
                    _ => references_in(inner, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|item| references_in(item, out)),
        _ => {}
    }
}
