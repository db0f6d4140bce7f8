//! What the ledger holds, written in the formats health systems read: a patient's access report
//! as a FHIR R4 Bundle of AuditEvents, its consents as Consents, a claim as a ClaimResponse, a
//! unit's custody as an EPCIS 2.0 JSON-LD document whose event ids are GS1 event hashes
//! (`epcis-hash`). Every entry carries the proof of the transaction it comes from (or says
//! that the ledger keeps none for it), so a reader can check it against a published checkpoint
//! with `caduceus check-proof`. Actors appear by their ledger keys (`urn:caduceus:actor`), never
//! by name. The callers read the ledger; this module only writes.

use base64::Engine as _;
use chrono::{DateTime, SecondsFormat};
use serde_json::{json, Value};

/// The identifier system of ledger actors (the value is the key in hex).
pub const ACTOR: &str = "urn:caduceus:actor";
/// The identifier system of ledger ids (records, consents, claims, transactions; 32 hex digits).
pub const LEDGER_ID: &str = "urn:caduceus:id";
/// The extension that carries an entry's proof in a FHIR resource.
pub const PROOF_EXTENSION: &str = "urn:caduceus:fhir:proof";
/// The extension that carries the proof of a consent's revocation.
pub const REVOCATION_PROOF_EXTENSION: &str = "urn:caduceus:fhir:revocation-proof";
const PURPOSE_OF_USE: &str = "http://terminology.hl7.org/CodeSystem/v3-ActReason";

/// The proof of the transaction an entry comes from.
#[derive(Clone, Debug)]
pub struct ProofRef {
    /// The transaction id, 32 hex digits.
    pub transaction: String,
    /// The encoded proof (as `caduceus query write-proof` writes it), if the ledger has one.
    pub proof: Option<Vec<u8>>,
    /// The checkpoint it leads to (its hash in hex) and that checkpoint's round.
    pub checkpoint: Option<(String, u64)>,
}

impl ProofRef {
    fn base64(&self) -> Option<String> {
        self.proof.as_ref().map(|p| base64::engine::general_purpose::STANDARD.encode(p))
    }

    /// As a FHIR extension (`PROOF_EXTENSION`) with one sub-extension per part.
    pub fn fhir_extension(&self) -> Value {
        let mut parts = vec![json!({ "url": "transaction", "valueString": self.transaction })];
        if let Some(proof) = self.base64() {
            parts.push(json!({ "url": "proof", "valueBase64Binary": proof }));
        }
        if let Some((hash, round)) = &self.checkpoint {
            parts.push(json!({ "url": "checkpoint", "valueString": hash }));
            parts.push(json!({ "url": "round", "valueUnsignedInt": round }));
        }
        json!({ "url": PROOF_EXTENSION, "extension": parts })
    }
}

/// A FHIR instant from milliseconds since the epoch.
pub fn instant(ms: u64) -> String {
    let ms = i64::try_from(ms).unwrap_or(i64::MAX);
    DateTime::from_timestamp_millis(ms).unwrap_or(DateTime::UNIX_EPOCH).to_rfc3339_opts(SecondsFormat::Millis, true)
}

fn actor(key: &str) -> Value {
    json!({ "identifier": { "system": ACTOR, "value": key } })
}

fn ledger_id(id: &str) -> Value {
    json!({ "identifier": { "system": LEDGER_ID, "value": id } })
}

fn purpose(name: &str) -> Value {
    // The first code the import reads as this purpose.
    let code = crate::fhir_plan::PURPOSES.iter().find(|(_, p)| *p == name).map_or(name, |(code, _)| *code);
    json!({ "system": PURPOSE_OF_USE, "code": code })
}

fn bundle(entries: Vec<Value>, timestamp: u64) -> Value {
    let entries: Vec<Value> = entries.into_iter().map(|resource| json!({ "resource": resource })).collect();
    let mut bundle = json!({ "resourceType": "Bundle", "type": "collection", "timestamp": instant(timestamp) });
    if !entries.is_empty() {
        bundle["entry"] = json!(entries);
    }
    bundle
}

/// One entry of a patient's access report.
#[derive(Clone, Debug)]
pub struct Access {
    pub proof: ProofRef,
    /// The record's id (hex).
    pub record: String,
    /// Who read it (key in hex).
    pub accessor: String,
    /// The ledger purpose (`treatment`, ...); `None` for an emergency access.
    pub purpose: Option<String>,
    pub time: u64,
    /// Permitted, or refused.
    pub permitted: bool,
    /// `committed`, or the reason it was refused.
    pub result: String,
    pub break_glass: bool,
    /// Not a read: the record's erasure.
    pub erasure: bool,
}

/// A patient's access report as a FHIR R4 Bundle (collection) of AuditEvents: who (agent),
/// what (the record), when (recorded), why (purposeOfEvent; an emergency access is `ETREAT`,
/// labelled `BTG`, break the glass), the outcome (0, or 4 with the reason for a refused access),
/// and the proof (an entity for the transaction, its proof and checkpoint as details).
pub fn audit_events(patient: &str, accesses: &[Access], now: u64) -> Value {
    let events = accesses.iter().map(|access| {
        let mut event = json!({
            "resourceType": "AuditEvent",
            "id": access.proof.transaction,
            "type": { "system": "http://dicom.nema.org/resources/ontology/DCM", "code": "110110", "display": "Patient Record" },
            "subtype": [if access.erasure {
                json!({ "system": "http://hl7.org/fhir/restful-interaction", "code": "delete" })
            } else {
                json!({ "system": "http://hl7.org/fhir/restful-interaction", "code": "read" })
            }],
            "action": if access.erasure { "D" } else { "R" },
            "recorded": instant(access.time),
            "outcome": if access.permitted { "0" } else { "4" },
            "outcomeDesc": access.result,
            "purposeOfEvent": [{ "coding": [match &access.purpose {
                Some(name) => purpose(name),
                None => json!({ "system": PURPOSE_OF_USE, "code": "ETREAT" }),
            }] }],
            "agent": [{ "who": actor(&access.accessor), "requestor": true }],
            "source": { "observer": { "display": "Caduceus ledger" } },
            "entity": [
                { "what": ledger_id(&access.record), "type": { "system": "http://terminology.hl7.org/CodeSystem/audit-entity-type", "code": "2" } },
                { "what": actor(patient), "type": { "system": "http://terminology.hl7.org/CodeSystem/audit-entity-type", "code": "1" } },
                proof_entity(&access.proof),
            ],
        });
        if access.break_glass {
            event["meta"] = json!({ "security": [{ "system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "BTG", "display": "break the glass" }] });
        }
        event
    });
    bundle(events.collect(), now)
}

fn proof_entity(proof: &ProofRef) -> Value {
    let mut details = Vec::new();
    if let Some(encoded) = proof.base64() {
        details.push(json!({ "type": "proof", "valueBase64Binary": encoded }));
    }
    if let Some((hash, round)) = &proof.checkpoint {
        details.push(json!({ "type": "checkpoint", "valueString": format!("{hash} (round {round})") }));
    }
    let mut entity = json!({ "what": ledger_id(&proof.transaction), "description": "the ledger transaction" });
    // FHIR allows no empty array: a withheld proof has no details.
    if !details.is_empty() {
        entity["detail"] = json!(details);
    }
    entity
}

/// One of a patient's consents.
#[derive(Clone, Debug)]
pub struct ConsentEntry {
    pub id: String,
    pub grantee: String,
    /// Resource types.
    pub scope: Vec<String>,
    /// Ledger purposes.
    pub purposes: Vec<String>,
    pub valid_from: u64,
    /// Exclusive; `None` if open-ended.
    pub valid_until: Option<u64>,
    pub revoked_at: Option<u64>,
    /// The proof of the grant, and of the revocation if revoked.
    pub grant: ProofRef,
    pub revocation: Option<ProofRef>,
}

/// A patient's consents as a FHIR R4 Bundle of Consents: an explicit permit to the grantee
/// (scope as classes, purposes as v3 PurposeOfUse codes, period), active, or inactive once
/// revoked; each with the proof of its grant (`PROOF_EXTENSION`) and of its revocation
/// (`REVOCATION_PROOF_EXTENSION`). The checkpoint it was read at is the Bundle's `meta.tag`.
pub fn consents(patient: &str, entries: &[ConsentEntry], checkpoint: Option<(String, u64)>, now: u64) -> Value {
    let resources = entries.iter().map(|consent| {
        let mut period = json!({ "start": instant(consent.valid_from) });
        if let Some(until) = consent.valid_until {
            period["end"] = json!(instant(until));
        }
        let mut resource = json!({
            "resourceType": "Consent",
            "id": consent.id,
            "identifier": [{ "system": LEDGER_ID, "value": consent.id }],
            "status": if consent.revoked_at.is_some() { "inactive" } else { "active" },
            "scope": { "coding": [{ "system": "http://terminology.hl7.org/CodeSystem/consentscope", "code": "patient-privacy" }] },
            "category": [{ "coding": [{ "system": "http://loinc.org", "code": "59284-0", "display": "Patient Consent" }] }],
            "patient": actor(patient),
            "dateTime": instant(consent.valid_from),
            "policyRule": { "coding": [{ "system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "OPTIN" }] },
            "provision": {
                "type": "permit",
                "period": period,
                "actor": [{
                    "role": { "coding": [{ "system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType", "code": "IRCP" }] },
                    "reference": actor(&consent.grantee),
                }],
                "purpose": consent.purposes.iter().map(|p| purpose(p)).collect::<Vec<_>>(),
            },
        });
        let mut proofs = vec![consent.grant.fhir_extension()];
        if let Some(revocation) = &consent.revocation {
            let mut extension = revocation.fhir_extension();
            extension["url"] = json!(REVOCATION_PROOF_EXTENSION);
            proofs.push(extension);
        }
        resource["extension"] = json!(proofs);
        // No class: every resource type (the ledger's empty scope).
        if !consent.scope.is_empty() {
            let classes: Vec<Value> =
                consent.scope.iter().map(|t| json!({ "system": "http://hl7.org/fhir/resource-types", "code": t })).collect();
            resource["provision"]["class"] = json!(classes);
        }
        resource
    });
    let mut out = bundle(resources.collect(), now);
    if let Some((hash, round)) = checkpoint {
        out["meta"] = json!({ "tag": [{ "system": "urn:caduceus:checkpoint", "code": hash, "display": format!("read at round {round}") }] });
    }
    out
}

/// A claim as the ledger holds it.
#[derive(Clone, Debug)]
pub struct ClaimEntry {
    pub claim: String,
    pub patient: String,
    pub provider: String,
    pub payer: String,
    /// In cents.
    pub total: u64,
    /// `submitted`, `pended`, `approved`, `denied` or `paid`.
    pub status: String,
    /// In cents: approved (or paid).
    pub benefit: Option<u64>,
    /// A denial's X12 Claim Adjustment Reason Code.
    pub denial: Option<u16>,
    pub submitted_at: u64,
    /// The payment's proof, once paid.
    pub payment: Option<(u64, ProofRef)>,
}

fn money(cents: u64) -> Value {
    json!({ "value": cents as f64 / 100.0, "currency": "USD" })
}

/// A claim's state as a FHIR R4 ClaimResponse: the provider's claim against the payer for
/// the patient, queued until adjudicated, then complete with the benefit approved or the
/// denial's reason code as an error, and the payment (its transaction's proof) once paid.
pub fn claim_response(claim: &ClaimEntry) -> Value {
    let adjudicated = !matches!(claim.status.as_str(), "submitted" | "pended");
    let mut totals = vec![json!({
        "category": { "coding": [{ "system": "http://terminology.hl7.org/CodeSystem/adjudication", "code": "submitted" }] },
        "amount": money(claim.total),
    })];
    if let Some(benefit) = claim.benefit {
        totals.push(json!({
            "category": { "coding": [{ "system": "http://terminology.hl7.org/CodeSystem/adjudication", "code": "benefit" }] },
            "amount": money(benefit),
        }));
    }
    let mut response = json!({
        "resourceType": "ClaimResponse",
        "id": claim.claim,
        "identifier": [{ "system": LEDGER_ID, "value": claim.claim }],
        "status": "active",
        "type": { "text": "claim" },
        "use": "claim",
        "patient": actor(&claim.patient),
        "created": instant(claim.submitted_at),
        "insurer": actor(&claim.payer),
        "requestor": actor(&claim.provider),
        "request": ledger_id(&claim.claim),
        "outcome": if adjudicated { "complete" } else { "queued" },
        "disposition": claim.status,
        "total": totals,
    });
    if let Some(reason) = claim.denial {
        response["error"] = json!([{ "code": { "coding": [{ "system": "https://x12.org/codes/claim-adjustment-reason-codes", "code": reason.to_string() }] } }]);
    }
    if let Some((amount, proof)) = &claim.payment {
        response["payment"] = json!({
            "type": { "coding": [{ "system": "http://terminology.hl7.org/CodeSystem/ex-paymenttype", "code": "complete" }] },
            "amount": money(*amount),
            "identifier": { "system": LEDGER_ID, "value": proof.transaction },
        });
        response["extension"] = json!([proof.fhir_extension()]);
    }
    response
}

/// One committed step of a unit's custody.
#[derive(Clone, Debug)]
pub struct Custody {
    pub proof: ProofRef,
    /// The ledger operation (`commission-unit`, `ship-unit`, ...).
    pub operation: String,
    pub actor: String,
    /// A shipment's addressee.
    pub counterparty: Option<String>,
    pub time: u64,
}

/// A unit's custody as an EPCIS 2.0 JSON-LD document: one ObjectEvent per committed step (the
/// unit by its GS1 Digital Link; the acting party as the source's owner, a shipment's
/// addressee as the destination's), its proof as the extension `caduceus:proof`, and its
/// `eventID` the GS1 event hash of the event as written (CBV 2.0).
pub fn custody_document(
    gtin: u64,
    serial: &str,
    lot: &str,
    expiry: u64,
    steps: &[Custody],
    now: u64,
) -> Result<Value, String> {
    let unit =
        format!("https://id.gs1.org/01/{gtin:014}/21/{}", percent_encoding::utf8_percent_encode(serial, URI_COMPONENT));
    let mut events = Vec::new();
    for step in steps {
        let (biz_step, action, disposition) = match step.operation.as_str() {
            "commission-unit" => ("commissioning", "ADD", "active"),
            "ship-unit" => ("shipping", "OBSERVE", "in_transit"),
            "receive-unit" => ("receiving", "OBSERVE", "in_progress"),
            "dispense-unit" => ("dispensing", "OBSERVE", "dispensed"),
            "decommission-unit" => ("decommissioning", "DELETE", "inactive"),
            other => return Err(format!("{other} is not a custody step")),
        };
        let party = |key: &str| format!("{ACTOR}:{key}");
        let mut event = json!({
            "type": "ObjectEvent",
            "eventTime": instant(step.time),
            "eventTimeZoneOffset": "+00:00",
            "epcList": [unit],
            "action": action,
            "bizStep": biz_step,
            "disposition": disposition,
            "sourceList": [{ "type": "owning_party", "source": party(&step.actor) }],
            "caduceus:proof": {
                "transaction": step.proof.transaction,
                "proof": step.proof.base64(),
                "checkpoint": step.proof.checkpoint.as_ref().map(|(hash, _)| hash.clone()),
            },
        });
        if let Some(to) = &step.counterparty {
            event["destinationList"] = json!([{ "type": "owning_party", "destination": party(to) }]);
        }
        if biz_step == "commissioning" {
            let expires = instant(expiry.saturating_sub(1));
            event["ilmd"] = json!({ "cbvmda:lotNumber": lot, "cbvmda:itemExpirationDate": &expires[..10] });
        }
        events.push(event);
    }
    let mut document = json!({
        "@context": ["https://ref.gs1.org/standards/epcis/epcis-context.jsonld", { "caduceus": "urn:caduceus:epcis:", "cbvmda": "urn:epcglobal:cbv:mda#" }],
        "type": "EPCISDocument",
        "schemaVersion": "2.0",
        "creationDate": instant(now),
        "epcisBody": { "eventList": events },
    });
    let hashes = event_hashes(&document)?;
    for (event, hash) in document["epcisBody"]["eventList"].as_array_mut().expect("built above").iter_mut().zip(hashes)
    {
        event["eventID"] = json!(hash);
    }
    Ok(document)
}

/// The GS1 event hash (`ni:///sha-256;...?ver=CBV2.0`) of each event of a JSON-LD document.
pub fn event_hashes(document: &Value) -> Result<Vec<String>, String> {
    let prehashes = epcis_hash::canonicalize_json(document, true).map_err(|e| e.to_string())?;
    Ok(prehashes.split('\n').map(epcis_hash::compute_hash_from_prehash).collect())
}

/// What a URI path segment escapes (all but unreserved characters).
const URI_COMPONENT: &percent_encoding::AsciiSet =
    &percent_encoding::NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');

/// A paid claim, as an 835 reports it.
#[derive(Clone, Debug)]
pub struct Paid {
    /// The claim id (hex), as the 837 named it to the ledger.
    pub claim: String,
    /// The patient's key (hex).
    pub patient: String,
    /// In cents.
    pub total: u64,
    pub paid: u64,
    /// The payment's transaction id (hex): its proof reference.
    pub payment: String,
}

fn dollars(cents: u64) -> String {
    format!("{}.{:02}", cents / 100, cents % 100)
}

/// Paid claims of one payer to one provider (payee) as an X12 5010 835 (005010X221A1): one
/// interchange, group and set; BPR02 the payments' sum; each claim a CLP whose CLP01 is the
/// ledger's claim id and whose CLP07 (the payer's claim control number) is the payment's
/// transaction id, the proof reference (`caduceus query proof` proves it); the difference
/// adjusted CO 45; the patient by key (NM1*QC, MI). Payer and payee by key (N1 XV).
pub fn remittance_835(payer: &str, provider: &str, paid: &[Paid], now: u64) -> String {
    let when = instant(now);
    let (date, time) = (when[..10].replace('-', ""), when[11..16].replace(':', ""));
    let total: u64 = paid.iter().map(|p| p.paid).sum();
    // A trace number that is a function of the payments it covers.
    let mut trace = blake3::Hasher::new();
    for payment in paid {
        trace.update(payment.payment.as_bytes());
    }
    let trace = &trace.finalize().to_hex()[..30];
    let mut segments = vec![
        format!("BPR*I*{}*C*NON************{date}", dollars(total)),
        format!("TRN*1*{trace}*1999999999"),
        format!("N1*PR*CADUCEUS PAYER*XV*{payer}"),
        format!("N1*PE*CADUCEUS PAYEE*XV*{provider}"),
        "LX*1".to_owned(),
    ];
    for payment in paid {
        segments.push(format!(
            "CLP*{}*1*{}*{}**ZZ*{}",
            payment.claim,
            dollars(payment.total),
            dollars(payment.paid),
            payment.payment
        ));
        if payment.total > payment.paid {
            segments.push(format!("CAS*CO*45*{}", dollars(payment.total - payment.paid)));
        }
        segments.push(format!("NM1*QC*1*PATIENT*****MI*{}", payment.patient));
    }
    let mut out = format!(
        "ISA*00*          *00*          *ZZ*CADUCEUS       *ZZ*RECEIVER       *{}*{time}*^*00501*000000001*0*P*:~\n",
        &date[2..]
    );
    out.push_str(&format!("GS*HP*CADUCEUS*RECEIVER*{date}*{time}*1*X*005010X221A1~\n"));
    out.push_str("ST*835*0001*005010X221A1~\n");
    for segment in &segments {
        out.push_str(segment);
        out.push_str("~\n");
    }
    out.push_str(&format!("SE*{}*0001~\nGE*1*1~\nIEA*1*000000001~\n", segments.len() + 2));
    out
}
