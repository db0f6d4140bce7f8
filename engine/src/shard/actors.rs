//! The rules of registering actors.

use super::*;

impl Shard {
    /// Checks an operation of this family (see `Shard::check`) and adds its effects to `plan`.
    pub(super) fn check_actors(&self, t: &Transaction, plan: &mut Plan) -> Check {
        let signer = t.signer;
        let now = self.now;
        match &t.operation {
            Operation::RegisterActor { actor, role, name } => {
                self.require_signer(&signer, &[Role::Operator])?;
                if name.is_empty() {
                    return Err(Reason::InvalidField);
                }
                let key = StateKey::Actor(*actor);
                self.unlocked(&key)?;
                if self.state.actors.contains_key(actor) {
                    return Err(Reason::ActorExists);
                }
                plan.effects
                    .push(Effect::PutActor(*actor, Actor { role: *role, name: name.clone(), registered_at: now }));
                plan.locks.push(key);
            }
            other => unreachable!("{} is not in the actors family", other.name()),
        }
        Ok(())
    }
}
