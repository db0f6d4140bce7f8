//! X12 claims and remittances mapped onto the ledger. Pure: the caller holds the keys, the
//! exchange's commitment key and the ledger.
//!
//! **837 (claims).** Each CLM loop becomes a claim submission by its billing provider
//! (2010AA, known by its NPI) against the payer (2010BB, known by its payer id), for its
//! patient: the subscriber (2010BA), or the dependent of a patient level (2000C). The claim's
//! total is CLM02, which must equal its service lines' charges (SV102 or SV203). Its service
//! date (DTP 472 or 434 of the claim, or else its lines' earliest 472) and its codes (each
//! line's procedure, and the diagnosis its pointer names, or the principal one) go only into
//! the keyed commitment that the caller computes; none of them reaches the ledger.
//!
//! **835 (remittances).** Each CLP is matched to its claim by the payer, the payee's NPI
//! (N1*PE) and the claim submitter's identifier (CLP01, which the 835 echoes from CLM01): the
//! same three the claim's id is derived from. A claim paid (CLP04 above zero) is approved for
//! and paid that amount; a denial (CLP02 4), or a claim processed to a zero payment, is
//! denied with its first adjustment reason code (CAS). The payer's account is first funded
//! with the remittance's claim payments, which with its provider-level adjustments (PLB) must
//! balance its total (BPR02). The payer's id is its REF*2U, else its N1*PR N104 when that is
//! a payer id (XV), else TRN03.
//!
//! **Identities.** Keys are named by identifier: `x12.npi.NPI`, `x12.payer.ID`, and for a
//! patient `x12.member.DIGEST`, the digest of the payer, the subscriber's member id and, for a
//! dependent, the dependent's name. That digest stays in the importer's keystore: no name or
//! member id reaches the ledger.

use std::collections::BTreeSet;

use x12_types::v005010::{_835Loop2100, _837Loop2300, _835, _837, HI};

use crate::actors::{derived_id, key_name, ActorKind, PlannedActor};
pub use crate::claims::{ClaimLine, Decision, PlannedClaim, PlannedPayment, PlannedRemittance};
use crate::report::Rejection;
use crate::x12::{shown, Body, Read, Segment, Set};

/// What an X12 file puts on the ledger.
#[derive(Debug, Default)]
pub struct Plan {
    pub actors: Vec<PlannedActor>,
    pub claims: Vec<PlannedClaim>,
    pub remittances: Vec<PlannedRemittance>,
    pub rejections: Vec<Rejection>,
}

/// The claim id: a function of the payer, the billing provider and the claim submitter's
/// identifier, so the 835 that answers an 837 names the same claim.
pub fn claim_id(payer: &str, npi: &str, submitter_id: &str) -> u128 {
    derived_id("caduceus x12 claim 1", &[payer, npi, submitter_id])
}

/// The key name of a patient: a digest of the payer, the subscriber's member id and, for a
/// dependent, the dependent's last and first names (as the 837 and the 835 both carry them).
pub fn patient_key(payer: &str, member: &str, dependent: Option<(&str, &str)>) -> String {
    let (last, first) = dependent.map_or((String::new(), String::new()), |(l, f)| (l.to_uppercase(), f.to_uppercase()));
    let digest = derived_id("caduceus x12 patient 1", &[payer, member, &last, &first]);
    format!("x12.member.{digest:032x}")
}

/// Maps what an X12 file held onto the ledger.
pub fn plan(read: &Read) -> Plan {
    let mut plan = Plan::default();
    let mut actors = BTreeSet::new();
    for set in &read.sets {
        match &set.body {
            Body::Claims(document) => claims(set, document, &mut plan, &mut actors),
            Body::Remittance(document) => remittance(set, document, &mut plan, &mut actors),
        }
    }
    plan.actors = actors.into_iter().collect();
    plan
}

fn claims(set: &Set, document: &_837, plan: &mut Plan, actors: &mut BTreeSet<PlannedActor>) {
    let (mut billing, mut subscriber, mut dependent) = (None::<String>, None::<(String, String)>, None);
    let (mut nth_claim, clms) = (0, set.all("CLM"));
    for level in &document.loop_2000 {
        match level.hl._03.to_string().as_str() {
            "20" => {
                billing = level
                    .loop_2010
                    .iter()
                    .find(|n| n.nm1._01.to_string() == "85")
                    .filter(|n| n.nm1._08.as_ref().is_some_and(|q| q.to_string() == "XX"))
                    .and_then(|n| n.nm1._09.clone())
                    .filter(|npi| !npi.is_empty());
                (subscriber, dependent) = (None, None);
            }
            "22" => {
                let id_of = |code: &str| {
                    let named = level.loop_2010.iter().find(|n| n.nm1._01.to_string() == code);
                    named.and_then(|n| n.nm1._09.clone()).filter(|id| !id.is_empty())
                };
                subscriber = id_of("PR").zip(id_of("IL"));
                dependent = None;
            }
            "23" => {
                dependent = level
                    .loop_2010
                    .iter()
                    .find(|n| n.nm1._01.to_string() == "QC")
                    .map(|n| (n.nm1._03.clone().unwrap_or_default(), n.nm1._04.clone().unwrap_or_default()));
            }
            _ => {}
        }
        for claim in &level.loop_2300 {
            let clm = clms.get(nth_claim).copied().unwrap_or(&set.segments[0]);
            let place = clm.place();
            nth_claim += 1;
            let parties = match (&billing, &subscriber) {
                (None, _) => Err("its billing provider (2010AA NM1*85) has no NPI (NM108 XX)"),
                (_, None) => Err("no subscriber (2000B) with a payer id (NM1*PR) and a member id (NM1*IL) precedes it"),
                (Some(npi), Some(subscriber)) => Ok((npi, subscriber)),
            };
            let planned =
                parties.map_err(|reason| Rejection::new(place.clone(), reason)).and_then(|(npi, (payer, member))| {
                    let dependent = dependent.as_ref().map(|(l, f): &(String, String)| (l.as_str(), f.as_str()));
                    claim_of(set, claim, clm, npi, payer, member, dependent)
                });
            match planned {
                Ok(claim) => {
                    actors.extend(claim.actors());
                    plan.claims.push(claim);
                }
                Err(rejection) => plan.rejections.push(rejection),
            }
        }
    }
}

fn claim_of(
    set: &Set,
    loop_2300: &_837Loop2300,
    clm_segment: &Segment,
    npi: &str,
    payer: &str,
    member: &str,
    dependent: Option<(&str, &str)>,
) -> Result<PlannedClaim, Rejection> {
    let (clm, place) = (&loop_2300.clm, &clm_segment.place());
    // The claim's service lines' LX segments, found once.
    let lxs: Vec<&Segment> = set.between(clm_segment.position, "CLM").filter(|s| s.id() == "LX").collect();
    if clm._01.is_empty() {
        return Err(Rejection::new(place.element(1), "the claim submitter's identifier (CLM01) is empty"));
    }
    let total = clm._02.as_deref().and_then(cents).ok_or_else(|| {
        Rejection::new(place.element(2), format!("CLM02 {} is not an amount", shown(clm._02.as_deref().unwrap_or(""))))
    })?;
    let diagnoses: Vec<&str> = loop_2300
        .hi
        .iter()
        .flat_map(hi_elements)
        .filter_map(|element| match set.components(element).as_slice() {
            [qualifier, code, ..] if ["ABK", "ABF", "BK", "BF"].contains(qualifier) && !code.is_empty() => Some(*code),
            _ => None,
        })
        .collect();
    let Some(principal) = diagnoses.first() else {
        let reason = format!(
            "the claim has no diagnosis code: no HI element of qualifier ABK, ABF, BK or BF split by the \
             component separator {:?} that ISA16 declares",
            set.component
        );
        return Err(Rejection::new(place.clone(), reason));
    };
    let mut lines = Vec::new();
    let mut line_dates = Vec::new();
    for (index, line) in loop_2300.loop_2400.iter().enumerate() {
        let line_place = lxs.get(index).map_or_else(|| place.clone(), |lx| lx.place());
        let (composite, charge, pointer) = match (&line.sv1, &line.sv2) {
            (Some(sv1), _) => (Some(sv1._01.as_str()), sv1._02.as_deref(), sv1._07.as_deref()),
            (None, Some(sv2)) => (sv2._02.as_deref(), sv2._03.as_deref(), None),
            (None, None) => {
                let reason = format!("service line {} has neither SV1 nor SV2 (only those are imported)", index + 1);
                return Err(Rejection::new(line_place, reason));
            }
        };
        let procedure = match (composite.map(|c| set.components(c)), &line.sv2) {
            (Some(parts), _) if parts.len() >= 2 && !parts[1].is_empty() => parts[1].to_owned(),
            // An institutional line may name only its revenue code.
            (_, Some(sv2)) if !sv2._01.is_empty() => format!("REV:{}", sv2._01),
            _ => {
                let reason = format!("service line {} names no procedure code", index + 1);
                return Err(Rejection::new(line_place, reason));
            }
        };
        let amount = charge.and_then(cents).ok_or_else(|| {
            let reason =
                format!("service line {}'s charge {} is not an amount", index + 1, shown(charge.unwrap_or("")));
            Rejection::new(line_place.clone(), reason)
        })?;
        let pointed = pointer
            .and_then(|p| set.components(p).first().and_then(|first| first.parse::<usize>().ok()))
            .and_then(|p| p.checked_sub(1))
            .and_then(|p| diagnoses.get(p));
        lines.push(ClaimLine { procedure, diagnosis: pointed.unwrap_or(principal).to_string(), amount });
        line_dates.extend(line.dtp.iter().filter(|d| d._01.to_string() == "472").filter_map(|d| date(&d._03)));
    }
    let sum = lines.iter().try_fold(0u64, |sum, line| sum.checked_add(line.amount));
    if lines.is_empty() {
        return Err(Rejection::new(place.clone(), "the claim has no service line (2400)"));
    }
    if sum != Some(total) {
        let reason = format!(
            "CLM02 {} is not the sum of its {} service lines' charges ({})",
            shown(clm._02.as_deref().unwrap_or("")),
            lines.len(),
            sum.map_or("too large".to_owned(), |s| format!("{}.{:02}", s / 100, s % 100))
        );
        return Err(Rejection::new(place.element(2), reason));
    }
    let claim_date = loop_2300
        .dtp
        .iter()
        .filter(|d| ["472", "434"].contains(&d._01.to_string().as_str()))
        .find_map(|d| date(&d._03));
    let Some(service_date) = claim_date.or_else(|| line_dates.iter().min().copied()) else {
        return Err(Rejection::new(place.clone(), "the claim has no service date (DTP 472 or 434, CCYYMMDD)"));
    };
    Ok(PlannedClaim {
        place: place.clone(),
        claim: claim_id(payer, npi, &clm._01),
        patient: patient_key(payer, member, dependent),
        provider: key_name("x12.npi", npi),
        payer: key_name("x12.payer", payer),
        service_date,
        lines,
        total,
    })
}

fn remittance(set: &Set, document: &_835, plan: &mut Plan, actors: &mut BTreeSet<PlannedActor>) {
    let bpr = set.place_of("BPR", 0);
    let party = |code: &str| document.loop_1000.iter().find(|l| l.n1._01.to_string() == code);
    let payer = party("PR").and_then(|pr| {
        let by_ref = pr.r#ref.iter().find(|r| r._01.to_string() == "2U").and_then(|r| r._02.clone());
        let by_n1 = pr.n1._03.as_ref().filter(|q| q.to_string() == "XV").and(pr.n1._04.clone());
        by_ref.filter(|p| !p.is_empty()).or(by_n1.filter(|p| !p.is_empty()))
    });
    let payer = payer.or_else(|| document.trn.as_ref().and_then(|t| t._03.clone())).filter(|p| !p.is_empty());
    let payee = party("PE");
    let npi =
        payee.filter(|pe| pe.n1._03.as_ref().is_some_and(|q| q.to_string() == "XX")).and_then(|pe| pe.n1._04.clone());
    let npi = npi.filter(|npi| !npi.is_empty());
    let trace = document.trn.as_ref().map(|t| t._02.clone()).filter(|t| !t.is_empty());
    let checked = (|| {
        let payer = payer
            .ok_or_else(|| Rejection::new(bpr.clone(), "no payer id: neither REF*2U, N1*PR N104 (XV) nor TRN03"))?;
        let npi = npi.ok_or_else(|| {
            let qualifier = payee.and_then(|pe| pe.n1._03.as_ref()).map_or(String::new(), |q| q.to_string());
            let reason = format!(
                "the payee (N1*PE) is identified by {}, not an NPI (XX); claims are known by their billing provider's NPI",
                shown(&qualifier)
            );
            Rejection::new(set.place_of("N1", 1).element(3), reason)
        })?;
        let trace = trace.ok_or_else(|| Rejection::new(bpr.clone(), "no payment trace number (TRN02)"))?;
        Ok((payer, npi, trace))
    })();
    let (payer, npi, trace) = match checked {
        Ok(parties) => parties,
        Err(rejection) => return plan.rejections.push(rejection),
    };
    // BPR02 = the claims' payments less the provider-level adjustments.
    let paid: Option<i128> = document
        .loop_2000
        .iter()
        .flat_map(|lx| &lx.loop_2100)
        .try_fold(0i128, |sum, clp| signed_cents(&clp.clp._04).map(|c| sum + c));
    let adjusted: Option<i128> =
        document.plb.iter().flat_map(plb_amounts).try_fold(0i128, |sum, amount| signed_cents(amount).map(|c| sum + c));
    let total = signed_cents(&document.bpr._02);
    if paid.zip(adjusted).map(|(p, a)| p - a) != total {
        let reason = format!(
            "BPR02 {} is not the claims' payments (CLP04) less the provider adjustments (PLB)",
            shown(&document.bpr._02)
        );
        return plan.rejections.push(Rejection::new(bpr.element(2), reason));
    }
    let mut remittance =
        PlannedRemittance { place: bpr, payer: key_name("x12.payer", &payer), trace, payments: Vec::new() };
    let provider = key_name("x12.npi", &npi);
    let clps = set.all("CLP");
    for (nth, clp) in document.loop_2000.iter().flat_map(|lx| &lx.loop_2100).enumerate() {
        let segment = clps.get(nth).copied().unwrap_or(&set.segments[0]);
        let place = segment.place();
        match payment(set, clp, segment, &payer) {
            Ok((patient, decision)) => {
                actors.insert(PlannedActor { kind: ActorKind::Patient, key: patient.clone() });
                remittance.payments.push(PlannedPayment {
                    place,
                    claim: claim_id(&payer, &npi, &clp.clp._01),
                    patient,
                    provider: provider.clone(),
                    decision,
                });
            }
            Err(rejection) => plan.rejections.push(rejection),
        }
    }
    actors.insert(PlannedActor { kind: ActorKind::Provider, key: provider });
    actors.insert(PlannedActor { kind: ActorKind::Payer, key: remittance.payer.clone() });
    plan.remittances.push(remittance);
}

fn payment(
    set: &Set,
    loop_2100: &_835Loop2100,
    segment: &Segment,
    payer: &str,
) -> Result<(String, Decision), Rejection> {
    let (clp, place) = (&loop_2100.clp, &segment.place());
    let name = |code: &str| loop_2100.nm1.iter().find(|n| n._01.to_string() == code);
    let (patient, insured) = (name("QC"), name("IL"));
    let member = insured.or(patient).and_then(|n| n._09.clone()).filter(|m| !m.is_empty());
    let Some(member) = member else {
        return Err(Rejection::new(place.clone(), "the claim names no member id (NM1*QC or NM1*IL, NM109)"));
    };
    // NM1*IL is there only when the insured is not the patient: the patient is a dependent.
    let dependent = insured.and(patient).map(|p| (p._03.as_deref().unwrap_or(""), p._04.as_deref().unwrap_or("")));
    let patient = patient_key(payer, &member, dependent);
    let amount = cents(&clp._04)
        .ok_or_else(|| Rejection::new(place.element(4), format!("CLP04 {} is not an amount", shown(&clp._04))))?;
    let decision = match clp._02.as_str() {
        "1" | "2" | "3" | "19" | "20" | "21" if amount > 0 => Decision::Paid(amount),
        "1" | "2" | "3" | "4" | "19" | "20" | "21" => {
            // Denied, or processed to a zero payment: the first adjustment's reason says why.
            let cas = set.after(segment.position, "CAS", "CLP").ok_or_else(|| {
                Rejection::new(place.element(2), "a claim denied or paid nothing names no reason (CAS)")
            })?;
            let reason = cas.element(2);
            match reason.parse::<u16>() {
                Ok(code) if (1..=999).contains(&code) => Decision::Denied(code),
                _ => {
                    let why = format!(
                        "adjustment reason {} is not a numeric code (1 to 999) the ledger holds",
                        shown(reason)
                    );
                    return Err(Rejection::new(cas.at(2), why));
                }
            }
        }
        other => {
            let reason = format!(
                "claim status {} is not imported (processed 1, 2, 3, 19, 20, 21 and denied 4 are)",
                shown(other)
            );
            return Err(Rejection::new(place.element(2), reason));
        }
    };
    Ok((patient, decision))
}

fn hi_elements(hi: &HI) -> impl Iterator<Item = &str> {
    let rest = [&hi._02, &hi._03, &hi._04, &hi._05, &hi._06, &hi._07, &hi._08, &hi._09, &hi._10, &hi._11, &hi._12];
    std::iter::once(hi._01.as_str()).chain(rest.into_iter().filter_map(|e| e.as_deref()))
}

/// The amounts of a PLB: its 4th, 6th, ... 14th elements, each of an adjustment it names.
fn plb_amounts(plb: &x12_types::v005010::PLB) -> impl Iterator<Item = &str> {
    [
        (&plb._03, &plb._04),
        (&plb._05, &plb._06),
        (&plb._07, &plb._08),
        (&plb._09, &plb._10),
        (&plb._11, &plb._12),
        (&plb._13, &plb._14),
    ]
    .into_iter()
    .filter(|(reason, _)| reason.as_deref().is_some_and(|r| !r.is_empty()))
    .map(|(_, amount)| amount.as_deref().unwrap_or(""))
}

/// An X12 decimal amount (`100`, `100.5`, `100.50`) in cents; `None` for anything else, a
/// negative amount, or a fraction of a cent.
pub fn cents(text: &str) -> Option<u64> {
    let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if whole.is_empty() && fraction.is_empty() || !digits(whole) || !digits(fraction) || whole.len() > 15 {
        return None;
    }
    let (kept, dropped) = fraction.split_at(fraction.len().min(2));
    if dropped.bytes().any(|b| b != b'0') {
        return None;
    }
    let whole: u64 = if whole.is_empty() { 0 } else { whole.parse().ok()? };
    let kept: u64 = format!("{kept:0<2}").parse().ok()?;
    whole.checked_mul(100)?.checked_add(kept)
}

/// A signed X12 amount in cents.
fn signed_cents(text: &str) -> Option<i128> {
    match text.strip_prefix('-') {
        Some(rest) => cents(rest).map(|c| -i128::from(c)),
        None => cents(text).map(i128::from),
    }
}

/// A date `CCYYMMDD`, or the first of a range `CCYYMMDD-CCYYMMDD`, as YYYYMMDD.
fn date(text: &str) -> Option<u32> {
    let first = text.split('-').next()?;
    let value: u32 = (first.len() == 8 && first.bytes().all(|b| b.is_ascii_digit())).then(|| first.parse().ok())??;
    let (month, day) = (value / 100 % 100, value % 100);
    ((1..=12).contains(&month) && (1..=31).contains(&day)).then_some(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts_are_read_to_the_cent_and_nothing_else_is() {
        assert_eq!(cents("100"), Some(10_000));
        assert_eq!(cents("100.5"), Some(10_050));
        assert_eq!(cents("0.07"), Some(7));
        assert_eq!(cents(".07"), Some(7));
        assert_eq!(cents("12.340"), Some(1_234));
        assert_eq!(cents("12.345"), None);
        assert_eq!(cents("-1"), None);
        assert_eq!(cents(""), None);
        assert_eq!(cents("1e3"), None);
        assert_eq!(signed_cents("-25.5"), Some(-2_550));
        assert_eq!(date("20061001-20061031"), Some(2006_10_01));
        assert_eq!(date("20061301"), None);
    }
}
