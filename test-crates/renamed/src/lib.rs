//! A crate that depends on `filechannel` under another name (`fc`) and
//! derives `Message` with `#[message(crate = "fc")]`: the generated code
//! reaches the runtime only through `fc::__private`.

/// Version 1 of a renamed-crate message.
#[derive(fc::Message, serde::Serialize, serde::Deserialize, Debug, PartialEq)]
#[message(crate = "fc", name = "renamed.Event", version = 1)]
pub struct EventV1 {
    /// An id.
    pub id: u64,
}

/// Version 2, migrating from version 1.
#[derive(fc::Message, serde::Serialize, serde::Deserialize, Debug, PartialEq)]
#[message(crate = "fc", name = "renamed.Event", version = 2, previous = EventV1)]
pub struct Event {
    /// An id.
    pub id: u64,
    /// Added in version 2.
    pub source: String,
}

impl From<EventV1> for Event {
    fn from(v: EventV1) -> Self {
        Event {
            id: v.id,
            source: "v1".into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fc::codec::Postcard;

    #[test]
    fn derive_works_under_a_renamed_dependency() {
        let dir = tempfile::tempdir().unwrap();
        let ch = fc::FileChannel::open(dir.path()).unwrap();
        let mut rx = ch.typed_rx::<Event, Postcard>().unwrap();
        ch.typed_tx::<EventV1, Postcard>()
            .unwrap()
            .send(&EventV1 { id: 1 })
            .unwrap();
        assert_eq!(
            rx.recv().unwrap(),
            Event {
                id: 1,
                source: "v1".into()
            }
        );
        assert_eq!(<Event as fc::Message>::VERSION, 2);
    }
}
