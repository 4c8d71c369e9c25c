//! Projects: the repositories a user works in, created the first time a task names one.

use crate::{Result, Store, Tx, parse};
use mainloop_domain::records::Project;
use mainloop_domain::{ProjectId, Timestamp, UserId};
use sqlx::Row;
use sqlx::any::AnyRow;

const COLS: &str = "id, repo, name, settings, created_at";

fn project_from_row(row: &AnyRow) -> Result<Project> {
    let settings: String = row.try_get("settings")?;
    Ok(Project {
        id: parse(&row.try_get::<String, _>("id")?, "project id")?,
        repo: row.try_get("repo")?,
        name: row.try_get("name")?,
        settings: serde_json::from_str(&settings)?,
        created_at: Timestamp::from_millis(row.try_get("created_at")?),
    })
}

/// A short display name for a repository: its last path component without `.git`.
#[must_use]
pub fn project_name(repo: &str) -> String {
    let trimmed = repo.trim_end_matches('/').trim_end_matches(".git");
    trimmed
        .rsplit(['/', ':'])
        .find(|s| !s.is_empty())
        .unwrap_or(trimmed)
        .to_owned()
}

impl Tx {
    /// The user's project for `repo`, created if new.
    ///
    /// # Errors
    /// On database failure.
    pub async fn upsert_project(
        &mut self,
        user: UserId,
        repo: &str,
        now: Timestamp,
    ) -> Result<Project> {
        sqlx::query(
            "INSERT INTO projects (id, user_id, repo, name, settings, created_at) \
             VALUES ($1, $2, $3, $4, '{}', $5) ON CONFLICT (user_id, repo) DO NOTHING",
        )
        .bind(ProjectId::new_v7(now).to_string())
        .bind(user.to_string())
        .bind(repo)
        .bind(project_name(repo))
        .bind(now.as_millis())
        .execute(self.conn())
        .await?;
        let row = sqlx::query(&format!(
            "SELECT {COLS} FROM projects WHERE user_id = $1 AND repo = $2"
        ))
        .bind(user.to_string())
        .bind(repo)
        .fetch_one(self.conn())
        .await?;
        project_from_row(&row)
    }

    /// Replaces the settings of the user's project `id` (validated by the caller);
    /// `None` when the user has no such project.
    ///
    /// # Errors
    /// On database failure.
    pub async fn set_project_settings(
        &mut self,
        user: UserId,
        id: ProjectId,
        settings: &serde_json::Value,
    ) -> Result<Option<Project>> {
        let row = sqlx::query(&format!(
            "UPDATE projects SET settings = $1 WHERE user_id = $2 AND id = $3 RETURNING {COLS}"
        ))
        .bind(serde_json::to_string(settings)?)
        .bind(user.to_string())
        .bind(id.to_string())
        .fetch_optional(self.conn())
        .await?;
        row.as_ref().map(project_from_row).transpose()
    }
}

impl Store {
    /// The user's projects, newest first.
    ///
    /// # Errors
    /// On database failure.
    pub async fn projects(&self, user: UserId) -> Result<Vec<Project>> {
        let rows = sqlx::query(&format!(
            "SELECT {COLS} FROM projects WHERE user_id = $1 ORDER BY created_at DESC, id"
        ))
        .bind(user.to_string())
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(project_from_row).collect()
    }

    /// One of the user's projects.
    ///
    /// # Errors
    /// On database failure.
    pub async fn project(&self, user: UserId, id: ProjectId) -> Result<Option<Project>> {
        let row = sqlx::query(&format!(
            "SELECT {COLS} FROM projects WHERE user_id = $1 AND id = $2"
        ))
        .bind(user.to_string())
        .bind(id.to_string())
        .fetch_optional(self.pool())
        .await?;
        row.as_ref().map(project_from_row).transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::project_name;

    #[test]
    fn names_from_paths_urls_and_slugs() {
        assert_eq!(project_name("/home/me/src/app"), "app");
        assert_eq!(project_name("/home/me/src/app/"), "app");
        assert_eq!(project_name("https://github.com/o/repo.git"), "repo");
        assert_eq!(project_name("git@github.com:o/repo.git"), "repo");
        assert_eq!(project_name("owner/name"), "name");
        assert_eq!(project_name("solo"), "solo");
    }
}
