//! The optional TLS listener: a portal created with `tls` answers only HTTPS, with a
//! certificate from the authority whose PEM the emulator wrote out, and names itself
//! `https://…` everywhere (events, webhooks); plain portals stay HTTP.

use b24_emulator::PortalSpec;
use serde_json::json;

use crate::support::{INSTALL_PATH, World, get_json, post_json};

#[tokio::test]
async fn a_tls_portal_answers_https_with_a_certificate_from_the_written_authority() {
    let w = World::with_spec(PortalSpec { tls: true, unlimited: true, ..Default::default() }).await;
    let ca_file = w.portal.ca_file.clone().unwrap();
    assert!(std::fs::read_to_string(&ca_file).unwrap().starts_with("-----BEGIN CERTIFICATE-----"));
    assert_eq!(w.portal.client_endpoint, format!("https://{}/rest/", w.portal.domain));
    // The World's client trusts only the written authority.
    let (status, body) = w.call("server.time", json!({})).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = w.call("batch", json!({"cmd": {"t": "server.time", "s": "scope"}})).await;
    assert_eq!((status, &body["result"]["result"]["s"]), (200, &json!(["bizproc", "crm"])));
    let install = &w.echo.on(INSTALL_PATH)[0];
    assert_eq!(install.json()["auth"]["client_endpoint"], json!(w.portal.client_endpoint));
    let hook = w.emu.create_webhook(&w.portal.domain, 1, "bizproc").unwrap();
    assert!(hook.starts_with("https://"), "{hook}");
    let (status, _) = post_json(&w.http, &format!("{hook}server.time"), &json!({})).await;
    assert_eq!(status, 200);

    // A client that does not trust the authority is refused, and so is plain HTTP.
    let stranger = reqwest::Client::new();
    assert!(stranger.get(format!("{}server.time", w.portal.client_endpoint)).send().await.is_err());
    let plain = format!("http://{}/rest/server.time", w.portal.domain);
    assert!(stranger.get(plain).send().await.is_err());
}

#[tokio::test]
async fn portals_are_plain_http_unless_asked_and_the_control_api_returns_the_ca_file() {
    let w = World::new().await;
    assert_eq!(w.portal.ca_file, None);
    assert!(w.portal.client_endpoint.starts_with("http://"));
    let url = format!("{}/control/portals", w.emu.control_url());
    let (status, portal) = post_json(&w.http, &url, &json!({"tls": true, "unlimited": true})).await;
    assert_eq!(status, 200, "{portal}");
    let ca_file = portal["ca_file"].as_str().unwrap();
    assert!(std::path::Path::new(ca_file).is_file());
    // Every TLS portal of one emulator shares its authority.
    let (_, again) = get_json(&w.http, &url).await;
    assert_eq!(again[1]["ca_file"], json!(ca_file));
    let second = w.emu.create_portal(PortalSpec { tls: true, ..Default::default() }).await.unwrap();
    assert_eq!(second.ca_file.as_deref(), Some(ca_file));
}

#[tokio::test]
async fn the_portal_certificate_names_its_issuers_key_as_strict_openssl_requires() {
    let w = World::with_spec(PortalSpec { tls: true, unlimited: true, ..Default::default() }).await;
    let pem = std::fs::read(w.portal.ca_file.as_ref().unwrap()).unwrap();
    let client = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(&pem).unwrap()])
        .tls_info(true)
        .build()
        .unwrap();
    let resp = client.get(format!("{}server.time", w.portal.client_endpoint)).send().await.unwrap();
    let info = resp.extensions().get::<reqwest::tls::TlsInfo>().unwrap();
    let der = info.peer_certificate().unwrap();
    // OID 2.5.29.35, authorityKeyIdentifier: without it Python 3.13's default context
    // (VERIFY_X509_STRICT) refuses the certificate.
    let authority_key_identifier = [0x06, 0x03, 0x55, 0x1d, 0x23];
    assert!(der.windows(5).any(|w| w == authority_key_identifier));
}
