//! The object store: every object as JSON keyed by (type, namespace, name), the global
//! resourceVersion that every write bumps, and the bounded history of watch events
//! (with the floor below which a watch gets `410 Expired`) broadcast to open watches.

use serde_json::{Value, json};
use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use tokio::sync::broadcast;

/// Where an object lives: its type's index in [`crate::resources::TYPES`], its
/// namespace (`""` for cluster-scoped objects) and its name.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct Key {
    pub rt: usize,
    pub ns: String,
    pub name: String,
}

impl Key {
    pub(crate) fn new(rt: usize, ns: &str, name: &str) -> Self {
        Self {
            rt,
            ns: ns.to_owned(),
            name: name.to_owned(),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum EventType {
    Added,
    Modified,
    Deleted,
}

impl EventType {
    pub(crate) const fn wire(self) -> &'static str {
        match self {
            Self::Added => "ADDED",
            Self::Modified => "MODIFIED",
            Self::Deleted => "DELETED",
        }
    }
}

/// One change, as the history keeps it and watches receive it.
#[derive(Debug)]
pub(crate) struct Event {
    pub rv: u64,
    pub key: Key,
    pub kind: EventType,
    pub object: Value,
    /// The object before a modification, to tell a watch with a selector whether the
    /// object entered or left it.
    pub prev: Option<Value>,
}

/// Objects, the resourceVersion counter and the event history.
#[derive(Debug)]
pub(crate) struct Store {
    objects: BTreeMap<Key, Value>,
    rv: u64,
    history: VecDeque<Arc<Event>>,
    /// A watch from a resourceVersion below this gets `410 Expired`.
    floor: u64,
    window: usize,
    tx: broadcast::Sender<Arc<Event>>,
}

/// How many events an open watch may fall behind before it is ended.
const WATCH_BUFFER: usize = 16 * 1024;

impl Store {
    pub(crate) fn new(window: usize) -> Self {
        let (tx, _) = broadcast::channel(WATCH_BUFFER);
        Self {
            objects: BTreeMap::new(),
            rv: 1,
            history: VecDeque::new(),
            floor: 0,
            window: window.max(1),
            tx,
        }
    }

    pub(crate) const fn rv(&self) -> u64 {
        self.rv
    }

    pub(crate) const fn floor(&self) -> u64 {
        self.floor
    }

    pub(crate) fn history_len(&self) -> usize {
        self.history.len()
    }

    pub(crate) fn subscribe(&self) -> broadcast::Receiver<Arc<Event>> {
        self.tx.subscribe()
    }

    /// Events after `rv`, oldest first; `None` when some of them were dropped already.
    pub(crate) fn since(&self, rv: u64) -> Option<Vec<Arc<Event>>> {
        if rv < self.floor {
            return None;
        }
        Some(self.history.iter().filter(|e| e.rv > rv).cloned().collect())
    }

    /// Forgets every event so far: a watch from any earlier resourceVersion gets 410.
    pub(crate) fn compact(&mut self) {
        self.history.clear();
        self.floor = self.rv;
    }

    pub(crate) fn get(&self, key: &Key) -> Option<&Value> {
        self.objects.get(key)
    }

    /// Objects of one type, in one namespace or all, in (namespace, name) order.
    pub(crate) fn list(&self, rt: usize, ns: Option<&str>) -> Vec<(&Key, &Value)> {
        let start = Key::new(rt, ns.unwrap_or(""), "");
        self.objects
            .range(start..)
            .take_while(|(k, _)| k.rt == rt && ns.is_none_or(|ns| k.ns == ns))
            .collect()
    }

    /// Every key in a namespace, across types.
    pub(crate) fn keys_in(&self, ns: &str) -> Vec<Key> {
        self.objects
            .keys()
            .filter(|k| k.ns == ns)
            .cloned()
            .collect()
    }

    fn bump(&mut self) -> u64 {
        self.rv += 1;
        self.rv
    }

    fn record(&mut self, event: Event) {
        let event = Arc::new(event);
        self.history.push_back(event.clone());
        while self.history.len() > self.window {
            if let Some(old) = self.history.pop_front() {
                self.floor = old.rv;
            }
        }
        // No open watch is not an error.
        let _ = self.tx.send(event);
    }

    fn stamp(obj: &mut Value, rv: u64) {
        obj["metadata"]["resourceVersion"] = json!(rv.to_string());
    }

    /// Stores a new object (the caller checked it is new) and emits ADDED.
    pub(crate) fn create(&mut self, key: Key, mut obj: Value) -> Value {
        let rv = self.bump();
        Self::stamp(&mut obj, rv);
        self.objects.insert(key.clone(), obj.clone());
        self.record(Event {
            rv,
            key,
            kind: EventType::Added,
            object: obj.clone(),
            prev: None,
        });
        obj
    }

    /// Replaces a stored object and emits MODIFIED; an unchanged object is not written
    /// (as the apiserver skips no-op updates) and keeps its resourceVersion.
    pub(crate) fn update(&mut self, key: Key, mut obj: Value) -> Value {
        let prev = self.objects.get(&key).cloned();
        if let Some(p) = &prev {
            Self::stamp(&mut obj, 0);
            let mut old = p.clone();
            Self::stamp(&mut old, 0);
            if old == obj {
                return p.clone();
            }
        }
        let rv = self.bump();
        Self::stamp(&mut obj, rv);
        self.objects.insert(key.clone(), obj.clone());
        self.record(Event {
            rv,
            key,
            kind: EventType::Modified,
            object: obj.clone(),
            prev,
        });
        obj
    }

    /// Removes an object and emits DELETED carrying it at the deletion's
    /// resourceVersion.
    pub(crate) fn delete(&mut self, key: &Key) -> Option<Value> {
        let mut obj = self.objects.remove(key)?;
        let rv = self.bump();
        Self::stamp(&mut obj, rv);
        self.record(Event {
            rv,
            key: key.clone(),
            kind: EventType::Deleted,
            object: obj.clone(),
            prev: None,
        });
        Some(obj)
    }
}
