//! Rewrites captured SRC requests so they form a fresh dialog from our sockets, and builds the
//! few messages the replay makes itself (ACK, BYE).
//!
//! Kept as captured: Request-URI, To URI, CSeq, Require/Supported and every other header, the
//! metadata part of the body (byte for byte: the SDP is rewritten in place). Replaced: Call-ID,
//! From tag, To tag (the live one), Via (one, ours, with a new branch per transaction), Contact
//! host:port, the SDP's addresses and ports (our RTP sockets), Content-Length. Parsing and
//! serialising are the gateway's own (`sip::message`, `siprec::multipart`). No I/O; randomness
//! only from `fastrand`.

use std::net::{IpAddr, SocketAddr};
use std::ops::Range;

use super::Transport;
use crate::sip::Message;
use crate::sip::message::{self, StartLine};
use crate::siprec::multipart;

/// The dialog identity of one replay run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub call_id: String,
    pub from_tag: String,
    /// The gateway's To tag, once its 2xx to the INVITE arrived.
    pub to_tag: Option<String>,
    /// Our SIP socket, as the gateway sees it.
    pub local: SocketAddr,
    pub transport: Transport,
    /// The dialog's remote target and route set, once the 2xx arrived (RFC 3261 §12.1.2: the
    /// 2xx's Contact, and its Record-Route in reverse order).
    pub dialog: Option<(String, Vec<String>)>,
}

fn random_hex(n: usize) -> String {
    (0..n)
        .map(|_| char::from_digit(fastrand::u32(..16), 16).unwrap_or('0'))
        .collect()
}

impl Identity {
    /// A new Call-ID and From tag (RFC 3261 §8.1.1.3/§8.1.1.4: globally unique, random).
    pub fn fresh(local: SocketAddr, transport: Transport) -> Identity {
        Identity {
            call_id: format!("{}@replay", random_hex(32)),
            from_tag: random_hex(16),
            to_tag: None,
            local,
            transport,
            dialog: None,
        }
    }

    /// Takes the dialog's remote target and route set from the 2xx to the INVITE.
    pub fn learn_dialog(&mut self, answer: &Message) {
        self.to_tag = answer.tag("To").map(str::to_string);
        let Some(target) = answer.header("Contact").map(|c| message::name_addr_uri(c).to_string()) else {
            return;
        };
        let mut routes: Vec<String> = answer
            .headers_named("Record-Route")
            .flat_map(message::split_list)
            .map(str::to_string)
            .collect();
        routes.reverse();
        self.dialog = Some((target, routes));
    }

    /// Points an in-dialog request along the dialog's route set (RFC 3261 §12.2.1.1).
    fn route_in_dialog(&self, m: &mut Message) {
        let Some((target, routes)) = &self.dialog else { return };
        if let StartLine::Request { uri, .. } = &mut m.start {
            *uri = target.clone();
        }
        m.headers.retain(|(n, _)| !message::header_is(n, "Route"));
        for r in routes {
            m.headers.push(("Route".to_string(), r.clone()));
        }
    }

    fn via(&self, branch: &str) -> String {
        match self.transport {
            // RFC 3581: ask for responses to our source port.
            Transport::Udp => format!("SIP/2.0/UDP {};branch={branch};rport", self.local),
            Transport::Tcp => format!("SIP/2.0/TCP {};branch={branch}", self.local),
        }
    }
}

/// A new RFC 3261 §8.1.1.7 branch: the magic cookie plus randomness.
pub fn new_branch() -> String {
    format!("z9hG4bK{}", random_hex(20))
}

/// The captured request as we send it: our identity, a fresh `branch`, and an SDP offer whose
/// m-line `k` points at `rtp_ports[k]` on our address.
pub fn request(captured: &Message, id: &Identity, branch: &str, rtp_ports: &[u16]) -> Message {
    let mut m = captured.clone();
    // Every captured Via belongs to hops that are not in this path: ours is the only one.
    m.set_header("Via", id.via(branch));
    m.set_header("Call-ID", id.call_id.as_str());
    if let Some(from) = m.header("From").map(|f| with_tag(f, Some(&id.from_tag))) {
        m.set_header("From", from);
    }
    if let Some(to) = m.header("To").map(|t| with_tag(t, id.to_tag.as_deref())) {
        m.set_header("To", to);
    }
    if let Some(contact) = m
        .header("Contact")
        .map(|c| contact(c, id.local, id.transport))
    {
        m.set_header("Contact", contact);
    }
    if let Some(range) = sdp_range(&m)
        && let Ok(sdp) = std::str::from_utf8(&m.body[range.clone()])
    {
        let new = sdp_offer(sdp, id.local.ip(), rtp_ports);
        m.body.splice(range, new.into_bytes());
    }
    id.route_in_dialog(&mut m);
    m
}

/// The top Via's branch: with the CSeq method, what ties a response to its client transaction
/// (RFC 3261 §17.1.3).
pub fn branch(m: &Message) -> Option<&str> {
    m.top_via().and_then(|v| v.branch())
}

/// ACK for a final response to `invite` (the request as sent). RFC 3261 §13.2.2.4: a 2xx is
/// acknowledged in a new transaction; §17.1.1.3: a non-2xx with the INVITE's own branch.
pub fn ack(invite: &Message, response: &Message, id: &Identity) -> Message {
    let two_xx = response.status().is_some_and(|s| (200..300).contains(&s));
    let branch = match (two_xx, branch(invite)) {
        (false, Some(b)) => b.to_string(),
        _ => new_branch(),
    };
    let mut headers = vec![
        ("Via".to_string(), id.via(&branch)),
        ("Max-Forwards".to_string(), "70".to_string()),
    ];
    headers.extend(fields(invite, &["From", "Call-ID", "Route"]));
    if let Some(to) = response.header("To") {
        headers.push(("To".into(), to.to_string()));
    }
    let cseq = invite.cseq().map_or(1, |(n, _)| n);
    headers.push(("CSeq".into(), format!("{cseq} ACK")));
    let mut ack = in_dialog("ACK", invite, headers);
    if two_xx {
        // The ACK for a 2xx is an in-dialog request; one for an error follows the INVITE.
        id.route_in_dialog(&mut ack);
    }
    ack
}

/// A BYE in the INVITE's dialog, for captures that end before the SRC hung up.
pub fn bye(invite: &Message, cseq: u32, id: &Identity) -> Message {
    let keep = [
        "Via",
        "Max-Forwards",
        "From",
        "To",
        "Call-ID",
        "Contact",
        "Route",
    ];
    let mut headers = fields(invite, &keep);
    headers.push(("CSeq".into(), format!("{cseq} BYE")));
    let mut bye = in_dialog("BYE", invite, headers);
    id.route_in_dialog(&mut bye);
    bye
}

/// A bodiless `method` request to the INVITE's Request-URI.
fn in_dialog(method: &str, invite: &Message, headers: Vec<(String, String)>) -> Message {
    Message {
        start: StartLine::Request {
            method: method.to_string(),
            uri: invite.request_uri().unwrap_or("sip:invalid").to_string(),
        },
        headers,
        body: Vec::new(),
    }
}

/// The header fields of `m` with the given names (compact forms match), as written, grouped in
/// the order of `names`.
fn fields(m: &Message, names: &[&str]) -> Vec<(String, String)> {
    names
        .iter()
        .flat_map(|name| {
            m.headers
                .iter()
                .filter(|(n, _)| message::header_is(n, name))
                .cloned()
        })
        .collect()
}

/// A From/To value with its header `tag` parameter replaced by `tag`, or removed when `None`.
/// Other header parameters keep their order; URI parameters are not touched.
fn with_tag(value: &str, tag: Option<&str>) -> String {
    let params = message::name_addr_params(value);
    let mut out = value[..value.len() - params.len()].trim_end().to_string();
    for p in params.split(';').map(str::trim).filter(|p| !p.is_empty()) {
        let name = p.split_once('=').map_or(p, |(n, _)| n);
        if !name.trim().eq_ignore_ascii_case("tag") {
            out.push(';');
            out.push_str(p);
        }
    }
    if let Some(tag) = tag {
        out.push_str(";tag=");
        out.push_str(tag);
    }
    out
}

/// Byte range of the SDP within the body: all of it for `application/sdp`, the SDP part's
/// content for a multipart body (RFC 7866 §9.1: SDP plus `application/rs-metadata+xml`).
fn sdp_range(m: &Message) -> Option<Range<usize>> {
    let content_type = m.header("Content-Type")?;
    let mime = multipart::mime_type(content_type);
    if mime == "application/sdp" {
        return (!m.body.is_empty()).then_some(0..m.body.len());
    }
    if !mime.starts_with("multipart/") {
        return None;
    }
    let parts = multipart::split(content_type, &m.body).ok()?;
    let sdp = parts
        .iter()
        .find(|p| p.content_type.as_deref() == Some("application/sdp"))?;
    // The parts borrow the body, so a part's offset is its distance from the body's start.
    let start = (sdp.body.as_ptr() as usize).checked_sub(m.body.as_ptr() as usize)?;
    Some(start..start + sdp.body.len())
}

/// Contact with our host:port, the captured user part, URI and header parameters kept, and
/// `transport=` set to ours.
fn contact(value: &str, local: SocketAddr, transport: Transport) -> String {
    let (display, uri, header_params) = match (value.find('<'), value.find('>')) {
        (Some(s), Some(e)) if s < e => (&value[..s], &value[s + 1..e], &value[e + 1..]),
        _ => {
            // Without <>, parameters after the URI are header parameters (RFC 3261 §20.10).
            let cut = value.find(';').unwrap_or(value.len());
            ("", &value[..cut], &value[cut..])
        }
    };
    let (scheme, rest) = uri.split_once(':').unwrap_or(("sip", uri));
    let (user, hostpart) = match rest.rfind('@') {
        Some(at) => (&rest[..=at], &rest[at + 1..]),
        None => ("", rest),
    };
    let mut params: String = hostpart
        .split(';')
        .skip(1)
        .filter(|p| !p.to_ascii_lowercase().starts_with("transport="))
        .map(|p| format!(";{p}"))
        .collect();
    if transport == Transport::Tcp {
        params.push_str(";transport=tcp");
    }
    format!("{display}<{scheme}:{user}{local}{params}>{header_params}")
}

/// The captured offer with our address in `o=`/`c=` and our socket ports in `m=`. Disabled
/// m-lines (port 0) stay disabled; `a=rtcp` lines are dropped because they name the capture's
/// RTCP ports and the replay sends no RTCP.
pub fn sdp_offer(sdp: &str, ip: IpAddr, rtp_ports: &[u16]) -> String {
    let family = if ip.is_ipv4() { "IP4" } else { "IP6" };
    let mut out = String::with_capacity(sdp.len() + 64);
    let mut mline = 0;
    for line in sdp.split_inclusive('\n') {
        let body = line.trim_end_matches(['\r', '\n']);
        let eol = &line[body.len()..];
        if let Some(rest) = body.strip_prefix("o=") {
            let mut f: Vec<&str> = rest.split_whitespace().collect();
            if f.len() == 6 {
                let ip_s = ip.to_string();
                f[4] = family;
                f[5] = &ip_s;
                out.push_str(&format!("o={}{eol}", f.join(" ")));
                continue;
            }
        } else if body.starts_with("c=") {
            out.push_str(&format!("c=IN {family} {ip}{eol}"));
            continue;
        } else if let Some(rest) = body.strip_prefix("m=") {
            let mut f: Vec<String> = rest.split_whitespace().map(str::to_string).collect();
            let port = rtp_ports.get(mline).copied().unwrap_or(0);
            mline += 1;
            if f.len() >= 2 && f[1] != "0" {
                f[1] = port.to_string();
            }
            out.push_str(&format!("m={}{eol}", f.join(" ")));
            continue;
        } else if body.starts_with("a=rtcp:") {
            continue;
        }
        out.push_str(line);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::replay::capture::{read_capture, tests::fixture};
    use crate::replay::plan::{self, sdp_of};
    use crate::sip::message::Framed;

    fn captured_requests() -> Vec<Message> {
        let payloads = read_capture(&fixture("siprec-2stream-tcp.pcapng")).unwrap();
        plan::build(&payloads)
            .unwrap()
            .requests
            .into_iter()
            .map(|r| r.message)
            .collect()
    }

    fn local() -> SocketAddr {
        "192.0.2.7:40123".parse().unwrap()
    }

    #[test]
    fn invite_gets_fresh_identity_our_via_contact_and_sdp() {
        let invite = &captured_requests()[0];
        let id = Identity::fresh(local(), Transport::Udp);
        let branch = new_branch();
        let out = request(invite, &id, &branch, &[50000, 50002]);
        let bytes = out.to_bytes();
        assert_eq!(
            message::frame(&bytes),
            Ok(Some(Framed::Message(bytes.len()))),
            "Content-Length matches the rewritten body"
        );
        let m = Message::parse(&bytes).unwrap();
        assert_eq!(m.call_id(), id.call_id);
        assert_ne!(m.call_id(), invite.call_id());
        assert_eq!(m.tag("From"), Some(id.from_tag.as_str()));
        assert_eq!(m.tag("To"), None);
        assert_eq!(m.headers_named("Via").count(), 1);
        assert_eq!(
            m.header("via"),
            Some(format!("SIP/2.0/UDP 192.0.2.7:40123;branch={branch};rport").as_str())
        );
        assert!(branch.starts_with("z9hG4bK") && branch.len() > 20);
        assert_eq!(
            m.header("contact"),
            Some("<sip:src@192.0.2.7:40123>;+sip.src")
        );
        assert_eq!(m.cseq(), invite.cseq());
        assert_eq!(m.start, invite.start);
        let sdp = sdp_of(&m).unwrap();
        let ip: IpAddr = "192.0.2.7".parse().unwrap();
        assert_eq!(
            sdp.media
                .iter()
                .map(|md| (md.connection_or(&sdp), md.port))
                .collect::<Vec<_>>(),
            [(Some(ip), 50000), (Some(ip), 50002)]
        );
        let text = String::from_utf8_lossy(&m.body);
        assert!(text.contains("o=SRC 2890844526 2890844526 IN IP4 192.0.2.7"));
        assert!(
            !text.contains("10.0.0.10"),
            "no capture address left in the body"
        );
        assert!(text.contains("<label>2</label>"), "metadata kept");
    }

    #[test]
    fn sdp_part_of_a_multipart_body_is_rewritten_in_place() {
        let offer = "INVITE sip:srs@10.0.0.20 SIP/2.0\r\n\
            c: multipart/mixed;boundary=\"b1\"\r\n\r\n\
            --b1\r\nContent-Type: application/sdp\r\n\r\n\
            v=0\r\nc=IN IP4 10.0.0.10\r\nm=audio 2000 RTP/AVP 0\r\n\
            \r\n--b1\r\nContent-Type: application/rs-metadata+xml\r\n\r\n<recording/>\r\n--b1--\r\n";
        let captured = Message::parse_unchecked(offer.as_bytes()).unwrap();
        let range = sdp_range(&captured).unwrap();
        assert!(captured.body[range.clone()].starts_with(b"v=0\r\n"));
        assert!(captured.body[range].ends_with(b"RTP/AVP 0\r\n"));
        let id = Identity::fresh(local(), Transport::Udp);
        let out = request(&captured, &id, "z9hG4bKx", &[50000]);
        let body = String::from_utf8(out.body).unwrap();
        assert_eq!(
            body,
            "--b1\r\nContent-Type: application/sdp\r\n\r\n\
            v=0\r\nc=IN IP4 192.0.2.7\r\nm=audio 50000 RTP/AVP 0\r\n\
            \r\n--b1\r\nContent-Type: application/rs-metadata+xml\r\n\r\n<recording/>\r\n--b1--\r\n"
        );
    }

    #[test]
    fn every_run_and_transaction_is_fresh() {
        let a = Identity::fresh(local(), Transport::Udp);
        let b = Identity::fresh(local(), Transport::Udp);
        assert_ne!(a.call_id, b.call_id);
        assert_ne!(a.from_tag, b.from_tag);
        assert_ne!(new_branch(), new_branch());
    }

    #[test]
    fn in_dialog_request_carries_the_live_to_tag_over_tcp() {
        let bye = &captured_requests()[1];
        assert_eq!(bye.tag("To"), Some("srs-7731"));
        let mut id = Identity::fresh(local(), Transport::Tcp);
        id.to_tag = Some("live-tag".into());
        let m = request(bye, &id, "z9hG4bKx", &[]);
        assert_eq!(m.tag("To"), Some("live-tag"));
        assert_eq!(
            m.header("via"),
            Some("SIP/2.0/TCP 192.0.2.7:40123;branch=z9hG4bKx")
        );
        assert_eq!(
            m.header("contact"),
            Some("<sip:src@192.0.2.7:40123;transport=tcp>;+sip.src")
        );
    }

    #[test]
    fn ack_for_2xx_is_a_new_transaction_and_for_non_2xx_reuses_the_branch() {
        let id = Identity::fresh(local(), Transport::Udp);
        let invite = request(&captured_requests()[0], &id, "z9hG4bKinv", &[1, 2]);
        let ok = Message::parse_unchecked(
            b"SIP/2.0 200 OK\r\nTo: <sip:r@x>;tag=t9\r\nCSeq: 101 INVITE\r\n\r\n",
        )
        .unwrap();
        let a = ack(&invite, &ok, &id);
        assert_eq!(a.method(), Some("ACK"));
        assert_eq!(a.request_uri(), invite.request_uri());
        assert_eq!(a.cseq(), Some((101, "ACK")));
        assert_eq!(a.header("to"), Some("<sip:r@x>;tag=t9"));
        assert_eq!(a.call_id(), id.call_id);
        assert_ne!(branch(&a), Some("z9hG4bKinv"));
        let busy = Message::parse_unchecked(
            b"SIP/2.0 486 Busy\r\nTo: <sip:r@x>;tag=t9\r\nCSeq: 101 INVITE\r\n\r\n",
        )
        .unwrap();
        assert_eq!(branch(&ack(&invite, &busy, &id)), Some("z9hG4bKinv"));
    }

    #[test]
    fn generated_bye_stays_in_the_invite_dialog() {
        let invite = Message::parse(
            b"INVITE sip:srs@x SIP/2.0\r\nVia: SIP/2.0/UDP a;branch=z9hG4bK1\r\nFrom: <sip:a>;tag=1\r\nTo: <sip:srs@x>\r\n\
              Call-ID: c\r\nCSeq: 10 INVITE\r\nContent-Type: application/sdp\r\n\r\nv=0\r\n",
        )
        .unwrap();
        let mut id = Identity::fresh("127.0.0.1:5070".parse().unwrap(), Transport::Udp);
        let bye1 = bye(&invite, 11, &id);
        assert_eq!(bye1.method(), Some("BYE"));
        assert_eq!(bye1.request_uri(), Some("sip:srs@x"));
        assert_eq!(bye1.cseq(), Some((11, "BYE")));
        assert_eq!(bye1.call_id(), "c");
        assert!(bye1.body.is_empty() && bye1.header("content-type").is_none());

        // RFC 3261 §12.2.1.1: once the 2xx named a target and a route set, in-dialog requests
        // go to the target along the Record-Route, reversed.
        let ok = Message::parse(
            b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP a;branch=z9hG4bK1\r\nRecord-Route: <sip:p2;lr>\r\n\
              Record-Route: <sip:p1;lr>\r\nFrom: <sip:a>;tag=1\r\nTo: <sip:srs@x>;tag=9\r\nCall-ID: c\r\n\
              CSeq: 10 INVITE\r\nContact: <sip:gw@192.0.2.10:5060>\r\nContent-Length: 0\r\n\r\n",
        )
        .unwrap();
        id.learn_dialog(&ok);
        let bye2 = bye(&invite, 12, &id);
        assert_eq!(bye2.request_uri(), Some("sip:gw@192.0.2.10:5060"));
        let routes: Vec<&str> = bye2.headers_named("Route").collect();
        assert_eq!(routes, vec!["<sip:p1;lr>", "<sip:p2;lr>"]);
        assert_eq!(ack(&invite, &ok, &id).request_uri(), Some("sip:gw@192.0.2.10:5060"));
    }

    #[test]
    fn sdp_rewrite_keeps_line_endings_and_disabled_streams() {
        let sdp = "v=0\no=- 1 1 IN IP4 1.2.3.4\nc=IN IP4 1.2.3.4\nm=audio 0 RTP/AVP 0\nm=audio 7000 RTP/AVP 0\na=rtcp:7001\n";
        let out = sdp_offer(sdp, "::1".parse().unwrap(), &[9000, 9002]);
        assert_eq!(
            out,
            "v=0\no=- 1 1 IN IP6 ::1\nc=IN IP6 ::1\nm=audio 0 RTP/AVP 0\nm=audio 9002 RTP/AVP 0\n"
        );
    }

    #[test]
    fn with_tag_replaces_or_removes_only_the_header_tag() {
        assert_eq!(
            with_tag("<sip:a@b;tag=uri>;tag=old;x=1", Some("new")),
            "<sip:a@b;tag=uri>;x=1;tag=new"
        );
        assert_eq!(with_tag("<sip:a@b>", Some("t")), "<sip:a@b>;tag=t");
        assert_eq!(
            with_tag("\"A\" <sip:a@b;tag=uri>;tag=old;x=1", None),
            "\"A\" <sip:a@b;tag=uri>;x=1"
        );
        // An addr-spec without brackets: everything after the URI is a header parameter.
        assert_eq!(with_tag("sip:a@b;tag=old", Some("new")), "sip:a@b;tag=new");
        assert_eq!(with_tag("sip:a@b;tag=old", None), "sip:a@b");
    }
}
