//! ed25519 signing and batch verification.
//!
//! A batch is split into chunks (up to `VERIFY_CHUNK_MAX`, enough for every
//! thread of the rayon pool to get one) checked with `verify_batch`. A chunk
//! that fails is bisected to find the bad signatures, so a forgery costs its
//! chunk a few more batch checks, never the batch its verdict. Weak
//! (small-order) keys are refused outright.
//!
//! The defence against a client that puts a bad signature in every chunk, to
//! make the ledger search every chunk: the failing chunks of a batch are
//! searched only when there are at most `BAD_CHUNKS_TOLERATED` of them (an
//! honest client's occasional bad transaction); otherwise they are refused
//! whole (`batch-abandoned`, resubmit in a good batch), so a hostile batch
//! costs one batched check of its signatures and nothing after it. The
//! ledger also verifies the batches of a client that sent bad signatures only
//! when no other client's batch is waiting (see `Ledger::submit_async_from`).

use std::time::{Duration, Instant};

use parking_lot::RwLock;

pub use ed25519_dalek::SigningKey;
use ed25519_dalek::{Signature, Signer, Verifier, VerifyingKey};
use rayon::prelude::*;

use crate::codec::EncodeError;
use crate::limits::{BAD_CHUNKS_TOLERATED, KEY_CACHE_ENTRIES_MAX, VERIFY_CHUNK_MAX, VERIFY_CHUNK_MIN};
use crate::model::{ActorKey, Reason, SignedTransaction, Transaction};

/// A signing key derived from 32 secret bytes.
pub fn signing_key(seed: [u8; 32]) -> SigningKey {
    SigningKey::from_bytes(&seed)
}

/// The actor key (public key) of a signing key.
pub fn actor_key(key: &SigningKey) -> ActorKey {
    ActorKey(key.verifying_key().to_bytes())
}

/// Encodes and signs a transaction. Its `signer` must be `key`'s actor key.
pub fn sign(transaction: Transaction, key: &SigningKey) -> Result<SignedTransaction, EncodeError> {
    assert_eq!(transaction.signer, actor_key(key), "transaction signer must match the signing key");
    let unsigned = SignedTransaction::from_parts(transaction, [0; 64])?;
    let signature = key.sign(unsigned.body());
    SignedTransaction::from_parts(std::sync::Arc::unwrap_or_clone(unsigned.transaction), signature.to_bytes())
}

/// Parses a signer's key, refusing invalid and weak keys.
fn parse_key(actor: &ActorKey) -> Result<VerifyingKey, Reason> {
    let key = VerifyingKey::from_bytes(&actor.0).map_err(|_| Reason::BadSignature)?;
    if key.is_weak() {
        return Err(Reason::WeakKey);
    }
    Ok(key)
}

/// Checks signatures, keeping the signers' decompressed keys.
///
/// Decompressing a public key costs about as much as a third of a batched
/// signature check, and the same actors sign again and again, so a verifier
/// keeps up to `KEY_CACHE_ENTRIES_MAX` of them (forgetting all when full).
#[derive(Default)]
pub struct SignatureVerifier {
    keys: RwLock<crate::state::Map<ActorKey, VerifyingKey>>,
}

impl SignatureVerifier {
    pub fn new() -> Self {
        Self::default()
    }

    fn key(&self, actor: &ActorKey) -> Result<VerifyingKey, Reason> {
        if let Some(key) = self.keys.read().get(actor) {
            return Ok(*key);
        }
        let key = parse_key(actor)?;
        let mut keys = self.keys.write();
        if keys.len() >= KEY_CACHE_ENTRIES_MAX {
            keys.clear();
        }
        keys.insert(*actor, key);
        Ok(key)
    }

    fn check_one(&self, transaction: &SignedTransaction) -> Option<Reason> {
        let key = match self.key(&transaction.transaction.signer) {
            Ok(key) => key,
            Err(reason) => return Some(reason),
        };
        let signature = Signature::from_bytes(&transaction.signature());
        key.verify(transaction.body(), &signature).err().map(|_| Reason::BadSignature)
    }

    /// The first, batched check of a chunk: its verdicts, or the parsed keys of a chunk that failed.
    fn check_chunk(&self, chunk: &[SignedTransaction]) -> Result<Vec<Option<Reason>>, Vec<VerifyingKey>> {
        let mut keys = Vec::with_capacity(chunk.len());
        for transaction in chunk {
            match self.key(&transaction.transaction.signer) {
                Ok(key) => keys.push(key),
                // A bad key spoils the batch call: check this chunk one by one.
                Err(_) => return Ok(chunk.iter().map(|t| self.check_one(t)).collect()),
            }
        }
        if batch_valid(chunk, &keys) {
            Ok(vec![None; chunk.len()])
        } else {
            Err(keys)
        }
    }

    /// Finds the bad signatures of a chunk known to hold some: halves that pass
    /// are done, halves that fail are split again, down to single checks.
    fn search(&self, chunk: &[SignedTransaction], keys: &[VerifyingKey], verdicts: &mut [Option<Reason>]) {
        if chunk.len() <= 4 {
            for (transaction, verdict) in chunk.iter().zip(verdicts) {
                *verdict = self.check_one(transaction);
            }
            return;
        }
        let middle = chunk.len() / 2;
        let (left, right) = chunk.split_at(middle);
        let (left_keys, right_keys) = keys.split_at(middle);
        let (left_verdicts, right_verdicts) = verdicts.split_at_mut(middle);
        let left_valid = batch_valid(left, left_keys);
        if !left_valid {
            self.search(left, left_keys, left_verdicts);
        }
        // When the left half passed, the right one must hold the bad signature.
        if !left_valid && batch_valid(right, right_keys) {
            return;
        }
        self.search(right, right_keys, right_verdicts);
    }

    /// Checks every signature of one submitted batch; `None` means valid, otherwise the reason
    /// it is refused. The verdicts depend only on the batch, never on timing.
    pub fn verify(&self, transactions: &[SignedTransaction]) -> Vec<Option<Reason>> {
        let size = chunk_size(transactions.len());
        let checked: Vec<_> = transactions.par_chunks(size).map(|chunk| self.check_chunk(chunk)).collect();
        let search = checked.iter().filter(|c| c.is_err()).count() <= BAD_CHUNKS_TOLERATED;
        transactions
            .par_chunks(size)
            .zip(checked)
            .flat_map_iter(|(chunk, check)| match check {
                Ok(verdicts) => verdicts,
                Err(keys) if search => {
                    let mut verdicts = vec![None; chunk.len()];
                    self.search(chunk, &keys, &mut verdicts);
                    verdicts
                }
                Err(_) => vec![Some(Reason::BatchAbandoned); chunk.len()],
            })
            .collect()
    }
}

/// Chunks as large as the batch allows while every thread of the pool gets one: a larger
/// `verify_batch` call checks each signature faster.
pub fn chunk_size(count: usize) -> usize {
    count.div_ceil(rayon::current_num_threads().max(1)).clamp(VERIFY_CHUNK_MIN, VERIFY_CHUNK_MAX)
}

fn batch_valid(chunk: &[SignedTransaction], keys: &[VerifyingKey]) -> bool {
    let messages: Vec<&[u8]> = chunk.iter().map(SignedTransaction::body).collect();
    let signatures: Vec<Signature> = chunk.iter().map(|t| Signature::from_bytes(&t.signature())).collect();
    ed25519_dalek::verify_batch(&messages, &signatures, keys).is_ok()
}

/// Checks every signature with a fresh verifier; `None` means valid.
pub fn verify_all(transactions: &[SignedTransaction]) -> Vec<Option<Reason>> {
    SignatureVerifier::new().verify(transactions)
}

/// Raw ed25519 `verify_batch` throughput (signatures per second) on `threads`
/// threads, measured for about `duration` over batches of `VERIFY_CHUNK_MAX`,
/// the largest (and so fastest per signature) batch the engine uses.
///
/// This is the physical ceiling of a signed ledger on this machine, and the
/// reference every throughput figure is reported against.
pub fn measure_verify_batch_rate(threads: usize, duration: Duration) -> f64 {
    measure_verify_rate(threads, duration, |messages, signatures, keys| {
        ed25519_dalek::verify_batch(messages, signatures, keys).expect("reference signatures verify");
    })
}

/// Raw ed25519 one-by-one `verify` throughput (signatures per second) on `threads` threads:
/// what checking every signature on its own would cost.
pub fn measure_verify_one_rate(threads: usize, duration: Duration) -> f64 {
    measure_verify_rate(threads, duration, |messages, signatures, keys| {
        for ((message, signature), key) in messages.iter().zip(signatures).zip(keys) {
            key.verify(message, signature).expect("reference signatures verify");
        }
    })
}

/// Runs `check` over `VERIFY_CHUNK_MAX` signed messages on every thread of a new pool for about
/// `duration`, and returns signatures checked per second.
fn measure_verify_rate(
    threads: usize,
    duration: Duration,
    check: impl Fn(&[&[u8]], &[Signature], &[VerifyingKey]) + Sync,
) -> f64 {
    let keys: Vec<SigningKey> = (0..VERIFY_CHUNK_MAX as u64)
        .map(|i| {
            let mut seed = [7u8; 32];
            seed[..8].copy_from_slice(&i.to_le_bytes());
            signing_key(seed)
        })
        .collect();
    let messages: Vec<Vec<u8>> = (0..VERIFY_CHUNK_MAX as u64).map(|i| i.to_le_bytes().repeat(20)).collect();
    let signatures: Vec<Signature> = keys.iter().zip(&messages).map(|(k, m)| k.sign(m)).collect();
    let verifying: Vec<VerifyingKey> = keys.iter().map(SigningKey::verifying_key).collect();
    let message_refs: Vec<&[u8]> = messages.iter().map(Vec::as_slice).collect();
    let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().expect("thread pool");
    let started = Instant::now();
    let rounds: u64 = pool.install(|| {
        (0..threads)
            .into_par_iter()
            .map(|_| {
                let mut count = 0u64;
                while started.elapsed() < duration {
                    check(&message_refs, &signatures, &verifying);
                    count += 1;
                }
                count
            })
            .sum()
    });
    (rounds * VERIFY_CHUNK_MAX as u64) as f64 / started.elapsed().as_secs_f64()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Operation;

    fn signed(seed: u8, id: u128) -> SignedTransaction {
        let key = signing_key([seed; 32]);
        let transaction =
            Transaction { id, signer: actor_key(&key), timestamp: 1, operation: Operation::FundAccount { amount: 5 } };
        sign(transaction, &key).unwrap()
    }

    #[test]
    fn finds_the_one_bad_signature_in_a_large_batch() {
        let mut batch: Vec<SignedTransaction> = (0..600).map(|i| signed((i % 7) as u8 + 1, i)).collect();
        spoil(&mut batch, 300);
        let verdicts = verify_all(&batch);
        assert_eq!(verdicts.iter().filter(|v| v.is_some()).count(), 1);
        assert_eq!(verdicts[300], Some(Reason::BadSignature));
    }

    fn spoil(batch: &mut [SignedTransaction], position: usize) {
        let mut bytes = batch[position].bytes().to_vec();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        batch[position] = SignedTransaction::decode(&bytes).unwrap();
    }

    #[test]
    fn the_search_finds_every_bad_signature_of_a_failing_chunk() {
        let mut batch: Vec<SignedTransaction> = (0..300).map(|i| signed((i % 5) as u8 + 1, i)).collect();
        // All in the first chunk, which is searched.
        let size = chunk_size(batch.len());
        let bad = [0, 1, size / 2, size / 2 + 1, size - 1];
        for position in bad {
            spoil(&mut batch, position);
        }
        let verdicts = verify_all(&batch);
        for (position, verdict) in verdicts.iter().enumerate() {
            let expected = bad.contains(&position).then_some(Reason::BadSignature);
            assert_eq!(*verdict, expected, "position {position}");
        }
    }

    #[test]
    fn a_bad_signature_in_every_chunk_abandons_the_failing_chunks_unsearched() {
        let count = 4 * VERIFY_CHUNK_MAX;
        let mut batch: Vec<SignedTransaction> = (0..count as u128).map(|i| signed((i % 7) as u8 + 1, i)).collect();
        let size = chunk_size(count);
        let chunks = count.div_ceil(size);
        assert!(chunks >= 2, "the batch spans several chunks");
        for chunk in 0..chunks {
            spoil(&mut batch, chunk * size + 3);
        }
        let verdicts = verify_all(&batch);
        assert!(verdicts.iter().all(|v| *v == Some(Reason::BatchAbandoned)));
        // With one good chunk, that chunk passes and only the failing ones are refused.
        batch[3] = signed(4, 3); // as built above: key (3 % 7) + 1
        let verdicts = verify_all(&batch);
        assert!(verdicts[..size].iter().all(Option::is_none));
        assert!(verdicts[size..].iter().all(|v| *v == Some(Reason::BatchAbandoned)));
    }

    #[test]
    fn a_changed_body_fails_and_a_weak_key_is_refused() {
        let good = signed(3, 1);
        let mut bytes = good.bytes().to_vec();
        bytes[5] ^= 0x40; // inside the id
        let changed = SignedTransaction::decode(&bytes).unwrap();
        // The identity point is a small-order (weak) key.
        let mut weak_key = [0u8; 32];
        weak_key[0] = 1;
        let weak = SignedTransaction::from_parts(
            Transaction {
                id: 2,
                signer: ActorKey(weak_key),
                timestamp: 0,
                operation: Operation::FundAccount { amount: 1 },
            },
            [0; 64],
        )
        .unwrap();
        assert_eq!(verify_all(&[good, changed, weak]), vec![None, Some(Reason::BadSignature), Some(Reason::WeakKey)]);
    }
}
