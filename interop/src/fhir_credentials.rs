//! Providers' credentials in FHIR mapped onto the ledger: a Practitioner's `qualification`
//! (a licence, a degree, a board certification) and a Basic or DocumentReference about a
//! Practitioner or PractitionerRole (a continuing-education certificate, a licence document)
//! become credentials issued by the body that vouches for them (`qualification.issuer`; the
//! document's author or authenticator, an Organization). An issuing body signs as an issuer
//! under a key of its own (`fhir.issuer.Organization.ID`), apart from the key the same
//! Organization has as a provider (a hospital that also accredits keeps both roles); one the
//! file names only by display is known by that display (`fhir.issuer.named.DISPLAY`). The
//! ledger holds the credential's kind
//! code, period and the blake3 of its JSON (without its `meta`, keys in order), never the
//! document.

use serde_json::Value;

use crate::fhir::{within, Found};
use crate::fhir_plan::{key_name, referenced, time_at, OPEN_END};
use crate::report::{Place, Rejection};

/// The longest kind code the ledger holds.
const KIND_LENGTH_MAX: usize = 64;

/// A credential to issue.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlannedCredential {
    pub place: Place,
    /// What the credential is known by in the import: its issuance's nonce.
    pub source: String,
    /// Key names of the issuer and of the provider it is issued to.
    pub issuer: String,
    pub subject: String,
    /// The kind: the first coding's code of its `code` (qualification, Basic) or `type`
    /// (DocumentReference).
    pub kind: String,
    /// blake3 of the credential's JSON.
    pub document: [u8; 32],
    /// Milliseconds since the epoch; the end exclusive.
    pub valid_from: u64,
    pub valid_until: u64,
}

/// The resource types whose instances about a provider are credentials.
pub const DOCUMENTS: [&str; 2] = ["Basic", "DocumentReference"];

/// A Practitioner's qualifications as credentials, each or its rejection; `id` is the
/// Practitioner's identity.
pub(crate) fn qualifications(
    found: &Found,
    id: &str,
    resolve: &dyn Fn(&str) -> Option<(String, String)>,
) -> Vec<Result<PlannedCredential, Rejection>> {
    let items = found.json.get("qualification").and_then(Value::as_array).cloned().unwrap_or_default();
    items
        .iter()
        .enumerate()
        .map(|(index, qualification)| {
            let path = format!(".qualification[{index}]");
            let at = |inner: &str| within(&found.place, &format!("{path}{inner}"));
            let issuer = issuer(qualification.get("issuer"), resolve).ok_or_else(|| {
                Rejection::new(at(".issuer"), "the qualification names no issuer (an Organization) to vouch for it")
            })?;
            let kind = kind(qualification.get("code"), &at(".code"))?;
            let valid_from = time_at(qualification.pointer("/period/start"), false, &at(".period.start"))?.unwrap_or(0);
            let valid_until =
                time_at(qualification.pointer("/period/end"), true, &at(".period.end"))?.unwrap_or(OPEN_END);
            credential(at(""), id, issuer, key_name("Practitioner", id), kind, qualification, valid_from, valid_until)
        })
        .collect()
}

/// A Basic or DocumentReference about a provider as a credential, or its rejection; `None` if
/// it is not about a provider (a patient's document is a record).
pub(crate) fn document(
    found: &Found,
    resolve: &dyn Fn(&str) -> Option<(String, String)>,
) -> Option<Result<PlannedCredential, Rejection>> {
    let json = &found.json;
    let subject = referenced(json, "/subject/reference", resolve, &["Practitioner", "PractitionerRole"])?;
    let at = |path: &str| within(&found.place, path);
    let basic = found.resource_type() == "Basic";
    Some((|| {
        let vouching = if basic { vec![json.get("author")] } else { vouching_of(json) };
        let issuer = vouching.into_iter().find_map(|reference| issuer(reference, resolve)).ok_or_else(|| {
            let element = if basic { ".author" } else { ".authenticator" };
            let reason = "a provider's document is a credential only from an issuing body: it names no \
                          Organization as its author or authenticator";
            Rejection::new(at(element), reason)
        })?;
        let (kind_path, kind_at) = if basic { ("code", ".code") } else { ("type", ".type") };
        let kind = kind(json.get(kind_path), &at(kind_at))?;
        let (from, until) = if basic {
            (time_at(json.get("created"), false, &at(".created"))?, None)
        } else {
            let start = time_at(json.pointer("/context/period/start"), false, &at(".context.period.start"))?;
            let date = time_at(json.get("date"), false, &at(".date"))?;
            (start.or(date), time_at(json.pointer("/context/period/end"), true, &at(".context.period.end"))?)
        };
        let id = crate::fhir_plan::known_by(found, "credential")?;
        let subject = key_name(&subject.0, &subject.1);
        let source = format!("{}/{id}", found.resource_type());
        credential(at(""), &source, issuer, subject, kind, json, from.unwrap_or(0), until.unwrap_or(OPEN_END))
    })())
}

/// A DocumentReference's candidates for its issuer: its authenticator, then its authors.
fn vouching_of(json: &Value) -> Vec<Option<&Value>> {
    let authors = json.get("author").and_then(Value::as_array).map(|a| a.iter().map(Some).collect());
    [vec![json.get("authenticator")], authors.unwrap_or_default()].concat()
}

#[allow(clippy::too_many_arguments)]
fn credential(
    place: Place,
    source: &str,
    issuer: String,
    subject: String,
    kind: String,
    json: &Value,
    valid_from: u64,
    valid_until: u64,
) -> Result<PlannedCredential, Rejection> {
    if valid_from >= valid_until {
        return Err(Rejection::new(place, "the credential's period ends before it starts"));
    }
    let document = *blake3::hash(&canonical(json)).as_bytes();
    let source = format!("{source}/{}", blake3::Hash::from(document).to_hex());
    Ok(PlannedCredential { place, source, issuer, subject, kind, document, valid_from, valid_until })
}

/// A credential's JSON as the ledger hashes it: without the resource's `meta` (a server's
/// bookkeeping: its version and time), every object's keys in order, so the same credential
/// exported again is the same document.
fn canonical(json: &Value) -> Vec<u8> {
    fn sorted(value: &Value) -> Value {
        match value {
            Value::Object(object) => {
                let mut keys: Vec<&String> = object.keys().collect();
                keys.sort();
                Value::Object(keys.into_iter().map(|k| (k.clone(), sorted(&object[k]))).collect())
            }
            Value::Array(items) => Value::Array(items.iter().map(sorted).collect()),
            other => other.clone(),
        }
    }
    let value = match json {
        Value::Object(object) => {
            Value::Object(object.iter().filter(|(k, _)| *k != "meta").map(|(k, v)| (k.clone(), v.clone())).collect())
        }
        other => other.clone(),
    };
    serde_json::to_vec(&sorted(&value)).expect("a JSON value serializes")
}

/// The key name of an issuing body: an Organization reference, or a display alone.
fn issuer(reference: Option<&Value>, resolve: &dyn Fn(&str) -> Option<(String, String)>) -> Option<String> {
    let reference = reference?;
    if let Some(target) = reference.get("reference").and_then(Value::as_str) {
        let (kind, id) = resolve(target)?;
        return (kind == "Organization").then(|| crate::actors::key_name("fhir.issuer.Organization", &id));
    }
    let display = reference.get("display").and_then(Value::as_str).filter(|d| !d.trim().is_empty())?;
    // Apart from the Organizations' names, whatever the display says.
    Some(crate::actors::key_name("fhir.issuer.named", display))
}

/// A credential's kind: its concept's first coding's code.
fn kind(concept: Option<&Value>, place: &Place) -> Result<String, Rejection> {
    let code = concept
        .and_then(|c| c.get("coding"))
        .and_then(Value::as_array)
        .and_then(|codings| codings.iter().find_map(|c| c.get("code").and_then(Value::as_str)))
        .filter(|code| !code.is_empty())
        .ok_or_else(|| Rejection::new(place.clone(), "no coded kind (a coding with a code)"))?;
    let fits = code.len() <= KIND_LENGTH_MAX && code.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._:".contains(&b));
    if !fits {
        let reason = format!(
            "the kind code {code:?} is not a ledger code (at most {KIND_LENGTH_MAX} letters, digits, '-', '.', '_' or ':')"
        );
        return Err(Rejection::new(place.clone(), reason));
    }
    Ok(code.to_owned())
}
