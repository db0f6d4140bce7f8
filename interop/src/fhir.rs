//! FHIR R4 files read into resources: a single resource, a Bundle (transaction, batch,
//! collection or searchset), or NDJSON (a Bulk Data export). Each resource is checked against
//! the R4 model (`caduceus-fhir-r4`); a resource that does not fit is rejected at its JSON
//! path, and the rest of the file is read on.

use serde_json::Value;

use crate::report::{Place, Rejection};

/// Bundle types whose entries are imported.
pub const BUNDLE_TYPES: [&str; 4] = ["transaction", "batch", "collection", "searchset"];

/// A resource read from a file.
#[derive(Clone, Debug)]
pub struct Found {
    /// Where in the file.
    pub place: Place,
    /// Its JSON, as the file has it: the payload a clinical resource's record stands for.
    pub json: Value,
    /// Its Bundle entry's `fullUrl`, by which other entries may refer to it.
    pub full_url: Option<String>,
}

impl Found {
    /// The resource's type, as FHIR names it (`Patient`, `Observation`).
    pub fn resource_type(&self) -> &str {
        self.json.get("resourceType").and_then(Value::as_str).unwrap_or_default()
    }

    /// The resource's logical id, if it has one.
    pub fn id(&self) -> Option<&str> {
        self.json.get("id").and_then(Value::as_str)
    }
}

/// What a file held: its resources, and the parts rejected.
#[derive(Debug, Default)]
pub struct Read {
    pub resources: Vec<Found>,
    pub rejections: Vec<Rejection>,
}

/// Reads a FHIR JSON file: one resource, or a Bundle's entries. The whole file is rejected if
/// it is not JSON, not a resource, or a Bundle of a type that is not imported.
pub fn read_json(bytes: &[u8]) -> Result<Read, Rejection> {
    let value: Value =
        serde_json::from_slice(bytes).map_err(|e| Rejection::new(Place::File, format!("not JSON: {e}")))?;
    let mut read = Read::default();
    read_value(value, &|path| Place::Json(path), &mut read)?;
    Ok(read)
}

/// Reads NDJSON: one resource per line (blank lines skipped). A line that is not a resource is
/// rejected at its line; the others are read.
pub fn read_ndjson(bytes: &[u8]) -> Result<Read, Rejection> {
    let text = std::str::from_utf8(bytes).map_err(|e| Rejection::new(Place::File, format!("not UTF-8: {e}")))?;
    let mut read = Read::default();
    for (index, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let number = index + 1;
        let at = |path: String| Place::Line(number, path);
        match serde_json::from_str::<Value>(line) {
            Ok(value) => {
                if let Err(rejection) = read_value(value, &at, &mut read) {
                    read.rejections.push(rejection);
                }
            }
            Err(e) => read.rejections.push(Rejection::new(at("$".into()), format!("not JSON: {e}"))),
        }
    }
    Ok(read)
}

/// One top-level value: a resource, or a Bundle whose entries are read one by one.
fn read_value(value: Value, at: &dyn Fn(String) -> Place, read: &mut Read) -> Result<(), Rejection> {
    let Some(kind) = value.get("resourceType").and_then(Value::as_str) else {
        return Err(Rejection::new(at("$".into()), "not a FHIR resource: no resourceType"));
    };
    if kind != "Bundle" {
        read.resources.push(resource(value, at("$".into()), None)?);
        return Ok(());
    }
    let bundle_type = value.get("type").and_then(Value::as_str).unwrap_or_default().to_owned();
    if !BUNDLE_TYPES.contains(&bundle_type.as_str()) {
        return Err(Rejection::new(
            at("$.type".into()),
            format!(
                "a Bundle of type {bundle_type:?} is not imported (transaction, batch, collection or searchset are)"
            ),
        ));
    }
    let mut shell = value;
    let entries = match shell.get_mut("entry").map(Value::take) {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(entries)) => entries,
        Some(_) => return Err(Rejection::new(at("$.entry".into()), "Bundle.entry is not a list")),
    };
    // The Bundle itself, without its entries, against the model.
    if let Some(object) = shell.as_object_mut() {
        object.remove("entry");
    }
    caduceus_fhir_r4::resource_from_value(shell).map_err(|e| Rejection::new(at("$".into()), model_error(&e)))?;
    for (index, mut entry) in entries.into_iter().enumerate() {
        let path = format!("$.entry[{index}].resource");
        let full_url = entry.get("fullUrl").and_then(Value::as_str).map(str::to_owned);
        match entry.get_mut("resource").map(Value::take) {
            Some(Value::Object(object)) => match resource(Value::Object(object), at(path), full_url) {
                Ok(found) => read.resources.push(found),
                Err(rejection) => read.rejections.push(rejection),
            },
            // A batch or transaction entry may only request (a DELETE, a conditional read).
            None | Some(Value::Null) => {
                let method = entry.pointer("/request/method").and_then(Value::as_str).unwrap_or("none");
                let detail = format!("an entry without a resource (request {method}) is not imported");
                read.rejections.push(Rejection::new(at(format!("$.entry[{index}]")), detail));
            }
            Some(_) => read.rejections.push(Rejection::new(at(path), "the entry's resource is not an object")),
        }
    }
    Ok(())
}

/// A resource checked against the R4 model: its types, its elements (one the model does not
/// know is refused, as FHIR requires of a consumer that does not support it), and the R4
/// formats of its primitives (codes, ids, dates).
fn resource(json: Value, place: Place, full_url: Option<String>) -> Result<Found, Rejection> {
    let resource = caduceus_fhir_r4::resource_from_value(json.clone())
        .map_err(|e| Rejection::new(place.clone(), model_error(&e)))?;
    let read_back = caduceus_fhir_r4::resource_to_value(&resource)
        .map_err(|e| Rejection::new(place.clone(), format!("does not fit the FHIR R4 model: {e}")))?;
    let mut unknown = Vec::new();
    unknown_elements(&json, &read_back, "", &mut unknown);
    if let Some(first) = unknown.first() {
        let more = if unknown.len() > 1 { format!(" (and {} more)", unknown.len() - 1) } else { String::new() };
        return Err(Rejection::new(within(&place, first), format!("an element FHIR R4 does not define here{more}")));
    }
    let issues = caduceus_fhir_r4::Validate::validate(&resource);
    if let Some(issue) = issues.first() {
        let more = if issues.len() > 1 { format!(" (and {} more)", issues.len() - 1) } else { String::new() };
        let reason = format!("not a valid FHIR R4 value ({}): {}{more}", issue.path, issue.message);
        return Err(Rejection::new(place, reason));
    }
    Ok(Found { place, json, full_url })
}

/// The place of an element within a resource found at `place`.
pub(crate) fn within(place: &Place, element: &str) -> Place {
    match place {
        Place::Json(path) => Place::Json(format!("{path}{element}")),
        Place::Line(line, path) => Place::Line(*line, format!("{path}{element}")),
        Place::File => Place::Json(format!("${element}")),
        other @ (Place::Segment { .. } | Place::Event { .. }) => other.clone(),
    }
}

/// The paths of elements in `given` that the model dropped when it read them (so it does not
/// define them): every object key of `given` missing from `read_back` at the same place.
fn unknown_elements(given: &Value, read_back: &Value, path: &str, unknown: &mut Vec<String>) {
    match (given, read_back) {
        (Value::Object(given), Value::Object(read_back)) => {
            for (key, value) in given {
                let at = format!("{path}.{key}");
                match read_back.get(key) {
                    Some(back) => unknown_elements(value, back, &at, unknown),
                    // An empty or null element carries nothing to lose.
                    None if value.is_null() || value.as_array().is_some_and(Vec::is_empty) => {}
                    None => unknown.push(at),
                }
            }
        }
        (Value::Array(given), Value::Array(read_back)) => {
            for (index, (value, back)) in given.iter().zip(read_back).enumerate() {
                unknown_elements(value, back, &format!("{path}[{index}]"), unknown);
            }
        }
        _ => {}
    }
}

/// The model's complaint, which names the element at fault.
fn model_error(error: &serde_json::Error) -> String {
    format!("does not fit the FHIR R4 model: {error}")
}
