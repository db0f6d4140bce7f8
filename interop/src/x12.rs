//! X12 5010 interchanges, read and checked.
//!
//! The envelope is read here, since the models parse one transaction set at a time:
//! - the delimiters, from the fixed-length ISA;
//! - each interchange (ISA ... IEA), functional group (GS ... GE) and transaction set
//!   (ST ... SE), each closed by its trailer;
//! - versions: ISA12 `00501`, GS08 `005010...`, and ST03 (when present) equal to GS08;
//! - control numbers: IEA02 = ISA13, GE02 = GS06, SE02 = ST02;
//! - counts: IEA01 groups, GE01 sets, SE01 segments (ST and SE included);
//! - the group's functional code against its sets: `HC` for an 837, `HP` for an 835.
//!
//! A fault rejects what it belongs to: the interchange, the group, or the set. Each set whose
//! envelope checks is then parsed with the `x12-types` 005010 models (`_837`, `_835`). A
//! segment the model does not accept where it stands rejects its set at that segment. Every
//! rejection names a segment by its position in the file (the first ISA is 1) and, where one is
//! at fault, its element.

use x12_types::util::Parser;
use x12_types::v005010::{_835, _837};

use crate::report::{Place, Rejection};

/// The separators an interchange declares in its ISA.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Delimiters {
    pub element: char,
    pub component: char,
    pub segment: char,
}

/// One segment of a file: its position (1-based), and its elements (the segment id first).
#[derive(Clone, Debug)]
pub struct Segment {
    pub position: usize,
    pub elements: Vec<String>,
}

impl Segment {
    pub fn id(&self) -> &str {
        &self.elements[0]
    }

    /// Element `n` (1-based), or "" if the segment has fewer.
    pub fn element(&self, n: usize) -> &str {
        self.elements.get(n).map_or("", String::as_str)
    }

    pub fn place(&self) -> Place {
        Place::Segment { position: self.position, id: self.id().to_owned(), element: None }
    }

    pub fn at(&self, element: usize) -> Place {
        self.place().element(element)
    }
}

/// What a transaction set holds, in the models' terms.
#[derive(Debug)]
pub enum Body {
    /// An 837: health care claims.
    Claims(Box<_837>),
    /// An 835: a payment and its remittance advice.
    Remittance(Box<_835>),
}

/// A transaction set whose envelope checked and which its model parsed.
#[derive(Debug)]
pub struct Set {
    /// Its segments, ST to SE, with their places in the file.
    pub segments: Vec<Segment>,
    pub body: Body,
    /// The separator of components within an element (ISA16).
    pub component: char,
}

impl Set {
    /// The place of the `nth` (0-based) segment with this id, or of the ST if there is none.
    pub fn place_of(&self, id: &str, nth: usize) -> Place {
        self.segments.iter().filter(|s| s.id() == id).nth(nth).unwrap_or(&self.segments[0]).place()
    }

    /// Every segment with this id, in order (for a mapping that walks them all).
    pub fn all(&self, id: &str) -> Vec<&Segment> {
        self.segments.iter().filter(|s| s.id() == id).collect()
    }

    /// The segments after the one at `position`, up to the next with id `until`.
    pub fn between(&self, position: usize, until: &'static str) -> impl Iterator<Item = &Segment> {
        // Segments are in file order: the first after `position` is found by bisection.
        let start = self.segments.partition_point(|s| s.position <= position);
        self.segments[start..].iter().take_while(move |s| s.id() != until)
    }

    /// The first segment with this id after the segment at `position`, if one comes before the
    /// next segment with id `until`.
    pub fn after(&self, position: usize, id: &str, until: &'static str) -> Option<&Segment> {
        self.between(position, until).find(|s| s.id() == id)
    }

    /// The components of a composite element (`HC:99213:25` gives `["HC", "99213", "25"]`).
    pub fn components<'a>(&self, element: &'a str) -> Vec<&'a str> {
        element.split(self.component).collect()
    }
}

/// What an X12 file held: its sets that checked and parsed, and what was rejected.
#[derive(Debug, Default)]
pub struct Read {
    pub sets: Vec<Set>,
    pub rejections: Vec<Rejection>,
}

/// Reads an X12 file: `Err` if nothing of it can be read (not X12 text, no ISA to take the
/// delimiters from); otherwise its sets and the rejected parts.
pub fn read(bytes: &[u8]) -> Result<Read, Rejection> {
    let text = std::str::from_utf8(bytes)
        .map_err(|error| Rejection::new(Place::File, format!("not UTF-8 text: byte {} is not", error.valid_up_to())))?;
    let text = text.trim_start_matches('\u{feff}').trim_start();
    let delimiters = delimiters(text)?;
    let segments = split(text, delimiters);
    let mut read = Read::default();
    let mut cursor = 0;
    while cursor < segments.len() {
        interchange(&segments, &mut cursor, delimiters, &mut read);
    }
    if read.sets.is_empty() && read.rejections.is_empty() {
        return Err(Rejection::new(Place::File, "the interchange holds no transaction set"));
    }
    Ok(read)
}

/// The delimiters, from where the ISA's fixed length puts them: the element separator 4th,
/// the component separator (ISA16) 105th, the segment terminator 106th.
fn delimiters(text: &str) -> Result<Delimiters, Rejection> {
    let bytes = text.as_bytes();
    if !text.starts_with("ISA") || bytes.len() < 106 || !bytes[..106].is_ascii() {
        return Err(Rejection::new(Place::File, "no ISA segment of 106 characters opens the file"));
    }
    let [element, component, segment] = [bytes[3], bytes[104], bytes[105]].map(char::from);
    let separators = bytes[..106].iter().filter(|b| **b == bytes[3]).count();
    let distinct = element != component && element != segment && component != segment;
    let printable = [element, component].iter().all(|c| !c.is_ascii_alphanumeric() && *c != ' ');
    if separators != 16 || bytes[103] != bytes[3] || !distinct || !printable || segment.is_ascii_alphanumeric() {
        return Err(Rejection::new(
            Place::Segment { position: 1, id: "ISA".into(), element: None },
            "the ISA is not of fixed length: 16 elements in 106 characters, its separators distinct",
        ));
    }
    Ok(Delimiters { element, component, segment })
}

fn split(text: &str, delimiters: Delimiters) -> Vec<Segment> {
    text.split(delimiters.segment)
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .enumerate()
        .map(|(index, s)| Segment {
            position: index + 1,
            elements: s.split(delimiters.element).map(str::to_owned).collect(),
        })
        .collect()
}

/// A set whose envelope checked, before its model parses it.
struct Candidate {
    /// Indices of its segments, ST to SE.
    range: std::ops::Range<usize>,
    kind: SetKind,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum SetKind {
    Claims,
    Remittance,
}

/// Reads one interchange from `segments[*cursor]`, which the caller found to be a segment
/// outside any: an ISA, or a stray segment that is rejected.
fn interchange(segments: &[Segment], cursor: &mut usize, delimiters: Delimiters, read: &mut Read) {
    let isa = &segments[*cursor];
    *cursor += 1;
    if isa.id() != "ISA" {
        let reason = format!("segment {} is outside any interchange (ISA ... IEA)", shown(isa.id()));
        read.rejections.push(Rejection::new(isa.place(), reason));
        return;
    }
    let mut faults = Vec::new();
    if isa.elements.len() != 17 {
        faults.push(Rejection::new(isa.place(), format!("the ISA has {} elements, not 16", isa.elements.len() - 1)));
    } else if isa.element(16).chars().ne([delimiters.component]) {
        faults.push(Rejection::new(isa.at(16), "this interchange's separators differ from the file's first"));
    }
    if isa.element(12) != "00501" {
        let reason = format!("version {} is not 00501 (X12 5010)", shown(isa.element(12)));
        faults.push(Rejection::new(isa.at(12), reason));
    }
    let (mut candidates, mut groups) = (Vec::new(), 0usize);
    loop {
        match segments.get(*cursor) {
            None => {
                faults.push(Rejection::new(isa.place(), "the interchange has no IEA"));
                break;
            }
            Some(s) if s.id() == "ISA" => {
                faults.push(Rejection::new(isa.place(), "the interchange has no IEA before the next ISA"));
                break;
            }
            Some(iea) if iea.id() == "IEA" => {
                *cursor += 1;
                faults.extend(trailer_faults(iea, isa, 13, (groups, "groups", "interchange")));
                break;
            }
            Some(gs) if gs.id() == "GS" => {
                groups += 1;
                group(segments, cursor, &mut candidates, &mut read.rejections);
            }
            Some(stray) => {
                *cursor += 1;
                let reason = format!("segment {} is outside any functional group (GS ... GE)", shown(stray.id()));
                read.rejections.push(Rejection::new(stray.place(), reason));
            }
        }
    }
    if !faults.is_empty() {
        return reject_envelope(faults, candidates.len(), &mut read.rejections);
    }
    for candidate in candidates {
        match parse(segments, candidate, delimiters) {
            Ok(set) => read.sets.push(set),
            Err(rejection) => read.rejections.push(rejection),
        }
    }
}

/// Reads one functional group from the GS at `segments[*cursor]`; the sets whose group and own
/// envelope check go into `candidates`.
fn group(segments: &[Segment], cursor: &mut usize, candidates: &mut Vec<Candidate>, rejections: &mut Vec<Rejection>) {
    let gs = &segments[*cursor];
    *cursor += 1;
    let mut faults = Vec::new();
    if !gs.element(8).starts_with("005010") {
        faults.push(Rejection::new(gs.at(8), format!("version {} is not 005010", shown(gs.element(8)))));
    }
    let (mut sets, mut count) = (Vec::new(), 0usize);
    loop {
        match segments.get(*cursor) {
            Some(ge) if ge.id() == "GE" => {
                *cursor += 1;
                faults.extend(trailer_faults(ge, gs, 6, (count, "sets", "group")));
                break;
            }
            None => {
                faults.push(Rejection::new(gs.place(), "the functional group has no GE"));
                break;
            }
            Some(s) if ["GS", "ISA", "IEA"].contains(&s.id()) => {
                faults
                    .push(Rejection::new(gs.place(), format!("the functional group has no GE before the {}", s.id())));
                break;
            }
            Some(st) if st.id() == "ST" => {
                count += 1;
                match set(segments, cursor, gs) {
                    Ok(candidate) => sets.push(candidate),
                    Err(rejection) => rejections.push(rejection),
                }
            }
            Some(stray) => {
                *cursor += 1;
                let reason = format!("segment {} is outside any transaction set (ST ... SE)", shown(stray.id()));
                rejections.push(Rejection::new(stray.place(), reason));
            }
        }
    }
    if faults.is_empty() {
        candidates.extend(sets);
    } else {
        reject_envelope(faults, sets.len(), rejections);
    }
}

/// A trailer's faults against its header: its count (element 1) of what it closes, and its
/// control number (element 2) against the header's (element `control`). `counted` is the
/// count found, what it counts, and what closes.
fn trailer_faults(trailer: &Segment, header: &Segment, control: usize, counted: (usize, &str, &str)) -> Vec<Rejection> {
    let (id, (count, things, unit)) = (trailer.id(), counted);
    let mut faults = Vec::new();
    if trailer.element(1).parse::<usize>().ok() != Some(count) {
        let reason = format!("{id}01 counts {} {things}; the {unit} has {count}", shown(trailer.element(1)));
        faults.push(Rejection::new(trailer.at(1), reason));
    }
    if trailer.element(2) != header.element(control) {
        let (given, expected) = (shown(trailer.element(2)), shown(header.element(control)));
        let reason = format!("{id}02 {given} is not the {}{control:02} {expected}", header.id());
        faults.push(Rejection::new(trailer.at(2), reason));
    }
    faults
}

/// An envelope's faults, the first saying how many transaction sets it takes with it.
fn reject_envelope(mut faults: Vec<Rejection>, sets: usize, rejections: &mut Vec<Rejection>) {
    if sets > 0 {
        faults[0].reason = format!("{}; its {sets} transaction sets are not imported", faults[0].reason);
    }
    rejections.extend(faults);
}

/// Reads one transaction set from the ST at `segments[*cursor]`, through its SE.
fn set(segments: &[Segment], cursor: &mut usize, gs: &Segment) -> Result<Candidate, Rejection> {
    let start = *cursor;
    let st = &segments[start];
    *cursor += 1;
    let se = loop {
        match segments.get(*cursor) {
            Some(se) if se.id() == "SE" => {
                *cursor += 1;
                break se;
            }
            Some(s) if !["ST", "GE", "GS", "IEA", "ISA"].contains(&s.id()) => *cursor += 1,
            // The set ends without its trailer; what follows is read on.
            _ => return Err(Rejection::new(st.place(), "the transaction set has no SE")),
        }
    };
    if let Some(fault) = trailer_faults(se, st, 2, (*cursor - start, "segments", "set")).into_iter().next() {
        return Err(fault);
    }
    if st.elements.len() > 3 && st.element(3) != gs.element(8) {
        let reason = format!("ST03 {} is not the group's version GS08 {}", shown(st.element(3)), shown(gs.element(8)));
        return Err(Rejection::new(st.at(3), reason));
    }
    let (kind, code) = match st.element(1) {
        "837" => (SetKind::Claims, "HC"),
        "835" => (SetKind::Remittance, "HP"),
        other => {
            let reason =
                format!("an X12 {} is not imported: Caduceus imports 837 claims and 835 remittances", shown(other));
            return Err(Rejection::new(st.at(1), reason));
        }
    };
    if gs.element(1) != code {
        let reason = format!("an {} belongs in a group of code {code}, not {}", st.element(1), shown(gs.element(1)));
        return Err(Rejection::new(gs.at(1), reason));
    }
    Ok(Candidate { range: start..*cursor, kind })
}

/// Most elements a segment of the 005010 models has.
const ELEMENTS_MAX: usize = 50;

/// Parses a set with its model. The models read `*` between elements and `~` after segments,
/// so the set is written with those first; an element holding either is rejected. The models
/// take a segment's elements up to the first character that is neither alphanumeric, white
/// space nor ASCII punctuation, and assume that every element they require is there: so an
/// element holding another character is rejected, and each segment is written out to all the
/// elements a model may read (trailing empty elements, which X12 reads as absent).
fn parse(segments: &[Segment], candidate: Candidate, delimiters: Delimiters) -> Result<Set, Rejection> {
    let segments = &segments[candidate.range];
    let mut text = String::new();
    for segment in segments {
        for (index, element) in segment.elements.iter().enumerate() {
            if element.contains(['*', '~']) {
                let reason = "the element holds '*' or '~', which the X12 models read as separators";
                return Err(Rejection::new(segment.at(index), reason));
            }
            let readable = |c: char| c.is_alphanumeric() || c.is_whitespace() || c.is_ascii_punctuation();
            if let Some(c) = element.chars().find(|c| !readable(*c)) {
                let reason = format!("the element holds {c:?}, a character the X12 models do not read");
                return Err(Rejection::new(segment.at(index), reason));
            }
            if index > 0 {
                text.push('*');
            }
            text.push_str(element);
        }
        for _ in segment.elements.len()..=ELEMENTS_MAX {
            text.push('*');
        }
        text.push('~');
    }
    let at_fault = |rest: &str| -> Rejection {
        // Where the model stopped: its input is a slice of `text` (or empty at the end).
        let start = (rest.as_ptr() as usize).wrapping_sub(text.as_ptr() as usize).min(text.len());
        let offset = text.as_bytes()[..start].iter().filter(|b| **b == b'~').count();
        let segment = &segments[offset.min(segments.len() - 1)];
        let kind = segments[0].element(1);
        let reason =
            format!("segment {} is not where the 005010 {kind} model allows it, or is malformed", segment.id());
        Rejection::new(segment.place(), reason)
    };
    let body = match candidate.kind {
        SetKind::Claims => _837::parse(&text).map(|(rest, body)| (rest, Body::Claims(Box::new(body)))),
        SetKind::Remittance => _835::parse(&text).map(|(rest, body)| (rest, Body::Remittance(Box::new(body)))),
    };
    match body {
        Ok(("", body)) => Ok(Set { segments: segments.to_vec(), body, component: delimiters.component }),
        Ok((rest, _)) => Err(at_fault(rest)),
        Err(nom::Err::Error(error) | nom::Err::Failure(error)) => Err(at_fault(error.input)),
        Err(nom::Err::Incomplete(_)) => Err(at_fault("")),
    }
}

/// A value from the file as a rejection shows it: at most 20 characters.
pub fn shown(value: &str) -> String {
    let mut chars = value.chars();
    let head: String = chars.by_ref().take(20).collect();
    if chars.next().is_some() {
        format!("{head:?}...")
    } else {
        format!("{head:?}")
    }
}
