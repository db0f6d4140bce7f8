//! The payload store: the health data a record's hash stands for, beside the ledger, encrypted.
//!
//! Each payload (a FHIR resource, a claim) is encrypted with its own random data key
//! (XChaCha20-Poly1305, a random 192-bit nonce, the patient and record as associated data), and
//! the ledger registers the blake3 hash of the ciphertext. The data key is kept only wrapped
//! under the exchange's key-encryption key (`KeyEncryptionKey`: a file here; an HSM or a KMS
//! behind the same trait). A payload is read only through an access the ledger commits as
//! permitted, and the ciphertext is checked against the hash on the ledger before it is
//! decrypted. Erasing a record destroys its data keys (crypto-shredding): its ciphertext can
//! then be decrypted by no one, while every chain, root and proof stays valid, because the
//! ledger never held the plaintext.
//!
//! The store is a key-value store of its own (RocksDB beside the ledger, `RocksStorage::
//! open_for_payloads`), keyed by one leading byte: `O` + content hash (nonce and ciphertext),
//! `K` + content hash (the wrapped data key), `V` + patient + record + content hash (a version
//! of the record, no value), `E` + patient + record + erasure id (an erasure submitted and not
//! yet settled; its value the erasure's signing time).
//! A batch of payloads is one write and one fsync. Erasing deletes a record's keys and
//! ciphertexts, then compacts the store (`Storage::compact`), so the deleted values leave every
//! file, logs included. The store does no ledger I/O of its own: it asks the [`RecordLedger`]
//! it is given (an embedded `Ledger`, or a cluster's coordinator).

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::Mutex;

use chacha20poly1305::aead::rand_core::RngCore;
use chacha20poly1305::aead::{Aead, KeyInit, OsRng, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use thiserror::Error;
use zeroize::Zeroizing;

use crate::ledger::Ledger;
use crate::model::{hex, unhex, ActorKey, Hash, Operation, Reason, SignedTransaction, TxId, TxResult};
use crate::state::Record;
use crate::storage::{Storage, StorageError};

/// What the payload store asks of the ledger it serves: an embedded [`Ledger`], or a cluster's
/// coordinator (which asks its shards).
pub trait RecordLedger {
    /// Submits one transaction and returns its result once it is durable.
    fn submit_one(&self, transaction: SignedTransaction) -> Result<TxResult, PayloadError>;
    /// Whether the ledger holds a transaction with this id.
    fn holds(&self, id: TxId) -> Result<bool, PayloadError>;
    /// A record's entry.
    fn record(&self, patient: &ActorKey, record: u128) -> Result<Option<Record>, PayloadError>;
}

/// An embedded ledger as the store asks it. Private, so that the store's questions (a record's
/// entry, with no reader) are no way around `Ledger::reads_as` for anyone else.
struct LedgerRecords<'a>(&'a Ledger);

impl RecordLedger for LedgerRecords<'_> {
    fn submit_one(&self, transaction: SignedTransaction) -> Result<TxResult, PayloadError> {
        let results = self.0.submit(vec![transaction]).map_err(|e| PayloadError::Ledger(e.to_string()))?;
        results.into_iter().next().ok_or_else(|| PayloadError::Ledger("no result".into()))
    }
    fn holds(&self, id: TxId) -> Result<bool, PayloadError> {
        Ok(self.0.locate(id).map_err(|e| PayloadError::Ledger(e.to_string()))?.is_some())
    }
    fn record(&self, patient: &ActorKey, record: u128) -> Result<Option<Record>, PayloadError> {
        self.0.record(patient, record).map_err(|e| PayloadError::Ledger(e.to_string()))
    }
}

/// A data key, wiped from memory when dropped.
pub type DataKey = Zeroizing<[u8; 32]>;

const NONCE_LENGTH: usize = 24;
/// Longest payload the store takes, in bytes.
pub const PAYLOAD_LENGTH_MAX: usize = 16 << 20;

/// Why a payload could not be stored, read or erased.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum PayloadError {
    /// The store's storage failed.
    #[error("the payload store: {0}")]
    Storage(#[from] StorageError),
    /// The key-encryption key's file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What went wrong.
        #[source]
        source: std::io::Error,
    },
    /// The transaction given to read or erase is not of that kind.
    #[error("a payload is read only through an access-record or emergency-access transaction, and erased only through an erase-record one; this is a {0}")]
    WrongOperation(&'static str),
    /// The access was used before: each read needs a new signed access, which the ledger logs.
    #[error("this access transaction was submitted before: each read is a new, logged access")]
    Replayed,
    /// The ledger did not commit the access or erasure.
    #[error("the ledger refused it: {0}")]
    Refused(Reason),
    /// The ledger could not be asked.
    #[error("the ledger: {0}")]
    Ledger(String),
    /// The record is not on the ledger.
    #[error("no such record on the ledger")]
    UnknownRecord,
    /// The record was erased: its data keys are destroyed.
    #[error("the record was erased: its payload can no longer be decrypted")]
    Erased,
    /// Nothing is stored under the record's content hash.
    #[error("no payload is stored for content hash {0}")]
    Missing(String),
    /// The stored ciphertext does not hash to what the ledger registered, or does not decrypt.
    #[error("the stored payload for content hash {0} was changed: it does not match the ledger")]
    Damaged(String),
    /// The key-encryption key does not open the wrapped data key.
    #[error("the key-encryption key does not open the data key (another key, or a damaged key file)")]
    Unwrap,
    /// Longer than `PAYLOAD_LENGTH_MAX`.
    #[error("a payload of {0} bytes is over the limit of {PAYLOAD_LENGTH_MAX}")]
    TooLong(usize),
    /// The system's random source failed.
    #[error("the system's random source failed")]
    Random,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> PayloadError + '_ {
    move |source| PayloadError::Io { path: path.to_owned(), source }
}

fn random<const N: usize>() -> Result<Zeroizing<[u8; N]>, PayloadError> {
    let mut bytes = Zeroizing::new([0u8; N]);
    OsRng.try_fill_bytes(bytes.as_mut()).map_err(|_| PayloadError::Random)?;
    Ok(bytes)
}

/// Seals `message` under `key`: a random nonce, then the ciphertext and its tag.
fn seal(key: &[u8; 32], message: &[u8], aad: &[u8]) -> Result<Vec<u8>, PayloadError> {
    let nonce = random::<NONCE_LENGTH>()?;
    let cipher = XChaCha20Poly1305::new(key.into());
    let sealed = cipher
        .encrypt(XNonce::from_slice(nonce.as_ref()), Payload { msg: message, aad })
        .map_err(|_| PayloadError::TooLong(message.len()))?;
    Ok([nonce.as_ref(), &sealed].concat())
}

/// Opens what `seal` made, or `None` if it was not sealed under this key and `aad`.
fn open(key: &[u8; 32], sealed: &[u8], aad: &[u8]) -> Option<Zeroizing<Vec<u8>>> {
    let (nonce, ciphertext) = sealed.split_at_checked(NONCE_LENGTH)?;
    let cipher = XChaCha20Poly1305::new(key.into());
    cipher.decrypt(XNonce::from_slice(nonce), Payload { msg: ciphertext, aad }).ok().map(Zeroizing::new)
}

/// The exchange's key-encryption key: it wraps every data key, and only it unwraps them. A file
/// here (`FileKek`); an HSM or a KMS can implement the same two calls.
pub trait KeyEncryptionKey: Send + Sync {
    /// The data key, wrapped and bound to `context`.
    fn wrap(&self, key: &DataKey, context: &[u8]) -> Result<Vec<u8>, PayloadError>;
    /// The data key `wrap` wrapped with the same context.
    fn unwrap(&self, wrapped: &[u8], context: &[u8]) -> Result<DataKey, PayloadError>;
}

/// A key-encryption key kept in a file (hex, mode 0600), outside the ledger's and the store's
/// directories.
pub struct FileKek {
    key: DataKey,
}

impl FileKek {
    /// Reads the key at `path`, or makes one there from the system's random source.
    pub fn open_or_create(path: &Path) -> Result<Self, PayloadError> {
        if path.exists() {
            let text = Zeroizing::new(std::fs::read_to_string(path).map_err(io(path))?);
            let bytes = Zeroizing::new(unhex(text.trim()).unwrap_or_default());
            let key: [u8; 32] = bytes.as_slice().try_into().map_err(|_| PayloadError::Io {
                path: path.to_owned(),
                source: std::io::Error::new(std::io::ErrorKind::InvalidData, "not a 32-byte key in hex"),
            })?;
            return Ok(Self { key: Zeroizing::new(key) });
        }
        let key = random::<32>()?;
        write_durable(path, format!("{}\n", hex(key.as_ref())).as_bytes())?;
        Ok(Self { key })
    }
}

impl KeyEncryptionKey for FileKek {
    fn wrap(&self, key: &DataKey, context: &[u8]) -> Result<Vec<u8>, PayloadError> {
        seal(&self.key, key.as_ref(), context)
    }
    fn unwrap(&self, wrapped: &[u8], context: &[u8]) -> Result<DataKey, PayloadError> {
        let opened = open(&self.key, wrapped, context).ok_or(PayloadError::Unwrap)?;
        let key: [u8; 32] = opened.as_slice().try_into().map_err(|_| PayloadError::Unwrap)?;
        Ok(Zeroizing::new(key))
    }
}

/// Writes a file and makes it durable: a temporary file, fsynced, renamed into place, and the
/// directory fsynced; readable by its owner only.
fn write_durable(path: &Path, bytes: &[u8]) -> Result<(), PayloadError> {
    use std::io::Write;
    let temporary = path.with_extension("partial");
    // A stale temporary file (a crash mid-write) goes first; then it is created anew, never
    // followed through a link or left with another mode.
    match std::fs::remove_file(&temporary) {
        Err(error) if error.kind() != std::io::ErrorKind::NotFound => return Err(io(&temporary)(error)),
        _ => {}
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(&temporary).map_err(io(&temporary))?;
    let written = file
        .write_all(bytes)
        .and_then(|()| file.sync_all())
        .map_err(io(&temporary))
        .and_then(|()| std::fs::rename(&temporary, path).map_err(io(path)));
    if written.is_err() {
        let _ = std::fs::remove_file(&temporary);
    }
    written?;
    sync_directory(path)
}

fn sync_directory(path: &Path) -> Result<(), PayloadError> {
    let directory = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::File::open(directory).and_then(|d| d.sync_all()).map_err(io(directory))
}

/// The associated data of a record's payload: which record it belongs to.
fn payload_context(patient: &ActorKey, record: u128) -> Vec<u8> {
    [b"caduceus.payload.1".as_slice(), &patient.0, &record.to_be_bytes()].concat()
}

/// A payload sealed for the store, not yet stored: what `PayloadStore::store` writes.
pub struct Sealed {
    /// The content hash the ledger registers: blake3 of `object`.
    pub hash: Hash,
    patient: ActorKey,
    record: u128,
    object: Vec<u8>,
    wrapped: Vec<u8>,
}

const OBJECT: u8 = b'O';
const KEY: u8 = b'K';
const VERSION: u8 = b'V';
const ERASING: u8 = b'E';

fn object_key(hash: &Hash) -> Vec<u8> {
    [&[OBJECT][..], hash].concat()
}
fn key_key(hash: &Hash) -> Vec<u8> {
    [&[KEY][..], hash].concat()
}
fn versions_prefix(patient: &ActorKey, record: u128) -> Vec<u8> {
    [&[VERSION][..], &patient.0, &record.to_be_bytes()].concat()
}
fn erasures_prefix(patient: &ActorKey, record: u128) -> Vec<u8> {
    [&[ERASING][..], &patient.0, &record.to_be_bytes()].concat()
}
fn erasing_key(erasure: &Erasure) -> Vec<u8> {
    [erasures_prefix(&erasure.patient, erasure.record), erasure.id.to_be_bytes().to_vec()].concat()
}

/// An erasure submitted to the ledger: the record it erases and the transaction's id and
/// signing time. Marked in the store before it is submitted (`mark_erasing`), each by its own
/// id, so that no other transaction's outcome can drop its mark.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Erasure {
    /// Whose record.
    pub patient: ActorKey,
    /// Which record.
    pub record: u128,
    /// The `erase-record` transaction's id.
    pub id: TxId,
    /// When it was signed: it can commit only within `TRANSACTION_VALIDITY_MS` of this.
    pub signed_at: u64,
}

impl Erasure {
    /// The erasure `transaction` asks for, if it is an `erase-record`.
    pub fn of(transaction: &SignedTransaction) -> Option<Self> {
        match &transaction.transaction.operation {
            Operation::EraseRecord { patient, record } => Some(Self {
                patient: *patient,
                record: *record,
                id: transaction.id(),
                signed_at: transaction.transaction.timestamp,
            }),
            _ => None,
        }
    }
}
/// The (patient, record) of a `V` or `E` key.
fn record_of(key: &[u8]) -> Option<(ActorKey, u128)> {
    let patient = ActorKey(key.get(1..33)?.try_into().ok()?);
    Some((patient, u128::from_be_bytes(key.get(33..49)?.try_into().ok()?)))
}

/// The payload store of one ledger (see the module's documentation).
pub struct PayloadStore {
    storage: Arc<dyn Storage>,
    kek: Box<dyn KeyEncryptionKey>,
    /// Access transactions being submitted by `read` now: one use each.
    reading: Mutex<HashSet<TxId>>,
}

impl PayloadStore {
    /// A store on `storage` (its own, never the ledger's), with the exchange's key-encryption key.
    pub fn new(storage: Arc<dyn Storage>, kek: Box<dyn KeyEncryptionKey>) -> Self {
        Self { storage, kek, reading: Mutex::new(HashSet::new()) }
    }

    /// The store beside an embedded ledger in `ledger_dir`: `DIR.payloads`, with its
    /// key-encryption key in the file `DIR.kek` (made on first use).
    #[cfg(feature = "rocksdb")]
    pub fn beside(ledger_dir: &Path) -> Result<Self, PayloadError> {
        let kek = FileKek::open_or_create(&ledger_dir.with_extension("kek"))?;
        let storage = crate::storage::RocksStorage::open_for_payloads(&ledger_dir.with_extension("payloads"))?;
        Ok(Self::new(Arc::new(storage), Box::new(kek)))
    }

    /// Encrypts a version of a record's payload under a fresh data key and wraps that key; the
    /// result's `hash` is what the ledger registers (`register-record`, `amend-record`). CPU
    /// only: `store` makes it durable.
    pub fn seal(&self, patient: &ActorKey, record: u128, payload: &[u8]) -> Result<Sealed, PayloadError> {
        if payload.len() > PAYLOAD_LENGTH_MAX {
            return Err(PayloadError::TooLong(payload.len()));
        }
        let context = payload_context(patient, record);
        let data_key = random::<32>()?;
        let object = seal(&data_key, payload, &context)?;
        let hash = *blake3::hash(&object).as_bytes();
        let wrapped = self.kek.wrap(&data_key, &[context.as_slice(), &hash].concat())?;
        Ok(Sealed { hash, patient: *patient, record, object, wrapped })
    }

    /// Stores sealed payloads: one write, durable when it returns.
    pub fn store(&self, sealed: &[Sealed]) -> Result<(), PayloadError> {
        let mut writes = Vec::with_capacity(3 * sealed.len());
        for payload in sealed {
            writes.push((object_key(&payload.hash), Some(payload.object.clone())));
            writes.push((key_key(&payload.hash), Some(payload.wrapped.clone())));
            let version = [versions_prefix(&payload.patient, payload.record), payload.hash.to_vec()].concat();
            writes.push((version, Some(Vec::new())));
        }
        Ok(self.storage.write(&writes)?)
    }

    /// `seal` and `store` one payload; returns its content hash.
    pub fn put(&self, patient: &ActorKey, record: u128, payload: &[u8]) -> Result<Hash, PayloadError> {
        let sealed = self.seal(patient, record, payload)?;
        self.store(std::slice::from_ref(&sealed))?;
        Ok(sealed.hash)
    }

    /// Reads a record's payload through an access: submits `access` (an `access-record` or
    /// `emergency-access` signed by the reader) and, once the ledger has committed it as
    /// permitted, returns the current version's plaintext, checked against the content hash on
    /// the ledger. A denied access is logged on the ledger like any other, and answered
    /// `Refused`. An access reads once: one the ledger holds already (a replay, which the ledger
    /// would answer with its first result and not log again) is refused, so every read is on
    /// the patient's report. The plaintext goes to whoever calls: the embedding platform hands
    /// it only to the access's signer, whom it has authenticated.
    pub fn read(&self, ledger: &Ledger, access: SignedTransaction) -> Result<Zeroizing<Vec<u8>>, PayloadError> {
        self.read_through(&LedgerRecords(ledger), access)
    }

    /// `read`, asking another ledger (a cluster's coordinator).
    pub fn read_through(
        &self,
        ledger: &dyn RecordLedger,
        access: SignedTransaction,
    ) -> Result<Zeroizing<Vec<u8>>, PayloadError> {
        let (patient, record) = match &access.transaction.operation {
            Operation::AccessRecord { patient, record, .. } | Operation::EmergencyAccess { patient, record, .. } => {
                (*patient, *record)
            }
            other => return Err(PayloadError::WrongOperation(other.name())),
        };
        let id = access.id();
        if !self.reading.lock().insert(id) {
            return Err(PayloadError::Replayed);
        }
        let submitted = (|| {
            if ledger.holds(id)? {
                return Err(PayloadError::Replayed);
            }
            ledger.submit_one(access)
        })();
        self.reading.lock().remove(&id);
        match submitted? {
            TxResult::Committed => {}
            TxResult::Rejected(Reason::RecordErased) => return Err(PayloadError::Erased),
            TxResult::Rejected(reason) => return Err(PayloadError::Refused(reason)),
        }
        let current = ledger.record(&patient, record)?.ok_or(PayloadError::UnknownRecord)?;
        if current.erased_at.is_some() {
            return Err(PayloadError::Erased);
        }
        self.open_version(&patient, record, &current.content_hash)
    }

    /// Decrypts a stored version, after checking it against its content hash.
    fn open_version(&self, patient: &ActorKey, record: u128, hash: &Hash) -> Result<Zeroizing<Vec<u8>>, PayloadError> {
        let object = self.storage.get(&object_key(hash))?.ok_or_else(|| PayloadError::Missing(hex(hash)))?;
        if blake3::hash(&object).as_bytes() != hash {
            return Err(PayloadError::Damaged(hex(hash)));
        }
        let wrapped = self.storage.get(&key_key(hash))?.ok_or(PayloadError::Erased)?;
        let context = payload_context(patient, record);
        let data_key = self.kek.unwrap(&wrapped, &[context.as_slice(), hash].concat())?;
        open(&data_key, &object, &context).ok_or_else(|| PayloadError::Damaged(hex(hash)))
    }

    /// Erases a record: submits `erase` (an `erase-record` signed by the patient or an
    /// operator) and, once the ledger has committed it, destroys the data key and the
    /// ciphertext of every version of the record (shredding). Returns how many versions.
    pub fn erase(&self, ledger: &Ledger, erase: SignedTransaction) -> Result<usize, PayloadError> {
        self.erase_through(&LedgerRecords(ledger), erase)
    }

    /// `erase`, asking another ledger (a cluster's coordinator).
    pub fn erase_through(&self, ledger: &dyn RecordLedger, erase: SignedTransaction) -> Result<usize, PayloadError> {
        let erasure = Erasure::of(&erase).ok_or(PayloadError::WrongOperation(erase.transaction.operation.name()))?;
        self.mark_erasing(&[erasure])?;
        let result = ledger.submit_one(erase)?;
        let shredded = self.erasures_done(&[(erasure, result)])?;
        match result {
            TxResult::Rejected(reason) if reason != Reason::RecordErased => Err(PayloadError::Refused(reason)),
            _ => Ok(shredded),
        }
    }

    /// Marks erasures about to be submitted (durably, one write), so that one committed just
    /// before a stop is shredded when the store settles (`settle_erasures`, `settle`).
    pub fn mark_erasing(&self, erasures: &[Erasure]) -> Result<(), PayloadError> {
        let writes: Vec<_> =
            erasures.iter().map(|e| (erasing_key(e), Some(e.signed_at.to_le_bytes().to_vec()))).collect();
        Ok(self.storage.write(&writes)?)
    }

    /// Settles erasures whose results the ledger gave, in one write: a committed one (or one of
    /// a record erased before: a repeat, or an erasure whose shredding a stop interrupted)
    /// shreds the record's versions and drops every mark of the record; a refused one drops its
    /// own mark only. Compacts the store once if anything was shredded. Returns how many
    /// versions it shredded.
    pub fn erasures_done(&self, done: &[(Erasure, TxResult)]) -> Result<usize, PayloadError> {
        let mut writes = Vec::new();
        let mut shredded = std::collections::BTreeSet::new();
        let mut versions = 0;
        for (erasure, result) in done {
            match result {
                TxResult::Committed | TxResult::Rejected(Reason::RecordErased) => {
                    if shredded.insert((erasure.patient, erasure.record)) {
                        versions += self.shred_writes(&erasure.patient, erasure.record, &mut writes)?;
                    }
                }
                TxResult::Rejected(_) => writes.push((erasing_key(erasure), None)),
            }
        }
        self.write_and_compact(&writes, versions > 0)?;
        Ok(versions)
    }

    /// Settles the marked erasures (`mark_erasing`) whose results were never seen (a stop, or a
    /// shard that did not answer): shreds the records the ledger has erased, and drops the
    /// marks of erasures that can no longer commit (signed more than `TRANSACTION_VALIDITY_MS`
    /// before `now`). Returns how many records it shredded.
    pub fn settle_erasures(&self, ledger: &dyn RecordLedger, now: u64) -> Result<usize, PayloadError> {
        let mut writes = Vec::new();
        let (erased, versions) = self.settle_marks(ledger, now, &mut writes)?;
        self.write_and_compact(&writes, versions > 0)?;
        Ok(erased.len())
    }

    /// Shreds what the ledger says is erased but the store still holds, marked or not (an
    /// erasure submitted to the ledger directly, or committed just before a stop), and settles
    /// marks as `settle_erasures` does, all in one write and at most one compaction. Reads
    /// every stored record: run it after opening an embedded ledger. Returns how many records
    /// it shredded.
    pub fn settle(&self, ledger: &Ledger, now: u64) -> Result<usize, PayloadError> {
        let ledger = LedgerRecords(ledger);
        let mut writes = Vec::new();
        let (mut erased, mut versions) = self.settle_marks(&ledger, now, &mut writes)?;
        let mut records = std::collections::BTreeSet::new();
        self.storage.scan(&[VERSION], &mut |key, _| {
            records.extend(record_of(key));
            true
        })?;
        for (patient, record) in records {
            if !erased.contains(&(patient, record))
                && ledger.record(&patient, record)?.is_some_and(|r| r.erased_at.is_some())
            {
                versions += self.shred_writes(&patient, record, &mut writes)?;
                erased.insert((patient, record));
            }
        }
        self.write_and_compact(&writes, versions > 0)?;
        Ok(erased.len())
    }

    /// The writes that settle the marks: the records the ledger has erased (returned, with how
    /// many versions they had) shredded, and the marks of erasures that can no longer commit
    /// dropped.
    fn settle_marks(
        &self,
        ledger: &dyn RecordLedger,
        now: u64,
        writes: &mut Vec<(Vec<u8>, Option<Vec<u8>>)>,
    ) -> Result<(std::collections::BTreeSet<(ActorKey, u128)>, usize), PayloadError> {
        let mut marked: Vec<(Vec<u8>, u64)> = Vec::new();
        self.storage.scan(&[ERASING], &mut |key, value| {
            let signed_at = value.try_into().map(u64::from_le_bytes).unwrap_or(0);
            marked.push((key.to_vec(), signed_at));
            true
        })?;
        let (mut erased, mut versions) = (std::collections::BTreeSet::new(), 0);
        for (key, signed_at) in marked {
            let Some((patient, record)) = record_of(&key) else { continue };
            if erased.contains(&(patient, record)) {
                continue;
            }
            if ledger.record(&patient, record)?.is_some_and(|r| r.erased_at.is_some()) {
                erased.insert((patient, record));
                versions += self.shred_writes(&patient, record, writes)?;
            } else if signed_at.saturating_add(crate::limits::TRANSACTION_VALIDITY_MS) < now {
                writes.push((key, None));
            }
        }
        Ok((erased, versions))
    }

    /// The deletes that shred a record (only one the ledger has erased): every version's
    /// wrapped data key, ciphertext and entry, and every erasure mark of the record. Returns
    /// how many versions. Written, then the store compacted (`write_and_compact`), the deleted
    /// values leave its files.
    fn shred_writes(
        &self,
        patient: &ActorKey,
        record: u128,
        writes: &mut Vec<(Vec<u8>, Option<Vec<u8>>)>,
    ) -> Result<usize, PayloadError> {
        let prefix = versions_prefix(patient, record);
        let mut versions = Vec::new();
        self.storage.scan(&prefix, &mut |key, _| {
            versions.push(key.to_vec());
            true
        })?;
        for version in &versions {
            let hash: Hash = version[prefix.len()..].try_into().map_err(|_| PayloadError::Damaged(hex(version)))?;
            writes.extend([(key_key(&hash), None), (object_key(&hash), None), (version.clone(), None)]);
        }
        self.storage.scan(&erasures_prefix(patient, record), &mut |key, _| {
            writes.push((key.to_vec(), None));
            true
        })?;
        Ok(versions.len())
    }

    /// One durable write; then, if it shredded anything, a compaction of the whole store.
    fn write_and_compact(&self, writes: &[(Vec<u8>, Option<Vec<u8>>)], shredded: bool) -> Result<(), PayloadError> {
        if !writes.is_empty() {
            self.storage.write(writes)?;
        }
        if shredded {
            self.storage.compact()?;
        }
        Ok(())
    }
}
