//! Every bound the engine enforces, named in one place.
//!
//! Untrusted bytes are checked against these before anything is allocated for
//! them, and every queue in the pipeline is sized from them.

/// Largest encoded transaction, signature included.
pub const TRANSACTION_SIZE_MAX: usize = 4096;
/// Longest short text field (a code, a resource type, a lot number), in bytes.
pub const CODE_LENGTH_MAX: usize = 64;
/// Most GS1 company prefixes a manufacturer may be registered with.
pub const PREFIXES_PER_ACTOR_MAX: usize = 16;
/// Most operators' approvals one `add-operator` carries.
pub const APPROVALS_MAX: usize = 16;
/// Most resource types a consent may name in its scope.
pub const CONSENT_SCOPE_COUNT_MAX: usize = 16;
/// Largest amount on one claim line or one funding, in cents (one billion dollars).
pub const AMOUNT_MAX: u64 = 100_000_000_000;
/// Largest balance an account may reach, in cents: funding or a payment past it is refused
/// (`limit-exceeded`). Credits prepared in one round can pass it by at most a round's worth of
/// `AMOUNT_MAX`, far below `u64::MAX`, so a balance never overflows.
pub const BALANCE_MAX: u64 = AMOUNT_MAX * 1_000;
/// Most a payer may fund its account with over its life, in cents: funding past it is refused
/// (`limit-exceeded`), so the running funding total never overflows.
pub const FUNDED_MAX: u64 = AMOUNT_MAX * 1_000_000;
/// How long after its timestamp a transaction may commit, in milliseconds (one day): later it
/// is refused as `expired`, so an old signed transaction cannot be replayed into a much later
/// ledger, and a duplicate can only arrive within this window of the first.
pub const TRANSACTION_VALIDITY_MS: u64 = 24 * 60 * 60 * 1000;
/// How far a transaction's timestamp may be ahead of the round's commit time, in milliseconds
/// (five minutes of clock skew): further ahead it is refused as `not-yet-valid`.
pub const CLOCK_SKEW_MS: u64 = 5 * 60 * 1000;
/// Most transactions in one submitted batch.
pub const BATCH_TRANSACTIONS_MAX: usize = 16_384;
/// Most transactions in one block, and in one group of rounds written together.
pub const ROUND_TRANSACTIONS_MAX: usize = 32_768;
/// Most shards a ledger may have.
pub const SHARDS_MAX: u32 = 256;
/// Submitted batches waiting for signature checks.
pub const SUBMIT_QUEUE_DEPTH: usize = 8;
/// Batches of clients that sent bad signatures, waiting behind everyone else's.
pub const PENALIZED_QUEUE_DEPTH: usize = 2;
/// Penalized clients remembered at once.
pub const PENALIZED_CLIENTS_MAX: usize = 65_536;
/// Most of the verify stage's time that penalized clients' batches get, in percent.
pub const PENALIZED_VERIFY_PERCENT: u32 = 10;
/// A client's batches queued behind everyone else's after one of its batches held a bad signature.
pub const PENALTY_BATCHES: u32 = 16;
/// Verified batches waiting for execution.
pub const EXECUTE_QUEUE_DEPTH: usize = 4;
/// Executed groups waiting to be written and fsynced.
pub const PERSIST_QUEUE_DEPTH: usize = 2;
/// RocksDB's block cache with a state cache limit (`ledger::Options`): data blocks, indexes and
/// filters of every table.
pub const BLOCK_CACHE_BYTES: usize = 256 << 20;
/// Entries of the state that grows with history `caduceus verify` keeps in memory per shard
/// while it replays (the rest is in its scratch store).
pub const VERIFY_STATE_CACHE_ENTRIES: usize = 100_000;
/// Decompressed signer keys a signature verifier keeps (about 200 bytes each).
pub const KEY_CACHE_ENTRIES_MAX: usize = 262_144;
/// Most signatures checked together in one batched equation.
pub const VERIFY_CHUNK_MAX: usize = 1024;
/// Fewest signatures in one batched equation, unless the batch is smaller.
pub const VERIFY_CHUNK_MIN: usize = 64;
/// Batches up to this size are first checked as one chunk, on one thread (their verdicts still
/// follow `chunk_size`'s chunks); two such batches waiting together are checked side by side.
pub const VERIFY_ONE_CHUNK_MAX: usize = 256;
/// Failing chunks of one batch that are still searched for their bad signatures; a batch with
/// more has its failing chunks refused whole.
pub const BAD_CHUNKS_TOLERATED: usize = 1;
/// Most active consents one patient may hold for one grantee.
pub const CONSENTS_PER_GRANTEE_MAX: usize = 32;
/// Most entries one history query (an access report, a custody trace) returns.
pub const HISTORY_ENTRIES_MAX: usize = 10_000;
