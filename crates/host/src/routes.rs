//! The paths this host answers, defined once: the routers mount them, registrations and the
//! install URL are built from them under `[app] public_url`, and the sandbox and the bench
//! address them.

use url::Url;

/// The handler every action is registered with, as a router pattern: `POST` with the call.
pub const ACTION: &str = "/bitrix/actions/{code}";
/// An action's settings form in the BP designer (placement, docs/protocol.md §1.8): `POST`
/// from the portal's frame.
pub const SETTINGS: &str = "/bitrix/settings/{code}";
/// `GET`: the settings form's script.
pub const SETTINGS_SCRIPT: &str = "/bitrix/settings-assets/form.js";
/// `GET`: the settings form's stylesheet.
pub const SETTINGS_STYLESHEET: &str = "/bitrix/settings-assets/form.css";
/// The app's install handler: `POST` with ONAPPINSTALL, ONAPPUPDATE or ONAPPUNINSTALL.
pub const INSTALL: &str = "/bitrix/install";
/// `GET`: jobs by state, and the portals that cannot be served (503 while there are any).
pub const HEALTH: &str = "/health";
/// `GET`: whether this node takes calls durably, for load balancers (see `health`).
pub const HEALTH_INTAKE: &str = "/health/intake";
/// `GET`, on the console's listener: Prometheus metrics.
pub const METRICS: &str = "/metrics";
/// `GET`, on the console's listener: the overview.
pub const CONSOLE_OVERVIEW: &str = "/";
/// `GET`, on the console's listener: the jobs, filtered and paged by the query.
pub const CONSOLE_JOBS: &str = "/jobs";
/// `GET`, on the console's listener: one job.
pub const CONSOLE_JOB: &str = "/jobs/{id}";
/// `POST`, on the console's listener: an operator action on a job (`retry`, `cancel`,
/// `complete`, `resend`).
pub const CONSOLE_JOB_ACTION: &str = "/jobs/{id}/{action}";
/// `GET`, on the console's listener: the installations.
pub const CONSOLE_PORTALS: &str = "/portals";
/// `POST`, on the console's listener: remove a portal's installation.
pub const CONSOLE_PORTAL_REMOVE: &str = "/portals/{member_id}/remove";
/// `GET`, on the console's listener: the pages' stylesheet.
pub const CONSOLE_STYLESHEET: &str = "/assets/console.css";
/// `GET`, on the console's listener: the pages' script.
pub const CONSOLE_SCRIPT: &str = "/assets/console.js";

/// The path portals POST calls for `code` to: `/bitrix/actions/<code>`.
pub fn action_path(code: &str) -> String {
    ACTION.replace("{code}", code)
}

/// The handler URL an action is registered with: `<public_url>bitrix/actions/<code>`.
pub fn handler_url(public_url: &Url, code: &str) -> Url {
    under(public_url, &action_path(code))
}

/// The settings form's URL an action is registered with (`PLACEMENT_HANDLER`):
/// `<public_url>bitrix/settings/<code>`.
pub fn settings_url(public_url: &Url, code: &str) -> Url {
    under(public_url, &SETTINGS.replace("{code}", code))
}

/// The install handler's URL: `<public_url>bitrix/install`.
pub fn install_url(public_url: &Url) -> Url {
    under(public_url, INSTALL)
}

/// `path` as a browser addresses it: below `[app] public_url`'s own path (behind a proxy that
/// strips a prefix, the prefix is kept).
pub fn public_path(public_url: &Url, path: &str) -> String {
    under(public_url, path).path().to_owned()
}

/// `path` (absolute, as the router mounts it) below `base`'s own path.
fn under(base: &Url, path: &str) -> Url {
    let mut url = base.clone();
    let prefix = base.path().trim_end_matches('/');
    url.set_path(&format!("{prefix}{path}"));
    url
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handler_urls_join_under_the_public_url() {
        let base = Url::parse("https://b24act.example.com/").unwrap();
        assert_eq!(
            handler_url(&base, "check").as_str(),
            "https://b24act.example.com/bitrix/actions/check"
        );
        let nested = Url::parse("https://example.com/hooks").unwrap();
        assert_eq!(install_url(&nested).as_str(), "https://example.com/hooks/bitrix/install");
        assert_eq!(action_path("check"), "/bitrix/actions/check");
    }
}
