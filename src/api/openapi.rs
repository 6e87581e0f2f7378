//! The OpenAPI document served at `/openapi.json`.
//!
//! It is derived from the handlers' `#[utoipa::path]` annotations and the
//! answer and body types they really serialise or parse (`ToSchema` derives
//! beside them), so the document cannot drift from the wire. The one type
//! from the core, [`VClock`], gets its schema here: the core stays free of
//! HTTP concerns.

use std::borrow::Cow;

use axum::response::{IntoResponse, Response};
use axum::Json;
use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};
use utoipa::openapi::RefOr;

use crate::core::VClock;

/// The OpenAPI document, generated from the handlers' annotations.
#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "hearsay",
        description = "A replicated, causally consistent key-value store (CSE138 Assignment 3 wire API plus operator extensions)."
    ),
    paths(
        super::view::get_view,
        super::view::put_view,
        super::view::delete_view,
        super::kvs::get_key,
        super::kvs::put_key,
        super::kvs::delete_key,
        super::operator::get_members,
        super::operator::health,
        super::operator::ready,
        super::operator::metrics_text,
        super::operator::keyring
    )
)]
pub struct ApiDoc;

pub(super) async fn openapi() -> Response {
    Json(<ApiDoc as utoipa::OpenApi>::openapi()).into_response()
}

/// Causal metadata on the wire: an object of origins
/// (`"<address>@<incarnation>"`) to counts, as `VClock` serialises itself.
impl utoipa::PartialSchema for VClock {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::Object)
            .description(Some(
                "Causal metadata: pass the object from your last answer back unchanged (or null on your first request).",
            ))
            .additional_properties(Some(
                ObjectBuilder::new()
                    .schema_type(Type::Integer)
                    .minimum(Some(0)),
            ))
            .examples([serde_json::json!({"10.10.0.2:8090@1764000000123": 3})])
            .into()
    }
}

impl utoipa::ToSchema for VClock {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("CausalMetadata")
    }
}

#[cfg(test)]
mod tests {
    use serde::Serialize;
    use serde_json::{json, Value};
    use utoipa::{OpenApi, ToSchema};

    use super::super::kvs::{Missing, Written};
    use super::super::operator::{Health, Ready};
    use super::super::view::{ViewList, ViewResult};
    use super::super::ErrorBody;
    use super::*;
    use crate::core::Origin;

    fn document() -> Value {
        serde_json::to_value(ApiDoc::openapi()).unwrap()
    }

    /// The property names a schema in the document lists.
    fn properties(name: &str) -> Vec<String> {
        let doc = document();
        let schema = &doc["components"]["schemas"][name];
        let mut names: Vec<String> = schema["properties"]
            .as_object()
            .unwrap_or_else(|| panic!("schema {name} has properties: {schema}"))
            .keys()
            .cloned()
            .collect();
        names.sort();
        names
    }

    /// The field names `answer` really has on the wire.
    fn fields<T: Serialize>(answer: &T) -> Vec<String> {
        let mut names: Vec<String> = serde_json::to_value(answer)
            .unwrap()
            .as_object()
            .unwrap()
            .keys()
            .cloned()
            .collect();
        names.sort();
        names
    }

    fn assert_documented<T: Serialize + ToSchema>(answer: &T) {
        assert_eq!(properties(&T::name()), fields(answer), "{}", T::name());
    }

    #[test]
    fn every_answer_is_documented_with_the_fields_it_has() {
        let metadata = VClock::from_pairs([(Origin::new("127.0.0.1:1", 2), 3)]);
        assert_documented(&Written {
            result: "created",
            causal_metadata: &metadata,
        });
        assert_documented(&Missing {
            error: "Key does not exist",
            causal_metadata: &metadata,
        });
        assert_documented(&ErrorBody { error: "x" });
        assert_documented(&ViewList { view: vec![] });
        assert_documented(&ViewResult { result: "added" });
        assert_documented(&Health {
            address: "127.0.0.1:1",
            draining: false,
            incarnation: 1,
            status: "ok",
        });
        assert_documented(&Ready {
            ready: true,
            reason: "x",
        });
        assert_eq!(properties("Found"), ["causal-metadata", "result", "value"]);
        assert_eq!(properties("KvBody"), ["causal-metadata", "value"]);
        assert_eq!(properties("ViewChangeRequest"), ["socket-address"]);
        assert_eq!(
            properties("Member"),
            [
                "address",
                "admitted",
                "in_view",
                "incarnation",
                "is_self",
                "last_heard_ms_ago",
                "state"
            ]
        );
    }

    #[test]
    fn causal_metadata_is_described_as_an_object_of_counts() {
        let doc = document();
        let schema = &doc["components"]["schemas"]["CausalMetadata"];
        assert_eq!(schema["type"], "object");
        assert_eq!(schema["additionalProperties"]["type"], "integer");
        let written = &doc["components"]["schemas"]["Written"];
        assert_eq!(
            written["properties"]["causal-metadata"]["$ref"],
            "#/components/schemas/CausalMetadata"
        );
    }

    /// Every endpoint and status the document listed before it was derived
    /// from the real types is still listed.
    #[test]
    fn the_document_keeps_every_endpoint_and_status() {
        let doc = document();
        let expected = json!({
            "/view": {
                "get": [200],
                "put": [200, 201, 400, 401, 409, 503],
                "delete": [200, 400, 401, 404, 503]
            },
            "/kvs/{key}": {
                "get": [200, 400, 404, 413, 503],
                "put": [200, 201, 400, 413, 503],
                "delete": [200, 400, 404, 413, 503]
            },
            "/members": {"get": [200]},
            "/health": {"get": [200]},
            "/ready": {"get": [200, 503]},
            "/metrics": {"get": [200]}
        });
        // GET and DELETE may come without a body; PUT needs one.
        let kvs = &doc["paths"]["/kvs/{key}"];
        assert_ne!(kvs["get"]["requestBody"]["required"], true);
        assert_ne!(kvs["delete"]["requestBody"]["required"], true);
        assert_eq!(kvs["put"]["requestBody"]["required"], true);
        for (path, operations) in expected.as_object().unwrap() {
            for (method, statuses) in operations.as_object().unwrap() {
                let responses = doc["paths"][path][method]["responses"]
                    .as_object()
                    .unwrap_or_else(|| panic!("{method} {path} is documented"));
                let mut documented: Vec<u64> =
                    responses.keys().map(|k| k.parse().unwrap()).collect();
                documented.sort();
                let statuses: Vec<u64> = statuses
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|s| s.as_u64().unwrap())
                    .collect();
                assert_eq!(documented, statuses, "{method} {path}");
            }
        }
    }
}
