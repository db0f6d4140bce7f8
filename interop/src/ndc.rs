//! The FDA's National Drug Code directory (its `product.txt` and `package.txt`, finished or
//! unfinished drugs: tab-separated, a header row, UTF-8 or ISO-8859-1): product master data for
//! the catalogue beside the ledger. A package's NDC becomes the GTIN its barcode carries (GS1
//! US: `003` + the ten NDC digits + a check digit), so a unit commissioned under that GTIN is
//! shown with its product; a product row is kept under its product NDC, which its packages
//! name. Nothing here goes on the ledger.

use crate::gs1::check_digit;
use crate::report::{Place, Rejection};

/// The catalogue key of a product row.
pub fn product_key(product_ndc: &str) -> String {
    format!("ndc-product:{product_ndc}")
}

/// What a directory file held: catalogue entries (key, attributes), and the rows rejected.
#[derive(Clone, Debug, Default)]
pub struct Read {
    pub entries: Vec<(String, Vec<(String, String)>)>,
    pub rejections: Vec<Rejection>,
}

/// Whether the file is an NDC directory file (its header's first columns).
pub fn is_directory(text: &str) -> bool {
    text.starts_with("PRODUCTID\tPRODUCTNDC\t")
}

/// The GTIN-14 of a package NDC written 4-4-2, 5-3-2 or 5-4-1 (ten digits in all).
pub fn package_gtin(ndc: &str) -> Result<u64, String> {
    let parts: Vec<&str> = ndc.split('-').collect();
    let shape: Vec<usize> = parts.iter().map(|p| p.len()).collect();
    let digits = parts.iter().all(|p| p.bytes().all(|b| b.is_ascii_digit()));
    if !digits || ![[4, 4, 2], [5, 3, 2], [5, 4, 1]].iter().any(|s| shape == s) {
        return Err(format!("{ndc:?} is not a package NDC (4-4-2, 5-3-2 or 5-4-1 digits)"));
    }
    let body = format!("003{}", parts.concat());
    Ok(format!("{body}{}", check_digit(&body)).parse().expect("14 digits"))
}

/// Reads a product or package file of the directory.
pub fn read(bytes: &[u8]) -> Result<Read, Rejection> {
    // The unfinished-drug files are ISO-8859-1, whose every byte is the character of that code.
    let text = match std::str::from_utf8(bytes) {
        Ok(text) => text.to_owned(),
        Err(_) => bytes.iter().map(|b| char::from(*b)).collect(),
    };
    let text = text.trim_start_matches('\u{feff}').trim_start();
    let mut lines = text.lines().enumerate();
    let header: Vec<&str> = match lines.next() {
        Some((_, header)) if is_directory(header) => header.split('\t').map(str::trim).collect(),
        _ => return Err(Rejection::new(Place::File, "not an NDC directory file (no PRODUCTID, PRODUCTNDC header)")),
    };
    let column = |name: &str| header.iter().position(|h| *h == name);
    let package = column("NDCPACKAGECODE");
    let product = column("PRODUCTNDC").expect("checked by is_directory");
    let mut read = Read::default();
    for (i, line) in lines.filter(|(_, l)| !l.trim().is_empty()) {
        let fields: Vec<&str> = line.split('\t').map(str::trim).collect();
        let place = |name: &str| Place::Line(i + 1, name.to_owned());
        if fields.len() != header.len() {
            let reason = format!("{} fields where the header names {}", fields.len(), header.len());
            read.rejections.push(Rejection::new(place("the row"), reason));
            continue;
        }
        let attributes: Vec<(String, String)> = header
            .iter()
            .zip(&fields)
            .filter(|(name, value)| !value.is_empty() && **name != "PRODUCTID")
            .map(|(name, value)| (name.to_string(), value.to_string()))
            .collect();
        let key = match package {
            Some(package) => match package_gtin(fields[package]) {
                Ok(gtin) => format!("{gtin:014}"),
                Err(reason) => {
                    read.rejections.push(Rejection::new(place("NDCPACKAGECODE"), reason));
                    continue;
                }
            },
            None if fields[product].is_empty() => {
                read.rejections.push(Rejection::new(place("PRODUCTNDC"), "no product NDC"));
                continue;
            }
            None => product_key(fields[product]),
        };
        read.entries.push((key, attributes));
    }
    Ok(read)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_package_ndc_is_the_gtin_of_its_barcode() {
        // NDC 0002-0800-01 is UPC-A 300020800018 (GTIN-14 00300020800018).
        assert_eq!(package_gtin("0002-0800-01").unwrap(), 300_020_800_018);
        assert_eq!(package_gtin("50090-2869-0").unwrap(), 350_090_286_908);
        assert!(package_gtin("0002-0800").is_err() && package_gtin("0002-08A0-01").is_err());
    }
}
