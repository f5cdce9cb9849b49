//! The `onec` connector against the fake 1C publication: price and stock by SKU, what 1C receives
//! (Cyrillic percent-encoded, `$filter` and `Condition` syntax), every error class, config errors.

use std::collections::BTreeSet;
use std::time::Duration;

use connectors::onec::OneCError;
use connectors::{ConnectorError, ConnectorRequest, DocumentId, Outputs};
use fakes::onec::{self, Fault, OneC, keys};
use serde_json::{Value, json};

use crate::fake_api::refusing_address;
use crate::{
    assert_reason_contains, connector, fatal_error, fatal_with, own_error,
    rejected as config_error, retryable_error, with_setting, with_settings,
};

async fn start() -> OneC {
    OneC::start().await.expect("the fake 1C starts")
}

/// A fake 1C whose next requests get these faults, one each, in order.
async fn failing(faults: impl IntoIterator<Item = Fault>) -> OneC {
    let fake = start().await;
    fake.fail_next(faults);
    fake
}

/// docs/connectors.md's example: retail price (latest), stock summed over warehouses, name,
/// in-stock flag.
fn settings(fake: &OneC) -> Value {
    json!({
        "kind": "onec",
        "url": fake.base_url(),
        "username": onec::USER,
        "password": onec::PASSWORD,
        "timeout": "5s",
        "item": { "entity": "Catalog_Номенклатура", "filter": { "Артикул": "sku" } },
        "registers": {
            "price": {
                "entity": "InformationRegister_ЦеныНоменклатуры/SliceLast",
                "key": "Номенклатура_Key",
                "condition": format!("ВидЦены_Key eq guid'{}'", keys::RETAIL),
            },
            "stock": {
                "entity": "AccumulationRegister_ТоварыНаСкладах/Balance",
                "key": "Номенклатура_Key",
                "dimensions": "Номенклатура",
            },
        },
        "response": {
            "name": "/item/Description",
            "price": { "pointer": "/price/0/Цена", "default": 0 },
            "available": { "pointer": "/stock/0/ВНаличииBalance", "default": 0 },
        },
        "flags": { "in_stock": { "pointer": "/stock/0/ВНаличииBalance" } },
    })
}

fn sku(sku: &str) -> ConnectorRequest {
    ConnectorRequest::new(
        "job-1c",
        "item_price",
        DocumentId::new("crm", "CCrmDocumentDeal", "DEAL_7"),
    )
    .with_property("sku", sku)
}

/// Looks up an SKU that 1C has with docs/connectors.md's example on a fresh fake: the fake (to see
/// what it received) and the outputs.
async fn found(sku_value: &str) -> (OneC, Outputs) {
    let fake = start().await;
    let outputs = connector(&settings(&fake)).run(&sku(sku_value)).await.expect("found");
    (fake, outputs)
}

fn onec_error(error: &ConnectorError) -> &OneCError {
    own_error(error)
}

#[tokio::test]
async fn price_and_stock_of_an_item_by_sku() {
    let (_fake, outputs) = found("SKU-1").await;
    assert_eq!(
        Value::Object(outputs.values),
        json!({
            "available": 12.0,
            "in_stock": true,
            "name": "Стол письменный «Альфа»",
            "price": 12500.0,
        })
    );
    assert_eq!(
        outputs.log.as_deref(),
        Some(&*format!("1C: Стол письменный «Альфа» ({})", keys::DESK))
    );
}

#[tokio::test]
async fn what_1c_receives_is_percent_encoded_odata() {
    let (fake, _) = found("SKU-1").await;
    let received = fake.received();
    assert_eq!(received.len(), 3, "{received:#?}");
    for request in &received {
        assert_eq!(request.method, "GET");
        assert_eq!(request.user.as_deref(), Some(onec::USER));
        assert_eq!(request.param("$format"), Some("json"));
        assert!(request.raw_path.is_ascii() && request.raw_query.is_ascii(), "{request:?}");
        assert!(!request.raw_query.contains('+'), "spaces are %20: {}", request.raw_query);
    }

    let item = &received[0];
    assert_eq!(
        item.raw_path,
        "/trade/odata/standard.odata/Catalog_%D0%9D%D0%BE%D0%BC%D0%B5%D0%BD%D0%BA%D0%BB%D0%B0%D1%82%D1%83%D1%80%D0%B0"
    );
    assert_eq!(item.param("$filter"), Some("Артикул eq 'SKU-1' and DeletionMark eq false"));
    assert_eq!(item.param("$top"), Some("2"));
    assert!(item.raw_query.contains("$filter=%D0%90%D1%80%D1%82%D0%B8%D0%BA%D1%83%D0%BB%20eq%20"));

    let price = &received[1];
    assert_eq!(
        price.path,
        format!(
            "/trade/odata/standard.odata/InformationRegister_ЦеныНоменклатуры/SliceLast(\
             Condition='Номенклатура_Key eq guid''{}'' and (ВидЦены_Key eq guid''{}'')')",
            keys::DESK,
            keys::RETAIL
        )
    );
    assert_eq!(price.param("$filter"), None);

    let stock = &received[2];
    assert_eq!(
        stock.path,
        format!(
            "/trade/odata/standard.odata/AccumulationRegister_ТоварыНаСкладах/Balance(\
             Condition='Номенклатура_Key eq guid''{}''',Dimensions='Номенклатура')",
            keys::DESK
        )
    );
}

#[tokio::test]
async fn a_quote_in_the_sku_is_doubled_in_the_literal() {
    let (fake, outputs) = found("O'NEIL-7").await;
    assert_eq!(outputs.values["price"], 2450.5);
    assert_eq!(outputs.values["available"], 3.0);
    assert_eq!(
        fake.received()[0].param("$filter"),
        Some("Артикул eq 'O''NEIL-7' and DeletionMark eq false")
    );
}

#[tokio::test]
async fn no_stock_takes_the_default_and_the_flag_is_false() {
    let (_fake, outputs) = found("SKU-2").await;
    assert_eq!(outputs.values["price"], 8990.0);
    assert_eq!(outputs.values["available"], 0);
    assert_eq!(outputs.values["in_stock"], false);
}

#[tokio::test]
async fn a_plain_register_is_read_with_filter_orderby_top_and_select() {
    let fake = start().await;
    let plain_register = json!({
        "registers": {
            "price": {
                "entity": "InformationRegister_ЦеныНоменклатуры",
                "key": "Номенклатура_Key",
                "condition": format!("ВидЦены_Key eq guid'{}'", keys::RETAIL),
                "select": ["Period", "Цена"],
                "order_by": "Period desc",
                "top": 1,
            },
        },
        "response": { "price": "/price/0/Цена", "since": "/price/0/Period" },
        "flags": {},
    });
    let settings = with_settings(&settings(&fake), plain_register);
    let outputs = connector(&settings).run(&sku("SKU-1")).await.expect("found");
    assert_eq!(outputs.values["price"], 12500.0);
    assert_eq!(outputs.values["since"], "2024-06-01T00:00:00");
    let request = &fake.received()[1];
    assert_eq!(
        request.param("$filter").map(str::to_owned),
        Some(format!(
            "Номенклатура_Key eq guid'{}' and (ВидЦены_Key eq guid'{}')",
            keys::DESK,
            keys::RETAIL
        ))
    );
    assert_eq!(request.param("$orderby"), Some("Period desc"));
    assert_eq!(request.param("$top"), Some("1"));
    assert_eq!(request.param("$select"), Some("Period,Цена"));
}

#[tokio::test]
async fn an_unknown_sku_is_fatal_by_default() {
    let fake = start().await;
    let error = fatal_error(&connector(&settings(&fake)), &sku("SKU-404")).await;
    assert!(matches!(onec_error(&error), OneCError::NotFound { .. }));
    assert_eq!(
        error.reason(),
        "1C Catalog_Номенклатура: no item where Артикул eq 'SKU-404' and DeletionMark eq false"
    );
    assert_eq!(fake.received().len(), 1, "no register is read");
}

#[tokio::test]
async fn an_unknown_sku_gives_the_defaults_when_configured() {
    let fake = start().await;
    let mut settings = settings(&fake);
    settings["not_found"] = json!("empty");
    settings["response"]["name"] = json!({ "pointer": "/item/Description", "default": "" });
    let outputs = connector(&settings).run(&sku("SKU-404")).await.expect("defaults");
    assert_eq!(
        Value::Object(outputs.values),
        json!({ "available": 0, "in_stock": false, "name": "", "price": 0 })
    );
    assert_eq!(fake.received().len(), 1);
}

#[tokio::test]
async fn two_live_items_with_one_sku_are_fatal() {
    let fake = start().await;
    fake.add_item("SKU-2", "Кресло офисное «Бета» (дубль)");
    let error = fatal_error(&connector(&settings(&fake)), &sku("SKU-2")).await;
    assert_reason_contains(&error, "more than one item where Артикул eq 'SKU-2'");
}

#[tokio::test]
async fn refused_credentials_are_fatal_and_the_password_stays_out() {
    let fake = start().await;
    let password = json!("wrong-пароль");
    let error = fatal_with(&settings(&fake), "password", password, &sku("SKU-1")).await;
    assert!(matches!(onec_error(&error), OneCError::Unauthorized { .. }));
    assert_eq!(
        error.reason(),
        "1C Catalog_Номенклатура: 1C refused the credentials (401): Идентификация пользователя не выполнена"
    );
    assert!(!format!("{error:?}").contains("wrong-пароль"));
}

#[tokio::test]
async fn a_1c_error_answer_is_fatal_with_1cs_message() {
    let fake = start().await;
    let mut settings = settings(&fake);
    settings["registers"]["stock"]["entity"] = json!("AccumulationRegister_Остатки/Balance");
    let error = fatal_error(&connector(&settings), &sku("SKU-1")).await;
    let OneCError::OData { status, code, message } = onec_error(&error) else {
        panic!("{error:?}")
    };
    assert_eq!((status.as_u16(), code.as_str()), (400, "9"));
    assert!(message.contains("AccumulationRegister_Остатки"), "{message}");
    assert!(
        error
            .reason()
            .starts_with("1C AccumulationRegister_Остатки: 1C answered 400 Bad Request: ")
    );
}

#[tokio::test]
async fn a_1c_server_error_is_retryable_with_1cs_message() {
    let fake = failing([Fault::internal("Ошибка блокировки объекта")]).await;
    let error = retryable_error(&connector(&settings(&fake)), &sku("SKU-1")).await;
    assert_eq!(
        error.reason(),
        "1C Catalog_Номенклатура: 1C answered 500 Internal Server Error: Ошибка блокировки объекта (code -1)"
    );
}

#[tokio::test]
async fn an_internal_error_that_persists_is_fatal_after_the_configured_attempts() {
    // 1C's answer to a query naming a field the configuration lacks: 500, code -1, every time.
    let broken =
        "Ошибка при вызове метода контекста (Выполнить): Поле объекта не обнаружено (Цвет)";
    let fake = failing(std::iter::repeat_n(Fault::internal(broken), 3)).await;
    let three = connector(&with_setting(&settings(&fake), "internal_error_attempts", json!(3)));
    let mut request = sku("SKU-1");
    for attempt in 1..=2 {
        request.attempt = attempt;
        let error = retryable_error(&three, &request).await;
        assert!(
            error.reason().ends_with(&format!(
                "(code -1) (attempt {attempt} of 3 that may end in an internal error)"
            )),
            "{error}"
        );
    }
    request.attempt = 3;
    let error = fatal_error(&three, &request).await;
    assert!(
        error
            .reason()
            .ends_with("; 3 attempts ended in 1C's internal errors, so it is taken as permanent"),
        "{error}"
    );

    // A lock conflict passes: retried however many attempts there were.
    let fake = failing([Fault::internal("Конфликт блокировок при выполнении транзакции")]).await;
    request.attempt = 10;
    retryable_error(&connector(&settings(&fake)), &request).await;
}

#[tokio::test]
async fn an_unpublished_object_is_fatal_and_says_how_to_publish_it() {
    let fake = start().await;
    fake.set_published(Some(["Catalog_Номенклатура", "InformationRegister_ЦеныНоменклатуры"]));
    let error = fatal_error(&connector(&settings(&fake)), &sku("SKU-1")).await;
    let reason = error.reason();
    assert!(
        reason.starts_with("1C AccumulationRegister_ТоварыНаСкладах: 1C answered 400"),
        "{reason}"
    );
    assert!(reason.contains("published objects of 1C's standard OData interface"), "{reason}");
    assert!(reason.contains("Настройка стандартного интерфейса OData"), "{reason}");

    // Published, the same settings work.
    fake.set_published(None::<Vec<String>>);
    connector(&settings(&fake)).run(&sku("SKU-1")).await.expect("read once published");
}

#[tokio::test]
async fn an_unavailable_1c_is_retryable_and_the_next_attempt_succeeds() {
    let fake = start().await;
    let connector = connector(&settings(&fake));
    fake.fail_next_n(2, Fault::Unavailable);
    for _ in 0..2 {
        let error = retryable_error(&connector, &sku("SKU-1")).await;
        assert_reason_contains(
            &error,
            "answered 503 Service Unavailable: Сервер 1С:Предприятия не обнаружен",
        );
    }
    assert_eq!(connector.run(&sku("SKU-1")).await.expect("back").values["price"], 12500.0);
}

#[tokio::test]
async fn a_register_failing_midway_is_retryable() {
    // The item read succeeds; the price read hits the fault.
    let fake = failing([Fault::Slow(Duration::ZERO), Fault::Status(502)]).await;
    let error = retryable_error(&connector(&settings(&fake)), &sku("SKU-1")).await;
    assert!(
        error.reason().starts_with("1C InformationRegister_ЦеныНоменклатуры: answered 502"),
        "{error}"
    );
}

#[tokio::test]
async fn a_slow_1c_times_out_and_is_retryable() {
    let fake = failing([Fault::Slow(Duration::from_secs(30))]).await;
    let settings = with_setting(&settings(&fake), "timeout", json!("200ms"));
    let error = retryable_error(&connector(&settings), &sku("SKU-1")).await;
    assert_reason_contains(&error, "no answer within 200ms");
}

#[tokio::test]
async fn a_refused_connection_is_retryable() {
    let fake = start().await;
    let url = json!(format!("{}/trade", refusing_address()));
    let settings = with_setting(&settings(&fake), "url", url);
    let error = retryable_error(&connector(&settings), &sku("SKU-1")).await;
    assert_reason_contains(&error, "could not connect");
}

#[tokio::test]
async fn a_malformed_answer_is_fatal_and_says_what_is_wrong() {
    let fake = failing([Fault::Malformed]).await;
    let error = fatal_error(&connector(&settings(&fake)), &sku("SKU-1")).await;
    assert!(matches!(onec_error(&error), OneCError::InvalidJson { .. }));
    assert!(
        error.reason().starts_with("1C Catalog_Номенклатура: the answer is not JSON"),
        "{error}"
    );
}

#[tokio::test]
async fn a_missing_mapped_field_is_fatal_naming_it() {
    let fake = start().await;
    let mut settings = settings(&fake);
    settings["response"]["unit"] = json!("/item/Единица");
    let error = fatal_error(&connector(&settings), &sku("SKU-1")).await;
    assert_reason_contains(
        &error,
        "nothing at `/item/Единица` in the response for return value `unit`",
    );
}

#[tokio::test]
async fn a_call_without_the_sku_is_fatal_before_any_request() {
    let fake = start().await;
    let connector = connector(&settings(&fake));
    let mut call = sku("x");
    call.properties.clear();
    let error = fatal_error(&connector, &call).await;
    assert_eq!(error.reason(), "1C Catalog_Номенклатура: the call has no `sku` for Артикул");
    let error = connector.run(&sku("  ")).await.unwrap_err();
    assert!(error.reason().ends_with("property `sku` for Артикул is empty"), "{error}");
    assert!(fake.received().is_empty());
}

#[tokio::test]
async fn the_contract_names_the_inputs_and_outputs() {
    let fake = start().await;
    let contract = connector(&settings(&fake)).contract().expect("a contract");
    assert_eq!(contract.inputs, BTreeSet::from(["sku".to_owned()]));
    assert_eq!(
        contract.outputs,
        ["available", "in_stock", "name", "price"].map(str::to_owned).into_iter().collect()
    );
}

/// An edit of docs/connectors.md's example settings.
type Change = Box<dyn Fn(&mut Value)>;

#[tokio::test]
async fn config_errors_name_the_key() {
    let fake = start().await;
    let cases: Vec<(Change, &str)> = vec![
        (
            Box::new(|s| s["url"] = json!("ftp://1c/trade")),
            "connector.url: `ftp` is not http or https",
        ),
        (
            Box::new(|s| s["url"] = json!("1c.example.com/trade")),
            "connector.url: `1c.example.com/trade` has no scheme: write https://1c.example.com/trade",
        ),
        (
            Box::new(|s| s["url"] = json!("http://user:pw@1c/trade")),
            "connector.url: credentials belong in `username` and `password`, not in the URL",
        ),
        (Box::new(|s| s["username"] = json!("")), "connector.username: must not be empty"),
        (
            Box::new(|s| s["internal_error_attempts"] = json!(0)),
            "connector.internal_error_attempts: must be at least 1",
        ),
        (Box::new(|s| s["item"]["filter"] = json!({})), "connector.item.filter: give at least one"),
        (
            Box::new(|s| s["item"]["entity"] = json!("Catalog Номенклатура")),
            "connector.item.entity: not a 1C name",
        ),
        (
            Box::new(|s| {
                s["registers"]["stock"]["entity"] =
                    json!("AccumulationRegister_ТоварыНаСкладах/Остатки")
            }),
            "connector.registers.stock.entity: `Остатки` is not a virtual table",
        ),
        (
            Box::new(|s| {
                s["registers"]["price"]["entity"] = json!("InformationRegister_ЦеныНоменклатуры")
            }),
            "connector.registers.price.dimensions",
        ),
        (
            Box::new(|s| s["registers"]["item"] = s["registers"]["price"].clone()),
            "connector.registers.item:",
        ),
        (
            Box::new(|s| s["registers"]["stock"]["top"] = json!(0)),
            "connector.registers.stock.top: must be at least 1",
        ),
        (
            Box::new(|s| s["flags"]["in_stock"]["pointer"] = json!("stock")),
            "connector.flags.in_stock.pointer:",
        ),
        (
            Box::new(|s| s["flags"]["price"] = json!({ "pointer": "/x" })),
            "connector.flags.price: is in `response` too",
        ),
        (Box::new(|s| s["timeout"] = json!("0s")), "connector.timeout: must be longer than zero"),
        (
            Box::new(|s| s["not_found"] = json!("ignore")),
            "connector.not_found: unknown variant `ignore`",
        ),
        (
            Box::new(|s| s["item"]["filtre"] = json!({})),
            "connector.item.filtre: unknown field `filtre`",
        ),
        (Box::new(|s| s["response"]["price"] = json!("price")), "connector.response.price:"),
    ];
    for (change, expected) in cases {
        let mut settings = settings(&fake);
        if expected.ends_with(".dimensions") {
            settings["registers"]["price"]["dimensions"] = json!("Номенклатура");
        }
        change(&mut settings);
        let error = config_error(&settings);
        assert!(error.starts_with(expected), "expected `{expected}`, got `{error}`");
        assert!(!error.contains(onec::PASSWORD));
    }
}
