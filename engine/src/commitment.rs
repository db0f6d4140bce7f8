//! Keyed commitments: what the ledger holds where a rule compares health data.
//!
//! The duplicate-claim check compares patient, provider, service date and codes; a dispense
//! says who received a drug. Both are health data, and the ledger is replicated and kept for
//! decades, so it holds a keyed hash instead, under a secret the exchange holds
//! (`CommitmentKey`). Unlike a plain hash, no dictionary of dates and codes reverses it without
//! the key. The exchange's intake computes the commitment and the signer puts it in the
//! transaction. This module never sees a ledger: it is the intake's arithmetic.

use crate::limits::AMOUNT_MAX;
use crate::model::{ActorKey, ClaimLine, Hash, Reason, UnitId};
use crate::shard::valid_date;

/// The exchange's secret for commitments. Whoever holds it can test guesses against the
/// ledger's commitments, so it stays with the exchange, never with members or replicas.
#[derive(Clone)]
pub struct CommitmentKey([u8; 32]);

impl CommitmentKey {
    /// A key from its bytes (generated once by the exchange, kept like its key-encryption key).
    pub fn new(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }
}

impl std::fmt::Debug for CommitmentKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CommitmentKey(..)")
    }
}

fn keyed(key: &CommitmentKey, domain: &str) -> blake3::Hasher {
    let mut hasher = blake3::Hasher::new_keyed(&key.0);
    hasher.update(domain.as_bytes());
    hasher
}

fn text(hasher: &mut blake3::Hasher, text: &str) {
    hasher.update(&(text.len() as u32).to_le_bytes());
    hasher.update(text.as_bytes());
}

/// What an intake checks of a claim before it commits to it, since the ledger never sees the
/// date or the codes: a real service date not after `today` (both YYYYMMDD), at least one line,
/// every code present and every charge above zero, the total within `AMOUNT_MAX`. Returns the
/// total, which the ledger holds.
pub fn check_claim(service_date: u32, lines: &[ClaimLine], today: u32) -> Result<u64, Reason> {
    let codes_present = lines.iter().all(|l| !l.procedure.is_empty() && !l.diagnosis.is_empty());
    let total = lines.iter().try_fold(0u64, |sum, line| sum.checked_add(line.amount)).unwrap_or(u64::MAX);
    if lines.is_empty() || !codes_present || lines.iter().any(|l| l.amount == 0) || total > AMOUNT_MAX {
        return Err(Reason::InvalidField);
    }
    if !valid_date(service_date) {
        return Err(Reason::InvalidField);
    }
    if service_date > today {
        return Err(Reason::ServiceDateInFuture);
    }
    Ok(total)
}

/// A claim's commitment: its patient, provider, service date (YYYYMMDD) and codes, the lines
/// in any order. Two claims for the same service commit alike, which is what the ledger's
/// duplicate check compares; charged amounts are left out, so a resubmission at another price
/// is still a duplicate.
pub fn claim_commitment(
    key: &CommitmentKey,
    patient: &ActorKey,
    provider: &ActorKey,
    service_date: u32,
    lines: &[ClaimLine],
) -> Hash {
    let mut codes: Vec<(&str, &str)> = lines.iter().map(|l| (l.procedure.as_str(), l.diagnosis.as_str())).collect();
    codes.sort_unstable();
    let mut hasher = keyed(key, "caduceus.claim.1");
    hasher.update(&patient.0);
    hasher.update(&provider.0);
    hasher.update(&service_date.to_le_bytes());
    for (procedure, diagnosis) in codes {
        text(&mut hasher, procedure);
        text(&mut hasher, diagnosis);
    }
    *hasher.finalize().as_bytes()
}

/// Who received a dispensed unit, as the ledger holds it: the patient and the unit under the
/// exchange's key, so the same patient's dispenses do not link to each other on the ledger.
pub fn recipient_commitment(key: &CommitmentKey, patient: &ActorKey, unit: &UnitId) -> Hash {
    let mut hasher = keyed(key, "caduceus.recipient.1");
    hasher.update(&patient.0);
    hasher.update(&unit.gtin.to_le_bytes());
    text(&mut hasher, &unit.serial);
    *hasher.finalize().as_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_commitment_depends_on_the_key_and_the_service_but_not_on_line_order_or_charges() {
        let (patient, provider) = (ActorKey([1; 32]), ActorKey([2; 32]));
        let line = |procedure: &str, diagnosis: &str, amount| ClaimLine {
            procedure: procedure.into(),
            diagnosis: diagnosis.into(),
            amount,
        };
        let lines = [line("99213", "E11.9", 100), line("85025", "I10", 50)];
        let swapped = [line("85025", "I10", 70), line("99213", "E11.9", 100)];
        let key = CommitmentKey::new([7; 32]);
        let commitment = claim_commitment(&key, &patient, &provider, 2026_01_15, &lines);
        assert_eq!(commitment, claim_commitment(&key, &patient, &provider, 2026_01_15, &swapped));
        assert_ne!(commitment, claim_commitment(&CommitmentKey::new([8; 32]), &patient, &provider, 2026_01_15, &lines));
        assert_ne!(commitment, claim_commitment(&key, &patient, &provider, 2026_01_16, &lines));
        assert_ne!(commitment, claim_commitment(&key, &patient, &provider, 2026_01_15, &lines[..1]));
        // Not a plain hash of the same fields: without the key, a dictionary does not match it.
        let mut plain = blake3::Hasher::new();
        plain.update(&patient.0);
        plain.update(&provider.0);
        plain.update(&2026_01_15u32.to_le_bytes());
        assert_ne!(commitment, *plain.finalize().as_bytes());
    }
}
