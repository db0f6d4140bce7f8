//! The rules of claims and payments: funding, submission with duplicate detection,
//! adjudication, and payment exactly once (its parts may sit on different shards).

use super::*;

impl Shard {
    /// Checks an operation of this family (see `Shard::check`) and adds its effects to `plan`.
    /// `id` is the transaction's ledger id (`SignedTransaction::id`, computed once).
    pub(super) fn check_claims(&self, t: &Transaction, id: TxId, plan: &mut Plan) -> Check {
        let signer = t.signer;
        let now = self.now;
        match &t.operation {
            Operation::FundAccount { amount } => {
                if *amount == 0 {
                    return Err(Reason::InvalidField);
                }
                let account = self.state.accounts.get(&signer).copied().unwrap_or_default();
                let within = |total: u64, bound: u64| total.checked_add(*amount).is_some_and(|t| t <= bound);
                if !within(account.balance, BALANCE_MAX) || !within(account.funded, FUNDED_MAX) {
                    return Err(Reason::LimitExceeded);
                }
                plan.effects.push(Effect::Credit { account: signer, amount: *amount, funding: true });
            }
            Operation::SubmitClaim { claim, patient, payer, total, commitment } => {
                self.require_role(patient, &[Role::Patient], Reason::UnknownPatient)?;
                self.require_role(payer, &[Role::Payer], Reason::UnknownActor)?;
                // The service date and codes were checked by the exchange's intake, which made
                // the commitment: the ledger holds neither.
                if *total == 0 || *total > AMOUNT_MAX {
                    return Err(Reason::InvalidField);
                }
                let key = StateKey::Claim(*patient, *claim);
                self.unlocked(&key)?;
                if self.state.claims.contains_key(&(*patient, *claim)) {
                    return Err(Reason::ClaimExists);
                }
                let duplicate_key = *commitment;
                if self.state.claim_keys.contains_key(&duplicate_key) {
                    return Err(Reason::DuplicateClaim);
                }
                plan.effects.push(Effect::PutClaimKey(duplicate_key, *claim));
                plan.effects.push(Effect::PutClaim(
                    *claim,
                    Claim {
                        patient: *patient,
                        provider: signer,
                        payer: *payer,
                        total: *total,
                        duplicate_key,
                        status: ClaimStatus::Submitted,
                        submitted_at: now,
                    },
                ));
            }
            Operation::AdjudicateClaim { claim, patient, decision } => {
                let key = StateKey::Claim(*patient, *claim);
                let current = self.state.claims.get(&(*patient, *claim)).ok_or(Reason::UnknownClaim)?;
                if current.payer != signer {
                    return Err(Reason::NotClaimPayer);
                }
                self.unlocked(&key)?;
                if !matches!(current.status, ClaimStatus::Submitted | ClaimStatus::Pended) {
                    return Err(Reason::ClaimClosed);
                }
                let status = match decision {
                    Adjudication::Approve { amount } if *amount > 0 && *amount <= current.total => {
                        ClaimStatus::Approved { amount: *amount }
                    }
                    Adjudication::Approve { .. } => return Err(Reason::AmountMismatch),
                    Adjudication::Deny { reason } if (1..=DENIAL_REASON_MAX).contains(reason) => {
                        ClaimStatus::Denied { reason: *reason }
                    }
                    Adjudication::Deny { .. } => return Err(Reason::InvalidField),
                    Adjudication::Pend => ClaimStatus::Pended,
                };
                let mut adjudicated = current.clone();
                adjudicated.status = status;
                plan.effects.push(Effect::PutClaim(*claim, adjudicated));
            }
            Operation::PayClaim { claim, patient, provider, amount } => {
                self.check_payment(id, signer, (*claim, patient), provider, *amount, plan)?;
            }
            other => unreachable!("{} is not in the claims family", other.name()),
        }
        Ok(())
    }

    /// A payment's parts on this shard: the claim (on the patient's shard), the payer's debit
    /// and the provider's credit (on their accounts' shards). Each local part is checked; the
    /// lowest refusal code wins, as in the coordinator, so the reason is the same however the
    /// parts are placed.
    fn check_payment(
        &self,
        payment: TxId,
        signer: ActorKey,
        (claim, patient): (u128, &ActorKey),
        provider: &ActorKey,
        amount: u64,
        plan: &mut Plan,
    ) -> Check {
        let mut refusals = Vec::new();
        if self.is_local(patient) {
            match self.check_claim_payment(payment, claim, patient, &signer, provider, amount) {
                Ok(paid) => {
                    plan.effects.push(Effect::PutClaim(claim, paid));
                    plan.locks.push(StateKey::Claim(*patient, claim));
                }
                Err(reason) => refusals.push(reason),
            }
        }
        if self.is_local(&signer) {
            let balance = self.state.accounts.get(&signer).map_or(0, |a| a.balance);
            let reserved = self.reserved.get(&signer).copied().unwrap_or(0);
            if balance.saturating_sub(reserved) < amount {
                refusals.push(Reason::InsufficientFunds);
            } else {
                plan.effects.push(Effect::Debit { account: signer, amount });
                plan.reserve = Some((signer, amount));
            }
        }
        if self.is_local(provider) {
            let balance = self.state.accounts.get(provider).map_or(0, |a| a.balance);
            match self.require_role(provider, &[Role::Provider], Reason::UnknownActor) {
                Ok(()) if balance.checked_add(amount).is_none_or(|b| b > BALANCE_MAX) => {
                    refusals.push(Reason::LimitExceeded)
                }
                Ok(()) => plan.effects.push(Effect::Credit { account: *provider, amount, funding: false }),
                Err(reason) => refusals.push(reason),
            }
        }
        refusals.into_iter().min_by_key(|r| r.code()).map_or(Ok(()), Err)
    }

    /// The claim as paid, if this payment of it is allowed.
    fn check_claim_payment(
        &self,
        payment: TxId,
        claim: u128,
        patient: &ActorKey,
        payer: &ActorKey,
        provider: &ActorKey,
        amount: u64,
    ) -> Check<Claim> {
        let current = self.state.claims.get(&(*patient, claim)).ok_or(Reason::UnknownClaim)?;
        if current.payer != *payer {
            return Err(Reason::NotClaimPayer);
        }
        if current.provider != *provider {
            return Err(Reason::InvalidField);
        }
        self.unlocked(&StateKey::Claim(*patient, claim))?;
        match current.status {
            ClaimStatus::Paid { .. } => Err(Reason::ClaimAlreadyPaid),
            ClaimStatus::Approved { amount: approved } if approved == amount => {
                let mut paid = current.clone();
                paid.status = ClaimStatus::Paid { amount, payment };
                Ok(paid)
            }
            ClaimStatus::Approved { .. } => Err(Reason::AmountMismatch),
            _ => Err(Reason::ClaimNotPayable),
        }
    }
}
