//! The rules of providers' credentials: an issuer (a licensing board, an accreditor) issues
//! a credential to a registered provider and may revoke it; anyone verifies it by its id.

use super::*;

impl Shard {
    /// Checks an operation of this family (see `Shard::check`) and adds its effects to `plan`;
    /// `id` is the transaction's, which names a credential it issues.
    pub(super) fn check_credentials(&self, t: &Transaction, id: TxId, plan: &mut Plan) -> Check {
        match &t.operation {
            Operation::IssueCredential { subject, kind, document, valid_from, valid_until } => {
                self.require_active(subject, &[Role::Provider], Reason::UnknownActor)?;
                if !crate::model::valid_code(kind) || valid_from >= valid_until {
                    return Err(Reason::InvalidField);
                }
                let credential = ProviderCredential {
                    issuer: t.signer,
                    subject: *subject,
                    kind: kind.clone(),
                    document: *document,
                    valid_from: *valid_from,
                    valid_until: *valid_until,
                    issued_at: self.now,
                    revoked_at: None,
                };
                plan.effects.push(Effect::PutCredential(id, credential));
            }
            Operation::RevokeCredential { credential, subject } => {
                let current = self.state.credentials.get(credential).ok_or(Reason::UnknownCredential)?;
                if current.issuer != t.signer {
                    return Err(Reason::NotIssuer);
                }
                if current.subject != *subject {
                    return Err(Reason::InvalidField);
                }
                if current.revoked_at.is_some() {
                    return Err(Reason::CredentialRevoked);
                }
                let mut revoked = current.clone();
                revoked.revoked_at = Some(self.now);
                plan.effects.push(Effect::PutCredential(*credential, revoked));
            }
            other => unreachable!("{} is not in the credentials family", other.name()),
        }
        Ok(())
    }
}
