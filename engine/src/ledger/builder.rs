//! Opening a ledger: where its storage is, which clock gives commit time, and the options of
//! this process; then the pipeline's stages are started.

use std::sync::Arc;

use crossbeam_channel::bounded;
use parking_lot::RwLock;

#[cfg(feature = "rocksdb")]
use crate::layout;
#[cfg(feature = "rocksdb")]
use crate::limits::BLOCK_CACHE_BYTES;
use crate::limits::{EXECUTE_QUEUE_DEPTH, PENALIZED_QUEUE_DEPTH, PERSIST_QUEUE_DEPTH, SUBMIT_QUEUE_DEPTH};
#[cfg(feature = "rocksdb")]
use crate::round::Genesis;
#[cfg(feature = "rocksdb")]
use crate::storage::RocksStorage;
use crate::storage::{MemoryStorage, Storage};

use super::admission::{Standings, Submission};
use super::core::Core;
use super::execute_stage::{execute_stage, Executed, Verified};
use super::persist_stage::{persist_stage, Durable};
use super::verify_stage::verify_stage;
use super::{system_clock, Clock, Config, Ledger, OpenError, Options};

/// How to open a ledger: `Ledger::builder()`, then the options, then one of the `open`s.
///
/// ```
/// use caduceus_engine::ledger::Options;
/// use caduceus_engine::signature::{actor_key, signing_key};
/// use caduceus_engine::{Config, Ledger};
///
/// let config = Config { shards: 2, genesis_operators: vec![actor_key(&signing_key([1; 32]))], operator_quorum: 1 };
/// let dir = tempfile::tempdir()?;
/// // At most 10,000 entries of the state that grows with history in memory per shard.
/// let options = Options { state_cache_entries: Some(10_000) };
/// let ledger = Ledger::builder().options(options.clone()).open(dir.path(), &config)?;
/// assert_eq!(ledger.shard_count(), 2);
/// drop(ledger);
/// // Reopened with the stored configuration.
/// let again = Ledger::builder().options(options).open_existing(dir.path())?;
/// assert_eq!(again.round(), 0);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct LedgerBuilder {
    options: Options,
    clock: Clock,
}

impl Default for LedgerBuilder {
    fn default() -> Self {
        Self { options: Options::default(), clock: system_clock() }
    }
}

impl LedgerBuilder {
    /// How this process runs the ledger (nothing of it is stored).
    pub fn options(mut self, options: Options) -> Self {
        self.options = options;
        self
    }

    /// The source of commit time (default: the system clock). Commit time never goes back,
    /// whatever the clock says.
    pub fn clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    /// Opens (or creates) a ledger in a directory, on RocksDB.
    #[cfg(feature = "rocksdb")]
    pub fn open(self, path: &std::path::Path, config: &Config) -> Result<Ledger, OpenError> {
        let storage = self.rocks(path)?;
        self.open_on(storage, config)
    }

    /// Opens a ledger that already exists in a directory, with its stored configuration.
    #[cfg(feature = "rocksdb")]
    pub fn open_existing(self, path: &std::path::Path) -> Result<Ledger, OpenError> {
        if !path.join("CURRENT").exists() {
            return Err(OpenError::NoLedger(path.to_owned()));
        }
        let storage = self.rocks(path)?;
        let bytes = storage.get(layout::META_CONFIG)?.ok_or_else(|| OpenError::Corrupt {
            place: layout::describe(layout::META_CONFIG),
            detail: "missing".into(),
        })?;
        let genesis = <Genesis as crate::codec::Codec>::decode(&bytes)
            .map_err(|e| OpenError::Corrupt { place: layout::describe(layout::META_CONFIG), detail: e.to_string() })?;
        let config =
            Config { shards: genesis.shards, genesis_operators: genesis.operators, operator_quorum: genesis.quorum };
        self.open_on(storage, &config)
    }

    /// A ledger that lives in memory only.
    pub fn open_in_memory(self, config: &Config) -> Result<Ledger, OpenError> {
        self.open_on(Arc::new(MemoryStorage::new()), config)
    }

    /// Opens (or creates) a ledger on any storage: a fault-injecting one in tests, say.
    pub fn open_on(self, storage: Arc<dyn Storage>, config: &Config) -> Result<Ledger, OpenError> {
        let (clock, options) = (self.clock, &self.options);
        let core = Arc::new(RwLock::new(Core::load(storage, config, options)?));
        let (submit_sender, submit_receiver) = bounded::<Submission>(SUBMIT_QUEUE_DEPTH);
        let (penalized_sender, penalized_receiver) = bounded::<Submission>(PENALIZED_QUEUE_DEPTH);
        let (verified_sender, verified_receiver) = bounded::<Verified>(EXECUTE_QUEUE_DEPTH);
        let standings = Arc::new(Standings::default());
        let verifier = {
            let standings = standings.clone();
            std::thread::Builder::new()
                .name("caduceus-verify".into())
                .spawn(move || verify_stage(&submit_receiver, &penalized_receiver, &standings, &verified_sender))
                .expect("spawn the verify stage")
        };
        let durable = Arc::new(Durable::default());
        let (persist_sender, persist_receiver) = bounded::<Executed>(PERSIST_QUEUE_DEPTH);
        let executor = {
            let (core, clock, durable) = (core.clone(), clock.clone(), durable.clone());
            // The execute stage runs on rayon threads of its own, one per core: on the pool
            // the verify stage uses, a round's shards would wait behind whole signature chunks.
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(std::thread::available_parallelism().map_or(1, |n| n.get()))
                .thread_name(|i| format!("caduceus-exec-{i}"))
                .build()
                .expect("start the execution threads");
            std::thread::Builder::new()
                .name("caduceus-execute".into())
                .spawn(move || {
                    pool.install(|| execute_stage(&core, &verified_receiver, &clock, &durable, &persist_sender))
                })
                .expect("spawn the execute stage")
        };
        let persister = {
            let (core, durable) = (core.clone(), durable.clone());
            let storage = core.read().storage.clone();
            std::thread::Builder::new()
                .name("caduceus-persist".into())
                .spawn(move || persist_stage(&core, storage.as_ref(), &persist_receiver, &durable))
                .expect("spawn the persist stage")
        };
        Ok(Ledger {
            core,
            durable,
            submit: Some((submit_sender, penalized_sender)),
            standings,
            threads: vec![verifier, executor, persister],
            clock,
        })
    }

    /// RocksDB in a directory; with a state cache, its own memory is bounded too.
    #[cfg(feature = "rocksdb")]
    fn rocks(&self, path: &std::path::Path) -> Result<Arc<dyn Storage>, OpenError> {
        let block_cache = self.options.state_cache_entries.map(|_| BLOCK_CACHE_BYTES);
        Ok(Arc::new(RocksStorage::open_with(path, block_cache)?))
    }
}
