//! Stripe's API (https://docs.stripe.com/api): the secret key as a Bearer token or as the
//! Basic username; form-encoded requests; lists `{object: "list", data, has_more}` paged
//! with `starting_after`; errors `{error: {type, message}}`; `Stripe-Version` echoed.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Query, State as AxumState};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::State;
use crate::credentials::STRIPE_SECRET_KEY;
use crate::gate::{basic, bearer};

const DEFAULT_VERSION: &str = "2024-06-20";

pub(crate) fn router() -> Router<Arc<State>> {
    Router::new().route("/v1/customers", get(list_customers).post(create_customer)).route("/v1/balance", get(balance))
}

fn error(status: StatusCode, kind: &str, message: &str) -> Response {
    (status, axum::Json(json!({"error": {"type": kind, "message": message}}))).into_response()
}

fn check(headers: &HeaderMap) -> Result<(), Response> {
    let key = bearer(headers).map(str::to_string).or_else(|| basic(headers).map(|(user, _)| user));
    match key.as_deref() {
        Some(STRIPE_SECRET_KEY) => Ok(()),
        Some(other) => {
            let shown: String = other.chars().take(8).collect();
            Err(error(
                StatusCode::UNAUTHORIZED,
                "invalid_request_error",
                &format!("Invalid API Key provided: {shown}****"),
            ))
        }
        None => Err(error(
            StatusCode::UNAUTHORIZED,
            "invalid_request_error",
            "You did not provide an API key. You need to provide your API key in the Authorization header.",
        )),
    }
}

fn versioned(headers: &HeaderMap, mut response: Response) -> Response {
    let version = headers.get("stripe-version").cloned().unwrap_or_else(|| DEFAULT_VERSION.parse().expect("ASCII"));
    response.headers_mut().insert("stripe-version", version);
    response.headers_mut().insert("request-id", "req_sandbox".parse().expect("ASCII"));
    response
}

fn seeded(state: &State) -> Vec<Value> {
    let mut customers: Vec<Value> = (1..=25)
        .map(|i| json!({"id": format!("cus_{i:014}"), "object": "customer", "email": format!("customer{i}@example.com"), "name": format!("Customer {i}")}))
        .collect();
    customers.extend(state.stored("stripe.customers"));
    customers
}

#[derive(Deserialize)]
struct ListParams {
    limit: Option<usize>,
    starting_after: Option<String>,
}

async fn list_customers(
    AxumState(state): AxumState<Arc<State>>,
    headers: HeaderMap,
    Query(params): Query<ListParams>,
) -> Response {
    if let Err(response) = check(&headers) {
        return response;
    }
    let limit = params.limit.unwrap_or(10);
    if !(1..=100).contains(&limit) {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            "Invalid integer: limit must be between 1 and 100",
        );
    }
    let customers = seeded(&state);
    let start = match &params.starting_after {
        Some(after) => match customers.iter().position(|c| c["id"] == after.as_str()) {
            Some(i) => i + 1,
            None => {
                return error(
                    StatusCode::BAD_REQUEST,
                    "invalid_request_error",
                    &format!("No such customer: '{after}'"),
                );
            }
        },
        None => 0,
    };
    let data = crate::gate::slice(&customers, start, limit);
    let has_more = start + limit < customers.len();
    versioned(
        &headers,
        axum::Json(json!({"object": "list", "url": "/v1/customers", "has_more": has_more, "data": data}))
            .into_response(),
    )
}

async fn create_customer(AxumState(state): AxumState<Arc<State>>, headers: HeaderMap, body: Bytes) -> Response {
    if let Err(response) = check(&headers) {
        return response;
    }
    let is_form = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
    if !is_form && !body.is_empty() {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            "Invalid request: expected form-encoded parameters",
        );
    }
    let params: std::collections::BTreeMap<String, String> = url::form_urlencoded::parse(&body).into_owned().collect();
    let number = seeded(&state).len() + 1;
    let customer = json!({"id": format!("cus_{number:014}"), "object": "customer",
                          "email": params.get("email"), "name": params.get("name")});
    state.push("stripe.customers", customer.clone());
    versioned(&headers, axum::Json(customer).into_response())
}

async fn balance(headers: HeaderMap) -> Response {
    if let Err(response) = check(&headers) {
        return response;
    }
    versioned(
        &headers,
        axum::Json(json!({"object": "balance", "livemode": false, "available": [{"amount": 12345, "currency": "usd"}], "pending": []}))
            .into_response(),
    )
}
