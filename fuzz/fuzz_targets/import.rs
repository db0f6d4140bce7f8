//! Every importer (FHIR JSON and NDJSON, X12, EPCIS JSON-LD and XML, the NDC directory), fed arbitrary files: recognising the format, reading it with the format's
//! models and mapping it onto the ledger's transactions must never panic, and everything the
//! reader refuses is a rejection with a reason.
#![no_main]

use caduceus_interop::detect::{detect, Format};
use caduceus_interop::{epcis, epcis_plan, fhir, fhir_plan, ndc, x12, x12_plan};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: &[u8]| {
    // The first byte picks the reader, so each is fuzzed whatever the content looks like;
    // `detect` runs on every input too.
    let Some((&which, file)) = input.split_first() else { return };
    let _ = detect(file);
    let formats = [Format::Fhir, Format::FhirNdjson, Format::X12, Format::EpcisJson, Format::EpcisXml, Format::Ndc];
    let format = formats[usize::from(which) % formats.len()];
    let rejections = match format {
        Format::Fhir | Format::FhirNdjson => {
            let read = if format == Format::Fhir { fhir::read_json(file) } else { fhir::read_ndjson(file) };
            match read {
                Ok(read) => {
                    let plan = fhir_plan::plan(&read);
                    [read.rejections, plan.rejections].concat()
                }
                Err(rejection) => vec![rejection],
            }
        }
        Format::EpcisJson | Format::EpcisXml => {
            let read = if format == Format::EpcisJson { epcis::read_json(file) } else { epcis::read_xml(file) };
            match read {
                Ok(read) => {
                    let plan = epcis_plan::plan(&read);
                    [read.rejections, plan.rejections].concat()
                }
                Err(rejection) => vec![rejection],
            }
        }
        Format::Ndc => match ndc::read(file) {
            Ok(read) => read.rejections,
            Err(rejection) => vec![rejection],
        },
        _ => match x12::read(file) {
            Ok(read) => {
                let plan = x12_plan::plan(&read);
                [read.rejections, plan.rejections].concat()
            }
            Err(rejection) => vec![rejection],
        },
    };
    assert!(rejections.iter().all(|r| !r.reason.is_empty()));
});
