//! The `[widget]` section: whether the gateway serves its chat widget, where, and how the
//! widget looks and behaves (the values it reads from `{path}config.json`).
//!
//! Owns these keys, their defaults and their local rules. Whether `tenant` names a tenant
//! and whether `file_service` names a GMS service of that tenant that a public page may
//! call are rules across sections, checked by the `config` module; this module must not
//! know the rest of the configuration.

use config_types::Invalid;
use serde::{Deserialize, Serialize};

/// The path the widget is served under by default.
pub const DEFAULT_PATH: &str = "/widget/";

/// The chat widget the gateway serves (`docs/widget.md`).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WidgetConfig {
    /// Serve the widget's files and its `config.json` (and the demo page, see `demo_page`).
    pub enabled: bool,
    /// The path the widget's files are served under: starts and ends with `/`, e.g.
    /// `/widget/` gives `/widget/widget.js`, `/widget/widget.css`, `/widget/config.json`.
    pub path: String,
    /// Serve the demo page (a page with the widget on it) at `/`.
    pub demo_page: bool,
    /// The tenant the widget's chats and e-mails name (`tenantName`); the first of
    /// `[[tenants]]` when absent.
    pub tenant: Option<String>,
    /// The endpoint (queue) of the widget's chats; the tenant's `default_endpoint` when absent.
    pub endpoint: Option<String>,
    /// The title of the chat window.
    pub title: String,
    /// A line shown above the pre-chat form.
    pub intro: String,
    /// The colours, as `#rgb` or `#rrggbb`.
    pub colors: WidgetColors,
    /// The pre-chat form's fields beside the nickname (always asked, required): any of
    /// `name` (first and last name), `email`, `subject`.
    pub prechat_fields: Vec<PrechatField>,
    /// How the widget reads a chat's events: `auto` (the event stream when the gateway's
    /// replies offer one, else polling; after repeated stream failures polling for the rest
    /// of the page), `push` (the event stream, falling back to polling while it fails and
    /// trying it again after `poll_fallback_secs`), or `poll` (Get Messages every
    /// `poll_interval_ms`).
    pub transport: Transport,
    /// The pause between two Get Messages polls that found nothing new, in milliseconds
    /// (100 to 60000).
    pub poll_interval_ms: u64,
    /// Offer "leave a message" (an e-mail, `POST /api/v2/emails`) when no chat can be
    /// started, and as a link beside the pre-chat form.
    pub leave_message: bool,
    /// The mailbox the widget's e-mails are sent to (one of the `[email]` allow-list); the
    /// e-mail backend's default mailbox when absent.
    pub mailbox: Option<String>,
    /// When the widget offers a chat: entries `DAYS HH:MM-HH:MM`, days `mon` … `sun`, a range
    /// (`mon-fri`) or a list (`sat,sun`), e.g. `["mon-fri 08:00-18:00", "sat 09:00-13:00"]`.
    /// Outside them it offers only "leave a message" (when `leave_message` is on). Empty
    /// (the default): always.
    pub hours: Vec<String>,
    /// The time zone of `hours`: an IANA name (`Europe/Berlin`), applied by the customer's
    /// browser (daylight saving included). Default `UTC`.
    pub time_zone: String,
    /// The GMS service (`[[gms.services]]`) the widget uploads and downloads files through;
    /// no file transfer in the widget when absent. It must serve the widget's tenant and
    /// must not require an API key (the widget runs in a public page).
    pub file_service: Option<String>,
}

impl Default for WidgetConfig {
    fn default() -> Self {
        WidgetConfig {
            enabled: true,
            path: DEFAULT_PATH.into(),
            demo_page: true,
            tenant: None,
            endpoint: None,
            title: "Chat with us".into(),
            intro: "Tell us who you are and an agent will be with you shortly.".into(),
            colors: WidgetColors::default(),
            prechat_fields: vec![
                PrechatField::Name,
                PrechatField::Email,
                PrechatField::Subject,
            ],
            transport: Transport::Auto,
            poll_interval_ms: 1000,
            leave_message: true,
            mailbox: None,
            hours: Vec::new(),
            time_zone: "UTC".into(),
            file_service: None,
        }
    }
}

/// The widget's colours (`[widget.colors]`).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct WidgetColors {
    /// The launcher button, the header and the customer's messages.
    pub accent: String,
    /// Text on the accent colour.
    pub accent_text: String,
    /// The window's background.
    pub background: String,
    /// The window's text.
    pub text: String,
    /// The agent's messages' background.
    pub agent: String,
}

impl Default for WidgetColors {
    fn default() -> Self {
        WidgetColors {
            accent: "#1d4ed8".into(),
            accent_text: "#ffffff".into(),
            background: "#ffffff".into(),
            text: "#1f2937".into(),
            agent: "#eef2f7".into(),
        }
    }
}

/// A field of the pre-chat form beside the nickname.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PrechatField {
    /// First and last name (`firstName`, `lastName`).
    Name,
    /// E-mail address (`emailAddress`).
    Email,
    /// Subject (`subject`).
    Subject,
}

/// How the widget reads a chat's events.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    Auto,
    Push,
    Poll,
}

impl WidgetConfig {
    /// Checks what types alone cannot; keys are relative to the section.
    pub fn validate(&self) -> Result<(), Invalid> {
        let p = &self.path;
        let path_ok = p.starts_with('/')
            && p.ends_with('/')
            && !p.contains("//")
            && p.len() <= 200
            && p.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"/-_.~".contains(&b))
            && !p.split('/').any(|s| s == "." || s == "..");
        if !path_ok {
            return Err(Invalid::new(
                "path",
                "must start and end with `/` and hold only letters, digits and `-_.~` between \
                 single slashes (e.g. `/widget/`)",
            ));
        }
        if !(100..=60_000).contains(&self.poll_interval_ms) {
            return Err(Invalid::new("poll_interval_ms", "must be 100 to 60000"));
        }
        for (key, text, max) in [("title", &self.title, 100), ("intro", &self.intro, 500)] {
            if text.chars().count() > max || text.chars().any(char::is_control) {
                let why = format!("at most {max} characters, no control characters");
                return Err(Invalid::new(key, why));
            }
        }
        let c = &self.colors;
        for (key, value) in [
            ("colors.accent", &c.accent),
            ("colors.accent_text", &c.accent_text),
            ("colors.background", &c.background),
            ("colors.text", &c.text),
            ("colors.agent", &c.agent),
        ] {
            let hex = value.strip_prefix('#').unwrap_or("");
            if !matches!(hex.len(), 3 | 6) || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(Invalid::new(key, "must be a colour as #rgb or #rrggbb"));
            }
        }
        for entry in &self.hours {
            parse_hours(entry).map_err(|why| Invalid::new("hours", format!("`{entry}`: {why}")))?;
        }
        let tz_ok = !self.time_zone.is_empty()
            && self.time_zone.len() <= 64
            && self
                .time_zone
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"/_+-".contains(&b));
        if !tz_ok {
            return Err(Invalid::new(
                "time_zone",
                "must be an IANA time zone name such as `Europe/Berlin`",
            ));
        }
        let mut seen = Vec::new();
        for f in &self.prechat_fields {
            if seen.contains(f) {
                return Err(Invalid::new("prechat_fields", "lists a field twice"));
            }
            seen.push(*f);
        }
        Ok(())
    }
}

/// One `hours` entry as the widget reads it: ISO weekdays (1 = Monday … 7 = Sunday) and
/// minutes since midnight, `from` included, `to` excluded.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct OpenHours {
    pub days: Vec<u8>,
    pub from: u32,
    pub to: u32,
}

const DAYS: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];

/// Reads `DAYS HH:MM-HH:MM`; the error says what is wrong.
pub fn parse_hours(entry: &str) -> Result<OpenHours, String> {
    let (days, times) = entry
        .trim()
        .split_once(' ')
        .ok_or("write DAYS HH:MM-HH:MM, e.g. `mon-fri 08:00-18:00`")?;
    let day = |d: &str| {
        DAYS.iter()
            .position(|n| n.eq_ignore_ascii_case(d.trim()))
            .map(|i| i as u8 + 1)
            .ok_or_else(|| format!("`{d}` is not a day (mon … sun)"))
    };
    let mut list = Vec::new();
    for part in days.split(',') {
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b) = (day(a)?, day(b)?);
                if a > b {
                    return Err(format!("`{part}`: a range goes from Monday towards Sunday"));
                }
                list.extend(a..=b);
            }
            None => list.push(day(part)?),
        }
    }
    let minute = |t: &str| -> Result<u32, String> {
        let (h, m) = t
            .trim()
            .split_once(':')
            .ok_or_else(|| format!("`{t}` is not HH:MM"))?;
        let (h, m): (u32, u32) = (
            h.parse().map_err(|_| format!("`{t}` is not HH:MM"))?,
            m.parse().map_err(|_| format!("`{t}` is not HH:MM"))?,
        );
        if m > 59 || h > 24 || (h == 24 && m > 0) {
            return Err(format!("`{t}` is not a time of day"));
        }
        Ok(h * 60 + m)
    };
    let (from, to) = times
        .trim()
        .split_once('-')
        .ok_or("write the hours as HH:MM-HH:MM")?;
    let (from, to) = (minute(from)?, minute(to)?);
    if from >= to {
        return Err("the hours must end after they start (the same day)".into());
    }
    list.sort_unstable();
    list.dedup();
    Ok(OpenHours {
        days: list,
        from,
        to,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_is_valid_and_bad_values_name_their_key() {
        WidgetConfig::default().validate().unwrap();
        let bad = |f: fn(&mut WidgetConfig), key: &str| {
            let mut c = WidgetConfig::default();
            f(&mut c);
            let e = c.validate().unwrap_err().to_string();
            assert!(e.contains(key), "{e}");
        };
        bad(|c| c.path = "widget/".into(), "path");
        bad(|c| c.path = "/widget".into(), "path");
        bad(|c| c.path = "/a//b/".into(), "path");
        bad(|c| c.path = "/../".into(), "path");
        bad(|c| c.path = "/w\"x/".into(), "path");
        bad(|c| c.poll_interval_ms = 10, "poll_interval_ms");
        bad(|c| c.colors.accent = "red; x: y".into(), "colors.accent");
        bad(|c| c.colors.text = "#12345".into(), "colors.text");
        bad(|c| c.title = "a\u{7}".into(), "title");
        bad(
            |c| c.prechat_fields = vec![PrechatField::Email, PrechatField::Email],
            "prechat_fields",
        );
        bad(|c| c.hours = vec!["mon-fri".into()], "hours");
        bad(|c| c.hours = vec!["fri-mon 08:00-18:00".into()], "hours");
        bad(|c| c.hours = vec!["mon 18:00-08:00".into()], "hours");
        bad(|c| c.hours = vec!["mon 08:00-25:00".into()], "hours");
        bad(|c| c.time_zone = "Europe/Berlin; x".into(), "time_zone");
        assert_eq!(
            parse_hours("mon-wed,fri 08:30-24:00").unwrap(),
            OpenHours {
                days: vec![1, 2, 3, 5],
                from: 510,
                to: 1440
            }
        );
        let root = WidgetConfig {
            path: "/".into(),
            ..WidgetConfig::default()
        };
        root.validate().unwrap();
    }
}
