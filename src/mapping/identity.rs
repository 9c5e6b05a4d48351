//! Reading identities out of the strings SRCs send: URIs in header or AOR form, numbers,
//! display names. Pure string work; it decides nothing about sides.

/// The URI in a header value or AOR: inside `<...>` when present (a name-addr), else the
/// whole value trimmed. `"Ext 8500" <sip:2249888500@h>;tag=x` → `sip:2249888500@h`.
pub(crate) fn uri_of(value: &str) -> &str {
    let v = value.trim();
    match v.find('<') {
        Some(open) => {
            let rest = &v[open + 1..];
            rest.find('>').map_or(rest, |close| &rest[..close]).trim()
        }
        None => v,
    }
}

/// The URI without its scheme (`sip:`, `sips:`, `tel:`), case-insensitive.
fn without_scheme(uri: &str) -> &str {
    ["sips:", "sip:", "tel:"]
        .iter()
        .find_map(|s| uri.get(..s.len()).filter(|p| p.eq_ignore_ascii_case(s)).map(|_| &uri[s.len()..]))
        .unwrap_or(uri)
}

/// The user part: `sip:4711@pbx;user=phone` → `4711`; `7602922410` → `7602922410`;
/// `sip:pbx.example` → none (a host alone).
pub(crate) fn user_part(value: &str) -> Option<&str> {
    let rest = without_scheme(uri_of(value));
    let user = match rest.split_once('@') {
        Some((user, _)) => user,
        // `tel:` URIs and bare AORs (Metaswitch `aor="7602922410"`) have no host.
        None if !rest.contains('.') || phone_number(rest).is_some() => rest,
        None => return None,
    };
    let user = user.split(';').next().unwrap_or("").trim();
    (!user.is_empty()).then_some(user)
}

/// The host part: `sip:4711@pbx.example:5060;transport=tcp` → `pbx.example`.
pub(crate) fn host_part(value: &str) -> Option<&str> {
    let rest = without_scheme(uri_of(value));
    let host = rest.split_once('@').map_or(rest, |(_, h)| h);
    let host = host.split([';', '?']).next().unwrap_or("");
    // `[v6]:port` keeps its brackets' content; `host:port` drops the port.
    let host = match host.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => host.split(':').next().unwrap_or(""),
    };
    (!host.is_empty() && host.contains(['.', ':'])).then_some(host)
}

/// A URI parameter's value (`;dnis=8663738232` → `8663738232`), case-insensitive name.
pub(crate) fn uri_param<'a>(value: &'a str, name: &str) -> Option<&'a str> {
    uri_of(value).split(';').skip(1).find_map(|p| {
        let (k, v) = p.split_once('=')?;
        k.trim().eq_ignore_ascii_case(name).then(|| v.trim().trim_matches('"'))
    })
}

/// The user part of an AOR as a phone number: `sip:+15551234567@x` → `+15551234567`,
/// `tel:+1-555-123` → `+1555123`, `sip:4711@pbx` → `4711`; `None` when it is not a number.
pub fn phone_number(aor: &str) -> Option<String> {
    let rest = without_scheme(uri_of(aor));
    let user = rest.split('@').next()?.split(';').next()?;
    let mut out = String::with_capacity(user.len());
    for (i, c) in user.trim().chars().enumerate() {
        match c {
            '+' if i == 0 => out.push(c),
            '0'..='9' => out.push(c),
            // RFC 3966 visual separators.
            '-' | '.' | '(' | ')' | ' ' => {}
            _ => return None,
        }
    }
    out.chars().any(|c| c.is_ascii_digit()).then_some(out)
}

/// Whether two identities (AORs, header values, numbers, `user@domain` ids) name the same
/// party: the same user part (case-insensitive) where the hosts, if both are given, agree; or
/// the same number, where one may carry a country or trunk prefix the other lacks
/// (`+17602922410` and `7602922410`: the shorter must have at least 7 digits).
pub(crate) fn same_party(a: &str, b: &str) -> bool {
    if let (Some(x), Some(y)) = (phone_number(a), phone_number(b)) {
        let (x, y) = (x.trim_start_matches('+'), y.trim_start_matches('+'));
        let (short, long) = if x.len() <= y.len() { (x, y) } else { (y, x) };
        return short == long || (short.len() >= 7 && long.ends_with(short));
    }
    match (user_part(a), user_part(b)) {
        (Some(x), Some(y)) if x.eq_ignore_ascii_case(y) => match (host_part(a), host_part(b)) {
            (Some(h), Some(k)) => h.eq_ignore_ascii_case(k),
            _ => true,
        },
        _ => false,
    }
}

/// `John Doe` → (`John`, `Doe`); `Doe, John` → (`John`, `Doe`); `Agent` → (`Agent`, none).
/// A name without letters (Metaswitch repeats the number as the name) is no name.
pub fn split_name(name: &str) -> (Option<String>, Option<String>) {
    // OpenSIPS copies the display name with its parameters (`tester;lang=en-US;id=41`).
    let name = match name.split_once(';') {
        Some((before, params)) if params.contains('=') => before,
        _ => name,
    };
    let name = name.trim().trim_matches('"').trim();
    if !name.chars().any(char::is_alphabetic) {
        return (None, None);
    }
    if let Some((last, first)) = name.split_once(',') {
        let (f, l) = (first.trim(), last.trim());
        return ((!f.is_empty()).then(|| f.to_string()), (!l.is_empty()).then(|| l.to_string()));
    }
    match name.rsplit_once(' ') {
        Some((first, last)) => (Some(first.trim().to_string()), Some(last.trim().to_string())),
        None => (Some(name.to_string()), None),
    }
}
