//! Value parsers for the command line's keys, ids and hashes, so a malformed one is refused
//! by clap with the flag's name before any handler runs.

use caduceus_engine::history::Cursor;
use caduceus_engine::model::{unhex, ActorKey, Hash, TxId};

/// An actor key: 64 hex digits.
pub fn actor(text: &str) -> Result<ActorKey, String> {
    ActorKey::from_hex(text).ok_or_else(|| format!("{text:?} is not a 64-digit hex actor key"))
}

/// A transaction, record or claim id: up to 32 hex digits.
pub fn id(text: &str) -> Result<TxId, String> {
    let bytes = unhex(text)
        .filter(|b| !b.is_empty() && b.len() <= 16)
        .ok_or_else(|| format!("{text:?} is not a hex id of up to 32 digits"))?;
    let mut padded = [0u8; 16];
    padded[16 - bytes.len()..].copy_from_slice(&bytes);
    Ok(u128::from_be_bytes(padded))
}

/// A history cursor, `HEIGHT:INDEX`, as a report prints it for its next page.
pub fn cursor(text: &str) -> Result<Cursor, String> {
    let parsed = text
        .split_once(':')
        .and_then(|(height, index)| Some(Cursor { height: height.parse().ok()?, index: index.parse().ok()? }));
    parsed.ok_or_else(|| format!("{text:?} is not a cursor such as 1234:5 (block height and index)"))
}

/// A blake3 hash, such as a checkpoint's: 64 hex digits.
pub fn hash(text: &str) -> Result<Hash, String> {
    unhex(text).and_then(|bytes| bytes.try_into().ok()).ok_or_else(|| format!("{text:?} is not a 64-digit hex hash"))
}

/// A role by name (`patient`, `provider`, ...); an operator is added only by a quorum.
pub fn role(text: &str) -> Result<caduceus_engine::Role, String> {
    match caduceus_engine::Role::parse(text) {
        Some(caduceus_engine::Role::Operator) => {
            Err("operators are added by a quorum of operators (add-operator)".into())
        }
        Some(role) => Ok(role),
        None => Err(format!(
            "not a role: {text} (patient, provider, payer, manufacturer, distributor, dispenser, regulator, auditor)"
        )),
    }
}
