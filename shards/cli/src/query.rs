//! `caduceus query`: the questions, asked of any [`Reader`].

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use caduceus_engine::codec::Codec;
use caduceus_engine::model::{hex, ActorKey, UnitId};
use caduceus_engine::{Checkpoint, Proof, TxId};
use clap::Subcommand;

use crate::parse;
use crate::print;
use crate::reader::Reader;

#[derive(Subcommand)]
pub enum Question {
    /// Who accessed a patient's records, when, why, permitted or denied.
    AccessReport {
        #[arg(long, value_parser = parse::actor)]
        patient: ActorKey,
    },
    /// A unit's custody trail and whether it is genuine, recalled or expired.
    Unit {
        #[arg(long)]
        gtin: u64,
        #[arg(long)]
        serial: String,
    },
    /// A claim's status and payment.
    Claim {
        #[arg(long, value_parser = parse::actor)]
        patient: ActorKey,
        #[arg(long, value_parser = parse::id)]
        claim: TxId,
    },
    /// An account's balance.
    Balance {
        #[arg(long, value_parser = parse::actor)]
        account: ActorKey,
    },
    /// A transaction's result, and its inclusion proof checked against its checkpoint.
    Transaction {
        #[arg(long, value_parser = parse::id)]
        id: TxId,
    },
    /// Write a transaction's inclusion proof to a file, for `caduceus check-proof`.
    Proof {
        #[arg(long, value_parser = parse::id)]
        id: TxId,
        #[arg(long)]
        out: PathBuf,
    },
    /// The latest checkpoint, the state hash and the fund totals.
    Checkpoint,
}

fn proof_of(reader: &dyn Reader, id: TxId) -> Result<(Proof, Checkpoint)> {
    reader.proof(id)?.with_context(|| format!("no transaction {} on this ledger", print::id_hex(id)))
}

/// Answers `question`, printing the answer.
pub fn answer(reader: &dyn Reader, question: Question) -> Result<()> {
    match question {
        Question::AccessReport { patient } => {
            for entry in reader.access_report(&patient)? {
                print::access(&entry);
            }
        }
        Question::Unit { gtin, serial } => {
            let (verification, events) = reader.unit(&UnitId { gtin, serial })?;
            print::unit(&verification, &events);
        }
        Question::Claim { patient, claim } => {
            println!("{:#?}", reader.claim(&patient, claim)?.context("no such claim for that patient")?);
        }
        Question::Balance { account } => {
            let account = reader.account(&account)?.context("no such account")?;
            println!("balance {} cents (funded {} cents)", account.balance, account.funded);
        }
        Question::Transaction { id } => {
            let (proof, checkpoint) = proof_of(reader, id)?;
            print::proof(id, &proof, &checkpoint);
        }
        Question::Proof { id, out } => {
            let (proof, checkpoint) = proof_of(reader, id)?;
            write_proof(&out, id, &proof, &checkpoint)?;
        }
        Question::Checkpoint => {
            print::checkpoint(&reader.checkpoint()?.context("the ledger has no rounds yet")?);
            let (hash, balances, funded) = reader.totals()?;
            println!("state hash {}", hex(&hash));
            println!("balances {balances} cents, funded {funded} cents");
        }
    }
    Ok(())
}

/// Writes a proof for `caduceus check-proof` and says which checkpoint it leads to.
fn write_proof(out: &Path, id: TxId, proof: &Proof, checkpoint: &Checkpoint) -> Result<()> {
    std::fs::write(out, proof.encode()?).with_context(|| format!("write {}", out.display()))?;
    println!("wrote the proof of {} to {}", print::id_hex(id), out.display());
    println!("it leads to checkpoint {} (round {})", hex(&checkpoint.hash()), checkpoint.round);
    Ok(())
}
