//! A fake 1C:Enterprise publication: the standard OData interface (`/odata/standard.odata`) over
//! a small seeded trade database, a published HTTP service (`/hs/...`), basic auth, and faults.
//!
//! # What it serves
//!
//! Under `http://127.0.0.1:{port}/{base}` (the publication, [`BASE`] by default):
//!
//! - `GET odata/standard.odata/{EntitySet}?$format=json` with `$filter`, `$select`, `$top`,
//!   `$orderby`: `{"odata.metadata": "…/$metadata#EntitySet", "value": [ … ]}`. Entity sets:
//!   - `Catalog_Номенклатура` (items: `Ref_Key`, `DeletionMark`, `Code`, `Description`,
//!     `Артикул`, `ЕдиницаИзмерения_Key`, …), `Catalog_ВидыЦен`, `Catalog_Склады`;
//!   - `InformationRegister_ЦеныНоменклатуры` (periodic: `Period`, `ВидЦены_Key`,
//!     `Номенклатура_Key`, `Цена`) and its virtual tables `…/SliceLast(…)`, `…/SliceFirst(…)`
//!     (also as `InformationRegister_ЦеныНоменклатуры_RecordType/SliceLast(…)`), with
//!     `Period=datetime'…'` and `Condition='…'`;
//!   - `AccumulationRegister_ТоварыНаСкладах_RecordType` (movements: `Period`, `RecordType`
//!     `Receipt`/`Expense`, `Active`, `Номенклатура_Key`, `Склад_Key`, `ВНаличии`) and its
//!     virtual table `AccumulationRegister_ТоварыНаСкладах/Balance(…)` with `Period`, `Condition`
//!     and `Dimensions='Номенклатура,…'`: one row per dimension group, resources as
//!     `ВНаличииBalance`, groups whose balances are all zero left out (as 1C does).
//! - `GET hs/trade/stock/{sku}`: a published HTTP service answering
//!   `{"sku", "name", "price", "available"}` (404 `{"error": "…"}` for an unknown SKU).
//!
//! Paths and query values are percent-decoded strictly (RFC 3986: a `+` stays a `+`), so a client
//! that form-encodes spaces gets the syntax error it would risk with a real server. `$filter` and
//! `Condition` understand `Field op literal` joined by `and`, `op` one of `eq ne gt ge lt le`,
//! literals `'text'` (`''` is a quote), `guid'…'`, `datetime'…'`, numbers, `true`, `false`.
//! Without `$format=json` the answer is Atom XML, as 1C's default.
//!
//! Errors are 1C's `{"odata.error": {"code": "…", "message": {"lang": "ru", "value": "…"}}}`:
//! 401 for missing or wrong credentials (with `WWW-Authenticate: Basic`), 400 for an unknown
//! entity set, field or a bad query, 405 for a method other than GET. Which objects the
//! interface publishes is set with [`OneC::set_published`]; an unpublished one is answered as
//! an unknown one (400, code 9), as 1C does.
//!
//! # Faults
//!
//! [`OneC::fail_next`] queues [`Fault`]s for the next requests (503 unavailable, slow, malformed
//! JSON, an OData error, any status); [`OneC::set_unavailable`] and [`OneC::set_latency`] hold for
//! every request until changed. [`OneC::received`] tells what the fake was asked, raw and decoded.

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

use crate::faults::{Served, listen, lock, percent_decode};

/// The publication's name: the first path segment, as in `http://server/trade/odata/...`.
pub const BASE: &str = "trade";
/// The user the fake accepts by default.
pub const USER: &str = "Интеграция";
/// That user's password.
pub const PASSWORD: &str = "s3cret";

/// The catalog entity set of items.
pub const ITEMS: &str = "Catalog_Номенклатура";
/// The price register.
pub const PRICES: &str = "InformationRegister_ЦеныНоменклатуры";
/// The stock register (its name without `_RecordType` or `/Balance`).
pub const STOCK: &str = "AccumulationRegister_ТоварыНаСкладах";

/// `Ref_Key` of the seeded items, price types and warehouses.
pub mod keys {
    /// SKU-1, «Стол письменный «Альфа»»: retail 12 500 (was 11 900), wholesale 11 000; 7 at the
    /// main warehouse and 5 at the second (12 in all). A deleted duplicate with the same SKU exists.
    pub const DESK: &str = "6f1c0a2e-5b1d-11ee-8b3a-00155d0a1c01";
    /// The deleted (DeletionMark) duplicate of SKU-1.
    pub const DESK_OLD: &str = "6f1c0a2e-5b1d-11ee-8b3a-00155d0a1c09";
    /// SKU-2, «Кресло офисное «Бета»»: retail 8 990; received 4, shipped 4, so none in stock.
    pub const CHAIR: &str = "6f1c0a2e-5b1d-11ee-8b3a-00155d0a1c02";
    /// SKU-3, «Шкаф-купе «Гамма»»: no price, no stock.
    pub const WARDROBE: &str = "6f1c0a2e-5b1d-11ee-8b3a-00155d0a1c03";
    /// `O'NEIL-7`, «Лампа настольная O'Neil» (a quote in the SKU): retail 2 450.5, 3 in stock.
    pub const LAMP: &str = "6f1c0a2e-5b1d-11ee-8b3a-00155d0a1c04";
    /// Price type «Розничная».
    pub const RETAIL: &str = "b1d2e3f4-0a0b-11ee-9c1d-00155d0a1c10";
    /// Price type «Оптовая».
    pub const WHOLESALE: &str = "b1d2e3f4-0a0b-11ee-9c1d-00155d0a1c11";
    /// Warehouse «Основной склад».
    pub const MAIN_WAREHOUSE: &str = "c7e8f9a0-0a0b-11ee-9c1d-00155d0a1c20";
    /// Warehouse «Склад №2».
    pub const SECOND_WAREHOUSE: &str = "c7e8f9a0-0a0b-11ee-9c1d-00155d0a1c21";
    /// The unit «шт».
    pub const PIECE: &str = "d0e1f2a3-0a0b-11ee-9c1d-00155d0a1c30";
}

const EMPTY_REF: &str = "00000000-0000-0000-0000-000000000000";

/// What the next request gets instead of its normal answer.
#[derive(Debug, Clone, PartialEq)]
pub enum Fault {
    /// 503 with the web server's plain-text page: the 1C server cluster is not reachable.
    Unavailable,
    /// The normal answer, after this long.
    Slow(Duration),
    /// 200 `application/json` whose body is cut off mid-object.
    Malformed,
    /// 1C's `odata.error` body with this status, code and message.
    ODataError { status: u16, code: String, message: String },
    /// This status with an empty body.
    Status(u16),
}

impl Fault {
    /// 1C's answer when the query's own work fails: 500, code `-1`, this message.
    pub fn internal(message: impl Into<String>) -> Fault {
        Fault::ODataError { status: 500, code: "-1".to_owned(), message: message.into() }
    }
}

/// One request as the fake received it.
#[derive(Debug, Clone, PartialEq)]
pub struct Received {
    pub method: String,
    /// The path exactly as sent, still percent-encoded.
    pub raw_path: String,
    /// The query exactly as sent, still percent-encoded (empty when there was none).
    pub raw_query: String,
    /// The path, percent-decoded.
    pub path: String,
    /// The query's parameters, percent-decoded, in order.
    pub params: Vec<(String, String)>,
    /// The basic-auth user, if the request carried well-formed basic credentials.
    pub user: Option<String>,
}

impl Received {
    /// The first decoded value of a query parameter.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }
}

/// One entity set: its fields (for `$select` and `$filter` checks) and rows.
#[derive(Debug, Clone)]
struct Table {
    fields: Vec<String>,
    rows: Vec<Map<String, Value>>,
    /// Registers: the dimension fields (virtual tables group by them).
    dimensions: Vec<String>,
    /// Accumulation registers: the resource fields summed by `Balance`.
    resources: Vec<String>,
}

struct Data {
    user: String,
    password: String,
    tables: BTreeMap<String, Table>,
    /// The objects published in the standard OData interface's settings (`Catalog_X`,
    /// `InformationRegister_X`, `AccumulationRegister_X`); `None`: all of them.
    published: Option<std::collections::BTreeSet<String>>,
}

#[derive(Default)]
struct Faults {
    next: VecDeque<Fault>,
    unavailable: bool,
    latency: Duration,
}

struct Shared {
    base: String,
    data: Mutex<Data>,
    faults: Mutex<Faults>,
    received: Mutex<Vec<Received>>,
}

/// A running fake 1C publication (on 127.0.0.1 unless started elsewhere); stops when dropped.
#[derive(Debug)]
pub struct OneC {
    server: Served<Shared>,
}

impl OneC {
    /// Starts the fake with the seeded data, publication [`BASE`] and credentials
    /// [`USER`]/[`PASSWORD`], on a free port. Needs a Tokio runtime.
    pub async fn start() -> std::io::Result<OneC> {
        OneC::start_on("127.0.0.1:0".parse().map_err(std::io::Error::other)?).await
    }

    /// As [`start`](OneC::start), on this address.
    pub async fn start_on(address: SocketAddr) -> std::io::Result<OneC> {
        let (listener, address) = listen(address).await?;
        let shared = Arc::new(Shared {
            base: BASE.to_owned(),
            data: Mutex::new(Data {
                user: USER.to_owned(),
                password: PASSWORD.to_owned(),
                tables: seed(),
                published: None,
            }),
            faults: Mutex::new(Faults::default()),
            received: Mutex::new(Vec::new()),
        });
        let app = Router::new().fallback(handle).with_state(shared.clone());
        let server = Served::new(address, shared);
        server.spawn("1c", listener, app);
        tracing::debug!(%address, "fake 1C publication started");
        Ok(OneC { server })
    }

    pub fn address(&self) -> SocketAddr {
        self.server.addr
    }

    /// The publication's URL, e.g. `http://127.0.0.1:4321/trade` (what the `onec` connector's
    /// `url` takes).
    pub fn base_url(&self) -> String {
        format!("http://{}/{}", self.server.addr, self.server.state.base)
    }

    /// The OData service root: `{base_url}/odata/standard.odata`.
    pub fn odata_url(&self) -> String {
        format!("{}/odata/standard.odata", self.base_url())
    }

    /// Replaces the accepted credentials.
    pub fn set_credentials(&self, user: impl Into<String>, password: impl Into<String>) {
        let mut data = lock(&self.server.state.data);
        data.user = user.into();
        data.password = password.into();
    }

    /// Publishes only these objects in the standard OData interface, as its settings in 1C
    /// ("Настройка стандартного интерфейса OData") would: `Catalog_Номенклатура`,
    /// `InformationRegister_ЦеныНоменклатуры`, `AccumulationRegister_ТоварыНаСкладах`. An
    /// unpublished object is answered as 1C answers an unknown one (400, code 9). `None`
    /// publishes everything, the default.
    pub fn set_published<S: Into<String>>(&self, objects: Option<impl IntoIterator<Item = S>>) {
        lock(&self.server.state.data).published =
            objects.map(|objects| objects.into_iter().map(Into::into).collect());
    }

    /// Queues faults, one per coming request, before any already queued are used up.
    pub fn fail_next(&self, faults: impl IntoIterator<Item = Fault>) {
        lock(&self.server.state.faults).next.extend(faults);
    }

    /// The next `n` requests get `fault`.
    pub fn fail_next_n(&self, n: usize, fault: Fault) {
        self.fail_next(std::iter::repeat_n(fault, n));
    }

    /// While set, every request gets 503 (after the queued faults are used up).
    pub fn set_unavailable(&self, unavailable: bool) {
        lock(&self.server.state.faults).unavailable = unavailable;
    }

    /// Every answer waits this long first.
    pub fn set_latency(&self, latency: Duration) {
        lock(&self.server.state.faults).latency = latency;
    }

    /// Every request so far, in order.
    pub fn received(&self) -> Vec<Received> {
        lock(&self.server.state.received).clone()
    }

    /// Forgets the requests received so far.
    pub fn clear_received(&self) {
        lock(&self.server.state.received).clear();
    }

    /// Adds a catalog item with this SKU and name; returns its `Ref_Key`.
    pub fn add_item(&self, sku: &str, name: &str) -> String {
        let mut data = lock(&self.server.state.data);
        let number = data.tables.get(ITEMS).map_or(0, |t| t.rows.len()) + 1;
        let key = format!("9a8b7c6d-0000-11ee-8000-{number:012x}");
        if let Some(table) = data.tables.get_mut(ITEMS) {
            table.rows.push(item(&key, number, sku, name, false));
        }
        key
    }

    /// Records a price of this type for the item from `period` (`2024-01-01T00:00:00`).
    pub fn set_price(&self, item: &str, price_type: &str, period: &str, price: f64) {
        let mut data = lock(&self.server.state.data);
        if let Some(table) = data.tables.get_mut(PRICES) {
            table.rows.push(price_row(period, price_type, item, price));
        }
    }

    /// Records a stock movement: a receipt (positive) or an expense (negative) at a warehouse.
    pub fn move_stock(&self, item: &str, warehouse: &str, period: &str, quantity: f64) {
        let mut data = lock(&self.server.state.data);
        if let Some(table) = data.tables.get_mut(&format!("{STOCK}_RecordType")) {
            table.rows.push(movement(period, item, warehouse, quantity));
        }
    }
}

// ---- seed data ----

fn item(key: &str, number: usize, sku: &str, name: &str, deleted: bool) -> Map<String, Value> {
    let row = json!({
        "Ref_Key": key,
        "DataVersion": format!("AAAAAQAAAA{number}="),
        "DeletionMark": deleted,
        "Parent_Key": EMPTY_REF,
        "IsFolder": false,
        "Code": format!("00-{number:08}"),
        "Description": name,
        "Артикул": sku,
        "ЕдиницаИзмерения_Key": keys::PIECE,
        "Predefined": false,
        "PredefinedDataName": "",
    });
    object(row)
}

fn price_row(period: &str, price_type: &str, item: &str, price: f64) -> Map<String, Value> {
    object(json!({
        "Period": period,
        "ВидЦены_Key": price_type,
        "Номенклатура_Key": item,
        "Цена": price,
    }))
}

fn movement(period: &str, item: &str, warehouse: &str, quantity: f64) -> Map<String, Value> {
    object(json!({
        "Recorder": EMPTY_REF,
        "Recorder_Type": "StandardODATA.Document_ПоступлениеТоваров",
        "Period": period,
        "LineNumber": "1",
        "Active": true,
        "RecordType": if quantity < 0.0 { "Expense" } else { "Receipt" },
        "Номенклатура_Key": item,
        "Склад_Key": warehouse,
        "ВНаличии": quantity.abs(),
    }))
}

fn object(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        _ => Map::new(),
    }
}

fn table(rows: Vec<Map<String, Value>>, dimensions: &[&str], resources: &[&str]) -> Table {
    let fields = rows.first().map(|r| r.keys().cloned().collect()).unwrap_or_default();
    Table {
        fields,
        rows,
        dimensions: dimensions.iter().map(|s| (*s).to_owned()).collect(),
        resources: resources.iter().map(|s| (*s).to_owned()).collect(),
    }
}

fn seed() -> BTreeMap<String, Table> {
    use keys::*;
    let items = vec![
        item(DESK, 1, "SKU-1", "Стол письменный «Альфа»", false),
        item(CHAIR, 2, "SKU-2", "Кресло офисное «Бета»", false),
        item(WARDROBE, 3, "SKU-3", "Шкаф-купе «Гамма»", false),
        item(LAMP, 4, "O'NEIL-7", "Лампа настольная O'Neil", false),
        item(DESK_OLD, 9, "SKU-1", "Стол письменный «Альфа» (не использовать)", true),
    ];
    let reference = |key: &str, number: usize, name: &str| {
        object(json!({
            "Ref_Key": key, "DataVersion": format!("AAAAAgAAAA{number}="), "DeletionMark": false,
            "Code": format!("{number:09}"), "Description": name, "Predefined": false,
            "PredefinedDataName": "",
        }))
    };
    let prices = vec![
        price_row("2024-01-01T00:00:00", RETAIL, DESK, 11900.0),
        price_row("2024-06-01T00:00:00", RETAIL, DESK, 12500.0),
        price_row("2024-06-01T00:00:00", WHOLESALE, DESK, 11000.0),
        price_row("2024-02-15T00:00:00", RETAIL, CHAIR, 8990.0),
        price_row("2024-03-01T00:00:00", RETAIL, LAMP, 2450.5),
    ];
    let movements = vec![
        movement("2024-05-10T09:00:00", DESK, MAIN_WAREHOUSE, 10.0),
        movement("2024-05-20T14:30:00", DESK, MAIN_WAREHOUSE, -3.0),
        movement("2024-05-11T10:00:00", DESK, SECOND_WAREHOUSE, 5.0),
        movement("2024-04-01T08:00:00", CHAIR, MAIN_WAREHOUSE, 4.0),
        movement("2024-04-25T16:00:00", CHAIR, MAIN_WAREHOUSE, -4.0),
        movement("2024-03-05T12:00:00", LAMP, SECOND_WAREHOUSE, 3.0),
    ];
    BTreeMap::from([
        (ITEMS.to_owned(), table(items, &[], &[])),
        (
            "Catalog_ВидыЦен".to_owned(),
            table(
                vec![reference(RETAIL, 1, "Розничная"), reference(WHOLESALE, 2, "Оптовая")],
                &[],
                &[],
            ),
        ),
        (
            "Catalog_Склады".to_owned(),
            table(
                vec![
                    reference(MAIN_WAREHOUSE, 1, "Основной склад"),
                    reference(SECOND_WAREHOUSE, 2, "Склад №2"),
                ],
                &[],
                &[],
            ),
        ),
        (PRICES.to_owned(), table(prices, &["ВидЦены_Key", "Номенклатура_Key"], &["Цена"])),
        (
            format!("{STOCK}_RecordType"),
            table(movements, &["Номенклатура_Key", "Склад_Key"], &["ВНаличии"]),
        ),
    ])
}

// ---- the handler ----

/// An answer in 1C's error shape.
fn odata_error(status: StatusCode, code: &str, message: &str) -> Response {
    let body =
        json!({ "odata.error": { "code": code, "message": { "lang": "ru", "value": message } } });
    let mut response = (status, json_body(&body)).into_response();
    set_json(&mut response);
    response
}

fn json_body(value: &Value) -> String {
    serde_json::to_string_pretty(value).unwrap_or_default()
}

fn set_json(response: &mut Response) {
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json;odata=minimalmetadata;charset=utf-8"),
    );
}

async fn handle(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let raw_path = uri.path().to_owned();
    let raw_query = uri.query().unwrap_or_default().to_owned();
    let path = percent_decode(&raw_path);
    let params = parse_query(&raw_query);
    let user = basic_user(&headers);
    tracing::debug!(%method, path = path.as_deref().unwrap_or(&raw_path), "fake 1C request");
    lock(&shared.received).push(Received {
        method: method.to_string(),
        raw_path: raw_path.clone(),
        raw_query: raw_query.clone(),
        path: path.clone().unwrap_or_else(|| raw_path.clone()),
        params: params.clone().unwrap_or_default(),
        user: user.as_ref().map(|(u, _)| u.clone()),
    });

    let (fault, latency) = {
        let mut faults = lock(&shared.faults);
        let fault =
            faults.next.pop_front().or_else(|| faults.unavailable.then_some(Fault::Unavailable));
        (fault, faults.latency)
    };
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    match fault {
        None => {}
        Some(Fault::Slow(delay)) => tokio::time::sleep(delay).await,
        Some(Fault::Unavailable) => {
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
                "Сервер 1С:Предприятия не обнаружен\nне удалось подключиться к серверу 1С:Предприятия",
            )
                .into_response();
        }
        Some(Fault::Malformed) => {
            let mut response =
                (StatusCode::OK, r#"{"odata.metadata": "x", "value": [{"Ref_Key": "6f1c"#)
                    .into_response();
            set_json(&mut response);
            return response;
        }
        Some(Fault::ODataError { status, code, message }) => {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            return odata_error(status, &code, &message);
        }
        Some(Fault::Status(status)) => {
            return StatusCode::from_u16(status)
                .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
                .into_response();
        }
    }

    let (Some(path), Some(params)) = (path, params) else {
        return odata_error(
            StatusCode::BAD_REQUEST,
            "4",
            "Неправильный URI запроса: недопустимая последовательность символов",
        );
    };
    let Some(rest) = path.strip_prefix(&format!("/{}/", shared.base)) else {
        return (StatusCode::NOT_FOUND, "Публикация не найдена").into_response();
    };

    {
        let data = lock(&shared.data);
        let authorized = user.as_ref().is_some_and(|(u, p)| *u == data.user && *p == data.password);
        if !authorized {
            let mut response = odata_error(
                StatusCode::UNAUTHORIZED,
                "-1",
                "Идентификация пользователя не выполнена",
            );
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"1C:Enterprise\""),
            );
            return response;
        }
    }
    if method != Method::GET {
        return odata_error(
            StatusCode::METHOD_NOT_ALLOWED,
            "2",
            "Метод HTTP не поддерживается для этого ресурса",
        );
    }

    if let Some(resource) = rest.strip_prefix("odata/standard.odata/") {
        let data = lock(&shared.data);
        let url = format!("{}/odata/standard.odata", shared.base);
        // An entity set, its `_RecordType` records or a virtual table all belong to one object.
        let segment = resource.split('/').next().unwrap_or_default();
        let object = segment.strip_suffix("_RecordType").unwrap_or(segment);
        let published = data.published.as_ref().is_none_or(|objects| objects.contains(object));
        let answer = if published {
            odata(&data.tables, resource, &params)
        } else {
            Err(query_error("9", format!("Не найден сегмент ресурса '{segment}'")))
        };
        match answer {
            Ok((set, rows)) if format_is_json(&params) => {
                let body = json!({
                    "odata.metadata": format!("http://localhost/{url}/$metadata#{set}"),
                    "value": rows,
                });
                let mut response = (StatusCode::OK, json_body(&body)).into_response();
                set_json(&mut response);
                response
            }
            Ok((set, rows)) => (
                StatusCode::OK,
                [(header::CONTENT_TYPE, "application/atom+xml;type=feed;charset=utf-8")],
                atom(&set, rows.len()),
            )
                .into_response(),
            Err(QueryError { code, message }) => {
                odata_error(StatusCode::BAD_REQUEST, code, &message)
            }
        }
    } else if let Some(sku) = rest.strip_prefix("hs/trade/stock/") {
        let data = lock(&shared.data);
        http_service_stock(&data.tables, sku)
    } else {
        (StatusCode::NOT_FOUND, "Не найден ресурс").into_response()
    }
}

fn format_is_json(params: &[(String, String)]) -> bool {
    params.iter().any(|(n, v)| n == "$format" && (v == "json" || v.starts_with("application/json")))
}

fn atom(set: &str, count: usize) -> String {
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<feed xmlns=\"http://www.w3.org/2005/Atom\" \
         xmlns:d=\"http://schemas.microsoft.com/ado/2007/08/dataservices\">\n<title>{set}</title>\n\
         <!-- {count} entries; ask with $format=json for JSON -->\n</feed>\n"
    )
}

/// The published HTTP service `hs/trade/stock/{sku}`: retail price and total stock.
fn http_service_stock(tables: &BTreeMap<String, Table>, sku: &str) -> Response {
    let found = tables.get(ITEMS).and_then(|t| {
        t.rows.iter().find(|r| {
            r.get("Артикул").and_then(Value::as_str) == Some(sku)
                && r.get("DeletionMark") == Some(&Value::Bool(false))
        })
    });
    let Some(found) = found else {
        return (
            StatusCode::NOT_FOUND,
            [(header::CONTENT_TYPE, "application/json; charset=utf-8")],
            json_body(&json!({ "error": format!("Номенклатура с артикулом {sku} не найдена") })),
        )
            .into_response();
    };
    let key = found.get("Ref_Key").and_then(Value::as_str).unwrap_or_default();
    let price = tables
        .get(PRICES)
        .into_iter()
        .flat_map(|t| &t.rows)
        .filter(|r| {
            r.get("Номенклатура_Key").and_then(Value::as_str) == Some(key)
                && r.get("ВидЦены_Key").and_then(Value::as_str) == Some(keys::RETAIL)
        })
        .max_by(|a, b| period(a).cmp(period(b)))
        .and_then(|r| r.get("Цена").cloned())
        .unwrap_or(Value::Null);
    let available: f64 = tables
        .get(&format!("{STOCK}_RecordType"))
        .into_iter()
        .flat_map(|t| &t.rows)
        .filter(|r| r.get("Номенклатура_Key").and_then(Value::as_str) == Some(key))
        .map(|r| signed(r, "ВНаличии"))
        .sum();
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json; charset=utf-8")],
        json_body(&json!({
            "sku": sku,
            "name": found.get("Description"),
            "price": price,
            "available": available,
        })),
    )
        .into_response()
}

fn period(row: &Map<String, Value>) -> &str {
    row.get("Period").and_then(Value::as_str).unwrap_or_default()
}

/// A movement's resource with its sign: receipts add, expenses subtract.
fn signed(row: &Map<String, Value>, resource: &str) -> f64 {
    let quantity = row.get(resource).and_then(Value::as_f64).unwrap_or(0.0);
    if row.get("RecordType").and_then(Value::as_str) == Some("Expense") {
        -quantity
    } else {
        quantity
    }
}

// ---- OData queries ----

#[derive(Debug)]
struct QueryError {
    code: &'static str,
    message: String,
}

fn query_error(code: &'static str, message: impl Into<String>) -> QueryError {
    QueryError { code, message: message.into() }
}

/// Runs one OData read: the entity set or virtual table named by `resource`, then `$filter`,
/// `$orderby`, `$top` and `$select`. Returns the name for `odata.metadata` and the rows.
fn odata(
    tables: &BTreeMap<String, Table>,
    resource: &str,
    params: &[(String, String)],
) -> Result<(String, Vec<Value>), QueryError> {
    let (set, mut rows, fields) = match resource.split_once('/') {
        None => {
            let table = tables.get(resource).ok_or_else(|| {
                query_error("9", format!("Не найден сегмент ресурса '{resource}'"))
            })?;
            (resource.to_owned(), table.rows.clone(), table.fields.clone())
        }
        Some((register, call)) => virtual_table(tables, register, call)?,
    };

    let param = |name: &str| params.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str());
    if let Some(filter) = param("$filter") {
        let condition = parse_condition(filter, &fields)?;
        rows.retain(|row| condition.iter().all(|c| c.holds(row)));
    }
    if let Some(order) = param("$orderby") {
        let mut keys = Vec::new();
        for part in order.split(',') {
            let mut words = part.split_whitespace();
            let field = words.next().unwrap_or_default();
            check_field(field, &fields)?;
            let descending = match words.next() {
                None | Some("asc") => false,
                Some("desc") => true,
                Some(other) => {
                    return Err(query_error(
                        "14",
                        format!("Неверное направление сортировки '{other}'"),
                    ));
                }
            };
            keys.push((field.to_owned(), descending));
        }
        rows.sort_by(|a, b| {
            keys.iter()
                .map(|(field, descending)| {
                    let order = compare(a.get(field), b.get(field));
                    if *descending { order.reverse() } else { order }
                })
                .find(|o| o.is_ne())
                .unwrap_or(std::cmp::Ordering::Equal)
        });
    }
    if let Some(top) = param("$top") {
        let top: usize = top
            .parse()
            .map_err(|_| query_error("14", format!("Неверное значение параметра $top: '{top}'")))?;
        rows.truncate(top);
    }
    if let Some(select) = param("$select") {
        let chosen: Vec<&str> = select.split(',').map(str::trim).collect();
        for field in &chosen {
            check_field(field, &fields)?;
        }
        for row in &mut rows {
            row.retain(|key, _| chosen.contains(&key.as_str()));
        }
    }
    Ok((set, rows.into_iter().map(Value::Object).collect()))
}

type Rows = (String, Vec<Map<String, Value>>, Vec<String>);

/// `Register/SliceLast(…)`, `Register_RecordType/SliceLast(…)`, `Register/Balance(…)`.
fn virtual_table(
    tables: &BTreeMap<String, Table>,
    register: &str,
    call: &str,
) -> Result<Rows, QueryError> {
    let (function, arguments) = match call.split_once('(') {
        Some((function, rest)) => match rest.strip_suffix(')') {
            Some(arguments) => (function, arguments),
            None => return Err(query_error("14", format!("Не закрыта скобка в '{call}'"))),
        },
        None => (call, ""),
    };
    let arguments = parse_arguments(arguments)?;
    let argument = |name: &str| arguments.iter().find(|(n, _)| n == name).map(|(_, v)| v);
    let unknown_method = || query_error("6", format!("Метод не найден: {function}"));
    let name = register.strip_suffix("_RecordType").unwrap_or(register);
    let records_name = if name.starts_with("AccumulationRegister_") {
        format!("{name}_RecordType")
    } else {
        name.to_owned()
    };
    let table = tables
        .get(&records_name)
        .ok_or_else(|| query_error("9", format!("Не найден сегмент ресурса '{register}'")))?;
    let until = match argument("Period") {
        None => None,
        Some(Literal::DateTime(at)) => Some(at.clone()),
        Some(_) => return Err(query_error("14", "Параметр Period должен иметь тип datetime")),
    };
    let condition = match argument("Condition") {
        None => Vec::new(),
        Some(Literal::Text(text)) if text.is_empty() => Vec::new(),
        Some(Literal::Text(text)) => parse_condition(text, &table.fields)?,
        Some(_) => return Err(query_error("14", "Параметр Condition должен быть строкой")),
    };
    let records: Vec<&Map<String, Value>> = table
        .rows
        .iter()
        .filter(|r| until.as_deref().is_none_or(|until| period(r) <= until))
        .filter(|r| r.get("Active") != Some(&Value::Bool(false)))
        .filter(|r| condition.iter().all(|c| c.holds(r)))
        .collect();

    match function {
        "SliceLast" | "SliceFirst" if name.starts_with("InformationRegister_") => {
            let mut latest: BTreeMap<Vec<String>, &Map<String, Value>> = BTreeMap::new();
            for record in records {
                let group = group_key(record, &table.dimensions);
                let replace = latest.get(&group).is_none_or(|kept| {
                    if function == "SliceLast" {
                        period(record) > period(kept)
                    } else {
                        period(record) < period(kept)
                    }
                });
                if replace {
                    latest.insert(group, record);
                }
            }
            let rows = latest.into_values().cloned().collect();
            Ok((format!("{register}_{function}"), rows, table.fields.clone()))
        }
        "Balance" if name.starts_with("AccumulationRegister_") => {
            let dimensions = match argument("Dimensions") {
                None => table.dimensions.clone(),
                Some(Literal::Text(text)) if text.trim().is_empty() => table.dimensions.clone(),
                Some(Literal::Text(text)) => text
                    .split(',')
                    .map(|d| {
                        let d = d.trim();
                        let field = format!("{d}_Key");
                        if table.dimensions.contains(&field) {
                            Ok(field)
                        } else if table.dimensions.iter().any(|x| x == d) {
                            Ok(d.to_owned())
                        } else {
                            Err(query_error("14", format!("Не найдено измерение '{d}'")))
                        }
                    })
                    .collect::<Result<_, _>>()?,
                Some(_) => {
                    return Err(query_error("14", "Параметр Dimensions должен быть строкой"));
                }
            };
            let mut sums: BTreeMap<Vec<String>, Vec<f64>> = BTreeMap::new();
            for record in records {
                let sum = sums
                    .entry(group_key(record, &dimensions))
                    .or_insert_with(|| vec![0.0; table.resources.len()]);
                for (total, resource) in sum.iter_mut().zip(&table.resources) {
                    *total += signed(record, resource);
                }
            }
            let mut fields = dimensions.clone();
            fields.extend(table.resources.iter().map(|r| format!("{r}Balance")));
            let rows = sums
                .into_iter()
                .filter(|(_, totals)| totals.iter().any(|t| t.abs() > f64::EPSILON))
                .map(|(group, totals)| {
                    let mut row = Map::new();
                    for (dimension, value) in dimensions.iter().zip(group) {
                        row.insert(dimension.clone(), Value::String(value));
                    }
                    for (resource, total) in table.resources.iter().zip(totals) {
                        row.insert(format!("{resource}Balance"), json!(total));
                    }
                    row
                })
                .collect();
            Ok((format!("{name}_Balance"), rows, fields))
        }
        _ => Err(unknown_method()),
    }
}

fn group_key(row: &Map<String, Value>, fields: &[String]) -> Vec<String> {
    fields
        .iter()
        .map(|f| match row.get(f) {
            Some(Value::String(s)) => s.clone(),
            Some(other) => other.to_string(),
            None => String::new(),
        })
        .collect()
}

fn check_field(field: &str, fields: &[String]) -> Result<(), QueryError> {
    if fields.iter().any(|f| f == field) {
        Ok(())
    } else {
        Err(query_error("14", format!("Не найдено свойство '{field}'")))
    }
}

/// `Name=literal, …` inside a virtual table's parentheses.
fn parse_arguments(text: &str) -> Result<Vec<(String, Literal)>, QueryError> {
    let mut arguments = Vec::new();
    let mut lexer = Lexer::new(text);
    while !lexer.at_end() {
        let name = lexer.word()?;
        lexer.expect('=')?;
        let value = lexer.literal()?;
        arguments.push((name, value));
        lexer.skip_spaces();
        if !lexer.at_end() {
            lexer.expect(',')?;
        }
    }
    Ok(arguments)
}

#[derive(Debug, Clone, PartialEq)]
enum Literal {
    Text(String),
    Guid(String),
    DateTime(String),
    Number(f64),
    Bool(bool),
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Operator {
    Eq,
    Ne,
    Gt,
    Ge,
    Lt,
    Le,
}

#[derive(Debug)]
struct Comparison {
    field: String,
    operator: Operator,
    value: Literal,
}

impl Comparison {
    fn holds(&self, row: &Map<String, Value>) -> bool {
        use std::cmp::Ordering;
        let found = row.get(&self.field);
        let order = match (&self.value, found) {
            (Literal::Text(want) | Literal::DateTime(want), Some(Value::String(have))) => {
                Some(have.as_str().cmp(want.as_str()))
            }
            (Literal::Guid(want), Some(Value::String(have))) => {
                Some(have.to_ascii_lowercase().cmp(&want.to_ascii_lowercase()))
            }
            (Literal::Number(want), Some(Value::Number(have))) => {
                have.as_f64().and_then(|have| have.partial_cmp(want))
            }
            (Literal::Bool(want), Some(Value::Bool(have))) => Some(have.cmp(want)),
            _ => None,
        };
        match (self.operator, order) {
            (Operator::Ne, None) => true,
            (_, None) => false,
            (Operator::Eq, Some(o)) => o == Ordering::Equal,
            (Operator::Ne, Some(o)) => o != Ordering::Equal,
            (Operator::Gt, Some(o)) => o == Ordering::Greater,
            (Operator::Ge, Some(o)) => o != Ordering::Less,
            (Operator::Lt, Some(o)) => o == Ordering::Less,
            (Operator::Le, Some(o)) => o != Ordering::Greater,
        }
    }
}

fn compare(a: Option<&Value>, b: Option<&Value>) -> std::cmp::Ordering {
    match (a, b) {
        (Some(Value::Number(a)), Some(Value::Number(b))) => a
            .as_f64()
            .zip(b.as_f64())
            .and_then(|(a, b)| a.partial_cmp(&b))
            .unwrap_or(std::cmp::Ordering::Equal),
        (Some(Value::String(a)), Some(Value::String(b))) => a.cmp(b),
        (Some(Value::Bool(a)), Some(Value::Bool(b))) => a.cmp(b),
        _ => std::cmp::Ordering::Equal,
    }
}

/// `Field op literal [and Field op literal …]`, with parenthesised groups (of `and` too).
fn parse_condition(text: &str, fields: &[String]) -> Result<Vec<Comparison>, QueryError> {
    let mut lexer = Lexer::new(text);
    let comparisons = parse_conjunction(&mut lexer, fields)?;
    if lexer.at_end() { Ok(comparisons) } else { Err(lexer.syntax()) }
}

/// Comparisons joined by `and`, up to the end or a closing parenthesis (left for the caller).
fn parse_conjunction(
    lexer: &mut Lexer<'_>,
    fields: &[String],
) -> Result<Vec<Comparison>, QueryError> {
    let mut comparisons = Vec::new();
    loop {
        lexer.skip_spaces();
        if lexer.rest().starts_with('(') {
            lexer.expect('(')?;
            comparisons.extend(parse_conjunction(lexer, fields)?);
            lexer.expect(')')?;
        } else {
            comparisons.push(parse_comparison(lexer, fields)?);
        }
        if lexer.at_end() || lexer.rest().starts_with(')') {
            return Ok(comparisons);
        }
        match lexer.word()?.as_str() {
            "and" => {}
            other => {
                return Err(query_error(
                    "14",
                    format!("Ожидалось 'and', найдено '{other}' (поддерживается только and)"),
                ));
            }
        }
    }
}

fn parse_comparison(lexer: &mut Lexer<'_>, fields: &[String]) -> Result<Comparison, QueryError> {
    let field = lexer.word()?;
    check_field(&field, fields)?;
    let operator = match lexer.word()?.as_str() {
        "eq" => Operator::Eq,
        "ne" => Operator::Ne,
        "gt" => Operator::Gt,
        "ge" => Operator::Ge,
        "lt" => Operator::Lt,
        "le" => Operator::Le,
        other => {
            return Err(query_error("14", format!("Неизвестная операция '{other}' в условии")));
        }
    };
    let value = lexer.literal()?;
    Ok(Comparison { field, operator, value })
}

struct Lexer<'a> {
    text: &'a str,
    at: usize,
}

impl<'a> Lexer<'a> {
    fn new(text: &'a str) -> Self {
        Lexer { text, at: 0 }
    }

    fn rest(&self) -> &'a str {
        &self.text[self.at..]
    }

    fn skip_spaces(&mut self) {
        let rest = self.rest();
        self.at += rest.len() - rest.trim_start_matches(' ').len();
    }

    fn at_end(&mut self) -> bool {
        self.skip_spaces();
        self.rest().is_empty()
    }

    fn syntax(&self) -> QueryError {
        query_error("14", format!("Синтаксическая ошибка в позиции {}: '{}'", self.at, self.rest()))
    }

    fn expect(&mut self, c: char) -> Result<(), QueryError> {
        self.skip_spaces();
        match self.rest().strip_prefix(c) {
            Some(_) => {
                self.at += c.len_utf8();
                Ok(())
            }
            None => Err(self.syntax()),
        }
    }

    /// A name: letters (any script), digits, `_`, `.`.
    fn word(&mut self) -> Result<String, QueryError> {
        self.skip_spaces();
        let rest = self.rest();
        let end = rest
            .find(|c: char| !(c.is_alphanumeric() || c == '_' || c == '.' || c == '-' || c == ':'))
            .unwrap_or(rest.len());
        if end == 0 {
            return Err(self.syntax());
        }
        self.at += end;
        Ok(rest[..end].to_owned())
    }

    /// `'…'` with `''` for a quote; returns the text.
    fn quoted(&mut self) -> Result<String, QueryError> {
        self.expect('\'')?;
        let mut text = String::new();
        let mut chars = self.rest().char_indices().peekable();
        while let Some((i, c)) = chars.next() {
            if c == '\'' {
                if chars.peek().map(|(_, n)| *n) == Some('\'') {
                    chars.next();
                    text.push('\'');
                } else {
                    self.at += i + 1;
                    return Ok(text);
                }
            } else {
                text.push(c);
            }
        }
        Err(query_error("14", "Не закрыта кавычка в строковом литерале"))
    }

    fn literal(&mut self) -> Result<Literal, QueryError> {
        self.skip_spaces();
        if self.rest().starts_with('\'') {
            return self.quoted().map(Literal::Text);
        }
        let word = self.word()?;
        match word.as_str() {
            "true" => return Ok(Literal::Bool(true)),
            "false" => return Ok(Literal::Bool(false)),
            "guid" => {
                let guid = self.quoted()?;
                if !is_guid(&guid) {
                    return Err(query_error("14", format!("Неверный формат GUID '{guid}'")));
                }
                return Ok(Literal::Guid(guid));
            }
            "datetime" => return self.quoted().map(Literal::DateTime),
            _ => {}
        }
        word.parse::<f64>().map(Literal::Number).map_err(|_| self.syntax())
    }
}

fn is_guid(text: &str) -> bool {
    text.len() == 36
        && text.char_indices().all(|(i, c)| {
            if matches!(i, 8 | 13 | 18 | 23) { c == '-' } else { c.is_ascii_hexdigit() }
        })
}

// ---- URL and auth decoding ----

fn parse_query(raw: &str) -> Option<Vec<(String, String)>> {
    raw.split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            Some((percent_decode(name)?, percent_decode(value)?))
        })
        .collect()
}

/// The user and password of a well-formed `Authorization: Basic …` header.
fn basic_user(headers: &HeaderMap) -> Option<(String, String)> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, encoded) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = String::from_utf8(base64_decode(encoded.trim())?).ok()?;
    let (user, password) = decoded.split_once(':')?;
    Some((user.to_owned(), password.to_owned()))
}

/// Standard base64 with padding (RFC 4648 §4), as basic auth uses.
fn base64_decode(text: &str) -> Option<Vec<u8>> {
    fn value(c: u8) -> Option<u32> {
        match c {
            b'A'..=b'Z' => Some(u32::from(c - b'A')),
            b'a'..=b'z' => Some(u32::from(c - b'a') + 26),
            b'0'..=b'9' => Some(u32::from(c - b'0') + 52),
            b'+' => Some(62),
            b'/' => Some(63),
            _ => None,
        }
    }
    let bytes = text.as_bytes();
    if !bytes.len().is_multiple_of(4) {
        return None;
    }
    let mut out = Vec::with_capacity(bytes.len() / 4 * 3);
    for chunk in bytes.chunks(4) {
        let padding = chunk.iter().rev().take_while(|&&c| c == b'=').count();
        if padding > 2 {
            return None;
        }
        let mut n = 0u32;
        for &c in &chunk[..4 - padding] {
            n = n << 6 | value(c)?;
        }
        n <<= 6 * padding as u32;
        let [_, a, b, c] = n.to_be_bytes();
        out.extend_from_slice(&[a, b, c][..3 - padding]);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_decodes_with_and_without_padding() {
        assert_eq!(base64_decode("dXNlcjpwYXNz").as_deref(), Some(&b"user:pass"[..]));
        assert_eq!(base64_decode("YQ==").as_deref(), Some(&b"a"[..]));
        assert_eq!(base64_decode("YWI=").as_deref(), Some(&b"ab"[..]));
        assert_eq!(base64_decode("YQ="), None);
    }

    #[test]
    fn percent_decoding_is_strict() {
        assert_eq!(percent_decode("%D0%90+b").as_deref(), Some("А+b"));
        assert_eq!(percent_decode("%D0"), None);
        assert_eq!(percent_decode("%G0"), None);
    }

    #[test]
    fn conditions_parse_quotes_guids_and_and() {
        let fields = vec!["Артикул".to_owned(), "Номенклатура_Key".to_owned()];
        let parsed = parse_condition(
            "Артикул eq 'O''NEIL' and Номенклатура_Key ne guid'6f1c0a2e-5b1d-11ee-8b3a-00155d0a1c01'",
            &fields,
        )
        .map_err(|e| e.message)
        .unwrap();
        assert_eq!(parsed.len(), 2);
        assert_eq!(parsed[0].value, Literal::Text("O'NEIL".to_owned()));
        assert!(parse_condition("Артикул eq 'x' or Артикул eq 'y'", &fields).is_err());
        assert!(parse_condition("Цвет eq 'x'", &fields).is_err());
        let grouped =
            parse_condition("(Артикул eq 'a') and (Артикул ne 'b' and Артикул ne 'c')", &fields);
        assert_eq!(grouped.map(|c| c.len()).map_err(|e| e.message), Ok(3));
        assert!(parse_condition("(Артикул eq 'a'", &fields).is_err());
        assert!(parse_condition("Артикул eq 'a')", &fields).is_err());
    }
}
