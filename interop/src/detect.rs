//! Which format a file is in, from its first bytes.

use std::fmt;
use std::str::FromStr;

/// The formats Caduceus reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Format {
    /// A FHIR R4 resource or Bundle, as JSON.
    Fhir,
    /// FHIR R4 resources one per line (a Bulk Data export's NDJSON).
    FhirNdjson,
    /// An X12 interchange (ISA ... IEA).
    X12,
    /// A GS1 EPCIS document as JSON-LD (2.0).
    EpcisJson,
    /// A GS1 EPCIS document as XML (1.2 or 2.0).
    EpcisXml,
    /// A product or package file of the FDA's NDC directory.
    Ndc,
}

impl Format {
    pub fn as_str(self) -> &'static str {
        match self {
            Format::Fhir => "fhir",
            Format::FhirNdjson => "fhir-ndjson",
            Format::X12 => "x12",
            Format::EpcisJson => "epcis-json",
            Format::EpcisXml => "epcis-xml",
            Format::Ndc => "ndc",
        }
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Format {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        [Format::Fhir, Format::FhirNdjson, Format::X12, Format::EpcisJson, Format::EpcisXml, Format::Ndc]
            .into_iter()
            .find(|f| f.as_str() == text)
            .ok_or_else(|| format!("{text:?} is not a format: fhir, fhir-ndjson, x12, epcis-json, epcis-xml or ndc"))
    }
}

/// EPCIS event types, which a file may hold alone.
const EVENTS: [&str; 5] =
    ["ObjectEvent", "AggregationEvent", "TransactionEvent", "TransformationEvent", "AssociationEvent"];

/// The format of a file, recognised from its content (not its name): `None` if it is none of
/// them. Only a prefix is looked at, so a damaged file is recognised and then rejected with the
/// place of its damage.
pub fn detect(bytes: &[u8]) -> Option<Format> {
    let head = &bytes[..bytes.len().min(64 * 1024)];
    let text = String::from_utf8_lossy(head);
    let text = text.trim_start_matches('\u{feff}').trim_start();
    if text.starts_with("ISA") {
        return Some(Format::X12);
    }
    if crate::ndc::is_directory(text) {
        return Some(Format::Ndc);
    }
    if text.starts_with('<') {
        let epcis = ["EPCISDocument", "EPCISQueryDocument"].iter().any(|root| text.contains(root))
            || EVENTS.iter().any(|event| text.contains(&format!("<{event}")) || text.contains(&format!(":{event} ")));
        return epcis.then_some(Format::EpcisXml);
    }
    if text.starts_with('{') {
        let event = text.contains("\"@context\"") && EVENTS.iter().any(|e| text.contains(&format!("\"{e}\"")));
        if text.contains("\"EPCISDocument\"") || text.contains("\"EPCISQueryDocument\"") || event {
            return Some(Format::EpcisJson);
        }
        if !text.contains("\"resourceType\"") {
            return None;
        }
        // One resource per line: the first line (however long) is a whole JSON object of its
        // own, and another object starts on a later line.
        let rest = bytes.strip_prefix(b"\xef\xbb\xbf").unwrap_or(bytes).trim_ascii_start();
        let ndjson = match rest.iter().position(|b| *b == b'\n') {
            Some(end) => {
                let whole = serde_json::from_slice::<serde_json::Value>(&rest[..end]).is_ok();
                let more = rest[end..].split(|b| *b == b'\n').any(|line| line.trim_ascii_start().starts_with(b"{"));
                whole && more
            }
            None => false,
        };
        return Some(if ndjson { Format::FhirNdjson } else { Format::Fhir });
    }
    None
}
