//! `caduceus query`: the questions, asked of any [`Reader`].

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use caduceus_engine::codec::Codec;
use caduceus_engine::history::Cursor;
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
        #[command(flatten)]
        page: PageArgs,
    },
    /// A unit's custody trail and whether it is genuine, recalled or expired.
    Unit {
        #[arg(long)]
        gtin: u64,
        #[arg(long)]
        serial: String,
        #[command(flatten)]
        page: PageArgs,
    },
    /// A claim's status and payment.
    Claim {
        #[arg(long, value_parser = parse::actor)]
        patient: ActorKey,
        #[arg(long, value_parser = parse::id)]
        claim: TxId,
    },
    /// A record's entry: content hash, class, custodian, version, erasure.
    Record {
        #[arg(long, value_parser = parse::actor)]
        patient: ActorKey,
        #[arg(long, value_parser = parse::id)]
        record: u128,
    },
    /// A patient's records, by id.
    Records {
        #[arg(long, value_parser = parse::actor)]
        patient: ActorKey,
        #[command(flatten)]
        page: ListArgs,
    },
    /// The consents a patient gave, by id.
    Consents {
        #[arg(long, value_parser = parse::actor)]
        patient: ActorKey,
        #[command(flatten)]
        page: ListArgs,
    },
    /// A clinical study: its investigator, protocol hash, and whether it is open to enrolment.
    Study {
        /// The study's id (its registration's transaction id).
        #[arg(long, value_parser = parse::id)]
        study: TxId,
    },
    /// A patient's enrolment in a study, and the research consent it rests on.
    Enrolment {
        #[arg(long, value_parser = parse::actor)]
        patient: ActorKey,
        #[arg(long, value_parser = parse::id)]
        study: TxId,
    },
    /// Verify a provider's credential by its id: issuer, holder, kind, period, and whether it
    /// holds now.
    Credential {
        /// The credential's id (its issuance's transaction id).
        #[arg(long, value_parser = parse::id)]
        credential: TxId,
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

/// Which page of a history: the newest first, then older ones by the cursor each page prints.
#[derive(clap::Args)]
pub struct PageArgs {
    /// Entries on the page, newest first.
    #[arg(long, default_value_t = 50)]
    limit: u32,
    /// The cursor a previous page printed, for the entries before it.
    #[arg(long, value_parser = parse::cursor)]
    before: Option<Cursor>,
}

/// Which part of a listing by id: the first, then the next after the id each listing prints.
#[derive(clap::Args)]
pub struct ListArgs {
    /// Entries listed.
    #[arg(long, default_value_t = 50)]
    limit: u32,
    /// The id a previous listing printed, for the entries after it.
    #[arg(long, value_parser = parse::id)]
    after: Option<u128>,
}

fn proof_of(reader: &dyn Reader, id: TxId) -> Result<(Proof, Checkpoint)> {
    reader.proof(id)?.with_context(|| format!("no transaction {} on this ledger", print::id_hex(id)))
}

/// Answers `question`, printing the answer.
/// `dir` is the embedded ledger's directory, beside which its product catalogue is kept.
pub fn answer(reader: &dyn Reader, question: Question, dir: Option<&Path>) -> Result<()> {
    match question {
        Question::AccessReport { patient, page } => {
            let report = reader.access_report(&patient, page.before, page.limit)?;
            for entry in &report.entries {
                print::access(entry);
            }
            print::page_footer(report.entries.len(), report.total, report.next);
        }
        Question::Unit { gtin, serial, page } => {
            let (verification, events) = reader.unit(&UnitId { gtin, serial }, page.before, page.limit)?;
            print::unit(&verification, &events.entries);
            if let Some(product) = dir.map(|dir| crate::catalogue::product(dir, gtin)).transpose()?.flatten() {
                print::product(&product);
            }
            print::page_footer(events.entries.len(), events.total, events.next);
        }
        Question::Claim { patient, claim } => {
            println!("{:#?}", reader.claim(&patient, claim)?.context("no such claim for that patient")?);
        }
        Question::Record { patient, record } => {
            println!("{:#?}", reader.record(&patient, record)?.context("no such record for that patient")?);
        }
        Question::Records { patient, page } => {
            let listing = reader.records(&patient, page.after, page.limit)?;
            for (id, record) in &listing.entries {
                print::record(*id, record);
            }
            print::listing_footer(listing.entries.len(), listing.next);
        }
        Question::Consents { patient, page } => {
            let listing = reader.consents(&patient, page.after, page.limit)?;
            for (id, consent) in &listing.entries {
                print::consent(*id, consent);
            }
            print::listing_footer(listing.entries.len(), listing.next);
        }
        Question::Study { study } => {
            print::study(study, &reader.study(study)?.context("no study with that id")?);
        }
        Question::Enrolment { patient, study } => {
            let enrolment =
                reader.enrolment(&patient, study)?.context("that patient was never enrolled in that study")?;
            print::enrolment(study, &enrolment);
        }
        Question::Credential { credential } => {
            let found = reader.credential(credential)?.context("no credential with that id")?;
            print::credential(credential, &found, crate::now_ms());
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
