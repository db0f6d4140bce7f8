//! GS1 EPCIS documents read into their events and master data: 2.0 as JSON-LD (`serde_json`)
//! or XML, and 1.2 as XML (`roxmltree`), capture documents, query documents and bare events.
//! Each event is checked against what EPCIS requires of it (its type, time, action, an
//! identifier list, CBV vocabulary or a URI for its business step and disposition, namespaced
//! extensions, in XML no element foreign to events); an event that fails is rejected at its index
//! and field, the rest of the document still read. Identifiers are kept as written: the plan
//! reads them (`gs1`).

use roxmltree::Node;
use serde_json::Value;

use crate::report::{Place, Rejection};

/// One event, its fields as written (vocabulary shortened to the CBV's bare names).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Event {
    /// Its position in the document's event list (1-based).
    pub index: usize,
    /// ObjectEvent, AggregationEvent, TransactionEvent, TransformationEvent, AssociationEvent.
    pub kind: String,
    pub event_id: Option<String>,
    pub event_time: String,
    /// ADD, OBSERVE or DELETE (none for a TransformationEvent).
    pub action: Option<String>,
    /// A CBV business step's bare name (`shipping`), or the URI of one of its own.
    pub biz_step: Option<String>,
    /// A CBV disposition's bare name, or a URI.
    pub disposition: Option<String>,
    /// The event's instance identifiers: epcList, or an aggregation's childEPCs.
    pub epcs: Vec<String>,
    /// An aggregation's or transaction's parent.
    pub parent: Option<String>,
    /// Class identifiers of quantityList or childQuantityList.
    pub classes: Vec<String>,
    pub read_point: Option<String>,
    pub biz_location: Option<String>,
    /// (type, id): the type's bare CBV name (`owning_party`, `location`, ...).
    pub sources: Vec<(String, String)>,
    pub destinations: Vec<(String, String)>,
    /// Instance/lot master data: the lot number and expiry date (CBV `cbvmda`).
    pub lot: Option<String>,
    pub expiry: Option<String>,
    /// A recall's class, from an extension field named `recallClass`.
    pub recall_class: Option<String>,
}

/// A master-data element: its id (a class or location identifier) and attributes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MasterData {
    /// The vocabulary's type, shortened (`EPCClass`, `Location`).
    pub vocabulary: String,
    pub id: String,
    /// (attribute, value), the attribute's name shortened (`regulatedProductName`).
    pub attributes: Vec<(String, String)>,
}

/// What a document held.
#[derive(Clone, Debug, Default)]
pub struct Read {
    pub events: Vec<Event>,
    pub master_data: Vec<MasterData>,
    /// Events that could not be read, each at its index and field.
    pub rejections: Vec<Rejection>,
}

const EVENT_TYPES: &[&str] =
    &["ObjectEvent", "AggregationEvent", "TransactionEvent", "TransformationEvent", "AssociationEvent"];

/// The fields that name what an event is about.
const IDENTIFIER_LISTS: [&str; 9] = [
    "epcList",
    "quantityList",
    "childEPCs",
    "childQuantityList",
    "parentID",
    "inputEPCList",
    "inputQuantityList",
    "outputEPCList",
    "outputQuantityList",
];

/// The CBV 2.0 business steps.
const BIZ_STEPS: &[&str] = &[
    "accepting",
    "arriving",
    "assembling",
    "collecting",
    "commissioning",
    "consigning",
    "creating_class_instance",
    "cycle_counting",
    "decommissioning",
    "departing",
    "destroying",
    "disassembling",
    "dispensing",
    "encoding",
    "entering_exiting",
    "holding",
    "inspecting",
    "installing",
    "killing",
    "loading",
    "other",
    "packing",
    "picking",
    "receiving",
    "removing",
    "repackaging",
    "repairing",
    "replacing",
    "reserving",
    "retail_selling",
    "sampling",
    "sensor_reporting",
    "shipping",
    "staging_outbound",
    "stock_taking",
    "stocking",
    "storing",
    "transporting",
    "unloading",
    "unpacking",
    "void_shipping",
];

/// The CBV 2.0 dispositions.
const DISPOSITIONS: &[&str] = &[
    "active",
    "available",
    "completeness_verified",
    "completeness_inferred",
    "conformant",
    "container_closed",
    "container_open",
    "damaged",
    "destroyed",
    "dispensed",
    "disposed",
    "encoded",
    "expired",
    "in_progress",
    "in_transit",
    "inactive",
    "mismatch_instance",
    "mismatch_class",
    "mismatch_quantity",
    "needs_replacement",
    "no_pedigree_match",
    "non_conformant",
    "non_sellable_other",
    "partially_dispensed",
    "recalled",
    "reserved",
    "retail_sold",
    "returned",
    "sellable_accessible",
    "sellable_not_accessible",
    "stolen",
    "unavailable",
    "unknown",
];

/// The CBV 2.0 source and destination types.
const SOURCE_TYPES: &[&str] = &["owning_party", "possessing_party", "location"];

/// A CBV term's bare name from any of its spellings (`urn:epcglobal:cbv:bizstep:shipping`,
/// `https://ref.gs1.org/cbv/BizStep-shipping`, `cbv:BizStep-shipping`, `shipping`), checked
/// against the vocabulary; another URI is kept as the sender's own term. Anything else is not
/// a term at all.
fn term(value: &str, urn: &str, web: &str, vocabulary: &[&str], field: &str) -> Result<String, String> {
    let bare = value
        .strip_prefix(urn)
        .or_else(|| value.strip_prefix("https://ref.gs1.org/cbv/").and_then(|v| v.strip_prefix(web)))
        .or_else(|| value.strip_prefix("cbv:").and_then(|v| v.strip_prefix(web)))
        .unwrap_or(value);
    if vocabulary.contains(&bare) {
        return Ok(bare.to_owned());
    }
    let standard = bare.len() != value.len() || !value.contains(':');
    if standard {
        Err(format!("{value:?} is not a CBV {field}, nor a URI of the sender's own"))
    } else {
        Ok(value.to_owned())
    }
}

/// The name after a namespace prefix or IRI (`cbvmda:lotNumber`, `urn:epcglobal:cbv:mda#lotNumber`).
fn local(name: &str) -> &str {
    name.rsplit([':', '#', '/']).next().unwrap_or(name)
}

/// One event's fields as the readers find them, before the checks common to both syntaxes.
#[derive(Default)]
struct Fields {
    event: Event,
    action: Option<String>,
    biz_step: Option<String>,
    disposition: Option<String>,
    sources: Vec<(String, String)>,
    destinations: Vec<(String, String)>,
    /// Whether it lists identifiers at all (epcList, quantityList, childEPCs, inputs, ...).
    identified: bool,
}

impl Fields {
    /// The checks both syntaxes share; `at(field)` places a rejection.
    fn finish(self, at: impl Fn(&str) -> Place) -> Result<Event, Rejection> {
        let Fields { mut event, action, biz_step, disposition, sources, destinations, identified } = self;
        let reject = |field: &str, reason: String| Rejection::new(at(field), reason);
        if event.event_time.is_empty() {
            return Err(reject("eventTime", "an event has an eventTime".into()));
        }
        if chrono::DateTime::parse_from_rfc3339(&event.event_time).is_err() {
            return Err(reject("eventTime", format!("{:?} is not a date-time with its offset", event.event_time)));
        }
        match action.as_deref() {
            None if event.kind != "TransformationEvent" => {
                return Err(reject("action", format!("an {} has an action", event.kind)))
            }
            Some(action) if !["ADD", "OBSERVE", "DELETE"].contains(&action) => {
                return Err(reject("action", format!("{action:?} is not ADD, OBSERVE or DELETE")))
            }
            _ => event.action = action,
        }
        if !identified {
            return Err(reject("epcList", "the event names nothing (no identifier or quantity list)".into()));
        }
        if let Some(step) = biz_step {
            let step = term(&step, "urn:epcglobal:cbv:bizstep:", "BizStep-", BIZ_STEPS, "business step");
            event.biz_step = Some(step.map_err(|reason| reject("bizStep", reason))?);
        }
        if let Some(disposition) = disposition {
            let disposition = term(&disposition, "urn:epcglobal:cbv:disp:", "Disp-", DISPOSITIONS, "disposition");
            event.disposition = Some(disposition.map_err(|reason| reject("disposition", reason))?);
        }
        for (list, field, into) in
            [(sources, "sourceList", &mut event.sources), (destinations, "destinationList", &mut event.destinations)]
        {
            for (kind, id) in list {
                let kind = term(&kind, "urn:epcglobal:cbv:sdt:", "SDT-", SOURCE_TYPES, "source or destination type")
                    .map_err(|reason| reject(field, reason))?;
                into.push((kind, id));
            }
        }
        Ok(event)
    }
}

/// Reads a JSON-LD document (EPCISDocument, EPCISQueryDocument) or a bare event.
pub fn read_json(bytes: &[u8]) -> Result<Read, Rejection> {
    let value: Value = serde_json::from_slice(bytes)
        .map_err(|e| Rejection::new(Place::File, format!("not JSON: line {}, column {}: {e}", e.line(), e.column())))?;
    let at = |path: &str| Place::Json(path.to_owned());
    if value.get("@context").is_none() {
        return Err(Rejection::new(at("$.@context"), "an EPCIS JSON-LD document has an @context"));
    }
    let mut read = Read::default();
    let kind = value.get("type").and_then(Value::as_str).unwrap_or("");
    let (events, path) = match kind {
        "EPCISDocument" => (value.pointer("/epcisBody/eventList"), "$.epcisBody.eventList"),
        "EPCISQueryDocument" => (
            value.pointer("/epcisBody/queryResults/resultsBody/eventList"),
            "$.epcisBody.queryResults.resultsBody.eventList",
        ),
        kind if EVENT_TYPES.contains(&kind) => {
            read.events.push(json_event(&value, 1).map_err(|r| Rejection::new(Place::File, r.to_string()))?);
            return Ok(read);
        }
        other => return Err(Rejection::new(at("$.type"), format!("{other:?} is not an EPCIS document or event"))),
    };
    let events = events.and_then(Value::as_array).ok_or_else(|| Rejection::new(at(path), "no event list"))?;
    for (i, event) in events.iter().enumerate() {
        match json_event(event, i + 1) {
            Ok(event) => read.events.push(event),
            Err(rejection) => read.rejections.push(rejection),
        }
    }
    let vocabularies = value.pointer("/epcisHeader/epcisMasterData/vocabularyList").and_then(Value::as_array);
    for vocabulary in vocabularies.into_iter().flatten() {
        let kind = local(vocabulary.get("type").and_then(Value::as_str).unwrap_or("")).to_owned();
        let elements = vocabulary.get("vocabularyElementList").and_then(Value::as_array);
        for element in elements.into_iter().flatten() {
            let attributes = element.get("attributes").and_then(Value::as_array).into_iter().flatten();
            read.master_data.push(MasterData {
                vocabulary: kind.clone(),
                id: element.get("id").and_then(Value::as_str).unwrap_or("").to_owned(),
                attributes: attributes
                    .filter_map(|a| {
                        let id = a.get("id").and_then(Value::as_str)?;
                        let value = a.get("attribute")?;
                        Some((local(id).to_owned(), value.as_str().map_or_else(|| value.to_string(), str::to_owned)))
                    })
                    .collect(),
            });
        }
    }
    Ok(read)
}

fn json_event(value: &Value, index: usize) -> Result<Event, Rejection> {
    let at = |field: &str| Place::Event { index, field: Some(field.to_owned()) };
    let object =
        value.as_object().ok_or_else(|| Rejection::new(Place::Event { index, field: None }, "not an object"))?;
    let text = |name: &str| object.get(name).and_then(Value::as_str).map(str::to_owned);
    let kind = text("type").unwrap_or_default();
    if !EVENT_TYPES.contains(&kind.as_str()) {
        return Err(Rejection::new(at("type"), format!("{kind:?} is not an EPCIS event type")));
    }
    let strings = |name: &str| -> Result<Vec<String>, Rejection> {
        match object.get(name) {
            None => Ok(Vec::new()),
            Some(Value::Array(items)) => items
                .iter()
                .map(|item| item.as_str().map(str::to_owned).ok_or_else(|| Rejection::new(at(name), "not a string")))
                .collect(),
            Some(_) => Err(Rejection::new(at(name), "not a list")),
        }
    };
    let id_of = |name: &str| object.get(name).and_then(|v| v.get("id")).and_then(Value::as_str).map(str::to_owned);
    let mut fields = Fields {
        event: Event {
            index,
            kind: kind.clone(),
            event_id: text("eventID"),
            event_time: text("eventTime").unwrap_or_default(),
            epcs: if kind == "AggregationEvent" { strings("childEPCs")? } else { strings("epcList")? },
            parent: text("parentID"),
            read_point: id_of("readPoint"),
            biz_location: id_of("bizLocation"),
            ..Event::default()
        },
        action: text("action"),
        biz_step: text("bizStep"),
        disposition: text("disposition"),
        ..Fields::default()
    };
    // A certification is named by its URI (EPCIS 2.0 JSON schema: a string or a list of them).
    match object.get("certificationInfo") {
        None | Some(Value::String(_)) => {}
        Some(Value::Array(items)) if items.iter().all(Value::is_string) => {}
        Some(_) => return Err(Rejection::new(at("certificationInfo"), "a certification is named by its URI")),
    }
    for name in ["quantityList", "childQuantityList"] {
        for quantity in object.get(name).and_then(Value::as_array).into_iter().flatten() {
            let element = quantity.as_object().ok_or_else(|| Rejection::new(at(name), "not an object"))?;
            if let Some(unknown) = element.keys().find(|k| !["epcClass", "quantity", "uom"].contains(&k.as_str())) {
                return Err(Rejection::new(at(name), format!("{unknown:?} is not a field of a quantity element")));
            }
            if element.get("quantity").is_some_and(|q| !q.is_number()) {
                return Err(Rejection::new(at(name), "a quantity is a number"));
            }
            let class = element.get("epcClass").and_then(Value::as_str);
            fields.event.classes.push(class.ok_or_else(|| Rejection::new(at(name), "no epcClass"))?.to_owned());
        }
    }
    for (name, key, into) in
        [("sourceList", "source", &mut fields.sources), ("destinationList", "destination", &mut fields.destinations)]
    {
        for entry in object.get(name).and_then(Value::as_array).into_iter().flatten() {
            let kind = entry.get("type").and_then(Value::as_str);
            let id = entry.get(key).and_then(Value::as_str);
            match (kind, id) {
                (Some(kind), Some(id)) => into.push((kind.to_owned(), id.to_owned())),
                _ => return Err(Rejection::new(at(name), format!("each entry has a type and a {key}"))),
            }
        }
    }
    if let Some(ilmd) = object.get("ilmd").and_then(Value::as_object) {
        if let Some(bare) = ilmd.keys().find(|k| !k.contains(':')) {
            return Err(Rejection::new(at("ilmd"), format!("{bare:?} has no namespace (ilmd fields are extensions)")));
        }
        let find = |name: &str| ilmd.iter().find(|(k, _)| local(k) == name).and_then(|(_, v)| v.as_str());
        fields.event.lot = find("lotNumber").map(str::to_owned);
        fields.event.expiry = find("itemExpirationDate").map(str::to_owned);
    }
    fields.event.recall_class = object
        .iter()
        .find(|(k, _)| k.contains(':') && local(k) == "recallClass")
        .and_then(|(_, v)| v.as_str())
        .map(str::to_owned);
    fields.identified = IDENTIFIER_LISTS.iter().any(|name| object.contains_key(*name));
    fields.finish(at)
}

/// The elements of the five event types (an extension is namespaced).
const ELEMENTS: &[&str] = &[
    "eventTime",
    "recordTime",
    "eventTimeZoneOffset",
    "certificationInfo",
    "eventID",
    "errorDeclaration",
    "baseExtension",
    "epcList",
    "parentID",
    "childEPCs",
    "action",
    "bizStep",
    "disposition",
    "persistentDisposition",
    "readPoint",
    "bizLocation",
    "bizTransactionList",
    "quantityList",
    "childQuantityList",
    "sourceList",
    "destinationList",
    "sensorElementList",
    "ilmd",
    "inputEPCList",
    "inputQuantityList",
    "outputEPCList",
    "outputQuantityList",
    "transformationID",
    "extension",
];

/// Reads an XML document (EPCISDocument or EPCISQueryDocument, 1.2 or 2.0) or a bare event.
pub fn read_xml(bytes: &[u8]) -> Result<Read, Rejection> {
    let text = std::str::from_utf8(bytes).map_err(|e| Rejection::new(Place::File, format!("not UTF-8: {e}")))?;
    let document =
        roxmltree::Document::parse(text).map_err(|e| Rejection::new(Place::File, format!("not XML: {e}")))?;
    let root = document.root_element();
    let mut read = Read::default();
    match root.tag_name().name() {
        "EPCISDocument" | "EPCISQueryDocument" => {}
        kind if EVENT_TYPES.contains(&kind) => {
            read.events.push(xml_event(root, 1).map_err(|r| Rejection::new(Place::File, r.to_string()))?);
            return Ok(read);
        }
        other => return Err(Rejection::new(Place::File, format!("<{other}> is not an EPCIS document or event"))),
    }
    let list = root
        .descendants()
        .find(|n| n.has_tag_name("EventList"))
        .ok_or_else(|| Rejection::new(Place::File, "no EventList"))?;
    // 1.2 wraps its newer event types in <extension> (AssociationEvent in two).
    let mut events = Vec::new();
    let mut pending: Vec<Node> = list.children().filter(Node::is_element).collect();
    pending.reverse();
    while let Some(node) = pending.pop() {
        if node.has_tag_name("extension") {
            pending.extend(node.children().filter(Node::is_element).collect::<Vec<_>>().into_iter().rev());
        } else {
            events.push(node);
        }
    }
    for (i, node) in events.into_iter().enumerate() {
        match xml_event(node, i + 1) {
            Ok(event) => read.events.push(event),
            Err(rejection) => read.rejections.push(rejection),
        }
    }
    for vocabulary in root.descendants().filter(|n| n.has_tag_name("Vocabulary")) {
        let kind = local(vocabulary.attribute("type").unwrap_or("")).to_owned();
        for element in vocabulary.descendants().filter(|n| n.has_tag_name("VocabularyElement")) {
            read.master_data.push(MasterData {
                vocabulary: kind.clone(),
                id: element.attribute("id").unwrap_or("").to_owned(),
                attributes: element
                    .children()
                    .filter(|n| n.has_tag_name("attribute"))
                    .map(|a| {
                        (local(a.attribute("id").unwrap_or("")).to_owned(), a.text().unwrap_or("").trim().to_owned())
                    })
                    .collect(),
            });
        }
    }
    Ok(read)
}

fn xml_event(node: Node, index: usize) -> Result<Event, Rejection> {
    let at = |field: &str| Place::Event { index, field: Some(field.to_owned()) };
    let kind = node.tag_name().name().to_owned();
    if !EVENT_TYPES.contains(&kind.as_str()) {
        return Err(Rejection::new(at(&kind), format!("<{kind}> is not an EPCIS event")));
    }
    let mut fields = Fields { event: Event { index, kind, ..Event::default() }, ..Fields::default() };
    let text = |n: Node| n.text().unwrap_or("").trim().to_owned();
    // The event's own elements, then those of its 1.2 `extension` (and that one's extension).
    let mut nodes: Vec<Node> = node.children().filter(Node::is_element).collect();
    let mut i = 0;
    while i < nodes.len() {
        let child = nodes[i];
        i += 1;
        let name = child.tag_name().name();
        // An extension's element is in a namespace of its own (not EPCIS's).
        let namespaced = child.tag_name().namespace().is_some_and(|ns| !ns.starts_with("urn:epcglobal:epcis:"));
        if child.parent() == Some(node) && !namespaced && !ELEMENTS.contains(&name) {
            return Err(Rejection::new(at(name), format!("<{name}> is not an element of an EPCIS event")));
        }
        let strings = |n: Node| n.children().filter(Node::is_element).map(text).collect::<Vec<_>>();
        match name {
            "eventTime" => fields.event.event_time = text(child),
            "eventID" => fields.event.event_id = Some(text(child)),
            "action" => fields.action = Some(text(child)),
            "bizStep" => fields.biz_step = Some(text(child)),
            "disposition" => fields.disposition = Some(text(child)),
            "parentID" => fields.event.parent = Some(text(child)),
            "epcList" | "childEPCs" => fields.event.epcs.extend(strings(child)),
            "readPoint" | "bizLocation" => {
                let id = child.children().find(|n| n.has_tag_name("id")).map(text);
                *if name == "readPoint" { &mut fields.event.read_point } else { &mut fields.event.biz_location } = id;
            }
            "quantityList" | "childQuantityList" => {
                for element in child.children().filter(Node::is_element) {
                    let class = element.children().find(|n| n.has_tag_name("epcClass")).map(text);
                    fields.event.classes.push(class.ok_or_else(|| Rejection::new(at(name), "no epcClass"))?);
                    let quantity = element.children().find(|n| n.has_tag_name("quantity")).map(text);
                    if quantity.is_some_and(|q| q.parse::<f64>().is_err()) {
                        return Err(Rejection::new(at(name), "a quantity is a number"));
                    }
                }
            }
            "sourceList" | "destinationList" => {
                let into = if name == "sourceList" { &mut fields.sources } else { &mut fields.destinations };
                for entry in child.children().filter(Node::is_element) {
                    let kind =
                        entry.attribute("type").ok_or_else(|| Rejection::new(at(name), "an entry has a type"))?;
                    into.push((kind.to_owned(), text(entry)));
                }
            }
            "ilmd" => {
                for item in child.children().filter(Node::is_element) {
                    match item.tag_name().name() {
                        "lotNumber" => fields.event.lot = Some(text(item)),
                        "itemExpirationDate" => fields.event.expiry = Some(text(item)),
                        _ => {}
                    }
                }
            }
            "extension" | "baseExtension" => nodes.extend(child.children().filter(Node::is_element)),
            "recallClass" if namespaced => fields.event.recall_class = Some(text(child)),
            _ => {}
        }
        if IDENTIFIER_LISTS.contains(&name) {
            fields.identified = true;
        }
    }
    fields.finish(at)
}
