//! Claims and their payments as the mappings plan them, whatever the format they came in: an
//! X12 837 and 835, or FHIR Claim and ExplanationOfBenefit (or ClaimResponse).

use crate::actors::{ActorKind, PlannedActor};
use crate::report::Place;

/// One service line of a claim: what the commitment covers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClaimLine {
    pub procedure: String,
    pub diagnosis: String,
    /// In cents.
    pub amount: u64,
}

/// A claim to submit.
#[derive(Clone, Debug)]
pub struct PlannedClaim {
    /// Its CLM segment, or the Claim resource.
    pub place: Place,
    pub claim: u128,
    /// Key names.
    pub patient: String,
    pub provider: String,
    pub payer: String,
    /// YYYYMMDD.
    pub service_date: u32,
    pub lines: Vec<ClaimLine>,
    /// In cents: CLM02 (the lines' sum), or Claim.total.
    pub total: u64,
}

impl PlannedClaim {
    /// The actors it names: its patient, provider and payer.
    pub fn actors(&self) -> [PlannedActor; 3] {
        [
            PlannedActor { kind: ActorKind::Patient, key: self.patient.clone() },
            PlannedActor { kind: ActorKind::Provider, key: self.provider.clone() },
            PlannedActor { kind: ActorKind::Payer, key: self.payer.clone() },
        ]
    }
}

/// A payer's decision on one claim.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Approved for and paid this many cents.
    Paid(u64),
    /// Denied, with this claim adjustment reason code.
    Denied(u16),
}

/// One claim of a remittance.
#[derive(Clone, Debug)]
pub struct PlannedPayment {
    /// Its CLP segment, or the resource that pays it.
    pub place: Place,
    pub claim: u128,
    pub patient: String,
    pub provider: String,
    pub decision: Decision,
}

/// A remittance: its payer, its payment's trace (TRN02, or the paying resource's identity)
/// and its claims.
#[derive(Clone, Debug)]
pub struct PlannedRemittance {
    /// Its BPR segment, or the resource that pays.
    pub place: Place,
    pub payer: String,
    pub trace: String,
    pub payments: Vec<PlannedPayment>,
}

impl PlannedRemittance {
    /// What the payer's account is funded with: its claims' payments.
    pub fn funding(&self) -> u64 {
        let paid = self.payments.iter().map(|p| if let Decision::Paid(amount) = p.decision { amount } else { 0 });
        paid.fold(0u64, u64::saturating_add)
    }
}
