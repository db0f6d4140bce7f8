//! ed25519 signing and batch verification.
//!
//! A batch is split into chunks (up to `VERIFY_CHUNK_MAX`, enough for every
//! thread of the rayon pool to get one), each checked in one batched equation
//! (`verify_batch`'s, with each signer's terms summed: see `batch_valid`). A chunk
//! that fails is bisected to find the bad signatures, so a forgery costs its
//! chunk a few more batch checks, never the batch its verdict. Weak
//! (small-order) keys are refused outright.
//!
//! Every check, batched or alone, is cofactored (`8 (s B - k A - R) = 0`), so a
//! signature's verdict is its own: the same in whatever chunk the ledger, the
//! cluster's coordinator, `caduceus verify` or an offline proof check puts it.
//!
//! The defence against a client that puts a bad signature in every chunk, to
//! make the ledger search every chunk: the failing chunks of a batch are
//! searched only when there are at most `BAD_CHUNKS_TOLERATED` of them (an
//! honest client's occasional bad transaction); otherwise they are refused
//! whole (`batch-abandoned`, resubmit in a good batch), so a hostile batch
//! costs one batched check of its signatures and nothing after it. The
//! ledger also verifies the batches of a client that sent bad signatures only
//! when no other client's batch is waiting (see `Ledger::submit_async_from`).

use std::iter::once;
use std::time::{Duration, Instant};

use curve25519_dalek::constants::ED25519_BASEPOINT_POINT;
use curve25519_dalek::edwards::{CompressedEdwardsY, EdwardsPoint};
use curve25519_dalek::scalar::Scalar;
use curve25519_dalek::traits::{IsIdentity, VartimeMultiscalarMul};
use parking_lot::RwLock;

pub use ed25519_dalek::SigningKey;
use ed25519_dalek::{Signature, Signer, Verifier, VerifyingKey};
use rayon::prelude::*;
use sha2::{Digest, Sha512};

use crate::codec::EncodeError;
use crate::limits::{
    BAD_CHUNKS_TOLERATED, KEY_CACHE_ENTRIES_MAX, VERIFY_CHUNK_MAX, VERIFY_CHUNK_MIN, VERIFY_ONE_CHUNK_MAX,
};
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
    assert_eq!(*transaction.verifying_key(), actor_key(key), "the transaction must name the key that signs it");
    let unsigned = SignedTransaction::from_parts(transaction, [0; 64])?;
    let signature = key.sign(unsigned.body());
    SignedTransaction::from_parts(std::sync::Arc::unwrap_or_clone(unsigned.transaction), signature.to_bytes())
}

/// Whether `signature` is `actor`'s ed25519 signature of `message` (strict: no weak key, no
/// malleable signature). For the few signatures the rules check themselves (an operator's
/// approval); transactions' signatures are checked in batches by `Verifier`.
pub fn verify_one(actor: &ActorKey, message: &[u8], signature: &[u8; 64]) -> bool {
    parse_key(actor).is_ok_and(|key| key.verify_strict(message, &Signature::from_bytes(signature)).is_ok())
}

/// `key`'s ed25519 signature of `message` (what `verify_one` checks): for signed reads and
/// approvals, never for transactions (`sign`).
pub fn sign_message(key: &SigningKey, message: &[u8]) -> [u8; 64] {
    key.sign(message).to_bytes()
}

/// Signs an approval of adding `actor` as an operator (`Operation::AddOperator`).
pub fn approve_operator(key: &SigningKey, actor: &ActorKey) -> crate::model::Approval {
    let signature = key.sign(&crate::model::operator_approval(actor));
    crate::model::Approval { operator: actor_key(key), signature: signature.to_bytes() }
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
/// keeps up to `KEY_CACHE_ENTRIES_MAX` of them (forgetting all when full), in a
/// `StateMap` so that filling it never stops the verify stage for a whole-map doubling.
#[derive(Default)]
pub struct SignatureVerifier {
    keys: RwLock<crate::state::StateMap<ActorKey, VerifyingKey>>,
}

impl SignatureVerifier {
    /// A verifier with an empty key cache.
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
        let key = match self.key(transaction.transaction.verifying_key()) {
            Ok(key) => key,
            Err(reason) => return Some(reason),
        };
        (!valid_alone(transaction, &key)).then_some(Reason::BadSignature)
    }

    /// The first, batched check of a chunk: its verdicts, or the parsed keys of a chunk that failed.
    fn check_chunk(&self, chunk: &[SignedTransaction]) -> Result<Vec<Option<Reason>>, Vec<VerifyingKey>> {
        let mut keys = Vec::with_capacity(chunk.len());
        for transaction in chunk {
            match self.key(transaction.transaction.verifying_key()) {
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
    ///
    /// A batch of at most `VERIFY_ONE_CHUNK_MAX` that spans several chunks is first checked as
    /// one, on the calling thread: a batched equation of 256 costs less than two of 128, and
    /// the verify stage checks two such batches side by side. Only if that check fails are its
    /// chunks checked as below (a batch with bad signatures in more than
    /// `BAD_CHUNKS_TOLERATED` of them is still refused unsearched), so the verdicts are the
    /// same either way.
    pub fn verify(&self, transactions: &[SignedTransaction]) -> Vec<Option<Reason>> {
        let size = chunk_size(transactions.len());
        if transactions.len() > size && transactions.len() <= VERIFY_ONE_CHUNK_MAX {
            // Passing, or checked one by one for a key that does not parse: either way each
            // signature's own verdict, which is what the chunks would give.
            if let Ok(verdicts) = self.check_chunk(transactions) {
                return verdicts;
            }
        }
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
/// batched equation checks each signature faster.
pub fn chunk_size(count: usize) -> usize {
    count.div_ceil(rayon::current_num_threads().max(1)).clamp(VERIFY_CHUNK_MIN, VERIFY_CHUNK_MAX)
}

/// Whether every signature of a chunk is valid, in one multiscalar multiplication:
/// ed25519-dalek's `verify_batch` equation, multiplied by the cofactor, with the terms of each
/// signer summed.
///
/// For signatures `(R_i, s_i)` by keys `A_i` on messages `M_i`, with `k_i = SHA-512(R_i || A_i ||
/// M_i)` and 128-bit coefficients `z_i` derived from the whole chunk (every `k_i` and `s_i`, as
/// `verify_batch` derives them from a transcript of the same), the chunk passes when
///
/// ```text
/// 8 (-(sum z_i s_i) B + sum z_i R_i + sum over distinct keys A of (sum of z_i k_i with A_i = A) A) = 0
/// ```
///
/// Grouping the `A` terms by key gives the same group element for the same coefficients, so the
/// same soundness. The same actors sign again and again (a provider's or a payer's system signs
/// much of the traffic), so a chunk of 1,024 usually has a few hundred distinct keys, and the
/// multiplication has that many fewer points. `s` must be canonical and `R` a valid encoding,
/// as in `verify_batch`.
///
/// The cofactor makes this the batched form of `valid_alone`: a chunk passes exactly when each
/// of its signatures does (but for a 2^-128 chance), whatever else is in the chunk. Without it
/// (`verify_batch`, or ed25519-dalek's one-by-one `verify`), a signature whose `R` its signer
/// shifted by a small-order point passes or fails depending on its coefficient, that is on the
/// chunk it lands in: the ledger could accept a transaction that `caduceus verify` or an offline
/// proof check, chunking differently, then reports as forged.
fn batch_valid(chunk: &[SignedTransaction], keys: &[VerifyingKey]) -> bool {
    debug_assert_eq!(chunk.len(), keys.len());
    // Every k_i and s_i first: the coefficients are drawn from all of them.
    let mut coefficients = blake3::Hasher::new_derive_key(BATCH_COEFFICIENTS_CONTEXT);
    let mut terms = Vec::with_capacity(chunk.len());
    for (transaction, key) in chunk.iter().zip(keys) {
        let signature = transaction.signature();
        let (r, s) = signature.split_at(32);
        let k = challenge(r, key, transaction.body());
        coefficients.update(&k);
        coefficients.update(s);
        let Some(s) = canonical_s(s) else {
            return false;
        };
        terms.push((Scalar::from_bytes_mod_order_wide(&k), s));
    }
    let mut coefficients = coefficients.finalize_xof();
    let mut zs = Vec::with_capacity(chunk.len());
    let mut s_sum = Scalar::ZERO;
    // Each distinct key's summed scalar, and where the key first appears.
    let mut key_slots: crate::state::Map<&[u8; 32], usize> = Default::default();
    let mut key_terms: Vec<(Scalar, usize)> = Vec::new();
    for (position, (key, (k, s))) in keys.iter().zip(terms).enumerate() {
        let mut z = [0u8; 16];
        coefficients.fill(&mut z);
        let z = Scalar::from(u128::from_le_bytes(z));
        s_sum += z * s;
        let slot = *key_slots.entry(key.as_bytes()).or_insert_with(|| {
            key_terms.push((Scalar::ZERO, position));
            key_terms.len() - 1
        });
        key_terms[slot].0 += z * k;
        zs.push(z);
    }
    let scalars = once(-s_sum).chain(zs).chain(key_terms.iter().map(|(scalar, _)| *scalar));
    let points = once(Some(ED25519_BASEPOINT_POINT))
        .chain(chunk.iter().map(|t| point_r(&t.signature()[..32])))
        .chain(key_terms.iter().map(|(_, position)| Some(keys[*position].to_edwards())));
    EdwardsPoint::optional_multiscalar_mul(scalars, points).is_some_and(|sum| sum.mul_by_cofactor().is_identity())
}

/// ed25519's challenge `k = SHA-512(R || A || M)` of a signature, as 64 bytes.
fn challenge(r: &[u8], key: &VerifyingKey, message: &[u8]) -> [u8; 64] {
    Sha512::new().chain_update(r).chain_update(key.as_bytes()).chain_update(message).finalize().into()
}

/// `s` of a signature, if canonical.
fn canonical_s(s: &[u8]) -> Option<Scalar> {
    Scalar::from_canonical_bytes(s.try_into().expect("32 bytes")).into()
}

/// `R` of a signature, if it decodes to a point.
fn point_r(r: &[u8]) -> Option<EdwardsPoint> {
    CompressedEdwardsY(r.try_into().expect("32 bytes")).decompress()
}

/// One signature on its own, by the cofactored equation `8 (s B - k A - R) = 0`: the equation
/// `batch_valid` checks for many at once, so the two agree on every signature.
fn valid_alone(transaction: &SignedTransaction, key: &VerifyingKey) -> bool {
    let signature = transaction.signature();
    let (r, s) = signature.split_at(32);
    let (Some(s), Some(r_point)) = (canonical_s(s), point_r(r)) else {
        return false;
    };
    let k = Scalar::from_bytes_mod_order_wide(&challenge(r, key, transaction.body()));
    let difference = EdwardsPoint::vartime_double_scalar_mul_basepoint(&k, &-key.to_edwards(), &s) - r_point;
    difference.mul_by_cofactor().is_identity()
}

/// The key-derivation context of a chunk's batch coefficients.
const BATCH_COEFFICIENTS_CONTEXT: &str = "caduceus 2026 ed25519 batch verification coefficients";

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
    use crate::state::Set;

    fn signed(seed: u8, id: u128) -> SignedTransaction {
        let key = signing_key([seed; 32]);
        let transaction = Transaction {
            nonce: id,
            signer: actor_key(&key),
            timestamp: 1,
            operation: Operation::FundAccount { amount: 5 },
            key: None,
        };
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
    fn a_small_batch_checked_as_one_chunk_keeps_the_verdicts_of_its_chunks() {
        // Two threads: a batch of 256 is two chunks of 128, first checked as one.
        let pool = rayon::ThreadPoolBuilder::new().num_threads(2).build().unwrap();
        pool.install(|| {
            let batch: Vec<SignedTransaction> = (0..256).map(|i| signed((i % 7) as u8 + 1, i)).collect();
            assert_eq!(chunk_size(batch.len()), 128);
            assert!(verify_all(&batch).iter().all(Option::is_none));
            // One bad signature: found, the rest valid.
            let mut one = batch.clone();
            spoil(&mut one, 200);
            let verdicts = verify_all(&one);
            assert_eq!(verdicts[200], Some(Reason::BadSignature));
            assert_eq!(verdicts.iter().filter(|v| v.is_some()).count(), 1);
            // A bad signature in each chunk: refused unsearched, as two chunks would be.
            let mut both = one;
            spoil(&mut both, 5);
            assert!(verify_all(&both).iter().all(|v| *v == Some(Reason::BatchAbandoned)));
        });
    }

    /// A chunk signed by a few keys, each many times (the case the summed key terms serve).
    fn repeated_signers(count: u128) -> (Vec<SignedTransaction>, Vec<VerifyingKey>) {
        let chunk: Vec<SignedTransaction> = (0..count).map(|i| signed((i % 3) as u8 + 1, i)).collect();
        let keys = chunk.iter().map(|t| parse_key(&t.transaction.signer).unwrap()).collect();
        (chunk, keys)
    }

    /// ed25519-dalek's own batch check of the same chunk.
    fn dalek_batch_valid(chunk: &[SignedTransaction], keys: &[VerifyingKey]) -> bool {
        let messages: Vec<&[u8]> = chunk.iter().map(SignedTransaction::body).collect();
        let signatures: Vec<Signature> = chunk.iter().map(|t| Signature::from_bytes(&t.signature())).collect();
        ed25519_dalek::verify_batch(&messages, &signatures, keys).is_ok()
    }

    /// A copy of `transaction` with its signature's bytes `range` replaced by `bytes`.
    fn with_signature_bytes(
        transaction: &SignedTransaction,
        range: std::ops::Range<usize>,
        bytes: &[u8],
    ) -> SignedTransaction {
        let mut signature = transaction.signature();
        signature[range].copy_from_slice(bytes);
        SignedTransaction::from_parts((*transaction.transaction).clone(), signature).unwrap()
    }

    #[test]
    fn the_summed_batch_check_agrees_with_verify_batch_and_terms_of_one_key_do_not_cancel() {
        let (chunk, keys) = repeated_signers(96);
        assert!(batch_valid(&chunk, &keys));
        assert!(dalek_batch_valid(&chunk, &keys));
        // Two signatures by the same key with their s halves swapped: the sum of the s values and
        // every key's set of messages are unchanged, the chunk must still fail.
        let (a, b) = (3, 6);
        assert_eq!(chunk[a].transaction.signer, chunk[b].transaction.signer);
        let mut swapped = chunk.clone();
        swapped[a] = with_signature_bytes(&chunk[a], 32..64, &chunk[b].signature()[32..]);
        swapped[b] = with_signature_bytes(&chunk[b], 32..64, &chunk[a].signature()[32..]);
        assert!(!batch_valid(&swapped, &keys));
        assert!(!dalek_batch_valid(&swapped, &keys));
        // The same with the R halves, and with whole signatures swapped between the two messages.
        let mut swapped = chunk.clone();
        swapped[a] = with_signature_bytes(&chunk[a], 0..32, &chunk[b].signature()[..32]);
        swapped[b] = with_signature_bytes(&chunk[b], 0..32, &chunk[a].signature()[..32]);
        assert!(!batch_valid(&swapped, &keys));
        let mut swapped = chunk.clone();
        swapped[a] = with_signature_bytes(&chunk[a], 0..64, &chunk[b].signature());
        swapped[b] = with_signature_bytes(&chunk[b], 0..64, &chunk[a].signature());
        assert!(!batch_valid(&swapped, &keys));
        // A signature checked against another signer's key.
        let mut wrong_keys = keys.clone();
        wrong_keys[a] = keys[a + 1];
        assert!(!batch_valid(&chunk, &wrong_keys));
    }

    #[test]
    fn the_batch_check_refuses_a_non_canonical_s_and_an_undecodable_r() {
        let (chunk, keys) = repeated_signers(16);
        // s + l is the same scalar modulo l, but not its canonical encoding.
        let s = Scalar::from_canonical_bytes(chunk[5].signature()[32..].try_into().unwrap()).unwrap();
        let l_bytes: [u8; 32] = [
            0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9, 0xde, 0x14, 0, 0, 0, 0,
            0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
        ];
        let mut wide = [0u8; 32];
        let mut carry = 0u16;
        for (i, byte) in wide.iter_mut().enumerate() {
            let sum = s.as_bytes()[i] as u16 + l_bytes[i] as u16 + carry;
            *byte = sum as u8;
            carry = sum >> 8;
        }
        assert_eq!(carry, 0, "s + l fits in 32 bytes");
        let mut spoiled = chunk.clone();
        spoiled[5] = with_signature_bytes(&chunk[5], 32..64, &wide);
        assert!(!batch_valid(&spoiled, &keys));
        assert!(!dalek_batch_valid(&spoiled, &keys));
        // An R that is not a point: y = 2 has no x on the curve.
        let mut not_a_point = [0u8; 32];
        not_a_point[0] = 2;
        assert!(CompressedEdwardsY(not_a_point).decompress().is_none());
        let mut spoiled = chunk.clone();
        spoiled[9] = with_signature_bytes(&chunk[9], 0..32, &not_a_point);
        assert!(!batch_valid(&spoiled, &keys));
        assert!(!dalek_batch_valid(&spoiled, &keys));
    }

    /// A valid signature by `seed`'s key whose `R` is shifted by a point of order 8 (only the
    /// signer can make one: it needs the secret scalar): `8 (s B - k A - R) = 0` holds,
    /// `s B - k A - R = 0` does not.
    fn shifted_by_small_order(seed: [u8; 32], id: u128) -> SignedTransaction {
        let key = signing_key(seed);
        let verifying = key.verifying_key();
        // The secret scalar, as ed25519 derives it from the seed.
        let expanded: [u8; 64] = Sha512::digest(seed).into();
        let mut a: [u8; 32] = expanded[..32].try_into().unwrap();
        a[0] &= 248;
        a[31] &= 127;
        a[31] |= 64;
        let a = Scalar::from_bytes_mod_order(a);
        assert_eq!(ED25519_BASEPOINT_POINT * a, verifying.to_edwards());
        let transaction = Transaction {
            nonce: id,
            signer: actor_key(&key),
            timestamp: 1,
            operation: Operation::FundAccount { amount: 3 },
            key: None,
        };
        let body = SignedTransaction::from_parts(transaction.clone(), [0; 64]).unwrap().body().to_vec();
        let nonce = Scalar::from_bytes_mod_order_wide(&Sha512::digest(id.to_le_bytes()).into());
        let r = (ED25519_BASEPOINT_POINT * nonce + curve25519_dalek::constants::EIGHT_TORSION[1]).compress().to_bytes();
        let k = Scalar::from_bytes_mod_order_wide(&challenge(&r, &verifying, &body));
        let mut signature = [0u8; 64];
        signature[..32].copy_from_slice(&r);
        signature[32..].copy_from_slice((nonce + k * a).as_bytes());
        SignedTransaction::from_parts(transaction, signature).unwrap()
    }

    #[test]
    fn a_signature_shifted_by_a_small_order_point_gets_one_verdict_in_every_chunk() {
        let shifted = shifted_by_small_order([5; 32], 1_000);
        let key = parse_key(&shifted.transaction.signer).unwrap();
        let signature = Signature::from_bytes(&shifted.signature());
        assert!(key.verify(shifted.body(), &signature).is_err(), "the cofactorless check refuses it");
        assert!(valid_alone(&shifted, &key));
        // ed25519-dalek's batch check accepts it in some chunks and refuses it in others (when its
        // coefficient is a multiple of 8 the shift vanishes): the verdict followed the chunking.
        let (honest, honest_keys) = repeated_signers(64);
        let mut dalek_verdicts = Set::default();
        let mut chunks_checked = 0;
        for length in 1..=64 {
            let mut chunk = honest[..length - 1].to_vec();
            chunk.push(shifted.clone());
            let mut keys = honest_keys[..length - 1].to_vec();
            keys.push(key);
            dalek_verdicts.insert(dalek_batch_valid(&chunk, &keys));
            // Here it passes in every chunk, and so in every batch the ledger, `verify` or an
            // offline proof check makes of it.
            assert!(batch_valid(&chunk, &keys), "chunk of {length}");
            assert!(verify_all(&chunk).iter().all(Option::is_none), "batch of {length}");
            chunks_checked += 1;
        }
        assert_eq!(chunks_checked, 64);
        assert_eq!(dalek_verdicts.len(), 2, "verify_batch gave both verdicts over these chunks");
        // A shifted signature is still a signature of its signer only: another body fails.
        let mut other = shifted_by_small_order([5; 32], 1_001);
        other = with_signature_bytes(&other, 0..64, &shifted.signature());
        assert!(!valid_alone(&other, &key));
        assert_eq!(verify_all(&[other]), vec![Some(Reason::BadSignature)]);
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(48))]

        /// Whatever the signers and whichever signatures are spoiled, the batched verdicts are
        /// the one-by-one verdicts.
        #[test]
        fn batched_verdicts_are_the_verdicts_of_each_signature_alone(
            signers in 1u8..12,
            count in 1usize..300,
            spoiled in proptest::collection::vec((0usize..300, 0usize..64), 0..4),
        ) {
            let mut batch: Vec<SignedTransaction> =
                (0..count).map(|i| signed((i % signers as usize) as u8 + 1, i as u128)).collect();
            for (position, byte) in spoiled {
                let position = position % count;
                let flipped = batch[position].signature()[byte] ^ 0x20;
                batch[position] = with_signature_bytes(&batch[position], byte..byte + 1, &[flipped]);
            }
            let alone: Vec<Option<Reason>> = batch
                .iter()
                .map(|t| (!valid_alone(t, &parse_key(&t.transaction.signer).unwrap())).then_some(Reason::BadSignature))
                .collect();
            let batched = verify_all(&batch);
            if batched.contains(&Some(Reason::BatchAbandoned)) {
                // More failing chunks than are searched: refused whole, never passed.
                for (a, b) in alone.iter().zip(&batched) {
                    proptest::prop_assert!(a.is_none() || b.is_some());
                }
            } else {
                proptest::prop_assert_eq!(batched, alone);
            }
        }
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
                nonce: 2,
                signer: ActorKey(weak_key),
                timestamp: 0,
                operation: Operation::FundAccount { amount: 1 },
                key: None,
            },
            [0; 64],
        )
        .unwrap();
        assert_eq!(verify_all(&[good, changed, weak]), vec![None, Some(Reason::BadSignature), Some(Reason::WeakKey)]);
    }
}
