//! The bearer token that guards `/metrics` and the dashboard: a request passes with
//! `Authorization: Bearer <token>`, or with the cookie a browser gets by opening
//! `/?token=<token>` once (an `EventSource` cannot send headers, so the page relies on it).

use axum::extract::Request;
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use ripple_sink::Secret;

const COOKIE: &str = "ripple_token";

pub async fn check(token: Option<&Secret>, request: Request, next: Next) -> Response {
    let Some(token) = token else {
        return next.run(request).await;
    };
    if presented(request.headers()).is_some_and(|t| same(t, token.expose())) {
        return next.run(request).await;
    }
    if let Some(t) = query_token(request.uri().query())
        && same(&t, token.expose())
    {
        // Swap the token in the address bar for a cookie, so it is not left in the history.
        let mut response = Redirect::to(request.uri().path()).into_response();
        let cookie = format!("{COOKIE}={t}; Path=/; HttpOnly; SameSite=Strict");
        if let Ok(value) = cookie.parse() {
            response.headers_mut().insert(header::SET_COOKIE, value);
        }
        return response;
    }
    (
        StatusCode::UNAUTHORIZED,
        [(header::WWW_AUTHENTICATE, "Bearer realm=\"ripple\"")],
        "a token is required: send Authorization: Bearer <metrics token>, or open /?token=<metrics token> in a browser\n",
    )
        .into_response()
}

/// The token in `Authorization: Bearer` or in Ripple's cookie.
fn presented(headers: &HeaderMap) -> Option<&str> {
    if let Some(auth) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    {
        return auth.strip_prefix("Bearer ").map(str::trim);
    }
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|c| c.trim().strip_prefix(COOKIE)?.strip_prefix('='))
}

fn query_token(query: Option<&str>) -> Option<String> {
    query?
        .split('&')
        .find_map(|kv| kv.strip_prefix("token="))
        .map(percent_decode)
}

/// `%XX` escapes decoded (a `+` stays a `+`: tokens are often base64).
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2]))
        {
            out.push(h << 4 | l);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Compares without stopping at the first difference, so timing does not reveal a prefix.
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0u8, |d, (x, y)| d | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_read_from_header_cookie_and_query() {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, "Bearer abc".parse().unwrap());
        assert_eq!(presented(&h), Some("abc"));
        let mut h = HeaderMap::new();
        h.insert(header::COOKIE, "a=1; ripple_token=xyz".parse().unwrap());
        assert_eq!(presented(&h), Some("xyz"));
        assert_eq!(query_token(Some("a=1&token=p%2Fq")), Some("p/q".into()));
        assert!(same("abc", "abc") && !same("abc", "abd") && !same("abc", "ab"));
    }
}
