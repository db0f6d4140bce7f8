//! The catalogue beside an embedded ledger (`DIR.products.json`): the master data of the
//! products whose units an EPCIS import brought (name, NDC, dosage form, strength, ...), by
//! GTIN, and the FDA NDC directory's products and packages (a package by its GTIN). Product
//! data is not health data, but the ledger holds only what its rules need, so it is kept here,
//! with the units' node, and shown when a unit is verified. It also keeps the studies a FHIR
//! import registered, by name (`fhir.ResearchStudy.ID`): their investigator and ledger id, so
//! that a later file's subjects find them.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use caduceus_interop::epcis_plan::Product;
use caduceus_interop::ndc;

type Catalogue = BTreeMap<String, BTreeMap<String, String>>;

fn path(dir: &Path) -> PathBuf {
    dir.with_extension("products.json")
}

fn read(path: &Path) -> Result<Catalogue> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes).with_context(|| format!("read the catalogue {}", path.display())),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(Catalogue::new()),
        Err(error) => Err(error).with_context(|| format!("read {}", path.display())),
    }
}

/// The catalogue entries of an EPCIS document's products, by GTIN.
pub fn of_products(products: &[Product]) -> Vec<(String, Vec<(String, String)>)> {
    products.iter().map(|p| (format!("{:014}", p.gtin), p.attributes.clone())).collect()
}

/// Adds entries (a GTIN's, or an NDC product's: `ndc::product_key`) to the catalogue beside the
/// ledger in `dir` (an entry's attributes replace those it had), written whole to a new file,
/// synced, then renamed over the old one. Returns the catalogue's path.
pub fn keep(dir: &Path, entries: &[(String, Vec<(String, String)>)]) -> Result<PathBuf> {
    let path = path(dir);
    let mut catalogue = read(&path)?;
    for (key, attributes) in entries {
        catalogue.insert(key.clone(), attributes.iter().cloned().collect());
    }
    let fresh = path.with_extension("json.new");
    let mut file = std::fs::File::create(&fresh).with_context(|| format!("create {}", fresh.display()))?;
    file.write_all(&serde_json::to_vec_pretty(&catalogue)?)?;
    file.sync_all()?;
    std::fs::rename(&fresh, &path).with_context(|| format!("rename {} over {}", fresh.display(), path.display()))?;
    let parent = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::File::open(parent)?.sync_all()?;
    Ok(path)
}

/// The whole catalogue beside the ledger in `dir`, by key.
pub fn all(dir: &Path) -> Result<BTreeMap<String, BTreeMap<String, String>>> {
    read(&path(dir))
}

/// The catalogue's entry under `key`, if it holds one.
pub fn entry(dir: &Path, key: &str) -> Result<Option<BTreeMap<String, String>>> {
    Ok(read(&path(dir))?.remove(key))
}

/// A product's master data from the catalogue beside the ledger in `dir`, if it holds the GTIN:
/// an NDC package's with its product's.
pub fn product(dir: &Path, gtin: u64) -> Result<Option<BTreeMap<String, String>>> {
    let mut catalogue = read(&path(dir))?;
    let Some(mut found) = catalogue.remove(&format!("{gtin:014}")) else { return Ok(None) };
    let product = found.get("PRODUCTNDC").and_then(|ndc| catalogue.remove(&ndc::product_key(ndc)));
    for (name, value) in product.into_iter().flatten() {
        found.entry(name).or_insert(value);
    }
    Ok(Some(found))
}
