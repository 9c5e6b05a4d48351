//! SIPREC recording metadata (RFC 7865): who is on the recorded call and which SDP stream
//! (`a=label`) carries whose voice.
//!
//! Reads the RFC 7865 namespace `urn:ietf:params:xml:ns:recording:1`, the pre-RFC
//! `urn:ietf:params:xml:ns:recording` (Oracle/Acme, Metaswitch, Ribbon), any prefix, and the
//! pre-RFC attribute spellings (`id=`, `session=`, `group=`). Also the early-draft
//! `<recording_metadata xmlns="urn:ietf:params:xml:ns:siprec">` (BroadWorks), whose
//! `<send><id>..</id></send>` form is understood. Elements in other namespaces (vendor
//! extensions, `<extensiondata>`) are skipped.
//!
//! The XML is read with quick-xml into a small element tree ([`tree`]) that tolerates
//! mismatched end tags, unquoted attribute values and unknown entities (kept verbatim, never
//! expanded; DTDs are ignored, so there is no entity-expansion attack). Element count and depth
//! are capped. It does not merge partial updates (RFC 7865 §8.2) into earlier metadata, and
//! reads no times.

use tracing::debug;

/// Why a metadata document could not be read.
#[derive(thiserror::Error, Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum MetadataError {
    /// The XML is not well-formed past what the reader tolerates (message from quick-xml or
    /// the tree builder, with a byte offset).
    #[error("metadata XML is malformed: {0}")]
    Xml(String),
    /// The document has more elements than [`MAX_ELEMENTS`].
    #[error("metadata has more than {limit} elements")]
    TooManyElements {
        /// The cap that was hit.
        limit: usize,
    },
    /// Elements nest deeper than [`MAX_DEPTH`].
    #[error("metadata nests deeper than {limit} elements")]
    TooDeep {
        /// The cap that was hit.
        limit: usize,
    },
    /// The root element is not a recording metadata element; the value names it.
    #[error("root element {0} is not SIPREC recording metadata")]
    NotRecording(String),
}

/// Cap on elements per document: a large conference is a few hundred.
pub const MAX_ELEMENTS: usize = 10_000;
/// Cap on element nesting: RFC 7865 documents nest about 4 deep, extensions a few more.
pub const MAX_DEPTH: usize = 32;

/// RFC 7865 §9 namespace.
const NS_RFC7865: &str = "urn:ietf:params:xml:ns:recording:1";
/// Namespaces of documents that predate RFC 7865 (draft-ietf-siprec-metadata and earlier).
const NS_LEGACY: [&str; 2] = [
    "urn:ietf:params:xml:ns:recording",
    "urn:ietf:params:xml:ns:siprec",
];

/// What the recorder needs from one metadata document: every layout (RFC 7865, the pre-RFC
/// Oracle/Metaswitch/Ribbon/AudioCodes forms, the BroadWorks early draft) parsed into this one
/// model.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Metadata {
    /// `<dataMode>`/`<datamode>`: a complete snapshot or a partial update (RFC 7865 §8.2).
    pub data_mode: DataMode,
    /// The first `<group>`'s id (the recording group: RFC 7865 §6.2).
    pub group_id: Option<String>,
    /// `<session>` elements in document order.
    pub sessions: Vec<MdSession>,
    /// `<participant>` elements in document order, with their streams merged in from
    /// `<participantstreamassoc>` / `<send>` inside the participant.
    pub participants: Vec<MdParticipant>,
    /// `<stream>` elements in document order.
    pub streams: Vec<MdStream>,
    /// Vendor extension data found anywhere in the document, as JSON.
    pub extensions: Vec<Extension>,
    /// What the vendor data says about the call, normalized across vendors.
    pub vendor: VendorHints,
    /// Things that were tolerated (bad markup, elements without ids, dangling references).
    /// They name elements and ids, never participant names or addresses.
    pub warnings: Vec<String>,
}

/// RFC 7865 §8.2 `datamode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DataMode {
    /// A full snapshot (the default when the element is absent).
    #[default]
    Complete,
    /// Only what changed; merged into the earlier state with [`Metadata::merge`].
    Partial,
}

/// A block of vendor data (`<extensiondata>`, `apkt:` elements, `broadWorksRecordingMetadata`,
/// `metaswitchRecordingMetadata`, Ribbon `callData`, AudioCodes `ac:` tags, ...).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Extension {
    /// Short vendor name: `oracle`, `broadworks`, `metaswitch`, `ribbon`, `audiocodes`,
    /// `jambonz`, `chime`, or `other`.
    pub vendor: String,
    /// The id of the group/session/participant/stream it hangs off (its `parent=` or the
    /// element it sits in), if any.
    pub parent: Option<String>,
    /// The data as JSON: element local names as keys, text as strings, repeated elements as
    /// arrays, attributes as `@name` keys. Personal data: never logged above debug.
    pub data: serde_json::Value,
}

/// The vendor facts the mapping uses, normalized. Values are as sent (AORs, numbers, user
/// ids); personal data.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct VendorHints {
    /// The vendor's id for the whole interaction, in document order, each with its source
    /// name (`oracle:ucid`, `broadworks:extTrackingID`, `ribbon:gcid`, `audiocodes:GenesysUUID`,
    /// `jambonz:callSid`, ...).
    pub call_ids: Vec<(String, String)>,
    /// The party the SRC records for (BroadWorks/Webex `userID`, Metaswitch `recordedParty`,
    /// ...): an AOR, number or user id as sent.
    pub recorded_user: Option<String>,
    /// Whether the recorded user placed the call (`Some(true)`, BroadWorks `origCall`,
    /// Metaswitch outgoing callType) or received it (`Some(false)`).
    pub recorded_user_originated: Option<bool>,
    /// The calling and called party as the vendor names them (Oracle `callingParty`,
    /// BroadWorks calling/called numbers, Ribbon `fromhdr`/`tohdr`, Metaswitch
    /// `callingPartyNumber`).
    pub calling: Option<String>,
    pub called: Option<String>,
    /// The number the caller dialed (Metaswitch `dialedDigits`, Oracle `request-uri`, BroadWorks
    /// called number before redirection), if the vendor says.
    pub dialed: Option<String>,
}
/// A recorded communication session (RFC 7865 §6.3).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MdSession {
    /// `session_id` attribute.
    pub id: String,
    /// `<sipSessionID>` values as sent (may carry `;remote=`).
    pub sip_session_ids: Vec<String>,
    /// `<group-ref>`, the id of the group the session belongs to.
    pub group_ref: Option<String>,
    /// `<start-time>` / `<associate-time>` and `<stop-time>` / `<disassociate-time>`.
    pub start: Option<jiff::Timestamp>,
    pub stop: Option<jiff::Timestamp>,
}

/// A participant (RFC 7865 §6.5). `aor` and `name` are personal data.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MdParticipant {
    /// `participant_id` attribute.
    pub id: String,
    /// Address of record (`<nameID aor=>` or `<aor>`), as sent: not always a SIP URI.
    pub aor: Option<String>,
    /// Display name (`<nameID><name>` or `<name>`).
    pub name: Option<String>,
    /// Ids of the streams this participant sends (its voice).
    pub sends: Vec<String>,
    /// Ids of the streams this participant receives.
    pub receives: Vec<String>,
    /// The session it belongs to (`session=` attribute or `participantsessionassoc`).
    pub session_ref: Option<String>,
    /// `<associate-time>` and `<disassociate-time>` (a participant that left the call).
    pub associated: Option<jiff::Timestamp>,
    pub disassociated: Option<jiff::Timestamp>,
}

/// A media stream (RFC 7865 §6.4).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MdStream {
    /// `stream_id` attribute.
    pub id: String,
    /// `<label>`: matches the SDP `a=label` of the m-line that carries the stream.
    pub label: Option<String>,
    /// `session_id` attribute: the session the stream belongs to.
    pub session_ref: Option<String>,
    /// `<mode>` (`separate`/`mixed`), as sent.
    pub mode: Option<String>,
}

impl Metadata {
    /// The participant whose voice the stream with this SDP a=label carries (participantstreamassoc <send>, or a <send> directly inside <participant>).
    pub fn participant_sending_label(&self, label: &str) -> Option<&MdParticipant> {
        let label = label.trim();
        let stream_ids: Vec<&str> = self
            .streams
            .iter()
            .filter(|s| s.label.as_deref() == Some(label))
            .map(|s| s.id.as_str())
            .collect();
        self.participants
            .iter()
            .find(|p| p.sends.iter().any(|s| stream_ids.contains(&s.as_str())))
    }

    /// The recorded call's identity: first session's first sipSessionID.
    pub fn sip_session_id(&self) -> Option<&str> {
        self.sessions
            .first()?
            .sip_session_ids
            .first()
            .map(String::as_str)
    }
}

/// Parses one `application/rs-metadata+xml` document.
pub fn parse_metadata(xml: &[u8]) -> Result<Metadata, MetadataError> {
    let doc = tree::parse(xml)?;
    if let Some(fatal) = doc.fatal {
        return Err(MetadataError::Xml(fatal));
    }
    let root = doc
        .root
        .ok_or_else(|| MetadataError::Xml("no root element".to_owned()))?;
    let mut md = Metadata {
        warnings: doc.warnings,
        ..Metadata::default()
    };
    if !matches!(root.name.as_str(), "recording" | "recording_metadata") || !is_recording_ns(&root)
    {
        return Err(MetadataError::NotRecording(format!(
            "<{}> in namespace {}",
            root.name,
            root.ns.as_deref().unwrap_or("(none)")
        )));
    }
    if root.ns.is_none() {
        md.warnings
            .push("recording element has no namespace".to_owned());
    }

    // participantstreamassoc may come before or after the participant it names.
    let mut stream_assocs = Vec::new();
    for el in root.children.iter().filter(|c| is_recording_ns(c)) {
        match el.name.as_str() {
            "group" if md.group_id.is_none() => {
                md.group_id = el.attr_any(&["group_id", "id"]).map(str::to_owned);
            }
            "session" => {
                let Some(id) = required_id(el, &["session_id", "id"], &mut md.warnings) else {
                    continue;
                };
                md.sessions.push(MdSession {
                    id,
                    sip_session_ids: el.texts("sipSessionID").map(str::to_owned).collect(),
                    group_ref: el
                        .child_text("group-ref")
                        .or_else(|| el.attr_any(&["group"]))
                        .map(str::to_owned),
                    ..MdSession::default()
                });
            }
            "participant" => {
                let Some(id) = required_id(el, &["participant_id", "id"], &mut md.warnings) else {
                    continue;
                };
                let name_id = el.child("nameID");
                md.participants.push(MdParticipant {
                    id,
                    aor: name_id
                        .and_then(|n| n.attr_any(&["aor"]))
                        .or_else(|| el.child_text("aor"))
                        .map(str::to_owned),
                    name: name_id
                        .and_then(|n| n.child_text("name"))
                        .or_else(|| el.child_text("name"))
                        .map(str::to_owned),
                    sends: stream_refs(el, "send"),
                    receives: stream_refs(el, "recv"),
                    ..MdParticipant::default()
                });
            }
            "stream" => {
                let Some(id) = required_id(el, &["stream_id", "id"], &mut md.warnings) else {
                    continue;
                };
                md.streams.push(MdStream {
                    id,
                    label: el.child_text("label").map(str::to_owned),
                    session_ref: el.attr_any(&["session_id", "session"]).map(str::to_owned),
                    ..MdStream::default()
                });
            }
            "participantstreamassoc" => stream_assocs.push(el),
            _ => {}
        }
    }

    for assoc in stream_assocs {
        let Some(pid) = assoc.attr_any(&["participant_id"]) else {
            md.warnings
                .push("participantstreamassoc without participant_id".to_owned());
            continue;
        };
        let Some(p) = md.participants.iter_mut().find(|p| p.id == pid) else {
            md.warnings.push(format!(
                "participantstreamassoc names unknown participant {pid}"
            ));
            continue;
        };
        for (list, tag) in [(&mut p.sends, "send"), (&mut p.receives, "recv")] {
            for id in stream_refs(assoc, tag) {
                if !list.contains(&id) {
                    list.push(id);
                }
            }
        }
    }
    debug!(
        sessions = md.sessions.len(),
        participants = md.participants.len(),
        streams = md.streams.len(),
        warnings = md.warnings.len(),
        "parsed recording metadata"
    );
    Ok(md)
}

/// Whether an element is in one of the recording namespaces, or in none (documents that
/// forgot the `xmlns`).
fn is_recording_ns(el: &tree::Element) -> bool {
    el.ns
        .as_deref()
        .is_none_or(|ns| ns == NS_RFC7865 || NS_LEGACY.contains(&ns))
}

/// The element's id from the first of `names` present, or a warning when it has none.
fn required_id(el: &tree::Element, names: &[&str], warnings: &mut Vec<String>) -> Option<String> {
    let id = el.attr_any(names).map(str::to_owned);
    if id.is_none() {
        warnings.push(format!(
            "<{}> without {} ignored",
            el.name,
            names.join(" or ")
        ));
    }
    id
}

/// Stream ids from `<send>`/`<recv>` children: their text (RFC 7865) or their `<id>` child
/// (early draft).
fn stream_refs(el: &tree::Element, tag: &str) -> Vec<String> {
    el.children_named(tag)
        .filter_map(|c| c.text().or_else(|| c.child_text("id")))
        .map(str::to_owned)
        .collect()
}

pub mod tree {
    //! A small lenient XML element tree over quick-xml: element local names with resolved
    //! namespace URIs, attributes by local name, and the direct text of each element.
    //!
    //! It records what it tolerated as warnings, and the first error it could not get past as
    //! `fatal` while keeping the elements read so far, so callers can choose how strict to be.
    //! Entities other than the five predefined ones and character references are kept as
    //! written; DTDs are skipped.

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
                Ok((ns, event)) => (namespace(&ns, &mut doc.warnings), event),
                Err(e) => {
                    doc.fatal = Some(format!("{e} at byte {}", reader.error_position()));
                    break;
                }
            };
            match event {
                (ns, Event::Start(start)) => {
                    let element =
                        new_element(ns, &start, stack.len(), &mut count, &mut doc.warnings)?;
                    stack.push(element);
                }
                (ns, Event::Empty(start)) => {
                    let element =
                        new_element(ns, &start, stack.len(), &mut count, &mut doc.warnings)?;
                    attach(&mut stack, &mut doc, element);
                }
                (_, Event::End(end)) => {
                    let name = end.local_name().as_ref().to_owned();
                    match stack.iter().rposition(|e| e.name == name) {
                        Some(open) => {
                            if open + 1 != stack.len() {
                                doc.warnings
                                    .push(format!("</{name}> closed unclosed elements"));
                            }
                            while stack.len() > open {
                                close(&mut stack, &mut doc);
                            }
                        }
                        None => doc.warnings.push(format!("stray </{name}> ignored")),
                    }
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
        let name = start.local_name().as_ref().to_owned();
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
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 7865 style, two participants each sending one labelled stream.
    const TWO_PARTIES: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<recording xmlns="urn:ietf:params:xml:ns:recording:1">
  <datamode>complete</datamode>
  <group group_id="grp-AAA=">
    <associate-time>2024-02-01T10:00:00Z</associate-time>
  </group>
  <session session_id="sess-BBB=">
    <sipSessionID>4c1e7f;remote=9a0b22</sipSessionID>
    <group-ref>grp-AAA=</group-ref>
  </session>
  <participant participant_id="p-caller">
    <nameID aor="sip:+15550100@198.51.100.20"><name xml:lang="en">Caller &amp; Co</name></nameID>
  </participant>
  <participant participant_id="p-agent">
    <nameID aor="sip:agent42@198.51.100.30"/>
  </participant>
  <stream stream_id="s-one" session_id="sess-BBB="><label>1</label></stream>
  <stream stream_id="s-two" session_id="sess-BBB="><label>2</label></stream>
  <participantstreamassoc participant_id="p-caller">
    <send>s-one</send><recv>s-two</recv>
  </participantstreamassoc>
  <participantstreamassoc participant_id="p-agent">
    <send>s-two</send><recv>s-one</recv>
  </participantstreamassoc>
</recording>"#;

    #[test]
    fn two_participants_map_to_labels_one_and_two() {
        let md = parse_metadata(TWO_PARTIES.as_bytes()).unwrap();
        assert_eq!(md.group_id.as_deref(), Some("grp-AAA="));
        assert_eq!(md.sip_session_id(), Some("4c1e7f;remote=9a0b22"));
        assert_eq!(md.sessions[0].group_ref.as_deref(), Some("grp-AAA="));
        let caller = md.participant_sending_label("1").unwrap();
        assert_eq!(caller.id, "p-caller");
        assert_eq!(caller.aor.as_deref(), Some("sip:+15550100@198.51.100.20"));
        assert_eq!(caller.name.as_deref(), Some("Caller & Co"));
        assert_eq!(caller.receives, ["s-two"]);
        let agent = md.participant_sending_label("2").unwrap();
        assert_eq!(
            (agent.id.as_str(), agent.name.as_deref()),
            ("p-agent", None)
        );
        assert_eq!(md.participant_sending_label("3"), None);
        assert_eq!(md.streams[1].session_ref.as_deref(), Some("sess-BBB="));
        assert!(md.warnings.is_empty(), "{:?}", md.warnings);
    }

    #[test]
    fn legacy_namespace_with_send_inside_participant_and_id_attributes() {
        let xml = r#"<recording xmlns='urn:ietf:params:xml:ns:recording'>
  <session id="S1"><associate-time>2024-01-01T00:00:00</associate-time></session>
  <participant id="P1" session="S1">
    <nameID aor="sip:7001@192.0.2.10"><name>7001</name></nameID>
    <send>ST1</send>
    <extensiondata xmlns:apkt="http://vendor.example/ext"><apkt:callingParty>true</apkt:callingParty></extensiondata>
  </participant>
  <participant id="P2" session="S1"><nameID aor="sip:7002@192.0.2.11"/><send>ST2</send></participant>
  <stream id="ST1" session="S1"><label>33554433</label><mode>separate</mode></stream>
  <stream id="ST2" session="S1"><label>33554434</label></stream>
</recording>"#;
        let md = parse_metadata(xml.as_bytes()).unwrap();
        assert_eq!(md.sessions[0].id, "S1");
        assert_eq!(md.sip_session_id(), None);
        assert_eq!(md.participant_sending_label("33554434").unwrap().id, "P2");
        assert_eq!(md.streams[0].session_ref.as_deref(), Some("S1"));
    }

    #[test]
    fn prefixed_elements_are_read_and_foreign_namespaces_skipped() {
        let xml = r#"<x:recording xmlns:x="urn:ietf:params:xml:ns:recording:1" xmlns:v="http://vendor.example">
  <x:participant participant_id="a"><x:nameID aor="100@host"><x:name> </x:name></x:nameID></x:participant>
  <v:participant participant_id="ghost"/>
  <x:stream stream_id="s"><x:label>0</x:label></x:stream>
  <x:participantstreamassoc participant_id="a"><x:send>s</x:send></x:participantstreamassoc>
</x:recording>"#;
        let md = parse_metadata(xml.as_bytes()).unwrap();
        assert_eq!(md.participants.len(), 1);
        assert_eq!(md.participants[0].name, None);
        assert_eq!(
            md.participant_sending_label("0").unwrap().aor.as_deref(),
            Some("100@host")
        );
    }

    #[test]
    fn early_draft_siprec_namespace_with_send_id_children() {
        let xml = r#"<recording_metadata xmlns="urn:ietf:params:xml:ns:siprec">
  <group id="urn:uuid:g1"/>
  <session id="urn:uuid:s1" group="urn:uuid:g1"/>
  <participant id="urn:uuid:p1" session="urn:uuid:s1"><aor>sip:caller</aor><send><id>urn:uuid:st1</id></send></participant>
  <stream id="urn:uuid:st1" session="urn:uuid:s1"><label>1</label></stream>
</recording_metadata>"#;
        let md = parse_metadata(xml.as_bytes()).unwrap();
        assert_eq!(md.group_id.as_deref(), Some("urn:uuid:g1"));
        assert_eq!(md.sessions[0].group_ref.as_deref(), Some("urn:uuid:g1"));
        assert_eq!(
            md.participant_sending_label("1").unwrap().aor.as_deref(),
            Some("sip:caller")
        );
    }

    #[test]
    fn tolerated_markup_problems_become_warnings() {
        let xml = "<recording xmlns=\"urn:ietf:params:xml:ns:recording:1\">\
<participant participant_id=p1><nameID aor=\"sip:a@b\"><name>A &custom; B & C</name></nameid></participant>\
<stream stream_id=\"s1\"><label>1</label></stream>\
<stream><label>9</label></stream>\
<participantstreamassoc participant_id=\"p1\"><send>s1</send></participantstreamassoc>\
<participantstreamassoc participant_id=\"nobody\"><send>s1</send></participantstreamassoc>\
</recording>";
        let md = parse_metadata(xml.as_bytes()).unwrap();
        let p = md.participant_sending_label("1").unwrap();
        assert_eq!(p.id, "p1");
        assert_eq!(p.name.as_deref(), Some("A &custom; B & C"));
        assert_eq!(md.streams.len(), 1);
        let warnings = md.warnings.join("|");
        for expected in [
            "&custom;",
            "</participant> closed",
            "<stream> without stream_id",
            "unknown participant nobody",
        ] {
            assert!(
                warnings.contains(expected),
                "missing {expected:?} in {warnings}"
            );
        }
    }

    #[test]
    fn doctype_entities_are_not_expanded() {
        let xml = r#"<?xml version="1.0"?>
<!DOCTYPE recording [<!ENTITY big "expanded!">]>
<recording xmlns="urn:ietf:params:xml:ns:recording:1"><session session_id="s"><sipSessionID>&big;</sipSessionID></session></recording>"#;
        let md = parse_metadata(xml.as_bytes()).unwrap();
        assert_eq!(md.sip_session_id(), Some("&big;"));
    }

    #[test]
    fn malformed_or_foreign_documents_are_errors() {
        assert!(matches!(parse_metadata(b""), Err(MetadataError::Xml(_))));
        assert!(matches!(
            parse_metadata(b"completeSRCselective"),
            Err(MetadataError::Xml(_))
        ));
        assert!(matches!(
            parse_metadata(b"<recording xmlns='urn:ietf:params:xml:ns:recording:1'><session"),
            Err(MetadataError::Xml(_))
        ));
        assert!(matches!(
            parse_metadata(b"<recording xmlns='urn:ietf:params:xml:ns:recording:1'><session session_id='a'>"),
            Err(MetadataError::Xml(e)) if e.contains("ends inside <session>")
        ));
        assert!(matches!(
            parse_metadata(b"<html xmlns='http://www.w3.org/1999/xhtml'/>"),
            Err(MetadataError::NotRecording(_))
        ));
        assert!(matches!(
            parse_metadata(b"<recording xmlns='http://example.com/other'/>"),
            Err(MetadataError::NotRecording(_))
        ));
    }

    #[test]
    fn element_count_and_depth_are_capped() {
        let deep = format!("<recording>{}", "<a>".repeat(MAX_DEPTH));
        assert_eq!(
            parse_metadata(deep.as_bytes()),
            Err(MetadataError::TooDeep { limit: MAX_DEPTH })
        );
        let wide = format!("<recording>{}</recording>", "<a/>".repeat(MAX_ELEMENTS));
        assert_eq!(
            parse_metadata(wide.as_bytes()),
            Err(MetadataError::TooManyElements {
                limit: MAX_ELEMENTS
            })
        );
        let just_fits = format!("<recording>{}</recording>", "<a/>".repeat(MAX_ELEMENTS - 1));
        assert!(parse_metadata(just_fits.as_bytes()).is_ok());
    }
}
