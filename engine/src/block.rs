//! Blocks, Merkle roots, checkpoints and inclusion proofs.
//!
//! A shard's blocks form a blake3 hash chain; each header commits to a Merkle
//! root over its transactions and one over their results. A checkpoint folds
//! every shard's head into one root and links to the previous checkpoint. A
//! proof carries a transaction from its leaf to a checkpoint hash, and is
//! checked offline with nothing but that hash.

use thiserror::Error;

use crate::codec::{Codec, DecodeError, Decoder, EncodeError, Encoder};
use crate::limits::{ROUND_TRANSACTIONS_MAX, SHARDS_MAX, TRANSACTION_SIZE_MAX};
use crate::model::{Hash, SignedTransaction, Timestamp, TxId, TxResult, ENCODING_VERSION};

const LEAF: u8 = 0;
const NODE: u8 = 1;
const CHECKPOINT: u8 = 2;

/// A transaction's Merkle leaf: `H(0x00 ‖ wire bytes)`.
pub fn transaction_leaf(transaction: &SignedTransaction) -> Hash {
    let mut hasher = blake3::Hasher::new();
    hasher.update(&[LEAF]);
    hasher.update(transaction.bytes());
    *hasher.finalize().as_bytes()
}

// The short inputs below (result leaves, nodes) are laid out in one array and hashed with
// `blake3::hash`, which for inputs of one chunk skips the incremental hasher's bookkeeping;
// the digest is the same as feeding the parts to a `Hasher` one after another.

/// A result's Merkle leaf: `H(0x00 ‖ id LE ‖ result code LE)`.
pub fn result_leaf(id: TxId, result: TxResult) -> Hash {
    let mut input = [0; 1 + 16 + 2];
    input[0] = LEAF;
    input[1..17].copy_from_slice(&id.to_le_bytes());
    input[17..].copy_from_slice(&result.code().to_le_bytes());
    *blake3::hash(&input).as_bytes()
}

fn node(left: &Hash, right: &Hash) -> Hash {
    let mut input = [0; 1 + 32 + 32];
    input[0] = NODE;
    input[1..33].copy_from_slice(left);
    input[33..].copy_from_slice(right);
    *blake3::hash(&input).as_bytes()
}

/// Merkle root over leaves; an odd node is promoted unchanged. Empty: all zeros.
pub fn merkle_root(leaves: &[Hash]) -> Hash {
    if leaves.is_empty() {
        return [0; 32];
    }
    let mut level = leaves.to_vec();
    while level.len() > 1 {
        level = level.chunks(2).map(|pair| if pair.len() == 2 { node(&pair[0], &pair[1]) } else { pair[0] }).collect();
    }
    level[0]
}

/// One step of a Merkle path: the sibling, and whether it sits on the left.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PathStep {
    /// The sibling's hash.
    pub sibling: Hash,
    /// Whether the sibling is the left one.
    pub sibling_on_left: bool,
}

/// The path from leaf `index` to the root.
pub fn merkle_path(leaves: &[Hash], mut index: usize) -> Vec<PathStep> {
    assert!(index < leaves.len(), "leaf index within the tree");
    let mut path = Vec::new();
    let mut level = leaves.to_vec();
    while level.len() > 1 {
        let sibling = index ^ 1;
        if sibling < level.len() {
            path.push(PathStep { sibling: level[sibling], sibling_on_left: sibling < index });
        }
        level = level.chunks(2).map(|pair| if pair.len() == 2 { node(&pair[0], &pair[1]) } else { pair[0] }).collect();
        index /= 2;
    }
    path
}

/// The root a path leads to from a leaf.
pub fn merkle_fold(leaf: Hash, path: &[PathStep]) -> Hash {
    path.iter().fold(
        leaf,
        |hash, step| {
            if step.sibling_on_left {
                node(&step.sibling, &hash)
            } else {
                node(&hash, &step.sibling)
            }
        },
    )
}

/// A block's header: where it stands in its shard's chain and what it commits to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlockHeader {
    /// The shard whose chain it extends.
    pub shard: u32,
    /// Its height in that chain, from 1.
    pub height: u64,
    /// The round (group commit) that sealed this block; its checkpoint covers it.
    pub round: u64,
    /// The previous block's header hash (zeros for the first).
    pub previous: Hash,
    /// Commit time: the same for every block of a round, never decreasing.
    pub time: Timestamp,
    /// Transactions in the body.
    pub count: u32,
    /// Merkle root of the transactions' leaves.
    pub transactions_root: Hash,
    /// Merkle root of the results' leaves.
    pub results_root: Hash,
}

impl BlockHeader {
    /// blake3 of the encoded header: what the next block links to.
    pub fn hash(&self) -> Hash {
        *blake3::hash(&self.encode().expect("headers are fixed-size")).as_bytes()
    }
}

impl Codec for BlockHeader {
    fn encode_into(&self, e: &mut Encoder) -> Result<(), EncodeError> {
        e.u8(ENCODING_VERSION);
        e.u32(self.shard);
        e.u64(self.height);
        e.u64(self.round);
        e.array(&self.previous);
        e.u64(self.time);
        e.u32(self.count);
        e.array(&self.transactions_root);
        e.array(&self.results_root);
        Ok(())
    }
    fn decode_from(d: &mut Decoder<'_>) -> Result<Self, DecodeError> {
        d.version()?;
        Ok(Self {
            shard: d.u32()?,
            height: d.u64()?,
            round: d.u64()?,
            previous: d.array()?,
            time: d.u64()?,
            count: d.u32()?,
            transactions_root: d.array()?,
            results_root: d.array()?,
        })
    }
}

/// A block's transactions, each with its result on this shard's ledger.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BlockBody {
    /// In the order they ran.
    pub entries: Vec<(SignedTransaction, TxResult)>,
}

impl BlockBody {
    /// The transactions' Merkle leaves, in order.
    pub fn transaction_leaves(&self) -> Vec<Hash> {
        self.entries.iter().map(|(t, _)| transaction_leaf(t)).collect()
    }
    /// The results' Merkle leaves, in order.
    pub fn result_leaves(&self) -> Vec<Hash> {
        self.entries.iter().map(|(t, r)| result_leaf(t.id(), *r)).collect()
    }
}

impl Codec for BlockBody {
    fn encode_into(&self, e: &mut Encoder) -> Result<(), EncodeError> {
        if self.entries.len() > ROUND_TRANSACTIONS_MAX {
            return Err(EncodeError::TooLong {
                field: "block",
                length: self.entries.len(),
                limit: ROUND_TRANSACTIONS_MAX,
            });
        }
        e.u32(self.entries.len() as u32);
        for (transaction, result) in &self.entries {
            e.bytes("transaction", transaction.bytes(), TRANSACTION_SIZE_MAX)?;
            e.u16(result.code());
        }
        Ok(())
    }
    fn encoded_size_hint(&self) -> usize {
        4 + self.entries.iter().map(|(transaction, _)| 2 + transaction.bytes().len() + 2).sum::<usize>()
    }
    fn decode_from(d: &mut Decoder<'_>) -> Result<Self, DecodeError> {
        let count = d.u32()? as usize;
        if count > ROUND_TRANSACTIONS_MAX {
            return Err(DecodeError::TooLong { field: "block", length: count, limit: ROUND_TRANSACTIONS_MAX });
        }
        let mut entries = Vec::with_capacity(count);
        for _ in 0..count {
            let transaction = SignedTransaction::decode(d.bytes("transaction", TRANSACTION_SIZE_MAX)?)?;
            let result = TxResult::from_code(d.u16()?).ok_or(DecodeError::Invalid("result"))?;
            entries.push((transaction, result));
        }
        Ok(Self { entries })
    }
}

/// One shard's head as folded into a checkpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ShardHead {
    /// The shard.
    pub shard: u32,
    /// Its last block's height (0: none yet).
    pub height: u64,
    /// Its last block's header hash.
    pub hash: Hash,
}

impl ShardHead {
    /// The head's leaf in the checkpoint's Merkle tree.
    pub fn leaf(&self) -> Hash {
        let mut hasher = blake3::Hasher::new();
        hasher.update(&[LEAF]);
        hasher.update(&self.shard.to_le_bytes());
        hasher.update(&self.height.to_le_bytes());
        hasher.update(&self.hash);
        *hasher.finalize().as_bytes()
    }
}

/// All shards' heads after a round: one hash attests the whole ledger.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Checkpoint {
    /// The round it follows.
    pub round: u64,
    /// Hash of the previous round's checkpoint (zeros for the first).
    pub previous: Hash,
    /// Every shard's head, by shard.
    pub heads: Vec<ShardHead>,
}

/// The checkpoint hash from its parts.
pub fn checkpoint_hash(round: u64, previous: &Hash, heads_root: &Hash) -> Hash {
    let mut hasher = blake3::Hasher::new();
    hasher.update(&[CHECKPOINT]);
    hasher.update(&round.to_le_bytes());
    hasher.update(previous);
    hasher.update(heads_root);
    *hasher.finalize().as_bytes()
}

impl Checkpoint {
    /// Merkle root over the heads' leaves.
    pub fn heads_root(&self) -> Hash {
        merkle_root(&self.heads.iter().map(ShardHead::leaf).collect::<Vec<_>>())
    }
    /// The checkpoint's hash: what an auditor publishes and a proof leads to.
    pub fn hash(&self) -> Hash {
        checkpoint_hash(self.round, &self.previous, &self.heads_root())
    }
}

impl Codec for Checkpoint {
    fn encode_into(&self, e: &mut Encoder) -> Result<(), EncodeError> {
        e.u8(ENCODING_VERSION);
        e.u64(self.round);
        e.array(&self.previous);
        e.u32(self.heads.len() as u32);
        for head in &self.heads {
            e.u32(head.shard);
            e.u64(head.height);
            e.array(&head.hash);
        }
        Ok(())
    }
    fn decode_from(d: &mut Decoder<'_>) -> Result<Self, DecodeError> {
        d.version()?;
        let round = d.u64()?;
        let previous = d.array()?;
        let count = d.u32()?;
        if count > SHARDS_MAX {
            return Err(DecodeError::TooLong { field: "heads", length: count as usize, limit: SHARDS_MAX as usize });
        }
        let heads = (0..count)
            .map(|_| Ok(ShardHead { shard: d.u32()?, height: d.u64()?, hash: d.array()? }))
            .collect::<Result<_, DecodeError>>()?;
        Ok(Self { round, previous, heads })
    }
}

/// Why a proof does not check out.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum ProofError {
    /// The transaction does not lead to the block's transaction root.
    #[error("the transaction does not lead to the block's transaction root")]
    TransactionPath,
    /// The result does not lead to the block's result root.
    #[error("the result does not lead to the block's result root")]
    ResultPath,
    /// The block header does not lead to the checkpoint.
    #[error("the block header does not lead to the checkpoint")]
    CheckpointPath,
}

/// Inclusion of one transaction and its result, up to a checkpoint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Proof {
    /// The transaction as signed.
    pub transaction: SignedTransaction,
    /// Its result.
    pub result: TxResult,
    /// From the transaction's leaf to the header's transaction root.
    pub transaction_path: Vec<PathStep>,
    /// From the result's leaf to the header's result root.
    pub result_path: Vec<PathStep>,
    /// The block that holds it.
    pub header: BlockHeader,
    /// From the block's head leaf to the checkpoint's heads root.
    pub head_path: Vec<PathStep>,
    /// The round of the checkpoint it leads to.
    pub checkpoint_round: u64,
    /// That checkpoint's previous hash.
    pub checkpoint_previous: Hash,
}

impl Proof {
    /// The checkpoint hash this proof leads to.
    pub fn checkpoint_hash(&self) -> Hash {
        let head = ShardHead { shard: self.header.shard, height: self.header.height, hash: self.header.hash() };
        let heads_root = merkle_fold(head.leaf(), &self.head_path);
        checkpoint_hash(self.checkpoint_round, &self.checkpoint_previous, &heads_root)
    }

    /// Checks the proof against a checkpoint hash the verifier trusts.
    pub fn verify(&self, checkpoint: &Hash) -> Result<(), ProofError> {
        if merkle_fold(transaction_leaf(&self.transaction), &self.transaction_path) != self.header.transactions_root {
            return Err(ProofError::TransactionPath);
        }
        if merkle_fold(result_leaf(self.transaction.id(), self.result), &self.result_path) != self.header.results_root {
            return Err(ProofError::ResultPath);
        }
        if &self.checkpoint_hash() != checkpoint {
            return Err(ProofError::CheckpointPath);
        }
        Ok(())
    }
}

/// Longest Merkle path a proof may carry (trees of up to 2^64 leaves).
const PATH_LENGTH_MAX: usize = 64;

fn encode_path(e: &mut Encoder, path: &[PathStep]) -> Result<(), EncodeError> {
    e.count("path", path.len(), PATH_LENGTH_MAX)?;
    for step in path {
        e.array(&step.sibling);
        e.bool(step.sibling_on_left);
    }
    Ok(())
}

fn decode_path(d: &mut Decoder<'_>) -> Result<Vec<PathStep>, DecodeError> {
    let count = d.count("path", PATH_LENGTH_MAX)?;
    (0..count).map(|_| Ok(PathStep { sibling: d.array()?, sibling_on_left: d.bool("side")? })).collect()
}

/// A proof travels as bytes: an auditor checks it with nothing but a checkpoint hash.
impl Codec for Proof {
    fn encode_into(&self, e: &mut Encoder) -> Result<(), EncodeError> {
        e.u8(ENCODING_VERSION);
        e.bytes("transaction", self.transaction.bytes(), TRANSACTION_SIZE_MAX)?;
        e.u16(self.result.code());
        encode_path(e, &self.transaction_path)?;
        encode_path(e, &self.result_path)?;
        self.header.encode_into(e)?;
        encode_path(e, &self.head_path)?;
        e.u64(self.checkpoint_round);
        e.array(&self.checkpoint_previous);
        Ok(())
    }
    fn decode_from(d: &mut Decoder<'_>) -> Result<Self, DecodeError> {
        d.version()?;
        Ok(Self {
            transaction: SignedTransaction::decode(d.bytes("transaction", TRANSACTION_SIZE_MAX)?)?,
            result: TxResult::from_code(d.u16()?).ok_or(DecodeError::Invalid("result"))?,
            transaction_path: decode_path(d)?,
            result_path: decode_path(d)?,
            header: BlockHeader::decode_from(d)?,
            head_path: decode_path(d)?,
            checkpoint_round: d.u64()?,
            checkpoint_previous: d.array()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_inputs_hash_as_their_parts_fed_one_after_another() {
        let (id, result) =
            (0x0123_4567_89ab_cdef_0011_2233_4455_6677u128, TxResult::Rejected(crate::model::Reason::ConsentMissing));
        let mut hasher = blake3::Hasher::new();
        hasher.update(&[LEAF]).update(&id.to_le_bytes()).update(&result.code().to_le_bytes());
        assert_eq!(result_leaf(id, result), *hasher.finalize().as_bytes());
        let (left, right) = ([7; 32], [9; 32]);
        let mut hasher = blake3::Hasher::new();
        hasher.update(&[NODE]).update(&left).update(&right);
        assert_eq!(node(&left, &right), *hasher.finalize().as_bytes());
        assert_ne!(node(&left, &right), node(&right, &left));
    }

    #[test]
    fn every_leaf_of_every_tree_size_folds_to_the_root() {
        for size in 1..40u8 {
            let leaves: Vec<Hash> = (0..size).map(|i| *blake3::hash(&[i]).as_bytes()).collect();
            let root = merkle_root(&leaves);
            for index in 0..leaves.len() {
                let path = merkle_path(&leaves, index);
                assert_eq!(merkle_fold(leaves[index], &path), root, "size {size} index {index}");
                let mut wrong = leaves[index];
                wrong[0] ^= 1;
                assert_ne!(merkle_fold(wrong, &path), root);
            }
        }
    }
}
