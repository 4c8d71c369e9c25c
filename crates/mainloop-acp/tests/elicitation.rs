//! A scripted ACP agent asks through `elicitation/create` mid-prompt: the form arrives
//! as a Question with its options, the host's answers go back as content typed by the
//! schema, a refusal or an answer that does not fit declines, and a malformed or
//! URL-mode elicitation is recorded and declined while the session carries on.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::time::Duration;

use mainloop_acp::AcpAgent;
use mainloop_agent::{
    Agent, AgentEvent, AgentMode, AgentQuestion, AgentSession, ControlReply, LocalProcess, RunSpec,
    SessionRef,
};
use serde_json::json;

const EVENT_TIMEOUT: Duration = Duration::from_secs(30);

/// Three turns: an elicitation answered, two answered badly, two that cannot be asked.
/// Every reply the agent gets is logged to `replies.log` under a tag.
const AGENT: &str = r#"
id() { printf '%s' "$1" | sed -n 's/.*"id":"\([^"]*\)".*/\1/p'; }
ok() { printf '{"jsonrpc":"2.0","id":"%s","result":%s}\n' "$1" "$2"; }
ask() { printf '{"jsonrpc":"2.0","id":"%s","method":"elicitation/create","params":%s}\n' "$1" "$2"; read -r reply; echo "$1 $reply" >> replies.log; }
FORM='{"sessionId":"el-1","mode":"form","message":"Before I start","requestedSchema":{"type":"object","properties":{"db":{"type":"string","title":"Database","oneOf":[{"const":"pg","title":"PostgreSQL"},{"const":"lite","title":"SQLite"}]},"features":{"type":"array","title":"Features","items":{"type":"string","enum":["auth","search","billing"]}},"tests":{"type":"boolean","title":"Write tests?"},"workers":{"type":"integer","title":"Workers"}},"required":["db"]}}'
read -r line; echo "init $line" >> replies.log; ok "$(id "$line")" '{"protocolVersion":1,"agentCapabilities":{}}'
read -r line; ok "$(id "$line")" '{"sessionId":"el-1"}'
read -r line; prompt=$(id "$line")
ask accepted "$FORM"
ok "$prompt" '{"stopReason":"end_turn"}'
read -r line; prompt=$(id "$line")
ask denied "$FORM"
ask misfit "$FORM"
ok "$prompt" '{"stopReason":"end_turn"}'
read -r line; prompt=$(id "$line")
ask garbage '{"sessionId":"el-1","mode":"form","message":"x","requestedSchema":"garbage"}'
ask nested '{"sessionId":"el-1","mode":"form","message":"x","requestedSchema":{"properties":{"o":{"type":"object"}}}}'
ask url '{"sessionId":"el-1","mode":"url","message":"Log in","elicitationId":"e1","url":"https://example.com/login"}'
printf '{"jsonrpc":"2.0","method":"session/update","params":{"sessionId":"el-1","update":{"sessionUpdate":"agent_message_chunk","content":{"type":"text","text":"still here"}}}}\n'
ok "$prompt" '{"stopReason":"end_turn"}'
read -r line
exit 0
"#;

async fn next(s: &mut Box<dyn AgentSession>) -> Option<AgentEvent> {
    tokio::time::timeout(EVENT_TIMEOUT, s.next_event())
        .await
        .unwrap_or_else(|_| panic!("no event; stderr {:?}", s.stderr_tail()))
}

/// Runs one turn, answering each Question with `answer`; returns the turn's events.
async fn turn(
    s: &mut Box<dyn AgentSession>,
    prompt: &str,
    mut answer: impl FnMut(&[AgentQuestion], &serde_json::Value) -> ControlReply,
) -> Vec<AgentEvent> {
    s.send_user_message(prompt).await.unwrap();
    let mut events = Vec::new();
    loop {
        let event = next(s).await.expect("the session ended early");
        if let AgentEvent::Question {
            request_id,
            questions,
            input,
        } = &event
        {
            let reply = answer(questions, input);
            s.reply(request_id, reply).await.unwrap();
        }
        let finished = matches!(event, AgentEvent::Finished { .. });
        events.push(event);
        if finished {
            return events;
        }
    }
}

fn answers(input: &serde_json::Value, given: &[(&str, &str)]) -> ControlReply {
    let by_text: BTreeMap<String, String> = given
        .iter()
        .map(|(q, a)| ((*q).to_owned(), (*a).to_owned()))
        .collect();
    ControlReply::answers(input, &by_text)
}

#[tokio::test]
async fn elicitations_become_questions_and_answers_typed_content() {
    let worktree = tempfile::tempdir().unwrap();
    let agent = AcpAgent::new("eliciting", vec!["sh".into(), "-c".into(), AGENT.into()]);
    let spec = RunSpec {
        cwd: worktree.path().to_path_buf(),
        session: SessionRef::New("any".into()),
        mode: AgentMode::Implement,
        model: None,
        append_system_prompt: None,
        env: vec![(
            "PATH".into(),
            std::env::var("PATH").unwrap_or_else(|_| "/usr/bin:/bin".into()),
        )],
    };
    let mut s = agent.start(spec, &LocalProcess::new()).unwrap();
    assert!(matches!(
        next(&mut s).await,
        Some(AgentEvent::SessionStarted { .. })
    ));

    let mut asked = Vec::new();
    turn(&mut s, "plan", |questions, input| {
        asked = questions.to_vec();
        assert_eq!(input["message"], "Before I start");
        answers(
            input,
            &[
                ("Database", "SQLite"),
                ("Features", "auth, billing"),
                ("Write tests?", "Yes"),
                ("Workers", "3"),
            ],
        )
    })
    .await;
    let shown: Vec<(&str, Vec<&str>, bool)> = asked
        .iter()
        .map(|q| {
            let labels = q.options.iter().map(|o| o.label.as_str()).collect();
            (q.question.as_str(), labels, q.multi_select)
        })
        .collect();
    assert_eq!(
        shown,
        [
            ("Database", vec!["PostgreSQL", "SQLite"], false),
            ("Features", vec!["auth", "search", "billing"], true),
            ("Write tests?", vec!["Yes", "No"], false),
            ("Workers", vec![], false),
        ]
    );

    let mut replies = vec![
        ControlReply::Deny {
            message: "not now".into(),
            interrupt: false,
        },
        answers(&json!({}), &[("Database", "SQLite"), ("Workers", "four")]),
    ]
    .into_iter();
    turn(&mut s, "again", |_, _| replies.next().unwrap()).await;

    let events = turn(&mut s, "garbage", |q, _| panic!("asked {q:?}")).await;
    let malformed: Vec<&str> = events
        .iter()
        .filter_map(|e| match e {
            AgentEvent::Malformed { error, .. } => Some(error.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(malformed.len(), 3, "{events:#?}");
    assert!(malformed[0].contains("malformed request"), "{malformed:?}");
    assert!(malformed[1].contains("\"o\""), "{malformed:?}");
    assert!(malformed[2].contains("URL-mode"), "{malformed:?}");
    assert!(
        events.contains(&AgentEvent::Text {
            text: "still here".into()
        }),
        "{events:#?}"
    );

    s.close_input().await;
    while let Some(event) = next(&mut s).await {
        if let AgentEvent::Exited { code, .. } = event {
            assert_eq!(code, Some(0));
        }
    }
    let log = std::fs::read_to_string(worktree.path().join("replies.log")).unwrap();
    let reply = |tag: &str| {
        log.lines()
            .find_map(|l| l.strip_prefix(&format!("{tag} ")))
            .unwrap_or_else(|| panic!("no {tag} reply in {log}"))
            .to_owned()
    };
    assert!(
        reply("init").contains(r#""elicitation":{"form":{}}"#),
        "{log}"
    );
    assert_eq!(
        reply("accepted"),
        r#"{"jsonrpc":"2.0","id":"accepted","result":{"action":"accept","content":{"db":"lite","features":["auth","billing"],"tests":true,"workers":3}}}"#
    );
    for declined in ["denied", "misfit", "garbage", "nested", "url"] {
        assert_eq!(
            reply(declined),
            format!(r#"{{"jsonrpc":"2.0","id":"{declined}","result":{{"action":"decline"}}}}"#),
        );
    }
}
