//! The transaction model: actors and roles, the operations of the three
//! families (records, claims, supply chain), the signed envelope, and results.
//!
//! This module owns what a transaction *is* and how it is encoded; it never
//! decides whether one is allowed (that is `shard`).

use std::fmt;
use std::sync::Arc;

use crate::codec::{Codec, DecodeError, Decoder, EncodeError, Encoder};
use crate::limits::{
    AMOUNT_MAX, APPROVALS_MAX, CODE_LENGTH_MAX, CONSENT_SCOPE_COUNT_MAX, PREFIXES_PER_ACTOR_MAX, TRANSACTION_SIZE_MAX,
};

/// Longest GS1 company prefix, in digits (and shortest: `GS1_PREFIX_LENGTH_MIN`).
pub const GS1_PREFIX_LENGTH_MAX: usize = 12;
/// Shortest GS1 company prefix, in digits.
pub const GS1_PREFIX_LENGTH_MIN: usize = 6;

/// Whether a GS1 company prefix is well formed: 6 to 12 ASCII digits.
pub fn valid_gs1_prefix(prefix: &str) -> bool {
    (GS1_PREFIX_LENGTH_MIN..=GS1_PREFIX_LENGTH_MAX).contains(&prefix.len())
        && prefix.bytes().all(|b| b.is_ascii_digit())
}

/// Whether a GTIN-14 is within a GS1 company prefix: the digits after its indicator digit begin
/// with the prefix.
pub fn gtin_within_prefix(gtin: u64, prefix: &str) -> bool {
    format!("{gtin:014}").get(1..).is_some_and(|digits| digits.starts_with(prefix))
}

/// Whether a code (a credential's kind) is one: 1 to `CODE_LENGTH_MAX` ASCII letters, digits,
/// '-', '.', '_' or ':' (never free text, nor a character a terminal would act on).
pub fn valid_code(code: &str) -> bool {
    (1..=CODE_LENGTH_MAX).contains(&code.len())
        && code.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._:".contains(&b))
}

/// A blake3 digest.
pub type Hash = [u8; 32];
/// Milliseconds since the Unix epoch.
pub type Timestamp = u64;
/// A transaction's id on the ledger: derived from its signer and the signer's own number for it
/// (`Transaction::nonce`, see `transaction_id`), so no one can take an id that another signer's
/// transaction will need. A resubmission of the same signed body gets the first result; a
/// different body under the same id is refused as a conflict.
pub type TxId = u128;

/// The ledger id of the transaction a signer numbers `nonce`: the first 16 bytes of a
/// domain-separated blake3 of the signer's key and the number.
pub fn transaction_id(signer: &ActorKey, nonce: u128) -> TxId {
    let mut input = [0u8; 16 + 32 + 16];
    input[..16].copy_from_slice(b"caduceus.tx-id.1");
    input[16..48].copy_from_slice(&signer.0);
    input[48..].copy_from_slice(&nonce.to_le_bytes());
    let hash = blake3::hash(&input);
    u128::from_le_bytes(hash.as_bytes()[..16].try_into().expect("16 bytes"))
}

/// The encoding version this build writes and reads (2: a transaction names the key that
/// signed it when that is not its signer's first key).
pub const ENCODING_VERSION: u8 = 3;
/// Length of an ed25519 signature.
pub const SIGNATURE_LENGTH: usize = 64;

/// An actor's identity: its ed25519 public key.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct ActorKey(pub [u8; 32]);

impl ActorKey {
    /// The key as 64 hex digits.
    pub fn to_hex(&self) -> String {
        hex(&self.0)
    }
    /// A key from 64 hex digits, if they are.
    pub fn from_hex(text: &str) -> Option<Self> {
        let bytes = unhex(text)?;
        Some(Self(bytes.try_into().ok()?))
    }
}

impl fmt::Debug for ActorKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ActorKey({})", &self.to_hex()[..16])
    }
}

impl fmt::Display for ActorKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

/// Lower-case hex of a byte string.
pub fn hex(bytes: &[u8]) -> String {
    use fmt::Write;
    let mut out = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        let _ = write!(out, "{byte:02x}");
    }
    out
}

/// Bytes of a hex string, or `None` if it is not hex.
pub fn unhex(text: &str) -> Option<Vec<u8>> {
    if text.len() % 2 != 0 {
        return None;
    }
    (0..text.len()).step_by(2).map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok()).collect()
}

macro_rules! code_enum {
    ($(#[$meta:meta])* $name:ident : $repr:ty { $($(#[$vmeta:meta])* $variant:ident = $value:literal => $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        #[repr($repr)]
        pub enum $name { $($(#[$vmeta])* $variant = $value),+ }

        impl $name {
            /// Every value, in code order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];
            /// The stored and wire code.
            pub fn code(self) -> $repr {
                self as $repr
            }
            /// The value with this code, if any.
            pub fn from_code(code: $repr) -> Option<Self> {
                match code { $($value => Some($name::$variant),)+ _ => None }
            }
            /// The name shown in reports and logs.
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }
            /// The value with this name, if any.
            pub fn parse(text: &str) -> Option<Self> {
                Self::ALL.iter().copied().find(|v| v.as_str() == text)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

code_enum! {
    /// What an actor may do; each operation names the roles that may sign it.
    Role: u8 {
        /// A person whose records, consents and claims the ledger holds.
        Patient = 1 => "patient",
        /// A care provider: registers and reads records, submits claims.
        Provider = 2 => "provider",
        /// An insurer: funds its account, adjudicates and pays claims.
        Payer = 3 => "payer",
        /// Commissions serialized units and recalls lots.
        Manufacturer = 4 => "manufacturer",
        /// Ships and receives units between manufacturers and dispensers.
        Distributor = 5 => "distributor",
        /// A pharmacy: receives units and dispenses them to patients.
        Dispenser = 6 => "dispenser",
        /// May read records for oversight and recall lots.
        Regulator = 7 => "regulator",
        /// Runs the exchange: registers actors.
        Operator = 8 => "operator",
        /// Reads everything, for oversight; signs nothing but its own key's rotation.
        Auditor = 9 => "auditor",
        /// A credentialing body (a licensing board, a continuing-education accreditor): issues
        /// and revokes providers' credentials.
        Issuer = 10 => "issuer",
    }
}

code_enum! {
    /// Purpose of use, after HL7 v3 PurposeOfUse.
    Purpose: u8 {
        /// Care of the patient.
        Treatment = 0 => "treatment",
        /// Billing and payment for care.
        Payment = 1 => "payment",
        /// The provider's or payer's own health care operations.
        Operations = 2 => "operations",
        /// Research, with the patient's consent.
        Research = 3 => "research",
        /// Public health reporting.
        PublicHealth = 4 => "public-health",
        /// At the patient's own request.
        PatientRequest = 5 => "patient-request",
    }
}

code_enum! {
    /// Why a provider broke the glass: a code, never free text (the ledger holds no health data).
    EmergencyReason: u8 {
        /// The patient cannot consent (unconscious, or unable to communicate).
        Unresponsive = 1 => "unresponsive",
        /// A threat to life or limb that cannot wait for consent.
        LifeThreatening = 2 => "life-threatening",
        /// Urgent care where the consenting grantee is unavailable.
        UrgentCare = 3 => "urgent-care",
    }
}

code_enum! {
    /// Why a unit leaves circulation, after the GS1 Core Business Vocabulary's dispositions.
    Disposition: u8 {
        /// Damaged beyond use.
        Damaged = 1 => "damaged",
        /// Destroyed.
        Destroyed = 2 => "destroyed",
        /// Disposed of as waste.
        Disposed = 3 => "disposed",
        /// Past its expiry.
        Expired = 4 => "expired",
        /// Stolen (reported by its last custodian).
        Stolen = 5 => "stolen",
        /// Taken back under a recall.
        Recalled = 6 => "recalled",
    }
}

code_enum! {
    /// A recall's class, after the FDA's classification.
    RecallClass: u8 {
        /// A reasonable probability of serious harm or death.
        ClassI = 1 => "class-i",
        /// Temporary or reversible harm.
        ClassII = 2 => "class-ii",
        /// Unlikely to cause harm.
        ClassIII = 3 => "class-iii",
    }
}

/// The highest X12 Claim Adjustment Reason Code a denial may carry.
pub const DENIAL_REASON_MAX: u16 = 999;

/// A set of purposes, one bit per `Purpose`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Purposes(pub u8);

impl Purposes {
    /// The set of these purposes.
    pub fn of(purposes: &[Purpose]) -> Self {
        Self(purposes.iter().fold(0, |bits, p| bits | (1 << p.code())))
    }
    /// Whether the set holds `purpose`.
    pub fn contains(self, purpose: Purpose) -> bool {
        self.0 & (1 << purpose.code()) != 0
    }
    fn is_valid(self) -> bool {
        self.0 != 0 && self.0 >> Purpose::ALL.len() == 0
    }
}

/// A serialized unit of a drug product: GTIN (AI 01) and serial (AI 21).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UnitId {
    /// The product's GTIN-14, as a number.
    pub gtin: u64,
    /// The serial number.
    pub serial: String,
}

impl UnitId {
    /// The unit as a GS1 element string: `(01)GTIN(21)SERIAL`.
    pub fn element_string(&self) -> String {
        format!("(01){:014}(21){}", self.gtin, self.serial)
    }
}

impl fmt::Display for UnitId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.element_string())
    }
}

/// One service line of a claim. Never on the ledger: its codes enter only through a claim's
/// keyed commitment (`commitment::claim_commitment`), and the claim itself travels as an
/// encrypted payload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClaimLine {
    /// Procedure code (CPT/HCPCS).
    pub procedure: String,
    /// Diagnosis code (ICD-10 or ICD-9).
    pub diagnosis: String,
    /// Charged amount, in cents.
    pub amount: u64,
}

/// A payer's decision on a claim.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Adjudication {
    /// Approved for this amount, in cents (at most the claim's total).
    Approve {
        /// In cents.
        amount: u64,
    },
    /// Denied, with the payer's reason.
    Deny {
        /// Why: an X12 Claim Adjustment Reason Code (1 to `DENIAL_REASON_MAX`), never free text.
        reason: u16,
    },
    /// Held for more information.
    Pend,
}

/// What a transaction does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Operation {
    /// An operator registers an actor with a role. Applies on every shard.
    RegisterActor {
        /// The actor's key.
        actor: ActorKey,
        /// What it may do.
        role: Role,
        /// A manufacturer's GS1 company prefixes (6 to 12 digits each): it commissions and
        /// recalls only GTINs within them. Empty for every other role.
        prefixes: Vec<String>,
    },

    /// A provider (the custodian) registers a record by the hash of its off-ledger payload.
    /// Record, consent and claim ids are the patient's own: they need only be unique per patient.
    RegisterRecord {
        /// The record's id, unique per patient.
        record: u128,
        /// Whose record it is.
        patient: ActorKey,
        /// blake3 of the payload, which lives off the ledger.
        content_hash: Hash,
        /// The kind of record, such as a FHIR resource type.
        resource_type: String,
    },
    /// The custodian registers a new version of a record.
    AmendRecord {
        /// The record's id.
        record: u128,
        /// Whose record it is.
        patient: ActorKey,
        /// blake3 of the new version's payload.
        content_hash: Hash,
    },
    /// A patient grants a grantee access to records of some types, for some purposes, for a period.
    GrantConsent {
        /// The consent's id, unique per patient.
        consent: u128,
        /// The patient granting it (the signer).
        patient: ActorKey,
        /// Who may read.
        grantee: ActorKey,
        /// The record types it covers; empty covers every type.
        scope: Vec<String>,
        /// The purposes of use it covers.
        purposes: Purposes,
        /// When it starts.
        valid_from: Timestamp,
        /// When it ends (exclusive).
        valid_until: Timestamp,
    },
    /// A patient revokes a consent.
    RevokeConsent {
        /// The consent's id.
        consent: u128,
        /// The patient who gave it (the signer).
        patient: ActorKey,
    },
    /// An actor reads a record; checked against consent at commit time and logged either way.
    AccessRecord {
        /// The record's id.
        record: u128,
        /// Whose record it is.
        patient: ActorKey,
        /// Why it is read.
        purpose: Purpose,
    },
    /// The patient (or an operator, on a legal order) erases a record: the ledger marks it
    /// erased and the payload store destroys its data keys (crypto-shredding). The entries
    /// about it stay, and every chain and proof still checks; nobody can read it again.
    EraseRecord {
        /// The record's id.
        record: u128,
        /// Whose record it is.
        patient: ActorKey,
    },
    /// An auditor's read, logged before it is answered: the read's digest (blake3 of the request
    /// it makes), and whose data it reads, if one actor's (shown in that actor's access report).
    AuditRead {
        /// blake3 of the read request.
        read: Hash,
        /// The actor whose data the read reveals, if one.
        subject: Option<ActorKey>,
    },
    /// A provider reads a record without consent in an emergency; permitted, logged and flagged.
    EmergencyAccess {
        /// The record's id.
        record: u128,
        /// Whose record it is.
        patient: ActorKey,
        /// Why, for the review every break-glass access gets.
        reason: EmergencyReason,
    },

    /// A payer adds funds to its own account.
    FundAccount {
        /// In cents.
        amount: u64,
    },
    /// A provider submits a claim against a payer.
    SubmitClaim {
        /// The claim's id, unique per patient.
        claim: u128,
        /// The patient served.
        patient: ActorKey,
        /// Who is billed.
        payer: ActorKey,
        /// What is billed, in cents: the sum of the service lines' charges.
        total: u64,
        /// The keyed commitment to patient, provider, service date and codes under the
        /// exchange's secret (`commitment::claim_commitment`): what the duplicate check compares.
        /// The date and codes themselves are never on the ledger.
        commitment: Hash,
    },
    /// The claim's payer approves, denies or pends it.
    AdjudicateClaim {
        /// The claim's id.
        claim: u128,
        /// The claim's patient.
        patient: ActorKey,
        /// The decision.
        decision: Adjudication,
    },
    /// The claim's payer pays the approved amount to the provider's account, exactly once.
    PayClaim {
        /// The claim's id.
        claim: u128,
        /// The claim's patient.
        patient: ActorKey,
        /// Whose account is credited: the claim's provider.
        provider: ActorKey,
        /// In cents: the approved amount.
        amount: u64,
    },

    /// A manufacturer commissions a serialized unit; it becomes the custodian.
    CommissionUnit {
        /// GTIN and serial.
        unit: UnitId,
        /// The lot (batch) it belongs to.
        lot: String,
        /// When it expires.
        expiry: Timestamp,
    },
    /// The custodian ships a unit to another actor.
    ShipUnit {
        /// The unit.
        unit: UnitId,
        /// The addressee.
        to: ActorKey,
    },
    /// The addressee of a shipment takes custody.
    ReceiveUnit {
        /// The unit.
        unit: UnitId,
    },
    /// A dispenser (pharmacy) holding the unit dispenses it to a patient.
    DispenseUnit {
        /// The unit.
        unit: UnitId,
        /// Who receives it, as a commitment (`commitment::recipient_commitment`): which patient
        /// was dispensed which drug is health data, kept with the dispenser's record off the
        /// ledger.
        recipient: Hash,
    },
    /// The custodian takes a unit out of circulation.
    DecommissionUnit {
        /// The unit.
        unit: UnitId,
        /// Why.
        reason: Disposition,
    },
    /// A manufacturer or regulator recalls a lot. Applies on every shard.
    RecallLot {
        /// The product.
        gtin: u64,
        /// The lot.
        lot: String,
        /// How serious.
        reason: RecallClass,
    },

    /// An actor replaces the key it signs with (signed with its current key); it keeps its
    /// identity (its first key), under which its records, claims, accounts and units stay.
    /// Transactions signed with an earlier key are refused afterwards (`stale-key`). Applies on
    /// every shard.
    RotateKey {
        /// The new key.
        new_key: ActorKey,
    },
    /// Operators add another operator: the signer and `approvals` from other registered
    /// operators must reach the ledger's quorum (`Config::operator_quorum`). Applies on every
    /// shard.
    AddOperator {
        /// The new operator's key.
        actor: ActorKey,
        /// Other operators' signatures over `operator_approval(actor)`.
        approvals: Vec<Approval>,
    },
    /// An operator revokes an actor's registration: its later transactions are refused
    /// (`signer-revoked`); its earlier ones stand. Applies on every shard.
    RevokeActor {
        /// The actor.
        actor: ActorKey,
    },
    /// An operator changes an actor's role (and a manufacturer's prefixes): the only way a role
    /// changes. Applies on every shard.
    ChangeRole {
        /// The actor.
        actor: ActorKey,
        /// Its new role; not the operator role.
        role: Role,
        /// Its GS1 company prefixes if the new role is manufacturer; empty otherwise.
        prefixes: Vec<String>,
    },

    /// A provider registers a clinical study of which it is the principal investigator; the
    /// study's id is this transaction's id. Applies on every shard, so that an enrolment is
    /// checked on its patient's shard alone.
    RegisterStudy {
        /// blake3 of the study's protocol document (which lives off the ledger).
        protocol: Hash,
    },
    /// The study's investigator closes it to enrolment; its subjects stay enrolled. Applies on
    /// every shard.
    CloseStudy {
        /// The study (its registration's transaction id).
        study: TxId,
    },
    /// The study's investigator enrols a patient, on the patient's research consent: the
    /// consent named must be the patient's to the investigator, unrevoked, within its period
    /// and cover the research purpose.
    EnrollSubject {
        /// The study.
        study: TxId,
        /// Who is enrolled.
        patient: ActorKey,
        /// The patient's consent it rests on (the patient's own id for it).
        consent: u128,
    },
    /// The patient, or the study's investigator, ends the patient's enrolment.
    WithdrawSubject {
        /// The study.
        study: TxId,
        /// Who withdraws.
        patient: ActorKey,
    },
    /// An issuer (a licensing board, an accreditor) issues a credential to a provider: a
    /// licence or a continuing-education certificate, which anyone verifies by its id (this
    /// transaction's id).
    IssueCredential {
        /// The provider it is issued to.
        subject: ActorKey,
        /// What it is: a code from the issuer's vocabulary (for example `license`, `cme`;
        /// `valid_code`).
        kind: String,
        /// blake3 of the credential document (which lives off the ledger).
        document: Hash,
        /// When it starts.
        valid_from: Timestamp,
        /// When it ends (exclusive).
        valid_until: Timestamp,
    },
    /// The issuer revokes a credential it issued.
    RevokeCredential {
        /// The credential (its issuance's transaction id).
        credential: TxId,
        /// The provider it was issued to, so that the provider is a party to its revocation
        /// (and may read and prove it); it must be the credential's.
        subject: ActorKey,
    },
}

/// One operator's approval of adding an operator: its ed25519 signature over
/// `operator_approval(actor)`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Approval {
    /// The approving operator.
    pub operator: ActorKey,
    /// Its signature.
    pub signature: [u8; SIGNATURE_LENGTH],
}

/// What an operator signs to approve adding `actor` as an operator.
pub fn operator_approval(actor: &ActorKey) -> Vec<u8> {
    [b"caduceus.add-operator.1".as_slice(), &actor.0].concat()
}

/// The family of rules an operation belongs to: each has its own module of rules
/// (`shard::rules`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Family {
    /// Registering actors.
    Actors,
    /// Records, consents and accesses.
    Records,
    /// Claims, adjudications, accounts and payments.
    Claims,
    /// Serialized units, their custody, and recalls.
    Supply,
    /// Clinical studies and their subjects' enrolments.
    Research,
    /// Providers' credentials.
    Credentials,
}

/// Which operation a transaction carries: its tag on the wire and in storage (the codec writes
/// and reads this one number), its name, and its family.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum OperationKind {
    /// `Operation::RegisterActor`.
    RegisterActor = 1,
    /// `Operation::RegisterRecord`.
    RegisterRecord = 2,
    /// `Operation::AmendRecord`.
    AmendRecord = 3,
    /// `Operation::GrantConsent`.
    GrantConsent = 4,
    /// `Operation::RevokeConsent`.
    RevokeConsent = 5,
    /// `Operation::AccessRecord`.
    AccessRecord = 6,
    /// `Operation::EmergencyAccess`.
    EmergencyAccess = 7,
    /// `Operation::FundAccount`.
    FundAccount = 8,
    /// `Operation::SubmitClaim`.
    SubmitClaim = 9,
    /// `Operation::AdjudicateClaim`.
    AdjudicateClaim = 10,
    /// `Operation::PayClaim`.
    PayClaim = 11,
    /// `Operation::CommissionUnit`.
    CommissionUnit = 12,
    /// `Operation::ShipUnit`.
    ShipUnit = 13,
    /// `Operation::ReceiveUnit`.
    ReceiveUnit = 14,
    /// `Operation::DispenseUnit`.
    DispenseUnit = 15,
    /// `Operation::DecommissionUnit`.
    DecommissionUnit = 16,
    /// `Operation::RecallLot`.
    RecallLot = 17,
    /// `Operation::RevokeActor`.
    RevokeActor = 18,
    /// `Operation::ChangeRole`.
    ChangeRole = 19,
    /// `Operation::AddOperator`.
    AddOperator = 20,
    /// `Operation::RotateKey`.
    RotateKey = 21,
    /// `Operation::EraseRecord`.
    EraseRecord = 22,
    /// `Operation::AuditRead`.
    AuditRead = 23,
    /// `Operation::RegisterStudy`.
    RegisterStudy = 24,
    /// `Operation::CloseStudy`.
    CloseStudy = 25,
    /// `Operation::EnrollSubject`.
    EnrollSubject = 26,
    /// `Operation::WithdrawSubject`.
    WithdrawSubject = 27,
    /// `Operation::IssueCredential`.
    IssueCredential = 28,
    /// `Operation::RevokeCredential`.
    RevokeCredential = 29,
}

impl OperationKind {
    /// Every kind, in tag order: tags run from 1 without gaps (a test checks it).
    pub const ALL: [OperationKind; 29] = [
        OperationKind::RegisterActor,
        OperationKind::RegisterRecord,
        OperationKind::AmendRecord,
        OperationKind::GrantConsent,
        OperationKind::RevokeConsent,
        OperationKind::AccessRecord,
        OperationKind::EmergencyAccess,
        OperationKind::FundAccount,
        OperationKind::SubmitClaim,
        OperationKind::AdjudicateClaim,
        OperationKind::PayClaim,
        OperationKind::CommissionUnit,
        OperationKind::ShipUnit,
        OperationKind::ReceiveUnit,
        OperationKind::DispenseUnit,
        OperationKind::DecommissionUnit,
        OperationKind::RecallLot,
        OperationKind::RevokeActor,
        OperationKind::ChangeRole,
        OperationKind::AddOperator,
        OperationKind::RotateKey,
        OperationKind::EraseRecord,
        OperationKind::AuditRead,
        OperationKind::RegisterStudy,
        OperationKind::CloseStudy,
        OperationKind::EnrollSubject,
        OperationKind::WithdrawSubject,
        OperationKind::IssueCredential,
        OperationKind::RevokeCredential,
    ];

    /// The kind with this wire tag, if any.
    pub fn from_code(code: u8) -> Option<Self> {
        Self::ALL.get(usize::from(code).checked_sub(1)?).copied()
    }

    /// The wire tag.
    pub fn code(self) -> u8 {
        self as u8
    }

    /// The operation's name, as shown in reports.
    pub fn name(self) -> &'static str {
        match self {
            OperationKind::RegisterActor => "register-actor",
            OperationKind::RegisterRecord => "register-record",
            OperationKind::AmendRecord => "amend-record",
            OperationKind::GrantConsent => "grant-consent",
            OperationKind::RevokeConsent => "revoke-consent",
            OperationKind::AccessRecord => "access-record",
            OperationKind::EmergencyAccess => "emergency-access",
            OperationKind::FundAccount => "fund-account",
            OperationKind::SubmitClaim => "submit-claim",
            OperationKind::AdjudicateClaim => "adjudicate-claim",
            OperationKind::PayClaim => "pay-claim",
            OperationKind::CommissionUnit => "commission-unit",
            OperationKind::ShipUnit => "ship-unit",
            OperationKind::ReceiveUnit => "receive-unit",
            OperationKind::DispenseUnit => "dispense-unit",
            OperationKind::DecommissionUnit => "decommission-unit",
            OperationKind::RecallLot => "recall-lot",
            OperationKind::RevokeActor => "revoke-actor",
            OperationKind::ChangeRole => "change-role",
            OperationKind::AddOperator => "add-operator",
            OperationKind::RotateKey => "rotate-key",
            OperationKind::EraseRecord => "erase-record",
            OperationKind::AuditRead => "audit-read",
            OperationKind::RegisterStudy => "register-study",
            OperationKind::CloseStudy => "close-study",
            OperationKind::EnrollSubject => "enroll-subject",
            OperationKind::WithdrawSubject => "withdraw-subject",
            OperationKind::IssueCredential => "issue-credential",
            OperationKind::RevokeCredential => "revoke-credential",
        }
    }

    /// Whether it runs in a round's second phase, through the coordinator's two-phase commit,
    /// whatever the shard count: the operations whose keys may lie on several shards (an
    /// actor registration, a lot recall and a study's registration or closing touch every shard;
    /// a payment touches the patient's,
    /// the payer's and the provider's). Every other operation touches one shard and runs in the
    /// first phase. Fixed by the kind, never by where the keys land, so a batch's results do not
    /// depend on the shard count.
    pub fn coordinated(self) -> bool {
        matches!(
            self,
            OperationKind::RegisterActor
                | OperationKind::RevokeActor
                | OperationKind::ChangeRole
                | OperationKind::AddOperator
                | OperationKind::RotateKey
                | OperationKind::RecallLot
                | OperationKind::PayClaim
                | OperationKind::RegisterStudy
                | OperationKind::CloseStudy
        )
    }

    /// The roles that may sign it. A transaction signed by anyone else (an unregistered key, or
    /// an actor of another role) is refused before the ledger: not recorded, its id not burnt.
    pub fn signer_roles(self) -> &'static [Role] {
        const CUSTODIANS: &[Role] = &[Role::Manufacturer, Role::Distributor, Role::Dispenser];
        match self {
            OperationKind::RegisterActor
            | OperationKind::RevokeActor
            | OperationKind::ChangeRole
            | OperationKind::AddOperator => &[Role::Operator],
            OperationKind::RegisterRecord | OperationKind::AmendRecord | OperationKind::EmergencyAccess => {
                &[Role::Provider]
            }
            OperationKind::GrantConsent | OperationKind::RevokeConsent => &[Role::Patient],
            OperationKind::AccessRecord => &[Role::Patient, Role::Provider, Role::Payer, Role::Regulator],
            OperationKind::FundAccount | OperationKind::AdjudicateClaim | OperationKind::PayClaim => &[Role::Payer],
            OperationKind::SubmitClaim => &[Role::Provider],
            OperationKind::CommissionUnit => &[Role::Manufacturer],
            OperationKind::ShipUnit | OperationKind::ReceiveUnit | OperationKind::DecommissionUnit => CUSTODIANS,
            OperationKind::DispenseUnit => &[Role::Dispenser],
            OperationKind::RecallLot => &[Role::Manufacturer, Role::Regulator],
            OperationKind::RotateKey => Role::ALL,
            OperationKind::EraseRecord => &[Role::Patient, Role::Operator],
            OperationKind::AuditRead => &[Role::Auditor],
            OperationKind::RegisterStudy | OperationKind::CloseStudy | OperationKind::EnrollSubject => {
                &[Role::Provider]
            }
            OperationKind::WithdrawSubject => &[Role::Patient, Role::Provider],
            OperationKind::IssueCredential | OperationKind::RevokeCredential => &[Role::Issuer],
        }
    }

    /// The family whose rules module checks it.
    pub fn family(self) -> Family {
        match self {
            OperationKind::RegisterActor
            | OperationKind::RevokeActor
            | OperationKind::ChangeRole
            | OperationKind::AddOperator
            | OperationKind::RotateKey => Family::Actors,
            OperationKind::RegisterRecord
            | OperationKind::AmendRecord
            | OperationKind::GrantConsent
            | OperationKind::RevokeConsent
            | OperationKind::AccessRecord
            | OperationKind::EmergencyAccess
            | OperationKind::EraseRecord
            | OperationKind::AuditRead => Family::Records,
            OperationKind::FundAccount
            | OperationKind::SubmitClaim
            | OperationKind::AdjudicateClaim
            | OperationKind::PayClaim => Family::Claims,
            OperationKind::CommissionUnit
            | OperationKind::ShipUnit
            | OperationKind::ReceiveUnit
            | OperationKind::DispenseUnit
            | OperationKind::DecommissionUnit
            | OperationKind::RecallLot => Family::Supply,
            OperationKind::RegisterStudy
            | OperationKind::CloseStudy
            | OperationKind::EnrollSubject
            | OperationKind::WithdrawSubject => Family::Research,
            OperationKind::IssueCredential | OperationKind::RevokeCredential => Family::Credentials,
        }
    }
}

impl Operation {
    /// Which operation this is.
    pub fn kind(&self) -> OperationKind {
        match self {
            Operation::RegisterActor { .. } => OperationKind::RegisterActor,
            Operation::RegisterRecord { .. } => OperationKind::RegisterRecord,
            Operation::AmendRecord { .. } => OperationKind::AmendRecord,
            Operation::GrantConsent { .. } => OperationKind::GrantConsent,
            Operation::RevokeConsent { .. } => OperationKind::RevokeConsent,
            Operation::AccessRecord { .. } => OperationKind::AccessRecord,
            Operation::EmergencyAccess { .. } => OperationKind::EmergencyAccess,
            Operation::FundAccount { .. } => OperationKind::FundAccount,
            Operation::SubmitClaim { .. } => OperationKind::SubmitClaim,
            Operation::AdjudicateClaim { .. } => OperationKind::AdjudicateClaim,
            Operation::PayClaim { .. } => OperationKind::PayClaim,
            Operation::CommissionUnit { .. } => OperationKind::CommissionUnit,
            Operation::ShipUnit { .. } => OperationKind::ShipUnit,
            Operation::ReceiveUnit { .. } => OperationKind::ReceiveUnit,
            Operation::DispenseUnit { .. } => OperationKind::DispenseUnit,
            Operation::DecommissionUnit { .. } => OperationKind::DecommissionUnit,
            Operation::RecallLot { .. } => OperationKind::RecallLot,
            Operation::RevokeActor { .. } => OperationKind::RevokeActor,
            Operation::ChangeRole { .. } => OperationKind::ChangeRole,
            Operation::AddOperator { .. } => OperationKind::AddOperator,
            Operation::RotateKey { .. } => OperationKind::RotateKey,
            Operation::EraseRecord { .. } => OperationKind::EraseRecord,
            Operation::AuditRead { .. } => OperationKind::AuditRead,
            Operation::RegisterStudy { .. } => OperationKind::RegisterStudy,
            Operation::CloseStudy { .. } => OperationKind::CloseStudy,
            Operation::EnrollSubject { .. } => OperationKind::EnrollSubject,
            Operation::WithdrawSubject { .. } => OperationKind::WithdrawSubject,
            Operation::IssueCredential { .. } => OperationKind::IssueCredential,
            Operation::RevokeCredential { .. } => OperationKind::RevokeCredential,
        }
    }

    /// The operation's name, as shown in reports.
    pub fn name(&self) -> &'static str {
        self.kind().name()
    }
}

fn unit_encode(unit: &UnitId, e: &mut Encoder) -> Result<(), EncodeError> {
    e.u64(unit.gtin);
    e.text("serial", &unit.serial, CODE_LENGTH_MAX)
}

fn unit_decode(d: &mut Decoder<'_>) -> Result<UnitId, DecodeError> {
    let gtin = d.u64()?;
    if gtin >= 100_000_000_000_000 {
        return Err(DecodeError::Invalid("gtin"));
    }
    Ok(UnitId { gtin, serial: d.text("serial", CODE_LENGTH_MAX)? })
}

/// An X12 Claim Adjustment Reason Code: 1 to `DENIAL_REASON_MAX`.
pub fn denial_reason_decode(d: &mut Decoder<'_>) -> Result<u16, DecodeError> {
    let reason = d.u16()?;
    if reason == 0 || reason > DENIAL_REASON_MAX {
        return Err(DecodeError::Invalid("denial reason"));
    }
    Ok(reason)
}

fn amount_decode(d: &mut Decoder<'_>) -> Result<u64, DecodeError> {
    let amount = d.u64()?;
    if amount > AMOUNT_MAX {
        return Err(DecodeError::Invalid("amount"));
    }
    Ok(amount)
}

/// The wire format of every operation: its tag (`OperationKind`), then its fields. One arm per
/// operation, so the whole format reads in one place; encode and decode mirror each other.
impl Codec for Operation {
    fn encode_into(&self, e: &mut Encoder) -> Result<(), EncodeError> {
        e.u8(self.kind().code());
        match self {
            Operation::RegisterActor { actor, role, prefixes } => {
                e.array(&actor.0);
                e.u8(role.code());
                e.count("prefixes", prefixes.len(), PREFIXES_PER_ACTOR_MAX)?;
                for prefix in prefixes {
                    e.text("prefix", prefix, GS1_PREFIX_LENGTH_MAX)?;
                }
            }
            Operation::RegisterRecord { record, patient, content_hash, resource_type } => {
                e.u128(*record);
                e.array(&patient.0);
                e.array(content_hash);
                e.text("resource_type", resource_type, CODE_LENGTH_MAX)?;
            }
            Operation::AmendRecord { record, patient, content_hash } => {
                e.u128(*record);
                e.array(&patient.0);
                e.array(content_hash);
            }
            Operation::GrantConsent { consent, patient, grantee, scope, purposes, valid_from, valid_until } => {
                e.u128(*consent);
                e.array(&patient.0);
                e.array(&grantee.0);
                e.count("scope", scope.len(), CONSENT_SCOPE_COUNT_MAX)?;
                for resource_type in scope {
                    e.text("scope", resource_type, CODE_LENGTH_MAX)?;
                }
                e.u8(purposes.0);
                e.u64(*valid_from);
                e.u64(*valid_until);
            }
            Operation::RevokeConsent { consent, patient } => {
                e.u128(*consent);
                e.array(&patient.0);
            }
            Operation::AccessRecord { record, patient, purpose } => {
                e.u128(*record);
                e.array(&patient.0);
                e.u8(purpose.code());
            }
            Operation::EmergencyAccess { record, patient, reason } => {
                e.u128(*record);
                e.array(&patient.0);
                e.u8(reason.code());
            }
            Operation::FundAccount { amount } => {
                e.u64(*amount);
            }
            Operation::SubmitClaim { claim, patient, payer, total, commitment } => {
                e.u128(*claim);
                e.array(&patient.0);
                e.array(&payer.0);
                e.u64(*total);
                e.array(commitment);
            }
            Operation::AdjudicateClaim { claim, patient, decision } => {
                e.u128(*claim);
                e.array(&patient.0);
                match decision {
                    Adjudication::Approve { amount } => {
                        e.u8(1);
                        e.u64(*amount);
                    }
                    Adjudication::Deny { reason } => {
                        e.u8(2);
                        e.u16(*reason);
                    }
                    Adjudication::Pend => e.u8(3),
                }
            }
            Operation::PayClaim { claim, patient, provider, amount } => {
                e.u128(*claim);
                e.array(&patient.0);
                e.array(&provider.0);
                e.u64(*amount);
            }
            Operation::CommissionUnit { unit, lot, expiry } => {
                unit_encode(unit, e)?;
                e.text("lot", lot, CODE_LENGTH_MAX)?;
                e.u64(*expiry);
            }
            Operation::ShipUnit { unit, to } => {
                unit_encode(unit, e)?;
                e.array(&to.0);
            }
            Operation::ReceiveUnit { unit } => {
                unit_encode(unit, e)?;
            }
            Operation::DispenseUnit { unit, recipient } => {
                unit_encode(unit, e)?;
                e.array(recipient);
            }
            Operation::DecommissionUnit { unit, reason } => {
                unit_encode(unit, e)?;
                e.u8(reason.code());
            }
            Operation::RecallLot { gtin, lot, reason } => {
                e.u64(*gtin);
                e.text("lot", lot, CODE_LENGTH_MAX)?;
                e.u8(reason.code());
            }
            Operation::RevokeActor { actor } => e.array(&actor.0),
            Operation::EraseRecord { record, patient } => {
                e.u128(*record);
                e.array(&patient.0);
            }
            Operation::AuditRead { read, subject } => {
                e.array(read);
                e.bool(subject.is_some());
                if let Some(subject) = subject {
                    e.array(&subject.0);
                }
            }
            Operation::RotateKey { new_key } => e.array(&new_key.0),
            Operation::AddOperator { actor, approvals } => {
                e.array(&actor.0);
                e.count("approvals", approvals.len(), APPROVALS_MAX)?;
                for approval in approvals {
                    e.array(&approval.operator.0);
                    e.array(&approval.signature);
                }
            }
            Operation::ChangeRole { actor, role, prefixes } => {
                e.array(&actor.0);
                e.u8(role.code());
                e.count("prefixes", prefixes.len(), PREFIXES_PER_ACTOR_MAX)?;
                for prefix in prefixes {
                    e.text("prefix", prefix, GS1_PREFIX_LENGTH_MAX)?;
                }
            }
            Operation::RegisterStudy { protocol } => e.array(protocol),
            Operation::CloseStudy { study } => e.u128(*study),
            Operation::EnrollSubject { study, patient, consent } => {
                e.u128(*study);
                e.array(&patient.0);
                e.u128(*consent);
            }
            Operation::WithdrawSubject { study, patient } => {
                e.u128(*study);
                e.array(&patient.0);
            }
            Operation::IssueCredential { subject, kind, document, valid_from, valid_until } => {
                e.array(&subject.0);
                e.text("kind", kind, CODE_LENGTH_MAX)?;
                e.array(document);
                e.u64(*valid_from);
                e.u64(*valid_until);
            }
            Operation::RevokeCredential { credential, subject } => {
                e.u128(*credential);
                e.array(&subject.0);
            }
        }
        Ok(())
    }

    fn decode_from(d: &mut Decoder<'_>) -> Result<Self, DecodeError> {
        let actor = |d: &mut Decoder<'_>| d.array().map(ActorKey);
        let tag = d.u8()?;
        let kind = OperationKind::from_code(tag).ok_or(DecodeError::UnknownTag { field: "operation", tag })?;
        Ok(match kind {
            OperationKind::RegisterActor => Operation::RegisterActor {
                actor: actor(d)?,
                role: Role::from_code(d.u8()?).ok_or(DecodeError::Invalid("role"))?,
                prefixes: {
                    let count = d.count("prefixes", PREFIXES_PER_ACTOR_MAX)?;
                    (0..count).map(|_| d.text("prefix", GS1_PREFIX_LENGTH_MAX)).collect::<Result<_, _>>()?
                },
            },
            OperationKind::RegisterRecord => Operation::RegisterRecord {
                record: d.u128()?,
                patient: actor(d)?,
                content_hash: d.array()?,
                resource_type: d.text("resource_type", CODE_LENGTH_MAX)?,
            },
            OperationKind::AmendRecord => {
                Operation::AmendRecord { record: d.u128()?, patient: actor(d)?, content_hash: d.array()? }
            }
            OperationKind::GrantConsent => {
                let consent = d.u128()?;
                let patient = actor(d)?;
                let grantee = actor(d)?;
                let count = d.count("scope", CONSENT_SCOPE_COUNT_MAX)?;
                let scope = (0..count).map(|_| d.text("scope", CODE_LENGTH_MAX)).collect::<Result<_, _>>()?;
                let purposes = Purposes(d.u8()?);
                if !purposes.is_valid() {
                    return Err(DecodeError::Invalid("purposes"));
                }
                Operation::GrantConsent {
                    consent,
                    patient,
                    grantee,
                    scope,
                    purposes,
                    valid_from: d.u64()?,
                    valid_until: d.u64()?,
                }
            }
            OperationKind::RevokeConsent => Operation::RevokeConsent { consent: d.u128()?, patient: actor(d)? },
            OperationKind::AccessRecord => Operation::AccessRecord {
                record: d.u128()?,
                patient: actor(d)?,
                purpose: Purpose::from_code(d.u8()?).ok_or(DecodeError::Invalid("purpose"))?,
            },
            OperationKind::EmergencyAccess => Operation::EmergencyAccess {
                record: d.u128()?,
                patient: actor(d)?,
                reason: EmergencyReason::from_code(d.u8()?).ok_or(DecodeError::Invalid("emergency reason"))?,
            },
            OperationKind::FundAccount => Operation::FundAccount { amount: amount_decode(d)? },
            OperationKind::SubmitClaim => Operation::SubmitClaim {
                claim: d.u128()?,
                patient: actor(d)?,
                payer: actor(d)?,
                total: amount_decode(d)?,
                commitment: d.array()?,
            },
            OperationKind::AdjudicateClaim => {
                let claim = d.u128()?;
                let patient = actor(d)?;
                let decision = match d.u8()? {
                    1 => Adjudication::Approve { amount: amount_decode(d)? },
                    2 => Adjudication::Deny { reason: denial_reason_decode(d)? },
                    3 => Adjudication::Pend,
                    tag => return Err(DecodeError::UnknownTag { field: "adjudication", tag }),
                };
                Operation::AdjudicateClaim { claim, patient, decision }
            }
            OperationKind::PayClaim => Operation::PayClaim {
                claim: d.u128()?,
                patient: actor(d)?,
                provider: actor(d)?,
                amount: amount_decode(d)?,
            },
            OperationKind::CommissionUnit => Operation::CommissionUnit {
                unit: unit_decode(d)?,
                lot: d.text("lot", CODE_LENGTH_MAX)?,
                expiry: d.u64()?,
            },
            OperationKind::ShipUnit => Operation::ShipUnit { unit: unit_decode(d)?, to: actor(d)? },
            OperationKind::ReceiveUnit => Operation::ReceiveUnit { unit: unit_decode(d)? },
            OperationKind::DispenseUnit => Operation::DispenseUnit { unit: unit_decode(d)?, recipient: d.array()? },
            OperationKind::DecommissionUnit => Operation::DecommissionUnit {
                unit: unit_decode(d)?,
                reason: Disposition::from_code(d.u8()?).ok_or(DecodeError::Invalid("disposition"))?,
            },
            OperationKind::RecallLot => Operation::RecallLot {
                gtin: d.u64()?,
                lot: d.text("lot", CODE_LENGTH_MAX)?,
                reason: RecallClass::from_code(d.u8()?).ok_or(DecodeError::Invalid("recall class"))?,
            },
            OperationKind::RevokeActor => Operation::RevokeActor { actor: actor(d)? },
            OperationKind::EraseRecord => Operation::EraseRecord { record: d.u128()?, patient: actor(d)? },
            OperationKind::AuditRead => {
                let read = d.array()?;
                let subject = if d.bool("subject")? { Some(actor(d)?) } else { None };
                Operation::AuditRead { read, subject }
            }
            OperationKind::RotateKey => Operation::RotateKey { new_key: actor(d)? },
            OperationKind::AddOperator => {
                Operation::AddOperator {
                    actor: actor(d)?,
                    approvals: {
                        let count = d.count("approvals", APPROVALS_MAX)?;
                        (0..count)
                            .map(|_| Ok(Approval { operator: actor(d)?, signature: d.array()? }))
                            .collect::<Result<_, DecodeError>>()?
                    },
                }
            }
            OperationKind::ChangeRole => Operation::ChangeRole {
                actor: actor(d)?,
                role: Role::from_code(d.u8()?).ok_or(DecodeError::Invalid("role"))?,
                prefixes: {
                    let count = d.count("prefixes", PREFIXES_PER_ACTOR_MAX)?;
                    (0..count).map(|_| d.text("prefix", GS1_PREFIX_LENGTH_MAX)).collect::<Result<_, _>>()?
                },
            },
            OperationKind::RegisterStudy => Operation::RegisterStudy { protocol: d.array()? },
            OperationKind::CloseStudy => Operation::CloseStudy { study: d.u128()? },
            OperationKind::EnrollSubject => {
                Operation::EnrollSubject { study: d.u128()?, patient: actor(d)?, consent: d.u128()? }
            }
            OperationKind::WithdrawSubject => Operation::WithdrawSubject { study: d.u128()?, patient: actor(d)? },
            OperationKind::IssueCredential => Operation::IssueCredential {
                subject: actor(d)?,
                kind: d.text("kind", CODE_LENGTH_MAX)?,
                document: d.array()?,
                valid_from: d.u64()?,
                valid_until: d.u64()?,
            },
            OperationKind::RevokeCredential => {
                Operation::RevokeCredential { credential: d.u128()?, subject: actor(d)? }
            }
        })
    }
}

/// The signed part of a transaction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transaction {
    /// The signer's own number for it, unique among the signer's transactions: with the signer
    /// it makes the ledger id (`transaction_id`).
    pub nonce: u128,
    /// Who signs it.
    pub signer: ActorKey,
    /// The key that signed it, when the signer rotated its key (`Operation::RotateKey`);
    /// `None`: the signer's own key, the one it was registered with.
    pub key: Option<ActorKey>,
    /// When it was signed, by the signer's clock. It bounds when the transaction may commit: not
    /// later than `limits::TRANSACTION_VALIDITY_MS` after it, nor before it by more than
    /// `limits::CLOCK_SKEW_MS` (checked against the round's commit time).
    pub timestamp: Timestamp,
    /// What it does.
    pub operation: Operation,
}

impl Transaction {
    /// The key its signature verifies with: `key`, or the signer's own.
    pub fn verifying_key(&self) -> &ActorKey {
        self.key.as_ref().unwrap_or(&self.signer)
    }
}

impl Codec for Transaction {
    fn encode_into(&self, e: &mut Encoder) -> Result<(), EncodeError> {
        e.u8(ENCODING_VERSION);
        e.u128(self.nonce);
        e.array(&self.signer.0);
        e.bool(self.key.is_some());
        if let Some(key) = &self.key {
            e.array(&key.0);
        }
        e.u64(self.timestamp);
        self.operation.encode_into(e)
    }
    fn decode_from(d: &mut Decoder<'_>) -> Result<Self, DecodeError> {
        d.version()?;
        Ok(Transaction {
            nonce: d.u128()?,
            signer: ActorKey(d.array()?),
            key: if d.bool("key")? { Some(ActorKey(d.array()?)) } else { None },
            timestamp: d.u64()?,
            operation: Operation::decode_from(d)?,
        })
    }
}

/// A transaction with its signature and its wire bytes (body then signature), its ledger id and
/// the digest of its body.
///
/// The bytes are kept so that signature checks, hashing and storage never
/// re-encode. Cloning shares both the bytes and the decoded transaction: a
/// transaction is cloned into its round, its block and its two-phase commit,
/// and copying its strings each time would be work on the commit path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignedTransaction {
    /// The decoded transaction, shared by every clone.
    pub transaction: Arc<Transaction>,
    bytes: Arc<[u8]>,
    id: TxId,
    digest: Hash,
}

impl SignedTransaction {
    /// Assembles a signed transaction from its parts; `sign` in `signature` is the usual way.
    pub fn from_parts(transaction: Transaction, signature: [u8; SIGNATURE_LENGTH]) -> Result<Self, EncodeError> {
        let mut bytes = transaction.encode()?;
        bytes.extend_from_slice(&signature);
        if bytes.len() > TRANSACTION_SIZE_MAX {
            return Err(EncodeError::TooLong {
                field: "transaction",
                length: bytes.len(),
                limit: TRANSACTION_SIZE_MAX,
            });
        }
        Ok(Self::assemble(transaction, bytes.into()))
    }

    fn assemble(transaction: Transaction, bytes: Arc<[u8]>) -> Self {
        let id = transaction_id(&transaction.signer, transaction.nonce);
        let digest = *blake3::hash(&bytes[..bytes.len() - SIGNATURE_LENGTH]).as_bytes();
        Self { transaction: Arc::new(transaction), bytes, id, digest }
    }

    /// Decodes untrusted wire bytes. The signature is not checked here.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        if bytes.len() > TRANSACTION_SIZE_MAX {
            return Err(DecodeError::TooLong {
                field: "transaction",
                length: bytes.len(),
                limit: TRANSACTION_SIZE_MAX,
            });
        }
        if bytes.len() < SIGNATURE_LENGTH {
            return Err(DecodeError::Truncated { offset: bytes.len(), needed: SIGNATURE_LENGTH - bytes.len() });
        }
        let transaction = Transaction::decode(&bytes[..bytes.len() - SIGNATURE_LENGTH])?;
        Ok(Self::assemble(transaction, bytes.into()))
    }

    /// The transaction's ledger id (`transaction_id` of its signer and nonce).
    pub fn id(&self) -> TxId {
        self.id
    }
    /// blake3 of the signed body: two transactions under one id are the same transaction when
    /// their digests are equal.
    pub fn digest(&self) -> &Hash {
        &self.digest
    }
    /// The bytes the signature covers.
    pub fn body(&self) -> &[u8] {
        &self.bytes[..self.bytes.len() - SIGNATURE_LENGTH]
    }
    /// The ed25519 signature.
    pub fn signature(&self) -> [u8; SIGNATURE_LENGTH] {
        self.bytes[self.bytes.len() - SIGNATURE_LENGTH..].try_into().expect("signature length")
    }
    /// The whole wire encoding.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }
}

code_enum! {
    /// Why a transaction was rejected. Rejections are business outcomes, recorded in the ledger
    /// like commits, except refusals (`Reason::is_refusal`): those the ledger never records, so
    /// they burn no id and write no history.
    Reason: u16 {
        /// The signature does not verify.
        BadSignature = 1 => "bad-signature",
        /// The signer key is a small-order point.
        WeakKey = 2 => "weak-key",
        /// The transaction could not be decoded, or its stored index entry could not.
        Malformed = 3 => "malformed",
        /// Its chunk held a bad signature and the batch had bad signatures in more than one chunk, so the chunk was refused unsearched.
        BatchAbandoned = 4 => "batch-abandoned",
        /// Another transaction of the signer's holds this id (the same nonce) with a different
        /// body. Refused.
        Conflict = 5 => "conflict",
        /// The round's commit time is past the transaction's validity window
        /// (`limits::TRANSACTION_VALIDITY_MS` after its timestamp). Refused.
        Expired = 6 => "expired",
        /// The transaction's timestamp is ahead of the round's commit time by more than
        /// `limits::CLOCK_SKEW_MS`. Refused.
        NotYetValid = 7 => "not-yet-valid",
        /// The signer's registration was revoked by an operator. Refused.
        SignerRevoked = 8 => "signer-revoked",
        /// Signed with a key that is not the signer's current one (it rotated its key). Refused.
        StaleKey = 9 => "stale-key",
        /// The signer is not a registered actor. Refused.
        UnknownSigner = 10 => "unknown-signer",
        /// The signer's role may not sign this kind of operation (`OperationKind::signer_roles`).
        /// Refused.
        RoleNotPermitted = 11 => "role-not-permitted",
        /// A patient signed for another patient's consents.
        NotThePatient = 18 => "not-the-patient",
        /// The record was erased: its payload can no longer be read, and nothing more happens to it.
        RecordErased = 32 => "record-erased",
        /// The actor's registration is revoked already.
        ActorRevoked = 19 => "actor-revoked",
        /// Fewer operators than the ledger's quorum agreed to add an operator.
        QuorumNotMet = 50 => "quorum-not-met",
        /// The actor is already registered.
        ActorExists = 12 => "actor-exists",
        /// A named actor is not registered, or not in the role the operation needs.
        UnknownActor = 13 => "unknown-actor",
        /// A field is empty, out of range or inconsistent.
        InvalidField = 14 => "invalid-field",
        /// A cross-shard transaction in flight holds a key this one needs.
        KeyLocked = 15 => "key-locked",
        /// A cluster's coordinator could not reach a participant shard, or restarted before
        /// deciding: the cross-shard transaction is aborted everywhere.
        ParticipantUnavailable = 16 => "participant-unavailable",
        /// The GTIN is not within a GS1 company prefix the manufacturer was registered with.
        PrefixNotOwned = 68 => "prefix-not-owned",
        /// An amount would take an account past its bound (`limits::BALANCE_MAX`,
        /// `limits::FUNDED_MAX`).
        LimitExceeded = 17 => "limit-exceeded",
        /// The named patient is not registered as a patient.
        UnknownPatient = 20 => "unknown-patient",
        /// The patient already has a record with this id.
        RecordExists = 21 => "record-exists",
        /// The patient has no record with this id.
        UnknownRecord = 22 => "unknown-record",
        /// Only the record's custodian may amend it.
        NotCustodian = 23 => "not-custodian",
        /// The patient already has a consent with this id.
        ConsentExists = 24 => "consent-exists",
        /// The patient has no consent with this id.
        UnknownConsent = 25 => "unknown-consent",
        /// No consent of the patient names the accessor.
        ConsentMissing = 26 => "consent-missing",
        /// The nearest consent was revoked.
        ConsentRevoked = 27 => "consent-revoked",
        /// The nearest consent is outside its validity period.
        ConsentExpired = 28 => "consent-outside-period",
        /// The nearest consent does not cover this purpose of use.
        ConsentPurpose = 29 => "consent-purpose-not-covered",
        /// The nearest consent does not cover this type of record.
        ConsentScope = 30 => "consent-scope-not-covered",
        /// The grantee already holds as many of the patient's consents as allowed.
        ConsentLimit = 31 => "consent-limit",
        /// The patient already has a claim with this id.
        ClaimExists = 40 => "claim-exists",
        /// A claim for the same patient, provider, service date and codes exists.
        DuplicateClaim = 41 => "duplicate-claim",
        /// The patient has no claim with this id.
        UnknownClaim = 42 => "unknown-claim",
        /// The claim is not approved.
        ClaimNotPayable = 43 => "claim-not-payable",
        /// The claim was paid already.
        ClaimAlreadyPaid = 44 => "claim-already-paid",
        /// The claim was adjudicated already (approved, denied or paid).
        ClaimClosed = 45 => "claim-closed",
        /// The amount is not the claim's (over its total, or not the approved amount).
        AmountMismatch = 46 => "amount-mismatch",
        /// The payer's available balance does not cover the payment.
        InsufficientFunds = 47 => "insufficient-funds",
        /// The service date is after the commit date.
        ServiceDateInFuture = 48 => "service-date-in-future",
        /// Only the claim's payer may adjudicate or pay it.
        NotClaimPayer = 49 => "not-claim-payer",
        /// The serial was commissioned before: a counterfeit signal.
        UnitExists = 60 => "serial-already-commissioned",
        /// No unit with this GTIN and serial was commissioned.
        UnknownUnit = 61 => "unknown-unit",
        /// Only the unit's custodian may ship, dispense or decommission it.
        NotUnitCustodian = 62 => "not-unit-custodian",
        /// The unit is in transit, dispensed or decommissioned.
        UnitNotActive = 63 => "unit-not-active",
        /// The unit is in transit to another actor.
        NotAddressee = 64 => "not-addressee",
        /// The unit's lot is recalled.
        UnitRecalled = 65 => "unit-recalled",
        /// The unit is past its expiry.
        UnitExpired = 66 => "unit-expired",
        /// The lot is recalled already.
        LotAlreadyRecalled = 67 => "lot-already-recalled",
        /// No study was registered under this id.
        UnknownStudy = 80 => "unknown-study",
        /// The study is closed to enrolment.
        StudyClosed = 81 => "study-closed",
        /// Only the study's investigator may enrol its subjects or close it.
        NotInvestigator = 82 => "not-the-investigator",
        /// The patient is enrolled in the study already.
        AlreadyEnrolled = 83 => "already-enrolled",
        /// The patient is not enrolled in the study (or has withdrawn).
        NotEnrolled = 84 => "not-enrolled",
        /// No credential was issued under this id.
        UnknownCredential = 90 => "unknown-credential",
        /// Only a credential's issuer may revoke it.
        NotIssuer = 91 => "not-the-issuer",
        /// The credential is revoked already.
        CredentialRevoked = 92 => "credential-revoked",
    }
}

impl Reason {
    /// Whether the ledger refuses a transaction for this reason without recording it: it is
    /// not in any block, its id stays free, and no history (access log, custody trail) holds it.
    /// These are the reasons that say the transaction is not a registered actor's valid act
    /// (a bad signature, a malformed body, an unknown or wrong-role signer, an id conflict, a
    /// validity window missed); every other reason is a business outcome, recorded.
    pub fn is_refusal(self) -> bool {
        matches!(
            self,
            Reason::BadSignature
                | Reason::WeakKey
                | Reason::Malformed
                | Reason::BatchAbandoned
                | Reason::Conflict
                | Reason::Expired
                | Reason::NotYetValid
                | Reason::SignerRevoked
                | Reason::StaleKey
                | Reason::UnknownSigner
                | Reason::RoleNotPermitted
        )
    }
}

/// The outcome of one transaction.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TxResult {
    /// Applied.
    Committed,
    /// Rejected for this reason: recorded in the ledger, unless the reason is a refusal
    /// (`Reason::is_refusal`).
    Rejected(Reason),
}

impl TxResult {
    /// Whether the ledger records it (in a block, the transaction index and the histories).
    pub fn is_recorded(self) -> bool {
        !matches!(self, TxResult::Rejected(reason) if reason.is_refusal())
    }
    /// The result of a transaction already recorded (`first`, with its body's `digest`) for a
    /// resubmission whose body has `digest`: the first result for the same body, a conflict
    /// for any other.
    pub fn for_repeat(first: TxResult, first_digest: &Hash, digest: &Hash) -> TxResult {
        if first_digest == digest {
            first
        } else {
            TxResult::Rejected(Reason::Conflict)
        }
    }
    /// Whether it was applied.
    pub fn is_committed(self) -> bool {
        self == TxResult::Committed
    }
    /// The stored code: 0 for committed, else the reason's.
    pub fn code(self) -> u16 {
        match self {
            TxResult::Committed => 0,
            TxResult::Rejected(reason) => reason.code(),
        }
    }
    /// The result with this stored code, if any.
    pub fn from_code(code: u16) -> Option<Self> {
        match code {
            0 => Some(TxResult::Committed),
            code => Reason::from_code(code).map(TxResult::Rejected),
        }
    }
    /// `committed`, or the reason's name.
    pub fn as_str(self) -> &'static str {
        match self {
            TxResult::Committed => "committed",
            TxResult::Rejected(reason) => reason.as_str(),
        }
    }
}

impl fmt::Display for TxResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Encodes a list of signed transactions (at most a round's worth) by their wire bytes.
pub fn encode_transactions(e: &mut Encoder, transactions: &[SignedTransaction]) -> Result<(), EncodeError> {
    e.count("transactions", transactions.len(), crate::limits::ROUND_TRANSACTIONS_MAX)?;
    for transaction in transactions {
        e.bytes("transaction", transaction.bytes(), TRANSACTION_SIZE_MAX)?;
    }
    Ok(())
}

/// Decodes what `encode_transactions` wrote; signatures are not checked here.
pub fn decode_transactions(d: &mut Decoder<'_>) -> Result<Vec<SignedTransaction>, DecodeError> {
    decode_transactions_within(d, crate::limits::ROUND_TRANSACTIONS_MAX)
}

/// `decode_transactions` with a smaller bound on the count (a client's batch), refused from
/// the count alone, before any transaction is decoded.
pub fn decode_transactions_within(d: &mut Decoder<'_>, limit: usize) -> Result<Vec<SignedTransaction>, DecodeError> {
    let count = d.count("transactions", limit.min(crate::limits::ROUND_TRANSACTIONS_MAX))?;
    (0..count).map(|_| SignedTransaction::decode(d.bytes("transaction", TRANSACTION_SIZE_MAX)?)).collect()
}

/// Encodes a result as its code.
pub fn encode_result(e: &mut Encoder, result: TxResult) {
    e.u16(result.code());
}

/// Reads a result's stored code.
pub fn decode_result(d: &mut Decoder<'_>) -> Result<TxResult, DecodeError> {
    TxResult::from_code(d.u16()?).ok_or(DecodeError::Invalid("result"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operation_tags_run_from_one_without_gaps_and_each_kind_has_its_own_name() {
        for (index, kind) in OperationKind::ALL.iter().enumerate() {
            assert_eq!(usize::from(kind.code()), index + 1, "{kind:?}");
            assert_eq!(OperationKind::from_code(kind.code()), Some(*kind));
        }
        assert_eq!(OperationKind::from_code(0), None);
        assert_eq!(OperationKind::from_code(OperationKind::ALL.len() as u8 + 1), None);
        let names: std::collections::HashSet<_> = OperationKind::ALL.iter().map(|k| k.name()).collect();
        assert_eq!(names.len(), OperationKind::ALL.len());
    }
}
