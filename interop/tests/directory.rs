//! The folders that are not FHIR, X12 or EPCIS: the FDA NDC directory read into catalogue
//! entries (each package by the GTIN of its barcode), every row kept or rejected at its line and
//! column; CMS SynPUF's claim extracts recognised as no format the importers read.

mod common;
use common::{corpus, data};

use std::collections::BTreeMap;

use caduceus_interop::detect::{detect, Format};
use caduceus_interop::ndc;
use caduceus_interop::report::Place;

#[test]
fn the_ndc_directory_is_read_into_catalogue_entries_and_synpuf_is_no_import_format() {
    let mut table: BTreeMap<(String, String), usize> = BTreeMap::new();
    let mut entries = BTreeMap::new();
    for dir in ["fda-ndc-openfda", "cms-synpuf-ohdsi"] {
        for file in corpus(dir) {
            let name = file.strip_prefix(data()).unwrap().display().to_string();
            let bytes = std::fs::read(&file).unwrap();
            let outcome = match detect(&bytes) {
                Some(Format::Ndc) => {
                    let read = ndc::read(&bytes).unwrap();
                    for rejection in &read.rejections {
                        println!("{name}: {rejection}");
                        assert!(matches!(rejection.place, Place::Line(..)), "{rejection}");
                    }
                    entries.insert(name.clone(), read.entries.len());
                    format!("{} entries kept, {} rows rejected", read.entries.len(), read.rejections.len())
                }
                other => format!("not imported ({other:?}): not a FHIR, X12, EPCIS or NDC directory file"),
            };
            println!("| {name} | {outcome} |");
            *table.entry((dir.to_owned(), outcome.split(':').next().unwrap().to_owned())).or_default() += 1;
        }
    }
    // Every row of the directory files is kept, but two packages of the unfinished directory's
    // 35,321 whose codes are no NDC ("47848-026-XX" and "02"), rejected at their lines.
    let kept = |file: &str| entries[&format!("fda-ndc-openfda/{file}")];
    assert_eq!((kept("product_trimmed.txt"), kept("package_trimmed.txt")), (3, 3));
    let unfinished = ("unfinished_2018-06-25/unfinished_product.txt", "unfinished_2018-06-25/unfinished_package.txt");
    assert_eq!((kept(unfinished.0), kept(unfinished.1)), (21_478, 35_319));
    // SynPUF's eight CSV extracts are no format the importers read.
    assert_eq!(table[&("cms-synpuf-ohdsi".to_owned(), "not imported (None)".to_owned())], 8);

    // A package's entry names its product, whose row is kept under its product NDC.
    let read = ndc::read(&std::fs::read(data().join("fda-ndc-openfda/package_trimmed.txt")).unwrap()).unwrap();
    let (key, attributes) = &read.entries[0];
    assert_eq!(key, "00300020800018");
    assert!(attributes.contains(&("PRODUCTNDC".to_owned(), "0002-0800".to_owned())));
    let products = ndc::read(&std::fs::read(data().join("fda-ndc-openfda/product_trimmed.txt")).unwrap()).unwrap();
    assert_eq!(products.entries[0].0, ndc::product_key("0002-0800"));

    // A damaged row is rejected at its line; the rest are kept.
    let damaged = "PRODUCTID\tPRODUCTNDC\tNDCPACKAGECODE\tPACKAGEDESCRIPTION\nx\t0002-0800\t0002-80-01\tbox\ny\t0002-0800\t0002-0800-01\n";
    let read = ndc::read(damaged.as_bytes()).unwrap();
    assert!(read.entries.is_empty());
    assert_eq!(read.rejections[0].place, Place::Line(2, "NDCPACKAGECODE".into()));
    assert_eq!(read.rejections[1].place, Place::Line(3, "the row".into()));
}
