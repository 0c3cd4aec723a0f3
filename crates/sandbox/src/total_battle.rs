//! The "Total Battle" game server of the seed documents: players, battles and chests, an API
//! key in the `api_key` query parameter, page pagination (`page`, `per_page`,
//! `total_pages`).

use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, Query};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::State;
use crate::credentials::TOTAL_BATTLE_API_KEY;

pub(crate) fn router() -> Router<Arc<State>> {
    Router::new()
        .route("/status", get(status))
        .route("/players", get(players))
        .route("/players/{id}", get(player))
        .route("/players/{id}/battles", get(battles))
        .route("/players/{id}/chests", get(chests))
}

#[derive(Deserialize)]
struct Params {
    api_key: Option<String>,
    page: Option<usize>,
    per_page: Option<usize>,
}

fn check(params: &Params) -> Result<(), Response> {
    if params.api_key.as_deref() == Some(TOTAL_BATTLE_API_KEY) {
        return Ok(());
    }
    Err((StatusCode::FORBIDDEN, axum::Json(json!({"error": "invalid api key"}))).into_response())
}

const PLAYERS: u64 = 42;

fn player_json(id: u64) -> Value {
    json!({"id": id, "name": format!("Commander{id}"), "level": 10 + id % 40, "power": id * 13_579 % 1_000_000, "clan": format!("clan-{}", id % 5)})
}

async fn status(Query(params): Query<Params>) -> Response {
    if let Err(response) = check(&params) {
        return response;
    }
    axum::Json(json!({"status": "online", "season": 7, "players_online": 1234})).into_response()
}

async fn players(Query(params): Query<Params>) -> Response {
    if let Err(response) = check(&params) {
        return response;
    }
    let per_page = params.per_page.unwrap_or(10).clamp(1, 50);
    let page = params.page.unwrap_or(1).max(1);
    let all: Vec<Value> = (1..=PLAYERS).map(player_json).collect();
    axum::Json(
        json!({"players": crate::gate::slice(&all, (page - 1) * per_page, per_page), "page": page, "per_page": per_page,
                      "total_pages": all.len().div_ceil(per_page)}),
    )
    .into_response()
}

fn known(id: u64) -> Result<(), Response> {
    if (1..=PLAYERS).contains(&id) {
        Ok(())
    } else {
        Err((StatusCode::NOT_FOUND, axum::Json(json!({"error": "player not found"}))).into_response())
    }
}

async fn player(Path(id): Path<u64>, Query(params): Query<Params>) -> Response {
    if let Err(response) = check(&params).and_then(|_| known(id)) {
        return response;
    }
    axum::Json(player_json(id)).into_response()
}

async fn battles(Path(id): Path<u64>, Query(params): Query<Params>) -> Response {
    if let Err(response) = check(&params).and_then(|_| known(id)) {
        return response;
    }
    let battles: Vec<Value> = (1..=5)
        .map(|b| json!({"id": id * 100 + b, "attacker": id, "defender": (id + b) % PLAYERS + 1, "won": b % 2 == 1}))
        .collect();
    axum::Json(json!({"battles": battles})).into_response()
}

async fn chests(Path(id): Path<u64>, Query(params): Query<Params>) -> Response {
    if let Err(response) = check(&params).and_then(|_| known(id)) {
        return response;
    }
    let chests: Vec<Value> = ["common", "rare", "epic"]
        .iter()
        .enumerate()
        .map(|(i, kind)| json!({"id": id * 10 + i as u64, "type": kind, "opened": i == 0}))
        .collect();
    axum::Json(json!({"chests": chests})).into_response()
}
