//! The rules of actors: registering them, revoking them, and changing their roles, all an
//! operator's.

use super::*;

impl Shard {
    /// Checks an operation of this family (see `Shard::check`) and adds its effects to `plan`.
    pub(super) fn check_actors(&self, t: &Transaction, plan: &mut Plan) -> Check {
        let now = self.now;
        match &t.operation {
            Operation::RegisterActor { actor, role, prefixes } => {
                // Operators are added by a quorum of operators (`add-operator`), never by one.
                if *role == Role::Operator {
                    return Err(Reason::InvalidField);
                }
                prefixes_fit(*role, prefixes)?;
                self.register(*actor, *role, prefixes, plan)?;
            }
            Operation::AddOperator { actor, approvals } => {
                self.unlocked(&StateKey::Actor(*actor))?;
                if self.state.actors.contains_key(actor) {
                    return Err(Reason::ActorExists);
                }
                // The signer and each other registered operator whose approval verifies, once.
                let message = crate::model::operator_approval(actor);
                let mut agreed = vec![t.signer];
                for approval in approvals {
                    let operator = self.state.actors.get(&approval.operator);
                    let active = operator.is_some_and(|o| o.role == Role::Operator && o.revoked_at.is_none());
                    if active
                        && !agreed.contains(&approval.operator)
                        && crate::signature::verify_one(&approval.operator, &message, &approval.signature)
                    {
                        agreed.push(approval.operator);
                    }
                }
                if (agreed.len() as u32) < self.operator_quorum {
                    return Err(Reason::QuorumNotMet);
                }
                self.register(*actor, Role::Operator, &[], plan)?;
            }
            Operation::RotateKey { new_key } => {
                // A key that names a registered actor would sign as two.
                if self.state.actors.contains_key(new_key) || new_key == t.verifying_key() {
                    return Err(Reason::InvalidField);
                }
                let mut rotated = self.current_actor(&t.signer, plan)?;
                rotated.key = Some(*new_key);
                plan.effects.push(Effect::PutActor(t.signer, rotated));
            }
            Operation::RevokeActor { actor } => {
                // An operator does not revoke itself: the exchange keeps someone who can act.
                if *actor == t.signer {
                    return Err(Reason::InvalidField);
                }
                let mut revoked = self.current_actor(actor, plan)?;
                revoked.revoked_at = Some(now);
                plan.effects.push(Effect::PutActor(*actor, revoked));
            }
            Operation::ChangeRole { actor, role, prefixes } => {
                // Operators are made and unmade otherwise (a quorum of operators), never by one.
                if *role == Role::Operator {
                    return Err(Reason::InvalidField);
                }
                prefixes_fit(*role, prefixes)?;
                let mut changed = self.current_actor(actor, plan)?;
                if changed.role == Role::Operator {
                    return Err(Reason::InvalidField);
                }
                changed.role = *role;
                changed.prefixes = prefixes.clone();
                plan.effects.push(Effect::PutActor(*actor, changed));
            }
            other => unreachable!("{} is not in the actors family", other.name()),
        }
        Ok(())
    }

    /// Registers a new actor (its key locked for the registration), unless it exists.
    fn register(&self, actor: ActorKey, role: Role, prefixes: &[String], plan: &mut Plan) -> Check {
        let key = StateKey::Actor(actor);
        self.unlocked(&key)?;
        if self.state.actors.contains_key(&actor) {
            return Err(Reason::ActorExists);
        }
        let registered =
            Actor { role, registered_at: self.now, prefixes: prefixes.to_vec(), revoked_at: None, key: None };
        plan.effects.push(Effect::PutActor(actor, registered));
        plan.locks.push(key);
        Ok(())
    }

    /// A registered, unrevoked actor's entry, to change; its key is locked for the change.
    fn current_actor(&self, actor: &ActorKey, plan: &mut Plan) -> Check<Actor> {
        let key = StateKey::Actor(*actor);
        self.unlocked(&key)?;
        let current = self.state.actors.get(actor).ok_or(Reason::UnknownActor)?;
        if current.revoked_at.is_some() {
            return Err(Reason::ActorRevoked);
        }
        plan.locks.push(key);
        Ok(current.clone())
    }
}

/// A manufacturer owns one or more GS1 company prefixes; no one else has any.
fn prefixes_fit(role: Role, prefixes: &[String]) -> Check {
    let fit = match role {
        Role::Manufacturer => !prefixes.is_empty() && prefixes.iter().all(|p| valid_gs1_prefix(p)),
        _ => prefixes.is_empty(),
    };
    if fit {
        Ok(())
    } else {
        Err(Reason::InvalidField)
    }
}
