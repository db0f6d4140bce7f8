//! The rules of records, consents and accesses: who may register and amend a record, grant
//! and revoke consent, and read a record (checked against consent at commit time).

use super::*;

impl Shard {
    /// Checks an operation of this family (see `Shard::check`) and adds its effects to `plan`.
    pub(super) fn check_records(&self, t: &Transaction, id: TxId, plan: &mut Plan) -> Check {
        let signer = t.signer;
        let now = self.now;
        match &t.operation {
            Operation::RegisterRecord { record, patient, content_hash, resource_type } => {
                self.require_role(patient, &[Role::Patient], Reason::UnknownPatient)?;
                if resource_type.is_empty() {
                    return Err(Reason::InvalidField);
                }
                if self.state.records.contains_key(&(*patient, *record)) {
                    return Err(Reason::RecordExists);
                }
                plan.effects.push(Effect::PutRecord(
                    *record,
                    Record {
                        patient: *patient,
                        custodian: signer,
                        resource_type: resource_type.clone(),
                        content_hash: *content_hash,
                        previous_hash: [0; 32],
                        version: 1,
                        updated_at: now,
                        erased_at: None,
                        written_by: id,
                    },
                ));
            }
            Operation::AmendRecord { record, patient, content_hash } => {
                let current = self.live_record(patient, *record)?;
                if current.custodian != signer {
                    return Err(Reason::NotCustodian);
                }
                let mut amended = current.clone();
                amended.previous_hash = current.content_hash;
                amended.content_hash = *content_hash;
                amended.version += 1;
                amended.updated_at = now;
                amended.written_by = id;
                plan.effects.push(Effect::PutRecord(*record, amended));
            }
            Operation::GrantConsent { consent, patient, grantee, scope, purposes, valid_from, valid_until } => {
                let grant = Consent {
                    patient: *patient,
                    grantee: *grantee,
                    scope: scope.clone(),
                    purposes: *purposes,
                    valid_from: *valid_from,
                    valid_until: *valid_until,
                    revoked_at: None,
                    granted_by: id,
                    revoked_by: None,
                };
                self.check_grant(signer, *consent, grant, plan)?;
            }
            Operation::RevokeConsent { consent, patient } => {
                if signer != *patient {
                    return Err(Reason::NotThePatient);
                }
                let current = self.state.consents.get(&(*patient, *consent)).ok_or(Reason::UnknownConsent)?;
                if current.revoked_at.is_some() {
                    return Err(Reason::ConsentRevoked);
                }
                let mut revoked = current.clone();
                revoked.revoked_at = Some(now);
                revoked.revoked_by = Some(id);
                plan.effects.push(Effect::PutConsent(*consent, revoked));
            }
            Operation::AccessRecord { record, patient, purpose } => {
                let current = self.live_record(patient, *record)?;
                // A patient reads their own records, and a custodian the records it holds, without consent.
                if signer != *patient && signer != current.custodian {
                    self.consent_covers(patient, &signer, &current.resource_type, *purpose)?;
                }
            }
            Operation::EmergencyAccess { record, patient, .. } => {
                self.live_record(patient, *record)?;
            }
            Operation::AuditRead { subject, .. } => {
                if let Some(subject) = subject {
                    if self.role(subject).is_none() {
                        return Err(Reason::UnknownActor);
                    }
                }
            }
            Operation::EraseRecord { record, patient } => {
                // The patient erases its own record; an operator erases on a legal order.
                if self.role(&signer) == Some(Role::Patient) && signer != *patient {
                    return Err(Reason::NotThePatient);
                }
                let mut erased = self.live_record(patient, *record)?.clone();
                erased.erased_at = Some(now);
                plan.effects.push(Effect::PutRecord(*record, erased));
            }
            other => unreachable!("{} is not in the records family", other.name()),
        }
        Ok(())
    }

    /// A record that exists and is not erased.
    fn live_record(&self, patient: &ActorKey, record: u128) -> Check<&Record> {
        let current = self.state.records.get(&(*patient, record)).ok_or(Reason::UnknownRecord)?;
        if current.erased_at.is_some() {
            return Err(Reason::RecordErased);
        }
        Ok(current)
    }

    /// Whether a consent of the patient lets the grantee read this type of record for this purpose now.
    /// On refusal, the reason names how close the nearest consent came.
    fn consent_covers(&self, patient: &ActorKey, grantee: &ActorKey, resource_type: &str, purpose: Purpose) -> Check {
        let ids = self.state.consent_index.get(&(*patient, *grantee));
        let mut nearest = Reason::ConsentMissing;
        let rank = |reason: Reason| match reason {
            Reason::ConsentRevoked => 1,
            Reason::ConsentExpired => 2,
            Reason::ConsentPurpose => 3,
            Reason::ConsentScope => 4,
            _ => 0,
        };
        for id in ids.into_iter().flatten() {
            let consent = &self.state.consents[&(*patient, *id)];
            let verdict = if consent.revoked_at.is_some() {
                Reason::ConsentRevoked
            } else if self.now < consent.valid_from || self.now >= consent.valid_until {
                Reason::ConsentExpired
            } else if !consent.purposes.contains(purpose) {
                Reason::ConsentPurpose
            } else if !consent.scope.is_empty() && !consent.scope.iter().any(|s| s == resource_type) {
                Reason::ConsentScope
            } else {
                return Ok(());
            };
            if rank(verdict) > rank(nearest) {
                nearest = verdict;
            }
        }
        Err(nearest)
    }

    /// A patient's grant of consent to a grantee: who may grant, what a grant must hold, and
    /// how many consents one grantee may hold.
    fn check_grant(&self, signer: ActorKey, id: u128, grant: Consent, plan: &mut Plan) -> Check {
        if signer != grant.patient {
            return Err(Reason::NotThePatient);
        }
        if self.role(&grant.grantee).is_none() || grant.grantee == grant.patient {
            return Err(Reason::UnknownActor);
        }
        if grant.valid_from >= grant.valid_until || grant.scope.iter().any(String::is_empty) {
            return Err(Reason::InvalidField);
        }
        if self.state.consents.contains_key(&(grant.patient, id)) {
            return Err(Reason::ConsentExists);
        }
        let held = self.state.consent_index.get(&(grant.patient, grant.grantee)).map_or(0, Vec::len);
        if held >= CONSENTS_PER_GRANTEE_MAX {
            return Err(Reason::ConsentLimit);
        }
        plan.effects.push(Effect::PutConsent(id, grant));
        Ok(())
    }
}
