//! The OpenAPI 3 document of `wakusim serve` (`GET /openapi.json`).

use serde_json::{Value, json};

fn error_response(what: &str) -> Value {
    json!({ "description": what, "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Error" } } } })
}

fn ok(what: &str, schema: &str) -> Value {
    json!({ "description": what, "content": { "application/json": { "schema": { "$ref": format!("#/components/schemas/{schema}") } } } })
}

fn path_param(name: &str, what: &str) -> Value {
    json!({ "name": name, "in": "path", "required": true, "description": what, "schema": { "type": "string" } })
}

/// The document describing every endpoint.
pub fn document() -> Value {
    let name = path_param("name", "The community's name.");
    let id = path_param("id", "The run's id.");
    json!({
        "openapi": "3.0.3",
        "info": {
            "title": "wakusim",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Community bandwidth simulations: create communities, publish into them, start, watch and stop runs, fetch their reports. The same operations as the wakusim command line."
        },
        "paths": {
            "/openapi.json": { "get": { "summary": "This document.", "responses": { "200": { "description": "OpenAPI 3 document" } } } },
            "/communities": {
                "get": { "summary": "Every community, by name.", "responses": {
                    "200": { "description": "The communities", "content": { "application/json": { "schema": { "type": "array", "items": { "$ref": "#/components/schemas/Community" } } } } } } },
                "post": { "summary": "Create a community (protected: a fresh secp256k1 key pair).",
                    "requestBody": { "required": true, "content": { "application/json": { "schema": { "$ref": "#/components/schemas/NewCommunity" } } } },
                    "responses": { "201": ok("Created", "Community"), "400": error_response("A bad field, named"), "409": error_response("The name is taken") } }
            },
            "/communities/{name}": { "get": { "summary": "One community.",
                "parameters": [name, { "name": "private_key", "in": "query", "required": false, "description": "true to include the signing key", "schema": { "type": "boolean" } }],
                "responses": { "200": ok("The community", "Community"), "404": error_response("No such community") } } },
            "/communities/{name}/messages": { "post": { "summary": "Build a WakuMessage for the community, signed when it is protected.",
                "parameters": [name],
                "requestBody": { "required": true, "content": { "application/json": { "schema": { "$ref": "#/components/schemas/NewMessage" } } } },
                "responses": { "201": ok("The message", "Message"), "400": error_response("A bad field, named"), "404": error_response("No such community") } } },
            "/runs": {
                "get": { "summary": "Every run.", "responses": {
                    "200": { "description": "The runs", "content": { "application/json": { "schema": { "type": "array", "items": { "$ref": "#/components/schemas/Run" } } } } } } },
                "post": { "summary": "Start a run of a scenario (TOML, or JSON with the same fields; see wakusim/scenarios/demo.toml).",
                    "requestBody": { "required": true, "content": {
                        "application/toml": { "schema": { "type": "string" } },
                        "application/json": { "schema": { "type": "object" } } } },
                    "responses": { "202": ok("Started", "Run"), "400": error_response("A bad scenario field, named"), "409": error_response("A run is in progress") } }
            },
            "/sweeps": { "post": { "summary": "Start a sweep: the scenario in the body run once per value of one parameter; watch, stop and fetch it as a run (its report is the sweep table).",
                "parameters": [
                    { "name": "param", "in": "query", "required": true, "description": "The parameter to vary", "schema": { "type": "string", "enum": ["nodes", "communities_per_shard", "rate", "d", "size"] } },
                    { "name": "values", "in": "query", "required": true, "description": "Its values, comma-separated (whole numbers except for rate)", "schema": { "type": "string", "example": "4,8,16" } }],
                "requestBody": { "required": true, "content": {
                    "application/toml": { "schema": { "type": "string" } },
                    "application/json": { "schema": { "type": "object" } } } },
                "responses": { "202": ok("Started", "Run"), "400": error_response("A bad parameter, value or scenario field, named"), "409": error_response("A run is in progress") } } },
            "/runs/{id}": { "get": { "summary": "A run's status and progress.", "parameters": [id],
                "responses": { "200": ok("The run", "Run"), "404": error_response("No such run") } } },
            "/runs/{id}/stop": { "post": { "summary": "End the run's publishing early; it still closes, measures and reports.", "parameters": [id],
                "responses": { "202": ok("Stopping", "Run"), "404": error_response("No such run") } } },
            "/runs/{id}/report": { "get": { "summary": "The run's report (as report.json; a sweep's as sweep.json).", "parameters": [id],
                "responses": { "200": { "description": "The per-node report, or the sweep table", "content": { "application/json": { "schema": { "type": "object" } } } },
                    "404": error_response("No such run"), "409": error_response("Still running, or failed") } } }
        },
        "components": { "schemas": {
            "Error": { "type": "object", "required": ["error"], "properties": {
                "error": { "type": "string" }, "field": { "type": "string", "nullable": true, "description": "The field to fix, for a 400" } } },
            "NewCommunity": { "type": "object", "required": ["name"], "additionalProperties": false, "properties": {
                "name": { "type": "string", "pattern": "^[A-Za-z0-9_-]{1,64}$" },
                "shard": { "type": "integer", "minimum": 0, "maximum": 1023, "description": "Its own shard; the shared shard 32 when absent" },
                "cluster": { "type": "integer", "default": 16 },
                "protected": { "type": "boolean", "default": false },
                "content_topics": { "type": "array", "items": { "type": "string" } } } },
            "Community": { "type": "object", "properties": {
                "name": { "type": "string" }, "cluster": { "type": "integer" }, "shard": { "type": "integer" },
                "pubsub_topic": { "type": "string" }, "protected": { "type": "boolean" },
                "content_topics": { "type": "array", "items": { "type": "string" } },
                "public_key": { "type": "string", "nullable": true, "description": "SEC1 compressed, hex" },
                "private_key": { "type": "string", "description": "Only with ?private_key=true" } } },
            "NewMessage": { "type": "object", "additionalProperties": false, "description": "Exactly one of payload, payload_hex, size", "properties": {
                "content_topic": { "type": "string" }, "payload": { "type": "string" }, "payload_hex": { "type": "string" },
                "size": { "type": "integer", "description": "Random payload bytes" }, "ephemeral": { "type": "boolean" } } },
            "Message": { "type": "object", "properties": {
                "community": { "type": "string" }, "pubsub_topic": { "type": "string" }, "content_topic": { "type": "string" },
                "timestamp": { "type": "integer" }, "signed": { "type": "boolean" },
                "waku_message_hex": { "type": "string" }, "id": { "type": "string" },
                "relay_json": { "type": "object", "description": "For nwaku's POST /relay/v1/messages/{pubsub topic}" } } },
            "Run": { "type": "object", "properties": {
                "id": { "type": "integer" }, "kind": { "type": "string", "enum": ["run", "sweep"] }, "status": { "type": "string", "enum": ["running", "stopping", "done", "failed"] },
                "nodes": { "type": "integer" }, "duration_secs": { "type": "number" }, "elapsed_secs": { "type": "number" },
                "out": { "type": "string" }, "error": { "type": "string", "nullable": true } } }
        } }
    })
}
