//! A shard's current state: actors, records, consents, claims, accounts,
//! units and recalls, studies and enrolments, credentials, with the canonical encoding each entry is stored in.
//!
//! This module owns the data and its encoding; the rules that change it live
//! in `shard`.

use std::collections::HashMap;

use crate::codec::{Codec, DecodeError, Decoder, EncodeError, Encoder};
use crate::limits::{CODE_LENGTH_MAX, CONSENTS_PER_GRANTEE_MAX, CONSENT_SCOPE_COUNT_MAX, PREFIXES_PER_ACTOR_MAX};
use crate::model::{
    ActorKey, Disposition, Hash, Purposes, RecallClass, Role, Timestamp, TxId, UnitId, GS1_PREFIX_LENGTH_MAX,
};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Actor {
    pub role: Role,
    pub registered_at: Timestamp,
    /// A manufacturer's GS1 company prefixes; empty for other roles.
    pub prefixes: Vec<String>,
    /// When an operator revoked it: its later transactions are refused; its earlier ones stand.
    pub revoked_at: Option<Timestamp>,
    /// The key it signs with now, after a rotation; `None`: its own (first) key.
    pub key: Option<ActorKey>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    pub patient: ActorKey,
    pub custodian: ActorKey,
    pub resource_type: String,
    pub content_hash: Hash,
    /// Hash of the version this one amends; zero for the first version.
    pub previous_hash: Hash,
    pub version: u32,
    pub updated_at: Timestamp,
    /// When it was erased (`erase-record`): its payload's keys are destroyed.
    pub erased_at: Option<Timestamp>,
    /// The transaction that registered or amended this version: what proves it.
    pub written_by: TxId,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Consent {
    pub patient: ActorKey,
    pub grantee: ActorKey,
    pub scope: Vec<String>,
    pub purposes: Purposes,
    pub valid_from: Timestamp,
    pub valid_until: Timestamp,
    pub revoked_at: Option<Timestamp>,
    /// The transaction that granted it, and the one that revoked it: what proves each.
    pub granted_by: TxId,
    pub revoked_by: Option<TxId>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClaimStatus {
    Submitted,
    Pended,
    Approved {
        amount: u64,
    },
    /// With an X12 Claim Adjustment Reason Code.
    Denied {
        reason: u16,
    },
    Paid {
        amount: u64,
        payment: TxId,
    },
}

impl ClaimStatus {
    pub fn name(&self) -> &'static str {
        match self {
            ClaimStatus::Submitted => "submitted",
            ClaimStatus::Pended => "pended",
            ClaimStatus::Approved { .. } => "approved",
            ClaimStatus::Denied { .. } => "denied",
            ClaimStatus::Paid { .. } => "paid",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Claim {
    pub patient: ActorKey,
    pub provider: ActorKey,
    pub payer: ActorKey,
    pub total: u64,
    pub duplicate_key: Hash,
    pub status: ClaimStatus,
    pub submitted_at: Timestamp,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Account {
    pub balance: u64,
    /// All funding ever deposited into this account.
    pub funded: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UnitStatus {
    Active,
    InTransit {
        to: ActorKey,
    },
    /// To a patient, named only by a keyed commitment (`commitment::recipient_commitment`).
    Dispensed {
        recipient: Hash,
    },
    Decommissioned {
        reason: Disposition,
    },
}

impl UnitStatus {
    pub fn name(&self) -> &'static str {
        match self {
            UnitStatus::Active => "active",
            UnitStatus::InTransit { .. } => "in-transit",
            UnitStatus::Dispensed { .. } => "dispensed",
            UnitStatus::Decommissioned { .. } => "decommissioned",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unit {
    pub lot: String,
    pub expiry: Timestamp,
    pub manufacturer: ActorKey,
    pub custodian: ActorKey,
    pub status: UnitStatus,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Recall {
    pub by: ActorKey,
    pub reason: RecallClass,
    pub recalled_at: Timestamp,
}

/// A clinical study, under the id of the transaction that registered it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Study {
    /// Its principal investigator, who registered it.
    pub investigator: ActorKey,
    /// blake3 of its protocol document.
    pub protocol: Hash,
    pub registered_at: Timestamp,
    /// When its investigator closed it to enrolment.
    pub closed_at: Option<Timestamp>,
}

/// A patient's enrolment in a study.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Enrolment {
    /// The patient's research consent it rests on (the patient's id for it).
    pub consent: u128,
    pub enrolled_at: Timestamp,
    pub withdrawn_at: Option<Timestamp>,
}

/// A credential issued to a provider, under the id of the transaction that issued it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProviderCredential {
    pub issuer: ActorKey,
    /// The provider it was issued to.
    pub subject: ActorKey,
    pub kind: String,
    /// blake3 of the credential document.
    pub document: Hash,
    pub valid_from: Timestamp,
    pub valid_until: Timestamp,
    pub issued_at: Timestamp,
    pub revoked_at: Option<Timestamp>,
}

impl ProviderCredential {
    /// Whether it holds at `now`: unrevoked and within its period.
    pub fn valid_at(&self, now: Timestamp) -> bool {
        self.revoked_at.is_none() && self.valid_from <= now && now < self.valid_until
    }
}

/// The key of one state entry, as stored (after the shard prefix).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum StateKey {
    Actor(ActorKey),
    /// Records, consents and claims are identified by patient and id: an id is the patient's own.
    Record(ActorKey, u128),
    Consent(ActorKey, u128),
    Claim(ActorKey, u128),
    ClaimKey(Hash),
    Account(ActorKey),
    Unit(UnitId),
    Recall(u64, String),
    /// The consents a patient gave one grantee, by id: what the consent check reads.
    ConsentIndex(ActorKey, ActorKey),
    Study(TxId),
    /// A patient's enrolment in a study: patient, then study.
    Enrolment(ActorKey, TxId),
    Credential(TxId),
}

impl StateKey {
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(Self::USUAL_MAX_LEN);
        self.append_to(&mut out);
        out
    }

    /// Room that holds every key but a unit's or a recall's with a serial or lot of more than
    /// 55 characters (the longest fixed key, tag, patient and id, is 49 bytes).
    pub const USUAL_MAX_LEN: usize = 64;

    /// Appends the key's bytes (see `to_bytes`).
    pub fn append_to(&self, out: &mut Vec<u8>) {
        match self {
            StateKey::Actor(key) => {
                out.push(1);
                out.extend_from_slice(&key.0);
            }
            StateKey::Record(patient, id) => {
                out.push(2);
                out.extend_from_slice(&patient.0);
                out.extend_from_slice(&id.to_be_bytes());
            }
            StateKey::Consent(patient, id) => {
                out.push(3);
                out.extend_from_slice(&patient.0);
                out.extend_from_slice(&id.to_be_bytes());
            }
            StateKey::Claim(patient, id) => {
                out.push(4);
                out.extend_from_slice(&patient.0);
                out.extend_from_slice(&id.to_be_bytes());
            }
            StateKey::ClaimKey(hash) => {
                out.push(5);
                out.extend_from_slice(hash);
            }
            StateKey::Account(key) => {
                out.push(6);
                out.extend_from_slice(&key.0);
            }
            StateKey::Unit(unit) => {
                out.push(7);
                out.extend_from_slice(&unit.gtin.to_be_bytes());
                out.extend_from_slice(unit.serial.as_bytes());
            }
            StateKey::Recall(gtin, lot) => {
                out.push(8);
                out.extend_from_slice(&gtin.to_be_bytes());
                out.extend_from_slice(lot.as_bytes());
            }
            StateKey::ConsentIndex(patient, grantee) => {
                out.push(9);
                out.extend_from_slice(&patient.0);
                out.extend_from_slice(&grantee.0);
            }
            StateKey::Study(id) => {
                out.push(10);
                out.extend_from_slice(&id.to_be_bytes());
            }
            StateKey::Enrolment(patient, study) => {
                out.push(11);
                out.extend_from_slice(&patient.0);
                out.extend_from_slice(&study.to_be_bytes());
            }
            StateKey::Credential(id) => {
                out.push(12);
                out.extend_from_slice(&id.to_be_bytes());
            }
        }
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<Self, DecodeError> {
        let (&tag, rest) = bytes.split_first().ok_or(DecodeError::Truncated { offset: 0, needed: 1 })?;
        let fixed = |n: usize| -> Result<&[u8], DecodeError> {
            if rest.len() == n {
                Ok(rest)
            } else {
                Err(DecodeError::Invalid("state key length"))
            }
        };
        let gtin_and_text = || -> Result<(u64, String), DecodeError> {
            if rest.len() < 8 || rest.len() > 8 + CODE_LENGTH_MAX {
                return Err(DecodeError::Invalid("state key length"));
            }
            let text = std::str::from_utf8(&rest[8..]).map_err(|_| DecodeError::Utf8("state key"))?;
            Ok((u64::from_be_bytes(rest[..8].try_into().expect("8")), text.to_owned()))
        };
        Ok(match tag {
            1 => StateKey::Actor(ActorKey(fixed(32)?.try_into().expect("32"))),
            2 => {
                let (patient, id) = patient_and_id(fixed(48)?);
                StateKey::Record(patient, id)
            }
            3 => {
                let (patient, id) = patient_and_id(fixed(48)?);
                StateKey::Consent(patient, id)
            }
            4 => {
                let (patient, id) = patient_and_id(fixed(48)?);
                StateKey::Claim(patient, id)
            }
            5 => StateKey::ClaimKey(fixed(32)?.try_into().expect("32")),
            6 => StateKey::Account(ActorKey(fixed(32)?.try_into().expect("32"))),
            7 => {
                let (gtin, serial) = gtin_and_text()?;
                StateKey::Unit(UnitId { gtin, serial })
            }
            8 => {
                let (gtin, lot) = gtin_and_text()?;
                StateKey::Recall(gtin, lot)
            }
            9 => {
                let both = fixed(64)?;
                StateKey::ConsentIndex(
                    ActorKey(both[..32].try_into().expect("32")),
                    ActorKey(both[32..].try_into().expect("32")),
                )
            }
            10 => StateKey::Study(u128::from_be_bytes(fixed(16)?.try_into().expect("16"))),
            11 => {
                let (patient, study) = patient_and_id(fixed(48)?);
                StateKey::Enrolment(patient, study)
            }
            12 => StateKey::Credential(u128::from_be_bytes(fixed(16)?.try_into().expect("16"))),
            tag => return Err(DecodeError::UnknownTag { field: "state key", tag }),
        })
    }
}

/// A consent index's stored value: its ids, ascending, each with a copy of its consent, so that
/// whoever reads the index has every consent the check needs without reading them one by one.
fn encode_index<'a>(ids: &[u128], consent: impl Fn(u128) -> &'a Consent) -> Result<Vec<u8>, EncodeError> {
    let mut e = Encoder::new();
    e.u32(ids.len() as u32);
    for id in ids {
        e.u128(*id);
        consent(*id).encode_into(&mut e)?;
    }
    Ok(e.bytes)
}

/// A stored consent index of this patient and grantee: ids ascending, each consent theirs.
fn decode_index(patient: &ActorKey, grantee: &ActorKey, bytes: &[u8]) -> Result<Vec<(u128, Consent)>, DecodeError> {
    let mut d = Decoder::new(bytes);
    let count = d.u32()? as usize;
    if count > CONSENTS_PER_GRANTEE_MAX {
        return Err(DecodeError::TooLong { field: "consent index", length: count, limit: CONSENTS_PER_GRANTEE_MAX });
    }
    let entries: Vec<(u128, Consent)> =
        (0..count).map(|_| Ok((d.u128()?, Consent::decode_from(&mut d)?))).collect::<Result<_, DecodeError>>()?;
    d.finish()?;
    if entries.windows(2).any(|pair| pair[0].0 >= pair[1].0) {
        return Err(DecodeError::Invalid("consent index order"));
    }
    if entries.iter().any(|(_, consent)| consent.patient != *patient || consent.grantee != *grantee) {
        return Err(DecodeError::Invalid("consent index entry"));
    }
    Ok(entries)
}

fn patient_and_id(bytes: &[u8]) -> (ActorKey, u128) {
    (ActorKey(bytes[..32].try_into().expect("32")), u128::from_be_bytes(bytes[32..].try_into().expect("16")))
}

fn actor_key(d: &mut Decoder<'_>) -> Result<ActorKey, DecodeError> {
    d.array().map(ActorKey)
}

impl Codec for Actor {
    fn encode_into(&self, e: &mut Encoder) -> Result<(), EncodeError> {
        e.u8(self.role.code());
        e.u64(self.registered_at);
        e.count("prefixes", self.prefixes.len(), PREFIXES_PER_ACTOR_MAX)?;
        for prefix in &self.prefixes {
            e.text("prefix", prefix, GS1_PREFIX_LENGTH_MAX)?;
        }
        optional_time(e, self.revoked_at);
        e.bool(self.key.is_some());
        if let Some(key) = &self.key {
            e.array(&key.0);
        }
        Ok(())
    }
    fn decode_from(d: &mut Decoder<'_>) -> Result<Self, DecodeError> {
        Ok(Self {
            role: Role::from_code(d.u8()?).ok_or(DecodeError::Invalid("role"))?,
            registered_at: d.u64()?,
            prefixes: {
                let count = d.count("prefixes", PREFIXES_PER_ACTOR_MAX)?;
                (0..count).map(|_| d.text("prefix", GS1_PREFIX_LENGTH_MAX)).collect::<Result<_, _>>()?
            },
            revoked_at: decode_optional_time(d, "revoked")?,
            key: if d.bool("key")? { Some(ActorKey(d.array()?)) } else { None },
        })
    }
}

impl Codec for Record {
    fn encode_into(&self, e: &mut Encoder) -> Result<(), EncodeError> {
        e.array(&self.patient.0);
        e.array(&self.custodian.0);
        e.text("resource_type", &self.resource_type, CODE_LENGTH_MAX)?;
        e.array(&self.content_hash);
        e.array(&self.previous_hash);
        e.u32(self.version);
        e.u64(self.updated_at);
        optional_time(e, self.erased_at);
        e.u128(self.written_by);
        Ok(())
    }
    fn decode_from(d: &mut Decoder<'_>) -> Result<Self, DecodeError> {
        Ok(Self {
            patient: actor_key(d)?,
            custodian: actor_key(d)?,
            resource_type: d.text("resource_type", CODE_LENGTH_MAX)?,
            content_hash: d.array()?,
            previous_hash: d.array()?,
            version: d.u32()?,
            updated_at: d.u64()?,
            erased_at: decode_optional_time(d, "erased")?,
            written_by: d.u128()?,
        })
    }
}

impl Codec for Consent {
    fn encode_into(&self, e: &mut Encoder) -> Result<(), EncodeError> {
        e.array(&self.patient.0);
        e.array(&self.grantee.0);
        e.count("scope", self.scope.len(), CONSENT_SCOPE_COUNT_MAX)?;
        for item in &self.scope {
            e.text("scope", item, CODE_LENGTH_MAX)?;
        }
        e.u8(self.purposes.0);
        e.u64(self.valid_from);
        e.u64(self.valid_until);
        e.u128(self.granted_by);
        // Fixed size, revoked or not: a revocation rewrites the entry in place.
        e.bool(self.revoked_at.is_some());
        e.u64(self.revoked_at.unwrap_or(0));
        e.u128(self.revoked_by.unwrap_or(0));
        Ok(())
    }
    fn decode_from(d: &mut Decoder<'_>) -> Result<Self, DecodeError> {
        let patient = actor_key(d)?;
        let grantee = actor_key(d)?;
        let count = d.count("scope", CONSENT_SCOPE_COUNT_MAX)?;
        let scope = (0..count).map(|_| d.text("scope", CODE_LENGTH_MAX)).collect::<Result<_, _>>()?;
        let purposes = Purposes(d.u8()?);
        let valid_from = d.u64()?;
        let valid_until = d.u64()?;
        let granted_by = d.u128()?;
        let revoked = d.bool("revoked")?;
        let revoked_time = d.u64()?;
        let revoked_by = d.u128()?;
        // One encoding per consent: an unrevoked one has neither a revocation time nor its
        // transaction.
        if !revoked && (revoked_time != 0 || revoked_by != 0) {
            return Err(DecodeError::Invalid("revoked"));
        }
        Ok(Self {
            patient,
            grantee,
            scope,
            purposes,
            valid_from,
            valid_until,
            revoked_at: revoked.then_some(revoked_time),
            granted_by,
            revoked_by: revoked.then_some(revoked_by),
        })
    }
}

impl Codec for Claim {
    fn encode_into(&self, e: &mut Encoder) -> Result<(), EncodeError> {
        e.array(&self.patient.0);
        e.array(&self.provider.0);
        e.array(&self.payer.0);
        e.u64(self.total);
        e.array(&self.duplicate_key);
        e.u64(self.submitted_at);
        match &self.status {
            ClaimStatus::Submitted => e.u8(1),
            ClaimStatus::Pended => e.u8(2),
            ClaimStatus::Approved { amount } => {
                e.u8(3);
                e.u64(*amount);
            }
            ClaimStatus::Denied { reason } => {
                e.u8(4);
                e.u16(*reason);
            }
            ClaimStatus::Paid { amount, payment } => {
                e.u8(5);
                e.u64(*amount);
                e.u128(*payment);
            }
        }
        Ok(())
    }
    fn decode_from(d: &mut Decoder<'_>) -> Result<Self, DecodeError> {
        Ok(Self {
            patient: actor_key(d)?,
            provider: actor_key(d)?,
            payer: actor_key(d)?,
            total: d.u64()?,
            duplicate_key: d.array()?,
            submitted_at: d.u64()?,
            status: match d.u8()? {
                1 => ClaimStatus::Submitted,
                2 => ClaimStatus::Pended,
                3 => ClaimStatus::Approved { amount: d.u64()? },
                4 => ClaimStatus::Denied { reason: crate::model::denial_reason_decode(d)? },
                5 => ClaimStatus::Paid { amount: d.u64()?, payment: d.u128()? },
                tag => return Err(DecodeError::UnknownTag { field: "claim status", tag }),
            },
        })
    }
}

impl Codec for Account {
    fn encode_into(&self, e: &mut Encoder) -> Result<(), EncodeError> {
        e.u64(self.balance);
        e.u64(self.funded);
        Ok(())
    }
    fn decode_from(d: &mut Decoder<'_>) -> Result<Self, DecodeError> {
        Ok(Self { balance: d.u64()?, funded: d.u64()? })
    }
}

impl Codec for Unit {
    fn encode_into(&self, e: &mut Encoder) -> Result<(), EncodeError> {
        e.text("lot", &self.lot, CODE_LENGTH_MAX)?;
        e.u64(self.expiry);
        e.array(&self.manufacturer.0);
        e.array(&self.custodian.0);
        match &self.status {
            UnitStatus::Active => e.u8(1),
            UnitStatus::InTransit { to } => {
                e.u8(2);
                e.array(&to.0);
            }
            UnitStatus::Dispensed { recipient } => {
                e.u8(3);
                e.array(recipient);
            }
            UnitStatus::Decommissioned { reason } => {
                e.u8(4);
                e.u8(reason.code());
            }
        }
        Ok(())
    }
    fn decode_from(d: &mut Decoder<'_>) -> Result<Self, DecodeError> {
        Ok(Self {
            lot: d.text("lot", CODE_LENGTH_MAX)?,
            expiry: d.u64()?,
            manufacturer: actor_key(d)?,
            custodian: actor_key(d)?,
            status: match d.u8()? {
                1 => UnitStatus::Active,
                2 => UnitStatus::InTransit { to: actor_key(d)? },
                3 => UnitStatus::Dispensed { recipient: d.array()? },
                4 => UnitStatus::Decommissioned {
                    reason: Disposition::from_code(d.u8()?).ok_or(DecodeError::Invalid("disposition"))?,
                },
                tag => return Err(DecodeError::UnknownTag { field: "unit status", tag }),
            },
        })
    }
}

impl Codec for Study {
    fn encode_into(&self, e: &mut Encoder) -> Result<(), EncodeError> {
        e.array(&self.investigator.0);
        e.array(&self.protocol);
        e.u64(self.registered_at);
        optional_time(e, self.closed_at);
        Ok(())
    }
    fn decode_from(d: &mut Decoder<'_>) -> Result<Self, DecodeError> {
        Ok(Self {
            investigator: actor_key(d)?,
            protocol: d.array()?,
            registered_at: d.u64()?,
            closed_at: decode_optional_time(d, "closed")?,
        })
    }
}

impl Codec for Enrolment {
    fn encode_into(&self, e: &mut Encoder) -> Result<(), EncodeError> {
        e.u128(self.consent);
        e.u64(self.enrolled_at);
        optional_time(e, self.withdrawn_at);
        Ok(())
    }
    fn decode_from(d: &mut Decoder<'_>) -> Result<Self, DecodeError> {
        Ok(Self { consent: d.u128()?, enrolled_at: d.u64()?, withdrawn_at: decode_optional_time(d, "withdrawn")? })
    }
}

impl Codec for ProviderCredential {
    fn encode_into(&self, e: &mut Encoder) -> Result<(), EncodeError> {
        e.array(&self.issuer.0);
        e.array(&self.subject.0);
        e.text("kind", &self.kind, CODE_LENGTH_MAX)?;
        e.array(&self.document);
        e.u64(self.valid_from);
        e.u64(self.valid_until);
        e.u64(self.issued_at);
        optional_time(e, self.revoked_at);
        Ok(())
    }
    fn decode_from(d: &mut Decoder<'_>) -> Result<Self, DecodeError> {
        Ok(Self {
            issuer: actor_key(d)?,
            subject: actor_key(d)?,
            kind: d.text("kind", CODE_LENGTH_MAX)?,
            document: d.array()?,
            valid_from: d.u64()?,
            valid_until: d.u64()?,
            issued_at: d.u64()?,
            revoked_at: decode_optional_time(d, "revoked")?,
        })
    }
}

/// An optional time: a flag, then the time if there is one.
fn optional_time(e: &mut Encoder, time: Option<Timestamp>) {
    e.bool(time.is_some());
    if let Some(time) = time {
        e.u64(time);
    }
}

fn decode_optional_time(d: &mut Decoder<'_>, field: &'static str) -> Result<Option<Timestamp>, DecodeError> {
    Ok(if d.bool(field)? { Some(d.u64()?) } else { None })
}

impl Codec for Recall {
    fn encode_into(&self, e: &mut Encoder) -> Result<(), EncodeError> {
        e.array(&self.by.0);
        e.u8(self.reason.code());
        e.u64(self.recalled_at);
        Ok(())
    }
    fn decode_from(d: &mut Decoder<'_>) -> Result<Self, DecodeError> {
        Ok(Self {
            by: actor_key(d)?,
            reason: RecallClass::from_code(d.u8()?).ok_or(DecodeError::Invalid("recall class"))?,
            recalled_at: d.u64()?,
        })
    }
}

/// The maps of a shard's state: hashed with foldhash, seeded at random per process. Their keys
/// are chosen by clients (record and claim ids, unit serials), so the seed keeps collisions
/// from being planned; SipHash, the standard map's hasher, was a fifth of the time it took to
/// reopen a ledger with 10 million transactions.
pub type Map<K, V> = HashMap<K, V, foldhash::fast::RandomState>;
/// A set hashed as `Map` is, for the same reason.
pub type Set<K> = std::collections::HashSet<K, foldhash::fast::RandomState>;

/// A map of a shard's state, split by key hash into `STATE_MAP_PARTS` maps that grow on their
/// own. One map doubles all at once when it fills, moving every entry under the execute stage's
/// lock, so a round waits for it, and the pause grows with history. A part doubles a 256th of
/// the entries, and the parts fill at different moments. Iteration order is arbitrary, as a hash map's is.
#[derive(Clone)]
pub struct StateMap<K, V> {
    /// Chooses a key's part (seeded apart from the parts' own hashers).
    split: foldhash::fast::RandomState,
    parts: Box<[Map<K, V>]>,
}

/// Parts of a `StateMap`: a power of two (the top bits of the key's hash choose).
pub const STATE_MAP_PARTS: usize = 256;
const _: () = assert!(STATE_MAP_PARTS.is_power_of_two() && STATE_MAP_PARTS <= 256, "a part index fits a byte");

impl<K, V> Default for StateMap<K, V> {
    fn default() -> Self {
        Self { split: Default::default(), parts: (0..STATE_MAP_PARTS).map(|_| Map::default()).collect() }
    }
}

impl<K: Eq + std::hash::Hash, V> StateMap<K, V> {
    fn part(&self, key: &K) -> usize {
        use std::hash::BuildHasher;
        (self.split.hash_one(key) >> (64 - STATE_MAP_PARTS.trailing_zeros())) as usize
    }
    pub fn len(&self) -> usize {
        self.parts.iter().map(Map::len).sum()
    }
    pub fn is_empty(&self) -> bool {
        self.parts.iter().all(Map::is_empty)
    }
    pub fn get(&self, key: &K) -> Option<&V> {
        self.parts[self.part(key)].get(key)
    }
    pub fn get_mut(&mut self, key: &K) -> Option<&mut V> {
        let part = self.part(key);
        self.parts[part].get_mut(key)
    }
    pub fn contains_key(&self, key: &K) -> bool {
        self.parts[self.part(key)].contains_key(key)
    }
    pub fn insert(&mut self, key: K, value: V) -> Option<V> {
        let part = self.part(&key);
        self.parts[part].insert(key, value)
    }
    pub fn remove(&mut self, key: &K) -> Option<V> {
        let part = self.part(key);
        self.parts[part].remove(key)
    }
    pub fn entry(&mut self, key: K) -> std::collections::hash_map::Entry<'_, K, V> {
        let part = self.part(&key);
        self.parts[part].entry(key)
    }
    pub fn iter(&self) -> impl Iterator<Item = (&K, &V)> {
        self.parts.iter().flat_map(Map::iter)
    }
    pub fn keys(&self) -> impl Iterator<Item = &K> {
        self.parts.iter().flat_map(Map::keys)
    }
    pub fn values(&self) -> impl Iterator<Item = &V> {
        self.parts.iter().flat_map(Map::values)
    }
    pub fn retain(&mut self, mut keep: impl FnMut(&K, &mut V) -> bool) {
        for part in self.parts.iter_mut() {
            part.retain(&mut keep);
        }
    }
    /// Removes every entry, keeping the memory.
    pub fn clear(&mut self) {
        for part in self.parts.iter_mut() {
            part.clear();
        }
    }
    pub fn capacity(&self) -> usize {
        self.parts.iter().map(Map::capacity).sum()
    }
    /// Inserts many entries, growing each part once, to exactly what it receives: counted
    /// first, since reserving an even share with some slack doubled the parts whose count
    /// the slack pushed past a power of two.
    pub fn insert_all(&mut self, chunks: Vec<Vec<(K, V)>>) {
        let mut counts = vec![0usize; STATE_MAP_PARTS];
        let parts: Vec<Vec<u8>> = chunks
            .iter()
            .map(|chunk| {
                chunk
                    .iter()
                    .map(|(key, _)| {
                        let part = self.part(key);
                        counts[part] += 1;
                        part as u8
                    })
                    .collect()
            })
            .collect();
        for (part, count) in self.parts.iter_mut().zip(counts) {
            part.reserve(count);
        }
        for (chunk, parts) in chunks.into_iter().zip(parts) {
            for ((key, value), part) in chunk.into_iter().zip(parts) {
                self.parts[usize::from(part)].insert(key, value);
            }
        }
    }
    /// Gives back the memory of entries that eviction dropped, leaving room to double again.
    /// Without it a churned map keeps the buckets of its largest moment (removals leave them in
    /// place), and those moments grow rarer but larger with history: the cache's maps went from
    /// 2^17 to 2^18 buckets a shard between 3M and 10M transactions (each bucket of `records`
    /// is over 200 bytes), so memory grew with history under a fixed limit.
    fn release(&mut self) {
        for part in self.parts.iter_mut() {
            part.shrink_to(part.len() * 2);
        }
    }
}

impl<K: Eq + std::hash::Hash, V> std::ops::Index<&K> for StateMap<K, V> {
    type Output = V;
    fn index(&self, key: &K) -> &V {
        self.get(key).expect("key present in the state map")
    }
}

/// Equal as maps: the same entries, however each map splits them.
impl<K: Eq + std::hash::Hash, V: PartialEq> PartialEq for StateMap<K, V> {
    fn eq(&self, other: &Self) -> bool {
        self.len() == other.len() && self.iter().all(|(key, value)| other.get(key) == Some(value))
    }
}

impl<K: Eq + std::hash::Hash, V: Eq> Eq for StateMap<K, V> {}

impl<K: std::fmt::Debug, V: std::fmt::Debug> std::fmt::Debug for StateMap<K, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map().entries(self.parts.iter().flat_map(Map::iter)).finish()
    }
}

/// A shard's entities. Every map is keyed as in `StateKey`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct State {
    pub actors: StateMap<ActorKey, Actor>,
    pub records: StateMap<(ActorKey, u128), Record>,
    pub consents: StateMap<(ActorKey, u128), Consent>,
    /// Consent ids by patient and grantee, ascending.
    pub consent_index: StateMap<(ActorKey, ActorKey), Vec<u128>>,
    pub claims: StateMap<(ActorKey, u128), Claim>,
    pub claim_keys: StateMap<Hash, u128>,
    pub accounts: StateMap<ActorKey, Account>,
    pub units: StateMap<UnitId, Unit>,
    pub recalls: StateMap<(u64, String), Recall>,
    pub studies: StateMap<TxId, Study>,
    /// Enrolments by patient and study.
    pub enrolments: StateMap<(ActorKey, TxId), Enrolment>,
    pub credentials: StateMap<TxId, ProviderCredential>,
}

impl State {
    /// The stored encoding of one entry, or `None` if it is absent.
    pub fn value(&self, key: &StateKey) -> Option<Vec<u8>> {
        let encoded = match key {
            StateKey::Actor(k) => self.actors.get(k).map(Codec::encode),
            StateKey::Record(p, k) => self.records.get(&(*p, *k)).map(Codec::encode),
            StateKey::Consent(p, k) => self.consents.get(&(*p, *k)).map(Codec::encode),
            StateKey::Claim(p, k) => self.claims.get(&(*p, *k)).map(Codec::encode),
            StateKey::ClaimKey(k) => return self.claim_keys.get(k).map(|id| id.to_le_bytes().to_vec()),
            StateKey::Account(k) => self.accounts.get(k).map(Codec::encode),
            StateKey::Unit(k) => self.units.get(k).map(Codec::encode),
            StateKey::Recall(gtin, lot) => self.recalls.get(&(*gtin, lot.clone())).map(Codec::encode),
            StateKey::ConsentIndex(p, g) => self.consent_index.get(&(*p, *g)).map(|ids| {
                encode_index(ids, |id| self.consents.get(&(*p, id)).expect("a resident index's consents are resident"))
            }),
            StateKey::Study(k) => self.studies.get(k).map(Codec::encode),
            StateKey::Enrolment(p, k) => self.enrolments.get(&(*p, *k)).map(Codec::encode),
            StateKey::Credential(k) => self.credentials.get(k).map(Codec::encode),
        };
        encoded.map(|result| result.expect("state entries are validated before they are stored"))
    }

    /// Whether an entry is in memory (present; its absence is only known for resident families).
    pub fn holds(&self, key: &StateKey) -> bool {
        match key {
            StateKey::Actor(k) => self.actors.contains_key(k),
            StateKey::Record(p, k) => self.records.contains_key(&(*p, *k)),
            StateKey::Consent(p, k) => self.consents.contains_key(&(*p, *k)),
            StateKey::Claim(p, k) => self.claims.contains_key(&(*p, *k)),
            StateKey::ClaimKey(k) => self.claim_keys.contains_key(k),
            StateKey::Account(k) => self.accounts.contains_key(k),
            StateKey::Unit(k) => self.units.contains_key(k),
            StateKey::Recall(gtin, lot) => self.recalls.contains_key(&(*gtin, lot.clone())),
            StateKey::ConsentIndex(p, g) => self.consent_index.contains_key(&(*p, *g)),
            StateKey::Study(k) => self.studies.contains_key(k),
            StateKey::Enrolment(p, k) => self.enrolments.contains_key(&(*p, *k)),
            StateKey::Credential(k) => self.credentials.contains_key(k),
        }
    }

    /// Entries of every family: what the shard stores.
    pub fn len(&self) -> usize {
        self.cached_len() + self.actors.len() + self.accounts.len() + self.recalls.len()
    }

    /// Whether it holds no entry at all.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Entries of the families that grow with history (see `cache`).
    pub fn cached_len(&self) -> usize {
        self.records.len()
            + self.consents.len()
            + self.consent_index.len()
            + self.claims.len()
            + self.claim_keys.len()
            + self.units.len()
            + self.studies.len()
            + self.enrolments.len()
            + self.credentials.len()
    }

    /// Keeps, of the families that grow with history, only the entries in `keep`, and the
    /// consents a kept consent index lists (the consent check reads them all).
    pub fn retain_cached(&mut self, keep: &Set<StateKey>) {
        self.records.retain(|(p, k), _| keep.contains(&StateKey::Record(*p, *k)));
        self.claims.retain(|(p, k), _| keep.contains(&StateKey::Claim(*p, *k)));
        self.claim_keys.retain(|k, _| keep.contains(&StateKey::ClaimKey(*k)));
        self.units.retain(|k, _| keep.contains(&StateKey::Unit(k.clone())));
        self.studies.retain(|k, _| keep.contains(&StateKey::Study(*k)));
        self.enrolments.retain(|(p, k), _| keep.contains(&StateKey::Enrolment(*p, *k)));
        self.credentials.retain(|k, _| keep.contains(&StateKey::Credential(*k)));
        self.consent_index.retain(|(p, g), _| keep.contains(&StateKey::ConsentIndex(*p, *g)));
        let index = &self.consent_index;
        self.consents.retain(|(p, k), consent| {
            keep.contains(&StateKey::Consent(*p, *k))
                || index.get(&(*p, consent.grantee)).is_some_and(|ids| ids.binary_search(k).is_ok())
        });
        self.records.release();
        self.claims.release();
        self.claim_keys.release();
        self.units.release();
        self.studies.release();
        self.enrolments.release();
        self.credentials.release();
        self.consent_index.release();
        self.consents.release();
    }

    /// Adds one stored entry (on load, or when the cache reads it).
    pub fn insert(&mut self, key: StateKey, value: &[u8]) -> Result<(), DecodeError> {
        match key {
            StateKey::Actor(k) => {
                self.actors.insert(k, Actor::decode(value)?);
            }
            StateKey::Record(p, k) => {
                self.records.insert((p, k), Record::decode(value)?);
            }
            StateKey::Consent(p, k) => {
                self.consents.insert((p, k), decode_consent(&p, value)?);
            }
            StateKey::ConsentIndex(p, g) => {
                let entries = decode_index(&p, &g, value)?;
                self.consent_index.insert((p, g), entries.iter().map(|(id, _)| *id).collect());
                // A resident consent is never older than storage's copy (storage lags memory).
                for (id, consent) in entries {
                    if !self.consents.contains_key(&(p, id)) {
                        self.consents.insert((p, id), consent);
                    }
                }
            }
            StateKey::Claim(p, k) => {
                self.claims.insert((p, k), Claim::decode(value)?);
            }
            StateKey::ClaimKey(k) => {
                self.claim_keys.insert(k, decode_claim_id(value)?);
            }
            StateKey::Account(k) => {
                self.accounts.insert(k, Account::decode(value)?);
            }
            StateKey::Unit(k) => {
                self.units.insert(k, Unit::decode(value)?);
            }
            StateKey::Recall(gtin, lot) => {
                self.recalls.insert((gtin, lot), Recall::decode(value)?);
            }
            StateKey::Study(k) => {
                self.studies.insert(k, Study::decode(value)?);
            }
            StateKey::Enrolment(p, k) => {
                self.enrolments.insert((p, k), Enrolment::decode(value)?);
            }
            StateKey::Credential(k) => {
                self.credentials.insert(k, ProviderCredential::decode(value)?);
            }
        }
        Ok(())
    }

    /// Every entry as stored, sorted by key: the canonical form the state hash covers.
    pub fn entries(&self) -> Vec<(Vec<u8>, Vec<u8>)> {
        let mut keys: Vec<StateKey> = Vec::new();
        keys.extend(self.actors.keys().copied().map(StateKey::Actor));
        keys.extend(self.records.keys().map(|(p, k)| StateKey::Record(*p, *k)));
        keys.extend(self.consents.keys().map(|(p, k)| StateKey::Consent(*p, *k)));
        keys.extend(self.claims.keys().map(|(p, k)| StateKey::Claim(*p, *k)));
        keys.extend(self.claim_keys.keys().copied().map(StateKey::ClaimKey));
        keys.extend(self.accounts.keys().copied().map(StateKey::Account));
        keys.extend(self.units.keys().cloned().map(StateKey::Unit));
        keys.extend(self.recalls.keys().map(|(g, l)| StateKey::Recall(*g, l.clone())));
        keys.extend(self.consent_index.keys().map(|(p, g)| StateKey::ConsentIndex(*p, *g)));
        keys.extend(self.studies.keys().copied().map(StateKey::Study));
        keys.extend(self.enrolments.keys().map(|(p, k)| StateKey::Enrolment(*p, *k)));
        keys.extend(self.credentials.keys().copied().map(StateKey::Credential));
        let mut entries: Vec<(Vec<u8>, Vec<u8>)> =
            keys.iter().map(|k| (k.to_bytes(), self.value(k).expect("listed keys exist"))).collect();
        entries.sort_unstable();
        entries
    }

    /// blake3 over the canonical entries.
    pub fn hash(&self) -> Hash {
        let mut hasher = blake3::Hasher::new();
        for (key, value) in self.entries() {
            hash_entry(&mut hasher, &key, &value);
        }
        *hasher.finalize().as_bytes()
    }
}

/// Adds one entry (its key after the shard's state prefix, and its stored value) to a state
/// hash; entries go in key order.
pub fn hash_entry(hasher: &mut blake3::Hasher, key: &[u8], value: &[u8]) {
    hasher.update(&(key.len() as u32).to_le_bytes());
    hasher.update(key);
    hasher.update(&(value.len() as u32).to_le_bytes());
    hasher.update(value);
}

/// A stored consent, checked to belong to the patient its key names.
fn decode_consent(patient: &ActorKey, value: &[u8]) -> Result<Consent, DecodeError> {
    let consent = Consent::decode(value)?;
    if consent.patient != *patient {
        return Err(DecodeError::Invalid("consent patient"));
    }
    Ok(consent)
}

fn decode_claim_id(value: &[u8]) -> Result<u128, DecodeError> {
    let id: [u8; 16] = value.try_into().map_err(|_| DecodeError::Invalid("claim key value"))?;
    Ok(u128::from_le_bytes(id))
}

/// Builds a shard's state from its stored entries (on open).
///
/// Storage hands the entries over in key order, so each family's arrive together. The large
/// families are gathered and put in their map at once, sized for all of them: inserted one by
/// one, a map doubled again and again and moved every entry each time, which was half of the
/// time it took to reopen a ledger with 10 million transactions.
#[derive(Default)]
pub struct StateLoader {
    state: State,
    /// The family (leading key byte) of the last entry.
    family: Option<u8>,
    records: Pending<(ActorKey, u128), Record>,
    consents: Pending<(ActorKey, u128), Consent>,
    claims: Pending<(ActorKey, u128), Claim>,
    claim_keys: Pending<Hash, u128>,
    units: Pending<UnitId, Unit>,
    studies: Pending<TxId, Study>,
    enrolments: Pending<(ActorKey, TxId), Enrolment>,
    credentials: Pending<TxId, ProviderCredential>,
}

impl StateLoader {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds one stored entry.
    pub fn insert(&mut self, key: &[u8], value: &[u8]) -> Result<(), DecodeError> {
        if self.family != key.first().copied() {
            self.flush();
            self.family = key.first().copied();
        }
        match StateKey::from_bytes(key)? {
            StateKey::Record(p, k) => self.records.push(((p, k), Record::decode(value)?)),
            StateKey::Consent(p, k) => self.consents.push(((p, k), decode_consent(&p, value)?)),
            StateKey::Claim(p, k) => self.claims.push(((p, k), Claim::decode(value)?)),
            StateKey::ClaimKey(k) => self.claim_keys.push((k, decode_claim_id(value)?)),
            StateKey::Unit(k) => self.units.push((k, Unit::decode(value)?)),
            StateKey::Study(k) => self.studies.push((k, Study::decode(value)?)),
            StateKey::Enrolment(p, k) => self.enrolments.push(((p, k), Enrolment::decode(value)?)),
            StateKey::Credential(k) => self.credentials.push((k, ProviderCredential::decode(value)?)),
            key @ (StateKey::Actor(_) | StateKey::Account(_) | StateKey::Recall(..) | StateKey::ConsentIndex(..)) => {
                self.state.insert(key, value)?
            }
        }
        Ok(())
    }

    fn flush(&mut self) {
        self.records.drain_into(&mut self.state.records);
        self.consents.drain_into(&mut self.state.consents);
        self.claims.drain_into(&mut self.state.claims);
        self.claim_keys.drain_into(&mut self.state.claim_keys);
        self.units.drain_into(&mut self.state.units);
        self.studies.drain_into(&mut self.state.studies);
        self.enrolments.drain_into(&mut self.state.enrolments);
        self.credentials.drain_into(&mut self.state.credentials);
    }

    /// The state of every entry added.
    pub fn finish(mut self) -> State {
        self.flush();
        self.state
    }
}

/// Entries gathered for one map, in fixed-size chunks: a single growing vector would copy them
/// all at every doubling.
struct Pending<K, V> {
    chunks: Vec<Vec<(K, V)>>,
}

impl<K, V> Default for Pending<K, V> {
    fn default() -> Self {
        Self { chunks: Vec::new() }
    }
}

impl<K: Eq + std::hash::Hash, V> Pending<K, V> {
    const CHUNK: usize = 4096;

    fn push(&mut self, entry: (K, V)) {
        match self.chunks.last_mut() {
            Some(chunk) if chunk.len() < Self::CHUNK => chunk.push(entry),
            _ => {
                let mut chunk = Vec::with_capacity(Self::CHUNK);
                chunk.push(entry);
                self.chunks.push(chunk);
            }
        }
    }

    /// Moves the gathered entries into `map`, each part grown once for exactly its entries.
    fn drain_into(&mut self, map: &mut StateMap<K, V>) {
        map.insert_all(std::mem::take(&mut self.chunks));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(patient: ActorKey) -> Record {
        Record {
            patient,
            custodian: ActorKey([2; 32]),
            resource_type: "Observation".to_owned(),
            content_hash: [3; 32],
            previous_hash: [0; 32],
            version: 1,
            updated_at: 0,
            erased_at: None,
            written_by: 5,
        }
    }

    #[test]
    fn eviction_gives_back_the_memory_of_the_entries_it_drops() {
        let patient = ActorKey([1; 32]);
        let mut state = State::default();
        for id in 0..50_000u128 {
            state.records.insert((patient, id), record(patient));
        }
        let keep: Set<StateKey> = (0..10u128).map(|id| StateKey::Record(patient, id)).collect();
        state.retain_cached(&keep);
        assert_eq!(state.records.len(), 10);
        assert!((0..10u128).all(|id| state.records.contains_key(&(patient, id))));
        // Room for the kept entries to double, not for the 50,000 there were.
        assert!(state.records.capacity() < 100, "capacity {} after eviction", state.records.capacity());
    }

    #[test]
    fn a_stored_consent_index_brings_its_consents_and_never_overwrites_newer_ones() {
        let (patient, grantee) = (ActorKey([1; 32]), ActorKey([4; 32]));
        let consent = |valid_until| Consent {
            patient,
            grantee,
            scope: vec!["Observation".to_owned()],
            purposes: Purposes(1),
            valid_from: 0,
            valid_until,
            revoked_at: None,
            granted_by: 8,
            revoked_by: None,
        };
        let mut written = State::default();
        written.consents.insert((patient, 7), consent(100));
        written.consents.insert((patient, 9), consent(200));
        written.consent_index.insert((patient, grantee), vec![7, 9]);
        let index = StateKey::ConsentIndex(patient, grantee);
        let stored = written.value(&index).unwrap();

        // Read into a state that holds a newer copy of consent 9 (revoked, not yet durable).
        let mut read = State::default();
        let mut revoked = consent(200);
        revoked.revoked_at = Some(50);
        revoked.revoked_by = Some(51);
        read.consents.insert((patient, 9), revoked.clone());
        read.insert(index.clone(), &stored).unwrap();
        assert_eq!(read.consent_index.get(&(patient, grantee)), Some(&vec![7, 9]));
        assert_eq!(read.consents.get(&(patient, 7)), Some(&consent(100)));
        assert_eq!(read.consents.get(&(patient, 9)), Some(&revoked));

        // An index stored under another grantee's key is refused, not loaded.
        let elsewhere = StateKey::ConsentIndex(patient, ActorKey([5; 32]));
        assert!(State::default().insert(elsewhere, &stored).is_err());
    }

    /// The operations a shard applies, on a split map and on one `HashMap`: same answers, and
    /// two split maps with the same entries are equal however each splits them.
    #[derive(Clone, Debug)]
    enum Step {
        Insert(u16, u32),
        Remove(u16),
        AddTo(u16, u32),
        Retain(u16),
    }

    fn step() -> impl proptest::strategy::Strategy<Value = Step> {
        use proptest::prelude::*;
        prop_oneof![
            4 => (0u16..2000, any::<u32>()).prop_map(|(k, v)| Step::Insert(k, v)),
            1 => (0u16..2000).prop_map(Step::Remove),
            1 => (0u16..2000, any::<u32>()).prop_map(|(k, v)| Step::AddTo(k, v)),
            1 => (1u16..8).prop_map(Step::Retain),
        ]
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]
        #[test]
        fn a_split_map_answers_as_one_map_does(steps in proptest::collection::vec(step(), 0..3000)) {
            let mut split: StateMap<u16, u32> = StateMap::default();
            let mut other: StateMap<u16, u32> = StateMap::default();
            let mut one: HashMap<u16, u32> = HashMap::new();
            for step in steps {
                match step {
                    Step::Insert(k, v) => proptest::prop_assert_eq!(split.insert(k, v), one.insert(k, v)),
                    Step::Remove(k) => proptest::prop_assert_eq!(split.remove(&k), one.remove(&k)),
                    Step::AddTo(k, v) => {
                        *split.entry(k).or_default() ^= v;
                        *one.entry(k).or_default() ^= v;
                    }
                    Step::Retain(m) => {
                        split.retain(|k, v| (*k ^ *v as u16) % m != 0);
                        one.retain(|k, v| (*k ^ *v as u16) % m != 0);
                    }
                }
            }
            proptest::prop_assert_eq!(split.len(), one.len());
            for (k, v) in &one {
                proptest::prop_assert_eq!(split.get(k), Some(v));
                proptest::prop_assert!(split.contains_key(k));
            }
            let mut listed: Vec<(u16, u32)> = split.iter().map(|(k, v)| (*k, *v)).collect();
            listed.sort_unstable();
            let mut expected: Vec<(u16, u32)> = one.iter().map(|(k, v)| (*k, *v)).collect();
            expected.sort_unstable();
            proptest::prop_assert_eq!(&listed, &expected);
            for &(k, v) in expected.iter().rev() {
                other.insert(k, v);
            }
            proptest::prop_assert!(split == other);
            other.insert(u16::MAX, 0);
            proptest::prop_assert!(split != other);
        }
    }
}
