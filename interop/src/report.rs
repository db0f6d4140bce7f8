//! Where in a file something was found, and why a part of a file was rejected.

use std::fmt;

/// A place in a file, in the terms of its format.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Place {
    /// The whole file.
    File,
    /// A JSON path, such as `$.entry[3].resource`.
    Json(String),
    /// A line of a line-delimited file (1-based), and a JSON path within it.
    Line(usize, String),
    /// An X12 segment: its position in the file (1-based, the ISA first), its id, and the
    /// element at fault (1-based), if one.
    Segment { position: usize, id: String, element: Option<usize> },
    /// An EPCIS event by its position in the event list (1-based), and the field at fault.
    Event { index: usize, field: Option<String> },
}

impl Place {
    /// The same segment, narrowed to one of its elements.
    pub fn element(&self, element: usize) -> Place {
        match self {
            Place::Segment { position, id, .. } => {
                Place::Segment { position: *position, id: id.clone(), element: Some(element) }
            }
            other => other.clone(),
        }
    }
}

impl fmt::Display for Place {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Place::File => f.write_str("the file"),
            Place::Json(path) => f.write_str(path),
            Place::Line(line, path) => write!(f, "line {line}, {path}"),
            Place::Segment { position, id, element: None } => write!(f, "segment {position} ({id})"),
            Place::Segment { position, id, element: Some(element) } => {
                write!(f, "segment {position} ({id}), element {id}{element:02}")
            }
            Place::Event { index, field: None } => write!(f, "event {index}"),
            Place::Event { index, field: Some(field) } => write!(f, "event {index}, {field}"),
        }
    }
}

/// A part of a file that was not imported: where, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rejection {
    /// Where.
    pub place: Place,
    /// Why, in words that name the element at fault.
    pub reason: String,
}

impl Rejection {
    pub fn new(place: Place, reason: impl Into<String>) -> Self {
        Self { place, reason: reason.into() }
    }
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.place, self.reason)
    }
}
