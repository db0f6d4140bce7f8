//! The rules of the drug supply chain: commissioning, custody (ship, receive), dispensing,
//! decommissioning, and lot recalls.

use super::*;

impl Shard {
    /// Checks an operation of this family (see `Shard::check`) and adds its effects to `plan`.
    pub(super) fn check_supply(&self, t: &Transaction, plan: &mut Plan) -> Check {
        let signer = t.signer;
        let now = self.now;
        match &t.operation {
            Operation::CommissionUnit { unit, lot, expiry } => {
                if unit.serial.is_empty() || lot.is_empty() {
                    return Err(Reason::InvalidField);
                }
                self.require_prefix(&signer, unit.gtin)?;
                // Nothing is commissioned into a recalled lot.
                self.not_recalled(unit.gtin, lot)?;
                if self.state.units.contains_key(unit) {
                    return Err(Reason::UnitExists);
                }
                if *expiry <= now {
                    return Err(Reason::UnitExpired);
                }
                plan.effects.push(Effect::PutUnit(
                    unit.clone(),
                    Unit {
                        lot: lot.clone(),
                        expiry: *expiry,
                        manufacturer: signer,
                        custodian: signer,
                        status: UnitStatus::Active,
                    },
                ));
            }
            Operation::ShipUnit { unit, to } => {
                let current = self.custodied_unit(unit, &signer)?;
                self.require_role(to, &[Role::Manufacturer, Role::Distributor, Role::Dispenser], Reason::UnknownActor)?;
                if *to == signer {
                    return Err(Reason::InvalidField);
                }
                // A recalled unit goes back toward its manufacturer (directly, or by way of a
                // distributor's returns), never forward to a dispenser or another manufacturer.
                let returning = *to == current.manufacturer || self.role(to) == Some(Role::Distributor);
                if !returning {
                    self.not_recalled(unit.gtin, &current.lot)?;
                }
                let mut shipped = current.clone();
                shipped.status = UnitStatus::InTransit { to: *to };
                plan.effects.push(Effect::PutUnit(unit.clone(), shipped));
            }
            Operation::ReceiveUnit { unit } => {
                let current = self.state.units.get(unit).ok_or(Reason::UnknownUnit)?;
                match current.status {
                    UnitStatus::InTransit { to } if to == signer => {}
                    UnitStatus::InTransit { .. } => return Err(Reason::NotAddressee),
                    _ => return Err(Reason::UnitNotActive),
                }
                let mut received = current.clone();
                received.custodian = signer;
                received.status = UnitStatus::Active;
                plan.effects.push(Effect::PutUnit(unit.clone(), received));
            }
            Operation::DispenseUnit { unit, recipient } => {
                // The recipient is a commitment the dispenser's record explains off the ledger:
                // that a patient received this drug is health data.
                let current = self.custodied_unit(unit, &signer)?;
                self.not_recalled(unit.gtin, &current.lot)?;
                if now >= current.expiry {
                    return Err(Reason::UnitExpired);
                }
                let mut dispensed = current.clone();
                dispensed.status = UnitStatus::Dispensed { recipient: *recipient };
                plan.effects.push(Effect::PutUnit(unit.clone(), dispensed));
            }
            Operation::DecommissionUnit { unit, reason } => {
                let current = self.custodied_unit(unit, &signer)?;
                let mut retired = current.clone();
                retired.status = UnitStatus::Decommissioned { reason: *reason };
                plan.effects.push(Effect::PutUnit(unit.clone(), retired));
            }
            Operation::RecallLot { gtin, lot, reason } => {
                if lot.is_empty() {
                    return Err(Reason::InvalidField);
                }
                // A regulator recalls any lot; a manufacturer only its own products'.
                if self.role(&signer) == Some(Role::Manufacturer) {
                    self.require_prefix(&signer, *gtin)?;
                }
                let key = StateKey::Recall(*gtin, lot.clone());
                self.unlocked(&key)?;
                if self.state.recalls.contains_key(&(*gtin, lot.clone())) {
                    return Err(Reason::LotAlreadyRecalled);
                }
                plan.effects.push(Effect::PutRecall(
                    *gtin,
                    lot.clone(),
                    Recall { by: signer, reason: *reason, recalled_at: now },
                ));
                plan.locks.push(key);
            }
            other => unreachable!("{} is not in the supply family", other.name()),
        }
        Ok(())
    }

    /// The manufacturer owns a GS1 company prefix that the GTIN is within.
    fn require_prefix(&self, manufacturer: &ActorKey, gtin: u64) -> Check {
        let owned = self.state.actors.get(manufacturer).map_or(&[][..], |a| &a.prefixes[..]);
        if owned.iter().any(|prefix| gtin_within_prefix(gtin, prefix)) {
            Ok(())
        } else {
            Err(Reason::PrefixNotOwned)
        }
    }

    /// The lot is not recalled (nor being recalled by a cross-shard transaction in flight).
    fn not_recalled(&self, gtin: u64, lot: &str) -> Check {
        self.unlocked(&StateKey::Recall(gtin, lot.to_owned()))?;
        if self.state.recalls.contains_key(&(gtin, lot.to_owned())) {
            return Err(Reason::UnitRecalled);
        }
        Ok(())
    }

    /// A unit the signer holds, active.
    fn custodied_unit(&self, unit: &UnitId, signer: &ActorKey) -> Check<&Unit> {
        let current = self.state.units.get(unit).ok_or(Reason::UnknownUnit)?;
        if current.custodian != *signer {
            return Err(Reason::NotUnitCustodian);
        }
        if current.status != UnitStatus::Active {
            return Err(Reason::UnitNotActive);
        }
        Ok(current)
    }
}
