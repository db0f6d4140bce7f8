//! Bad input gets a clear error or rejection and changes nothing else.

use caduceus_engine::codec::DecodeError;
use caduceus_engine::limits::{BATCH_TRANSACTIONS_MAX, TRANSACTION_SIZE_MAX};
use caduceus_engine::model::{ActorKey, ClaimLine, Operation, Purpose, Reason, TxResult};
use caduceus_engine::{SignedTransaction, SubmitError};
use proptest::prelude::*;

use crate::support::{committed, rejected, submit_claim, World};

fn sample(world: &World) -> SignedTransaction {
    world.tx(
        &world.doctor,
        submit_claim(
            9,
            &world.patient.id,
            &world.doctor.id,
            &world.payer.id,
            2027_01_01,
            &[ClaimLine { procedure: "99213".into(), diagnosis: "E11.9".into(), amount: 100 }],
        ),
    )
}

#[test]
fn every_truncation_of_a_transaction_is_refused() {
    let world = World::new();
    let bytes = sample(&world).bytes().to_vec();
    for length in 0..bytes.len() {
        assert!(SignedTransaction::decode(&bytes[..length]).is_err(), "prefix of {length} bytes decoded");
    }
    assert!(SignedTransaction::decode(&bytes).is_ok());
    let mut longer = bytes.clone();
    longer.push(0);
    // One byte more shifts the signature: the body no longer ends where it should.
    assert!(SignedTransaction::decode(&longer).is_err());
}

#[test]
fn oversized_input_is_refused_before_it_is_read() {
    let oversized = vec![1u8; TRANSACTION_SIZE_MAX + 1];
    assert!(matches!(SignedTransaction::decode(&oversized), Err(DecodeError::TooLong { .. })));
    let world = World::new();
    let long_lot = "x".repeat(10_000);
    let unit = caduceus_engine::UnitId { gtin: 30_001_001_234_568, serial: "1".into() };
    let operation = Operation::CommissionUnit { unit, lot: long_lot, expiry: 0 };
    let transaction =
        caduceus_engine::Transaction { nonce: 1, signer: world.operator.id, timestamp: 0, operation, key: None };
    assert!(
        caduceus_engine::signature::sign(transaction, &world.operator.key).is_err(),
        "fields over their limit cannot be encoded"
    );
}

#[test]
fn bad_signatures_unknown_actors_and_replays_change_nothing() {
    let world = World::new();
    let ledger = world.ledger(3);
    let before = ledger.state_hash().unwrap();
    let heights = ledger.heights();

    let good = sample(&world);
    let mut forged = good.bytes().to_vec();
    let last = forged.len() - 1;
    forged[last] ^= 0x01;
    let forged = SignedTransaction::decode(&forged).unwrap();
    let mut other_signer = good.bytes().to_vec();
    other_signer[17..49].copy_from_slice(&world.nurse.id.0); // claims to be the nurse, signed by the doctor
    let other_signer = SignedTransaction::decode(&other_signer).unwrap();
    let results = ledger.submit(vec![forged, other_signer]).unwrap();
    assert_eq!(results, vec![rejected(Reason::BadSignature), rejected(Reason::BadSignature)]);
    assert_eq!(
        (ledger.state_hash().unwrap(), ledger.heights()),
        (before, heights.clone()),
        "refused signatures never reach a block"
    );

    let stranger = world.tx(&world.stranger, Operation::FundAccount { amount: 5 });
    let wrong_role = world.tx(&world.doctor, Operation::FundAccount { amount: 5 });
    let wrong_role_everywhere = world.tx(
        &world.patient,
        Operation::RecallLot { gtin: 1, lot: "L1".into(), reason: caduceus_engine::model::RecallClass::ClassII },
    );
    let results = ledger.submit(vec![stranger, wrong_role, wrong_role_everywhere]).unwrap();
    assert_eq!(
        results,
        vec![rejected(Reason::UnknownSigner), rejected(Reason::RoleNotPermitted), rejected(Reason::RoleNotPermitted)]
    );
    assert_eq!(
        (ledger.state_hash().unwrap(), ledger.heights()),
        (before, heights.clone()),
        "an unknown or wrong-role signer is refused before the ledger: nothing is recorded"
    );

    let fund = world.tx(&world.payer, Operation::FundAccount { amount: 70 });
    assert_eq!(ledger.submit(vec![fund.clone()]).unwrap(), vec![committed()]);
    let after = ledger.state_hash().unwrap();
    // Replayed: alone, twice in one batch, and with a changed body under the same id.
    assert_eq!(ledger.submit(vec![fund.clone(), fund.clone()]).unwrap(), vec![committed(), committed()]);
    let same_id = caduceus_engine::signature::sign(
        caduceus_engine::Transaction { operation: Operation::FundAccount { amount: 1 }, ..(*fund.transaction).clone() },
        &world.payer.key,
    )
    .unwrap();
    assert_eq!(ledger.submit(vec![same_id]).unwrap(), vec![rejected(Reason::Conflict)]);
    assert_eq!(ledger.state_hash().unwrap(), after, "a replayed id applies once");
    assert_eq!(world.reads(&ledger, &world.payer).account(&world.payer.id).unwrap().unwrap().balance, 70);

    // An id first seen with a bad signature is not burned.
    let denied = world.tx(
        &world.nurse,
        Operation::AccessRecord { record: 1, patient: world.patient.id, purpose: Purpose::Treatment },
    );
    let mut broken = denied.bytes().to_vec();
    broken[60] ^= 0xff;
    let broken = SignedTransaction::decode(&broken).unwrap();
    assert_eq!(ledger.submit(vec![broken]).unwrap(), vec![rejected(Reason::BadSignature)]);
    assert_eq!(ledger.submit(vec![denied]).unwrap(), vec![rejected(Reason::UnknownRecord)]);

    // A weak (small-order) signer key.
    let mut weak = [0u8; 32];
    weak[0] = 1;
    let weak_signer = caduceus_engine::SignedTransaction::from_parts(
        caduceus_engine::Transaction {
            nonce: 77,
            signer: ActorKey(weak),
            timestamp: 0,
            operation: Operation::FundAccount { amount: 1 },
            key: None,
        },
        [0; 64],
    )
    .unwrap();
    assert_eq!(ledger.submit(vec![weak_signer]).unwrap(), vec![TxResult::Rejected(Reason::WeakKey)]);

    let too_many = vec![sample(&world); BATCH_TRANSACTIONS_MAX + 1];
    assert!(matches!(ledger.submit(too_many), Err(SubmitError::BatchTooLarge { .. })));
    assert_eq!(
        world.reads(&ledger, &world.payer).account(&world.payer.id).unwrap().unwrap().balance,
        70,
        "the ledger keeps serving"
    );
}

/// Whatever decodes from `bytes` encodes back to exactly them: the encoding is canonical, so a
/// signature or a hash over it means one thing.
fn canonical<T: caduceus_engine::codec::Codec>(bytes: &[u8]) -> Result<(), TestCaseError> {
    if let Ok(value) = T::decode(bytes) {
        prop_assert_eq!(value.encode().expect("a decoded value encodes"), bytes);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2_000))]

    #[test]
    fn decoding_random_bytes_never_panics_and_what_decodes_is_canonical(
        bytes in proptest::collection::vec(any::<u8>(), 0..600)
    ) {
        if let Ok(transaction) = SignedTransaction::decode(&bytes) {
            let again = SignedTransaction::from_parts((*transaction.transaction).clone(), transaction.signature()).unwrap();
            prop_assert_eq!(again.bytes(), &bytes[..]);
        }
        canonical::<caduceus_engine::block::BlockBody>(&bytes)?;
        canonical::<caduceus_engine::block::BlockHeader>(&bytes)?;
        canonical::<caduceus_engine::block::Checkpoint>(&bytes)?;
        canonical::<caduceus_engine::Proof>(&bytes)?;
        canonical::<caduceus_engine::round::Genesis>(&bytes)?;
        if let Ok(key) = caduceus_engine::state::StateKey::from_bytes(&bytes) {
            prop_assert_eq!(key.to_bytes(), bytes.clone());
        }
        if let Ok(decisions) = caduceus_engine::round::decode_decisions(&bytes) {
            prop_assert_eq!(caduceus_engine::round::encode_decisions(&decisions), bytes.clone());
        }
    }

    /// Random bytes that happen to be a transaction's prefix are the likeliest to get past the
    /// first checks, so every truncation of a real transaction is tried too.
    #[test]
    fn a_truncated_transaction_is_refused(cut in 0usize..200) {
        let world = World::new();
        let bytes = sample(&world).bytes().to_vec();
        let cut = cut % bytes.len();
        prop_assert!(SignedTransaction::decode(&bytes[..cut]).is_err());
    }

    #[test]
    fn flipping_any_byte_of_a_transaction_is_caught(position in 0usize..200, bit in 0u8..8) {
        let world = World::new();
        let good = sample(&world);
        let mut bytes = good.bytes().to_vec();
        let position = position % bytes.len();
        bytes[position] ^= 1 << bit;
        if let Ok(changed) = SignedTransaction::decode(&bytes) {
            let verdicts = caduceus_engine::signature::verify_all(&[changed]);
            prop_assert!(verdicts[0].is_some(), "a changed byte at {} passed the signature check", position);
        }
    }
}

/// A client that puts a bad signature in every verify chunk has those chunks refused unsearched,
/// while another client's batches, submitted at the same time, are served as usual; once the
/// hostile client sends good batches again, they are served too.
#[test]
fn a_client_sending_forgeries_is_refused_and_others_are_served() {
    use caduceus_workload::{forge_every_chunk, Workload, WorkloadConfig};

    let config = WorkloadConfig { seed: 5, patients: 200, providers: 20, ..WorkloadConfig::default() };
    let mut workload = Workload::new(config, 1_800_000_000_000);
    let ledger = caduceus_engine::Ledger::builder()
        .clock(std::sync::Arc::new(|| 1_800_000_000_000))
        .open_in_memory(&workload.ledger_config(2))
        .unwrap();
    for phase in workload.signed_setup() {
        assert!(ledger.submit(phase).unwrap().iter().all(|r| r.is_committed()));
    }
    let hostile: Vec<Vec<SignedTransaction>> = (0..6)
        .map(|_| {
            let mut batch = workload.signed_batch(2_048);
            forge_every_chunk(&mut batch);
            batch
        })
        .collect();
    let honest: Vec<Vec<SignedTransaction>> = (0..6).map(|_| workload.signed_batch(512)).collect();
    let (hostile_pending, honest_pending): (Vec<_>, Vec<_>) = hostile
        .iter()
        .zip(&honest)
        .map(|(h, g)| {
            (ledger.submit_async_from(7, h.clone()).unwrap(), ledger.submit_async_from(1, g.clone()).unwrap())
        })
        .unzip();
    for pending in hostile_pending {
        let results = pending.wait().unwrap();
        assert!(results.iter().all(|r| *r == rejected(Reason::BatchAbandoned)), "every failing chunk is refused");
    }
    for (batch, pending) in honest.iter().zip(honest_pending) {
        let results = pending.wait().unwrap();
        assert!(results
            .iter()
            .all(|r| !matches!(r, TxResult::Rejected(Reason::BadSignature | Reason::BatchAbandoned))));
        assert_eq!(ledger.locate(batch[0].id()).unwrap().map(|l| l.result), Some(results[0]));
    }
    // The hostile transactions reached nothing: none was recorded.
    assert!(hostile.iter().flatten().all(|t| ledger.locate(t.id()).unwrap().is_none()));
    // A good batch from the same client, while it is still penalized, is served once nothing else waits.
    let good = workload.signed_batch(64);
    let results = ledger.submit_async_from(7, good).unwrap().wait().unwrap();
    assert!(results.iter().any(|r| *r == committed()));
}

/// A nonce is the signer's own: another actor using it first takes nothing from the signer. A
/// transaction commits only within a day of its signing, and not ahead of the commit time by
/// more than the allowed clock skew; refused for either, it is not recorded and its nonce
/// stays free.
#[test]
fn a_nonce_belongs_to_its_signer_and_a_transaction_to_its_validity_window() {
    use caduceus_engine::limits::{CLOCK_SKEW_MS, TRANSACTION_VALIDITY_MS};
    use caduceus_engine::signature::sign;
    use caduceus_engine::Transaction;

    use crate::support::{Actor, START};

    let world = World::new();
    let ledger = world.ledger(2);
    let signed = |actor: &Actor, nonce: u128, timestamp: u64, operation: Operation| {
        sign(Transaction { nonce, signer: actor.id, timestamp, operation, key: None }, &actor.key).unwrap()
    };
    // The doctor sees the payer's next nonce and uses it first (its transaction is recorded).
    let squat = signed(
        &world.doctor,
        8,
        START,
        Operation::AmendRecord { record: 1, patient: world.patient.id, content_hash: [1; 32] },
    );
    assert_eq!(ledger.submit(vec![squat]).unwrap(), vec![rejected(Reason::UnknownRecord)]);
    // The payer's own transaction under that nonce is its own, and applies.
    let fund = signed(&world.payer, 8, START, Operation::FundAccount { amount: 40 });
    assert_eq!(ledger.submit(vec![fund.clone()]).unwrap(), vec![committed()]);
    assert_eq!(world.reads(&ledger, &world.payer).account(&world.payer.id).unwrap().unwrap().balance, 40);

    // A day and a moment later: a transaction signed at the start is expired, refused unrecorded.
    world.advance(TRANSACTION_VALIDITY_MS + 1);
    let now = START + TRANSACTION_VALIDITY_MS + 1;
    let heights = ledger.heights();
    let stale = signed(&world.payer, 9, START, Operation::FundAccount { amount: 5 });
    assert_eq!(ledger.submit(vec![stale]).unwrap(), vec![rejected(Reason::Expired)]);
    let early = signed(&world.payer, 9, now + CLOCK_SKEW_MS + 1, Operation::FundAccount { amount: 5 });
    assert_eq!(ledger.submit(vec![early]).unwrap(), vec![rejected(Reason::NotYetValid)]);
    assert_eq!(ledger.heights(), heights, "refusals reach no block");
    // The nonce is still free: signed now, and within the skew ahead, it commits once.
    let fresh = signed(&world.payer, 9, now + CLOCK_SKEW_MS, Operation::FundAccount { amount: 5 });
    assert_eq!(ledger.submit(vec![fresh.clone(), fresh]).unwrap(), vec![committed(), committed()]);
    // The first fund, sent again after its window, keeps its first result and applies nothing.
    assert_eq!(ledger.submit(vec![fund]).unwrap(), vec![committed()]);
    assert_eq!(world.reads(&ledger, &world.payer).account(&world.payer.id).unwrap().unwrap().balance, 45);
}
