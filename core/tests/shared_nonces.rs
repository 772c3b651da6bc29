//! Front ends of one role sharing a nonce secret and a Redis store: each
//! accepts the other's nonces, and a proof redeemed at one is a replay at the
//! other. Two processes are stood in for by two books with their own Redis
//! connections, against a real `redis-server`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use dandelion_core::auth::{AuthError, Channel, Claim};
use dandelion_core::identity::Identity;
use dandelion_core::ids::Role;
use dandelion_core::nonces::NonceBook;
use dandelion_core::store::{RedisStore, Store};
use dandelion_testkit::redis::RedisServer;

#[tokio::test]
async fn front_ends_sharing_a_secret_and_redis_refuse_each_others_replays() {
    let server = RedisServer::start();
    let secret = [42u8; 32];
    let book = |store: Arc<dyn Store>| {
        NonceBook::new(&secret)
            .unwrap()
            .shared_through(store, "publisher:USED_NONCES".into())
    };
    let a = book(Arc::new(
        RedisStore::connect(&server.url(), "net:").await.unwrap(),
    ));
    let b = book(Arc::new(
        RedisStore::connect(&server.url(), "net:").await.unwrap(),
    ));
    let verifier = Identity::from_seed(Role::Publisher, [1; 32]);
    let client = Identity::from_seed(Role::Box, [2; 32]);

    let nonce = a.issue(verifier.id()).unwrap();
    let proof = client.prove(&Claim::session_client(verifier.id(), &nonce));
    // Issued by one front end, redeemed at the other...
    let (id, _) = b
        .check(&proof, verifier.id(), Channel::Unbound)
        .await
        .unwrap();
    assert_eq!(&id, client.id());
    // ...and replayed at either, refused.
    for book in [&a, &b] {
        assert_eq!(
            book.check(&proof, verifier.id(), Channel::Unbound).await,
            Err(AuthError::ReplayedNonce)
        );
    }
}
