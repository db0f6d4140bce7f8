//! The rules of registering actors.

use super::*;

impl Shard {
    /// Checks an operation of this family (see `Shard::check`) and adds its effects to `plan`.
    pub(super) fn check_actors(&self, t: &Transaction, plan: &mut Plan) -> Check {
        let now = self.now;
        match &t.operation {
            Operation::RegisterActor { actor, role, name, prefixes } => {
                if name.is_empty() {
                    return Err(Reason::InvalidField);
                }
                // A manufacturer owns one or more GS1 company prefixes; no one else has any.
                let prefixes_fit = match role {
                    Role::Manufacturer => !prefixes.is_empty() && prefixes.iter().all(|p| valid_gs1_prefix(p)),
                    _ => prefixes.is_empty(),
                };
                if !prefixes_fit {
                    return Err(Reason::InvalidField);
                }
                let key = StateKey::Actor(*actor);
                self.unlocked(&key)?;
                if self.state.actors.contains_key(actor) {
                    return Err(Reason::ActorExists);
                }
                let registered =
                    Actor { role: *role, name: name.clone(), registered_at: now, prefixes: prefixes.clone() };
                plan.effects.push(Effect::PutActor(*actor, registered));
                plan.locks.push(key);
            }
            other => unreachable!("{} is not in the actors family", other.name()),
        }
        Ok(())
    }
}
