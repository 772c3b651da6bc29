//! The key names of the original design document, in one place.
//!
//! The document writes keys as `{ID}:BOX_SET`. Read literally that is a Redis Cluster
//! hash tag: everything between the first `{` and `}` decides the slot, so all keys of
//! one daemon land on one node and multi-key operations (the reliable queue's atomic
//! move from `FILES_SENDING_QUEUE` to `FILES_IN_FLIGHT`) stay legal on a cluster. The
//! braces are therefore part of the real key names, and an operator with `redis-cli`
//! sees exactly the names the document uses.

/// Builds the key names of one daemon, from its id (`entrance-…`, `box-…`,
/// `publisher-…`).
///
/// Owning the `{ID}` string once avoids re-formatting the hash tag, and keeps the
/// spelling of every key name in this file rather than scattered over the daemons.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keys {
    /// `{ID}`, braces included.
    tag: String,
}

impl Keys {
    /// Key names for the daemon whose id is `daemon_id`.
    pub fn new(daemon_id: &str) -> Self {
        Self {
            tag: format!("{{{daemon_id}}}"),
        }
    }

    /// The hash-tag prefix `{ID}:`, for `scan_prefix` over one daemon's keys.
    pub fn prefix(&self) -> String {
        format!("{}:", self.tag)
    }

    fn key(&self, name: &str) -> String {
        format!("{}:{name}", self.tag)
    }

    // --- entrance ---

    /// Entrance: its own description, `{ID}:OWN_INFO`.
    pub fn own_info(&self) -> String {
        self.key("OWN_INFO")
    }

    /// Entrance: the registered boxes, `{ID}:BOX_SET`.
    pub fn box_set(&self) -> String {
        self.key("BOX_SET")
    }

    /// Entrance: what one box reported, `{ID}:EXCHANGE:<box_id>`.
    pub fn exchange(&self, box_id: &str) -> String {
        self.key(&format!("EXCHANGE:{box_id}"))
    }

    /// Entrance: its own view of one box (state with time and reason, observed
    /// address, location, key), `{ID}:BOX_INFO:<box_id>`. Not in the original
    /// document, which kept no state beyond the last exchange.
    pub fn box_info(&self, box_id: &str) -> String {
        self.key(&format!("BOX_INFO:{box_id}"))
    }

    /// Entrance: evicted boxes by the end of their ban, `{ID}:BANNED`.
    pub fn banned(&self) -> String {
        self.key("BANNED")
    }

    /// Entrance: the known entrances, `{ID}:ENTRANCE_URLS`.
    pub fn entrance_urls(&self) -> String {
        self.key("ENTRANCE_URLS")
    }

    /// Entrance: unredeemed invitations by the SHA-256 of their code (the code
    /// itself is never stored), `{ID}:INVITATIONS`.
    pub fn invitations(&self) -> String {
        self.key("INVITATIONS")
    }

    /// Entrance: box owners (created, cap, revocation), `{ID}:OWNERS`.
    pub fn owners(&self) -> String {
        self.key("OWNERS")
    }

    /// Entrance: enrolled boxes and whom they belong to, `{ID}:ENROLLED`.
    pub fn enrolled(&self) -> String {
        self.key("ENROLLED")
    }

    /// Entrance: the boxes of one owner, `{ID}:OWNER_BOXES:<owner>`.
    pub fn owner_boxes(&self, owner: &str) -> String {
        self.key(&format!("OWNER_BOXES:{owner}"))
    }

    /// Entrance: redeemed invitations (digest → box), so a box's uplink test can
    /// present its code again, `{ID}:REDEEMED`.
    pub fn redeemed(&self) -> String {
        self.key("REDEEMED")
    }

    /// Entrance: boxes of revoked owners, refused for good, `{ID}:REVOKED_BOXES`.
    pub fn revoked_boxes(&self) -> String {
        self.key("REVOKED_BOXES")
    }

    // --- box ---

    /// Box: what it reports about itself, `{ID}:SELF_EXCHANGE`.
    pub fn self_exchange(&self) -> String {
        self.key("SELF_EXCHANGE")
    }

    /// Box: stored files by expiry time, `{ID}:EXPIRE_FILES`.
    pub fn expire_files(&self) -> String {
        self.key("EXPIRE_FILES")
    }

    /// Box: its subscription to one publisher, `{ID}:SUBSCRIBE:<publisher_id>`.
    pub fn subscribe(&self, publisher_id: &str) -> String {
        self.key(&format!("SUBSCRIBE:{publisher_id}"))
    }

    /// Box: one traffic log, `{ID}:TRAFFIC_FLOW:<log_id>`.
    pub fn traffic_flow(&self, log_id: &str) -> String {
        self.key(&format!("TRAFFIC_FLOW:{log_id}"))
    }

    // --- publisher ---

    /// Publisher: what it knows of one box, `{ID}:SEARCH:<box_id>`.
    pub fn search(&self, box_id: &str) -> String {
        self.key(&format!("SEARCH:{box_id}"))
    }

    /// Publisher: its own description, `{ID}:SELF_INFO`.
    pub fn self_info(&self) -> String {
        self.key("SELF_INFO")
    }

    /// Publisher: boxes by score, `{ID}:BOX_RANKING`.
    pub fn box_ranking(&self) -> String {
        self.key("BOX_RANKING")
    }

    /// Publisher: files waiting to be sent, `{ID}:FILE:FILES_SENDING_QUEUE`.
    pub fn files_sending_queue(&self) -> String {
        self.key("FILE:FILES_SENDING_QUEUE")
    }

    /// Publisher: files taken from the queue and not yet confirmed,
    /// `{ID}:FILE:FILES_IN_FLIGHT`. Not in the original document: it is the second
    /// list of the reliable-queue pattern, so a file survives a crash mid-send.
    pub fn files_in_flight(&self) -> String {
        self.key("FILE:FILES_IN_FLIGHT")
    }

    /// Publisher: the boxes a file was placed on, `{ID}:FILE:BOX_LIST`.
    pub fn box_list(&self) -> String {
        self.key("FILE:BOX_LIST")
    }

    /// Publisher: files done, `{ID}:FILE:PROCESSED_FILES`.
    pub fn processed_files(&self) -> String {
        self.key("FILE:PROCESSED_FILES")
    }
}

#[cfg(test)]
mod tests {
    use super::Keys;

    #[test]
    fn entrance_keys_are_the_documents_names_with_a_hash_tag() {
        let k = Keys::new("entrance-abc123");
        assert_eq!(k.own_info(), "{entrance-abc123}:OWN_INFO");
        assert_eq!(k.box_set(), "{entrance-abc123}:BOX_SET");
        assert_eq!(k.exchange("box-9"), "{entrance-abc123}:EXCHANGE:box-9");
        assert_eq!(k.entrance_urls(), "{entrance-abc123}:ENTRANCE_URLS");
        assert_eq!(k.prefix(), "{entrance-abc123}:");
    }

    #[test]
    fn box_keys_are_the_documents_names_with_a_hash_tag() {
        let k = Keys::new("box-1");
        assert_eq!(k.self_exchange(), "{box-1}:SELF_EXCHANGE");
        assert_eq!(k.expire_files(), "{box-1}:EXPIRE_FILES");
        assert_eq!(k.subscribe("publisher-7"), "{box-1}:SUBSCRIBE:publisher-7");
        assert_eq!(k.traffic_flow("log-3"), "{box-1}:TRAFFIC_FLOW:log-3");
    }

    #[test]
    fn publisher_keys_are_the_documents_names_with_a_hash_tag() {
        let k = Keys::new("publisher-p");
        assert_eq!(k.search("box-2"), "{publisher-p}:SEARCH:box-2");
        assert_eq!(k.self_info(), "{publisher-p}:SELF_INFO");
        assert_eq!(k.box_ranking(), "{publisher-p}:BOX_RANKING");
        assert_eq!(
            k.files_sending_queue(),
            "{publisher-p}:FILE:FILES_SENDING_QUEUE"
        );
        assert_eq!(k.files_in_flight(), "{publisher-p}:FILE:FILES_IN_FLIGHT");
        assert_eq!(k.box_list(), "{publisher-p}:FILE:BOX_LIST");
        assert_eq!(k.processed_files(), "{publisher-p}:FILE:PROCESSED_FILES");
    }
}
