//! Reading and parsing what a client sends: bodies under a size limit, the
//! key from the path, the fields of key-value and view bodies, and the
//! causal metadata.
//!
//! Bodies are read as JSON whatever the `Content-Type` says (the original
//! assignment's clients send form encoding from `curl -d`), with the size
//! limit checked while reading. Every failure is the client's malformed
//! request: 400, or 413 for a body over the limit.

use axum::body::{Body, Bytes};
use axum::http::{StatusCode, Uri};
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::Value;

use super::{
    ApiError, ERR_BAD_METADATA, ERR_BAD_SOCKET_ADDRESS, ERR_BODY_INVALID, ERR_BODY_NOT_JSON,
    ERR_BODY_NOT_OBJECT, ERR_BODY_UNREADABLE, ERR_KEY_MISSING, ERR_KEY_NOT_UTF8, ERR_KEY_TOO_LONG,
    ERR_NO_SOCKET_ADDRESS, ERR_UNUSABLE_SOCKET_ADDRESS, MAX_KEY_CHARS,
};
use crate::core::VClock;

/// Reads the body, refusing more than `limit` bytes (413). Any other failure
/// to read it — a connection closed before `Content-Length` bytes arrived,
/// broken chunked encoding — is the client's malformed request (400).
pub(crate) async fn read_body(body: Body, limit: usize) -> Result<Bytes, ApiError> {
    axum::body::to_bytes(body, limit).await.map_err(|error| {
        if is_over_limit(&error) {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("Request body is larger than the limit of {limit} bytes"),
            )
        } else {
            ApiError::bad_request(format!("{ERR_BODY_UNREADABLE}: {}", root(&error)))
        }
    })
}

/// Whether reading a body failed because it exceeded the size limit.
fn is_over_limit(error: &axum::Error) -> bool {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(error) = cause {
        if error.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        cause = error.source();
    }
    false
}

/// The innermost cause of an error: the one that names the actual problem.
fn root<'a>(error: &'a (dyn std::error::Error + 'static)) -> &'a (dyn std::error::Error + 'static) {
    let mut error = error;
    while let Some(source) = error.source() {
        error = source;
    }
    error
}

/// The body of a key-value request, read as JSON whatever its
/// `Content-Type`; an empty body means `{}`. Both fields may be absent or
/// `null`.
// (Doc comments on these types are the OpenAPI document's descriptions.)
// The fields are kept as JSON text, so a value is never parsed into a tree.
#[derive(Deserialize, utoipa::ToSchema)]
pub(super) struct KvBody<'a> {
    /// The value to store: any JSON value except `null`. Required by PUT;
    /// GET and DELETE ignore it.
    #[serde(borrow, default)]
    #[schema(value_type = Option<serde_json::Value>)]
    value: Option<&'a RawValue>,
    /// `null`, or the `causal-metadata` from your last answer.
    #[serde(borrow, default, rename = "causal-metadata")]
    #[schema(value_type = Option<VClock>)]
    causal_metadata: Option<&'a RawValue>,
}

/// The fields of a key-value request body. An empty body means `{}`.
pub(super) fn parse_kv_body(bytes: &[u8]) -> Result<(Option<&RawValue>, VClock), ApiError> {
    let Some(first) = bytes.iter().find(|b| !b.is_ascii_whitespace()) else {
        return Ok((None, VClock::new()));
    };
    // Only an object has fields: serde's derive would also read an array as
    // the fields in order (`[42]` as a value of 42).
    if *first != b'{' {
        return Err(describe_non_object(bytes));
    }
    let body: KvBody =
        serde_json::from_slice(bytes).map_err(|error| describe_bad_body(bytes, error))?;
    let metadata = parse_metadata(body.causal_metadata)?;
    Ok((body.value, metadata))
}

/// Why a body that starts like an object did not parse: not JSON, an object
/// with a field of the wrong type, or JSON that is not an object after all.
fn describe_bad_body(bytes: &[u8], error: serde_json::Error) -> ApiError {
    match serde_json::from_slice::<Value>(bytes) {
        Err(_) => ApiError::bad_request(format!("{ERR_BODY_NOT_JSON}: {error}")),
        Ok(Value::Object(_)) => ApiError::bad_request(format!("{ERR_BODY_INVALID}: {error}")),
        Ok(_) => ApiError::bad_request(ERR_BODY_NOT_OBJECT),
    }
}

/// A body that does not start with `{`: not JSON at all, or JSON that is
/// not an object.
fn describe_non_object(bytes: &[u8]) -> ApiError {
    match serde_json::from_slice::<serde::de::IgnoredAny>(bytes) {
        Ok(_) => ApiError::bad_request(ERR_BODY_NOT_OBJECT),
        Err(error) => ApiError::bad_request(format!("{ERR_BODY_NOT_JSON}: {error}")),
    }
}

/// Client metadata: `null`/absent, or the object this store hands out
/// (`{"<address>@<incarnation>": <count>, ...}`), parsed straight into a
/// clock (this runs on every request).
fn parse_metadata(raw: Option<&RawValue>) -> Result<VClock, ApiError> {
    let Some(raw) = raw else {
        return Ok(VClock::new());
    };
    serde_json::from_str::<ClientClock>(raw.get())
        .map(|ClientClock(clock)| clock)
        .map_err(|_| ApiError::bad_request(ERR_BAD_METADATA))
}

/// Client metadata read straight into a clock: `null` or an object of
/// well-formed origins to counts, refused as soon as it has more than
/// [`crate::core::clock::MAX_CLOCK_ENTRIES`] (the cap on every clock read) entries.
struct ClientClock(VClock);

impl<'de> Deserialize<'de> for ClientClock {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ClockVisitor;
        impl<'de> serde::de::Visitor<'de> for ClockVisitor {
            type Value = ClientClock;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("null or an object of origins to counts")
            }
            fn visit_unit<E: serde::de::Error>(self) -> Result<ClientClock, E> {
                Ok(ClientClock(VClock::new()))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> Result<ClientClock, A::Error> {
                VClock::read_entries(map).map(ClientClock)
            }
        }
        deserializer.deserialize_any(ClockVisitor)
    }
}

/// The key from the raw path: percent-decoded, 1..=50 scalar values.
pub(super) fn key_from_uri(uri: &Uri) -> Result<String, ApiError> {
    let raw = uri.path().strip_prefix("/kvs/").unwrap_or_default();
    let key = percent_encoding::percent_decode_str(raw)
        .decode_utf8()
        .map_err(|_| ApiError::bad_request(ERR_KEY_NOT_UTF8))?;
    if key.is_empty() {
        return Err(ApiError::bad_request(ERR_KEY_MISSING));
    }
    if key.chars().count() > MAX_KEY_CHARS {
        return Err(ApiError::bad_request(ERR_KEY_TOO_LONG));
    }
    Ok(key.into_owned())
}

/// The body of `PUT /view` and `DELETE /view`.
#[derive(Deserialize, utoipa::ToSchema)]
pub(super) struct ViewChangeRequest {
    /// The replica to add or remove, as `IP:PORT`.
    #[serde(rename = "socket-address")]
    #[schema(example = "10.10.0.4:8090")]
    socket_address: String,
}

/// The `socket-address` of a view request body, checked to be a usable
/// `IP:PORT` and put in its canonical spelling ([`crate::core::address`]).
pub(super) fn parse_view_target(bytes: &[u8]) -> Result<String, ApiError> {
    let value: Value = serde_json::from_slice(bytes)
        .map_err(|error| ApiError::bad_request(format!("{ERR_BODY_NOT_JSON}: {error}")))?;
    if !value.is_object() {
        return Err(ApiError::bad_request(ERR_BODY_NOT_OBJECT));
    }
    // Absent, or not a string: either way the client did not say which.
    let ViewChangeRequest { socket_address } =
        serde_json::from_value(value).map_err(|_| ApiError::bad_request(ERR_NO_SOCKET_ADDRESS))?;
    use crate::core::address::{canonical, AddressError};
    match canonical(&socket_address) {
        Ok(address) => Ok(address),
        Err(AddressError::NotIpPort) => Err(ApiError::bad_request(ERR_BAD_SOCKET_ADDRESS)),
        Err(_) => Err(ApiError::bad_request(ERR_UNUSABLE_SOCKET_ADDRESS)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::Origin;

    #[test]
    fn body_parsing_follows_the_contract() {
        let (value, meta) = parse_kv_body(b"").unwrap();
        assert!(value.is_none() && meta.is_empty());
        let (value, _) = parse_kv_body(br#"{"value": null}"#).unwrap();
        assert!(value.is_none(), "null value counts as absent");
        let (value, _) =
            parse_kv_body(br#"{"value": {"a": [1, 2]}, "causal-metadata": null}"#).unwrap();
        assert_eq!(value.unwrap().get(), r#"{"a": [1, 2]}"#);
        let (_, meta) = parse_kv_body(br#"{"causal-metadata": {"127.0.0.1:1@5": 3}}"#).unwrap();
        assert_eq!(meta.get(&Origin::new("127.0.0.1:1", 5)), 3);
        for bad in [
            &br#"{"value": 1"#[..],
            b"[1,2]",
            b"[42]",
            b"[]",
            b"value=3",
            br#"{"causal-metadata": "abc"}"#,
            br#"{"causal-metadata": {"nope": 1}}"#,
            br#"{"causal-metadata": {"a:1@1": -1}}"#,
            br#"{"causal-metadata": [1]}"#,
        ] {
            let error = parse_kv_body(bad).unwrap_err();
            assert_eq!(
                error.status,
                StatusCode::BAD_REQUEST,
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn keys_are_percent_decoded_and_bounded() {
        let uri: Uri = "/kvs/a%20b".parse().unwrap();
        assert_eq!(key_from_uri(&uri).unwrap(), "a b");
        let fifty: String = "é".repeat(50);
        let encoded =
            percent_encoding::utf8_percent_encode(&fifty, percent_encoding::NON_ALPHANUMERIC);
        let uri: Uri = format!("/kvs/{encoded}").parse().unwrap();
        assert_eq!(key_from_uri(&uri).unwrap(), fifty);
        let uri: Uri = format!("/kvs/{}", "x".repeat(51)).parse().unwrap();
        assert_eq!(key_from_uri(&uri).unwrap_err().message, ERR_KEY_TOO_LONG);
        let uri: Uri = "/kvs/%ff".parse().unwrap();
        assert_eq!(key_from_uri(&uri).unwrap_err().message, ERR_KEY_NOT_UTF8);
    }

    #[test]
    fn a_view_body_names_one_socket_address() {
        let target = parse_view_target(br#"{"socket-address": "10.0.0.1:8090", "x": 1}"#);
        assert_eq!(target.unwrap(), "10.0.0.1:8090");
        let message = |bytes: &[u8]| parse_view_target(bytes).unwrap_err().message;
        assert!(message(b"").starts_with(ERR_BODY_NOT_JSON));
        assert_eq!(message(b"[1]"), ERR_BODY_NOT_OBJECT);
        assert_eq!(message(b"{}"), ERR_NO_SOCKET_ADDRESS);
        assert_eq!(
            message(br#"{"socket-address": 8090}"#),
            ERR_NO_SOCKET_ADDRESS
        );
        assert_eq!(
            message(br#"{"socket-address": "replica-1"}"#),
            ERR_BAD_SOCKET_ADDRESS
        );
        for unusable in ["0.0.0.0:0", "[::]:8090", "127.0.0.1:0", "224.0.0.1:80"] {
            let body = format!(r#"{{"socket-address": "{unusable}"}}"#);
            assert_eq!(message(body.as_bytes()), ERR_UNUSABLE_SOCKET_ADDRESS);
        }
        let alias = parse_view_target(br#"{"socket-address": "[::ffff:10.0.0.1]:8090"}"#);
        assert_eq!(alias.unwrap(), "10.0.0.1:8090");
    }
}
