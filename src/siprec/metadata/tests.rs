//! Unit tests of the metadata parser and merge.

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
        "</nameid> closed <nameID>",
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

fn ts(s: &str) -> jiff::Timestamp {
    s.parse().unwrap()
}

#[test]
fn times_with_offsets_without_zone_and_unreadable() {
    let xml = r#"<recording xmlns="urn:ietf:params:xml:ns:recording:1"><dataMode>complete</dataMode>
  <session session_id="s"><start-time>2018-06-26T17:48:23+0000</start-time><stop-time>2019-03-16T12:29:09-04:00</stop-time></session>
  <participant participant_id="p"><associate-time>2019-03-09T16:50:20</associate-time><disassociate-time>yesterday</disassociate-time></participant>
  <stream stream_id="st"><label>1</label><associate-time>2017-06-23T12:16:06.040Z</associate-time></stream>
</recording>"#;
    let md = parse_metadata(xml.as_bytes()).unwrap();
    assert_eq!(md.sessions[0].start, Some(ts("2018-06-26T17:48:23Z")));
    assert_eq!(md.sessions[0].stop, Some(ts("2019-03-16T16:29:09Z")));
    assert_eq!(
        md.participants[0].associated,
        Some(ts("2019-03-09T16:50:20Z"))
    );
    assert_eq!(md.participants[0].disassociated, None);
    assert_eq!(
        md.streams[0].associated,
        Some(ts("2017-06-23T12:16:06.04Z"))
    );
    assert_eq!(
        md.warnings,
        ["unreadable <disassociate-time> in <participant> ignored"]
    );
}

#[test]
fn datamode_is_read_in_either_spelling_and_case() {
    for (xml, mode) in [
        (
            "<recording xmlns='urn:ietf:params:xml:ns:recording'><datamode>Partial</datamode></recording>",
            DataMode::Partial,
        ),
        (
            "<recording xmlns='urn:ietf:params:xml:ns:recording:1'><dataMode>partial</dataMode></recording>",
            DataMode::Partial,
        ),
        (
            "<recording xmlns='urn:ietf:params:xml:ns:recording:1'><dataMode>complete</dataMode></recording>",
            DataMode::Complete,
        ),
        (
            "<recording xmlns='urn:ietf:params:xml:ns:recording:1'/>",
            DataMode::Complete,
        ),
    ] {
        assert_eq!(
            parse_metadata(xml.as_bytes()).unwrap().data_mode,
            mode,
            "{xml}"
        );
    }
}

#[test]
fn session_association_gives_participant_session_and_times() {
    let xml = r#"<recording xmlns="urn:ietf:params:xml:ns:recording:1">
  <session session_id="s1"/>
  <sessionrecordingassoc session_id="s1"><associate-time>2024-01-01T00:00:00Z</associate-time></sessionrecordingassoc>
  <participantsessionassoc participant_id="p1" session_id="s1"><associate-time>2024-01-01T00:00:01Z</associate-time><disassociate-time>2024-01-01T00:05:00Z</disassociate-time></participantsessionassoc>
  <participant participant_id="p1"><nameID aor="sip:a@example.com"/></participant>
</recording>"#;
    let md = parse_metadata(xml.as_bytes()).unwrap();
    assert_eq!(md.sessions[0].start, Some(ts("2024-01-01T00:00:00Z")));
    let p = md.participant("p1").unwrap();
    assert_eq!(p.session_ref.as_deref(), Some("s1"));
    assert_eq!(p.associated, Some(ts("2024-01-01T00:00:01Z")));
    assert_eq!(p.disassociated, Some(ts("2024-01-01T00:05:00Z")));
    assert!(!p.streams_given);
}

#[test]
fn extensions_become_json_with_vendor_and_parent() {
    let xml = r#"<recording xmlns="urn:ietf:params:xml:ns:recording:1" xmlns:v="http://vendor.example/x">
  <group group_id="g"><v:info a="1"><v:k>x</v:k><v:k>y</v:k><v:e/></v:info></group>
  <participant participant_id="p"><extensiondata><thing kind="t">text</thing></extensiondata></participant>
  <extensiondata parent="s"><v:top>1</v:top></extensiondata>
</recording>"#;
    let md = parse_metadata(xml.as_bytes()).unwrap();
    assert_eq!(md.extensions.len(), 3);
    assert_eq!(md.extensions[0].vendor, "other");
    assert_eq!(md.extensions[0].parent.as_deref(), Some("g"));
    assert_eq!(
        md.extensions[0].data,
        serde_json::json!({"info": {"@a": "1", "k": ["x", "y"], "e": ""}})
    );
    assert_eq!(md.extensions[1].parent.as_deref(), Some("p"));
    assert_eq!(
        md.extensions[1].data,
        serde_json::json!({"thing": {"@kind": "t", "#text": "text"}})
    );
    assert_eq!(md.extensions[2].parent.as_deref(), Some("s"));
    assert_eq!(md.extensions[2].data, serde_json::json!({"top": "1"}));
}

#[test]
fn raw_angle_brackets_in_text_are_kept_as_text() {
    let xml = r#"<recording xmlns="urn:ietf:params:xml:ns:recording">
  <participant id="p" session="s"><nameID aor="sip:a@b"><name>A < B</name></nameID>
    <extensiondata xmlns:apkt="http://acmepacket.com/siprec/extensiondata">
      <apkt:callingParty>true</apkt:callingParty>
      <apkt:request-uri><sip:record=abc_1@192.0.2.1:5060;calluuid=CU1;dnis=8005550100;ani=5550100></apkt:request-uri>
    </extensiondata></participant>
</recording>"#;
    let md = parse_metadata(xml.as_bytes()).unwrap();
    assert_eq!(md.participants[0].name.as_deref(), Some("A < B"));
    assert_eq!(md.vendor.dialed.as_deref(), Some("8005550100"));
    assert_eq!(md.vendor.calling.as_deref(), Some("sip:a@b"));
    assert_eq!(
        md.vendor.call_ids,
        [("genesys:calluuid".to_owned(), "CU1".to_owned())]
    );
    assert!(md.warnings.iter().any(|w| w == "unescaped < read as text"));
}

#[test]
fn pseudo_cdata_and_unquoted_namespace_are_repaired() {
    let xml = r#"<recording xmlns='urn:ietf:params:xml:ns:recording'>
<session id="s"><extensiondata xmlns:apkt=http:/acmepacket.com/siprec/extensiondata><apkt:ucid>00FA08001900014E3E7D5C;encoding=hex</apkt:ucid></extensiondata></session>
<participant id="p"><nameID aor="sip:x@y"/><extensiondata xmlns:apkt="http://acmepacket.com/siprec/extensiondata">
<apkt:request-uri><!{CDATA{<sip:7001@pbx.example;user=phone>}}></apkt:request-uri></extensiondata></participant>
</recording>"#;
    let md = parse_metadata(xml.as_bytes()).unwrap();
    assert_eq!(
        md.vendor.call_ids,
        [(
            "oracle:ucid".to_owned(),
            "00FA08001900014E3E7D5C".to_owned()
        )]
    );
    assert_eq!(md.extensions[0].vendor, "oracle");
    assert_eq!(md.vendor.dialed.as_deref(), Some("7001"));
    assert_eq!(
        md.extensions[1].data["request-uri"],
        "<sip:7001@pbx.example;user=phone>"
    );
}

#[test]
fn typo_name_tag_is_read_as_the_name() {
    let xml = r#"<recording xmlns='urn:ietf:params:xml:ns:recording:1'>
<participant participant_id="p"><nameID aor="sip:alice@example.com"><naSRCme xml:lang="it">Alice</name></nameID></participant>
</recording>"#;
    let md = parse_metadata(xml.as_bytes()).unwrap();
    assert_eq!(md.participants[0].name.as_deref(), Some("Alice"));
    assert_eq!(
        md.participants[0].aor.as_deref(),
        Some("sip:alice@example.com")
    );
}

#[test]
fn partial_update_keeps_associations_for_participants_it_does_not_describe() {
    let xml = r#"<recording xmlns='urn:ietf:params:xml:ns:recording:1'><datamode>partial</datamode>
<participantstreamassoc participant_id="a"><recv>s2</recv></participantstreamassoc>
<participantstreamassoc participant_id="b"><send>s2</send></participantstreamassoc>
</recording>"#;
    let md = parse_metadata(xml.as_bytes()).unwrap();
    assert_eq!(md.participants.len(), 2);
    assert!(md.participants[0].streams_given);
    assert!(md.participants[0].sends.is_empty());
    assert_eq!(md.participants[1].sends, ["s2"]);
    assert!(md.warnings.is_empty(), "{:?}", md.warnings);
}

// ---- merge ----

fn parse(xml: &str) -> Metadata {
    parse_metadata(xml.as_bytes()).unwrap()
}

const BASE: &str = r#"<recording xmlns='urn:ietf:params:xml:ns:recording:1'><datamode>complete</datamode>
<group group_id="g1"/>
<session session_id="s"><sipSessionID>call-1</sipSessionID></session>
<participant participant_id="a"><nameID aor="sip:100@pbx.example"><name>Agent</name></nameID></participant>
<participant participant_id="b"><nameID aor="sip:+15550100@carrier.example"/></participant>
<stream stream_id="s1" session_id="s"><label>1</label></stream>
<stream stream_id="s2" session_id="s"><label>2</label></stream>
<participantstreamassoc participant_id="a"><send>s1</send><recv>s2</recv></participantstreamassoc>
<participantstreamassoc participant_id="b"><send>s2</send><recv>s1</recv></participantstreamassoc>
<extensiondata xmlns:jb="http://jambonz.org/siprec"><jb:callsid>first</jb:callsid></extensiondata>
</recording>"#;

#[test]
fn complete_update_replaces_the_structure_but_keeps_vendor_history() {
    let mut state = parse(BASE);
    let update = parse(
        r#"<recording xmlns='urn:ietf:params:xml:ns:recording:1'><dataMode>complete</dataMode>
<session session_id="s2"><sipSessionID>call-2</sipSessionID></session>
<participant participant_id="c"><nameID aor="sip:200@pbx.example"/></participant>
<stream stream_id="x" session_id="s2"><label>1</label></stream>
<participantstreamassoc participant_id="c"><send>x</send></participantstreamassoc>
<extensiondata xmlns:jb="http://jambonz.org/siprec"><jb:callsid>second</jb:callsid></extensiondata>
</recording>"#,
    );
    state.merge(&update);
    assert_eq!(state.group_id, None);
    assert_eq!(state.sip_session_id(), Some("call-2"));
    assert_eq!(state.participants.len(), 1);
    assert_eq!(state.participant_sending_label("1").unwrap().id, "c");
    assert_eq!(state.extensions.len(), 2);
    let ids: Vec<&str> = state
        .vendor
        .call_ids
        .iter()
        .map(|(_, v)| v.as_str())
        .collect();
    assert_eq!(ids, ["first", "second"]);
}

#[test]
fn partial_update_with_empty_send_puts_a_participant_on_hold() {
    let mut state = parse(BASE);
    state.merge(&parse(
        r#"<recording xmlns='urn:ietf:params:xml:ns:recording:1'><datamode>partial</datamode>
<participantstreamassoc participant_id="b"><send/><recv>s1</recv></participantstreamassoc>
</recording>"#,
    ));
    assert_eq!(state.participant("b").unwrap().sends, Vec::<String>::new());
    assert_eq!(state.participant("a").unwrap().sends, ["s1"]);
    assert_eq!(state.participant_sending_label("2"), None);
    assert_eq!(state.data_mode, DataMode::Complete);
    // Resume: the stream comes back.
    state.merge(&parse(
        r#"<recording xmlns='urn:ietf:params:xml:ns:recording:1'><datamode>partial</datamode>
<participantstreamassoc participant_id="b"><send>s2</send><recv>s1</recv></participantstreamassoc>
</recording>"#,
    ));
    assert_eq!(state.participant_sending_label("2").unwrap().id, "b");
}

#[test]
fn partial_update_records_leaving_and_joining_participants() {
    let mut state = parse(BASE);
    state.merge(&parse(
        r#"<recording xmlns='urn:ietf:params:xml:ns:recording'><datamode>Partial</datamode>
<participant participant_id="b" session_id="s"><disassociate-time>2026-06-25T04:58:15Z</disassociate-time></participant>
<participant participant_id="c"><nameID aor="sip:300@pbx.example"><name>Supervisor</name></nameID></participant>
<participantsessionassoc participant_id="c" session_id="s"><associate-time>2026-06-25T04:55:00Z</associate-time></participantsessionassoc>
<participantstreamassoc participant_id="c"><send>s3</send></participantstreamassoc>
<stream stream_id="s3" session_id="s"><label>3</label></stream>
</recording>"#,
    ));
    let b = state.participant("b").unwrap();
    assert_eq!(b.disassociated, Some(ts("2026-06-25T04:58:15Z")));
    // Named only for its departure: its streams and identity are kept.
    assert_eq!(b.sends, ["s2"]);
    assert_eq!(b.aor.as_deref(), Some("sip:+15550100@carrier.example"));
    let c = state.participant("c").unwrap();
    assert_eq!(c.associated, Some(ts("2026-06-25T04:55:00Z")));
    assert_eq!(c.name.as_deref(), Some("Supervisor"));
    assert_eq!(state.participant_sending_label("3").unwrap().id, "c");
    assert_eq!(state.participants.len(), 3);
    assert_eq!(state.streams.len(), 3);
}

#[test]
fn partial_update_moves_a_stream_between_participants() {
    let mut state = parse(BASE);
    state.merge(&parse(
        r#"<recording xmlns='urn:ietf:params:xml:ns:recording:1'><datamode>partial</datamode>
<participant participant_id="d"><nameID aor="sip:+15550199@carrier.example"/></participant>
<participantstreamassoc participant_id="b"><recv>s1</recv></participantstreamassoc>
<participantstreamassoc participant_id="d"><send>s2</send><recv>s1</recv></participantstreamassoc>
</recording>"#,
    ));
    assert_eq!(state.participant_sending_label("2").unwrap().id, "d");
    assert!(state.participant("b").unwrap().sends.is_empty());
}

#[test]
fn partial_update_changes_fields_by_id_and_appends_extensions() {
    let mut state = parse(BASE);
    state.merge(&parse(
        r#"<recording xmlns='urn:ietf:params:xml:ns:recording:1'><datamode>partial</datamode>
<session session_id="s"><stop-time>2026-01-01T00:10:00Z</stop-time></session>
<participant participant_id="a"><nameID><name>Agent Smith</name></nameID></participant>
<stream stream_id="s1"><label>10</label></stream>
<extensiondata xmlns:jb="http://jambonz.org/siprec"><jb:callsid>other</jb:callsid></extensiondata>
</recording>"#,
    ));
    let a = state.participant("a").unwrap();
    assert_eq!(a.name.as_deref(), Some("Agent Smith"));
    assert_eq!(a.aor.as_deref(), Some("sip:100@pbx.example"));
    assert_eq!(a.sends, ["s1"]);
    assert_eq!(state.sessions[0].sip_session_ids, ["call-1"]);
    assert_eq!(state.sessions[0].stop, Some(ts("2026-01-01T00:10:00Z")));
    assert_eq!(state.stream("s1").unwrap().label.as_deref(), Some("10"));
    assert_eq!(
        state.stream("s1").unwrap().session_ref.as_deref(),
        Some("s")
    );
    assert_eq!(state.group_id.as_deref(), Some("g1"));
    assert_eq!(state.extensions.len(), 2);
    assert_eq!(state.vendor.call_ids.len(), 2);
}

#[test]
fn vendor_hints_take_the_update_values_where_it_has_them() {
    let mut state = Metadata {
        vendor: VendorHints {
            recorded_user: Some("u1".into()),
            calling: Some("c1".into()),
            ..VendorHints::default()
        },
        ..Metadata::default()
    };
    let update = Metadata {
        data_mode: DataMode::Partial,
        vendor: VendorHints {
            calling: Some("c2".into()),
            recorded_user_originated: Some(false),
            ..VendorHints::default()
        },
        ..Metadata::default()
    };
    state.merge(&update);
    assert_eq!(state.vendor.recorded_user.as_deref(), Some("u1"));
    assert_eq!(state.vendor.calling.as_deref(), Some("c2"));
    assert_eq!(state.vendor.recorded_user_originated, Some(false));
}
