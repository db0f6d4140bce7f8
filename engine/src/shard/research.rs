//! The rules of clinical studies: a provider registers a study it leads, enrols patients on
//! their research consent, and closes the study to enrolment; a patient (or the investigator)
//! withdraws.

use super::*;

impl Shard {
    /// Checks an operation of this family (see `Shard::check`) and adds its effects to `plan`;
    /// `id` is the transaction's, which names a study it registers.
    pub(super) fn check_research(&self, t: &Transaction, id: TxId, plan: &mut Plan) -> Check {
        let signer = t.signer;
        let now = self.now;
        match &t.operation {
            Operation::RegisterStudy { protocol } => {
                let study = Study { investigator: signer, protocol: *protocol, registered_at: now, closed_at: None };
                plan.effects.push(Effect::PutStudy(id, study));
            }
            Operation::CloseStudy { study } => {
                let key = StateKey::Study(*study);
                self.unlocked(&key)?;
                let mut closed = self.led_study(*study, &signer)?.clone();
                if closed.closed_at.is_some() {
                    return Err(Reason::StudyClosed);
                }
                closed.closed_at = Some(now);
                plan.effects.push(Effect::PutStudy(*study, closed));
                plan.locks.push(key);
            }
            Operation::EnrollSubject { study, patient, consent } => {
                let led = self.led_study(*study, &signer)?;
                if led.closed_at.is_some() {
                    return Err(Reason::StudyClosed);
                }
                self.require_active(patient, &[Role::Patient], Reason::UnknownPatient)?;
                if self.state.enrolments.get(&(*patient, *study)).is_some_and(|e| e.withdrawn_at.is_none()) {
                    return Err(Reason::AlreadyEnrolled);
                }
                self.research_consent(patient, *consent, &signer)?;
                let enrolment = Enrolment { consent: *consent, enrolled_at: now, withdrawn_at: None };
                plan.effects.push(Effect::PutEnrolment(*patient, *study, enrolment));
            }
            Operation::WithdrawSubject { study, patient } => {
                let current = self.state.enrolments.get(&(*patient, *study));
                let mut withdrawn = current.filter(|e| e.withdrawn_at.is_none()).ok_or(Reason::NotEnrolled)?.clone();
                if signer != *patient {
                    if self.role(&signer) == Some(Role::Patient) {
                        return Err(Reason::NotThePatient);
                    }
                    self.led_study(*study, &signer)?;
                }
                withdrawn.withdrawn_at = Some(now);
                plan.effects.push(Effect::PutEnrolment(*patient, *study, withdrawn));
            }
            other => unreachable!("{} is not in the research family", other.name()),
        }
        Ok(())
    }

    /// A registered study that `investigator` leads.
    fn led_study(&self, study: TxId, investigator: &ActorKey) -> Check<&Study> {
        let found = self.state.studies.get(&study).ok_or(Reason::UnknownStudy)?;
        if found.investigator != *investigator {
            return Err(Reason::NotInvestigator);
        }
        Ok(found)
    }

    /// Whether the patient's consent `id` lets `investigator` enrol it now: given to it,
    /// unrevoked, within its period, for research.
    fn research_consent(&self, patient: &ActorKey, id: u128, investigator: &ActorKey) -> Check {
        let consent = self.state.consents.get(&(*patient, id)).ok_or(Reason::UnknownConsent)?;
        if consent.grantee != *investigator {
            Err(Reason::ConsentMissing)
        } else if consent.revoked_at.is_some() {
            Err(Reason::ConsentRevoked)
        } else if self.now < consent.valid_from || self.now >= consent.valid_until {
            Err(Reason::ConsentExpired)
        } else if !consent.purposes.contains(Purpose::Research) {
            Err(Reason::ConsentPurpose)
        } else {
            Ok(())
        }
    }
}
