//! GS1 identifiers as EPCIS documents write them: EPC URIs (`urn:epc:id:sgtin:...`), GS1
//! Digital Link URIs (`https://id.gs1.org/01/.../21/...`) and bracketed element strings
//! (`(01)...(21)...`). Each is read into its Application Identifiers, checked (lengths,
//! character sets, check digits) and turned into the key it names. Only the AIs the drug supply
//! chain uses are known; any other is refused by name.

use std::fmt;

/// An Application Identifier this module reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ai {
    pub code: &'static str,
    /// Fixed length (digits), or `None` for up to `max` characters of GS1's character set 82.
    pub fixed: Option<usize>,
    pub max: usize,
    /// The last digit is a GS1 check digit.
    pub check_digit: bool,
    /// A date YYMMDD (DD may be 00).
    pub date: bool,
    /// Its Digital Link path segment may start a URI's key (a primary key).
    pub primary: bool,
}

const fn fixed(code: &'static str, digits: usize, check_digit: bool, primary: bool) -> Ai {
    Ai { code, fixed: Some(digits), max: digits, check_digit, date: false, primary }
}

const fn text(code: &'static str, max: usize) -> Ai {
    Ai { code, fixed: None, max, check_digit: false, date: false, primary: false }
}

/// The AIs of serialized drug units, their lots, logistic units and parties.
pub const AIS: &[Ai] = &[
    fixed("00", 18, true, true),
    fixed("01", 14, true, true),
    text("10", 20),
    Ai { code: "11", fixed: Some(6), max: 6, check_digit: false, date: true, primary: false },
    Ai { code: "17", fixed: Some(6), max: 6, check_digit: false, date: true, primary: false },
    text("21", 20),
    text("22", 20),
    text("254", 20),
    fixed("414", 13, true, true),
    fixed("417", 13, true, true),
];

/// Digital Link's short names for the AIs above.
const ALIASES: &[(&str, &str)] = &[
    ("sscc", "00"),
    ("gtin", "01"),
    ("lot", "10"),
    ("expdt", "17"),
    ("ser", "21"),
    ("cpv", "22"),
    ("glnx", "254"),
    ("gln", "414"),
    ("party", "417"),
];

/// The qualifiers a Digital Link path may add to each primary key, in the order they must come.
const QUALIFIERS: &[(&str, &[&str])] = &[("01", &["22", "10", "21"]), ("414", &["254"])];

pub fn ai(code: &str) -> Option<&'static Ai> {
    AIS.iter().find(|ai| ai.code == code)
}

/// GS1's character set 82, the characters of alphanumeric AIs.
fn cset82(c: char) -> bool {
    c.is_ascii_alphanumeric() || "!\"%&'()*+,-./:;<=>?_".contains(c)
}

/// The GS1 check digit of `digits` (the digits before it).
pub fn check_digit(digits: &str) -> u32 {
    let sum: u32 =
        digits.bytes().rev().enumerate().map(|(i, b)| u32::from(b - b'0') * if i % 2 == 0 { 3 } else { 1 }).sum();
    (10 - sum % 10) % 10
}

/// Whether the last digit of `number` is its GS1 check digit.
pub fn check_digit_holds(number: &str) -> bool {
    match number.len().checked_sub(1) {
        Some(end) if number.bytes().all(|b| b.is_ascii_digit()) => {
            check_digit(&number[..end]) == u32::from(number.as_bytes()[end] - b'0')
        }
        _ => false,
    }
}

/// Checks one AI's value: its length, characters, check digit or date.
pub fn check_value(ai: &Ai, value: &str) -> Result<(), String> {
    let code = ai.code;
    if value.is_empty() {
        return Err(format!("AI ({code}) is empty"));
    }
    match ai.fixed {
        Some(digits) => {
            if value.len() != digits || !value.bytes().all(|b| b.is_ascii_digit()) {
                return Err(format!("AI ({code}) must be {digits} digits: {value:?}"));
            }
        }
        None => {
            if value.chars().count() > ai.max {
                return Err(format!("AI ({code}) is longer than {} characters: {value:?}", ai.max));
            }
            if let Some(bad) = value.chars().find(|c| !cset82(*c)) {
                return Err(format!("AI ({code}) holds {bad:?}, outside GS1's character set 82"));
            }
        }
    }
    if ai.check_digit && !check_digit_holds(value) {
        return Err(format!("AI ({code}) {value} fails its check digit"));
    }
    if ai.date {
        let month: u32 = value[2..4].parse().unwrap_or(0);
        let day: u32 = value[4..6].parse().unwrap_or(99);
        if !(1..=12).contains(&month) || day > 31 {
            return Err(format!("AI ({code}) {value} is not a date YYMMDD"));
        }
    }
    Ok(())
}

/// A GS1 element string's AIs and values, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Elements(pub Vec<(&'static Ai, String)>);

impl Elements {
    fn get(&self, code: &str) -> Option<&str> {
        self.0.iter().find(|(ai, _)| ai.code == code).map(|(_, v)| v.as_str())
    }

    /// The unbracketed form, `^` standing for FNC1: a variable-length AI is followed by FNC1
    /// unless it comes last.
    pub fn unbracketed(&self) -> String {
        let mut out = String::from("^");
        for (i, (ai, value)) in self.0.iter().enumerate() {
            out.push_str(ai.code);
            out.push_str(value);
            if ai.fixed.is_none() && i + 1 < self.0.len() {
                out.push('^');
            }
        }
        out
    }

    fn push(&mut self, code: &str, value: String) -> Result<(), String> {
        let ai = ai(code).ok_or_else(|| format!("AI ({code}) is not one the supply chain uses"))?;
        check_value(ai, &value)?;
        if self.get(code).is_some() {
            return Err(format!("AI ({code}) is repeated"));
        }
        self.0.push((ai, value));
        Ok(())
    }
}

/// Reads a bracketed element string, `(01)09520123456788(21)12345` (`\\(` a bracket in a value).
pub fn parse_element_string(text: &str) -> Result<Elements, String> {
    let mut elements = Elements(Vec::new());
    let mut rest = text;
    if !rest.starts_with('(') {
        return Err("an element string starts with a bracketed AI".into());
    }
    while let Some(after) = rest.strip_prefix('(') {
        let close = after.find(')').ok_or("an AI's bracket is not closed")?;
        let code = &after[..close];
        if !(2..=4).contains(&code.len()) || !code.bytes().all(|b| b.is_ascii_digit()) {
            return Err(format!("({code}) is not an AI"));
        }
        // The value runs to the next bracket; `\(` is a bracket within it.
        let value_start = &after[close + 1..];
        let mut value = String::new();
        let mut end = value_start.len();
        let mut chars = value_start.char_indices().peekable();
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' if chars.peek().map(|(_, c)| *c) == Some('(') => {
                    value.push('(');
                    chars.next();
                }
                '(' => {
                    end = i;
                    break;
                }
                c => value.push(c),
            }
        }
        elements.push(code, value)?;
        rest = &value_start[end..];
    }
    Ok(elements)
}

/// Reads a GS1 Digital Link URI: `http(s)://HOST[/STEM...]/AI/VALUE[/AI/VALUE...][?AI=VALUE&...]`.
/// The key starts at the last primary-key AI of the path that its qualifiers follow in order;
/// query parameters that are not AIs are ignored, as the standard says.
pub fn parse_digital_link(uri: &str) -> Result<Elements, String> {
    let rest = ["https://", "http://", "HTTPS://", "HTTP://"]
        .iter()
        .find_map(|scheme| uri.strip_prefix(scheme))
        .ok_or("a Digital Link starts with http:// or https:// (in one case)")?;
    if let Some(bad) = rest.chars().find(|c| c.is_whitespace() || c.is_control() || "<>{}\\^`|\"".contains(*c)) {
        return Err(format!("{bad:?} may not appear in a URI"));
    }
    let rest = rest.split('#').next().unwrap_or("");
    let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
    let (host, path) = path.split_once('/').ok_or("a Digital Link has a path after its host")?;
    if host.is_empty() || host.contains(['$', '%']) {
        return Err(format!("{host:?} is not a host"));
    }
    let segments: Vec<&str> = path.split('/').collect();
    let code_of = |segment: &str| -> Option<&'static str> {
        ALIASES
            .iter()
            .find(|(alias, _)| *alias == segment)
            .map(|(_, code)| *code)
            .or_else(|| ai(segment).map(|ai| ai.code))
    };
    // The key's start: the first primary key back from the end, over AI and value pairs.
    let mut start = None;
    let mut i = segments.len();
    while i >= 2 && start.is_none() {
        i -= 2;
        match code_of(segments[i]).and_then(ai) {
            Some(ai) if ai.primary => start = Some(i),
            Some(_) => {}
            None => break,
        }
    }
    let start = start.ok_or("the Digital Link holds no key the supply chain uses (01, 00, 414, 417) and its value")?;
    let mut elements = Elements(Vec::new());
    let primary = code_of(segments[start]).expect("found above");
    let qualifiers = QUALIFIERS.iter().find(|(key, _)| *key == primary).map_or(&[][..], |(_, q)| *q);
    let mut allowed = qualifiers.iter();
    for pair in segments[start..].chunks(2) {
        let code = code_of(pair[0]).ok_or_else(|| format!("{:?} is not an AI of the supply chain", pair[0]))?;
        if !elements.0.is_empty() && !allowed.by_ref().any(|q| *q == code) {
            return Err(format!("AI ({code}) may not qualify ({primary}) here"));
        }
        let mut value = unescape(pair[1])?;
        // A GTIN-8, -12 or -13 is written without the leading zeros of its GTIN-14.
        if code == "01" && [8, 12, 13].contains(&value.len()) {
            value = format!("{value:0>14}");
        }
        elements.push(code, value)?;
    }
    for parameter in query.split('&').filter(|p| !p.is_empty()) {
        let Some((name, value)) = parameter.split_once('=') else { continue };
        if !name.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        if value.contains('+') {
            return Err(format!("AI ({name}) holds '+', which a Digital Link must escape"));
        }
        if qualifiers.contains(&name) || ai(name).is_some_and(|ai| ai.primary) {
            return Err(format!("AI ({name}) belongs in the path"));
        }
        elements.push(name, unescape(value)?)?;
    }
    Ok(elements)
}

/// A URI component's percent escapes decoded; it must be UTF-8 without control characters.
fn unescape(component: &str) -> Result<String, String> {
    let decoded = percent_encoding::percent_decode_str(component)
        .decode_utf8()
        .map_err(|_| format!("{component:?} is not UTF-8 once unescaped"))?;
    if decoded.chars().any(|c| c.is_control()) {
        return Err(format!("{component:?} holds a control character once unescaped"));
    }
    Ok(decoded.into_owned())
}

/// What a GS1 identifier names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Key {
    /// A serialized trade item: GTIN-14 and serial.
    Unit { gtin: u64, serial: String, prefix: Option<String> },
    /// A lot of a trade item.
    Lot { gtin: u64, lot: String, prefix: Option<String> },
    /// A trade item (every unit of a GTIN).
    Product { gtin: u64, prefix: Option<String> },
    /// A logistic unit (a pallet or case) by its SSCC-18.
    Logistic { sscc: String },
    /// A location or party by its GLN-13 (with the company prefix, when the identifier shows it).
    Party { gln: String, prefix: Option<String> },
    /// An identifier of a kind the supply chain's operations do not use (`urn:epc:id:grai:...`).
    Other { scheme: String },
}

impl Key {
    /// The company that names it: the GS1 company prefix when the identifier shows its length,
    /// else the GLN.
    pub fn company(&self) -> Option<String> {
        match self {
            Key::Party { prefix: Some(prefix), .. } => Some(prefix.clone()),
            Key::Party { gln, .. } => Some(gln.clone()),
            _ => None,
        }
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Key::Unit { gtin, serial, .. } => write!(f, "(01){gtin:014}(21){serial}"),
            Key::Lot { gtin, lot, .. } => write!(f, "(01){gtin:014}(10){lot}"),
            Key::Product { gtin, .. } => write!(f, "(01){gtin:014}"),
            Key::Logistic { sscc } => write!(f, "(00){sscc}"),
            Key::Party { gln, .. } => write!(f, "(414){gln}"),
            Key::Other { scheme } => write!(f, "an EPC of scheme {scheme}"),
        }
    }
}

/// Reads any of the three forms of an identifier into the key it names.
pub fn parse(text: &str) -> Result<Key, String> {
    if let Some(epc) = text.strip_prefix("urn:epc:") {
        return parse_epc(epc);
    }
    let elements = if text.starts_with('(') {
        parse_element_string(text)?
    } else if text.starts_with("http://") || text.starts_with("https://") {
        parse_digital_link(text)?
    } else {
        return Err(format!("{text:?} is not an EPC URI, GS1 Digital Link or element string"));
    };
    key_of(&elements)
}

/// The key a set of AIs names.
pub fn key_of(elements: &Elements) -> Result<Key, String> {
    let number = |value: &str| value.parse::<u64>().expect("checked digits");
    if let Some(gtin) = elements.get("01") {
        let gtin = number(gtin);
        return Ok(match (elements.get("21"), elements.get("10")) {
            (Some(serial), _) => Key::Unit { gtin, serial: serial.to_owned(), prefix: None },
            (None, Some(lot)) => Key::Lot { gtin, lot: lot.to_owned(), prefix: None },
            (None, None) => Key::Product { gtin, prefix: None },
        });
    }
    if let Some(sscc) = elements.get("00") {
        return Ok(Key::Logistic { sscc: sscc.to_owned() });
    }
    if let Some(gln) = elements.get("414").or_else(|| elements.get("417")) {
        return Ok(Key::Party { gln: gln.to_owned(), prefix: None });
    }
    Err("the identifier holds no GS1 key (01, 00, 414 or 417)".into())
}

/// An EPC URI after `urn:epc:`: the company prefix and reference are joined, and their check
/// digit computed, as the EPC Tag Data Standard says.
fn parse_epc(epc: &str) -> Result<Key, String> {
    let mut parts = epc.splitn(3, ':');
    let (kind, scheme, body) = match (parts.next(), parts.next(), parts.next()) {
        (Some(kind), Some(scheme), Some(body)) => (kind, scheme, body),
        _ => return Err(format!("urn:epc:{epc} is not an EPC URI")),
    };
    // A serial, lot or location extension may hold dots (character set 82): it is the rest.
    let fields: Vec<&str> = body.splitn(3, '.').collect();
    let digits = |field: &str| !field.is_empty() && field.bytes().all(|b| b.is_ascii_digit());
    // Company prefix and reference, of total length `total` digits.
    let joined = |total: usize| -> Result<(String, String), String> {
        match fields.as_slice() {
            [prefix, reference, ..]
                if digits(prefix)
                    && (6..=12).contains(&prefix.len())
                    && prefix.len() + reference.len() == total
                    && (reference.is_empty() || digits(reference)) =>
            {
                Ok((prefix.to_string(), reference.to_string()))
            }
            _ => Err(format!("urn:epc:{epc}: the company prefix (6 to 12 digits) and reference make {total} digits")),
        }
    };
    let with_check = |body: String| {
        let check = check_digit(&body);
        format!("{body}{check}")
    };
    let gtin_of = |prefix: &str, reference: &str| -> u64 {
        let body = format!("{}{prefix}{}", &reference[..1], &reference[1..]);
        with_check(body).parse().expect("14 digits")
    };
    let last = |name: &str| -> Result<String, String> {
        match fields.as_slice() {
            [_, _, value] => {
                let value = unescape(value)?;
                check_value(ai(name).expect("known"), &value)?;
                Ok(value)
            }
            _ => Err(format!("urn:epc:{epc} needs three dot-separated fields")),
        }
    };
    match (kind, scheme) {
        ("id", "sgtin") => {
            let (prefix, reference) = joined(13)?;
            let serial = last("21")?;
            Ok(Key::Unit { gtin: gtin_of(&prefix, &reference), serial, prefix: Some(prefix) })
        }
        ("class", "lgtin") => {
            let (prefix, reference) = joined(13)?;
            let lot = last("10")?;
            Ok(Key::Lot { gtin: gtin_of(&prefix, &reference), lot, prefix: Some(prefix) })
        }
        ("idpat", "sgtin") => {
            let (prefix, reference) = joined(13)?;
            match fields.as_slice() {
                [_, _, "*"] => Ok(Key::Product { gtin: gtin_of(&prefix, &reference), prefix: Some(prefix) }),
                _ => Err(format!("urn:epc:{epc}: only a whole product (serial *) is a pattern read here")),
            }
        }
        ("id", "sscc") => {
            let (prefix, reference) = joined(17)?;
            if fields.len() != 2 {
                return Err(format!("urn:epc:{epc} needs two dot-separated fields"));
            }
            Ok(Key::Logistic { sscc: with_check(format!("{}{prefix}{}", &reference[..1], &reference[1..])) })
        }
        ("id", "sgln") | ("id", "pgln") => {
            let (prefix, reference) = joined(12)?;
            let expected = if scheme == "sgln" { 3 } else { 2 };
            if fields.len() != expected {
                return Err(format!("urn:epc:{epc} needs {expected} dot-separated fields"));
            }
            Ok(Key::Party { gln: with_check(format!("{prefix}{reference}")), prefix: Some(prefix) })
        }
        (_, scheme) => Ok(Key::Other { scheme: scheme.to_owned() }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epc_uris_become_keys_with_their_check_digits() {
        let unit = parse("urn:epc:id:sgtin:0614141.812345.6789").unwrap();
        assert_eq!(unit.to_string(), "(01)80614141123458(21)6789");
        let sscc = parse("urn:epc:id:sscc:0614141.1234567890").unwrap();
        assert_eq!(sscc.to_string(), "(00)106141412345678908");
        let party = parse("urn:epc:id:sgln:0614141.12345.400").unwrap();
        assert_eq!(party, Key::Party { gln: "0614141123452".into(), prefix: Some("0614141".into()) });
        assert!(parse("urn:epc:id:sgtin:0614141.81234.6789").is_err(), "12 digits");
        assert_eq!(parse("urn:epc:id:sgtin:0614141.812345.A%2FB").unwrap().to_string(), "(01)80614141123458(21)A/B");
        // Dots are in character set 82, and the Tag Data Standard does not escape them.
        assert_eq!(parse("urn:epc:id:sgtin:0614141.812345.A.1").unwrap().to_string(), "(01)80614141123458(21)A.1");
    }

    #[test]
    fn digital_links_and_element_strings_are_checked() {
        let link = parse("https://id.gs1.org/01/09520123456788/10/ABC/21/12345?17=251231").unwrap();
        assert_eq!(link.to_string(), "(01)09520123456788(21)12345");
        assert!(parse("https://id.gs1.org/01/09520123456789/21/1").unwrap_err().contains("check digit"));
        assert!(parse("https://id.gs1.org/01/09520123456788/21/1/10/A").is_err(), "qualifiers out of order");
        assert_eq!(parse("(01)09520123456788(10)LOT7").unwrap().to_string(), "(01)09520123456788(10)LOT7");
        assert!(parse("(01)09520123456788(21)a b").is_err());
    }
}
