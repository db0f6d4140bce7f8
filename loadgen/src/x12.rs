//! `loadgen x12`: a large X12 5010 837 and the 835s that pay it, for measuring `caduceus
//! import` on more claims than the implementation guides' examples hold. Each claim is a
//! subscriber's own (a member id of its own, so no two claims are duplicates), one professional
//! service line with a diagnosis, billed by one of the providers to one of the payers; the 835s
//! (one per payer and provider, as an 835 pays one payee) approve and pay 80% of each.

use std::fmt::Write as _;

/// The two files' contents.
pub struct Files {
    pub claims: String,
    pub remittances: String,
}

const PROCEDURES: [&str; 6] = ["99213", "99214", "87070", "86663", "80053", "93000"];
const DIAGNOSES: [&str; 6] = ["J209", "E119", "I10", "M545", "R51", "Z0000"];

fn envelope(body: &str, code: &str, version: &str, sets: usize) -> String {
    let mut out = String::new();
    out.push_str(
        "ISA*00*          *00*          *ZZ*LOADGEN        *ZZ*CADUCEUS       *260101*1200*^*00501*000000001*0*T*:~\n",
    );
    let _ = writeln!(out, "GS*{code}*LOADGEN*CADUCEUS*20260101*1200*1*X*{version}~");
    out.push_str(body);
    let _ = writeln!(out, "GE*{sets}*1~");
    out.push_str("IEA*1*000000001~\n");
    out
}

/// A set's segments with its ST and SE around them.
fn set(kind: &str, control: usize, version: &str, segments: &[String]) -> String {
    let mut out = format!("ST*{kind}*{control:04}*{version}~\n");
    for segment in segments {
        out.push_str(segment);
        out.push_str("~\n");
    }
    let _ = writeln!(out, "SE*{}*{control:04}~", segments.len() + 2);
    out
}

/// `claims` claims over `providers` providers and `payers` payers.
pub fn files(claims: usize, providers: usize, payers: usize) -> Files {
    let (providers, payers) = (providers.max(1), payers.max(1));
    let npi = |p: usize| format!("{:010}", 1_000_000_000 + p);
    let payer_id = |k: usize| format!("PAYER{k:04}");
    let charge = |i: usize| 5_000 + (i * 7_919) % 45_000;
    let money = |cents: usize| format!("{}.{:02}", cents / 100, cents % 100);
    // The 837: one set, a billing provider level for each provider, a subscriber level per claim.
    let mut segments = vec![
        "BHT*0019*00*1*20260101*1200*CH".to_owned(),
        "NM1*41*2*LOADGEN*****46*LOADGEN".to_owned(),
        "NM1*40*2*CADUCEUS*****46*CADUCEUS".to_owned(),
    ];
    let mut level = 0;
    for p in 0..providers {
        level += 1;
        let billing = level;
        segments.push(format!("HL*{billing}**20*1"));
        segments.push(format!("NM1*85*2*PROVIDER {p}*****XX*{}", npi(p)));
        for i in (p..claims).step_by(providers) {
            level += 1;
            let k = i % payers;
            let (procedure, diagnosis) = (PROCEDURES[i % PROCEDURES.len()], DIAGNOSES[i % DIAGNOSES.len()]);
            let day = 1 + i % 28;
            segments.extend([
                format!("HL*{level}*{billing}*22*0"),
                "SBR*P*18*******CI".to_owned(),
                format!("NM1*IL*1*MEMBER*{i}****MI*M{i:09}"),
                format!("NM1*PR*2*PAYER {k}*****PI*{}", payer_id(k)),
                format!("CLM*C{i:09}*{}***11:B:1*Y*A*Y*Y", money(charge(i))),
                format!("HI*ABK:{diagnosis}"),
                "LX*1".to_owned(),
                format!("SV1*HC:{procedure}*{}*UN*1***1", money(charge(i))),
                format!("DTP*472*D8*202510{day:02}"),
            ]);
        }
    }
    let claims_file = envelope(&set("837", 1, "005010X222A2", &segments), "HC", "005010X222A2", 1);
    // The 835s: one set per payer and provider that share a claim.
    let mut body = String::new();
    let mut sets = 0;
    for k in 0..payers {
        for p in 0..providers {
            let paid: Vec<usize> = (p..claims).step_by(providers).filter(|i| i % payers == k).collect();
            if paid.is_empty() {
                continue;
            }
            sets += 1;
            let payment = |i: usize| charge(i) * 4 / 5;
            let total: usize = paid.iter().map(|i| payment(*i)).sum();
            let mut segments = vec![
                format!(
                    "BPR*I*{}*C*ACH*CCP*01*999999992*DA*123456*1512345678**01*999988880*DA*98765*20260105",
                    money(total)
                ),
                format!("TRN*1*EFT{k:04}{p:05}*1999999999"),
                format!("N1*PR*PAYER {k}"),
                format!("REF*2U*{}", payer_id(k)),
                format!("N1*PE*PROVIDER {p}*XX*{}", npi(p)),
                "LX*1".to_owned(),
            ];
            for i in paid {
                segments.extend([
                    format!("CLP*C{i:09}*1*{}*{}**12*K{i:09}*11*1", money(charge(i)), money(payment(i))),
                    format!("CAS*CO*45*{}", money(charge(i) - payment(i))),
                    format!("NM1*QC*1*MEMBER*{i}****MI*M{i:09}"),
                ]);
            }
            body.push_str(&set("835", sets, "005010X221A1", &segments));
        }
    }
    Files { claims: claims_file, remittances: envelope(&body, "HP", "005010X221A1", sets) }
}
