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
//! - Everything else is rejected at its place with the reason: a resource that names no
//!   patient, and, for now, consents, claims and their responses, whose mapping comes next.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use crate::fhir::{Found, Read};
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
    pub rejections: Vec<Rejection>,
}

const PROVIDERS: [&str; 3] = ["Practitioner", "PractitionerRole", "Organization"];
/// Resource types whose mapping is still to come; rejected with that reason for now.
const NOT_YET: [&str; 4] = ["Consent", "Claim", "ClaimResponse", "ExplanationOfBenefit"];

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
    let mut first_provider = None;
    let mut encounter_providers: BTreeMap<usize, Option<String>> = BTreeMap::new();
    for found in &read.resources {
        let kind = found.resource_type();
        let Some((kind, id)) = identity(found).filter(|_| is_actor(kind)) else { continue };
        let actor = PlannedActor { kind: actor_kind(&kind), key: key_name(&kind, &id) };
        if actor.kind == ActorKind::Provider && first_provider.is_none() {
            first_provider = Some(actor.key.clone());
        }
        actors.insert(actor);
    }
    for found in &read.resources {
        let kind = found.resource_type();
        if is_actor(kind) {
            continue;
        }
        if NOT_YET.contains(&kind) {
            let reason = format!("{kind} is not imported yet (its mapping onto the ledger comes next)");
            plan.rejections.push(Rejection::new(found.place.clone(), reason));
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
    plan.actors = actors.into_iter().collect();
    plan
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
