//! Namespace deletion as the namespace controller carries it out: the namespace turns
//! `Terminating` (with a `deletionTimestamp`) at once, and after the configured delay its
//! contents are removed (Jobs first, then everything else, each a DELETED event), then
//! the namespace itself.

use crate::Error;
use crate::meta;
use crate::resources::{JOBS, NAMESPACES, PODS, TYPES};
use crate::state::{Effect, State, Timer};
use crate::store::Key;
use serde_json::{Value, json};

/// Namespaces the apiserver refuses to delete.
const IMMORTAL: [&str; 3] = ["default", "kube-system", "kube-public"];

impl State {
    /// DELETE of a namespace: the namespace as it is now, `Terminating`.
    pub(crate) fn terminate_namespace(&mut self, name: &str) -> Result<Value, Error> {
        let t = &TYPES[NAMESPACES];
        if IMMORTAL.contains(&name) {
            return Err(Error::forbidden(
                t,
                name,
                "this namespace may not be deleted",
            ));
        }
        let key = Key::new(NAMESPACES, "", name);
        let mut ns = self
            .store
            .get(&key)
            .cloned()
            .ok_or_else(|| Error::not_found(t, name))?;
        if ns["status"]["phase"] == "Terminating" {
            return Err(Error::conflict(
                t,
                name,
                "The system is ensuring all content is removed from this namespace.  Upon completion, this namespace will automatically be purged by the system.",
            ));
        }
        ns["metadata"]["deletionTimestamp"] = json!(meta::now());
        ns["metadata"]["deletionGracePeriodSeconds"] = json!(0);
        ns["status"]["phase"] = json!("Terminating");
        let stored = self.store.update(key, ns);
        let uid = stored["metadata"]["uid"].as_str().unwrap_or("").to_owned();
        self.effects.push(Effect::After(
            self.termination_delay,
            Timer::PurgeNamespace {
                name: name.to_owned(),
                uid,
            },
        ));
        Ok(stored)
    }

    /// Removes everything in a terminating namespace, then the namespace.
    pub(crate) fn purge_namespace(&mut self, name: &str, uid: &str) {
        let key = Key::new(NAMESPACES, "", name);
        let same = self
            .store
            .get(&key)
            .is_some_and(|n| n["metadata"]["uid"] == uid);
        if !same {
            return;
        }
        let mut keys = self.store.keys_in(name);
        // Jobs go first so that no controller replaces the pods being removed.
        keys.sort_by_key(|k| match k.rt {
            JOBS => 0,
            PODS => 1,
            _ => 2,
        });
        for k in keys {
            if k.rt == JOBS {
                if let Some(job) = self.store.get(&k) {
                    let job_uid = job["metadata"]["uid"].as_str().unwrap_or("").to_owned();
                    self.jobs.remove(&job_uid);
                }
                self.store.delete(&k);
            } else {
                self.remove(&k);
            }
        }
        self.store.delete(&key);
    }
}
