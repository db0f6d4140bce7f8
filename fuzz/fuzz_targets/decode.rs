//! Every decoder of untrusted bytes, fed arbitrary input: none may panic, and
//! whatever decodes must encode back to exactly the same bytes (the encoding
//! is canonical, so a signature or a hash over it means one thing).
#![no_main]

use caduceus_engine::block::{BlockBody, BlockHeader, Checkpoint, Proof};
use caduceus_engine::codec::Codec;
use caduceus_engine::participant::{Head, RoundReply, RoundRequest, Status};
use caduceus_engine::round::{decode_decisions, encode_decisions, Genesis};
use caduceus_engine::state::StateKey;
use caduceus_engine::SignedTransaction;
use libfuzzer_sys::fuzz_target;

fn canonical<T: Codec>(bytes: &[u8]) {
    if let Ok(value) = T::decode(bytes) {
        assert_eq!(value.encode().expect("a decoded value encodes"), bytes);
    }
}

fuzz_target!(|input: &[u8]| {
    let Some((&which, bytes)) = input.split_first() else { return };
    match which % 12 {
        0 => {
            if let Ok(transaction) = SignedTransaction::decode(bytes) {
                let again = SignedTransaction::from_parts((*transaction.transaction).clone(), transaction.signature());
                assert_eq!(again.expect("a decoded transaction encodes").bytes(), bytes);
            }
        }
        1 => canonical::<BlockHeader>(bytes),
        2 => canonical::<BlockBody>(bytes),
        3 => canonical::<Checkpoint>(bytes),
        4 => canonical::<Proof>(bytes),
        5 => canonical::<Genesis>(bytes),
        6 => {
            if let Ok(key) = StateKey::from_bytes(bytes) {
                assert_eq!(key.to_bytes(), bytes);
            }
        }
        8 => canonical::<RoundRequest>(bytes),
        9 => canonical::<RoundReply>(bytes),
        10 => canonical::<Status>(bytes),
        11 => canonical::<Head>(bytes),
        _ => {
            if let Ok(decisions) = decode_decisions(bytes) {
                assert_eq!(encode_decisions(&decisions), bytes);
            }
        }
    }
});
