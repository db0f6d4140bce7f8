//! The actors a file names, as the mappings plan them: a role, and the keystore name of the
//! key the actor signs with. No name of a person reaches the ledger: an actor there is its key.

/// An actor's role, as the file shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum ActorKind {
    Patient,
    Provider,
    Payer,
    /// A body that issues providers' credentials.
    Issuer,
}

/// An actor a file names: its kind and the keystore name of its key.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct PlannedActor {
    pub kind: ActorKind,
    pub key: String,
}

/// The keystore name `PREFIX.ID` of the key for an identifier, or `PREFIX.DIGEST` (32 hex
/// digits of its blake3) if the identifier is long or holds characters a key name may not.
pub fn key_name(prefix: &str, id: &str) -> String {
    let name = format!("{prefix}.{id}");
    let fits = name.len() <= 64 && !id.is_empty() && id.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
    if fits {
        name
    } else {
        format!("{prefix}.{}", &blake3::hash(id.as_bytes()).to_hex()[..32])
    }
}

/// A 128-bit id that is a function of its parts (each length-prefixed), under a context.
pub fn derived_id(context: &str, parts: &[&str]) -> u128 {
    let mut hasher = blake3::Hasher::new_derive_key(context);
    for part in parts {
        hasher.update(&(part.len() as u64).to_le_bytes());
        hasher.update(part.as_bytes());
    }
    u128::from_le_bytes(hasher.finalize().as_bytes()[..16].try_into().expect("16 bytes"))
}
