//! Who may read what: the rule every read path applies before it answers.
//!
//! A read is made by an identified actor and decided by what it would reveal: a patient reads
//! its own access report, consents, records and claims; a provider the records it holds and the
//! claims it submitted (the records consented to it, through an access the ledger logs); a
//! payer the claims billed to it and its own account; a supply-chain party the custody trail of
//! a unit it has held (a regulator, any trail); a patient's enrolment in a study the patient
//! and the study's investigator; the parties to a transaction its entry and proof;
//! an auditor everything. Public facts (a unit's status without who received it, an actor's
//! role, checkpoints, totals) are anyone's. Pure: callers fetch the facts, this decides.

use crate::history::CustodyEvent;
use crate::model::{ActorKey, Operation, Role, Transaction};
use crate::state::{Claim, Record, Unit};

/// What a read would reveal, with the facts deciding needs.
#[derive(Clone, Copy, Debug)]
pub enum Subject<'a> {
    /// What only the patient reads (and an auditor): its access report, and the lists of its
    /// records and consents.
    Patient {
        /// Whose.
        patient: &'a ActorKey,
    },
    /// A record's entry (its content hash, class, custodian, versions): the patient's and the
    /// custodian's. Another provider reads a record only through an `access-record`, which the
    /// ledger checks against consent and logs in the patient's report.
    Record(&'a Record),
    /// A claim's state.
    Claim(&'a Claim),
    /// An account's balance and funding.
    Account {
        /// Whose account.
        owner: &'a ActorKey,
    },
    /// A unit's custody trail.
    Custody {
        /// Every actor that has held it or shipped it (its manufacturer among them).
        holders: &'a [ActorKey],
    },
    /// A patient's enrolment in a study: the patient's and the study's investigator's.
    Enrolment {
        /// Who is enrolled.
        patient: &'a ActorKey,
        /// The study's investigator.
        investigator: &'a ActorKey,
    },
    /// A transaction as recorded, or its proof.
    Transaction(&'a Transaction),
    /// A fact that is no one's health data: a unit's status, an actor's role, checkpoints,
    /// aggregate totals.
    Public,
}

/// Whether `reader`, registered with `role`, may read `subject`.
pub fn may_read(reader: &ActorKey, role: Role, subject: &Subject<'_>) -> bool {
    if role == Role::Auditor {
        return true;
    }
    match subject {
        Subject::Patient { patient } => reader == *patient,
        Subject::Record(record) => [record.patient, record.custodian].contains(reader),
        Subject::Claim(claim) => [claim.patient, claim.provider, claim.payer].contains(reader),
        Subject::Account { owner } => reader == *owner,
        Subject::Enrolment { patient, investigator } => reader == *patient || reader == *investigator,
        Subject::Custody { holders } => role == Role::Regulator || holders.contains(reader),
        Subject::Transaction(transaction) => parties(transaction).contains(reader),
        Subject::Public => true,
    }
}

/// Who has held a unit, as far as `events` (a page of its trail) and its current entry show:
/// the actors of committed events and their counterparties (a refused ship or receive makes no
/// one a holder), its manufacturer and its custodian.
pub fn custody_holders(events: &[CustodyEvent], unit: Option<&Unit>) -> Vec<ActorKey> {
    let mut holders: Vec<ActorKey> = events
        .iter()
        .filter(|e| e.result.is_committed())
        .flat_map(|e| [Some(e.actor), e.counterparty])
        .flatten()
        .collect();
    holders.extend(unit.into_iter().flat_map(|unit| [unit.manufacturer, unit.custodian]));
    holders
}

/// The actors a transaction names: its signer and every actor its operation names.
pub fn parties(transaction: &Transaction) -> Vec<ActorKey> {
    let mut parties = vec![transaction.signer];
    match &transaction.operation {
        Operation::RegisterActor { actor, .. }
        | Operation::RevokeActor { actor }
        | Operation::ChangeRole { actor, .. }
        | Operation::AddOperator { actor, .. } => parties.push(*actor),
        Operation::RegisterRecord { patient, .. }
        | Operation::AmendRecord { patient, .. }
        | Operation::RevokeConsent { patient, .. }
        | Operation::AccessRecord { patient, .. }
        | Operation::EmergencyAccess { patient, .. }
        | Operation::EraseRecord { patient, .. }
        | Operation::AdjudicateClaim { patient, .. }
        | Operation::EnrollSubject { patient, .. }
        | Operation::WithdrawSubject { patient, .. } => parties.push(*patient),
        Operation::IssueCredential { subject, .. } | Operation::RevokeCredential { subject, .. } => {
            parties.push(*subject)
        }
        Operation::GrantConsent { patient, grantee, .. } => parties.extend([*patient, *grantee]),
        Operation::SubmitClaim { patient, payer, .. } => parties.extend([*patient, *payer]),
        Operation::PayClaim { patient, provider, .. } => parties.extend([*patient, *provider]),
        Operation::ShipUnit { to, .. } | Operation::AuditRead { subject: Some(to), .. } => parties.push(*to),
        Operation::FundAccount { .. }
        | Operation::CommissionUnit { .. }
        | Operation::ReceiveUnit { .. }
        | Operation::DispenseUnit { .. }
        | Operation::DecommissionUnit { .. }
        | Operation::RecallLot { .. }
        | Operation::AuditRead { subject: None, .. }
        | Operation::RotateKey { .. }
        | Operation::RegisterStudy { .. }
        | Operation::CloseStudy { .. } => {}
    }
    parties
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Purpose;
    use crate::state::ClaimStatus;

    fn key(n: u8) -> ActorKey {
        ActorKey([n; 32])
    }

    #[test]
    fn each_read_goes_to_its_parties_and_the_auditor_only() {
        let (patient, provider, payer, other) = (key(1), key(2), key(3), key(9));
        let claim = Claim {
            patient,
            provider,
            payer,
            total: 100,
            duplicate_key: [0; 32],
            status: ClaimStatus::Submitted,
            submitted_at: 0,
        };
        let access = Transaction {
            nonce: 1,
            signer: provider,
            timestamp: 0,
            operation: Operation::AccessRecord { record: 1, patient, purpose: Purpose::Treatment },
            key: None,
        };
        let holders = [key(4), key(5)];
        let record = Record {
            patient,
            custodian: provider,
            resource_type: "Observation".into(),
            content_hash: [1; 32],
            previous_hash: [0; 32],
            version: 1,
            updated_at: 0,
            erased_at: None,
            written_by: 1,
        };
        let cases: Vec<(Subject<'_>, Vec<(ActorKey, Role)>)> = vec![
            (Subject::Patient { patient: &patient }, vec![(patient, Role::Patient)]),
            (Subject::Claim(&claim), vec![(patient, Role::Patient), (provider, Role::Provider), (payer, Role::Payer)]),
            (Subject::Account { owner: &payer }, vec![(payer, Role::Payer)]),
            (
                Subject::Enrolment { patient: &patient, investigator: &provider },
                vec![(patient, Role::Patient), (provider, Role::Provider)],
            ),
            (Subject::Record(&record), vec![(patient, Role::Patient), (provider, Role::Provider)]),
            (Subject::Custody { holders: &holders }, vec![(key(4), Role::Manufacturer), (key(5), Role::Dispenser)]),
            (Subject::Transaction(&access), vec![(provider, Role::Provider), (patient, Role::Patient)]),
        ];
        for (subject, allowed) in &cases {
            for (reader, role) in allowed {
                assert!(may_read(reader, *role, subject), "{subject:?} for {role}");
            }
            for role in [Role::Patient, Role::Provider, Role::Payer, Role::Dispenser, Role::Operator] {
                assert!(!may_read(&other, role, subject), "{subject:?} for another {role}");
            }
            assert!(may_read(&other, Role::Auditor, subject), "the auditor reads {subject:?}");
        }
        assert!(may_read(&other, Role::Regulator, &Subject::Custody { holders: &holders }));
        assert!(!may_read(&other, Role::Regulator, &Subject::Patient { patient: &patient }));
        assert!(may_read(&other, Role::Patient, &Subject::Public));
    }
}
