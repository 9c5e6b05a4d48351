//! `masterCallId` and `numberDialed`: the first configured source that has a value.

use super::identity::{phone_number, same_party, uri_of, uri_param};
use super::rules::{DialedSource, IdSource, MappingRules};
use crate::siprec::metadata::Metadata;

/// The first value of header `name` (case-insensitive), trimmed, if not empty.
pub(crate) fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.trim()).filter(|v| !v.is_empty())
}

/// Header `name` of the INVITE, else as the SRC copied it into its vendor data (Oracle
/// `<apkt:header label=...>` carries the recorded call's headers).
fn any_header<'a>(headers: &'a [(String, String)], docs: &[&'a Metadata], name: &str) -> Option<&'a str> {
    header(headers, name).or_else(|| docs.iter().find_map(|d| header(&d.vendor.headers, name)))
}

/// `masterCallId` and the source it came from, per `mapping.master_call_id`.
pub(crate) fn master_call_id(
    sources: &[IdSource],
    docs: &[&Metadata],
    headers: &[(String, String)],
    session_id: &str,
) -> Option<(String, String)> {
    let nonempty = |s: &str| Some(s.trim().to_owned()).filter(|s| !s.is_empty());
    sources.iter().find_map(|src| {
        let value = match src {
            IdSource::Vendor => docs.iter().flat_map(|d| &d.vendor.call_ids).find_map(|(n, id)| vendor_id(n, id)),
            IdSource::VendorNamed(name) => docs
                .iter()
                .flat_map(|d| &d.vendor.call_ids)
                .filter(|(n, _)| n.eq_ignore_ascii_case(name))
                .find_map(|(n, id)| vendor_id(n, id)),
            IdSource::UuiUcid => any_header(headers, docs, "User-to-User").and_then(uui_ucid),
            IdSource::Group => docs.iter().find_map(|d| d.group_id.as_deref().and_then(nonempty)),
            IdSource::SipSessionId => docs.iter().find_map(|d| d.sip_session_id().and_then(nonempty)),
            IdSource::MetadataSession => docs.iter().find_map(|d| d.sessions.first().and_then(|s| nonempty(&s.id))),
            IdSource::SessionId => nonempty(session_id),
            IdSource::Header(name) => any_header(headers, docs, name).and_then(nonempty),
        }?;
        Some((value, src.to_string()))
    })
}

/// A vendor call id as `masterCallId`: a UCID sent in its User-to-User hex form (Oracle
/// `apkt:ucid` `00FA08...;encoding=hex`) becomes its 20 digits, so that the recordings of one
/// call made by an Oracle SBC and by an Avaya SBCE (whose UCID comes from `uui-ucid`) share
/// their masterCallId.
fn vendor_id(name: &str, id: &str) -> Option<String> {
    let id = id.trim();
    if id.is_empty() {
        return None;
    }
    let ucid = name.to_ascii_lowercase().ends_with("ucid");
    Some(ucid.then(|| uui_ucid(id)).flatten().unwrap_or_else(|| id.to_owned()))
}

/// The Avaya UCID carried in a `User-to-User` header (hex, `;encoding=hex`): the information
/// element tagged 0xFA holds 8 bytes (network node 2, sequence 2, timestamp 4), shown by Avaya
/// and Cisco (`Cisco-Gucid`) as 5 + 5 + 10 decimal digits.
pub(crate) fn uui_ucid(value: &str) -> Option<String> {
    let hex = value.split(';').next()?.trim();
    if hex.len() % 2 != 0 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let bytes: Vec<u8> =
        (0..hex.len()).step_by(2).filter_map(|i| u8::from_str_radix(&hex[i..i + 2], 16).ok()).collect();
    // The first byte is the protocol discriminator; information elements follow as
    // tag, length, value.
    let mut at = 1;
    while at + 2 <= bytes.len() {
        let (tag, len) = (bytes[at], usize::from(bytes[at + 1]));
        let value = bytes.get(at + 2..at + 2 + len)?;
        if tag == 0xFA && len >= 8 {
            let node = u16::from_be_bytes([value[0], value[1]]);
            let seq = u16::from_be_bytes([value[2], value[3]]);
            let time = u32::from_be_bytes([value[4], value[5], value[6], value[7]]);
            return Some(format!("{node:05}{seq:05}{time:010}"));
        }
        at += 2 + len;
    }
    None
}

/// A number from a vendor or header value: its `dnis=` parameter (Genesys record URIs in
/// Oracle's `request-uri`), else its user part as a number.
fn number_in(value: &str) -> Option<String> {
    uri_param(value, "dnis").and_then(phone_number).or_else(|| phone_number(uri_of(value)))
}

/// What `numberDialed` needs besides the rules.
pub(crate) struct DialedFacts<'a> {
    pub vendor_dialed: Option<&'a str>,
    pub vendor_called: Option<&'a str>,
    /// The AOR of the party that was called (the agent, on an inbound call).
    pub called_party: Option<&'a str>,
    /// The vendor's recorded user (a station): a number dialed that is its own number was a
    /// DID to that station.
    pub station: Option<&'a str>,
    pub request_uri: Option<&'a str>,
    pub headers: &'a [(String, String)],
    pub docs: &'a [&'a Metadata],
}

/// `numberDialed` for an inbound call and the source it came from; `Err(reason)` when a
/// number was found but is left out (a DID to a station: Tethr asks for it to be empty).
pub(crate) fn number_dialed(rules: &MappingRules, f: &DialedFacts<'_>) -> Option<Result<(String, String), String>> {
    let (number, src) = rules.number_dialed.iter().find_map(|src| {
        let n = match src {
            DialedSource::VendorDialed => f.vendor_dialed.and_then(number_in),
            DialedSource::VendorCalled => f.vendor_called.and_then(number_in),
            DialedSource::CalledParty => f.called_party.and_then(number_in),
            DialedSource::RequestUri => f.request_uri.and_then(number_in),
            DialedSource::Header(name) => any_header(f.headers, f.docs, name).and_then(number_in),
        }?;
        Some((n, src.to_string()))
    })?;
    if rules.is_extension(&number) {
        return Some(Err(format!("numberDialed {src} is an internal extension (a DID to a station): left out")));
    }
    if f.station.is_some_and(|station| same_party(station, &number)) {
        return Some(Err(format!(
            "numberDialed {src} is the recorded user's own number (a DID to a station): left out"
        )));
    }
    Some(Ok((number, src)))
}
