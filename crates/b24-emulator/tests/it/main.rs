//! Integration tests of the Bitrix24 emulator: real HTTP on 127.0.0.1 with reqwest and phpform,
//! checked against the protocol document (never against the `b24` client).

mod handler;
mod support;

mod batch;
mod bizproc_rest;
mod control;
mod crm;
mod designer;
mod dispatch;
mod events;
mod faults;
mod limits;
mod oauth;
mod portal_methods;
mod python_sdks;
mod registration;
mod rest;
mod templates;
mod tls;
