//! SCIM discovery: `/serviceproviderconfig`, `/schemas`, `/schemas/{id}`, `/resourcetypes`,
//! `/resourcetypes/{name}` (README, Endpoints). Only the User resource type is served: the emulator
//! has no groups (rolesync does not use them; Genesys cannot create them over SCIM either).

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::Shared;
use crate::args::Profile;
use crate::errors::{ApiError, scim_response};
use crate::scim::ScimCtx;
use crate::user::{ENTERPRISE_SCHEMA, GENESYS_SCHEMA, USER_SCHEMA};

const LIST_SCHEMA: &str = "urn:ietf:params:scim:api:messages:2.0:ListResponse";
const SPC_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:ServiceProviderConfig";
const RT_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:ResourceType";
const SCHEMA_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:Schema";

/// `filter.maxResults`: the largest page `GET /users` returns.
pub async fn service_provider_config(State(shared): State<Shared>, ctx: ScimCtx) -> Response {
    let body = json!({
        "schemas": [SPC_SCHEMA],
        "documentationUri": "https://developer.genesys.cloud/useragentman/scim/scim-apis",
        "patch": {"supported": true},
        "bulk": {"supported": false, "maxOperations": 0, "maxPayloadSize": 0},
        "filter": {"supported": true, "maxResults": shared.profile.max_results()},
        "changePassword": {"supported": false},
        "sort": {"supported": false},
        "etag": {"supported": true},
        "authenticationSchemes": [{
            "type": "oauthbearertoken",
            "name": "OAuth Bearer Token",
            "description": "Authentication with an OAuth client-credentials bearer token from POST /oauth/token",
            "specUri": "https://www.rfc-editor.org/info/rfc6750",
            "primary": true
        }],
        "meta": {
            "resourceType": "ServiceProviderConfig",
            "location": format!("{}/ServiceProviderConfig", ctx.base),
        }
    });
    scim_response(StatusCode::OK, &body)
}

fn list(resources: Vec<Value>) -> Value {
    json!({
        "schemas": [LIST_SCHEMA],
        "totalResults": resources.len(),
        "startIndex": 1,
        "itemsPerPage": resources.len(),
        "Resources": resources,
    })
}

pub async fn schemas(State(shared): State<Shared>, ctx: ScimCtx) -> Response {
    scim_response(StatusCode::OK, &list(all_schemas(&shared, &ctx.base)))
}

pub async fn schema(
    State(shared): State<Shared>,
    ctx: ScimCtx,
    Path(id): Path<String>,
) -> Response {
    match all_schemas(&shared, &ctx.base).into_iter().find(|s| {
        s["id"]
            .as_str()
            .is_some_and(|i| i.eq_ignore_ascii_case(&id))
    }) {
        Some(s) => scim_response(StatusCode::OK, &s),
        None => ApiError::scim_not_found(format!("Schema {id} not found")).into_response(),
    }
}

pub async fn resource_types(ctx: ScimCtx) -> Response {
    scim_response(StatusCode::OK, &list(vec![user_resource_type(&ctx.base)]))
}

pub async fn resource_type(ctx: ScimCtx, Path(id): Path<String>) -> Response {
    if id.eq_ignore_ascii_case("User") {
        scim_response(StatusCode::OK, &user_resource_type(&ctx.base))
    } else {
        ApiError::scim_not_found(format!("ResourceType {id} not found")).into_response()
    }
}

fn user_resource_type(base: &str) -> Value {
    json!({
        "schemas": [RT_SCHEMA],
        "id": "User",
        "name": "User",
        "endpoint": "/Users",
        "description": "Genesys Cloud user",
        "schema": USER_SCHEMA,
        "schemaExtensions": [
            {"schema": ENTERPRISE_SCHEMA, "required": false},
            {"schema": GENESYS_SCHEMA, "required": false}
        ],
        "meta": {"resourceType": "ResourceType", "location": format!("{base}/ResourceTypes/User")}
    })
}

/// One attribute definition (RFC 7643 §7).
struct A {
    name: &'static str,
    ty: &'static str,
    multi: bool,
    required: bool,
    case_exact: bool,
    mutability: &'static str,
    returned: &'static str,
    uniqueness: &'static str,
    canonical: Vec<String>,
    reference_types: &'static [&'static str],
    sub: Vec<A>,
    description: &'static str,
}

fn a(name: &'static str, ty: &'static str, description: &'static str) -> A {
    A {
        name,
        ty,
        multi: false,
        required: false,
        case_exact: false,
        mutability: "readWrite",
        returned: "default",
        uniqueness: "none",
        canonical: Vec::new(),
        reference_types: &[],
        sub: Vec::new(),
        description,
    }
}

impl A {
    fn multi(mut self) -> A {
        self.multi = true;
        self
    }
    fn required(mut self) -> A {
        self.required = true;
        self
    }
    fn exact(mut self) -> A {
        self.case_exact = true;
        self
    }
    fn mutability(mut self, m: &'static str) -> A {
        self.mutability = m;
        self
    }
    fn returned(mut self, r: &'static str) -> A {
        self.returned = r;
        self
    }
    fn unique(mut self) -> A {
        self.uniqueness = "server";
        self
    }
    fn canonical<S: ToString>(mut self, values: impl IntoIterator<Item = S>) -> A {
        self.canonical = values.into_iter().map(|v| v.to_string()).collect();
        self
    }
    fn refs(mut self, r: &'static [&'static str]) -> A {
        self.reference_types = r;
        self
    }
    fn sub(mut self, sub: Vec<A>) -> A {
        self.sub = sub;
        self
    }
    fn to_json(&self) -> Value {
        let mut v = json!({
            "name": self.name,
            "type": self.ty,
            "multiValued": self.multi,
            "description": self.description,
            "required": self.required,
            "caseExact": self.case_exact,
            "mutability": self.mutability,
            "returned": self.returned,
            "uniqueness": self.uniqueness,
        });
        if let Some(obj) = v.as_object_mut() {
            if !self.canonical.is_empty() {
                obj.insert("canonicalValues".into(), json!(self.canonical));
            }
            if !self.reference_types.is_empty() {
                obj.insert("referenceTypes".into(), json!(self.reference_types));
            }
            if !self.sub.is_empty() {
                obj.insert(
                    "subAttributes".into(),
                    Value::Array(self.sub.iter().map(A::to_json).collect()),
                );
            }
        }
        v
    }
}

fn schema_json(id: &str, name: &str, description: &str, attrs: &[A], base: &str) -> Value {
    json!({
        "schemas": [SCHEMA_SCHEMA],
        "id": id,
        "name": name,
        "description": description,
        "attributes": attrs.iter().map(A::to_json).collect::<Vec<_>>(),
        "meta": {"resourceType": "Schema", "location": format!("{base}/Schemas/{id}")}
    })
}

const PHONE_TYPES: [&str; 11] = [
    "work",
    "work2",
    "work3",
    "work4",
    "home",
    "mobile",
    "other",
    "microsoftteams",
    "zoomphone",
    "eightbyeight",
    "ringcentral",
];

/// The schemas served by `/schemas`: the user, its two extensions, then the discovery resources.
fn all_schemas(shared: &Shared, base: &str) -> Vec<Value> {
    let genesys = shared.profile == Profile::Genesys;
    let role_names: Vec<&str> = shared.catalog.names().collect();
    let mut out = vec![
        schema_json(
            USER_SCHEMA,
            "User",
            "Genesys Cloud user",
            &user_attributes(genesys, &role_names),
            base,
        ),
        schema_json(
            ENTERPRISE_SCHEMA,
            "EnterpriseUser",
            "Enterprise user extension",
            &enterprise_attributes(),
            base,
        ),
        schema_json(
            GENESYS_SCHEMA,
            "GenesysUser",
            "Genesys Cloud user extension",
            &genesys_attributes(),
            base,
        ),
    ];
    out.extend(discovery_schemas(base));
    out
}

/// The core User schema; `displayName` is required by Genesys, optional in plain RFC 7644.
fn user_attributes(genesys: bool, role_names: &[&str]) -> Vec<A> {
    let mut display_name = a(
        "displayName",
        "string",
        "The name of the user, suitable for display.",
    );
    if genesys {
        display_name = display_name.required();
    }
    vec![
        a(
            "userName",
            "string",
            "The user's Genesys Cloud email address. Must be unique.",
        )
        .required()
        .returned("always")
        .unique(),
        display_name,
        a(
            "active",
            "boolean",
            "The user's administrative status (active/inactive).",
        )
        .returned("always"),
        a("title", "string", "The user's title."),
        a("password", "string", "The user's password; never returned.")
            .mutability("writeOnly")
            .returned("never"),
        a("emails", "complex", "The user's email addresses.")
            .multi()
            .sub(vec![
                a("value", "string", "An email address."),
                a("type", "string", "work or other.").canonical(["work", "other"]),
                a("primary", "boolean", "The primary email address."),
            ]),
        a("phoneNumbers", "complex", "The user's phone numbers.")
            .multi()
            .sub(vec![
                a("value", "string", "E.164 number or tel URI."),
                a("type", "string", "The kind of number.").canonical(PHONE_TYPES),
                a("primary", "boolean", "The primary number."),
            ]),
        a(
            "roles",
            "complex",
            "Genesys Cloud roles, matched by name; Employee is always present.",
        )
        .multi()
        .sub(vec![
            a("value", "string", "The role name.")
                .exact()
                .canonical(role_names.iter().copied()),
        ]),
        a(
            "groups",
            "complex",
            "Groups the user belongs to; update them through the groups endpoint.",
        )
        .multi()
        .mutability("readOnly")
        .sub(vec![
            a("value", "string", "The group id.").mutability("readOnly"),
            a("$ref", "reference", "The group URI.")
                .mutability("readOnly")
                .refs(&["Group"]),
            a("type", "string", "direct or indirect.").mutability("readOnly"),
        ]),
    ]
}

/// The enterprise extension (`urn:…:enterprise:2.0:User`).
fn enterprise_attributes() -> Vec<A> {
    vec![
        a("division", "string", "The name of the user's division."),
        a("department", "string", "The user's department."),
        a("manager", "complex", "The user's manager.").sub(vec![
            a("value", "string", "The Genesys id of the manager."),
            a("$ref", "reference", "The manager's URI.").refs(&["User"]),
        ]),
        a("employeeNumber", "string", "The user's employee number."),
        a("dateHire", "string", "The hire date, YYYY-MM-DD."),
    ]
}

/// The Genesys extension: routing skills and languages, external ids.
fn genesys_attributes() -> Vec<A> {
    vec![
        a("routingSkills", "complex", "Routing skills (at most 50).")
            .multi()
            .sub(vec![
                a("name", "string", "Case-sensitive skill name.")
                    .required()
                    .exact(),
                a("proficiency", "decimal", "0.0 to 5.0."),
            ]),
        a(
            "routingLanguages",
            "complex",
            "Routing languages (at most 50).",
        )
        .multi()
        .sub(vec![
            a("name", "string", "Case-sensitive language name.")
                .required()
                .exact(),
            a("proficiency", "decimal", "0.0 to 5.0."),
        ]),
        a("externalIds", "complex", "External identifiers.")
            .multi()
            .sub(vec![
                a("authority", "string", "The authority of the identifier.")
                    .required()
                    .exact(),
                a("value", "string", "The identifier.").required().exact(),
            ]),
    ]
}

/// The schemas of the discovery resources themselves (ServiceProviderConfig, ResourceType,
/// Schema).
fn discovery_schemas(base: &str) -> Vec<Value> {
    let ro = |name: &'static str, ty: &'static str| a(name, ty, "").mutability("readOnly");
    vec![
        schema_json(
            SPC_SCHEMA,
            "ServiceProviderConfig",
            "Service provider configuration",
            &[
                ro("documentationUri", "reference"),
                ro("patch", "complex")
                    .required()
                    .sub(vec![ro("supported", "boolean").required()]),
                ro("bulk", "complex").required().sub(vec![
                    ro("supported", "boolean").required(),
                    ro("maxOperations", "integer").required(),
                    ro("maxPayloadSize", "integer").required(),
                ]),
                ro("filter", "complex").required().sub(vec![
                    ro("supported", "boolean").required(),
                    ro("maxResults", "integer").required(),
                ]),
                ro("changePassword", "complex")
                    .required()
                    .sub(vec![ro("supported", "boolean").required()]),
                ro("sort", "complex")
                    .required()
                    .sub(vec![ro("supported", "boolean").required()]),
                ro("etag", "complex")
                    .required()
                    .sub(vec![ro("supported", "boolean").required()]),
                ro("authenticationSchemes", "complex")
                    .required()
                    .multi()
                    .sub(vec![
                        ro("type", "string").required(),
                        ro("name", "string").required(),
                        ro("description", "string").required(),
                        ro("specUri", "reference"),
                        ro("documentationUri", "reference"),
                    ]),
            ],
            base,
        ),
        schema_json(
            RT_SCHEMA,
            "ResourceType",
            "Resource type",
            &[
                ro("id", "string"),
                ro("name", "string").required(),
                ro("description", "string"),
                ro("endpoint", "reference").required(),
                ro("schema", "reference").required().exact(),
                ro("schemaExtensions", "complex").multi().sub(vec![
                    ro("schema", "reference").required().exact(),
                    ro("required", "boolean").required(),
                ]),
            ],
            base,
        ),
        schema_json(
            SCHEMA_SCHEMA,
            "Schema",
            "Schema definition",
            &[
                ro("id", "string").required(),
                ro("name", "string"),
                ro("description", "string"),
                ro("attributes", "complex").required().multi().sub(vec![
                    ro("name", "string").required().exact(),
                    ro("type", "string").required(),
                    ro("multiValued", "boolean").required(),
                    ro("description", "string"),
                    ro("required", "boolean"),
                    ro("canonicalValues", "string").multi(),
                    ro("caseExact", "boolean"),
                    ro("mutability", "string"),
                    ro("returned", "string"),
                    ro("uniqueness", "string"),
                    ro("referenceTypes", "string").multi(),
                    ro("subAttributes", "complex").multi(),
                ]),
            ],
            base,
        ),
    ]
}
