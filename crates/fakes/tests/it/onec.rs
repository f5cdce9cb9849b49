//! The fake 1C publication: OData answers in 1C's shapes, the query subset, basic auth, the HTTP
//! service, what it records, and each fault.

use std::time::{Duration, Instant};

use fakes::onec::{self, Fault, OneC, keys};
use reqwest::StatusCode;
use reqwest::header::{CONTENT_TYPE, WWW_AUTHENTICATE};
use serde_json::{Value, json};

use crate::support::{answer, client, percent_encode};

struct Answer {
    status: StatusCode,
    content_type: String,
    www_authenticate: Option<String>,
    body: String,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }

    fn rows(&self) -> Vec<Value> {
        assert_eq!(self.status, StatusCode::OK, "{}", self.body);
        match self.json()["value"].clone() {
            Value::Array(rows) => rows,
            other => panic!("no value array: {other}"),
        }
    }

    /// 1C's error body: (code, message).
    fn odata_error(&self) -> (String, String) {
        let body = self.json();
        let error = &body["odata.error"];
        assert_eq!(error["message"]["lang"], "ru", "{body}");
        (
            error["code"].as_str().unwrap_or_default().to_owned(),
            error["message"]["value"].as_str().unwrap_or_default().to_owned(),
        )
    }
}

async fn start() -> OneC {
    OneC::start().await.expect("the fake starts")
}

/// Percent-encodes as a careful client does: UTF-8, spaces as `%20`.
fn encode(text: &str) -> String {
    percent_encode(text, b"-_.~$(),='")
}

/// `GET {odata}/{resource}?{query}` with the right credentials; `query` pairs are encoded here.
async fn odata(fake: &OneC, resource: &str, query: &[(&str, &str)]) -> Answer {
    let query: Vec<String> =
        query.iter().map(|(name, value)| format!("{name}={}", encode(value))).collect();
    let url = format!("{}/{}?{}", fake.odata_url(), encode(resource), query.join("&"));
    get(&url, Some((onec::USER, onec::PASSWORD))).await
}

/// The items `filter` (a `$filter`) selects, as JSON.
async fn items_where(fake: &OneC, filter: &str) -> Answer {
    odata(fake, onec::ITEMS, &[("$format", "json"), ("$filter", filter)]).await
}

/// The one item `filter` selects; fails unless there is exactly one.
async fn the_item_where(fake: &OneC, filter: &str) -> Value {
    let rows = items_where(fake, filter).await.rows();
    assert_eq!(rows.len(), 1, "{filter}: {rows:?}");
    rows.into_iter().next().expect("one row")
}

async fn get(url: &str, credentials: Option<(&str, &str)>) -> Answer {
    let mut request = client().get(url);
    if let Some((user, password)) = credentials {
        request = request.basic_auth(user, Some(password));
    }
    let response = answer(request).await;
    let header =
        |name| response.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let content_type = header(CONTENT_TYPE).unwrap_or_default();
    let www_authenticate = header(WWW_AUTHENTICATE);
    Answer {
        status: response.status(),
        content_type,
        www_authenticate,
        body: response.text().await.expect("a body"),
    }
}

#[tokio::test]
async fn an_item_is_found_by_sku_in_1c_shape() {
    let fake = start().await;
    let answer = items_where(&fake, "Артикул eq 'SKU-2' and DeletionMark eq false").await;
    assert!(answer.content_type.starts_with("application/json"), "{}", answer.content_type);
    let body = answer.json();
    assert!(
        body["odata.metadata"].as_str().unwrap().ends_with("/$metadata#Catalog_Номенклатура"),
        "{body}"
    );
    let rows = answer.rows();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["Ref_Key"], keys::CHAIR);
    assert_eq!(rows[0]["Description"], "Кресло офисное «Бета»");
    assert_eq!(rows[0]["Артикул"], "SKU-2");
    assert_eq!(rows[0]["DeletionMark"], false);
    assert_eq!(rows[0]["ЕдиницаИзмерения_Key"], keys::PIECE);
}

#[tokio::test]
async fn deleted_duplicates_are_there_until_filtered_out() {
    let fake = start().await;
    let all = items_where(&fake, "Артикул eq 'SKU-1'").await.rows();
    assert_eq!(all.len(), 2);
    let live = the_item_where(&fake, "Артикул eq 'SKU-1' and DeletionMark eq false").await;
    assert_eq!(live["Ref_Key"], keys::DESK);
}

#[tokio::test]
async fn a_doubled_quote_in_a_literal_is_a_quote() {
    let fake = start().await;
    let lamp = the_item_where(&fake, "Артикул eq 'O''NEIL-7'").await;
    assert_eq!(lamp["Ref_Key"], keys::LAMP);
}

#[tokio::test]
async fn select_and_top_shape_the_rows() {
    let fake = start().await;
    let rows = odata(
        &fake,
        onec::ITEMS,
        &[("$format", "json"), ("$select", "Ref_Key,Description"), ("$top", "2")],
    )
    .await
    .rows();
    assert_eq!(rows.len(), 2);
    for row in rows {
        let keys: Vec<&String> = row.as_object().unwrap().keys().collect();
        assert_eq!(keys, ["Ref_Key", "Description"]);
    }
}

#[tokio::test]
async fn a_register_is_filtered_by_guid_and_ordered() {
    let fake = start().await;
    let filter = format!(
        "Номенклатура_Key eq guid'{}' and ВидЦены_Key eq guid'{}'",
        keys::DESK,
        keys::RETAIL
    );
    let rows = odata(
        &fake,
        onec::PRICES,
        &[("$format", "json"), ("$filter", &filter), ("$orderby", "Period desc"), ("$top", "1")],
    )
    .await
    .rows();
    assert_eq!(
        rows,
        [json!({
            "Period": "2024-06-01T00:00:00",
            "ВидЦены_Key": keys::RETAIL,
            "Номенклатура_Key": keys::DESK,
            "Цена": 12500.0,
        })]
    );
}

#[tokio::test]
async fn slice_last_keeps_the_latest_price_per_dimension() {
    let fake = start().await;
    let condition = format!("Номенклатура_Key eq guid''{}''", keys::DESK);
    let resource = format!("{}/SliceLast(Condition='{condition}')", onec::PRICES);
    let rows = odata(&fake, &resource, &[("$format", "json")]).await.rows();
    let mut prices: Vec<f64> = rows.iter().map(|r| r["Цена"].as_f64().unwrap()).collect();
    prices.sort_by(f64::total_cmp);
    assert_eq!(prices, [11000.0, 12500.0]);

    let before = format!(
        "{}_RecordType/SliceLast(Period=datetime'2024-03-01T00:00:00',Condition='{condition}')",
        onec::PRICES
    );
    let rows = odata(&fake, &before, &[("$format", "json")]).await.rows();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["Цена"], 11900.0);
}

#[tokio::test]
async fn balance_sums_movements_by_the_asked_dimensions() {
    let fake = start().await;
    let condition = format!("Номенклатура_Key eq guid''{}''", keys::DESK);
    let by_item =
        format!("{}/Balance(Condition='{condition}',Dimensions='Номенклатура')", onec::STOCK);
    let rows = odata(&fake, &by_item, &[("$format", "json")]).await.rows();
    assert_eq!(rows, [json!({ "Номенклатура_Key": keys::DESK, "ВНаличииBalance": 12.0 })]);

    let by_warehouse = format!("{}/Balance(Condition='{condition}')", onec::STOCK);
    let rows = odata(&fake, &by_warehouse, &[("$format", "json")]).await.rows();
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert!(
        rows.iter().any(|r| r["Склад_Key"] == keys::MAIN_WAREHOUSE && r["ВНаличииBalance"] == 7.0)
    );

    // Received 4, shipped 4: the group has no balance and is left out.
    let condition = format!("Номенклатура_Key eq guid''{}''", keys::CHAIR);
    let none = format!("{}/Balance(Condition='{condition}')", onec::STOCK);
    assert!(odata(&fake, &none, &[("$format", "json")]).await.rows().is_empty());
}

#[tokio::test]
async fn data_added_by_a_test_is_served() {
    let fake = start().await;
    let key = fake.add_item("НОВ-1", "Диван «Дельта»");
    fake.set_price(&key, keys::RETAIL, "2024-07-01T00:00:00", 45000.0);
    fake.move_stock(&key, keys::MAIN_WAREHOUSE, "2024-07-02T00:00:00", 2.0);
    let rows = items_where(&fake, "Артикул eq 'НОВ-1'").await.rows();
    assert_eq!(rows[0]["Ref_Key"], key.as_str());
    let condition = format!("Номенклатура_Key eq guid''{key}''");
    let stock =
        format!("{}/Balance(Condition='{condition}',Dimensions='Номенклатура')", onec::STOCK);
    assert_eq!(
        odata(&fake, &stock, &[("$format", "json")]).await.rows()[0]["ВНаличииBalance"],
        2.0
    );
}

#[tokio::test]
async fn bad_queries_get_1cs_error_body() {
    let fake = start().await;
    let unknown_set = odata(&fake, "Catalog_Товары", &[("$format", "json")]).await;
    assert_eq!(unknown_set.status, StatusCode::BAD_REQUEST);
    let (code, message) = unknown_set.odata_error();
    assert_eq!(code, "9");
    assert!(message.contains("Catalog_Товары"), "{message}");

    let unknown_field = items_where(&fake, "Цвет eq 'красный'").await;
    assert_eq!(unknown_field.status, StatusCode::BAD_REQUEST);
    assert!(unknown_field.odata_error().1.contains("Цвет"));

    let or = items_where(&fake, "Артикул eq 'SKU-1' or Артикул eq 'SKU-2'").await;
    assert_eq!(or.status, StatusCode::BAD_REQUEST);

    let unknown_method = odata(&fake, &format!("{}/Turnover()", onec::STOCK), &[]).await;
    assert_eq!(unknown_method.odata_error().0, "6");
}

#[tokio::test]
async fn a_plus_in_the_query_is_not_a_space() {
    let fake = start().await;
    let url =
        format!("{}/{}?$format=json&$filter=Code+eq+'x'", fake.odata_url(), encode(onec::ITEMS));
    let answer = get(&url, Some((onec::USER, onec::PASSWORD))).await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{}", answer.body);
    assert_eq!(fake.received()[0].param("$filter"), Some("Code+eq+'x'"));
}

#[tokio::test]
async fn without_format_json_the_answer_is_atom() {
    let fake = start().await;
    let answer = odata(&fake, onec::ITEMS, &[]).await;
    assert_eq!(answer.status, StatusCode::OK);
    assert!(answer.content_type.starts_with("application/atom+xml"), "{}", answer.content_type);
}

#[tokio::test]
async fn wrong_or_missing_credentials_get_401_with_1cs_body() {
    let fake = start().await;
    let url = format!("{}/{}?$format=json", fake.odata_url(), encode(onec::ITEMS));
    for credentials in [None, Some((onec::USER, "wrong")), Some(("Гость", onec::PASSWORD))] {
        let answer = get(&url, credentials).await;
        assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
        assert!(answer.www_authenticate.as_deref().is_some_and(|v| v.starts_with("Basic")));
        assert_eq!(answer.odata_error().1, "Идентификация пользователя не выполнена");
    }
    fake.set_credentials("robot", "pa:ss");
    assert_eq!(get(&url, Some(("robot", "pa:ss"))).await.status, StatusCode::OK);
}

#[tokio::test]
async fn what_was_received_is_kept_raw_and_decoded() {
    let fake = start().await;
    items_where(&fake, "Артикул eq 'SKU-1'").await;
    let received = fake.received();
    assert_eq!(received.len(), 1);
    let request = &received[0];
    assert_eq!(request.method, "GET");
    assert_eq!(
        request.raw_path,
        "/trade/odata/standard.odata/Catalog_%D0%9D%D0%BE%D0%BC%D0%B5%D0%BD%D0%BA%D0%BB%D0%B0%D1%82%D1%83%D1%80%D0%B0"
    );
    assert_eq!(request.path, "/trade/odata/standard.odata/Catalog_Номенклатура");
    assert_eq!(request.param("$filter"), Some("Артикул eq 'SKU-1'"));
    assert!(request.raw_query.contains("%D0%90%D1%80%D1%82%D0%B8%D0%BA%D1%83%D0%BB%20eq%20"));
    assert_eq!(request.user.as_deref(), Some(onec::USER));
    fake.clear_received();
    assert!(fake.received().is_empty());
}

#[tokio::test]
async fn the_http_service_answers_price_and_stock() {
    let fake = start().await;
    let url = format!("{}/hs/trade/stock/SKU-1", fake.base_url());
    let answer = get(&url, Some((onec::USER, onec::PASSWORD))).await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(
        answer.json(),
        json!({ "sku": "SKU-1", "name": "Стол письменный «Альфа»", "price": 12500.0, "available": 12.0 })
    );
    let missing = get(
        &format!("{}/hs/trade/stock/NOPE", fake.base_url()),
        Some((onec::USER, onec::PASSWORD)),
    )
    .await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn queued_faults_hit_the_next_requests_in_order() {
    let fake = start().await;
    fake.fail_next([
        Fault::Unavailable,
        Fault::Malformed,
        Fault::internal("Ошибка СУБД: нарушение блокировки"),
        Fault::Status(502),
    ]);
    let unavailable = odata(&fake, onec::ITEMS, &[("$format", "json")]).await;
    assert_eq!(unavailable.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(unavailable.content_type.starts_with("text/plain"));

    let malformed = odata(&fake, onec::ITEMS, &[("$format", "json")]).await;
    assert_eq!(malformed.status, StatusCode::OK);
    assert!(serde_json::from_str::<Value>(&malformed.body).is_err());

    let internal = odata(&fake, onec::ITEMS, &[("$format", "json")]).await;
    assert_eq!(internal.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(
        internal.odata_error(),
        ("-1".to_owned(), "Ошибка СУБД: нарушение блокировки".to_owned())
    );

    assert_eq!(
        odata(&fake, onec::ITEMS, &[("$format", "json")]).await.status,
        StatusCode::BAD_GATEWAY
    );
    assert_eq!(odata(&fake, onec::ITEMS, &[("$format", "json")]).await.status, StatusCode::OK);
}

#[tokio::test]
async fn the_next_n_requests_fail_then_it_recovers() {
    let fake = start().await;
    fake.fail_next_n(2, Fault::Unavailable);
    for _ in 0..2 {
        let answer = odata(&fake, onec::ITEMS, &[("$format", "json")]).await;
        assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE);
    }
    assert_eq!(odata(&fake, onec::ITEMS, &[("$format", "json")]).await.status, StatusCode::OK);
}

#[tokio::test]
async fn unavailable_holds_until_cleared() {
    let fake = start().await;
    fake.set_unavailable(true);
    for _ in 0..3 {
        let answer = odata(&fake, onec::ITEMS, &[("$format", "json")]).await;
        assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE);
    }
    fake.set_unavailable(false);
    assert_eq!(odata(&fake, onec::ITEMS, &[("$format", "json")]).await.status, StatusCode::OK);
}

#[tokio::test]
async fn slow_answers_come_late_but_whole() {
    let fake = start().await;
    fake.fail_next([Fault::Slow(Duration::from_millis(300))]);
    let started = Instant::now();
    let rows = odata(&fake, onec::ITEMS, &[("$format", "json")]).await.rows();
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert!(!rows.is_empty());

    fake.set_latency(Duration::from_millis(200));
    let started = Instant::now();
    odata(&fake, onec::ITEMS, &[("$format", "json")]).await;
    assert!(started.elapsed() >= Duration::from_millis(200));
}
