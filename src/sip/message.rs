//! SIP message model, parser and serializer (RFC 3261 §7, §20).
//!
//! Messages are kept close to the wire: headers stay an ordered list of (name, value) pairs as
//! received, so a response can copy Via/From/To/Call-ID/CSeq verbatim and configured headers can
//! be carried into `info` under the names the SRC used. Compact header forms (§7.3.3) are
//! understood by every lookup. This module does no I/O and does not decide anything about
//! transactions or dialogs.
//!
//! Why not a crate: `rsip` has had no release since 2022 and does not accept compact forms; the
//! maintained fork lives inside `rsipstack`, whose parser cannot be had without its async
//! transport (which truncates UDP at 8 KB). See docs/architecture.md.

use std::fmt::Write as _;

/// Upper bound on a message we parse (UDP datagrams cannot exceed it; TCP framing enforces it).
pub const MAX_MESSAGE_SIZE: usize = 65_535;

/// Why bytes were not a SIP message. Small and `Copy`: it is produced on the receive path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ParseError {
    /// No blank line separates the header from the body.
    #[error("message has no end of header")]
    Incomplete,
    /// The start line is neither a request line nor a status line.
    #[error("bad start line")]
    BadStartLine,
    /// A header line has no colon, or its name is empty or not a token (RFC 3261 §25.1).
    #[error("bad header line")]
    BadHeader,
    /// Content-Length is not a non-negative number, or appears twice (RFC 3261 §20.14; RFC 4475
    /// §3.1.2.3, §3.3.9: the receiver cannot know where the body ends).
    #[error("bad Content-Length")]
    BadContentLength,
    /// Content-Length says more bytes than the datagram carries (RFC 3261 §18.3: malformed).
    #[error("body shorter than Content-Length")]
    BodyTruncated,
    /// A header required by RFC 3261 §8.1.1 (Via, From, To, Call-ID, CSeq) is missing or unusable.
    #[error("missing or bad mandatory header {0}")]
    MissingHeader(&'static str),
    /// The message is larger than [`MAX_MESSAGE_SIZE`].
    #[error("message too large")]
    TooLarge,
    /// A request line that is not `Method SP Request-URI SP SIP-Version` with single spaces
    /// (RFC 3261 §7.1; RFC 4475 §3.1.2.8-10).
    #[error("malformed request line")]
    BadRequestLine,
    /// The request names a SIP version other than 2.0: answered 505 (RFC 3261 §21.5.7).
    #[error("SIP version not supported")]
    UnsupportedVersion,
    /// The Request-URI is not a URI, or a SIP URI with a bad host or escaped headers (RFC 3261
    /// §19.1.1, RFC 5118 §4.2, §4.10; RFC 4475 §3.1.2.7, §3.1.2.11).
    #[error("malformed Request-URI")]
    BadRequestUri,
    /// A header that may appear once appears more than once (RFC 3261 §7.3.1; RFC 4475 §3.3.8).
    #[error("{0} appears more than once")]
    DuplicateHeader(&'static str),
    /// A header value does not follow its grammar (RFC 3261 §25.1; RFC 4475 §3.1.2).
    #[error("malformed {0} header")]
    BadHeaderValue(&'static str),
    /// The CSeq method differs from the request method (RFC 3261 §8.1.1.5; RFC 4475 §3.1.2.17).
    #[error("CSeq method does not match the request")]
    CSeqMismatch,
}

/// First line of a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartLine {
    Request { method: String, uri: String },
    Response { code: u16, reason: String },
}

/// A parsed SIP message. Headers keep their order and spelling.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub start: StartLine,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// Full names of the compact forms (RFC 3261 §7.3.3, RFC 4028 `x`, RFC 3515 `r`, …).
fn expand_compact(name: &str) -> &str {
    if name.len() != 1 {
        return name;
    }
    match name.as_bytes()[0].to_ascii_lowercase() {
        b'i' => "Call-ID",
        b'm' => "Contact",
        b'e' => "Content-Encoding",
        b'l' => "Content-Length",
        b'c' => "Content-Type",
        b'f' => "From",
        b's' => "Subject",
        b'k' => "Supported",
        b't' => "To",
        b'v' => "Via",
        b'x' => "Session-Expires",
        b'o' => "Event",
        b'r' => "Refer-To",
        b'b' => "Referred-By",
        b'u' => "Allow-Events",
        b'a' => "Accept-Contact",
        b'j' => "Reject-Contact",
        b'd' => "Request-Disposition",
        b'y' => "Identity",
        _ => name,
    }
}

/// True when a header name as received means `canonical` (case-insensitive, compact forms).
pub fn header_is(received: &str, canonical: &str) -> bool {
    expand_compact(received).eq_ignore_ascii_case(canonical)
}

/// Index of the end of the header section and the length of its terminator.
fn header_end(buf: &[u8]) -> Option<(usize, usize)> {
    let mut i = 0;
    while i + 1 < buf.len() {
        if buf[i] == b'\n' {
            if buf[i + 1] == b'\n' {
                return Some((i + 1, 1));
            }
            if buf[i + 1] == b'\r' && buf.get(i + 2) == Some(&b'\n') {
                return Some((i + 1, 2));
            }
        }
        i += 1;
    }
    None
}

/// For stream transports: the length of the first complete message in `buf`, `Ok(None)` if more
/// bytes are needed. Leading CRLFs (RFC 5626 keep-alives) are part of no message and are reported
/// as `Ok(Some(n))` with [`Framed::KeepAlive`]. A missing, negative or repeated Content-Length
/// cannot be framed (RFC 4475 §3.1.2.3, §3.3.9: the connection should be closed).
pub fn frame(buf: &[u8]) -> Result<Option<Framed>, ParseError> {
    let crlf = buf.iter().take_while(|b| **b == b'\r' || **b == b'\n').count();
    if crlf > 0 {
        return Ok(Some(Framed::KeepAlive(crlf)));
    }
    let Some((end, term)) = header_end(buf) else {
        if buf.len() > MAX_MESSAGE_SIZE {
            return Err(ParseError::TooLarge);
        }
        return Ok(None);
    };
    let head = String::from_utf8_lossy(&buf[..end]);
    let mut length = None;
    // A folded line continues the header above it (§7.3.1): it is never a Content-Length of
    // its own, whatever it says.
    for line in head.lines().filter(|l| !l.starts_with([' ', '\t'])) {
        if let Some((name, value)) = line.split_once(':')
            && header_is(name.trim_end(), "Content-Length")
        {
            if length.is_some() {
                return Err(ParseError::BadContentLength);
            }
            length = Some(value.trim().parse::<usize>().map_err(|_| ParseError::BadContentLength)?);
        }
    }
    // A Content-Length near usize::MAX must not wrap around into a short frame.
    let total = (end + term).checked_add(length.unwrap_or(0)).ok_or(ParseError::TooLarge)?;
    if total > MAX_MESSAGE_SIZE {
        return Err(ParseError::TooLarge);
    }
    if buf.len() < total {
        return Ok(None);
    }
    Ok(Some(Framed::Message(total)))
}

/// What [`frame`] found at the start of a stream buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framed {
    /// `n` bytes of CR/LF keep-alive.
    KeepAlive(usize),
    /// A whole message of `n` bytes.
    Message(usize),
}

/// Headers that may appear at most once in a request (RFC 3261 §7.3.1, §20; Content-Length is
/// checked while framing).
const SINGLE_VALUED: &[&str] = &["Call-ID", "CSeq", "From", "To", "Max-Forwards", "Content-Type"];

impl Message {
    /// Parses one message. On a datagram transport a body longer than Content-Length is cut to
    /// it (RFC 3261 §18.3; RFC 4475 §3.1.1.8) and a shorter one is an error. A request line
    /// that is malformed but readable fails with the error that says why, so that
    /// [`Message::parse_unchecked`] can still address a 400 or 505 to it.
    pub fn parse(buf: &[u8]) -> Result<Message, ParseError> {
        let (msg, problem) = Self::parse_inner(buf)?;
        if let Some(p) = problem {
            return Err(p);
        }
        msg.check_mandatory()?;
        Ok(msg)
    }

    /// Like [`Message::parse`] but without the mandatory-header check and the strict reading of
    /// the request line and Content-Length: used to answer a broken request with 400 when it
    /// still carries enough to address a response.
    pub fn parse_unchecked(buf: &[u8]) -> Result<Message, ParseError> {
        Self::parse_inner(buf).map(|(m, _)| m)
    }

    /// The message as best it can be read, and the first reason it is not well formed.
    fn parse_inner(buf: &[u8]) -> Result<(Message, Option<ParseError>), ParseError> {
        if buf.len() > MAX_MESSAGE_SIZE {
            return Err(ParseError::TooLarge);
        }
        // RFC 3261 §7.5: ignore CRLFs before the start line.
        let start = buf.iter().take_while(|b| **b == b'\r' || **b == b'\n').count();
        let buf = &buf[start..];
        let (end, term) = header_end(buf).ok_or(ParseError::Incomplete)?;
        // Header values are UTF-8 (RFC 3261 §7.3.1), but a Latin-1 display name from an old
        // PBX must not lose a recording: undecodable bytes become U+FFFD.
        let head = String::from_utf8_lossy(&buf[..end]);
        let rest = &buf[end + term..];

        let mut lines = head.split('\n').map(|l| l.strip_suffix('\r').unwrap_or(l));
        let first = lines.next().ok_or(ParseError::BadStartLine)?;
        let (start, mut problem) = parse_start_line(first)?;

        let mut headers: Vec<(String, String)> = Vec::new();
        for line in lines {
            if line.is_empty() {
                continue;
            }
            if line.starts_with([' ', '\t']) {
                // §7.3.1 folding: a continuation line belongs to the previous header.
                let (_, value) = headers.last_mut().ok_or(ParseError::BadHeader)?;
                // A blank continuation adds nothing: the value stays trimmed, so it reads the
                // same once serialized.
                let more = line.trim();
                if !value.is_empty() && !more.is_empty() {
                    value.push(' ');
                }
                value.push_str(more);
                continue;
            }
            let (name, value) = line.split_once(':').ok_or(ParseError::BadHeader)?;
            let name = name.trim_end();
            // §7.3.1, §25.1: a header name is a token. A stray CR before it would otherwise
            // hide a Content-Length from this parser that `frame` still sees.
            if name.is_empty() || !name.bytes().all(is_token_char) {
                return Err(ParseError::BadHeader);
            }
            headers.push((name.to_string(), value.trim().to_string()));
        }

        let mut msg = Message { start, headers, body: Vec::new() };
        let lengths: Vec<_> = msg.headers_named("Content-Length").map(|v| v.trim().parse::<usize>()).collect();
        let body = match (lengths.first(), lengths.get(1)) {
            (Some(&Ok(n)), None) => {
                if n > rest.len() {
                    problem.get_or_insert(ParseError::BodyTruncated);
                }
                &rest[..n.min(rest.len())]
            }
            // RFC 3261 §18.3: without Content-Length a datagram's body runs to its end
            // (RFC 4475 §3.4.1).
            (None, _) => rest,
            _ => {
                problem.get_or_insert(ParseError::BadContentLength);
                rest
            }
        };
        msg.body = body.to_vec();
        Ok((msg, problem))
    }

    fn check_mandatory(&self) -> Result<(), ParseError> {
        for name in ["Via", "From", "To", "Call-ID", "CSeq"] {
            if self.header(name).is_none_or(|v| v.trim().is_empty()) {
                return Err(ParseError::MissingHeader(name));
            }
        }
        if self.cseq().is_none() {
            return Err(ParseError::MissingHeader("CSeq"));
        }
        Ok(())
    }

    /// The grammar checks a UAS applies to a request before acting on it: single-valued
    /// headers appear once, the CSeq method is the request's, every Via value and the
    /// From/To/Contact name-addrs follow RFC 3261 §25.1, and a SIP Request-URI has a valid
    /// host and no escaped headers. Kept apart from [`Message::parse`] so that the endpoint can
    /// answer an unknown method 501 first (RFC 4475 §3.1.2.18).
    pub fn check_request(&self) -> Result<(), ParseError> {
        for name in SINGLE_VALUED {
            if self.headers_named(name).nth(1).is_some() {
                return Err(ParseError::DuplicateHeader(name));
            }
        }
        if let (Some(method), Some((_, cseq_method))) = (self.method(), self.cseq())
            && method != cseq_method
        {
            return Err(ParseError::CSeqMismatch);
        }
        if let Some(uri) = self.request_uri()
            && !valid_request_uri(uri)
        {
            return Err(ParseError::BadRequestUri);
        }
        for v in self.headers_named("Via") {
            if !list_elements(v).all(valid_via) {
                return Err(ParseError::BadHeaderValue("Via"));
            }
        }
        for name in ["From", "To"] {
            if self.header(name).is_some_and(|v| !valid_name_addr(v)) {
                return Err(ParseError::BadHeaderValue(name));
            }
        }
        for v in self.headers_named("Contact") {
            if v.trim() != "*" && !list_elements(v).all(valid_name_addr) {
                return Err(ParseError::BadHeaderValue("Contact"));
            }
        }
        Ok(())
    }

    /// First value of a header (case-insensitive, compact forms understood).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| header_is(n, name)).map(|(_, v)| v.as_str())
    }

    /// All values of a header, in order, each comma-separated element of a list header apart
    /// only where the caller splits them.
    pub fn headers_named<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.headers.iter().filter(move |(n, _)| header_is(n, name)).map(|(_, v)| v.as_str())
    }

    /// Option tags of a list header such as Require or Supported (`Require: a, b` and repeated
    /// headers alike).
    pub fn option_tags<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.headers_named(name).flat_map(|v| v.split(',')).map(str::trim).filter(|t| !t.is_empty())
    }

    pub fn method(&self) -> Option<&str> {
        match &self.start {
            StartLine::Request { method, .. } => Some(method),
            StartLine::Response { .. } => None,
        }
    }

    /// The Request-URI (`None` for responses).
    pub fn request_uri(&self) -> Option<&str> {
        match &self.start {
            StartLine::Request { uri, .. } => Some(uri),
            StartLine::Response { .. } => None,
        }
    }

    pub fn status(&self) -> Option<u16> {
        match &self.start {
            StartLine::Response { code, .. } => Some(*code),
            StartLine::Request { .. } => None,
        }
    }

    pub fn call_id(&self) -> &str {
        self.header("Call-ID").unwrap_or("")
    }

    /// CSeq number and method.
    pub fn cseq(&self) -> Option<(u32, &str)> {
        let v = self.header("CSeq")?;
        let mut it = v.split_whitespace();
        let n = it.next()?.parse().ok()?;
        let m = it.next()?;
        Some((n, m))
    }

    /// The `tag` parameter of From or To.
    pub fn tag(&self, header: &str) -> Option<&str> {
        self.header(header).and_then(|v| param(name_addr_params(v), "tag"))
    }

    /// The top Via, parsed.
    pub fn top_via(&self) -> Option<Via<'_>> {
        let v = self.header("Via")?;
        // A Via header may carry several comma-separated values; the first is the top one.
        Via::parse(split_list(v).next()?)
    }

    /// Serializes the message with a correct Content-Length.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut s = String::with_capacity(512 + self.body.len());
        match &self.start {
            StartLine::Request { method, uri } => {
                let _ = write!(s, "{method} {uri} SIP/2.0\r\n");
            }
            StartLine::Response { code, reason } => {
                let _ = write!(s, "SIP/2.0 {code} {reason}\r\n");
            }
        }
        for (n, v) in &self.headers {
            if header_is(n, "Content-Length") {
                continue;
            }
            let _ = write!(s, "{n}: {v}\r\n");
        }
        let _ = write!(s, "Content-Length: {}\r\n\r\n", self.body.len());
        let mut out = s.into_bytes();
        out.extend_from_slice(&self.body);
        out
    }

    /// A response to this request per RFC 3261 §8.2.6.2: Via, From, To, Call-ID and CSeq copied
    /// (To gets `to_tag` if it has none and one is given).
    pub fn response(&self, code: u16, reason: &str, to_tag: Option<&str>) -> Message {
        let mut headers = Vec::with_capacity(8);
        for (n, v) in &self.headers {
            if header_is(n, "Via") || header_is(n, "From") || header_is(n, "Call-ID") || header_is(n, "CSeq") {
                headers.push((n.clone(), v.clone()));
            } else if header_is(n, "To") {
                let mut v = v.clone();
                if let Some(tag) = to_tag
                    && param(name_addr_params(&v), "tag").is_none() && code != 100 {
                        let _ = write!(v, ";tag={tag}");
                    }
                headers.push((n.clone(), v));
            }
        }
        Message { start: StartLine::Response { code, reason: reason.to_string() }, headers, body: Vec::new() }
    }

    pub fn push_header(&mut self, name: &str, value: impl Into<String>) {
        self.headers.push((name.to_string(), value.into()));
    }

    /// Leaves exactly one `name` header (compact forms match), carrying `value`: the first one
    /// keeps its place and spelling and any later ones are removed; appended when there is none.
    pub fn set_header(&mut self, name: &str, value: impl Into<String>) {
        let Some(first) = self.headers.iter().position(|(n, _)| header_is(n, name)) else {
            self.push_header(name, value);
            return;
        };
        self.headers[first].1 = value.into();
        let mut index = 0;
        self.headers.retain(|(n, _)| {
            let keep = index <= first || !header_is(n, name);
            index += 1;
            keep
        });
    }
}

/// Reads a start line. A request line is read leniently (runs of whitespace, trailing blanks,
/// LWS inside the Request-URI) so that a malformed one can still be answered; what is wrong
/// with it comes back as the second value.
fn parse_start_line(line: &str) -> Result<(StartLine, Option<ParseError>), ParseError> {
    if let Some(rest) = line.strip_prefix("SIP/2.0 ") {
        let rest = rest.trim_end();
        let (code, reason) = rest.split_once(' ').unwrap_or((rest, ""));
        // RFC 4475 §3.1.2.19: an overlarge status code is not a response; it is dropped.
        let code: u16 = code.parse().map_err(|_| ParseError::BadStartLine)?;
        if !(100..700).contains(&code) {
            return Err(ParseError::BadStartLine);
        }
        return Ok((StartLine::Response { code, reason: reason.to_string() }, None));
    }
    let words: Vec<&str> = line.split_ascii_whitespace().collect();
    let (Some(method), Some(version)) = (words.first(), words.last()) else {
        return Err(ParseError::BadStartLine);
    };
    // §25.1: method is a token; anything not ending in a SIP version is not SIP at all.
    let sip_version = version.get(..4).is_some_and(|p| p.eq_ignore_ascii_case("SIP/"));
    if words.len() < 3 || !method.bytes().all(is_token_char) || !sip_version {
        return Err(ParseError::BadStartLine);
    }
    let uri = words[1..words.len() - 1].concat();
    let exact = line.split(' ').collect::<Vec<_>>();
    let problem = if exact.len() != 3 || exact.iter().any(|w| w.is_empty() || w.contains(char::is_whitespace)) {
        Some(ParseError::BadRequestLine)
    } else if !version.eq_ignore_ascii_case("SIP/2.0") {
        Some(ParseError::UnsupportedVersion)
    } else if !valid_uri(&uri) {
        Some(ParseError::BadRequestUri)
    } else {
        None
    };
    Ok((StartLine::Request { method: method.to_string(), uri }, problem))
}

fn is_token_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-.!%*_+`'~".contains(&b)
}

/// `scheme ":" rest` with no whitespace (RFC 3261 §25.1 `absoluteURI`, loosely).
fn valid_uri(uri: &str) -> bool {
    let Some((scheme, rest)) = uri.split_once(':') else { return false };
    let mut s = scheme.bytes();
    s.next().is_some_and(|b| b.is_ascii_alphabetic())
        && s.all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b))
        && !rest.is_empty()
        && !uri.contains(char::is_whitespace)
}

/// A Request-URI: any URI; a SIP(S) one must have a valid host (IPv6 in brackets, RFC 5118
/// §4.2, §4.10) and no headers (RFC 4475 §3.1.2.11: escaped headers make no sense there).
fn valid_request_uri(uri: &str) -> bool {
    if !valid_uri(uri) {
        return false;
    }
    let Some(rest) = strip_sip_scheme(uri) else { return true };
    // The userinfo cannot contain '@' unescaped, so the first one ends it.
    let hostpart = rest.split_once('@').map_or(rest, |(_, h)| h);
    if hostpart.contains('?') {
        return false;
    }
    let hostport = hostpart.split(';').next().unwrap_or(hostpart);
    valid_hostport(hostport)
}

/// The part after `sip:` or `sips:` (case-insensitive), `None` for other schemes.
pub fn strip_sip_scheme(uri: &str) -> Option<&str> {
    let (scheme, rest) = uri.split_once(':')?;
    (scheme.eq_ignore_ascii_case("sip") || scheme.eq_ignore_ascii_case("sips")).then_some(rest)
}

/// `host[:port]` where host is a name, an IPv4 address or a bracketed IPv6 reference.
fn valid_hostport(s: &str) -> bool {
    let Some((host, _)) = split_host_port(s) else { return false };
    if s.trim_start().starts_with('[') {
        return host.parse::<std::net::Ipv6Addr>().is_ok();
    }
    // Names and IPv4 addresses; '_' is not in the grammar but real hosts carry it.
    !host.is_empty() && host.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b))
}

/// Splits a header value on commas that are not inside quotes or angle brackets, keeping empty
/// elements (`a,,b` has three): for the grammar checks.
fn list_elements(v: &str) -> impl Iterator<Item = &str> {
    let mut out = Vec::new();
    let (mut depth, mut quoted, mut start) = (0i32, false, 0usize);
    let bytes = v.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' if quoted => i += 1,
            b'"' => quoted = !quoted,
            b'<' if !quoted => depth += 1,
            b'>' if !quoted => depth -= 1,
            b',' if !quoted && depth <= 0 => {
                out.push(v[start..i].trim());
                start = i + 1;
            }
            _ => {}
        }
        i += 1;
    }
    out.push(v.get(start..).unwrap_or("").trim());
    out.into_iter()
}

/// Splits a header value on commas that are not inside quotes or angle brackets.
pub fn split_list(v: &str) -> impl Iterator<Item = &str> {
    list_elements(v).filter(|s| !s.is_empty())
}

/// Splits `;a=b;c="x;y"` on the semicolons outside quotes; the first item is what precedes the
/// first semicolon.
fn split_params(v: &str) -> impl Iterator<Item = &str> {
    let mut out = Vec::new();
    let (mut quoted, mut start) = (false, 0usize);
    let bytes = v.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' if quoted => i += 1,
            b'"' => quoted = !quoted,
            b';' if !quoted => {
                out.push(&v[start..i]);
                start = i + 1;
            }
            _ => {}
        }
        i += 1;
    }
    out.push(v.get(start..).unwrap_or(""));
    out.into_iter()
}

/// Header parameters (`;name[=value]` after the value proper) have names; one trailing `;` is
/// tolerated, an empty parameter between two is not (RFC 4475 §3.1.2.1).
fn valid_params(params: &str) -> bool {
    let items: Vec<&str> = split_params(params).skip(1).collect();
    let last = items.len().saturating_sub(1);
    items.iter().enumerate().all(|(i, p)| {
        let name = p.split_once('=').map_or(*p, |(n, _)| n).trim();
        if name.is_empty() {
            return i == last && p.trim().is_empty();
        }
        name.bytes().all(is_token_char)
    })
}

/// Balanced double quotes, backslash escapes honoured (RFC 3261 §25.1 `quoted-string`).
fn quotes_balanced(v: &str) -> bool {
    let mut quoted = false;
    let mut chars = v.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' if quoted => {
                chars.next();
            }
            '"' => quoted = !quoted,
            _ => {}
        }
    }
    !quoted
}

/// One Via value: `SIP / 2.0 / transport sent-by *(;param)` (RFC 3261 §20.42, LWS allowed
/// around the slashes) with a valid sent-by.
fn valid_via(v: &str) -> bool {
    via_parts(v).is_some_and(|(transport, sent_by, params)| {
        transport.bytes().all(is_token_char) && valid_hostport(sent_by) && valid_params(params)
    })
}

/// Transport, sent-by and parameters of a Via value, with LWS allowed around the slashes and
/// before the parameters (RFC 3261 §25.1 `SLASH`, `SEMI`; RFC 4475 §3.1.1.1). The protocol
/// name and version are not checked: a SIP/7.0 request must still be answerable with 505.
fn via_parts(v: &str) -> Option<(&str, &str, &str)> {
    let (name, rest) = v.trim().split_once('/')?;
    let (version, rest) = rest.split_once('/')?;
    let rest = rest.trim_start();
    let end = rest.find(|c: char| c.is_whitespace() || c == ';').unwrap_or(rest.len());
    let (transport, rest) = rest.split_at(end);
    let (sent_by, params) = match rest.find(';') {
        Some(i) => (rest[..i].trim(), &rest[i..]),
        None => (rest.trim(), ""),
    };
    let empty = name.trim().is_empty() || version.trim().is_empty() || transport.is_empty();
    (!empty).then_some((transport, sent_by, params))
}

/// A From/To/Contact value: `[display-name] <URI> *(;param)` or `addr-spec *(;param)`
/// (RFC 3261 §20.10, §25.1). The display name is a quoted string or tokens (UTF-8 tolerated,
/// RFC 4475 §3.1.2.15); the URI has no blanks (§3.1.2.14) and, without angle brackets, no `?`
/// or `,` (§3.1.2.13). Quotes must balance (§3.1.2.6).
fn valid_name_addr(v: &str) -> bool {
    if !quotes_balanced(v) {
        return false;
    }
    let v = v.trim();
    let (display, uri, params) = match find_unquoted(v, b'<') {
        Some(open) => {
            let Some(close) = v[open..].find('>').map(|i| open + i) else { return false };
            (v[..open].trim(), &v[open + 1..close], &v[close + 1..])
        }
        None => {
            let uri_end = v.find(';').unwrap_or(v.len());
            let uri = v[..uri_end].trim();
            if uri.contains(['?', ',']) {
                return false;
            }
            ("", uri, &v[uri_end..])
        }
    };
    let display_ok = if display.starts_with('"') {
        display.len() >= 2 && display.ends_with('"')
    } else {
        display.split_ascii_whitespace().all(|w| w.bytes().all(|b| !b.is_ascii() || is_token_char(b)))
    };
    display_ok && valid_uri(uri) && (params.trim().is_empty() || params.trim_start().starts_with(';')) && valid_params(params)
}

/// Index of the first `byte` outside double quotes.
fn find_unquoted(v: &str, byte: u8) -> Option<usize> {
    let mut quoted = false;
    let bytes = v.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' if quoted => i += 1,
            b'"' => quoted = !quoted,
            b if b == byte && !quoted => return Some(i),
            _ => {}
        }
        i += 1;
    }
    None
}

/// The header parameters of a name-addr or addr-spec value (after `>` if there is one).
pub fn name_addr_params(v: &str) -> &str {
    match v.rfind('>') {
        Some(i) => &v[i + 1..],
        // addr-spec without brackets: parameters after the first ';' belong to the header.
        None => v.find(';').map_or("", |i| &v[i..]),
    }
}

/// The URI inside a name-addr (`"Bob" <sip:bob@x>;tag=1` → `sip:bob@x`) or an addr-spec.
pub fn name_addr_uri(v: &str) -> &str {
    if let (Some(a), Some(b)) = (v.find('<'), v.rfind('>'))
        && a < b {
            return v[a + 1..b].trim();
        }
    v.split(';').next().unwrap_or(v).trim()
}

/// The display name of a name-addr, unquoted.
pub fn name_addr_display(v: &str) -> Option<&str> {
    let i = v.find('<')?;
    let d = v[..i].trim().trim_matches('"').trim();
    (!d.is_empty()).then_some(d)
}

/// Value of `name` in a `;a=b;c` parameter list (case-insensitive name, blanks around `=`
/// allowed). A flag yields `""`.
pub fn param<'a>(params: &'a str, name: &str) -> Option<&'a str> {
    split_params(params).skip(1).map(str::trim).find_map(|p| {
        let (n, v) = p.split_once('=').unwrap_or((p, ""));
        n.trim().eq_ignore_ascii_case(name).then(|| v.trim().trim_matches('"'))
    })
}

/// A parsed Via value (RFC 3261 §20.42).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Via<'a> {
    pub transport: &'a str,
    pub host: &'a str,
    pub port: Option<u16>,
    pub params: &'a str,
}

impl<'a> Via<'a> {
    /// Reads one Via value (see [`via_parts`] for the tolerated blanks).
    pub fn parse(v: &'a str) -> Option<Via<'a>> {
        let (transport, sent_by, params) = via_parts(v)?;
        let (host, port) = split_host_port(sent_by)?;
        Some(Via { transport, host, port, params })
    }

    pub fn branch(&self) -> Option<&'a str> {
        param(self.params, "branch")
    }

    /// `rport` present (RFC 3581), with or without a value.
    pub fn has_rport(&self) -> bool {
        param(self.params, "rport").is_some()
    }

    /// The sent-by as text (`host:port`, IPv6 in brackets), the transaction key's second half
    /// (§17.2.3).
    pub fn sent_by(&self) -> String {
        let host = if self.host.contains(':') { format!("[{}]", self.host) } else { self.host.to_string() };
        match self.port {
            Some(p) => format!("{host}:{p}"),
            None => host,
        }
    }
}

/// `host`, `host:port`, `[v6]`, `[v6]:port`.
pub fn split_host_port(s: &str) -> Option<(&str, Option<u16>)> {
    let s = s.trim();
    if let Some(rest) = s.strip_prefix('[') {
        let end = rest.find(']')?;
        let host = &rest[..end];
        let after = &rest[end + 1..];
        let port = match after.strip_prefix(':') {
            Some(p) => Some(p.trim().parse().ok()?),
            None if after.is_empty() => None,
            None => return None,
        };
        return Some((host, port));
    }
    match s.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') => Some((h, Some(p.trim().parse().ok()?))),
        _ if s.is_empty() => None,
        _ => Some((s, None)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const INVITE: &str = "INVITE sip:srs@192.0.2.10:5060 SIP/2.0\r\n\
v: SIP/2.0/UDP 192.0.2.1:5070;branch=z9hG4bK-1;rport\r\n\
f: \"SBC\" <sip:src@192.0.2.1>;tag=abc\r\n\
t: <sip:srs@192.0.2.10>\r\n\
i: call-1@192.0.2.1\r\n\
CSeq: 1 INVITE\r\n\
Require: siprec\r\n\
Subject: a\r\n  folded\r\n\
c: application/sdp\r\n\
l: 4\r\n\r\nv=0\r\nEXTRA";

    #[test]
    fn compact_forms_and_folding() {
        let m = Message::parse(INVITE.as_bytes()).unwrap();
        assert_eq!(m.method(), Some("INVITE"));
        assert_eq!(m.call_id(), "call-1@192.0.2.1");
        assert_eq!(m.tag("From"), Some("abc"));
        assert_eq!(m.tag("To"), None);
        assert_eq!(m.header("Subject"), Some("a folded"));
        assert_eq!(m.body, b"v=0\r");
        let via = m.top_via().unwrap();
        assert_eq!((via.transport, via.host, via.port), ("UDP", "192.0.2.1", Some(5070)));
        assert_eq!(via.branch(), Some("z9hG4bK-1"));
        assert!(via.has_rport());
        assert_eq!(m.cseq(), Some((1, "INVITE")));
    }

    #[test]
    fn content_length_longer_than_datagram_is_malformed() {
        let msg = INVITE.replace("l: 4", "l: 400");
        assert_eq!(Message::parse(msg.as_bytes()), Err(ParseError::BodyTruncated));
    }

    #[test]
    fn missing_call_id_is_rejected() {
        let msg = INVITE.replace("i: call-1@192.0.2.1\r\n", "");
        assert_eq!(Message::parse(msg.as_bytes()), Err(ParseError::MissingHeader("Call-ID")));
    }

    #[test]
    fn response_copies_dialog_headers_and_adds_tag() {
        let m = Message::parse(INVITE.as_bytes()).unwrap();
        let r = m.response(200, "OK", Some("srs1"));
        let text = String::from_utf8(r.to_bytes()).unwrap();
        assert!(text.starts_with("SIP/2.0 200 OK\r\n"));
        assert!(text.contains("t: <sip:srs@192.0.2.10>;tag=srs1\r\n"));
        assert!(text.contains("v: SIP/2.0/UDP 192.0.2.1:5070;branch=z9hG4bK-1;rport\r\n"));
        assert!(text.ends_with("Content-Length: 0\r\n\r\n"));
        let again = Message::parse(text.as_bytes()).unwrap();
        assert_eq!(again.status(), Some(200));
        assert_eq!(again.tag("To"), Some("srs1"));
    }

    #[test]
    fn stream_framing() {
        let msg = INVITE.replace("EXTRA", "").replace("l: 4", "l: 5");
        let mut buf = b"\r\n\r\n".to_vec();
        buf.extend_from_slice(msg.as_bytes());
        assert_eq!(frame(&buf), Ok(Some(Framed::KeepAlive(4))));
        let rest = &buf[4..];
        assert_eq!(frame(&rest[..rest.len() - 1]), Ok(None));
        assert_eq!(frame(rest), Ok(Some(Framed::Message(rest.len()))));
    }

    #[test]
    fn list_and_name_addr_helpers() {
        let v: Vec<_> = split_list("\"a, b\" <sip:x>;p=1, <sip:y,z>").collect();
        assert_eq!(v, vec!["\"a, b\" <sip:x>;p=1", "<sip:y,z>"]);
        assert_eq!(name_addr_uri("\"Bob\" <sip:bob@x>;tag=1"), "sip:bob@x");
        assert_eq!(name_addr_display("\"Bob\" <sip:bob@x>;tag=1"), Some("Bob"));
        assert_eq!(split_host_port("[2001:db8::1]:5060"), Some(("2001:db8::1", Some(5060))));
        assert_eq!(split_host_port("host"), Some(("host", None)));
    }

    #[test]
    fn request_uri_is_read_from_requests_only() {
        let m = Message::parse(INVITE.as_bytes()).unwrap();
        assert_eq!(m.request_uri(), Some("sip:srs@192.0.2.10:5060"));
        assert_eq!(m.response(200, "OK", None).request_uri(), None);
    }

    #[test]
    fn set_header_keeps_one_field_in_place_of_the_first() {
        let mut m = Message::parse(INVITE.as_bytes()).unwrap();
        m.push_header("Via", "SIP/2.0/UDP 192.0.2.9;branch=z9hG4bK-2");
        m.set_header("Via", "SIP/2.0/TCP 192.0.2.5;branch=z9hG4bK-3");
        let vias: Vec<_> = m.headers.iter().filter(|(n, _)| header_is(n, "Via")).collect();
        assert_eq!(vias.len(), 1);
        assert_eq!(m.headers[0], ("v".to_string(), "SIP/2.0/TCP 192.0.2.5;branch=z9hG4bK-3".to_string()));
        m.set_header("Call-ID", "other");
        assert_eq!(m.call_id(), "other");
        assert_eq!(m.headers.len(), 9, "replaced, not added");
        m.set_header("Contact", "<sip:src@192.0.2.5>");
        assert_eq!(m.headers.last().map(|(n, v)| (n.as_str(), v.as_str())), Some(("Contact", "<sip:src@192.0.2.5>")));
    }

    #[test]
    fn to_bytes_after_a_body_change_frames_to_the_new_length() {
        let mut m = Message::parse(INVITE.as_bytes()).unwrap();
        m.body.extend_from_slice(b"more");
        let bytes = m.to_bytes();
        assert_eq!(frame(&bytes), Ok(Some(Framed::Message(bytes.len()))));
        assert_eq!(frame(&bytes[..bytes.len() - 1]), Ok(None));
        assert_eq!(Message::parse(&bytes).unwrap().body, b"v=0\rmore");
    }

    #[test]
    fn rtp_and_text_that_is_not_sip_are_rejected() {
        let rtp = [0x80, 0x00, 0x00, 0x01, 0, 0, 0, 0, 0, 0, 0, 1, b'\n', b'\n'];
        assert!(Message::parse_unchecked(&rtp).is_err());
        assert_eq!(Message::parse_unchecked(b"hello world\r\n\r\n"), Err(ParseError::BadStartLine));
    }

    // Found by fuzzing (fuzz/regressions/sip_message/frame-content-length-overflow): the sum
    // overflowed, a panic in debug builds and a frame shorter than its header in release.
    #[test]
    fn frame_content_length_near_usize_max_is_too_large() {
        let msg = format!("INVITE sip:a@b SIP/2.0\r\nContent-Length: {}\r\n\r\n", usize::MAX);
        assert_eq!(frame(msg.as_bytes()), Err(ParseError::TooLarge));
    }

    // Found by fuzzing (fuzz/regressions/sip_message/cr-before-header-name): `parse` kept
    // "\rContent-Length" as an unknown header while `frame` counted it as the Content-Length, so
    // a message we serialized did not frame.
    #[test]
    fn header_name_after_a_stray_cr_is_a_bad_header() {
        let msg = INVITE.replace("CSeq: 1 INVITE\r\n", "CSeq: 1 INVITE\n\rContent-Length: 0\r\n");
        assert_eq!(Message::parse(msg.as_bytes()), Err(ParseError::BadHeader));
    }

    // Found by fuzzing (fuzz/regressions/sip_message/blank-folded-line): a continuation line of
    // blanks left a trailing space in the value, so serializing and parsing again changed it.
    #[test]
    fn blank_folded_line_adds_nothing_to_the_value() {
        let msg = INVITE.replace("Require: siprec\r\n", "Require: siprec\r\n \t\r\n");
        let parsed = Message::parse(msg.as_bytes()).unwrap();
        assert_eq!(parsed.header("Require"), Some("siprec"));
        let wire = parsed.to_bytes();
        assert_eq!(Message::parse(&wire).unwrap().to_bytes(), wire);
    }

    #[test]
    fn frame_ignores_a_content_length_inside_a_folded_line() {
        let msg = "OPTIONS sip:a@b SIP/2.0\r\nSubject: x\r\n Content-Length: 5\r\nContent-Length: 2\r\n\r\nabcdefg";
        assert_eq!(frame(msg.as_bytes()), Ok(Some(Framed::Message(msg.len() - 5))));
    }

    #[test]
    fn garbage_never_panics() {
        for len in 0..INVITE.len() {
            let _ = Message::parse(&INVITE.as_bytes()[..len]);
            let _ = frame(&INVITE.as_bytes()[..len]);
        }
        let _ = Message::parse(&[0xff, 0xfe, b'\r', b'\n', b'\r', b'\n']);
    }
    #[test]
    fn ipv6_references_in_via_and_uris() {
        let via = Via::parse("SIP/2.0/UDP [2001:db8::9:1]:6050;branch=z9hG4bKv6;received=[2001:db8::9:255]").unwrap();
        assert_eq!((via.host, via.port), ("2001:db8::9:1", Some(6050)));
        assert_eq!(via.sent_by(), "[2001:db8::9:1]:6050");
        assert_eq!(via.branch(), Some("z9hG4bKv6"));
        assert_eq!(split_host_port("[2001:db8::10:5070]"), Some(("2001:db8::10:5070", None)), "RFC 5118 §4.3: no port");
        assert!(valid_request_uri("sip:[2001:db8::10]:5070"));
        assert!(valid_request_uri("sip:user@[::ffff:192.0.2.10]"));
        assert!(valid_request_uri("sip:user@[2001:db8::192.0.2.1]"));
        assert!(!valid_request_uri("sip:2001:db8::10"), "RFC 5118 §4.2: brackets required");
        assert!(!valid_request_uri("sip:user@[2001:db8:::192.0.2.1]"), "RFC 5118 §4.10: three colons");
        assert!(valid_name_addr("\"Desk\" <sip:desk@[2001:db8::1]:5062>;tag=x"));
    }

    #[test]
    fn via_with_blanks_around_slashes_and_parameters() {
        let via = Via::parse("SIP  /   2.0 /UDP 198.51.100.2;branch=8f3lk").unwrap();
        assert_eq!((via.transport, via.host, via.port), ("UDP", "198.51.100.2", None));
        let v = "SIP  / 2.0  / TCP     spindle.example.org   ; branch  =   z9hG4bK77a  , SIP / 2.0 / UDP 203.0.113.8 ; branch= z9hG4bK77b";
        let tops: Vec<_> = split_list(v).map(|e| Via::parse(e).unwrap()).collect();
        assert_eq!(tops[0].branch(), Some("z9hG4bK77a"));
        assert_eq!((tops[1].host, tops[1].branch()), ("203.0.113.8", Some("z9hG4bK77b")));
        assert!(list_elements(v).all(valid_via));
        assert!(!list_elements("SIP/2.0/UDP 198.51.100.15;;,;,,").all(valid_via));
    }

    #[test]
    fn request_line_problems_are_named_but_still_addressable() {
        let base = "INVITE sip:srs@example.net SIP/2.0\r\nVia: SIP/2.0/UDP 198.51.100.1;branch=z9hG4bKr\r\n\
From: <sip:a@example.net>;tag=1\r\nTo: <sip:srs@example.net>\r\nCall-ID: r1\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n";
        let cases = [
            ("INVITE  sip:srs@example.net  SIP/2.0", ParseError::BadRequestLine),
            ("INVITE sip:srs@example.net SIP/2.0 ", ParseError::BadRequestLine),
            ("INVITE sip:srs@example.net; lr SIP/2.0", ParseError::BadRequestLine),
            ("INVITE <sip:srs@example.net> SIP/2.0", ParseError::BadRequestUri),
            ("INVITE sip:srs@example.net SIP/3.0", ParseError::UnsupportedVersion),
        ];
        for (line, err) in cases {
            let text = base.replacen("INVITE sip:srs@example.net SIP/2.0", line, 1);
            assert_eq!(Message::parse(text.as_bytes()), Err(err), "{line}");
            assert_eq!(Message::parse_unchecked(text.as_bytes()).unwrap().method(), Some("INVITE"), "{line}");
        }
        let bad_cl = base.replace("Content-Length: 0", "Content-Length: -3");
        assert_eq!(Message::parse(bad_cl.as_bytes()), Err(ParseError::BadContentLength));
        let two_cl = base.replace("Content-Length: 0", "Content-Length: 0\r\nl: 0");
        assert_eq!(Message::parse(two_cl.as_bytes()), Err(ParseError::BadContentLength));
        assert_eq!(frame(two_cl.as_bytes()), Err(ParseError::BadContentLength));
    }

    #[test]
    fn name_addr_grammar() {
        for ok in [
            "caller<sip:caller@example.org>;tag=9",
            "\"J \\\"Q\\\" Public\" <sip:jq@example.org> ; tag = 5",
            "sip:x@example.org;tag=1;",
            "<sip:x@example.org?Subject=hi>",
            "Müller <sip:m@example.org>",
            "isbn:9780000000000",
        ] {
            assert!(valid_name_addr(ok), "{ok}");
        }
        for bad in [
            "\"Unclosed <sip:x@example.org>",
            "Smith, Jo <sip:x@example.org>",
            "< sip:x@example.org >",
            "sip:x@example.org?Route=%3Csip:y%3E",
            "<sip:x@example.org>;;;",
        ] {
            assert!(!valid_name_addr(bad), "{bad}");
        }
    }

    #[test]
    fn latin1_header_bytes_do_not_lose_the_message() {
        let mut bytes = INVITE.replace("f: \"SBC\"", "f: \"M\u{fc}ller\"").into_bytes();
        let at = bytes.windows(2).position(|w| w == "ü".as_bytes()).unwrap();
        bytes.splice(at..at + 2, [0xfc]);
        let m = Message::parse(&bytes).unwrap();
        assert_eq!(m.tag("From"), Some("abc"));
        assert!(frame(&bytes).is_ok());
    }
}
