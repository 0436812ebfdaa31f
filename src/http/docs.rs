//! `GET /openapi.json` and `GET /docs`: the API description and a page that renders it, with
//! no external assets (it works on an air-gapped network).

use axum::http::header;
use axum::response::{Html, IntoResponse};

const OPENAPI: &str = include_str!("../../docs/openapi.json");

pub async fn openapi() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI)
}

pub async fn page() -> Html<&'static str> {
    Html(include_str!("../../docs/api.html"))
}
