//! The wire protocol: versioned, length-prefixed frames over QUIC streams.
//!
//! A frame is `length: u32 BE | version: u8 | kind: u8 | payload`, where
//! `length` counts version, kind and payload and may not exceed `FRAME_MAX`.
//! Every request opens its own bidirectional stream and gets exactly one
//! response frame on it. A malformed, oversized or unknown frame is answered
//! with an `Error` frame and that stream is closed; the connection and every
//! other stream go on. Payloads use the engine's binary codec, which checks
//! every length before it allocates.

use caduceus_engine::block::{Checkpoint, ShardHead};
use caduceus_engine::codec::{Codec, DecodeError, Decoder, EncodeError, Encoder};
use caduceus_engine::history::{AccessEntry, Cursor, CustodyEvent, Page};
use caduceus_engine::limits::{BATCH_TRANSACTIONS_MAX, ROUND_TRANSACTIONS_MAX, TRANSACTION_SIZE_MAX};
use caduceus_engine::model::{decode_result, decode_transactions_within, encode_result, encode_transactions, Hash};
use caduceus_engine::participant::{RoundReply, RoundRequest, Status};
use caduceus_engine::payload::PAYLOAD_LENGTH_MAX;
use caduceus_engine::reads::Listing;
use caduceus_engine::shard::Admission;
use caduceus_engine::state::{
    Account, Actor, Claim, Consent, Enrolment, ProviderCredential, Recall, Record, Study, Unit,
};
use caduceus_engine::{ActorKey, Proof, SignedTransaction, TxId, TxResult, UnitId};
use thiserror::Error;

pub const VERSION: u8 = 1;
/// The largest frame: a full batch of the largest transactions, with room for framing.
pub const FRAME_MAX: usize = BATCH_TRANSACTIONS_MAX * (TRANSACTION_SIZE_MAX + 8) + 4096;
/// Requests one connection may have open at once (QUIC enforces it).
pub const STREAMS_PER_CONNECTION: u32 = 64;

/// Why a frame could not be read or understood.
#[derive(Debug, Error)]
pub enum WireError {
    #[error("frame of {0} bytes is over the limit of {FRAME_MAX}")]
    TooLarge(usize),
    #[error("frame is too short")]
    Short,
    #[error("protocol version {0} is not spoken here (this side speaks {VERSION})")]
    Version(u8),
    #[error("unknown frame kind {0}")]
    UnknownKind(u8),
    #[error("malformed frame: {0}")]
    Malformed(#[from] DecodeError),
    #[error("frame too large to encode: {0}")]
    Encode(#[from] EncodeError),
    #[error("stream: {0}")]
    Read(#[from] quinn::ReadExactError),
    #[error("stream: {0}")]
    Write(#[from] quinn::WriteError),
    #[error("stream closed: {0}")]
    Closed(#[from] quinn::ClosedStream),
    #[error("the server holds as many request bytes as it takes: try again later")]
    Busy,
}

/// A question routed to the shard that holds the answer (or to every shard).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Query {
    Actor(ActorKey),
    Account(ActorKey),
    Claim(ActorKey, u128),
    /// The unit and the recall of its lot, if any.
    Unit(UnitId),
    /// A page of a patient's access log: newest first, before the cursor, at most the count.
    AccessReport(ActorKey, Option<Cursor>, u32),
    /// A page of a unit's custody trail, likewise.
    Custody(UnitId, Option<Cursor>, u32),
    /// The transaction as recorded and its result (asked of every shard).
    Transaction(TxId),
    /// Each shard's state hash and fund totals (asked of every shard).
    Totals,
    /// A record's entry.
    Record(ActorKey, u128),
    /// A patient's records, by id: at most the count, after the id given.
    Records(ActorKey, Option<u128>, u32),
    /// The consents a patient gave, likewise.
    Consents(ActorKey, Option<u128>, u32),
    /// A clinical study, by its registration's transaction id.
    Study(TxId),
    /// A patient's enrolment in a study.
    Enrolment(ActorKey, TxId),
    /// A provider's credential, by its issuance's transaction id.
    Credential(TxId),
}

/// Every request, from clients to the coordinator and from the coordinator to shards.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Request {
    Submit(Vec<SignedTransaction>),
    Query(Query),
    Prove(TxId),
    Checkpoint,
    /// The checkpoint of one round (for checking a proof against it).
    CheckpointAt(u64),
    Health,
    // Coordinator to shard:
    Round(RoundRequest),
    Decide {
        round: u64,
        decisions: Vec<(TxId, TxResult)>,
    },
    Status,
    Lookup(Vec<TxId>),
    /// A read (`Query`, `Prove` or `Lookup`) with its reader's credential: a client's reads are
    /// answered only this way.
    Signed {
        credential: Credential,
        request: Box<Request>,
    },
    /// Before a round at commit time `now`: what each transaction is answered without running
    /// (`Participant::admit`), as `Response::Lookup`: its first result or a conflict if the
    /// shard holds its id, a refusal if it may not reach the rules, nothing if it is new.
    Admit {
        now: u64,
        entries: Vec<Admission>,
    },
    /// A record's payload, to be sealed and stored in the cluster's payload store (signed, by a
    /// provider); answered with the content hash its registration names.
    PutPayload {
        patient: ActorKey,
        record: u128,
        payload: Vec<u8>,
    },
    /// A record's payload, read through this access (signed by the access's signer), which the
    /// coordinator submits: answered with the plaintext once the ledger commits it as permitted.
    ReadPayload(SignedTransaction),
    /// A request for one shard of a shard server (which may serve several).
    AtShard {
        shard: u32,
        request: Box<Request>,
    },
}

/// A transaction's outcome as a client sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Durable, with this result.
    Done(TxResult),
    /// Not acknowledged: a shard it needs was unreachable. Submit it again later; if it was
    /// applied after all, the repeat returns the first result.
    Unavailable,
}

const UNAVAILABLE: u16 = u16::MAX;

/// Answers to `Query`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Answer {
    Actor(Option<Actor>),
    Account(Option<Account>),
    Claim(Option<Claim>),
    Unit(Option<Unit>, Option<Recall>),
    AccessReport(Page<AccessEntry>),
    Custody(Page<CustodyEvent>),
    Transaction(Option<(SignedTransaction, TxResult)>),
    /// State hash, total balances and total funding.
    Totals(Hash, u128, u128),
    Record(Option<Record>),
    Records(Listing<Record>),
    Consents(Listing<Consent>),
    Study(Option<Study>),
    Enrolment(Option<Enrolment>),
    Credential(Option<ProviderCredential>),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Response {
    /// The request was refused; `code` says why (one of [`error_code`]).
    Error {
        code: u16,
        message: String,
    },
    /// A queue is full: back off and try again.
    Busy,
    Results(Vec<Outcome>),
    Answer(Answer),
    Proof(Option<Box<Proof>>),
    Checkpoint(Option<Checkpoint>),
    Health {
        role: String,
        detail: String,
    },
    RoundReply(RoundReply),
    Decided(ShardHead),
    Status(Status),
    Lookup(Vec<Option<TxResult>>),
    /// A stored payload's content hash.
    Stored(Hash),
    /// A payload's plaintext.
    Payload(Vec<u8>),
}

/// Codes of `Response::Error`.
pub mod error_code {
    pub const MALFORMED: u16 = 1;
    pub const TOO_LARGE: u16 = 2;
    pub const VERSION: u16 = 3;
    pub const UNKNOWN_KIND: u16 = 4;
    pub const NOT_HERE: u16 = 5;
    pub const STORAGE: u16 = 6;
    pub const PROTOCOL: u16 = 7;
    pub const UNAVAILABLE: u16 = 8;
    pub const BATCH_TOO_LARGE: u16 = 9;
    /// A read without a valid credential: none, a bad signature, outside the clock-skew bound
    /// of the coordinator's time, replayed, or from no registered, unrevoked actor.
    pub const UNAUTHENTICATED: u16 = 10;
    /// An authenticated reader may not read this (`caduceus_engine::authority`).
    pub const FORBIDDEN: u16 = 11;
}

/// Who asks a signed read, when, and its signature over `Credential::message`: a read is
/// answered only if the signature checks, the time is within `limits::CLOCK_SKEW_MS` of the
/// coordinator's, and the (reader, nonce) pair was not used in that window.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Credential {
    pub reader: ActorKey,
    pub timestamp: u64,
    pub nonce: u64,
    pub signature: [u8; 64],
    /// An auditor's read comes with its `audit-read` transaction, which the coordinator has
    /// committed (logged) before it answers.
    pub audit: Option<SignedTransaction>,
}

impl Credential {
    /// What the reader signs: a domain tag, who, when, the nonce and the whole request.
    pub fn message(reader: &ActorKey, timestamp: u64, nonce: u64, request: &Request) -> Result<Vec<u8>, EncodeError> {
        let mut message = b"caduceus.read.1".to_vec();
        message.extend_from_slice(&reader.0);
        message.extend_from_slice(&timestamp.to_le_bytes());
        message.extend_from_slice(&nonce.to_le_bytes());
        message.extend_from_slice(&request.encode()?);
        Ok(message)
    }

    /// `request` signed by `key` at `timestamp` with `nonce`.
    pub fn sign(
        key: &caduceus_engine::signature::SigningKey,
        timestamp: u64,
        nonce: u64,
        request: Request,
    ) -> Result<Request, EncodeError> {
        let (credential, _) = Self::signed(key, timestamp, nonce, &request)?;
        Ok(Request::Signed { credential, request: Box::new(request) })
    }

    /// `request` signed by an auditor's `key`, with the `audit-read` transaction (nonce
    /// `audit_nonce`) that logs it, naming the actor whose data it reads (`subject_of`).
    pub fn sign_audited(
        key: &caduceus_engine::signature::SigningKey,
        timestamp: u64,
        nonce: u64,
        audit_nonce: u128,
        request: Request,
    ) -> Result<Request, EncodeError> {
        let (mut credential, message) = Self::signed(key, timestamp, nonce, &request)?;
        // The audit-read names this credential's read (its nonce and time included), so it logs
        // exactly one read.
        let audit = caduceus_engine::Transaction {
            nonce: audit_nonce,
            signer: credential.reader,
            timestamp,
            operation: caduceus_engine::Operation::AuditRead {
                read: Self::digest(&message),
                subject: Self::subject_of(&request),
            },
            key: None,
        };
        credential.audit = Some(caduceus_engine::signature::sign(audit, key)?);
        Ok(Request::Signed { credential, request: Box::new(request) })
    }

    /// The credential for `request` (no audit-read), and the message it signs.
    fn signed(
        key: &caduceus_engine::signature::SigningKey,
        timestamp: u64,
        nonce: u64,
        request: &Request,
    ) -> Result<(Credential, Vec<u8>), EncodeError> {
        let reader = caduceus_engine::signature::actor_key(key);
        let message = Self::message(&reader, timestamp, nonce, request)?;
        let signature = caduceus_engine::signature::sign_message(key, &message);
        Ok((Credential { reader, timestamp, nonce, signature, audit: None }, message))
    }

    /// What an audit-read names: the digest of the signed message of the one read it logs.
    pub fn digest(message: &[u8]) -> Hash {
        *blake3::hash(message).as_bytes()
    }

    /// Whether an auditor's read must be logged on the ledger first: every read but of public
    /// facts (an actor's role, a unit's status, totals) and lookups of results by id.
    pub fn logged(request: &Request) -> bool {
        // A payload is read through an access, which the ledger logs itself.
        !matches!(
            request,
            Request::Query(Query::Actor(_) | Query::Unit(_) | Query::Totals | Query::Study(_) | Query::Credential(_))
                | Request::Lookup(_)
                | Request::PutPayload { .. }
                | Request::ReadPayload(_)
        )
    }

    /// The one actor whose data a read reveals, where the read names it.
    pub fn subject_of(request: &Request) -> Option<ActorKey> {
        match request {
            Request::Query(
                Query::AccessReport(actor, ..)
                | Query::Claim(actor, _)
                | Query::Account(actor)
                | Query::Record(actor, _)
                | Query::Records(actor, ..)
                | Query::Consents(actor, ..)
                | Query::Enrolment(actor, _),
            ) => Some(*actor),
            _ => None,
        }
    }

    /// The signed message, if the signature over it checks against `key` (the reader's current
    /// key: an actor that rotated its key signs with its new one).
    pub fn verified(&self, key: &ActorKey, request: &Request) -> Option<Vec<u8>> {
        let message = Self::message(&self.reader, self.timestamp, self.nonce, request).ok()?;
        caduceus_engine::signature::verify_one(key, &message, &self.signature).then_some(message)
    }
}

fn option<T>(
    e: &mut Encoder,
    value: &Option<T>,
    f: impl FnOnce(&mut Encoder, &T) -> Result<(), EncodeError>,
) -> Result<(), EncodeError> {
    e.bool(value.is_some());
    value.as_ref().map_or(Ok(()), |v| f(e, v))
}

fn read_option<T>(
    d: &mut Decoder<'_>,
    f: impl FnOnce(&mut Decoder<'_>) -> Result<T, DecodeError>,
) -> Result<Option<T>, DecodeError> {
    if d.bool("present")? {
        Ok(Some(f(d)?))
    } else {
        Ok(None)
    }
}

fn unit_id(e: &mut Encoder, unit: &UnitId) -> Result<(), EncodeError> {
    e.u64(unit.gtin);
    e.text("serial", &unit.serial, caduceus_engine::limits::CODE_LENGTH_MAX)
}

fn write_cursor(e: &mut Encoder, cursor: &Cursor) -> Result<(), EncodeError> {
    e.u64(cursor.height);
    e.u32(cursor.index);
    Ok(())
}

fn read_cursor(d: &mut Decoder<'_>) -> Result<Cursor, DecodeError> {
    Ok(Cursor { height: d.u64()?, index: d.u32()? })
}

/// A page request: the cursor to read before, and the most entries wanted.
fn page_request(e: &mut Encoder, before: &Option<Cursor>, limit: u32) -> Result<(), EncodeError> {
    option(e, before, write_cursor)?;
    e.u32(limit);
    Ok(())
}

fn read_page_request(d: &mut Decoder<'_>) -> Result<(Option<Cursor>, u32), DecodeError> {
    Ok((read_option(d, read_cursor)?, d.u32()?))
}

fn write_page<T: Codec>(e: &mut Encoder, page: &Page<T>) -> Result<(), EncodeError> {
    list(e, &page.entries)?;
    e.u64(page.total);
    option(e, &page.next, write_cursor)
}

fn read_page<T: Codec>(d: &mut Decoder<'_>) -> Result<Page<T>, DecodeError> {
    Ok(Page { entries: read_list(d)?, total: d.u64()?, next: read_option(d, read_cursor)? })
}

/// A payload: a u32 length (at most `PAYLOAD_LENGTH_MAX`), then its bytes.
fn long_bytes(e: &mut Encoder, bytes: &[u8]) -> Result<(), EncodeError> {
    if bytes.len() > PAYLOAD_LENGTH_MAX {
        return Err(EncodeError::TooLong { field: "payload", length: bytes.len(), limit: PAYLOAD_LENGTH_MAX });
    }
    e.u32(bytes.len() as u32);
    e.array(bytes);
    Ok(())
}

fn read_long_bytes(d: &mut Decoder<'_>) -> Result<Vec<u8>, DecodeError> {
    let length = d.u32()? as usize;
    if length > PAYLOAD_LENGTH_MAX {
        return Err(DecodeError::TooLong { field: "payload", length, limit: PAYLOAD_LENGTH_MAX });
    }
    Ok(d.take(length)?.to_vec())
}

fn write_listing<T: Codec>(e: &mut Encoder, listing: &Listing<T>) -> Result<(), EncodeError> {
    e.count("entries", listing.entries.len(), caduceus_engine::limits::HISTORY_ENTRIES_MAX)?;
    for (id, entry) in &listing.entries {
        e.u128(*id);
        entry.encode_into(e)?;
    }
    option(e, &listing.next, |e, next| {
        e.u128(*next);
        Ok(())
    })
}

fn read_listing<T: Codec>(d: &mut Decoder<'_>) -> Result<Listing<T>, DecodeError> {
    let count = d.count("entries", caduceus_engine::limits::HISTORY_ENTRIES_MAX)?;
    let entries = (0..count).map(|_| Ok((d.u128()?, T::decode_from(d)?))).collect::<Result<_, DecodeError>>()?;
    Ok(Listing { entries, next: read_option(d, |d| d.u128())? })
}

fn read_unit_id(d: &mut Decoder<'_>) -> Result<UnitId, DecodeError> {
    Ok(UnitId { gtin: d.u64()?, serial: d.text("serial", caduceus_engine::limits::CODE_LENGTH_MAX)? })
}

fn list<T: Codec>(e: &mut Encoder, items: &[T]) -> Result<(), EncodeError> {
    e.count("entries", items.len(), caduceus_engine::limits::HISTORY_ENTRIES_MAX)?;
    items.iter().try_for_each(|item| item.encode_into(e))
}

fn read_list<T: Codec>(d: &mut Decoder<'_>) -> Result<Vec<T>, DecodeError> {
    let count = d.count("entries", caduceus_engine::limits::HISTORY_ENTRIES_MAX)?;
    (0..count).map(|_| T::decode_from(d)).collect()
}

fn decisions(e: &mut Encoder, decisions: &[(TxId, TxResult)]) -> Result<(), EncodeError> {
    e.count("decisions", decisions.len(), ROUND_TRANSACTIONS_MAX)?;
    for (id, result) in decisions {
        e.u128(*id);
        encode_result(e, *result);
    }
    Ok(())
}

fn read_decisions(d: &mut Decoder<'_>) -> Result<Vec<(TxId, TxResult)>, DecodeError> {
    let count = d.count("decisions", ROUND_TRANSACTIONS_MAX)?;
    (0..count).map(|_| Ok((d.u128()?, decode_result(d)?))).collect()
}

impl Query {
    fn encode_into(&self, e: &mut Encoder) -> Result<(), EncodeError> {
        match self {
            Query::Actor(key) => {
                e.u8(1);
                e.array(&key.0);
            }
            Query::Account(key) => {
                e.u8(2);
                e.array(&key.0);
            }
            Query::Claim(patient, claim) => {
                e.u8(3);
                e.array(&patient.0);
                e.u128(*claim);
            }
            Query::Unit(unit) => {
                e.u8(4);
                unit_id(e, unit)?;
            }
            Query::AccessReport(patient, before, limit) => {
                e.u8(5);
                e.array(&patient.0);
                page_request(e, before, *limit)?;
            }
            Query::Custody(unit, before, limit) => {
                e.u8(6);
                unit_id(e, unit)?;
                page_request(e, before, *limit)?;
            }
            Query::Transaction(id) => {
                e.u8(7);
                e.u128(*id);
            }
            Query::Totals => e.u8(8),
            Query::Record(patient, record) => {
                e.u8(9);
                e.array(&patient.0);
                e.u128(*record);
            }
            Query::Records(patient, after, limit) | Query::Consents(patient, after, limit) => {
                e.u8(if matches!(self, Query::Records(..)) { 10 } else { 11 });
                e.array(&patient.0);
                option(e, after, |e, after| {
                    e.u128(*after);
                    Ok(())
                })?;
                e.u32(*limit);
            }
            Query::Study(study) => {
                e.u8(12);
                e.u128(*study);
            }
            Query::Enrolment(patient, study) => {
                e.u8(13);
                e.array(&patient.0);
                e.u128(*study);
            }
            Query::Credential(credential) => {
                e.u8(14);
                e.u128(*credential);
            }
        }
        Ok(())
    }
    fn decode_from(d: &mut Decoder<'_>) -> Result<Self, DecodeError> {
        Ok(match d.u8()? {
            1 => Query::Actor(ActorKey(d.array()?)),
            2 => Query::Account(ActorKey(d.array()?)),
            3 => Query::Claim(ActorKey(d.array()?), d.u128()?),
            4 => Query::Unit(read_unit_id(d)?),
            5 => {
                let patient = ActorKey(d.array()?);
                let (before, limit) = read_page_request(d)?;
                Query::AccessReport(patient, before, limit)
            }
            6 => {
                let unit = read_unit_id(d)?;
                let (before, limit) = read_page_request(d)?;
                Query::Custody(unit, before, limit)
            }
            7 => Query::Transaction(d.u128()?),
            8 => Query::Totals,
            9 => Query::Record(ActorKey(d.array()?), d.u128()?),
            kind @ (10 | 11) => {
                let patient = ActorKey(d.array()?);
                let after = read_option(d, |d| d.u128())?;
                let limit = d.u32()?;
                if kind == 10 {
                    Query::Records(patient, after, limit)
                } else {
                    Query::Consents(patient, after, limit)
                }
            }
            12 => Query::Study(d.u128()?),
            13 => Query::Enrolment(ActorKey(d.array()?), d.u128()?),
            14 => Query::Credential(d.u128()?),
            _ => return Err(DecodeError::Invalid("query kind")),
        })
    }
}

impl Answer {
    fn encode_into(&self, e: &mut Encoder) -> Result<(), EncodeError> {
        match self {
            Answer::Actor(actor) => {
                e.u8(1);
                option(e, actor, |e, a| a.encode_into(e))
            }
            Answer::Account(account) => {
                e.u8(2);
                option(e, account, |e, a| a.encode_into(e))
            }
            Answer::Claim(claim) => {
                e.u8(3);
                option(e, claim, |e, c| c.encode_into(e))
            }
            Answer::Unit(unit, recall) => {
                e.u8(4);
                option(e, unit, |e, u| u.encode_into(e))?;
                option(e, recall, |e, r| r.encode_into(e))
            }
            Answer::AccessReport(page) => {
                e.u8(5);
                write_page(e, page)
            }
            Answer::Custody(page) => {
                e.u8(6);
                write_page(e, page)
            }
            Answer::Transaction(found) => {
                e.u8(7);
                option(e, found, |e, (t, r)| {
                    e.bytes("transaction", t.bytes(), TRANSACTION_SIZE_MAX)?;
                    encode_result(e, *r);
                    Ok(())
                })
            }
            Answer::Totals(hash, balances, funded) => {
                e.u8(8);
                e.array(hash);
                e.u128(*balances);
                e.u128(*funded);
                Ok(())
            }
            Answer::Record(record) => {
                e.u8(9);
                option(e, record, |e, r| r.encode_into(e))
            }
            Answer::Records(listing) => {
                e.u8(10);
                write_listing(e, listing)
            }
            Answer::Consents(listing) => {
                e.u8(11);
                write_listing(e, listing)
            }
            Answer::Study(study) => {
                e.u8(12);
                option(e, study, |e, s| s.encode_into(e))
            }
            Answer::Enrolment(enrolment) => {
                e.u8(13);
                option(e, enrolment, |e, s| s.encode_into(e))
            }
            Answer::Credential(credential) => {
                e.u8(14);
                option(e, credential, |e, s| s.encode_into(e))
            }
        }
    }
    fn decode_from(d: &mut Decoder<'_>) -> Result<Self, DecodeError> {
        Ok(match d.u8()? {
            1 => Answer::Actor(read_option(d, Actor::decode_from)?),
            2 => Answer::Account(read_option(d, Account::decode_from)?),
            3 => Answer::Claim(read_option(d, Claim::decode_from)?),
            4 => Answer::Unit(read_option(d, Unit::decode_from)?, read_option(d, Recall::decode_from)?),
            5 => Answer::AccessReport(read_page(d)?),
            6 => Answer::Custody(read_page(d)?),
            7 => Answer::Transaction(read_option(d, |d| {
                Ok((SignedTransaction::decode(d.bytes("transaction", TRANSACTION_SIZE_MAX)?)?, decode_result(d)?))
            })?),
            8 => Answer::Totals(d.array()?, d.u128()?, d.u128()?),
            9 => Answer::Record(read_option(d, Record::decode_from)?),
            10 => Answer::Records(read_listing(d)?),
            11 => Answer::Consents(read_listing(d)?),
            12 => Answer::Study(read_option(d, Study::decode_from)?),
            13 => Answer::Enrolment(read_option(d, Enrolment::decode_from)?),
            14 => Answer::Credential(read_option(d, ProviderCredential::decode_from)?),
            _ => return Err(DecodeError::Invalid("answer kind")),
        })
    }
}

impl Request {
    /// Whether a client sends this only signed (`Request::Signed`): the reads (queries, proofs,
    /// lookups) and the payload store's requests. Their kinds are `SIGNED_KINDS`.
    pub fn is_signed_read(&self) -> bool {
        matches!(
            self,
            Request::Query(_)
                | Request::Prove(_)
                | Request::Lookup(_)
                | Request::PutPayload { .. }
                | Request::ReadPayload(_)
        )
    }

    /// The frame kinds of the requests `is_signed_read` names, which a `Signed` frame may wrap.
    const SIGNED_KINDS: [u8; 5] = [2, 3, 13, 22, 23];

    pub fn encode(&self) -> Result<Vec<u8>, EncodeError> {
        let mut e = Encoder::new();
        match self {
            Request::Submit(transactions) => {
                e.u8(1);
                e.count("batch", transactions.len(), BATCH_TRANSACTIONS_MAX)?;
                encode_transactions(&mut e, transactions)?;
            }
            Request::Query(query) => {
                e.u8(2);
                query.encode_into(&mut e)?;
            }
            Request::Prove(id) => {
                e.u8(3);
                e.u128(*id);
            }
            Request::Checkpoint => e.u8(4),
            Request::Health => e.u8(5),
            Request::CheckpointAt(round) => {
                e.u8(6);
                e.u64(*round);
            }
            Request::Round(request) => {
                e.u8(10);
                request.encode_into(&mut e)?;
            }
            Request::Decide { round, decisions: list } => {
                e.u8(11);
                e.u64(*round);
                decisions(&mut e, list)?;
            }
            Request::Status => e.u8(12),
            Request::Lookup(ids) => {
                e.u8(13);
                e.count("ids", ids.len(), ROUND_TRANSACTIONS_MAX)?;
                ids.iter().for_each(|id| e.u128(*id));
            }
            Request::Admit { now, entries } => {
                e.u8(14);
                e.u64(*now);
                e.count("entries", entries.len(), ROUND_TRANSACTIONS_MAX)?;
                for entry in entries {
                    entry.encode_into(&mut e)?;
                }
            }
            Request::Signed { credential, request } => {
                e.u8(21);
                e.array(&credential.reader.0);
                e.u64(credential.timestamp);
                e.u64(credential.nonce);
                e.array(&credential.signature);
                e.bool(credential.audit.is_some());
                if let Some(audit) = &credential.audit {
                    encode_transactions(&mut e, std::slice::from_ref(audit))?;
                }
                e.bytes.extend_from_slice(&request.encode()?);
            }
            Request::PutPayload { patient, record, payload } => {
                e.u8(22);
                e.array(&patient.0);
                e.u128(*record);
                long_bytes(&mut e, payload)?;
            }
            Request::ReadPayload(access) => {
                e.u8(23);
                e.bytes("transaction", access.bytes(), TRANSACTION_SIZE_MAX)?;
            }
            Request::AtShard { shard, request } => {
                e.u8(20);
                e.u32(*shard);
                e.bytes.extend_from_slice(&request.encode()?);
            }
        }
        Ok(e.bytes)
    }

    pub fn decode(kind: u8, payload: &[u8]) -> Result<Self, WireError> {
        let mut d = Decoder::new(payload);
        let request = match kind {
            1 => {
                // The batch is bounded by the list's own count, checked before anything is
                // decoded; the leading count must agree with it.
                let declared = d.count("batch", BATCH_TRANSACTIONS_MAX)?;
                let transactions = decode_transactions_within(&mut d, BATCH_TRANSACTIONS_MAX)?;
                if transactions.len() != declared {
                    return Err(DecodeError::Invalid("batch count").into());
                }
                Request::Submit(transactions)
            }
            2 => Request::Query(Query::decode_from(&mut d)?),
            3 => Request::Prove(d.u128()?),
            4 => Request::Checkpoint,
            5 => Request::Health,
            6 => Request::CheckpointAt(d.u64()?),
            10 => Request::Round(RoundRequest::decode_from(&mut d)?),
            11 => Request::Decide { round: d.u64()?, decisions: read_decisions(&mut d)? },
            12 => Request::Status,
            13 => {
                let count = d.count("ids", ROUND_TRANSACTIONS_MAX)?;
                Request::Lookup((0..count).map(|_| d.u128()).collect::<Result<_, _>>()?)
            }
            14 => {
                let now = d.u64()?;
                let count = d.count("entries", ROUND_TRANSACTIONS_MAX)?;
                let entries = (0..count).map(|_| Admission::decode_from(&mut d)).collect::<Result<_, _>>()?;
                Request::Admit { now, entries }
            }
            20 => {
                let shard = d.u32()?;
                let rest = d.take(d.remaining())?;
                let (&inner, payload) = rest.split_first().ok_or(DecodeError::Invalid("empty shard request"))?;
                if inner == 20 {
                    return Err(WireError::Malformed(DecodeError::Invalid("nested shard request")));
                }
                Request::AtShard { shard, request: Box::new(Request::decode(inner, payload)?) }
            }
            21 => {
                let (reader, timestamp, nonce, signature) = (ActorKey(d.array()?), d.u64()?, d.u64()?, d.array()?);
                let audit = if d.bool("audit")? {
                    let mut audit = decode_transactions_within(&mut d, 1)?;
                    Some(audit.pop().ok_or(DecodeError::Invalid("audit read"))?)
                } else {
                    None
                };
                let credential = Credential { reader, timestamp, nonce, signature, audit };
                let rest = d.take(d.remaining())?;
                let (&inner, payload) = rest.split_first().ok_or(DecodeError::Invalid("empty signed request"))?;
                // Only reads are signed this way (a query, a proof, a lookup), and the payload
                // store's requests.
                if !Self::SIGNED_KINDS.contains(&inner) {
                    return Err(WireError::Malformed(DecodeError::Invalid("a signed request is a read")));
                }
                Request::Signed { credential, request: Box::new(Request::decode(inner, payload)?) }
            }
            22 => Request::PutPayload {
                patient: ActorKey(d.array()?),
                record: d.u128()?,
                payload: read_long_bytes(&mut d)?,
            },
            23 => Request::ReadPayload(SignedTransaction::decode(d.bytes("transaction", TRANSACTION_SIZE_MAX)?)?),
            other => return Err(WireError::UnknownKind(other)),
        };
        d.finish()?;
        Ok(request)
    }
}

impl Response {
    pub fn error(code: u16, message: impl ToString) -> Self {
        Response::Error { code, message: message.to_string() }
    }

    pub fn encode(&self) -> Result<Vec<u8>, EncodeError> {
        let mut e = Encoder::new();
        match self {
            Response::Error { code, message } => {
                e.u8(0);
                e.u16(*code);
                let mut end = message.len().min(1024);
                while !message.is_char_boundary(end) {
                    end -= 1;
                }
                e.text("message", &message[..end], 1024)?;
            }
            Response::Busy => e.u8(1),
            Response::Results(outcomes) => {
                e.u8(2);
                e.count("results", outcomes.len(), BATCH_TRANSACTIONS_MAX)?;
                for outcome in outcomes {
                    match outcome {
                        Outcome::Done(result) => encode_result(&mut e, *result),
                        Outcome::Unavailable => e.u16(UNAVAILABLE),
                    }
                }
            }
            Response::Answer(answer) => {
                e.u8(3);
                answer.encode_into(&mut e)?;
            }
            Response::Proof(proof) => {
                e.u8(4);
                option(&mut e, proof, |e, p| p.encode_into(e))?;
            }
            Response::Checkpoint(checkpoint) => {
                e.u8(5);
                option(&mut e, checkpoint, |e, c| c.encode_into(e))?;
            }
            Response::Health { role, detail } => {
                e.u8(6);
                e.text("role", role, 64)?;
                e.text("detail", detail, 4096)?;
            }
            Response::RoundReply(reply) => {
                e.u8(10);
                reply.encode_into(&mut e)?;
            }
            Response::Decided(head) => {
                e.u8(11);
                e.u32(head.shard);
                e.u64(head.height);
                e.array(&head.hash);
            }
            Response::Status(status) => {
                e.u8(12);
                status.encode_into(&mut e)?;
            }
            Response::Lookup(found) => {
                e.u8(13);
                e.count("found", found.len(), ROUND_TRANSACTIONS_MAX)?;
                for result in found {
                    e.u16(result.map_or(UNAVAILABLE, TxResult::code));
                }
            }
            Response::Stored(hash) => {
                e.u8(14);
                e.array(hash);
            }
            Response::Payload(payload) => {
                e.u8(15);
                long_bytes(&mut e, payload)?;
            }
        }
        Ok(e.bytes)
    }

    pub fn decode(kind: u8, payload: &[u8]) -> Result<Self, WireError> {
        let mut d = Decoder::new(payload);
        let response = match kind {
            0 => Response::Error { code: d.u16()?, message: d.text("message", 1024)? },
            1 => Response::Busy,
            2 => {
                let count = d.count("results", BATCH_TRANSACTIONS_MAX)?;
                Response::Results(
                    (0..count)
                        .map(|_| match d.u16()? {
                            UNAVAILABLE => Ok(Outcome::Unavailable),
                            code => TxResult::from_code(code).map(Outcome::Done).ok_or(DecodeError::Invalid("result")),
                        })
                        .collect::<Result<_, DecodeError>>()?,
                )
            }
            3 => Response::Answer(Answer::decode_from(&mut d)?),
            4 => Response::Proof(read_option(&mut d, Proof::decode_from)?.map(Box::new)),
            5 => Response::Checkpoint(read_option(&mut d, Checkpoint::decode_from)?),
            6 => Response::Health { role: d.text("role", 64)?, detail: d.text("detail", 4096)? },
            10 => Response::RoundReply(RoundReply::decode_from(&mut d)?),
            11 => Response::Decided(ShardHead { shard: d.u32()?, height: d.u64()?, hash: d.array()? }),
            12 => Response::Status(Status::decode_from(&mut d)?),
            13 => {
                let count = d.count("found", ROUND_TRANSACTIONS_MAX)?;
                Response::Lookup(
                    (0..count)
                        .map(|_| match d.u16()? {
                            UNAVAILABLE => Ok(None),
                            code => TxResult::from_code(code).map(Some).ok_or(DecodeError::Invalid("result")),
                        })
                        .collect::<Result<_, DecodeError>>()?,
                )
            }
            14 => Response::Stored(d.array()?),
            15 => Response::Payload(read_long_bytes(&mut d)?),
            other => return Err(WireError::UnknownKind(other)),
        };
        d.finish()?;
        Ok(response)
    }
}

/// Writes one frame whose body (kind byte first) is `body`.
pub async fn write_frame(send: &mut quinn::SendStream, body: &[u8]) -> Result<(), WireError> {
    let length = body.len() + 1;
    if length > FRAME_MAX {
        return Err(WireError::TooLarge(length));
    }
    let mut frame = Vec::with_capacity(length + 4);
    frame.extend_from_slice(&(length as u32).to_be_bytes());
    frame.push(VERSION);
    frame.extend_from_slice(body);
    send.write_all(&frame).await?;
    Ok(())
}

/// Request bytes a server holds at once, over all connections and streams.
pub const REQUEST_BYTES_MAX: usize = 256 << 20;

/// A server's budget of request bytes: a frame's payload is read only once its size is taken
/// from the budget, and given back when the request is answered.
pub type ByteBudget = std::sync::Arc<tokio::sync::Semaphore>;

pub fn byte_budget() -> ByteBudget {
    std::sync::Arc::new(tokio::sync::Semaphore::new(REQUEST_BYTES_MAX >> 10))
}

/// Request bytes one connection may hold at once: one frame of the largest size.
pub const CONNECTION_BYTES_MAX: usize = FRAME_MAX + (1 << 20);

/// A connection's own budget, inside the server's.
pub fn connection_budget() -> ByteBudget {
    std::sync::Arc::new(tokio::sync::Semaphore::new(CONNECTION_BYTES_MAX >> 10))
}

/// Reads one frame within every one of `budgets` (see `read_frame`); the permits hold its bytes.
pub async fn read_frame_within(
    recv: &mut quinn::RecvStream,
    budgets: &[&ByteBudget],
) -> Result<(u8, Vec<u8>, Vec<tokio::sync::OwnedSemaphorePermit>), WireError> {
    let (length, kind) = read_head(recv).await?;
    let permits = budgets
        .iter()
        .map(|budget| (*budget).clone().try_acquire_many_owned((length >> 10) as u32 + 1).map_err(|_| WireError::Busy))
        .collect::<Result<Vec<_>, _>>()?;
    let mut payload = vec![0u8; length - 2];
    recv.read_exact(&mut payload).await?;
    Ok((kind, payload, permits))
}

/// Reads a frame's length, version and kind, and checks them.
async fn read_head(recv: &mut quinn::RecvStream) -> Result<(usize, u8), WireError> {
    let mut head = [0u8; 6];
    recv.read_exact(&mut head).await?;
    let length = u32::from_be_bytes(head[..4].try_into().expect("4 bytes")) as usize;
    if length > FRAME_MAX {
        return Err(WireError::TooLarge(length));
    }
    if length < 2 {
        return Err(WireError::Short);
    }
    if head[4] != VERSION {
        return Err(WireError::Version(head[4]));
    }
    Ok((length, head[5]))
}

/// Reads one frame and returns its kind and payload. The length is checked before anything
/// is allocated, and the version before the payload is read.
pub async fn read_frame(recv: &mut quinn::RecvStream) -> Result<(u8, Vec<u8>), WireError> {
    let (length, kind) = read_head(recv).await?;
    let mut payload = vec![0u8; length - 2];
    recv.read_exact(&mut payload).await?;
    Ok((kind, payload))
}

impl WireError {
    /// The error frame that answers a request this error spoiled.
    pub fn response(&self) -> Response {
        let code = match self {
            WireError::Busy => return Response::Busy,
            WireError::TooLarge(_) => error_code::TOO_LARGE,
            WireError::Version(_) => error_code::VERSION,
            WireError::UnknownKind(_) => error_code::UNKNOWN_KIND,
            _ => error_code::MALFORMED,
        };
        Response::error(code, self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use caduceus_engine::model::{ActorKey, Operation, Transaction};

    #[test]
    fn record_and_consent_reads_travel_and_come_back_the_same() {
        let patient = ActorKey([3; 32]);
        let record = Record {
            patient,
            custodian: ActorKey([4; 32]),
            resource_type: "Observation".into(),
            content_hash: [5; 32],
            previous_hash: [0; 32],
            version: 1,
            updated_at: 7,
            erased_at: Some(9),
            written_by: 10,
        };
        let consent = Consent {
            patient,
            grantee: ActorKey([4; 32]),
            scope: vec!["Observation".into()],
            purposes: caduceus_engine::model::Purposes(1),
            valid_from: 1,
            valid_until: 2,
            revoked_at: None,
            granted_by: 11,
            revoked_by: None,
        };
        let study =
            caduceus_engine::Study { investigator: patient, protocol: [6; 32], registered_at: 3, closed_at: Some(4) };
        let enrolment = caduceus_engine::Enrolment { consent: 12, enrolled_at: 5, withdrawn_at: None };
        let credential = caduceus_engine::ProviderCredential {
            issuer: ActorKey([5; 32]),
            subject: patient,
            kind: "license".into(),
            document: [7; 32],
            valid_from: 1,
            valid_until: 9,
            issued_at: 2,
            revoked_at: Some(3),
        };
        for query in [
            Query::Record(patient, 8),
            Query::Records(patient, Some(8), 10),
            Query::Consents(patient, None, 5),
            Query::Study(13),
            Query::Enrolment(patient, 13),
            Query::Credential(14),
        ] {
            let frame = Request::Query(query.clone()).encode().unwrap();
            assert_eq!(Request::decode(frame[0], &frame[1..]).unwrap(), Request::Query(query));
        }
        for answer in [
            Answer::Record(Some(record.clone())),
            Answer::Record(None),
            Answer::Records(Listing { entries: vec![(8, record)], next: Some(8) }),
            Answer::Consents(Listing { entries: vec![(2, consent)], next: None }),
            Answer::Study(Some(study)),
            Answer::Enrolment(Some(enrolment)),
            Answer::Credential(Some(credential)),
            Answer::Credential(None),
        ] {
            let frame = Response::Answer(answer.clone()).encode().unwrap();
            assert_eq!(Response::decode(frame[0], &frame[1..]).unwrap(), Response::Answer(answer));
        }
    }

    /// A submit frame whose leading count says one thing and whose list holds more than a
    /// batch may: refused from the list's count, before any transaction is decoded or applied.
    #[test]
    fn a_submit_frame_over_the_batch_limit_is_refused_when_decoded() {
        let transaction = Transaction {
            nonce: 1,
            signer: ActorKey([7; 32]),
            timestamp: 0,
            operation: Operation::FundAccount { amount: 1 },
            key: None,
        };
        let signed = SignedTransaction::from_parts(transaction, [0; 64]).unwrap();
        for (declared, listed) in
            [(1, BATCH_TRANSACTIONS_MAX + 1), (BATCH_TRANSACTIONS_MAX, BATCH_TRANSACTIONS_MAX + 1)]
        {
            let mut e = Encoder::new();
            e.count("batch", declared, BATCH_TRANSACTIONS_MAX).unwrap();
            encode_transactions(&mut e, &vec![signed.clone(); listed]).unwrap();
            let refused = Request::decode(1, &e.bytes);
            assert!(
                matches!(refused, Err(WireError::Malformed(DecodeError::TooLong { .. }))),
                "{declared} declared, {listed} listed: {refused:?}"
            );
        }
        // A leading count that disagrees with the list is refused too.
        let mut e = Encoder::new();
        e.count("batch", 3, BATCH_TRANSACTIONS_MAX).unwrap();
        encode_transactions(&mut e, &vec![signed.clone(); 2]).unwrap();
        assert!(matches!(Request::decode(1, &e.bytes), Err(WireError::Malformed(DecodeError::Invalid(_)))));
        // A batch at the limit decodes.
        let full = Request::Submit(vec![signed; BATCH_TRANSACTIONS_MAX]).encode().unwrap();
        assert!(
            matches!(Request::decode(full[0], &full[1..]), Ok(Request::Submit(t)) if t.len() == BATCH_TRANSACTIONS_MAX)
        );
    }
}
