//! The OpenAPI 3 document of the admin API, served at /api/v1/openapi.json.

use axum::Json;
use serde_json::{json, Value};

/// `GET /api/v1/openapi.json`.
pub async fn document() -> Json<Value> {
    Json(spec())
}

fn error_response(description: &str) -> Value {
    json!({ "description": description, "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Error" } } } })
}

fn path_param(name: &str, description: &str) -> Value {
    json!({ "name": name, "in": "path", "required": true, "description": description, "schema": { "type": "string" } })
}

/// The document itself.
pub fn spec() -> Value {
    let group = path_param("name", "target group name");
    let address = path_param("address", "target address as registered (ip:port or host:port)");
    let json_body = |schema: &str| json!({ "required": true, "content": { "application/json": { "schema": { "$ref": format!("#/components/schemas/{schema}") } } } });
    json!({
        "openapi": "3.0.3",
        "info": {
            "title": "ballast admin API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Listeners, target groups and targets of a running ballast. Writes need `Authorization: Bearer <token>` (the token in [admin].token_file); reads are open on loopback."
        },
        "components": {
            "securitySchemes": { "bearer": { "type": "http", "scheme": "bearer" } },
            "schemas": {
                "Error": { "type": "object", "properties": { "error": { "type": "string" } }, "required": ["error"] },
                "Target": {
                    "type": "object",
                    "properties": {
                        "address": { "type": "string" },
                        "weight": { "type": "integer" },
                        "zone": { "type": "string", "nullable": true },
                        "state": { "type": "string", "enum": ["initial", "healthy", "unhealthy", "unused", "draining"] },
                        "reason": { "type": "string", "nullable": true, "description": "ELB reason code, e.g. Elb.InitialHealthChecking, Target.Timeout, Target.ResponseCodeMismatch, Target.FailedHealthChecks, Target.DeregistrationInProgress" }
                    },
                    "required": ["address", "weight", "state"]
                },
                "NewTarget": {
                    "type": "object",
                    "properties": { "address": { "type": "string" }, "weight": { "type": "integer", "minimum": 0, "maximum": 999 }, "zone": { "type": "string" } },
                    "required": ["address"],
                    "additionalProperties": false
                },
                "WeightChange": {
                    "type": "object",
                    "properties": { "weight": { "type": "integer", "minimum": 0, "maximum": 999 } },
                    "required": ["weight"],
                    "additionalProperties": false
                },
                "Desired": {
                    "type": "object",
                    "properties": { "desired": { "type": "integer", "minimum": 0 } },
                    "required": ["desired"]
                },
                "ReloadErrors": {
                    "type": "object",
                    "properties": { "errors": { "type": "array", "items": { "type": "object", "properties": {
                        "file": { "type": "string" }, "line": { "type": "integer", "nullable": true },
                        "key": { "type": "string" }, "message": { "type": "string" }, "text": { "type": "string" } } } } }
                }
            }
        },
        "paths": {
            "/api/v1/listeners": { "get": {
                "summary": "Listeners with their rules",
                "responses": { "200": { "description": "the listeners, as configured" } } } },
            "/api/v1/target-groups": { "get": {
                "summary": "Target groups with their settings",
                "responses": { "200": { "description": "the target groups, with counts of healthy and unhealthy targets" } } } },
            "/api/v1/target-groups/{name}/targets": {
                "get": {
                    "summary": "The targets of a group, with state and reason",
                    "parameters": [group],
                    "responses": {
                        "200": { "description": "the targets", "content": { "application/json": { "schema": { "type": "array", "items": { "$ref": "#/components/schemas/Target" } } } } },
                        "404": error_response("no such target group") } },
                "post": {
                    "summary": "Register a target; it starts initial",
                    "security": [{ "bearer": [] }],
                    "parameters": [group],
                    "requestBody": json_body("NewTarget"),
                    "responses": {
                        "201": { "description": "registered" },
                        "400": error_response("bad body or address"),
                        "401": error_response("missing or wrong token"),
                        "404": error_response("no such target group"),
                        "409": error_response("already registered") } } },
            "/api/v1/target-groups/{name}/targets/{address}": {
                "delete": {
                    "summary": "Deregister a target; it drains, then leaves",
                    "security": [{ "bearer": [] }],
                    "parameters": [group, address],
                    "responses": {
                        "202": { "description": "draining" },
                        "401": error_response("missing or wrong token"),
                        "404": error_response("no such group or target") } },
                "patch": {
                    "summary": "Change a target's weight",
                    "security": [{ "bearer": [] }],
                    "parameters": [group, address],
                    "requestBody": json_body("WeightChange"),
                    "responses": {
                        "200": { "description": "changed" },
                        "400": error_response("bad body or weight"),
                        "401": error_response("missing or wrong token"),
                        "404": error_response("no such group or target") } } },
            "/api/v1/scaling-groups": { "get": {
                "summary": "Scaling groups",
                "responses": { "200": { "description": "the scaling groups" } } } },
            "/api/v1/scaling-groups/{name}": { "put": {
                "summary": "Set a scaling group's desired capacity",
                "security": [{ "bearer": [] }],
                "parameters": [path_param("name", "scaling group name")],
                "requestBody": json_body("Desired"),
                "responses": {
                    "200": { "description": "changed" },
                    "401": error_response("missing or wrong token"),
                    "404": error_response("no such scaling group") } } },
            "/api/v1/reload": { "post": {
                "summary": "Re-read the config file",
                "security": [{ "bearer": [] }],
                "responses": {
                    "200": { "description": "reloaded" },
                    "401": error_response("missing or wrong token"),
                    "422": { "description": "the file does not validate; nothing changed", "content": { "application/json": { "schema": { "$ref": "#/components/schemas/ReloadErrors" } } } } } } },
            "/api/v1/openapi.json": { "get": {
                "summary": "This document",
                "responses": { "200": { "description": "OpenAPI 3 document" } } } },
            "/metrics": { "get": {
                "summary": "Prometheus metrics",
                "responses": { "200": { "description": "Prometheus text format" } } } },
            "/": { "get": {
                "summary": "The dashboard",
                "responses": { "200": { "description": "an HTML page" } } } }
        }
    })
}
