//! API keys: stored only as hashes, looked up by the plain key.

use adaptive_control_plane::config::SecretString;
use adaptive_control_plane::store::{MetadataStore, NewUser, StoreError, USER_TYPE_HUMAN};
use sqlx::Row;

use super::setup;
use crate::harness::Backend;

conformance!(api_keys_are_stored_hashed,);

async fn api_keys_are_stored_hashed(backend: Backend) {
    let (_database, store) = setup(backend).await;
    let user = store
        .create_user(NewUser {
            email: "someone@example.com".into(),
            name: "Someone".into(),
            user_type: USER_TYPE_HUMAN.into(),
        })
        .await
        .expect("user");
    let key = store.create_api_key(&user.id, None).await.expect("key");
    assert!(key.expose().starts_with("ak_") && key.expose().len() == 67);
    let found = store
        .user_for_api_key(key.expose())
        .await
        .expect("lookup")
        .expect("valid key");
    assert_eq!(found.id, user.id);
    assert!(store
        .user_for_api_key("ak_wrong")
        .await
        .expect("lookup")
        .is_none());
    let rows = sqlx::query("SELECT key_hash FROM api_keys")
        .fetch_all(&any_pool(&store))
        .await
        .expect("rows");
    for row in rows {
        let hash: String = row.try_get("key_hash").expect("hash");
        assert_ne!(hash, key.expose());
        assert_eq!(hash.len(), 64);
    }
    let short = store
        .create_api_key(&user.id, Some(SecretString::new("short")))
        .await;
    assert!(matches!(short, Err(StoreError::Invalid(_))), "{short:?}");
    store.close().await;
}

/// Raw access for assertions on stored bytes.
fn any_pool(store: &MetadataStore) -> sqlx::AnyPool {
    store.raw_pool_for_tests()
}
