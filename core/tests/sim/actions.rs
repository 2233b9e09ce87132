//! What clients do: write at every level, rotate the token, pause and resume, add and remove
//! listings, add photos at a listing, continue a workflow as new, terminate a child.

use serde_json::{Value, json};

use crate::world::World;

impl World {
    pub(crate) fn random_node(&mut self) -> Option<String> {
        let ids: Vec<&String> = self.nodes.keys().collect();
        (!ids.is_empty()).then(|| ids[self.rng.below(ids.len())].clone())
    }

    pub(crate) fn root_listings(&self) -> Value {
        let l: Vec<Value> = self
            .listings
            .iter()
            .map(|l| json!({"id": l, "user": "u"}))
            .collect();
        json!({"data": {"id": "u", "listings": l}})
    }

    /// A client does something.
    pub(crate) fn act(&mut self) {
        let root = self.root.clone();
        match self.rng.below(100) {
            0..=34 => {
                // A write at any level.
                let Some(wid) = self.random_node() else {
                    return;
                };
                let node = &self.nodes[&wid];
                let (entity, id) = (node.core.entity().to_string(), node.core.id().to_string());
                let field = format!("f{}", self.rng.below(3));
                let value = self.rng.below(1000);
                let mut data = serde_json::Map::new();
                data.insert("id".into(), json!(id));
                data.insert(field, json!(value));
                self.client(&wid, "update", json!({"data": data, "entityName": entity}));
            }
            35..=49 => {
                let t = format!("t{}", self.next_token);
                self.next_token += 1;
                self.client(&root, "apiToken", json!(t));
            }
            50..=59 => {
                let name = if self.rng.chance(50) {
                    "pause"
                } else {
                    "resume"
                };
                self.client(&root, name, Value::Null);
            }
            60..=69 => {
                let l = self.fresh("l");
                self.listings.push(l);
                let p = self.root_listings();
                self.client(&root, "update", p);
            }
            70..=74 => {
                if self.listings.len() > 1 {
                    let i = self.rng.below(self.listings.len());
                    self.listings.remove(i);
                    let p = self.root_listings();
                    self.client(&root, "update", p);
                }
            }
            75..=86 => self.add_photo(),
            87..=93 => {
                if let Some(wid) = self.random_node() {
                    self.continue_as_new(&wid);
                }
            }
            _ => {
                if let Some(wid) = self.random_node()
                    && wid != root
                {
                    self.terminate(&wid);
                }
            }
        }
    }

    /// A listing's workflow adds a photo (a child adds an entity: it must not come back to it).
    pub(crate) fn add_photo(&mut self) {
        let listings: Vec<String> = self
            .nodes
            .keys()
            .filter(|w| w.starts_with("Listing-"))
            .cloned()
            .collect();
        if listings.is_empty() {
            return;
        }
        let wid = listings[self.rng.below(listings.len())].clone();
        let core = &self.nodes[&wid].core;
        let l = core.id().to_string();
        let mut photos: Vec<Value> = core
            .store()
            .get("Listing", &l)
            .and_then(|r| r.get("photos"))
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .map(|p| json!({"id": p, "listing": l}))
            .collect();
        photos.push(json!({"id": self.fresh("p"), "listing": l}));
        self.client(
            &wid,
            "update",
            json!({"data": {"id": l, "photos": photos}, "entityName": "Listing"}),
        );
    }
}
