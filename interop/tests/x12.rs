//! X12 files read with the 005010 models and mapped onto claims and remittances: the corpus as
//! it is, and damaged input, each part read or rejected with its segment and the reason.

mod common;
use common::{corpus, data};

use std::collections::BTreeMap;

use caduceus_interop::detect::{detect, Format};
use caduceus_interop::report::{Place, Rejection};
use caduceus_interop::x12::read;
use caduceus_interop::x12_plan::{plan, Decision, Plan};

/// What became of one file.
struct Outcome {
    plan: Option<Plan>,
    rejections: Vec<Rejection>,
}

fn import(bytes: &[u8]) -> Outcome {
    match read(bytes) {
        Ok(read) => {
            let mut plan = plan(&read);
            let mut rejections = read.rejections;
            rejections.append(&mut plan.rejections);
            Outcome { plan: Some(plan), rejections }
        }
        Err(rejection) => Outcome { plan: None, rejections: vec![rejection] },
    }
}

fn segment(position: usize, id: &str, element: Option<usize>) -> Place {
    Place::Segment { position, id: id.to_owned(), element }
}

/// Every file of the two X12 folders is recognised (or not) from its content, then imported or
/// rejected, every rejection with a place and a reason; the 5010 claims and remittances of the
/// implementation guides are read, and the table is printed.
#[test]
fn every_x12_file_of_the_corpus_is_read_or_rejected_with_a_place() {
    let mut table: BTreeMap<(&str, String), usize> = BTreeMap::new();
    let mut reasons: BTreeMap<String, usize> = BTreeMap::new();
    let (mut claims, mut payments) = (0, 0);
    for dir in ["x12-linuxforhealth", "x12-pyx12"] {
        for file in corpus(dir) {
            let bytes = std::fs::read(&file).unwrap();
            let name = file.strip_prefix(data()).unwrap().display().to_string();
            let outcome = match detect(&bytes) {
                Some(Format::X12) => {
                    let outcome = import(&bytes);
                    for rejection in &outcome.rejections {
                        println!("{name}: {rejection}");
                        assert!(matches!(rejection.place, Place::Segment { .. } | Place::File), "{rejection}");
                        let class = rejection.reason.split([':', '"']).next().unwrap().trim().to_owned();
                        *reasons.entry(class).or_default() += 1;
                    }
                    let planned = outcome
                        .plan
                        .as_ref()
                        .map_or(0, |p| p.claims.len() + p.remittances.iter().map(|r| r.payments.len()).sum::<usize>());
                    if let Some(plan) = &outcome.plan {
                        claims += plan.claims.len();
                        payments += plan.remittances.iter().map(|r| r.payments.len()).sum::<usize>();
                    }
                    match (planned, outcome.rejections.is_empty()) {
                        (0, true) => "read, nothing to import".to_owned(),
                        (_, true) => "imported whole".to_owned(),
                        (0, false) => "rejected".to_owned(),
                        (_, false) => "imported, some parts rejected".to_owned(),
                    }
                }
                Some(other) => format!("taken for {other}"),
                None => "not X12 (no ISA opens it)".to_owned(),
            };
            *table.entry((dir, outcome)).or_default() += 1;
        }
    }
    for ((dir, outcome), count) in &table {
        println!("{dir:<20} {count:>4} {outcome}");
    }
    for (reason, count) in &reasons {
        println!("{count:>5} {reason}");
    }
    println!("{claims} claims and {payments} claim payments planned");
    // The implementation guides' 5010 claims and remittances: read but for the ones whose
    // rejections are printed above (a model's order, a payee without an NPI, components split by
    // another separator than the ISA declares), and no more than the corpus holds.
    assert_eq!(table[&("x12-linuxforhealth", "imported whole".to_owned())], 19);
    assert_eq!((claims, payments), (17, 6));
    // pyx12's interchanges are 4010 (or not claims): none is imported, each rejected.
    assert!(!table.keys().any(|(dir, outcome)| *dir == "x12-pyx12" && outcome.starts_with("imported")));
    assert_eq!(table[&("x12-pyx12", "rejected".to_owned())], 52);
}

/// pyx12's acknowledgement of `trailer_errors` rejects its first set because SE01 miscounts
/// the set's segments (AK5 R, code 4), and its group and interchange for their trailers: the
/// reader finds the same faults, at their segments.
#[test]
fn the_trailer_faults_pyx12_acknowledges_are_found_at_their_segments() {
    let ack = String::from_utf8(file("x12-pyx12/trailer_errors.res997.x12")).unwrap();
    assert!(
        ack.contains("AK2*837*300207436~\nAK5*R*4")
            || ack.replace(['\r', '\n'], "").contains("AK2*837*300207436~AK5*R*4")
    );
    let outcome = import(&file("x12-pyx12/trailer_errors.source.x12"));
    let reasons: Vec<String> = outcome.rejections.iter().map(ToString::to_string).collect();
    assert!(reasons.iter().any(|r| r.starts_with("segment 61 (SE), element SE01")), "{reasons:?}");
    assert!(reasons.iter().any(|r| r.starts_with("segment 121 (GE), element GE02")), "{reasons:?}");
    assert!(reasons.iter().any(|r| r.starts_with("segment 122 (IEA), element IEA02")), "{reasons:?}");
}

fn file(path: &str) -> Vec<u8> {
    std::fs::read(data().join(path)).unwrap()
}

const CLAIMS: &str = "x12-linuxforhealth/demo-file/demo.837";
/// The project's own 835 answering that 837's claim (tests/data/caduceus/README.md).
const REMITTANCE: &str = "caduceus/demo-remittance.835";

/// An 837 becomes its claim, for the dependent of the subscriber, with each line's procedure
/// and the diagnosis its pointer names; the 835 that answers it names the same claim and
/// patient, paid and funded with the amount it pays.
#[test]
fn an_837_claim_and_the_835_that_pays_it_name_the_same_claim() {
    let claims = import(&file(CLAIMS));
    assert!(claims.rejections.is_empty(), "{:?}", claims.rejections);
    let plan = claims.plan.unwrap();
    let [claim] = plan.claims.as_slice() else { panic!("{:?}", plan.claims) };
    assert_eq!(claim.place, segment(28, "CLM", None));
    assert_eq!((claim.total, claim.service_date), (10_000, 2006_10_03));
    let lines: Vec<(&str, &str, u64)> =
        claim.lines.iter().map(|l| (l.procedure.as_str(), l.diagnosis.as_str(), l.amount)).collect();
    assert_eq!(
        lines,
        [("99213", "0340", 4_000), ("87070", "0340", 1_500), ("99214", "V7389", 3_500), ("86663", "V7389", 1_000)]
    );
    let patient = caduceus_interop::x12_plan::patient_key("999996666", "JS00111223333", Some(("Smith", "Ted")));
    assert_eq!((claim.patient.as_str(), claim.provider.as_str()), (patient.as_str(), "x12.npi.1912301953"));
    assert_eq!(claim.payer, "x12.payer.999996666");

    let remittance = import(&file(REMITTANCE));
    assert!(remittance.rejections.is_empty(), "{:?}", remittance.rejections);
    let plan = remittance.plan.unwrap();
    let [paid] = plan.remittances.as_slice() else { panic!("{:?}", plan.remittances) };
    assert_eq!(
        (paid.payer.as_str(), paid.trace.as_str(), paid.funding()),
        ("x12.payer.999996666", "EFT20061101", 8_000)
    );
    let [payment] = paid.payments.as_slice() else { panic!() };
    assert_eq!((payment.claim, payment.patient.as_str()), (claim.claim, patient.as_str()));
    assert_eq!((payment.provider.as_str(), payment.decision), ("x12.npi.1912301953", Decision::Paid(8_000)));
}

/// Damaged interchanges: each fault is rejected at its segment and element, and what does not
/// share the fault is still read.
#[test]
fn each_damaged_envelope_or_amount_is_rejected_at_its_segment() {
    let text = String::from_utf8(file(REMITTANCE)).unwrap();
    let rejected = |damaged: String| import(damaged.as_bytes()).rejections;

    // The payment no longer balances its claims.
    let unbalanced = rejected(text.replace("BPR*I*80*", "BPR*I*90*"));
    assert_eq!(unbalanced.len(), 1);
    assert_eq!(unbalanced[0].place, segment(4, "BPR", Some(2)));
    assert!(unbalanced[0].reason.contains("not the claims' payments"), "{}", unbalanced[0]);
    // A denial without a numeric reason code.
    let denied = rejected(
        text.replace("CLP*26463774*1*100*80", "CLP*26463774*4*100*0")
            .replace("BPR*I*80*", "BPR*I*0*")
            .replace("CAS*CO*45*", "CAS*CO*A1*"),
    );
    assert_eq!(denied.len(), 1);
    assert_eq!(denied[0].place, segment(14, "CAS", Some(2)));
    // Trailers that do not match their headers.
    assert_eq!(rejected(text.replace("SE*15*", "SE*14*"))[0].place, segment(17, "SE", Some(1)));
    assert_eq!(rejected(text.replace("SE*15*0001", "SE*15*0002"))[0].place, segment(17, "SE", Some(2)));
    assert_eq!(rejected(text.replace("GE*1*101", "GE*1*102"))[0].place, segment(18, "GE", Some(2)));
    assert_eq!(rejected(text.replace("IEA*1*000000101", "IEA*2*000000101"))[0].place, segment(19, "IEA", Some(1)));
    // A set in a group of another functional code.
    assert_eq!(rejected(text.replace("GS*HP*", "GS*HC*"))[0].place, segment(2, "GS", Some(1)));
    // A 4010 interchange.
    assert_eq!(rejected(text.replace("*00501*", "*00401*"))[0].place, segment(1, "ISA", Some(12)));
    // A segment the 835 model does not allow where it stands.
    assert_eq!(rejected(text.replace("TRN*1*", "CLM*1*"))[0].place, segment(5, "CLM", None));
    // Cut short anywhere: never a panic, always a rejection with a place.
    for end in (0..text.len()).step_by(7) {
        let outcome = import(&text.as_bytes()[..end]);
        assert!(!outcome.rejections.is_empty() || end >= text.trim_end().len() - 1, "{end}");
    }
    // An ISA that is not of fixed length.
    let short = text.replacen("KEYINSURANCE   ", "KEYINSURANCE", 1);
    assert_eq!(rejected(short)[0].place, segment(1, "ISA", None));
}

/// Other delimiters read the same: `|` between elements and a line break after segments.
#[test]
fn the_delimiters_are_the_interchange_s_own() {
    let text = String::from_utf8(file(CLAIMS)).unwrap().replace('\r', "");
    let piped = text.replace('*', "|").replace("~\n", "\n").replace('~', "\n");
    let (ours, theirs) = (import(text.as_bytes()).plan.unwrap(), import(piped.as_bytes()).plan.unwrap());
    assert_eq!(theirs.claims.len(), 1);
    assert_eq!(
        (theirs.claims[0].claim, theirs.claims[0].total, &theirs.claims[0].lines),
        (ours.claims[0].claim, ours.claims[0].total, &ours.claims[0].lines)
    );
}

/// Two sets in one group, the first with a trailer that does not match: only that set is
/// rejected, and the second is read.
#[test]
fn a_set_s_fault_rejects_that_set_only() {
    let text = String::from_utf8(file(CLAIMS)).unwrap().replace('\r', "").replace("~\n", "~");
    let start = text.find("ST*837").unwrap();
    let end = text.find("GE*").unwrap();
    let set = &text[start..end];
    let bad = set.replace("SE*41*0021", "SE*41*9999");
    let two = format!("{}{bad}{set}{}", &text[..start], text[end..].replacen("GE*1*", "GE*2*", 1));
    let outcome = import(two.as_bytes());
    assert_eq!(outcome.rejections.len(), 1, "{:?}", outcome.rejections);
    assert_eq!(outcome.rejections[0].place, segment(43, "SE", Some(2)));
    assert_eq!(outcome.plan.unwrap().claims.len(), 1);
}

/// What the models would stop or fail on is caught first: a segment short of elements its
/// model requires (the input the fuzzer first found) is read without a panic, and a control
/// character in an element is rejected at that element.
#[test]
fn short_segments_and_unreadable_characters_never_reach_the_models_assumptions() {
    let text = String::from_utf8(file(CLAIMS)).unwrap();
    let short = text
        .replace("BHT*0019*00*244579*20061015*1023*CH", "BHT*0019")
        .replace("CLM*26463774*100***11:B:1*Y*A*Y*I", "CLM*26463774");
    let outcome = import(short.as_bytes());
    assert_eq!(outcome.plan.unwrap().claims.len(), 0);
    assert_eq!(outcome.rejections[0].place, segment(28, "CLM", Some(2)), "{:?}", outcome.rejections);
    let control = text.replace("SMITH*TED", "SMITH*T\u{0}ED");
    let rejections = import(control.as_bytes()).rejections;
    assert_eq!(rejections[0].place, segment(24, "NM1", Some(4)));
    assert!(rejections[0].reason.contains("'\\0'"), "{}", rejections[0]);
}
