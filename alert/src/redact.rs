//! Webhook URLs as logs, delivery errors and refusals show them: without userinfo, query or
//! fragment, which often carry a credential (a chat service's token in `?token=`).

use url::Url;

/// What stands for a part taken out.
const REDACTED: &str = "<redacted>";

/// `url` with its userinfo, query and fragment replaced by `<redacted>`:
/// `https://u:p@hooks.example.com/path?token=x` is shown as
/// `https://<redacted>@hooks.example.com/path?<redacted>`. The one way a webhook URL, or a
/// URL its receiver answered with, is written anywhere but the webhooks table.
pub fn redact_url(url: &str) -> String {
    match Url::parse(url) {
        Ok(parsed) => redact(parsed),
        Err(_) => redact_unparsed(url),
    }
}

/// [`redact_url`] for a URL already parsed.
pub fn redact(mut url: Url) -> String {
    let had_userinfo = !url.username().is_empty() || url.password().is_some();
    let had_query = url.query().is_some();
    let had_fragment = url.fragment().is_some();
    // Neither fails on an http(s) URL; on a URL that cannot have userinfo there is none.
    let _ = url.set_username("");
    let _ = url.set_password(None);
    url.set_query(None);
    url.set_fragment(None);
    let mut text = String::from(url);
    if had_userinfo && let Some(at) = text.find("://") {
        text.insert_str(at + 3, &format!("{REDACTED}@"));
    }
    if had_query {
        text.push('?');
        text.push_str(REDACTED);
    }
    if had_fragment {
        text.push('#');
        text.push_str(REDACTED);
    }
    text
}

/// Text that does not parse as a URL: cut at its query or fragment; if what is left may still
/// hold userinfo, nothing of it is shown.
fn redact_unparsed(text: &str) -> String {
    let (head, cut) = match text.find(['?', '#']) {
        Some(at) => (&text[..at], true),
        None => (text, false),
    };
    if head.contains('@') {
        return format!("{REDACTED} (a URL that does not parse)");
    }
    if cut {
        format!("{head}?{REDACTED}")
    } else {
        head.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(url: &str, expected: &str) {
        assert_eq!(redact_url(url), expected, "{url}");
    }

    #[test]
    fn userinfo_query_and_fragment_are_redacted_and_the_rest_kept() {
        check(
            "https://hooks.example.com/path?token=s3cret",
            "https://hooks.example.com/path?<redacted>",
        );
        check(
            "https://user:s3cret@hooks.example.com:8443/a/b?x=1&y=2#frag",
            "https://<redacted>@hooks.example.com:8443/a/b?<redacted>#<redacted>",
        );
        check("http://alice@10.0.0.1/", "http://<redacted>@10.0.0.1/");
        check("http://[::1]:9/hook?", "http://[::1]:9/hook?<redacted>");
        check(
            "https://hooks.example.com/services/T0/B0",
            "https://hooks.example.com/services/T0/B0",
        );
        check("/login?next=/secret", "/login?<redacted>");
        check("not a url at all", "not a url at all");
        check("//user:pw@host/x", "<redacted> (a URL that does not parse)");
    }
}
