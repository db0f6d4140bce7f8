//! The FHIR R4 models (`fhir-r4`, generated from the official R4 definitions), and the one
//! place their JSON (de)serialization is instantiated.
//!
//! A resource's `Deserialize` over the whole `Resource` enum takes minutes to compile; kept
//! in this small crate, which rarely changes, it is compiled once, and the importers and
//! exporters that change often call these non-generic functions.

pub use fhir_r4::validate::{Validate, ValidationIssue};
pub use fhir_r4::{codes, resources, types};

use fhir_r4::resources::Resource;

/// A resource of any type from its JSON (`resourceType` says which), checked against the R4
/// model: unknown elements, wrong types and missing required elements are errors, whose
/// message names the element.
pub fn resource_from_value(value: serde_json::Value) -> Result<Resource, serde_json::Error> {
    serde_json::from_value(value)
}

/// A resource as FHIR JSON.
pub fn resource_to_value(resource: &Resource) -> Result<serde_json::Value, serde_json::Error> {
    serde_json::to_value(resource)
}
