//! The console's two languages: Korean and English, chosen by `?lang=` (the switch, remembered
//! in a cookie), else that cookie, else `Accept-Language`, else Korean.

use actix_web::http::header;
use actix_web::{web, HttpRequest};

use super::session::cookie;

/// The language switch in a page's query string.
#[derive(serde::Deserialize)]
struct Switch {
    lang: Option<String>,
}

/// The cookie the language switch leaves.
pub const LANG_COOKIE: &str = "console_lang";

/// The console's language; its text (strum) is the language code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, strum::IntoStaticStr, strum::EnumString)]
#[strum(serialize_all = "snake_case", ascii_case_insensitive)]
pub enum UiLang {
    Ko,
    En,
}

impl UiLang {
    pub fn code(self) -> &'static str {
        self.into()
    }

    /// A language tag's primary language (`en-US` -> `en`), in any case.
    fn parse(s: &str) -> Option<Self> {
        s.trim().get(..2)?.parse().ok()
    }

    /// The text in this language.
    pub fn t(self, ko: &'static str, en: &'static str) -> &'static str {
        match self {
            Self::Ko => ko,
            Self::En => en,
        }
    }

    /// The language a request asks for, and whether it came from the switch (`?lang=`), so the
    /// answer remembers it.
    pub fn of(req: &HttpRequest) -> (Self, bool) {
        // The console's own `?lang=` switch, not a Kollus form: only `ko` or `en` is taken.
        let switched = web::Query::<Switch>::from_query(req.query_string())
            .ok()
            .and_then(|q| Self::parse(q.lang.as_deref()?));
        if let Some(lang) = switched {
            return (lang, true);
        }
        if let Some(lang) = cookie(req, LANG_COOKIE).and_then(|v| Self::parse(&v)) {
            return (lang, false);
        }
        let accept = req
            .headers()
            .get(header::ACCEPT_LANGUAGE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        // The first listed language we speak (browsers list them by preference).
        let lang = accept
            .split(',')
            .filter_map(|part| Self::parse(part.split(';').next().unwrap_or("")))
            .next()
            .unwrap_or(Self::Ko);
        (lang, false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::test::TestRequest;

    #[test]
    fn the_switch_wins_then_the_cookie_then_accept_language() {
        let req = TestRequest::default()
            .insert_header((header::ACCEPT_LANGUAGE, "fr-FR, en-US;q=0.8, ko;q=0.5"))
            .to_http_request();
        assert_eq!(UiLang::of(&req), (UiLang::En, false));
        let req = TestRequest::default().to_http_request();
        assert_eq!(UiLang::of(&req), (UiLang::Ko, false), "Korean by default");
        let req = TestRequest::with_uri("/console/?lang=ko")
            .insert_header((header::ACCEPT_LANGUAGE, "en"))
            .insert_header((header::COOKIE, "console_lang=en"))
            .to_http_request();
        assert_eq!(UiLang::of(&req), (UiLang::Ko, true));
        let req = TestRequest::default()
            .insert_header((header::ACCEPT_LANGUAGE, "ko-KR"))
            .insert_header((header::COOKIE, "a=b; console_lang=en"))
            .to_http_request();
        assert_eq!(UiLang::of(&req), (UiLang::En, false));
    }
}
