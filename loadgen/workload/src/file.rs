//! Pre-signed workload files: `loadgen generate` writes one and `loadgen run
//! --workload` replays it, so signing is never part of what is measured.
//!
//! Layout: the line `caduceus-workload 1`, one line of JSON describing how
//! the workload was made (with the genesis operator, and how many setup and
//! load transactions follow), then every transaction as a frame: a 4-byte
//! little-endian length and the transaction's wire bytes. Registrations come
//! first, then payer funding, then the load. A file is read as a stream, so a
//! workload of any size replays in bounded memory.

use std::fs::File;
use std::io::{self, BufRead, BufReader, BufWriter, Read, Write};
use std::path::Path;

use caduceus_engine::codec::DecodeError;
use caduceus_engine::limits::TRANSACTION_SIZE_MAX;
use caduceus_engine::model::ActorKey;
use caduceus_engine::SignedTransaction;
use thiserror::Error;

use crate::Workload;

const MAGIC: &str = "caduceus-workload 1";

/// Why a workload file could not be written or read.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum WorkloadFileError {
    #[error("workload file: {0}")]
    Io(#[from] io::Error),
    #[error("not a workload file (it does not start with {MAGIC:?})")]
    NotAWorkload,
    #[error("workload file header: {0}")]
    Header(String),
    #[error("workload file frame {index}: {detail}")]
    Frame { index: u64, detail: String },
    #[error("workload file transaction {index}: {source}")]
    Decode { index: u64, source: DecodeError },
    #[error("workload file ends after {read} of {expected} transactions")]
    Truncated { read: u64, expected: u64 },
}

/// What a workload file says about itself.
#[derive(Clone, Debug)]
pub struct WorkloadHeader {
    /// The genesis operator the ledger must be created with.
    pub operator: ActorKey,
    /// Registrations, then funding: two setup phases, each submitted after the one before is durable.
    pub setup: [u64; 2],
    /// Load transactions after the setup.
    pub transactions: u64,
    /// The shard count the workload's cross-shard share was computed for.
    pub shards: u32,
    /// Everything else about how it was made (seed, population, mix, skew, cross-shard share).
    pub description: serde_json::Value,
}

/// Writes a workload: setup and `transactions` load transactions, signed `batch` at a time.
pub fn write_workload(
    path: &Path,
    workload: &mut Workload,
    description: serde_json::Value,
    transactions: u64,
    batch: usize,
    mut progress: impl FnMut(usize),
) -> Result<WorkloadHeader, WorkloadFileError> {
    let setup = workload.signed_setup();
    let header = WorkloadHeader {
        operator: workload.operator(),
        setup: setup.each_ref().map(|phase| phase.len() as u64),
        transactions,
        shards: workload.shards(),
        description,
    };
    let mut out = BufWriter::with_capacity(1 << 20, File::create(path)?);
    let line = serde_json::json!({
        "operator": header.operator.to_string(),
        "setup": header.setup,
        "transactions": header.transactions,
        "shards": header.shards,
        "description": header.description,
    });
    writeln!(out, "{MAGIC}")?;
    writeln!(out, "{line}")?;
    let frame = |out: &mut BufWriter<File>, t: &SignedTransaction| -> io::Result<()> {
        out.write_all(&(t.bytes().len() as u32).to_le_bytes())?;
        out.write_all(t.bytes())
    };
    for t in setup.iter().flatten() {
        frame(&mut out, t)?;
    }
    let mut remaining = transactions;
    while remaining > 0 {
        let size = remaining.min(batch.max(1) as u64) as usize;
        for t in &workload.signed_batch(size) {
            frame(&mut out, t)?;
        }
        progress(size);
        remaining -= size as u64;
    }
    out.into_inner().map_err(io::IntoInnerError::into_error)?.sync_all()?;
    Ok(header)
}

/// Reads a workload file as a stream of transactions.
pub struct WorkloadReader {
    header: WorkloadHeader,
    input: BufReader<File>,
    /// Frames read so far, setup included.
    read: u64,
    buffer: Vec<u8>,
}

impl WorkloadReader {
    pub fn open(path: &Path) -> Result<Self, WorkloadFileError> {
        let mut input = BufReader::with_capacity(1 << 20, File::open(path)?);
        let mut line = String::new();
        input.by_ref().take(64).read_line(&mut line)?;
        if line.trim_end() != MAGIC {
            return Err(WorkloadFileError::NotAWorkload);
        }
        line.clear();
        input.by_ref().take(1 << 20).read_line(&mut line)?;
        let header = parse_header(&line).map_err(WorkloadFileError::Header)?;
        Ok(Self { header, input, read: 0, buffer: Vec::new() })
    }

    pub fn header(&self) -> &WorkloadHeader {
        &self.header
    }

    fn total(&self) -> u64 {
        self.header.setup.iter().sum::<u64>() + self.header.transactions
    }

    /// The next frame's bytes, or `None` at the end of the workload.
    fn next_frame(&mut self) -> Result<Option<&[u8]>, WorkloadFileError> {
        if self.read == self.total() {
            return Ok(None);
        }
        let index = self.read;
        let mut length = [0u8; 4];
        if let Err(error) = self.input.read_exact(&mut length) {
            return Err(match error.kind() {
                io::ErrorKind::UnexpectedEof => WorkloadFileError::Truncated { read: index, expected: self.total() },
                _ => error.into(),
            });
        }
        let length = u32::from_le_bytes(length) as usize;
        if length > TRANSACTION_SIZE_MAX {
            let detail = format!("length {length} is over the limit of {TRANSACTION_SIZE_MAX}");
            return Err(WorkloadFileError::Frame { index, detail });
        }
        self.buffer.resize(length, 0);
        self.input.read_exact(&mut self.buffer).map_err(|error| match error.kind() {
            io::ErrorKind::UnexpectedEof => WorkloadFileError::Truncated { read: index, expected: self.total() },
            _ => error.into(),
        })?;
        self.read += 1;
        Ok(Some(&self.buffer))
    }

    fn next_transaction(&mut self) -> Result<Option<SignedTransaction>, WorkloadFileError> {
        let index = self.read;
        match self.next_frame()? {
            None => Ok(None),
            Some(bytes) => {
                SignedTransaction::decode(bytes).map(Some).map_err(|source| WorkloadFileError::Decode { index, source })
            }
        }
    }

    /// The two setup phases. Call first.
    pub fn setup(&mut self) -> Result<[Vec<SignedTransaction>; 2], WorkloadFileError> {
        assert_eq!(self.read, 0, "setup is read before the load");
        let mut phases: [Vec<SignedTransaction>; 2] = Default::default();
        for (phase, count) in phases.iter_mut().zip(self.header.setup) {
            for _ in 0..count {
                let expected = self.total();
                let read = self.read;
                phase.push(self.next_transaction()?.ok_or(WorkloadFileError::Truncated { read, expected })?);
            }
        }
        Ok(phases)
    }

    /// Skips `count` load transactions without decoding them; returns how many were skipped.
    pub fn skip(&mut self, count: u64) -> Result<u64, WorkloadFileError> {
        let mut skipped = 0;
        while skipped < count && self.next_frame()?.is_some() {
            skipped += 1;
        }
        Ok(skipped)
    }

    /// Up to `size` next load transactions; empty at the end.
    pub fn batch(&mut self, size: usize) -> Result<Vec<SignedTransaction>, WorkloadFileError> {
        let mut batch = Vec::with_capacity(size);
        while batch.len() < size {
            match self.next_transaction()? {
                Some(t) => batch.push(t),
                None => break,
            }
        }
        Ok(batch)
    }
}

fn parse_header(line: &str) -> Result<WorkloadHeader, String> {
    let value: serde_json::Value = serde_json::from_str(line).map_err(|e| e.to_string())?;
    let number = |field: &str| value[field].as_u64().ok_or(format!("{field} is missing or not a number"));
    let operator = value["operator"]
        .as_str()
        .and_then(ActorKey::from_hex)
        .ok_or("operator is missing or not a 64-digit hex key")?;
    let setup: Vec<u64> =
        value["setup"].as_array().map(|a| a.iter().filter_map(serde_json::Value::as_u64).collect()).unwrap_or_default();
    let setup: [u64; 2] = setup.try_into().map_err(|_| "setup must list two counts")?;
    let shards = u32::try_from(number("shards")?).map_err(|_| "shards is out of range")?;
    Ok(WorkloadHeader {
        operator,
        setup,
        transactions: number("transactions")?,
        shards,
        description: value["description"].clone(),
    })
}
