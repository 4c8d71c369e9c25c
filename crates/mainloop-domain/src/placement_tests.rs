use super::*;
use crate::Timestamp;
use proptest::prelude::*;
use serde_json::json;

fn agent(s: &str) -> AgentName {
    AgentName::parse(s).unwrap()
}

fn set(labels: &[&str]) -> BTreeSet<String> {
    labels.iter().map(|l| (*l).to_owned()).collect()
}

fn needs(a: &str, labels: &[&str]) -> Needs {
    Needs {
        agent: agent(a),
        labels: set(labels),
        on_runner: true,
    }
}

/// The one user of most tests.
fn uid() -> UserId {
    "01a24d99-0000-7000-8000-000000000007".parse().unwrap()
}

fn rid(n: u8) -> RunnerId {
    RunnerId::new_v7(Timestamp::from_millis(i64::from(n)))
}

fn tid(n: usize) -> TaskId {
    TaskId::new_v7(Timestamp::from_millis(i64::try_from(n).unwrap()))
}

fn runner(n: u8, name: &str, labels: &[&str], agents: &[&str], slots: usize) -> Runner {
    Runner {
        id: rid(n),
        owner: uid(),
        name: name.to_owned(),
        labels: set(labels),
        agents: agents.iter().map(|a| agent(a)).collect(),
        slots,
        busy: 0,
    }
}

fn local(agents: &[&str], slots: usize) -> Local {
    Local {
        agents: agents.iter().map(|a| agent(a)).collect(),
        slots,
        ..Local::default()
    }
}

fn wait(p: &Place) -> String {
    match p {
        Place::Wait(w) => w.to_string(),
        other => panic!("placed: {other:?}"),
    }
}

#[test]
fn the_warm_runner_first_then_this_machine_then_the_roomiest_runner() {
    let here = local(&["claude"], 1);
    let a = runner(1, "alpha", &[], &["claude"], 1);
    let b = runner(2, "bravo", &[], &["claude"], 3);
    let runners = [a.clone(), b.clone()];
    let n = needs("claude", &[]);
    assert_eq!(place(&n, Some(a.id), &here, &runners), Place::Runner(a.id));
    assert_eq!(place(&n, None, &here, &runners), Place::Local);
    // A warm runner without a free slot is passed over.
    let full_a = Runner {
        busy: 1,
        ..a.clone()
    };
    assert_eq!(
        place(&n, Some(a.id), &here, &[full_a, b.clone()]),
        Place::Local
    );
    let busy_here = Local { busy: 1, ..here };
    assert_eq!(place(&n, None, &busy_here, &runners), Place::Runner(b.id));
    // Equal room: the name decides, whatever order the runners come in.
    let c = runner(3, "able", &[], &["claude"], 3);
    assert_eq!(
        place(&n, None, &busy_here, &[b.clone(), c.clone()]),
        Place::Runner(c.id)
    );
    assert_eq!(
        place(&n, None, &busy_here, &[c.clone(), b]),
        Place::Runner(c.id)
    );
}

#[test]
fn required_labels_and_the_agent_decide_where_a_run_may_go() {
    let here = local(&["claude", "codex"], 4);
    let gpu = runner(1, "gpu-box", &["gpu", "big"], &["claude"], 2);
    let plain = runner(2, "plain", &[], &["claude", "codex"], 8);
    let runners = [gpu.clone(), plain];
    // No requirements: everything is eligible, and this machine needs no hop.
    assert_eq!(
        place(&needs("claude", &[]), None, &here, &runners),
        Place::Local
    );
    // A label only the gpu runner has.
    assert_eq!(
        place(&needs("claude", &["gpu"]), None, &here, &runners),
        Place::Runner(gpu.id)
    );
    // Labels the server itself carries keep the run here.
    let labelled = Local {
        labels: set(&["gpu"]),
        ..here.clone()
    };
    assert_eq!(
        place(&needs("claude", &["gpu"]), None, &labelled, &runners),
        Place::Local
    );
    // The agent must be offered too.
    assert_eq!(
        wait(&place(&needs("codex", &["gpu"]), None, &here, &runners)),
        "no connected runner offers the codex agent with labels gpu"
    );
    assert_eq!(
        wait(&place(&needs("claude", &["tpu"]), None, &here, &runners)),
        "waiting for a runner labelled tpu: none is connected"
    );
    assert_eq!(
        wait(&place(&needs("gemini", &[]), None, &here, &runners)),
        "no connected runner offers the gemini agent, and this machine does not have it"
    );
    // Every required label, not some.
    assert_eq!(
        wait(&place(
            &needs("claude", &["gpu", "tpu"]),
            None,
            &here,
            &[gpu]
        )),
        "waiting for a runner labelled gpu and tpu: none is connected"
    );
}

#[test]
fn each_sentence_names_what_is_missing() {
    let gpu = |n, name| Runner {
        busy: 1,
        ..runner(n, name, &["gpu"], &["claude"], 1)
    };
    let here = local(&["claude"], 1);
    let two = [
        Runner {
            slots: 2,
            busy: 2,
            ..gpu(1, "a")
        },
        gpu(2, "b"),
    ];
    assert_eq!(
        wait(&place(&needs("claude", &["gpu"]), None, &here, &two)),
        "waiting for a free slot: the 2 runners labelled gpu are busy (3 of 3 slots)"
    );
    assert_eq!(
        wait(&place(&needs("claude", &["gpu"]), None, &here, &two[1..])),
        "waiting for a free slot: the runner labelled gpu is busy (1 of 1 slot)"
    );
    let busy_here = Local {
        busy: 1,
        ..here.clone()
    };
    let plain = Runner {
        busy: 2,
        ..runner(3, "c", &[], &["claude"], 2)
    };
    assert_eq!(
        wait(&place(&needs("claude", &[]), None, &busy_here, &[plain])),
        "waiting for a free slot: this machine and the connected runner are busy (3 of 3 slots)"
    );
    assert_eq!(
        wait(&place(&needs("claude", &[]), None, &busy_here, &[])),
        "waiting for a free slot on this machine"
    );
    let capped = Local {
        slots: 4,
        busy: 2,
        busy_by_agent: BTreeMap::from([(agent("claude"), 2)]),
        caps: BTreeMap::from([(agent("claude"), 2)]),
        ..here.clone()
    };
    assert_eq!(
        wait(&place(&needs("claude", &[]), None, &capped, &[])),
        "waiting for a free claude slot on this machine (2 of 2 in use)"
    );
    let held = Local {
        held: [agent("claude")].into(),
        ..here
    };
    assert_eq!(
        wait(&place(&needs("claude", &[]), None, &held, &[])),
        "waiting for the claude agent's usage limit to reset on this machine"
    );
    assert_eq!(
        Waiting::NoLabelledRunner {
            labels: set(&["linux-x64", "gpu", "big"])
        }
        .to_string(),
        "waiting for a runner labelled big, gpu and linux-x64: none is connected"
    );
}

#[test]
fn caps_and_holds_bind_this_machine_only() {
    let held = Local {
        held: [agent("claude")].into(),
        ..local(&["claude"], 4)
    };
    let r = runner(1, "r", &[], &["claude"], 1);
    assert_eq!(
        place(&needs("claude", &[]), None, &held, std::slice::from_ref(&r)),
        Place::Runner(r.id)
    );
    let capped = Local {
        caps: BTreeMap::from([(agent("claude"), 0)]),
        ..local(&["claude"], 4)
    };
    assert_eq!(
        place(
            &needs("claude", &[]),
            None,
            &capped,
            std::slice::from_ref(&r)
        ),
        Place::Runner(r.id)
    );
}

#[test]
fn a_queue_takes_slots_in_order_and_later_tasks_pass_blocked_ones() {
    let here = Local {
        caps: BTreeMap::from([(agent("codex"), 1)]),
        ..local(&["claude", "codex"], 2)
    };
    let gpu = runner(1, "gpu", &["gpu"], &["claude"], 1);
    let q = |n, a, labels: &[&str]| Queued {
        task: tid(n),
        owner: uid(),
        needs: needs(a, labels),
        warm: None,
    };
    let queue = [
        q(0, "codex", &[]),
        q(1, "codex", &[]),
        q(2, "claude", &["gpu"]),
        q(3, "claude", &["gpu"]),
        q(4, "claude", &[]),
        q(5, "claude", &[]),
    ];
    let got: Vec<Place> = place_queue(&queue, &here, std::slice::from_ref(&gpu))
        .into_iter()
        .map(|(_, p)| p)
        .collect();
    assert_eq!(got[0], Place::Local);
    assert_eq!(
        wait(&got[1]),
        "waiting for a free codex slot on this machine (1 of 1 in use)"
    );
    assert_eq!(got[2], Place::Runner(gpu.id));
    assert_eq!(
        wait(&got[3]),
        "waiting for a free slot: the runner labelled gpu is busy (1 of 1 slot)"
    );
    assert_eq!(got[4], Place::Local);
    // The gpu runner could take it too, were it not full.
    assert_eq!(
        wait(&got[5]),
        "waiting for a free slot: this machine and the connected runner are busy (3 of 3 slots)"
    );
}

#[test]
fn a_task_goes_only_to_its_own_users_runners() {
    let other: UserId = "01a24d99-0000-7000-8000-000000000008".parse().unwrap();
    let theirs = Runner {
        owner: other,
        ..runner(1, "theirs", &["gpu"], &["claude"], 4)
    };
    let mine = runner(2, "mine", &["gpu"], &["claude"], 1);
    let q = |n| Queued {
        task: tid(n),
        owner: uid(),
        needs: needs("claude", &["gpu"]),
        warm: Some(theirs.id),
    };
    let got = place_queue(
        &[q(0), q(1)],
        &local(&["claude"], 1),
        &[theirs, mine.clone()],
    );
    assert_eq!(got[0].1, Place::Runner(mine.id));
    assert_eq!(
        wait(&got[1].1),
        "waiting for a free slot: the runner labelled gpu is busy (1 of 1 slot)"
    );
}

#[test]
fn a_run_no_runner_can_reach_stays_here() {
    let r = runner(1, "r", &[], &["claude"], 4);
    let here_only = Needs {
        on_runner: false,
        ..needs("claude", &[])
    };
    let busy_here = Local {
        busy: 1,
        ..local(&["claude"], 1)
    };
    assert_eq!(
        place(
            &here_only,
            Some(r.id),
            &local(&["claude"], 1),
            std::slice::from_ref(&r)
        ),
        Place::Local
    );
    assert_eq!(
        place(&here_only, None, &busy_here, std::slice::from_ref(&r)),
        Place::Wait(Waiting::LocalBusy)
    );
}

#[test]
fn labels_are_checked_and_a_projects_are_added_to_a_tasks() {
    assert_eq!(check_labels(&set(&["gpu", "linux-x64", "a.b_c"])), Ok(()));
    assert_eq!(
        check_labels(&set(&["gpu", "GPU"])),
        Err(LabelError::Bad("GPU".into()))
    );
    assert!(
        check_labels(&set(&["has space"]))
            .unwrap_err()
            .to_string()
            .contains("\"has space\"")
    );
    assert_eq!(
        check_labels(&set(&[""])),
        Err(LabelError::Bad(String::new()))
    );
    let nine: BTreeSet<String> = (0..9).map(|i| format!("l{i}")).collect();
    assert_eq!(check_labels(&nine), Err(LabelError::TooMany(9)));

    assert_eq!(project_labels(&json!({})), Ok(BTreeSet::new()));
    assert_eq!(
        project_labels(&json!({"runner_labels": null})),
        Ok(BTreeSet::new())
    );
    assert_eq!(
        project_labels(&json!({"runner_labels": ["gpu", "gpu"]})),
        Ok(set(&["gpu"]))
    );
    assert_eq!(
        project_labels(&json!({"runner_labels": "gpu"})),
        Err(LabelError::NotAList)
    );
    assert_eq!(
        project_labels(&json!({"runner_labels": [1]})),
        Err(LabelError::NotAList)
    );
    assert_eq!(
        project_labels(&json!({"runner_labels": ["Bad!"]})),
        Err(LabelError::Bad("Bad!".into()))
    );
    assert_eq!(
        requirement(&set(&["gpu"]), &set(&["big", "gpu"])),
        set(&["big", "gpu"])
    );
}

// Small pools, so that labels, agents and names collide often.
const AGENTS: [&str; 3] = ["claude", "codex", "gemini"];
const LABELS: [&str; 3] = ["gpu", "big", "arm"];
const NAMES: [&str; 3] = ["a", "b", "c"];

fn some<T: Clone + Ord + std::fmt::Debug>(pool: &[T]) -> impl Strategy<Value = BTreeSet<T>> {
    let pool = pool.to_vec();
    proptest::collection::vec(any::<bool>(), pool.len()).prop_map(move |picks| {
        pool.iter()
            .zip(picks)
            .filter(|(_, p)| *p)
            .map(|(x, _)| x.clone())
            .collect()
    })
}

fn agents_of(names: &BTreeSet<&str>) -> BTreeSet<AgentName> {
    names.iter().map(|a| agent(a)).collect()
}

fn labels_of(names: &BTreeSet<&str>) -> BTreeSet<String> {
    names.iter().map(|l| (*l).to_owned()).collect()
}

fn arb_local() -> impl Strategy<Value = Local> {
    (
        some(&AGENTS),
        some(&LABELS),
        0..4usize,
        0..4usize,
        proptest::collection::btree_map(0..3usize, 0..3usize, 0..3),
        some(&AGENTS),
        proptest::collection::btree_map(0..3usize, 0..3usize, 0..3),
    )
        .prop_map(|(agents, labels, slots, busy, caps, held, by_agent)| {
            let to_agents =
                |m: BTreeMap<usize, usize>| m.into_iter().map(|(a, n)| (agent(AGENTS[a]), n));
            Local {
                agents: agents_of(&agents),
                labels: labels_of(&labels),
                slots,
                busy,
                busy_by_agent: to_agents(by_agent).collect(),
                caps: to_agents(caps).collect(),
                held: agents_of(&held),
            }
        })
}

fn arb_runners() -> impl Strategy<Value = Vec<Runner>> {
    proptest::collection::vec(
        (
            0..3usize,
            some(&LABELS),
            some(&AGENTS),
            0..4usize,
            0..5usize,
        ),
        0..5,
    )
    .prop_map(|rs| {
        rs.into_iter()
            .enumerate()
            .map(|(i, (name, labels, agents, slots, busy))| Runner {
                id: rid(u8::try_from(i).unwrap()),
                owner: uid(),
                name: NAMES[name].to_owned(),
                labels: labels_of(&labels),
                agents: agents_of(&agents),
                slots,
                busy,
            })
            .collect()
    })
}

fn arb_queue() -> impl Strategy<Value = Vec<Queued>> {
    proptest::collection::vec(
        (0..3usize, some(&LABELS), proptest::option::of(0..6u8)),
        0..12,
    )
    .prop_map(|qs| {
        qs.into_iter()
            .enumerate()
            .map(|(i, (a, labels, warm))| Queued {
                task: tid(i),
                owner: uid(),
                needs: Needs {
                    agent: agent(AGENTS[a]),
                    labels: labels_of(&labels),
                    on_runner: true,
                },
                warm: warm.map(rid),
            })
            .collect()
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn no_site_gets_more_runs_than_it_has_room_for(
        here in arb_local(), runners in arb_runners(), queue in arb_queue()
    ) {
        let placed = place_queue(&queue, &here, &runners);
        prop_assert_eq!(placed.len(), queue.len());
        let mut local_runs = 0;
        let mut by_agent: BTreeMap<&AgentName, usize> = BTreeMap::new();
        let mut on: BTreeMap<RunnerId, usize> = BTreeMap::new();
        for ((task, place), q) in placed.iter().zip(&queue) {
            prop_assert_eq!(*task, q.task);
            match place {
                Place::Local => {
                    local_runs += 1;
                    *by_agent.entry(&q.needs.agent).or_default() += 1;
                    prop_assert!(!here.held.contains(&q.needs.agent));
                }
                Place::Runner(id) => *on.entry(*id).or_default() += 1,
                Place::Wait(w) => prop_assert!(!w.to_string().is_empty()),
            }
        }
        prop_assert!(local_runs <= here.slots.saturating_sub(here.busy));
        for (a, n) in by_agent {
            if let Some(cap) = here.caps.get(a) {
                let before = here.busy_by_agent.get(a).copied().unwrap_or(0);
                prop_assert!(n <= cap.saturating_sub(before));
            }
        }
        for (id, n) in on {
            let r = runners.iter().find(|r| r.id == id).unwrap();
            prop_assert!(n <= r.slots.saturating_sub(r.busy));
        }
    }

    #[test]
    fn a_run_goes_only_where_every_label_and_the_agent_are(
        here in arb_local(), runners in arb_runners(), queue in arb_queue()
    ) {
        for ((_, place), q) in place_queue(&queue, &here, &runners).iter().zip(&queue) {
            let (labels, agents) = match place {
                Place::Local => (&here.labels, &here.agents),
                Place::Runner(id) => {
                    let r = runners.iter().find(|r| r.id == *id).unwrap();
                    (&r.labels, &r.agents)
                }
                Place::Wait(_) => continue,
            };
            prop_assert!(q.needs.labels.is_subset(labels));
            prop_assert!(agents.contains(&q.needs.agent));
            if !q.needs.labels.is_empty() {
                prop_assert!(!labels.is_empty());
            }
        }
    }

    #[test]
    fn placing_is_deterministic_whatever_order_the_runners_come_in(
        here in arb_local(), runners in arb_runners(), queue in arb_queue()
    ) {
        let first = place_queue(&queue, &here, &runners);
        prop_assert_eq!(&first, &place_queue(&queue, &here, &runners));
        let reversed: Vec<Runner> = runners.iter().rev().cloned().collect();
        prop_assert_eq!(&first, &place_queue(&queue, &here, &reversed));
    }

    #[test]
    fn a_run_waits_only_when_no_eligible_site_has_room(
        here in arb_local(), runners in arb_runners(), q in arb_queue()
    ) {
        for item in &q {
            if let Place::Wait(_) = place(&item.needs, item.warm, &here, &runners) {
                let local_room = here.offers(&item.needs) && here.blocked(&item.needs.agent).is_none();
                prop_assert!(!local_room);
                prop_assert!(!runners.iter().any(|r| r.offers(&item.needs) && r.free() > 0));
            }
        }
    }
}
