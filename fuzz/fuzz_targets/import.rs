//! Every importer, fed arbitrary files: recognising the format, reading it with the format's
//! models and mapping it onto the ledger's transactions must never panic, and everything the
//! reader refuses is a rejection with a reason.
#![no_main]

use caduceus_interop::detect::{detect, Format};
use caduceus_interop::{fhir, fhir_plan, x12, x12_plan};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: &[u8]| {
    // The first byte picks the reader, so each is fuzzed whatever the content looks like;
    // `detect` runs on every input too.
    let Some((&which, file)) = input.split_first() else { return };
    let _ = detect(file);
    let format = [Format::Fhir, Format::FhirNdjson, Format::X12][usize::from(which) % 3];
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
