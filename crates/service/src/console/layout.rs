//! The console's HTML frame (maud): [`page`] wraps a page's content in the base layout (skip
//! link, navigation, notice banner), [`bare`] is the frame of pages without a session (login,
//! errors), [`csrf_field`] is the hidden field every form carries.
//!
//! The stylesheet ([`CSS`]) is compiled into the binary and served at
//! `/console/assets/console.css`; no script is used (plain forms), so the pages work with the
//! keyboard alone and under the console's `script-src 'none'` content security policy.

use maud::{DOCTYPE, Markup, html};

use super::session::Operator;

/// The console's stylesheet, embedded in the binary.
pub(crate) const CSS: &str = include_str!("console.css");

/// The sections of the navigation (the current one is marked `aria-current="page"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Section {
    /// `/console`: per business health.
    Overview,
    /// `/console/stores`: paired Magento stores.
    Stores,
    /// `/console/connections`: ledger connections.
    Connections,
    /// `/console/runs`: the sync runs, their attempts and retries.
    Runs,
    /// `/console/policy`: each tenant's policy.
    Policy,
}

const NAV: [(Section, &str, &str); 5] = [
    (Section::Overview, "/console", "Overview"),
    (Section::Stores, "/console/stores", "Stores"),
    (Section::Connections, "/console/connections", "Connections"),
    (Section::Runs, "/console/runs", "Sync runs"),
    (Section::Policy, "/console/policy", "Policy"),
];

/// How a notice banner looks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Tone {
    /// Something went well.
    Ok,
    /// Something needs a look.
    Warn,
    /// Something failed.
    Bad,
}

impl Tone {
    fn class(self) -> &'static str {
        match self {
            Self::Ok => "banner ok",
            Self::Warn => "banner warn",
            Self::Bad => "banner bad",
        }
    }
}

/// A banner above a page's content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Notice {
    /// Its look.
    pub(crate) tone: Tone,
    /// Its text (escaped when rendered).
    pub(crate) text: String,
}

impl Notice {
    /// A success banner.
    pub(crate) fn ok(text: impl Into<String>) -> Self {
        Self { tone: Tone::Ok, text: text.into() }
    }

    /// A warning banner.
    pub(crate) fn warn(text: impl Into<String>) -> Self {
        Self { tone: Tone::Warn, text: text.into() }
    }

    /// A failure banner.
    pub(crate) fn bad(text: impl Into<String>) -> Self {
        Self { tone: Tone::Bad, text: text.into() }
    }

    /// The banner.
    pub(crate) fn render(&self) -> Markup {
        html! { div class=(self.tone.class()) role=(if self.tone == Tone::Bad { "alert" } else { "status" }) { (self.text) } }
    }
}

fn head(title: &str) -> Markup {
    html! {
        head {
            meta charset="utf-8";
            meta name="viewport" content="width=device-width, initial-scale=1";
            title { (title) " · byte8-ledger console" }
            link rel="stylesheet" href="/console/assets/console.css";
        }
    }
}

/// The hidden CSRF field of `operator`'s session: put it in every `method="post"` form.
pub(crate) fn csrf_field(operator: &Operator) -> Markup {
    html! { input type="hidden" name=(super::session::CSRF_FIELD) value=(operator.csrf_token()); }
}

/// A full console page: navigation (`section` current), the operator's name, `notices`, then
/// `content` under an `<h1>` of `title`.
pub(crate) fn page(operator: &Operator, section: Section, title: &str, notices: &[Notice], content: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            (head(title))
            body {
                a class="skip" href="#content" { "Skip to content" }
                header class="top" {
                    div class="bar" {
                        a class="brand" href="/console" { "byte8-ledger" }
                        nav class="main" aria-label="Main" {
                            ul {
                                @for (s, href, label) in NAV {
                                    li {
                                        @if s == section {
                                            a href=(href) aria-current="page" { (label) }
                                        } @else {
                                            a href=(href) { (label) }
                                        }
                                    }
                                }
                                li {
                                    form method="post" action="/console/logout" {
                                        (csrf_field(operator))
                                        button type="submit" id="logout" title=(format!("Log out {}", operator.name())) { "Log out" }
                                    }
                                }
                            }
                        }
                    }
                }
                main id="content" tabindex="-1" {
                    h1 { (title) }
                    @for n in notices { (n.render()) }
                    (content)
                }
            }
        }
    }
}

/// A page outside a session (login, errors): the same look without the navigation.
pub(crate) fn bare(title: &str, notices: &[Notice], content: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            (head(title))
            body {
                header class="top" { div class="bar" { span class="brand" { "byte8-ledger" } } }
                main id="content" {
                    h1 { (title) }
                    @for n in notices { (n.render()) }
                    (content)
                }
            }
        }
    }
}

/// A labelled form field: `label` for `input` (whose `id` must be `id`), an optional hint and
/// the field's error (the input is then marked invalid and described by the error).
pub(crate) fn field(id: &str, label: &str, hint: Option<&str>, error: Option<&str>, input: Markup) -> Markup {
    html! {
        div class=(if error.is_some() { "field invalid" } else { "field" }) {
            label for=(id) { (label) }
            (input)
            @if let Some(h) = hint { span class="hint" id=(format!("{id}-hint")) { (h) } }
            @if let Some(e) = error { span class="error" id=(format!("{id}-error")) role="alert" { (e) } }
        }
    }
}

/// A status pill.
pub(crate) fn pill(tone: Tone, text: &str) -> Markup {
    let class = match tone {
        Tone::Ok => "status ok",
        Tone::Warn => "status warn",
        Tone::Bad => "status bad",
    };
    html! { span class=(class) { (text) } }
}
