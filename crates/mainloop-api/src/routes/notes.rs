//! Notes and decisions the main thread keeps in every context: listing, adding, editing
//! and deleting the user's own (those the main thread remembered included).

use crate::AppState;
use crate::auth::CurrentUser;
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::extract::{ApiJson, ApiPath};
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use mainloop_domain::NoteId;
use mainloop_domain::notes::{MAX_NOTE_CHARS, Note, NoteKind};
use mainloop_engine::EngineError;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// The user's notes, most recently written or edited first; also the data of a
/// `notes.updated` event.
#[derive(Debug, Serialize, ToSchema)]
pub struct NoteList {
    pub notes: Vec<Note>,
}

/// A note as the user writes it.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NoteInput {
    /// `fact` or `decision`.
    #[schema(value_type = NoteKind)]
    pub kind: String,
    /// The note: not blank, at most 2000 characters.
    #[schema(
        min_length = 1,
        max_length = 2000,
        pattern = r"^[^\u0000]*\S[^\u0000]*$"
    )]
    pub text: String,
}

impl NoteInput {
    fn kind(&self) -> ApiResult<NoteKind> {
        self.kind
            .parse()
            .map_err(|e: String| ApiError::from(EngineError::Invalid(e)))
    }

    fn checked(&self) -> ApiResult<NoteKind> {
        crate::extract::at_most("text", &self.text, MAX_NOTE_CHARS)?;
        self.kind()
    }
}

/// The user's notes and decisions.
#[utoipa::path(
    get,
    path = "/api/notes",
    operation_id = "list_notes",
    tag = "notes",
    responses(
        (status = 200, description = "The notes, most recently written or edited first", body = NoteList),
        (status = 401, description = "Not signed in", body = ErrorBody),
    )
)]
pub async fn list(
    CurrentUser(user): CurrentUser,
    State(state): State<AppState>,
) -> ApiResult<Json<NoteList>> {
    Ok(Json(NoteList {
        notes: state.engine.notes(user.id).await?,
    }))
}

/// Adds a note. It is in the main thread's context from the next turn on; older notes
/// that no longer fit fold (the chat says so).
#[utoipa::path(
    post,
    path = "/api/notes",
    operation_id = "create_note",
    tag = "notes",
    request_body = NoteInput,
    responses(
        (status = 201, description = "The note", body = Note),
        (status = 400, description = "Malformed body", body = ErrorBody),
        (status = 401, description = "Not signed in", body = ErrorBody),
        (status = 403, description = "Cross-origin request", body = ErrorBody),
        (status = 413, description = "The body is too large", body = ErrorBody),
        (status = 422, description = "An unknown kind, or blank or too long text", body = ErrorBody),
    )
)]
pub async fn create(
    CurrentUser(user): CurrentUser,
    State(state): State<AppState>,
    ApiJson(body): ApiJson<NoteInput>,
) -> ApiResult<(StatusCode, Json<Note>)> {
    let kind = body.checked()?;
    let note = state.engine.add_note(user.id, kind, &body.text).await?;
    Ok((StatusCode::CREATED, Json(note)))
}

/// Rewrites a note; it becomes the most recently edited (and so the last to fold).
#[utoipa::path(
    put,
    path = "/api/notes/{id}",
    operation_id = "update_note",
    tag = "notes",
    params(("id" = NoteId, Path, description = "Note id")),
    request_body = NoteInput,
    responses(
        (status = 200, description = "The note", body = Note),
        (status = 400, description = "Malformed id or body", body = ErrorBody),
        (status = 401, description = "Not signed in", body = ErrorBody),
        (status = 403, description = "Cross-origin request", body = ErrorBody),
        (status = 404, description = "No such note", body = ErrorBody),
        (status = 413, description = "The body is too large", body = ErrorBody),
        (status = 422, description = "An unknown kind, or blank or too long text", body = ErrorBody),
    )
)]
pub async fn update(
    CurrentUser(user): CurrentUser,
    State(state): State<AppState>,
    ApiPath(id): ApiPath<NoteId>,
    ApiJson(body): ApiJson<NoteInput>,
) -> ApiResult<Json<Note>> {
    let kind = body.checked()?;
    Ok(Json(
        state
            .engine
            .edit_note(user.id, id, kind, &body.text)
            .await?,
    ))
}

/// Deletes a note.
#[utoipa::path(
    delete,
    path = "/api/notes/{id}",
    operation_id = "delete_note",
    tag = "notes",
    params(("id" = NoteId, Path, description = "Note id")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 400, description = "Malformed id", body = ErrorBody),
        (status = 401, description = "Not signed in", body = ErrorBody),
        (status = 403, description = "Cross-origin request", body = ErrorBody),
        (status = 404, description = "No such note", body = ErrorBody),
    )
)]
pub async fn delete(
    CurrentUser(user): CurrentUser,
    State(state): State<AppState>,
    ApiPath(id): ApiPath<NoteId>,
) -> ApiResult<StatusCode> {
    state.engine.delete_note(user.id, id).await?;
    Ok(StatusCode::NO_CONTENT)
}
