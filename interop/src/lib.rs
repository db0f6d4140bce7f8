//! Health data in the formats health systems speak: files are recognised (`detect`), read with
//! the formats' own models into what they hold, and every part that cannot be read is rejected
//! with its place in the file and the reason (`report`). The mapping onto ledger transactions
//! builds on what these readers return.

pub mod actors;
pub mod claims;
pub mod detect;
pub mod epcis;
pub mod epcis_plan;
pub mod export;
pub mod fhir;
pub mod fhir_credentials;
pub mod fhir_plan;
pub mod fhir_research;
pub mod gs1;
pub mod ndc;
pub mod report;
pub mod x12;
pub mod x12_plan;
