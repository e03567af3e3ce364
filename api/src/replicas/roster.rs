//! [`Roster`]: the replicas requests can go to now, and the fallback primary. The list is
//! swapped whole on reload; routing and the health monitor read it through [`Roster::current`].

use std::sync::{Arc, RwLock};

use super::replica::Replica;

pub struct Roster {
    /// Swapped whole on reload; a request holds its own `Arc` of the list it started with, so
    /// a replica removed by a reload finishes its in-flight queries before its pool is dropped.
    replicas: RwLock<Arc<Vec<Arc<Replica>>>>,
    fallback: Option<Arc<Replica>>,
}

impl Roster {
    pub fn new(replicas: Vec<Arc<Replica>>, fallback: Option<Arc<Replica>>) -> Self {
        Roster {
            replicas: RwLock::new(Arc::new(replicas)),
            fallback,
        }
    }

    /// The current list.
    pub fn current(&self) -> Arc<Vec<Arc<Replica>>> {
        self.replicas.read().expect("replica list lock").clone()
    }

    pub fn replace(&self, replicas: Vec<Arc<Replica>>) {
        *self.replicas.write().expect("replica list lock") = Arc::new(replicas);
    }

    pub fn fallback(&self) -> Option<&Arc<Replica>> {
        self.fallback.as_ref()
    }
}
