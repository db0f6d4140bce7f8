//! ResearchStudy and ResearchSubject mapped onto the ledger: a study is registered by its
//! principal investigator (or, naming none, its sponsor) and closed when its status says it
//! takes no more subjects; a subject's enrolment rests on the patient's consent to that
//! investigator, which the ResearchSubject must name and the ledger checks covers research.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::fhir::{within, Found};
use crate::fhir_plan::{key_name, known_by, referenced, PROVIDERS};
use crate::report::Rejection;

/// A study to register (and close, if its status says it is closed to accrual or completed).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlannedStudy {
    pub place: crate::report::Place,
    /// The study's name in the import (`fhir.ResearchStudy.ID`): its registration's nonce, and
    /// what a ResearchSubject in a later file finds it by.
    pub study: String,
    /// The key name of the provider that registers and leads it.
    pub investigator: String,
    /// blake3 of the ResearchStudy's JSON: what the ledger holds of its protocol.
    pub protocol: [u8; 32],
    /// Closed to enrolment.
    pub closed: bool,
}

/// A subject's enrolment in a study, or its withdrawal.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlannedEnrolment {
    pub place: crate::report::Place,
    /// The study's name (`PlannedStudy::study`).
    pub study: String,
    /// Its investigator's key name, if the study is in the same file (else the importer finds
    /// it among the studies it imported before).
    pub investigator: Option<String>,
    /// The patient's key name.
    pub patient: String,
    /// The identity (id or full URL) of the Consent the enrolment rests on.
    pub consent: String,
    /// Enrolled; `false`: withdrawn (off the study).
    pub enrolled: bool,
    /// Which statement of the subject this is: its identity and period start, so that a
    /// re-enrolment (a new period) is another transaction, and the same one imported again,
    /// or exported again by its server, is the same.
    pub statement: String,
}

/// Study statuses under which a study is registered and open. A temporary pause is no closing:
/// the ledger has no reopening.
const OPEN: [&str; 5] = [
    "active",
    "approved",
    "in-review",
    "temporarily-closed-to-accrual",
    "temporarily-closed-to-accrual-and-intervention",
];
/// Study statuses under which a study is registered and closed to enrolment for good.
const CLOSED: [&str; 4] =
    ["closed-to-accrual", "closed-to-accrual-and-intervention", "completed", "administratively-completed"];
/// Subject statuses that mean enrolled.
const ENROLLED: [&str; 4] = ["on-study", "on-study-intervention", "on-study-observation", "follow-up"];
/// Subject statuses that mean no longer enrolled.
const LEFT: [&str; 2] = ["off-study", "withdrawn"];

/// A ResearchStudy as a study registration.
pub(crate) fn study(
    found: &Found,
    resolve: &dyn Fn(&str) -> Option<(String, String)>,
) -> Result<PlannedStudy, Rejection> {
    let json = &found.json;
    let at = |path: &str| within(&found.place, path);
    let status = json.get("status").and_then(Value::as_str).unwrap_or("");
    let closed = if OPEN.contains(&status) {
        false
    } else if CLOSED.contains(&status) {
        true
    } else {
        let reason = format!(
            "a study of status {status:?} never enrolled anyone (a study is registered when {}, and closed when {})",
            OPEN.join(", "),
            CLOSED.join(", ")
        );
        return Err(Rejection::new(at(".status"), reason));
    };
    let investigator = referenced(json, "/principalInvestigator/reference", resolve, &PROVIDERS)
        .or_else(|| referenced(json, "/sponsor/reference", resolve, &["Organization"]))
        .map(|(kind, id)| key_name(&kind, &id))
        .ok_or_else(|| {
            let reason = "the study names no principal investigator (a Practitioner or PractitionerRole) \
                          nor a sponsor (an Organization) to register and lead it";
            Rejection::new(at(".principalInvestigator"), reason)
        })?;
    let id = known_by(found, "study")?;
    Ok(PlannedStudy {
        place: found.place.clone(),
        study: key_name("ResearchStudy", &id),
        investigator,
        protocol: *blake3::hash(&serde_json::to_vec(json).expect("a JSON value serializes")).as_bytes(),
        closed,
    })
}

/// A ResearchSubject as an enrolment (or a withdrawal); `studies` are the file's studies'
/// investigators, by study name.
pub(crate) fn subject(
    found: &Found,
    resolve: &dyn Fn(&str) -> Option<(String, String)>,
    studies: &BTreeMap<String, String>,
) -> Result<PlannedEnrolment, Rejection> {
    let json = &found.json;
    let at = |path: &str| within(&found.place, path);
    let status = json.get("status").and_then(Value::as_str).unwrap_or("");
    let enrolled = if ENROLLED.contains(&status) {
        true
    } else if LEFT.contains(&status) {
        false
    } else {
        let reason = format!(
            "a subject of status {status:?} is not enrolled, so there is nothing to record \
             (enrolled when {}, withdrawn when {})",
            ENROLLED.join(", "),
            LEFT.join(", ")
        );
        return Err(Rejection::new(at(".status"), reason));
    };
    let patient = referenced(json, "/individual/reference", resolve, &["Patient"])
        .ok_or_else(|| Rejection::new(at(".individual"), "the subject names no patient (a Patient reference)"))?;
    let study = referenced(json, "/study/reference", resolve, &["ResearchStudy"])
        .ok_or_else(|| Rejection::new(at(".study"), "the subject names no study (a ResearchStudy reference)"))?;
    let consent = referenced(json, "/consent/reference", resolve, &["Consent"]).ok_or_else(|| {
        let reason = "the subject names no consent (a Consent reference): the ledger enrols a patient only \
                      on the patient's research consent to the study's investigator";
        Rejection::new(at(".consent"), reason)
    })?;
    let study = key_name("ResearchStudy", &study.1);
    let text = |pointer: &str| json.pointer(pointer).and_then(Value::as_str).unwrap_or("");
    let statement = format!("{}|{}", crate::fhir_plan::known_by(found, "subject")?, text("/period/start"));
    Ok(PlannedEnrolment {
        statement,
        place: found.place.clone(),
        investigator: studies.get(&study).cloned(),
        study,
        patient: key_name("Patient", &patient.1),
        consent: consent.1,
        enrolled,
    })
}
