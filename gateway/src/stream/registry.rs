//! This replica's open delivery streams, one per organization.

use std::collections::HashMap;
use std::sync::Mutex;

use haven_trust::ids::OrgId;
use tokio::sync::watch;
use uuid::Uuid;

/// The open streams of this replica, one per organization. A stream that takes over a lapsed lease
/// fences this replica's older stream of the organization at once; a stream on another replica finds
/// out when it next renews or acknowledges.
#[derive(Default)]
pub struct Streams {
    open: Mutex<HashMap<OrgId, (Uuid, watch::Sender<bool>)>>,
}

impl Streams {
    /// Registers a new stream for `org`, fencing the one it replaces on this replica.
    pub(super) fn open(&self, org: &OrgId, id: Uuid) -> watch::Receiver<bool> {
        let (tx, rx) = watch::channel(false);
        if let Ok(mut open) = self.open.lock()
            && let Some((_, old)) = open.insert(org.clone(), (id, tx))
        {
            let _ = old.send(true);
        }
        rx
    }

    /// Forgets a stream, if it is still the current one.
    pub(super) fn close(&self, org: &OrgId, id: Uuid) {
        if let Ok(mut open) = self.open.lock()
            && open.get(org).is_some_and(|(cur, _)| *cur == id)
        {
            open.remove(org);
        }
    }

    /// How many streams are open.
    pub fn len(&self) -> usize {
        self.open.lock().map(|o| o.len()).unwrap_or(0)
    }

    /// Whether no stream is open.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
