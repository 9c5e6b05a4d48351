//! Rewrites captured SRC requests so they form a fresh dialog from our sockets, and builds the
//! few messages the replay makes itself (ACK, responses to the gateway's own requests).
//!
//! Kept as captured: Request-URI, To URI, CSeq, Require/Supported and every other header, the
//! metadata part of the body. Replaced: Call-ID, From tag, To tag (the live one), Via (one, ours,
//! with a new branch per transaction), Contact host:port, the SDP's addresses and ports (our RTP
//! sockets), Content-Length. No I/O; randomness only from `fastrand`.

use std::net::{IpAddr, SocketAddr};

use super::Transport;
use super::sip::{self, SipMessage};

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
pub fn request(
    captured: &SipMessage,
    id: &Identity,
    branch: &str,
    rtp_ports: &[u16],
) -> SipMessage {
    let mut m = captured.clone();
    // Every captured Via belongs to hops that are not in this path: ours is the only one.
    m.replace_all("via", id.via(branch));
    m.set_header("call-id", id.call_id.clone());
    if let Some(from) = m.header("from").map(|f| sip::with_tag(f, &id.from_tag)) {
        m.set_header("from", from);
    }
    if let Some(to) = m.header("to").map(str::to_string) {
        let to = match &id.to_tag {
            Some(tag) => sip::with_tag(&to, tag),
            None => without_tag(&to),
        };
        m.set_header("to", to);
    }
    if let Some(contact) = m
        .header("contact")
        .map(|c| contact(c, id.local, id.transport))
    {
        m.set_header("contact", contact);
    }
    if let Some(range) = m.sdp_range()
        && let Ok(sdp) = std::str::from_utf8(&m.body[range.clone()])
    {
        let new = sdp_offer(sdp, id.local.ip(), rtp_ports);
        m.body.splice(range, new.into_bytes());
    }
    m
}

/// ACK for a final response to `invite` (the request as sent). RFC 3261 §13.2.2.4: a 2xx is
/// acknowledged in a new transaction; §17.1.1.3: a non-2xx with the INVITE's own branch.
pub fn ack(invite: &SipMessage, response: &SipMessage, id: &Identity) -> SipMessage {
    let two_xx = response.status().is_some_and(|s| (200..300).contains(&s));
    let branch = match (two_xx, invite.top_via_branch()) {
        (false, Some(b)) => b.to_string(),
        _ => new_branch(),
    };
    let ruri = invite.start_line.split(' ').nth(1).unwrap_or("sip:invalid");
    let mut headers = vec![
        ("Via".to_string(), id.via(&branch)),
        ("Max-Forwards".to_string(), "70".to_string()),
    ];
    for name in ["from", "call-id", "route"] {
        headers.extend(invite.headers_named(name).cloned());
    }
    if let Some(to) = response.header("to") {
        headers.push(("To".into(), to.to_string()));
    }
    let cseq = invite.cseq().map_or(1, |(n, _)| n);
    headers.push(("CSeq".into(), format!("{cseq} ACK")));
    SipMessage {
        start_line: format!("ACK {ruri} SIP/2.0"),
        headers,
        body: Vec::new(),
    }
}

/// A response to a request the gateway sent us (RFC 3261 §8.2.6.2: Via, From, To, Call-ID and
/// CSeq copied).
pub fn response_to(request: &SipMessage, status: u16, reason: &str) -> SipMessage {
    let headers = ["via", "from", "to", "call-id", "cseq"]
        .iter()
        .flat_map(|c| request.headers_named(c).cloned())
        .collect();
    SipMessage {
        start_line: format!("SIP/2.0 {status} {reason}"),
        headers,
        body: Vec::new(),
    }
}

fn without_tag(value: &str) -> String {
    let cut = value.rfind('>').map_or(value.len(), |i| i + 1);
    let (uri, params) = value.split_at(cut);
    let kept: String = params
        .split(';')
        .filter(|p| !p.trim().is_empty() && !p.trim().to_ascii_lowercase().starts_with("tag="))
        .map(|p| format!(";{}", p.trim()))
        .collect();
    format!("{uri}{kept}")
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
    use crate::replay::plan;
    use crate::replay::sip::{frame_len, media_lines, param};

    fn captured_requests() -> Vec<SipMessage> {
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
            frame_len(&bytes),
            Some(bytes.len()),
            "Content-Length matches the rewritten body"
        );
        let m = SipMessage::parse(&bytes).unwrap();
        assert_eq!(m.call_id(), Some(id.call_id.as_str()));
        assert_ne!(m.call_id(), invite.call_id());
        assert_eq!(
            param(m.header("from").unwrap(), "tag"),
            Some(id.from_tag.as_str())
        );
        assert_eq!(param(m.header("to").unwrap(), "tag"), None);
        assert_eq!(
            m.headers
                .iter()
                .filter(|(n, _)| n.eq_ignore_ascii_case("via"))
                .count(),
            1
        );
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
        assert_eq!(m.start_line, invite.start_line);
        let media = media_lines(m.sdp().unwrap());
        let ip: IpAddr = "192.0.2.7".parse().unwrap();
        assert_eq!(
            media
                .iter()
                .map(|ml| (ml.addr, ml.port))
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
        assert_eq!(param(bye.header("to").unwrap(), "tag"), Some("srs-7731"));
        let mut id = Identity::fresh(local(), Transport::Tcp);
        id.to_tag = Some("live-tag".into());
        let m = request(bye, &id, "z9hG4bKx", &[]);
        assert_eq!(param(m.header("to").unwrap(), "tag"), Some("live-tag"));
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
        let ok = SipMessage::parse(
            b"SIP/2.0 200 OK\r\nTo: <sip:r@x>;tag=t9\r\nCSeq: 101 INVITE\r\n\r\n",
        )
        .unwrap();
        let a = ack(&invite, &ok, &id);
        assert_eq!(a.method(), Some("ACK"));
        assert_eq!(a.cseq(), Some((101, "ACK")));
        assert_eq!(a.header("to"), Some("<sip:r@x>;tag=t9"));
        assert_eq!(a.call_id(), Some(id.call_id.as_str()));
        assert_ne!(a.top_via_branch(), Some("z9hG4bKinv"));
        let busy = SipMessage::parse(
            b"SIP/2.0 486 Busy\r\nTo: <sip:r@x>;tag=t9\r\nCSeq: 101 INVITE\r\n\r\n",
        )
        .unwrap();
        assert_eq!(
            ack(&invite, &busy, &id).top_via_branch(),
            Some("z9hG4bKinv")
        );
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
    fn response_to_gateway_bye_copies_the_dialog_headers() {
        let bye = SipMessage::parse(
            b"BYE sip:x SIP/2.0\r\nVia: SIP/2.0/UDP gw;branch=z9hG4bK1\r\nf: <sip:g>;tag=1\r\nTo: <sip:s>;tag=2\r\nCall-ID: c\r\nCSeq: 5 BYE\r\n\r\n",
        )
        .unwrap();
        let r = response_to(&bye, 200, "OK");
        assert_eq!(r.status(), Some(200));
        assert_eq!(r.headers.len(), 5);
        assert_eq!(r.cseq(), Some((5, "BYE")));
    }
}
