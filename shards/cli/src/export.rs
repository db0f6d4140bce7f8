//! `caduceus export`: what the ledger holds, in the formats health systems read (written by
//! `caduceus_interop::export`), each entry with its transaction's proof. Read through a
//! `Reader`, as the `--as` actor, so an export shows only what that actor may read; a
//! patient's records (their payloads) are read through accesses the ledger logs.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};

use anyhow::{bail, Context, Result};
use caduceus_engine::codec::Codec;
use caduceus_engine::history::Cursor;
use caduceus_engine::ledger::ReadError;
use caduceus_engine::model::{hex, ActorKey, Operation, Purpose, Transaction, UnitId};
use caduceus_engine::payload::PayloadStore;
use caduceus_engine::signature::{actor_key, sign, SigningKey};
use caduceus_engine::{ClaimStatus, TxId};
use caduceus_interop::export::{self, Access, ClaimEntry, ConsentEntry, Custody, ProofRef};
use caduceus_interop::fhir_plan::OPEN_END;
use clap::Subcommand;
use serde_json::{json, Value};

use crate::parse;
use crate::print::id_hex;
use crate::reader::{Embedded, Reader};

/// Proofs this run could not give (the reader may not read their transactions).
static WITHHELD: AtomicUsize = AtomicUsize::new(0);

/// Entries read per page.
const PAGE: u32 = 500;

#[derive(Subcommand)]
pub enum Export {
    /// A patient's access report as a FHIR R4 Bundle of AuditEvent resources.
    AccessReport {
        #[arg(long, value_parser = parse::actor)]
        patient: ActorKey,
    },
    /// A patient's consents as a FHIR R4 Bundle of Consent resources.
    Consents {
        #[arg(long, value_parser = parse::actor)]
        patient: ActorKey,
    },
    /// A claim as a FHIR R4 ClaimResponse.
    Claim {
        #[arg(long, value_parser = parse::actor)]
        patient: ActorKey,
        #[arg(long, value_parser = parse::id)]
        claim: TxId,
    },
    /// A patient's paid claims (of one payer to one provider) as an X12 5010 835, each claim's
    /// payer claim control number its payment's transaction id.
    Remittance {
        #[arg(long, value_parser = parse::actor)]
        patient: ActorKey,
        /// A paid claim (repeatable).
        #[arg(long, value_parser = parse::id, required = true)]
        claim: Vec<TxId>,
    },
    /// A unit's custody as an EPCIS 2.0 JSON-LD document, its event ids GS1 event hashes.
    Unit {
        #[arg(long)]
        gtin: u64,
        #[arg(long)]
        serial: String,
    },
    /// A patient's records as a FHIR R4 Bundle of their resources, with the patient and the
    /// providers holding them: each record read through an access by the `--as` actor (logged
    /// on the patient's report), for `caduceus import` elsewhere. Embedded ledgers only.
    Records {
        #[arg(long, value_parser = parse::actor)]
        patient: ActorKey,
        /// Why they are read.
        #[arg(long, default_value = "patient-request", value_parser = parse_purpose)]
        purpose: Purpose,
    },
}

fn parse_purpose(text: &str) -> Result<Purpose, String> {
    Purpose::parse(text).ok_or_else(|| format!("{text:?} is not a purpose"))
}

/// Writes the export to `out`. `embedded` is the ledger in `--dir` with its keystore and the
/// `--as` key (the records export needs them).
pub fn run(
    reader: &dyn Reader,
    what: Export,
    out: &Path,
    embedded: Option<(&Embedded, &Path, &Path, &SigningKey)>,
) -> Result<()> {
    let now = crate::now_ms();
    let document = match what {
        Export::AccessReport { patient } => {
            let mut accesses = Vec::new();
            let mut before: Option<Cursor> = None;
            loop {
                let page = reader.access_report(&patient, before, PAGE)?;
                for entry in &page.entries {
                    accesses.push(Access {
                        proof: proof_ref(reader, entry.transaction)?,
                        record: id_hex(entry.record),
                        accessor: entry.accessor.to_hex(),
                        purpose: entry.purpose.map(|p| p.as_str().to_owned()),
                        time: entry.time,
                        permitted: entry.permitted(),
                        result: entry.result.as_str().to_owned(),
                        break_glass: entry.break_glass,
                        erasure: entry.erasure,
                    });
                }
                match page.next {
                    Some(next) => before = Some(next),
                    None => break,
                }
            }
            // Oldest first, as an audit trail reads.
            accesses.reverse();
            println!("{} accesses", accesses.len());
            export::audit_events(&patient.to_hex(), &accesses, now)
        }
        Export::Consents { patient } => {
            let mut entries = Vec::new();
            let mut after = None;
            loop {
                let listing = reader.consents(&patient, after, PAGE)?;
                for (id, consent) in &listing.entries {
                    entries.push(ConsentEntry {
                        id: id_hex(*id),
                        grantee: consent.grantee.to_hex(),
                        scope: consent.scope.clone(),
                        purposes: Purpose::ALL
                            .iter()
                            .filter(|p| consent.purposes.contains(**p))
                            .map(|p| p.as_str().to_owned())
                            .collect(),
                        valid_from: consent.valid_from,
                        valid_until: (consent.valid_until < OPEN_END).then_some(consent.valid_until),
                        revoked_at: consent.revoked_at,
                        grant: proof_ref(reader, consent.granted_by)?,
                        revocation: consent.revoked_by.map(|id| proof_ref(reader, id)).transpose()?,
                    });
                }
                match listing.next {
                    Some(next) => after = Some(next),
                    None => break,
                }
            }
            println!("{} consents", entries.len());
            let checkpoint = reader.checkpoint()?.map(|c| (hex(&c.hash()), c.round));
            export::consents(&patient.to_hex(), &entries, checkpoint, now)
        }
        Export::Claim { patient, claim } => {
            let found = reader.claim(&patient, claim)?.context("no such claim for that patient")?;
            let (benefit, denial, payment) = match found.status {
                ClaimStatus::Approved { amount } => (Some(amount), None, None),
                ClaimStatus::Denied { reason } => (None, Some(reason), None),
                ClaimStatus::Paid { amount, payment } => {
                    (Some(amount), None, Some((amount, proof_ref(reader, payment)?)))
                }
                ClaimStatus::Submitted | ClaimStatus::Pended => (None, None, None),
            };
            println!("claim {}: {}", id_hex(claim), found.status.name());
            export::claim_response(&ClaimEntry {
                claim: id_hex(claim),
                patient: found.patient.to_hex(),
                provider: found.provider.to_hex(),
                payer: found.payer.to_hex(),
                total: found.total,
                status: found.status.name().to_owned(),
                benefit,
                denial,
                submitted_at: found.submitted_at,
                payment,
            })
        }
        Export::Remittance { patient, claim } => {
            let mut paid = Vec::new();
            let mut parties = None;
            for id in claim {
                let found = reader.claim(&patient, id)?.with_context(|| format!("no claim {}", id_hex(id)))?;
                let ClaimStatus::Paid { amount, payment } = found.status else {
                    bail!("claim {} is {}, not paid", id_hex(id), found.status.name())
                };
                match parties {
                    None => parties = Some((found.payer, found.provider)),
                    Some(both) if both == (found.payer, found.provider) => {}
                    Some(_) => bail!("an 835 pays one payee from one payer: claim {} has others", id_hex(id)),
                }
                paid.push(export::Paid {
                    claim: id_hex(id),
                    patient: patient.to_hex(),
                    total: found.total,
                    paid: amount,
                    payment: id_hex(payment),
                });
            }
            let (payer, provider) = parties.expect("at least one claim");
            let text = export::remittance_835(&payer.to_hex(), &provider.to_hex(), &paid, now);
            std::fs::write(out, &text).with_context(|| format!("write {}", out.display()))?;
            println!("{} paid claims; wrote {}", paid.len(), out.display());
            return Ok(());
        }
        Export::Unit { gtin, serial } => {
            let unit = UnitId { gtin, serial };
            let mut steps = Vec::new();
            let mut before = None;
            let state = loop {
                let (verification, page) = reader.unit(&unit, before, PAGE)?;
                for event in page.entries.iter().filter(|e| e.result.is_committed()) {
                    steps.push(Custody {
                        proof: proof_ref(reader, event.transaction)?,
                        operation: event.event.clone(),
                        actor: event.actor.to_hex(),
                        counterparty: event.counterparty.map(|c| c.to_hex()),
                        time: event.time,
                    });
                }
                match page.next {
                    Some(next) => before = Some(next),
                    None => break verification.state,
                }
            };
            let state = state.with_context(|| format!("unit {unit} was never commissioned on this ledger"))?;
            steps.reverse();
            println!("unit {unit}: {} custody events", steps.len());
            export::custody_document(unit.gtin, &unit.serial, &state.lot, state.expiry, &steps, now)
                .map_err(anyhow::Error::msg)?
        }
        Export::Records { patient, purpose } => {
            let Some((embedded, dir, keystore, key)) = embedded else {
                bail!("records are exported from an embedded ledger (--dir): their payloads are stored beside it")
            };
            records(embedded, dir, keystore, key, &patient, purpose)?
        }
    };
    let withheld = WITHHELD.load(Ordering::Relaxed);
    if withheld > 0 {
        println!("{withheld} proofs not given to this reader: their transaction ids stand in for them");
    }
    std::fs::write(out, serde_json::to_vec_pretty(&document)?).with_context(|| format!("write {}", out.display()))?;
    println!("wrote {}", out.display());
    Ok(())
}

/// The proof of a transaction and the checkpoint it leads to; only its id (the proof
/// reference) if the reader may not read the transaction (a pharmacy reading a unit's trail may
/// not read its manufacturer's transactions): whoever may can prove it by that id.
fn proof_ref(reader: &dyn Reader, id: TxId) -> Result<ProofRef> {
    let found = match reader.proof(id) {
        Ok(found) => found,
        Err(error) if forbidden(&error) => {
            WITHHELD.fetch_add(1, Ordering::Relaxed);
            None
        }
        Err(error) => return Err(error),
    };
    Ok(ProofRef {
        transaction: id_hex(id),
        proof: found.as_ref().map(|(proof, _)| proof.encode()).transpose()?,
        checkpoint: found.map(|(_, checkpoint)| (hex(&checkpoint.hash()), checkpoint.round)),
    })
}

/// A refusal to read (embedded: `ReadError::Forbidden`; a cluster says it in words).
fn forbidden(error: &anyhow::Error) -> bool {
    matches!(error.downcast_ref::<ReadError>(), Some(ReadError::Forbidden { .. }))
        || error.to_string().contains("may not read this")
}

/// A patient's records: each read through an access signed by `key` (the ledger checks consent
/// and logs it), then the Bundle: the patient and the providers holding its records (as
/// resources with only their ids, from the keystore's `fhir.TYPE.ID` names), then each
/// record's resource as it was imported.
fn records(
    embedded: &Embedded,
    dir: &Path,
    keystore: &Path,
    key: &SigningKey,
    patient: &ActorKey,
    purpose: Purpose,
) -> Result<Value> {
    let ledger = &embedded.ledger;
    let store = PayloadStore::beside(dir)?;
    let names: BTreeMap<ActorKey, String> = crate::keys::list(keystore)?.into_iter().map(|(n, k)| (k, n)).collect();
    let mut listed = Vec::new();
    let mut after = None;
    loop {
        let listing = embedded.records(patient, after, PAGE)?;
        listed.extend(listing.entries);
        match listing.next {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    let mut resources = Vec::new();
    let mut proofs = Vec::new();
    let mut holders = vec![*patient];
    let nonces = (u128::from(crate::now_ms()) << 64) + 1..;
    for (nonce, (id, record)) in nonces.zip(&listed) {
        let access = Operation::AccessRecord { record: *id, patient: *patient, purpose };
        let transaction =
            Transaction { nonce, signer: actor_key(key), timestamp: crate::now_ms(), operation: access, key: None };
        let plaintext =
            store.read(ledger, sign(transaction, key)?).with_context(|| format!("read record {}", id_hex(*id)))?;
        resources.push(serde_json::from_slice::<Value>(&plaintext).context("a record's payload is JSON")?);
        proofs.push(proof_ref(embedded, record.written_by)?);
        if !holders.contains(&record.custodian) {
            holders.push(record.custodian);
        }
    }
    let mut entries = Vec::new();
    for holder in &holders {
        let name = names.get(holder).and_then(|n| n.strip_prefix("fhir."));
        match name.and_then(|n| n.split_once('.')) {
            Some((kind, id)) => entries.push(entry(json!({ "resourceType": kind, "id": id }))),
            None => println!("  {} is not named by a FHIR resource in the keystore: left out", &holder.to_hex()[..16]),
        }
    }
    // Each record's entry carries the proof of the transaction that wrote its version (the
    // resource stays as it was imported).
    for (resource, proof) in resources.into_iter().zip(proofs) {
        let mut proven = entry(resource);
        proven["extension"] = json!([proof.fhir_extension()]);
        entries.push(proven);
    }
    println!("{} records read (each access on the patient's report)", listed.len());
    Ok(
        json!({ "resourceType": "Bundle", "type": "collection", "timestamp": export::instant(crate::now_ms()), "entry": entries }),
    )
}

/// A Bundle entry; a resource whose id is a UUID gets the `urn:uuid:` full URL that references
/// to it use (as Synthea writes them).
fn entry(resource: Value) -> Value {
    let id = resource["id"].as_str().unwrap_or_default();
    let uuid = id.len() == 36 && id.chars().all(|c| c.is_ascii_hexdigit() || c == '-');
    if uuid {
        json!({ "fullUrl": format!("urn:uuid:{id}"), "resource": resource })
    } else {
        json!({ "resource": resource })
    }
}
