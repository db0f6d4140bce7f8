//! `loadgen epcis`: a large EPCIS 2.0 JSON-LD document of a drug supply chain, for measuring
//! `caduceus import` on more units than the standard's examples hold. Each manufacturer
//! commissions its units in lots of `LOT` and packs each lot in a case (an SSCC); each case is
//! shipped to a wholesaler and received there, unpacked, and each unit is shipped on to a
//! pharmacy, received, and dispensed: six operations per unit, every identifier an EPC URI.

use serde_json::{json, Value};

/// Units per lot (one commissioning event and one case each).
pub const LOT: usize = 100;

fn sgln(party: &str) -> String {
    format!("urn:epc:id:sgln:{party}.00001.0")
}

/// A party's company prefix: 7 digits, by kind (1 manufacturer, 2 wholesaler, 3 pharmacy).
fn prefix(kind: usize, n: usize) -> String {
    format!("{kind}{n:06}")
}

/// The document for `units` units over the given numbers of manufacturers, wholesalers and
/// pharmacies, with each manufacturer's product in its master data.
pub fn document(units: usize, manufacturers: usize, wholesalers: usize, pharmacies: usize) -> Value {
    let (manufacturers, wholesalers, pharmacies) = (manufacturers.max(1), wholesalers.max(1), pharmacies.max(1));
    let mut events = Vec::new();
    let mut products = Vec::new();
    let time = |day: usize, lot: usize| format!("2026-11-{:02}T{:02}:{:02}:00Z", day, 8 + lot / 60 % 10, lot % 60);
    let event = |step: &str, disposition: &str, epcs: Vec<String>, at: &str, when: String| {
        json!({
            "type": "ObjectEvent", "eventTime": when, "eventTimeZoneOffset": "+00:00",
            "epcList": epcs, "action": if step == "commissioning" { "ADD" } else { "OBSERVE" },
            "bizStep": step, "disposition": disposition, "bizLocation": { "id": sgln(at) },
        })
    };
    for m in 0..manufacturers {
        let company = prefix(1, m);
        products.push(json!({
            "id": format!("urn:epc:idpat:sgtin:{company}.012345.*"),
            "attributes": [
                { "id": "urn:epcglobal:cbv:mda#regulatedProductName", "attribute": format!("Loadgen product {m}") },
                { "id": "urn:epcglobal:cbv:mda#additionalTradeItemIdentificationTypeCode", "attribute": "US_FDA_NDC" },
                { "id": "urn:epcglobal:cbv:mda#additionalTradeItemIdentification", "attribute": format!("{:04}-0123-45", m % 10_000) },
            ],
        }));
    }
    let lots = units.div_ceil(LOT);
    for lot in 0..lots {
        let m = lot % manufacturers;
        let (maker, wholesaler) = (prefix(1, m), prefix(2, lot % wholesalers));
        let serials: Vec<String> =
            (lot * LOT..units.min((lot + 1) * LOT)).map(|u| format!("urn:epc:id:sgtin:{maker}.012345.{u}")).collect();
        let case = format!("urn:epc:id:sscc:{maker}.{:010}", lot);
        let mut commission = event("commissioning", "active", serials.clone(), &maker, time(1, lot));
        commission["ilmd"] =
            json!({ "cbvmda:lotNumber": format!("L{lot}"), "cbvmda:itemExpirationDate": "2031-12-31" });
        events.push(commission);
        events.push(json!({
            "type": "AggregationEvent", "eventTime": time(1, lot), "eventTimeZoneOffset": "+00:00",
            "parentID": case, "childEPCs": serials, "action": "ADD", "bizStep": "packing",
            "disposition": "in_progress", "bizLocation": { "id": sgln(&maker) },
        }));
        let mut ship = event("shipping", "in_transit", vec![case.clone()], &maker, time(2, lot));
        ship["destinationList"] = json!([{ "type": "owning_party", "destination": sgln(&wholesaler) }]);
        events.push(ship);
        events.push(event("receiving", "in_progress", vec![case.clone()], &wholesaler, time(3, lot)));
        events.push(json!({
            "type": "AggregationEvent", "eventTime": time(3, lot), "eventTimeZoneOffset": "+00:00",
            "parentID": case, "childEPCs": serials, "action": "DELETE", "bizStep": "unpacking",
            "disposition": "in_progress", "bizLocation": { "id": sgln(&wholesaler) },
        }));
        // Each unit goes on to a pharmacy of its own number.
        let mut by_pharmacy: Vec<Vec<String>> = vec![Vec::new(); pharmacies];
        for (i, serial) in serials.iter().enumerate() {
            by_pharmacy[(lot * LOT + i) % pharmacies].push(serial.clone());
        }
        for (p, serials) in by_pharmacy.into_iter().enumerate().filter(|(_, s)| !s.is_empty()) {
            let pharmacy = prefix(3, p);
            let mut ship = event("shipping", "in_transit", serials.clone(), &wholesaler, time(4, lot));
            ship["destinationList"] = json!([{ "type": "owning_party", "destination": sgln(&pharmacy) }]);
            events.push(ship);
            events.push(event("receiving", "in_progress", serials.clone(), &pharmacy, time(5, lot)));
            events.push(event("dispensing", "dispensed", serials, &pharmacy, time(6, lot)));
        }
    }
    json!({
        "@context": ["https://ref.gs1.org/standards/epcis/epcis-context.jsonld", { "cbvmda": "urn:epcglobal:cbv:mda#" }],
        "type": "EPCISDocument",
        "schemaVersion": "2.0",
        "creationDate": "2026-11-01T00:00:00Z",
        "epcisHeader": { "epcisMasterData": { "vocabularyList": [
            { "type": "urn:epcglobal:epcis:vtype:EPCClass", "vocabularyElementList": products },
        ] } },
        "epcisBody": { "eventList": events },
    })
}
