//! `mainloop usage`, `pause` and `resume`: what has been spent, and stopping all work
//! for a while.

use super::http::ClientError;
use super::views::{PauseView, UsageView, read};
use super::{Ctx, usage_render};
use time::OffsetDateTime;

/// `mainloop usage [--days N]`.
pub async fn show(ctx: &Ctx, days: Option<u32>) -> Result<(), ClientError> {
    let query: Vec<(&str, String)> = days.map(|n| ("days", n.to_string())).into_iter().collect();
    let body = ctx.api.get("/api/usage", &query).await?;
    ctx.show(&body, || {
        let u: UsageView = read(&body);
        usage_render::usage(&u, OffsetDateTime::now_utc())
    })
}

/// `mainloop pause` (`pause` true) and `mainloop resume`.
pub async fn set_paused(ctx: &Ctx, pause: bool) -> Result<(), ClientError> {
    let path = if pause { "/api/pause" } else { "/api/resume" };
    let body = ctx.api.post(path, None).await?;
    ctx.show(&body, || {
        let state: PauseView = read(&body);
        let words = usage_render::pause_words(&state, OffsetDateTime::now_utc());
        if !pause && !state.paused {
            "Resumed: paused tasks go on, and agents start as usual.\n".to_owned()
        } else {
            words
        }
    })
}
