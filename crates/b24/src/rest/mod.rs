//! The Bitrix24 REST client (being written).
