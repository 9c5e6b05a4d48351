//! Vendor data in recording metadata: converts each block to JSON ([`Extension`]) and reads
//! the facts the mapping needs into [`VendorHints`].
//!
//! A block is an `<extensiondata>` element (namespaced contents or not: Oracle `apkt:`,
//! BroadWorks, Metaswitch, jambonz) or an element in a namespace other than the recording
//! ones (Ribbon `callData`, AudioCodes `ac:` tags, RFC 7865 §8.1 examples). The vendor is
//! told by namespace URI, by prefix when the namespace declaration was unreadable, or by the
//! element name. It does not decide which hint wins: the mapping does.

use serde_json::{Map, Value};

use super::tree::Element;
use super::{Extension, Metadata, VendorHints};

/// Prefixes vendors bind to their namespaces. Used when the declaration itself could not be
/// read (Oracle's `xmlns:apkt=http:/...` without quotes).
const VENDOR_PREFIXES: [(&str, &str); 3] =
    [("apkt", "oracle"), ("ac", "audiocodes"), ("jb", "jambonz")];

/// Whether `prefix` is one a vendor uses for its extension elements.
pub(super) fn is_vendor_prefix(prefix: &str) -> bool {
    VENDOR_PREFIXES.iter().any(|(p, _)| *p == prefix)
}

/// Records one block of vendor data. `parent` is the id of the element it belongs to; `aor`
/// is the AOR of the participant it sits in, if any (Oracle's `callingParty` describes it).
pub(super) fn extension(el: &Element, parent: Option<&str>, aor: Option<&str>, md: &mut Metadata) {
    let vendor = vendor_of(el);
    let data = if el.name == "extensiondata" {
        let mut map = Map::new();
        for child in &el.children {
            insert(&mut map, &child.name, to_json(child));
        }
        Value::Object(map)
    } else {
        let mut map = Map::new();
        map.insert(el.name.clone(), to_json(el));
        Value::Object(map)
    };
    hints(vendor, el, aor, &mut md.vendor);
    md.extensions.push(Extension {
        vendor: vendor.to_owned(),
        parent: parent.map(str::to_owned),
        data,
    });
}

/// The vendor of a block: its own namespace, prefix or name, else the first descendant's.
fn vendor_of(el: &Element) -> &'static str {
    let ns = el.ns.as_deref().unwrap_or_default().to_ascii_lowercase();
    let by_prefix = el
        .prefix
        .as_deref()
        .and_then(|p| VENDOR_PREFIXES.iter().find(|(vp, _)| *vp == p))
        .map(|(_, v)| *v);
    let own = if ns.contains("acmepacket") {
        Some("oracle")
    } else if ns.contains("broadsoft") || el.name == "broadWorksRecordingMetadata" {
        Some("broadworks")
    } else if ns.contains("metaswitch") || el.name == "metaswitchRecordingMetadata" {
        Some("metaswitch")
    } else if ns == "urn:ietf:params:xml:ns:calldata" {
        Some("ribbon")
    } else if ns.contains("audiocodes") {
        Some("audiocodes")
    } else if ns.contains("jambonz") {
        Some("jambonz")
    } else if ns.contains("genesys") {
        Some("genesys")
    } else if ns == "urn:ietf:params:xml:ns:callcenter" {
        Some("callcenter")
    } else {
        by_prefix
    };
    own.or_else(|| el.children.iter().map(vendor_of).find(|v| *v != "other"))
        .unwrap_or("other")
}

/// An element as JSON: its trimmed text when it has neither attributes nor children,
/// otherwise an object of `@attributes`, children (arrays when repeated) and `#text`.
fn to_json(el: &Element) -> Value {
    if el.attrs.is_empty() && el.children.is_empty() {
        return Value::String(el.text.trim().to_owned());
    }
    let mut map = Map::new();
    for (name, value) in &el.attrs {
        map.insert(format!("@{name}"), Value::String(value.clone()));
    }
    for child in &el.children {
        insert(&mut map, &child.name, to_json(child));
    }
    if let Some(text) = el.text() {
        map.insert("#text".to_owned(), Value::String(text.to_owned()));
    }
    Value::Object(map)
}

/// Adds `value` under `key`, turning a repeated key into an array.
fn insert(map: &mut Map<String, Value>, key: &str, value: Value) {
    match map.get_mut(key) {
        None => {
            map.insert(key.to_owned(), value);
        }
        Some(Value::Array(items)) => items.push(value),
        Some(existing) => {
            let first = existing.take();
            *existing = Value::Array(vec![first, value]);
        }
    }
}

/// Reads the normalized facts out of one block. Within a document the first value seen
/// wins, matching the document order the mapping expects.
fn hints(vendor: &str, el: &Element, aor: Option<&str>, h: &mut VendorHints) {
    match vendor {
        "oracle" => oracle(el, aor, h),
        "broadworks" => broadworks(el, h),
        "metaswitch" => {
            set(&mut h.recorded_user, el.find_text("recordedParty"));
            if let Some(t) = el.find_text("callType") {
                set_flag(&mut h.recorded_user_originated, call_type(t));
            }
            set(&mut h.calling, el.find_text("callingPartyNumber"));
            set(&mut h.dialed, el.find_text("dialedDigits"));
        }
        "ribbon" => {
            set(&mut h.calling, el.find_text("fromhdr").map(header_uri));
            set(&mut h.called, el.find_text("tohdr").map(header_uri));
            call_id(h, "ribbon:gcid", el.find_text("gcid"));
            call_id(h, "ribbon:callid", el.find_text("callid"));
        }
        "audiocodes" | "genesys" => {
            call_id(h, "audiocodes:GenesysUUID", el.find_text("GenesysUUID"));
            call_id(h, "audiocodes:UCID", find_ucid(el));
        }
        "jambonz" => call_id(h, "jambonz:callsid", el.find_text("callsid")),
        _ => {}
    }
}

/// Oracle/Acme `apkt:` data: `ucid` (session), `callingParty`, `request-uri` and `header`
/// (participant).
fn oracle(el: &Element, aor: Option<&str>, h: &mut VendorHints) {
    // The Avaya UCID is sent as `<hex>;encoding=hex`; the parameter is not part of the id.
    call_id(
        h,
        "oracle:ucid",
        el.find_text("ucid")
            .map(|u| u.split(';').next().unwrap_or(u).trim()),
    );
    if let (Some(flag), Some(aor)) = (el.find_text("callingParty"), aor) {
        match flag.to_ascii_lowercase().as_str() {
            "true" => set(&mut h.calling, Some(aor)),
            "false" => set(&mut h.called, Some(aor)),
            _ => {}
        }
    }
    if let Some(uri) = el.find_text("request-uri") {
        let uri = header_uri(uri);
        let param = |name: &str| {
            uri.split(';')
                .skip(1)
                .filter_map(|p| p.split_once('='))
                .find(|(k, _)| k.trim().eq_ignore_ascii_case(name))
                .map(|(_, v)| v.trim())
                .filter(|v| !v.is_empty())
        };
        // Genesys record URIs carry the call's DNIS and UUID as URI parameters.
        set(&mut h.dialed, param("dnis").or_else(|| uri_user(uri)));
        call_id(h, "genesys:calluuid", param("calluuid"));
    }
    for header in all_named(el, "header") {
        let Some(label) = header.attr_any(&["label"]) else {
            continue;
        };
        let values: Vec<&str> = header.texts("value").collect();
        let values = if values.is_empty() {
            header.text().into_iter().collect()
        } else {
            values
        };
        for value in values {
            h.headers.push((label.to_owned(), value.to_owned()));
        }
    }
}

/// BroadWorks/Webex `broadWorksRecordingMetadata` (versions 1.0 and 3.0).
fn broadworks(el: &Element, h: &mut VendorHints) {
    call_id(h, "broadworks:extTrackingID", el.find_text("extTrackingID"));
    call_id(
        h,
        "broadworks:newExtTrackingID",
        el.find_text("newExtTrackingID"),
    );
    call_id(h, "broadworks:callID", el.find_text("callID"));
    set(&mut h.recorded_user, el.find_text("userID"));
    // A call distributed by a call center queue was dialed to the queue's number.
    let acd_number = el.find("acd").and_then(|acd| acd.find_text("acdNumber"));
    for (tag, originated) in [("origCall", true), ("termCall", false)] {
        if let Some(call) = el.find(tag) {
            set_flag(&mut h.recorded_user_originated, Some(originated));
            set(&mut h.calling, call.find_text("callingPartyNumber"));
            set(&mut h.called, call.find_text("calledPartyNumber"));
            set(
                &mut h.dialed,
                call.find_text("origCalledNumber")
                    .or(acd_number)
                    .or_else(|| call.find_text("calledPartyNumber")),
            );
        }
    }
}

/// Metaswitch `callType`: `originating` when the recorded party placed the call,
/// `terminating` when it received it.
fn call_type(value: &str) -> Option<bool> {
    match value.to_ascii_lowercase().as_str() {
        "originating" | "outgoing" | "outbound" => Some(true),
        "terminating" | "incoming" | "inbound" => Some(false),
        _ => None,
    }
}

/// AudioCodes copies the Avaya UCID into a proprietary tag whose exact name varies; any
/// element whose name contains `ucid` is it.
fn find_ucid(el: &Element) -> Option<&str> {
    if el.name.to_ascii_lowercase().contains("ucid")
        && let Some(t) = el.text()
    {
        return Some(t);
    }
    el.children.iter().find_map(find_ucid)
}

/// Every element with this local name in the subtree, in document order.
fn all_named<'e>(el: &'e Element, name: &str) -> Vec<&'e Element> {
    let mut out = Vec::new();
    let mut stack = vec![el];
    while let Some(e) = stack.pop() {
        if e.name == name {
            out.push(e);
        }
        stack.extend(e.children.iter().rev());
    }
    out
}

/// The URI of a From/To header value or a bracketed URI: `"Name" <sip:a@b>;tag=x` gives
/// `sip:a@b`; a bare URI is returned trimmed.
fn header_uri(value: &str) -> &str {
    let value = value.trim();
    match (value.find('<'), value.rfind('>')) {
        (Some(open), Some(close)) if open < close => value[open + 1..close].trim(),
        (Some(open), None) => value[open + 1..].trim(),
        _ => value,
    }
}

/// The user part of a SIP URI (`sip:1970900410@host` gives `1970900410`).
fn uri_user(uri: &str) -> Option<&str> {
    let rest = uri.split_once(':').map_or(
        uri,
        |(scheme, rest)| if scheme.contains('@') { uri } else { rest },
    );
    let user = rest.split_once('@')?.0.split(';').next()?.trim();
    (!user.is_empty()).then_some(user)
}

fn set(slot: &mut Option<String>, value: Option<&str>) {
    if slot.is_none()
        && let Some(v) = value.map(str::trim).filter(|v| !v.is_empty())
    {
        *slot = Some(v.to_owned());
    }
}

fn set_flag(slot: &mut Option<bool>, value: Option<bool>) {
    if slot.is_none() {
        *slot = value;
    }
}

fn call_id(h: &mut VendorHints, source: &str, value: Option<&str>) {
    if let Some(v) = value.map(str::trim).filter(|v| !v.is_empty())
        && !h.call_ids.iter().any(|(s, x)| s == source && x == v)
    {
        h.call_ids.push((source.to_owned(), v.to_owned()));
    }
}
