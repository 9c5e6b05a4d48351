//! A small lenient XML element tree over quick-xml: element local names with resolved
//! namespace URIs, attributes by local name, and the direct text of each element.
//!
//! It records what it tolerated as warnings, and the first error it could not get past as
//! `fatal` while keeping the elements read so far, so callers can choose how strict to be.
//! Entities other than the five predefined ones and character references are kept as
//! written; DTDs are skipped. It repairs three things real SRCs send: a `<` that does not
//! start a tag (a raw `<sip:...>` URI, `a < b`) is read as text, Oracle's pseudo-CDATA
//! `<!{CDATA{...}}>` is read as CDATA, and a prefix whose declaration quick-xml could not
//! read (an unquoted `xmlns:apkt=...`) is kept as [`Element::prefix`].

use super::{MAX_DEPTH, MAX_ELEMENTS, MetadataError};
use quick_xml::NsReader;
use quick_xml::XmlVersion;
use quick_xml::escape::resolve_predefined_entity;
use quick_xml::events::{BytesStart, Event};
use quick_xml::name::ResolveResult;

/// One element.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Element {
    /// Namespace URI, if the element is in one.
    pub ns: Option<String>,
    /// The prefix as written (`apkt` in `<apkt:ucid>`), if any. Lets vendor data be told
    /// apart when its namespace declaration could not be read.
    pub prefix: Option<String>,
    /// Local name (prefix removed).
    pub name: String,
    /// Attributes as (local name, value), namespace declarations excluded.
    pub attrs: Vec<(String, String)>,
    /// Child elements in document order.
    pub children: Vec<Element>,
    /// The element's own text (not its children's), concatenated, untrimmed.
    pub text: String,
}

impl Element {
    /// The value of the first attribute present among `names` (local names).
    pub fn attr_any(&self, names: &[&str]) -> Option<&str> {
        names.iter().find_map(|n| {
            self.attrs
                .iter()
                .find(|(k, _)| k == n)
                .map(|(_, v)| v.trim())
                .filter(|v| !v.is_empty())
        })
    }

    /// Children with this local name, in any namespace.
    pub fn children_named<'s>(&'s self, name: &'s str) -> impl Iterator<Item = &'s Element> {
        self.children.iter().filter(move |c| c.name == name)
    }

    /// The first child with this local name.
    pub fn child(&self, name: &str) -> Option<&Element> {
        self.children.iter().find(|c| c.name == name)
    }

    /// The trimmed text, if not empty.
    pub fn text(&self) -> Option<&str> {
        Some(self.text.trim()).filter(|t| !t.is_empty())
    }

    /// The trimmed, non-empty text of the first child with this name that has text.
    pub fn child_text(&self, name: &str) -> Option<&str> {
        self.children
            .iter()
            .filter(|c| c.name == name)
            .find_map(Element::text)
    }

    /// The non-empty texts of all children with this name.
    pub fn texts<'s>(&'s self, name: &'s str) -> impl Iterator<Item = &'s str> {
        self.children_named(name).filter_map(Element::text)
    }

    /// The first element with this local name in document order, this one included.
    pub fn find(&self, name: &str) -> Option<&Element> {
        if self.name == name {
            return Some(self);
        }
        self.children.iter().find_map(|c| c.find(name))
    }

    /// The trimmed, non-empty text of the first element with this name that has text,
    /// searching the whole subtree.
    pub fn find_text(&self, name: &str) -> Option<&str> {
        if self.name == name
            && let Some(t) = self.text()
        {
            return Some(t);
        }
        self.children.iter().find_map(|c| c.find_text(name))
    }
}

/// A parsed document, possibly incomplete.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Document {
    /// The root element (complete up to where reading stopped).
    pub root: Option<Element>,
    /// The error that stopped reading, if the document is not well-formed enough.
    pub fatal: Option<String>,
    /// Problems that were tolerated.
    pub warnings: Vec<String>,
}

/// Reads a document. Only the element caps are errors; malformed XML is reported in
/// [`Document::fatal`].
pub fn parse(xml: &[u8]) -> Result<Document, MetadataError> {
    let text = String::from_utf8_lossy(xml);
    let mut doc = Document::default();
    if matches!(text, std::borrow::Cow::Owned(_)) {
        doc.warnings.push("metadata is not valid UTF-8".to_owned());
    }
    let text = repair_pseudo_cdata(&text, &mut doc.warnings);
    let mut reader = NsReader::from_str(&text);
    let config = reader.config_mut();
    // Leniency: a wrong end tag closes the nearest matching open element (see below)
    // instead of failing the document.
    config.check_end_names = false;
    config.allow_unmatched_ends = true;
    // A bare `&` (an unescaped "AT&T" in a display name) is kept as text.
    config.allow_dangling_amp = true;

    let mut stack: Vec<Element> = Vec::new();
    let mut count = 0usize;
    loop {
        let event = match reader.read_resolved_event() {
            Ok((ns, event)) => (ns, event),
            Err(e) => {
                doc.fatal = Some(format!("{e} at byte {}", reader.error_position()));
                break;
            }
        };
        match event {
            (ns, Event::Start(start)) if !is_tag(&start, &ns) => {
                raw_markup_as_text(&start, ">", &mut stack, &mut doc);
            }
            (ns, Event::Empty(start)) if !is_tag(&start, &ns) => {
                raw_markup_as_text(&start, "/>", &mut stack, &mut doc);
            }
            (ns, Event::Start(start)) => {
                let ns = namespace(&ns, &mut doc.warnings);
                let element = new_element(ns, &start, stack.len(), &mut count, &mut doc.warnings)?;
                stack.push(element);
            }
            (ns, Event::Empty(start)) => {
                let ns = namespace(&ns, &mut doc.warnings);
                let element = new_element(ns, &start, stack.len(), &mut count, &mut doc.warnings)?;
                attach(&mut stack, &mut doc, element);
            }
            (_, Event::End(end)) => {
                let name = end.local_name().as_ref().to_owned();
                end_tag(&name, &mut stack, &mut doc);
            }
            (_, Event::Text(t)) => append_text(&mut stack, &t.xml10_content()),
            (_, Event::CData(t)) => append_text(&mut stack, &t.xml10_content()),
            (_, Event::GeneralRef(r)) => {
                let name = r.xml10_content();
                let resolved = match r.resolve_char_ref() {
                    Ok(Some(c)) => Some(c.to_string()),
                    Ok(None) => resolve_predefined_entity(&name).map(str::to_owned),
                    Err(_) => None,
                };
                let text = resolved.unwrap_or_else(|| {
                    doc.warnings
                        .push(format!("entity &{name}; kept unexpanded"));
                    format!("&{name};")
                });
                append_text(&mut stack, &text);
            }
            (_, Event::Eof) => break,
            // Declarations, comments, processing instructions and DTDs carry nothing we
            // read; a DTD's entity declarations are never applied.
            _ => {}
        }
    }
    if doc.fatal.is_none() && !stack.is_empty() {
        doc.fatal = Some(format!(
            "document ends inside <{}>",
            stack[stack.len() - 1].name
        ));
    }
    while !stack.is_empty() {
        close(&mut stack, &mut doc);
    }
    Ok(doc)
}

/// Oracle SBCs behind Genesys have been seen wrapping a raw URI in `<!{CDATA{...}}>`, which
/// no XML reader accepts; it is read as the CDATA section it was meant to be.
fn repair_pseudo_cdata<'t>(text: &'t str, warnings: &mut Vec<String>) -> std::borrow::Cow<'t, str> {
    const OPEN: &str = "<!{CDATA{";
    const CLOSE: &str = "}}>";
    if !text.contains(OPEN) {
        return std::borrow::Cow::Borrowed(text);
    }
    warnings.push("pseudo-CDATA <!{CDATA{...}}> read as CDATA".to_owned());
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find(OPEN) {
        out.push_str(&rest[..start]);
        out.push_str("<![CDATA[");
        rest = &rest[start + OPEN.len()..];
        match rest.find(CLOSE) {
            Some(end) => {
                out.push_str(&rest[..end]);
                out.push_str("]]>");
                rest = &rest[end + CLOSE.len()..];
            }
            // Unterminated: leave the rest for the reader to report.
            None => break,
        }
    }
    out.push_str(rest);
    std::borrow::Cow::Owned(out)
}

/// Whether a start tag is a tag at all. A name that is not an XML name (`< b`, `<5`,
/// `<sip:a@b;x=y>`) or that uses an undeclared `sip:`/`sips:`/`tel:` prefix is a URI or a
/// comparison someone forgot to escape.
fn is_tag(start: &BytesStart<'_>, ns: &ResolveResult<'_>) -> bool {
    let name = start.name();
    let name = name.as_ref().as_bytes();
    let valid = name
        .first()
        .is_some_and(|&b| b.is_ascii_alphabetic() || b == b'_' || b == b':' || b >= 0x80)
        && name.iter().all(|&b| {
            b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b':') || b >= 0x80
        });
    let uri_prefix =
        matches!(ns, ResolveResult::Unknown(p) if matches!(p.as_str(), "sip" | "sips" | "tel"));
    valid && !uri_prefix
}

/// Keeps a bogus tag as text. The reader took everything up to the next `>` as the tag, which
/// may have swallowed the real end tag that followed (`<name>a < b</name>`); that end tag is
/// still applied.
fn raw_markup_as_text(
    start: &BytesStart<'_>,
    close: &str,
    stack: &mut Vec<Element>,
    doc: &mut Document,
) {
    let raw: &str = start;
    let (text, end) = match raw.find("</") {
        Some(i) => (&raw[..i], Some(raw[i + 2..].trim().trim_end_matches('/'))),
        None => (raw, None),
    };
    doc.warnings.push("unescaped < read as text".to_owned());
    append_text(stack, "<");
    append_text(stack, text);
    match end {
        Some(name) => {
            let local = name.rsplit(':').next().unwrap_or(name);
            end_tag(local, stack, doc);
        }
        None => append_text(stack, close),
    }
}

/// Applies an end tag: closes the nearest open element of that name (or, failing that, of
/// that name in another case), and any unclosed elements inside it.
fn end_tag(name: &str, stack: &mut Vec<Element>, doc: &mut Document) {
    let open = stack.iter().rposition(|e| e.name == name).or_else(|| {
        // `</nameId>` for `<nameID>`: a typo in case only still closes the element.
        let open = stack
            .iter()
            .rposition(|e| e.name.eq_ignore_ascii_case(name))?;
        doc.warnings
            .push(format!("</{name}> closed <{}>", stack[open].name));
        Some(open)
    });
    match open {
        Some(open) => {
            if open + 1 != stack.len() {
                doc.warnings
                    .push(format!("</{name}> closed unclosed elements"));
            }
            while stack.len() > open {
                close(stack, doc);
            }
        }
        None => doc.warnings.push(format!("stray </{name}> ignored")),
    }
}

fn namespace(ns: &ResolveResult<'_>, warnings: &mut Vec<String>) -> Option<String> {
    match ns {
        ResolveResult::Bound(ns) => Some(ns.0.to_owned()),
        ResolveResult::Unbound => None,
        ResolveResult::Unknown(prefix) => {
            warnings.push(format!("undeclared namespace prefix {prefix}"));
            None
        }
    }
}

/// Builds the element for a start tag found `depth` elements deep, counting it against
/// the caps.
fn new_element(
    ns: Option<String>,
    start: &BytesStart<'_>,
    depth: usize,
    count: &mut usize,
    warnings: &mut Vec<String>,
) -> Result<Element, MetadataError> {
    *count += 1;
    if *count > MAX_ELEMENTS {
        return Err(MetadataError::TooManyElements {
            limit: MAX_ELEMENTS,
        });
    }
    if depth >= MAX_DEPTH {
        return Err(MetadataError::TooDeep { limit: MAX_DEPTH });
    }
    let qname = start.name();
    let name = qname.local_name().as_ref().to_owned();
    let prefix = qname.prefix().map(|p| p.as_ref().to_owned());
    let mut attrs = Vec::new();
    // HTML-style attribute parsing accepts unquoted values and valueless attributes.
    for attr in start.html_attributes() {
        let Ok(attr) = attr else {
            warnings.push(format!("bad attribute syntax in <{name}>"));
            break;
        };
        let key = attr.key;
        if key.as_namespace_binding().is_some() {
            continue;
        }
        let value = match attr.normalized_value(XmlVersion::Implicit1_0) {
            Ok(v) => v.into_owned(),
            Err(_) => {
                warnings.push(format!("attribute value in <{name}> kept unescaped"));
                attr.value.into_owned()
            }
        };
        attrs.push((key.local_name().as_ref().to_owned(), value));
    }
    Ok(Element {
        ns,
        prefix,
        name,
        attrs,
        ..Element::default()
    })
}

fn append_text(stack: &mut [Element], text: &str) {
    if let Some(top) = stack.last_mut() {
        top.text.push_str(text);
    }
}

/// Pops the innermost open element and attaches it to its parent.
fn close(stack: &mut Vec<Element>, doc: &mut Document) {
    if let Some(element) = stack.pop() {
        attach(stack, doc, element);
    }
}

/// Adds a finished element to the open parent, or makes it the root.
fn attach(stack: &mut [Element], doc: &mut Document, element: Element) {
    match stack.last_mut() {
        Some(parent) => parent.children.push(element),
        None if doc.root.is_none() => doc.root = Some(element),
        None => doc.warnings.push(format!(
            "second top-level element <{}> ignored",
            element.name
        )),
    }
}
