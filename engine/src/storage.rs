//! Storage: a narrow key-value trait and its implementations.
//!
//! The contract every implementation keeps: `write` applies all of its writes
//! or none, and they are durable (fsynced) when it returns `Ok`. Reads see
//! every completed write. Nothing else is assumed of the disk.
//!
//! - `RocksStorage`: RocksDB, one WriteBatch and one WAL fsync per write.
//!   RocksDB checksums every WAL record and, on reopen, drops a torn tail
//!   rather than applying half a batch.
//! - `MemoryStorage`: an ordered map, for tests and simulation.
//! - `FaultyStorage`: a `MemoryStorage` that fails writes or "crashes"
//!   (loses every later write) on command, for fault-injection tests.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::RwLock;
use thiserror::Error;

pub use crate::round::Write;

/// An operating error of the storage layer.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum StorageError {
    #[cfg(feature = "rocksdb")]
    /// RocksDB failed.
    #[error("RocksDB: {0}")]
    Rocks(#[from] rocksdb::Error),
    /// A fault `FaultyStorage` was told to inject.
    #[error("injected fault: {0}")]
    Injected(&'static str),
    /// A stored value could not be decoded.
    #[error("stored data is damaged at {place}: {detail} (run `caduceus verify`)")]
    Damaged {
        /// Which key.
        place: String,
        /// What is wrong with it.
        detail: String,
    },
    /// RocksDB was built for CPU instructions this machine lacks (`.cargo/config.toml`).
    #[error("this CPU lacks {0}, which this build's RocksDB uses for its checksums")]
    UnsupportedCpu(&'static str),
}

/// An ordered, durable key-value store.
pub trait Storage: Send + Sync {
    /// The value stored under `key`, if any.
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError>;

    /// The values of many keys, in order (a backend may batch the reads).
    fn get_many(&self, keys: &[Vec<u8>]) -> Result<Vec<Option<Vec<u8>>>, StorageError> {
        keys.iter().map(|key| self.get(key)).collect()
    }

    /// Visits every key with this prefix in ascending order while `visit` returns true.
    fn scan(&self, prefix: &[u8], visit: &mut dyn FnMut(&[u8], &[u8]) -> bool) -> Result<(), StorageError>;

    /// Applies the writes atomically and durably.
    fn write(&self, writes: &[Write]) -> Result<(), StorageError>;

    /// Rewrites the store's files so that deleted values are gone from every one of them, its
    /// logs included (the payload store's erasure relies on it). Nothing to do where deletion
    /// already forgets (in memory).
    fn compact(&self) -> Result<(), StorageError> {
        Ok(())
    }
}

#[cfg(feature = "rocksdb")]
pub use rocks::RocksStorage;

/// The RocksDB backend (the `rocksdb` feature, on by default; the pure core
/// and the in-memory backend build without it).
#[cfg(feature = "rocksdb")]
mod rocks {
    use std::path::Path;

    use super::{Storage, StorageError, Write};

    /// Values this large or larger are kept in blob files rather than in the sorted tables: block
    /// bodies, which are large and written once.
    const BLOB_MIN_BYTES: u64 = 4096;

    /// Each memtable's size. RocksDB's default of 64 MiB puts a memtable's skip list well past
    /// the CPU's caches, and a block's keys are spread over the whole keyspace, so each insert
    /// would search memory the cache does not hold. (Measured in `docs/performance-history.md`.)
    const WRITE_BUFFER_BYTES: usize = 16 << 20;

    /// Level-0 tables that start a compaction into level 1: as many bytes of them as four
    /// default-sized memtables, so smaller memtables do not mean more rewriting of level 1.
    const LEVEL0_COMPACTION_TRIGGER: i32 = 16;

    /// The bounded block cache is split in 2^this shards, each large enough for whole filters.
    const BLOCK_CACHE_SHARD_BITS: i32 = 2;

    /// How far a scan reads ahead of the entry it is at.
    const SCAN_READAHEAD_BYTES: usize = 4 << 20;

    /// The first key after every key that starts with `prefix` (`None`: there is none).
    fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
        let mut end = prefix.to_vec();
        while let Some(last) = end.pop() {
            if last < u8::MAX {
                end.push(last + 1);
                return Some(end);
            }
        }
        None
    }

    /// RocksDB is compiled for SSE4.2 and PCLMULQDQ on x86-64 (its CRC32C checksums need them
    /// at compile time): refuse a CPU without them rather than stop on an illegal instruction.
    fn check_cpu() -> Result<(), StorageError> {
        #[cfg(target_arch = "x86_64")]
        for (name, present) in [
            ("SSE4.2", std::arch::is_x86_feature_detected!("sse4.2")),
            ("PCLMULQDQ", std::arch::is_x86_feature_detected!("pclmulqdq")),
        ] {
            if !present {
                return Err(StorageError::UnsupportedCpu(name));
            }
        }
        Ok(())
    }

    /// RocksDB on a local directory.
    pub struct RocksStorage {
        db: rocksdb::DB,
        /// Whether a write is durable when it returns (false only for a scratch store).
        durable: bool,
    }

    impl RocksStorage {
        /// Opens (or creates) a store. Each table's index and filter stay in memory once read:
        /// about 2.5 bytes per stored key, so that memory grows with history.
        pub fn open(path: &Path) -> Result<Self, StorageError> {
            Self::open_with(path, None)
        }

        /// A scratch store for work that is thrown away if the process stops (`verify`'s
        /// replayed state): bounded memory, and writes neither logged nor fsynced.
        pub fn scratch(path: &Path) -> Result<Self, StorageError> {
            let mut storage = Self::open_with(path, Some(crate::limits::BLOCK_CACHE_BYTES / 4))?;
            storage.durable = false;
            Ok(storage)
        }

        /// Opens (or creates) a store whose RocksDB memory is bounded whatever the history: with
        /// `Some(bytes)`, data blocks, indexes and filters share one cache of that size.
        pub fn open_with(path: &Path, block_cache_bytes: Option<usize>) -> Result<Self, StorageError> {
            Self::open_configured(path, block_cache_bytes, true)
        }

        /// A store for the payload store: bounded memory, and values kept in its tables rather
        /// than in blob files, so a compaction (`Storage::compact`) rewrites a deleted one away.
        pub fn open_for_payloads(path: &Path) -> Result<Self, StorageError> {
            Self::open_configured(path, Some(crate::limits::BLOCK_CACHE_BYTES / 4), false)
        }

        fn open_configured(path: &Path, block_cache_bytes: Option<usize>, blobs: bool) -> Result<Self, StorageError> {
            check_cpu()?;
            let mut options = rocksdb::Options::default();
            options.create_if_missing(true);
            options.set_paranoid_checks(true);
            // Stop at the first damaged WAL record: a torn tail is dropped, never half-applied.
            options.set_wal_recovery_mode(rocksdb::DBRecoveryMode::PointInTime);
            // Fresh data (L0, L1) is written uncompressed: flushes are on the commit path's CPU
            // budget, and most of it is rewritten by compaction soon anyway.
            use rocksdb::DBCompressionType::{Lz4, None as Uncompressed};
            options.set_compression_per_level(&[Uncompressed, Uncompressed, Lz4, Lz4, Lz4, Lz4, Lz4]);
            // A bloom filter over the memtable's keys: most transaction-index lookups are for
            // new ids, and the filter answers "absent" without searching the skiplist.
            options.set_memtable_prefix_bloom_ratio(0.05);
            options.set_memtable_whole_key_filtering(true);
            options.increase_parallelism(2);
            // Flushes and compactions write their files out as they go, so the commit path's
            // WAL fsync never waits behind tens of megabytes of dirty pages.
            options.set_bytes_per_sync(1 << 20);
            let mut table = rocksdb::BlockBasedOptions::default();
            // 16 bits per key rather than 10: every new transaction's id is looked up in every
            // level and found in none, so on a long history each false positive is a wasted
            // data-block read; the filters cost about 2 bytes per key of memory.
            table.set_bloom_filter(16.0, false);
            if let Some(bytes) = block_cache_bytes {
                // One bounded cache holds data blocks and every table's index and filter, so
                // RocksDB's memory stays the same however much history the ledger holds.
                // Indexes are cut into small partitions under a pinned top level. Filters stay
                // whole (about 1.5 MB a table at 10M transactions) in the cache's high-priority
                // pool, which is why the cache has 4 shards of 64 MiB: in the default 4 MB
                // shards data blocks pushed them out and they were read again. Partitioned
                // filters avoided that but cost a search of the partition index and a second
                // cache lookup for every key in every table, and every new id is checked that
                // way.
                let mut cache = rocksdb::LruCacheOptions::default();
                cache.set_capacity(bytes);
                cache.set_num_shard_bits(BLOCK_CACHE_SHARD_BITS);
                table.set_block_cache(&rocksdb::Cache::new_lru_cache_opts(&cache));
                table.set_cache_index_and_filter_blocks(true);
                table.set_cache_index_and_filter_blocks_with_high_priority(true);
                table.set_pin_l0_filter_and_index_blocks_in_cache(true);
                table.set_index_type(rocksdb::BlockBasedIndexType::TwoLevelIndexSearch);
                table.set_metadata_block_size(4096);
                table.set_pin_top_level_index_and_filter(true);
            }
            options.set_block_based_table_factory(&table);
            // Flushes and compactions run at the lowest CPU priority: on a machine the commit
            // path keeps busy they take the spare time instead of a core from a waiting batch,
            // which a flush at normal priority showed up as in the open-loop tail. Four write buffers
            // give a slow flush room; past that RocksDB's own stall bounds the backlog. The
            // priority is set on RocksDB's default environment, so it holds for every RocksDB
            // store in the process, an embedding application's own included.
            let mut env = rocksdb::Env::new()?;
            env.lower_thread_pool_cpu_priority();
            env.lower_high_priority_thread_pool_cpu_priority();
            options.set_env(&env);
            options.set_max_write_buffer_number(4);
            options.set_write_buffer_size(WRITE_BUFFER_BYTES);
            options.set_level_zero_file_num_compaction_trigger(LEVEL0_COMPACTION_TRIGGER);
            // By default RocksDB slows writes at 20 level-0 tables and stops them at 36, 16 and
            // 32 past its default trigger of four: the same counts past this trigger.
            options.set_level_zero_slowdown_writes_trigger(LEVEL0_COMPACTION_TRIGGER + 16);
            options.set_level_zero_stop_writes_trigger(LEVEL0_COMPACTION_TRIGGER + 32);
            // Block bodies (tens of kilobytes, never changed, most of the bytes) go to blob
            // files: compaction then moves a pointer instead of rewriting the body at every level.
            options.set_enable_blob_files(blobs);
            options.set_min_blob_size(BLOB_MIN_BYTES);
            Ok(Self { db: rocksdb::DB::open(&options, path)?, durable: true })
        }
    }

    impl Storage for RocksStorage {
        fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
            Ok(self.db.get(key)?)
        }

        fn get_many(&self, keys: &[Vec<u8>]) -> Result<Vec<Option<Vec<u8>>>, StorageError> {
            self.db.multi_get(keys).into_iter().map(|r| r.map_err(StorageError::from)).collect()
        }

        fn scan(&self, prefix: &[u8], visit: &mut dyn FnMut(&[u8], &[u8]) -> bool) -> Result<(), StorageError> {
            // A scan reads each block once: it neither fills the block cache (the blocks the
            // commit path reuses stay there) nor copies each entry out, and reads ahead in large
            // steps when the files are not in the page cache.
            let mut options = rocksdb::ReadOptions::default();
            options.fill_cache(false);
            options.set_readahead_size(SCAN_READAHEAD_BYTES);
            if let Some(end) = prefix_end(prefix) {
                options.set_iterate_upper_bound(end);
            }
            let mut iterator = self.db.raw_iterator_opt(options);
            iterator.seek(prefix);
            while let (Some(key), Some(value)) = (iterator.key(), iterator.value()) {
                if !key.starts_with(prefix) || !visit(key, value) {
                    break;
                }
                iterator.next();
            }
            Ok(iterator.status()?)
        }

        fn write(&self, writes: &[Write]) -> Result<(), StorageError> {
            // In key order (stable, so a later write to the same key still wins): each memtable
            // insert then starts from where the previous one ended instead of searching anew.
            let mut order: Vec<&Write> = writes.iter().collect();
            order.sort_by(|a, b| a.0.cmp(&b.0));
            let mut batch = rocksdb::WriteBatch::default();
            for (key, value) in order {
                match value {
                    Some(value) => batch.put(key, value),
                    None => batch.delete(key),
                }
            }
            let mut options = rocksdb::WriteOptions::default();
            options.set_sync(self.durable);
            options.disable_wal(!self.durable);
            Ok(self.db.write_opt(batch, &options)?)
        }

        fn compact(&self) -> Result<(), StorageError> {
            // The memtable to a table (its WAL is then obsolete and deleted), then every table
            // rewritten down to the bottom level, where a deleted key's values are dropped.
            self.db.flush()?;
            let mut options = rocksdb::CompactOptions::default();
            options.set_bottommost_level_compaction(rocksdb::BottommostLevelCompaction::Force);
            options.set_exclusive_manual_compaction(true);
            self.db.compact_range_opt(None::<&[u8]>, None::<&[u8]>, &options);
            Ok(())
        }
    }
}

/// An ordered map in memory.
#[derive(Default)]
pub struct MemoryStorage {
    map: RwLock<BTreeMap<Vec<u8>, Vec<u8>>>,
}

impl MemoryStorage {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }
    /// A store holding these entries.
    pub fn from_map(map: BTreeMap<Vec<u8>, Vec<u8>>) -> Self {
        Self { map: RwLock::new(map) }
    }
    /// A copy of everything stored.
    pub fn snapshot(&self) -> BTreeMap<Vec<u8>, Vec<u8>> {
        self.map.read().clone()
    }
}

impl Storage for MemoryStorage {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        Ok(self.map.read().get(key).cloned())
    }
    fn scan(&self, prefix: &[u8], visit: &mut dyn FnMut(&[u8], &[u8]) -> bool) -> Result<(), StorageError> {
        let map = self.map.read();
        for (key, value) in map.range(prefix.to_vec()..) {
            if !key.starts_with(prefix) || !visit(key, value) {
                break;
            }
        }
        Ok(())
    }
    fn write(&self, writes: &[Write]) -> Result<(), StorageError> {
        let mut map = self.map.write();
        for (key, value) in writes {
            match value {
                Some(value) => map.insert(key.clone(), value.clone()),
                None => map.remove(key),
            };
        }
        Ok(())
    }
}

/// Memory storage with injected faults.
#[derive(Default)]
pub struct FaultyStorage {
    inner: MemoryStorage,
    writes_done: AtomicU64,
    /// Writes after this many fail and are lost (`u64::MAX`: never).
    crash_after: AtomicU64,
    /// The next this-many writes fail with an error but the store stays usable.
    failing_writes: AtomicU64,
    /// Milliseconds every write takes (a slow disk).
    write_delay_ms: AtomicU64,
}

impl FaultyStorage {
    /// A store that injects no fault until told to.
    pub fn new() -> Self {
        Self { crash_after: AtomicU64::new(u64::MAX), ..Self::default() }
    }
    /// Simulates a crash after `count` more successful writes: every later write is lost.
    pub fn crash_after(&self, count: u64) {
        self.crash_after.store(self.writes_done.load(Ordering::SeqCst) + count, Ordering::SeqCst);
    }
    /// Makes the next `count` writes fail (a full or failing disk that recovers).
    pub fn fail_next_writes(&self, count: u64) {
        self.failing_writes.store(count, Ordering::SeqCst);
    }
    /// Makes every write take this long, as on a slow disk.
    pub fn delay_writes(&self, delay: std::time::Duration) {
        self.write_delay_ms.store(delay.as_millis() as u64, Ordering::SeqCst);
    }
    /// Writes that succeeded so far.
    pub fn writes_done(&self) -> u64 {
        self.writes_done.load(Ordering::SeqCst)
    }
    /// What survived: every write completed before the crash.
    pub fn durable(&self) -> BTreeMap<Vec<u8>, Vec<u8>> {
        self.inner.snapshot()
    }
}

impl Storage for FaultyStorage {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        self.inner.get(key)
    }
    fn scan(&self, prefix: &[u8], visit: &mut dyn FnMut(&[u8], &[u8]) -> bool) -> Result<(), StorageError> {
        self.inner.scan(prefix, visit)
    }
    fn write(&self, writes: &[Write]) -> Result<(), StorageError> {
        if self.writes_done.load(Ordering::SeqCst) >= self.crash_after.load(Ordering::SeqCst) {
            return Err(StorageError::Injected("crashed"));
        }
        let failing = self.failing_writes.load(Ordering::SeqCst);
        if failing > 0 {
            self.failing_writes.store(failing - 1, Ordering::SeqCst);
            return Err(StorageError::Injected("write failed"));
        }
        let delay = self.write_delay_ms.load(Ordering::SeqCst);
        if delay > 0 {
            std::thread::sleep(std::time::Duration::from_millis(delay));
        }
        self.inner.write(writes)?;
        self.writes_done.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}
