//! `mainloop agents`: the coding agents the server is configured with.

use super::Ctx;
use super::http::ClientError;
use serde_json::Value;

/// `mainloop agents`.
pub async fn list(ctx: &Ctx) -> Result<(), ClientError> {
    let body = ctx.api.get("/api/agents", &[]).await?;
    ctx.show(&body, || table(&body))
}

/// One line per agent: name (starred when it is the default), protocol, whether it is
/// installed (with its version), its own cap, and its command.
fn table(body: &Value) -> String {
    let agents = body["agents"].as_array().cloned().unwrap_or_default();
    if agents.is_empty() {
        return "No agents are configured.\n".to_owned();
    }
    let rows: Vec<[String; 5]> = agents
        .iter()
        .map(|a| {
            let text = |k: &str| a[k].as_str().unwrap_or_default().to_owned();
            let star = if a["default"].as_bool() == Some(true) {
                " *"
            } else {
                ""
            };
            let installed = match (a["installed"].as_bool(), a["version"].as_str()) {
                (Some(true), Some(v)) => v.to_owned(),
                (Some(true), None) => "installed".to_owned(),
                _ => "not installed".to_owned(),
            };
            let cap = a["max_concurrent"]
                .as_u64()
                .map_or_else(|| "-".to_owned(), |n| n.to_string());
            let command = a["command"]
                .as_array()
                .map(|c| {
                    c.iter()
                        .filter_map(Value::as_str)
                        .collect::<Vec<_>>()
                        .join(" ")
                })
                .unwrap_or_default();
            [
                format!("{}{star}", text("name")),
                text("protocol"),
                installed,
                cap,
                command,
            ]
        })
        .collect();
    let heads = ["AGENT", "PROTOCOL", "INSTALLED", "AT ONCE", "COMMAND"];
    let widths: Vec<usize> = (0..4)
        .map(|i| {
            rows.iter()
                .map(|r| r[i].chars().count())
                .chain([heads[i].len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |cells: [&str; 5]| {
        let mut out = String::new();
        for (i, cell) in cells.iter().take(4).enumerate() {
            out.push_str(&format!("{cell:<w$}  ", w = widths[i]));
        }
        out.push_str(cells[4]);
        out.trim_end().to_owned() + "\n"
    };
    let mut out = line(heads);
    for r in &rows {
        out.push_str(&line([&r[0], &r[1], &r[2], &r[3], &r[4]]));
    }
    out.push_str("* the default agent\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn agents_read_as_a_table() {
        let body = json!({"agents": [
            {"name": "claude", "protocol": "claude-code", "command": ["claude"], "installed": true,
             "version": "2.1.332 (Claude Code)", "max_concurrent": null, "default": true},
            {"name": "gemini", "protocol": "acp", "command": ["gemini", "--acp"], "installed": false,
             "version": null, "max_concurrent": 2, "default": false},
        ]});
        let text = table(&body);
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with("AGENT"), "{text}");
        assert!(
            lines[1].starts_with("claude *") && lines[1].contains("2.1.332"),
            "{text}"
        );
        assert!(
            lines[2].contains("not installed") && lines[2].ends_with("gemini --acp"),
            "{text}"
        );
        assert!(lines[2].contains(" 2 "), "{text}");
        assert_eq!(table(&json!({"agents": []})), "No agents are configured.\n");
    }
}
