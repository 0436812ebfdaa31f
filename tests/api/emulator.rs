//! The Genesys Cloud emulator, over real HTTP.

use rolesync::emulator::{self, EmulatorArgs};

#[tokio::test]
async fn serves_a_token() {
    let handle = emulator::spawn(EmulatorArgs::default()).await.unwrap();
    let client = reqwest::Client::new();
    let res = client
        .post(format!("{}/oauth/token", handle.base_url()))
        .basic_auth("rolesync-dev", Some("rolesync-dev-secret"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("grant_type=client_credentials")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    handle.shutdown().await;
}
