//! An EPCIS document's events mapped onto the drug supply chain's operations.
//!
//! - `commissioning` (ADD) commissions each serialized unit (SGTIN) of its epcList, with the
//!   lot and expiry of its instance master data (`ilmd`), by the party at its location.
//! - `shipping` ships each unit to the destination party (owning, else possessing, else the
//!   location's), by the source party; `receiving` takes custody by the party receiving;
//!   `dispensing` and `retail_selling` dispense; `decommissioning` and `destroying` take the
//!   units out of circulation for the reason their disposition gives.
//! - An AggregationEvent packs children into a parent (a case's SGTIN, a pallet's SSCC) or
//!   unpacks them (DELETE): an operation on a parent applies to everything packed in it.
//! - An event with the disposition `recalled` over lot classes (LGTIN) recalls those lots; its
//!   class comes from an extension field `recallClass` (EPCIS has none of its own).
//!
//! A party is a GS1 company: the company prefix of the SGLN or PGLN that names it (a GLN
//! written as a Digital Link or element string, whose prefix length is not shown, names a party
//! by itself). A party that commissions is a manufacturer owning the company prefixes of what it
//! commissions and its own; one that dispenses is a dispenser; any other a distributor. Events
//! of other business steps carry no ledger operation and are counted by step.

use std::collections::{BTreeMap, BTreeSet};

use crate::actors::key_name;
use crate::epcis::{Event, MasterData, Read};
use crate::gs1::{self, Key};
use crate::report::{Place, Rejection};

/// A party's role on the ledger.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum PartyRole {
    Distributor,
    Dispenser,
    Manufacturer,
}

/// A party the document names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlannedParty {
    /// The keystore name of its key (`gs1.party.COMPANY`).
    pub key: String,
    pub role: PartyRole,
    /// A manufacturer's GS1 company prefixes.
    pub prefixes: Vec<String>,
}

/// What happens to a unit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// `expiry` in milliseconds since the epoch: the end of the expiry date (UTC).
    Commission {
        lot: String,
        expiry: u64,
    },
    /// To this party (a key name).
    Ship {
        to: String,
    },
    Receive,
    Dispense,
    /// For this reason (a CBV disposition the ledger knows).
    Decommission {
        reason: String,
    },
}

impl Step {
    pub fn name(&self) -> &'static str {
        match self {
            Step::Commission { .. } => "commission",
            Step::Ship { .. } => "ship",
            Step::Receive => "receive",
            Step::Dispense => "dispense",
            Step::Decommission { .. } => "decommission",
        }
    }
}

/// One operation on one unit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlannedStep {
    /// The event.
    pub place: Place,
    /// The signing party's key name.
    pub signer: String,
    pub gtin: u64,
    pub serial: String,
    pub step: Step,
    /// The event's time, which with the step and the unit identifies the operation.
    pub event_time: String,
    /// Operations of one phase are independent; a phase starts when the one before committed.
    pub phase: usize,
}

/// A lot recall.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlannedRecall {
    pub place: Place,
    pub signer: String,
    pub gtin: u64,
    pub lot: String,
    /// `class-i`, `class-ii` or `class-iii`.
    pub class: String,
    pub event_time: String,
    pub phase: usize,
}

/// A product's master data, kept with its units.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Product {
    pub gtin: u64,
    pub attributes: Vec<(String, String)>,
}

#[derive(Clone, Debug, Default)]
pub struct Plan {
    pub parties: Vec<PlannedParty>,
    pub steps: Vec<PlannedStep>,
    pub recalls: Vec<PlannedRecall>,
    pub products: Vec<Product>,
    /// Events with no ledger operation, by business step.
    pub unmapped: BTreeMap<String, usize>,
    pub rejections: Vec<Rejection>,
}

/// The reasons for decommissioning the ledger knows, as CBV dispositions.
pub const DECOMMISSION_REASONS: &[&str] = &["damaged", "destroyed", "disposed", "expired", "stolen", "recalled"];
/// Recall classes.
pub const RECALL_CLASSES: &[&str] = &["class-i", "class-ii", "class-iii"];

/// Plans what a document's events do.
pub fn plan(read: &Read) -> Plan {
    let mut planner = Planner::default();
    // In the order they happened: a query's results, for one, need not come in that order
    // (the reader checked every time; equal times keep the document's order).
    let mut events: Vec<&Event> = read.events.iter().collect();
    events.sort_by_cached_key(|e| {
        chrono::DateTime::parse_from_rfc3339(&e.event_time).map(|t| t.timestamp_millis()).unwrap_or(0)
    });
    for event in events {
        if let Err(rejection) = planner.event(event) {
            planner.plan.rejections.push(rejection);
        }
    }
    // Reported in the document's order.
    planner.plan.rejections.sort_by_key(|r| match r.place {
        Place::Event { index, .. } => index,
        _ => 0,
    });
    planner.products(&read.master_data);
    let mut plan = planner.plan;
    // A party whose every commissioning was rejected for want of a prefix is no manufacturer.
    plan.parties = planner
        .parties
        .into_iter()
        .map(|(key, (role, prefixes))| {
            let role =
                if role == PartyRole::Manufacturer && prefixes.is_empty() { PartyRole::Distributor } else { role };
            PlannedParty { key, role, prefixes: prefixes.into_iter().collect() }
        })
        .collect();
    plan
}

#[derive(Default)]
struct Planner {
    plan: Plan,
    /// Key name → role and prefixes.
    parties: BTreeMap<String, (PartyRole, BTreeSet<String>)>,
    /// What each parent holds (by the key's element string).
    packed: BTreeMap<String, Vec<Key>>,
    /// The phase after each unit's last operation so far.
    next: BTreeMap<(u64, String), usize>,
    /// The phase after the last recall: later operations come after it.
    barrier: usize,
}

impl Planner {
    fn event(&mut self, event: &Event) -> Result<(), Rejection> {
        let at = |field: &str| Place::Event { index: event.index, field: Some(field.to_owned()) };
        let step = event.biz_step.as_deref().unwrap_or("");
        let action = event.action.as_deref().unwrap_or("");
        let mapped = matches!(
            step,
            "commissioning"
                | "shipping"
                | "receiving"
                | "dispensing"
                | "retail_selling"
                | "decommissioning"
                | "destroying"
        ) && event.kind == "ObjectEvent";
        let recall =
            event.disposition.as_deref() == Some("recalled") && !event.classes.is_empty() && action != "DELETE";
        if !mapped && !recall && event.kind != "AggregationEvent" {
            let step = if step.is_empty() { "no business step" } else { step };
            *self.plan.unmapped.entry(format!("{} {step}", event.kind)).or_default() += 1;
            return Ok(());
        }
        // Identifiers are read only for events with an operation: others may name anything.
        let epcs = event
            .epcs
            .iter()
            .enumerate()
            .map(|(i, epc)| {
                gs1::parse(epc).map_err(|reason| Rejection::new(at(&format!("epcList[{}]", i + 1)), reason))
            })
            .collect::<Result<Vec<Key>, Rejection>>()?;
        if event.kind == "AggregationEvent" {
            let parent = event.parent.as_deref().ok_or_else(|| Rejection::new(at("parentID"), "no parentID"))?;
            let parent = gs1::parse(parent).map_err(|reason| Rejection::new(at("parentID"), reason))?.to_string();
            let held = self.packed.entry(parent).or_default();
            if action == "DELETE" && epcs.is_empty() {
                // A DELETE that names no children unpacks them all.
                held.clear();
            } else if action == "DELETE" {
                // By element string: the same unit may be written as EPC URI or Digital Link.
                let gone: BTreeSet<String> = epcs.iter().map(Key::to_string).collect();
                held.retain(|k| !gone.contains(&k.to_string()));
            } else {
                held.extend(epcs.iter().cloned());
            }
            return Ok(());
        }
        if recall {
            return self.recall(event);
        }
        let planned = match step {
            "commissioning" if action != "DELETE" => {
                // Only serialized trade items are units; a logistic unit is known by what it packs.
                let units: Vec<Key> = epcs.iter().filter(|k| matches!(k, Key::Unit { .. })).cloned().collect();
                if units.is_empty() {
                    *self.plan.unmapped.entry("ObjectEvent commissioning of no serialized unit".into()).or_default() +=
                        1;
                    return Ok(());
                }
                let lot = event
                    .lot
                    .clone()
                    .ok_or_else(|| Rejection::new(at("ilmd.lotNumber"), "a commissioned unit has a lot"))?;
                gs1::check_value(gs1::ai("10").expect("known"), &lot)
                    .map_err(|r| Rejection::new(at("ilmd.lotNumber"), r))?;
                let expiry = event.expiry.as_deref().ok_or_else(|| {
                    Rejection::new(at("ilmd.itemExpirationDate"), "a commissioned unit has an expiry date")
                })?;
                let expiry = end_of_day(expiry).ok_or_else(|| {
                    Rejection::new(at("ilmd.itemExpirationDate"), format!("{expiry:?} is not a date YYYY-MM-DD"))
                })?;
                let signer = self.party(event, Side::Here, PartyRole::Manufacturer)?;
                let owned = &mut self.parties.get_mut(&signer).expect("added").1;
                for key in &epcs {
                    if let Key::Unit { prefix: Some(prefix), .. } = key {
                        owned.insert(prefix.clone());
                    }
                }
                if owned.is_empty() {
                    return Err(Rejection::new(
                        at("bizLocation"),
                        "the manufacturer's GS1 company prefix is not shown: name its location (SGLN) or its units (SGTIN) by EPC URI",
                    ));
                }
                Some((signer, units, Step::Commission { lot, expiry }))
            }
            "shipping" => {
                let signer = self.party(event, Side::Source, PartyRole::Distributor)?;
                let to = self.party(event, Side::Destination, PartyRole::Distributor)?;
                Some((signer, self.expand(&epcs), Step::Ship { to }))
            }
            "receiving" => {
                let signer = self.party(event, Side::Receiver, PartyRole::Distributor)?;
                Some((signer, self.expand(&epcs), Step::Receive))
            }
            "dispensing" | "retail_selling" => {
                let signer = self.party(event, Side::Here, PartyRole::Dispenser)?;
                Some((signer, self.expand(&epcs), Step::Dispense))
            }
            "decommissioning" | "destroying" => {
                let reason = event.disposition.clone().unwrap_or_default();
                if !DECOMMISSION_REASONS.contains(&reason.as_str()) {
                    let known = DECOMMISSION_REASONS.join(", ");
                    return Err(Rejection::new(
                        at("disposition"),
                        format!("{reason:?} is not a reason the ledger knows: {known}"),
                    ));
                }
                let signer = self.party(event, Side::Here, PartyRole::Distributor)?;
                Some((signer, self.expand(&epcs), Step::Decommission { reason }))
            }
            _ => None,
        };
        let Some((signer, units, step)) = planned else {
            *self.plan.unmapped.entry(format!("{} {step} {action}", event.kind)).or_default() += 1;
            return Ok(());
        };
        for key in units {
            let Key::Unit { gtin, serial, .. } = key else { continue };
            let next = self.next.entry((gtin, serial.clone())).or_insert(0);
            let phase = (*next).max(self.barrier);
            *next = phase + 1;
            self.plan.steps.push(PlannedStep {
                place: Place::Event { index: event.index, field: None },
                signer: signer.clone(),
                gtin,
                serial,
                step: step.clone(),
                event_time: event.event_time.clone(),
                phase,
            });
        }
        Ok(())
    }

    fn recall(&mut self, event: &Event) -> Result<(), Rejection> {
        let at = |field: &str| Place::Event { index: event.index, field: Some(field.to_owned()) };
        let class = event.recall_class.clone().unwrap_or_default();
        if !RECALL_CLASSES.contains(&class.as_str()) {
            return Err(Rejection::new(
                at("recallClass"),
                format!("a recall has a class (an extension field recallClass: class-i, class-ii or class-iii), not {class:?}"),
            ));
        }
        let mut lots = Vec::new();
        for (i, class) in event.classes.iter().enumerate() {
            let place = at(&format!("quantityList[{}]", i + 1));
            match gs1::parse(class).map_err(|reason| Rejection::new(place.clone(), reason))? {
                Key::Lot { gtin, lot, .. } => lots.push((gtin, lot)),
                other => return Err(Rejection::new(place, format!("{other} is not a lot: a recall names lots"))),
            }
        }
        let signer = self.party(event, Side::Here, PartyRole::Manufacturer)?;
        let phase = self.next.values().copied().max().unwrap_or(0).max(self.barrier);
        self.barrier = phase + 1;
        for (gtin, lot) in lots {
            let (signer, event_time) = (signer.clone(), event.event_time.clone());
            let place = Place::Event { index: event.index, field: None };
            self.plan.recalls.push(PlannedRecall { place, signer, gtin, lot, class: class.clone(), event_time, phase });
        }
        Ok(())
    }

    /// The units named, with everything packed in them (depth first; a unit named twice counts
    /// once).
    fn expand(&self, keys: &[Key]) -> Vec<Key> {
        let mut out = Vec::new();
        let mut seen = BTreeSet::new();
        let mut stack: Vec<Key> = keys.iter().rev().cloned().collect();
        while let Some(key) = stack.pop() {
            let name = key.to_string();
            if !seen.insert(name.clone()) {
                continue;
            }
            if let Some(children) = self.packed.get(&name) {
                stack.extend(children.iter().rev().cloned());
            }
            out.push(key);
        }
        out
    }

    /// The party on one side of the event, its role raised to at least `role`.
    fn party(&mut self, event: &Event, side: Side, role: PartyRole) -> Result<String, Rejection> {
        let typed =
            |list: &[(String, String)], kind: &str| list.iter().find(|(k, _)| k == kind).map(|(_, id)| id.clone());
        let parties = |list| [typed(list, "owning_party"), typed(list, "possessing_party"), typed(list, "location")];
        let here = [event.biz_location.clone(), event.read_point.clone()];
        let (field, candidates): (&str, Vec<Option<String>>) = match side {
            Side::Source => ("sourceList", parties(&event.sources).into_iter().chain(here).collect()),
            Side::Destination => ("destinationList", parties(&event.destinations).to_vec()),
            Side::Receiver => ("destinationList", parties(&event.destinations).into_iter().chain(here).collect()),
            Side::Here => ("bizLocation", here.to_vec()),
        };
        let id = candidates.into_iter().flatten().next().ok_or_else(|| {
            let place = Place::Event { index: event.index, field: Some(field.to_owned()) };
            Rejection::new(place, format!("the event names no party ({field})"))
        })?;
        let place = Place::Event { index: event.index, field: Some(field.to_owned()) };
        let key = gs1::parse(&id).map_err(|reason| Rejection::new(place.clone(), reason))?;
        let company =
            key.company().ok_or_else(|| Rejection::new(place, format!("{key} is not a party or location")))?;
        let name = key_name("gs1.party", &company);
        let entry = self.parties.entry(name.clone()).or_insert((role, BTreeSet::new()));
        entry.0 = entry.0.max(role);
        if role == PartyRole::Manufacturer {
            if let Key::Party { prefix: Some(prefix), .. } = &key {
                entry.1.insert(prefix.clone());
            }
        }
        Ok(name)
    }

    /// The documents' product master data (EPCClass vocabulary), by GTIN.
    fn products(&mut self, master_data: &[MasterData]) {
        for element in master_data.iter().filter(|m| m.vocabulary == "EPCClass") {
            if let Ok(Key::Product { gtin, .. } | Key::Lot { gtin, .. }) = gs1::parse(&element.id) {
                self.plan.products.push(Product { gtin, attributes: element.attributes.clone() });
            }
        }
    }
}

#[derive(Clone, Copy)]
enum Side {
    /// Where the event happens: its bizLocation, else its readPoint.
    Here,
    Source,
    Destination,
    /// The destination's party if named, else where the event happens.
    Receiver,
}

/// The first millisecond after a date YYYY-MM-DD (a unit is good through its expiry date).
fn end_of_day(date: &str) -> Option<u64> {
    let day = chrono::NaiveDate::parse_from_str(date, "%Y-%m-%d").ok()?;
    let next = day.succ_opt()?.and_hms_opt(0, 0, 0)?.and_utc().timestamp_millis();
    u64::try_from(next).ok()
}
