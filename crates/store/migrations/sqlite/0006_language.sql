-- b24act store, SQLite dialect: each portal's language.
-- Keep in step with ../postgres/0006_language.sql.

-- data[LANGUAGE_ID] of the portal's last install or update event (Store::set_installation_language):
-- the workflow-log lines b24act writes itself are in it. NULL until an event gives one.
ALTER TABLE installations ADD COLUMN language_id TEXT;
