//! How the command line shows ledger entries: times, ids, access reports, custody trails,
//! proofs and checkpoints, the same for every target.

use caduceus_engine::history::{AccessEntry, CustodyEvent};
use caduceus_engine::model::hex;
use caduceus_engine::{Checkpoint, Proof, TxId, UnitVerification};

pub fn id_hex(id: u128) -> String {
    hex(&id.to_be_bytes())
}

/// The last millisecond an RFC 3339 date can name (9999-12-31T23:59:59.999Z).
const LAST_DATE_MS: u64 = 253_402_300_799_999;

/// A timestamp as UTC date and time, to the millisecond; one past the year 9999 (which a
/// signer may put in a consent's end) as milliseconds since the epoch.
pub fn when(ms: u64) -> String {
    if ms > LAST_DATE_MS {
        return format!("{ms} ms after the epoch (after 9999)");
    }
    let time = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms);
    humantime::format_rfc3339_millis(time).to_string()
}

/// What an access-log entry is: a read's purpose, or an erasure, an audit or an emergency.
pub fn purpose(entry: &AccessEntry) -> &'static str {
    match entry.purpose {
        Some(purpose) => purpose.as_str(),
        None if entry.erasure => "erasure",
        None if entry.audit => "audit",
        None => "emergency",
    }
}

/// One line of an access report, every field named.
pub fn access(entry: &AccessEntry) {
    let purpose = purpose(entry);
    println!(
        "{} record={} accessor={} purpose={purpose} result={} break_glass={} tx={}",
        when(entry.time),
        id_hex(entry.record),
        entry.accessor,
        entry.result,
        entry.break_glass,
        id_hex(entry.transaction)
    );
}

/// Whether a unit is genuine, recalled or expired, then its custody trail.
pub fn unit(verification: &UnitVerification, events: &[CustodyEvent]) {
    let unit = &verification.unit;
    println!();
    match &verification.state {
        None => println!("unit {unit}: NOT GENUINE (never commissioned on this ledger)"),
        Some(state) => println!(
            "unit {unit}: genuine, lot {}, {}, custodian {}, recalled: {}, expired: {}",
            state.lot,
            state.status.name(),
            &state.custodian.to_hex()[..16],
            verification.recall.as_ref().map_or("no".to_owned(), |r| format!("yes ({})", r.reason)),
            if verification.expired { "yes" } else { "no" }
        ),
    }
    for event in events {
        let to = event.counterparty.map(|c| format!(" -> {}", &c.to_hex()[..16])).unwrap_or_default();
        println!("  {} {:<18} by {}{to}: {}", when(event.time), event.event, &event.actor.to_hex()[..16], event.result);
    }
}

/// A product's master data from the catalogue.
pub fn product(attributes: &std::collections::BTreeMap<String, String>) {
    let listed: Vec<String> = attributes.iter().map(|(name, value)| format!("{name}: {value}")).collect();
    println!("  product: {}", listed.join("; "));
}

/// A transaction's result and whether its proof checks against `checkpoint`.
pub fn proof(id: u128, proof: &Proof, checkpoint: &Checkpoint) {
    let verdict = match proof.verify(&checkpoint.hash()) {
        Ok(()) => "VERIFIED".to_owned(),
        Err(error) => format!("FAILED: {error}"),
    };
    println!(
        "transaction {}: {} in shard {} block {}; proof ({} + {} + {} hashes) against checkpoint {} ({}): {verdict}",
        id_hex(id),
        proof.result,
        proof.header.shard,
        proof.header.height,
        proof.transaction_path.len(),
        proof.result_path.len(),
        proof.head_path.len(),
        proof.checkpoint_round,
        &hex(&checkpoint.hash())[..16],
    );
}

/// How much of a history a page showed, and how to ask for the next one.
pub fn page_footer(shown: usize, total: u64, next: Option<caduceus_engine::history::Cursor>) {
    match next {
        Some(next) => println!("{shown} of {total}, newest first; older: --before {}:{}", next.height, next.index),
        None => println!("{shown} of {total}, newest first"),
    }
}

/// The end of a listing by id.
pub fn listing_footer(shown: usize, next: Option<u128>) {
    match next {
        Some(next) => println!("{shown} listed; more: --after {}", id_hex(next)),
        None => println!("{shown} listed"),
    }
}

pub fn record(id: u128, record: &caduceus_engine::Record) {
    let erased = record.erased_at.map_or(String::new(), |at| format!(", erased {}", when(at)));
    println!(
        "record {} {} v{} by custodian {} content {} updated {}{erased}",
        id_hex(id),
        record.resource_type,
        record.version,
        &record.custodian.to_hex()[..16],
        &hex(&record.content_hash)[..16],
        when(record.updated_at)
    );
}

pub fn study(id: TxId, study: &caduceus_engine::Study) {
    let status = study.closed_at.map_or("open to enrolment".to_owned(), |at| format!("closed {}", when(at)));
    println!(
        "study {} by investigator {} protocol {} registered {}, {status}",
        id_hex(id),
        &study.investigator.to_hex()[..16],
        &hex(&study.protocol)[..16],
        when(study.registered_at)
    );
}

pub fn enrolment(study: TxId, enrolment: &caduceus_engine::Enrolment) {
    let withdrawn = enrolment.withdrawn_at.map_or(String::new(), |at| format!(", withdrawn {}", when(at)));
    println!(
        "enrolled in study {} {} on consent {}{withdrawn}",
        id_hex(study),
        when(enrolment.enrolled_at),
        id_hex(enrolment.consent)
    );
}

/// A credential and whether it holds at `now`.
pub fn credential(id: TxId, credential: &caduceus_engine::ProviderCredential, now: u64) {
    let verdict = if credential.valid_at(now) {
        "valid now".to_owned()
    } else if let Some(at) = credential.revoked_at {
        format!("REVOKED {}", when(at))
    } else {
        "NOT VALID now (outside its period)".to_owned()
    };
    println!(
        "credential {} {} held by {} issued by {} document {} valid {} to {}: {verdict}",
        id_hex(id),
        credential.kind,
        &credential.subject.to_hex()[..16],
        &credential.issuer.to_hex()[..16],
        &hex(&credential.document)[..16],
        when(credential.valid_from),
        when(credential.valid_until)
    );
}

pub fn consent(id: u128, consent: &caduceus_engine::Consent) {
    let purposes: Vec<&str> = caduceus_engine::model::Purpose::ALL
        .iter()
        .filter(|p| consent.purposes.contains(**p))
        .map(|p| p.as_str())
        .collect();
    let revoked = consent.revoked_at.map_or(String::new(), |at| format!(", revoked {}", when(at)));
    println!(
        "consent {} to {} for {} ({}) from {} until {}{revoked}",
        id_hex(id),
        &consent.grantee.to_hex()[..16],
        consent.scope.join(","),
        purposes.join(","),
        when(consent.valid_from),
        when(consent.valid_until)
    );
}

pub fn checkpoint(checkpoint: &Checkpoint) {
    println!("round {} checkpoint {}", checkpoint.round, hex(&checkpoint.hash()));
    for head in &checkpoint.heads {
        println!("  shard {} height {} head {}", head.shard, head.height, hex(&head.hash));
    }
}
