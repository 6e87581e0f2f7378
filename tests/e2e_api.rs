//! End-to-end tests of the public API (docs/API.md §2–§4, §6) against real `hearsay`
//! processes: every status code and exact string of `/kvs/<key>` and `/view`,
//! the bad-input table (key length, missing value, malformed bodies and
//! metadata, size limits), lenient `Content-Type`, GET without a body, the
//! order of checks (400/413 before 503 before 404), JSON values of every type,
//! and the operator endpoints `/health`, `/ready` and `/metrics`.
//!
//! Most tests use one replica: the API edge does not depend on replication,
//! and a single process starts in milliseconds.

mod support;

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::{free_ports, kvs_path, Body, Cluster};

const NO_KEY: &str = "Key does not exist";
const TOO_LONG: &str = "Key is too long";
const NO_VALUE: &str = "PUT request does not specify a value";
const CAUSAL: &str = "Causal dependencies not satisfied; try again later";
const NO_REPLICA: &str = "View has no such replica";

/// Metadata that claims writes nobody has made yet: every counter of `real`
/// raised by 1000. It has the form the store issues, so it is not a 400.
fn ahead_of(real: &Value) -> Value {
    let map = real.as_object().expect("metadata is a JSON object");
    assert!(!map.is_empty(), "metadata after a write names its origin");
    map.iter()
        .map(|(origin, count)| (origin.clone(), json!(count.as_u64().unwrap() + 1000)))
        .collect::<serde_json::Map<_, _>>()
        .into()
}

#[tokio::test]
async fn a_key_lives_through_create_replace_read_delete_with_exact_answers() {
    let cluster = Cluster::start(1).await;
    let a = cluster.addr(0);
    let mut client = cluster.session();

    // A 404 has the contract's status and error, plus the client's metadata
    // (here none yet: an empty object) to pass on.
    let never = client.get(a, "x").await;
    never.expect(404, Some(NO_KEY));
    assert_eq!(never.metadata(), &json!({}), "{never:?}");
    assert_eq!(never.json.as_object().unwrap().len(), 2, "{never:?}");
    client.delete(a, "x").await.expect(404, Some(NO_KEY));

    let created = client.put(a, "x", json!(1)).await;
    created.expect_result(201, "created");
    assert!(
        created.metadata().is_object(),
        "a write returns causal metadata: {created:?}"
    );
    assert_eq!(created.json.as_object().unwrap().len(), 2, "{created:?}");

    client
        .put(a, "x", json!(2))
        .await
        .expect_result(200, "replaced");

    let found = client.get(a, "x").await;
    found.expect_result(200, "found");
    assert_eq!(found.value(), &json!(2));
    assert!(found.metadata().is_object(), "{found:?}");

    let deleted = client.delete(a, "x").await;
    deleted.expect_result(200, "deleted");
    // The 404s of a deleted key hand back the delete they saw.
    let gone = client.get(a, "x").await;
    gone.expect(404, Some(NO_KEY));
    assert_eq!(gone.metadata(), deleted.metadata(), "{gone:?}");
    let gone = cluster.http.read(a, "x").await;
    gone.expect(404, Some(NO_KEY));
    assert_eq!(gone.metadata(), deleted.metadata(), "{gone:?}");
    let again = client.delete(a, "x").await;
    again.expect(404, Some(NO_KEY));
    assert_eq!(again.metadata(), deleted.metadata(), "{again:?}");

    // A deleted key is missing, so writing it again creates it.
    client
        .put(a, "x", json!(3))
        .await
        .expect_result(201, "created");
    assert_eq!(client.get(a, "x").await.value(), &json!(3));

    // The same answers without any metadata (a client's first request).
    let http = &cluster.http;
    http.read(a, "never-written")
        .await
        .expect(404, Some(NO_KEY));
    http.kv("PUT", a, "fresh", Body::Json(json!({"value": "v"})))
        .await
        .expect_result(201, "created");
    http.kv(
        "PUT",
        a,
        "fresh",
        Body::Json(json!({"value": "w", "causal-metadata": null})),
    )
    .await
    .expect_result(200, "replaced");
}

#[tokio::test]
async fn keys_are_one_to_fifty_characters_percent_decoded() {
    let cluster = Cluster::start(1).await;
    let a = cluster.addr(0);
    let mut client = cluster.session();

    let fifty = "k".repeat(50);
    let fifty_one = "k".repeat(51);
    client
        .put(a, &fifty, json!("ok"))
        .await
        .expect_result(201, "created");
    assert_eq!(client.get(a, &fifty).await.value(), &json!("ok"));

    for method in ["PUT", "GET", "DELETE"] {
        let body = Body::Json(json!({"value": 1, "causal-metadata": null}));
        cluster
            .http
            .kv(method, a, &fifty_one, body)
            .await
            .expect(400, Some(TOO_LONG));
    }
    client
        .get(a, &fifty_one[..50])
        .await
        .expect_result(200, "found");

    // Characters, not bytes: 50 two- and three-byte characters are fine.
    for ch in ["é", "日", "🦀"] {
        let key = ch.repeat(50);
        client
            .put(a, &key, json!(ch))
            .await
            .expect_result(201, "created");
        assert_eq!(client.get(a, &key).await.value(), &json!(ch));
        let longer = ch.repeat(51);
        client
            .put(a, &longer, json!(ch))
            .await
            .expect(400, Some(TOO_LONG));
    }

    // Percent-encoded paths are decoded: "a b/c?" arrives as one key, and the
    // same key reads back whichever way it is encoded.
    let odd = "a b/c?#%";
    client
        .put(a, odd, json!("odd"))
        .await
        .expect_result(201, "created");
    assert_eq!(client.get(a, odd).await.value(), &json!("odd"));
    let reply = cluster
        .http
        .send("GET", a, "/kvs/a%20b%2Fc%3F%23%25", Body::None)
        .await;
    assert_eq!(reply.value(), &json!("odd"), "{reply:?}");
    let plain = cluster
        .http
        .send("GET", a, "/kvs/k%6B%6b", Body::None)
        .await;
    plain.expect(404, Some(NO_KEY)); // "kkk" was never written
    client
        .put(a, "kkk", json!(3))
        .await
        .expect_result(201, "created");
    let decoded = cluster
        .http
        .send("GET", a, "/kvs/k%6B%6b", Body::None)
        .await;
    assert_eq!(decoded.value(), &json!(3), "{decoded:?}");
}

#[tokio::test]
async fn put_without_a_value_is_400_and_writes_nothing() {
    let cluster = Cluster::start(1).await;
    let a = cluster.addr(0);
    let http = &cluster.http;

    for body in [
        Body::None,
        Body::Json(json!({})),
        Body::Json(json!({"causal-metadata": null})),
        Body::Json(json!({"value": null})),
        Body::Json(json!({"value": null, "causal-metadata": null})),
    ] {
        http.kv("PUT", a, "k", body.clone())
            .await
            .expect(400, Some(NO_VALUE));
    }
    http.read(a, "k").await.expect(404, Some(NO_KEY));

    // Also for a key that exists: no value never means "delete".
    http.kv("PUT", a, "k", Body::Json(json!({"value": 1})))
        .await
        .expect_result(201, "created");
    http.kv("PUT", a, "k", Body::Json(json!({"value": null})))
        .await
        .expect(400, Some(NO_VALUE));
    assert_eq!(http.read(a, "k").await.value(), &json!(1));
}

#[tokio::test]
async fn malformed_bodies_and_metadata_are_400_with_a_json_error() {
    let cluster = Cluster::start(1).await;
    let a = cluster.addr(0);
    let http = &cluster.http;
    http.kv("PUT", a, "k", Body::Json(json!({"value": 1})))
        .await
        .expect_result(201, "created");

    let not_json = ["value=3", r#"{"value": 1"#, "{'value': 1}", "\u{0}"];
    let not_an_object = [r#"[1, 2]"#, r#""text""#, "42", "true", "null"];
    let bad_metadata = [
        r#"{"value": 1, "causal-metadata": "abc"}"#,
        r#"{"value": 1, "causal-metadata": 17}"#,
        r#"{"value": 1, "causal-metadata": [1, 2]}"#,
        r#"{"value": 1, "causal-metadata": {"garbage": 1}}"#,
        r#"{"value": 1, "causal-metadata": {"127.0.0.1:1@1": -1}}"#,
        r#"{"value": 1, "causal-metadata": {"127.0.0.1:1@1": "one"}}"#,
    ];
    for method in ["PUT", "GET", "DELETE"] {
        for body in not_json.iter().chain(&not_an_object) {
            let reply = http.kv(method, a, "k", Body::raw(*body)).await;
            reply.expect_some_error(400);
        }
        for body in bad_metadata {
            let reply = http.kv(method, a, "k", Body::raw(body)).await;
            reply.expect_some_error(400);
            assert!(
                reply.error().contains("causal-metadata"),
                "the error names the field: {reply:?}"
            );
        }
    }
    // Nothing above changed the key.
    assert_eq!(http.read(a, "k").await.value(), &json!(1));
}

#[tokio::test]
async fn oversized_bodies_and_values_are_413() {
    // Small limits so that the test sends kilobytes, not megabytes; the
    // bodies still fit the socket buffers, so the client always gets to read
    // the answer.
    let cluster = Cluster::builder(1)
        .set("max_body_bytes", 4096)
        .set("max_value_bytes", 1024)
        .start()
        .await;
    let a = cluster.addr(0);
    let http = &cluster.http;

    let huge = json!({"value": "x".repeat(8000)});
    for method in ["PUT", "GET", "DELETE"] {
        http.kv(method, a, "k", Body::Json(huge.clone()))
            .await
            .expect_some_error(413);
    }
    // A body under the limit whose value is over the value limit.
    http.kv(
        "PUT",
        a,
        "k",
        Body::Json(json!({"value": "x".repeat(2000)})),
    )
    .await
    .expect_some_error(413);
    http.read(a, "k").await.expect(404, Some(NO_KEY));
    // Just under both limits (1024 bytes of JSON text including the quotes).
    http.kv(
        "PUT",
        a,
        "k",
        Body::Json(json!({"value": "x".repeat(1022)})),
    )
    .await
    .expect_result(201, "created");
}

#[tokio::test]
async fn bodies_are_json_whatever_the_content_type_and_get_needs_no_body() {
    let cluster = Cluster::start(1).await;
    let a = cluster.addr(0);
    let http = &cluster.http;

    // What `curl -X PUT -d '{...}'` sends.
    let form = "application/x-www-form-urlencoded";
    let reply = http
        .kv(
            "PUT",
            a,
            "curl",
            Body::typed(
                r#"{"value": "sent by curl", "causal-metadata": null}"#,
                form,
            ),
        )
        .await;
    reply.expect_result(201, "created");
    let metadata = reply.metadata().clone();

    for content_type in ["text/plain", "application/octet-stream", form] {
        let body = json!({"value": content_type, "causal-metadata": metadata}).to_string();
        http.kv("PUT", a, "curl", Body::typed(body, content_type))
            .await
            .expect_result(200, "replaced");
    }
    // No content type at all.
    http.kv("PUT", a, "curl", Body::raw(r#"{"value": "bare"}"#))
        .await
        .expect_result(200, "replaced");

    // GET with no body, an empty body, and a body with null metadata.
    for body in [
        Body::None,
        Body::raw(""),
        Body::typed(r#"{"causal-metadata": null}"#, form),
    ] {
        let reply = http.kv("GET", a, "curl", body).await;
        reply.expect_result(200, "found");
        assert_eq!(reply.value(), &json!("bare"));
    }
    // DELETE with no body at all.
    http.kv("DELETE", a, "curl", Body::None)
        .await
        .expect_result(200, "deleted");
}

#[tokio::test]
async fn values_of_every_json_type_round_trip() {
    let cluster = Cluster::start(1).await;
    let a = cluster.addr(0);
    let mut client = cluster.session();

    let values = [
        json!({"nested": {"list": [1, "two", {"three": 3}], "empty": {}}, "t": true}),
        json!({}),
        json!([1, [2, [3, []]], {"a": null}, "s"]),
        json!([]),
        json!("plain"),
        json!(""),
        json!("quotes \" backslash \\ newline \n unicode é 日 🦀"),
        json!(0),
        json!(-42),
        json!(18446744073709551615u64),
        json!(3.25),
        json!(-1.5e-7),
        json!(true),
        json!(false),
    ];
    for (i, value) in values.iter().enumerate() {
        let key = format!("v{i}");
        client
            .put(a, &key, value.clone())
            .await
            .expect_result(201, "created");
        let reply = client.get(a, &key).await;
        reply.expect_result(200, "found");
        assert_eq!(reply.value(), value, "value {i} changed on the way");
    }
}

#[tokio::test]
async fn checks_run_in_order_malformed_then_causality_then_existence() {
    // A short causal wait keeps the 503 cases quick; set through the
    // environment layer on purpose.
    let cluster = Cluster::builder(1)
        .env("HEARSAY_CAUSAL_WAIT_MS", 300)
        .start()
        .await;
    let a = cluster.addr(0);
    let http = &cluster.http;

    let written = http
        .kv("PUT", a, "exists", Body::Json(json!({"value": 1})))
        .await;
    written.expect_result(201, "created");
    let ahead = ahead_of(written.metadata());
    let with_ahead = |value: Option<Value>| {
        let mut body = json!({"causal-metadata": ahead});
        if let Some(value) = value {
            body["value"] = value;
        }
        Body::Json(body)
    };

    // Malformed requests are refused at once, whatever the metadata says.
    let long_key = "x".repeat(51);
    for method in ["PUT", "GET", "DELETE"] {
        let started = Instant::now();
        http.kv(method, a, &long_key, with_ahead(Some(json!(1))))
            .await
            .expect(400, Some(TOO_LONG));
        assert!(
            started.elapsed() < Duration::from_millis(250),
            "400 must not wait for causality ({:?})",
            started.elapsed()
        );
    }
    http.kv("PUT", a, "missing", with_ahead(None))
        .await
        .expect(400, Some(NO_VALUE));
    http.kv(
        "PUT",
        a,
        "missing",
        Body::raw(r#"{"value": 1, "causal-metadata": "bogus"}"#),
    )
    .await
    .expect_some_error(400);

    // Metadata ahead of the replica: 503 after the wait, never 404 or the
    // older state — for missing and existing keys alike.
    for (method, key, value) in [
        ("GET", "missing", None),
        ("DELETE", "missing", None),
        ("GET", "exists", None),
        ("PUT", "missing", Some(json!(2))),
    ] {
        let started = Instant::now();
        http.kv(method, a, key, with_ahead(value))
            .await
            .expect(503, Some(CAUSAL));
        let waited = started.elapsed();
        assert!(
            waited >= Duration::from_millis(250),
            "{method} {key}: 503 after only {waited:?}, the causal wait is 300 ms"
        );
        assert!(
            waited < Duration::from_secs(5),
            "{method} {key}: {waited:?}"
        );
    }
    // The refused PUT wrote nothing.
    http.read(a, "missing").await.expect(404, Some(NO_KEY));

    // With metadata the replica covers, existence decides.
    let mut client = cluster.session();
    client.metadata = written.metadata().clone();
    let missing = client.get(a, "missing").await;
    missing.expect(404, Some(NO_KEY));
    assert_eq!(
        missing.metadata(),
        written.metadata(),
        "a key that never existed leaves the metadata unchanged"
    );
    client.get(a, "exists").await.expect_result(200, "found");
}

#[tokio::test]
async fn view_operations_answer_as_the_contract_says() {
    let cluster = Cluster::start(3).await;
    let all = cluster.sorted(&[0, 1, 2]);
    let http = &cluster.http;

    // Every replica lists all three, sorted, itself included.
    for i in 0..3 {
        let reply = http.send("GET", cluster.addr(i), "/view", Body::None).await;
        reply.expect(200, None);
        assert_eq!(reply.json, json!({ "view": all }), "at replica {i}");
    }

    let a = cluster.addr(0);
    for present in [cluster.addr(0), cluster.addr(1), cluster.addr(2)] {
        http.change_view("PUT", a, present)
            .await
            .expect_result(200, "already present");
    }

    // An address where nothing listens: admitted (and already present
    // right after) but not in the view, since nothing answers there; then
    // deleted, then absent.
    let nobody = format!("127.0.0.1:{}", free_ports(1)[0]);
    http.change_view("DELETE", a, &nobody)
        .await
        .expect(404, Some(NO_REPLICA));
    http.change_view("PUT", a, &nobody)
        .await
        .expect_result(201, "added");
    assert!(!cluster.view(0).await.contains(&nobody));
    http.change_view("PUT", a, &nobody)
        .await
        .expect_result(200, "already present");
    http.change_view("DELETE", a, &nobody)
        .await
        .expect_result(200, "deleted");
    assert_eq!(cluster.view(0).await, all);
    http.change_view("DELETE", a, &nobody)
        .await
        .expect(404, Some(NO_REPLICA));

    // Bad view requests.
    for method in ["PUT", "DELETE"] {
        for body in [
            Body::None,
            Body::Json(json!({})),
            Body::Json(json!({"address": nobody})),
            Body::Json(json!({"socket-address": 8090})),
            Body::Json(json!({"socket-address": "not an address"})),
            Body::Json(json!([nobody])),
            Body::raw("socket-address=127.0.0.1:1"),
        ] {
            http.send(method, a, "/view", body)
                .await
                .expect_some_error(400);
        }
    }
    // Form-encoded content type with a JSON body is read as JSON here too.
    http.send(
        "PUT",
        a,
        "/view",
        Body::typed(
            json!({"socket-address": cluster.addr(1)}).to_string(),
            "application/x-www-form-urlencoded",
        ),
    )
    .await
    .expect_result(200, "already present");
    assert_eq!(cluster.view(0).await, all);
}

#[tokio::test]
async fn health_ready_and_metrics_endpoints() {
    let cluster = Cluster::start(1).await;
    let a = cluster.addr(0);
    let http = &cluster.http;

    let health = http.send("GET", a, "/health", Body::None).await;
    health.expect(200, None);
    assert_eq!(health.json["status"], "ok", "{health:?}");

    let ready = http.send("GET", a, "/ready", Body::None).await;
    ready.expect(200, None);
    assert_eq!(ready.json["ready"], true, "{ready:?}");

    // The exporter format, on a scrape after some traffic.
    http.read(a, "nothing").await.expect(404, Some(NO_KEY));
    let metrics = http.send("GET", a, "/metrics", Body::None).await;
    assert_eq!(metrics.status, 200);
    assert!(
        metrics.content_type.starts_with("text/plain"),
        "Prometheus text format: {:?}",
        metrics.content_type
    );
    for name in [
        "hearsay_http_requests_total",
        "hearsay_keys",
        "hearsay_view_size",
    ] {
        assert!(
            metrics.text.contains(name),
            "no {name} in:\n{}",
            metrics.text
        );
    }
    assert_prometheus_text(&metrics.text);

    // Unknown paths are a JSON 404 too, not a hang or an HTML page.
    let path = kvs_path("x").replace("/kvs/", "/nope/");
    http.send("GET", a, &path, Body::None)
        .await
        .expect_some_error(404);
}

/// Every non-comment line is `name{labels} value`.
fn assert_prometheus_text(text: &str) {
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let value = line.rsplit(' ').next().unwrap();
        assert!(
            value.parse::<f64>().is_ok() || value == "NaN" || value.ends_with("Inf"),
            "not a Prometheus sample: {line}"
        );
    }
}

#[tokio::test]
async fn metrics_count_requests_made_before_the_first_scrape() {
    let cluster = Cluster::start(1).await;
    let a = cluster.addr(0);
    let http = &cluster.http;
    http.kv("PUT", a, "m", Body::Json(json!({"value": 1})))
        .await
        .expect_result(201, "created");

    let metrics = http.send("GET", a, "/metrics", Body::None).await;
    assert_eq!(metrics.status, 200);
    let put = r#"hearsay_http_requests_total{endpoint="kvs",method="PUT",status="201"} 1"#;
    assert!(
        metrics.text.contains(put),
        "the PUT before the first scrape is not counted; first scrape:\n{}",
        metrics.text
    );
    assert!(metrics.text.contains("hearsay_keys 1"), "{}", metrics.text);
}

#[tokio::test]
async fn every_non_object_body_is_400_naming_the_problem() {
    let cluster = Cluster::start(1).await;
    let a = cluster.addr(0);
    let http = &cluster.http;
    http.kv("PUT", a, "k", Body::Json(json!({"value": 1})))
        .await
        .expect_result(201, "created");
    const NOT_AN_OBJECT: &str = "Request body must be a JSON object";
    // Arrays would be read as the fields in order (`[42]` as a value of 42).
    let bodies = [
        "[42]",
        "[42, null]",
        "[]",
        r#"[{"value": 1}]"#,
        r#""text""#,
        "42",
        "true",
        "false",
        "null",
    ];
    for body in bodies {
        for method in ["PUT", "GET", "DELETE"] {
            let reply = http.kv(method, a, "k", Body::raw(body)).await;
            assert_eq!(reply.status, 400, "{method} {body}: {reply:?}");
            assert_eq!(reply.error(), NOT_AN_OBJECT, "{method} {body}");
        }
        for method in ["PUT", "DELETE"] {
            let reply = http.send(method, a, "/view", Body::raw(body)).await;
            assert_eq!(reply.status, 400, "{method} /view {body}: {reply:?}");
            assert_eq!(reply.error(), NOT_AN_OBJECT, "{method} /view {body}");
        }
    }
    // Nothing above changed the key or the view.
    assert_eq!(http.read(a, "k").await.value(), &json!(1));
    assert_eq!(http.view(a).await, vec![a.to_string()]);
}

/// Sends `request` as raw bytes on a fresh connection, optionally closes
/// the write side, and returns the status and the JSON body of the answer.
async fn raw_exchange(addr: &str, request: &[u8], close_write: bool) -> (u16, Value) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.write_all(request).await.unwrap();
    if close_write {
        stream.shutdown().await.unwrap();
    }
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), stream.read_to_end(&mut answer))
        .await
        .expect("the replica answers and closes the connection")
        .unwrap();
    let text = String::from_utf8_lossy(&answer).into_owned();
    let status = text
        .strip_prefix("HTTP/1.1 ")
        .and_then(|rest| rest.get(..3))
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP answer: {text:?}"));
    let body = text.split_once("\r\n\r\n").map_or("", |(_, body)| body);
    let json = serde_json::from_str(body).unwrap_or_else(|_| panic!("not JSON: {text:?}"));
    (status, json)
}

#[tokio::test]
async fn a_body_cut_short_or_broken_on_the_wire_is_400_not_413() {
    let cluster = Cluster::start(1).await;
    let a = cluster.addr(0);
    let unreadable = |json: &Value| {
        json["error"]
            .as_str()
            .is_some_and(|e| e.starts_with("Request body could not be read"))
    };

    // Promises 100 bytes, sends 10, then closes its write side.
    let truncated = format!(
        "PUT /kvs/k HTTP/1.1\r\nHost: {a}\r\nContent-Type: application/json\r\n\
         Content-Length: 100\r\n\r\n{{\"value\":1"
    );
    let (status, json) = raw_exchange(a, truncated.as_bytes(), true).await;
    assert_eq!(status, 400, "{json}");
    assert!(unreadable(&json), "{json}");

    // A chunk size that is not hexadecimal.
    let broken_chunks = format!(
        "PUT /kvs/k HTTP/1.1\r\nHost: {a}\r\nContent-Type: application/json\r\n\
         Transfer-Encoding: chunked\r\n\r\nzz\r\n{{\"value\":1}}\r\n0\r\n\r\n"
    );
    let (status, json) = raw_exchange(a, broken_chunks.as_bytes(), false).await;
    assert_eq!(status, 400, "{json}");
    assert!(unreadable(&json), "{json}");

    // Neither wrote anything.
    cluster
        .http
        .kv("GET", a, "k", Body::None)
        .await
        .expect(404, Some(NO_KEY));
}

#[tokio::test]
async fn a_version_from_the_far_future_is_refused_and_counted() {
    use hearsay::core::{Dot, JsonText, Key, Life, Origin, PushRequest, VClock, Version};
    use hearsay::proto::{self, Request};

    let cluster = Cluster::start(1).await;
    let a = cluster.addr(0);
    let http = &cluster.http;
    let evil = Origin::new("127.0.0.1:1", 1);
    let poisoned = Version {
        key: Key::from("k"),
        value: Some(JsonText::from("\"poisoned\"")),
        dot: Dot {
            origin: evil.clone(),
            seq: 1,
        },
        lamport: u64::MAX,
        deps: VClock::from_pairs([(evil, 1)]),
    };
    let health = http.send("GET", a, "/health", Body::None).await;
    let incarnation = health.json["incarnation"].as_u64().expect("an incarnation");
    let push = Request::Push(PushRequest {
        from: Life {
            address: "127.0.0.1:1".into(),
            incarnation: 1,
        },
        to: incarnation,
        clock: VClock::new(),
        entries: vec![poisoned],
        completion: None,
    });
    let answer = reqwest::Client::new()
        .post(format!("http://{a}/internal/push"))
        .body(proto::encode(&push).unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);

    let metrics = http.send("GET", a, "/metrics", Body::None).await;
    let refused = r#"hearsay_peer_data_refused_total{what="version"} 1"#;
    assert!(metrics.text.contains(refused), "{}", metrics.text);
    // The acknowledged write is what a read returns.
    http.kv("PUT", a, "k", Body::Json(json!({"value": "mine"})))
        .await
        .expect_result(201, "created");
    assert_eq!(http.read(a, "k").await.value(), &json!("mine"));
}
