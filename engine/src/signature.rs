//! ed25519 signing and batch verification.
//!
//! Signatures are checked in chunks of `VERIFY_CHUNK_SIZE` with `verify_batch`
//! on the rayon pool; a chunk that fails is checked one by one to find the bad
//! signatures, so one forgery costs its chunk the slower path, never the batch
//! its verdict. Weak (small-order) keys are refused outright.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use parking_lot::RwLock;

pub use ed25519_dalek::SigningKey;
use ed25519_dalek::{Signature, Signer, Verifier, VerifyingKey};
use rayon::prelude::*;

use crate::codec::EncodeError;
use crate::limits::{KEY_CACHE_ENTRIES_MAX, VERIFY_CHUNK_SIZE};
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
    SignedTransaction::from_parts(unsigned.transaction, signature.to_bytes())
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
    keys: RwLock<HashMap<ActorKey, VerifyingKey>>,
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

    fn check_chunk(&self, chunk: &[SignedTransaction]) -> Vec<Option<Reason>> {
        let mut keys = Vec::with_capacity(chunk.len());
        for transaction in chunk {
            match self.key(&transaction.transaction.signer) {
                Ok(key) => keys.push(key),
                // A bad key spoils the batch call: check this chunk one by one.
                Err(_) => return chunk.iter().map(|t| self.check_one(t)).collect(),
            }
        }
        let messages: Vec<&[u8]> = chunk.iter().map(SignedTransaction::body).collect();
        let signatures: Vec<Signature> = chunk.iter().map(|t| Signature::from_bytes(&t.signature())).collect();
        match ed25519_dalek::verify_batch(&messages, &signatures, &keys) {
            Ok(()) => vec![None; chunk.len()],
            Err(_) => chunk.iter().map(|t| self.check_one(t)).collect(),
        }
    }

    /// Checks every signature; `None` means valid, otherwise the reason it is refused.
    pub fn verify(&self, transactions: &[SignedTransaction]) -> Vec<Option<Reason>> {
        transactions.par_chunks(VERIFY_CHUNK_SIZE).flat_map_iter(|chunk| self.check_chunk(chunk)).collect()
    }
}

/// Checks every signature with a fresh verifier; `None` means valid.
pub fn verify_all(transactions: &[SignedTransaction]) -> Vec<Option<Reason>> {
    SignatureVerifier::new().verify(transactions)
}

/// Raw ed25519 `verify_batch` throughput (signatures per second) on `threads`
/// threads, measured for about `duration` over chunks of `VERIFY_CHUNK_SIZE`.
///
/// This is the physical ceiling of a signed ledger on this machine, and the
/// reference every throughput figure is reported against.
pub fn measure_verify_batch_rate(threads: usize, duration: Duration) -> f64 {
    let keys: Vec<SigningKey> = (0..VERIFY_CHUNK_SIZE as u64)
        .map(|i| {
            let mut seed = [7u8; 32];
            seed[..8].copy_from_slice(&i.to_le_bytes());
            signing_key(seed)
        })
        .collect();
    let messages: Vec<Vec<u8>> = (0..VERIFY_CHUNK_SIZE as u64).map(|i| i.to_le_bytes().repeat(20)).collect();
    let signatures: Vec<Signature> = keys.iter().zip(&messages).map(|(k, m)| k.sign(m)).collect();
    let verifying: Vec<VerifyingKey> = keys.iter().map(SigningKey::verifying_key).collect();
    let message_refs: Vec<&[u8]> = messages.iter().map(Vec::as_slice).collect();
    let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().expect("thread pool");
    let started = Instant::now();
    let chunks: u64 = pool.install(|| {
        (0..threads)
            .into_par_iter()
            .map(|_| {
                let mut count = 0u64;
                while started.elapsed() < duration {
                    ed25519_dalek::verify_batch(&message_refs, &signatures, &verifying)
                        .expect("reference signatures verify");
                    count += 1;
                }
                count
            })
            .sum()
    });
    (chunks * VERIFY_CHUNK_SIZE as u64) as f64 / started.elapsed().as_secs_f64()
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
        let mut bytes = batch[300].bytes().to_vec();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        batch[300] = SignedTransaction::decode(&bytes).unwrap();
        let verdicts = verify_all(&batch);
        assert_eq!(verdicts.iter().filter(|v| v.is_some()).count(), 1);
        assert_eq!(verdicts[300], Some(Reason::BadSignature));
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
