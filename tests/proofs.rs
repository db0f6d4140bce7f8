//! Inclusion proofs: every transaction on a ledger, committed or rejected,
//! single- or cross-shard, proves its place and result against the
//! checkpoint of its round; any change to a proof breaks it.

use std::sync::Arc;

use caduceus_engine::block::ProofError;
use caduceus_engine::model::TxResult;
use caduceus_engine::storage::{MemoryStorage, Storage};

use crate::tamper::small_ledger;

#[test]
fn every_transaction_proves_its_result_and_a_changed_proof_fails() {
    let storage = Arc::new(MemoryStorage::new());
    let ledger = small_ledger(storage.clone(), 200);
    let mut ids = Vec::new();
    storage
        .scan(&[caduceus_engine::layout::TRANSACTION], &mut |key, _| {
            ids.push(u128::from_be_bytes(key[1..17].try_into().unwrap()));
            true
        })
        .unwrap();
    assert!(ids.len() > 200);
    // Every transaction, whoever it names: the workload's auditor reads them (each read logged).
    let auditor = caduceus_workload::auditor_key_of(3);
    let reads = ledger.audits_as(&caduceus_engine::signature::actor_key(&auditor), &auditor).unwrap();
    let (mut rejected, mut cross) = (0, 0);
    for id in &ids {
        let proof = reads.prove(*id).unwrap().expect("every indexed transaction has a proof");
        let checkpoint = ledger.checkpoint_at(proof.checkpoint_round).unwrap().unwrap().hash();
        assert_eq!(proof.verify(&checkpoint), Ok(()));
        assert_eq!(proof.transaction.id(), *id);
        rejected += usize::from(!proof.result.is_committed());
        cross += usize::from(caduceus_engine::routing::participants(&proof.transaction.transaction, 3).len() > 1);
    }
    assert!(rejected > 0 && cross > 0, "rejected and cross-shard transactions are proved too");

    let proof = reads.prove(ids[ids.len() / 2]).unwrap().unwrap();
    let checkpoint = ledger.checkpoint_at(proof.checkpoint_round).unwrap().unwrap().hash();
    let mut other_result = proof.clone();
    other_result.result = if proof.result.is_committed() {
        TxResult::Rejected(caduceus_engine::Reason::ConsentMissing)
    } else {
        TxResult::Committed
    };
    assert_eq!(other_result.verify(&checkpoint), Err(ProofError::ResultPath));
    let mut other_path = proof.clone();
    other_path.transaction_path[0].sibling[3] ^= 1;
    assert_eq!(other_path.verify(&checkpoint), Err(ProofError::TransactionPath));
    let mut other_header = proof.clone();
    other_header.header.time += 1;
    assert_eq!(other_header.verify(&checkpoint), Err(ProofError::CheckpointPath));
    let mut other_checkpoint = checkpoint;
    other_checkpoint[0] ^= 1;
    assert_eq!(proof.verify(&other_checkpoint), Err(ProofError::CheckpointPath));
    assert!(reads.prove(0x5eed).unwrap().is_none(), "an unknown id has no proof");

    // A proof travels as bytes and checks the same on the other side.
    use caduceus_engine::codec::Codec;
    let carried = caduceus_engine::Proof::decode(&proof.encode().unwrap()).unwrap();
    assert_eq!(carried, proof);
    assert_eq!(carried.verify(&checkpoint), Ok(()));
}
