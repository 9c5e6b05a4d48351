//! SIPREC recording metadata (RFC 7865): who is on the recorded call, which SDP stream
//! (`a=label`) carries whose voice, and what the vendor says about the call.
//!
//! Every layout seen from real session recording clients is parsed into one model,
//! [`Metadata`]: the RFC 7865 namespace `urn:ietf:params:xml:ns:recording:1`; the pre-RFC
//! `urn:ietf:params:xml:ns:recording` (Oracle/Acme, Metaswitch, Ribbon, AudioCodes legacy)
//! with any prefix and the pre-RFC attribute spellings (`id=`, `session=`, `group=`, `<aor>`
//! and `<name>` directly in the participant); and the early-draft
//! `<recording_metadata xmlns="urn:ietf:params:xml:ns:siprec">` (BroadWorks/Webex) with its
//! `<send><id>..</id></send>` form. Times (`start-time`, `associate-time`, ...) are read as
//! RFC 3339, with `+0000` offsets, and as UTC when they carry no zone.
//!
//! Vendor data (elements in other namespaces and everything inside `<extensiondata>`) is
//! kept as JSON ([`Extension`]) and the facts the mapping needs are normalized into
//! [`VendorHints`] (module `vendor`). Partial updates (RFC 7865 §8.2) are applied with
//! [`Metadata::merge`] (module `merge`).
//!
//! The XML is read with quick-xml into a small element tree ([`tree`]) that tolerates
//! mismatched end tags, unquoted attribute values, raw `<` in text and unknown entities (kept
//! verbatim, never expanded; DTDs are ignored, so there is no entity-expansion attack).
//! Element count and depth are capped. It does not compare the metadata with the SDP (the
//! caller knows both) and does not decide who is agent or customer (that is the mapping's job).

mod merge;
pub mod tree;
mod vendor;

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
    /// `<participantstreamassoc>` / `<send>` inside the participant. In a partial update, a
    /// participant named only by an association element is listed too (with just its id).
    pub participants: Vec<MdParticipant>,
    /// `<stream>` elements in document order.
    pub streams: Vec<MdStream>,
    /// Vendor extension data found anywhere in the document, as JSON, in document order.
    pub extensions: Vec<Extension>,
    /// What the vendor data says about the call, normalized across vendors.
    pub vendor: VendorHints,
    /// Things that were tolerated (bad markup, elements without ids, dangling references).
    /// They name elements and ids, never participant names or addresses.
    pub warnings: Vec<String>,
    /// The document as received (lossily decoded as UTF-8) when something had to be
    /// tolerated to read it (`warnings` not empty): what was extracted may be less than what
    /// the SRC meant, so the original is kept for the record. Personal data. [`Metadata::merge`]
    /// leaves it alone: it describes one document, not the merged state.
    pub raw: Option<String>,
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
    /// `jambonz`, `genesys`, `callcenter` (RFC 7865's call-center example), or `other`.
    pub vendor: String,
    /// The id of the group/session/participant/stream it hangs off (its `parent=` or the
    /// element it sits in), if any.
    pub parent: Option<String>,
    /// The data as JSON: an object keyed by the local names of the block's top elements
    /// (the children of `<extensiondata>`, or the foreign element itself), text as strings,
    /// repeated elements as arrays, attributes as `@name` keys, text beside children or
    /// attributes as `#text`. Personal data: never logged above debug.
    pub data: serde_json::Value,
}

/// The vendor facts the mapping uses, normalized. Values are as sent (AORs, numbers, user
/// ids), trimmed; personal data.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct VendorHints {
    /// The vendor's ids for the whole interaction, in document order, each with its source
    /// name: `oracle:ucid`, `genesys:calluuid` (from an Oracle `request-uri`),
    /// `broadworks:extTrackingID`, `broadworks:newExtTrackingID`, `broadworks:callID`,
    /// `ribbon:gcid`, `ribbon:callid`, `audiocodes:GenesysUUID`, `audiocodes:UCID`,
    /// `jambonz:callsid`. Merging keeps the ids seen first ahead of later ones.
    pub call_ids: Vec<(String, String)>,
    /// The party the SRC records for (BroadWorks/Webex `userID`, Metaswitch `recordedParty`):
    /// an AOR, number or user id as sent.
    pub recorded_user: Option<String>,
    /// Whether the recorded user placed the call (`Some(true)`: BroadWorks `origCall`,
    /// Metaswitch callType `originating`) or received it (`Some(false)`: `termCall`,
    /// `terminating`).
    pub recorded_user_originated: Option<bool>,
    /// The calling and called party as the vendor names them: Oracle `callingParty`
    /// true/false (the AOR of the participant it sits in), BroadWorks
    /// `callingPartyNumber`/`calledPartyNumber`, Ribbon `fromhdr`/`tohdr` (the URI only,
    /// without display name and tag), Metaswitch `callingPartyNumber` (calling only).
    pub calling: Option<String>,
    pub called: Option<String>,
    /// The number the caller dialed: Metaswitch `dialedDigits`; Oracle `request-uri` (its
    /// `dnis=` parameter when it has one, as Genesys record URIs do, else its user part);
    /// BroadWorks `origCalledNumber` from the redirect info, else the call center queue's
    /// `acd/acdNumber`, else `calledPartyNumber`.
    pub dialed: Option<String>,
    /// SIP headers the SRC copied into its vendor data (Oracle `<apkt:header label="...">`),
    /// as (header name, value), one entry per value, in document order.
    pub headers: Vec<(String, String)>,
}

/// A recorded communication session (RFC 7865 §6.3).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MdSession {
    /// `session_id` attribute.
    pub id: String,
    /// `<sipSessionID>` values as sent (may carry `;remote=`), whitespace removed.
    pub sip_session_ids: Vec<String>,
    /// `<group-ref>`, the id of the group the session belongs to.
    pub group_ref: Option<String>,
    /// `<start-time>` / `<associate-time>` and `<stop-time>` / `<disassociate-time>` (also
    /// from `<sessionrecordingassoc>`).
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
    /// The session it belongs to (`session=`/`session_id=` attribute or
    /// `participantsessionassoc`).
    pub session_ref: Option<String>,
    /// `<associate-time>`/`<start-time>` and `<disassociate-time>`/`<stop-time>`, in the
    /// participant or its `participantsessionassoc` (a participant that left the call).
    pub associated: Option<jiff::Timestamp>,
    pub disassociated: Option<jiff::Timestamp>,
    /// Whether the document said which streams this participant sends and receives (a
    /// `<send>`/`<recv>` inside it, or a `participantstreamassoc` naming it). When true, empty
    /// `sends` means it sends nothing (on hold, RFC 7865 §8.2); when false, the document
    /// said nothing and a partial update keeps the earlier streams.
    pub streams_given: bool,
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
    /// `<associate-time>`/`<start-time>` and `<disassociate-time>`/`<stop-time>`.
    pub associated: Option<jiff::Timestamp>,
    pub disassociated: Option<jiff::Timestamp>,
}

impl Metadata {
    /// The participant whose voice the stream with this SDP a=label carries (participantstreamassoc <send>, or a <send> directly inside <participant>).
    pub fn participant_sending_label(&self, label: &str) -> Option<&MdParticipant> {
        self.participants_sending_label(label).next()
    }

    /// Every participant that sends on the stream with this SDP a=label, in document order:
    /// more than one for a mixed stream (Metaswitch, BroadWorks) or a conference.
    pub fn participants_sending_label<'s>(
        &'s self,
        label: &str,
    ) -> impl Iterator<Item = &'s MdParticipant> {
        let label = label.trim();
        let stream_ids: Vec<&str> = self
            .streams
            .iter()
            .filter(|s| s.label.as_deref() == Some(label))
            .map(|s| s.id.as_str())
            .collect();
        self.participants
            .iter()
            .filter(move |p| p.sends.iter().any(|s| stream_ids.contains(&s.as_str())))
    }

    /// The recorded call's identity: first session's first sipSessionID.
    pub fn sip_session_id(&self) -> Option<&str> {
        self.sessions
            .first()?
            .sip_session_ids
            .first()
            .map(String::as_str)
    }

    /// The participant with this id.
    pub fn participant(&self, id: &str) -> Option<&MdParticipant> {
        self.participants.iter().find(|p| p.id == id)
    }

    /// The stream with this id.
    pub fn stream(&self, id: &str) -> Option<&MdStream> {
        self.streams.iter().find(|s| s.id == id)
    }

    /// The participant with this id, created at the end of the list if the document has not
    /// described it.
    fn participant_entry(&mut self, id: &str) -> &mut MdParticipant {
        let index = match self.participants.iter().position(|p| p.id == id) {
            Some(i) => i,
            None => {
                self.participants.push(MdParticipant {
                    id: id.to_owned(),
                    ..MdParticipant::default()
                });
                self.participants.len() - 1
            }
        };
        &mut self.participants[index]
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
    md.data_mode = data_mode(&root, &mut md.warnings);

    // Association elements may come before or after what they name.
    let mut assocs = Vec::new();
    for el in &root.children {
        if !is_recording_ns(el) {
            vendor::extension(el, None, None, &mut md);
            continue;
        }
        match el.name.as_str() {
            "group" => read_group(el, &mut md),
            "session" => read_session(el, &mut md),
            "participant" => read_participant(el, &mut md),
            "stream" => read_stream(el, &mut md),
            "participantstreamassoc" | "participantsessionassoc" | "sessionrecordingassoc" => {
                assocs.push(el);
            }
            "extensiondata" => vendor::extension(el, el.attr_any(&["parent"]), None, &mut md),
            // datamode was read above; <recording> (BroadWorks requestor/type) and unknown
            // recording-namespace elements carry nothing the recorder uses.
            _ => {}
        }
    }
    for assoc in assocs {
        read_assoc(assoc, &mut md);
    }
    if !md.warnings.is_empty() {
        md.raw = Some(String::from_utf8_lossy(xml).into_owned());
    }
    debug!(
        sessions = md.sessions.len(),
        participants = md.participants.len(),
        streams = md.streams.len(),
        extensions = md.extensions.len(),
        warnings = md.warnings.len(),
        "parsed recording metadata"
    );
    Ok(md)
}

/// `<datamode>` (RFC 7865) or `<dataMode>` (Avaya, BroadWorks, early drafts), any case.
fn data_mode(root: &tree::Element, warnings: &mut Vec<String>) -> DataMode {
    let Some(value) = root
        .children
        .iter()
        .find(|c| c.name.eq_ignore_ascii_case("datamode"))
        .and_then(tree::Element::text)
    else {
        return DataMode::Complete;
    };
    if value.eq_ignore_ascii_case("partial") {
        DataMode::Partial
    } else {
        if !value.eq_ignore_ascii_case("complete") {
            warnings.push("unknown datamode read as complete".to_owned());
        }
        DataMode::Complete
    }
}

fn read_group(el: &tree::Element, md: &mut Metadata) {
    let id = el.attr_any(&["group_id", "id"]);
    if md.group_id.is_none() {
        md.group_id = id.map(str::to_owned);
    }
    element_extensions(el, id, None, md);
}

fn read_session(el: &tree::Element, md: &mut Metadata) {
    let Some(id) = required_id(el, &["session_id", "id"], &mut md.warnings) else {
        return;
    };
    let session = MdSession {
        id: id.clone(),
        // Chime's documentation wraps the value across lines; no SIP session id has blanks.
        sip_session_ids: el
            .texts("sipSessionID")
            .map(|t| t.split_whitespace().collect())
            .collect(),
        group_ref: el
            .child_text("group-ref")
            .or_else(|| el.attr_any(&["group"]))
            .map(str::to_owned),
        start: time(el, &["start-time", "associate-time"], &mut md.warnings),
        stop: time(el, &["stop-time", "disassociate-time"], &mut md.warnings),
    };
    match md.sessions.iter_mut().find(|s| s.id == id) {
        Some(existing) => merge::session(existing, &session),
        None => md.sessions.push(session),
    }
    element_extensions(el, Some(&id), None, md);
}

fn read_participant(el: &tree::Element, md: &mut Metadata) {
    let Some(id) = required_id(el, &["participant_id", "id"], &mut md.warnings) else {
        return;
    };
    let name_id = el.child("nameID");
    let mut name = name_id
        .and_then(|n| n.child_text("name"))
        .or_else(|| el.child_text("name"));
    // A typo'd name tag (`<naSRCme>Alice</name>` in Amazon's documentation) is still the
    // only text-bearing child of nameID.
    if name.is_none()
        && let Some([only]) = name_id.map(|n| n.children.as_slice())
        && let Some(text) = only.text()
    {
        md.warnings.push(format!(
            "<{}> in <nameID> of participant {id} read as <name>",
            only.name
        ));
        name = Some(text);
    }
    let has_streams = el
        .children
        .iter()
        .any(|c| matches!(c.name.as_str(), "send" | "recv"));
    let participant = MdParticipant {
        id: id.clone(),
        aor: name_id
            .and_then(|n| n.attr_any(&["aor"]))
            .or_else(|| el.child_text("aor"))
            .map(str::to_owned),
        name: name.map(str::to_owned),
        sends: stream_refs(el, "send"),
        receives: stream_refs(el, "recv"),
        session_ref: el.attr_any(&["session", "session_id"]).map(str::to_owned),
        associated: time(el, &["associate-time", "start-time"], &mut md.warnings),
        disassociated: time(el, &["disassociate-time", "stop-time"], &mut md.warnings),
        streams_given: has_streams,
    };
    let aor = participant.aor.clone();
    merge::participant(md.participant_entry(&id), &participant);
    element_extensions(el, Some(&id), aor.as_deref(), md);
}

fn read_stream(el: &tree::Element, md: &mut Metadata) {
    let Some(id) = required_id(el, &["stream_id", "id"], &mut md.warnings) else {
        return;
    };
    let stream = MdStream {
        id: id.clone(),
        label: el.child_text("label").map(str::to_owned),
        session_ref: el.attr_any(&["session_id", "session"]).map(str::to_owned),
        mode: el.child_text("mode").map(str::to_owned),
        associated: time(el, &["associate-time", "start-time"], &mut md.warnings),
        disassociated: time(el, &["disassociate-time", "stop-time"], &mut md.warnings),
    };
    match md.streams.iter_mut().find(|s| s.id == id) {
        Some(existing) => merge::stream(existing, &stream),
        None => md.streams.push(stream),
    }
    element_extensions(el, Some(&id), None, md);
}

/// Applies a `participantstreamassoc`, `participantsessionassoc` or `sessionrecordingassoc`
/// (RFC 7865 §6.6–6.8). In a complete document one that names an unknown participant or
/// session is dropped with a warning; in a partial update it describes an element the
/// earlier documents introduced, so it is kept for [`Metadata::merge`].
fn read_assoc(assoc: &tree::Element, md: &mut Metadata) {
    let partial = md.data_mode == DataMode::Partial;
    let start = time(assoc, &["associate-time", "start-time"], &mut md.warnings);
    let stop = time(assoc, &["disassociate-time", "stop-time"], &mut md.warnings);
    if assoc.name == "sessionrecordingassoc" {
        let Some(sid) = assoc.attr_any(&["session_id", "session"]) else {
            md.warnings
                .push("sessionrecordingassoc without session_id".to_owned());
            return;
        };
        let session = match md.sessions.iter().position(|s| s.id == sid) {
            Some(i) => &mut md.sessions[i],
            None if partial => {
                md.sessions.push(MdSession {
                    id: sid.to_owned(),
                    ..MdSession::default()
                });
                let last = md.sessions.len() - 1;
                &mut md.sessions[last]
            }
            None => {
                md.warnings
                    .push(format!("sessionrecordingassoc names unknown session {sid}"));
                return;
            }
        };
        session.start = session.start.or(start);
        session.stop = session.stop.or(stop);
        return;
    }
    let Some(pid) = assoc.attr_any(&["participant_id", "participant"]) else {
        md.warnings
            .push(format!("{} without participant_id", assoc.name));
        return;
    };
    if !partial && md.participant(pid).is_none() {
        md.warnings
            .push(format!("{} names unknown participant {pid}", assoc.name));
        return;
    }
    let session_ref = assoc
        .attr_any(&["session_id", "session"])
        .map(str::to_owned);
    let sends = stream_refs(assoc, "send");
    let receives = stream_refs(assoc, "recv");
    let p = md.participant_entry(pid);
    if assoc.name == "participantsessionassoc" {
        p.session_ref = p.session_ref.take().or(session_ref);
        p.associated = p.associated.or(start);
        p.disassociated = p.disassociated.or(stop);
        return;
    }
    // RFC 7865 §6.7: the association lists every stream the participant sends and receives,
    // so naming a participant without a <send> says it sends nothing.
    p.streams_given = true;
    for (list, ids) in [(&mut p.sends, sends), (&mut p.receives, receives)] {
        for id in ids {
            if !list.contains(&id) {
                list.push(id);
            }
        }
    }
}

/// Vendor data inside a group, session, participant or stream: elements in other namespaces
/// and `<extensiondata>` blocks.
fn element_extensions(el: &tree::Element, id: Option<&str>, aor: Option<&str>, md: &mut Metadata) {
    for child in &el.children {
        if !is_recording_ns(child) {
            vendor::extension(child, id, aor, md);
        } else if child.name == "extensiondata" {
            let parent = child.attr_any(&["parent"]).or(id);
            vendor::extension(child, parent, aor, md);
        }
    }
}

/// Whether an element is in one of the recording namespaces, or in none (documents that
/// forgot the `xmlns`, and prefixes whose declaration could not be read).
fn is_recording_ns(el: &tree::Element) -> bool {
    el.ns
        .as_deref()
        .is_none_or(|ns| ns == NS_RFC7865 || NS_LEGACY.contains(&ns))
        && !(el.ns.is_none() && el.prefix.as_deref().is_some_and(vendor::is_vendor_prefix))
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

/// The first of the child elements `names` that has text, read as a time: RFC 3339 (`Z`,
/// `-04:00`, and the `+0000` some SRCs send), or UTC when it has no zone (Oracle, Avaya).
/// An unreadable time is a warning and `None`.
fn time(el: &tree::Element, names: &[&str], warnings: &mut Vec<String>) -> Option<jiff::Timestamp> {
    let (name, text) = names
        .iter()
        .find_map(|n| el.child_text(n).map(|t| (*n, t)))?;
    let parsed = text.parse::<jiff::Timestamp>().ok().or_else(|| {
        text.parse::<jiff::civil::DateTime>()
            .ok()
            .and_then(|dt| jiff::tz::TimeZone::UTC.to_timestamp(dt).ok())
    });
    if parsed.is_none() {
        warnings.push(format!("unreadable <{name}> in <{}> ignored", el.name));
    }
    parsed
}

#[cfg(test)]
mod tests;
